//! kubernetes-sigs/agent-sandbox beside sandgate: the pods upstream's controller makes
//! for its Sandboxes are sandbox pods (DESIGN.md §2, case 3), wherever they are; its
//! templates, Sandboxes, claims and warm pools are judged at apply. The upstream CRDs
//! are stand-ins of the tests' own (tests/fixtures); what upstream's controller writes
//! is written here as its identity (impersonated, bound to cluster-admin like its
//! release manifests bind it to its own role).

use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{Cluster, cluster};
use super::{Ns, create, get_json, out, wait};

const HASH: &str = "agents.x-k8s.io/sandbox-name-hash";
/// Upstream's controller, as its release manifests install it (sandgate's default).
const CONTROLLER: &str = "system:serviceaccount:agent-sandbox-system:agent-sandbox-controller";

/// A user with every permission but none of sandgate's trust (not `system:masters`).
const TENANT: &str = "e2e-tenant";

/// `kubectl create` as [`TENANT`].
fn create_as_tenant(c: &Cluster, object: &Value) -> std::process::Output {
    c.kubectl_stdin(
        &["create", "-f", "-", &format!("--as={TENANT}")],
        Some(&object.to_string()),
    )
}

/// `kubectl create` as upstream's controller.
fn create_as_controller(c: &Cluster, object: &Value) -> std::process::Output {
    c.kubectl_stdin(
        &["create", "-f", "-", &format!("--as={CONTROLLER}")],
        Some(&object.to_string()),
    )
}

/// kubernetes-sigs/agent-sandbox as its Go module ships it (scripts/build-agent-sandbox.sh):
/// the directory of its controller binary, CRDs and RBAC, built once into the cache.
fn agent_sandbox() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/build-agent-sandbox.sh"
        );
        let o = std::process::Command::new("bash")
            .arg(script)
            .output()
            .expect("scripts/build-agent-sandbox.sh runs");
        assert!(
            o.status.success(),
            "scripts/build-agent-sandbox.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
    })
}

