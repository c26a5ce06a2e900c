//! The reconciler's view of the cluster: one reflector cache per watched kind, a signal
//! once every cache holds its initial list, and the lookups the controllers share.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Resource, ResourceExt as _};

use crate::contract::label;
use crate::crd::{Sandbox, SandboxClaim, SandboxTemplate};

/// The caches every reconcile reads.
#[derive(Clone)]
pub struct Caches {
    pub templates: Store<SandboxTemplate>,
    pub sandboxes: Store<Sandbox>,
    pub pods: Store<Pod>,
    pub claims: Store<SandboxClaim>,
    /// The NetworkPolicies sandgate wrote (by its managed-by label).
    pub policies: Store<NetworkPolicy>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Caches filled by other means (tests write them directly), already synced.
    pub fn new(
        templates: Store<SandboxTemplate>,
        sandboxes: Store<Sandbox>,
        pods: Store<Pod>,
        claims: Store<SandboxClaim>,
        policies: Store<NetworkPolicy>,
        synced: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            templates,
            sandboxes,
            pods,
            claims,
            policies,
            synced,
        }
    }

    /// One of sandgate's NetworkPolicies, as last seen.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<Arc<NetworkPolicy>> {
        self.policies.get(&ObjectRef::new(name).within(namespace))
    }

    /// A Sandbox by name.
    pub fn sandbox(&self, namespace: &str, name: &str) -> Option<Arc<Sandbox>> {
        self.sandboxes.get(&ObjectRef::new(name).within(namespace))
    }

    /// Waits until every cache holds its initial list. (A Store's own readiness future
    /// wakes only its latest waiter, so reconciles wait on this broadcast instead.)
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// The pod of a sandbox (named like it).
    pub fn pod_of(&self, sb: &Sandbox) -> Option<Arc<Pod>> {
        let ns = sb.namespace()?;
        self.pods.get(&ObjectRef::new(&sb.name_any()).within(&ns))
    }

    pub fn template(&self, namespace: &str, name: &str) -> Option<Arc<SandboxTemplate>> {
        self.templates.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every Sandbox of a template (claimed or not).
    pub fn members(&self, namespace: &str, template: &str) -> Vec<Arc<Sandbox>> {
        self.sandboxes_labelled(namespace, label::TEMPLATE, template)
    }

    /// The Sandboxes the cache shows bound to a claim.
    pub fn claimed_by(&self, namespace: &str, claim: &str) -> Vec<Arc<Sandbox>> {
        self.sandboxes_labelled(namespace, label::CLAIM, claim)
    }

    fn sandboxes_labelled(&self, namespace: &str, key: &str, value: &str) -> Vec<Arc<Sandbox>> {
        self.sandboxes
            .state()
            .into_iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(namespace)
                    && s.labels().get(key).map(String::as_str) == Some(value)
            })
            .collect()
    }
}

/// Counts the reflectors that have their initial list and says when all have. Each
/// reflector registers itself as it is made, so the count cannot drift from them.
#[derive(Clone)]
pub struct CacheSync {
    pending: Arc<Mutex<usize>>,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
    /// Fault injection: how late every event reaches the caches.
    lag: Option<Duration>,
}

impl CacheSync {
    pub fn new(lag: Option<Duration>) -> (Self, tokio::sync::watch::Receiver<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (
            Self {
                pending: Arc::new(Mutex::new(0)),
                tx: Arc::new(tx),
                lag,
            },
            rx,
        )
    }

    fn register(&self) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn one_synced(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            tracing::debug!("reconciler caches ready");
            let _ = self.tx.send(true);
        }
    }
}

/// A reflector (store + stream of touched objects) that reports its first complete list
/// to `sync`. Make every reflector before polling any of their streams.
pub fn reflect<K>(
    api: Api<K>,
    wc: watcher::Config,
    sync: &CacheSync,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
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
    sync.register();
    let lag = sync.lag;
    let sync = sync.clone();
    let mut reported = false;
    let events = watcher(api, wc).default_backoff();
    let events = match lag {
        None => events.boxed(),
        Some(lag) => lagged(events, lag).boxed(),
    };
    let stream = events
        .reflect(writer)
        .inspect(move |ev| {
            if !reported && matches!(ev, Ok(watcher::Event::InitDone)) {
                reported = true;
                sync.one_synced();
            }
        })
        .touched_objects();
    (store, stream)
}

/// How many events a subscriber of a shared reflector may fall behind before the
/// reflector waits for it.
const SHARED_BUFFER: usize = 1024;

/// One reflector whose applied objects `subscribers` controllers consume (one watch on
/// the apiserver instead of one per consumer). The returned future drives the watch
/// and must be polled for anything to arrive.
pub fn reflect_shared<K>(
    api: Api<K>,
    wc: watcher::Config,
    sync: &CacheSync,
    subscribers: usize,
) -> (
    Store<K>,
    Vec<reflector::ReflectHandle<K>>,
    futures::future::BoxFuture<'static, ()>,
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
    let (store, writer) = reflector::store_shared(SHARED_BUFFER);
    let handles = (0..subscribers)
        .filter_map(|_| writer.subscribe())
        .collect();
    sync.register();
    let lag = sync.lag;
    let sync = sync.clone();
    let mut reported = false;
    let events = watcher(api, wc).default_backoff();
    let events = match lag {
        None => events.boxed(),
        Some(lag) => lagged(events, lag).boxed(),
    };
    let drive = events.reflect_shared(writer).for_each(move |ev| {
        if !reported && matches!(ev, Ok(watcher::Event::InitDone)) {
            reported = true;
            sync.one_synced();
        }
        std::future::ready(())
    });
    let drive = futures::FutureExt::boxed(drive);
    (store, handles, drive)
}

/// The same events, each delivered `lag` after it arrived, in order (a forwarding task
/// timestamps them, so the delay does not accumulate).
fn lagged<S, T>(events: S, lag: Duration) -> impl futures::Stream<Item = T> + Send + 'static
where
    S: futures::Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            if tx.send((tokio::time::Instant::now() + lag, ev)).is_err() {
                break;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let (due, ev) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((ev, rx))
    })
}
