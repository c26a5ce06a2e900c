//! In-process tests of the router: the AdmissionReview contract (v1 answer, uid echoed,
//! base64 JSONPatch, no patch when nothing changed), error statuses for bad bodies, and
//! the side effect never running on dry-run.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::{compliant_pod, pod, pod_review, set};
use sandgate::config::Config;
use sandgate::netpol::{DefaultDeny, EnsureFuture, NetpolError, NoCluster};
use sandgate::server::{AppState, MAX_BODY_BYTES, router};

/// Records the namespaces it was asked about; fails when told to.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    fail: bool,
}

impl DefaultDeny for Recorder {
    fn ensure(&self, namespace: &str) -> EnsureFuture<'_> {
        self.seen.lock().unwrap().push(namespace.to_string());
        let fail = self.fail;
        let ns = namespace.to_string();
        Box::pin(async move {
            if fail {
                Err(NetpolError {
                    namespace: ns,
                    name: "sandgate-default-deny".into(),
                    reason: "apiserver unreachable".into(),
                })
            } else {
                Ok(())
            }
        })
    }
}

fn state_with(dd: Arc<dyn DefaultDeny>) -> Arc<AppState> {
    let s = AppState::new(Config::default(), dd);
    s.readiness.set_serving(true);
    s
}

async fn post(state: Arc<AppState>, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

async fn review(state: Arc<AppState>, path: &str, body: &Value) -> Value {
    let (status, bytes) = post(state, path, serde_json::to_vec(body).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).expect("a JSON AdmissionReview")
}

fn decode_patch(resp: &Value) -> Value {
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let b64 = resp["response"]["patch"]
        .as_str()
        .expect("patch is a base64 string, not an array");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64"),
    )
    .expect("JSON patch")
}

#[tokio::test]
async fn mutate_answers_v1_with_base64_patch_and_echoed_uid() {
    let rec = Arc::new(Recorder::default());
    let body = pod_review("CREATE", pod(), None, None);
    let resp = review(state_with(rec.clone()), "/mutate", &body).await;
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(resp["response"]["uid"], body["request"]["uid"]);
    assert_eq!(resp["response"]["allowed"], true);
    let patch = decode_patch(&resp);
    let mut obj = pod();
    json_patch::patch(
        &mut obj,
        &serde_json::from_value::<json_patch::Patch>(patch)
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(obj["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(
        rec.seen.lock().unwrap().as_slice(),
        ["agents"],
        "default-deny ensured before admission"
    );
}

#[tokio::test]
async fn nothing_to_change_means_no_patch_and_no_patch_type() {
    let resp = review(
        state_with(Arc::new(NoCluster)),
        "/mutate",
        &pod_review("CREATE", compliant_pod(), None, None),
    )
    .await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none());
    assert!(resp["response"].get("patchType").is_none());
}

#[tokio::test]
async fn denial_carries_403_status_and_every_reason() {
    let mut p = pod();
    set(
        &mut p,
        "/spec/containers/0/securityContext/privileged",
        json!(true),
    );
    set(
        &mut p,
        "/spec/volumes",
        json!([{"name": "h", "hostPath": {"path": "/"}}]),
    );
    let resp = review(
        state_with(Arc::new(NoCluster)),
        "/validate",
        &pod_review("CREATE", p, None, None),
    )
    .await;
    let r = &resp["response"];
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("privileged") && msg.contains("hostPath"),
        "{msg}"
    );
    assert!(r.get("patch").is_none());
}

#[tokio::test]
async fn dry_run_never_creates_the_network_policy() {
    let rec = Arc::new(Recorder::default());
    let mut body = pod_review("CREATE", pod(), None, None);
    body["request"]["dryRun"] = json!(true);
    let resp = review(state_with(rec.clone()), "/mutate", &body).await;
    assert_eq!(resp["response"]["allowed"], true);
    assert!(
        rec.seen.lock().unwrap().is_empty(),
        "no side effect on dry-run"
    );
}

