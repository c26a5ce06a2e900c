//! The `sandbox.gke.io/v1` custom resources (DESIGN.md §1), generated from Rust types so
//! that the YAML under `deploy/crds/` can never drift from what the code reads.

mod claim;
mod sandbox;
mod template;

pub use claim::{ClaimPhase, LaunchType, SandboxClaim, SandboxClaimSpec, SandboxClaimStatus};
pub use sandbox::{Sandbox, SandboxPhase, SandboxSpec, SandboxStatus};
pub use template::{
    PoolConfig, SandboxNetworkPolicy, SandboxTemplate, SandboxTemplateSpec, SandboxTemplateStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The API group of every sandgate resource.
pub const GROUP: &str = crate::contract::GROUP;

/// The three CRDs, in the order `kubectl get crds` lists them.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![SandboxClaim::crd(), Sandbox::crd(), SandboxTemplate::crd()];
    for crd in &mut crds {
        for v in &mut crd.spec.versions {
            let root = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut());
            let spec = root
                .and_then(|r| r.properties.as_mut())
                .and_then(|p| p.get_mut("spec"))
                .and_then(|s| s.properties.as_mut());
            for (_, field) in spec.into_iter().flatten() {
                for child in children(field) {
                    shorten_descriptions(child);
                }
            }
        }
    }
    crds
}

/// The embedded core types (PodTemplateSpec, NetworkPolicy rules) carry the core API's
/// descriptions, some pages long (Quantity's alone is 2 KiB, repeated at every resource
/// list). Their first sentence keeps `kubectl explain` useful and the CRD under the
/// 256 KiB that client-side `kubectl apply` can store in its annotation. sandgate's own
/// field descriptions are kept whole.
fn shorten_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(d) = schema.description.as_mut()
        && let Some(end) = d.find(". ").or_else(|| d.find(".\n"))
    {
        d.truncate(end + 1);
    }
    for child in children(schema) {
        shorten_descriptions(child);
    }
}

fn children(schema: &mut JSONSchemaProps) -> Vec<&mut JSONSchemaProps> {
    let mut out: Vec<&mut JSONSchemaProps> = Vec::new();
    if let Some(p) = schema.properties.as_mut() {
        out.extend(p.values_mut());
    }
    if let Some(JSONSchemaPropsOrArray::Schema(s)) = schema.items.as_mut() {
        out.push(s.as_mut());
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = schema.additional_properties.as_mut() {
        out.push(s.as_mut());
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of]
        .into_iter()
        .flatten()
    {
        out.extend(list.iter_mut());
    }
    out
}

/// File name under `deploy/crds/` for a CRD.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.spec.names.plural)
}

/// Renders CRDs as one multi-document YAML stream.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

/// Default runtime class of a SandboxTemplate (also the CRD schema default).
pub fn default_runtime_class() -> String {
    crate::contract::DEFAULT_RUNTIME_CLASS.to_string()
}
