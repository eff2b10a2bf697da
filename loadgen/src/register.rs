//! The `register` scenario: N devices register (and optionally deregister), open-loop
//! paced, each from its own loopback address, with CoAP retransmission.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Write;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};

use crate::net::{device_ip, MultiSource};
use crate::RegisterArgs;

/// The object list wakaama 1.1 registers with (`lwm2mclient` with its test object).
pub const WAKAAMA_OBJECTS: &str = "</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>";

/// RFC 7252 ACK_TIMEOUT: first retransmission after this long, doubling each time.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7252 MAX_RETRANSMIT.
const MAX_RETRANSMIT: u8 = 4;
/// Longest latency the histograms record (µs); anything slower is a timeout anyway.
const MAX_LATENCY_US: u64 = 120_000_000;
/// Longest wait for a reply before checking timers and pacing again.
const POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Done,
    Failed,
}

struct Device {
    index: u32,
    mid: u16,
    attempts: u8,
    state: State,
    location: [u8; 8],
    location_len: u8,
}

/// Counters shared with the progress line.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
}

/// What one worker saw in one phase.
struct PhaseResult {
    latency: Histogram<u64>,
    done: u64,
    failed: u64,
    timeouts: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Runs the scenario; `Ok(false)` when some device failed.
pub fn run(args: &RegisterArgs) -> anyhow::Result<bool> {
    let gateway = match args.gateway {
        SocketAddr::V4(a) if a.ip().is_loopback() => a,
        other => bail!(
            "--gateway {other}: simulated devices use loopback addresses, so the gateway must listen on 127.0.0.0/8"
        ),
    };
    if args.devices == 0 || args.rate == 0 {
        bail!("--devices and --rate must be at least 1");
    }
    if !(1..=64).contains(&args.sockets) {
        bail!("--sockets must be between 1 and 64");
    }
    let mut phases = vec![Phase::Register];
    if args.deregister {
        phases.push(Phase::Deregister);
    }
    let sockets: Vec<MultiSource> = (0..args.sockets)
        .map(|_| MultiSource::bind(0, POLL))
        .collect::<Result<_, _>>()
        .context("binding the device sockets")?;
    let mut devices: Vec<Vec<Device>> = (0..args.sockets).map(|_| Vec::new()).collect();
    for i in 0..args.devices {
        devices[(i % args.sockets) as usize].push(Device {
            index: i,
            mid: (i as u16).wrapping_mul(7919),
            attempts: 0,
            state: State::Pending,
            location: [0; 8],
            location_len: 0,
        });
    }
    let mut all_ok = true;
    for phase in phases {
        let progress = Arc::new(Progress::default());
        let started = Instant::now();
        let per_socket_rate = f64::from(args.rate) / f64::from(args.sockets);
        let results = std::thread::scope(|scope| {
            let workers: Vec<_> = sockets
                .iter()
                .zip(devices.iter_mut())
                .map(|(socket, devs)| {
                    let progress = progress.clone();
                    scope.spawn(move || {
                        run_phase(
                            phase,
                            socket,
                            gateway,
                            devs,
                            args,
                            per_socket_rate,
                            started,
                            &progress,
                        )
                    })
                })
                .collect();
            let total = u64::from(args.devices);
            let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut last = Instant::now();
            while workers.iter().any(|w| !w.is_finished()) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    let done = progress.done.load(Ordering::Relaxed);
                    let line = format!(
                        "{}: {done}/{total} ok, {} failed, {} timeouts, {:.0}/s",
                        phase.name(),
                        progress.failed.load(Ordering::Relaxed),
                        progress.timeouts.load(Ordering::Relaxed),
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                    if tty {
                        eprint!("\r{line}\x1b[K");
                    } else {
                        eprintln!("{line}");
                    }
                }
            }
            if tty {
                eprintln!();
            }
            workers.into_iter().map(|w| w.join()).collect::<Vec<_>>()
        });
        let elapsed = started.elapsed();
        let mut latency = histogram();
        let (mut done, mut failed, mut timeouts) = (0, 0, 0);
        for r in results {
            let r = r.map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
            latency.add(&r.latency).context("merging histograms")?;
            done += r.done;
            failed += r.failed;
            timeouts += r.timeouts;
        }
        // A closed stdout (e.g. piped into `head`) is not an error of the run.
        let _ = writeln!(
            std::io::stdout(),
            "{}: {done} ok, {failed} failed, {timeouts} timeouts in {:.2}s ({:.0}/s); latency p50 {} µs, p99 {} µs, max {} µs",
            phase.name(),
            elapsed.as_secs_f64(),
            done as f64 / elapsed.as_secs_f64(),
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.max(),
        );
        all_ok &= failed == 0 && timeouts == 0;
    }
    Ok(all_ok)
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Register,
    Deregister,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Register => "register",
            Phase::Deregister => "deregister",
        }
    }
}

