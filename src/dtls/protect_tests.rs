//! Record protection against itself and against a real OpenSSL DTLS 1.2 handshake.

use std::io::{Read, Write};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509Name, X509};

use super::*;
use crate::dtls::hello::ServerHello;
use crate::dtls::pipe::DatagramPipe;
use crate::dtls::record::records;

/// `SSL_OP_NO_ENCRYPT_THEN_MAC` (OpenSSL's `ssl.h`, bit 19); openssl-sys does not export it.
const SSL_OP_NO_ENCRYPT_THEN_MAC: u64 = 1 << 19;

/// The pre-shared key both ends use in PSK tests.
const PSK: [u8; 16] = *b"lwm2m-test-psk-1";

/// A ~100-byte CoAP payload: a 2.05 Content notification with a TLV body.
const COAP: &[u8] = b"\x54\x45\x60\x7f\x00\x00\x00\x01\x61\x01\x62\x2d\x16\xff\
    \xc8\x00\x14\x4f\x70\x65\x6e\x20\x4d\x6f\x62\x69\x6c\x65\x20\x41\x6c\x6c\x69\x61\x6e\x63\x65\
    \xc8\x01\x16\x4c\x69\x67\x68\x74\x77\x65\x69\x67\x68\x74\x20\x4d\x32\x4d\x20\x43\x6c\x69\x65\
    \x6e\x74\xc8\x02\x09\x33\x34\x35\x30\x30\x30\x31\x32\x33\xc3\x03\x31\x2e\x30\x86\x06\x41\x00\
    \x01\x41\x01\x05";

fn session<'a>(
    suite: Suite,
    encrypt_then_mac: bool,
    secret: &'a [u8; 48],
    client_random: &'a [u8; 32],
    server_random: &'a [u8; 32],
) -> EstablishedSession<'a> {
    EstablishedSession {
        suite,
        encrypt_then_mac,
        master_secret: secret,
        client_random,
        server_random,
        epoch: 1,
        next_write_sequence: 1,
        last_read_sequence: Some(0),
    }
}

/// Both ends of a session with fixed keys: (server, client).
fn fixed_pair(suite: Suite, encrypt_then_mac: bool) -> (RecordProtection, RecordProtection) {
    let s = session(suite, encrypt_then_mac, &[7; 48], &[1; 32], &[2; 32]);
    (RecordProtection::server(&s), RecordProtection::client(&s))
}

/// Every suite, and CBC both ways.
fn configurations() -> impl Iterator<Item = (Suite, bool)> {
    Suite::ALL
        .into_iter()
        .map(|s| (s, true))
        .chain([(Suite::PskAes128CbcSha256, false)])
}

#[test]
fn prf_matches_the_published_vector() {
    // The TLS 1.2 PRF (SHA-256) vector circulated on the TLS WG list; OpenSSL's
    // `openssl kdf ... TLS1-PRF` gives the same bytes.
    let secret = [
        0x9b, 0xbe, 0x43, 0x6b, 0xa9, 0x40, 0xf0, 0x17, 0xb1, 0x76, 0x52, 0x84, 0x9a, 0x71, 0xdb,
        0x35,
    ];
    let seed = [
        0xa0, 0xba, 0x9f, 0x93, 0x6c, 0xda, 0x31, 0x18, 0x27, 0xa6, 0xf7, 0x96, 0xff, 0xd5, 0x19,
        0x8c,
    ];
    let expected = "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a\
                    6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab\
                    4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701\
                    87347b66";
    let expected: Vec<u8> = (0..expected.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&expected[i..i + 2], 16).expect("hex"))
        .collect();
    let mut out = [0u8; 100];
    prf_sha256(&secret, b"test label", &seed, &mut out);
    assert_eq!(out[..], expected[..]);
}

#[test]
fn state_is_small() {
    let size = std::mem::size_of::<RecordProtection>();
    assert!(size <= 256, "RecordProtection is {size} bytes");
}

#[test]
fn suite_ids_round_trip() {
    for s in Suite::ALL {
        assert_eq!(Suite::from_id(s.id()), Some(s));
    }
    assert_eq!(Suite::from_id(0xc02f), None);
}

