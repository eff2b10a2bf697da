//! What the management API asks of a shard: its clients, one client's details, removing
//! one, and the outcomes of commands it sent ([`Shard::handle_api_command`]).
//!
//! Listings walk the name index by bucket position, so a page resumes where the last one
//! ended ([`ClientCursor`]) and the caller bounds each step's work with a budget of
//! buckets: a shard holding a million endpoints answers a page in O(limit) and spends
//! at most a budget's worth of work between two turns of its datagram loop.

use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use super::{location, Endpoint, Location, Shard};
use crate::dtls::Security;
use crate::translate::Event;

/// Outcomes waiting for the runtime to take them; beyond this, outcomes of API commands
/// are dropped (their callers time out) rather than growing without bound.
const MAX_ANSWERS: usize = 4096;

/// Which clients a listing returns; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFilter {
    /// The endpoint name, exactly.
    pub endpoint_name: Option<String>,
    /// A substring of the endpoint name.
    pub like: Option<String>,
    /// How the client registered.
    pub security: Option<Security>,
    /// Whether the client uses queue mode.
    pub queue_mode: Option<bool>,
}

impl ClientFilter {
    /// Whether the filter lets every client through.
    pub fn is_empty(&self) -> bool {
        *self == ClientFilter::default()
    }

    fn matches(&self, ep: &Endpoint) -> bool {
        let name = &*ep.registration.ep;
        self.endpoint_name.as_deref().is_none_or(|n| n == name)
            && self.like.as_deref().is_none_or(|l| name.contains(l))
            && self.security.is_none_or(|s| s == ep.security)
            && self
                .queue_mode
                .is_none_or(|q| q == ep.registration.queue_mode)
    }
}

/// Where a listing of one shard goes on: a position in its name index, and how many more
/// matching clients to pass over from there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCursor {
    /// Bucket position in the name index.
    pub bucket: usize,
    /// Matching clients still to pass over before collecting.
    pub skip: usize,
}

/// Where a listing step stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStep {
    /// The page is full; the next page starts at this cursor.
    Full(ClientCursor),
    /// The budget ran out; go on from this cursor.
    Paused(ClientCursor),
    /// The end of this shard's clients was reached.
    End,
}

/// One registered client, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Endpoint client name.
    pub endpoint_name: String,
    /// Registration location, `rd/<id>`.
    pub location: String,
    /// The device's current address.
    pub address: SocketAddr,
    /// The shard holding it.
    pub shard: usize,
    /// Registered lifetime, seconds.
    pub lifetime: u32,
    /// Seconds until the registration expires unless updated.
    pub lifetime_left: u64,
    /// Seconds since it registered (or, if restored, since this start at least).
    pub registered_secs_ago: u64,
    /// LwM2M version.
    pub lwm2m: &'static str,
    /// Binding mode.
    pub binding: String,
    /// Whether it uses queue mode.
    pub queue_mode: bool,
    /// `none`, `psk` or `x509`.
    pub security: &'static str,
    /// Alternate path of its objects.
    pub alternate_path: String,
    /// Other registration query parameters (details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<(String, String)>>,
    /// Object and instance paths it announced (details only: a dozen strings per client
    /// would triple the cost of a listing page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_list: Option<Vec<String>>,
    /// Paths observed (details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observations: Option<Vec<String>>,
    /// Commands queued behind the one in flight (details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_commands: Option<usize>,
    /// Whether a command is in flight (details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_in_flight: Option<bool>,
}

impl Shard {
    /// The client registered here under `ep`, with its observations and queued commands.
    pub fn client(&self, now: Instant, ep: &str) -> Option<ClientInfo> {
        let location = self.endpoints.by_name(ep)?;
        let endpoint = self.endpoints.get(&location)?;
        let mut info = self.client_info(now, location, endpoint);
        let reg = &endpoint.registration;
        info.params = Some(reg.params.clone());
        info.object_list = Some(
            reg.object_list
                .as_deref()
                .map(|l| l.links.iter().map(|l| l.path.clone()).collect())
                .unwrap_or_default(),
        );
        let dl = endpoint.downlink.as_deref();
        info.observations = Some(dl.map(|d| d.observed_paths()).unwrap_or_default());
        info.queued_commands = Some(dl.map_or(0, |d| d.queue.len()));
        info.command_in_flight = Some(dl.is_some_and(|d| d.command_in_flight()));
        Some(info)
    }

