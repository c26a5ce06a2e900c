//! Reading pods and writing conditions: the small pure helpers every controller shares.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition with the current time as its transition time.
pub fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        message,
        observed_generation: None,
        reason: reason.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        type_: type_.to_string(),
    }
}

/// Keeps the transition time of a condition whose status did not change.
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(o) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = o.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Pod readiness as the kubelet (or kwok) reports it.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The scheduler reported it cannot place the pod.
pub fn pod_unschedulable(pod: &Pod) -> bool {
    unschedulable_because(pod).is_some()
}

/// Why the scheduler cannot place the pod, in its own words ("0/3 nodes are available:
/// 3 Insufficient cpu."), when it cannot.
pub fn unschedulable_because(pod: &Pod) -> Option<String> {
    let c = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?;
    Some(
        c.message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "the scheduler found no node".to_string()),
    )
}

/// The pod ran to completion or failed: it will not serve again.
pub fn pod_ended(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Failed" || p == "Succeeded")
}

/// The pod's IP, once it has one.
pub fn pod_ip(pod: Option<&Pod>) -> Option<String> {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.pod_ip.clone())
}
