//! End to end device management: an MQTT application sends EMQX-style commands; a
//! simulated device over real UDP answers the way wakaama does; every response arrives on
//! `up/resp` in the SPEC §5 shape.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start, test_config, unique, Device, Received, Subscriber};
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};
use serde_json::{json, Value};

/// TLV of one resource with an 8-bit id (OMA LwM2M 1.0 §6.4.3), written independently of
/// the gateway's encoder.
fn tlv_resource(id: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if value.len() < 8 {
        out.push(0b1100_0000 | value.len() as u8);
        out.push(id);
    } else {
        out.push(0b1100_1000);
        out.push(id);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
    out
}

/// /3/0 as wakaama's test client reports it (a subset of its resources).
fn device_tlv() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(tlv_resource(0, b"Open Mobile Alliance"));
    p.extend(tlv_resource(1, b"Lightweight M2M Client"));
    p.extend(tlv_resource(2, b"345000123"));
    p.extend(tlv_resource(9, &[100]));
    p.extend(tlv_resource(13, &0x5182_428Fu32.to_be_bytes()));
    p
}

/// What the simulated device saw: `METHOD /path?query payload-len`.
type Log = Arc<Mutex<Vec<String>>>;

/// Runs a device on `socket` until `stop`; answers like wakaama's lwm2mclient.
fn run_device(socket: UdpSocket, gateway: SocketAddr, log: Log, stop: Arc<AtomicBool>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let mut mid = 0x7000u16;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if from != gateway {
            continue;
        }
        let Ok(req) = Message::parse(&buf[..n]) else {
            continue;
        };
        if !req.code().is_request() {
            continue; // ACKs of our separate responses
        }
        let path: Vec<String> = req
            .uri_path()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let path = format!("/{}", path.join("/"));
        let query: Vec<String> = req
            .uri_query()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        log.lock().expect("log").push(format!(
            "{} {}{}{} {}",
            req.code().name().to_uppercase(),
            path,
            if query.is_empty() { "" } else { "?" },
            query.join("&"),
            req.payload().len()
        ));
        let (code, cf, payload): (Code, Option<u16>, Vec<u8>) = match (req.code(), path.as_str()) {
            (Code::GET, "/3/0") if req.accept() == Some(40) => (
                Code::CONTENT,
                Some(40),
                b"</3/0>,</3/0/0>,</3/0/1>,</3/0/9>".to_vec(),
            ),
            (Code::GET, "/3/0") if req.accept() == Some(110) => (
                Code::CONTENT,
                Some(110),
                br#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"9","v":100}]"#
                    .to_vec(),
            ),
            (Code::GET, "/3/0") => (Code::CONTENT, Some(11542), device_tlv()),
            (Code::GET, "/3/0/0") => (Code::CONTENT, Some(0), b"Open Mobile Alliance".to_vec()),
            (Code::GET, "/32000/0/1") => (Code::CONTENT, Some(11542), tlv_resource(1, b"\x01\x02")),
            (Code::GET, "/3/0/15") => {
                let mut rst = Vec::new();
                lwm2m_gateway::coap::write_empty(&mut rst, MessageType::Rst, req.mid());
                let _ = socket.send_to(&rst, from);
                continue;
            }
            (Code::GET, "/3/0/13") => {
                // Separate response: empty ACK now, the 2.05 later as its own CON.
                let mut ack = Vec::new();
                lwm2m_gateway::coap::write_empty(&mut ack, MessageType::Ack, req.mid());
                let _ = socket.send_to(&ack, from);
                std::thread::sleep(Duration::from_millis(200));
                mid = mid.wrapping_add(1);
                let mut resp = Vec::new();
                let mut w = MessageWriter::new(
                    &mut resp,
                    MessageType::Con,
                    Code::CONTENT,
                    mid,
                    req.token(),
                );
                w.uint_option(option::CONTENT_FORMAT, 0)
                    .payload(b"1700000000");
                w.finish();
                let _ = socket.send_to(&resp, from);
                continue;
            }
            // Read-Composite (LwM2M 1.1): the names asked for, with their values.
            (Code::FETCH, "/") if req.payload() == br#"[{"n":"/3/0/0"},{"n":"/3/0/9"},{"n":"/3303/0/5700"}]"# => (
                Code::CONTENT,
                Some(110),
                br#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"9","v":100},{"bn":"/3303/0/","n":"5700","v":22.5}]"#
                    .to_vec(),
            ),
            (Code::PUT, "/3/0/14" | "/1/0/1" | "/3/0/9") => (Code::CHANGED, None, Vec::new()),
            (Code::POST, "/3/0/4") => (Code::CHANGED, None, Vec::new()),
            (Code::POST, "/31024") => (Code::CREATED, None, Vec::new()),
            (Code::DELETE, "/31024/20") => (Code::DELETED, None, Vec::new()),
            _ => (Code::NOT_FOUND, None, Vec::new()),
        };
        let mut resp = Vec::new();
        let mut w = MessageWriter::new(&mut resp, MessageType::Ack, code, req.mid(), req.token());
        if let Some(cf) = cf {
            w.uint_option(option::CONTENT_FORMAT, u32::from(cf));
        }
        w.payload(&payload);
        w.finish();
        let _ = socket.send_to(&resp, from);
    }
}

