//! The warm-pool reconciler against the real control plane.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::{Cluster, cluster, http_get, spawn_reconciler};
use super::{Ns, create, get_json, out, wait};

fn article_in(ns: &str, name: &str, size: i64) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/sandbox-template.yaml"
    ))
    .unwrap();
    text.replace("namespace: default", &format!("namespace: {ns}"))
        .replace("name: agent-execution-template", &format!("name: {name}"))
        .replace("size: 5 # pre-warm 5 sandboxes", &format!("size: {size}"))
}

fn apply(c: &Cluster, yaml: &str) {
    let o = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(o.status.success(), "{}", out(&o));
}

fn sandboxes(c: &Cluster, ns: &str, template: &str) -> Vec<Value> {
    let list = get_json(
        c,
        &[
            "sandboxes.sandbox.gke.io",
            "-n",
            ns,
            "-l",
            &format!("sandbox.gke.io/template={template}"),
        ],
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

fn unclaimed_ready(c: &Cluster, ns: &str, template: &str) -> usize {
    sandboxes(c, ns, template)
        .iter()
        .filter(|s| {
            s["metadata"]["labels"]
                .get("sandbox.gke.io/claim")
                .is_none()
        })
        .filter(|s| s["metadata"].get("deletionTimestamp").is_none())
        .filter(|s| s["status"]["phase"] == "Ready")
        .count()
}

fn wait_pool(c: &Cluster, ns: &str, template: &str, n: usize) {
    let start = Instant::now();
    while unclaimed_ready(c, ns, template) != n {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "pool {ns}/{template}: {} ready, wanted {n}\n{}\n{}\n{}",
            unclaimed_ready(c, ns, template),
            out(&c.kubectl(&["get", "sandboxes,pods", "-n", ns, "-o", "wide"])),
            out(&c.kubectl(&[
                "get",
                "sandboxtemplates.sandbox.gke.io",
                template,
                "-n",
                ns,
                "-o",
                "yaml"
            ])),
            c.reconciler_log("reconciler")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn claim(ns: &str, name: &str, template: &str) -> Value {
    json!({"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
           "metadata": {"name": name, "namespace": ns}, "spec": {"templateName": template}})
}

fn claim_status(c: &Cluster, ns: &str, name: &str) -> Value {
    get_json(c, &["sandboxclaims.sandbox.gke.io", name, "-n", ns])["status"].clone()
}

fn wait_bound(c: &Cluster, ns: &str, name: &str) -> Value {
    let mut st = Value::Null;
    wait(
        &format!("claim {ns}/{name} Bound"),
        Duration::from_secs(90),
        || {
            st = claim_status(c, ns, name);
            st["phase"] == "Bound"
        },
    );
    st
}

#[test]
fn the_article_template_keeps_five_warm_sandboxes_and_its_policies() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "pool", false);
    apply(c, &article_in(&ns.name, "agent-execution-template", 5));
    wait_pool(c, &ns.name, "agent-execution-template", 5);

    for np in [
        "sandgate-default-deny",
        "sandgate-template-agent-execution-template",
    ] {
        let o = c.kubectl(&["get", "networkpolicy", np, "-n", &ns.name]);
        assert!(o.status.success(), "{np}: {}", out(&o));
    }
    let tp = get_json(
        c,
        &[
            "networkpolicy",
            "sandgate-template-agent-execution-template",
            "-n",
            &ns.name,
        ],
    );
    assert_eq!(
        tp["spec"]["egress"][0]["ports"][0]["port"], 53,
        "the template's own rules"
    );
    assert_eq!(
        tp["metadata"]["ownerReferences"][0]["kind"],
        "SandboxTemplate"
    );

    // Each sandbox owns one pod, built and admitted like any sandbox pod.
    for sb in sandboxes(c, &ns.name, "agent-execution-template") {
        let name = sb["metadata"]["name"].as_str().unwrap();
        let pod = get_json(c, &["pod", name, "-n", &ns.name]);
        assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], name);
        assert!(
            pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or("")
                .starts_with("gvisor-")
        );
        assert!(sb["status"]["podIP"].is_string(), "{sb}");
    }
    wait("template status", Duration::from_secs(30), || {
        let t = get_json(
            c,
            &[
                "sandboxtemplates.sandbox.gke.io",
                "agent-execution-template",
                "-n",
                &ns.name,
            ],
        );
        t["status"]["ready"] == 5 && t["status"]["pending"] == 0
    });
    let table = out(&c.kubectl(&["get", "sandboxtemplates.sandbox.gke.io", "-n", &ns.name]));
    assert!(
        table.contains("READY")
            && table
                .lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().any(|w| w == "5")),
        "{table}"
    );

    // Settled: whatever wakes the template (an edit of its metadata, a member going and
    // its refill), its policies are not written again.
    let versions = || -> Vec<(String, String)> {
        [
            "sandgate-default-deny",
            "sandgate-template-agent-execution-template",
        ]
        .iter()
        .map(|np| {
            let p = get_json(c, &["networkpolicy", np, "-n", &ns.name]);
            (
                p["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                p["metadata"]["generation"].to_string(),
            )
        })
        .collect()
    };
    let before = versions();
    let o = c.kubectl(&[
        "annotate",
        "sandboxtemplates.sandbox.gke.io",
        "agent-execution-template",
        "-n",
        &ns.name,
        "touched=1",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let first = sandboxes(c, &ns.name, "agent-execution-template")[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let o = c.kubectl(&[
        "delete",
        "sandboxes.sandbox.gke.io",
        &first,
        "-n",
        &ns.name,
        "--wait=false",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    wait_pool(c, &ns.name, "agent-execution-template", 5);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        versions(),
        before,
        "a settled template's NetworkPolicies keep their resourceVersion and generation"
    );
}

#[test]
fn ten_concurrent_claims_bind_ten_distinct_sandboxes_and_the_pool_refills() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "claims", false);
    apply(c, &article_in(&ns.name, "t", 5));
    wait_pool(c, &ns.name, "t", 5);

    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": (0..10).map(|i| claim(&ns.name, &format!("c{i}"), "t")).collect::<Vec<_>>()});
    apply(c, &list.to_string());
    let mut bound = BTreeSet::new();
    let mut launches = Vec::new();
    for i in 0..10 {
        let st = wait_bound(c, &ns.name, &format!("c{i}"));
        assert!(st["startupTimeMs"].as_i64().is_some(), "{st}");
        assert!(st["podName"].is_string() && st["podIP"].is_string(), "{st}");
        launches.push(st["launchType"].as_str().unwrap_or("").to_string());
        bound.insert(st["sandbox"].as_str().unwrap().to_string());
    }
    assert_eq!(bound.len(), 10, "ten distinct sandboxes");
    assert!(
        launches.iter().filter(|l| *l == "warm").count() >= 5,
        "{launches:?}"
    );
    // Each bound sandbox belongs to its claim now; the pool is back to five.
    for i in 0..10 {
        let name = format!("c{i}");
        let sb = claim_status(c, &ns.name, &name)["sandbox"]
            .as_str()
            .unwrap()
            .to_string();
        let s = get_json(c, &["sandboxes.sandbox.gke.io", &sb, "-n", &ns.name]);
        assert_eq!(
            s["metadata"]["labels"]["sandbox.gke.io/claim"],
            name.as_str()
        );
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "SandboxClaim");
    }
    wait_pool(c, &ns.name, "t", 5);

    // Deleting a claim deletes its sandbox and pod.
    let sb = claim_status(c, &ns.name, "c0")["sandbox"]
        .as_str()
        .unwrap()
        .to_string();
    let o = c.kubectl(&[
        "delete",
        "sandboxclaims.sandbox.gke.io",
        "c0",
        "-n",
        &ns.name,
        "--wait=true",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    wait(
        "sandbox and pod garbage-collected",
        Duration::from_secs(60),
        || {
            !c.kubectl(&["get", "sandboxes.sandbox.gke.io", &sb, "-n", &ns.name])
                .status
                .success()
                && !c
                    .kubectl(&["get", "pod", &sb, "-n", &ns.name])
                    .status
                    .success()
        },
    );
}

#[test]
fn an_empty_pool_gives_a_cold_sandbox_at_once_and_missing_templates_wait() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "cold", false);
    apply(c, &article_in(&ns.name, "empty", 0));
    assert!(create(c, &claim(&ns.name, "now", "empty")).status.success());
    let st = wait_bound(c, &ns.name, "now");
    assert_eq!(st["launchType"], "cold");
    let events = out(&c.kubectl(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "reason=PoolExhausted",
    ]));
    assert!(events.contains("PoolExhausted"), "{events}");

    // A claim for a template that does not exist yet says so, then binds when it appears.
    assert!(
        create(c, &claim(&ns.name, "early", "later"))
            .status
            .success()
    );
    wait(
        "TemplateNotFound condition",
        Duration::from_secs(30),
        || {
            claim_status(c, &ns.name, "early")["conditions"]
                .to_string()
                .contains("TemplateNotFound")
        },
    );
    apply(c, &article_in(&ns.name, "later", 1));
    wait_bound(c, &ns.name, "early");

    // A lifetime ends the claim.
    let mut short = claim(&ns.name, "short", "empty");
    short["spec"]["ttlSeconds"] = json!(2);
    assert!(create(c, &short).status.success());
    wait("claim expired", Duration::from_secs(30), || {
        !c.kubectl(&[
            "get",
            "sandboxclaims.sandbox.gke.io",
            "short",
            "-n",
            &ns.name,
        ])
        .status
        .success()
    });

    // A lifetime past the schema's year is refused by the apiserver itself (created +
    // ttl would otherwise overflow in the reconciler), before any policy runs; one
    // within the shipped policy's day binds.
    let mut huge = claim(&ns.name, "huge", "empty");
    huge["spec"]["ttlSeconds"] = json!(i64::MAX);
    let o = create(c, &huge);
    assert!(!o.status.success(), "a ttlSeconds of i64::MAX is refused");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("spec.ttlSeconds"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut hour = claim(&ns.name, "hour", "empty");
    hour["spec"]["ttlSeconds"] = json!(3600);
    assert!(create(c, &hour).status.success());
    wait_bound(c, &ns.name, "hour");
}

#[test]
fn a_reconciler_killed_mid_fill_makes_no_duplicates() {
    let c = cluster();
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "restart", false);
    apply(c, &article_in(&ns.name, "big", 20));
    wait("fill under way", Duration::from_secs(60), || {
        let _ = c.reconciler_log("reconciler");
        !sandboxes(c, &ns.name, "big").is_empty()
    });
    c.kill_reconciler();
    let during = sandboxes(c, &ns.name, "big").len();
    c.start_reconciler();
    wait_pool(c, &ns.name, "big", 20);
    std::thread::sleep(Duration::from_secs(2));
    let total = sandboxes(c, &ns.name, "big").len();
    assert_eq!(
        total, 20,
        "exactly the pool size after a restart (killed at {during})"
    );
}

