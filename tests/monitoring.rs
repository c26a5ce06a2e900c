//! The operations kit in deploy/monitoring against what sandgate exports: every metric a
//! dashboard panel or an alert reads exists (with the suffix its type gives it), the
//! topics an operator needs are covered, and every alert rule and dashboard query is
//! valid PromQL by Prometheus's grammar and type rules (the promql-parser crate; no
//! promtool build needed).

use std::collections::BTreeSet;
use std::path::PathBuf;

use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, parse_duration, walk_expr};

use serde_json::Value;

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

/// Parses a PromQL expression with Prometheus's grammar and type rules (the
/// promql-parser crate: what promtool's parser refuses, it refuses).
fn parse(expr: &str) -> Result<Expr, String> {
    promql_parser::parser::parse(expr)
}

/// The `sandgate_*` metric names a PromQL expression (or a dashboard query, its Grafana
/// variables given values) reads, from its syntax tree.
fn metric_names(expr: &str) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
            let selector = match e {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(name) = selector.and_then(|vs| vs.name.as_ref())
                && name.starts_with("sandgate_")
            {
                self.0.insert(name.clone());
            }
            Ok(true)
        }
    }
    let tree = parse(&grafana_substituted(expr)).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut names = Names(BTreeSet::new());
    let Ok(_) = walk_expr(&mut names, &tree);
    names.0
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

/// Grafana's variables given values, as Grafana substitutes them before querying.
fn grafana_substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$job", ".*")
}

#[test]
fn every_alert_and_dashboard_query_is_valid_promql_and_a_broken_one_is_refused() {
    let r = rules();
    let mut names = BTreeSet::new();
    for g in r["spec"]["groups"].as_array().expect("groups") {
        let group = g["name"].as_str().expect("a group name");
        assert!(names.insert(group), "group {group} is named twice");
        if let Some(interval) = g.get("interval").and_then(Value::as_str) {
            parse_duration(interval).unwrap_or_else(|e| panic!("group {group}: {e}"));
        }
        for rule in g["rules"].as_array().expect("rules") {
            // A rule alerts or records, never both, like promtool's rule check.
            let (alert, record) = (rule["alert"].as_str(), rule["record"].as_str());
            assert!(
                alert.is_some() != record.is_some(),
                "a rule of {group} has exactly one of alert and record: {rule}"
            );
            let name = alert.or(record).unwrap_or_default();
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no expr"));
            if let Err(e) = parse(expr) {
                panic!("{name}: {e}: {expr}");
            }
            if let Some(wait) = rule.get("for") {
                let wait = wait
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: for is a string"));
                parse_duration(wait).unwrap_or_else(|e| panic!("{name}: for {wait}: {e}"));
            }
            for field in ["labels", "annotations"] {
                for (k, v) in rule[field].as_object().into_iter().flatten() {
                    assert!(v.is_string(), "{name}: {field}.{k} is a string");
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !k.starts_with(|c: char| c.is_ascii_digit()),
                        "{name}: {field}.{k} is a valid label name"
                    );
                }
            }
        }
    }
    assert!(!alerts(&r).is_empty());

    for (title, expr) in dashboard_queries(&dashboard()) {
        if let Err(e) = parse(&grafana_substituted(&expr)) {
            panic!("panel {title:?}: {e}: {expr}");
        }
    }

    // The check can fail: broken expressions are refused (syntax and types).
    for broken in [
        "sum(rate(sandgate_leader[5m])",
        "rate(sandgate_leader)",
        "histogram_quantile(0.99, sandgate_admission_duration_seconds_bucket[5m]) >",
    ] {
        assert!(
            parse(broken).is_err(),
            "accepted a broken expression: {broken}"
        );
    }
    assert!(parse_duration("5 minutes").is_err());
}
