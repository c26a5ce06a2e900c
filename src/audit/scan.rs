//! One sweep of the cluster, at the edge: paced, paginated reads of what the audit
//! judges, each object turned into its `/validate` view and run through the admission
//! pipeline, the lookups answered from the same snapshot. Reads only: what to write
//! (reports, events, default-deny policies) is the caller's business.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectList};
use kube::core::PartialObjectMeta;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;

use super::AuditError;
use super::metrics::VerbLabels;
use super::pace::Pacer;
use super::view::{self, Judged, Outcome, ResourceRef, Verdict};
use crate::admission::{self, Decision, Webhook, netpol_guard};
use crate::config::Config;
use crate::contract::{self, audit, label};
use crate::crd::{SandboxClaim, SandboxTemplate};
use crate::facts::{self, ClusterFacts, FactFuture};
use crate::netpol;
use crate::policy::PolicySet;
use crate::resources::Kind;

/// What one sweep found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every namespace swept (even with nothing in it to judge), with its results.
    pub namespaces: BTreeMap<String, Vec<Judged>>,
    /// Cluster-scoped results (the sandbox RuntimeClass); full sweeps only.
    pub cluster: Vec<Judged>,
    /// Namespaces that are enforced or hold a labelled sandbox pod.
    pub sandbox_namespaces: BTreeSet<String>,
    /// Of those, the ones without sandgate's default-deny NetworkPolicy.
    pub missing_default_deny: BTreeSet<String>,
    /// Objects judged, by kind.
    pub judged: BTreeMap<&'static str, usize>,
    /// Whether the whole cluster was swept (not a list of namespaces).
    pub full: bool,
}

impl Scan {
    fn add(&mut self, j: Judged) {
        let ns = j.resource.namespace.clone().unwrap_or_default();
        self.namespaces.entry(ns).or_default().push(j);
    }

    /// The result a namespace gets for a missing default-deny (added to its report by
    /// the caller when it could not, or would not, create it).
    pub fn default_deny_missing(namespace: &str, why: &str) -> Judged {
        Judged {
            resource: ResourceRef {
                kind: Kind::Namespace.kind().into(),
                api_version: view::api_version(Kind::Namespace),
                namespace: None,
                name: namespace.to_string(),
                uid: String::new(),
            },
            outcomes: vec![Outcome::builtin(
                Verdict::Fail,
                admission::Rule::NetworkPolicy.as_str(),
                Some(format!("networkpolicies/{}", contract::DEFAULT_DENY_POLICY)),
                format!(
                    "the namespace hosts sandbox pods and has no default-deny NetworkPolicy ({why}); their egress is open"
                ),
            )],
        }
    }
}

/// Reads the cluster for the audit, at most `qps` requests a second, counting each.
pub struct Scanner {
    client: kube::Client,
    cfg: Config,
    pacer: Pacer,
    requests: Family<VerbLabels, Counter>,
}

type Meta<K> = PartialObjectMeta<K>;

