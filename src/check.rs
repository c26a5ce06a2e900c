//! `sandgate check`: offline judgement of manifests with the webhook's own decision code.
//! Each object is turned into the AdmissionRequest a `kubectl create` would send
//! (operation CREATE) and judged exactly as the webhook would judge it.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::admission::review::{GroupVersionKind, GroupVersionResource};
use crate::admission::{self, AdmissionRequest, Decision, Operation, Violation, Webhook};
use crate::cli::{CheckArgs, OutputFormat};
use crate::config::Config;
use crate::labels;
use crate::policy::PolicySet;

/// One parsed document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub object: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Deny,
    Skip,
    Error,
}

/// The judgement of one object.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub source: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub objects: usize,
    pub passed: usize,
    pub denied: usize,
    pub skipped: usize,
    pub errors: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub results: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    /// 0 all passed, 1 something denied, 2 an input error.
    pub fn exit_code(&self) -> u8 {
        if self.summary.errors > 0 {
            2
        } else if self.summary.denied > 0 {
            1
        } else {
            0
        }
    }

    fn push(&mut self, f: Finding) {
        self.summary.objects += 1;
        match f.verdict {
            Verdict::Pass => self.summary.passed += 1,
            Verdict::Deny => self.summary.denied += 1,
            Verdict::Skip => self.summary.skipped += 1,
            Verdict::Error => self.summary.errors += 1,
        }
        self.results.push(f);
    }
}

/// Which pods count as sandbox pods offline.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub all: bool,
    pub enforced_namespaces: BTreeSet<String>,
}

/// Runs the command; returns the exit code.
pub fn run(args: &CheckArgs) -> u8 {
    let cfg = match args.config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut report = Report::default();
    let mut docs = Vec::new();
    for path in &args.paths {
        match load(path) {
            Ok(mut d) => docs.append(&mut d),
            Err(e) => report.push(Finding {
                source: path.display().to_string(),
                kind: String::new(),
                namespace: None,
                name: String::new(),
                verdict: Verdict::Error,
                violations: vec![],
                warnings: vec![],
                note: Some(e),
            }),
        }
    }
    let scope = Scope {
        all: args.all,
        enforced_namespaces: args.enforce_namespace.iter().cloned().collect(),
    };
    let policies = match args.policy.dir() {
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
        Ok(None) => PolicySet::empty(),
        Ok(Some(dir)) => match PolicySet::load_dir(&dir, args.policy.deadline()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: policies in {}: {e}", dir.display());
                return 2;
            }
        },
    };
    let judged = judge_all(&docs, &cfg, &scope, &policies);
    for f in judged.results {
        report.push(f);
    }
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return 2;
            }
        },
        OutputFormat::Text => print!("{}", render_text(&report)),
    }
    report.exit_code()
}

/// Reads a file, a directory (recursively) or '-' (stdin) into documents.
pub fn load(path: &Path) -> Result<Vec<Document>, String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return parse_documents("<stdin>", &text);
    }
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files)
            .map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        files.sort();
        let mut docs = Vec::new();
        for f in files {
            docs.append(&mut load_file(&f)?);
        }
        Ok(docs)
    } else {
        load_file(path)
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn load_file(path: &Path) -> Result<Vec<Document>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_documents(&path.display().to_string(), &text)
}

/// Splits multi-document YAML (JSON is YAML too) into objects, expanding `kind: List`.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, String> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize_from(de)
            .map_err(|e| format!("{source}: document {}: not valid YAML: {e}", i + 1))?;
        if value.is_null() {
            continue; // empty document between separators
        }
        let value: Value = serde_json::to_value(value)
            .map_err(|e| format!("{source}: document {}: cannot be read as JSON: {e}", i + 1))?;
        let doc_source = format!("{source}#{}", i + 1);
        if !value.is_object() {
            return Err(format!("{doc_source}: not a Kubernetes object"));
        }
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            for (j, item) in value
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                out.push(Document {
                    source: format!("{doc_source}.items[{j}]"),
                    object: item.clone(),
                });
            }
        } else {
            out.push(Document {
                source: doc_source,
                object: value,
            });
        }
    }
    Ok(out)
}

