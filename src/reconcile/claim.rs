//! Claim controller: executes the bind plan. A warm member is taken with a
//! resourceVersion-guarded replace (two claims never share a sandbox); with none to
//! take, the claim's one cold sandbox is created. Every status write is guarded by the
//! claim's resourceVersion, so a reconcile that ran on a stale view cannot record a
//! second sandbox: it loses the write and gives back what it took.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::bind::{self, Candidate, Inputs, MemberState, Step};
use super::context::Context;
use super::status::{pod_ended, pod_ready, pod_unschedulable};
use super::{Error, Result, build};
use crate::crd::{LaunchType, Sandbox, SandboxClaim, SandboxClaimStatus, SandboxTemplate};

/// How many pool members a claim tries before it falls back to a cold start.
const WARM_ATTEMPTS: usize = 8;
/// When a claim looks again after losing a guarded write or waiting for its cache.
const RETRY: Duration = Duration::from_secs(1);

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

    let named_sandbox = c
        .status
        .as_ref()
        .and_then(|s| s.sandbox.as_deref())
        .map(str::to_string);
    let named = named_sandbox
        .as_deref()
        .and_then(|n| ctx.caches.sandbox(&ns, n));
    let named_pod = named.as_deref().and_then(|sb| ctx.caches.pod_of(sb));
    let mut labelled = ctx.caches.claimed_by(&ns, &name);
    labelled.sort_by_key(|s| s.meta().creation_timestamp.clone().map(|t| t.0));
    let labelled_pods: Vec<_> = labelled.iter().map(|sb| ctx.caches.pod_of(sb)).collect();
    let template = ctx.caches.template(&ns, &c.spec.template_name);
    let plan = bind::plan(&Inputs {
        claim: &c,
        now: k8s_openapi::jiff::Timestamp::now(),
        since_seen: seen.elapsed(),
        named: named.as_deref().map(|sb| (sb, named_pod.as_deref())),
        labelled: labelled
            .iter()
            .zip(&labelled_pods)
            .map(|(sb, pod)| (sb.as_ref(), pod.as_deref()))
            .collect(),
        recently_bound: named_sandbox
            .as_deref()
            .is_some_and(|n| ctx.memory.taken.contains(&format!("{ns}/{n}"))),
        remembered: ctx.memory.bound.recent(&uid),
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
        Step::Report {
            status,
            bound,
            surplus,
        } => {
            if write_status(&ctx, &c, &old, status).await? == Written::Conflict {
                return Ok(Action::requeue(RETRY));
            }
            if let Some((launch, ms)) = bound {
                ctx.metrics.observe_bind(launch, ms);
                ctx.memory.first_seen.forget(&uid);
            }
            for extra in surplus {
                if let Some(sb) = labelled.iter().find(|s| s.name_any() == extra) {
                    give_back(&ctx, sb, template.as_deref()).await?;
                }
            }
        }
        Step::AwaitCache => return Ok(Action::requeue(RETRY)),
        Step::Lost { status } => {
            if write_status(&ctx, &c, &old, status).await? == Written::Conflict {
                return Ok(Action::requeue(RETRY));
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
            if write_status(&ctx, &c, &old, status).await? == Written::Conflict {
                return Ok(Action::requeue(RETRY));
            }
        }
        Step::Bind => {
            let template = template.ok_or_else(|| Error::Invalid("template vanished".into()))?;
            let outcome = match bind_member(&ctx, &c, &ns, &old, seen, &template).await? {
                Written::Unchanged => start_cold(&ctx, &c, &ns, &old, &template).await?,
                written => written,
            };
            if outcome == Written::Conflict {
                return Ok(Action::requeue(RETRY));
            }
        }
    }
    Ok(requeue)
}

/// What a guarded status write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Nothing to write (or, for a bind, nothing could be taken).
    Unchanged,
    Done,
    /// The claim changed since this reconcile's view: its write lost.
    Conflict,
}

