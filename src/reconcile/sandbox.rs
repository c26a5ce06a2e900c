//! Sandbox reconcile: make sure its pod exists, mirror the pod into the status, and
//! retire a pool member whose pod ended.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::{Ctx, Error, Result, build, pod_ready, pod_unschedulable};
use crate::crd::{Sandbox, SandboxPhase, SandboxStatus};

pub async fn reconcile(sb: Arc<Sandbox>, ctx: Arc<Ctx>) -> Result<Action> {
    ctx.caches_ready().await;
    if sb.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = sb
        .namespace()
        .ok_or_else(|| Error::Invalid("sandbox without namespace".into()))?;
    let name = sb.name_any();
    let claim = sb.labels().get(build::CLAIM_LABEL).cloned();

    let pod = match ctx.pod_of(&sb) {
        Some(p) => Some(p),
        None => {
            let template = ctx
                .templates
                .get(&ObjectRef::new(&sb.spec.template_name).within(&ns));
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

    let ended = pod
        .as_deref()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Failed" || p == "Succeeded");
    if ended && claim.is_none() {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        api.delete(&name, &DeleteParams::background()).await?;
        return Ok(Action::await_change());
    }

    let ready = pod.as_deref().is_some_and(pod_ready);
    let phase = if ended || pod.as_deref().is_some_and(pod_unschedulable) {
        SandboxPhase::Failed
    } else if claim.is_some() && ready {
        SandboxPhase::Claimed
    } else if ready {
        SandboxPhase::Ready
    } else {
        SandboxPhase::Pending
    };
    let old = sb.status.clone().unwrap_or_default();
    let status = SandboxStatus {
        phase: Some(phase),
        pod_name: pod.as_ref().map(|p| p.name_any()),
        pod_ip: pod
            .as_deref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.pod_ip.clone()),
        claim,
        conditions: old.conditions.clone(),
    };
    if status != old {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // Events drive this; the periodic pass only heals a missed one.
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}
