//! End to end over real UDP and a real broker: what LwM2M 1.1 and NB-IoT devices do
//! beyond reads and writes. A `UQ` device asleep gets its queued reads in order when it
//! next sends an Update, and an expired one is answered 5.04; `auto_observe` observes
//! without an MQTT command; a Send in SenML CBOR is published; a 200 KiB firmware package
//! goes out in Block1 blocks at the size the device negotiates.

mod common;

use std::time::{Duration, Instant};

use common::{con_request, test_config, unique, Device, Received, Subscriber};
use lwm2m_gateway::coap::{option, Block, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::config::AutoObserve;
use lwm2m_gateway::runtime::Gateway;
use serde_json::{json, Value};

/// The queue-mode window of these tests: short, so a device falls asleep quickly.
const WINDOW: Duration = Duration::from_secs(1);

/// Starts a one-shard gateway configured by `edit`, and a subscriber for endpoints `tag*`.
fn start_with(
    tag: &str,
    edit: impl FnOnce(&mut lwm2m_gateway::config::Config),
) -> (Gateway, Subscriber) {
    let mut config = test_config(1);
    edit(&mut config);
    let gw = Gateway::start(config).expect("gateway starts");
    let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    (gw, sub)
}

/// One datagram from the gateway, parsed: type, code, mid, token, path, options of note.
#[derive(Debug)]
struct Datagram {
    ty: MessageType,
    code: Code,
    mid: u16,
    token: Vec<u8>,
    path: String,
    observe: Option<u32>,
    block1: Option<Block>,
    payload: Vec<u8>,
}

/// Waits up to `timeout` for the next datagram from the gateway.
fn recv(dev: &Device, timeout: Duration) -> Option<Datagram> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        dev.socket.set_read_timeout(Some(left)).expect("timeout");
        let Ok((n, _)) = dev.socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = Message::parse(&buf[..n]) else {
            continue;
        };
        let path: Vec<String> = m
            .uri_path()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        return Some(Datagram {
            ty: m.ty(),
            code: m.code(),
            mid: m.mid(),
            token: m.token().to_vec(),
            path: format!("/{}", path.join("/")),
            observe: m.observe(),
            block1: m.block1(),
            payload: m.payload().to_vec(),
        });
    }
}

/// Sends the ACK answering `req` with `code`, the options `options` writes, and `payload`.
fn answer(
    dev: &Device,
    req: &Datagram,
    code: Code,
    options: impl FnOnce(&mut MessageWriter<'_>),
    payload: &[u8],
) {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Ack, code, req.mid, &req.token);
    options(&mut w);
    w.payload(payload);
    w.finish();
    send(dev, &buf);
}

fn send(dev: &Device, datagram: &[u8]) {
    dev.socket.send_to(datagram, dev.gateway).expect("send");
}

/// Registers `ep` with `query` parameters and `objects`; returns the location id.
fn register(dev: &mut Device, ep: &str, query: &[&str], objects: &str) -> String {
    let ep_q = format!("ep={ep}");
    let mut q = vec![ep_q.as_str(), "lt=300"];
    q.extend_from_slice(query);
    let (code, loc) = dev.request(Code::POST, &["rd"], &q, objects.as_bytes());
    assert_eq!(code, Code::CREATED, "register {ep}");
    loc[1].clone()
}

/// The messages on `topic` among `got`.
fn on<'a>(got: &'a [Received], topic: &str) -> Vec<&'a Value> {
    got.iter()
        .filter(|r| r.topic == topic)
        .map(|r| &r.json)
        .collect()
}

