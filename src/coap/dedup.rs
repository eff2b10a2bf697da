//! Deduplication of Confirmable messages from devices (RFC 7252 §4.5, §4.8.2).
//!
//! A device retransmits a CON until it sees the ACK; a retransmission must be answered
//! with the same response, not processed again. The cache remembers `(peer, MID)` for
//! [`EXCHANGE_LIFETIME`] together with the response sent for it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

/// How long a MID stays in use for one peer (RFC 7252 §4.8.2, EXCHANGE_LIFETIME with the
/// default transmission parameters): 247 s. A CON seen again within it is a duplicate.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// Resolution of the stored receive times: 100 ms is far finer than the lifetime and lets
/// a `u32` span 13 years.
const TICK: Duration = Duration::from_millis(100);

/// [`EXCHANGE_LIFETIME`] in ticks.
const LIFETIME_TICKS: u32 = (EXCHANGE_LIFETIME.as_millis() / TICK.as_millis()) as u32;

/// Responses up to this length are stored inside the entry without a heap allocation; a
/// Register's 2.01 (header, token, `rd/<id>`) is about 20 bytes.
pub const INLINE_RESPONSE: usize = 30;

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

/// `(peer IP as IPv6 octets, port, MID)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    ip: [u8; 16],
    port: u16,
    mid: u16,
    /// Over DTLS: the same address and message id over plain UDP is another exchange, so a
    /// spoofed plain datagram never gets a DTLS peer's response replayed in the clear.
    secure: bool,
}

impl Key {
    fn new(peer: SocketAddr, secure: bool, mid: u16) -> Key {
        let ip = match peer {
            SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
            SocketAddr::V6(a) => a.ip().octets(),
        };
        Key {
            ip,
            port: peer.port(),
            mid,
            secure,
        }
    }
}

/// The response remembered for an exchange.
#[derive(Debug)]
enum Stored {
    /// Still being processed: duplicates are dropped.
    Pending,
    /// A short response, inline.
    Inline {
        len: u8,
        bytes: [u8; INLINE_RESPONSE],
    },
    /// A longer response.
    Heap(Box<[u8]>),
    /// Superseded by a newer entry of the same key or removed; skipped when popped.
    Dead,
}

/// One exchange, in arrival order.
#[derive(Debug)]
struct Record {
    key: Key,
    /// Arrival, in ticks since the cache's epoch.
    at: u32,
    response: Stored,
}

impl Record {
    fn response(&self) -> Option<&[u8]> {
        match &self.response {
            Stored::Inline { len, bytes } => bytes.get(..usize::from(*len)),
            Stored::Heap(bytes) => Some(bytes),
            Stored::Pending | Stored::Dead => None,
        }
    }
}

/// Bounded cache of recently seen `(peer, MID)` pairs and the responses sent for them.
///
/// Entries live for [`EXCHANGE_LIFETIME`]; at capacity the oldest is evicted. Time is an
/// argument and must not go backwards between calls. Records sit in a ring in arrival
/// order (so expiry and eviction pop the front) and a hash table of their sequence
/// numbers finds them by key: about 60 bytes per exchange.
#[derive(Debug)]
pub struct DedupCache {
    capacity: usize,
    /// Records in arrival order; the front one has sequence number `head`.
    records: VecDeque<Record>,
    head: u32,
    /// Sequence numbers of the live records, hashed by key.
    index: HashTable<u32>,
    hasher: ahash::RandomState,
    /// Time zero of the stored ticks: the first `now` seen.
    epoch: Option<Instant>,
}

impl DedupCache {
    /// A cache holding at most `capacity` (at least 1) exchanges.
    pub fn new(capacity: usize) -> Self {
        DedupCache {
            capacity: capacity.max(1),
            records: VecDeque::new(),
            head: 0,
            index: HashTable::new(),
            hasher: ahash::RandomState::new(),
            epoch: None,
        }
    }

