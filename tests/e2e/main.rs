//! End-to-end: sandgate judged by a real kube-apiserver (see harness.rs). Each test
//! works in its own namespace; kubectl is used where a user would type it.

mod audit;
mod harness;
mod pools;
mod selftls;
mod upstream;

use std::process::Output;
use std::time::{Duration, Instant};

use harness::{Cluster, cluster};
use serde_json::{Value, json};

pub(crate) fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A namespace for one test, deleted when the test ends.
pub(crate) struct Ns {
    pub name: String,
}

impl Ns {
    pub(crate) fn new(c: &Cluster, prefix: &str, enforce: bool) -> Ns {
        let name = format!("{prefix}-{}", std::process::id() % 100000);
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if enforce {
            ns["metadata"]["labels"] = json!({"sandbox.gke.io/enforce": "true"});
        }
        let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&ns.to_string()));
        assert!(o.status.success(), "{}", out(&o));
        wait(
            &format!("ServiceAccount default in {name}"),
            Duration::from_secs(60),
            || {
                c.kubectl(&["get", "serviceaccount", "default", "-n", &name])
                    .status
                    .success()
            },
        );
        Ns { name }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Some(Ok(c)) = Some(std::panic::catch_unwind(cluster)) {
            let _ = c.kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        }
    }
}

pub(crate) fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "{what}: not reached within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let o = c.kubectl(&a);
    assert!(o.status.success(), "kubectl {a:?}: {}", out(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

pub(crate) fn pod(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim", "command": ["python3", "-c", "print(42)"]}]}
    })
}

pub(crate) fn create(c: &Cluster, object: &Value) -> Output {
    c.kubectl_stdin(&["create", "-f", "-"], Some(&object.to_string()))
}

fn wait_running(c: &Cluster, ns: &str, name: &str) -> Value {
    let mut last = Value::Null;
    wait(
        &format!("pod {ns}/{name} Running"),
        Duration::from_secs(90),
        || {
            last = get_json(c, &["pod", name, "-n", ns]);
            last["status"]["phase"] == "Running"
        },
    );
    last
}

#[test]
fn the_article_walkthrough() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let o = c.kubectl(&["get", "crds"]);
    let listed: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("sandbox"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "sandboxclaims.sandbox.gke.io",
            "sandboxes.sandbox.gke.io",
            "sandboxtemplates.sandbox.gke.io"
        ]
    );

    // The article's file, verbatim, into the namespace it names.
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/sandbox-template.yaml"
    );
    let o = c.kubectl(&["apply", "-f", file]);
    assert!(o.status.success(), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains("sandboxtemplate.sandbox.gke.io/agent-execution-template created")
            || text.contains("configured"),
        "{text}"
    );
    assert!(
        text.contains("Warning: policy sandboxtemplate.egress"),
        "policy warnings reach kubectl: {text}"
    );

    let t = get_json(
        c,
        &[
            "sandboxtemplates.sandbox.gke.io",
            "agent-execution-template",
            "-n",
            "default",
        ],
    );
    assert_eq!(t["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(t["spec"]["poolConfig"]["size"], 5);
    let o = c.kubectl(&["get", "sbt", "-n", "default"]);
    let table = out(&o);
    assert!(
        table.contains("RUNTIME") && table.contains("POOL") && table.contains("gvisor"),
        "{table}"
    );
    let o = c.kubectl(&[
        "explain",
        "sandboxtemplates.spec.poolConfig",
        "--api-version=sandbox.gke.io/v1",
    ]);
    assert!(
        out(&o).contains("Warm pool"),
        "kubectl explain uses the descriptions: {}",
        out(&o)
    );
    let _ = c.kubectl(&["delete", "-f", file, "--wait=false"]);
}

#[test]
fn a_pod_in_an_enforced_namespace_is_hardened_and_runs_under_gvisor() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "enforced", true);
    let o = create(c, &pod("agent-run", &ns.name));
    assert!(o.status.success(), "{}", out(&o));
    let p = wait_running(c, &ns.name, "agent-run");
    let spec = &p["spec"];
    assert_eq!(spec["runtimeClassName"], "gvisor");
    assert_eq!(spec["automountServiceAccountToken"], false);
    let ctr = &spec["containers"][0];
    assert_eq!(ctr["resources"]["limits"]["cpu"], "1");
    assert_eq!(ctr["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        ctr["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        !spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("kube-api-access-")),
        "no service-account token volume: {spec}"
    );
    assert!(
        ctr.get("volumeMounts").is_none()
            || !ctr["volumeMounts"].to_string().contains("serviceaccount"),
        "{ctr}"
    );
    assert_eq!(p["metadata"]["labels"]["sandbox.gke.io/sandbox"], "true");
    let node = spec["nodeName"].as_str().unwrap_or("");
    assert!(
        node.starts_with("gvisor-"),
        "scheduled on a gVisor node through the RuntimeClass, got {node:?}"
    );

    let np = get_json(
        c,
        &["networkpolicy", "sandgate-default-deny", "-n", &ns.name],
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
}

