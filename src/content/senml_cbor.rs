//! SenML CBOR (`application/senml+cbor`, 112; RFC 8428 §6 with the LwM2M 1.1 rules of
//! Core §7.4.5): an array of maps keyed by the SenML integer labels (`bn` -2, `n` 0,
//! `v` 2, `vs` 3, `vb` 4, `vd` 8) and the text label `"vlo"` for object links. Text
//! labels of the other fields are accepted too; unknown labels are skipped.

use minicbor::data::Type;
use minicbor::Decoder;

use super::cbor::{cbor_error, item};
use super::senml_json::{one_value, SenmlEntries};
use super::value::{parse_objlnk, Value};
use super::{format, ContentError, Entry, MAX_ENTRIES};
use crate::lwm2m::Registry;

const F: u16 = format::SENML_CBOR;

/// A SenML field LwM2M reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    BaseName,
    Name,
    Value,
    StringValue,
    BoolValue,
    DataValue,
    ObjlnkValue,
    Other,
}

impl Label {
    fn from_int(n: i64) -> Label {
        match n {
            -2 => Label::BaseName,
            0 => Label::Name,
            2 => Label::Value,
            3 => Label::StringValue,
            4 => Label::BoolValue,
            8 => Label::DataValue,
            _ => Label::Other,
        }
    }

    fn from_text(s: &str) -> Label {
        match s {
            "bn" => Label::BaseName,
            "n" => Label::Name,
            "v" => Label::Value,
            "vs" => Label::StringValue,
            "vb" => Label::BoolValue,
            "vd" => Label::DataValue,
            "vlo" => Label::ObjlnkValue,
            _ => Label::Other,
        }
    }
}

/// Counts down the elements of a definite or indefinite-length array or map.
struct Remaining(Option<u64>);

impl Remaining {
    /// True when another element follows (consuming the break of an indefinite one).
    fn next(&mut self, d: &mut Decoder<'_>) -> Result<bool, ContentError> {
        match &mut self.0 {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => {
                if d.datatype().map_err(|e| cbor_error(F, e))? == Type::Break {
                    d.skip().map_err(|e| cbor_error(F, e))?;
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }
}

/// Decodes a SenML CBOR payload into entries.
pub fn decode(payload: &[u8], registry: &Registry) -> Result<Vec<Entry>, ContentError> {
    let err = |e| cbor_error(F, e);
    let mut d = Decoder::new(payload);
    let len = d.array().map_err(err)?;
    if len.is_some_and(|n| n > MAX_ENTRIES as u64) {
        return Err(ContentError::TooManyEntries {
            format: format::name(F),
        });
    }
    let mut records = Remaining(len);
    let mut out = SenmlEntries::new(registry, F);
    let mut count = 0usize;
    while records.next(&mut d)? {
        count += 1;
        if count > MAX_ENTRIES {
            return Err(ContentError::TooManyEntries {
                format: format::name(F),
            });
        }
        let mut fields = Remaining(d.map().map_err(err)?);
        let (mut bn, mut n, mut value) = (None, None, None);
        while fields.next(&mut d)? {
            let label = match d.datatype().map_err(err)? {
                Type::String => Label::from_text(d.str().map_err(err)?),
                Type::U8
                | Type::U16
                | Type::U32
                | Type::U64
                | Type::I8
                | Type::I16
                | Type::I32
                | Type::I64
                | Type::Int => i64::try_from(i128::from(d.int().map_err(err)?))
                    .map_or(Label::Other, Label::from_int),
                _ => return Err(ContentError::invalid(F, "map key is not a SenML label")),
            };
            match label {
                Label::BaseName => bn = Some(d.str().map_err(err)?),
                Label::Name => n = Some(d.str().map_err(err)?),
                Label::Value => {
                    let v = item(&mut d, F)?;
                    if !matches!(v, Value::Integer(_) | Value::Unsigned(_) | Value::Float(_)) {
                        return Err(ContentError::invalid(F, "v is not a number"));
                    }
                    one_value(&mut value, v, F)?;
                }
                Label::StringValue => one_value(
                    &mut value,
                    Value::String(d.str().map_err(err)?.to_owned()),
                    F,
                )?,
                Label::BoolValue => {
                    one_value(&mut value, Value::Boolean(d.bool().map_err(err)?), F)?
                }
                Label::DataValue => one_value(
                    &mut value,
                    Value::Opaque(d.bytes().map_err(err)?.to_vec()),
                    F,
                )?,
                Label::ObjlnkValue => {
                    let (o, i) = parse_objlnk(d.str().map_err(err)?)
                        .ok_or_else(|| ContentError::invalid(F, "vlo is not an object link A:B"))?;
                    one_value(&mut value, Value::Objlnk(o, i), F)?;
                }
                Label::Other => d.skip().map_err(err)?,
            }
        }
        out.record(bn, n, value)?;
    }
    if d.position() != payload.len() {
        return Err(ContentError::invalid(F, "bytes after the record array"));
    }
    Ok(out.entries)
}
