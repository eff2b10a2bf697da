//! The sans-IO pipeline without sockets: a Register datagram through the shard core, and a
//! datagram all the way to the MQTT PUBLISH bytes the uplink writes: the shard's publishes
//! go through a connected [`UplinkSession`] into the buffer its driver writes to the socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod support;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lwm2m_gateway::coap::{option, Code, MessageType, MessageWriter};
use lwm2m_gateway::config::{Config, DtlsListenerConfig};
use lwm2m_gateway::dtls::client::DtlsClient;
use lwm2m_gateway::dtls::credentials::{identity_of, Credentials};
use lwm2m_gateway::dtls::server::{enable_cookies, DtlsLimits, DtlsServer};
use lwm2m_gateway::session::{Shard, ShardConfig};
use lwm2m_gateway::uplink::{Outgoing, SessionOptions, UplinkSession};
use support::register;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x7f10_0000 + i)), 5683)
}

fn shard() -> Shard {
    let mut config = Config::default_config();
    config.gateway.shards = 1;
    config.udp.max_conn_rate = u32::MAX / 2;
    config.udp.max_connections = 100_000_000;
    let registry = lwm2m_gateway::lwm2m::Registry::load_dir(std::path::Path::new("lwm2m_xml"))
        .expect("lwm2m_xml loads");
    Shard::new(
        ShardConfig::new(&config, 0, std::sync::Arc::new(registry)),
        Instant::now(),
        1,
    )
}

/// A connected uplink session and the buffer its driver writes to the broker socket.
struct Uplink {
    session: UplinkSession,
    out: BytesMut,
}

impl Uplink {
    fn connected() -> Uplink {
        let now = Instant::now();
        let mut session = UplinkSession::new(SessionOptions {
            client_id: "bench-0".into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(3600),
            max_batch: 1024,
            offline_buffer: 100_000,
        });
        session.on_connected(now);
        let mut out = BytesMut::with_capacity(1 << 16);
        session.poll_transmit(now, &mut out);
        let mut connack = BytesMut::from(&[0x20, 0x02, 0x00, 0x00][..]);
        session
            .handle_incoming(now, &mut connack)
            .expect("CONNACK accepted");
        assert!(session.is_connected());
        out.clear();
        Uplink { session, out }
    }

    /// Moves everything the shard wants published into the session and writes the MQTT
    /// PUBLISH packets into `out`, as the runtime and the uplink driver do before a socket
    /// write.
    fn publish_bytes(&mut self, s: &mut Shard, now: Instant) -> &[u8] {
        self.out.clear();
        let session = &mut self.session;
        s.drain_publishes(|p| {
            session.publish(
                now,
                Outgoing {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                },
            )
        });
        while session.poll_transmit(now, &mut self.out) > 0 {}
        session.on_transmit_complete();
        &self.out
    }
}

