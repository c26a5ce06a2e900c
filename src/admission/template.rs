//! SandboxTemplates are judged by the pod rules, on the pod the template would produce
//! after mutation: what sandgate supplies (limits, security context) is not held against
//! the template, and a bad template is refused at `kubectl apply` rather than when its
//! pods fail to start.

use super::pod::parse_object;
use super::pool_budget::Pool;
use super::{
    AdmissionRequest, Decision, Lookup, Operation, Rule, Violation, egress, subject, validate,
};
use crate::config::Config;
use crate::crd::SandboxTemplate;
use crate::resources::Kind;

/// The built-in decision on a SandboxTemplate request (the same at both webhooks:
/// templates are never mutated).
pub fn decide(req: &AdmissionRequest, cfg: &Config) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource() != "" {
        return Decision::allow();
    }
    let who = subject("sandboxtemplate", req);
    let template: SandboxTemplate =
        match parse_object(req.object.as_ref(), "object", "SandboxTemplate") {
            Ok(t) => t,
            Err(v) => return Decision::deny(who, vec![v]),
        };
    let mut violations = violations(&template, cfg);
    validate::volume_types(
        req.object
            .as_ref()
            .and_then(|o| o.pointer("/spec/template/spec/volumes")),
        "spec.template.spec",
        &mut violations,
    );
    let np = template.spec.network_policy.as_ref();
    let (reach, mut warnings) = egress::rules(
        np.and_then(|n| n.egress.as_deref()).unwrap_or_default(),
        "spec.networkPolicy.egress",
    );
    violations.extend(reach);
    let (reach, more) = egress::ingress_rules(
        np.and_then(|n| n.ingress.as_deref()).unwrap_or_default(),
        "spec.networkPolicy.ingress",
    );
    violations.extend(reach);
    warnings.extend(more);
    if !violations.is_empty() {
        return Decision::deny(who, violations);
    }
    let mut d = Decision::allow_subject(who);
    d.warnings = warnings;
    // A pool that grows counts against its namespace's warm-sandbox budget (shrinking
    // is always allowed, even above a budget lowered since).
    let size = |o: Option<&serde_json::Value>| {
        o.and_then(|o| o.pointer("/spec/poolConfig/size"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let grows_to = size(req.object.as_ref());
    if grows_to > size(req.old_object.as_ref()) {
        d.lookups.push(Lookup::NamespaceWarmPools {
            namespace: req.namespace.clone().unwrap_or_default(),
            pool: Pool {
                kind: Kind::SandboxTemplate,
                name: req.name.clone().unwrap_or_default(),
            },
            size: grows_to,
            cap: cfg.warm_pool_caps.per_namespace,
            upstream: cfg.upstream,
        });
    }
    d
}

/// Every built-in rule that the template's pods would break.
pub fn violations(template: &SandboxTemplate, cfg: &Config) -> Vec<Violation> {
    let mut out = Vec::new();
    if template.spec.runtime_class_name != cfg.runtime_class_name {
        out.push(Violation::new(
            Rule::RuntimeClass,
            "spec.runtimeClassName",
            format!(
                "is {:?}; sandbox templates must use {:?}",
                template.spec.runtime_class_name, cfg.runtime_class_name
            ),
        ));
    }
    let pod = super::pipeline::template_pod(template, cfg);
    if let Some(spec) = pod.spec.as_ref() {
        let mut pod_rules = Vec::new();
        validate::spec_rules(spec, "spec.template.spec", cfg, &mut pod_rules);
        // Unless the pod template names a runtime class itself, it inherits
        // spec.runtimeClassName, already judged above.
        let own_rc = template
            .spec
            .template
            .spec
            .as_ref()
            .is_some_and(|s| s.runtime_class_name.is_some());
        out.extend(
            pod_rules
                .into_iter()
                .filter(|v| own_rc || v.rule != Rule::RuntimeClass),
        );
    }
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
        && !node.is_empty()
    {
        out.push(Violation::new(
            Rule::NodeName,
            "spec.template.spec.nodeName",
            format!("is set to {node:?}; sandbox pods are placed by the scheduler"),
        ));
    }
    out
}
