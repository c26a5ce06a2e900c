//! Which Secrets are service-account tokens: a fact only the cluster knows, asked for by
//! the admission pipeline (`Lookup::NoTokenSecrets`) before a sandbox pod that
//! references Secrets is admitted. A legacy `kubernetes.io/service-account-token` Secret
//! carries the annotation naming its ServiceAccount (the apiserver requires it), so a
//! metadata-only read is enough: sandgate never receives a Secret's data.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Secret;

use crate::contract::kubernetes;

#[derive(Debug, thiserror::Error)]
#[error("cannot read Secret {namespace}/{name}: {reason}")]
pub struct SecretsError {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

pub type TokensFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BTreeSet<String>, SecretsError>> + Send + 'a>>;

/// Tells which of `names` (in `namespace`) are service-account token Secrets.
pub trait TokenSecrets: Send + Sync {
    fn tokens<'a>(&'a self, namespace: &'a str, names: &'a [String]) -> TokensFuture<'a>;
}

/// No cluster (dev mode, in-process tests): no Secret is known to be a token.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCluster;

impl TokenSecrets for NoCluster {
    fn tokens<'a>(&'a self, _namespace: &'a str, _names: &'a [String]) -> TokensFuture<'a> {
        Box::pin(async { Ok(BTreeSet::new()) })
    }
}

/// Reads each Secret's metadata through the apiserver. A Secret that does not exist is
/// no token (the pod will wait for it, and it will be judged if it is ever created in an
/// enforced namespace).
pub struct KubeTokenSecrets {
    client: kube::Client,
}

impl KubeTokenSecrets {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl TokenSecrets for KubeTokenSecrets {
    fn tokens<'a>(&'a self, namespace: &'a str, names: &'a [String]) -> TokensFuture<'a> {
        Box::pin(async move {
            let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
            let mut tokens = BTreeSet::new();
            for name in names {
                let meta = api.get_metadata_opt(name).await.map_err(|e| SecretsError {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
                let is_token = meta.is_some_and(|m| {
                    m.metadata.annotations.as_ref().is_some_and(|a| {
                        a.contains_key(kubernetes::SERVICE_ACCOUNT_NAME_ANNOTATION)
                    })
                });
                if is_token {
                    tokens.insert(name.clone());
                }
            }
            Ok(tokens)
        })
    }
}
