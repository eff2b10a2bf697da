//! Measures the two ways a shard can receive its endpoints' commands from a broker:
//! one subscription per endpoint (`lwm2m/<ep>/dn/#`, batched SUBSCRIBE packets) against
//! one wildcard subscription (`lwm2m/+/dn/#`) whose messages the shard filters itself.
//!
//! ```sh
//! cargo run --release --example command_intake -- 127.0.0.1:1883 100000 50000
//! ```
//! arguments: broker `host:port`, number of endpoints, number of commands. Prints the time
//! to set up the subscriptions and the command delivery rate for each way.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeFilter};

/// Filters per SUBSCRIBE packet, as the uplink batches them.
const FILTERS_PER_SUBSCRIBE: usize = 64;

fn connect(addr: &str, id: &str) -> (Client, rumqttc::Connection) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut opts = MqttOptions::new(id, host, port.parse().expect("port"));
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_inflight(1000);
    Client::new(opts, 200_000)
}

fn run(addr: &str, endpoints: usize, commands: usize, wildcard: bool) {
    let tag = format!("intake{}", std::process::id());
    let (sub, mut conn) = connect(addr, &format!("{tag}-sub-{wildcard}"));
    let started = Instant::now();
    let filters: Vec<String> = if wildcard {
        vec![format!("{tag}/+/dn/#")]
    } else {
        (0..endpoints)
            .map(|i| format!("{tag}/ep{i}/dn/#"))
            .collect()
    };
    let packets = filters.len().div_ceil(FILTERS_PER_SUBSCRIBE);
    for chunk in filters.chunks(FILTERS_PER_SUBSCRIBE) {
        let batch = chunk
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce));
        sub.subscribe_many(batch).expect("subscribe");
    }
    let mut acked = 0;
    let mut received = 0;
    let mut iter = conn.iter();
    while acked < packets {
        if let Some(Ok(Event::Incoming(Packet::SubAck(_)))) = iter.next() {
            acked += 1;
        }
    }
    let setup = started.elapsed();

    let (publisher, mut pconn) = connect(addr, &format!("{tag}-pub-{wildcard}"));
    std::thread::spawn(move || for _ in pconn.iter() {});
    let started = Instant::now();
    for i in 0..commands {
        let topic = format!("{tag}/ep{}/dn", i % endpoints);
        publisher
            .publish(
                topic,
                QoS::AtMostOnce,
                false,
                br#"{"requestID":1,"msgType":"read","data":{"path":"/3/0"}}"#.to_vec(),
            )
            .expect("publish");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < commands && Instant::now() < deadline {
        if let Some(Ok(Event::Incoming(Packet::Publish(_)))) = iter.next() {
            received += 1;
        }
    }
    let took = started.elapsed();
    println!(
        "{:>12}: {} filters in {packets} SUBSCRIBEs set up in {:.2}s; {received}/{commands} commands in {:.2}s ({:.0}/s)",
        if wildcard { "wildcard" } else { "per-endpoint" },
        filters.len(),
        setup.as_secs_f64(),
        took.as_secs_f64(),
        received as f64 / took.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:1883", String::as_str);
    let endpoints = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let commands = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    run(addr, endpoints, commands, false);
    run(addr, endpoints, commands, true);
}