impl Scanner {
    pub fn new(
        client: kube::Client,
        cfg: Config,
        qps: u32,
        requests: Family<VerbLabels, Counter>,
    ) -> Self {
        Self {
            client,
            cfg,
            pacer: Pacer::new(qps),
            requests,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Waits for a request slot and counts the request.
    pub async fn pace(&self, verb: &'static str) {
        self.pacer.wait().await;
        self.requests.get_or_create(&VerbLabels { verb }).inc();
    }

    /// One page of a list.
    async fn page<K>(
        &self,
        api: &Api<K>,
        lp: &ListParams,
        token: Option<String>,
        what: &str,
    ) -> Result<(Vec<K>, Option<String>), AuditError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.pace("list").await;
        let mut lp = lp.clone().limit(audit::PAGE_SIZE);
        if let Some(t) = token {
            lp = lp.continue_token(&t);
        }
        let list: ObjectList<K> = api.list(&lp).await.map_err(|e| AuditError::read(what, e))?;
        let next = list.metadata.continue_.filter(|t| !t.is_empty());
        Ok((list.items, next))
    }

    /// Whether the apiserver serves this kind (upstream's CRDs may not be installed).
    async fn served(&self, api: &Api<DynamicObject>, kind: Kind) -> Result<bool, AuditError> {
        self.pace("list").await;
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!(
                    kind = kind.kind(),
                    group = kind.group(),
                    "not served; not audited"
                );
                Ok(false)
            }
            Err(e) => Err(AuditError::read(kind.resource(), e)),
        }
    }

    /// Every item of a list, page by page.
    async fn all<K>(&self, api: &Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, AuditError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let (mut items, next) = self.page(api, lp, token, what).await?;
            out.append(&mut items);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// The namespaces swept (excluded ones left out), each with whether it is enforced.
    async fn namespaces(
        &self,
        only: Option<&BTreeSet<String>>,
    ) -> Result<BTreeMap<String, bool>, AuditError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            self.pace("list").await;
            let mut lp = ListParams::default().limit(audit::PAGE_SIZE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let list: ObjectList<Meta<Namespace>> = api
                .list_metadata(&lp)
                .await
                .map_err(|e| AuditError::read("namespaces", e))?;
            for ns in list.items {
                let Some(name) = ns.metadata.name.clone() else {
                    continue;
                };
                if self.cfg.exclude_namespaces.contains(&name)
                    || only.is_some_and(|o| !o.contains(&name))
                {
                    continue;
                }
                out.insert(name, contract::is_enforcing(ns.metadata.labels.as_ref()));
            }
            match list.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Sweeps the cluster (`only`: just these namespaces) with `policies`.
    pub async fn scan(
        &self,
        policies: Arc<PolicySet>,
        only: Option<&BTreeSet<String>>,
    ) -> Result<Scan, AuditError> {
        let namespaces = self.namespaces(only).await?;
        let mut scan = Scan {
            full: only.is_none(),
            ..Scan::default()
        };
        for ns in namespaces.keys() {
            scan.namespaces.insert(ns.clone(), Vec::new());
        }
        let enforced: BTreeSet<String> = namespaces
            .iter()
            .filter(|(_, e)| **e)
            .map(|(n, _)| n.clone())
            .collect();
        scan.sandbox_namespaces = enforced.clone();

        // NetworkPolicies first: the pods' lookups read them.
        let mut netpols: BTreeMap<String, Vec<NetworkPolicy>> = BTreeMap::new();
        for np in self
            .each::<NetworkPolicy>(only, &namespaces, &ListParams::default(), "NetworkPolicies")
            .await?
        {
            let ns = np.metadata.namespace.clone().unwrap_or_default();
            netpols.entry(ns).or_default().push(np);
        }
        let snapshot = Snapshot {
            scanner: self,
            netpols: &netpols,
            sandbox_namespaces: Mutex::new(enforced.clone()),
            tokens: Mutex::new(HashMap::new()),
            upstream: Mutex::new(HashMap::new()),
        };

        // Pods: every pod of an enforced namespace, and labelled ones anywhere.
        let pods = ApiResource::erase::<Pod>(&());
        let mut seen: HashSet<String> = HashSet::new();
        for ns in &enforced {
            let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &pods);
            self.judge_pages(
                &api,
                &ListParams::default(),
                Kind::Pod,
                &namespaces,
                &mut seen,
                &snapshot,
                &policies,
                &mut scan,
            )
            .await?;
        }
        let mut selectors = vec![label::SANDBOX, label::TEMPLATE];
        if self.cfg.upstream {
            selectors.push(contract::upstream::SANDBOX_NAME_HASH);
        }
        for selector in selectors {
            let lp = ListParams::default().labels(selector);
            match only {
                None => {
                    let api = Api::<DynamicObject>::all_with(self.client.clone(), &pods);
                    self.judge_pages(
                        &api,
                        &lp,
                        Kind::Pod,
                        &namespaces,
                        &mut seen,
                        &snapshot,
                        &policies,
                        &mut scan,
                    )
                    .await?;
                }
                Some(_) => {
                    for ns in namespaces.keys().filter(|n| !enforced.contains(*n)) {
                        let api =
                            Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &pods);
                        self.judge_pages(
                            &api,
                            &lp,
                            Kind::Pod,
                            &namespaces,
                            &mut seen,
                            &snapshot,
                            &policies,
                            &mut scan,
                        )
                        .await?;
                    }
                }
            }
        }
        scan.sandbox_namespaces = snapshot
            .sandbox_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();

        // Templates and claims, wherever they are; with agent-sandbox support, its
        // Sandboxes and templates (as the pods they make), warm pools (against the caps)
        // and claims (their env against their templates), where its CRDs are served.
        let mut kinds = vec![
            (
                Kind::SandboxTemplate,
                ApiResource::erase::<SandboxTemplate>(&()),
            ),
            (Kind::SandboxClaim, ApiResource::erase::<SandboxClaim>(&())),
        ];
        if self.cfg.upstream {
            kinds.extend(
                [
                    Kind::UpstreamSandbox,
                    Kind::UpstreamSandboxTemplate,
                    Kind::UpstreamSandboxWarmPool,
                    Kind::UpstreamSandboxClaim,
                ]
                .map(|k| (k, facts::upstream_resource(k))),
            );
        }
        for (kind, ar) in kinds {
            let apis: Vec<Api<DynamicObject>> = match only {
                None => vec![Api::all_with(self.client.clone(), &ar)],
                Some(_) => namespaces
                    .keys()
                    .map(|ns| Api::namespaced_with(self.client.clone(), ns, &ar))
                    .collect(),
            };
            if kind.is_upstream()
                && let Some(first) = apis.first()
                && !self.served(first, kind).await?
            {
                continue;
            }
            for api in apis {
                self.judge_pages(
                    &api,
                    &ListParams::default(),
                    kind,
                    &namespaces,
                    &mut seen,
                    &snapshot,
                    &policies,
                    &mut scan,
                )
                .await?;
            }
        }

        // Other NetworkPolicies where sandbox pods live (sandgate's own are kept in
        // shape by the reconciler), and the default-deny's presence.
        let mut relevant = Vec::new();
        for ns in &scan.sandbox_namespaces {
            let list = netpols.get(ns).map(Vec::as_slice).unwrap_or_default();
            // By content, not by name: an object under the name that is not sandgate's
            // policy leaves the namespace as open as no object at all.
            if !list.iter().any(netpol::is_default_deny) {
                scan.missing_default_deny.insert(ns.clone());
            }
            let impostor = |np: &&NetworkPolicy| {
                np.metadata.name.as_deref() == Some(contract::DEFAULT_DENY_POLICY)
                    && !netpol::is_default_deny(np)
            };
            for np in list
                .iter()
                .filter(|np| !netpol_guard::is_sandgates_typed(np) || impostor(np))
            {
                match serde_json::to_value(np) {
                    Ok(v) => relevant.push((Kind::NetworkPolicy, v)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a NetworkPolicy for the audit")
                    }
                }
            }
        }
        for j in self.judge(relevant, &snapshot, &policies).await? {
            scan.add(j);
        }

        if scan.full {
            scan.cluster = self.runtime_class(&snapshot, &policies).await?;
        }
        for (ns, items) in &scan.namespaces {
            for j in items {
                debug_assert_eq!(j.resource.namespace.as_deref().unwrap_or_default(), ns);
                *scan.judged.entry(kind_name(&j.resource.kind)).or_default() += 1;
            }
        }
        Ok(scan)
    }

    /// Lists `K` in every swept namespace (one cluster-wide list on a full sweep).
    async fn each<K>(
        &self,
        only: Option<&BTreeSet<String>>,
        namespaces: &BTreeMap<String, bool>,
        lp: &ListParams,
        what: &str,
    ) -> Result<Vec<K>, AuditError>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match only {
            None => {
                let items = self
                    .all(&Api::<K>::all(self.client.clone()), lp, what)
                    .await?;
                Ok(items
                    .into_iter()
                    .filter(|o| {
                        namespaces.contains_key(o.meta().namespace.as_deref().unwrap_or_default())
                    })
                    .collect())
            }
            Some(_) => {
                let mut out = Vec::new();
                for ns in namespaces.keys() {
                    let api = Api::<K>::namespaced(self.client.clone(), ns);
                    out.append(&mut self.all(&api, lp, what).await?);
                }
                Ok(out)
            }
        }
    }

    /// Judges a list page by page (pods: only sandbox pods, each once).
    #[allow(clippy::too_many_arguments)]
    async fn judge_pages(
        &self,
        api: &Api<DynamicObject>,
        lp: &ListParams,
        kind: Kind,
        namespaces: &BTreeMap<String, bool>,
        seen: &mut HashSet<String>,
        snapshot: &Snapshot<'_>,
        policies: &Arc<PolicySet>,
        scan: &mut Scan,
    ) -> Result<(), AuditError> {
        let what = kind.resource();
        let mut token = None;
        loop {
            let (items, next) = self.page(api, lp, token, what).await?;
            let mut batch = Vec::with_capacity(items.len());
            for item in items {
                let ns = item.metadata.namespace.clone().unwrap_or_default();
                let Some(enforced) = namespaces.get(&ns).copied() else {
                    continue; // excluded, or outside the namespaces asked for
                };
                let uid = item.metadata.uid.clone().unwrap_or_default();
                let value = match serde_json::to_value(&item) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read an object for the audit");
                        continue;
                    }
                };
                if kind == Kind::Pod {
                    let upstream = self.cfg.upstream;
                    if !view::audits_pod(&value, enforced, upstream) || !seen.insert(uid) {
                        continue;
                    }
                    if contract::is_sandbox_labelled(item.metadata.labels.as_ref(), upstream) {
                        snapshot.mark_sandbox_namespace(&ns);
                    }
                }
                batch.push((kind, value));
            }
            for j in self.judge(batch, snapshot, policies).await? {
                scan.add(j);
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// Runs the pipeline on a batch (on the blocking pool: policies may take a while),
    /// then answers its lookups from the snapshot.
    async fn judge(
        &self,
        batch: Vec<(Kind, Value)>,
        snapshot: &Snapshot<'_>,
        policies: &Arc<PolicySet>,
    ) -> Result<Vec<Judged>, AuditError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = self.cfg.clone();
        let set = policies.clone();
        let decided = tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|(kind, object)| {
                    let resource = ResourceRef::of(kind, &object);
                    let req = view::request(kind, object, &cfg);
                    (
                        resource,
                        admission::admit(Webhook::Validate, &req, &cfg, &set),
                    )
                })
                .collect::<Vec<(ResourceRef, Decision)>>()
        })
        .await
        .map_err(|e| AuditError::Crashed(e.to_string()))?;
        let mut out = Vec::with_capacity(decided.len());
        for (resource, decision) in decided {
            let decision = facts::resolve(snapshot, decision).await;
            out.push(Judged {
                outcomes: view::outcomes(&decision),
                resource,
            });
        }
        Ok(out)
    }

    /// The sandbox RuntimeClass, judged; a missing one is an error (sandbox pods cannot
    /// be admitted, or run, without it).
    async fn runtime_class(
        &self,
        snapshot: &Snapshot<'_>,
        policies: &Arc<PolicySet>,
    ) -> Result<Vec<Judged>, AuditError> {
        let name = &self.cfg.runtime_class_name;
        let api: Api<RuntimeClass> = Api::all(self.client.clone());
        self.pace("get").await;
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| AuditError::read("the sandbox RuntimeClass", e))?;
        let Some(rc) = found else {
            return Ok(vec![Judged {
                resource: ResourceRef {
                    kind: Kind::RuntimeClass.kind().into(),
                    api_version: "node.k8s.io/v1".into(),
                    namespace: None,
                    name: name.clone(),
                    uid: String::new(),
                },
                outcomes: vec![Outcome::builtin(
                    Verdict::Error,
                    admission::Rule::RuntimeClass.as_str(),
                    None,
                    format!("RuntimeClass {name:?} does not exist; sandbox pods cannot run"),
                )],
            }]);
        };
        let value = serde_json::to_value(&rc).map_err(|e| AuditError::Crashed(e.to_string()))?;
        self.judge(vec![(Kind::RuntimeClass, value)], snapshot, policies)
            .await
    }
}

