//! The PSK file: one `identity:hexkey[:endpoint]` per line, parsed into a [`PskTable`].
//!
//! The identity cannot hold a `:`; the endpoint, the rest of the line, can
//! (`dev-7:00ff…:urn:imei:35…`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::lwm2m::registration::MAX_ENDPOINT_LEN;

/// Longest PSK identity accepted, in bytes. RFC 4279 allows 2^16 − 1, but OpenSSL before
/// 3.0 stops at 128 (`PSK_MAX_IDENTITY_LEN`) and so do the device stacks built on it.
pub const MAX_PSK_IDENTITY_LEN: usize = 128;

/// Longest key accepted, in bytes (512 bits). LwM2M PSKs are 128 to 256 bits; a longer
/// line is a mistake, and OpenSSL's own limit (`PSK_MAX_PSK_LEN`) is larger still.
pub const MAX_PSK_KEY_LEN: usize = 64;

/// One identity's key and the endpoint name it may register as.
#[derive(Clone, PartialEq, Eq)]
pub struct PskEntry {
    /// The pre-shared key; `Debug` never prints it.
    pub key: Box<[u8]>,
    /// The endpoint name this identity stands for (the identity itself unless the line
    /// names another).
    pub endpoint: Arc<str>,
}

impl fmt::Debug for PskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskEntry")
            .field("key", &format_args!("<{} bytes, redacted>", self.key.len()))
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Every identity of a PSK file, looked up on the handshake path.
#[derive(Clone, Default)]
pub struct PskTable {
    entries: HashMap<Box<str>, PskEntry, ahash::RandomState>,
}

impl fmt::Debug for PskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskTable")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Why one line of a PSK file was skipped, or (for [`PskProblem::Duplicate`]) overrides an
/// earlier one. Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskProblem {
    /// No `:` after the identity, so no key.
    #[error("no key: expected identity:hexkey[:endpoint]")]
    MissingKey,
    /// The identity before the first `:` is empty.
    #[error("empty identity")]
    EmptyIdentity,
    /// The identity is longer than [`MAX_PSK_IDENTITY_LEN`].
    #[error("identity is {0} bytes, longer than {MAX_PSK_IDENTITY_LEN}")]
    IdentityTooLong(usize),
    /// The key field is empty.
    #[error("empty key")]
    EmptyKey,
    /// The key has a character that is not a hex digit.
    #[error("key is not hex")]
    KeyNotHex,
    /// The key has an odd number of hex digits.
    #[error("key has an odd number of hex digits ({0})")]
    KeyOddLength(usize),
    /// The key is longer than [`MAX_PSK_KEY_LEN`] bytes.
    #[error("key is {0} bytes, longer than {MAX_PSK_KEY_LEN}")]
    KeyTooLong(usize),
    /// The third field is present but empty.
    #[error("empty endpoint name after the second ':'")]
    EmptyEndpoint,
    /// The endpoint name is longer than an endpoint name may be.
    #[error("endpoint name is {0} bytes, longer than {MAX_ENDPOINT_LEN}")]
    EndpointTooLong(usize),
    /// The identity was already defined; this line replaces the earlier one.
    #[error("identity already defined on line {0}; this line wins")]
    Duplicate(usize),
}

/// A problem on one line of a PSK file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct PskLineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: PskProblem,
}

impl PskLineError {
    /// Whether the line was skipped (a duplicate is applied, every other problem skips).
    pub fn skipped(&self) -> bool {
        !matches!(self.problem, PskProblem::Duplicate(_))
    }
}

impl PskTable {
    /// Parses a PSK file. Blank lines and lines starting with `#` (after leading
    /// whitespace) are skipped; surrounding whitespace, including a CR before the LF, is
    /// trimmed. A bad line is skipped and reported, never fatal; a repeated identity
    /// replaces the earlier line and is reported too.
    pub fn parse(text: &str) -> (PskTable, Vec<PskLineError>) {
        let mut table = PskTable::default();
        // Line where each identity was last defined, to name it in a duplicate warning.
        let mut defined_on: HashMap<Box<str>, usize, ahash::RandomState> = HashMap::default();
        let mut errors = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match parse_line(trimmed) {
                Ok((identity, entry)) => {
                    if let Some(previous) = defined_on.insert(identity.into(), line) {
                        errors.push(PskLineError {
                            line,
                            problem: PskProblem::Duplicate(previous),
                        });
                    }
                    table.entries.insert(identity.into(), entry);
                }
                Err(problem) => errors.push(PskLineError { line, problem }),
            }
        }
        (table, errors)
    }

    /// The entry of `identity`, as the client sent it.
    pub fn get(&self, identity: &[u8]) -> Option<&PskEntry> {
        self.entries.get(std::str::from_utf8(identity).ok()?)
    }

    /// Number of identities.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no identity.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_line(line: &str) -> Result<(&str, PskEntry), PskProblem> {
    // The endpoint is the rest of the line: LwM2M endpoint names like `urn:imei:…`
    // hold ':' themselves. Only the identity cannot.
    let mut fields = line.splitn(3, ':');
    let identity = fields.next().unwrap_or_default();
    let hex = fields.next().ok_or(PskProblem::MissingKey)?;
    let endpoint = fields.next();
    if identity.is_empty() {
        return Err(PskProblem::EmptyIdentity);
    }
    if identity.len() > MAX_PSK_IDENTITY_LEN {
        return Err(PskProblem::IdentityTooLong(identity.len()));
    }
    let key = decode_hex(hex)?;
    let endpoint = match endpoint {
        None => identity,
        Some("") => return Err(PskProblem::EmptyEndpoint),
        Some(e) if e.len() > MAX_ENDPOINT_LEN => return Err(PskProblem::EndpointTooLong(e.len())),
        Some(e) => e,
    };
    Ok((
        identity,
        PskEntry {
            key,
            endpoint: Arc::from(endpoint),
        },
    ))
}

fn decode_hex(hex: &str) -> Result<Box<[u8]>, PskProblem> {
    if hex.is_empty() {
        return Err(PskProblem::EmptyKey);
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PskProblem::KeyNotHex);
    }
    if hex.len() % 2 != 0 {
        return Err(PskProblem::KeyOddLength(hex.len()));
    }
    if hex.len() / 2 > MAX_PSK_KEY_LEN {
        return Err(PskProblem::KeyTooLong(hex.len() / 2));
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    };
    Ok(hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| nibble(pair[0]) << 4 | nibble(pair[1]))
        .collect())
}
