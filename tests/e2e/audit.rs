//! The audit on the real apiserver: what ran before a namespace was enforced is
//! reported in its PolicyReport, the namespace is closed at once, a policy edit shows
//! up without a restart, and `sandgate audit` says the same from the command line.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Cluster, cluster, http_get, spawn_reconciler};
use super::{Ns, create, get_json, out, wait};

/// A pod the webhook's mutation would have produced: it passes every rule as stored.
fn compliant_pod(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtimeClassName": "gvisor",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "sandbox", "image": "python:3.11-slim",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
                    "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"}
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "runAsNonRoot": true,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}
                }
            }]
        }
    })
}

fn privileged_pod(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "python:3.11-slim",
                                 "securityContext": {"privileged": true}}]}
    })
}

/// sandgate's PolicyReport in `ns`, if there is one.
fn report(c: &Cluster, ns: &str) -> Option<Value> {
    let o = c.kubectl(&["get", "policyreport", "sandgate", "-n", ns, "-o", "json"]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

/// The report's results about the object named `name`.
fn results_for(report: &Value, name: &str) -> Vec<Value> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["resources"][0]["name"] == name)
        .cloned()
        .collect()
}

fn has(results: &[Value], result: &str, rule: &str) -> bool {
    results
        .iter()
        .any(|r| r["result"] == result && r["rule"] == rule)
}

