//! Checked view of DTLS 1.2 records (RFC 6347 §4.1), several to a datagram.
//!
//! ```text
//! 0      content type
//! 1..3   protocol version ({254, 253} for DTLS 1.2, {254, 255} for 1.0)
//! 3..5   epoch, u16 big-endian
//! 5..11  sequence number, 48 bits big-endian
//! 11..13 fragment length, u16 big-endian
//! 13..   fragment
//! ```
//!
//! [`records`] walks a datagram and yields one [`Record`] per record; [`Record::parse`]
//! checks everything the accessors rely on, so the accessors cannot fail. A record whose
//! length field is sound but whose type or version is not acceptable is reported as an
//! error and the walk goes on to the next record (RFC 6347 §4.1.2.7: invalid records are
//! discarded, not the datagram); a length that runs past the datagram ends the walk.
//! [`RecordHeader::emit`] writes the 13 header bytes on the send side.

use std::ops::Range;

/// Bytes of a DTLS 1.2 record header.
pub const HEADER_LEN: usize = 13;

/// Wire version of DTLS 1.2 (RFC 6347 §4.1: the one's complement of 1.2, `{254, 253}`).
pub const DTLS_1_2: u16 = 0xfefd;

/// Wire version of DTLS 1.0, which clients put on a ClientHello record for compatibility
/// with older servers (RFC 6347 §4.1); accepted by the view, refused by record protection.
pub const DTLS_1_0: u16 = 0xfeff;

/// Largest fragment a peer may send: 2^14 bytes of plaintext plus 2048 of expansion
/// (RFC 5246 §6.2.3); a longer length field is a protocol violation, not a big record.
pub const MAX_FRAGMENT_LEN: usize = (1 << 14) + 2048;

/// Largest sequence number: the field is 48 bits (RFC 6347 §4.1).
pub const MAX_SEQUENCE: u64 = (1 << 48) - 1;

const CONTENT_TYPE: usize = 0;
const VERSION: Range<usize> = 1..3;
const EPOCH: Range<usize> = 3..5;
const SEQUENCE: Range<usize> = 5..11;
const LENGTH: Range<usize> = 11..13;

/// A record's content type (RFC 5246 §6.2.1, RFC 6347, RFC 9146).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentType(pub u8);

impl ContentType {
    /// ChangeCipherSpec: the peer starts the next epoch.
    pub const CHANGE_CIPHER_SPEC: ContentType = ContentType(20);
    /// Alert.
    pub const ALERT: ContentType = ContentType(21);
    /// Handshake messages.
    pub const HANDSHAKE: ContentType = ContentType(22);
    /// Application data: the CoAP datagrams.
    pub const APPLICATION_DATA: ContentType = ContentType(23);
    /// Heartbeat (RFC 6520).
    pub const HEARTBEAT: ContentType = ContentType(24);
    /// A record carrying a connection id (RFC 9146); its header is longer by the negotiated
    /// CID length, which this view does not know, so such a record cannot be delimited here.
    pub const TLS12_CID: ContentType = ContentType(25);

    /// Whether the type is one this view recognises.
    pub fn is_known(self) -> bool {
        (20..=25).contains(&self.0)
    }
}

/// Why bytes are not an acceptable DTLS 1.2 record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes remain than a record header.
    #[error("{0} bytes left, fewer than a record header")]
    TruncatedHeader(usize),
    /// The length field runs past the end of the datagram.
    #[error("record claims {claimed} fragment bytes, {available} remain")]
    TruncatedFragment {
        /// The header's length field.
        claimed: usize,
        /// Bytes after the header.
        available: usize,
    },
    /// The length field exceeds [`MAX_FRAGMENT_LEN`].
    #[error("record length {0} exceeds the protocol maximum")]
    TooLong(usize),
    /// The version is neither DTLS 1.2 nor 1.0.
    #[error("record version {0:#06x} is not DTLS")]
    BadVersion(u16),
    /// A content type outside 20..=25.
    #[error("unknown content type {0}")]
    UnknownContentType(u8),
    /// A `tls12_cid` record: delimiting it needs the negotiated CID length (RFC 9146).
    #[error("connection-id record; CID is not negotiated here")]
    ConnectionId,
}

impl RecordError {
    /// Whether the walk over a datagram may go on after this error: the record's own length
    /// was sound, only its contents are unacceptable.
    pub fn is_skippable(self) -> bool {
        matches!(
            self,
            RecordError::BadVersion(_) | RecordError::UnknownContentType(_)
        )
    }
}

