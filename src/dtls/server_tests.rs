//! Tests of [`super::server`]: real OpenSSL clients handshaking with a [`DtlsServer`] in
//! memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, SslStream};

use super::client_hello_cookie_len;
use super::pipe::DatagramPipe;
use super::server::*;
use super::test_support::*;
use super::Security;

fn server(now: Instant) -> DtlsServer {
    DtlsServer::new(
        server_context(),
        identify(),
        ahash::RandomState::with_seeds(1, 2, 3, 4),
        limits(),
        now,
    )
    .expect("server")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 1, 2, 3], port))
}

/// Datagrams the server queued for `to`.
fn take_for(server: &mut DtlsServer, to: SocketAddr) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    server.drain_transmits(|dest, bytes| {
        assert_eq!(dest, to, "every transmit goes to the peer that caused it");
        out.push(bytes.to_vec());
    });
    out
}

/// Runs the handshake to completion (or failure); the number of round trips it took.
fn handshake(
    server: &mut DtlsServer,
    client: &mut SslStream<DatagramPipe>,
    from: SocketAddr,
    now: Instant,
) -> Result<usize, ErrorCode> {
    let mut app = AppData::default();
    for round in 1..20 {
        let result = client.do_handshake();
        while let Some(d) = client.get_mut().pop_outbound() {
            assert!(server.handle_datagram(now, from, &d, &mut app).is_none());
        }
        for d in take_for(server, from) {
            client.get_mut().push_inbound(&d);
        }
        match result {
            Ok(()) => return Ok(round),
            Err(e) if e.code() == ErrorCode::WANT_READ => {}
            Err(e) => return Err(e.code()),
        }
    }
    Err(ErrorCode::WANT_READ)
}

#[test]
fn client_hello_without_cookie_gets_hello_verify_request_and_no_state() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = client("dev-1", KEY);
    let _ = c.do_handshake();
    let hello = c.get_mut().pop_outbound().expect("ClientHello");
    assert_eq!(client_hello_cookie_len(&hello), Some(0));
    let mut app = AppData::default();
    assert!(s.handle_datagram(now, addr(1), &hello, &mut app).is_none());
    let out = take_for(&mut s, addr(1));
    assert_eq!(out.len(), 1);
    // A HelloVerifyRequest: handshake record, message type 3.
    assert_eq!((out[0][0], out[0][13]), (22, 3));
    assert_eq!(s.stats().hello_verify_requests, 1);
    assert_eq!((s.sessions(), s.handshakes_in_progress()), (0, 0));
}

#[test]
fn psk_handshake_then_records_both_ways() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = client("dev-1", KEY);
    handshake(&mut s, &mut c, addr(2), now).expect("handshake");
    assert!(s.has_session(addr(2)));
    assert_eq!(s.stats().handshakes, 1);
    assert_eq!(s.handshakes_in_progress(), 0);

    c.ssl_write(b"coap request").expect("client write");
    let record = c.get_mut().pop_outbound().expect("record");
    let mut app = AppData::default();
    let origin = s
        .handle_datagram(now, addr(2), &record, &mut app)
        .expect("application data");
    assert_eq!(origin.security, Security::Psk);
    assert_eq!(origin.identity, s.identity_key("dev-1"));
    assert_ne!(origin.identity, s.identity_key("dev-2"));
    assert_eq!(
        app.records().collect::<Vec<_>>(),
        vec![&b"coap request"[..]]
    );

    assert!(s.seal(addr(2), b"coap response"));
    for d in take_for(&mut s, addr(2)) {
        c.get_mut().push_inbound(&d);
    }
    let mut buf = [0u8; 64];
    let n = c.ssl_read(&mut buf).expect("client read");
    assert_eq!(&buf[..n], b"coap response");
    assert!(!s.seal(addr(3), b"nobody"), "no session with that address");
}

#[test]
fn wrong_key_fails_and_leaves_nothing() {
    let now = Instant::now();
    let mut s = server(now);
    // A wrong key shows only in the client's Finished, which then does not authenticate:
    // DTLS drops such records silently, so the handshake ends at the timeout.
    let mut c = client("dev-1", *b"fedcba9876543210");
    let _ = handshake(&mut s, &mut c, addr(4), now);
    assert!(!s.has_session(addr(4)));
    s.handle_timeout(now + Duration::from_secs(31));
    assert_eq!(s.stats().handshakes_timed_out, 1);
    assert_eq!((s.sessions(), s.handshakes_in_progress()), (0, 0));

    // An unknown identity is refused at once with an alert.
    let mut c = client("stranger", KEY);
    assert!(handshake(&mut s, &mut c, addr(5), now).is_err());
    assert_eq!(s.stats().handshakes_failed, 1);
    assert_eq!((s.sessions(), s.handshakes_in_progress()), (0, 0));
}

