//! End to end: real UDP devices on loopback register, update, rebind and deregister
//! against a running gateway; an MQTT subscriber sees each of it exactly once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{start, unique, Device, Received};
use lwm2m_gateway::coap::Code;

/// Raises the open-file limit so a test can hold many device sockets at once.
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit on a local, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn ep_of(m: &Received) -> String {
    m.json["data"]["ep"].as_str().unwrap_or_default().to_owned()
}

fn kind_of(m: &Received) -> String {
    match m.json["msgType"].as_str() {
        Some("event") => m.json["data"]["event"].as_str().unwrap_or("?").to_owned(),
        Some(t) => t.to_owned(),
        None => "?".to_owned(),
    }
}

#[test]
fn thousand_devices_register_update_rebind_deregister_exactly_once() {
    const DEVICES: usize = 1000;
    const REBINDING: usize = 100;
    raise_fd_limit(4096);
    let tag = unique("fleet");
    let (gw, sub) = start(2, &tag);
    let gateway = gw.udp_addr();

    let mut devices: Vec<(Device, String, String)> = (0..DEVICES)
        .map(|i| {
            let ip = format!("127.1.{}.{}", i / 250, i % 250 + 1);
            let ep = format!("{tag}-{i}");
            (Device::bind(&ip, gateway), ep, String::new())
        })
        .collect();
    for (dev, ep, loc) in &mut devices {
        *loc = dev.register(ep, 300);
    }
    let per_shard = gw.registered_eventually(DEVICES, Duration::from_secs(5));
    assert!(
        per_shard.iter().all(|n| *n > DEVICES / 4),
        "both shards hold endpoints: {per_shard:?}"
    );
    let shards_in_ids: std::collections::HashSet<char> = devices
        .iter()
        .filter_map(|(_, _, l)| l.chars().next())
        .collect();
    assert_eq!(shards_in_ids.len(), 2, "location ids name both shards");

    for (dev, _, loc) in &mut devices {
        let (code, _) = dev.request(Code::POST, &["rd", loc], &["lt=600"], b"");
        assert_eq!(code, Code::CHANGED);
    }
    // NAT rebinding: the same device behind a new source port.
    for (dev, _, loc) in devices.iter_mut().take(REBINDING) {
        let ip = dev.addr().ip().to_string();
        *dev = Device::bind(&ip, gateway);
        let (code, _) = dev.request(Code::POST, &["rd", loc], &[], b"");
        assert_eq!(
            code,
            Code::CHANGED,
            "update from a new port keeps the registration"
        );
    }
    assert_eq!(
        gw.registered_eventually(DEVICES, Duration::from_secs(5))
            .iter()
            .sum::<usize>(),
        DEVICES
    );
    for (dev, _, loc) in &mut devices {
        let (code, _) = dev.request(Code::DELETE, &["rd", loc], &[], b"");
        assert_eq!(code, Code::DELETED);
    }

    let expected = DEVICES + DEVICES + 2 * REBINDING + DEVICES;
    let got = sub.collect(expected, Duration::from_secs(30));
    let extra = sub.drain(Duration::from_millis(500));
    assert!(
        extra.is_empty(),
        "unexpected extra messages: {:?}",
        &extra[..extra.len().min(5)]
    );
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for m in &got {
        let ep = ep_of(m);
        assert!(
            m.topic.starts_with(&format!("lwm2m/{ep}/")),
            "topic {} for {ep}",
            m.topic
        );
        *counts.entry((ep, kind_of(m))).or_default() += 1;
    }
    for (i, (_, ep, _)) in devices.iter().enumerate() {
        let n = |kind: &str| {
            counts
                .get(&(ep.clone(), kind.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(n("register"), 1, "{ep} register");
        assert_eq!(n("deregister"), 1, "{ep} deregister");
        if i < REBINDING {
            assert_eq!(n("update"), 2, "{ep} update");
            assert_eq!(n("rebound"), 1, "{ep} rebound");
        } else {
            assert_eq!(n("update"), 1, "{ep} update");
            assert_eq!(n("rebound"), 0, "{ep} rebound");
        }
    }
    assert_eq!(got.len(), expected);
    let reg = got
        .iter()
        .find(|m| kind_of(m) == "register")
        .expect("a register message");
    assert_eq!(reg.json["data"]["lt"], 300);
    assert_eq!(reg.json["data"]["lwm2m"], "1.1");
    assert_eq!(reg.json["data"]["objectList"][0], "/1");
    assert!(reg.topic.ends_with("/up/resp"));
    assert_eq!(gw.registered().iter().sum::<usize>(), 0);
    gw.stop();
}

#[test]
fn captured_wakaama_register_over_real_udp() {
    let tag = "peer-ep1";
    let (gw, sub) = start(2, tag);
    let mut dev = Device::bind("127.0.0.1", gw.udp_addr());
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/captures/register.hex"
    ))
    .expect("capture");
    let raw: Vec<u8> = (0..raw.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw.trim()[i..i + 2], 16).expect("hex"))
        .collect();
    let (code, loc) = dev.exchange(&raw);
    assert_eq!(code, Code::CREATED);
    assert_eq!(loc[0], "rd");
    let got = sub.collect(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "lwm2m/peer-ep1/up/resp");
    assert_eq!(
        got[0].json,
        serde_json::json!({"msgType":"register","data":{
            "ep":"peer-ep1","lt":300,"lwm2m":"1.1","b":"U","alternatePath":"/",
            "objectList":["/1","/1/0","/2/0","/3/0","/4/0","/5/0","/6/0","/7/0","/31024","/31024/10","/31024/11","/31024/12"],
            "security":"none"}})
    );
    let (code, _) = dev.request(Code::DELETE, &["rd", &loc[1]], &[], b"");
    assert_eq!(code, Code::DELETED);
    gw.stop();
}

