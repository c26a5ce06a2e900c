//! Admission decisions, pure: an [`AdmissionRequest`], the [`Config`] and the policies
//! in, a [`Decision`] out; nothing here does I/O. [`pipeline`] is the one place that
//! sequences the built-in rules, the Rego policies and the side effects; the HTTPS
//! server, `sandgate check` and the reconciler all go through it.

pub mod containers;
pub mod egress;
pub mod mutate;
pub mod netpol_guard;
pub mod pipeline;
pub mod pod;
pub mod pool_budget;
pub mod review;
pub mod rule;
pub mod runtime_class;
pub mod secret;
pub mod template;
pub mod upstream;
pub mod validate;
pub mod volume_claims;
pub mod workload;

use std::fmt;

pub use pipeline::{admit, admit_as_apiserver, builtin};
pub use review::{AdmissionRequest, Operation, ReviewError};
pub use rule::Rule;

use crate::config::Config;
use crate::policy::PolicyRun;

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
    /// The rule broken, for reports and metrics.
    pub rule: Rule,
    /// Path of the offending field, e.g. `spec.containers[0].securityContext.privileged`;
    /// for [`Rule::Policy`], the policy's name.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Violation {
    pub fn new(rule: Rule, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            rule,
            field: field.into(),
            message: message.into(),
        }
    }

    /// sandgate could not finish judging `field` (fail closed: this denies).
    pub fn internal(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Rule::Internal, field, message)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rule == Rule::Policy {
            write!(f, "policy {}: {}", self.field, self.message)
        } else {
            write!(f, "{}: {} [{}]", self.field, self.message, self.rule)
        }
    }
}

/// A side effect the caller must perform before the answer is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The namespace's default-deny NetworkPolicy must exist before the pod is admitted.
    EnsureDefaultDeny { namespace: String },
}

impl Effect {
    /// The violation that denies the request when this effect could not be performed.
    pub fn failed(&self, reason: &dyn fmt::Display) -> Violation {
        match self {
            Effect::EnsureDefaultDeny { .. } => Violation::new(
                Rule::NetworkPolicy,
                "metadata.namespace",
                format!(
                    "the namespace's default-deny NetworkPolicy could not be ensured ({reason}); retry later"
                ),
            ),
        }
    }
}

/// A fact the decision depends on that only the cluster knows. The caller checks it
/// before answering, dry runs included (it writes nothing); a failed check denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// None of these Secrets may be a service-account token: a pod mounting or reading
    /// one would hold a credential for the apiserver.
    NoTokenSecrets {
        namespace: String,
        refs: Vec<ObjectRef>,
    },
    /// A write harmless only where no sandbox runs (a NetworkPolicy that would widen
    /// egress for the pods it selects, a service-account token Secret), admitted only
    /// if the namespace hosts no sandbox pods (it is not enforced and none is
    /// labelled); otherwise `violation` denies it.
    SandboxNamespace {
        namespace: String,
        violation: Violation,
    },
    /// No NetworkPolicy of the namespace but sandgate's may select a sandbox pod with
    /// these labels and widen its egress ([`netpol_guard::widening_policies`]).
    /// (With `upstream` support, a policy upstream's controller manages for a template
    /// passes when its egress is exactly the template's: [`netpol_guard::mirrors_template`].)
    NoWideningPolicies {
        namespace: String,
        labels: std::collections::BTreeMap<String, String>,
        upstream: bool,
    },
    /// The namespace's warm pools of both kinds, `pool` counted at `size`, may keep at
    /// most `cap` sandboxes ([`pool_budget::namespace_violation`]); upstream's pools are
    /// read only with `upstream` support (otherwise their kind may not exist).
    NamespaceWarmPools {
        namespace: String,
        pool: pool_budget::Pool,
        size: u64,
        cap: u32,
        upstream: bool,
    },
    /// The PersistentVolumeClaims a sandbox pod mounts must exist and be bound, or
    /// provisioned, to volumes that are neither the node's disk nor a network share
    /// ([`volume_claims::judge`]).
    VolumeClaims {
        namespace: String,
        claims: Vec<ObjectRef>,
    },
    /// An upstream claim's `env`, judged against its template's injection policy
    /// ([`upstream::claim::judge`]).
    ClaimEnv {
        namespace: String,
        source: upstream::claim::TemplateSource,
        env: Vec<upstream::claim::EnvVar>,
    },
}

/// An object a pod references by name (a Secret, a PersistentVolumeClaim), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub field: String,
}