/// Registers upstream's real CRDs once per test binary (tests run in parallel, and two
/// first applies of one CRD race to create it).
fn upstream_crds(c: &Cluster) {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let crds = agent_sandbox().join("crds");
    let o = c.kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()]);
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/sandboxes.agents.x-k8s.io",
        "crd/sandboxtemplates.extensions.agents.x-k8s.io",
        "crd/sandboxclaims.extensions.agents.x-k8s.io",
        "crd/sandboxwarmpools.extensions.agents.x-k8s.io",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                         "metadata": {"name": "e2e-agent-sandbox-controller"},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                     "name": "cluster-admin"},
                         "subjects": [{"kind": "ServiceAccount", "name": "agent-sandbox-controller",
                                       "namespace": "agent-sandbox-system"},
                                      {"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                       "name": TENANT}]});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&binding.to_string()));
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

    // Made by anyone but upstream's controller, its labels are forged.
    let o = create(c, &their_pod(&ns.name, "sb", "sb", &uid, false));
    assert!(
        !o.status.success(),
        "a pod with forged upstream labels was admitted"
    );
    assert!(out(&o).contains("[upstream-metadata]"), "{}", out(&o));
    let o = create_as_controller(c, &their_pod(&ns.name, "sb", "sb", &uid, false));
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
    let o = create_as_controller(c, &their_pod(&ns.name, "sb-priv", "sb-priv", &uid2, true));
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

    // Their label cannot be taken off to leave sandgate's scope, even by them.
    let o = c.kubectl(&[
        "label",
        "pod",
        "sb",
        "-n",
        &ns.name,
        &format!("{HASH}-"),
        &format!("--as={CONTROLLER}"),
    ]);
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
    // The shipped agents.sandboxtemplate policies judge the template itself: DNS to any
    // resolver passes the built-in analysis and gets the policy's warning.
    let any_resolver = json!([{"ports": [{"protocol": "UDP", "port": 53}]}]);
    let o = create(c, &template("any-dns", &plain, any_resolver));
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("policy agents.sandboxtemplate.egress")
            && out(&o).contains("reach any resolver"),
        "{}",
        out(&o)
    );
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

/// kubernetes-sigs/agent-sandbox#265: the controller deletes the pod a Sandbox's
/// `agents.x-k8s.io/pod-name` names, so only the controller may write it (and its
/// labels); other edits of the Sandbox pass.
#[test]
fn only_upstreams_controller_writes_the_pod_name_annotation_and_its_labels() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-meta", false);
    let sb = |name: &str, annotations: Value| {
        json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
               "metadata": {"name": name, "namespace": ns.name, "annotations": annotations},
               "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}}})
    };
    let pointing = json!({"agents.x-k8s.io/pod-name": "victim"});
    let o = create(c, &sb("forged", pointing.clone()));
    assert!(
        !o.status.success(),
        "a forged pod-name annotation was admitted"
    );
    let msg = out(&o);
    assert!(
        msg.contains("metadata.annotations[\"agents.x-k8s.io/pod-name\"]")
            && msg.contains("[upstream-metadata]"),
        "{msg}"
    );
    // The controller may (it adopts warm pods this way).
    let o = create_as_controller(c, &sb("adopted", pointing));
    assert!(o.status.success(), "{}", out(&o));
    // Anyone else re-pointing it, or labelling it in upstream's domain: refused.
    let sandboxes = "sandboxes.agents.x-k8s.io";
    for args in [
        vec![
            "annotate",
            sandboxes,
            "adopted",
            "--overwrite",
            "agents.x-k8s.io/pod-name=other",
        ],
        vec![
            "annotate",
            sandboxes,
            "adopted",
            "agents.x-k8s.io/pod-name-",
        ],
        vec!["label", sandboxes, "adopted", "agents.x-k8s.io/claim-uid=x"],
    ] {
        let mut args = args;
        args.extend(["-n", &ns.name]);
        let o = c.kubectl(&args);
        assert!(!o.status.success(), "{args:?} was admitted");
        assert!(out(&o).contains("[upstream-metadata]"), "{}", out(&o));
    }
    // Twins: other metadata of the Sandbox changes freely.
    let o = c.kubectl(&["annotate", sandboxes, "adopted", "team=a", "-n", &ns.name]);
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&["label", sandboxes, "adopted", "app=a", "-n", &ns.name]);
    assert!(o.status.success(), "{}", out(&o));
    let stored = get_json(c, &[sandboxes, "adopted", "-n", &ns.name]);
    assert_eq!(
        stored["metadata"]["annotations"]["agents.x-k8s.io/pod-name"],
        "victim"
    );
}

fn warm_pool(ns: &str, name: &str, replicas: u64) -> Value {
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": "python"}}})
}

/// kubernetes-sigs/agent-sandbox#251: warm pools are capped per pool (50) and per
/// namespace (100), written directly or through `/scale` (`kubectl scale`, an HPA).
#[test]
fn warm_pool_replicas_are_capped_per_pool_and_per_namespace_also_through_scale() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-pools", false);
    let o = create(c, &warm_pool(&ns.name, "storm", 5000));
    assert!(!o.status.success(), "a pod storm was admitted");
    assert!(
        out(&o).contains("spec.replicas") && out(&o).contains("[warm-pool-replicas]"),
        "{}",
        out(&o)
    );
    // At the cap: admitted; a second full pool reaches the namespace's cap...
    for name in ["a", "b"] {
        let o = create(c, &warm_pool(&ns.name, name, 50));
        assert!(o.status.success(), "{}", out(&o));
    }
    // ...which a third pool would pass.
    let o = create(c, &warm_pool(&ns.name, "c", 1));
    assert!(!o.status.success(), "the namespace cap was passed");
    assert!(out(&o).contains("101"), "{}", out(&o));
    // Through /scale: up is refused, down is allowed, and then the room is there.
    let pools = "sandboxwarmpools.extensions.agents.x-k8s.io";
    let o = c.kubectl(&["scale", pools, "a", "--replicas=60", "-n", &ns.name]);
    assert!(!o.status.success(), "scaling past the cap was admitted");
    assert!(out(&o).contains("[warm-pool-replicas]"), "{}", out(&o));
    let o = c.kubectl(&["scale", pools, "a", "--replicas=10", "-n", &ns.name]);
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&["scale", pools, "b", "--replicas=51", "-n", &ns.name]);
    assert!(
        !o.status.success(),
        "scaling past the per-pool cap was admitted"
    );
    let o = create(c, &warm_pool(&ns.name, "c", 40));
    assert!(o.status.success(), "{}", out(&o));
    let stored = get_json(c, &[pools, "a", "-n", &ns.name]);
    assert_eq!(stored["spec"]["replicas"], 10, "{stored}");

    // One budget for both kinds: the namespace keeps 100 warm sandboxes in upstream's
    // pools, so a sandgate SandboxTemplate may not keep one more (asked in dry runs:
    // the apiserver runs the webhooks and stores nothing, so no pool is made).
    let template = |size: u64| {
        let mut t = json!({"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
            "metadata": {"name": "python", "namespace": ns.name},
            "spec": {"runtimeClassName": "gvisor",
                     "template": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}},
                     "poolConfig": {"size": size}}});
        t["spec"]["networkPolicy"] =
            json!({"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]});
        t
    };
    let dry_run = |object: &Value| {
        c.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&object.to_string()),
        )
    };
    let o = dry_run(&template(1));
    assert!(
        !o.status.success()
            && out(&o).contains("spec.poolConfig.size")
            && out(&o).contains("[warm-pool-replicas]")
            && out(&o).contains("100 in its SandboxWarmPools"),
        "a template's pool beyond the namespace's budget: {}",
        out(&o)
    );
    let o = dry_run(&template(0));
    assert!(o.status.success(), "no pool, no budget: {}", out(&o));
    let o = c.kubectl(&["scale", pools, "c", "--replicas=30", "-n", &ns.name]);
    assert!(o.status.success(), "{}", out(&o));
    let o = dry_run(&template(10));
    assert!(o.status.success(), "within the budget again: {}", out(&o));
}

