//! Persistence on a shard: every change to a registration is encoded into the shard's
//! journal buffer, which the runtime hands to the node's journal writer each
//! `persistence.flush_interval`; at start the runtime restores what the journal kept.
//!
//! The shard writes whole endpoint states, not deltas: a record names the endpoint by its
//! location key and carries a generation that grows with every change, so records from
//! several shards' buffers (an endpoint that moved after a NAT rebinding) merge by taking
//! the highest generation, in whatever order they reached the disk.
//!
//! What is journaled: Register, Update (lifetime, binding, object list, address), moves
//! between shards, observations started and cancelled, and removal (deregister, expiry,
//! replacement), and the commands a queue-mode device has waiting while it sleeps. Not
//! journaled: an observation's sequence number as each notification arrives (it is
//! written with the next change of the endpoint), commands in flight, and the exchange
//! cache.

use std::sync::Arc;
use std::time::Instant;

use super::downlink::Downlink;
use super::{directory_shard, Endpoint, Location, Shard};
use crate::lwm2m::{Binding, Registration, Version};
use crate::persist::{self, EndpointRef, StoredEndpoint};
use crate::translate::Event;

/// A shard's journal buffer and the wall-clock time of its epoch.
#[derive(Debug)]
pub(super) struct Journal {
    buf: Vec<u8>,
    /// Unix seconds at the shard's epoch: the instant deadlines are counted from.
    epoch_unix: u64,
}

/// What one shard restores at start (built by [`crate::persist::plan_restore`]).
#[derive(Debug, Default)]
pub struct ShardRestore {
    /// Registrations this shard holds, each with its name shared with the directory.
    pub endpoints: Vec<(Arc<str>, StoredEndpoint)>,
    /// Registrations whose lifetime ended while the node was down: an `expired` event
    /// each, and a tombstone so the next start does not announce them again.
    pub expired: Vec<StoredEndpoint>,
    /// Endpoints whose id names this shard as home and that live on another: key → owner.
    pub moved: Vec<(u64, usize)>,
    /// Directory entries of names that hash to this shard: name, location, owner, made
    /// over DTLS, and when it registered (Unix ms, the stamp of its presence record).
    pub claims: Vec<(Arc<str>, Location, usize, bool, u64)>,
}

impl Shard {
    /// Turns on journaling. `epoch_unix` is the wall-clock time, in Unix seconds, of the
    /// `now` the shard was created with.
    pub fn enable_journal(&mut self, epoch_unix: u64) {
        self.journal = Some(Journal {
            buf: Vec::with_capacity(64 * 1024),
            epoch_unix,
        });
    }

    /// Moves the journal bytes written since the last call into `out` (appending).
    pub fn take_journal(&mut self, out: &mut Vec<u8>) {
        if let Some(j) = &mut self.journal {
            out.append(&mut j.buf);
        }
    }

    /// Journal bytes waiting to be taken.
    pub fn pending_journal(&self) -> usize {
        self.journal.as_ref().map_or(0, |j| j.buf.len())
    }

    /// A location for a new registration: this shard as home and a fresh random key.
    pub(super) fn new_location(&mut self) -> Location {
        let home = u8::try_from(self.cfg.shard).unwrap_or(u8::MAX);
        loop {
            let key = self.keys.next_key();
            // A repeat among this shard's endpoints is a 2^-64 event per pair, but a key
            // must name one registration only.
            if !self.endpoints.contains_raw_key(key) {
                return Location { home, key };
            }
        }
    }

