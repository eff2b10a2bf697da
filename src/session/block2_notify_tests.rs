//! Fake-clock scenarios of notifications that come in Block2 blocks (RFC 7959 §2.4 with
//! RFC 7641): reassembled with GETs of the observed path and published once, superseded by
//! a newer notification, abandoned when the device goes silent.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::downlink_tests::{command, registered, sent_to_device, DEVICE};
use super::tests::Node;
use super::*;
use crate::coap::{Message, MessageType, MessageWriter};

/// The representation notified, 40 bytes: three blocks of 16 (SZX 0).
const BODY: &[u8] = b"Open Mobile Alliance, notified in three";

/// Observes `/3/0/0` of `dev1`; returns the node and the observation's token.
fn observed() -> (Node, Vec<u8>) {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":"obs-1","msgType":"observe","data":{"path":"/3/0/0"}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("observe");
    let token = req.token().to_vec();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Ack, Code::CONTENT, req.mid(), &token);
    w.uint_option(option::OBSERVE, 1)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"small");
    w.finish();
    node.recv(0, DEVICE, &buf);
    assert_eq!(node.take_published().len(), 1, "the observe response");
    (node, token)
}

/// A response (or, with `observe`, a notification) carrying block `num` of [`BODY`] in
/// 16-byte blocks.
fn block(ty: MessageType, mid: u16, token: &[u8], observe: Option<u32>, num: u32) -> Vec<u8> {
    let chunk = BODY.chunks(16).nth(num as usize).expect("block");
    let more = (num as usize + 1) * 16 < BODY.len();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, ty, Code::CONTENT, mid, token);
    if let Some(seq) = observe {
        w.uint_option(option::OBSERVE, seq);
    }
    w.uint_option(option::CONTENT_FORMAT, 0)
        .block_option(option::BLOCK2, crate::coap::Block { num, more, szx: 0 })
        .payload(chunk);
    w.finish();
    buf
}

/// The request among `replies` (the empty ACK of a CON notification aside).
fn follow_up(replies: &[Vec<u8>]) -> Message<'_> {
    let requests: Vec<_> = replies
        .iter()
        .filter_map(|r| Message::parse(r).ok())
        .filter(|m| m.code().is_request())
        .collect();
    assert_eq!(requests.len(), 1, "one request for the next block");
    requests[0]
}

fn leaked(node: &Node, observation: &[u8]) -> (usize, usize) {
    let shard = &node.shards[0];
    let tokens = shard
        .token_owner
        .keys()
        .filter(|t| t.as_slice() != observation)
        .count();
    (tokens, shard.pending_notify.load(Ordering::Relaxed))
}

#[test]
fn a_three_block_notification_is_asked_for_block_by_block_and_published_once() {
    let (mut node, obs) = observed();
    let replies = node.recv(0, DEVICE, &block(MessageType::Con, 0x100, &obs, Some(2), 0));
    assert!(
        node.take_published().is_empty(),
        "not the whole notification"
    );
    let ack = replies
        .iter()
        .filter_map(|r| Message::parse(r).ok())
        .find(|m| m.ty() == MessageType::Ack);
    assert_eq!(ack.map(|m| m.mid()), Some(0x100), "the CON is acknowledged");
    let get = follow_up(&replies);
    assert_eq!(get.code(), Code::GET);
    assert_eq!(get.ty(), MessageType::Con);
    let path: Vec<&[u8]> = get.uri_path().collect();
    assert_eq!(path, [b"3".as_slice(), b"0", b"0"], "the observed path");
    assert_eq!(
        get.observe(),
        None,
        "no Observe in the follow-up (RFC 7959 §2.6)"
    );
    assert_eq!(get.accept(), Some(0), "the notification's format");
    assert_ne!(get.token(), obs.as_slice(), "a token of its own");
    let b = get.block2().expect("Block2");
    assert_eq!((b.num, b.more, b.szx), (1, false, 0));
    let token = get.token().to_vec();

    // Block 1 piggybacked, block 2 as an empty ACK and a separate CON response.
    let replies = node.recv(
        0,
        DEVICE,
        &block(MessageType::Ack, get.mid(), &token, None, 1),
    );
    assert!(node.take_published().is_empty());
    let get = follow_up(&replies);
    assert_eq!(get.block2().map(|b| b.num), Some(2));
    assert_eq!(get.token(), token.as_slice());
    let mut empty = Vec::new();
    crate::coap::write_empty(&mut empty, MessageType::Ack, get.mid());
    node.recv(0, DEVICE, &empty);
    let replies = node.recv(0, DEVICE, &block(MessageType::Con, 0x101, &token, None, 2));
    assert!(
        replies
            .iter()
            .all(|r| Message::parse(r).is_ok_and(|m| !m.code().is_request())),
        "nothing more asked"
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    let (topic, json) = &published[0];
    assert_eq!(topic, "lwm2m/dev1/up/notify");
    assert_eq!(json["msgType"], "notify");
    assert_eq!(json["requestID"], "obs-1", "the observation's echoed keys");
    assert_eq!(json["seqNum"], 2, "the notification's sequence number");
    assert_eq!(json["data"]["reqPath"], "/3/0/0");
    assert_eq!(
        json["data"]["content"][0]["value"],
        std::str::from_utf8(BODY).expect("text")
    );
    assert_eq!(leaked(&node, &obs), (0, 0), "token and charge given back");
    // The observation lives on: the next one-block notification is published at once.
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Non, Code::CONTENT, 0x102, &obs);
    w.uint_option(option::OBSERVE, 3)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"short");
    w.finish();
    node.recv(0, DEVICE, &buf);
    assert_eq!(node.take_published()[0].1["seqNum"], 3);
}

