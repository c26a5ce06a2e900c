//! The kinds sandgate judges or writes, with their API group and resource (plural)
//! names. The table is checked against the types' own `kube::Resource` metadata in a
//! test, so no plural is guessed from a kind.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    NetworkPolicy,
    RuntimeClass,
    Secret,
    SandboxTemplate,
    Sandbox,
    SandboxClaim,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
    /// kubernetes-sigs/agent-sandbox's `Sandbox` (agents.x-k8s.io).
    UpstreamSandbox,
    /// kubernetes-sigs/agent-sandbox's `SandboxTemplate` (extensions.agents.x-k8s.io).
    UpstreamSandboxTemplate,
    /// kubernetes-sigs/agent-sandbox's `SandboxClaim` (extensions.agents.x-k8s.io).
    UpstreamSandboxClaim,
    /// kubernetes-sigs/agent-sandbox's `SandboxWarmPool` (extensions.agents.x-k8s.io).
    UpstreamSandboxWarmPool,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::RuntimeClass,
        Kind::Secret,
        Kind::SandboxTemplate,
        Kind::Sandbox,
        Kind::SandboxClaim,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
        Kind::ReplicationController,
        Kind::UpstreamSandbox,
        Kind::UpstreamSandboxTemplate,
        Kind::UpstreamSandboxClaim,
        Kind::UpstreamSandboxWarmPool,
    ];

    /// (API group, kind, resource).
    const fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Pod => ("", "Pod", "pods"),
            Kind::Namespace => ("", "Namespace", "namespaces"),
            Kind::NetworkPolicy => ("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
            Kind::RuntimeClass => ("node.k8s.io", "RuntimeClass", "runtimeclasses"),
            Kind::Secret => ("", "Secret", "secrets"),
            Kind::SandboxTemplate => (
                crate::contract::GROUP,
                "SandboxTemplate",
                "sandboxtemplates",
            ),
            Kind::Sandbox => (crate::contract::GROUP, "Sandbox", "sandboxes"),
            Kind::SandboxClaim => (crate::contract::GROUP, "SandboxClaim", "sandboxclaims"),
            Kind::Deployment => ("apps", "Deployment", "deployments"),
            Kind::ReplicaSet => ("apps", "ReplicaSet", "replicasets"),
            Kind::StatefulSet => ("apps", "StatefulSet", "statefulsets"),
            Kind::DaemonSet => ("apps", "DaemonSet", "daemonsets"),
            Kind::Job => ("batch", "Job", "jobs"),
            Kind::CronJob => ("batch", "CronJob", "cronjobs"),
            Kind::ReplicationController => ("", "ReplicationController", "replicationcontrollers"),
            Kind::UpstreamSandbox => (crate::contract::upstream::GROUP, "Sandbox", "sandboxes"),
            Kind::UpstreamSandboxTemplate => (
                crate::contract::upstream::EXTENSIONS_GROUP,
                "SandboxTemplate",
                "sandboxtemplates",
            ),
            Kind::UpstreamSandboxClaim => (
                crate::contract::upstream::EXTENSIONS_GROUP,
                "SandboxClaim",
                "sandboxclaims",
            ),
            Kind::UpstreamSandboxWarmPool => (
                crate::contract::upstream::EXTENSIONS_GROUP,
                "SandboxWarmPool",
                "sandboxwarmpools",
            ),
        }
    }

    pub const fn group(self) -> &'static str {
        self.names().0
    }

    pub const fn kind(self) -> &'static str {
        self.names().1
    }

    pub const fn resource(self) -> &'static str {
        self.names().2
    }

    /// The kind an admission request's resource names.
    pub fn of_resource(group: &str, resource: &str) -> Option<Kind> {
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.resource() == resource)
    }

    /// The kind a manifest's `apiVersion` and `kind` name.
    pub fn of_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_group(api_version);
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.kind() == kind)
    }

    /// The kind of that name, in whichever group (sandgate's own first: upstream's
    /// kinds share two of its names).
    pub fn of_kind(kind: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.kind() == kind)
    }

    /// Where a workload keeps the pod template its pods are made from.
    pub fn pod_template_pointer(self) -> Option<&'static str> {
        match self {
            Kind::Deployment
            | Kind::ReplicaSet
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::Job
            | Kind::ReplicationController => Some("/spec/template"),
            Kind::CronJob => Some("/spec/jobTemplate/spec/template"),
            Kind::UpstreamSandbox | Kind::UpstreamSandboxTemplate => Some("/spec/podTemplate"),
            _ => None,
        }
    }

    /// Whether every pod this kind makes is a sandbox pod, whatever its labels or
    /// namespace: upstream's controller labels each pod of a Sandbox as one.
    pub fn makes_sandbox_pods(self) -> bool {
        matches!(self, Kind::UpstreamSandbox | Kind::UpstreamSandboxTemplate)
    }

    /// Whether this is one of kubernetes-sigs/agent-sandbox's kinds.
    pub fn is_upstream(self) -> bool {
        crate::contract::upstream::is_group(self.group())
    }
}

