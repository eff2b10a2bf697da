//! The shard behind its DTLS listener: how a datagram arrived ([`Link`]), replies sealed
//! into the session they answer, and which datagrams may act for a DTLS registration.

use std::net::SocketAddr;
use std::time::Instant;

use super::{os_seed, Handoff, Shard};
use crate::dtls::server::{DtlsServer, DtlsStats, Origin};
use crate::dtls::Security;

/// How the datagram being handled reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    /// Plain CoAP over UDP.
    #[default]
    Udp,
    /// CoAP inside a DTLS session held by `shard`, whose handshake proved `origin`.
    Dtls {
        /// The shard holding the session; only it can seal replies.
        shard: usize,
        /// What the handshake proved.
        origin: Origin,
    },
}

impl Link {
    /// How the peer authenticated.
    pub fn security(self) -> Security {
        match self {
            Link::Udp => Security::None,
            Link::Dtls { origin, .. } => origin.security,
        }
    }
}

impl Shard {
    /// Turns on the DTLS listener's peer table: datagrams of the DTLS socket go to
    /// [`Shard::handle_secure_datagram`]. The server must hash identities with
    /// [`Shard::identity_hasher`].
    pub fn enable_dtls(&mut self, server: DtlsServer) {
        self.dtls = Some(Box::new(server));
    }

    /// The keys DTLS identities are hashed with on this node (see [`Origin::identity`]).
    pub fn identity_hasher(&self) -> ahash::RandomState {
        self.identity_hasher.clone()
    }

    /// Counters of the DTLS listener, when it is enabled.
    pub fn dtls_stats(&self) -> Option<&DtlsStats> {
        self.dtls.as_deref().map(DtlsServer::stats)
    }

    /// Established DTLS sessions on this shard.
    pub fn dtls_sessions(&self) -> usize {
        self.dtls.as_deref().map_or(0, DtlsServer::sessions)
    }

    /// Handles one datagram received on this shard's DTLS socket: a handshake step, or
    /// records whose plaintext is handled like a plain datagram, with its identity.
    pub fn handle_secure_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(dtls) = self.dtls.as_deref_mut() else {
            return;
        };
        let mut app = std::mem::take(&mut self.app);
        if let Some(origin) = dtls.handle_datagram(now, from, data, &mut app) {
            let link = Link::Dtls {
                shard: self.cfg.shard,
                origin,
            };
            for record in app.records() {
                self.dispatch(now, from, self.cfg.shard, 0, link, record);
            }
        }
        self.app = app;
    }

    /// Hands every queued DTLS datagram (records and handshake flights) to `send` and
    /// forgets them.
    pub fn drain_secure_transmits(&mut self, send: impl FnMut(SocketAddr, &[u8])) {
        if let Some(dtls) = self.dtls.as_deref_mut() {
            dtls.drain_transmits(send);
        }
    }

    /// DTLS datagrams queued and not yet drained.
    pub fn pending_secure_transmits(&self) -> usize {
        self.dtls
            .as_deref()
            .map_or(0, DtlsServer::pending_transmits)
    }

    /// Sends the message written at `tx[start..]` to `dest` the way the datagram being
    /// handled arrived.
    pub(super) fn commit_reply(&mut self, dest: SocketAddr, start: usize) {
        match self.link {
            Link::Udp => self.commit(dest, start, Security::None),
            Link::Dtls { shard, origin } => {
                if shard == self.cfg.shard {
                    self.commit(dest, start, origin.security);
                } else {
                    let data = self.tx.written(start).to_vec();
                    self.tx.discard(start);
                    self.handoffs
                        .push_back((shard, Handoff::Seal { dest, data }));
                }
            }
        }
    }

    /// Sends the message written at `tx[start..]` to `dest`: as a plain datagram, or
    /// sealed into this shard's DTLS session with `dest` for a secure endpoint.
    pub(super) fn commit(&mut self, dest: SocketAddr, start: usize, security: Security) {
        if security == Security::None {
            self.tx.commit(dest, start);
            return;
        }
        if let Some(dtls) = self.dtls.as_deref_mut() {
            dtls.seal(dest, self.tx.written(start));
        }
        self.tx.discard(start);
    }

    /// Seals a message another shard wrote for a DTLS peer of this shard.
    pub(super) fn seal(&mut self, dest: SocketAddr, data: &[u8]) {
        if let Some(dtls) = self.dtls.as_deref_mut() {
            dtls.seal(dest, data);
        }
    }

    /// Whether the datagram being handled may act for an endpoint registered with
    /// `security` under the name `ep`: the same kind of link, and over DTLS the identity
    /// bound to that name.
    pub(super) fn link_may_act_for(&self, security: Security, ep: &str) -> bool {
        match self.link {
            Link::Udp => security == Security::None,
            Link::Dtls { origin, .. } => {
                origin.security == security && origin.identity == self.identity_hasher.hash_one(ep)
            }
        }
    }
}

/// The keys of the hash DTLS identities are compared by: drawn once per process, so every
/// shard computes the same hash of a name, and nobody outside can aim for a collision.
pub(super) fn identity_hasher() -> ahash::RandomState {
    static KEYS: std::sync::OnceLock<[u64; 4]> = std::sync::OnceLock::new();
    let k = KEYS.get_or_init(|| {
        let seed = os_seed();
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        [word(0), word(1), word(2), word(3)]
    });
    ahash::RandomState::with_seeds(k[0], k[1], k[2], k[3])
}
