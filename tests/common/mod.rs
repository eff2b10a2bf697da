//! Shared harness of the end-to-end tests: a real gateway on 127.0.0.1:0, a real broker
//! (the embedded one, or the one named by `LWM2M_TEST_BROKER=mqtt://host:port`), and an
//! MQTT subscriber collecting what the gateway publishes.

#![allow(dead_code)]

pub mod dtls;
pub mod http;
pub mod process;
pub mod proxy;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// A configuration for tests: ephemeral ports, `shards` shards, the test broker.
pub fn test_config(shards: usize) -> Config {
    test_config_with(shards, "")
}

/// [`test_config`] with more TOML sections appended (keys not set there).
pub fn test_config_with(shards: usize, sections: &str) -> Config {
    let mut extra = String::new();
    if let Ok(url) = std::env::var("LWM2M_TEST_BROKER") {
        extra = format!("broker = \"{url}\"\n");
    }
    let text = format!(
        "[gateway]\nshards = {shards}\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n[mqtt]\n{extra}embedded_bind = \"127.0.0.1:0\"\nkeep_alive = \"5s\"\nclient_id_prefix = \"{}\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n{sections}",
        client_id_prefix()
    );
    Config::from_toml(&text).expect("test config is valid")
}

/// A broker outside any gateway, for tests that put something between the two: CI's
/// Mosquitto when `LWM2M_TEST_BROKER` names it, otherwise an embedded one of the test's own
/// (kept alive by the returned handle). Returns the handle and `host:port`.
pub fn standalone_broker() -> (Option<lwm2m_gateway::uplink::EmbeddedBroker>, String) {
    match std::env::var("LWM2M_TEST_BROKER") {
        Ok(url) => (
            None,
            url.trim_start_matches("mqtt://")
                .trim_end_matches('/')
                .to_owned(),
        ),
        Err(_) => {
            let addr = "127.0.0.1:0".parse().expect("addr");
            let b = lwm2m_gateway::uplink::start_embedded(addr).expect("broker");
            let at = b.local_addr().to_string();
            (Some(b), at)
        }
    }
}

/// A client id prefix of this test's own: gateways of tests running side by side on one
/// broker must not take over each other's MQTT sessions.
pub fn client_id_prefix() -> String {
    format!("gw-test-{}-{}", std::process::id(), rand_u32() % 100_000)
}

/// One message seen by the subscriber.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub json: serde_json::Value,
}

/// An MQTT subscriber on its own thread.
pub struct Subscriber {
    rx: mpsc::Receiver<Received>,
    client: Client,
}

