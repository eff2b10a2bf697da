//! Downlink commands: the MQTT JSON an application publishes to `lwm2m/<ep>/dn` (SPEC §5),
//! parsed into a [`Command`] or rejected with a [`CommandError`] that says why.
//!
//! The accepted shapes are those of EMQX's LwM2M gateway, so an application written for it
//! works unchanged; where EMQX crashes or drops a command silently (invalid JSON, an
//! unknown `msgType`, a missing field, a bad path or value), this parser returns an error
//! whose `reason` becomes a `4.00 bad_request` response on the command's response topic.
//!
//! The LwM2M 1.1 composite operations, which EMQX does not have, take `data.paths`
//! (`read-composite`, `observe-composite`, `cancel-observe-composite`) or `data.content`
//! with absolute paths (`write-composite`); their `reqPath` is [`COMPOSITE_REQ_PATH`].
//!
//! Extensions over EMQX, all optional: `"encoding":"hex"` is also read inside `data` and
//! per content item (EMQX reads it only at the top level); `data.replace` chooses PUT
//! (replace) or POST (partial update) for a batch write; `data.accept` asks a read or
//! observe for a content format; write-attr also takes `epmin`/`epmax` and numbers, and an
//! empty string clears an attribute.
//!
//! JSON is parsed with `serde_json`, not `simd-json`: commands are not the hot path, and
//! `serde_json`'s borrowed `RawValue` lets every echoed key be spliced into the uplink
//! verbatim, while a syntax error still leaves the members read before it to echo.

mod data;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;

use crate::coap::Code;
use crate::content::Entry;
use crate::lwm2m::Path;
use crate::translate::json;

pub use data::Operation;
use data::{is_hex_encoding, parse_kind};

/// Largest command payload parsed: bigger than any write a constrained device accepts in
/// one exchange, small enough that a burst of them cannot exhaust a shard's memory.
pub const MAX_COMMAND_LEN: usize = 1024 * 1024;

/// Most `content` items in one write or create: a whole object instance of the largest
/// registry objects has a few hundred resources.
pub const MAX_ENTRIES: usize = 4096;

/// Most Uri-Query parameters taken from a path's `?k=v&..` part.
pub const MAX_QUERY_PARAMS: usize = 16;

/// Longest Uri-Query parameter: RFC 7252 allows 255 bytes per Uri-Query option.
pub const MAX_QUERY_LEN: usize = 255;

/// Most paths in one composite command. The request must fit one datagram
/// ([`crate::translate::request::MAX_REQUEST_LEN`], 1152 bytes, as a FETCH is not sent in
/// Block1 blocks): a SenML record naming the longest path, `{"n":"/65535/65535/65535/65535"},`,
/// is 33 bytes, and 32 of them leave room for the header, token and options.
pub const MAX_COMPOSITE_PATHS: usize = 32;

/// The `reqPath` of composite commands and their responses: the request goes to the root
/// path `/` (LwM2M 1.1 Transport §6.3.6), and `content` names each path it covers.
pub const COMPOSITE_REQ_PATH: &str = "/";

/// The target of composite operations: the root path, no query.
static ROOT_TARGET: Target = Target {
    path: Path::ROOT,
    query: Vec::new(),
};

/// Longest quoted input kept in an error reason, so a reason stays one readable line.
const MAX_QUOTE_LEN: usize = 64;

/// Write-attribute keys, in the order their Uri-Query options are sent.
pub const ATTR_KEYS: [&str; 7] = ["pmin", "pmax", "gt", "lt", "st", "epmin", "epmax"];

