//! The audit in the reconciler's leader: sweeps on start, on every interval, when the
//! policy set changes and when a namespace becomes enforced; writes one PolicyReport per
//! namespace (and a ClusterPolicyReport), Events on objects newly found failing, the
//! `sandgate_audit_*` metrics; and closes namespaces at once: a namespace labelled
//! enforce, or found hosting sandbox pods without one, gets its default-deny policy.
//! It never changes or deletes what it judges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};

use super::AuditError;
use super::metrics::{KindLabels, Metrics, ResultLabels, RunLabels};
use super::report;
use super::scan::{Scan, Scanner};
use super::view::{Judged, Verdict};
use crate::config::Config;
use crate::contract::{self, audit};
use crate::netpol::{self, DefaultDeny as _, KubeDefaultDeny};
use crate::policy::store::PolicyStore;
use crate::reconcile::Shutdown;

/// How the audit runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A full sweep at least this often.
    pub interval: Duration,
    /// Apiserver requests a second, at most.
    pub qps: u32,
    /// Results one report holds at most.
    pub max_results: usize,
    /// Whether the audit polls the policy directory itself (no webhook in the process
    /// does it).
    pub reload_policies: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: audit::DEFAULT_INTERVAL,
            qps: audit::DEFAULT_QPS,
            max_results: audit::DEFAULT_MAX_RESULTS,
            reload_policies: false,
        }
    }
}

/// The audit's part of the process: its settings, the policies it judges with (the
/// webhook's own store when both run), its metrics.
#[derive(Clone)]
pub struct Auditor {
    pub settings: Settings,
    pub policies: Arc<PolicyStore>,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Why a sweep is due.
#[derive(Debug)]
enum Trigger {
    Full(&'static str),
    Namespace(String),
}

/// Coalesces triggers arriving close together into one sweep.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often the policy set in force is compared with the one last swept with.
const POLICY_POLL: Duration = Duration::from_secs(1);
/// Events one sweep publishes at most (the reports hold everything).
const MAX_EVENTS_PER_SWEEP: usize = 50;

impl Auditor {
    /// Runs until `shutdown` resolves (the replica stops leading).
    pub async fn run(
        self,
        client: kube::Client,
        cfg: Config,
        instance: Option<String>,
        shutdown: Shutdown,
    ) {
        let scanner = Scanner::new(
            client.clone(),
            cfg.clone(),
            self.settings.qps,
            self.metrics.requests.clone(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let closer = tokio::spawn(close_enforced_namespaces(
            client.clone(),
            cfg.clone(),
            tx.clone(),
        ));
        let mut state = State::new(client.clone(), instance);
        state.load_reports(&scanner).await;
        let _ = tx.send(Trigger::Full("start"));
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings.interval,
            self.settings.interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(POLICY_POLL);
        let mut swept_with = self.policies.get();
        let mut shutdown = shutdown;
        loop {
            let mut full: Option<&'static str> = None;
            let mut namespaces = BTreeSet::new();
            let add =
                |t: Trigger, full: &mut Option<&'static str>, ns: &mut BTreeSet<String>| match t {
                    Trigger::Full(why) => *full = Some(why),
                    Trigger::Namespace(n) => {
                        ns.insert(n);
                    }
                };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => full = Some("interval"),
                _ = poll.tick() => {
                    if self.settings.reload_policies {
                        match self.policies.reload() {
                            Ok(Some(n)) => tracing::info!(policies = n, "audit: policies reloaded"),
                            Ok(None) => {}
                            Err(e) => tracing::error!(error = %e, "audit: new policies refused; the previous set stays"),
                        }
                    }
                    let now = self.policies.get();
                    if !Arc::ptr_eq(&now, &swept_with) {
                        full = Some("policies changed");
                    }
                }
                Some(t) = rx.recv() => add(t, &mut full, &mut namespaces),
            }
            if full.is_none() && namespaces.is_empty() {
                continue;
            }
            tokio::time::sleep(DEBOUNCE).await;
            while let Ok(t) = rx.try_recv() {
                add(t, &mut full, &mut namespaces);
            }
            swept_with = self.policies.get();
            let only = match full {
                Some(why) => {
                    tracing::info!(reason = why, "audit: sweeping the cluster");
                    None
                }
                None => {
                    tracing::info!(namespaces = ?namespaces, "audit: sweeping namespaces");
                    Some(namespaces)
                }
            };
            let started = Instant::now();
            let scope = if only.is_some() { "namespaces" } else { "full" };
            let outcome = match self.sweep(&scanner, &mut state, only.as_ref()).await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(error = %e, "audit sweep failed; retrying at the next trigger");
                    "error"
                }
            };
            let took = started.elapsed();
            self.metrics.duration.observe(took.as_secs_f64());
            self.metrics
                .runs
                .get_or_create(&RunLabels { scope, outcome })
                .inc();
            if outcome == "ok" && only.is_none() {
                self.metrics.last_run.set(unix_now() as f64);
            }
            tracing::info!(
                scope,
                outcome,
                seconds = took.as_secs_f64(),
                "audit sweep done"
            );
        }
        closer.abort();
    }

