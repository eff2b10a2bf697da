//! Device management on a shard: MQTT commands become CoAP requests to the endpoint, one
//! in flight per device with a FIFO behind it, CON retransmission per RFC 7252, separate
//! responses, observations — and every outcome is published, including the bad ones.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::CommandResult;
use super::{ip_text, Location, Shard, TopicKind};
use crate::coap::{Code, Message, MessageType};
use crate::content::Content;
use crate::lwm2m::{Definitions, Path, Registry};
use crate::persist;
use crate::translate::{self, CoapRequest};

mod block1;
mod block2;
mod block2_notify;
mod command;
mod complete;
mod con;

use block1::BodyCharge;
pub(super) use block1::MAX_PENDING_BLOCK1_BYTES;
use block2::Block2Body;
use block2_notify::NotifyBody;
use con::{Con, Due};

/// RFC 7252 ACK_TIMEOUT.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 7252 MAX_RETRANSMIT.
pub(super) const MAX_RETRANSMIT: u8 = 4;
/// How long a separate response may take after the empty ACK (RFC 7252 MAX_TRANSMIT_WAIT,
/// 93 s): a device that acknowledged but never answers gets a `coap_timeout`.
pub(super) const SEPARATE_RESPONSE_WAIT: Duration = Duration::from_secs(93);
/// How long the shard counts as interactive ([`Shard::interactive`]) after it sent a
/// request of its own or answered a registration-interface request. A device on loopback
/// or a LAN answers within a few milliseconds and a registering device's next request
/// follows at once; an NB-IoT device's answer takes seconds, beyond any receive
/// moderation window, so a longer span would only keep a busy shard from batching.
pub const INTERACTIVE_SPAN: Duration = Duration::from_millis(50);
/// Observations one endpoint may hold; each costs a token entry and a few strings.
const MAX_OBSERVATIONS: usize = 64;
/// A notification older than the last one by more than this is not "stale" but a new
/// sequence (RFC 7641 §3.4: 128 s).
const OBSERVE_FRESHNESS: Duration = Duration::from_secs(128);
/// The Firmware Update object: its notifications go to `translators.dm_notify` (EMQX
/// publishes them to `v1/up/dm` for the device-management callbacks of an NB-IoT
/// firmware upgrade).
const FIRMWARE_OBJECT: u16 = 5;

/// Per-endpoint downlink state, boxed so idle endpoints pay one pointer.
#[derive(Debug, Default)]
pub(super) struct Downlink {
    in_flight: Option<Exchange>,
    pub(super) queue: VecDeque<Queued>,
    observations: Vec<Observation>,
    /// Notifications whose representation is still arriving in Block2 blocks, at most one
    /// per observation.
    notify_bodies: Vec<NotifyBody>,
    /// A queue-mode device is reachable until then (its last datagram plus
    /// `qmode_time_window`); `None` until it sent something since this state exists.
    pub(super) awake_until: Option<Instant>,
}

impl Downlink {
    /// Tokens the shard must route to this endpoint.
    pub(super) fn tokens(&self) -> impl Iterator<Item = [u8; 8]> + '_ {
        self.in_flight
            .iter()
            .map(|e| e.token)
            .chain(self.observations.iter().map(|o| o.token))
            .chain(self.notify_bodies.iter().map(NotifyBody::token))
    }

    /// Retransmission deadlines of the in-flight exchange and of the requests for
    /// notification blocks, for re-arming after a move between shards.
    pub(super) fn deadlines(&self) -> impl Iterator<Item = (Instant, u16)> + '_ {
        self.in_flight
            .iter()
            .map(|e| (e.con.deadline(), e.con.mid))
            .chain(self.notify_bodies.iter().map(NotifyBody::deadline))
    }

    /// Whether a command's exchange is in flight.
    pub(super) fn command_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Downlink state holding only observations restored from the journal.
    pub(super) fn restored(now: Instant, stored: Vec<persist::StoredObservation>) -> Downlink {
        let observations = stored
            .into_iter()
            .take(MAX_OBSERVATIONS)
            .filter_map(|o| {
                let path = Path::parse(&o.req_path).ok()?;
                Some(Observation {
                    token: o.token,
                    observed: Observed::Path(path),
                    path,
                    echo: o.echo.into(),
                    req_path: o.req_path.into(),
                    last_seq: o.last_seq,
                    last_at: now,
                })
            })
            .collect();
        Downlink {
            observations,
            ..Downlink::default()
        }
    }

    /// The paths observed (`/` for a composite observation).
    pub(super) fn observed_paths(&self) -> Vec<String> {
        self.observations
            .iter()
            .map(|o| o.req_path.to_string())
            .collect()
    }

    /// The commands waiting for the device to wake: the command JSON and its expiry.
    pub(super) fn queued(&self) -> impl Iterator<Item = (&[u8], Instant)> + '_ {
        self.queue.iter().map(|q| (&*q.command, q.expires))
    }

    /// The observations, as the journal records them. Composite observations are left
    /// out: a record holds one path per observation, so after a restart their
    /// notifications meet an unknown token and are reset, which ends them on the device.
    pub(super) fn observation_refs(&self) -> impl Iterator<Item = persist::ObservationRef<'_>> {
        let single = |o: &&Observation| matches!(o.observed, Observed::Path(_));
        self.observations
            .iter()
            .filter(single)
            .map(|o| persist::ObservationRef {
                token: o.token,
                last_seq: o.last_seq,
                echo: &o.echo,
                req_path: &o.req_path,
            })
    }
}

