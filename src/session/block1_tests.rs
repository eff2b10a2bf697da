//! Block1 (RFC 7959) downlink: a write too large for one datagram goes to the device in
//! blocks, at the device's block size, and ends with one published response.

use std::time::Duration;

use base64::Engine as _;

use super::downlink_tests::{command, registered, sent_to_device};
use super::tests::Node;
use super::*;
use crate::coap::{Block, Message, MessageType, MessageWriter};
use crate::lwm2m::Version;
use crate::translate;

/// A firmware package write of `len` bytes to `/5/0/0`, and the body a single datagram
/// carrying it would hold (empty beyond the block-wise limit).
fn firmware_write(len: usize) -> (String, Vec<u8>) {
    let image: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let value = base64::engine::general_purpose::STANDARD.encode(&image);
    let json = format!(
        r#"{{"requestID":42,"msgType":"write","data":{{"path":"/5/0/0","type":"Opaque","value":"{value}"}}}}"#
    );
    let cmd = translate::parse_command(json.as_bytes()).expect("command");
    let payload = translate::build_request(&cmd, "/", Version::V1_1)
        .map(|r| r.payload)
        .unwrap_or_default();
    (json, payload)
}

/// Answers `req` piggybacked with `code`, echoing its Block1 at size exponent `szx`.
fn answer_block(node: &mut Node, req: &Message<'_>, code: Code, szx: Option<u8>) {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Ack, code, req.mid(), req.token());
    if let (Some(b), Some(szx)) = (req.block1(), szx) {
        w.block_option(option::BLOCK1, Block { szx, ..b });
    }
    w.finish();
    let device = super::downlink_tests::DEVICE;
    // What the shard sends back is kept for `sent_to_device`.
    let replies = node.recv(0, device, &buf);
    let to = device.parse().expect("addr");
    node.sent.extend(replies.into_iter().map(|d| (0, to, d)));
}

/// Plays the device: takes every block sent, answers 2.31 (at `szx_after` once `switch_at`
/// bytes arrived) and 2.04 to the last; returns the body and the block sizes seen.
fn device_takes_all(
    node: &mut Node,
    switch_at: usize,
    szx_after: u8,
) -> (Vec<u8>, Vec<usize>, Vec<[u8; 8]>) {
    let (mut body, mut sizes, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let sent = sent_to_device(node);
        assert_eq!(sent.len(), 1, "one block at a time");
        let req = Message::parse(&sent[0]).expect("block");
        assert!(sent[0].len() <= translate::MAX_REQUEST_LEN);
        assert_eq!(req.ty(), MessageType::Con);
        assert_eq!(req.code(), Code::PUT);
        let b = req.block1().expect("Block1");
        assert_eq!(b.offset(), body.len(), "blocks in order");
        body.extend_from_slice(req.payload());
        sizes.push(b.size());
        tokens.push(req.token().try_into().expect("8-byte token"));
        if !b.more {
            answer_block(node, &req, Code::CHANGED, Some(b.szx));
            return (body, sizes, tokens);
        }
        assert_eq!(req.payload().len(), b.size());
        let szx = if body.len() >= switch_at {
            szx_after
        } else {
            b.szx
        };
        answer_block(node, &req, Code::CONTINUE, Some(szx));
        assert!(node.take_published().is_empty(), "nothing until the end");
    }
}

#[test]
fn large_opaque_write_goes_in_1024_byte_blocks_and_is_published_once() {
    let (mut node, ep) = registered(1);
    let (json, single) = firmware_write(200 * 1024);
    command(&mut node, &ep, &json);
    let (body, sizes, tokens) = device_takes_all(&mut node, usize::MAX, 6);
    assert_eq!(body, single, "the device reassembles the encoded payload");
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 1024));
    assert_eq!(sizes.len(), single.len().div_ceil(1024));
    assert!(tokens.iter().all(|t| *t == tokens[0]), "same token");
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].1["msgType"], "write");
    assert_eq!(published[0].1["requestID"], 42);
    assert_eq!(published[0].1["data"]["code"], "2.04");
    assert_eq!(
        node.shards[0]
            .pending_block1
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the body's charge is given back"
    );
}