    async fn sweep(
        &self,
        scanner: &Scanner,
        state: &mut State,
        only: Option<&BTreeSet<String>>,
    ) -> Result<(), AuditError> {
        let mut scan = scanner.scan(self.policies.get(), only).await?;
        self.close(scanner, &mut scan).await;
        state
            .write_reports(scanner, &scan, self.settings.max_results, &self.metrics)
            .await;
        state.publish_events(scanner, &scan).await;
        state.count(&scan, &self.metrics);
        if scan.full {
            for (kind, n) in &scan.judged {
                self.metrics
                    .resources
                    .get_or_create(&KindLabels { kind })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
        Ok(())
    }

    /// Creates the default-deny where a sandbox namespace lacks one; a failure is
    /// reported on the namespace.
    async fn close(&self, scanner: &Scanner, scan: &mut Scan) {
        for ns in std::mem::take(&mut scan.missing_default_deny) {
            let api: Api<NetworkPolicy> = Api::namespaced(scanner.client().clone(), &ns);
            scanner.pace("create").await;
            match netpol::ensure_default_deny(&api, &ns).await {
                Ok(netpol::Ensured::Present) => {}
                Ok(done) => {
                    self.metrics.default_deny_created.inc();
                    tracing::info!(namespace = %ns, ?done, "audit: the namespace's default-deny NetworkPolicy was missing or not sandgate's");
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "audit: cannot create the default-deny NetworkPolicy");
                    scan.namespaces
                        .entry(ns.clone())
                        .or_default()
                        .push(Scan::default_deny_missing(&ns, &e.to_string()));
                }
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn report_resource(namespaced: bool) -> ApiResource {
    let (kind, plural) = if namespaced {
        (audit::REPORT_KIND, audit::REPORT_PLURAL)
    } else {
        (audit::CLUSTER_REPORT_KIND, audit::CLUSTER_REPORT_PLURAL)
    };
    ApiResource {
        group: audit::REPORT_GROUP.into(),
        version: audit::REPORT_VERSION.into(),
        api_version: format!("{}/{}", audit::REPORT_GROUP, audit::REPORT_VERSION),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What the audit remembers between sweeps.
struct State {
    client: kube::Client,
    recorder: Recorder,
    /// The reports written, by namespace (`None`: the cluster report), with their hash.
    reports: BTreeMap<Option<String>, String>,
    /// Whether the report CRDs were there at the last attempt.
    reports_installed: Option<bool>,
    /// Objects found failing (uid → what failed), so each is told once per change.
    failing: HashMap<String, String>,
    /// Result counts by namespace, for the metrics.
    counts: BTreeMap<Option<String>, BTreeMap<ResultLabels, i64>>,
}

impl State {
    fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: contract::FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            reports: BTreeMap::new(),
            reports_installed: None,
            failing: HashMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// Learns the reports an earlier leader wrote (so unchanged ones are not rewritten
    /// and stale ones are cleaned up).
    async fn load_reports(&mut self, scanner: &Scanner) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &report_resource(true));
        let lp = ListParams::default().labels(&contract::managed_selector());
        scanner.pace("list").await;
        match api.list(&lp).await {
            Ok(list) => {
                self.reports_installed = Some(true);
                for r in list.items {
                    if r.metadata.name.as_deref() != Some(audit::REPORT_NAME) {
                        continue;
                    }
                    let hash = r
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(audit::HASH_ANNOTATION))
                        .cloned()
                        .unwrap_or_default();
                    self.reports.insert(r.metadata.namespace.clone(), hash);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => self.reports_installed = Some(false),
            Err(e) => tracing::warn!(error = %e, "audit: cannot list existing PolicyReports"),
        }
    }

    async fn write_reports(
        &mut self,
        scanner: &Scanner,
        scan: &Scan,
        max: usize,
        metrics: &Metrics,
    ) {
        let now = unix_now();
        let mut wanted: Vec<(Option<String>, &[Judged])> = scan
            .namespaces
            .iter()
            .map(|(ns, j)| (Some(ns.clone()), j.as_slice()))
            .collect();
        if scan.full {
            wanted.push((None, scan.cluster.as_slice()));
        }
        let mut installed = true;
        for (ns, judged) in wanted {
            if judged.is_empty() {
                if self.reports.contains_key(&ns) {
                    self.delete_report(scanner, ns.as_deref()).await;
                }
                continue;
            }
            let r = report::build(ns.as_deref(), judged, max, now);
            if self.reports.get(&ns) == Some(&r.hash) {
                continue;
            }
            match self.apply_report(scanner, ns.as_deref(), &r.object).await {
                Ok(()) => {
                    if r.omitted > 0 {
                        tracing::info!(namespace = ?ns, omitted = r.omitted, "audit: report bounded; results left out are counted in its summary");
                    }
                    self.reports.insert(ns, r.hash);
                }
                Err(kube::Error::Api(s)) if s.code == 404 && !self.crds_present(scanner).await => {
                    installed = false;
                    break;
                }
                Err(e) => {
                    tracing::warn!(namespace = ?ns, error = %e, "audit: cannot write the PolicyReport")
                }
            }
        }
        if scan.full && installed {
            // Namespaces gone, or no longer holding anything judged.
            let stale: Vec<Option<String>> = self
                .reports
                .keys()
                .filter(|ns| {
                    ns.as_ref()
                        .is_some_and(|n| !scan.namespaces.contains_key(n))
                })
                .cloned()
                .collect();
            for ns in stale {
                self.delete_report(scanner, ns.as_deref()).await;
            }
        }
        if self.reports_installed != Some(installed) {
            if installed {
                tracing::info!("audit: writing PolicyReports (wgpolicyk8s.io/v1alpha2)");
            } else {
                tracing::warn!(
                    "audit: the wgpolicyk8s.io PolicyReport CRDs are not installed (deploy/policy-reports.yaml); results go to metrics and events only"
                );
            }
        }
        self.reports_installed = Some(installed);
        metrics.reports_enabled.set(i64::from(installed));
    }

    async fn apply_report(
        &self,
        scanner: &Scanner,
        ns: Option<&str>,
        object: &serde_json::Value,
    ) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &report_resource(true)),
            None => Api::all_with(self.client.clone(), &report_resource(false)),
        };
        scanner.pace("apply").await;
        let params = PatchParams::apply(contract::FIELD_MANAGER).force();
        api.patch(audit::REPORT_NAME, &params, &Patch::Apply(object))
            .await
            .map(|_| ())
    }

    async fn delete_report(&mut self, scanner: &Scanner, ns: Option<&str>) {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &report_resource(true)),
            None => Api::all_with(self.client.clone(), &report_resource(false)),
        };
        scanner.pace("delete").await;
        match api
            .delete(audit::REPORT_NAME, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(namespace = ?ns, error = %e, "audit: cannot delete a stale PolicyReport");
                return;
            }
        }
        self.reports.remove(&ns.map(str::to_string));
    }

