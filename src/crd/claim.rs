use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A SandboxClaim asks for a sandbox of a template. It is bound to a warm sandbox from
/// the pool at once, or to a cold one when the pool is empty.
// kube's printcolumn(...) lists repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sandbox.gke.io",
    version = "v1",
    kind = "SandboxClaim",
    namespaced,
    status = "SandboxClaimStatus",
    shortname = "sbc",
    category = "sandgate",
    derive = "PartialEq",
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.templateName",
        description = "SandboxTemplate asked for"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Bound, Expired or Failed"
    ),
    printcolumn(
        name = "Sandbox",
        type_ = "string",
        json_path = ".status.sandbox",
        description = "The bound sandbox"
    ),
    printcolumn(
        name = "Launch",
        type_ = "string",
        json_path = ".status.launchType",
        description = "warm (from the pool) or cold"
    ),
    printcolumn(
        name = "Startup-ms",
        type_ = "integer",
        json_path = ".status.startupTimeMs",
        description = "Claim created to sandbox usable, in milliseconds"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimSpec {
    /// Name of the SandboxTemplate (same namespace) to take a sandbox from; what the SDK
    /// passes as `template_name`.
    #[schemars(length(min = 1))]
    pub template_name: String,
    /// Lifetime of the claim in seconds from its creation, at most a year (31536000);
    /// when it runs out the claim and its sandbox are deleted. Absent: until the claim is
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = crate::contract::MAX_CLAIM_TTL_SECONDS))]
    pub ttl_seconds: Option<i64>,
}

/// How a claim got its sandbox.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaunchType {
    /// Taken ready from the warm pool.
    Warm,
    /// Created for this claim because the pool was empty.
    Cold,
}

impl LaunchType {
    /// The name in the claim's status and on the Sandbox's launch annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchType::Warm => "warm",
            LaunchType::Cold => "cold",
        }
    }

    /// Reads the launch annotation; anything but `cold` was taken from the pool.
    pub fn from_annotation(value: Option<&str>) -> Self {
        if value == Some(LaunchType::Cold.as_str()) {
            LaunchType::Cold
        } else {
            LaunchType::Warm
        }
    }
}

/// Lifecycle of a claim.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClaimPhase {
    /// Waiting for its template, or for its sandbox to become ready.
    Pending,
    /// Its sandbox is ready and its own.
    Bound,
    /// Its lifetime ran out (it is being deleted).
    Expired,
    /// Its sandbox failed.
    Failed,
}

/// Observed state of a claim.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimStatus {
    /// Pending, Bound, Expired or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClaimPhase>,
    /// Name of the bound Sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Name of the bound sandbox's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// IP address of the bound sandbox's pod.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Milliseconds from the claim's creation to its sandbox being usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_time_ms: Option<i64>,
    /// warm or cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<LaunchType>,
    /// Latest observations (Bound, TemplateNotFound, PoolExhausted...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
