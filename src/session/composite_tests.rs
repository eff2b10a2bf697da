//! Fake-clock scenarios of the LwM2M 1.1 composite operations: a read of several paths
//! published once, a composite observation's notifications, its cancel, and a write.

use super::downlink_tests::{answer, command, registered, sent_to_device, DEVICE};
use super::tests::Node;
use super::*;
use crate::coap::{Message, MessageType, MessageWriter};
use crate::content::format::SENML_JSON;

/// The SenML JSON a device answers a composite read of `/3/0/0`, `/3/0/9` and
/// `/3303/0/5700` with.
const THREE_VALUES: &[u8] = br#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"9","v":95},{"bn":"/3303/0/","n":"5700","v":22.5}]"#;

/// Sends a notification (CON, `seq`) of the observation of `token` and returns the
/// gateway's replies.
fn notify(node: &mut Node, mid: u16, token: &[u8], seq: u32, payload: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Con, Code::CONTENT, mid, token);
    w.uint_option(option::OBSERVE, seq)
        .uint_option(option::CONTENT_FORMAT, u32::from(SENML_JSON))
        .payload(payload);
    w.finish();
    node.recv(0, DEVICE, &buf)
}

fn content_paths(json: &serde_json::Value) -> Vec<&str> {
    json["data"]["content"]
        .as_array()
        .expect("content")
        .iter()
        .map(|c| c["path"].as_str().expect("path"))
        .collect()
}

#[test]
fn read_composite_of_three_paths_is_published_once_with_three_values() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":1,"msgType":"read-composite","data":{"paths":["/3/0/0","/3/0/9","/3303/0/5700"]}}"#,
    );
    let sent = sent_to_device(&mut node);
    assert_eq!(sent.len(), 1);
    let req = Message::parse(&sent[0]).expect("request");
    assert_eq!(req.code(), Code::FETCH);
    assert_eq!(
        req.payload(),
        br#"[{"n":"/3/0/0"},{"n":"/3/0/9"},{"n":"/3303/0/5700"}]"#
    );
    let token = req.token().to_vec();
    answer(
        &mut node,
        MessageType::Ack,
        Code::CONTENT,
        req.mid(),
        &token,
        Some(SENML_JSON),
        THREE_VALUES,
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    let (topic, json) = &published[0];
    assert_eq!(topic, "lwm2m/dev1/up/resp");
    assert_eq!(json["requestID"], 1);
    assert_eq!(json["msgType"], "read-composite");
    assert_eq!(json["data"]["code"], "2.05");
    assert_eq!(json["data"]["codeMsg"], "content");
    assert_eq!(json["data"]["reqPath"], "/");
    assert_eq!(content_paths(json), ["/3/0/0", "/3/0/9", "/3303/0/5700"]);
    assert_eq!(json["data"]["content"][0]["value"], "Open Mobile Alliance");
    assert_eq!(json["data"]["content"][1]["value"], 95);
    assert_eq!(json["data"]["content"][2]["value"], 22.5);
}

#[test]
fn observe_composite_notifications_are_published_as_notify_until_cancelled() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":4,"msgType":"observe-composite","data":{"paths":["/3/0/9","/3303/0/5700"]}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("request");
    assert_eq!((req.code(), req.observe()), (Code::FETCH, Some(0)));
    let token = req.token().to_vec();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Ack, Code::CONTENT, req.mid(), &token);
    w.uint_option(option::OBSERVE, 1)
        .uint_option(option::CONTENT_FORMAT, u32::from(SENML_JSON))
        .payload(br#"[{"n":"/3/0/9","v":95},{"n":"/3303/0/5700","v":22.5}]"#);
    w.finish();
    node.recv(0, DEVICE, &buf);
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["msgType"], "observe-composite");
    assert_eq!(published[0].1["data"]["reqPath"], "/");
    assert_eq!(content_paths(&published[0].1), ["/3/0/9", "/3303/0/5700"]);

    // A single observation of one of the paths is another observation.
    command(
        &mut node,
        &ep,
        r#"{"requestID":5,"msgType":"observe","data":{"path":"/3/0/9"}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("observe");
    let single = req.token().to_vec();
    assert_ne!(single, token);
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Ack,
        Code::CONTENT,
        req.mid(),
        &single,
    );
    w.uint_option(option::OBSERVE, 1)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"95");
    w.finish();
    node.recv(0, DEVICE, &buf);
    assert_eq!(node.take_published()[0].1["msgType"], "observe");

    let replies = notify(
        &mut node,
        700,
        &token,
        2,
        br#"[{"n":"/3/0/9","v":90},{"n":"/3303/0/5700","v":23.0}]"#,
    );
    assert_eq!(
        Message::parse(&replies[0]).expect("ack").ty(),
        MessageType::Ack
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    let (topic, json) = &published[0];
    assert_eq!(topic, "lwm2m/dev1/up/notify");
    assert_eq!(json["msgType"], "notify");
    assert_eq!(json["requestID"], 4);
    assert_eq!(json["seqNum"], 2);
    assert_eq!(json["data"]["reqPath"], "/");
    assert_eq!(content_paths(json), ["/3/0/9", "/3303/0/5700"]);
    assert_eq!(json["data"]["content"][0]["value"], 90);

    // Cancelled with the paths in another order: the same observation, its token reused.
    command(
        &mut node,
        &ep,
        r#"{"requestID":6,"msgType":"cancel-observe-composite","data":{"paths":["/3303/0/5700","/3/0/9"]}}"#,
    );
    let sent = sent_to_device(&mut node);
    let cancel = Message::parse(&sent[0]).expect("cancel");
    assert_eq!((cancel.code(), cancel.observe()), (Code::FETCH, Some(1)));
    assert_eq!(cancel.token(), token.as_slice(), "RFC 7641 §3.6");
    answer(
        &mut node,
        MessageType::Ack,
        Code::CONTENT,
        cancel.mid(),
        &token,
        None,
        b"",
    );
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "cancel-observe-composite");
    assert_eq!(published[0].1["data"]["code"], "2.05");

    // The composite observation is gone (its notifications are reset); the single one is not.
    let replies = notify(&mut node, 701, &token, 3, br#"[{"n":"/3/0/9","v":80}]"#);
    assert_eq!(
        Message::parse(&replies[0]).expect("rst").ty(),
        MessageType::Rst
    );
    assert!(node.take_published().is_empty());
    notify(&mut node, 702, &single, 3, br#"[{"n":"/3/0/9","v":80}]"#);
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["requestID"], 5);
}