/// A claim's env, held to its template's `envVarsInjectionPolicy` at apply, through
/// its warm pool; values named like credentials warned.
#[test]
fn claim_env_is_honoured_only_as_the_templates_injection_policy_allows() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-env", false);
    for (name, policy) in [
        ("closed", None),
        ("allowed", Some("Allowed")),
        ("overrides", Some("Overrides")),
    ] {
        let mut t = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim",
                                                                  "env": [{"name": "MODE", "value": "t"}]}]}}}});
        if let Some(p) = policy {
            t["spec"]["envVarsInjectionPolicy"] = json!(p);
        }
        let o = create(c, &t);
        assert!(o.status.success(), "{}", out(&o));
        let mut pool = warm_pool(&ns.name, name, 1);
        pool["spec"]["sandboxTemplateRef"]["name"] = json!(name);
        let o = create(c, &pool);
        assert!(o.status.success(), "{}", out(&o));
    }
    let claim = |name: &str, pool: &str, env: Value| {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"warmPoolRef": {"name": pool}, "env": env}})
    };
    let new = json!([{"name": "TASK", "value": "1"}]);
    let existing = json!([{"name": "MODE", "value": "claim"}]);
    for (name, pool, env) in [
        ("c1", "closed", new.clone()),
        ("c2", "allowed", existing.clone()),
        ("c3", "missing-pool", new.clone()),
    ] {
        let o = create(c, &claim(name, pool, env));
        assert!(!o.status.success(), "claim {name} on {pool} was admitted");
        assert!(out(&o).contains("[claim-env]"), "{}", out(&o));
    }
    // Twins: no env at all, new variables where Allowed, overrides where Overrides.
    let o = create(c, &claim("t1", "closed", Value::Null));
    assert!(o.status.success(), "{}", out(&o));
    // The shipped policies for upstream's kinds run on it too.
    assert!(
        out(&o).contains("policy agents.sandboxclaim.lifecycle"),
        "{}",
        out(&o)
    );
    let o = create(
        c,
        &claim(
            "t2",
            "allowed",
            json!([{"name": "GITHUB_TOKEN", "value": "x"}]),
        ),
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("looks like a credential"),
        "the warning: {}",
        out(&o)
    );
    let o = create(c, &claim("t3", "overrides", existing));
    assert!(o.status.success(), "{}", out(&o));
}

