//! Interoperability with DTLS stacks other than OpenSSL: libcoap's `coap-client` built on
//! GnuTLS (and on OpenSSL, as a second CoAP implementation) registers over DTLS with a PSK,
//! and is refused under a name its identity does not carry.
//!
//! The clients come from Debian's `libcoap3-bin`. Where they are not installed the test says
//! so and passes, unless `LWM2M_REQUIRE_INTEROP=1` (CI sets it, after installing them).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{test_config_with, unique, Subscriber};
use lwm2m_gateway::runtime::Gateway;

const KEY: &str = "0123456789abcdef";

fn client(name: &str) -> Option<String> {
    let path = format!("/usr/bin/{name}");
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("LWM2M_REQUIRE_INTEROP").is_none(),
        "{path} is required (apt-get install libcoap3-bin)"
    );
    eprintln!("{path} not installed: interoperability with it not checked");
    None
}

/// Runs `coap-client` with a PSK and returns its verbose output.
fn post(client: &str, identity: &str, url: &str) -> String {
    let out = Command::new(client)
        .args([
            "-m",
            "post",
            "-u",
            identity,
            "-k",
            KEY,
            "-t",
            "40",
            "-e",
            "</3/0>,</1/0>",
        ])
        .args(["-B", "10", "-v", "6", url])
        .output()
        .expect("coap-client runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn libcoap_clients_register_over_dtls_with_a_psk() {
    let tag = unique("interop");
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir).expect("dir");
    let psk = dir.join("psk.txt");
    let key_hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        &psk,
        format!("gnutls-id:{key_hex}:{tag}-gnutls\nopenssl-id:{key_hex}:{tag}-openssl\n"),
    )
    .expect("psk file");
    let config = test_config_with(
        2,
        &format!("[listeners.dtls]\nenabled = true\nbind = \"127.0.0.1:0\"\npsk_file = {psk:?}\n"),
    );
    let gw = Gateway::start(config).expect("gateway starts");
    let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/+/up/#", &format!("lwm2m/{tag}"));
    let port = gw.dtls_addr().expect("DTLS listener").port();

    for (binary, identity, stack) in [
        ("coap-client-gnutls", "gnutls-id", "gnutls"),
        ("coap-client-openssl", "openssl-id", "openssl"),
    ] {
        let Some(path) = client(binary) else { continue };
        let ep = format!("{tag}-{stack}");
        let url = format!("coaps://127.0.0.1:{port}/rd?ep={ep}&lt=300&lwm2m=1.1&b=U");
        let out = post(&path, identity, &url);
        assert!(out.contains("c:2.01"), "{binary} registers:\n{out}");
        eprintln!("{binary}: {}", out.lines().last().unwrap_or_default());
        let got = sub.collect(1, Duration::from_secs(5));
        assert_eq!(got[0].json["msgType"], "register", "{binary}");
        assert_eq!(got[0].json["data"]["ep"], ep.as_str());
        assert_eq!(got[0].json["data"]["security"], "psk");

        let url = format!("coaps://127.0.0.1:{port}/rd?ep={tag}-someone-else&lt=300");
        let out = post(&path, identity, &url);
        assert!(
            out.contains("c:4.03"),
            "{binary} under another name:\n{out}"
        );
    }
    gw.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
