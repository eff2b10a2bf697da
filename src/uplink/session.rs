//! Sans-IO MQTT 3.1.1 client session of one shard.
//!
//! [`UplinkSession`] holds everything the uplink knows about its broker connection: the
//! queue of messages not yet sent (the offline buffer while the broker is unreachable), the
//! QoS 1 messages in flight until their PUBACK, the remembered subscriptions, the keepalive
//! timer and the commands received from the broker. It never touches a socket or reads the
//! clock: the driver feeds it bytes, transport events and `now`, and drains the bytes to
//! write with [`UplinkSession::poll_transmit`] — the same contract as quinn-proto.
//!
//! Control packets are encoded and incoming packets decoded with rumqttc's `mqttbytes`
//! codec. Publishes are encoded once, from the caller's borrowed topic and payload, into
//! reused packet queues ([`super::fifo`]) and copied from there into the driver's output
//! buffer: a steady stream of publishes allocates nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    self, ConnAck, Connect, ConnectReturnCode, Disconnect, LastWill, Packet, PingReq, PubAck,
    SubAck, Subscribe, SubscribeFilter, SubscribeReasonCode, Unsubscribe,
};
use rumqttc::mqttbytes::{self, QoS};

use super::fifo::{Frame, PacketFifo};
use super::publish::{write_publish, DUP, MAX_TOPIC_LEN, RETAIN};
use crate::config::{Qos, Secret};

/// QoS 1 publishes awaiting PUBACK at once: bounds memory per connection and the burst
/// re-sent after a reconnect, and stays far below the 65535 packet ids.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Largest packet accepted from the broker: commands are small JSON documents, and a
/// larger frame is more likely a corrupt stream than a real command.
pub const MAX_INCOMING_PACKET: usize = 1024 * 1024;

/// Commands received and not yet taken by [`UplinkSession::poll_incoming_publish`]: a
/// consumer that stalls must not grow memory without bound; beyond, commands are dropped
/// and counted.
pub const MAX_INCOMING_QUEUED: usize = 65_536;

/// Topic filters per SUBSCRIBE packet: one packet for a typical set, yet a bounded SUBACK.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 64;

/// How long the broker has to answer CONNECT with CONNACK before the connection is dropped.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest interval between two warnings about dropped messages (counts are in stats).
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Most messages buffered for the broker, while connected, before the session reports
/// itself congested ([`UplinkSession::is_congested`]) and the shard stops reading devices
/// until the broker has taken half of them: 40 ms of backlog at 100 k messages/s per
/// shard, so a broker slower than the devices adds bounded latency and the devices'
/// datagrams wait (or are dropped) in the kernel, unread, instead of being processed, and
/// their CON messages acknowledged, only to be dropped from a full buffer. Smaller when
/// `offline_buffer` is: half the buffer's bound while connected.
pub const CONGESTION_HIGH: usize = 4096;

/// Holes (out-of-order PUBACKs) tolerated in the in-flight window beyond twice its live
/// packets before it is compacted.
const IN_FLIGHT_SLACK: usize = 64;

/// An uplink protocol failure; the driver drops the connection and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The broker answered CONNECT with a refusal.
    #[error("broker refused the connection: {reason}")]
    ConnectionRefused {
        /// The CONNACK return code, in words.
        reason: &'static str,
    },
    /// The broker sent bytes that are not a valid MQTT 3.1.1 packet.
    #[error("malformed packet from broker: {0}")]
    Malformed(mqttbytes::Error),
    /// The broker sent a valid packet that a client must not receive at this point.
    #[error("unexpected {0} from broker")]
    Unexpected(&'static str),
}

/// One message to publish, borrowed: the session copies it into its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// Full topic name.
    pub topic: &'a str,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Delivery guarantee.
    pub qos: Qos,
}

