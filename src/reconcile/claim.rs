//! Claim reconcile: bind a ready pool sandbox (optimistic concurrency), or start a
//! cold one at once; report startup time; expire claims past their lifetime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::{Ctx, Error, LaunchLabels, Result, build, condition, merge_conditions, pod_ready};
use crate::crd::{
    LaunchType, Sandbox, SandboxClaim, SandboxClaimStatus, SandboxPhase, SandboxTemplate,
};
use crate::labels;

/// How long a sandbox bound moments ago is skipped while the cache catches up.
const TAKEN_TTL: Duration = Duration::from_secs(10);

pub async fn reconcile(c: Arc<SandboxClaim>, ctx: Arc<Ctx>) -> Result<Action> {
    ctx.caches_ready().await;
    if c.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = c
        .namespace()
        .ok_or_else(|| Error::Invalid("claim without namespace".into()))?;
    let name = c.name_any();
    let uid = c.uid().unwrap_or_default();
    let seen = {
        let mut seen = ctx.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        // Claims deleted before they were bound leave an entry: drop old ones.
        seen.retain(|_, at| at.elapsed() < Duration::from_secs(600));
        *seen.entry(uid.clone()).or_insert_with(Instant::now)
    };

    // Lifetime.
    let now = k8s_openapi::jiff::Timestamp::now();
    let created = c.meta().creation_timestamp.as_ref().map(|t| t.0);
    let mut requeue = Action::await_change();
    if let (Some(ttl), Some(created)) = (c.spec.ttl_seconds, created) {
        let left = created.as_second() + ttl - now.as_second();
        if left <= 0 {
            let api: Api<SandboxClaim> = Api::namespaced(ctx.client.clone(), &ns);
            ctx.event(
                c.as_ref(),
                EventType::Normal,
                "Expired",
                format!("lifetime of {ttl}s reached; deleting the claim and its sandbox"),
            )
            .await;
            api.delete(&name, &DeleteParams::background()).await?;
            ctx.first_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            return Ok(Action::await_change());
        }
        requeue = Action::requeue(Duration::from_secs(left as u64));
    }
    // Time from the claim's creation; the watch event is milliseconds behind it, and
    // creationTimestamp has only second resolution, so a recent claim counts from when
    // it was first seen here.
    let startup_ms = |bound: Instant| -> i64 {
        let since_seen = bound.duration_since(seen).as_millis() as i64;
        match created {
            Some(t) if now.as_second() - t.as_second() > 2 + seen.elapsed().as_secs() as i64 => {
                (now.as_millisecond() - t.as_millisecond()).max(since_seen)
            }
            _ => since_seen,
        }
    };

    let old = c.status.clone().unwrap_or_default();
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);

    // Already holding a sandbox (bound warm, or a cold one starting)?
    let mine = ctx.sandboxes.state().into_iter().find(|s| {
        s.namespace().as_deref() == Some(ns.as_str())
            && s.labels().get(build::CLAIM_LABEL) == Some(&name)
    });
    if let Some(sb) = mine {
        let pod = ctx.pod_of(&sb);
        let ready = pod.as_deref().is_some_and(pod_ready);
        let launch = if sb
            .annotations()
            .get(build::LAUNCH_ANNOTATION)
            .map(String::as_str)
            == Some("cold")
        {
            LaunchType::Cold
        } else {
            LaunchType::Warm
        };
        let mut status = old.clone();
        status.sandbox = Some(sb.name_any());
        status.launch_type = Some(launch);
        status.pod_name = Some(sb.name_any());
        status.pod_ip = pod
            .as_deref()
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.pod_ip.clone());
        if ready && old.phase.as_deref() != Some("Bound") {
            let ms = startup_ms(Instant::now());
            status.phase = Some("Bound".into());
            status.startup_time_ms = Some(ms);
            status.conditions = merge_conditions(
                &old.conditions,
                vec![condition(
                    "Bound",
                    true,
                    "SandboxReady",
                    format!("sandbox {} is ready", sb.name_any()),
                )],
            );
            observe(&ctx, launch, ms);
            forget_seen(&ctx, &uid);
        } else if !ready && old.phase.as_deref() != Some("Bound") {
            status.phase = Some("Pending".into());
        }
        if sb.status.as_ref().and_then(|s| s.phase) == Some(SandboxPhase::Failed) {
            status.phase = Some("Failed".into());
            status.conditions = merge_conditions(
                &old.conditions,
                vec![condition(
                    "Bound",
                    false,
                    "SandboxFailed",
                    format!("sandbox {} failed", sb.name_any()),
                )],
            );
        }
        write_status(&ctx, &ns, &name, &old, status).await?;
        return Ok(requeue);
    }

    let Some(template) = ctx
        .templates
        .get(&ObjectRef::new(&c.spec.template_name).within(&ns))
    else {
        let mut status = old.clone();
        status.phase = Some("Pending".into());
        status.conditions = merge_conditions(
            &old.conditions,
            vec![condition(
                "Bound",
                false,
                "TemplateNotFound",
                format!(
                    "SandboxTemplate {ns}/{} does not exist; the claim binds when it appears",
                    c.spec.template_name
                ),
            )],
        );
        if old.phase.as_deref() != Some("Pending")
            || !old
                .conditions
                .iter()
                .any(|c| c.reason == "TemplateNotFound")
        {
            ctx.event(
                c.as_ref(),
                EventType::Warning,
                "TemplateNotFound",
                format!("SandboxTemplate {} not found", c.spec.template_name),
            )
            .await;
        }
        write_status(&ctx, &ns, &name, &old, status).await?;
        return Ok(requeue);
    };

    // Warm: a ready, unclaimed member, taken with a resourceVersion-guarded write so two
    // claims never get the same sandbox.
    let candidates = warm_candidates(&ctx, &ns, &template);
    for cand in candidates.into_iter().take(8) {
        let mut sb = (*cand).clone();
        sb.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(build::CLAIM_LABEL.to_string(), name.clone());
        sb.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(build::LAUNCH_ANNOTATION.to_string(), "warm".to_string());
        sb.metadata.owner_references = build::owner_ref(c.as_ref()).map(|o| vec![o]);
        let key = format!("{ns}/{}", cand.name_any());
        ctx.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Instant::now());
        match sandboxes
            .replace(&cand.name_any(), &PostParams::default(), &sb)
            .await
        {
            Ok(bound) => {
                // The sandbox controller marks the Sandbox Claimed when it sees the
                // label; the claim's own status is the one write left on this path.
                let ms = startup_ms(Instant::now());
                let pod = ctx.pod_of(&bound);
                let status = SandboxClaimStatus {
                    phase: Some("Bound".into()),
                    sandbox: Some(bound.name_any()),
                    pod_name: Some(bound.name_any()),
                    pod_ip: pod
                        .as_deref()
                        .and_then(|p| p.status.as_ref())
                        .and_then(|s| s.pod_ip.clone()),
                    startup_time_ms: Some(ms),
                    launch_type: Some(LaunchType::Warm),
                    conditions: merge_conditions(
                        &old.conditions,
                        vec![condition(
                            "Bound",
                            true,
                            "WarmSandbox",
                            format!("bound to warm sandbox {}", bound.name_any()),
                        )],
                    ),
                };
                write_status(&ctx, &ns, &name, &old, status).await?;
                observe(&ctx, LaunchType::Warm, ms);
                forget_seen(&ctx, &uid);
                return Ok(requeue);
            }
            // Another claim won this one: try the next.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
    }

    // Cold: the pool is empty, so this claim gets a sandbox of its own right away.
    let Some(sb) = build::cold_sandbox(&template, &c) else {
        return Err(Error::Invalid("claim or template without name/uid".into()));
    };
    let created = sandboxes.create(&PostParams::default(), &sb).await?;
    ctx.event(
        c.as_ref(),
        EventType::Normal,
        "PoolExhausted",
        format!(
            "no warm sandbox of {} was ready; started {} for this claim",
            c.spec.template_name,
            created.name_any()
        ),
    )
    .await;
    let status = SandboxClaimStatus {
        phase: Some("Pending".into()),
        sandbox: Some(created.name_any()),
        pod_name: Some(created.name_any()),
        pod_ip: None,
        startup_time_ms: None,
        launch_type: Some(LaunchType::Cold),
        conditions: merge_conditions(
            &old.conditions,
            vec![condition(
                "Bound",
                false,
                "PoolExhausted",
                format!("cold sandbox {} starting", created.name_any()),
            )],
        ),
    };
    write_status(&ctx, &ns, &name, &old, status).await?;
    Ok(requeue)
}

