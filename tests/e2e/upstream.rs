//! kubernetes-sigs/agent-sandbox beside sandgate: the pods upstream's controller makes
//! for its Sandboxes are sandbox pods (DESIGN.md §2, case 3), wherever they are.
//! The upstream CRDs are stand-ins of the tests' own (tests/fixtures).

use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{Cluster, cluster};
use super::{Ns, create, get_json, out, wait};

const HASH: &str = "agents.x-k8s.io/sandbox-name-hash";

/// Registers the stand-in CRDs once per test binary (tests run in parallel, and two
/// first applies of one CRD race to create it).
fn upstream_crds(c: &Cluster) {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/agent-sandbox-crds.yaml"
    );
    let o = c.kubectl(&["apply", "-f", path]);
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/sandboxes.agents.x-k8s.io",
        "crd/sandboxtemplates.extensions.agents.x-k8s.io",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    *done = true;
}

/// An upstream Sandbox and its uid.
fn sandbox(c: &Cluster, ns: &str, name: &str) -> String {
    let sb = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}}});
    let o = create(c, &sb);
    assert!(o.status.success(), "{}", out(&o));
    get_json(c, &["sandboxes.agents.x-k8s.io", name, "-n", ns])["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A pod as upstream's controller makes it for Sandbox `owner`.
fn their_pod(ns: &str, name: &str, owner: &str, uid: &str, privileged: bool) -> Value {
    let mut container = json!({"name": "c", "image": "python:3.11-slim"});
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {HASH: "5f1c2a", "agents.x-k8s.io/sandbox-template-ref-hash": "9d0e"},
                        "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                                             "name": owner, "uid": uid, "controller": true,
                                             "blockOwnerDeletion": true}]},
           "spec": {"containers": [container]}})
}

#[test]
fn pods_of_upstream_sandboxes_are_hardened_and_judged_like_sandgates_own() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    // Not enforced: only upstream's label makes these sandbox pods.
    let ns = Ns::new(c, "upstream-pods", false);
    let uid = sandbox(c, &ns.name, "sb");

    let o = create(c, &their_pod(&ns.name, "sb", "sb", &uid, false));
    assert!(o.status.success(), "{}", out(&o));
    let p = get_json(c, &["pod", "sb", "-n", &ns.name]);
    assert_eq!(p["spec"]["runtimeClassName"], "gvisor", "{p}");
    assert_eq!(p["spec"]["automountServiceAccountToken"], false);
    let container = &p["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["cpu"], "1", "{container}");
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    // Labelled as a sandbox, so the default-deny (made before the pod) selects it.
    assert!(
        p["metadata"]["labels"]["sandbox.gke.io/sandbox"].is_string(),
        "{p}"
    );
    assert_eq!(p["metadata"]["labels"][HASH], "5f1c2a");
    wait(
        "the namespace's default-deny",
        Duration::from_secs(10),
        || {
            c.kubectl(&[
                "get",
                "networkpolicy",
                "sandgate-default-deny",
                "-n",
                &ns.name,
            ])
            .status
            .success()
        },
    );

    // The privileged twin is refused, naming the field.
    let uid2 = sandbox(c, &ns.name, "sb-priv");
    let o = create(c, &their_pod(&ns.name, "sb-priv", "sb-priv", &uid2, true));
    assert!(
        !o.status.success(),
        "a privileged upstream sandbox pod was admitted"
    );
    let msg = out(&o);
    assert!(
        msg.contains("spec.containers[0].securityContext.privileged")
            && msg.contains("[privileged]"),
        "{msg}"
    );

    // Their label cannot be taken off to leave sandgate's scope.
    let o = c.kubectl(&["label", "pod", "sb", "-n", &ns.name, &format!("{HASH}-")]);
    assert!(!o.status.success(), "the upstream label was removed");
    assert!(out(&o).contains("sandbox-labels"), "{}", out(&o));

    // Allowed twin: an ordinary privileged pod beside them is nobody's sandbox and
    // never reaches sandgate.
    let plain = json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "plain", "namespace": ns.name},
                       "spec": {"containers": [{"name": "c", "image": "python:3.11-slim",
                                                "securityContext": {"privileged": true}}]}});
    let o = create(c, &plain);
    assert!(o.status.success(), "{}", out(&o));
    let p = get_json(c, &["pod", "plain", "-n", &ns.name]);
    assert!(p["spec"]["runtimeClassName"].is_null(), "{p}");
    assert!(
        p["metadata"]["labels"]["sandbox.gke.io/sandbox"].is_null(),
        "{p}"
    );
}

