//! NetworkPolicies are additive, so sandgate's own (the namespace default-deny and the
//! per-template policies) may be changed or deleted only by sandgate itself and the
//! configured writers (cluster admins, the garbage collector, the namespace controller).

use serde_json::Value;

use super::{AdmissionRequest, Decision, Operation, Violation, requester_in, subject};
use crate::config::Config;
use crate::netpol::DEFAULT_DENY_NAME;

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Whether a NetworkPolicy object is one of sandgate's.
fn is_sandgates(object: Option<&Value>) -> bool {
    let Some(o) = object else { return false };
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let managed = o
        .pointer("/metadata/labels")
        .and_then(|l| l.get(MANAGED_BY))
        .and_then(Value::as_str)
        == Some("sandgate");
    managed || name == DEFAULT_DENY_NAME || name.starts_with("sandgate-template-")
}

pub fn review(req: &AdmissionRequest, cfg: &Config) -> Decision {
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
    let user = req
        .user_info
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("");
    let verb = match req.operation {
        Operation::Create => "create",
        Operation::Update => "change",
        _ => "delete",
    };
    Decision::deny(
        subject("networkpolicy", req),
        vec![Violation::new(
            "managed-network-policy",
            "metadata.name",
            format!(
                "is managed by sandgate; {user:?} may not {verb} it (it keeps sandbox pods from reaching the network)"
            ),
        )],
    )
}
