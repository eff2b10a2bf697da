//! OMA LwM2M TLV (`application/vnd.oma.lwm2m+tlv`, 11542; LwM2M Core §7.4.3).
//!
//! Each TLV is a type byte, an 8- or 16-bit identifier, an optional 8/16/24-bit length,
//! and the value:
//!
//! ```text
//! type byte: 7-6 kind (00 object instance, 01 resource instance, 10 multiple resource,
//!                      11 resource with value)
//!            5   identifier is 16 bits (else 8)
//!            4-3 length field: 00 none (length in bits 2-0), 01 8-bit, 10 16-bit, 11 24-bit
//!            2-0 length when 4-3 is 00
//! ```
//!
//! Object instances and multiple resources nest their children; values carry no type and
//! are typed by the object definition.

use super::value::{Value, ValueRef};
use super::{format, push_entry, Borrowed, Content, ContentError, Entry, EntryRef};
use crate::lwm2m::{Definitions, Path};

/// Largest value length the 24-bit length field can express.
const MAX_TLV_LENGTH: usize = (1 << 24) - 1;

/// What a TLV identifies (bits 7-6 of the type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvKind {
    /// An object instance holding resource and multiple resource TLVs.
    ObjectInstance,
    /// One instance of a multiple resource, with its value.
    ResourceInstance,
    /// A multiple resource holding resource instance TLVs.
    MultipleResource,
    /// A single resource with its value.
    Resource,
}

impl TlvKind {
    fn bits(self) -> u8 {
        match self {
            TlvKind::ObjectInstance => 0b00,
            TlvKind::ResourceInstance => 0b01,
            TlvKind::MultipleResource => 0b10,
            TlvKind::Resource => 0b11,
        }
    }

    /// The path depth an identifier of this kind sits at.
    fn depth(self) -> usize {
        match self {
            TlvKind::ObjectInstance => 2,
            TlvKind::MultipleResource | TlvKind::Resource => 3,
            TlvKind::ResourceInstance => 4,
        }
    }
}

/// One TLV, borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// What it identifies.
    pub kind: TlvKind,
    /// The object instance, resource or resource instance ID.
    pub id: u16,
    /// The value, or the nested TLVs of an object instance or multiple resource.
    pub value: &'a [u8],
}

/// Iterates over the TLVs at one level of a payload; stops after the first error.
#[derive(Debug, Clone)]
pub struct TlvReader<'a> {
    rest: &'a [u8],
}

impl<'a> TlvReader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> TlvReader<'a> {
        TlvReader { rest: bytes }
    }

    fn next_tlv(&mut self) -> Result<Tlv<'a>, ContentError> {
        let truncated = ContentError::Truncated {
            format: format::name(format::TLV),
        };
        let (&ty, rest) = self.rest.split_first().ok_or(truncated.clone())?;
        let kind = match ty >> 6 {
            0b00 => TlvKind::ObjectInstance,
            0b01 => TlvKind::ResourceInstance,
            0b10 => TlvKind::MultipleResource,
            _ => TlvKind::Resource,
        };
        let id_len = if ty & 0x20 != 0 { 2 } else { 1 };
        let len_len = usize::from((ty >> 3) & 0b11);
        let header = rest.get(..id_len + len_len).ok_or(truncated.clone())?;
        let (id_bytes, len_bytes) = header.split_at(id_len);
        let id = id_bytes
            .iter()
            .fold(0u16, |acc, &b| acc << 8 | u16::from(b));
        let len = if len_len == 0 {
            usize::from(ty & 0b111)
        } else {
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
        };
        let rest = &rest[header.len()..];
        if rest.len() < len {
            return Err(truncated);
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(Tlv { kind, id, value })
    }
}

impl<'a> Iterator for TlvReader<'a> {
    type Item = Result<Tlv<'a>, ContentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_tlv();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// Decodes a TLV payload returned for `base`. Values are typed by the object definition;
/// resources the definition lacks are Opaque; an object without a definition gives
/// [`Content::Undecoded`].
///
/// Top-level TLVs sit one level below `base`, or at the level of `base` or of one of its
/// ancestors, under the path `base` shares down to there: a read of `/3/0/7` answered
/// with a multiple resource TLV 7, of `/3/0` with an object instance TLV 0, of `/3/0/6/0`
/// with a list of object instance TLVs 0 and 1 (every value inside is published at its
/// own path, as EMQX does). Below the top they nest strictly, so recursion is at most
/// three levels deep.
pub fn decode(
    payload: &[u8],
    base: &Path,
    registry: Definitions<'_>,
) -> Result<Content, ContentError> {
    let Some(object) = base.object() else {
        return Err(ContentError::invalid(
            format::TLV,
            "a TLV payload needs an object path",
        ));
    };
    if registry.get(object).is_none() {
        return Ok(Content::Undecoded {
            path: *base,
            payload: payload.to_vec(),
        });
    }
    let mut values = Vec::new();
    walk(payload, base, registry, true, &mut values)?;
    Ok(Content::Entries(
        values.into_iter().map(EntryRef::to_entry).collect(),
    ))
}

/// [`decode`] into borrowed values; see [`super::decode_borrowed`].
pub(crate) fn decode_borrowed<'a>(
    payload: &'a [u8],
    base: &Path,
    registry: Definitions<'_>,
    out: &mut Vec<EntryRef<'a>>,
) -> Result<Borrowed, ContentError> {
    let Some(object) = base.object() else {
        return Err(ContentError::invalid(
            format::TLV,
            "a TLV payload needs an object path",
        ));
    };
    if registry.get(object).is_none() {
        return Ok(Borrowed::Undecoded);
    }
    walk(payload, base, registry, true, out)?;
    Ok(Borrowed::Values)
}