#[test]
fn a_pod_running_before_its_namespace_is_enforced_is_reported_and_the_namespace_closed() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "audit-late", false);
    let plain = Ns::new(c, "audit-plain", false);
    // Not sandbox pods yet: the webhook never sees them.
    for (object, n) in [
        (privileged_pod("priv", &ns.name), &ns.name),
        (compliant_pod("fine", &ns.name), &ns.name),
        (privileged_pod("other", &plain.name), &plain.name),
    ] {
        let o = create(c, &object);
        assert!(o.status.success(), "{n}: {}", out(&o));
    }
    assert!(
        !c.kubectl(&[
            "get",
            "networkpolicy",
            "sandgate-default-deny",
            "-n",
            &ns.name
        ])
        .status
        .success(),
        "no default-deny before the label"
    );

    let o = c.kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "sandbox.gke.io/enforce=true",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let labelled = Instant::now();
    wait(
        "the default-deny of the newly enforced namespace",
        Duration::from_secs(15),
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
    eprintln!("default-deny {:?} after the label", labelled.elapsed());

    let mut last = Value::Null;
    wait(
        "the privileged pod failing in the report",
        Duration::from_secs(30),
        || {
            last = report(c, &ns.name).unwrap_or(Value::Null);
            has(&results_for(&last, "priv"), "fail", "privileged")
        },
    );
    eprintln!("reported {:?} after the label", labelled.elapsed());
    let priv_results = results_for(&last, "priv");
    let privileged = priv_results
        .iter()
        .find(|r| r["rule"] == "privileged")
        .cloned()
        .unwrap_or_default();
    assert_eq!(privileged["source"], "sandgate");
    assert_eq!(privileged["policy"], "sandgate");
    assert_eq!(privileged["severity"], "high");
    assert_eq!(
        privileged["properties"]["field"], "spec.containers[0].securityContext.privileged",
        "{privileged}"
    );
    assert_eq!(privileged["resources"][0]["kind"], "Pod");
    assert!(
        privileged["resources"][0]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    // It also runs without gVisor and without limits: each rule is its own result.
    assert!(
        has(&priv_results, "fail", "runtime-class"),
        "{priv_results:?}"
    );
    assert!(
        has(&priv_results, "fail", "resource-limits"),
        "{priv_results:?}"
    );
    // The allowed twin passes, and nothing else of it is reported.
    let fine = results_for(&last, "fine");
    assert!(has(&fine, "pass", "admission"), "{fine:?}");
    assert_eq!(fine.len(), 1, "{fine:?}");
    assert!(
        last["summary"]["fail"].as_u64().unwrap_or(0) >= 3,
        "{}",
        last["summary"]
    );
    assert!(
        last["summary"]["pass"].as_u64().unwrap_or(0) >= 1,
        "{}",
        last["summary"]
    );
    // The audit reported; it did not touch the pods.
    let p = get_json(c, &["pod", "priv", "-n", &ns.name]);
    assert_eq!(
        p["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    assert!(p["metadata"]["deletionTimestamp"].is_null());

    // A Warning event on the failing pod, none on the passing one.
    wait(
        "an AuditFailed event on the pod",
        Duration::from_secs(15),
        || {
            let ev = get_json(
                c,
                &[
                    "events",
                    "-n",
                    &ns.name,
                    "--field-selector",
                    "involvedObject.name=priv",
                ],
            );
            ev["items"].as_array().into_iter().flatten().any(|e| {
                e["reason"] == "AuditFailed"
                    && e["type"] == "Warning"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("privileged"))
            })
        },
    );
    let ev = get_json(
        c,
        &[
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "involvedObject.name=fine",
        ],
    );
    assert!(
        !ev["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "AuditFailed"),
        "{ev}"
    );

    // Metrics on the leader.
    if let Some(port) = c.reconciler_port() {
        wait(
            "sandgate_audit_results for privileged",
            Duration::from_secs(15),
            || {
                http_get(port, "/metrics").is_some_and(|m| {
                    m.lines().any(|l| {
                        l.starts_with("sandgate_audit_results{")
                            && l.contains("rule=\"privileged\"")
                            && l.contains("result=\"fail\"")
                    })
                })
            },
        );
        let m = http_get(port, "/metrics").unwrap_or_default();
        for name in [
            "sandgate_audit_last_run_timestamp_seconds",
            "sandgate_audit_duration_seconds_count",
            "sandgate_audit_api_requests_total",
            "sandgate_audit_reports_enabled 1",
        ] {
            assert!(m.contains(name), "{name} missing from the leader's metrics");
        }
    }

    // A namespace that is not enforced is not audited: its privileged pod is nobody's
    // sandbox.
    assert!(
        report(c, &plain.name).is_none(),
        "a report in {}",
        plain.name
    );

    // Fixing the pod (deleting it) clears its results within an interval.
    let o = c.kubectl(&["delete", "pod", "priv", "-n", &ns.name, "--wait=true"]);
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "the deleted pod gone from the report",
        Duration::from_secs(45),
        || report(c, &ns.name).is_some_and(|r| results_for(&r, "priv").is_empty()),
    );
    let r = report(c, &ns.name).unwrap_or_default();
    assert_eq!(r["summary"]["fail"], 0, "{}", r["summary"]);
}

fn template(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": "red"}},
        "spec": {"template": {"spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim"}]}}}
    })
}

#[test]
fn a_policy_edit_makes_a_running_template_fail_in_the_report_without_a_restart() {
    let c = cluster();
    // A reconciler of its own, with a policy directory this test edits.
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "audit-policy", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    let copied = Command::new("cp")
        .args(["-r", concat!(env!("CARGO_MANIFEST_DIR"), "/policies")])
        .arg(&policies)
        .status()
        .expect("cp");
    assert!(copied.success());
    let o = create(c, &template(&ns.name, "red"));
    assert!(o.status.success(), "{}", out(&o));

    c.kill_reconciler();
    let policies_arg = format!("--policies={}", policies.display());
    let (mut own, _) = spawn_reconciler(
        c,
        "audit-policies",
        &[&policies_arg, "--audit-interval=600"],
    );
    let result = std::panic::catch_unwind(|| {
        let mut last = Value::Null;
        wait("the template passing", Duration::from_secs(40), || {
            last = report(c, &ns.name).unwrap_or(Value::Null);
            has(&results_for(&last, "red"), "pass", "admission")
        });
        // An edit: red-team templates are now refused.
        std::fs::write(
            policies.join("sandboxtemplate/audit_probe.rego"),
            "package sandgate.sandboxtemplate.audit_probe\n\nimport rego.v1\n\n\
             deny contains msg if {\n\tinput.review.object.metadata.labels.team == \"red\"\n\
             \tmsg := \"red-team templates are retired\"\n}\n",
        )
        .expect("write the policy");
        let edited = Instant::now();
        wait(
            "the template failing after the reload",
            Duration::from_secs(30),
            || {
                last = report(c, &ns.name).unwrap_or(Value::Null);
                results_for(&last, "red").iter().any(|r| {
                    r["result"] == "fail"
                        && r["policy"] == "sandboxtemplate.audit_probe"
                        && r["message"] == "red-team templates are retired"
                })
            },
        );
        eprintln!(
            "policy edit reported {:?} after the write",
            edited.elapsed()
        );
        // The template itself is untouched.
        let t = get_json(
            c,
            &["sandboxtemplates.sandbox.gke.io", "red", "-n", &ns.name],
        );
        assert!(t["metadata"]["deletionTimestamp"].is_null());
    });
    let _ = own.kill();
    let _ = own.wait();
    c.start_reconciler();
    if let Err(e) = result {
        eprintln!("{}", c.reconciler_log("audit-policies"));
        std::panic::resume_unwind(e);
    }
}

