//! Pure pool planning: given a template's size and generation and its unclaimed
//! members, what to create and what to delete, and the status that reports the pool.
//! The template controller only executes plans.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::status::{condition, merge_conditions};
use crate::contract::label;
use crate::crd::SandboxTemplateStatus;

/// One unclaimed pool member as the reconciler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Template generation the member was built from.
    pub generation: Option<i64>,
    pub ready: bool,
    /// The scheduler cannot place its pod (its message): reported, never churned.
    pub unschedulable: Option<String>,
    /// Time since the member was created.
    pub age: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: usize,
    pub delete: Vec<String>,
    /// Members replaced because their pod never became ready.
    pub replaced_stuck: usize,
}

/// `size`: wanted warm members; `generation`: the template's current generation;
/// `in_flight`: creations made but not yet seen; `ready_grace`: how long a scheduled
/// member may take to become ready before it is replaced.
pub fn plan(
    size: usize,
    generation: Option<i64>,
    members: &[Member],
    in_flight: usize,
    ready_grace: Duration,
) -> Plan {
    let outdated = |m: &Member| generation.is_some() && m.generation != generation;
    let mut out = Plan::default();
    let mut rest: Vec<&Member> = Vec::new();
    for m in members {
        let stuck = !m.ready && m.unschedulable.is_none() && m.age > ready_grace;
        if stuck {
            out.replaced_stuck += 1;
            out.delete.push(m.name.clone());
        } else if outdated(m) && !m.ready {
            out.delete.push(m.name.clone());
        } else {
            rest.push(m);
        }
    }
    // Rolling update with a surge of one: while outdated ready members remain, keep one
    // extra up-to-date member, and retire an outdated one once the surge member is ready.
    let outdated_ready: Vec<&&Member> = rest.iter().filter(|m| outdated(m)).collect();
    let desired = size + usize::from(!outdated_ready.is_empty() && size > 0);
    let have = rest.len() + in_flight;
    if have > desired {
        let mut order: Vec<&&Member> = rest.iter().collect();
        // Outdated first, then not ready, then the youngest.
        order.sort_by_key(|m| (!outdated(m), m.ready, m.age));
        let excess = (have - desired).min(rest.len());
        out.delete
            .extend(order.iter().take(excess).map(|m| m.name.clone()));
    } else {
        out.create = desired - have;
        let ready = rest.iter().filter(|m| m.ready).count();
        if let Some(old) = outdated_ready.first()
            && ready > size
        {
            out.delete.push(old.name.clone());
        }
    }
    out
}

/// A template's pool as its status and events report it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolReport {
    pub status: SandboxTemplateStatus,
    pub ready: usize,
    pub pending: usize,
    /// Members whose pod the scheduler cannot place.
    pub unschedulable: Vec<String>,
    /// The Unschedulable condition is new: tell the user.
    pub announce_unschedulable: bool,
    /// What the scheduler says about them.
    pub because: Option<String>,
}

/// The status of a pool of `size` with these unclaimed `members` and `claimed` bound
/// sandboxes, keeping the transition times of unchanged conditions from `old`.
pub fn report(
    size: usize,
    generation: Option<i64>,
    members: &[Member],
    claimed: usize,
    old: &SandboxTemplateStatus,
) -> PoolReport {
    let ready = members.iter().filter(|m| m.ready).count();
    let unschedulable: Vec<String> = members
        .iter()
        .filter(|m| m.unschedulable.is_some())
        .map(|m| m.name.clone())
        .collect();
    // The scheduler's words for the first of them (usually the same for all).
    let because = members.iter().find_map(|m| m.unschedulable.clone());
    let pending = members.len() - ready;
    let mut conditions: Vec<Condition> = vec![condition(
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
                "{} pool pod(s) cannot be scheduled: {} ({})",
                unschedulable.len(),
                unschedulable.join(", "),
                because.as_deref().unwrap_or_default()
            ),
        ));
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let announce_unschedulable =
        !unschedulable.is_empty() && !old.conditions.iter().any(|c| c.type_ == "Unschedulable");
    PoolReport {
        because,
        status: SandboxTemplateStatus {
            observed_generation: generation,
            ready: count(ready),
            pending: count(pending),
            claimed: count(claimed),
            conditions: merge_conditions(&old.conditions, conditions),
        },
        ready,
        pending,
        unschedulable,
        announce_unschedulable,
    }
}

