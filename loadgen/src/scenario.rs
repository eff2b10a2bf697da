//! The scenarios: each validates its flags, builds a [`Plan`] for the engine, drives the
//! phases (and the MQTT application) and writes `summary.json` next to the `.hlog` files.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::mqtt::Publisher;
use crate::watch::Watch;
use anyhow::{bail, Context};
use serde_json::json;

use crate::app::{self, Shared};
use crate::device::WAKAAMA_OBJECTS;
use crate::engine::{run_worker, Control, Plan};
use crate::metrics::{
    collect, fmt_ns, Clock, Counter, Counters, IntervalMsg, Metric, MetricTotal, Recorder,
};
use crate::net::{EchoSink, EchoStats, MultiSource};
use crate::{BaselineArgs, CommandArgs, DeviceArgs, OutputArgs, RegisterStormArgs};

/// Most sockets (threads) a run may use.
const MAX_SOCKETS: u32 = 64;
/// Devices addressable from 127.16.0.1 up to 127.255.255.254.
pub(crate) const MAX_DEVICES: u32 = (128 << 24) - (127 << 24 | 16 << 16) - 2;
/// How often phase conditions are checked.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// How long in-flight notifications and responses may take after sending stops.
pub(crate) const DRAIN: Duration = Duration::from_secs(3);
/// Every this many commands, a probe measures the broker's own round trip alongside.
const PROBE_EVERY: u64 = 10;
/// How long observations may take to be established after the last observe command.
pub(crate) const OBSERVE_SETTLE: Duration = Duration::from_secs(10);
/// Socket receive timeout of the device sockets (they poll before receiving anyway).
const SOCKET_TIMEOUT: Duration = Duration::from_millis(1);

/// What a scenario body gets to work with.
pub(crate) struct Env<'a> {
    pub clock: Clock,
    pub counters: &'a Counters,
    pub ctl: &'a Control,
    tx: Sender<IntervalMsg>,
    /// The gateway process, with `--gateway-pid`.
    pub watch: Option<&'a Watch>,
    /// Scenario-specific results merged into `summary.json`.
    extra: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl Env<'_> {
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.tx.clone())
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Adds `key: value` to `summary.json`.
    pub fn report(&self, key: &str, value: serde_json::Value) {
        if let Ok(mut extra) = self.extra.lock() {
            extra.insert(key.to_string(), value);
        }
    }

    /// Polls `done` until it holds or `deadline_ns` passes; `true` if it held.
    pub fn wait(&self, deadline_ns: u64, mut done: impl FnMut() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            if self.now() >= deadline_ns {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for every device to register, fail or time out, or the registration timeout.
    pub fn wait_registered(&self, devices: u32, timeout: Duration) -> u64 {
        let c = self.counters;
        let settled = || {
            c.get(Counter::Registered) + c.get(Counter::RegisterFailed) + c.get(Counter::Timeouts)
        };
        self.wait(self.now() + timeout.as_nanos() as u64, || {
            settled() >= u64::from(devices)
        });
        c.get(Counter::Registered)
    }
}

pub(crate) fn loopback_v4(addr: SocketAddr, flag: &str) -> anyhow::Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_loopback() => Ok(a),
        other => bail!(
            "{flag} {other}: simulated devices use loopback addresses, so it must be on 127.0.0.0/8"
        ),
    }
}

pub(crate) fn check_rate(rate: f64, flag: &str) -> anyhow::Result<()> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("{flag} must be a positive number, got {rate}");
    }
    Ok(())
}

fn check_counts(devices: u32, sockets: u32) -> anyhow::Result<()> {
    if !(1..=MAX_DEVICES).contains(&devices) {
        bail!("--devices must be between 1 and {MAX_DEVICES}, got {devices}");
    }
    if !(1..=MAX_SOCKETS).contains(&sockets) || sockets > devices {
        bail!("--sockets must be between 1 and min({MAX_SOCKETS}, --devices), got {sockets}");
    }
    Ok(())
}

