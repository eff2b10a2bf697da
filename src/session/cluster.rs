//! Several nodes on one broker: presence records and live nodes, kept by each name's
//! directory shard (README "Several nodes").
//!
//! The broker's retained messages are the shared state; nothing else is exchanged between
//! nodes:
//!
//! * `<prefix>/presence/<bucket>/<ep>` — `{"node":..,"registered":<Unix ms>}`: which node
//!   holds the endpoint, written (retained) by the directory shard of the name when
//!   a Register lands on its node and cleared (empty retained) when the registration ends.
//!   A node clears only records of names it held itself.
//! * `<prefix>/nodes/<node>/<shard>` — written by every shard when its broker connection
//!   comes up and cleared by that connection's Last Will (or by a clean stop): a node is
//!   live while any of its shards is connected.
//!
//! The bucket is a fixed hash of the name, [`PRESENCE_BUCKETS`] of them, and a name's
//! directory shard is `bucket % shards`, so each shard subscribes to the buckets of exactly
//! the names it is directory for and receives the retained records of all of them when it
//! (re)subscribes. Decisions, all on the directory shard:
//!
//! * A record of another node that is newer (`(registered, node)` order) than this node's
//!   registration of the name: the registration is dropped with a `replaced` event.
//! * This node's record cleared, or overwritten by an older one, while it holds the name:
//!   written again. A record naming this node for a name it does not hold (left from an
//!   earlier run): cleared.
//! * A command for a name registered nowhere on this node is answered 4.04 only when no
//!   live node holds the name and this node is the lowest-named live node, so exactly one
//!   node answers.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use hashbrown::HashTable;
use serde::Deserialize;

use super::{Handoff, Location, Shard};
use crate::config::{MAX_NODE_NAME, MAX_SHARDS};
use crate::lwm2m::registration::MAX_ENDPOINT_LEN;

/// Presence buckets: at [`crate::config::MAX_SHARDS`] shards each gets 28 or 29 (3 %
/// imbalance), and a million names leave ~1k retained records per bucket filter, within
/// what brokers deliver at subscribe (rumqttd caps it at its in-flight window, 1024).
pub const PRESENCE_BUCKETS: usize = 1024;

/// Distinct node names a shard remembers: far beyond any real cluster, and it bounds the
/// memory a broker full of junk records can take.
const MAX_NODES: usize = 1024;

/// Names held by other nodes that one shard remembers (~80 bytes each, so ~1.3 GiB at the
/// cap): beyond, records are counted and ignored rather than grow memory without bound.
const MAX_REMOTE_ENDPOINTS: usize = 1 << 24;

/// Longest presence or node record read; ours are under 100 bytes.
const MAX_RECORD: usize = 512;

/// Presence records written again per turn after a (re)connect: with
/// [`REASSERT_INTERVAL`] 50k records/s per shard, below what the uplink drains, so the
/// offline buffer never overflows with them.
const REASSERT_BATCH: usize = 1000;

/// Pause between two [`REASSERT_BATCH`]es.
const REASSERT_INTERVAL: Duration = Duration::from_millis(20);

/// The presence bucket of an endpoint name: a fixed hash, identical on every node.
pub fn presence_bucket(ep: &str) -> usize {
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    h.write(ep.as_bytes());
    (h.finish() % PRESENCE_BUCKETS as u64) as usize
}

/// The topic of a shard's live-node record, also its connection's Last Will.
pub fn node_topic(prefix: &str, node: &str, shard: usize) -> String {
    format!("{prefix}/nodes/{node}/{shard}")
}

/// The topic of an endpoint's presence record.
fn presence_topic(prefix: &str, ep: &str) -> String {
    format!("{prefix}/presence/{}/{ep}", presence_bucket(ep))
}

/// Whether `ep` can be one topic level (a name with `/` or a wildcard cannot be published
/// as one; such names get no presence record).
fn topic_safe(ep: &str) -> bool {
    !ep.is_empty() && !ep.contains(['/', '+', '#', '\0'])
}

/// Whether `node` is a node name `gateway.node` accepts.
fn valid_node(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= MAX_NODE_NAME
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A presence record as published.
#[derive(Deserialize)]
struct PresenceRecord<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    registered: u64,
    /// Registered over DTLS (absent: plain).
    #[serde(default)]
    secure: bool,
}