/// `sandgate audit` as the cluster admin.
fn audit_cli(c: &Cluster, kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .arg("audit")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sandgate audit runs");
    let _ = c;
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn sandgate_audit_judges_a_live_cluster_from_the_command_line() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let bad = Ns::new(c, "audit-cli-bad", false);
    let good = Ns::new(c, "audit-cli-good", true);
    let o = create(c, &privileged_pod("priv", &bad.name));
    assert!(o.status.success(), "{}", out(&o));
    // Through the webhook: mutated, so compliant as stored.
    let o = create(c, &super::pod("ok", &good.name));
    assert!(o.status.success(), "{}", out(&o));
    let o = c.kubectl(&[
        "label",
        "namespace",
        &bad.name,
        "sandbox.gke.io/enforce=true",
    ]);
    assert!(o.status.success(), "{}", out(&o));

    let (code, stdout, stderr) = audit_cli(c, &c.kubeconfig, &["-n", &bad.name, "-o", "json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let listing: Value = serde_json::from_str(&stdout).expect("json");
    let priv_results: Vec<&Value> = listing["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["resource"]["name"] == "priv")
        .collect();
    assert_eq!(priv_results.len(), 1, "{stdout}");
    assert!(
        priv_results[0]["outcomes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["rule"] == "privileged"
                && o["result"] == "fail"
                && o["field"] == "spec.containers[0].securityContext.privileged"),
        "{stdout}"
    );
    assert!(listing["summary"]["api_requests"].as_u64().unwrap_or(0) > 0);
    // Only the namespace asked for.
    assert!(!stdout.contains(&good.name), "{stdout}");

    // Text output names the object and the rule.
    let (code, text, _) = audit_cli(c, &c.kubeconfig, &["-n", &bad.name]);
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!("FAIL  pod {}/priv", bad.name)),
        "{text}"
    );
    assert!(
        text.contains("[privileged] spec.containers[0].securityContext.privileged"),
        "{text}"
    );

    // The allowed twin: a namespace of compliant sandboxes passes (once its
    // default-deny, made at admission, is there).
    wait(
        "the good namespace's default-deny",
        Duration::from_secs(15),
        || {
            c.kubectl(&[
                "get",
                "networkpolicy",
                "sandgate-default-deny",
                "-n",
                &good.name,
            ])
            .status
            .success()
        },
    );
    let (code, stdout, stderr) =
        audit_cli(c, &c.kubeconfig, &["-n", &good.name, "-o", "json", "-v"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("\"ok\""), "{stdout}");

    // A cluster that cannot be read is an error, not a pass.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("kubeconfig");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: x, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\n\
         current-context: x\n",
    )
    .expect("write");
    let (code, _, stderr) = audit_cli(c, &broken, &["-n", &bad.name]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
}
