//! Restarts of the real binary: registrations and observations survive SIGTERM and
//! SIGKILL; an id of a boot that did not persist is 4.04; a damaged journal is survived.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{Running, BIN};
use common::{unique, Device, Subscriber};
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let t = std::net::TcpListener::bind(("127.0.0.1", s.local_addr().expect("addr").port()));
    match t {
        Ok(t) => t.local_addr().expect("addr").port(),
        Err(_) => free_port(),
    }
}

struct Run {
    gw: Running,
    mqtt: String,
}

/// The gateway binary on `udp` with its own embedded broker, journaling into `dir`;
/// returns once it logged that it runs (restoring happens before that).
fn start(dir: &Path, udp: u16, tag: &str) -> Run {
    let mqtt = format!("127.0.0.1:{}", free_port());
    let config = dir.with_extension(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[gateway]\nshards = 2\n[listeners.udp]\nbind = \"127.0.0.1:{udp}\"\n[mqtt]\nembedded_bind = \"{mqtt}\"\nclient_id_prefix = \"{tag}\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"{}\"\nflush_interval = \"100ms\"\n",
            dir.display()
        ),
    )
    .expect("config");
    let mut gw = Running::start(&config);
    gw.wait_for("gateway running");
    Run { gw, mqtt }
}

impl Run {
    /// Sends `sig` and waits for the exit: (exit code, the whole log).
    fn signal(self, sig: i32) -> (Option<i32>, String) {
        self.gw.signal(sig);
        let (status, log) = self.gw.exit();
        (status.code(), log)
    }
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-restart-{}", unique(test)));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Waits for the next CoAP request the gateway sends `device`.
fn next_request(device: &Device) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = device
        .socket
        .recv_from(&mut buf)
        .expect("a request from the gateway");
    buf[..n].to_vec()
}

fn respond(device: &Device, req: &[u8], observe: Option<u32>, value: &str) {
    let req = Message::parse(req).expect("request");
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Ack,
        Code::CONTENT,
        req.mid(),
        req.token(),
    );
    if let Some(seq) = observe {
        w.uint_option(option::OBSERVE, seq);
    }
    w.uint_option(option::CONTENT_FORMAT, 0)
        .payload(value.as_bytes());
    w.finish();
    device.socket.send_to(&buf, device.gateway).expect("send");
}

fn notify(device: &Device, token: &[u8], seq: u32, value: &str) {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Non,
        Code::CONTENT,
        4000 + seq as u16,
        token,
    );
    w.uint_option(option::OBSERVE, seq)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(value.as_bytes());
    w.finish();
    device.socket.send_to(&buf, device.gateway).expect("send");
}

