//! Warm claim binding against the real local control plane (DESIGN.md §7: p50 under
//! 20 ms, p99 under 100 ms at 75 claims/s; a pool refills at 100 sandboxes/s or more).
//!
//! Starts the e2e control plane (tests/e2e/harness.rs) with the reconciler, fills a
//! pool, then creates claims at a steady rate, each deleted once bound (an execution
//! that ended), and reports the bind latency seen by the client (create sent → Bound
//! observed through a watch) and the server's `startupTimeMs`.
//!
//! Run: cargo bench --bench claims   (RATE, SECONDS and POOL override the defaults 75/20/50; 50 is the shipped
//! policies' maximum pool size)

#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use sandgate::crd::{Sandbox, SandboxClaim};
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

fn main() {
    // `cargo test --benches` runs benches in test mode: nothing to do there.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rate = env_or("RATE", 75);
    let seconds = env_or("SECONDS", 20);
    let pool = env_or("POOL", 50);
    let c = harness::cluster();
    let ns = format!("bench-{}", std::process::id());
    let o = c.kubectl_stdin(
        &["create", "-f", "-"],
        Some(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string(),
        ),
    );
    assert!(o.status.success());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(c, &ns, rate, seconds, pool));
}

async fn run(c: &harness::Cluster, ns: &str, rate: u64, seconds: u64, pool: u64) {
    let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let sandboxes: Api<Sandbox> = Api::namespaced(client.clone(), ns);
    let claims: Api<SandboxClaim> = Api::namespaced(client.clone(), ns);

    // Fill: time from the template's creation to `pool` ready members.
    let template = json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
        "metadata": {"name": "bench", "namespace": ns},
        "spec": {"template": {"spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim"}]}},
                 "networkPolicy": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
                 "poolConfig": {"size": pool}}
    });
    let fill_start = Instant::now();
    let o = c.kubectl_stdin(&["create", "-f", "-"], Some(&template.to_string()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ready = |list: &[Sandbox]| {
        list.iter()
            .filter(|s| {
                s.status.as_ref().and_then(|st| st.phase)
                    == Some(sandgate::crd::SandboxPhase::Ready)
            })
            .count()
    };
    loop {
        let list = sandboxes.list(&Default::default()).await.unwrap().items;
        if ready(&list) as u64 >= pool {
            break;
        }
        assert!(
            fill_start.elapsed() < Duration::from_secs(300),
            "pool not filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fill = fill_start.elapsed();

    // Claims at a steady rate; a watch records when each is seen Bound.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let results: Arc<Mutex<Vec<(f64, i64, String)>>> = Arc::default();
    let watch = {
        let (sent, results, claims) = (sent.clone(), results.clone(), claims.clone());
        tokio::spawn(async move {
            let mut done = std::collections::HashSet::new();
            let mut stream = watcher(claims.clone(), watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(claim)) = stream.next().await {
                let name = claim.metadata.name.clone().unwrap_or_default();
                let st = claim.status.clone().unwrap_or_default();
                if st.phase == Some(sandgate::crd::ClaimPhase::Bound) && done.insert(name.clone()) {
                    let t0 = sent.lock().unwrap().get(&name).copied();
                    if let Some(t0) = t0 {
                        let launch = format!(
                            "{:?}",
                            st.launch_type.unwrap_or(sandgate::crd::LaunchType::Warm)
                        )
                        .to_lowercase();
                        results.lock().unwrap().push((
                            t0.elapsed().as_secs_f64() * 1000.0,
                            st.startup_time_ms.unwrap_or(-1),
                            launch,
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
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut errors = 0u64;
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let name = format!("claim-{i}");
        let claim: SandboxClaim = serde_json::from_value(json!({
            "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
            "metadata": {"name": name, "namespace": ns}, "spec": {"templateName": "bench"}
        }))
        .unwrap();
        let (claims, sent) = (claims.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            sent.lock().unwrap().insert(name, Instant::now());
            claims.create(&PostParams::default(), &claim).await.is_ok()
        }));
    }
    for t in tasks {
        if !t.await.unwrap_or(false) {
            errors += 1;
        }
    }
    let send_time = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (results.lock().unwrap().len() as u64) < total - errors && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let res = results.lock().unwrap().clone();
    let mut client_ms: Vec<f64> = res.iter().map(|r| r.0).collect();
    let mut server_ms: Vec<f64> = res
        .iter()
        .filter(|r| r.1 >= 0)
        .map(|r| r.1 as f64)
        .collect();
    client_ms.sort_by(f64::total_cmp);
    server_ms.sort_by(f64::total_cmp);
    let warm = res.iter().filter(|r| r.2 == "warm").count();
    println!(
        "\n## Claim binding: {total} claims at {rate}/s over {seconds} s, pool of {pool} (measured {:.1} claims/s)",
        total as f64 / send_time.as_secs_f64()
    );
    println!("| measure | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, v: &[f64]| {
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    row("client: create sent → Bound seen (watch)", &client_ms);
    row("server: status.startupTimeMs", &server_ms);
    println!(
        "\nbound {} of {total} ({warm} warm, {} cold), {errors} create errors",
        res.len(),
        res.len() - warm
    );
    println!(
        "pool fill: {pool} sandboxes ready in {:.2} s = {:.0} sandboxes/s (from an empty pool)",
        fill.as_secs_f64(),
        pool as f64 / fill.as_secs_f64()
    );
}