pub(crate) fn check_duration(d: Duration, flag: &str) -> anyhow::Result<()> {
    if d.is_zero() {
        bail!("{flag} must be longer than 0s");
    }
    Ok(())
}

/// Validates the shared device flags into a plan for a registering scenario.
pub(crate) fn device_plan(args: &DeviceArgs) -> anyhow::Result<Plan> {
    let target = loopback_v4(args.gateway, "--gateway")?;
    check_counts(args.devices, args.sockets)?;
    check_rate(args.rate, "--rate")?;
    check_duration(args.timeout, "--timeout")?;
    if args.lifetime == 0 {
        bail!("--lifetime must be at least 1 second");
    }
    if !(0.0..=1.0).contains(&args.queue_ratio) {
        bail!(
            "--queue-ratio must be between 0 and 1, got {}",
            args.queue_ratio
        );
    }
    let awake_ms = u32::try_from(args.awake.as_millis())
        .ok()
        .filter(|&ms| ms > 0)
        .with_context(|| {
            format!(
                "--awake must be between 1ms and 49 days, got {:?}",
                args.awake
            )
        })?;
    if args.prefix.is_empty() || args.prefix.contains(['/', '+', '#', '&', '?']) {
        bail!("--prefix must be non-empty and free of '/', '+', '#', '&' and '?'");
    }
    let dtls = if args.dtls {
        Some(crate::dtls::psk_config()?)
    } else {
        None
    };
    Ok(Plan {
        dtls,
        register_rate: args.rate,
        lifetime: args.lifetime,
        prefix: args.prefix.clone(),
        objects: WAKAAMA_OBJECTS.to_string(),
        queue_ratio: args.queue_ratio,
        awake_ms,
        ..Plan::new(target, args.devices, args.sockets)
    })
}

/// `register-storm`: every device registers once (and deregisters with `--deregister`).
pub fn register_storm(args: &RegisterStormArgs) -> anyhow::Result<bool> {
    let plan = device_plan(&args.devices)?;
    let mut metrics = vec![Metric::Register];
    if args.deregister {
        metrics.push(Metric::Deregister);
    }
    if plan.dtls.is_some() {
        metrics.push(Metric::DtlsHandshake);
    }
    let devices = args.devices.devices;
    execute(
        "register-storm",
        &args.devices.output,
        &metrics,
        Some(&plan),
        |env| {
            let registered = env.wait_registered(devices, args.devices.timeout);
            if args.deregister && registered > 0 {
                let timeouts = env.counters.get(Counter::Timeouts);
                env.ctl.start_deregister(env.now());
                let c = env.counters;
                env.wait(env.now() + args.devices.timeout.as_nanos() as u64, || {
                    c.get(Counter::Deregistered) + c.get(Counter::Timeouts) - timeouts >= registered
                });
            }
            Ok(())
        },
    )
}

/// `command-rtt`: read commands over MQTT at a set rate, timed to their responses.
pub fn command_rtt(args: &CommandArgs) -> anyhow::Result<bool> {
    let plan = device_plan(&args.devices)?;
    check_rate(args.command_rate, "--command-rate")?;
    check_duration(args.duration, "--duration")?;
    if !args.read_path.starts_with('/') {
        bail!("--read-path must start with '/', got {}", args.read_path);
    }
    let dev = &args.devices;
    let metrics = [Metric::Register, Metric::CommandRtt, Metric::BrokerRtt];
    execute("command-rtt", &dev.output, &metrics, Some(&plan), |env| {
        with_mqtt(
            env,
            &args.mqtt,
            &app::filters(&args.mqtt.topic_prefix, None),
            |client, shared| {
                if env.wait_registered(dev.devices, dev.timeout) == 0 {
                    bail!("no device registered with {}", dev.gateway);
                }
                let start = env.now() + POLL.as_nanos() as u64;
                shared
                    .command_rate
                    .store(args.command_rate.to_bits(), Ordering::Relaxed);
                shared.command_start.store(start, Ordering::Relaxed);
                let end = start + args.duration.as_nanos() as u64;
                let probe = app::probe_topic(&args.mqtt.topic_prefix);
                let mut k = 0u64;
                while pace(env, start, k, args.command_rate) < end {
                    if k % PROBE_EVERY == 0 {
                        client
                            .publish(&probe, k.to_string().as_bytes())
                            .context("publishing a broker probe")?;
                    }
                    let ep = format!("{}-{}", dev.prefix, k % u64::from(dev.devices));
                    client
                        .publish(
                            &app::command_topic(&args.mqtt.topic_prefix, &ep),
                            app::read_command(k, &args.read_path).as_bytes(),
                        )
                        .context("publishing a read command")?;
                    env.counters.add(Counter::CommandsSent, 1);
                    k += 1;
                }
                let c = env.counters;
                env.wait(env.now() + DRAIN.as_nanos() as u64, || {
                    c.get(Counter::CommandsOk) + c.get(Counter::CommandsFailed) >= k
                });
                let answered = c.get(Counter::CommandsOk) + c.get(Counter::CommandsFailed);
                c.add(Counter::Lost, k.saturating_sub(answered));
                Ok(())
            },
        )
    })
}

