//! The HTTPS webhook: axum + rustls. `router` is public so tests drive it in process;
//! `run` binds the TLS listener (and an optional plain probe listener), reloads the
//! serving certificate when it changes and shuts down gracefully on SIGTERM.

pub mod devcerts;
mod handlers;
pub mod metrics;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use axum_server::{Control, Handle};

use crate::admission::Webhook;
use crate::config::Config;
use crate::netpol::DefaultDeny;
use crate::policy::PolicySet;
use crate::policy::store::PolicyStore;
use crate::watch::Watch;
use metrics::{Metrics, ResultLabels};
use tls::CertPaths;

/// Largest AdmissionReview body accepted; the apiserver's own request limit is 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Default for [`AppState::body_timeout`].
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Everything a request handler needs.
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub default_deny: Arc<dyn DefaultDeny>,
    pub readiness: Arc<Readiness>,
    /// A client that has not sent its whole body by then gets 408.
    pub body_timeout: Duration,
    /// The Rego policies in force (swapped on reload).
    pub policies: Arc<PolicyStore>,
    /// Bounds concurrent policy evaluations (CPU-bound, run off the async runtime).
    pub eval_permits: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Built-in rules only (no policies).
    pub fn new(config: Config, default_deny: Arc<dyn DefaultDeny>) -> Arc<Self> {
        Self::with_policies(config, default_deny, PolicyStore::fixed(PolicySet::empty()))
    }

    pub fn with_policies(
        config: Config,
        default_deny: Arc<dyn DefaultDeny>,
        policies: PolicyStore,
    ) -> Arc<Self> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Self {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            default_deny,
            readiness: Arc::new(Readiness::default()),
            body_timeout: BODY_READ_TIMEOUT,
            policies: Arc::new(policies),
            eval_permits: Arc::new(tokio::sync::Semaphore::new(workers)),
        })
    }
}

/// The webhook's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(|s, h, b| handlers::admit(s, Webhook::Mutate, h, b)),
        )
        .route(
            "/validate",
            post(|s, h, b| handlers::admit(s, Webhook::Validate, h, b)),
        )
        .merge(probe_router())
        .with_state(state)
}

/// Health, readiness and metrics only: what the plain probe port serves.
fn probe_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serving certificate: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("dev certificates: {0}")]
    DevCerts(#[from] devcerts::DevCertError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Plain-HTTP listener for probes and metrics (`None`: off).
    pub probe_addr: Option<SocketAddr>,
    pub certs: CertPaths,
    /// How long in-flight requests get to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often the certificate files are re-read when no change event arrives.
    pub cert_poll: Duration,
    /// How often the policy directory is re-read when no change event arrives.
    pub policy_poll: Duration,
}

/// A started server: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub control: Control,
    pub state: Arc<AppState>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within `grace`, then returns.
    pub async fn shutdown(self, grace: Duration) -> std::io::Result<()> {
        self.state.readiness.set_serving(false);
        self.control.graceful_shutdown(Some(grace));
        self.wait().await
    }

    /// Waits until the server stops (after a signal or [`Running::shutdown`]).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Binds and starts serving; returns once the listeners are up.
pub async fn start(opts: ServeOptions, state: Arc<AppState>) -> Result<Running, ServeError> {
    let (server_config, info) = tls::load(&opts.certs, tls::now())?;
    state.metrics.cert_expiry.set(info.not_after);
    let rustls = RustlsConfig::from_config(server_config);
    tokio::spawn(reload_certificates(
        opts.certs.clone(),
        rustls.clone(),
        state.clone(),
        opts.cert_poll,
    ));

    if state.policies.dir().is_some() {
        tokio::spawn(reload_policies(state.clone(), opts.policy_poll));
    }
    state
        .metrics
        .policies_loaded
        .set(state.policies.get().policies().len() as i64);

    let control = Control::new();
    let handle = Handle::<SocketAddr>::with_control(control.clone());
    let mut server = axum_server::bind_rustls(opts.addr, rustls)
        .handle(handle.clone())
        .first_request_timeout(Duration::from_secs(10));
    server
        .http_builder()
        .http1()
        .header_read_timeout(Duration::from_secs(10));
    let app = router(state.clone());
    let main = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    let addr = handle.listening().await.ok_or_else(|| ServeError::Bind {
        addr: opts.addr,
        source: std::io::Error::other("the TLS listener failed to bind"),
    })?;

    let mut probe_addr = None;
    let probe_task = match opts.probe_addr {
        None => None,
        Some(pa) => {
            let ph = Handle::<SocketAddr>::with_control(control.clone());
            let app = probe_router().with_state(state.clone());
            let server = axum_server::bind(pa).handle(ph.clone());
            let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
            probe_addr = Some(ph.listening().await.ok_or_else(|| ServeError::Bind {
                addr: pa,
                source: std::io::Error::other("the probe listener failed to bind"),
            })?);
            Some(task)
        }
    };
    let done = tokio::spawn(async move {
        let r = main.await.map_err(std::io::Error::other)?;
        if let Some(t) = probe_task {
            t.await.map_err(std::io::Error::other)??;
        }
        r
    });
    state.readiness.set_serving(true);
    Ok(Running {
        addr,
        probe_addr,
        control,
        state,
        done,
    })
}

