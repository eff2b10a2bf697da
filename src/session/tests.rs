//! Scenario tests of the shard core: several shards wired together by hand, a fake clock,
//! real datagrams from the captures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::coap::{Message, MessageType, MessageWriter};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub(super) fn capture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/captures/{name}", env!("CARGO_MANIFEST_DIR"));
    hex(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// The object definitions shipped in `lwm2m_xml/` (the OMA registry).
pub(super) fn registry() -> Arc<Registry> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/lwm2m_xml");
    Arc::new(Registry::load_dir(std::path::Path::new(dir)).expect("lwm2m_xml loads"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// A node of `n` shards with a fake clock; handoffs are delivered by `settle`.
pub(super) struct Node {
    pub(super) shards: Vec<Shard>,
    pub(super) now: Instant,
    /// Datagrams sent, with the shard that sent them.
    pub(super) sent: Vec<(usize, SocketAddr, Vec<u8>)>,
    /// DTLS datagrams sent, with the shard that sent them.
    pub(super) secure_sent: Vec<(usize, SocketAddr, Vec<u8>)>,
    published: Vec<Publish>,
}

impl Node {
    pub(super) fn new(n: usize, edit: impl Fn(&mut Config)) -> Node {
        Node::with_registry(n, registry(), edit)
    }

    /// [`Node::new`] with other object definitions than the shipped ones.
    pub(super) fn with_registry(
        n: usize,
        registry: Arc<Registry>,
        edit: impl Fn(&mut Config),
    ) -> Node {
        let mut config = Config::default_config();
        config.gateway.shards = n;
        edit(&mut config);
        let now = Instant::now();
        let shards = (0..n)
            .map(|i| Shard::new(ShardConfig::new(&config, i, registry.clone()), now, 7))
            .collect();
        Node {
            shards,
            now,
            sent: Vec::new(),
            secure_sent: Vec::new(),
            published: Vec::new(),
        }
    }

    /// Delivers `data` from `from` to `shard`, then runs every shard until quiet.
    pub(super) fn recv(&mut self, shard: usize, from: &str, data: &[u8]) -> Vec<Vec<u8>> {
        let from = addr(from);
        self.shards[shard].handle_datagram(self.now, from, data);
        self.settle();
        let replies = self
            .sent
            .iter()
            .filter(|(_, to, _)| *to == from)
            .map(|(_, _, d)| d.clone());
        let replies = replies.collect();
        self.sent.retain(|(_, to, _)| *to != from);
        replies
    }

    pub(super) fn settle(&mut self) {
        loop {
            let mut moved = Vec::new();
            for (i, s) in self.shards.iter_mut().enumerate() {
                let sent = &mut self.sent;
                s.drain_transmits(|to, d| sent.push((i, to, d.to_vec())));
                let secure = &mut self.secure_sent;
                s.drain_secure_transmits(|to, d| secure.push((i, to, d.to_vec())));
                while let Some(p) = s.poll_publish() {
                    self.published.push(p);
                }
                while let Some(h) = s.poll_handoff() {
                    moved.push(h);
                }
            }
            if moved.is_empty() {
                return;
            }
            for (to, h) in moved {
                self.shards[to].handle_handoff(self.now, h);
            }
        }
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        for s in &mut self.shards {
            s.handle_timeout(self.now);
        }
        self.settle();
    }

    pub(super) fn take_published(&mut self) -> Vec<(String, serde_json::Value)> {
        self.published
            .drain(..)
            .map(|p| {
                (
                    p.topic,
                    serde_json::from_slice(&p.payload).expect("valid JSON"),
                )
            })
            .collect()
    }

    pub(super) fn registered(&self) -> usize {
        self.shards.iter().map(Shard::registered).sum()
    }
}

/// Builds a request with a fresh token.
pub(super) fn request(
    ty: MessageType,
    code: Code,
    mid: u16,
    path: &[&str],
    query: &[&str],
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, ty, code, mid, &mid.to_be_bytes());
    for p in path {
        w.option(option::URI_PATH, p.as_bytes());
    }
    if !payload.is_empty() {
        w.uint_option(option::CONTENT_FORMAT, 40);
    }
    for q in query {
        w.option(option::URI_QUERY, q.as_bytes());
    }
    w.payload(payload);
    w.finish();
    buf
}

pub(super) fn only_reply(replies: &[Vec<u8>]) -> Message<'_> {
    assert_eq!(
        replies.len(),
        1,
        "expected exactly one reply, got {replies:?}"
    );
    Message::parse(&replies[0]).expect("reply parses")
}

/// The `rd/<id>` location of a 2.01 reply.
fn location_of(reply: &Message<'_>) -> String {
    let segs: Vec<_> = reply
        .location_path()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(segs.len(), 2, "Location-Path rd/<id>");
    assert_eq!(segs[0], "rd");
    segs[1].clone()
}

pub(super) const DEVICE: &str = "127.0.0.2:56830";

pub(super) fn register_capture(node: &mut Node, shard: usize, from: &str) -> String {
    let replies = node.recv(shard, from, &capture("register.hex"));
    let reply = only_reply(&replies);
    assert_eq!(reply.ty(), MessageType::Ack);
    assert_eq!(reply.code(), Code::CREATED);
    location_of(&reply)
}

#[test]
fn wakaama_register_is_acknowledged_and_published() {
    let mut node = Node::new(1, |_| {});
    let raw = capture("register.hex");
    let req = Message::parse(&raw).expect("capture parses");
    let replies = node.recv(0, DEVICE, &raw);
    let reply = only_reply(&replies);
    assert_eq!(reply.mid(), req.mid(), "piggybacked on the ACK");
    assert_eq!(reply.token(), req.token());
    let loc = location_of(&reply);
    assert_eq!(loc.len(), 12, "12-character location id, got {loc}");
    assert!(loc.starts_with('0'), "names shard 0");

    let published = node.take_published();
    assert_eq!(published.len(), 1);
    let (topic, json) = &published[0];
    assert_eq!(topic, "lwm2m/peer-ep1/up/resp");
    assert_eq!(json["msgType"], "register");
    let data = &json["data"];
    assert_eq!(data["ep"], "peer-ep1");
    assert_eq!(data["lt"], 300);
    assert_eq!(data["lwm2m"], "1.1");
    assert_eq!(data["b"], "U");
    assert_eq!(data["alternatePath"], "/");
    let objects: Vec<&str> = data["objectList"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(&objects[..3], ["/1", "/1/0", "/2/0"]);
    assert!(objects.contains(&"/31024/12"));
}

#[test]
fn update_refreshes_lifetime_and_publishes_merged_registration() {
    let mut node = Node::new(1, |_| {});
    let loc = register_capture(&mut node, 0, DEVICE);
    node.take_published();

    node.advance(Duration::from_secs(200));
    let upd = request(
        MessageType::Con,
        Code::POST,
        100,
        &["rd", &loc],
        &["lt=600"],
        b"",
    );
    let reply = node.recv(0, DEVICE, &upd);
    assert_eq!(only_reply(&reply).code(), Code::CHANGED);
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, "lwm2m/peer-ep1/up/update");
    assert_eq!(published[0].1["msgType"], "update");
    assert_eq!(published[0].1["data"]["lt"], 600);
    assert_eq!(
        published[0].1["data"]["b"], "U",
        "merged with the stored registration"
    );

    // The original 300 s lifetime has passed; the update's 600 s has not.
    node.advance(Duration::from_secs(200));
    assert_eq!(node.registered(), 1);
    node.advance(Duration::from_secs(401));
    assert_eq!(node.registered(), 0);
    let events = node.take_published();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "lwm2m/peer-ep1/up/event");
    assert_eq!(events[0].1["data"]["event"], "expired");
    assert_eq!(events[0].1["data"]["ep"], "peer-ep1");
}

