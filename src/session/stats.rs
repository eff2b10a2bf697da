//! The counters of one shard.

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
    /// ([`Shard::handle_truncated`]).
    pub truncated: u64,
    /// Requests refused with 4.03 because the sender's DTLS identity (or its lack of one)
    /// does not match the endpoint, and datagrams dropped for the same reason.
    pub forbidden: u64,
}
