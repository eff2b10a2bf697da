//! The control channel: requests from outside the data path (the HTTP API) to one shard,
//! answered on a oneshot. One bounded channel per shard, beside the handoff channels; the
//! shard serves it in a task of its own, so nothing on the per-message path takes a lock.

use std::sync::Arc;

use futures_channel::oneshot;

use crate::dtls::server::DtlsStats;
use crate::session::{
    ClientCursor, ClientFilter, ClientInfo, ClusterStats, LatencyBuckets, ShardStats,
};
use crate::uplink::UplinkStats;

/// Requests queued per shard before senders wait: the API sends one or a few per HTTP
/// request, so this absorbs a burst of scrapes and listings without holding much.
pub const CONTROL_CHANNEL: usize = 256;

/// A request to one shard.
#[derive(Debug)]
pub enum Control {
    /// Counters and gauges of the shard.
    Snapshot(oneshot::Sender<ShardSnapshot>),
    /// How many clients match the filter.
    Count {
        /// Which clients.
        filter: Arc<ClientFilter>,
        /// The count.
        reply: oneshot::Sender<usize>,
    },
    /// Up to `limit` clients matching the filter, from `cursor` on.
    List {
        /// Which clients.
        filter: Arc<ClientFilter>,
        /// Where to start.
        cursor: ClientCursor,
        /// Most clients returned.
        limit: usize,
        /// The page.
        reply: oneshot::Sender<ClientPage>,
    },
    /// One client's details, if this shard holds it.
    Client {
        /// Endpoint name.
        ep: String,
        /// The details.
        reply: oneshot::Sender<Option<ClientInfo>>,
    },
    /// Deregister a client, if this shard holds it.
    Deregister {
        /// Endpoint name.
        ep: String,
        /// Whether it was held here.
        reply: oneshot::Sender<bool>,
    },
    /// A command (MQTT command JSON) for a client, if this shard holds it.
    Command {
        /// Endpoint name.
        ep: String,
        /// The command JSON.
        payload: Vec<u8>,
        /// Whether the caller waits for the outcome.
        wait: bool,
        /// Whether it was taken.
        reply: oneshot::Sender<CommandTaken>,
    },
}

/// One shard's page of a listing.
#[derive(Debug, Default)]
pub struct ClientPage {
    /// The clients.
    pub items: Vec<ClientInfo>,
    /// Where the shard's next page starts; `None` when this page reached its end.
    pub next: Option<ClientCursor>,
}

/// What a shard did with an API command.
#[derive(Debug)]
pub enum CommandTaken {
    /// The shard does not hold the endpoint.
    NotHere,
    /// Taken; with a receiver of the response JSON when the caller waits.
    Taken(Option<oneshot::Receiver<Vec<u8>>>),
    /// Held here, but too many callers already wait on this shard.
    Busy,
}

/// One shard's counters and gauges, for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// Shard index.
    pub shard: usize,
    /// Registered endpoints.
    pub registered: usize,
    /// The sans-IO core's counters.
    pub stats: ShardStats,
    /// The MQTT uplink's counters and gauges.
    pub uplink: UplinkStats,
    /// Whether the uplink is connected to the broker.
    pub connected: bool,
    /// DTLS counters, when the DTLS listener is on.
    pub dtls: Option<DtlsStats>,
    /// Established DTLS sessions.
    pub dtls_sessions: usize,
    /// Datagram batch latency in the shard.
    pub pipeline: LatencyBuckets,
    /// Replies dropped because the socket buffer stayed full.
    pub send_dropped: u64,
    /// Datagrams handed to the sockets.
    pub datagrams_out: u64,
    /// Handoffs sent to other shards (forwarded datagrams, moves, directory updates).
    pub handoffs_out: u64,
    /// Datagrams queued in the shard and not yet sent.
    pub pending_transmits: usize,
    /// MQTT messages queued in the shard and not yet handed to the uplink.
    pub pending_publishes: usize,
    /// Handoffs waiting for room in another shard's channel.
    pub handoff_backlog: usize,
    /// Journal bytes not yet handed to the writer.
    pub pending_journal: usize,
    /// API callers waiting for a command's outcome.
    pub waiting_commands: usize,
    /// Times a receive loop stopped reading devices because the broker fell behind.
    pub receive_pauses: u64,
    /// How long receive loops stayed stopped, all told.
    pub receive_paused: std::time::Duration,
    /// Cluster counters, when cluster mode is on.
    pub cluster: Option<ClusterStats>,
}