/// Upstream's controller writes the NetworkPolicy of a managed template with the
/// template's egress: in an enforced namespace that is egress beyond DNS, which the
/// widening guard refuses from anyone else. From the controller it gets the template's
/// egress analysis, and a sandbox pod it selects is admitted while the policy is exactly
/// its template's.
#[test]
fn upstreams_managed_policy_is_judged_as_its_templates_egress() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-netpol", true);
    let egress = json!([{"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
                         "ports": [{"protocol": "TCP", "port": 443}]}]);
    let t = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                   "metadata": {"name": "python", "namespace": ns.name},
                   "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}},
                            "networkPolicy": {"egress": egress}}});
    let o = create(c, &t);
    assert!(o.status.success(), "{}", out(&o));
    let tuid = get_json(
        c,
        &[
            "sandboxtemplates.extensions.agents.x-k8s.io",
            "python",
            "-n",
            &ns.name,
        ],
    )["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let policy = |name: &str, egress: &Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns.name,
                            "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                                                 "kind": "SandboxTemplate", "name": "python",
                                                 "uid": tuid, "controller": true}]},
               "spec": {"podSelector": {"matchLabels": {"agents.x-k8s.io/sandbox-template-ref-hash": "9d0e"}},
                        "policyTypes": ["Ingress", "Egress"], "egress": egress}})
    };
    // Anyone else (but cluster admins): the widening guard.
    let o = create_as_tenant(c, &policy("python-network-policy", &egress));
    assert!(!o.status.success(), "a widening policy was admitted");
    assert!(out(&o).contains("[egress-widening]"), "{}", out(&o));
    // The controller: judged as the template's egress (the metadata server stays out).
    let o = create_as_controller(
        c,
        &policy(
            "bad",
            &json!([{"to": [{"ipBlock": {"cidr": "169.254.0.0/16"}}]}]),
        ),
    );
    assert!(
        !o.status.success(),
        "egress to the metadata server was admitted"
    );
    assert!(out(&o).contains("[egress-reach]"), "{}", out(&o));
    let o = create_as_controller(c, &policy("python-network-policy", &egress));
    assert!(o.status.success(), "{}", out(&o));
    // A pod it selects: admitted while the policy is exactly the template's.
    let uid = sandbox(c, &ns.name, "sb");
    let o = create_as_controller(c, &their_pod(&ns.name, "sb", "sb", &uid, false));
    assert!(o.status.success(), "{}", out(&o));
    // The policy drifted from its template (still through the analysis): new pods are
    // refused, since nothing judged that egress for them.
    let drifted = json!([{"to": [{"ipBlock": {"cidr": "10.2.0.0/16"}}],
                          "ports": [{"protocol": "TCP", "port": 443}]}]);
    let mut p = policy("python-network-policy", &drifted);
    p["metadata"]["resourceVersion"] = get_json(
        c,
        &["networkpolicy", "python-network-policy", "-n", &ns.name],
    )["metadata"]["resourceVersion"]
        .clone();
    let o = c.kubectl_stdin(
        &["replace", "-f", "-", &format!("--as={CONTROLLER}")],
        Some(&p.to_string()),
    );
    assert!(o.status.success(), "{}", out(&o));
    let uid2 = sandbox(c, &ns.name, "sb2");
    let o = create_as_controller(c, &their_pod(&ns.name, "sb2", "sb2", &uid2, false));
    assert!(
        !o.status.success(),
        "a pod under a drifted policy was admitted"
    );
    assert!(out(&o).contains("[egress-widening]"), "{}", out(&o));
}

