//! OPA serving the shipped policies through `bench/opa/webhook.rego` answers every
//! admission request exactly as sandgate does: verdict, message, warnings and the
//! object after the patch. The comparison benchmark relies on this (its speed figures
//! only count where the answers agree), so it is checked here too, on its workloads
//! and on requests that take the other paths.

mod common;
#[allow(dead_code)]
#[path = "../benches/loadgen/mod.rs"]
mod loadgen;

use std::path::Path;

use loadgen::bodies;
use loadgen::versus::{Servers, workloads};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opa_through_the_adapter_answers_as_sandgate_does() {
    let servers = Servers::start(
        Path::new(env!("CARGO_BIN_EXE_sandgate")),
        &common::opa_binary(),
    );

    // The benchmark's workloads.
    let mut denied = 0;
    for w in workloads() {
        for (hook, review) in &w.calls {
            let a = servers.agree(hook, review).await;
            denied += usize::from(a["allowed"] == false);
        }
    }
    assert_eq!(denied, 1, "only the denied pod is denied");

    // A pod that sets some fields itself, in a namespace, with a pod-level profile.
    let mut partial = bodies::pod();
    partial["request"]["object"]["spec"]["securityContext"] = json!({"runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}});
    partial["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "2"}});
    let a = servers.agree("mutate", &partial).await;
    assert_eq!(a["allowed"], true);
    assert_eq!(a["object"]["spec"]["runtimeClassName"], "gvisor", "{a}");
    servers.agree("validate", &bodies::mutated(&partial)).await;

    // A pod in an excluded namespace is left alone by both.
    let mut system = bodies::pod();
    system["request"]["namespace"] = json!("kube-system");
    system["request"]["object"]["metadata"]["namespace"] = json!("kube-system");
    let a = servers.agree("mutate", &system).await;
    assert_eq!(a["object"], system["request"]["object"], "not mutated");

    // A claim beyond the lifetime cap: denied by the claim policy in both, same words.
    let claim = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "c", "operation": "CREATE", "namespace": "agents", "name": "c1",
        "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": "SandboxClaim"},
        "resource": {"group": "sandbox.gke.io", "version": "v1", "resource": "sandboxclaims"},
        "object": {"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
                   "metadata": {"name": "c1", "namespace": "agents"},
                   "spec": {"templateName": "t", "ttlSeconds": 999999}}}});
    let a = servers.agree("validate", &claim).await;
    assert_eq!(a["allowed"], false, "{a}");

    // A template a policy denies. sandgate's built-in rules, which OPA does not have,
    // stop before the policies, so none of them may fire here: open egress or ingress
    // is refused by the built-in `egress-reach` and `ingress-reach` first, and a pool
    // beyond the namespace's warm-sandbox budget (100) by `warm-pool-replicas`; a pool
    // of 60 is above the policy's 50 and within the budget, the policy's alone.
    let mut bad = bodies::template();
    bad["request"]["object"]["spec"]["poolConfig"] = json!({"size": 60});
    let a = servers.agree("validate", &bad).await;
    let message = a["message"].as_str().unwrap_or_default();
    assert!(
        a["allowed"] == false && message.contains("sandboxtemplate.pool"),
        "{a}"
    );
}
