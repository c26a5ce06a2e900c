//! The namespace default-deny NetworkPolicy (DESIGN.md §4), and the seam through which
//! admission and the reconciler make sure it exists before a sandbox pod does (§3).
//! Without a cluster (dev mode, in-process tests) the no-op implementation is used.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::contract::{self, kubernetes, label};

/// Name of the per-namespace default-deny policy.
pub const DEFAULT_DENY_NAME: &str = contract::DEFAULT_DENY_POLICY;

#[derive(Debug, thiserror::Error)]
#[error("cannot ensure NetworkPolicy {name} in namespace {namespace}: {reason}")]
pub struct NetpolError {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

pub type EnsureFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NetpolError>> + Send + 'a>>;

/// Makes sure the default-deny policy of a namespace exists. Must be idempotent and
/// quick when the policy is already there (it is called for every admitted pod).
pub trait DefaultDeny: Send + Sync {
    fn ensure(&self, namespace: &str) -> EnsureFuture<'_>;
}

/// No cluster: nothing to create. Used by `serve --dev` and in-process tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCluster;

impl DefaultDeny for NoCluster {
    fn ensure(&self, _namespace: &str) -> EnsureFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Ensures the policy through the apiserver: a GET, and a CREATE when it is missing
/// (AlreadyExists from a concurrent admission counts as success). Namespaces seen
/// recently are remembered for [`KubeDefaultDeny::REMEMBER`] so a burst of pods costs one
/// round trip, while a policy deleted behind sandgate's back comes back soon.
pub struct KubeDefaultDeny {
    client: kube::Client,
    seen: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl KubeDefaultDeny {
    pub const REMEMBER: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            seen: std::sync::Mutex::new(Default::default()),
        }
    }

    fn recently_seen(&self, namespace: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(namespace)
            .is_some_and(|t| t.elapsed() < Self::REMEMBER)
    }

    async fn ensure_now(&self, namespace: &str) -> Result<(), NetpolError> {
        use kube::api::{Api, PostParams};
        let err = |reason: String| NetpolError {
            namespace: namespace.to_string(),
            name: DEFAULT_DENY_NAME.to_string(),
            reason,
        };
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), namespace);
        let exists = api
            .get_opt(DEFAULT_DENY_NAME)
            .await
            .map_err(|e| err(e.to_string()))?
            .is_some();
        if !exists {
            match api
                .create(&PostParams::default(), &default_deny(namespace))
                .await
            {
                Ok(_) => tracing::info!(namespace, "created the default-deny NetworkPolicy"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(err(e.to_string())),
            }
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_string(), std::time::Instant::now());
        Ok(())
    }
}

impl DefaultDeny for KubeDefaultDeny {
    fn ensure(&self, namespace: &str) -> EnsureFuture<'_> {
        let namespace = namespace.to_string();
        Box::pin(async move {
            if self.recently_seen(&namespace) {
                return Ok(());
            }
            self.ensure_now(&namespace).await
        })
    }
}

/// The default-deny policy for a namespace: selects every sandbox pod, denies all
/// ingress, and lets egress reach only kube-dns on port 53 (UDP and TCP). The namespace
/// and pod selectors sit in ONE peer, so the rule means "kube-dns pods in kube-system",
/// not "anything in kube-system or any kube-dns pod".
pub fn default_deny(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(DEFAULT_DENY_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(contract::managed_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: label::SANDBOX.to_string(),
                    operator: "Exists".to_string(),
                    values: None,
                }]),
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: None,
            egress: Some(vec![dns_egress()]),
        }),
    }
}

/// The one egress rule sandbox pods get: DNS (UDP and TCP 53) to kube-dns.
pub fn dns_egress() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![dns_peer()]),
        ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
    }
}

/// The one peer sandbox pods may reach: kube-dns pods in kube-system (both selectors
/// in the same peer element).
pub fn dns_peer() -> NetworkPolicyPeer {
    let selector = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        match_expressions: None,
    };
    NetworkPolicyPeer {
        namespace_selector: Some(selector(
            kubernetes::NAMESPACE_NAME_LABEL,
            kubernetes::DNS_NAMESPACE,
        )),
        pod_selector: Some(selector(
            kubernetes::DNS_POD_LABEL.0,
            kubernetes::DNS_POD_LABEL.1,
        )),
        ip_block: None,
    }
}

