//! Warm claim binding against the real local control plane (DESIGN.md §7: exactly one
//! sandbox per claim; p50 under 20 ms, p99 under 100 ms at 75 claims/s; a pool refills
//! at 100 sandboxes/s or more).
//!
//! Starts the e2e control plane (tests/e2e/harness.rs: the webhook in the path, the
//! reconciler as its own process, kwok nodes), then per rate and round: a fresh
//! namespace and template whose pool of POOL is filled from empty (the refill rate),
//! then claims created at a steady rate for SECONDS, each deleted once bound (an
//! execution that ended). Reported per rate: the client's bind latency (create sent →
//! Bound seen through a watch) p50/p90/p99/max, warm and cold binds, sandboxes created
//! per claim, claims holding more than one sandbox, the apiserver's requests per bind
//! (its own request counters, every client included, split into writes and reads, and
//! the top written resources), the refill rate and the load average when the round
//! started; the spread over the rounds is printed beside each figure.
//!
//! Run: cargo bench --bench claims
//! Env: RATES (default 10,30,50,75), ROUNDS (3), SECONDS (20), POOL (50, the shipped
//! policies' maximum pool size).

#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use sandgate::crd::{ClaimPhase, LaunchType, Sandbox, SandboxClaim, SandboxPhase};
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// One round at one rate.
#[derive(Debug, Clone, Default)]
struct Round {
    load_at_start: f64,
    claims: usize,
    bound: usize,
    warm: usize,
    errors: usize,
    client_ms: Vec<f64>,
    sandboxes_created: usize,
    over_bound: usize,
    writes: f64,
    reads: f64,
    top_writes: Vec<(String, f64)>,
    /// Requests the apiserver refused with 429 (priority and fairness) during the run.
    throttled: f64,
    /// Writes per pool member while the pool filled from empty (every client counted).
    writes_per_refill: f64,
    refill_per_s: f64,
    achieved_rate: f64,
}

impl Round {
    fn p(&self, q: f64) -> f64 {
        pct(&self.client_ms, q)
    }

    fn max(&self) -> f64 {
        self.client_ms.last().copied().unwrap_or(f64::NAN)
    }
}