/// Borrowed view of one record: header and fragment, validated by [`Record::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// Splits the first record off `buf`, returning it and the bytes after it.
    ///
    /// On [`RecordError::is_skippable`] errors the record is still delimited;
    /// [`Record::skip`] finds where the next one starts.
    pub fn parse(buf: &'a [u8]) -> Result<(Record<'a>, &'a [u8]), RecordError> {
        if buf.len() >= HEADER_LEN && ContentType(buf[CONTENT_TYPE]) == ContentType::TLS12_CID {
            return Err(RecordError::ConnectionId);
        }
        let (len, total) = delimit(buf)?;
        let (bytes, rest) = buf.split_at(total);
        let content_type = ContentType(bytes[CONTENT_TYPE]);
        if !content_type.is_known() {
            return Err(RecordError::UnknownContentType(content_type.0));
        }
        let version = be16(&bytes[VERSION]);
        if version != DTLS_1_2 && version != DTLS_1_0 {
            return Err(RecordError::BadVersion(version));
        }
        debug_assert_eq!(bytes.len(), HEADER_LEN + len);
        Ok((Record { bytes }, rest))
    }

    /// The bytes after the first record of `buf` when its length field is sound.
    pub fn skip(buf: &'a [u8]) -> Option<&'a [u8]> {
        delimit(buf).ok().map(|(_, total)| &buf[total..])
    }

    /// The content type.
    pub fn content_type(&self) -> ContentType {
        ContentType(self.bytes[CONTENT_TYPE])
    }

    /// The wire version, [`DTLS_1_2`] or [`DTLS_1_0`].
    pub fn version(&self) -> u16 {
        be16(&self.bytes[VERSION])
    }

    /// The epoch: 0 during the first handshake, then one more per ChangeCipherSpec.
    pub fn epoch(&self) -> u16 {
        be16(&self.bytes[EPOCH])
    }

    /// The 48-bit sequence number within the epoch.
    pub fn sequence(&self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.bytes[SEQUENCE]);
        u64::from_be_bytes(b)
    }

    /// Epoch and sequence number as the 8 bytes the MAC and AEAD inputs use (RFC 6347 §4.1.2.1).
    pub fn sequence_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[EPOCH.start..SEQUENCE.end]);
        b
    }

    /// The header's length field, the fragment's length.
    pub fn len(&self) -> usize {
        self.bytes.len() - HEADER_LEN
    }

    /// Whether the fragment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fragment: plaintext in epoch 0, protected afterwards.
    pub fn fragment(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The header fields.
    pub fn header(&self) -> RecordHeader {
        RecordHeader {
            content_type: self.content_type(),
            version: self.version(),
            epoch: self.epoch(),
            sequence: self.sequence(),
            length: self.len() as u16,
        }
    }

    /// Header and fragment as they were on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Checks the header is whole, the length plausible and the fragment present; returns the
/// fragment length and the record's total length.
fn delimit(buf: &[u8]) -> Result<(usize, usize), RecordError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(RecordError::TruncatedHeader(buf.len()));
    };
    let len = usize::from(be16(&header[LENGTH]));
    if len > MAX_FRAGMENT_LEN {
        return Err(RecordError::TooLong(len));
    }
    let available = buf.len() - HEADER_LEN;
    if len > available {
        return Err(RecordError::TruncatedFragment {
            claimed: len,
            available,
        });
    }
    Ok((len, HEADER_LEN + len))
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The records of one datagram, in order.
pub fn records(datagram: &[u8]) -> Records<'_> {
    Records { rest: datagram }
}

/// Iterator over the records of a datagram; see [`records`].
///
/// Yields an error for a record that is delimited but unacceptable and goes on; yields an
/// error for bytes that cannot be delimited and stops.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Record::parse(self.rest) {
            Ok((record, rest)) => {
                self.rest = rest;
                Some(Ok(record))
            }
            Err(e) => {
                self.rest = match e.is_skippable() {
                    true => Record::skip(self.rest).unwrap_or_default(),
                    false => &[],
                };
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Records<'_> {}

/// A record header's fields, for writing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Content type.
    pub content_type: ContentType,
    /// Wire version; [`DTLS_1_2`] for everything this gateway sends.
    pub version: u16,
    /// Epoch.
    pub epoch: u16,
    /// Sequence number, at most [`MAX_SEQUENCE`]; higher bits are dropped.
    pub sequence: u64,
    /// Fragment length.
    pub length: u16,
}

impl RecordHeader {
    /// The 13 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[CONTENT_TYPE] = self.content_type.0;
        b[VERSION].copy_from_slice(&self.version.to_be_bytes());
        b[EPOCH].copy_from_slice(&self.epoch.to_be_bytes());
        b[SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes()[2..]);
        b[LENGTH].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Appends the header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSL 3.0 server flight after the handshake: ChangeCipherSpec (epoch 0, seq 5) and
    /// a 40-byte encrypted Finished (epoch 1, seq 0) in one datagram.
    fn ccs_and_finished() -> Vec<u8> {
        let mut d = vec![20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 5, 0, 1, 1];
        d.extend_from_slice(&[22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 40]);
        d.extend_from_slice(&[0xab; 40]);
        d
    }

