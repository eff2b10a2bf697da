//! SenML JSON (`application/senml+json`, 110; RFC 8428 with the LwM2M 1.1 rules of Core
//! §7.4.5): an array of records, each name the base name `bn` (carried over to later
//! records until replaced) followed by `n`, each value one of `v` (number), `vs`
//! (string), `vb` (boolean), `vd` (base64url data) or `vlo` (object link `"A:B"`).
//!
//! Values describe themselves; where the object definition is more precise they are
//! coerced to it (an integral `v` for an Integer or Time resource, `vs` for Corelnk).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::json_out::write_f64;
use super::value::{decode_base64, parse_objlnk, Value};
use super::{format, push_entry, ContentError, Entry, MAX_ENTRIES};
use crate::lwm2m::{Definitions, Path, ResourceType};
use crate::translate::json::{write_i64, write_str, write_u64};

/// A JSON array read into at most [`MAX_ENTRIES`] elements; the rest are skipped without
/// being stored and `overflow` is set.
pub(crate) struct Capped<T> {
    pub(crate) items: Vec<T>,
    pub(crate) overflow: bool,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Capped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for CappedVisitor<T> {
            type Value = Capped<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Capped<T>, A::Error> {
                let mut items = Vec::new();
                while items.len() < MAX_ENTRIES {
                    match seq.next_element()? {
                        Some(item) => items.push(item),
                        None => {
                            return Ok(Capped {
                                items,
                                overflow: false,
                            })
                        }
                    }
                }
                let mut overflow = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    overflow = true;
                }
                Ok(Capped { items, overflow })
            }
        }
        deserializer.deserialize_seq(CappedVisitor(PhantomData))
    }
}

/// One SenML JSON record; fields LwM2M does not use (times, units, sums) are ignored.
#[derive(serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    bn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
    #[serde(default)]
    v: Option<serde_json::Number>,
    #[serde(borrow, default)]
    vs: Option<Cow<'a, str>>,
    #[serde(default)]
    vb: Option<bool>,
    #[serde(borrow, default)]
    vd: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    vlo: Option<Cow<'a, str>>,
}

/// Resolves SenML names against the carried-over base name and collects typed entries;
/// shared by SenML JSON and SenML CBOR.
pub(crate) struct SenmlEntries<'r> {
    registry: Definitions<'r>,
    format: u16,
    base_name: String,
    name: String,
    pub(crate) entries: Vec<Entry>,
}