fn main() {
    // `cargo test --benches` runs benches in test mode: nothing to do there.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rates: Vec<u64> = std::env::var("RATES")
        .unwrap_or_else(|_| "10,30,50,75".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let rounds = env_or("ROUNDS", 3);
    let seconds = env_or("SECONDS", 20);
    let pool = env_or("POOL", 50);
    let c = harness::cluster();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut results: BTreeMap<u64, Vec<Round>> = BTreeMap::new();
    for round in 0..rounds {
        for &rate in &rates {
            let ns = format!("bench-{}-{rate}-{round}", std::process::id());
            let r = rt.block_on(run(c, &ns, rate, seconds, pool));
            eprintln!(
                "round {round} at {rate}/s: p50 {:.1} ms, p99 {:.1} ms, {} of {} bound ({} warm), {:.2} sandboxes/claim, {:.1} writes/bind, {} 429s, refill {:.0}/s",
                r.p(0.5),
                r.p(0.99),
                r.bound,
                r.claims,
                r.warm,
                r.sandboxes_created as f64 / r.claims.max(1) as f64,
                r.writes,
                r.throttled,
                r.refill_per_s
            );
            results.entry(rate).or_default().push(r);
            // The next round starts once this one's objects are gone: a round must not
            // pay for the previous one's garbage collection.
            let gone = Instant::now();
            let _ = c.kubectl(&["delete", "namespace", &ns, "--wait=true", "--timeout=300s"]);
            eprintln!(
                "  namespace {ns} deleted in {:.1} s",
                gone.elapsed().as_secs_f64()
            );
        }
    }
    report(&results, rounds, seconds, pool);
}

/// "median (min–max)" over the rounds.
fn spread(values: impl Iterator<Item = f64>, unit: &str, digits: usize) -> String {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    let med = pct(&v, 0.5);
    let (lo, hi) = (v[0], v[v.len() - 1]);
    if v.len() == 1 {
        format!("{med:.digits$}{unit}")
    } else {
        format!("{med:.digits$}{unit} ({lo:.digits$}–{hi:.digits$})")
    }
}

fn report(results: &BTreeMap<u64, Vec<Round>>, rounds: u64, seconds: u64, pool: u64) {
    println!(
        "\n## Claim binding: {seconds} s per rate, pool of {pool}, {rounds} rounds (median, min–max over rounds)\n"
    );
    println!(
        "| rate | achieved | load avg at start | client p50 | p90 | p99 | max | warm / cold | sandboxes per claim | over-bound claims | API writes per bind | reads per bind | 429s | refill from empty | writes per refill |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (rate, rs) in results {
        let warm: usize = rs.iter().map(|r| r.warm).sum();
        let bound: usize = rs.iter().map(|r| r.bound).sum();
        let claims: usize = rs.iter().map(|r| r.claims).sum();
        let errors: usize = rs.iter().map(|r| r.errors).sum();
        println!(
            "| {rate}/s | {} | {} | {} | {} | {} | {} | {warm} / {} of {claims}{} | {} | {} | {} | {} | {} | {} | {} |",
            spread(rs.iter().map(|r| r.achieved_rate), "/s", 1),
            spread(rs.iter().map(|r| r.load_at_start), "", 2),
            spread(rs.iter().map(|r| r.p(0.5)), " ms", 1),
            spread(rs.iter().map(|r| r.p(0.9)), " ms", 1),
            spread(rs.iter().map(|r| r.p(0.99)), " ms", 1),
            spread(rs.iter().map(Round::max), " ms", 0),
            bound - warm,
            if errors > 0 {
                format!(", {errors} create errors")
            } else {
                String::new()
            },
            spread(
                rs.iter()
                    .map(|r| r.sandboxes_created as f64 / r.claims.max(1) as f64),
                "",
                2
            ),
            rs.iter().map(|r| r.over_bound).sum::<usize>(),
            spread(rs.iter().map(|r| r.writes), "", 1),
            spread(rs.iter().map(|r| r.reads), "", 1),
            spread(rs.iter().map(|r| r.throttled), "", 0),
            spread(rs.iter().map(|r| r.refill_per_s), "/s", 0),
            spread(rs.iter().map(|r| r.writes_per_refill), "", 1),
        );
    }
    println!("\nWrites per bind, by resource (median round of each rate):\n");
    for (rate, rs) in results {
        let mut sorted = rs.clone();
        sorted.sort_by(|a, b| a.writes.total_cmp(&b.writes));
        if let Some(mid) = sorted.get(sorted.len() / 2) {
            let top: Vec<String> = mid
                .top_writes
                .iter()
                .map(|(r, n)| format!("{r} {n:.1}"))
                .collect();
            println!("- {rate}/s: {}", top.join(", "));
        }
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The apiserver's request counters: (verb, resource[/subresource]) → count; 429s are
/// counted under the verb "429".
fn api_requests(c: &harness::Cluster) -> HashMap<(String, String), f64> {
    let o = c.kubectl(&["get", "--raw", "/metrics"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| -> String {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        if label("code") == "429" {
            *out.entry(("429".into(), String::new())).or_insert(0.0) += n;
        }
        *out.entry((label("verb"), resource)).or_insert(0.0) += n;
    }
    out
}

/// Write requests (every verb but GET, LIST, WATCH) between two counter readings.
fn writes_between(
    before: &HashMap<(String, String), f64>,
    after: &HashMap<(String, String), f64>,
) -> f64 {
    after
        .iter()
        .filter(|((verb, _), _)| !matches!(verb.as_str(), "GET" | "LIST" | "WATCH" | "429"))
        .map(|(k, v)| (v - before.get(k).unwrap_or(&0.0)).max(0.0))
        .sum()
}

async fn run(c: &harness::Cluster, ns: &str, rate: u64, seconds: u64, pool: u64) -> Round {
    let o = c.kubectl_stdin(
        &["create", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string(),
        ),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(config).expect("client");
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), ns);
    let claims: Api<SandboxClaim> = Api::namespaced(client.clone(), ns);
    let mut round = Round {
        load_at_start: load_average(),
        ..Round::default()
    };

    // Every Sandbox created in the namespace, and which claims each was bound to.
    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    let holders: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let sandbox_watch = {
        let (created, holders, sandboxes) = (created.clone(), holders.clone(), sandboxes.clone());
        tokio::spawn(async move {
            let mut stream = watcher(sandboxes, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(sb)) = stream.next().await {
                let name = sb.metadata.name.clone().unwrap_or_default();
                created.lock().expect("lock").insert(name.clone());
                if let Some(claim) = sb
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(sandgate::contract::label::CLAIM))
                {
                    holders
                        .lock()
                        .expect("lock")
                        .entry(claim.clone())
                        .or_default()
                        .insert(name);
                }
            }
        })
    };

    // Fill: time from the template's creation to `pool` ready members.
    let template = json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {"template": {"spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim"}]}},
                 "networkPolicy": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
                 "poolConfig": {"size": pool}}
    });
    let fill_requests = api_requests(c);
    let fill_start = Instant::now();
    let o = c.kubectl_stdin(&["create", "-f", "-"], Some(&template.to_string()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    loop {
        let list = sandboxes
            .list(&Default::default())
            .await
            .expect("list")
            .items;
        let ready = list
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(SandboxPhase::Ready))
            .count();
        if ready as u64 >= pool {
            break;
        }
        assert!(
            fill_start.elapsed() < Duration::from_secs(300),
            "pool not filled ({ready} of {pool} ready)\n{}",
            c.reconciler_log("reconciler")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    round.refill_per_s = pool as f64 / fill_start.elapsed().as_secs_f64();
    round.writes_per_refill = writes_between(&fill_requests, &api_requests(c)) / pool as f64;
    let created_before = created.lock().expect("lock").len();

    // Claims at a steady rate; a watch records when each is seen Bound.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let results: Arc<Mutex<Vec<(f64, LaunchType)>>> = Arc::default();
    let watch = {
        let (sent, results, claims) = (sent.clone(), results.clone(), claims.clone());
        tokio::spawn(async move {
            let mut done = HashSet::new();
            let mut stream = watcher(claims.clone(), watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(claim)) = stream.next().await {
                let name = claim.metadata.name.clone().unwrap_or_default();
                let st = claim.status.clone().unwrap_or_default();
                if st.phase == Some(ClaimPhase::Bound) && done.insert(name.clone()) {
                    let t0 = sent.lock().expect("lock").get(&name).copied();
                    if let Some(t0) = t0 {
                        results.lock().expect("lock").push((
                            t0.elapsed().as_secs_f64() * 1000.0,
                            st.launch_type.unwrap_or(LaunchType::Warm),
                        ));
                    }
                    let claims = claims.clone();
                    tokio::spawn(async move {
                        let _ = claims.delete(&name, &DeleteParams::background()).await;
                    });
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests_before = api_requests(c);
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let name = format!("claim-{i}");
        let claim: SandboxClaim = serde_json::from_value(json!({
            "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": ns}, "spec": {"templateName": "bench"}
        }))
        .expect("a claim");
        let (claims, sent) = (claims.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            sent.lock().expect("lock").insert(name, Instant::now());
            claims.create(&PostParams::default(), &claim).await.is_ok()
        }));
    }
    for t in tasks {
        if !t.await.unwrap_or(false) {
            round.errors += 1;
        }
    }
    round.achieved_rate = total as f64 / start.elapsed().as_secs_f64();
    let expected = total as usize - round.errors;
    let deadline = Instant::now() + Duration::from_secs(60);
    while results.lock().expect("lock").len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests_after = api_requests(c);
    // Surplus binds are given back right after the write that loses; let them show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();
    sandbox_watch.abort();

    let res = results.lock().expect("lock").clone();
    round.claims = total as usize;
    round.bound = res.len();
    round.warm = res.iter().filter(|r| r.1 == LaunchType::Warm).count();
    round.client_ms = res.iter().map(|r| r.0).collect();
    round.client_ms.sort_by(f64::total_cmp);
    round.sandboxes_created = created.lock().expect("lock").len() - created_before;
    round.over_bound = holders
        .lock()
        .expect("lock")
        .values()
        .filter(|s| s.len() > 1)
        .count();
    let binds = round.bound.max(1) as f64;
    let mut by_resource: HashMap<String, f64> = HashMap::new();
    for ((verb, resource), after) in &requests_after {
        let d = after
            - requests_before
                .get(&(verb.clone(), resource.clone()))
                .unwrap_or(&0.0);
        if d <= 0.0 {
            continue;
        }
        match verb.as_str() {
            "429" => round.throttled += d,
            "GET" | "LIST" | "WATCH" => round.reads += d / binds,
            _ => {
                round.writes += d / binds;
                *by_resource.entry(format!("{verb} {resource}")).or_default() += d / binds;
            }
        }
    }
    let mut top: Vec<(String, f64)> = by_resource.into_iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(8);
    round.top_writes = top;
    round
}