#[tokio::test]
async fn a_failed_side_effect_denies_the_pod() {
    let rec = Arc::new(Recorder {
        fail: true,
        ..Default::default()
    });
    let resp = review(
        state_with(rec),
        "/mutate",
        &pod_review("CREATE", pod(), None, None),
    )
    .await;
    assert_eq!(resp["response"]["allowed"], false);
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("NetworkPolicy")
    );
    assert!(resp["response"].get("patch").is_none());
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_reason() {
    let good = pod_review("CREATE", pod(), None, None);
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut empty_uid = good.clone();
    empty_uid["request"]["uid"] = json!("");
    let mut v1beta1 = good.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("Pod");
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut bad_op = good.clone();
    bad_op["request"]["operation"] = json!("EXPLODE");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not json", b"{not json".to_vec(), "not valid JSON"),
        ("empty", Vec::new(), "not valid JSON"),
        ("array", b"[]".to_vec(), "JSON object"),
        ("no uid", serde_json::to_vec(&no_uid).unwrap(), "no uid"),
        (
            "empty uid",
            serde_json::to_vec(&empty_uid).unwrap(),
            "no uid",
        ),
        (
            "v1beta1",
            serde_json::to_vec(&v1beta1).unwrap(),
            "admission.k8s.io/v1beta1",
        ),
        (
            "wrong kind",
            serde_json::to_vec(&wrong_kind).unwrap(),
            "expected AdmissionReview",
        ),
        (
            "no request",
            serde_json::to_vec(&no_request).unwrap(),
            "no request",
        ),
        (
            "bad operation",
            serde_json::to_vec(&bad_op).unwrap(),
            "malformed",
        ),
        ("deep nesting", deep.into_bytes(), "not valid JSON"),
    ];
    for (name, body, needle) in cases {
        for path in ["/mutate", "/validate"] {
            let (status, bytes) = post(state_with(Arc::new(NoCluster)), path, body.clone()).await;
            let text = String::from_utf8_lossy(&bytes);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name} on {path}: {text}");
            assert!(
                text.contains(needle),
                "{name}: {text:?} should say {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, bytes) = post(state_with(Arc::new(NoCluster)), "/mutate", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&bytes).contains("3 MiB"));

    // A body just under the limit is read (and judged) normally.
    let mut p = pod();
    set(
        &mut p,
        "/metadata/annotations",
        json!({"filler": "x".repeat(MAX_BODY_BYTES - 4096)}),
    );
    let body = serde_json::to_vec(&pod_review("CREATE", p, None, None)).unwrap();
    assert!(body.len() < MAX_BODY_BYTES);
    let (status, _) = post(state_with(Arc::new(NoCluster)), "/mutate", body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn probes_and_metrics() {
    let state = state_with(Arc::new(NoCluster));
    let get = |path: &'static str, state: Arc<AppState>| async move {
        let resp = router(state)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        (
            status,
            String::from_utf8(
                resp.into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap(),
        )
    };
    assert_eq!(get("/healthz", state.clone()).await.0, StatusCode::OK);
    assert_eq!(get("/readyz", state.clone()).await.0, StatusCode::OK);

    review(
        state.clone(),
        "/mutate",
        &pod_review("CREATE", pod(), None, None),
    )
    .await;
    let mut bad = pod();
    set(&mut bad, "/spec/hostPID", json!(true));
    review(
        state.clone(),
        "/validate",
        &pod_review("CREATE", bad, None, None),
    )
    .await;
    post(state.clone(), "/validate", b"junk".to_vec()).await;

    let (status, text) = get("/metrics", state.clone()).await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        r#"sandgate_admission_requests_total{webhook="mutate",kind="Pod",operation="CREATE",decision="mutated"} 1"#,
        r#"sandgate_admission_requests_total{webhook="validate",kind="Pod",operation="CREATE",decision="denied"} 1"#,
        r#"sandgate_admission_requests_total{webhook="validate",kind="unknown",operation="unknown",decision="error"} 1"#,
        r#"sandgate_admission_duration_seconds_count{webhook="mutate"} 1"#,
        // The denied pod breaks several rules; each is counted once.
        r#"sandgate_admission_denials_total{kind="Pod",rule="host-namespaces"} 1"#,
        r#"sandgate_admission_denials_total{kind="Pod",rule="resource-limits"} 1"#,
        "sandgate_build_info{version=",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    state
        .readiness
        .set_problem("certificate", Some("reload refused".into()));
    let (status, text) = get("/readyz", state.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("certificate: reload refused"));
    state.readiness.set_problem("certificate", None);
    state.readiness.set_serving(false);
    assert_eq!(
        get("/readyz", state).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn wrong_method_and_path() {
    let state = state_with(Arc::new(NoCluster));
    let resp = router(state.clone())
        .oneshot(Request::get("/mutate").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let resp = router(state)
        .oneshot(Request::post("/nope").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_slow_client_gets_408() {
    let state = AppState::new(Config::default(), Arc::new(NoCluster));
    let mut state = Arc::try_unwrap(state).ok().unwrap();
    state.body_timeout = std::time::Duration::from_millis(200);
    let state = Arc::new(state);
    // Half a review, then silence.
    let first: Result<Vec<u8>, std::io::Error> =
        Ok(b"{\"apiVersion\": \"admission.k8s.io/v1\"".to_vec());
    let chunks = futures::stream::StreamExt::chain(
        futures::stream::once(async { first }),
        futures::stream::pending(),
    );
    let req = Request::post("/validate")
        .body(Body::from_stream(chunks))
        .unwrap();
    let resp = router(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
}

/// The router with the shipped policies.
fn shipped_state() -> Arc<AppState> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policies = sandgate::policy::PolicySet::load_dir(&dir, std::time::Duration::from_secs(1))
        .expect("shipped policies");
    let state = AppState::with_policies(
        Config::default(),
        Arc::new(NoCluster),
        sandgate::policy::store::PolicyStore::fixed(policies),
    );
    state.readiness.set_serving(true);
    state
}

/// agents/c1, a SandboxClaim beyond the shipped lifetime cap, carrying `note`.
fn long_claim(note: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "operation": "CREATE", "namespace": "agents", "name": "c1",
        "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": "SandboxClaim"},
        "resource": {"group": "sandbox.gke.io", "version": "v1", "resource": "sandboxclaims"},
        "object": {"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
                   "metadata": {"name": "c1", "namespace": "agents", "annotations": {"note": note}},
                   "spec": {"templateName": "t", "ttlSeconds": 999999}}}})
}

/// A policy denial names the object as the built-in rules do, namespace included.
#[tokio::test]
async fn policy_denials_name_the_namespaced_object() {
    let state = shipped_state();
    let resp = review(state, "/validate", &long_claim("short")).await;
    assert_eq!(resp["response"]["allowed"], false, "{resp}");
    let msg = resp["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("sandgate denied sandboxclaim agents/c1: policy sandboxclaim.lifetime: "),
        "{msg}"
    );
}

/// Large requests (and kinds whose policies are slow) are evaluated on the blocking
/// pool rather than the I/O thread: the verdict is the same either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_judge_the_same_inline_and_on_the_blocking_pool() {
    let state = shipped_state();
    let small = review(state.clone(), "/validate", &long_claim("short")).await;
    // Over 64 KiB: never evaluated on the I/O thread.
    let large = review(
        state.clone(),
        "/validate",
        &long_claim(&"x".repeat(100 * 1024)),
    )
    .await;
    for resp in [&small, &large] {
        assert_eq!(resp["response"]["allowed"], false, "{resp}");
    }
    assert_eq!(
        small["response"]["status"]["message"], large["response"]["status"]["message"],
        "the same denial on both paths"
    );
    assert!(
        small["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("policy sandboxclaim.lifetime"),
        "{small}"
    );
}

/// What the cluster would say: which Secrets are tokens, which namespaces host
/// sandboxes, the NetworkPolicies of every namespace; each fact fails when told to.
#[derive(Default)]
struct Facts {
    tokens: Vec<&'static str>,
    secrets_fail: bool,
    sandbox_namespaces: Vec<&'static str>,
    policies: Vec<Value>,
    policies_fail: bool,
    /// The NetworkPolicies take this long to read (a slow or hostile apiserver).
    policies_delay: Option<std::time::Duration>,
    /// Upstream agent-sandbox objects, by kind.
    upstream: Vec<(sandgate::resources::Kind, Value)>,
    /// sandgate's SandboxTemplates, PersistentVolumeClaims and PersistentVolumes, as
    /// stored.
    templates: Vec<Value>,
    volume_claims: Vec<Value>,
    volumes: Vec<Value>,
}

impl sandgate::facts::ClusterFacts for Facts {
    fn sandbox_templates<'a>(
        &'a self,
        _namespace: &'a str,
    ) -> sandgate::facts::FactFuture<'a, Vec<Value>> {
        let all = self.templates.clone();
        Box::pin(async move { Ok(all) })
    }

    fn volume_claim<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
    ) -> sandgate::facts::FactFuture<'a, Option<Value>> {
        let found = self
            .volume_claims
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn persistent_volume<'a>(
        &'a self,
        name: &'a str,
    ) -> sandgate::facts::FactFuture<'a, Option<Value>> {
        let found = self
            .volumes
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn upstream_object<'a>(
        &'a self,
        _namespace: &'a str,
        kind: sandgate::resources::Kind,
        name: &'a str,
    ) -> sandgate::facts::FactFuture<'a, Option<Value>> {
        Box::pin(async move {
            Ok(self
                .upstream
                .iter()
                .find(|(k, o)| *k == kind && o["metadata"]["name"] == name)
                .map(|(_, o)| o.clone()))
        })
    }

    fn upstream_objects<'a>(
        &'a self,
        _namespace: &'a str,
        kind: sandgate::resources::Kind,
    ) -> sandgate::facts::FactFuture<'a, Vec<Value>> {
        Box::pin(async move {
            Ok(self
                .upstream
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, o)| o.clone())
                .collect())
        })
    }

    fn token_secrets<'a>(
        &'a self,
        namespace: &'a str,
        names: &'a [String],
    ) -> sandgate::facts::FactFuture<'a, std::collections::BTreeSet<String>> {
        Box::pin(async move {
            if self.secrets_fail {
                return Err(sandgate::facts::FactsError {
                    what: format!("the Secrets of {namespace}"),
                    reason: "apiserver unreachable".into(),
                });
            }
            Ok(names
                .iter()
                .filter(|n| self.tokens.contains(&n.as_str()))
                .cloned()
                .collect())
        })
    }

    fn sandbox_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> sandgate::facts::FactFuture<'a, bool> {
        Box::pin(async move { Ok(self.sandbox_namespaces.contains(&namespace)) })
    }

    fn network_policies<'a>(
        &'a self,
        namespace: &'a str,
    ) -> sandgate::facts::FactFuture<'a, Vec<k8s_openapi::api::networking::v1::NetworkPolicy>> {
        Box::pin(async move {
            if let Some(delay) = self.policies_delay {
                tokio::time::sleep(delay).await;
            }
            if self.policies_fail {
                return Err(sandgate::facts::FactsError {
                    what: format!("the NetworkPolicies of {namespace}"),
                    reason: "apiserver unreachable".into(),
                });
            }
            self.policies
                .iter()
                .map(|p| serde_json::from_value(p.clone()))
                .collect::<Result<_, _>>()
                .map_err(|e| sandgate::facts::FactsError {
                    what: "a test policy".into(),
                    reason: e.to_string(),
                })
        })
    }
}