#[test]
fn deregister_removes_and_publishes_event_once() {
    let mut node = Node::new(1, |_| {});
    let loc = register_capture(&mut node, 0, DEVICE);
    node.take_published();
    let del = request(MessageType::Con, Code::DELETE, 101, &["rd", &loc], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &del)).code(),
        Code::DELETED
    );
    assert_eq!(node.registered(), 0);
    let events = node.take_published();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["data"]["event"], "deregister");
    // A later Update for the same location is unknown.
    let upd = request(MessageType::Con, Code::POST, 102, &["rd", &loc], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &upd)).code(),
        Code::NOT_FOUND
    );
    // Expiry of the removed registration publishes nothing more.
    node.advance(Duration::from_secs(400));
    assert!(node.take_published().is_empty());
}

#[test]
fn duplicate_con_is_answered_from_cache_and_not_processed_twice() {
    let mut node = Node::new(1, |_| {});
    let raw = capture("register.hex");
    let first = node.recv(0, DEVICE, &raw);
    node.advance(Duration::from_secs(3));
    let second = node.recv(0, DEVICE, &raw);
    assert_eq!(first, second, "retransmission gets the identical response");
    assert_eq!(node.take_published().len(), 1, "registered once");
    assert_eq!(node.shards[0].stats().duplicates, 1);
    assert_eq!(node.registered(), 1);
}