/// Parameters of a session, from `[mqtt]` plus the shard's client id.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// MQTT client id, `<prefix>-<node>-<shard>`.
    pub client_id: String,
    /// Username, if any.
    pub username: Option<String>,
    /// Password, if any (sent only with a username, as MQTT 3.1.1 requires); redacted in
    /// `Debug` output.
    pub password: Option<Secret>,
    /// Keep-alive interval announced in CONNECT.
    pub keep_alive: Duration,
    /// Most packets written per [`UplinkSession::poll_transmit`] call.
    pub max_batch: usize,
    /// Messages held while the broker is unreachable.
    pub offline_buffer: usize,
}

/// Counters and gauges of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// PUBLISH packets written for the first time.
    pub published: u64,
    /// QoS 1 publishes written again (DUP) after a reconnect.
    pub redelivered: u64,
    /// QoS 1 publishes acknowledged by the broker.
    pub acked: u64,
    /// Messages dropped because the buffer was full.
    pub dropped_overflow: u64,
    /// QoS 0 messages lost because the connection dropped while they were being written.
    pub dropped_qos0_disconnect: u64,
    /// Messages refused because MQTT cannot encode them (empty or oversized topic or payload).
    pub dropped_invalid: u64,
    /// Messages waiting to be sent (gauge).
    pub buffered: u64,
    /// QoS 1 messages sent and not yet acknowledged (gauge).
    pub in_flight: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// PUBLISH packets received from the broker.
    pub incoming: u64,
    /// Received publishes dropped because nobody took them.
    pub incoming_dropped: u64,
    /// Topic filters the broker refused in a SUBACK.
    pub subscribe_failures: u64,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No transport.
    Down,
    /// Transport up, CONNECT queued or sent, CONNACK not yet received.
    Connecting,
    /// CONNACK received; publishes flow.
    Up,
    /// The broker stopped answering (keepalive or CONNACK timeout): drop the transport.
    Dead,
}

/// A control packet to send before any publish.
#[derive(Debug)]
enum Control {
    Connect,
    Subscribe(Vec<SubscribeFilter>),
    Unsubscribe(Vec<String>),
    PubAck(u16),
    PingReq,
}

/// Packet ids in use (QoS 1 publishes and SUBSCRIBE/UNSUBSCRIBE awaiting their ack).
#[derive(Debug)]
struct PacketIds {
    in_use: Box<[u64; 1024]>,
    next: u16,
}

impl PacketIds {
    fn new() -> Self {
        PacketIds {
            in_use: Box::new([0; 1024]),
            next: 1,
        }
    }