struct Session {
    sub: Subscriber,
    ep: String,
    log: Log,
    stop: Arc<AtomicBool>,
    next_id: u64,
}

impl Session {
    /// Publishes `command` (a JSON object without requestID) and returns the responses
    /// published for it, up to `n`.
    fn command(&mut self, mut command: Value, n: usize) -> Vec<Received> {
        self.next_id += 1;
        command["requestID"] = json!(self.next_id);
        self.sub
            .publish(&format!("lwm2m/{}/dn", self.ep), command.to_string());
        let got = self.sub.collect(n, Duration::from_secs(10));
        for m in &got {
            assert_eq!(
                m.json["requestID"],
                json!(self.next_id),
                "requestID echoed: {}",
                m.json
            );
            assert_eq!(m.topic, format!("lwm2m/{}/up/resp", self.ep));
        }
        got
    }

    fn one(&mut self, command: Value) -> Value {
        let got = self.command(command, 1);
        assert_eq!(got.len(), 1, "one response");
        got[0].json.clone()
    }
}

fn session(tag: &str) -> (lwm2m_gateway::runtime::Gateway, Session) {
    let ep = unique(tag);
    let (gw, sub) = start(2, &ep);
    device_session(gw, sub, ep)
}

/// Registers a device answering like wakaama with `gw` and returns the session driving it.
fn device_session(
    gw: lwm2m_gateway::runtime::Gateway,
    sub: Subscriber,
    ep: String,
) -> (lwm2m_gateway::runtime::Gateway, Session) {
    let mut dev = Device::bind("127.0.5.1", gw.udp_addr());
    dev.register(&ep, 300);
    let registered = sub.collect(1, Duration::from_secs(10));
    assert_eq!(registered.len(), 1);
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (l, s, gateway) = (log.clone(), stop.clone(), gw.udp_addr());
    std::thread::spawn(move || run_device(dev.socket, gateway, l, s));
    (
        gw,
        Session {
            sub,
            ep,
            log,
            stop,
            next_id: 0,
        },
    )
}