#[test]
fn pods_outside_sandbox_scope_are_untouched_and_never_reach_the_webhook() {
    let c = cluster();
    // Exclusive: the webhook's request counter must only see this test.
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "plain", false);
    // (Pool pods the shared reconciler may be making count too: it makes none of this
    // test's, and the gate keeps other tests from making more.)
    let before = c.webhook_requests("Pod");
    let mut p = pod("regular", &ns.name);
    p["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let o = create(c, &p);
    assert!(o.status.success(), "{}", out(&o));
    let got = get_json(c, &["pod", "regular", "-n", &ns.name]);
    assert!(got["spec"].get("runtimeClassName").is_none(), "not mutated");
    assert!(
        got["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("sandbox.gke.io/sandbox").is_none())
    );
    assert_eq!(
        c.webhook_requests("Pod"),
        before,
        "the apiserver never called sandgate"
    );
    let o = c.kubectl(&["get", "networkpolicy", "-n", &ns.name, "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "no policy in an unenforced namespace"
    );

    // The counter does count: a labelled pod in the same namespace is sent to sandgate.
    let mut labelled = pod("labelled", &ns.name);
    labelled["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": "x"});
    let o = create(c, &labelled);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        c.webhook_requests("Pod") >= before + 2,
        "mutate and validate were called for the labelled pod"
    );
    let got = get_json(c, &["pod", "labelled", "-n", &ns.name]);
    assert_eq!(got["spec"]["runtimeClassName"], "gvisor");
}

#[test]
fn server_dry_run_shows_denials_and_warnings_and_creates_nothing() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "dryrun", true);

    let bad_template = format!(
        "{{\"apiVersion\": \"sandbox.gke.io/v1\", \"kind\": \"SandboxTemplate\", \"metadata\": {{\"name\": \"bad\", \"namespace\": \"{}\"}}, \
         \"spec\": {{\"template\": {{\"spec\": {{\"containers\": [{{\"name\": \"c\", \"image\": \"busybox\", \"securityContext\": {{\"privileged\": true}}}}]}}}}}}}}",
        ns.name
    );
    let o = c.kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&bad_template),
    );
    assert!(!o.status.success());
    let text = out(&o);
    assert!(
        text.contains("sandgate denied") && text.contains("[privileged]"),
        "{text}"
    );

    let mut bad_pod = pod("bad", &ns.name);
    bad_pod["spec"]["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}]);
    let o = c.kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&bad_pod.to_string()),
    );
    assert!(!o.status.success());
    assert!(out(&o).contains("[host-path]"), "{}", out(&o));

    // The article's template in this namespace: accepted, with the policy warnings.
    let article = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/sandbox-template.yaml"
    ))
    .unwrap();
    let article = article.replace("namespace: default", &format!("namespace: {}", ns.name));
    let o = c.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&article));
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("Warning: policy sandboxtemplate.egress"),
        "{}",
        out(&o)
    );

    // A good pod on dry-run: admitted, but neither it nor the NetworkPolicy exists.
    let o = c.kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&pod("good", &ns.name).to_string()),
    );
    assert!(o.status.success(), "{}", out(&o));
    for (kind, name) in [
        (
            "sandboxtemplates.sandbox.gke.io",
            "agent-execution-template",
        ),
        ("sandboxtemplates.sandbox.gke.io", "bad"),
        ("pod", "good"),
        ("pod", "bad"),
    ] {
        let o = c.kubectl(&["get", kind, name, "-n", &ns.name]);
        assert!(
            !o.status.success(),
            "{kind}/{name} must not exist after dry-run"
        );
    }
    // The default-deny side effect, where nothing else makes it: a namespace that is not
    // enforced (the reconciler closes an enforced one the moment it is labelled) and
    // holds no sandbox pod, and a labelled pod on dry-run.
    let plain = Ns::new(c, "dryrun-plain", false);
    let mut labelled = pod("good", &plain.name);
    labelled["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": "x"});
    let o = c.kubectl_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&labelled.to_string()),
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&["get", "networkpolicy", "-n", &plain.name, "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "dry-run has no side effect: {}",
        out(&o)
    );
}

fn must_deny(c: &Cluster, name: &str, object: &Value, rule: &str) {
    let o = create(c, object);
    assert!(!o.status.success(), "{name}: admitted!");
    let text = out(&o);
    assert!(
        text.contains("sandgate denied") && text.contains(rule),
        "{name}: expected {rule}: {text}"
    );
}