/// A parsed downlink command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Every top-level member other than `msgType`, `data` and `seqNum` (which the uplink
    /// messages write themselves), as raw JSON
    /// `"key":value` pairs joined by commas in input order (the last of duplicate keys),
    /// e.g. `"requestID":7,"cacheID":"x"`; spliced verbatim into every uplink message about
    /// this command.
    pub echo: String,
    /// The `msgType` as sent, e.g. `"read"`.
    pub msg_type: String,
    /// The path as the command wrote it (`data.path`, else `data.basePath`) without its
    /// `?query`, e.g. `"/3/0/"`: the `reqPath` of every response about the command,
    /// echoed verbatim as EMQX does.
    pub req_path: String,
    /// What to do.
    pub kind: CommandKind,
}

/// An LwM2M path with the extra Uri-Query parameters given after `?` in the command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The LwM2M path.
    pub path: Path,
    /// `"k=v"` parameters, in input order.
    pub query: Vec<String>,
}

/// The LwM2M operation a command asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    /// Read: GET, with Accept only when `data.accept` asks for a format.
    Read {
        /// What to read (1 to 4 levels).
        target: Target,
        /// Content format to ask for.
        accept: Option<u16>,
    },
    /// Discover: GET with Accept application/link-format.
    Discover {
        /// What to discover (1 to 3 levels).
        target: Target,
    },
    /// Write: PUT (replace) or POST (partial update) of `entries`.
    Write {
        /// The request path: the resource (instance) of a single write, the `basePath` of
        /// a batch write.
        base: Target,
        /// Values at absolute paths under `base`, sorted by path.
        entries: Vec<Entry>,
        /// PUT when true; POST (partial update) when false.
        replace: bool,
    },
    /// Write-Attributes: PUT with the attributes as Uri-Query and no payload.
    WriteAttr {
        /// Where to set attributes (1 to 4 levels).
        target: Target,
        /// `"pmin=1"`, ... in [`ATTR_KEYS`] order; a bare key clears the attribute.
        attrs: Vec<String>,
    },
    /// Execute: POST with the arguments as text.
    Execute {
        /// The resource to execute (3 levels).
        target: Target,
        /// The arguments, e.g. `0='abc',1`; empty for none.
        args: String,
    },
    /// Create: POST on the object of new instances and their resources.
    Create {
        /// The object (1 level).
        base: Target,
        /// Values at absolute paths under `base`, sorted by path.
        entries: Vec<Entry>,
    },
    /// Delete: DELETE.
    Delete {
        /// What to delete (2 to 4 levels).
        target: Target,
    },
    /// Observe: GET with Observe 0.
    Observe {
        /// What to observe (1 to 4 levels).
        target: Target,
        /// Content format to ask for.
        accept: Option<u16>,
    },
    /// Cancel an observation: GET with Observe 1.
    CancelObserve {
        /// What was observed.
        target: Target,
    },
    /// Read-Composite (LwM2M 1.1): FETCH on `/` with the paths as SenML names.
    ReadComposite {
        /// What to read, in the order given, no two alike (1 to 4 levels each).
        paths: Vec<Path>,
        /// Content format asked for: SenML JSON unless `data.accept` asks for SenML CBOR.
        accept: u16,
        /// Content format of the request body: SenML JSON unless `data.format` asks for
        /// SenML CBOR.
        format: u16,
    },
    /// Write-Composite (LwM2M 1.1): iPATCH on `/` with the values as SenML.
    WriteComposite {
        /// Values at absolute resource (instance) paths, sorted by path.
        entries: Vec<Entry>,
        /// Content format of the request body, as for [`CommandKind::ReadComposite`].
        format: u16,
    },
    /// Observe-Composite (LwM2M 1.1): FETCH on `/` with Observe 0 and the paths.
    ObserveComposite {
        /// What to observe, as for [`CommandKind::ReadComposite`].
        paths: Vec<Path>,
        /// Content format asked for.
        accept: u16,
        /// Content format of the request body.
        format: u16,
    },
    /// Cancel a composite observation: FETCH on `/` with Observe 1 and the same paths.
    CancelObserveComposite {
        /// The paths that were observed (in any order).
        paths: Vec<Path>,
        /// Content format of the request body.
        format: u16,
    },
}

