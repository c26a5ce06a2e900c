//! The command line (DESIGN.md §6): the clap types here, what each command does in
//! [`commands`] (turning arguments into settings, calling the library, choosing the
//! exit code), and how results are printed in [`render`]. clap stays in this layer.

mod commands;
pub mod render;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::PolicySource;
use crate::config::{self, Config, ConfigError, Overrides};
use crate::contract;

pub use commands::run;

#[derive(Debug, Parser)]
#[command(
    name = "sandgate",
    version = crate::VERSION,
    about = "Policy plane for AI-agent sandboxes on Kubernetes",
    long_about = "sandgate keeps AI-agent sandbox pods in their box: a mutating and validating \
admission webhook that puts every sandbox pod under gVisor with resource limits, no host \
access and no service-account token, and the tools to check manifests offline."
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SANDGATE_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of `serve`'s arguments costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS (/mutate, /validate, /healthz, /readyz, /metrics).
    ///
    /// With --dev, a local CA and a serving certificate for localhost are made once under
    /// --certs-dir and reused, and the server listens on 127.0.0.1:8443: no cluster needed.
    /// The serving certificate is reloaded when its files change; SIGTERM drains
    /// in-flight requests before exiting.
    Serve(ServeArgs),
    /// Judge manifests offline with the webhook's own rules.
    ///
    /// Reads YAML or JSON files (multi-document), directories (recursively: *.yaml,
    /// *.yml, *.json) or '-' for standard input. Every object is judged as a CREATE
    /// would be: the built-in rules (after sandgate's mutation, for pods) and then the
    /// Rego policies of its kind. Deployments, Jobs and other workloads are judged
    /// through their pod template when it would produce sandbox pods. Exit code: 0 all
    /// passed, 1 something denied, 2 input or policy error.
    Check(CheckArgs),
    /// Audit what already runs in a cluster (kubeconfig) with the webhook's own rules.
    ///
    /// Judges every sandbox pod (labelled, or in a namespace labelled
    /// sandbox.gke.io/enforce=true), SandboxTemplate, SandboxClaim and NetworkPolicy
    /// beside sandbox pods as the webhook would if they were created now, and checks
    /// that each sandbox namespace has its default-deny NetworkPolicy. Reads only: it
    /// writes no report and changes nothing. Exit code: 0 all passed, 1 something
    /// failed, 2 the cluster could not be read or an object could not be judged.
    Audit(AuditArgs),
    /// Print the CustomResourceDefinitions (what deploy/crds/ holds), generated from the types.
    Crds(CrdsArgs),
    /// Work with Rego policies offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the warm-pool reconciler: SandboxTemplates keep poolConfig.size sandboxes
    /// ready (and their NetworkPolicies in place), SandboxClaims bind one at once.
    ///
    /// Replicas elect a leader on a coordination.k8s.io Lease; only the leader acts.
    /// /healthz, /readyz and /metrics are served over plain HTTP on --probe-addr.
    Reconcile(ReconcileArgs),
    /// Print the version.
    Version,
}

/// Operator configuration, shared by serve and check.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// YAML configuration file (see the README's configuration reference).
    #[arg(long, value_name = "FILE", env = "SANDGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// RuntimeClass every sandbox pod must use [default: gvisor].
    #[arg(long, value_name = "NAME")]
    pub runtime_class: Option<String>,
    /// Request given to containers without one, e.g. cpu=500m (repeatable).
    #[arg(long, value_name = "RES=QTY", value_parser = config::parse_resource_flag)]
    pub default_request: Vec<(String, String)>,
    /// Limit given to containers without one, e.g. memory=1Gi (repeatable).
    #[arg(long, value_name = "RES=QTY", value_parser = config::parse_resource_flag)]
    pub default_limit: Vec<(String, String)>,
    /// Highest limit a sandbox container may have, e.g. cpu=4 (repeatable).
    #[arg(long, value_name = "RES=QTY", value_parser = config::parse_resource_flag)]
    pub max_limit: Vec<(String, String)>,
    /// Lowest limit a sandbox container may have, e.g. memory=16Mi (repeatable; zero is
    /// never allowed).
    #[arg(long, value_name = "RES=QTY", value_parser = config::parse_resource_flag)]
    pub min_limit: Vec<(String, String)>,
    /// Highest sum of a sandbox pod's limits (all its containers, plus overhead), e.g.
    /// cpu=8 (repeatable).
    #[arg(long, value_name = "RES=QTY", value_parser = config::parse_resource_flag)]
    pub max_pod_limit: Vec<(String, String)>,
    /// Namespace left alone even if its pods reach the webhook (repeatable; added to the
    /// configured list, which defaults to kube-system and sandgate-system).
    #[arg(long, value_name = "NAMESPACE")]
    pub exclude_namespace: Vec<String>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(
            self.config.as_deref(),
            Overrides {
                runtime_class_name: self.runtime_class.clone(),
                default_requests: self.default_request.clone(),
                default_limits: self.default_limit.clone(),
                max_limits: self.max_limit.clone(),
                min_limits: self.min_limit.clone(),
                max_pod_limits: self.max_pod_limit.clone(),
                exclude_namespaces: self.exclude_namespace.clone(),
            },
        )
    }
}