#[test]
fn bypass_attempts_are_denied_by_the_real_apiserver() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "bypass", true);
    let n = ns.name.as_str();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut p = pod("bypass", n);
        edit(&mut p);
        p
    };
    must_deny(
        c,
        "privileged",
        &with(&|p| p["spec"]["containers"][0]["securityContext"] = json!({"privileged": true})),
        "[privileged]",
    );
    must_deny(
        c,
        "hostPath",
        &with(&|p| p["spec"]["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}])),
        "[host-path]",
    );
    for (name, volume) in [
        (
            "nfs",
            json!({"name": "v", "nfs": {"server": "10.0.0.5", "path": "/"}}),
        ),
        (
            "gitRepo",
            json!({"name": "v", "gitRepo": {"repository": "https://example.com/x.git"}}),
        ),
        (
            "iscsi",
            json!({"name": "v", "iscsi": {"targetPortal": "10.0.0.6:3260", "iqn": "iqn.2001-04.com.example:s", "lun": 0}}),
        ),
    ] {
        must_deny(
            c,
            name,
            &with(&|p| p["spec"]["volumes"] = json!([volume.clone()])),
            "[volume-types]",
        );
    }
    must_deny(
        c,
        "inline CSI volume (NFS mounted by the node)",
        &with(&|p| {
            p["spec"]["volumes"] = json!([{"name": "v", "csi": {"driver": "nfs.csi.k8s.io",
                "volumeAttributes": {"server": "10.0.0.5", "share": "/"}}}]);
        }),
        "[inline-csi]",
    );
    let twin = with(&|p| {
        p["metadata"]["name"] = json!("scratch");
        p["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
    });
    let o = create(c, &twin);
    assert!(
        o.status.success(),
        "an emptyDir volume is allowed: {}",
        out(&o)
    );
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        must_deny(
            c,
            field,
            &with(&|p| p["spec"][field] = json!(true)),
            "[host-namespaces]",
        );
    }
    must_deny(
        c,
        "runc",
        &with(&|p| p["spec"]["runtimeClassName"] = json!("runc")),
        "[runtime-class]",
    );
    must_deny(
        c,
        "nodeName",
        &with(&|p| p["spec"]["nodeName"] = json!("gvisor-1")),
        "[node-name]",
    );
    must_deny(
        c,
        "projected token",
        &with(
            &|p| p["spec"]["volumes"] = json!([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
        ),
        "[service-account-token]",
    );
    must_deny(
        c,
        "capabilities",
        &with(&|p| {
            p["spec"]["containers"][0]["securityContext"] =
                json!({"capabilities": {"add": ["SYS_ADMIN"]}})
        }),
        "[capabilities]",
    );
    must_deny(
        c,
        "template label by a user",
        &with(&|p| p["metadata"]["labels"] = json!({"sandbox.gke.io/template": "wide"})),
        "[template-label]",
    );

    // Updates of a running sandbox pod.
    let o = create(c, &pod("target", n));
    assert!(o.status.success(), "{}", out(&o));
    wait_running(c, n, "target");

    let o = c.kubectl(&["label", "pod", "target", "-n", n, "sandbox.gke.io/sandbox-"]);
    assert!(
        !o.status.success() && out(&o).contains("[sandbox-labels]"),
        "label removal: {}",
        out(&o)
    );

    // kubectl debug: a privileged ephemeral container through the subresource.
    let o = c.kubectl(&[
        "debug",
        "-n",
        n,
        "target",
        "--image=busybox",
        "--profile=sysadmin",
        "-c",
        "dbg",
        "--attach=false",
    ]);
    assert!(
        !o.status.success() && out(&o).contains("[privileged]"),
        "kubectl debug --profile=sysadmin: {}",
        out(&o)
    );
    let o = c.kubectl(&[
        "debug",
        "-n",
        n,
        "target",
        "--image=busybox",
        "--profile=restricted",
        "-c",
        "dbg2",
        "--attach=false",
    ]);
    assert!(
        o.status.success(),
        "kubectl debug --profile=restricted is fine: {}",
        out(&o)
    );

    // Through pods/resize: a limit raised, lowered, and lowered to zero (no limit).
    let resize = |limit: &str, request: &str| {
        let patch = json!({"spec": {"containers": [{"name": "sandbox",
            "resources": {"limits": {"cpu": limit}, "requests": {"cpu": request}}}]}});
        c.kubectl(&[
            "patch",
            "pod",
            "target",
            "-n",
            n,
            "--subresource=resize",
            "--type=strategic",
            "-p",
            &patch.to_string(),
        ])
    };
    let o = resize("2", "500m");
    assert!(
        !o.status.success() && out(&o).contains("[resize-limits]"),
        "resize up: {}",
        out(&o)
    );
    let o = resize("750m", "500m");
    assert!(o.status.success(), "resize down is allowed: {}", out(&o));
    let o = resize("0", "0");
    assert!(
        !o.status.success() && out(&o).contains("[resource-limits]"),
        "resize to zero: {}",
        out(&o)
    );

    // Limits that do not limit: zero (the pod would run unbounded), and a pod of many
    // containers each at the per-container cap.
    for (resource, zero) in [("cpu", "0"), ("memory", "0Mi")] {
        must_deny(
            c,
            &format!("{resource} limit of zero"),
            &with(&|p| {
                p["spec"]["containers"][0]["resources"] =
                    json!({"limits": {resource: zero}, "requests": {resource: zero}});
            }),
            "[resource-limits]",
        );
    }
    // Scheduling and devices: a system-* priority class, a DRA device claim.
    must_deny(
        c,
        "cluster-critical priority class",
        &with(&|p| p["spec"]["priorityClassName"] = json!("system-cluster-critical")),
        "[priority-class]",
    );
    must_deny(
        c,
        "a device through dynamic resource allocation",
        &with(&|p| {
            p["spec"]["resourceClaims"] =
                json!([{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]);
            p["spec"]["containers"][0]["resources"] = json!({"claims": [{"name": "gpu"}]});
        }),
        "[device-claims]",
    );
    let containers = |count: usize| {
        (0..count)
            .map(|i| json!({"name": format!("c{i}"), "image": "python:3.11-slim", "resources": {"limits": {"cpu": "4"}}}))
            .collect::<Vec<_>>()
    };
    must_deny(
        c,
        "three containers at the cap",
        &with(&|p| p["spec"]["containers"] = json!(containers(3))),
        "[pod-resource-caps]",
    );
    let twin = with(&|p| {
        p["metadata"]["name"] = json!("two-at-cap");
        p["spec"]["containers"] = json!(containers(2));
    });
    let o = create(c, &twin);
    assert!(
        o.status.success(),
        "two containers at the cap are one pod at the pod cap: {}",
        out(&o)
    );

    // A Deployment whose pods would be privileged is refused when it is created, with
    // the field named in the Deployment; its compliant twin is admitted and its pods run.
    let deploy = |name: &str, privileged: bool| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": n},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": privileged}}]}}}
        })
    };
    let o = create(c, &deploy("sneaky", true));
    assert!(
        !o.status.success(),
        "a privileged Deployment is refused at create"
    );
    let text = out(&o);
    assert!(
        text.contains("deployment")
            && text.contains("spec.template.spec.containers[0].securityContext.privileged")
            && text.contains("[privileged]"),
        "{text}"
    );
    let o = create(c, &deploy("honest", false));
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "the compliant Deployment's pod runs",
        Duration::from_secs(60),
        || {
            let pods = get_json(c, &["pods", "-n", n, "-l", "app=honest"]);
            pods["items"][0]["status"]["phase"] == "Running"
                && pods["items"][0]["spec"]["runtimeClassName"] == "gvisor"
        },
    );
    // An update that would make its pods privileged is refused too.
    let o = c.kubectl(&[
        "patch", "deployment", "honest", "-n", n, "--type=json", "-p",
        r#"[{"op": "add", "path": "/spec/template/spec/containers/0/securityContext/privileged", "value": true}]"#,
    ]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("[privileged]"), "{}", out(&o));
}

