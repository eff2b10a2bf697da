//! The journal's wire format: self-delimiting, checksummed frames, one record each.
//!
//! ```text
//! 0..2   magic "LW"
//! 2      format version (FORMAT_VERSION)
//! 3      record kind
//! 4..8   payload length, u32 little-endian
//! 8..12  CRC-32 (IEEE) of bytes 2..8 and the payload
//! 12..   payload
//! ```
//!
//! A reader that meets a frame it cannot trust (bad magic, implausible length, checksum
//! mismatch, payload that does not decode) skips to the next magic that starts a valid
//! frame, so one corrupted record costs that record only; bytes that run to the end of
//! the file without forming a frame are a torn tail (the write a crash interrupted). A
//! frame with a valid checksum and a newer format version is refused outright: its
//! records would otherwise be dropped and the next compaction would erase them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::sync::Arc;

use ahash::AHashMap;

use crate::lwm2m::{ObjectLink, ObjectList};

/// Frame magic.
const MAGIC: [u8; 2] = *b"LW";

/// The format this gateway writes, and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 12;

/// Largest payload accepted: a registration is bounded by its Register (a datagram or a
/// Block1 transfer capped well below this), and a larger length is corruption.
const MAX_PAYLOAD: usize = 1 << 20;

/// Longest list (params, links, observations, content formats) a record may claim; a
/// larger count is corruption, and refusing it bounds what a decode allocates.
const MAX_ITEMS: usize = 1 << 16;

const KIND_ENDPOINT: u8 = 1;
const KIND_REMOVED: u8 = 2;

/// One observation of a stored endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObservation {
    /// The CoAP token notifications carry.
    pub token: [u8; 8],
    /// The last Observe sequence number published.
    pub last_seq: Option<u32>,
    /// The command's echoed keys (`requestID`, …) as a JSON fragment.
    pub echo: String,
    /// The path exactly as the command sent it.
    pub req_path: String,
}

/// A borrowed observation, for encoding without copying.
#[derive(Debug, Clone, Copy)]
pub struct ObservationRef<'a> {
    /// The CoAP token notifications carry.
    pub token: [u8; 8],
    /// The last Observe sequence number published.
    pub last_seq: Option<u32>,
    /// The command's echoed keys as a JSON fragment.
    pub echo: &'a str,
    /// The path as the command sent it.
    pub req_path: &'a str,
}

/// A registration as journaled: everything needed to serve the device after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEndpoint {
    /// The location's random key.
    pub key: u64,
    /// The location's home shard.
    pub home: u8,
    /// Orders this record against others of the same key (higher wins).
    pub generation: u32,
    /// Endpoint client name.
    pub ep: String,
    /// The address its datagrams last came from.
    pub addr: SocketAddr,
    /// When it registered, Unix seconds.
    pub registered_unix: u64,
    /// When its lifetime ends, Unix seconds.
    pub expires_unix: u64,
    /// Lifetime in seconds.
    pub lifetime: u32,
    /// Enabler version as registered (`"1.1"`).
    pub version: String,
    /// Binding as registered (`"UQ"`).
    pub binding: String,
    /// Other query parameters in arrival order.
    pub params: Vec<(String, String)>,
    /// The object list, when one came; shared between the records that carry the same.
    pub object_list: Option<Arc<ObjectList>>,
    /// Active observations.
    pub observations: Vec<StoredObservation>,
}

/// A record of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An endpoint's whole state, replacing any record of lower generation.
    Endpoint(Box<StoredEndpoint>),
    /// The endpoint of `key` ended (deregistered, expired, replaced).
    Removed {
        /// Its location key.
        key: u64,
        /// Higher than any generation of its state.
        generation: u32,
        /// When, Unix seconds; tombstones are kept a while after compaction.
        at_unix: u64,
    },
}

impl Record {
    /// The location key the record is about.
    pub fn key(&self) -> u64 {
        match self {
            Record::Endpoint(e) => e.key,
            Record::Removed { key, .. } => *key,
        }
    }

    /// The record's generation.
    pub fn generation(&self) -> u32 {
        match self {
            Record::Endpoint(e) => e.generation,
            Record::Removed { generation, .. } => *generation,
        }
    }

