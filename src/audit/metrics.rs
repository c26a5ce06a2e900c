//! The audit's metrics (`sandgate_audit_*`), registered into the process registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResultLabels {
    pub kind: String,
    pub policy: String,
    pub rule: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// `full` or `namespaces`.
    pub scope: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    /// Results in force, by object kind, policy, rule and verdict.
    pub results: Family<ResultLabels, Gauge>,
    pub runs: Family<RunLabels, Counter>,
    pub duration: Histogram,
    pub last_run: Gauge<f64, AtomicU64>,
    pub resources: Family<KindLabels, Gauge>,
    pub requests: Family<VerbLabels, Counter>,
    pub default_deny_created: Counter,
    /// 1 while the PolicyReport CRDs are installed (reports are written), else 0.
    pub reports_enabled: Gauge,
}

impl Metrics {
    /// Metrics not registered anywhere (`sandgate audit` counts requests with them).
    pub fn unregistered() -> Self {
        Self {
            results: Family::default(),
            runs: Family::default(),
            duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            last_run: Gauge::default(),
            resources: Family::default(),
            requests: Family::default(),
            default_deny_created: Counter::default(),
            reports_enabled: Gauge::default(),
        }
    }

    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.component();
        r.register(
            "audit_results",
            "Audit results in force by object kind, policy, rule and result (pass, fail, warn, error)",
            m.results.clone(),
        );
        r.register(
            "audit_runs",
            "Audit sweeps by scope and outcome",
            m.runs.clone(),
        );
        r.register(
            "audit_duration_seconds",
            "Wall time of one audit sweep, reports written",
            m.duration.clone(),
        );
        r.register(
            "audit_last_run_timestamp_seconds",
            "When the last successful full audit sweep finished (Unix time)",
            m.last_run.clone(),
        );
        r.register(
            "audit_resources",
            "Objects judged by the last full audit sweep, by kind",
            m.resources.clone(),
        );
        r.register(
            "audit_api_requests",
            "Apiserver requests made by the audit, by verb",
            m.requests.clone(),
        );
        r.register(
            "audit_default_deny_created",
            "Default-deny NetworkPolicies the audit created in namespaces found without one",
            m.default_deny_created.clone(),
        );
        r.register(
            "audit_reports_enabled",
            "1 while the wgpolicyk8s.io PolicyReport CRDs are installed and reports are written",
            m.reports_enabled.clone(),
        );
        m
    }
}
