//! Block2 notifications (RFC 7959 §2.4 with RFC 7641): a notification whose payload is the
//! first block of a larger representation is not published as it is. The gateway asks for
//! the following blocks with a GET of the observed path (a FETCH for a composite
//! observation) without Observe (§2.6, §3.4), under a token of its own, collects them with
//! [`Block2Body::append`] as it does a Block2 response, and publishes one `notify` with the
//! notification's sequence number once the last block arrives. A newer notification of
//! the same observation abandons a body still arriving; so does a device that stops
//! answering (after the RFC 7252 retransmissions) or an error response. Nothing of an
//! abandoned body is published.

use std::sync::Arc;
use std::time::Instant;

use super::block1::BodyCharge;
use super::block2::{Appended, Block2Body};
use super::con::{Con, Due};
use super::{Observed, Outcome, Shard};
use crate::coap::{Block, Message, MessageType};
use crate::lwm2m::Path;
use crate::session::Location;
use crate::translate::{self, CoapRequest};

/// Most bytes of notification bodies a shard collects at once. Each is at most
/// [`crate::coap::MAX_BODY`] (64 KiB, as a Block2 response); 16 MiB is 256 of them in
/// progress together, far more than devices send large notifications at the same instant,
/// and a bound a fleet of chatty devices cannot grow past. A notification that would pass
/// it is dropped (and counted), not published truncated.
pub(in crate::session) const MAX_PENDING_NOTIFY_BYTES: usize = 16 * 1024 * 1024;

/// A notification's representation arriving in Block2 blocks.
#[derive(Debug)]
pub(in crate::session) struct NotifyBody {
    /// The token of the observation it belongs to.
    observation: [u8; 8],
    /// The notification's Observe sequence number: the one published.
    seq: u32,
    /// The request the following blocks are asked with.
    request: CoapRequest,
    body: Block2Body,
    /// The follow-up requests' token.
    token: [u8; 8],
    /// The follow-up request on the wire and its retransmission schedule.
    con: Con,
    /// Its share of [`MAX_PENDING_NOTIFY_BYTES`].
    charge: BodyCharge,
}

impl NotifyBody {
    /// The message id of the follow-up request on the wire.
    pub(in crate::session) fn mid(&self) -> u16 {
        self.con.mid
    }

    /// The follow-up's token, for the shard's token table.
    pub(super) fn token(&self) -> [u8; 8] {
        self.token
    }

    /// The token of the observation it belongs to.
    pub(super) fn observation(&self) -> [u8; 8] {
        self.observation
    }

    /// The retransmission deadline and the MID it is for.
    pub(super) fn deadline(&self) -> (Instant, u16) {
        (self.con.deadline(), self.con.mid)
    }
}

