//! Workloads (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs,
//! ReplicationControllers) are judged at create and update as the pods they would make:
//! the pod template goes through the whole pipeline as a pod CREATE would (mutation,
//! then the built-in rules and the pod policies on the result), and the workload is
//! refused with those reasons, named at their place in the workload. Otherwise a bad
//! template is admitted and only its controller's pods fail, later and quietly.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use serde_json::{Value, json};

use super::egress::Findings;
use super::review::{GroupVersionKind, GroupVersionResource};
use super::{AdmissionRequest, Decision, Operation, Rule, Violation, pipeline, subject};
use crate::config::Config;
use crate::policy::PolicySet;
use crate::resources::Kind;

/// The decision on a write of a workload of kind `kind`.
pub fn admit(kind: Kind, req: &AdmissionRequest, cfg: &Config, policies: &PolicySet) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource() != "" {
        return Decision::allow();
    }
    let who = subject(&kind.kind().to_ascii_lowercase(), req);
    let Some((pod_req, prefix)) = pod_request(kind, req) else {
        return Decision::deny(
            who,
            vec![Violation::new(
                Rule::MalformedObject,
                "spec",
                format!("has no pod template; the {} cannot be judged", kind.kind()),
            )],
        );
    };
    let inner = pipeline::admit_as_apiserver(pod_req, cfg, policies);
    let (reach, mut network_warnings) = upstream_network(kind, req);
    let mut inner = inner;
    if !reach.is_empty() {
        inner.allowed = false;
    }
    inner.warnings.append(&mut network_warnings);
    let mut violations: Vec<Violation> = inner
        .violations
        .into_iter()
        .map(|mut v| {
            if v.rule != Rule::Policy {
                v.field = format!("{prefix}.{}", v.field);
            }
            v
        })
        .collect();
    violations.extend(reach);
    Decision {
        allowed: inner.allowed,
        subject: who,
        violations,
        warnings: inner.warnings,
        // The workload itself is never changed: its pods are mutated when they are made.
        patch: None,
        effects: Vec::new(),
        // The pods' Secrets are checked when the pods are made.
        lookups: Vec::new(),
        policy_runs: inner.policy_runs,
    }
}

/// An upstream SandboxTemplate's explicit network rules, through the same analyses as
/// sandgate's templates (`spec.networkPolicy.egress` and `.ingress`); other kinds have
/// none.
fn upstream_network(kind: Kind, req: &AdmissionRequest) -> Findings {
    let mut out = (Vec::new(), Vec::new());
    let Some(np) = (kind == Kind::UpstreamSandboxTemplate)
        .then(|| req.object.as_ref()?.pointer("/spec/networkPolicy"))
        .flatten()
    else {
        return out;
    };
    judge_rules::<NetworkPolicyEgressRule>(np, "egress", super::egress::rules, &mut out);
    judge_rules::<NetworkPolicyIngressRule>(np, "ingress", super::egress::ingress_rules, &mut out);
    out
}

/// One side of a template's `networkPolicy` through its analysis, into `out`; rules that
/// do not parse are refused as malformed (judging on would guess).
fn judge_rules<R: serde::de::DeserializeOwned>(
    np: &Value,
    side: &str,
    analysis: fn(&[R], &str) -> Findings,
    out: &mut Findings,
) {
    let Some(rules) = np.get(side) else { return };
    let field = format!("spec.networkPolicy.{side}");
    match serde_json::from_value::<Vec<R>>(rules.clone()) {
        Ok(rules) => {
            let (v, w) = analysis(&rules, &field);
            out.0.extend(v);
            out.1.extend(w);
        }
        Err(e) => out.0.push(Violation::new(
            Rule::MalformedObject,
            field,
            format!("is not a list of NetworkPolicy {side} rules ({e}); it cannot be judged"),
        )),
    }
}

/// The pod CREATE a workload's controller would send, and the path of the pod
/// template's fields in the workload (`spec.template`).
pub fn pod_request(kind: Kind, req: &AdmissionRequest) -> Option<(AdmissionRequest, String)> {
    let pointer = kind.pod_template_pointer()?;
    let template = req.object.as_ref()?.pointer(pointer)?;
    let namespace = req.namespace.clone().unwrap_or_default();
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return None;
    }
    metadata["namespace"] = json!(namespace);
    let name = req.name.clone().filter(|n| !n.is_empty()).or_else(|| {
        req.object
            .as_ref()?
            .pointer("/metadata/generateName")?
            .as_str()
            .map(str::to_string)
    });
    if let Some(n) = &name {
        metadata["generateName"] = json!(format!("{n}-"));
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": Kind::Pod.kind(),
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let pod_req = AdmissionRequest {
        uid: req.uid.clone(),
        kind: GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: Kind::Pod.kind().into(),
        },
        resource: GroupVersionResource {
            group: String::new(),
            version: "v1".into(),
            resource: Kind::Pod.resource().into(),
        },
        sub_resource: None,
        name: None,
        namespace: req.namespace.clone(),
        operation: Operation::Create,
        user_info: req.user_info.clone(),
        object: Some(pod),
        old_object: None,
        dry_run: Some(true),
        options: None,
    };
    Some((pod_req, pointer.trim_start_matches('/').replace('/', ".")))
}
