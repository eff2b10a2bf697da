//! The §5 MQTT JSON `"content"` value of a decoded payload.

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::value::Value;
use super::Content;
use crate::lwm2m::Path;
use crate::translate::json::{write_i64, write_str, write_u64};

/// Writes the §5 `"content":...` value (not the key) for `content` into a JSON buffer:
///
/// - Entries: `[{"path":"/3/0/0","value":"EMQ"}, ...]` with Integer, Unsigned, Time and
///   finite Float as JSON numbers (non-finite floats as the strings `NaN`, `inf`, `-inf`),
///   Boolean as a JSON boolean, String and Corelnk as strings, Opaque as a base64 string,
///   Objlnk as `"A:B"`;
/// - Links: `["</3/0>","</3/0/1>"]`;
/// - Undecoded: `[{"path":"/32000/0","value":"<base64>"}]` (the caller adds
///   `"decoded":false` next to it).
pub fn write_content_json(out: &mut Vec<u8>, content: &Content) {
    out.push(b'[');
    match content {
        Content::Entries(entries) => {
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_path_value_start(out, &e.path);
                write_value(out, &e.value);
                out.push(b'}');
            }
        }
        Content::Links(links) => {
            for (i, link) in links.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, link);
            }
        }
        Content::Undecoded { path, payload } => {
            write_path_value_start(out, path);
            write_base64(out, payload);
            out.push(b'}');
        }
    }
    out.push(b']');
}

/// `{"path":"<path>","value":`
fn write_path_value_start(out: &mut Vec<u8>, path: &Path) {
    out.extend_from_slice(b"{\"path\":\"");
    if path.depth() == 0 {
        out.push(b'/');
    }
    for id in path.ids() {
        out.push(b'/');
        write_u64(out, u64::from(*id));
    }
    out.extend_from_slice(b"\",\"value\":");
}

/// Writes one value as §5 JSON.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Integer(n) | Value::Time(n) => write_i64(out, *n),
        Value::Unsigned(n) => write_u64(out, *n),
        Value::Float(f) if f.is_finite() => write_f64(out, *f),
        Value::Float(f) => {
            // Writing to a Vec<u8> cannot fail.
            let _ = write!(out, "\"{f}\"");
        }
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) | Value::CoreLink(s) => write_str(out, s),
        Value::Opaque(bytes) => write_base64(out, bytes),
        Value::Objlnk(o, i) => {
            out.push(b'"');
            write_u64(out, u64::from(*o));
            out.push(b':');
            write_u64(out, u64::from(*i));
            out.push(b'"');
        }
    }
}

/// Appends a finite `f` as a JSON number that parses back to the same `f64` (shortest
/// round-trip digits; an exponent for very large or small magnitudes).
pub(crate) fn write_f64(out: &mut Vec<u8>, f: f64) {
    debug_assert!(f.is_finite());
    // `Debug` prints the shortest round-trip form, always with a `.` or an exponent
    // (`1.0`, `1e300`, `1.5e-7`), each a valid JSON number. Writing to a Vec cannot fail.
    let _ = write!(out, "{f:?}");
}

/// Appends `bytes` as a padded standard base64 JSON string.
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}