impl Subscriber {
    /// Connects to `addr` (`host:port`), subscribes to `filter` and waits for the SUBACK.
    /// Only messages whose topic starts with `keep` are collected, so tests sharing an
    /// external broker do not see each other's messages.
    pub fn connect(addr: &str, filter: &str, keep: &str) -> Subscriber {
        let keep = keep.to_owned();
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let id = format!("test-sub-{}-{}", std::process::id(), rand_u32());
        let mut opts = MqttOptions::new(id, host, port.parse().expect("port"));
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(opts, 100_000);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .expect("subscribe");
        let (tx, rx) = mpsc::channel();
        let (subacked_tx, subacked_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacked_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with(&keep) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or_else(|e| {
                            panic!("gateway published invalid JSON on {}: {e}", p.topic)
                        });
                        if tx
                            .send(Received {
                                topic: p.topic.clone(),
                                json,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        subacked_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("SUBACK from the broker");
        Subscriber { rx, client }
    }

    /// Publishes `payload` (QoS 1), e.g. a command to `lwm2m/<ep>/dn`.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .expect("publish");
    }

    /// Publishes `payload` retained (QoS 1); an empty payload clears the retained message.
    pub fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .expect("publish");
    }

    /// Collects messages until `n` arrived or `timeout` passed.
    pub fn collect(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out
    }

    /// Everything that arrives within `quiet` of the previous message.
    pub fn drain(&self, quiet: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.recv_timeout(quiet) {
            out.push(m);
        }
        out
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(7)
}

/// A simulated device: one UDP socket on its own loopback address.
pub struct Device {
    pub socket: UdpSocket,
    pub gateway: SocketAddr,
    mid: u16,
}

impl Device {
    /// A device bound to `ip:0`.
    pub fn bind(ip: &str, gateway: SocketAddr) -> Device {
        let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind device socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Device {
            socket,
            gateway,
            mid: rand_u32() as u16,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// A message id of its own for a request the test builds itself.
    pub fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    /// Sends a CON request and waits for its piggybacked response; retransmits twice.
    pub fn request(
        &mut self,
        code: Code,
        path: &[&str],
        query: &[&str],
        payload: &[u8],
    ) -> (Code, Vec<String>) {
        self.mid = self.mid.wrapping_add(1);
        self.exchange(&con_request(self.mid, code, path, query, payload))
    }

    /// Sends raw bytes (a CON) and waits for the ACK matching its MID.
    pub fn exchange(&mut self, datagram: &[u8]) -> (Code, Vec<String>) {
        let req = Message::parse(datagram).expect("request parses");
        let mut resp = [0u8; 2048];
        for _attempt in 0..3 {
            self.socket.send_to(datagram, self.gateway).expect("send");
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let Ok((n, _)) = self.socket.recv_from(&mut resp) else {
                    break;
                };
                let Ok(msg) = Message::parse(&resp[..n]) else {
                    continue;
                };
                if msg.ty() == MessageType::Ack && msg.mid() == req.mid() {
                    let loc = msg
                        .location_path()
                        .map(|s| String::from_utf8_lossy(s).into_owned());
                    return (msg.code(), loc.collect());
                }
            }
        }
        panic!("no response from the gateway to MID {}", req.mid());
    }

    /// Registers as `ep` with the wakaama object list; returns the location id.
    pub fn register(&mut self, ep: &str, lifetime: u32) -> String {
        let ep_q = format!("ep={ep}");
        let lt_q = format!("lt={lifetime}");
        let (code, loc) = self.request(
            Code::POST,
            &["rd"],
            &["lwm2m=1.1", &ep_q, "b=U", &lt_q],
            WAKAAMA_OBJECTS.as_bytes(),
        );
        assert_eq!(code, Code::CREATED, "register {ep}");
        assert_eq!(loc.len(), 2, "Location-Path rd/<id>");
        loc[1].clone()
    }
}

/// A CON request with message id `mid` (token: the mid's bytes); a payload is labelled
/// link-format, as the registration interface wants.
pub fn con_request(mid: u16, code: Code, path: &[&str], query: &[&str], payload: &[u8]) -> Vec<u8> {
    con_request_as(mid, code, path, query, 40, payload)
}

/// [`con_request`] with the payload labelled Content-Format `format`.
pub fn con_request_as(
    mid: u16,
    code: Code,
    path: &[&str],
    query: &[&str],
    format: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::new();
    let token = mid.to_be_bytes();
    let mut w = MessageWriter::new(&mut buf, MessageType::Con, code, mid, &token);
    for p in path {
        w.option(option::URI_PATH, p.as_bytes());
    }
    if !payload.is_empty() {
        w.uint_option(option::CONTENT_FORMAT, u32::from(format));
    }
    for q in query {
        w.option(option::URI_QUERY, q.as_bytes());
    }
    w.payload(payload);
    w.finish();
    buf
}

/// The object list a wakaama 1.1 client registers with.
pub const WAKAAMA_OBJECTS: &str = "</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1,</1/0>,</2/0>,</3/0>,</4/0>,</5/0>,</6/0>,</7/0>,</31024>;ver=1.0,</31024/10>,</31024/11>,</31024/12>";

/// A prefix for endpoint names unique to this test process and `test`.
pub fn unique(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), rand_u32() % 10_000)
}

/// Starts a gateway and a subscriber on `lwm2m/+/up/#` keeping topics of endpoints named
/// `<tag>...`.
pub fn start(shards: usize, tag: &str) -> (Gateway, Subscriber) {
    let gw = Gateway::start(test_config(shards)).expect("gateway starts");
    let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    (gw, sub)
}
