//! Sandbox controller: make sure its pod exists, mirror the pod into the status, and
//! retire a pool member whose pod ended.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::EventType;

use super::status::{condition, merge_conditions, pod_ended, pod_ip, pod_ready, pod_unschedulable};
use super::{Error, Result, build};
use crate::contract::{self, label};
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

    // The admission chain's refusal of the pod, when it refused it.
    let mut denied = None;
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
                        // A webhook or admission policy said no: say so where the
                        // user looks (the Sandbox and, through it, the claim) and
                        // retry at a calm pace (a policy may change).
                        Err(kube::Error::Api(e)) if is_admission_denial(&e) => {
                            denied = Some(e.message);
                            None
                        }
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
    let mut status = status(&sb, pod.as_deref(), &old);
    status.conditions = admission_conditions(&old.conditions, denied.as_deref(), pod.is_some());
    if let Some(message) = denied.as_deref()
        && pod_denial(&old.conditions) != Some(message)
    {
        ctx.event(
            &*sb,
            EventType::Warning,
            contract::POD_DENIED_REASON,
            format!("its pod was refused at admission: {message}"),
        )
        .await;
    }
    let key = format!("sandbox/{ns}/{name}");
    if status != old && !ctx.memory.written.same(&key, &status) {
        let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
        let mut patch = serde_json::json!({"status": status});
        // An emptied list must be written as one: the status omits empty lists, and a
        // merge patch leaves omitted fields as they were.
        patch["status"]["conditions"] = serde_json::json!(status.conditions);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.memory.written.record(key, &status);
    }
    Ok(Action::requeue(if denied.is_some() {
        DENIED_RETRY
    } else {
        RESYNC
    }))
}

/// How soon a Sandbox whose pod was refused tries again.
const DENIED_RETRY: Duration = Duration::from_secs(30);

/// The condition type that says whether the Sandbox's pod got through admission.
pub const POD_ADMITTED: &str = "PodAdmitted";

/// Whether an apiserver error is the admission chain refusing the object (a webhook
/// or an admission policy), rather than RBAC or the apiserver itself.
fn is_admission_denial(e: &kube::core::Status) -> bool {
    e.code == 403 && e.message.contains("denied")
}

/// The Sandbox's conditions: a denial recorded as `PodAdmitted=False`, cleared once
/// the pod exists.
pub fn admission_conditions(
    old: &[Condition],
    denied: Option<&str>,
    has_pod: bool,
) -> Vec<Condition> {
    match denied {
        Some(message) => {
            let mut rest: Vec<Condition> = old
                .iter()
                .filter(|c| c.type_ != POD_ADMITTED)
                .cloned()
                .collect();
            rest.extend(merge_conditions(
                old,
                vec![condition(
                    POD_ADMITTED,
                    false,
                    contract::POD_DENIED_REASON,
                    message.to_string(),
                )],
            ));
            rest
        }
        None if has_pod => old
            .iter()
            .filter(|c| c.type_ != POD_ADMITTED)
            .cloned()
            .collect(),
        None => old.to_vec(),
    }
}

/// The denial a Sandbox's conditions record, if its pod was refused.
pub fn pod_denial(conditions: &[Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == POD_ADMITTED && c.status == "False")
        .map(|c| c.message.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_is_recorded_until_the_pod_exists() {
        let other = condition("Other", true, "X", "kept".into());
        let denied =
            admission_conditions(std::slice::from_ref(&other), Some("no: privileged"), false);
        assert_eq!(pod_denial(&denied), Some("no: privileged"));
        assert!(denied.iter().any(|c| c.type_ == "Other"), "{denied:?}");
        // A later denial replaces the first; no second condition of the type.
        let again = admission_conditions(&denied, Some("no: hostPath"), false);
        assert_eq!(again.iter().filter(|c| c.type_ == POD_ADMITTED).count(), 1);
        assert_eq!(pod_denial(&again), Some("no: hostPath"));
        // No pod yet and no new answer (cache lag): kept. The pod made: cleared.
        assert_eq!(admission_conditions(&again, None, false), again);
        let cleared = admission_conditions(&again, None, true);
        assert_eq!(pod_denial(&cleared), None);
        assert_eq!(cleared, vec![other]);
    }
}
