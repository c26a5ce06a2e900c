//! The audit (DESIGN.md §7c): what already runs, judged by the same pipeline as
//! admission and reported where the ecosystem looks. [`view`] turns a stored object
//! into its `/validate` request and a decision into results, [`report`] builds the
//! PolicyReports (both pure); [`scan`] reads the cluster, paced; [`controller`] is the
//! leader's loop that writes reports, events and metrics, and closes enforced
//! namespaces; `sandgate audit` runs one [`scan`] from the command line.

pub mod controller;
pub mod metrics;
pub mod pace;
pub mod report;
pub mod scan;
pub mod view;

pub use controller::{Auditor, Settings};
pub use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the audit's evaluation crashed: {0}")]
    Crashed(String),
}

impl AuditError {
    fn read(what: &str, source: kube::Error) -> Self {
        Self::Read {
            what: what.to_string(),
            source,
        }
    }
}
