//! A test bed by hand: the test control plane (etcd, kube-apiserver, controller-manager,
//! scheduler), sandgate's webhook and reconciler, and the real gVisor node, exactly as
//! `cargo test --test realnode` brings them up, with the article's template applied.
//! It stays up until Enter or Ctrl-C; then the harness's watchdog takes everything down
//! (`tests/realnode/teardown.sh`). Run it through `scripts/testbed.sh` (root, with the
//! real node's packages).

#[allow(dead_code)]
#[path = "../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/realnode/node.rs"]
mod node;

use std::path::Path;

fn main() {
    if let Some(why) = node::unavailable() {
        eprintln!("testbed: no real node here: {why}");
        std::process::exit(1);
    }
    let c = harness::cluster_with(harness::Nodes::Real(node::start));
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/sandbox-template.yaml");
    let o = c.kubectl(&["apply", "-f", &template.display().to_string()]);
    if !o.status.success() {
        eprintln!(
            "testbed: applying the article's template: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::process::exit(1);
    }
    let kubectl = c.bin.join("kubectl");
    println!("test bed up (the article's template applied in namespace default)");
    println!();
    println!("  export KUBECONFIG={}", c.kubeconfig.display());
    println!(
        "  export PATH={}:$PATH        # its kubectl",
        kubectl
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!("  kubectl get sandboxtemplates,sandboxes,pods -A");
    println!("  pip install ./sdk/python && python sdk/python/examples/agent_runner.py");
    println!();
    println!("Enter or Ctrl-C takes it all down.");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