#[test]
fn device_asking_for_smaller_blocks_midway_gets_the_rest_at_its_size() {
    let (mut node, ep) = registered(1);
    let (json, single) = firmware_write(20 * 1024);
    command(&mut node, &ep, &json);
    let (body, sizes, _) = device_takes_all(&mut node, 5 * 1024, 4);
    assert_eq!(body, single);
    assert_eq!(&sizes[..5], &[1024; 5]);
    assert!(
        sizes[5..sizes.len() - 1].iter().all(|&s| s == 256),
        "{sizes:?}"
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["data"]["code"], "2.04");
}

#[test]
fn device_refusing_with_4_13_and_a_smaller_size_gets_the_body_again_from_the_start() {
    let (mut node, ep) = registered(1);
    let (json, single) = firmware_write(4 * 1024);
    command(&mut node, &ep, &json);
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("block");
    answer_block(&mut node, &req, Code::REQUEST_ENTITY_TOO_LARGE, Some(5));
    assert!(node.take_published().is_empty());
    let (body, sizes, _) = device_takes_all(&mut node, usize::MAX, 5);
    assert_eq!(body, single);
    assert_eq!(sizes[0], 512);
}

#[test]
fn device_ending_a_transfer_with_4_08_publishes_that_code() {
    let (mut node, ep) = registered(1);
    let (json, _) = firmware_write(4 * 1024);
    command(&mut node, &ep, &json);
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("block");
    answer_block(&mut node, &req, Code::REQUEST_ENTITY_INCOMPLETE, None);
    assert!(sent_to_device(&mut node).is_empty());
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["data"]["code"], "4.08");
}

#[test]
fn device_that_stops_midway_gets_retransmissions_then_coap_timeout() {
    let (mut node, ep) = registered(1);
    let (json, _) = firmware_write(8 * 1024);
    command(&mut node, &ep, &json);
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("block");
    answer_block(&mut node, &req, Code::CONTINUE, Some(6));
    let second = sent_to_device(&mut node);
    let second = Message::parse(&second[0]).expect("block").mid();
    let mut retransmissions = 0;
    let mut published = Vec::new();
    for _ in 0..1200 {
        node.advance(Duration::from_millis(100));
        for d in sent_to_device(&mut node) {
            let m = Message::parse(&d).expect("retransmission");
            assert_eq!((m.mid(), m.block1().map(|b| b.num)), (second, Some(1)));
            retransmissions += 1;
        }
        published.extend(node.take_published());
        if !published.is_empty() {
            break;
        }
    }
    assert_eq!(retransmissions, 4, "MAX_RETRANSMIT");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["msgType"], "coap_timeout");
    assert_eq!(published[0].1["requestID"], 42);
}

#[test]
fn write_beyond_the_per_command_limit_is_answered_4_13_without_sending() {
    let (mut node, ep) = registered(1);
    let (json, _) = firmware_write(translate::MAX_BLOCK1_BODY * 3 / 4 + 1024);
    command(&mut node, &ep, &json);
    assert!(sent_to_device(&mut node).is_empty(), "not sent");
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    let data = &published[0].1["data"];
    assert_eq!(data["code"], "4.13");
    assert!(
        data["reason"]
            .as_str()
            .is_some_and(|r| r.contains("524288")),
        "{data}"
    );
}

#[test]
fn write_beyond_the_shard_cap_is_refused_with_5_03_and_the_charge_is_given_back() {
    use std::sync::atomic::Ordering;
    let (mut node, ep) = registered(1);
    let pending = node.shards[0].pending_block1.clone();
    // Other transfers hold all but 1 KiB of the shard's cap.
    pending.store(downlink::MAX_PENDING_BLOCK1_BYTES - 1024, Ordering::Relaxed);
    let (json, _) = firmware_write(4 * 1024);
    command(&mut node, &ep, &json);
    assert!(sent_to_device(&mut node).is_empty(), "not sent");
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["data"]["code"], "5.03");
    assert!(published[0].1["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("64 MiB")));
    // Once they end, the write goes out and holds its body until its response.
    pending.store(0, Ordering::Relaxed);
    command(&mut node, &ep, &json);
    let held = pending.load(Ordering::Relaxed);
    assert!(held > 4 * 1024, "{held}");
    let (_, _, _) = device_takes_all(&mut node, usize::MAX, 6);
    assert_eq!(pending.load(Ordering::Relaxed), 0);
}
