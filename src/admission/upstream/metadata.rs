//! Upstream's controller trusts its own metadata: it finds a Sandbox's pod by the
//! Sandbox's `agents.x-k8s.io/pod-name` annotation (and deletes that pod with the
//! Sandbox: a forged annotation deletes any pod of the namespace,
//! kubernetes-sigs/agent-sandbox#265), and it adopts and counts pods and Sandboxes by
//! its `agents.x-k8s.io/*` labels. So only the configured controller identity may set,
//! change or remove them; anyone else's write that leaves them as they were passes.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::super::{AdmissionRequest, Rule, Violation, requester_in};
use crate::config::Config;
use crate::contract::upstream;

/// Which of an object's metadata upstream's controller owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    /// A pod: its upstream-domain labels.
    PodLabels,
    /// An upstream Sandbox: its upstream-domain labels and the pod-name annotation.
    Sandbox,
}

/// The violations of a CREATE or UPDATE (`old` is the stored object) that sets, changes
/// or removes metadata upstream's controller owns, by anyone else.
pub fn guard(
    req: &AdmissionRequest,
    cfg: &Config,
    object: &Value,
    old: Option<&Value>,
    owned: Owned,
) -> Vec<Violation> {
    if !cfg.upstream || requester_in(req, &cfg.upstream_controllers) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let user = req.username();
    let mut check = |section: &str, keys: &dyn Fn(&str) -> bool| {
        let now = entries(object, section);
        let before = old.map(|o| entries(o, section)).unwrap_or_default();
        let changed: BTreeSet<&String> = now
            .keys()
            .chain(before.keys())
            .filter(|k| keys(k) && now.get(*k) != before.get(*k))
            .collect();
        for key in changed {
            let verb = match (before.contains_key(key), now.contains_key(key)) {
                (false, _) => "set",
                (true, true) => "change",
                (true, false) => "remove",
            };
            out.push(Violation::new(
                Rule::UpstreamMetadata,
                format!("metadata.{section}[{key:?}]"),
                format!(
                    "is written by agent-sandbox's controller only (it finds, adopts and deletes pods by it); {user:?} may not {verb} it (upstreamAgentSandbox.controllers names who may)"
                ),
            ));
        }
    };
    check("labels", &|k| upstream::is_upstream_key(k));
    if owned == Owned::Sandbox {
        check("annotations", &|k| k == upstream::POD_NAME_ANNOTATION);
    }
    out
}

/// `metadata.<section>` as a map (absent or malformed: empty; the kind's own rules
/// refuse a malformed object).
fn entries(object: &Value, section: &str) -> Map<String, Value> {
    object
        .get("metadata")
        .and_then(|m| m.get(section))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Operation;
    use crate::admission::review::test_request;
    use serde_json::json;

    fn req(user: &str) -> AdmissionRequest {
        AdmissionRequest {
            operation: Operation::Update,
            user_info: json!({"username": user, "groups": ["system:authenticated"]}),
            ..test_request("agents.x-k8s.io", "sandboxes", "Sandbox", json!({}))
        }
    }

    fn meta(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"labels": labels, "annotations": annotations}})
    }

    #[test]
    fn only_the_controller_writes_the_pod_name_and_upstream_labels() {
        let cfg = Config::default();
        let stored = meta(
            json!({"app": "a", "agents.x-k8s.io/claim-uid": "1"}),
            json!({upstream::POD_NAME_ANNOTATION: "s"}),
        );
        let forged = [
            // #265: point the Sandbox at another pod.
            meta(
                json!({"app": "a", "agents.x-k8s.io/claim-uid": "1"}),
                json!({upstream::POD_NAME_ANNOTATION: "victim"}),
            ),
            // Take a label away, change one, add one of a subdomain.
            meta(
                json!({"app": "a"}),
                json!({upstream::POD_NAME_ANNOTATION: "s"}),
            ),
            meta(
                json!({"app": "a", "agents.x-k8s.io/claim-uid": "2"}),
                json!({upstream::POD_NAME_ANNOTATION: "s"}),
            ),
            meta(
                json!({"app": "a", "agents.x-k8s.io/claim-uid": "1",
                       "extensions.agents.x-k8s.io/x": "y"}),
                json!({upstream::POD_NAME_ANNOTATION: "s"}),
            ),
        ];
        for after in &forged {
            let v = guard(&req("alice"), &cfg, after, Some(&stored), Owned::Sandbox);
            assert_eq!(v.len(), 1, "{after}: {v:?}");
            assert_eq!(v[0].rule, Rule::UpstreamMetadata);
            // The controller may.
            let ok = guard(
                &req(upstream::CONTROLLER),
                &cfg,
                after,
                Some(&stored),
                Owned::Sandbox,
            );
            assert!(ok.is_empty(), "{ok:?}");
        }
        // Twins: other labels and annotations change freely; the owned ones kept as
        // they are pass.
        let edited = meta(
            json!({"app": "b", "agents.x-k8s.io/claim-uid": "1"}),
            json!({upstream::POD_NAME_ANNOTATION: "s", "note": "x"}),
        );
        assert!(guard(&req("alice"), &cfg, &edited, Some(&stored), Owned::Sandbox).is_empty());
        // On a pod the annotation is not upstream's business; the labels are.
        let pod = meta(json!({}), json!({upstream::POD_NAME_ANNOTATION: "x"}));
        assert!(guard(&req("alice"), &cfg, &pod, None, Owned::PodLabels).is_empty());
        let forged_pod = meta(json!({upstream::SANDBOX_NAME_HASH: "h"}), json!({}));
        assert_eq!(
            guard(&req("alice"), &cfg, &forged_pod, None, Owned::PodLabels)[0].field,
            format!("metadata.labels[{:?}]", upstream::SANDBOX_NAME_HASH)
        );
        // Not upstream's domain, though it looks alike.
        let lookalike = meta(json!({"notagents.x-k8s.io/a": "1"}), json!({}));
        assert!(guard(&req("alice"), &cfg, &lookalike, None, Owned::PodLabels).is_empty());
        // With upstream support off, nothing of this is sandgate's.
        let off = Config {
            upstream: false,
            ..Config::default()
        };
        assert!(guard(&req("alice"), &off, &forged_pod, None, Owned::PodLabels).is_empty());
    }
}
