//! The client against an in-process OpenSSL DTLS server over the same in-memory pipe: a
//! HelloVerifyRequest cookie exchange, PSK and certificate suites, loss, resumption.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use openssl::pkey::{PKeyRef, Private};
use openssl::x509::X509Ref;

use super::super::pki::TestPki;
use super::*;

const IDENTITY: &str = "urn:imei:0001";
const KEY: [u8; 16] = *b"0123456789abcdef";
const COOKIE: &[u8] = b"stateless-cookie";
const SERVER_CIPHERS: &str =
    "PSK-AES128-CCM8:PSK-AES128-CBC-SHA256:ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256";

/// What the test server counted.
#[derive(Debug, Default)]
struct Counts {
    cookies: AtomicUsize,
    psk_lookups: AtomicUsize,
}

/// An OpenSSL DTLS server context: cookie exchange, PSK for [`IDENTITY`], optional cert.
fn server_ctx(
    counts: &Arc<Counts>,
    cert: Option<(&X509Ref, &PKeyRef<Private>, &X509Ref)>,
) -> SslContext {
    let mut b = SslContext::builder(SslMethod::dtls()).expect("ctx");
    b.set_cipher_list(SERVER_CIPHERS).expect("ciphers");
    b.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU);
    b.set_session_id_context(b"client-tests").expect("sid ctx");
    let c = Arc::clone(counts);
    b.set_cookie_generate_cb(move |_ssl, out| {
        c.cookies.fetch_add(1, Ordering::Relaxed);
        out[..COOKIE.len()].copy_from_slice(COOKIE);
        Ok(COOKIE.len())
    });
    b.set_cookie_verify_cb(|_ssl, cookie| cookie == COOKIE);
    let c = Arc::clone(counts);
    b.set_psk_server_callback(move |_ssl, identity, out| {
        c.psk_lookups.fetch_add(1, Ordering::Relaxed);
        if identity != Some(IDENTITY.as_bytes()) {
            return Ok(0);
        }
        out[..KEY.len()].copy_from_slice(&KEY);
        Ok(KEY.len())
    });
    if let Some((cert, key, ca)) = cert {
        b.set_certificate(cert).expect("server cert");
        b.set_private_key(key).expect("server key");
        let mut store = X509StoreBuilder::new().expect("store");
        store.add_cert(ca.to_owned()).expect("ca");
        b.set_verify_cert_store(store.build())
            .expect("verify store");
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    b.build()
}

/// One server-side connection.
struct Server {
    stream: SslStream<DatagramPipe>,
    established: bool,
    failed: bool,
}

impl Server {
    fn new(ctx: &SslContext) -> Server {
        let mut ssl = Ssl::new(ctx).expect("ssl");
        ssl.set_mtu(DEFAULT_MTU).expect("mtu");
        ssl.set_accept_state();
        Server {
            stream: SslStream::new(ssl, DatagramPipe::default()).expect("stream"),
            established: false,
            failed: false,
        }
    }

    fn handle(&mut self, datagram: &[u8]) {
        self.stream.get_mut().push_inbound(datagram);
        if !self.established && !self.failed {
            match self.stream.do_handshake() {
                Ok(()) => self.established = true,
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                Err(_) => self.failed = true,
            }
        }
    }

    fn read(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        self.stream
            .ssl_read(&mut buf)
            .ok()
            .map(|n| buf[..n].to_vec())
    }
}

/// Moves datagrams both ways until neither side has any; `lose(n)` drops datagram `n`
/// (counted over both directions). Returns how many datagrams were carried.
fn pump(
    client: &mut DtlsClient,
    server: &mut Server,
    lose: &mut dyn FnMut(usize) -> bool,
) -> usize {
    let mut n = 0;
    loop {
        let mut moved = false;
        while let Some(d) = client.poll_transmit() {
            moved = true;
            n += 1;
            if !lose(n) {
                server.handle(&d);
            }
        }
        while let Some(d) = server.stream.get_mut().pop_outbound() {
            moved = true;
            n += 1;
            if !lose(n) {
                client.handle_datagram(&d);
            }
        }
        if !moved {
            return n;
        }
    }
}

fn no_loss() -> impl FnMut(usize) -> bool {
    |_| false
}

fn fast(max_retransmits: u32) -> ClientOptions {
    ClientOptions {
        initial_timeout: Duration::from_millis(20),
        max_retransmits,
        ..ClientOptions::default()
    }
}

/// Waits out the client's timer and lets it retransmit.
fn expire(client: &mut DtlsClient) {
    let wait = client.poll_timeout().expect("a flight awaits its answer");
    std::thread::sleep(wait + Duration::from_millis(2));
    client.handle_timeout();
}

