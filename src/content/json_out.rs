//! The §5 MQTT JSON `"content"` value of a decoded payload.

use std::io::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::value::{Value, ValueRef};
use super::{Content, ContentRef};
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
pub fn write_content_json<'a>(out: &mut Vec<u8>, content: impl Into<ContentRef<'a>>) {
    out.push(b'[');
    match content.into() {
        ContentRef::Values(entries) => {
            for (i, e) in entries.iter().enumerate() {
                write_entry(out, i, &e.path, e.value);
            }
        }
        ContentRef::Content(Content::Entries(entries)) => {
            for (i, e) in entries.iter().enumerate() {
                write_entry(out, i, &e.path, e.value.as_value_ref());
            }
        }
        ContentRef::Content(Content::Links(links)) => {
            for (i, link) in links.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, link);
            }
        }
        ContentRef::Content(Content::Undecoded { path, payload }) => {
            write_undecoded(out, path, payload);
        }
        ContentRef::Undecoded { path, payload } => write_undecoded(out, &path, payload),
    }
    out.push(b']');
}

/// `{"path":...,"value":...}`, after a comma unless it is entry 0.
fn write_entry(out: &mut Vec<u8>, i: usize, path: &Path, value: ValueRef<'_>) {
    if i > 0 {
        out.push(b',');
    }
    write_path_value_start(out, path);
    write_value_ref(out, value);
    out.push(b'}');
}

fn write_undecoded(out: &mut Vec<u8>, path: &Path, payload: &[u8]) {
    write_path_value_start(out, path);
    write_base64(out, payload);
    out.push(b'}');
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
    write_value_ref(out, value.as_value_ref());
}

/// Writes one borrowed value as §5 JSON.
pub fn write_value_ref(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Integer(n) | ValueRef::Time(n) => write_i64(out, n),
        ValueRef::Unsigned(n) => write_u64(out, n),
        ValueRef::Float(f) if f.is_finite() => write_f64(out, f),
        ValueRef::Float(f) => {
            // Writing to a Vec<u8> cannot fail.
            let _ = write!(out, "\"{f}\"");
        }
        ValueRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        ValueRef::String(s) | ValueRef::CoreLink(s) => write_str(out, s),
        ValueRef::Opaque(bytes) => write_base64(out, bytes),
        ValueRef::Objlnk(o, i) => {
            out.push(b'"');
            write_u64(out, u64::from(o));
            out.push(b':');
            write_u64(out, u64::from(i));
            out.push(b'"');
        }
    }
}

/// Appends a finite `f` as a JSON number that parses back to the same `f64` (shortest
/// round-trip digits, always with a `.` or an exponent: `1.0`, `1e300`, `1.5e-7`).
pub(crate) fn write_f64(out: &mut Vec<u8>, f: f64) {
    debug_assert!(f.is_finite());
    let mut buf = ryu::Buffer::new();
    out.extend_from_slice(buf.format_finite(f).as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_text(f: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, f);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn floats_are_shortest_round_trip_json_numbers() {
        for (f, text) in [
            (22.25, "22.25"),
            (21.0, "21.0"),
            (-0.5, "-0.5"),
            (0.1, "0.1"),
            (1e300, "1e300"),
            (1.5e-7, "1.5e-7"),
        ] {
            assert_eq!(f64_text(f), text);
        }
        for f in [
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            123_456_789.123_456_78,
            1e16,
            1e-5,
        ] {
            let text = f64_text(f);
            let back: serde_json::Value = serde_json::from_str(&text).expect("JSON number");
            assert_eq!(back.as_f64(), Some(f), "{text}");
            assert!(text.contains(['.', 'e']), "{text} reads back as a float");
        }
    }
}
