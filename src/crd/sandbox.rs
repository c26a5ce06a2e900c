use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Sandbox is one isolated execution environment: one pod built from a
/// SandboxTemplate, warm in the pool until a SandboxClaim binds it.
// kube's printcolumn(...) lists repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sandbox.gke.io",
    version = "v1",
    kind = "Sandbox",
    plural = "sandboxes",
    namespaced,
    status = "SandboxStatus",
    shortname = "sbx",
    category = "sandgate",
    derive = "PartialEq",
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.templateName",
        description = "SandboxTemplate the pod is built from"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Ready, Claimed or Failed"
    ),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.podName",
        description = "The sandbox pod"
    ),
    printcolumn(
        name = "Claim",
        type_ = "string",
        json_path = ".status.claim",
        description = "SandboxClaim bound to this sandbox"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Name of the SandboxTemplate (same namespace) the sandbox's pod is built from.
    #[schemars(length(min = 1))]
    pub template_name: String,
    /// The template generation the pod was built from; older members are rolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_generation: Option<i64>,
}

/// Lifecycle of a sandbox.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SandboxPhase {
    /// The pod is being created or is not Ready yet.
    Pending,
    /// The pod is Ready and no claim holds the sandbox.
    Ready,
    /// A SandboxClaim holds the sandbox.
    Claimed,
    /// The pod failed or could not be scheduled.
    Failed,
}

/// Observed state of a sandbox.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Pending, Ready, Claimed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SandboxPhase>,
    /// Name of the sandbox pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// IP address of the sandbox pod.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Name of the SandboxClaim bound to this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Latest observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
