//! Fake-clock scenarios of device management: retransmission timing, timeouts, resets,
//! the per-device FIFO, observations, and commands for endpoints that are not there.

use std::time::Duration;

use super::downlink::INTERACTIVE_SPAN;
use super::tests::{registry, Node};
use super::*;
use crate::coap::{Message, MessageType, MessageWriter};

pub(super) const DEVICE: &str = "127.0.0.2:56830";

pub(super) fn registered(shards: usize) -> (Node, String) {
    let mut node = Node::new(shards, |_| {});
    let req = super::tests::request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=dev1", "lt=3000", "lwm2m=1.1"],
        b"</>;rt=\"oma.lwm2m\",</3/0>,</3303/0>",
    );
    node.recv(0, DEVICE, &req);
    node.take_published();
    (node, "dev1".to_owned())
}

/// Delivers a command to every shard, as the wildcard subscription does.
pub(super) fn command(node: &mut Node, ep: &str, json: &str) {
    let topic = format!("lwm2m/{ep}/dn");
    for s in &mut node.shards {
        s.handle_command(node.now, &topic, json.as_bytes());
    }
    node.settle();
}

/// Delivers a `read` of `path` with `requestID` `id`, as [`command`] does.
fn read(node: &mut Node, ep: &str, id: usize, path: &str) {
    let json = format!(r#"{{"requestID":{id},"msgType":"read","data":{{"path":"{path}"}}}}"#);
    command(node, ep, &json);
}

/// A [`read`] the device answers at once with 2.05 `payload` in format `cf`.
fn answered_read(node: &mut Node, ep: &str, id: usize, path: &str, cf: u16, payload: &[u8]) {
    read(node, ep, id, path);
    let sent = sent_to_device(node);
    let req = Message::parse(&sent[0]).expect("request");
    let (mid, token) = (req.mid(), req.token().to_vec());
    answer(
        node,
        MessageType::Ack,
        Code::CONTENT,
        mid,
        &token,
        Some(cf),
        payload,
    );
}

pub(super) fn sent_to_device(node: &mut Node) -> Vec<Vec<u8>> {
    let to = DEVICE.parse().expect("addr");
    let out = node
        .sent
        .iter()
        .filter(|(_, d, _)| *d == to)
        .map(|(_, _, b)| b.clone())
        .collect();
    node.sent.clear();
    out
}

pub(super) fn answer(
    node: &mut Node,
    ty: MessageType,
    code: Code,
    mid: u16,
    token: &[u8],
    cf: Option<u16>,
    payload: &[u8],
) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, ty, code, mid, token);
    if let Some(cf) = cf {
        w.uint_option(option::CONTENT_FORMAT, u32::from(cf));
    }
    w.payload(payload);
    w.finish();
    node.recv(0, DEVICE, &buf)
}

/// A text value under an Observe option, as a device sends it: in the ACK that accepts an
/// observe (`ty` Ack with the request's `mid`) or as a notification (CON or NON).
pub(super) fn observe_value(
    ty: MessageType,
    mid: u16,
    token: &[u8],
    seq: u32,
    value: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, ty, Code::CONTENT, mid, token);
    w.uint_option(option::OBSERVE, seq)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(value);
    w.finish();
    buf
}