#[test]
fn psk_handshake_goes_through_the_cookie_exchange_and_carries_data_both_ways() {
    let counts = Arc::new(Counts::default());
    let ctx = server_ctx(&counts, None);
    let mut server = Server::new(&ctx);
    let mut client = DtlsClient::psk(IDENTITY, &KEY).expect("client");
    assert_eq!(client.state(), &State::Handshaking);
    assert!(client.poll_timeout().is_some(), "the ClientHello is timed");
    pump(&mut client, &mut server, &mut no_loss());
    assert!(client.is_established(), "{:?}", client.state());
    assert!(server.established);
    assert_eq!(
        counts.cookies.load(Ordering::Relaxed),
        1,
        "one HelloVerifyRequest"
    );
    assert_eq!(client.cipher(), Some("PSK-AES128-CCM8"));
    assert_eq!(client.poll_timeout(), None);
    assert!(!client.session_reused());

    client.send(b"</rd?ep=dev>").expect("send");
    let record = client.poll_transmit().expect("one record");
    assert!(!record.windows(4).any(|w| w == b"</rd"), "encrypted");
    server.handle(&record);
    assert_eq!(server.read().as_deref(), Some(&b"</rd?ep=dev>"[..]));

    server
        .stream
        .ssl_write(b"2.01 Created")
        .expect("server write");
    let record = server.stream.get_mut().pop_outbound().expect("record");
    client.handle_datagram(&record);
    let mut buf = [0u8; 64];
    assert_eq!(client.recv_into(&mut buf), Some(12));
    assert_eq!(&buf[..12], b"2.01 Created");
    assert_eq!(client.recv(), None);

    server.stream.shutdown().expect("close_notify");
    let alert = server
        .stream
        .get_mut()
        .pop_outbound()
        .expect("close_notify record");
    client.handle_datagram(&alert);
    assert_eq!(client.recv(), None);
    assert_eq!(client.state(), &State::Closed);
}

#[test]
fn cipher_override_negotiates_the_cbc_suite() {
    let counts = Arc::new(Counts::default());
    let ctx = server_ctx(&counts, None);
    let options = ClientOptions {
        ciphers: Some("PSK-AES128-CBC-SHA256".into()),
        ..ClientOptions::default()
    };
    let config = ClientConfig::psk(&options).expect("config");
    let mut client = DtlsClient::connect_psk(&config, IDENTITY, &KEY, None).expect("client");
    let mut server = Server::new(&ctx);
    pump(&mut client, &mut server, &mut no_loss());
    assert!(client.is_established(), "{:?}", client.state());
    assert_eq!(client.cipher(), Some("PSK-AES128-CBC-SHA256"));
}

