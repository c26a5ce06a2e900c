//! Operator configuration: the sandbox runtime class, default and maximum resources,
//! namespaces to leave alone. Read from a YAML file, overridden by flags, and validated
//! once at start so that a typo stops the process with a clear message instead of
//! silently weakening the policy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::contract::{self, kubernetes};
use crate::quantity::{self, Milli};

/// The identity sandgate runs as in-cluster (deploy/serviceaccount.yaml).
pub const SANDGATE_SERVICE_ACCOUNT: &str = contract::SERVICE_ACCOUNT;

/// Resources sandgate fills in and caps on every sandbox container.
pub const MANAGED_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Per-resource settings as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSettings {
    /// Request given to a container that has none.
    pub default_request: String,
    /// Limit given to a container that has none.
    pub default_limit: String,
    /// Highest limit a sandbox container may ask for.
    pub max_limit: String,
    /// Lowest limit a sandbox container may ask for (a limit of zero is never allowed:
    /// the container would run unbounded). Built-in default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_limit: Option<String>,
    /// Highest sum of one pod's limits: its containers, init containers and sidecars
    /// together, plus the pod's overhead. Built-in default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pod_limit: Option<String>,
}

/// The configuration file (`--config`), every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    pub runtime_class_name: Option<String>,
    pub runtime_handler: Option<String>,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceSettings>,
    pub exclude_namespaces: Option<Vec<String>>,
    pub template_label_creators: Option<Vec<String>>,
    pub network_policy_writers: Option<Vec<String>>,
    pub runtime_class_writers: Option<Vec<String>>,
    /// CSI drivers a sandbox pod may mount inline (`volumes[].csi`); none by default.
    #[serde(rename = "inlineCSIDrivers")]
    pub inline_csi_drivers: Option<Vec<String>>,
    /// The most warm sandboxes one namespace may keep, summed over sandgate's templates
    /// (`spec.poolConfig.size`) and agent-sandbox's warm pools (`spec.replicas`).
    pub max_warm_sandboxes_per_namespace: Option<u32>,
    pub upstream_agent_sandbox: Option<UpstreamSettings>,
}

/// kubernetes-sigs/agent-sandbox support (`upstreamAgentSandbox`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Whether pods of upstream Sandboxes are sandbox pods (default true).
    pub enabled: Option<bool>,
    /// Users or groups upstream's controller runs as: the only writers of its
    /// `agents.x-k8s.io/*` labels and pod-name annotation, and of the NetworkPolicies of
    /// its managed templates.
    pub controllers: Option<Vec<String>>,
    /// The largest `spec.replicas` of one SandboxWarmPool.
    pub max_warm_pool_replicas: Option<u32>,
    /// Earlier name of the top-level `maxWarmSandboxesPerNamespace` (one budget for both
    /// kinds of pool), still read.
    pub max_warm_pool_replicas_per_namespace: Option<u32>,
}

/// Flag overrides (`--runtime-class`, `--default-request cpu=250m`, ...).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub runtime_class_name: Option<String>,
    pub default_requests: Vec<(String, String)>,
    pub default_limits: Vec<(String, String)>,
    pub max_limits: Vec<(String, String)>,
    pub min_limits: Vec<(String, String)>,
    pub max_pod_limits: Vec<(String, String)>,
    pub exclude_namespaces: Vec<String>,
}

/// One managed resource, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: &'static str,
    pub default_request: String,
    pub default_request_milli: Milli,
    pub default_limit: String,
    pub default_limit_milli: Milli,
    pub max_limit: String,
    pub max_limit_milli: Milli,
    pub min_limit: String,
    pub min_limit_milli: Milli,
    pub max_pod_limit: String,
    pub max_pod_limit_milli: Milli,
}

