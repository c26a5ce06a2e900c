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
    let selector = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        match_expressions: None,
    };
    let dns_port = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(IntOrString::Int(53)),
        end_port: None,
    };
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
            egress: Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(selector(
                        kubernetes::NAMESPACE_NAME_LABEL,
                        kubernetes::DNS_NAMESPACE,
                    )),
                    pod_selector: Some(selector(
                        kubernetes::DNS_POD_LABEL.0,
                        kubernetes::DNS_POD_LABEL.1,
                    )),
                    ip_block: None,
                }]),
                ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
            }]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
