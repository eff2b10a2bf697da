//! One shard's DTLS server: the peer table in front of the CoAP decode.
//!
//! quinn-proto's `Endpoint` routes each datagram to a connection before anything is
//! decoded; [`DtlsServer`] is that step for DTLS. A datagram from an address with a
//! session is opened with that session's keys and its plaintext handed on together with
//! the identity the handshake proved. A datagram from an unknown address can only be a
//! ClientHello, and costs no state until it carries a valid cookie:
//!
//! 1. A ClientHello without a valid cookie is answered by one shared listening `SSL` object
//!    (OpenSSL's `DTLSv1_listen`) with a HelloVerifyRequest whose cookie is an HMAC of the
//!    address ([`super::cookie`]). Nothing is remembered; a flood of spoofed ClientHellos
//!    costs an HMAC each and no memory.
//! 2. A ClientHello with a valid cookie turns the listening object into that peer's
//!    handshake, bounded by [`MAX_HANDSHAKES`] per shard and by the handshake timeout.
//! 3. Once the handshake is done the peer's identity (PSK identity or certificate name) is
//!    resolved, and records are protected with the session's keys.
//!
//! Like the rest of the sans-IO core it takes `now` and bytes and queues datagrams to send;
//! retransmissions of handshake flights and the eviction of idle sessions are timers the
//! shard drives through [`DtlsServer::handle_timeout`] and [`DtlsServer::poll_timeout`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use foreign_types::ForeignTypeRef;
use openssl::ex_data::Index;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslRef, SslStream};

use super::cookie::CookieJar;
use super::credentials::Identity;
use super::ffi::{
    BIO_ADDR_free, BIO_ADDR_new, BioAddr, DTLS_set_timer_cb, DTLSv1_listen, DTLS_CTRL_GET_TIMEOUT,
    DTLS_CTRL_HANDLE_TIMEOUT,
};
use super::handshake::{
    client_hello_cookie_len, drain_handshake, record_layer, retransmit_index, retransmit_timer,
    HandshakeTrack, RetransmitInitial, RETRANSMIT_MAX_US,
};
use super::pipe::DatagramPipe;
use super::protect::RecordProtection;
use super::record::{records, ContentType};
use super::Security;
use crate::transmit::Transmits;

/// Handshakes in progress per shard (each holds an OpenSSL `SSL` object of tens of KiB).
/// Beyond, ClientHellos with valid cookies are dropped until one finishes or times out;
/// a client retransmits its ClientHello, so a burst only delays it.
pub const MAX_HANDSHAKES: usize = 1024;

/// Largest plaintext record accepted from a peer: a CoAP message in one datagram.
const MAX_PLAINTEXT: usize = 2048;

/// Path MTU assumed for handshake flights: IPv6's minimum, which every network carries,
/// so a flight with a certificate chain is fragmented rather than dropped.
const HANDSHAKE_MTU: u32 = 1280;

/// Resolves the identity of a completed handshake ([`super::credentials::identity_of`] in
/// the gateway); `None` refuses the peer.
pub type Identify = Arc<dyn Fn(&SslRef) -> Option<Identity> + Send + Sync>;

/// Where a datagram's plaintext came from, as the session layer needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// How the peer authenticated.
    pub security: Security,
    /// Keyed hash of the endpoint name its identity may register as (see
    /// [`DtlsServer::identity_key`]); compared, never shown.
    pub identity: u64,
}

/// Counters of one shard's DTLS server.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DtlsStats {
    /// HelloVerifyRequests sent (ClientHellos without a valid cookie).
    pub hello_verify_requests: u64,
    /// Handshakes started (ClientHellos with a valid cookie).
    pub handshakes_started: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Of those, abbreviated (session resumption).
    pub resumed: u64,
    /// Handshakes that failed (bad key, unknown identity, bad certificate, alert, ...).
    pub handshakes_failed: u64,
    /// Handshakes dropped at the timeout.
    pub handshakes_timed_out: u64,
    /// ClientHellos with a valid cookie dropped because [`MAX_HANDSHAKES`] were running.
    pub handshakes_refused: u64,
    /// Datagrams from addresses without a session that were not ClientHellos.
    pub unknown_peer: u64,
    /// Records of established sessions that did not authenticate or were replays.
    pub bad_records: u64,
    /// Sessions ended by the peer (close_notify or a fatal alert).
    pub closed: u64,
    /// Sessions evicted after being idle for the session timeout.
    pub idle_evicted: u64,
    /// Plaintexts that could not be sent because no session exists for the address.
    pub no_session: u64,
}