fn walk<'a>(
    bytes: &'a [u8],
    parent: &Path,
    registry: Definitions<'_>,
    top: bool,
    entries: &mut Vec<EntryRef<'a>>,
) -> Result<(), ContentError> {
    for tlv in TlvReader::new(bytes) {
        let tlv = tlv?;
        let depth = tlv.kind.depth();
        let path = if parent.depth() + 1 == depth {
            parent.child(tlv.id)
        } else if top && depth <= parent.depth() {
            Path::from_ids(&parent.ids()[..depth - 1]).and_then(|p| p.child(tlv.id))
        } else {
            None
        };
        let Some(path) = path else {
            return Err(ContentError::invalid(
                format::TLV,
                format!("{:?} TLV {} cannot appear under {parent}", tlv.kind, tlv.id),
            ));
        };
        match tlv.kind {
            TlvKind::ObjectInstance | TlvKind::MultipleResource => {
                walk(tlv.value, &path, registry, false, entries)?;
            }
            TlvKind::Resource | TlvKind::ResourceInstance => {
                let kind = match (path.object(), path.resource()) {
                    (Some(o), Some(r)) => registry.resource(o, r).map(|d| d.kind),
                    _ => None,
                };
                let value = ValueRef::from_bytes(kind, tlv.value, &path)?;
                push_entry(entries, EntryRef { path, value }, format::TLV)?;
            }
        }
    }
    Ok(())
}

/// Encodes entries (all under `base`) as TLV into `out` (appends). Object instance TLVs
/// wrap resources when `base` is an object; resource instances sit in a multiple resource
/// TLV unless `base` is the resource instance itself. Integers use the minimal signed
/// width (1, 2, 4, 8 bytes; so 200 takes 2), Unsigned the same width so a 1.0 decoder
/// reading it as signed gets the same number; floats take 4 bytes when exact in `f32`,
/// else 8. Entries may come in any order; they are written in path order.
pub fn encode_tlv(entries: &[Entry], base: &Path, out: &mut Vec<u8>) -> Result<(), ContentError> {
    if base.depth() == 0 {
        return Err(ContentError::NotEncodable {
            path: *base,
            reason: "TLV needs an object path",
        });
    }
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.path);
    for e in &sorted {
        if !base.contains(&e.path) {
            return Err(not_encodable(e, "not under the base path"));
        }
        if e.path.depth() < 3 {
            return Err(not_encodable(e, "TLV values need a resource path"));
        }
    }
    for pair in sorted.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(not_encodable(pair[1], "path given twice"));
        }
        if pair[0].path.contains(&pair[1].path) {
            return Err(not_encodable(
                pair[1],
                "resource given both a value and instances",
            ));
        }
    }
    let encoder = Encoder {
        base_depth: base.depth(),
    };
    let mut scratch = [0; 8];
    for e in &sorted {
        // Checks every value's length before anything is written.
        if value_bytes(&e.value, &mut scratch).len() > MAX_TLV_LENGTH {
            return Err(not_encodable(
                e,
                "value longer than a TLV length can express",
            ));
        }
    }
    let total = encoder.level(&sorted, 2, None);
    out.reserve(total);
    encoder.level(&sorted, 2, Some(out));
    Ok(())
}

fn not_encodable(e: &Entry, reason: &'static str) -> ContentError {
    ContentError::NotEncodable {
        path: e.path,
        reason,
    }
}

/// Writes (or, without a buffer, measures) the TLVs of sorted, validated entries.
struct Encoder {
    base_depth: usize,
}

