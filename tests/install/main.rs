//! sandgate installed as a platform engineer installs it: the image built here
//! (scripts/build-image.sh, of the binary this test build made) and imported into the real node's containerd, `helm install`
//! of charts/sandgate into a cluster that has no sandgate at all, self-managed TLS, two
//! replicas behind the Service the apiserver calls. Then the article's walkthrough
//! through it, a replica deleted mid-traffic, and `helm uninstall` leaving a cluster
//! where ordinary pods are created again. Needs the real node (see tests/realnode).

#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../realnode/node.rs"]
mod node;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, Nodes};
use serde_json::{Value, json};

const NS: &str = "sandgate-system";
/// Where the node's pods reach the apiserver (node::forward_to_apiserver).
const API_ON_BRIDGE: (&str, u16) = (node::GATEWAY, 6443);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_slice(&c.kubectl(&a).stdout).unwrap_or(Value::Null)
}

/// The last line a build script prints: the path of what it built.
fn built(script: &str, args: &[&str]) -> PathBuf {
    let o = Command::new("bash")
        .arg(root().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(o.status.success(), "{script} failed: {}", out(&o));
    let path = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(Path::new(&path).exists(), "{script} printed {path:?}");
    PathBuf::from(path)
}

fn helm(c: &Cluster, helm: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
        .args(args)
        .env("HELM_CACHE_HOME", c.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", c.dir().join("helm/config"))
        .env("HELM_DATA_HOME", c.dir().join("helm/data"))
        .output()
        .expect("helm runs")
}

fn bare_node() -> Option<&'static Cluster> {
    node::can_start().then(|| harness::cluster_with(Nodes::Bare(node::start)))
}

fn replicas(c: &Cluster) -> Vec<(String, bool)> {
    get_json(
        c,
        &["pods", "-n", NS, "-l", "app.kubernetes.io/name=sandgate"],
    )["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
            )
        })
        .collect()
}

fn sandbox_pod(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "python:3.11-slim",
                                 "command": ["python3", "-c", "print(1)"]}]},
    })
}

