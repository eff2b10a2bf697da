//! Encoder: appends CoAP messages to a caller-owned, reused buffer.

use super::block::Block;
use super::code::{Code, MessageType};
use super::message::{next_option, MAX_TOKEN_LEN, PAYLOAD_MARKER, VERSION};

/// Longest option value the length field can express (nibble 14: 269 plus a 16-bit
/// extension); longer values are truncated to it. No UDP datagram could carry one anyway.
pub const MAX_OPTION_VALUE_LEN: usize = 65535 + 269;

/// Appends one CoAP message to a caller-owned buffer.
///
/// The header and token are written by [`MessageWriter::new`]; options and payload are
/// written as they are added, so the buffer holds a complete message at every step and
/// [`MessageWriter::finish`] only reports its length. Options may be added in any order:
/// an option with a lower number than one already written is spliced into place (equal
/// numbers keep the order they were added in), re-encoding the delta of the option after
/// it. Nothing allocates once the buffer has the capacity for the message.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    options_start: usize,
    options_end: usize,
    last_number: u16,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message at the end of `buf`. A `token` longer than 8 bytes is truncated to
    /// its first 8 bytes, the longest RFC 7252 allows.
    pub fn new(buf: &'b mut Vec<u8>, ty: MessageType, code: Code, mid: u16, token: &[u8]) -> Self {
        let token = &token[..token.len().min(MAX_TOKEN_LEN)];
        let start = buf.len();
        let [mid_hi, mid_lo] = mid.to_be_bytes();
        buf.extend_from_slice(&[
            (VERSION << 6) | ((ty as u8) << 4) | token.len() as u8,
            code.0,
            mid_hi,
            mid_lo,
        ]);
        buf.extend_from_slice(token);
        let options_start = buf.len();
        MessageWriter {
            buf,
            start,
            options_start,
            options_end: options_start,
            last_number: 0,
        }
    }

    /// Adds option `number` with `value` (truncated to [`MAX_OPTION_VALUE_LEN`]).
    pub fn option(&mut self, number: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(MAX_OPTION_VALUE_LEN)];
        if number >= self.last_number {
            let (header, len) = encode_header(number - self.last_number, value.len());
            self.splice(self.options_end, 0, &[&header[..len], value]);
            self.last_number = number;
            return self;
        }
        // Find the first option numbered above `number`; it gets a new, smaller delta.
        let mut at = self.options_start;
        let mut prev = 0u16;
        let mut rest = &self.buf[self.options_start..self.options_end];
        while let Ok((n, next_value, after)) = next_option(prev, rest) {
            if n > number {
                let old_header_len = rest.len() - after.len() - next_value.len();
                let (new, new_len) = encode_header(number - prev, value.len());
                let (next, next_len) = encode_header(n - number, next_value.len());
                self.splice(
                    at,
                    old_header_len,
                    &[&new[..new_len], value, &next[..next_len]],
                );
                return self;
            }
            at += rest.len() - after.len();
            prev = n;
            rest = after;
        }
        // Unreachable while `last_number` is the largest number written; append anyway.
        let (header, len) = encode_header(number.saturating_sub(prev), value.len());
        self.splice(self.options_end, 0, &[&header[..len], value]);
        self
    }

    /// Adds a uint option in its minimal big-endian form (0 is the empty value).
    pub fn uint_option(&mut self, number: u16, value: u32) -> &mut Self {
        let bytes = value.to_be_bytes();
        let skip = (value.leading_zeros() / 8) as usize;
        self.option(number, &bytes[skip..])
    }

    /// Adds a Block1/Block2 option.
    pub fn block_option(&mut self, number: u16, block: Block) -> &mut Self {
        let mut value = [0u8; 3];
        let len = block.encode(&mut value);
        self.option(number, &value[..len])
    }

    /// Appends `payload`, writing the payload marker first if this is the first non-empty
    /// payload; an empty payload writes nothing.
    pub fn payload(&mut self, payload: &[u8]) -> &mut Self {
        if payload.is_empty() {
            return self;
        }
        if self.buf.len() == self.options_end {
            self.buf.push(PAYLOAD_MARKER);
        }
        self.buf.extend_from_slice(payload);
        self
    }

    /// Number of bytes appended to the buffer for this message.
    pub fn finish(self) -> usize {
        self.buf.len() - self.start
    }

    /// Replaces `remove` bytes at `at` with the concatenation of `parts`, moving what
    /// follows, and accounts for the growth of the option region.
    fn splice(&mut self, at: usize, remove: usize, parts: &[&[u8]]) {
        let insert: usize = parts.iter().map(|p| p.len()).sum();
        let old_len = self.buf.len();
        if at == old_len && remove == 0 {
            // Options added in order before any payload: a plain append.
            for part in parts {
                self.buf.extend_from_slice(part);
            }
            self.options_end += insert;
            return;
        }
        if insert >= remove {
            self.buf.resize(old_len + insert - remove, 0);
            self.buf.copy_within(at + remove..old_len, at + insert);
        } else {
            self.buf.copy_within(at + remove..old_len, at + insert);
            self.buf.truncate(old_len - (remove - insert));
        }
        let mut pos = at;
        for part in parts {
            self.buf[pos..pos + part.len()].copy_from_slice(part);
            pos += part.len();
        }
        self.options_end = self.options_end + insert - remove;
    }
}

/// Encodes an option header (delta and length with their extended bytes).
fn encode_header(delta: u16, len: usize) -> ([u8; 5], usize) {
    let mut out = [0u8; 5];
    let mut n = 1;
    let d = encode_nibble(usize::from(delta), &mut out, &mut n);
    let l = encode_nibble(len.min(MAX_OPTION_VALUE_LEN), &mut out, &mut n);
    out[0] = (d << 4) | l;
    (out, n)
}

/// The nibble for a delta or length, writing its extended bytes at `out[*n..]`.
fn encode_nibble(value: usize, out: &mut [u8; 5], n: &mut usize) -> u8 {
    if value < 13 {
        value as u8
    } else if value < 269 {
        out[*n] = (value - 13) as u8;
        *n += 1;
        13
    } else {
        let ext = ((value - 269) as u16).to_be_bytes();
        out[*n..*n + 2].copy_from_slice(&ext);
        *n += 2;
        14
    }
}

/// Appends an empty message (code 0.00, no token): an empty ACK or a RST.
pub fn write_empty(buf: &mut Vec<u8>, ty: MessageType, mid: u16) {
    let [hi, lo] = mid.to_be_bytes();
    buf.extend_from_slice(&[(VERSION << 6) | ((ty as u8) << 4), Code::EMPTY.0, hi, lo]);
}
