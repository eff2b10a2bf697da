//! The sans-IO shard core: one [`Shard`] per executor owns the endpoints whose datagrams
//! arrive on its socket.
//!
//! The contract follows quinn-proto: inputs are `handle_*(now, ...)`, outputs are drained
//! with [`Shard::drain_transmits`], [`Shard::drain_publishes`], [`Shard::poll_handoff`] and
//! [`Shard::poll_timeout`]. Nothing here touches a socket or reads the clock, so every
//! scenario — expiry, rebinding across shards, retransmitted CONs — runs in tests with a
//! fake clock and several shards wired together by hand.
//!
//! # Cross-shard rules
//!
//! * An endpoint lives on the shard its datagrams arrive on. With BPF steering that is
//!   `shard_for(addr)`; with the kernel's own hash it is wherever the kernel puts them.
//! * A location id names its *home* shard (the one that registered it). The home shard
//!   always knows where its endpoints live now, so an Update for an id a shard does not
//!   hold takes one hop to the home and at most one more to the owner.
//! * Endpoint names are unique per node: the *directory* shard of a name (a hash of it)
//!   remembers which registration holds it and evicts the older one on re-register. In
//!   cluster mode it also keeps the name's presence record on the broker and reads other
//!   nodes' records, so names are unique across nodes (see `cluster`).

mod admin;
#[cfg(test)]
mod admin_tests;
mod auto_observe;
#[cfg(test)]
mod auto_observe_tests;
#[cfg(test)]
mod block1_tests;
#[cfg(test)]
mod block2_notify_tests;
mod clock;
mod cluster;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod composite_tests;
mod downlink;
#[cfg(test)]
mod downlink_tests;
#[cfg(test)]
mod dtls_tests;
#[cfg(test)]
mod emqx_compat_tests;
mod endpoints;
mod journal;
#[cfg(test)]
mod journal_tests;
mod location;
mod publish;
mod queue_mode;
#[cfg(test)]
mod queue_mode_tests;
mod registration;
mod secure;
mod send;
#[cfg(test)]
mod send_tests;
mod stats;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::coap::{
    option, write_empty, Block, Block1Assembler, Code, Dedup, DedupCache, Message, MessageType,
    MessageWriter, MidGen, TokenGen,
};
use crate::config::{Config, Translators, UpdatePublishCondition};
use crate::dtls::server::{AppData, DtlsServer};
use crate::dtls::Security;
use crate::lwm2m::{Limits, ObjectLists, Registration, Registry};
use crate::translate::{Event, Mountpoint};
use crate::transmit::Transmits;

pub use admin::{ClientCursor, ClientFilter, ClientInfo, ListStep};
pub use cluster::{node_topic, presence_bucket, ClusterStats, PRESENCE_BUCKETS};
use endpoints::{Directory, Endpoint, Endpoints};
pub use journal::ShardRestore;
use location::KeyGen;
pub use location::Location;
use publish::{ip_text, PublishQueue, TopicKind};
pub use publish::{Publish, PublishRef};
use secure::identity_hasher;
pub use secure::Link;
pub use stats::{
    command_type_label, CommandResult, CommandResults, CommandType, LatencyBuckets, ShardStats,
    LATENCY_BOUNDS,
};

/// CON requests remembered for duplicate detection per shard; beyond, the oldest go first.
/// Retransmissions come within MAX_TRANSMIT_SPAN (45 s), which this covers at ~5.8 k new
/// CONs/s per shard; a later duplicate is processed again, which Register (recognised by
/// its message id), Update and Deregister tolerate.
const DEDUP_CAPACITY: usize = 1 << 18;

/// Forwarded datagrams may hop at most this often (arrival → home → owner) before the
/// location is treated as unknown, so a routing inconsistency can never loop.
const MAX_HOPS: u8 = 2;

/// Endpoint tables are sized for a shard's share of `max_connections` up to this many
/// entries (~120 MiB of tables per shard at the cap, ~60 MiB at the default 512k per
/// shard of two, resident only as entries land); beyond, they grow on demand.
const PRESIZE_MAX: usize = 1 << 20;