/// Outside enforced namespaces only workloads whose pods carry a sandbox label reach
/// sandgate: a labelled CronJob that breaks a rule is refused, an unrelated one never
/// calls the webhook.
#[test]
fn labelled_workloads_are_judged_and_unrelated_ones_never_reach_sandgate() {
    let c = cluster();
    // Alone, so the webhook's request counter counts only this test's requests.
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "workloads", false);
    let n = ns.name.as_str();
    let cron = |name: &str, labels: Value| {
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": n},
            "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "hostPID": true,
                         "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    let o = create(
        c,
        &cron("sandboxed", json!({"sandbox.gke.io/sandbox": "job"})),
    );
    assert!(
        !o.status.success(),
        "a labelled CronJob with hostPID is refused"
    );
    assert!(
        out(&o).contains("spec.jobTemplate.spec.template.spec.hostPID"),
        "{}",
        out(&o)
    );
    let before = c.webhook_requests("CronJob");
    let o = create(c, &cron("ordinary", json!({"app": "batch"})));
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(
        c.webhook_requests("CronJob"),
        before,
        "an unrelated workload never reaches sandgate"
    );
}

#[test]
fn with_the_webhook_down_sandbox_pods_fail_closed_and_others_do_not_wait() {
    let c = cluster();
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let enforced = Ns::new(c, "down-enforced", true);
    let plain = Ns::new(c, "down-plain", false);
    c.stop_webhook();
    let o = create(c, &pod("sandbox", &enforced.name));
    let refused = !o.status.success();
    let text = out(&o);
    let o2 = create(c, &pod("ordinary", &plain.name));
    c.restart_webhook();
    assert!(
        refused,
        "a sandbox pod was admitted with the webhook down: {text}"
    );
    assert!(text.contains("failed calling webhook"), "{text}");
    assert!(
        o2.status.success(),
        "pods outside sandbox scope never wait on sandgate: {}",
        out(&o2)
    );

    // Back up: sandbox pods are admitted again.
    wait("webhook back", Duration::from_secs(30), || {
        create(c, &pod("again", &enforced.name)).status.success()
    });
}

#[test]
fn deploy_manifests_apply_on_a_real_apiserver() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    let o = c.kubectl(&["apply", "--dry-run=client", "-k", deploy]);
    assert!(o.status.success(), "client dry-run: {}", out(&o));
    // Server-side validation of every object, as a user applying deploy/ would get it
    // (client-side apply, so the CRDs must also fit the last-applied annotation).
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sandgate-system"}});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&ns.to_string()));
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&["apply", "--dry-run=server", "-k", deploy]);
    assert!(o.status.success(), "server dry-run: {}", out(&o));
    let text = out(&o);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/sandboxtemplates.sandbox.gke.io",
        "deployment.apps/sandgate",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/sandgate",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/sandgate",
        "runtimeclass.node.k8s.io/gvisor",
        "clusterrole.rbac.authorization.k8s.io/sandgate",
    ] {
        assert!(text.contains(object), "{object} missing from: {text}");
    }
}

