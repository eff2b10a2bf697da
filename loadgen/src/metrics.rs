//! Measurement plumbing: a run clock, per-thread latency recorders, run-wide counters and
//! the collector that turns 1 s interval histograms into `.hlog` files, the live progress
//! line and the totals of `summary.json`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// Length of one histogram interval (and of one progress line).
pub const INTERVAL_NS: u64 = 1_000_000_000;
/// Lowest latency the histograms tell apart (ns): 1 µs is finer than any loopback hop.
const LOWEST_NS: u64 = 1_000;
/// Highest latency recorded (ns); slower is a timeout anyway (RFC 7252 EXCHANGE_LIFETIME).
const HIGHEST_NS: u64 = 300_000_000_000;
/// Significant decimal digits kept by every histogram.
const SIGFIG: u8 = 3;
/// An interval is written once the clock is this many intervals past its end, so threads
/// that flush a little late still land in the right interval.
const GRACE_INTERVALS: u64 = 1;

/// Nanoseconds since the start of the run, shared by every thread of the process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    /// Starts the run clock now.
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Nanoseconds since the start of the run.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Wall-clock time of the start.
    pub fn wall_start(&self) -> SystemTime {
        self.wall
    }
}

/// A latency the run measures; each has its own `.hlog` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Register sent (due time) → 2.01 Created.
    Register,
    /// Update sent → 2.04 Changed.
    Update,
    /// Deregister sent → 2.02 Deleted.
    Deregister,
    /// Notification due on the device → notification received over MQTT.
    NotifyE2e,
    /// Command due to be published over MQTT → its response received over MQTT (commands
    /// the gateway sent at once).
    CommandRtt,
    /// The same for commands the gateway acknowledged `queued` because the device slept:
    /// the wait until it woke included.
    QueuedRtt,
    /// Datagram sent to the echo sink → echo received.
    UdpRtt,
    /// A probe published over MQTT → received back on the subscription: the broker's own
    /// share of a command round trip (which crosses the broker twice), in the same run.
    BrokerRtt,
    /// A full DTLS handshake due (ClientHello) → established, cookie exchange included.
    DtlsHandshake,
    /// An abbreviated DTLS handshake (resuming a session) due → established.
    DtlsResume,
}

impl Metric {
    /// Every metric, in file order.
    pub const ALL: [Metric; 10] = [
        Metric::Register,
        Metric::Update,
        Metric::Deregister,
        Metric::NotifyE2e,
        Metric::CommandRtt,
        Metric::QueuedRtt,
        Metric::UdpRtt,
        Metric::BrokerRtt,
        Metric::DtlsHandshake,
        Metric::DtlsResume,
    ];

    /// File stem and summary key.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Register => "register",
            Metric::Update => "update",
            Metric::Deregister => "deregister",
            Metric::NotifyE2e => "notify_e2e",
            Metric::CommandRtt => "command_rtt",
            Metric::QueuedRtt => "queued_rtt",
            Metric::UdpRtt => "udp_rtt",
            Metric::BrokerRtt => "broker_rtt",
            Metric::DtlsHandshake => "dtls_handshake",
            Metric::DtlsResume => "dtls_resume",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// A histogram with the run's bounds (values in ns).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGFIG)
        .expect("static histogram bounds are valid")
}