/// Limits of a [`DtlsServer`].
#[derive(Debug, Clone, Copy)]
pub struct DtlsLimits {
    /// A handshake not finished this long after its ClientHello is dropped.
    pub handshake_timeout: Duration,
    /// A session with no datagram for this long is forgotten; the device then needs a new
    /// (or resumed) handshake. The longest registration lifetime is the natural value.
    pub session_idle: Duration,
    /// First retransmission delay of a handshake flight; it doubles on each retry up to
    /// 60 s (RFC 6347 §4.2.4.1 suggests 1 s).
    pub retransmit_initial: Duration,
}

/// The received application data of one datagram: each record's plaintext.
#[derive(Debug, Default)]
pub struct AppData {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl AppData {
    /// Forgets every record.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// Each record's plaintext, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let r = &self.buf[start..end];
            start = end;
            r
        })
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.ends.push(self.buf.len());
    }
}

struct Peer {
    state: PeerState,
    last_seen: Instant,
    /// When the timer entry of this peer should fire; entries of other instants are stale.
    deadline: Instant,
}

enum PeerState {
    Handshaking {
        stream: SslStream<DatagramPipe>,
        /// The handshake is dropped at this instant if not complete.
        give_up: Instant,
        /// What the server's own datagrams showed of the session so far.
        track: Box<HandshakeTrack>,
    },
    /// OpenSSL is gone; only the record layer's state stays (see [`Established`]).
    Established(Established),
}

/// An established session: keys, sequence numbers and replay window, a few hundred bytes
/// instead of an OpenSSL `SSL` object's tens of KiB.
struct Established {
    records: RecordProtection,
    origin: Origin,
    /// The server's last handshake flight, until the client's first application record
    /// shows it arrived: if the client repeats its own last flight, the server's was lost
    /// and is sent again, as OpenSSL would have.
    final_flight: Option<Box<[u8]>>,
    /// Lengths of the datagrams in `final_flight`.
    final_lens: Box<[u16]>,
}

/// Bytes an established, idle session costs in the peer table beyond its entry's key. It
/// decides how many DTLS devices a node holds (1 M in well under 1.5 GiB), so it is
/// checked when the crate compiles.
pub const ESTABLISHED_SIZE: usize = std::mem::size_of::<Peer>();
const _: () = assert!(
    ESTABLISHED_SIZE <= 256,
    "an idle DTLS session outgrew 256 bytes"
);

/// One shard's DTLS server; see the module documentation.
pub struct DtlsServer {
    ctx: SslContext,
    identify: Identify,
    hasher: ahash::RandomState,
    limits: DtlsLimits,
    listener: Option<SslStream<DatagramPipe>>,
    peers: AHashMap<SocketAddr, Peer>,
    handshaking: usize,
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    tx: Transmits,
    scratch: Box<[u8; MAX_PLAINTEXT]>,
    /// Plaintext of the record being opened.
    plain: Vec<u8>,
    bio_addr: *mut BioAddr,
    stats: DtlsStats,
}

impl std::fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("peers", &self.peers.len())
            .field("handshaking", &self.handshaking)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for DtlsServer {
    fn drop(&mut self) {
        // SAFETY: allocated by BIO_ADDR_new in `new` and freed only here.
        unsafe { BIO_ADDR_free(self.bio_addr) };
    }
}