    fn is_used(&self, id: u16) -> bool {
        self.in_use[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    /// The next free id in 1..=65535, wrapping and skipping ids still in use.
    fn allocate(&mut self) -> u16 {
        loop {
            let id = self.next;
            self.next = if self.next == u16::MAX {
                1
            } else {
                self.next + 1
            };
            if !self.is_used(id) {
                self.in_use[usize::from(id) / 64] |= 1 << (id % 64);
                return id;
            }
        }
    }

    fn release(&mut self, id: u16) {
        self.in_use[usize::from(id) / 64] &= !(1 << (id % 64));
    }

    fn clear(&mut self) {
        self.in_use.fill(0);
    }
}

/// The MQTT client state of one shard; see the module documentation.
#[derive(Debug)]
pub struct UplinkSession {
    opts: SessionOptions,
    state: LinkState,
    ever_connected: bool,
    control: VecDeque<Control>,
    /// QoS 0 PUBLISH packets not yet sent, oldest first.
    pending_qos0: PacketFifo,
    /// QoS 1 PUBLISH packets not yet sent (or to be re-sent), oldest first; their packet
    /// id is filled in when they are written.
    pending_qos1: PacketFifo,
    /// Publish order across both queues.
    next_seq: u64,
    /// QoS 1 publishes sent, in send order, until their PUBACK.
    in_flight: PacketFifo,
    /// SUBSCRIBE/UNSUBSCRIBE packet ids awaiting SUBACK/UNSUBACK.
    awaiting_suback: Vec<u16>,
    ids: PacketIds,
    subscriptions: AHashMap<String, Qos>,
    /// Topic of the Last Will (an empty retained message), if any.
    will: Option<String>,
    incoming: VecDeque<(String, Bytes)>,
    /// QoS 0 publishes handed to the driver whose write is not yet confirmed.
    unconfirmed_qos0: u64,
    connect_sent_at: Option<Instant>,
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
    ping_sent_at: Option<Instant>,
    drops_since_log: u64,
    last_drop_log: Option<Instant>,
    /// Set when the buffer reaches the high mark, cleared when it is back at the low one
    /// ([`CONGESTION_HIGH`]).
    congested: bool,
    stats: UplinkStats,
}

fn to_mqtt_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

fn refusal_reason(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::BadClientId => "client identifier rejected",
        ConnectReturnCode::ServiceUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

impl UplinkSession {
    /// A session with nothing queued and no transport.
    pub fn new(opts: SessionOptions) -> Self {
        UplinkSession {
            opts,
            state: LinkState::Down,
            ever_connected: false,
            control: VecDeque::new(),
            pending_qos0: PacketFifo::default(),
            pending_qos1: PacketFifo::default(),
            next_seq: 0,
            in_flight: PacketFifo::default(),
            awaiting_suback: Vec::new(),
            ids: PacketIds::new(),
            subscriptions: AHashMap::new(),
            will: None,
            incoming: VecDeque::new(),
            unconfirmed_qos0: 0,
            connect_sent_at: None,
            last_sent: None,
            last_received: None,
            ping_sent_at: None,
            drops_since_log: 0,
            last_drop_log: None,
            congested: false,
            stats: UplinkStats::default(),
        }
    }

    /// The options this session was created with.
    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// Queues a message. QoS 1 messages are kept until the broker acknowledges them. The
    /// queue is bounded by `offline_buffer` (at least `max_batch` while connected); on
    /// overflow the oldest QoS 0 message is dropped, or the oldest message if none is QoS 0.
    pub fn publish(&mut self, now: Instant, msg: Outgoing<'_>) {
        self.enqueue(now, msg, false);
    }

    /// Queues a message with the RETAIN flag: the broker keeps it for later subscribers,
    /// and an empty `payload` removes the message it kept on `topic`.
    pub fn publish_retained(&mut self, now: Instant, msg: Outgoing<'_>) {
        self.enqueue(now, msg, true);
    }

    /// The Last Will sent with every CONNECT from now on: if the connection ends without a
    /// DISCONNECT, the broker publishes an empty retained message on `topic`, removing the
    /// record kept there. `None` sends no will.
    pub fn set_will(&mut self, topic: Option<String>) {
        self.will = topic.filter(|t| !t.is_empty() && t.len() <= MAX_TOPIC_LEN);
    }

    fn enqueue(&mut self, now: Instant, msg: Outgoing<'_>, retain: bool) {
        let seq = self.next_seq;
        let qos1 = msg.qos == Qos::AtLeastOnce;
        let queue = if qos1 {
            &mut self.pending_qos1
        } else {
            &mut self.pending_qos0
        };
        let queued = queue.push(|out| {
            let start = out.len();
            let w = write_publish(out, msg.topic, msg.payload, qos1, 0, false)?;
            if retain {
                if let Some(flags) = out.get_mut(start) {
                    *flags |= RETAIN;
                }
            }
            Some(Frame {
                seq,
                len: w.len,
                pkid_at: w.pkid_at,
                pkid: 0,
                live: true,
            })
        });
        if !queued {
            self.stats.dropped_invalid += 1;
            self.note_drop(now);
            return;
        }
        self.next_seq += 1;
        self.enforce_bound(now);
        if self.buffered() >= self.congestion_marks().0 {
            self.congested = true;
        }
    }

    /// Messages waiting to be written.
    fn buffered(&self) -> usize {
        self.pending_qos0.len() + self.pending_qos1.len()
    }

    /// `(high, low)`: congested from `high` buffered messages until back at `low`.
    fn congestion_marks(&self) -> (usize, usize) {
        let bound = self.opts.offline_buffer.max(self.opts.max_batch);
        let high = (bound / 2).clamp(1, CONGESTION_HIGH);
        (high, high / 2)
    }

    fn relieve_congestion(&mut self) {
        if self.congested && self.buffered() <= self.congestion_marks().1 {
            self.congested = false;
        }
    }

    /// Remembers topic filters and subscribes to them now if connected; they are
    /// subscribed again after every reconnect.
    pub fn subscribe(&mut self, filters: Vec<(String, Qos)>) {
        let mut fresh = Vec::new();
        for (filter, qos) in filters {
            if filter.is_empty() || filter.len() > MAX_TOPIC_LEN {
                continue;
            }
            if self.subscriptions.get(&filter) != Some(&qos) {
                self.subscriptions.insert(filter.clone(), qos);
                fresh.push(SubscribeFilter::new(filter, to_mqtt_qos(qos)));
            }
        }
        if self.state == LinkState::Up {
            self.queue_subscribes(fresh);
        }
    }

    /// Forgets topic filters and unsubscribes from them now if connected.
    pub fn unsubscribe(&mut self, filters: Vec<String>) {
        let gone: Vec<String> = filters
            .into_iter()
            .filter(|f| self.subscriptions.remove(f).is_some())
            .collect();
        if self.state == LinkState::Up {
            for chunk in gone.chunks(MAX_FILTERS_PER_SUBSCRIBE) {
                self.control.push_back(Control::Unsubscribe(chunk.to_vec()));
            }
        }
    }

    fn queue_subscribes(&mut self, mut filters: Vec<SubscribeFilter>) {
        while !filters.is_empty() {
            let rest = filters.split_off(filters.len().min(MAX_FILTERS_PER_SUBSCRIBE));
            self.control.push_back(Control::Subscribe(filters));
            filters = rest;
        }
    }

    /// The transport is up: queue CONNECT. Publishes wait for CONNACK.
    pub fn on_connected(&mut self, now: Instant) {
        if self.state != LinkState::Down {
            self.on_disconnected(now);
        }
        self.reset_transport();
        self.state = LinkState::Connecting;
        self.control.push_back(Control::Connect);
        self.connect_sent_at = Some(now);
        self.last_received = Some(now);
    }

    /// The transport is gone: QoS 1 messages in flight return to the front of the queue
    /// in order (to be re-sent with DUP); QoS 0 messages being written are lost and counted.
    pub fn on_disconnected(&mut self, now: Instant) {
        if self.state == LinkState::Down {
            return;
        }
        self.in_flight
            .prepend_to(&mut self.pending_qos1, |frame, bytes| {
                frame.pkid = 0;
                if let Some(flags) = bytes.first_mut() {
                    *flags |= DUP;
                }
            });
        self.stats.dropped_qos0_disconnect += self.unconfirmed_qos0;
        self.unconfirmed_qos0 = 0;
        self.reset_transport();
        self.state = LinkState::Down;
        self.enforce_bound(now);
    }

    fn reset_transport(&mut self) {
        self.control.clear();
        self.awaiting_suback.clear();
        self.ids.clear();
        self.connect_sent_at = None;
        self.ping_sent_at = None;
        self.last_sent = None;
    }

    /// The driver finished writing everything [`poll_transmit`](Self::poll_transmit)
    /// returned so far: QoS 0 messages in it are no longer at risk of a local drop.
    pub fn on_transmit_complete(&mut self) {
        self.unconfirmed_qos0 = 0;
    }

    /// Consumes every complete packet in `bytes` (a partial packet stays for the next
    /// call). An error means the connection must be dropped.
    pub fn handle_incoming(
        &mut self,
        now: Instant,
        bytes: &mut BytesMut,
    ) -> Result<(), UplinkError> {
        loop {
            let packet = match v4::read(bytes, MAX_INCOMING_PACKET) {
                Ok(p) => p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(UplinkError::Malformed(e)),
            };
            self.last_received = Some(now);
            self.handle_packet(packet)?;
        }
    }

    fn handle_packet(&mut self, packet: Packet) -> Result<(), UplinkError> {
        match packet {
            Packet::ConnAck(ConnAck { code, .. }) => {
                if self.state != LinkState::Connecting {
                    return Err(UplinkError::Unexpected("CONNACK"));
                }
                if code != ConnectReturnCode::Success {
                    return Err(UplinkError::ConnectionRefused {
                        reason: refusal_reason(code),
                    });
                }
                self.state = LinkState::Up;
                self.connect_sent_at = None;
                if self.ever_connected {
                    self.stats.reconnects += 1;
                }
                self.ever_connected = true;
                let all: Vec<SubscribeFilter> = self
                    .subscriptions
                    .iter()
                    .map(|(f, q)| SubscribeFilter::new(f.clone(), to_mqtt_qos(*q)))
                    .collect();
                self.queue_subscribes(all);
            }
            Packet::PubAck(PubAck { pkid }) => self.release_in_flight(pkid),
            Packet::SubAck(SubAck { pkid, return_codes }) => {
                self.release_suback(pkid);
                let failed = return_codes
                    .iter()
                    .filter(|c| **c == SubscribeReasonCode::Failure)
                    .count();
                if failed > 0 {
                    self.stats.subscribe_failures += failed as u64;
                    tracing::warn!(failed, "broker refused {failed} topic filter(s)");
                }
            }
            Packet::UnsubAck(ack) => self.release_suback(ack.pkid),
            Packet::PingResp => self.ping_sent_at = None,
            Packet::Publish(p) => {
                if self.state != LinkState::Up {
                    return Err(UplinkError::Unexpected("PUBLISH before CONNACK"));
                }
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => self.control.push_back(Control::PubAck(p.pkid)),
                    QoS::ExactlyOnce => return Err(UplinkError::Unexpected("QoS 2 PUBLISH")),
                }
                self.stats.incoming += 1;
                if self.incoming.len() >= MAX_INCOMING_QUEUED {
                    self.stats.incoming_dropped += 1;
                } else {
                    self.incoming.push_back((p.topic, p.payload));
                }
            }
            Packet::Connect(_) => return Err(UplinkError::Unexpected("CONNECT")),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                return Err(UplinkError::Unexpected("QoS 2 acknowledgement"))
            }
            Packet::Subscribe(_) | Packet::Unsubscribe(_) => {
                return Err(UplinkError::Unexpected("SUBSCRIBE"))
            }
            Packet::PingReq => return Err(UplinkError::Unexpected("PINGREQ")),
            Packet::Disconnect => return Err(UplinkError::Unexpected("DISCONNECT")),
        }
        Ok(())
    }

    fn release_in_flight(&mut self, pkid: u16) {
        if !self.in_flight.release(pkid) {
            tracing::debug!(pkid, "PUBACK for a packet id not in flight");
            return;
        }
        self.ids.release(pkid);
        self.stats.acked += 1;
        // Acks out of order leave holes behind an older message; compact once they
        // outnumber the live entries, so memory stays proportional to the window.
        self.in_flight.compact(IN_FLIGHT_SLACK);
    }

    fn release_suback(&mut self, pkid: u16) {
        if let Some(i) = self.awaiting_suback.iter().position(|id| *id == pkid) {
            self.awaiting_suback.swap_remove(i);
            self.ids.release(pkid);
        }
    }

    /// Writes up to `max_batch` packets into `out` for one socket write: control packets
    /// (CONNECT, SUBSCRIBE, PUBACK, PINGREQ) first, then publishes in publish order.
    /// Returns the number of packets written.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut BytesMut) -> usize {
        let mut written = 0;
        let max = self.opts.max_batch.max(1);
        while written < max {
            let Some(control) = self.control.pop_front() else {
                break;
            };
            self.write_control(control, out);
            written += 1;
        }
        if self.state == LinkState::Up {
            while written < max {
                if !self.write_next_publish(out) {
                    break;
                }
                written += 1;
            }
        }
        if written > 0 {
            self.last_sent = Some(now);
            self.relieve_congestion();
        }
        written
    }