    /// Journals the current state of the endpoint at `location`, under a new generation.
    pub(super) fn journal_endpoint(&mut self, location: Location) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        ep.generation = ep.generation.wrapping_add(1);
        let ep = &*ep;
        let reg = &ep.registration;
        let observations: Vec<persist::ObservationRef<'_>> = ep
            .downlink
            .as_deref()
            .map(|d| d.observation_refs().collect())
            .unwrap_or_default();
        // Queued commands survive a restart only for queue-mode devices: for others they
        // are in flight within seconds, and a command in flight is not journaled.
        let epoch = self.epoch;
        let queued: Vec<persist::QueuedRef<'_>> = match ep.downlink.as_deref() {
            Some(d) if reg.queue_mode => d
                .queued()
                .map(|(command, expires)| persist::QueuedRef {
                    command,
                    expires_unix: journal.epoch_unix
                        + expires.saturating_duration_since(epoch).as_secs(),
                })
                .collect(),
            _ => Vec::new(),
        };
        persist::encode_endpoint(
            &mut journal.buf,
            &EndpointRef {
                key: location.key,
                home: location.home,
                generation: ep.generation,
                ep: &reg.ep,
                addr: ep.addr,
                registered_unix: journal
                    .epoch_unix
                    .saturating_add_signed(i64::from(ep.registered)),
                expires_unix: journal.epoch_unix + u64::from(ep.expires),
                lifetime: reg.lifetime,
                version: reg.version.as_str(),
                binding: reg.binding.as_str(),
                params: &reg.params,
                object_list: reg.object_list.as_deref(),
                security: ep.security,
                queued: &queued,
            },
            &observations,
        );
    }

    /// Journals the end of the registration of `key`, whose last state had `generation`.
    pub(super) fn journal_removed(&mut self, now: Instant, key: u64, generation: u32) {
        let at_unix = self.unix(now);
        let Some(journal) = &mut self.journal else {
            return;
        };
        persist::encode_removed(&mut journal.buf, key, generation.wrapping_add(1), at_unix);
    }

    /// Unix seconds at `now` (whole seconds after the epoch's wall-clock time).
    fn unix(&self, now: Instant) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.epoch_unix) + u64::from(self.secs(now))
    }

    /// Restores registrations kept by the journal. Call after [`Shard::enable_journal`]
    /// (the wall clock comes from it) and before the first datagram.
    ///
    /// Endpoints get the remaining part of their lifetime; expired ones produce an
    /// `expired` event and a tombstone. Restored state is not journaled again: its
    /// records are on disk.
    pub fn restore(&mut self, now: Instant, restore: ShardRestore) {
        let now_unix = self.unix(now);
        for (name, stored) in restore.endpoints {
            let location = Location {
                home: stored.home,
                key: stored.key,
            };
            let remaining = stored.expires_unix.saturating_sub(now_unix);
            let expires = self.deadline(now, u32::try_from(remaining).unwrap_or(u32::MAX));
            // Before this start, so negative: its Register is never taken for one in
            // flight.
            let ago = now_unix.saturating_sub(stored.registered_unix).max(1);
            let registered = i32::try_from(ago)
                .map_or(i32::MIN, |ago| self.secs_signed(now) - ago)
                .min(-1);
            let object_list = stored.object_list.map(|l| self.object_lists.resolve(l));
            let mut registration = Registration {
                ep: name,
                lifetime: stored.lifetime,
                version: Version::parse(&stored.version).unwrap_or(Version::V1_0),
                binding: Binding::parse(stored.binding).unwrap_or(Binding::UDP),
                queue_mode: false,
                params: stored.params,
                object_list,
            };
            registration.queue_mode = registration.compute_queue_mode(&self.cfg.psm_apns);
            let downlink = (!stored.observations.is_empty())
                .then(|| Box::new(Downlink::restored(now, stored.observations)));
            if let Some(dl) = &downlink {
                for t in dl.tokens() {
                    self.token_owner.insert(t, location);
                }
            }
            self.endpoints.insert(
                location,
                Endpoint {
                    home: location.home,
                    generation: stored.generation,
                    registration,
                    addr: stored.addr,
                    expires,
                    registered,
                    register_mid: 0,
                    security: stored.security,
                    downlink,
                },
            );
            self.expiry.push(std::cmp::Reverse((expires, location.key)));
            // Commands a sleeping device had waiting, acknowledged before the restart.
            for q in stored.queued {
                let left = q.expires_unix.saturating_sub(now_unix);
                let expires = now + std::time::Duration::from_secs(left);
                self.enqueue_command_until(now, location, &q.command, Some(expires), None);
            }
        }
        for (key, owner) in restore.moved {
            self.moved.insert(key, owner);
        }
        for (ep, location, owner, secure, stamp) in restore.claims {
            debug_assert_eq!(directory_shard(&ep, self.cfg.shards), self.cfg.shard);
            self.directory.insert(ep, location, owner, secure, stamp);
        }
        for gone in restore.expired {
            self.stats.expired += 1;
            self.journal_removed(now, gone.key, gone.generation);
            self.publish_event(&gone.ep, gone.addr, Event::Expired);
        }
    }
}