#[derive(Debug)]
pub(super) struct Queued {
    pub(super) echo: Arc<str>,
    pub(super) msg_type: String,
    observe: Option<bool>,
    pub(super) request: CoapRequest,
    /// Not sent by then, it is answered 5.04 `expired` instead (queue mode).
    pub(super) expires: Instant,
    /// The command as it came, journaled while it waits for a sleeping device.
    pub(super) command: Arc<[u8]>,
    /// A body sent in Block1 blocks: its share of the shard's cap.
    charge: Option<BodyCharge>,
    /// The API request waiting for its outcome ([`Shard::poll_answer`]).
    pub(super) tag: Option<u64>,
    /// When the command entered the shard, for its round-trip time.
    entered: Instant,
}

#[derive(Debug)]
struct Exchange {
    echo: Arc<str>,
    msg_type: String,
    req_path: Arc<str>,
    /// The LwM2M path of the request.
    path: Path,
    /// The request, for asking for the next Block2 block of its response.
    request: CoapRequest,
    /// The response body so far, while the device sends it in Block2 blocks.
    block2: Option<Block2Body>,
    /// `Some(true)` for observe, `Some(false)` for cancel-observe.
    observe: Option<bool>,
    token: [u8; 8],
    /// The request on the wire and its retransmission schedule.
    con: Con,
    /// A body sent in Block1 blocks (`request.block1`): its share of the shard's cap,
    /// held until the exchange ends.
    _charge: Option<BodyCharge>,
    /// The API request waiting for its outcome.
    tag: Option<u64>,
    /// When the command entered the shard.
    entered: Instant,
}

/// What an observation watches, which an observe replaces and a cancel ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observed {
    /// One path (observe).
    Path(Path),
    /// A composite observation's paths, sorted: the same set in another order is the
    /// same observation.
    Composite(Box<[Path]>),
}

impl Observed {
    fn of(request: &CoapRequest) -> Observed {
        if request.composite.is_empty() {
            return Observed::Path(request.path);
        }
        let mut paths = request.composite.clone();
        paths.sort_unstable();
        Observed::Composite(paths.into())
    }
}

#[derive(Debug)]
struct Observation {
    token: [u8; 8],
    echo: Arc<str>,
    req_path: Arc<str>,
    observed: Observed,
    /// The request path, for every notification's content: `/` for a composite one,
    /// whose SenML names every value's absolute path.
    path: Path,
    last_seq: Option<u32>,
    last_at: Instant,
}

/// The object definitions that type the values of `ep`: the registry's serving versions
/// but for the objects its object list named in another version ([`ObjectList::pins`],
/// resolved when the list was parsed).
///
/// [`ObjectList::pins`]: crate::lwm2m::ObjectList::pins
pub(super) fn definitions<'a>(
    registry: &'a Registry,
    ep: Option<&'a super::endpoints::Endpoint>,
) -> Definitions<'a> {
    let list = ep.and_then(|ep| ep.registration.object_list.as_deref());
    Definitions::new(registry, list.map_or(&[], |l| &l.pins))
}

/// Where [`Shard::decode_content`] left a payload.
enum Decoded {
    /// In the borrowed values.
    Values,
    /// Decoded into owned content.
    Content(Content),
    /// To publish undecoded at this path.
    Undecoded(Path),
}

