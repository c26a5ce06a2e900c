//! Builders shared by the integration tests: pods and AdmissionReviews as the apiserver
//! sends them.
#![allow(dead_code)]

pub mod https;

use serde_json::{Value, json};

use sandgate::admission::{AdmissionRequest, review};

/// A minimal sandbox pod as a user would write it (the article's pod).
pub fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent-run",
            "namespace": "agents",
            "labels": {"sandbox.gke.io/sandbox": "agent-run"}
        },
        "spec": {
            "containers": [{"name": "sandbox", "image": "python:3.11-slim"}]
        }
    })
}

/// A pod that already satisfies every rule: mutation has nothing to add.
pub fn compliant_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent-run",
            "namespace": "agents",
            "labels": {"sandbox.gke.io/sandbox": "agent-run"}
        },
        "spec": {
            "runtimeClassName": "gvisor",
            "automountServiceAccountToken": false,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "sandbox",
                "image": "python:3.11-slim",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
                    "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"}
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    })
}

/// An AdmissionReview (v1) for a pod operation.
pub fn pod_review(
    operation: &str,
    object: Value,
    old: Option<Value>,
    sub_resource: Option<&str>,
) -> Value {
    let mut req = json!({
        "uid": "0c9a2b6e-1111-4c2a-9f0e-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(json!("agents")),
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old,
        "dryRun": false,
        "options": null
    });
    if let Some(sub) = sub_resource {
        req["subResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

/// An AdmissionReview for a SandboxTemplate CREATE.
pub fn template_review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c9a2b6e-2222-4c2a-9f0e-000000000002",
            "kind": {"group": "sandbox.gke.io", "version": "v1", "kind": "SandboxTemplate"},
            "resource": {"group": "sandbox.gke.io", "version": "v1", "resource": "sandboxtemplates"},
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(json!("default")),
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false
        }
    })
}

/// Parses a review built above into the request the decision code takes.
pub fn request(review_json: &Value) -> AdmissionRequest {
    review::parse(&serde_json::to_vec(review_json).expect("json")).expect("a valid review")
}

/// The article's SandboxTemplate, as shipped in deploy/examples/.
pub fn article_template() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/sandbox-template.yaml"
    ))
    .expect("deploy/examples/sandbox-template.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    serde_json::to_value(yaml).expect("json")
}

/// Sets `value` at a JSON pointer, creating objects on the way.
pub fn set(doc: &mut Value, pointer: &str, value: Value) {
    let mut cur = doc;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(idx) = part.parse::<usize>()
            && cur.is_array()
        {
            let arr = cur.as_array_mut().expect("array");
            while arr.len() <= idx {
                arr.push(json!({}));
            }
            if last {
                arr[idx] = value;
                return;
            }
            cur = &mut arr[idx];
            continue;
        }
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().expect("object");
        if last {
            obj.insert(part.clone(), value);
            return;
        }
        cur = obj.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

/// OPA's binary, built once into the cache by `scripts/build-opa.sh` (pinned version).
pub fn opa_binary() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = std::process::Command::new("bash")
        .arg(root.join("scripts/build-opa.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(o.status.success(), "building OPA failed");
    std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}