fn bench_register(c: &mut Criterion) {
    let mut g = c.benchmark_group("register");
    g.throughput(Throughput::Elements(1));
    // Register → 2.01 bytes + register JSON, on a shard that keeps growing; journaled, the
    // registration is also encoded into the shard's journal buffer (drained every 1024
    // registrations, as the flush timer would).
    for (name, journaled) in [
        ("datagram_to_response_and_json", false),
        ("datagram_to_response_and_json_journaled", true),
    ] {
        g.bench_function(name, |b| {
            let mut s = shard();
            if journaled {
                s.enable_journal(1_800_000_000);
            }
            let now = Instant::now();
            let mut buf = Vec::new();
            let mut journal = Vec::new();
            let mut i = 0u32;
            b.iter(|| {
                i = i.wrapping_add(1);
                register(i, 300, &mut buf);
                s.handle_datagram(now, addr(i), &buf);
                s.drain_transmits(|_, d| {
                    std::hint::black_box(d);
                });
                while let Some(p) = s.poll_publish() {
                    std::hint::black_box(p);
                }
                if i % 1024 == 0 {
                    s.take_journal(&mut journal);
                    std::hint::black_box(&journal);
                    journal.clear();
                }
            })
        });
    }
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    // An Update datagram of a registered device → 2.04 + update JSON → MQTT PUBLISH bytes.
    g.bench_function("update_datagram_to_publish_bytes", |b| {
        let mut s = shard();
        let now = Instant::now();
        let mut buf = Vec::new();
        register(1, 300, &mut buf);
        s.handle_datagram(now, addr(1), &buf);
        let mut loc = Vec::new();
        s.drain_transmits(|_, d| {
            let m = lwm2m_gateway::coap::Message::parse(d).expect("2.01 parses");
            loc = m.location_path().nth(1).expect("rd/<id>").to_vec();
        });
        while s.poll_publish().is_some() {}
        let mut uplink = Uplink::connected();
        let mut mid = 0u16;
        b.iter(|| {
            mid = mid.wrapping_add(1);
            buf.clear();
            let mut w =
                MessageWriter::new(&mut buf, MessageType::Con, Code::POST, mid, &[1, 2, 3, 4]);
            w.option(option::URI_PATH, b"rd")
                .option(option::URI_PATH, &loc);
            w.finish();
            s.handle_datagram(now + Duration::from_millis(u64::from(mid)), addr(1), &buf);
            s.drain_transmits(|_, d| {
                std::hint::black_box(d);
            });
            std::hint::black_box(uplink.publish_bytes(&mut s, now));
        })
    });
    g.finish();
}

#[global_allocator]
static GLOBAL: support::CountingAlloc = support::CountingAlloc;

/// A notification payload and its Content-Format.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    /// Path observed.
    path: &'static str,
    format: u16,
    payload: &'static [u8],
}

/// Text: one float resource.
const TEXT_FLOAT: Case = Case {
    name: "non_notify_to_publish_bytes",
    path: "/3303/0/5700",
    format: 0,
    payload: b"22.25",
};

/// TLV: an object instance with 5700 Sensor Value 22.25 (float) and 5701 Units "Cel".
const TLV_INSTANCE: Case = Case {
    name: "non_notify_tlv_to_publish_bytes",
    path: "/3303/0",
    format: 11542,
    payload: &[
        0xe4, 0x16, 0x44, 0x41, 0xb2, 0x00, 0x00, // 5700: 22.25f32
        0xe3, 0x16, 0x45, b'C', b'e', b'l', // 5701: "Cel"
    ],
};

/// The observation token of the observe `request` and the device's ACK carrying
/// `case`'s first value.
fn observe_ack(request: &[u8], case: Case) -> (Vec<u8>, Vec<u8>) {
    let req = lwm2m_gateway::coap::Message::parse(request).expect("observe request");
    let token = req.token().to_vec();
    let mut ack = Vec::new();
    let mut w = MessageWriter::new(&mut ack, MessageType::Ack, Code::CONTENT, req.mid(), &token);
    w.uint_option(option::OBSERVE, 1)
        .uint_option(option::CONTENT_FORMAT, u32::from(case.format))
        .payload(case.payload);
    w.finish();
    (token, ack)
}

/// A registered device observed on `case.path`, ready for notifications: returns the
/// shard and the observation token.
fn observed_shard(case: Case) -> (Shard, Vec<u8>) {
    let mut s = shard();
    let now = Instant::now();
    let mut buf = Vec::new();
    register(1, 300, &mut buf);
    s.handle_datagram(now, addr(1), &buf);
    s.drain_transmits(|_, _| {});
    while s.poll_publish().is_some() {}
    let command = format!(
        r#"{{"requestID":1,"msgType":"observe","data":{{"path":"{}"}}}}"#,
        case.path
    );
    s.handle_command(now, "lwm2m/bench-1/dn", command.as_bytes());
    let mut request = Vec::new();
    s.drain_transmits(|_, d| request = d.to_vec());
    let (token, ack) = observe_ack(&request, case);
    s.handle_datagram(now, addr(1), &ack);
    let p = s.poll_publish().expect("observe response published");
    let json: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
    assert_eq!(json["data"]["code"], "2.05", "{json}");
    assert!(json["data"].get("decoded").is_none(), "decoded: {json}");
    (s, token)
}

