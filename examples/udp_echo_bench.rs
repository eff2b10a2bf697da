//! UDP echo round trips per second through one shard socket, per server loop.
//!
//! The server runs on core 0 in one of three modes:
//! - `glommio`: glommio's `UdpSocket::recv_from` + `send_to`, one datagram at a time;
//! - `batched`: the shard's loop, `readable()` + `RecvBatch` drain + `SendBatch` flush;
//! - `raw`: the same batches on a plain thread that sleeps in `poll(2)`, the machine's limit.
//!
//! A load client on core 1 keeps `--window` requests outstanding on each of `--clients`
//! sockets (own source ports), itself with recvmmsg/sendmmsg, and counts round trips.
//!
//! ```text
//! cargo run --release --example udp_echo_bench -- --mode batched --seconds 5
//! ```

use clap::{Parser, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use lwm2m_gateway::runtime::steer::bind_reuseport_group;
use lwm2m_gateway::runtime::udp::{into_glommio, readable, RecvBatch, SendBatch, MAX_DATAGRAM};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Time the client runs before it starts counting, so sockets and caches are warm.
const WARMUP: Duration = Duration::from_millis(500);
/// A socket with no reply for this long is assumed to have lost datagrams; its window is
/// re-sent so the offered load does not decay.
const STALL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Glommio,
    Batched,
    Raw,
}

#[derive(Debug, Parser)]
struct Args {
    /// Server loop to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Measured duration in seconds (after a short warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Client sockets, each with its own source port.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests kept outstanding per client socket (deep enough that the client moves
    /// whole batches and the server, not the client, is the limit).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Request payload size in bytes (a small CoAP NON notify is about this big).
    #[arg(long, default_value_t = 48)]
    payload: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.payload <= MAX_DATAGRAM, "payload above {MAX_DATAGRAM}");
    anyhow::ensure!(args.window <= 64, "window above the client's batch size");
    let (mut group, steering) = bind_reuseport_group((Ipv4Addr::LOCALHOST, 0).into(), 1)?;
    let server = group.pop().ok_or_else(|| anyhow::anyhow!("no socket"))?;
    let addr = server.local_addr()?;
    eprintln!("server {addr} mode {:?} steering {steering:?}", args.mode);

    match args.mode {
        Mode::Glommio | Mode::Batched => {
            let mode = args.mode;
            // Detached: the server loops forever; the process exits after the client.
            let _server = LocalExecutorBuilder::new(Placement::Fixed(0))
                .name("echo")
                .spawn(move || async move {
                    let sock = into_glommio(server);
                    let result = match mode {
                        Mode::Glommio => echo_glommio(&sock).await,
                        _ => echo_batched(&sock).await,
                    };
                    if let Err(e) = result {
                        eprintln!("server: {e}");
                    }
                })
                .map_err(|e| anyhow::anyhow!("cannot start the executor: {e}"))?;
        }
        Mode::Raw => {
            std::thread::spawn(move || {
                pin_to_cpu(0);
                if let Err(e) = echo_raw(&server) {
                    eprintln!("server: {e}");
                }
            });
        }
    }

    let mode = args.mode;
    let client = std::thread::spawn(move || {
        pin_to_cpu(1);
        run_client(addr, &args)
    });
    let m = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    let rate = m.round_trips as f64 / m.elapsed.as_secs_f64();
    // CPU the rest of the process (the server) spent per round trip: insensitive to other
    // load on the machine, unlike the rate.
    let server_cpu = m.process_cpu.saturating_sub(m.client_cpu);
    let cpu_us = server_cpu.as_secs_f64() * 1e6 / m.round_trips.max(1) as f64;
    println!(
        "mode={mode:?} round_trips={} seconds={:.2} round_trips_per_s={rate:.0} \
         server_cpu_us_per_round_trip={cpu_us:.2} server_busy={:.0}% client_busy={:.0}%",
        m.round_trips,
        m.elapsed.as_secs_f64(),
        server_cpu.as_secs_f64() * 100.0 / m.elapsed.as_secs_f64(),
        m.client_cpu.as_secs_f64() * 100.0 / m.elapsed.as_secs_f64(),
    );
    std::process::exit(0);
}

