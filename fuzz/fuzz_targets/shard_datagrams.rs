//! The device-facing surface of a shard as a whole: a registered device observed on
//! /3303/0/5700, then a sequence of arbitrary datagrams (from its address or a stranger's)
//! and arbitrary command payloads, and arbitrary cluster records (the shard runs in
//! cluster mode). Nothing may panic, and everything the shard publishes must be valid JSON.
//!
//! Input: repeated `[selector][len][bytes...]`; the selector's low bits pick the source
//! (device or stranger), a command or a cluster record, and how far the clock moves before
//! it.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::coap::{option, Code, MessageType, MessageWriter};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::lwm2m::Registry;
use lwm2m_gateway::session::{presence_bucket, Shard, ShardConfig};

const DEVICE: &str = "127.0.0.1:40000";
const STRANGER: &str = "127.0.0.2:40001";

fn check(shard: &mut Shard) {
    shard.drain_transmits(|_, d| assert!(!d.is_empty(), "no empty datagrams"));
    shard.drain_publishes(|p| {
        assert!(p.topic.starts_with("lwm2m/"), "topic {}", p.topic);
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(p.payload) {
            panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(p.payload));
        }
    });
    shard.drain_retained(|topic, payload| {
        assert!(topic.starts_with("fz-cluster/"), "topic {topic}");
        if !payload.is_empty() {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(payload) {
                panic!("invalid record ({e}): {}", String::from_utf8_lossy(payload));
            }
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let mut config = Config::default_config();
    config.gateway.shards = 1;
    config.udp.max_connections = 64;
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    let registry = REGISTRY
        .get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lwm2m_xml");
            Arc::new(Registry::load_dir(&dir).expect("lwm2m_xml loads"))
        })
        .clone();
    let mut now = Instant::now();
    let mut shard = Shard::new(ShardConfig::new(&config, 0, registry), now, 7);
    shard.enable_cluster("gw-fz", "fz-cluster", 1_700_000_000_000);
    shard.handle_broker_connected(now);
    let presence = format!("fz-cluster/presence/{}/fz", presence_bucket("fz"));
    let device: SocketAddr = DEVICE.parse().expect("address");
    let stranger: SocketAddr = STRANGER.parse().expect("address");

    let mut register = Vec::new();
    let mut w = MessageWriter::new(&mut register, MessageType::Con, Code::POST, 1, &[1, 2]);
    w.option(option::URI_PATH, b"rd")
        .uint_option(option::CONTENT_FORMAT, 40)
        .option(option::URI_QUERY, b"ep=fz")
        .option(option::URI_QUERY, b"lt=60")
        .payload(b"</3/0>,</3303/0>");
    w.finish();
    shard.handle_datagram(now, device, &register);
    shard.handle_command(
        now,
        "lwm2m/fz/dn",
        br#"{"requestID":1,"msgType":"observe","data":{"path":"/3303/0/5700"}}"#,
    );
    check(&mut shard);

    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(selector >> 3) * 250);
        match selector & 7 {
            0..=3 => shard.handle_datagram(now, device, chunk),
            4 => shard.handle_datagram(now, stranger, chunk),
            5 => shard.handle_command(now, "lwm2m/fz/dn", chunk),
            6 => shard.handle_command(now, &presence, chunk),
            _ => shard.handle_command(now, "fz-cluster/nodes/gw-a/0", chunk),
        }
        shard.handle_timeout(now);
        check(&mut shard);
    }
});