fn state_with_facts(facts: Facts) -> Arc<AppState> {
    let mut registry = sandgate::metrics::Registry::new();
    let metrics = sandgate::server::metrics::WebhookMetrics::register(&mut registry);
    let s = AppState::from_parts(
        Config::default(),
        Arc::new(NoCluster),
        Arc::new(facts),
        Arc::new(sandgate::server::notices::NoNotices),
        Arc::new(sandgate::policy::store::PolicyStore::fixed(
            sandgate::policy::PolicySet::empty(),
        )),
        metrics,
        Arc::new(registry),
        Arc::default(),
    );
    s.readiness.set_serving(true);
    s
}

#[tokio::test]
async fn a_sandbox_pod_may_not_hold_a_service_account_token_secret() {
    let with_secret = |name: &str, how: &str| {
        let mut p = compliant_pod();
        match how {
            "volume" => set(
                &mut p,
                "/spec/volumes",
                json!([{"name": "s", "secret": {"secretName": name}}]),
            ),
            "env" => set(
                &mut p,
                "/spec/containers/0/env",
                json!([{"name": "T", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}]),
            ),
            "envFrom" => set(
                &mut p,
                "/spec/containers/0/envFrom",
                json!([{"secretRef": {"name": name}}]),
            ),
            _ => set(
                &mut p,
                "/spec/volumes",
                json!([{"name": "s", "projected": {"sources": [{"secret": {"name": name}}]}}]),
            ),
        }
        pod_review("CREATE", p, None, None)
    };
    let state = || {
        state_with_facts(Facts {
            tokens: vec!["legacy-token"],
            ..Facts::default()
        })
    };
    for how in ["volume", "env", "envFrom", "projected"] {
        let r = review(state(), "/validate", &with_secret("legacy-token", how)).await;
        assert_eq!(
            r["response"]["allowed"], false,
            "{how}: a token Secret is refused"
        );
        let msg = r["response"]["status"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("[service-account-token]") && msg.contains("legacy-token"),
            "{how}: {msg}"
        );
        // Twin: an ordinary Secret passes, with a warning naming it.
        let r = review(state(), "/validate", &with_secret("app-config", how)).await;
        assert_eq!(r["response"]["allowed"], true, "{how}: {r}");
        let warnings = r["response"]["warnings"].to_string();
        assert!(
            warnings.contains("app-config") && warnings.contains("reaches the sandbox"),
            "{how}: {warnings}"
        );
    }
    // When the Secrets cannot be checked, the pod is refused (fail closed).
    let down = state_with_facts(Facts {
        secrets_fail: true,
        ..Facts::default()
    });
    let r = review(down, "/validate", &with_secret("app-config", "volume")).await;
    assert_eq!(r["response"]["allowed"], false);
    // A pod with no Secret needs no check at all.
    let down = state_with_facts(Facts {
        secrets_fail: true,
        ..Facts::default()
    });
    let r = review(
        down,
        "/validate",
        &pod_review("CREATE", compliant_pod(), None, None),
    )
    .await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
}

