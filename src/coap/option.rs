//! Option numbers (RFC 7252 §5.10, RFC 7641, RFC 7959) and the value lengths the parser enforces.

/// If-Match (opaque, 0–8 bytes, repeatable).
pub const IF_MATCH: u16 = 1;
/// Uri-Host (string).
pub const URI_HOST: u16 = 3;
/// ETag (opaque, 1–8 bytes).
pub const ETAG: u16 = 4;
/// If-None-Match (empty).
pub const IF_NONE_MATCH: u16 = 5;
/// Observe (uint, 0–3 bytes, RFC 7641).
pub const OBSERVE: u16 = 6;
/// Uri-Port (uint, 0–2 bytes).
pub const URI_PORT: u16 = 7;
/// Location-Path (string, repeatable).
pub const LOCATION_PATH: u16 = 8;
/// Uri-Path (string, repeatable): one path segment each.
pub const URI_PATH: u16 = 11;
/// Content-Format (uint, 0–2 bytes).
pub const CONTENT_FORMAT: u16 = 12;
/// Max-Age (uint, 0–4 bytes).
pub const MAX_AGE: u16 = 14;
/// Uri-Query (string, repeatable): one `key=value` each.
pub const URI_QUERY: u16 = 15;
/// Accept (uint, 0–2 bytes).
pub const ACCEPT: u16 = 17;
/// Location-Query (string, repeatable).
pub const LOCATION_QUERY: u16 = 20;
/// Block2 (uint, 0–3 bytes, RFC 7959): block-wise response body.
pub const BLOCK2: u16 = 23;
/// Block1 (uint, 0–3 bytes, RFC 7959): block-wise request body.
pub const BLOCK1: u16 = 27;
/// Size2 (uint, 0–4 bytes, RFC 7959).
pub const SIZE2: u16 = 28;
/// Proxy-Uri (string).
pub const PROXY_URI: u16 = 35;
/// Proxy-Scheme (string).
pub const PROXY_SCHEME: u16 = 39;
/// Size1 (uint, 0–4 bytes).
pub const SIZE1: u16 = 60;

/// Longest value the parser accepts for a uint option the accessors decode, `None` for
/// options whose length it does not check. A longer value would not fit the accessor's
/// integer type, so the datagram is rejected rather than silently truncated.
pub const fn max_uint_len(number: u16) -> Option<usize> {
    match number {
        CONTENT_FORMAT | ACCEPT | URI_PORT => Some(2),
        OBSERVE | BLOCK1 | BLOCK2 => Some(3),
        MAX_AGE | SIZE1 | SIZE2 => Some(4),
        _ => None,
    }
}

/// An option is critical when its number is odd (RFC 7252 §5.4.6): a recipient that does
/// not understand it must reject the message.
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}