    /// Appends the record as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Endpoint(e) => {
                let obs: Vec<ObservationRef<'_>> = e
                    .observations
                    .iter()
                    .map(|o| ObservationRef {
                        token: o.token,
                        last_seq: o.last_seq,
                        echo: &o.echo,
                        req_path: &o.req_path,
                    })
                    .collect();
                encode_endpoint(
                    out,
                    &EndpointRef {
                        key: e.key,
                        home: e.home,
                        generation: e.generation,
                        ep: &e.ep,
                        addr: e.addr,
                        registered_unix: e.registered_unix,
                        expires_unix: e.expires_unix,
                        lifetime: e.lifetime,
                        version: &e.version,
                        binding: &e.binding,
                        params: &e.params,
                        object_list: e.object_list.as_deref(),
                    },
                    &obs,
                );
            }
            Record::Removed {
                key,
                generation,
                at_unix,
            } => encode_removed(out, *key, *generation, *at_unix),
        }
    }
}

/// A borrowed endpoint, for encoding straight from a shard's tables.
#[derive(Debug, Clone, Copy)]
pub struct EndpointRef<'a> {
    /// The location's random key.
    pub key: u64,
    /// The location's home shard.
    pub home: u8,
    /// Generation of this state.
    pub generation: u32,
    /// Endpoint client name.
    pub ep: &'a str,
    /// Last source address.
    pub addr: SocketAddr,
    /// Registration time, Unix seconds.
    pub registered_unix: u64,
    /// Lifetime deadline, Unix seconds.
    pub expires_unix: u64,
    /// Lifetime in seconds.
    pub lifetime: u32,
    /// Enabler version.
    pub version: &'a str,
    /// Binding.
    pub binding: &'a str,
    /// Other query parameters.
    pub params: &'a [(String, String)],
    /// The object list.
    pub object_list: Option<&'a ObjectList>,
}

/// Appends an endpoint frame.
pub fn encode_endpoint(out: &mut Vec<u8>, e: &EndpointRef<'_>, observations: &[ObservationRef<'_>]) {
    let start = begin(out, KIND_ENDPOINT);
    put_u64(out, e.key);
    out.push(e.home);
    put_u32(out, e.generation);
    put_str(out, e.ep);
    put_addr(out, e.addr);
    put_u64(out, e.registered_unix);
    put_u64(out, e.expires_unix);
    put_u32(out, e.lifetime);
    put_str(out, e.version);
    put_str(out, e.binding);
    put_u32(out, e.params.len() as u32);
    for (k, v) in e.params {
        put_str(out, k);
        put_str(out, v);
    }
    match e.object_list {
        None => out.push(0),
        Some(list) => {
            out.push(1);
            // Length-prefixed, so a reader can share identical lists by their bytes.
            let at = out.len();
            put_u32(out, 0);
            put_str(out, &list.alternate_path);
            put_u32(out, list.content_formats.len() as u32);
            for cf in &list.content_formats {
                out.extend_from_slice(&cf.to_le_bytes());
            }
            put_u32(out, list.links.len() as u32);
            for link in &list.links {
                put_str(out, &link.path);
                put_opt_str(out, link.version.as_deref());
            }
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
    }
    put_u32(out, observations.len() as u32);
    for o in observations {
        out.extend_from_slice(&o.token);
        match o.last_seq {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                put_u32(out, s);
            }
        }
        put_str(out, o.echo);
        put_str(out, o.req_path);
    }
    finish(out, start);
}

/// Appends a tombstone frame.
pub fn encode_removed(out: &mut Vec<u8>, key: u64, generation: u32, at_unix: u64) {
    let start = begin(out, KIND_REMOVED);
    put_u64(out, key);
    put_u32(out, generation);
    put_u64(out, at_unix);
    finish(out, start);
}

fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind);
    out.extend_from_slice(&[0; 8]);
    start
}

fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&out[start + 2..start + 8], &out[start + HEADER_LEN..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(payload);
    h.finalize()
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_le_bytes());
}

/// Why a frame's payload did not decode (the frame is then skipped as corrupt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a field.
    #[error("record ends inside a field")]
    Truncated,
    /// A field holds a value no writer produces.
    #[error("record holds an invalid {0}")]
    Invalid(&'static str),
    /// Bytes are left after the last field.
    #[error("record has trailing bytes")]
    Trailing,
    /// The kind byte is not one this version defines.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
}