#[test]
fn helm_installs_sandgate_that_runs_the_walkthrough_and_uninstalls_cleanly() {
    let Some(c) = bare_node() else { return };
    // The image of the binary this test build made (the one every other test ran), packed
    // by the same script as the release image: the crate is compiled once.
    let image = built(
        "scripts/build-image.sh",
        &["--binary", env!("CARGO_BIN_EXE_sandgate")],
    );
    node::import_image(c.dir(), &image).expect("the image imports");
    let helm_bin = built("scripts/build-helm.sh", &[]);
    node::forward_to_apiserver(
        &format!("{}:{}", API_ON_BRIDGE.0, API_ON_BRIDGE.1),
        c.api_port,
    )
    .expect("the apiserver is reachable from the pod network");

    // 1. helm install, from zero (the chart brings the CRDs, RBAC, RuntimeClass,
    //    webhooks); --wait returns once both replicas are Ready, which they are only
    //    with a serving certificate loaded.
    let env = json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": API_ON_BRIDGE.0},
        {"name": "KUBERNETES_SERVICE_PORT", "value": API_ON_BRIDGE.1.to_string()},
    ]);
    let started = Instant::now();
    let chart = root().join("charts/sandgate").display().to_string();
    let o = helm(
        c,
        &helm_bin,
        &[
            "install",
            "sandgate",
            &chart,
            "--namespace",
            NS,
            "--create-namespace",
            "--set",
            "image.pullPolicy=Never,resources.requests.cpu=10m",
            "--set-json",
            &format!("extraEnv={env}"),
            // The one node is the gVisor node, tainted for sandboxes.
            "--set-json",
            r#"tolerations=[{"key":"sandbox.gke.io/runtime","operator":"Exists","effect":"NoSchedule"}]"#,
            "--wait",
            "--timeout=5m",
        ],
    );
    let pods_now = || out(&c.kubectl(&["get", "pods", "-A", "-o", "wide"]));
    assert!(
        o.status.success(),
        "helm install: {}\n{}",
        out(&o),
        pods_now()
    );
    eprintln!("helm install --wait: {:?}", started.elapsed());
    let up = replicas(c);
    assert_eq!(up.len(), 2, "{up:?}");
    assert!(up.iter().all(|(_, ready)| *ready), "{up:?}");

    // Self-managed TLS: the Secret, owned by the Service, and both caBundles written.
    let secret = get_json(c, &["secret", "sandgate-tls", "-n", NS]);
    assert_eq!(secret["type"], "kubernetes.io/tls", "{secret}");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Service");
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let cfg = get_json(c, &[kind, "sandgate"]);
        let bundles: Vec<&Value> = cfg["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| &w["clientConfig"]["caBundle"])
            .collect();
        assert!(!bundles.is_empty());
        assert!(
            bundles.iter().all(|b| *b == &secret["data"]["ca.crt"]),
            "{kind}: every entry trusts the Secret's CA"
        );
    }
    let holder = get_json(c, &["lease", "sandgate-tls", "-n", NS])["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        up.iter().any(|(n, _)| *n == holder),
        "TLS leader {holder:?} is a replica"
    );

    // 2. The article: its template gets its warm gVisor sandboxes (as many as the node's
    //    CPUs hold: 500m each), a claim binds to one.
    let template = root().join("deploy/examples/sandbox-template.yaml");
    let o = c.kubectl(&["apply", "-f", &template.display().to_string()]);
    assert!(o.status.success(), "{}", out(&o));
    let running_gvisor = || {
        get_json(
            c,
            &[
                "pods",
                "-n",
                "default",
                "-l",
                "sandbox.gke.io/template=agent-execution-template",
            ],
        )["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["spec"]["runtimeClassName"] == "gvisor"
            })
            .count()
    };
    let cpu = get_json(c, &["node", harness::REAL_NODE])["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let millis = cpu
        .strip_suffix('m')
        .map(|m| m.parse::<u64>().unwrap_or(0))
        .unwrap_or_else(|| cpu.parse::<u64>().unwrap_or(0) * 1000);
    // What the two sandgate replicas leave (10m each), in 500m sandboxes, at most five.
    let fit = usize::try_from(millis.saturating_sub(20) / 500)
        .unwrap_or(0)
        .min(5);
    assert!(fit >= 1, "room for a sandbox on the node ({cpu})");
    wait(
        &format!("{fit} Running gVisor sandboxes"),
        Duration::from_secs(300),
        || running_gvisor() >= fit,
    );
    eprintln!(
        "{} Running gVisor sandboxes (node CPU {cpu})",
        running_gvisor()
    );
    let claim = json!({"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
        "metadata": {"name": "agent-run", "namespace": "default"},
        "spec": {"templateName": "agent-execution-template"}});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&claim.to_string()));
    assert!(o.status.success(), "{}", out(&o));
    wait("the claim Bound", Duration::from_secs(120), || {
        get_json(
            c,
            &["sandboxclaims.sandbox.gke.io", "agent-run", "-n", "default"],
        )["status"]["phase"]
            == "Bound"
    });

    // 3. Denied through the Service: a privileged pod in an enforced namespace.
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "agents", "labels": {"sandbox.gke.io/enforce": "true"}}});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&ns.to_string()));
    assert!(o.status.success(), "{}", out(&o));
    let mut privileged = sandbox_pod("escape", "agents");
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let o = c.kubectl_stdin(&["create", "-f", "-"], Some(&privileged.to_string()));
    assert!(!o.status.success(), "a privileged sandbox pod was admitted");
    assert!(
        out(&o).contains("denied the request") && out(&o).contains("privileged"),
        "{}",
        out(&o)
    );

    // 4. A replica deleted mid-traffic: sandbox pods keep being admitted (server-side
    //    dry run, through both webhooks) while it drains and its replacement starts.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let c = harness::cluster_with(Nodes::Bare(node::start));
            let (mut calls, mut errors) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                calls += 1;
                let pod = sandbox_pod(&format!("probe-{calls}"), "agents");
                let o = c.kubectl_stdin(
                    &["create", "--dry-run=server", "-f", "-"],
                    Some(&pod.to_string()),
                );
                if !o.status.success() {
                    errors.push(out(&o));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (calls, errors)
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let victim = up[0].0.clone();
    let o = c.kubectl(&["delete", "pod", &victim, "-n", NS, "--wait=false"]);
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "a replacement replica Ready",
        Duration::from_secs(180),
        || {
            let now = replicas(c);
            now.len() == 2 && now.iter().all(|(n, r)| *r && *n != victim)
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (calls, errors) = traffic.join().expect("traffic thread");
    eprintln!(
        "replica deleted mid-traffic: {} of {calls} admissions failed",
        errors.len()
    );
    assert!(calls > 10, "traffic ran ({calls} calls)");
    assert!(
        errors.is_empty(),
        "{} of {calls} failed: {errors:?}",
        errors.len()
    );

    // 5. helm uninstall: sandbox objects first (their finalizers need the reconciler),
    //    then the release. No webhook configuration is left, so ordinary pods are
    //    created in the enforced namespace again; the Secret went with its Service.
    let o = c.kubectl(&[
        "delete",
        "sandboxclaims.sandbox.gke.io",
        "--all",
        "-A",
        "--wait=true",
        "--timeout=120s",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&[
        "delete",
        "-f",
        &template.display().to_string(),
        "--wait=true",
        "--timeout=180s",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = helm(
        c,
        &helm_bin,
        &[
            "uninstall",
            "sandgate",
            "--namespace",
            NS,
            "--wait",
            "--timeout=3m",
        ],
    );
    assert!(o.status.success(), "helm uninstall: {}", out(&o));
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let o = c.kubectl(&["get", kind, "-o", "name"]);
        assert!(
            !out(&o).contains("sandgate"),
            "a {kind} is left behind: {}",
            out(&o)
        );
    }
    let ordinary = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ordinary", "namespace": "agents"},
        "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}});
    let o = c.kubectl_stdin(&["create", "-f", "-"], Some(&ordinary.to_string()));
    assert!(o.status.success(), "after uninstall: {}", out(&o));
    // The RuntimeClass stays (a pre-install hook, never removed: running sandboxes
    // were admitted under it).
    let o = c.kubectl(&["get", "runtimeclass", "gvisor"]);
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "the TLS Secret garbage-collected",
        Duration::from_secs(60),
        || {
            !c.kubectl(&["get", "secret", "sandgate-tls", "-n", NS])
                .status
                .success()
        },
    );
    let _ = c.kubectl(&["delete", "namespace", "agents", "--wait=false"]);
}
