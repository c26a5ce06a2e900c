//! The AdmissionReview wire format (admission.k8s.io/v1): parsing a request body into an
//! [`AdmissionRequest`] with an error that says what is wrong, and encoding a
//! [`Decision`] the way the apiserver expects it (base64 JSONPatch, no patch when
//! nothing changed). kube's own types are not used here because its response serialises
//! the patch as an array of numbers, which the apiserver refuses.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Decision;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a usable AdmissionReview. Answered with HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("request body must be a JSON object (an AdmissionReview)")]
    NotAnObject,
    #[error("unsupported apiVersion {0:?}: sandgate speaks admission.k8s.io/v1 only")]
    ApiVersion(String),
    #[error("unexpected kind {0:?}: expected AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    #[error("AdmissionReview request is malformed: {0}")]
    Request(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The fields of an AdmissionRequest that sandgate reads.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

impl AdmissionRequest {
    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }

    pub fn sub_resource(&self) -> &str {
        self.sub_resource.as_deref().unwrap_or("")
    }

    /// The requester's user name ("" when the request names none).
    pub fn username(&self) -> &str {
        self.user_info
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The requester's groups.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.user_info
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

/// A CREATE of `object` in namespace `ns` by user `u`, of `kind` stored as `resource`
/// in `group` (unit tests change what they need with struct update syntax).
#[cfg(test)]
pub(crate) fn test_request(
    group: &str,
    resource: &str,
    kind: &str,
    object: Value,
) -> AdmissionRequest {
    AdmissionRequest {
        uid: "u".into(),
        kind: GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
        },
        resource: GroupVersionResource {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
        },
        sub_resource: None,
        name: object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string),
        namespace: Some("ns".into()),
        operation: Operation::Create,
        user_info: serde_json::json!({"username": "u"}),
        object: Some(object),
        old_object: None,
        dry_run: None,
        options: None,
    }
}

/// Parses an HTTP body into the request it carries.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    // serde_json refuses nesting deeper than 128 levels, so deep bodies are an error,
    // never a stack overflow.
    let mut review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    let obj = review.as_object_mut().ok_or(ReviewError::NotAnObject)?;
    match obj.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => return Err(ReviewError::ApiVersion(v.clone())),
        Some(other) => return Err(ReviewError::ApiVersion(other.to_string())),
        None => return Err(ReviewError::ApiVersion(String::new())),
    }
    match obj.get("kind") {
        Some(Value::String(k)) if k == KIND => {}
        Some(Value::String(k)) => return Err(ReviewError::Kind(k.clone())),
        Some(other) => return Err(ReviewError::Kind(other.to_string())),
        None => return Err(ReviewError::Kind(String::new())),
    }
    let request = match obj.remove("request") {
        Some(Value::Object(r)) => r,
        Some(Value::Null) | None => return Err(ReviewError::MissingRequest),
        Some(_) => return Err(ReviewError::Request("request must be an object".into())),
    };
    match request.get("uid") {
        Some(Value::String(u)) if !u.is_empty() => {}
        _ => return Err(ReviewError::MissingUid),
    }
    serde_json::from_value(Value::Object(request)).map_err(|e| ReviewError::Request(e.to_string()))
}

/// Encodes the response AdmissionReview for `uid`.
pub fn encode(uid: &str, decision: &Decision) -> Value {
    let mut response = json!({
        "uid": uid,
        "allowed": decision.allowed,
    });
    if !decision.allowed {
        response["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message(),
        });
    }
    if !decision.warnings.is_empty() {
        response["warnings"] = json!(decision.warnings);
    }
    if decision.allowed
        && let Some(patch) = decision.patch.as_ref().filter(|p| !p.0.is_empty())
    {
        match serde_json::to_vec(patch) {
            Ok(bytes) => {
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            // Allowing without the mutation would admit an unhardened pod: deny.
            Err(e) => {
                response["allowed"] = json!(false);
                response["status"] = json!({
                    "code": 500,
                    "reason": "InternalError",
                    "message": format!("sandgate could not encode its patch: {e}"),
                });
            }
        }
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "response": response,
    })
}
