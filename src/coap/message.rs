//! Borrowed, fully validated view of one CoAP datagram (RFC 7252 §3).
//!
//! [`Message::parse`] walks the datagram once (O(n), no allocation) and checks everything
//! the accessors will later rely on, so the accessors cannot fail: they re-walk the
//! validated option bytes on demand instead of materialising them.

use super::block::Block;
use super::code::{Code, MessageType};
use super::option;

/// Length of the fixed header: version/type/TKL, code, message id.
pub const HEADER_LEN: usize = 4;
/// Longest token RFC 7252 allows; TKL 9–15 is reserved.
pub const MAX_TOKEN_LEN: usize = 8;
/// The only protocol version defined.
pub const VERSION: u8 = 1;
/// Byte that separates the options from a non-empty payload.
pub const PAYLOAD_MARKER: u8 = 0xff;

/// Why a datagram is not a well-formed CoAP message.
///
/// Everything but [`ParseError::BadOptionLength`] and [`ParseError::ReservedBlockSize`] is a
/// message format error: the receiver rejects a CON with RST and silently drops anything
/// else (RFC 7252 §4.2, §4.3). [`peek_header`] recovers the type and MID for that RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the four header bytes.
    #[error("datagram of {0} bytes is shorter than the CoAP header")]
    TooShort(usize),
    /// Version field is not 1.
    #[error("unsupported CoAP version {0}")]
    BadVersion(u8),
    /// Token length 9–15 (reserved).
    #[error("reserved token length {0}")]
    BadTokenLength(u8),
    /// The datagram ends inside the token.
    #[error("datagram ends inside the token")]
    TruncatedToken,
    /// An Empty (0.00) message carries a token, options or a payload (RFC 7252 §4.1).
    #[error("empty message with token, options or payload")]
    NonEmptyEmpty,
    /// Option delta nibble 15 in a byte that is not the payload marker.
    #[error("reserved option delta 15")]
    ReservedOptionDelta,
    /// Option length nibble 15.
    #[error("reserved option length 15")]
    ReservedOptionLength,
    /// The datagram ends inside an extended option delta or length.
    #[error("datagram ends inside an option header")]
    TruncatedOptionHeader,
    /// The option value runs past the end of the datagram.
    #[error("value of option {number} runs past the end of the datagram")]
    TruncatedOptionValue {
        /// Number of the option.
        number: u16,
    },
    /// The sum of deltas exceeds the largest option number, 65535.
    #[error("option number exceeds 65535")]
    OptionNumberOverflow,
    /// A payload marker with no payload after it (RFC 7252 §3).
    #[error("payload marker followed by an empty payload")]
    EmptyPayload,
    /// A uint option is longer than its definition allows (see [`option::max_uint_len`]).
    #[error("option {number} has {len} bytes, more than its format allows")]
    BadOptionLength {
        /// Number of the option.
        number: u16,
        /// Length of the value received.
        len: usize,
    },
    /// A Block1/Block2 option with the reserved SZX 7 (RFC 7959 §2.2).
    #[error("option {number} has the reserved block size exponent 7")]
    ReservedBlockSize {
        /// Number of the option.
        number: u16,
    },
}

/// Borrowed view of one CoAP datagram (RFC 7252 §3), validated completely by
/// [`Message::parse`].
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    header: [u8; HEADER_LEN],
    token: &'a [u8],
    options: &'a [u8],
    payload: &'a [u8],
}

/// The type and message id of a datagram that may not parse, for rejecting it with RST;
/// `None` when even the header is unusable (too short or wrong version).
pub fn peek_header(datagram: &[u8]) -> Option<(MessageType, u16)> {
    match datagram {
        [first, _, hi, lo, ..] if first >> 6 == VERSION => Some((
            MessageType::from_bits(first >> 4),
            u16::from_be_bytes([*hi, *lo]),
        )),
        _ => None,
    }
}

impl<'a> Message<'a> {
    /// Validates `datagram` completely; see [`ParseError`] for what is rejected.
    pub fn parse(datagram: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let Some((header, rest)) = datagram.split_first_chunk::<HEADER_LEN>() else {
            return Err(ParseError::TooShort(datagram.len()));
        };
        let version = header[0] >> 6;
        if version != VERSION {
            return Err(ParseError::BadVersion(version));
        }
        let tkl = header[0] & 0x0f;
        if usize::from(tkl) > MAX_TOKEN_LEN {
            return Err(ParseError::BadTokenLength(tkl));
        }
        let (token, rest) = rest
            .split_at_checked(usize::from(tkl))
            .ok_or(ParseError::TruncatedToken)?;
        if header[1] == Code::EMPTY.0 && datagram.len() != HEADER_LEN {
            return Err(ParseError::NonEmptyEmpty);
        }

        let mut cursor = rest;
        let mut number = 0u16;
        let payload = loop {
            match cursor.split_first() {
                None => break cursor,
                Some((&PAYLOAD_MARKER, payload)) => {
                    if payload.is_empty() {
                        return Err(ParseError::EmptyPayload);
                    }
                    break payload;
                }
                Some(_) => {
                    let (n, value, next) = next_option(number, cursor)?;
                    check_value(n, value)?;
                    number = n;
                    cursor = next;
                }
            }
        };
        let options_len = rest.len() - cursor.len();
        let options = rest.get(..options_len).unwrap_or_default();
        Ok(Message {
            header: *header,
            token,
            options,
            payload,
        })
    }

    /// The message type.
    pub fn ty(&self) -> MessageType {
        MessageType::from_bits(self.header[0] >> 4)
    }

