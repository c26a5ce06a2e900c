//! What each command does: arguments in, the library called, results rendered, an exit
//! code out. Nothing here decides anything about a sandbox.

use std::process::ExitCode;
use std::time::Duration;

use super::{
    AuditArgs, CheckArgs, Cli, Command, CrdsArgs, OutputFormat, PolicyCommand, PolicyTestArgs,
    ReconcileArgs, ReconcileOpts, ServeArgs, TlsMode, render,
};
use crate::app::{App, ReconcilerSettings, Settings};
use crate::server::{ServeOptions, devcerts, tls};
use crate::{audit, certs, check, crd, policy, reconcile};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Reconcile(args) => reconcile(args),
        Command::Check(args) => check(&args),
        Command::Audit(args) => audit_cluster(&args),
        Command::Policy(PolicyCommand::Test(args)) => policy_test(&args),
        Command::Crds(args) => crds(&args),
        Command::Version => {
            println!("sandgate {}", crate::VERSION);
            ExitCode::SUCCESS
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
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
                tls::CertSource::Files(certs.serving)
            }
            Err(e) => return fail(e),
        }
    } else if args.tls_mode == TlsMode::SelfManaged {
        match self_tls(&args) {
            Ok(s) => tls::CertSource::Managed(Box::new(s)),
            Err(e) => return fail(e),
        }
    } else {
        let paths = tls::CertPaths {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        };
        // Checked before reaching for the cluster: its error is the more useful one.
        if let Err(e) = tls::load(&paths, tls::now()) {
            return fail(format!("serving certificate: {e}"));
        }
        tls::CertSource::Files(paths)
    };
    let policies = match args.policy.source() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let addr = args.addr.unwrap_or_else(|| {
        if args.dev {
            ([127, 0, 0, 1], 8443).into()
        } else {
            ([0, 0, 0, 0], 8443).into()
        }
    });
    let settings = Settings {
        config,
        policies,
        webhook: Some(ServeOptions {
            addr,
            probe_addr: None,
            certs,
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            cert_poll: Duration::from_secs(30),
            policy_poll: Duration::from_secs(1),
        }),
        probe_addr: args.probe_addr,
        reconciler: args
            .reconcile
            .then(|| reconciler_settings(&args.reconcile_opts)),
        runtime_check_every: crate::contract::RUNTIME_CLASS_CHECK_EVERY,
        shutdown_delay: Duration::from_secs(if args.dev { 0 } else { args.shutdown_delay }),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let client = if args.dev {
        None
    } else {
        match runtime.block_on(kube::Client::try_default()) {
            Ok(c) => Some(c),
            Err(e) => {
                return fail(format!(
                    "cannot reach the cluster to manage NetworkPolicies ({e}); run with --dev to serve without one"
                ));
            }
        }
    };
    run_app(&runtime, settings, client)
}

fn reconcile(args: ReconcileArgs) -> ExitCode {
    let config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let client = match runtime.block_on(kube::Client::try_default()) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot reach the cluster: {e}")),
    };
    let policies = match args.policy.source() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let settings = Settings {
        config,
        policies,
        webhook: None,
        probe_addr: Some(args.probe_addr),
        reconciler: Some(reconciler_settings(&args.reconcile)),
        runtime_check_every: crate::contract::RUNTIME_CLASS_CHECK_EVERY,
        shutdown_delay: Duration::ZERO,
    };
    run_app(&runtime, settings, Some(client))
}

