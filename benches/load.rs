//! HTTPS load on sandgate alone: AdmissionReviews POSTed over keep-alive connections to
//! a `sandgate serve --dev` process on loopback, for a bounded time. Reports throughput,
//! latency percentiles, errors, and the server's resident memory (peak and at the end).
//! `benches/compare.rs` runs the same generator against sandgate and OPA in turns.
//!
//! Run: cargo bench --bench load
//! Env: CONNECTIONS (default "1,16,64"), SECONDS per run (default 10), MAX_REQUESTS per
//! run (default 2,000,000), RATE (total requests/s; default 0: as fast as answered),
//! WORKLOAD (pod-mutate | pod-validate | template |
//! denied-pod | all; default all), or WORKLOAD=hostile: the article's template at a
//! steady 200 reviews/s on one connection, alone and then while HOSTILE connections
//! (default 4) send the worst template the analyses judge (10,000 egress and 10,000
//! ingress CIDRs) as fast as they are answered; reports both latencies.

#[allow(dead_code)]
mod loadgen;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use loadgen::{Load, Request, Target, bodies};

fn workloads() -> Vec<(&'static str, Request)> {
    let req = |path: &str, v: serde_json::Value| Request {
        path: path.into(),
        body: serde_json::to_vec(&v).expect("serialisable"),
    };
    let mut privileged = bodies::pod();
    privileged["request"]["object"]["spec"]["containers"][0]["securityContext"] =
        serde_json::json!({"privileged": true});
    vec![
        ("pod-mutate", req("/mutate", bodies::pod())),
        (
            "pod-validate",
            req("/validate", bodies::mutated(&bodies::pod())),
        ),
        ("template", req("/validate", bodies::template())),
        // Denied by the built-in rules at /mutate.
        ("denied-pod", req("/mutate", privileged)),
    ]
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let seconds: u64 = loadgen::env_or("SECONDS", 10);
    let max_requests: u64 = loadgen::env_or("MAX_REQUESTS", 2_000_000);
    let rate: f64 = loadgen::env_or("RATE", 0.0);
    let conns: Vec<usize> = std::env::var("CONNECTIONS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let only = std::env::var("WORKLOAD").unwrap_or_else(|_| "all".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", loadgen::free_port());
    let probes = format!("127.0.0.1:{}", loadgen::free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .args([
            "serve",
            "--dev",
            "--addr",
            &addr,
            "--probe-addr",
            &probes,
            "--certs-dir",
        ])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandgate serve starts");
    loadgen::wait_listening(&addr, "sandgate");
    let tls = loadgen::connector(&dir.path().join("ca.crt"));
    let target = Target {
        addr: &addr,
        tls: &tls,
        pid: server.id(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if only == "hostile" {
        hostile(&rt, &target, seconds, max_requests);
        let _ = server.kill();
        let _ = server.wait();
        return;
    }
    println!(
        "\n| workload | connections | reviews/s | p50 | p90 | p99 | max | errors | server RSS peak / end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, request) in workloads() {
        if only != "all" && only != name {
            continue;
        }
        for &n in &conns {
            let load = Load {
                connections: n,
                duration: Duration::from_secs(seconds),
                max_requests,
                rate: (rate > 0.0).then_some(rate),
            };
            let r = loadgen::run(&rt, &target, std::slice::from_ref(&request), &load);
            println!(
                "| {name} | {n} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.1} / {:.1} MiB |",
                r.throughput(),
                r.quantile_ms(0.5),
                r.quantile_ms(0.9),
                r.quantile_ms(0.99),
                r.max_ms(),
                r.errors,
                r.rss_peak_kib as f64 / 1024.0,
                r.rss_end_kib as f64 / 1024.0
            );
            let _ = std::io::stdout().flush();
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// An ordinary template's latency alone and while hostile ones are in flight.
fn hostile(rt: &tokio::runtime::Runtime, target: &Target<'_>, seconds: u64, max_requests: u64) {
    let hostile_conns: usize = loadgen::env_or("HOSTILE", 4);
    let bound = sandgate::admission::egress::MAX_CIDRS;
    let req = |v: serde_json::Value| Request {
        path: "/validate".into(),
        body: serde_json::to_vec(&v).expect("serialisable"),
    };
    let ordinary = req(bodies::template());
    let worst = req(bodies::hostile_template(bound));
    let steady = Load {
        connections: 1,
        duration: Duration::from_secs(seconds),
        max_requests,
        rate: Some(200.0),
    };
    let flood = Load {
        connections: hostile_conns,
        duration: Duration::from_secs(seconds),
        max_requests,
        rate: None,
    };
    println!(
        "\n| case | ordinary template p50 / p90 / p99 / max | ordinary errors | hostile reviews/s | hostile p50 / p99 / max | hostile errors | server RSS peak |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |case: &str, o: &loadgen::Report, h: Option<&loadgen::Report>| {
        let hostile = h.map_or_else(
            || "— | — | — ".to_string(),
            |h| {
                format!(
                    "{:.0} | {:.1} / {:.1} / {:.1} ms | {}",
                    h.throughput(),
                    h.quantile_ms(0.5),
                    h.quantile_ms(0.99),
                    h.max_ms(),
                    h.errors
                )
            },
        );
        let rss = h.map_or(o.rss_peak_kib, |h| h.rss_peak_kib.max(o.rss_peak_kib));
        println!(
            "| {case} | {:.2} / {:.2} / {:.2} / {:.2} ms | {} | {hostile} | {:.1} MiB |",
            o.quantile_ms(0.5),
            o.quantile_ms(0.9),
            o.quantile_ms(0.99),
            o.max_ms(),
            o.errors,
            rss as f64 / 1024.0
        );
    };
    let alone = loadgen::run(rt, target, std::slice::from_ref(&ordinary), &steady);
    row("ordinary alone", &alone, None);
    let (o, h) = std::thread::scope(|s| {
        let flooding = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            loadgen::run(&rt, target, std::slice::from_ref(&worst), &flood)
        });
        // Let the flood start before measuring beside it.
        std::thread::sleep(Duration::from_millis(300));
        let o = loadgen::run(rt, target, std::slice::from_ref(&ordinary), &steady);
        (o, flooding.join().expect("the flood finishes"))
    });
    row(
        &format!("ordinary beside {hostile_conns} hostile connections"),
        &o,
        Some(&h),
    );
    println!(
        "\nhostile body: {} KiB, {bound} egress and {bound} ingress CIDRs",
        worst.body.len() / 1024
    );
}
