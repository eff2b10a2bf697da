//! EMQX's own LwM2M test cases (`apps/emqx_gateway_lwm2m/test/emqx_lwm2m_SUITE.erl` in
//! emqx/emqx), driven the same way against this gateway: a device over real UDP sends
//! what the EMQX case sends, an MQTT application publishes the same commands, and the
//! published JSON is compared with what the EMQX case expects. Where the gateway differs
//! on purpose (README, "Compatibility with EMQX") the test says so and asserts ours.

mod common;

use std::time::Duration;

use common::{test_config, unique, Device, Received, Subscriber};
use lwm2m_gateway::coap::{option, Block, Code, Message, MessageType, MessageWriter};
use lwm2m_gateway::config::Config;
use lwm2m_gateway::runtime::Gateway;
use serde_json::{json, Value};

/// How long an MQTT message or a device request may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// A request the device received from the gateway.
struct Request {
    code: Code,
    mid: u16,
    token: Vec<u8>,
    /// `/`-joined Uri-Path, e.g. `/3/0/13`.
    path: String,
    content_format: Option<u16>,
    block2: Option<Block>,
    payload: Vec<u8>,
}

/// A gateway, an MQTT application subscribed to everything of `ep`, and `ep`'s device.
struct Emqx {
    gw: Gateway,
    sub: Subscriber,
    dev: Device,
    ep: String,
    mid: u16,
}

impl Emqx {
    fn start(tag: &str, configure: impl FnOnce(&mut Config)) -> Emqx {
        let mut config = test_config(1);
        configure(&mut config);
        let gw = Gateway::start(config).expect("gateway starts");
        let ep = unique(tag);
        let sub = Subscriber::connect(gw.mqtt_addr(), "lwm2m/#", &format!("lwm2m/{ep}"));
        let dev = Device::bind("127.0.6.1", gw.udp_addr());
        Emqx {
            gw,
            sub,
            dev,
            ep,
            mid: 0x4000,
        }
    }

    /// A CON request to the gateway with `cf` as Content-Format; the response code and
    /// Location-Path.
    fn send(
        &mut self,
        code: Code,
        path: &[&str],
        query: &[&str],
        cf: Option<u16>,
        payload: &[u8],
    ) -> (Code, Vec<String>) {
        self.mid = self.mid.wrapping_add(1);
        let mut buf = Vec::new();
        let token = self.mid.to_be_bytes();
        let mut w = MessageWriter::new(&mut buf, MessageType::Con, code, self.mid, &token);
        for p in path {
            w.option(option::URI_PATH, p.as_bytes());
        }
        if let Some(cf) = cf {
            w.uint_option(option::CONTENT_FORMAT, u32::from(cf));
        }
        for q in query {
            w.option(option::URI_QUERY, q.as_bytes());
        }
        w.payload(payload);
        w.finish();
        self.dev.exchange(&buf)
    }

    /// EMQX's `std_register`: `lwm2m=1`, `lt=345`, the object list as text/plain; checks
    /// the 2.01 and takes the register message. Returns the location id.
    fn register(&mut self, objects: &str) -> String {
        let ep = format!("ep={}", self.ep);
        let (code, location) = self.send(
            Code::POST,
            &["rd"],
            &[&ep, "lt=345", "lwm2m=1"],
            Some(0),
            objects.as_bytes(),
        );
        assert_eq!(code, Code::CREATED, "register");
        let registered = self.expect_published(1);
        assert_eq!(registered[0].json["msgType"], "register");
        location[1].clone()
    }

    /// Publishes a command on `lwm2m/<ep>/dn/dm`, as the EMQX cases do.
    fn command(&self, command: Value) {
        self.sub
            .publish(&format!("lwm2m/{}/dn/dm", self.ep), command.to_string());
    }

