//! NetworkPolicies are additive: one more policy that selects sandbox pods and allows
//! egress reopens what the default-deny closed. So sandgate's own policies (the
//! namespace default-deny and the per-template policies) may be changed or deleted only
//! by sandgate and the configured writers (cluster admins, the garbage collector, the
//! namespace controller), and no other policy may give sandbox pods egress beyond DNS to
//! kube-dns: the egress a sandbox needs is its SandboxTemplate's `spec.networkPolicy`,
//! where the template rules and the Rego policies judge it. A policy that excludes
//! sandbox pods (`sandbox.gke.io/sandbox DoesNotExist`, which every sandbox pod fails:
//! the mutation sets the label) is none of sandgate's business.
//!
//! The namespace decides whether an unexcluded policy selects sandbox pods, and only the
//! cluster knows it: such writes carry a [`Lookup::SandboxNamespace`]. The other
//! direction, a sandbox pod arriving where a widening policy already selects it, is
//! caught at the pod ([`Lookup::NoWideningPolicies`], judged by [`widening_policies`]).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use super::pod::parse_object;
use super::{
    AdmissionRequest, Decision, Lookup, Operation, Rule, Violation, requester_in, subject,
};
use crate::config::Config;
use crate::contract::{self, label};
use crate::netpol;

/// Whether a NetworkPolicy object is one of sandgate's: by the name sandgate gives it or
/// the label it sets (the same contract functions that name and label them).
fn is_sandgates(object: Option<&Value>) -> bool {
    let Some(meta) = object.and_then(|o| o.get("metadata")) else {
        return false;
    };
    // Read from the raw object: a malformed field elsewhere must not hide the label.
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let managed = meta
        .get("labels")
        .and_then(|l| l.get(label::MANAGED_BY))
        .and_then(Value::as_str)
        == Some(label::MANAGED_BY_SANDGATE);
    managed || contract::is_sandgate_policy_name(name)
}

/// Whether a stored policy (from a list) is one sandgate wrote, to be left out of the
/// widening checks: its label, which only `networkPolicyWriters` may set, *and* content
/// sandgate would write. Not by its name, nor by its label alone: an object under one
/// of sandgate's names, labelled or not, may have been made by anyone before sandgate
/// was installed, and unless it is exactly the default-deny or a template policy that
/// selects only its template's pods with rules a template may have, it is judged like
/// any other policy (and the audit reports it).
pub fn is_sandgates_typed(np: &NetworkPolicy) -> bool {
    contract::is_managed(np.metadata.labels.as_ref())
        && (netpol::is_default_deny(np) || is_template_policy(np))
}

/// A template policy as the reconciler writes it: named for a template, selecting
/// exactly that template's pods, with egress and ingress the template analyses admit.
fn is_template_policy(np: &NetworkPolicy) -> bool {
    let Some(template) = np
        .metadata
        .name
        .as_deref()
        .and_then(contract::template_of_policy)
    else {
        return false;
    };
    let Some(spec) = np.spec.as_ref() else {
        return false;
    };
    let selector = spec.pod_selector.clone().unwrap_or_default();
    let only_its_pods = selector
        .match_expressions
        .as_ref()
        .is_none_or(Vec::is_empty)
        && selector.match_labels.as_ref().is_some_and(|m| {
            m.len() == 1 && m.get(label::TEMPLATE).map(String::as_str) == Some(template)
        });
    only_its_pods
        && super::egress::rules(spec.egress.as_deref().unwrap_or_default(), "spec.egress")
            .0
            .is_empty()
        && super::egress::ingress_rules(spec.ingress.as_deref().unwrap_or_default(), "spec.ingress")
            .0
            .is_empty()
}