/// The validated configuration every decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub runtime_class_name: String,
    /// The handler the configured RuntimeClass must name: were it re-created with
    /// another (`runc`), pods admitted under the class name would run without gVisor.
    pub runtime_handler: String,
    pub resources: Vec<Resource>,
    pub exclude_namespaces: BTreeSet<String>,
    /// Users or groups that may create pods carrying `sandbox.gke.io/template`: the
    /// label puts a pod under its template's (possibly wider) NetworkPolicy, so only
    /// sandgate's reconciler may set it.
    pub template_label_creators: BTreeSet<String>,
    /// Users or groups that may change or delete sandgate's own NetworkPolicies
    /// (sandgate itself, cluster admins, and the controllers that clean up after
    /// deletions); anyone else could open a sandbox's egress by removing them.
    pub network_policy_writers: BTreeSet<String>,
    /// Users or groups that may create, change or delete the configured RuntimeClass.
    pub runtime_class_writers: BTreeSet<String>,
    /// CSI drivers sandbox pods may mount inline. An inline CSI volume is mounted by
    /// the node's driver, outside the sandbox and its egress policy (an NFS or SMB
    /// driver reaches any server it is told to), so none is trusted unless named.
    pub inline_csi_drivers: BTreeSet<String>,
    /// Whether pods of kubernetes-sigs/agent-sandbox Sandboxes (labelled
    /// `agents.x-k8s.io/sandbox-name-hash`) are sandbox pods (DESIGN.md §2, case 3).
    pub upstream: bool,
    /// Who upstream's controller is ([`UpstreamSettings::controllers`]).
    pub upstream_controllers: BTreeSet<String>,
    /// The caps on upstream warm pools (kubernetes-sigs/agent-sandbox#251: `replicas`
    /// has no bound of its own).
    pub warm_pool_caps: WarmPoolCaps,
}

/// The most sandboxes warm pools may keep: one upstream SandboxWarmPool, and one
/// namespace's pools of both kinds together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPoolCaps {
    pub per_pool: u32,
    pub per_namespace: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self::build(ConfigFile::default(), Overrides::default())
            .expect("the built-in defaults are valid")
    }
}

/// The built-in (minimum limit, maximum pod total) of a resource.
fn builtin_bounds(name: &str) -> (&'static str, &'static str) {
    match name {
        "cpu" => ("10m", "8"),
        "memory" => ("16Mi", "16Gi"),
        _ => ("1Mi", "20Gi"),
    }
}

fn builtin(name: &str) -> ResourceSettings {
    let (req, lim, max) = match name {
        "cpu" => ("500m", "1", "4"),
        "memory" => ("512Mi", "1Gi", "8Gi"),
        _ => ("1Gi", "2Gi", "10Gi"),
    };
    // The bounds are left unset: they follow the limits given (Config::build).
    ResourceSettings {
        default_request: req.into(),
        default_limit: lim.into(),
        max_limit: max.into(),
        min_limit: None,
        max_pod_limit: None,
    }
}

