//! Uplink JSON about a command (SPEC §5): the device's response, notifications, the
//! empty ACK of a separate response, CoAP timeout and reset, and errors found before
//! anything was sent.
//!
//! Every message starts with the command's echo (its `requestID`, `cacheID`, ... as sent),
//! then `msgType` and `data`, appended to a reused buffer. The echo never holds `msgType`,
//! `data` or `seqNum` (see [`super::command::Command::echo`]), so no key is written twice.

use super::command::CommandError;
use super::json::ObjectWriter;
use crate::coap::Code;
use crate::content::{self, ContentRef};

/// Appends the code as `"2.05"`.
fn write_code(out: &mut Vec<u8>, code: Code) {
    out.push(b'"');
    out.push(b'0' + code.class());
    out.push(b'.');
    out.push(b'0' + code.detail() / 10);
    out.push(b'0' + code.detail() % 10);
    out.push(b'"');
}

/// Writes `code`, `codeMsg`, `reqPath` and the content (if any) into `data`.
fn write_result(
    data: &mut ObjectWriter<'_>,
    req_path: &str,
    code: Code,
    content: Option<ContentRef<'_>>,
) {
    write_code(data.key("code"), code);
    data.str("codeMsg", code.name()).str("reqPath", req_path);
    if let Some(content) = content {
        content::write_content_json(data.key("content"), content);
        if content.is_undecoded() {
            data.key("decoded").extend_from_slice(b"false");
        }
    }
}

/// Appends the response to a command:
/// `{"requestID":7,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/0","content":[...]}}`.
///
/// `content` is what the payload decoded to (links for a discover); an undecoded payload
/// adds `"decoded":false`.
pub fn write_response(
    out: &mut Vec<u8>,
    echo: &str,
    msg_type: &str,
    req_path: &str,
    code: Code,
    content: Option<ContentRef<'_>>,
) {
    let mut msg = ObjectWriter::begin(out);
    msg.raw_members(echo).str("msgType", msg_type);
    let mut data = ObjectWriter::begin(msg.key("data"));
    write_result(&mut data, req_path, code, content);
    data.end();
    msg.end();
}

/// Appends a notification of an observation:
/// `{"requestID":7,"msgType":"notify","seqNum":3,"data":{"code":"2.05",...}}`.
pub fn write_notify(
    out: &mut Vec<u8>,
    echo: &str,
    seq_num: u32,
    req_path: &str,
    code: Code,
    content: Option<ContentRef<'_>>,
) {
    let mut msg = ObjectWriter::begin(out);
    msg.raw_members(echo)
        .str("msgType", "notify")
        .u64("seqNum", u64::from(seq_num));
    let mut data = ObjectWriter::begin(msg.key("data"));
    write_result(&mut data, req_path, code, content);
    data.end();
    msg.end();
}

/// Appends the acknowledgement of a command queued for a sleeping device:
/// `{"requestID":7,"msgType":"queued","data":{"cmdType":"read","reqPath":"/3/0/0","ttl":300}}`.
/// The device's response follows when it wakes, or an `expired` error after `ttl` seconds.
pub fn write_queued(out: &mut Vec<u8>, echo: &str, msg_type: &str, req_path: &str, ttl: u64) {
    let mut msg = ObjectWriter::begin(out);
    msg.raw_members(echo).str("msgType", "queued");
    let mut data = ObjectWriter::begin(msg.key("data"));
    data.str("cmdType", msg_type)
        .str("reqPath", req_path)
        .u64("ttl", ttl);
    data.end();
    msg.end();
}

/// Appends data a device sent unasked (LwM2M 1.1 Send, `POST /dp`):
/// `{"msgType":"send","data":{"reqPath":"/dp","content":[...]}}`.
pub fn write_send(out: &mut Vec<u8>, content: ContentRef<'_>) {
    let mut msg = ObjectWriter::begin(out);
    msg.str("msgType", "send");
    let mut data = ObjectWriter::begin(msg.key("data"));
    data.str("reqPath", "/dp");
    content::write_content_json(data.key("content"), content);
    if content.is_undecoded() {
        data.key("decoded").extend_from_slice(b"false");
    }
    data.end();
    msg.end();
}

/// Appends `{<echo>,"msgType":<msg_type>,"data":{"path":<path>}}`.
fn write_path_message(out: &mut Vec<u8>, echo: &str, msg_type: &str, path: &str) {
    let mut msg = ObjectWriter::begin(out);
    msg.raw_members(echo).str("msgType", msg_type);
    let mut data = ObjectWriter::begin(msg.key("data"));
    data.str("path", path);
    data.end();
    msg.end();
}

/// Appends the message for an empty ACK (the device will answer separately):
/// `{"requestID":7,"msgType":"ack","data":{"path":"/3/0/0"}}`.
pub fn write_ack(out: &mut Vec<u8>, echo: &str, path: &str) {
    write_path_message(out, echo, "ack", path);
}