/// The ex-data slot of the listening `SSL` object that holds its [`CookieJar`].
fn jar_index() -> Index<Ssl, CookieJar> {
    static INDEX: OnceLock<Index<Ssl, CookieJar>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL has ex-data slots to give"))
}

/// Installs the cookie callbacks on a server context; [`DtlsServer::new`] needs them.
pub fn enable_cookies(builder: &mut openssl::ssl::SslContextBuilder) {
    builder.set_options(openssl::ssl::SslOptions::COOKIE_EXCHANGE);
    builder.set_cookie_generate_cb(|ssl, out| {
        let jar = ssl.ex_data(jar_index());
        jar.and_then(|j| j.generate(out))
            .ok_or_else(openssl::error::ErrorStack::get)
    });
    builder.set_cookie_verify_cb(|ssl, cookie| {
        ssl.ex_data(jar_index())
            .is_some_and(|jar| jar.verify(cookie))
    });
}

/// `&mut SslRef` of a stream, which the crate exposes only for reading.
fn ssl_mut(stream: &mut SslStream<DatagramPipe>) -> &mut SslRef {
    // SAFETY: the stream owns its `SSL`; holding the stream mutably borrowed makes this the
    // only reference to it for the borrow's duration.
    unsafe { SslRef::from_ptr_mut(stream.ssl().as_ptr()) }
}

impl DtlsServer {
    /// A server whose handshakes use `ctx` (built with [`enable_cookies`]) and whose
    /// identities `identify` resolves. `hasher` keys [`Origin::identity`]; every shard of
    /// a node must use the same keys.
    pub fn new(
        ctx: SslContext,
        identify: Identify,
        hasher: ahash::RandomState,
        limits: DtlsLimits,
        now: Instant,
    ) -> Result<DtlsServer, openssl::error::ErrorStack> {
        // SAFETY: plain allocation; checked for null below and freed in Drop.
        let bio_addr = unsafe { BIO_ADDR_new() };
        if bio_addr.is_null() {
            return Err(openssl::error::ErrorStack::get());
        }
        let mut server = DtlsServer {
            ctx,
            identify,
            hasher,
            limits,
            listener: None,
            peers: AHashMap::new(),
            handshaking: 0,
            timers: BinaryHeap::new(),
            tx: Transmits::with_capacity(16 * 1024, 64),
            scratch: Box::new([0u8; MAX_PLAINTEXT]),
            plain: Vec::with_capacity(MAX_PLAINTEXT),
            bio_addr,
            stats: DtlsStats::default(),
        };
        server.listener = Some(server.new_listener(CookieJar::new(now))?);
        Ok(server)
    }

    /// Counters.
    pub fn stats(&self) -> &DtlsStats {
        &self.stats
    }

    /// Established sessions.
    pub fn sessions(&self) -> usize {
        self.peers.len() - self.handshaking
    }

