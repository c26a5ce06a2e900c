//! The claim's bind plan, pure: given the claim, what the caches show of it and of its
//! template, and the time, what the claim controller must do next. The controller
//! (`claim.rs`) only executes it.
//!
//! Exactly one sandbox per claim, against caches that lag: the claim's own
//! `status.sandbox` says which sandbox it holds, and every status write is guarded by
//! the claim's resourceVersion. A reconcile that ran on a stale view (it bound a second
//! sandbox, or made a cold one) loses that write and gives its sandbox back; a sandbox
//! the cache shows bound to the claim beyond the one it holds is surplus and goes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource as _, ResourceExt as _};

use super::status::{condition, merge_conditions, pod_ip, pod_ready};
use crate::contract::{annotation, label};
use crate::crd::{ClaimPhase, LaunchType, Sandbox, SandboxClaim, SandboxClaimStatus, SandboxPhase};

/// A claim is looked at again at least this often while it has a lifetime, so a very
/// long one never needs a timer beyond what the runtime's scheduler holds.
const MAX_REQUEUE: Duration = Duration::from_secs(3600);

/// What the claim's lifetime says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// No lifetime, or one too long to ever run out.
    Unlimited,
    Left(Duration),
    Over,
}

/// `spec.ttlSeconds` from `created`, in checked arithmetic: a lifetime past the end of
/// time never runs out (the schema caps it at a year, but old objects may hold more).
pub fn lifetime(ttl: Option<i64>, created: Option<Timestamp>, now: Timestamp) -> Lifetime {
    let (Some(ttl), Some(created)) = (ttl, created) else {
        return Lifetime::Unlimited;
    };
    if ttl <= 0 {
        return Lifetime::Over;
    }
    // With a positive lifetime only an end past the last representable second overflows.
    let Some(left) = created
        .as_second()
        .checked_add(ttl)
        .and_then(|end| end.checked_sub(now.as_second()))
    else {
        return Lifetime::Unlimited;
    };
    match u64::try_from(left) {
        Ok(0) | Err(_) => Lifetime::Over,
        Ok(secs) => Lifetime::Left(Duration::from_secs(secs)),
    }
}

/// Milliseconds from the claim's creation to now. `creationTimestamp` has second
/// resolution and the watch event arrives milliseconds after it, so a claim first seen
/// recently counts from when it was seen; one created well before (a restart, a missed
/// event) counts from its creation.
pub fn startup_ms(created: Option<Timestamp>, now: Timestamp, since_seen: Duration) -> i64 {
    let seen_ms = i64::try_from(since_seen.as_millis()).unwrap_or(i64::MAX);
    let seen_secs = i64::try_from(since_seen.as_secs()).unwrap_or(i64::MAX);
    match created {
        Some(t) if now.as_second().saturating_sub(t.as_second()) > seen_secs.saturating_add(2) => {
            now.as_millisecond()
                .saturating_sub(t.as_millisecond())
                .max(seen_ms)
        }
        _ => seen_ms,
    }
}

/// What the controller knows when it plans.
pub struct Inputs<'a> {
    pub claim: &'a SandboxClaim,
    pub now: Timestamp,
    /// Since the claim was first seen by this reconciler.
    pub since_seen: Duration,
    /// The sandbox the claim's status names, if the cache shows it, with its pod.
    pub named: Option<(&'a Sandbox, Option<&'a Pod>)>,
    /// The sandboxes the cache shows labelled for this claim, oldest first, with pods.
    pub labelled: Vec<(&'a Sandbox, Option<&'a Pod>)>,
    /// The named sandbox was bound or created moments ago: the cache may not show it yet.
    pub recently_bound: bool,
    /// The sandbox this reconciler bound the claim to moments ago, if any: a claim whose
    /// status does not show it yet is a stale view.
    pub remembered: Option<String>,
    pub template_exists: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The lifetime ran out: delete the claim (its sandbox goes with it).
    Expire { ttl: i64 },
    /// The claim holds a sandbox: write this status if it changed. `bound` is set when
    /// the claim became usable just now (for the bind metric); `surplus` are other
    /// sandboxes bound to the claim, to give back once the status is written.
    Report {
        status: SandboxClaimStatus,
        bound: Option<(LaunchType, i64)>,
        surplus: Vec<String>,
    },
    /// The claim's sandbox was written moments ago and the cache does not show it yet:
    /// wait for it (its event wakes the claim), never bind another.
    AwaitCache,
    /// The sandbox the claim held is gone: the claim failed.
    Lost { status: SandboxClaimStatus },
    /// The template does not exist (yet): write this status, and tell the user when
    /// `announce` (the first time).
    WaitForTemplate {
        status: SandboxClaimStatus,
        announce: bool,
    },
    /// Bind a ready warm member, or start a cold sandbox when none can be taken.
    Bind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub step: Step,
    /// When to look again without an event (the lifetime's end).
    pub requeue: Option<Duration>,
}

