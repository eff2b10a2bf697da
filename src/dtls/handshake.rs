//! What the DTLS server reads off a handshake while OpenSSL runs it: the ClientHello's
//! cookie, the flights the server sends (suite, encrypt-then-MAC, epoch-1 sequence
//! numbers, the last flight), OpenSSL's retransmission timer, and at the end the record
//! layer the session continues with.

use std::net::SocketAddr;
use std::sync::OnceLock;

use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslRef, SslStream};

use super::hello::ServerHello;
use super::pipe::DatagramPipe;
use super::protect::{EstablishedSession, RecordProtection, Suite, MASTER_SECRET_LEN, RANDOM_LEN};
use super::record::records;
use crate::transmit::Transmits;

/// DTLS record header length (RFC 6347 §4.1).
pub(super) const RECORD_HEADER: usize = 13;
/// DTLS handshake message header length (RFC 6347 §4.2.2).
pub(super) const HANDSHAKE_HEADER: usize = 12;
pub(super) const CONTENT_HANDSHAKE: u8 = 22;
pub(super) const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// Longest wait between retransmissions of a handshake flight (RFC 6347 §4.2.4.1).
pub(super) const RETRANSMIT_MAX_US: u32 = 60_000_000;

/// First retransmission delay of a handshake flight, in µs, kept in the `SSL` object for
/// [`retransmit_timer`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RetransmitInitial(pub(super) u32);

pub(super) fn retransmit_index() -> Index<Ssl, RetransmitInitial> {
    static INDEX: OnceLock<Index<Ssl, RetransmitInitial>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL has ex-data slots to give"))
}

/// OpenSSL's DTLS timer callback: the configured first delay, then doubling up to
/// [`RETRANSMIT_MAX_US`].
pub(super) unsafe extern "C" fn retransmit_timer(
    ssl: *mut openssl_sys::SSL,
    previous_us: libc::c_uint,
) -> libc::c_uint {
    if previous_us > 0 {
        return previous_us.saturating_mul(2).min(RETRANSMIT_MAX_US);
    }
    // SAFETY: OpenSSL passes the live `SSL` the timer belongs to.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    ssl.ex_data(retransmit_index()).map_or(1_000_000, |r| r.0)
}

/// What the server's own handshake datagrams tell: the suite and encrypt-then-MAC from
/// its ServerHello, the next sequence number of epoch 1, and the flight written last.
#[derive(Default)]
pub(super) struct HandshakeTrack {
    pub(super) suite: Option<Suite>,
    pub(super) encrypt_then_mac: bool,
    pub(super) next_write_sequence: u64,
    pub(super) flight: Vec<Vec<u8>>,
}

impl HandshakeTrack {
    /// Notes one datagram the server sent.
    pub(super) fn sent(&mut self, datagram: &[u8]) {
        if self.suite.is_none() {
            if let Ok(hello) = ServerHello::find(datagram) {
                self.suite = Suite::from_id(hello.cipher_suite);
                self.encrypt_then_mac = hello.encrypt_then_mac;
            }
        }
        for record in records(datagram).flatten() {
            if record.epoch() == 1 {
                self.next_write_sequence = self.next_write_sequence.max(record.sequence() + 1);
            }
        }
    }
}

/// The ClientHello at the start of `data`: `Some(cookie length)` when the datagram's first
/// record is an unfragmented-enough epoch-0 ClientHello to read it.
pub fn client_hello_cookie_len(data: &[u8]) -> Option<usize> {
    if data.len() < RECORD_HEADER + HANDSHAKE_HEADER || data[0] != CONTENT_HANDSHAKE {
        return None;
    }
    // Epoch 0 only: a ClientHello inside an established epoch is a renegotiation attempt.
    if data[3..5] != [0, 0] {
        return None;
    }
    let hs = &data[RECORD_HEADER..];
    if hs[0] != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let body = &hs[HANDSHAKE_HEADER..];
    // client_version (2) + random (32), then session_id and cookie with 1-byte lengths.
    let sid_len = usize::from(*body.get(34)?);
    let cookie_len = usize::from(*body.get(35 + sid_len)?);
    Some(cookie_len)
}

/// The record layer of the session `ssl` just established, from its keys and what the
/// server's datagrams showed; `None` for a suite the record layer does not implement.
pub(super) fn record_layer(ssl: &SslRef, track: &HandshakeTrack) -> Option<RecordProtection> {
    let suite = track.suite?;
    let session = ssl.session()?;
    let mut master_secret = [0u8; MASTER_SECRET_LEN];
    if session.master_key(&mut master_secret) != MASTER_SECRET_LEN {
        return None;
    }
    let (mut client_random, mut server_random) = ([0u8; RANDOM_LEN], [0u8; RANDOM_LEN]);
    ssl.client_random(&mut client_random);
    ssl.server_random(&mut server_random);
    let records = RecordProtection::server(&EstablishedSession {
        suite,
        encrypt_then_mac: track.encrypt_then_mac,
        master_secret: &master_secret,
        client_random: &client_random,
        server_random: &server_random,
        epoch: 1,
        next_write_sequence: track.next_write_sequence,
        last_read_sequence: None,
    });
    master_secret.fill(0);
    Some(records)
}

/// Queues every datagram a handshaking `stream` wrote as a transmit to `dest`, noting
/// each in `track`.
pub(super) fn drain_handshake(
    stream: &mut SslStream<DatagramPipe>,
    track: &mut HandshakeTrack,
    dest: SocketAddr,
    tx: &mut Transmits,
) {
    while let Some(d) = stream.get_mut().pop_outbound() {
        track.sent(&d);
        tx.push(dest, &d);
        track.flight.push(d);
    }
}
