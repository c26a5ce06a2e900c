//! The controllers over a mocked apiserver (as kube-rs' controller-rs tests its
//! reconciler): the caches are filled by hand, every request the controller sends is
//! recorded and answered by the test, and the test asserts what was written, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::caches::Caches;
use super::context::Context;
use super::{Metrics, Options, backoff, claim, sandbox, template};
use crate::config::Config;
use crate::contract::{self, annotation, label};
use crate::crd::{Sandbox, SandboxClaim, SandboxTemplate};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the controller sent.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    body: Value,
}

impl Call {
    /// The path without the query.
    fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    fn is(&self, method: Method, path: &str) -> bool {
        self.method == method && self.route() == path
    }
}

/// The objects the apiserver holds, by path.
type Known = HashMap<String, Value>;

/// Answers each request with `respond` (which may change what the apiserver holds) and
/// records it, until the client is dropped; returns the requests and the final state.
async fn serve(
    mut handle: Handle,
    mut known: Known,
    respond: impl Fn(&Call, &mut Known) -> (u16, Value),
) -> (Vec<Call>, Known) {
    let mut calls = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let call = Call {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        };
        let (code, answer) = respond(&call, &mut known);
        let answer = serde_json::to_vec(&answer).unwrap_or_default();
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(answer))
                .expect("a response"),
        );
        calls.push(call);
    }
    (calls, known)
}

fn rv(o: &Value) -> Option<&str> {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

fn bump(o: &mut Value) {
    let next = rv(o).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + 1;
    o["metadata"]["resourceVersion"] = json!(next.to_string());
}

/// What a plain apiserver does, with optimistic concurrency: reads and deletions of
/// known objects return them, of others 404; creations name the object (from
/// generateName) and refuse a taken name; replacements and patches that carry a
/// resourceVersion other than the stored one conflict; events are accepted.
fn apiserver(call: &Call, known: &mut Known) -> (u16, Value) {
    let route = call.route().to_string();
    let path = route.trim_end_matches("/status").to_string();
    match call.method {
        Method::GET => known
            .get(&path)
            .cloned()
            .map_or_else(not_found, |o| (200, o)),
        Method::DELETE => known.remove(&path).map_or_else(not_found, |o| (200, o)),
        Method::POST => {
            let mut obj = call.body.clone();
            if obj.pointer("/metadata/name").is_none() {
                let prefix = obj
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                    .unwrap_or("obj-")
                    .to_string();
                let n = known.len();
                obj["metadata"]["name"] = json!(format!("{prefix}g{n:04}"));
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let path = format!("{route}/{name}");
            if known.contains_key(&path) {
                return already_exists();
            }
            obj["metadata"]["uid"] = json!(format!("uid-{name}"));
            obj["metadata"]["resourceVersion"] = json!("1");
            known.insert(path, obj.clone());
            (201, obj)
        }
        Method::PUT => {
            let Some(stored) = known.get(&path) else {
                return not_found();
            };
            if rv(&call.body).is_some_and(|v| Some(v) != rv(stored)) {
                return conflict();
            }
            let mut obj = call.body.clone();
            obj["metadata"]["resourceVersion"] = json!(rv(stored).unwrap_or("0"));
            bump(&mut obj);
            known.insert(path, obj.clone());
            (200, obj)
        }
        Method::PATCH => {
            let mut obj = match known.get(&path) {
                // A server-side apply of a new object creates it.
                None => json!({"metadata": {"resourceVersion": "0"}}),
                Some(stored) => {
                    if rv(&call.body).is_some_and(|v| Some(v) != rv(stored)) {
                        return conflict();
                    }
                    stored.clone()
                }
            };
            let current = rv(&obj).unwrap_or("0").to_string();
            json_patch::merge(&mut obj, &call.body);
            obj["metadata"]["resourceVersion"] = json!(current);
            bump(&mut obj);
            known.insert(path, obj.clone());
            (200, obj)
        }
        _ => (405, json!({})),
    }
}

fn status_of(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason}),
    )
}