fn kind_name(kind: &str) -> &'static str {
    Kind::ALL
        .into_iter()
        .find(|k| k.kind() == kind)
        .map_or("Other", Kind::kind)
}

/// The lookups' answers from the sweep: NetworkPolicies and sandbox namespaces as read,
/// Secrets fetched (metadata only) the first time a pod names them.
struct Snapshot<'a> {
    scanner: &'a Scanner,
    netpols: &'a BTreeMap<String, Vec<NetworkPolicy>>,
    sandbox_namespaces: Mutex<BTreeSet<String>>,
    tokens: Mutex<HashMap<(String, String), bool>>,
    /// Pools read for lookups (upstream's objects and sandgate's templates), by
    /// (namespace, kind): read once a sweep.
    upstream: Mutex<HashMap<(String, Kind), Vec<serde_json::Value>>>,
}

impl Snapshot<'_> {
    /// The pools of one kind in `namespace` (upstream's objects or sandgate's
    /// templates), listed once a sweep, paced.
    async fn listed(
        &self,
        namespace: &str,
        kind: Kind,
    ) -> Result<Vec<serde_json::Value>, facts::FactsError> {
        let key = (namespace.to_string(), kind);
        let known = self
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(list) = known {
            return Ok(list);
        }
        self.scanner.pace("list").await;
        let list = if kind == Kind::SandboxTemplate {
            facts::list_templates(&self.scanner.client, namespace).await?
        } else {
            facts::list_upstream(&self.scanner.client, namespace, kind).await?
        };
        self.upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, list.clone());
        Ok(list)
    }

    fn mark_sandbox_namespace(&self, ns: &str) {
        self.sandbox_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ns.to_string());
    }
}

