//! Watches the gateway process under test (`--gateway-pid`): resident memory and CPU time
//! from `/proc`, shown on the progress line and written to `summary.json`.
//!
//! P4 (SPEC §7) is a memory target, so a capacity run reports the gateway's RSS next to
//! the number of devices it holds; CPU seconds put a throughput in perspective on a box
//! the load generator shares.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Resident set size in bytes (`VmRSS`).
    pub rss: u64,
    /// User plus system CPU time in clock ticks.
    pub cpu_ticks: u64,
}

/// A process being watched; samples are kept lock-free for the progress line.
#[derive(Debug)]
pub struct Watch {
    pid: u32,
    dir: PathBuf,
    ticks_per_s: u64,
    first: Sample,
    last_rss: AtomicU64,
    peak_rss: AtomicU64,
    last_cpu: AtomicU64,
}

impl Watch {
    /// Starts watching `pid`; fails when there is no such process to read.
    pub fn new(pid: u32) -> anyhow::Result<Watch> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        if !dir.exists() {
            bail!("--gateway-pid {pid}: no such process");
        }
        // SAFETY: sysconf has no preconditions; it only reads a constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut watch = Watch {
            pid,
            dir,
            ticks_per_s: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
            first: Sample {
                rss: 0,
                cpu_ticks: 0,
            },
            last_rss: AtomicU64::new(0),
            peak_rss: AtomicU64::new(0),
            last_cpu: AtomicU64::new(0),
        };
        watch.first = watch
            .read()
            .with_context(|| format!("--gateway-pid {pid}: reading /proc/{pid}"))?;
        watch.record(watch.first);
        Ok(watch)
    }

    /// Takes a sample now; `None` once the process is gone.
    pub fn sample(&self) -> Option<Sample> {
        let s = self.read().ok()?;
        self.record(s);
        Some(s)
    }

    fn record(&self, s: Sample) {
        self.last_rss.store(s.rss, Ordering::Relaxed);
        self.peak_rss.fetch_max(s.rss, Ordering::Relaxed);
        self.last_cpu.store(s.cpu_ticks, Ordering::Relaxed);
    }

    fn read(&self) -> anyhow::Result<Sample> {
        let status = std::fs::read_to_string(self.dir.join("status"))?;
        let stat = std::fs::read_to_string(self.dir.join("stat"))?;
        let rss = parse_rss(&status).context("no VmRSS line")?;
        let cpu_ticks = parse_cpu_ticks(&stat).context("malformed stat")?;
        Ok(Sample { rss, cpu_ticks })
    }

    /// `gateway rss 123 MiB, cpu 4.5 s` for the progress line.
    pub fn status(&self) -> String {
        format!(
            "gateway rss {:.0} MiB, cpu {:.1} s",
            mib(self.last_rss.load(Ordering::Relaxed)),
            self.cpu_seconds(),
        )
    }

    /// CPU seconds the process used since watching began, sampled now.
    pub fn cpu_seconds_now(&self) -> f64 {
        self.sample();
        self.cpu_seconds()
    }

    fn cpu_seconds(&self) -> f64 {
        let ticks = self
            .last_cpu
            .load(Ordering::Relaxed)
            .saturating_sub(self.first.cpu_ticks);
        ticks as f64 / self.ticks_per_s as f64
    }

    /// The `gateway` object of `summary.json`, after a final sample.
    pub fn summary(&self) -> serde_json::Value {
        self.sample();
        serde_json::json!({
            "pid": self.pid,
            "rss_start_mib": mib(self.first.rss),
            "rss_end_mib": mib(self.last_rss.load(Ordering::Relaxed)),
            "rss_peak_mib": mib(self.peak_rss.load(Ordering::Relaxed)),
            "cpu_s": self.cpu_seconds(),
        })
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `VmRSS:   12345 kB` of `/proc/<pid>/status`, in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `utime + stime` (fields 14 and 15) of `/proc/<pid>/stat`; the command name in
/// parentheses may itself hold spaces and parentheses, so fields count from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tlwm2m-gateway\nVmPeak:\t 9000 kB\nVmRSS:\t  488624 kB\nThreads:\t5\n";
        assert_eq!(parse_rss(status), Some(488_624 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        let stat = "4242 (lwm2m gw (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn watches_a_live_process_and_refuses_a_missing_one() {
        let w = Watch::new(std::process::id()).expect("own process");
        let keep: Vec<u8> = vec![1; 8 << 20];
        let s = w.sample().expect("sample");
        assert!(s.rss >= 8 << 20, "{s:?}");
        std::hint::black_box(&keep);
        let summary = w.summary();
        assert!(
            summary["rss_peak_mib"].as_f64().expect("peak") >= 8.0,
            "{summary}"
        );
        let err = Watch::new(u32::MAX - 1)
            .expect_err("no process")
            .to_string();
        assert!(err.contains("no such process"), "{err}");
    }
}