#[test]
fn replay_window_slides() {
    let mut w = ReplayWindow::default();
    assert!(w.check(5).is_ok());
    w.accept(5);
    assert_eq!(w.check(5), Err(ProtectError::Replayed(5)));
    assert!(w.check(4).is_ok(), "below, never seen");
    w.accept(100);
    assert!(w.check(37).is_ok(), "63 behind: inside the window");
    assert_eq!(w.check(36), Err(ProtectError::Replayed(36)), "64 behind");
    assert_eq!(w.check(5), Err(ProtectError::Replayed(5)));
    w.accept(37);
    assert_eq!(w.check(37), Err(ProtectError::Replayed(37)));
    w.accept(101);
    assert_eq!(w.check(100), Err(ProtectError::Replayed(100)));
    assert_eq!(w.check(37), Err(ProtectError::Replayed(37)), "fell out");
    assert!(w.check(38).is_ok(), "63 behind, never seen");
    w.accept(1000);
    assert!(w.check(999).is_ok());
    assert_eq!(w.check(101), Err(ProtectError::Replayed(101)));
    // Built from the handshake: the client's Finished and everything before it is seen.
    let w = ReplayWindow { top: 0, seen: !0 };
    assert_eq!(w.check(0), Err(ProtectError::Replayed(0)));
    assert!(w.check(1).is_ok());
}

#[test]
fn round_trip_every_suite_against_itself() {
    for (suite, etm) in configurations() {
        let (mut server, mut client) = fixed_pair(suite, etm);
        for len in [0, 1, 15, 16, 17, 31, 32, 100, 1024] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut wire = Vec::new();
            client
                .seal(ContentType::APPLICATION_DATA, &payload, &mut wire)
                .expect("seal");
            assert_eq!(wire.len(), client.sealed_len(len), "{suite:?} {etm} {len}");
            let (record, rest) = Record::parse(&wire).expect("one record");
            assert!(rest.is_empty());
            let mut plain = vec![0xee];
            let ty = server.open(&record, &mut plain).expect("open");
            assert_eq!(ty, ContentType::APPLICATION_DATA);
            assert_eq!(plain[1..], payload[..], "{suite:?} {etm} {len}");
        }
        // And back, two records packed in one datagram.
        let mut wire = Vec::new();
        server
            .seal(ContentType::ALERT, &[1, 0], &mut wire)
            .expect("seal");
        server
            .seal(ContentType::APPLICATION_DATA, COAP, &mut wire)
            .expect("seal");
        let mut got = Vec::new();
        for r in records(&wire) {
            let r = r.expect("record");
            let mut plain = Vec::new();
            got.push((client.open(&r, &mut plain).expect("open"), plain));
        }
        assert_eq!(
            got,
            [
                (ContentType::ALERT, vec![1, 0]),
                (ContentType::APPLICATION_DATA, COAP.to_vec())
            ]
        );
    }
}

#[test]
fn seal_limits() {
    let (mut server, _) = fixed_pair(Suite::PskAes128Ccm8, false);
    let mut out = vec![9];
    let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
    assert_eq!(
        server.seal(ContentType::APPLICATION_DATA, &big, &mut out),
        Err(ProtectError::PayloadTooLong(MAX_PLAINTEXT_LEN + 1))
    );
    assert_eq!(out, [9]);
    server.write_seq = MAX_SEQUENCE;
    server
        .seal(ContentType::APPLICATION_DATA, b"last", &mut out)
        .expect("the last sequence number is usable");
    assert_eq!(
        server.seal(ContentType::APPLICATION_DATA, b"x", &mut out),
        Err(ProtectError::SequenceExhausted)
    );
}

#[test]
fn short_and_misaligned_fragments_are_rejected() {
    for (suite, etm) in configurations() {
        let (mut server, mut client) = fixed_pair(suite, etm);
        let mut wire = Vec::new();
        client
            .seal(ContentType::APPLICATION_DATA, COAP, &mut wire)
            .expect("seal");
        for cut in 0..wire.len() - HEADER_LEN {
            let mut short = wire[..HEADER_LEN + cut].to_vec();
            short[11..13].copy_from_slice(&(cut as u16).to_be_bytes());
            let (r, _) = Record::parse(&short).expect("header");
            let mut out = vec![1, 2, 3];
            assert!(server.open(&r, &mut out).is_err(), "{suite:?} {etm} {cut}");
            assert_eq!(out, [1, 2, 3], "out untouched on error");
        }
    }
}

