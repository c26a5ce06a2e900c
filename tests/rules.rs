//! Table-driven tests of every built-in rule: each bypass of DESIGN.md §3 is tried as a
//! must-deny case, next to an allowed twin that differs only in the offending field.

mod common;

use common::{compliant_pod, pod, pod_review, request, set, template_review};
use sandgate::admission::{Decision, Rule, Webhook, builtin};
use sandgate::config::Config;
use serde_json::{Value, json};

fn decide(webhook: Webhook, review: &Value) -> Decision {
    builtin(webhook, &request(review), &Config::default())
}

fn create(p: Value) -> Value {
    pod_review("CREATE", p, None, None)
}

/// Applies the decision's patch to the object, as the apiserver would.
fn patched(object: &Value, d: &Decision) -> Value {
    let mut out = object.clone();
    if let Some(p) = &d.patch {
        json_patch::patch(&mut out, &p.0).expect("the patch applies to the object it was made for");
    }
    out
}

fn rules(d: &Decision) -> Vec<&'static str> {
    d.violations.iter().map(|v| v.rule.as_str()).collect()
}

/// One bypass and its allowed twin: the edit that must be denied (a value set at a
/// pointer), the rule that must name it, and the edit that must pass (at the same
/// pointer unless another is given).
struct Case {
    name: &'static str,
    pointer: &'static str,
    bad: Value,
    rule: Rule,
    twin_pointer: &'static str,
    twin: Value,
}

/// The twin edits the same field.
const SAME: &str = "";

fn case(
    name: &'static str,
    pointer: &'static str,
    bad: Value,
    rule: Rule,
    twin_pointer: &'static str,
    twin: Value,
) -> Case {
    let twin_pointer = if twin_pointer.is_empty() {
        pointer
    } else {
        twin_pointer
    };
    Case {
        name,
        pointer,
        bad,
        rule,
        twin_pointer,
        twin,
    }
}

/// A container whose cpu limit is the configured per-container maximum (4).
fn at_cap(name: &str) -> Value {
    json!({"name": name, "image": "python:3.11-slim", "resources": {"limits": {"cpu": "4"}}})
}