impl Shard {
    /// Takes a notification of the observation `observation` (sequence `seq`) carrying
    /// `block`, the first of several: keeps its payload and asks for the next block. An
    /// unfinished body of the same observation was abandoned by the caller.
    pub(super) fn start_notify_body(
        &mut self,
        now: Instant,
        location: Location,
        observation: [u8; 8],
        seq: u32,
        block: Block,
        msg: &Message<'_>,
    ) {
        let Appended::More(body) = Block2Body::append(None, block, msg.payload()) else {
            self.stats.notification_bodies_abandoned += 1;
            return;
        };
        let Some(charge) =
            BodyCharge::take(&self.pending_notify, body.len(), MAX_PENDING_NOTIFY_BYTES)
        else {
            self.stats.notification_bodies_abandoned += 1;
            return;
        };
        let token = self.tokens.next();
        let mid = self.mids.next();
        let jitter = self.jitter();
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let (addr, security) = (ep.addr, ep.security);
        let alternate = ep
            .registration
            .object_list
            .as_ref()
            .map_or("/", |l| l.alternate_path.as_str());
        let Some(dl) = ep.downlink.as_mut() else {
            return;
        };
        let Some(obs) = dl.observations.iter().find(|o| o.token == observation) else {
            return;
        };
        let (path, composite): (Path, &[Path]) = match &obs.observed {
            Observed::Path(path) => (*path, &[]),
            Observed::Composite(paths) => (Path::ROOT, paths),
        };
        let request = translate::notification_blocks_request(
            alternate,
            path,
            composite,
            msg.content_format(),
        );
        let datagram = body.ask_next(&request, mid, &token);
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&datagram);
        let con = Con::new(now, mid, datagram, jitter);
        let deadline = con.deadline();
        dl.notify_bodies.push(NotifyBody {
            observation,
            seq,
            request,
            body,
            token,
            con,
            charge,
        });
        self.token_owner.insert(token, location);
        self.request_sent(now, deadline, location, mid);
        self.commit(addr, start, security);
    }

    /// Drops the unfinished body of `location` that `pick` selects, if any: nothing of it
    /// is published. Returns whether there was one.
    pub(super) fn abandon_notify_body(
        &mut self,
        location: Location,
        pick: impl Fn(&NotifyBody) -> bool,
    ) -> bool {
        let Some(dl) = self
            .endpoints
            .get_mut(&location)
            .and_then(|ep| ep.downlink.as_mut())
        else {
            return false;
        };
        let Some(i) = dl.notify_bodies.iter().position(pick) else {
            return false;
        };
        let gone = dl.notify_bodies.swap_remove(i);
        self.token_owner.remove(&gone.token);
        self.stats.notification_bodies_abandoned += 1;
        true
    }

    /// An ACK or RST with message id `msg.mid()` that may answer a follow-up request of
    /// `location`: an empty ACK makes it wait for a separate response, a piggybacked
    /// response is taken, a Reset abandons the body. `false` if it answers none.
    pub(super) fn ack_notify_body(
        &mut self,
        now: Instant,
        location: Location,
        msg: &Message<'_>,
    ) -> bool {
        let Some(dl) = self
            .endpoints
            .get_mut(&location)
            .and_then(|ep| ep.downlink.as_mut())
        else {
            return false;
        };
        let Some(nb) = dl.notify_bodies.iter_mut().find(|b| b.con.mid == msg.mid()) else {
            return false;
        };
        match (msg.ty(), msg.code().is_empty()) {
            (MessageType::Rst, _) => {
                let mid = msg.mid();
                self.abandon_notify_body(location, |b| b.con.mid == mid);
            }
            (MessageType::Ack, true) => {
                if let Some(deadline) = nb.con.acked(now) {
                    self.retransmit
                        .push(std::cmp::Reverse((deadline, location, nb.con.mid)));
                }
            }
            (MessageType::Ack, false) if nb.token.as_slice() == msg.token() => {
                self.take_notify_block(now, location, msg);
            }
            _ => {}
        }
        true
    }

    /// A response to a follow-up request (matched by its token): the next block is kept
    /// and the one after asked for, the last one publishes the notification, anything
    /// else (an error, a block out of sequence, a body over the bounds) abandons it.
    pub(super) fn take_notify_block(
        &mut self,
        now: Instant,
        location: Location,
        msg: &Message<'_>,
    ) {
        let mid = self.mids.next();
        let jitter = self.jitter();
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return;
        };
        let (addr, security) = (ep.addr, ep.security);
        let Some(dl) = ep.downlink.as_mut() else {
            return;
        };
        let Some(i) = dl
            .notify_bodies
            .iter()
            .position(|b| b.token.as_slice() == msg.token())
        else {
            return;
        };
        let mut nb = dl.notify_bodies.swap_remove(i);
        let appended = match msg.block2() {
            _ if msg.code().class() != 2 => Appended::Failed(msg.code()),
            Some(block) => Block2Body::append(Some(nb.body), block, msg.payload()),
            // The device sent the whole representation instead of the block asked for.
            None => Appended::Done(msg.payload().to_vec()),
        };
        let body = match appended {
            Appended::More(body) => body,
            Appended::Done(body) => {
                self.token_owner.remove(&nb.token);
                return self.publish_notify_body(now, location, nb.observation, nb.seq, body, msg);
            }
            Appended::Whole | Appended::Failed(_) => {
                self.token_owner.remove(&nb.token);
                self.stats.notification_bodies_abandoned += 1;
                return;
            }
        };
        if !nb
            .charge
            .grow(msg.payload().len(), MAX_PENDING_NOTIFY_BYTES)
        {
            self.token_owner.remove(&nb.token);
            self.stats.notification_bodies_abandoned += 1;
            return;
        }
        let datagram = body.ask_next(&nb.request, mid, &nb.token);
        nb.body = body;
        nb.con.restart(now, mid, datagram, jitter);
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&nb.con.datagram);
        let deadline = nb.con.deadline();
        dl.notify_bodies.push(nb);
        self.request_sent(now, deadline, location, mid);
        self.commit(addr, start, security);
    }

    /// Publishes the whole `body` of the notification `seq` of `observation` as one
    /// `notify`, in the format and with the code of `last`, its last block's response.
    fn publish_notify_body(
        &mut self,
        now: Instant,
        location: Location,
        observation: [u8; 8],
        seq: u32,
        body: Vec<u8>,
        last: &Message<'_>,
    ) {
        let Some(obs) = self
            .endpoints
            .get(&location)
            .and_then(|ep| ep.downlink.as_ref())
            .and_then(|dl| dl.observations.iter().find(|o| o.token == observation))
        else {
            // Cancelled meanwhile: nobody waits for it.
            self.stats.notification_bodies_abandoned += 1;
            return;
        };
        let outcome = Outcome::Notification {
            seq,
            echo: Arc::clone(&obs.echo),
            req_path: Arc::clone(&obs.req_path),
            path: obs.path,
            body: Some(body),
        };
        self.complete(now, location, last, outcome);
    }

    /// The retransmission deadline `mid` of a follow-up request of `location` passed:
    /// sent again, or, out of retransmissions (or of time for a separate response), the
    /// body is abandoned. `false` if `mid` is no follow-up's.
    pub(super) fn retransmit_notify_body(
        &mut self,
        now: Instant,
        location: Location,
        mid: u16,
    ) -> bool {
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return false;
        };
        let (addr, security) = (ep.addr, ep.security);
        let Some(nb) = ep
            .downlink
            .as_mut()
            .and_then(|dl| dl.notify_bodies.iter_mut().find(|b| b.con.mid == mid))
        else {
            return false;
        };
        let deadline = match nb.con.due(now) {
            Due::NotYet => return true,
            Due::Resend(deadline) => deadline,
            Due::GiveUp => {
                self.abandon_notify_body(location, |b| b.con.mid == mid);
                return true;
            }
        };
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&nb.con.datagram);
        self.stats.retransmissions += 1;
        self.request_sent(now, deadline, location, mid);
        self.commit(addr, start, security);
        true
    }
}
