//! Health, readiness and metrics: what both the HTTPS port and the plain probe port
//! serve, and what `sandgate reconcile` serves alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::Handle;

use super::ServeError;
use crate::metrics::Registry;

/// What readiness depends on, with the problems that currently hold it down.
#[derive(Debug, Default)]
pub struct Readiness {
    serving: AtomicBool,
    problems: Mutex<BTreeMap<&'static str, String>>,
}

impl Readiness {
    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Ordering::SeqCst);
    }

    /// Records (Some) or clears (None) a problem of a component.
    pub fn set_problem(&self, component: &'static str, problem: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(text) => {
                p.insert(component, text);
            }
            None => {
                p.remove(component);
            }
        }
    }

    /// `Ok` when ready, else the reasons.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = self
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if !self.serving.load(Ordering::SeqCst) {
            reasons.insert(0, "server: not serving (starting or shutting down)".into());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// What the probe routes read.
#[derive(Clone)]
pub struct Probes {
    pub readiness: Arc<Readiness>,
    pub registry: Arc<Registry>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

/// Serves the probe routes over plain HTTP until `stop` turns true.
pub async fn serve(
    addr: SocketAddr,
    probes: Probes,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>), ServeError> {
    let handle = Handle::<SocketAddr>::new();
    let server = axum_server::bind(addr).handle(handle.clone());
    let app = router(probes);
    let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    let bound = handle.listening().await.ok_or_else(|| ServeError::Bind {
        addr,
        source: std::io::Error::other("the probe listener failed to bind"),
    })?;
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        handle.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    Ok((bound, task))
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(p): State<Probes>) -> Response {
    match p.readiness.check() {
        Ok(()) => plain(StatusCode::OK, "ok".into()),
        Err(reasons) => plain(StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n")),
    }
}

async fn metrics(State(p): State<Probes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.registry.encode(),
    )
        .into_response()
}
