//! `application/octet-stream` (42): one Opaque resource (instance) value.

use super::value::{Value, ValueRef};
use super::{Borrowed, Content, Entry, EntryRef};
use crate::lwm2m::Path;

/// Decodes an opaque payload returned for `base`: an Opaque value at `base` when that is
/// a resource (instance), else the payload kept as [`Content::Undecoded`].
pub fn decode(payload: &[u8], base: &Path) -> Content {
    if base.resource().is_none() {
        return Content::Undecoded {
            path: *base,
            payload: payload.to_vec(),
        };
    }
    Content::Entries(vec![Entry {
        path: *base,
        value: Value::Opaque(payload.to_vec()),
    }])
}

/// [`decode`] into borrowed values; see [`super::decode_borrowed`].
pub(crate) fn decode_borrowed<'a>(
    payload: &'a [u8],
    base: &Path,
    out: &mut Vec<EntryRef<'a>>,
) -> Borrowed {
    if base.resource().is_none() {
        return Borrowed::Undecoded;
    }
    out.push(EntryRef {
        path: *base,
        value: ValueRef::Opaque(payload),
    });
    Borrowed::Values
}
