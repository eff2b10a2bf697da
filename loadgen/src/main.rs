//! `loadgen`: simulates fleets of wakaama-style LwM2M devices against lwm2m-gateway, plays
//! the MQTT application, and records what it measured.
//!
//! Every device has its own loopback source address (127.16.0.1 upwards) without a socket
//! of its own: a few sockets send on behalf of all of them (see [`net`]). Everything is
//! paced open-loop and timed from its due time (see [`engine`]). Each run writes
//! HdrHistogram interval logs and a `summary.json` under `perf/results/<run>/`;
//! `loadgen dashboard` renders runs into one offline HTML page.

mod app;
mod dashboard;
mod device;
mod dtls;
mod engine;
mod handshake;
mod metrics;
mod mqtt;
mod net;
mod notify;
mod scenario;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use device::{Format, ResourcePath};

/// Simulates LwM2M devices against lwm2m-gateway and measures it.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)]
enum Command {
    /// Register N devices as fast as asked (P3), optionally deregister them.
    #[command(alias = "register")]
    RegisterStorm(RegisterStormArgs),
    /// Devices register, get observed over MQTT, then notify at a set rate (P2).
    SteadyNotify(NotifyArgs),
    /// The MQTT application reads registered devices at a set rate (P5).
    CommandRtt(CommandArgs),
    /// A raw recvmmsg echo sink driven by the same engine: this machine's UDP limit.
    UdpBaseline(BaselineArgs),
    /// Register, update before lifetime expiry and notify, for a long time.
    Soak(NotifyArgs),
    /// Render result directories into one self-contained HTML page.
    Dashboard(DashboardArgs),
    /// Write the PSK file (`identity:hexkey:endpoint`) the gateway needs for `--dtls` runs.
    PskFile(PskFileArgs),
    /// Full PSK handshakes per second through the cookie exchange, then resumptions (P6).
    DtlsHandshake(HandshakeArgs),
}

/// Options every device scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Gateway CoAP address (loopback: devices send from 127.16.0.1 upwards).
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub gateway: SocketAddr,
    /// Number of devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Registrations started per second (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Registration lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    pub lifetime: u32,
    /// Endpoint name prefix; device i registers as `<prefix>-<i>`.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
    /// Sockets (each with its own thread) the devices are spread over.
    #[arg(long, default_value_t = 1)]
    pub sockets: u32,
    /// Fraction of devices in queue mode (LwM2M 1.0 `b=UQ`), 0..=1: they listen for
    /// `--awake` after each of their own messages and sleep (drop requests) otherwise.
    #[arg(long, default_value_t = 0.0)]
    pub queue_ratio: f64,
    /// How long a queue-mode device stays reachable after each of its messages: at least
    /// the gateway's `qmode_time_window` (22s by default) and a little more, or the gateway
    /// sends to a device that already sleeps.
    #[arg(long, default_value = "23s", value_parser = humantime::parse_duration)]
    pub awake: Duration,
    /// Longest the registration phase may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Speak CoAP inside DTLS (PSK from `loadgen psk-file`): each device handshakes
    /// before it registers; `--gateway` is then the DTLS port (5684).
    #[arg(long)]
    pub dtls: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where results go.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Result directory [default: perf/results/<scenario>-<UTC timestamp>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// PID of the gateway under test: its RSS and CPU time go on the progress line and
    /// into summary.json (e.g. `--gateway-pid $(pidof lwm2m-gateway)`).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
}

/// Options of `register-storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegisterStormArgs {
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Deregister every device afterwards.
    #[arg(long)]
    pub deregister: bool,
}

/// How to reach the MQTT side of the gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct MqttArgs {
    /// MQTT broker the gateway publishes to.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Topic prefix of the gateway's mountpoint (`<prefix>/<ep>/...`).
    #[arg(long, default_value = "lwm2m")]
    pub topic_prefix: String,
}