#[test]
fn a_sleeping_device_gets_its_queued_reads_in_order_when_it_updates() {
    let ep = unique("sleepy");
    let (gw, sub) = start_with(&ep, |c| c.gateway.qmode_time_window = WINDOW);
    let mut dev = Device::bind("127.0.7.1", gw.udp_addr());
    let id = register(&mut dev, &ep, &["lwm2m=1.0", "b=UQ"], "</1/0>,</3/0>");
    assert_eq!(sub.collect(1, Duration::from_secs(10)).len(), 1, "register");
    // Past the window the device sleeps.
    std::thread::sleep(WINDOW + Duration::from_millis(500));

    let dn = format!("lwm2m/{ep}/dn");
    let resp = format!("lwm2m/{ep}/up/resp");
    sub.publish(
        &dn,
        r#"{"requestID":1,"msgType":"read","data":{"path":"/3/0/0"},"mheaders":{"ttl":1}}"#,
    );
    sub.publish(
        &dn,
        r#"{"requestID":2,"msgType":"read","data":{"path":"/3/0/1"}}"#,
    );
    sub.publish(
        &dn,
        r#"{"requestID":3,"msgType":"read","data":{"path":"/3/0/2"}}"#,
    );
    let acks = sub.collect(3, Duration::from_secs(10));
    let acks = on(&acks, &resp);
    assert_eq!(acks.len(), 3, "{acks:?}");
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a["msgType"], "queued", "{a}");
        assert_eq!(a["requestID"], i + 1, "{a}");
        assert_eq!(a["data"]["cmdType"], "read", "{a}");
    }
    assert_eq!(acks[0]["data"]["reqPath"], "/3/0/0");
    assert!(
        recv(&dev, Duration::from_millis(300)).is_none(),
        "nothing sent while asleep"
    );

    // Command 1 outlives its one-second TTL before the device wakes.
    std::thread::sleep(Duration::from_millis(1500));
    let update = con_request(0x7001, Code::POST, &["rd", &id], &[], b"");
    send(&dev, &update);
    let mut acked = false;
    let mut reads = Vec::new();
    while reads.len() < 2 {
        let d = recv(&dev, Duration::from_secs(5)).expect("the update's ACK and the queued reads");
        if d.ty == MessageType::Ack && d.mid == 0x7001 {
            assert_eq!(d.code, Code::CHANGED);
            acked = true;
            continue;
        }
        assert_eq!(d.code, Code::GET, "{d:?}");
        // One exchange at a time: no other read before this one is answered.
        if let Some(x) = recv(&dev, Duration::from_millis(200)) {
            assert!(
                x.ty == MessageType::Ack && x.mid == 0x7001,
                "{x:?} while {d:?} was in flight"
            );
            acked = true;
        }
        reads.push(d.path.clone());
        answer(
            &dev,
            &d,
            Code::CONTENT,
            |w| {
                w.uint_option(option::CONTENT_FORMAT, 0);
            },
            d.path.as_bytes(),
        );
    }
    assert!(acked, "the Update was answered");
    assert_eq!(
        reads,
        ["/3/0/1", "/3/0/2"],
        "in order; the expired one never sent"
    );

    // The three answers, and the Update on its own topic.
    let got = sub.collect(4, Duration::from_secs(10));
    let got = on(&got, &resp);
    let expired = got
        .iter()
        .find(|r| r["requestID"] == 1)
        .expect("command 1 answered");
    assert_eq!(expired["data"]["code"], "5.04", "{expired}");
    assert_eq!(expired["data"]["reason"], "expired", "{expired}");
    for n in [2, 3] {
        let r = got.iter().find(|r| r["requestID"] == n).expect("answered");
        assert_eq!(r["data"]["code"], "2.05", "{r}");
    }
    gw.stop();
}

#[test]
fn auto_observe_publishes_notifications_without_an_mqtt_observe() {
    let ep = unique("autobs");
    let (gw, sub) = start_with(&ep, |c| c.gateway.auto_observe = AutoObserve::All);
    let mut dev = Device::bind("127.0.7.2", gw.udp_addr());
    register(
        &mut dev,
        &ep,
        &["lwm2m=1.0", "b=U"],
        "</1/0>,</3/0>,</3303/0>",
    );
    // Object 1 is one of the management objects auto_observe skips (0, 1, 2, 4, 5, 6, 7,
    // 9 and 15, as EMQX does); /3/0 and /3303/0 are observed, one exchange at a time.
    let mut observed = Vec::new();
    let mut temperature = None;
    for _ in 0..2 {
        let o = recv(&dev, Duration::from_secs(5)).expect("an observe");
        assert_eq!((o.code, o.observe), (Code::GET, Some(0)), "{o:?}");
        observed.push(o.path.clone());
        let observe_ok = |w: &mut MessageWriter<'_>| {
            w.uint_option(option::OBSERVE, 1)
                .uint_option(option::CONTENT_FORMAT, 0);
        };
        answer(&dev, &o, Code::CONTENT, observe_ok, b"21");
        if o.path == "/3303/0" {
            temperature = Some(o);
        }
    }
    observed.sort();
    assert_eq!(observed, ["/3/0", "/3303/0"]);
    assert!(
        recv(&dev, Duration::from_millis(300)).is_none(),
        "nothing else observed"
    );
    let temperature = temperature.expect("/3303/0 observed");
    let got = sub.collect(3, Duration::from_secs(10));
    let responses = on(&got, &format!("lwm2m/{ep}/up/resp"));
    let observes: Vec<_> = responses
        .iter()
        .filter(|r| r["msgType"] == "observe")
        .collect();
    assert_eq!(observes.len(), 2, "{got:?}");
    assert!(
        observes.iter().all(|r| r.get("requestID").is_none()),
        "{got:?}"
    );

    // A NON notification with the observation's token.
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Non,
        Code::CONTENT,
        0x5001,
        &temperature.token,
    );
    w.uint_option(option::OBSERVE, 2)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"22");
    w.finish();
    send(&dev, &buf);
    let got = sub.collect(1, Duration::from_secs(10));
    let n = on(&got, &format!("lwm2m/{ep}/up/notify"));
    assert_eq!(n.len(), 1, "{got:?}");
    assert_eq!(n[0]["msgType"], "notify");
    assert_eq!(n[0]["seqNum"], 2);
    assert_eq!(n[0]["data"]["reqPath"], "/3303/0");
    gw.stop();
}

