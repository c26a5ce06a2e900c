//! The Rego policy engine (DESIGN.md §5), on regorus. A [`PolicySet`] is loaded and
//! prepared once from a directory; each evaluation clones the prepared engine (cheap:
//! modules and data are shared), so evaluations run in parallel without locks.
//!
//! Contract: packages `sandgate.<kind>.<name>` (`<kind>` the lower-case resource kind;
//! upstream agent-sandbox kinds `sandgate.agents.<kind>.<name>`, see
//! [`crate::resources::policy_key`]),
//! rules `deny contains msg` and `warn contains msg` where `msg` is a string or an
//! object with a `msg` field, `input.review` the AdmissionRequest. Packages under
//! `sandgate.lib` are shared helpers and never evaluated on their own. Data files
//! (`*.json`, `*.yaml`) beside the policies are merged into `data`.

pub mod store;
pub mod testing;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::Value as Json;

use crate::contract;

/// Default deadline of one policy evaluation.
pub const DEFAULT_DEADLINE: Duration = crate::contract::DEFAULT_POLICY_DEADLINE;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Compile(String),
    #[error(
        "{file}: package {package} is not sandgate.<kind>.<name>, sandgate.agents.<kind>.<name> (upstream agent-sandbox kinds) nor a sandgate.lib helper"
    )]
    Package { file: String, package: String },
    #[error("{file}: data file is not a mapping of keys to values: {reason}")]
    Data { file: String, reason: String },
    #[error("policies conflict: {0}")]
    Prepare(String),
}

/// One policy: a package judging one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `<kind>.<name>`, as shown to users.
    pub name: String,
    pub kind: String,
    /// `data.sandgate.<kind>.<name>`
    pub package: String,
    pub file: String,
    has_deny: bool,
    has_warn: bool,
}

/// What one policy said.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    pub policy: String,
    pub msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Json>,
}

/// How one policy ran on one request, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    pub policy: String,
    /// It denied, failed or ran out of time.
    pub denied: bool,
    pub took: Duration,
}

/// Everything the policies of a kind said about one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub denials: Vec<Message>,
    pub warnings: Vec<Message>,
    /// Policies that failed or ran out of time (fail closed: they deny).
    pub errors: Vec<Message>,
    pub runs: Vec<PolicyRun>,
}

/// A loaded, prepared, immutable set of policies.
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    policies: Vec<Policy>,
    by_kind: BTreeMap<String, Vec<usize>>,
    /// Per kind, recent evaluation times, so callers can tell cheap evaluations from
    /// slow ones. Shared by clones of the set.
    cost: Arc<BTreeMap<String, Recent>>,
    pub source: Option<PathBuf>,
    pub deadline: Duration,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("policies", &self.policies)
            .field("source", &self.source)
            .finish()
    }
}

/// The last few evaluation times of a kind (ns; 0: not yet run). Their median is robust
/// to the odd evaluation that was preempted on a busy machine, which a moving average
/// is not: one 5 ms stall would make a 50 µs policy look slow for a dozen requests.
#[derive(Debug, Default)]
struct Recent {
    next: AtomicUsize,
    samples: [AtomicU64; 8],
}

impl Recent {
    fn record(&self, took: Duration) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.samples.len();
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.samples[i].store(ns, Ordering::Relaxed);
    }

    fn median(&self) -> Duration {
        let mut seen: Vec<u64> = self
            .samples
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&ns| ns > 0)
            .collect();
        seen.sort_unstable();
        Duration::from_nanos(seen.get(seen.len() / 2).copied().unwrap_or(0))
    }
}

/// Files of a policy directory, sorted, split by role.
#[derive(Debug, Default)]
pub struct Files {
    pub policies: Vec<PathBuf>,
    pub tests: Vec<PathBuf>,
    pub data: Vec<PathBuf>,
}

