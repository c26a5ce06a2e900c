//! The decision pipeline: built-in rules, then (on the final object) the Rego policies
//! of the request's kind, then the side effects the answer depends on. This is the only
//! place that sequences them; callers do I/O around it (the server reads the body and
//! performs the effects, `check` reads files, the reconciler writes what it built).

use super::{
    AdmissionRequest, Decision, Operation, Rule, Violation, Webhook, in_scope, mutate,
    netpol_guard, pod, runtime_class, secret, subject, template, upstream, workload,
};
use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::config::Config;
use crate::contract::label;
use crate::crd::SandboxTemplate;
use crate::policy::{self, PolicySet};
use crate::resources::Kind;

/// The whole decision on one request, as one webhook answers it.
pub fn admit(
    webhook: Webhook,
    req: &AdmissionRequest,
    cfg: &Config,
    policies: &PolicySet,
) -> Decision {
    let kind = Kind::of_resource(&req.resource.group, &req.resource.resource);
    if let Some(kind) = kind.filter(|k| k.is_upstream()) {
        return finish(upstream::admit(kind, webhook, req, cfg, policies), req);
    }
    // Workloads are judged once, at /validate, as the pods they would make.
    if let Some(kind) = kind.filter(|k| k.pod_template_pointer().is_some()) {
        return match webhook {
            _ if !in_scope(req, cfg) => Decision::allow(),
            Webhook::Validate => {
                let d = workload::admit(kind, req, cfg, policies);
                with_policies(d, webhook, req, cfg, policies)
            }
            Webhook::Mutate => Decision::allow(),
        };
    }
    let d = builtin(webhook, req, cfg);
    finish(with_policies(d, webhook, req, cfg, policies), req)
}

/// The Rego policies of the request's kind, run on what the built-in rules allowed
/// (at `/validate`, [`policy_kind`]), folded into `d`.
pub fn with_policies(
    mut d: Decision,
    webhook: Webhook,
    req: &AdmissionRequest,
    cfg: &Config,
    policies: &PolicySet,
) -> Decision {
    let Some(kind) = policy_kind(webhook, req, cfg, policies).filter(|_| d.allowed) else {
        return d;
    };
    match serde_json::to_value(req) {
        Ok(review) => merge_policies(&mut d, policies.evaluate(&kind, &review), req, &kind),
        Err(e) => {
            d = Decision::deny(
                subject(&kind, req),
                vec![Violation::internal(
                    "request",
                    format!("cannot build the policy input: {e}"),
                )],
            );
        }
    }
    d
}

/// Lookups and effects stay only on admitted requests, effects only on real ones.
fn finish(mut d: Decision, req: &AdmissionRequest) -> Decision {
    if !d.allowed {
        d.lookups.clear();
    }
    if !d.allowed || req.is_dry_run() {
        d.effects.clear();
    }
    d
}

/// What the apiserver concludes from both webhooks: `/mutate`, its patch applied, then
/// `/validate` on the object as it would be stored (`check`, and audits, judge a
/// manifest this way). Warnings of both are kept.
pub fn admit_as_apiserver(
    mut req: AdmissionRequest,
    cfg: &Config,
    policies: &PolicySet,
) -> Decision {
    let first = admit(Webhook::Mutate, &req, cfg, policies);
    if !first.allowed {
        return first;
    }
    if let (Some(patch), Some(object)) = (first.patch.as_ref(), req.object.as_mut())
        && let Err(e) = json_patch::patch(object, &patch.0)
    {
        return first.fail(Violation::internal(
            "object",
            format!("sandgate's own patch does not apply: {e}"),
        ));
    }
    let mut second = admit(Webhook::Validate, &req, cfg, policies);
    let mut warnings = first.warnings;
    warnings.append(&mut second.warnings);
    second.warnings = warnings;
    second
}

/// The built-in rules alone. Resources sandgate does not govern are allowed untouched:
/// the webhook configurations only send sandbox-scoped objects here, and the rest of
/// the cluster must never wait on sandgate.
pub fn builtin(webhook: Webhook, req: &AdmissionRequest, cfg: &Config) -> Decision {
    if !in_scope(req, cfg) {
        return Decision::allow();
    }
    match Kind::of_resource(&req.resource.group, &req.resource.resource) {
        Some(Kind::Pod) => pod::decide(webhook, req, cfg),
        Some(Kind::SandboxTemplate) => template::decide(req, cfg),
        Some(Kind::NetworkPolicy) => netpol_guard::decide(req, cfg),
        Some(Kind::RuntimeClass) => runtime_class::decide(req, cfg),
        Some(Kind::Secret) => secret::decide(req),
        _ => Decision::allow(),
    }
}

/// The pod a template produces: its pod template with the template's runtime class and
/// label, through the same mutation the webhook applies to pods. The template rules judge
/// it and the reconciler creates it, so a template is judged on what will actually run.
pub fn template_pod(template: &SandboxTemplate, cfg: &Config) -> Pod {
    let pt = &template.spec.template;
    let mut spec: PodSpec = pt.spec.clone().unwrap_or_default();
    if spec.runtime_class_name.is_none() {
        spec.runtime_class_name = Some(template.spec.runtime_class_name.clone());
    }
    let mut metadata = pt.metadata.clone().unwrap_or_default();
    let labels = metadata.labels.get_or_insert_with(Default::default);
    if let Some(name) = template.metadata.name.as_deref() {
        labels.insert(label::TEMPLATE.to_string(), name.to_string());
    }
    metadata.namespace = template.metadata.namespace.clone();
    let mut pod = Pod {
        metadata,
        spec: Some(spec),
        status: None,
    };
    mutate::pod(&mut pod, cfg);
    pod
}

/// The key of the policies that judge this request ([`crate::resources::policy_key`]:
/// the kind, in its group), when policies run for it: on
/// the final object (`/validate`), for CREATE and UPDATE, in scope, and only if some
/// policy judges that kind. (The built-in rules must also have allowed it.)
pub fn policy_kind(
    webhook: Webhook,
    req: &AdmissionRequest,
    cfg: &Config,
    policies: &PolicySet,
) -> Option<String> {
    let kind = crate::resources::policy_key(&req.kind.group, &req.kind.kind)?;
    (webhook == Webhook::Validate
        && matches!(req.operation, Operation::Create | Operation::Update)
        && in_scope(req, cfg)
        && policies.judges(&kind))
    .then_some(kind)
}

/// The decision for a request sandgate could not finish judging (its evaluation
/// crashed or was cancelled): denied, naming why.
pub fn failed(req: &AdmissionRequest, why: impl Into<String>) -> Decision {
    Decision::deny(
        subject(&req.kind.kind.to_ascii_lowercase(), req),
        vec![Violation::internal("policies", why)],
    )
}

/// Folds what the policies said into the decision: any denial or policy error denies
/// (fail closed), every warning becomes an admission warning.
fn merge_policies(d: &mut Decision, verdict: policy::Verdict, req: &AdmissionRequest, kind: &str) {
    for w in verdict.warnings {
        d.warnings.push(format!("policy {}: {}", w.policy, w.msg));
    }
    d.policy_runs = verdict.runs;
    let denials: Vec<Violation> = verdict
        .denials
        .into_iter()
        .chain(verdict.errors)
        .map(|m| Violation::new(Rule::Policy, m.policy, m.msg))
        .collect();
    if !denials.is_empty() {
        d.allowed = false;
        d.patch = None;
        if d.subject.is_empty() {
            d.subject = subject(kind, req);
        }
        d.violations.extend(denials);
    }
}
