//! Per-shard interval histograms (`[perf] histogram_dir`): how long datagrams wait inside
//! a shard (receive → replies sent and publishes handed to the uplink), how long an MQTT
//! command takes to become a CoAP request on the wire, and how many PUBLISH packets each
//! uplink socket write carries. Written as HdrHistogram interval logs
//! (`.hlog`, V2 deflate), readable by HdrHistogram's own tools and by `loadgen dashboard`.

use std::cell::RefCell;
use std::fs::File;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::uplink::UplinkHandle;

/// Largest pipeline latency recorded (ns): a minute is far beyond anything but a stall.
const MAX_PIPELINE_NS: u64 = 60_000_000_000;

/// What one shard records between dumps.
#[derive(Debug)]
pub(super) struct ShardHistograms {
    /// Nanoseconds from a datagram's batch being received to its outputs being handed on.
    pub pipeline: Histogram<u64>,
    /// Nanoseconds from an MQTT command being taken from the uplink to its CoAP request
    /// (or error response) being sent.
    pub command: Histogram<u64>,
}

impl ShardHistograms {
    pub(super) fn new() -> ShardHistograms {
        ShardHistograms {
            pipeline: Histogram::new_with_bounds(1, MAX_PIPELINE_NS, 3)
                .expect("static histogram bounds are valid"),
            command: Histogram::new_with_bounds(1, MAX_PIPELINE_NS, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records `count` datagrams that waited `waited` in the shard.
    pub(super) fn record_pipeline(&mut self, waited: Duration, count: u64) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.pipeline.saturating_record_n(ns, count);
    }

    /// Records one command that took `took` to reach the device's socket.
    pub(super) fn record_command(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.command.saturating_record(ns);
    }
}

/// Dumps the shard's histograms every `interval` until `stop` says so.
pub(super) async fn dump_loop(
    dir: &Path,
    shard: usize,
    interval: Duration,
    hist: Rc<RefCell<ShardHistograms>>,
    uplink: Rc<UplinkHandle>,
    stop: impl Fn() -> bool,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut pipeline_file = File::create(dir.join(format!("shard-{shard}-pipeline.hlog")))?;
    let mut batch_file = File::create(dir.join(format!("shard-{shard}-uplink-batch.hlog")))?;
    let mut command_file = File::create(dir.join(format!("shard-{shard}-command.hlog")))?;
    let (mut s1, mut s2) = (V2DeflateSerializer::new(), V2DeflateSerializer::new());
    let mut s3 = V2DeflateSerializer::new();
    let start = SystemTime::now();
    let started = Instant::now();
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_start_time(start).with_base_time(start);
    builder.add_comment(&format!(
        "lwm2m-gateway shard {shard}: pipeline latency in ns"
    ));
    let mut pipeline_log = builder.begin_log_with(&mut pipeline_file, &mut s1)?;
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_start_time(start).with_base_time(start);
    builder.add_comment(&format!(
        "lwm2m-gateway shard {shard}: PUBLISH packets per uplink write"
    ));
    let mut batch_log = builder.begin_log_with(&mut batch_file, &mut s2)?;
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_start_time(start).with_base_time(start);
    builder.add_comment(&format!(
        "lwm2m-gateway shard {shard}: MQTT command to CoAP request sent, in ns"
    ));
    let mut command_log = builder.begin_log_with(&mut command_file, &mut s3)?;
    let mut last = started;
    loop {
        let done = stop();
        if !done {
            glommio::timer::sleep(interval.min(Duration::from_millis(200))).await;
            if last.elapsed() < interval && !stop() {
                continue;
            }
        }
        let now = Instant::now();
        let (from, length) = (last - started, now - last);
        last = now;
        let taken = std::mem::replace(&mut *hist.borrow_mut(), ShardHistograms::new());
        let batches = uplink.take_batch_histogram();
        pipeline_log
            .write_histogram(&taken.pipeline, from, length, Tag::new("pipeline"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        batch_log
            .write_histogram(&batches, from, length, Tag::new("uplink_batch"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        command_log
            .write_histogram(&taken.command, from, length, Tag::new("command"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        if done {
            break;
        }
    }
    Ok(())
}
