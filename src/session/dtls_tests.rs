//! The shard behind its DTLS server: real OpenSSL clients register, are commanded and
//! deregister; identities bind registrations; plain datagrams cannot act for them.

use std::net::SocketAddr;

use openssl::ssl::{ErrorCode, SslStream};

use super::downlink_tests::command;
use super::tests::{request, Node};
use super::*;
use crate::dtls::pipe::DatagramPipe;
use crate::dtls::server::DtlsServer;
use crate::dtls::test_support::{self, KEY};

/// A node of `n` shards, each with a DTLS server for the `dev-*` PSK identities.
fn secure_node(n: usize) -> Node {
    let mut node = Node::new(n, |_| {});
    for s in &mut node.shards {
        let server = DtlsServer::new(
            test_support::server_context(),
            test_support::identify(),
            s.identity_hasher(),
            test_support::limits(),
            node.now,
        )
        .expect("server");
        s.enable_dtls(server);
    }
    node
}

/// A device speaking CoAP over DTLS to one shard.
struct SecureDevice {
    tls: SslStream<DatagramPipe>,
    addr: SocketAddr,
    shard: usize,
}

impl SecureDevice {
    fn connect(node: &mut Node, shard: usize, addr: &str, identity: &'static str) -> SecureDevice {
        let mut d = SecureDevice {
            tls: test_support::client(identity, KEY),
            addr: addr.parse().expect("address"),
            shard,
        };
        for _ in 0..10 {
            let result = d.tls.do_handshake();
            d.flush(node);
            match result {
                Ok(()) => return d,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => panic!("handshake failed: {e}"),
            }
        }
        panic!("handshake did not finish");
    }

    /// Sends what the client wrote and feeds it what the node sent back.
    fn flush(&mut self, node: &mut Node) {
        while let Some(d) = self.tls.get_mut().pop_outbound() {
            node.shards[self.shard].handle_secure_datagram(node.now, self.addr, &d);
            node.settle();
        }
        self.take_replies(node);
    }

    fn take_replies(&mut self, node: &mut Node) {
        let addr = self.addr;
        for (_, to, d) in &node.secure_sent {
            if *to == addr {
                self.tls.get_mut().push_inbound(d);
            }
        }
        node.secure_sent.retain(|(_, to, _)| *to != addr);
    }

    /// Sends one CoAP message; the plaintext CoAP messages received since.
    fn send(&mut self, node: &mut Node, coap: &[u8]) -> Vec<Vec<u8>> {
        self.tls.ssl_write(coap).expect("client write");
        self.flush(node);
        self.receive()
    }

    fn receive(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.tls.ssl_read(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }
}

fn register(ep: &str, mid: u16) -> Vec<u8> {
    request(
        MessageType::Con,
        Code::POST,
        mid,
        &["rd"],
        &[&format!("ep={ep}"), "lt=300", "lwm2m=1.1", "b=U"],
        b"</3/0>",
    )
}

fn one(replies: &[Vec<u8>]) -> Message<'_> {
    assert_eq!(replies.len(), 1, "one reply, got {replies:?}");
    Message::parse(&replies[0]).expect("reply parses")
}

fn location(reply: &Message<'_>) -> String {
    let segs: Vec<_> = reply
        .location_path()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    segs[1].clone()
}

#[test]
fn psk_device_registers_is_read_over_mqtt_and_deregisters() {
    let mut node = secure_node(1);
    let mut dev = SecureDevice::connect(&mut node, 0, "10.0.0.1:40000", "dev-1");
    let replies = dev.send(&mut node, &register("dev-1", 1));
    let reply = one(&replies);
    assert_eq!(reply.code(), Code::CREATED);
    let id = location(&reply);
    assert!(node.sent.is_empty(), "nothing went out in the clear");
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "register");
    assert_eq!(published[0].1["data"]["security"], "psk");

    command(
        &mut node,
        "dev-1",
        r#"{"reqID":"1","msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    dev.take_replies(&mut node);
    let reads = dev.receive();
    let read = one(&reads);
    assert_eq!(read.code(), Code::GET);
    let mut resp = Vec::new();
    let mut w = MessageWriter::new(
        &mut resp,
        MessageType::Ack,
        Code::CONTENT,
        read.mid(),
        read.token(),
    );
    w.uint_option(option::CONTENT_FORMAT, 0);
    w.payload(b"Acme");
    w.finish();
    assert!(dev.send(&mut node, &resp).is_empty());
    let published = node.take_published();
    assert_eq!(published[0].1["msgType"], "read");
    assert_eq!(published[0].1["data"]["content"][0]["value"], "Acme");

    let bye = request(MessageType::Con, Code::DELETE, 3, &["rd", &id], &[], b"");
    assert_eq!(one(&dev.send(&mut node, &bye)).code(), Code::DELETED);
    assert_eq!(node.registered(), 0);
    assert_eq!(node.shards[0].stats().forbidden, 0);
}

