//! Facts only the cluster knows, asked for by the admission pipeline (its `Lookup`s)
//! and answered here, at the edge: which Secrets are service-account tokens, whether a
//! namespace hosts sandbox pods, and a namespace's NetworkPolicies.
//!
//! A legacy `kubernetes.io/service-account-token` Secret carries the annotation naming
//! its ServiceAccount (the apiserver requires it), so a metadata-only read is enough:
//! sandgate never receives a Secret's data.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::admission::{Decision, Lookup, netpol_guard};
use crate::contract::{self, kubernetes, label};

#[derive(Debug, thiserror::Error)]
#[error("cannot read {what}: {reason}")]
pub struct FactsError {
    pub what: String,
    pub reason: String,
}

pub type FactFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FactsError>> + Send + 'a>>;

/// The facts the pipeline's lookups need.
pub trait ClusterFacts: Send + Sync {
    /// Which of `names` (in `namespace`) are service-account token Secrets.
    fn token_secrets<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> FactFuture<'a, BTreeSet<String>>;

    /// Whether `namespace` is enforced or already holds a sandbox pod.
    fn sandbox_namespace<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, bool>;

    /// Every NetworkPolicy of `namespace`.
    fn network_policies<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, Vec<NetworkPolicy>>;
}

/// No cluster (dev mode, in-process tests): no Secret is a token, no namespace hosts
/// sandboxes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCluster;

impl ClusterFacts for NoCluster {
    fn token_secrets<'a>(
        &'a self,
        _namespace: &'a str,
        _names: &'a [String],
    ) -> FactFuture<'a, BTreeSet<String>> {
        Box::pin(async { Ok(BTreeSet::new()) })
    }

    fn sandbox_namespace<'a>(&'a self, _namespace: &'a str) -> FactFuture<'a, bool> {
        Box::pin(async { Ok(false) })
    }

    fn network_policies<'a>(&'a self, _namespace: &'a str) -> FactFuture<'a, Vec<NetworkPolicy>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Reads the facts through the apiserver. A Secret that does not exist is no token (the
/// pod will wait for it, and it is judged if it is ever created in an enforced
/// namespace).
pub struct KubeFacts {
    client: kube::Client,
}

impl KubeFacts {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl ClusterFacts for KubeFacts {
    fn network_policies<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, Vec<NetworkPolicy>> {
        Box::pin(async move {
            let api: kube::Api<NetworkPolicy> =
                kube::Api::namespaced(self.client.clone(), namespace);
            let list = api
                .list(&kube::api::ListParams::default())
                .await
                .map_err(|e| FactsError {
                    what: format!("the NetworkPolicies of namespace {namespace}"),
                    reason: e.to_string(),
                })?;
            Ok(list.items)
        })
    }

    fn sandbox_namespace<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, bool> {
        Box::pin(async move {
            let err = |what: &str, e: kube::Error| FactsError {
                what: format!("{what} {namespace}"),
                reason: e.to_string(),
            };
            let namespaces: kube::Api<Namespace> = kube::Api::all(self.client.clone());
            let ns = namespaces
                .get_metadata_opt(namespace)
                .await
                .map_err(|e| err("namespace", e))?;
            if ns.is_some_and(|n| contract::is_enforcing(n.metadata.labels.as_ref())) {
                return Ok(true);
            }
            // Every sandbox pod admitted by sandgate carries the sandbox label (the
            // mutation sets it); upstream's pods admitted while sandgate was away carry
            // only theirs.
            let pods: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
            for selector in [label::SANDBOX, contract::upstream::SANDBOX_NAME_HASH] {
                let params = kube::api::ListParams::default().labels(selector).limit(1);
                let found = pods
                    .list_metadata(&params)
                    .await
                    .map_err(|e| err("the sandbox pods of namespace", e))?;
                if !found.items.is_empty() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn token_secrets<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> FactFuture<'a, BTreeSet<String>> {
        Box::pin(async move {
            let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), namespace);
            let mut tokens = BTreeSet::new();
            for name in names {
                if is_token_secret(&api, namespace, name).await? {
                    tokens.insert(name.clone());
                }
            }
            Ok(tokens)
        })
    }
}

/// Whether Secret `name` is a legacy service-account token, by its metadata only (one
/// GET; a missing Secret is no token).
pub async fn is_token_secret(
    api: &kube::Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<bool, FactsError> {
    let meta = api.get_metadata_opt(name).await.map_err(|e| FactsError {
        what: format!("Secret {namespace}/{name}"),
        reason: e.to_string(),
    })?;
    Ok(meta.is_some_and(|m| {
        m.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(kubernetes::SERVICE_ACCOUNT_NAME_ANNOTATION))
    }))
}

/// Checks the cluster facts a decision depends on (the pipeline leaves them only on
/// admitted requests); a fact that fails, or cannot be checked, denies (fail closed).
/// The webhook asks the apiserver; the audit asks its snapshot of the cluster.
pub async fn resolve(facts: &dyn ClusterFacts, decision: Decision) -> Decision {
    for lookup in &decision.lookups {
        match lookup {
            Lookup::NoTokenSecrets { namespace, refs } => {
                let mut names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
                names.sort();
                names.dedup();
                match facts.token_secrets(namespace, &names).await {
                    Ok(tokens) => {
                        let found = Lookup::tokens_found(refs, &tokens);
                        if !found.is_empty() {
                            return Decision::deny(decision.subject, found);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Secrets not checked; denying");
                        let violation = lookup.failed(&e);
                        return decision.fail(violation);
                    }
                }
            }
            Lookup::SandboxNamespace {
                namespace,
                violation,
            } => match facts.sandbox_namespace(namespace).await {
                Ok(false) => {}
                Ok(true) => {
                    let violation = violation.clone();
                    return decision.fail(violation);
                }
                Err(e) => {
                    tracing::error!(error = %e, "sandbox namespace not checked; denying");
                    let violation = lookup.failed(&e);
                    return decision.fail(violation);
                }
            },
            Lookup::NoWideningPolicies { namespace, labels } => {
                match facts.network_policies(namespace).await {
                    Ok(policies) => {
                        let found = netpol_guard::widening_policies(labels, &policies);
                        if !found.is_empty() {
                            return Decision::deny(decision.subject, found);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "NetworkPolicies not checked; denying");
                        let violation = lookup.failed(&e);
                        return decision.fail(violation);
                    }
                }
            }
        }
    }
    decision
}