/// Housekeeping (dedup and block-assembly expiry) runs at least this often.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Per-packet warnings are logged at most this often per shard; the rest are counted.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What a shard needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// This shard's index.
    pub shard: usize,
    /// Number of shards on the node.
    pub shards: usize,
    /// Accepted registration lifetimes.
    pub limits: Limits,
    /// Topic prefix template.
    pub mountpoint: Mountpoint,
    /// Topics and QoS per message kind.
    pub translators: Translators,
    /// When Updates are published.
    pub update_condition: UpdatePublishCondition,
    /// Registered endpoints this shard accepts (its share of `max_connections`).
    pub max_endpoints: usize,
    /// New registrations per second this shard accepts (its share of `max_conn_rate`).
    pub max_register_rate: u32,
    /// Commands queued per device behind the one in flight.
    pub max_queued_commands: usize,
    /// How long an unfinished Block1 request body waits for its next block
    /// (`gateway.idle_timeout`).
    pub idle_timeout: Duration,
    /// Object definitions that type decoded content; shared read-only by every shard.
    pub registry: Arc<Registry>,
    /// Seed of the generator of location keys; the runtime draws it from the OS.
    pub location_seed: [u8; 32],
    /// What is observed as soon as a device registers (`gateway.auto_observe`).
    pub auto_observe: crate::config::AutoObserve,
    /// How long a queue-mode device is reachable after it sent anything.
    pub qmode_time_window: Duration,
    /// APNs (lower case) that put a device in queue mode (`gateway.psm_apns`).
    pub psm_apns: Vec<String>,
}

impl ShardConfig {
    /// The configuration of shard `shard` of a node running `config`.
    pub fn new(config: &Config, shard: usize, registry: Arc<Registry>) -> ShardConfig {
        let shards = config.gateway.shards.max(1);
        ShardConfig {
            shard,
            shards,
            limits: Limits {
                lifetime_min: secs(config.gateway.lifetime_min),
                lifetime_max: secs(config.gateway.lifetime_max),
            },
            mountpoint: Mountpoint::parse(&config.gateway.mountpoint),
            translators: config.translators.clone(),
            update_condition: config.gateway.update_msg_publish_condition,
            max_endpoints: config.udp.max_connections.div_ceil(shards),
            max_register_rate: config.udp.max_conn_rate.div_ceil(shards as u32),
            max_queued_commands: config.gateway.max_queued_commands,
            idle_timeout: config.gateway.idle_timeout,
            registry,
            location_seed: os_seed(),
            auto_observe: config.gateway.auto_observe.clone(),
            qmode_time_window: config.gateway.qmode_time_window,
            psm_apns: config.gateway.psm_apns.clone(),
        }
    }
}

/// 32 bytes from the operating system's generator.
///
/// Falls back to std's per-process hash keys (themselves from the OS) if the call fails,
/// which on Linux it does only before the entropy pool is initialised at boot.
fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if let Err(e) = getrandom::getrandom(&mut seed) {
        tracing::error!(
            "the OS random generator failed ({e}); seeding location ids from hash keys"
        );
        for chunk in seed.chunks_mut(8) {
            let h = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            chunk.copy_from_slice(&h.to_le_bytes());
        }
    }
    seed
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Work one shard hands to another.
#[derive(Debug)]
pub enum Handoff {
    /// A datagram for an endpoint the sending shard does not hold.
    Datagram {
        /// The device's address.
        from: SocketAddr,
        /// Shard whose socket received it (where the endpoint should live).
        arrived_on: usize,
        /// Shards it has passed through.
        hops: u8,
        /// When it was received.
        received: Instant,
        /// How it arrived.
        link: Link,
        /// The datagram (its plaintext, when it came over DTLS).
        data: Vec<u8>,
    },
    /// To the shard holding the DTLS session with `dest`: seal `data` and send it.
    Seal {
        /// The peer.
        dest: SocketAddr,
        /// A CoAP message.
        data: Vec<u8>,
    },
    /// An endpoint moving to the receiving shard after a NAT rebinding.
    Adopt(Box<Migrating>),
    /// To a home shard: its endpoint `location` now lives on `owner`.
    Moved {
        /// The endpoint.
        location: Location,
        /// Shard now holding it.
        owner: usize,
    },
    /// To a home shard: its endpoint `location` is gone.
    Gone {
        /// The endpoint.
        location: Location,
    },
    /// To the directory shard of `ep`: `location` on `owner` now holds this name.
    Claim {
        /// Endpoint name.
        ep: Arc<str>,
        /// Its registration.
        location: Location,
        /// Shard holding it.
        owner: usize,
        /// A new registration (evicts an older holder) rather than a move.
        fresh: bool,
        /// Registered over DTLS.
        secure: bool,
    },
    /// To the directory shard of `ep`: `location` no longer holds the name.
    Release {
        /// Endpoint name.
        ep: Arc<str>,
        /// The registration that ended.
        location: Location,
    },
    /// To the owner of `location`: a newer registration took its name.
    Evict {
        /// The registration to remove.
        location: Location,
    },
}

