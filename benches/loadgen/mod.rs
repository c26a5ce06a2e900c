//! The HTTPS load generator shared by `benches/load.rs` and `benches/compare.rs`:
//! AdmissionReviews POSTed over keep-alive HTTP/1.1 TLS connections on loopback, each
//! connection sending one request at a time, for a bounded time and count. It reports
//! throughput, latency percentiles, errors, and the server's resident memory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub mod versus;

/// A setting from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request of a workload: the URL path and the body.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub body: Vec<u8>,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub requests: u64,
    pub seconds: f64,
    /// Latencies in microseconds, sorted.
    pub latencies: Vec<u32>,
    pub errors: u64,
    /// Highest resident set sampled during the run, and at its end (KiB).
    pub rss_peak_kib: u64,
    pub rss_end_kib: u64,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// The q-quantile latency in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        percentile(&self.latencies, q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    }

    /// Several runs of the same case pooled: all requests over all time.
    pub fn pooled(runs: &[Report]) -> Report {
        let mut latencies: Vec<u32> = runs.iter().flat_map(|r| r.latencies.clone()).collect();
        latencies.sort_unstable();
        Report {
            requests: runs.iter().map(|r| r.requests).sum(),
            seconds: runs.iter().map(|r| r.seconds).sum(),
            latencies,
            errors: runs.iter().map(|r| r.errors).sum(),
            rss_peak_kib: runs.iter().map(|r| r.rss_peak_kib).max().unwrap_or(0),
            rss_end_kib: runs.last().map_or(0, |r| r.rss_end_kib),
        }
    }
}

pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// A TLS client trusting only the given CA, speaking HTTP/1.1 (no ALPN), as the
/// apiserver does towards admission webhooks.
pub fn connector(ca_pem: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
        roots.add(c.expect("CA certificate")).expect("CA accepted");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A resident-memory field of /proc/PID/status, in KiB (0 when unreadable).
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sends one request on `stream` and reads one response; Ok(true) for a 200.
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    s: &mut S,
    wire: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    s.write_all(wire).await?;
    let mut got = 0usize;
    let (mut header_end, mut want, mut ok) = (None, 0usize, false);
    loop {
        if got == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
        if header_end.is_none()
            && let Some(i) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n")
        {
            let headers = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            ok = headers.starts_with("http/1.1 200");
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
            return Ok(ok);
        }
    }
}

/// How hard to push: connections, for how long, at most how many requests, and
/// optionally a fixed total rate (requests/s) instead of as fast as answers come.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub connections: usize,
    pub duration: Duration,
    pub max_requests: u64,
    pub rate: Option<f64>,
}

/// One connection's part of a run.
#[derive(Clone)]
struct Plan {
    addr: String,
    tls: TlsConnector,
    wires: Arc<Vec<Vec<u8>>>,
    duration: Duration,
    budget: Arc<AtomicU64>,
    /// The interval between this connection's requests when paced, and its offset.
    pace: Option<(Duration, Duration)>,
    /// Connections that finished their handshake; the run starts when all have.
    ready: Arc<AtomicUsize>,
    go: tokio::sync::watch::Receiver<Option<Instant>>,
}

async fn connect(plan: &Plan) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(&plan.addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let server = ServerName::try_from("localhost").ok()?;
    plan.tls.connect(server, tcp).await.ok()
}

/// One keep-alive connection cycling through the requests from the common start for
/// the run's duration, or until the shared budget of requests runs out; returns
/// latencies (µs) and errors. The handshake happens before the start, so it is not in
/// the figures. Paced, a request sent late because the previous answer came late
/// counts from when it was due, so slow answers are not hidden (no coordinated
/// omission); one sent on time counts from its send.
async fn worker(mut plan: Plan) -> (Vec<u32>, u64) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut next = 0usize;
    let mut stream = connect(&plan).await;
    if stream.is_some() {
        plan.ready.fetch_add(1, Ordering::SeqCst);
    }
    let start = match plan.go.wait_for(Option::is_some).await {
        Ok(v) => v.unwrap_or_else(Instant::now),
        Err(_) => return (lat, errors + 1),
    };
    let until = start + plan.duration;
    let spend = || {
        plan.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    };
    while Instant::now() < until {
        let Some(s) = stream.as_mut() else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            stream = connect(&plan).await;
            continue;
        };
        if !spend() {
            break;
        }
        let t = match plan.pace {
            Some((interval, offset)) => {
                let due = start + offset + interval * next as u32;
                if due >= until {
                    break;
                }
                if Instant::now() >= due {
                    // Behind schedule (the last answer came late): count from due.
                    due
                } else {
                    // On time: count from the send, not from when the 1 ms timer
                    // wheel happens to wake us.
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                }
            }
            None => Instant::now(),
        };
        match exchange(s, &plan.wires[next % plan.wires.len()], &mut buf).await {
            Ok(true) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Ok(false) => errors += 1,
            Err(_) => {
                errors += 1;
                stream = connect(&plan).await;
            }
        }
        next += 1;
    }
    (lat, errors)
}

/// A server under load: where it listens, how to reach it, its process.
pub struct Target<'a> {
    pub addr: &'a str,
    pub tls: &'a TlsConnector,
    pub pid: u32,
}

