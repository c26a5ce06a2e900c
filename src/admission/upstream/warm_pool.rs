//! A SandboxWarmPool's `replicas` has no upper bound upstream: anyone who may write warm
//! pools in a namespace can have the controller create thousands of pods
//! (kubernetes-sigs/agent-sandbox#251). sandgate caps each pool
//! (`maxWarmPoolReplicas`) and each namespace's sum with sandgate's own pools
//! (`maxWarmSandboxesPerNamespace`, [`super::super::pool_budget`]),
//! on the pool itself and through its `/scale` subresource (what `kubectl scale` and an
//! HPA write). Lowering a pool is always allowed, even above a cap lowered since.

use serde_json::Value;

use super::super::pool_budget::Pool;
use super::super::{AdmissionRequest, Decision, Lookup, Operation, Rule, Violation, subject};
use crate::config::Config;
use crate::resources::Kind;

/// The decision on a write of a SandboxWarmPool or its `/scale`.
pub fn decide(req: &AdmissionRequest, cfg: &Config) -> Decision {
    let sub = req.sub_resource();
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || !matches!(sub, "" | "scale")
    {
        return Decision::allow();
    }
    let who = subject("sandboxwarmpool", req);
    // Both the pool and a Scale keep the count at spec.replicas.
    let count = match replicas(req.object.as_ref(), "object") {
        Ok(Some(n)) => n,
        Ok(None) if sub.is_empty() => 0,
        Ok(None) => {
            return Decision::deny(
                who,
                vec![Violation::new(
                    Rule::MalformedObject,
                    "spec.replicas",
                    "is missing from the Scale; it cannot be judged",
                )],
            );
        }
        Err(v) => return Decision::deny(who, vec![v]),
    };
    let before = match req.operation {
        Operation::Update => replicas(req.old_object.as_ref(), "oldObject")
            .ok()
            .flatten()
            .unwrap_or(0),
        _ => 0,
    };
    if count <= before {
        return Decision::allow_subject(who);
    }
    let replicas = count;
    let cap = cfg.warm_pool_caps;
    if replicas > u64::from(cap.per_pool) {
        return Decision::deny(
            who,
            vec![Violation::new(
                Rule::WarmPoolReplicas,
                "spec.replicas",
                format!(
                    "is {replicas}; a warm pool may keep at most {} sandboxes (upstreamAgentSandbox.maxWarmPoolReplicas)",
                    cap.per_pool
                ),
            )],
        );
    }
    let mut d = Decision::allow_subject(who);
    d.lookups.push(Lookup::NamespaceWarmPools {
        namespace: req.namespace.clone().unwrap_or_default(),
        pool: Pool {
            kind: Kind::UpstreamSandboxWarmPool,
            name: req.name.clone().unwrap_or_default(),
        },
        size: replicas,
        cap: cap.per_namespace,
        upstream: true,
    });
    d
}

/// `spec.replicas` of a pool or a Scale: a non-negative integer, or absent.
fn replicas(object: Option<&Value>, what: &str) -> Result<Option<u64>, Violation> {
    let Some(object) = object else {
        return Err(Violation::new(
            Rule::MalformedObject,
            what,
            "is missing; the warm pool cannot be judged",
        ));
    };
    match object.pointer("/spec/replicas") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Violation::new(
                Rule::MalformedObject,
                "spec.replicas",
                format!("is {v}; it must be a non-negative integer"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::test_request;
    use serde_json::json;

    fn req(
        op: Operation,
        sub: Option<&str>,
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest {
        let kind = if sub.is_some() {
            "Scale"
        } else {
            "SandboxWarmPool"
        };
        AdmissionRequest {
            operation: op,
            sub_resource: sub.map(str::to_string),
            old_object: old,
            ..test_request(
                "extensions.agents.x-k8s.io",
                "sandboxwarmpools",
                kind,
                object,
            )
        }
    }

    fn spec(n: Value) -> Value {
        json!({"metadata": {"name": "pool"}, "spec": {"replicas": n}})
    }

    #[test]
    fn a_pool_above_its_cap_is_refused_directly_and_through_scale() {
        let cfg = Config::default();
        let cap = u64::from(cfg.warm_pool_caps.per_pool);
        for r in [
            req(Operation::Create, None, spec(json!(cap + 1)), None),
            req(
                Operation::Create,
                None,
                spec(json!(100_000_000_000u64)),
                None,
            ),
            req(
                Operation::Update,
                None,
                spec(json!(cap + 1)),
                Some(spec(json!(1))),
            ),
            req(
                Operation::Update,
                Some("scale"),
                spec(json!(cap + 1)),
                Some(spec(json!(1))),
            ),
        ] {
            let d = decide(&r, &cfg);
            assert!(!d.allowed, "{r:?}");
            assert_eq!(d.violations[0].rule, Rule::WarmPoolReplicas);
        }
        // Malformed counts are refused, not read as zero.
        for bad in [json!(-1), json!(1.5), json!("5")] {
            let d = decide(&req(Operation::Create, None, spec(bad.clone()), None), &cfg);
            assert!(
                !d.allowed && d.violations[0].rule == Rule::MalformedObject,
                "{bad}"
            );
        }
        let no_count = req(Operation::Update, Some("scale"), json!({"spec": {}}), None);
        assert!(!decide(&no_count, &cfg).allowed);
    }

    #[test]
    fn at_the_cap_passes_to_the_namespace_check_and_lowering_always_passes() {
        let cfg = Config::default();
        let cap = u64::from(cfg.warm_pool_caps.per_pool);
        let d = decide(&req(Operation::Create, None, spec(json!(cap)), None), &cfg);
        assert!(d.allowed);
        assert!(matches!(
            d.lookups.as_slice(),
            [Lookup::NamespaceWarmPools { size, upstream: true, .. }] if *size == cap
        ));
        // Scaling down from above a lowered cap: allowed, and no lookup needed.
        let down = req(
            Operation::Update,
            Some("scale"),
            spec(json!(cap + 10)),
            Some(spec(json!(cap + 20))),
        );
        let d = decide(&down, &cfg);
        assert!(d.allowed && d.lookups.is_empty());
    }

    #[test]
    fn the_namespace_sum_counts_the_other_pools_and_this_one_at_its_new_size() {
        let pools = [
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 40}}),
            json!({"metadata": {"name": "b"}, "spec": {"replicas": 50}}),
            json!({"metadata": {"name": "pool"}, "spec": {"replicas": 1}}),
            json!({"metadata": {"name": "odd"}, "spec": {}}),
        ];
        use crate::admission::pool_budget::{Pool, namespace_violation};
        let pool = Pool {
            kind: Kind::UpstreamSandboxWarmPool,
            name: "pool".into(),
        };
        assert!(namespace_violation(&[], &pools, &pool, 10, 100).is_none());
        let v = namespace_violation(&[], &pools, &pool, 11, 100).expect("over the cap");
        assert!(v.message.contains("101"), "{}", v.message);
        assert!(namespace_violation(&[], &pools, &pool, u64::MAX, 100).is_some());
    }
}
