//! What a client listing costs the shard serving it (issue #11: "a 1 M-client listing
//! pages without stalling a shard"): registers N devices on one shard (default 500 000,
//! one shard's share of 1 M on two shards), then pages through all of them 1000 at a time
//! exactly as the shard's control task does — one budget of name-index buckets per turn,
//! the datagram loop running between turns — and reports the longest turn (the longest the
//! shard's datagram pipeline can wait behind a listing), the time per page, and a filtered
//! count over every endpoint.
//!
//! `cargo run --release --example list_clients -- [devices]`

use std::time::{Duration, Instant};

use lwm2m_gateway::config::Config;
use lwm2m_gateway::session::{ClientCursor, ClientFilter, ListStep, Shard, ShardConfig};

#[path = "../benches/support/mod.rs"]
mod support;

/// The control task's budget of buckets per turn (`runtime/driver.rs`, `LIST_BUDGET`).
const BUDGET: usize = 1024;

/// Clients built per turn (`runtime/driver.rs`, `LIST_ITEMS_PER_TURN`).
const ITEMS_PER_TURN: usize = 250;

/// Clients per page, the API's maximum.
const LIMIT: usize = 1000;

fn main() {
    let devices: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("device count"))
        .unwrap_or(500_000);
    let mut config = Config::default_config();
    config.gateway.shards = 2;
    config.udp.max_conn_rate = u32::MAX / 2;
    let registry = lwm2m_gateway::lwm2m::Registry::load_dir(std::path::Path::new("lwm2m_xml"))
        .expect("lwm2m_xml loads");
    let start = Instant::now();
    let mut shard = Shard::new(
        ShardConfig::new(&config, 0, std::sync::Arc::new(registry)),
        start,
        1,
    );
    let mut buf = Vec::new();
    for i in 0..devices {
        let now = start + Duration::from_micros(u64::from(i) * 40);
        support::register(i, 86_400, &mut buf);
        shard.handle_datagram(now, support::addr(i), &buf);
        shard.drain_transmits(|_, d| {
            std::hint::black_box(d);
        });
        while shard.poll_publish().is_some() {}
    }
    assert_eq!(shard.registered(), devices as usize);
    let now = start + Duration::from_secs(60);

    // Page through everything, one budget per turn.
    let filter = ClientFilter::default();
    let (mut pages, mut listed) = (0u64, 0usize);
    let mut turn_times = Vec::new();
    let mut page_times = Vec::new();
    let mut cursor = Some(ClientCursor::default());
    let began = Instant::now();
    while let Some(mut at) = cursor.take() {
        let page_began = Instant::now();
        let mut items = Vec::with_capacity(LIMIT);
        loop {
            let t = Instant::now();
            let turn_limit = (items.len() + ITEMS_PER_TURN).min(LIMIT);
            let step = shard.list_clients(now, &filter, at, turn_limit, BUDGET, &mut items);
            turn_times.push(t.elapsed());
            match step {
                ListStep::Full(next) if items.len() >= LIMIT => {
                    cursor = Some(next);
                    break;
                }
                ListStep::End => break,
                ListStep::Full(next) | ListStep::Paused(next) => at = next,
            }
        }
        if items.is_empty() {
            break;
        }
        listed += items.len();
        pages += 1;
        page_times.push(page_began.elapsed());
        std::hint::black_box(items);
    }
    let all = began.elapsed();
    assert_eq!(listed, devices as usize, "every client listed once");
    page_times.sort();
    turn_times.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;

    // A filtered count over every endpoint, one budget per turn.
    let like = ClientFilter {
        like: Some("-4242".into()),
        ..ClientFilter::default()
    };
    let (mut count, mut from) = (0, Some(0));
    let mut count_times = Vec::new();
    let count_began = Instant::now();
    while let Some(at) = from {
        let t = Instant::now();
        let (n, next) = shard.count_clients(&like, at, BUDGET);
        count_times.push(t.elapsed());
        count += n;
        from = next;
    }
    let count_all = count_began.elapsed();
    count_times.sort();
    println!(
        "{devices} endpoints on one shard: {pages} pages of {LIMIT} in {:.0} ms, {} turns; \
         shard time per page p50 {:.0} µs, p99 {:.0} µs; per turn p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        all.as_secs_f64() * 1e3,
        turn_times.len(),
        pct(&page_times, 0.5),
        pct(&page_times, 0.99),
        pct(&turn_times, 0.5),
        pct(&turn_times, 0.99),
        pct(&turn_times, 1.0),
    );
    println!(
        "filtered count (like, {count} matches): {:.0} ms in all, {} turns; per turn p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        count_all.as_secs_f64() * 1e3,
        count_times.len(),
        pct(&count_times, 0.5),
        pct(&count_times, 0.99),
        pct(&count_times, 1.0),
    );
}
