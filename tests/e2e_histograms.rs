//! `[perf] histogram_dir`: a gateway under real traffic writes per-shard HdrHistogram
//! interval logs that HdrHistogram's own reader accepts, with the traffic counted in them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{test_config, unique, Device, Subscriber};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use lwm2m_gateway::runtime::Gateway;

/// Values recorded in every interval of `path`, summed.
fn recorded(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut de = Deserializer::new();
    let mut total = 0;
    for entry in IntervalLogIterator::new(&bytes) {
        let Ok(LogEntry::Interval(ilh)) = entry else {
            continue;
        };
        let raw = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            ilh.encoded_histogram(),
        )
        .expect("base64");
        let h: Histogram<u64> = de.deserialize(&mut &raw[..]).expect("histogram");
        total += h.len();
    }
    total
}

#[test]
fn shards_dump_pipeline_command_and_batch_histograms() {
    let dir = std::env::temp_dir().join(unique("gw-hist"));
    let mut config = test_config(2);
    config.perf.histogram_dir = Some(dir.clone());
    config.perf.histogram_interval = Duration::from_millis(200);
    let gw = Gateway::start(config).expect("gateway starts");
    let ep = unique("hist");
    let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{ep}"));
    let mut device = Device::bind("127.0.0.1", gw.udp_addr());
    device.register(&ep, 60);
    // A command for an endpoint registered nowhere: answered 4.04 by its directory shard.
    sub.publish(
        &format!("lwm2m/{ep}-absent/dn"),
        r#"{"requestID":7,"msgType":"read","data":{"path":"/3/0"}}"#,
    );
    let got = sub.collect(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "register and the 4.04 response: {got:?}");
    // The response came from one shard; the broker's copy to the other shard may still be
    // on its way, and a stop now would leave it untimed.
    std::thread::sleep(Duration::from_millis(500));
    gw.stop();

    let sum = |name: &str| -> u64 {
        (0..2)
            .map(|s| recorded(&dir.join(format!("shard-{s}-{name}.hlog"))))
            .sum()
    };
    assert!(sum("pipeline") >= 1, "the Register datagram was timed");
    // Every shard takes every command off the wildcard subscription.
    assert_eq!(sum("command"), 2, "the command was timed on both shards");
    assert!(sum("uplink-batch") >= 1, "uplink writes were counted");
    let _ = std::fs::remove_dir_all(&dir);
}
