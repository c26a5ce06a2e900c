//! Property tests: arbitrary bytes, arbitrary JSON objects and random pods fed to the
//! handler. It must never panic, must always answer a well-formed AdmissionReview (or a
//! 4xx for a body that is not one), and must never admit what its own rules refuse.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use sandgate::config::Config;
use sandgate::netpol::NoCluster;
use sandgate::server::{AppState, router};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn call(rt: &tokio::runtime::Runtime, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let state = AppState::new(Config::default(), Arc::new(NoCluster));
    rt.block_on(async {
        let req = Request::post(path).body(Body::from(body)).unwrap();
        let resp = router(state).oneshot(req).await.unwrap();
        let status = resp.status();
        (
            status,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    })
}

/// Checks the shape of a 200 answer and returns its response object.
fn well_formed(bytes: &[u8], uid: &str) -> Value {
    let v: Value = serde_json::from_slice(bytes).expect("200 answers are JSON");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = &v["response"];
    assert_eq!(r["uid"], uid);
    let allowed = r["allowed"].as_bool().expect("allowed is a bool");
    match r.get("patch") {
        Some(p) => {
            assert!(allowed, "only allowed answers carry a patch");
            assert_eq!(r["patchType"], "JSONPatch");
            let raw = base64::engine::general_purpose::STANDARD
                .decode(p.as_str().expect("string"))
                .expect("base64");
            let ops: Value = serde_json::from_slice(&raw).expect("patch is JSON");
            assert!(
                ops.as_array().is_some_and(|a| !a.is_empty()),
                "never an empty patch"
            );
        }
        None => assert!(r.get("patchType").is_none(), "no patchType without a patch"),
    }
    if !allowed {
        assert!(
            r["status"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "denials say why"
        );
    }
    r.clone()
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9/._-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("gvisor"),
            Just("runc"),
            Just("ALL"),
            Just("SYS_ADMIN"),
            Just("1Gi"),
            Just("500m"),
            Just("Unconfined")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        "[a-z]{1,8}".prop_map(String::from),
                        Just("spec".to_string()),
                        Just("containers".to_string()),
                        Just("securityContext".to_string()),
                        Just("privileged".to_string()),
                        Just("resources".to_string()),
                        Just("limits".to_string()),
                        Just("metadata".to_string()),
                        Just("labels".to_string()),
                        Just("volumes".to_string()),
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[derive(Debug, Clone)]
struct RandomPod {
    privileged: Option<bool>,
    escalation: Option<bool>,
    host_network: Option<bool>,
    host_path: bool,
    caps: Vec<&'static str>,
    runtime: Option<&'static str>,
    automount: Option<bool>,
    cpu_limit: Option<&'static str>,
    cpu_request: Option<&'static str>,
    host_port: Option<i32>,
    seccomp: Option<&'static str>,
    init: bool,
}

/// Mostly benign, sometimes risky: most generated pods differ from a good pod in one or
/// two fields, so a rule that stops firing is caught, not masked by another denial.
fn risky<T: Clone + std::fmt::Debug + 'static>(benign: T, risky: Vec<T>) -> BoxedStrategy<T> {
    let bad = proptest::sample::select(risky);
    prop_oneof![7 => Just(benign), 1 => bad].boxed()
}

fn arb_pod() -> impl Strategy<Value = RandomPod> {
    (
        (
            risky(None, vec![Some(true), Some(false)]),
            risky(None, vec![Some(true), Some(false)]),
            risky(None, vec![Some(true), Some(false)]),
            risky(false, vec![true]),
        ),
        risky(
            vec![],
            vec![
                vec!["NET_BIND_SERVICE"],
                vec!["SYS_ADMIN"],
                vec!["NET_RAW", "NET_BIND_SERVICE"],
            ],
        ),
        risky(None, vec![Some("gvisor"), Some("runc"), Some("kata")]),
        risky(None, vec![Some(true), Some(false)]),
        risky(
            None,
            vec![
                Some("100m"),
                Some("1"),
                Some("4"),
                Some("16"),
                Some("bogus"),
            ],
        ),
        risky(None, vec![Some("50m"), Some("2"), Some("8")]),
        (
            risky(None, vec![Some(0), Some(8080)]),
            risky(None, vec![Some("RuntimeDefault"), Some("Unconfined")]),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (privileged, escalation, host_network, host_path),
                caps,
                runtime,
                automount,
                cpu_limit,
                cpu_request,
                (host_port, seccomp, init),
            )| RandomPod {
                privileged,
                escalation,
                host_network,
                host_path,
                caps,
                runtime,
                automount,
                cpu_limit,
                cpu_request,
                host_port,
                seccomp,
                init,
            },
        )
}

fn build(p: &RandomPod) -> Value {
    let mut container = json!({"name": "c", "image": "python:3.11-slim", "securityContext": {}});
    let sc = &mut container["securityContext"];
    if let Some(v) = p.privileged {
        sc["privileged"] = json!(v);
    }
    if let Some(v) = p.escalation {
        sc["allowPrivilegeEscalation"] = json!(v);
    }
    if !p.caps.is_empty() {
        sc["capabilities"] = json!({"add": p.caps});
    }
    if let Some(s) = p.seccomp {
        sc["seccompProfile"] = json!({"type": s});
    }
    if let Some(l) = p.cpu_limit {
        container["resources"]["limits"]["cpu"] = json!(l);
    }
    if let Some(r) = p.cpu_request {
        container["resources"]["requests"]["cpu"] = json!(r);
    }
    if let Some(hp) = p.host_port {
        container["ports"] = json!([{"containerPort": 80, "hostPort": hp}]);
    }
    let mut pod = common::pod();
    pod["spec"]["containers"] = json!([container.clone()]);
    if p.init {
        let mut init = container;
        init["name"] = json!("init");
        pod["spec"]["initContainers"] = json!([init]);
    }
    if let Some(v) = p.host_network {
        pod["spec"]["hostNetwork"] = json!(v);
    }
    if p.host_path {
        pod["spec"]["volumes"] = json!([{"name": "h", "hostPath": {"path": "/etc"}}]);
    }
    if let Some(r) = p.runtime {
        pod["spec"]["runtimeClassName"] = json!(r);
    }
    if let Some(a) = p.automount {
        pod["spec"]["automountServiceAccountToken"] = json!(a);
    }
    pod
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let rt = runtime();
        for path in ["/mutate", "/validate"] {
            let (status, bytes) = call(&rt, path, body.clone());
            prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{status}");
            if status == StatusCode::BAD_REQUEST {
                prop_assert!(String::from_utf8_lossy(&bytes).starts_with("sandgate: "));
            }
        }
    }

    #[test]
    fn arbitrary_objects_get_a_well_formed_answer(object in arb_json(), op in prop_oneof![Just("CREATE"), Just("UPDATE")], old in arb_json()) {
        let rt = runtime();
        let review = common::pod_review(op, object, Some(old), None);
        for path in ["/mutate", "/validate"] {
            let (status, bytes) = call(&rt, path, serde_json::to_vec(&review).unwrap());
            prop_assert_eq!(status, StatusCode::OK);
            well_formed(&bytes, review["request"]["uid"].as_str().unwrap());
        }
    }

    #[test]
    fn random_pods_are_never_admitted_unsafe(p in arb_pod()) {
        let rt = runtime();
        let object = build(&p);
        let review = common::pod_review("CREATE", object.clone(), None, None);
        let uid = review["request"]["uid"].as_str().unwrap().to_string();
        let (status, bytes) = call(&rt, "/mutate", serde_json::to_vec(&review).unwrap());
        prop_assert_eq!(status, StatusCode::OK);
        let r = well_formed(&bytes, &uid);
        let must_deny = p.privileged == Some(true)
            || p.escalation == Some(true)
            || p.host_network == Some(true)
            || p.host_path
            || p.caps.iter().any(|c| *c != "NET_BIND_SERVICE")
            || p.runtime.is_some_and(|r| r != "gvisor")
            || p.automount == Some(true)
            || p.host_port == Some(8080)
            || p.seccomp == Some("Unconfined")
            || matches!(p.cpu_limit, Some("16") | Some("bogus"))
            || (p.cpu_limit.is_none() && p.cpu_request == Some("8"));
        prop_assert_eq!(r["allowed"].as_bool(), Some(!must_deny), "{:?}: {}", p, r);

        if !must_deny {
            // What mutation admits must pass validation as stored.
            let mut stored = object;
            if let Some(b64) = r["patch"].as_str() {
                let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
                json_patch::patch(&mut stored, &patch.0).unwrap();
            }
            let again = common::pod_review("CREATE", stored, None, None);
            let (_, bytes) = call(&rt, "/validate", serde_json::to_vec(&again).unwrap());
            let v = well_formed(&bytes, &uid);
            prop_assert_eq!(v["allowed"].as_bool(), Some(true), "{}", v);
        }
    }
}
