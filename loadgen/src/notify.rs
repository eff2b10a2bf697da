//! `steady-notify` and `soak`: devices register, the MQTT application observes them, and
//! they notify at a set rate. Optionally, meanwhile, read commands go to devices in turn,
//! sleeping (queue-mode) ones included (`--command-rate`), and after each notify phase the
//! `udp-baseline` echo sink is driven at the same rate (`--echo-baseline`), so the
//! gateway's CPU per notification and the sink's CPU per datagram come from one run.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context};
use serde_json::json;

use crate::app::{self, Shared, OBSERVE_ID_BASE};
use crate::metrics::{Counter, Metric};
use crate::mqtt::Publisher;
use crate::net::{EchoSink, EchoStats};
use crate::scenario::{
    check_duration, check_rate, device_plan, echo_json, echo_line, echo_phase, execute, pace,
    with_mqtt, Env, DRAIN, MAX_DEVICES, OBSERVE_SETTLE,
};
use crate::NotifyArgs;

/// Most notify phases a run may have: each is followed by a drain and an echo phase.
const MAX_ROUNDS: u32 = 100;

/// Largest `--sample`: beyond, too few devices are watched for loss and latency to mean
/// much at the device counts loadgen runs.
const MAX_SAMPLE: u32 = 1000;

/// `steady-notify` (`soak` = with updates, and `--duration` bounding the whole run).
pub fn steady_notify(args: &NotifyArgs, soak: bool) -> anyhow::Result<bool> {
    let mut plan = device_plan(&args.devices)?;
    check_flags(args, soak)?;
    let path = args.path;
    let instance = format!("</{}/{}>", path.object, path.instance);
    if !plan.objects.contains(&instance) {
        plan.objects.push(',');
        plan.objects.push_str(&instance);
    }
    plan.notify_path = path;
    plan.format = args.format;
    plan.con_ratio = args.con_ratio;
    plan.updates = soak;
    plan.rebind_ratio = args.rebind_ratio;
    plan.notify_sample = args.sample;
    let sleepers = args.devices.queue_ratio > 0.0;
    if sleepers {
        plan.wake_period_ns = args.wake_period.as_nanos() as u64;
    }
    let sink = if args.echo_baseline {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let sink = EchoSink::bind(any, args.echo_sink).context("binding the echo sink")?;
        plan.echo = Some(sink.local_addr().context("echo sink address")?);
        Some(sink)
    } else {
        None
    };
    let mut metrics = vec![Metric::Register];
    if soak || plan.wake_period_ns > 0 {
        metrics.push(Metric::Update);
    }
    metrics.push(Metric::NotifyE2e);
    if args.command_rate > 0.0 {
        metrics.extend([Metric::CommandRtt, Metric::QueuedRtt]);
    }
    if sink.is_some() {
        metrics.push(Metric::UdpRtt);
    }
    if plan.dtls.is_some() {
        metrics.push(Metric::DtlsHandshake);
    }
    let name = if soak { "soak" } else { "steady-notify" };
    let dev = &args.devices;
    execute(name, &dev.output, &metrics, Some(&plan), |env| {
        let sample = Some((dev.prefix.as_str(), dev.devices, args.sample));
        let filters = app::filters(&args.mqtt.topic_prefix, sample);
        with_mqtt(env, &args.mqtt, &filters, |client, shared| {
            let registered = env.wait_registered(dev.devices, dev.timeout);
            if registered == 0 {
                bail!("no device registered with {}", dev.gateway);
            }
            if plan.wake_period_ns > 0 {
                env.ctl.start_wakes(env.now());
            }
            observe(env, args, client, shared, registered)?;
            shared
                .devices
                .store(u64::from(dev.devices), Ordering::Relaxed);
            shared
                .queue_ratio
                .store(dev.queue_ratio.to_bits(), Ordering::Relaxed);
            let mut rounds = Vec::new();
            let mut commands = 0;
            for round in 0..args.rounds {
                let (phase, sent) = notify_phase(env, args, soak, client, shared)?;
                commands += sent;
                let echo = match &sink {
                    Some(sink) => Some(echo_phase(env, sink, args.notify_rate, args.duration)?),
                    None => None,
                };
                let report = round_report(round, args.notify_rate, &phase, echo.as_ref());
                println!("{}", report.0);
                rounds.push(report.1);
            }
            env.report("rounds", json!(rounds));
            settle_commands(env, args, shared, commands);
            Ok(())
        })
    })
}