fn not_found() -> (u16, Value) {
    status_of(404, "NotFound")
}

fn conflict() -> (u16, Value) {
    status_of(409, "Conflict")
}

fn already_exists() -> (u16, Value) {
    status_of(409, "AlreadyExists")
}

/// The caches a test fills, and the context built on them.
#[derive(Default)]
struct World {
    templates: Vec<SandboxTemplate>,
    sandboxes: Vec<Sandbox>,
    pods: Vec<Pod>,
    claims: Vec<SandboxClaim>,
    policies: Vec<NetworkPolicy>,
}

fn store<K>(objects: &[K]) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
    }
    store
}

/// Where the apiserver serves an object.
fn path_of<K: kube::Resource<DynamicType = ()>>(o: &K) -> String {
    let meta = o.meta();
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref().unwrap_or("");
    let group = K::group(&());
    let root = if group.is_empty() {
        format!("/api/{}", K::version(&()))
    } else {
        format!("/apis/{group}/{}", K::version(&()))
    };
    format!("{root}/namespaces/{ns}/{}/{name}", K::plural(&()))
}

fn known_of<K: kube::Resource<DynamicType = ()> + serde::Serialize>(
    objects: &[K],
    out: &mut Known,
) {
    for o in objects {
        out.insert(path_of(o), serde_json::to_value(o).unwrap_or_default());
    }
}

impl World {
    fn known(&self) -> Known {
        let mut k = Known::new();
        known_of(&self.templates, &mut k);
        known_of(&self.sandboxes, &mut k);
        known_of(&self.pods, &mut k);
        known_of(&self.claims, &mut k);
        known_of(&self.policies, &mut k);
        k
    }

    fn context(&self) -> (Arc<Context>, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let (_tx, synced) = tokio::sync::watch::channel(true);
        let caches = Caches::new(
            store(&self.templates),
            store(&self.sandboxes),
            store(&self.pods),
            store(&self.claims),
            store(&self.policies),
            synced,
        );
        let metrics = Metrics::register(&mut crate::metrics::Registry::new());
        let ctx = Context::new(
            client,
            Config::default(),
            Options::default(),
            caches,
            metrics,
        );
        (Arc::new(ctx), handle)
    }

    /// Runs one reconcile against the mock; returns its action and the requests sent.
    async fn reconcile<K, F, Fut>(
        &self,
        obj: K,
        f: F,
        respond: impl Fn(&Call, &mut Known) -> (u16, Value) + Send + 'static,
    ) -> (super::Result<Action>, Vec<Call>)
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
        F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
        Fut: std::future::Future<Output = super::Result<Action>>,
    {
        let (result, calls, _) = self.reconcile_on(self.known(), obj, f, respond).await;
        (result, calls)
    }

    /// The same against an apiserver holding `known` (which may be ahead of the caches).
    async fn reconcile_on<K, F, Fut>(
        &self,
        mut known: Known,
        obj: K,
        f: F,
        respond: impl Fn(&Call, &mut Known) -> (u16, Value) + Send + 'static,
    ) -> (super::Result<Action>, Vec<Call>, Known)
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
        F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
        Fut: std::future::Future<Output = super::Result<Action>>,
    {
        let (ctx, handle) = self.context();
        let key = path_of(&obj);
        known
            .entry(key)
            .or_insert_with(|| serde_json::to_value(&obj).unwrap_or_default());
        let server = tokio::spawn(serve(handle, known, respond));
        let result = tokio::time::timeout(Duration::from_secs(10), f(Arc::new(obj), ctx))
            .await
            .expect("the reconcile finishes");
        // The context (and so every client clone) is gone: the mock stops.
        let (calls, known) = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the mock apiserver stops")
            .expect("the mock apiserver does not panic");
        (result, calls, known)
    }
}

// Builders for the objects the controllers see.