pub fn plan(i: &Inputs<'_>) -> Plan {
    let c = i.claim;
    let requeue = match lifetime(
        c.spec.ttl_seconds,
        c.meta().creation_timestamp.as_ref().map(|t| t.0),
        i.now,
    ) {
        Lifetime::Over => {
            return Plan {
                step: Step::Expire {
                    ttl: c.spec.ttl_seconds.unwrap_or(0),
                },
                requeue: None,
            };
        }
        Lifetime::Left(left) => Some(left.min(MAX_REQUEUE)),
        Lifetime::Unlimited => None,
    };
    let old = c.status.clone().unwrap_or_default();
    let surplus = |keep: &str| -> Vec<String> {
        i.labelled
            .iter()
            .map(|(sb, _)| sb.name_any())
            .filter(|n| n != keep)
            .collect()
    };
    let step = if let Some(name) = old.sandbox.as_deref() {
        match i.named {
            Some((sb, pod)) => held(i, &old, sb, pod, surplus(name)),
            None if i.recently_bound => Step::AwaitCache,
            None => Step::Lost {
                status: lost(&old, name),
            },
        }
    } else if i.remembered.is_some() {
        // Bound moments ago; this view of the claim predates that write.
        Step::AwaitCache
    } else if let Some((sb, pod)) = i.labelled.first() {
        // Bound, but the status write did not land: adopt it.
        held(i, &old, sb, *pod, surplus(&sb.name_any()))
    } else if !i.template_exists {
        let mut status = old.clone();
        status.phase = Some(ClaimPhase::Pending);
        status.conditions = merge_conditions(
            &old.conditions,
            vec![condition(
                "Bound",
                false,
                "TemplateNotFound",
                format!(
                    "SandboxTemplate {}/{} does not exist; the claim binds when it appears",
                    c.namespace().unwrap_or_default(),
                    c.spec.template_name
                ),
            )],
        );
        let announced = old.phase == Some(ClaimPhase::Pending)
            && old
                .conditions
                .iter()
                .any(|c| c.reason == "TemplateNotFound");
        Step::WaitForTemplate {
            status,
            announce: !announced,
        }
    } else {
        Step::Bind
    };
    Plan { step, requeue }
}

/// The status of a claim whose sandbox no longer exists.
fn lost(old: &SandboxClaimStatus, name: &str) -> SandboxClaimStatus {
    let mut status = old.clone();
    status.phase = Some(ClaimPhase::Failed);
    status.pod_ip = None;
    status.conditions = merge_conditions(
        &old.conditions,
        vec![condition(
            "Bound",
            false,
            "SandboxGone",
            format!("sandbox {name} no longer exists"),
        )],
    );
    status
}

/// The status of a claim that holds `sb`.
fn held(
    i: &Inputs<'_>,
    old: &SandboxClaimStatus,
    sb: &Sandbox,
    pod: Option<&Pod>,
    surplus: Vec<String>,
) -> Step {
    let ready = pod.is_some_and(pod_ready);
    let launch =
        LaunchType::from_annotation(sb.annotations().get(annotation::LAUNCH).map(String::as_str));
    let was_bound = old.phase == Some(ClaimPhase::Bound);
    let mut status = old.clone();
    status.sandbox = Some(sb.name_any());
    status.launch_type = Some(launch);
    status.pod_name = Some(sb.name_any());
    status.pod_ip = pod_ip(pod);
    let mut bound = None;
    if ready && !was_bound {
        let ms = startup_ms(
            i.claim.meta().creation_timestamp.as_ref().map(|t| t.0),
            i.now,
            i.since_seen,
        );
        status.phase = Some(ClaimPhase::Bound);
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
        bound = Some((launch, ms));
    } else if !ready && !was_bound {
        status.phase = Some(ClaimPhase::Pending);
    }
    if let Some(message) = sb
        .status
        .as_ref()
        .and_then(|s| super::sandbox::pod_denial(&s.conditions))
        .filter(|_| !ready)
    {
        status.conditions = merge_conditions(
            &old.conditions,
            vec![condition(
                "Bound",
                false,
                crate::contract::POD_DENIED_REASON,
                format!(
                    "the pod of sandbox {} was refused at admission: {message}",
                    sb.name_any()
                ),
            )],
        );
    }
    if sb.status.as_ref().and_then(|s| s.phase) == Some(SandboxPhase::Failed) {
        status.phase = Some(ClaimPhase::Failed);
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
    Step::Report {
        status,
        bound,
        surplus,
    }
}

/// Whether a claim waits for its template to appear (nothing else it waits for is
/// signalled by the template).
pub fn waits_for_template(c: &SandboxClaim) -> bool {
    match c.status.as_ref() {
        None => true,
        Some(s) => {
            s.sandbox.is_none() && s.conditions.iter().any(|c| c.reason == "TemplateNotFound")
        }
    }
}

/// A pool member a claim may take, and whether its pod is ready.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub sandbox: Arc<Sandbox>,
    pub ready: bool,
}

