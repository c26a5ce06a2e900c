//! Mutation: what sandgate supplies to every sandbox pod (DESIGN.md §3). Every step
//! fills only what is unset, so applying it twice changes nothing (reinvocation-safe),
//! and nothing here overrides a value the creator chose: a wrong value is left for
//! validation to deny with a message, never silently rewritten.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Pod, PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::containers::ContainerLike;
use crate::config::Config;
use crate::contract::{kubernetes, label};
use crate::quantity;

/// Everything sandgate fills in on a new sandbox pod.
pub fn pod(pod: &mut Pod, cfg: &Config) {
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels
        .entry(label::SANDBOX.to_string())
        .or_insert_with(|| label::SANDBOX_DEFAULT_VALUE.to_string());

    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec_defaults(spec, cfg);
}

/// The pod-spec part of [`pod`], shared with SandboxTemplates.
pub fn spec_defaults(spec: &mut PodSpec, cfg: &Config) {
    if spec.runtime_class_name.is_none() {
        spec.runtime_class_name = Some(cfg.runtime_class_name.clone());
    }
    if spec.automount_service_account_token.is_none() {
        spec.automount_service_account_token = Some(false);
        // The apiserver's ServiceAccount admission plugin runs before webhooks and has
        // already mounted the token the pod did not opt out of: take it back out.
        strip_injected_token(spec);
    }
    // Decide per-container seccomp before the pod-level default is set, so a pod-level
    // Localhost profile chosen by the creator is inherited rather than overridden.
    let pod_seccomp_set = spec
        .security_context
        .as_ref()
        .is_some_and(|sc| sc.seccomp_profile.is_some());
    let psc = spec
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    if psc.seccomp_profile.is_none() {
        psc.seccomp_profile = Some(runtime_default());
    }
    for c in &mut spec.containers {
        container_security(c, pod_seccomp_set);
        container_resources(c, cfg);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        container_security(c, pod_seccomp_set);
        container_resources(c, cfg);
    }
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        container_security(c, pod_seccomp_set);
    }
}

/// Security defaults for ephemeral containers added by `pods/ephemeralcontainers`.
/// Existing ephemeral containers are immutable, so only those not in `old` are touched.
pub fn new_ephemeral_containers(pod: &mut Pod, old: Option<&Pod>) {
    let existing: BTreeSet<&str> = old
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|list| list.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let pod_seccomp_set = spec
        .security_context
        .as_ref()
        .is_some_and(|sc| sc.seccomp_profile.is_some());
    for c in spec.ephemeral_containers.iter_mut().flatten() {
        if !existing.contains(c.name.as_str()) {
            container_security(c, pod_seccomp_set);
        }
    }
}

/// Removes the service-account token volume the apiserver injected (a projected
/// `kube-api-access-*` volume with a serviceAccountToken source) and its mounts.
/// Volumes the creator wrote are left for validation to judge.
fn strip_injected_token(spec: &mut PodSpec) {
    let injected: BTreeSet<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.name.starts_with(kubernetes::INJECTED_TOKEN_VOLUME_PREFIX)
                && v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.service_account_token.is_some())
                })
        })
        .map(|v| v.name.clone())
        .collect();
    if injected.is_empty() {
        return;
    }
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| !injected.contains(&v.name));
        if volumes.is_empty() {
            spec.volumes = None;
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        if let Some(mounts) = c.volume_mounts.as_mut() {
            mounts.retain(|m| !injected.contains(&m.name));
            if mounts.is_empty() {
                c.volume_mounts = None;
            }
        }
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    }
}

fn container_security(c: &mut dyn ContainerLike, pod_seccomp_set: bool) {
    let sc = c
        .security_context_mut()
        .get_or_insert_with(SecurityContext::default);
    // The apiserver rejects allowPrivilegeEscalation=false beside privileged=true; such a
    // pod is denied by validation, so leave it for that clear message.
    if sc.allow_privilege_escalation.is_none() && sc.privileged != Some(true) {
        sc.allow_privilege_escalation = Some(false);
    }
    let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
    let drop = caps.drop.get_or_insert_with(Vec::new);
    if !drop.iter().any(|d| d == "ALL") {
        drop.push("ALL".to_string());
    }
    if sc.seccomp_profile.is_none() && !pod_seccomp_set {
        sc.seccomp_profile = Some(runtime_default());
    }
}

/// Fills missing requests and limits from the configured defaults, keeping
/// request <= limit so the apiserver accepts the result.
fn container_resources(c: &mut dyn ContainerLike, cfg: &Config) {
    let res = c
        .resources_mut()
        .get_or_insert_with(ResourceRequirements::default);
    for r in &cfg.resources {
        let request = res
            .requests
            .as_ref()
            .and_then(|m| m.get(r.name))
            .map(|q| q.0.clone());
        let limit = res
            .limits
            .as_ref()
            .and_then(|m| m.get(r.name))
            .map(|q| q.0.clone());
        let limit = match limit {
            Some(l) => l,
            None => {
                // A request above the default limit becomes the limit (validation still
                // holds it against the cap).
                let l = match request.as_deref().map(quantity::parse) {
                    Some(Ok(q)) if q > r.default_limit_milli => request.clone().unwrap_or_default(),
                    _ => r.default_limit.clone(),
                };
                res.limits
                    .get_or_insert_with(BTreeMap::new)
                    .insert(r.name.to_string(), Quantity(l.clone()));
                l
            }
        };
        if request.is_none() {
            let q = match quantity::parse(&limit) {
                Ok(l) if l < r.default_request_milli => limit,
                _ => r.default_request.clone(),
            };
            res.requests
                .get_or_insert_with(BTreeMap::new)
                .insert(r.name.to_string(), Quantity(q));
        }
    }
}