/// The state of an endpoint while it moves between shards.
#[derive(Debug)]
pub struct Migrating {
    location: Location,
    registration: Registration,
    addr: SocketAddr,
    generation: u32,
    expires: Instant,
    registered: Instant,
    register_mid: u16,
    security: Security,
    downlink: Option<Box<downlink::Downlink>>,
}

/// Token bucket for `max_conn_rate`.
#[derive(Debug)]
struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One shard's LwM2M server state.
pub struct Shard {
    cfg: ShardConfig,
    endpoints: Endpoints,
    /// Directory entries for names that hash to this shard: name → (registration, owner).
    directory: Directory,
    /// Object lists shared by the registrations of this shard.
    object_lists: ObjectLists,
    /// Time zero of the whole-second deadlines kept per endpoint.
    epoch: Instant,
    /// Endpoints registered here that now live on another shard: location key → owner.
    moved: AHashMap<u64, usize>,
    /// Location keys of new registrations.
    keys: KeyGen,
    /// Lifetime deadlines `(seconds after epoch, location key)`; an Update does not push,
    /// the entry is re-armed when it fires early.
    expiry: BinaryHeap<Reverse<(u32, u64)>>,
    dedup: DedupCache,
    blocks: Block1Assembler,
    /// Bytes of Block1 request bodies queued or in flight (see
    /// [`downlink::MAX_PENDING_BLOCK1_BYTES`]).
    pending_block1: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of Block2 notification bodies being collected (bounded by
    /// `downlink::block2_notify::MAX_PENDING_NOTIFY_BYTES`).
    pending_notify: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mids: MidGen,
    tokens: TokenGen,
    /// Outstanding request and observation tokens → the endpoint they belong to.
    token_owner: AHashMap<[u8; 8], Location>,
    /// Downlink retransmission deadlines `(at, endpoint, mid)`, checked lazily.
    retransmit: BinaryHeap<Reverse<(Instant, Location, u16)>>,
    /// When the shard last sent a request or handled a registration; see
    /// [`Shard::interactive`].
    last_interactive: Option<Instant>,
    /// When commands queued for sleeping devices expire `(at, endpoint)`, checked lazily.
    queue_expiry: BinaryHeap<Reverse<(Instant, Location)>>,
    rng: u64,
    rate: RateLimit,
    next_housekeeping: Instant,
    next_log: Instant,
    suppressed_logs: u64,
    /// Outgoing datagrams.
    tx: Transmits,
    publishes: PublishQueue,
    handoffs: VecDeque<(usize, Handoff)>,
    json: Vec<u8>,
    /// Decoded values of the payload being published, reused by every response and
    /// notification (see [`crate::content::reuse_entries`]).
    values: Vec<crate::content::EntryRef<'static>>,
    /// Changes to persist, when persistence is on.
    journal: Option<journal::Journal>,
    /// Presence records and live nodes, when several nodes share the broker.
    cluster: Option<Box<cluster::Cluster>>,
    /// The DTLS listener's peers, when it is enabled.
    dtls: Option<Box<DtlsServer>>,
    /// Plaintext of the DTLS datagram being handled.
    app: AppData,
    /// How the datagram being handled arrived; replies go back the same way.
    link: Link,
    /// Keys the hash of endpoint names that DTLS identities are compared by; the same on
    /// every shard of a node.
    identity_hasher: ahash::RandomState,
    stats: ShardStats,
    /// Outcomes of API commands for the runtime: `(tag, response JSON)`.
    answers: VecDeque<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard", &self.cfg.shard)
            .field("endpoints", &self.endpoints.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The shard that tracks where the endpoint of `location` lives: the shard that issued the
/// id, or, after a restart with fewer shards, the one its digit now maps to.
fn home_shard(location: Location, shards: usize) -> usize {
    usize::from(location.home) % shards
}

/// The directory shard of an endpoint name: its presence bucket (a fixed hash, the same on
/// every shard and node) modulo the shard count, so a shard subscribes to the presence
/// records of exactly the names it is directory for. The journal does not store it: a
/// restart recomputes it, whatever the shard count or the function was before.
pub fn directory_shard(ep: &str, shards: usize) -> usize {
    presence_bucket(ep) % shards.max(1)
}

impl Shard {
    /// A shard with no endpoints. `seed` varies message ids between runs and shards.
    pub fn new(cfg: ShardConfig, now: Instant, seed: u64) -> Shard {
        let per_sec = f64::from(cfg.max_register_rate.max(1));
        Shard {
            endpoints: Endpoints::with_capacity(cfg.max_endpoints.min(PRESIZE_MAX)),
            directory: Directory::with_capacity(cfg.max_endpoints.min(PRESIZE_MAX)),
            object_lists: ObjectLists::with_registry(cfg.registry.clone()),
            epoch: now,
            moved: AHashMap::new(),
            keys: KeyGen::new(cfg.location_seed),
            expiry: BinaryHeap::new(),
            dedup: DedupCache::new(DEDUP_CAPACITY),
            blocks: Block1Assembler::new(cfg.idle_timeout),
            pending_block1: Default::default(),
            pending_notify: Default::default(),
            mids: MidGen::new((seed ^ (seed >> 16) ^ cfg.shard as u64) as u16),
            tokens: TokenGen::new(seed ^ (cfg.shard as u64).rotate_left(32)),
            token_owner: AHashMap::new(),
            retransmit: BinaryHeap::new(),
            last_interactive: None,
            queue_expiry: BinaryHeap::new(),
            rng: seed | 1,
            rate: RateLimit {
                per_sec,
                tokens: per_sec,
                last: now,
            },
            next_housekeeping: now + HOUSEKEEPING_INTERVAL,
            next_log: now,
            suppressed_logs: 0,
            tx: Transmits::with_capacity(64 * 1024, 256),
            publishes: PublishQueue::new(),
            handoffs: VecDeque::new(),
            json: Vec::with_capacity(1024),
            values: Vec::with_capacity(16),
            journal: None,
            cluster: None,
            dtls: None,
            app: AppData::default(),
            link: Link::Udp,
            identity_hasher: identity_hasher(),
            stats: ShardStats::default(),
            answers: VecDeque::new(),
            cfg,
        }
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.cfg.shard
    }

    /// Endpoints registered on this shard.
    pub fn registered(&self) -> usize {
        self.endpoints.len()
    }

    /// Counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Handles one datagram received on this shard's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.dispatch(now, from, self.cfg.shard, 0, Link::Udp, data);
    }

    /// Drops a datagram from `from` that arrived truncated because it was longer than the
    /// runtime's `limit`-byte receive slot: a CoAP message cut short would parse as a
    /// different, shorter message, so it is counted and logged (rate limited), not handled.
    pub fn handle_truncated(&mut self, now: Instant, from: SocketAddr, limit: usize) {
        self.stats.truncated += 1;
        self.log_peer_error(
            now,
            from,
            &format_args!("longer than the {limit}-byte receive slot, truncated"),
        );
    }

    /// Handles work from another shard.
    pub fn handle_handoff(&mut self, now: Instant, handoff: Handoff) {
        match handoff {
            Handoff::Datagram {
                from,
                arrived_on,
                hops,
                received: _,
                link,
                data,
            } => self.dispatch(now, from, arrived_on, hops, link, &data),
            Handoff::Seal { dest, data } => self.seal(dest, &data),
            Handoff::Adopt(m) => self.adopt(now, *m),
            Handoff::Moved { location, owner } => {
                if owner == self.cfg.shard {
                    self.moved.remove(&location.key);
                } else {
                    self.moved.insert(location.key, owner);
                }
            }
            Handoff::Gone { location } => {
                self.moved.remove(&location.key);
            }
            Handoff::Claim {
                ep,
                location,
                owner,
                fresh,
                secure,
            } => self.claim(now, ep, location, owner, fresh, secure),
            Handoff::Release { ep, location } => self.release_name(&ep, location),
            Handoff::Evict { location } => self.evict(now, location),
        }
    }

    /// Advances timers: lifetime expiry and housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now_secs = self.secs(now);
        while let Some(Reverse((at, key))) = self.expiry.peek().copied() {
            if at > now_secs {
                break;
            }
            self.expiry.pop();
            let Some((location, ep)) = self.endpoints.by_key(key) else {
                continue;
            };
            if ep.expires > now_secs {
                // Lifetime was extended by an Update: re-arm at the new deadline.
                self.expiry.push(Reverse((ep.expires, key)));
                continue;
            }
            self.stats.expired += 1;
            self.remove_endpoint(now, location, Event::Expired, true);
        }
        self.handle_retransmit(now);
        self.handle_queue_expiry(now);
        if let Some(dtls) = self.dtls.as_deref_mut() {
            dtls.handle_timeout(now);
        }
        self.handle_reassert(now);
        if now >= self.next_housekeeping {
            self.dedup.expire(now);
            self.blocks.expire(now);
            self.object_lists.prune();
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
        }
    }

    /// When [`Shard::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next_expiry = self
            .expiry
            .peek()
            .map(|Reverse((at, _))| self.epoch + Duration::from_secs(u64::from(*at)));
        let next_retransmit = self.retransmit.peek().map(|Reverse((at, _, _))| *at);
        let next_dtls = self.dtls.as_deref().and_then(DtlsServer::poll_timeout);
        let next_queue = self.queue_expiry.peek().map(|Reverse((at, _))| *at);
        let next_reassert = self.reassert_timeout();
        [
            next_expiry,
            next_retransmit,
            next_dtls,
            next_queue,
            next_reassert,
        ]
        .into_iter()
        .flatten()
        .chain([self.next_housekeeping])
        .min()
    }

