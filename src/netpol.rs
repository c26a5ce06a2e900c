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
        let api = kube::Api::namespaced(self.client.clone(), namespace);
        ensure_default_deny(&api, namespace)
            .await
            .map_err(|e| NetpolError {
                namespace: namespace.to_string(),
                name: DEFAULT_DENY_NAME.to_string(),
                reason: e.to_string(),
            })?;
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_string(), std::time::Instant::now());
        Ok(())
    }
}

/// What [`ensure_default_deny`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// sandgate's default-deny was there.
    Present,
    Created,
    /// An object under its name that was not sandgate's policy was replaced by it.
    Replaced,
}

/// Makes a namespace's default-deny sandgate's: a GET, then a CREATE when it is missing,
/// or a replace (at the version read) when the object under its name is not sandgate's
/// policy: made before sandgate saw the namespace, or while its webhook was away, it
/// proves nothing by its name. Shared by admission, the reconciler and the audit.
pub async fn ensure_default_deny(
    api: &kube::Api<NetworkPolicy>,
    namespace: &str,
) -> Result<Ensured, kube::Error> {
    use kube::api::PostParams;
    match api.get_opt(DEFAULT_DENY_NAME).await? {
        None => match api
            .create(&PostParams::default(), &default_deny(namespace))
            .await
        {
            Ok(_) => {
                tracing::info!(namespace, "created the default-deny NetworkPolicy");
                Ok(Ensured::Created)
            }
            // A concurrent writer made it; whoever asks next checks what it is.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Ensured::Present),
            Err(e) => Err(e),
        },
        Some(np) if is_default_deny(&np) => Ok(Ensured::Present),
        Some(np) => {
            let mut real = default_deny(namespace);
            real.metadata.resource_version = np.metadata.resource_version.clone();
            api.replace(DEFAULT_DENY_NAME, &PostParams::default(), &real)
                .await?;
            tracing::warn!(
                namespace,
                "replaced a NetworkPolicy named {DEFAULT_DENY_NAME} that was not sandgate's default-deny"
            );
            Ok(Ensured::Replaced)
        }
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

/// Whether a stored policy is sandgate's default-deny: its label and exactly its rules.
/// The name alone proves nothing (anyone may have created an object under it first).
pub fn is_default_deny(np: &NetworkPolicy) -> bool {
    let Some(namespace) = np.metadata.namespace.as_deref() else {
        return false;
    };
    let desired = default_deny(namespace);
    np.metadata.name.as_deref() == Some(DEFAULT_DENY_NAME)
        && contract::is_managed(np.metadata.labels.as_ref())
        && match (desired.spec.as_ref(), np.spec.as_ref()) {
            (Some(d), Some(s)) => same_spec(d, s),
            _ => false,
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

    #[test]
    fn only_sandgates_own_default_deny_is_taken_for_it() {
        let real = default_deny("team-a");
        assert!(is_default_deny(&real));
        // As the apiserver stores it (protocols defaulted, empty lists dropped): the same.
        let mut stored = real.clone();
        if let Some(spec) = stored.spec.as_mut() {
            spec.ingress = Some(vec![]);
        }
        assert!(is_default_deny(&stored));
        // The name alone: an empty policy a tenant created first selects nothing.
        let squatter = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(DEFAULT_DENY_NAME.to_string()),
                namespace: Some("team-a".to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(NetworkPolicySpec::default()),
        };
        assert!(!is_default_deny(&squatter));
        // The name and the label, but other rules.
        let mut labelled = squatter.clone();
        labelled.metadata.labels = Some(contract::managed_labels());
        assert!(!is_default_deny(&labelled));
        // The rules, without the label.
        let mut unlabelled = real.clone();
        unlabelled.metadata.labels = None;
        assert!(!is_default_deny(&unlabelled));
        // The label and the rules, opened by one more egress rule.
        let mut widened = real.clone();
        if let Some(egress) = widened.spec.as_mut().and_then(|s| s.egress.as_mut()) {
            egress.push(NetworkPolicyEgressRule::default());
        }
        assert!(!is_default_deny(&widened));
    }
}
