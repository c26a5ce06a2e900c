//! The HTTPS webhook: axum + rustls. `router` is public so tests drive it in process;
//! `start` binds the TLS listener (and an optional plain probe listener), reloads the
//! serving certificate and the policies when they change, and drains gracefully on
//! shutdown. [`crate::app::App`] wires it to the rest of the process.

pub mod devcerts;
mod handlers;
pub mod metrics;
pub mod notices;
pub mod probes;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::{Control, Handle};

use crate::admission::Webhook;
use crate::config::Config;
use crate::facts::ClusterFacts;
use crate::metrics::Registry;
use crate::netpol::DefaultDeny;
use crate::policy::PolicySet;
use crate::policy::store::PolicyStore;
use crate::watch::Watch;
use metrics::{ResultLabels, WebhookMetrics};
pub use probes::{Probes, Readiness};
use tls::{CertPaths, CertSource};

/// Largest AdmissionReview body accepted; the apiserver's own request limit is 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Default for [`AppState::body_timeout`].
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request handler needs.
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: WebhookMetrics,
    /// The process's registry (the webhook's metrics and whatever else registered).
    pub registry: Arc<Registry>,
    pub default_deny: Arc<dyn DefaultDeny>,
    /// What only the cluster knows, for the decisions' lookups.
    pub facts: Arc<dyn ClusterFacts>,
    /// Who is told about a denial (the owners of denied pods).
    pub notices: Arc<dyn notices::DenialNotices>,
    pub readiness: Arc<Readiness>,
    /// A client that has not sent its whole body by then gets 408.
    pub body_timeout: Duration,
    /// The Rego policies in force (swapped on reload).
    pub policies: Arc<PolicyStore>,
    /// Bounds concurrent heavy evaluations (CPU-bound, run off the async runtime): one
    /// fewer than the cores.
    pub eval_permits: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Built-in rules only (no policies), with a registry of its own.
    pub fn new(config: Config, default_deny: Arc<dyn DefaultDeny>) -> Arc<Self> {
        Self::with_policies(config, default_deny, PolicyStore::fixed(PolicySet::empty()))
    }

    /// With policies, and a registry of its own.
    pub fn with_policies(
        config: Config,
        default_deny: Arc<dyn DefaultDeny>,
        policies: PolicyStore,
    ) -> Arc<Self> {
        let mut registry = Registry::new();
        let metrics = WebhookMetrics::register(&mut registry);
        Self::from_parts(
            config,
            default_deny,
            Arc::new(crate::facts::NoCluster),
            Arc::new(notices::NoNotices),
            Arc::new(policies),
            metrics,
            Arc::new(registry),
            Arc::new(Readiness::default()),
        )
    }

    /// From parts the process shares with other components.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        config: Config,
        default_deny: Arc<dyn DefaultDeny>,
        facts: Arc<dyn ClusterFacts>,
        notices: Arc<dyn notices::DenialNotices>,
        policies: Arc<PolicyStore>,
        metrics: WebhookMetrics,
        registry: Arc<Registry>,
        readiness: Arc<Readiness>,
    ) -> Arc<Self> {
        // Heavy evaluations (large bodies, slow policies) get every core but one, so
        // ordinary requests, judged inline on the I/O threads, always have a core left
        // however many hostile ones are queued.
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .saturating_sub(1)
            .max(1);
        Arc::new(Self {
            config: Arc::new(config),
            metrics,
            registry,
            default_deny,
            facts,
            notices,
            readiness,
            body_timeout: BODY_READ_TIMEOUT,
            policies,
            eval_permits: Arc::new(tokio::sync::Semaphore::new(workers)),
        })
    }

    /// What the probe routes read.
    pub fn probes(&self) -> Probes {
        Probes {
            readiness: self.readiness.clone(),
            registry: self.registry.clone(),
        }
    }
}