#[test]
fn emqx_application_manages_a_wakaama_device() {
    let (gw, mut s) = session("mgmt");

    let r = s.one(json!({"msgType":"read","data":{"path":"/3/0/0"}}));
    assert_eq!(
        r,
        json!({"requestID":1,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/0",
            "content":[{"path":"/3/0/0","value":"Open Mobile Alliance"}]}})
    );

    let r = s.one(json!({"msgType":"read","data":{"path":"/3/0"}}));
    assert_eq!(r["data"]["code"], "2.05");
    let content = r["data"]["content"].as_array().expect("content");
    assert!(content.contains(&json!({"path":"/3/0/0","value":"Open Mobile Alliance"})));
    assert!(
        content.contains(&json!({"path":"/3/0/9","value":100})),
        "Integer typed: {r}"
    );
    assert!(
        content.contains(&json!({"path":"/3/0/13","value":1367491215})),
        "Time typed: {r}"
    );

    let r = s.one(json!({"msgType":"discover","data":{"path":"/3/0"}}));
    assert_eq!(
        r["data"],
        json!({"code":"2.05","codeMsg":"content","reqPath":"/3/0","content":["</3/0>","</3/0/0>","</3/0/1>","</3/0/9>"]})
    );

    let r =
        s.one(json!({"msgType":"write","data":{"path":"/3/0/14","type":"String","value":"+02"}}));
    assert_eq!(
        r["data"],
        json!({"code":"2.04","codeMsg":"changed","reqPath":"/3/0/14"})
    );
    let r = s.one(json!({"msgType":"write","data":{"path":"/1/0/1","type":"Integer","value":300}}));
    assert_eq!(r["data"]["code"], "2.04");
    let r = s.one(json!({"msgType":"execute","data":{"path":"/3/0/4","args":""}}));
    assert_eq!(r["msgType"], "execute");
    assert_eq!(r["data"]["code"], "2.04");
    let r = s.one(json!({"msgType":"create","data":{"basePath":"/31024","content":[{"path":"20/1","type":"Integer","value":"3"}]}}));
    assert_eq!(r["data"]["code"], "2.01");
    assert_eq!(r["data"]["codeMsg"], "created");
    let r = s.one(json!({"msgType":"delete","data":{"path":"/31024/20"}}));
    assert_eq!(r["data"]["code"], "2.02");
    let r = s.one(json!({"msgType":"write-attr","data":{"path":"/3/0/9","pmin":"1","pmax":"5","gt":"50","lt":"10","st":"1"}}));
    assert_eq!(r["data"]["code"], "2.04");
    let r = s.one(json!({"msgType":"read","data":{"path":"/3/0/7"}}));
    assert_eq!(
        r["data"],
        json!({"code":"4.04","codeMsg":"not_found","reqPath":"/3/0/7"})
    );

    // What the device saw: the right methods, paths, queries and payloads.
    let log = s.log.lock().expect("log").clone();
    assert!(log.contains(&"GET /3/0/0 0".to_owned()), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("PUT /3/0/14 ") && !l.ends_with(" 0")),
        "{log:?}"
    );
    assert!(log.contains(&"POST /3/0/4 0".to_owned()), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /31024 ") && !l.ends_with(" 0")),
        "{log:?}"
    );
    assert!(log.contains(&"DELETE /31024/20 0".to_owned()), "{log:?}");
    let attr = log
        .iter()
        .find(|l| l.starts_with("PUT /3/0/9?"))
        .expect("write-attr sent");
    for q in ["pmin=1", "pmax=5", "gt=50", "lt=10", "st=1"] {
        assert!(attr.contains(q), "{attr}");
    }
    s.stop.store(true, Ordering::Relaxed);
    gw.stop();
}

#[test]
fn busy_polling_shards_register_and_answer_commands() {
    let ep = unique("busy");
    let mut config = test_config(2);
    config.gateway.busy_poll = true;
    let gw = lwm2m_gateway::runtime::Gateway::start(config).expect("gateway starts");
    let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{ep}"));
    let (gw, mut s) = device_session(gw, sub, ep);
    let r = s.one(json!({"msgType":"read","data":{"path":"/3/0/0"}}));
    assert_eq!(r["data"]["code"], "2.05", "{r}");
    assert_eq!(
        r["data"]["content"],
        json!([{"path":"/3/0/0","value":"Open Mobile Alliance"}])
    );
    let r = s.one(json!({"msgType":"execute","data":{"path":"/3/0/4","args":""}}));
    assert_eq!(r["data"]["code"], "2.04", "{r}");
    s.stop.store(true, Ordering::Relaxed);
    gw.stop();
}