#[test]
fn unanswered_con_is_retransmitted_four_times_then_coap_timeout() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":7,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let first = sent_to_device(&mut node);
    assert_eq!(first.len(), 1);
    let req = Message::parse(&first[0]).expect("request").mid();
    let mut sends = vec![Duration::ZERO];
    let mut elapsed = Duration::ZERO;
    let step = Duration::from_millis(100);
    let mut published = Vec::new();
    while elapsed < Duration::from_secs(200) && published.is_empty() {
        node.advance(step);
        elapsed += step;
        for d in sent_to_device(&mut node) {
            assert_eq!(
                Message::parse(&d).expect("retransmission").mid(),
                req,
                "same MID"
            );
            sends.push(elapsed);
        }
        published = node.take_published();
    }
    assert_eq!(sends.len(), 5, "1 + MAX_RETRANSMIT: {sends:?}");
    // RFC 7252 §4.2: first timeout in [2 s, 3 s), doubling.
    let first_gap = sends[1] - sends[0];
    assert!(
        first_gap >= Duration::from_secs(2) && first_gap <= Duration::from_millis(3100),
        "{sends:?}"
    );
    for w in sends.windows(3) {
        let (a, b) = (w[1] - w[0], w[2] - w[1]);
        assert!(
            b >= a * 2 - step && b <= a * 2 + step,
            "doubling: {sends:?}"
        );
    }
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, "lwm2m/dev1/up/resp");
    assert_eq!(published[0].1["msgType"], "coap_timeout");
    assert_eq!(published[0].1["requestID"], 7);
    assert_eq!(published[0].1["data"]["path"], "/3/0/0");
}

#[test]
fn one_request_in_flight_fifo_behind_it_and_fresh_tokens() {
    let (mut node, ep) = registered(1);
    for i in 0..3 {
        read(&mut node, &ep, i, &format!("/3/0/{i}"));
    }
    let mut tokens = Vec::new();
    let mut sent = sent_to_device(&mut node);
    for i in 0..3 {
        assert_eq!(sent.len(), 1, "exactly one in flight");
        let req = Message::parse(&sent[0]).expect("request");
        let path: Vec<&[u8]> = req.uri_path().collect();
        assert_eq!(path, [b"3".as_slice(), b"0", format!("{i}").as_bytes()]);
        assert_eq!(req.token().len(), 8);
        tokens.push(req.token().to_vec());
        let next = answer(
            &mut node,
            MessageType::Ack,
            Code::CONTENT,
            req.mid(),
            req.token(),
            Some(0),
            b"x",
        );
        let published = node.take_published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].1["requestID"], i);
        sent = next;
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "every request carries a fresh token");
}

#[test]
fn reset_publishes_coap_reset_and_a_wrong_mid_is_ignored() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":1,"msgType":"execute","data":{"path":"/3/0/4"}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("request");
    let mut rst = Vec::new();
    write_empty(&mut rst, MessageType::Rst, req.mid().wrapping_add(1));
    node.recv(0, DEVICE, &rst);
    assert!(
        node.take_published().is_empty(),
        "RST for another MID does nothing"
    );
    rst.clear();
    write_empty(&mut rst, MessageType::Rst, req.mid());
    node.recv(0, DEVICE, &rst);
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "coap_reset");
    assert_eq!(published[0].1["requestID"], 1);
}

#[test]
fn observe_notifications_carry_seqnum_and_stale_ones_are_dropped() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":9,"msgType":"observe","data":{"path":"/3/0/9"}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("request");
    assert_eq!(req.observe(), Some(0));
    let token = req.token().to_vec();
    node.recv(
        0,
        DEVICE,
        &observe_value(MessageType::Ack, req.mid(), &token, 3, b"90"),
    );
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "observe");
    assert_eq!(published[0].1["data"]["content"][0]["value"], 90);

    for (mid, seq, value, expect) in [
        (500u16, 5u32, "80", true),
        (501, 4, "85", false),
        (502, 6, "70", true),
    ] {
        let buf = observe_value(MessageType::Con, mid, &token, seq, value.as_bytes());
        let replies = node.recv(0, DEVICE, &buf);
        let ack = Message::parse(&replies[0]).expect("ack");
        assert_eq!(
            (ack.ty(), ack.mid()),
            (MessageType::Ack, mid),
            "CON notification acknowledged"
        );
        let published = node.take_published();
        if expect {
            assert_eq!(published.len(), 1);
            assert_eq!(published[0].0, "lwm2m/dev1/up/notify");
            assert_eq!(published[0].1["msgType"], "notify");
            assert_eq!(published[0].1["seqNum"], seq);
            assert_eq!(published[0].1["requestID"], 9);
        } else {
            assert!(published.is_empty(), "stale notification {seq} dropped");
        }
    }
    // A notification with an unknown token is reset.
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Con, Code::CONTENT, 600, &[9; 8]);
    w.uint_option(option::OBSERVE, 7);
    w.finish();
    let replies = node.recv(0, DEVICE, &buf);
    assert_eq!(
        Message::parse(&replies[0]).expect("rst").ty(),
        MessageType::Rst
    );
}