#[rustfmt::skip]
fn create_cases() -> Vec<Case> {
    vec![
        case("privileged container", "/spec/containers/0/securityContext/privileged", json!(true), Rule::Privileged, SAME, json!(false)),
        case("privileged sidecar (init container, restartPolicy Always)", "/spec/initContainers", json!([{"name": "side", "image": "busybox", "restartPolicy": "Always", "securityContext": {"privileged": true}}]), Rule::Privileged, SAME, json!([{"name": "side", "image": "busybox", "restartPolicy": "Always"}])),
        case("host network", "/spec/hostNetwork", json!(true), Rule::HostNamespaces, SAME, json!(false)),
        case("host PID", "/spec/hostPID", json!(true), Rule::HostNamespaces, SAME, json!(false)),
        case("host IPC", "/spec/hostIPC", json!(true), Rule::HostNamespaces, SAME, json!(false)),
        case("hostPath volume", "/spec/volumes", json!([{"name": "root", "hostPath": {"path": "/"}}]), Rule::HostPath, SAME, json!([{"name": "root", "emptyDir": {}}])),
        case("gitRepo volume (CVE-2024-10220)", "/spec/volumes", json!([{"name": "src", "gitRepo": {"repository": "https://example.com/x.git"}}]), Rule::VolumeTypes, SAME, json!([{"name": "src", "emptyDir": {}}])),
        case("nfs volume, mounted by the node", "/spec/volumes", json!([{"name": "share", "nfs": {"server": "10.0.0.5", "path": "/"}}]), Rule::VolumeTypes, SAME, json!([{"name": "share", "persistentVolumeClaim": {"claimName": "data"}}])),
        case("iscsi volume", "/spec/volumes", json!([{"name": "disk", "iscsi": {"targetPortal": "10.0.0.6:3260", "iqn": "iqn.2001-04.com.example:storage", "lun": 0}}]), Rule::VolumeTypes, SAME, json!([{"name": "disk", "persistentVolumeClaim": {"claimName": "disk"}}])),
        case("rbd volume", "/spec/volumes", json!([{"name": "rbd", "rbd": {"monitors": ["10.0.0.7:6789"], "image": "img"}}]), Rule::VolumeTypes, SAME, json!([{"name": "rbd", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}])),
        case("cephfs volume", "/spec/volumes", json!([{"name": "fs", "cephfs": {"monitors": ["10.0.0.8:6789"]}}]), Rule::VolumeTypes, SAME, json!([{"name": "fs", "configMap": {"name": "settings"}}])),
        case("glusterfs volume", "/spec/volumes", json!([{"name": "gl", "glusterfs": {"endpoints": "gl", "path": "vol"}}]), Rule::VolumeTypes, SAME, json!([{"name": "gl", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}])),
        case("flexVolume (a node-side driver)", "/spec/volumes", json!([{"name": "flex", "flexVolume": {"driver": "example/fancy"}}]), Rule::VolumeTypes, SAME, json!([{"name": "flex", "secret": {"secretName": "app-config"}}])),
        case("a volume type this build does not know", "/spec/volumes", json!([{"name": "new", "futureVolume": {"server": "10.0.0.9"}}]), Rule::VolumeTypes, SAME, json!([{"name": "new", "projected": {"sources": [{"configMap": {"name": "settings"}}]}}])),
        case("awsElasticBlockStore volume", "/spec/volumes", json!([{"name": "ebs", "awsElasticBlockStore": {"volumeID": "vol-1"}}]), Rule::VolumeTypes, SAME, json!([{"name": "ebs", "emptyDir": {"medium": "Memory"}}])),
        case("hostPort", "/spec/containers/0/ports", json!([{"containerPort": 8080, "hostPort": 8080}]), Rule::HostPort, SAME, json!([{"containerPort": 8080}])),
        case("added capability SYS_ADMIN", "/spec/containers/0/securityContext/capabilities/add", json!(["SYS_ADMIN"]), Rule::Capabilities, SAME, json!(["NET_BIND_SERVICE"])),
        case("added capability spelled CAP_NET_RAW", "/spec/containers/0/securityContext/capabilities/add", json!(["CAP_NET_RAW"]), Rule::Capabilities, SAME, json!([])),
        case("added capability in lower case", "/spec/containers/0/securityContext/capabilities/add", json!(["sys_ptrace"]), Rule::Capabilities, "/spec/containers/0/securityContext/capabilities/drop", json!(["ALL"])),
        case("unsafe sysctl", "/spec/securityContext/sysctls", json!([{"name": "kernel.msgmax", "value": "65536"}]), Rule::Sysctls, SAME, json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}])),
        case("procMount Unmasked", "/spec/containers/0/securityContext/procMount", json!("Unmasked"), Rule::ProcMount, SAME, json!("Default")),
        case("pod seccomp Unconfined", "/spec/securityContext/seccompProfile", json!({"type": "Unconfined"}), Rule::Seccomp, SAME, json!({"type": "RuntimeDefault"})),
        case("container seccomp Unconfined", "/spec/containers/0/securityContext/seccompProfile", json!({"type": "Unconfined"}), Rule::Seccomp, SAME, json!({"type": "Localhost", "localhostProfile": "sandbox.json"})),
        case("AppArmor Unconfined", "/spec/containers/0/securityContext/appArmorProfile", json!({"type": "Unconfined"}), Rule::Apparmor, SAME, json!({"type": "RuntimeDefault"})),
        case("AppArmor unconfined by annotation", "/metadata/annotations", json!({"container.apparmor.security.beta.kubernetes.io/sandbox": "unconfined"}), Rule::Apparmor, SAME, json!({"container.apparmor.security.beta.kubernetes.io/sandbox": "runtime/default"})),
        case("SELinux spc_t", "/spec/securityContext/seLinuxOptions", json!({"type": "spc_t"}), Rule::Selinux, SAME, json!({"type": "container_t"})),
        case("Windows host process", "/spec/containers/0/securityContext/windowsOptions", json!({"hostProcess": true}), Rule::HostProcess, SAME, json!({"hostProcess": false})),
        case("probe httpGet.host to the metadata server", "/spec/containers/0/livenessProbe", json!({"httpGet": {"host": "169.254.169.254", "path": "/", "port": 80}}), Rule::ProbeHost, SAME, json!({"httpGet": {"path": "/", "port": 80}})),
        case("readiness tcpSocket.host", "/spec/containers/0/readinessProbe", json!({"tcpSocket": {"host": "10.0.0.1", "port": 22}}), Rule::ProbeHost, SAME, json!({"tcpSocket": {"port": 22}})),
        case("lifecycle postStart httpGet.host", "/spec/containers/0/lifecycle", json!({"postStart": {"httpGet": {"host": "attacker.com", "port": 80}}}), Rule::ProbeHost, SAME, json!({"postStart": {"exec": {"command": ["true"]}}})),
        case("runtime class runc", "/spec/runtimeClassName", json!("runc"), Rule::RuntimeClass, SAME, json!("gvisor")),
        case("limit above the cap", "/spec/containers/0/resources/limits/cpu", json!("64"), Rule::ResourceCaps, SAME, json!("2")),
        case("memory limit above the cap in another unit", "/spec/containers/0/resources/limits/memory", json!("9000M"), Rule::ResourceCaps, SAME, json!("8Gi")),
        case("cpu limit of zero (the container would run unbounded)", "/spec/containers/0/resources/limits/cpu", json!("0"), Rule::ResourceLimits, SAME, json!("10m")),
        case("memory limit of zero", "/spec/containers/0/resources/limits/memory", json!("0"), Rule::ResourceLimits, SAME, json!("16Mi")),
        case("memory limit of zero in another unit", "/spec/containers/0/resources/limits/memory", json!("0Gi"), Rule::ResourceLimits, SAME, json!("1Gi")),
        case("ephemeral-storage limit of zero", "/spec/containers/0/resources/limits/ephemeral-storage", json!("0"), Rule::ResourceLimits, SAME, json!("1Mi")),
        case("negative cpu limit", "/spec/containers/0/resources/limits/cpu", json!("-1"), Rule::ResourceLimits, SAME, json!("1")),
        case("cpu limit below the floor", "/spec/containers/0/resources/limits/cpu", json!("9m"), Rule::ResourceLimits, SAME, json!("10m")),
        case("memory limit below the floor, in bytes", "/spec/containers/0/resources/limits/memory", json!("1000"), Rule::ResourceLimits, SAME, json!("16777216")),
        case("init container with a zero cpu limit", "/spec/initContainers", json!([{"name": "init", "image": "busybox", "resources": {"limits": {"cpu": "0", "memory": "64Mi", "ephemeral-storage": "1Gi"}}}]), Rule::ResourceLimits, SAME, json!([{"name": "init", "image": "busybox", "resources": {"limits": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "1Gi"}}}])),
        case("sidecar with a zero memory limit", "/spec/initContainers", json!([{"name": "side", "image": "busybox", "restartPolicy": "Always", "resources": {"limits": {"cpu": "100m", "memory": "0", "ephemeral-storage": "1Gi"}}}]), Rule::ResourceLimits, SAME, json!([{"name": "side", "image": "busybox", "restartPolicy": "Always", "resources": {"limits": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "1Gi"}}}])),
        case("three containers each at the cpu cap (12 > 8 for the pod)", "/spec/containers", json!([at_cap("a"), at_cap("b"), at_cap("c")]), Rule::PodResourceCaps, SAME, json!([at_cap("a"), at_cap("b")])),
        case("sidecars and init containers count toward the pod's total", "/spec/initContainers", json!([at_cap("init"), {"restartPolicy": "Always", "name": "side", "image": "busybox", "resources": {"limits": {"cpu": "4"}}}]), Rule::PodResourceCaps, SAME, json!([at_cap("init")])),
        case("overhead counts toward the pod's total", "/spec/overhead", json!({"cpu": "7500m"}), Rule::PodResourceCaps, SAME, json!({"cpu": "250m"})),
        case("inline CSI volume of a driver not allowed (NFS from the node)", "/spec/volumes", json!([{"name": "share", "csi": {"driver": "nfs.csi.k8s.io", "volumeAttributes": {"server": "10.0.0.5", "share": "/"}}}]), Rule::InlineCsi, SAME, json!([{"name": "share", "emptyDir": {}}])),
        case("cluster-critical priority class", "/spec/priorityClassName", json!("system-cluster-critical"), Rule::PriorityClass, SAME, json!("sandbox-low")),
        case("node-critical priority class", "/spec/priorityClassName", json!("system-node-critical"), Rule::PriorityClass, SAME, json!("batch")),
        case("device claimed through DRA", "/spec/resourceClaims", json!([{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]), Rule::DeviceClaims, SAME, json!([])),
        case("container using a device claim", "/spec/containers/0/resources/claims", json!([{"name": "gpu"}]), Rule::DeviceClaims, SAME, json!([])),
        case("request above the cap becomes a limit above the cap", "/spec/containers/0/resources/requests/cpu", json!("8"), Rule::ResourceCaps, SAME, json!("2")),
        case("nodeName set by the creator", "/spec/nodeName", json!("node-1"), Rule::NodeName, "/spec/nodeSelector", json!({"sandbox.gke.io/runtime": "gvisor"})),
        case("service-account token automount", "/spec/automountServiceAccountToken", json!(true), Rule::ServiceAccountToken, SAME, json!(false)),
        case("projected service-account token", "/spec/volumes", json!([{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]), Rule::ServiceAccountToken, SAME, json!([{"name": "tok", "projected": {"sources": [{"configMap": {"name": "settings"}}]}}])),
        case("projected pod certificate (the service account's identity as a key pair)", "/spec/volumes", json!([{"name": "id", "projected": {"sources": [{"podCertificate": {"signerName": "example.com/identity", "keyType": "ED25519", "credentialBundlePath": "credentials.pem"}}]}}]), Rule::ServiceAccountToken, SAME, json!([{"name": "id", "projected": {"sources": [{"clusterTrustBundle": {"signerName": "example.com/identity", "labelSelector": {}, "path": "ca.pem"}}]}}])),
        case("privilege escalation allowed", "/spec/containers/0/securityContext/allowPrivilegeEscalation", json!(true), Rule::PrivilegeEscalation, SAME, json!(false)),
        case("second container privileged", "/spec/containers/1", json!({"name": "helper", "image": "busybox", "securityContext": {"privileged": true}}), Rule::Privileged, SAME, json!({"name": "helper", "image": "busybox"})),
    ]
}

