//! Load time and memory of the object definitions (`gateway.xml_dir`, by default the OMA
//! registry in `lwm2m_xml/`).
//!
//! `cargo run --release --example registry_load -- [dir] [runs]` (defaults `lwm2m_xml`, 20).
//! Prints the files read, objects and resources defined, the time of one load (the first,
//! with a cold page cache if the files were not read before, then the median of `runs`),
//! the live heap the registry holds (as requested from the allocator plus glibc's per-chunk
//! overhead), and the process RSS before and after the first load.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use lwm2m_gateway::lwm2m::Registry;

#[path = "../benches/support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: support::CountingAlloc = support::CountingAlloc;

/// Resident set size from `/proc/self/status`, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "lwm2m_xml".into()));
    let runs: usize = args
        .next()
        .map(|r| r.parse().expect("run count"))
        .unwrap_or(20);

    let rss_before = rss_kib();
    let live_before = support::LIVE.load(Ordering::Relaxed);
    let began = Instant::now();
    let (registry, report) = Registry::load_dir_with_report(&dir).expect("definitions load");
    let first = began.elapsed();
    let held = support::LIVE.load(Ordering::Relaxed) - live_before;
    let rss_after = rss_kib();

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        let again = Registry::load_dir(&dir).expect("definitions load");
        times.push(began.elapsed());
        assert_eq!(again.len(), registry.len());
    }
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or(first);

    let resources: usize = registry.iter().map(|d| d.resources.len()).sum();
    let bytes: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "xml"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("dir            {}", dir.display());
    println!(
        "files          {} ({} KiB of XML), {} skipped, {} without definitions",
        report.files,
        bytes >> 10,
        report.skipped.len(),
        report.without_definitions.len()
    );
    println!(
        "objects        {} serving, {} older versions",
        registry.len(),
        registry.older_versions()
    );
    println!("resources      {resources}");
    println!(
        "load           first {:.1} ms, median of {runs} {:.1} ms",
        first.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3
    );
    println!("heap held      {} KiB", held >> 10);
    println!(
        "RSS            {rss_before} KiB -> {rss_after} KiB (+{} KiB)",
        rss_after.saturating_sub(rss_before)
    );
}