/// The built-in decision on a NetworkPolicy request.
pub fn decide(req: &AdmissionRequest, cfg: &Config) -> Decision {
    if !matches!(
        req.operation,
        Operation::Create | Operation::Update | Operation::Delete
    ) {
        return Decision::allow();
    }
    if requester_in(req, &cfg.network_policy_writers) {
        return Decision::allow();
    }
    let who = subject("networkpolicy", req);
    if is_sandgates(req.object.as_ref()) || is_sandgates(req.old_object.as_ref()) {
        let user = req.username();
        let verb = match req.operation {
            Operation::Create => "create",
            Operation::Update => "change",
            _ => "delete",
        };
        return Decision::deny(
            who,
            vec![Violation::new(
                Rule::ManagedNetworkPolicy,
                "metadata.name",
                format!(
                    "is managed by sandgate; {user:?} may not {verb} it (it keeps sandbox pods from reaching the network)"
                ),
            )],
        );
    }
    // (After the check above: upstream's controller may not touch sandgate's own.)
    if let Some(d) = upstream_managed(req, cfg, &who) {
        return d;
    }
    // Deleting a policy only ever takes allowances away.
    if req.operation == Operation::Delete {
        return Decision::allow();
    }
    let np = match parse_object::<NetworkPolicy>(req.object.as_ref(), "object", "NetworkPolicy") {
        Ok(np) => np,
        Err(v) => return Decision::deny(who, vec![v]),
    };
    let Some(spec) = np.spec.as_ref() else {
        return Decision::allow_subject(who);
    };
    let Some(violation) = widening(spec) else {
        return Decision::allow_subject(who);
    };
    let selector = spec.pod_selector.clone().unwrap_or_default();
    if excludes_sandbox_pods(&selector) {
        return Decision::allow_subject(who);
    }
    if names_sandbox_labels(&selector) {
        return Decision::deny(who, vec![violation]);
    }
    let mut decision = Decision::allow_subject(who);
    decision.lookups.push(Lookup::SandboxNamespace {
        namespace: req.namespace.clone().unwrap_or_default(),
        violation,
    });
    decision
}

/// Upstream's controller writing the NetworkPolicy of a managed template (owned by
/// it): its egress and ingress are the template's, which `/validate` judged with the
/// egress and ingress analyses, so it gets those here instead of the widening guard. `None`: not
/// such a write, the usual guard applies.
fn upstream_managed(req: &AdmissionRequest, cfg: &Config, who: &str) -> Option<Decision> {
    if !cfg.upstream
        || !requester_in(req, &cfg.upstream_controllers)
        || !matches!(req.operation, Operation::Create | Operation::Update)
    {
        return None;
    }
    let np = parse_object::<NetworkPolicy>(req.object.as_ref(), "object", "NetworkPolicy").ok()?;
    upstream_template_owner(&np)?;
    let spec = np.spec.clone().unwrap_or_default();
    let (mut violations, mut warnings) =
        super::egress::rules(spec.egress.as_deref().unwrap_or_default(), "spec.egress");
    let (v, w) =
        super::egress::ingress_rules(spec.ingress.as_deref().unwrap_or_default(), "spec.ingress");
    violations.extend(v);
    warnings.extend(w);
    let mut d = if violations.is_empty() {
        Decision::allow_subject(who)
    } else {
        Decision::deny(who, violations)
    };
    d.warnings = warnings;
    Some(d)
}

/// The upstream SandboxTemplate a NetworkPolicy is managed for, by its owner reference.
pub fn upstream_template_owner(np: &NetworkPolicy) -> Option<&str> {
    np.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.kind == "SandboxTemplate"
                && crate::resources::api_group(&o.api_version)
                    == contract::upstream::EXTENSIONS_GROUP
        })
        .map(|o| o.name.as_str())
}

/// Whether a managed policy's egress and ingress are exactly its upstream template's
/// (`template`, as stored): then it adds nothing the template's admission did not judge.
/// Ports without a protocol are TCP on both sides (the apiserver defaults the policy's);
/// a template without ingress rules gives a policy without any.
pub fn mirrors_template(np: &NetworkPolicy, template: &Value) -> bool {
    fn normal<T: serde::Serialize>(rules: &[T]) -> Value {
        let mut v = serde_json::to_value(rules).unwrap_or_default();
        for port in v
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get_mut("ports")?.as_array_mut())
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            port.entry("protocol").or_insert_with(|| Value::from("TCP"));
        }
        v
    }
    let spec = np.spec.clone().unwrap_or_default();
    let theirs_egress = template
        .pointer("/spec/networkPolicy/egress")
        .cloned()
        .map(serde_json::from_value::<Vec<NetworkPolicyEgressRule>>);
    let theirs_ingress = template
        .pointer("/spec/networkPolicy/ingress")
        .cloned()
        .map_or(
            Ok(Vec::new()),
            serde_json::from_value::<Vec<NetworkPolicyIngressRule>>,
        );
    match (theirs_egress, theirs_ingress) {
        (Some(Ok(egress)), Ok(ingress)) => {
            normal(spec.egress.as_deref().unwrap_or_default()) == normal(&egress)
                && normal(spec.ingress.as_deref().unwrap_or_default()) == normal(&ingress)
        }
        _ => false,
    }
}