#[test]
fn separate_response_reset_and_undecoded_content() {
    let (gw, mut s) = session("sep");
    // Empty ACK publishes `ack`, the later CON response is published as the response.
    let got = s.command(json!({"msgType":"read","data":{"path":"/3/0/13"}}), 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].json["msgType"], "ack");
    assert_eq!(got[0].json["data"]["path"], "/3/0/13");
    assert_eq!(got[1].json["msgType"], "read");
    assert_eq!(got[1].json["data"]["content"][0]["value"], 1_700_000_000);

    let r = s.one(json!({"msgType":"read","data":{"path":"/3/0/15"}}));
    assert_eq!(r["msgType"], "coap_reset");

    // No definition for object 32000: published undecoded, never dropped.
    let r = s.one(json!({"msgType":"read","data":{"path":"/32000/0/1"}}));
    assert_eq!(r["data"]["decoded"], false, "{r}");
    assert_eq!(r["data"]["content"][0]["path"], "/32000/0/1");
    s.stop.store(true, Ordering::Relaxed);
    gw.stop();
}

#[test]
fn composite_read_of_three_paths_over_udp() {
    let (gw, mut s) = session("composite");
    let r = s.one(json!({
        "msgType":"read-composite",
        "data":{"paths":["/3/0/0","/3/0/9","/3303/0/5700"]}
    }));
    assert_eq!(r["msgType"], "read-composite");
    assert_eq!(r["data"]["code"], "2.05", "{r}");
    assert_eq!(r["data"]["reqPath"], "/");
    assert_eq!(
        r["data"]["content"],
        json!([
            {"path":"/3/0/0","value":"Open Mobile Alliance"},
            {"path":"/3/0/9","value":100},
            {"path":"/3303/0/5700","value":22.5}
        ])
    );
    assert_eq!(
        s.log.lock().expect("log").last().map(String::as_str),
        Some("FETCH / 52")
    );
    s.stop.store(true, Ordering::Relaxed);
    gw.stop();
}

#[test]
fn bad_commands_get_one_error_response_each() {
    let (gw, mut s) = session("bad");
    let topic = format!("lwm2m/{}/dn", s.ep);
    s.sub.publish(&topic, "{not json");
    let got = s.sub.collect(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json["data"]["code"], "4.00");
    assert!(got[0].json["data"]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));

    let r = s.one(json!({"msgType":"frobnicate","data":{}}));
    assert_eq!(r["msgType"], "frobnicate");
    assert_eq!(r["data"]["code"], "4.00");
    assert_eq!(r["data"]["codeMsg"], "bad_request");
    let r = s.one(json!({"msgType":"read","data":{}}));
    assert_eq!(r["data"]["code"], "4.00");
    let r =
        s.one(json!({"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":"soon"}}));
    assert_eq!(r["data"]["code"], "4.00");

    // A command for an endpoint that is not registered: 4.04 on that endpoint's topic.
    let ghost = format!("{}-ghost", s.ep);
    s.sub.publish(
        &format!("lwm2m/{ghost}/dn"),
        json!({"requestID":77,"msgType":"read","data":{"path":"/3/0"}}).to_string(),
    );
    let got = s.sub.collect(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "exactly one shard answers");
    assert_eq!(got[0].topic, format!("lwm2m/{ghost}/up/resp"));
    assert_eq!(got[0].json["requestID"], 77);
    assert_eq!(got[0].json["data"]["code"], "4.04");
    assert_eq!(got[0].json["data"]["codeMsg"], "not_found");
    assert!(s.sub.drain(Duration::from_millis(300)).is_empty());
    s.stop.store(true, Ordering::Relaxed);
    gw.stop();
}
