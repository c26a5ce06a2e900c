//! PolicyReports (`wgpolicyk8s.io/v1alpha2`), pure: the results of one namespace (or
//! of the cluster-scoped objects) as the report Kyverno, Kubewarden and Policy Reporter
//! read. A report is bounded: it lists at most `max_results` results, failures first,
//! then errors, warnings and passes; the summary still counts every one and an
//! annotation says how many were left out, so a namespace with thousands of pods cannot
//! grow an object etcd refuses (`sandgate audit` lists everything).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::view::{Judged, Outcome, ResourceRef, Verdict};
use crate::contract::{self, audit};

/// Longest message kept in a result (the rest is cut, marked with an ellipsis).
const MAX_MESSAGE_CHARS: usize = 1024;

/// Counts by verdict, as the report's `summary` (skip is always 0: what sandgate does
/// not judge is not listed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
}

impl Summary {
    pub fn of<'a>(judged: impl IntoIterator<Item = &'a Judged>) -> Self {
        let mut s = Summary::default();
        for o in judged.into_iter().flat_map(|j| &j.outcomes) {
            s.add(o.result);
        }
        s
    }

    fn add(&mut self, v: Verdict) {
        let n = match v {
            Verdict::Pass => &mut self.pass,
            Verdict::Fail => &mut self.fail,
            Verdict::Warn => &mut self.warn,
            Verdict::Error => &mut self.error,
        };
        *n = n.saturating_add(1);
    }
}

/// A report ready to write, and what identifies its content.
#[derive(Debug, Clone)]
pub struct Report {
    /// The object, for a server-side apply.
    pub object: Value,
    /// A hash of the results (timestamps excluded): equal hashes need no write.
    pub hash: String,
    pub summary: Summary,
    /// Results left out to bound the size.
    pub omitted: usize,
}

/// The report of `namespace` (`None`: the ClusterPolicyReport) over `judged`.
/// `now` is the Unix time put on each result.
pub fn build(namespace: Option<&str>, judged: &[Judged], max_results: usize, now: i64) -> Report {
    let summary = Summary::of(judged);
    let mut rows: Vec<(&ResourceRef, &Outcome)> = judged
        .iter()
        .flat_map(|j| j.outcomes.iter().map(move |o| (&j.resource, o)))
        .collect();
    // What needs attention first, then by object: deterministic, so the hash is.
    rows.sort_by(|a, b| (a.1.result, a.0, a.1).cmp(&(b.1.result, b.0, b.1)));
    let keep = max_results.min(rows.len());
    let omitted = rows.len().saturating_sub(keep);
    rows.truncate(keep);
    let results: Vec<Value> = rows.iter().map(|(r, o)| result(r, o, now)).collect();
    let hash = fingerprint(&results, &summary);

    let mut annotations = BTreeMap::from([(audit::HASH_ANNOTATION.to_string(), hash.clone())]);
    if omitted > 0 {
        annotations.insert(audit::OMITTED_ANNOTATION.to_string(), omitted.to_string());
    }
    let mut metadata = json!({
        "name": audit::REPORT_NAME,
        "labels": contract::managed_labels(),
        "annotations": annotations,
    });
    let kind = match namespace {
        Some(ns) => {
            metadata["namespace"] = json!(ns);
            audit::REPORT_KIND
        }
        None => audit::CLUSTER_REPORT_KIND,
    };
    let object = json!({
        "apiVersion": format!("{}/{}", audit::REPORT_GROUP, audit::REPORT_VERSION),
        "kind": kind,
        "metadata": metadata,
        "summary": summary,
        "results": results,
    });
    Report {
        object,
        hash,
        summary,
        omitted,
    }
}

fn result(resource: &ResourceRef, o: &Outcome, now: i64) -> Value {
    let mut message = o.message.clone();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    if let Some(field) = &o.field {
        message = format!("{field}: {message}");
    }
    let mut r = json!({
        "source": audit::SOURCE,
        "policy": o.policy,
        "rule": o.rule,
        "result": o.result.as_str(),
        "scored": true,
        "message": message,
        "resources": [resource],
        "timestamp": {"seconds": now, "nanos": 0},
    });
    if let Some(s) = o.severity() {
        r["severity"] = json!(s);
        r["category"] = json!("Sandbox isolation");
    }
    if let Some(field) = &o.field {
        r["properties"] = json!({"field": field});
    }
    r
}

/// FNV-1a over the results without their timestamps: stable across processes and
/// builds, so a restarted leader does not rewrite unchanged reports.
fn fingerprint(results: &[Value], summary: &Summary) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for r in results {
        let mut r = r.clone();
        if let Some(o) = r.as_object_mut() {
            o.remove("timestamp");
        }
        eat(r.to_string().as_bytes());
    }
    eat(json!(summary).to_string().as_bytes());
    format!("{h:016x}")
}

/// What `sandgate audit` prints: every object judged, worst first, and the totals.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub results: Vec<Judged>,
    pub summary: ListingSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListingSummary {
    pub objects: usize,
    pub namespaces: usize,
    /// Results by verdict (an object may have several).
    pub results: Summary,
    /// Objects by their worst verdict.
    pub failing: usize,
    pub errors: usize,
    pub api_requests: u64,
    pub seconds: f64,
}

