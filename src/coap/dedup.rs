//! Deduplication of Confirmable messages from devices (RFC 7252 §4.5, §4.8.2).
//!
//! A device retransmits a CON until it sees the ACK; a retransmission must be answered
//! with the same response, not processed again. The cache remembers `(peer, MID)` for
//! [`EXCHANGE_LIFETIME`] together with the response sent for it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ahash::AHashMap;

/// How long a MID stays in use for one peer (RFC 7252 §4.8.2, EXCHANGE_LIFETIME with the
/// default transmission parameters): 247 s. A CON seen again within it is a duplicate.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// Largest number of spare response buffers kept for reuse, so steady-state insertion
/// does not allocate while an idle cache does not hold on to unbounded memory.
const MAX_SPARE_BUFFERS: usize = 1024;

/// Expired entries removed by each [`DedupCache::check`], so that expiry keeps pace with
/// insertion even when [`DedupCache::expire`] is called rarely.
const EXPIRE_PER_CHECK: usize = 2;

/// Entries [`DedupCache::expire`] removes at most per call, bounding its latency.
pub const EXPIRE_BATCH: usize = 4096;

/// Outcome of [`DedupCache::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup<'a> {
    /// First time this `(peer, MID)` is seen: process it (a pending entry is recorded).
    New,
    /// A retransmission: answer with these response bytes (`Some`), or drop it while the
    /// original is still being processed (`None`).
    Duplicate(Option<&'a [u8]>),
}

type Key = (SocketAddr, u16);

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    response: Option<Vec<u8>>,
}

/// Bounded cache of recently seen `(peer, MID)` pairs and the responses sent for them.
///
/// Entries live for [`EXCHANGE_LIFETIME`]; at capacity the oldest is evicted. Time is an
/// argument and must not go backwards between calls.
#[derive(Debug)]
pub struct DedupCache {
    capacity: usize,
    entries: AHashMap<Key, Entry>,
    /// Insertion order; a record whose `seq` no longer matches its entry is stale.
    order: VecDeque<(u64, Instant, Key)>,
    next_seq: u64,
    spare: Vec<Vec<u8>>,
}

impl DedupCache {
    /// A cache holding at most `capacity` (at least 1) exchanges.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupCache {
            capacity,
            entries: AHashMap::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::new(),
            next_seq: 0,
            spare: Vec::new(),
        }
    }

    /// Looks up a CON received at `now`; records it as pending when it is new.
    pub fn check(&mut self, now: Instant, peer: SocketAddr, mid: u16) -> Dedup<'_> {
        self.expire_bounded(now, EXPIRE_PER_CHECK);
        let key = (peer, mid);
        let live = self.entries.get(&key).is_some_and(|e| !expired(now, e.at));
        if !live {
            self.insert(now, key);
            return Dedup::New;
        }
        Dedup::Duplicate(self.entries.get(&key).and_then(|e| e.response.as_deref()))
    }

    /// Stores the response sent for `(peer, mid)`, to be replayed for duplicates. Ignored
    /// when the entry is gone (evicted or expired).
    pub fn record_response(&mut self, peer: SocketAddr, mid: u16, response: &[u8]) {
        let Some(entry) = self.entries.get_mut(&(peer, mid)) else {
            return;
        };
        let mut buf = entry
            .response
            .take()
            .or_else(|| self.spare.pop())
            .unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(response);
        entry.response = Some(buf);
    }

    /// Removes entries older than [`EXCHANGE_LIFETIME`], at most [`EXPIRE_BATCH`] per call;
    /// returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.expire_bounded(now, EXPIRE_BATCH)
    }

    /// Exchanges remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, now: Instant, key: Key) {
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                if !self.pop_oldest() {
                    break;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, now, key));
        let entry = Entry {
            seq,
            at: now,
            response: None,
        };
        if let Some(old) = self.entries.insert(key, entry) {
            self.recycle(old.response);
        }
    }

    /// Drops expired order records, at most `max`; returns the entries removed.
    fn expire_bounded(&mut self, now: Instant, max: usize) -> usize {
        let mut removed = 0;
        for _ in 0..max {
            let Some(&(seq, at, key)) = self.order.front() else {
                break;
            };
            if !expired(now, at) {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(old) = self.entries.remove(&key) {
                    self.recycle(old.response);
                }
                removed += 1;
            }
        }
        removed
    }

    /// Pops order records, oldest first, until one removes a live entry (stale records
    /// are skipped). Returns whether an entry was removed.
    fn pop_oldest(&mut self) -> bool {
        while let Some((seq, _, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(old) = self.entries.remove(&key) {
                    self.recycle(old.response);
                }
                return true;
            }
        }
        false
    }

    fn recycle(&mut self, buf: Option<Vec<u8>>) {
        if let Some(buf) = buf {
            if self.spare.len() < MAX_SPARE_BUFFERS {
                self.spare.push(buf);
            }
        }
    }
}

