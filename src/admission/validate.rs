//! Validation: the rules every sandbox pod must satisfy (DESIGN.md §3). Each rule
//! reports the field that breaks it; a pod is judged on every container list
//! (containers, init containers including sidecars, ephemeral containers).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, LifecycleHandler, Pod, PodSpec, Probe, SELinuxOptions, SeccompProfile,
    WindowsSecurityContextOptions,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::containers::{self, ContainerLike, ListKind};
use super::{Rule, Violation};
use crate::config::Config;
use crate::contract::{LABEL_PREFIX, annotation, label};
use crate::quantity::{self, Milli};

/// The only capability the Pod Security "restricted" profile lets a container add.
const ALLOWED_ADDED_CAPABILITIES: [&str; 1] = ["NET_BIND_SERVICE"];

/// Sysctls the Pod Security "baseline" profile considers safe (namespaced, isolated).
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types a container may ask for (Pod Security "baseline").
const ALLOWED_SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The volume sources Pod Security "restricted" allows. Every other one is refused,
/// including types this build does not know: `gitRepo` (CVE-2024-10220), `nfs`,
/// `iscsi`, `rbd`, `cephfs`, `glusterfs` and the like are mounted by the node, outside
/// the pod's sandbox and its egress policy. (`hostPath` has a rule of its own.)
const ALLOWED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Volume types outside [`ALLOWED_VOLUME_TYPES`], judged on the object as written (a
/// type the typed model does not know would otherwise vanish in deserialisation).
/// `volumes` is the raw `spec.volumes` list, `prefix` the path of the spec.
pub fn volume_types(volumes: Option<&serde_json::Value>, prefix: &str, out: &mut Vec<Violation>) {
    let Some(list) = volumes.and_then(serde_json::Value::as_array) else {
        return;
    };
    for (i, v) in list.iter().enumerate() {
        let Some(fields) = v.as_object() else {
            continue;
        };
        let name = fields
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        for kind in fields.keys() {
            if kind == "name" || kind == "hostPath" || ALLOWED_VOLUME_TYPES.contains(&kind.as_str())
            {
                continue;
            }
            out.push(Violation::new(
                Rule::VolumeTypes,
                format!("{prefix}.volumes[{i}].{kind}"),
                format!(
                    "volume {name:?} is a {kind} volume; sandbox pods may only use {}",
                    ALLOWED_VOLUME_TYPES.join(", ")
                ),
            ));
        }
    }
}

/// Every Secret that reaches the pod's containers: secret volumes, projected secret
/// sources, `env[].valueFrom.secretKeyRef` and `envFrom[].secretRef`, with the field
/// that names it. Sandboxed code is untrusted: whatever it can read, it can send.
pub fn secret_refs(spec: &PodSpec, prefix: &str) -> Vec<super::ObjectRef> {
    let mut out = Vec::new();
    let mut add = |name: &str, field: String| {
        if !name.is_empty() {
            out.push(super::ObjectRef {
                name: name.to_string(),
                field,
            });
        }
    };
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            add(name, format!("{prefix}.volumes[{i}].secret.secretName"));
        }
        for (j, src) in v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .enumerate()
        {
            if let Some(s) = src.secret.as_ref() {
                add(
                    &s.name,
                    format!("{prefix}.volumes[{i}].projected.sources[{j}].secret.name"),
                );
            }
        }
    }
    for (list, i, c) in containers::all(spec) {
        let p = format!("{prefix}.{}[{i}]", list.field());
        for (j, e) in c.env().iter().enumerate() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                add(&r.name, format!("{p}.env[{j}].valueFrom.secretKeyRef.name"));
            }
        }
        for (j, e) in c.env_from().iter().enumerate() {
            if let Some(r) = e.secret_ref.as_ref() {
                add(&r.name, format!("{p}.envFrom[{j}].secretRef.name"));
            }
        }
    }
    out
}

