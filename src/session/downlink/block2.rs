//! Block2 (RFC 7959) responses to the in-flight request: each block but the last is kept
//! and the next one asked for, and the body is handed back whole.

use std::time::Instant;

use super::Shard;
use crate::coap::{Code, Message, MessageType, MAX_BODY};
use crate::session::Location;
use crate::translate;

/// A response body arriving in Block2 blocks (RFC 7959 §2.4).
#[derive(Debug)]
pub(super) struct Block2Body {
    body: Vec<u8>,
    /// The block asked for next.
    next: u32,
    /// The block size exponent the device chose.
    szx: u8,
}

/// What [`Shard::take_block2`] made of a response.
pub(super) enum Block2Step {
    /// Not block-wise (or a single block): the response is complete as it is.
    Whole,
    /// A block that is not the last: the next one was asked for.
    Asked,
    /// The last block: the whole body.
    Assembled(Vec<u8>),
    /// Blocks out of sequence or too many: the exchange ends with this code.
    Failed(Code),
}

impl Shard {
    /// Follows a response to the in-flight request that comes in Block2 blocks: each
    /// block but the last is kept and the next one asked for (the same request without
    /// payload, RFC 7959 §3.3, with a new MID and the same token), so that a device
    /// answering a read or a write in blocks is never left waiting.
    pub(super) fn take_block2(
        &mut self,
        now: Instant,
        location: Location,
        msg: &Message<'_>,
    ) -> Block2Step {
        let Some(block) = msg.block2().filter(|_| msg.code().class() == 2) else {
            return Block2Step::Whole;
        };
        let mid = self.mids.next();
        let jitter = self.jitter();
        let Some(ep) = self.endpoints.get_mut(&location) else {
            return Block2Step::Whole;
        };
        let (addr, security) = (ep.addr, ep.security);
        let Some(ex) = ep.downlink.as_mut().and_then(|d| d.in_flight.as_mut()) else {
            return Block2Step::Whole;
        };
        let mut body = match ex.block2.take() {
            // Not a transfer this exchange started: taken as it is.
            None if block.num != 0 || !block.more => return Block2Step::Whole,
            None => Vec::new(),
            Some(rx) if block.num == rx.next && block.szx == rx.szx => rx.body,
            Some(_) => return Block2Step::Failed(Code::REQUEST_ENTITY_INCOMPLETE),
        };
        if body.len() + msg.payload().len() > MAX_BODY {
            return Block2Step::Failed(Code::REQUEST_ENTITY_TOO_LARGE);
        }
        body.extend_from_slice(msg.payload());
        if !block.more {
            return Block2Step::Assembled(body);
        }
        let next = block.num + 1;
        let mut datagram = Vec::with_capacity(64);
        let request = ex.request.next_block(next, block.szx);
        translate::write_coap_request(&request, MessageType::Con, mid, &ex.token, &mut datagram);
        ex.block2 = Some(Block2Body {
            body,
            next,
            szx: block.szx,
        });
        ex.restart(now, mid, datagram, jitter);
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&ex.datagram);
        self.retransmit
            .push(std::cmp::Reverse((ex.deadline, location, mid)));
        self.commit(addr, start, security);
        Block2Step::Asked
    }
}
