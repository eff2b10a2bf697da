//! Restarts with a fake clock: shards journal, the journal is merged and restored into a
//! new node, and devices and applications carry on as if nothing happened.

use std::collections::HashSet;
use std::time::Duration;

use super::downlink_tests::{command, observe_value};
use super::tests::{request, Node};
use super::*;
use crate::coap::{Message, MessageType, MessageWriter};
use crate::persist::{plan_restore, scan, Merge};

/// Wall-clock time of the first boot's epoch.
const BOOT_UNIX: u64 = 1_800_000_000;

fn journaled(shards: usize, epoch_unix: u64) -> Node {
    let mut node = Node::new(shards, |_| {});
    for s in &mut node.shards {
        s.enable_journal(epoch_unix);
    }
    node
}

/// Everything the node's shards journaled so far, as one byte stream.
fn journal_of(node: &mut Node) -> Vec<u8> {
    let mut bytes = Vec::new();
    for s in &mut node.shards {
        s.take_journal(&mut bytes);
    }
    bytes
}

/// Restores `bytes` into a new node of `shards` shards booted at `epoch_unix`.
fn restart(bytes: &[u8], shards: usize, epoch_unix: u64) -> Node {
    let mut merge = Merge::new();
    let report = scan(bytes, |r| merge.apply(r)).expect("current format");
    assert_eq!(report.corrupt, 0);
    let plan = plan_restore(
        merge.into_live(),
        epoch_unix,
        shards,
        |a| crate::runtime::shard_for(a, shards),
        |ep| directory_shard(ep, shards),
    );
    let mut node = journaled(shards, epoch_unix);
    for (shard, restore) in node.shards.iter_mut().zip(plan.shards) {
        shard.restore(node.now, restore);
    }
    node.settle();
    node
}

fn register(node: &mut Node, shard: usize, from: &str, ep: &str, lt: u32) -> String {
    let query = [format!("ep={ep}"), format!("lt={lt}"), "lwm2m=1.1".into()];
    let query: Vec<&str> = query.iter().map(String::as_str).collect();
    let req = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &query,
        b"</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>;ver=1.1,</3303/0>",
    );
    let replies = node.recv(shard, from, &req);
    let reply = Message::parse(&replies[0]).expect("reply");
    assert_eq!(reply.code(), Code::CREATED);
    let segs: Vec<String> = reply
        .location_path()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    segs[1].clone()
}

fn update(node: &mut Node, shard: usize, from: &str, loc: &str, mid: u16) -> Code {
    let req = request(MessageType::Con, Code::POST, mid, &["rd", loc], &[], b"");
    let replies = node.recv(shard, from, &req);
    Message::parse(&replies[0]).expect("reply").code()
}

fn sent_to(node: &mut Node, to: &str) -> Vec<Vec<u8>> {
    let to: std::net::SocketAddr = to.parse().expect("addr");
    let out = node
        .sent
        .iter()
        .filter(|(_, d, _)| *d == to)
        .map(|(_, _, b)| b.clone())
        .collect();
    node.sent.retain(|(_, d, _)| *d != to);
    out
}

fn notify(node: &mut Node, shard: usize, from: &str, token: &[u8], seq: u32, value: &str) {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Non,
        Code::CONTENT,
        900 + seq as u16,
        token,
    );
    w.uint_option(option::OBSERVE, seq)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(value.as_bytes());
    w.finish();
    node.recv(shard, from, &buf);
}

const DEV_A: &str = "127.0.0.2:56830";
const DEV_B: &str = "127.0.0.3:40000";

#[test]
fn registrations_and_observations_survive_a_restart() {
    let mut node = journaled(2, BOOT_UNIX);
    let loc_a = register(&mut node, 0, DEV_A, "dev-a", 3600);
    let loc_b = register(&mut node, 1, DEV_B, "dev-b", 3600);
    // dev-a observes /3/0/9 for request 41.
    command(
        &mut node,
        "dev-a",
        r#"{"requestID":41,"msgType":"observe","data":{"path":"/3/0/9"}}"#,
    );
    let req = sent_to(&mut node, DEV_A);
    let req = Message::parse(&req[0]).expect("observe request");
    let token = req.token().to_vec();
    node.recv(
        0,
        DEV_A,
        &observe_value(MessageType::Ack, req.mid(), &token, 3, b"90"),
    );
    // dev-b rebinds to a port the other shard receives.
    assert_eq!(
        update(&mut node, 0, "127.0.0.3:40001", &loc_b, 2),
        Code::CHANGED
    );
    node.take_published();

    // Ten minutes later the gateway restarts, with three shards this time.
    let bytes = journal_of(&mut node);
    let mut node = restart(&bytes, 3, BOOT_UNIX + 600);
    assert_eq!(node.registered(), 2);
    assert!(
        node.take_published().is_empty(),
        "nothing expired, nothing announced"
    );

    // The same location ids work, from wherever the devices' datagrams arrive (the last
    // Update on the shard the address steers to, where the endpoint then lives).
    let owner = crate::runtime::shard_for(&DEV_A.parse().expect("addr"), 3);
    for (i, shard) in [(owner + 1) % 3, (owner + 2) % 3, owner]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            update(&mut node, shard, DEV_A, &loc_a, 10 + i as u16),
            Code::CHANGED
        );
    }
    assert_eq!(
        update(&mut node, 2, "127.0.0.3:40001", &loc_b, 20),
        Code::CHANGED
    );
    let published = node.take_published();
    let update_a = published
        .iter()
        .find(|(t, _)| t == "lwm2m/dev-a/up/update")
        .expect("dev-a update published");
    assert_eq!(update_a.1["data"]["lt"], 3600);
    assert_eq!(update_a.1["data"]["lwm2m"], "1.1");
    assert_eq!(
        update_a.1["data"]["objectList"],
        serde_json::json!(["/1/0", "/3/0", "/3303/0"])
    );

    // The observation keeps publishing, under the request that created it.
    notify(&mut node, owner, DEV_A, &token, 4, "77");
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].0, "lwm2m/dev-a/up/notify");
    assert_eq!(published[0].1["requestID"], 41);
    assert_eq!(published[0].1["seqNum"], 4);
    assert_eq!(published[0].1["data"]["content"][0]["value"], 77);

    // A read works without the device registering again.
    command(
        &mut node,
        "dev-b",
        r#"{"requestID":42,"msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    let sent = sent_to(&mut node, "127.0.0.3:40001");
    assert_eq!(sent.len(), 1, "the read reaches dev-b at its last address");
    assert_eq!(Message::parse(&sent[0]).expect("read").code(), Code::GET);
}

