use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use sandgate::cli::{
    Cli, Command, CrdsArgs, LogFormat, PolicyCommand, ReconcileArgs, ReconcileOpts, ServeArgs,
};
use sandgate::policy::PolicySet;
use sandgate::policy::store::PolicyStore;
use sandgate::server::{self, AppState, ServeOptions, devcerts, tls::CertPaths};
use sandgate::{check, crd, netpol};

// Policy evaluation allocates heavily; mimalloc cut its time by about a fifth
// (BENCHMARKS.md, "Where the time goes").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything touches TLS.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a rustls crypto provider was already installed");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => ExitCode::from(check::run(&args)),
        Command::Crds(args) => crds(&args),
        Command::Reconcile(args) => reconcile(args),
        Command::Policy(PolicyCommand::Test(args)) => {
            ExitCode::from(sandgate::policy::testing::run_cli(&args))
        }
        Command::Version => {
            println!("sandgate {}", sandgate::VERSION);
            ExitCode::SUCCESS
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let certs = if args.dev {
        match devcerts::ensure(&args.certs_dir) {
            Ok((certs, made)) => {
                let verb = if made { "made" } else { "reusing" };
                tracing::info!(dir = %args.certs_dir.display(), ca = %certs.ca_cert.display(), "{verb} dev certificates");
                certs.serving
            }
            Err(e) => return fail(e),
        }
    } else {
        CertPaths {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        }
    };
    let addr = args.addr.unwrap_or_else(|| {
        if args.dev {
            ([127, 0, 0, 1], 8443).into()
        } else {
            ([0, 0, 0, 0], 8443).into()
        }
    });
    let opts = ServeOptions {
        addr,
        probe_addr: args.probe_addr,
        certs,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        cert_poll: Duration::from_secs(30),
        policy_poll: Duration::from_secs(1),
    };
    tracing::info!(
        runtime_class = %config.runtime_class_name,
        excluded = ?config.exclude_namespaces,
        "configuration loaded"
    );
    let store = match args.policy.dir() {
        Err(e) => return fail(e),
        Ok(None) => {
            tracing::warn!("no policy directory: built-in rules only");
            PolicyStore::fixed(PolicySet::empty())
        }
        Ok(Some(dir)) => match PolicyStore::load(&dir, args.policy.deadline()) {
            Ok(store) => {
                let names: Vec<String> = store
                    .get()
                    .policies()
                    .iter()
                    .map(|p| p.name.clone())
                    .collect();
                tracing::info!(dir = %dir.display(), policies = ?names, "policies loaded");
                store
            }
            Err(e) => return fail(format!("policies in {}: {e}", dir.display())),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let default_deny: Arc<dyn netpol::DefaultDeny> = if args.dev {
        Arc::new(netpol::NoCluster)
    } else {
        // Check the certificate first: its error is the more useful one.
        if let Err(e) = server::tls::load(&opts.certs, server::tls::now()) {
            return fail(format!("serving certificate: {e}"));
        }
        match runtime.block_on(kube::Client::try_default()) {
            Ok(client) => Arc::new(netpol::KubeDefaultDeny::new(client)),
            Err(e) => {
                return fail(format!(
                    "cannot reach the cluster to manage NetworkPolicies ({e}); run with --dev to serve without one"
                ));
            }
        }
    };
    let reconcile_cfg = config.clone();
    let mut reconciler_stop = None;
    let state = AppState::with_policies(config, default_deny, store);
    if args.reconcile {
        let client = match runtime.block_on(kube::Client::try_default()) {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot reach the cluster for the reconciler: {e}")),
        };
        let metrics = state.metrics.reconcile.clone();
        let (opts, election) = reconcile_settings(&args.reconcile_opts);
        // The reconciler stops with the process; losing the lease ends it.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        reconciler_stop = Some(stop_tx);
        runtime.spawn(async move {
            if let Err(e) = sandgate::reconcile::run_elected(
                client,
                reconcile_cfg,
                opts,
                metrics,
                election,
                stop_rx,
            )
            .await
            {
                tracing::error!(error = %e, "reconciler stopped");
                std::process::exit(1);
            }
        });
    }
    let result = runtime.block_on(server::run(opts, state));
    if let Some(stop) = reconciler_stop {
        let _ = stop.send(true);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn crds(args: &CrdsArgs) -> ExitCode {
    let all = crd::all();
    match &args.out_dir {
        None => match crd::to_yaml(&all) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Some(dir) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return fail(format!("cannot create {}: {e}", dir.display()));
            }
            for c in &all {
                let path = dir.join(crd::file_name(c));
                let text = match crd::to_yaml(std::slice::from_ref(c)) {
                    Ok(t) => t,
                    Err(e) => return fail(e),
                };
                if let Err(e) = std::fs::write(&path, text) {
                    return fail(format!("cannot write {}: {e}", path.display()));
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn reconcile_settings(
    o: &ReconcileOpts,
) -> (
    sandgate::reconcile::Options,
    Option<sandgate::reconcile::Election>,
) {
    let identity = o.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let opts = sandgate::reconcile::Options {
        ready_grace: Duration::from_secs(o.ready_grace),
        instance: Some(identity.clone()),
    };
    let election = (!o.no_leader_election).then(|| sandgate::reconcile::Election {
        namespace: o.lease_namespace.clone(),
        lease: o.lease_name.clone(),
        identity,
        duration: Duration::from_secs(o.lease_duration.max(1)),
    });
    (opts, election)
}

fn reconcile(args: ReconcileArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let client = match runtime.block_on(kube::Client::try_default()) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot reach the cluster: {e}")),
    };
    let (opts, election) = reconcile_settings(&args.reconcile);
    let state = AppState::new(config.clone(), Arc::new(netpol::NoCluster));
    state.readiness.set_serving(true);
    let metrics = state.metrics.reconcile.clone();
    let result = runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let probes = server::serve_probes(args.probe_addr, state, stop_rx.clone()).await;
        match probes {
            Ok(addr) => tracing::info!(%addr, "reconciler probes and metrics"),
            Err(e) => return Err(e.to_string()),
        }
        tokio::spawn(async move {
            server::signal().await;
            tracing::info!("shutting down the reconciler");
            let _ = stop_tx.send(true);
        });
        sandgate::reconcile::run_elected(client, config, opts, metrics, election, stop_rx)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
