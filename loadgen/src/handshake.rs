//! `dtls-handshake` (P6): full PSK handshakes at a set rate, each device from its own
//! loopback address through the gateway's HelloVerifyRequest cookie exchange, then with
//! `--resume` abbreviated handshakes resuming the saved sessions from new source ports.
//!
//! Client handshakes cost CPU too, so the devices are spread over `--threads` threads
//! (one socket each) and the run reports the CPU the load generator itself used next to
//! the gateway's (`--gateway-pid`).

use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use lwm2m_gateway::dtls::client::{ClientConfig, Session};
use serde_json::json;

use crate::dtls::{psk_config, Event, Peers};
use crate::metrics::{Counter, Metric, Recorder};
use crate::net::{device_index, device_ip, MultiSource};
use crate::scenario::{check_duration, check_rate, execute, loopback_v4, Env};
use crate::HandshakeArgs;

/// Most threads a run may use.
const MAX_THREADS: u32 = 64;
/// Handshakes started per loop turn before draining replies.
const START_BATCH: usize = 64;
/// Datagrams drained per loop turn.
const RECV_BATCH: usize = 256;
/// Longest idle wait, so phase ends are seen promptly.
const MAX_IDLE: Duration = Duration::from_millis(2);
/// Socket receive timeout (the loop polls before receiving anyway).
const SOCKET_TIMEOUT: Duration = Duration::from_millis(1);
/// Pause between the full-handshake phase and the resumption phase.
const PHASE_GAP: Duration = Duration::from_millis(200);

/// What one thread saw in one phase.
#[derive(Debug, Default)]
struct PhaseResult {
    ok: u64,
    resumed: u64,
    failures: BTreeMap<String, u64>,
    /// Sessions of this thread's devices (by local index), kept for `--resume`.
    sessions: Vec<Option<Session>>,
}

/// One phase of the run, as every thread sees it.
struct Phase<'a> {
    target: SocketAddrV4,
    devices: u32,
    threads: u32,
    rate: f64,
    start: u64,
    timeout_ns: u64,
    config: &'a Arc<ClientConfig>,
    prefix: &'a str,
    keep_sessions: bool,
    metric: Metric,
}

/// `dtls-handshake`.
pub fn dtls_handshake(args: &HandshakeArgs) -> anyhow::Result<bool> {
    let target = loopback_v4(args.gateway, "--gateway")?;
    check_rate(args.rate, "--rate")?;
    check_duration(args.handshake_timeout, "--handshake-timeout")?;
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let threads = if args.threads == 0 {
        cores
    } else {
        args.threads
    };
    if !(1..=MAX_THREADS).contains(&threads) {
        bail!("--threads must be between 1 and {MAX_THREADS}, got {threads}");
    }
    let threads = threads.min(args.devices);
    let config = psk_config()?;
    let mut metrics = vec![Metric::DtlsHandshake];
    if args.resume {
        metrics.push(Metric::DtlsResume);
    }
    execute("dtls-handshake", &args.output, &metrics, None, |env| {
        let mut phase = Phase {
            target,
            devices: args.devices,
            threads,
            rate: args.rate,
            start: env.now() + PHASE_GAP.as_nanos() as u64,
            timeout_ns: args.handshake_timeout.as_nanos() as u64,
            config: &config,
            prefix: &args.prefix,
            keep_sessions: args.resume,
            metric: Metric::DtlsHandshake,
        };
        println!(
            "dtls-handshake: {} full PSK handshakes at {}/s to {target} on {threads} threads",
            args.devices, args.rate
        );
        let (full, sessions) = run_phase(env, &phase, None)?;
        env.report("full", full);
        if args.resume {
            phase.start = env.now() + PHASE_GAP.as_nanos() as u64;
            phase.keep_sessions = false;
            phase.metric = Metric::DtlsResume;
            println!("dtls-handshake: resuming the saved sessions from new source ports");
            let (resumed, _) = run_phase(env, &phase, Some(sessions))?;
            env.report("resume", resumed);
        }
        env.report("threads", json!(threads));
        Ok(())
    })
}

