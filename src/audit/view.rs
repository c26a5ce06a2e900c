//! What the audit judges, pure: a stored object turned into the request `/validate`
//! would see if it were created now, and the decision turned into report results (one
//! per broken rule or warning, or one pass).
//!
//! Judging after the fact differs from admission in two places, both on purpose:
//! - who wrote the object is not known any more, so the request names the audit's own
//!   identity, which no rule trusts; the one exception is a pod controlled by a
//!   sandgate Sandbox, judged as the reconciler that made it (the template label
//!   rule lets only it make such pods);
//! - `spec.nodeName` is set on every scheduled pod by the scheduler, so it is not held
//!   against the pod (the webhook refuses it from a creator).

use serde::Serialize;
use serde_json::{Value, json};

use crate::admission::review::{GroupVersionKind, GroupVersionResource};
use crate::admission::{AdmissionRequest, Decision, Operation, Rule, netpol_guard};
use crate::config::Config;
use crate::contract::{self, audit};
use crate::resources::Kind;
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// The object a result is about, as PolicyReports reference it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    pub kind: String,
    pub api_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl ResourceRef {
    /// The reference to a stored object of `kind` (its uid, namespace and name).
    pub fn of(kind: Kind, object: &Value) -> Self {
        let text = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let namespace = text("/metadata/namespace");
        Self {
            kind: kind.kind().to_string(),
            api_version: api_version(kind),
            namespace: (!namespace.is_empty()).then_some(namespace),
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
        }
    }

    /// "pod ns/name", for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.to_ascii_lowercase(), self.name),
            None => format!("{} {}", self.kind.to_ascii_lowercase(), self.name),
        }
    }
}

/// `group/version` (`v1` for the core group) of a kind sandgate audits.
pub fn api_version(kind: Kind) -> String {
    match kind.group() {
        "" => "v1".to_string(),
        g if kind.is_upstream() => format!("{g}/{}", contract::upstream::VERSION),
        g => format!("{g}/v1"),
    }
}

/// A result's verdict, in the PolicyReport vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    // Ordered as reports list them: what needs attention first.
    Fail,
    Error,
    Warn,
    Pass,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Warn => "warn",
            Verdict::Pass => "pass",
        }
    }
}

/// One result on one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Outcome {
    pub result: Verdict,
    /// `sandgate` for the built-in rules, else the Rego policy's name.
    pub policy: String,
    /// The built-in rule's id (`privileged`), or `deny` / `warn` for a policy.
    pub rule: String,
    /// The offending field, when one is named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl Outcome {
    pub fn builtin(result: Verdict, rule: &str, field: Option<String>, message: String) -> Self {
        Self {
            result,
            policy: audit::BUILTIN_POLICY.to_string(),
            rule: rule.to_string(),
            field,
            message,
        }
    }

    /// The PolicyReport severity of a failure (none for other verdicts).
    pub fn severity(&self) -> Option<&'static str> {
        if self.result != Verdict::Fail {
            return None;
        }
        let medium = [
            Rule::ResourceLimits,
            Rule::ResourceCaps,
            Rule::PodResourceCaps,
            Rule::ResizeLimits,
            Rule::Policy,
        ];
        if self.policy != audit::BUILTIN_POLICY || medium.iter().any(|r| r.as_str() == self.rule) {
            Some("medium")
        } else {
            Some("high")
        }
    }
}

/// An object and what the audit found on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judged {
    pub resource: ResourceRef,
    pub outcomes: Vec<Outcome>,
}

impl Judged {
    pub fn worst(&self) -> Verdict {
        self.outcomes
            .iter()
            .map(|o| o.result)
            .min()
            .unwrap_or(Verdict::Pass)
    }
}

/// Whether a stored pod is a sandbox pod the audit judges: labelled as one, or in an
/// enforced namespace; and still running something (not finished, not being deleted).
/// `upstream`: pods of upstream agent-sandbox Sandboxes count (the configuration says).
pub fn audits_pod(pod: &Value, namespace_enforced: bool, upstream: bool) -> bool {
    let labelled = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| contract::has_sandbox_label(|k| l.contains_key(k), upstream));
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    (labelled || namespace_enforced) && !finished && !deleting
}

/// Whether a pod is controlled by one of sandgate's Sandboxes (the reconciler made it).
fn made_by_reconciler(pod: &Value) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            r.get("controller").and_then(Value::as_bool) == Some(true)
                && r.get("kind").and_then(Value::as_str) == Some(Kind::Sandbox.kind())
                && r.get("apiVersion").and_then(Value::as_str)
                    == Some(api_version(Kind::Sandbox).as_str())
        })
}