/// Lists a policy directory recursively. Hidden entries (editor swap files, Kubernetes
/// ConfigMap `..data` links) are skipped; `README`s and other files are ignored.
pub fn list(dir: &Path) -> Result<Files, PolicyError> {
    fn walk(dir: &Path, out: &mut Files) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if name.ends_with("_test.rego") {
                out.tests.push(path);
            } else if name.ends_with(".rego") {
                out.policies.push(path);
            } else if name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml") {
                out.data.push(path);
            }
        }
        Ok(())
    }
    let mut files = Files::default();
    walk(dir, &mut files).map_err(|e| PolicyError::Read {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(files)
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads a data file into a JSON object.
pub fn read_data(path: &Path) -> Result<Json, PolicyError> {
    let text = read(path)?;
    let file = path.display().to_string();
    let value: Json = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| PolicyError::Data {
            file: file.clone(),
            reason: e.to_string(),
        })?
    } else {
        let y: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| PolicyError::Data {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        serde_json::to_value(y).map_err(|e| PolicyError::Data {
            file: file.clone(),
            reason: e.to_string(),
        })?
    };
    match value {
        Json::Object(_) => Ok(value),
        Json::Null => Ok(Json::Object(Default::default())),
        _ => Err(PolicyError::Data {
            file,
            reason: "the top level must be a mapping".into(),
        }),
    }
}

impl PolicySet {
    /// No policies at all: every evaluation is empty.
    pub fn empty() -> Self {
        Self {
            engine: regorus::Engine::new(),
            policies: Vec::new(),
            by_kind: BTreeMap::new(),
            cost: Arc::default(),
            source: None,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// Loads every policy and data file under `dir` (tests excluded).
    pub fn load_dir(dir: &Path, deadline: Duration) -> Result<Self, PolicyError> {
        let files = list(dir)?;
        let sources = files
            .policies
            .iter()
            .map(|p| Ok((p.display().to_string(), read(p)?)))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        let data = files
            .data
            .iter()
            .map(|p| read_data(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut set = Self::from_sources(&sources, &data, deadline)?;
        set.source = Some(dir.to_path_buf());
        Ok(set)
    }

    /// Builds a set from in-memory modules `(file name, rego)` and data documents.
    pub fn from_sources(
        sources: &[(String, String)],
        data: &[Json],
        deadline: Duration,
    ) -> Result<Self, PolicyError> {
        let mut engine = new_engine(deadline);
        for d in data {
            engine
                .add_data(regorus::Value::from(d.clone()))
                .map_err(|e| PolicyError::Prepare(format!("data: {e}")))?;
        }
        let mut policies = Vec::new();
        for (file, rego) in sources {
            let package = engine
                .add_policy(file.clone(), rego.clone())
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
            let parts: Vec<&str> = package.split('.').collect();
            match parts.as_slice() {
                ["data", root, lib, ..]
                    if *root == contract::POLICY_PACKAGE_ROOT
                        && *lib == contract::POLICY_LIBRARY_PACKAGE =>
                {
                    continue;
                }
                ["data", root, segment, kind, name]
                    if *root == contract::POLICY_PACKAGE_ROOT
                        && *segment == contract::upstream::POLICY_SEGMENT =>
                {
                    let has = |rule: &str| {
                        engine
                            .has_declared_rule_rooted_at(file, rule)
                            .unwrap_or(false)
                    };
                    policies.push(Policy {
                        name: format!("{segment}.{kind}.{name}"),
                        kind: format!("{segment}.{kind}"),
                        package: package.clone(),
                        file: file.clone(),
                        has_deny: has("deny"),
                        has_warn: has("warn"),
                    });
                }
                ["data", root, kind, name]
                    if *root == contract::POLICY_PACKAGE_ROOT
                        && *kind != contract::upstream::POLICY_SEGMENT =>
                {
                    let has = |rule: &str| {
                        engine
                            .has_declared_rule_rooted_at(file, rule)
                            .unwrap_or(false)
                    };
                    policies.push(Policy {
                        name: format!("{kind}.{name}"),
                        kind: kind.to_string(),
                        package: package.clone(),
                        file: file.clone(),
                        has_deny: has("deny"),
                        has_warn: has("warn"),
                    });
                }
                _ => {
                    return Err(PolicyError::Package {
                        file: file.clone(),
                        package: package.trim_start_matches("data.").to_string(),
                    });
                }
            }
        }
        // Analyse and prepare now, so conflicts and unknown functions surface at load
        // time rather than on the first request; clones share the prepared state.
        engine
            .eval_query("true".to_string(), false)
            .map_err(|e| PolicyError::Prepare(e.to_string()))?;
        let mut by_kind: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, p) in policies.iter().enumerate() {
            by_kind.entry(p.kind.clone()).or_default().push(i);
        }
        let cost = Arc::new(
            by_kind
                .keys()
                .map(|k| (k.clone(), Recent::default()))
                .collect(),
        );
        Ok(Self {
            engine,
            policies,
            by_kind,
            cost,
            source: None,
            deadline,
        })
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Whether any policy judges `kind` (lower-case).
    pub fn judges(&self, kind: &str) -> bool {
        self.by_kind.contains_key(kind)
    }

    /// Typical recent evaluation time of `kind`'s policies: the median of the last 8
    /// (zero before the first).
    pub fn typical_cost(&self, kind: &str) -> Duration {
        self.cost.get(kind).map_or(Duration::ZERO, Recent::median)
    }

    /// Runs every policy of `kind` with `input.review = review`.
    pub fn evaluate(&self, kind: &str, review: &Json) -> Verdict {
        let start = Instant::now();
        let out = self.evaluate_uncosted(kind, review);
        if let Some(recent) = self.cost.get(kind) {
            recent.record(start.elapsed());
        }
        out
    }

    fn evaluate_uncosted(&self, kind: &str, review: &Json) -> Verdict {
        let mut out = Verdict::default();
        let Some(indices) = self.by_kind.get(kind) else {
            return out;
        };
        // Converted by reference (no copy of the request), and checked: regorus'
        // `From<Json>` turns a failed conversion into `undefined`, which would let every
        // policy see no input at all.
        let input = <regorus::Value as serde::Deserialize>::deserialize(review).and_then(|r| {
            let mut input = regorus::Value::new_object();
            input
                .as_object_mut()
                .map_err(serde::de::Error::custom)?
                .insert(regorus::Value::from("review"), r);
            Ok(input)
        });
        let input = match input {
            Ok(i) => i,
            Err(e) => {
                out.errors.push(Message {
                    policy: format!("{kind} policies"),
                    msg: format!("cannot convert the request for policy evaluation: {e}"),
                    details: None,
                });
                return out;
            }
        };
        let mut engine = self.engine.clone();
        engine.set_input(input);
        for &i in indices {
            let p = &self.policies[i];
            let start = Instant::now();
            let mut denied = false;
            for (rule, wanted) in [("deny", p.has_deny), ("warn", p.has_warn)] {
                if !wanted {
                    continue;
                }
                match engine.eval_rule(format!("{}.{rule}", p.package)) {
                    Ok(v) => {
                        let msgs = messages(&p.name, &v);
                        if rule == "deny" {
                            denied |= !msgs.is_empty();
                            out.denials.extend(msgs);
                        } else {
                            out.warnings.extend(msgs);
                        }
                    }
                    Err(e) => {
                        denied = true;
                        let msg = if is_time_limit(&e) {
                            format!(
                                "policy evaluation exceeded its {:?} deadline",
                                self.deadline
                            )
                        } else {
                            format!("policy evaluation failed: {e}")
                        };
                        out.errors.push(Message {
                            policy: p.name.clone(),
                            msg,
                            details: None,
                        });
                        break;
                    }
                }
            }
            out.runs.push(PolicyRun {
                policy: p.name.clone(),
                denied,
                took: start.elapsed(),
            });
        }
        out
    }
}

/// Whether an evaluation error is regorus' execution timer firing (its typed
/// `LimitError`, wherever in the error's chain it sits).
fn is_time_limit(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<regorus::LimitError>(),
            Some(regorus::LimitError::TimeLimitExceeded { .. })
        )
    })
}

fn new_engine(deadline: Duration) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    engine.set_strict_builtin_errors(false);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: deadline,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });
    engine
}

