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
use lwm2m_gateway::session::directory_shard;

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
    assert_eq!(sub.collect(1, Duration::from_secs(10)).len(), 1, "register");
    // Commands for endpoints registered nowhere are answered 4.04 by the name's directory
    // shard: once each shard has answered one, both take commands off the wildcard
    // subscription (a shard's SUBSCRIBE may complete after the gateway started).
    for shard in 0..2 {
        let absent = (0..)
            .map(|i| format!("{ep}-absent-{i}"))
            .find(|n| directory_shard(n, 2) == shard)
            .expect("a name for each shard");
        let answered = (0..50).any(|_| {
            sub.publish(
                &format!("lwm2m/{absent}/dn"),
                r#"{"requestID":7,"msgType":"read","data":{"path":"/3/0"}}"#,
            );
            sub.collect(1, Duration::from_millis(200)).len() == 1
        });
        assert!(answered, "shard {shard} answers commands");
    }
    // Let the last command's copy reach the other shard too, then stop.
    std::thread::sleep(Duration::from_millis(300));
    gw.stop();

    let sum = |name: &str| -> u64 {
        (0..2)
            .map(|s| recorded(&dir.join(format!("shard-{s}-{name}.hlog"))))
            .sum()
    };
    assert!(sum("pipeline") >= 1, "the Register datagram was timed");
    // Every shard takes every command off the wildcard subscription and times it.
    for shard in 0..2 {
        let path = dir.join(format!("shard-{shard}-command.hlog"));
        assert!(recorded(&path) >= 1, "shard {shard} timed commands");
    }
    assert!(sum("uplink-batch") >= 1, "uplink writes were counted");
    let _ = std::fs::remove_dir_all(&dir);
}