impl CommandKind {
    /// The path and query the request is sent to.
    pub fn target(&self) -> &Target {
        match self {
            CommandKind::Read { target, .. }
            | CommandKind::Discover { target }
            | CommandKind::WriteAttr { target, .. }
            | CommandKind::Execute { target, .. }
            | CommandKind::Delete { target }
            | CommandKind::Observe { target, .. }
            | CommandKind::CancelObserve { target } => target,
            CommandKind::Write { base, .. } | CommandKind::Create { base, .. } => base,
            CommandKind::ReadComposite { .. }
            | CommandKind::WriteComposite { .. }
            | CommandKind::ObserveComposite { .. }
            | CommandKind::CancelObserveComposite { .. } => &ROOT_TARGET,
        }
    }

    /// The paths of a composite read or (cancel-)observe; empty for other operations.
    pub fn composite_paths(&self) -> &[Path] {
        match self {
            CommandKind::ReadComposite { paths, .. }
            | CommandKind::ObserveComposite { paths, .. }
            | CommandKind::CancelObserveComposite { paths, .. } => paths,
            _ => &[],
        }
    }
}

/// A command that cannot be carried out, with what could be read of it for the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CommandError {
    /// The members that could be read, as in [`Command::echo`].
    pub echo: String,
    /// The `msgType`, when it was read and is a string.
    pub msg_type: Option<String>,
    /// The `reqPath` to report, as in [`Command::req_path`], when `data` held a string
    /// path; `null` in the response otherwise.
    pub req_path: Option<String>,
    /// The class of error, for metrics.
    pub kind: CommandErrorKind,
    /// One sentence saying what is wrong, e.g. `unknown msgType`.
    pub reason: String,
}

impl CommandError {
    /// The response code to report: 4.13 for an oversized command or request, 4.00
    /// otherwise.
    pub fn code(&self) -> Code {
        match self.kind {
            CommandErrorKind::TooLarge | CommandErrorKind::RequestTooLarge => {
                Code::REQUEST_ENTITY_TOO_LARGE
            }
            _ => Code::BAD_REQUEST,
        }
    }
}

/// Classes of [`CommandError`], one metrics counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandErrorKind {
    /// The payload is larger than [`MAX_COMMAND_LEN`].
    TooLarge,
    /// The payload is not valid UTF-8 JSON.
    InvalidJson,
    /// The payload is JSON but not an object.
    NotAnObject,
    /// No string `msgType`.
    MissingMsgType,
    /// A `msgType` this gateway does not know.
    UnknownMsgType,
    /// No `data` object.
    MissingData,
    /// A field the command needs is absent (or null).
    MissingField,
    /// A field has the wrong JSON type, e.g. a number where a path string belongs.
    WrongFieldType,
    /// A path is not `/O/I/R/RI` with IDs in 0..=65535.
    BadPath,
    /// The `?query` of a path has too many or too long parameters.
    BadQuery,
    /// The path has a depth the operation does not allow, e.g. execute on an object.
    WrongDepth,
    /// A `type` that is not an LwM2M data type.
    UnknownType,
    /// A value that does not parse as its type.
    BadValue,
    /// A value with `"encoding":"hex"` that is not hex.
    BadHex,
    /// A write-attr attribute value that is not a number of the right kind.
    BadAttribute,
    /// Two content items at the same or overlapping paths.
    DuplicatePath,
    /// More than [`MAX_ENTRIES`] content items.
    TooManyEntries,
    /// More than [`MAX_COMPOSITE_PATHS`] paths in a composite command.
    TooManyPaths,
    /// The values could not be encoded for the device.
    Encode,
    /// The CoAP request is too large: a body beyond
    /// [`crate::translate::request::MAX_BLOCK1_BODY`], or a FETCH that does not fit one
    /// datagram.
    RequestTooLarge,
}