#[test]
fn retransmitted_register_after_exchange_eviction_keeps_the_registration() {
    let mut node = Node::new(1, |_| {});
    let raw = capture("register.hex");
    let first = location_of(&only_reply(&node.recv(0, DEVICE, &raw)));
    // The exchange cache is full of newer exchanges and forgot this one.
    node.shards[0].dedup = DedupCache::new(DEDUP_CAPACITY);
    node.advance(Duration::from_secs(30));
    let again = location_of(&only_reply(&node.recv(0, DEVICE, &raw)));
    assert_eq!(again, first, "answered with the registration it created");
    assert_eq!(
        node.take_published().len(),
        1,
        "registered once, nothing replaced"
    );
    assert_eq!(node.registered(), 1);

    // Past the exchange lifetime the same message id is a new Register.
    node.shards[0].dedup = DedupCache::new(DEDUP_CAPACITY);
    node.advance(crate::coap::EXCHANGE_LIFETIME + Duration::from_secs(1));
    let later = location_of(&only_reply(&node.recv(0, DEVICE, &raw)));
    assert_ne!(later, first);
    let kinds: Vec<_> = node
        .take_published()
        .iter()
        .map(|(_, j)| j["data"]["event"].as_str().unwrap_or("register").to_owned())
        .collect();
    assert_eq!(kinds, ["replaced", "register"]);
    assert_eq!(node.registered(), 1);
}

#[test]
fn identical_object_lists_are_shared_until_unused() {
    let mut node = Node::new(1, |_| {});
    let objects = b"</1/0>,</3/0>,</31024/10>";
    let mut locations = Vec::new();
    for (i, port) in [(1u16, "127.0.0.9:1001"), (2, "127.0.0.9:1002")] {
        let ep = format!("ep=fleet-{i}");
        let reg = request(MessageType::Con, Code::POST, i, &["rd"], &[&ep], objects);
        let reply = node.recv(0, port, &reg);
        let loc = location_of(&only_reply(&reply));
        locations.push(Location::parse(loc.as_bytes()).expect("our id"));
    }
    let shard = &node.shards[0];
    let list = |l: &Location| {
        let ep = shard.endpoints.get(l).expect("registered");
        ep.registration.object_list.clone().expect("object list")
    };
    assert!(Arc::ptr_eq(&list(&locations[0]), &list(&locations[1])));
    assert_eq!(shard.object_lists.len(), 1);

    for (i, (l, port)) in locations
        .iter()
        .zip(["127.0.0.9:1001", "127.0.0.9:1002"])
        .enumerate()
    {
        let del = request(
            MessageType::Con,
            Code::DELETE,
            10 + i as u16,
            &["rd", &l.to_string()],
            &[],
            b"",
        );
        assert_eq!(only_reply(&node.recv(0, port, &del)).code(), Code::DELETED);
    }
    node.advance(Duration::from_secs(2));
    assert!(
        node.shards[0].object_lists.is_empty(),
        "dropped once unused"
    );
}

