//! End to end, several nodes on one broker (README "Several nodes"): two gateways on their
//! own UDP ports share one broker (node A's embedded one, or `LWM2M_TEST_BROKER`), devices
//! over real UDP, an MQTT application sending commands. Every command is answered once:
//! by the node holding the endpoint, or with one 4.04 when no live node holds it. The
//! nodes run in this process, and once as two `lwm2m-gateway` processes, one of them
//! killed with SIGKILL.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{test_config_with, unique, Device, Received, Subscriber};
use lwm2m_gateway::coap::{Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::config::Broker;
use lwm2m_gateway::runtime::Gateway;
use lwm2m_gateway::session::presence_bucket;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Publish};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long the test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long it listens for a second answer that should not come.
const QUIET: Duration = Duration::from_millis(1500);

/// A gateway node of the cluster `prefix`, named `node`, on `broker` (`None`: the
/// test broker, embedded unless `LWM2M_TEST_BROKER` names one).
fn node(node: &str, prefix: &str, broker: Option<&str>) -> Gateway {
    let mut config = test_config_with(
        2,
        &format!("[cluster]\nenabled = true\ntopic_prefix = \"{prefix}\"\n"),
    );
    config.gateway.node = node.to_owned();
    if let Some(addr) = broker {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        config.mqtt.broker = Broker::External {
            host: host.to_owned(),
            port: port.parse().expect("port"),
        };
    }
    Gateway::start(config).expect("gateway starts")
}

/// Retained cluster records as the broker hands them out: topic and raw payload.
struct Records {
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    /// Every record received so far, oldest first.
    seen: RefCell<Vec<(String, Vec<u8>)>>,
    _client: Client,
}

impl Records {
    fn watch(addr: &str, prefix: &str) -> Records {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let id = format!("test-records-{}", unique("c"));
        let mut opts = MqttOptions::new(id, host, port.parse().expect("port"));
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = Client::new(opts, 10_000);
        client
            .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
            .expect("subscribe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Records {
            rx,
            seen: RefCell::new(Vec::new()),
            _client: client,
        }
    }

    /// Waits until `want` holds for a record received so far or later; panics after
    /// [`WAIT`].
    fn wait_for(&self, what: &str, want: impl Fn(&str, &[u8]) -> bool) {
        if self.seen.borrow().iter().any(|(t, p)| want(t, p)) {
            return;
        }
        let deadline = Instant::now() + WAIT;
        while let Ok((topic, payload)) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let hit = want(&topic, &payload);
            self.seen.borrow_mut().push((topic, payload));
            if hit {
                return;
            }
        }
        panic!("no {what} within {WAIT:?}");
    }

    /// Waits for the live-node records of both shards of `node`.
    fn wait_live(&self, node: &str) {
        for shard in 0..2 {
            let topic = format!("/nodes/{node}/{shard}");
            self.wait_for(&format!("live record of {node}/{shard}"), |t, p| {
                t.ends_with(&topic) && !p.is_empty()
            });
        }
    }

    /// Waits for the presence record of `ep` naming `node`.
    fn wait_presence(&self, ep: &str, node: &str) {
        let topic = format!("/presence/{}/{ep}", presence_bucket(ep));
        let needle = format!("\"node\":\"{node}\"");
        self.wait_for(&format!("presence record of {ep} on {node}"), |t, p| {
            t.ends_with(&topic) && String::from_utf8_lossy(p).contains(&needle)
        });
    }
}

/// Answers every request on `socket` with 2.05 "v"; counts them.
fn serve(socket: UdpSocket, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(req) = Message::parse(&buf[..n]) else {
                continue;
            };
            if !req.code().is_request() {
                continue;
            }
            count.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            let mut w = MessageWriter::new(
                &mut out,
                MessageType::Ack,
                Code::CONTENT,
                req.mid(),
                req.token(),
            );
            w.uint_option(lwm2m_gateway::coap::option::CONTENT_FORMAT, 0);
            w.payload(b"v");
            w.finish();
            let _ = socket.send_to(&out, from);
        }
    });
    served
}

/// A registered device answering requests.
struct Served {
    device: Device,
    served: Arc<AtomicUsize>,
}

