//! Upstream's SandboxTemplate at `/mutate`: egress closed for real.
//! Upstream's controller turns a template's `networkPolicy` into a NetworkPolicy it
//! manages; a template that names no egress rule gets its default, which opens the
//! public internet (everything but the private ranges) and blocks DNS. NetworkPolicies
//! add up, so sandgate's default-deny beside it changes nothing. Such a template is
//! mutated to DNS-only egress (the rule of sandgate's default-deny), with a warning, so
//! the managed policy upstream writes is closed; templates that manage their own policy
//! (`networkPolicyManagement: Unmanaged`) and templates with egress rules are left as
//! they are (those rules are judged at `/validate`).

use serde_json::{Value, json};

use super::super::{AdmissionRequest, Decision, Operation, Rule, Violation, pod, subject};
use crate::netpol;

/// The mutation of an upstream SandboxTemplate write.
pub fn mutate_template(req: &AdmissionRequest) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource() != "" {
        return Decision::allow();
    }
    let who = subject("sandboxtemplate", req);
    let Some(object) = req.object.as_ref().filter(|o| o.is_object()) else {
        return Decision::deny(
            who,
            vec![Violation::new(
                Rule::MalformedObject,
                "object",
                "is missing; the SandboxTemplate cannot be judged",
            )],
        );
    };
    let unmanaged = object
        .pointer("/spec/networkPolicyManagement")
        .and_then(Value::as_str)
        == Some("Unmanaged");
    let egress = object.pointer("/spec/networkPolicy/egress");
    let names_egress = egress
        .and_then(Value::as_array)
        .is_some_and(|rules| !rules.is_empty());
    if unmanaged || names_egress {
        return Decision::allow_subject(who);
    }
    let rule = match serde_json::to_value(netpol::dns_egress()) {
        Ok(r) => r,
        Err(e) => {
            return Decision::deny(
                who,
                vec![Violation::internal(
                    "spec.networkPolicy",
                    format!("cannot build the DNS rule: {e}"),
                )],
            );
        }
    };
    let mut after = object.clone();
    match after
        .pointer_mut("/spec/networkPolicy")
        .filter(|p| p.is_object())
    {
        Some(policy) => policy["egress"] = json!([rule]),
        None => match after.get_mut("spec").filter(|s| s.is_object()) {
            Some(spec) => spec["networkPolicy"] = json!({"egress": [rule]}),
            None => {
                return Decision::deny(
                    who,
                    vec![Violation::new(
                        Rule::MalformedObject,
                        "spec",
                        "a SandboxTemplate must have a spec",
                    )],
                );
            }
        },
    }
    let mut d = Decision::allow_subject(who);
    match pod::diff(Some(object), object, &after) {
        Ok(patch) => d.patch = Some(patch),
        Err(v) => return Decision::deny(d.subject, vec![v]),
    }
    d.warnings.push(
        "spec.networkPolicy.egress: none given, and agent-sandbox's managed default opens the internet; \
         sandgate set DNS-only egress (to kube-dns, port 53). Add the egress the sandbox needs, \
         or set networkPolicyManagement: Unmanaged and bring your own policy"
            .to_string(),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::test_request;

    fn review(spec: Value) -> AdmissionRequest {
        let template = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                              "kind": "SandboxTemplate",
                              "metadata": {"name": "t", "namespace": "ns"}, "spec": spec});
        test_request(
            "extensions.agents.x-k8s.io",
            "sandboxtemplates",
            "SandboxTemplate",
            template,
        )
    }

    fn applied(req: &AdmissionRequest, d: &Decision) -> Value {
        let mut o = req.object.clone().unwrap_or_default();
        if let Some(p) = &d.patch {
            json_patch::patch(&mut o, &p.0).expect("the patch applies");
        }
        o
    }

    #[test]
    fn a_template_without_egress_gets_dns_only() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
        for spec in [
            json!({"podTemplate": pod}),
            json!({"podTemplate": pod, "networkPolicy": {"ingress": []}}),
            json!({"podTemplate": pod, "networkPolicy": {"egress": []}}),
            json!({"podTemplate": pod, "networkPolicyManagement": "Managed"}),
        ] {
            let req = review(spec.clone());
            let d = mutate_template(&req);
            assert!(d.allowed, "{}", d.message());
            let out = applied(&req, &d);
            let egress = &out["spec"]["networkPolicy"]["egress"];
            assert_eq!(egress.as_array().map(Vec::len), Some(1), "{spec}: {out}");
            assert_eq!(egress[0]["ports"][0]["port"], 53);
            assert_eq!(
                egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
                "kube-dns"
            );
            assert_eq!(d.warnings.len(), 1);
            // Idempotent: the mutated template is left alone.
            let mut again = req.clone();
            again.object = Some(out);
            assert!(mutate_template(&again).patch.is_none());
        }
    }

    #[test]
    fn explicit_egress_and_unmanaged_templates_are_left_alone() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
        for spec in [
            json!({"podTemplate": pod, "networkPolicy": {"egress": [{"ports": [{"port": 443}]}]}}),
            json!({"podTemplate": pod, "networkPolicyManagement": "Unmanaged"}),
        ] {
            let d = mutate_template(&review(spec));
            assert!(d.allowed && d.patch.is_none() && d.warnings.is_empty());
        }
        let mut broken = review(json!({}));
        broken.object = Some(json!("nope"));
        assert!(!mutate_template(&broken).allowed);
    }
}