/// A checked reader over a payload: every accessor fails instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_ITEMS || n > self.data.len() {
            return Err(DecodeError::Invalid("count"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid("string"))
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("flag")),
        }
    }

    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(DecodeError::Invalid("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

/// Distinct object lists shared while decoding at most; a fleet registers a handful.
const MAX_SHARED_LISTS: usize = 1024;

/// Object lists by their encoded bytes, so a million records of one fleet decode into one
/// shared list rather than a million copies.
#[derive(Debug, Default)]
pub struct ListCache {
    by_bytes: AHashMap<Box<[u8]>, Arc<ObjectList>>,
}

impl ListCache {
    fn get_or_decode(&mut self, bytes: &[u8]) -> Result<Arc<ObjectList>, DecodeError> {
        if let Some(list) = self.by_bytes.get(bytes) {
            return Ok(Arc::clone(list));
        }
        let mut r = Reader { data: bytes };
        let list = Arc::new(decode_object_list(&mut r)?);
        if !r.data.is_empty() {
            return Err(DecodeError::Trailing);
        }
        if self.by_bytes.len() < MAX_SHARED_LISTS {
            self.by_bytes.insert(bytes.into(), Arc::clone(&list));
        }
        Ok(list)
    }
}

/// Decodes one frame's payload.
pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
    decode_payload_shared(kind, payload, &mut ListCache::default())
}

/// [`decode_payload`] sharing object lists through `lists`.
pub fn decode_payload_shared(
    kind: u8,
    payload: &[u8],
    lists: &mut ListCache,
) -> Result<Record, DecodeError> {
    let mut r = Reader { data: payload };
    let record = match kind {
        KIND_ENDPOINT => Record::Endpoint(Box::new(decode_endpoint(&mut r, lists)?)),
        KIND_REMOVED => Record::Removed {
            key: r.u64()?,
            generation: r.u32()?,
            at_unix: r.u64()?,
        },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if !r.data.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(record)
}

fn decode_object_list(r: &mut Reader<'_>) -> Result<ObjectList, DecodeError> {
    let alternate_path = r.string()?;
    let n = r.count()?;
    let mut content_formats = Vec::with_capacity(n);
    for _ in 0..n {
        content_formats.push(r.u16()?);
    }
    let n = r.count()?;
    let mut links = Vec::with_capacity(n);
    for _ in 0..n {
        let path = r.string()?;
        let version = if r.flag()? { Some(r.string()?) } else { None };
        links.push(ObjectLink { path, version });
    }
    Ok(ObjectList {
        alternate_path,
        content_formats,
        links,
    })
}

fn decode_endpoint(
    r: &mut Reader<'_>,
    lists: &mut ListCache,
) -> Result<StoredEndpoint, DecodeError> {
    let key = r.u64()?;
    let home = r.u8()?;
    let generation = r.u32()?;
    let ep = r.string()?;
    let addr = r.addr()?;
    let registered_unix = r.u64()?;
    let expires_unix = r.u64()?;
    let lifetime = r.u32()?;
    let version = r.string()?;
    let binding = r.string()?;
    let n = r.count()?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        params.push((r.string()?, r.string()?));
    }
    let object_list = if r.flag()? {
        let n = r.u32()? as usize;
        Some(lists.get_or_decode(r.take(n)?)?)
    } else {
        None
    };
    let n = r.count()?;
    let mut observations = Vec::with_capacity(n);
    for _ in 0..n {
        let token = r.array::<8>()?;
        let last_seq = if r.flag()? { Some(r.u32()?) } else { None };
        observations.push(StoredObservation {
            token,
            last_seq,
            echo: r.string()?,
            req_path: r.string()?,
        });
    }
    Ok(StoredEndpoint {
        key,
        home,
        generation,
        ep,
        addr,
        registered_unix,
        expires_unix,
        lifetime,
        version,
        binding,
        params,
        object_list,
        observations,
    })
}

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

/// Bytes read from the source at a time.
const READ_CHUNK: usize = 4 << 20;

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
        if self.buf.len() < self.end + READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
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
                    self.skipping
                        .get_or_insert(self.base + self.start as u64);
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
    loop {
        // Reading from a slice cannot fail.
        let Ok(next) = reader.next_frame() else {
            break;
        };
        let Some(frame) = next else { break };
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

#[cfg(test)]
#[path = "record_tests.rs"]
pub(crate) mod tests;
