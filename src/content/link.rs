//! `application/link-format` (40, RFC 6690): the answer to Discover.

use super::{format, push_entry, ContentError};

/// Splits a link-format payload into links as the device wrote them (`</3/0/1>;dim=2`),
/// trimmed, attributes kept. Commas inside quoted attribute values or inside `<...>` do
/// not split; empty links (`a,,b`, a trailing comma) are skipped.
pub fn decode(payload: &[u8]) -> Result<Vec<String>, ContentError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| ContentError::invalid(format::LINK, "payload is not UTF-8"))?;
    let mut links = Vec::new();
    for link in split(text) {
        if !link.is_empty() {
            push_entry(&mut links, link.to_owned(), format::LINK)?;
        }
    }
    Ok(links)
}

/// The comma-separated parts of `text`, trimmed.
fn split(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut in_uri = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' if !in_uri => quoted = !quoted,
                '<' if !quoted => in_uri = true,
                '>' if !quoted => in_uri = false,
                ',' if !quoted && !in_uri => {
                    rest = Some(&s[i + 1..]);
                    return Some(s[..i].trim());
                }
                _ => {}
            }
        }
        rest = None;
        Some(s.trim())
    })
}