#[test]
fn every_bypass_is_denied_and_its_twin_allowed() {
    // Cases that only exist because of what mutation computes.
    const MUTATION_ONLY: &[&str] = &["request above the cap becomes a limit above the cap"];
    for Case {
        name,
        pointer,
        bad,
        rule,
        twin_pointer,
        twin,
    } in create_cases()
    {
        let rule = rule.as_str();
        // /mutate sees the pod as written; /validate sees a stored, otherwise compliant
        // pod, so the named rule is the one that fires.
        let mut as_written = pod();
        set(&mut as_written, pointer, bad.clone());
        let mut as_stored = compliant_pod();
        set(&mut as_stored, pointer, bad);
        for (webhook, bad) in [
            (Webhook::Mutate, as_written),
            (Webhook::Validate, as_stored),
        ] {
            if webhook == Webhook::Validate && MUTATION_ONLY.contains(&name) {
                continue;
            }
            let d = decide(webhook, &create(bad.clone()));
            assert!(!d.allowed, "{name}: {webhook:?} must deny");
            assert!(
                rules(&d).contains(&rule),
                "{name}: {webhook:?} must name rule {rule}, got {:?}",
                rules(&d)
            );
            assert!(d.patch.is_none(), "{name}: a denial carries no patch");
            assert!(d.effects.is_empty(), "{name}: a denial has no side effect");
        }

        let mut good = pod();
        set(&mut good, twin_pointer, twin);
        let d = decide(Webhook::Mutate, &create(good.clone()));
        assert!(
            d.allowed,
            "{name}: twin must be allowed, got {}",
            d.message()
        );
        // What the webhook admits after mutation must pass validation as stored.
        let stored = patched(&good, &d);
        let v = decide(Webhook::Validate, &create(stored));
        assert!(
            v.allowed,
            "{name}: twin after mutation must validate, got {}",
            v.message()
        );
    }
}

