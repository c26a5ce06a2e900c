//! The warm-pool reconciler (kube-runtime): SandboxTemplates keep `poolConfig.size`
//! unclaimed Sandboxes ready, each owning one pod built by the webhook's own mutation
//! code; SandboxClaims bind a ready Sandbox with an optimistic-concurrency write, or get
//! a cold one at once when the pool is empty.
//!
//! Ownership carries the lifecycle: a pool Sandbox is owned by its template; binding
//! moves the controller reference to the claim, so deleting the claim lets the garbage
//! collector remove the Sandbox and its pod, and the template refills.

pub mod build;
mod claim;
pub mod lease;
pub mod plan;
mod sandbox;
mod template;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::crd::{Sandbox, SandboxClaim, SandboxTemplate};
use crate::labels;
use crate::netpol::KubeDefaultDeny;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    NetworkPolicy(#[from] crate::netpol::NetpolError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tunables of the reconciler.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a scheduled pod may take to become Ready before its sandbox is replaced.
    pub ready_grace: Duration,
    /// Name used in events (the pod name in-cluster).
    pub instance: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready_grace: Duration::from_secs(180),
            instance: None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub template: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaunchLabels {
    pub launch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// Reconciler metrics, registered into the process registry.
#[derive(Clone)]
pub struct Metrics {
    pub pool: Family<PoolLabels, Gauge>,
    pub bind_latency: Family<LaunchLabels, Histogram>,
    pub errors: Family<ControllerLabels, Counter>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_sandboxes",
            "Sandboxes per template by state (ready, pending, claimed)",
            pool.clone(),
        );
        let bind_latency = Family::<LaunchLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "claim_bind_seconds",
            "Claim created (or first seen) to sandbox usable, by launch type",
            bind_latency.clone(),
        );
        let errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile failures by controller",
            errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the reconciler lease",
            leader.clone(),
        );
        Self {
            pool,
            bind_latency,
            errors,
            leader,
        }
    }
}

/// Everything a reconcile reads: caches of every watched kind, and the memory that
/// keeps a stale cache from causing duplicates.
pub struct Ctx {
    pub client: Client,
    pub cfg: Config,
    pub opts: Options,
    pub templates: Store<SandboxTemplate>,
    pub sandboxes: Store<Sandbox>,
    pub pods: Store<Pod>,
    pub claims: Store<SandboxClaim>,
    pub default_deny: KubeDefaultDeny,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Pool creations made but not yet seen in the cache, per "ns/template".
    pub in_flight: Mutex<HashMap<String, Vec<(String, Instant)>>>,
    /// Sandboxes bound moments ago ("ns/name"), skipped while the cache catches up.
    pub taken: Mutex<HashMap<String, Instant>>,
    /// When each claim (by uid) was first seen, for millisecond startup times.
    pub first_seen: Mutex<HashMap<String, Instant>>,
    /// Turns true once every cache has its initial list.
    ready: tokio::sync::watch::Receiver<bool>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Ctx {
    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Waits until every cache holds its initial list. (A Store's own readiness future
    /// wakes only its latest waiter, so reconciles wait on this broadcast instead.)
    async fn caches_ready(&self) {
        let mut rx = self.ready.clone();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    fn pod_of(&self, sb: &Sandbox) -> Option<Arc<Pod>> {
        let ns = sb.namespace()?;
        self.pods.get(&ObjectRef::new(&sb.name_any()).within(&ns))
    }
}

/// A condition with the current time as its transition time.
pub fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        message,
        observed_generation: None,
        reason: reason.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        type_: type_.to_string(),
    }
}

/// Keeps the transition time of a condition whose status did not change.
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = o.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Pod readiness as the kubelet (or kwok) reports it.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The scheduler reported it cannot place the pod.
pub fn pod_unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
}

/// The namespace is being deleted: nothing more can be created there, and retrying
/// would only spin until it is gone.
fn namespace_terminating(err: &Error) -> bool {
    matches!(err, Error::Kube(kube::Error::Api(s)) if s.code == 403 && s.message.contains("is being terminated"))
}

/// Retry delay after `failures` consecutive failures of one object: 250 ms doubling up
/// to a minute, so an unreachable or refusing apiserver is not hammered.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << failures.min(8)))
        .min(Duration::from_secs(60))
}