#[test]
fn re_register_of_the_same_name_replaces_across_shards() {
    let mut node = Node::new(2, |_| {});
    let first = register_capture(&mut node, 0, DEVICE);
    node.take_published();
    // The device restarts behind a new port that lands on the other shard.
    let second = register_capture(&mut node, 1, "127.0.0.2:40000");
    assert_ne!(first, second);
    assert!(second.starts_with('1'));
    assert_eq!(node.registered(), 1, "the old registration is gone");
    let published = node.take_published();
    let kinds: Vec<_> = published
        .iter()
        .map(|(_, j)| {
            j["data"]["event"]
                .as_str()
                .unwrap_or(j["msgType"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(kinds, ["register", "replaced"]);
    // The old location is dead, the new one works.
    let upd = request(MessageType::Con, Code::POST, 5, &["rd", &first], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &upd)).code(),
        Code::NOT_FOUND
    );
    let upd = request(MessageType::Con, Code::POST, 6, &["rd", &second], &[], b"");
    assert_eq!(
        only_reply(&node.recv(1, "127.0.0.2:40000", &upd)).code(),
        Code::CHANGED
    );
}

#[test]
fn nat_rebinding_moves_the_endpoint_to_the_new_shard() {
    let mut node = Node::new(2, |_| {});
    let loc = register_capture(&mut node, 0, DEVICE);
    node.take_published();
    // New source port; the kernel steers it to shard 1, which does not know the location.
    let upd = request(MessageType::Con, Code::POST, 7, &["rd", &loc], &[], b"");
    let reply = node.recv(1, "127.0.0.2:61000", &upd);
    assert_eq!(only_reply(&reply).code(), Code::CHANGED);
    assert_eq!(node.shards[0].registered(), 0);
    assert_eq!(node.shards[1].registered(), 1);
    let published = node.take_published();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0].1["msgType"], "update");
    assert_eq!(published[1].1["data"]["event"], "rebound");

    // Updates from the new address are handled by shard 1 directly.
    let forwarded = node.shards[1].stats().forwarded;
    let upd = request(MessageType::Con, Code::POST, 8, &["rd", &loc], &[], b"");
    assert_eq!(
        only_reply(&node.recv(1, "127.0.0.2:61000", &upd)).code(),
        Code::CHANGED
    );
    assert_eq!(
        node.shards[1].stats().forwarded,
        forwarded,
        "no hop once moved"
    );
    // A second rebinding back to shard 0 goes home → owner and moves again.
    let upd = request(MessageType::Con, Code::POST, 9, &["rd", &loc], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, "127.0.0.2:62000", &upd)).code(),
        Code::CHANGED
    );
    assert_eq!(node.shards[0].registered(), 1);
    // Deregister and expiry still work after the moves, once.
    let del = request(MessageType::Con, Code::DELETE, 10, &["rd", &loc], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, "127.0.0.2:62000", &del)).code(),
        Code::DELETED
    );
    assert_eq!(node.registered(), 0);
    node.advance(Duration::from_secs(1000));
    let events: Vec<_> = node
        .take_published()
        .into_iter()
        .filter(|(_, j)| j["msgType"] == "event")
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|(_, j)| j["data"]["event"] == "deregister")
            .count(),
        1
    );
    assert_eq!(
        events
            .iter()
            .filter(|(_, j)| j["data"]["event"] == "expired")
            .count(),
        0
    );
}

#[test]
fn block1_register_in_64_byte_blocks_is_reassembled() {
    let mut node = Node::new(1, |_| {});
    let exchange = std::fs::read_to_string(format!(
        "{}/tests/data/captures/register_block64_full.exchange.txt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("capture");
    let mut codes = Vec::new();
    for line in exchange.lines() {
        let (port, data) = line.split_once('\t').expect("port<TAB>hex");
        if port == "5683" {
            continue;
        }
        let replies = node.recv(0, DEVICE, &hex(data));
        let reply = only_reply(&replies);
        codes.push(reply.code());
        let req_raw = hex(data);
        let req = Message::parse(&req_raw).expect("capture parses");
        let echoed = reply.block1().expect("Block1 echoed");
        assert_eq!(echoed.num, req.block1().expect("block").num);
    }
    assert_eq!(codes, [Code::CONTINUE, Code::CONTINUE, Code::CREATED]);
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].1["data"]["ep"], "peer-ep-b64");
    let objects = published[0].1["data"]["objectList"]
        .as_array()
        .expect("list")
        .len();
    assert!(
        objects >= 10,
        "whole object list reassembled, got {objects}"
    );
}