#[test]
fn commands_for_absent_endpoints_get_one_404_from_one_shard() {
    let (mut node, _) = registered(2);
    for ep in ["ghost-a", "ghost-b", "ghost-c", "ghost-d"] {
        command(
            &mut node,
            ep,
            r#"{"requestID":"r1","msgType":"read","data":{"path":"/3/0"}}"#,
        );
        let published = node.take_published();
        assert_eq!(published.len(), 1, "{ep}: exactly one answer across shards");
        assert_eq!(published[0].0, format!("lwm2m/{ep}/up/resp"));
        assert_eq!(published[0].1["requestID"], "r1");
        assert_eq!(published[0].1["data"]["code"], "4.04");
    }
    // The registered endpoint is answered by its own shard only.
    command(
        &mut node,
        "dev1",
        r#"{"requestID":2,"msgType":"read","data":{"path":"/3/0"}}"#,
    );
    assert!(node.take_published().is_empty());
    assert_eq!(sent_to_device(&mut node).len(), 1);
}

#[test]
fn deregistering_fails_pending_commands_instead_of_dropping_them() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":1,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    command(
        &mut node,
        &ep,
        r#"{"requestID":2,"msgType":"read","data":{"path":"/3/0/1"}}"#,
    );
    node.advance(Duration::from_secs(3001));
    let published = node.take_published();
    let ids: Vec<_> = published
        .iter()
        .filter(|(_, j)| j["data"]["code"] == "4.04")
        .map(|(_, j)| j["requestID"].clone())
        .collect();
    assert_eq!(ids, [1, 2], "{published:?}");
    let _ = registry();
}

/// A device answering in Block2 blocks (here a read answered in 16-byte blocks) is asked
/// for each next block — same method and token, no payload, a new MID — and the response
/// is published once, with the whole body.
#[test]
fn block2_response_is_followed_up_and_published_whole() {
    let (mut node, ep) = registered(1);
    command(
        &mut node,
        &ep,
        r#"{"requestID":5,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("request");
    let token = req.token().to_vec();
    let body = b"Open Mobile Alliance, block by block".to_vec();
    let mut mid = req.mid();
    for (num, chunk) in body.chunks(16).enumerate() {
        let more = (num + 1) * 16 < body.len();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, MessageType::Ack, Code::CONTENT, mid, &token);
        w.uint_option(option::CONTENT_FORMAT, 0).block_option(
            option::BLOCK2,
            crate::coap::Block {
                num: num as u32,
                more,
                szx: 0,
            },
        );
        w.payload(chunk);
        w.finish();
        let next = node.recv(0, DEVICE, &buf);
        let published = node.take_published();
        if !more {
            assert_eq!(published.len(), 1, "published once, at the last block");
            assert_eq!(published[0].1["data"]["code"], "2.05");
            assert_eq!(
                published[0].1["data"]["content"][0]["value"],
                "Open Mobile Alliance, block by block"
            );
            assert!(next.is_empty(), "nothing more asked");
            break;
        }
        assert!(published.is_empty(), "block {num} is not the whole answer");
        assert_eq!(next.len(), 1, "block {} asked for", num + 1);
        let next = Message::parse(&next[0]).expect("next block request");
        assert_eq!(next.code(), Code::GET);
        assert_eq!(next.token(), token.as_slice(), "same token");
        assert_ne!(next.mid(), mid, "new MID");
        assert!(next.payload().is_empty());
        let asked = next.block2().expect("Block2");
        assert_eq!(
            (asked.num, asked.more, asked.szx),
            (num as u32 + 1, false, 0)
        );
        mid = next.mid();
    }
    // The queue moves on.
    command(
        &mut node,
        &ep,
        r#"{"requestID":6,"msgType":"read","data":{"path":"/3/0/1"}}"#,
    );
    assert_eq!(sent_to_device(&mut node).len(), 1);
}