fn failure_key<K: Resource<DynamicType = ()>>(controller: &str, obj: &K) -> String {
    format!(
        "{controller}/{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Ctx>) -> Action {
    move |obj, err, ctx| {
        if namespace_terminating(err) {
            return Action::await_change();
        }
        ctx.metrics
            .errors
            .get_or_create(&ControllerLabels { controller })
            .inc();
        let failures = {
            let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = f.entry(failure_key(controller, obj.as_ref())).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay = backoff(failures - 1);
        tracing::warn!(controller, error = %err, retry_in = ?delay, "reconcile failed; retrying");
        Action::requeue(delay)
    }
}

/// Runs a reconcile and forgets the object's failure count when it succeeds.
async fn tracked<K, F, Fut>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: Arc<Ctx>,
    f: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: std::future::Future<Output = Result<Action>>,
{
    let key = failure_key(controller, obj.as_ref());
    let result = f(obj, ctx.clone()).await;
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
    result
}

/// Counts caches that have their initial list; tells the reconciles when all have.
#[derive(Clone)]
struct Readiness {
    left: Arc<std::sync::atomic::AtomicUsize>,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Readiness {
    fn new(caches: usize, tx: tokio::sync::watch::Sender<bool>) -> Self {
        Self {
            left: Arc::new(std::sync::atomic::AtomicUsize::new(caches)),
            tx: Arc::new(tx),
        }
    }

    fn one_ready(&self) {
        use std::sync::atomic::Ordering;
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::debug!("reconciler caches ready");
            let _ = self.tx.send(true);
        }
    }
}

/// A reflector (store + stream of touched objects) that reports its first complete list.
fn reflect<K>(
    api: Api<K>,
    wc: watcher::Config,
    readiness: Readiness,
) -> (
    Store<K>,
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let mut reported = false;
    let stream = watcher(api, wc)
        .default_backoff()
        .reflect(writer)
        .inspect(move |ev| {
            if !reported && matches!(ev, Ok(watcher::Event::InitDone)) {
                reported = true;
                readiness.one_ready();
            }
        })
        .touched_objects();
    (store, stream)
}

/// A clonable "stop now" signal for the controllers.
pub type Shutdown = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// A [`Shutdown`] that resolves when the watch value turns true.
pub fn shutdown_on(mut rx: tokio::sync::watch::Receiver<bool>) -> Shutdown {
    use futures::FutureExt;
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
    .boxed()
    .shared()
}

/// Runs the three controllers until `shutdown` resolves.
pub async fn run(client: Client, cfg: Config, opts: Options, metrics: Metrics, shutdown: Shutdown) {
    let wc = watcher::Config::default();
    let templates_api: Api<SandboxTemplate> = Api::all(client.clone());
    let sandboxes_api: Api<Sandbox> = Api::all(client.clone());
    let claims_api: Api<SandboxClaim> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::all(client.clone());
    let pod_wc = watcher::Config::default().labels(labels::TEMPLATE);

    // Each cache is filled by a reflector of ours, so readiness can be observed on the
    // stream. (A Store's own readiness future wakes only one waiter, and each
    // Controller already waits on its store.)
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let readiness = Readiness::new(4, ready_tx);
    let (templates, template_stream) =
        reflect(templates_api.clone(), wc.clone(), readiness.clone());
    let (sandboxes, sandbox_stream) = reflect(sandboxes_api.clone(), wc.clone(), readiness.clone());
    let (claims, claim_stream) = reflect(claims_api.clone(), wc.clone(), readiness.clone());
    let (pods, pod_stream) = reflect(pods_api.clone(), pod_wc.clone(), readiness);

    let template_ctl = Controller::for_stream(template_stream, templates.clone());
    let sandbox_ctl = Controller::for_stream(sandbox_stream, sandboxes.clone());
    let claim_ctl = Controller::for_stream(claim_stream, claims.clone());

    let reporter = Reporter {
        controller: "sandgate".into(),
        instance: opts.instance.clone(),
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cfg,
        opts,
        templates,
        sandboxes,
        pods,
        claims,
        default_deny: KubeDefaultDeny::new(client.clone()),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        in_flight: Mutex::new(HashMap::new()),
        taken: Mutex::new(HashMap::new()),
        first_seen: Mutex::new(HashMap::new()),
        ready,
        failures: Mutex::new(HashMap::new()),
    });

    // Templates: triggered by their pool members (by label, so a member moving to a
    // claim still refills its template) and their NetworkPolicy.
    let templates = template_ctl
        .watches(sandboxes_api.clone(), wc.clone(), |sb: Sandbox| {
            let ns = sb.namespace()?;
            let t = sb.labels().get(labels::TEMPLATE)?.clone();
            Some(ObjectRef::new(&t).within(&ns))
        })
        .owns(
            Api::<NetworkPolicy>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=sandgate"),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| tracked("template", o, c, template::reconcile),
            error_policy("template"),
            ctx.clone(),
        )
        .for_each(|_| std::future::ready(()));

    // Pods trigger their sandbox from the same stream that fills the pod cache, so a
    // reconcile never reads a pod older than the event that woke it.
    let sandboxes = sandbox_ctl
        .owns_stream(pod_stream)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| tracked("sandbox", o, c, sandbox::reconcile),
            error_policy("sandbox"),
            ctx.clone(),
        )
        .for_each(|_| std::future::ready(()));

    let claims_store = ctx.claims.clone();
    let claims = claim_ctl
        .watches(sandboxes_api, wc.clone(), |sb: Sandbox| {
            let ns = sb.namespace()?;
            let c = sb.labels().get(build::CLAIM_LABEL)?.clone();
            Some(ObjectRef::new(&c).within(&ns))
        })
        .watches(templates_api, wc, move |t: SandboxTemplate| {
            // A template appearing (or a pool member becoming ready) wakes the claims
            // still waiting for it.
            let ns = t.namespace().unwrap_or_default();
            let name = t.name_any();
            claims_store
                .state()
                .into_iter()
                .filter(|c| {
                    c.namespace().as_deref() == Some(ns.as_str()) && c.spec.template_name == name
                })
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, c| tracked("claim", o, c, claim::reconcile),
            error_policy("claim"),
            ctx.clone(),
        )
        .for_each(|_| std::future::ready(()));

    tokio::select! {
        _ = async { tokio::join!(templates, sandboxes, claims) } => {}
        _ = shutdown => {}
    }
}

/// How leadership is held.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("lost the reconciler lease {0}; exiting so a fresh replica can take over")]
    LostLease(String),
}

