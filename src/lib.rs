//! sandgate: the policy plane for AI-agent sandboxes on Kubernetes.
//!
//! Decisions are pure and I/O sits at the edges:
//! - [`contract`]: every name sandgate writes or recognises, and its defaults;
//! - [`admission`]: AdmissionRequest in, decision out; [`admission::pipeline`] is the one
//!   sequence of built-in rules, policies and effects;
//! - [`policy`]: the Rego engine (regorus), its hot-reloading store and `policy test`;
//! - [`crd`] and [`resources`]: the `sandbox.gke.io/v1` types and the kinds sandgate knows;
//! - [`config`]: operator settings, validated once at start;
//! - [`reconcile`]: warm pools and claims (pure plans, thin controllers, leader election);
//! - [`server`]: the HTTPS webhook (axum + rustls), probes, certificate reload;
//! - [`certs`]: self-managed TLS (the CA, the serving pair and the webhooks' caBundle);
//! - [`app`]: the process wired from its settings, shared by `main` and the e2e tests;
//! - [`check`]: offline judgement of manifests through the same pipeline;
//! - [`cli`]: the command line and its renderers; [`metrics`]: the one registry;
//! - [`netpol`]: the default-deny NetworkPolicy and the seam that ensures it;
//! - [`runtime_check`]: the live sandbox RuntimeClass against the configuration;
//! - [`facts`]: what only the cluster knows, for the pipeline's lookups.
#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod audit;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod contract;
pub mod crd;
pub mod facts;
pub mod metrics;
pub mod netpol;
pub mod policy;
pub mod quantity;
pub mod reconcile;
pub mod resources;
pub mod runtime_check;
pub mod server;
pub mod watch;

/// Version of this build, shown by `sandgate version` and the build-info metric.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