fn expired(now: Instant, at: Instant) -> bool {
    now.saturating_duration_since(at) > EXCHANGE_LIFETIME
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], port))
    }

    #[test]
    fn duplicate_gets_cached_response() {
        let mut cache = DedupCache::new(16);
        let t = Instant::now();
        assert_eq!(cache.check(t, peer(1), 7), Dedup::New);
        assert_eq!(cache.check(t, peer(1), 7), Dedup::Duplicate(None));
        cache.record_response(peer(1), 7, &[0x60, 0x44, 0, 7]);
        let later = t + Duration::from_secs(3);
        assert_eq!(
            cache.check(later, peer(1), 7),
            Dedup::Duplicate(Some(&[0x60, 0x44, 0, 7][..]))
        );
        assert_eq!(
            cache.check(later, peer(2), 7),
            Dedup::New,
            "other port, other exchange"
        );
        assert_eq!(
            cache.check(later, peer(1), 8),
            Dedup::New,
            "other MID, other exchange"
        );
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn entries_expire_after_exchange_lifetime() {
        let mut cache = DedupCache::new(16);
        let t = Instant::now();
        assert_eq!(cache.check(t, peer(1), 1), Dedup::New);
        cache.record_response(peer(1), 1, b"resp");
        assert_eq!(
            cache.check(t + Duration::from_secs(10), peer(1), 2),
            Dedup::New
        );
        assert_eq!(cache.expire(t + EXCHANGE_LIFETIME), 0);
        assert_eq!(
            cache.check(t + EXCHANGE_LIFETIME, peer(1), 1),
            Dedup::Duplicate(Some(&b"resp"[..]))
        );
        assert_eq!(
            cache.expire(t + EXCHANGE_LIFETIME + Duration::from_secs(1)),
            1
        );
        assert_eq!(cache.len(), 1);
        let late = t + EXCHANGE_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            cache.check(late, peer(1), 1),
            Dedup::New,
            "MID reusable after the lifetime"
        );
        assert_eq!(
            cache.expire(late + EXCHANGE_LIFETIME + Duration::from_secs(1)),
            2
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn expired_entry_is_new_without_expire_call() {
        let mut cache = DedupCache::new(16);
        let t = Instant::now();
        for mid in 0..5 {
            assert_eq!(cache.check(t, peer(1), mid), Dedup::New);
        }
        let late = t + EXCHANGE_LIFETIME + Duration::from_secs(1);
        assert_eq!(cache.check(late, peer(1), 4), Dedup::New);
        cache.record_response(peer(1), 4, b"x");
        assert_eq!(
            cache.check(late, peer(1), 4),
            Dedup::Duplicate(Some(&b"x"[..]))
        );
        assert_eq!(cache.len(), 1, "each check retires a few expired entries");
        assert_eq!(cache.expire(late), 0);
        assert_eq!(cache.check(late, peer(1), 3), Dedup::New);
    }

    #[test]
    fn capacity_evicts_oldest() {
        let mut cache = DedupCache::new(3);
        let t = Instant::now();
        for mid in 0..3 {
            assert_eq!(
                cache.check(t + Duration::from_secs(mid.into()), peer(1), mid),
                Dedup::New
            );
        }
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), 3),
            Dedup::New
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), 1),
            Dedup::Duplicate(None)
        );
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), 0),
            Dedup::New,
            "evicted"
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), 2),
            Dedup::Duplicate(None)
        );
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), 1),
            Dedup::New,
            "evicted next"
        );
    }

    #[test]
    fn record_for_unknown_exchange_is_ignored() {
        let mut cache = DedupCache::new(2);
        cache.record_response(peer(1), 1, b"resp");
        assert!(cache.is_empty());
    }
}
