//! Secrets in enforced namespaces: a legacy service-account token Secret is a
//! long-lived apiserver credential that any sandbox pod of the namespace could mount or
//! read, so it may not be created there. (The webhook sends only Secrets of that type
//! from enforced namespaces; every other Secret never reaches sandgate.)

use serde_json::Value;

use super::{AdmissionRequest, Decision, Operation, Rule, Violation, subject};
use crate::contract::kubernetes;

pub fn decide(req: &AdmissionRequest) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return Decision::allow();
    }
    let kind = req
        .object
        .as_ref()
        .and_then(|o| o.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != kubernetes::SERVICE_ACCOUNT_TOKEN_SECRET_TYPE {
        return Decision::allow();
    }
    Decision::deny(
        subject("secret", req),
        vec![Violation::new(
            Rule::ServiceAccountToken,
            "type",
            format!(
                "is {kind:?}: a long-lived service-account token in a sandbox namespace would let sandboxed code reach the apiserver; use a projected token outside sandbox namespaces instead"
            ),
        )],
    )
}
