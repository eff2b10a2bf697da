//! `lwm2m-gateway`: command line → configuration → runtime.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use lwm2m_gateway::config::{Config, LogConfig, DEFAULT_CONFIG};
use lwm2m_gateway::persist::PersistError;
use lwm2m_gateway::runtime::{self, StartError};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Thread-per-core LwM2M server: CoAP devices in, MQTT messages out.
#[derive(Debug, Parser)]
#[command(name = "lwm2m-gateway", version, about)]
struct Cli {
    /// Configuration file (TOML); without it the built-in defaults apply. SIGHUP re-reads
    /// it and applies `[log] filter`.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the default configuration, with every key, and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

/// Exit code for a configuration error (SPEC §3), and for a UDP port another process
/// already holds.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the gateway cannot start or fails while running.
const EXIT_RUNTIME: u8 = 1;

/// Swaps the log filter of the running subscriber.
type LogHandle = reload::Handle<EnvFilter, Registry>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default_config()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lwm2m-gateway: bad configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("configuration OK ({} shards)", config.gateway.shards);
        return ExitCode::SUCCESS;
    }
    let (filter, _) = log_filter(&config.log);
    let (filter, log) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .init();

    let mut running = config.clone();
    let path = cli.config.clone();
    match runtime::run(config, || reload(path.as_deref(), &mut running, &log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = chain_text(&e);
            tracing::error!("{text}");
            eprintln!("lwm2m-gateway: {text}");
            match e.downcast_ref::<StartError>() {
                // Another instance holds the port or the journal, or the journal is a
                // newer gateway's: nothing to retry until the operator acts.
                Some(
                    StartError::PortHeld { .. }
                    | StartError::Persist(
                        PersistError::Locked { .. } | PersistError::NewerFormat { .. },
                    ),
                ) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::from(EXIT_RUNTIME),
            }
        }
    }
}

/// `e` and its causes joined by `: `, leaving out a cause the message before it already
/// ends with: several error types print their source in their own message, and the
/// operator should read each reason once.
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// The log filter and where it came from: `RUST_LOG` when set and valid, else `[log] filter`
/// (validated with the configuration).
fn log_filter(config: &LogConfig) -> (EnvFilter, &'static str) {
    let env = std::env::var("RUST_LOG").unwrap_or_default();
    if !env.is_empty() {
        if let Ok(filter) = EnvFilter::try_new(&env) {
            return (filter, "RUST_LOG");
        }
    }
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    (filter, "log.filter")
}

/// SIGHUP: re-reads the configuration file and applies what can change while running, the
/// log filter; other changes are logged as waiting for a restart. A file that no longer
/// validates is reported and the running configuration kept.
fn reload(path: Option<&Path>, running: &mut Config, log: &LogHandle) {
    let Some(path) = path else {
        tracing::info!("SIGHUP: no configuration file to re-read; nothing changed");
        return;
    };
    let newer = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; the running configuration is kept");
            return;
        }
    };
    let (filter, source) = log_filter(&newer.log);
    if let Err(e) = log.reload(filter) {
        tracing::warn!("SIGHUP: cannot swap the log filter: {e}");
    }
    tracing::info!(config = %path.display(), filter_from = source, "SIGHUP: configuration re-read, log filter applied");
    let restart = running.restart_needed(&newer);
    if !restart.is_empty() {
        tracing::warn!(
            "SIGHUP: changes in [{}] take effect only after a restart",
            restart.join("], [")
        );
    }
    running.log = newer.log;
}