    /// The code.
    pub fn code(&self) -> Code {
        Code(self.header[1])
    }

    /// The message id.
    pub fn mid(&self) -> u16 {
        u16::from_be_bytes([self.header[2], self.header[3]])
    }

    /// The token, 0–8 bytes.
    pub fn token(&self) -> &'a [u8] {
        self.token
    }

    /// The payload, empty when there is none.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// All options in wire order (ascending numbers, repeated options repeated).
    pub fn options(&self) -> Options<'a> {
        Options {
            rest: self.options,
            number: 0,
        }
    }

    /// The raw encoded option bytes, between the token and the payload marker.
    pub fn option_bytes(&self) -> &'a [u8] {
        self.options
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&'a [u8]> {
        self.option_values(number).next()
    }

    /// Every value of option `number`, in order.
    pub fn option_values(&self, number: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.options()
            .skip_while(move |&(n, _)| n < number)
            .take_while(move |&(n, _)| n == number)
            .map(|(_, value)| value)
    }

    /// Each Uri-Path segment.
    pub fn uri_path(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.option_values(option::URI_PATH)
    }

    /// Each Uri-Query parameter.
    pub fn uri_query(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.option_values(option::URI_QUERY)
    }

    /// Each Location-Path segment.
    pub fn location_path(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.option_values(option::LOCATION_PATH)
    }

    /// Content-Format.
    pub fn content_format(&self) -> Option<u16> {
        self.uint_option(option::CONTENT_FORMAT).map(|v| v as u16)
    }

    /// Accept.
    pub fn accept(&self) -> Option<u16> {
        self.uint_option(option::ACCEPT).map(|v| v as u16)
    }

    /// Observe (RFC 7641): 0 register / 1 deregister in requests, a sequence number in
    /// notifications.
    pub fn observe(&self) -> Option<u32> {
        self.uint_option(option::OBSERVE)
    }

    /// Max-Age in seconds, when present (absent means the default of 60 s).
    pub fn max_age(&self) -> Option<u32> {
        self.uint_option(option::MAX_AGE)
    }

    /// Block1 (RFC 7959): the block of a request body this message carries.
    pub fn block1(&self) -> Option<Block> {
        self.option(option::BLOCK1).and_then(Block::decode)
    }

    /// Block2 (RFC 7959): the block of a response body.
    pub fn block2(&self) -> Option<Block> {
        self.option(option::BLOCK2).and_then(Block::decode)
    }

    /// Size1: the total size of a request body.
    pub fn size1(&self) -> Option<u32> {
        self.uint_option(option::SIZE1)
    }

    /// Size2: the total size of a response body.
    pub fn size2(&self) -> Option<u32> {
        self.uint_option(option::SIZE2)
    }

    fn uint_option(&self, number: u16) -> Option<u32> {
        self.option(number).map(uint)
    }
}

/// Iterator over `(number, value)` of a message's options, in wire order.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    rest: &'a [u8],
    number: u16,
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if matches!(self.rest.first(), None | Some(&PAYLOAD_MARKER)) {
            return None;
        }
        match next_option(self.number, self.rest) {
            Ok((number, value, rest)) => {
                self.number = number;
                self.rest = rest;
                Some((number, value))
            }
            Err(_) => {
                self.rest = &[];
                None
            }
        }
    }
}

/// A big-endian unsigned integer option value (RFC 7252 §3.2); empty is 0. Longer values
/// keep their low 32 bits (the parser rejects those for the options it decodes).
pub fn uint(value: &[u8]) -> u32 {
    value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

/// Decodes the option starting at `bytes[0]` (which is not the payload marker), given the
/// previous option number; returns its number, value and the bytes after it.
pub(super) fn next_option(prev: u16, bytes: &[u8]) -> Result<(u16, &[u8], &[u8]), ParseError> {
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(ParseError::TruncatedOptionHeader);
    };
    let (delta, rest) = match first >> 4 {
        15 => return Err(ParseError::ReservedOptionDelta),
        nibble => extended(nibble, rest)?,
    };
    let (len, rest) = match first & 0x0f {
        15 => return Err(ParseError::ReservedOptionLength),
        nibble => extended(nibble, rest)?,
    };
    let number =
        u16::try_from(u32::from(prev) + delta).map_err(|_| ParseError::OptionNumberOverflow)?;
    let (value, rest) = rest
        .split_at_checked(len as usize)
        .ok_or(ParseError::TruncatedOptionValue { number })?;
    Ok((number, value, rest))
}

/// Resolves an option delta or length nibble 0–14 with its extended bytes.
fn extended(nibble: u8, rest: &[u8]) -> Result<(u32, &[u8]), ParseError> {
    match nibble {
        13 => match rest.split_first() {
            Some((&b, rest)) => Ok((u32::from(b) + 13, rest)),
            None => Err(ParseError::TruncatedOptionHeader),
        },
        14 => match rest.split_first_chunk::<2>() {
            Some((b, rest)) => Ok((u32::from(u16::from_be_bytes(*b)) + 269, rest)),
            None => Err(ParseError::TruncatedOptionHeader),
        },
        n => Ok((u32::from(n), rest)),
    }
}

/// Format checks of the options whose values the accessors decode.
fn check_value(number: u16, value: &[u8]) -> Result<(), ParseError> {
    if let Some(max) = option::max_uint_len(number) {
        if value.len() > max {
            return Err(ParseError::BadOptionLength {
                number,
                len: value.len(),
            });
        }
    }
    if (number == option::BLOCK1 || number == option::BLOCK2) && Block::decode(value).is_none() {
        return Err(ParseError::ReservedBlockSize { number });
    }
    Ok(())
}
