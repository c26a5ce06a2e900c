//! Agreement with OPA: a generated corpus of templates, claims and pods judged by the
//! shipped policies in sandgate (regorus) and in OPA itself (built from the Go module
//! proxy by scripts/opa-test.sh's recipe). Any difference in the denials fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sandgate::policy::PolicySet;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn review(kind: &str, object: Value) -> Value {
    json!({"uid": "diff", "operation": "CREATE", "namespace": "default", "name": object["metadata"]["name"],
           "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": kind}, "object": object})
}

/// Templates, claims and pods that vary every field a shipped policy reads.
fn corpus() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let egresses = [
        json!(null),
        json!([{"ports": [{"port": 53, "protocol": "UDP"}]}]),
        json!([{"ports": [{"port": 443}]}]),
        json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
        json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}]),
        json!([{"to": [{"ipBlock": {"cidr": "::/0"}}]}]),
        json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432}]}]),
        json!([{"ports": [{"port": 53, "endPort": 60}]}]),
    ];
    let ingresses = [
        json!(null),
        json!([{"ports": [{"port": 80}]}]),
        json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
        json!([{"from": [{"podSelector": {}}]}]),
    ];
    let images = [
        "python:3.11-slim",
        "gcr.io/p/img:1",
        "evil.example.com/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ];
    let limits = [
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "8"}),
        json!({"memory": "16Gi"}),
        json!({"cpu": 2}),
    ];
    let pools = [0, 5, 50, 51, 10000];
    let runtimes = [json!(null), json!("gvisor"), json!("runc")];
    let mut i = 0;
    for e in &egresses {
        for g in &ingresses {
            for (k, img) in images.iter().enumerate() {
                for rc in &runtimes {
                    let l = &limits[(i + k) % limits.len()];
                    let pool = pools[i % pools.len()];
                    let mut spec = json!({"template": {"spec": {"containers": [{"name": "c", "image": img, "resources": {"limits": l}}]}},
                                      "poolConfig": {"size": pool}});
                    let mut np = json!({});
                    if !e.is_null() {
                        np["egress"] = e.clone();
                    }
                    if !g.is_null() {
                        np["ingress"] = g.clone();
                    }
                    spec["networkPolicy"] = np;
                    if !rc.is_null() {
                        spec["runtimeClassName"] = rc.clone();
                    }
                    let t = json!({"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate", "metadata": {"name": format!("t{i}")}, "spec": spec});
                    out.push(("sandboxtemplate".to_string(), review("SandboxTemplate", t)));
                    i += 1;
                }
            }
        }
    }
    // kubernetes-sigs/agent-sandbox's kinds, judged by the `sandgate.agents.*` policies.
    for (j, e) in egresses.iter().enumerate() {
        for img in &images {
            let mut spec = json!({"podTemplate": {"spec": {"containers": [{"name": "c", "image": img}],
                                                            "initContainers": [{"name": "i", "image": images[j % 3]}]}}});
            if !e.is_null() {
                spec["networkPolicy"] = json!({"egress": e});
            }
            let t = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                           "metadata": {"name": format!("u{j}")}, "spec": spec});
            out.push((
                "agents.sandboxtemplate".to_string(),
                review("SandboxTemplate", t),
            ));
        }
    }
    for (j, lifecycle) in [
        json!(null),
        json!({"shutdownTime": "2026-12-03T00:00:00Z"}),
        json!({"shutdownTime": "2026-12-03T00:00:00Z", "shutdownPolicy": "Delete"}),
        json!({"shutdownPolicy": "Delete"}),
    ]
    .iter()
    .enumerate()
    {
        let mut spec = json!({"warmPoolRef": {"name": "p"}});
        if !lifecycle.is_null() {
            spec["lifecycle"] = lifecycle.clone();
        }
        let c = json!({"metadata": {"name": format!("uc{j}")}, "spec": spec});
        out.push(("agents.sandboxclaim".to_string(), review("SandboxClaim", c)));
    }
    for (j, ttl) in [
        json!(null),
        json!(60),
        json!(86400),
        json!(86401),
        json!(999999),
    ]
    .iter()
    .enumerate()
    {
        let mut spec = json!({"templateName": "t"});
        if !ttl.is_null() {
            spec["ttlSeconds"] = ttl.clone();
        }
        out.push((
            "sandboxclaim".to_string(),
            review(
                "SandboxClaim",
                json!({"metadata": {"name": format!("c{j}")}, "spec": spec}),
            ),
        ));
    }
    for (j, sc) in [
        json!(null),
        json!({"runAsNonRoot": true}),
        json!({"runAsNonRoot": false}),
    ]
    .iter()
    .enumerate()
    {
        let image = ["busybox", "gcr.io/p/img:1", "evil.example.com/x:1"][j % 3];
        let init = [
            "localhost:5000/x",
            "busybox",
            "docker.io.evil.example.com/x",
        ][j % 3];
        let mut pod = json!({"metadata": {"name": format!("p{j}")}, "spec": {"containers": [{"name": "c", "image": image}, {"name": "d", "image": "busybox", "securityContext": {"runAsNonRoot": true}}],
                             "initContainers": [{"name": "i", "image": init}]}});
        if !sc.is_null() {
            pod["spec"]["securityContext"] = sc.clone();
        }
        out.push(("pod".to_string(), review("Pod", pod)));
    }
    out
}

