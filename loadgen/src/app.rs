//! The MQTT application: subscribes to every uplink topic, publishes commands (observe,
//! read) in the gateway's JSON (SPEC §5) and times notifications and command responses.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ahash::AHashSet;
use anyhow::bail;

use crate::metrics::{Clock, Counter, Counters, Metric, Recorder};
use crate::mqtt::{self, Incoming, Publisher, Reader};

/// Request IDs of observe commands start here (device `g` gets base + g), so they never
/// collide with timed commands `0, 1, 2, ...`.
pub const OBSERVE_ID_BASE: u64 = 1 << 40;
/// How long the connection and subscription may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timing state the subscriber shares with the command publisher.
#[derive(Debug, Default)]
pub struct Shared {
    /// Stops the subscriber.
    pub stop: AtomicBool,
    /// Set once the subscription is acknowledged.
    pub subscribed: AtomicBool,
    /// When timed command 0 was due (ns since run start).
    pub command_start: AtomicU64,
    /// Timed commands per second (f64 bits).
    pub command_rate: AtomicU64,
    /// Timed commands answered for good (a response, an error or `expired`; not `queued`).
    pub answered: AtomicU64,
    /// Observe commands answered over MQTT (not `queued`).
    pub observe_answers: AtomicU64,
    /// Devices of the run: timed command `k` goes to device `k % devices`.
    pub devices: AtomicU64,
    /// Share of devices in queue mode (f64 bits), as the engine picks them.
    pub queue_ratio: AtomicU64,
}

impl Shared {
    /// When timed command `id` was due.
    pub fn command_due(&self, id: u64) -> u64 {
        let rate = f64::from_bits(self.command_rate.load(Ordering::Relaxed));
        let start = self.command_start.load(Ordering::Relaxed);
        if rate > 0.0 {
            start + (id as f64 * 1e9 / rate) as u64
        } else {
            start
        }
    }

    /// Whether timed command `id` went to a queue-mode device.
    fn to_sleeper(&self, id: u64) -> bool {
        let devices = self.devices.load(Ordering::Relaxed);
        let ratio = f64::from_bits(self.queue_ratio.load(Ordering::Relaxed));
        devices > 0 && crate::engine::every(id % devices, ratio)
    }
}

/// The uplink topics under `topic_prefix` the application subscribes to: all of them, or
/// with `sample = Some((device_prefix, devices, n))` every device's responses, updates and
/// events but the notifications of devices `<device_prefix>-<g>` with `g % n == 0` only.
pub fn filters(topic_prefix: &str, sample: Option<(&str, u32, u32)>) -> Vec<String> {
    match sample {
        Some((prefix, devices, n)) if n > 1 => ["resp", "update", "event"]
            .iter()
            .map(|t| format!("{topic_prefix}/+/up/{t}"))
            .chain(
                (0..devices)
                    .step_by(n as usize)
                    .map(|g| format!("{topic_prefix}/{prefix}-{g}/up/notify")),
            )
            .collect(),
        _ => vec![format!("{topic_prefix}/+/up/#")],
    }
}

/// Connects to `broker` and subscribes to `filters` (see [`filters`]); the returned reader
/// must be driven by [`subscriber`].
pub fn connect(broker: SocketAddr, filters: &[String]) -> anyhow::Result<(Publisher, Reader)> {
    mqtt::connect(
        broker,
        &format!("loadgen-{}", std::process::id()),
        filters,
        CONNECT_TIMEOUT,
    )
}

/// Reads the MQTT connection until `shared.stop`, timing what arrives.
pub fn subscriber(
    mut reader: Reader,
    publisher: &Publisher,
    clock: Clock,
    counters: &Counters,
    shared: &Shared,
    rec: Recorder,
) -> anyhow::Result<()> {
    let mut inbox = Inbox::new(counters, shared, rec);
    let connect_deadline = clock.now_ns() + CONNECT_TIMEOUT.as_nanos() as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let polled = reader.poll(publisher, |m| {
            let now = clock.now_ns();
            match m {
                Incoming::Publish { topic, payload } => inbox.handle(topic, payload, now),
                Incoming::Subscribed => shared.subscribed.store(true, Ordering::Release),
            }
        });
        if let Err(e) = polled {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            return Err(e);
        }
        let now = clock.now_ns();
        inbox.rec.tick(now);
        if !shared.subscribed.load(Ordering::Relaxed) && now > connect_deadline {
            bail!("MQTT broker: no subscription acknowledgement within {CONNECT_TIMEOUT:?}");
        }
    }
    Ok(())
}

