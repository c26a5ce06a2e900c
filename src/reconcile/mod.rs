//! The warm-pool reconciler (kube-runtime): SandboxTemplates keep `poolConfig.size`
//! unclaimed Sandboxes ready, each owning one pod built by the admission pipeline's own
//! mutation; SandboxClaims bind a ready Sandbox with an optimistic-concurrency write, or
//! get a cold one at once when the pool is empty.
//!
//! Ownership carries the lifecycle: a pool Sandbox is owned by its template; binding
//! moves the controller reference to the claim, so deleting the claim lets the garbage
//! collector remove the Sandbox and its pod, and the template refills.
//!
//! Layout: pure planning in `plan` (pools), `bind` (claims) and `build` (objects);
//! the controllers `template`, `sandbox` and `claim` execute plans; `caches`, `memory`
//! and `context` are what a reconcile reads; `lease` elects the one replica that acts.

pub mod bind;
pub mod build;
mod caches;
mod claim;
mod context;
pub mod lease;
mod memory;
pub mod metrics;
pub mod plan;
mod sandbox;
pub mod status;
mod template;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

pub use caches::Caches;
pub use context::Context;
pub use metrics::Metrics;

use crate::config::Config;
use crate::contract::{self, label};
use crate::crd::{Sandbox, SandboxClaim, SandboxTemplate};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    NetworkPolicy(#[from] crate::netpol::NetpolError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The namespace is being deleted: nothing more can be created there, and retrying
    /// would only spin until it is gone.
    fn namespace_terminating(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 403 && s.message.contains("is being terminated"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tunables of the reconciler.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a scheduled pod may take to become Ready before its sandbox is replaced.
    pub ready_grace: Duration,
    /// Name used in events (the pod name in-cluster).
    pub instance: Option<String>,
    /// Fault injection: every watch event reaches the caches this late.
    pub cache_lag: Option<Duration>,
    /// The audit, run by the leader beside the controllers.
    pub audit: Option<crate::audit::Auditor>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready_grace: contract::DEFAULT_READY_GRACE,
            instance: None,
            cache_lag: None,
            audit: None,
        }
    }
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
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, err, ctx| {
        if err.namespace_terminating() {
            return Action::await_change();
        }
        ctx.metrics
            .errors
            .get_or_create(&metrics::ControllerLabels { controller })
            .inc();
        let failures = ctx
            .memory
            .failures
            .fail(failure_key(controller, obj.as_ref()));
        let delay = backoff(failures.saturating_sub(1));
        tracing::warn!(controller, error = %err, retry_in = ?delay, "reconcile failed; retrying");
        Action::requeue(delay)
    }
}

/// Runs a reconcile and forgets the object's failure count when it succeeds.
async fn tracked<K, F, Fut>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    f: F,
) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action>>,
{
    let key = failure_key(controller, obj.as_ref());
    let result = f(obj, ctx.clone()).await;
    if result.is_ok() {
        ctx.memory.failures.succeed(&key);
    }
    result
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
    let pod_wc = watcher::Config::default().labels(label::TEMPLATE);

    // Each cache is filled by a reflector of ours, so readiness can be observed on the
    // stream. (A Store's own readiness future wakes only one waiter, and each
    // Controller already waits on its store.)
    let (sync, synced) = caches::CacheSync::new(opts.cache_lag);
    if let Some(lag) = opts.cache_lag {
        tracing::warn!(?lag, "fault injection: the reconciler's caches lag");
    }
    // Templates and sandboxes each feed several controllers: one watch each, shared.
    let (templates, mut template_streams, drive_templates) =
        caches::reflect_shared(templates_api, wc.clone(), &sync, 2);
    let (sandboxes, mut sandbox_streams, drive_sandboxes) =
        caches::reflect_shared(sandboxes_api, wc.clone(), &sync, 3);
    let (claims, claim_stream) = caches::reflect(claims_api.clone(), wc.clone(), &sync);
    let (pods, pod_stream) = caches::reflect(pods_api, pod_wc, &sync);
    let policies_wc = watcher::Config::default().labels(&contract::managed_selector());
    let (policies, policy_stream) = caches::reflect(
        Api::<NetworkPolicy>::all(client.clone()),
        policies_wc,
        &sync,
    );

    let (Some(templates_for_claims), Some(template_stream)) =
        (template_streams.pop(), template_streams.pop())
    else {
        tracing::error!("shared template reflector gave no subscription");
        return;
    };
    let (Some(sandboxes_for_claims), Some(sandboxes_for_templates), Some(sandbox_stream)) = (
        sandbox_streams.pop(),
        sandbox_streams.pop(),
        sandbox_streams.pop(),
    ) else {
        tracing::error!("shared sandbox reflector gave no subscription");
        return;
    };
    let template_ctl = Controller::for_shared_stream(template_stream, templates.clone());
    let sandbox_ctl = Controller::for_shared_stream(sandbox_stream, sandboxes.clone());
    let claim_ctl = Controller::for_stream(claim_stream, claims.clone());

    let caches = Caches::new(templates, sandboxes, pods, claims, policies, synced);
    let audit = opts.audit.clone().map(|a| {
        a.run(
            client.clone(),
            cfg.clone(),
            opts.instance.clone(),
            shutdown.clone(),
        )
    });
    let audit = async move {
        match audit {
            Some(a) => a.await,
            None => std::future::pending().await,
        }
    };
    let ctx = Arc::new(Context::new(client.clone(), cfg, opts, caches, metrics));

    // Templates: triggered by their pool members (by label, so a member moving to a
    // claim still refills its template) and by their NetworkPolicy, from the stream that
    // fills the policy cache (so a reconcile compares against what woke it).
    let templates = template_ctl
        .watches_shared_stream(sandboxes_for_templates, |sb: Arc<Sandbox>| {
            let ns = sb.namespace()?;
            let t = sb.labels().get(label::TEMPLATE)?.clone();
            Some(ObjectRef::new(&t).within(&ns))
        })
        .owns_stream(policy_stream)
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

    let claims_store = ctx.caches.claims.clone();
    let claims = claim_ctl
        .watches_shared_stream(sandboxes_for_claims, |sb: Arc<Sandbox>| {
            let ns = sb.namespace()?;
            let c = sb.labels().get(label::CLAIM)?.clone();
            Some(ObjectRef::new(&c).within(&ns))
        })
        .watches_shared_stream(templates_for_claims, move |t: Arc<SandboxTemplate>| {
            // A template appearing wakes the claims waiting for it. (Only those: every
            // bind changes the template's status, and waking every unbound claim of
            // the template each time would be a storm under load.)
            let ns = t.namespace().unwrap_or_default();
            let name = t.name_any();
            claims_store
                .state()
                .into_iter()
                .filter(|c| {
                    c.namespace().as_deref() == Some(ns.as_str()) && c.spec.template_name == name
                })
                .filter(|c| bind::waits_for_template(c))
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
        _ = async { tokio::join!(templates, sandboxes, claims, audit) } => {}
        _ = drive_templates => {}
        _ = drive_sandboxes => {}
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
