//! The pod flow: which mutation and which rules apply to CREATE, UPDATE and the
//! `ephemeralcontainers` and `resize` subresources.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::validate::{self, Change};
use super::{
    AdmissionRequest, Decision, Effect, Lookup, Operation, Rule, Violation, Webhook, mutate,
    subject, upstream, volume_claims,
};
use crate::config::Config;
use crate::contract::{annotation, label};

/// The built-in decision on a pod request.
/// The most distinct Secrets, and the most distinct claims, one sandbox pod may name:
/// each is read from the apiserver before the pod is admitted.
pub const MAX_REFERENCED: usize = 256;
/// Secret references named one by one in warnings; the rest are counted.
const MAX_SECRET_WARNINGS: usize = 20;

fn distinct_names(refs: &[super::ObjectRef]) -> usize {
    refs.iter()
        .map(|r| r.name.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

pub fn decide(webhook: Webhook, req: &AdmissionRequest, cfg: &Config) -> Decision {
    let sub = req.sub_resource();
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || !matches!(sub, "" | "ephemeralcontainers" | "resize")
    {
        return Decision::allow();
    }
    let who = subject("pod", req);
    // Anything that cannot be read is denied: these pods reached the webhook because
    // they are in sandbox scope, and an unjudged sandbox pod must never be admitted.
    let before = match parse_object::<Pod>(req.object.as_ref(), "object", "Pod") {
        Ok(p) => p,
        Err(v) => return Decision::deny(who, vec![v]),
    };
    let old = match req.operation {
        Operation::Update => match parse_object::<Pod>(req.old_object.as_ref(), "oldObject", "Pod")
        {
            Ok(p) => Some(p),
            Err(v) => return Decision::deny(who, vec![v]),
        },
        _ => None,
    };

    let mut after = before.clone();
    if webhook == Webhook::Mutate && !is_mirror(&before) {
        match (req.operation, sub) {
            (Operation::Create, "") => mutate::pod(&mut after, cfg),
            (Operation::Update, "ephemeralcontainers") => {
                mutate::new_ephemeral_containers(&mut after, old.as_ref())
            }
            _ => {}
        }
    }

    let change = match old.as_ref() {
        Some(old) => Change::Update {
            old,
            sub_resource: sub,
        },
        None => Change::Create,
    };
    let mut violations = validate::pod(&after, cfg, change);
    if sub.is_empty()
        && let Some(object) = req.object.as_ref()
    {
        violations.extend(upstream::metadata::guard(
            req,
            cfg,
            object,
            req.old_object.as_ref(),
            upstream::metadata::Owned::PodLabels,
        ));
    }
    if req.operation == Operation::Create {
        template_label_rule(&after, req, cfg, &mut violations);
        // Volumes are immutable: they are judged when the pod is made.
        validate::volume_types(
            req.object.as_ref().and_then(|o| o.pointer("/spec/volumes")),
            "spec",
            &mut violations,
        );
    }
    if !violations.is_empty() {
        return Decision::deny(who, violations);
    }

    let mut decision = Decision::allow_subject(who);
    // At /validate, on the final object: every Secret reaching the sandbox is named in a
    // warning, and none may be a service-account token (only the cluster knows which
    // are: the server checks before answering).
    if webhook == Webhook::Validate
        && (req.operation == Operation::Create || sub == "ephemeralcontainers")
        && let Some(spec) = after.spec.as_ref()
    {
        let refs = validate::secret_refs(spec, "spec");
        let claims = volume_claims::claim_refs(spec, "spec");
        // Every Secret and claim named is read from the apiserver before the answer:
        // their number is bounded, or one pod could make its admission read without end.
        for (named, what, rule) in [
            (&refs, "Secrets", Rule::ServiceAccountToken),
            (&claims, "PersistentVolumeClaims", Rule::VolumeTypes),
        ] {
            let distinct = distinct_names(named);
            if distinct > MAX_REFERENCED {
                return decision.fail(Violation::new(
                        rule,
                        "spec",
                        format!(
                            "names {distinct} {what}; at most {MAX_REFERENCED} are read to judge one sandbox pod"
                        ),
                ));
            }
        }
        for r in refs.iter().take(MAX_SECRET_WARNINGS) {
            decision.warnings.push(format!(
                "{}: Secret {:?} reaches the sandbox; sandboxed code can read (and send) everything in it",
                r.field, r.name
            ));
        }
        if refs.len() > MAX_SECRET_WARNINGS {
            decision.warnings.push(format!(
                "and {} more Secret references reach the sandbox",
                refs.len() - MAX_SECRET_WARNINGS
            ));
        }
        if !refs.is_empty() {
            decision.lookups.push(Lookup::NoTokenSecrets {
                namespace: req.namespace.clone().unwrap_or_default(),
                refs,
            });
        }
        // Volumes are fixed at creation: a claim's binding is judged then (and by the
        // audit while the pod runs).
        if req.operation == Operation::Create && !claims.is_empty() {
            decision.lookups.push(Lookup::VolumeClaims {
                namespace: req.namespace.clone().unwrap_or_default(),
                claims,
            });
        }
    }
    // At /validate: no other NetworkPolicy of the namespace may select the pod, with the
    // labels it will have, and widen its egress (checked when it is made and whenever
    // its labels change).
    let labels_change = old
        .as_ref()
        .is_some_and(|o| o.metadata.labels != after.metadata.labels);
    if webhook == Webhook::Validate
        && sub.is_empty()
        && (req.operation == Operation::Create || labels_change)
        && let Some(ns) = req.namespace.as_deref().filter(|ns| !ns.is_empty())
    {
        decision.lookups.push(Lookup::NoWideningPolicies {
            namespace: ns.to_string(),
            labels: after.metadata.labels.clone().unwrap_or_default(),
            upstream: cfg.upstream,
        });
    }
    if after != before {
        match diff(req.object.as_ref(), &before, &after) {
            Ok(patch) => decision.patch = Some(patch),
            Err(v) => return Decision::deny(decision.subject, vec![v]),
        }
    }
    if webhook == Webhook::Mutate
        && req.operation == Operation::Create
        && sub.is_empty()
        && let Some(ns) = req.namespace.as_deref().filter(|ns| !ns.is_empty())
    {
        decision.effects.push(Effect::EnsureDefaultDeny {
            namespace: ns.to_string(),
        });
    }
    decision
}

/// Only the configured creators (sandgate's reconciler) may create a pod that claims to
/// belong to a template: the label selects the template's NetworkPolicy, so anyone else
/// setting it could borrow a wider egress than their own pods get.
fn template_label_rule(pod: &Pod, req: &AdmissionRequest, cfg: &Config, out: &mut Vec<Violation>) {
    let Some(template) = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label::TEMPLATE))
    else {
        return;
    };
    if !super::requester_in(req, &cfg.template_label_creators) {
        let user = req.username();
        out.push(Violation::new(
            Rule::TemplateLabel,
            format!("metadata.labels[{}]", label::TEMPLATE),
            format!(
                "claims template {template:?}, but {user:?} may not create template pods; claim a sandbox with a SandboxClaim instead"
            ),
        ));
    }
}