impl Encoder {
    /// Encodes `entries` (sharing the IDs above `depth`) at path depth `depth` (2 object
    /// instance, 3 resource, 4 resource instance); returns the length in bytes.
    fn level(&self, entries: &[&Entry], depth: usize, mut out: Option<&mut Vec<u8>>) -> usize {
        let mut total = 0;
        for group in groups(entries, depth) {
            let Some(first) = group.first() else {
                continue;
            };
            let id = first.path.ids().get(depth - 1).copied().unwrap_or(0);
            let (kind, wrapped) = match depth {
                2 => (TlvKind::ObjectInstance, self.base_depth < 2),
                3 if first.path.depth() == 3 => {
                    let mut scratch = [0; 8];
                    let value = value_bytes(&first.value, &mut scratch);
                    total += write_tlv(TlvKind::Resource, id, value, out.as_deref_mut());
                    continue;
                }
                3 => (TlvKind::MultipleResource, self.base_depth < 4),
                _ => {
                    for e in group {
                        let mut scratch = [0; 8];
                        let id = e.path.resource_instance().unwrap_or(0);
                        let value = value_bytes(&e.value, &mut scratch);
                        total +=
                            write_tlv(TlvKind::ResourceInstance, id, value, out.as_deref_mut());
                    }
                    continue;
                }
            };
            if !wrapped {
                total += self.level(group, depth + 1, out.as_deref_mut());
                continue;
            }
            let inner = self.level(group, depth + 1, None);
            total += header(kind, id, inner, out.as_deref_mut()) + inner;
            if let Some(out) = out.as_deref_mut() {
                self.level(group, depth + 1, Some(out));
            }
        }
        total
    }
}

/// Splits sorted entries into runs sharing the ID at `depth`.
fn groups<'e, 'a>(entries: &'e [&'a Entry], depth: usize) -> impl Iterator<Item = &'e [&'a Entry]> {
    let id = move |e: &Entry| e.path.ids().get(depth - 1).copied();
    entries.chunk_by(move |a, b| id(a) == id(b))
}

/// Writes a TLV header for a value of `len` bytes; returns its length.
fn header(kind: TlvKind, id: u16, len: usize, out: Option<&mut Vec<u8>>) -> usize {
    let id16 = id > 0xff;
    let len_len: usize = match len {
        0..=7 => 0,
        8..=0xff => 1,
        0x100..=0xffff => 2,
        _ => 3,
    };
    let size = 1 + if id16 { 2 } else { 1 } + len_len;
    if let Some(out) = out {
        let mut ty = kind.bits() << 6 | (len_len as u8) << 3;
        if id16 {
            ty |= 0x20;
        }
        if len_len == 0 {
            ty |= len as u8;
        }
        out.push(ty);
        if id16 {
            out.extend_from_slice(&id.to_be_bytes());
        } else {
            out.push(id as u8);
        }
        out.extend_from_slice(&(len as u32).to_be_bytes()[4 - len_len..]);
    }
    size
}

fn write_tlv(kind: TlvKind, id: u16, value: &[u8], mut out: Option<&mut Vec<u8>>) -> usize {
    let size = header(kind, id, value.len(), out.as_deref_mut()) + value.len();
    if let Some(out) = out {
        out.extend_from_slice(value);
    }
    size
}

/// The smallest of 1, 2, 4, 8 bytes that holds `n` in two's complement.
fn signed_width(n: i64) -> usize {
    if i8::try_from(n).is_ok() {
        1
    } else if i16::try_from(n).is_ok() {
        2
    } else if i32::try_from(n).is_ok() {
        4
    } else {
        8
    }
}

/// The TLV value bytes of `value`; numbers are built in `scratch`.
fn value_bytes<'a>(value: &'a Value, scratch: &'a mut [u8; 8]) -> &'a [u8] {
    let int = |n: i64, scratch: &'a mut [u8; 8]| -> &'a [u8] {
        *scratch = n.to_be_bytes();
        &scratch[8 - signed_width(n)..]
    };
    match value {
        Value::Integer(n) | Value::Time(n) => int(*n, scratch),
        Value::Unsigned(n) => match i64::try_from(*n) {
            Ok(n) => int(n, scratch),
            Err(_) => {
                *scratch = n.to_be_bytes();
                &scratch[..]
            }
        },
        Value::Float(f) => {
            let narrow = *f as f32;
            if f64::from(narrow) == *f {
                scratch[..4].copy_from_slice(&narrow.to_be_bytes());
                &scratch[..4]
            } else {
                *scratch = f.to_be_bytes();
                &scratch[..]
            }
        }
        Value::Boolean(b) => {
            scratch[0] = u8::from(*b);
            &scratch[..1]
        }
        Value::Objlnk(o, i) => {
            scratch[..2].copy_from_slice(&o.to_be_bytes());
            scratch[2..4].copy_from_slice(&i.to_be_bytes());
            &scratch[..4]
        }
        Value::String(s) | Value::CoreLink(s) => s.as_bytes(),
        Value::Opaque(b) => b,
    }
}
