use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A SandboxTemplate is the security contract of a family of sandboxes: the pod every
/// sandbox runs, the runtime class that isolates it, the network it may reach and the
/// number of sandboxes kept warm.
// kube's printcolumn(...) lists repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sandbox.gke.io",
    version = "v1",
    kind = "SandboxTemplate",
    namespaced,
    status = "SandboxTemplateStatus",
    shortname = "sbt",
    category = "sandgate",
    derive = "PartialEq",
    printcolumn(
        name = "Runtime",
        type_ = "string",
        json_path = ".spec.runtimeClassName",
        description = "RuntimeClass of the sandbox pods"
    ),
    printcolumn(
        name = "Pool",
        type_ = "integer",
        json_path = ".spec.poolConfig.size",
        description = "Warm sandboxes wanted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.ready",
        description = "Warm sandboxes ready to be claimed"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.pending",
        description = "Sandboxes starting"
    ),
    printcolumn(
        name = "Claimed",
        type_ = "integer",
        json_path = ".status.claimed",
        description = "Sandboxes bound to a claim"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    /// RuntimeClass every sandbox pod of this template runs under. Only the runtime class
    /// configured in sandgate (gVisor by default) is admitted.
    #[serde(default = "super::default_runtime_class")]
    pub runtime_class_name: String,

    /// The pod each sandbox runs. sandgate fills in what is missing (runtime class,
    /// resource requests and limits, a restrictive security context, no service-account
    /// token) and refuses what would let the code out (privileged, host namespaces,
    /// hostPath, added capabilities...).
    pub template: PodTemplateSpec,

    /// Network the sandboxes may reach. Absent means deny everything except DNS to
    /// kube-dns. The rules are those of a NetworkPolicy and select this template's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<SandboxNetworkPolicy>,

    /// Warm pool: how many unclaimed sandboxes to keep ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_config: Option<PoolConfig>,
}

/// NetworkPolicy rules applied to the pods of one template, on top of the namespace's
/// default deny.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetworkPolicy {
    /// Egress rules (standard NetworkPolicy egress rules). Absent or empty: DNS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
    /// Ingress rules (standard NetworkPolicy ingress rules). Absent or empty: no ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<NetworkPolicyIngressRule>>,
}

/// Warm-pool settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolConfig {
    /// Number of unclaimed sandboxes kept ready. Each is a running pod: start small.
    #[schemars(range(min = 0))]
    pub size: i32,
}

/// Observed state of a template's pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateStatus {
    /// The template generation these counts describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Unclaimed sandboxes whose pod is Ready.
    #[serde(default)]
    pub ready: i32,
    /// Unclaimed sandboxes whose pod is not Ready yet.
    #[serde(default)]
    pub pending: i32,
    /// Sandboxes bound to a claim.
    #[serde(default)]
    pub claimed: i32,
    /// Latest observations (PoolReady, Unschedulable, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