#[test]
fn unknown_and_forged_ids_get_not_found_and_change_nothing() {
    let mut node = journaled(2, BOOT_UNIX);
    let loc = register(&mut node, 0, DEV_A, "dev-a", 3600);
    node.take_published();
    let real = Location::parse(loc.as_bytes()).expect("our id");
    let forged = [
        Location {
            home: real.home,
            key: real.key ^ 1,
        },
        Location {
            home: 1 - real.home,
            key: real.key,
        },
    ];
    for (i, id) in forged.iter().enumerate() {
        let id = id.to_string();
        // From another address: a hijack attempt; from the device's own: a stale id.
        for from in ["127.0.0.9:1000", DEV_A] {
            assert_eq!(
                update(&mut node, 0, from, &id, 50 + i as u16 * 2),
                Code::NOT_FOUND
            );
            let del = request(
                MessageType::Con,
                Code::DELETE,
                70 + i as u16 * 2,
                &["rd", &id],
                &[],
                b"",
            );
            let reply = node.recv(1, from, &del);
            assert_eq!(
                Message::parse(&reply[0]).expect("reply").code(),
                Code::NOT_FOUND
            );
        }
    }
    assert_eq!(node.registered(), 1);
    assert!(
        node.take_published().is_empty(),
        "nothing moved, nothing ended"
    );
    // The registration still answers at its address.
    assert_eq!(update(&mut node, 0, DEV_A, &loc, 99), Code::CHANGED);
}

#[test]
fn ids_of_another_boot_are_unknown_and_never_reissued() {
    const N: usize = 10_000;
    let mut first = journaled(2, BOOT_UNIX);
    let mut second = journaled(2, BOOT_UNIX + 60);
    let mut ids = HashSet::new();
    let mut first_ids = Vec::new();
    for (node, mut list) in [(&mut first, Some(&mut first_ids)), (&mut second, None)] {
        for i in 0..N {
            let from = format!("127.1.{}.{}:{}", i / 250, i % 250 + 1, 5000 + i % 7);
            let shard = crate::runtime::shard_for(&from.parse().expect("addr"), 2);
            let loc = register(node, shard, &from, &format!("boot-dev-{i}"), 3600);
            assert!(ids.insert(loc.clone()), "location id {loc} issued twice");
            if let Some(list) = list.as_deref_mut() {
                if i < 100 {
                    list.push((from, loc));
                }
            }
        }
        node.take_published();
    }
    // Without persistence, a device of the first boot updating the second gets 4.04 and
    // must register again; nobody else's registration is touched.
    for (i, (from, loc)) in first_ids.iter().enumerate() {
        let shard = crate::runtime::shard_for(&from.parse().expect("addr"), 2);
        assert_eq!(
            update(&mut second, shard, from, loc, 200 + i as u16),
            Code::NOT_FOUND
        );
    }
    assert_eq!(second.registered(), N);
    assert!(second.take_published().is_empty());
}

