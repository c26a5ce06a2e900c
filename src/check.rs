//! `sandgate check`: offline judgement of manifests through the admission pipeline.
//! Each object is turned into the AdmissionRequest a `kubectl create` would send
//! (operation CREATE) and judged as the apiserver and sandgate's webhooks would judge
//! it; the command line renders the [`Report`].

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize as _, Serialize};
use serde_json::{Value, json};

use crate::admission::review::{GroupVersionKind, GroupVersionResource};
use crate::admission::{self, AdmissionRequest, Operation, Violation, Webhook};
use crate::config::Config;
use crate::contract::{self, label};
use crate::policy::PolicySet;
use crate::resources::{self, Kind};

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

/// Which pods count as sandbox pods offline, and what else the input holds.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub all: bool,
    pub enforced_namespaces: BTreeSet<String>,
    /// Upstream agent-sandbox objects among the documents: the webhook's lookups of
    /// templates and warm pools are answered from them where they can be.
    pub upstream: Vec<(Kind, Value)>,
}

/// Judges every manifest under `paths`; a path that cannot be read is an error finding.
pub fn check_paths(paths: &[PathBuf], cfg: &Config, scope: &Scope, policies: &PolicySet) -> Report {
    let mut report = Report::default();
    let mut docs = Vec::new();
    for path in paths {
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
    for f in check_documents(&docs, cfg, scope, policies).results {
        report.push(f);
    }
    report
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
        let value = serde_yaml::Value::deserialize(de)
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

/// Judges every document; Namespace objects labelled enforce widen the scope.
pub fn check_documents(
    docs: &[Document],
    cfg: &Config,
    scope: &Scope,
    policies: &PolicySet,
) -> Report {
    let mut scope = scope.clone();
    for d in docs {
        let api_version = d
            .object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = d.object.get("kind").and_then(Value::as_str).unwrap_or("");
        if Kind::of_manifest(api_version, kind) == Some(Kind::Namespace)
            && let Some(meta) = d.object.get("metadata")
            && let Some(name) = meta.get("name").and_then(Value::as_str)
            && meta
                .get("labels")
                .and_then(|l| l.get(label::ENFORCE))
                .and_then(Value::as_str)
                == Some(label::ENFORCE_ON)
        {
            scope.enforced_namespaces.insert(name.to_string());
        }
        if let Some(k) = Kind::of_manifest(api_version, kind).filter(|k| k.is_upstream()) {
            scope.upstream.push((k, d.object.clone()));
        }
    }
    let mut report = Report::default();
    for d in docs {
        report.push(check_document(d, cfg, &scope, policies));
    }
    report
}

/// Judges one object.
pub fn check_document(
    doc: &Document,
    cfg: &Config,
    scope: &Scope,
    policies: &PolicySet,
) -> Finding {
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
                .is_some_and(|l| contract::has_sandbox_label(|k| l.contains_key(k), cfg.upstream))
    };

    // (the webhook the object first meets, its group and resource, the object judged)
    // Pods and workloads are recognised by kind alone, whatever API version wrote them.
    let known = Kind::of_manifest(api_version, &kind).or_else(|| {
        Kind::of_kind(&kind).filter(|k| *k == Kind::Pod || k.pod_template_pointer().is_some())
    });
    let (webhook, group, resource, object) = match known {
        _ if kind.is_empty() => {
            finding.verdict = Verdict::Error;
            finding.note = Some("document has no kind".into());
            return finding;
        }
        Some(k) if k.is_upstream() && !cfg.upstream => {
            finding.note = Some("upstream agent-sandbox support is off".into());
            return finding;
        }
        // Upstream's claims and warm pools: their own rules, then their policies.
        Some(k) if k.is_upstream() && k.pod_template_pointer().is_none() => (
            Webhook::Validate,
            k.group().to_string(),
            k.resource().into(),
            obj.clone(),
        ),
        Some(Kind::SandboxTemplate) => (
            Webhook::Validate,
            Kind::SandboxTemplate.group().to_string(),
            Kind::SandboxTemplate.resource().into(),
            obj.clone(),
        ),
        Some(Kind::Pod) => {
            if !in_scope("/metadata/labels") {
                finding.note = Some(not_sandbox_note());
                return finding;
            }
            (
                Webhook::Mutate,
                String::new(),
                Kind::Pod.resource().into(),
                obj.clone(),
            )
        }
        _ => match known.filter(|k| k.pod_template_pointer().is_some()) {
            Some(workload) => {
                let ptr = workload.pod_template_pointer().unwrap_or_default();
                let always = workload.makes_sandbox_pods() && cfg.upstream;
                if !always && !in_scope(&format!("{ptr}/metadata/labels")) {
                    finding.note = Some(not_sandbox_note());
                    return finding;
                }
                // Judged as the webhook judges it: as the pods it would make.
                (
                    Webhook::Validate,
                    workload.group().to_string(),
                    workload.resource().into(),
                    obj.clone(),
                )
            }
            None if resources::policy_key(resources::api_group(api_version), &kind)
                .is_some_and(|key| policies.judges(&key)) =>
            {
                (
                    Webhook::Validate,
                    resources::api_group(api_version).to_string(),
                    resources::guess_resource(&kind),
                    obj.clone(),
                )
            }
            None if contract::upstream::is_group(resources::api_group(api_version)) => {
                finding.note = Some(format!(
                    "{} objects are judged by sandgate.{}.* policies, and none is loaded",
                    resources::api_group(api_version),
                    contract::upstream::POLICY_SEGMENT
                ));
                return finding;
            }
            None => {
                finding.note = Some("not judged by sandgate".into());
                return finding;
            }
        },
    };

    let req = AdmissionRequest {
        uid: "offline".into(),
        kind: GroupVersionKind {
            group: group.clone(),
            version: "v1".into(),
            kind: kind.clone(),
        },
        resource: GroupVersionResource {
            group,
            version: "v1".into(),
            resource: resource.into_owned(),
        },
        sub_resource: None,
        name: Some(name),
        namespace: Some(namespace),
        operation: Operation::Create,
        user_info: json!({"username": contract::CHECK_USER}),
        object: Some(object),
        old_object: None,
        dry_run: Some(true),
        options: None,
    };
    finding.namespace = req.namespace.clone();
    let excluded = cfg
        .exclude_namespaces
        .contains(req.namespace.as_deref().unwrap_or(""));
    let decision = match webhook {
        Webhook::Mutate => admission::admit_as_apiserver(req, cfg, policies),
        Webhook::Validate => admission::admit(webhook, &req, cfg, policies),
    };
    finding.warnings = decision.warnings.clone();
    if decision.allowed {
        finding.verdict = Verdict::Pass;
        if excluded {
            finding.verdict = Verdict::Skip;
            finding.note = Some("namespace is excluded from sandgate".into());
        } else {
            let mut asked = Vec::new();
            for lookup in &decision.lookups {
                match answer_offline(lookup, &scope.upstream, cfg) {
                    Some(violations) if !violations.is_empty() => {
                        finding.verdict = Verdict::Deny;
                        finding.violations.extend(violations);
                    }
                    Some(_) => {}
                    None => asked.push(lookup.question()),
                }
            }
            if !asked.is_empty() {
                finding.note = Some(format!(
                    "the webhook also asks the cluster {}",
                    asked.join("; and ")
                ));
            }
        }
    } else {
        finding.verdict = Verdict::Deny;
        finding.violations = decision.violations;
    }
    finding
}

/// A lookup answered from the input's own upstream objects: `Some(violations)` when
/// they settle it, `None` when only the cluster can (a namespace's pools may be more
/// than the input holds, so a cap the input stays under is still asked).
fn answer_offline(
    lookup: &admission::Lookup,
    objects: &[(Kind, Value)],
    cfg: &Config,
) -> Option<Vec<Violation>> {
    use admission::pool_budget;
    use admission::upstream::claim;
    fn in_namespace(objects: &[(Kind, Value)], kind: Kind, ns: &str) -> Vec<Value> {
        objects
            .iter()
            .filter(|(k, o)| {
                *k == kind && o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            })
            .map(|(_, o)| o.clone())
            .collect()
    }
    let named = |kind: Kind, ns: &str, name: &str| {
        in_namespace(objects, kind, ns)
            .into_iter()
            .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
    };
    match lookup {
        admission::Lookup::ClaimEnv {
            namespace,
            source,
            env,
        } => {
            let template = match source {
                claim::TemplateSource::Template(t) => t.clone(),
                claim::TemplateSource::WarmPool(p) => {
                    claim::template_of_pool(&named(Kind::UpstreamSandboxWarmPool, namespace, p)?)?
                }
            };
            let found = named(Kind::UpstreamSandboxTemplate, namespace, &template)?;
            Some(claim::judge(&found, &template, env))
        }
        admission::Lookup::NamespaceWarmPools {
            namespace,
            pool,
            size,
            cap,
            upstream,
        } => {
            // Pools above the per-pool cap are refused themselves: not counted.
            let per_pool = u64::from(cfg.warm_pool_caps.per_pool);
            let pools: Vec<Value> = if *upstream {
                in_namespace(objects, Kind::UpstreamSandboxWarmPool, namespace)
                    .into_iter()
                    .filter(|p| {
                        p.pointer("/spec/replicas")
                            .and_then(Value::as_u64)
                            .is_some_and(|r| r <= per_pool)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let templates = in_namespace(objects, Kind::SandboxTemplate, namespace);
            pool_budget::namespace_violation(&templates, &pools, pool, *size, *cap).map(|v| vec![v])
        }
        _ => None,
    }
}

fn not_sandbox_note() -> String {
    format!(
        "not a sandbox pod (no {} or {} label, namespace not enforced; use --all or --enforce-namespace)",
        label::SANDBOX,
        label::TEMPLATE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> PolicySet {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
        PolicySet::load_dir(Path::new(dir), std::time::Duration::from_secs(1)).unwrap()
    }

    fn template(api_version: &str, pod_field: &str) -> Document {
        let yaml = format!(
            "apiVersion: {api_version}\nkind: SandboxTemplate\nmetadata: {{name: t, namespace: ns}}\n\
             spec:\n  runtimeClassName: runc\n  {pod_field}:\n    spec:\n      containers:\n\
             \x20       - {{name: c, image: python:3.11-slim, securityContext: {{privileged: true}}}}\n"
        );
        parse_documents("t.yaml", &yaml).unwrap().remove(0)
    }

    /// Dispatch is on group and kind: upstream agent-sandbox's SandboxTemplate is judged
    /// as the pods it makes (its `spec.podTemplate`), never by sandgate's own
    /// SandboxTemplate rules and policies.
    #[test]
    fn an_upstream_template_is_judged_as_its_pods_not_as_sandgates_template() {
        let cfg = Config::default();
        let set = policies();
        let ours = check_document(
            &template("sandbox.gke.io/v1", "template"),
            &cfg,
            &Scope::default(),
            &set,
        );
        assert_eq!(ours.verdict, Verdict::Deny, "{ours:?}");
        let theirs = template("extensions.agents.x-k8s.io/v1beta1", "podTemplate");
        let f = check_document(&theirs, &cfg, &Scope::default(), &set);
        assert_eq!(f.verdict, Verdict::Deny, "{f:?}");
        assert!(
            f.violations.iter().any(
                |v| v.field == "spec.podTemplate.spec.containers[0].securityContext.privileged"
            ),
            "{f:?}"
        );
        assert!(
            !f.violations
                .iter()
                .any(|v| v.field.starts_with("sandboxtemplate.")),
            "{f:?}"
        );
        // Upstream support off: not judged.
        let off = Config {
            upstream: false,
            ..Config::default()
        };
        assert_eq!(
            check_document(&theirs, &off, &Scope::default(), &set).verdict,
            Verdict::Skip
        );
        // Someone else's kind of that name is not judged either.
        let f = check_document(
            &template("example.com/v1", "template"),
            &cfg,
            &Scope::default(),
            &set,
        );
        assert_eq!(f.verdict, Verdict::Skip, "{f:?}");
    }

    #[test]
    fn upstream_warm_pools_and_claims_are_judged_offline_with_their_lookups_named() {
        let cfg = Config::default();
        let set = policies();
        let doc = |object: Value| Document {
            source: "u.yaml".into(),
            object,
        };
        let pool = |replicas: u64| {
            doc(
                serde_json::json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                "kind": "SandboxWarmPool", "metadata": {"name": "p", "namespace": "a"},
                "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": "t"}}}),
            )
        };
        let f = check_document(&pool(5000), &cfg, &Scope::default(), &set);
        assert_eq!(f.verdict, Verdict::Deny, "{f:?}");
        assert!(
            f.violations
                .iter()
                .any(|v| v.rule == admission::Rule::WarmPoolReplicas)
        );
        let f = check_document(&pool(5), &cfg, &Scope::default(), &set);
        assert_eq!(f.verdict, Verdict::Pass, "{f:?}");
        assert!(
            f.note
                .as_deref()
                .is_some_and(|n| n.contains("warm sandboxes")),
            "{f:?}"
        );
        let claim = doc(
            serde_json::json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
            "kind": "SandboxClaim", "metadata": {"name": "c", "namespace": "a"},
            "spec": {"warmPoolRef": {"name": "p"}, "env": [{"name": "API_TOKEN", "value": "x"}]}}),
        );
        let f = check_document(&claim, &cfg, &Scope::default(), &set);
        assert_eq!(f.verdict, Verdict::Pass, "{f:?}");
        assert!(f.warnings.iter().any(|w| w.contains("API_TOKEN")), "{f:?}");
        let off = Config {
            upstream: false,
            ..Config::default()
        };
        assert_eq!(
            check_document(&pool(5000), &off, &Scope::default(), &set).verdict,
            Verdict::Skip
        );
    }

    #[test]
    fn lookups_are_answered_from_the_manifests_given_together() {
        let cfg = Config {
            warm_pool_caps: crate::config::WarmPoolCaps {
                per_pool: 50,
                per_namespace: 80,
            },
            ..Config::default()
        };
        let set = policies();
        let yaml = |policy: &str, second_pool: u64| {
            format!(
                "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxTemplate\n\
                 metadata: {{name: t, namespace: a}}\nspec:\n  envVarsInjectionPolicy: {policy}\n\
                 \x20 podTemplate: {{spec: {{containers: [{{name: c, image: python:3.11-slim}}]}}}}\n---\n\
                 apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxWarmPool\n\
                 metadata: {{name: p, namespace: a}}\nspec: {{replicas: 50, sandboxTemplateRef: {{name: t}}}}\n---\n\
                 apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxWarmPool\n\
                 metadata: {{name: q, namespace: a}}\nspec: {{replicas: {second_pool}, sandboxTemplateRef: {{name: t}}}}\n---\n\
                 apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxClaim\n\
                 metadata: {{name: c, namespace: a}}\nspec: {{warmPoolRef: {{name: p}}, env: [{{name: MODE, value: x}}]}}\n"
            )
        };
        let verdicts = |text: String| -> Vec<(String, Verdict, Option<String>)> {
            let docs = parse_documents("u.yaml", &text).unwrap();
            check_documents(&docs, &cfg, &Scope::default(), &set)
                .results
                .into_iter()
                .map(|f| (f.name, f.verdict, f.note))
                .collect()
        };
        // Allowed env, pools within the namespace cap: the claim passes, nothing asked
        // about its template; the pools still ask (the cluster may hold more).
        let ok = verdicts(yaml("Allowed", 30));
        assert_eq!(ok[3].1, Verdict::Pass, "{ok:?}");
        assert!(ok[3].2.is_none(), "{ok:?}");
        assert!(
            ok[1]
                .2
                .as_deref()
                .is_some_and(|n| n.contains("warm sandboxes"))
        );
        // The template says no, and the two pools together pass the namespace cap.
        let bad = verdicts(yaml("Disallowed", 31));
        assert_eq!(bad[3].1, Verdict::Deny, "{bad:?}");
        assert_eq!(bad[1].1, Verdict::Deny, "{bad:?}");
    }
}