#[test]
fn every_registration_error_path_answers_4xx() {
    let mut node = Node::new(1, |c| c.gateway.lifetime_max = Duration::from_secs(3600));
    let cases: &[(&[&str], &[&str], Code, Code)] = &[
        (&["rd"], &["lt=300"], Code::POST, Code::BAD_REQUEST), // ep absent
        (&["rd"], &["ep=a", "lt=0"], Code::POST, Code::BAD_REQUEST), // below min
        (&["rd"], &["ep=a", "lt=3601"], Code::POST, Code::BAD_REQUEST), // above max
        (&["rd"], &["ep=a", "lt=abc"], Code::POST, Code::BAD_REQUEST), // not a number
        (&["rd"], &["ep=a"], Code::GET, Code::METHOD_NOT_ALLOWED),
        (&["rd", "0zz"], &[], Code::POST, Code::NOT_FOUND), // unknown location
        (&["rd", "not-an-id"], &[], Code::DELETE, Code::NOT_FOUND),
        (&["rd", "0", "x"], &[], Code::POST, Code::NOT_FOUND),
        (&["bs"], &["ep=a"], Code::POST, Code::NOT_FOUND), // unknown path
        (&[], &[], Code::GET, Code::NOT_FOUND),
    ];
    for (i, (path, query, method, expect)) in cases.iter().enumerate() {
        let req = request(MessageType::Con, *method, i as u16, path, query, b"");
        let replies = node.recv(0, DEVICE, &req);
        assert_eq!(
            only_reply(&replies).code(),
            *expect,
            "case {i}: {path:?} {query:?}"
        );
    }
    assert_eq!(node.registered(), 0);
    assert!(node.take_published().is_empty());
    // An unsupported protocol version gets 4.12 so the client can fall back (Anjay does).
    let req = request(
        MessageType::Con,
        Code::POST,
        98,
        &["rd"],
        &["ep=a", "lwm2m=2.0"],
        b"",
    );
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &req)).code(),
        Code::PRECONDITION_FAILED
    );
    // Lifetime absent means the spec default (86400 s), clamped to this node's maximum.
    let req = request(
        MessageType::Con,
        Code::POST,
        99,
        &["rd"],
        &["ep=a"],
        b"</1/0>",
    );
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &req)).code(),
        Code::CREATED
    );
    assert_eq!(node.take_published()[0].1["data"]["lt"], 3600);
}