fn notify(buf: &mut Vec<u8>, seq: u32, token: &[u8], case: Case) {
    buf.clear();
    let mut w = MessageWriter::new(buf, MessageType::Non, Code::CONTENT, seq as u16, token);
    w.uint_option(option::OBSERVE, seq)
        .uint_option(option::CONTENT_FORMAT, u32::from(case.format))
        .payload(case.payload);
    w.finish();
}

fn bench_notify(c: &mut Criterion) {
    let mut g = c.benchmark_group("notify");
    g.throughput(Throughput::Elements(1));
    // SPEC §7 P1: a NON notification datagram → MQTT PUBLISH bytes, one core.
    for case in [TEXT_FLOAT, TLV_INSTANCE] {
        g.bench_function(case.name, |b| {
            let (mut s, token) = observed_shard(case);
            let now = Instant::now();
            let mut buf = Vec::new();
            let mut uplink = Uplink::connected();
            let mut seq = 1u32;
            b.iter(|| {
                seq += 1;
                notify(&mut buf, seq, &token, case);
                s.handle_datagram(now, addr(1), &buf);
                std::hint::black_box(uplink.publish_bytes(&mut s, now));
            })
        });
    }
    g.finish();
    // Allocations per notification, reported next to the timing.
    for case in [TEXT_FLOAT, TLV_INSTANCE] {
        let (mut s, token) = observed_shard(case);
        let now = Instant::now();
        let mut buf = Vec::new();
        let mut uplink = Uplink::connected();
        // Warm up: buffers reach their steady size.
        for seq in 2..100 {
            notify(&mut buf, seq, &token, case);
            s.handle_datagram(now, addr(1), &buf);
            uplink.publish_bytes(&mut s, now);
        }
        const N: u32 = 10_000;
        let (mut published, mut bytes) = (0u64, 0usize);
        let before = support::CALLS.load(Ordering::Relaxed);
        for seq in 100..100 + N {
            notify(&mut buf, seq, &token, case);
            s.handle_datagram(now, addr(1), &buf);
            let out = uplink.publish_bytes(&mut s, now);
            bytes += out.len();
            published += u64::from(out.first() == Some(&0x30));
        }
        let allocations = support::CALLS.load(Ordering::Relaxed) - before;
        let per = allocations as f64 / f64::from(N);
        assert_eq!(published, u64::from(N), "one PUBLISH per notification");
        println!(
            "notify/{}: {per:.2} heap allocations per notification ({allocations} in {N}; {} PUBLISH bytes each)",
            case.name,
            bytes / N as usize
        );
    }
}

