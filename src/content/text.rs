//! `text/plain` (0): one resource (instance) value as UTF-8 text (LwM2M Core §7.4.1).

use std::io::Write as _;

use super::value::{Value, ValueRef};
use super::{format, Borrowed, Content, ContentError, Entry, EntryRef};
use crate::lwm2m::{Definitions, Path, ResourceType};

/// Decodes a text payload returned for `base`, typed by the definition of the resource;
/// a resource without a definition reads as a String, an Opaque resource is the payload's
/// bytes. A payload that cannot be placed at a resource (a request above resource level,
/// or text that is not UTF-8 for a resource without a definition) is kept as
/// [`Content::Undecoded`].
pub fn decode(
    payload: &[u8],
    base: &Path,
    registry: Definitions<'_>,
) -> Result<Content, ContentError> {
    let (Some(object), Some(resource)) = (base.object(), base.resource()) else {
        return Ok(undecoded(payload, base));
    };
    let kind = registry.resource(object, resource).map(|r| r.kind);
    if kind == Some(ResourceType::Opaque) {
        let value = Value::Opaque(payload.to_vec());
        return Ok(Content::Entries(vec![Entry { path: *base, value }]));
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        if kind.is_none() {
            return Ok(undecoded(payload, base));
        }
        return Err(ContentError::invalid(format::TEXT, "payload is not UTF-8"));
    };
    let value = Value::from_text(kind, text, base)?;
    Ok(Content::Entries(vec![Entry { path: *base, value }]))
}

/// [`decode`] into a borrowed value; see [`super::decode_borrowed`].
pub(crate) fn decode_borrowed<'a>(
    payload: &'a [u8],
    base: &Path,
    registry: Definitions<'_>,
    out: &mut Vec<EntryRef<'a>>,
) -> Result<Borrowed, ContentError> {
    let (Some(object), Some(resource)) = (base.object(), base.resource()) else {
        return Ok(Borrowed::Undecoded);
    };
    let kind = registry.resource(object, resource).map(|r| r.kind);
    if kind == Some(ResourceType::Opaque) {
        let value = ValueRef::Opaque(payload);
        out.push(EntryRef { path: *base, value });
        return Ok(Borrowed::Values);
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        if kind.is_none() {
            return Ok(Borrowed::Undecoded);
        }
        return Err(ContentError::invalid(format::TEXT, "payload is not UTF-8"));
    };
    let value = ValueRef::from_text(kind, text, base)?;
    out.push(EntryRef { path: *base, value });
    Ok(Borrowed::Values)
}

fn undecoded(payload: &[u8], base: &Path) -> Content {
    Content::Undecoded {
        path: *base,
        payload: payload.to_vec(),
    }
}

/// text/plain encoding of one value (for a single-resource write to a text-only device,
/// or the arguments of an execute): decimal numbers, Boolean `0`/`1`, Objlnk `A:B`,
/// Opaque as its own bytes (what [`decode`] reads back).
pub fn encode_text(value: &Value, out: &mut Vec<u8>) {
    // Writing to a Vec<u8> cannot fail.
    let _ = match value {
        Value::Integer(n) | Value::Time(n) => write!(out, "{n}"),
        Value::Unsigned(n) => write!(out, "{n}"),
        Value::Float(f) => write!(out, "{f}"),
        Value::Boolean(b) => write!(out, "{}", u8::from(*b)),
        Value::String(s) | Value::CoreLink(s) => {
            out.extend_from_slice(s.as_bytes());
            Ok(())
        }
        Value::Opaque(bytes) => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        Value::Objlnk(o, i) => write!(out, "{o}:{i}"),
    };
}
