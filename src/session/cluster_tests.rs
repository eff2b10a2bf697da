//! Fake-clock scenarios of several nodes on one broker: two sans-IO nodes of two shards
//! each, and a broker reduced to what the design relies on (retained messages replayed on
//! subscribe, every publish delivered to the matching subscriptions, in order).

use std::collections::BTreeMap;
use std::time::Duration;

use super::tests::{request, Node};
use super::*;
use crate::coap::MessageType;

const PREFIX: &str = "test-cluster";
/// Unix ms at both nodes' epoch.
const EPOCH_MS: u64 = 1_700_000_000_000;
const READ: &str = r#"{"requestID":9,"msgType":"read","data":{"path":"/3/0/0"}}"#;

/// The retained store of a broker.
#[derive(Default)]
struct Broker {
    retained: BTreeMap<String, Vec<u8>>,
}

fn matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Two nodes, "gw-a" and "gw-b", on one fake broker.
struct Cluster {
    nodes: Vec<Node>,
    /// Whether each node's shards are connected and subscribed.
    up: Vec<bool>,
    broker: Broker,
}

impl Cluster {
    /// Nodes started `skew_ms` apart in wall-clock terms (node B's clock behind A's).
    fn new(skew_ms: u64) -> Cluster {
        let mut nodes = vec![Node::new(2, |_| {}), Node::new(2, |_| {})];
        let now = nodes[0].now;
        nodes[1].now = now;
        let names = ["gw-a", "gw-b"];
        for (i, node) in nodes.iter_mut().enumerate() {
            let epoch = if i == 1 { EPOCH_MS - skew_ms } else { EPOCH_MS };
            for s in &mut node.shards {
                s.enable_cluster(names[i], PREFIX, epoch);
            }
        }
        let mut c = Cluster {
            nodes,
            up: vec![false, false],
            broker: Broker::default(),
        };
        c.connect(0);
        c.connect(1);
        c
    }

    /// Node `n`'s shards connect: subscriptions replay the retained records, then the
    /// shards' own records go out.
    fn connect(&mut self, n: usize) {
        self.up[n] = true;
        let now = self.nodes[n].now;
        for s in &mut self.nodes[n].shards {
            s.handle_broker_connected(now);
            let subs = s.cluster_subscriptions();
            for (topic, payload) in &self.broker.retained {
                if subs.iter().any(|f| matches(f, topic)) {
                    s.handle_command(now, topic, payload);
                }
            }
        }
        self.pump();
    }

    /// Node `n` is gone without a word: the broker runs its shards' Last Wills.
    fn die(&mut self, n: usize) {
        self.up[n] = false;
        let wills: Vec<String> = self.nodes[n]
            .shards
            .iter()
            .filter_map(Shard::cluster_will)
            .collect();
        for will in wills {
            self.deliver(&will, b"");
        }
        self.pump();
    }

    fn deliver(&mut self, topic: &str, payload: &[u8]) {
        if payload.is_empty() {
            self.broker.retained.remove(topic);
        } else {
            self.broker
                .retained
                .insert(topic.to_owned(), payload.to_vec());
        }
        for (n, node) in self.nodes.iter_mut().enumerate() {
            if !self.up[n] {
                continue;
            }
            let now = node.now;
            for s in &mut node.shards {
                if s.cluster_subscriptions().iter().any(|f| matches(f, topic)) {
                    s.handle_command(now, topic, payload);
                }
            }
        }
    }