fn one(sub: &Subscriber, topic: &str) -> serde_json::Value {
    let got = sub.collect(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one message on {topic}");
    assert_eq!(got[0].topic, topic);
    got[0].json.clone()
}

/// Registers two devices, one observing, stops the gateway with `sig`, restarts it, and
/// checks that both devices are served without registering again.
fn survives(sig: i32, test: &str) {
    let dir = temp_dir(test);
    let udp = free_port();
    let gateway: SocketAddr = format!("127.0.0.1:{udp}").parse().expect("addr");
    let tag = unique(test);
    let run = start(&dir, udp, &format!("{tag}-1"));
    let sub = Subscriber::connect(&run.mqtt, "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    let mut a = Device::bind("127.0.0.5", gateway);
    let mut b = Device::bind("127.0.0.6", gateway);
    let (ep_a, ep_b) = (format!("{tag}-a"), format!("{tag}-b"));
    let loc_a = a.register(&ep_a, 3600);
    let loc_b = b.register(&ep_b, 3600);
    assert_eq!(
        sub.collect(2, Duration::from_secs(10)).len(),
        2,
        "two registers"
    );

    sub.publish(
        &format!("lwm2m/{ep_a}/dn"),
        r#"{"requestID":77,"msgType":"observe","data":{"path":"/3/0/9"}}"#,
    );
    let observe = next_request(&a);
    let token = Message::parse(&observe).expect("observe").token().to_vec();
    respond(&a, &observe, Some(1), "90");
    let resp = one(&sub, &format!("lwm2m/{ep_a}/up/resp"));
    assert_eq!(resp["msgType"], "observe");
    // Past one flush interval, so even SIGKILL keeps the observation.
    std::thread::sleep(Duration::from_millis(600));
    let (code, log) = run.signal(sig);
    if sig == libc::SIGTERM {
        assert_eq!(code, Some(0), "{log}");
    }
    drop(sub);

    let run = start(&dir, udp, &format!("{tag}-2"));
    let sub = Subscriber::connect(&run.mqtt, "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    // Updates to the ids handed out before the restart are accepted.
    assert_eq!(
        a.request(Code::POST, &["rd", &loc_a], &[], b"").0,
        Code::CHANGED
    );
    assert_eq!(
        b.request(Code::POST, &["rd", &loc_b], &[], b"").0,
        Code::CHANGED
    );
    let updates = sub.collect(2, Duration::from_secs(10));
    assert_eq!(updates.len(), 2);
    assert!(updates.iter().all(|m| m.json["msgType"] == "update"));
    // The observation still publishes, echoing the request that created it.
    notify(&a, &token, 2, "55");
    let n = one(&sub, &format!("lwm2m/{ep_a}/up/notify"));
    assert_eq!(n["requestID"], 77);
    assert_eq!(n["seqNum"], 2);
    assert_eq!(n["data"]["content"][0]["value"], 55);
    // A read of a device registered before the restart works.
    sub.publish(
        &format!("lwm2m/{ep_b}/dn"),
        r#"{"requestID":78,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let read = next_request(&b);
    respond(&b, &read, None, "Vendor");
    let r = one(&sub, &format!("lwm2m/{ep_b}/up/resp"));
    assert_eq!(r["requestID"], 78);
    assert_eq!(r["data"]["content"][0]["value"], "Vendor");
    let (code, log) = run.signal(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("registrations restored"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn registrations_and_observations_survive_sigterm() {
    survives(libc::SIGTERM, "sigterm");
}

#[test]
fn registrations_and_observations_survive_sigkill() {
    survives(libc::SIGKILL, "sigkill");
}

#[test]
fn a_damaged_journal_is_survived_and_reported() {
    let dir = temp_dir("damaged");
    let udp = free_port();
    let gateway: SocketAddr = format!("127.0.0.1:{udp}").parse().expect("addr");
    let tag = unique("damaged");
    let run = start(&dir, udp, &format!("{tag}-1"));
    let mut devices: Vec<(Device, String)> = (0..3)
        .map(|i| {
            let mut d = Device::bind(&format!("127.0.0.{}", 10 + i), gateway);
            let loc = d.register(&format!("{tag}-{i}"), 3600);
            (d, loc)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let (_, log) = run.signal(libc::SIGKILL);
    let segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("journal-"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?} {log}");
    // Tear the last write and damage a byte of the first record.
    let mut bytes = std::fs::read(&segments[0]).expect("read");
    bytes[20] ^= 0xff;
    bytes.extend_from_slice(b"LW\x01\x01\x40\x00");
    std::fs::write(&segments[0], &bytes).expect("write");

    let run = start(&dir, udp, &format!("{tag}-2"));
    let mut served = 0;
    for (d, loc) in &mut devices {
        if d.request(Code::POST, &["rd", loc], &[], b"").0 == Code::CHANGED {
            served += 1;
        }
    }
    assert_eq!(served, 2, "the two intact registrations are kept");
    let (code, log) = run.signal(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("journal damage skipped"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Registers `n` endpoints named `<prefix>-<i>` from one socket, pipelined; returns the
/// location ids.
fn register_many(gateway: SocketAddr, prefix: &str, n: usize) -> Vec<String> {
    let socket = std::net::UdpSocket::bind("127.0.0.7:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut ids = vec![String::new(); n];
    let mut buf = [0u8; 512];
    for window in (0..n).collect::<Vec<_>>().chunks(200) {
        for &i in window {
            let mut req = Vec::new();
            let mid = i as u16;
            let mut w = MessageWriter::new(
                &mut req,
                MessageType::Con,
                Code::POST,
                mid,
                &mid.to_be_bytes(),
            );
            w.option(option::URI_PATH, b"rd")
                .option(option::URI_QUERY, format!("ep={prefix}-{i}").as_bytes())
                .option(option::URI_QUERY, b"lt=600");
            w.finish();
            socket.send_to(&req, gateway).expect("send");
        }
        let mut left = window.len();
        while left > 0 {
            let (len, _) = socket
                .recv_from(&mut buf)
                .expect("a 2.01 for every Register");
            let reply = Message::parse(&buf[..len]).expect("reply");
            assert_eq!(reply.code(), Code::CREATED);
            let i = usize::from(reply.mid());
            if ids[i].is_empty() {
                left -= 1;
            }
            ids[i] = reply
                .location_path()
                .nth(1)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .expect("rd/<id>");
        }
    }
    ids
}

#[test]
fn two_boots_never_issue_the_same_id_and_old_ids_get_not_found() {
    const N: usize = 10_000;
    let tag = unique("boots");
    let mut seen = std::collections::HashSet::new();
    let mut first_boot = Vec::new();
    for boot in 0..2 {
        // Persistence off: nothing links the boots but the id generator's randomness.
        let gw = lwm2m_gateway::runtime::Gateway::start(common::test_config(2)).expect("starts");
        let ids = register_many(gw.udp_addr(), &format!("{tag}-{boot}"), N);
        for id in &ids {
            assert_eq!(id.len(), 12, "{id}");
            assert!(seen.insert(id.clone()), "location id {id} issued twice");
        }
        if boot == 0 {
            first_boot = ids;
        } else {
            // A device of the first boot updating the second: 4.04, nobody else touched.
            let mut device = Device::bind("127.0.0.7", gw.udp_addr());
            for id in first_boot.iter().take(100) {
                assert_eq!(
                    device.request(Code::POST, &["rd", id], &[], b"").0,
                    Code::NOT_FOUND
                );
            }
            let held = gw.registered_eventually(N, Duration::from_secs(5));
            assert_eq!(held.iter().sum::<usize>(), N);
        }
        gw.stop();
    }
    assert_eq!(seen.len(), 2 * N);
}

#[test]
fn a_second_gateway_on_the_same_journal_exits_2_naming_the_first() {
    let dir = temp_dir("locked");
    let tag = unique("locked");
    let first = start(&dir, free_port(), &format!("{tag}-1"));
    let config = dir.with_extension("second.toml");
    std::fs::write(
        &config,
        format!(
            "[listeners.udp]\nbind = \"127.0.0.1:0\"\n[mqtt]\nembedded_bind = \"127.0.0.1:0\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"{}\"\n",
            dir.display()
        ),
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["--config", config.to_str().expect("utf-8")])
        .env_remove("RUST_LOG")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another running gateway"), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.gw.child.id())),
        "{err}"
    );
    let (code, log) = first.signal(libc::SIGTERM);
    assert_eq!(code, Some(0), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
