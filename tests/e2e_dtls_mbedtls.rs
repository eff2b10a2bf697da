//! Interoperability with mbedTLS, the DTLS stack of Anjay- and Zephyr-based devices: a
//! small mbedTLS client (`tests/interop/mbedtls_client.c`, built here with the system C
//! compiler) registers over DTLS with a PSK under each of LwM2M's PSK suites (CBC with and
//! without encrypt-then-MAC, as constrained mbedTLS builds may leave it out), is refused
//! under a name its identity does not carry, fails with a wrong key, and resumes its
//! session by ticket from a new source port to send an Update.
//!
//! The client needs Debian's `libmbedtls-dev`. Where its headers are not installed the test
//! says so and passes, unless `LWM2M_REQUIRE_INTEROP=1` (CI sets it, after installing them).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{test_config_with, unique, Subscriber};
use lwm2m_gateway::coap::{option, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::runtime::Gateway;

const KEY_HEX: &str = "4c774d324d2d6d626564544c532d6b31";
const WRONG_KEY_HEX: &str = "4c774d324d2d6d626564544c532d6b32";
const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/mbedtls_client.c"
);
/// The header whose absence means libmbedtls-dev is not installed.
const HEADER: &str = "/usr/include/mbedtls/ssl.h";
/// Longest a client run may take: its own bounds are a ~7 s handshake and a 5 s wait for
/// the response, per connection.
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);
const CCM_8: &str = "TLS-PSK-WITH-AES-128-CCM-8";
const CBC_SHA256: &str = "TLS-PSK-WITH-AES-128-CBC-SHA256";

/// The client binary, built once per test process; `None` when mbedTLS is not installed.
fn client() -> Option<&'static Path> {
    static CLIENT: OnceLock<Option<PathBuf>> = OnceLock::new();
    CLIENT.get_or_init(build_client).as_deref()
}

