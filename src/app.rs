//! The process, wired once: [`App::new`] builds every component from [`Settings`] (the
//! policy store, one metrics registry each component registers into, readiness, the
//! webhook state, the default-deny writer), [`App::start`] starts what the settings ask
//! for (the HTTPS webhook, the probe port, the warm-pool reconciler), [`App::run`] runs
//! until a signal and drains. `main` and the end-to-end harness both go through here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::audit;
use crate::certs;
use crate::config::Config;
use crate::facts::{ClusterFacts, KubeFacts};
use crate::metrics::Registry;
use crate::netpol::{DefaultDeny, KubeDefaultDeny, NoCluster};
use crate::policy::store::PolicyStore;
use crate::policy::{PolicyError, PolicySet};
use crate::reconcile;
use crate::runtime_check;
use crate::server::metrics::WebhookMetrics;
use crate::server::notices::{DenialNotices, KubeNotices, NoNotices};
use crate::server::tls::CertSource;
use crate::server::{self, AppState, Probes, Readiness, ServeError, ServeOptions};

/// Where the Rego policies come from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// Built-in rules only.
    None,
    /// A directory, watched and reloaded while the webhook runs.
    Dir { dir: PathBuf, deadline: Duration },
}

/// The warm-pool reconciler's part.
#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    pub options: reconcile::Options,
    /// `None`: a single replica, always acting.
    pub election: Option<reconcile::Election>,
    /// The leader's audit of what already runs (judged with [`Settings::policies`]).
    pub audit: Option<audit::Settings>,
}