/// A write beyond the block-wise limit is answered at once with 4.13 and a reason, is
/// never sent, and does not hold up the commands behind it.
#[test]
fn oversized_write_is_answered_at_once_and_never_blocks_the_queue() {
    let (mut node, ep) = registered(1);
    let big = "x".repeat(crate::translate::MAX_BLOCK1_BODY + 1);
    let json = format!(
        r#"{{"requestID":1,"msgType":"write","data":{{"path":"/3/0/14","type":"String","value":"{big}"}}}}"#
    );
    command(&mut node, &ep, &json);
    assert!(sent_to_device(&mut node).is_empty(), "not sent");
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    let data = &published[0].1["data"];
    assert_eq!(
        (&data["code"], &data["codeMsg"], &data["reqPath"]),
        (
            &serde_json::json!("4.13"),
            &serde_json::json!("request_entity_too_large"),
            &serde_json::json!("/3/0/14")
        )
    );
    assert!(data["reason"].as_str().is_some_and(|r| r.contains("block")));
    command(
        &mut node,
        &ep,
        r#"{"requestID":2,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    assert_eq!(
        sent_to_device(&mut node).len(),
        1,
        "the next command goes out"
    );
}

/// Notifications of the Firmware Update object go to `translators.dm_notify`
/// (`v1/up/dm` by default, as EMQX), other objects' to `notify`; with `dm_notify`
/// off they all go to `notify`.
#[test]
fn firmware_notifications_go_to_dm_notify() {
    for (dm_on, firmware_topic) in [
        (true, "lwm2m/dev1/v1/up/dm"),
        (false, "lwm2m/dev1/up/notify"),
    ] {
        let (mut node, ep) = registered(1);
        if !dm_on {
            for s in &mut node.shards {
                s.cfg.translators.dm_notify = None;
            }
        }
        for (i, (path, topic)) in [
            ("/5/0/3", firmware_topic),
            ("/3/0/9", "lwm2m/dev1/up/notify"),
        ]
        .into_iter()
        .enumerate()
        {
            let json =
                format!(r#"{{"requestID":{i},"msgType":"observe","data":{{"path":"{path}"}}}}"#);
            command(&mut node, &ep, &json);
            let sent = sent_to_device(&mut node);
            let req = Message::parse(&sent[0]).expect("observe");
            let (mid, token) = (req.mid(), req.token().to_vec());
            let mut buf = Vec::new();
            let mut w = MessageWriter::new(&mut buf, MessageType::Ack, Code::CONTENT, mid, &token);
            w.uint_option(option::OBSERVE, 1)
                .uint_option(option::CONTENT_FORMAT, 0)
                .payload(b"1");
            w.finish();
            node.recv(0, DEVICE, &buf);
            assert_eq!(node.take_published()[0].0, "lwm2m/dev1/up/resp");
            let mut buf = Vec::new();
            let mut w = MessageWriter::new(
                &mut buf,
                MessageType::Non,
                Code::CONTENT,
                900 + i as u16,
                &token,
            );
            w.uint_option(option::OBSERVE, 2)
                .uint_option(option::CONTENT_FORMAT, 0)
                .payload(b"2");
            w.finish();
            node.recv(0, DEVICE, &buf);
            let published = node.take_published();
            assert_eq!(published.len(), 1);
            assert_eq!(
                (published[0].0.as_str(), &published[0].1["msgType"]),
                (topic, &serde_json::json!("notify")),
                "{path}"
            );
        }
    }
}

/// Objects beyond the core ones arrive typed because the shipped `lwm2m_xml/` is the OMA
/// registry (this test depends on that on purpose: it is what the default `xml_dir` is for).
/// Without a definition, the text values would be strings and the TLV base64 with
/// `"decoded": false`.
#[test]
fn registry_objects_decode_typed() {
    let mut node = Node::new(1, |_| {});
    let req = super::tests::request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=dev1", "lt=3000", "lwm2m=1.1"],
        b"</>;rt=\"oma.lwm2m\",</3303/0>,</3311/0>,</10262/0>",
    );
    node.recv(0, DEVICE, &req);
    node.take_published();
    let tlv_10262 = [
        &[0xc5, 0x00][..],
        b"meter",
        &[0xc4, 0x03, 0x0c, 0xe7, 0x00, 0x00], // /10262/0/3 Objlnk 3303:0
    ]
    .concat();
    let cases: [(&str, u16, &[u8], serde_json::Value); 4] = [
        (
            "/3303/0/5700",
            0,
            b"21.5",
            serde_json::json!([{"path": "/3303/0/5700", "value": 21.5}]),
        ),
        (
            "/3311/0/5850",
            0,
            b"1",
            serde_json::json!([{"path": "/3311/0/5850", "value": true}]),
        ),
        (
            "/3311/0/5850",
            crate::content::format::TLV,
            &[0xe1, 0x16, 0xda, 0x00], // 16-bit resource ID 5850, value 0,
            serde_json::json!([{"path": "/3311/0/5850", "value": false}]),
        ),
        (
            "/10262/0",
            crate::content::format::TLV,
            &tlv_10262,
            serde_json::json!([
                {"path": "/10262/0/0", "value": "meter"},
                {"path": "/10262/0/3", "value": "3303:0"}
            ]),
        ),
    ];
    for (i, (path, cf, payload, want)) in cases.into_iter().enumerate() {
        answered_read(&mut node, "dev1", i, path, cf, payload);
        let published = node.take_published();
        assert_eq!(published.len(), 1, "{path}");
        let data = &published[0].1["data"];
        assert_eq!(data["code"], "2.05", "{path}: {data}");
        assert!(data.get("decoded").is_none(), "{path}: {data}");
        assert_eq!(data["content"], want, "{path}");
    }
}

