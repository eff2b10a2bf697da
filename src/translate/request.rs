//! A parsed [`Command`] as the CoAP request the gateway sends to the device.
//!
//! Methods and options follow LwM2M 1.1 §6 (and EMQX's choices where the spec leaves
//! room): read and observe are GET, discover is GET with Accept link-format, write is PUT
//! (replace) or POST (partial update), write-attr is PUT with the attributes as Uri-Query,
//! execute and create are POST, delete is DELETE, cancel-observe is GET with Observe 1.
//! Values are encoded as TLV for LwM2M 1.0 devices and SenML JSON for 1.1 and later.
//!
//! The LwM2M 1.1 composite operations go to the root path `/` (after the alternate path)
//! with a SenML JSON (or, with `data.format`, SenML CBOR) payload (Transport §6.3.6): read-composite is FETCH (RFC 8132) naming
//! the paths, observe-composite and its cancel the same FETCH with Observe 0 / 1, and
//! write-composite is iPATCH carrying the values.

use crate::coap::{option, Block, Code, MessageType, MessageWriter, MAX_BLOCK_NUM};
use crate::content::{self, Entry};
use crate::lwm2m::{Path, Version};

use super::command::{Command, CommandError, CommandErrorKind, CommandKind, Target};

/// Largest request sent in one datagram. RFC 7252 §4.6: without a known path MTU a
/// message should stay within 1152 bytes; a bigger body is sent in Block1 blocks
/// (RFC 7959 §2.5), each datagram within this size.
pub const MAX_REQUEST_LEN: usize = 1152;

/// Block size exponent a Block1 transfer starts at: SZX 6 is 1024 bytes, the largest
/// block RFC 7959 allows and the largest power of two that leaves room for header, token
/// and options within [`MAX_REQUEST_LEN`]. A device that wants smaller blocks says so in
/// its 2.31 or 4.13 response and the transfer goes on at its size.
pub const BLOCK1_START_SZX: u8 = 6;

/// Largest request body sent to one device in Block1 blocks. A firmware package pushed
/// to `/5/0/0` is hundreds of KiB; 512 KiB is 512 blocks of 1 KiB, minutes on a slow
/// link, and a command JSON of [`super::command::MAX_COMMAND_LEN`] (1 MiB) carries at
/// most ~768 KiB of base64 opaque, so this is the limit a write actually meets. A bigger
/// body is refused with 4.13 before anything is sent: images that large belong behind a
/// Package URI (`/5/0/1`) the device downloads itself.
pub const MAX_BLOCK1_BODY: usize = 512 * 1024;

/// Token length every request is sized for (the shard's tokens are 8 bytes).
const TOKEN_LEN: usize = 8;

/// Observe option value that registers an observation (RFC 7641 §2).
pub const OBSERVE_REGISTER: u32 = 0;
/// Observe option value that cancels one.
pub const OBSERVE_DEREGISTER: u32 = 1;

/// The content format values are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFormat {
    /// application/vnd.oma.lwm2m+tlv (11542): the format every LwM2M 1.0 device supports.
    Tlv,
    /// application/senml+json (110).
    SenmlJson,
    /// application/senml+cbor (112), for composite requests that ask for it.
    SenmlCbor,
}

impl WriteFormat {
    /// TLV for LwM2M 1.0, SenML JSON for 1.1 and 1.2.
    pub fn for_version(version: Version) -> WriteFormat {
        match version {
            Version::V1_0 => WriteFormat::Tlv,
            Version::V1_1 | Version::V1_2 => WriteFormat::SenmlJson,
        }
    }

    /// The CoAP Content-Format number.
    pub fn content_format(self) -> u16 {
        match self {
            WriteFormat::Tlv => content::format::TLV,
            WriteFormat::SenmlJson => content::format::SENML_JSON,
            WriteFormat::SenmlCbor => content::format::SENML_CBOR,
        }
    }
}