#[test]
fn mutation_supplies_runtime_limits_security_context_and_labels() {
    let original = pod();
    let d = decide(Webhook::Mutate, &create(original.clone()));
    assert!(d.allowed, "{}", d.message());
    let p = patched(&original, &d);
    assert_eq!(p["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(p["spec"]["automountServiceAccountToken"], false);
    let c = &p["spec"]["containers"][0];
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"})
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"})
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        p["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        p["metadata"]["labels"]["sandbox.gke.io/sandbox"], "agent-run",
        "existing value kept"
    );
    assert_eq!(
        d.effects,
        vec![sandgate::admission::Effect::EnsureDefaultDeny {
            namespace: "agents".into()
        }]
    );

    // A pod selected only by its namespace gets the label the NetworkPolicies select.
    let mut unlabelled = pod();
    unlabelled["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let d = decide(Webhook::Mutate, &create(unlabelled.clone()));
    assert_eq!(
        patched(&unlabelled, &d)["metadata"]["labels"]["sandbox.gke.io/sandbox"],
        "true"
    );
}

#[test]
fn mutation_is_idempotent_and_a_compliant_pod_gets_no_patch() {
    let once = {
        let p = pod();
        let d = decide(Webhook::Mutate, &create(p.clone()));
        patched(&p, &d)
    };
    let again = decide(Webhook::Mutate, &create(once));
    assert!(again.allowed);
    assert!(
        again.patch.is_none(),
        "second pass must change nothing: {:?}",
        again.patch
    );

    let d = decide(Webhook::Mutate, &create(compliant_pod()));
    assert!(d.allowed && d.patch.is_none(), "{:?}", d.patch);
}

#[test]
fn mutation_never_overrides_a_creator_choice() {
    let mut p = pod();
    set(
        &mut p,
        "/spec/securityContext/seccompProfile",
        json!({"type": "Localhost", "localhostProfile": "p.json"}),
    );
    set(
        &mut p,
        "/spec/containers/0/securityContext/capabilities/drop",
        json!(["NET_RAW"]),
    );
    let d = decide(Webhook::Mutate, &create(p.clone()));
    assert!(d.allowed, "{}", d.message());
    let out = patched(&p, &d);
    assert_eq!(
        out["spec"]["securityContext"]["seccompProfile"]["type"],
        "Localhost"
    );
    assert!(
        out["spec"]["containers"][0]["securityContext"]
            .get("seccompProfile")
            .is_none(),
        "inherits the pod's Localhost profile"
    );
    assert_eq!(
        out["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["NET_RAW", "ALL"])
    );
}

#[test]
fn defaults_respect_request_and_limit_order() {
    let mut p = pod();
    set(
        &mut p,
        "/spec/containers/0/resources/limits/cpu",
        json!("250m"),
    );
    set(
        &mut p,
        "/spec/containers/0/resources/requests/memory",
        json!("2Gi"),
    );
    let d = decide(Webhook::Mutate, &create(p.clone()));
    assert!(d.allowed, "{}", d.message());
    let r = &patched(&p, &d)["spec"]["containers"][0]["resources"];
    assert_eq!(
        r["requests"]["cpu"], "250m",
        "request never above the limit"
    );
    assert_eq!(
        r["limits"]["memory"], "2Gi",
        "limit never below the request"
    );
}

#[test]
fn validation_alone_refuses_what_mutation_would_have_supplied() {
    // Another mutating webhook running after sandgate could strip fields: /validate
    // judges the stored object on its own.
    let d = decide(Webhook::Validate, &create(pod()));
    assert!(!d.allowed);
    let r = rules(&d);
    for rule in ["runtime-class", "resource-limits", "service-account-token"] {
        assert!(r.contains(&rule), "missing {rule} in {r:?}");
    }
}

#[test]
fn both_reasons_are_named_for_a_privileged_hostpath_pod() {
    let mut p = pod();
    set(
        &mut p,
        "/spec/containers/0/securityContext/privileged",
        json!(true),
    );
    set(
        &mut p,
        "/spec/volumes",
        json!([{"name": "host", "hostPath": {"path": "/var/run"}}]),
    );
    let d = decide(Webhook::Mutate, &create(p));
    let msg = d.message();
    assert!(
        msg.contains("spec.containers[0].securityContext.privileged"),
        "{msg}"
    );
    assert!(msg.contains("spec.volumes[0].hostPath"), "{msg}");
    assert!(
        msg.contains("[privileged]") && msg.contains("[host-path]"),
        "{msg}"
    );
}

fn stored_pod() -> Value {
    let p = pod();
    let d = decide(Webhook::Mutate, &create(p.clone()));
    patched(&p, &d)
}

#[test]
fn label_removal_or_change_on_update_is_denied() {
    let old = stored_pod();
    let mut removed = old.clone();
    removed["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("sandbox.gke.io/sandbox");
    let mut changed = old.clone();
    changed["metadata"]["labels"]["sandbox.gke.io/sandbox"] = json!("other");
    for (name, new) in [("removed", removed), ("changed", changed)] {
        for webhook in [Webhook::Mutate, Webhook::Validate] {
            let d = decide(
                webhook,
                &pod_review("UPDATE", new.clone(), Some(old.clone()), None),
            );
            assert!(!d.allowed, "label {name} must be denied by {webhook:?}");
            assert_eq!(rules(&d), vec!["sandbox-labels"]);
        }
    }
    // Twin: adding an unrelated label is fine, and UPDATE is never mutated.
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"]["team"] = json!("a");
    let d = decide(
        Webhook::Mutate,
        &pod_review("UPDATE", relabelled, Some(old), None),
    );
    assert!(d.allowed && d.patch.is_none(), "{}", d.message());
}

/// A review as upstream's controller sends it.
fn as_controller(mut review: Value) -> Value {
    review["request"]["userInfo"] = json!({"username": CONTROLLER, "groups": ["system:serviceaccounts", "system:authenticated"]});
    review
}

const CONTROLLER: &str = "system:serviceaccount:agent-sandbox-system:agent-sandbox-controller";

/// Upstream agent-sandbox's label puts its pods in scope, so it is held like
/// sandgate's (even its controller may not change it); with upstream support off it is
/// an ordinary label.
#[test]
fn the_upstream_sandbox_label_cannot_be_removed_or_changed() {
    const HASH: &str = "agents.x-k8s.io/sandbox-name-hash";
    let mut p = pod();
    p["metadata"]["labels"] = json!({HASH: "5f1c2a"});
    let d = decide(Webhook::Mutate, &as_controller(create(p.clone())));
    assert!(d.allowed, "{}", d.message());
    let old = patched(&p, &d);
    let mut removed = old.clone();
    removed["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(HASH);
    let mut changed = old.clone();
    changed["metadata"]["labels"][HASH] = json!("other");
    for (name, new) in [("removed", &removed), ("changed", &changed)] {
        let d = decide(
            Webhook::Validate,
            &as_controller(pod_review("UPDATE", new.clone(), Some(old.clone()), None)),
        );
        assert!(!d.allowed, "upstream label {name} must be denied");
        assert_eq!(rules(&d), vec!["sandbox-labels"]);
    }
    // Twin: another agents.x-k8s.io label is upstream's business, not a scope label:
    // its controller may add it...
    let mut other = old.clone();
    other["metadata"]["labels"]["agents.x-k8s.io/launch-type"] = json!("warm");
    let d = decide(
        Webhook::Validate,
        &as_controller(pod_review("UPDATE", other.clone(), Some(old.clone()), None)),
    );
    assert!(d.allowed, "{}", d.message());
    // ...and nobody else may (upstream adopts pods by its labels).
    let d = decide(
        Webhook::Validate,
        &pod_review("UPDATE", other, Some(old.clone()), None),
    );
    assert_eq!(rules(&d), vec!["upstream-metadata"]);
    let d = decide(Webhook::Mutate, &create(p.clone()));
    assert_eq!(rules(&d), vec!["upstream-metadata"], "{}", d.message());
    // Support off: the label is nobody's scope.
    let file: sandgate::config::ConfigFile =
        serde_yaml::from_str("upstreamAgentSandbox: {enabled: false}").unwrap();
    let off = Config::build(file, Default::default()).unwrap();
    assert!(!off.upstream);
    for (webhook, review) in [
        (
            Webhook::Validate,
            pod_review("UPDATE", removed, Some(old), None),
        ),
        (Webhook::Mutate, create(p)),
    ] {
        let d = builtin(webhook, &request(&review), &off);
        assert!(d.allowed, "{}", d.message());
    }
}

#[test]
fn resize_may_lower_limits_but_never_raise_them() {
    let old = stored_pod();
    let mut raised = old.clone();
    raised["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("2");
    let d = decide(
        Webhook::Validate,
        &pod_review("UPDATE", raised, Some(old.clone()), Some("resize")),
    );
    assert!(!d.allowed);
    assert_eq!(rules(&d), vec!["resize-limits"]);

    let mut lowered = old.clone();
    lowered["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("750m");
    let d = decide(
        Webhook::Validate,
        &pod_review("UPDATE", lowered, Some(old.clone()), Some("resize")),
    );
    assert!(d.allowed, "{}", d.message());

    // Lowering is allowed down to the floor, never to zero (no limit at all).
    for (cpu, allowed) in [("0", false), ("-1", false), ("9m", false), ("10m", true)] {
        let mut lowered = old.clone();
        lowered["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!(cpu);
        lowered["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!(cpu);
        let d = decide(
            Webhook::Validate,
            &pod_review("UPDATE", lowered, Some(old.clone()), Some("resize")),
        );
        assert_eq!(d.allowed, allowed, "resize to {cpu}: {}", d.message());
        if !allowed {
            assert_eq!(rules(&d), vec!["resource-limits"], "resize to {cpu}");
        }
    }
}

#[test]
fn ephemeral_containers_are_hardened_or_denied() {
    let old = stored_pod();
    // kubectl debug --profile=sysadmin: a privileged ephemeral container.
    let mut sysadmin = old.clone();
    sysadmin["spec"]["ephemeralContainers"] = json!([{
        "name": "debugger", "image": "busybox", "targetContainerName": "sandbox",
        "securityContext": {"privileged": true}
    }]);
    for webhook in [Webhook::Mutate, Webhook::Validate] {
        let d = decide(
            webhook,
            &pod_review(
                "UPDATE",
                sysadmin.clone(),
                Some(old.clone()),
                Some("ephemeralcontainers"),
            ),
        );
        assert!(!d.allowed, "{webhook:?}");
        assert!(d.violations.iter().any(|v| v.rule.as_str() == "privileged"
            && v.field.starts_with("spec.ephemeralContainers[0]")));
    }
    // With added capabilities too.
    let mut caps = old.clone();
    caps["spec"]["ephemeralContainers"] = json!([{"name": "d", "image": "busybox", "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}]);
    let d = decide(
        Webhook::Mutate,
        &pod_review(
            "UPDATE",
            caps,
            Some(old.clone()),
            Some("ephemeralcontainers"),
        ),
    );
    assert_eq!(rules(&d), vec!["capabilities"]);

    // Twin: a plain `kubectl debug` container is allowed and gets the security defaults.
    let mut plain = old.clone();
    plain["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "busybox", "targetContainerName": "sandbox"}]);
    let d = decide(
        Webhook::Mutate,
        &pod_review(
            "UPDATE",
            plain.clone(),
            Some(old.clone()),
            Some("ephemeralcontainers"),
        ),
    );
    assert!(d.allowed, "{}", d.message());
    let out = patched(&plain, &d);
    let sc = &out["spec"]["ephemeralContainers"][0]["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        out["spec"]["ephemeralContainers"][0]
            .get("resources")
            .is_none(),
        "the API forbids resources here"
    );

    // A second debug session leaves the first (immutable) container untouched.
    let mut second = out.clone();
    second["spec"]["ephemeralContainers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "d2", "image": "busybox"}));
    let d = decide(
        Webhook::Mutate,
        &pod_review(
            "UPDATE",
            second.clone(),
            Some(out.clone()),
            Some("ephemeralcontainers"),
        ),
    );
    assert!(d.allowed);
    for op in &d.patch.expect("patch for d2").0 {
        let path = serde_json::to_value(op).unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            path.starts_with("/spec/ephemeralContainers/1"),
            "touches only the new container: {path}"
        );
    }
}

#[test]
fn mirror_pods_are_judged_but_never_mutated() {
    let mut p = compliant_pod();
    set(
        &mut p,
        "/metadata/annotations",
        json!({"kubernetes.io/config.mirror": "abc"}),
    );
    set(
        &mut p,
        "/spec/containers/0/securityContext/capabilities/drop",
        json!([]),
    );
    let d = decide(Webhook::Mutate, &create(p.clone()));
    assert!(d.allowed && d.patch.is_none(), "no patch on a mirror pod");
    set(&mut p, "/spec/hostNetwork", json!(true));
    assert!(
        !decide(Webhook::Mutate, &create(p)).allowed,
        "a mirror pod is still validated"
    );
}

#[test]
fn out_of_scope_requests_pass_untouched() {
    let mut p = pod();
    set(&mut p, "/metadata/namespace", json!("kube-system"));
    set(
        &mut p,
        "/spec/containers/0/securityContext/privileged",
        json!(true),
    );
    let d = decide(Webhook::Mutate, &create(p.clone()));
    assert!(d.allowed && d.patch.is_none(), "excluded namespace");

    let del = pod_review("DELETE", Value::Null, Some(pod()), None);
    assert!(
        decide(Webhook::Validate, &del).allowed,
        "DELETE is not judged"
    );

    let mut other = create(pod());
    other["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    assert!(
        decide(Webhook::Validate, &other).allowed,
        "resources sandgate does not govern"
    );
}

#[test]
fn an_unreadable_pod_is_denied() {
    let mut p = pod();
    p["spec"] = json!("not a spec");
    let d = decide(Webhook::Mutate, &create(p));
    assert!(!d.allowed);
    assert_eq!(rules(&d), vec!["malformed-object"]);

    let missing = pod_review("CREATE", Value::Null, None, None);
    assert!(!decide(Webhook::Validate, &missing).allowed);
    let update_without_old = pod_review("UPDATE", pod(), None, None);
    assert!(!decide(Webhook::Validate, &update_without_old).allowed);
}

#[test]
fn templates_are_judged_as_the_pods_they_produce() {
    let article = common::article_template();
    let d = decide(Webhook::Validate, &template_review(article.clone()));
    assert!(
        d.allowed,
        "the article's template must pass: {}",
        d.message()
    );

    // Mutation supplies what the template lacks: no limits at all is fine.
    let mut bare = article.clone();
    bare["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("resources");
    assert!(decide(Webhook::Validate, &template_review(bare)).allowed);

    let cases: &[(&str, &str, Value, &str)] = &[
        (
            "privileged",
            "/spec/template/spec/containers/0/securityContext/privileged",
            json!(true),
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "host-path",
            "/spec/template/spec/volumes",
            json!([{"name": "h", "hostPath": {"path": "/"}}]),
            "spec.template.spec.volumes[0].hostPath",
        ),
        (
            "volume-types",
            "/spec/template/spec/volumes",
            json!([{"name": "src", "gitRepo": {"repository": "https://example.com/x.git"}}]),
            "spec.template.spec.volumes[0].gitRepo",
        ),
        (
            "runtime-class",
            "/spec/runtimeClassName",
            json!("runc"),
            "spec.runtimeClassName",
        ),
        (
            "runtime-class",
            "/spec/template/spec/runtimeClassName",
            json!("runc"),
            "spec.template.spec.runtimeClassName",
        ),
        (
            "resource-caps",
            "/spec/template/spec/containers/0/resources/limits/memory",
            json!("64Gi"),
            "spec.template.spec.containers[0].resources.limits.memory",
        ),
        (
            "host-namespaces",
            "/spec/template/spec/hostNetwork",
            json!(true),
            "spec.template.spec.hostNetwork",
        ),
        (
            "service-account-token",
            "/spec/template/spec/automountServiceAccountToken",
            json!(true),
            "spec.template.spec.automountServiceAccountToken",
        ),
        (
            "node-name",
            "/spec/template/spec/nodeName",
            json!("n1"),
            "spec.template.spec.nodeName",
        ),
    ];
    for (rule, ptr, value, field) in cases {
        let mut t = article.clone();
        set(&mut t, ptr, value.clone());
        let d = decide(Webhook::Validate, &template_review(t));
        assert!(!d.allowed, "{rule} must deny the template");
        assert_eq!(
            d.violations.len(),
            1,
            "{rule}: exactly one reason, got {:?}",
            d.violations
        );
        assert_eq!(d.violations[0].rule.as_str(), *rule);
        assert_eq!(d.violations[0].field, *field);
    }

    let mut broken = article;
    broken["spec"]["template"] = json!(["not", "a", "template"]);
    let d = decide(Webhook::Validate, &template_review(broken));
    assert_eq!(rules(&d), vec!["malformed-object"]);
}

#[test]
fn configured_runtime_class_and_caps_are_honoured() {
    let cfg = Config::build(
        Default::default(),
        sandgate::config::Overrides {
            runtime_class_name: Some("kata".into()),
            max_limits: vec![("cpu".into(), "1".into())],
            ..Default::default()
        },
    )
    .unwrap();
    let p = pod();
    let d = builtin(Webhook::Mutate, &request(&create(p.clone())), &cfg);
    assert_eq!(patched(&p, &d)["spec"]["runtimeClassName"], "kata");
    let mut big = pod();
    set(
        &mut big,
        "/spec/containers/0/resources/limits/cpu",
        json!("2"),
    );
    let d = builtin(Webhook::Mutate, &request(&create(big)), &cfg);
    assert_eq!(rules(&d), vec!["resource-caps"]);
    let mut gv = pod();
    set(&mut gv, "/spec/runtimeClassName", json!("gvisor"));
    assert_eq!(
        rules(&builtin(Webhook::Mutate, &request(&create(gv)), &cfg)),
        vec!["runtime-class"]
    );
}

#[test]
fn only_sandgate_may_create_template_pods() {
    let mut p = pod();
    set(
        &mut p,
        "/metadata/labels/sandbox.gke.io~1template",
        json!("wide-egress"),
    );
    // A user labelling their own pod to borrow another template's egress rules.
    for (webhook, base) in [
        (Webhook::Mutate, pod()),
        (Webhook::Validate, compliant_pod()),
    ] {
        let mut p = base;
        set(
            &mut p,
            "/metadata/labels/sandbox.gke.io~1template",
            json!("wide-egress"),
        );
        let d = decide(webhook, &create(p));
        assert_eq!(rules(&d), vec!["template-label"], "{webhook:?}");
    }
    // The same pod from sandgate's reconciler, or a configured group, is fine.
    let mut review = create(p.clone());
    review["request"]["userInfo"] = json!({"username": sandgate::config::SANDGATE_SERVICE_ACCOUNT});
    assert!(decide(Webhook::Mutate, &review).allowed);
    let file: sandgate::config::ConfigFile =
        serde_yaml::from_str("templateLabelCreators: [sandbox-operators]").unwrap();
    let cfg = Config::build(file, Default::default()).unwrap();
    let mut review = create(p);
    review["request"]["userInfo"] =
        json!({"username": "bob", "groups": ["system:authenticated", "sandbox-operators"]});
    assert!(builtin(Webhook::Mutate, &request(&review), &cfg).allowed);

    // Nor can the label be added later.
    let old = stored_pod();
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"]["sandbox.gke.io/template"] = json!("wide-egress");
    let d = decide(
        Webhook::Validate,
        &pod_review("UPDATE", relabelled, Some(old), None),
    );
    assert_eq!(rules(&d), vec!["sandbox-labels"]);
}

#[test]
fn the_token_the_apiserver_injected_is_taken_back_out() {
    // What the ServiceAccount admission plugin does to the article's pod before any
    // webhook runs.
    let mut p = pod();
    set(&mut p, "/spec/serviceAccountName", json!("default"));
    set(
        &mut p,
        "/spec/volumes",
        json!([
            {"name": "data", "emptyDir": {}},
            {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}
        ]),
    );
    set(
        &mut p,
        "/spec/containers/0/volumeMounts",
        json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
        ]),
    );
    let d = decide(Webhook::Mutate, &create(p.clone()));
    assert!(d.allowed, "{}", d.message());
    let out = patched(&p, &d);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "emptyDir": {}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data"}])
    );
    assert_eq!(out["spec"]["automountServiceAccountToken"], false);
    assert!(decide(Webhook::Validate, &create(out)).allowed);

    // A token volume the creator asked for by name is not silently dropped: denied.
    let mut own = pod();
    set(
        &mut own,
        "/spec/volumes",
        json!([{"name": "my-token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]),
    );
    assert_eq!(
        rules(&decide(Webhook::Mutate, &create(own))),
        vec!["service-account-token"]
    );
    // Nor is an injected-looking one when the pod explicitly asked for automount.
    let mut explicit = p;
    set(
        &mut explicit,
        "/spec/automountServiceAccountToken",
        json!(true),
    );
    assert!(!decide(Webhook::Mutate, &create(explicit)).allowed);
}

fn netpol_review(op: &str, object: Value, old: Value, user: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "np-1",
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
        "name": "sandgate-default-deny", "namespace": "agents", "operation": op,
        "userInfo": user, "object": object, "oldObject": old
    }})
}

#[test]
fn only_sandgate_touches_its_network_policies() {
    let ours = serde_json::to_value(sandgate::netpol::default_deny("agents")).unwrap();
    let alice = json!({"username": "alice", "groups": ["system:authenticated"]});
    let d = decide(
        Webhook::Validate,
        &netpol_review("DELETE", Value::Null, ours.clone(), alice.clone()),
    );
    assert_eq!(
        rules(&d),
        vec!["managed-network-policy"],
        "a namespace user may not delete the default deny"
    );
    let mut unlabelled = ours.clone();
    unlabelled["metadata"]["labels"] = json!({});
    unlabelled["spec"]["egress"] = json!([{}]);
    let d = decide(
        Webhook::Validate,
        &netpol_review("UPDATE", unlabelled, ours.clone(), alice.clone()),
    );
    assert!(!d.allowed, "nor open it up by editing it");

    for who in [
        json!({"username": sandgate::config::SANDGATE_SERVICE_ACCOUNT}),
        json!({"username": "admin", "groups": ["system:masters"]}),
        json!({"username": "system:serviceaccount:kube-system:generic-garbage-collector"}),
    ] {
        assert!(
            decide(
                Webhook::Validate,
                &netpol_review("DELETE", Value::Null, ours.clone(), who.clone())
            )
            .allowed,
            "{who}"
        );
    }
    let theirs = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "team-policy", "namespace": "agents"}, "spec": {"podSelector": {}}});
    assert!(
        decide(
            Webhook::Validate,
            &netpol_review("DELETE", Value::Null, theirs, alice)
        )
        .allowed,
        "other policies are not sandgate's business"
    );
}

fn workload_review(kind: &str, group: &str, resource: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c9a2b6e-3333-4c2a-9f0e-000000000003",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": "agents",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false
        }
    })
}

#[test]
fn workloads_are_refused_at_create_as_the_pods_they_would_make() {
    let policies = sandgate::policy::PolicySet::empty();
    let judge = |review: &Value| {
        sandgate::admission::admit(
            Webhook::Validate,
            &request(review),
            &Config::default(),
            &policies,
        )
    };
    let pod_spec = |privileged: bool| json!({"containers": [{"name": "c", "image": "python:3.11-slim", "securityContext": {"privileged": privileged}}]});
    let deployment = |privileged: bool| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "runner", "namespace": "agents"},
               "spec": {"selector": {"matchLabels": {"app": "r"}},
                        "template": {"metadata": {"labels": {"app": "r", "sandbox.gke.io/sandbox": "r"}}, "spec": pod_spec(privileged)}}})
    };
    let d = judge(&workload_review(
        "Deployment",
        "apps",
        "deployments",
        deployment(true),
    ));
    assert!(
        !d.allowed,
        "a privileged template is refused with the Deployment"
    );
    assert_eq!(rules(&d), ["privileged"]);
    assert_eq!(
        d.violations[0].field,
        "spec.template.spec.containers[0].securityContext.privileged"
    );
    assert!(
        d.message().contains("deployment agents/runner"),
        "{}",
        d.message()
    );
    let twin = judge(&workload_review(
        "Deployment",
        "apps",
        "deployments",
        deployment(false),
    ));
    assert!(twin.allowed, "{}", twin.message());
    assert!(twin.patch.is_none(), "workloads are never mutated");
    assert!(twin.effects.is_empty());

    // CronJobs keep their pod template deeper; the field says where.
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "agents"},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {"sandbox.gke.io/sandbox": "n"}},
            "spec": {"restartPolicy": "Never", "hostNetwork": true, "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    let d = judge(&workload_review("CronJob", "batch", "cronjobs", cron));
    assert_eq!(rules(&d), ["host-namespaces"]);
    assert_eq!(
        d.violations[0].field,
        "spec.jobTemplate.spec.template.spec.hostNetwork"
    );

    // A template label set by anyone but sandgate is refused at the workload too.
    let mut borrowed = deployment(false);
    borrowed["spec"]["template"]["metadata"]["labels"]["sandbox.gke.io/template"] = json!("wide");
    let d = judge(&workload_review(
        "Deployment",
        "apps",
        "deployments",
        borrowed,
    ));
    assert_eq!(rules(&d), ["template-label"]);

    // At /mutate workloads pass untouched (they are judged once, at /validate).
    let m = sandgate::admission::admit(
        Webhook::Mutate,
        &request(&workload_review(
            "Deployment",
            "apps",
            "deployments",
            deployment(true),
        )),
        &Config::default(),
        &policies,
    );
    assert!(m.allowed && m.patch.is_none());
}

fn runtime_class_review(op: &str, object: Value, old: Value, user: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0c9a2b6e-4444-4c2a-9f0e-000000000004",
        "kind": {"group": "node.k8s.io", "version": "v1", "kind": "RuntimeClass"},
        "resource": {"group": "node.k8s.io", "version": "v1", "resource": "runtimeclasses"},
        "name": "gvisor", "operation": op, "userInfo": user,
        "object": object, "oldObject": old}})
}