/// Runs one phase on `phase.threads` threads; returns its report and every thread's
/// sessions.
fn run_phase(
    env: &Env<'_>,
    phase: &Phase<'_>,
    resume: Option<Vec<Vec<Option<Session>>>>,
) -> anyhow::Result<(serde_json::Value, Vec<Vec<Option<Session>>>)> {
    let cpu_before = process_cpu_seconds();
    let gateway_before = env.watch.map(|w| w.cpu_seconds_now());
    let mut resume = resume.map(|r| r.into_iter());
    let results: Vec<anyhow::Result<PhaseResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..phase.threads)
            .map(|t| {
                let sessions = resume.as_mut().and_then(Iterator::next);
                let rec = env.recorder();
                s.spawn(move || run_thread(env, phase, t, sessions, rec))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a handshake thread panicked"))
                    .and_then(|r| r)
            })
            .collect()
    });
    let elapsed = env.now().saturating_sub(phase.start) as f64 / 1e9;
    let cpu = process_cpu_seconds() - cpu_before;
    let mut total = PhaseResult::default();
    let mut sessions = Vec::new();
    for r in results {
        let r = r?;
        total.ok += r.ok;
        total.resumed += r.resumed;
        for (why, n) in r.failures {
            *total.failures.entry(why).or_default() += n;
        }
        sessions.push(r.sessions);
    }
    let failed: u64 = total.failures.values().sum();
    let per_s = total.ok as f64 / elapsed.max(1e-9);
    let mut line = format!(
        "{}: {} ok, {} failed in {elapsed:.2} s = {per_s:.0}/s (offered {:.0}/s); \
         loadgen CPU {cpu:.2} s ({:.0}% of one core, {:.0} µs per handshake)",
        phase.metric.name(),
        total.ok,
        failed,
        phase.rate,
        100.0 * cpu / elapsed.max(1e-9),
        1e6 * cpu / (total.ok + failed).max(1) as f64,
    );
    let mut report = json!({
        "ok": total.ok,
        "failed": failed,
        "failures": total.failures,
        "elapsed_s": elapsed,
        "handshakes_per_s": per_s,
        "offered_per_s": phase.rate,
        "loadgen_cpu_s": cpu,
    });
    if phase.metric == Metric::DtlsResume {
        line.push_str(&format!("; {} resumed", total.resumed));
        report["resumed"] = json!(total.resumed);
    }
    if let (Some(w), Some(before)) = (env.watch, gateway_before) {
        let gw = w.cpu_seconds_now() - before;
        let per_core_s = total.ok as f64 / gw.max(1e-9);
        line.push_str(&format!(
            "; gateway CPU {gw:.2} s = {per_core_s:.0} handshakes per gateway core-second"
        ));
        report["gateway_cpu_s"] = json!(gw);
        report["handshakes_per_gateway_core_s"] = json!(per_core_s);
    }
    println!("{line}");
    for (why, n) in &total.failures {
        println!("  failed: {n} × {why}");
    }
    Ok((report, sessions))
}