/// Reads the request's object as `T`; deserialising from the borrowed Value avoids
/// copying it. A failure is a violation: what cannot be read cannot be admitted.
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(
    object: Option<&Value>,
    field: &str,
    kind: &str,
) -> Result<T, Violation> {
    let object = object.ok_or_else(|| {
        Violation::new(
            Rule::MalformedObject,
            field,
            format!("is missing; the {kind} cannot be judged"),
        )
    })?;
    T::deserialize(object).map_err(|e| {
        Violation::new(
            Rule::MalformedObject,
            field,
            format!("is not a valid {kind} ({e}); it cannot be judged"),
        )
    })
}

fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotation::MIRROR_POD))
}

/// The JSON Patch from `before` to `after`, to apply to `raw` (the object as sent).
/// Both sides go through the same typed round-trip, so fields the types do not know
/// never show up as removals. The types write some fields even when `raw` lacks them
/// (`metadata` always): an operation inside such a field would not apply to `raw`, so
/// the field is added whole instead (it has no unknown fields to keep).
pub(crate) fn diff<T: serde::Serialize>(
    raw: Option<&Value>,
    before: &T,
    after: &T,
) -> Result<json_patch::Patch, Violation> {
    let to_value = |v: &T| {
        serde_json::to_value(v).map_err(|e| {
            Violation::internal(
                "object",
                format!("cannot serialise the mutated object: {e}"),
            )
        })
    };
    let (before, after) = (to_value(before)?, to_value(after)?);
    let patch = json_patch::diff(&before, &after);
    let (Some(raw), Some(fields)) = (raw.and_then(Value::as_object), after.as_object()) else {
        return Ok(patch);
    };
    let absent: Vec<&String> = fields.keys().filter(|k| !raw.contains_key(*k)).collect();
    if absent.is_empty() {
        return Ok(patch);
    }
    let top = |path: &str| {
        let first = path.split('/').nth(1).unwrap_or_default();
        first.replace("~1", "/").replace("~0", "~")
    };
    let (inside, mut ops): (Vec<_>, Vec<_>) = patch
        .0
        .into_iter()
        .partition(|op| absent.contains(&&top(op.path().as_ref())));
    let touched: std::collections::BTreeSet<String> =
        inside.iter().map(|op| top(op.path().as_ref())).collect();
    for key in touched {
        let value = fields.get(&key).cloned().unwrap_or(Value::Null);
        let op = serde_json::json!({"op": "add", "path": format!("/{}", key.replace('~', "~0").replace('/', "~1")), "value": value});
        match serde_json::from_value(op) {
            Ok(op) => ops.push(op),
            Err(e) => {
                return Err(Violation::internal(
                    "object",
                    format!("cannot build the patch: {e}"),
                ));
            }
        }
    }
    Ok(json_patch::Patch(ops))
}