/// Ready, unclaimed, up-to-date members of the template, oldest first.
fn warm_candidates(ctx: &Ctx, ns: &str, t: &SandboxTemplate) -> Vec<Arc<Sandbox>> {
    let name = t.name_any();
    let taken = {
        let mut taken = ctx.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.retain(|_, at| at.elapsed() < TAKEN_TTL);
        taken.clone()
    };
    let mut out: Vec<Arc<Sandbox>> = ctx
        .sandboxes
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| s.labels().get(labels::TEMPLATE) == Some(&name))
        .filter(|s| {
            !s.labels().contains_key(build::CLAIM_LABEL) && s.meta().deletion_timestamp.is_none()
        })
        .filter(|s| !taken.contains_key(&format!("{ns}/{}", s.name_any())))
        .filter(|s| ctx.pod_of(s).as_deref().is_some_and(pod_ready))
        .collect();
    out.sort_by_key(|s| s.meta().creation_timestamp.clone().map(|t| t.0));
    out
}

/// A bound claim needs its first-seen time no more.
fn forget_seen(ctx: &Ctx, uid: &str) {
    ctx.first_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(uid);
}

fn observe(ctx: &Ctx, launch: LaunchType, ms: i64) {
    let launch = match launch {
        LaunchType::Warm => "warm",
        LaunchType::Cold => "cold",
    };
    ctx.metrics
        .bind_latency
        .get_or_create(&LaunchLabels { launch })
        .observe(ms as f64 / 1000.0);
}

async fn write_status(
    ctx: &Ctx,
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
