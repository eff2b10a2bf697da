//! `application/octet-stream` (42): one Opaque resource (instance) value.

use super::value::Value;
use super::{Content, Entry};
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
