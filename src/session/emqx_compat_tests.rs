//! The registration interface as EMQX's devices use it: object lists in any
//! Content-Format, `lwm2m=1`, and a DELETE without a path.

use super::tests::{only_reply, register_capture, request, Node, DEVICE};
use super::*;
use crate::coap::{MessageType, MessageWriter};

/// A Register or Update carrying `cf`, `ep` and `payload`.
fn register_with_format(mid: u16, cf: Option<u16>, ep: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, MessageType::Con, Code::POST, mid, &[mid as u8]);
    w.option(option::URI_PATH, b"rd");
    if let Some(cf) = cf {
        w.uint_option(option::CONTENT_FORMAT, u32::from(cf));
    }
    let ep = format!("ep={ep}");
    w.option(option::URI_QUERY, ep.as_bytes())
        .option(option::URI_QUERY, b"lwm2m=1")
        .payload(payload);
    w.finish();
    out
}

/// An object list labelled text/plain or not labelled at all is taken when it parses as
/// links (EMQX accepts both); one that does not parse is refused: 4.15 when it came in
/// another format, 4.00 when it claimed to be link-format or said nothing.
#[test]
fn object_list_is_taken_whatever_its_content_format() {
    let mut node = Node::new(1, |_| {});
    for (i, cf) in [Some(0), None, Some(40), Some(42)].into_iter().enumerate() {
        let ep = format!("fmt{i}");
        let req = register_with_format(i as u16, cf, &ep, b"</1>, </2>, </3>, </4>, </5>");
        let reply = node.recv(0, DEVICE, &req);
        assert_eq!(
            only_reply(&reply).code(),
            Code::CREATED,
            "content format {cf:?}"
        );
        let published = node.take_published();
        assert_eq!(
            published[0].1["data"]["objectList"],
            serde_json::json!(["/1", "/2", "/3", "/4", "/5"]),
            "content format {cf:?}"
        );
        assert_eq!(published[0].1["data"]["lwm2m"], "1.0");
    }
    assert_eq!(node.registered(), 4);
    for (i, (cf, expect)) in [
        (Some(0), Code::UNSUPPORTED_CONTENT_FORMAT),
        (None, Code::BAD_REQUEST),
        (Some(40), Code::BAD_REQUEST),
    ]
    .into_iter()
    .enumerate()
    {
        let req = register_with_format(20 + i as u16, cf, "bad", b"hello world");
        let reply = node.recv(0, DEVICE, &req);
        assert_eq!(only_reply(&reply).code(), expect, "content format {cf:?}");
    }
    assert_eq!(node.registered(), 4);

    // An Update's refusal leaves the registration as it was.
    let id = register_capture(&mut node, 0, DEVICE);
    let mut update = Vec::new();
    let mut w = MessageWriter::new(&mut update, MessageType::Con, Code::POST, 30, &[30]);
    w.option(option::URI_PATH, b"rd")
        .option(option::URI_PATH, id.as_bytes())
        .uint_option(option::CONTENT_FORMAT, 0)
        .payload(b"not links");
    w.finish();
    let reply = node.recv(0, DEVICE, &update);
    assert_eq!(only_reply(&reply).code(), Code::UNSUPPORTED_CONTENT_FORMAT);
    assert_eq!(node.registered(), 5, "the registration stays");
}

/// A DELETE without any Uri-Path names no registration: 4.00 (EMQX), while a POST or
/// GET to no path stays 4.04.
#[test]
fn delete_without_path_is_bad_request() {
    let mut node = Node::new(1, |_| {});
    let req = request(MessageType::Con, Code::DELETE, 1, &[], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &req)).code(),
        Code::BAD_REQUEST
    );
    let req = request(MessageType::Con, Code::POST, 2, &[], &[], b"");
    assert_eq!(
        only_reply(&node.recv(0, DEVICE, &req)).code(),
        Code::NOT_FOUND
    );
}
