//! Time to first instruction on the real gVisor node: claim created → bound → first
//! `run("print(1)")` returned, through the Python SDK, warm and cold; the exec round
//! trip alone; the pool refill rate. The article's "Sandbox ready in 290–340 ms" is
//! the figure beside it; the target is a warm claim's first output under 300 ms (p99).
//!
//! Brings up the test control plane with its real node (tests/realnode), a namespace
//! with a warm template (pool of POOL, requests 100m / 128Mi so the pool fits the
//! node) and a cold one (no pool), then runs sdk/python/bench/first_instruction.py
//! against it and prints its JSON, with the load average.
//!
//! Run: cargo bench --bench first_instruction     (root, with the real node's packages)
//! Env: WARM (30), COLD (8), EXEC (50), REFILL (4), POOL (3)

#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/realnode/node.rs"]
mod node;

use std::path::Path;
use std::process::Command;

use serde_json::json;

fn main() {
    if let Some(why) = node::unavailable() {
        eprintln!("first_instruction: no real node here ({why}); nothing measured");
        return;
    }
    let c = harness::cluster_with(harness::Nodes::Real(node::start));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pool: u32 = std::env::var("POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let ns = "bench-first-instruction";
    let template = |name: &str, size: u32| {
        json!({"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"runtimeClassName": "gvisor",
                        "template": {"spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                          "limits": {"cpu": "1", "memory": "512Mi"}}}]}},
                        "networkPolicy": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
                        "poolConfig": {"size": size}}})
    };
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        template("warm", pool),
        template("cold", 0),
    ]});
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(&objects.to_string()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let venv = Command::new("bash")
        .arg(root.join("scripts/sdk-venv.sh"))
        .output()
        .expect("scripts/sdk-venv.sh runs");
    assert!(
        venv.status.success(),
        "{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let venv = String::from_utf8_lossy(&venv.stdout).trim().to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let o = Command::new(Path::new(&venv).join("bin/python"))
        .arg(root.join("sdk/python/bench/first_instruction.py"))
        .args([ns, "warm", "cold"])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .expect("the benchmark script runs");
    assert!(
        o.status.success(),
        "first_instruction.py failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("load average at start: {}", load.trim());
    println!("{}", String::from_utf8_lossy(&o.stdout));
    let _ = c.kubectl(&["delete", "namespace", ns, "--wait=false"]);
}