impl CommandErrorKind {
    /// Snake-case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandErrorKind::TooLarge => "too_large",
            CommandErrorKind::InvalidJson => "invalid_json",
            CommandErrorKind::NotAnObject => "not_an_object",
            CommandErrorKind::MissingMsgType => "missing_msg_type",
            CommandErrorKind::UnknownMsgType => "unknown_msg_type",
            CommandErrorKind::MissingData => "missing_data",
            CommandErrorKind::MissingField => "missing_field",
            CommandErrorKind::WrongFieldType => "wrong_field_type",
            CommandErrorKind::BadPath => "bad_path",
            CommandErrorKind::BadQuery => "bad_query",
            CommandErrorKind::WrongDepth => "wrong_depth",
            CommandErrorKind::UnknownType => "unknown_type",
            CommandErrorKind::BadValue => "bad_value",
            CommandErrorKind::BadHex => "bad_hex",
            CommandErrorKind::BadAttribute => "bad_attribute",
            CommandErrorKind::DuplicatePath => "duplicate_path",
            CommandErrorKind::TooManyEntries => "too_many_entries",
            CommandErrorKind::TooManyPaths => "too_many_paths",
            CommandErrorKind::Encode => "encode",
            CommandErrorKind::RequestTooLarge => "request_too_large",
        }
    }
}

/// A problem found in `data`, before the echo is attached.
type Failure = (CommandErrorKind, String);

/// Parses a downlink command payload.
pub fn parse_command(payload: &[u8]) -> Result<Command, CommandError> {
    let fail = |kind, reason: String| CommandError {
        echo: String::new(),
        msg_type: None,
        req_path: None,
        kind,
        reason,
    };
    if payload.len() > MAX_COMMAND_LEN {
        return Err(fail(
            CommandErrorKind::TooLarge,
            format!("command larger than {MAX_COMMAND_LEN} bytes"),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        fail(
            CommandErrorKind::InvalidJson,
            format!("invalid JSON: not UTF-8 ({e})"),
        )
    })?;
    let mut members = Vec::new();
    let parsed = read_members(text, &mut members);
    let top = TopLevel::from_members(&members);
    let composite = top
        .msg_type
        .as_deref()
        .and_then(Operation::parse)
        .is_some_and(Operation::is_composite);
    let req_path = if composite {
        Some(COMPOSITE_REQ_PATH.to_owned())
    } else {
        top.data.and_then(data_req_path)
    };
    let with_echo = |(kind, reason): Failure| CommandError {
        echo: top.echo.clone(),
        msg_type: top.msg_type.clone(),
        req_path: req_path.clone(),
        kind,
        reason,
    };
    parsed.map_err(with_echo)?;
    if let Some(failure) = top.unreadable.clone() {
        return Err(with_echo(failure));
    }
    let msg_type = top.msg_type.clone().ok_or_else(|| {
        with_echo((
            CommandErrorKind::MissingMsgType,
            "missing msgType".to_owned(),
        ))
    })?;
    let Some(op) = Operation::parse(&msg_type) else {
        return Err(with_echo((
            CommandErrorKind::UnknownMsgType,
            "unknown msgType".to_owned(),
        )));
    };
    let data = match top.data {
        None => Err((CommandErrorKind::MissingData, "missing data".to_owned())),
        Some(raw) => match serde_json::from_str::<Json>(raw.get()) {
            Ok(Json::Object(map)) => Ok(map),
            // Valid (it was read raw) but nested past serde_json's recursion limit.
            Err(e) => Err((
                CommandErrorKind::InvalidJson,
                format!("invalid JSON in data: {e}"),
            )),
            Ok(_) => Err((
                CommandErrorKind::MissingData,
                "data is not an object".to_owned(),
            )),
        },
    }
    .map_err(with_echo)?;
    let kind = parse_kind(op, &data, top.hex).map_err(with_echo)?;
    let req_path = req_path.unwrap_or_default();
    Ok(Command {
        echo: top.echo,
        msg_type,
        req_path,
        kind,
    })
}

/// The `reqPath` of a command whose `data` is `raw`: `path`, else `basePath` (EMQX's
/// choice), as written up to any `?query`; `None` when neither is a string.
fn data_req_path(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Paths<'a> {
        #[serde(borrow, default)]
        path: Option<Cow<'a, str>>,
        #[serde(borrow, default, rename = "basePath")]
        base_path: Option<Cow<'a, str>>,
    }
    let paths: Paths<'_> = serde_json::from_str(raw.get()).ok()?;
    let path = paths.path.or(paths.base_path)?;
    let path = path.split_once('?').map_or(&*path, |(p, _)| p);
    Some(path.to_owned())
}

