//! `lwm2m-gateway`: command line → configuration → runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lwm2m_gateway::config::{Config, DEFAULT_CONFIG};
use lwm2m_gateway::runtime;

/// Thread-per-core LwM2M server: CoAP devices in, MQTT messages out.
#[derive(Debug, Parser)]
#[command(name = "lwm2m-gateway", version, about)]
struct Cli {
    /// Configuration file (TOML); without it the built-in defaults apply.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the default configuration, with every key, and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

/// Exit code for a configuration error (SPEC §3).
const EXIT_CONFIG: u8 = 2;
/// Exit code when the gateway cannot start or fails while running.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=off".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

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
    match runtime::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("lwm2m-gateway: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
