//! The plaintext ServerHello (RFC 5246 §7.4.1.3, RFC 6347 §4.2.2) the server sends in
//! epoch 0: what record protection needs to know about the negotiated session.
//!
//! ```text
//! handshake header (RFC 6347 §4.2.2), 12 bytes:
//! 0      msg_type (2 = server_hello)
//! 1..4   length, u24
//! 4..6   message_seq
//! 6..9   fragment_offset, u24
//! 9..12  fragment_length, u24
//! server_hello body:
//! 0..2   server_version
//! 2..34  random
//! 34     session_id length, then session_id (≤ 32)
//! ..     cipher_suite u16, compression_method u8
//! ..     extensions length u16, then type u16 / length u16 / data, when present
//! ```
//!
//! Handshake messages may be split across records; a ServerHello that is (unlikely: it is
//! about a hundred bytes) is reported as [`HelloError::Fragmented`] rather than reassembled.

use std::ops::Range;

use super::record::{records, ContentType};

/// Bytes of the DTLS handshake message header.
pub const HANDSHAKE_HEADER_LEN: usize = 12;

/// Handshake message type of a ServerHello.
pub const SERVER_HELLO: u8 = 2;

/// Extension `encrypt_then_mac` (RFC 7366): CBC records carry the MAC over the ciphertext.
pub const EXT_ENCRYPT_THEN_MAC: u16 = 0x0016;

/// Extension `extended_master_secret` (RFC 7627): the master secret covers the handshake.
pub const EXT_EXTENDED_MASTER_SECRET: u16 = 0x0017;

/// Extension `connection_id` (RFC 9146).
pub const EXT_CONNECTION_ID: u16 = 0x0036;

/// Longest session id (RFC 5246 §7.4.1.2).
const MAX_SESSION_ID_LEN: usize = 32;

/// Extensions tracked for duplicates; more than this many distinct ones is still parsed,
/// only not checked for repeats beyond the first [`MAX_TRACKED_EXTENSIONS`].
const MAX_TRACKED_EXTENSIONS: usize = 32;

const MSG_TYPE: usize = 0;
const LENGTH: Range<usize> = 1..4;
const MESSAGE_SEQ: Range<usize> = 4..6;
const FRAGMENT_OFFSET: Range<usize> = 6..9;
const FRAGMENT_LENGTH: Range<usize> = 9..12;

/// Why no ServerHello could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The datagram holds no ServerHello in an epoch-0 handshake record.
    #[error("no ServerHello in the datagram")]
    NotFound,
    /// The ServerHello is split over several fragments; it is not reassembled here.
    #[error("ServerHello is fragmented")]
    Fragmented,
    /// A handshake header or the message body ends early.
    #[error("handshake message truncated")]
    Truncated,
    /// The session id is longer than 32 bytes.
    #[error("session id of {0} bytes")]
    BadSessionId(usize),
    /// The extensions block is malformed: lengths do not add up, a known extension has
    /// the wrong body, or one appears twice.
    #[error("malformed extension {0:#06x}")]
    BadExtension(u16),
    /// Bytes follow the extensions inside the message.
    #[error("bytes after the ServerHello extensions")]
    TrailingBytes,
}

/// One handshake message header and the fragment bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeFragment<'a> {
    /// Message type.
    pub msg_type: u8,
    /// Length of the whole message.
    pub length: u32,
    /// Message sequence number within the handshake.
    pub message_seq: u16,
    /// Offset of this fragment within the message.
    pub fragment_offset: u32,
    /// The fragment's bytes (`fragment_length` of them).
    pub body: &'a [u8],
}

impl HandshakeFragment<'_> {
    /// Whether this fragment is the whole message.
    pub fn is_whole(&self) -> bool {
        self.fragment_offset == 0 && self.body.len() as u32 == self.length
    }
}

/// Splits the first handshake message fragment off a handshake record's plaintext.
pub fn handshake_fragment(buf: &[u8]) -> Result<(HandshakeFragment<'_>, &[u8]), HelloError> {
    let Some((header, rest)) = buf.split_first_chunk::<HANDSHAKE_HEADER_LEN>() else {
        return Err(HelloError::Truncated);
    };
    let frag_len = be24(&header[FRAGMENT_LENGTH]);
    let (body, rest) = rest
        .split_at_checked(frag_len as usize)
        .ok_or(HelloError::Truncated)?;
    let fragment = HandshakeFragment {
        msg_type: header[MSG_TYPE],
        length: be24(&header[LENGTH]),
        message_seq: u16::from_be_bytes([header[MESSAGE_SEQ.start], header[MESSAGE_SEQ.end - 1]]),
        fragment_offset: be24(&header[FRAGMENT_OFFSET]),
        body,
    };
    Ok((fragment, rest))
}

fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// What a ServerHello says about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello<'a> {
    /// `server_version`, `0xfefd` for DTLS 1.2.
    pub version: u16,
    /// `server_random`, an input of the key derivation.
    pub random: [u8; 32],
    /// Session id, for resumption.
    pub session_id: &'a [u8],
    /// The negotiated cipher suite id.
    pub cipher_suite: u16,
    /// The compression method, 0 (none) in any sane session.
    pub compression_method: u8,
    /// Whether `encrypt_then_mac` (RFC 7366) was negotiated.
    pub encrypt_then_mac: bool,
    /// Whether `extended_master_secret` (RFC 7627) was negotiated.
    pub extended_master_secret: bool,
    /// The connection id the server asks the client to send (RFC 9146), when negotiated;
    /// may be empty (the server receives without CID but the client wants one).
    pub connection_id: Option<&'a [u8]>,
}

impl<'a> ServerHello<'a> {
    /// Parses a ServerHello body (the handshake message without its 12-byte header).
    pub fn parse(body: &'a [u8]) -> Result<ServerHello<'a>, HelloError> {
        let mut r = Reader(body);
        let version = r.u16()?;
        let random = *r
            .take(32)?
            .first_chunk::<32>()
            .ok_or(HelloError::Truncated)?;
        let sid_len = usize::from(r.u8()?);
        if sid_len > MAX_SESSION_ID_LEN {
            return Err(HelloError::BadSessionId(sid_len));
        }
        let session_id = r.take(sid_len)?;
        let cipher_suite = r.u16()?;
        let compression_method = r.u8()?;
        let mut hello = ServerHello {
            version,
            random,
            session_id,
            cipher_suite,
            compression_method,
            encrypt_then_mac: false,
            extended_master_secret: false,
            connection_id: None,
        };
        if r.0.is_empty() {
            return Ok(hello);
        }
        let ext_len = usize::from(r.u16()?);
        let mut exts = Reader(r.take(ext_len).map_err(|_| HelloError::BadExtension(0))?);
        if !r.0.is_empty() {
            return Err(HelloError::TrailingBytes);
        }
        let mut seen = [0u16; MAX_TRACKED_EXTENSIONS];
        let mut n_seen = 0;
        while !exts.0.is_empty() {
            let ty = exts.u16().map_err(|_| HelloError::BadExtension(0))?;
            let len = usize::from(exts.u16().map_err(|_| HelloError::BadExtension(ty))?);
            let data = exts.take(len).map_err(|_| HelloError::BadExtension(ty))?;
            if seen[..n_seen].contains(&ty) {
                return Err(HelloError::BadExtension(ty));
            }
            if n_seen < MAX_TRACKED_EXTENSIONS {
                seen[n_seen] = ty;
                n_seen += 1;
            }
            match ty {
                EXT_ENCRYPT_THEN_MAC | EXT_EXTENDED_MASTER_SECRET if !data.is_empty() => {
                    return Err(HelloError::BadExtension(ty));
                }
                EXT_ENCRYPT_THEN_MAC => hello.encrypt_then_mac = true,
                EXT_EXTENDED_MASTER_SECRET => hello.extended_master_secret = true,
                EXT_CONNECTION_ID => match data.split_first() {
                    Some((&n, cid)) if usize::from(n) == cid.len() => {
                        hello.connection_id = Some(cid);
                    }
                    _ => return Err(HelloError::BadExtension(ty)),
                },
                _ => {}
            }
        }
        Ok(hello)
    }

    /// Finds and parses the ServerHello in one of the server's epoch-0 datagrams, which
    /// usually carries the rest of its flight too. Records that do not parse are skipped.
    pub fn find(datagram: &'a [u8]) -> Result<ServerHello<'a>, HelloError> {
        for record in records(datagram).flatten() {
            if record.epoch() != 0 || record.content_type() != ContentType::HANDSHAKE {
                continue;
            }
            let mut rest = record.fragment();
            while !rest.is_empty() {
                let (fragment, after) = handshake_fragment(rest)?;
                rest = after;
                if fragment.msg_type != SERVER_HELLO {
                    continue;
                }
                if !fragment.is_whole() {
                    return Err(HelloError::Fragmented);
                }
                return ServerHello::parse(fragment.body);
            }
        }
        Err(HelloError::NotFound)
    }
}

/// A cursor that fails with [`HelloError::Truncated`] instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(HelloError::Truncated)?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ServerHello body: DTLS 1.2, random 0x11.., an 8-byte session id, suite 0xC0A8,
    /// no compression, then `exts` (already length-prefixed, or empty for none).
    fn body(exts: &[u8]) -> Vec<u8> {
        let mut b = vec![0xfe, 0xfd];
        b.extend_from_slice(&[0x11; 32]);
        b.push(8);
        b.extend_from_slice(&[0x22; 8]);
        b.extend_from_slice(&[0xc0, 0xa8, 0]);
        b.extend_from_slice(exts);
        b
    }

    /// `body` wrapped in a whole handshake message and an epoch-0 handshake record, after
    /// a HelloVerifyRequest-shaped message of another type in the same record.
    fn datagram(body: &[u8]) -> Vec<u8> {
        let mut hs = vec![3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xaa];
        let len = (body.len() as u32).to_be_bytes();
        hs.extend_from_slice(&[SERVER_HELLO, len[1], len[2], len[3], 0, 1, 0, 0, 0]);
        hs.extend_from_slice(&[len[1], len[2], len[3]]);
        hs.extend_from_slice(body);
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
        d.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        d.extend_from_slice(&hs);
        d
    }

    #[test]
    fn test_parse_with_extensions() {
        let exts = [
            0, 20, // extensions length
            0xff, 0x01, 0, 1, 0, // renegotiation_info
            0x00, 0x16, 0, 0, // encrypt_then_mac
            0x00, 0x17, 0, 0, // extended_master_secret
            0x00, 0x36, 0, 3, 2, 0xc1, 0xd2, // connection_id, 2 bytes
        ];
        let d = datagram(&body(&exts));
        let h = ServerHello::find(&d).expect("ServerHello");
        assert_eq!(h.version, 0xfefd);
        assert_eq!(h.random, [0x11; 32]);
        assert_eq!(h.session_id, &[0x22; 8]);
        assert_eq!(h.cipher_suite, 0xc0a8);
        assert_eq!(h.compression_method, 0);
        assert!(h.encrypt_then_mac);
        assert!(h.extended_master_secret);
        assert_eq!(h.connection_id, Some(&[0xc1, 0xd2][..]));
    }

    #[test]
    fn test_parse_without_extensions() {
        let b = body(&[]);
        let h = ServerHello::parse(&b).expect("ServerHello");
        assert!(!h.encrypt_then_mac && !h.extended_master_secret);
        assert_eq!(h.connection_id, None);
        let b = body(&[0, 0]);
        let h = ServerHello::parse(&b).expect("empty extensions");
        assert!(!h.encrypt_then_mac);
    }

    #[test]
    fn test_malformed_extensions() {
        let b = body(&[0, 5, 0x00, 0x16, 0, 1, 0]);
        assert_eq!(
            ServerHello::parse(&b),
            Err(HelloError::BadExtension(0x0016))
        );
        let b = body(&[0, 8, 0x00, 0x17, 0, 0, 0x00, 0x17, 0, 0]);
        assert_eq!(
            ServerHello::parse(&b),
            Err(HelloError::BadExtension(0x0017))
        );
        let b = body(&[0, 6, 0x00, 0x36, 0, 2, 5, 1]);
        assert_eq!(
            ServerHello::parse(&b),
            Err(HelloError::BadExtension(0x0036))
        );
        let b = body(&[0, 4, 0x00, 0x16, 0, 0, 9]);
        assert_eq!(ServerHello::parse(&b), Err(HelloError::TrailingBytes));
        let b = body(&[0, 9, 0x00, 0x16, 0, 0]);
        assert_eq!(ServerHello::parse(&b), Err(HelloError::BadExtension(0)));
    }

    #[test]
    fn test_truncated_and_bad_session_id() {
        let b = body(&[]);
        for n in 0..b.len() {
            assert_eq!(
                ServerHello::parse(&b[..n]),
                Err(HelloError::Truncated),
                "{n}"
            );
        }
        let mut b = body(&[]);
        b[34] = 33;
        assert_eq!(ServerHello::parse(&b), Err(HelloError::BadSessionId(33)));
    }

    #[test]
    fn test_fragmented_and_missing() {
        let mut d = datagram(&body(&[]));
        // The ServerHello's fragment_offset, 13 + 13 bytes in: claim a second fragment.
        d[13 + 13 + 8] = 1;
        assert_eq!(ServerHello::find(&d), Err(HelloError::Fragmented));
        let mut d = datagram(&body(&[]));
        d[4] = 1; // epoch 1: encrypted, not looked at
        assert_eq!(ServerHello::find(&d), Err(HelloError::NotFound));
        assert_eq!(ServerHello::find(&[]), Err(HelloError::NotFound));
    }

    #[test]
    fn test_handshake_fragment_header() {
        let d = [1, 0, 0, 5, 0, 7, 0, 0, 2, 0, 0, 3, 9, 8, 7, 0xff];
        let (f, rest) = handshake_fragment(&d).expect("fragment");
        assert_eq!(f.msg_type, 1);
        assert_eq!(f.length, 5);
        assert_eq!(f.message_seq, 7);
        assert_eq!(f.fragment_offset, 2);
        assert_eq!(f.body, &[9, 8, 7]);
        assert!(!f.is_whole());
        assert_eq!(rest, &[0xff]);
        assert_eq!(handshake_fragment(&d[..14]), Err(HelloError::Truncated));
    }
}