/// Runs `connections` workers against the target for `duration` (at most
/// `max_requests`), sampling the server's resident memory meanwhile.
pub fn run(
    rt: &tokio::runtime::Runtime,
    target: &Target<'_>,
    requests: &[Request],
    load: &Load,
) -> Report {
    let Load {
        connections,
        duration,
        max_requests,
        rate,
    } = *load;
    let (addr, tls, server_pid) = (target.addr, target.tls, target.pid);
    let wires: Arc<Vec<Vec<u8>>> = Arc::new(
        requests
            .iter()
            .map(|r| {
                let mut w = format!(
                    "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    r.path,
                    r.body.len()
                )
                .into_bytes();
                w.extend_from_slice(&r.body);
                w
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(server_pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let budget = Arc::new(AtomicU64::new(max_requests));
    let ready = Arc::new(AtomicUsize::new(0));
    let (go, go_rx) = tokio::sync::watch::channel(None);
    let (mut latencies, errors, seconds) = rt.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|i| {
                // Each connection sends every connections/rate seconds, the
                // connections spread evenly over that interval.
                let pace = rate.filter(|r| *r > 0.0).map(|r| {
                    let interval = Duration::from_secs_f64(connections as f64 / r);
                    (interval, interval.mul_f64(i as f64 / connections as f64))
                });
                tokio::spawn(worker(Plan {
                    addr: addr.to_string(),
                    tls: tls.clone(),
                    wires: wires.clone(),
                    duration,
                    budget: budget.clone(),
                    pace,
                    ready: ready.clone(),
                    go: go_rx.clone(),
                }))
            })
            .collect();
        // Start once every connection is up (or after 10 s, with those that are).
        let waiting = Instant::now();
        while ready.load(Ordering::SeqCst) < connections
            && waiting.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let start = Instant::now();
        let _ = go.send(Some(start));
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            match t.await {
                Ok((l, e)) => {
                    all.extend(l);
                    errors += e;
                }
                Err(_) => errors += 1,
            }
        }
        (all, errors, start.elapsed().as_secs_f64())
    });
    stop.store(true, Ordering::Relaxed);
    let end = rss_kib(server_pid, "VmRSS:");
    let peak = sampler.join().unwrap_or(0).max(end);
    latencies.sort_unstable();
    Report {
        requests: latencies.len() as u64,
        seconds,
        latencies,
        errors,
        rss_peak_kib: peak,
        rss_end_kib: end,
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something listens on `addr`.
pub fn wait_listening(addr: &str, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The benchmark's AdmissionReview bodies, built from the repository's fixtures.
pub mod bodies {
    use serde_json::{Value, json};

    const ARTICLE_POD: &str = include_str!("../../tests/fixtures/article-pod-review.json");

    /// The article's pod as the apiserver sends it to the mutating webhook.
    pub fn pod() -> Value {
        serde_json::from_str(ARTICLE_POD).expect("pod fixture")
    }

    /// The same pod with an image from a registry the benchmark's settings do not allow.
    pub fn denied_pod() -> Value {
        let mut p = pod();
        p["request"]["object"]["spec"]["containers"][0]["image"] =
            json!("evil.example.com/miner:1");
        p
    }

    /// What the validating webhook sees: the pod after sandgate's mutation.
    pub fn mutated(review: &Value) -> Value {
        let bytes = serde_json::to_vec(review).expect("serialisable");
        let req = sandgate::admission::review::parse(&bytes).expect("valid review");
        let d = sandgate::admission::builtin(
            sandgate::admission::Webhook::Mutate,
            &req,
            &sandgate::config::Config::default(),
        );
        let mut out = review.clone();
        if let Some(patch) = d.patch {
            json_patch::patch(&mut out["request"]["object"], &patch.0).expect("patch applies");
        }
        out
    }

    /// The worst SandboxTemplate review the analyses judge: its egress names `cidrs`
    /// CIDRs in the arrangement that costs the egress analysis most (one block, every
    /// other CIDR an exception inside it), and its ingress as many again, split.
    pub fn hostile_template(cidrs: usize) -> Value {
        let except: Vec<String> = (1..cidrs)
            .map(|i| format!("10.{}.{}.{}/32", i / 65536 % 256, i / 256 % 256, i % 256))
            .collect();
        let from: Vec<Value> = (0..cidrs)
            .map(|i| json!({"ipBlock": {"cidr": format!("11.{}.{}.0/24", i / 256 % 256, i % 256)}}))
            .collect();
        let mut review = template();
        review["request"]["object"]["spec"]["networkPolicy"] = json!({
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": except}}]}],
            "ingress": [{"from": from}]
        });
        review
    }

    /// The article's SandboxTemplate as a CREATE review.
    pub fn template() -> Value {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../deploy/examples/sandbox-template.yaml"))
                .expect("template example");
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "load", "operation": "CREATE", "namespace": "default", "name": "agent-execution-template",
            "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": "SandboxTemplate"},
            "resource": {"group": "sandbox.gke.io", "version": "v1", "resource": "sandboxtemplates"},
            "object": serde_json::to_value(yaml).expect("template as JSON")}})
    }
}
