//! The counters of one shard.

use crate::translate::Operation;

/// Counters of one shard; the runtime exports them as metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Datagrams handed to the shard (including forwarded ones).
    pub datagrams: u64,
    /// Datagrams that did not parse as CoAP.
    pub malformed: u64,
    /// Retransmitted CONs answered from the exchange cache.
    pub duplicates: u64,
    /// Successful registrations.
    pub registered: u64,
    /// Successful updates.
    pub updated: u64,
    /// Deregistrations.
    pub deregistered: u64,
    /// Registrations removed at lifetime expiry.
    pub expired: u64,
    /// Registrations replaced by a newer one of the same name.
    pub replaced: u64,
    /// Address changes (NAT rebinding).
    pub rebound: u64,
    /// Requests answered with 4.xx or 5.xx.
    pub rejected: u64,
    /// Registrations refused because of `max_connections` or `max_conn_rate`.
    pub overloaded: u64,
    /// Datagrams forwarded to another shard.
    pub forwarded: u64,
    /// Commands received for endpoints on this shard.
    pub commands: u64,
    /// Commands answered with an error (bad JSON, unknown endpoint, full queue, ...).
    pub commands_rejected: u64,
    /// Responses to commands published.
    pub command_responses: u64,
    /// Commands queued for a sleeping queue-mode device.
    pub commands_queued: u64,
    /// Queued commands whose time to live ran out before the device woke (5.04).
    pub commands_expired: u64,
    /// Commands that ran out of retransmissions (`coap_timeout`).
    pub command_timeouts: u64,
    /// Commands the device reset (`coap_reset`).
    pub command_resets: u64,
    /// CON retransmissions sent.
    pub retransmissions: u64,
    /// LwM2M 1.1 Send reports (`POST /dp`) published.
    pub sends: u64,
    /// Observe notifications published.
    pub notifications: u64,
    /// Notifications sent in Block2 blocks dropped before their last block: superseded,
    /// the device stopped answering or answered an error, or over a bound.
    pub notification_bodies_abandoned: u64,
    /// Reordered notifications dropped (RFC 7641 §3.4).
    pub stale_notifications: u64,
    /// Payloads published undecoded because they did not decode.
    pub undecodable: u64,
    /// Datagrams longer than the runtime's receive slot, dropped unread
    /// ([`Shard::handle_truncated`](super::Shard::handle_truncated)).
    pub truncated: u64,
    /// Requests refused with 4.03 because the sender's DTLS identity (or its lack of one)
    /// does not match the endpoint, and datagrams dropped for the same reason.
    pub forbidden: u64,
    /// Command outcomes by `msgType` and result.
    pub command_results: CommandResults,
    /// Round trips of commands, from entering the shard to their response being published.
    pub command_rtt: LatencyBuckets,
}

/// The `msgType` of a command as [`CommandResults`] counts it: an [`Operation`], or `None`
/// for a command that named no known one.
pub type CommandType = Option<Operation>;

/// The label of a [`CommandType`]: the `msgType`, or `other`.
pub fn command_type_label(ty: CommandType) -> &'static str {
    ty.map_or("other", Operation::as_str)
}

/// Rows of [`CommandResults`]: one per operation and one for the rest.
const COMMAND_TYPES: usize = Operation::ALL.len() + 1;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// The device answered 2.xx.
    Ok,
    /// The device (or the gateway, for a bad or unroutable command) answered 4.xx.
    ClientError,
    /// The device or the gateway answered 5.xx (full queue, expired in the queue, ...).
    ServerError,
    /// The device never answered (`coap_timeout`).
    Timeout,
    /// The device reset the request (`coap_reset`).
    Reset,
}

impl CommandResult {
    /// Every result, in index order.
    pub const ALL: [CommandResult; 5] = [
        CommandResult::Ok,
        CommandResult::ClientError,
        CommandResult::ServerError,
        CommandResult::Timeout,
        CommandResult::Reset,
    ];

    /// The result a response code stands for.
    pub fn of(code: crate::coap::Code) -> CommandResult {
        match code.class() {
            2 => CommandResult::Ok,
            4 => CommandResult::ClientError,
            _ => CommandResult::ServerError,
        }
    }

    /// The label value: `ok`, `4xx`, `5xx`, `timeout`, `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandResult::Ok => "ok",
            CommandResult::ClientError => "4xx",
            CommandResult::ServerError => "5xx",
            CommandResult::Timeout => "timeout",
            CommandResult::Reset => "reset",
        }
    }
}

/// Command outcomes, a fixed table indexed by [`CommandType`] and [`CommandResult`]:
/// counting one costs an increment, never an allocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommandResults([[u64; CommandResult::ALL.len()]; COMMAND_TYPES]);

impl CommandResults {
    /// Counts one command of `ty` that ended with `result`.
    pub fn count(&mut self, ty: CommandType, result: CommandResult) {
        self.0[row(ty)][result as usize] += 1;
    }

    /// Commands of `ty` that ended with `result`.
    pub fn get(&self, ty: CommandType, result: CommandResult) -> u64 {
        self.0[row(ty)][result as usize]
    }

    /// Every row's type, in index order: each operation, then `None`.
    pub fn types() -> impl Iterator<Item = CommandType> {
        Operation::ALL.into_iter().map(Some).chain([None])
    }
}

/// The row of `ty`: the operation's index, the last row for `None`.
fn row(ty: CommandType) -> usize {
    ty.map_or(Operation::ALL.len(), |op| op as usize)
}

/// Upper bounds (seconds) of the latency buckets: 10 µs to 60 s, roughly ×2.5 apart, which
/// spans a datagram batch in a shard (tens of µs) and a command to a sleeping device.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0, 10.0, 60.0,
];

/// A latency histogram with the fixed buckets of [`LATENCY_BOUNDS`] (plus +Inf): recording
/// is a few comparisons and an increment, and the runtime exports it as is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LatencyBuckets {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    pub counts: [u64; LATENCY_BOUNDS.len() + 1],
    /// Sum of the observations, nanoseconds.
    pub sum_ns: u64,
}

impl LatencyBuckets {
    /// Records `n` observations of `took`.
    pub fn record_n(&mut self, took: std::time::Duration, n: u64) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.counts[i] += n;
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(n));
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}
