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

/// How one policy's rules run: compiled to regorus' bytecode VM (several times faster
/// than its tree interpreter for the shipped policies: the article's template, 230 µs →
/// 60 µs for its six policies), or on the interpreter when a rule uses what the
/// compiler does not take (`with`, some builtins); both give the same answers.
#[derive(Clone)]
enum Compiled {
    Vm(Vec<(&'static str, Arc<regorus::rvm::Program>)>),
    Interpreter,
}

/// A loaded, prepared, immutable set of policies.
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    /// The data documents (settings), for the VM.
    data: regorus::Value,
    policies: Vec<Policy>,
    /// Per policy (same index), how its rules run.
    compiled: Vec<Compiled>,
    by_kind: BTreeMap<String, Vec<usize>>,
    /// Per kind, recent evaluation times, so callers can tell cheap evaluations from
    /// slow ones. Shared by clones of the set.
    cost: Arc<BTreeMap<String, Recent>>,
    /// Whether evaluations are recorded in `cost` (not for large requests, whose cost
    /// says nothing of an ordinary one's: [`PolicySet::unrecorded`]).
    record: bool,
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
            data: regorus::Value::new_object(),
            policies: Vec::new(),
            compiled: Vec::new(),
            by_kind: BTreeMap::new(),
            cost: Arc::default(),
            record: true,
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
        let unsafe_for_vm = may_conflict(&mut engine);
        let compiled = policies
            .iter()
            .map(|p| {
                let conflicts = unsafe_for_vm.iter().any(|pkg| {
                    pkg == &p.package || pkg.starts_with(&format!("data.{}.{}", contract::POLICY_PACKAGE_ROOT, contract::POLICY_LIBRARY_PACKAGE))
                });
                if conflicts {
                    tracing::info!(policy = %p.name, "policy runs on the interpreter: a rule of its package or of the library has several complete definitions");
                    Compiled::Interpreter
                } else {
                    compile(&mut engine, p)
                }
            })
            .collect();
        let data = engine.get_data();
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
            data,
            policies,
            compiled,
            by_kind,
            cost,
            record: true,
            source: None,
            deadline,
        })
    }

    /// The same set, whose evaluations leave [`PolicySet::typical_cost`] alone: for
    /// requests judged apart because of their size, so that a flood of hostile ones
    /// does not make every ordinary request of their kind look slow.
    pub fn unrecorded(&self) -> Self {
        Self {
            record: false,
            ..self.clone()
        }
    }

    /// The policies that run on regorus' interpreter rather than its VM (their rules do
    /// not compile for it, or may conflict): slower, with the same answers.
    pub fn interpreted(&self) -> Vec<&str> {
        self.policies
            .iter()
            .zip(&self.compiled)
            .filter(|(_, c)| matches!(c, Compiled::Interpreter))
            .map(|(p, _)| p.name.as_str())
            .collect()
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
        if let Some(recent) = self.cost.get(kind).filter(|_| self.record) {
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
        // The interpreter is cloned only if a policy of the kind needs it.
        let mut engine: Option<regorus::Engine> = None;
        for &i in indices {
            let p = &self.policies[i];
            let start = Instant::now();
            let mut denied = false;
            for (rule, wanted) in [("deny", p.has_deny), ("warn", p.has_warn)] {
                if !wanted {
                    continue;
                }
                let result = match &self.compiled[i] {
                    Compiled::Vm(programs) => match programs.iter().find(|(r, _)| *r == rule) {
                        Some((_, program)) => self.run_vm(program, &input),
                        None => Ok(regorus::Value::Undefined),
                    },
                    Compiled::Interpreter => {
                        let engine = engine.get_or_insert_with(|| {
                            let mut e = self.engine.clone();
                            e.set_input(input.clone());
                            e
                        });
                        engine.eval_rule(format!("{}.{rule}", p.package))
                    }
                };
                match result {
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

impl PolicySet {
    /// One compiled rule on a fresh VM (cheap to make: the program is shared), under
    /// the set's deadline.
    fn run_vm(
        &self,
        program: &Arc<regorus::rvm::Program>,
        input: &regorus::Value,
    ) -> anyhow::Result<regorus::Value> {
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(program.clone());
        // The deadline bounds the run, not a count of instructions (the VM's default
        // of 25,000 would refuse an ordinary template with a few dozen containers).
        vm.set_max_instructions(usize::MAX);
        vm.set_execution_timer_config(Some(timer(self.deadline)));
        vm.set_data(self.data.clone())?;
        vm.set_input(input.clone());
        Ok(vm.execute()?)
    }
}

/// The packages with a rule that may produce conflicting values: one with several
/// definitions that each give a value (not `contains`, not `default`), or several
/// bodies that are not `else` branches. OPA and regorus' interpreter stop with an error
/// when two give different values, which denies; the VM takes the first, which would
/// let a policy author's mistake pass. Their policies keep to the interpreter.
fn may_conflict(engine: &mut regorus::Engine) -> Vec<String> {
    use regorus::unstable::{Rule, RuleHead};
    let mut out = Vec::new();
    for module in engine.get_modules() {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut risky = false;
        for rule in &module.policy {
            let Rule::Spec { head, bodies, .. } = rule.as_ref() else {
                continue;
            };
            let (refr, valued) = match head {
                RuleHead::Compr { refr, assign, .. } => (refr, assign.is_some()),
                RuleHead::Func { refr, assign, .. } => (refr, assign.is_some()),
                RuleHead::Set { .. } => continue,
            };
            risky |= bodies.iter().skip(1).any(|b| !b.is_else);
            if valued {
                *seen.entry(refr.span().text().to_string()).or_default() += 1;
            }
        }
        if risky || seen.values().any(|&n| n > 1) {
            out.push(format!("data.{}", module.package.refr.span().text()));
        }
    }
    out
}

/// A policy's rules compiled for the VM, or the interpreter when any of them does not
/// compile (logged: the policy still runs, only slower).
fn compile(engine: &mut regorus::Engine, p: &Policy) -> Compiled {
    let mut programs = Vec::new();
    for (rule, wanted) in [("deny", p.has_deny), ("warn", p.has_warn)] {
        if !wanted {
            continue;
        }
        let path = format!("{}.{rule}", p.package);
        let program = engine
            .compile_with_entrypoint(&regorus::Rc::from(path.as_str()))
            .map_err(|e| e.to_string())
            .and_then(|c| {
                regorus::languages::rego::compiler::Compiler::compile_from_policy(
                    &c,
                    &[path.as_str()],
                )
                .map_err(|e| e.to_string())
            });
        match program {
            Ok(program) => programs.push((rule, program)),
            Err(e) => {
                tracing::info!(policy = %p.name, reason = %e, "policy runs on the interpreter");
                return Compiled::Interpreter;
            }
        }
    }
    Compiled::Vm(programs)
}

/// Whether an evaluation error is regorus' execution timer firing (its typed
/// `LimitError`, or the VM's error for it, wherever in the error's chain it sits).
fn is_time_limit(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<regorus::LimitError>(),
            Some(regorus::LimitError::TimeLimitExceeded { .. })
        ) || matches!(
            c.downcast_ref::<regorus::rvm::vm::VmError>(),
            Some(regorus::rvm::vm::VmError::TimeLimitExceeded { .. })
        )
    })
}

fn timer(deadline: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit: deadline,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    }
}

fn new_engine(deadline: Duration) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    engine.set_strict_builtin_errors(false);
    engine.set_execution_timer_config(timer(deadline));
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
