//! Pure builders: the objects the reconciler writes, from a template.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use crate::admission::pipeline;
use crate::config::Config;
use crate::contract::{self, annotation, label};
use crate::crd::{LaunchType, Sandbox, SandboxClaim, SandboxSpec, SandboxTemplate};

/// The controller owner reference pointing at `owner`.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// A new pool member of `template` (name chosen by the apiserver).
pub fn pool_sandbox(template: &SandboxTemplate) -> Option<Sandbox> {
    let name = template.metadata.name.clone()?;
    Some(Sandbox {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: template.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(
                label::TEMPLATE.to_string(),
                name.clone(),
            )])),
            owner_references: Some(vec![owner_ref(template)?]),
            ..ObjectMeta::default()
        },
        spec: SandboxSpec {
            template_name: name,
            template_generation: template.metadata.generation,
        },
        status: None,
    })
}

/// The name of a claim's cold sandbox: one per claim, so a second creation for the same
/// claim (a reconcile on a stale view) is refused as AlreadyExists.
pub fn cold_name(claim: &SandboxClaim) -> Option<String> {
    let name = claim.metadata.name.as_deref()?;
    let uid: String = claim
        .metadata
        .uid
        .as_deref()?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    // A DNS subdomain (the Sandbox's and its pod's name) has at most 253 characters.
    let keep = name.len().min(253 - 1 - uid.len());
    let stem = name.get(..keep)?.trim_end_matches(['-', '.']);
    Some(format!("{stem}-{uid}"))
}

/// A sandbox made for one claim because the pool had none ready (a cold start).
pub fn cold_sandbox(template: &SandboxTemplate, claim: &SandboxClaim) -> Option<Sandbox> {
    let mut sb = pool_sandbox(template)?;
    let claim_name = claim.metadata.name.clone()?;
    sb.metadata.generate_name = None;
    sb.metadata.name = Some(cold_name(claim)?);
    sb.metadata.owner_references = Some(vec![owner_ref(claim)?]);
    sb.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(label::CLAIM.to_string(), claim_name);
    sb.metadata.annotations = Some(BTreeMap::from([(
        annotation::LAUNCH.to_string(),
        LaunchType::Cold.as_str().to_string(),
    )]));
    Some(sb)
}

/// A pool member handed to `claim`: labelled and annotated as the claim's (`launch`:
/// warm when it was ready, cold when it was still starting), its controller reference
/// moved from the template to the claim.
pub fn claimed_member(
    member: &Sandbox,
    claim: &SandboxClaim,
    launch: LaunchType,
) -> Option<Sandbox> {
    let mut sb = member.clone();
    sb.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(label::CLAIM.to_string(), claim.metadata.name.clone()?);
    sb.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(annotation::LAUNCH.to_string(), launch.as_str().to_string());
    sb.metadata.owner_references = Some(vec![owner_ref(claim)?]);
    Some(sb)
}

/// A warm sandbox given back to its template's pool (a surplus bind): the claim's label
/// and launch annotation removed, the controller reference back on the template.
pub fn released_sandbox(bound: &Sandbox, template: &SandboxTemplate) -> Option<Sandbox> {
    let mut sb = bound.clone();
    if let Some(l) = sb.metadata.labels.as_mut() {
        l.remove(label::CLAIM);
    }
    if let Some(a) = sb.metadata.annotations.as_mut() {
        a.remove(annotation::LAUNCH);
    }
    sb.metadata.owner_references = Some(vec![owner_ref(template)?]);
    Some(sb)
}

/// The pod of a sandbox: the template's pod after sandgate's mutation (the webhook's
/// own code), named like the sandbox and owned by it.
pub fn sandbox_pod(template: &SandboxTemplate, sandbox: &Sandbox, cfg: &Config) -> Option<Pod> {
    let name = sandbox.metadata.name.clone()?;
    let mut pod = pipeline::template_pod(template, cfg);
    pod.metadata.name = Some(name.clone());
    pod.metadata.generate_name = None;
    pod.metadata.namespace = sandbox.metadata.namespace.clone();
    let l = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    l.insert(label::SANDBOX.to_string(), name);
    pod.metadata.owner_references = Some(vec![owner_ref(sandbox)?]);
    if let Some(spec) = pod.spec.as_mut() {
        keep_waiting(spec);
    }
    Some(pod)
}