/// A pod upstream's controller makes and sandgate refuses is named in a `PodDenied`
/// event on its Sandbox and on the claim that owns the Sandbox (upstream's controller
/// would otherwise retry quietly until the claim times out).
#[test]
fn a_refused_upstream_pod_is_named_on_its_sandbox_and_claim() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-denied", false);
    let claim = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
                       "metadata": {"name": "mine", "namespace": ns.name},
                       "spec": {"warmPoolRef": {"name": "python"}}});
    assert!(create(c, &claim).status.success());
    let claim_uid = get_json(
        c,
        &[
            "sandboxclaims.extensions.agents.x-k8s.io",
            "mine",
            "-n",
            &ns.name,
        ],
    )["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sb = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                    "metadata": {"name": "mine", "namespace": ns.name,
                                 "ownerReferences": [{"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                                                      "kind": "SandboxClaim", "name": "mine",
                                                      "uid": claim_uid, "controller": true}]},
                    "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}}});
    let o = create_as_controller(c, &sb);
    assert!(o.status.success(), "{}", out(&o));
    let uid =
        get_json(c, &["sandboxes.agents.x-k8s.io", "mine", "-n", &ns.name])["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    let o = create_as_controller(c, &their_pod(&ns.name, "mine", "mine", &uid, true));
    assert!(!o.status.success(), "a privileged pod was admitted");
    // A dry run names nobody.
    let o = c.kubectl_stdin(
        &[
            "create",
            "--dry-run=server",
            "-f",
            "-",
            &format!("--as={CONTROLLER}"),
        ],
        Some(&their_pod(&ns.name, "dry", "mine", &uid, true).to_string()),
    );
    assert!(!o.status.success());
    let events = |kind: &str| {
        let list = get_json(
            c,
            &[
                "events",
                "-n",
                &ns.name,
                "--field-selector",
                "reason=PodDenied",
            ],
        );
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["kind"] == kind || e["regarding"]["kind"] == kind)
            .cloned()
            .collect::<Vec<Value>>()
    };
    wait(
        "PodDenied on the Sandbox and the claim",
        Duration::from_secs(30),
        || !events("Sandbox").is_empty() && !events("SandboxClaim").is_empty(),
    );
    let on_sandbox = &events("Sandbox")[0];
    let note = on_sandbox["message"]
        .as_str()
        .or(on_sandbox["note"].as_str())
        .unwrap_or_default();
    assert!(note.contains("[privileged]"), "{on_sandbox}");
    assert_eq!(
        events("Sandbox").len(),
        1,
        "one event, not one per retry or dry run"
    );
}

