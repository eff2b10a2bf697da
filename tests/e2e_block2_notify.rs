//! End to end: a notification larger than one datagram, sent in Block2 blocks (RFC 7959
//! §2.4 with RFC 7641), reaches the MQTT application once and whole. The device is
//! simulated over real UDP; the gateway asks it for each following block.

mod common;

use std::time::Duration;

use common::{start, unique, Device};
use lwm2m_gateway::coap::{option, Block, Code, Message, MessageType, MessageWriter};
use serde_json::json;

/// Block size exponent of the device: 1024-byte blocks.
const SZX: u8 = 6;

/// The representation notified: 10 KiB of text, ten blocks.
fn body() -> String {
    (0..10 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// Waits for the next request from the gateway; answers the empty ACKs of nothing.
fn next_request(dev: &Device, buf: &mut [u8]) -> Vec<u8> {
    loop {
        let (n, _) = dev
            .socket
            .recv_from(buf)
            .expect("a request from the gateway");
        if Message::parse(&buf[..n]).is_ok_and(|m| m.code().is_request()) {
            return buf[..n].to_vec();
        }
    }
}

/// A 2.05 of `ty` carrying block `num` of `body`, text/plain, with `observe` if given.
fn block(
    ty: MessageType,
    mid: u16,
    token: &[u8],
    observe: Option<u32>,
    num: u32,
    body: &[u8],
) -> Vec<u8> {
    let size = 16usize << SZX;
    let start = num as usize * size;
    let end = (start + size).min(body.len());
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, ty, Code::CONTENT, mid, token);
    if let Some(seq) = observe {
        w.uint_option(option::OBSERVE, seq);
    }
    w.uint_option(option::CONTENT_FORMAT, 0).block_option(
        option::BLOCK2,
        Block {
            num,
            more: end < body.len(),
            szx: SZX,
        },
    );
    w.payload(&body[start..end]);
    w.finish();
    buf
}

#[test]
fn a_10_kib_notification_in_blocks_is_published_once_and_whole() {
    let ep = unique("blocknotify");
    let (gw, sub) = start(2, &ep);
    let mut dev = Device::bind("127.0.6.1", gw.udp_addr());
    dev.register(&ep, 300);
    assert_eq!(sub.collect(1, Duration::from_secs(10)).len(), 1, "register");

    sub.publish(
        &format!("lwm2m/{ep}/dn"),
        r#"{"requestID":"big","msgType":"observe","data":{"path":"/3/0/0"}}"#,
    );
    let mut buf = [0u8; 2048];
    let observe = next_request(&dev, &mut buf);
    let observe = Message::parse(&observe).expect("observe");
    assert_eq!((observe.code(), observe.observe()), (Code::GET, Some(0)));
    let token = observe.token().to_vec();
    let mut ack = Vec::new();
    let mut w = MessageWriter::new(
        &mut ack,
        MessageType::Ack,
        Code::CONTENT,
        observe.mid(),
        &token,
    );
    w.uint_option(option::OBSERVE, 1)
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"small");
    w.finish();
    dev.socket.send_to(&ack, dev.gateway).expect("send");
    let got = sub.collect(1, Duration::from_secs(10));
    assert_eq!(got[0].json["msgType"], "observe", "{got:?}");

    // The notification: block 0 of ten, then each block the gateway asks for.
    let body = body();
    let body = body.as_bytes();
    let notify = block(MessageType::Non, 0x4000, &token, Some(2), 0, body);
    dev.socket.send_to(&notify, dev.gateway).expect("send");
    let mut asked = Vec::new();
    loop {
        let req = next_request(&dev, &mut buf);
        let req = Message::parse(&req).expect("follow-up");
        assert_eq!(req.code(), Code::GET);
        assert_eq!(req.observe(), None, "no Observe in a follow-up");
        let path: Vec<&[u8]> = req.uri_path().collect();
        assert_eq!(path, [b"3".as_slice(), b"0", b"0"]);
        let b = req.block2().expect("Block2");
        assert_eq!(b.szx, SZX);
        asked.push(b.num);
        let answer = block(MessageType::Ack, req.mid(), req.token(), None, b.num, body);
        dev.socket.send_to(&answer, dev.gateway).expect("send");
        if (b.num as usize + 1) * 1024 >= body.len() {
            break;
        }
    }
    assert_eq!(
        asked,
        (1..10).collect::<Vec<u32>>(),
        "blocks 1 to 9, in order"
    );

    let got = sub.collect(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one notify");
    assert_eq!(got[0].topic, format!("lwm2m/{ep}/up/notify"));
    let notify = &got[0].json;
    assert_eq!(notify["msgType"], "notify");
    assert_eq!(notify["requestID"], "big");
    assert_eq!(notify["seqNum"], 2);
    assert_eq!(
        notify["data"]["content"],
        json!([{"path":"/3/0/0","value":std::str::from_utf8(body).expect("text")}])
    );
    assert!(
        sub.drain(Duration::from_millis(300)).is_empty(),
        "published once"
    );
    gw.stop();
}