/// A namespace user allowed by RBAC to manage NetworkPolicies (not a cluster admin).
const AS_ALICE: [&str; 2] = ["--as=alice", "--as-group=system:authenticated"];

fn network_policy_admin(c: &Cluster, ns: &str) {
    let rbac = np_admin_rbac(ns);
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&rbac.to_string()));
    assert!(o.status.success(), "{}", out(&o));
}

/// Applies `policy` as alice.
fn apply_as_alice(c: &Cluster, policy: &Value) -> Output {
    let mut apply = vec!["apply", "-f", "-"];
    apply.extend_from_slice(&AS_ALICE);
    c.kubectl_stdin(&apply, Some(&policy.to_string()))
}

/// Other NetworkPolicies cannot reopen what the default-deny closes: one that gives
/// sandbox pods egress is refused in an enforced namespace and wherever sandbox pods
/// live, and a sandbox pod is refused where such a policy already selects it. Policies
/// that add nothing, or keep sandbox pods out, pass.
#[test]
fn other_network_policies_may_not_widen_sandbox_egress() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let np = |name: &str, ns: &str, spec: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    let allow_all = json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]});
    let keep_out = json!({"podSelector": {"matchExpressions": [{"key": "sandbox.gke.io/sandbox", "operator": "DoesNotExist"}]},
                          "policyTypes": ["Egress"], "egress": [{}]});
    let refused = |o: &Output, what: &str| {
        assert!(
            !o.status.success() && out(o).contains("[egress-widening]"),
            "{what}: {}",
            out(o)
        );
    };

    // An enforced namespace: every pod is a sandbox pod.
    let enforced = Ns::new(c, "widen-enforced", true);
    let e = enforced.name.as_str();
    network_policy_admin(c, e);
    refused(
        &apply_as_alice(c, &np("allow-all", e, allow_all.clone())),
        "open egress",
    );
    let internet = json!({"podSelector": {"matchLabels": {"app": "agent"}},
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"]}}]}]});
    refused(
        &apply_as_alice(c, &np("internet", e, internet)),
        "the internet for some pods",
    );
    // Ingress from every source, or from outside the cluster: a two-way channel.
    for (name, ingress) in [
        ("ingress-from-all", json!([{}])),
        (
            "ingress-from-outside",
            json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
        ),
    ] {
        let o = apply_as_alice(
            c,
            &np(name, e, json!({"podSelector": {}, "ingress": ingress})),
        );
        assert!(
            !o.status.success() && out(&o).contains("[ingress-widening]"),
            "{name}: {}",
            out(&o)
        );
    }
    for (name, spec) in [
        ("keep-out", keep_out.clone()),
        (
            "ingress-only",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        ),
        (
            "deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ),
    ] {
        let o = apply_as_alice(c, &np(name, e, spec));
        assert!(o.status.success(), "{name} is allowed: {}", out(&o));
    }

    // Elsewhere: refused where a labelled sandbox pod lives, allowed where none does.
    let hosting = Ns::new(c, "widen-hosting", false);
    let h = hosting.name.as_str();
    network_policy_admin(c, h);
    let mut sandbox = pod("sandbox", h);
    sandbox["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": "s"});
    let o = create(c, &sandbox);
    assert!(o.status.success(), "{}", out(&o));
    refused(
        &apply_as_alice(c, &np("allow-all", h, allow_all.clone())),
        "beside a sandbox",
    );
    let o = apply_as_alice(c, &np("keep-out", h, keep_out));
    assert!(o.status.success(), "{}", out(&o));

    let plain = Ns::new(c, "widen-plain", false);
    let p = plain.name.as_str();
    network_policy_admin(c, p);
    let o = apply_as_alice(c, &np("allow-all", p, allow_all));
    assert!(o.status.success(), "no sandbox here: {}", out(&o));
    let web = json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [{}]});
    let o = apply_as_alice(c, &np("web", p, web));
    assert!(o.status.success(), "{}", out(&o));
    // ... and a sandbox pod arriving under it is refused, naming the policy.
    let mut late = pod("late", p);
    late["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": "late"});
    let o = create(c, &late);
    assert!(
        !o.status.success()
            && out(&o).contains("\"allow-all\"")
            && out(&o).contains("[egress-widening]"),
        "{}",
        out(&o)
    );
    // Its twin, an ordinary pod, is none of sandgate's business.
    let o = create(c, &pod("ordinary", p));
    assert!(o.status.success(), "{}", out(&o));
}

fn np_admin_rbac(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "np-admin", "namespace": ns},
         "rules": [{"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "create", "update", "patch", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "np-admin", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "np-admin"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}
    ]})
}