/// A device `bench-1` registered and observed over DTLS (PSK, CCM_8, the gateway's own
/// record layer): the shard, the device's client and the observation token.
fn observed_secure_shard(case: Case) -> (Shard, DtlsClient, Vec<u8>) {
    let mut s = shard();
    let now = Instant::now();
    let dir = std::env::temp_dir().join(format!("bench-dtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let psk = dir.join("psk.txt");
    std::fs::write(&psk, "bench-1:30313233343536373839616263646566\n").expect("psk");
    let creds = Credentials::load(&DtlsListenerConfig {
        enabled: true,
        bind: "127.0.0.1:0".parse().expect("addr"),
        psk_file: Some(psk),
        certfile: None,
        keyfile: None,
        cacertfile: None,
    })
    .expect("credentials");
    let _ = std::fs::remove_dir_all(&dir);
    let mut builder = creds.server_context().expect("context");
    enable_cookies(&mut builder);
    let limits = DtlsLimits {
        handshake_timeout: Duration::from_secs(30),
        session_idle: Duration::from_secs(86_400),
        retransmit_initial: Duration::from_secs(1),
    };
    let identify = std::sync::Arc::new(move |ssl: &openssl::ssl::SslRef| identity_of(ssl, &creds));
    let server = DtlsServer::new(builder.build(), identify, s.identity_hasher(), limits, now)
        .expect("server");
    s.enable_dtls(server);
    let mut client = DtlsClient::psk("bench-1", b"0123456789abcdef").expect("client");
    client.handle_timeout();
    // Sends what the client wrote and feeds it everything the shard sent back.
    let exchange = |s: &mut Shard, client: &mut DtlsClient| {
        while let Some(d) = client.poll_transmit() {
            s.handle_secure_datagram(now, addr(1), &d);
        }
        s.drain_secure_transmits(|_, d| client.handle_datagram(d));
    };
    for _ in 0..8 {
        exchange(&mut s, &mut client);
    }
    assert!(client.is_established());
    let mut buf = Vec::new();
    register(1, 300, &mut buf);
    client.send(&buf).expect("send");
    exchange(&mut s, &mut client);
    while s.poll_publish().is_some() {}
    let command = format!(
        r#"{{"requestID":1,"msgType":"observe","data":{{"path":"{}"}}}}"#,
        case.path
    );
    s.handle_command(now, "lwm2m/bench-1/dn", command.as_bytes());
    let mut request = Vec::new();
    while let Some(d) = client.recv() {
        request = d;
    }
    s.drain_secure_transmits(|_, d| client.handle_datagram(d));
    while let Some(d) = client.recv() {
        request = d;
    }
    let (token, ack) = observe_ack(&request, case);
    client.send(&ack).expect("send");
    exchange(&mut s, &mut client);
    let p = s.poll_publish().expect("observe response published");
    let json: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
    assert_eq!(json["data"]["code"], "2.05", "{json}");
    (s, client, token)
}

/// The same notification as [`bench_notify`]'s text case, arriving over DTLS: the record
/// opened by the shard's DTLS server, then the plain pipeline. The device's sealing is set
/// up outside the measurement.
fn bench_notify_dtls(c: &mut Criterion) {
    let mut g = c.benchmark_group("notify");
    g.throughput(Throughput::Elements(1));
    let case = TEXT_FLOAT;
    g.bench_function("dtls_non_notify_to_publish_bytes", |b| {
        let (mut s, mut client, token) = observed_secure_shard(case);
        let now = Instant::now();
        let mut buf = Vec::new();
        let mut uplink = Uplink::connected();
        let mut seq = 1u32;
        b.iter_batched(
            || {
                seq += 1;
                notify(&mut buf, seq, &token, case);
                client.send(&buf).expect("seal");
                client.poll_transmit().expect("record")
            },
            |record| {
                s.handle_secure_datagram(now, addr(1), &record);
                std::hint::black_box(uplink.publish_bytes(&mut s, now).len());
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    let (mut s, mut client, token) = observed_secure_shard(case);
    let now = Instant::now();
    let mut buf = Vec::new();
    let mut uplink = Uplink::connected();
    const N: u32 = 10_000;
    let records: Vec<Vec<u8>> = (2..2 + N + 100)
        .map(|seq| {
            notify(&mut buf, seq, &token, case);
            client.send(&buf).expect("seal");
            client.poll_transmit().expect("record")
        })
        .collect();
    for r in &records[..100] {
        s.handle_secure_datagram(now, addr(1), r);
        uplink.publish_bytes(&mut s, now);
    }
    let before = support::CALLS.load(Ordering::Relaxed);
    let mut published = 0u64;
    for r in &records[100..] {
        s.handle_secure_datagram(now, addr(1), r);
        published += u64::from(uplink.publish_bytes(&mut s, now).first() == Some(&0x30));
    }
    let allocations = support::CALLS.load(Ordering::Relaxed) - before;
    assert_eq!(published, u64::from(N), "one PUBLISH per notification");
    println!(
        "notify/dtls_non_notify_to_publish_bytes: {:.2} heap allocations per notification",
        allocations as f64 / f64::from(N)
    );
}

criterion_group!(
    benches,
    bench_register,
    bench_pipeline,
    bench_notify,
    bench_notify_dtls
);
criterion_main!(benches);