fn register(ep: &str, gateway: &Gateway, stop: &Arc<AtomicBool>) -> Served {
    let mut device = Device::bind("127.0.0.1", gateway.udp_addr());
    device.register(ep, 300);
    let socket = device.socket.try_clone().expect("clone socket");
    let served = serve(socket, stop.clone());
    Served { device, served }
}

/// Publishes a read for `ep` and returns every response to it within [`QUIET`] of the last.
fn command(app: &Subscriber, ep: &str, id: u32) -> Vec<Received> {
    app.publish(
        &format!("lwm2m/{ep}/dn"),
        format!(r#"{{"requestID":{id},"msgType":"read","data":{{"path":"/3/0/0"}}}}"#),
    );
    let mut answers: Vec<Received> = app
        .collect(1, WAIT)
        .into_iter()
        .chain(app.drain(QUIET))
        .filter(|m| m.topic.ends_with("/up/resp") && m.json["requestID"] == id)
        .collect();
    answers.sort_by(|a, b| a.topic.cmp(&b.topic));
    answers
}

/// Publishes a read for `ep` that no node should answer; returns what came within 2 × [`QUIET`].
fn unanswered(app: &Subscriber, ep: &str, id: u32) -> Vec<Received> {
    app.publish(
        &format!("lwm2m/{ep}/dn"),
        format!(r#"{{"requestID":{id},"msgType":"read","data":{{"path":"/3/0/0"}}}}"#),
    );
    app.drain(QUIET * 2)
        .into_iter()
        .filter(|m| m.topic.ends_with("/up/resp") && m.json["requestID"] == id)
        .collect()
}

fn codes(answers: &[Received]) -> Vec<String> {
    answers
        .iter()
        .map(|m| m.json["data"]["code"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A raw MQTT connection posing as a live node: its live-node record is retained, and its
/// Last Will clears it when the connection drops without a DISCONNECT.
fn fake_node(addr: &str, prefix: &str, node: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect to broker");
    let topic = format!("{prefix}/nodes/{node}/0");
    let mut connect = Connect::new(format!("fake-{node}"));
    connect.keep_alive = 30;
    connect.last_will = Some(LastWill::new(
        topic.clone(),
        Vec::new(),
        QoS::AtLeastOnce,
        true,
    ));
    let mut out = BytesMut::new();
    connect.write(&mut out).expect("encode CONNECT");
    let mut record = Publish::new(topic, QoS::AtMostOnce, br#"{"node":"fake"}"#.to_vec());
    record.retain = true;
    record.write(&mut out).expect("encode PUBLISH");
    stream.write_all(&out).expect("write");
    stream
}

#[test]
fn two_nodes_on_one_broker_answer_every_command_once() {
    let tag = unique("cl");
    let prefix = format!("test-{tag}");
    let (name_a, name_b) = (format!("a-{tag}"), format!("b-{tag}"));
    let a = node(&name_a, &prefix, None);
    let broker = a.mqtt_addr().to_owned();
    let records = Records::watch(&broker, &prefix);
    let b = node(&name_b, &prefix, Some(&broker));
    let app = Subscriber::connect(&broker, "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    records.wait_live(&name_a);
    records.wait_live(&name_b);
    let stop = Arc::new(AtomicBool::new(false));

    // Each node's device: its commands are executed and answered by its node only.
    let (ep_a, ep_b) = (format!("{tag}-da"), format!("{tag}-db"));
    let dev_a = register(&ep_a, &a, &stop);
    let dev_b = register(&ep_b, &b, &stop);
    records.wait_presence(&ep_a, &name_a);
    records.wait_presence(&ep_b, &name_b);
    app.drain(QUIET);
    for (id, ep, dev) in [(1, &ep_a, &dev_a), (2, &ep_b, &dev_b)] {
        assert_eq!(codes(&command(&app, ep, id)), ["2.05"], "{ep}: one answer");
        assert_eq!(dev.served.load(Ordering::Relaxed), 1, "{ep}: executed once");
    }

    // An endpoint no node holds: one 4.04.
    let ghost = format!("{tag}-ghost");
    assert_eq!(codes(&command(&app, &ghost, 3)), ["4.04"]);

    // A device re-registers on node B from another socket: node A drops it, once.
    let ep_m = format!("{tag}-mover");
    let old = register(&ep_m, &a, &stop);
    records.wait_presence(&ep_m, &name_a);
    app.drain(QUIET);
    let new = register(&ep_m, &b, &stop);
    records.wait_presence(&ep_m, &name_b);
    let events: Vec<Received> = app
        .collect(2, WAIT)
        .into_iter()
        .chain(app.drain(QUIET))
        .filter(|m| m.topic == format!("lwm2m/{ep_m}/up/event"))
        .collect();
    let replaced = events
        .iter()
        .filter(|m| m.json["data"]["event"] == "replaced")
        .count();
    assert_eq!(replaced, 1, "one replaced event: {events:?}");
    assert_eq!(a.registered_eventually(1, WAIT).iter().sum::<usize>(), 1);
    assert_eq!(b.registered_eventually(2, WAIT).iter().sum::<usize>(), 2);
    assert_eq!(codes(&command(&app, &ep_m, 4)), ["2.05"]);
    assert_eq!(new.served.load(Ordering::Relaxed), 1, "node B executes it");
    assert_eq!(
        old.served.load(Ordering::Relaxed),
        0,
        "node A no longer does"
    );
    drop(old.device);

    // A live node named lower than both holds a name: nobody else answers for it, and
    // unknown names are its to answer. When its connection dies, the broker's Last Will
    // clears its record and node A answers both.
    let fake = format!("0-{tag}");
    let held = format!("{tag}-held");
    let stream = fake_node(&broker, &prefix, &fake);
    records.wait_for("the fake node's record", |t, p| {
        t.ends_with(&format!("/nodes/{fake}/0")) && !p.is_empty()
    });
    let presence = format!("{prefix}/presence/{}/{held}", presence_bucket(&held));
    app.publish_retained(&presence, format!(r#"{{"node":"{fake}","registered":1}}"#));
    records.wait_presence(&held, &fake);
    app.drain(QUIET);
    assert!(unanswered(&app, &held, 5).is_empty(), "held by a live node");
    assert!(
        unanswered(&app, &ghost, 6).is_empty(),
        "the fake node is the lowest"
    );
    drop(stream);
    records.wait_for("the fake node's will", |t, p| {
        t.ends_with(&format!("/nodes/{fake}/0")) && p.is_empty()
    });
    assert_eq!(codes(&command(&app, &held, 7)), ["4.04"]);
    app.publish_retained(&presence, Vec::new());

    // Node B stops: its live-node records are cleared, and node A answers 4.04 for B's
    // endpoints.
    b.stop();
    for shard in 0..2 {
        records.wait_for("node B's records cleared", |t, p| {
            t.ends_with(&format!("/nodes/{name_b}/{shard}")) && p.is_empty()
        });
    }
    app.drain(QUIET);
    assert_eq!(codes(&command(&app, &ep_b, 8)), ["4.04"]);
    assert_eq!(codes(&command(&app, &ep_m, 9)), ["4.04"]);
    assert_eq!(codes(&command(&app, &ep_a, 10)), ["2.05"]);
    assert_eq!(dev_b.served.load(Ordering::Relaxed), 1);

    stop.store(true, Ordering::Relaxed);
    // Node B's presence records stay (it would hold them again after a restart with
    // persistence); clear this test's records from a shared broker.
    for ep in [&ep_b, &ep_m] {
        let topic = format!("{prefix}/presence/{}/{ep}", presence_bucket(ep));
        app.publish_retained(&topic, Vec::new());
    }
    a.stop();
}

/// A word `key=value` of a log line.
fn logged<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The gateway binary as cluster node `node` of `prefix`: on `broker` (`host:port`), or
/// with an embedded broker of its own when `None`. Returns the process, its UDP address
/// and the broker's address.
fn node_process(
    node: &str,
    prefix: &str,
    broker: Option<&str>,
) -> (common::process::Running, std::net::SocketAddr, String) {
    let broker_line = match broker {
        Some(addr) => format!("broker = \"mqtt://{addr}\"\n"),
        None => "embedded_bind = \"127.0.0.1:0\"\n".to_owned(),
    };
    let path = std::env::temp_dir().join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            "[gateway]\nshards = 2\nnode = \"{node}\"\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n[mqtt]\n{broker_line}keep_alive = \"5s\"\nclient_id_prefix = \"{node}\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n[cluster]\nenabled = true\ntopic_prefix = \"{prefix}\"\n"
        ),
    )
    .expect("config");
    let mut gw = common::process::Running::start(&path);
    let line = gw.wait_for("gateway running");
    let _ = std::fs::remove_file(&path);
    let udp = logged(&line, "udp").parse().expect("udp address");
    let mqtt = broker.map_or_else(|| logged(&line, "mqtt").to_owned(), str::to_owned);
    (gw, udp, mqtt)
}

/// A device registered as `ep` on the gateway at `udp`, answering requests.
fn register_at(ep: &str, udp: std::net::SocketAddr, stop: &Arc<AtomicBool>) -> Served {
    let mut device = Device::bind("127.0.0.1", udp);
    device.register(ep, 300);
    let socket = device.socket.try_clone().expect("clone socket");
    let served = serve(socket, stop.clone());
    Served { device, served }
}

#[test]
fn two_gateway_processes_answer_once_and_a_killed_one_is_answered_for() {
    let tag = unique("clp");
    let prefix = format!("test-{tag}");
    let (name_a, name_b) = (format!("a-{tag}"), format!("b-{tag}"));
    let external = std::env::var("LWM2M_TEST_BROKER")
        .ok()
        .map(|url| url.trim_start_matches("mqtt://").to_owned());
    let (a, udp_a, broker) = node_process(&name_a, &prefix, external.as_deref());
    let records = Records::watch(&broker, &prefix);
    let (b, udp_b, _) = node_process(&name_b, &prefix, Some(&broker));
    assert_ne!(udp_a.port(), udp_b.port());
    let app = Subscriber::connect(&broker, "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    records.wait_live(&name_a);
    records.wait_live(&name_b);
    let stop = Arc::new(AtomicBool::new(false));

    let (ep_a, ep_b) = (format!("{tag}-da"), format!("{tag}-db"));
    let dev_a = register_at(&ep_a, udp_a, &stop);
    let dev_b = register_at(&ep_b, udp_b, &stop);
    records.wait_presence(&ep_a, &name_a);
    records.wait_presence(&ep_b, &name_b);
    app.drain(QUIET);
    for (id, ep, dev) in [(1, &ep_a, &dev_a), (2, &ep_b, &dev_b)] {
        assert_eq!(codes(&command(&app, ep, id)), ["2.05"], "{ep}: one answer");
        assert_eq!(dev.served.load(Ordering::Relaxed), 1, "{ep}: executed once");
    }
    let ghost = format!("{tag}-ghost");
    assert_eq!(codes(&command(&app, &ghost, 3)), ["4.04"], "one 4.04");

    // Node B dies without a word: the broker runs its wills, and node A answers for B's
    // endpoint, once.
    b.signal(libc::SIGKILL);
    let (status, _) = b.exit();
    assert!(!status.success(), "{status:?}");
    for shard in 0..2 {
        records.wait_for("node B's will", |t, p| {
            t.ends_with(&format!("/nodes/{name_b}/{shard}")) && p.is_empty()
        });
    }
    app.drain(QUIET);
    assert_eq!(
        codes(&command(&app, &ep_b, 4)),
        ["4.04"],
        "one 4.04 for B's device"
    );
    assert_eq!(codes(&command(&app, &ep_a, 5)), ["2.05"]);
    assert_eq!(dev_b.served.load(Ordering::Relaxed), 1);

    stop.store(true, Ordering::Relaxed);
    let topic = format!("{prefix}/presence/{}/{ep_b}", presence_bucket(&ep_b));
    app.publish_retained(&topic, Vec::new());
    drop(dev_a.device);
    a.signal(libc::SIGTERM);
    let (status, log) = a.exit();
    assert!(status.success(), "{status:?}\n{log}");
}