/// The request `/validate` would see for this stored object, created now.
pub fn request(kind: Kind, mut object: Value, cfg: &Config) -> AdmissionRequest {
    let mut user = audit::USER;
    // The NetworkPolicy upstream's controller manages for a template is judged as that
    // controller writes it (the template's egress analysis), not as anyone's widening.
    if kind == Kind::NetworkPolicy
        && cfg.upstream
        && let Ok(np) = serde_json::from_value::<NetworkPolicy>(object.clone())
        && netpol_guard::upstream_template_owner(&np).is_some()
        && let Some(controller) = cfg.upstream_controllers.first()
    {
        user = controller.as_str();
    }
    if kind == Kind::Pod {
        if made_by_reconciler(&object) {
            user = contract::SERVICE_ACCOUNT;
        }
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("nodeName");
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.entry("apiVersion")
            .or_insert_with(|| Value::String(api_version(kind)));
        o.entry("kind")
            .or_insert_with(|| Value::String(kind.kind().to_string()));
    }
    let meta = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let uid = meta("/metadata/uid").unwrap_or_else(|| "audit".to_string());
    let name = meta("/metadata/name");
    let namespace = meta("/metadata/namespace");
    AdmissionRequest {
        uid,
        kind: GroupVersionKind {
            group: kind.group().to_string(),
            version: "v1".into(),
            kind: kind.kind().to_string(),
        },
        resource: GroupVersionResource {
            group: kind.group().to_string(),
            version: "v1".into(),
            resource: kind.resource().to_string(),
        },
        sub_resource: None,
        name,
        namespace,
        operation: Operation::Create,
        user_info: json!({"username": user}),
        object: Some(object),
        old_object: None,
        // Nothing the pipeline asks for is performed: the audit only reports.
        dry_run: Some(true),
        options: None,
    }
}

/// Rules about who may write an object: they judge the writer, whom the audit does
/// not know, so their results are left out.
fn judges_the_writer(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::ManagedRuntimeClass | Rule::ManagedNetworkPolicy | Rule::UpstreamMetadata
    )
}