fn run_app(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    client: Option<kube::Client>,
) -> ExitCode {
    let result = runtime.block_on(async move { App::new(settings, client)?.run().await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// This replica's identity in its Leases: $POD_NAME, else host name and pid.
fn identity(o: &ReconcileOpts) -> String {
    o.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

fn self_tls(args: &ServeArgs) -> Result<certs::Settings, String> {
    let o = &args.self_tls;
    let lifetimes = certs::Lifetimes {
        ca: Duration::from_secs(o.tls_ca_validity),
        cert: Duration::from_secs(o.tls_cert_validity),
        grace: Duration::from_secs(o.tls_rotation_grace),
    }
    .validated()
    .map_err(|e| format!("self-managed TLS: {e}"))?;
    Ok(certs::Settings {
        namespace: o.tls_namespace.clone(),
        secret: o.tls_secret.clone(),
        service: o.tls_service.clone(),
        webhook_configuration: o.webhook_configuration.clone(),
        extra_names: o.tls_extra_name.clone(),
        lifetimes,
        identity: identity(&args.reconcile_opts),
        lease_duration: Duration::from_secs(args.reconcile_opts.lease_duration.max(1)),
        check_every: Duration::from_secs(o.tls_check_every.max(1)),
    })
}

fn reconciler_settings(o: &ReconcileOpts) -> ReconcilerSettings {
    let identity = identity(o);
    ReconcilerSettings {
        options: reconcile::Options {
            ready_grace: Duration::from_secs(o.ready_grace),
            instance: Some(identity.clone()),
            cache_lag: o.fault_cache_lag_ms.map(Duration::from_millis),
            audit: None,
        },
        audit: (!o.audit.no_audit).then(|| audit::Settings {
            interval: Duration::from_secs(o.audit.audit_interval.max(1)),
            qps: o.audit.audit_qps,
            max_results: o.audit.audit_max_results.max(1),
            reload_policies: false,
        }),
        election: (!o.no_leader_election).then(|| reconcile::Election {
            namespace: o.lease_namespace.clone(),
            lease: o.lease_name.clone(),
            identity,
            duration: Duration::from_secs(o.lease_duration.max(1)),
        }),
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    let cfg = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let policies = match args.policy.dir() {
        Err(e) => return fail(e),
        Ok(None) => policy::PolicySet::empty(),
        Ok(Some(dir)) => match policy::PolicySet::load_dir(&dir, args.policy.deadline()) {
            Ok(p) => p,
            Err(e) => return fail(format!("policies in {}: {e}", dir.display())),
        },
    };
    let scope = check::Scope {
        all: args.all,
        enforced_namespaces: args.enforce_namespace.iter().cloned().collect(),
        ..check::Scope::default()
    };
    let report = check::check_paths(&args.paths, &cfg, &scope, &policies);
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(format!("cannot encode the report: {e}")),
        },
        OutputFormat::Text => print!("{}", render::check_report(&report)),
    }
    ExitCode::from(report.exit_code())
}

fn load_policy_set(args: &super::PolicyArgs) -> Result<policy::PolicySet, String> {
    match args.dir()? {
        None => Ok(policy::PolicySet::empty()),
        Some(dir) => policy::PolicySet::load_dir(&dir, args.deadline())
            .map_err(|e| format!("policies in {}: {e}", dir.display())),
    }
}

fn audit_cluster(args: &AuditArgs) -> ExitCode {
    let cfg = match args.config.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let policies = match load_policy_set(&args.policy) {
        Ok(p) => std::sync::Arc::new(p),
        Err(e) => return fail(e),
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let only: Option<std::collections::BTreeSet<String>> =
        (!args.namespace.is_empty()).then(|| args.namespace.iter().cloned().collect());
    let qps = args.qps;
    let metrics = audit::Metrics::unregistered();
    let requests = metrics.requests.clone();
    let started = std::time::Instant::now();
    let result = runtime.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("cannot reach the cluster: {e}"))?;
        let scanner = audit::scan::Scanner::new(client, cfg, qps, requests);
        scanner
            .scan(policies, only.as_ref())
            .await
            .map_err(|e| e.to_string())
    });
    let mut scan = match result {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    for ns in std::mem::take(&mut scan.missing_default_deny) {
        let j = audit::scan::Scan::default_deny_missing(&ns, "sandgate's reconciler creates it");
        scan.namespaces.entry(ns).or_default().push(j);
    }
    let report = audit::report::Listing::of(&scan, &metrics.requests, started.elapsed());
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(format!("cannot encode the report: {e}")),
        },
        OutputFormat::Text => print!("{}", render::audit_listing(&report, args.verbose)),
    }
    ExitCode::from(report.exit_code())
}

fn policy_test(args: &PolicyTestArgs) -> ExitCode {
    let results = match policy::testing::run(&args.dir) {
        Ok(r) => r,
        Err(e) => return fail(format!("policies in {}: {e}", args.dir.display())),
    };
    let summary = policy::testing::Summary::of(&results);
    match args.output {
        OutputFormat::Json => {
            let report = serde_json::json!({"results": results, "summary": summary});
            match serde_json::to_string_pretty(&report) {
                Ok(s) => println!("{s}"),
                Err(e) => return fail(format!("cannot encode the report: {e}")),
            }
        }
        OutputFormat::Text => print!("{}", render::policy_tests(&results, &summary, args.verbose)),
    }
    if results.is_empty() {
        eprintln!(
            "warning: no test_* rules found under {}",
            args.dir.display()
        );
    }
    ExitCode::from(summary.exit_code())
}

fn crds(args: &CrdsArgs) -> ExitCode {
    let all = crd::all();
    let Some(dir) = &args.out_dir else {
        return match crd::to_yaml(&all) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    };
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