/// Which policies judge an object of this group and kind: the key of
/// `sandgate.<key>.<name>` packages. A kind sandgate knows is judged by its policies
/// only in its own group (`pod`, `sandboxtemplate`...); upstream agent-sandbox kinds by
/// `agents.<kind>` policies; any other kind by the policies of its lower-case name, as
/// DESIGN.md §5 lets authors judge kinds sandgate does not know. `None`: a kind of
/// sandgate's name from another group, which no policy of that name may judge.
pub fn policy_key(group: &str, kind: &str) -> Option<String> {
    let lower = kind.to_ascii_lowercase();
    if crate::contract::upstream::is_group(group) {
        return Some(format!(
            "{}.{lower}",
            crate::contract::upstream::POLICY_SEGMENT
        ));
    }
    match Kind::of_kind(kind) {
        Some(known) if known.group() != group => None,
        _ => Some(lower),
    }
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → the core group `""`).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The resource of a kind sandgate does not know, offline where there is no discovery:
/// apimachinery's own fallback (`meta.UnsafeGuessKindToResource`), so a policy sees what
/// a cluster without a custom plural would send.
pub fn guess_resource(kind: &str) -> Cow<'static, str> {
    if let Some(k) = Kind::of_kind(kind) {
        return Cow::Borrowed(k.resource());
    }
    let singular = kind.to_ascii_lowercase();
    Cow::Owned(if singular.is_empty() || singular.ends_with("endpoints") {
        singular
    } else if singular.ends_with('s') {
        format!("{singular}es")
    } else if let Some(stem) = singular.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{singular}s")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::{apps, batch, core, networking};
    use kube::Resource;

    fn names<K: Resource<DynamicType = ()>>() -> (String, String, String) {
        (
            K::group(&()).to_string(),
            K::kind(&()).to_string(),
            K::plural(&()).to_string(),
        )
    }

    #[test]
    fn the_table_matches_the_types() {
        for k in Kind::ALL {
            let from_type = match k {
                Kind::Pod => names::<core::v1::Pod>(),
                Kind::Namespace => names::<core::v1::Namespace>(),
                Kind::NetworkPolicy => names::<networking::v1::NetworkPolicy>(),
                Kind::RuntimeClass => names::<k8s_openapi::api::node::v1::RuntimeClass>(),
                Kind::Secret => names::<core::v1::Secret>(),
                Kind::SandboxTemplate => names::<crate::crd::SandboxTemplate>(),
                Kind::Sandbox => names::<crate::crd::Sandbox>(),
                Kind::SandboxClaim => names::<crate::crd::SandboxClaim>(),
                Kind::Deployment => names::<apps::v1::Deployment>(),
                Kind::ReplicaSet => names::<apps::v1::ReplicaSet>(),
                Kind::StatefulSet => names::<apps::v1::StatefulSet>(),
                Kind::DaemonSet => names::<apps::v1::DaemonSet>(),
                Kind::Job => names::<batch::v1::Job>(),
                Kind::CronJob => names::<batch::v1::CronJob>(),
                Kind::ReplicationController => names::<core::v1::ReplicationController>(),
                // No Rust types for upstream's kinds: their names as upstream spells them.
                Kind::UpstreamSandbox => (
                    "agents.x-k8s.io".into(),
                    "Sandbox".into(),
                    "sandboxes".into(),
                ),
                Kind::UpstreamSandboxTemplate => (
                    "extensions.agents.x-k8s.io".into(),
                    "SandboxTemplate".into(),
                    "sandboxtemplates".into(),
                ),
                Kind::UpstreamSandboxClaim => (
                    "extensions.agents.x-k8s.io".into(),
                    "SandboxClaim".into(),
                    "sandboxclaims".into(),
                ),
                Kind::UpstreamSandboxWarmPool => (
                    "extensions.agents.x-k8s.io".into(),
                    "SandboxWarmPool".into(),
                    "sandboxwarmpools".into(),
                ),
            };
            let (g, kind, r) = k.names();
            assert_eq!(from_type, (g.into(), kind.into(), r.into()), "{k:?}");
        }
    }

    #[test]
    fn policies_judge_a_kind_in_its_own_group_only() {
        assert_eq!(policy_key("", "Pod").as_deref(), Some("pod"));
        assert_eq!(
            policy_key("sandbox.gke.io", "SandboxTemplate").as_deref(),
            Some("sandboxtemplate")
        );
        // Upstream's SandboxTemplate is not sandgate's.
        assert_eq!(
            policy_key("extensions.agents.x-k8s.io", "SandboxTemplate").as_deref(),
            Some("agents.sandboxtemplate")
        );
        assert_eq!(
            policy_key("agents.x-k8s.io", "Sandbox").as_deref(),
            Some("agents.sandbox")
        );
        // Someone else's kind of the same name is judged by no policy of that name.
        assert_eq!(policy_key("example.com", "SandboxTemplate"), None);
        assert_eq!(policy_key("example.com", "Pod"), None);
        // Kinds sandgate does not know keep the DESIGN §5 rule.
        assert_eq!(
            policy_key("example.com", "Widget").as_deref(),
            Some("widget")
        );
    }

    #[test]
    fn unknown_kinds_get_apimachinerys_guess() {
        assert_eq!(guess_resource("Sandbox"), "sandboxes");
        assert_eq!(guess_resource("NetworkPolicy"), "networkpolicies");
        assert_eq!(guess_resource("Widget"), "widgets");
        // The rule is literal: apimachinery guesses "gatewaies" too.
        assert_eq!(guess_resource("Gateway"), "gatewaies");
        assert_eq!(guess_resource("Endpoints"), "endpoints");
        assert_eq!(guess_resource("Class"), "classes");
        assert_eq!(guess_resource("Policy"), "policies");
    }
}