#[test]
fn sandgates_network_policies_are_guarded() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "guard", true);
    let o = create(c, &pod("p", &ns.name));
    assert!(o.status.success(), "{}", out(&o));
    network_policy_admin(c, &ns.name);
    let as_alice = AS_ALICE;
    let mut del = vec![
        "delete",
        "networkpolicy",
        "sandgate-default-deny",
        "-n",
        &ns.name,
    ];
    del.extend_from_slice(&as_alice);
    let o = c.kubectl(&del);
    assert!(
        !o.status.success() && out(&o).contains("[managed-network-policy]"),
        "{}",
        out(&o)
    );
    let mut unlabel = vec![
        "label",
        "networkpolicy",
        "sandgate-default-deny",
        "-n",
        &ns.name,
        "app.kubernetes.io/managed-by-",
    ];
    unlabel.extend_from_slice(&as_alice);
    let o = c.kubectl(&unlabel);
    assert!(
        !o.status.success() && out(&o).contains("[managed-network-policy]"),
        "{}",
        out(&o)
    );
    // Her own policies are hers.
    let own = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "mine", "namespace": ns.name}, "spec": {"podSelector": {}}});
    let o = apply_as_alice(c, &own);
    assert!(o.status.success(), "{}", out(&o));
}

/// sandgate's names prove nothing: a tenant may not create a NetworkPolicy under one,
/// labelled or not (an empty `sandgate-default-deny` would stand in for the real one and
/// leave sandbox pods open), and an object already under the name that is not
/// sandgate's policy is replaced by the real one before the first sandbox pod is
/// admitted. Her other policies stay hers.
#[test]
fn sandgates_names_cannot_be_squatted() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "squat", false);
    let n = ns.name.as_str();
    network_policy_admin(c, n);
    let policy = |name: &str, spec: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": n}, "spec": spec})
    };
    let selects_nothing = json!({"podSelector": {"matchLabels": {"nothing": "here"}}});
    for name in ["sandgate-default-deny", "sandgate-template-python"] {
        let o = apply_as_alice(c, &policy(name, selects_nothing.clone()));
        assert!(
            !o.status.success() && out(&o).contains("[managed-network-policy]"),
            "{name} created by a tenant: {}",
            out(&o)
        );
    }
    let o = apply_as_alice(c, &policy("sandgate-python", selects_nothing.clone()));
    assert!(o.status.success(), "a name of her own: {}", out(&o));

    // One made before sandgate looked (here by an admin, who may): replaced by the real
    // default-deny when the first sandbox pod comes.
    let o = create(c, &policy("sandgate-default-deny", selects_nothing));
    assert!(o.status.success(), "{}", out(&o));
    let mut p = pod("first", n);
    p["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": "first"});
    let o = create(c, &p);
    assert!(o.status.success(), "{}", out(&o));
    let stored: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(get_json(
        c,
        &["networkpolicy", "sandgate-default-deny", "-n", n],
    ))
    .expect("a NetworkPolicy");
    assert!(
        sandgate::netpol::is_default_deny(&stored),
        "the impostor is still there: {stored:?}"
    );

    // One under a template policy's name with sandgate's label too, and no template
    // behind it: the label does not make it sandgate's, its content is judged, and the
    // open egress it gives every pod keeps sandbox pods out.
    let mut ghost = policy(
        "sandgate-template-ghost",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
    );
    ghost["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "sandgate"});
    let o = create(c, &ghost);
    assert!(o.status.success(), "{}", out(&o));
    let mut p = pod("second", n);
    p["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": "second"});
    let o = create(c, &p);
    assert!(
        !o.status.success()
            && out(&o).contains("[egress-widening]")
            && out(&o).contains("sandgate-template-ghost"),
        "a sandbox pod under a labelled impostor: {}",
        out(&o)
    );
    // Twin: without it, the same pod is admitted.
    let o = c.kubectl(&[
        "delete",
        "networkpolicy",
        "sandgate-template-ghost",
        "-n",
        n,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = create(c, &p);
    assert!(o.status.success(), "{}", out(&o));
}

/// The sandbox RuntimeClass cannot be swapped for one without gVisor: a user who may
/// manage RuntimeClasses may not delete it (other classes stay theirs), a cluster admin
/// may not re-create it with another handler, and while it is missing the webhook says
/// it is not ready and its metric drops to 0.
#[test]
fn the_sandbox_runtime_class_cannot_be_swapped() {
    let c = cluster();
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "e2e-runtimeclass-manager"},
         "rules": [{"apiGroups": ["node.k8s.io"], "resources": ["runtimeclasses"],
                    "verbs": ["get", "list", "create", "update", "patch", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "e2e-runtimeclass-manager"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-runtimeclass-manager"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": harness::PLAIN_USER}]}
    ]});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&rbac.to_string()));
    assert!(o.status.success(), "{}", out(&o));

    let o = c.kubectl_as_user(&["delete", "runtimeclass", "gvisor"], None);
    assert!(
        !o.status.success(),
        "a RuntimeClass manager may not delete gvisor"
    );
    assert!(out(&o).contains("[managed-runtime-class]"), "{}", out(&o));
    // Twin: any other class is the manager's to create and delete.
    let other = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                       "metadata": {"name": "e2e-other"}, "handler": "runc"});
    let o = c.kubectl_as_user(&["create", "-f", "-"], Some(&other.to_string()));
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl_as_user(&["delete", "runtimeclass", "e2e-other"], None);
    assert!(o.status.success(), "{}", out(&o));

    // A cluster admin may delete it, but not bring it back with runc.
    assert_eq!(c.webhook_metric("sandgate_runtime_class_ok"), Some(1.0));
    let o = c.kubectl(&["delete", "runtimeclass", "gvisor"]);
    assert!(o.status.success(), "{}", out(&o));
    let swapped = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                         "metadata": {"name": "gvisor"}, "handler": "runc"});
    let o = create(c, &swapped);
    assert!(
        !o.status.success(),
        "gvisor re-created with runc is refused"
    );
    assert!(out(&o).contains("[runtime-class-handler]"), "{}", out(&o));
    wait(
        "readiness reports the missing class",
        Duration::from_secs(30),
        || {
            c.webhook_ready()
                .is_err_and(|r| r.iter().any(|p| p.contains("runtime-class")))
        },
    );
    assert_eq!(c.webhook_metric("sandgate_runtime_class_ok"), Some(0.0));

    // Restored as deploy/ ships it: ready again.
    let rc = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/runtimeclass.yaml");
    let o = c.kubectl(&["apply", "-f", rc]);
    assert!(o.status.success(), "{}", out(&o));
    wait("readiness recovers", Duration::from_secs(30), || {
        c.webhook_ready().is_ok()
    });
    assert_eq!(c.webhook_metric("sandgate_runtime_class_ok"), Some(1.0));
}