fn leader_metric(port: u16) -> Option<i64> {
    let m = http_get(port, "/metrics")?;
    m.lines()
        .find(|l| l.starts_with("sandgate_leader "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn two_replicas_elect_one_leader_and_fail_over() {
    let c = cluster();
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    c.kill_reconciler();
    let (a, pa) = spawn_reconciler(c, "replica-a", &[]);
    let (b, pb) = spawn_reconciler(c, "replica-b", &[]);
    let mut leaders = (0, 0);
    wait("one leader", Duration::from_secs(30), || {
        leaders = (
            leader_metric(pa).unwrap_or(-1),
            leader_metric(pb).unwrap_or(-1),
        );
        leaders == (1, 0) || leaders == (0, 1)
    });
    // Stays at exactly one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        leader_metric(pa).unwrap_or(0) + leader_metric(pb).unwrap_or(0),
        1
    );

    let (mut leader, mut standby, standby_port) = if leaders.0 == 1 {
        (a, b, pb)
    } else {
        (b, a, pa)
    };
    let _ = leader.kill();
    let _ = leader.wait();
    let killed_at = Instant::now();
    wait("standby takes over", Duration::from_secs(30), || {
        leader_metric(standby_port) == Some(1)
    });
    let took = killed_at.elapsed();

    // The new leader reconciles.
    let ns = Ns::new(c, "failover", false);
    apply(c, &article_in(&ns.name, "t", 2));
    wait_pool(c, &ns.name, "t", 2);
    let _ = standby.kill();
    let _ = standby.wait();
    c.start_reconciler();
    eprintln!("failover took {took:?} (lease duration 3 s)");
}

/// Claims made at a rate while every reconciler cache lags (fault injection): each claim
/// still holds exactly one sandbox, and no sandbox is bound beyond the claims.
#[test]
fn claims_at_a_rate_with_lagging_caches_hold_exactly_one_sandbox_each() {
    const CLAIMS: usize = 100;
    const PER_SECOND: u64 = 10;
    let c = cluster();
    let _g = c.gate.write().unwrap_or_else(|e| e.into_inner());
    c.kill_reconciler();
    let (mut lagged, _) = spawn_reconciler(c, "lagged", &["--fault-cache-lag-ms=400"]);
    let ns = Ns::new(c, "lag", false);
    apply(c, &article_in(&ns.name, "t", 10));
    wait_pool(c, &ns.name, "t", 10);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let names: Vec<String> = (0..CLAIMS).map(|i| format!("load-{i}")).collect();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("client config");
        let client = kube::Client::try_from(config).expect("client");
        let api: kube::Api<sandgate::crd::SandboxClaim> = kube::Api::namespaced(client, &ns.name);
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_SECOND));
        for name in &names {
            tick.tick().await;
            let obj: sandgate::crd::SandboxClaim =
                serde_json::from_value(claim(&ns.name, name, "t")).expect("a claim");
            api.create(&Default::default(), &obj)
                .await
                .expect("claim created");
        }
    });
    let start = Instant::now();
    let all_bound = || {
        let list = get_json(c, &["sandboxclaims.sandbox.gke.io", "-n", &ns.name]);
        list["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .filter(|i| i["status"]["phase"] == "Bound")
                .count()
                == CLAIMS
        })
    };
    while !all_bound() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "claims not all bound\n{}",
            c.reconciler_log("lagged")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Surplus binds are given back right after the status write that loses: let them go.
    std::thread::sleep(Duration::from_secs(3));

    let claims = get_json(c, &["sandboxclaims.sandbox.gke.io", "-n", &ns.name]);
    let all = sandboxes(c, &ns.name, "t");
    let mut per_claim: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for sb in all
        .iter()
        .filter(|s| s["metadata"].get("deletionTimestamp").is_none())
    {
        if let Some(owner) = sb["metadata"]["labels"]["sandbox.gke.io/claim"].as_str() {
            per_claim
                .entry(owner.to_string())
                .or_default()
                .push(sb["metadata"]["name"].as_str().unwrap_or("").to_string());
        }
    }
    let doubled: Vec<_> = per_claim.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(
        doubled.is_empty(),
        "claims holding more than one sandbox: {doubled:?}"
    );
    assert_eq!(per_claim.len(), CLAIMS, "every claim holds a sandbox");
    for item in claims["items"].as_array().into_iter().flatten() {
        let name = item["metadata"]["name"].as_str().unwrap_or("");
        assert_eq!(
            per_claim.get(name).map(|v| v[0].as_str()),
            item["status"]["sandbox"].as_str(),
            "claim {name}'s status names the sandbox it holds"
        );
    }
    let given_back = std::fs::read_to_string(c.log_path("lagged"))
        .unwrap_or_default()
        .matches("surplus sandbox")
        .count();
    eprintln!(
        "{CLAIMS} claims at {PER_SECOND}/s with 400 ms cache lag: {} sandboxes in the namespace, {given_back} surplus binds given back",
        all.len()
    );

    let _ = lagged.kill();
    let _ = lagged.wait();
    c.start_reconciler();
}