fn build_client() -> Option<PathBuf> {
    if !Path::new(HEADER).exists() {
        assert!(
            std::env::var_os("LWM2M_REQUIRE_INTEROP").is_none(),
            "{HEADER} is required (apt-get install libmbedtls-dev)"
        );
        eprintln!("{HEADER} not installed: interoperability with mbedTLS not checked");
        return None;
    }
    let dir = std::env::temp_dir().join(unique("mbedtls-client"));
    std::fs::create_dir_all(&dir).expect("build dir");
    let binary = dir.join("mbedtls_client");
    let out = Command::new("cc")
        .args(["-std=c99", "-Wall", "-O1", "-o"])
        .arg(&binary)
        .arg(SOURCE)
        .args(["-lmbedtls", "-lmbedx509", "-lmbedcrypto"])
        .output()
        .expect("the system C compiler `cc` runs");
    assert!(
        out.status.success(),
        "building {SOURCE} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(binary)
}

/// A gateway with the DTLS listener on, its PSK file binding each identity to an endpoint.
struct Setup {
    gw: Gateway,
    sub: Subscriber,
    dir: PathBuf,
    port: String,
}

impl Setup {
    fn start(tag: &str, bindings: &[(&str, &str)]) -> Setup {
        let dir = std::env::temp_dir().join(tag);
        std::fs::create_dir_all(&dir).expect("dir");
        let psk = dir.join("psk.txt");
        let lines: String = bindings
            .iter()
            .map(|(id, ep)| format!("{id}:{KEY_HEX}:{ep}\n"))
            .collect();
        std::fs::write(&psk, lines).expect("psk file");
        let config = test_config_with(
            2,
            &format!(
                "[listeners.dtls]\nenabled = true\nbind = \"127.0.0.1:0\"\npsk_file = {psk:?}\n"
            ),
        );
        let gw = Gateway::start(config).expect("gateway starts");
        let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
        let port = gw.dtls_addr().expect("DTLS listener").port().to_string();
        Setup { gw, sub, dir, port }
    }

    fn args<'a>(&'a self, identity: &'a str, key_hex: &'a str) -> [&'a str; 4] {
        ["127.0.0.1", &self.port, identity, key_hex]
    }

    fn stop(self) {
        self.gw.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CON Register of `ep` with `</3/0>` in link format, as hex.
fn register(ep: &str, mid: u16) -> String {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Con,
        Code::POST,
        mid,
        &mid.to_be_bytes(),
    );
    w.option(option::URI_PATH, b"rd");
    w.uint_option(option::CONTENT_FORMAT, 40);
    for q in [
        format!("ep={ep}"),
        "lt=300".into(),
        "lwm2m=1.1".into(),
        "b=U".into(),
    ] {
        w.option(option::URI_QUERY, q.as_bytes());
    }
    w.payload(b"</3/0>");
    w.finish();
    hex(&buf)
}

/// A CON Update of the registration at `rd/<location>`, as hex.
fn update(location: &str, mid: u16) -> String {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Con,
        Code::POST,
        mid,
        &mid.to_be_bytes(),
    );
    w.option(option::URI_PATH, b"rd");
    w.option(option::URI_PATH, location.as_bytes());
    w.finish();
    hex(&buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The response code and Location-Path of the piggybacked response (hex) to `mid`.
fn response(line: &str, mid: u16) -> (Code, Vec<String>) {
    let bytes: Vec<u8> = (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex response"))
        .collect();
    let msg = Message::parse(&bytes).expect("the response is CoAP");
    assert_eq!(msg.ty(), MessageType::Ack, "piggybacked response");
    assert_eq!(msg.mid(), mid, "response to the request sent");
    let location = msg
        .location_path()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    (msg.code(), location)
}

/// Waits for `child` up to [`CLIENT_DEADLINE`], killing it past that.
fn wait(mut child: Child, started: Instant) -> Output {
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > CLIENT_DEADLINE {
            let _ = child.kill();
            panic!("mbedtls_client ran longer than {CLIENT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("client output")
}

/// Runs the client once (`flags`, then host port identity key message).
fn run(client: &Path, flags: &[&str], args: [&str; 4], message: &str) -> Output {
    let child = Command::new(client)
        .args(flags)
        .args(args)
        .arg(message)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mbedtls_client runs");
    wait(child, Instant::now())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mbedtls_registers_over_dtls_with_each_psk_suite() {
    let Some(client) = client() else { return };
    let tag = unique("mbedtls");
    // (name, suite, client flags, how CBC records are protected)
    let cases = [
        ("ccm8", CCM_8, &[][..], "no encrypt-then-MAC"),
        ("cbc-etm", CBC_SHA256, &[][..], "encrypt-then-MAC"),
        (
            "cbc-mte",
            CBC_SHA256,
            &["--no-etm"][..],
            "no encrypt-then-MAC",
        ),
    ];
    let bindings: Vec<(String, String)> = cases
        .iter()
        .map(|(name, ..)| (format!("mbed-{name}"), format!("{tag}-{name}")))
        .collect();
    let pairs: Vec<(&str, &str)> = bindings
        .iter()
        .map(|(id, ep)| (id.as_str(), ep.as_str()))
        .collect();
    let setup = Setup::start(&tag, &pairs);

    for ((name, suite, flags, etm), (identity, ep)) in cases.iter().zip(&bindings) {
        let flags = [&["--suite", suite], *flags].concat();
        let out = run(
            client,
            &flags,
            setup.args(identity, KEY_HEX),
            &register(ep, 0x1001),
        );
        let log = stderr(&out);
        assert!(out.status.success(), "{name}: client failed:\n{log}");
        assert!(
            log.contains(&format!("full handshake, {suite}, {etm},")),
            "{name}: {log}"
        );
        eprint!("{log}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (code, location) = response(stdout.trim(), 0x1001);
        assert_eq!(code, Code::CREATED, "{name}: Register");
        assert_eq!(location.len(), 2, "{name}: Location-Path rd/<id>");
        assert_eq!(location[0], "rd");

        let got = setup.sub.collect(1, Duration::from_secs(5));
        assert_eq!(got.len(), 1, "{name}: one register message");
        assert_eq!(got[0].json["msgType"], "register", "{name}");
        assert_eq!(got[0].json["data"]["ep"], ep.as_str());
        assert_eq!(got[0].json["data"]["security"], "psk", "{name}");
    }
    setup.stop();
}

#[test]
fn mbedtls_under_another_name_gets_403_and_a_wrong_key_fails() {
    let Some(client) = client() else { return };
    let tag = unique("mbedtls-refused");
    let ep = format!("{tag}-dev");
    let setup = Setup::start(&tag, &[("mbed-dev", &ep)]);

    let other = format!("{tag}-someone-else");
    let out = run(
        client,
        &[],
        setup.args("mbed-dev", KEY_HEX),
        &register(&other, 0x2001),
    );
    let log = stderr(&out);
    assert!(out.status.success(), "client failed:\n{log}");
    eprint!("{log}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (code, _) = response(stdout.trim(), 0x2001);
    assert_eq!(
        code,
        Code::FORBIDDEN,
        "Register under a name not bound to the identity"
    );

    let started = Instant::now();
    let out = run(
        client,
        &[],
        setup.args("mbed-dev", WRONG_KEY_HEX),
        &register(&ep, 0x2002),
    );
    let log = stderr(&out);
    assert!(
        !out.status.success(),
        "a wrong key must not connect:\n{log}"
    );
    assert!(out.stdout.is_empty(), "no response without the key");
    assert!(log.contains("handshake"), "the handshake fails:\n{log}");
    eprintln!("wrong key, after {:?}: {log}", started.elapsed());

    assert!(
        setup.sub.drain(Duration::from_millis(500)).is_empty(),
        "nothing registered"
    );
    setup.stop();
}

#[test]
fn mbedtls_resumes_by_session_ticket_from_a_new_port() {
    let Some(client) = client() else { return };
    let tag = unique("mbedtls-resume");
    let ep = format!("{tag}-dev");
    let setup = Setup::start(&tag, &[("mbed-resume", &ep)]);

    let started = Instant::now();
    let mut child = Command::new(client)
        .arg("--resume")
        .args(setup.args("mbed-resume", KEY_HEX))
        .arg(register(&ep, 0x3001))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mbedtls_client runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("first response");
    if first.is_empty() {
        let out = wait(child, started);
        panic!("client failed:\n{}", stderr(&out));
    }
    let (code, location) = response(first.trim(), 0x3001);
    assert_eq!(code, Code::CREATED, "Register");
    let got = setup.sub.collect(1, Duration::from_secs(5));
    assert_eq!(got[0].json["msgType"], "register");

    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{}", update(&location[1], 0x3002)).expect("second message");
    drop(stdin);
    let mut second = String::new();
    lines.read_line(&mut second).expect("second response");
    let out = wait(child, started);
    let log = stderr(&out);
    eprint!("{log}");
    assert!(out.status.success(), "client failed:\n{log}");
    assert!(log.contains("connection 1: full handshake"), "{log}");
    assert!(
        !log.contains("session ticket of 0 bytes"),
        "the gateway issues a ticket:\n{log}"
    );
    assert!(
        log.contains("connection 2: abbreviated (resumed) handshake"),
        "the second connection resumes by ticket:\n{log}"
    );
    let (code, _) = response(second.trim(), 0x3002);
    assert_eq!(code, Code::CHANGED, "Update over the resumed session");

    let mut got = setup.sub.collect(1, Duration::from_secs(5));
    got.extend(setup.sub.drain(Duration::from_millis(500)));
    let kinds: Vec<_> = got.iter().map(|m| m.json["msgType"].clone()).collect();
    eprintln!(
        "after the Update from the new port: {:?}",
        got.iter().map(|m| &m.json).collect::<Vec<_>>()
    );
    assert!(
        got.iter().any(|m| m.json["msgType"] == "update"),
        "the Update reaches the registration: {kinds:?}"
    );
    assert!(
        got.iter().any(|m| m.json["data"]["event"] == "rebound"),
        "the registration moved to the new port: {kinds:?}"
    );
    setup.stop();
}