/// A CoAP request for a command, ready to be written with [`write_coap_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapRequest {
    /// GET, PUT, POST or DELETE.
    pub method: Code,
    /// Uri-Path segments: the device's alternate path (if any) then the LwM2M path, e.g.
    /// `["lwm2m", "3", "0"]`.
    pub uri_path: Vec<String>,
    /// Uri-Query values: those of the command's path, then write-attr attributes.
    pub uri_query: Vec<String>,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Accept.
    pub accept: Option<u16>,
    /// Observe.
    pub observe: Option<u32>,
    /// Block2 (RFC 7959): which block of the response to send, when continuing a
    /// response the device sent in blocks.
    pub block2: Option<Block>,
    /// Block1 (RFC 7959): the block of `payload` this datagram carries, when the body is
    /// too large for one datagram; `None` sends `payload` whole.
    pub block1: Option<Block>,
    /// The payload; empty for none. With `block1`, the whole body, held once for the
    /// exchange: each datagram carries its block's slice.
    pub payload: Vec<u8>,
    /// The LwM2M path without alternate path or query, e.g. `/3/0/13`.
    pub path: Path,
    /// The path as the command wrote it (see [`Command::req_path`]): the `reqPath` of the
    /// response.
    pub req_path: String,
    /// The paths of a composite read or (cancel-)observe, as the payload names them;
    /// empty for other requests (`path` is then `/`).
    pub composite: Vec<Path>,
}

impl CoapRequest {
    /// The request for the next block of a response that came in Block2 blocks: the same
    /// method, path and query without payload (RFC 7959 §3.3), asking for block `num` of
    /// size exponent `szx`. A FETCH keeps its payload: it says what is fetched (RFC 8132
    /// §2.3.2). A body sent in Block1 blocks is not sent again (nor copied).
    pub fn next_block(&self, num: u32, szx: u8) -> CoapRequest {
        let block2 = Some(Block {
            num,
            more: false,
            szx,
        });
        let keep_payload = self.method == Code::FETCH && self.block1.is_none();
        CoapRequest {
            method: self.method,
            uri_path: self.uri_path.clone(),
            uri_query: self.uri_query.clone(),
            content_format: self.content_format.filter(|_| keep_payload),
            accept: self.accept,
            observe: self.observe,
            block2,
            block1: None,
            payload: if keep_payload {
                self.payload.clone()
            } else {
                Vec::new()
            },
            path: self.path,
            req_path: self.req_path.clone(),
            composite: self.composite.clone(),
        }
    }

    /// The slice of the payload this datagram carries: the current Block1 block, or the
    /// whole payload.
    pub fn body(&self) -> &[u8] {
        match self.block1 {
            None => &self.payload,
            Some(b) => {
                let start = b.offset().min(self.payload.len());
                let end = (start + b.size()).min(self.payload.len());
                &self.payload[start..end]
            }
        }
    }

    /// Moves the Block1 transfer to the block at byte `offset` with size exponent `szx`
    /// (RFC 7959 §2.5: a smaller size renumbers, the offset stays); `false` if there is
    /// no transfer or nothing is left at `offset`.
    pub fn seek_block1(&mut self, offset: usize, szx: u8) -> bool {
        let size = 16usize << szx;
        if self.block1.is_none() || offset >= self.payload.len() || offset % size != 0 {
            return false;
        }
        self.block1 = Some(Block {
            num: (offset / size) as u32,
            more: offset + size < self.payload.len(),
            szx,
        });
        true
    }
}

/// The request asking a device for the rest of a notification that came in Block2 blocks
/// (RFC 7959 §2.4 with RFC 7641; §3.4): a GET of the observed `path` (the alternate path
/// before it) — a FETCH naming `composite` paths in SenML JSON for a composite
/// observation — answered in `accept`, the first block's format, and without Observe: it
/// asks for the rest of the current representation, not for another observation. Send
/// it with [`CoapRequest::next_block`].
pub fn notification_blocks_request(
    alternate_path: &str,
    path: Path,
    composite: &[Path],
    accept: Option<u16>,
) -> CoapRequest {
    let mut req = CoapRequest {
        method: Code::GET,
        uri_path: uri_path(alternate_path, &path),
        uri_query: Vec::new(),
        content_format: None,
        accept,
        observe: None,
        block2: None,
        block1: None,
        payload: Vec::new(),
        path,
        req_path: path.to_string(),
        composite: composite.to_vec(),
    };
    if !composite.is_empty() {
        req.method = Code::FETCH;
        req.content_format = Some(content::format::SENML_JSON);
        content::encode_senml_names(composite, &mut req.payload);
    }
    req
}

/// Builds the request for `cmd` to a device of `version` registered with
/// `alternate_path` (`"/"` or empty for none).
pub fn build_request(
    cmd: &Command,
    alternate_path: &str,
    version: Version,
) -> Result<CoapRequest, CommandError> {
    build_request_as(cmd, alternate_path, WriteFormat::for_version(version))
}