/// `udp-baseline`: the engine against a raw recvmmsg echo sink, whose own CPU per
/// datagram is reported beside the round trips.
pub fn udp_baseline(args: &BaselineArgs) -> anyhow::Result<bool> {
    let addr = loopback_v4(args.sink, "--sink")?;
    check_counts(args.devices, args.sockets)?;
    check_rate(args.rate, "--rate")?;
    check_duration(args.duration, "--duration")?;
    let sink = EchoSink::bind(addr, args.echo_sink)
        .with_context(|| format!("binding the echo sink on {addr}"))?;
    let target = sink.local_addr().context("echo sink address")?;
    let plan = Plan {
        echo: Some(target),
        ..Plan::new(target, args.devices, args.sockets)
    };
    execute(
        "udp-baseline",
        &args.output,
        &[Metric::UdpRtt],
        Some(&plan),
        |env| {
            let stats = echo_phase(env, &sink, args.rate, args.duration)?;
            env.report("echo", echo_json(&stats));
            println!("{}", echo_line(&stats));
            let c = env.counters;
            let lost = c
                .get(Counter::PingsSent)
                .saturating_sub(c.get(Counter::PingsOk));
            c.add(Counter::Timeouts, lost);
            Ok(())
        },
    )
}

/// Pings `sink` at `rate` for `duration` from the devices and waits (at most [`DRAIN`])
/// for the echoes; the sink runs on a thread of its own meanwhile.
pub(crate) fn echo_phase(
    env: &Env<'_>,
    sink: &EchoSink,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<EchoStats> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let echo = s.spawn(|| sink.run(&|| stop.load(Ordering::Relaxed)));
        let c = env.counters;
        let (sent, ok) = (c.get(Counter::PingsSent), c.get(Counter::PingsOk));
        let start = env.now();
        let end = start + duration.as_nanos() as u64;
        env.ctl.start_pings(start, rate, end);
        env.wait(end + DRAIN.as_nanos() as u64, || {
            env.now() > end && c.get(Counter::PingsOk) - ok >= c.get(Counter::PingsSent) - sent
        });
        stop.store(true, Ordering::Relaxed);
        echo.join()
            .map_err(|_| anyhow::anyhow!("the echo sink panicked"))?
            .context("echo sink")
    })
}

/// `echo sink: 50000 datagrams, 0.61 s CPU, 12.2 µs per datagram`.
pub(crate) fn echo_line(stats: &EchoStats) -> String {
    format!(
        "echo sink: {} datagrams, {:.2} s CPU, {} per datagram",
        stats.echoed,
        stats.cpu_ns as f64 / 1e9,
        stats
            .us_per_datagram()
            .map_or_else(|| "-".to_string(), |us| format!("{us:.1} µs")),
    )
}

/// The `echo` object of `summary.json`.
pub(crate) fn echo_json(stats: &EchoStats) -> serde_json::Value {
    json!({
        "echoed": stats.echoed,
        "cpu_s": stats.cpu_ns as f64 / 1e9,
        "cpu_us_per_datagram": stats.us_per_datagram(),
    })
}