/// Counters of a shard's cluster state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Presence records written or cleared.
    pub presence_published: u64,
    /// Registrations dropped because another node registered the name later.
    pub taken_over: u64,
    /// This node's records written again after they were cleared or overwritten by an
    /// older one, and live-node records after they were cleared.
    pub repaired: u64,
    /// Records that did not parse, named a bucket or shard other than the topic's, or
    /// exceeded a limit.
    pub ignored: u64,
    /// Names held by other nodes that this shard knows (gauge).
    pub remote_endpoints: u64,
}

/// A name held by another node.
struct Remote {
    ep: Box<str>,
    node: u16,
    /// Registered over DTLS.
    secure: bool,
    stamp: u64,
}

/// One shard's view of the cluster; see the module documentation.
pub(super) struct Cluster {
    /// This node's name.
    node: Arc<str>,
    prefix: String,
    /// Unix ms at the shard's epoch: stamps are `epoch_unix_ms + (now - epoch)`.
    epoch_unix_ms: u64,
    /// Interned node names, by id.
    nodes: Vec<Arc<str>>,
    node_ids: AHashMap<Arc<str>, u16>,
    /// Per node id, its shards whose live record is present.
    live: Vec<Vec<u32>>,
    /// This shard's own live record came back: the subscriptions are active and the
    /// retained records before it were delivered.
    seen_self: bool,
    /// Stopping: nothing is written again.
    leaving: bool,
    remote: HashTable<Remote>,
    hasher: ahash::RandomState,
    /// Retained messages to publish: topic, payload (empty clears).
    outbox: Vec<(String, Vec<u8>)>,
    /// Names whose records are written again after a (re)connect, a batch at a time.
    reassert: Vec<Arc<str>>,
    next_reassert: Option<Instant>,
    /// The broker connection last reported up (see [`Shard::observe_broker_connection`]).
    connection: Option<u64>,
    stats: ClusterStats,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    fn intern(&mut self, node: &str) -> Option<u16> {
        if let Some(id) = self.node_ids.get(node) {
            return Some(*id);
        }
        if self.nodes.len() >= MAX_NODES {
            return None;
        }
        let id = u16::try_from(self.nodes.len()).ok()?;
        let name: Arc<str> = node.into();
        self.nodes.push(name.clone());
        self.node_ids.insert(name, id);
        self.live.push(Vec::new());
        Some(id)
    }

    fn is_live(&self, node: u16) -> bool {
        self.live
            .get(usize::from(node))
            .is_some_and(|s| !s.is_empty())
    }

    fn remote(&self, ep: &str) -> Option<&Remote> {
        self.remote.find(self.hasher.hash_one(ep), |r| *r.ep == *ep)
    }

    fn forget_remote(&mut self, ep: &str) {
        if let Ok(o) = self
            .remote
            .find_entry(self.hasher.hash_one(ep), |r| *r.ep == *ep)
        {
            o.remove();
        }
    }

    fn set_remote(&mut self, ep: &str, node: &str, secure: bool, stamp: u64) {
        let Some(node) = self.intern(node) else {
            self.stats.ignored += 1;
            return;
        };
        let full = self.remote.len() >= MAX_REMOTE_ENDPOINTS;
        let hasher = &self.hasher;
        match self.remote.entry(
            hasher.hash_one(ep),
            |r| *r.ep == *ep,
            |r| hasher.hash_one(&*r.ep),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let r = o.get_mut();
                r.node = node;
                r.secure = secure;
                r.stamp = stamp;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                if full {
                    self.stats.ignored += 1;
                    return;
                }
                v.insert(Remote {
                    ep: ep.into(),
                    node,
                    secure,
                    stamp,
                });
            }
        }
    }

    /// Queues this node's presence record of `ep` (`Some((stamp, secure))`) or its removal.
    fn push_presence(&mut self, ep: &str, record: Option<(u64, bool)>) {
        if self.leaving || !topic_safe(ep) {
            return;
        }
        let payload = match record {
            Some((stamp, secure)) => {
                let mut p = Vec::with_capacity(64);
                p.extend_from_slice(b"{\"node\":\"");
                p.extend_from_slice(self.node.as_bytes());
                p.extend_from_slice(b"\",\"registered\":");
                p.extend_from_slice(stamp.to_string().as_bytes());
                if secure {
                    p.extend_from_slice(b",\"secure\":true");
                }
                p.push(b'}');
                p
            }
            None => Vec::new(),
        };
        self.stats.presence_published += 1;
        self.outbox
            .push((presence_topic(&self.prefix, ep), payload));
    }

    fn push_node_record(&mut self, shard: usize, shards: usize) {
        if self.leaving {
            return;
        }
        let payload = format!(
            "{{\"node\":\"{}\",\"shard\":{shard},\"shards\":{shards}}}",
            self.node
        );
        self.outbox.push((
            node_topic(&self.prefix, &self.node, shard),
            payload.into_bytes(),
        ));
    }

    /// Whether this node answers for names no live node holds: the lowest-named live node.
    fn is_lowest_live(&self) -> bool {
        self.seen_self
            && !self.leaving
            && self
                .nodes
                .iter()
                .zip(&self.live)
                .all(|(name, shards)| shards.is_empty() || *name >= self.node)
    }
}