#[test]
fn a_newer_notification_abandons_the_unfinished_body() {
    let (mut node, obs) = observed();
    let replies = node.recv(0, DEVICE, &block(MessageType::Non, 0x200, &obs, Some(2), 0));
    let old = follow_up(&replies);
    let (old_mid, old_token) = (old.mid(), old.token().to_vec());
    // Seq 3 comes in blocks too before seq 2's block 1 arrived.
    let replies = node.recv(0, DEVICE, &block(MessageType::Non, 0x201, &obs, Some(3), 0));
    let new = follow_up(&replies);
    let (new_mid, new_token) = (new.mid(), new.token().to_vec());
    assert_ne!(new_token, old_token);
    // The old body's blocks are no longer taken.
    let replies = node.recv(
        0,
        DEVICE,
        &block(MessageType::Ack, old_mid, &old_token, None, 1),
    );
    assert!(replies.is_empty(), "{replies:?}");
    assert!(node.take_published().is_empty());
    let replies = node.recv(
        0,
        DEVICE,
        &block(MessageType::Ack, new_mid, &new_token, None, 1),
    );
    let last = follow_up(&replies);
    node.recv(
        0,
        DEVICE,
        &block(MessageType::Ack, last.mid(), &new_token, None, 2),
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].1["seqNum"], 3);
    assert_eq!(node.shards[0].stats().notification_bodies_abandoned, 1);

    // A one-block notification supersedes an unfinished body as well.
    node.recv(0, DEVICE, &block(MessageType::Non, 0x202, &obs, Some(4), 0));
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Non, Code::CONTENT, 0x203, &obs);
    w.uint_option(option::OBSERVE, 5)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"newest");
    w.finish();
    node.recv(0, DEVICE, &buf);
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["seqNum"], 5);
    assert_eq!(leaked(&node, &obs), (0, 0));
}

#[test]
fn a_device_silent_half_way_leaves_nothing_published_and_nothing_held() {
    let (mut node, obs) = observed();
    let replies = node.recv(0, DEVICE, &block(MessageType::Non, 0x300, &obs, Some(2), 0));
    let get = follow_up(&replies);
    let token = get.token().to_vec();
    let replies = node.recv(
        0,
        DEVICE,
        &block(MessageType::Ack, get.mid(), &token, None, 1),
    );
    let get = follow_up(&replies);
    assert_eq!(leaked(&node, &obs), (1, 32), "two blocks held");
    // The device never answers block 2: retransmitted as RFC 7252 says, then dropped.
    let mut resent = 0;
    for _ in 0..20 {
        node.advance(Duration::from_secs(10));
        resent += sent_to_device(&mut node)
            .iter()
            .filter(|d| Message::parse(d).is_ok_and(|m| m.mid() == get.mid()))
            .count();
    }
    assert_eq!(resent, 4, "MAX_RETRANSMIT retransmissions");
    assert!(node.take_published().is_empty(), "nothing published");
    assert_eq!(leaked(&node, &obs), (0, 0), "token and bytes given back");
    assert_eq!(node.shards[0].stats().notification_bodies_abandoned, 1);
    // A late answer is not taken.
    node.recv(
        0,
        DEVICE,
        &block(MessageType::Ack, get.mid(), &token, None, 2),
    );
    assert!(node.take_published().is_empty());
}

#[test]
fn a_notification_body_over_max_body_is_dropped_not_published_truncated() {
    let (mut node, obs) = observed();
    let chunk = [b'x'; 1024];
    let send = |node: &mut Node, ty, mid, token: &[u8], observe: Option<u32>, num| {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, ty, Code::CONTENT, mid, token);
        if let Some(seq) = observe {
            w.uint_option(option::OBSERVE, seq);
        }
        w.uint_option(option::CONTENT_FORMAT, 0)
            .block_option(
                option::BLOCK2,
                crate::coap::Block {
                    num,
                    more: true,
                    szx: 6,
                },
            )
            .payload(&chunk);
        w.finish();
        node.recv(0, DEVICE, &buf)
    };
    let mut replies = send(&mut node, MessageType::Non, 0x400, &obs, Some(2), 0);
    let blocks = (crate::coap::MAX_BODY / chunk.len()) as u32;
    for num in 1..=blocks {
        let get = follow_up(&replies);
        let token = get.token().to_vec();
        replies = send(&mut node, MessageType::Ack, get.mid(), &token, None, num);
    }
    assert!(
        replies
            .iter()
            .all(|r| Message::parse(r).is_ok_and(|m| !m.code().is_request())),
        "nothing more asked past {} bytes",
        crate::coap::MAX_BODY
    );
    assert!(node.take_published().is_empty());
    assert_eq!(leaked(&node, &obs), (0, 0));
    assert_eq!(node.shards[0].stats().notification_bodies_abandoned, 1);
}