/// The messages of a `deny`/`warn` set: strings, or objects with a `msg` field.
fn messages(policy: &str, v: &regorus::Value) -> Vec<Message> {
    if *v == regorus::Value::Undefined {
        return Vec::new();
    }
    let json = match serde_json::to_value(v) {
        Ok(j) => j,
        Err(e) => {
            return vec![Message {
                policy: policy.to_string(),
                msg: format!("unreadable policy result: {e}"),
                details: None,
            }];
        }
    };
    let items = match json {
        Json::Array(items) => items,
        Json::Null => Vec::new(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|item| match item {
            Json::String(s) => Message {
                policy: policy.to_string(),
                msg: s,
                details: None,
            },
            Json::Object(mut m) => {
                let msg = match m.remove("msg") {
                    Some(Json::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => Json::Object(m.clone()).to_string(),
                };
                Message {
                    policy: policy.to_string(),
                    msg,
                    details: if m.is_empty() {
                        None
                    } else {
                        Some(Json::Object(m))
                    },
                }
            }
            other => Message {
                policy: policy.to_string(),
                msg: other.to_string(),
                details: None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(file: &str, rego: &str) -> Result<PolicySet, PolicyError> {
        PolicySet::from_sources(&[(file.into(), rego.into())], &[], DEFAULT_DEADLINE)
    }

    #[test]
    fn upstream_kinds_have_their_own_packages() {
        let deny = "import rego.v1\ndeny contains \"no\" if { true }\n";
        let set = one(
            "a.rego",
            &format!("package sandgate.agents.sandboxtemplate.x\n{deny}"),
        )
        .unwrap();
        assert!(set.judges("agents.sandboxtemplate"));
        assert!(!set.judges("sandboxtemplate"));
        assert_eq!(set.policies()[0].name, "agents.sandboxtemplate.x");
        let review = serde_json::json!({"operation": "CREATE"});
        assert_eq!(
            set.evaluate("agents.sandboxtemplate", &review)
                .denials
                .len(),
            1
        );
        assert!(set.evaluate("sandboxtemplate", &review).denials.is_empty());
        // `agents` is not a kind of its own.
        let e = one("b.rego", &format!("package sandgate.agents.x\n{deny}")).unwrap_err();
        assert!(matches!(e, PolicyError::Package { .. }), "{e}");
    }

    #[test]
    fn one_stalled_evaluation_does_not_make_a_kind_look_slow() {
        let r = Recent::default();
        assert_eq!(r.median(), Duration::ZERO, "nothing measured yet");
        for _ in 0..7 {
            r.record(Duration::from_micros(50));
        }
        r.record(Duration::from_millis(5));
        assert_eq!(r.median(), Duration::from_micros(50));
        // A kind that has become slow is seen as slow once most recent runs are.
        for _ in 0..5 {
            r.record(Duration::from_millis(5));
        }
        assert_eq!(r.median(), Duration::from_millis(5));
    }
}