#[test]
fn register_under_another_name_than_the_identity_is_forbidden() {
    let mut node = secure_node(1);
    let mut dev = SecureDevice::connect(&mut node, 0, "10.0.0.2:40000", "dev-2");
    let replies = dev.send(&mut node, &register("dev-3", 1));
    assert_eq!(one(&replies).code(), Code::FORBIDDEN);
    assert_eq!(node.registered(), 0);
    assert!(node.take_published().is_empty());
    assert_eq!(node.shards[0].stats().forbidden, 1);
}

#[test]
fn plain_datagrams_cannot_act_for_a_dtls_registration() {
    let mut node = secure_node(1);
    let mut dev = SecureDevice::connect(&mut node, 0, "10.0.0.3:40000", "dev-3");
    let id = location(&one(&dev.send(&mut node, &register("dev-3", 1))));
    node.take_published();

    // From the device's own address and from another, over plain UDP.
    for from in ["10.0.0.3:40000", "10.9.9.9:1234"] {
        let update = request(
            MessageType::Con,
            Code::POST,
            2,
            &["rd", &id],
            &["lt=60"],
            b"",
        );
        assert_eq!(one(&node.recv(0, from, &update)).code(), Code::FORBIDDEN);
        let bye = request(MessageType::Con, Code::DELETE, 3, &["rd", &id], &[], b"");
        assert_eq!(one(&node.recv(0, from, &bye)).code(), Code::FORBIDDEN);
        // A plain Register of the name while the DTLS registration holds it.
        assert_eq!(
            one(&node.recv(0, from, &register("dev-3", 4))).code(),
            Code::FORBIDDEN
        );
    }
    assert_eq!(node.registered(), 1);
    assert!(node.take_published().is_empty());

    // Another identity over DTLS fares no better.
    let mut other = SecureDevice::connect(&mut node, 0, "10.0.0.4:40000", "dev-4");
    let update = request(
        MessageType::Con,
        Code::POST,
        5,
        &["rd", &id],
        &["lt=60"],
        b"",
    );
    assert_eq!(one(&other.send(&mut node, &update)).code(), Code::FORBIDDEN);

    // The device itself still can.
    let update = request(
        MessageType::Con,
        Code::POST,
        6,
        &["rd", &id],
        &["lt=60"],
        b"",
    );
    assert_eq!(one(&dev.send(&mut node, &update)).code(), Code::CHANGED);
}

#[test]
fn plain_response_with_a_dtls_token_is_dropped() {
    let mut node = secure_node(1);
    let mut dev = SecureDevice::connect(&mut node, 0, "10.0.0.5:40000", "dev-5");
    one(&dev.send(&mut node, &register("dev-5", 1)));
    node.take_published();
    command(
        &mut node,
        "dev-5",
        r#"{"reqID":"1","msgType":"read","data":{"path":"/3/0/0"}}"#,
    );
    dev.take_replies(&mut node);
    let reads = dev.receive();
    let read = one(&reads);
    // A forged plain answer with the right token and message id.
    let mut forged = Vec::new();
    let mut w = MessageWriter::new(
        &mut forged,
        MessageType::Ack,
        Code::CONTENT,
        read.mid(),
        read.token(),
    );
    w.payload(b"forged");
    w.finish();
    node.recv(0, "10.0.0.5:40000", &forged);
    assert!(node.take_published().is_empty());
    assert!(node.shards[0].stats().forbidden >= 1);
}

#[test]
fn rebinding_to_another_shard_is_answered_through_the_new_session() {
    let mut node = secure_node(2);
    let mut dev = SecureDevice::connect(&mut node, 0, "10.0.0.6:40000", "dev-6");
    let id = location(&one(&dev.send(&mut node, &register("dev-6", 1))));
    node.take_published();
    // New address, steered to shard 1: a new handshake there, then an Update.
    let mut moved = SecureDevice::connect(&mut node, 1, "10.0.0.6:50000", "dev-6");
    let update = request(MessageType::Con, Code::POST, 2, &["rd", &id], &[], b"");
    let replies = moved.send(&mut node, &update);
    assert_eq!(one(&replies).code(), Code::CHANGED);
    assert_eq!(
        node.shards[1].registered(),
        1,
        "the endpoint followed its session"
    );
    let events: Vec<_> = node
        .take_published()
        .into_iter()
        .filter(|(_, v)| v["msgType"] == "event")
        .collect();
    assert_eq!(events[0].1["data"]["event"], "rebound");
    // Commands now go out through the new session.
    command(
        &mut node,
        "dev-6",
        r#"{"reqID":"2","msgType":"read","data":{"path":"/3/0"}}"#,
    );
    moved.take_replies(&mut node);
    assert_eq!(one(&moved.receive()).code(), Code::GET);
}