impl Lookup {
    /// The violations for the references found to be tokens.
    pub fn tokens_found(
        refs: &[ObjectRef],
        tokens: &std::collections::BTreeSet<String>,
    ) -> Vec<Violation> {
        refs.iter()
            .filter(|r| tokens.contains(&r.name))
            .map(|r| {
                Violation::new(
                    Rule::ServiceAccountToken,
                    r.field.clone(),
                    format!(
                        "Secret {:?} is a service-account token; sandbox pods must not hold one",
                        r.name
                    ),
                )
            })
            .collect()
    }

    /// What the webhook asks the cluster, in words (`check` cannot ask offline).
    pub fn question(&self) -> String {
        match self {
            Lookup::NoTokenSecrets { refs, .. } => {
                let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
                format!(
                    "whether Secret(s) {} are service-account tokens",
                    names.join(", ")
                )
            }
            Lookup::SandboxNamespace { namespace, .. } => {
                format!("whether namespace {namespace:?} hosts sandbox pods")
            }
            Lookup::VolumeClaims { claims, .. } => {
                let names: Vec<&str> = claims.iter().map(|r| r.name.as_str()).collect();
                format!(
                    "which PersistentVolumes claim(s) {} are bound to",
                    names.join(", ")
                )
            }
            Lookup::NoWideningPolicies { namespace, .. } => format!(
                "whether another NetworkPolicy of namespace {namespace:?} widens its egress"
            ),
            Lookup::NamespaceWarmPools { namespace, .. } => {
                format!("how many warm sandboxes the other pools of namespace {namespace:?} keep")
            }
            Lookup::ClaimEnv { source, .. } => format!(
                "whether the envVarsInjectionPolicy of the template of {} allows the claim's env",
                source.describe()
            ),
        }
    }

    /// The violation when the check itself could not be made (fail closed).
    pub fn failed(&self, reason: &dyn fmt::Display) -> Violation {
        match self {
            Lookup::NoTokenSecrets { .. } => Violation::new(
                Rule::ServiceAccountToken,
                "spec",
                format!(
                    "the Secrets the pod references could not be checked for service-account tokens ({reason}); retry later"
                ),
            ),
            Lookup::SandboxNamespace { violation, .. } => Violation::new(
                violation.rule,
                violation.field.clone(),
                format!(
                    "{}; whether the namespace hosts sandbox pods could not be checked ({reason}), so it is refused: retry later",
                    violation.message
                ),
            ),
            Lookup::NoWideningPolicies { .. } => Violation::new(
                Rule::EgressWidening,
                "metadata.namespace",
                format!(
                    "the namespace's NetworkPolicies could not be checked for egress or ingress they would open to this sandbox pod ({reason}); retry later"
                ),
            ),
            Lookup::NamespaceWarmPools { pool, .. } => Violation::new(
                Rule::WarmPoolReplicas,
                pool.field(),
                format!(
                    "the namespace's other warm pools could not be counted ({reason}); retry later"
                ),
            ),
            Lookup::VolumeClaims { .. } => Violation::new(
                Rule::VolumeTypes,
                "spec.volumes",
                format!(
                    "the PersistentVolumeClaims the pod mounts could not be checked for host or network storage ({reason}); retry later"
                ),
            ),
            Lookup::ClaimEnv { .. } => Violation::new(
                Rule::ClaimEnv,
                "spec.env",
                format!(
                    "the claim's template could not be read to judge its env ({reason}); retry later"
                ),
            ),
        }
    }
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
    /// Side effects the caller performs before answering; the pipeline leaves them only
    /// on admitted requests that are not dry runs.
    pub effects: Vec<Effect>,
    /// Cluster facts the caller checks before answering (on admitted requests only).
    pub lookups: Vec<Lookup>,
    /// How each Rego policy ran, for metrics.
    pub policy_runs: Vec<PolicyRun>,
}

impl Decision {
    /// Allowed, untouched.
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// Allowed, naming what was judged.
    pub fn allow_subject(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::allow()
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

    /// This decision turned into a denial for `violation` (a failed effect, a crash):
    /// no patch, no effects, the same subject.
    pub fn fail(self, violation: Violation) -> Self {
        Self::deny(self.subject, vec![violation])
    }

    /// The message the user sees: every broken rule with its field.
    pub fn message(&self) -> String {
        if self.allowed {
            return String::new();
        }
        let reasons: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        let subject = if self.subject.is_empty() {
            "the request"
        } else {
            self.subject.as_str()
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

/// Whether sandgate judges this request at all (excluded namespaces are left alone).
pub fn in_scope(req: &AdmissionRequest, cfg: &Config) -> bool {
    !req.namespace
        .as_deref()
        .is_some_and(|ns| cfg.exclude_namespaces.contains(ns))
}

/// Whether the requester (user name or one of its groups) is in `allowed`.
pub fn requester_in(req: &AdmissionRequest, allowed: &std::collections::BTreeSet<String>) -> bool {
    allowed.contains(req.username()) || req.groups().any(|g| allowed.contains(g))
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