/// Port 53 over `protocol`.
pub fn dns_port(protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(IntOrString::Int(53)),
        end_port: None,
    }
}

/// Whether the apiserver's stored `stored` already says what `desired` says. The
/// apiserver drops empty lists and label maps and defaults a port's protocol to TCP, so
/// a byte comparison would see a difference that is not there (and a reconciler acting
/// on it would rewrite the policy forever). Empty selectors are kept: `{}` selects
/// everything, which an absent selector does not.
pub fn same_spec(desired: &NetworkPolicySpec, stored: &NetworkPolicySpec) -> bool {
    let normal = |spec: &NetworkPolicySpec| {
        let mut v = serde_json::to_value(spec).unwrap_or_default();
        normalise(&mut v);
        v
    };
    normal(desired) == normal(stored)
}

/// Drops nulls, empty lists and empty `matchLabels`; fills a port's default protocol.
fn normalise(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if map.contains_key("port") || map.contains_key("endPort") {
                map.entry("protocol").or_insert_with(|| Value::from("TCP"));
            }
            for child in map.values_mut() {
                normalise(child);
            }
            map.retain(|k, c| !(is_empty(c) || (k == "matchLabels" && is_empty_map(c))));
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                normalise(child);
            }
        }
        _ => {}
    }
}

fn is_empty_map(v: &serde_json::Value) -> bool {
    v.as_object().is_some_and(serde_json::Map::is_empty)
}

fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaulted_and_empty_fields_are_no_difference() {
        let desired: NetworkPolicySpec = serde_json::from_value(serde_json::json!({
            "podSelector": {"matchLabels": {"sandbox.gke.io/template": "t"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{"ports": [{"port": 53}], "to": []}]
        }))
        .unwrap();
        let stored: NetworkPolicySpec = serde_json::from_value(serde_json::json!({
            "podSelector": {"matchLabels": {"sandbox.gke.io/template": "t"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"ports": [{"port": 53, "protocol": "TCP"}]}]
        }))
        .unwrap();
        assert!(same_spec(&desired, &stored));
        // A real difference is one.
        let wider: NetworkPolicySpec = serde_json::from_value(serde_json::json!({
            "podSelector": {"matchLabels": {"sandbox.gke.io/template": "t"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]
        }))
        .unwrap();
        assert!(!same_spec(&desired, &wider));
        let open: NetworkPolicySpec = serde_json::from_value(serde_json::json!({
            "podSelector": {"matchLabels": {"sandbox.gke.io/template": "t"}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{}]
        }))
        .unwrap();
        assert!(
            !same_spec(&desired, &open),
            "an empty rule allows everything"
        );
        let peer = |p: serde_json::Value| -> NetworkPolicySpec {
            serde_json::from_value(serde_json::json!({
                "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [p]}]
            }))
            .unwrap()
        };
        let any_namespace = peer(
            serde_json::json!({"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}),
        );
        let this_namespace = peer(serde_json::json!({"podSelector": {"matchLabels": {"a": "b"}}}));
        assert!(
            !same_spec(&any_namespace, &this_namespace),
            "an empty namespaceSelector (every namespace) is not an absent one"
        );
        assert!(same_spec(
            &peer(serde_json::json!({"podSelector": {"matchLabels": {}}})),
            &peer(serde_json::json!({"podSelector": {}}))
        ));
    }

    #[test]
    fn default_deny_has_one_dns_peer() {
        let np = default_deny("team-a");
        assert_eq!(np.metadata.name.as_deref(), Some(DEFAULT_DENY_NAME));
        let spec = np.spec.expect("spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string(), "Egress".to_string()][..])
        );
        let egress = spec.egress.expect("egress");
        assert_eq!(egress.len(), 1);
        let to = egress[0].to.as_ref().expect("to");
        assert_eq!(
            to.len(),
            1,
            "namespace and pod selector must share one peer"
        );
        assert!(to[0].namespace_selector.is_some() && to[0].pod_selector.is_some());
        assert_eq!(egress[0].ports.as_ref().map(Vec::len), Some(2));
        assert!(
            spec.ingress.is_none(),
            "no ingress rule means deny all ingress"
        );
    }
}
