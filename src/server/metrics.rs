//! The webhook's metrics: admission requests by webhook, kind, operation and decision, a
//! latency histogram, certificate reloads, the default-deny side effect, and policies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::metrics::Registry;
use crate::policy::PolicyRun;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub webhook: &'static str,
    pub kind: String,
    pub operation: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub kind: String,
    /// The rule's id (`privileged`, `policy`, ...).
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone)]
pub struct WebhookMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
    pub cert_reloads: Family<ResultLabels, Counter>,
    pub cert_expiry: Gauge,
    pub side_effect_errors: Counter,
    pub deadline_exceeded: Counter,
    pub policies_loaded: Gauge,
    pub policy_reload_errors: Counter,
    pub policy_evaluations: Family<PolicyLabels, Counter>,
    pub policy_denials: Family<PolicyLabels, Counter>,
    pub policy_duration: Family<PolicyLabels, Histogram>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.component();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by webhook, kind, operation and decision",
            requests.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "admission_denials",
            "Broken rules in denied admission requests, by kind and rule (a request counts once per rule it breaks)",
            denials.clone(),
        );
        // 25 µs .. ~0.8 s: decisions are microseconds, the apiserver gives up at seconds.
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request, from body read to response",
            duration.clone(),
        );
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result (ok, error)",
            cert_reloads.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Expiry of the serving certificate in use (unix time)",
            cert_expiry.clone(),
        );
        let side_effect_errors = Counter::default();
        registry.register(
            "networkpolicy_ensure_errors",
            "Failures to ensure a namespace's default-deny NetworkPolicy (the pod was denied)",
            side_effect_errors.clone(),
        );
        let deadline_exceeded = Counter::default();
        registry.register(
            "admission_deadline_exceeded",
            "Requests not judged within their deadline (the apiserver's timeout): their work was stopped and they were denied",
            deadline_exceeded.clone(),
        );
        let policies_loaded = Gauge::default();
        registry.register(
            "policies_loaded",
            "Rego policies in force",
            policies_loaded.clone(),
        );
        let policy_reload_errors = Counter::default();
        registry.register(
            "policy_reload_errors",
            "Policy reloads refused (the previous set kept enforcing)",
            policy_reload_errors.clone(),
        );
        let policy_evaluations = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_evaluations",
            "Evaluations per policy",
            policy_evaluations.clone(),
        );
        let policy_denials = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_denials",
            "Denials (including failures) per policy",
            policy_denials.clone(),
        );
        let policy_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_005, 2.0, 16))
        });
        registry.register(
            "policy_evaluation_duration_seconds",
            "Time to evaluate one policy",
            policy_duration.clone(),
        );
        Self {
            requests,
            denials,
            duration,
            cert_reloads,
            cert_expiry,
            side_effect_errors,
            deadline_exceeded,
            policies_loaded,
            policy_reload_errors,
            policy_evaluations,
            policy_denials,
            policy_duration,
        }
    }

    /// Counts the rules a denied decision names, once per rule.
    pub fn record_denial(&self, kind: &str, decision: &crate::admission::Decision) {
        let mut rules: Vec<&'static str> = decision
            .violations
            .iter()
            .map(|v| v.rule.as_str())
            .collect();
        rules.sort_unstable();
        rules.dedup();
        for rule in rules {
            self.denials
                .get_or_create(&DenialLabels {
                    kind: kind.to_string(),
                    rule,
                })
                .inc();
        }
    }

    /// Records how each policy ran on one request.
    pub fn record_policy_runs(&self, runs: &[PolicyRun]) {
        for run in runs {
            let labels = PolicyLabels {
                policy: run.policy.clone(),
            };
            self.policy_evaluations.get_or_create(&labels).inc();
            self.policy_duration
                .get_or_create(&labels)
                .observe(run.took.as_secs_f64());
            if run.denied {
                self.policy_denials.get_or_create(&labels).inc();
            }
        }
    }
}