impl Config {
    /// Reads `path` (if any), applies the flag overrides and validates the result.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            None => ConfigFile::default(),
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                if text.trim().is_empty() {
                    ConfigFile::default()
                } else {
                    serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: shown,
                        source,
                    })?
                }
            }
        };
        Self::build(file, overrides)
    }

    /// Merges file and flags over the built-in defaults and checks every value.
    pub fn build(file: ConfigFile, flags: Overrides) -> Result<Self, ConfigError> {
        let runtime_class_name = flags
            .runtime_class_name
            .or(file.runtime_class_name)
            .unwrap_or_else(|| contract::DEFAULT_RUNTIME_CLASS.to_string());
        if !is_dns1123_subdomain(&runtime_class_name) {
            return Err(ConfigError::Invalid(format!(
                "runtimeClassName {runtime_class_name:?} is not a valid RuntimeClass name (lower-case DNS subdomain)"
            )));
        }

        for name in file.resources.keys() {
            if !MANAGED_RESOURCES.contains(&name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "resources.{name}: unknown resource; expected one of {MANAGED_RESOURCES:?}"
                )));
            }
        }
        for (flag, list) in [
            ("--default-request", &flags.default_requests),
            ("--default-limit", &flags.default_limits),
            ("--max-limit", &flags.max_limits),
            ("--min-limit", &flags.min_limits),
            ("--max-pod-limit", &flags.max_pod_limits),
        ] {
            for (name, _) in list {
                if !MANAGED_RESOURCES.contains(&name.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} {name}=...: unknown resource; expected one of {MANAGED_RESOURCES:?}"
                    )));
                }
            }
        }

        let mut resources = Vec::with_capacity(MANAGED_RESOURCES.len());
        for name in MANAGED_RESOURCES {
            let mut s = file
                .resources
                .get(name)
                .cloned()
                .unwrap_or_else(|| builtin(name));
            let pick = |list: &[(String, String)]| {
                list.iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            if let Some(v) = pick(&flags.default_requests) {
                s.default_request = v;
            }
            if let Some(v) = pick(&flags.default_limits) {
                s.default_limit = v;
            }
            if let Some(v) = pick(&flags.max_limits) {
                s.max_limit = v;
            }
            let min_given = pick(&flags.min_limits).or(s.min_limit.take());
            let pod_max_given = pick(&flags.max_pod_limits).or(s.max_pod_limit.take());
            let parse = |field: &str, text: &str| {
                let q = quantity::parse(text)
                    .map_err(|e| ConfigError::Invalid(format!("resources.{name}.{field}: {e}")))?;
                if q.0 <= 0 {
                    return Err(ConfigError::Invalid(format!(
                        "resources.{name}.{field}: must be positive, got {text:?}"
                    )));
                }
                Ok(q)
            };
            let req = parse("defaultRequest", &s.default_request)?;
            let lim = parse("defaultLimit", &s.default_limit)?;
            let max = parse("maxLimit", &s.max_limit)?;
            // Unset bounds follow the other settings: the built-in floor unless the
            // default limit is lower, the built-in pod total unless twice maxLimit is
            // higher (a configuration written before these settings stays valid).
            let (builtin_min, builtin_pod_max) = builtin_bounds(name);
            let min_text = min_given.unwrap_or_else(|| match quantity::parse(builtin_min) {
                Ok(b) if b > lim => s.default_limit.clone(),
                _ => builtin_min.to_string(),
            });
            let pod_max_text = pod_max_given.unwrap_or_else(|| {
                let twice = Milli(max.0.saturating_mul(2));
                match quantity::parse(builtin_pod_max) {
                    Ok(b) if b < twice => twice.to_string(),
                    _ => builtin_pod_max.to_string(),
                }
            });
            let min = parse("minLimit", &min_text)?;
            let pod_max = parse("maxPodLimit", &pod_max_text)?;
            if min > lim {
                return Err(ConfigError::Invalid(format!(
                    "resources.{name}: minLimit {min_text} is above defaultLimit {}",
                    s.default_limit
                )));
            }
            if max > pod_max {
                return Err(ConfigError::Invalid(format!(
                    "resources.{name}: maxLimit {} is above maxPodLimit {pod_max_text}",
                    s.max_limit
                )));
            }
            if req > lim {
                return Err(ConfigError::Invalid(format!(
                    "resources.{name}: defaultRequest {} is above defaultLimit {}",
                    s.default_request, s.default_limit
                )));
            }
            if lim > max {
                return Err(ConfigError::Invalid(format!(
                    "resources.{name}: defaultLimit {} is above maxLimit {}",
                    s.default_limit, s.max_limit
                )));
            }
            resources.push(Resource {
                name,
                default_request: s.default_request,
                default_request_milli: req,
                default_limit: s.default_limit,
                default_limit_milli: lim,
                max_limit: s.max_limit,
                max_limit_milli: max,
                min_limit: min_text,
                min_limit_milli: min,
                max_pod_limit: pod_max_text,
                max_pod_limit_milli: pod_max,
            });
        }

        let mut exclude_namespaces: BTreeSet<String> = file
            .exclude_namespaces
            .unwrap_or_else(|| {
                contract::DEFAULT_EXCLUDED_NAMESPACES
                    .map(String::from)
                    .to_vec()
            })
            .into_iter()
            .collect();
        exclude_namespaces.extend(flags.exclude_namespaces);
        for ns in &exclude_namespaces {
            if !is_dns1123_label(ns) {
                return Err(ConfigError::Invalid(format!(
                    "excludeNamespaces: {ns:?} is not a valid namespace name"
                )));
            }
        }

        let template_label_creators: BTreeSet<String> = file
            .template_label_creators
            .unwrap_or_else(|| vec![SANDGATE_SERVICE_ACCOUNT.to_string()])
            .into_iter()
            .collect();
        if template_label_creators.iter().any(|c| c.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "templateLabelCreators: empty user or group name".into(),
            ));
        }

        let runtime_handler = file
            .runtime_handler
            .unwrap_or_else(|| contract::DEFAULT_RUNTIME_HANDLER.to_string());
        if !is_dns1123_label(&runtime_handler) {
            return Err(ConfigError::Invalid(format!(
                "runtimeHandler {runtime_handler:?} is not a valid RuntimeClass handler (lower-case DNS label)"
            )));
        }
        let runtime_class_writers: BTreeSet<String> = file
            .runtime_class_writers
            .unwrap_or_else(|| vec![kubernetes::MASTERS_GROUP.to_string()])
            .into_iter()
            .collect();
        if runtime_class_writers.iter().any(|c| c.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "runtimeClassWriters: empty user or group name".into(),
            ));
        }

        let inline_csi_drivers: BTreeSet<String> = file
            .inline_csi_drivers
            .unwrap_or_default()
            .into_iter()
            .collect();
        if let Some(bad) = inline_csi_drivers.iter().find(|d| !is_dns1123_subdomain(d)) {
            return Err(ConfigError::Invalid(format!(
                "inlineCSIDrivers: {bad:?} is not a CSI driver name (a DNS subdomain)"
            )));
        }

        let network_policy_writers: BTreeSet<String> = file
            .network_policy_writers
            .unwrap_or_else(|| {
                [
                    SANDGATE_SERVICE_ACCOUNT,
                    kubernetes::MASTERS_GROUP,
                    kubernetes::GARBAGE_COLLECTOR,
                    kubernetes::NAMESPACE_CONTROLLER,
                ]
                .map(String::from)
                .to_vec()
            })
            .into_iter()
            .collect();

        let upstream_file = file.upstream_agent_sandbox.unwrap_or_default();
        let upstream = upstream_file.enabled.unwrap_or(true);
        let upstream_controllers: BTreeSet<String> = upstream_file
            .controllers
            .unwrap_or_else(|| vec![contract::upstream::CONTROLLER.to_string()])
            .into_iter()
            .collect();
        if upstream_controllers.iter().any(|c| c.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "upstreamAgentSandbox.controllers: empty user or group name".into(),
            ));
        }
        let per_namespace = match (
            file.max_warm_sandboxes_per_namespace,
            upstream_file.max_warm_pool_replicas_per_namespace,
        ) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::Invalid(format!(
                    "maxWarmSandboxesPerNamespace ({a}) and upstreamAgentSandbox.maxWarmPoolReplicasPerNamespace ({b}) are one budget under two names; set maxWarmSandboxesPerNamespace only"
                )));
            }
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => contract::DEFAULT_MAX_WARM_SANDBOXES_PER_NAMESPACE,
        };
        let warm_pool_caps = WarmPoolCaps {
            per_pool: upstream_file
                .max_warm_pool_replicas
                .unwrap_or(contract::upstream::DEFAULT_MAX_WARM_POOL_REPLICAS),
            per_namespace,
        };

        Ok(Config {
            runtime_class_name,
            runtime_handler,
            runtime_class_writers,
            inline_csi_drivers,
            resources,
            exclude_namespaces,
            template_label_creators,
            network_policy_writers,
            upstream,
            upstream_controllers,
            warm_pool_caps,
        })
    }

    /// The settings of one managed resource.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The effective configuration in the file format, for `--print-config` and docs.
    pub fn to_file(&self) -> ConfigFile {
        ConfigFile {
            runtime_class_name: Some(self.runtime_class_name.clone()),
            runtime_handler: Some(self.runtime_handler.clone()),
            runtime_class_writers: Some(self.runtime_class_writers.iter().cloned().collect()),
            inline_csi_drivers: Some(self.inline_csi_drivers.iter().cloned().collect()),
            max_warm_sandboxes_per_namespace: Some(self.warm_pool_caps.per_namespace),
            resources: self
                .resources
                .iter()
                .map(|r| {
                    (
                        r.name.to_string(),
                        ResourceSettings {
                            default_request: r.default_request.clone(),
                            default_limit: r.default_limit.clone(),
                            max_limit: r.max_limit.clone(),
                            min_limit: Some(r.min_limit.clone()),
                            max_pod_limit: Some(r.max_pod_limit.clone()),
                        },
                    )
                })
                .collect(),
            exclude_namespaces: Some(self.exclude_namespaces.iter().cloned().collect()),
            template_label_creators: Some(self.template_label_creators.iter().cloned().collect()),
            network_policy_writers: Some(self.network_policy_writers.iter().cloned().collect()),
            upstream_agent_sandbox: Some(UpstreamSettings {
                enabled: Some(self.upstream),
                controllers: Some(self.upstream_controllers.iter().cloned().collect()),
                max_warm_pool_replicas: Some(self.warm_pool_caps.per_pool),
                max_warm_pool_replicas_per_namespace: None,
            }),
        }
    }
}