/// The audit judges upstream's stored objects too: a claim whose env its template no
/// longer allows (the template was changed after the claim was admitted) fails in
/// `sandgate audit`, while the template itself and a claim without env pass.
#[test]
fn the_audit_reports_upstream_objects_that_fail_today() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-audit", false);
    let t = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                   "metadata": {"name": "python", "namespace": ns.name},
                   "spec": {"envVarsInjectionPolicy": "Overrides",
                            "podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}}}});
    assert!(create(c, &t).status.success());
    let mut pool = warm_pool(&ns.name, "python", 1);
    pool["spec"]["sandboxTemplateRef"]["name"] = json!("python");
    assert!(create(c, &pool).status.success());
    let claim = |name: &str, env: Value| {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"warmPoolRef": {"name": "python"}, "env": env}})
    };
    let o = create(
        c,
        &claim("with-env", json!([{"name": "TASK", "value": "1"}])),
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(create(c, &claim("without", Value::Null)).status.success());
    let o = c.kubectl(&[
        "patch",
        "sandboxtemplates.extensions.agents.x-k8s.io",
        "python",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"spec": {"envVarsInjectionPolicy": "Disallowed"}}"#,
    ]);
    assert!(o.status.success(), "{}", out(&o));

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .args(["audit", "-n", &ns.name, "-o", "json", "-v"])
        .env("KUBECONFIG", &c.kubeconfig)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sandgate audit runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listing: Value = serde_json::from_str(&stdout).expect("json");
    let of = |name: &str, kind: &str| -> Vec<Value> {
        listing["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["resource"]["name"] == name && j["resource"]["kind"] == kind)
            .flat_map(|j| j["outcomes"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let failing = of("with-env", "SandboxClaim");
    assert!(
        failing
            .iter()
            .any(|o| o["rule"] == "claim-env" && o["result"] == "fail"),
        "{stdout}"
    );
    for (name, kind) in [
        ("without", "SandboxClaim"),
        ("python", "SandboxTemplate"),
        ("python", "SandboxWarmPool"),
    ] {
        let outcomes = of(name, kind);
        assert!(
            !outcomes.is_empty(),
            "{kind} {name} was not audited: {stdout}"
        );
        assert!(
            outcomes.iter().all(|o| o["result"] != "fail"),
            "{kind} {name}: {stdout}"
        );
    }
}

/// The shipped webhook configurations with the `upstream-*` entries removed.
fn without_upstream_entries(config: &Value) -> Value {
    let mut v = config.clone();
    if let Some(list) = v["webhooks"].as_array_mut() {
        list.retain(|w| {
            !w["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("upstream-"))
        });
    }
    v
}

/// Writes `config` over the live one of its kind (fresh resourceVersion).
fn replace_config(c: &Cluster, kind: &str, config: &Value) {
    let live = get_json(c, &[kind, "sandgate"]);
    let mut v = config.clone();
    v["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
    let o = c.kubectl_stdin(&["replace", "-f", "-"], Some(&v.to_string()));
    assert!(o.status.success(), "{}", out(&o));
}

/// Turning upstream support off as documented (deleting the `upstream-*` entries):
/// on the real apiserver, upstream's pods, Sandboxes and warm pools then never reach
/// sandgate, and the entries put back, they do again.
#[test]
fn with_the_upstream_entries_deleted_upstream_objects_never_reach_sandgate() {
    let c = cluster();
    // Alone: the webhook configurations are the cluster's, and its counters are read.
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    upstream_crds(c);
    let ns = Ns::new(c, "upstream-off", false);
    let kinds = [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ];
    let saved: Vec<Value> = kinds
        .iter()
        .map(|k| {
            let mut v = get_json(c, &[k, "sandgate"]);
            for f in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                if let Some(m) = v["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
            v
        })
        .collect();
    let privileged_sandbox = |name: &str| {
        json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
               "metadata": {"name": name, "namespace": ns.name},
               "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim",
                                                                  "securityContext": {"privileged": true}}]}}}})
    };
    let dry_run_admitted = |name: &str| {
        c.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&privileged_sandbox(name).to_string()),
        )
        .status
        .success()
    };
    for (kind, v) in kinds.iter().zip(&saved) {
        replace_config(c, kind, &without_upstream_entries(v));
    }
    let result = std::panic::catch_unwind(|| {
        // The apiserver picks the change up within moments.
        wait("the upstream entries gone", Duration::from_secs(20), || {
            dry_run_admitted("probe")
        });
        // (Pods are not counted: the shared reconciler may be making pool pods; this
        // one's being unmutated and admitted privileged says it met no entry.)
        let counts = || ["Sandbox", "SandboxWarmPool"].map(|k| c.webhook_requests(k));
        let before = counts();
        let o = create(c, &privileged_sandbox("sb"));
        assert!(o.status.success(), "{}", out(&o));
        let uid =
            get_json(c, &["sandboxes.agents.x-k8s.io", "sb", "-n", &ns.name])["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        let o = create_as_controller(c, &their_pod(&ns.name, "sb", "sb", &uid, true));
        assert!(o.status.success(), "{}", out(&o));
        let p = get_json(c, &["pod", "sb", "-n", &ns.name]);
        assert!(p["spec"]["runtimeClassName"].is_null(), "not mutated: {p}");
        let o = create(c, &warm_pool(&ns.name, "storm", 5000));
        assert!(o.status.success(), "{}", out(&o));
        assert_eq!(counts(), before, "upstream objects reached sandgate");
    });
    for (kind, v) in kinds.iter().zip(&saved) {
        replace_config(c, kind, v);
    }
    wait("the upstream entries back", Duration::from_secs(20), || {
        !dry_run_admitted("probe")
    });
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Upstream's own controller (as its ServiceAccount, with its extensions), for a test
/// that needs what it really writes; stopped when the guard drops. It acts on every
/// namespace, so its test holds the cluster alone (the gate, exclusively): the other
/// upstream tests write as the controller by hand what it would never write, and a
/// running controller would answer their objects too.
struct UpstreamController(std::process::Child);

impl Drop for UpstreamController {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn upstream_controller(c: &Cluster) -> UpstreamController {
    upstream_crds(c);
    let bin = agent_sandbox().join("bin/agent-sandbox-controller");
    UpstreamController(
        super::harness::spawn_upstream_controller(c, &bin)
            .unwrap_or_else(|e| panic!("agent-sandbox's controller: {e}")),
    )
}

fn pods_of(c: &Cluster, ns: &str) -> Vec<Value> {
    get_json(c, &["pods", "-n", ns, "-l", HASH])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The real thing: agent-sandbox v1.0.1's own controller, built from its Go module, on
/// its real CRDs. Its warm pool's pods are hardened by sandgate as they are made, the
/// NetworkPolicy it writes for a template passes as the template's own egress (in an
/// enforced namespace, where anything else widening is refused), a claim binds one of
/// its sandboxes, and a pod sandgate refuses (its Secret is a service-account token,
/// which only the pod's admission can see) is named on the controller's Sandbox.
#[test]
fn upstreams_own_controller_makes_pods_and_policies_sandgate_admits_and_hardens() {
    let c = cluster();
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let _controller = upstream_controller(c);
    let ns = Ns::new(c, "upstream-real", true);
    let n = ns.name.as_str();
    let egress =
        json!([{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]);
    let template = |name: &str, pod: Value| {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
               "metadata": {"name": name, "namespace": n},
               "spec": {"podTemplate": {"spec": pod}, "networkPolicy": {"egress": egress}}})
    };
    let pool = |name: &str, ns: &str, replicas: u64| {
        json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": name}}})
    };
    let python = json!({"containers": [{"name": "c", "image": "python:3.11-slim"}]});
    let o = create(c, &template("python", python.clone()));
    assert!(o.status.success(), "{}", out(&o));
    let o = create(c, &pool("python", n, 2));
    assert!(o.status.success(), "{}", out(&o));

    // Its managed policy, written by the controller and admitted by sandgate.
    wait(
        "the controller's NetworkPolicy for the template",
        Duration::from_secs(60),
        || {
            c.kubectl(&["get", "networkpolicy", "python-network-policy", "-n", n])
                .status
                .success()
        },
    );
    let np = get_json(c, &["networkpolicy", "python-network-policy", "-n", n]);
    assert_eq!(
        np["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"], "203.0.113.0/24",
        "{np}"
    );
    // Its pods, hardened on the way in.
    wait("the warm pool's two pods", Duration::from_secs(90), || {
        pods_of(c, n).len() == 2
    });
    for p in pods_of(c, n) {
        assert_eq!(p["spec"]["runtimeClassName"], "gvisor", "{p}");
        assert_eq!(p["spec"]["automountServiceAccountToken"], false, "{p}");
        let container = &p["spec"]["containers"][0];
        assert!(
            container["resources"]["limits"]["cpu"].is_string(),
            "{container}"
        );
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert!(
            p["metadata"]["labels"]["sandbox.gke.io/sandbox"].is_string(),
            "{p}"
        );
    }
    // A claim takes one of the pool's sandboxes.
    let claim = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
                       "metadata": {"name": "mine", "namespace": n},
                       "spec": {"warmPoolRef": {"name": "python"}}});
    let o = create(c, &claim);
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "a Sandbox owned by the claim",
        Duration::from_secs(60),
        || {
            get_json(c, &["sandboxes.agents.x-k8s.io", "-n", n])["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| {
                    s["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|o| o["kind"] == "SandboxClaim" && o["name"] == "mine")
                })
        },
    );

    // Where a service-account token Secret exists, the controller's pod that mounts it
    // is refused (its Sandbox was admitted: the Secret is a fact only the pod's
    // admission asks about), and sandgate names the denial on the controller's Sandbox.
    let open = Ns::new(c, "upstream-real-token", false);
    let o = create(
        c,
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "bot-token", "namespace": open.name,
                             "annotations": {"kubernetes.io/service-account.name": "default"}}}),
    );
    assert!(o.status.success(), "{}", out(&o));
    let mut leaky = template(
        "leaky",
        json!({"containers": [{"name": "c", "image": "python:3.11-slim",
                               "volumeMounts": [{"name": "t", "mountPath": "/t"}]}],
               "volumes": [{"name": "t", "secret": {"secretName": "bot-token"}}]}),
    );
    leaky["metadata"]["namespace"] = json!(open.name);
    let o = create(c, &leaky);
    assert!(o.status.success(), "{}", out(&o));
    let o = create(c, &pool("leaky", &open.name, 1));
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "PodDenied on the controller's Sandbox",
        Duration::from_secs(90),
        || {
            get_json(
                c,
                &[
                    "events",
                    "-n",
                    &open.name,
                    "--field-selector",
                    "reason=PodDenied",
                ],
            )["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    (e["involvedObject"]["kind"] == "Sandbox"
                        || e["regarding"]["kind"] == "Sandbox")
                        && e["message"]
                            .as_str()
                            .or(e["note"].as_str())
                            .is_some_and(|m| m.contains("service-account-token"))
                })
        },
    );
    assert!(
        pods_of(c, &open.name).is_empty(),
        "the token-mounting pod was admitted"
    );
}
