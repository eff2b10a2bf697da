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

use crate::dtls::Security;
use crate::lwm2m::{ObjectLink, ObjectList};

/// Frame magic.
pub(super) const MAGIC: [u8; 2] = *b"LW";

/// The format this gateway writes, and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before a frame's payload.
pub(super) const HEADER_LEN: usize = 12;

/// Largest payload accepted: a registration is bounded by its Register (a datagram or a
/// Block1 transfer capped well below this), and a larger length is corruption.
pub(super) const MAX_PAYLOAD: usize = 1 << 20;

/// Longest list (params, links, observations, content formats) a record may claim; a
/// larger count is corruption, and refusing it bounds what a decode allocates.
const MAX_ITEMS: usize = 1 << 16;

pub(super) const KIND_ENDPOINT: u8 = 1;
pub(super) const KIND_REMOVED: u8 = 2;

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

/// A command queued for a sleeping device, as journaled: the MQTT command as it came, and
/// when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCommand {
    /// The command JSON.
    pub command: Vec<u8>,
    /// Unix seconds after which it is answered `expired` instead of sent.
    pub expires_unix: u64,
}

/// A borrowed queued command, for encoding without copying.
#[derive(Debug, Clone, Copy)]
pub struct QueuedRef<'a> {
    /// The command JSON.
    pub command: &'a [u8],
    /// When it expires, Unix seconds.
    pub expires_unix: u64,
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
    /// How it registered: plain, or over DTLS with a PSK or a certificate. Absent from
    /// records written before DTLS existed (read as plain).
    pub security: Security,
    /// Commands waiting for it to wake (queue mode). Written last, absent from records
    /// written before queue mode existed.
    pub queued: Vec<StoredCommand>,
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
                let queued: Vec<QueuedRef<'_>> = e
                    .queued
                    .iter()
                    .map(|q| QueuedRef {
                        command: &q.command,
                        expires_unix: q.expires_unix,
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
                        security: e.security,
                        queued: &queued,
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
    /// How it registered.
    pub security: Security,
    /// Commands waiting for it to wake.
    pub queued: &'a [QueuedRef<'a>],
}

/// Appends an endpoint frame.
pub fn encode_endpoint(
    out: &mut Vec<u8>,
    e: &EndpointRef<'_>,
    observations: &[ObservationRef<'_>],
) {
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
    out.push(e.security as u8);
    put_u32(out, e.queued.len() as u32);
    for q in e.queued {
        put_u32(out, q.command.len() as u32);
        out.extend_from_slice(q.command);
        put_u64(out, q.expires_unix);
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

pub(super) fn checksum(header: &[u8], payload: &[u8]) -> u32 {
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
pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.data.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(super) fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_ITEMS || n > self.data.len() {
            return Err(DecodeError::Invalid("count"));
        }
        Ok(n)
    }

    pub(super) fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid("string"))
    }

    pub(super) fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("flag")),
        }
    }

    pub(super) fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
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
    // The pins are resolved against the registry when the registration is restored.
    Ok(ObjectList {
        alternate_path,
        content_formats,
        links,
        pins: Box::default(),
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
    let security = match r.data.first() {
        None => Security::None,
        Some(_) => match r.u8()? {
            0 => Security::None,
            1 => Security::Psk,
            2 => Security::X509,
            _ => return Err(DecodeError::Invalid("security")),
        },
    };
    let mut queued = Vec::new();
    if !r.data.is_empty() {
        let n = r.count()?;
        queued.reserve(n);
        for _ in 0..n {
            let len = r.u32()? as usize;
            let command = r.take(len)?.to_vec();
            queued.push(StoredCommand {
                command,
                expires_unix: r.u64()?,
            });
        }
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
        security,
        queued,
    })
}

#[cfg(test)]
#[path = "record_tests.rs"]
pub(crate) mod tests;
