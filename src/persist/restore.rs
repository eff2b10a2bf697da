//! Folding records into the set of live registrations, and sharing them out at start.

use std::net::SocketAddr;
use std::sync::Arc;

use ahash::AHashMap;

use super::record::{Record, StoredEndpoint};
use crate::session::{Location, ShardRestore};

/// Tombstones are kept in a snapshot this long after the removal they record: a record
/// of the same endpoint with a lower generation may still reach a later segment from
/// another shard's buffer (within one flush interval), and must not resurrect it.
pub const TOMBSTONE_RETENTION_SECS: u64 = 600;

/// The live endpoints and recent tombstones of a set of records, by location key.
#[derive(Debug, Default)]
pub struct Merge {
    live: AHashMap<u64, StoredEndpoint>,
    /// key → (generation, removed at, Unix seconds).
    removed: AHashMap<u64, (u32, u64)>,
}

impl Merge {
    /// An empty merge.
    pub fn new() -> Merge {
        Merge::default()
    }

    /// Folds in one record: for each key the highest generation wins; between records of
    /// equal generation the later one does, and a tombstone beats the state it ends.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Endpoint(e) => {
                let generation = e.generation;
                if self
                    .removed
                    .get(&e.key)
                    .is_some_and(|&(g, _)| g >= generation)
                {
                    return;
                }
                if self
                    .live
                    .get(&e.key)
                    .is_some_and(|held| held.generation > generation)
                {
                    return;
                }
                self.removed.remove(&e.key);
                self.live.insert(e.key, *e);
            }
            Record::Removed {
                key,
                generation,
                at_unix,
            } => {
                if self
                    .live
                    .get(&key)
                    .is_some_and(|held| held.generation > generation)
                {
                    return;
                }
                self.live.remove(&key);
                let slot = self.removed.entry(key).or_insert((generation, at_unix));
                if generation >= slot.0 {
                    *slot = (generation, at_unix);
                }
            }
        }
    }

    /// Live endpoints.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// No live endpoints.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        self.removed.len()
    }

    /// The live endpoints, consuming the merge.
    pub fn into_live(self) -> impl Iterator<Item = StoredEndpoint> {
        self.live.into_values()
    }
}

/// What each shard restores, and what restoring found.
#[derive(Debug, Default)]
pub struct RestorePlan {
    /// One entry per shard.
    pub shards: Vec<ShardRestore>,
    /// Registrations restored.
    pub restored: usize,
    /// Registrations that expired while the node was down (an `expired` event each).
    pub expired: usize,
    /// Registrations dropped because a newer registration of the same name exists (a
    /// replacement whose tombstone a crash lost).
    pub superseded: Vec<(u64, u32)>,
}

/// Shares the live endpoints out among `shards` shards.
///
/// An endpoint goes to `owner_of(addr)`, the shard its datagrams will arrive on; its
/// id's home shard (`home % shards`) learns where it went, and the directory shard of
/// its name learns which registration holds the name. Of two endpoints with one name, the
/// later registration is kept.
pub fn plan_restore(
    endpoints: impl IntoIterator<Item = StoredEndpoint>,
    now_unix: u64,
    shards: usize,
    owner_of: impl Fn(&SocketAddr) -> usize,
    directory_of: impl Fn(&str) -> usize,
) -> RestorePlan {
    let shards = shards.max(1);
    let mut plan = RestorePlan {
        shards: (0..shards).map(|_| ShardRestore::default()).collect(),
        ..RestorePlan::default()
    };
    let mut live = Vec::new();
    for e in endpoints {
        if e.expires_unix <= now_unix {
            plan.expired += 1;
            let owner = owner_of(&e.addr) % shards;
            plan.shards[owner].expired.push(e);
        } else {
            live.push(e);
        }
    }
    // Of two registrations of one name, keep the later (a replacement whose tombstone a
    // crash lost).
    let mut keep = vec![true; live.len()];
    let mut by_name: AHashMap<&str, usize> = AHashMap::with_capacity(live.len());
    for (i, e) in live.iter().enumerate() {
        if let Some(held) = by_name.insert(&e.ep, i) {
            let h = &live[held];
            let (loser, winner) =
                if (e.registered_unix, e.generation) > (h.registered_unix, h.generation) {
                    (held, i)
                } else {
                    (i, held)
                };
            keep[loser] = false;
            by_name.insert(&e.ep, winner);
            plan.superseded
                .push((live[loser].key, live[loser].generation));
        }
    }
    drop(by_name);
    let by_name = live
        .into_iter()
        .zip(keep)
        .filter_map(|(e, keep)| keep.then_some(((), e)));
    for (_, e) in by_name {
        let owner = owner_of(&e.addr) % shards;
        let location = Location {
            home: e.home,
            key: e.key,
        };
        let home = usize::from(e.home) % shards;
        if home != owner {
            plan.shards[home].moved.push((e.key, owner));
        }
        let name: Arc<str> = e.ep.as_str().into();
        plan.shards[directory_of(&name) % shards].claims.push((
            Arc::clone(&name),
            location,
            owner,
            e.security != crate::dtls::Security::None,
            e.registered_unix.saturating_mul(1000),
        ));
        plan.restored += 1;
        plan.shards[owner].endpoints.push((name, e));
    }
    plan
}
