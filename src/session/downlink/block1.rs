//! Block1 (RFC 7959) requests: a request body too large for one datagram is sent block by
//! block, each a CON with the same token, the next one after the device's 2.31 Continue;
//! the final block's response is the command's response.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::Shard;
use crate::coap::{Block, Code, Message, MessageType};
use crate::session::Location;
use crate::translate;

/// Most bytes of Block1 request bodies a shard holds at once, queued or in flight. Each
/// body is at most [`translate::MAX_BLOCK1_BODY`] (512 KiB) and is held once per command;
/// 64 MiB is 128 firmware pushes in progress per shard, far more than a fleet upgrade
/// rolls out at once, and a bound a flood of large writes cannot grow past. A command
/// beyond it is refused with 5.03 rather than held back: waiting would hold its body
/// anyway, which is what the cap is there to prevent.
pub(in crate::session) const MAX_PENDING_BLOCK1_BYTES: usize = 64 * 1024 * 1024;

/// A block-wise body's share of its shard's cap ([`MAX_PENDING_BLOCK1_BYTES`] for request
/// bodies, [`super::block2_notify::MAX_PENDING_NOTIFY_BYTES`] for notification bodies),
/// given back when the body is dropped however its exchange ends (response, timeout,
/// expiry, deregistration). An atomic, as an endpoint's downlink may move to another
/// shard: the body stays charged to the shard that accepted it until it is dropped.
#[derive(Debug)]
pub(in crate::session) struct BodyCharge {
    pending: Arc<AtomicUsize>,
    bytes: usize,
}

impl BodyCharge {
    /// Charges `bytes` to `pending`, or `None` if that would pass `cap`.
    pub(in crate::session) fn take(
        pending: &Arc<AtomicUsize>,
        bytes: usize,
        cap: usize,
    ) -> Option<Self> {
        let mut charge = BodyCharge {
            pending: pending.clone(),
            bytes: 0,
        };
        charge.grow(bytes, cap).then_some(charge)
    }

    /// Charges `more` bytes on top; `false` (and nothing charged) if that would pass `cap`.
    pub(in crate::session) fn grow(&mut self, more: usize, cap: usize) -> bool {
        let grown = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + more <= cap).then_some(held + more)
            });
        if grown.is_ok() {
            self.bytes += more;
        }
        grown.is_ok()
    }
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What [`Shard::take_block1`] made of a response.
pub(super) enum Block1Step {
    /// Not a Block1 transfer, or the response that ends it: published as it is.
    Whole,
    /// The next block (or the first again, smaller) was sent.
    Sent,
    /// A response to an earlier block (a duplicate): ignored.
    Stale,
}

impl Shard {
    /// Follows a response to a block of the in-flight request's body: on 2.31 Continue
    /// the next block is sent, at the device's block size if it asked for a smaller one
    /// (RFC 7959 §2.5, the byte offset stays); on 4.13 with a smaller Block1 size or a
    /// Size1 below the block size, the body is sent again from the start in smaller
    /// blocks (§2.9.3). Anything else — the final block's response, 4.08, other errors —
    /// ends the exchange as the command's response.
    pub(super) fn take_block1(
        &mut self,
        now: Instant,
        location: Location,
        msg: &Message<'_>,
    ) -> Block1Step {
        let Some(ep) = self.endpoints.get(&location) else {
            return Block1Step::Whole;
        };
        let Some(current) = ep
            .downlink
            .as_ref()
            .and_then(|d| d.in_flight.as_ref())
            .and_then(|ex| ex.request.block1)
        else {
            return Block1Step::Whole;
        };
        let answered = msg.block1();
        // Block1 in a response echoes the block it answers (§2.3): another number at the
        // same size answers an earlier block (a duplicate). With a smaller size the number
        // may be the device's renumbering; the offset sent so far is what counts.
        if msg.code() == Code::CONTINUE
            && answered.is_some_and(|b| b.szx == current.szx && b.num != current.num)
        {
            return Block1Step::Stale;
        }
        let smaller = answered.map(|b| b.szx).filter(|&szx| szx < current.szx);
        let (offset, szx) = match msg.code() {
            Code::CONTINUE if current.more => {
                let szx = smaller.unwrap_or(current.szx);
                (current.offset() + current.size(), szx)
            }
            Code::REQUEST_ENTITY_TOO_LARGE => {
                let from_size1 = msg
                    .size1()
                    .and_then(|max| (0..current.szx).rev().find(|s| 16u32 << s <= max));
                match smaller.or(from_size1) {
                    Some(szx) => (0, szx),
                    None => return Block1Step::Whole,
                }
            }
            _ => return Block1Step::Whole,
        };
        let mid = self.mids.next();
        let jitter = self.jitter();
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return Block1Step::Whole;
        };
        let (addr, security) = (ep.addr, ep.security);
        let Some(ex) = ep.downlink.as_mut().and_then(|d| d.in_flight.as_mut()) else {
            return Block1Step::Whole;
        };
        if !ex.request.seek_block1(offset, szx) {
            // 2.31 for a block that was the last one: the device miscounted.
            return Block1Step::Whole;
        }
        let mut datagram = std::mem::take(&mut ex.con.datagram);
        datagram.clear();
        translate::write_coap_request(&ex.request, MessageType::Con, mid, &ex.token, &mut datagram);
        ex.con.restart(now, mid, datagram, jitter);
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&ex.con.datagram);
        let deadline = ex.con.deadline();
        self.request_sent(now, deadline, location, mid);
        self.commit(addr, start, security);
        Block1Step::Sent
    }
}

/// Whether `block` is past the first block of its transfer: its empty ACKs are not
/// published again.
pub(super) fn past_first(block: Option<Block>) -> bool {
    block.is_some_and(|b| b.num > 0)
}