/// What kind of write is being judged.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A new pod (or the pod a template would produce).
    Create,
    /// An update of the pod itself or of a subresource, with the stored pod.
    Update { old: &'a Pod, sub_resource: &'a str },
}

/// Every rule, on the pod as it would be stored.
pub fn pod(pod: &Pod, cfg: &Config, change: Change<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    match pod.spec.as_ref() {
        Some(spec) => spec_rules(spec, "spec", cfg, &mut out),
        None => out.push(Violation::new(
            Rule::MalformedObject,
            "spec",
            "a pod must have a spec",
        )),
    }
    annotation_rules(pod, &mut out);
    match change {
        Change::Create => {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                && !node.is_empty()
            {
                out.push(Violation::new(
                        Rule::NodeName,
                        "spec.nodeName",
                        format!("is set to {node:?}; sandbox pods are placed by the scheduler, not by their creator"),
                    ));
            }
        }
        Change::Update { old, sub_resource } => {
            label_rules(old, pod, cfg.upstream, &mut out);
            if sub_resource == "resize" {
                resize_rules(old, pod, &mut out);
            }
        }
    }
    out
}

/// The pod-spec rules, with `prefix` the path of the spec (`spec`, or
/// `spec.template.spec` inside a SandboxTemplate).
pub fn spec_rules(spec: &PodSpec, prefix: &str, cfg: &Config, out: &mut Vec<Violation>) {
    match spec.runtime_class_name.as_deref() {
        Some(rc) if rc == cfg.runtime_class_name => {}
        Some(rc) => out.push(Violation::new(
            Rule::RuntimeClass,
            format!("{prefix}.runtimeClassName"),
            format!(
                "is {rc:?}; sandbox pods must run under {:?}",
                cfg.runtime_class_name
            ),
        )),
        None => out.push(Violation::new(
            Rule::RuntimeClass,
            format!("{prefix}.runtimeClassName"),
            format!(
                "is unset; sandbox pods must run under {:?}",
                cfg.runtime_class_name
            ),
        )),
    }
    for (field, on) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if on == Some(true) {
            out.push(Violation::new(
                Rule::HostNamespaces,
                format!("{prefix}.{field}"),
                "is true; sandbox pods may not share the node's namespaces",
            ));
        }
    }
    if spec.automount_service_account_token != Some(false) {
        let state = if spec.automount_service_account_token == Some(true) {
            "true"
        } else {
            "unset"
        };
        out.push(Violation::new(
            Rule::ServiceAccountToken,
            format!("{prefix}.automountServiceAccountToken"),
            format!(
                "is {state}; sandbox pods must not get a service-account token (set it to false)"
            ),
        ));
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(csi) = v.csi.as_ref()
            && !cfg.inline_csi_drivers.contains(&csi.driver)
        {
            out.push(Violation::new(
                Rule::InlineCsi,
                format!("{prefix}.volumes[{i}].csi.driver"),
                format!(
                    "volume {:?} is mounted inline by CSI driver {:?}, which the node runs outside the sandbox (an NFS or SMB driver reaches any server it is given); only the drivers in inlineCSIDrivers may be used",
                    v.name, csi.driver
                ),
            ));
        }
        if v.host_path.is_some() {
            out.push(Violation::new(
                Rule::HostPath,
                format!("{prefix}.volumes[{i}].hostPath"),
                format!(
                    "volume {:?} mounts a path of the node; hostPath volumes are not allowed",
                    v.name
                ),
            ));
        }
        // A pod certificate is the same identity as a key pair the kubelet has signed for
        // the pod's service account: a credential too. (A clusterTrustBundle source only
        // brings public trust anchors and stays allowed.)
        let sources = v.projected.iter().flat_map(|p| p.sources.iter().flatten());
        for (j, src) in sources.enumerate() {
            let field = format!("{prefix}.volumes[{i}].projected.sources[{j}]");
            if src.service_account_token.is_some() {
                out.push(Violation::new(
                    Rule::ServiceAccountToken,
                    format!("{field}.serviceAccountToken"),
                    format!(
                        "volume {:?} projects a service-account token; sandbox pods must not hold one",
                        v.name
                    ),
                ));
            }
            if let Some(cert) = src.pod_certificate.as_ref() {
                out.push(Violation::new(
                    Rule::ServiceAccountToken,
                    format!("{field}.podCertificate"),
                    format!(
                        "volume {:?} projects a pod certificate signed by {:?}, a credential of the pod's service account; sandbox pods must not hold one",
                        v.name, cert.signer_name
                    ),
                ));
            }
        }
    }
    if let Some(psc) = spec.security_context.as_ref() {
        let p = format!("{prefix}.securityContext");
        for (i, s) in psc.sysctls.iter().flatten().enumerate() {
            if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
                out.push(Violation::new(
                    Rule::Sysctls,
                    format!("{p}.sysctls[{i}]"),
                    format!("sysctl {:?} is not in the safe set", s.name),
                ));
            }
        }
        seccomp_rule(psc.seccomp_profile.as_ref(), &p, out);
        apparmor_rule(psc.app_armor_profile.as_ref(), &p, out);
        selinux_rule(psc.se_linux_options.as_ref(), &p, out);
        host_process_rule(psc.windows_options.as_ref(), &p, out);
    }
    for (list, i, c) in containers::all(spec) {
        container_rules(
            c,
            list,
            &format!("{prefix}.{}[{i}]", list.field()),
            cfg,
            out,
        );
    }
    pod_total_rules(spec, prefix, cfg, out);
    scheduling_rules(spec, prefix, out);
}

