//! Admission decisions, pure: an [`AdmissionRequest`] and the [`Config`] in, a
//! [`Decision`] out. The HTTPS server, `sandgate check` and the tests all call
//! [`decide`]; nothing here does I/O.

pub mod containers;
pub mod mutate;
pub mod netpol_guard;
pub mod pod;
pub mod review;
pub mod template;
pub mod validate;

use std::fmt;

pub use review::{AdmissionRequest, Operation, ReviewError};

use crate::config::Config;

/// Which of the two webhooks is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Webhook {
    /// `/mutate`: fill in what a sandbox pod lacks, then judge the result.
    Mutate,
    /// `/validate`: judge the final object, after every mutating webhook has run.
    Validate,
}

impl Webhook {
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Mutate => "mutate",
            Webhook::Validate => "validate",
        }
    }
}

/// One broken rule, with the field that breaks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Stable rule identifier (`privileged`, `host-path`...), for reports and metrics.
    pub rule: &'static str,
    /// Path of the offending field, e.g. `spec.containers[0].securityContext.privileged`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Violation {
    pub fn new(rule: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            rule,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rule == POLICY_RULE {
            write!(f, "policy {}: {}", self.field, self.message)
        } else {
            write!(f, "{}: {} [{}]", self.field, self.message, self.rule)
        }
    }
}

/// The `rule` of a violation raised by a Rego policy; its `field` is the policy name.
pub const POLICY_RULE: &str = "policy";

/// A side effect the caller must perform before the answer is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The namespace's default-deny NetworkPolicy must exist before the pod is admitted.
    EnsureDefaultDeny { namespace: String },
}

/// The answer to one admission request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// What the object is, for the denial message ("pod default/foo").
    pub subject: String,
    /// Why the object is denied; empty when allowed.
    pub violations: Vec<Violation>,
    /// Admission warnings (kubectl prints them).
    pub warnings: Vec<String>,
    /// The mutation, when there is one.
    pub patch: Option<json_patch::Patch>,
    /// Side effects to perform when the request is admitted (never on dry-run).
    pub effects: Vec<Effect>,
}

impl Decision {
    /// Allowed, untouched.
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// Denied for the given reasons.
    pub fn deny(subject: impl Into<String>, violations: Vec<Violation>) -> Self {
        Self {
            allowed: false,
            subject: subject.into(),
            violations,
            ..Self::default()
        }
    }

    /// The message the user sees: every broken rule with its field.
    pub fn message(&self) -> String {
        if self.allowed {
            return String::new();
        }
        let reasons: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        let subject = if self.subject.is_empty() {
            "the request".to_string()
        } else {
            self.subject.clone()
        };
        format!("sandgate denied {subject}: {}", reasons.join("; "))
    }

    /// The short decision label used in metrics.
    pub fn label(&self) -> &'static str {
        match (
            self.allowed,
            self.patch.as_ref().is_some_and(|p| !p.0.is_empty()),
        ) {
            (false, _) => "denied",
            (true, true) => "mutated",
            (true, false) => "allowed",
        }
    }
}

/// Judges one request. Resources sandgate does not govern are allowed untouched: the
/// webhook configurations only send sandbox-scoped objects here, and the rest of the
/// cluster must never wait on sandgate.
pub fn decide(webhook: Webhook, req: &AdmissionRequest, cfg: &Config) -> Decision {
    if !in_scope(req, cfg) {
        return Decision::allow();
    }
    match (req.resource.group.as_str(), req.resource.resource.as_str()) {
        ("", "pods") => pod::review(webhook, req, cfg),
        (crate::crd::GROUP, "sandboxtemplates") => template::review(webhook, req, cfg),
        ("networking.k8s.io", "networkpolicies") => netpol_guard::review(req, cfg),
        _ => Decision::allow(),
    }
}

/// Whether sandgate judges this request at all (excluded namespaces are left alone).
pub fn in_scope(req: &AdmissionRequest, cfg: &Config) -> bool {
    !req.namespace
        .as_deref()
        .is_some_and(|ns| cfg.exclude_namespaces.contains(ns))
}

/// The lower-case kind whose policies judge this request (`pod`, `sandboxtemplate`...).
pub fn policy_kind(req: &AdmissionRequest) -> String {
    req.kind.kind.to_ascii_lowercase()
}

/// Whether the requester (user name or one of its groups) is in `allowed`.
pub fn requester_in(req: &AdmissionRequest, allowed: &std::collections::BTreeSet<String>) -> bool {
    let user = req
        .user_info
        .get("username")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    allowed.contains(user)
        || req
            .user_info
            .get("groups")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .any(|g| allowed.contains(g))
}

/// Whether the Rego policies run for this request: on the final object, that is at
/// `/validate`, for CREATE and UPDATE of the main resource or a pod subresource, once
/// the built-in rules have allowed it.
pub fn policies_apply(
    webhook: Webhook,
    req: &AdmissionRequest,
    cfg: &Config,
    d: &Decision,
) -> bool {
    webhook == Webhook::Validate
        && d.allowed
        && matches!(req.operation, Operation::Create | Operation::Update)
        && in_scope(req, cfg)
}

/// Folds what the policies said into the decision: any denial or policy error denies
/// (fail closed), every warning becomes an admission warning.
pub fn merge_policies(d: &mut Decision, outcome: crate::policy::Outcome, who: &str) {
    for w in outcome.warnings {
        d.warnings.push(format!("policy {}: {}", w.policy, w.msg));
    }
    let denials: Vec<Violation> = outcome
        .denials
        .into_iter()
        .chain(outcome.errors)
        .map(|m| Violation::new(POLICY_RULE, m.policy, m.msg))
        .collect();
    if !denials.is_empty() {
        d.allowed = false;
        d.patch = None;
        d.effects.clear();
        if d.subject.is_empty() {
            d.subject = who.to_string();
        }
        d.violations.extend(denials);
    }
}

/// Built-in rules, then (at `/validate`) the policies of the request's kind: the whole
/// decision, synchronously. The server runs the policy half off the async runtime.
pub fn judge(
    webhook: Webhook,
    req: &AdmissionRequest,
    cfg: &Config,
    policies: &crate::policy::PolicySet,
) -> Decision {
    let mut d = decide(webhook, req, cfg);
    let kind = policy_kind(req);
    if policies_apply(webhook, req, cfg, &d) && policies.judges(&kind) {
        match serde_json::to_value(req) {
            Ok(review) => merge_policies(
                &mut d,
                policies.evaluate(&kind, &review),
                &subject(&kind, req),
            ),
            Err(e) => {
                return Decision::deny(
                    subject(&kind, req),
                    vec![Violation::new(
                        "internal",
                        "request",
                        format!("cannot build the policy input: {e}"),
                    )],
                );
            }
        }
    }
    d
}

/// "pod default/name" for messages; the name may be absent on CREATE (generateName).
pub fn subject(kind: &str, req: &AdmissionRequest) -> String {
    let name = req
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            req.object
                .as_ref()
                .and_then(|o| o.pointer("/metadata/generateName"))
                .and_then(|v| v.as_str())
        })
        .unwrap_or("");
    match req.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}