    /// Looks up a CON received at `now` from `peer` (over DTLS when `secure`); records it
    /// as pending when it is new.
    pub fn check(&mut self, now: Instant, peer: SocketAddr, secure: bool, mid: u16) -> Dedup<'_> {
        let now = self.ticks(now);
        self.expire_bounded(now, EXPIRE_PER_CHECK);
        let key = Key::new(peer, secure, mid);
        match self.find(key) {
            Some(pos) if !expired(now, self.records[pos].at) => {
                Dedup::Duplicate(self.records[pos].response())
            }
            found => {
                if let Some(pos) = found {
                    self.remove_at(pos);
                }
                self.insert(now, key);
                Dedup::New
            }
        }
    }

    /// Stores the response sent for `(peer, mid)`, to be replayed for duplicates. Ignored
    /// when the entry is gone (evicted or expired).
    pub fn record_response(&mut self, peer: SocketAddr, secure: bool, mid: u16, response: &[u8]) {
        let Some(pos) = self.find(Key::new(peer, secure, mid)) else {
            return;
        };
        self.records[pos].response = if response.len() <= INLINE_RESPONSE {
            let mut bytes = [0; INLINE_RESPONSE];
            bytes[..response.len()].copy_from_slice(response);
            Stored::Inline {
                len: response.len() as u8,
                bytes,
            }
        } else {
            Stored::Heap(response.into())
        };
    }

    /// Removes entries older than [`EXCHANGE_LIFETIME`], at most [`EXPIRE_BATCH`] per call;
    /// returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let now = self.ticks(now);
        self.expire_bounded(now, EXPIRE_BATCH)
    }

    /// Exchanges remembered.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn ticks(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        let ticks = now.saturating_duration_since(epoch).as_millis() / TICK.as_millis();
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// Position in `records` of the live record of `key`.
    fn find(&self, key: Key) -> Option<usize> {
        let (records, head) = (&self.records, self.head);
        self.index
            .find(self.hasher.hash_one(key), |&seq| {
                records
                    .get(seq.wrapping_sub(head) as usize)
                    .is_some_and(|r| r.key == key)
            })
            .map(|&seq| seq.wrapping_sub(head) as usize)
    }

    fn insert(&mut self, now: u32, key: Key) {
        while self.records.len() >= self.capacity {
            self.pop_front();
        }
        let seq = self.head.wrapping_add(self.records.len() as u32);
        self.records.push_back(Record {
            key,
            at: now,
            response: Stored::Pending,
        });
        let (records, head, hasher) = (&self.records, self.head, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), seq, |&seq| {
            records
                .get(seq.wrapping_sub(head) as usize)
                .map_or(0, |r| hasher.hash_one(r.key))
        });
    }

    /// Takes the record at `pos` out of the index and marks it dead.
    fn remove_at(&mut self, pos: usize) {
        let Some(record) = self.records.get_mut(pos) else {
            return;
        };
        let seq = self.head.wrapping_add(pos as u32);
        if let Ok(entry) = self
            .index
            .find_entry(self.hasher.hash_one(record.key), |&s| s == seq)
        {
            entry.remove();
        }
        record.response = Stored::Dead;
    }

    /// Drops the oldest record; returns whether it was a live entry.
    fn pop_front(&mut self) -> bool {
        let live = self
            .records
            .front()
            .is_some_and(|r| !matches!(r.response, Stored::Dead));
        if live {
            self.remove_at(0);
        }
        if self.records.pop_front().is_some() {
            self.head = self.head.wrapping_add(1);
        }
        live
    }

    /// Drops expired records from the front, at most `max`; returns the entries removed.
    fn expire_bounded(&mut self, now: u32, max: usize) -> usize {
        let mut removed = 0;
        for _ in 0..max {
            let Some(front) = self.records.front() else {
                break;
            };
            if !matches!(front.response, Stored::Dead) && !expired(now, front.at) {
                break;
            }
            if self.pop_front() {
                removed += 1;
            }
        }
        removed
    }
}

