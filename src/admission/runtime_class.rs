//! The configured RuntimeClass is what puts sandbox pods under gVisor, by name. Its
//! handler is immutable, but it can be deleted and re-created with another handler
//! (`runc`), after which pods admitted as `gvisor` would run without gVisor. So the
//! class of that name must name the configured handler, and only the configured writers
//! may create, change or delete it. Other RuntimeClasses are not sandgate's business.

use serde_json::Value;

use super::{AdmissionRequest, Decision, Operation, Rule, Violation, requester_in, subject};
use crate::config::Config;

pub fn decide(req: &AdmissionRequest, cfg: &Config) -> Decision {
    let named = |o: Option<&Value>| {
        o.and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            == Some(cfg.runtime_class_name.as_str())
    };
    if !(named(req.object.as_ref()) || named(req.old_object.as_ref())) {
        return Decision::allow();
    }
    let who = subject("runtimeclass", req);
    let mut violations = Vec::new();
    if matches!(req.operation, Operation::Create | Operation::Update) {
        let handler = req
            .object
            .as_ref()
            .and_then(|o| o.get("handler"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if handler != cfg.runtime_handler {
            violations.push(Violation::new(
                Rule::RuntimeClassHandler,
                "handler",
                format!(
                    "is {handler:?}; RuntimeClass {:?} must use the sandbox handler {:?}, or pods admitted under it run without the sandbox",
                    cfg.runtime_class_name, cfg.runtime_handler
                ),
            ));
        }
    }
    if !requester_in(req, &cfg.runtime_class_writers) {
        let verb = match req.operation {
            Operation::Create => "create",
            Operation::Update => "change",
            _ => "delete",
        };
        violations.push(Violation::new(
            Rule::ManagedRuntimeClass,
            "metadata.name",
            format!(
                "{:?} is the sandbox RuntimeClass; {:?} may not {verb} it (runtimeClassWriters)",
                cfg.runtime_class_name,
                req.username()
            ),
        ));
    }
    if violations.is_empty() {
        Decision::allow_subject(who)
    } else {
        Decision::deny(who, violations)
    }
}
