//! LwM2M content formats: payloads of responses, notifications and Send decoded into
//! typed values at absolute paths, write payloads encoded, and the `content` value of the
//! MQTT JSON written.
//!
//! One file per format: [`text`], [`opaque`], [`link`], [`tlv`], [`cbor`],
//! [`senml_json`], [`senml_cbor`] and [`oma_json`]. Values and their conversions live in
//! [`value`], the MQTT JSON output in [`json_out`].
//!
//! Decoders take the request path (`base`) and the object [`Definitions`] (a
//! [`Registry`](crate::lwm2m::Registry), or one device's view of it): TLV, text, opaque
//! and CBOR carry no types of their own and are typed by the object definition; SenML and
//! OMA JSON describe themselves and are only coerced where the definition is more precise
//! (an Integer resource sent as `3.0`, an Opaque resource sent as a base64 string). A
//! payload that cannot be typed for want of a definition is not an error: it comes back as
//! [`Content::Undecoded`] so that it is still published.
//!
//! The formats whose values are slices of the payload (text, opaque, TLV) also decode
//! into borrowed [`EntryRef`]s with [`decode_borrowed`], into a vector the caller reuses:
//! the shard's notification path allocates nothing for them.
//!
//! Decoders never panic, never recurse deeper than the four path levels, and stop at
//! [`MAX_ENTRIES`] values.

pub mod cbor;
pub mod json_out;
pub mod link;
pub mod oma_json;
pub mod opaque;
pub mod senml_cbor;
pub mod senml_json;
pub mod text;
pub mod tlv;
pub mod value;

#[cfg(test)]
mod test_vectors;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_json;
#[cfg(test)]
mod tests_prop;

use crate::lwm2m::{Definitions, Path, ResourceType};

pub use json_out::write_content_json;
pub use senml_cbor::{encode_senml_cbor, encode_senml_cbor_names};
pub use senml_json::{encode_senml_json, encode_senml_names};
pub use text::encode_text;
pub use tlv::encode_tlv;
pub use value::{parse_typed_value, Value, ValueRef};

/// CoAP Content-Format numbers of the LwM2M content formats.
pub mod format {
    /// `text/plain;charset=utf-8`: one resource value as text.
    pub const TEXT: u16 = 0;
    /// `application/link-format` (RFC 6690): Discover responses.
    pub const LINK: u16 = 40;
    /// `application/octet-stream`: one Opaque resource value.
    pub const OPAQUE: u16 = 42;
    /// `application/cbor`: one resource value (LwM2M 1.1).
    pub const CBOR: u16 = 60;
    /// `application/senml+json` (RFC 8428, LwM2M 1.1).
    pub const SENML_JSON: u16 = 110;
    /// `application/senml+cbor` (RFC 8428, LwM2M 1.1).
    pub const SENML_CBOR: u16 = 112;
    /// `application/vnd.oma.lwm2m+tlv` (LwM2M 1.0).
    pub const TLV: u16 = 11542;
    /// `application/vnd.oma.lwm2m+json` (LwM2M 1.0 JSON).
    pub const OMA_JSON: u16 = 11543;

    /// A short name of a format for error messages.
    pub fn name(format: u16) -> &'static str {
        match format {
            TEXT => "text",
            LINK => "link-format",
            OPAQUE => "opaque",
            CBOR => "CBOR",
            SENML_JSON => "SenML JSON",
            SENML_CBOR => "SenML CBOR",
            TLV => "TLV",
            OMA_JSON => "OMA JSON",
            _ => "unknown format",
        }
    }
}

/// Most values (or links) one payload may decode to. The largest object instance trees
/// seen in the field hold a few hundred resource instances; the bound keeps a hostile
/// payload of tiny records (a 2-byte TLV each) from growing a vector without limit.
pub const MAX_ENTRIES: usize = 4096;

/// One resource (instance) value at an absolute path (e.g. `/3/0/0` or `/3/0/11/0`).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where the value lives.
    pub path: Path,
    /// The value.
    pub value: Value,
}

/// One resource (instance) value borrowing from the payload it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntryRef<'a> {
    /// Where the value lives.
    pub path: Path,
    /// The value.
    pub value: ValueRef<'a>,
}

impl EntryRef<'_> {
    /// An owned copy.
    pub fn to_entry(self) -> Entry {
        Entry {
            path: self.path,
            value: self.value.to_value(),
        }
    }
}

/// Decoded content to write as MQTT JSON: owned [`Content`] or borrowed values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ContentRef<'a> {
    /// Values borrowed from the payload (see [`decode_borrowed`]).
    Values(&'a [EntryRef<'a>]),
    /// Owned decoded content.
    Content(&'a Content),
    /// A payload kept undecoded (see [`Content::Undecoded`]).
    Undecoded {
        /// The request path.
        path: Path,
        /// The payload as received.
        payload: &'a [u8],
    },
}

impl ContentRef<'_> {
    /// Whether the payload is published undecoded (`"decoded": false`).
    pub fn is_undecoded(&self) -> bool {
        matches!(
            self,
            ContentRef::Undecoded { .. } | ContentRef::Content(Content::Undecoded { .. })
        )
    }
}

impl<'a> From<&'a Content> for ContentRef<'a> {
    fn from(content: &'a Content) -> ContentRef<'a> {
        ContentRef::Content(content)
    }
}

/// What a response payload decoded to.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Resource values, typed by the object definition (TLV, text, opaque, CBOR) or
    /// self-described (SenML, OMA JSON).
    Entries(Vec<Entry>),
    /// Link-format (discover): each link as the device wrote it, e.g. `</3/0>`,
    /// `</3/0/1>;dim=2` (attributes kept).
    Links(Vec<String>),
    /// No definition to type it by (or a format that needs one and has none): the raw
    /// payload, published base64 with `"decoded": false`.
    Undecoded {
        /// The request path.
        path: Path,
        /// The payload as received.
        payload: Vec<u8>,
    },
}

