//! Block2 (RFC 7959) responses to the in-flight request: each block but the last is kept
//! and the next one asked for, and the body is handed back whole. [`Block2Body::append`]
//! is the reassembly both this and Block2 notifications ([`super::block2_notify`]) use.

use std::time::Instant;

use super::Shard;
use crate::coap::{Block, Code, Message, MessageType, MAX_BODY};
use crate::session::Location;
use crate::translate::{self, CoapRequest};

/// A response body arriving in Block2 blocks (RFC 7959 §2.4).
#[derive(Debug)]
pub(super) struct Block2Body {
    body: Vec<u8>,
    /// The block asked for next.
    next: u32,
    /// The block size exponent the device chose.
    szx: u8,
}

/// What one block made of a body in progress ([`Block2Body::append`]).
pub(super) enum Appended {
    /// Not a transfer in progress and not the first block of one: the payload is whole.
    Whole,
    /// Kept; block `body.next` is the one to ask for.
    More(Block2Body),
    /// The last block: the whole body.
    Done(Vec<u8>),
    /// Out of sequence (4.08) or over [`MAX_BODY`] (4.13): the body is dropped.
    Failed(Code),
}

impl Block2Body {
    /// Adds `payload`, block `block` of a representation, to the body so far (`None`
    /// before the first block): a block other than the one asked for, or at another
    /// size, fails the transfer, as does a body growing past [`MAX_BODY`].
    pub(super) fn append(so_far: Option<Block2Body>, block: Block, payload: &[u8]) -> Appended {
        let mut body = match so_far {
            // Not a transfer this exchange started: taken as it is.
            None if block.num != 0 || !block.more => return Appended::Whole,
            None => Vec::with_capacity(payload.len() * 2),
            Some(rx) if block.num == rx.next && block.szx == rx.szx => rx.body,
            Some(_) => return Appended::Failed(Code::REQUEST_ENTITY_INCOMPLETE),
        };
        if body.len() + payload.len() > MAX_BODY {
            return Appended::Failed(Code::REQUEST_ENTITY_TOO_LARGE);
        }
        body.extend_from_slice(payload);
        if !block.more {
            return Appended::Done(body);
        }
        Appended::More(Block2Body {
            body,
            next: block.num + 1,
            szx: block.szx,
        })
    }

    /// Bytes held.
    pub(super) fn len(&self) -> usize {
        self.body.len()
    }

    /// The CON datagram asking for the next block with `request` (its Block2 set to it).
    pub(super) fn ask_next(&self, request: &CoapRequest, mid: u16, token: &[u8]) -> Vec<u8> {
        let mut datagram = Vec::with_capacity(64 + request.payload.len());
        let request = request.next_block(self.next, self.szx);
        translate::write_coap_request(&request, MessageType::Con, mid, token, &mut datagram);
        datagram
    }
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
        let body = match Block2Body::append(ex.block2.take(), block, msg.payload()) {
            Appended::Whole => return Block2Step::Whole,
            Appended::Done(body) => return Block2Step::Assembled(body),
            Appended::Failed(code) => return Block2Step::Failed(code),
            Appended::More(body) => body,
        };
        let datagram = body.ask_next(&ex.request, mid, &ex.token);
        ex.block2 = Some(body);
        ex.con.restart(now, mid, datagram, jitter);
        let start = self.tx.start();
        self.tx.buffer().extend_from_slice(&ex.con.datagram);
        let deadline = ex.con.deadline();
        self.request_sent(now, deadline, location, mid);
        self.commit(addr, start, security);
        Block2Step::Asked
    }
}
