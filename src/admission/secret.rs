//! Secrets where sandboxes run: a legacy service-account token Secret is a long-lived
//! apiserver credential that any sandbox pod of the namespace could mount or read, so
//! it may not be created in a namespace that is enforced or already holds a sandbox
//! pod (a [`Lookup::SandboxNamespace`]; enforced ones always answer yes). Created
//! later under a name a running sandbox pod already references, it would reach that
//! pod: the kubelet fills a Secret volume whenever the Secret appears. (The webhook
//! sends only Secrets of that type; every other Secret never reaches sandgate.)

use serde_json::Value;

use super::{AdmissionRequest, Decision, Lookup, Operation, Rule, Violation, subject};
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
    let mut decision = Decision::allow_subject(subject("secret", req));
    decision.lookups.push(Lookup::SandboxNamespace {
        namespace: req.namespace.clone().unwrap_or_default(),
        violation: Violation::new(
            Rule::ServiceAccountToken,
            "type",
            format!(
                "is {kind:?}: a long-lived service-account token in a namespace with sandboxes would let sandboxed code reach the apiserver; use a projected token outside sandbox namespaces instead"
            ),
        ),
    });
    decision
}
