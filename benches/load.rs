//! HTTPS load generator: AdmissionReviews POSTed over keep-alive connections to a
//! `sandgate serve --dev` process on loopback, for a bounded time. Reports throughput,
//! latency percentiles, errors, and the server's resident memory (peak and at the end).
//!
//! Run: cargo bench --bench load
//! Env: CONNECTIONS (default "1,16,64"), SECONDS per run (default 10), WORKLOAD
//! (pod-mutate | pod-validate | template | denied-pod | all; default all).

#[allow(dead_code)]
#[path = "../tests/common/https.rs"]
mod https;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const ARTICLE_POD: &str = include_str!("../tests/fixtures/article-pod-review.json");

fn workloads() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let pod: serde_json::Value = serde_json::from_str(ARTICLE_POD).unwrap();
    // The stored pod: what /validate sees after /mutate.
    let req = sandgate::admission::review::parse(ARTICLE_POD.as_bytes()).unwrap();
    let d = sandgate::admission::decide(
        sandgate::admission::Webhook::Mutate,
        &req,
        &sandgate::config::Config::default(),
    );
    let mut stored = pod.clone();
    json_patch::patch(&mut stored["request"]["object"], &d.patch.unwrap().0).unwrap();
    let mut denied = pod.clone();
    denied["request"]["object"]["spec"]["containers"][0]["securityContext"] =
        serde_json::json!({"privileged": true});
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../deploy/examples/sandbox-template.yaml")).unwrap();
    let template = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "load", "operation": "CREATE", "namespace": "default", "name": "agent-execution-template",
        "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": "SandboxTemplate"},
        "resource": {"group": "sandbox.gke.io", "version": "v1", "resource": "sandboxtemplates"},
        "object": serde_json::to_value(yaml).unwrap()}});
    vec![
        ("pod-mutate", "/mutate", serde_json::to_vec(&pod).unwrap()),
        (
            "pod-validate",
            "/validate",
            serde_json::to_vec(&stored).unwrap(),
        ),
        (
            "template",
            "/validate",
            serde_json::to_vec(&template).unwrap(),
        ),
        (
            "denied-pod",
            "/mutate",
            serde_json::to_vec(&denied).unwrap(),
        ),
    ]
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// One keep-alive connection sending requests until `until`; returns latencies (µs) and errors.
async fn worker(
    addr: String,
    tls: TlsConnector,
    path: &'static str,
    body: Arc<Vec<u8>>,
    until: Instant,
) -> (Vec<u32>, u64) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut buf = vec![0u8; 64 * 1024];
    'outer: while Instant::now() < until {
        let Ok(tcp) = TcpStream::connect(&addr).await else {
            errors += 1;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(mut s) = tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
        else {
            errors += 1;
            continue;
        };
        while Instant::now() < until {
            let t = Instant::now();
            let mut req = Vec::with_capacity(head.len() + body.len());
            req.extend_from_slice(head.as_bytes());
            req.extend_from_slice(&body);
            if s.write_all(&req).await.is_err() {
                errors += 1;
                continue 'outer;
            }
            // Read one response: headers, then Content-Length bytes.
            let mut got = 0usize;
            let (mut header_end, mut want) = (None, 0usize);
            loop {
                match s.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        continue 'outer;
                    }
                    Ok(n) => got += n,
                }
                if header_end.is_none()
                    && let Some(i) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n")
                {
                    let headers = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    if !headers.starts_with("http/1.1 200") {
                        errors += 1;
                    }
                    want = headers
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse().ok())
                        })
                        .unwrap_or(0);
                    header_end = Some(i + 4);
                }
                if let Some(h) = header_end
                    && got >= h + want
                {
                    break;
                }
            }
            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
    (lat, errors)
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let conns: Vec<usize> = std::env::var("CONNECTIONS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let only = std::env::var("WORKLOAD").unwrap_or_else(|_| "all".into());
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_sandgate"))
        .args(["serve", "--dev", "--addr", &addr, "--certs-dir"])
        .arg(dir.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandgate serve starts");
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tls = https::connector(&dir.path().join("ca.crt"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\n| workload | connections | reviews/s | p50 | p90 | p99 | max | errors | server RSS peak / end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, path, body) in workloads() {
        if only != "all" && only != name {
            continue;
        }
        let body = Arc::new(body);
        for &n in &conns {
            let until = Instant::now() + Duration::from_secs(seconds);
            let t0 = Instant::now();
            let results = rt.block_on(async {
                let tasks: Vec<_> = (0..n)
                    .map(|_| {
                        tokio::spawn(worker(addr.clone(), tls.clone(), path, body.clone(), until))
                    })
                    .collect();
                let mut all = Vec::new();
                let mut errors = 0;
                for t in tasks {
                    let (l, e) = t.await.unwrap();
                    all.extend(l);
                    errors += e;
                }
                (all, errors)
            });
            let elapsed = t0.elapsed().as_secs_f64();
            let (mut lat, errors) = results;
            lat.sort_unstable();
            let p = |q: f64| {
                lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0) as f64
                    / 1000.0
            };
            println!(
                "| {name} | {n} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {errors} | {:.1} / {:.1} MiB |",
                lat.len() as f64 / elapsed,
                p(0.5),
                p(0.9),
                p(0.99),
                lat.last().copied().unwrap_or(0) as f64 / 1000.0,
                rss_kib(server.id(), "VmHWM:") as f64 / 1024.0,
                rss_kib(server.id(), "VmRSS:") as f64 / 1024.0
            );
            let _ = std::io::stdout().flush();
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}