/// Run-wide event counters, shown live and written to `summary.json`.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// Devices that got 2.01 Created.
    Registered,
    /// Registers answered with an error code.
    RegisterFailed,
    /// CON requests (register, update, deregister, CON notify) never acknowledged.
    Timeouts,
    /// Updates answered 2.04.
    Updated,
    /// Updates answered with an error code.
    UpdateFailed,
    /// Deregisters answered 2.02.
    Deregistered,
    /// Observe requests the devices accepted.
    Observed,
    /// Notifications sent by devices whose notifications the MQTT application receives
    /// (all of them unless `--sample`).
    NotifySent,
    /// Notifications sent by devices left out of the application's `--sample`: they reach
    /// the broker but nobody subscribes to them.
    NotifyUnwatched,
    /// Notifications received over MQTT.
    NotifyReceived,
    /// Gateway requests answered by devices (observe, read, ...).
    RequestsAnswered,
    /// Commands published over MQTT.
    CommandsSent,
    /// Command responses with a 2.xx code.
    CommandsOk,
    /// Command responses with an error code or `coap_timeout`.
    CommandsFailed,
    /// Commands the gateway acknowledged as `queued` for a sleeping device (their
    /// response follows when it wakes).
    CommandsQueued,
    /// Command responses `coap_timeout`: the device never answered what the gateway sent.
    CommandsTimedOut,
    /// Of those, commands to queue-mode devices: the gateway sent while the device slept.
    SleeperTimedOut,
    /// Commands answered 5.04 `expired`: queued longer than their time to live.
    CommandsExpired,
    /// Times a sleeping (queue-mode) device woke and sent a notification or an Update.
    Wakes,
    /// Datagrams sent to the echo sink.
    PingsSent,
    /// Echoes received.
    PingsOk,
    /// Messages that could not be understood (bad CoAP, bad JSON, unexpected codes).
    Malformed,
    /// Commands never answered and notifications never seen over MQTT.
    Lost,
    /// Updates sent from a new address (simulated NAT rebinding).
    Rebound,
    /// Gateway requests a queue-mode device never saw because it was asleep.
    Asleep,
    /// DTLS handshakes completed (full or resumed).
    Handshakes,
    /// Handshakes that resumed the offered session (abbreviated).
    Resumed,
    /// Resumptions the gateway answered with a full handshake instead.
    NotResumed,
    /// DTLS handshakes or connections that failed (alert, timeout, closed).
    DtlsFailed,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 29] = [
        Counter::Registered,
        Counter::RegisterFailed,
        Counter::Timeouts,
        Counter::Updated,
        Counter::UpdateFailed,
        Counter::Deregistered,
        Counter::Observed,
        Counter::NotifySent,
        Counter::NotifyUnwatched,
        Counter::NotifyReceived,
        Counter::RequestsAnswered,
        Counter::CommandsSent,
        Counter::CommandsOk,
        Counter::CommandsFailed,
        Counter::CommandsQueued,
        Counter::CommandsTimedOut,
        Counter::SleeperTimedOut,
        Counter::CommandsExpired,
        Counter::Wakes,
        Counter::PingsSent,
        Counter::PingsOk,
        Counter::Malformed,
        Counter::Lost,
        Counter::Rebound,
        Counter::Asleep,
        Counter::Handshakes,
        Counter::Resumed,
        Counter::NotResumed,
        Counter::DtlsFailed,
    ];

    /// Summary key.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Registered => "registered",
            Counter::RegisterFailed => "register_failed",
            Counter::Timeouts => "timeouts",
            Counter::Updated => "updated",
            Counter::UpdateFailed => "update_failed",
            Counter::Deregistered => "deregistered",
            Counter::Observed => "observed",
            Counter::NotifySent => "notify_sent",
            Counter::NotifyUnwatched => "notify_unwatched",
            Counter::NotifyReceived => "notify_received",
            Counter::RequestsAnswered => "requests_answered",
            Counter::CommandsSent => "commands_sent",
            Counter::CommandsOk => "commands_ok",
            Counter::CommandsFailed => "commands_failed",
            Counter::CommandsQueued => "commands_queued",
            Counter::CommandsTimedOut => "commands_coap_timeout",
            Counter::SleeperTimedOut => "sleeping_coap_timeout",
            Counter::CommandsExpired => "commands_expired",
            Counter::Wakes => "wakes",
            Counter::PingsSent => "pings_sent",
            Counter::PingsOk => "pings_ok",
            Counter::Malformed => "malformed",
            Counter::Lost => "lost",
            Counter::Rebound => "rebound",
            Counter::Asleep => "asleep",
            Counter::Handshakes => "dtls_handshakes",
            Counter::Resumed => "dtls_resumed",
            Counter::NotResumed => "dtls_not_resumed",
            Counter::DtlsFailed => "dtls_failed",
        }
    }

    /// Whether the counter counts an error of the run.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Counter::RegisterFailed
                | Counter::UpdateFailed
                | Counter::CommandsFailed
                | Counter::Malformed
                | Counter::Lost
                | Counter::DtlsFailed
        )
    }
}