trait FromDeserializer: Sized {
    fn deserialize_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl FromDeserializer for serde_yaml::Value {
    fn deserialize_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// Judges every document; Namespace objects labelled enforce widen the scope.
pub fn judge_all(docs: &[Document], cfg: &Config, scope: &Scope, policies: &PolicySet) -> Report {
    let mut scope = scope.clone();
    for d in docs {
        if d.object.get("kind").and_then(Value::as_str) == Some("Namespace")
            && d.object
                .pointer(&format!(
                    "/metadata/labels/{}",
                    labels::ENFORCE.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                == Some("true")
            && let Some(name) = d.object.pointer("/metadata/name").and_then(Value::as_str)
        {
            scope.enforced_namespaces.insert(name.to_string());
        }
    }
    let mut report = Report::default();
    for d in docs {
        report.push(judge(d, cfg, &scope, policies));
    }
    report
}

/// Where a workload keeps its pod template.
fn pod_template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Judges one object.
pub fn judge(doc: &Document, cfg: &Config, scope: &Scope, policies: &PolicySet) -> Finding {
    let obj = &doc.object;
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let name = obj
        .pointer("/metadata/name")
        .or_else(|| obj.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let written_namespace = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    // What `kubectl apply` would use for a namespaced object without one.
    let namespace = written_namespace.unwrap_or("default").to_string();
    let mut finding = Finding {
        source: doc.source.clone(),
        kind: kind.clone(),
        namespace: written_namespace.map(str::to_string),
        name: name.clone(),
        verdict: Verdict::Skip,
        violations: vec![],
        warnings: vec![],
        note: None,
    };
    let in_scope = |labels_ptr: &str| {
        scope.all
            || scope.enforced_namespaces.contains(&namespace)
            || obj
                .pointer(labels_ptr)
                .and_then(Value::as_object)
                .is_some_and(|l| {
                    l.contains_key(labels::SANDBOX) || l.contains_key(labels::TEMPLATE)
                })
    };

    let (webhook, group, resource, object, prefix) = match kind.as_str() {
        "" => {
            finding.verdict = Verdict::Error;
            finding.note = Some("document has no kind".into());
            return finding;
        }
        "SandboxTemplate" if api_version.starts_with(crate::crd::GROUP) => (
            Webhook::Validate,
            crate::crd::GROUP,
            "sandboxtemplates",
            obj.clone(),
            String::new(),
        ),
        "Pod" => {
            if !in_scope("/metadata/labels") {
                finding.note = Some(not_sandbox_note());
                return finding;
            }
            (Webhook::Mutate, "", "pods", obj.clone(), String::new())
        }
        k => match pod_template_pointer(k) {
            Some(ptr) => {
                if !in_scope(&format!("{ptr}/metadata/labels")) {
                    finding.note = Some(not_sandbox_note());
                    return finding;
                }
                let template = obj.pointer(ptr).cloned().unwrap_or(Value::Null);
                let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
                pod["metadata"] = template
                    .get("metadata")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                pod["metadata"]["namespace"] = json!(namespace);
                pod["spec"] = template.get("spec").cloned().unwrap_or(Value::Null);
                let prefix = ptr.trim_start_matches('/').replace('/', ".");
                (Webhook::Mutate, "", "pods", pod, prefix)
            }
            None if policies.judges(&kind.to_ascii_lowercase()) => {
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                (Webhook::Validate, group, "", obj.clone(), String::new())
            }
            None => {
                finding.note = Some("not judged by sandgate".into());
                return finding;
            }
        },
    };
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let resource = if resource.is_empty() {
        plural.as_str()
    } else {
        resource
    };

    let req = AdmissionRequest {
        uid: "offline".into(),
        kind: GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: if resource == "pods" {
                "Pod".into()
            } else {
                kind.clone()
            },
        },
        resource: GroupVersionResource {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
        },
        sub_resource: None,
        name: Some(name),
        namespace: Some(namespace),
        operation: Operation::Create,
        user_info: json!({"username": "sandgate-check"}),
        object: Some(object),
        old_object: None,
        dry_run: Some(true),
        options: None,
    };
    finding.namespace = req.namespace.clone();
    let decision = judge_request(webhook, req.clone(), cfg, policies);
    finding.warnings = decision.warnings.clone();
    if decision.allowed {
        finding.verdict = Verdict::Pass;
        if cfg
            .exclude_namespaces
            .contains(req.namespace.as_deref().unwrap_or(""))
        {
            finding.verdict = Verdict::Skip;
            finding.note = Some("namespace is excluded from sandgate".into());
        }
    } else {
        finding.verdict = Verdict::Deny;
        finding.violations = decision
            .violations
            .into_iter()
            .map(|mut v| {
                if !prefix.is_empty() && v.rule != admission::POLICY_RULE {
                    v.field = format!("{prefix}.{}", v.field);
                }
                v
            })
            .collect();
    }
    finding
}

/// What the apiserver would conclude: `/mutate` (for pods), then `/validate` with the
/// policies on the object as it would be stored.
fn judge_request(
    webhook: Webhook,
    mut req: AdmissionRequest,
    cfg: &Config,
    policies: &PolicySet,
) -> Decision {
    let first = admission::decide(webhook, &req, cfg);
    if !first.allowed || webhook == Webhook::Validate {
        return if first.allowed {
            admission::judge(Webhook::Validate, &req, cfg, policies)
        } else {
            first
        };
    }
    if let (Some(patch), Some(object)) = (first.patch.as_ref(), req.object.as_mut())
        && let Err(e) = json_patch::patch(object, &patch.0)
    {
        return Decision::deny(
            first.subject,
            vec![Violation::new(
                "internal",
                "object",
                format!("sandgate's own patch does not apply: {e}"),
            )],
        );
    }
    let mut second = admission::judge(Webhook::Validate, &req, cfg, policies);
    let mut warnings = first.warnings;
    warnings.append(&mut second.warnings);
    second.warnings = warnings;
    second
}

fn not_sandbox_note() -> String {
    format!(
        "not a sandbox pod (no {} or {} label, namespace not enforced; use --all or --enforce-namespace)",
        labels::SANDBOX,
        labels::TEMPLATE
    )
}

/// The human-readable report.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.results {
        let tag = match f.verdict {
            Verdict::Pass => "PASS ",
            Verdict::Deny => "DENY ",
            Verdict::Skip => "SKIP ",
            Verdict::Error => "ERROR",
        };
        let object = match (&f.namespace, f.kind.is_empty()) {
            (_, true) => String::new(),
            (Some(ns), false) => format!("{} {ns}/{}", f.kind, f.name),
            (None, false) => format!("{} {}", f.kind, f.name),
        };
        out.push_str(&format!("{tag} {object}  ({})\n", f.source));
        for v in &f.violations {
            out.push_str(&format!("      [{}] {}: {}\n", v.rule, v.field, v.message));
        }
        for w in &f.warnings {
            out.push_str(&format!("      warning: {w}\n"));
        }
        if let Some(note) = &f.note {
            out.push_str(&format!("      {note}\n"));
        }
    }
    let s = &report.summary;
    out.push_str(&format!(
        "{} objects: {} passed, {} denied, {} skipped, {} errors\n",
        s.objects, s.passed, s.denied, s.skipped, s.errors
    ));
    out
}