/// What a matched response completes.
enum Outcome {
    /// The in-flight exchange's response.
    Response,
    /// A notification with this sequence number for the observation found by its token.
    Notification {
        seq: u32,
        echo: Arc<str>,
        req_path: Arc<str>,
        path: Path,
        /// Its representation reassembled from Block2 blocks; `None`: the payload.
        body: Option<Vec<u8>>,
    },
}

impl Shard {
    /// Whether, within [`INTERACTIVE_SPAN`] of `now`, the shard sent a request of its own
    /// (a command, its retransmission, a block of a transfer) or handled one of the
    /// registration interface: someone waits for an answer (an MQTT application or API
    /// caller, a registering device), so the receive loop should not hold datagrams back
    /// to batch them. Notifications and Sends, which the gateway only forwards, leave it
    /// false.
    pub fn interactive(&self, now: Instant) -> bool {
        self.last_interactive
            .is_some_and(|t| now.saturating_duration_since(t) < INTERACTIVE_SPAN)
    }

    /// Schedules the retransmission check of a request just written to the transmit
    /// buffer; the shard is [interactive](Self::interactive) while its answer is due.
    fn request_sent(&mut self, now: Instant, deadline: Instant, location: Location, mid: u16) {
        self.last_interactive = Some(now);
        self.retransmit
            .push(std::cmp::Reverse((deadline, location, mid)));
    }

    /// Publishes an error response about a command for a registered endpoint, and hands
    /// it to the API request `tag` waiting for it.
    #[allow(clippy::too_many_arguments)]
    fn command_error(
        &mut self,
        location: Location,
        echo: &str,
        msg_type: &str,
        req_path: &str,
        code: Code,
        reason: &str,
        tag: Option<u64>,
    ) {
        self.stats.command_results.count(
            crate::translate::Operation::parse(msg_type),
            CommandResult::of(code),
        );
        self.json.clear();
        translate::write_error(
            &mut self.json,
            echo,
            Some(msg_type),
            Some(req_path),
            code,
            reason,
        );
        self.publish_for(TopicKind::Response, location);
        self.answer(tag);
    }

    /// Publishes `self.json` on the endpoint's topic of `kind`.
    pub(super) fn publish_for(&mut self, kind: TopicKind, location: Location) {
        let Some(ep) = self.endpoints.get(&location) else {
            return;
        };
        let mut peerhost = [0u8; 64];
        let peerhost = ip_text(&ep.addr, &mut peerhost);
        let translator = kind.translator(&self.cfg.translators);
        self.publishes.push(
            &self.cfg.mountpoint,
            translator,
            &ep.registration.ep,
            peerhost,
            &self.json,
        );
    }

