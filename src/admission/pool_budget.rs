//! One namespace's warm sandboxes, counted together: sandgate's SandboxTemplates keep
//! `spec.poolConfig.size` each, agent-sandbox's SandboxWarmPools `spec.replicas` each,
//! and the sum over both kinds is capped (`maxWarmSandboxesPerNamespace`). Each is a set
//! of running pods a tenant could otherwise multiply by writing more pools; counting
//! the kinds apart would let a tenant keep the cap twice.

use serde_json::Value;

use super::{Rule, Violation};
use crate::resources::Kind;

/// One warm pool being written: a sandgate SandboxTemplate or an upstream
/// SandboxWarmPool, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub kind: Kind,
    pub name: String,
}

impl Pool {
    /// Where the pool keeps its size.
    fn size_pointer(kind: Kind) -> &'static str {
        if kind == Kind::SandboxTemplate {
            "/spec/poolConfig/size"
        } else {
            "/spec/replicas"
        }
    }

    /// The field named in a refusal.
    pub fn field(&self) -> &'static str {
        if self.kind == Kind::SandboxTemplate {
            "spec.poolConfig.size"
        } else {
            "spec.replicas"
        }
    }
}

/// The violation, if `pool` at `size` would bring its namespace above `cap`: the
/// namespace's other pools are `templates` (sandgate's, as listed) and `warm_pools`
/// (upstream's); `pool` itself is counted at its new size, not its stored one.
pub fn namespace_violation(
    templates: &[Value],
    warm_pools: &[Value],
    pool: &Pool,
    size: u64,
    cap: u32,
) -> Option<Violation> {
    let others = |kind: Kind, list: &[Value]| -> u64 {
        list.iter()
            .filter(|p| {
                kind != pool.kind
                    || p.pointer("/metadata/name").and_then(Value::as_str) != Some(&pool.name)
            })
            .filter_map(|p| p.pointer(Pool::size_pointer(kind)).and_then(Value::as_u64))
            .fold(0u64, u64::saturating_add)
    };
    let in_templates = others(Kind::SandboxTemplate, templates);
    let in_pools = others(Kind::UpstreamSandboxWarmPool, warm_pools);
    let total = in_templates.saturating_add(in_pools).saturating_add(size);
    (total > u64::from(cap)).then(|| {
        Violation::new(
            Rule::WarmPoolReplicas,
            pool.field(),
            format!(
                "would bring the namespace's warm sandboxes to {total} ({in_templates} in its other SandboxTemplates, {in_pools} in its SandboxWarmPools); a namespace may keep at most {cap} (maxWarmSandboxesPerNamespace)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(name: &str, size: u64) -> Value {
        json!({"metadata": {"name": name}, "spec": {"poolConfig": {"size": size}}})
    }

    fn warm_pool(name: &str, replicas: u64) -> Value {
        json!({"metadata": {"name": name}, "spec": {"replicas": replicas}})
    }

    #[test]
    fn both_kinds_share_one_budget_and_the_pool_counts_at_its_new_size() {
        let python = Pool {
            kind: Kind::SandboxTemplate,
            name: "python".into(),
        };
        let templates = [template("python", 90), template("node", 40)];
        let pools = [warm_pool("python", 30)];
        // 40 (node) + 30 (the upstream pool of the same name is another pool) + 30.
        assert!(namespace_violation(&templates, &pools, &python, 30, 100).is_none());
        let v = namespace_violation(&templates, &pools, &python, 31, 100);
        assert!(
            v.as_ref().is_some_and(|v| v.field == "spec.poolConfig.size"
                && v.message.contains("101")
                && v.message
                    .contains("40 in its other SandboxTemplates, 30 in its SandboxWarmPools")),
            "{v:?}"
        );
        // An upstream pool is counted against sandgate's templates too.
        let upstream = Pool {
            kind: Kind::UpstreamSandboxWarmPool,
            name: "python".into(),
        };
        let v = namespace_violation(&templates, &pools, &upstream, 1, 100);
        assert!(v.is_some_and(|v| v.field == "spec.replicas"));
        // Sizes near the top of u64 saturate rather than wrap.
        let huge = [template("a", u64::MAX), template("b", u64::MAX)];
        assert!(namespace_violation(&huge, &[], &python, 1, 100).is_some());
    }
}
