//! One shard's DTLS server fed arbitrary datagrams: from the address of an established
//! PSK session, from one in the middle of its handshake, and from strangers, with the
//! clock moving between them. Nothing may panic, every transmit is a non-empty datagram
//! to the address that caused it or to a peer, and the counts stay consistent.
//!
//! Input: repeated `[selector][len][bytes...]`; the selector's low two bits pick the
//! source, the next bits how far the clock moves first.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::dtls::credentials::Identity;
use lwm2m_gateway::dtls::pipe::DatagramPipe;
use lwm2m_gateway::dtls::server::{enable_cookies, AppData, DtlsLimits, DtlsServer};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream};

const KEY: &[u8; 16] = b"0123456789abcdef";
const SUITES: &str = "PSK-AES128-CCM8:PSK-AES128-CBC-SHA256";

fn server(now: Instant) -> DtlsServer {
    static CONTEXT: OnceLock<SslContext> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(server_context).clone();
    let identify = Arc::new(|ssl: &openssl::ssl::SslRef| {
        ssl.psk_identity().map(|_| Identity::Psk {
            identity: "dev".into(),
            endpoint: Arc::from("dev"),
        })
    });
    let limits = DtlsLimits {
        handshake_timeout: Duration::from_secs(30),
        session_idle: Duration::from_secs(300),
        retransmit_initial: Duration::from_secs(1),
    };
    DtlsServer::new(
        ctx,
        identify,
        ahash::RandomState::with_seeds(1, 2, 3, 4),
        limits,
        now,
    )
    .expect("server")
}

fn server_context() -> SslContext {
    let mut b = SslContext::builder(SslMethod::dtls()).expect("context");
    b.set_cipher_list(SUITES).expect("suites");
    b.set_psk_server_callback(|_, identity, key| {
        if identity == Some(&b"dev"[..]) {
            key[..KEY.len()].copy_from_slice(KEY);
            Ok(KEY.len())
        } else {
            Ok(0)
        }
    });
    enable_cookies(&mut b);
    b.build()
}

fn client() -> SslStream<DatagramPipe> {
    static CONTEXT: OnceLock<SslContext> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(client_context);
    let mut ssl = Ssl::new(ctx).expect("ssl");
    ssl.set_connect_state();
    ssl.set_mtu(1280).expect("mtu");
    SslStream::new(ssl, DatagramPipe::default()).expect("stream")
}

fn client_context() -> SslContext {
    let mut b = SslContext::builder(SslMethod::dtls()).expect("context");
    b.set_cipher_list(SUITES).expect("suites");
    b.set_psk_client_callback(|_, _, id, key| {
        id[..4].copy_from_slice(b"dev\0");
        key[..KEY.len()].copy_from_slice(KEY);
        Ok(KEY.len())
    });
    b.build()
}

/// Runs `rounds` client steps against the server from `from`.
fn drive(
    s: &mut DtlsServer,
    c: &mut SslStream<DatagramPipe>,
    from: SocketAddr,
    now: Instant,
    rounds: usize,
) {
    let mut app = AppData::default();
    for _ in 0..rounds {
        let _ = c.do_handshake();
        while let Some(d) = c.get_mut().pop_outbound() {
            s.handle_datagram(now, from, &d, &mut app);
        }
        s.drain_transmits(|to, d| {
            assert_eq!(to, from);
            c.get_mut().push_inbound(d);
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut s = server(now);
    let established: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
    let handshaking: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
    let sources = [
        established,
        handshaking,
        "10.0.0.3:5000".parse().expect("addr"),
        "[2001:db8::1]:5000".parse().expect("addr"),
    ];
    let mut done = client();
    drive(&mut s, &mut done, established, now, 6);
    assert!(s.has_session(established));
    let mut half = client();
    drive(&mut s, &mut half, handshaking, now, 1);
    // The cookie round trip is done; its ClientHello with the cookie starts the handshake.
    let _ = half.do_handshake();
    let mut app = AppData::default();
    while let Some(d) = half.get_mut().pop_outbound() {
        s.handle_datagram(now, handshaking, &d, &mut app);
    }

    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (datagram, after) = tail.split_at(n);
        rest = after;
        now += Duration::from_millis(u64::from(selector >> 2) * 37);
        s.handle_timeout(now);
        let from = sources[usize::from(selector & 3)];
        let origin = s.handle_datagram(now, from, datagram, &mut app);
        if origin.is_some() {
            assert!(app.records().count() > 0, "an origin comes with plaintext");
        }
        s.drain_transmits(|to, d| {
            assert!(!d.is_empty(), "no empty datagrams");
            assert!(sources.contains(&to), "transmit to {to}");
        });
        assert!(s.sessions() <= 4 && s.handshakes_in_progress() <= 4);
    }
    // The established session still works unless an authenticated close ended it.
    if s.has_session(established) {
        assert!(s.seal(established, b"still here"));
    }
});
