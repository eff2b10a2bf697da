//! `gateway.auto_observe` through the shard: what a Register starts observing, and what
//! the application sees of it.

use super::downlink_tests::observe_value;
use super::tests::{capture, Node, DEVICE};
use super::*;
use crate::coap::{Message, MessageType};
use crate::config::AutoObserve;

/// The GET Observe requests among datagrams the device received, as `(path, token, mid)`.
fn observes(received: &[Vec<u8>]) -> Vec<(String, Vec<u8>, u16)> {
    received
        .iter()
        .filter_map(|b| {
            let m = Message::parse(b).ok()?;
            (m.code() == Code::GET && m.observe() == Some(0)).then(|| {
                let path: Vec<String> = m
                    .uri_path()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                (format!("/{}", path.join("/")), m.token().to_vec(), m.mid())
            })
        })
        .collect()
}

/// Registers the captured wakaama client; everything the device received.
fn register(node: &mut Node) -> Vec<Vec<u8>> {
    let replies = node.recv(0, DEVICE, &capture("register.hex"));
    let created = replies
        .iter()
        .filter_map(|r| Message::parse(r).ok())
        .any(|m| m.code() == Code::CREATED);
    assert!(created, "registered");
    replies
}

fn answer(
    node: &mut Node,
    token: &[u8],
    mid: u16,
    ty: MessageType,
    seq: u32,
    value: &[u8],
) -> Vec<Vec<u8>> {
    node.recv(0, DEVICE, &observe_value(ty, mid, token, seq, value))
}

#[test]
fn true_observes_defined_objects_of_the_list_except_management_ones() {
    // wakaama's list: /1, /1/0, /2/0, /3/0, /4/0, /5/0, /6/0, /7/0, /31024, /31024/10..12.
    let mut node = Node::new(1, |c| c.gateway.auto_observe = AutoObserve::All);
    let mut seen = observes(&register(&mut node));
    // One exchange at a time: answer each to get the next.
    let mut paths = Vec::new();
    while let Some((path, token, mid)) = seen.pop() {
        paths.push(path);
        seen = observes(&answer(&mut node, &token, mid, MessageType::Ack, 1, b"x"));
    }
    // 0, 1, 2, 4, 5, 6, 7 are skipped; 31024 has no object definition here.
    assert_eq!(paths, vec!["/3/0"]);
    let published = node.take_published();
    let observe = published
        .iter()
        .find(|(_, v)| v["msgType"] == "observe")
        .expect("the observe response is published");
    assert!(observe.1.get("requestID").is_none(), "{}", observe.1);
    assert_eq!(observe.1["data"]["reqPath"], "/3/0");
}

#[test]
fn a_list_observes_exactly_the_listed_paths_the_device_has() {
    let mut node = Node::new(1, |c| {
        c.gateway.auto_observe = AutoObserve::Paths(vec!["/3/0".into(), "/3303/0".into()])
    });
    let seen = observes(&register(&mut node));
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (path, token, mid) = seen[0].clone();
    assert_eq!(path, "/3/0");
    let after = answer(&mut node, &token, mid, MessageType::Ack, 1, b"first");
    assert!(observes(&after).is_empty(), "nothing else observed");
    node.take_published();
    // Notifications of the auto-observation are published like any other.
    answer(&mut node, &token, 77, MessageType::Non, 2, b"second");
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "notify", "{published:?}");
    assert_eq!(published[0].1["data"]["reqPath"], "/3/0");
}

#[test]
fn off_observes_nothing() {
    let mut node = Node::new(1, |_| {});
    assert!(observes(&register(&mut node)).is_empty());
}