    /// Collects up to `limit` clients matching `filter` into `out`, starting at `cursor`
    /// and looking at no more than `budget` buckets of the name index.
    pub fn list_clients(
        &self,
        now: Instant,
        filter: &ClientFilter,
        mut cursor: ClientCursor,
        limit: usize,
        budget: usize,
        out: &mut Vec<ClientInfo>,
    ) -> ListStep {
        let end = self.endpoints.buckets();
        let stop = cursor.bucket.saturating_add(budget).min(end);
        while cursor.bucket < stop {
            if out.len() >= limit {
                return ListStep::Full(cursor);
            }
            let at = cursor.bucket;
            cursor.bucket += 1;
            let Some((location, ep)) = self.endpoints.at_bucket(at) else {
                continue;
            };
            if !filter.matches(ep) {
                continue;
            }
            if cursor.skip > 0 {
                cursor.skip -= 1;
                continue;
            }
            out.push(self.client_info(now, location, ep));
        }
        if cursor.bucket >= end {
            ListStep::End
        } else if out.len() >= limit {
            ListStep::Full(cursor)
        } else {
            ListStep::Paused(cursor)
        }
    }

    /// Counts the clients matching `filter` in at most `budget` buckets from `from`;
    /// returns the count and where to go on (`None` at the end). Without a filter the
    /// count is known at once.
    pub fn count_clients(
        &self,
        filter: &ClientFilter,
        from: usize,
        budget: usize,
    ) -> (usize, Option<usize>) {
        if filter.is_empty() {
            return (self.endpoints.len(), None);
        }
        let end = self.endpoints.buckets();
        let stop = from.saturating_add(budget).min(end);
        let count = (from..stop)
            .filter_map(|i| self.endpoints.at_bucket(i))
            .filter(|(_, ep)| filter.matches(ep))
            .count();
        (count, (stop < end).then_some(stop))
    }

    /// Removes the client registered here under `ep` as if it had deregistered: pending
    /// commands are answered 4.04 and the `deregister` event is published. The device
    /// learns of it at its next Update (4.04) and registers again. `false` when this shard
    /// does not hold `ep`.
    pub fn deregister_client(&mut self, now: Instant, ep: &str) -> bool {
        let Some(location) = self.endpoints.by_name(ep) else {
            return false;
        };
        self.stats.deregistered += 1;
        self.remove_endpoint(now, location, Event::Deregister, true);
        true
    }

    /// The next outcome of an API command: its tag and the response JSON published for it.
    pub fn poll_answer(&mut self) -> Option<(u64, Vec<u8>)> {
        self.answers.pop_front()
    }

    /// Hands the JSON just published to the API request `tag`, if one waits.
    pub(super) fn answer(&mut self, tag: Option<u64>) {
        if let Some(tag) = tag {
            if self.answers.len() < MAX_ANSWERS {
                self.answers.push_back((tag, self.json.clone()));
            }
        }
    }

    fn client_info(&self, now: Instant, location: Location, ep: &Endpoint) -> ClientInfo {
        let reg = &ep.registration;
        let mut id = [0u8; location::ID_LEN];
        let now_secs = i64::from(self.secs(now));
        let list = reg.object_list.as_deref();
        ClientInfo {
            endpoint_name: reg.ep.to_string(),
            location: format!("rd/{}", location.encode(&mut id)),
            address: ep.addr,
            shard: self.cfg.shard,
            lifetime: reg.lifetime,
            // The deadline is rounded up to whole seconds; never show more than the lifetime.
            lifetime_left: u64::try_from(i64::from(ep.expires) - now_secs)
                .unwrap_or(0)
                .min(u64::from(reg.lifetime)),
            registered_secs_ago: u64::try_from(now_secs - i64::from(ep.registered)).unwrap_or(0),
            lwm2m: reg.version.as_str(),
            binding: reg.binding.as_str().to_owned(),
            queue_mode: reg.queue_mode,
            security: ep.security.as_str(),
            alternate_path: list.map_or_else(|| "/".to_owned(), |l| l.alternate_path.clone()),
            params: None,
            object_list: None,
            observations: None,
            queued_commands: None,
            command_in_flight: None,
        }
    }
}
