//! `loadgen`: simulates fleets of wakaama-style LwM2M devices against lwm2m-gateway.
//!
//! Every device has its own loopback source address (127.16.0.1 upwards) without a socket
//! of its own: a few sockets send on behalf of all of them (see [`net`]). Requests are
//! paced open-loop: device `i` is due at `start + i / rate`, and latency is measured from
//! that due time, so a slow gateway cannot hide behind a slow load generator.

mod net;
mod register;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Simulates LwM2M devices against lwm2m-gateway.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Register N devices (each from its own loopback address), optionally deregister them.
    Register(RegisterArgs),
}

/// Options of the `register` scenario.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Gateway CoAP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub gateway: SocketAddr,
    /// Number of devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Registrations started per second (open loop).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Registration lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    pub lifetime: u32,
    /// Endpoint name prefix; device i registers as `<prefix>-<i>`.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
    /// Sockets (and threads) the devices are spread over.
    #[arg(long, default_value_t = 1)]
    pub sockets: u32,
    /// Deregister every device afterwards.
    #[arg(long)]
    pub deregister: bool,
    /// Give up on the run after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Register(args) => register::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