/// Parses `NAME=QUANTITY` as given to the resource flags.
pub fn parse_resource_flag(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected RESOURCE=QUANTITY (e.g. cpu=500m), got {text:?}"))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_article() {
        let c = Config::default();
        assert_eq!(c.runtime_class_name, "gvisor");
        let cpu = c.resource("cpu").unwrap();
        assert_eq!(
            (cpu.default_request.as_str(), cpu.default_limit.as_str()),
            ("500m", "1")
        );
        let mem = c.resource("memory").unwrap();
        assert_eq!(
            (mem.default_request.as_str(), mem.default_limit.as_str()),
            ("512Mi", "1Gi")
        );
        assert!(c.exclude_namespaces.contains("kube-system"));
    }

    #[test]
    fn flags_override_the_file() {
        let file: ConfigFile = serde_yaml::from_str(
            "runtimeClassName: kata\nresources:\n  cpu: {defaultRequest: 100m, defaultLimit: 200m, maxLimit: '2'}\n",
        )
        .unwrap();
        let flags = Overrides {
            runtime_class_name: Some("gvisor".into()),
            max_limits: vec![("cpu".into(), "3".into())],
            exclude_namespaces: vec!["tools".into()],
            ..Default::default()
        };
        let c = Config::build(file, flags).unwrap();
        assert_eq!(c.runtime_class_name, "gvisor");
        let cpu = c.resource("cpu").unwrap();
        assert_eq!(cpu.default_request, "100m");
        assert_eq!(cpu.max_limit, "3");
        assert!(c.exclude_namespaces.contains("tools"));
    }

    #[test]
    fn the_warm_sandbox_budget_has_one_name_and_reads_its_old_one() {
        let build = |yaml: &str| {
            Config::build(serde_yaml::from_str(yaml).unwrap(), Overrides::default())
                .map(|c| c.warm_pool_caps.per_namespace)
        };
        assert_eq!(
            build("{}").ok(),
            Some(contract::DEFAULT_MAX_WARM_SANDBOXES_PER_NAMESPACE)
        );
        assert_eq!(build("maxWarmSandboxesPerNamespace: 40").ok(), Some(40));
        let old = "upstreamAgentSandbox: {maxWarmPoolReplicasPerNamespace: 30}";
        assert_eq!(build(old).ok(), Some(30));
        let both = "maxWarmSandboxesPerNamespace: 40\nupstreamAgentSandbox: {maxWarmPoolReplicasPerNamespace: 30}";
        let err = build(both).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("one budget"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let bad = [
            ("runtimeClassName: Not_Valid", "runtimeClassName"),
            (
                "resources:\n  gpu: {defaultRequest: '1', defaultLimit: '1', maxLimit: '1'}",
                "gpu",
            ),
            (
                "resources:\n  cpu: {defaultRequest: lots, defaultLimit: '1', maxLimit: '1'}",
                "resources.cpu.defaultRequest",
            ),
            (
                "resources:\n  cpu: {defaultRequest: '2', defaultLimit: '1', maxLimit: '4'}",
                "above defaultLimit",
            ),
            (
                "resources:\n  cpu: {defaultRequest: '1', defaultLimit: '8', maxLimit: '4'}",
                "above maxLimit",
            ),
            ("excludeNamespaces: ['Bad NS']", "excludeNamespaces"),
            (
                "resources:\n  cpu: {defaultRequest: 100m, defaultLimit: '1', maxLimit: '4', minLimit: '0'}",
                "resources.cpu.minLimit: must be positive",
            ),
            (
                "resources:\n  cpu: {defaultRequest: 100m, defaultLimit: '1', maxLimit: '4', minLimit: '2'}",
                "minLimit 2 is above defaultLimit",
            ),
            (
                "resources:\n  memory: {defaultRequest: 1Gi, defaultLimit: 1Gi, maxLimit: 8Gi, maxPodLimit: 4Gi}",
                "maxLimit 8Gi is above maxPodLimit 4Gi",
            ),
        ];
        for (yaml, needle) in bad {
            let file: ConfigFile = serde_yaml::from_str(yaml).unwrap();
            let err = Config::build(file, Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
        let typo: Result<ConfigFile, _> = serde_yaml::from_str("runtimeClass: gvisor");
        assert!(typo.is_err(), "unknown fields are refused");
    }

    #[test]
    fn unset_bounds_follow_the_other_settings() {
        let c = Config::default();
        let cpu = c.resource("cpu").unwrap();
        assert_eq!(
            (cpu.min_limit.as_str(), cpu.max_pod_limit.as_str()),
            ("10m", "8")
        );
        // Written before minLimit and maxPodLimit existed: still valid, same meaning.
        let file: ConfigFile = serde_yaml::from_str(
            "resources:\n  cpu: {defaultRequest: 5m, defaultLimit: 5m, maxLimit: '16'}\n",
        )
        .unwrap();
        let c = Config::build(file, Overrides::default()).unwrap();
        let cpu = c.resource("cpu").unwrap();
        assert_eq!(
            (cpu.min_limit.as_str(), cpu.max_pod_limit.as_str()),
            ("5m", "32")
        );
        // Flags win over the file.
        let flags = Overrides {
            min_limits: vec![("memory".into(), "64Mi".into())],
            max_pod_limits: vec![("memory".into(), "32Gi".into())],
            ..Default::default()
        };
        let c = Config::build(ConfigFile::default(), flags).unwrap();
        let mem = c.resource("memory").unwrap();
        assert_eq!(
            (mem.min_limit.as_str(), mem.max_pod_limit.as_str()),
            ("64Mi", "32Gi")
        );
        // What to_file prints builds the same configuration.
        assert_eq!(Config::build(c.to_file(), Overrides::default()).unwrap(), c);
    }

    #[test]
    fn resource_flag_syntax() {
        assert_eq!(
            parse_resource_flag("cpu=2").unwrap(),
            ("cpu".into(), "2".into())
        );
        assert!(parse_resource_flag("cpu").is_err());
    }
}
