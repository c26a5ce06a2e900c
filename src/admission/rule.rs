//! The built-in rules by identity. Reports, metrics and filters name rules through this
//! enum, so a misspelt rule is a compile error rather than a filter that never matches.

use std::fmt;

/// A rule a [`super::Violation`] breaks. The kebab-case id is the stable public name
/// (in denial messages, `check --output json`, the README's rule table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    RuntimeClass,
    Privileged,
    PrivilegeEscalation,
    HostNamespaces,
    HostPath,
    VolumeTypes,
    InlineCsi,
    HostPort,
    Capabilities,
    Sysctls,
    ProcMount,
    Seccomp,
    Apparmor,
    Selinux,
    HostProcess,
    ProbeHost,
    ResourceLimits,
    ResourceCaps,
    PodResourceCaps,
    PriorityClass,
    DeviceClaims,
    NodeName,
    ServiceAccountToken,
    SandboxLabels,
    TemplateLabel,
    ResizeLimits,
    MalformedObject,
    NetworkPolicy,
    ManagedNetworkPolicy,
    EgressWidening,
    IngressWidening,
    EgressReach,
    IngressReach,
    RuntimeClassHandler,
    ManagedRuntimeClass,
    UpstreamMetadata,
    WarmPoolReplicas,
    ClaimEnv,
    /// sandgate itself failed to judge (fail closed).
    Internal,
    /// A Rego policy denied; the violation's field is the policy name.
    Policy,
}

impl Rule {
    pub const ALL: [Rule; 40] = [
        Rule::RuntimeClass,
        Rule::Privileged,
        Rule::PrivilegeEscalation,
        Rule::HostNamespaces,
        Rule::HostPath,
        Rule::VolumeTypes,
        Rule::InlineCsi,
        Rule::HostPort,
        Rule::Capabilities,
        Rule::Sysctls,
        Rule::ProcMount,
        Rule::Seccomp,
        Rule::Apparmor,
        Rule::Selinux,
        Rule::HostProcess,
        Rule::ProbeHost,
        Rule::ResourceLimits,
        Rule::ResourceCaps,
        Rule::PodResourceCaps,
        Rule::PriorityClass,
        Rule::DeviceClaims,
        Rule::NodeName,
        Rule::ServiceAccountToken,
        Rule::SandboxLabels,
        Rule::TemplateLabel,
        Rule::ResizeLimits,
        Rule::MalformedObject,
        Rule::NetworkPolicy,
        Rule::ManagedNetworkPolicy,
        Rule::EgressWidening,
        Rule::IngressWidening,
        Rule::EgressReach,
        Rule::IngressReach,
        Rule::RuntimeClassHandler,
        Rule::ManagedRuntimeClass,
        Rule::UpstreamMetadata,
        Rule::WarmPoolReplicas,
        Rule::ClaimEnv,
        Rule::Internal,
        Rule::Policy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::RuntimeClass => "runtime-class",
            Rule::Privileged => "privileged",
            Rule::PrivilegeEscalation => "privilege-escalation",
            Rule::HostNamespaces => "host-namespaces",
            Rule::HostPath => "host-path",
            Rule::VolumeTypes => "volume-types",
            Rule::InlineCsi => "inline-csi",
            Rule::HostPort => "host-port",
            Rule::Capabilities => "capabilities",
            Rule::Sysctls => "sysctls",
            Rule::ProcMount => "proc-mount",
            Rule::Seccomp => "seccomp",
            Rule::Apparmor => "apparmor",
            Rule::Selinux => "selinux",
            Rule::HostProcess => "host-process",
            Rule::ProbeHost => "probe-host",
            Rule::ResourceLimits => "resource-limits",
            Rule::ResourceCaps => "resource-caps",
            Rule::PodResourceCaps => "pod-resource-caps",
            Rule::PriorityClass => "priority-class",
            Rule::DeviceClaims => "device-claims",
            Rule::NodeName => "node-name",
            Rule::ServiceAccountToken => "service-account-token",
            Rule::SandboxLabels => "sandbox-labels",
            Rule::TemplateLabel => "template-label",
            Rule::ResizeLimits => "resize-limits",
            Rule::MalformedObject => "malformed-object",
            Rule::NetworkPolicy => "network-policy",
            Rule::ManagedNetworkPolicy => "managed-network-policy",
            Rule::EgressWidening => "egress-widening",
            Rule::IngressWidening => "ingress-widening",
            Rule::EgressReach => "egress-reach",
            Rule::IngressReach => "ingress-reach",
            Rule::RuntimeClassHandler => "runtime-class-handler",
            Rule::ManagedRuntimeClass => "managed-runtime-class",
            Rule::UpstreamMetadata => "upstream-metadata",
            Rule::WarmPoolReplicas => "warm-pool-replicas",
            Rule::ClaimEnv => "claim-env",
            Rule::Internal => "internal",
            Rule::Policy => "policy",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn ids_are_unique_and_serialise_as_shown() {
        let mut ids: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        for r in Rule::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Rule::ALL.len());
    }

    #[test]
    fn every_rule_has_a_row_in_the_readme() {
        let readme = include_str!("../../README.md");
        for r in Rule::ALL {
            if matches!(r, Rule::Internal | Rule::Policy) {
                continue;
            }
            let row = format!("| `{}` |", r.as_str());
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}
