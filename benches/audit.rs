//! The audit over 5,000 existing pods on the local control plane (kwok nodes, see
//! tests/e2e/harness.rs): half are sandbox pods admitted through the webhook in an
//! enforced namespace (they pass), half were created privileged and unlabelled in a
//! namespace that is enforced afterwards (they fail). Measured:
//! - `sandgate audit -o json` from the command line, unpaced and at the default pace:
//!   wall time, apiserver requests, peak resident memory;
//! - the reconciler leader's audit: the namespace sweep the label triggers and the
//!   next full sweep (its duration and requests from its own metrics), the reports it
//!   wrote (bounded), and the leader's peak resident memory.
//!
//! Run: cargo bench --bench audit          Env: PODS (5000)

#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn kubectl_ok(c: &harness::Cluster, args: &[&str], stdin: Option<&str>) {
    let o = c.kubectl_stdin(args, stdin);
    assert!(
        o.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Pods the scheduler leaves alone (`schedulerName` nobody serves): the benchmark
/// measures the audit, not scheduling.
fn pods(ns: &str, prefix: &str, n: usize, privileged: bool) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut container = json!({"name": "c", "image": "python:3.11-slim"});
            if privileged {
                container["securityContext"] = json!({"privileged": true});
            }
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{prefix}-{i:05}"), "namespace": ns,
                                "labels": if privileged { json!({}) } else { json!({"sandbox.gke.io/sandbox": "bench"}) }},
                   "spec": {"schedulerName": "bench-unscheduled", "containers": [container]}})
        })
        .collect()
}

fn create_all(c: &harness::Cluster, items: Vec<Value>) {
    for chunk in items.chunks(500) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": chunk});
        kubectl_ok(
            c,
            &["create", "-f", "-", "-o", "name"],
            Some(&list.to_string()),
        );
    }
}

fn metric(port: u16, prefix: &str) -> f64 {
    harness::http_get(port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn requests(port: u16) -> f64 {
    metric(port, "sandgate_audit_api_requests_total")
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `sandgate audit` under python's rusage (peak RSS of the child, in KiB).
fn cli(c: &harness::Cluster, extra: &[&str]) -> Value {
    let mut args = vec![
        env!("CARGO_BIN_EXE_sandgate").to_string(),
        "audit".into(),
        "-o".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let script = "import json,resource,subprocess,sys\n\
                  p=subprocess.run(sys.argv[1:],capture_output=True)\n\
                  out=json.loads(p.stdout)\n\
                  print(json.dumps({'code':p.returncode,'summary':out['summary'],\
                  'peak_rss_kib':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))";
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&args)
        .env("KUBECONFIG", &c.kubeconfig)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs sandgate audit");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json")
}

fn main() {
    let n: usize = std::env::var("PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let c = harness::cluster();
    let port = c.reconciler_port().expect("the shared reconciler runs");
    let (good, late) = ("bench-audit-ok", "bench-audit-late");
    kubectl_ok(c, &["create", "namespace", good], None);
    kubectl_ok(
        c,
        &["label", "namespace", good, "sandbox.gke.io/enforce=true"],
        None,
    );
    kubectl_ok(c, &["create", "namespace", late], None);
    let started = Instant::now();
    create_all(c, pods(good, "ok", n / 2, false));
    create_all(c, pods(late, "late", n - n / 2, true));
    eprintln!(
        "audit bench: {n} pods created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The leader: the namespace sweep the label triggers.
    let runs = |scope: &str| {
        metric(
            port,
            &format!("sandgate_audit_runs_total{{scope=\"{scope}\",outcome=\"ok\"}}"),
        )
    };
    let before_ns = (
        runs("namespaces"),
        requests(port),
        metric(port, "sandgate_audit_duration_seconds_sum"),
    );
    let labelled = Instant::now();
    kubectl_ok(
        c,
        &["label", "namespace", late, "sandbox.gke.io/enforce=true"],
        None,
    );
    let mut report = Value::Null;
    while labelled.elapsed() < Duration::from_secs(300) {
        let o = c.kubectl(&["get", "policyreport", "sandgate", "-n", late, "-o", "json"]);
        if o.status.success() {
            report = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            if report["summary"]["fail"].as_u64().unwrap_or(0) >= (n - n / 2) as u64 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let reported_after = labelled.elapsed();
    // The sweep ends after its reports (events and metrics follow).
    while runs("namespaces") <= before_ns.0 && labelled.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after_ns = (
        runs("namespaces"),
        requests(port),
        metric(port, "sandgate_audit_duration_seconds_sum"),
    );

    // The next full sweep.
    let full_before = (
        runs("full"),
        requests(port),
        metric(port, "sandgate_audit_duration_seconds_sum"),
    );
    let waited = Instant::now();
    while runs("full") <= full_before.0 && waited.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let full_after_runs = runs("full");
    let full_after = (
        runs("full"),
        requests(port),
        metric(port, "sandgate_audit_duration_seconds_sum"),
    );
    let _ = full_after_runs;
    // The command line, now that every pod is a sandbox pod (half of them failing).
    let unpaced = cli(c, &["--qps", "0"]);
    let paced = cli(c, &[]);
    let results = report["results"].as_array().map_or(0, Vec::len);
    let bytes = report.to_string().len();
    let out = json!({
        "pods": n,
        "cli_unpaced": unpaced,
        "cli_paced_default": paced,
        "leader": {
            "label_to_report_seconds": reported_after.as_secs_f64(),
            "namespace_sweep": {"runs": after_ns.0 - before_ns.0, "requests": after_ns.1 - before_ns.1,
                                 "seconds": after_ns.2 - before_ns.2},
            "full_sweep": {"runs": full_after.0 - full_before.0, "requests": full_after.1 - full_before.1,
                            "seconds": full_after.2 - full_before.2},
            "late_report": {"summary": report["summary"], "results": results, "bytes": bytes,
                             "omitted": report["metadata"]["annotations"]["sandbox.gke.io/audit-omitted"]},
            "peak_rss_kib": c.reconciler_pid().and_then(peak_rss_kib),
        },
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
