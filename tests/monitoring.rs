//! The operations kit in deploy/monitoring against what sandgate exports: every metric a
//! dashboard panel or an alert reads exists (with the suffix its type gives it), the
//! topics an operator needs are covered, and Prometheus's own promtool (built from the
//! Go module proxy by scripts/build-promtool.sh, cached) accepts the alert rules and
//! every dashboard query.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every sample name a sandgate process can export: all components registered, then
/// each family's samples as its type names them.
fn exported() -> BTreeSet<String> {
    use sandgate::server::metrics as webhook;
    let mut registry = sandgate::metrics::Registry::new();
    let w = webhook::WebhookMetrics::register(&mut registry);
    let r = sandgate::reconcile::Metrics::register(&mut registry);
    let a = sandgate::audit::metrics::Metrics::register(&mut registry);
    sandgate::runtime_check::register(&mut registry);
    sandgate::certs::Metrics::register(&mut registry);
    // A family is exported once it has a child: give each one.
    w.requests
        .get_or_create(&webhook::RequestLabels {
            webhook: "validate",
            kind: "Pod".into(),
            operation: "CREATE",
            decision: "denied",
        })
        .inc();
    w.denials
        .get_or_create(&webhook::DenialLabels {
            kind: "Pod".into(),
            rule: "privileged",
        })
        .inc();
    w.duration
        .get_or_create(&webhook::WebhookLabels {
            webhook: "validate",
        })
        .observe(0.001);
    w.cert_reloads
        .get_or_create(&webhook::ResultLabels { result: "ok" })
        .inc();
    w.record_policy_runs(&[sandgate::policy::PolicyRun {
        policy: "pod.images".into(),
        took: std::time::Duration::from_micros(5),
        denied: true,
    }]);
    r.set_pool("ns", "t", [("ready", 1), ("pending", 0), ("claimed", 0)]);
    r.observe_bind(sandgate::crd::LaunchType::Warm, 5);
    r.errors
        .get_or_create(&sandgate::reconcile::metrics::ControllerLabels {
            controller: "claim",
        })
        .inc();
    a.results
        .get_or_create(&sandgate::audit::metrics::ResultLabels {
            kind: "Pod".into(),
            policy: "sandgate".into(),
            rule: "privileged".into(),
            result: "fail",
        })
        .set(1);
    a.runs
        .get_or_create(&sandgate::audit::metrics::RunLabels {
            scope: "full",
            outcome: "ok",
        })
        .inc();
    a.resources
        .get_or_create(&sandgate::audit::metrics::KindLabels { kind: "Pod" })
        .set(1);
    a.requests
        .get_or_create(&sandgate::audit::metrics::VerbLabels { verb: "list" })
        .inc();
    let mut names = BTreeSet::new();
    for line in registry.encode().lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some("#") || parts.next() != Some("TYPE") {
            continue;
        }
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{family}{s}"));
        }
    }
    names
}

/// The `sandgate_*` names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sandgate_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/grafana-dashboard.json"))
        .expect("the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every (panel title, expression) of the dashboard.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect()
}

fn rules() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/monitoring/prometheus-rules.yaml"))
        .expect("the rules");
    serde_yaml::from_str(&text).expect("the rules are YAML")
}

fn alerts(r: &Value) -> Vec<Value> {
    r["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn the_dashboard_reads_only_exported_metrics_and_covers_what_operators_watch() {
    let d = dashboard();
    assert_eq!(d["uid"], "sandgate");
    let exported = exported();
    let mut used = BTreeSet::new();
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 14, "{} queries", queries.len());
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} reads no sandgate metric: {expr}"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "panel {title:?} reads {n}, which sandgate does not export"
            );
            used.insert(n);
        }
    }
    // Admission rate, latency percentiles, denials by rule, policy evaluation time,
    // pools by state, claim bind latency, reconcile errors, certificate expiry, leader.
    for needed in [
        "sandgate_admission_requests_total",
        "sandgate_admission_duration_seconds_bucket",
        "sandgate_admission_denials_total",
        "sandgate_policy_evaluation_duration_seconds_bucket",
        "sandgate_pool_sandboxes",
        "sandgate_claim_bind_seconds_bucket",
        "sandgate_reconcile_errors_total",
        "sandgate_certificate_expiry_timestamp_seconds",
        "sandgate_leader",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    let ids: BTreeSet<u64> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert_eq!(
        ids.len(),
        d["panels"].as_array().unwrap().len(),
        "panel ids are unique"
    );
}

#[test]
fn the_alerts_read_only_exported_metrics_and_cover_the_failures_that_matter() {
    let r = rules();
    assert_eq!(r["kind"], "PrometheusRule");
    assert_eq!(r["apiVersion"], "monitoring.coreos.com/v1");
    let exported = exported();
    let alerts = alerts(&r);
    for a in &alerts {
        let name = a["alert"].as_str().expect("an alert name");
        let expr = a["expr"].as_str().expect("an expression");
        for n in metric_names(expr) {
            assert!(
                exported.contains(&n),
                "alert {name} reads {n}, which sandgate does not export"
            );
        }
        assert!(
            matches!(
                a["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "alert {name} has a severity"
        );
        assert!(
            a["annotations"]["summary"].is_string(),
            "alert {name} says what is wrong"
        );
        assert!(
            a["annotations"]["description"].is_string(),
            "alert {name} says what it means"
        );
    }
    let names: BTreeSet<&str> = alerts.iter().filter_map(|a| a["alert"].as_str()).collect();
    for needed in [
        "SandgateWebhookErrors",
        "SandgateWebhookLatencyHigh",
        "SandgateCertificateExpiresSoon",
        "SandgatePoolExhausted",
        "SandgateReconcilerNotLeading",
    ] {
        assert!(names.contains(needed), "no alert {needed}");
    }
}

fn promtool() -> PathBuf {
    let o = Command::new("bash")
        .arg(root().join("scripts/build-promtool.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(o.status.success(), "building promtool failed");
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

fn check_rules(promtool: &Path, file: &Path) -> (bool, String) {
    let o = Command::new(promtool)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("promtool runs");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_alerts_and_every_dashboard_query() {
    let promtool = promtool();
    let dir = tempfile::tempdir().expect("tempdir");
    // The PrometheusRule's spec is a rules file.
    let spec = dir.path().join("alerts.yaml");
    std::fs::write(&spec, serde_yaml::to_string(&rules()["spec"]).unwrap()).unwrap();
    let (ok, text) = check_rules(&promtool, &spec);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{} rules found", alerts(&rules()).len())),
        "{text}"
    );

    // Each dashboard query as a recording rule, Grafana's variables given values.
    let recorded: Vec<Value> = dashboard_queries(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr.replace("$__rate_interval", "5m").replace("$job", ".*");
            json!({"record": format!("sandgate:dashboard:query{i}"), "expr": expr})
        })
        .collect();
    let queries = dir.path().join("dashboard.yaml");
    std::fs::write(
        &queries,
        serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": recorded}]}))
            .unwrap(),
    )
    .unwrap();
    let (ok, text) = check_rules(&promtool, &queries);
    assert!(ok, "{text}");

    // The check can fail: a broken expression is refused.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "groups: [{name: b, rules: [{alert: B, expr: 'sum(rate(sandgate_leader[5m])'}]}]\n",
    )
    .unwrap();
    assert!(
        !check_rules(&promtool, &broken).0,
        "promtool accepted a broken expression"
    );
}
