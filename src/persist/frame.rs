//! Reading frames back: a bounded-memory reader that resynchronises after damage, and
//! [`scan`] over a byte slice.

use super::record::{
    checksum, decode_payload, decode_payload_shared, DecodeError, ListCache, Reader, Record,
    FORMAT_VERSION, HEADER_LEN, KIND_ENDPOINT, KIND_REMOVED, MAGIC, MAX_PAYLOAD,
};

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;

/// What a scan found besides the records it returned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    /// Records decoded.
    pub records: usize,
    /// Damaged stretches skipped between intact frames (each lost at least one record).
    pub corrupt: usize,
    /// Bytes in those stretches.
    pub corrupt_bytes: usize,
    /// Bytes at the end that never formed a frame: a write cut short.
    pub torn_tail: usize,
}

/// A frame written by a newer gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a record at byte {offset} was written in journal format {found}; this gateway reads format {FORMAT_VERSION} and older")]
pub struct NewerFormat {
    /// Byte offset of the frame.
    pub offset: usize,
    /// Its format version.
    pub found: u8,
}

/// How the frame at the start of `data` reads.
enum Frame {
    /// A frame of `len` bytes in all: version, kind and payload.
    Intact { len: usize, version: u8, kind: u8 },
    /// Not a frame.
    Bad,
    /// A plausible start of a frame that runs past the end of the data.
    Short,
}

fn frame_at(data: &[u8]) -> Frame {
    if data.len() < HEADER_LEN {
        return if MAGIC.starts_with(&data[..data.len().min(2)]) {
            Frame::Short
        } else {
            Frame::Bad
        };
    }
    if data[..2] != MAGIC {
        return Frame::Bad;
    }
    let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Frame::Bad;
    }
    let Some(frame) = data.get(..HEADER_LEN + len) else {
        return Frame::Short;
    };
    let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if checksum(&frame[2..8], &frame[HEADER_LEN..]) != crc {
        return Frame::Bad;
    }
    Frame::Intact {
        len: HEADER_LEN + len,
        version: data[2],
        kind: data[3],
    }
}

/// Bytes read from the source at a time, at most.
const READ_CHUNK: usize = 4 << 20;

/// Bytes read by the first read.
const FIRST_CHUNK: usize = 4 << 10;

/// One intact frame handed out by [`FrameReader`].
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    /// Offset of the frame in the source.
    pub offset: u64,
    /// Format version.
    pub version: u8,
    /// Record kind.
    pub kind: u8,
    /// The whole frame, header included.
    pub bytes: &'a [u8],
}

impl RawFrame<'_> {
    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// Decodes the record.
    pub fn decode(&self) -> Result<Record, DecodeError> {
        decode_payload(self.kind, self.payload())
    }

    /// Decodes the record, sharing object lists through `lists`.
    pub fn decode_shared(&self, lists: &mut ListCache) -> Result<Record, DecodeError> {
        decode_payload_shared(self.kind, self.payload(), lists)
    }

    /// The location key and generation, read without decoding the rest.
    pub fn key_and_generation(&self) -> Result<(u64, u32, bool), DecodeError> {
        let mut r = Reader {
            data: self.payload(),
        };
        match self.kind {
            KIND_ENDPOINT => {
                let key = r.u64()?;
                let _home = r.u8()?;
                Ok((key, r.u32()?, false))
            }
            KIND_REMOVED => Ok((r.u64()?, r.u32()?, true)),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Reads intact frames from a byte stream with bounded memory (a few MiB whatever the
/// file's size), skipping damaged stretches and counting them in its [`ScanReport`].
#[derive(Debug)]
pub struct FrameReader<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Source offset of `buf[0]`.
    base: u64,
    eof: bool,
    /// Source offset where the damaged stretch being skipped began.
    skipping: Option<u64>,
    report: ScanReport,
}

impl<R: std::io::Read> FrameReader<R> {
    /// A reader over `src`.
    pub fn new(src: R) -> FrameReader<R> {
        FrameReader {
            src,
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            skipping: None,
            report: ScanReport::default(),
        }
    }

    /// What was skipped so far (complete once [`FrameReader::next_frame`] returned `None`).
    pub fn report(&self) -> ScanReport {
        self.report
    }

    /// Counts a frame handed out intact whose record did not decode: a damaged record,
    /// not a kept one.
    pub fn count_undecodable(&mut self, frame_len: usize) {
        self.report.records = self.report.records.saturating_sub(1);
        self.report.corrupt += 1;
        self.report.corrupt_bytes += frame_len;
    }

    fn read_more(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        // Start small (a record is a few hundred bytes) and double up to READ_CHUNK, so a
        // short source costs no more than it holds.
        let chunk = (self.buf.len().max(FIRST_CHUNK / 2) * 2).min(READ_CHUNK);
        if self.buf.len() < self.end + chunk {
            self.buf.resize(self.end + chunk, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next intact frame, or `None` at the end of the source.
    pub fn next_frame(&mut self) -> std::io::Result<Option<RawFrame<'_>>> {
        loop {
            match frame_at(&self.buf[self.start..self.end]) {
                Frame::Intact { len, version, kind } => {
                    let offset = self.base + self.start as u64;
                    if let Some(from) = self.skipping.take() {
                        self.report.corrupt += 1;
                        self.report.corrupt_bytes += (offset - from) as usize;
                    }
                    let at = self.start;
                    self.start += len;
                    self.report.records += 1;
                    return Ok(Some(RawFrame {
                        offset,
                        version,
                        kind,
                        bytes: &self.buf[at..at + len],
                    }));
                }
                Frame::Short if !self.eof => self.read_more()?,
                Frame::Short | Frame::Bad => {
                    if self.start == self.end && self.eof {
                        if let Some(from) = self.skipping.take() {
                            self.report.torn_tail = (self.base + self.end as u64 - from) as usize;
                        }
                        return Ok(None);
                    }
                    if self.start == self.end {
                        self.read_more()?;
                        continue;
                    }
                    // Damaged: skip to the next magic and try there.
                    self.skipping.get_or_insert(self.base + self.start as u64);
                    let from = self.start + 1;
                    match self.buf[from.min(self.end)..self.end]
                        .windows(2)
                        .position(|w| w == MAGIC)
                    {
                        Some(p) => self.start = from + p,
                        None if self.eof => self.start = self.end,
                        None => {
                            // Keep the last byte: it may be the first of a magic.
                            self.start = self.end - 1;
                            self.read_more()?;
                        }
                    }
                }
            }
        }
    }
}

/// Reads every intact record of `data` in order, handing each to `each`.
///
/// Damaged stretches are skipped and counted; a torn tail ends the scan. Only a frame from
/// a newer format is an error.
pub fn scan(data: &[u8], mut each: impl FnMut(Record)) -> Result<ScanReport, NewerFormat> {
    let mut lists = ListCache::default();
    let mut reader = FrameReader::new(data);
    // Reading from a slice cannot fail.
    while let Ok(Some(frame)) = reader.next_frame() {
        if frame.version > FORMAT_VERSION {
            return Err(NewerFormat {
                offset: frame.offset as usize,
                found: frame.version,
            });
        }
        let len = frame.bytes.len();
        match frame.decode_shared(&mut lists) {
            Ok(record) => each(record),
            Err(_) => reader.count_undecodable(len),
        }
    }
    Ok(reader.report())
}