// ---- Against OpenSSL -------------------------------------------------------------------

/// An OpenSSL client and server that completed a DTLS 1.2 handshake in memory, and every
/// datagram each wrote.
struct Handshake {
    client: SslStream<DatagramPipe>,
    server: SslStream<DatagramPipe>,
    client_sent: Vec<Vec<u8>>,
    server_sent: Vec<Vec<u8>>,
}

/// OpenSSL's name for each suite.
fn openssl_name(suite: Suite) -> &'static str {
    match suite {
        Suite::PskAes128Ccm8 => "PSK-AES128-CCM8",
        Suite::PskAes128CbcSha256 => "PSK-AES128-CBC-SHA256",
        Suite::EcdheEcdsaAes128Ccm8 => "ECDHE-ECDSA-AES128-CCM8",
        Suite::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
    }
}

fn is_psk(suite: Suite) -> bool {
    matches!(suite, Suite::PskAes128Ccm8 | Suite::PskAes128CbcSha256)
}

/// A self-signed P-256 certificate and its key.
fn ec_identity() -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("pkey");
    let mut name = X509Name::builder().expect("name");
    name.append_entry_by_text("CN", "lwm2m-gateway.test")
        .expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    let serial = BigNum::from_u32(1)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("now"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("tomorrow"))
        .expect("not after");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    (b.build(), key)
}

/// A DTLS 1.2-only context offering just `suite`.
fn context(suite: Suite, security_level: Option<u32>) -> SslContextBuilder {
    let mut ctx = SslContext::builder(SslMethod::dtls()).expect("DTLS context");
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("min version");
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))
        .expect("max version");
    ctx.set_cipher_list(openssl_name(suite))
        .expect("cipher list");
    if let Some(level) = security_level {
        ctx.set_security_level(level);
    }
    ctx
}

fn contexts(suite: Suite, no_etm: bool, security_level: Option<u32>) -> (SslContext, SslContext) {
    let mut client = context(suite, security_level);
    let mut server = context(suite, security_level);
    if no_etm {
        client.set_options(SslOptions::from_bits_retain(
            SSL_OP_NO_ENCRYPT_THEN_MAC as _,
        ));
    }
    if is_psk(suite) {
        client.set_psk_client_callback(|_, _hint, identity, psk| {
            let id = b"urn:imei:490154203237518\0";
            identity[..id.len()].copy_from_slice(id);
            psk[..PSK.len()].copy_from_slice(&PSK);
            Ok(PSK.len())
        });
        server.set_psk_server_callback(|_, _identity, psk| {
            psk[..PSK.len()].copy_from_slice(&PSK);
            Ok(PSK.len())
        });
    } else {
        let (cert, key) = ec_identity();
        server.set_certificate(&cert).expect("certificate");
        server.set_private_key(&key).expect("private key");
        client.set_verify(SslVerifyMode::NONE);
    }
    (client.build(), server.build())
}

/// Whether an OpenSSL handshake step only waits for datagrams.
fn pending(r: Result<(), openssl::ssl::Error>) -> Result<bool, openssl::ssl::Error> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if e.code() == ErrorCode::WANT_READ => Ok(true),
        Err(e) => Err(e),
    }
}

/// Runs a handshake between OpenSSL ends offering only `suite`.
fn handshake(
    suite: Suite,
    no_etm: bool,
    security_level: Option<u32>,
) -> Result<Handshake, openssl::ssl::Error> {
    let (client_ctx, server_ctx) = contexts(suite, no_etm, security_level);
    let mut client = SslStream::new(
        Ssl::new(&client_ctx).expect("client SSL"),
        DatagramPipe::default(),
    )
    .expect("client stream");
    let mut server = SslStream::new(
        Ssl::new(&server_ctx).expect("server SSL"),
        DatagramPipe::default(),
    )
    .expect("server stream");
    let (mut client_sent, mut server_sent) = (Vec::new(), Vec::new());
    let (mut client_busy, mut server_busy) = (true, true);
    for _ in 0..20 {
        if client_busy {
            client_busy = pending(client.connect())?;
        }
        while let Some(d) = client.get_mut().pop_outbound() {
            server.get_mut().push_inbound(&d);
            client_sent.push(d);
        }
        if server_busy {
            server_busy = pending(server.accept())?;
        }
        while let Some(d) = server.get_mut().pop_outbound() {
            client.get_mut().push_inbound(&d);
            server_sent.push(d);
        }
        if !client_busy && !server_busy {
            return Ok(Handshake {
                client,
                server,
                client_sent,
                server_sent,
            });
        }
    }
    panic!("{suite:?}: handshake did not finish in 20 rounds");
}

