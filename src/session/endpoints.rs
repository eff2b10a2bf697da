//! The registered endpoints of a shard and their indexes by address and name.
//!
//! Sized for hundreds of thousands of endpoints per shard (SPEC §7 P4): records are boxed
//! so the table's empty slots cost a pointer, and the address and name indexes hold only
//! the location, hashing the key that the record itself stores.

use std::net::SocketAddr;
use std::sync::Arc;

use ahash::AHashMap;
use hashbrown::HashTable;

use super::downlink::Downlink;
use super::Location;
use crate::dtls::Security;
use crate::lwm2m::Registration;

/// A registered endpoint.
pub(super) struct Endpoint {
    /// Home shard of its location id (the key is the table's).
    pub(super) home: u8,
    /// Changes journaled for it so far; orders its records across shards' journals.
    pub(super) generation: u32,
    /// Its registration parameters.
    pub(super) registration: Registration,
    /// Where its datagrams come from. Changed only through [`Endpoints::set_addr`], which
    /// keeps the address index in step.
    pub(super) addr: SocketAddr,
    /// Lifetime deadline, whole seconds after the shard's epoch (rounded up).
    pub(super) expires: u32,
    /// When the Register that created it arrived, seconds after the shard's epoch;
    /// negative for a registration restored from before this start.
    pub(super) registered: i32,
    /// Message id of that Register, to recognise its retransmissions (meaningless once
    /// restored: that Register was answered before the restart, and `registered` < 0).
    pub(super) register_mid: u16,
    /// How it registered; only a peer with the same identity may act for it.
    pub(super) security: Security,
    /// Downlink state, while commands or observations exist.
    pub(super) downlink: Option<Box<Downlink>>,
}

/// Endpoints by location key, with indexes by address and by name.
///
/// Tables hold the 64-bit key of a [`Location`] only; the home digit lives in the record
/// and a lookup by a full location checks it, so an id with the right key and another
/// home is as unknown as any other.
///
/// Invariant: every key in `by_addr` (`by_name`) is in `records`, and the index entry
/// sits under the hash of that record's address (name).
pub(super) struct Endpoints {
    records: AHashMap<u64, Box<Endpoint>>,
    by_addr: HashTable<u64>,
    by_name: HashTable<u64>,
    hasher: ahash::RandomState,
}

impl Endpoints {
    /// Tables sized for `capacity` endpoints up front.
    ///
    /// Growing an index means rehashing every entry through its record (a lookup and a
    /// pointer chase each): at 500k endpoints that stalled a shard for ~350 ms in the
    /// middle of a registration storm. Sized once, they never grow below `capacity`; the
    /// memory is what the tables would reach at that count anyway, and untouched pages of
    /// it are not resident.
    pub(super) fn with_capacity(capacity: usize) -> Endpoints {
        Endpoints {
            records: AHashMap::with_capacity(capacity),
            by_addr: HashTable::with_capacity(capacity),
            by_name: HashTable::with_capacity(capacity),
            hasher: ahash::RandomState::new(),
        }
    }

    /// Endpoints held.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn contains_key(&self, location: &Location) -> bool {
        self.get(location).is_some()
    }

    /// Whether some endpoint, of whatever home, holds `key`.
    pub(super) fn contains_raw_key(&self, key: u64) -> bool {
        self.records.contains_key(&key)
    }

    pub(super) fn get(&self, location: &Location) -> Option<&Endpoint> {
        self.records
            .get(&location.key)
            .map(|b| &**b)
            .filter(|e| e.home == location.home)
    }

    /// The endpoint, mutably; its `addr` and `registration.ep` must not be changed here.
    pub(super) fn get_mut(&mut self, location: &Location) -> Option<&mut Endpoint> {
        self.records
            .get_mut(&location.key)
            .map(|b| &mut **b)
            .filter(|e| e.home == location.home)
    }

    /// The endpoint holding `key`, with its location.
    pub(super) fn by_key(&self, key: u64) -> Option<(Location, &Endpoint)> {
        self.records
            .get(&key)
            .map(|e| (Location { home: e.home, key }, &**e))
    }

    /// The location of the endpoint holding `key`.
    pub(super) fn location_of(&self, key: u64) -> Option<Location> {
        self.by_key(key).map(|(location, _)| location)
    }

    /// Buckets of the name index: positions for [`Endpoints::at_bucket`].
    pub(super) fn buckets(&self) -> usize {
        self.by_name.num_buckets()
    }

    /// The endpoint indexed at bucket position `index` of the name index, if any. Positions
    /// stay put while the index does not grow, so a listing can resume at one.
    pub(super) fn at_bucket(&self, index: usize) -> Option<(Location, &Endpoint)> {
        let key = self.by_name.get_bucket(index)?;
        self.by_key(*key)
    }

    /// The endpoint that last registered or updated from `addr`.
    pub(super) fn by_addr(&self, addr: SocketAddr) -> Option<Location> {
        let records = &self.records;
        let key = self.by_addr.find(self.hasher.hash_one(addr), |k| {
            records.get(k).is_some_and(|e| e.addr == addr)
        })?;
        self.location_of(*key)
    }

    /// The endpoint registered under `name`.
    pub(super) fn by_name(&self, name: &str) -> Option<Location> {
        let records = &self.records;
        let key = self.by_name.find(self.hasher.hash_one(name), |k| {
            records.get(k).is_some_and(|e| *e.registration.ep == *name)
        })?;
        self.location_of(*key)
    }

    /// Adds an endpoint; it becomes the one indexed under its address and its name. The
    /// record's `home` is set from `location`.
    pub(super) fn insert(&mut self, location: Location, mut endpoint: Endpoint) {
        self.remove_key(location.key);
        endpoint.home = location.home;
        let location = location.key;
        let (addr, name) = (endpoint.addr, endpoint.registration.ep.clone());
        self.records.insert(location, Box::new(endpoint));
        self.index_addr(location, addr);
        let (records, hasher) = (&self.records, &self.hasher);
        let hash = hasher.hash_one(&*name);
        let slot = self.by_name.entry(
            hash,
            |l| records.get(l).is_some_and(|e| e.registration.ep == name),
            |l| {
                records
                    .get(l)
                    .map_or(0, |e| hasher.hash_one(&*e.registration.ep))
            },
        );
        match slot {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = location,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(location);
            }
        }
    }

    /// Removes an endpoint and the index entries that name it.
    pub(super) fn remove(&mut self, location: Location) -> Option<Box<Endpoint>> {
        self.get(&location)?;
        self.remove_key(location.key)
    }

    fn remove_key(&mut self, location: u64) -> Option<Box<Endpoint>> {
        let endpoint = self.records.get(&location)?;
        let addr_hash = self.hasher.hash_one(endpoint.addr);
        if let Ok(o) = self.by_addr.find_entry(addr_hash, |l| *l == location) {
            o.remove();
        }
        let name_hash = self.hasher.hash_one(&*endpoint.registration.ep);
        if let Ok(o) = self.by_name.find_entry(name_hash, |l| *l == location) {
            o.remove();
        }
        self.records.remove(&location)
    }

    /// Records that the endpoint's datagrams now come from `addr`.
    pub(super) fn set_addr(&mut self, location: Location, addr: SocketAddr) {
        if self.get(&location).is_none() {
            return;
        }
        let location = location.key;
        let Some(endpoint) = self.records.get(&location) else {
            return;
        };
        let old_hash = self.hasher.hash_one(endpoint.addr);
        if let Ok(o) = self.by_addr.find_entry(old_hash, |l| *l == location) {
            o.remove();
        }
        if let Some(endpoint) = self.records.get_mut(&location) {
            endpoint.addr = addr;
        }
        self.index_addr(location, addr);
    }

    fn index_addr(&mut self, location: u64, addr: SocketAddr) {
        let (records, hasher) = (&self.records, &self.hasher);
        let slot = self.by_addr.entry(
            hasher.hash_one(addr),
            |l| records.get(l).is_some_and(|e| e.addr == addr),
            |l| records.get(l).map_or(0, |e| hasher.hash_one(e.addr)),
        );
        match slot {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = location,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(location);
            }
        }
    }
}

