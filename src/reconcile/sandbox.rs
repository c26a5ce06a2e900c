//! Sandbox controller: make sure its pod exists, mirror the pod into the status, and
//! retire a pool member whose pod ended.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::status::{pod_ended, pod_ip, pod_ready, pod_unschedulable};
use super::{Error, Result, build};
use crate::contract::label;
use crate::crd::{Sandbox, SandboxPhase, SandboxStatus};

/// Events drive this controller; the periodic pass only heals a missed one.
const RESYNC: Duration = Duration::from_secs(60);

pub async fn reconcile(sb: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action> {
    ctx.caches.synced().await;
    if sb.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sb
        .namespace()
        .ok_or_else(|| Error::Invalid("sandbox without namespace".into()))?;
    let name = sb.name_any();
    let claimed = sb.labels().contains_key(label::CLAIM);

    let pod = match ctx.caches.pod_of(&sb) {
        Some(p) => Some(p),
        None => {
            let template = ctx.caches.template(&ns, &sb.spec.template_name);
            match template.and_then(|t| build::sandbox_pod(&t, &sb, &ctx.cfg)) {
                Some(pod) => {
                    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => Some(Arc::new(p)),
                        // Created earlier; the cache has not caught up.
                        Err(kube::Error::Api(e)) if e.code == 409 => None,
                        Err(e) => return Err(e.into()),
                    }
                }
                // Template gone: a pool member goes with it (garbage collection); a
                // claimed sandbox keeps running without a pod to recreate.
                None => None,
            }
        }
    };

    if pod.as_deref().is_some_and(pod_ended) && !claimed {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        api.delete(&name, &DeleteParams::background()).await?;
        return Ok(Action::await_change());
    }

    let old = sb.status.clone().unwrap_or_default();
    let status = status(&sb, pod.as_deref(), &old);
    let key = format!("sandbox/{ns}/{name}");
    if status != old && !ctx.memory.written.same(&key, &status) {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.memory.written.record(key, &status);
    }
    Ok(Action::requeue(RESYNC))
}

/// The Sandbox's status from its pod.
fn status(sb: &Sandbox, pod: Option<&Pod>, old: &SandboxStatus) -> SandboxStatus {
    let claim = sb.labels().get(label::CLAIM).cloned();
    let ready = pod.is_some_and(pod_ready);
    let phase = if pod.is_some_and(|p| pod_ended(p) || pod_unschedulable(p)) {
        SandboxPhase::Failed
    } else if claim.is_some() && ready {
        SandboxPhase::Claimed
    } else if ready {
        SandboxPhase::Ready
    } else {
        SandboxPhase::Pending
    };
    SandboxStatus {
        phase: Some(phase),
        pod_name: pod.map(|p| p.name_any()),
        pod_ip: pod_ip(pod),
        claim,
        conditions: old.conditions.clone(),
    }
}