    /// Moves retained messages and handoffs until nothing is left to move.
    fn pump(&mut self) {
        loop {
            let mut out = Vec::new();
            for (n, node) in self.nodes.iter_mut().enumerate() {
                node.settle();
                for s in &mut node.shards {
                    s.drain_retained(|t, p| {
                        if self.up[n] {
                            out.push((t.to_owned(), p.to_vec()));
                        }
                    });
                }
            }
            if out.is_empty() {
                return;
            }
            for (t, p) in out {
                self.deliver(&t, &p);
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        for node in &mut self.nodes {
            node.advance(by);
        }
        self.pump();
    }

    /// Registers `ep` on node `n` from `from`.
    fn register(&mut self, n: usize, ep: &str, from: &str) {
        let q = format!("ep={ep}");
        let req = request(
            MessageType::Con,
            Code::POST,
            1,
            &["rd"],
            &[&q, "lt=3000", "lwm2m=1.1"],
            b"</3/0>",
        );
        let replies = self.nodes[n].recv(0, from, &req);
        let reply = super::tests::only_reply(&replies);
        assert_eq!(reply.code(), Code::CREATED);
        self.pump();
    }

    /// Delivers a command for `ep` to every shard of every node (the wildcard
    /// subscription); returns, per node, the requests sent to devices and the responses
    /// published.
    fn command(&mut self, ep: &str) -> Vec<(usize, Vec<(String, serde_json::Value)>)> {
        let topic = format!("lwm2m/{ep}/dn");
        let mut result = Vec::new();
        for (n, node) in self.nodes.iter_mut().enumerate() {
            if !self.up[n] {
                result.push((0, Vec::new()));
                continue;
            }
            node.sent.clear();
            node.take_published();
            let now = node.now;
            for s in &mut node.shards {
                s.handle_command(now, &topic, READ.as_bytes());
            }
            node.settle();
            let requests = node.sent.len();
            node.sent.clear();
            result.push((requests, node.take_published()));
        }
        self.pump();
        result
    }

    fn events(&mut self, n: usize) -> Vec<String> {
        self.nodes[n]
            .take_published()
            .into_iter()
            .filter(|(t, _)| t.ends_with("/up/event"))
            .map(|(_, j)| j["data"]["event"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn record(&self, ep: &str) -> Option<serde_json::Value> {
        let topic = format!("{PREFIX}/presence/{}/{ep}", presence_bucket(ep));
        self.broker
            .retained
            .get(&topic)
            .map(|p| serde_json::from_slice(p).expect("record is JSON"))
    }
}

fn not_found(published: &[(String, serde_json::Value)]) -> usize {
    published
        .iter()
        .filter(|(_, j)| j["data"]["code"] == "4.04")
        .count()
}

#[test]
fn a_command_is_executed_by_the_holder_and_an_unknown_name_answered_once() {
    let mut c = Cluster::new(0);
    c.register(0, "dev-a", "127.0.0.2:5000");
    c.register(1, "dev-b", "127.0.0.3:5000");
    assert_eq!(c.record("dev-a").expect("record")["node"], "gw-a");
    assert_eq!(c.record("dev-b").expect("record")["node"], "gw-b");
    for (ep, holder) in [("dev-a", 0), ("dev-b", 1)] {
        let r = c.command(ep);
        assert_eq!(r[holder].0, 1, "{ep}: the holder sends the request");
        assert_eq!(r[1 - holder].0, 0, "{ep}: the other node does nothing");
        assert_eq!(not_found(&r[0].1) + not_found(&r[1].1), 0, "{ep}: no 4.04");
    }
    let r = c.command("nobody");
    assert_eq!(not_found(&r[0].1), 1, "the lowest-named live node answers");
    assert!(r[1].1.is_empty(), "the other node stays silent");
}

#[test]
fn a_device_moving_to_another_node_is_dropped_once_by_the_old_one() {
    let mut c = Cluster::new(0);
    c.register(0, "mover", "127.0.0.2:5000");
    c.events(0);
    c.advance(Duration::from_secs(1));
    c.register(1, "mover", "127.0.0.3:6000");
    assert_eq!(c.events(0), ["replaced"], "node A drops it once");
    assert!(c.events(1).is_empty(), "node B only registered it");
    assert_eq!(c.nodes[0].registered(), 0);
    assert_eq!(c.record("mover").expect("record")["node"], "gw-b");
    let r = c.command("mover");
    assert_eq!((r[0].0, r[1].0), (0, 1), "node B executes it");
    assert_eq!(not_found(&r[0].1) + not_found(&r[1].1), 0);
    // B's own record echoed or re-delivered later changes nothing.
    c.connect(0);
    assert!(c.events(0).is_empty() && c.events(1).is_empty());
    assert_eq!(c.nodes[1].registered(), 1);
}

#[test]
fn a_newer_registration_wins_even_from_a_node_whose_clock_is_behind() {
    // B's wall clock is 10 s behind A's: its stamp is still above A's record.
    let mut c = Cluster::new(10_000);
    c.register(0, "skewed", "127.0.0.2:5000");
    c.events(0);
    c.advance(Duration::from_secs(1));
    c.register(1, "skewed", "127.0.0.3:6000");
    assert_eq!(c.events(0), ["replaced"]);
    assert_eq!(c.nodes[1].registered(), 1);
    assert_eq!(c.record("skewed").expect("record")["node"], "gw-b");
}

#[test]
fn when_the_holder_dies_the_survivor_answers_404_once() {
    let mut c = Cluster::new(0);
    c.register(0, "dev-a", "127.0.0.2:5000");
    c.register(1, "dev-b", "127.0.0.3:5000");
    // B is the higher name: it leaves unknown names to A while A lives.
    c.die(0);
    let r = c.command("dev-a");
    assert_eq!(
        not_found(&r[1].1),
        1,
        "B answers for the dead node's endpoint"
    );
    let r = c.command("dev-b");
    assert_eq!(
        (r[1].0, not_found(&r[1].1)),
        (1, 0),
        "B still serves its own"
    );
    let r = c.command("nobody");
    assert_eq!(not_found(&r[1].1), 1);
    // A comes back (with its registration, as after a restart with persistence).
    c.connect(0);
    let r = c.command("dev-a");
    assert_eq!((r[0].0, r[1].0), (1, 0));
    assert_eq!(not_found(&r[0].1) + not_found(&r[1].1), 0);
}

#[test]
fn a_clean_stop_clears_the_live_record_but_keeps_presence() {
    let mut c = Cluster::new(0);
    c.register(0, "dev-a", "127.0.0.2:5000");
    for s in &mut c.nodes[0].shards {
        s.leave_cluster();
    }
    c.pump();
    c.up[0] = false;
    assert!(!c.broker.retained.keys().any(|t| t.contains("/nodes/gw-a/")));
    assert_eq!(c.record("dev-a").expect("kept")["node"], "gw-a");
    let r = c.command("dev-a");
    assert_eq!(not_found(&r[1].1), 1);
}

#[test]
fn records_are_repaired_cleared_and_never_cleared_for_another_node() {
    let mut c = Cluster::new(0);
    c.register(0, "dev-a", "127.0.0.2:5000");
    let ours = c.record("dev-a").expect("record");
    // Someone clears A's record: A writes it again.
    let topic = format!("{PREFIX}/presence/{}/dev-a", presence_bucket("dev-a"));
    c.deliver(&topic, b"");
    c.pump();
    assert_eq!(c.record("dev-a"), Some(ours.clone()));
    // An older record of another node overwrites it: A writes its own again.
    c.deliver(&topic, br#"{"node":"gw-z","registered":1}"#);
    c.pump();
    assert_eq!(c.record("dev-a"), Some(ours));
    assert_eq!(c.nodes[0].registered(), 1);
    // A record naming A for a name A does not hold (an earlier run): A clears it.
    let stale = format!("{PREFIX}/presence/{}/gone", presence_bucket("gone"));
    c.deliver(&stale, br#"{"node":"gw-a","registered":5}"#);
    c.pump();
    assert_eq!(c.record("gone"), None);
    // When registrations end, each node clears its own records.
    c.register(1, "dev-b", "127.0.0.3:5000");
    c.advance(Duration::from_secs(4000));
    assert_eq!(c.record("dev-a"), None, "expired on A: cleared by A");
    assert_eq!(c.record("dev-b"), None, "expired on B: cleared by B");
    let r = c.command("dev-b");
    assert_eq!(not_found(&r[0].1) + not_found(&r[1].1), 1);
}

#[test]
fn garbage_on_the_cluster_topics_is_counted_and_ignored() {
    let mut c = Cluster::new(0);
    c.register(0, "dev-a", "127.0.0.2:5000");
    let topic = format!("{PREFIX}/presence/{}/dev-a", presence_bucket("dev-a"));
    for junk in [
        &b"not json"[..],
        br#"{"node":"a/b","registered":1}"#,
        &[b'x'; 4096],
    ] {
        c.deliver(&topic, junk);
        c.deliver(&format!("{PREFIX}/presence/99999/dev-a"), b"{}");
        c.deliver(&format!("{PREFIX}/nodes/gw-q/not-a-number"), b"{}");
    }
    c.pump();
    assert_eq!(c.nodes[0].registered(), 1);
    let ignored: u64 = c.nodes[0]
        .shards
        .iter()
        .filter_map(Shard::cluster_stats)
        .map(|s| s.ignored)
        .sum();
    assert!(ignored >= 3, "{ignored}");
    let r = c.command("dev-a");
    assert_eq!(r[0].0, 1);
}

#[test]
fn a_single_node_without_cluster_mode_publishes_no_records() {
    let mut node = Node::new(2, |_| {});
    for s in &mut node.shards {
        s.handle_broker_connected(node.now);
        assert!(s.cluster_subscriptions().is_empty());
        assert!(s.cluster_will().is_none());
    }
    let req = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=solo", "lt=300"],
        b"</3/0>",
    );
    node.recv(0, "127.0.0.2:5000", &req);
    let mut retained = 0;
    for s in &mut node.shards {
        s.drain_retained(|_, _| retained += 1);
    }
    assert_eq!(retained, 0);
}

#[test]
fn directory_shard_is_the_presence_bucket_modulo_shards() {
    for i in 0..1000 {
        let ep = format!("ep-{i}");
        let b = presence_bucket(&ep);
        assert!(b < PRESENCE_BUCKETS);
        for shards in 1..=crate::config::MAX_SHARDS {
            assert_eq!(directory_shard(&ep, shards), b % shards);
        }
    }
}

#[test]
fn a_plain_registration_does_not_take_a_name_another_node_holds_over_dtls() {
    let mut c = Cluster::new(0);
    let topic = format!("{PREFIX}/presence/{}/secured", presence_bucket("secured"));
    let record = br#"{"node":"gw-z","registered":1,"secure":true}"#;
    c.deliver(&topic, record);
    c.pump();
    c.register(0, "secured", "127.0.0.2:5000");
    assert_eq!(c.nodes[0].registered(), 0, "dropped again at once");
    assert_eq!(c.events(0), ["replaced"]);
    assert_eq!(
        c.broker.retained.get(&topic).map(Vec::as_slice),
        Some(&record[..])
    );
    // A plain record is taken over as before.
    c.deliver(&topic, br#"{"node":"gw-z","registered":1}"#);
    c.pump();
    c.register(0, "secured", "127.0.0.2:5001");
    assert_eq!(c.nodes[0].registered(), 1);
    assert_eq!(c.record("secured").expect("record")["node"], "gw-a");
}

/// The ignored-record counter summed over node `n`'s shards, and its remote-name gauge.
fn ignored_and_remote(c: &Cluster, n: usize) -> (u64, u64) {
    c.nodes[n]
        .shards
        .iter()
        .filter_map(Shard::cluster_stats)
        .fold((0, 0), |(i, r), s| (i + s.ignored, r + s.remote_endpoints))
}

#[test]
fn junk_shard_numbers_and_unregistrable_names_are_ignored_not_kept() {
    let mut c = Cluster::new(0);
    let (before, remote) = ignored_and_remote(&c, 0);
    // Live records of one node with ever new shard numbers: none past MAX_SHARDS is kept,
    // so a node that never existed does not become live through them.
    let shards = 5000;
    for shard in crate::config::MAX_SHARDS..crate::config::MAX_SHARDS + shards {
        c.deliver(&format!("{PREFIX}/nodes/aaa-junk/{shard}"), b"{}");
    }
    // Presence records of names no device can register under: too long, or not one level.
    let long = "n".repeat(crate::lwm2m::registration::MAX_ENDPOINT_LEN + 1);
    let record = br#"{"node":"gw-b","registered":1}"#;
    for ep in [long.as_str(), "a+b", "a#"] {
        c.deliver(
            &format!("{PREFIX}/presence/{}/{ep}", presence_bucket(ep)),
            record,
        );
    }
    c.pump();
    let (after, remote_after) = ignored_and_remote(&c, 0);
    // Each record reaches both shards of node A (the nodes filter), a presence record one.
    assert_eq!(after - before, 2 * shards as u64 + 3);
    assert_eq!(remote_after, remote);
    // "aaa-junk" would be the lowest-named live node had any record been taken: node A
    // still answers an unknown name itself.
    let r = c.command("nobody");
    assert_eq!(not_found(&r[0].1) + not_found(&r[1].1), 1);
    assert_eq!(not_found(&r[0].1), 1, "gw-a is the lowest live node");
}

#[test]
fn a_flood_of_node_names_stops_at_the_cap() {
    let mut c = Cluster::new(0);
    let (before, _) = ignored_and_remote(&c, 0);
    let flood = 3000;
    for i in 0..flood {
        let ep = format!("flood-{i}");
        let topic = format!("{PREFIX}/presence/{}/{ep}", presence_bucket(&ep));
        c.deliver(
            &topic,
            format!(r#"{{"node":"junk-{i}","registered":1}}"#).as_bytes(),
        );
    }
    c.pump();
    let (after, remote) = ignored_and_remote(&c, 0);
    // Two node names are real; each shard interns at most MAX_NODES in all.
    assert!(after > before, "{before} {after}");
    assert!(remote < flood, "{remote}");
    assert_eq!(remote + (after - before), flood);
    // The real nodes still work.
    c.register(1, "dev-b", "127.0.0.3:5000");
    let r = c.command("dev-b");
    assert_eq!(r[1].0, 1, "node B sends the read to its device");
    assert_eq!(r[0].0, 0);
    assert_eq!(not_found(&r[0].1) + not_found(&r[1].1), 0);
}