/// What the subscriber keeps between messages.
struct Inbox<'a> {
    counters: &'a Counters,
    shared: &'a Shared,
    rec: Recorder,
    /// Timed commands acknowledged `queued` and not answered yet.
    queued: AHashSet<u64>,
}

impl<'a> Inbox<'a> {
    fn new(counters: &'a Counters, shared: &'a Shared, rec: Recorder) -> Inbox<'a> {
        Inbox {
            counters,
            shared,
            rec,
            queued: AHashSet::new(),
        }
    }

    /// Handles one uplink message.
    fn handle(&mut self, topic: &str, payload: &[u8], now: u64) {
        let (counters, shared) = (self.counters, self.shared);
        let kind = if topic.ends_with("/up/notify") {
            Kind::Notify
        } else if topic.ends_with("/up/resp") {
            Kind::Response
        } else if topic.ends_with(PROBE_SUFFIX) {
            match std::str::from_utf8(payload)
                .ok()
                .and_then(|p| p.parse().ok())
            {
                Some(id) => self.rec.record(
                    Metric::BrokerRtt,
                    now,
                    now.saturating_sub(shared.command_due(id)),
                ),
                None => counters.add(Counter::Malformed, 1),
            }
            return;
        } else {
            return;
        };
        let Ok(msg) = serde_json::from_slice::<Uplink<'_>>(payload) else {
            counters.add(Counter::Malformed, 1);
            return;
        };
        let msg_type = msg.msg_type.as_deref();
        match (kind, msg_type) {
            (_, Some("notify")) => match msg.stamp() {
                Some(sent) => {
                    counters.add(Counter::NotifyReceived, 1);
                    self.rec
                        .record(Metric::NotifyE2e, now, now.saturating_sub(sent));
                }
                None => counters.add(Counter::Malformed, 1),
            },
            (Kind::Response, Some("register" | "update" | "event")) | (Kind::Notify, _) => {}
            (Kind::Response, _) => {
                let Some(id) = msg.request_id.as_ref().and_then(|v| v.as_u64()) else {
                    counters.add(Counter::Malformed, 1);
                    return;
                };
                if msg_type == Some("queued") {
                    // The device sleeps; its answer (or an `expired` error) comes later.
                    if id < OBSERVE_ID_BASE {
                        counters.add(Counter::CommandsQueued, 1);
                        self.queued.insert(id);
                    }
                    return;
                }
                let data = msg.data.as_ref();
                let code = data.and_then(|d| d.code.as_deref());
                let timed_out = msg_type == Some("coap_timeout");
                let ok = code.is_some_and(|c| c.starts_with('2')) && !timed_out;
                if id >= OBSERVE_ID_BASE {
                    shared.observe_answers.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        counters.add(Counter::CommandsFailed, 1);
                    }
                    return;
                }
                shared.answered.fetch_add(1, Ordering::Relaxed);
                let was_queued = self.queued.remove(&id);
                if ok {
                    counters.add(Counter::CommandsOk, 1);
                    let metric = if was_queued {
                        Metric::QueuedRtt
                    } else {
                        Metric::CommandRtt
                    };
                    let rtt = now.saturating_sub(shared.command_due(id));
                    self.rec.record(metric, now, rtt);
                    return;
                }
                counters.add(Counter::CommandsFailed, 1);
                if timed_out {
                    counters.add(Counter::CommandsTimedOut, 1);
                    if shared.to_sleeper(id) {
                        counters.add(Counter::SleeperTimedOut, 1);
                    }
                } else if data.and_then(|d| d.reason.as_deref()) == Some("expired") {
                    counters.add(Counter::CommandsExpired, 1);
                }
            }
        }
    }
}

/// The fields of an uplink message the load generator reads; the rest is skipped
/// without being built, which keeps the subscriber ahead of 100k+ messages/s.
#[derive(Debug, serde::Deserialize)]
struct Uplink<'a> {
    #[serde(rename = "msgType", borrow)]
    msg_type: Option<Cow<'a, str>>,
    /// Echoed as sent; the load generator's are numbers.
    #[serde(rename = "requestID")]
    request_id: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<UplinkData<'a>>,
}