    /// The next `n` messages the gateway publishes (the application's own commands,
    /// which the subscription also sees, are skipped).
    fn expect_published(&self, n: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(m) = self.sub.collect(1, left).pop() else {
                break;
            };
            if !m.topic.contains("/dn") {
                got.push(m);
            }
        }
        assert_eq!(got.len(), n, "published: {got:?}");
        got
    }

    /// Nothing but the application's own commands is published within `quiet`.
    fn nothing_published(&self, quiet: Duration) {
        let got: Vec<Received> = self
            .sub
            .drain(quiet)
            .into_iter()
            .filter(|m| !m.topic.contains("/dn"))
            .collect();
        assert!(got.is_empty(), "published: {got:?}");
    }

    /// The one response to a command, on `up/resp`.
    fn response(&self) -> Value {
        let got = self.expect_published(1);
        assert_eq!(got[0].topic, format!("lwm2m/{}/up/resp", self.ep));
        got[0].json.clone()
    }

    /// The next request the gateway sends the device.
    fn recv_request(&self) -> Request {
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = self
                .dev
                .socket
                .recv_from(&mut buf)
                .expect("a request from the gateway");
            let Ok(msg) = Message::parse(&buf[..n]) else {
                continue;
            };
            if !msg.code().is_request() {
                continue;
            }
            let path: Vec<String> = msg
                .uri_path()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            return Request {
                code: msg.code(),
                mid: msg.mid(),
                token: msg.token().to_vec(),
                path: format!("/{}", path.join("/")),
                content_format: msg.content_format(),
                block2: msg.block2(),
                payload: msg.payload().to_vec(),
            };
        }
    }

    /// No request reaches the device within `quiet`.
    fn no_request(&self, quiet: Duration) {
        self.dev
            .socket
            .set_read_timeout(Some(quiet))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        let got = self.dev.socket.recv_from(&mut buf);
        self.dev
            .socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(got.is_err(), "the device got a request");
    }

    /// EMQX's `test_send_coap_response` with `Ack = true`: a piggybacked response.
    fn respond(
        &self,
        req: &Request,
        code: Code,
        cf: Option<u16>,
        block2: Option<Block>,
        payload: &[u8],
    ) {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, MessageType::Ack, code, req.mid, &req.token);
        if let Some(cf) = cf {
            w.uint_option(option::CONTENT_FORMAT, u32::from(cf));
        }
        if let Some(block) = block2 {
            w.block_option(option::BLOCK2, block);
        }
        w.payload(payload);
        w.finish();
        self.dev
            .socket
            .send_to(&buf, self.dev.gateway)
            .expect("send response");
    }

    /// Sends `command`, answers its request with `code`/`cf`/`payload`, and returns the
    /// request and the response published.
    fn round_trip(&self, command: Value, code: Code, cf: Option<u16>, payload: &[u8]) -> Value {
        self.command(command);
        let req = self.recv_request();
        self.respond(&req, code, cf, None, payload);
        self.response()
    }
}

const TEXT: u16 = 0;
const TLV: u16 = 11542;
const OMA_JSON: u16 = 11543;