#[test]
fn spoofed_client_hello_flood_keeps_no_state() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = client("dev-1", KEY);
    let _ = c.do_handshake();
    let hello = c.get_mut().pop_outbound().expect("ClientHello");
    let mut app = AppData::default();
    for i in 0..5000u16 {
        s.handle_datagram(now, addr(10_000 + i), &hello, &mut app);
    }
    assert_eq!(s.stats().hello_verify_requests, 5000);
    assert_eq!((s.sessions(), s.handshakes_in_progress()), (0, 0));
    assert_eq!(s.pending_transmits(), 5000);
    // A real client still gets through.
    s.drain_transmits(|_, _| {});
    let mut c = client("dev-1", KEY);
    handshake(&mut s, &mut c, addr(7), now).expect("handshake after the flood");
}

#[test]
fn garbage_from_strangers_and_peers_is_counted_not_fatal() {
    let now = Instant::now();
    let mut s = server(now);
    let mut app = AppData::default();
    for junk in [
        &b""[..],
        b"\x16",
        b"\x17\xfe\xfd\0\x01\0\0\0\0\0\x01\0\x05hello",
        &[22; 40],
    ] {
        assert!(s.handle_datagram(now, addr(8), junk, &mut app).is_none());
    }
    let mut c = client("dev-1", KEY);
    handshake(&mut s, &mut c, addr(9), now).expect("handshake");
    assert!(s
        .handle_datagram(
            now,
            addr(9),
            b"\x17\xfe\xfd\0\x01\0\0\0\0\0\x09\0\x03abc",
            &mut app
        )
        .is_none());
    // The session survives a forged record.
    c.ssl_write(b"still here").expect("write");
    let record = c.get_mut().pop_outbound().expect("record");
    assert!(s.handle_datagram(now, addr(9), &record, &mut app).is_some());
}

#[test]
fn lost_flight_is_retransmitted_and_stale_handshakes_time_out() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = client("dev-1", KEY);
    let mut app = AppData::default();
    // ClientHello → HelloVerifyRequest → ClientHello with cookie → server flight (lost).
    let _ = c.do_handshake();
    let hello = c.get_mut().pop_outbound().expect("hello");
    s.handle_datagram(now, addr(11), &hello, &mut app);
    for d in take_for(&mut s, addr(11)) {
        c.get_mut().push_inbound(&d);
    }
    let _ = c.do_handshake();
    let hello2 = c.get_mut().pop_outbound().expect("hello with cookie");
    assert!(client_hello_cookie_len(&hello2).is_some_and(|n| n > 0));
    s.handle_datagram(now, addr(11), &hello2, &mut app);
    assert_eq!(s.handshakes_in_progress(), 1);
    let lost = take_for(&mut s, addr(11));
    assert!(!lost.is_empty());
    let at = s.poll_timeout().expect("retransmission armed");
    assert!(at > now && at <= now + RETRANSMIT);
    std::thread::sleep(RETRANSMIT);
    s.handle_timeout(at);
    let again = take_for(&mut s, addr(11));
    assert!(!again.is_empty(), "the flight is sent again");
    s.handle_timeout(now + Duration::from_secs(31));
    assert_eq!(s.handshakes_in_progress(), 0);
    assert_eq!(s.stats().handshakes_timed_out, 1);
}

#[test]
fn idle_sessions_are_evicted() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = client("dev-1", KEY);
    handshake(&mut s, &mut c, addr(12), now).expect("handshake");
    s.handle_timeout(now + Duration::from_secs(599));
    assert!(s.has_session(addr(12)));
    s.handle_timeout(now + Duration::from_secs(601));
    assert!(!s.has_session(addr(12)));
    assert_eq!(s.stats().idle_evicted, 1);
}

#[test]
fn new_handshake_from_a_session_address_replaces_it_only_with_a_cookie() {
    let now = Instant::now();
    let mut s = server(now);
    let mut c = client("dev-1", KEY);
    handshake(&mut s, &mut c, addr(13), now).expect("handshake");
    // A spoofed ClientHello (no cookie) from the session's address changes nothing.
    let mut other = client("dev-1", KEY);
    let _ = other.do_handshake();
    let hello = other.get_mut().pop_outbound().expect("hello");
    let mut app = AppData::default();
    s.handle_datagram(now, addr(13), &hello, &mut app);
    assert!(s.has_session(addr(13)));
    s.drain_transmits(|_, _| {});
    // The real client restarting completes a new handshake.
    let mut again = client("dev-1", KEY);
    handshake(&mut s, &mut again, addr(13), now).expect("second handshake");
    assert!(s.has_session(addr(13)));
    assert_eq!(s.stats().handshakes, 2);
}