/// Unclaimed, live members of a template not taken moments ago: the ready ones first,
/// then those still starting (and schedulable), each oldest first. A claim that finds
/// no ready member takes one already starting rather than making a new sandbox: under
/// load a cold sandbox per claim, on top of the refill, doubles the pods to create.
pub fn candidates(
    members: Vec<Arc<Sandbox>>,
    state: impl Fn(&Sandbox) -> MemberState,
    taken: &HashSet<String>,
) -> Vec<Candidate> {
    let mut out: Vec<(Candidate, Option<Timestamp>)> = members
        .into_iter()
        .filter(|s| !s.labels().contains_key(label::CLAIM) && s.meta().deletion_timestamp.is_none())
        .filter(|s| !taken.contains(&taken_key(s)))
        .filter_map(|s| {
            let ready = match state(&s) {
                MemberState::Ready => true,
                MemberState::Starting => false,
                MemberState::Stuck => return None,
            };
            let created = s.meta().creation_timestamp.clone().map(|t| t.0);
            Some((Candidate { sandbox: s, ready }, created))
        })
        .collect();
    out.sort_by_key(|(c, created)| (!c.ready, *created));
    out.into_iter().map(|(c, _)| c).collect()
}

/// What a pool member's pod says about taking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Ready,
    /// Not ready yet, expected to be (no pod yet, or a pod on its way).
    Starting,
    /// Unschedulable or ended: not worth waiting for.
    Stuck,
}

/// How a sandbox is named in [`super::memory::Taken`].
pub fn taken_key(sb: &Sandbox) -> String {
    format!("{}/{}", sb.namespace().unwrap_or_default(), sb.name_any())
}

/// The claim's status once bound to the warm sandbox `sb`.
pub fn warm_status(
    old: &SandboxClaimStatus,
    sb: &Sandbox,
    pod: Option<&Pod>,
    startup_ms: i64,
) -> SandboxClaimStatus {
    SandboxClaimStatus {
        phase: Some(ClaimPhase::Bound),
        sandbox: Some(sb.name_any()),
        pod_name: Some(sb.name_any()),
        pod_ip: pod_ip(pod),
        startup_time_ms: Some(startup_ms),
        launch_type: Some(LaunchType::Warm),
        conditions: merge_conditions(
            &old.conditions,
            vec![condition(
                "Bound",
                true,
                "WarmSandbox",
                format!("bound to warm sandbox {}", sb.name_any()),
            )],
        ),
    }
}

