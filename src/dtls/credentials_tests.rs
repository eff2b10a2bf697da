//! Tests of [`super`]: the PSK file, loading and reloading credentials, and real DTLS
//! handshakes between an OpenSSL client and [`Credentials::server_context`] over
//! [`DatagramPipe`]s.

use std::fs;
use std::path::{Path, PathBuf};

use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslOptions, SslSession, SslStream,
};

use super::*;
use crate::config::Config;
use crate::dtls::pipe::DatagramPipe;
use crate::dtls::pki::{CertAndKey, TestPki};

// ---- the PSK file ----

fn problems(text: &str) -> Vec<(usize, PskProblem)> {
    PskTable::parse(text)
        .1
        .into_iter()
        .map(|e| (e.line, e.problem))
        .collect()
}

#[test]
fn psk_lines_map_identities_to_keys_and_endpoints() {
    let (table, errors) = PskTable::parse(
        "# devices of building 7\n\
         \n\
         dev-1:00112233445566778899AABBCCDDEEFF\n\
         \t  id-2:0a0B:urn:imei:35\n",
    );
    assert!(errors.is_empty());
    let e = table.get(b"dev-1").expect("dev-1");
    assert_eq!(e.key.len(), 16);
    assert_eq!(e.key[15], 0xff);
    assert_eq!(&*e.endpoint, "dev-1");
    let e = table.get(b"id-2").expect("id-2");
    assert_eq!((&*e.key, &*e.endpoint), (&[0x0a, 0x0b][..], "urn:imei:35"));
    assert_eq!(table.len(), 2);
    assert!(table.get(b"nobody").is_none());

    let (table, errors) = PskTable::parse("id-2:0a0B:ep-two");
    assert!(errors.is_empty());
    let e = table.get(b"id-2").expect("id-2");
    assert_eq!((&*e.key, &*e.endpoint), (&[0x0a, 0x0b][..], "ep-two"));
}

#[test]
fn bad_psk_lines_are_skipped_with_their_line_number() {
    let long_identity = "i".repeat(MAX_PSK_IDENTITY_LEN + 1);
    let long_key = "ab".repeat(MAX_PSK_KEY_LEN + 1);
    let text = format!(
        "ok:0102\n\
         nokey\n\
         badhex:01zz\n\
         odd:012\n\
         {long_identity}:01\n\
         :01\n\
         empty:\n\
         longkey:{long_key}\n\
         noep:01:\n\
         ok2:ABCD\n"
    );
    assert_eq!(
        problems(&text),
        vec![
            (2, PskProblem::MissingKey),
            (3, PskProblem::KeyNotHex),
            (4, PskProblem::KeyOddLength(3)),
            (5, PskProblem::IdentityTooLong(MAX_PSK_IDENTITY_LEN + 1)),
            (6, PskProblem::EmptyIdentity),
            (7, PskProblem::EmptyKey),
            (8, PskProblem::KeyTooLong(MAX_PSK_KEY_LEN + 1)),
            (9, PskProblem::EmptyEndpoint),
        ]
    );
    let (table, _) = PskTable::parse(&text);
    assert_eq!(table.len(), 2);
    let identity = "i".repeat(MAX_PSK_IDENTITY_LEN);
    let (table, errors) = PskTable::parse(&format!("{identity}:01"));
    assert!(errors.is_empty() && table.get(identity.as_bytes()).is_some());
}