    /// Handshakes in progress.
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshaking
    }

    /// The [`Origin::identity`] of an endpoint name.
    pub fn identity_key(&self, endpoint: &str) -> u64 {
        self.hasher.hash_one(endpoint)
    }

    /// Whether a session with `peer` is established.
    pub fn has_session(&self, peer: SocketAddr) -> bool {
        matches!(
            self.peers.get(&peer),
            Some(Peer {
                state: PeerState::Established(_),
                ..
            })
        )
    }

    fn new_listener(
        &self,
        jar: CookieJar,
    ) -> Result<SslStream<DatagramPipe>, openssl::error::ErrorStack> {
        let mut ssl = Ssl::new(&self.ctx)?;
        ssl.set_accept_state();
        ssl.set_mtu(HANDSHAKE_MTU)?;
        ssl.set_ex_data(jar_index(), jar);
        let initial =
            u32::try_from(self.limits.retransmit_initial.as_micros()).unwrap_or(RETRANSMIT_MAX_US);
        ssl.set_ex_data(
            retransmit_index(),
            RetransmitInitial(initial.clamp(1, RETRANSMIT_MAX_US)),
        );
        // SAFETY: a valid SSL, and a callback that only reads its ex-data.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), retransmit_timer) };
        SslStream::new(ssl, DatagramPipe::default())
    }

    /// Handles one datagram from `from`; the plaintext of its application-data records goes
    /// to `app`, and their origin is returned. `None` when there is nothing for the session
    /// layer (a handshake step, a dropped datagram).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        app: &mut AppData,
    ) -> Option<Origin> {
        app.clear();
        let hello = client_hello_cookie_len(data);
        let Some(peer) = self.peers.get_mut(&from) else {
            if hello.is_some() {
                self.listen(now, from, data);
            } else {
                self.stats.unknown_peer += 1;
            }
            return None;
        };
        peer.last_seen = now;
        match &mut peer.state {
            PeerState::Handshaking { stream, .. } => {
                if hello == Some(0) {
                    // The client started over (a restart mid-handshake): back to cookies.
                    self.drop_peer(from);
                    self.listen(now, from, data);
                    return None;
                }
                stream.get_mut().push_inbound(data);
                self.advance_handshake(now, from, app);
                self.origin_of(from).filter(|_| !app.ends.is_empty())
            }
            PeerState::Established(session) => {
                if hello.is_some() {
                    // A new handshake from the address of a session: the session ends only
                    // once the client proves the address with a valid cookie (RFC 6347
                    // §4.2.8), which `listen` checks before replacing it.
                    self.listen(now, from, data);
                    return None;
                }
                let origin = session.origin;
                let mut close = false;
                let mut resend = false;
                for record in records(data) {
                    let Ok(record) = record else {
                        self.stats.bad_records += 1;
                        continue;
                    };
                    if record.epoch() == 0 {
                        // The client repeating its last flight: ours did not arrive.
                        resend |= record.content_type() == ContentType::HANDSHAKE
                            || record.content_type() == ContentType::CHANGE_CIPHER_SPEC;
                        continue;
                    }
                    self.plain.clear();
                    let ty = match session.records.open(&record, &mut self.plain) {
                        Ok(ty) => ty,
                        Err(e) => {
                            // Anyone can send a datagram with this peer's address: a record
                            // that does not authenticate is dropped and the session kept.
                            self.stats.bad_records += 1;
                            tracing::trace!(%from, "DTLS record dropped: {e}");
                            continue;
                        }
                    };
                    match ty {
                        ContentType::APPLICATION_DATA => {
                            session.final_flight = None;
                            app.push(&self.plain);
                        }
                        // close_notify (0) or any fatal alert (level 2) ends the session;
                        // authenticated, so it really is the peer's.
                        ContentType::ALERT
                            if self.plain.first() == Some(&2) || self.plain.get(1) == Some(&0) =>
                        {
                            close = true;
                        }
                        // The client's Finished again: our last flight was lost.
                        ContentType::HANDSHAKE => resend = true,
                        _ => {}
                    }
                }
                if resend {
                    if let Some(flight) = &session.final_flight {
                        let mut at = 0;
                        for &len in session.final_lens.iter() {
                            let d = &flight[at..at + usize::from(len)];
                            at += usize::from(len);
                            self.tx.push(from, d);
                        }
                    }
                }
                if close {
                    self.stats.closed += 1;
                    self.drop_peer(from);
                }
                (!app.ends.is_empty()).then_some(origin)
            }
        }
    }

    /// Seals `plaintext` as one application-data record to `to` and queues it. `false` when
    /// no session with `to` is established.
    pub fn seal(&mut self, to: SocketAddr, plaintext: &[u8]) -> bool {
        let Some(Peer {
            state: PeerState::Established(session),
            ..
        }) = self.peers.get_mut(&to)
        else {
            self.stats.no_session += 1;
            return false;
        };
        let start = self.tx.start();
        match session
            .records
            .seal(ContentType::APPLICATION_DATA, plaintext, self.tx.buffer())
        {
            Ok(()) => {
                self.tx.commit(to, start);
                true
            }
            Err(e) => {
                self.tx.discard(start);
                tracing::debug!(%to, "DTLS seal failed: {e}");
                self.stats.no_session += 1;
                false
            }
        }
    }

    /// Hands every queued datagram to `send` and forgets them.
    pub fn drain_transmits(&mut self, send: impl FnMut(SocketAddr, &[u8])) {
        self.tx.drain(send);
    }

    /// Datagrams queued and not yet drained.
    pub fn pending_transmits(&self) -> usize {
        self.tx.len()
    }

    /// Advances timers: handshake retransmissions and timeouts, idle sessions, the cookie
    /// secret.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(l) = self.listener.as_mut() {
            if let Some(jar) = ssl_mut(l).ex_data_mut(jar_index()) {
                jar.rotate_if_due(now);
            }
        }
        while let Some(&Reverse((at, addr))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&addr) else {
                continue;
            };
            if peer.deadline != at {
                continue;
            }
            match &mut peer.state {
                PeerState::Handshaking {
                    stream,
                    give_up,
                    track,
                } => {
                    if now >= *give_up {
                        self.stats.handshakes_timed_out += 1;
                        self.drop_peer(addr);
                        continue;
                    }
                    // SAFETY: a valid SSL; DTLS_CTRL_HANDLE_TIMEOUT takes no pointer.
                    unsafe {
                        openssl_sys::SSL_ctrl(
                            stream.ssl().as_ptr(),
                            DTLS_CTRL_HANDLE_TIMEOUT,
                            0,
                            std::ptr::null_mut(),
                        )
                    };
                    drain_handshake(stream, track, addr, &mut self.tx);
                    self.arm(now, addr);
                }
                PeerState::Established(_) => {
                    let idle_until = peer.last_seen + self.limits.session_idle;
                    if now >= idle_until {
                        self.stats.idle_evicted += 1;
                        self.drop_peer(addr);
                    } else {
                        peer.deadline = idle_until;
                        self.timers.push(Reverse((idle_until, addr)));
                    }
                }
            }
        }
    }

    /// When [`DtlsServer::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs the stateless cookie exchange for a ClientHello from an address without a
    /// handshake in progress.
    fn listen(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        if let Some(jar) = ssl_mut(&mut listener).ex_data_mut(jar_index()) {
            jar.peer = Some(from);
        }
        listener.get_mut().clear_inbound();
        listener.get_mut().push_inbound(data);
        // SAFETY: a valid server SSL over a BIO that owns no borrowed data; `bio_addr` is a
        // live BIO_ADDR owned by `self`.
        let verdict = unsafe { DTLSv1_listen(listener.ssl().as_ptr(), self.bio_addr) };
        if verdict <= 0 {
            // No valid cookie: the HelloVerifyRequest (if any) goes out, nothing is kept.
            if listener.get_mut().has_outbound() {
                self.stats.hello_verify_requests += 1;
            }
            drain_into(&mut listener, from, &mut self.tx);
            if verdict < 0 {
                // OpenSSL reports a fatal error on the listening object: start a clean one.
                openssl::error::ErrorStack::get();
                let jar = ssl_mut(&mut listener).ex_data(jar_index()).cloned();
                self.listener = jar.and_then(|jar| self.new_listener(jar).ok());
                if self.listener.is_none() {
                    tracing::error!(
                        "cannot create the DTLS listening object; DTLS handshakes stop"
                    );
                }
            } else {
                self.listener = Some(listener);
            }
            return;
        }
        // A valid cookie: the address is proven, and this object becomes its handshake.
        let jar = ssl_mut(&mut listener).ex_data(jar_index()).cloned();
        self.listener = jar.and_then(|jar| self.new_listener(jar).ok());
        if self.handshaking >= MAX_HANDSHAKES {
            self.stats.handshakes_refused += 1;
            self.listener.get_or_insert(listener);
            return;
        }
        if self.peers.contains_key(&from) {
            self.drop_peer(from);
        }
        if self.listener.is_none() {
            tracing::error!("cannot create a DTLS listening object; DTLS handshakes stop");
        }
        self.stats.handshakes_started += 1;
        self.handshaking += 1;
        self.peers.insert(
            from,
            Peer {
                state: PeerState::Handshaking {
                    stream: listener,
                    give_up: now + self.limits.handshake_timeout,
                    track: Box::default(),
                },
                last_seen: now,
                deadline: now,
            },
        );
        let mut app = AppData::default();
        self.advance_handshake(now, from, &mut app);
    }

    /// Runs the handshake of `addr` as far as its received datagrams allow.
    fn advance_handshake(&mut self, now: Instant, addr: SocketAddr, app: &mut AppData) {
        let Some(mut peer) = self.peers.remove(&addr) else {
            return;
        };
        let PeerState::Handshaking {
            mut stream,
            give_up,
            mut track,
        } = peer.state
        else {
            self.peers.insert(addr, peer);
            return;
        };
        track.flight.clear();
        let result = stream.do_handshake();
        drain_handshake(&mut stream, &mut track, addr, &mut self.tx);
        match result {
            Ok(()) => {
                self.handshaking -= 1;
                let Some(identity) = (self.identify)(stream.ssl()) else {
                    self.stats.handshakes_failed += 1;
                    tracing::debug!(%addr, "DTLS handshake done but the identity is not known");
                    return;
                };
                // Application data that came with the client's last flight.
                while let Ok(n) = stream.ssl_read(&mut self.scratch[..]) {
                    app.push(&self.scratch[..n]);
                }
                let Some(records) = record_layer(stream.ssl(), &track) else {
                    self.stats.handshakes_failed += 1;
                    tracing::warn!(%addr, "DTLS session of an unsupported shape; dropped");
                    return;
                };
                if stream.ssl().session_reused() {
                    self.stats.resumed += 1;
                }
                self.stats.handshakes += 1;
                let origin = Origin {
                    security: identity.security(),
                    identity: self.hasher.hash_one(&**identity.endpoint()),
                };
                let final_lens = track.flight.iter().map(|d| d.len() as u16).collect();
                let final_flight = (!track.flight.is_empty()).then(|| track.flight.concat().into());
                peer.state = PeerState::Established(Established {
                    records,
                    origin,
                    final_flight,
                    final_lens,
                });
                peer.deadline = now + self.limits.session_idle;
                self.timers.push(Reverse((peer.deadline, addr)));
                self.peers.insert(addr, peer);
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                peer.state = PeerState::Handshaking {
                    stream,
                    give_up,
                    track,
                };
                self.peers.insert(addr, peer);
                self.arm(now, addr);
            }
            Err(e) => {
                self.handshaking -= 1;
                self.stats.handshakes_failed += 1;
                tracing::debug!(%addr, "DTLS handshake failed: {e}");
            }
        }
    }

    /// Arms the retransmission timer of a handshaking peer from OpenSSL's own timer.
    fn arm(&mut self, now: Instant, addr: SocketAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let PeerState::Handshaking {
            stream, give_up, ..
        } = &peer.state
        else {
            return;
        };
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` through the pointer.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        let retransmit = (running > 0).then(|| {
            now + Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        });
        let at = retransmit.map_or(*give_up, |r| r.min(*give_up));
        peer.deadline = at;
        self.timers.push(Reverse((at, addr)));
    }

    fn origin_of(&self, addr: SocketAddr) -> Option<Origin> {
        match &self.peers.get(&addr)?.state {
            PeerState::Established(s) => Some(s.origin),
            PeerState::Handshaking { .. } => None,
        }
    }

    fn drop_peer(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.remove(&addr) {
            if matches!(peer.state, PeerState::Handshaking { .. }) {
                self.handshaking -= 1;
            }
        }
    }
}

/// Queues every datagram `stream` wrote as a transmit to `dest`.
fn drain_into(stream: &mut SslStream<DatagramPipe>, dest: SocketAddr, tx: &mut Transmits) {
    while let Some(d) = stream.get_mut().pop_outbound() {
        tx.push(dest, &d);
    }
}
