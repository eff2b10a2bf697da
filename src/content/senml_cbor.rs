//! SenML CBOR (`application/senml+cbor`, 112; RFC 8428 §6 with the LwM2M 1.1 rules of
//! Core §7.4.5): an array of maps keyed by the SenML integer labels (`bn` -2, `n` 0,
//! `v` 2, `vs` 3, `vb` 4, `vd` 8) and the text label `"vlo"` for object links. Text
//! labels of the other fields are accepted too; unknown labels are skipped. The encoders
//! write the requests of the composite operations in this format.

use std::fmt::Write as _;

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use super::cbor::{cbor_error, item};
use super::senml_json::{name_prefix, one_value, SenmlEntries};
use super::value::{parse_objlnk, Value};
use super::{format, ContentError, Entry, MAX_ENTRIES};
use crate::lwm2m::{Definitions, Path};

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
pub fn decode(payload: &[u8], registry: Definitions<'_>) -> Result<Vec<Entry>, ContentError> {
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

/// SenML CBOR integer labels (RFC 8428 §6) the encoders write.
mod label {
    pub(super) const BASE_NAME: i8 = -2;
    pub(super) const NAME: i8 = 0;
    pub(super) const VALUE: i8 = 2;
    pub(super) const STRING_VALUE: i8 = 3;
    pub(super) const BOOL_VALUE: i8 = 4;
    pub(super) const DATA_VALUE: i8 = 8;
    /// LwM2M's object link value has a text label only (Core §7.4.5).
    pub(super) const OBJLNK_VALUE: &str = "vlo";
}

/// `ids` as a SenML name, `/`-separated, with a leading `/` when `absolute`.
fn name(ids: &[u16], absolute: bool, out: &mut String) {
    out.clear();
    for (i, id) in ids.iter().enumerate() {
        if absolute || i > 0 {
            out.push('/');
        }
        let _ = write!(out, "{id}");
    }
}

/// Encodes the request of a composite read or observe as SenML CBOR: one record per path
/// with only its name, `[{0: "/3/0/0"}, {0: "/1/0"}]`, into `out` (appends); the CBOR
/// twin of [`super::encode_senml_names`].
pub fn encode_senml_cbor_names(paths: &[Path], out: &mut Vec<u8>) {
    let mut e = Encoder::new(out);
    let mut text = String::new();
    // Writing into a vector cannot fail.
    let _ = e.array(paths.len() as u64);
    for path in paths {
        name(path.ids(), true, &mut text);
        if text.is_empty() {
            text.push('/');
        }
        let _ = e.map(1).and_then(|e| e.i8(label::NAME)?.str(&text));
    }
}

/// Encodes entries as SenML CBOR, as [`super::encode_senml_json`] does SenML JSON: `bn` the
/// base path with a trailing `/` on the first record, `n` relative, Opaque as `vd` bytes,
/// Objlnk as `"vlo"`, Time and Unsigned as `v`, a Float as a 4-byte float when that is
/// exact; into `out` (appends).
pub fn encode_senml_cbor(
    entries: &[Entry],
    base: &Path,
    out: &mut Vec<u8>,
) -> Result<(), ContentError> {
    let prefix = name_prefix(entries, base)?;
    let mut e = Encoder::new(out);
    let mut text = String::new();
    // Writing into a vector cannot fail: the results are ignored.
    let _ = e.array(entries.len() as u64);
    for (i, entry) in entries.iter().enumerate() {
        let _ = e.map(if i == 0 { 3 } else { 2 });
        if i == 0 {
            name(prefix.ids(), true, &mut text);
            text.push('/');
            let _ = e.i8(label::BASE_NAME).and_then(|e| e.str(&text));
        }
        name(&entry.path.ids()[prefix.depth()..], false, &mut text);
        let _ = e.i8(label::NAME).and_then(|e| e.str(&text));
        let _ = match &entry.value {
            Value::Integer(n) | Value::Time(n) => e.i8(label::VALUE).and_then(|e| e.i64(*n)),
            Value::Unsigned(n) => e.i8(label::VALUE).and_then(|e| e.u64(*n)),
            Value::Float(f) if f64::from(*f as f32) == *f || f.is_nan() => {
                e.i8(label::VALUE).and_then(|e| e.f32(*f as f32))
            }
            Value::Float(f) => e.i8(label::VALUE).and_then(|e| e.f64(*f)),
            Value::Boolean(b) => e.i8(label::BOOL_VALUE).and_then(|e| e.bool(*b)),
            Value::String(s) | Value::CoreLink(s) => {
                e.i8(label::STRING_VALUE).and_then(|e| e.str(s))
            }
            Value::Opaque(bytes) => e.i8(label::DATA_VALUE).and_then(|e| e.bytes(bytes)),
            Value::Objlnk(o, inst) => {
                text.clear();
                let _ = write!(text, "{o}:{inst}");
                e.str(label::OBJLNK_VALUE).and_then(|e| e.str(&text))
            }
        };
    }
    Ok(())
}