/// case01_register, case03_register_version_1_1, case03_register_wrong_version,
/// case02_update_no_lt, case02_update_lifetime_zero, case121_delete_missing_uri_path.
#[test]
fn registration_as_emqx_devices_do_it() {
    let mut t = Emqx::start("reg", |_| {});
    let ep = t.ep.clone();
    // case01: lwm2m=1 with a text/plain object list.
    let location = t.register("</1>, </2>, </3>, </4>, </5>");

    // case02_update_no_lt: the lifetime stays 345.
    let (code, _) = t.send(
        Code::POST,
        &["rd", &location],
        &[],
        Some(TEXT),
        b"</1>, </2>, </3>, </4>, </5>, </6>",
    );
    assert_eq!(code, Code::CHANGED);
    let update = t.expect_published(1);
    assert_eq!(update[0].json["msgType"], "update");
    assert_eq!(update[0].json["data"]["lt"], 345);
    assert_eq!(
        update[0].json["data"]["objectList"],
        json!(["/1", "/2", "/3", "/4", "/5", "/6"])
    );

    // case02_update_lifetime_zero: EMQX takes lt=0 (and keeps the registration for
    // lifetime_max while reporting lt 0); here lt outside [lifetime_min, lifetime_max]
    // is 4.00 (SPEC §3) and the registration is untouched.
    let (code, _) = t.send(
        Code::POST,
        &["rd", &location],
        &["lt=0"],
        Some(TEXT),
        b"</1>, </2>",
    );
    assert_eq!(code, Code::BAD_REQUEST);
    t.nothing_published(Duration::from_millis(300));

    // case121_delete_missing_uri_path: 4.00.
    let (code, _) = t.send(Code::DELETE, &[], &[], None, b"");
    assert_eq!(code, Code::BAD_REQUEST);

    // case01: deregister.
    let (code, _) = t.send(Code::DELETE, &["rd", &location], &[], None, b"");
    assert_eq!(code, Code::DELETED);
    assert_eq!(t.expect_published(1)[0].json["data"]["event"], "deregister");

    // case03_register_version_1_1 and 1.2 (which EMQX refuses), with no Content-Format.
    for (i, version) in ["1.1", "1.2", "1.0"].into_iter().enumerate() {
        let q_ep = format!("ep={ep}-v{i}");
        let q_v = format!("lwm2m={version}");
        let (code, _) = t.send(
            Code::POST,
            &["rd"],
            &[&q_ep, "lt=345", &q_v],
            None,
            b"</1>, </2>, </3>, </4>, </5>",
        );
        assert_eq!(code, Code::CREATED, "lwm2m={version}");
        let register = t.expect_published(1);
        assert_eq!(register[0].json["data"]["lwm2m"], version);
        assert_eq!(register[0].json["data"]["objectList"][4], "/5");
    }
    // case03_register_wrong_version: refused (4.12 here, as LwM2M 1.1 prescribes so that
    // the client falls back; EMQX answers 4.00), nothing published.
    let q_ep = format!("ep={ep}-bad");
    let (code, _) = t.send(
        Code::POST,
        &["rd"],
        &[&q_ep, "lt=345", "lwm2m=8.3"],
        Some(TEXT),
        b"</1>",
    );
    assert_eq!(code.class(), 4);
    t.nothing_published(Duration::from_millis(300));
    t.gw.stop();
}