async fn echo_glommio(sock: &glommio::net::UdpSocket) -> std::io::Result<()> {
    let mut buf = [0u8; MAX_DATAGRAM];
    loop {
        let (n, src) = sock.recv_from(&mut buf).await?;
        sock.send_to(&buf[..n], src).await?;
    }
}

async fn echo_batched(sock: &glommio::net::UdpSocket) -> std::io::Result<()> {
    let mut recv = RecvBatch::new();
    let mut send = SendBatch::new();
    loop {
        if recv.recv(sock)? == 0 {
            send.flush(sock)?;
            readable(sock).await?;
            continue;
        }
        echo_into(&recv, &mut send, sock)?;
        glommio::yield_if_needed().await;
    }
}

fn echo_raw(sock: &UdpSocket) -> std::io::Result<()> {
    let mut recv = RecvBatch::new();
    let mut send = SendBatch::new();
    loop {
        if recv.recv(sock)? == 0 {
            send.flush(sock)?;
            wait_readable(sock)?;
            continue;
        }
        echo_into(&recv, &mut send, sock)?;
    }
}

/// Queues a reply for every datagram of `recv` and flushes.
fn echo_into(recv: &RecvBatch, send: &mut SendBatch, sock: &impl AsRawFd) -> std::io::Result<()> {
    for (src, bytes) in recv.iter() {
        if send.push(src, bytes).is_err() {
            send.flush(sock)?;
            // Still full means the socket buffer is full: the reply is dropped, as a
            // loaded server would.
            let _ = send.push(src, bytes);
        }
    }
    send.flush(sock)?;
    Ok(())
}

fn wait_readable(sock: &UdpSocket) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` for an open socket; a timeout of -1 waits for readiness.
    let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: `cpu_set_t` is a plain bit set; zeroed is empty.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE for any machine this runs on; pid 0 is this thread
    // and `set` is a valid, initialized set of the size passed.
    let rc = unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        eprintln!(
            "cannot pin to cpu {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// What the client measured over the counted interval.
#[derive(Debug)]
struct Measurement {
    round_trips: u64,
    elapsed: Duration,
    /// CPU time of the whole process over the interval.
    process_cpu: Duration,
    /// CPU time of the client thread over the interval.
    client_cpu: Duration,
}

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used are always supported.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Drives the echo server and returns what it measured after the warm-up.
fn run_client(server: SocketAddr, args: &Args) -> std::io::Result<Measurement> {
    let sockets = (0..args.clients)
        .map(|i| {
            // Spread sources over 127.0.0.1..=127.0.0.16 like many devices would.
            let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 1 + (i % 16) as u8), 0))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let request = vec![0xA5u8; args.payload];
    let mut recv = RecvBatch::new();
    let mut send = SendBatch::new();
    let mut last_reply = vec![Instant::now(); sockets.len()];
    let mut replied = vec![false; sockets.len()];
    let refill = |send: &mut SendBatch, s: &UdpSocket| -> std::io::Result<()> {
        for _ in 0..args.window {
            let _ = send.push(server, &request);
        }
        send.flush(s).map(drop)
    };
    for s in &sockets {
        refill(&mut send, s)?;
    }

    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut counted = 0u64;
    let mut counting_since: Option<(Instant, Duration, Duration)> = None;
    let mut sweeps = 0u32;
    loop {
        for (i, s) in sockets.iter().enumerate() {
            let n = recv.recv(s)?;
            if n == 0 {
                continue;
            }
            if counting_since.is_some() {
                counted += n as u64;
            }
            for _ in 0..n {
                let _ = send.push(server, &request);
            }
            send.flush(s)?;
            replied[i] = true;
        }
        sweeps = (sweeps + 1) % 256;
        if sweeps == 0 {
            let now = Instant::now();
            if let Some((since, process, client)) = counting_since.filter(|_| now >= end) {
                return Ok(Measurement {
                    round_trips: counted,
                    elapsed: now - since,
                    process_cpu: cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(process),
                    client_cpu: cpu_time(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(client),
                });
            }
            if counting_since.is_none() && now >= measure_from {
                counting_since = Some((
                    now,
                    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID),
                    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID),
                ));
            }
            for (i, s) in sockets.iter().enumerate() {
                if std::mem::take(&mut replied[i]) {
                    last_reply[i] = now;
                } else if now - last_reply[i] > STALL {
                    last_reply[i] = now;
                    refill(&mut send, s)?;
                }
            }
        }
    }
}