/// The claim's status while its sandbox `sb` starts (a pool member taken before it was
/// ready, or its own cold sandbox): a cold launch, Pending until the pod is ready.
pub fn starting_status(old: &SandboxClaimStatus, sb: &Sandbox, how: &str) -> SandboxClaimStatus {
    SandboxClaimStatus {
        phase: Some(ClaimPhase::Pending),
        sandbox: Some(sb.name_any()),
        pod_name: Some(sb.name_any()),
        pod_ip: None,
        startup_time_ms: None,
        launch_type: Some(LaunchType::Cold),
        conditions: merge_conditions(
            &old.conditions,
            vec![condition(
                "Bound",
                false,
                "PoolExhausted",
                format!("{how} {} starting", sb.name_any()),
            )],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn claim(ttl: Option<i64>) -> SandboxClaim {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"templateName": "t", "ttlSeconds": ttl}
        }))
        .unwrap()
    }

    #[test]
    fn a_huge_lifetime_neither_panics_nor_expires() {
        let now = ts(1_767_225_600 + 10);
        let created = Some(ts(1_767_225_600));
        assert_eq!(lifetime(Some(i64::MAX), created, now), Lifetime::Unlimited);
        assert_eq!(lifetime(Some(i64::MIN), created, now), Lifetime::Over);
        assert_eq!(lifetime(Some(5), created, now), Lifetime::Over);
        assert_eq!(
            lifetime(Some(60), created, now),
            Lifetime::Left(Duration::from_secs(50))
        );
        assert_eq!(lifetime(None, created, now), Lifetime::Unlimited);

        let c = claim(Some(i64::MAX));
        let p = plan(&Inputs {
            claim: &c,
            now,
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![],
            recently_bound: false,
            remembered: None,
            template_exists: true,
        });
        assert_eq!(p.step, Step::Bind);
        assert_eq!(p.requeue, None);
        // A year-long claim is looked at again within the hour, not in a year.
        let c = claim(Some(crate::contract::MAX_CLAIM_TTL_SECONDS));
        let p = plan(&Inputs {
            claim: &c,
            now,
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![],
            recently_bound: false,
            remembered: None,
            template_exists: true,
        });
        assert_eq!(p.requeue, Some(MAX_REQUEUE));
    }

    #[test]
    fn an_expired_claim_is_deleted_before_anything_else() {
        let c = claim(Some(1));
        let p = plan(&Inputs {
            claim: &c,
            now: ts(1_767_225_600 + 5),
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![],
            recently_bound: false,
            remembered: None,
            template_exists: true,
        });
        assert_eq!(p.step, Step::Expire { ttl: 1 });
    }

    #[test]
    fn a_missing_template_is_announced_once() {
        let mut c = claim(None);
        let now = ts(1_767_225_600);
        let first = plan(&Inputs {
            claim: &c,
            now,
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![],
            recently_bound: false,
            remembered: None,
            template_exists: false,
        });
        let Step::WaitForTemplate { status, announce } = first.step else {
            panic!("{first:?}");
        };
        assert!(announce);
        assert_eq!(status.phase, Some(ClaimPhase::Pending));
        c.status = Some(status);
        let again = plan(&Inputs {
            claim: &c,
            now,
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![],
            recently_bound: false,
            remembered: None,
            template_exists: false,
        });
        assert!(matches!(
            again.step,
            Step::WaitForTemplate {
                announce: false,
                ..
            }
        ));
    }

    fn sandbox(name: &str) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sandbox.gke.io/v1", "kind": "Sandbox",
            "metadata": {"name": name, "namespace": "ns", "labels": {label::CLAIM: "c"}},
            "spec": {"templateName": "t"}
        }))
        .unwrap()
    }

    fn holding(c: &mut SandboxClaim, name: &str) {
        c.status = Some(SandboxClaimStatus {
            sandbox: Some(name.into()),
            phase: Some(ClaimPhase::Bound),
            ..Default::default()
        });
    }

    #[test]
    fn the_claims_own_status_decides_which_sandbox_it_holds() {
        let now = ts(1_767_225_600);
        let (a, b) = (sandbox("a"), sandbox("b"));
        let mut c = claim(None);
        holding(&mut c, "b");
        let inputs = |named, labelled, recently_bound| Inputs {
            claim: &c,
            now,
            since_seen: Duration::ZERO,
            named,
            labelled,
            recently_bound,
            remembered: None,
            template_exists: true,
        };
        // The cache shows both bound to the claim: the one its status names is kept.
        let p = plan(&inputs(
            Some((&b, None)),
            vec![(&a, None), (&b, None)],
            false,
        ));
        let Step::Report {
            status, surplus, ..
        } = p.step
        else {
            panic!("{p:?}")
        };
        assert_eq!(status.sandbox.as_deref(), Some("b"));
        assert_eq!(surplus, ["a"]);
        // Its sandbox is not in the cache yet: wait, never bind another.
        let p = plan(&inputs(None, vec![(&a, None)], true));
        assert_eq!(p.step, Step::AwaitCache);
        // Not in the cache long after: it is gone, the claim failed.
        let p = plan(&inputs(None, vec![], false));
        let Step::Lost { status } = p.step else {
            panic!("{p:?}")
        };
        assert_eq!(status.phase, Some(ClaimPhase::Failed));
    }

    #[test]
    fn a_view_older_than_this_reconcilers_own_bind_waits() {
        let c = claim(None);
        let p = plan(&Inputs {
            claim: &c,
            now: ts(1_767_225_600),
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![],
            recently_bound: false,
            remembered: Some("a".into()),
            template_exists: true,
        });
        assert_eq!(p.step, Step::AwaitCache, "never a second bind");
    }

    #[test]
    fn a_bound_sandbox_whose_status_write_was_lost_is_adopted() {
        let (a, b) = (sandbox("a"), sandbox("b"));
        let c = claim(None);
        let p = plan(&Inputs {
            claim: &c,
            now: ts(1_767_225_600),
            since_seen: Duration::ZERO,
            named: None,
            labelled: vec![(&a, None), (&b, None)],
            recently_bound: false,
            remembered: None,
            template_exists: true,
        });
        let Step::Report {
            status, surplus, ..
        } = p.step
        else {
            panic!("{p:?}")
        };
        assert_eq!(status.sandbox.as_deref(), Some("a"));
        assert_eq!(surplus, ["b"]);
    }

    #[test]
    fn startup_counts_from_first_sight_unless_the_claim_is_older() {
        let created = Some(ts(100));
        // Seen 40 ms ago, created in the same second: 40 ms.
        assert_eq!(startup_ms(created, ts(100), Duration::from_millis(40)), 40);
        // Created a minute before it was seen (a restart): from creation.
        assert_eq!(
            startup_ms(created, ts(160), Duration::from_millis(40)),
            60_000
        );
    }
}
