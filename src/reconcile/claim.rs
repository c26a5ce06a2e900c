//! Claim controller: executes the bind plan. A warm member is taken with a
//! resourceVersion-guarded replace (two claims never get the same sandbox); with none to
//! take, a cold sandbox is created for the claim at once.

use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::bind::{self, Inputs, Step};
use super::context::Context;
use super::{Error, Result, build, status::pod_ready};
use crate::crd::{LaunchType, Sandbox, SandboxClaim, SandboxClaimStatus};

/// How many warm members a claim tries before it falls back to a cold start.
const WARM_ATTEMPTS: usize = 8;

pub async fn reconcile(c: Arc<SandboxClaim>, ctx: Arc<Context>) -> Result<Action> {
    ctx.caches.synced().await;
    if c.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = c
        .namespace()
        .ok_or_else(|| Error::Invalid("claim without namespace".into()))?;
    let name = c.name_any();
    let uid = c.uid().unwrap_or_default();
    let seen = ctx.memory.first_seen.get(&uid);

    let held = ctx.caches.claimed_by(&ns, &name).into_iter().next();
    let held_pod = held.as_deref().and_then(|sb| ctx.caches.pod_of(sb));
    let template = ctx.caches.template(&ns, &c.spec.template_name);
    let plan = bind::plan(&Inputs {
        claim: &c,
        now: k8s_openapi::jiff::Timestamp::now(),
        since_seen: seen.elapsed(),
        held: held.as_deref().map(|sb| (sb, held_pod.as_deref())),
        template_exists: template.is_some(),
    });
    let requeue = plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue);
    let old = c.status.clone().unwrap_or_default();

    match plan.step {
        Step::Expire { ttl } => {
            ctx.event(
                c.as_ref(),
                EventType::Normal,
                "Expired",
                format!("lifetime of {ttl}s reached; deleting the claim and its sandbox"),
            )
            .await;
            let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ns);
            api.delete(&name, &DeleteParams::background()).await?;
            ctx.memory.first_seen.forget(&uid);
            return Ok(Action::await_change());
        }
        Step::Report { status, bound } => {
            write_status(&ctx, &ns, &name, &old, status).await?;
            if let Some((launch, ms)) = bound {
                ctx.metrics.observe_bind(launch, ms);
                ctx.memory.first_seen.forget(&uid);
            }
        }
        Step::WaitForTemplate { status, announce } => {
            if announce {
                ctx.event(
                    c.as_ref(),
                    EventType::Warning,
                    "TemplateNotFound",
                    format!("SandboxTemplate {} not found", c.spec.template_name),
                )
                .await;
            }
            write_status(&ctx, &ns, &name, &old, status).await?;
        }
        Step::Bind => {
            let template = template.ok_or_else(|| Error::Invalid("template vanished".into()))?;
            if !bind_warm(&ctx, &c, &ns, &old, seen).await? {
                start_cold(&ctx, &c, &ns, &old, &template).await?;
            }
        }
    }
    Ok(requeue)
}

/// Takes the first ready member another claim does not win; false when none could be
/// taken.
async fn bind_warm(
    ctx: &Context,
    c: &SandboxClaim,
    ns: &str,
    old: &SandboxClaimStatus,
    seen: Instant,
) -> Result<bool> {
    let members = ctx.caches.members(ns, &c.spec.template_name);
    let ready = |sb: &Sandbox| ctx.caches.pod_of(sb).as_deref().is_some_and(pod_ready);
    let candidates = bind::warm_candidates(members, ready, &ctx.memory.taken.recent());
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), ns);
    for cand in candidates.into_iter().take(WARM_ATTEMPTS) {
        let Some(sb) = build::warm_sandbox(&cand, c) else {
            return Err(Error::Invalid("claim without name/uid".into()));
        };
        ctx.memory.taken.take(bind::taken_key(&cand));
        match sandboxes
            .replace(&cand.name_any(), &PostParams::default(), &sb)
            .await
        {
            Ok(bound) => {
                // The sandbox controller marks the Sandbox Claimed when it sees the
                // label; the claim's own status is the one write left on this path.
                let ms = bind::startup_ms(
                    c.meta().creation_timestamp.as_ref().map(|t| t.0),
                    k8s_openapi::jiff::Timestamp::now(),
                    seen.elapsed(),
                );
                let pod = ctx.caches.pod_of(&bound);
                let status = bind::warm_status(old, &bound, pod.as_deref(), ms);
                write_status(ctx, ns, &c.name_any(), old, status).await?;
                ctx.metrics.observe_bind(LaunchType::Warm, ms);
                ctx.memory.first_seen.forget(&c.uid().unwrap_or_default());
                return Ok(true);
            }
            // Another claim won this one: try the next.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// The pool is empty: the claim gets a sandbox of its own right away.
async fn start_cold(
    ctx: &Context,
    c: &SandboxClaim,
    ns: &str,
    old: &SandboxClaimStatus,
    template: &crate::crd::SandboxTemplate,
) -> Result<()> {
    let Some(sb) = build::cold_sandbox(template, c) else {
        return Err(Error::Invalid("claim or template without name/uid".into()));
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), ns);
    let created = sandboxes.create(&PostParams::default(), &sb).await?;
    ctx.event(
        c,
        EventType::Normal,
        "PoolExhausted",
        format!(
            "no warm sandbox of {} was ready; started {} for this claim",
            c.spec.template_name,
            created.name_any()
        ),
    )
    .await;
    let status = bind::cold_status(old, &created);
    write_status(ctx, ns, &c.name_any(), old, status).await
}

async fn write_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    old: &SandboxClaimStatus,
    status: SandboxClaimStatus,
) -> Result<()> {
    if &status == old {
        return Ok(());
    }
    let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({"status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