/// Why a payload could not be decoded or entries could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContentError {
    /// The Content-Format is not one of [`format`](mod@format).
    #[error("unsupported content format {0}")]
    UnknownFormat(u16),
    /// The payload ends inside a header or value.
    #[error("{format} payload truncated")]
    Truncated {
        /// The format being decoded.
        format: &'static str,
    },
    /// The payload holds more than [`MAX_ENTRIES`] values or links.
    #[error("{format} payload holds more than {MAX_ENTRIES} values")]
    TooManyEntries {
        /// The format being decoded.
        format: &'static str,
    },
    /// The payload is not well-formed for its format.
    #[error("invalid {format} payload: {reason}")]
    Invalid {
        /// The format being decoded.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A name in the payload is not an LwM2M path.
    #[error("{format}: {name:?} is not an LwM2M path")]
    BadPath {
        /// The format being decoded.
        format: &'static str,
        /// The name as sent (base name included).
        name: String,
    },
    /// A value's bytes do not fit the type its definition gives it (e.g. a 3-byte
    /// Integer, a Boolean of 2).
    #[error("{path}: not a valid {kind:?} value: {reason}")]
    TypeMismatch {
        /// The value's path.
        path: Path,
        /// The type from the object definition.
        kind: ResourceType,
        /// What is wrong.
        reason: &'static str,
    },
    /// Entries cannot be encoded as asked (outside the base path, a path too short for
    /// the format, a resource given both a value and instances, a non-finite float in
    /// JSON).
    #[error("cannot encode {path}: {reason}")]
    NotEncodable {
        /// The offending entry's path.
        path: Path,
        /// Why.
        reason: &'static str,
    },
    /// [`parse_typed_value`] was given a type name outside the §5 list.
    #[error("unknown value type {0:?}")]
    UnknownType(String),
    /// [`parse_typed_value`] was given a value that is not of the named type.
    #[error("value is not a valid {type_name}: {reason}")]
    BadValue {
        /// The type asked for, as normalised.
        type_name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl ContentError {
    pub(crate) fn invalid(format: u16, reason: impl Into<String>) -> ContentError {
        ContentError::Invalid {
            format: format::name(format),
            reason: reason.into(),
        }
    }
}

/// Decodes a payload of `format` returned for a request on `base` (the request path).
/// `registry` (a [`Registry`], or a device's [`Definitions`]) types the values; a missing
/// object definition is not an error: it yields [`Content::Undecoded`].
pub fn decode<'r>(
    format: u16,
    payload: &[u8],
    base: &Path,
    registry: impl Into<Definitions<'r>>,
) -> Result<Content, ContentError> {
    let registry = registry.into();
    match format {
        format::TEXT => text::decode(payload, base, registry),
        format::LINK => link::decode(payload).map(Content::Links),
        format::OPAQUE => Ok(opaque::decode(payload, base)),
        format::CBOR => cbor::decode(payload, base, registry),
        format::SENML_JSON => senml_json::decode(payload, registry).map(Content::Entries),
        format::SENML_CBOR => senml_cbor::decode(payload, registry).map(Content::Entries),
        format::TLV => tlv::decode(payload, base, registry),
        format::OMA_JSON => oma_json::decode(payload, base, registry).map(Content::Entries),
        other => Err(ContentError::UnknownFormat(other)),
    }
}

/// How [`decode_borrowed`] left a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Borrowed {
    /// The values are in the caller's vector.
    Values,
    /// No definition to type it by: publish the payload undecoded, as
    /// [`Content::Undecoded`] at the request path.
    Undecoded,
    /// The format (or a value in it, such as base64 text of an Opaque resource) needs
    /// [`decode`]; nothing was written.
    Owned,
}

/// Decodes a payload of `format` returned for `base` into `out` (cleared first) without
/// allocating beyond `out`'s own growth, when the format allows: text, opaque and TLV
/// values borrow from `payload`. The result and errors are those of [`decode`]; other
/// formats answer [`Borrowed::Owned`].
pub fn decode_borrowed<'a, 'r>(
    format: u16,
    payload: &'a [u8],
    base: &Path,
    registry: impl Into<Definitions<'r>>,
    out: &mut Vec<EntryRef<'a>>,
) -> Result<Borrowed, ContentError> {
    let registry = registry.into();
    out.clear();
    match format {
        format::TEXT => text::decode_borrowed(payload, base, registry, out),
        format::OPAQUE => Ok(opaque::decode_borrowed(payload, base, out)),
        format::TLV => tlv::decode_borrowed(payload, base, registry, out),
        _ => Ok(Borrowed::Owned),
    }
}

/// Empties `entries` and hands back its allocation for values of another payload, so one
/// vector serves every [`decode_borrowed`] call of a long-lived decoder.
pub fn reuse_entries<'b>(mut entries: Vec<EntryRef<'_>>) -> Vec<EntryRef<'b>> {
    entries.clear();
    // An empty vector collected in place into a type of the same layout keeps its
    // allocation and allocates nothing; `filter_map` is what changes the element type.
    #[allow(clippy::unnecessary_filter_map)]
    let recycled = entries.into_iter().filter_map(|_| None).collect();
    recycled
}

/// Pushes `entry` unless that would exceed [`MAX_ENTRIES`].
pub(crate) fn push_entry<T>(
    entries: &mut Vec<T>,
    entry: T,
    format: u16,
) -> Result<(), ContentError> {
    if entries.len() >= MAX_ENTRIES {
        return Err(ContentError::TooManyEntries {
            format: format::name(format),
        });
    }
    entries.push(entry);
    Ok(())
}
