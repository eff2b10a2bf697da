//! Queue mode through the shard: commands for a sleeping device wait, are acknowledged as
//! `queued`, go out in order when it next sends, and expire with 5.04.

use std::time::Duration;

use super::downlink_tests::command;
use super::tests::{request, Node, DEVICE};
use super::*;
use crate::coap::{Message, MessageType, MessageWriter};

const WINDOW: Duration = Duration::from_secs(22);

/// A `UQ` device `sleepy` registered; returns the node and its location id.
fn sleepy() -> (Node, String) {
    let mut node = Node::new(1, |_| {});
    let reg = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=sleepy", "lt=3600", "lwm2m=1.0", "b=UQ"],
        b"</3/0>",
    );
    let replies = node.recv(0, DEVICE, &reg);
    let created = Message::parse(&replies[0]).expect("reply");
    assert_eq!(created.code(), Code::CREATED);
    let id = created
        .location_path()
        .nth(1)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .expect("location");
    node.take_published();
    (node, id)
}

/// The requests the device received since the last call.
fn requests(node: &mut Node) -> Vec<Vec<u8>> {
    let to: SocketAddr = DEVICE.parse().expect("addr");
    let out = node
        .sent
        .iter()
        .filter(|(_, d, _)| *d == to)
        .map(|(_, _, b)| b.clone())
        .filter(|b| Message::parse(b).is_ok_and(|m| m.code().is_request()))
        .collect();
    node.sent.retain(|(_, d, _)| *d != to);
    out
}

fn content(node: &mut Node, req: &[u8], value: &[u8]) -> Vec<Vec<u8>> {
    let req = Message::parse(req).expect("request");
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Ack,
        Code::CONTENT,
        req.mid(),
        req.token(),
    );
    w.uint_option(option::CONTENT_FORMAT, 0).payload(value);
    w.finish();
    node.recv(0, DEVICE, &buf)
}

fn path_of(req: &[u8]) -> String {
    let m = Message::parse(req).expect("request");
    let segs: Vec<String> = m
        .uri_path()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    format!("/{}", segs.join("/"))
}

#[test]
fn commands_wait_for_a_sleeping_device_and_go_out_in_order_when_it_updates() {
    let (mut node, id) = sleepy();
    // Right after registering it is awake: a command goes out at once.
    command(
        &mut node,
        "sleepy",
        r#"{"reqID":"0","msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let now = requests(&mut node);
    assert_eq!(now.len(), 1);
    let replies_before = content(&mut node, &now[0], b"awake");
    assert!(replies_before
        .iter()
        .all(|r| Message::parse(r).is_ok_and(|m| !m.code().is_request())));
    node.take_published();

    node.advance(WINDOW + Duration::from_secs(1));
    command(
        &mut node,
        "sleepy",
        r#"{"reqID":"1","msgType":"read","data":{"path":"/3/0/1"}}"#,
    );
    command(
        &mut node,
        "sleepy",
        r#"{"reqID":"2","msgType":"read","data":{"path":"/3/0/2"}}"#,
    );
    assert!(
        requests(&mut node).is_empty(),
        "nothing is sent to a sleeping device"
    );
    let acks = node.take_published();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].1["msgType"], "queued");
    assert_eq!(acks[0].1["reqID"], "1");
    assert_eq!(acks[0].1["data"]["cmdType"], "read");
    assert_eq!(acks[0].1["data"]["reqPath"], "/3/0/1");
    assert_eq!(
        acks[0].1["data"]["ttl"], 3600,
        "the registration lifetime by default"
    );

    // It wakes with an Update: the first queued command follows its 2.04.
    let update = request(MessageType::Con, Code::POST, 2, &["rd", &id], &[], b"");
    let replies = node.recv(0, DEVICE, &update);
    let first: Vec<_> = replies
        .iter()
        .filter(|r| Message::parse(r).is_ok_and(|m| m.code() == Code::GET))
        .cloned()
        .collect();
    assert_eq!(first.len(), 1, "one exchange at a time");
    assert_eq!(path_of(&first[0]), "/3/0/1");
    let after = content(&mut node, &first[0], b"one");
    let second: Vec<_> = after
        .iter()
        .filter(|r| Message::parse(r).is_ok_and(|m| m.code() == Code::GET))
        .cloned()
        .collect();
    assert_eq!(path_of(&second[0]), "/3/0/2");
    content(&mut node, &second[0], b"two");
    let answers: Vec<_> = node
        .take_published()
        .into_iter()
        .filter(|(_, v)| v["msgType"] == "read")
        .map(|(_, v)| v["reqID"].clone())
        .collect();
    assert_eq!(
        answers,
        vec![serde_json::json!("1"), serde_json::json!("2")]
    );
}

