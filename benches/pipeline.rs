//! The sans-IO pipeline without sockets: a Register datagram through the shard core, and a
//! datagram all the way to the MQTT PUBLISH bytes the uplink writes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lwm2m_gateway::coap::{option, Code, MessageType, MessageWriter};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::session::{Shard, ShardConfig};
use rumqttc::mqttbytes::v4::Publish;
use rumqttc::mqttbytes::QoS;

const OBJECTS: &[u8] = b"</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>";

fn register(i: u32, buf: &mut Vec<u8>) {
    buf.clear();
    let ep = format!("ep=bench-{i}");
    let mut w = MessageWriter::new(
        buf,
        MessageType::Con,
        Code::POST,
        i as u16,
        &i.to_be_bytes(),
    );
    w.option(option::URI_PATH, b"rd")
        .uint_option(option::CONTENT_FORMAT, 40)
        .option(option::URI_QUERY, b"lwm2m=1.1")
        .option(option::URI_QUERY, ep.as_bytes())
        .option(option::URI_QUERY, b"b=U")
        .option(option::URI_QUERY, b"lt=300")
        .payload(OBJECTS);
    w.finish();
}

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

/// Encodes everything the shard wants published as MQTT PUBLISH packets into `out`, as the
/// uplink does before a socket write.
fn publish_bytes(s: &mut Shard, out: &mut BytesMut) {
    out.clear();
    while let Some(p) = s.poll_publish() {
        Publish::new(p.topic, QoS::AtMostOnce, p.payload)
            .write(out)
            .expect("encodes");
    }
}

fn bench_register(c: &mut Criterion) {
    let mut g = c.benchmark_group("register");
    g.throughput(Throughput::Elements(1));
    // Register → 2.01 bytes + register JSON, on a shard that keeps growing.
    g.bench_function("datagram_to_response_and_json", |b| {
        let mut s = shard();
        let now = Instant::now();
        let mut buf = Vec::new();
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            register(i, &mut buf);
            s.handle_datagram(now, addr(i), &buf);
            s.drain_transmits(|_, d| {
                std::hint::black_box(d);
            });
            while let Some(p) = s.poll_publish() {
                std::hint::black_box(p);
            }
        })
    });
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
        register(1, &mut buf);
        s.handle_datagram(now, addr(1), &buf);
        let mut loc = Vec::new();
        s.drain_transmits(|_, d| {
            let m = lwm2m_gateway::coap::Message::parse(d).expect("2.01 parses");
            loc = m.location_path().nth(1).expect("rd/<id>").to_vec();
        });
        while s.poll_publish().is_some() {}
        let mut out = BytesMut::with_capacity(1 << 16);
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
            publish_bytes(&mut s, &mut out);
            std::hint::black_box(&out);
        })
    });
    g.finish();
}

/// Counts heap allocations so the bench can report allocations per message (SPEC §7 P1).
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A registered device observed on /3303/0/5700, ready for notifications: returns the
/// shard and the observation token.
fn observed_shard() -> (Shard, Vec<u8>) {
    let mut s = shard();
    let now = Instant::now();
    let mut buf = Vec::new();
    register(1, &mut buf);
    s.handle_datagram(now, addr(1), &buf);
    s.drain_transmits(|_, _| {});
    while s.poll_publish().is_some() {}
    s.handle_command(
        now,
        "lwm2m/bench-1/dn",
        br#"{"requestID":1,"msgType":"observe","data":{"path":"/3303/0/5700"}}"#,
    );
    let mut request = Vec::new();
    s.drain_transmits(|_, d| request = d.to_vec());
    let req = lwm2m_gateway::coap::Message::parse(&request).expect("observe request");
    let token = req.token().to_vec();
    let mut ack = Vec::new();
    let mut w = MessageWriter::new(&mut ack, MessageType::Ack, Code::CONTENT, req.mid(), &token);
    w.uint_option(option::OBSERVE, 1)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"21.5");
    w.finish();
    s.handle_datagram(now, addr(1), &ack);
    assert!(s.poll_publish().is_some(), "observe response published");
    (s, token)
}

fn notify(buf: &mut Vec<u8>, seq: u32, token: &[u8]) {
    buf.clear();
    let mut w = MessageWriter::new(buf, MessageType::Non, Code::CONTENT, seq as u16, token);
    w.uint_option(option::OBSERVE, seq)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"22.25");
    w.finish();
}

fn bench_notify(c: &mut Criterion) {
    let mut g = c.benchmark_group("notify");
    g.throughput(Throughput::Elements(1));
    // SPEC §7 P1: a NON notification datagram → MQTT PUBLISH bytes, one core.
    g.bench_function("non_notify_to_publish_bytes", |b| {
        let (mut s, token) = observed_shard();
        let now = Instant::now();
        let mut buf = Vec::new();
        let mut out = BytesMut::with_capacity(1 << 16);
        let mut seq = 1u32;
        b.iter(|| {
            seq += 1;
            notify(&mut buf, seq, &token);
            s.handle_datagram(now, addr(1), &buf);
            publish_bytes(&mut s, &mut out);
            std::hint::black_box(&out);
        })
    });
    g.finish();
    // Allocations per notification, reported next to the timing.
    let (mut s, token) = observed_shard();
    let now = Instant::now();
    let (mut buf, mut out) = (Vec::new(), BytesMut::with_capacity(1 << 16));
    const N: u32 = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for seq in 2..2 + N {
        notify(&mut buf, seq, &token);
        s.handle_datagram(now, addr(1), &buf);
        publish_bytes(&mut s, &mut out);
    }
    let per = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / f64::from(N);
    println!("notify/non_notify_to_publish_bytes: {per:.2} heap allocations per notification");
}

criterion_group!(benches, bench_register, bench_pipeline, bench_notify);
criterion_main!(benches);