#[test]
fn the_sandbox_runtime_class_keeps_its_handler_and_its_writers() {
    let rc = |name: &str, handler: &str| json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler});
    let admin = json!({"username": "root", "groups": ["system:masters"]});
    let manager = json!({"username": "rc-manager", "groups": ["system:authenticated"]});
    let d = decide(
        Webhook::Validate,
        &runtime_class_review("CREATE", rc("gvisor", "runc"), Value::Null, admin.clone()),
    );
    assert_eq!(rules(&d), ["runtime-class-handler"], "{}", d.message());
    let ok = decide(
        Webhook::Validate,
        &runtime_class_review("CREATE", rc("gvisor", "runsc"), Value::Null, admin.clone()),
    );
    assert!(ok.allowed, "{}", ok.message());
    let d = decide(
        Webhook::Validate,
        &runtime_class_review(
            "DELETE",
            Value::Null,
            rc("gvisor", "runsc"),
            manager.clone(),
        ),
    );
    assert_eq!(rules(&d), ["managed-runtime-class"]);
    // Every other class is left to RBAC.
    let other = decide(
        Webhook::Validate,
        &runtime_class_review("CREATE", rc("kata", "kata"), Value::Null, manager),
    );
    assert!(other.allowed);
}

#[test]
fn token_secrets_are_refused_where_they_are_judged_and_other_secrets_pass() {
    let secret = |kind: &str| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "0c9a2b6e-5555-4c2a-9f0e-000000000005",
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "bot-token", "namespace": "agents", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Secret", "type": kind,
                       "metadata": {"name": "bot-token", "namespace": "agents",
                                    "annotations": {"kubernetes.io/service-account.name": "bot"}}}}})
    };
    // Refused where the namespace hosts sandboxes, which only the cluster knows (an
    // enforced namespace always does): the decision asks.
    let d = decide(
        Webhook::Validate,
        &secret("kubernetes.io/service-account-token"),
    );
    match d.lookups.as_slice() {
        [
            sandgate::admission::Lookup::SandboxNamespace {
                namespace,
                violation,
            },
        ] => {
            assert_eq!(namespace, "agents");
            assert_eq!(violation.rule.as_str(), "service-account-token");
        }
        other => panic!("expected one namespace lookup, got {other:?}"),
    }
    let other = decide(Webhook::Validate, &secret("Opaque"));
    assert!(other.allowed && other.lookups.is_empty());
}