/// What a pod asks of the scheduler and the node beyond its sandbox: a `system-*`
/// priority class (reserved for the cluster's own components, which it would preempt)
/// and devices through dynamic resource allocation (host hardware, outside gVisor).
fn scheduling_rules(spec: &PodSpec, prefix: &str, out: &mut Vec<Violation>) {
    if let Some(class) = spec.priority_class_name.as_deref()
        && class.starts_with("system-")
    {
        out.push(Violation::new(
            Rule::PriorityClass,
            format!("{prefix}.priorityClassName"),
            format!(
                "is {class:?}; system-* priority classes belong to the cluster's own components, which a sandbox would preempt"
            ),
        ));
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        out.push(Violation::new(
            Rule::DeviceClaims,
            format!("{prefix}.resourceClaims"),
            "claims devices through dynamic resource allocation; a device is host hardware, outside the sandbox",
        ));
    }
    for (list, i, c) in containers::all(spec) {
        if c.resources()
            .and_then(|r| r.claims.as_ref())
            .is_some_and(|c| !c.is_empty())
        {
            out.push(Violation::new(
                Rule::DeviceClaims,
                format!("{prefix}.{}[{i}].resources.claims", list.field()),
                format!(
                    "container {:?} uses a device claim; a device is host hardware, outside the sandbox",
                    c.name()
                ),
            ));
        }
    }
}