#[test]
fn versions_1_0_1_1_and_1_2_register() {
    let mut node = Node::new(1, |_| {});
    for (i, (file, from)) in [
        ("register_v10.hex", "127.0.0.3:1000"),
        ("register_lightclient.hex", "127.0.0.4:1000"),
        ("anjay_register.hex", "127.0.0.5:1000"),
        ("anjay_register_v10.hex", "127.0.0.6:1000"),
    ]
    .into_iter()
    .enumerate()
    {
        let replies = node.recv(0, from, &capture(file));
        assert_eq!(only_reply(&replies).code(), Code::CREATED, "{file}");
        assert_eq!(node.registered(), i + 1);
    }
    let versions: Vec<_> = node
        .take_published()
        .into_iter()
        .map(|(_, j)| j["data"]["lwm2m"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        versions.contains(&"1.2".to_owned()),
        "Anjay 1.2 accepted: {versions:?}"
    );
    assert!(versions.contains(&"1.0".to_owned()));
}

#[test]
fn non_request_gets_non_response_and_pings_get_reset() {
    let mut node = Node::new(1, |_| {});
    let raw = request(
        MessageType::Non,
        Code::POST,
        1,
        &["rd"],
        &["ep=n1", "lt=60"],
        b"</3/0>",
    );
    let replies = node.recv(0, DEVICE, &raw);
    let reply = only_reply(&replies);
    assert_eq!(reply.ty(), MessageType::Non);
    assert_eq!(reply.code(), Code::CREATED);
    assert_eq!(reply.token(), 1u16.to_be_bytes());

    let mut ping = Vec::new();
    write_empty(&mut ping, MessageType::Con, 0x4242);
    let replies = node.recv(0, DEVICE, &ping);
    let reply = only_reply(&replies);
    assert_eq!(reply.ty(), MessageType::Rst);
    assert_eq!(reply.mid(), 0x4242);
}

#[test]
fn malformed_and_truncated_datagrams_are_counted_never_fatal() {
    let mut node = Node::new(2, |_| {});
    let raw = capture("register.hex");
    for cut in 0..raw.len() {
        node.recv(0, "127.0.0.9:9", &raw[..cut]);
    }
    let mut x: u32 = 12345;
    for len in 0..2000usize {
        let data: Vec<u8> = (0..len % 300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        node.recv(len % 2, "127.0.0.9:10", &data);
    }
    assert!(node.shards[0].stats().malformed > 0);
    // The shard still works afterwards.
    register_capture(&mut node, 0, DEVICE);
    assert_eq!(node.registered(), 1);
}

#[test]
fn capacity_and_rate_limits_answer_5_03() {
    let mut node = Node::new(1, |c| c.udp.max_connections = 2);
    for i in 0..3u16 {
        let ep = format!("ep=cap{i}");
        let req = request(
            MessageType::Con,
            Code::POST,
            i,
            &["rd"],
            &[&ep, "lt=60"],
            b"",
        );
        let code = only_reply(&node.recv(0, &format!("127.0.1.{i}:5000"), &req)).code();
        let expect = if i < 2 {
            Code::CREATED
        } else {
            Code::SERVICE_UNAVAILABLE
        };
        assert_eq!(code, expect, "registration {i}");
    }
    let mut node = Node::new(1, |c| c.udp.max_conn_rate = 5);
    let mut created = 0;
    for i in 0..8u16 {
        let ep = format!("ep=rate{i}");
        let req = request(
            MessageType::Con,
            Code::POST,
            i,
            &["rd"],
            &[&ep, "lt=60"],
            b"",
        );
        if only_reply(&node.recv(0, &format!("127.0.2.{i}:5000"), &req)).code() == Code::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 5);
    node.advance(Duration::from_secs(1));
    let req = request(
        MessageType::Con,
        Code::POST,
        50,
        &["rd"],
        &["ep=late", "lt=60"],
        b"",
    );
    assert_eq!(
        only_reply(&node.recv(0, "127.0.3.1:5000", &req)).code(),
        Code::CREATED
    );
}

#[test]
fn update_publish_condition_contains_object_list() {
    let mut node = Node::new(1, |c| {
        c.gateway.update_msg_publish_condition =
            crate::config::UpdatePublishCondition::ContainsObjectList
    });
    let loc = register_capture(&mut node, 0, DEVICE);
    node.take_published();
    let upd = request(MessageType::Con, Code::POST, 20, &["rd", &loc], &[], b"");
    node.recv(0, DEVICE, &upd);
    assert!(
        node.take_published().is_empty(),
        "no object list, nothing published"
    );
    let upd = request(
        MessageType::Con,
        Code::POST,
        21,
        &["rd", &loc],
        &[],
        b"</3/0>,</5/0>",
    );
    node.recv(0, DEVICE, &upd);
    let published = node.take_published();
    assert_eq!(published.len(), 1);
    assert_eq!(
        published[0].1["data"]["objectList"],
        serde_json::json!(["/3/0", "/5/0"])
    );
}

#[test]
fn mountpoint_with_peerhost_and_secrets_filtered() {
    let mut node = Node::new(1, |c| {
        c.gateway.mountpoint = "gw/${peerhost}/${endpoint_name}/".into()
    });
    let req = request(
        MessageType::Con,
        Code::POST,
        1,
        &["rd"],
        &["ep=sec1", "lt=60", "password=hunter2", "imei=1234"],
        b"",
    );
    node.recv(0, "127.0.0.7:7000", &req);
    let published = node.take_published();
    assert_eq!(published[0].0, "gw/127.0.0.7/sec1/up/resp");
    let data = &published[0].1["data"];
    assert_eq!(data["imei"], "1234");
    assert!(data.get("password").is_none());
    assert!(
        data.get("objectList").is_none(),
        "no payload, no object list"
    );
}