fn template(size: i32) -> SandboxTemplate {
    serde_json::from_value(json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
        "metadata": {"name": "python", "namespace": "agents", "uid": "uid-template", "generation": 1},
        "spec": {
            "template": {"spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim"}]}},
            "poolConfig": {"size": size}
        }
    }))
    .expect("a template")
}

fn member(name: &str) -> Sandbox {
    serde_json::from_value(json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "Sandbox",
        "metadata": {
            "name": name, "namespace": "agents", "uid": format!("uid-{name}"), "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {label::TEMPLATE: "python"},
            "ownerReferences": [{"apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate", "name": "python", "uid": "uid-template", "controller": true}]
        },
        "spec": {"templateName": "python", "templateGeneration": 1}
    }))
    .expect("a sandbox")
}

fn pod(name: &str, phase: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "agents", "labels": {label::TEMPLATE: "python", label::SANDBOX: name}},
        "spec": {"containers": [{"name": "sandbox", "image": "python:3.11-slim"}]},
        "status": {
            "phase": phase, "podIP": "10.244.0.7",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    }))
    .expect("a pod")
}

fn claim(ttl: Option<i64>, created: &str) -> SandboxClaim {
    serde_json::from_value(json!({
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim",
        "metadata": {"name": "run-1", "namespace": "agents", "uid": "uid-claim", "resourceVersion": "1", "creationTimestamp": created},
        "spec": {"templateName": "python", "ttlSeconds": ttl}
    }))
    .expect("a claim")
}

const NOW_ISH: &str = "2099-01-01T00:00:00Z";

fn paths(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.route()))
        .collect()
}

#[test]
fn backoff_doubles_up_to_a_minute() {
    assert_eq!(backoff(0), Duration::from_millis(250));
    assert_eq!(backoff(1), Duration::from_millis(500));
    assert_eq!(backoff(4), Duration::from_secs(4));
    assert_eq!(backoff(8), Duration::from_secs(60));
    assert_eq!(backoff(100), Duration::from_secs(60));
}

#[tokio::test]
async fn an_empty_pool_gets_its_policies_then_its_members_then_its_status() {
    let t = template(2);
    let world = World {
        templates: vec![t.clone()],
        ..World::default()
    };
    let default_deny = format!(
        "/apis/networking.k8s.io/v1/namespaces/agents/networkpolicies/{}",
        contract::DEFAULT_DENY_POLICY
    );
    let (result, calls) = world.reconcile(t, template::reconcile, apiserver).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(30))
    );
    let template_policy = format!(
        "/apis/networking.k8s.io/v1/namespaces/agents/networkpolicies/{}",
        contract::template_policy_name("python")
    );
    assert_eq!(
        paths(&calls),
        [
            format!("GET {default_deny}"),
            "POST /apis/networking.k8s.io/v1/namespaces/agents/networkpolicies".to_string(),
            format!("PATCH {template_policy}"),
            "POST /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes".to_string(),
            "POST /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes".to_string(),
            "PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxtemplates/python/status"
                .to_string(),
        ],
        "policies before members, the status last"
    );
    // The template's policy is applied by sandgate and selects the template's pods.
    assert!(
        calls[2].path.contains("fieldManager=sandgate"),
        "{}",
        calls[2].path
    );
    assert_eq!(
        calls[2].body["spec"]["podSelector"]["matchLabels"][label::TEMPLATE],
        "python"
    );
    assert_eq!(
        calls[2].body["metadata"]["labels"][label::MANAGED_BY],
        label::MANAGED_BY_SANDGATE
    );
    let sb = &calls[3].body;
    assert_eq!(sb["metadata"]["generateName"], "python-");
    assert_eq!(
        sb["metadata"]["ownerReferences"][0]["kind"],
        "SandboxTemplate"
    );
    assert_eq!(sb["spec"]["templateGeneration"], 1);
    let status = &calls[5].body["status"];
    assert_eq!(
        (status["ready"].clone(), status["pending"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(status["conditions"][0]["reason"], "PoolFilling");
}

#[tokio::test]
async fn a_full_pool_with_a_current_status_writes_no_member_and_no_status() {
    let mut t = template(2);
    let world_members = [member("python-a"), member("python-b")];
    let pods = [
        pod("python-a", "Running", true),
        pod("python-b", "Running", true),
    ];
    // The status the previous pass wrote.
    let first = World {
        templates: vec![t.clone()],
        sandboxes: world_members.to_vec(),
        pods: pods.to_vec(),
        ..World::default()
    };
    let (result, calls) = first
        .reconcile(t.clone(), template::reconcile, apiserver)
        .await;
    result.expect("reconciled");
    let patch = calls
        .iter()
        .find(|c| c.route().ends_with("/status"))
        .unwrap_or_else(|| panic!("the first pass writes the status: {:?}", paths(&calls)));
    t.status = serde_json::from_value(patch.body["status"].clone()).expect("a status");

    let settled = World {
        templates: vec![t.clone()],
        sandboxes: world_members.to_vec(),
        pods: pods.to_vec(),
        ..World::default()
    };
    let (result, calls) = settled.reconcile(t, template::reconcile, apiserver).await;
    result.expect("reconciled");
    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::POST && c.path.contains("/sandboxes")),
        "a full pool creates nothing: {:?}",
        paths(&calls)
    );
    assert!(
        !calls.iter().any(|c| c.route().ends_with("/status")),
        "an unchanged status is not rewritten: {:?}",
        paths(&calls)
    );
}