/// Egress widening, through the server's lookups: a sandbox pod is refused where another
/// policy selects it and opens egress (and when the policies cannot be read); a
/// NetworkPolicy that opens egress is refused where sandboxes live.
#[tokio::test]
async fn no_other_network_policy_may_widen_a_sandbox_pods_egress() {
    let open = |name: &str, selector: Value| {
        json!({"metadata": {"name": name, "namespace": "default"},
               "spec": {"podSelector": selector, "policyTypes": ["Egress"], "egress": [{}]}})
    };
    let state = |policies: Vec<Value>| {
        state_with_facts(Facts {
            policies,
            sandbox_namespaces: vec!["default"],
            ..Facts::default()
        })
    };
    let pod = pod_review("CREATE", compliant_pod(), None, None);
    let r = review(state(vec![open("allow-all", json!({}))]), "/validate", &pod).await;
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let msg = r["response"]["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("allow-all") && msg.contains("[egress-widening]"),
        "{msg}"
    );
    // Twins: a policy keeping sandbox pods out, and one selecting other pods.
    let out = open(
        "not-sandboxes",
        json!({"matchExpressions": [{"key": "sandbox.gke.io/sandbox", "operator": "DoesNotExist"}]}),
    );
    let web = open("web", json!({"matchLabels": {"app": "web"}}));
    let r = review(state(vec![out, web]), "/validate", &pod).await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
    // Unreadable policies: refused.
    let down = state_with_facts(Facts {
        policies_fail: true,
        ..Facts::default()
    });
    let r = review(down, "/validate", &pod).await;
    assert_eq!(r["response"]["allowed"], false, "{r}");

    // The policy itself, in a namespace with sandboxes and in one without.
    let write = |namespace: &str| {
        let mut object = open("allow-all", json!({}));
        object["metadata"]["namespace"] = json!(namespace);
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "np", "operation": "CREATE", "namespace": namespace, "name": "allow-all",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "userInfo": {"username": "alice"},
            "object": object}})
    };
    let r = review(state(vec![]), "/validate", &write("default")).await;
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let r = review(state(vec![]), "/validate", &write("web-apps")).await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
}

/// A request's work stops at its deadline (the `timeout` the apiserver puts in the
/// query): a lookup that would take a minute is abandoned and the sandbox pod denied
/// when the apiserver stops waiting, not a minute later. Without a timeout in the query
/// the default (10 s) applies, so the same slow lookup still completes under it.
#[tokio::test]
async fn a_request_stops_at_its_deadline_and_is_denied() {
    let slow = |delay: u64| {
        state_with_facts(Facts {
            policies_delay: Some(std::time::Duration::from_millis(delay)),
            ..Facts::default()
        })
    };
    let pod = pod_review("CREATE", compliant_pod(), None, None);
    let started = std::time::Instant::now();
    let r = review(slow(60_000), "/validate?timeout=1s", &pod).await;
    let took = started.elapsed();
    assert_eq!(r["response"]["allowed"], false, "{r}");
    let msg = r["response"]["status"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("deadline (1s)"), "{msg}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "answered after {took:?}, long after the deadline"
    );
    // Twin: a lookup that finishes inside the deadline is answered as usual.
    let r = review(slow(200), "/validate?timeout=5s", &pod).await;
    assert_eq!(r["response"]["allowed"], true, "{r}");
}