#[test]
fn unknown_identity_fails_on_the_servers_alert() {
    let counts = Arc::new(Counts::default());
    let ctx = server_ctx(&counts, None);
    let mut server = Server::new(&ctx);
    let mut client = DtlsClient::psk("stranger", &KEY).expect("client");
    pump(&mut client, &mut server, &mut no_loss());
    assert!(server.failed);
    match client.state() {
        State::Failed(Failure::Tls(reason)) => {
            assert_eq!(reason, "tlsv1 alert unknown psk identity")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(client.poll_timeout(), None);
    assert!(client.send(b"x").is_err());
}

#[test]
fn wrong_key_fails_after_bounded_retransmissions() {
    let counts = Arc::new(Counts::default());
    let ctx = server_ctx(&counts, None);
    let mut server = Server::new(&ctx);
    let config = ClientConfig::psk(&fast(3)).expect("config");
    let mut client =
        DtlsClient::connect_psk(&config, IDENTITY, b"not-the-key-0000", None).expect("client");
    pump(&mut client, &mut server, &mut no_loss());
    for _ in 0..10 {
        if !matches!(client.state(), State::Handshaking) {
            break;
        }
        expire(&mut client);
        pump(&mut client, &mut server, &mut no_loss());
    }
    // The server drops the Finished it cannot decrypt (RFC 6347 §4.1.2.7): no alert comes.
    assert_eq!(client.state(), &State::Failed(Failure::TimedOut));
    assert!(!server.established);
}

#[test]
fn a_lost_flight_is_retransmitted_after_the_timeout() {
    let counts = Arc::new(Counts::default());
    let ctx = server_ctx(&counts, None);
    let mut server = Server::new(&ctx);
    // Long enough that the timer cannot fire inside `pump` on a loaded machine: OpenSSL
    // also retransmits on its own when a read finds the timer expired.
    let options = ClientOptions {
        initial_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let config = ClientConfig::psk(&options).expect("config");
    let mut client = DtlsClient::connect_psk(&config, IDENTITY, &KEY, None).expect("client");
    // Datagram 3 is the second ClientHello (the one with the cookie).
    let carried = pump(&mut client, &mut server, &mut |n| n == 3);
    assert_eq!(carried, 3);
    assert!(!client.is_established());
    assert!(
        client.poll_transmit().is_none(),
        "nothing to send before the timer"
    );
    client.handle_timeout();
    assert!(
        client.poll_transmit().is_none(),
        "the timer has not fired yet"
    );
    expire(&mut client);
    pump(&mut client, &mut server, &mut no_loss());
    assert!(client.is_established(), "{:?}", client.state());
    assert!(server.established);
    assert_eq!(counts.cookies.load(Ordering::Relaxed), 1);
}

#[test]
fn a_saved_session_resumes_with_an_abbreviated_handshake() {
    let counts = Arc::new(Counts::default());
    let ctx = server_ctx(&counts, None);
    let config = ClientConfig::psk(&ClientOptions::default()).expect("config");
    let mut client = DtlsClient::connect_psk(&config, IDENTITY, &KEY, None).expect("client");
    // The first server connection stays open: OpenSSL drops the session from the server's
    // cache when a connection is freed without close_notify.
    let mut first = Server::new(&ctx);
    let full = pump(&mut client, &mut first, &mut no_loss());
    let session = client.session().expect("session");
    assert_eq!(counts.psk_lookups.load(Ordering::Relaxed), 1);
    // The device's old connection is gone (it moved); its session must stay resumable.
    drop(client);

    // From a "new source port": a fresh server-side connection of the same context.
    let mut server = Server::new(&ctx);
    let mut again =
        DtlsClient::connect_psk(&config, IDENTITY, &KEY, Some(&session)).expect("client");
    let abbreviated = pump(&mut again, &mut server, &mut no_loss());
    assert!(again.is_established(), "{:?}", again.state());
    assert!(again.session_reused());
    assert!(server.stream.ssl().session_reused());
    assert_eq!(
        counts.psk_lookups.load(Ordering::Relaxed),
        1,
        "no PSK lookup"
    );
    assert!(abbreviated < full, "{abbreviated} datagrams vs {full}");
    again.send(b"update").expect("send");
    server.handle(&again.poll_transmit().expect("record"));
    assert_eq!(server.read().as_deref(), Some(&b"update"[..]));

    let other = ClientConfig::psk(&ClientOptions::default()).expect("config");
    assert!(matches!(
        DtlsClient::connect_psk(&other, IDENTITY, &KEY, Some(&session)),
        Err(ClientError::ForeignSession)
    ));
}

#[test]
fn bad_credentials_are_refused_up_front() {
    let config = ClientConfig::psk(&ClientOptions::default()).expect("config");
    let long = "x".repeat(MAX_PSK_IDENTITY_LEN + 1);
    for identity in ["", "a\0b", long.as_str()] {
        assert!(matches!(
            DtlsClient::connect_psk(&config, identity, &KEY, None),
            Err(ClientError::BadIdentity)
        ));
    }
    assert!(matches!(
        DtlsClient::connect_psk(&config, IDENTITY, &[], None),
        Err(ClientError::BadKey)
    ));
    assert!(matches!(
        DtlsClient::connect_x509(&config, None),
        Err(ClientError::WrongMode(_))
    ));
}

#[test]
fn certificate_handshake_verifies_the_server_against_the_ca() {
    let pki = TestPki::generate().expect("pki");
    let device = pki.client("urn:imei:0002").expect("client cert");
    let counts = Arc::new(Counts::default());
    let (server, ca) = (pki.server(), pki.ca());
    let ctx = server_ctx(&counts, Some((server.cert(), server.key(), ca.cert())));
    let cert_pem = device.cert_pem().expect("pem");
    let key_pem = device.key_pem().expect("pem");
    let ca_pem = ca.cert_pem().expect("pem");

    let mut client = DtlsClient::x509(&cert_pem, &key_pem, &ca_pem).expect("x509 client");
    let mut server = Server::new(&ctx);
    pump(&mut client, &mut server, &mut no_loss());
    assert!(client.is_established(), "{:?}", client.state());
    assert!(server.established);
    assert_eq!(client.cipher(), Some("ECDHE-ECDSA-AES128-CCM8"));
    let peer = server.stream.ssl().peer_certificate().expect("client cert");
    assert_eq!(
        peer.subject_name().to_der().ok(),
        device.cert().subject_name().to_der().ok()
    );

    let options = ClientOptions {
        ciphers: Some("ECDHE-ECDSA-AES128-GCM-SHA256".into()),
        ..ClientOptions::default()
    };
    let config = ClientConfig::x509(&cert_pem, &key_pem, &ca_pem, &options).expect("config");
    let mut client = DtlsClient::connect_x509(&config, None).expect("client");
    pump(&mut client, &mut Server::new(&ctx), &mut no_loss());
    assert_eq!(client.cipher(), Some("ECDHE-ECDSA-AES128-GCM-SHA256"));

    // A server certificate from another CA is refused.
    let other = TestPki::generate().expect("pki");
    let other_ca = other.ca().cert_pem().expect("pem");
    let mut client = DtlsClient::x509(&cert_pem, &key_pem, &other_ca).expect("x509 client");
    pump(&mut client, &mut Server::new(&ctx), &mut no_loss());
    match client.state() {
        State::Failed(Failure::Tls(reason)) => {
            assert!(reason.contains("certificate verify failed"), "{reason}")
        }
        other => panic!("expected a verification failure, got {other:?}"),
    }
}