/// The results of a decision: a failure per broken rule (an error where sandgate could
/// not judge), a warning per admission warning, and one pass when nothing failed.
pub fn outcomes(decision: &Decision) -> Vec<Outcome> {
    let mut out = Vec::new();
    for v in &decision.violations {
        if judges_the_writer(v.rule) {
            continue;
        }
        out.push(match v.rule {
            Rule::Policy => Outcome {
                result: Verdict::Fail,
                policy: v.field.clone(),
                rule: "deny".into(),
                field: None,
                message: v.message.clone(),
            },
            Rule::Internal | Rule::MalformedObject => Outcome::builtin(
                Verdict::Error,
                v.rule.as_str(),
                Some(v.field.clone()),
                v.message.clone(),
            ),
            rule => Outcome::builtin(
                Verdict::Fail,
                rule.as_str(),
                Some(v.field.clone()),
                v.message.clone(),
            ),
        });
    }
    for w in &decision.warnings {
        // Policy warnings read "policy <name>: <msg>"; the built-in ones name a field.
        let (policy, message) = match w.strip_prefix("policy ").and_then(|r| r.split_once(": ")) {
            Some((name, msg)) => (name.to_string(), msg.to_string()),
            None => (audit::BUILTIN_POLICY.to_string(), w.clone()),
        };
        out.push(Outcome {
            result: Verdict::Warn,
            policy,
            rule: "warn".into(),
            field: None,
            message,
        });
    }
    if !out
        .iter()
        .any(|o| matches!(o.result, Verdict::Fail | Verdict::Error))
    {
        out.push(Outcome::builtin(
            Verdict::Pass,
            audit::PASS_RULE,
            None,
            "passes every built-in rule and policy".into(),
        ));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Violation;
    use crate::contract::label;

    fn pod(labels: Value, phase: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": labels},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
               "status": {"phase": phase}})
    }

    #[test]
    fn only_running_sandbox_pods_are_audited() {
        assert!(audits_pod(
            &pod(json!({label::SANDBOX: "x"}), "Running"),
            false,
            true
        ));
        assert!(audits_pod(&pod(json!({}), "Pending"), true, true));
        assert!(!audits_pod(&pod(json!({}), "Running"), false, true));
        assert!(!audits_pod(
            &pod(json!({label::SANDBOX: "x"}), "Succeeded"),
            true,
            true
        ));
        let mut deleting = pod(json!({label::SANDBOX: "x"}), "Running");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(!audits_pod(&deleting, true, true));
    }

    #[test]
    fn the_view_drops_the_schedulers_node_name_and_names_no_trusted_writer() {
        let req = request(Kind::Pod, pod(json!({}), "Running"), &Config::default());
        assert_eq!(req.username(), audit::USER);
        assert!(
            req.object
                .as_ref()
                .unwrap()
                .pointer("/spec/nodeName")
                .is_none()
        );
        assert_eq!(req.namespace.as_deref(), Some("ns"));
        assert_eq!(req.operation, Operation::Create);
        assert!(req.is_dry_run());

        let mut owned = pod(json!({}), "Running");
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "sandbox.gke.io/v1",
            "kind": "Sandbox", "name": "s", "uid": "x", "controller": true}]);
        assert_eq!(
            request(Kind::Pod, owned.clone(), &Config::default()).username(),
            contract::SERVICE_ACCOUNT
        );
        // Owned but not as the controller: no trust.
        owned["metadata"]["ownerReferences"][0]["controller"] = json!(false);
        assert_eq!(
            request(Kind::Pod, owned, &Config::default()).username(),
            audit::USER
        );
    }

    #[test]
    fn decisions_become_results() {
        let denied = Decision::deny(
            "pod ns/p",
            vec![
                Violation::new(
                    Rule::Privileged,
                    "spec.containers[0].securityContext.privileged",
                    "is true",
                ),
                Violation::new(Rule::Policy, "pod.registries", "image from elsewhere"),
                Violation::new(Rule::ManagedRuntimeClass, "metadata.name", "writer"),
            ],
        );
        let out = outcomes(&denied);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].result, Verdict::Fail);
        assert!(out.iter().any(|o| o.rule == "privileged"
            && o.field.as_deref() == Some("spec.containers[0].securityContext.privileged")
            && o.severity() == Some("high")));
        assert!(
            out.iter()
                .any(|o| o.policy == "pod.registries" && o.rule == "deny")
        );
        assert!(!out.iter().any(|o| o.result == Verdict::Pass));

        let mut allowed = Decision::allow_subject("pod ns/p");
        allowed
            .warnings
            .push("policy pod.secrets: reads a Secret".into());
        let out = outcomes(&allowed);
        assert_eq!(
            out.iter().map(|o| o.result).collect::<Vec<_>>(),
            [Verdict::Warn, Verdict::Pass]
        );
        assert_eq!(out[0].policy, "pod.secrets");

        let broken = Decision::deny(
            "pod ns/p",
            vec![Violation::internal("policies", "timed out")],
        );
        assert_eq!(outcomes(&broken)[0].result, Verdict::Error);
    }

    /// The allowed twin of every audit: a pod as sandgate's mutation leaves it, then
    /// scheduled (nodeName set, a token-free spec), passes as stored; the same pod
    /// unmutated fails on the rules the webhook would have enforced.
    #[test]
    fn a_mutated_and_scheduled_pod_passes_as_stored_and_an_unmutated_one_fails() {
        use crate::admission::{Webhook, admit};
        use crate::config::Config;
        use crate::policy::PolicySet;
        use k8s_openapi::api::core::v1::Pod;

        let cfg = Config::default();
        let raw = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                         "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}});
        let mut typed: Pod = serde_json::from_value(raw.clone()).unwrap();
        crate::admission::mutate::pod(&mut typed, &cfg);
        let mut stored = serde_json::to_value(&typed).unwrap();
        stored["spec"]["nodeName"] = json!("node-1");
        stored["status"] = json!({"phase": "Running"});
        let d = admit(
            Webhook::Validate,
            &request(Kind::Pod, stored, &Config::default()),
            &cfg,
            &PolicySet::empty(),
        );
        let out = outcomes(&d);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].result, Verdict::Pass);

        let d = admit(
            Webhook::Validate,
            &request(Kind::Pod, raw, &Config::default()),
            &cfg,
            &PolicySet::empty(),
        );
        let rules: Vec<String> = outcomes(&d).into_iter().map(|o| o.rule).collect();
        for r in ["runtime-class", "resource-limits"] {
            assert!(rules.iter().any(|x| x == r), "{rules:?}");
        }
    }

    #[test]
    fn upstreams_managed_policy_is_judged_as_its_controller_writes_it() {
        let cfg = Config::default();
        let policy = |owner: bool| {
            let mut np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                         "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}});
            if owner {
                np["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                    "name": "t", "uid": "1", "controller": true}]);
            }
            np
        };
        let managed = request(Kind::NetworkPolicy, policy(true), &cfg);
        assert_eq!(managed.username(), contract::upstream::CONTROLLER);
        let d = crate::admission::admit(
            crate::admission::Webhook::Validate,
            &managed,
            &cfg,
            &crate::policy::PolicySet::empty(),
        );
        assert!(d.allowed && d.lookups.is_empty(), "{d:?}");
        // Anyone's other policy: the audit's own identity, the widening guard.
        let other = request(Kind::NetworkPolicy, policy(false), &cfg);
        assert_eq!(other.username(), audit::USER);
        let off = Config {
            upstream: false,
            ..Config::default()
        };
        assert_eq!(
            request(Kind::NetworkPolicy, policy(true), &off).username(),
            audit::USER
        );
    }
}