/// [`build_request`] with the write format chosen by the caller, e.g. from the content
/// formats a device announced at registration.
pub fn build_request_as(
    cmd: &Command,
    alternate_path: &str,
    format: WriteFormat,
) -> Result<CoapRequest, CommandError> {
    let target = cmd.kind.target();
    let mut req = CoapRequest {
        method: Code::GET,
        uri_path: uri_path(alternate_path, &target.path),
        uri_query: target.query.clone(),
        content_format: None,
        accept: None,
        observe: None,
        block2: None,
        block1: None,
        payload: Vec::new(),
        path: target.path,
        req_path: cmd.req_path.clone(),
        composite: cmd.kind.composite_paths().to_vec(),
    };
    match &cmd.kind {
        CommandKind::Read { accept, .. } => req.accept = *accept,
        CommandKind::Discover { .. } => req.accept = Some(content::format::LINK),
        CommandKind::Observe { accept, .. } => {
            req.accept = *accept;
            req.observe = Some(OBSERVE_REGISTER);
        }
        CommandKind::CancelObserve { .. } => req.observe = Some(OBSERVE_DEREGISTER),
        CommandKind::Write {
            base,
            entries,
            replace,
        } => {
            req.method = if *replace { Code::PUT } else { Code::POST };
            encode(cmd, &mut req, entries, &encode_base(base), format)?;
        }
        CommandKind::WriteAttr { attrs, .. } => {
            req.method = Code::PUT;
            req.uri_query.extend(attrs.iter().cloned());
        }
        CommandKind::Execute { args, .. } => {
            req.method = Code::POST;
            if !args.is_empty() {
                req.content_format = Some(content::format::TEXT);
                req.payload = args.as_bytes().to_vec();
            }
        }
        CommandKind::Create { base, entries } => {
            req.method = Code::POST;
            encode(cmd, &mut req, entries, &base.path, format)?;
        }
        CommandKind::Delete { .. } => req.method = Code::DELETE,
        CommandKind::ReadComposite {
            paths,
            accept,
            format,
        }
        | CommandKind::ObserveComposite {
            paths,
            accept,
            format,
        } => {
            fetch_paths(&mut req, paths, *accept, *format);
            if matches!(cmd.kind, CommandKind::ObserveComposite { .. }) {
                req.observe = Some(OBSERVE_REGISTER);
            }
        }
        CommandKind::CancelObserveComposite { paths, format } => {
            fetch_paths(&mut req, paths, content::format::SENML_JSON, *format);
            req.observe = Some(OBSERVE_DEREGISTER);
        }
        CommandKind::WriteComposite { entries, format } => {
            req.method = Code::IPATCH;
            // Composite operations exist from LwM2M 1.1 on, which has SenML.
            let format = if *format == content::format::SENML_CBOR {
                WriteFormat::SenmlCbor
            } else {
                WriteFormat::SenmlJson
            };
            encode(cmd, &mut req, entries, &Path::ROOT, format)?;
        }
    }
    if !req.payload.is_empty() {
        let len = write_coap_request(&req, MessageType::Con, 0, &[0; TOKEN_LEN], &mut Vec::new());
        if len > MAX_REQUEST_LEN {
            let too_large = |reason: String| CommandError {
                echo: cmd.echo.clone(),
                msg_type: Some(cmd.msg_type.clone()),
                req_path: Some(cmd.req_path.clone()),
                kind: CommandErrorKind::RequestTooLarge,
                reason,
            };
            // A FETCH names what it fetches: its paths are bounded to fit one datagram.
            if req.method == Code::FETCH {
                return Err(too_large(format!(
                    "request of {len} bytes does not fit one datagram ({MAX_REQUEST_LEN} bytes)"
                )));
            }
            let body = req.payload.len();
            if body > MAX_BLOCK1_BODY {
                return Err(too_large(format!(
                    "request body of {body} bytes exceeds the block-wise write limit of {MAX_BLOCK1_BODY} bytes"
                )));
            }
            let Some(szx) = block1_szx(&mut req) else {
                return Err(too_large(format!(
                    "request options leave no room for a block within {MAX_REQUEST_LEN} bytes"
                )));
            };
            req.block1 = Some(Block {
                num: 0,
                more: true,
                szx,
            });
        }
    }
    Ok(req)
}