fn container_rules(
    c: &dyn ContainerLike,
    list: ListKind,
    p: &str,
    cfg: &Config,
    out: &mut Vec<Violation>,
) {
    let name = c.name();
    if let Some(sc) = c.security_context() {
        let s = format!("{p}.securityContext");
        if sc.privileged == Some(true) {
            out.push(Violation::new(
                Rule::Privileged,
                format!("{s}.privileged"),
                format!("container {name:?} is privileged; privileged containers are not allowed"),
            ));
        }
        if sc.allow_privilege_escalation == Some(true) {
            out.push(Violation::new(
                Rule::PrivilegeEscalation,
                format!("{s}.allowPrivilegeEscalation"),
                format!("is true in container {name:?}; privilege escalation is not allowed"),
            ));
        }
        for (i, cap) in sc
            .capabilities
            .iter()
            .flat_map(|c| c.add.iter().flatten())
            .enumerate()
        {
            if !ALLOWED_ADDED_CAPABILITIES.contains(&cap.as_str()) {
                out.push(Violation::new(
                    Rule::Capabilities,
                    format!("{s}.capabilities.add[{i}]"),
                    format!("container {name:?} adds {cap:?}; only NET_BIND_SERVICE may be added"),
                ));
            }
        }
        if let Some(pm) = sc.proc_mount.as_deref()
            && pm != "Default"
        {
            out.push(Violation::new(
                Rule::ProcMount,
                format!("{s}.procMount"),
                format!("is {pm:?} in container {name:?}; only Default is allowed"),
            ));
        }
        seccomp_rule(sc.seccomp_profile.as_ref(), &s, out);
        apparmor_rule(sc.app_armor_profile.as_ref(), &s, out);
        selinux_rule(sc.se_linux_options.as_ref(), &s, out);
        host_process_rule(sc.windows_options.as_ref(), &s, out);
    }
    for (i, port) in c.ports().iter().enumerate() {
        if let Some(hp) = port.host_port.filter(|hp| *hp != 0) {
            out.push(Violation::new(
                Rule::HostPort,
                format!("{p}.ports[{i}].hostPort"),
                format!("container {name:?} binds node port {hp}; hostPort is not allowed"),
            ));
        }
    }
    for (field, probe) in c.probes() {
        if let Some(probe) = probe {
            probe_host_rule(probe, &format!("{p}.{field}"), out);
        }
    }
    if let Some(lc) = c.lifecycle() {
        for (field, handler) in [
            ("postStart", lc.post_start.as_ref()),
            ("preStop", lc.pre_stop.as_ref()),
        ] {
            if let Some(h) = handler {
                handler_host_rule(h, &format!("{p}.lifecycle.{field}"), out);
            }
        }
    }
    // The API forbids resources on ephemeral containers; they share the pod's sandbox.
    if list != ListKind::EphemeralContainers {
        limit_rules(c, p, cfg, out);
    }
}

fn limit_rules(c: &dyn ContainerLike, p: &str, cfg: &Config, out: &mut Vec<Violation>) {
    let limits = c.resources().and_then(|r| r.limits.as_ref());
    for r in &cfg.resources {
        let field = format!("{p}.resources.limits.{}", r.name);
        match limits.and_then(|l| l.get(r.name)) {
            None => out.push(Violation::new(
                Rule::ResourceLimits,
                field,
                format!("container {:?} has no {} limit", c.name(), r.name),
            )),
            Some(q) => match quantity::parse(&q.0) {
                Err(e) => out.push(Violation::new(Rule::ResourceLimits, field, e.to_string())),
                // Zero (or less) is no limit at all: the container would run unbounded.
                Ok(v) if v < r.min_limit_milli => out.push(Violation::new(
                    Rule::ResourceLimits,
                    field,
                    format!(
                        "container {:?} has a {} limit of {}; a limit must be at least {}",
                        c.name(),
                        r.name,
                        q.0,
                        r.min_limit
                    ),
                )),
                Ok(v) if v > r.max_limit_milli => out.push(Violation::new(
                    Rule::ResourceCaps,
                    field,
                    format!(
                        "container {:?} asks for {} {}, above the maximum {}",
                        c.name(),
                        q.0,
                        r.name,
                        r.max_limit
                    ),
                )),
                Ok(_) => {}
            },
        }
    }
}