    #[test]
    fn test_parse_two_records() {
        let d = ccs_and_finished();
        let rs: Vec<_> = records(&d)
            .collect::<Result<_, _>>()
            .expect("valid records");
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].content_type(), ContentType::CHANGE_CIPHER_SPEC);
        assert_eq!(rs[0].epoch(), 0);
        assert_eq!(rs[0].sequence(), 5);
        assert_eq!(rs[0].fragment(), &[1]);
        assert_eq!(rs[1].content_type(), ContentType::HANDSHAKE);
        assert_eq!(rs[1].version(), DTLS_1_2);
        assert_eq!(rs[1].epoch(), 1);
        assert_eq!(rs[1].sequence(), 0);
        assert_eq!(rs[1].len(), 40);
        assert_eq!(rs[1].sequence_bytes(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(rs[1].as_bytes(), &d[14..]);
    }

    #[test]
    fn test_sequence_is_48_bits() {
        let d = [
            23, 0xfe, 0xfd, 0x12, 0x34, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0, 0,
        ];
        let (r, rest) = Record::parse(&d).expect("valid record");
        assert!(rest.is_empty());
        assert!(r.is_empty());
        assert_eq!(r.epoch(), 0x1234);
        assert_eq!(r.sequence(), 0xffee_ddcc_bbaa);
    }

    #[test]
    fn test_emit_round_trips() {
        let h = RecordHeader {
            content_type: ContentType::APPLICATION_DATA,
            version: DTLS_1_2,
            epoch: 1,
            sequence: 0x0102_0304_0506,
            length: 3,
        };
        let mut out = Vec::new();
        h.emit(&mut out);
        assert_eq!(
            out,
            [23, 0xfe, 0xfd, 0, 1, 1, 2, 3, 4, 5, 6, 0, 3],
            "header bytes"
        );
        out.extend_from_slice(b"abc");
        let (r, _) = Record::parse(&out).expect("emitted record");
        assert_eq!(r.header(), h);
        assert_eq!(r.fragment(), b"abc");
    }

    #[test]
    fn test_truncation_ends_the_walk() {
        let d = ccs_and_finished();
        for cut in [1, 13, 15, 20, 26, d.len() - 1] {
            let got: Vec<_> = records(&d[..cut]).collect();
            let last = got.last().expect("an error at the end");
            assert!(
                matches!(
                    last,
                    Err(RecordError::TruncatedHeader(_) | RecordError::TruncatedFragment { .. })
                ),
                "cut at {cut}: {got:?}"
            );
        }
        assert_eq!(
            Record::parse(&d[..12]).expect_err("invalid record"),
            RecordError::TruncatedHeader(12)
        );
    }

    #[test]
    fn test_bad_version_and_type_are_skipped() {
        let mut d = ccs_and_finished();
        d[1] = 0x03; // TLS 1.2 "03 03" is not DTLS
        d[2] = 0x03;
        let got: Vec<_> = records(&d).collect();
        assert_eq!(got[0], Err(RecordError::BadVersion(0x0303)));
        assert_eq!(got[1].expect("second record").epoch(), 1);
        let mut d = ccs_and_finished();
        d[0] = 99;
        let got: Vec<_> = records(&d).collect();
        assert_eq!(got[0], Err(RecordError::UnknownContentType(99)));
        assert!(got[1].is_ok());
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn test_cid_and_oversized_records_end_the_walk() {
        let mut d = ccs_and_finished();
        d[0] = 25;
        let got: Vec<_> = records(&d).collect();
        assert_eq!(got, [Err(RecordError::ConnectionId)]);
        let mut big = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0x48, 0x01];
        big.resize(HEADER_LEN + 0x4801, 0);
        assert_eq!(
            Record::parse(&big).expect_err("invalid record"),
            RecordError::TooLong(0x4801)
        );
    }

    #[test]
    fn test_dtls_1_0_accepted_by_the_view() {
        let d = [22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        assert_eq!(
            Record::parse(&d).expect("DTLS 1.0 record").0.version(),
            DTLS_1_0
        );
    }

    #[test]
    fn test_never_panics_on_short_prefixes() {
        let d = ccs_and_finished();
        for n in 0..=d.len() {
            for r in records(&d[..n]) {
                let _ = r.map(|r| (r.header(), r.fragment().len()));
            }
        }
    }
}