/// A pool member waits for code, which arrives later through exec. Its containers get
/// an open stdin unless they say otherwise, so an interpreter image without a command
/// (the article's `python:3.11-slim`, whose `python3` exits at once on an empty stdin)
/// stays up as its image's own process, reading a script that never comes, instead of
/// exiting into CrashLoopBackOff; a server's command ignores it. Nothing else changes:
/// the code a claim runs sees the image as shipped. Init containers must finish, so
/// they are left alone.
fn keep_waiting(spec: &mut PodSpec) {
    for c in &mut spec.containers {
        if c.stdin.is_none() {
            c.stdin = Some(true);
        }
    }
}

/// The template's own NetworkPolicy: its rules, selecting its pods, owned by it.
pub fn template_policy(template: &SandboxTemplate) -> Option<NetworkPolicy> {
    let name = template.metadata.name.clone()?;
    let np = template.spec.network_policy.clone().unwrap_or_default();
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(contract::template_policy_name(&name)),
            namespace: template.metadata.namespace.clone(),
            labels: Some(contract::managed_labels()),
            owner_references: Some(vec![owner_ref(template)?]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(label::TEMPLATE.to_string(), name)])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(np.ingress.unwrap_or_default()),
            egress: Some(np.egress.unwrap_or_default()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> SandboxTemplate {
        let mut t: SandboxTemplate = serde_json::from_value(serde_json::json!({
            "apiVersion": "sandbox.gke.io/v1", "kind": "SandboxTemplate",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u1", "generation": 3},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]}},
                     "networkPolicy": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}}
        }))
        .unwrap();
        t.metadata.uid = Some("u1".into());
        t
    }

    #[test]
    fn pods_are_the_mutated_template_owned_by_their_sandbox() {
        let t = template();
        let mut sb = pool_sandbox(&t).unwrap();
        assert_eq!(sb.metadata.generate_name.as_deref(), Some("t-"));
        assert_eq!(sb.spec.template_generation, Some(3));
        sb.metadata.name = Some("t-abcde".into());
        sb.metadata.uid = Some("u2".into());
        let pod = sandbox_pod(&t, &sb, &Config::default()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("t-abcde"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(
            spec.containers[0].stdin,
            Some(true),
            "kept waiting for code"
        );
        assert_eq!(spec.containers[0].command, None, "the image's own command");
        let l = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(l[label::TEMPLATE], "t");
        assert_eq!(l[label::SANDBOX], "t-abcde");
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Sandbox"
        );
        // What the reconciler creates passes the webhook's own pipeline, as the
        // reconciler's identity creating it.
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "operation": "CREATE", "namespace": "ns", "name": "t-abcde",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "userInfo": {"username": contract::SERVICE_ACCOUNT},
                "object": serde_json::to_value(&pod).unwrap()
            }
        });
        let req = crate::admission::review::parse(&serde_json::to_vec(&review).unwrap()).unwrap();
        for webhook in [
            crate::admission::Webhook::Mutate,
            crate::admission::Webhook::Validate,
        ] {
            let d = crate::admission::admit(
                webhook,
                &req,
                &Config::default(),
                &crate::policy::PolicySet::empty(),
            );
            assert!(d.allowed, "{}", d.message());
            assert!(d.patch.is_none(), "nothing left to mutate: {:?}", d.patch);
        }
    }

    #[test]
    fn the_template_policy_selects_the_template_pods() {
        let np = template_policy(&template()).unwrap();
        assert_eq!(
            np.metadata.name.as_deref(),
            Some(contract::template_policy_name("t").as_str())
        );
        assert!(contract::is_sandgate_policy_name(
            np.metadata.name.as_deref().unwrap()
        ));
        assert!(contract::is_managed(np.metadata.labels.as_ref()));
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[label::TEMPLATE],
            "t"
        );
        assert_eq!(spec.egress.unwrap().len(), 1);
        assert_eq!(
            spec.ingress.unwrap().len(),
            0,
            "no ingress rules: deny all ingress"
        );
    }
}
