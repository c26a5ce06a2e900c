//! Template reconcile: NetworkPolicies first, then the pool, then the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::plan::{self, Member};
use super::{
    Ctx, Error, PoolLabels, Result, build, condition, merge_conditions, pod_ready,
    pod_unschedulable,
};
use crate::crd::{Sandbox, SandboxTemplate, SandboxTemplateStatus};
use crate::labels;

/// Creations not seen in the cache after this long are forgotten (they failed).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(30);

pub async fn reconcile(t: Arc<SandboxTemplate>, ctx: Arc<Ctx>) -> Result<Action> {
    tracing::debug!(template = %t.name_any(), "template: waiting for caches");
    ctx.caches_ready().await;
    tracing::debug!(template = %t.name_any(), "template: caches ready");
    if t.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = t
        .namespace()
        .ok_or_else(|| Error::Invalid("template without namespace".into()))?;
    let name = t.name_any();

    // 1. Both NetworkPolicies exist before any pod of the template.
    crate::netpol::DefaultDeny::ensure(&ctx.default_deny, &ns).await?;
    if let Some(np) = build::template_policy(&t) {
        let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch(
            &build::template_policy_name(&name),
            &PatchParams::apply("sandgate").force(),
            &Patch::Apply(&np),
        )
        .await?;
    }

    tracing::debug!(template = %name, "template: policies in place");
    // 2. The pool.
    let all: Vec<Arc<Sandbox>> = ctx
        .sandboxes
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(labels::TEMPLATE) == Some(&name)
        })
        .collect();
    let claimed = all
        .iter()
        .filter(|s| s.labels().contains_key(build::CLAIM_LABEL))
        .count();
    let unclaimed: Vec<&Arc<Sandbox>> = all
        .iter()
        .filter(|s| {
            !s.labels().contains_key(build::CLAIM_LABEL) && s.meta().deletion_timestamp.is_none()
        })
        .collect();
    let key = format!("{ns}/{name}");
    let in_flight = {
        let mut map = ctx.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(key.clone()).or_default();
        list.retain(|(n, at)| {
            at.elapsed() < IN_FLIGHT_TTL && !all.iter().any(|s| &s.name_any() == n)
        });
        list.len()
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let members: Vec<Member> = unclaimed
        .iter()
        .map(|s| {
            let pod = ctx.pod_of(s);
            let age = s
                .meta()
                .creation_timestamp
                .as_ref()
                .map(|t| {
                    Duration::from_secs(
                        now.as_second().saturating_sub(t.0.as_second()).max(0) as u64
                    )
                })
                .unwrap_or_default();
            Member {
                name: s.name_any(),
                generation: s.spec.template_generation,
                ready: pod.as_deref().is_some_and(pod_ready),
                unschedulable: pod.as_deref().is_some_and(pod_unschedulable),
                age,
            }
        })
        .collect();
    let size = t
        .spec
        .pool_config
        .as_ref()
        .map_or(0, |p| p.size.max(0) as usize);
    let plan = plan::plan(
        size,
        t.metadata.generation,
        &members,
        in_flight,
        ctx.opts.ready_grace,
    );

    tracing::debug!(template = %name, ?plan, members = members.len(), in_flight, "template: plan");
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    for victim in &plan.delete {
        match api.delete(victim, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if plan.replaced_stuck > 0 {
        ctx.event(
            t.as_ref(),
            EventType::Warning,
            "SandboxNotReady",
            format!(
                "replaced {} sandbox(es) whose pod was not ready after {:?}",
                plan.replaced_stuck, ctx.opts.ready_grace
            ),
        )
        .await;
    }
    if let Some(sb) = build::pool_sandbox(&t) {
        // Creations go out concurrently (a pool refills at API speed, not one round
        // trip at a time); each is remembered as soon as it succeeds.
        use futures::StreamExt as _;
        let params = PostParams::default();
        let mut creations = futures::stream::iter(0..plan.create)
            .map(|_| api.create(&params, &sb))
            .buffer_unordered(16);
        let mut first_error = None;
        while let Some(result) = creations.next().await {
            match result {
                Ok(created) => {
                    let mut map = ctx.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                    map.entry(key.clone())
                        .or_default()
                        .push((created.name_any(), Instant::now()));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e.into());
        }
    }

    // 3. Status.
    let ready = members.iter().filter(|m| m.ready).count();
    let unschedulable: Vec<&str> = members
        .iter()
        .filter(|m| m.unschedulable)
        .map(|m| m.name.as_str())
        .collect();
    let pending = members.len() - ready;
    for (state, n) in [("ready", ready), ("pending", pending), ("claimed", claimed)] {
        ctx.metrics
            .pool
            .get_or_create(&PoolLabels {
                namespace: ns.clone(),
                template: name.clone(),
                state,
            })
            .set(n as i64);
    }
    let mut conditions = vec![condition(
        "PoolReady",
        ready >= size,
        if ready >= size {
            "PoolFull"
        } else {
            "PoolFilling"
        },
        format!("{ready} of {size} warm sandboxes ready"),
    )];
    if !unschedulable.is_empty() {
        conditions.push(condition(
            "Unschedulable",
            true,
            "PodsUnschedulable",
            format!(
                "{} pool pod(s) cannot be scheduled: {}",
                unschedulable.len(),
                unschedulable.join(", ")
            ),
        ));
    }
    let old = t.status.clone().unwrap_or_default();
    let status = SandboxTemplateStatus {
        observed_generation: t.metadata.generation,
        ready: ready as i32,
        pending: pending as i32,
        claimed: claimed as i32,
        conditions: merge_conditions(&old.conditions, conditions),
    };
    if status != old {
        if !unschedulable.is_empty() && !old.conditions.iter().any(|c| c.type_ == "Unschedulable") {
            ctx.event(t.as_ref(), EventType::Warning, "Unschedulable",
                format!("pool pods cannot be scheduled ({}); check nodes labelled sandbox.gke.io/runtime=gvisor", unschedulable.join(", "))).await;
        }
        let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": status});
        templates
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}