    /// Whether the PolicyReport CRD is served (a 404 on a write may only mean the
    /// namespace went away).
    async fn crds_present(&self, scanner: &Scanner) -> bool {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &report_resource(true));
        scanner.pace("list").await;
        !matches!(api.list(&ListParams::default().limit(1)).await, Err(kube::Error::Api(s)) if s.code == 404)
    }

    /// A Warning event on each object newly found failing (or failing differently).
    async fn publish_events(&mut self, scanner: &Scanner, scan: &Scan) {
        let mut seen = BTreeSet::new();
        let mut published = 0usize;
        for j in scan.namespaces.values().flatten().chain(&scan.cluster) {
            if j.resource.uid.is_empty() {
                continue;
            }
            seen.insert(j.resource.uid.clone());
            let failed: Vec<String> = j
                .outcomes
                .iter()
                .filter(|o| o.result == Verdict::Fail)
                .map(|o| match &o.field {
                    Some(f) => format!("{f}: {} [{}]", o.message, o.rule),
                    None => format!("policy {}: {}", o.policy, o.message),
                })
                .collect();
            if failed.is_empty() {
                self.failing.remove(&j.resource.uid);
                continue;
            }
            let note = format!("sandgate audit: {}", failed.join("; "));
            if self.failing.get(&j.resource.uid) == Some(&note) || published >= MAX_EVENTS_PER_SWEEP
            {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some(j.resource.api_version.clone()),
                kind: Some(j.resource.kind.clone()),
                name: Some(j.resource.name.clone()),
                namespace: j.resource.namespace.clone(),
                uid: Some(j.resource.uid.clone()),
                ..Default::default()
            };
            let ev = Event {
                type_: EventType::Warning,
                reason: audit::EVENT_REASON.into(),
                note: Some(note.chars().take(1024).collect()),
                action: "Audit".into(),
                secondary: None,
            };
            scanner.pace("event").await;
            match self.recorder.publish(&ev, &reference).await {
                Ok(()) => {
                    published += 1;
                    self.failing.insert(j.resource.uid.clone(), note);
                }
                Err(e) => tracing::warn!(error = %e, "audit: cannot publish an event"),
            }
        }
        if scan.full {
            self.failing.retain(|uid, _| seen.contains(uid));
        }
    }

    /// Recomputes `sandgate_audit_results` with this sweep's namespaces replaced.
    fn count(&mut self, scan: &Scan, metrics: &Metrics) {
        if scan.full {
            self.counts.clear();
        }
        let mut tally = |key: Option<String>, judged: &[Judged]| {
            let mut m: BTreeMap<ResultLabels, i64> = BTreeMap::new();
            for j in judged {
                for o in &j.outcomes {
                    let l = ResultLabels {
                        kind: j.resource.kind.clone(),
                        policy: o.policy.clone(),
                        rule: o.rule.clone(),
                        result: o.result.as_str(),
                    };
                    *m.entry(l).or_default() += 1;
                }
            }
            self.counts.insert(key, m);
        };
        for (ns, judged) in &scan.namespaces {
            tally(Some(ns.clone()), judged);
        }
        if scan.full {
            tally(None, &scan.cluster);
        }
        let mut total: BTreeMap<&ResultLabels, i64> = BTreeMap::new();
        for (l, n) in self.counts.values().flatten() {
            *total.entry(l).or_default() += n;
        }
        metrics.results.clear();
        for (l, n) in total {
            metrics.results.get_or_create(l).set(n);
        }
    }
}