/// Sleeps until item `k` of a schedule starting at `start` is due; returns its due time.
pub(crate) fn pace(env: &Env<'_>, start: u64, k: u64, rate: f64) -> u64 {
    let due = start + (k as f64 * 1e9 / rate) as u64;
    let now = env.now();
    if due > now {
        std::thread::sleep(Duration::from_nanos(due - now));
    }
    due
}

/// Runs `body` with a connected MQTT application, subscribed to `filters`
/// ([`app::filters`]).
pub(crate) fn with_mqtt(
    env: &Env<'_>,
    mqtt: &crate::MqttArgs,
    filters: &[String],
    body: impl FnOnce(&Publisher, &Shared) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (client, reader) = app::connect(mqtt.mqtt, filters)?;
    let shared = Shared::default();
    std::thread::scope(|s| {
        let rec = env.recorder();
        let sub =
            s.spawn(|| app::subscriber(reader, &client, env.clock, env.counters, &shared, rec));
        let subscribed = env.wait(env.now() + 6_000_000_000, || {
            shared.subscribed.load(Ordering::Acquire) || sub.is_finished()
        });
        let result = if subscribed && !sub.is_finished() {
            body(&client, &shared)
        } else {
            Ok(())
        };
        shared.stop.store(true, Ordering::Relaxed);
        client.disconnect();
        let sub_result = sub
            .join()
            .map_err(|_| anyhow::anyhow!("the MQTT subscriber panicked"))?
            .with_context(|| format!("MQTT application at {}", mqtt.mqtt));
        sub_result.and(result)
    })
}

/// The default result directory of `scenario` started at `at`.
fn default_dir(scenario: &str, at: SystemTime) -> PathBuf {
    let stamp: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    Path::new("perf/results").join(format!("{scenario}-{stamp}"))
}

fn status_line(c: &Counters) -> String {
    let mut parts: Vec<String> = Counter::ALL
        .iter()
        .filter(|&&k| !k.is_error() && !matches!(k, Counter::Timeouts) && c.get(k) > 0)
        .map(|&k| format!("{} {}", k.name(), c.get(k)))
        .collect();
    parts.push(format!("errors {}", c.errors()));
    parts.push(format!("timeouts {}", c.get(Counter::Timeouts)));
    parts.join(", ")
}

