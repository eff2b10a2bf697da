//! The LwM2M 1.1 composite commands: what they parse to, the errors they get, and the
//! FETCH / iPATCH request bytes they become.

use super::*;
use crate::coap::{option, Message, MessageType};
use crate::content::{self, Value};
use crate::lwm2m::Version;
use crate::translate::request::{build_request, write_coap_request};

fn path(s: &str) -> Path {
    Path::parse(s).expect("path")
}

fn parse(json: &str) -> Command {
    parse_command(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn error(json: &str) -> CommandError {
    parse_command(json.as_bytes()).expect_err(json)
}

/// The datagram for `json` to a 1.1 device registered with `alternate`, as a CON with
/// MID 0x1234 and token AA BB.
fn datagram(json: &str, alternate: &str) -> Vec<u8> {
    let req = build_request(&parse(json), alternate, Version::V1_1).expect("request");
    let mut buf = Vec::new();
    write_coap_request(&req, MessageType::Con, 0x1234, &[0xaa, 0xbb], &mut buf);
    buf
}

fn uri_path(msg: &Message<'_>) -> Vec<String> {
    msg.options()
        .filter(|(number, _)| *number == option::URI_PATH)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect()
}

const READ: &str = r#"{"requestID":1,"msgType":"read-composite","data":{"paths":["/3/0/0","/3/0/9","/3303/0/5700"]}}"#;

#[test]
fn read_composite_parses_to_its_paths_in_order() {
    let cmd = parse(READ);
    assert_eq!(cmd.echo, r#""requestID":1"#);
    assert_eq!(cmd.msg_type, "read-composite");
    assert_eq!(cmd.req_path, "/");
    assert_eq!(
        cmd.kind,
        CommandKind::ReadComposite {
            paths: vec![path("/3/0/0"), path("/3/0/9"), path("/3303/0/5700")],
            accept: content::format::SENML_JSON,
            format: content::format::SENML_JSON,
        }
    );
}

#[test]
fn read_composite_is_a_fetch_on_the_root_naming_the_paths_in_senml_json() {
    for (alternate, expected_path) in [("/", vec![]), ("/lwm2m", vec!["lwm2m".to_owned()])] {
        let bytes = datagram(READ, alternate);
        let msg = Message::parse(&bytes).expect("CoAP");
        assert_eq!(msg.code(), Code::FETCH);
        assert_eq!(msg.ty(), MessageType::Con);
        assert_eq!(
            uri_path(&msg),
            expected_path,
            "root after the alternate path"
        );
        assert_eq!(msg.content_format(), Some(content::format::SENML_JSON));
        assert_eq!(msg.observe(), None);
        assert_eq!(msg.accept(), Some(content::format::SENML_JSON));
        assert_eq!(
            msg.payload(),
            br#"[{"n":"/3/0/0"},{"n":"/3/0/9"},{"n":"/3303/0/5700"}]"#
        );
        let senml: serde_json::Value = serde_json::from_slice(msg.payload()).expect("JSON");
        assert_eq!(senml.as_array().map(Vec::len), Some(3));
    }
}

#[test]
fn read_composite_may_ask_for_senml_cbor_but_nothing_else() {
    let cmd = parse(
        r#"{"msgType":"read-composite","data":{"paths":["/3/0"],"accept":"application/senml+cbor"}}"#,
    );
    let req = build_request(&cmd, "/", Version::V1_1).expect("request");
    assert_eq!(req.accept, Some(content::format::SENML_CBOR));
    let err = error(r#"{"msgType":"read-composite","data":{"paths":["/3/0"],"accept":11542}}"#);
    assert_eq!(err.kind, CommandErrorKind::WrongFieldType);
}

#[test]
fn observe_and_cancel_composite_are_fetches_with_observe_0_and_1() {
    for (msg_type, observe) in [("observe-composite", 0), ("cancel-observe-composite", 1)] {
        let json = format!(
            r#"{{"requestID":5,"msgType":"{msg_type}","data":{{"paths":["/3/0/9","/1/0"]}}}}"#
        );
        let cmd = parse(&json);
        assert_eq!(cmd.req_path, "/");
        assert_eq!(cmd.kind.composite_paths(), [path("/3/0/9"), path("/1/0")]);
        let bytes = datagram(&json, "/");
        let msg = Message::parse(&bytes).expect("CoAP");
        assert_eq!(msg.code(), Code::FETCH, "{msg_type}");
        assert_eq!(msg.observe(), Some(observe), "{msg_type}");
        assert!(uri_path(&msg).is_empty());
        assert_eq!(msg.content_format(), Some(content::format::SENML_JSON));
        assert_eq!(msg.payload(), br#"[{"n":"/3/0/9"},{"n":"/1/0"}]"#);
    }
}

#[test]
fn write_composite_is_an_ipatch_of_senml_json_values() {
    let json = r#"{"requestID":2,"msgType":"write-composite","data":{"content":[
        {"path":"/3/0/14","type":"String","value":"+02"},
        {"path":"/1/0/1","type":"Integer","value":60}]}}"#;
    let cmd = parse(json);
    assert_eq!(cmd.req_path, "/");
    assert_eq!(
        cmd.kind,
        CommandKind::WriteComposite {
            entries: vec![
                Entry {
                    path: path("/1/0/1"),
                    value: Value::Integer(60)
                },
                Entry {
                    path: path("/3/0/14"),
                    value: Value::String("+02".into())
                },
            ],
            format: content::format::SENML_JSON,
        }
    );
    let bytes = datagram(json, "/lwm2m");
    let msg = Message::parse(&bytes).expect("CoAP");
    assert_eq!(msg.code(), Code::IPATCH);
    assert_eq!(uri_path(&msg), ["lwm2m"]);
    assert_eq!(msg.content_format(), Some(content::format::SENML_JSON));
    assert_eq!(
        msg.payload(),
        br#"[{"bn":"/","n":"1/0/1","v":60},{"n":"3/0/14","vs":"+02"}]"#
    );
    // The payload decodes back to the values at their absolute paths.
    let back = content::decode(
        content::format::SENML_JSON,
        msg.payload(),
        &Path::ROOT,
        &crate::lwm2m::Registry::default(),
    )
    .expect("SenML");
    assert_eq!(
        back,
        content::Content::Entries(vec![
            Entry {
                path: path("/1/0/1"),
                value: Value::Integer(60)
            },
            Entry {
                path: path("/3/0/14"),
                value: Value::String("+02".into())
            },
        ])
    );
}

#[test]
fn bad_composite_commands_are_errors_with_the_root_as_req_path() {
    let too_many: Vec<String> = (0..=MAX_COMPOSITE_PATHS)
        .map(|i| format!("\"/3/0/{i}\""))
        .collect();
    let too_many = format!(
        r#"{{"requestID":3,"msgType":"read-composite","data":{{"paths":[{}]}}}}"#,
        too_many.join(",")
    );
    for (json, kind) in [
        (
            r#"{"requestID":3,"msgType":"read-composite","data":{}}"#,
            CommandErrorKind::MissingField,
        ),
        (
            r#"{"requestID":3,"msgType":"observe-composite","data":{"paths":[]}}"#,
            CommandErrorKind::MissingField,
        ),
        (
            r#"{"requestID":3,"msgType":"read-composite","data":{"paths":"/3/0/0"}}"#,
            CommandErrorKind::WrongFieldType,
        ),
        (
            r#"{"requestID":3,"msgType":"read-composite","data":{"paths":[3]}}"#,
            CommandErrorKind::WrongFieldType,
        ),
        (
            r#"{"requestID":3,"msgType":"read-composite","data":{"paths":["/3/0/0","/3/x"]}}"#,
            CommandErrorKind::BadPath,
        ),
        (
            r#"{"requestID":3,"msgType":"read-composite","data":{"paths":["/"]}}"#,
            CommandErrorKind::WrongDepth,
        ),
        (
            r#"{"requestID":3,"msgType":"cancel-observe-composite","data":{"paths":["/3/0","/3/0/"]}}"#,
            CommandErrorKind::DuplicatePath,
        ),
        (too_many.as_str(), CommandErrorKind::TooManyPaths),
        (
            r#"{"requestID":3,"msgType":"write-composite","data":{"content":[{"type":"Integer","value":1}]}}"#,
            CommandErrorKind::MissingField,
        ),
        (
            r#"{"requestID":3,"msgType":"write-composite","data":{"content":[{"path":"/3/0","type":"Integer","value":1}]}}"#,
            CommandErrorKind::WrongDepth,
        ),
        (
            r#"{"requestID":3,"msgType":"write-composite","data":{}}"#,
            CommandErrorKind::MissingField,
        ),
    ] {
        let err = error(json);
        assert_eq!(err.kind, kind, "{json}: {}", err.reason);
        assert_eq!(err.req_path.as_deref(), Some("/"), "{json}");
        assert_eq!(err.echo, r#""requestID":3"#);
        assert_eq!(err.code(), Code::BAD_REQUEST);
    }
}

#[test]
fn the_longest_allowed_composite_request_fits_one_datagram() {
    let paths: Vec<String> = (0..MAX_COMPOSITE_PATHS)
        .map(|i| format!("\"/65535/65535/65535/{}\"", 65535 - i))
        .collect();
    let json = format!(
        r#"{{"msgType":"observe-composite","data":{{"paths":[{}]}}}}"#,
        paths.join(",")
    );
    let bytes = datagram(&json, "/");
    assert!(bytes.len() <= crate::translate::request::MAX_REQUEST_LEN);
}

#[test]
fn composite_fetches_name_their_paths_in_senml_cbor_when_asked() {
    for (msg_type, format) in [
        ("read-composite", r#""application/senml+cbor""#),
        ("observe-composite", "112"),
        ("cancel-observe-composite", r#""APPLICATION/SENML+CBOR""#),
    ] {
        let json = format!(
            r#"{{"msgType":"{msg_type}","data":{{"paths":["/3/0/9","/1"],"format":{format}}}}}"#
        );
        let bytes = datagram(&json, "/");
        let msg = Message::parse(&bytes).expect("CoAP");
        assert_eq!(msg.code(), Code::FETCH);
        assert_eq!(msg.content_format(), Some(content::format::SENML_CBOR));
        // [{0: "/3/0/9"}, {0: "/1"}]
        let mut expected = vec![0x82, 0xa1, 0x00, 0x66];
        expected.extend_from_slice(b"/3/0/9");
        expected.extend_from_slice(&[0xa1, 0x00, 0x62]);
        expected.extend_from_slice(b"/1");
        assert_eq!(msg.payload(), expected, "{msg_type}");
        // The format answered in is `accept`'s, apart from the request's.
        assert_eq!(msg.accept(), Some(content::format::SENML_JSON));
    }
    let err =
        error(r#"{"msgType":"read-composite","data":{"paths":["/3/0"],"format":"text/plain"}}"#);
    assert_eq!(err.kind, CommandErrorKind::WrongFieldType);
    assert!(err.reason.contains("data.format"), "{}", err.reason);
    let err = error(r#"{"msgType":"write-composite","data":{"format":true,"content":[]}}"#);
    assert!(err.reason.contains("data.format"), "{}", err.reason);
}

#[test]
fn write_composite_in_senml_cbor_decodes_back_to_its_values() {
    let json = r#"{"requestID":2,"msgType":"write-composite","data":{"format":112,"content":[
        {"path":"/3/0/14","type":"String","value":"+02"},
        {"path":"/1/0/1","type":"Integer","value":-60},
        {"path":"/1/0/6","type":"Boolean","value":true},
        {"path":"/3303/0/5700","type":"Float","value":22.5},
        {"path":"/3303/0/5701","type":"Float","value":0.1},
        {"path":"/5/0/0","type":"Opaque","value":"AAEC"},
        {"path":"/11/0/1/2","type":"Unsigned","value":18446744073709551615},
        {"path":"/1/0/10","type":"Objlnk","value":"3:0"}]}}"#;
    let cmd = parse(json);
    let CommandKind::WriteComposite { entries, format } = &cmd.kind else {
        panic!("{:?}", cmd.kind);
    };
    assert_eq!(*format, content::format::SENML_CBOR);
    let bytes = datagram(json, "/");
    let msg = Message::parse(&bytes).expect("CoAP");
    assert_eq!(msg.code(), Code::IPATCH);
    assert_eq!(msg.content_format(), Some(content::format::SENML_CBOR));
    let back = content::decode(
        content::format::SENML_CBOR,
        msg.payload(),
        &Path::ROOT,
        &crate::lwm2m::Registry::default(),
    )
    .expect("SenML CBOR");
    assert_eq!(back, content::Content::Entries(entries.clone()));
}

#[test]
fn the_rest_of_a_composite_notification_is_asked_for_with_a_fetch_without_observe() {
    use crate::translate::request::notification_blocks_request;
    let paths = [path("/3/0/9"), path("/3303/0/5700")];
    let req = notification_blocks_request(
        "/lwm2m",
        Path::ROOT,
        &paths,
        Some(content::format::SENML_CBOR),
    );
    let next = req.next_block(1, 6);
    let mut buf = Vec::new();
    write_coap_request(&next, MessageType::Con, 1, &[1; 8], &mut buf);
    let msg = Message::parse(&buf).expect("CoAP");
    assert_eq!(msg.code(), Code::FETCH);
    assert_eq!(msg.observe(), None);
    assert_eq!(uri_path(&msg), ["lwm2m"]);
    assert_eq!(msg.accept(), Some(content::format::SENML_CBOR));
    assert_eq!(msg.payload(), br#"[{"n":"/3/0/9"},{"n":"/3303/0/5700"}]"#);
    assert_eq!(msg.block2().map(|b| (b.num, b.szx)), Some((1, 6)));
    let single = notification_blocks_request("/", path("/3/0/0"), &[], Some(0)).next_block(2, 0);
    assert_eq!((single.method, single.observe), (Code::GET, None));
    assert!(single.payload.is_empty());
    assert_eq!(single.uri_path, ["3", "0", "0"]);
}
