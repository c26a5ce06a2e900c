//! A SandboxClaim's `env` goes into the pod of the Sandbox it gets, as far as its
//! template's `envVarsInjectionPolicy` allows: `Disallowed` (the default) none, `Allowed`
//! new variables only, `Overrides` new and existing ones. Upstream's controller checks
//! this only when it builds the Sandbox, so a claim it cannot honour is accepted and
//! then never becomes ready; sandgate refuses it at apply, naming the variable. Values
//! that look like credentials are warned: they sit in the claim in plain text, and the
//! sandboxed code can read (and send) them.

use serde_json::Value;

use super::super::{AdmissionRequest, Decision, Lookup, Operation, Rule, Violation, subject};
use crate::config::Config;
use crate::contract::upstream;

/// Where a claim's template comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// `spec.sandboxTemplateRef.name` (v1alpha1).
    Template(String),
    /// `spec.warmPoolRef.name`: the pool's `spec.sandboxTemplateRef.name` (v1beta1).
    WarmPool(String),
}

impl TemplateSource {
    /// "warm pool \"p\"" / "template \"t\"", for messages.
    pub fn describe(&self) -> String {
        match self {
            TemplateSource::Template(t) => format!("SandboxTemplate {t:?}"),
            TemplateSource::WarmPool(p) => format!("SandboxWarmPool {p:?}"),
        }
    }
}

/// One `spec.env` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    /// The container it goes to; the template's first when unset.
    pub container: Option<String>,
    /// Its place in the claim (`spec.env[0]`).
    pub field: String,
}

/// Name fragments of variables that usually hold credentials.
const CREDENTIAL_HINTS: [&str; 9] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "CREDENTIAL",
];

/// The decision on a write of an upstream SandboxClaim.
pub fn decide(req: &AdmissionRequest, _cfg: &Config) -> Decision {
    if !matches!(req.operation, Operation::Create | Operation::Update) || req.sub_resource() != "" {
        return Decision::allow();
    }
    let who = subject("sandboxclaim", req);
    let Some(object) = req.object.as_ref() else {
        return Decision::deny(
            who,
            vec![Violation::new(
                Rule::MalformedObject,
                "object",
                "is missing; the SandboxClaim cannot be judged",
            )],
        );
    };
    let raw = object.pointer("/spec/env");
    // An unchanged env was judged when it was written.
    if req.operation == Operation::Update
        && req.old_object.as_ref().and_then(|o| o.pointer("/spec/env")) == raw
    {
        return Decision::allow_subject(who);
    }
    let env = match parse_env(raw) {
        Ok(env) => env,
        Err(v) => return Decision::deny(who, vec![v]),
    };
    if env.is_empty() {
        return Decision::allow_subject(who);
    }
    let Some(source) = source(object) else {
        return Decision::deny(
            who,
            vec![Violation::new(
                Rule::MalformedObject,
                "spec",
                "names neither warmPoolRef nor sandboxTemplateRef; its env cannot be judged",
            )],
        );
    };
    let mut d = Decision::allow_subject(who);
    for e in &env {
        let upper = e.name.to_ascii_uppercase();
        if CREDENTIAL_HINTS.iter().any(|h| upper.contains(h)) {
            d.warnings.push(format!(
                "{}: {:?} looks like a credential; a claim's env is stored in plain text in the claim, and the sandboxed code can read (and send) it",
                e.field, e.name
            ));
        }
    }
    d.lookups.push(Lookup::ClaimEnv {
        namespace: req.namespace.clone().unwrap_or_default(),
        source,
        env,
    });
    d
}