#[test]
fn template_egress_is_judged_as_the_set_of_addresses_it_reaches() {
    let with_egress = |egress: Value| {
        let mut t = common::article_template();
        t["spec"]["networkPolicy"]["egress"] = egress;
        decide(Webhook::Validate, &template_review(t))
    };
    #[rustfmt::skip]
    let cases: &[(&str, Value, Value)] = &[
        ("the IPv6 internet split in two",
         json!([{"to": [{"ipBlock": {"cidr": "::/1"}}, {"ipBlock": {"cidr": "8000::/1", "except": ["fd00::/8"]}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}])),
        ("the metadata service as IPv4-mapped IPv6",
         json!([{"to": [{"ipBlock": {"cidr": "::ffff:169.254.0.0/112"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}}]}])),
        ("GCE's IPv6 metadata service",
         json!([{"to": [{"ipBlock": {"cidr": "fd20:ce::/32"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "fd20:cf::/32"}}]}])),
        ("AWS's IPv6 metadata service",
         json!([{"to": [{"ipBlock": {"cidr": "fd00:ec2::254/128"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "fd00:ec3::/32"}}]}])),
        ("the EKS pod-identity agent",
         json!([{"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "169.255.170.23/32"}}]}])),
        ("Azure's WireServer inside a wide range",
         json!([{"to": [{"ipBlock": {"cidr": "168.0.0.0/8"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "168.0.0.0/8", "except": ["168.63.129.16/32"]}}]}])),
        ("Alibaba's metadata service in the shared address space",
         json!([{"to": [{"ipBlock": {"cidr": "100.64.0.0/10"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "100.64.0.0/16"}}]}])),
        ("the metadata service through NAT64",
         json!([{"to": [{"ipBlock": {"cidr": "64:ff9b::a9fe:a9fe/128"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "64:ff9b::a00:0/104"}}]}])),
        ("IPv6 link-local",
         json!([{"to": [{"ipBlock": {"cidr": "fe80::/64"}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "fec0::/64"}}]}])),
        ("the internet with only the link-local range excepted",
         json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}]),
         json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"]}}]}])),
        ("no `to`: every address on port 80",
         json!([{"ports": [{"port": 80}]}]),
         json!([{"ports": [{"port": 53, "protocol": "UDP"}]}])),
        ("every pod of every namespace",
         json!([{"to": [{"namespaceSelector": {}}]}]),
         json!([{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tools"}}}]}])),
    ];
    for (name, bad, twin) in cases {
        let d = with_egress(bad.clone());
        assert!(!d.allowed, "{name}: must be refused");
        assert!(
            rules(&d).contains(&"egress-reach"),
            "{name}: {}",
            d.message()
        );
        let ok = with_egress(twin.clone());
        assert!(ok.allowed, "{name}: twin must pass: {}", ok.message());
    }
    // Every namespace but only labelled pods: allowed, with a warning.
    let d = with_egress(
        json!([{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "proxy"}}}]}]),
    );
    assert!(d.allowed, "{}", d.message());
    assert!(
        d.warnings.iter().any(|w| w.contains("every namespace")),
        "{:?}",
        d.warnings
    );
}

/// The egress analysis is bounded: the fuzz corpus's hostile template (thousands of
/// exceptions in one block, hundreds of blocks) is judged exactly, and past the bound a
/// template is refused with the count instead of being judged.
#[test]
fn templates_with_thousands_of_cidrs_are_judged_and_past_the_bound_refused() {
    let hostile: Value = serde_json::from_str(include_str!(
        "fixtures/adversarial-egress-template-review.json"
    ))
    .expect("the fixture is JSON");
    let d = decide(Webhook::Validate, &hostile);
    assert!(
        !rules(&d).contains(&"egress-reach"),
        "judged, and nothing it reaches is forbidden: {}",
        d.message()
    );
    let mut over = hostile.clone();
    let bound = sandgate::admission::egress::MAX_CIDRS;
    over["request"]["object"]["spec"]["networkPolicy"]["egress"][0]["to"][0]["ipBlock"]["except"] = json!(
        (0..bound)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect::<Vec<_>>()
    );
    let d = decide(Webhook::Validate, &over);
    assert!(!d.allowed);
    assert!(
        d.violations
            .iter()
            .any(|v| v.rule == Rule::EgressReach && v.message.contains("at most")),
        "{}",
        d.message()
    );
}

/// Inline CSI volumes are mounted by the node's driver: only the drivers the operator
/// names (`inlineCSIDrivers`) may be used, every other one is refused.
#[test]
fn inline_csi_volumes_only_of_the_configured_drivers() {
    let file: sandgate::config::ConfigFile =
        serde_yaml::from_str("inlineCSIDrivers: [scratch.csi.example.com]").expect("yaml");
    let cfg = Config::build(file, Default::default()).expect("valid");
    let with_driver = |driver: &str| {
        let mut p = pod();
        set(
            &mut p,
            "/spec/volumes",
            json!([{"name": "v", "csi": {"driver": driver}}]),
        );
        create(p)
    };
    let d = builtin(
        Webhook::Mutate,
        &request(&with_driver("scratch.csi.example.com")),
        &cfg,
    );
    assert!(d.allowed, "{}", d.message());
    let d = builtin(
        Webhook::Mutate,
        &request(&with_driver("smb.csi.k8s.io")),
        &cfg,
    );
    assert_eq!(rules(&d), vec!["inline-csi"]);
    // The default names none.
    let d = decide(Webhook::Mutate, &with_driver("scratch.csi.example.com"));
    assert_eq!(rules(&d), vec!["inline-csi"]);
}

/// Template ingress is judged as a set, on sandgate's templates and on agent-sandbox's
/// alike: every source however it is written is refused, narrow sources pass.
#[test]
fn template_ingress_is_judged_as_a_set_for_both_kinds_of_template() {
    let sandgate = |ingress: Value| {
        let mut t = common::article_template();
        t["spec"]["networkPolicy"]["ingress"] = ingress;
        decide(Webhook::Validate, &template_review(t))
    };
    let upstream = |ingress: Value| {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "0c9a2b6e-5555-4c2a-9f0e-000000000009",
            "kind": {"group": "extensions.agents.x-k8s.io", "version": "v1beta1", "kind": "SandboxTemplate"},
            "resource": {"group": "extensions.agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxtemplates"},
            "name": "python", "namespace": "agents", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                       "metadata": {"name": "python", "namespace": "agents"},
                       "spec": {"podTemplate": {"spec": {"runtimeClassName": "gvisor",
                                    "containers": [{"name": "c", "image": "python:3.11-slim",
                                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}},
                                "networkPolicy": {
                                    "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}],
                                    "ingress": ingress}}}}});
        let cfg = Config {
            upstream: true,
            ..Config::default()
        };
        // Upstream kinds are routed by the whole pipeline (no policies here).
        sandgate::admission::admit(
            Webhook::Validate,
            &request(&review),
            &cfg,
            &sandgate::policy::PolicySet::empty(),
        )
    };
    #[rustfmt::skip]
    let cases: &[(&str, Value, Value)] = &[
        ("no `from`: every source on port 8888",
         json!([{"ports": [{"port": 8888}]}]),
         json!([{"from": [{"podSelector": {"matchLabels": {"app": "router"}}}], "ports": [{"port": 8888}]}])),
        ("the IPv4 internet split in two",
         json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}, {"from": [{"ipBlock": {"cidr": "128.0.0.0/1"}}]}]),
         json!([{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}])),
        ("everything but one address",
         json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["198.51.100.7/32"]}}]}]),
         json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}])),
        ("the IPv6 internet",
         json!([{"from": [{"ipBlock": {"cidr": "2000::/3"}}]}]),
         json!([{"from": [{"ipBlock": {"cidr": "2001:db8::/48"}}]}])),
        ("every pod of every namespace",
         json!([{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}}]}]),
         json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agent-sandbox-system"}}}]}])),
    ];
    for (kind, judge) in [
        ("sandgate", &sandgate as &dyn Fn(Value) -> Decision),
        ("agent-sandbox", &upstream),
    ] {
        for (name, bad, twin) in cases {
            let d = judge(bad.clone());
            assert!(!d.allowed, "{kind}: {name}: must be refused: {d:?}");
            assert!(
                rules(&d).contains(&"ingress-reach"),
                "{kind}: {name}: {}",
                d.message()
            );
            let ok = judge(twin.clone());
            assert!(
                ok.allowed,
                "{kind}: {name}: twin must pass: {}",
                ok.message()
            );
        }
    }
}

