//! The reconciler's metrics, registered into the process registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::crd::LaunchType;
use crate::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub template: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaunchLabels {
    pub launch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub pool: Family<PoolLabels, Gauge>,
    pub bind_latency: Family<LaunchLabels, Histogram>,
    pub errors: Family<ControllerLabels, Counter>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.component();
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "pool_sandboxes",
            "Sandboxes per template by state (ready, pending, claimed)",
            pool.clone(),
        );
        let bind_latency = Family::<LaunchLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "claim_bind_seconds",
            "Claim created (or first seen) to sandbox usable, by launch type",
            bind_latency.clone(),
        );
        let errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile failures by controller",
            errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 when this replica holds the reconciler lease",
            leader.clone(),
        );
        Self {
            pool,
            bind_latency,
            errors,
            leader,
        }
    }

    /// One claim bound, `ms` after it was made.
    pub fn observe_bind(&self, launch: LaunchType, ms: i64) {
        self.bind_latency
            .get_or_create(&LaunchLabels {
                launch: launch.as_str(),
            })
            .observe(ms as f64 / 1000.0);
    }

    /// A template's pool by state.
    pub fn set_pool(&self, namespace: &str, template: &str, counts: [(&'static str, usize); 3]) {
        for (state, n) in counts {
            self.pool
                .get_or_create(&PoolLabels {
                    namespace: namespace.to_string(),
                    template: template.to_string(),
                    state,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