#[test]
fn ended_registrations_stay_ended_and_expired_ones_are_announced() {
    let mut node = journaled(1, BOOT_UNIX);
    let loc_a = register(&mut node, 0, DEV_A, "dev-a", 3600);
    register(&mut node, 0, DEV_B, "dev-b", 120);
    let del = request(MessageType::Con, Code::DELETE, 5, &["rd", &loc_a], &[], b"");
    node.recv(0, DEV_A, &del);
    node.take_published();
    let bytes = journal_of(&mut node);

    // Down for five minutes: dev-b's 120 s lifetime ran out meanwhile.
    let mut node = restart(&bytes, 1, BOOT_UNIX + 300);
    assert_eq!(node.registered(), 0);
    let published = node.take_published();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].0, "lwm2m/dev-b/up/event");
    assert_eq!(published[0].1["data"]["event"], "expired");
    assert_eq!(update(&mut node, 0, DEV_A, &loc_a, 6), Code::NOT_FOUND);

    // The expiry was journaled: the next restart announces nothing again.
    let more = journal_of(&mut node);
    let mut all = bytes.clone();
    all.extend_from_slice(&more);
    let mut node = restart(&all, 1, BOOT_UNIX + 400);
    assert_eq!(node.registered(), 0);
    assert!(node.take_published().is_empty());
}

#[test]
fn a_restored_registration_keeps_its_remaining_lifetime() {
    let mut node = journaled(1, BOOT_UNIX);
    register(&mut node, 0, DEV_A, "dev-a", 600);
    node.take_published();
    let bytes = journal_of(&mut node);
    let mut node = restart(&bytes, 1, BOOT_UNIX + 500);
    assert_eq!(node.registered(), 1);
    node.advance(Duration::from_secs(99));
    assert_eq!(node.registered(), 1, "100 s were left");
    node.advance(Duration::from_secs(2));
    assert_eq!(node.registered(), 0);
    let published = node.take_published();
    assert_eq!(published[0].1["data"]["event"], "expired");
}

#[test]
fn commands_queued_for_a_sleeping_device_survive_a_restart() {
    let dev = "127.0.0.9:5683";
    let mut node = journaled(1, BOOT_UNIX);
    let req = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=sleeper", "lt=3600", "b=UQ"],
        b"</3/0>",
    );
    let replies = node.recv(0, dev, &req);
    let reply = Message::parse(&replies[0]).expect("reply");
    let loc = reply
        .location_path()
        .nth(1)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .expect("location");
    node.advance(Duration::from_secs(30));
    command(
        &mut node,
        "sleeper",
        r#"{"reqID":"a","msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    command(
        &mut node,
        "sleeper",
        r#"{"reqID":"b","mheaders":{"ttl":40},"msgType":"read","data":{"path":"/3/0/1"}}"#,
    );
    assert!(sent_to(&mut node, dev).is_empty(), "asleep");
    let bytes = journal_of(&mut node);

    // A minute later the gateway is back; the short-lived command expired meanwhile.
    let mut node = restart(&bytes, 1, BOOT_UNIX + 90);
    node.advance(Duration::from_millis(10));
    let expired = node.take_published();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].1["reqID"], "b");
    assert_eq!(expired[0].1["data"]["reason"], "expired");
    // The device wakes: the other one, acknowledged before the restart, is sent now.
    let replies = node.recv(
        0,
        dev,
        &request(MessageType::Con, Code::POST, 2, &["rd", &loc], &[], b""),
    );
    let gets: Vec<_> = replies
        .iter()
        .filter_map(|r| Message::parse(r).ok())
        .filter(|m| m.code() == Code::GET)
        .map(|m| {
            m.uri_path()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(gets, vec!["3/0/0"]);
}

#[test]
fn cluster_presence_is_written_again_after_a_restart_and_yields_to_a_newer_record() {
    let mut node = journaled(2, BOOT_UNIX);
    for s in &mut node.shards {
        s.enable_cluster("gw-a", "c", BOOT_UNIX * 1000);
    }
    register(&mut node, 0, "127.0.0.2:5000", "kept", 3000);
    register(&mut node, 1, "127.0.0.3:5000", "moved", 3000);
    let bytes = journal_of(&mut node);

    let mut node = restart(&bytes, 2, BOOT_UNIX + 60);
    let now = node.now;
    for s in &mut node.shards {
        s.enable_cluster("gw-a", "c", (BOOT_UNIX + 60) * 1000);
        s.handle_broker_connected(now);
    }
    node.advance(Duration::from_millis(10));
    let mut records = Vec::new();
    for s in &mut node.shards {
        s.drain_retained(|t, p| {
            if t.contains("/presence/") {
                records.push((t.to_owned(), String::from_utf8_lossy(p).into_owned()));
            }
        });
    }
    records.sort();
    let stamp = format!("\"registered\":{}", BOOT_UNIX * 1000);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records
        .iter()
        .all(|(_, p)| p.contains("gw-a") && p.contains(&stamp)));
    node.take_published();

    // Another node registered "moved" after the first boot: this node drops it, once.
    let dir = directory_shard("moved", 2);
    let topic = format!("c/presence/{}/moved", presence_bucket("moved"));
    let newer = format!(r#"{{"node":"gw-b","registered":{}}}"#, BOOT_UNIX * 1000 + 1);
    node.shards[dir].handle_command(now, &topic, newer.as_bytes());
    node.settle();
    let events: Vec<_> = node
        .take_published()
        .into_iter()
        .filter(|(t, _)| t.ends_with("/up/event"))
        .map(|(t, j)| (t, j["data"]["event"].clone()))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "lwm2m/moved/up/event");
    assert_eq!(events[0].1, "replaced");
    assert_eq!(node.registered(), 1);
}
