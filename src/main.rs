use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use sandgate::cli::{self, Cli, LogFormat};

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
    cli::run(cli)
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
