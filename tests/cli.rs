//! The binary as a user runs it: exit codes, reports, configuration errors.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn sandgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run sandgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_passes_the_article_examples() {
    let o = sandgate(&["check", "deploy/examples/"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("PASS  SandboxTemplate default/agent-execution-template"),
        "{out}"
    );
    assert!(
        out.contains("PASS  Pod agents/agent-run"),
        "the pod in the enforced namespace is judged: {out}"
    );
}

#[test]
fn check_denies_bad_manifests_with_named_reasons() {
    let o = sandgate(&["check", "tests/manifests/bad"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("[privileged] spec.containers[0].securityContext.privileged"),
        "{out}"
    );
    assert!(
        out.contains("[host-path] spec.volumes[0].hostPath"),
        "{out}"
    );
    assert!(
        out.contains("[runtime-class] spec.runtimeClassName"),
        "{out}"
    );
    assert!(out.contains("2 objects: 0 passed, 2 denied"), "{out}");
}

#[test]
fn check_json_report_and_workloads() {
    let o = sandgate(&["check", "--output", "json", "tests/manifests/mixed.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let results = report["results"].as_array().unwrap();
    let by_kind = |k: &str| results.iter().find(|r| r["kind"] == k).unwrap();
    assert_eq!(by_kind("Deployment")["verdict"], "deny");
    assert_eq!(
        by_kind("Deployment")["violations"][0]["field"],
        "spec.template.spec.hostNetwork"
    );
    assert_eq!(by_kind("Job")["verdict"], "skip", "not a sandbox workload");
    assert_eq!(by_kind("ConfigMap")["verdict"], "skip");
    assert_eq!(report["summary"]["denied"], 1);

    // --all judges the unlabelled Job too.
    let o = sandgate(&["check", "--all", "-o", "json", "tests/manifests/mixed.yaml"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let job = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "Job")
        .unwrap()
        .clone();
    assert_eq!(job["verdict"], "pass", "{job}");
}

#[test]
fn check_reads_stdin_and_reports_input_errors() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {sandbox.gke.io/sandbox: x}}\nspec:\n  hostPID: true\n  containers: [{name: c, image: busybox}]\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("[host-namespaces] spec.hostPID"));

    let o = sandgate(&["check", "no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("cannot read no/such/file.yaml"),
        "{}",
        text(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Pod\nmetadata: [unclosed\n").unwrap();
    let o = sandgate(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("not valid YAML"), "{}", text(&o));
}

#[test]
fn bad_configuration_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(
        &cfg,
        "resources:\n  cpu: {defaultRequest: 2, defaultLimit: 1, maxLimit: 4}\n",
    )
    .unwrap();
    for cmd in ["serve", "check"] {
        let mut args = vec![cmd, "--config", cfg.to_str().unwrap()];
        if cmd == "check" {
            args.push("deploy/examples");
        } else {
            args.push("--dev");
        }
        let o = sandgate(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o));
        assert!(
            text(&o).contains("defaultRequest 2 is above defaultLimit 1"),
            "{cmd}: {}",
            text(&o)
        );
    }
    let o = sandgate(&["check", "--max-limit", "gpu=1", "deploy/examples"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown resource"), "{}", text(&o));
    let o = sandgate(&[
        "serve",
        "--tls-cert",
        "/nonexistent/tls.crt",
        "--tls-key",
        "/nonexistent/tls.key",
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("/nonexistent/tls.crt"), "{}", text(&o));
}

#[test]
fn version_help_and_crds() {
    let o = sandgate(&["version"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("sandgate {}", env!("CARGO_PKG_VERSION"))
    );
    let o = sandgate(&["--help"]);
    let out = text(&o);
    for cmd in ["serve", "check", "crds", "version"] {
        assert!(out.contains(cmd), "{out}");
    }
    let o = sandgate(&["check", "--help"]);
    assert!(text(&o).contains("Exit code: 0 all"), "{}", text(&o));
    let o = sandgate(&["crds"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("kind: CustomResourceDefinition").count(), 3);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .args(["serve", "--dev", "--addr", &addr, "--certs-dir"])
        .arg(dir.path().join("certs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        dir.path().join("certs/ca.crt").exists(),
        "dev CA made on first start"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let log = text(&o);
    assert!(
        log.contains("shutting down") && log.contains("sandgate stopped"),
        "{log}"
    );
}

#[test]
fn bad_templates_are_denied_with_one_named_reason_each() {
    let o = sandgate(&["check", "-o", "json", "tests/manifests/bad-templates"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let expect = [
        // 0.0.0.0/0 reaches the three IPv4 host endpoints (link-local, Azure's,
        // Alibaba's): refused by the built-in reach analysis before any policy runs.
        (
            "egress-everywhere",
            "egress-reach",
            "spec.networkPolicy.egress[0].to[0].ipBlock",
            3,
        ),
        (
            "host-path",
            "host-path",
            "spec.template.spec.volumes[0].hostPath",
            1,
        ),
        ("huge-pool", "policy", "sandboxtemplate.pool", 1),
        (
            "privileged",
            "privileged",
            "spec.template.spec.containers[0].securityContext.privileged",
            1,
        ),
    ];
    for (name, rule, field, count) in expect {
        let r = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap();
        assert_eq!(r["verdict"], "deny", "{name}");
        let v = r["violations"].as_array().unwrap();
        assert_eq!(v.len(), count, "{name}: {v:?}");
        for v in v {
            assert_eq!(v["rule"], rule, "{name}");
            assert_eq!(v["field"], field, "{name}");
        }
    }
    // The same files with policies off: only the built-in rules remain, and a pool of
    // 10,000 is still refused, by the namespace's warm-sandbox budget.
    let o = sandgate(&[
        "check",
        "--no-policies",
        "-o",
        "json",
        "tests/manifests/bad-templates",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["summary"]["denied"], 4, "{report}");
    let huge = report["results"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "huge-pool"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        huge["violations"][0]["rule"], "warm-pool-replicas",
        "{huge}"
    );
}

#[test]
fn policy_test_runs_the_shipped_tests_and_reports_failures() {
    let o = sandgate(&["policy", "test"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(" passed, 0 failed"), "{}", text(&o));

    let o = sandgate(&["policy", "test", "-o", "json", "policies"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["summary"]["passed"].as_u64().unwrap() >= 25);
    assert_eq!(report["summary"]["failed"], 0);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package sandgate.pod.p\nimport rego.v1\ndeny contains \"x\" if true\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package sandgate.pod.p_test\nimport rego.v1\nimport data.sandgate.pod.p\ntest_ok if { count(p.deny) == 1 }\ntest_bad if { count(p.deny) == 0 }\n",
    )
    .unwrap();
    let o = sandgate(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FAIL  data.sandgate.pod.p_test.test_bad"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("1 passed, 1 failed"), "{}", text(&o));

    std::fs::write(
        dir.path().join("p.rego"),
        "package sandgate.pod.p\ndeny contains if {\n",
    )
    .unwrap();
    let o = sandgate(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("p.rego"), "{}", text(&o));
    let o = sandgate(&[
        "check",
        "--policies",
        dir.path().to_str().unwrap(),
        "deploy/examples",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a broken policy set is an error for check too: {}",
        text(&o)
    );
}