/// The run's counters.
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; Counter::ALL.len()]);

impl Counters {
    /// Adds `n` to `c`.
    pub fn add(&self, c: Counter, n: u64) {
        self.0[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Current value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize].load(Ordering::Relaxed)
    }

    /// Sum of the error counters.
    pub fn errors(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_error())
            .map(|&c| self.get(c))
            .sum()
    }
}

/// One finished interval histogram on its way to the collector, with the times (ns) of its
/// first and last value.
pub type IntervalMsg = (Metric, u64, Histogram<u64>, (u64, u64));

/// The interval histogram a recorder is filling, with its first and last record times.
type Open = (Histogram<u64>, (u64, u64));

/// Records latencies of one thread into 1 s interval histograms.
#[derive(Debug)]
pub struct Recorder {
    tx: Sender<IntervalMsg>,
    interval: u64,
    hists: Vec<Option<Open>>,
}

impl Recorder {
    /// A recorder feeding the collector behind `tx`.
    pub fn new(tx: Sender<IntervalMsg>) -> Recorder {
        Recorder {
            tx,
            interval: 0,
            hists: Metric::ALL.iter().map(|_| None).collect(),
        }
    }

    /// Records `latency_ns` of `metric` observed at `now_ns`.
    pub fn record(&mut self, metric: Metric, now_ns: u64, latency_ns: u64) {
        self.tick(now_ns);
        let (h, span) =
            self.hists[metric.slot()].get_or_insert_with(|| (histogram(), (now_ns, now_ns)));
        h.saturating_record(latency_ns.max(1));
        span.1 = now_ns;
    }

    /// Hands finished intervals to the collector; call at least once a second.
    pub fn tick(&mut self, now_ns: u64) {
        let interval = now_ns / INTERVAL_NS;
        if interval != self.interval {
            self.flush();
            self.interval = interval;
        }
    }