/// Serves /healthz, /readyz and /metrics over plain HTTP until `stop` turns true (for
/// `sandgate reconcile`, which has no webhook).
pub async fn serve_probes(
    addr: SocketAddr,
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, ServeError> {
    let handle = Handle::<SocketAddr>::new();
    let server = axum_server::bind(addr).handle(handle.clone());
    let app = probe_router().with_state(state);
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    let bound = handle.listening().await.ok_or_else(|| ServeError::Bind {
        addr,
        source: std::io::Error::other("the probe listener failed to bind"),
    })?;
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        handle.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    Ok(bound)
}

/// Waits for SIGTERM or SIGINT.
pub async fn signal() {
    shutdown_signal().await
}

/// Runs until SIGTERM or SIGINT, then drains gracefully.
pub async fn run(opts: ServeOptions, state: Arc<AppState>) -> Result<(), ServeError> {
    let grace = opts.shutdown_grace;
    let running = start(opts, state).await?;
    tracing::info!(addr = %running.addr, probe_addr = ?running.probe_addr, "sandgate webhook serving");
    let control = running.control.clone();
    let readiness = running.state.readiness.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining connections"
        );
        readiness.set_serving(false);
        control.graceful_shutdown(Some(grace));
    });
    running.wait().await.map_err(|source| ServeError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    tracing::info!("sandgate stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C still works through tokio's helper.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Re-reads the certificate pair when its files change. A pair that fails the checks
/// is refused: the old one keeps serving, the error is logged, counted and shown by
/// readiness until a good pair arrives.
async fn reload_certificates(
    paths: CertPaths,
    rustls: RustlsConfig,
    state: Arc<AppState>,
    poll: Duration,
) {
    let mut watch = Watch::new(
        &[paths.cert.clone(), paths.key.clone()],
        poll,
        Duration::from_millis(200),
    );
    let read_both = || {
        (
            std::fs::read(&paths.cert).ok(),
            std::fs::read(&paths.key).ok(),
        )
    };
    let mut current = read_both();
    loop {
        watch.changed().await;
        let seen = read_both();
        if seen == current {
            continue;
        }
        match tls::load(&paths, tls::now()) {
            Ok((config, info)) => {
                rustls.reload_from_config(config);
                current = seen;
                state.metrics.cert_expiry.set(info.not_after);
                state
                    .metrics
                    .cert_reloads
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                state.readiness.set_problem("certificate", None);
                tracing::info!(cert = %paths.cert.display(), not_after = info.not_after, "serving certificate reloaded");
            }
            Err(e) => {
                state
                    .metrics
                    .cert_reloads
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                state.readiness.set_problem(
                    "certificate",
                    Some(format!(
                        "reload refused, previous certificate still serving: {e}"
                    )),
                );
                tracing::error!(error = %e, "serving certificate reload refused; keeping the previous one");
                // Do not retry the same bad files until they change again.
                current = seen;
            }
        }
    }
}

/// Reloads the policy directory when it changes. A set that fails to load is refused:
/// the previous one keeps enforcing, the error is logged, counted and shown by
/// readiness until a good set replaces it.
async fn reload_policies(state: Arc<AppState>, poll: Duration) {
    let Some(dir) = state.policies.dir().map(|d| d.to_path_buf()) else {
        return;
    };
    let mut watch = Watch::tree(&dir, poll, Duration::from_millis(250));
    loop {
        watch.changed().await;
        let store = state.policies.clone();
        let result = tokio::task::spawn_blocking(move || store.reload()).await;
        match result {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(n))) => {
                state.metrics.policies_loaded.set(n as i64);
                state.readiness.set_problem("policies", None);
                tracing::info!(dir = %dir.display(), policies = n, "policies reloaded");
            }
            Ok(Err(e)) => {
                state.metrics.policy_reload_errors.inc();
                state.readiness.set_problem(
                    "policies",
                    Some(format!(
                        "reload refused, previous policies still enforcing: {e}"
                    )),
                );
                tracing::error!(error = %e, "policy reload refused; keeping the previous set");
            }
            Err(e) => tracing::error!(error = %e, "policy reload task failed"),
        }
    }
}
