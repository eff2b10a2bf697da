//! LwM2M 1.1 Send (`POST /dp`) end to end through the shard: SenML JSON and CBOR reports
//! from a registered device are acknowledged 2.04 and published on the notify topic.

use super::tests::{register_capture, Node, DEVICE};
use super::*;
use crate::coap::{Message, MessageType, MessageWriter};

fn send(mid: u16, format: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Con, Code::POST, mid, &[9, mid as u8]);
    w.option(option::URI_PATH, b"dp")
        .uint_option(option::CONTENT_FORMAT, u32::from(format))
        .payload(payload);
    w.finish();
    buf
}

fn code_of(replies: &[Vec<u8>]) -> Code {
    assert_eq!(replies.len(), 1, "one reply: {replies:?}");
    Message::parse(&replies[0]).expect("reply parses").code()
}

#[test]
fn senml_json_send_is_acknowledged_and_published_on_notify() {
    let mut node = Node::new(1, |_| {});
    register_capture(&mut node, 0, DEVICE);
    node.take_published();
    let json = br#"[{"bn":"/3303/0/","n":"5700","v":22.5},{"n":"5701","vs":"Cel"}]"#;
    assert_eq!(
        code_of(&node.recv(0, DEVICE, &send(1, 110, json))),
        Code::CHANGED
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    let (topic, v) = &published[0];
    assert!(topic.ends_with("/up/notify"), "{topic}");
    assert_eq!(v["msgType"], "send");
    assert_eq!(v["data"]["reqPath"], "/dp");
    assert_eq!(v["data"]["content"][0]["path"], "/3303/0/5700");
    assert_eq!(v["data"]["content"][0]["value"], 22.5);
    assert_eq!(v["data"]["content"][1]["value"], "Cel");
    assert_eq!(node.shards[0].stats().sends, 1);
}

#[test]
fn senml_cbor_send_is_published() {
    let mut node = Node::new(1, |_| {});
    register_capture(&mut node, 0, DEVICE);
    node.take_published();
    // [{-2: "/3303/0/", 0: "5700", 2: 22.5}]
    let mut cbor = vec![0x81, 0xa3, 0x21, 0x68];
    cbor.extend_from_slice(b"/3303/0/");
    cbor.extend_from_slice(&[0x00, 0x64]);
    cbor.extend_from_slice(b"5700");
    cbor.extend_from_slice(&[0x02, 0xfb]);
    cbor.extend_from_slice(&22.5f64.to_be_bytes());
    assert_eq!(
        code_of(&node.recv(0, DEVICE, &send(2, 112, &cbor))),
        Code::CHANGED
    );
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "send");
    assert_eq!(published[0].1["data"]["content"][0]["path"], "/3303/0/5700");
    assert_eq!(published[0].1["data"]["content"][0]["value"], 22.5);
}

#[test]
fn send_errors_publish_nothing() {
    let mut node = Node::new(1, |_| {});
    // From an address that never registered.
    let json = br#"[{"n":"/3/0/0","vs":"x"}]"#;
    assert_eq!(
        code_of(&node.recv(0, DEVICE, &send(3, 110, json))),
        Code::NOT_FOUND
    );
    register_capture(&mut node, 0, DEVICE);
    node.take_published();
    // Not SenML.
    assert_eq!(
        code_of(&node.recv(0, DEVICE, &send(4, 0, b"22.5"))),
        Code::UNSUPPORTED_CONTENT_FORMAT
    );
    // SenML that does not decode.
    assert_eq!(
        code_of(&node.recv(0, DEVICE, &send(5, 110, b"[{\"n\":"))),
        Code::BAD_REQUEST
    );
    // Not a POST.
    let mut get = Vec::new();
    let mut w = MessageWriter::new(&mut get, MessageType::Con, Code::GET, 6, &[6]);
    w.option(option::URI_PATH, b"dp");
    w.finish();
    assert_eq!(
        code_of(&node.recv(0, DEVICE, &get)),
        Code::METHOD_NOT_ALLOWED
    );
    assert!(node.take_published().is_empty());
    assert_eq!(node.shards[0].stats().sends, 0);
}
