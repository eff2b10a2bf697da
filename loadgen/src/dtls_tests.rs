//! The PSK derivation and file, and the DTLS device paths (`dtls-handshake`,
//! `register-storm --dtls`) against a small in-process OpenSSL DTLS server on loopback
//! that does the cookie exchange, looks PSKs up the way the gateway's file lists them and
//! answers CoAP registrations.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::dtls::pipe::DatagramPipe;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream};

use super::*;
use crate::{DeviceArgs, HandshakeArgs, OutputArgs, RegisterStormArgs};

#[test]
fn keys_are_deterministic_per_endpoint_and_the_file_lists_them() {
    assert_eq!(psk_key("loadgen-0"), psk_key("loadgen-0"));
    assert_ne!(psk_key("loadgen-0"), psk_key("loadgen-1"));
    let mut out = Vec::new();
    write_psk_file(&mut out, "dev", 3).expect("write");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    for (g, line) in lines.iter().enumerate() {
        let parts: Vec<&str> = line.split(':').collect();
        let ep = format!("dev-{g}");
        assert_eq!(parts[0], ep);
        assert_eq!(parts[2], ep);
        let hex: String = psk_key(&ep).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parts[1], hex);
        assert_eq!(parts[1].len(), 2 * PSK_LEN);
    }
}

/// Counts of the in-process server.
#[derive(Debug, Default)]
struct Stats {
    cookies: AtomicUsize,
    established: AtomicUsize,
    resumed: AtomicUsize,
    registered: AtomicUsize,
}