/// "No service-account token" holds for legacy token Secrets too: none may be created in
/// an enforced namespace, and no sandbox pod may mount or read one where it exists;
/// ordinary Secrets still work, with a warning that the sandbox can read them.
#[test]
fn legacy_token_secrets_never_reach_a_sandbox() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let token = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
               "metadata": {"name": "bot-token", "namespace": ns,
                            "annotations": {"kubernetes.io/service-account.name": "default"}}})
    };
    let opaque = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "app-config", "namespace": ns}, "stringData": {"k": "v"}})
    };
    // At the source: an enforced namespace refuses the token Secret, not an ordinary one.
    let enforced = Ns::new(c, "tokens-enforced", true);
    let o = create(c, &token(&enforced.name));
    assert!(
        !o.status.success(),
        "a token Secret in an enforced namespace is refused"
    );
    assert!(out(&o).contains("[service-account-token]"), "{}", out(&o));
    assert!(create(c, &opaque(&enforced.name)).status.success());

    // At the pod: where such a Secret exists, a sandbox pod may not mount or read it.
    let open = Ns::new(c, "tokens-open", false);
    let n = open.name.as_str();
    assert!(create(c, &token(n)).status.success());
    assert!(create(c, &opaque(n)).status.success());
    wait(
        "the token controller fills the Secret",
        Duration::from_secs(30),
        || get_json(c, &["secret", "bot-token", "-n", n])["data"]["token"].is_string(),
    );
    let pod_with = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut p = pod(name, n);
        p["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": name});
        edit(&mut p);
        p
    };
    must_deny(
        c,
        "token volume",
        &pod_with("mounts-token", &|p| {
            p["spec"]["volumes"] = json!([{"name": "t", "secret": {"secretName": "bot-token"}}])
        }),
        "[service-account-token]",
    );
    must_deny(
        c,
        "token env",
        &pod_with(
            "reads-token",
            &|p| p["spec"]["containers"][0]["env"] = json!([{"name": "T", "valueFrom": {"secretKeyRef": {"name": "bot-token", "key": "token"}}}]),
        ),
        "[service-account-token]",
    );
    let o = create(
        c,
        &pod_with("reads-config", &|p| {
            p["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "app-config"}}])
        }),
    );
    assert!(
        o.status.success(),
        "an ordinary Secret is allowed: {}",
        out(&o)
    );
    assert!(
        out(&o).contains("Warning") && out(&o).contains("app-config"),
        "kubectl shows the warning: {}",
        out(&o)
    );

    // Late: a sandbox pod names a Secret that does not exist yet (admitted: nothing to
    // judge), and the Secret is then created as a token, which the kubelet would mount.
    // The namespace now holds sandbox pods, so the Secret is refused at the source.
    let o = create(
        c,
        &pod_with(
            "waits-for-token",
            &|p| {
                p["spec"]["volumes"] =
                    json!([{"name": "t", "secret": {"secretName": "late-token", "optional": true}}])
            },
        ),
    );
    assert!(o.status.success(), "{}", out(&o));
    let mut late = token(n);
    late["metadata"]["name"] = json!("late-token");
    let o = create(c, &late);
    assert!(
        !o.status.success() && out(&o).contains("[service-account-token]"),
        "a token Secret created after the sandbox pod that names it is refused: {}",
        out(&o)
    );
    let mut renamed = opaque(n);
    renamed["metadata"]["name"] = json!("late-token");
    assert!(
        create(c, &renamed).status.success(),
        "an ordinary Secret of that name still passes"
    );
}

