//! The process's one Prometheus registry. Each component registers its own metrics into
//! it (the webhook's in `server::metrics`, the reconciler's in `reconcile::metrics`);
//! `/metrics` encodes whatever was registered.

use prometheus_client::metrics::info::Info;

pub struct Registry {
    inner: prometheus_client::registry::Registry,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry holding the build information.
    pub fn new() -> Self {
        let mut inner =
            prometheus_client::registry::Registry::with_prefix(crate::contract::METRICS_PREFIX);
        inner.register(
            "build",
            "Build information",
            Info::new(vec![("version", crate::VERSION)]),
        );
        Self { inner }
    }

    /// Where a component registers its metrics.
    pub fn component(&mut self) -> &mut prometheus_client::registry::Registry {
        &mut self.inner
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner);
        out
    }
}