/// Validates the flags of `steady-notify` and `soak` beyond the device flags.
fn check_flags(args: &NotifyArgs, soak: bool) -> anyhow::Result<()> {
    check_rate(args.notify_rate, "--notify-rate")?;
    check_rate(args.observe_rate, "--observe-rate")?;
    check_duration(args.duration, "--duration")?;
    if !(0.0..=1.0).contains(&args.con_ratio) {
        bail!(
            "--con-ratio must be between 0 and 1, got {}",
            args.con_ratio
        );
    }
    if !(0.0..=1.0).contains(&args.rebind_ratio) {
        bail!(
            "--rebind-ratio must be between 0 and 1, got {}",
            args.rebind_ratio
        );
    }
    if args.rebind_ratio > 0.0 && !soak {
        bail!("--rebind-ratio needs Updates to rebind on: use it with soak");
    }
    if args.rebind_ratio > 0.0 && args.devices.devices > MAX_DEVICES / 2 {
        bail!(
            "--rebind-ratio gives every device a second address: at most {} devices",
            MAX_DEVICES / 2
        );
    }
    if args.rebind_ratio > 0.0 && args.devices.dtls {
        bail!("--rebind-ratio with --dtls would need session resumption on rebinding, which the device simulation does not do");
    }
    if !args.wake_period.is_zero() && args.wake_period <= args.devices.awake {
        bail!(
            "--wake-period ({:?}) must be longer than --awake ({:?}), or devices never sleep",
            args.wake_period,
            args.devices.awake
        );
    }
    if !(args.command_rate >= 0.0 && args.command_rate.is_finite()) {
        bail!(
            "--command-rate must be 0 or a positive number, got {}",
            args.command_rate
        );
    }
    if !args.read_path.starts_with('/') || args.read_path.contains('"') {
        bail!(
            "--read-path must start with '/' and hold no '\"', got {}",
            args.read_path
        );
    }
    if args.command_ttl.is_some_and(|t| t.as_secs() == 0) {
        bail!("--command-ttl must be at least 1s");
    }
    if !(1..=MAX_ROUNDS).contains(&args.rounds) {
        bail!("--rounds must be between 1 and {MAX_ROUNDS}");
    }
    if args.rounds > 1 && (soak || args.command_rate > 0.0) {
        bail!("--rounds > 1 is for steady-notify without --command-rate (commands are timed on one schedule)");
    }
    if args.echo_baseline && soak {
        bail!("--echo-baseline is for steady-notify");
    }
    if !(1..=MAX_SAMPLE).contains(&args.sample) || args.sample > args.devices.devices.max(1) {
        bail!(
            "--sample must be between 1 and {MAX_SAMPLE} and at most --devices, got {}",
            args.sample
        );
    }
    Ok(())
}

/// Publishes one observe per device and waits until the devices accepted them and their
/// answers came back over MQTT (so the gateway's work on them is not counted in the first
/// notify phase); a sleeping device gets its observe when it next wakes.
fn observe(
    env: &Env<'_>,
    args: &NotifyArgs,
    client: &Publisher,
    shared: &Shared,
    registered: u64,
) -> anyhow::Result<()> {
    let dev = &args.devices;
    let path = args.path.to_string();
    let start = env.now();
    for g in 0..u64::from(dev.devices) {
        pace(env, start, g, args.observe_rate);
        let ep = format!("{}-{g}", dev.prefix);
        client
            .publish(
                &app::command_topic(&args.mqtt.topic_prefix, &ep),
                app::observe_command(OBSERVE_ID_BASE + g, &path).as_bytes(),
            )
            .context("publishing an observe command")?;
    }
    let mut settle = OBSERVE_SETTLE;
    if dev.queue_ratio > 0.0 && !args.wake_period.is_zero() {
        settle = settle.max(args.wake_period + DRAIN);
    }
    let c = env.counters;
    env.wait(env.now() + settle.as_nanos() as u64, || {
        c.get(Counter::Observed) >= registered
    });
    if c.get(Counter::Observed) == 0 {
        bail!("no device was observed: does the gateway handle observe commands?");
    }
    env.wait(env.now() + DRAIN.as_nanos() as u64, || {
        shared.observe_answers.load(Ordering::Relaxed) >= c.get(Counter::Observed)
    });
    Ok(())
}

/// What one notify phase cost the gateway.
struct NotifyPhase {
    /// Length of the phase, its drain included (s).
    seconds: f64,
    /// Notifications received over MQTT during it.
    received: u64,
    /// Notifications delivered to the broker during it: `received`, or with `--sample`
    /// `received` scaled by all the devices' notifications over the watched devices'.
    delivered: u64,
    /// The gateway's CPU time over it (s), with `--gateway-pid`.
    gateway_cpu_s: Option<f64>,
}