#[test]
fn psk_problems_never_echo_the_key() {
    let (_, errors) = PskTable::parse("a:DEADBEEFzz\nb:DEADBEEF0\n");
    for e in errors {
        let shown = e.to_string();
        assert!(!shown.contains("DEADBEEF"), "{shown}");
    }
    let (table, _) = PskTable::parse("a:DEADBEEF");
    let debug = format!("{:?}", table.get(b"a"));
    assert!(!debug.contains("222"), "0xDE as a number: {debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[test]
fn duplicate_identity_last_wins_with_a_warning() {
    let (table, errors) = PskTable::parse("a:01\nb:02\na:03:ep-a\n");
    assert_eq!(
        errors,
        vec![PskLineError {
            line: 3,
            problem: PskProblem::Duplicate(1)
        }]
    );
    assert!(!errors[0].skipped());
    let a = table.get(b"a").expect("a");
    assert_eq!((&*a.key, &*a.endpoint), (&[3u8][..], "ep-a"));
}

#[test]
fn crlf_line_endings_and_line_numbers() {
    let (table, errors) = PskTable::parse("# c\r\n\r\na:01\r\nb:0\r\nc:02:ep-c\r\n");
    assert_eq!(
        errors,
        vec![PskLineError {
            line: 4,
            problem: PskProblem::KeyOddLength(1)
        }]
    );
    assert_eq!(&*table.get(b"a").expect("a").key, &[1u8][..]);
    assert_eq!(&*table.get(b"c").expect("c").endpoint, "ep-c");
}

// ---- loading and reloading ----

struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lwm2m-gw-cred-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn dtls_config(
    psk: Option<&Path>,
    cert: Option<(&Path, &Path)>,
    ca: Option<&Path>,
) -> DtlsListenerConfig {
    let mut c = Config::default_config().dtls;
    c.enabled = true;
    c.psk_file = psk.map(Path::to_owned);
    c.certfile = cert.map(|(c, _)| c.to_owned());
    c.keyfile = cert.map(|(_, k)| k.to_owned());
    c.cacertfile = ca.map(Path::to_owned);
    c
}

#[test]
fn reload_keeps_the_old_table_on_error_and_swaps_on_success() {
    let dir = TempDir::new("reload");
    let psk = dir.file("psk.txt", "a:01\n");
    let creds = Credentials::load(&dtls_config(Some(&psk), None, None)).expect("load");
    assert_eq!(creds.psk_table().len(), 1);

    fs::remove_file(&psk).expect("rm");
    let err = creds.reload_psk().expect_err("missing file").to_string();
    assert!(err.starts_with("listeners.dtls.psk_file:"), "{err}");
    assert!(err.contains("psk.txt"), "{err}");
    assert!(creds.psk_table().get(b"a").is_some(), "old table kept");

    fs::write(&psk, b"b:02\n\xff\xfe:01\n").expect("write");
    let err = creds.reload_psk().expect_err("not text").to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(creds.psk_table().get(b"a").is_some(), "old table kept");

    fs::write(&psk, "b:02\nc:03\nbad\nb:04\n").expect("write");
    let reload = creds.reload_psk().expect("reload");
    assert_eq!(
        reload,
        PskReload {
            entries: 2,
            bad_lines: 1,
            duplicates: 1
        }
    );
    let table = creds.psk_table();
    assert!(table.get(b"a").is_none());
    assert_eq!(&*table.get(b"b").expect("b").key, &[4u8][..]);
}

#[test]
fn load_errors_name_the_key_and_the_file() {
    let dir = TempDir::new("load-errors");
    let pki = TestPki::generate().expect("pki");
    let files = pki.write_to(&dir.0).expect("write");
    let missing = dir.0.join("missing.txt");
    let problem = |c: DtlsListenerConfig| {
        Credentials::load(&c)
            .expect_err("must be refused")
            .to_string()
    };

    let err = problem(dtls_config(Some(&missing), None, None));
    assert!(err.starts_with("listeners.dtls.psk_file:") && err.contains("missing.txt"));

    let junk = dir.file("junk.pem", "not a certificate");
    let err = problem(dtls_config(None, Some((&junk, &files.server_key)), None));
    assert!(
        err.starts_with("listeners.dtls.certfile:") && err.contains("junk.pem"),
        "{err}"
    );
    let err = problem(dtls_config(None, Some((&files.server_cert, &junk)), None));
    assert!(
        err.starts_with("listeners.dtls.keyfile:") && err.contains("junk.pem"),
        "{err}"
    );
    let err = problem(dtls_config(
        None,
        Some((&files.server_cert, &files.server_key)),
        Some(&junk),
    ));
    assert!(err.starts_with("listeners.dtls.cacertfile:"), "{err}");

    let other = pki.client("x").expect("client");
    let (_, other_key) = other.write_to(&dir.0, "other").expect("write");
    let err = problem(dtls_config(
        None,
        Some((&files.server_cert, &other_key)),
        None,
    ));
    assert!(err.starts_with("listeners.dtls.keyfile:"), "{err}");
    assert!(err.contains("not the private key"), "{err}");

    let p384 = p384_self_signed();
    let (cert, key) = p384.write_to(&dir.0, "p384").expect("write");
    let err = problem(dtls_config(None, Some((&cert, &key)), None));
    assert!(err.starts_with("listeners.dtls.certfile:"), "{err}");
    assert!(err.contains("secp384r1") && err.contains("P-256"), "{err}");

    Credentials::load(&dtls_config(
        None,
        Some((&files.server_cert, &files.server_key)),
        Some(&files.ca),
    ))
    .expect("the test PKI loads");
}

/// A certificate on the wrong curve for the ECDHE-ECDSA suites.
fn p384_self_signed() -> CertAndKey {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("group");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, "p384")
        .expect("cn");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    let now = openssl::asn1::Asn1Time::days_from_now(0).expect("now");
    let later = openssl::asn1::Asn1Time::days_from_now(1).expect("later");
    b.set_not_before(&now).expect("nb");
    b.set_not_after(&later).expect("na");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    CertAndKey::new(b.build(), key)
}

// ---- handshakes ----

/// Shuttles datagrams between a client and a server until both finish or one fails.
/// Returns whether each side completed.
fn handshake(
    client: &mut SslStream<DatagramPipe>,
    server: &mut SslStream<DatagramPipe>,
) -> (bool, bool) {
    let mut done = (false, false);
    let mut failed = false;
    // A DTLS 1.2 handshake is at most 4 flights each way; extra rounds let an alert land.
    for _ in 0..12 {
        for (side, stream) in [(0, &mut *client), (1, &mut *server)] {
            match stream.do_handshake() {
                Ok(()) if side == 0 => done.0 = true,
                Ok(()) => done.1 = true,
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                Err(_) => failed = true,
            }
        }
        while let Some(d) = client.get_mut().pop_outbound() {
            server.get_mut().push_inbound(&d);
        }
        while let Some(d) = server.get_mut().pop_outbound() {
            client.get_mut().push_inbound(&d);
        }
        if (done.0 && done.1) || failed {
            // One more pass so the peer of a failure reads the alert and fails too.
            let _ = client.do_handshake();
            let _ = server.do_handshake();
            break;
        }
    }
    (done.0, done.1)
}

fn stream(ctx: &SslContext, accept: bool) -> SslStream<DatagramPipe> {
    let mut ssl = Ssl::new(ctx).expect("ssl");
    ssl.set_mtu(1200).expect("mtu");
    if accept {
        ssl.set_accept_state();
    } else {
        ssl.set_connect_state();
    }
    SslStream::new(ssl, DatagramPipe::default()).expect("stream")
}

fn server_ctx(creds: &Arc<Credentials>) -> SslContext {
    let mut b = creds.server_context().expect("server context");
    // As the listener will: the pipe has no socket to ask for an MTU.
    b.set_options(SslOptions::NO_QUERY_MTU);
    b.build()
}

fn client_builder(suite: &str) -> SslContextBuilder {
    let mut b = SslContextBuilder::new(SslMethod::dtls()).expect("client ctx");
    b.set_options(SslOptions::NO_QUERY_MTU);
    b.set_cipher_list(suite).expect("suite");
    b.set_groups_list("P-256").expect("groups");
    b
}

fn psk_client(suite: &str, identity: &'static str, key: &'static [u8]) -> SslContext {
    let mut b = client_builder(suite);
    b.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
        id_out[..identity.len()].copy_from_slice(identity.as_bytes());
        id_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
    b.build()
}

fn cert_client(suite: &str, pki: &TestPki, own: Option<&CertAndKey>) -> SslContext {
    let mut b = client_builder(suite);
    let mut store = X509StoreBuilder::new().expect("store");
    store.add_cert(pki.ca().cert().to_owned()).expect("ca");
    b.set_verify_cert_store(store.build()).expect("store");
    b.set_verify(SslVerifyMode::PEER);
    if let Some(own) = own {
        b.set_certificate(own.cert()).expect("cert");
        b.set_private_key(own.key()).expect("key");
    }
    b.build()
}

/// Credentials with a PSK file and the test PKI's server certificate and CA.
struct Fixture {
    _dir: TempDir,
    pki: TestPki,
    creds: Arc<Credentials>,
    psk_file: PathBuf,
}

const KEY: &[u8] = b"0123456789abcdef";
const KEY_HEX: &str = "30313233343536373839616263646566";

fn fixture(test: &str) -> Fixture {
    let dir = TempDir::new(test);
    let pki = TestPki::generate().expect("pki");
    let files = pki.write_to(&dir.0).expect("write");
    let psk_file = dir.file("psk.txt", format!("dev-1:{KEY_HEX}:ep-1\n"));
    let creds = Credentials::load(&dtls_config(
        Some(&psk_file),
        Some((&files.server_cert, &files.server_key)),
        Some(&files.ca),
    ))
    .expect("load");
    Fixture {
        _dir: dir,
        pki,
        creds,
        psk_file,
    }
}

fn connect(
    client: &SslContext,
    server: &SslContext,
) -> (SslStream<DatagramPipe>, SslStream<DatagramPipe>, bool) {
    let mut c = stream(client, false);
    let mut s = stream(server, true);
    let (client_done, server_done) = handshake(&mut c, &mut s);
    assert_eq!(client_done, server_done, "both sides agree");
    (c, s, server_done)
}

#[test]
fn psk_handshake_gives_the_mapped_endpoint() {
    let f = fixture("psk-ok");
    let server = server_ctx(&f.creds);
    let (_, s, ok) = connect(&psk_client(PSK_SUITES, "dev-1", KEY), &server);
    assert!(ok);
    let id = identity_of(s.ssl(), &f.creds).expect("identity");
    assert_eq!(
        id,
        Identity::Psk {
            identity: "dev-1".into(),
            endpoint: Arc::from("ep-1")
        }
    );
    assert_eq!((id.security().as_str(), &**id.endpoint()), ("psk", "ep-1"));

    // An identity removed by a reload is no one, even on a completed session.
    fs::write(&f.psk_file, "other:01\n").expect("write");
    f.creds.reload_psk().expect("reload");
    assert_eq!(identity_of(s.ssl(), &f.creds), None);
}

#[test]
fn psk_with_wrong_key_or_unknown_identity_fails() {
    let f = fixture("psk-bad");
    let server = server_ctx(&f.creds);
    let (_, s, ok) = connect(
        &psk_client(PSK_SUITES, "dev-1", b"fedcba9876543210"),
        &server,
    );
    assert!(!ok);
    assert_eq!(identity_of(s.ssl(), &f.creds), None);
    let (_, _, ok) = connect(&psk_client(PSK_SUITES, "nobody", KEY), &server);
    assert!(!ok);
}

#[test]
fn ca_signed_client_certificate_gives_its_cn() {
    let f = fixture("x509-ok");
    let server = server_ctx(&f.creds);
    let device = f.pki.client("urn:imei:4711").expect("client");
    let (_, s, ok) = connect(&cert_client(CERT_SUITES, &f.pki, Some(&device)), &server);
    assert!(ok);
    let id = identity_of(s.ssl(), &f.creds).expect("identity");
    assert_eq!(
        (id.security().as_str(), &**id.endpoint()),
        ("x509", "urn:imei:4711")
    );
}

#[test]
fn client_certificate_not_from_the_ca_fails() {
    let f = fixture("x509-bad");
    let server = server_ctx(&f.creds);
    let impostor = TestPki::self_signed_client("urn:imei:4711").expect("impostor");
    let (_, s, ok) = connect(&cert_client(CERT_SUITES, &f.pki, Some(&impostor)), &server);
    assert!(!ok);
    assert_eq!(identity_of(s.ssl(), &f.creds), None);
}

#[test]
fn certificate_handshake_without_client_certificate_has_no_identity() {
    let f = fixture("x509-none");
    let server = server_ctx(&f.creds);
    let (_, s, ok) = connect(&cert_client(CERT_SUITES, &f.pki, None), &server);
    assert!(ok, "PEER without FAIL_IF_NO_PEER_CERT lets it finish");
    assert_eq!(identity_of(s.ssl(), &f.creds), None);
}

#[test]
fn each_lwm2m_suite_negotiates_alone() {
    let f = fixture("suites");
    let server = server_ctx(&f.creds);
    let device = f.pki.client("ep-cert").expect("client");
    for (suite, standard) in [
        ("PSK-AES128-CCM8", "TLS_PSK_WITH_AES_128_CCM_8"),
        ("PSK-AES128-CBC-SHA256", "TLS_PSK_WITH_AES_128_CBC_SHA256"),
        (
            "ECDHE-ECDSA-AES128-CCM8",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
        ),
        (
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ),
    ] {
        let client = if suite.starts_with("PSK") {
            psk_client(suite, "dev-1", KEY)
        } else {
            cert_client(suite, &f.pki, Some(&device))
        };
        let (_, s, ok) = connect(&client, &server);
        assert!(ok, "{suite}");
        let cipher = s.ssl().current_cipher().expect("cipher");
        assert_eq!(cipher.standard_name(), Some(standard));
        assert!(identity_of(s.ssl(), &f.creds).is_some(), "{suite}");
    }
}

#[test]
fn suites_follow_the_configured_credentials() {
    let dir = TempDir::new("only");
    let pki = TestPki::generate().expect("pki");
    let files = pki.write_to(&dir.0).expect("write");
    let psk = dir.file("psk.txt", format!("dev-1:{KEY_HEX}\n"));
    let psk_only = Credentials::load(&dtls_config(Some(&psk), None, None)).expect("psk");
    let cert_only = Credentials::load(&dtls_config(
        None,
        Some((&files.server_cert, &files.server_key)),
        None,
    ))
    .expect("cert");
    let psk_client = psk_client(PSK_SUITES, "dev-1", KEY);
    let cert_client = cert_client(CERT_SUITES, &pki, None);
    assert!(connect(&psk_client, &server_ctx(&psk_only)).2);
    assert!(!connect(&cert_client, &server_ctx(&psk_only)).2);
    assert!(!connect(&psk_client, &server_ctx(&cert_only)).2);
    assert!(connect(&cert_client, &server_ctx(&cert_only)).2);
}

#[test]
fn tickets_resume_on_another_context_of_the_same_credentials() {
    let f = fixture("resume");
    let device = f.pki.client("ep-r").expect("client");
    let client = cert_client(CERT_SUITES, &f.pki, Some(&device));
    let (c, _, ok) = connect(&client, &server_ctx(&f.creds));
    assert!(ok);
    let session: SslSession = c.ssl().session().expect("session").to_owned();

    // A second shard's context: same ticket keys, so the session resumes.
    let mut ssl = Ssl::new(&client).expect("ssl");
    ssl.set_mtu(1200).expect("mtu");
    ssl.set_connect_state();
    // SAFETY: the session comes from `client`, the context this SSL is made from.
    unsafe { ssl.set_session(&session) }.expect("set session");
    let mut c2 = SslStream::new(ssl, DatagramPipe::default()).expect("stream");
    let mut s2 = stream(&server_ctx(&f.creds), true);
    assert_eq!(handshake(&mut c2, &mut s2), (true, true));
    assert!(s2.ssl().session_reused());
    let id = identity_of(s2.ssl(), &f.creds).expect("identity on a resumed session");
    assert_eq!(&**id.endpoint(), "ep-r");
}

#[test]
fn certificate_endpoint_falls_back_to_a_san() {
    use openssl::hash::MessageDigest;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::X509Builder;
    let pki = TestPki::generate().expect("pki");
    let mut b = X509Builder::new().expect("builder");
    b.set_pubkey(pki.server().key()).expect("pubkey");
    let san = SubjectAlternativeName::new()
        .ip("10.0.0.1")
        .uri("urn:imei:99")
        .dns("dev.example")
        .build(&b.x509v3_context(None, None))
        .expect("san");
    b.append_extension(san).expect("ext");
    b.sign(pki.server().key(), MessageDigest::sha256())
        .expect("sign");
    let cert = b.build();
    assert_eq!(certificate_endpoint(&cert).as_deref(), Some("urn:imei:99"));
    assert_eq!(
        certificate_endpoint(pki.server().cert()).as_deref(),
        Some(crate::dtls::pki::SERVER_CN)
    );
}