/// Watches namespaces; one that becomes enforced gets its default-deny at once and is
/// swept. (Those enforced when the leader starts are covered by the first sweep.)
async fn close_enforced_namespaces(
    client: kube::Client,
    cfg: Config,
    tx: tokio::sync::mpsc::UnboundedSender<Trigger>,
) {
    let default_deny = KubeDefaultDeny::new(client.clone());
    let api: Api<kube::core::PartialObjectMeta<Namespace>> = Api::all(client);
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut enforced: BTreeSet<String> = BTreeSet::new();
    let mut listing: Option<BTreeSet<String>> = None;
    let mut first_list = true;
    while let Some(ev) = events.next().await {
        let mut newly = Vec::new();
        match ev {
            Ok(watcher::Event::Init) => listing = Some(BTreeSet::new()),
            Ok(watcher::Event::InitApply(ns)) => {
                if let (Some(l), Some(name)) = (listing.as_mut(), ns.metadata.name.clone())
                    && contract::is_enforcing(ns.metadata.labels.as_ref())
                {
                    l.insert(name);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let now = listing.take().unwrap_or_default();
                if !first_list {
                    newly.extend(now.difference(&enforced).cloned());
                }
                first_list = false;
                enforced = now;
            }
            Ok(watcher::Event::Apply(ns)) => {
                let Some(name) = ns.metadata.name.clone() else {
                    continue;
                };
                if contract::is_enforcing(ns.metadata.labels.as_ref()) {
                    if enforced.insert(name.clone()) {
                        newly.push(name);
                    }
                } else {
                    enforced.remove(&name);
                }
            }
            Ok(watcher::Event::Delete(ns)) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    enforced.remove(name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "audit: namespace watch failed; retrying"),
        }
        for ns in newly {
            if cfg.exclude_namespaces.contains(&ns) {
                continue;
            }
            match default_deny.ensure(&ns).await {
                Ok(()) => {
                    tracing::info!(namespace = %ns, "namespace enforced: default-deny in place")
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "namespace enforced, but its default-deny could not be ensured; the sweep retries")
                }
            }
            if tx.send(Trigger::Namespace(ns)).is_err() {
                return;
            }
        }
    }
}
