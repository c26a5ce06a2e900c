//! Template controller: the NetworkPolicies first, then the pool (executing the pure
//! plan), then the status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::plan::{self, Member};
use super::status::{pod_ready, unschedulable_because};
use super::{Error, Result, build};
use crate::contract::{self, label};
use crate::crd::{Sandbox, SandboxTemplate};
use crate::netpol::DefaultDeny as _;

/// How many pool creations are in flight at once.
const CONCURRENT_CREATES: usize = 16;
/// The periodic pass that heals a missed event.
const RESYNC: Duration = Duration::from_secs(30);
/// A pool's status is written at most this often: under load every bind and refill
/// changes its counts, and a write per change cost more apiserver time than the binds.
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub async fn reconcile(t: Arc<SandboxTemplate>, ctx: Arc<Context>) -> Result<Action> {
    ctx.caches.synced().await;
    if t.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = t
        .namespace()
        .ok_or_else(|| Error::Invalid("template without namespace".into()))?;
    let name = t.name_any();

    // 1. Both NetworkPolicies exist before any pod of the template. Each is written
    // only when the cache shows it missing or different: a write wakes this controller
    // again (it owns the policy), so an unconditional one would never settle.
    if !ctx
        .caches
        .policy(&ns, contract::DEFAULT_DENY_POLICY)
        .is_some_and(|np| crate::netpol::is_default_deny(&np))
    {
        ctx.default_deny.ensure(&ns).await?;
    }
    if let Some(np) = build::template_policy(&t)
        && !policy_current(
            &np,
            ctx.caches
                .policy(&ns, &contract::template_policy_name(&name))
                .as_deref(),
        )
    {
        let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch(
            &contract::template_policy_name(&name),
            &PatchParams::apply(contract::FIELD_MANAGER).force(),
            &Patch::Apply(&np),
        )
        .await?;
    }

    // 2. The pool.
    let all = ctx.caches.members(&ns, &name);
    let claimed = all
        .iter()
        .filter(|s| s.labels().contains_key(label::CLAIM))
        .count();
    let unclaimed: Vec<&Arc<Sandbox>> = all
        .iter()
        .filter(|s| !s.labels().contains_key(label::CLAIM) && s.meta().deletion_timestamp.is_none())
        .collect();
    let key = format!("{ns}/{name}");
    let in_flight = ctx
        .memory
        .in_flight
        .pending(&key, |n| all.iter().any(|s| s.name_any() == n));
    let now = k8s_openapi::jiff::Timestamp::now();
    let members: Vec<Member> = unclaimed
        .iter()
        .map(|s| {
            let pod = ctx.caches.pod_of(s);
            let age = s
                .meta()
                .creation_timestamp
                .as_ref()
                .and_then(|t| u64::try_from(now.as_second().saturating_sub(t.0.as_second())).ok())
                .map(Duration::from_secs)
                .unwrap_or_default();
            Member {
                name: s.name_any(),
                generation: s.spec.template_generation,
                ready: pod.as_deref().is_some_and(pod_ready),
                unschedulable: pod.as_deref().and_then(unschedulable_because),
                age,
            }
        })
        .collect();
    let size = t
        .spec
        .pool_config
        .as_ref()
        .map_or(0, |p| usize::try_from(p.size).unwrap_or(0));
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
            .buffer_unordered(CONCURRENT_CREATES);
        let mut first_error = None;
        while let Some(result) = creations.next().await {
            match result {
                Ok(created) => ctx.memory.in_flight.created(&key, created.name_any()),
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
    let old = t.status.clone().unwrap_or_default();
    let report = plan::report(size, t.metadata.generation, &members, claimed, &old);
    ctx.metrics.set_pool(
        &ns,
        &name,
        [
            ("ready", report.ready),
            ("pending", report.pending),
            ("claimed", claimed),
        ],
    );
    let key = format!("template/{ns}/{name}");
    let changed = report.status != old && !ctx.memory.written.same(&key, &report.status);
    if changed
        && let Some(wait) = ctx
            .memory
            .written
            .since(&key)
            .and_then(|age| STATUS_EVERY.checked_sub(age))
            .filter(|w| !w.is_zero())
    {
        // Written moments ago: the counts settle into the next write.
        return Ok(Action::requeue(wait));
    }
    if changed {
        if report.announce_unschedulable {
            ctx.event(
                t.as_ref(),
                EventType::Warning,
                "Unschedulable",
                plan::unschedulable_note(
                    &report.unschedulable,
                    report.because.as_deref(),
                    &ctx.cfg.runtime_class_name,
                ),
            )
            .await;
        }
        let templates: Api<SandboxTemplate> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": report.status});
        templates
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.memory.written.record(key, &report.status);
    }
    Ok(Action::requeue(RESYNC))
}

/// Whether the stored policy already is the desired one: the same rules, sandgate's
/// labels, owned by the same template.
fn policy_current(desired: &NetworkPolicy, stored: Option<&NetworkPolicy>) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    let labelled = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| stored.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let owned = desired.metadata.owner_references.iter().flatten().all(|o| {
        stored
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|s| s.uid == o.uid && s.controller == o.controller)
    });
    let same = match (&desired.spec, &stored.spec) {
        (Some(d), Some(s)) => crate::netpol::same_spec(d, s),
        (None, None) => true,
        _ => false,
    };
    labelled && owned && same
}