#[test]
fn write_composite_answered_changed_is_published() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":2,"msgType":"write-composite","data":{"content":[{"path":"/1/0/1","type":"Integer","value":60},{"path":"/3/0/14","type":"String","value":"+02"}]}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("request");
    assert_eq!(req.code(), Code::IPATCH);
    assert_eq!(req.content_format(), Some(SENML_JSON));
    let values: serde_json::Value = serde_json::from_slice(req.payload()).expect("SenML");
    assert_eq!(values.as_array().map(Vec::len), Some(2));
    answer(
        &mut node,
        MessageType::Ack,
        Code::CHANGED,
        req.mid(),
        req.token(),
        None,
        b"",
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    let (topic, json) = &published[0];
    assert_eq!(topic, "lwm2m/dev1/up/resp");
    assert_eq!(json["requestID"], 2);
    assert_eq!(json["msgType"], "write-composite");
    assert_eq!(json["data"]["code"], "2.04");
    assert_eq!(json["data"]["codeMsg"], "changed");
    assert_eq!(json["data"]["reqPath"], "/");
}

#[test]
fn a_bad_composite_command_gets_an_error_response_and_nothing_is_sent() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":3,"msgType":"read-composite","data":{"paths":[]}}"#,
    );
    assert!(sent_to_device(&mut node).is_empty());
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    let json = &published[0].1;
    assert_eq!(json["msgType"], "read-composite");
    assert_eq!(json["data"]["code"], "4.00");
    assert_eq!(json["data"]["reqPath"], "/");
    assert_eq!(json["data"]["reason"], "data.paths is empty");
}

#[test]
fn read_composite_in_senml_cbor_both_ways_is_published_with_its_values() {
    use crate::content::format::SENML_CBOR;
    use crate::content::{self, Entry, Value};
    use crate::lwm2m::Path;
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":7,"msgType":"read-composite","data":{"paths":["/3/0/9","/3303/0/5700"],"format":"application/senml+cbor","accept":112}}"#,
    );
    let sent = sent_to_device(&mut node);
    assert_eq!(sent.len(), 1);
    let req = Message::parse(&sent[0]).expect("request");
    assert_eq!(req.code(), Code::FETCH);
    assert_eq!(req.content_format(), Some(SENML_CBOR));
    assert_eq!(req.accept(), Some(SENML_CBOR));
    let mut names = Vec::new();
    content::encode_senml_cbor_names(
        &[
            Path::parse("/3/0/9").expect("path"),
            Path::parse("/3303/0/5700").expect("path"),
        ],
        &mut names,
    );
    assert_eq!(req.payload(), names);
    let values = [
        Entry {
            path: Path::parse("/3/0/9").expect("path"),
            value: Value::Integer(95),
        },
        Entry {
            path: Path::parse("/3303/0/5700").expect("path"),
            value: Value::Float(22.5),
        },
    ];
    let mut payload = Vec::new();
    content::encode_senml_cbor(&values, &Path::ROOT, &mut payload).expect("encodes");
    let token = req.token().to_vec();
    answer(
        &mut node,
        MessageType::Ack,
        Code::CONTENT,
        req.mid(),
        &token,
        Some(SENML_CBOR),
        &payload,
    );
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    let json = &published[0].1;
    assert_eq!(json["requestID"], 7);
    assert_eq!(json["data"]["code"], "2.05");
    assert_eq!(content_paths(json), ["/3/0/9", "/3303/0/5700"]);
    assert_eq!(json["data"]["content"][0]["value"], 95);
    assert_eq!(json["data"]["content"][1]["value"], 22.5);
}