/// The highest sequence number of the records in `datagrams` in `epoch`.
fn last_sequence(datagrams: &[Vec<u8>], epoch: u16) -> Option<u64> {
    datagrams
        .iter()
        .flat_map(|d| records(d))
        .filter_map(Result::ok)
        .filter(|r| r.epoch() == epoch)
        .map(|r| r.sequence())
        .max()
}

/// The gateway's state for the server end of `hs`, built as production will: secrets from
/// the server `SSL`, suite and ETM from its ServerHello datagram, sequence numbers from
/// the records each side wrote in epoch 1.
fn take_over(hs: &Handshake) -> RecordProtection {
    let ssl = hs.server.ssl();
    let mut secret = [0u8; MASTER_SECRET_LEN];
    let session = ssl.session().expect("session");
    assert_eq!(session.master_key(&mut secret), MASTER_SECRET_LEN);
    let (mut client_random, mut server_random) = ([0u8; 32], [0u8; 32]);
    assert_eq!(ssl.client_random(&mut client_random), 32);
    assert_eq!(ssl.server_random(&mut server_random), 32);
    let hello = hs
        .server_sent
        .iter()
        .find_map(|d| ServerHello::find(d).ok())
        .expect("a ServerHello among the server's datagrams");
    assert_eq!(hello.random, server_random);
    let suite = Suite::from_id(hello.cipher_suite).expect("a suite we implement");
    let next_write = last_sequence(&hs.server_sent, 1).expect("server Finished") + 1;
    RecordProtection::server(&EstablishedSession {
        suite,
        encrypt_then_mac: hello.encrypt_then_mac,
        master_secret: &secret,
        client_random: &client_random,
        server_random: &server_random,
        epoch: 1,
        next_write_sequence: next_write,
        last_read_sequence: last_sequence(&hs.client_sent, 1),
    })
}

/// The client writes `payload`; returns the one datagram it sent.
fn client_send(hs: &mut Handshake, payload: &[u8]) -> Vec<u8> {
    assert_eq!(
        hs.client.write(payload).expect("client write"),
        payload.len()
    );
    let d = hs.client.get_mut().pop_outbound().expect("a datagram");
    assert!(!hs.client.get_mut().has_outbound());
    d
}

/// Opens the single record of `datagram`.
fn open_one(state: &mut RecordProtection, datagram: &[u8]) -> Result<Vec<u8>, ProtectError> {
    let mut rs = records(datagram);
    let r = rs.next().expect("a record").expect("a valid record");
    assert!(rs.next().is_none());
    let mut out = Vec::new();
    let ty = state.open(&r, &mut out)?;
    assert_eq!(ty, ContentType::APPLICATION_DATA);
    Ok(out)
}