/// The pod's total per resource: every container, init container and sidecar together
/// (counted as if all ran at once, which over-counts plain init containers but never
/// under-counts), plus the pod's overhead, against the configured pod maximum. Limits
/// that are missing or unreadable are the container rule's to report.
fn pod_total_rules(spec: &PodSpec, prefix: &str, cfg: &Config, out: &mut Vec<Violation>) {
    for r in &cfg.resources {
        let parsed = |q: Option<&Quantity>| q.and_then(|q| quantity::parse(&q.0).ok());
        let limits = containers::all(spec)
            .filter(|(list, _, _)| *list != ListKind::EphemeralContainers)
            .filter_map(|(_, _, c)| {
                parsed(
                    c.resources()
                        .and_then(|res| res.limits.as_ref())
                        .and_then(|l| l.get(r.name)),
                )
            });
        let overhead = parsed(spec.overhead.as_ref().and_then(|o| o.get(r.name)));
        let mut over_cap = false;
        // Saturating: a sum too large to hold is above any maximum.
        let total = limits
            .inspect(|v| over_cap |= *v > r.max_limit_milli)
            .chain(overhead)
            .fold(0i128, |sum, v| sum.saturating_add(v.0));
        // A container above its own cap is reported by the container rule already.
        if total > r.max_pod_limit_milli.0 && !over_cap {
            out.push(Violation::new(
                Rule::PodResourceCaps,
                format!("{prefix}.containers[*].resources.limits.{}", r.name),
                format!(
                    "the pod's {} limits add up to {} (containers, init containers and sidecars, plus overhead); a pod may have at most {}",
                    r.name,
                    quantity::show(Milli(total), r.name != "cpu"),
                    r.max_pod_limit
                ),
            ));
        }
    }
}

fn seccomp_rule(profile: Option<&SeccompProfile>, p: &str, out: &mut Vec<Violation>) {
    if profile.is_some_and(|s| s.type_ == "Unconfined") {
        out.push(Violation::new(
            Rule::Seccomp,
            format!("{p}.seccompProfile.type"),
            "is Unconfined; a seccomp profile is required",
        ));
    }
}

fn apparmor_rule(profile: Option<&AppArmorProfile>, p: &str, out: &mut Vec<Violation>) {
    if profile.is_some_and(|a| a.type_ == "Unconfined") {
        out.push(Violation::new(
            Rule::Apparmor,
            format!("{p}.appArmorProfile.type"),
            "is Unconfined; AppArmor may not be disabled",
        ));
    }
}

fn selinux_rule(opts: Option<&SELinuxOptions>, p: &str, out: &mut Vec<Violation>) {
    let Some(o) = opts else { return };
    if let Some(t) = o.type_.as_deref().filter(|t| !t.is_empty())
        && !ALLOWED_SELINUX_TYPES.contains(&t)
    {
        out.push(Violation::new(
            Rule::Selinux,
            format!("{p}.seLinuxOptions.type"),
            format!("SELinux type {t:?} is not allowed"),
        ));
    }
    for (field, v) in [("user", o.user.as_deref()), ("role", o.role.as_deref())] {
        if v.is_some_and(|v| !v.is_empty()) {
            out.push(Violation::new(
                Rule::Selinux,
                format!("{p}.seLinuxOptions.{field}"),
                format!("setting the SELinux {field} is not allowed"),
            ));
        }
    }
}

fn host_process_rule(
    opts: Option<&WindowsSecurityContextOptions>,
    p: &str,
    out: &mut Vec<Violation>,
) {
    if opts.is_some_and(|w| w.host_process == Some(true)) {
        out.push(Violation::new(
            Rule::HostProcess,
            format!("{p}.windowsOptions.hostProcess"),
            "is true; host processes are not allowed",
        ));
    }
}

fn probe_host_rule(probe: &Probe, p: &str, out: &mut Vec<Violation>) {
    let http = probe.http_get.as_ref().and_then(|h| h.host.as_deref());
    let tcp = probe.tcp_socket.as_ref().and_then(|t| t.host.as_deref());
    host_fields(http, tcp, p, out);
}

fn handler_host_rule(h: &LifecycleHandler, p: &str, out: &mut Vec<Violation>) {
    let http = h.http_get.as_ref().and_then(|h| h.host.as_deref());
    let tcp = h.tcp_socket.as_ref().and_then(|t| t.host.as_deref());
    host_fields(http, tcp, p, out);
}