    /// Starts the next queued request if nothing is in flight.
    pub(super) fn send_next(&mut self, now: Instant, location: Location) {
        if !self.reachable(now, location) {
            return;
        }
        self.expire_queued(now, location);
        let token = self.tokens.next();
        let mid = self.mids.next();
        let jitter = self.jitter();
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let (addr, security) = (ep.addr, ep.security);
        let journaled = ep.registration.queue_mode;
        let Some(dl) = ep.downlink.as_mut() else {
            return;
        };
        if dl.in_flight.is_some() {
            return;
        }
        let Some(q) = dl.queue.pop_front() else {
            return;
        };
        // Cancelling an observation reuses its token (RFC 7641 §3.6).
        let token = match q.observe {
            Some(false) => {
                let observed = Observed::of(&q.request);
                dl.observations
                    .iter()
                    .find(|o| o.observed == observed)
                    .map_or(token, |o| o.token)
            }
            _ => token,
        };
        let mut datagram = Vec::with_capacity(64 + q.request.payload.len());
        translate::write_coap_request(&q.request, MessageType::Con, mid, &token, &mut datagram);
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&datagram);
        let con = Con::new(now, mid, datagram, jitter);
        let deadline = con.deadline();
        dl.in_flight = Some(Exchange {
            echo: q.echo,
            msg_type: q.msg_type,
            req_path: q.request.req_path.as_str().into(),
            path: q.request.path,
            request: q.request,
            block2: None,
            observe: q.observe,
            token,
            con,
            _charge: q.charge,
            tag: q.tag,
            entered: q.entered,
        });
        self.token_owner.insert(token, location);
        self.request_sent(now, deadline, location, mid);
        self.commit(addr, start, security);
        if journaled {
            // It left the journaled queue.
            self.journal_endpoint(location);
        }
    }

    /// A uniform factor in [0, 0.5) for ACK_RANDOM_FACTOR 1.5.
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64 * 0.5
    }

    /// Retransmission and separate-response deadlines.
    pub(super) fn handle_retransmit(&mut self, now: Instant) {
        while let Some(&std::cmp::Reverse((at, location, mid))) = self.retransmit.peek() {
            if at > now {
                break;
            }
            self.retransmit.pop();
            let Some(ep) = self.endpoints.get_mut(&location) else {
                continue;
            };
            let (addr, security) = (ep.addr, ep.security);
            let Some(ex) = ep
                .downlink
                .as_mut()
                .and_then(|d| d.in_flight.as_mut())
                .filter(|ex| ex.con.mid == mid)
            else {
                self.retransmit_notify_body(now, location, mid);
                continue;
            };
            match ex.con.due(now) {
                Due::NotYet => continue,
                Due::Resend(deadline) => {
                    let start = self.tx.start();
                    self.tx.buffer().extend_from_slice(&ex.con.datagram);
                    self.stats.retransmissions += 1;
                    self.request_sent(now, deadline, location, mid);
                    self.commit(addr, start, security);
                    continue;
                }
                Due::GiveUp => {}
            }
            self.stats.command_timeouts += 1;
            self.finish(now, location, CommandResult::Timeout, |out, ex| {
                translate::write_coap_timeout(out, &ex.echo, &ex.req_path)
            });
        }
        self.prune_retransmit();
    }

    /// Drops the entries of answered requests from the top of the retransmission heap, so
    /// the shard's timer sleeps until a request that still awaits its answer instead of
    /// waking at each answered one's deadline: 10 000 observes answered within a second
    /// woke each shard ~1 000 times a second, two seconds later, for nothing.
    fn prune_retransmit(&mut self) {
        while let Some(&std::cmp::Reverse((_, location, mid))) = self.retransmit.peek() {
            if self.awaits_answer(location, mid) {
                break;
            }
            self.retransmit.pop();
        }
    }

    /// Whether `location` still awaits the answer to its request `mid`: the command in
    /// flight, or a notification body's follow-up.
    fn awaits_answer(&self, location: Location, mid: u16) -> bool {
        let Some(dl) = self
            .endpoints
            .get(&location)
            .and_then(|ep| ep.downlink.as_ref())
        else {
            return false;
        };
        dl.in_flight.as_ref().is_some_and(|ex| ex.con.mid == mid)
            || dl.notify_bodies.iter().any(|b| b.mid() == mid)
    }

    /// Ends the in-flight exchange of `location` with `result`, publishing what `write`
    /// writes, and starts the next queued command.
    fn finish(
        &mut self,
        now: Instant,
        location: Location,
        result: CommandResult,
        write: impl FnOnce(&mut Vec<u8>, &Exchange),
    ) {
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let Some(ex) = ep.downlink.as_mut().and_then(|d| d.in_flight.take()) else {
            return;
        };
        if ex.observe != Some(true) || !self.observation_kept(location, ex.token) {
            self.token_owner.remove(&ex.token);
        }
        self.json.clear();
        write(&mut self.json, &ex);
        self.publish_for(TopicKind::Response, location);
        self.stats
            .command_results
            .count(crate::translate::Operation::parse(&ex.msg_type), result);
        self.stats
            .command_rtt
            .record_n(now.saturating_duration_since(ex.entered), 1);
        self.answer(ex.tag);
        self.send_next(now, location);
    }

    fn observation_kept(&self, location: Location, token: [u8; 8]) -> bool {
        self.endpoints
            .get(&location)
            .and_then(|e| e.downlink.as_ref())
            .is_some_and(|d| d.observations.iter().any(|o| o.token == token))
    }

    /// An ACK or RST from a device: matched by source address and MID.
    pub(super) fn handle_ack_or_reset(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
    ) {
        let Some(location) = self.endpoints.by_addr(from) else {
            return;
        };
        if !self.may_act_for(location) {
            self.stats.forbidden += 1;
            return;
        }
        self.wake(now, location);
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let Some(ex) = ep
            .downlink
            .as_mut()
            .and_then(|d| d.in_flight.as_mut())
            .filter(|ex| ex.con.mid == msg.mid())
        else {
            self.ack_notify_body(now, location, msg);
            return;
        };
        match (msg.ty(), msg.code().is_empty()) {
            (MessageType::Rst, _) => {
                self.stats.command_resets += 1;
                self.finish(now, location, CommandResult::Reset, |out, ex| {
                    translate::write_coap_reset(out, &ex.echo, &ex.req_path)
                });
            }
            (MessageType::Ack, true) => {
                let Some(deadline) = ex.con.acked(now) else {
                    return;
                };
                self.retransmit
                    .push(std::cmp::Reverse((deadline, location, ex.con.mid)));
                if block1::past_first(ex.request.block1) {
                    // The command's ack went out with its first block.
                    return;
                }
                self.json.clear();
                translate::write_ack(&mut self.json, &ex.echo, &ex.req_path);
                self.publish_for(TopicKind::Response, location);
            }
            (MessageType::Ack, false) if ex.token.as_slice() == msg.token() => {
                self.complete(now, location, msg, Outcome::Response);
            }
            _ => {}
        }
    }

    /// A CON or NON response (separate response or notification): matched by token.
    pub(super) fn handle_separate(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>) {
        let location = <[u8; 8]>::try_from(msg.token())
            .ok()
            .and_then(|t| self.token_owner.get(&t).copied().map(|l| (t, l)));
        let Some((token, location)) = location else {
            // Nobody asked: a CON gets a Reset, which also cancels a stale observation.
            if msg.ty() == MessageType::Con {
                self.queue_empty(from, MessageType::Rst, msg.mid());
            }
            return;
        };
        if !self.may_act_for(location) {
            // A token of a DTLS endpoint in a plain datagram, or another identity's.
            self.stats.forbidden += 1;
            return;
        }
        self.wake(now, location);
        if msg.ty() == MessageType::Con {
            self.queue_empty(from, MessageType::Ack, msg.mid());
        }
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let Some(dl) = ep.downlink.as_mut() else {
            return;
        };
        let in_flight = dl.in_flight.as_ref().is_some_and(|e| e.token == token);
        if in_flight {
            return self.complete(now, location, msg, Outcome::Response);
        }
        if dl.notify_bodies.iter().any(|b| b.token() == token) {
            return self.take_notify_block(now, location, msg);
        }
        let Some(seq) = msg.observe() else { return };
        let unfinished = dl.notify_bodies.iter().any(|b| b.observation() == token);
        let Some(obs) = dl.observations.iter_mut().find(|o| o.token == token) else {
            return;
        };
        // RFC 7641 §3.4: drop a reordered notification older than the newest seen.
        if let Some(last) = obs.last_seq {
            let newer = (last < seq && seq - last < 1 << 23)
                || (last > seq && last - seq > 1 << 23)
                || now > obs.last_at + OBSERVE_FRESHNESS;
            if !newer {
                self.stats.stale_notifications += 1;
                return;
            }
        }
        obs.last_seq = Some(seq);
        obs.last_at = now;
        let outcome = Outcome::Notification {
            seq,
            echo: obs.echo.clone(),
            req_path: obs.req_path.clone(),
            path: obs.path,
            body: None,
        };
        if unfinished {
            // A newer notification supersedes one whose blocks are still arriving.
            self.abandon_notify_body(location, |b| b.observation() == token);
        }
        match msg.block2().filter(|_| msg.code().class() == 2) {
            Some(block) if block.num == 0 && block.more => {
                self.start_notify_body(now, location, token, seq, block, msg)
            }
            _ => self.complete(now, location, msg, outcome),
        }
    }

    /// Publishes an error for every command still waiting on an endpoint that is going away.
    pub(super) fn fail_pending(&mut self, location: Location, reason: &str) {
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let Some(mut dl) = ep.downlink.take() else {
            return;
        };
        for t in dl.tokens() {
            self.token_owner.remove(&t);
        }
        let pending: Vec<(Arc<str>, String, String, Option<u64>)> = dl
            .in_flight
            .take()
            .map(|e| (e.echo, e.msg_type, e.request.req_path, e.tag))
            .into_iter()
            .chain(
                dl.queue
                    .drain(..)
                    .map(|q| (q.echo, q.msg_type, q.request.req_path, q.tag)),
            )
            .collect();
        for (echo, msg_type, req_path, tag) in pending {
            self.command_error(
                location,
                &echo,
                &msg_type,
                &req_path,
                Code::NOT_FOUND,
                reason,
                tag,
            );
        }
    }
}