/// Notifies for `--duration` (publishing commands meanwhile with `--command-rate`) and
/// drains; returns the phase and the number of commands published.
fn notify_phase(
    env: &Env<'_>,
    args: &NotifyArgs,
    soak: bool,
    client: &Publisher,
    shared: &Shared,
) -> anyhow::Result<(NotifyPhase, u64)> {
    let c = env.counters;
    let received = c.get(Counter::NotifyReceived);
    let (watched, unwatched) = (c.get(Counter::NotifySent), c.get(Counter::NotifyUnwatched));
    let cpu = env.watch.map(|w| w.cpu_seconds_now());
    let notify_start = env.now();
    env.ctl.start_notify(notify_start, args.notify_rate);
    let end = if soak { 0 } else { notify_start } + args.duration.as_nanos() as u64;
    let commands = if args.command_rate > 0.0 {
        publish_commands(env, args, client, shared, end)?
    } else {
        env.wait(end, || shared.stop.load(Ordering::Relaxed));
        0
    };
    env.ctl.stop_notify();
    env.wait(env.now() + DRAIN.as_nanos() as u64, || {
        c.get(Counter::NotifyReceived) >= c.get(Counter::NotifySent)
    });
    let received = c.get(Counter::NotifyReceived) - received;
    let watched = c.get(Counter::NotifySent) - watched;
    let unwatched = c.get(Counter::NotifyUnwatched) - unwatched;
    let delivered = match watched {
        0 => received,
        w => (u128::from(received) * u128::from(w + unwatched) / u128::from(w)) as u64,
    };
    let phase = NotifyPhase {
        seconds: env.now().saturating_sub(notify_start) as f64 / 1e9,
        received,
        delivered,
        gateway_cpu_s: cpu.and_then(|before| Some(env.watch?.cpu_seconds_now() - before)),
    };
    Ok((phase, commands))
}

/// Publishes read commands at `--command-rate` until `end`, to device `k % devices` in
/// turn; returns how many.
fn publish_commands(
    env: &Env<'_>,
    args: &NotifyArgs,
    client: &Publisher,
    shared: &Shared,
    end: u64,
) -> anyhow::Result<u64> {
    let dev = &args.devices;
    let start = env.now();
    shared
        .command_rate
        .store(args.command_rate.to_bits(), Ordering::Relaxed);
    shared.command_start.store(start, Ordering::Relaxed);
    let ttl = args.command_ttl.map(|t| t.as_secs());
    let mut k = 0u64;
    while pace(env, start, k, args.command_rate) < end {
        let ep = format!("{}-{}", dev.prefix, k % u64::from(dev.devices));
        let command = match ttl {
            Some(ttl) => app::read_command_ttl(k, &args.read_path, ttl),
            None => app::read_command(k, &args.read_path),
        };
        client
            .publish(
                &app::command_topic(&args.mqtt.topic_prefix, &ep),
                command.as_bytes(),
            )
            .context("publishing a read command")?;
        env.counters.add(Counter::CommandsSent, 1);
        k += 1;
    }
    Ok(k)
}

/// Waits for the answers to `commands` (a sleeping device's come when it next wakes, so
/// up to a wake period more), stops the wakes and counts what never came.
fn settle_commands(env: &Env<'_>, args: &NotifyArgs, shared: &Shared, commands: u64) {
    let c = env.counters;
    let mut wait = DRAIN;
    if args.devices.queue_ratio > 0.0 {
        wait += args.wake_period;
    }
    env.wait(env.now() + wait.as_nanos() as u64, || {
        shared.answered.load(Ordering::Relaxed) >= commands
    });
    env.ctl.stop_wakes();
    env.wait(env.now() + DRAIN.as_nanos() as u64, || {
        c.get(Counter::NotifyReceived) >= c.get(Counter::NotifySent)
    });
    let answered = shared.answered.load(Ordering::Relaxed);
    let lost = c
        .get(Counter::NotifySent)
        .saturating_sub(c.get(Counter::NotifyReceived))
        + commands.saturating_sub(answered);
    c.add(Counter::Lost, lost);
}

/// The printed line and the `rounds[]` entry of `summary.json` for one round.
fn round_report(
    round: u32,
    rate: f64,
    phase: &NotifyPhase,
    echo: Option<&EchoStats>,
) -> (String, serde_json::Value) {
    let gateway_us = phase
        .gateway_cpu_s
        .filter(|_| phase.delivered > 0)
        .map(|s| s * 1e6 / phase.delivered as f64);
    let echo_us = echo.and_then(EchoStats::us_per_datagram);
    let ratio = gateway_us.zip(echo_us).map(|(g, e)| g / e);
    let mut line = if phase.delivered == phase.received {
        format!(
            "round {}: {rate:.0}/s offered, {} notifications received in {:.1} s",
            round + 1,
            phase.received,
            phase.seconds
        )
    } else {
        format!(
            "round {}: {rate:.0}/s offered, {} notifications delivered in {:.1} s ({:.0}/s; {} received from the sample)",
            round + 1,
            phase.delivered,
            phase.seconds,
            phase.delivered as f64 / phase.seconds.max(1e-9),
            phase.received,
        )
    };
    if let (Some(cpu), Some(us)) = (phase.gateway_cpu_s, gateway_us) {
        line += &format!("; gateway {cpu:.2} s CPU, {us:.1} µs per notification");
    }
    if let Some(echo) = echo {
        line += &format!("; {}", echo_line(echo));
    }
    if let Some(ratio) = ratio {
        line += &format!("; ratio {ratio:.1}×");
    }
    let json = json!({
        "round": round + 1,
        "offered_per_s": rate,
        "notify_s": phase.seconds,
        "notifications_received": phase.received,
        "notifications_delivered": phase.delivered,
        "gateway_cpu_s": phase.gateway_cpu_s,
        "gateway_cpu_us_per_notification": gateway_us,
        "echo": echo.map(echo_json),
        "ratio": ratio,
    });
    (line, json)
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