/// Reads the top-level members of `text` into `members`; on a syntax error the members
/// read before it stay there.
fn read_members<'de>(
    text: &'de str,
    members: &mut Vec<(String, &'de RawValue)>,
) -> Result<(), Failure> {
    let json_error =
        |e: serde_json::Error| (CommandErrorKind::InvalidJson, format!("invalid JSON: {e}"));
    if !text.trim_start().starts_with('{') {
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(json_error)?;
        return Err((
            CommandErrorKind::NotAnObject,
            "command is not a JSON object".to_owned(),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    MembersSeed(members)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(json_error)
}

/// Collects the members of the top-level object as raw values, in input order.
struct MembersSeed<'a, 'de>(&'a mut Vec<(String, &'de RawValue)>);

impl<'de> DeserializeSeed<'de> for MembersSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            self.0.push((key.into_owned(), value));
        }
        Ok(())
    }
}

/// What the top-level members say, duplicates resolved (the last one wins).
struct TopLevel<'de> {
    echo: String,
    msg_type: Option<String>,
    data: Option<&'de RawValue>,
    /// EMQX's top-level `"encoding":"hex"`.
    hex: bool,
    /// A member that is valid JSON syntax but not a value common parsers accept (a number
    /// out of range, nesting past the recursion limit): left out of the echo, and an error.
    unreadable: Option<Failure>,
}

impl<'de> TopLevel<'de> {
    fn from_members(members: &[(String, &'de RawValue)]) -> TopLevel<'de> {
        let mut top = TopLevel {
            echo: String::new(),
            msg_type: None,
            data: None,
            hex: false,
            unreadable: None,
        };
        let mut seen = HashSet::new();
        let mut echoed = Vec::new();
        for (key, raw) in members.iter().rev() {
            if !seen.insert(key.as_str()) {
                continue;
            }
            match key.as_str() {
                // Not echoed even when it is not a string, so that no uplink message can
                // carry it twice.
                "msgType" => top.msg_type = serde_json::from_str::<String>(raw.get()).ok(),
                "data" => top.data = Some(raw),
                // Written by notify messages themselves; echoing it would duplicate it.
                "seqNum" => {}
                _ => match serde_json::from_str::<Json>(raw.get()) {
                    Ok(value) => {
                        if key == "encoding" {
                            top.hex = is_hex_encoding(&Some(value));
                        }
                        echoed.push((key, raw));
                    }
                    Err(e) => {
                        let mut name = Vec::new();
                        json::write_str(&mut name, key);
                        top.unreadable = Some((
                            CommandErrorKind::InvalidJson,
                            format!("invalid JSON in {}: {e}", String::from_utf8_lossy(&name)),
                        ));
                    }
                },
            }
        }
        let mut out = Vec::new();
        for (i, (key, raw)) in echoed.iter().rev().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_str(&mut out, key);
            out.push(b':');
            out.extend_from_slice(raw.get().as_bytes());
        }
        // Keys and raw values are both valid UTF-8.
        top.echo = String::from_utf8(out).unwrap_or_default();
        top
    }
}

#[cfg(test)]
mod composite_tests;
#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod tests;