/// Takes the first member another claim does not win (a ready one if any, else one
/// still starting) and records it on the claim. `Unchanged` when none could be taken.
async fn bind_member(
    ctx: &Context,
    c: &SandboxClaim,
    ns: &str,
    old: &SandboxClaimStatus,
    seen: Instant,
    template: &SandboxTemplate,
) -> Result<Written> {
    let members = ctx.caches.members(ns, &c.spec.template_name);
    let state = |sb: &Sandbox| match ctx.caches.pod_of(sb).as_deref() {
        Some(p) if pod_ready(p) => MemberState::Ready,
        Some(p) if pod_unschedulable(p) || pod_ended(p) => MemberState::Stuck,
        _ if sb.spec.template_generation != template.metadata.generation => MemberState::Stuck,
        _ => MemberState::Starting,
    };
    let candidates = bind::candidates(members, state, &ctx.memory.taken.recent());
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), ns);
    for Candidate {
        sandbox: cand,
        ready,
    } in candidates.into_iter().take(WARM_ATTEMPTS)
    {
        let launch = if ready {
            LaunchType::Warm
        } else {
            LaunchType::Cold
        };
        let Some(sb) = build::claimed_member(&cand, c, launch) else {
            return Err(Error::Invalid("claim without name/uid".into()));
        };
        ctx.memory.taken.take(bind::taken_key(&cand));
        let bound = match sandboxes
            .replace(&cand.name_any(), &PostParams::default(), &sb)
            .await
        {
            Ok(bound) => bound,
            // Another claim won this one: try the next.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        // The sandbox controller marks the Sandbox Claimed when it sees the label; the
        // claim's own status is the one write left on this path.
        let ms = bind::startup_ms(
            c.meta().creation_timestamp.as_ref().map(|t| t.0),
            k8s_openapi::jiff::Timestamp::now(),
            seen.elapsed(),
        );
        let pod = ctx.caches.pod_of(&bound);
        let status = if ready {
            bind::warm_status(old, &bound, pod.as_deref(), ms)
        } else {
            bind::starting_status(old, &bound, "took pool sandbox")
        };
        let written = write_status(ctx, c, old, status).await?;
        if written == Written::Conflict {
            // A reconcile on a newer view already settled this claim.
            give_back(ctx, &bound, Some(template)).await?;
            return Ok(Written::Conflict);
        }
        let uid = c.uid().unwrap_or_default();
        ctx.memory.bound.record(&uid, bound.name_any());
        if ready {
            ctx.metrics.observe_bind(LaunchType::Warm, ms);
            ctx.memory.first_seen.forget(&uid);
        } else {
            ctx.event(
                c,
                EventType::Normal,
                "PoolExhausted",
                format!(
                    "no warm sandbox of {} was ready; took {}, which is still starting",
                    c.spec.template_name,
                    bound.name_any()
                ),
            )
            .await;
        }
        return Ok(Written::Done);
    }
    Ok(Written::Unchanged)
}

/// The pool is empty: the claim gets its one cold sandbox right away.
async fn start_cold(
    ctx: &Context,
    c: &SandboxClaim,
    ns: &str,
    old: &SandboxClaimStatus,
    template: &SandboxTemplate,
) -> Result<Written> {
    let Some(sb) = build::cold_sandbox(template, c) else {
        return Err(Error::Invalid("claim or template without name/uid".into()));
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), ns);
    let (created, ours) = match sandboxes.create(&PostParams::default(), &sb).await {
        Ok(created) => (created, true),
        // An earlier reconcile of this claim made it: record it, never delete it.
        Err(kube::Error::Api(e)) if e.code == 409 => (sb, false),
        Err(e) => return Err(e.into()),
    };
    ctx.memory.taken.take(bind::taken_key(&created));
    let status = bind::starting_status(old, &created, "cold sandbox");
    let written = write_status(ctx, c, old, status).await?;
    if written == Written::Conflict {
        if ours {
            delete(ctx, &created).await?;
        }
        return Ok(written);
    }
    ctx.memory
        .bound
        .record(&c.uid().unwrap_or_default(), created.name_any());
    if ours {
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
    }
    Ok(written)
}

/// A sandbox bound to the claim beyond the one it holds: back to its pool when it was
/// a warm member and its template still exists (the pool stays warm), else deleted.
async fn give_back(ctx: &Context, sb: &Sandbox, template: Option<&SandboxTemplate>) -> Result<()> {
    let warm = LaunchType::from_annotation(
        sb.annotations()
            .get(crate::contract::annotation::LAUNCH)
            .map(String::as_str),
    ) == LaunchType::Warm;
    if let Some(t) = template.filter(|_| warm)
        && let Some(released) = build::released_sandbox(sb, t)
    {
        let api: Api<Sandbox> =
            Api::namespaced(ctx.client.clone(), &sb.namespace().unwrap_or_default());
        match api
            .replace(&sb.name_any(), &PostParams::default(), &released)
            .await
        {
            Ok(_) => {
                tracing::info!(sandbox = %sb.name_any(), "surplus sandbox returned to its pool");
                return Ok(());
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            // Changed since it was read: it cannot be handed back safely; delete it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(sandbox = %sb.name_any(), "surplus sandbox deleted");
    delete(ctx, sb).await
}

async fn delete(ctx: &Context, sb: &Sandbox) -> Result<()> {
    let api: Api<Sandbox> =
        Api::namespaced(ctx.client.clone(), &sb.namespace().unwrap_or_default());
    match api
        .delete(&sb.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the claim's status when it changed, guarded by the resourceVersion of the
/// claim this reconcile read.
async fn write_status(
    ctx: &Context,
    c: &SandboxClaim,
    old: &SandboxClaimStatus,
    status: SandboxClaimStatus,
) -> Result<Written> {
    let key = format!(
        "claim/{}/{}",
        c.namespace().unwrap_or_default(),
        c.name_any()
    );
    if &status == old || ctx.memory.written.same(&key, &status) {
        return Ok(Written::Unchanged);
    }
    let api: Api<SandboxClaim> =
        Api::namespaced(ctx.client.clone(), &c.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": c.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &c.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            ctx.memory.written.record(key, &status);
            Ok(Written::Done)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Written::Conflict),
        Err(e) => Err(e.into()),
    }
}