/// What a presence record means for the directory shard of its name.
enum Verdict {
    Nothing,
    /// Write this node's record again: stamp, made over DTLS.
    Rewrite(u64, bool),
    /// Clear the record (it names this node, which does not hold the name).
    Clear,
    /// Another node registered the name later: drop this node's registration.
    TakenOver(Location, usize),
}

impl Shard {
    /// Turns on cluster mode (`[cluster] enabled`): this shard writes presence records for
    /// the names it is directory for and reads those of other nodes. `epoch_unix_ms` is the
    /// wall-clock time, in Unix ms, of the `now` the shard was created with; registration
    /// stamps are counted from it.
    pub fn enable_cluster(&mut self, node: &str, topic_prefix: &str, epoch_unix_ms: u64) {
        let node: Arc<str> = node.into();
        let mut cluster = Cluster {
            node: node.clone(),
            prefix: topic_prefix.to_owned(),
            epoch_unix_ms,
            nodes: Vec::new(),
            node_ids: AHashMap::new(),
            live: Vec::new(),
            seen_self: false,
            leaving: false,
            remote: HashTable::new(),
            hasher: ahash::RandomState::new(),
            outbox: Vec::new(),
            reassert: Vec::new(),
            next_reassert: None,
            connection: None,
            stats: ClusterStats::default(),
        };
        cluster.intern(&node);
        self.cluster = Some(Box::new(cluster));
    }

    /// The topic filters this shard subscribes to in cluster mode: every live-node record
    /// and the presence buckets of the names it is directory for.
    pub fn cluster_subscriptions(&self) -> Vec<String> {
        let Some(c) = self.cluster.as_deref() else {
            return Vec::new();
        };
        let mut filters = vec![format!("{}/nodes/+/+", c.prefix)];
        filters.extend(
            (0..PRESENCE_BUCKETS)
                .filter(|b| b % self.cfg.shards == self.cfg.shard)
                .map(|b| format!("{}/presence/{b}/+", c.prefix)),
        );
        filters
    }

    /// The Last Will topic of this shard's broker connection in cluster mode: its
    /// live-node record, cleared when the connection dies.
    pub fn cluster_will(&self) -> Option<String> {
        let c = self.cluster.as_deref()?;
        Some(node_topic(&c.prefix, &c.node, self.cfg.shard))
    }