/// Runs the controllers while this replica holds the lease (or always, without an
/// election), until `stop` turns true. Losing the lease stops the controllers first and
/// returns an error: the process exits and restarts as a standby.
pub async fn run_elected(
    client: Client,
    cfg: Config,
    opts: Options,
    metrics: Metrics,
    election: Option<Election>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(el) = election else {
        metrics.leader.set(1);
        run(client, cfg, opts, metrics, shutdown_on(stop)).await;
        return Ok(());
    };
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &el.namespace);
    let elector = lease::Elector::new(api, &el.lease, &el.identity, el.duration);
    let renew = (el.duration / 3).max(Duration::from_millis(200));
    // Standby until the lease is ours.
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "lease: cannot reach the apiserver"),
        }
        tokio::select! {
            _ = tokio::time::sleep(renew) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(identity = %el.identity, lease = %el.lease, "leader: reconciling");
    metrics.leader.set(1);
    let (child_tx, child_rx) = tokio::sync::watch::channel(false);
    let controllers = tokio::spawn(run(
        client,
        cfg,
        opts,
        metrics.clone(),
        shutdown_on(child_rx),
    ));
    let mut last_renewed = Instant::now();
    let outcome = loop {
        tokio::select! {
            _ = tokio::time::sleep(renew) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break Ok(());
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => break Err(RunError::LostLease(el.lease.clone())),
            Err(e) => {
                tracing::warn!(error = %e, "lease: renewal failed");
                // Stop acting before another replica may take over.
                if last_renewed.elapsed() + renew >= el.duration {
                    break Err(RunError::LostLease(el.lease.clone()));
                }
            }
        }
    };
    let _ = child_tx.send(true);
    let _ = controllers.await;
    metrics.leader.set(0);
    if outcome.is_ok() {
        elector.release().await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(8), Duration::from_secs(60));
        assert_eq!(backoff(100), Duration::from_secs(60));
    }
}