/// What this policy opens beyond sandgate's default-deny, as the violation that refuses
/// it: egress beyond DNS to kube-dns, or ingress from every source or from outside the
/// cluster (an outside relay allowed in gets a two-way channel, whatever egress says).
/// `None` when it opens neither. In-cluster callers named by selectors may come in.
pub fn widening(spec: &NetworkPolicySpec) -> Option<Violation> {
    egress_widening(spec).or_else(|| ingress_opening(spec))
}

/// Whether the policy has this policy type. The apiserver defaults an absent list to
/// Ingress, plus Egress when there are egress rules; a type not listed is ignored.
fn has_type(spec: &NetworkPolicySpec, kind: &str) -> bool {
    match spec.policy_types.as_ref().filter(|t| !t.is_empty()) {
        Some(types) => types.iter().any(|t| t == kind),
        None => kind == "Ingress" || spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
    }
}

fn egress_widening(spec: &NetworkPolicySpec) -> Option<Violation> {
    if !has_type(spec, "Egress") {
        return None;
    }
    let (i, _) = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, rule)| !is_dns_only(rule))?;
    Some(Violation::new(
        Rule::EgressWidening,
        format!("spec.egress[{i}]"),
        format!(
            "allows sandbox pods egress beyond DNS to kube-dns, and NetworkPolicies add up: this would reopen what sandgate's default-deny closes. Give a sandbox egress through its SandboxTemplate's spec.networkPolicy, or keep sandbox pods out of this policy (podSelector matchExpressions [{{key: {}, operator: DoesNotExist}}])",
            label::SANDBOX
        ),
    ))
}

fn ingress_opening(spec: &NetworkPolicySpec) -> Option<Violation> {
    if !has_type(spec, "Ingress") {
        return None;
    }
    spec.ingress.iter().flatten().enumerate().find_map(|(i, rule)| {
        let from = rule.from.as_deref().unwrap_or_default();
        let what = if from.is_empty() {
            "every source"
        } else if from.iter().any(|p| p.ip_block.is_some()) {
            "addresses outside the cluster (ipBlock)"
        } else {
            return None;
        };
        Some(Violation::new(
            Rule::IngressWidening,
            format!("spec.ingress[{i}]"),
            format!(
                "opens sandbox pods to ingress from {what}: whoever connects in gets a two-way channel, past the default-deny. Allow in-cluster callers by podSelector or namespaceSelector, or keep sandbox pods out of this policy (podSelector matchExpressions [{{key: {}, operator: DoesNotExist}}])",
                label::SANDBOX
            ),
        ))
    })
}

/// A rule that lets pods reach only what the default-deny already allows: kube-dns in
/// kube-system, on port 53.
fn is_dns_only(rule: &NetworkPolicyEgressRule) -> bool {
    let dns = netpol::dns_peer();
    let ports = rule.ports.as_deref().unwrap_or_default();
    let peers = rule.to.as_deref().unwrap_or_default();
    !ports.is_empty()
        && ports.iter().all(|p| {
            p.port == Some(IntOrString::Int(53))
                && p.end_port.is_none()
                && matches!(p.protocol.as_deref(), None | Some("UDP") | Some("TCP"))
        })
        && !peers.is_empty()
        && peers.iter().all(|p| same_peer(p, &dns))
}

fn same_peer(a: &NetworkPolicyPeer, b: &NetworkPolicyPeer) -> bool {
    a.ip_block.is_none()
        && b.ip_block.is_none()
        && same_selector(a.namespace_selector.as_ref(), b.namespace_selector.as_ref())
        && same_selector(a.pod_selector.as_ref(), b.pod_selector.as_ref())
}