impl Listing {
    pub fn of(
        scan: &super::scan::Scan,
        requests: &prometheus_client::metrics::family::Family<
            super::metrics::VerbLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        elapsed: std::time::Duration,
    ) -> Self {
        let mut results: Vec<Judged> = scan
            .namespaces
            .values()
            .flatten()
            .chain(&scan.cluster)
            .cloned()
            .collect();
        results.sort_by(|a, b| (a.worst(), &a.resource).cmp(&(b.worst(), &b.resource)));
        let api_requests = ["list", "get"]
            .into_iter()
            .map(|verb| {
                requests
                    .get_or_create(&super::metrics::VerbLabels { verb })
                    .get()
            })
            .sum();
        let summary = ListingSummary {
            objects: results.len(),
            namespaces: scan.namespaces.len(),
            results: Summary::of(&results),
            failing: results
                .iter()
                .filter(|j| j.worst() == Verdict::Fail)
                .count(),
            errors: results
                .iter()
                .filter(|j| j.worst() == Verdict::Error)
                .count(),
            api_requests,
            seconds: elapsed.as_secs_f64(),
        };
        Self { results, summary }
    }

    /// As `check`: 2 when something could not be judged, 1 when something failed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self
            .results
            .iter()
            .any(|j| j.outcomes.iter().any(|o| o.result == Verdict::Error))
        {
            2
        } else if self.summary.results.fail > 0 {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(name: &str, outcomes: Vec<Outcome>) -> Judged {
        Judged {
            resource: ResourceRef {
                kind: "Pod".into(),
                api_version: "v1".into(),
                namespace: Some("ns".into()),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            outcomes,
        }
    }

    fn pass() -> Outcome {
        Outcome::builtin(Verdict::Pass, audit::PASS_RULE, None, "ok".into())
    }

    fn fail() -> Outcome {
        Outcome::builtin(
            Verdict::Fail,
            "privileged",
            Some("spec.containers[0].securityContext.privileged".into()),
            "is true".into(),
        )
    }

    #[test]
    fn a_report_names_the_resource_rule_and_field() {
        let r = build(
            Some("ns"),
            &[judged("bad", vec![fail()]), judged("good", vec![pass()])],
            100,
            7,
        );
        assert_eq!(r.object["kind"], "PolicyReport");
        assert_eq!(r.object["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(r.object["metadata"]["namespace"], "ns");
        assert_eq!(r.object["summary"]["fail"], 1);
        assert_eq!(r.object["summary"]["pass"], 1);
        let first = &r.object["results"][0];
        assert_eq!(first["result"], "fail");
        assert_eq!(first["rule"], "privileged");
        assert_eq!(first["policy"], "sandgate");
        assert_eq!(first["severity"], "high");
        assert_eq!(
            first["properties"]["field"],
            "spec.containers[0].securityContext.privileged"
        );
        assert_eq!(first["resources"][0]["name"], "bad");
        assert_eq!(first["resources"][0]["uid"], "uid-bad");
        assert_eq!(first["timestamp"]["seconds"], 7);
        assert_eq!(r.object["results"][1]["result"], "pass");
        assert!(
            build(None, &[], 10, 0).object["metadata"]
                .get("namespace")
                .is_none()
        );
    }

    #[test]
    fn the_hash_ignores_time_and_follows_content() {
        let items = [judged("bad", vec![fail()])];
        let a = build(Some("ns"), &items, 100, 1);
        let b = build(Some("ns"), &items, 100, 2);
        assert_eq!(a.hash, b.hash);
        let c = build(Some("ns"), &[judged("bad", vec![pass()])], 100, 1);
        assert_ne!(a.hash, c.hash);
        assert_eq!(
            a.object["metadata"]["annotations"][audit::HASH_ANNOTATION],
            a.hash
        );
    }

    #[test]
    fn thousands_of_pods_are_summarised_with_failures_first() {
        let mut items: Vec<Judged> = (0..5000)
            .map(|i| judged(&format!("p{i:04}"), vec![pass()]))
            .collect();
        items.push(judged("zz-bad", vec![fail()]));
        let r = build(Some("ns"), &items, 50, 0);
        assert_eq!(r.object["results"].as_array().map(Vec::len), Some(50));
        assert_eq!(r.object["results"][0]["resources"][0]["name"], "zz-bad");
        assert_eq!(r.summary.pass, 5000);
        assert_eq!(r.omitted, 4951);
        assert_eq!(
            r.object["metadata"]["annotations"][audit::OMITTED_ANNOTATION],
            "4951"
        );
        // Bounded in bytes too: far under etcd's 1.5 MiB.
        assert!(r.object.to_string().len() < 100_000);
        // Past the bound failures are cut too, and still counted.
        let fails: Vec<Judged> = (0..80)
            .map(|i| judged(&format!("f{i}"), vec![fail()]))
            .collect();
        let r = build(Some("ns"), &fails, 50, 0);
        assert_eq!(r.object["results"].as_array().map(Vec::len), Some(50));
        assert_eq!(r.summary.fail, 80);
    }

    #[test]
    fn long_messages_are_cut() {
        let mut o = fail();
        o.message = "x".repeat(5000);
        let r = build(Some("ns"), &[judged("p", vec![o])], 10, 0);
        let msg = r.object["results"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(msg.chars().count() < 1200, "{}", msg.len());
        assert!(msg.ends_with('…'));
    }
}