#[test]
fn garbage_datagrams_do_not_stall_a_shard() {
    let tag = unique("garbage");
    let (gw, sub) = start(2, &tag);
    let noise = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..20_000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = i % 200;
        let bytes: Vec<u8> = (0..len)
            .map(|k| (x >> (k % 8 * 8)) as u8 ^ k as u8)
            .collect();
        let _ = noise.send_to(&bytes, gw.udp_addr());
    }
    // Every shard still answers a real device promptly.
    for i in 0..20 {
        let mut dev = Device::bind(&format!("127.0.9.{}", i + 1), gw.udp_addr());
        dev.register(&format!("{tag}-{i}"), 60);
    }
    assert_eq!(sub.collect(20, Duration::from_secs(10)).len(), 20);
    gw.stop();
}

#[test]
fn datagram_longer_than_the_receive_slot_is_dropped_and_counted() {
    use lwm2m_gateway::coap::{option, MessageType, MessageWriter};
    use lwm2m_gateway::runtime::udp::MAX_DATAGRAM;

    let tag = unique("oversized");
    let (gw, sub) = start(1, &tag);
    let mut dev = Device::bind("127.0.0.1", gw.udp_addr());
    // A Register whose object list is valid link format at any cut, so a truncated copy
    // would still register if it were handled as complete.
    let mut links = common::WAKAAMA_OBJECTS.to_owned();
    let mut n = 0;
    while links.len() <= MAX_DATAGRAM + 500 {
        links.push_str(&format!(",</31024/{n}>"));
        n += 1;
    }
    let ep = format!("ep={tag}-big");
    let mut datagram = Vec::new();
    let mut w = MessageWriter::new(&mut datagram, MessageType::Con, Code::POST, 7, &[7]);
    w.option(option::URI_PATH, b"rd");
    w.uint_option(option::CONTENT_FORMAT, 40);
    for q in ["lwm2m=1.1", ep.as_str(), "lt=60"] {
        w.option(option::URI_QUERY, q.as_bytes());
    }
    w.payload(links.as_bytes());
    w.finish();
    assert!(datagram.len() > MAX_DATAGRAM);
    dev.socket
        .send_to(&datagram, gw.udp_addr())
        .expect("send oversized");
    dev.socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    assert!(
        dev.socket.recv_from(&mut buf).is_err(),
        "a truncated datagram is not answered"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gw.truncated() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gw.truncated(), 1);
    assert_eq!(gw.registered(), vec![0], "nothing registered");
    // The shard goes on serving; the only publish is the normal Register's.
    dev.socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    dev.register(&format!("{tag}-small"), 60);
    let got = sub.collect(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json["data"]["ep"], format!("{tag}-small"));
    assert!(sub.drain(Duration::from_millis(300)).is_empty());
    gw.stop();
}
