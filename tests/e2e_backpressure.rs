//! End to end: a broker that stops taking messages makes the gateway stop reading devices
//! rather than drop what it already acknowledged; when the broker catches up, every
//! message arrives.
//!
//! A TCP proxy between the gateway and the broker stalls: it stops reading what the
//! gateway sends, as a broker too busy to keep up does, while the connection stays up.
//! The gateway's buffer is small (`offline_buffer = 200`), so reading on would overflow
//! it within a few hundred messages once the socket buffers are full.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http;
use common::proxy::Proxy;
use common::{unique, Device, Subscriber};
use lwm2m_gateway::coap::{Code, Message, MessageType};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;

/// Sends a device makes before the gateway must have paused: more than the gateway's
/// buffer and the connection's socket buffers hold (the kernel grows the gateway's send
/// buffer up to `net.ipv4.tcp_wmem`'s 4 MiB; it paused after 21–30 k here).
const MAX_SENDS_BEFORE_PAUSE: u32 = 60_000;

/// Sends between two looks at `/metrics`.
const BURST: u32 = 100;

/// A CON Send (`POST /dp`, SenML JSON) of `value` as the temperature, MID `mid`.
fn send(mid: u16, value: u32) -> Vec<u8> {
    let senml = format!(r#"[{{"n":"/3303/0/5700","v":{value}}}]"#);
    common::con_request_as(mid, Code::POST, &["dp"], &[], 110, senml.as_bytes())
}

/// A sample of `/metrics` summed over shards, 0 when absent.
fn metric(api: SocketAddr, name: &str, labels: &str) -> f64 {
    let text = http::get(api, "/metrics").body;
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether an ACK for `mid` arrives within `timeout`; other datagrams are skipped.
fn acked(dev: &Device, mid: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        dev.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let Ok((n, _)) = dev.socket.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(m) = Message::parse(&buf[..n]) {
            if m.ty() == MessageType::Ack && m.mid() == mid {
                return true;
            }
        }
    }
    false
}

/// Reads whatever datagrams wait on the device's socket.
fn discard_pending(dev: &Device) {
    dev.socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    while !matches!(dev.socket.recv_from(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock) {}
    dev.socket.set_nonblocking(false).expect("blocking");
}

#[test]
fn a_stalled_broker_pauses_device_reads_and_nothing_is_lost() {
    let ep = unique("stall");
    let (_broker, broker_addr) = common::standalone_broker();
    let proxy = Proxy::start(broker_addr.clone());
    // keep_alive well beyond the stall: a broker that stops answering altogether is
    // dropped after it, and then the offline buffer takes over.
    let config = Config::from_toml(&format!(
        "[gateway]\nshards = 1\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n\
         [mqtt]\nbroker = \"mqtt://127.0.0.1:{}\"\nkeep_alive = \"120s\"\noffline_buffer = 200\nclient_id_prefix = \"{}\"\n\
         [api]\nbind = \"127.0.0.1:0\"\n[persistence]\ndir = \"\"\n",
        proxy.port,
        common::client_id_prefix()
    ))
    .expect("config");
    let gw = Gateway::start(config).expect("gateway starts");
    let api = gw.api_addr().expect("api on");
    let sub = Subscriber::connect(&broker_addr, "lwm2m/+/up/#", &format!("lwm2m/{ep}"));

    let mut dev = Device::bind("127.0.9.1", gw.udp_addr());
    let lt = "lt=600".to_string();
    let ep_q = format!("ep={ep}");
    let (code, _) = dev.request(
        Code::POST,
        &["rd"],
        &["lwm2m=1.1", &ep_q, "b=U", &lt],
        b"</1/0>,</3/0>,</3303/0>",
    );
    assert_eq!(code, Code::CREATED);
    assert_eq!(sub.collect(1, Duration::from_secs(10)).len(), 1, "register");

    proxy.stall();
    // Send until the gateway stops reading: the broker's side of the connection still
    // takes a little now and then, until the gateway's socket buffer is full too. Then a
    // device's CON is not acknowledged while the broker cannot take its message.
    let mut sent = 0u32;
    let probe = loop {
        assert!(
            sent < MAX_SENDS_BEFORE_PAUSE,
            "{sent} Sends with the broker stalled and the gateway still reads devices"
        );
        for _ in 0..BURST {
            let mid = dev.next_mid();
            dev.socket
                .send_to(&send(mid, sent), gw.udp_addr())
                .expect("send");
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
        if metric(api, "lwm2m_receive_pauses_total", "") < 1.0 {
            continue;
        }
        discard_pending(&dev);
        let probe = dev.next_mid();
        dev.socket
            .send_to(&send(probe, sent), gw.udp_addr())
            .expect("send");
        sent += 1;
        if !acked(&dev, probe, Duration::from_millis(500)) {
            break probe;
        }
    };
    assert_eq!(
        metric(api, "lwm2m_drops_total", "reason=\"uplink_overflow\""),
        0.0,
        "the gateway dropped messages instead of pausing"
    );

    proxy.resume();
    assert!(
        acked(&dev, probe, Duration::from_secs(10)),
        "the paused Send is acknowledged once the broker catches up"
    );
    let got = sub.collect(sent as usize, Duration::from_secs(60));
    let values: BTreeSet<u64> = got
        .iter()
        .filter(|m| m.json["msgType"] == "send")
        .filter_map(|m| m.json["data"]["content"][0]["value"].as_f64())
        .map(|v| v as u64)
        .collect();
    let missing: Vec<u32> = (0..sent)
        .filter(|v| !values.contains(&u64::from(*v)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {sent} Sends never reached the broker, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(
        metric(api, "lwm2m_drops_total", "reason=\"uplink_overflow\""),
        0.0
    );
    assert!(metric(api, "lwm2m_receive_paused_seconds_total", "") > 0.0);
    gw.stop();
}
