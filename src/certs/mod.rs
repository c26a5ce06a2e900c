//! Self-managed TLS (`serve --tls-mode=self`, the chart's default): no cert-manager, no
//! hand-made Secret, no hand-pasted `caBundle`.
//!
//! - [`authority`]: the certificates as pure data and the one rotation decision;
//! - [`manager`]: the elected replica keeps the Secret and the webhook configurations'
//!   `caBundle` up to date with that decision;
//! - [`follow`]: every replica serves the pair the Secret holds, swapped in on change.

pub mod authority;
pub mod follow;
pub mod manager;

pub use authority::Lifetimes;
pub use manager::{Metrics, Settings};