/// A PersistentVolumeClaim is only a name: a sandbox pod may mount one only when the
/// volume it is bound to, or names, is storage of its own (CSI, a cloud disk), never
/// the node's disk (hostPath, local) or a network share, and only when the claim exists
/// and cannot be bound later to a pre-made volume of the tenant's choosing.
#[test]
fn volume_claims_cannot_smuggle_in_the_nodes_disk_or_a_network_share() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "claims", false);
    let n = ns.name.as_str();
    // Volumes an admin made for something else (cluster-scoped: named for the test).
    let pv = |name: &str, source: Value| {
        let mut spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                              "persistentVolumeReclaimPolicy": "Retain", "storageClassName": ""});
        if let (Some(s), Some(src)) = (spec.as_object_mut(), source.as_object()) {
            s.extend(src.clone());
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
               "metadata": {"name": format!("{n}-{name}")}, "spec": spec})
    };
    let volumes = [
        ("host", json!({"hostPath": {"path": "/"}})),
        (
            "share",
            json!({"nfs": {"server": "10.0.0.1", "path": "/exports"}}),
        ),
        (
            "disk",
            json!({"csi": {"driver": "disk.csi.example.com", "volumeHandle": "vol-1"}}),
        ),
    ];
    for (name, source) in &volumes {
        let o = create(c, &pv(name, source.clone()));
        assert!(o.status.success(), "{}", out(&o));
    }
    let claim = |name: &str, spec: Value| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": name, "namespace": n}, "spec": spec})
    };
    let request = |extra: Value| {
        let mut s = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        s
    };
    for (name, spec) in [
        (
            "host",
            request(json!({"storageClassName": "", "volumeName": format!("{n}-host")})),
        ),
        (
            "share",
            request(json!({"storageClassName": "", "volumeName": format!("{n}-share")})),
        ),
        (
            "disk",
            request(json!({"storageClassName": "", "volumeName": format!("{n}-disk")})),
        ),
        // More than any pre-made volume holds, so it stays unbound.
        (
            "static",
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                          "resources": {"requests": {"storage": "100Gi"}}}),
        ),
        (
            "provisioned",
            request(json!({"storageClassName": "standard"})),
        ),
    ] {
        let o = create(c, &claim(name, spec));
        assert!(o.status.success(), "{}", out(&o));
    }
    let pod_with = |name: &str, claim: &str| {
        let mut p = pod(name, n);
        p["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": name});
        p["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        p
    };
    must_deny(
        c,
        "the node's disk",
        &pod_with("on-host", "host"),
        "[host-path]",
    );
    must_deny(
        c,
        "an NFS share",
        &pod_with("on-share", "share"),
        "[volume-types]",
    );
    must_deny(
        c,
        "a claim bound later to a pre-made volume",
        &pod_with("on-static", "static"),
        "[volume-types]",
    );
    must_deny(
        c,
        "a claim that does not exist yet",
        &pod_with("on-nothing", "nothing"),
        "[volume-types]",
    );
    // Twins: a CSI volume, and a claim a provisioner will satisfy.
    for (name, claim) in [("on-disk", "disk"), ("on-provisioned", "provisioned")] {
        let o = create(c, &pod_with(name, claim));
        assert!(o.status.success(), "{name}: {}", out(&o));
    }
    // An ordinary pod is none of sandgate's business, whatever it mounts.
    let mut plain = pod("plain-on-host", n);
    plain["spec"]["volumes"] =
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "host"}}]);
    let o = create(c, &plain);
    assert!(o.status.success(), "{}", out(&o));
    for (name, _) in &volumes {
        let o = c.kubectl(&["delete", "pv", &format!("{n}-{name}"), "--wait=false"]);
        assert!(o.status.success(), "{}", out(&o));
    }
}

/// What a sandbox pod's admission reads is bounded: a namespace filled with more
/// NetworkPolicies than sandgate reads for one admission refuses sandbox pods with a
/// reason (fail closed) instead of making each admission read and judge them all.
#[test]
fn a_namespace_full_of_policies_is_refused_with_a_reason_not_read_without_end() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "many-policies", false);
    let n = ns.name.as_str();
    let policies = |from: usize, to: usize| {
        let items: Vec<Value> = (from..to)
            .map(|i| {
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": format!("p{i}"), "namespace": n},
                       "spec": {"podSelector": {"matchLabels": {"nothing": "here"}}}})
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    };
    let sandbox = |name: &str| {
        let mut p = pod(name, n);
        p["metadata"]["labels"] = json!({"sandbox.gke.io/sandbox": name});
        p
    };
    let max = sandgate::facts::MAX_LISTED;
    // At the bound (sandgate's default-deny comes on top of these): admitted.
    let o = c.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&policies(0, max - 1).to_string()),
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = create(c, &sandbox("at-the-bound"));
    assert!(o.status.success(), "{}", out(&o));
    // One more: refused, saying why.
    let o = c.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&policies(max - 1, max + 1).to_string()),
    );
    assert!(o.status.success(), "{}", out(&o));
    must_deny(
        c,
        "too many policies",
        &sandbox("past-the-bound"),
        "more than 1000",
    );
}
