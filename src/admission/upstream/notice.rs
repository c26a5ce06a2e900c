//! Denials visible where users of upstream look. When sandgate refuses a pod that
//! upstream's controller makes for a Sandbox, the controller retries quietly and its
//! claim times out (after 180 s on the managed add-on). The webhook names the denial in
//! an Event on the owning Sandbox, and on the claim that owns the Sandbox; this finds
//! the owner to name. (sandgate's own reconciler sees its denials and reports them on
//! its Sandbox and claim itself.)

use serde_json::Value;

use super::super::{AdmissionRequest, Decision, Operation};
use crate::contract::upstream;
use crate::resources::api_group;

/// An owner an Event can be put on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// The upstream Sandbox that owns a pod sandgate just refused to create (for real:
/// dry runs and other denials name nobody).
pub fn denied_pod_owner(req: &AdmissionRequest, decision: &Decision) -> Option<Owner> {
    if decision.allowed
        || req.operation != Operation::Create
        || req.is_dry_run()
        || !req.resource.group.is_empty()
        || req.resource.resource != "pods"
        || req.sub_resource() != ""
    {
        return None;
    }
    controller_owner(req.object.as_ref()?, upstream::GROUP, "Sandbox")
}

/// The controller owner of `object` of the given group and kind.
pub fn controller_owner(object: &Value, group: &str, kind: &str) -> Option<Owner> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| {
            o.get("controller").and_then(Value::as_bool) == Some(true)
                && o.get("kind").and_then(Value::as_str) == Some(kind)
                && o.get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|v| api_group(v) == group)
        })
        .and_then(|o| {
            let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
            Some(Owner {
                api_version: s("apiVersion")?,
                kind: s("kind")?,
                name: s("name")?,
                uid: s("uid")?,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::test_request;
    use serde_json::json;

    fn req(owner_api: &str, controller: bool, dry_run: bool) -> AdmissionRequest {
        let pod = json!({"metadata": {"name": "p", "ownerReferences": [
            {"apiVersion": owner_api, "kind": "Sandbox", "name": "sb", "uid": "1",
             "controller": controller}]}});
        AdmissionRequest {
            dry_run: Some(dry_run),
            ..test_request("", "pods", "Pod", pod)
        }
    }

    #[test]
    fn only_a_real_denial_of_an_upstream_sandboxs_pod_names_its_owner() {
        let denied = Decision::deny("pod ns/p", Vec::new());
        let owner = denied_pod_owner(&req("agents.x-k8s.io/v1beta1", true, false), &denied);
        assert_eq!(owner.map(|o| o.name), Some("sb".to_string()));
        for r in [
            req("agents.x-k8s.io/v1beta1", true, true),
            req("agents.x-k8s.io/v1beta1", false, false),
            // sandgate's own Sandbox: its reconciler reports that itself.
            req("sandbox.gke.io/v1", true, false),
        ] {
            assert!(denied_pod_owner(&r, &denied).is_none(), "{r:?}");
        }
        let r = req("agents.x-k8s.io/v1beta1", true, false);
        assert!(denied_pod_owner(&r, &Decision::allow()).is_none());
    }
}
