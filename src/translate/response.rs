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
use crate::content::{self, Content};

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
    content: Option<&Content>,
) {
    write_code(data.key("code"), code);
    data.str("codeMsg", code.name()).str("reqPath", req_path);
    if let Some(content) = content {
        content::write_content_json(data.key("content"), content);
        if matches!(content, Content::Undecoded { .. }) {
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
    content: Option<&Content>,
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
    content: Option<&Content>,
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
/// `{"requestID":7,"msgType":"frobnicate","data":{"code":"4.00","codeMsg":"bad_request","reason":"unknown msgType"}}`.
///
/// `msg_type` is omitted when the command had none that could be read.
pub fn write_error(
    out: &mut Vec<u8>,
    echo: &str,
    msg_type: Option<&str>,
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
    data.str("codeMsg", code.name()).str("reason", reason);
    data.end();
    msg.end();
}

/// Appends the error response for a command that failed to parse or build.
pub fn write_command_error(out: &mut Vec<u8>, err: &CommandError) {
    write_error(
        out,
        &err.echo,
        err.msg_type.as_deref(),
        err.code(),
        &err.reason,
    );
}
