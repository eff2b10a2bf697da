//! Each SPEC §5 command: what it parses to and the CoAP request bytes it becomes.

use super::*;
use crate::coap::Block;
use crate::coap::{Message, MessageType};
use crate::content::Value;
use crate::lwm2m::Version;
use crate::translate::request::{
    build_request, write_coap_request, CoapRequest, MAX_BLOCK1_BODY, MAX_REQUEST_LEN,
};
use proptest::prelude::*;

fn path(s: &str) -> Path {
    Path::parse(s).expect("path")
}

fn target(s: &str) -> Target {
    Target {
        path: path(s),
        query: Vec::new(),
    }
}

fn parse(json: &str) -> Command {
    parse_command(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn request(json: &str, alternate: &str, version: Version) -> CoapRequest {
    build_request(&parse(json), alternate, version).expect("request")
}

/// The datagram for `json`, as a CON with MID 0x1234 and token AA BB.
fn datagram(json: &str, alternate: &str, version: Version) -> Vec<u8> {
    let req = request(json, alternate, version);
    let mut buf = Vec::new();
    let n = write_coap_request(&req, MessageType::Con, 0x1234, &[0xaa, 0xbb], &mut buf);
    assert_eq!(n, buf.len());
    buf
}

/// Header (CON, TKL 2, `code`, MID 0x1234, token AA BB) followed by `rest`.
fn expect(code: &str, rest: &str) -> Vec<u8> {
    hex(&format!("42 {code} 12 34 aa bb {rest}"))
}

const V10: Version = Version::V1_0;

#[test]
fn read() {
    let cmd = parse(r#"{"requestID":1,"msgType":"read","data":{"path":"/3/0/0"}}"#);
    assert_eq!(cmd.echo, r#""requestID":1"#);
    assert_eq!(cmd.msg_type, "read");
    assert_eq!(
        cmd.kind,
        CommandKind::Read {
            target: target("/3/0/0"),
            accept: None
        }
    );
    assert_eq!(cmd.req_path, "/3/0/0");
    let json = r#"{"requestID":1,"msgType":"read","data":{"path":"/3/0/0"}}"#;
    assert_eq!(datagram(json, "/", V10), expect("01", "b1 33 01 30 01 30"));
    let req = request(json, "/", V10);
    assert_eq!(req.req_path, "/3/0/0");
    assert_eq!(
        (req.accept, req.content_format, req.observe),
        (None, None, None)
    );
}

#[test]
fn read_with_alternate_path_query_and_accept() {
    let json =
        r#"{"msgType":"read","data":{"path":"/3/0?a=1&&b","accept":"application/senml+json"}}"#;
    let cmd = parse(json);
    assert_eq!(cmd.echo, "");
    assert_eq!(
        cmd.kind,
        CommandKind::Read {
            target: Target {
                path: path("/3/0"),
                query: vec!["a=1".into(), "b".into()]
            },
            accept: Some(110)
        }
    );
    let req = request(json, "/lwm2m", V10);
    assert_eq!(req.uri_path, ["lwm2m", "3", "0"]);
    assert_eq!(req.req_path, "/3/0");
    // Uri-Path lwm2m/3/0, Uri-Query a=1, b, Accept 110.
    assert_eq!(
        datagram(json, "/lwm2m", V10),
        expect(
            "01",
            "b5 6c 77 6d 32 6d 01 33 01 30 43 61 3d 31 01 62 21 6e"
        )
    );
    let numeric = parse(r#"{"msgType":"observe","data":{"path":"/3","accept":11542}}"#);
    assert!(matches!(
        numeric.kind,
        CommandKind::Observe {
            accept: Some(11542),
            ..
        }
    ));
}

#[test]
fn discover() {
    let json = r#"{"requestID":2,"msgType":"discover","data":{"path":"/3/0"}}"#;
    assert_eq!(
        parse(json).kind,
        CommandKind::Discover {
            target: target("/3/0")
        }
    );
    // Accept (17) = 40, delta 6 from Uri-Path.
    assert_eq!(datagram(json, "/", V10), expect("01", "b1 33 01 30 61 28"));
}

#[test]
fn single_write_tlv() {
    let json = r#"{"requestID":3,"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":"1700000000"}}"#;
    assert_eq!(
        parse(json).kind,
        CommandKind::Write {
            base: target("/3/0/13"),
            entries: vec![Entry {
                path: path("/3/0/13"),
                value: Value::Integer(1_700_000_000)
            }],
            replace: true
        }
    );
    // PUT /3/0/13, Content-Format 11542, TLV resource 13 = 4-byte integer.
    assert_eq!(
        datagram(json, "/", V10),
        expect("03", "b1 33 01 30 02 31 33 12 2d 16 ff c4 0d 65 53 f1 00")
    );
    // The value may be a JSON number too.
    let native = r#"{"requestID":3,"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":1700000000}}"#;
    assert_eq!(datagram(native, "/", V10), datagram(json, "/", V10));
}

#[test]
fn single_write_resource_instance() {
    let json = r#"{"msgType":"write","data":{"path":"/3/0/7/1","type":"Integer","value":3800}}"#;
    let req = request(json, "/", V10);
    assert_eq!(req.method, Code::PUT);
    assert_eq!(req.uri_path, ["3", "0", "7", "1"]);
    // A resource instance TLV: id 1, 2-byte value.
    assert_eq!(req.payload, hex("42 01 0e d8"));
}

/// Resolves SenML records to (name, numeric value) pairs.
fn senml_values(payload: &[u8]) -> Vec<(String, f64)> {
    let records: serde_json::Value = serde_json::from_slice(payload).expect("SenML JSON");
    let mut bn = String::new();
    let mut out = Vec::new();
    for r in records.as_array().expect("array") {
        if let Some(b) = r.get("bn").and_then(|b| b.as_str()) {
            bn = b.to_owned();
        }
        let n = r.get("n").and_then(|n| n.as_str()).unwrap_or("");
        let v = r.get("v").and_then(|v| v.as_f64()).expect("v");
        out.push((format!("{bn}{n}"), v));
    }
    out
}

#[test]
fn single_write_senml_for_1_1() {
    let json =
        r#"{"msgType":"write","data":{"path":"/3/0/13","type":"Integer","value":"1700000000"}}"#;
    for version in [Version::V1_1, Version::V1_2] {
        let req = request(json, "/", version);
        assert_eq!((req.method, req.content_format), (Code::PUT, Some(110)));
        assert_eq!(
            senml_values(&req.payload),
            [("/3/0/13".to_owned(), 1_700_000_000.0)]
        );
    }
}

#[test]
fn batch_write_is_a_partial_update() {
    let json = r#"{"requestID":4,"msgType":"write","data":{"basePath":"/3/0","content":[{"path":"14","type":"String","value":"+02"}]}}"#;
    assert_eq!(
        parse(json).kind,
        CommandKind::Write {
            base: target("/3/0"),
            entries: vec![Entry {
                path: path("/3/0/14"),
                value: Value::String("+02".into())
            }],
            replace: false
        }
    );
    assert_eq!(
        datagram(json, "/", V10),
        expect("02", "b1 33 01 30 12 2d 16 ff c3 0e 2b 30 32")
    );
    let replace = parse(
        r#"{"msgType":"write","data":{"basePath":"/3/0","replace":true,"content":[{"path":"/14","type":"String","value":"+02"}]}}"#,
    );
    assert!(matches!(
        replace.kind,
        CommandKind::Write { replace: true, .. }
    ));
}

/// EMQX's case20_write: a content item without `path` writes the `basePath` resource,
/// here a Float as an 8-byte TLV value, and reqPath is the basePath.
#[test]
fn content_item_without_path_writes_the_base_path() {
    let json = r#"{"requestID":307,"msgType":"write","data":{"basePath":"/3/0/13","content":[{"type":"Float","value":"12345.0"}]}}"#;
    let cmd = parse(json);
    assert_eq!(cmd.req_path, "/3/0/13");
    // PUT /3/0/13, TLV resource 13 holding 12345.0 as a float (EMQX sends the same bytes).
    assert_eq!(
        datagram(json, "/", V10),
        expect("03", "b1 33 01 30 02 31 33 12 2d 16 ff c4 0d 46 40 e4 00")
    );
}

/// EMQX's case23 and case26: items at one path — the last one wins; reqPath keeps the
/// trailing slash of EMQX's case21.
#[test]
fn duplicate_content_paths_last_one_wins() {
    let json = r#"{"msgType":"write","data":{"basePath":"/3/0/22","content":[{"path":"0","type":"Objlnk","value":"1:2"},{"path":"1","type":"Objlnk","value":"1:3"},{"path":"1","type":"Objlnk","value":"1:4"}]}}"#;
    let CommandKind::Write { entries, .. } = parse(json).kind else {
        panic!("write")
    };
    let got: Vec<(String, Value)> = entries
        .iter()
        .map(|e| (e.path.to_string(), e.value.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("/3/0/22/0".to_owned(), Value::Objlnk(1, 2)),
            ("/3/0/22/1".to_owned(), Value::Objlnk(1, 4)),
        ]
    );
    let json = r#"{"msgType":"write","data":{"basePath":"/3/0/","content":[{"path":"13","type":"Time","value":10},{"path":"/6/0","type":"Integer","value":1},{"path":"13","type":"Time","value":11}]}}"#;
    let cmd = parse(json);
    assert_eq!(cmd.req_path, "/3/0/");
    let CommandKind::Write { entries, .. } = cmd.kind else {
        panic!("write")
    };
    assert_eq!(
        entries.iter().map(|e| &e.value).collect::<Vec<_>>(),
        [&Value::Integer(1), &Value::Time(11)]
    );
}

/// A write that does not fit one datagram is sent in Block1 blocks of 1024 bytes; one
/// whose body passes [`MAX_BLOCK1_BODY`] is refused with 4.13, naming the limit.
#[test]
fn write_larger_than_a_datagram_goes_block_wise_up_to_the_limit() {
    let big = "A".repeat(3000);
    let json = format!(
        r#"{{"requestID":9,"msgType":"write","data":{{"path":"/3/0/1","type":"String","value":"{big}"}}}}"#
    );
    let req = build_request(&parse(&json), "/", V10).expect("block-wise");
    let first = Block {
        num: 0,
        more: true,
        szx: 6,
    };
    assert_eq!(req.block1, Some(first));
    assert_eq!(req.body(), &req.payload[..1024]);
    let mut dgram = Vec::new();
    let len = write_coap_request(&req, MessageType::Con, 1, &[0; 8], &mut dgram);
    assert!(len <= MAX_REQUEST_LEN, "{len}");
    let msg = Message::parse(&dgram).expect("parse");
    assert_eq!(msg.block1(), Some(first));
    assert_eq!(msg.size1(), Some(req.payload.len() as u32));
    // Up to the datagram, it is sent whole.
    let fits = "A".repeat(1100);
    let json = format!(
        r#"{{"msgType":"write","data":{{"path":"/3/0/1","type":"String","value":"{fits}"}}}}"#
    );
    assert_eq!(
        build_request(&parse(&json), "/", V10).expect("fits").block1,
        None
    );
    // Beyond the block-wise limit, refused.
    let huge = "A".repeat(MAX_BLOCK1_BODY + 1);
    let json = format!(
        r#"{{"requestID":9,"msgType":"write","data":{{"path":"/3/0/1","type":"String","value":"{huge}"}}}}"#
    );
    let err = build_request(&parse(&json), "/", V10).expect_err("too large");
    assert_eq!(err.kind, CommandErrorKind::RequestTooLarge);
    assert_eq!(err.code(), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(err.req_path.as_deref(), Some("/3/0/1"));
    assert_eq!(err.echo, r#""requestID":9"#);
    assert!(err.reason.contains("524288"), "{}", err.reason);
}

#[test]
fn batch_write_of_a_multiple_resource_replaces_it() {
    let json = r#"{"msgType":"write","data":{"basePath":"/3/0/7","content":[{"path":"1","type":"Integer","value":5000},{"path":"0","type":"Integer","value":"3800"}]}}"#;
    let cmd = parse(json);
    let CommandKind::Write {
        entries, replace, ..
    } = &cmd.kind
    else {
        panic!("{cmd:?}")
    };
    assert!(replace);
    let paths: Vec<String> = entries.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(paths, ["/3/0/7/0", "/3/0/7/1"]);
    // PUT /3/0/7 with a multiple-resource TLV holding instances 0 and 1.
    assert_eq!(
        datagram(json, "/", V10),
        expect(
            "03",
            "b1 33 01 30 01 37 12 2d 16 ff 88 07 08 42 00 0e d8 42 01 13 88"
        )
    );
}

#[test]
fn write_attr() {
    let json = r#"{"requestID":5,"msgType":"write-attr","data":{"path":"/3/0/9","pmin":"1","pmax":"5","gt":"50","lt":"10","st":"1"}}"#;
    assert_eq!(
        parse(json).kind,
        CommandKind::WriteAttr {
            target: target("/3/0/9"),
            attrs: ["pmin=1", "pmax=5", "gt=50", "lt=10", "st=1"]
                .map(String::from)
                .to_vec()
        }
    );
    // PUT, Uri-Query (15) options, no payload.
    assert_eq!(
        datagram(json, "/", V10),
        expect(
            "03",
            "b1 33 01 30 01 39 46 70 6d 69 6e 3d 31 06 70 6d 61 78 3d 35 \
             05 67 74 3d 35 30 05 6c 74 3d 31 30 04 73 74 3d 31"
        )
    );
    let mixed = parse(
        r#"{"msgType":"write-attr","data":{"path":"/3/0/9?x=1","epmax":60,"gt":-2.5,"pmin":"","st":0.5,"unknown":"1"}}"#,
    );
    assert_eq!(
        mixed.kind,
        CommandKind::WriteAttr {
            target: Target {
                path: path("/3/0/9"),
                query: vec!["x=1".into()]
            },
            attrs: ["pmin", "gt=-2.5", "st=0.5", "epmax=60"]
                .map(String::from)
                .to_vec()
        }
    );
    let req = build_request(&mixed, "/", V10).expect("request");
    assert_eq!(
        req.uri_query,
        ["x=1", "pmin", "gt=-2.5", "st=0.5", "epmax=60"]
    );
    assert!(req.payload.is_empty() && req.content_format.is_none());
}

#[test]
fn execute() {
    let json = r#"{"requestID":6,"msgType":"execute","data":{"path":"/3/0/4","args":""}}"#;
    assert_eq!(
        parse(json).kind,
        CommandKind::Execute {
            target: target("/3/0/4"),
            args: String::new()
        }
    );
    // POST without payload or Content-Format.
    assert_eq!(datagram(json, "/", V10), expect("02", "b1 33 01 30 01 34"));
    let args = r#"{"msgType":"execute","data":{"path":"/3/0/4","args":"0='a'"}}"#;
    // Content-Format 0 is the empty uint.
    assert_eq!(
        datagram(args, "/", V10),
        expect("02", "b1 33 01 30 01 34 10 ff 30 3d 27 61 27")
    );
    for absent in [
        r#"{"msgType":"execute","data":{"path":"/3/0/4"}}"#,
        r#"{"msgType":"execute","data":{"path":"/3/0/4","args":null}}"#,
        r#"{"msgType":"execute","data":{"path":"/3/0/4","args":"undefined"}}"#,
    ] {
        assert!(
            matches!(parse(absent).kind, CommandKind::Execute { ref args, .. } if args.is_empty())
        );
    }
}

#[test]
fn create() {
    let json = r#"{"requestID":7,"msgType":"create","data":{"basePath":"/31024","content":[{"path":"20/1","type":"Integer","value":"3"}]}}"#;
    assert_eq!(
        parse(json).kind,
        CommandKind::Create {
            base: target("/31024"),
            entries: vec![Entry {
                path: path("/31024/20/1"),
                value: Value::Integer(3)
            }]
        }
    );
    // POST /31024, TLV object instance 20 holding resource 1 = 3.
    assert_eq!(
        datagram(json, "/", V10),
        expect("02", "b5 33 31 30 32 34 12 2d 16 ff 03 14 c1 01 03")
    );
    let req = request(json, "/", Version::V1_1);
    assert_eq!(req.content_format, Some(110));
    assert_eq!(
        senml_values(&req.payload),
        [("/31024/20/1".to_owned(), 3.0)]
    );
}

#[test]
fn delete_observe_cancel() {
    let delete = r#"{"requestID":8,"msgType":"delete","data":{"path":"/31024/20"}}"#;
    assert_eq!(
        parse(delete).kind,
        CommandKind::Delete {
            target: target("/31024/20")
        }
    );
    assert_eq!(
        datagram(delete, "/", V10),
        expect("04", "b5 33 31 30 32 34 02 32 30")
    );
    let observe = r#"{"requestID":9,"msgType":"observe","data":{"path":"/3/0/9"}}"#;
    assert_eq!(
        parse(observe).kind,
        CommandKind::Observe {
            target: target("/3/0/9"),
            accept: None
        }
    );
    // Observe (6) = 0 is the empty uint; Uri-Path follows with delta 5.
    assert_eq!(
        datagram(observe, "/", V10),
        expect("01", "60 51 33 01 30 01 39")
    );
    let cancel = r#"{"requestID":10,"msgType":"cancel-observe","data":{"path":"/3/0/9"}}"#;
    assert_eq!(
        parse(cancel).kind,
        CommandKind::CancelObserve {
            target: target("/3/0/9")
        }
    );
    assert_eq!(
        datagram(cancel, "/", V10),
        expect("01", "61 01 51 33 01 30 01 39")
    );
}

#[test]
fn typed_values() {
    let value = |ty: &str, v: &str, extra: &str| {
        let json = format!(
            r#"{{{extra}"msgType":"write","data":{{"path":"/1/0/1","type":"{ty}","value":{v}}}}}"#
        );
        match parse(&json).kind {
            CommandKind::Write { entries, .. } => entries[0].value.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(value("Integer", "-5", ""), Value::Integer(-5));
    assert_eq!(value("integer", r#""7""#, ""), Value::Integer(7));
    assert_eq!(value("Unsigned", "7", ""), Value::Unsigned(7));
    assert_eq!(value("Float", "1.5", ""), Value::Float(1.5));
    assert_eq!(value("Float", r#""1.5""#, ""), Value::Float(1.5));
    assert_eq!(value("Boolean", "true", ""), Value::Boolean(true));
    assert_eq!(value("Boolean", r#""false""#, ""), Value::Boolean(false));
    assert_eq!(value("Time", "1700000000", ""), Value::Time(1_700_000_000));
    assert_eq!(value("Objlnk", r#""3:0""#, ""), Value::Objlnk(3, 0));
    assert_eq!(value("Opaque", r#""AQI=""#, ""), Value::Opaque(vec![1, 2]));
    // EMQX reads "encoding" at the top level; it is also echoed.
    assert_eq!(
        value("Opaque", r#""0102""#, r#""encoding":"hex","#),
        Value::Opaque(vec![1, 2])
    );
    assert_eq!(
        value("String", r#""4142""#, r#""encoding":"HEX","#),
        Value::String("AB".into())
    );
    let in_data = parse(
        r#"{"msgType":"write","data":{"path":"/1/0/1","type":"Opaque","value":"ff","encoding":"hex"}}"#,
    );
    assert!(
        matches!(&in_data.kind, CommandKind::Write { entries, .. } if entries[0].value == Value::Opaque(vec![0xff]))
    );
    let per_item = parse(
        r#"{"msgType":"write","data":{"basePath":"/1/0","content":[{"path":"1","type":"Opaque","value":"00ff","encoding":"hex"},{"path":"2","type":"Opaque","value":"AA=="}]}}"#,
    );
    let CommandKind::Write { entries, .. } = per_item.kind else {
        panic!()
    };
    assert_eq!(entries[0].value, Value::Opaque(vec![0, 0xff]));
    assert_eq!(entries[1].value, Value::Opaque(vec![0]));
}

#[test]
fn echo_is_verbatim() {
    let cmd = parse(
        r#" {"requestID":7, "reqID" : "a\"b", "cacheID":"x","mheaders":{"ttl":5, "k":[1, 2]},"msgType":"read","data":{"path":"3/0/0/"},"z":null} "#,
    );
    assert_eq!(
        cmd.echo,
        r#""requestID":7,"reqID":"a\"b","cacheID":"x","mheaders":{"ttl":5, "k":[1, 2]},"z":null"#
    );
    // reqPath is the path as written, up to its query (EMQX echoes it verbatim).
    assert_eq!(cmd.req_path, "3/0/0/");
    // Duplicates keep the last value; seqNum is written by notify itself.
    let dup = parse(
        r#"{"requestID":1,"seqNum":4,"msgType":"x","msgType":"read","requestID":2,"data":{"path":"/3"}}"#,
    );
    assert_eq!(dup.echo, r#""requestID":2"#);
    assert_eq!(dup.msg_type, "read");
    // Escaped keys are re-escaped the same way.
    let esc = parse(r#"{"a\u0041\n":1,"msgType":"read","data":{"path":"/3"}}"#);
    assert_eq!(esc.echo, r#""aA\n":1"#);
}

/// Builds and encodes a request, and checks it decodes back to what was built.
fn check_request(cmd: &Command) {
    for version in [Version::V1_0, Version::V1_1] {
        let Ok(req) = build_request(cmd, "/alt/x", version) else {
            continue;
        };
        let mut buf = vec![0xee];
        write_coap_request(&req, MessageType::Con, 7, b"tok", &mut buf);
        let msg = Message::parse(&buf[1..]).expect("decodes");
        assert_eq!(msg.code(), req.method);
        let path: Vec<&[u8]> = msg.uri_path().collect();
        let want: Vec<&[u8]> = req.uri_path.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(path, want);
        assert_eq!(msg.observe(), req.observe);
        assert_eq!(msg.content_format(), req.content_format);
        assert_eq!(msg.accept(), req.accept);
        assert_eq!(msg.payload(), &req.payload[..]);
    }
}

const MSG_TYPES: [&str; 10] = [
    "read",
    "discover",
    "write",
    "write-attr",
    "execute",
    "create",
    "delete",
    "observe",
    "cancel-observe",
    "other",
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(cmd) = parse_command(&bytes) {
            check_request(&cmd);
        }
    }

    #[test]
    fn arbitrary_commands_never_panic(
        msg_type in proptest::sample::select(&MSG_TYPES[..]),
        path in "[/0-9?=&a]{0,16}",
        ty in proptest::sample::select(&["Integer", "Float", "Opaque", "String", "Boolean", "Objlnk", "x"][..]),
        value in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[0-9a-fA-F:.=-]{0,12}".prop_map(serde_json::Value::from),
        ],
        rel in "[/0-9]{0,8}",
        hex in any::<bool>(),
    ) {
        let json = serde_json::json!({
            "requestID": 1,
            "encoding": if hex { "hex" } else { "plain" },
            "msgType": msg_type,
            "data": {
                "path": path, "basePath": path, "type": ty, "value": value,
                "pmin": value, "gt": value, "args": value,
                "content": [{"path": rel, "type": ty, "value": value}],
            },
        });
        let bytes = serde_json::to_vec(&json).expect("json");
        // serde_json writes the keys sorted.
        let echo = format!(r#""encoding":"{}","requestID":1"#, if hex { "hex" } else { "plain" });
        match parse_command(&bytes) {
            Ok(cmd) => {
                prop_assert_eq!(&cmd.echo, &echo);
                check_request(&cmd);
            }
            Err(e) => {
                prop_assert_eq!(&e.echo, &echo);
                prop_assert!(!e.reason.is_empty());
            }
        }
    }
}