/// Two definitions of object 3303 whose Sensor Value differs in type: a device naming
/// `ver=1.0` in its object list has its values typed by 1.0, the others by the serving
/// 1.1 (also a device naming a version the registry lacks).
#[test]
fn ver_in_the_object_list_types_values_by_that_version() {
    use crate::lwm2m::{ObjectDef, Operations, ResourceDef, ResourceType};
    let def = |version: &str, kind| ObjectDef {
        id: 3303,
        name: "Temperature".into(),
        version: version.into(),
        multiple: true,
        resources: vec![ResourceDef {
            id: 5700,
            name: "Sensor Value".into(),
            operations: Operations {
                read: true,
                ..Operations::default()
            },
            multiple: false,
            mandatory: true,
            kind,
        }],
    };
    let registry = Registry::from_defs([
        def("1.1", ResourceType::Float),
        def("1.0", ResourceType::String),
    ]);
    let mut node = Node::with_registry(1, Arc::new(registry), |_| {});
    let devices = [
        (
            "old",
            "</3303>;ver=1.0,</3303/0>",
            serde_json::json!("22.5"),
        ),
        ("new", "</3303/0>", serde_json::json!(22.5)),
        (
            "future",
            "</3303>;ver=2.0,</3303/0>",
            serde_json::json!(22.5),
        ),
    ];
    for (i, (ep, list, expected)) in devices.into_iter().enumerate() {
        let from = format!("127.0.0.{}:5683", 20 + i);
        let ep_q = format!("ep={ep}");
        let reg = super::tests::request(
            MessageType::Con,
            Code::POST,
            1,
            &["rd"],
            &[&ep_q, "lt=300", "lwm2m=1.1"],
            list.as_bytes(),
        );
        node.recv(0, &from, &reg);
        node.take_published();
        command(
            &mut node,
            ep,
            r#"{"requestID":1,"msgType":"read","data":{"path":"/3303/0/5700"}}"#,
        );
        let to: SocketAddr = from.parse().expect("addr");
        let sent: Vec<_> = node.sent.drain(..).filter(|(_, d, _)| *d == to).collect();
        let req = Message::parse(&sent[0].2).expect("read");
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::Ack,
            Code::CONTENT,
            req.mid(),
            req.token(),
        );
        w.uint_option(option::CONTENT_FORMAT, 0).payload(b"22.5");
        w.finish();
        node.recv(0, &from, &buf);
        let published = node.take_published();
        assert_eq!(published.len(), 1, "{ep}: {published:?}");
        assert_eq!(
            published[0].1["data"]["content"][0]["value"], expected,
            "{ep} registered {list}"
        );
    }
}

