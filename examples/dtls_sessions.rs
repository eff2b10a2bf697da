//! DTLS at scale on one shard's sans-IO server: the server's CPU per full PSK handshake
//! (cookie exchange included) and per resumption, and the memory each established, idle
//! session keeps.
//!
//! ```sh
//! cargo run --release --example dtls_sessions -- 100000
//! cargo run --release --example dtls_sessions -- 1000000 --no-resume
//! ```
//!
//! N OpenSSL clients (the crate's `dtls::client`, one shared client context) handshake
//! one after another with a [`DtlsServer`] built as the runtime builds it (credentials
//! from a PSK file, cookies, the shared context); each client is dropped once its
//! handshake is done and one record went through, so what stays is the server's
//! sessions. Only time spent inside the server is counted as server CPU; the clients'
//! half runs on the same thread but outside the clock. Then, unless `--no-resume`, every
//! device comes back from a new port and resumes with its session ticket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_gateway::config::DtlsListenerConfig;
use lwm2m_gateway::dtls::client::{ClientConfig, ClientOptions, DtlsClient, Session};
use lwm2m_gateway::dtls::credentials::{identity_of, Credentials};
use lwm2m_gateway::dtls::server::{enable_cookies, AppData, DtlsLimits, DtlsServer};
use lwm2m_gateway::persist;

const KEY: &[u8] = b"0123456789abcdef";

fn addr(i: u32, port_base: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i >> 12))),
        port_base + (i & 0xfff) as u16,
    )
}

/// `VmRSS` of this process after giving freed heap back, KiB.
fn rss_kib() -> u64 {
    persist::release_freed_memory();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs one handshake between `client` at `from` and the server, then one record; the
/// server time it took.
fn handshake(
    server: &mut DtlsServer,
    client: &mut DtlsClient,
    from: SocketAddr,
    now: Instant,
    app: &mut AppData,
) -> Duration {
    let mut spent = Duration::ZERO;
    client.handle_timeout();
    for _ in 0..16 {
        let mut sent = false;
        while let Some(d) = client.poll_transmit() {
            sent = true;
            let t = Instant::now();
            server.handle_datagram(now, from, &d, app);
            spent += t.elapsed();
        }
        server.drain_transmits(|_, d| client.handle_datagram(d));
        if client.is_established() && !sent {
            break;
        }
        if client.is_failed() {
            panic!("handshake failed: {:?}", client.state());
        }
    }
    assert!(client.is_established(), "handshake did not finish");
    client.send(b"ping").expect("send");
    while let Some(d) = client.poll_transmit() {
        let t = Instant::now();
        let got = server.handle_datagram(now, from, &d, app);
        spent += t.elapsed();
        assert!(got.is_some(), "the record opened");
    }
    spent
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let resume = !args.iter().any(|a| a == "--no-resume");

    let dir = std::env::temp_dir().join(format!("dtls-sessions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let psk_file = dir.join("psk.txt");
    std::fs::write(&psk_file, "dev:30313233343536373839616263646566:dev\n").expect("psk");
    let creds = Credentials::load(&DtlsListenerConfig {
        enabled: true,
        bind: "127.0.0.1:0".parse().expect("addr"),
        psk_file: Some(psk_file),
        certfile: None,
        keyfile: None,
        cacertfile: None,
    })
    .expect("credentials");
    let mut builder = creds.server_context().expect("context");
    enable_cookies(&mut builder);
    let ctx = builder.build();
    let identify_creds = creds.clone();
    let identify = Arc::new(move |ssl: &openssl::ssl::SslRef| identity_of(ssl, &identify_creds));
    let now = Instant::now();
    let limits = DtlsLimits {
        handshake_timeout: Duration::from_secs(30),
        session_idle: Duration::from_secs(86_400),
        retransmit_initial: Duration::from_secs(1),
    };
    let mut server =
        DtlsServer::new(ctx, identify, ahash::RandomState::new(), limits, now).expect("server");
    let config = ClientConfig::psk(&ClientOptions::default()).expect("client config");
    let mut app = AppData::default();

    let before = rss_kib();
    let mut server_time = Duration::ZERO;
    let mut sessions: Vec<Session> = Vec::with_capacity(if resume { n as usize } else { 0 });
    let wall = Instant::now();
    for i in 0..n {
        let mut client = DtlsClient::connect_psk(&config, "dev", KEY, None).expect("client");
        server_time += handshake(&mut server, &mut client, addr(i, 10_000), now, &mut app);
        if resume {
            let sess = client.session().expect("a session to resume");
            sessions.push(sess);
            // A client freed without closing marks its session not resumable (OpenSSL's
            // `ssl_clear_bad_session`); the close_notify itself is not delivered, so the
            // server keeps the session.
            client.close();
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!("{} sessions, {:.0} s", i + 1, wall.elapsed().as_secs_f64());
        }
    }
    let full_wall = wall.elapsed();
    let stats = server.stats().clone();
    assert_eq!(server.sessions(), n as usize);
    assert_eq!(stats.handshakes, u64::from(n));
    let sessions_bytes = std::mem::size_of::<Session>() * sessions.capacity();
    let after = rss_kib();
    let per_session = (after.saturating_sub(before) * 1024).saturating_sub(sessions_bytes as u64)
        / u64::from(n.max(1));
    println!(
        "cpu: {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name\t: "))
            .unwrap_or("?")
    );
    println!(
        "full PSK handshakes: {n} in {:.1} s wall; server CPU {:.1} µs each = {:.0} handshakes/s per core; {} HelloVerifyRequests",
        full_wall.as_secs_f64(),
        server_time.as_secs_f64() * 1e6 / f64::from(n),
        f64::from(n) / server_time.as_secs_f64(),
        stats.hello_verify_requests
    );
    println!(
        "established idle sessions: {n}; RSS {} MiB -> {} MiB, {per_session} B per session ({} B of it the peer-table record)",
        before >> 10,
        after >> 10,
        lwm2m_gateway::dtls::server::ESTABLISHED_SIZE
    );

    if resume {
        let mut resume_time = Duration::ZERO;
        let wall = Instant::now();
        for (i, session) in sessions.iter().enumerate() {
            let mut client =
                DtlsClient::connect_psk(&config, "dev", KEY, Some(session)).expect("client");
            resume_time += handshake(
                &mut server,
                &mut client,
                addr(i as u32, 30_000),
                now,
                &mut app,
            );
            assert!(client.session_reused(), "resumed");
        }
        println!(
            "resumptions from new ports: {n} in {:.1} s wall; server CPU {:.1} µs each = {:.0} per second per core ({} resumed)",
            wall.elapsed().as_secs_f64(),
            resume_time.as_secs_f64() * 1e6 / f64::from(n),
            f64::from(n) / resume_time.as_secs_f64(),
            server.stats().resumed
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
