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

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use crate::admission::upstream::claim::{self, TemplateSource};
use crate::admission::{
    Decision, Lookup, Rule, Violation, netpol_guard, pool_budget, volume_claims,
};
use crate::contract::{self, kubernetes, label};
use crate::resources::Kind;

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

    /// One of upstream agent-sandbox's objects (`None`: there is none of that name).
    fn upstream_object<'a>(
        &'a self,
        namespace: &'a str,
        kind: Kind,
        name: &'a str,
    ) -> FactFuture<'a, Option<Value>>;

    /// Every object of one of upstream agent-sandbox's kinds in `namespace`.
    fn upstream_objects<'a>(&'a self, namespace: &'a str, kind: Kind)
    -> FactFuture<'a, Vec<Value>>;

    /// Every sandgate SandboxTemplate of `namespace`.
    fn sandbox_templates<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, Vec<Value>>;

    /// A PersistentVolumeClaim (`None`: there is none of that name).
    fn volume_claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> FactFuture<'a, Option<Value>>;

    /// A PersistentVolume (`None`: there is none of that name).
    fn persistent_volume<'a>(&'a self, name: &'a str) -> FactFuture<'a, Option<Value>>;
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

    fn upstream_object<'a>(
        &'a self,
        _namespace: &'a str,
        _kind: Kind,
        _name: &'a str,
    ) -> FactFuture<'a, Option<Value>> {
        Box::pin(async { Ok(None) })
    }

    fn upstream_objects<'a>(
        &'a self,
        _namespace: &'a str,
        _kind: Kind,
    ) -> FactFuture<'a, Vec<Value>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn volume_claim<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> FactFuture<'a, Option<Value>> {
        Box::pin(async { Ok(None) })
    }

    fn persistent_volume<'a>(&'a self, _name: &'a str) -> FactFuture<'a, Option<Value>> {
        Box::pin(async { Ok(None) })
    }

    fn sandbox_templates<'a>(&'a self, _namespace: &'a str) -> FactFuture<'a, Vec<Value>> {
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
    fn upstream_object<'a>(
        &'a self,
        namespace: &'a str,
        kind: Kind,
        name: &'a str,
    ) -> FactFuture<'a, Option<Value>> {
        Box::pin(get_upstream(&self.client, namespace, kind, name))
    }

    fn upstream_objects<'a>(
        &'a self,
        namespace: &'a str,
        kind: Kind,
    ) -> FactFuture<'a, Vec<Value>> {
        Box::pin(list_upstream(&self.client, namespace, kind))
    }

    fn network_policies<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, Vec<NetworkPolicy>> {
        Box::pin(async move {
            let api: kube::Api<NetworkPolicy> =
                kube::Api::namespaced(self.client.clone(), namespace);
            list_bounded(
                &api,
                &format!("the NetworkPolicies of namespace {namespace}"),
            )
            .await
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

    fn volume_claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> FactFuture<'a, Option<Value>> {
        let api: kube::Api<PersistentVolumeClaim> =
            kube::Api::namespaced(self.client.clone(), namespace);
        Box::pin(async move {
            read_as_value(
                &api,
                name,
                &format!("PersistentVolumeClaim {namespace}/{name}"),
            )
            .await
        })
    }

    fn persistent_volume<'a>(&'a self, name: &'a str) -> FactFuture<'a, Option<Value>> {
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        Box::pin(
            async move { read_as_value(&api, name, &format!("PersistentVolume {name}")).await },
        )
    }

    fn sandbox_templates<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, Vec<Value>> {
        Box::pin(list_templates(&self.client, namespace))
    }
}

/// The most objects of one kind a lookup reads from one namespace: far above what a
/// namespace holds, low enough that a tenant who fills theirs cannot make each of its
/// admissions read and judge without end. Beyond it the lookup fails, which denies.
pub const MAX_LISTED: usize = 1_000;
/// Objects per page of a lookup's list, so the bound is checked as they arrive.
const LIST_PAGE: u32 = 250;

/// Every object `api` lists, page by page, up to [`MAX_LISTED`]; none when the kind is
/// not served.
pub async fn list_bounded<K>(api: &kube::Api<K>, what: &str) -> Result<Vec<K>, FactsError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let err = |reason: String| FactsError {
        what: what.to_string(),
        reason,
    };
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = kube::api::ListParams::default().limit(LIST_PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = match api.list(&lp).await {
            Ok(page) => page,
            // The kind is not served (agent-sandbox's CRDs not installed): there is
            // none of it. A namespace that does not exist lists empty, not 404.
            Err(kube::Error::Api(s)) if s.code == 404 && token.is_none() => return Ok(Vec::new()),
            Err(e) => return Err(err(e.to_string())),
        };
        out.extend(page.items);
        if out.len() > MAX_LISTED {
            return Err(err(format!(
                "there are more than {MAX_LISTED}, more than sandgate reads for one admission; remove some"
            )));
        }
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// Every sandgate SandboxTemplate of `namespace`, as JSON.
pub async fn list_templates(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<Value>, FactsError> {
    let api: kube::Api<crate::crd::SandboxTemplate> =
        kube::Api::namespaced(client.clone(), namespace);
    let what = format!("the SandboxTemplates of namespace {namespace}");
    let err = |reason: String| FactsError {
        what: what.clone(),
        reason,
    };
    list_bounded(&api, &what)
        .await?
        .into_iter()
        .map(|t| serde_json::to_value(t).map_err(|e| err(e.to_string())))
        .collect()
}

/// One object, as JSON (`None`: there is none of that name).
pub async fn read_as_value<K>(
    api: &kube::Api<K>,
    name: &str,
    what: &str,
) -> Result<Option<Value>, FactsError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let err = |reason: String| FactsError {
        what: what.to_string(),
        reason,
    };
    let found = api.get_opt(name).await.map_err(|e| err(e.to_string()))?;
    found
        .map(|o| serde_json::to_value(o).map_err(|e| err(e.to_string())))
        .transpose()
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

/// One of upstream's kinds, in the version sandgate reads.
pub fn upstream_resource(kind: Kind) -> ApiResource {
    let gvk =
        kube::api::GroupVersionKind::gvk(kind.group(), contract::upstream::VERSION, kind.kind());
    ApiResource::from_gvk_with_plural(&gvk, kind.resource())
}

fn upstream_api(client: &kube::Client, namespace: &str, kind: Kind) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(client.clone(), namespace, &upstream_resource(kind))
}

fn object_value(o: DynamicObject, what: &str) -> Result<Value, FactsError> {
    serde_json::to_value(o).map_err(|e| FactsError {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// One upstream object through the apiserver (the webhook's and the audit's read).
pub async fn get_upstream(
    client: &kube::Client,
    namespace: &str,
    kind: Kind,
    name: &str,
) -> Result<Option<Value>, FactsError> {
    let what = format!("{} {namespace}/{name}", kind.kind());
    let found = upstream_api(client, namespace, kind)
        .get_opt(name)
        .await
        .map_err(|e| FactsError {
            what: what.clone(),
            reason: e.to_string(),
        })?;
    found.map(|o| object_value(o, &what)).transpose()
}

/// Every upstream object of a kind in a namespace, through the apiserver.
pub async fn list_upstream(
    client: &kube::Client,
    namespace: &str,
    kind: Kind,
) -> Result<Vec<Value>, FactsError> {
    let what = format!("the {} of namespace {namespace}", kind.resource());
    list_bounded(&upstream_api(client, namespace, kind), &what)
        .await?
        .into_iter()
        .map(|o| object_value(o, &what))
        .collect()
}

/// The template an upstream claim's env is judged against, and its name; a violation
/// when the claim names what does not exist.
async fn claim_template(
    facts: &dyn ClusterFacts,
    namespace: &str,
    source: &TemplateSource,
) -> Result<Result<(Value, String), Violation>, FactsError> {
    let missing = |what: String| {
        Violation::new(
            Rule::ClaimEnv,
            "spec",
            format!("{what} does not exist; the claim's env cannot be judged"),
        )
    };
    let template = match source {
        TemplateSource::Template(t) => t.clone(),
        TemplateSource::WarmPool(p) => {
            let Some(pool) = facts
                .upstream_object(namespace, Kind::UpstreamSandboxWarmPool, p)
                .await?
            else {
                return Ok(Err(missing(source.describe())));
            };
            match claim::template_of_pool(&pool) {
                Some(t) => t,
                None => {
                    return Ok(Err(missing(format!(
                        "the template of {}",
                        source.describe()
                    ))));
                }
            }
        }
    };
    Ok(facts
        .upstream_object(namespace, Kind::UpstreamSandboxTemplate, &template)
        .await?
        .map(|t| (t, template.clone()))
        .ok_or_else(|| missing(format!("SandboxTemplate {template:?}"))))
}

/// Whether a widening policy is the one upstream's controller manages for a template,
/// its egress exactly the template's (judged when the template was written).
async fn upstream_mirror(
    facts: &dyn ClusterFacts,
    namespace: &str,
    np: &NetworkPolicy,
    upstream: bool,
) -> Result<bool, FactsError> {
    let Some(template) = netpol_guard::upstream_template_owner(np).filter(|_| upstream) else {
        return Ok(false);
    };
    Ok(facts
        .upstream_object(namespace, Kind::UpstreamSandboxTemplate, template)
        .await?
        .is_some_and(|t| netpol_guard::mirrors_template(np, &t)))
}

/// Checks the cluster facts a decision depends on (the pipeline leaves them only on
/// admitted requests); a fact that fails, or cannot be checked, denies (fail closed).
/// The webhook asks the apiserver; the audit asks its snapshot of the cluster.
pub async fn resolve(facts: &dyn ClusterFacts, decision: Decision) -> Decision {
    for lookup in &decision.lookups {
        let found = match violations(facts, lookup).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot check {}; denying", lookup.question());
                vec![lookup.failed(&e)]
            }
        };
        if !found.is_empty() {
            return Decision::deny(decision.subject, found);
        }
    }
    decision
}

/// What one lookup finds against the decision (none: the fact holds).
async fn violations(
    facts: &dyn ClusterFacts,
    lookup: &Lookup,
) -> Result<Vec<Violation>, FactsError> {
    Ok(match lookup {
        Lookup::NoTokenSecrets { namespace, refs } => {
            let mut names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
            names.sort();
            names.dedup();
            let tokens = facts.token_secrets(namespace, &names).await?;
            Lookup::tokens_found(refs, &tokens)
        }
        Lookup::SandboxNamespace {
            namespace,
            violation,
        } => {
            if facts.sandbox_namespace(namespace).await? {
                vec![violation.clone()]
            } else {
                Vec::new()
            }
        }
        Lookup::NoWideningPolicies {
            namespace,
            labels,
            upstream,
        } => {
            let policies = facts.network_policies(namespace).await?;
            let mut found = Vec::new();
            for (np, v) in netpol_guard::widening_policies(labels, &policies) {
                if !upstream_mirror(facts, namespace, np, *upstream).await? {
                    found.push(v);
                }
            }
            found
        }
        Lookup::NamespaceWarmPools {
            namespace,
            pool,
            size,
            cap,
            upstream,
        } => {
            let templates = facts.sandbox_templates(namespace).await?;
            let pools = if *upstream {
                facts
                    .upstream_objects(namespace, Kind::UpstreamSandboxWarmPool)
                    .await?
            } else {
                Vec::new()
            };
            pool_budget::namespace_violation(&templates, &pools, pool, *size, *cap)
                .into_iter()
                .collect()
        }
        Lookup::VolumeClaims { namespace, claims } => {
            let mut found = Vec::new();
            for r in claims {
                let claim = facts.volume_claim(namespace, &r.name).await?;
                let volume = match claim.as_ref().map(volume_claims::binding) {
                    Some(volume_claims::Binding::Volume(name)) => {
                        facts.persistent_volume(name).await?
                    }
                    _ => None,
                };
                found.extend(volume_claims::judge(r, claim.as_ref(), volume.as_ref()));
            }
            found
        }
        Lookup::ClaimEnv {
            namespace,
            source,
            env,
        } => match claim_template(facts, namespace, source).await? {
            Ok((template, name)) => claim::judge(&template, &name, env),
            Err(v) => vec![v],
        },
    })
}