fn expired(now: u32, at: u32) -> bool {
    now.saturating_sub(at) > LIFETIME_TICKS
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
        assert_eq!(cache.check(t, peer(1), false, 7), Dedup::New);
        assert_eq!(cache.check(t, peer(1), false, 7), Dedup::Duplicate(None));
        cache.record_response(peer(1), false, 7, &[0x60, 0x44, 0, 7]);
        let later = t + Duration::from_secs(3);
        assert_eq!(
            cache.check(later, peer(1), false, 7),
            Dedup::Duplicate(Some(&[0x60, 0x44, 0, 7][..]))
        );
        assert_eq!(
            cache.check(later, peer(2), false, 7),
            Dedup::New,
            "other port, other exchange"
        );
        assert_eq!(
            cache.check(later, peer(1), false, 8),
            Dedup::New,
            "other MID, other exchange"
        );
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn entries_expire_after_exchange_lifetime() {
        let mut cache = DedupCache::new(16);
        let t = Instant::now();
        assert_eq!(cache.check(t, peer(1), false, 1), Dedup::New);
        cache.record_response(peer(1), false, 1, b"resp");
        assert_eq!(
            cache.check(t + Duration::from_secs(10), peer(1), false, 2),
            Dedup::New
        );
        assert_eq!(cache.expire(t + EXCHANGE_LIFETIME), 0);
        assert_eq!(
            cache.check(t + EXCHANGE_LIFETIME, peer(1), false, 1),
            Dedup::Duplicate(Some(&b"resp"[..]))
        );
        assert_eq!(
            cache.expire(t + EXCHANGE_LIFETIME + Duration::from_secs(1)),
            1
        );
        assert_eq!(cache.len(), 1);
        let late = t + EXCHANGE_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            cache.check(late, peer(1), false, 1),
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
            assert_eq!(cache.check(t, peer(1), false, mid), Dedup::New);
        }
        let late = t + EXCHANGE_LIFETIME + Duration::from_secs(1);
        assert_eq!(cache.check(late, peer(1), false, 4), Dedup::New);
        cache.record_response(peer(1), false, 4, b"x");
        assert_eq!(
            cache.check(late, peer(1), false, 4),
            Dedup::Duplicate(Some(&b"x"[..]))
        );
        assert_eq!(cache.len(), 1, "each check retires a few expired entries");
        assert_eq!(cache.expire(late), 0);
        assert_eq!(cache.check(late, peer(1), false, 3), Dedup::New);
    }

    #[test]
    fn capacity_evicts_oldest() {
        let mut cache = DedupCache::new(3);
        let t = Instant::now();
        for mid in 0..3 {
            assert_eq!(
                cache.check(t + Duration::from_secs(mid.into()), peer(1), false, mid),
                Dedup::New
            );
        }
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), false, 3),
            Dedup::New
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), false, 1),
            Dedup::Duplicate(None)
        );
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), false, 0),
            Dedup::New,
            "evicted"
        );
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), false, 2),
            Dedup::Duplicate(None)
        );
        assert_eq!(
            cache.check(t + Duration::from_secs(5), peer(1), false, 1),
            Dedup::New,
            "evicted next"
        );
    }

    #[test]
    fn long_responses_and_ipv6_peers_are_replayed() {
        let mut cache = DedupCache::new(4);
        let t = Instant::now();
        let v6: SocketAddr = "[2001:db8::7]:5683".parse().expect("address");
        let long = [0xAB; INLINE_RESPONSE + 9];
        assert_eq!(cache.check(t, v6, false, 9), Dedup::New);
        cache.record_response(v6, false, 9, &long);
        let short = [0x60, 0x41, 0, 9];
        assert_eq!(
            cache.check(t, peer(5683), false, 9),
            Dedup::New,
            "other peer"
        );
        cache.record_response(peer(5683), false, 9, &short);
        assert_eq!(
            cache.check(t, v6, false, 9),
            Dedup::Duplicate(Some(&long[..]))
        );
        assert_eq!(
            cache.check(t, peer(5683), false, 9),
            Dedup::Duplicate(Some(&short[..]))
        );
    }

    #[test]
    fn reused_key_after_expiry_keeps_the_cache_bounded() {
        let mut cache = DedupCache::new(2);
        let t = Instant::now();
        for round in 0..10u64 {
            let now = t + (EXCHANGE_LIFETIME + Duration::from_secs(1)) * round as u32;
            assert_eq!(
                cache.check(now, peer(1), false, 1),
                Dedup::New,
                "round {round}"
            );
            assert_eq!(cache.check(now, peer(1), false, 1), Dedup::Duplicate(None));
            assert_eq!(cache.len(), 1);
            assert!(cache.records.len() <= 2);
        }
    }

    #[test]
    fn record_for_unknown_exchange_is_ignored() {
        let mut cache = DedupCache::new(2);
        cache.record_response(peer(1), false, 1, b"resp");
        assert!(cache.is_empty());
    }
}