/// A probe or hook with a `host` makes the kubelet connect from the node to any address,
/// a classic way to reach what the sandbox's network policy forbids.
fn host_fields(http: Option<&str>, tcp: Option<&str>, p: &str, out: &mut Vec<Violation>) {
    for (field, host) in [("httpGet.host", http), ("tcpSocket.host", tcp)] {
        if let Some(h) = host.filter(|h| !h.is_empty()) {
            out.push(Violation::new(
                Rule::ProbeHost,
                format!("{p}.{field}"),
                format!("is {h:?}; probes and lifecycle hooks may only target the pod itself"),
            ));
        }
    }
}

fn annotation_rules(pod: &Pod, out: &mut Vec<Violation>) {
    for (k, v) in pod.metadata.annotations.iter().flatten() {
        if k.starts_with(annotation::APPARMOR_PREFIX) && v == "unconfined" {
            out.push(Violation::new(
                Rule::Apparmor,
                format!("metadata.annotations[{k}]"),
                "is unconfined; AppArmor may not be disabled",
            ));
        }
    }
}

/// sandbox.gke.io/* labels are fixed at creation: removing or changing one would take
/// the pod out of its NetworkPolicies, adding a template label would put it under that
/// template's (possibly wider) egress rules.
fn label_rules(old: &Pod, new: &Pod, upstream: bool, out: &mut Vec<Violation>) {
    let empty = BTreeMap::new();
    let old_labels = old.metadata.labels.as_ref().unwrap_or(&empty);
    let new_labels = new.metadata.labels.as_ref().unwrap_or(&empty);
    for key in [label::SANDBOX, label::TEMPLATE] {
        if !old_labels.contains_key(key) && new_labels.contains_key(key) {
            out.push(Violation::new(
                Rule::SandboxLabels,
                format!("metadata.labels[{key}]"),
                "was added; sandbox labels are fixed when the pod is created",
            ));
        }
    }
    // Upstream agent-sandbox's label puts its pods in scope: it is held like ours.
    let held = |k: &str| {
        k.starts_with(LABEL_PREFIX)
            || (upstream && k == crate::contract::upstream::SANDBOX_NAME_HASH)
    };
    for (k, v) in old_labels.iter().filter(|(k, _)| held(k)) {
        match new_labels.get(k) {
            None => out.push(Violation::new(
                Rule::SandboxLabels,
                format!("metadata.labels[{k}]"),
                "was removed; sandbox labels cannot be removed",
            )),
            Some(nv) if nv != v => out.push(Violation::new(
                Rule::SandboxLabels,
                format!("metadata.labels[{k}]"),
                format!("was changed from {v:?} to {nv:?}; sandbox labels cannot be changed"),
            )),
            Some(_) => {}
        }
    }
}

/// Through `pods/resize` limits may go down, never up.
fn resize_rules(old: &Pod, new: &Pod, out: &mut Vec<Violation>) {
    let (Some(old_spec), Some(new_spec)) = (old.spec.as_ref(), new.spec.as_ref()) else {
        return;
    };
    let old_by_name: BTreeMap<&str, &dyn ContainerLike> = containers::all(old_spec)
        .map(|(_, _, c)| (c.name(), c))
        .collect();
    for (list, i, c) in containers::all(new_spec) {
        let Some(prev) = old_by_name.get(c.name()) else {
            continue;
        };
        let old_limits = prev.resources().and_then(|r| r.limits.as_ref());
        let new_limits = c.resources().and_then(|r| r.limits.as_ref());
        for (res, q) in new_limits.into_iter().flatten() {
            let before = old_limits.and_then(|l| l.get(res));
            let raised = match before {
                None => true,
                Some(b) => match (quantity::parse(&b.0), quantity::parse(&q.0)) {
                    (Ok(b), Ok(n)) => n > b,
                    _ => true,
                },
            };
            if raised {
                out.push(Violation::new(
                    Rule::ResizeLimits,
                    format!("spec.{}[{i}].resources.limits.{res}", list.field()),
                    format!(
                        "container {:?} raises its {res} limit from {} to {} through pods/resize; limits may only be lowered",
                        c.name(),
                        before.map(|b| b.0.as_str()).unwrap_or("none"),
                        q.0
                    ),
                ));
            }
        }
    }
}