/// Where the Rego policies come from (serve and check).
#[derive(Debug, Args, Clone, Default)]
pub struct PolicyArgs {
    /// Directory of Rego policies and their data files [default: ./policies when it
    /// exists; none otherwise].
    #[arg(long, value_name = "DIR", env = "SANDGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Run the built-in rules only, even if ./policies exists.
    #[arg(long, conflicts_with = "policies")]
    pub no_policies: bool,
    /// Deadline of one policy evaluation, in milliseconds; a policy that runs longer denies.
    #[arg(long, value_name = "MS", default_value_t = contract::DEFAULT_POLICY_DEADLINE.as_millis() as u64)]
    pub policy_deadline_ms: u64,
}

impl PolicyArgs {
    /// The directory to load, if any: an explicit one must exist; the default is used
    /// only when present.
    pub fn dir(&self) -> Result<Option<PathBuf>, String> {
        if self.no_policies {
            return Ok(None);
        }
        match &self.policies {
            Some(d) if d.is_dir() => Ok(Some(d.clone())),
            Some(d) => Err(format!("policy directory {} does not exist", d.display())),
            None => {
                let d = PathBuf::from("policies");
                Ok(d.is_dir().then_some(d))
            }
        }
    }

    pub fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.policy_deadline_ms.max(1))
    }

    /// The policies to serve.
    pub fn source(&self) -> Result<PolicySource, String> {
        Ok(match self.dir()? {
            None => PolicySource::None,
            Some(dir) => PolicySource::Dir {
                dir,
                deadline: self.deadline(),
            },
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the test_* rules of every *_test.rego under DIR (default: policies), with the
    /// policies and data files beside them, like `opa test`. Exit code 1 on any failure,
    /// 2 when the policies do not load.
    Test(PolicyTestArgs),
}

#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// Policy directory.
    #[arg(default_value = "policies")]
    pub dir: PathBuf,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also list passing tests.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Reconciler settings (reconcile, and serve --reconcile).
#[derive(Debug, Args, Clone)]
pub struct ReconcileOpts {
    /// Run without leader election (a single replica).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = contract::NAMESPACE
    )]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, value_name = "NAME", default_value = contract::LEASE_NAME)]
    pub lease_name: String,
    /// Seconds without renewal after which another replica takes the lease over.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lease_duration: u64,
    /// This replica's identity in the Lease [default: $POD_NAME, else host name and pid].
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a scheduled pool pod may take to become Ready before it is replaced.
    #[arg(long, value_name = "SECONDS", default_value_t = contract::DEFAULT_READY_GRACE.as_secs())]
    pub ready_grace: u64,
    /// Fault injection (tests): deliver every watch event to the reconciler's caches this
    /// many milliseconds late, as a loaded apiserver would.
    #[arg(long, hide = true, value_name = "MS")]
    pub fault_cache_lag_ms: Option<u64>,
    #[command(flatten)]
    pub audit: AuditOpts,
}