#[tokio::test]
async fn a_claim_binds_a_ready_member_with_a_guarded_replace_then_writes_its_status() {
    let world = World {
        templates: vec![template(1)],
        sandboxes: vec![member("python-a")],
        pods: vec![pod("python-a", "Running", true)],
        ..World::default()
    };
    let (result, calls) = world
        .reconcile(claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert_eq!(
        paths(&calls),
        [
            "PUT /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-a",
            "PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxclaims/run-1/status",
        ]
    );
    let sb = &calls[0].body;
    assert_eq!(
        sb["metadata"]["resourceVersion"], "1",
        "the replace is guarded"
    );
    assert_eq!(sb["metadata"]["labels"][label::CLAIM], "run-1");
    assert_eq!(sb["metadata"]["annotations"][annotation::LAUNCH], "warm");
    assert_eq!(sb["metadata"]["ownerReferences"][0]["kind"], "SandboxClaim");
    let status = &calls[1].body["status"];
    assert_eq!(status["phase"], "Bound");
    assert_eq!(status["launchType"], "warm");
    assert_eq!(status["sandbox"], "python-a");
    assert_eq!(status["podIP"], "10.244.0.7");
}

#[tokio::test]
async fn a_claim_that_loses_the_race_for_every_member_starts_a_cold_sandbox() {
    let world = World {
        templates: vec![template(1)],
        sandboxes: vec![member("python-a")],
        pods: vec![pod("python-a", "Running", true)],
        ..World::default()
    };
    let (result, calls) = world
        .reconcile(claim(None, NOW_ISH), claim::reconcile, |c, known| {
            if c.method == Method::PUT {
                conflict()
            } else {
                apiserver(c, known)
            }
        })
        .await;
    result.expect("reconciled");
    assert_eq!(
        paths(&calls),
        [
            "PUT /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-a",
            "POST /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes",
            "PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxclaims/run-1/status",
            "POST /apis/events.k8s.io/v1/namespaces/agents/events",
        ]
    );
    let cold = &calls[1].body;
    assert_eq!(
        cold["metadata"]["name"], "run-1-uidclaim",
        "one cold sandbox per claim, by name"
    );
    assert_eq!(cold["metadata"]["annotations"][annotation::LAUNCH], "cold");
    assert_eq!(
        cold["metadata"]["ownerReferences"][0]["kind"],
        "SandboxClaim"
    );
    assert_eq!(calls[3].body["reason"], "PoolExhausted");
    let status = &calls[2].body["status"];
    assert_eq!(
        (status["phase"].clone(), status["launchType"].clone()),
        (json!("Pending"), json!("cold"))
    );
}

#[tokio::test]
async fn a_claim_for_a_missing_template_waits_and_says_so() {
    let world = World::default();
    let (result, calls) = world
        .reconcile(claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    result.expect("reconciled");
    assert_eq!(
        paths(&calls),
        [
            "POST /apis/events.k8s.io/v1/namespaces/agents/events",
            "PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxclaims/run-1/status",
        ]
    );
    assert_eq!(calls[0].body["reason"], "TemplateNotFound");
    assert_eq!(
        calls[1].body["status"]["conditions"][0]["reason"],
        "TemplateNotFound"
    );
}

#[tokio::test]
async fn an_expired_claim_is_deleted_and_a_huge_lifetime_is_not() {
    let world = World {
        templates: vec![template(0)],
        ..World::default()
    };
    let (result, calls) = world
        .reconcile(
            claim(Some(60), "2020-01-01T00:00:00Z"),
            claim::reconcile,
            apiserver,
        )
        .await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert_eq!(
        paths(&calls),
        [
            "POST /apis/events.k8s.io/v1/namespaces/agents/events",
            "DELETE /apis/sandbox.gke.io/v1/namespaces/agents/sandboxclaims/run-1",
        ]
    );
    assert_eq!(calls[0].body["reason"], "Expired");

    // created + i64::MAX overflows: the claim lives on (no panic, no wrap to "expired").
    let (result, calls) = world
        .reconcile(
            claim(Some(i64::MAX), "2020-01-01T00:00:00Z"),
            claim::reconcile,
            apiserver,
        )
        .await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert!(
        !calls.iter().any(|c| c.method == Method::DELETE),
        "{:?}",
        paths(&calls)
    );
    assert!(
        calls.iter().any(|c| c.is(
            Method::POST,
            "/apis/sandbox.gke.io/v1/namespaces/agents/sandboxes"
        )),
        "the claim is served (cold: the pool is empty): {:?}",
        paths(&calls)
    );
}

#[tokio::test]
async fn a_sandbox_without_a_pod_gets_the_hardened_pod_of_its_template() {
    let world = World {
        templates: vec![template(1)],
        sandboxes: vec![member("python-a")],
        ..World::default()
    };
    let (result, calls) = world
        .reconcile(member("python-a"), sandbox::reconcile, apiserver)
        .await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(60))
    );
    assert_eq!(
        paths(&calls),
        [
            "POST /api/v1/namespaces/agents/pods",
            "PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-a/status",
        ]
    );
    let p = &calls[0].body;
    assert_eq!(p["metadata"]["name"], "python-a");
    assert_eq!(p["metadata"]["labels"][label::TEMPLATE], "python");
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Sandbox");
    assert_eq!(
        p["spec"]["runtimeClassName"],
        contract::DEFAULT_RUNTIME_CLASS
    );
    assert_eq!(p["spec"]["automountServiceAccountToken"], false);
    assert!(p["spec"]["containers"][0]["resources"]["limits"]["cpu"].is_string());
    assert_eq!(calls[1].body["status"]["phase"], "Pending");
}