/// The webhook's routes, with the probes beside them.
pub fn router(state: Arc<AppState>) -> Router {
    let probes = probes::router(state.probes());
    Router::new()
        .route(
            "/mutate",
            post(|s, u, h, b| handlers::admit(s, Webhook::Mutate, u, h, b)),
        )
        .route(
            "/validate",
            post(|s, u, h, b| handlers::admit(s, Webhook::Validate, u, h, b)),
        )
        .with_state(state)
        .merge(probes)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serving certificate: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("dev certificates: {0}")]
    DevCerts(#[from] devcerts::DevCertError),
    #[error("self-managed TLS needs a cluster: no Kubernetes client was configured")]
    ManagedNeedsCluster,
    #[error("the serving certificate feed of {0} stopped before a certificate arrived")]
    FeedClosed(String),
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
    pub certs: CertSource,
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

/// Where the serving pairs come from, once resolved: files, or a feed of PEM pairs
/// (self-managed TLS: [`crate::certs::follow`]).
enum Pairs {
    Files(CertPaths),
    Feed {
        label: String,
        rx: tokio::sync::watch::Receiver<Option<crate::certs::follow::Pair>>,
    },
}

/// Binds and starts serving from certificate files; returns once the listeners are up.
pub async fn start(opts: ServeOptions, state: Arc<AppState>) -> Result<Running, ServeError> {
    match opts.certs.clone() {
        CertSource::Files(paths) => start_with(opts, Pairs::Files(paths), state).await,
        CertSource::Managed(_) => Err(ServeError::ManagedNeedsCluster),
    }
}

/// Binds and starts serving from a feed of PEM pairs (`label` names it in errors). The
/// probe listener comes up at once; the TLS listener once the first good pair arrives.
pub async fn start_fed(
    opts: ServeOptions,
    state: Arc<AppState>,
    label: String,
    rx: tokio::sync::watch::Receiver<Option<crate::certs::follow::Pair>>,
) -> Result<Running, ServeError> {
    start_with(opts, Pairs::Feed { label, rx }, state).await
}

/// Waits for the first pair of the feed that passes the checks.
async fn first_pair(
    label: &str,
    rx: &mut tokio::sync::watch::Receiver<Option<crate::certs::follow::Pair>>,
    state: &AppState,
) -> Result<(Arc<rustls::ServerConfig>, tls::CertInfo), ServeError> {
    state.readiness.set_problem(
        "certificate",
        Some(format!("waiting for the serving certificate in {label}")),
    );
    loop {
        let pair = rx.borrow_and_update().clone();
        if let Some((cert, key)) = pair {
            match load_fed(label, &cert, &key) {
                Ok(loaded) => {
                    state.readiness.set_problem("certificate", None);
                    return Ok(loaded);
                }
                Err(e) => {
                    state
                        .readiness
                        .set_problem("certificate", Some(format!("{label}: {e}")));
                    tracing::error!(error = %e, "serving certificate refused; waiting for another");
                }
            }
        }
        // A pair not valid yet (a clock behind the leader's) becomes usable by itself:
        // look again in a while even when nothing changes.
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Err(ServeError::FeedClosed(label.to_string()));
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

fn load_fed(
    label: &str,
    cert: &[u8],
    key: &[u8],
) -> Result<(Arc<rustls::ServerConfig>, tls::CertInfo), tls::TlsError> {
    tls::load_pem(
        cert,
        key,
        &format!("{label} {}", crate::contract::tls::TLS_CERT),
        &format!("{label} {}", crate::contract::tls::TLS_KEY),
        tls::now(),
    )
}

async fn start_with(
    opts: ServeOptions,
    mut pairs: Pairs,
    state: Arc<AppState>,
) -> Result<Running, ServeError> {
    // Files are checked before anything listens: a bad pair stops the start.
    let initial = match &pairs {
        Pairs::Files(paths) => Some(tls::load(paths, tls::now())?),
        Pairs::Feed { .. } => None,
    };
    state
        .metrics
        .policies_loaded
        .set(state.policies.get().policies().len() as i64);
    let control = Control::new();

    let mut probe_addr = None;
    let probe_task = match opts.probe_addr {
        None => None,
        Some(pa) => {
            let ph = Handle::<SocketAddr>::with_control(control.clone());
            let app = probes::router(state.probes());
            let server = axum_server::bind(pa).handle(ph.clone());
            let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
            probe_addr = Some(ph.listening().await.ok_or_else(|| ServeError::Bind {
                addr: pa,
                source: std::io::Error::other("the probe listener failed to bind"),
            })?);
            Some(task)
        }
    };
    let (server_config, info) = match (initial, &mut pairs) {
        (Some(loaded), _) => loaded,
        (None, Pairs::Feed { label, rx }) => match first_pair(label, rx, &state).await {
            Ok(loaded) => loaded,
            Err(e) => {
                control.shutdown();
                return Err(e);
            }
        },
        (None, Pairs::Files(paths)) => tls::load(paths, tls::now())?,
    };
    state.metrics.cert_expiry.set(info.not_after);
    let rustls = RustlsConfig::from_config(server_config);

    let handle = Handle::<SocketAddr>::with_control(control.clone());
    let mut server = axum_server::bind_rustls(opts.addr, rustls.clone())
        .handle(handle.clone())
        .first_request_timeout(Duration::from_secs(10));
    server
        .http_builder()
        .http1()
        .header_read_timeout(Duration::from_secs(10));
    let app = router(state.clone());
    let main = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    let Some(addr) = handle.listening().await else {
        // The probe listener, if up, goes too: a later start binds it again.
        control.shutdown();
        return Err(ServeError::Bind {
            addr: opts.addr,
            source: std::io::Error::other("the TLS listener failed to bind"),
        });
    };

    // The reloaders live as long as this server, so a restarted one has its own.
    let mut reloaders = vec![match pairs {
        Pairs::Files(paths) => tokio::spawn(reload_certificates(
            paths,
            rustls,
            state.clone(),
            opts.cert_poll,
        )),
        Pairs::Feed { label, rx } => tokio::spawn(reload_fed(label, rx, rustls, state.clone())),
    }];
    if state.policies.dir().is_some() {
        reloaders.push(tokio::spawn(reload_policies(
            state.clone(),
            opts.policy_poll,
        )));
    }
    let done = tokio::spawn(async move {
        let r = main.await.map_err(std::io::Error::other);
        for reloader in &reloaders {
            reloader.abort();
        }
        let r = r?;
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

/// Waits for SIGTERM or SIGINT.
pub async fn signal() {
    shutdown_signal().await
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

/// Swaps a checked pair in, or keeps the previous one: logged, counted and shown by
/// readiness until a good pair arrives.
fn swap(
    rustls: &RustlsConfig,
    state: &AppState,
    source: &str,
    loaded: Result<(Arc<rustls::ServerConfig>, tls::CertInfo), tls::TlsError>,
) {
    match loaded {
        Ok((config, info)) => {
            rustls.reload_from_config(config);
            state.metrics.cert_expiry.set(info.not_after);
            state
                .metrics
                .cert_reloads
                .get_or_create(&ResultLabels { result: "ok" })
                .inc();
            state.readiness.set_problem("certificate", None);
            tracing::info!(cert = %source, not_after = info.not_after, "serving certificate reloaded");
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
        }
    }
}

/// Re-reads the certificate pair when its files change. A pair that fails the checks
/// is refused and the old one keeps serving.
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
        // A bad pair is not retried until the files change again.
        current = seen;
        swap(
            &rustls,
            &state,
            &paths.cert.display().to_string(),
            tls::load(&paths, tls::now()),
        );
    }
}

/// Swaps in each new pair of the feed (the follower only publishes changes).
async fn reload_fed(
    label: String,
    mut rx: tokio::sync::watch::Receiver<Option<crate::certs::follow::Pair>>,
    rustls: RustlsConfig,
    state: Arc<AppState>,
) {
    // Set while the newest pair is refused as not valid yet: retried on a timer.
    let mut pending: Option<crate::certs::follow::Pair> = None;
    loop {
        let retry = async {
            match &pending {
                Some(_) => tokio::time::sleep(Duration::from_secs(10)).await,
                None => std::future::pending().await,
            }
        };
        let pair = tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                rx.borrow_and_update().clone()
            }
            _ = retry => pending.take(),
        };
        if let Some((cert, key)) = pair {
            let loaded = load_fed(&label, &cert, &key);
            pending = matches!(loaded, Err(tls::TlsError::NotYetValid { .. }))
                .then(|| (cert.clone(), key.clone()));
            swap(&rustls, &state, &label, loaded);
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