    fn flush(&mut self) {
        for (&metric, slot) in Metric::ALL.iter().zip(self.hists.iter_mut()) {
            if let Some((h, span)) = slot.take() {
                // The collector outlives every recorder; a send error means it failed and
                // the run reports that error.
                let _ = self.tx.send((metric, self.interval, h, span));
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Totals of one metric over the whole run.
#[derive(Debug)]
pub struct MetricTotal {
    /// Which metric.
    pub metric: Metric,
    /// Every recorded value.
    pub hist: Histogram<u64>,
    /// First and last interval with values (for throughput).
    pub first_interval: u64,
    /// Last interval with values.
    pub last_interval: u64,
    /// Most values in one interval.
    pub peak: u64,
    /// When the first value was recorded (ns since run start).
    pub first_ns: u64,
    /// When the last value was recorded.
    pub last_ns: u64,
}

impl MetricTotal {
    /// Values per second between the first and the last one.
    pub fn throughput(&self) -> f64 {
        let secs = self.last_ns.saturating_sub(self.first_ns) as f64 / 1e9;
        if secs < 1e-3 {
            self.hist.len() as f64
        } else {
            self.hist.len() as f64 / secs
        }
    }
}

/// What the live progress line shows besides the metrics.
pub type StatusFn<'a> = dyn Fn() -> String + Sync + 'a;

/// Receives interval histograms until every [`Recorder`] is dropped, writes `<metric>.hlog`
/// files under `dir` for `metrics`, prints one progress line per interval and returns the
/// totals.
pub fn collect(
    rx: Receiver<IntervalMsg>,
    clock: Clock,
    dir: &Path,
    metrics: &[Metric],
    status: &StatusFn<'_>,
) -> anyhow::Result<Vec<MetricTotal>> {
    let mut files = Vec::new();
    for m in metrics {
        let path = dir.join(format!("{}.hlog", m.name()));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        files.push(BufWriter::new(file));
    }
    let mut serializers: Vec<V2DeflateSerializer> =
        metrics.iter().map(|_| V2DeflateSerializer::new()).collect();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .with_start_time(clock.wall_start())
        .with_base_time(clock.wall_start())
        .with_max_value_divisor(1e6);
    let mut writers = Vec::new();
    for ((file, ser), m) in files.iter_mut().zip(serializers.iter_mut()).zip(metrics) {
        builder.add_comment(&format!("loadgen {} latency, values in ns", m.name()));
        let w = builder
            .begin_log_with(file, ser)
            .context("starting an interval log")?;
        writers.push(w);
    }
    let mut totals: Vec<MetricTotal> = metrics
        .iter()
        .map(|&metric| MetricTotal {
            metric,
            hist: histogram(),
            first_interval: u64::MAX,
            last_interval: 0,
            peak: 0,
            first_ns: u64::MAX,
            last_ns: 0,
        })
        .collect();
    let mut pending: BTreeMap<u64, Vec<Histogram<u64>>> = BTreeMap::new();
    let tty = std::io::stderr().is_terminal();
    let mut written_until = 0u64;
    let mut open = true;
    while open || !pending.is_empty() {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((metric, interval, h, (first, last))) => {
                let Some(i) = metrics.iter().position(|&m| m == metric) else {
                    continue;
                };
                totals[i].first_ns = totals[i].first_ns.min(first);
                totals[i].last_ns = totals[i].last_ns.max(last);
                // A histogram for an interval already written lands in the next open one.
                let interval = interval.max(written_until);
                let slot = pending
                    .entry(interval)
                    .or_insert_with(|| metrics.iter().map(|_| histogram()).collect());
                slot[i].add(&h).context("merging interval histograms")?;
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        let now_interval = clock.now_ns() / INTERVAL_NS;
        let mut ready: Vec<u64> = pending
            .keys()
            .copied()
            .filter(|&i| !open || i + GRACE_INTERVALS < now_interval)
            .collect();
        ready.sort_unstable();
        for interval in ready {
            let Some(hists) = pending.remove(&interval) else {
                continue;
            };
            let mut line = format!("t={:>4}s", interval + 1);
            for (i, h) in hists.iter().enumerate() {
                if h.is_empty() {
                    continue;
                }
                let start = Duration::from_nanos(interval * INTERVAL_NS);
                writers[i]
                    .write_histogram(h, start, Duration::from_nanos(INTERVAL_NS), None)
                    .map_err(|e| anyhow::anyhow!("writing an interval log: {e:?}"))?;
                let t = &mut totals[i];
                t.hist.add(h).context("merging totals")?;
                t.first_interval = t.first_interval.min(interval);
                t.last_interval = t.last_interval.max(interval);
                t.peak = t.peak.max(h.len());
                line.push_str(&format!(
                    " | {} {}/s p50 {} p99 {}",
                    t.metric.name(),
                    h.len(),
                    fmt_ns(h.value_at_quantile(0.5)),
                    fmt_ns(h.value_at_quantile(0.99)),
                ));
            }
            line.push_str(&format!(" | {}", status()));
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            written_until = written_until.max(interval + 1);
        }
    }
    if tty {
        eprintln!();
    }
    drop(writers);
    for f in &mut files {
        f.flush().context("flushing an interval log")?;
    }
    Ok(totals)
}

/// Human form of a latency in ns: `850µs`, `12.3ms`, `2.10s`.
pub fn fmt_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{}µs", ns / 1_000)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_splits_by_interval_and_collector_writes_hlogs() {
        let dir = std::env::temp_dir().join(format!("loadgen-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let clock = Clock::start();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut rec = Recorder::new(tx);
        rec.record(Metric::Register, 10, 2_000_000);
        rec.record(Metric::Register, INTERVAL_NS + 5, 4_000_000);
        rec.record(Metric::Register, INTERVAL_NS + 6, 6_000_000);
        drop(rec);
        let totals =
            collect(rx, clock, &dir, &[Metric::Register], &|| String::new()).expect("collect");
        assert_eq!(totals[0].hist.len(), 3);
        assert_eq!((totals[0].first_interval, totals[0].last_interval), (0, 1));
        let log = std::fs::read_to_string(dir.join("register.hlog")).expect("hlog");
        let intervals: Vec<&str> = log.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(intervals.len(), 2, "{log}");
        assert!(intervals[1].starts_with("1.000,1.000,6.0"), "{log}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