    /// The runtime's report of the broker connection: `Some(n)` while the n-th connection
    /// is up. A connection not seen before is [`Shard::handle_broker_connected`]. Call it
    /// before handing the shard any message received from the broker, so what the shard
    /// knew is reset before the new subscriptions replay the retained records.
    pub fn observe_broker_connection(&mut self, now: Instant, connection: Option<u64>) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let fresh = connection.is_some() && connection != c.connection;
        c.connection = connection;
        if fresh {
            self.handle_broker_connected(now);
        }
    }

    /// The broker connection came up (first time or again): this shard's live-node record
    /// is written, what it knew of the cluster is forgotten (the retained records that
    /// follow the subscriptions tell it again), and the presence records of the names it
    /// holds are written again a batch at a time, in case the broker lost them.
    pub fn handle_broker_connected(&mut self, now: Instant) {
        if self.cluster.is_none() {
            return;
        }
        let (shard, shards) = (self.cfg.shard, self.cfg.shards);
        let names: Vec<Arc<str>> = self.directory.names().cloned().collect();
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        c.seen_self = false;
        for shards in &mut c.live {
            shards.clear();
        }
        c.remote.clear();
        c.push_node_record(shard, shards);
        c.reassert = names;
        c.next_reassert = Some(now);
    }

    /// A clean stop: clears this shard's live-node record (a DISCONNECT cancels the Last
    /// Will) and writes nothing more. Presence records stay: with persistence the node
    /// holds the names again when it comes back.
    pub fn leave_cluster(&mut self) {
        let shard = self.cfg.shard;
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        c.reassert.clear();
        c.next_reassert = None;
        c.outbox
            .push((node_topic(&c.prefix, &c.node, shard), Vec::new()));
        c.leaving = true;
    }

    /// Hands every queued record (topic, payload; an empty payload clears) to `publish`,
    /// to be sent with the RETAIN flag.
    pub fn drain_retained(&mut self, mut publish: impl FnMut(&str, &[u8])) {
        if let Some(c) = self.cluster.as_deref_mut() {
            for (topic, payload) in c.outbox.drain(..) {
                publish(&topic, &payload);
            }
        }
    }

    /// Counters of the cluster state, in cluster mode.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster.as_deref().map(|c| ClusterStats {
            remote_endpoints: c.remote.len() as u64,
            ..c.stats
        })
    }

    /// Handles a message on the cluster's topics; false when `topic` is not one of them.
    pub(super) fn handle_cluster_message(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
    ) -> bool {
        let Some(c) = self.cluster.as_deref_mut() else {
            return false;
        };
        let Some(rest) = topic
            .strip_prefix(c.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        if payload.len() > MAX_RECORD {
            c.stats.ignored += 1;
            return true;
        }
        if let Some(rest) = rest.strip_prefix("nodes/") {
            self.handle_node_record(rest, payload);
        } else if let Some(rest) = rest.strip_prefix("presence/") {
            let parsed = rest.split_once('/').and_then(|(bucket, ep)| {
                // A name no device could register with is junk: it would only take memory.
                let fits = ep.len() <= MAX_ENDPOINT_LEN
                    && topic_safe(ep)
                    && bucket.parse::<usize>().ok() == Some(presence_bucket(ep))
                    && super::directory_shard(ep, self.cfg.shards) == self.cfg.shard;
                fits.then_some(ep)
            });
            match parsed {
                Some(ep) => self.handle_presence(now, ep, payload),
                None => {
                    if let Some(c) = self.cluster.as_deref_mut() {
                        c.stats.ignored += 1;
                    }
                }
            }
        }
        true
    }

    fn handle_node_record(&mut self, rest: &str, payload: &[u8]) {
        let (shard, shards) = (self.cfg.shard, self.cfg.shards);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let parsed = rest
            .split_once('/')
            .and_then(|(node, s)| Some((node, s.parse::<u32>().ok()?)))
            // No node runs more shards than MAX_SHARDS: beyond, each junk shard number
            // would grow the node's list of live shards.
            .filter(|(node, s)| valid_node(node) && (*s as usize) < MAX_SHARDS);
        let Some((node, its_shard)) = parsed else {
            c.stats.ignored += 1;
            return;
        };
        let ours = *node == *c.node && its_shard as usize == shard;
        let Some(id) = c.intern(node) else {
            c.stats.ignored += 1;
            return;
        };
        let Some(live) = c.live.get_mut(usize::from(id)) else {
            return;
        };
        if payload.is_empty() {
            live.retain(|s| *s != its_shard);
            if ours && !c.leaving {
                // Cleared while this connection is up (a stale will of an earlier one).
                c.stats.repaired += 1;
                c.push_node_record(shard, shards);
            }
        } else {
            if !live.contains(&its_shard) {
                live.push(its_shard);
            }
            if ours && !c.seen_self {
                c.seen_self = true;
                let live = c.live.iter().filter(|s| !s.is_empty()).count();
                tracing::info!(
                    shard,
                    live_nodes = live,
                    remote_endpoints = c.remote.len(),
                    "cluster view complete: retained records replayed"
                );
            }
        }
    }

    fn handle_presence(&mut self, now: Instant, ep: &str, payload: &[u8]) {
        let held = self.directory.get(ep);
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        let record = if payload.is_empty() {
            None
        } else {
            match serde_json::from_slice::<PresenceRecord<'_>>(payload) {
                Ok(r) if valid_node(&r.node) => Some(r),
                _ => {
                    c.stats.ignored += 1;
                    return;
                }
            }
        };
        let verdict = match (record, held) {
            (None, Some(h)) => Verdict::Rewrite(h.stamp, h.secure),
            (None, None) => {
                c.forget_remote(ep);
                Verdict::Nothing
            }
            (Some(r), Some(_)) if *r.node == *c.node => Verdict::Nothing,
            (Some(r), None) if *r.node == *c.node => Verdict::Clear,
            (Some(r), Some(h)) => {
                // A DTLS registration (authenticated as the name) outranks a plain one,
                // then the later one wins.
                let theirs = (r.secure, r.registered, &*r.node);
                if theirs > (h.secure, h.stamp, &*c.node) {
                    c.set_remote(ep, &r.node, r.secure, r.registered);
                    Verdict::TakenOver(h.location, h.owner)
                } else {
                    Verdict::Rewrite(h.stamp, h.secure)
                }
            }
            (Some(r), None) => {
                c.set_remote(ep, &r.node, r.secure, r.registered);
                Verdict::Nothing
            }
        };
        match verdict {
            Verdict::Nothing => {}
            Verdict::Rewrite(stamp, secure) => {
                c.stats.repaired += 1;
                c.push_presence(ep, Some((stamp, secure)));
            }
            Verdict::Clear => c.push_presence(ep, None),
            Verdict::TakenOver(location, owner) => {
                c.stats.taken_over += 1;
                self.directory.release(ep, location);
                self.route(now, owner, Handoff::Evict { location });
            }
        }
    }

    /// The stamp of a new registration of `ep` at `now`: wall-clock ms, but always above
    /// the stamp it replaces here (`held`) and any other node's record of the name, so a
    /// re-registration wins even against a node whose clock runs ahead.
    pub(super) fn fresh_stamp(&self, now: Instant, ep: &str, held: Option<u64>) -> u64 {
        let Some(c) = self.cluster.as_deref() else {
            return 0;
        };
        let since = now.saturating_duration_since(self.epoch).as_millis();
        let wall = c
            .epoch_unix_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX));
        let above = held
            .into_iter()
            .chain(c.remote(ep).map(|r| r.stamp))
            .max()
            .map_or(0, |s| s.saturating_add(1));
        wall.max(above)
    }

    /// Whether another node holds `ep` over DTLS, which a plain registration here must
    /// not take over (as on one node: see `Shard::claim`).
    pub(super) fn held_securely_elsewhere(&self, ep: &str) -> bool {
        self.cluster
            .as_deref()
            .and_then(|c| c.remote(ep))
            .is_some_and(|r| r.secure)
    }

    /// A new registration of `ep` on this node: its presence record is written.
    pub(super) fn announce(&mut self, ep: &str, stamp: u64, secure: bool) {
        if let Some(c) = self.cluster.as_deref_mut() {
            c.forget_remote(ep);
            c.push_presence(ep, Some((stamp, secure)));
        }
    }

    /// The registration `location` of `ep` ended: the directory forgets it and, if it
    /// still held the name, its presence record is cleared.
    pub(super) fn release_name(&mut self, ep: &str, location: Location) {
        if self.directory.release(ep, location) {
            if let Some(c) = self.cluster.as_deref_mut() {
                c.push_presence(ep, None);
            }
        }
    }

    /// Whether this shard, directory of `ep` that no registration on this node holds,
    /// answers a command for it with 4.04: always on a single node; in a cluster when no
    /// live node holds the name and this node is the lowest-named live one.
    pub(super) fn answers_unknown(&self, ep: &str) -> bool {
        let Some(c) = self.cluster.as_deref() else {
            return true;
        };
        if c.remote(ep).is_some_and(|r| c.is_live(r.node)) {
            return false;
        }
        c.is_lowest_live()
    }

    /// Writes the next batch of presence records due after a (re)connect.
    pub(super) fn handle_reassert(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_deref_mut() else {
            return;
        };
        if c.next_reassert.is_none_or(|at| at > now) {
            return;
        }
        let from = c.reassert.len().saturating_sub(REASSERT_BATCH);
        let batch: Vec<Arc<str>> = c.reassert.drain(from..).collect();
        c.next_reassert = (!c.reassert.is_empty()).then(|| now + REASSERT_INTERVAL);
        for ep in batch {
            let Some(held) = self.directory.get(&ep) else {
                continue;
            };
            if let Some(c) = self.cluster.as_deref_mut() {
                c.push_presence(&ep, Some((held.stamp, held.secure)));
            }
        }
    }

    /// When [`Shard::handle_reassert`] next has work.
    pub(super) fn reassert_timeout(&self) -> Option<Instant> {
        self.cluster.as_deref().and_then(|c| c.next_reassert)
    }
}