/// Every check of the brief against one OpenSSL session.
fn check_against_openssl(suite: Suite, no_etm: bool) {
    let mut hs = handshake(suite, no_etm, None).unwrap_or_else(|e| panic!("{suite:?}: {e}"));
    let cipher = hs.server.ssl().current_cipher().expect("cipher");
    assert_eq!(cipher.name(), openssl_name(suite));
    let mut state = take_over(&hs);
    assert_eq!(state.suite(), suite);
    if let Keys::Cbc {
        encrypt_then_mac, ..
    } = state.keys
    {
        assert_eq!(
            encrypt_then_mac, !no_etm,
            "ETM is OpenSSL's default for DTLS"
        );
    }

    // Client → gateway.
    let d = client_send(&mut hs, COAP);
    assert_eq!(open_one(&mut state, &d).expect("open"), COAP, "{suite:?}");
    assert_eq!(open_one(&mut state, &d), Err(ProtectError::Replayed(1)));

    // Gateway → client, twice, the second datagram packing two records.
    let mut wire = Vec::new();
    state
        .seal(ContentType::APPLICATION_DATA, COAP, &mut wire)
        .expect("seal");
    hs.client.get_mut().push_inbound(&wire);
    let mut buf = [0u8; 2048];
    let n = hs
        .client
        .read(&mut buf)
        .expect("client reads what we sealed");
    assert_eq!(&buf[..n], COAP);
    wire.clear();
    for p in [&b"first"[..], b"second"] {
        state
            .seal(ContentType::APPLICATION_DATA, p, &mut wire)
            .expect("seal");
    }
    hs.client.get_mut().push_inbound(&wire);
    for p in [&b"first"[..], b"second"] {
        let n = hs.client.read(&mut buf).expect("packed record");
        assert_eq!(&buf[..n], p);
    }

    // Tampering: every single-bit flip of a genuine record is refused, and refusing it
    // leaves the window open for the genuine one.
    let d = client_send(&mut hs, COAP);
    for bit in 0..d.len() * 8 {
        let mut t = d.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        let opened = records(&t)
            .filter_map(Result::ok)
            .any(|r| state.open(&r, &mut Vec::new()).is_ok());
        assert!(!opened, "{suite:?}: flipped bit {bit} accepted");
    }
    // Another epoch: refused by the epoch check, whatever its MAC.
    for epoch in [0u16, 2] {
        let mut t = d.clone();
        t[3..5].copy_from_slice(&epoch.to_be_bytes());
        assert_eq!(
            open_one(&mut state, &t),
            Err(ProtectError::WrongEpoch {
                expected: 1,
                got: epoch
            })
        );
    }
    assert_eq!(
        open_one(&mut state, &d).expect("genuine after forgeries"),
        COAP
    );

    // Out of order within the window: each accepted once.
    let sent: Vec<Vec<u8>> = (0..5u8)
        .map(|i| client_send(&mut hs, &[b'a' + i; 10]))
        .collect();
    for i in [3, 0, 4, 1, 2] {
        assert_eq!(
            open_one(&mut state, &sent[i]).expect("reordered"),
            [b'a' + i as u8; 10]
        );
    }
    for d in &sent {
        assert!(matches!(
            open_one(&mut state, d),
            Err(ProtectError::Replayed(_))
        ));
    }
    // The server's own Finished-era records are not replayable at the gateway either.
    let finished = hs
        .client_sent
        .iter()
        .flat_map(|d| records(d))
        .filter_map(Result::ok)
        .find(|r| r.epoch() == 1)
        .expect("client Finished");
    assert_eq!(
        state.open(&finished, &mut Vec::new()),
        Err(ProtectError::Replayed(finished.sequence()))
    );
}

#[test]
fn openssl_psk_aes128_ccm8() {
    check_against_openssl(Suite::PskAes128Ccm8, false);
}

#[test]
fn openssl_psk_aes128_cbc_sha256_encrypt_then_mac() {
    check_against_openssl(Suite::PskAes128CbcSha256, false);
}

#[test]
fn openssl_psk_aes128_cbc_sha256_mac_then_encrypt() {
    check_against_openssl(Suite::PskAes128CbcSha256, true);
}

#[test]
fn openssl_ecdhe_ecdsa_aes128_ccm8() {
    check_against_openssl(Suite::EcdheEcdsaAes128Ccm8, false);
}

#[test]
fn openssl_ecdhe_ecdsa_aes128_gcm_sha256() {
    check_against_openssl(Suite::EcdheEcdsaAes128GcmSha256, false);
}

/// What OpenSSL's security levels do to these suites (measured with OpenSSL 3.0): CCM_8's
/// 64-bit tag does not lower it below the default level 2; level 3 demands forward
/// secrecy, which the PSK suites do not have.
#[test]
fn openssl_security_levels() {
    let default = context(Suite::PskAes128Ccm8, None).build().security_level();
    for suite in Suite::ALL {
        assert!(
            handshake(suite, false, Some(default)).is_ok(),
            "{suite:?} at the default level {default}"
        );
    }
    assert!(handshake(Suite::PskAes128Ccm8, false, Some(3)).is_err());
    assert!(handshake(Suite::PskAes128CbcSha256, false, Some(3)).is_err());
    assert!(handshake(Suite::EcdheEcdsaAes128Ccm8, false, Some(3)).is_ok());
}