#[test]
fn the_shard_is_interactive_while_someone_waits_for_an_answer_not_for_notifications() {
    let (mut node, ep) = registered(1);
    // The device that just registered is waiting on its next step.
    assert!(node.shards[0].interactive(node.now), "after a Register");
    node.advance(INTERACTIVE_SPAN);
    assert!(!node.shards[0].interactive(node.now), "quiet for the span");

    command(
        &mut node,
        &ep,
        r#"{"requestID":1,"msgType":"observe","data":{"path":"/3/0/9"}}"#,
    );
    assert!(node.shards[0].interactive(node.now), "a command went out");
    let sent = sent_to_device(&mut node);
    let req = Message::parse(&sent[0]).expect("request");
    let token = req.token().to_vec();
    node.recv(
        0,
        DEVICE,
        &observe_value(MessageType::Ack, req.mid(), &token, 3, b"90"),
    );
    node.advance(INTERACTIVE_SPAN);
    assert!(!node.shards[0].interactive(node.now), "answered, span over");

    // Notifications are only forwarded: nobody waits for them.
    for (mid, seq) in [(700u16, 4u32), (701, 5)] {
        node.recv(
            0,
            DEVICE,
            &observe_value(MessageType::Non, mid, &token, seq, b"80"),
        );
        node.advance(Duration::from_millis(1));
    }
    assert_eq!(
        node.take_published().len(),
        3,
        "observe answer and two notifications"
    );
    assert!(
        !node.shards[0].interactive(node.now),
        "notifications leave it batching"
    );

    // An Update (here for a registration the shard does not know: 4.04) is the
    // registration interface again.
    let update = super::tests::request(MessageType::Con, Code::POST, 9, &["rd", "x"], &[], b"");
    node.recv(0, DEVICE, &update);
    assert!(node.shards[0].interactive(node.now), "after an Update");
}

#[test]
fn answered_requests_leave_no_timer_behind() {
    let (mut node, ep) = registered(1);
    // 100 reads answered at once, 10 ms apart: their retransmission deadlines, 2–3 s after
    // each, fall within about a second.
    for i in 0..100 {
        answered_read(&mut node, &ep, i, "/3/0/0", 0, b"x");
        node.advance(Duration::from_millis(10));
    }
    assert_eq!(node.take_published().len(), 100);
    // The shard's timer, run for the next 5 s: it wakes for housekeeping (every second),
    // not at each answered request's deadline.
    let end = node.now + Duration::from_secs(5);
    let shard = &mut node.shards[0];
    let mut wakes = 0;
    while let Some(at) = shard.poll_timeout().filter(|at| *at <= end) {
        shard.handle_timeout(at);
        wakes += 1;
        assert!(wakes <= 6, "the timer woke {wakes} times");
    }
    assert!(wakes >= 5, "housekeeping runs every second: {wakes}");
    assert_eq!(shard.stats().retransmissions, 0);
}