/// The leader's background audit (reconcile, and serve --reconcile).
#[derive(Debug, Args, Clone)]
pub struct AuditOpts {
    /// Do not audit what already runs (no PolicyReports, no audit events or metrics).
    #[arg(long)]
    pub no_audit: bool,
    /// Seconds between full audit sweeps (sweeps also run on start, when the policies
    /// change and when a namespace becomes enforced).
    #[arg(long, value_name = "SECONDS", default_value_t = contract::audit::DEFAULT_INTERVAL.as_secs())]
    pub audit_interval: u64,
    /// Apiserver requests per second the audit may make (0: no limit).
    #[arg(long, value_name = "N", default_value_t = contract::audit::DEFAULT_QPS)]
    pub audit_qps: u32,
    /// Results one PolicyReport holds at most (failures first; the summary counts all).
    #[arg(long, value_name = "N", default_value_t = contract::audit::DEFAULT_MAX_RESULTS)]
    pub audit_max_results: usize,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,
    #[command(flatten)]
    pub reconcile: ReconcileOpts,
    /// The policies the audit judges with (reloaded when they change).
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Audit only this namespace (repeatable) [default: every namespace].
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Vec<String>,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also list objects that pass.
    #[arg(long, short)]
    pub verbose: bool,
    /// Apiserver requests per second, at most (0: no limit).
    #[arg(long, value_name = "N", default_value_t = contract::audit::DEFAULT_QPS)]
    pub qps: u32,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Development mode: make (once) and use a local CA and serving certificate under
    /// --certs-dir, and listen on 127.0.0.1:8443 unless --addr is given.
    #[arg(long)]
    pub dev: bool,
    /// Address of the HTTPS listener [default: 0.0.0.0:8443, or 127.0.0.1:8443 with --dev].
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// Also serve /healthz, /readyz and /metrics over plain HTTP on this address.
    #[arg(long, value_name = "ADDR")]
    pub probe_addr: Option<SocketAddr>,
    /// Serving certificate (PEM, leaf first). Ignored with --dev.
    #[arg(long, value_name = "FILE", default_value = "/etc/sandgate/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// Serving key (PEM). Ignored with --dev.
    #[arg(long, value_name = "FILE", default_value = "/etc/sandgate/tls/tls.key")]
    pub tls_key: PathBuf,
    /// Where --dev keeps its CA and serving certificate.
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// Where the serving certificate comes from: `files` (--tls-cert/--tls-key, e.g. a
    /// mounted cert-manager Secret) or `self` (the replicas keep a CA and the serving
    /// pair in a Secret, write the caBundle of sandgate's webhook configurations and
    /// rotate both before they expire).
    #[arg(long, value_enum, default_value_t = TlsMode::Files, conflicts_with = "dev")]
    pub tls_mode: TlsMode,
    #[command(flatten)]
    pub self_tls: SelfTlsOpts,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// Seconds between SIGTERM and closing the listener: not ready but still serving,
    /// so the apiserver stops picking this replica before it stops answering.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub shutdown_delay: u64,
    /// Also run the warm-pool reconciler in this process (needs a cluster).
    #[arg(long, conflicts_with = "dev")]
    pub reconcile: bool,
    #[command(flatten)]
    pub reconcile_opts: ReconcileOpts,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    Files,
    #[value(name = "self")]
    SelfManaged,
}

/// Self-managed TLS (`--tls-mode=self`).
#[derive(Debug, Args, Clone)]
pub struct SelfTlsOpts {
    /// The Secret holding the CA and the serving pair (in the namespace below).
    #[arg(long, value_name = "NAME", default_value = contract::tls::SECRET)]
    pub tls_secret: String,
    /// Namespace of the Secret, the Service and the Lease sandgate-tls.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = contract::NAMESPACE
    )]
    pub tls_namespace: String,
    /// The Service the apiserver calls: the certificate names it.
    #[arg(long, value_name = "NAME", default_value = contract::SERVICE)]
    pub tls_service: String,
    /// Another name (DNS or IP) for the serving certificate (repeatable).
    #[arg(long, value_name = "NAME")]
    pub tls_extra_name: Vec<String>,
    /// The Mutating- and ValidatingWebhookConfiguration whose caBundle is kept.
    #[arg(long, value_name = "NAME", default_value = contract::tls::WEBHOOK_CONFIGURATION)]
    pub webhook_configuration: String,
    /// Seconds the CA is valid (a new one joins in its last third).
    #[arg(long, value_name = "SECONDS", default_value_t = contract::tls::DEFAULT_CA_VALIDITY.as_secs())]
    pub tls_ca_validity: u64,
    /// Seconds a serving certificate is valid (reissued in its last third).
    #[arg(long, value_name = "SECONDS", default_value_t = contract::tls::DEFAULT_CERT_VALIDITY.as_secs())]
    pub tls_cert_validity: u64,
    /// Seconds between rotation steps (the apiserver and the replicas catch up).
    #[arg(long, value_name = "SECONDS", default_value_t = contract::tls::DEFAULT_ROTATION_GRACE.as_secs())]
    pub tls_rotation_grace: u64,
    /// Seconds between checks of the Secret and the caBundles.
    #[arg(long, value_name = "SECONDS", default_value_t = contract::tls::DEFAULT_CHECK_EVERY.as_secs())]
    pub tls_check_every: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files, directories, or '-' for standard input.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub paths: Vec<PathBuf>,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Judge every pod and workload as a sandbox, labelled or not.
    #[arg(long)]
    pub all: bool,
    /// Treat this namespace as labelled sandbox.gke.io/enforce=true (repeatable).
    /// Namespace objects in the input with that label count too.
    #[arg(long, value_name = "NAMESPACE")]
    pub enforce_namespace: Vec<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}
