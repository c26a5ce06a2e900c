//! NetworkPolicies are additive, so sandgate's own (the namespace default-deny and the
//! per-template policies) may be changed or deleted only by sandgate itself and the
//! configured writers (cluster admins, the garbage collector, the namespace controller).

use serde_json::Value;

use super::{AdmissionRequest, Decision, Operation, Rule, Violation, requester_in, subject};
use crate::config::Config;
use crate::contract::{self, label};

/// Whether a NetworkPolicy object is one of sandgate's: by the name sandgate gives it or
/// the label it sets (the same contract functions that name and label them).
fn is_sandgates(object: Option<&Value>) -> bool {
    let Some(meta) = object.and_then(|o| o.get("metadata")) else {
        return false;
    };
    // Read from the raw object: a malformed field elsewhere must not hide the label.
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let managed = meta
        .get("labels")
        .and_then(|l| l.get(label::MANAGED_BY))
        .and_then(Value::as_str)
        == Some(label::MANAGED_BY_SANDGATE);
    managed || contract::is_sandgate_policy_name(name)
}

/// The built-in decision on a NetworkPolicy request.
pub fn decide(req: &AdmissionRequest, cfg: &Config) -> Decision {
    if !matches!(
        req.operation,
        Operation::Create | Operation::Update | Operation::Delete
    ) {
        return Decision::allow();
    }
    if !(is_sandgates(req.object.as_ref()) || is_sandgates(req.old_object.as_ref())) {
        return Decision::allow();
    }
    if requester_in(req, &cfg.network_policy_writers) {
        return Decision::allow();
    }
    let user = req.username();
    let verb = match req.operation {
        Operation::Create => "create",
        Operation::Update => "change",
        _ => "delete",
    };
    Decision::deny(
        subject("networkpolicy", req),
        vec![Violation::new(
            Rule::ManagedNetworkPolicy,
            "metadata.name",
            format!(
                "is managed by sandgate; {user:?} may not {verb} it (it keeps sandbox pods from reaching the network)"
            ),
        )],
    )
}
