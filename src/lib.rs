//! sandgate: the policy plane for AI-agent sandboxes on Kubernetes.
//!
//! The crate is laid out so that decisions are pure and I/O sits at the edges:
//! - [`admission`]: AdmissionRequest in, decision out (mutation, validation, scope);
//! - [`crd`]: the `sandbox.gke.io/v1` custom resources;
//! - [`config`]: operator settings, validated once at start;
//! - [`server`]: the HTTPS webhook (axum + rustls), metrics, certificate reload;
//! - [`check`]: offline judgement of manifests, sharing the webhook's decision code;
//! - [`netpol`]: the seam through which admission asks for the default-deny policy.
#![forbid(unsafe_code)]

pub mod admission;
pub mod check;
pub mod cli;
pub mod config;
pub mod crd;
pub mod labels;
pub mod netpol;
pub mod policy;
pub mod quantity;
pub mod reconcile;
pub mod server;
pub mod watch;

/// Version of this build, shown by `sandgate version` and the build-info metric.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