fn source(claim: &Value) -> Option<TemplateSource> {
    let name = |p: &str| {
        claim
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    name("/spec/warmPoolRef/name")
        .map(TemplateSource::WarmPool)
        .or_else(|| name("/spec/sandboxTemplateRef/name").map(TemplateSource::Template))
}

fn parse_env(raw: Option<&Value>) -> Result<Vec<EnvVar>, Violation> {
    let list = match raw {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(Violation::new(
                Rule::MalformedObject,
                "spec.env",
                format!("is {other}; it must be a list of {{name, value}}"),
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let field = format!("spec.env[{i}]");
            let name = e
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            let container = e.get("containerName");
            match (name, container) {
                (Some(name), None | Some(Value::Null)) => Ok(EnvVar {
                    name: name.to_string(),
                    container: None,
                    field,
                }),
                (Some(name), Some(Value::String(c))) => Ok(EnvVar {
                    name: name.to_string(),
                    container: Some(c.clone()),
                    field,
                }),
                _ => Err(Violation::new(
                    Rule::MalformedObject,
                    field,
                    "must have a name (and a string containerName, if any)",
                )),
            }
        })
        .collect()
}

/// The template a source names, from the pool (`None`: the pool names none).
pub fn template_of_pool(pool: &Value) -> Option<String> {
    pool.pointer("/spec/sandboxTemplateRef/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// What the template's injection policy says of `env`.
pub fn judge(template: &Value, template_name: &str, env: &[EnvVar]) -> Vec<Violation> {
    let policy = template
        .pointer("/spec/envVarsInjectionPolicy")
        .and_then(Value::as_str)
        .unwrap_or(upstream::ENV_DISALLOWED);
    let containers: &[Value] = template
        .pointer("/spec/podTemplate/spec/containers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    fn container_name(c: &Value) -> &str {
        c.get("name").and_then(Value::as_str).unwrap_or("")
    }
    let mut out = Vec::new();
    for e in env {
        let target = match e.container.as_deref() {
            None => containers.first(),
            Some(name) => containers.iter().find(|c| container_name(c) == name),
        };
        let Some(target) = target else {
            out.push(Violation::new(
                Rule::ClaimEnv,
                e.field.clone(),
                format!(
                    "goes to container {:?}, which SandboxTemplate {template_name:?} does not have",
                    e.container.as_deref().unwrap_or("(the first)")
                ),
            ));
            continue;
        };
        let defined = target
            .get("env")
            .and_then(Value::as_array)
            .is_some_and(|l| {
                l.iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(e.name.as_str()))
            });
        let env_from = target
            .get("envFrom")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
        let refused = match policy {
            upstream::ENV_OVERRIDES => None,
            upstream::ENV_ALLOWED if defined => Some(format!(
                "overrides {:?}, which SandboxTemplate {template_name:?} sets; its envVarsInjectionPolicy is Allowed (new variables only; Overrides would allow it)",
                e.name
            )),
            upstream::ENV_ALLOWED if env_from => Some(format!(
                "may override a variable of container {:?}'s envFrom, which SandboxTemplate {template_name:?} cannot rule out under envVarsInjectionPolicy Allowed",
                container_name(target)
            )),
            upstream::ENV_ALLOWED => None,
            other => Some(format!(
                "injects {:?}, but SandboxTemplate {template_name:?} has envVarsInjectionPolicy {other}: a claim may not set env",
                e.name
            )),
        };
        if let Some(message) = refused {
            out.push(Violation::new(Rule::ClaimEnv, e.field.clone(), message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::test_request;
    use serde_json::json;

    fn req(spec: Value) -> AdmissionRequest {
        let claim = json!({"metadata": {"name": "c"}, "spec": spec});
        test_request(
            "extensions.agents.x-k8s.io",
            "sandboxclaims",
            "SandboxClaim",
            claim,
        )
    }

    fn template(policy: Option<&str>) -> Value {
        let mut t = json!({"spec": {"podTemplate": {"spec": {"containers": [
            {"name": "main", "env": [{"name": "EXISTING", "value": "t"}]},
            {"name": "side", "envFrom": [{"configMapRef": {"name": "cm"}}]}
        ]}}}});
        if let Some(p) = policy {
            t["spec"]["envVarsInjectionPolicy"] = json!(p);
        }
        t
    }

    fn env(name: &str, container: Option<&str>) -> EnvVar {
        EnvVar {
            name: name.into(),
            container: container.map(str::to_string),
            field: "spec.env[0]".into(),
        }
    }

    #[test]
    fn env_is_honoured_only_as_the_injection_policy_allows() {
        let new = [env("NEW", None)];
        let existing = [env("EXISTING", None)];
        let into_env_from = [env("NEW", Some("side"))];
        let nowhere = [env("NEW", Some("ghost"))];
        let cases: [(Option<&str>, &[EnvVar], bool); 10] = [
            (None, &new, false),
            (Some("Disallowed"), &new, false),
            (Some("Allowed"), &new, true),
            (Some("Allowed"), &existing, false),
            (Some("Allowed"), &into_env_from, false),
            (Some("Overrides"), &existing, true),
            (Some("Overrides"), &into_env_from, true),
            (Some("Overrides"), &nowhere, false),
            (Some("Allowed"), &nowhere, false),
            (Some("Whatever"), &new, false),
        ];
        for (policy, env, ok) in cases {
            let v = judge(&template(policy), "t", env);
            assert_eq!(v.is_empty(), ok, "{policy:?} {env:?}: {v:?}");
            assert!(v.iter().all(|v| v.rule == Rule::ClaimEnv));
        }
    }

    #[test]
    fn claims_with_env_are_looked_up_and_credentials_warned() {
        let cfg = Config::default();
        let d = decide(
            &req(json!({"warmPoolRef": {"name": "p"},
                        "env": [{"name": "GITHUB_TOKEN", "value": "x"}, {"name": "MODE", "value": "y"}]})),
            &cfg,
        );
        assert!(d.allowed);
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("GITHUB_TOKEN"));
        match d.lookups.as_slice() {
            [Lookup::ClaimEnv { source, env, .. }] => {
                assert_eq!(source, &TemplateSource::WarmPool("p".into()));
                assert_eq!(env.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        // No env: nothing to look up.
        let d = decide(&req(json!({"warmPoolRef": {"name": "p"}})), &cfg);
        assert!(d.allowed && d.lookups.is_empty());
        // Unjudgeable env is refused.
        for spec in [
            json!({"warmPoolRef": {"name": "p"}, "env": "A=1"}),
            json!({"warmPoolRef": {"name": "p"}, "env": [{"value": "1"}]}),
            json!({"env": [{"name": "A", "value": "1"}]}),
        ] {
            assert!(!decide(&req(spec.clone()), &cfg).allowed, "{spec}");
        }
    }
}