impl ClusterFacts for Snapshot<'_> {
    fn token_secrets<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> FactFuture<'a, BTreeSet<String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.scanner.client.clone(), namespace);
            let mut tokens = BTreeSet::new();
            for name in names {
                let key = (namespace.to_string(), name.clone());
                let known = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .copied();
                let is_token = match known {
                    Some(t) => t,
                    None => {
                        self.scanner.pace("get").await;
                        let t = facts::is_token_secret(&api, namespace, name).await?;
                        self.tokens
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, t);
                        t
                    }
                };
                if is_token {
                    tokens.insert(name.clone());
                }
            }
            Ok(tokens)
        })
    }

    fn sandbox_namespace<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, bool> {
        let hosts = self
            .sandbox_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(namespace);
        Box::pin(async move { Ok(hosts) })
    }

    fn network_policies<'a>(&'a self, namespace: &'a str) -> FactFuture<'a, Vec<NetworkPolicy>> {
        let list = self.netpols.get(namespace).cloned().unwrap_or_default();
        Box::pin(async move { Ok(list) })
    }

    fn upstream_object<'a>(
        &'a self,
        namespace: &'a str,
        kind: Kind,
        name: &'a str,
    ) -> FactFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            let all = self.upstream_objects(namespace, kind).await?;
            Ok(all
                .into_iter()
                .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)))
        })
    }

    fn upstream_objects<'a>(
        &'a self,
        namespace: &'a str,
        kind: Kind,
    ) -> FactFuture<'a, Vec<serde_json::Value>> {
        Box::pin(self.listed(namespace, kind))
    }

    fn volume_claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> FactFuture<'a, Option<serde_json::Value>> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.scanner.client.clone(), namespace);
        Box::pin(async move {
            self.scanner.pace("get").await;
            facts::read_as_value(
                &api,
                name,
                &format!("PersistentVolumeClaim {namespace}/{name}"),
            )
            .await
        })
    }

    fn persistent_volume<'a>(&'a self, name: &'a str) -> FactFuture<'a, Option<serde_json::Value>> {
        let api: Api<PersistentVolume> = Api::all(self.scanner.client.clone());
        Box::pin(async move {
            self.scanner.pace("get").await;
            facts::read_as_value(&api, name, &format!("PersistentVolume {name}")).await
        })
    }

    fn sandbox_templates<'a>(
        &'a self,
        namespace: &'a str,
    ) -> FactFuture<'a, Vec<serde_json::Value>> {
        Box::pin(self.listed(namespace, Kind::SandboxTemplate))
    }
}
