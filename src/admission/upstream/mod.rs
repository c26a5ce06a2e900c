//! kubernetes-sigs/agent-sandbox's objects, beyond the pods they make (which are sandbox
//! pods like any other): its templates' egress closed for real ([`template`]), its
//! labels and pod-name annotation written only by its controller ([`metadata`]), its
//! warm pools capped ([`warm_pool`]), its claims' `env` held to the template's
//! injection policy ([`claim`]), its refused pods named on their owners ([`notice`]).
//! Each closes one of upstream's open problems (kubernetes-sigs/agent-sandbox #818,
//! #265, #251, and claims that time out in silence).

pub mod claim;
pub mod metadata;
pub mod notice;
pub mod template;
pub mod warm_pool;

pub use template::mutate_template;

use super::{AdmissionRequest, Decision, Webhook, in_scope, pipeline, workload};
use crate::config::Config;
use crate::policy::PolicySet;
use crate::resources::Kind;

/// The decision on a write of one of upstream's kinds (`kind.is_upstream()`). With
/// upstream support off, none is sandgate's business.
pub fn admit(
    kind: Kind,
    webhook: Webhook,
    req: &AdmissionRequest,
    cfg: &Config,
    policies: &PolicySet,
) -> Decision {
    if !cfg.upstream || !in_scope(req, cfg) {
        return Decision::allow();
    }
    let d = match (webhook, kind) {
        (Webhook::Mutate, Kind::UpstreamSandboxTemplate) => return mutate_template(req),
        (Webhook::Mutate, _) => return Decision::allow(),
        (Webhook::Validate, Kind::UpstreamSandbox) => {
            let mut d = workload::admit(kind, req, cfg, policies);
            if let Some(object) = req.object.as_ref() {
                let forged = metadata::guard(
                    req,
                    cfg,
                    object,
                    req.old_object.as_ref(),
                    metadata::Owned::Sandbox,
                );
                if !forged.is_empty() {
                    d.allowed = false;
                    d.violations.extend(forged);
                }
            }
            d
        }
        (Webhook::Validate, Kind::UpstreamSandboxTemplate) => {
            workload::admit(kind, req, cfg, policies)
        }
        (Webhook::Validate, Kind::UpstreamSandboxWarmPool) => warm_pool::decide(req, cfg),
        (Webhook::Validate, Kind::UpstreamSandboxClaim) => claim::decide(req, cfg),
        (Webhook::Validate, _) => Decision::allow(),
    };
    // Then the policies of the kind itself (`sandgate.agents.<kind>.*`).
    pipeline::with_policies(d, webhook, req, cfg, policies)
}