#[test]
fn sandgate_and_opa_agree_on_every_denial() {
    agree(None);
}

/// The allow-lists switched on: registries for templates and pods, egress ranges.
#[test]
fn sandgate_and_opa_agree_with_allow_lists_set() {
    agree(Some(
        json!({"allowedRegistries": ["docker.io", "gcr.io"], "allowedEgressCidrs": ["10.0.0.0/8"]}),
    ));
}

/// Judges the corpus with the shipped policies (and `settings` merged over the shipped
/// settings) in sandgate and in OPA; fails on any difference.
fn agree(settings: Option<Value>) {
    let cases = corpus();
    assert!(cases.len() >= 250, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    // Policies and settings only (tests excluded), as sandgate serves them.
    let src = root().join("policies");
    let files = sandgate::policy::list(&src).unwrap();
    for f in files.policies.iter().chain(&files.data) {
        let dest = policies.join(f.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(f, &dest).unwrap();
    }
    if let Some(extra) = &settings {
        let path = policies.join("settings.yaml");
        let mut doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            doc["settings"][k] = v.clone();
        }
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }
    let set = PolicySet::load_dir(&policies, Duration::from_secs(2)).unwrap();

    // sandgate: (case, policy, message) for every deny and warn.
    let mut ours: BTreeSet<(usize, String, String, String)> = BTreeSet::new();
    for (i, (kind, rv)) in cases.iter().enumerate() {
        let out = set.evaluate(kind, rv);
        assert!(out.errors.is_empty(), "case {i}: {:?}", out.errors);
        for m in out.denials {
            ours.insert((i, "deny".into(), m.policy, m.msg));
        }
        for m in out.warnings {
            ours.insert((i, "warn".into(), m.policy, m.msg));
        }
    }

    // OPA: the same files, one query over the whole corpus.
    let diff = r#"package sandgate_diff
import rego.v1
results contains [i, rule, concat(".", [kind, name]), msg] if {
    some i, c in input.cases
    kind := c.kind
    not startswith(kind, "agents.")
    some name
    data.sandgate[kind][name]
    name != "lib"
    some rule in ["deny", "warn"]
    msgs := object.get(data.sandgate[kind][name], rule, set()) with input.review as c.review
    some m in msgs
    msg := text(m)
}
results contains [i, rule, concat(".", ["agents", kind, name]), msg] if {
    some i, c in input.cases
    startswith(c.kind, "agents.")
    kind := substring(c.kind, 7, -1)
    some name
    data.sandgate.agents[kind][name]
    some rule in ["deny", "warn"]
    msgs := object.get(data.sandgate.agents[kind][name], rule, set()) with input.review as c.review
    some m in msgs
    msg := text(m)
}
text(m) := m if is_string(m)
text(m) := m.msg if is_object(m)
"#;
    std::fs::write(dir.path().join("diff.rego"), diff).unwrap();
    let input = json!({"cases": cases.iter().map(|(k, rv)| json!({"kind": k, "review": rv})).collect::<Vec<_>>()});
    std::fs::write(dir.path().join("input.json"), input.to_string()).unwrap();
    let o = Command::new(common::opa_binary())
        .args(["eval", "--format", "json", "-d"])
        .arg(&policies)
        .arg("-d")
        .arg(dir.path().join("diff.rego"))
        .arg("-i")
        .arg(dir.path().join("input.json"))
        .arg("data.sandgate_diff.results")
        .output()
        .expect("opa runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["result"][0]["expressions"][0]["value"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let theirs: BTreeSet<(usize, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap() as usize,
                r[1].as_str().unwrap().into(),
                r[2].as_str().unwrap().into(),
                r[3].as_str().unwrap().into(),
            )
        })
        .collect();

    let only_ours: Vec<_> = ours.difference(&theirs).take(10).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).take(10).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "sandgate only: {only_ours:#?}\nOPA only: {only_theirs:#?}"
    );
    let denied: BTreeMap<usize, usize> =
        ours.iter()
            .filter(|r| r.1 == "deny")
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.0).or_default() += 1;
                m
            });
    assert!(
        denied.len() > 20 && denied.len() < cases.len(),
        "the corpus has allowed and denied cases: {} of {}",
        denied.len(),
        cases.len()
    );
    // The allow-lists decide something only when set.
    let by = |policy: &str| ours.iter().any(|r| r.1 == "deny" && r.2 == policy);
    assert_eq!(by("pod.images"), settings.is_some(), "pod.images denials");
    assert_eq!(
        by("sandboxtemplate.images"),
        settings.is_some(),
        "template image denials"
    );
    eprintln!(
        "{} cases, {} denied, {} verdict rows, identical in sandgate and OPA",
        cases.len(),
        denied.len(),
        ours.len()
    );
}
