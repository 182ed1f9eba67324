//! The `lodestar` binary: the CLI over the catalog (and, with the DNS issue, the agent).
//! Kept thin: parsing, wiring and output; the work is in the crates.

mod agent;
mod cache;
mod cli;
mod client;
mod config;
mod dcos_dns_json;
mod demo;
mod mesos_sync;
mod ops;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    init_logging(&args);
    if matches!(args.command, cli::Command::MesosSync(_)) {
        mesos_sync::one_malloc_arena();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lodestar: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<config::ConfigError>() => {
            if let Some(config::ConfigError(problems)) = e.downcast_ref() {
                for p in problems {
                    eprintln!("lodestar: config error: {p}");
                }
            }
            ExitCode::from(config::ConfigError::EXIT_CODE)
        }
        Err(e) => {
            // One line: the error and its causes, outermost first.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("lodestar: error: {}", dedup_chain(chain).join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Drops a cause whose text the previous message already includes.
fn dedup_chain(chain: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in chain {
        if out.last().is_some_and(|prev| prev.contains(&c)) {
            continue;
        }
        out.push(c);
    }
    out
}

fn init_logging(args: &cli::Args) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LODESTAR_LOG")
        .unwrap_or_else(|_| EnvFilter::new(args.default_log_level()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => builder.init(),
    }
}