    /// Hands every queued datagram to `send` and forgets them.
    pub fn drain_transmits(&mut self, send: impl FnMut(SocketAddr, &[u8])) {
        self.tx.drain(send);
    }

    /// Datagrams queued and not yet drained.
    pub fn pending_transmits(&self) -> usize {
        self.tx.len()
    }

    /// Hands every queued MQTT message to `publish`, oldest first, and forgets them. The
    /// topic and payload borrow the shard's arena: nothing is allocated per message.
    pub fn drain_publishes(&mut self, publish: impl FnMut(PublishRef<'_>)) {
        self.publishes.drain(publish);
    }

    /// The next MQTT message to publish, copied out of the arena (a convenience for tests
    /// and tools; the runtime uses [`Shard::drain_publishes`]).
    pub fn poll_publish(&mut self) -> Option<Publish> {
        self.publishes.pop()
    }

    /// MQTT messages queued and not yet drained.
    pub fn pending_publishes(&self) -> usize {
        self.publishes.len()
    }

    /// The next piece of work for another shard: `(shard, work)`.
    pub fn poll_handoff(&mut self) -> Option<(usize, Handoff)> {
        self.handoffs.pop_front()
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        arrived_on: usize,
        hops: u8,
        link: Link,
        data: &[u8],
    ) {
        self.stats.datagrams += 1;
        self.link = link;
        let msg = match Message::parse(data) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.malformed += 1;
                self.log_peer_error(now, from, &e);
                // A CON whose header is readable is rejected with a Reset (RFC 7252 §4.2).
                if data.len() >= 4 && data[0] >> 6 == 1 && (data[0] >> 4) & 3 == 0 {
                    let mid = u16::from_be_bytes([data[2], data[3]]);
                    self.queue_empty(from, MessageType::Rst, mid);
                }
                return;
            }
        };
        match msg.ty() {
            MessageType::Con | MessageType::Non if msg.code().is_request() => {
                self.handle_request(now, from, arrived_on, hops, &msg, data)
            }
            MessageType::Ack | MessageType::Rst => self.handle_ack_or_reset(now, from, &msg),
            // A separate response or a notification.
            MessageType::Con | MessageType::Non if msg.code().is_response() => {
                self.handle_separate(now, from, &msg)
            }
            // CoAP ping: Reset.
            MessageType::Con => self.queue_empty(from, MessageType::Rst, msg.mid()),
            MessageType::Non => {}
        }
    }

    fn log_peer_error(&mut self, now: Instant, from: SocketAddr, e: &dyn std::fmt::Display) {
        if now >= self.next_log {
            tracing::warn!(
                shard = self.cfg.shard,
                %from,
                suppressed = self.suppressed_logs,
                "dropped datagram: {e}"
            );
            self.next_log = now + LOG_INTERVAL;
            self.suppressed_logs = 0;
        } else {
            self.suppressed_logs += 1;
        }
    }

    fn queue_empty(&mut self, dest: SocketAddr, ty: MessageType, mid: u16) {
        let start = self.tx.start();
        write_empty(self.tx.buffer(), ty, mid);
        self.commit_reply(dest, start);
    }

    /// Queues the response to `req` (piggybacked on the ACK for a CON) and records it in
    /// the exchange cache so a retransmission is answered with the same bytes.
    fn respond(&mut self, to: SocketAddr, req: &Message<'_>, resp: Response) {
        if resp.code.class() >= 4 {
            self.stats.rejected += 1;
        }
        let (ty, mid) = match req.ty() {
            MessageType::Con => (MessageType::Ack, req.mid()),
            _ => (MessageType::Non, self.mids.next()),
        };
        let start = self.tx.start();
        let mut w = MessageWriter::new(self.tx.buffer(), ty, resp.code, mid, req.token());
        let mut id = [0u8; location::ID_LEN];
        if let Some(location) = resp.location {
            let id = location.encode(&mut id);
            w.option(option::LOCATION_PATH, b"rd")
                .option(option::LOCATION_PATH, id.as_bytes());
        }
        let mut block = [0u8; 3];
        if let Some(b) = resp.block1 {
            let n = b.encode(&mut block);
            w.option(option::BLOCK1, &block[..n]);
        }
        w.finish();
        if req.ty() == MessageType::Con {
            self.dedup.record_response(
                to,
                self.link != Link::Udp,
                req.mid(),
                self.tx.written(start),
            );
        }
        self.commit_reply(to, start);
    }

    fn forward(
        &mut self,
        to: usize,
        from: SocketAddr,
        arrived_on: usize,
        hops: u8,
        now: Instant,
        data: &[u8],
    ) {
        self.stats.forwarded += 1;
        self.handoffs.push_back((
            to,
            Handoff::Datagram {
                from,
                arrived_on,
                hops: hops + 1,
                received: now,
                link: self.link,
                data: data.to_vec(),
            },
        ));
    }

    /// Sends `handoff` to `to`, or applies it at once when `to` is this shard.
    fn route(&mut self, now: Instant, to: usize, handoff: Handoff) {
        if to == self.cfg.shard {
            self.handle_handoff(now, handoff);
        } else {
            self.handoffs.push_back((to, handoff));
        }
    }

    /// Publishes `self.json` on the topic of `kind` for `ep` at `peer`.
    fn publish(&mut self, kind: TopicKind, ep: &str, peer: SocketAddr) {
        let mut peerhost = [0u8; 64];
        let peerhost = ip_text(&peer, &mut peerhost);
        self.publish_to(kind, ep, peerhost);
    }

    fn publish_to(&mut self, kind: TopicKind, ep: &str, peerhost: &str) {
        let t = kind.translator(&self.cfg.translators);
        self.publishes
            .push(&self.cfg.mountpoint, t, ep, peerhost, &self.json);
    }

    fn publish_event(&mut self, ep: &str, peer: SocketAddr, event: Event) {
        self.json.clear();
        crate::translate::write_event(&mut self.json, ep, event);
        self.publish(TopicKind::Event, ep, peer);
    }

    fn check_duplicate(&mut self, now: Instant, from: SocketAddr, req: &Message<'_>) -> bool {
        if req.ty() != MessageType::Con {
            return false;
        }
        match self
            .dedup
            .check(now, from, self.link != Link::Udp, req.mid())
        {
            Dedup::New => false,
            Dedup::Duplicate(cached) => {
                self.stats.duplicates += 1;
                if let Some(bytes) = cached {
                    let start = self.tx.start();
                    self.tx.buffer().extend_from_slice(bytes);
                    self.commit_reply(from, start);
                }
                true
            }
        }
    }
}

/// A response to a device request.
#[derive(Debug, Clone, Copy)]
struct Response {
    code: Code,
    location: Option<Location>,
    block1: Option<Block>,
}

impl Response {
    fn code(code: Code) -> Response {
        Response {
            code,
            location: None,
            block1: None,
        }
    }
}