impl<'r> SenmlEntries<'r> {
    pub(crate) fn new(registry: Definitions<'r>, format: u16) -> SenmlEntries<'r> {
        SenmlEntries {
            registry,
            format,
            base_name: String::new(),
            name: String::new(),
            entries: Vec::new(),
        }
    }

    /// Adds one record. A record without a value only sets the base name.
    pub(crate) fn record(
        &mut self,
        bn: Option<&str>,
        n: Option<&str>,
        value: Option<Value>,
    ) -> Result<(), ContentError> {
        if let Some(bn) = bn {
            self.base_name.clear();
            self.base_name.push_str(bn);
        }
        let Some(value) = value else {
            return Ok(());
        };
        self.name.clear();
        self.name.push_str(&self.base_name);
        self.name.push_str(n.unwrap_or(""));
        let path = match Path::parse(&self.name) {
            Ok(p) if self.name.starts_with('/') && p.depth() >= 3 => p,
            _ => {
                return Err(ContentError::BadPath {
                    format: format::name(self.format),
                    name: self.name.clone(),
                })
            }
        };
        let kind = match (path.object(), path.resource()) {
            (Some(o), Some(r)) => self.registry.resource(o, r).map(|d| d.kind),
            _ => None,
        };
        // A SenML string is a string: only OMA JSON, which has no data field, sends
        // Opaque values as base64 text.
        let value = match (kind, value) {
            (Some(ResourceType::Opaque), v @ Value::String(_)) => v,
            (_, v) => v.coerce(kind),
        };
        push_entry(&mut self.entries, Entry { path, value }, self.format)
    }
}

/// Sets `slot` to `value`, failing if a record already had a value.
pub(crate) fn one_value(
    slot: &mut Option<Value>,
    value: Value,
    format: u16,
) -> Result<(), ContentError> {
    if slot.is_some() {
        return Err(ContentError::invalid(
            format,
            "record has more than one value",
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// Decodes a SenML JSON payload into entries.
pub fn decode(payload: &[u8], registry: Definitions<'_>) -> Result<Vec<Entry>, ContentError> {
    const F: u16 = format::SENML_JSON;
    let records: Capped<Record<'_>> =
        serde_json::from_slice(payload).map_err(|e| ContentError::invalid(F, e.to_string()))?;
    if records.overflow {
        return Err(ContentError::TooManyEntries {
            format: format::name(F),
        });
    }
    let mut out = SenmlEntries::new(registry, F);
    for r in records.items {
        let mut value = None;
        if let Some(v) = &r.v {
            one_value(&mut value, Value::from_json_number(v), F)?;
        }
        if let Some(vs) = r.vs {
            one_value(&mut value, Value::String(vs.into_owned()), F)?;
        }
        if let Some(vb) = r.vb {
            one_value(&mut value, Value::Boolean(vb), F)?;
        }
        if let Some(vd) = &r.vd {
            let bytes =
                decode_base64(vd).ok_or_else(|| ContentError::invalid(F, "vd is not base64"))?;
            one_value(&mut value, Value::Opaque(bytes), F)?;
        }
        if let Some(vlo) = &r.vlo {
            let (o, i) = parse_objlnk(vlo)
                .ok_or_else(|| ContentError::invalid(F, "vlo is not an object link A:B"))?;
            one_value(&mut value, Value::Objlnk(o, i), F)?;
        }
        out.record(r.bn.as_deref(), r.n.as_deref(), value)?;
    }
    Ok(out.entries)
}

/// The base name for entries under `base` and the depth names start below: `base` when
/// every entry lies strictly below it, else its parent (a single-resource write).
pub(crate) fn name_prefix(entries: &[Entry], base: &Path) -> Result<Path, ContentError> {
    let mut prefix = *base;
    for e in entries {
        if !base.contains(&e.path) {
            return Err(ContentError::NotEncodable {
                path: e.path,
                reason: "not under the base path",
            });
        }
        if e.path.depth() < 3 {
            return Err(ContentError::NotEncodable {
                path: e.path,
                reason: "values need a resource path",
            });
        }
        if e.path == *base {
            prefix = Path::from_ids(&base.ids()[..base.depth() - 1]).unwrap_or(Path::ROOT);
        }
    }
    Ok(prefix)
}

/// Encodes the request of a composite read or observe (LwM2M 1.1 Core §5.4.6, Transport
/// §6.3.6): one record per path with only its name, `[{"n":"/3/0/0"},{"n":"/1/0"}]`, into
/// `out` (appends).
pub fn encode_senml_names(paths: &[Path], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"n\":\"");
        if path.depth() == 0 {
            out.push(b'/');
        }
        for id in path.ids() {
            out.push(b'/');
            write_u64(out, u64::from(*id));
        }
        out.extend_from_slice(b"\"}");
    }
    out.push(b']');
}

/// Encodes entries as SenML JSON (`bn` = the base path with a trailing `/`, `n`
/// relative; when an entry is the base path itself, `bn` is its parent) into `out`
/// (appends). Opaque is `vd` in unpadded base64url, Objlnk is `vlo`, Time and Unsigned
/// are `v`. Non-finite floats cannot be written.
pub fn encode_senml_json(
    entries: &[Entry],
    base: &Path,
    out: &mut Vec<u8>,
) -> Result<(), ContentError> {
    let prefix = name_prefix(entries, base)?;
    if let Some(e) = entries
        .iter()
        .find(|e| matches!(e.value, Value::Float(f) if !f.is_finite()))
    {
        return Err(ContentError::NotEncodable {
            path: e.path,
            reason: "SenML JSON has no non-finite numbers",
        });
    }
    out.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        if i == 0 {
            out.extend_from_slice(b"\"bn\":\"");
            for id in prefix.ids() {
                out.push(b'/');
                write_u64(out, u64::from(*id));
            }
            out.extend_from_slice(b"/\",");
        }
        out.extend_from_slice(b"\"n\":\"");
        for (k, id) in e.path.ids()[prefix.depth()..].iter().enumerate() {
            if k > 0 {
                out.push(b'/');
            }
            write_u64(out, u64::from(*id));
        }
        out.extend_from_slice(b"\",");
        match &e.value {
            Value::Integer(n) | Value::Time(n) => {
                out.extend_from_slice(b"\"v\":");
                write_i64(out, *n);
            }
            Value::Unsigned(n) => {
                out.extend_from_slice(b"\"v\":");
                write_u64(out, *n);
            }
            Value::Float(f) => {
                out.extend_from_slice(b"\"v\":");
                write_f64(out, *f);
            }
            Value::Boolean(b) => {
                out.extend_from_slice(if *b { b"\"vb\":true" } else { b"\"vb\":false" });
            }
            Value::String(s) | Value::CoreLink(s) => {
                out.extend_from_slice(b"\"vs\":");
                write_str(out, s);
            }
            Value::Opaque(bytes) => {
                out.extend_from_slice(b"\"vd\":\"");
                let start = out.len();
                out.resize(start + bytes.len().div_ceil(3) * 4, 0);
                let written = URL_SAFE_NO_PAD
                    .encode_slice(bytes, &mut out[start..])
                    .unwrap_or(0);
                out.truncate(start + written);
                out.push(b'"');
            }
            Value::Objlnk(o, inst) => {
                out.extend_from_slice(b"\"vlo\":\"");
                write_u64(out, u64::from(*o));
                out.push(b':');
                write_u64(out, u64::from(*inst));
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}