/// Everything the process is asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub policies: PolicySource,
    /// The HTTPS webhook (`sandgate serve`); its `probe_addr` is replaced by [`Self::probe_addr`].
    pub webhook: Option<ServeOptions>,
    /// Plain-HTTP `/healthz`, `/readyz`, `/metrics`.
    pub probe_addr: Option<SocketAddr>,
    /// The reconciler (`sandgate reconcile`, `serve --reconcile`); needs a cluster.
    pub reconciler: Option<ReconcilerSettings>,
    /// How often a webhook with a cluster compares the sandbox RuntimeClass with the
    /// configuration.
    pub runtime_check_every: Duration,
    /// After SIGTERM, how long the webhook keeps accepting while not ready, so that the
    /// Service's endpoints drop this replica before it stops listening.
    pub shutdown_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("policies in {dir}: {source}")]
    Policies {
        dir: String,
        #[source]
        source: PolicyError,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("the reconciler needs a cluster: no Kubernetes client was configured")]
    NoCluster,
    #[error(transparent)]
    Reconciler(#[from] reconcile::RunError),
    #[error("{0} stopped unexpectedly: {1}")]
    Stopped(&'static str, String),
}

/// The components, built and not yet started.
pub struct App {
    settings: Settings,
    client: Option<kube::Client>,
    /// Readiness and the one registry, served on every port.
    probes: Probes,
    /// The webhook's state, when the process serves one.
    webhook: Option<Arc<AppState>>,
    reconcile_metrics: Option<reconcile::Metrics>,
    /// `sandgate_runtime_class_ok`, when the webhook has a cluster to check.
    runtime_class_ok: Option<prometheus_client::metrics::gauge::Gauge>,
    /// Self-managed TLS's metrics, when the webhook's certificates are managed.
    tls_metrics: Option<certs::Metrics>,
}

impl App {
    /// Builds every component. `client` is the cluster to talk to; without one (dev
    /// mode, tests) the default-deny side effect is a no-op and no reconciler can run.
    pub fn new(settings: Settings, client: Option<kube::Client>) -> Result<Self, AppError> {
        if settings.reconciler.is_some() && client.is_none() {
            return Err(AppError::NoCluster);
        }
        let managed_tls = settings
            .webhook
            .as_ref()
            .is_some_and(|w| matches!(w.certs, CertSource::Managed(_)));
        if managed_tls && client.is_none() {
            return Err(ServeError::ManagedNeedsCluster.into());
        }
        let mut registry = Registry::new();
        let audit_settings = settings.reconciler.as_ref().and_then(|r| r.audit.clone());
        // One policy store for the webhook and the audit, so both judge with one set.
        let store = if settings.webhook.is_some() || audit_settings.is_some() {
            Some(Arc::new(load_policies(&settings.policies)?))
        } else {
            None
        };
        let webhook_parts = match (&settings.webhook, &store) {
            (Some(_), Some(store)) => {
                Some((store.clone(), WebhookMetrics::register(&mut registry)))
            }
            _ => None,
        };
        let auditor = match (audit_settings, &store) {
            (Some(a), Some(store)) => Some(audit::Auditor {
                settings: audit::Settings {
                    // Without a webhook in the process, nobody else reloads the policies.
                    reload_policies: settings.webhook.is_none(),
                    ..a
                },
                policies: store.clone(),
                metrics: audit::Metrics::register(&mut registry),
            }),
            _ => None,
        };
        let reconcile_metrics = settings
            .reconciler
            .is_some()
            .then(|| reconcile::Metrics::register(&mut registry));
        let runtime_class_ok = (settings.webhook.is_some() && client.is_some())
            .then(|| runtime_check::register(&mut registry));
        let tls_metrics = managed_tls.then(|| certs::Metrics::register(&mut registry));
        let probes = Probes {
            readiness: Arc::new(Readiness::default()),
            registry: Arc::new(registry),
        };
        tracing::info!(
            runtime_class = %settings.config.runtime_class_name,
            excluded = ?settings.config.exclude_namespaces,
            "configuration loaded"
        );
        let webhook = webhook_parts.map(|(store, metrics)| {
            type Edges = (
                Arc<dyn DefaultDeny>,
                Arc<dyn ClusterFacts>,
                Arc<dyn DenialNotices>,
            );
            let (default_deny, facts, notices): Edges = match &client {
                Some(c) => (
                    Arc::new(KubeDefaultDeny::new(c.clone())),
                    Arc::new(KubeFacts::new(c.clone())),
                    Arc::new(KubeNotices::new(c.clone())),
                ),
                None => (
                    Arc::new(NoCluster),
                    Arc::new(crate::facts::NoCluster),
                    Arc::new(NoNotices),
                ),
            };
            AppState::from_parts(
                settings.config.clone(),
                default_deny,
                facts,
                notices,
                store,
                metrics,
                probes.registry.clone(),
                probes.readiness.clone(),
            )
        });
        let mut settings = settings;
        if let Some(r) = settings.reconciler.as_mut() {
            r.options.audit = auditor;
        }
        Ok(Self {
            settings,
            client,
            probes,
            webhook,
            reconcile_metrics,
            runtime_class_ok,
            tls_metrics,
        })
    }

    /// What `/readyz` answers from.
    pub fn readiness(&self) -> &Readiness {
        &self.probes.readiness
    }

    /// The metrics of every component, in the exposition format.
    pub fn metrics_text(&self) -> String {
        self.probes.registry.encode()
    }

    /// Starts what the settings ask for; returns once listeners are bound. Starting
    /// again is allowed once the previous [`Running`] has shut down (the state,
    /// metrics included, carries over).
    pub async fn start(&self) -> Result<Running, AppError> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut probe_addr = None;
        let mut probes = None;
        let mut tls_tasks = Vec::new();
        let webhook = match (&self.settings.webhook, &self.webhook) {
            (Some(opts), Some(state)) => {
                let opts = ServeOptions {
                    probe_addr: self.settings.probe_addr,
                    ..opts.clone()
                };
                let running = match (&opts.certs, &self.client, &self.tls_metrics) {
                    (CertSource::Managed(tls), Some(client), Some(metrics)) => {
                        // The manager first: on a fresh install it makes the pair the
                        // server waits for.
                        tls_tasks.push(tokio::spawn(certs::manager::run(
                            client.clone(),
                            (**tls).clone(),
                            metrics.clone(),
                            stop_rx.clone(),
                        )));
                        let (rx, follower) =
                            certs::follow::follow(client.clone(), &tls.namespace, &tls.secret);
                        tls_tasks.push(follower);
                        let label = format!("Secret {}/{}", tls.namespace, tls.secret);
                        server::start_fed(opts, state.clone(), label, rx).await
                    }
                    _ => server::start(opts, state.clone()).await,
                };
                let running = match running {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = stop.send(true);
                        for t in &tls_tasks {
                            t.abort();
                        }
                        return Err(e.into());
                    }
                };
                probe_addr = running.probe_addr;
                tracing::info!(addr = %running.addr, probe_addr = ?probe_addr, "sandgate webhook serving");
                Some(running)
            }
            _ => {
                if let Some(addr) = self.settings.probe_addr {
                    let (bound, task) =
                        server::probes::serve(addr, self.probes.clone(), stop_rx.clone()).await?;
                    tracing::info!(addr = %bound, "probes and metrics");
                    probe_addr = Some(bound);
                    probes = Some(task);
                }
                self.probes.readiness.set_serving(true);
                None
            }
        };
        let runtime_check = match (&self.client, &self.runtime_class_ok) {
            (Some(client), Some(ok)) => Some(tokio::spawn(runtime_check::watch(
                client.clone(),
                self.settings.config.runtime_class_name.clone(),
                self.settings.config.runtime_handler.clone(),
                self.probes.readiness.clone(),
                ok.clone(),
                self.settings.runtime_check_every,
            ))),
            _ => None,
        };
        let reconciler = match (
            &self.settings.reconciler,
            &self.client,
            &self.reconcile_metrics,
        ) {
            (Some(r), Some(client), Some(metrics)) => Some(tokio::spawn(reconcile::run_elected(
                client.clone(),
                self.settings.config.clone(),
                r.options.clone(),
                metrics.clone(),
                r.election.clone(),
                stop_rx,
            ))),
            _ => None,
        };
        Ok(Running {
            webhook,
            probe_addr,
            probes,
            tls_tasks,
            runtime_check,
            reconciler,
            stop,
            readiness: self.probes.readiness.clone(),
            grace: self
                .settings
                .webhook
                .as_ref()
                .map_or(Duration::from_secs(2), |w| w.shutdown_grace),
        })
    }

    /// Runs until SIGTERM or SIGINT (or until a component stops on its own), then
    /// drains and stops everything.
    pub async fn run(&self) -> Result<(), AppError> {
        // A webhook waiting for its first certificate must still stop on SIGTERM (as
        // PID 1 an unhandled signal is ignored).
        let mut running = tokio::select! {
            started = self.start() => started?,
            _ = server::signal() => {
                tracing::info!("SIGTERM before the webhook started: stopping");
                return Ok(());
            }
        };
        let outcome = tokio::select! {
            _ = server::signal() => {
                let delay = self.settings.shutdown_delay;
                if running.webhook.is_some() && !delay.is_zero() {
                    running.readiness.set_serving(false);
                    tracing::info!(delay_seconds = delay.as_secs_f64(), "SIGTERM: not ready, still serving while endpoints catch up");
                    tokio::time::sleep(delay).await;
                }
                tracing::info!(grace_seconds = running.grace.as_secs(), "shutting down: draining");
                Ok(())
            }
            stopped = running.stopped() => stopped,
        };
        let drained = running.shutdown().await;
        tracing::info!("sandgate stopped");
        outcome.and(drained)
    }
}

