//! Persistence at scale: the journal a register storm writes, the compaction at shutdown,
//! and the restore of every registration at the next start, with time and RSS of each.
//!
//! ```sh
//! cargo run --release --example journal_restore -- write 1000000 /tmp/gw-journal
//! cargo run --release --example journal_restore -- restore /tmp/gw-journal
//! ```
//!
//! `write` registers N wakaama-style devices on two sans-IO shards with journaling on
//! (the runtime's path minus the sockets), hands the journal to the writer thread as the
//! flush timer would, and stops the writer (which compacts). `restore` is a fresh process
//! doing what a starting gateway does: load, plan, and restore into two shards.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_gateway::config::Config;
use lwm2m_gateway::persist::{self, JournalWriter};
use lwm2m_gateway::runtime::shard_for;
use lwm2m_gateway::session::{directory_shard, Shard, ShardConfig};

#[path = "../benches/support/mod.rs"]
mod support;

const SHARDS: usize = 2;

/// `VmRSS` and `VmHWM` of this process, MiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Shards as a node of the default configuration has them (tables sized for its
/// `max_connections`), or sized for `devices` on one shard when `skewed`: a storm's
/// addresses need not split evenly.
fn shards(devices: usize, skewed: bool) -> Vec<Shard> {
    let mut config = Config::default_config();
    config.gateway.shards = SHARDS;
    config.udp.max_conn_rate = u32::MAX / 2;
    if skewed {
        config.udp.max_connections = (devices * SHARDS).max(1024);
    }
    let registry = Arc::new(
        lwm2m_gateway::lwm2m::Registry::load_dir(Path::new("lwm2m_xml")).expect("lwm2m_xml loads"),
    );
    let now = Instant::now();
    (0..SHARDS)
        .map(|i| {
            let mut s = Shard::new(
                ShardConfig::new(&config, i, registry.clone()),
                now,
                i as u64,
            );
            s.enable_journal(persist::unix_now());
            s
        })
        .collect()
}

fn write(devices: u32, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let writer = JournalWriter::start(persist::load(dir).expect("empty dir")).expect("writer");
    let sender = writer.sender();
    let mut shards = shards(devices as usize, true);
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut journal_bytes = 0;
    for i in 0..devices {
        let now = start + Duration::from_micros(u64::from(i) * 20);
        let from = support::addr(i);
        let owner = shard_for(&from, SHARDS);
        support::register(i, 86_400, &mut buf);
        shards[owner].handle_datagram(now, from, &buf);
        // Directory claims go to the name's shard, as the runtime's channels would.
        while let Some((to, h)) = shards[owner].poll_handoff() {
            shards[to].handle_handoff(now, h);
        }
        for s in &mut shards {
            s.drain_transmits(|_, d| {
                std::hint::black_box(d);
            });
            s.drain_publishes(|p| {
                std::hint::black_box(p);
            });
        }
        if i % 25_000 == 0 || i + 1 == devices {
            for s in &mut shards {
                let mut out = Vec::new();
                s.take_journal(&mut out);
                journal_bytes += out.len();
                sender.append(out);
            }
        }
    }
    let registered = start.elapsed();
    let n: usize = shards.iter().map(Shard::registered).sum();
    assert_eq!(n, devices as usize, "every device registered");
    let stopping = Instant::now();
    writer.stop();
    let stopped = stopping.elapsed();
    let snapshot = std::fs::metadata(dir.join("snapshot")).map_or(0, |m| m.len());
    println!(
        "write: {devices} registrations on {SHARDS} shards with journaling in {:.2} s ({:.0}/s, {:.2} µs each incl. the register itself); journal {:.1} MiB ({} B per registration); stop + compaction {:.2} s; snapshot {:.1} MiB",
        registered.as_secs_f64(),
        f64::from(devices) / registered.as_secs_f64(),
        registered.as_secs_f64() * 1e6 / f64::from(devices),
        journal_bytes as f64 / 1048576.0,
        journal_bytes / devices.max(1) as usize,
        stopped.as_secs_f64(),
        snapshot as f64 / 1048576.0
    );
}

fn restore(dir: &Path) {
    let (rss0, _) = rss();
    let started = Instant::now();
    let mut loaded = persist::load(dir).expect("loads");
    let loaded_at = started.elapsed();
    let merge = std::mem::take(&mut loaded.merge);
    let count = merge.len();
    let plan = persist::plan_restore(
        merge.into_live(),
        persist::unix_now(),
        SHARDS,
        |a| shard_for(a, SHARDS),
        |ep| directory_shard(ep, SHARDS),
    );
    let planned_at = started.elapsed();
    let mut shards = shards(count, false);
    let now = Instant::now();
    for (s, r) in shards.iter_mut().zip(plan.shards) {
        s.restore(now, r);
    }
    let took = started.elapsed();
    // As the gateway does once its shards restored.
    persist::release_freed_memory();
    let restored: usize = shards.iter().map(Shard::registered).sum();
    assert_eq!(restored, count);
    let (rss, hwm) = rss();
    println!(
        "restore: {restored} registrations in {:.2} s (read + merge {:.2} s, plan {:.2} s, into shards {:.2} s); RSS {rss} MiB after (peak {hwm} MiB, {rss0} MiB before); {} damaged stretches",
        took.as_secs_f64(),
        loaded_at.as_secs_f64(),
        (planned_at - loaded_at).as_secs_f64(),
        (took - planned_at).as_secs_f64(),
        loaded.report.corrupt,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => {
            let devices = args
                .get(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1_000_000);
            let dir = args.get(3).map_or("/tmp/gw-journal", String::as_str);
            write(devices, Path::new(dir));
        }
        Some("restore") => {
            let dir = args.get(2).map_or("/tmp/gw-journal", String::as_str);
            restore(Path::new(dir));
        }
        _ => eprintln!("usage: journal_restore write [devices] [dir] | restore [dir]"),
    }
}