#[derive(Debug, serde::Deserialize)]
struct UplinkData<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    content: Option<Vec<ContentValue>>,
}

#[derive(Debug, serde::Deserialize)]
struct ContentValue {
    value: Option<serde_json::Value>,
}

impl Uplink<'_> {
    /// The send stamp (ns since run start) a notification carries as its first value.
    fn stamp(&self) -> Option<u64> {
        let value = self
            .data
            .as_ref()?
            .content
            .as_ref()?
            .first()?
            .value
            .as_ref()?;
        let v = match value {
            serde_json::Value::Number(n) => n.as_f64()?,
            serde_json::Value::String(s) => s.parse().ok()?,
            _ => return None,
        };
        (v >= 0.0).then_some(v as u64)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Notify,
    Response,
}

/// Topic suffix of broker probes; the gateway never publishes it.
const PROBE_SUFFIX: &str = "/up/loadgen-probe";

/// The topic of broker probes: under the uplink subscription, owned by this process.
pub fn probe_topic(topic_prefix: &str) -> String {
    format!(
        "{topic_prefix}/loadgen-{}{PROBE_SUFFIX}",
        std::process::id()
    )
}

/// The command topic of endpoint `ep`.
pub fn command_topic(topic_prefix: &str, ep: &str) -> String {
    format!("{topic_prefix}/{ep}/dn")
}