/// The largest block size exponent, from [`BLOCK1_START_SZX`] down, whose block fits one
/// datagram with the request's header, token and options (long Uri-Query or alternate
/// paths take room from the payload).
fn block1_szx(req: &mut CoapRequest) -> Option<u8> {
    // Measured without the body: the largest Block1 value, Size1 and the payload marker
    // are added.
    let payload = std::mem::take(&mut req.payload);
    req.block1 = Some(Block {
        num: MAX_BLOCK_NUM,
        more: true,
        szx: 0,
    });
    let head = write_coap_request(req, MessageType::Con, 0, &[0; TOKEN_LEN], &mut Vec::new());
    req.block1 = None;
    req.payload = payload;
    let overhead = head + SIZE1_OPTION_LEN + 1;
    (0..=BLOCK1_START_SZX)
        .rev()
        .find(|szx| overhead + (16usize << szx) <= MAX_REQUEST_LEN)
}

/// Most bytes a Size1 option adds (header byte, extended delta, 4-byte value).
const SIZE1_OPTION_LEN: usize = 6;

/// Makes `req` a FETCH naming `paths` in SenML of `format` (JSON or CBOR), answered in
/// `accept`.
fn fetch_paths(req: &mut CoapRequest, paths: &[Path], accept: u16, format: u16) {
    req.method = Code::FETCH;
    req.accept = Some(accept);
    if format == content::format::SENML_CBOR {
        req.content_format = Some(content::format::SENML_CBOR);
        content::encode_senml_cbor_names(paths, &mut req.payload);
    } else {
        req.content_format = Some(content::format::SENML_JSON);
        content::encode_senml_names(paths, &mut req.payload);
    }
}

/// The path values are encoded relative to: the object instance for a write on a resource
/// (so the TLV carries the resource, multiple-resource wrapper included), the request path
/// itself otherwise — a write on a resource instance carries the bare instance TLV.
fn encode_base(base: &Target) -> Path {
    let ids = base.path.ids();
    if ids.len() == 3 {
        Path::from_ids(&ids[..ids.len() - 1]).unwrap_or(base.path)
    } else {
        base.path
    }
}

/// Encodes `entries` as the payload of `req`.
fn encode(
    cmd: &Command,
    req: &mut CoapRequest,
    entries: &[Entry],
    base: &Path,
    format: WriteFormat,
) -> Result<(), CommandError> {
    let result = match format {
        WriteFormat::Tlv => content::encode_tlv(entries, base, &mut req.payload),
        WriteFormat::SenmlJson => content::encode_senml_json(entries, base, &mut req.payload),
        WriteFormat::SenmlCbor => content::encode_senml_cbor(entries, base, &mut req.payload),
    };
    result.map_err(|e| CommandError {
        echo: cmd.echo.clone(),
        msg_type: Some(cmd.msg_type.clone()),
        req_path: Some(cmd.req_path.clone()),
        kind: CommandErrorKind::Encode,
        reason: format!("cannot encode the values: {e}"),
    })?;
    req.content_format = Some(format.content_format());
    Ok(())
}

/// The alternate path's segments followed by the path's IDs.
fn uri_path(alternate_path: &str, path: &Path) -> Vec<String> {
    alternate_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .chain(path.ids().iter().map(u16::to_string))
        .collect()
}

/// Appends `req` as a CoAP message of type `ty` with `mid` and `token` to `buf`; returns
/// the number of bytes written.
pub fn write_coap_request(
    req: &CoapRequest,
    ty: MessageType,
    mid: u16,
    token: &[u8],
    buf: &mut Vec<u8>,
) -> usize {
    let mut w = MessageWriter::new(buf, ty, req.method, mid, token);
    if let Some(observe) = req.observe {
        w.uint_option(option::OBSERVE, observe);
    }
    for segment in &req.uri_path {
        w.option(option::URI_PATH, segment.as_bytes());
    }
    if let Some(format) = req.content_format {
        w.uint_option(option::CONTENT_FORMAT, u32::from(format));
    }
    for query in &req.uri_query {
        w.option(option::URI_QUERY, query.as_bytes());
    }
    if let Some(accept) = req.accept {
        w.uint_option(option::ACCEPT, u32::from(accept));
    }
    if let Some(block2) = req.block2 {
        w.block_option(option::BLOCK2, block2);
    }
    if let Some(block1) = req.block1 {
        w.block_option(option::BLOCK1, block1);
        // The first block tells the total size (RFC 7959 §4), so a device can refuse a
        // body it cannot hold before it is sent.
        if block1.num == 0 {
            w.uint_option(option::SIZE1, req.payload.len() as u32);
        }
    }
    w.payload(req.body());
    w.finish()
}