/// Appends the message for a request the device never answered:
/// `{"requestID":7,"msgType":"coap_timeout","data":{"path":"/3/0/0"}}`.
pub fn write_coap_timeout(out: &mut Vec<u8>, echo: &str, path: &str) {
    write_path_message(out, echo, "coap_timeout", path);
}

/// Appends the message for a request the device answered with a CoAP Reset:
/// `{"requestID":7,"msgType":"coap_reset","data":{"path":"/3/0/0"}}`.
pub fn write_coap_reset(out: &mut Vec<u8>, echo: &str, path: &str) {
    write_path_message(out, echo, "coap_reset", path);
}

/// Appends an error about a command that was not sent:
/// `{"requestID":7,"msgType":"write","data":{"code":"4.00","codeMsg":"bad_request","reqPath":"/3/0/1","reason":"bad hex in data.value"}}`.
///
/// `msg_type` is omitted when the command had none that could be read; `reqPath` is
/// always there, `null` when the command had no path that could be read (EMQX writes
/// `null` then too).
pub fn write_error(
    out: &mut Vec<u8>,
    echo: &str,
    msg_type: Option<&str>,
    req_path: Option<&str>,
    code: Code,
    reason: &str,
) {
    let mut msg = ObjectWriter::begin(out);
    msg.raw_members(echo);
    if let Some(msg_type) = msg_type {
        msg.str("msgType", msg_type);
    }
    let mut data = ObjectWriter::begin(msg.key("data"));
    write_code(data.key("code"), code);
    data.str("codeMsg", code.name());
    match req_path {
        Some(path) => {
            data.str("reqPath", path);
        }
        None => data.key("reqPath").extend_from_slice(b"null"),
    }
    data.str("reason", reason);
    data.end();
    msg.end();
}