#[test]
fn upstream_sandboxes_and_templates_are_judged_as_the_pods_they_make() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-kinds", false);
    let privileged = json!([{"name": "c", "image": "python:3.11-slim",
                             "securityContext": {"privileged": true}}]);
    let plain = json!([{"name": "c", "image": "python:3.11-slim"}]);

    // A Sandbox: refused at apply, naming the field in the Sandbox.
    let sb = |name: &str, containers: &Value| {
        json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"podTemplate": {"spec": {"containers": containers}}}})
    };
    let o = create(c, &sb("bad", &privileged));
    assert!(
        !o.status.success(),
        "a privileged upstream Sandbox was admitted"
    );
    assert!(
        out(&o).contains("spec.podTemplate.spec.containers[0].securityContext.privileged"),
        "{}",
        out(&o)
    );
    let o = create(c, &sb("good", &plain));
    assert!(o.status.success(), "{}", out(&o));

    // A SandboxTemplate: its pod, and its explicit egress.
    let template = |name: &str, containers: &Value, egress: Value| {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"podTemplate": {"spec": {"containers": containers}},
                        "networkPolicy": {"egress": egress}}})
    };
    let dns = json!([{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                              "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                      "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]);
    let o = create(c, &template("bad-pod", &privileged, dns.clone()));
    assert!(
        !o.status.success(),
        "a privileged upstream template was admitted"
    );
    assert!(out(&o).contains("[privileged]"), "{}", out(&o));
    let open = json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]);
    let o = create(c, &template("open", &plain, open));
    assert!(
        !o.status.success(),
        "an upstream template open to the internet was admitted"
    );
    assert!(
        out(&o).contains("spec.networkPolicy.egress") && out(&o).contains("[egress-reach]"),
        "{}",
        out(&o)
    );
    let o = create(c, &template("fine", &plain, dns));
    assert!(o.status.success(), "{}", out(&o));
}

#[test]
fn an_upstream_template_that_names_no_egress_is_closed_to_dns_only() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-egress", false);
    let template = |name: &str, extra: Value| {
        let mut t = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}}});
        if let (Some(spec), Some(extra)) = (t["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        t
    };
    // The managed default would open the internet: closed to DNS, with a warning.
    let o = create(c, &template("managed", json!({})));
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("DNS-only egress"),
        "the warning: {}",
        out(&o)
    );
    let t = get_json(
        c,
        &[
            "sandboxtemplates.extensions.agents.x-k8s.io",
            "managed",
            "-n",
            &ns.name,
        ],
    );
    let egress = &t["spec"]["networkPolicy"]["egress"];
    assert_eq!(egress.as_array().map(Vec::len), Some(1), "{t}");
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(egress[0]["ports"][0]["port"], 53);
    // Twins left as written: explicit egress, and a template managing its own policy.
    let explicit = json!({"networkPolicy": {"egress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
                                                        "ports": [{"protocol": "TCP", "port": 443}]}]}});
    let o = create(c, &template("explicit", explicit));
    assert!(o.status.success(), "{}", out(&o));
    let t = get_json(
        c,
        &[
            "sandboxtemplates.extensions.agents.x-k8s.io",
            "explicit",
            "-n",
            &ns.name,
        ],
    );
    assert_eq!(
        t["spec"]["networkPolicy"]["egress"][0]["ports"][0]["port"], 443,
        "{t}"
    );
    let o = create(
        c,
        &template("unmanaged", json!({"networkPolicyManagement": "Unmanaged"})),
    );
    assert!(o.status.success(), "{}", out(&o));
    let t = get_json(
        c,
        &[
            "sandboxtemplates.extensions.agents.x-k8s.io",
            "unmanaged",
            "-n",
            &ns.name,
        ],
    );
    assert!(t["spec"]["networkPolicy"].is_null(), "{t}");
}
