//! Fake-clock scenarios of what the management API asks of a shard: listings that resume
//! and stop at a budget, a client's details, deregistration by the operator, and the
//! outcome of an API command handed back under its tag, with its per-msgType count.

use std::collections::BTreeSet;
use std::time::Duration;

use super::downlink_tests::{answer, registered, sent_to_device};
use super::tests::{request, Node};
use super::*;
use crate::coap::MessageType;
use crate::translate::Operation;

/// A node of one shard with `n` endpoints `ep-<i>`, each from its own port.
fn with_endpoints(n: u16) -> Node {
    let mut node = Node::new(1, |_| {});
    for i in 0..n {
        let ep = format!("ep=ep-{i}");
        let req = request(
            MessageType::Con,
            Code::POST,
            i,
            &["rd"],
            &[&ep, "lt=600"],
            b"</3/0>",
        );
        node.recv(0, &format!("127.0.0.9:{}", 20_000 + i), &req);
    }
    node.take_published();
    node
}

#[test]
fn a_listing_resumes_at_its_cursor_and_sees_every_client_once() {
    let node = with_endpoints(50);
    let shard = &node.shards[0];
    let everyone = ClientFilter::default();
    let mut seen = BTreeSet::new();
    let (mut cursor, mut pages, mut turns) = (Some(ClientCursor::default()), 0, 0);
    while let Some(mut at) = cursor.take() {
        let mut page = Vec::new();
        loop {
            turns += 1;
            // A budget of 8 buckets pauses long before a page of 7 fills.
            match shard.list_clients(node.now, &everyone, at, 7, 8, &mut page) {
                ListStep::Full(next) => {
                    cursor = Some(next);
                    break;
                }
                ListStep::Paused(next) => at = next,
                ListStep::End => break,
            }
        }
        assert!(page.len() <= 7);
        pages += 1;
        for c in page {
            assert!(
                seen.insert(c.endpoint_name.clone()),
                "{} twice",
                c.endpoint_name
            );
        }
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(pages, 8, "50 clients in pages of 7");
    assert!(turns > pages, "the budget paused the walk");
    assert_eq!(shard.count_clients(&everyone, 0, 1), (50, None));

    // A page asked from an offset passes over that many matching clients.
    let mut page = Vec::new();
    let from_45 = ClientCursor {
        bucket: 0,
        skip: 45,
    };
    let step = shard.list_clients(node.now, &everyone, from_45, 10, usize::MAX, &mut page);
    assert_eq!((step, page.len()), (ListStep::End, 5));

    // A filter counts in turns of its budget.
    let like = ClientFilter {
        like: Some("ep-4".into()),
        ..ClientFilter::default()
    };
    let (mut count, mut from) = (0, Some(0));
    while let Some(at) = from {
        let (n, next) = shard.count_clients(&like, at, 16);
        count += n;
        from = next;
    }
    assert_eq!(count, 11, "ep-4 and ep-40..ep-49");
}

#[test]
fn details_and_operator_deregistration() {
    let (mut node, ep) = registered(2);
    let later = node.now + Duration::from_secs(100);
    let info = node.shards[0].client(later, &ep).expect("held by shard 0");
    assert_eq!(info.lifetime, 3000);
    assert_eq!(info.lifetime_left, 2900);
    assert_eq!(info.registered_secs_ago, 100);
    let objects = info.object_list.expect("details carry the object list");
    assert_eq!(objects, ["/3/0", "/3303/0"]);
    assert_eq!(info.queued_commands, Some(0));
    assert!(node.shards[1].client(later, &ep).is_none());

    assert!(!node.shards[1].deregister_client(node.now, &ep));
    assert!(node.shards[0].deregister_client(node.now, &ep));
    node.settle();
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["data"]["event"], "deregister");
    assert_eq!(node.registered(), 0);
    assert_eq!(node.shards[0].stats().deregistered, 1);
}

#[test]
fn an_api_command_is_answered_under_its_tag_and_counted() {
    let (mut node, ep) = registered(1);
    let read = br#"{"reqID":"1","msgType":"read","data":{"path":"/3/0/0"}}"#;
    assert!(!node.shards[0].handle_api_command(node.now, "nobody", read, 7));
    assert!(node.shards[0].handle_api_command(node.now, &ep, read, 7));
    node.settle();
    assert!(
        node.shards[0].poll_answer().is_none(),
        "not before the device answers"
    );
    let sent = sent_to_device(&mut node);
    let req = crate::coap::Message::parse(&sent[0]).expect("a CoAP request");
    let (mid, token) = (req.mid(), req.token().to_vec());
    answer(
        &mut node,
        MessageType::Ack,
        Code::CONTENT,
        mid,
        &token,
        Some(0),
        b"ACME",
    );
    let (tag, json) = node.shards[0].poll_answer().expect("the outcome");
    assert_eq!(tag, 7);
    let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(json["data"]["code"], "2.05");
    let published = node.take_published();
    assert_eq!(
        published.last().map(|p| &p.1),
        Some(&json),
        "and on MQTT as usual"
    );
    let stats = node.shards[0].stats();
    assert_eq!(
        stats
            .command_results
            .get(Some(Operation::Read), CommandResult::Ok),
        1
    );
    assert_eq!(stats.command_rtt.count(), 1);

    // A bad command is answered at once, under its tag, as a 4.xx.
    assert!(node.shards[0].handle_api_command(node.now, &ep, br#"{"msgType":"dance"}"#, 8));
    let (tag, _) = node.shards[0].poll_answer().expect("the error");
    assert_eq!(tag, 8);
    let stats = node.shards[0].stats();
    assert_eq!(
        stats.command_results.get(None, CommandResult::ClientError),
        1
    );
}

#[test]
fn an_api_command_for_a_sleeping_device_is_answered_with_the_queued_notice() {
    let mut node = Node::new(1, |_| {});
    let reg = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=sleepy", "lt=3600", "b=UQ"],
        b"</3/0>",
    );
    node.recv(0, super::downlink_tests::DEVICE, &reg);
    // Past the queue-mode window (22 s by default) the device sleeps.
    node.advance(Duration::from_secs(30));
    node.take_published();
    let read = br#"{"reqID":"9","msgType":"read","data":{"path":"/3/0/0"}}"#;
    assert!(node.shards[0].handle_api_command(node.now, "sleepy", read, 3));
    let (tag, json) = node.shards[0].poll_answer().expect("answered at once");
    assert_eq!(tag, 3);
    let json: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(json["msgType"], "queued", "{json}");
    assert_eq!(json["data"]["cmdType"], "read");
    assert!(
        sent_to_device(&mut node).is_empty(),
        "nothing sent to a sleeping device"
    );
    let info = node.shards[0]
        .client(node.now, "sleepy")
        .expect("registered");
    assert_eq!(info.queued_commands, Some(1));
    assert!(info.queue_mode);
}