    fn write_control(&mut self, control: Control, out: &mut BytesMut) {
        // Every packet here was validated when queued, so encoding cannot fail.
        let _ = match control {
            Control::Connect => {
                let mut c = Connect::new(self.opts.client_id.clone());
                c.keep_alive = self.opts.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16;
                c.clean_session = true;
                c.last_will = self
                    .will
                    .as_ref()
                    .map(|topic| LastWill::new(topic.clone(), Vec::new(), QoS::AtLeastOnce, true));
                if let Some(user) = &self.opts.username {
                    let password = self.opts.password.as_ref().map_or("", Secret::expose);
                    c.set_login(user.clone(), password);
                }
                c.write(out)
            }
            Control::Subscribe(filters) => {
                let pkid = self.ids.allocate();
                self.awaiting_suback.push(pkid);
                Subscribe { pkid, filters }.write(out)
            }
            Control::Unsubscribe(topics) => {
                let pkid = self.ids.allocate();
                self.awaiting_suback.push(pkid);
                Unsubscribe { pkid, topics }.write(out)
            }
            Control::PubAck(pkid) => PubAck::new(pkid).write(out),
            Control::PingReq => PingReq.write(out),
        };
    }

    /// Writes the oldest pending publish; false when there is none or the QoS 1 window is
    /// full (order is kept across QoS levels, so a full window holds QoS 0 back too).
    fn write_next_publish(&mut self, out: &mut BytesMut) -> bool {
        let take_qos0 = match (self.pending_qos0.front(), self.pending_qos1.front()) {
            (None, None) => return false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(a), Some(b)) => a.seq < b.seq,
        };
        if take_qos0 {
            let Some((_, bytes)) = self.pending_qos0.pop() else {
                return false;
            };
            out.extend_from_slice(bytes);
            self.stats.published += 1;
            self.unconfirmed_qos0 += 1;
            return true;
        }
        if self.in_flight.live() >= MAX_IN_FLIGHT {
            return false;
        }
        let Some((mut frame, bytes)) = self.pending_qos1.pop() else {
            return false;
        };
        frame.pkid = self.ids.allocate();
        if let Some(id) = bytes.get_mut(frame.pkid_at..frame.pkid_at + 2) {
            id.copy_from_slice(&frame.pkid.to_be_bytes());
        }
        out.extend_from_slice(bytes);
        if bytes.first().is_some_and(|flags| flags & DUP != 0) {
            self.stats.redelivered += 1;
        } else {
            self.stats.published += 1;
        }
        self.in_flight.push_bytes(frame, bytes);
        true
    }

    /// Writes DISCONNECT into `out` and marks the session down (graceful close). QoS 1
    /// messages still in flight go back to the queue, as after any disconnect.
    pub fn close(&mut self, now: Instant, out: &mut BytesMut) {
        if self.state == LinkState::Up {
            let _ = Disconnect.write(out);
        }
        self.on_disconnected(now);
    }

    /// Takes the next PUBLISH received from the broker: `(topic, payload)`.
    pub fn poll_incoming_publish(&mut self) -> Option<(String, Bytes)> {
        self.incoming.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LinkState::Down | LinkState::Dead => None,
            LinkState::Connecting => self.connect_sent_at.map(|t| t + CONNACK_TIMEOUT),
            LinkState::Up => match self.ping_sent_at {
                Some(ping) => Some(ping + self.opts.keep_alive / 2),
                None => self.idle_since().map(|t| t + self.opts.keep_alive),
            },
        }
    }

    /// The later of last send and last receive is the start of the idle period; a ping is
    /// due when either direction has been quiet for a keep-alive interval.
    fn idle_since(&self) -> Option<Instant> {
        match (self.last_sent, self.last_received) {
            (Some(s), Some(r)) => Some(s.min(r)),
            (one, other) => one.or(other),
        }
    }

    /// Runs the timers due at `now`: queues PINGREQ, or declares the connection dead when
    /// CONNACK or PINGRESP is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.state {
            LinkState::Connecting => {
                tracing::warn!(client_id = %self.opts.client_id, "no CONNACK from broker within {CONNACK_TIMEOUT:?}");
                self.state = LinkState::Dead;
            }
            LinkState::Up if self.ping_sent_at.is_some() => {
                tracing::warn!(client_id = %self.opts.client_id, "no PINGRESP from broker, connection dead");
                self.state = LinkState::Dead;
            }
            LinkState::Up => {
                self.control.push_back(Control::PingReq);
                self.ping_sent_at = Some(now);
            }
            LinkState::Down | LinkState::Dead => {}
        }
    }

    fn enforce_bound(&mut self, now: Instant) {
        let cap = if self.state == LinkState::Up {
            self.opts.offline_buffer.max(self.opts.max_batch)
        } else {
            self.opts.offline_buffer
        };
        while self.buffered() > cap {
            let dropped = self.pending_qos0.pop().is_some() || self.pending_qos1.pop().is_some();
            if !dropped {
                break;
            }
            self.stats.dropped_overflow += 1;
            self.note_drop(now);
        }
        self.relieve_congestion();
    }

    fn note_drop(&mut self, now: Instant) {
        self.drops_since_log += 1;
        let due = self
            .last_drop_log
            .is_none_or(|t| now.saturating_duration_since(t) >= DROP_LOG_INTERVAL);
        if due {
            tracing::warn!(
                client_id = %self.opts.client_id,
                dropped = self.drops_since_log,
                buffered = self.buffered(),
                "uplink dropped messages (buffer full or unencodable)"
            );
            self.drops_since_log = 0;
            self.last_drop_log = Some(now);
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> UplinkStats {
        UplinkStats {
            buffered: self.buffered() as u64,
            in_flight: self.in_flight.live() as u64,
            ..self.stats
        }
    }

    /// The broker is taking messages more slowly than they come: connected, with
    /// [`CONGESTION_HIGH`] (or half of `offline_buffer`) messages buffered, and not yet
    /// back at half that. The shard stops reading devices meanwhile. Never while the
    /// connection is down: then `offline_buffer` holds what comes, as it is meant to.
    pub fn is_congested(&self) -> bool {
        self.congested && self.state == LinkState::Up
    }

    /// Where the connection stands.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// CONNACK received and the connection not declared dead.
    pub fn is_connected(&self) -> bool {
        self.state == LinkState::Up
    }

    /// The broker stopped answering: the driver must drop the transport and reconnect.
    pub fn is_dead(&self) -> bool {
        self.state == LinkState::Dead
    }

    /// Nothing buffered, in flight or waiting to be written (a graceful flush is done).
    pub fn is_idle(&self) -> bool {
        self.pending_qos0.is_empty()
            && self.pending_qos1.is_empty()
            && self.in_flight.live() == 0
            && self.control.is_empty()
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to write now.
    pub fn wants_transmit(&self) -> bool {
        !self.control.is_empty()
            || (self.state == LinkState::Up
                && (!self.pending_qos0.is_empty()
                    || (!self.pending_qos1.is_empty() && self.in_flight.live() < MAX_IN_FLIGHT)))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