/// The event text for pool pods that cannot be scheduled.
pub fn unschedulable_note(names: &[String], because: Option<&str>, runtime_class: &str) -> String {
    format!(
        "pool pods cannot be scheduled ({}): {}; the pool needs room on nodes labelled {}={runtime_class}",
        names.join(", "),
        because.unwrap_or("no reason given"),
        label::RUNTIME_NODE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(120);

    fn m(name: &str, generation: i64, ready: bool) -> Member {
        Member {
            name: name.into(),
            generation: Some(generation),
            ready,
            unschedulable: None,
            age: Duration::from_secs(10),
        }
    }

    #[test]
    fn fills_an_empty_pool_and_counts_creations_in_flight() {
        assert_eq!(plan(5, Some(1), &[], 0, GRACE).create, 5);
        assert_eq!(plan(5, Some(1), &[m("a", 1, true)], 2, GRACE).create, 2);
        assert_eq!(
            plan(5, Some(1), &[], 5, GRACE),
            Plan::default(),
            "no duplicates while creations are unseen"
        );
    }

    #[test]
    fn scales_down_unready_first() {
        let members = [
            m("ready-1", 1, true),
            m("pending", 1, false),
            m("ready-2", 1, true),
        ];
        let p = plan(2, Some(1), &members, 0, GRACE);
        assert_eq!(p.delete, vec!["pending"]);
        assert_eq!(p.create, 0);
        assert_eq!(plan(0, Some(1), &members, 0, GRACE).delete.len(), 3);
    }

    #[test]
    fn replaces_stuck_members_without_growing_past_the_size() {
        let mut stuck = m("stuck", 1, false);
        stuck.age = Duration::from_secs(600);
        let p = plan(2, Some(1), &[stuck.clone(), m("ok", 1, true)], 0, GRACE);
        assert_eq!(p.delete, vec!["stuck"]);
        assert_eq!(p.create, 1, "one replacement, total stays at 2");
        assert_eq!(p.replaced_stuck, 1);

        let mut unschedulable = stuck;
        unschedulable.unschedulable = Some("0/1 nodes are available: 1 Insufficient cpu.".into());
        let members = [unschedulable, m("ok", 1, true)];
        let p = plan(2, Some(1), &members, 0, GRACE);
        assert!(
            p.delete.is_empty() && p.create == 0,
            "unschedulable pods are not churned: {p:?}"
        );
        // The user is told why, in the scheduler's words.
        let r = report(2, Some(1), &members, 0, &SandboxTemplateStatus::default());
        assert!(r.announce_unschedulable);
        let c = r
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Unschedulable");
        assert!(
            c.is_some_and(|c| c.message.contains("stuck") && c.message.contains("Insufficient cpu")),
            "{:?}",
            r.status.conditions
        );
        let note = unschedulable_note(&r.unschedulable, r.because.as_deref(), "gvisor");
        assert!(note.contains("Insufficient cpu"), "{note}");
    }

    #[test]
    fn rolls_outdated_members_one_at_a_time() {
        // Template moved to generation 2; three ready members of generation 1.
        let old = [m("o1", 1, true), m("o2", 1, true), m("o3", 1, true)];
        let p = plan(3, Some(2), &old, 0, GRACE);
        assert_eq!(
            (p.create, p.delete.len()),
            (1, 0),
            "surge one new member first"
        );
        let mut with_new = old.to_vec();
        with_new.push(m("n1", 2, false));
        let p = plan(3, Some(2), &with_new, 0, GRACE);
        assert_eq!(
            (p.create, p.delete.len()),
            (0, 0),
            "wait for it to be ready"
        );
        with_new[3].ready = true;
        let p = plan(3, Some(2), &with_new, 0, GRACE);
        assert_eq!(p.delete.len(), 1, "then retire one outdated member");
        assert!(p.delete[0].starts_with('o'));
        // Outdated members that are not ready go at once.
        let p = plan(3, Some(2), &[m("o1", 1, false)], 0, GRACE);
        assert_eq!(p.delete, vec!["o1"]);
        assert_eq!(p.create, 3);
    }
}