fn encode(phase: Phase, dev: &Device, args: &RegisterArgs, buf: &mut Vec<u8>) {
    buf.clear();
    let token = dev.index.to_be_bytes();
    match phase {
        Phase::Register => {
            let ep = format!("ep={}-{}", args.prefix, dev.index);
            let lt = format!("lt={}", args.lifetime);
            let mut w = MessageWriter::new(buf, MessageType::Con, Code::POST, dev.mid, &token);
            w.option(option::URI_PATH, b"rd")
                .uint_option(option::CONTENT_FORMAT, 40)
                .option(option::URI_QUERY, b"lwm2m=1.1")
                .option(option::URI_QUERY, ep.as_bytes())
                .option(option::URI_QUERY, b"b=U")
                .option(option::URI_QUERY, lt.as_bytes())
                .payload(WAKAAMA_OBJECTS.as_bytes());
            w.finish();
        }
        Phase::Deregister => {
            let mut w = MessageWriter::new(buf, MessageType::Con, Code::DELETE, dev.mid, &token);
            w.option(option::URI_PATH, b"rd").option(
                option::URI_PATH,
                &dev.location[..usize::from(dev.location_len)],
            );
            w.finish();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    phase: Phase,
    socket: &MultiSource,
    gateway: SocketAddrV4,
    devices: &mut [Device],
    args: &RegisterArgs,
    rate: f64,
    started: Instant,
    progress: &Progress,
) -> anyhow::Result<PhaseResult> {
    let mut result = PhaseResult {
        latency: histogram(),
        done: 0,
        failed: 0,
        timeouts: 0,
    };
    // Only devices that registered take part in deregistration.
    let active: Vec<usize> = (0..devices.len())
        .filter(|&i| matches!(phase, Phase::Register) || devices[i].state == State::Done)
        .collect();
    let mut slot_of = ahash::AHashMap::with_capacity(active.len());
    for &i in &active {
        let d = &mut devices[i];
        d.mid = d.mid.wrapping_add(1);
        d.attempts = 0;
        d.state = State::Pending;
        slot_of.insert(d.index, i);
    }
    let due = |slot: usize| started + Duration::from_secs_f64(slot as f64 / rate);
    let mut due_of = vec![started; devices.len()];
    let mut retransmit: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut next = 0;
    let mut outstanding = 0usize;
    let mut buf = Vec::with_capacity(512);
    let mut rx = [0u8; 2048];
    let deadline = started + args.timeout;
    while next < active.len() || outstanding > 0 {
        let now = Instant::now();
        if now >= deadline {
            result.timeouts += outstanding as u64 + (active.len() - next) as u64;
            break;
        }
        while next < active.len() && due(next) <= now {
            let i = active[next];
            due_of[i] = due(next);
            encode(phase, &devices[i], args, &mut buf);
            socket
                .send_from(device_ip(devices[i].index), gateway, &buf)
                .context("sending")?;
            retransmit.push(Reverse((now + ACK_TIMEOUT, i)));
            outstanding += 1;
            next += 1;
        }
        while let Some(&Reverse((at, i))) = retransmit.peek() {
            if at > now {
                break;
            }
            retransmit.pop();
            let d = &mut devices[i];
            if d.state != State::Pending {
                continue;
            }
            if d.attempts >= MAX_RETRANSMIT {
                d.state = State::Failed;
                result.timeouts += 1;
                progress.timeouts.fetch_add(1, Ordering::Relaxed);
                outstanding -= 1;
                continue;
            }
            d.attempts += 1;
            encode(phase, d, args, &mut buf);
            socket
                .send_from(device_ip(d.index), gateway, &buf)
                .context("retransmitting")?;
            retransmit.push(Reverse((now + ACK_TIMEOUT * (1 << d.attempts), i)));
        }
        let (n, _, from) = match socket.recv_to(&mut rx) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("receiving"),
        };
        if from.ip() != IpAddr::V4(*gateway.ip()) {
            continue;
        }
        let Ok(msg) = Message::parse(&rx[..n]) else {
            continue;
        };
        let Ok(token) = <[u8; 4]>::try_from(msg.token()) else {
            continue;
        };
        let Some(&i) = slot_of.get(&u32::from_be_bytes(token)) else {
            continue;
        };
        let d = &mut devices[i];
        if d.state != State::Pending || msg.mid() != d.mid || msg.ty() != MessageType::Ack {
            continue;
        }
        outstanding -= 1;
        let ok = match phase {
            Phase::Register => msg.code() == Code::CREATED,
            Phase::Deregister => msg.code() == Code::DELETED,
        };
        if ok {
            if let Phase::Register = phase {
                let loc = msg.location_path().nth(1).unwrap_or_default();
                let len = loc.len().min(d.location.len());
                d.location[..len].copy_from_slice(&loc[..len]);
                d.location_len = len as u8;
            }
            d.state = State::Done;
            result.done += 1;
            progress.done.fetch_add(1, Ordering::Relaxed);
            let us = Instant::now()
                .saturating_duration_since(due_of[i])
                .as_micros() as u64;
            result.latency.saturating_record(us.max(1));
        } else {
            d.state = State::Failed;
            result.failed += 1;
            progress.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(result)
}