/// The fuzz corpus's other hostile inputs, one per analysis, judged as they should be:
/// ingress that adds up to the internet across hundreds of blocks with exceptions; a
/// NetworkPolicy with hundreds of selector requirements and rules whose last one widens
/// sandbox egress; a pod naming more Secrets than are read for one admission (refused
/// before any lookup is asked).
#[test]
fn the_hostile_inputs_of_the_fuzz_corpus_are_judged_as_they_should_be() {
    let fixture =
        |text: &str| -> Value { serde_json::from_str(text).expect("the fixture is JSON") };
    let ingress = fixture(include_str!(
        "fixtures/adversarial-ingress-template-review.json"
    ));
    let d = decide(Webhook::Validate, &ingress);
    assert!(
        !d.allowed && rules(&d).contains(&"ingress-reach"),
        "{}",
        d.message()
    );

    let maze = fixture(include_str!(
        "fixtures/adversarial-networkpolicy-review.json"
    ));
    let d = decide(Webhook::Validate, &maze);
    // Its selector may select sandbox pods (only the namespace knows): it asks.
    assert!(d.allowed, "{}", d.message());
    match d.lookups.as_slice() {
        [sandgate::admission::Lookup::SandboxNamespace { violation, .. }] => {
            assert_eq!(violation.rule, Rule::EgressWidening);
            assert_eq!(violation.field, "spec.egress[150]");
        }
        other => panic!("expected one namespace lookup, got {other:?}"),
    }

    let refs = fixture(include_str!(
        "fixtures/adversarial-pod-references-review.json"
    ));
    let d = decide(Webhook::Validate, &refs);
    assert!(!d.allowed, "{d:?}");
    assert!(
        d.lookups.is_empty(),
        "refused before asking: {:?}",
        d.lookups
    );
    assert!(d.message().contains("names 300 Secrets"), "{}", d.message());
    // Twin: within the bound, the pod asks about each Secret and claim.
    let mut fewer = refs.clone();
    if let Some(volumes) = fewer["request"]["object"]["spec"]["volumes"].as_array_mut() {
        volumes.retain(|v| {
            v["secret"]["secretName"].as_str().is_none_or(|n| {
                n.trim_start_matches("secret-")
                    .parse::<u32>()
                    .is_ok_and(|i| i < 200)
            })
        });
    }
    let d = decide(Webhook::Validate, &fewer);
    assert!(d.allowed, "{}", d.message());
    use sandgate::admission::Lookup;
    assert!(
        d.lookups
            .iter()
            .any(|l| matches!(l, Lookup::NoTokenSecrets { refs, .. } if refs.len() == 200))
            && d.lookups
                .iter()
                .any(|l| matches!(l, Lookup::VolumeClaims { claims, .. } if claims.len() == 40)),
        "{:?}",
        d.lookups.len()
    );
    assert!(d.warnings.len() <= 21, "{} warnings", d.warnings.len());
}