/// An observe command for `path`.
pub fn observe_command(id: u64, path: &str) -> String {
    format!(r#"{{"requestID":{id},"msgType":"observe","data":{{"path":"{path}"}}}}"#)
}

/// A read command for `path`.
pub fn read_command(id: u64, path: &str) -> String {
    format!(r#"{{"requestID":{id},"msgType":"read","data":{{"path":"{path}"}}}}"#)
}

/// A read command for `path` that may wait `ttl_s` seconds for a sleeping device
/// (`mheaders.ttl`).
pub fn read_command_ttl(id: u64, path: &str, ttl_s: u64) -> String {
    format!(
        r#"{{"requestID":{id},"msgType":"read","mheaders":{{"ttl":{ttl_s}}},"data":{{"path":"{path}"}}}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn notifications_and_responses_are_timed() {
        let counters = Counters::default();
        let shared = Shared::default();
        shared.command_start.store(1_000, Ordering::Relaxed);
        shared
            .command_rate
            .store(1000f64.to_bits(), Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let mut inbox = Inbox::new(&counters, &shared, Recorder::new(tx));
        let notify = br#"{"requestID":1099511627776,"msgType":"notify","seqNum":3,"data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/9","content":[{"path":"/3/0/9","value":5000000}]}}"#;
        inbox.handle("lwm2m/ep-1/up/notify", notify, 7_000_000);
        let float = br#"{"msgType":"notify","seqNum":4,"data":{"content":[{"path":"/3303/0/5700","value":6000000.0}]}}"#;
        inbox.handle("lwm2m/ep-1/up/notify", float, 7_000_000);
        let resp = br#"{"requestID":2,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0","content":[]}}"#;
        inbox.handle("lwm2m/ep-2/up/resp", resp, 5_001_000);
        inbox.handle(&probe_topic("lwm2m"), b"4", 5_500_000);
        let err =
            br#"{"requestID":3,"msgType":"read","data":{"code":"4.04","codeMsg":"not_found"}}"#;
        inbox.handle("lwm2m/ep-2/up/resp", err, 9_000_000);
        inbox.handle("lwm2m/ep-2/up/resp", b"{oops", 9_000_000);
        drop(inbox);
        assert_eq!(counters.get(Counter::NotifyReceived), 2);
        assert_eq!(counters.get(Counter::CommandsOk), 1);
        assert_eq!(counters.get(Counter::CommandsFailed), 1);
        assert_eq!(counters.get(Counter::Malformed), 1);
        let recorded: Vec<(Metric, u64)> = rx.iter().map(|(m, _, h, _)| (m, h.max())).collect();
        let e2e = recorded
            .iter()
            .find(|(m, _)| *m == Metric::NotifyE2e)
            .expect("notify latency");
        assert!((1_999_000..=2_001_000).contains(&e2e.1), "{recorded:?}");
        let rtt = recorded
            .iter()
            .find(|(m, _)| *m == Metric::CommandRtt)
            .expect("command latency");
        // Command 2 was due at 1000 + 2 ms.
        assert!((2_997_000..=3_001_000).contains(&rtt.1), "{recorded:?}");
        let probe = recorded
            .iter()
            .find(|(m, _)| *m == Metric::BrokerRtt)
            .expect("broker probe latency");
        // Probe 4 was due at 1000 + 4 ms.
        assert!((1_497_000..=1_501_000).contains(&probe.1), "{recorded:?}");
    }

    #[test]
    fn queued_commands_are_timed_apart_and_failures_told_apart() {
        let counters = Counters::default();
        let shared = Shared::default();
        shared
            .command_rate
            .store(1000f64.to_bits(), Ordering::Relaxed);
        shared.devices.store(10, Ordering::Relaxed);
        shared
            .queue_ratio
            .store(0.5f64.to_bits(), Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let mut inbox = Inbox::new(&counters, &shared, Recorder::new(tx));
        let topic = "lwm2m/ep-1/up/resp";
        let queued = br#"{"requestID":1,"msgType":"queued","data":{"cmdType":"read","reqPath":"/3/0","ttl":300}}"#;
        inbox.handle(topic, queued, 2_000_000);
        let observe_queued = br#"{"requestID":1099511627777,"msgType":"queued","data":{"cmdType":"observe","reqPath":"/3/0/9","ttl":300}}"#;
        inbox.handle(topic, observe_queued, 2_000_000);
        let late = br#"{"requestID":1,"msgType":"read","data":{"code":"2.05","reqPath":"/3/0","content":[]}}"#;
        inbox.handle(topic, late, 4_001_000_000);
        let at_once = br#"{"requestID":2,"msgType":"read","data":{"code":"2.05","reqPath":"/3/0","content":[]}}"#;
        inbox.handle(topic, at_once, 3_000_000);
        let expired = br#"{"requestID":3,"msgType":"read","data":{"code":"5.04","codeMsg":"gateway_timeout","reqPath":"/3/0","reason":"expired"}}"#;
        inbox.handle(topic, expired, 9_000_000);
        // Device 1 of 10 at ratio 0.5 is in queue mode, device 4 is not.
        let timeout =
            br#"{"requestID":11,"msgType":"coap_timeout","data":{"code":"5.04","reqPath":"/3/0"}}"#;
        inbox.handle(topic, timeout, 9_000_000);
        let timeout =
            br#"{"requestID":14,"msgType":"coap_timeout","data":{"code":"5.04","reqPath":"/3/0"}}"#;
        inbox.handle(topic, timeout, 9_000_000);
        drop(inbox);
        assert_eq!(counters.get(Counter::CommandsQueued), 1);
        assert_eq!(counters.get(Counter::CommandsOk), 2);
        assert_eq!(counters.get(Counter::CommandsFailed), 3);
        assert_eq!(counters.get(Counter::CommandsExpired), 1);
        assert_eq!(counters.get(Counter::CommandsTimedOut), 2);
        assert_eq!(counters.get(Counter::SleeperTimedOut), 1);
        assert_eq!(shared.answered.load(Ordering::Relaxed), 5);
        let recorded: Vec<(Metric, u64)> = rx.iter().map(|(m, _, h, _)| (m, h.max())).collect();
        let queued_rtt = recorded
            .iter()
            .find(|(m, _)| *m == Metric::QueuedRtt)
            .expect("queued latency");
        // Command 1 was due at 1 ms and answered 4 s later, after the device woke.
        assert!(
            (3_990_000_000..=4_010_000_000).contains(&queued_rtt.1),
            "{recorded:?}"
        );
        let rtt = recorded
            .iter()
            .find(|(m, _)| *m == Metric::CommandRtt)
            .expect("command latency");
        assert!((990_000..=1_001_000).contains(&rtt.1), "{recorded:?}");
    }

    #[test]
    fn commands_follow_the_spec_shape() {
        assert_eq!(
            observe_command(5, "/3/0/9"),
            r#"{"requestID":5,"msgType":"observe","data":{"path":"/3/0/9"}}"#
        );
        assert_eq!(command_topic("lwm2m", "ep-1"), "lwm2m/ep-1/dn");
        assert_eq!(
            read_command_ttl(6, "/3/0", 30),
            r#"{"requestID":6,"msgType":"read","mheaders":{"ttl":30},"data":{"path":"/3/0"}}"#
        );
    }
}