/// Selector equality where an absent list or map is the same as an empty one (but an
/// absent selector is not an empty one: `{}` selects everything).
fn same_selector(a: Option<&LabelSelector>, b: Option<&LabelSelector>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.match_labels.clone().unwrap_or_default() == b.match_labels.clone().unwrap_or_default()
                && a.match_expressions.as_deref().unwrap_or_default()
                    == b.match_expressions.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether no sandbox pod can match: it requires the sandbox label to be absent.
fn excludes_sandbox_pods(selector: &LabelSelector) -> bool {
    selector
        .match_expressions
        .iter()
        .flatten()
        .any(|e| e.key == label::SANDBOX && e.operator == "DoesNotExist")
}

/// Whether the selector asks for sandbox pods by sandgate's labels (so it selects
/// sandbox pods wherever it is).
fn names_sandbox_labels(selector: &LabelSelector) -> bool {
    let ours = |k: &str| {
        k == label::SANDBOX || k == label::TEMPLATE || k == contract::upstream::SANDBOX_NAME_HASH
    };
    selector.match_labels.iter().flatten().any(|(k, _)| ours(k))
        || selector
            .match_expressions
            .iter()
            .flatten()
            .any(|e| ours(&e.key) && matches!(e.operator.as_str(), "In" | "Exists"))
}

/// The policies among `policies` (one namespace's) that select a pod with `labels` and
/// widen its egress; sandgate's own are not counted. A selector that cannot be read
/// counts as selecting (fail closed).
pub fn widening_policies<'a>(
    labels: &BTreeMap<String, String>,
    policies: &'a [NetworkPolicy],
) -> Vec<(&'a NetworkPolicy, Violation)> {
    policies
        .iter()
        .filter(|np| !is_sandgates_typed(np))
        .filter_map(|np| {
            let spec = np.spec.as_ref()?;
            let selector = spec.pod_selector.clone().unwrap_or_default();
            let selects =
                Selector::try_from(selector).map_or(true, |s| s.matches(labels));
            if !selects {
                return None;
            }
            let v = widening(spec)?;
            let name = np.metadata.name.as_deref().unwrap_or_default();
            let opens = if v.rule == Rule::IngressWidening {
                "opens it to ingress from every source or from outside the cluster"
            } else {
                "allows it egress beyond DNS to kube-dns"
            };
            let violation = Violation::new(
                v.rule,
                "metadata.labels",
                format!(
                    "NetworkPolicy {name:?} selects this sandbox pod and, at {}, {opens}; remove the policy, or keep sandbox pods out of it (podSelector matchExpressions [{{key: {}, operator: DoesNotExist}}])",
                    v.field,
                    label::SANDBOX
                ),
            );
            Some((np, violation))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> NetworkPolicySpec {
        serde_json::from_value(v).unwrap()
    }

    fn dns_rule() -> Value {
        serde_json::to_value(&netpol::default_deny("x").spec.unwrap().egress.unwrap()[0]).unwrap()
    }

    #[test]
    fn egress_beyond_kube_dns_widens_and_dns_alone_does_not() {
        // Open egress, an ipBlock, DNS to any resolver, DNS with an endPort range.
        for egress in [
            json!([{}]),
            json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]),
            json!([{"ports": [{"port": 53, "protocol": "UDP"}]}]),
            json!([{"to": [netpol::dns_peer()], "ports": [{"port": 53, "endPort": 65535}]}]),
            json!([dns_rule(), {"to": [{"podSelector": {}}]}]),
        ] {
            let s = spec(json!({"podSelector": {}, "egress": egress}));
            assert!(widening(&s).is_some(), "{egress}");
        }
        // Twins: the default-deny's own rule, no egress, egress ignored by policyTypes.
        for s in [
            json!({"podSelector": {}, "egress": [dns_rule()]}),
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            json!({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]}),
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "agent"}}}]}]}),
        ] {
            assert!(widening(&spec(s.clone())).is_none(), "{s}");
        }
    }

    #[test]
    fn ingress_from_everywhere_or_outside_opens_and_in_cluster_callers_do_not() {
        for ingress in [
            json!([{}]),
            json!([{"ports": [{"port": 8080}]}]),
            json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
            json!([{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "203.0.113.7/32"}}]}]),
        ] {
            let s = spec(json!({"podSelector": {}, "ingress": ingress}));
            let v = widening(&s).unwrap_or_else(|| panic!("{ingress}: not refused"));
            assert_eq!(v.rule, Rule::IngressWidening, "{ingress}");
        }
        for s in [
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}),
            // Ingress rules ignored: the policy is of type Egress only.
            json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}),
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ] {
            assert!(widening(&spec(s.clone())).is_none(), "{s}");
        }
    }

    #[test]
    fn selectors_that_keep_sandbox_pods_out_or_ask_for_them() {
        let sel = |v: Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let out =
            sel(json!({"matchExpressions": [{"key": label::SANDBOX, "operator": "DoesNotExist"}]}));
        assert!(excludes_sandbox_pods(&out) && !names_sandbox_labels(&out));
        // NotIn does not keep them out: a sandbox pod may carry any value.
        let not_in = sel(
            json!({"matchExpressions": [{"key": label::SANDBOX, "operator": "NotIn", "values": ["true"]}]}),
        );
        assert!(!excludes_sandbox_pods(&not_in));
        assert!(names_sandbox_labels(&sel(
            json!({"matchLabels": {label::TEMPLATE: "python"}})
        )));
        assert!(names_sandbox_labels(&sel(
            json!({"matchExpressions": [{"key": label::SANDBOX, "operator": "Exists"}]})
        )));
        assert!(!names_sandbox_labels(&sel(json!({}))));
    }

    #[test]
    fn a_pod_is_told_which_policies_widen_its_egress() {
        let np = |name: &str, selector: Value, labels: Value| -> NetworkPolicy {
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"podSelector": selector, "egress": [{}]}
            }))
            .unwrap()
        };
        let policies = [
            np("everything", json!({}), json!({})),
            np("web", json!({"matchLabels": {"app": "web"}}), json!({})),
            np(
                "not-sandboxes",
                json!({"matchExpressions": [{"key": label::SANDBOX, "operator": "DoesNotExist"}]}),
                json!({}),
            ),
            np("sandgate-template-python", json!({}), json!({})),
            np(
                "ours",
                json!({}),
                json!({label::MANAGED_BY: label::MANAGED_BY_SANDGATE}),
            ),
        ];
        let labels = |extra: &[(&str, &str)]| {
            let mut l = BTreeMap::from([(label::SANDBOX.to_string(), "true".to_string())]);
            l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            l
        };
        let names = |l| {
            widening_policies(&l, &policies)
                .into_iter()
                .map(|(_, v)| v.message.split('"').nth(1).unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        // sandgate's name without its label proves nothing, and neither does its label
        // on content sandgate would not write: both are counted.
        assert_eq!(
            names(labels(&[])),
            ["everything", "sandgate-template-python", "ours"]
        );
        assert_eq!(
            names(labels(&[("app", "web")])),
            ["everything", "web", "sandgate-template-python", "ours"]
        );
    }

    #[test]
    fn a_labelled_template_policy_is_trusted_only_with_content_sandgate_would_write() {
        let managed = json!({label::MANAGED_BY: label::MANAGED_BY_SANDGATE});
        let np = |name: &str, selector: Value, egress: Value, ingress: Value| -> NetworkPolicy {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": managed},
                "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"],
                         "egress": egress, "ingress": ingress}
            }))
            .unwrap()
        };
        let python = json!({"matchLabels": {label::TEMPLATE: "python"}});
        let https =
            json!([{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]);
        // As the reconciler writes it: trusted.
        assert!(is_sandgates_typed(&np(
            "sandgate-template-python",
            python.clone(),
            https.clone(),
            json!([])
        )));
        for (what, policy) in [
            (
                "selects every pod",
                np(
                    "sandgate-template-python",
                    json!({}),
                    https.clone(),
                    json!([]),
                ),
            ),
            (
                "selects another template's pods",
                np(
                    "sandgate-template-python",
                    json!({"matchLabels": {label::TEMPLATE: "other"}}),
                    https.clone(),
                    json!([]),
                ),
            ),
            (
                "selects more than its template's pods",
                np(
                    "sandgate-template-python",
                    json!({"matchLabels": {label::TEMPLATE: "python"}, "matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
                    https.clone(),
                    json!([]),
                ),
            ),
            (
                "opens egress to everything",
                np(
                    "sandgate-template-python",
                    python.clone(),
                    json!([{}]),
                    json!([]),
                ),
            ),
            (
                "reaches the metadata service",
                np(
                    "sandgate-template-python",
                    python.clone(),
                    json!([{"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]}]),
                    json!([]),
                ),
            ),
            (
                "lets the internet in",
                np(
                    "sandgate-template-python",
                    python.clone(),
                    https.clone(),
                    json!([{}]),
                ),
            ),
            (
                "is not named for a template",
                np("sandgate-python", python.clone(), https.clone(), json!([])),
            ),
        ] {
            assert!(
                !is_sandgates_typed(&policy),
                "{what}: an impostor is trusted"
            );
            // Judged like any other policy: a python sandbox pod it selects is told.
            let pod = BTreeMap::from([
                (label::SANDBOX.to_string(), "true".to_string()),
                (label::TEMPLATE.to_string(), "python".to_string()),
            ]);
            let selects_python = what != "selects another template's pods";
            assert_eq!(
                !widening_policies(&pod, std::slice::from_ref(&policy)).is_empty(),
                selects_python,
                "{what}"
            );
        }
    }

    fn write(user: &str, policy: Value) -> AdmissionRequest {
        use crate::admission::review::test_request;
        AdmissionRequest {
            user_info: json!({"username": user}),
            ..test_request(
                "networking.k8s.io",
                "networkpolicies",
                "NetworkPolicy",
                policy,
            )
        }
    }

    fn managed(name: &str, owner: bool, egress: Value) -> Value {
        let mut p = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"podSelector": {"matchLabels": {contract::upstream::SANDBOX_NAME_HASH: "h"}},
                     "policyTypes": ["Egress"], "egress": egress}
        });
        if owner {
            p["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
                "name": "python", "uid": "1", "controller": true
            }]);
        }
        p
    }

    #[test]
    fn upstreams_controller_writes_its_templates_policy_under_the_egress_analysis() {
        let cfg = Config::default();
        let controller = contract::upstream::CONTROLLER;
        let https =
            json!([{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]);
        // The controller's managed policy with the template's (judged) egress passes...
        assert!(decide(&write(controller, managed("p", true, https.clone())), &cfg).allowed);
        // ...but reaching the metadata server does not, even for the controller.
        let metadata = json!([{"to": [{"ipBlock": {"cidr": "169.254.0.0/16"}}]}]);
        let d = decide(&write(controller, managed("p", true, metadata)), &cfg);
        assert!(
            !d.allowed && d.violations[0].rule == Rule::EgressReach,
            "{d:?}"
        );
        // Anyone else, or the controller without the template owner: the widening guard
        // (a selector on upstream's label is a sandbox selector).
        for (user, owner) in [("alice", true), (controller, false)] {
            let d = decide(&write(user, managed("p", owner, https.clone())), &cfg);
            assert!(
                !d.allowed && d.violations[0].rule == Rule::EgressWidening,
                "{user} {owner}"
            );
        }
        // sandgate's own policies stay sandgate's.
        let d = decide(
            &write(
                controller,
                managed(contract::DEFAULT_DENY_POLICY, true, https.clone()),
            ),
            &cfg,
        );
        assert!(!d.allowed && d.violations[0].rule == Rule::ManagedNetworkPolicy);
        // Support off: no exemption.
        let off = Config {
            upstream: false,
            ..Config::default()
        };
        assert!(!decide(&write(controller, managed("p", true, https)), &off).allowed);
    }

    #[test]
    fn a_managed_policy_mirrors_its_template_only_when_the_egress_is_the_same() {
        let np: NetworkPolicy = serde_json::from_value(managed(
            "p",
            true,
            json!([{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443, "protocol": "TCP"}]}]),
        ))
        .unwrap();
        assert_eq!(upstream_template_owner(&np), Some("python"));
        let template = |egress: Value| json!({"spec": {"networkPolicy": {"egress": egress}}});
        // The protocol the apiserver defaulted on the policy is the template's unset one.
        assert!(mirrors_template(
            &np,
            &template(json!([
                {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}
            ]))
        ));
        assert!(!mirrors_template(
            &np,
            &template(json!([
                {"to": [{"ipBlock": {"cidr": "203.0.113.0/25"}}], "ports": [{"port": 443}]}
            ]))
        ));
        assert!(!mirrors_template(&np, &json!({"spec": {}})));
        // Ingress must match too: the policy's own ingress is not the template's.
        let https =
            json!([{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}]);
        let mut open = np.clone();
        if let Some(spec) = open.spec.as_mut() {
            spec.ingress = serde_json::from_value(json!([{}])).unwrap();
        }
        assert!(!mirrors_template(&open, &template(https.clone())));
        let with_ingress = json!({"spec": {"networkPolicy": {"egress": https, "ingress": [{}]}}});
        assert!(mirrors_template(&open, &with_ingress));
        assert!(!mirrors_template(&np, &with_ingress));
    }
}