/// SenML CBOR (RFC 8428 §6): `[{-2: "/3303/0/", 0: "5700", 2: 22.5}]`.
fn senml_cbor_temperature() -> Vec<u8> {
    let mut b = vec![0x81, 0xA3, 0x21, 0x68];
    b.extend_from_slice(b"/3303/0/");
    b.extend_from_slice(&[0x00, 0x64]);
    b.extend_from_slice(b"5700");
    b.extend_from_slice(&[0x02, 0xFB]);
    b.extend_from_slice(&22.5f64.to_be_bytes());
    b
}

#[test]
fn a_send_in_senml_cbor_is_published_on_the_notify_topic() {
    let ep = unique("sendcbor");
    let (gw, sub) = start_with(&ep, |_| {});
    let mut dev = Device::bind("127.0.7.3", gw.udp_addr());
    register(
        &mut dev,
        &ep,
        &["lwm2m=1.1", "b=U"],
        "</1/0>,</3/0>,</3303/0>",
    );
    assert_eq!(sub.collect(1, Duration::from_secs(10)).len(), 1, "register");

    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Con, Code::POST, 0x6001, &[6, 1]);
    w.option(option::URI_PATH, b"dp")
        .uint_option(option::CONTENT_FORMAT, 112);
    w.payload(&senml_cbor_temperature());
    w.finish();
    let (code, _) = dev.exchange(&buf);
    assert_eq!(code, Code::CHANGED);
    let got = sub.collect(1, Duration::from_secs(10));
    let sent = on(&got, &format!("lwm2m/{ep}/up/notify"));
    assert_eq!(sent.len(), 1, "{got:?}");
    assert_eq!(sent[0]["msgType"], "send");
    assert_eq!(sent[0]["data"]["reqPath"], "/dp");
    assert_eq!(
        sent[0]["data"]["content"],
        json!([{"path":"/3303/0/5700","value":22.5}])
    );
    gw.stop();
}

/// Size of the firmware package written to `/5/0/0`.
const PACKAGE: usize = 200 * 1024;

#[test]
fn a_200_kib_firmware_write_goes_out_in_blocks_of_the_size_the_device_asks() {
    let ep = unique("fwblock");
    let (gw, sub) = start_with(&ep, |_| {});
    let mut dev = Device::bind("127.0.7.4", gw.udp_addr());
    register(&mut dev, &ep, &["lwm2m=1.0", "b=U"], "</1/0>,</3/0>,</5/0>");
    assert_eq!(sub.collect(1, Duration::from_secs(10)).len(), 1, "register");

    let package: Vec<u8> = (0..PACKAGE).map(|i| (i * 7 % 251) as u8).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&package);
    let cmd = json!({"requestID":"fw","msgType":"write","data":{"path":"/5/0/0","type":"Opaque","value":b64}});
    sub.publish(&format!("lwm2m/{ep}/dn"), cmd.to_string());

    // The device takes blocks of 512 bytes: its first answer asks for SZX 5.
    let mut body = Vec::new();
    let mut sizes = std::collections::BTreeSet::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the write finishes"
        );
        let d = recv(&dev, Duration::from_secs(5)).expect("a block");
        assert_eq!((d.code, d.path.as_str()), (Code::PUT, "/5/0/0"), "{d:?}");
        let b = d.block1.expect("Block1");
        assert_eq!(b.offset(), body.len(), "blocks in order, none skipped");
        sizes.insert(d.payload.len());
        body.extend_from_slice(&d.payload);
        if !b.more {
            answer(
                &dev,
                &d,
                Code::CHANGED,
                |w| {
                    w.block_option(option::BLOCK1, Block { szx: 5, ..b });
                },
                b"",
            );
            break;
        }
        let szx = b.szx.min(5);
        answer(
            &dev,
            &d,
            Code::CONTINUE,
            |w| {
                w.block_option(option::BLOCK1, Block { szx, ..b });
            },
            b"",
        );
    }
    // TLV: a resource header then the package itself.
    assert!(
        body.len() > PACKAGE && body.ends_with(&package),
        "{} bytes",
        body.len()
    );
    assert!(
        sizes.contains(&512),
        "the device's smaller size was honoured: {sizes:?}"
    );
    assert!(sizes.iter().all(|s| *s <= 1024), "{sizes:?}");
    let got = sub.collect(1, Duration::from_secs(10));
    let r = on(&got, &format!("lwm2m/{ep}/up/resp"));
    assert_eq!(r.len(), 1, "{got:?}");
    assert_eq!(
        (&r[0]["requestID"], &r[0]["data"]["code"]),
        (&json!("fw"), &json!("2.04"))
    );
    gw.stop();
}