/// The policy store the webhook starts with; a directory that does not load stops the
/// start (there is no previous set to keep).
fn load_policies(source: &PolicySource) -> Result<PolicyStore, AppError> {
    match source {
        PolicySource::None => {
            tracing::warn!("no policy directory: built-in rules only");
            Ok(PolicyStore::fixed(PolicySet::empty()))
        }
        PolicySource::Dir { dir, deadline } => {
            let store = PolicyStore::load(dir, *deadline).map_err(|source| AppError::Policies {
                dir: dir.display().to_string(),
                source,
            })?;
            let names: Vec<String> = store
                .get()
                .policies()
                .iter()
                .map(|p| p.name.clone())
                .collect();
            tracing::info!(dir = %dir.display(), policies = ?names, "policies loaded");
            Ok(store)
        }
    }
}

/// A started [`App`].
pub struct Running {
    webhook: Option<server::Running>,
    probe_addr: Option<SocketAddr>,
    probes: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Self-managed TLS: the manager (stops on `stop`, giving its Lease up) and the
    /// Secret follower.
    tls_tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime_check: Option<tokio::task::JoinHandle<()>>,
    reconciler: Option<tokio::task::JoinHandle<Result<(), reconcile::RunError>>>,
    /// Stops the reconciler (releasing its lease) and the probe port.
    stop: tokio::sync::watch::Sender<bool>,
    readiness: Arc<Readiness>,
    grace: Duration,
}

impl Running {
    /// Where the HTTPS webhook listens.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().map(|w| w.addr)
    }

    /// Where the plain probe port listens.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_addr
    }

    /// Resolves when the reconciler stops on its own (it lost its lease: the process
    /// must exit so it restarts as a standby). Pending forever without one.
    async fn stopped(&mut self) -> Result<(), AppError> {
        match self.reconciler.as_mut() {
            None => std::future::pending().await,
            Some(task) => {
                let result = task.await;
                self.reconciler = None;
                match result {
                    Ok(Ok(())) => Err(AppError::Stopped("reconciler", "without an error".into())),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(AppError::Stopped("reconciler", e.to_string())),
                }
            }
        }
    }

    /// Marks the process not ready, drains the webhook within its grace, stops the
    /// reconciler (giving its lease up) and the probe port.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.readiness.set_serving(false);
        let _ = self.stop.send(true);
        if let Some(check) = &self.runtime_check {
            check.abort();
        }
        let webhook = async {
            match self.webhook {
                Some(w) => w
                    .shutdown(self.grace)
                    .await
                    .map_err(|e| AppError::Stopped("webhook", e.to_string())),
                None => Ok(()),
            }
        };
        let reconciler = async {
            match self.reconciler {
                Some(task) => match task.await {
                    Ok(r) => r.map_err(AppError::from),
                    Err(e) => Err(AppError::Stopped("reconciler", e.to_string())),
                },
                None => Ok(()),
            }
        };
        let (w, r) = tokio::join!(webhook, reconciler);
        if let Some(p) = self.probes {
            let _ = p.await;
        }
        // The manager gives its Lease up on `stop`; the follower has nothing to finish.
        let mut tls_tasks = self.tls_tasks;
        if let Some(follower) = tls_tasks.pop() {
            follower.abort();
        }
        for manager in tls_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), manager).await;
        }
        w.and(r)
    }
}
