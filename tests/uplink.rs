//! End to end: the glommio uplink publishes through real sockets on 127.0.0.1 to the
//! embedded broker, and a rumqttc subscriber checks what arrives.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use lwm2m_gateway::config::{Config, Qos};
use lwm2m_gateway::uplink::{spawn_uplink, start_embedded, Outgoing};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// Upper bound on any one test's wait for messages.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a subscriber received: sequence numbers in arrival order, and when the last came.
struct Received {
    seqs: Vec<u32>,
    last: Option<Instant>,
}

/// A subscriber on its own thread; returns what it received once `expected` distinct
/// sequence numbers arrived or [`RECEIVE_TIMEOUT`] passed.
fn subscriber(
    broker: SocketAddr,
    topic: &str,
    qos: QoS,
    expected: usize,
) -> thread::JoinHandle<Received> {
    let mut opts = MqttOptions::new(
        format!("sub-{}", topic.replace('/', "-")),
        broker.ip().to_string(),
        broker.port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (client, mut connection) = Client::new(opts, 1000);
    client.subscribe(topic, qos).expect("subscribe request");
    // Wait for SUBACK here so that the publisher starts after the subscription exists.
    let started = Instant::now();
    loop {
        match connection.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("subscriber did not get SUBACK: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no SUBACK");
    }
    thread::spawn(move || {
        let _client = client;
        let mut seen = vec![false; expected];
        let mut distinct = 0;
        let mut got = Vec::with_capacity(expected);
        let mut last = None;
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        while distinct < expected && Instant::now() < deadline {
            match connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let n = u32::from_be_bytes(p.payload[..4].try_into().expect("4-byte payload"));
                    if let Some(s) = seen.get_mut(n as usize) {
                        if !*s {
                            *s = true;
                            distinct += 1;
                        }
                    }
                    got.push(n);
                    last = Some(Instant::now());
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => panic!("subscriber connection failed: {e}"),
            }
        }
        Received { seqs: got, last }
    })
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn mqtt_config() -> lwm2m_gateway::config::MqttConfig {
    Config::default_config().mqtt
}

fn payload(n: u32) -> Bytes {
    let mut v = n.to_be_bytes().to_vec();
    v.extend_from_slice(b" {\"msgType\":\"notify\",\"data\":{}}");
    Bytes::from(v)
}

/// Publishes `count` messages from a glommio executor and flushes; returns the final stats.
fn publish_from_glommio(
    target: SocketAddr,
    topic: &'static str,
    qos: Qos,
    count: u32,
) -> (lwm2m_gateway::uplink::UplinkStats, Instant) {
    LocalExecutorBuilder::default()
        .name("uplink-test")
        .spawn(move || async move {
            let uplink = spawn_uplink(&mqtt_config(), 0, "test", target.to_string());
            for n in 0..count {
                uplink.publish(
                    Instant::now(),
                    Outgoing {
                        topic,
                        payload: &payload(n),
                        qos,
                    },
                );
                if n % 1000 == 999 {
                    glommio::yield_if_needed().await;
                }
            }
            let stats = uplink.flush(Instant::now() + Duration::from_secs(30)).await;
            (stats, Instant::now())
        })
        .expect("executor")
        .join()
        .expect("executor thread")
}

/// Prints the end-to-end rate: from before the uplink starts to the subscriber's last message.
fn report(what: &str, n: u32, start: Instant, flushed: Instant, got: &Received) {
    let rate = |d: Duration| f64::from(n) / d.as_secs_f64();
    let to_broker = flushed.duration_since(start);
    eprintln!(
        "{what}: {n} messages written (QoS 1: acknowledged) in {to_broker:?} = {:.0} msg/s",
        rate(to_broker)
    );
    if let Some(last) = got.last {
        let elapsed = last.duration_since(start);
        eprintln!(
            "{what}: {n} messages end to end in {elapsed:?} = {:.0} msg/s",
            f64::from(n) / elapsed.as_secs_f64()
        );
    }
}

fn assert_exactly_once_in_order(got: &[u32], count: u32) {
    assert_eq!(
        got.len(),
        count as usize,
        "received {} of {count}",
        got.len()
    );
    for (i, n) in got.iter().enumerate() {
        assert_eq!(*n, i as u32, "message {i} out of order or duplicated");
    }
}

#[test]
fn qos1_ten_thousand_exactly_once_in_order() {
    init_logs();
    let broker = start_embedded("127.0.0.1:0".parse().expect("addr")).expect("broker");
    const N: u32 = 10_000;
    let sub = subscriber(
        broker.local_addr(),
        "perf/qos1",
        QoS::AtLeastOnce,
        N as usize,
    );
    let start = Instant::now();
    let (stats, flushed) =
        publish_from_glommio(broker.local_addr(), "perf/qos1", Qos::AtLeastOnce, N);
    let got = sub.join().expect("subscriber");
    assert_exactly_once_in_order(&got.seqs, N);
    assert_eq!(
        (stats.acked, stats.in_flight, stats.buffered),
        (u64::from(N), 0, 0)
    );
    report("QoS 1", N, start, flushed, &got);
}

#[test]
fn qos0_ten_thousand_in_order() {
    init_logs();
    let broker = start_embedded("127.0.0.1:0".parse().expect("addr")).expect("broker");
    const N: u32 = 10_000;
    let sub = subscriber(
        broker.local_addr(),
        "perf/qos0",
        QoS::AtMostOnce,
        N as usize,
    );
    let start = Instant::now();
    let (stats, flushed) =
        publish_from_glommio(broker.local_addr(), "perf/qos0", Qos::AtMostOnce, N);
    let got = sub.join().expect("subscriber");
    assert_exactly_once_in_order(&got.seqs, N);
    assert_eq!(stats.published, u64::from(N));
    report("QoS 0", N, start, flushed, &got);
}

/// A TCP proxy that can cut every connection through it and refuse new ones until restored.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, l) = (down.clone(), live.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                {
                    let mut live = l.lock().expect("lock");
                    live.push(client);
                    live.push(server);
                }
                for pair in pairs {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Proxy { addr, down, live }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.live.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[test]
fn broker_outage_loses_no_qos1_message() {
    init_logs();
    let broker = start_embedded("127.0.0.1:0".parse().expect("addr")).expect("broker");
    let proxy = Arc::new(Proxy::start(broker.local_addr()));
    const N: u32 = 6_000;
    let sub = subscriber(
        broker.local_addr(),
        "outage/qos1",
        QoS::AtLeastOnce,
        N as usize,
    );
    let target = proxy.addr;
    let p = proxy.clone();
    let stats = LocalExecutorBuilder::default()
        .name("uplink-outage")
        .spawn(move || async move {
            let uplink = spawn_uplink(&mqtt_config(), 0, "test", target.to_string());
            let publish_range = |range: std::ops::Range<u32>| {
                for n in range {
                    uplink.publish(
                        Instant::now(),
                        Outgoing {
                            topic: "outage/qos1",
                            payload: &payload(n),
                            qos: Qos::AtLeastOnce,
                        },
                    );
                }
            };
            publish_range(0..2_000);
            // Let part of it reach the broker, then cut with messages in flight.
            while uplink.stats().acked < 500 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            p.cut();
            publish_range(2_000..4_000);
            glommio::timer::sleep(Duration::from_millis(300)).await;
            assert!(!uplink.is_connected(), "the cut is noticed");
            p.restore();
            publish_range(4_000..N);
            uplink.flush(Instant::now() + Duration::from_secs(30)).await
        })
        .expect("executor")
        .join()
        .expect("executor thread");
    let got = sub.join().expect("subscriber").seqs;
    let mut seen = vec![false; N as usize];
    for n in &got {
        seen[*n as usize] = true;
    }
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| !**s)
        .map(|(i, _)| i)
        .collect();
    assert!(
        missing.is_empty(),
        "{} QoS 1 messages lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // First deliveries keep publish order; duplicates are allowed (at least once).
    let mut first = Vec::new();
    let mut once = vec![false; N as usize];
    for n in got {
        if !std::mem::replace(&mut once[n as usize], true) {
            first.push(n);
        }
    }
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "first deliveries out of order"
    );
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(
        (stats.in_flight, stats.buffered, stats.dropped_overflow),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn commands_from_the_broker_reach_the_shard() {
    init_logs();
    let broker = start_embedded("127.0.0.1:0".parse().expect("addr")).expect("broker");
    let addr = broker.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let app_done = done.clone();
    let app = thread::spawn(move || {
        let stop = app_done.clone();
        // The application publishes commands once the gateway has subscribed.
        let (client, mut connection) = Client::new(
            MqttOptions::new("app", addr.ip().to_string(), addr.port()),
            100,
        );
        let pump = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !app_done.load(Ordering::SeqCst) {
                if let Ok(Ok(Event::Incoming(Packet::Disconnect))) =
                    connection.recv_timeout(Duration::from_millis(100))
                {
                    break;
                }
            }
        });
        for i in 0..50u32 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            let _ = client.publish(
                "lwm2m/ep1/dn",
                QoS::AtLeastOnce,
                false,
                i.to_be_bytes().to_vec(),
            );
        }
        drop(client);
        let _ = pump.join();
    });
    let got = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let uplink = spawn_uplink(&mqtt_config(), 0, "test", addr.to_string());
            uplink.subscribe(vec![("lwm2m/+/dn/#".into(), Qos::AtLeastOnce)]);
            let (topic, payload) =
                futures_lite::future::or(async { Some(uplink.next_incoming().await) }, async {
                    glommio::timer::sleep(Duration::from_secs(15)).await;
                    None
                })
                .await
                .expect("a command arrives");
            uplink.flush(Instant::now() + Duration::from_secs(2)).await;
            (topic, payload)
        })
        .expect("executor")
        .join()
        .expect("executor thread");
    done.store(true, Ordering::SeqCst);
    assert_eq!(got.0, "lwm2m/ep1/dn");
    assert_eq!(got.1.len(), 4);
    let _ = app.join();
}

#[test]
fn flush_with_unreachable_broker_ends_at_the_deadline() {
    // A port nothing listens on: bind, read the port, release it.
    let target = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (stats, took) = LocalExecutorBuilder::default()
        .spawn(move || async move {
            let uplink = spawn_uplink(&mqtt_config(), 0, "test", target.to_string());
            for n in 0..10 {
                uplink.publish(
                    Instant::now(),
                    Outgoing {
                        topic: "t",
                        payload: &payload(n),
                        qos: Qos::AtLeastOnce,
                    },
                );
            }
            glommio::timer::sleep(Duration::from_millis(300)).await;
            let start = Instant::now();
            let stats = uplink.flush(start + Duration::from_millis(500)).await;
            (stats, start.elapsed())
        })
        .expect("executor")
        .join()
        .expect("executor thread");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!((stats.buffered, stats.published), (10, 0), "{stats:?}");
}