#[tokio::test]
async fn an_unclaimed_sandbox_whose_pod_ended_is_retired_and_a_claimed_one_kept() {
    let world = World {
        templates: vec![template(1)],
        pods: vec![pod("python-a", "Succeeded", false)],
        ..World::default()
    };
    let (result, calls) = world
        .reconcile(member("python-a"), sandbox::reconcile, apiserver)
        .await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert_eq!(
        paths(&calls),
        ["DELETE /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-a"]
    );

    let mut claimed = member("python-a");
    claimed
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(label::CLAIM.to_string(), "run-1".to_string());
    let (result, calls) = world
        .reconcile(claimed, sandbox::reconcile, apiserver)
        .await;
    result.expect("reconciled");
    assert_eq!(
        paths(&calls),
        ["PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-a/status"]
    );
    assert_eq!(calls[0].body["status"]["phase"], "Failed");
    assert_eq!(calls[0].body["status"]["claim"], "run-1");
}

/// A pool member as the apiserver holds it once `claim` took it.
fn taken_by(member_name: &str, claim: &str) -> Sandbox {
    let mut sb = member(member_name);
    sb.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(label::CLAIM.to_string(), claim.to_string());
    sb.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(annotation::LAUNCH.to_string(), "warm".to_string());
    sb.metadata.owner_references = serde_json::from_value(json!([{
        "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxClaim", "name": claim,
        "uid": "uid-claim", "controller": true
    }]))
    .ok();
    sb.metadata.resource_version = Some("2".into());
    sb
}

