//! What every reconcile gets: the client, the settings, the caches, the memory that keeps
//! stale caches from causing duplicates, the event recorder and the metrics.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::caches::Caches;
use super::memory::Memory;
use super::{Metrics, Options};
use crate::config::Config;
use crate::contract;
use crate::netpol::KubeDefaultDeny;

pub struct Context {
    pub client: kube::Client,
    pub cfg: Config,
    pub opts: Options,
    pub caches: Caches,
    pub memory: Memory,
    pub default_deny: KubeDefaultDeny,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

impl Context {
    pub fn new(
        client: kube::Client,
        cfg: Config,
        opts: Options,
        caches: Caches,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: contract::FIELD_MANAGER.into(),
            instance: opts.instance.clone(),
        };
        Self {
            default_deny: KubeDefaultDeny::new(client.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            cfg,
            opts,
            caches,
            memory: Memory::default(),
            metrics,
        }
    }

    /// Publishes an event on `obj`; a failure is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
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
}
