//! CBOR (`application/cbor`, 60; LwM2M 1.1 Core §7.4.6): one resource (instance) value
//! as a single CBOR data item.

use minicbor::data::Type;
use minicbor::Decoder;

use super::value::Value;
use super::{format, Content, ContentError, Entry};
use crate::lwm2m::{Definitions, Path, ResourceType};

/// Most tags accepted in front of a value (LwM2M uses at most one, tag 1 for Time).
const MAX_TAGS: usize = 4;

/// Decodes a CBOR payload returned for `base` (a resource or resource instance path).
/// The item is self-describing and coerced to the definition's type where that is exact;
/// a text string for an Objlnk resource is read as `"A:B"`. A payload for a path above
/// resource level is kept as [`Content::Undecoded`].
pub fn decode(
    payload: &[u8],
    base: &Path,
    registry: Definitions<'_>,
) -> Result<Content, ContentError> {
    let (Some(object), Some(resource)) = (base.object(), base.resource()) else {
        return Ok(Content::Undecoded {
            path: *base,
            payload: payload.to_vec(),
        });
    };
    let kind = registry.resource(object, resource).map(|r| r.kind);
    let mut d = Decoder::new(payload);
    let value = item(&mut d, format::CBOR)?;
    if d.position() != payload.len() {
        return Err(ContentError::invalid(
            format::CBOR,
            "bytes after the data item",
        ));
    }
    let value = match (kind, value) {
        (Some(ResourceType::String), Value::Opaque(b)) => match String::from_utf8(b) {
            Ok(s) => Value::String(s),
            Err(e) => Value::Opaque(e.into_bytes()),
        },
        (_, v) => v.coerce(kind),
    };
    Ok(Content::Entries(vec![Entry { path: *base, value }]))
}

/// Maps a CBOR decoding error to a content error of `format`.
pub(crate) fn cbor_error(format: u16, e: minicbor::decode::Error) -> ContentError {
    if e.is_end_of_input() {
        ContentError::Truncated {
            format: format::name(format),
        }
    } else {
        ContentError::invalid(format, e.to_string())
    }
}

/// Reads one scalar data item: an integer, float, boolean, definite-length text or byte
/// string; tags in front are skipped.
pub(crate) fn item(d: &mut Decoder<'_>, format: u16) -> Result<Value, ContentError> {
    let err = |e| cbor_error(format, e);
    for _ in 0..=MAX_TAGS {
        let ty = d.datatype().map_err(err)?;
        return Ok(match ty {
            Type::Tag => {
                d.tag().map_err(err)?;
                continue;
            }
            Type::Bool => Value::Boolean(d.bool().map_err(err)?),
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64
            | Type::Int => {
                let n = i128::from(d.int().map_err(err)?);
                match i64::try_from(n) {
                    Ok(n) => Value::Integer(n),
                    Err(_) => Value::Unsigned(u64::try_from(n).map_err(|_| {
                        ContentError::invalid(format, "integer below the i64 range")
                    })?),
                }
            }
            Type::F16 => {
                let pos = d.position();
                let bits = d
                    .input()
                    .get(pos + 1..pos + 3)
                    .ok_or(ContentError::Truncated {
                        format: format::name(format),
                    })?;
                d.set_position(pos + 3);
                Value::Float(f16_to_f64(u16::from_be_bytes([bits[0], bits[1]])))
            }
            Type::F32 | Type::F64 => Value::Float(d.f64().map_err(err)?),
            Type::String => Value::String(d.str().map_err(err)?.to_owned()),
            Type::Bytes => Value::Opaque(d.bytes().map_err(err)?.to_vec()),
            other => {
                return Err(ContentError::invalid(
                    format,
                    format!("unsupported CBOR item {other}"),
                ))
            }
        });
    }
    Err(ContentError::invalid(format, "too many CBOR tags"))
}

/// Converts IEEE 754 half precision bits to `f64`.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let mant = f64::from(bits & 0x3ff);
    sign * match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    }
}