/// Runs the engine (when `plan` is given) and `body`, collects and writes the results.
/// `Ok(false)` when the run saw errors or timeouts.
pub(crate) fn execute(
    scenario: &str,
    out: &OutputArgs,
    metrics: &[Metric],
    plan: Option<&Plan>,
    body: impl FnOnce(&Env<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let started = SystemTime::now();
    let dir = out
        .out
        .clone()
        .unwrap_or_else(|| default_dir(scenario, started));
    let watch = out.gateway_pid.map(Watch::new).transpose()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sockets: Vec<MultiSource> = (0..plan.map_or(0, |p| p.sockets))
        .map(|_| MultiSource::bind(0, SOCKET_TIMEOUT))
        .collect::<Result<_, _>>()
        .context("binding the device sockets")?;
    let counters = Counters::default();
    let ctl = Control::default();
    let (tx, rx) = channel();
    let clock = Clock::start();
    let status = || match &watch {
        Some(w) => {
            w.sample();
            format!("{} | {}", status_line(&counters), w.status())
        }
        None => status_line(&counters),
    };
    let (totals, body_result, worker_results, extra) = std::thread::scope(|s| {
        let collector = s.spawn(|| collect(rx, clock, &dir, metrics, &status));
        let workers: Vec<_> = plan
            .map(|p| {
                sockets
                    .iter()
                    .enumerate()
                    .map(|(i, socket)| {
                        let rec = Recorder::new(tx.clone());
                        let (ctl, counters) = (&ctl, &counters);
                        s.spawn(move || run_worker(p, ctl, counters, clock, socket, i as u32, rec))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let env = Env {
            clock,
            counters: &counters,
            ctl: &ctl,
            tx,
            watch: watch.as_ref(),
            extra: Mutex::default(),
        };
        let body_result = body(&env);
        // The collector ends once every sender, this one included, is gone.
        let Env { tx, extra, .. } = env;
        drop(tx);
        let extra = extra.into_inner().unwrap_or_default();
        ctl.stop.store(true, Ordering::Relaxed);
        let worker_results: Vec<anyhow::Result<()>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a worker thread panicked"))
                    .and_then(|r| r)
            })
            .collect();
        let totals = collector
            .join()
            .map_err(|_| anyhow::anyhow!("the collector panicked"))
            .and_then(|r| r);
        (totals, body_result, worker_results, extra)
    });
    let ended = SystemTime::now();
    let elapsed = clock.now_ns();
    for r in worker_results {
        r?;
    }
    let totals = totals?;
    let mut summary = summary(
        scenario, &dir, started, ended, elapsed, &counters, &totals, plan,
    );
    if let Some(w) = &watch {
        summary["gateway"] = w.summary();
    }
    for (key, value) in extra {
        summary[key] = value;
    }
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    print_totals(&dir, &totals, &counters);
    if let Some(w) = &watch {
        println!("{}", w.status());
    }
    body_result?;
    Ok(counters.errors() == 0 && counters.get(Counter::Timeouts) == 0)
}

fn print_totals(dir: &Path, totals: &[MetricTotal], counters: &Counters) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for t in totals {
        // A closed stdout (e.g. piped into `head`) is not an error of the run.
        let _ = writeln!(
            out,
            "{}: {} ok ({:.0}/s); p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            t.metric.name(),
            t.hist.len(),
            t.throughput(),
            fmt_ns(t.hist.value_at_quantile(0.5)),
            fmt_ns(t.hist.value_at_quantile(0.9)),
            fmt_ns(t.hist.value_at_quantile(0.99)),
            fmt_ns(t.hist.value_at_quantile(0.999)),
            fmt_ns(t.hist.max()),
        );
    }
    let _ = writeln!(
        out,
        "{}; results in {}",
        status_line(counters),
        dir.display()
    );
}

#[allow(clippy::too_many_arguments)]
fn summary(
    scenario: &str,
    dir: &Path,
    started: SystemTime,
    ended: SystemTime,
    elapsed_ns: u64,
    counters: &Counters,
    totals: &[MetricTotal],
    plan: Option<&Plan>,
) -> serde_json::Value {
    let mut metrics = serde_json::Map::new();
    let us = |ns: u64| ns as f64 / 1e3;
    for t in totals {
        let h = &t.hist;
        metrics.insert(
            t.metric.name().into(),
            json!({
                "count": h.len(),
                "throughput_per_s": t.throughput(),
                "peak_interval_per_s": t.peak,
                "p50_us": us(h.value_at_quantile(0.5)),
                "p90_us": us(h.value_at_quantile(0.9)),
                "p99_us": us(h.value_at_quantile(0.99)),
                "p999_us": us(h.value_at_quantile(0.999)),
                "max_us": us(h.max()),
                "mean_us": h.mean() / 1e3,
            }),
        );
    }
    let counts: serde_json::Map<String, serde_json::Value> = Counter::ALL
        .iter()
        .map(|&c| (c.name().to_string(), json!(counters.get(c))))
        .collect();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "name": name,
        "scenario": scenario,
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
        "start": humantime::format_rfc3339_millis(started).to_string(),
        "end": humantime::format_rfc3339_millis(ended).to_string(),
        "duration_s": elapsed_ns as f64 / 1e9,
        "devices": plan.map(|p| p.devices),
        "sockets": plan.map(|p| p.sockets),
        "ok": totals.iter().map(|t| t.hist.len()).sum::<u64>(),
        "errors": counters.errors(),
        "timeouts": counters.get(Counter::Timeouts),
        "counters": counts,
        "metrics": metrics,
        "machine": machine(),
    })
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "hostname": read("/proc/sys/kernel/hostname"),
        "cpu": cpu,
    })
}