/// The claim as the apiserver holds it once bound to `sandbox`.
fn bound_claim(sandbox: &str) -> SandboxClaim {
    let mut c = claim(None, NOW_ISH);
    c.metadata.resource_version = Some("2".into());
    c.status = serde_json::from_value(json!({
        "phase": "Bound", "sandbox": sandbox, "podName": sandbox, "podIP": "10.244.0.7",
        "launchType": "warm"
    }))
    .ok();
    c
}

/// The sandboxes the apiserver shows bound to a claim.
fn held_by(known: &Known, claim: &str) -> Vec<String> {
    let mut out: Vec<String> = known
        .iter()
        .filter(|(path, o)| {
            path.contains("/sandboxes/")
                && o.pointer(&format!(
                    "/metadata/labels/{}",
                    label::CLAIM.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                    == Some(claim)
        })
        .filter_map(|(_, o)| o.pointer("/metadata/name")?.as_str().map(String::from))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_reconcile_on_a_stale_view_binds_no_second_warm_sandbox() {
    // The caches still show the claim unbound and both members free; the apiserver
    // already has the claim bound to python-a.
    let stale = World {
        templates: vec![template(2)],
        sandboxes: vec![member("python-a"), member("python-b")],
        pods: vec![
            pod("python-a", "Running", true),
            pod("python-b", "Running", true),
        ],
        ..World::default()
    };
    let mut server = stale.known();
    known_of(&[taken_by("python-a", "run-1")], &mut server);
    known_of(&[bound_claim("python-a")], &mut server);
    let (result, calls, after) = stale
        .reconcile_on(server, claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(1)),
        "{:?}",
        paths(&calls)
    );
    assert!(
        calls.iter().any(|c| c.route().ends_with("/status")
            && c.body.pointer("/metadata/resourceVersion") == Some(&json!("1"))),
        "the status write carries the resourceVersion it read: {:?}",
        paths(&calls)
    );
    assert_eq!(
        held_by(&after, "run-1"),
        ["python-a"],
        "exactly one sandbox per claim: {:?}",
        paths(&calls)
    );
    let b = &after["/apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-b"];
    assert_eq!(
        b["metadata"]["ownerReferences"][0]["kind"], "SandboxTemplate",
        "the surplus member went back to its pool"
    );
    assert!(
        b.pointer("/metadata/annotations/sandbox.gke.io~1launch")
            .is_none()
    );
}

#[tokio::test]
async fn a_reconcile_on_a_stale_view_undoes_its_cold_start() {
    // The caches show an empty pool; the apiserver has the claim bound warm already.
    let stale = World {
        templates: vec![template(0)],
        ..World::default()
    };
    let mut server = stale.known();
    known_of(&[taken_by("python-a", "run-1")], &mut server);
    known_of(&[bound_claim("python-a")], &mut server);
    let (result, calls, after) = stale
        .reconcile_on(server, claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    result.expect("reconciled");
    assert!(
        calls.iter().any(|c| c.is(
            Method::POST,
            "/apis/sandbox.gke.io/v1/namespaces/agents/sandboxes"
        )),
        "{:?}",
        paths(&calls)
    );
    assert_eq!(
        held_by(&after, "run-1"),
        ["python-a"],
        "{:?}",
        paths(&calls)
    );
    assert!(
        !calls.iter().any(|c| c.body["reason"] == "PoolExhausted"),
        "no event for a cold start that was undone"
    );

    // The cold sandbox an earlier pass made is never deleted by a later stale one: the
    // second creation is refused by name and the claim keeps it.
    let mut server = stale.known();
    let first = World {
        templates: vec![template(0)],
        ..World::default()
    };
    let (_, _, made) = first
        .reconcile_on(
            server.clone(),
            claim(None, NOW_ISH),
            claim::reconcile,
            apiserver,
        )
        .await;
    assert_eq!(held_by(&made, "run-1"), ["run-1-uidclaim"]);
    server.extend(made);
    let (_, calls, after) = stale
        .reconcile_on(server, claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    assert!(
        !calls.iter().any(|c| c.method == Method::DELETE),
        "{:?}",
        paths(&calls)
    );
    assert_eq!(held_by(&after, "run-1"), ["run-1-uidclaim"]);
}

#[tokio::test]
async fn a_claim_holding_one_sandbox_gives_back_any_other_bound_to_it() {
    let c = bound_claim("python-a");
    let world = World {
        templates: vec![template(2)],
        sandboxes: vec![taken_by("python-a", "run-1"), taken_by("python-b", "run-1")],
        pods: vec![
            pod("python-a", "Running", true),
            pod("python-b", "Running", true),
        ],
        claims: vec![c.clone()],
        ..World::default()
    };
    let (result, calls, after) = world
        .reconcile_on(world.known(), c, claim::reconcile, apiserver)
        .await;
    result.expect("reconciled");
    assert!(
        !calls.iter().any(|c| c.route().ends_with("/status")),
        "an unchanged status is not rewritten: {:?}",
        paths(&calls)
    );
    assert_eq!(
        held_by(&after, "run-1"),
        ["python-a"],
        "{:?}",
        paths(&calls)
    );
}

#[tokio::test]
async fn with_no_ready_member_a_claim_takes_one_still_starting_instead_of_a_new_sandbox() {
    let world = World {
        templates: vec![template(1)],
        sandboxes: vec![member("python-a")],
        pods: vec![pod("python-a", "Pending", false)],
        ..World::default()
    };
    let (result, calls) = world
        .reconcile(claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    result.expect("reconciled");
    assert_eq!(
        paths(&calls),
        [
            "PUT /apis/sandbox.gke.io/v1/namespaces/agents/sandboxes/python-a",
            "PATCH /apis/sandbox.gke.io/v1/namespaces/agents/sandboxclaims/run-1/status",
            "POST /apis/events.k8s.io/v1/namespaces/agents/events",
        ],
        "no sandbox created: the pool's own starting member serves the claim"
    );
    assert_eq!(
        calls[0].body["metadata"]["annotations"][annotation::LAUNCH],
        "cold"
    );
    let status = &calls[1].body["status"];
    assert_eq!(
        (status["phase"].clone(), status["launchType"].clone()),
        (json!("Pending"), json!("cold"))
    );
    assert_eq!(calls[2].body["reason"], "PoolExhausted");

    // A member whose pod cannot be scheduled is not waited for.
    let mut stuck = pod("python-a", "Pending", false);
    stuck.status.get_or_insert_with(Default::default).conditions = serde_json::from_value(json!([
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    ]))
    .ok();
    let world = World {
        templates: vec![template(1)],
        sandboxes: vec![member("python-a")],
        pods: vec![stuck],
        ..World::default()
    };
    let (_, calls) = world
        .reconcile(claim(None, NOW_ISH), claim::reconcile, apiserver)
        .await;
    assert!(
        calls.iter().any(|c| c.is(
            Method::POST,
            "/apis/sandbox.gke.io/v1/namespaces/agents/sandboxes"
        )),
        "{:?}",
        paths(&calls)
    );
}