/// Options of `steady-notify` and `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub devices: DeviceArgs,
    #[command(flatten)]
    pub mqtt: MqttArgs,
    /// Resource every device is observed on.
    #[arg(long, default_value = "/3/0/9")]
    pub path: ResourcePath,
    /// Notifications per second over all devices (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    pub notify_rate: f64,
    /// Fraction of notifications sent CON (the rest NON), 0..=1.
    #[arg(long, default_value_t = 0.1)]
    pub con_ratio: f64,
    /// Notification payload format.
    #[arg(long, value_enum, default_value_t = Format::Tlv)]
    pub format: Format,
    /// Observe commands published per second.
    #[arg(long, default_value_t = 10_000.0)]
    pub observe_rate: f64,
    /// soak: fraction of Updates a device sends from its other loopback address, as after
    /// a NAT rebinding (the gateway must follow it, across shards if need be), 0..=1.
    #[arg(long, default_value_t = 0.0)]
    pub rebind_ratio: f64,
    /// How long devices notify (soak: how long the whole run lasts).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Queue-mode devices (`--queue-ratio`) sleep and wake this often, each wake a
    /// notification or an Update (alternately), instead of notifying with the rest;
    /// 0s: they notify with the rest.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wake_period: Duration,
    /// Read commands published per second while devices notify, to devices in turn,
    /// sleeping ones included; 0: none.
    #[arg(long, default_value_t = 0.0)]
    pub command_rate: f64,
    /// Path the commands read.
    #[arg(long, default_value = "/3/0")]
    pub read_path: String,
    /// Time to live of each command (`mheaders.ttl`, whole seconds) [default: the
    /// gateway's, the device's lifetime].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub command_ttl: Option<Duration>,
    /// After each notify phase, drive the echo sink of `udp-baseline` at the same rate for
    /// as long, and print the gateway's CPU per notification (with `--gateway-pid`) beside
    /// the sink's CPU per datagram.
    #[arg(long)]
    pub echo_baseline: bool,
    /// Notify phases (each followed by its echo phase with `--echo-baseline`), so the two
    /// sides interleave on a noisy machine.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// The MQTT application subscribes to the notifications of every Nth device only (and
    /// still to every device's responses), so the broker forwards 1/N of them: SPEC P2
    /// measures ingest to the broker, and fanning every notification out to a subscriber
    /// on the same box costs the broker and loadgen more CPU than the gateway. Latency and
    /// loss come from the sample; the delivered rate is the sample's scaled by N.
    #[arg(long, default_value_t = 1)]
    pub sample: u32,
    /// The echo sink of `--echo-baseline`: `blocking` (a plain thread) or `glommio` (the
    /// shard's receive path on an executor, a wake-up per datagram).
    #[arg(long, value_enum, default_value_t = net::SinkKind::Blocking)]
    pub echo_sink: net::SinkKind,
}

/// Options of `command-rtt`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommandArgs {
    #[command(flatten)]
    pub devices: DeviceArgs,
    #[command(flatten)]
    pub mqtt: MqttArgs,
    /// Read commands published per second (open loop).
    #[arg(long, default_value_t = 10_000.0)]
    pub command_rate: f64,
    /// Path every command reads (`/3/0`: TLV of the Device object).
    #[arg(long, default_value = "/3/0")]
    pub read_path: String,
    /// How long commands are published.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// Options of `udp-baseline`.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    /// Address the echo sink binds (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sink: SocketAddr,
    /// Simulated devices the datagrams come from.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Datagrams per second (open loop).
    #[arg(long, default_value_t = 200_000.0)]
    pub rate: f64,
    /// Sending sockets (threads).
    #[arg(long, default_value_t = 1)]
    pub sockets: u32,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// `blocking` (a plain thread) or `glommio` (the shard's receive path on an executor).
    #[arg(long, value_enum, default_value_t = net::SinkKind::Blocking)]
    pub echo_sink: net::SinkKind,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `psk-file`.
#[derive(Debug, Clone, clap::Args)]
pub struct PskFileArgs {
    /// Number of devices (endpoints `<prefix>-0` upwards).
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Endpoint name prefix, as given to the other scenarios.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
    /// File to write [default: standard output].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Options of `dtls-handshake`.
#[derive(Debug, Clone, clap::Args)]
pub struct HandshakeArgs {
    /// Gateway DTLS address (loopback: devices send from 127.16.0.1 upwards).
    #[arg(long, default_value = "127.0.0.1:5684")]
    pub gateway: SocketAddr,
    /// Number of devices, each handshaking once (and resuming once with `--resume`).
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Handshakes started per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Endpoint name (PSK identity) prefix, as given to `psk-file`.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
    /// Afterwards, resume every saved session from a new source port (abbreviated
    /// handshakes, as after a NAT rebinding).
    #[arg(long)]
    pub resume: bool,
    /// Client threads (one socket each); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// A handshake not finished this long after it was due counts as failed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Result directories (each with `summary.json` and `.hlog` files).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// HTML file to write.
    #[arg(long, default_value = "perf/dashboard.html")]
    pub out: PathBuf,
}

/// `psk-file`: one `identity:hexkey:endpoint` line per device.
fn psk_file(args: &PskFileArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let devices = u64::from(args.devices);
    match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            dtls::write_psk_file(&mut std::io::BufWriter::new(file), &args.prefix, devices)
                .with_context(|| format!("writing {}", path.display()))
        }
        None => dtls::write_psk_file(&mut std::io::stdout().lock(), &args.prefix, devices)
            .context("writing the PSK file"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RegisterStorm(args) => scenario::register_storm(&args),
        Command::SteadyNotify(args) => notify::steady_notify(&args, false),
        Command::Soak(args) => notify::steady_notify(&args, true),
        Command::CommandRtt(args) => scenario::command_rtt(&args),
        Command::UdpBaseline(args) => scenario::udp_baseline(&args),
        Command::PskFile(args) => psk_file(&args).map(|()| true),
        Command::DtlsHandshake(args) => handshake::dtls_handshake(&args),
        Command::Dashboard(args) => dashboard::render_to(&args.runs, &args.out).map(|()| {
            println!("wrote {}", args.out.display());
            true
        }),
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