/// case10_read (alternate path, text/plain), case11_read_object_json (`"bn":"/3/0"`),
/// case14_read_text_types (text/plain for an Opaque resource), case20_read_tlv_variants
/// (an object instance list in answer to a read of `/3/0/6/0`), case12_read_resource_opaque.
#[test]
fn reads_decode_as_emqx_does() {
    let mut t = Emqx::start("read", |_| {});
    t.register("</lwm2m>;rt=\"oma.lwm2m\";ct=11543,</lwm2m/1/0>,</lwm2m/2/0>,</lwm2m/3/0>");

    // case10_read.
    t.command(json!({"requestID":206,"cacheID":206,"msgType":"read","data":{"path":"/3/0/0"}}));
    let req = t.recv_request();
    assert_eq!((req.code, req.path.as_str()), (Code::GET, "/lwm2m/3/0/0"));
    assert!(req.payload.is_empty());
    t.respond(&req, Code::CONTENT, Some(TEXT), None, b"EMQ");
    assert_eq!(
        t.response(),
        json!({"requestID":206,"cacheID":206,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/0","content":[{"path":"/3/0/0","value":"EMQ"}]}})
    );

    // case11_read_object_json: a base name without the trailing slash. (EMQX also reads
    // the time attribute `t` as a value and publishes a record without value as null;
    // both are left out here, see README.)
    let json_payload = br#"{"bn":"/3/0","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"1","sv":"Lightweight M2M Client"},{"n":"2","sv":"345000123"},{"n":"13","v":1700000000},{"n":"6","bv":true},{"n":"22","ov":"1:2"}]}"#;
    let r = t.round_trip(
        json!({"requestID":207,"cacheID":207,"msgType":"read","data":{"path":"/3/0"}}),
        Code::CONTENT,
        Some(OMA_JSON),
        json_payload,
    );
    assert_eq!(
        r,
        json!({"requestID":207,"cacheID":207,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0","content":[
            {"path":"/3/0/0","value":"Open Mobile Alliance"},
            {"path":"/3/0/1","value":"Lightweight M2M Client"},
            {"path":"/3/0/2","value":"345000123"},
            {"path":"/3/0/13","value":1700000000},
            {"path":"/3/0/6","value":true},
            {"path":"/3/0/22","value":"1:2"}]}})
    );

    // case14_read_text_types, opaque text/plain: the bytes, base64.
    let r = t.round_trip(
        json!({"requestID":315,"cacheID":315,"msgType":"read","data":{"path":"/6/0/4"}}),
        Code::CONTENT,
        Some(TEXT),
        b"abc",
    );
    assert_eq!(
        r,
        json!({"requestID":315,"cacheID":315,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/6/0/4","content":[{"path":"/6/0/4","value":"YWJj"}]}})
    );

    // case20_read_tlv_variants: object instances 0 and 1 in answer to /3/0/6/0. (EMQX
    // writes these paths without the leading slash; SPEC §5 paths always have it.)
    let res = [0xc4, 0x00, b'A', b'C', b'M', b'E'];
    let mut list = vec![0x06, 0x00];
    list.extend_from_slice(&res);
    list.extend_from_slice(&[0x06, 0x01]);
    list.extend_from_slice(&res);
    let r = t.round_trip(
        json!({"requestID":614,"cacheID":614,"msgType":"read","data":{"path":"/3/0/6/0"}}),
        Code::CONTENT,
        Some(TLV),
        &list,
    );
    assert_eq!(
        r,
        json!({"requestID":614,"cacheID":614,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/6/0","content":[
            {"path":"/3/0/0","value":"ACME"},{"path":"/3/1/0","value":"ACME"}]}})
    );

    // case12_read_resource_opaque.
    let r = t.round_trip(
        json!({"requestID":208,"cacheID":208,"msgType":"read","data":{"path":"/3/0/8"}}),
        Code::CONTENT,
        Some(42),
        &[20, 21, 22, 23],
    );
    assert_eq!(
        r,
        json!({"requestID":208,"cacheID":208,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/8","content":[{"path":"/3/0/8","value":"FBUWFw=="}]}})
    );
    t.gw.stop();
}

/// case20_write, case21_write_object, case23_write_multi_resource_instance,
/// case26_write_object_instance_mixed, case27_write_hex_encoding_invalid,
/// case_delete_basic.
#[test]
fn writes_as_emqx_sends_them() {
    let mut t = Emqx::start("write", |_| {});
    t.register("</1>, </2>, </3/0>, </4>, </5>, </5/0>");

    // case20_write: a content item without path writes the basePath resource.
    t.command(json!({"requestID":307,"cacheID":307,"msgType":"write","data":{"basePath":"/3/0/13","content":[{"type":"Float","value":"12345.0"}]}}));
    let req = t.recv_request();
    assert_eq!((req.code, req.path.as_str()), (Code::PUT, "/3/0/13"));
    assert_eq!(req.content_format, Some(TLV));
    // Resource 13 holding 12345.0 (4 bytes, exact in f32; EMQX always sends 8).
    assert_eq!(req.payload, [0xc4, 0x0d, 0x46, 0x40, 0xe4, 0x00]);
    t.respond(&req, Code::CHANGED, None, None, b"");
    assert_eq!(
        t.response(),
        json!({"requestID":307,"cacheID":307,"msgType":"write","data":{"reqPath":"/3/0/13","code":"2.04","codeMsg":"changed"}})
    );

    // case21_write_object: reqPath echoes "/3/0/" as sent; POST /3/0 (partial update).
    t.command(json!({"requestID":308,"cacheID":308,"msgType":"write","data":{"basePath":"/3/0/","content":[
        {"path":"13","type":"Integer","value":"12345"},
        {"path":"14","type":"String","value":"87x"},
        {"path":"6/0","type":"Integer","value":"1"}]}}));
    let req = t.recv_request();
    assert_eq!((req.code, req.path.as_str()), (Code::POST, "/3/0"));
    // The same TLVs as EMQX's, in path order rather than input order.
    assert_eq!(
        req.payload,
        [0x83, 0x06, 0x41, 0x00, 0x01, 0xc2, 0x0d, 0x30, 0x39, 0xc3, 0x0e, b'8', b'7', b'x']
    );
    t.respond(&req, Code::CHANGED, None, None, b"");
    assert_eq!(
        t.response(),
        json!({"requestID":308,"cacheID":308,"msgType":"write","data":{"reqPath":"/3/0/","code":"2.04","codeMsg":"changed"}})
    );

    // case23_write_multi_resource_instance: the last item at a path wins.
    t.command(json!({"requestID":400,"cacheID":400,"msgType":"write","mheaders":{"ttl":0},"data":{"basePath":"/3/0/22","content":[
        {"path":"0","type":"Objlnk","value":"1:2"},
        {"path":"1","type":"Objlnk","value":"1:3"},
        {"path":"1","type":"Objlnk","value":"1:4"}]}}));
    let req = t.recv_request();
    assert_eq!((req.code, req.path.as_str()), (Code::PUT, "/3/0/22"));
    assert_eq!(
        req.payload,
        [0x88, 0x16, 0x0c, 0x44, 0x00, 0, 1, 0, 2, 0x44, 0x01, 0, 1, 0, 4],
        "EMQX's exact bytes"
    );
    t.respond(&req, Code::CHANGED, None, None, b"");
    assert_eq!(
        t.response(),
        json!({"requestID":400,"cacheID":400,"mheaders":{"ttl":0},"msgType":"write","data":{"reqPath":"/3/0/22","code":"2.04","codeMsg":"changed"}})
    );

    // case26_write_object_instance_mixed: absolute and relative item paths, a duplicate.
    let opaque = "QkJC".repeat(20);
    t.command(
        json!({"requestID":560,"cacheID":560,"msgType":"write","data":{"basePath":"/3/0","content":[
        {"path":"/6/0","type":"Integer","value":1},
        {"path":"6/1","type":"Integer","value":2},
        {"path":"13","type":"Time","value":10},
        {"path":"13","type":"Time","value":11},
        {"path":"11","type":"Boolean","value":"true"},
        {"path":"12","type":"Boolean","value":"false"},
        {"path":"14","type":"Float","value":1.5},
        {"path":"300","type":"Opaque","value":opaque}]}}),
    );
    let req = t.recv_request();
    assert_eq!((req.code, req.path.as_str()), (Code::POST, "/3/0"));
    assert!(!req.payload.is_empty());
    t.respond(&req, Code::CHANGED, None, None, b"");
    assert_eq!(
        t.response(),
        json!({"requestID":560,"cacheID":560,"msgType":"write","data":{"reqPath":"/3/0","code":"2.04","codeMsg":"changed"}})
    );

    // case27_write_hex_encoding_invalid: nothing sent; 4.00 with reqPath (and a reason).
    t.command(json!({"requestID":309,"cacheID":309,"msgType":"write","encoding":"hex","data":{"path":"/3/0/1","type":"String","value":"ZZ"}}));
    let r = t.response();
    assert_eq!(
        (
            &r["requestID"],
            &r["cacheID"],
            &r["encoding"],
            &r["msgType"]
        ),
        (&json!(309), &json!(309), &json!("hex"), &json!("write"))
    );
    assert_eq!(
        (
            &r["data"]["reqPath"],
            &r["data"]["code"],
            &r["data"]["codeMsg"]
        ),
        (&json!("/3/0/1"), &json!("4.00"), &json!("bad_request"))
    );
    t.no_request(Duration::from_millis(300));

    // case_delete_basic.
    let r = t.round_trip(
        json!({"requestID":310,"cacheID":310,"msgType":"delete","data":{"path":"/5/0"}}),
        Code::DELETED,
        None,
        b"",
    );
    assert_eq!(
        r,
        json!({"requestID":310,"cacheID":310,"msgType":"delete","data":{"reqPath":"/5/0","code":"2.02","codeMsg":"deleted"}})
    );
    t.gw.stop();
}

/// A write larger than one datagram is answered at once (4.13) and the device keeps
/// answering later commands; a write the device answers in Block2 blocks is followed up
/// block by block.
#[test]
fn large_writes_and_block2_answers_never_wedge_the_device() {
    let mut t = Emqx::start("big", |_| {});
    t.register("</1>, </2>, </3/0>, </4>, </5>");

    // Too large for one datagram, the write goes out in Block1 blocks; a device that
    // cannot take it answers the first block 4.13, which ends the command.
    let big = "x".repeat(3000);
    t.command(json!({"requestID":1,"msgType":"write","data":{"path":"/3/0/14","type":"String","value":big}}));
    let first = t.recv_request();
    assert_eq!(first.code, Code::PUT);
    assert!(
        !first.payload.is_empty() && first.payload.len() <= 1024,
        "one block of the body: {} bytes",
        first.payload.len()
    );
    t.respond(&first, Code::REQUEST_ENTITY_TOO_LARGE, None, None, b"");
    let r = t.response();
    assert_eq!(
        (&r["requestID"], &r["data"]["code"], &r["data"]["reqPath"]),
        (&json!(1), &json!("4.13"), &json!("/3/0/14"))
    );
    t.no_request(Duration::from_millis(300));
    let r = t.round_trip(
        json!({"requestID":2,"msgType":"read","data":{"path":"/3/0/0"}}),
        Code::CONTENT,
        Some(TEXT),
        b"EMQ",
    );
    assert_eq!(r["data"]["content"][0]["value"], "EMQ", "{r}");

    // A write answered 2.04 with its body in two 16-byte blocks.
    t.command(json!({"requestID":3,"msgType":"write","data":{"path":"/3/0/14","type":"String","value":"+02"}}));
    let req = t.recv_request();
    assert_eq!(req.code, Code::PUT);
    let body = b"accepted: +02, applied at once";
    let block = |num, more| Some(Block { num, more, szx: 0 });
    t.respond(&req, Code::CHANGED, Some(TEXT), block(0, true), &body[..16]);
    let next = t.recv_request();
    assert_eq!(
        (next.code, next.path.as_str(), next.token.as_slice()),
        (Code::PUT, "/3/0/14", req.token.as_slice())
    );
    assert!(next.payload.is_empty(), "the follow-up carries no payload");
    let asked = next.block2.expect("Block2 asked for");
    assert_eq!((asked.num, asked.szx), (1, 0));
    t.nothing_published(Duration::from_millis(200));
    t.respond(
        &next,
        Code::CHANGED,
        Some(TEXT),
        block(1, false),
        &body[16..],
    );
    let r = t.response();
    assert_eq!(
        (&r["requestID"], &r["data"]["code"], &r["data"]["reqPath"]),
        (&json!(3), &json!("2.04"), &json!("/3/0/14"))
    );
    t.gw.stop();
}

/// case63_observe_notify_object5: Firmware Update notifications go to `v1/up/dm` by
/// default; with `translators.dm_notify = false` to `up/notify`.
#[test]
fn firmware_notifications_follow_dm_notify() {
    for dm_notify in [true, false] {
        let mut t = Emqx::start("fw", |c| {
            if !dm_notify {
                let off = Config::from_toml("[translators]\ndm_notify = false")
                    .expect("dm_notify = false is accepted");
                assert_eq!(off.translators.dm_notify, None);
                c.translators = off.translators;
            }
        });
        t.register("</5/0>");
        t.command(
            json!({"requestID":611,"cacheID":611,"msgType":"observe","data":{"path":"/5/0/3"}}),
        );
        let req = t.recv_request();
        assert_eq!(req.code, Code::GET);
        // EMQX's test_send_coap_observe_ack, then test_send_coap_notif_con.
        for (ty, mid, seq, value) in [
            (MessageType::Ack, req.mid, 0, b"1"),
            (MessageType::Con, 0x5151, 1, b"2"),
        ] {
            let mut buf = Vec::new();
            let mut w = MessageWriter::new(&mut buf, ty, Code::CONTENT, mid, &req.token);
            w.uint_option(option::OBSERVE, seq)
                .uint_option(option::CONTENT_FORMAT, u32::from(TEXT))
                .payload(value);
            w.finish();
            t.dev.socket.send_to(&buf, t.dev.gateway).expect("send");
            let got = t.expect_published(1);
            if ty == MessageType::Ack {
                assert_eq!(got[0].json["msgType"], "observe");
                continue;
            }
            let topic = if dm_notify { "v1/up/dm" } else { "up/notify" };
            assert_eq!(got[0].topic, format!("lwm2m/{}/{topic}", t.ep));
            assert_eq!(got[0].json["msgType"], "notify");
            assert_eq!(got[0].json["requestID"], 611);
            assert_eq!(
                got[0].json["data"]["content"],
                json!([{"path":"/5/0/3","value":2}])
            );
        }
        t.gw.stop();
    }
}