/// Appends the error response for a command that failed to parse or build.
pub fn write_command_error(out: &mut Vec<u8>, err: &CommandError) {
    write_error(
        out,
        &err.echo,
        err.msg_type.as_deref(),
        err.req_path.as_deref(),
        err.code(),
        &err.reason,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{Content, Entry, Value};
    use crate::lwm2m::Path;
    use crate::translate::command::parse_command;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = b"[".to_vec();
        f(&mut out);
        assert_eq!(out.remove(0), b'[', "appends");
        let s = String::from_utf8(out).expect("utf-8");
        serde_json::from_str::<serde_json::Value>(&s).expect("valid JSON");
        s
    }

    fn entry(path: &str, value: Value) -> Entry {
        Entry {
            path: Path::parse(path).expect("path"),
            value,
        }
    }

    const ECHO: &str = r#""requestID":7"#;

    #[test]
    fn responses() {
        let read = Content::Entries(vec![entry("/3/0/0", Value::String("EMQ".into()))]);
        assert_eq!(
            text(|o| write_response(
                o,
                ECHO,
                "read",
                "/3/0/0",
                Code::CONTENT,
                Some((&read).into())
            )),
            r#"{"requestID":7,"msgType":"read","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/0","content":[{"path":"/3/0/0","value":"EMQ"}]}}"#
        );
        let links = Content::Links(vec!["</3/0>".into(), "</3/0/1>".into()]);
        assert_eq!(
            text(|o| write_response(
                o,
                ECHO,
                "discover",
                "/3/0",
                Code::CONTENT,
                Some((&links).into())
            )),
            r#"{"requestID":7,"msgType":"discover","data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0","content":["</3/0>","</3/0/1>"]}}"#
        );
        assert_eq!(
            text(|o| write_response(o, ECHO, "write", "/3/0/13", Code::CHANGED, None)),
            r#"{"requestID":7,"msgType":"write","data":{"code":"2.04","codeMsg":"changed","reqPath":"/3/0/13"}}"#
        );
        assert_eq!(
            text(|o| write_response(o, "", "delete", "/31024/20", Code::NOT_FOUND, None)),
            r#"{"msgType":"delete","data":{"code":"4.04","codeMsg":"not_found","reqPath":"/31024/20"}}"#
        );
        let notify = Content::Entries(vec![entry("/3/0/10", Value::Integer(4096))]);
        assert_eq!(
            text(|o| write_notify(o, ECHO, 3, "/3/0/10", Code::CONTENT, Some((&notify).into()))),
            r#"{"requestID":7,"msgType":"notify","seqNum":3,"data":{"code":"2.05","codeMsg":"content","reqPath":"/3/0/10","content":[{"path":"/3/0/10","value":4096}]}}"#
        );
    }

    #[test]
    fn undecoded_content_is_flagged() {
        let raw = Content::Undecoded {
            path: Path::parse("/32000/0").expect("path"),
            payload: vec![0],
        };
        let s = text(|o| {
            write_response(
                o,
                ECHO,
                "read",
                "/32000/0",
                Code::CONTENT,
                Some((&raw).into()),
            )
        });
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["data"]["decoded"], serde_json::Value::Bool(false));
        assert_eq!(v["data"]["content"][0]["path"], "/32000/0");
        assert_eq!(v["requestID"], 7);
    }

    #[test]
    fn ack_timeout_reset() {
        assert_eq!(
            text(|o| write_ack(o, ECHO, "/3/0/0")),
            r#"{"requestID":7,"msgType":"ack","data":{"path":"/3/0/0"}}"#
        );
        assert_eq!(
            text(|o| write_coap_timeout(o, ECHO, "/3/0/0")),
            r#"{"requestID":7,"msgType":"coap_timeout","data":{"path":"/3/0/0"}}"#
        );
        assert_eq!(
            text(|o| write_coap_reset(o, "", "/3/0/0")),
            r#"{"msgType":"coap_reset","data":{"path":"/3/0/0"}}"#
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            text(|o| write_error(
                o,
                ECHO,
                Some("frobnicate"),
                Some("/3/0/"),
                Code::BAD_REQUEST,
                "unknown msgType"
            )),
            r#"{"requestID":7,"msgType":"frobnicate","data":{"code":"4.00","codeMsg":"bad_request","reqPath":"/3/0/","reason":"unknown msgType"}}"#
        );
        assert_eq!(
            text(|o| write_error(
                o,
                "",
                None,
                None,
                Code::NOT_FOUND,
                "endpoint \"x\" is not registered"
            )),
            r#"{"data":{"code":"4.04","codeMsg":"not_found","reqPath":null,"reason":"endpoint \"x\" is not registered"}}"#
        );
        let err = parse_command(
            br#"{"requestID":7,"cacheID":"c","msgType":"read","data":{"path":"/3/x"}}"#,
        )
        .expect_err("bad path");
        assert_eq!(
            text(|o| write_command_error(o, &err)),
            r#"{"requestID":7,"cacheID":"c","msgType":"read","data":{"code":"4.00","codeMsg":"bad_request","reqPath":"/3/x","reason":"bad path \"/3/x\""}}"#
        );
        // A msgType that is not a string is not echoed, and none is written.
        let err = parse_command(br#"{"msgType":[1],"requestID":7}"#).expect_err("no msgType");
        assert_eq!(
            text(|o| write_command_error(o, &err)),
            r#"{"requestID":7,"data":{"code":"4.00","codeMsg":"bad_request","reqPath":null,"reason":"missing msgType"}}"#
        );
    }

    /// Top-level keys of a JSON object in `s`, duplicates included.
    fn top_keys(s: &str) -> Vec<String> {
        let mut de = serde_json::Deserializer::from_str(s);
        let pairs: Vec<(String, serde::de::IgnoredAny)> = serde::Deserialize::deserialize(&mut de)
            .map(|m: PairList| m.0)
            .expect("object");
        pairs.into_iter().map(|(k, _)| k).collect()
    }

    /// Collects map entries in order, keeping duplicates.
    struct PairList(Vec<(String, serde::de::IgnoredAny)>);

    impl<'de> serde::Deserialize<'de> for PairList {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = PairList;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<PairList, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = m.next_entry()? {
                        out.push(entry);
                    }
                    Ok(PairList(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    proptest::proptest! {
        #[test]
        fn uplink_keys_are_never_duplicated(
            keys in proptest::collection::vec(
                proptest::sample::select(&["requestID", "msgType", "data", "seqNum", "x", "msgType"][..]),
                0..6,
            ),
            msg_type_is_string in proptest::bool::ANY,
        ) {
            let mut json = String::from("{");
            for (i, k) in keys.iter().enumerate() {
                let v = match *k {
                    "msgType" if msg_type_is_string => "\"read\"",
                    "data" => r#"{"path":"/3/0"}"#,
                    _ => "1",
                };
                json += &format!("{}\"{k}\":{v}", if i > 0 { "," } else { "" });
            }
            json.push('}');
            let (echo, msg_type) = match parse_command(json.as_bytes()) {
                Ok(cmd) => (cmd.echo, Some(cmd.msg_type)),
                Err(e) => (e.echo, e.msg_type),
            };
            let mt = msg_type.as_deref().unwrap_or("read");
            for s in [
                text(|o| write_response(o, &echo, mt, "/3/0", Code::CHANGED, None)),
                text(|o| write_notify(o, &echo, 1, "/3/0", Code::CONTENT, None)),
                text(|o| write_ack(o, &echo, "/3/0")),
                text(|o| write_error(o, &echo, msg_type.as_deref(), None, Code::BAD_REQUEST, "r")),
            ] {
                let mut keys = top_keys(&s);
                let n = keys.len();
                keys.sort();
                keys.dedup();
                proptest::prop_assert_eq!(keys.len(), n, "{}", s);
            }
        }
    }
}
