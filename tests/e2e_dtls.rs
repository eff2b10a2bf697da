//! End to end over DTLS: real OpenSSL clients on 127.0.0.1 handshake with the gateway's
//! DTLS listener (PSK and certificates), register, are read through MQTT and deregister;
//! wrong keys fail; plain CoAP cannot touch a DTLS registration; a ClientHello flood from
//! many addresses leaves the gateway's memory flat.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use common::dtls::DtlsConn;
use common::process::Running;
use common::{con_request, test_config_with, unique, Device, Subscriber, WAKAAMA_OBJECTS};
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::dtls::client::DtlsClient;
use lwm2m_gateway::dtls::pki::TestPki;
use lwm2m_gateway::runtime::Gateway;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A gateway with the DTLS listener on, its credentials in a directory of their own.
struct SecureGateway {
    gw: Option<Gateway>,
    sub: Subscriber,
    pki: TestPki,
    dir: PathBuf,
}

impl SecureGateway {
    /// Starts with a PSK file holding `(identity, key, endpoint)` lines.
    fn start(tag: &str, psk: &[(&str, &[u8], &str)]) -> SecureGateway {
        let dir = std::env::temp_dir().join(unique("lwm2m-dtls"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = TestPki::generate().expect("test PKI");
        let files = pki.write_to(&dir).expect("PKI files");
        let lines: String = psk
            .iter()
            .map(|(id, key, ep)| format!("{id}:{}:{ep}\n", hex(key)))
            .collect();
        let psk_file = dir.join("psk.txt");
        std::fs::write(&psk_file, format!("# test keys\n{lines}")).expect("psk file");
        let config = test_config_with(
            2,
            &format!(
                "[listeners.dtls]\nenabled = true\nbind = \"127.0.0.1:0\"\npsk_file = {:?}\ncertfile = {:?}\nkeyfile = {:?}\ncacertfile = {:?}\n",
                psk_file, files.server_cert, files.server_key, files.ca
            ),
        );
        let gw = Gateway::start(config).expect("gateway starts");
        let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
        SecureGateway {
            gw: Some(gw),
            sub,
            pki,
            dir,
        }
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("running")
    }

    fn dtls_addr(&self) -> SocketAddr {
        self.gw().dtls_addr().expect("DTLS listener bound")
    }
}

impl Drop for SecureGateway {
    /// Stops the gateway: on a broker shared with the next test (CI's Mosquitto), a gateway
    /// left running would answer that test's commands for endpoints it does not hold.
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One CoAP request over the connection; the response.
fn request(
    conn: &mut DtlsConn,
    mid: u16,
    code: Code,
    path: &[&str],
    query: &[&str],
    payload: &[u8],
) -> Vec<u8> {
    let buf = con_request(mid, code, path, query, payload);
    conn.send(&buf).expect("send");
    loop {
        let reply = conn.recv(TIMEOUT).expect("a response over DTLS");
        if Message::parse(&reply).is_ok_and(|m| m.mid() == mid) {
            return reply;
        }
    }
}

fn register(conn: &mut DtlsConn, mid: u16, ep: &str) -> (Code, String) {
    let reply = request(
        conn,
        mid,
        Code::POST,
        &["rd"],
        &["lwm2m=1.1", &format!("ep={ep}"), "b=U", "lt=300"],
        WAKAAMA_OBJECTS.as_bytes(),
    );
    let msg = Message::parse(&reply).expect("reply parses");
    let loc: Vec<String> = msg
        .location_path()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    (msg.code(), loc.get(1).cloned().unwrap_or_default())
}

#[test]
fn psk_device_registers_is_read_through_mqtt_and_deregisters() {
    let tag = unique("dtls-psk");
    let ep = format!("{tag}-a");
    let key = *b"0123456789abcdef";
    let g = SecureGateway::start(&tag, &[("id-a", &key, &ep)]);
    let mut conn =
        DtlsConn::connect_psk(g.dtls_addr(), "id-a", &key, TIMEOUT).expect("PSK handshake");
    let (code, id) = register(&mut conn, 1, &ep);
    assert_eq!(code, Code::CREATED);
    let reg = g.sub.collect(1, TIMEOUT);
    assert_eq!(reg[0].json["msgType"], "register");
    assert_eq!(reg[0].json["data"]["ep"], ep.as_str());
    assert_eq!(reg[0].json["data"]["security"], "psk");

    // The application reads /3/0/0; the device answers inside its session.
    g.sub.publish(
        &format!("lwm2m/{ep}/dn"),
        r#"{"reqID":"7","msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let read = conn.recv(TIMEOUT).expect("the read over DTLS");
    let read = Message::parse(&read).expect("parses");
    assert_eq!(read.code(), Code::GET);
    let mut resp = Vec::new();
    let mut w = MessageWriter::new(
        &mut resp,
        MessageType::Ack,
        Code::CONTENT,
        read.mid(),
        read.token(),
    );
    w.uint_option(option::CONTENT_FORMAT, 0);
    w.payload(b"Open Mobile Alliance");
    w.finish();
    conn.send(&resp).expect("send");
    let answer = g.sub.collect(1, TIMEOUT);
    assert_eq!(answer[0].json["msgType"], "read", "{:?}", answer[0]);
    assert_eq!(answer[0].json["reqID"], "7");
    assert_eq!(
        answer[0].json["data"]["content"][0]["value"], "Open Mobile Alliance",
        "{:?}",
        answer[0]
    );

    let bye = request(&mut conn, 3, Code::DELETE, &["rd", &id], &[], b"");
    assert_eq!(Message::parse(&bye).expect("parses").code(), Code::DELETED);
    let event = g.sub.collect(1, TIMEOUT);
    assert_eq!(event[0].json["data"]["event"], "deregister");
    g.gw().registered_eventually(0, TIMEOUT);
}

#[test]
fn certificate_device_registers_as_its_common_name() {
    let tag = unique("dtls-x509");
    let ep = format!("{tag}-cert");
    let g = SecureGateway::start(&tag, &[]);
    let client = g.pki.client(&ep).expect("client cert");
    let ca = g.pki.ca().cert_pem().expect("ca pem");
    let mut conn = DtlsConn::connect_x509(
        g.dtls_addr(),
        &client.cert_pem().expect("pem"),
        &client.key_pem().expect("pem"),
        &ca,
        TIMEOUT,
    )
    .expect("certificate handshake");
    let (code, _) = register(&mut conn, 1, &ep);
    assert_eq!(code, Code::CREATED);
    let reg = g.sub.collect(1, TIMEOUT);
    assert_eq!(reg[0].json["data"]["security"], "x509");

    // Another name than the certificate's is refused.
    let (code, _) = register(&mut conn, 2, &format!("{tag}-other"));
    assert_eq!(code, Code::FORBIDDEN);

    // A certificate from another CA does not get a session at all.
    let stranger = TestPki::self_signed_client(&ep).expect("self-signed");
    let refused = DtlsConn::connect_x509(
        g.dtls_addr(),
        &stranger.cert_pem().expect("pem"),
        &stranger.key_pem().expect("pem"),
        &ca,
        Duration::from_secs(3),
    );
    assert!(
        refused.is_err(),
        "a certificate the CA did not sign is refused"
    );
}

#[test]
fn wrong_key_and_unknown_identity_get_no_session() {
    let tag = unique("dtls-bad");
    let key = *b"0123456789abcdef";
    let g = SecureGateway::start(&tag, &[("id-b", &key, &format!("{tag}-b"))]);
    let wrong = DtlsConn::connect_psk(
        g.dtls_addr(),
        "id-b",
        b"fedcba9876543210",
        Duration::from_secs(3),
    );
    assert!(wrong.is_err(), "a wrong key never completes");
    let unknown = DtlsConn::connect_psk(g.dtls_addr(), "nobody", &key, Duration::from_secs(3));
    assert!(unknown.is_err(), "an unknown identity is refused");
    // The right key still works afterwards.
    let mut conn = DtlsConn::connect_psk(g.dtls_addr(), "id-b", &key, TIMEOUT).expect("handshake");
    assert_eq!(register(&mut conn, 1, &format!("{tag}-b")).0, Code::CREATED);
}

#[test]
fn plain_coap_cannot_update_or_take_over_a_dtls_registration() {
    let tag = unique("dtls-plain");
    let ep = format!("{tag}-c");
    let key = *b"0123456789abcdef";
    let g = SecureGateway::start(&tag, &[("id-c", &key, &ep)]);
    let mut conn = DtlsConn::connect_psk(g.dtls_addr(), "id-c", &key, TIMEOUT).expect("handshake");
    let (code, id) = register(&mut conn, 1, &ep);
    assert_eq!(code, Code::CREATED);
    g.sub.collect(1, TIMEOUT);

    let mut plain = Device::bind("127.0.0.1", g.gw().udp_addr());
    let (code, _) = plain.request(Code::POST, &["rd", &id], &["lt=60"], b"");
    assert_eq!(code, Code::FORBIDDEN, "plain Update");
    let (code, _) = plain.request(Code::DELETE, &["rd", &id], &[], b"");
    assert_eq!(code, Code::FORBIDDEN, "plain Deregister");
    assert_eq!(
        g.gw()
            .registered_eventually(1, TIMEOUT)
            .iter()
            .sum::<usize>(),
        1
    );
    assert!(
        g.sub.drain(Duration::from_millis(300)).is_empty(),
        "nothing was published for the refused requests"
    );
    // The device itself can.
    let reply = request(&mut conn, 9, Code::POST, &["rd", &id], &["lt=60"], b"");
    assert_eq!(
        Message::parse(&reply).expect("parses").code(),
        Code::CHANGED
    );
}

/// The gateway binary on a DTLS configuration of its own, with `psk` as its PSK file.
fn spawn_gateway(dir: &std::path::Path, psk: &str) -> (Running, SocketAddr) {
    std::fs::create_dir_all(dir).expect("dir");
    let psk_file = dir.join("psk.txt");
    std::fs::write(&psk_file, psk).expect("psk file");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nshards = 2\n[listeners.udp]\nbind = \"127.0.0.1:0\"\n[listeners.dtls]\nenabled = true\nbind = \"127.0.0.1:0\"\npsk_file = {psk_file:?}\n[mqtt]\nembedded_bind = \"127.0.0.1:0\"\n[api]\nbind = \"\"\n[persistence]\ndir = \"\"\n[log]\nfilter = \"info\"\n"
        ),
    )
    .expect("config");
    let mut gw = Running::start(&config);
    let line = gw.wait_for("gateway running");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dtls="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("dtls= in {line:?}"));
    (gw, addr)
}

fn child_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn client_hello_flood_from_many_addresses_keeps_memory_flat() {
    let dir = std::env::temp_dir().join(unique("lwm2m-dtls-flood"));
    let key = *b"0123456789abcdef";
    let (gw, addr) = spawn_gateway(&dir, &format!("id-d:{}:dev-d\n", hex(&key)));
    let mut client = DtlsClient::psk("id-d", &key).expect("client");
    client.handle_timeout();
    let hello = client.poll_transmit().expect("a ClientHello");

    // 20,000 ClientHellos from 200 addresses (127.2.0.x, 100 ports each); each is answered
    // with a HelloVerifyRequest and nothing is kept. An `SSL` object per hello would cost
    // hundreds of MiB.
    let before = child_rss_kib(gw.child.id());
    let mut answered = 0;
    for a in 0..200u32 {
        let ip = format!("127.2.{}.{}", a / 250, 1 + a % 250);
        let sockets: Vec<UdpSocket> = (0..100)
            .filter_map(|_| UdpSocket::bind(format!("{ip}:0")).ok())
            .collect();
        for s in &sockets {
            s.send_to(&hello, addr).expect("send");
        }
        for s in &sockets {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                // HelloVerifyRequest: a handshake record carrying message type 3.
                if n > 13 && buf[0] == 22 && buf[13] == 3 {
                    answered += 1;
                }
            }
        }
    }
    let grown = child_rss_kib(gw.child.id()).saturating_sub(before);
    assert!(
        answered > 19_000,
        "HelloVerifyRequests received: {answered}"
    );
    assert!(
        grown < 16 * 1024,
        "gateway RSS grew by {grown} KiB for 20,000 ClientHellos"
    );

    // Registered devices are not stalled: a real device still gets through at once.
    let mut conn = DtlsConn::connect_psk(addr, "id-d", &key, TIMEOUT).expect("handshake");
    assert_eq!(register(&mut conn, 1, "dev-d").0, Code::CREATED);
    gw.signal(libc::SIGTERM);
    let (status, _) = gw.exit();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_psk_file_and_keeps_sessions() {
    let dir = std::env::temp_dir().join(unique("lwm2m-dtls-hup"));
    let (old, new) = (*b"0123456789abcdef", *b"abcdefabcdef0123");
    let (mut gw, addr) = spawn_gateway(&dir, &format!("id-e:{}:dev-e\n", hex(&old)));
    let mut kept = DtlsConn::connect_psk(addr, "id-e", &old, TIMEOUT).expect("handshake");
    let (code, id) = register(&mut kept, 1, "dev-e");
    assert_eq!(code, Code::CREATED);
    assert!(DtlsConn::connect_psk(addr, "id-f", &new, Duration::from_secs(2)).is_err());

    // A new identity, and a line the reload reports and skips.
    std::fs::write(
        dir.join("psk.txt"),
        format!(
            "id-e:{}:dev-e\nid-f:{}:dev-f\nbroken line\n",
            hex(&old),
            hex(&new)
        ),
    )
    .expect("rewrite");
    gw.signal(libc::SIGHUP);
    let line = gw.wait_for("PSK file reloaded");
    assert!(
        line.contains("entries=2") && line.contains("bad_lines=1"),
        "{line}"
    );
    let mut fresh = DtlsConn::connect_psk(addr, "id-f", &new, TIMEOUT).expect("new identity");
    assert_eq!(register(&mut fresh, 1, "dev-f").0, Code::CREATED);
    // The session made before the reload still works.
    let reply = request(&mut kept, 2, Code::POST, &["rd", &id], &["lt=60"], b"");
    assert_eq!(
        Message::parse(&reply).expect("parses").code(),
        Code::CHANGED
    );
    gw.signal(libc::SIGTERM);
    assert!(gw.exit().0.success());
    let _ = std::fs::remove_dir_all(&dir);
}