/// One thread's devices `g ≡ t (mod threads)` for one phase, on a socket of its own (so
/// the resumption phase comes from new source ports).
fn run_thread(
    env: &Env<'_>,
    phase: &Phase<'_>,
    t: u32,
    resume: Option<Vec<Option<Session>>>,
    mut rec: Recorder,
) -> anyhow::Result<PhaseResult> {
    let socket = MultiSource::bind(0, SOCKET_TIMEOUT).context("binding a device socket")?;
    let k = u64::from(phase.threads);
    let n = phase.devices.saturating_sub(t).div_ceil(phase.threads) as usize;
    let global = |j: u32| u64::from(j) * k + u64::from(t);
    let mut peers = Peers::new(Arc::clone(phase.config), phase.prefix, n);
    let mut result = PhaseResult {
        sessions: (0..n).map(|_| None).collect(),
        ..PhaseResult::default()
    };
    let mut deadlines: VecDeque<(u64, u32)> = VecDeque::new();
    let (mut next, mut in_flight) = (0usize, 0usize);
    let mut rx = [0u8; 2048];
    let send = |g: u64, d: &[u8]| match socket.send_from(device_ip(g as u32), phase.target, d) {
        // A full send buffer loses the datagram as a network would; DTLS retransmits.
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        other => other,
    };
    let settle = |peers: &mut Peers,
                  result: &mut PhaseResult,
                  in_flight: &mut usize,
                  rec: &mut Recorder,
                  j: u32,
                  event: Event,
                  now: u64| match event {
        Event::None => {}
        Event::Established {
            latency_ns,
            resumed,
        } => {
            *in_flight -= 1;
            result.ok += 1;
            env.counters.add(Counter::Handshakes, 1);
            rec.record(phase.metric, now, latency_ns);
            if phase.metric == Metric::DtlsResume {
                let c = if resumed {
                    Counter::Resumed
                } else {
                    Counter::NotResumed
                };
                result.resumed += u64::from(resumed);
                env.counters.add(c, 1);
            }
            let session = peers.take_session(j);
            if phase.keep_sessions {
                result.sessions[j as usize] = session;
            }
        }
        Event::Failed(why) => {
            *in_flight -= 1;
            *result.failures.entry(why.to_string()).or_default() += 1;
            env.counters.add(Counter::DtlsFailed, 1);
        }
        Event::Closed => {
            *in_flight -= 1;
            *result
                .failures
                .entry("closed by the gateway".into())
                .or_default() += 1;
            env.counters.add(Counter::DtlsFailed, 1);
        }
    };
    while next < n || in_flight > 0 {
        let now = env.now();
        let mut wake = now + MAX_IDLE.as_nanos() as u64;
        for _ in 0..START_BATCH {
            if next >= n {
                break;
            }
            let j = next as u32;
            let g = global(j);
            let due = phase.start + (g as f64 * 1e9 / phase.rate) as u64;
            if due > now {
                wake = wake.min(due);
                break;
            }
            next += 1;
            let session = match &resume {
                Some(sessions) => match sessions.get(j as usize).and_then(Option::as_ref) {
                    Some(s) => Some(s),
                    // Its full handshake failed: nothing to resume.
                    None => continue,
                },
                None => None,
            };
            peers.start(j, g, due, now, session)?;
            peers.drain(j, |d| send(g, d)).context("sending")?;
            in_flight += 1;
            deadlines.push_back((due + phase.timeout_ns, j));
        }
        let mut received = 0;
        while received < RECV_BATCH {
            match socket.try_recv_to(&mut rx) {
                Ok((len, local, from)) => {
                    received += 1;
                    if from.ip() != IpAddr::V4(*phase.target.ip()) {
                        continue;
                    }
                    let Some(g) = device_index(local).map(u64::from) else {
                        continue;
                    };
                    if g % k != u64::from(t) || (g / k) as usize >= n {
                        continue;
                    }
                    let j = (g / k) as u32;
                    let now = env.now();
                    let event = peers.handle(j, &rx[..len], now);
                    peers.drain(j, |d| send(g, d)).context("sending")?;
                    settle(
                        &mut peers,
                        &mut result,
                        &mut in_flight,
                        &mut rec,
                        j,
                        event,
                        now,
                    );
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    break
                }
                // ICMP port unreachable: no gateway there (yet); the handshake times out.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e).context("receiving"),
            }
        }
        let now = env.now();
        let mut send_err = Ok(());
        peers.handle_timeouts(now, |peers, j, event| {
            let g = global(j);
            if let Err(e) = peers.drain(j, |d| send(g, d)) {
                send_err = Err(e);
            }
            settle(peers, &mut result, &mut in_flight, &mut rec, j, event, now);
        });
        send_err.context("sending")?;
        while let Some(&(at, j)) = deadlines.front() {
            if at > now {
                wake = wake.min(at);
                break;
            }
            deadlines.pop_front();
            if peers.is_started(j) && peers.established(j).is_none() {
                peers.take_session(j);
                in_flight -= 1;
                *result.failures.entry("timeout".into()).or_default() += 1;
                env.counters.add(Counter::DtlsFailed, 1);
            }
        }
        rec.tick(env.now());
        if received == 0 {
            if let Some(at) = peers.next_timeout() {
                wake = wake.min(at);
            }
            let now = env.now();
            if wake > now {
                let wait = Duration::from_nanos(wake - now).min(MAX_IDLE);
                socket.wait_readable(wait).context("polling")?;
            }
        }
    }
    Ok(result)
}

/// CPU seconds (user + system) this process used so far.
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage struct through the pointer.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