/// A sandbox pod refused at admission is named where the user looks: a `PodDenied`
/// event and condition on its Sandbox, a `PodDenied` reason on the claim's Bound
/// condition (nobody waits for a timeout); once the cause is gone, the claim binds.
#[test]
fn a_pod_refused_at_admission_is_named_on_its_sandbox_and_claim() {
    let c = cluster();
    let _g = c.gate.read().unwrap_or_else(|e| e.into_inner());
    let ns = Ns::new(c, "denied", false);
    // An admin's policy opening all egress to every pod: sandbox pods may not be placed
    // under it (egress-widening), so the reconciler's pod is refused.
    let open = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": "open", "namespace": ns.name},
                      "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}});
    assert!(create(c, &open).status.success());
    apply(c, &article_in(&ns.name, "blocked", 0));
    assert!(
        create(c, &claim(&ns.name, "waiting", "blocked"))
            .status
            .success()
    );
    let mut st = Value::Null;
    wait(
        "the claim names the denial",
        Duration::from_secs(60),
        || {
            st = claim_status(c, &ns.name, "waiting");
            st["conditions"].to_string().contains("PodDenied")
        },
    );
    let bound = &st["conditions"][0];
    assert_eq!(bound["type"], "Bound", "{st}");
    assert_eq!(bound["status"], "False", "{st}");
    assert!(
        bound["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"open\""),
        "the message names the policy: {st}"
    );
    let sandbox = st["sandbox"].as_str().unwrap_or_default().to_string();
    let sb = get_json(c, &["sandboxes.sandbox.gke.io", &sandbox, "-n", &ns.name]);
    assert!(
        sb["status"]["conditions"]
            .to_string()
            .contains("PodAdmitted"),
        "{sb}"
    );
    let events = out(&c.kubectl(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "--field-selector",
        "reason=PodDenied",
        "-o",
        "json",
    ]));
    assert!(events.contains(&sandbox), "{events}");
    // The cause removed, the retry creates the pod and the claim binds.
    let o = c.kubectl(&["delete", "networkpolicy", "open", "-n", &ns.name]);
    assert!(o.status.success(), "{}", out(&o));
    let st = wait_bound(c, &ns.name, "waiting");
    assert!(!st["conditions"].to_string().contains("PodDenied"), "{st}");
    let sb = get_json(c, &["sandboxes.sandbox.gke.io", &sandbox, "-n", &ns.name]);
    assert!(
        !sb["status"]["conditions"]
            .to_string()
            .contains("PodAdmitted"),
        "{sb}"
    );
}