#[test]
fn a_queued_command_past_its_ttl_is_answered_expired_and_never_sent() {
    let (mut node, id) = sleepy();
    node.advance(WINDOW + Duration::from_secs(1));
    command(
        &mut node,
        "sleepy",
        r#"{"reqID":"9","mheaders":{"ttl":30},"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let acks = node.take_published();
    assert_eq!(acks[0].1["data"]["ttl"], 30);
    node.advance(Duration::from_secs(31));
    let expired = node.take_published();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].1["reqID"], "9");
    assert_eq!(expired[0].1["data"]["code"], "5.04");
    assert_eq!(expired[0].1["data"]["reason"], "expired");
    let update = request(MessageType::Con, Code::POST, 3, &["rd", &id], &[], b"");
    let replies = node.recv(0, DEVICE, &update);
    assert!(
        replies
            .iter()
            .all(|r| Message::parse(r).is_ok_and(|m| !m.code().is_request())),
        "the expired command is not sent"
    );
    assert_eq!(node.shards[0].stats().commands_expired, 1);
}

#[test]
fn a_full_queue_answers_5_03() {
    let mut node = Node::new(1, |c| c.gateway.max_queued_commands = 2);
    let reg = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=sleepy", "lt=3600", "b=UQ"],
        b"</3/0>",
    );
    node.recv(0, DEVICE, &reg);
    node.advance(WINDOW + Duration::from_secs(1));
    node.take_published();
    for i in 0..3 {
        command(
            &mut node,
            "sleepy",
            &format!(r#"{{"reqID":"{i}","msgType":"read","data":{{"path":"/3/0/0"}}}}"#),
        );
    }
    let published = node.take_published();
    assert_eq!(published[2].1["data"]["code"], "5.03", "{published:?}");
}

#[test]
fn a_u_device_on_a_psm_apn_is_in_queue_mode() {
    let mut node = Node::new(1, |c| c.gateway.psm_apns = vec!["iot.psm".into()]);
    let reg = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=sleepy", "lt=3600", "b=U", "apn=IoT.PSM"],
        b"</3/0>",
    );
    node.recv(0, DEVICE, &reg);
    node.advance(WINDOW + Duration::from_secs(1));
    node.take_published();
    command(
        &mut node,
        "sleepy",
        r#"{"reqID":"1","msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    assert!(requests(&mut node).is_empty(), "it sleeps: nothing is sent");
    let acks = node.take_published();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].1["msgType"], "queued");

    // Another APN, or none, is not PSM: a command goes out at once.
    for (ep, apn) in [("awake", "apn=internet"), ("plain", "sms=+4912")] {
        let reg = request(
            MessageType::Con,
            Code::POST,
            2,
            &["rd"],
            &[&format!("ep={ep}"), "lt=3600", "b=U", apn],
            b"</3/0>",
        );
        node.recv(0, "127.0.0.9:5683", &reg);
        node.advance(WINDOW + Duration::from_secs(1));
        node.take_published();
        command(
            &mut node,
            ep,
            r#"{"reqID":"2","msgType":"read","data":{"path":"/3/0/0"}}"#,
        );
        let sent: Vec<_> = node.sent.drain(..).collect();
        assert_eq!(sent.len(), 1, "{ep}: sent at once");
        assert!(node
            .take_published()
            .iter()
            .all(|(_, v)| v["msgType"] != "queued"));
    }
}