/// An OpenSSL DTLS server on 127.0.0.1 with a connection per peer address, PSKs from
/// [`psk_key`] and 2.01 Created for every `POST /rd`.
struct TestGateway {
    addr: SocketAddrV4,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestGateway {
    fn start() -> TestGateway {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let addr = match socket.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to IPv4"),
        };
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Self::context(&stats);
        let (st, sp) = (Arc::clone(&stats), Arc::clone(&stop));
        let thread = std::thread::spawn(move || Self::serve(&socket, &ctx, &st, &sp));
        TestGateway {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn context(stats: &Arc<Stats>) -> SslContext {
        let mut b = SslContext::builder(SslMethod::dtls()).expect("ctx");
        b.set_cipher_list("PSK-AES128-CCM8").expect("ciphers");
        b.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU);
        b.set_session_id_context(b"loadgen-tests").expect("sid ctx");
        let s = Arc::clone(stats);
        b.set_cookie_generate_cb(move |_, out| {
            s.cookies.fetch_add(1, Ordering::Relaxed);
            out[..6].copy_from_slice(b"cookie");
            Ok(6)
        });
        b.set_cookie_verify_cb(|_, c| c == b"cookie");
        b.set_psk_server_callback(|_, identity, out| {
            let Some(ep) = identity.and_then(|i| std::str::from_utf8(i).ok()) else {
                return Ok(0);
            };
            out[..PSK_LEN].copy_from_slice(&psk_key(ep));
            Ok(PSK_LEN)
        });
        b.build()
    }

    fn serve(socket: &UdpSocket, ctx: &SslContext, stats: &Stats, stop: &AtomicBool) {
        let mut conns: HashMap<SocketAddr, (SslStream<DatagramPipe>, bool)> = HashMap::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let (stream, established) = conns.entry(from).or_insert_with(|| {
                let mut ssl = Ssl::new(ctx).expect("ssl");
                ssl.set_mtu(1280).expect("mtu");
                ssl.set_accept_state();
                (
                    SslStream::new(ssl, DatagramPipe::default()).expect("stream"),
                    false,
                )
            });
            stream.get_mut().push_inbound(&buf[..n]);
            if !*established {
                match stream.do_handshake() {
                    Ok(()) => {
                        *established = true;
                        stats.established.fetch_add(1, Ordering::Relaxed);
                        if stream.ssl().session_reused() {
                            stats.resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(_) => {}
                }
            } else {
                let mut plain = [0u8; 2048];
                while let Ok(len) = stream.ssl_read(&mut plain) {
                    let Ok(req) = Message::parse(&plain[..len]) else {
                        continue;
                    };
                    if req.code() != Code::POST {
                        continue;
                    }
                    let k = stats.registered.fetch_add(1, Ordering::Relaxed);
                    let mut out = Vec::new();
                    let loc = format!("{k}");
                    let mut w = MessageWriter::new(
                        &mut out,
                        MessageType::Ack,
                        Code::CREATED,
                        req.mid(),
                        req.token(),
                    );
                    w.option(option::LOCATION_PATH, b"rd")
                        .option(option::LOCATION_PATH, loc.as_bytes());
                    w.finish();
                    stream.ssl_write(&out).expect("reply");
                }
            }
            while let Some(d) = stream.get_mut().pop_outbound() {
                let _ = socket.send_to(&d, from);
            }
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()))
}

fn output(dir: &Path) -> OutputArgs {
    OutputArgs {
        out: Some(dir.to_path_buf()),
        gateway_pid: None,
    }
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn dtls_handshake_runs_full_handshakes_then_resumes_them() {
    let gw = TestGateway::start();
    let dir = out_dir("dtls-handshake");
    let args = HandshakeArgs {
        gateway: SocketAddr::V4(gw.addr),
        devices: 40,
        rate: 2000.0,
        prefix: "hs".into(),
        resume: true,
        threads: 2,
        handshake_timeout: Duration::from_secs(5),
        output: output(&dir),
    };
    assert!(crate::handshake::dtls_handshake(&args).expect("run"));
    let s = summary(&dir);
    assert_eq!(s["full"]["ok"], 40, "{s}");
    assert_eq!(s["resume"]["ok"], 40, "{s}");
    assert_eq!(s["resume"]["resumed"], 40, "{s}");
    assert_eq!(s["counters"]["dtls_failed"], 0);
    assert!(s["metrics"]["dtls_handshake"]["p99_us"].as_f64().is_some());
    assert!(s["metrics"]["dtls_resume"]["count"].as_u64() == Some(40));
    assert!(s["full"]["loadgen_cpu_s"].as_f64().is_some());
    // Every full handshake went through a HelloVerifyRequest; resumptions too.
    assert_eq!(gw.stats.cookies.load(Ordering::Relaxed), 80);
    assert_eq!(gw.stats.resumed.load(Ordering::Relaxed), 40);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dtls_handshake_reports_failures_by_reason() {
    let dir = out_dir("dtls-refused");
    // Nothing listens there: every handshake times out (ICMP errors are ignored).
    let idle = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let args = HandshakeArgs {
        gateway: idle.local_addr().expect("addr"),
        devices: 4,
        rate: 1000.0,
        prefix: "hs".into(),
        resume: false,
        threads: 1,
        handshake_timeout: Duration::from_millis(300),
        output: output(&dir),
    };
    assert!(!crate::handshake::dtls_handshake(&args).expect("run"));
    let s = summary(&dir);
    assert_eq!(s["full"]["failures"]["timeout"], 4, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn register_storm_over_dtls_handshakes_then_registers() {
    let gw = TestGateway::start();
    let dir = out_dir("register-dtls");
    let args = RegisterStormArgs {
        devices: DeviceArgs {
            gateway: SocketAddr::V4(gw.addr),
            devices: 30,
            rate: 1000.0,
            lifetime: 300,
            prefix: "rs".into(),
            sockets: 2,
            queue_ratio: 0.0,
            awake: Duration::from_secs(22),
            timeout: Duration::from_secs(10),
            dtls: true,
            output: output(&dir),
        },
        deregister: false,
    };
    assert!(crate::scenario::register_storm(&args).expect("run"));
    let s = summary(&dir);
    assert_eq!(s["counters"]["registered"], 30, "{s}");
    assert_eq!(s["counters"]["dtls_handshakes"], 30, "{s}");
    assert_eq!(gw.stats.registered.load(Ordering::Relaxed), 30);
    assert!(s["metrics"]["dtls_handshake"]["count"].as_u64() == Some(30));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_handshake_finishes_once_and_its_stale_timer_stays_quiet() {
    let stats = Arc::new(Stats::default());
    let ctx = TestGateway::context(&stats);
    let mut ssl = Ssl::new(&ctx).expect("ssl");
    ssl.set_mtu(1280).expect("mtu");
    ssl.set_accept_state();
    let mut server = SslStream::new(ssl, DatagramPipe::default()).expect("stream");
    let options = lwm2m_gateway::dtls::client::ClientOptions {
        initial_timeout: Duration::from_millis(20),
        ..Default::default()
    };
    let config = Arc::new(ClientConfig::psk(&options).expect("config"));
    let mut peers = Peers::new(config, "t", 1);
    peers.start(0, 0, 0, 0, None).expect("start");
    let mut events = Vec::new();
    for _ in 0..10 {
        peers
            .drain(0, |d| {
                server.get_mut().push_inbound(d);
                let _ = server.do_handshake();
                Ok(())
            })
            .expect("drain");
        while let Some(d) = server.get_mut().pop_outbound() {
            events.push(peers.handle(0, &d, 1_000));
        }
    }
    let established: Vec<_> = events.iter().filter(|e| **e != Event::None).collect();
    assert_eq!(
        established,
        [&Event::Established {
            latency_ns: 1_000,
            resumed: false
        }]
    );
    assert!(peers.established(0).is_some());
    assert_eq!(
        peers.next_timeout().map(|_| ()),
        Some(()),
        "a stale deadline"
    );
    std::thread::sleep(Duration::from_millis(50));
    let mut fired = Vec::new();
    peers.handle_timeouts(u64::MAX, |_, j, e| fired.push((j, e)));
    assert!(fired.is_empty(), "{fired:?}");
}