/// A directory entry: which registration holds a name, and where it lives.
struct Claim {
    ep: Arc<str>,
    key: u64,
    home: u8,
    owner: u8,
    /// Registered over DTLS: a plain registration of the name never evicts it.
    secure: bool,
    /// When it registered, Unix ms: its presence record's stamp in cluster mode (0 for a
    /// registration made outside cluster mode).
    stamp: u64,
}

/// What the directory knows of the registration holding a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    /// The registration.
    pub(super) location: Location,
    /// Shard it lives on.
    pub(super) owner: usize,
    /// Registered over DTLS.
    pub(super) secure: bool,
    /// Its stamp in the cluster's presence record.
    pub(super) stamp: u64,
}

/// Directory of the names that hash to this shard: name → (registration, owner shard).
pub(super) struct Directory {
    table: HashTable<Claim>,
    hasher: ahash::RandomState,
}

impl Directory {
    /// A directory sized for `capacity` names, for the reason given at
    /// [`Endpoints::with_capacity`] (its rehash chases each name's string).
    pub(super) fn with_capacity(capacity: usize) -> Directory {
        Directory {
            table: HashTable::with_capacity(capacity),
            hasher: ahash::RandomState::new(),
        }
    }

    /// The registration holding `ep`.
    pub(super) fn get(&self, ep: &str) -> Option<Held> {
        self.table
            .find(self.hasher.hash_one(ep), |c| *c.ep == *ep)
            .map(|c| Held {
                location: Location {
                    home: c.home,
                    key: c.key,
                },
                owner: usize::from(c.owner),
                secure: c.secure,
                stamp: c.stamp,
            })
    }

    /// Every name held, shared.
    pub(super) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.table.iter().map(|c| &c.ep)
    }

    /// Whether some registration holds `ep`.
    pub(super) fn contains_key(&self, ep: &str) -> bool {
        self.get(ep).is_some()
    }

    /// Records that `location` on `owner` holds `ep`, registered at `stamp`.
    pub(super) fn insert(
        &mut self,
        ep: Arc<str>,
        location: Location,
        owner: usize,
        secure: bool,
        stamp: u64,
    ) {
        let hasher = &self.hasher;
        let claim = Claim {
            stamp,
            key: location.key,
            home: location.home,
            // Shard indexes fit a location's home digit, so a byte.
            owner: u8::try_from(owner).unwrap_or(u8::MAX),
            secure,
            ep,
        };
        match self.table.entry(
            hasher.hash_one(&*claim.ep),
            |c| c.ep == claim.ep,
            |c| hasher.hash_one(&*c.ep),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = claim,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(claim);
            }
        }
    }

    /// Forgets `ep` if `location` still holds it; whether it did.
    pub(super) fn release(&mut self, ep: &str, location: Location) -> bool {
        match self.table.find_entry(self.hasher.hash_one(ep), |c| {
            *c.ep == *ep && c.home == location.home && c.key == location.key
        }) {
            Ok(o) => {
                o.remove();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    /// An endpoint record fills a 128-byte heap chunk (glibc: size + 8, rounded to 16): one
    /// byte more costs 16 bytes per endpoint, 16 MB at a million (SPEC §7 P4).
    #[test]
    fn an_endpoint_record_fits_its_heap_chunk() {
        assert!(std::mem::size_of::<super::Endpoint>() <= 120);
    }
}
