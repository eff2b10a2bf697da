//! Downlink commands: the MQTT JSON an application publishes to `lwm2m/<ep>/dn` (SPEC §5),
//! parsed into a [`Command`] or rejected with a [`CommandError`] that says why.
//!
//! The accepted shapes are those of EMQX's LwM2M gateway, so an application written for it
//! works unchanged; where EMQX crashes or drops a command silently (invalid JSON, an
//! unknown `msgType`, a missing field, a bad path or value), this parser returns an error
//! whose `reason` becomes a `4.00 bad_request` response on the command's response topic.
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

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

use crate::coap::Code;
use crate::content::{self, Entry};
use crate::lwm2m::Path;
use crate::translate::json;

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

/// Longest quoted input kept in an error reason, so a reason stays one readable line.
const MAX_QUOTE_LEN: usize = 64;

/// Write-attribute keys, in the order their Uri-Query options are sent.
pub const ATTR_KEYS: [&str; 7] = ["pmin", "pmax", "gt", "lt", "st", "epmin", "epmax"];

/// A parsed downlink command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Every top-level member other than `msgType`, `data` and `seqNum`, as raw JSON
    /// `"key":value` pairs joined by commas in input order (the last of duplicate keys),
    /// e.g. `"requestID":7,"cacheID":"x"`; spliced verbatim into every uplink message about
    /// this command.
    pub echo: String,
    /// The `msgType` as sent, e.g. `"read"`.
    pub msg_type: String,
    /// What to do.
    pub kind: CommandKind,
}

impl Command {
    /// The path the command acts on, without alternate path or query: `"/3/0/13"`; the
    /// `reqPath` of every response about it.
    pub fn req_path(&self) -> String {
        self.kind.target().path.to_string()
    }
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
    /// The class of error, for metrics.
    pub kind: CommandErrorKind,
    /// One sentence saying what is wrong, e.g. `unknown msgType`.
    pub reason: String,
}

impl CommandError {
    /// The response code to report: 4.13 for an oversized command, 4.00 otherwise.
    pub fn code(&self) -> Code {
        match self.kind {
            CommandErrorKind::TooLarge => Code::REQUEST_ENTITY_TOO_LARGE,
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
    /// The values could not be encoded for the device.
    Encode,
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
            CommandErrorKind::Encode => "encode",
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
    let with_echo = |(kind, reason): Failure| CommandError {
        echo: top.echo.clone(),
        msg_type: top.msg_type.clone(),
        kind,
        reason,
    };
    parsed.map_err(with_echo)?;
    let msg_type = top.msg_type.clone().ok_or_else(|| {
        with_echo((
            CommandErrorKind::MissingMsgType,
            "missing msgType".to_owned(),
        ))
    })?;
    let Some(op) = Op::parse(&msg_type) else {
        return Err(with_echo((
            CommandErrorKind::UnknownMsgType,
            "unknown msgType".to_owned(),
        )));
    };
    let data = match top.data {
        None => Err((CommandErrorKind::MissingData, "missing data".to_owned())),
        Some(raw) => match serde_json::from_str::<Json>(raw.get()) {
            Ok(Json::Object(map)) => Ok(map),
            _ => Err((
                CommandErrorKind::MissingData,
                "data is not an object".to_owned(),
            )),
        },
    }
    .map_err(with_echo)?;
    let kind = parse_kind(op, &data, top.hex).map_err(with_echo)?;
    Ok(Command {
        echo: top.echo,
        msg_type,
        kind,
    })
}

/// Reads the top-level members of `text` into `members`; on a syntax error the members
/// read before it stay there.
fn read_members<'de>(
    text: &'de str,
    members: &mut Vec<(String, &'de RawValue)>,
) -> Result<(), Failure> {
    if !text.trim_start().starts_with('{') && !text.trim().is_empty() {
        return Err((
            CommandErrorKind::NotAnObject,
            "command is not a JSON object".to_owned(),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    MembersSeed(members)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| (CommandErrorKind::InvalidJson, format!("invalid JSON: {e}")))
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
}

impl<'de> TopLevel<'de> {
    fn from_members(members: &[(String, &'de RawValue)]) -> TopLevel<'de> {
        let mut top = TopLevel {
            echo: String::new(),
            msg_type: None,
            data: None,
            hex: false,
        };
        let mut seen = HashSet::new();
        let mut echoed = Vec::new();
        for (key, raw) in members.iter().rev() {
            if !seen.insert(key.as_str()) {
                continue;
            }
            match key.as_str() {
                "msgType" => match serde_json::from_str::<String>(raw.get()) {
                    Ok(s) => top.msg_type = Some(s),
                    // Not a string: no msgType to answer with, so echo it as sent.
                    Err(_) => echoed.push((key, raw)),
                },
                "data" => top.data = Some(raw),
                // Written by notify messages themselves; echoing it would duplicate it.
                "seqNum" => {}
                _ => {
                    if key == "encoding" {
                        top.hex = is_hex_encoding(&serde_json::from_str(raw.get()).ok());
                    }
                    echoed.push((key, raw));
                }
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

/// The operations, by `msgType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Discover,
    Write,
    WriteAttr,
    Execute,
    Create,
    Delete,
    Observe,
    CancelObserve,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "read" => Op::Read,
            "discover" => Op::Discover,
            "write" => Op::Write,
            "write-attr" => Op::WriteAttr,
            "execute" => Op::Execute,
            "create" => Op::Create,
            "delete" => Op::Delete,
            "observe" => Op::Observe,
            "cancel-observe" => Op::CancelObserve,
            _ => return None,
        })
    }

    /// Path depths the operation allows (LwM2M 1.1 §6.3, §6.4).
    fn depths(self) -> (usize, usize) {
        match self {
            Op::Read | Op::WriteAttr | Op::Observe | Op::CancelObserve => (1, 4),
            Op::Discover => (1, 3),
            Op::Execute => (3, 3),
            Op::Create => (1, 1),
            Op::Delete => (2, 4),
            Op::Write => (2, 4),
        }
    }
}

fn parse_kind(op: Op, data: &Map<String, Json>, top_hex: bool) -> Result<CommandKind, Failure> {
    let target = || target_field(op, data, "path");
    Ok(match op {
        Op::Read => CommandKind::Read {
            target: target()?,
            accept: accept_field(data)?,
        },
        Op::Discover => CommandKind::Discover { target: target()? },
        Op::Write => parse_write(data, top_hex)?,
        Op::WriteAttr => {
            let target = target()?;
            let attrs = attrs(data)?;
            if attrs.is_empty() && target.query.is_empty() {
                return Err((
                    CommandErrorKind::MissingField,
                    "write-attr without pmin, pmax, gt, lt, st, epmin or epmax".to_owned(),
                ));
            }
            CommandKind::WriteAttr { target, attrs }
        }
        Op::Execute => CommandKind::Execute {
            target: target()?,
            args: match data.get("args") {
                None | Some(Json::Null) => String::new(),
                // EMQX maps a literal "undefined" to no arguments.
                Some(Json::String(s)) if s == "undefined" => String::new(),
                Some(Json::String(s)) => s.clone(),
                Some(_) => return Err(wrong_type("data.args", "a string")),
            },
        },
        Op::Create => {
            let base = target_field(op, data, "basePath")?;
            let entries = entries(data, &base.path, 2, top_hex)?;
            CommandKind::Create { base, entries }
        }
        Op::Delete => CommandKind::Delete { target: target()? },
        Op::Observe => CommandKind::Observe {
            target: target()?,
            accept: accept_field(data)?,
        },
        Op::CancelObserve => CommandKind::CancelObserve { target: target()? },
    })
}

/// A single write (`path`, `type`, `value`) or a batch write (`basePath`, `content`).
fn parse_write(data: &Map<String, Json>, top_hex: bool) -> Result<CommandKind, Failure> {
    let batch_base = match data.get("basePath") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(parse_target(s, "data.basePath")?),
        Some(_) => return Err(wrong_type("data.basePath", "a string")),
    };
    // EMQX treats `"basePath":"/"` as absent: a single write.
    if let Some(base) = batch_base.filter(|b| b.path.depth() > 0) {
        check_depth("write", "data.basePath", &base.path, (2, 3))?;
        let entries = entries(data, &base.path, 1, top_hex)?;
        let replace = match data.get("replace") {
            None | Some(Json::Null) => base.path.depth() == 3,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(wrong_type("data.replace", "a boolean")),
        };
        return Ok(CommandKind::Write {
            base,
            entries,
            replace,
        });
    }
    let base = target_field(Op::Write, data, "path")?;
    check_depth("write", "data.path", &base.path, (3, 4))?;
    let hex = top_hex || is_hex_encoding(&data.get("encoding").cloned());
    let value = typed_value(data, "data", hex)?;
    Ok(CommandKind::Write {
        entries: vec![Entry {
            path: base.path,
            value,
        }],
        base,
        replace: true,
    })
}

/// Reads `data.content` as entries under `base`, each item's relative path having at
/// least `min_rel` levels.
fn entries(
    data: &Map<String, Json>,
    base: &Path,
    min_rel: usize,
    top_hex: bool,
) -> Result<Vec<Entry>, Failure> {
    let items = match data.get("content") {
        None | Some(Json::Null) => return Err(missing("data.content")),
        Some(Json::Array(items)) => items,
        Some(_) => return Err(wrong_type("data.content", "an array")),
    };
    if items.len() > MAX_ENTRIES {
        return Err((
            CommandErrorKind::TooManyEntries,
            format!("data.content has more than {MAX_ENTRIES} items"),
        ));
    }
    let data_hex = top_hex || is_hex_encoding(&data.get("encoding").cloned());
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("data.content[{i}]");
        let Json::Object(item) = item else {
            return Err(wrong_type(&field, "an object"));
        };
        let rel = match item.get("path") {
            None | Some(Json::Null) => return Err(missing(&format!("{field}.path"))),
            Some(Json::String(s)) => s,
            Some(_) => return Err(wrong_type(&format!("{field}.path"), "a string")),
        };
        let path = relative_path(base, rel, min_rel)?;
        let hex = data_hex || is_hex_encoding(&item.get("encoding").cloned());
        let value = typed_value(item, &field, hex)?;
        entries.push(Entry { path, value });
    }
    entries.sort_by_key(|e| e.path);
    for pair in entries.windows(2) {
        if pair[0].path.contains(&pair[1].path) {
            return Err((
                CommandErrorKind::DuplicatePath,
                format!(
                    "data.content paths {} and {} overlap",
                    pair[0].path, pair[1].path
                ),
            ));
        }
    }
    Ok(entries)
}

/// `rel` ("14", "/20/1") appended to `base`; the result must be a resource or resource
/// instance and `rel` must have at least `min_rel` levels.
fn relative_path(base: &Path, rel: &str, min_rel: usize) -> Result<Path, Failure> {
    let bad = || {
        (
            CommandErrorKind::BadPath,
            format!("bad content path {}", quote(rel)),
        )
    };
    let rel_path = Path::parse(rel).map_err(|_| bad())?;
    let mut path = *base;
    for &id in rel_path.ids() {
        path = path.child(id).ok_or_else(|| {
            (
                CommandErrorKind::WrongDepth,
                format!("content path {} is too deep under {base}", quote(rel)),
            )
        })?;
    }
    if rel_path.depth() < min_rel || path.depth() < 3 {
        return Err((
            CommandErrorKind::WrongDepth,
            format!("content path {} under {base} is not a resource", quote(rel)),
        ));
    }
    Ok(path)
}

/// The LwM2M type names, lower case, and the name passed to `parse_typed_value`.
const TYPES: [(&str, &str); 10] = [
    ("integer", "Integer"),
    ("unsigned", "Unsigned"),
    ("unsigned integer", "Unsigned"),
    ("float", "Float"),
    ("boolean", "Boolean"),
    ("string", "String"),
    ("opaque", "Opaque"),
    ("time", "Time"),
    ("objlnk", "Objlnk"),
    ("objectlink", "Objlnk"),
];

/// The `type` and `value` members of `obj` (named `field` in errors) as a typed value.
fn typed_value(obj: &Map<String, Json>, field: &str, hex: bool) -> Result<content::Value, Failure> {
    let type_name = match obj.get("type") {
        None | Some(Json::Null) => return Err(missing(&format!("{field}.type"))),
        Some(Json::String(s)) => s,
        Some(_) => return Err(wrong_type(&format!("{field}.type"), "a string")),
    };
    let lower = type_name.to_ascii_lowercase();
    let Some(&(_, canonical)) = TYPES.iter().find(|(name, _)| *name == lower) else {
        return Err((
            CommandErrorKind::UnknownType,
            format!("unknown type {}", quote(type_name)),
        ));
    };
    let value = match obj.get("value") {
        None | Some(Json::Null) => return Err(missing(&format!("{field}.value"))),
        Some(v) => v,
    };
    let hex = hex && matches!(canonical, "Opaque" | "String");
    if hex && !value.as_str().is_some_and(is_hex) {
        return Err((
            CommandErrorKind::BadHex,
            format!("bad hex in {field}.value"),
        ));
    }
    content::parse_typed_value(canonical, value, hex).map_err(|_| {
        (
            CommandErrorKind::BadValue,
            format!(
                "{field}.value {} is not a valid {canonical}",
                quote_value(value)
            ),
        )
    })
}

/// Even-length hex digits (either case).
fn is_hex(s: &str) -> bool {
    s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `"encoding":"hex"` (case-insensitive); any other encoding is EMQX's "plain".
fn is_hex_encoding(v: &Option<Json>) -> bool {
    matches!(v, Some(Json::String(s)) if s.eq_ignore_ascii_case("hex"))
}

/// The write-attr attributes present in `data`, as Uri-Query values.
fn attrs(data: &Map<String, Json>) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for key in ATTR_KEYS {
        let text = match data.get(key) {
            None | Some(Json::Null) => continue,
            Some(Json::String(s)) => s.trim().to_owned(),
            Some(Json::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.to_string(),
                (_, Some(u), _) => u.to_string(),
                (_, _, Some(f)) => f.to_string(),
                _ => n.to_string(),
            },
            Some(_) => return Err(wrong_type(&format!("data.{key}"), "a number or string")),
        };
        if text.is_empty() {
            // A bare attribute name removes the attribute (LwM2M 1.1 §5.1.2).
            out.push(key.to_owned());
            continue;
        }
        let integer = matches!(key, "pmin" | "pmax" | "epmin" | "epmax");
        let ok = if integer {
            text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u64>().is_ok()
        } else {
            is_decimal(&text, key != "st")
        };
        if !ok {
            let what = if integer {
                "a non-negative integer"
            } else if key == "st" {
                "a non-negative number"
            } else {
                "a number"
            };
            return Err((
                CommandErrorKind::BadAttribute,
                format!("data.{key} {} is not {what}", quote(&text)),
            ));
        }
        out.push(format!("{key}={text}"));
    }
    Ok(out)
}

/// `-?digits(.digits)?`, the minus only when `signed`.
fn is_decimal(s: &str, signed: bool) -> bool {
    let s = if signed {
        s.strip_prefix('-').unwrap_or(s)
    } else {
        s
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

/// `data.accept`: a content-format number or media type.
fn accept_field(data: &Map<String, Json>) -> Result<Option<u16>, Failure> {
    const MEDIA_TYPES: [(&str, u16); 8] = [
        ("text/plain", content::format::TEXT),
        ("application/link-format", content::format::LINK),
        ("application/octet-stream", content::format::OPAQUE),
        ("application/cbor", content::format::CBOR),
        ("application/senml+json", content::format::SENML_JSON),
        ("application/senml+cbor", content::format::SENML_CBOR),
        ("application/vnd.oma.lwm2m+tlv", content::format::TLV),
        ("application/vnd.oma.lwm2m+json", content::format::OMA_JSON),
    ];
    let bad = |v: &Json| {
        (
            CommandErrorKind::WrongFieldType,
            format!("data.accept {} is not a content format", quote_value(v)),
        )
    };
    match data.get("accept") {
        None | Some(Json::Null) => Ok(None),
        Some(v @ Json::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(v)),
        Some(v @ Json::String(s)) => MEDIA_TYPES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, f)| Some(f))
            .or_else(|| s.parse::<u16>().ok().map(Some))
            .ok_or_else(|| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

/// The string member `key` of `data` as a target whose depth suits `op`.
fn target_field(op: Op, data: &Map<String, Json>, key: &str) -> Result<Target, Failure> {
    let field = format!("data.{key}");
    let target = match data.get(key) {
        None | Some(Json::Null) => return Err(missing(&field)),
        Some(Json::String(s)) => parse_target(s, &field)?,
        Some(_) => return Err(wrong_type(&field, "a string")),
    };
    if op != Op::Write {
        check_depth(op_name(op), &field, &target.path, op.depths())?;
    }
    Ok(target)
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "read",
        Op::Discover => "discover",
        Op::Write => "write",
        Op::WriteAttr => "write-attr",
        Op::Execute => "execute",
        Op::Create => "create",
        Op::Delete => "delete",
        Op::Observe => "observe",
        Op::CancelObserve => "cancel-observe",
    }
}

fn check_depth(
    op: &str,
    field: &str,
    path: &Path,
    (min, max): (usize, usize),
) -> Result<(), Failure> {
    let depth = path.depth();
    if (min..=max).contains(&depth) {
        return Ok(());
    }
    let mut reason = format!("{op} needs a {field} of ");
    if min == max {
        let _ = write!(reason, "{min} level");
    } else {
        let _ = write!(reason, "{min} to {max} levels");
    }
    let _ = write!(reason, ", got \"{path}\"");
    Err((CommandErrorKind::WrongDepth, reason))
}

/// `"/3/0/9?pmin=1&pmax=5"` → path `/3/0/9`, query `["pmin=1", "pmax=5"]`.
fn parse_target(s: &str, field: &str) -> Result<Target, Failure> {
    let (path, query) = s.split_once('?').unwrap_or((s, ""));
    let path = Path::parse(path).map_err(|_| {
        (
            CommandErrorKind::BadPath,
            format!("bad path {}", quote(path)),
        )
    })?;
    let mut params = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        if params.len() == MAX_QUERY_PARAMS || param.len() > MAX_QUERY_LEN {
            return Err((
                CommandErrorKind::BadQuery,
                format!("{field} query has more than {MAX_QUERY_PARAMS} parameters or one longer than {MAX_QUERY_LEN} bytes"),
            ));
        }
        params.push(param.to_owned());
    }
    Ok(Target {
        path,
        query: params,
    })
}

fn missing(field: &str) -> Failure {
    (CommandErrorKind::MissingField, format!("missing {field}"))
}

fn wrong_type(field: &str, what: &str) -> Failure {
    (
        CommandErrorKind::WrongFieldType,
        format!("{field} is not {what}"),
    )
}

/// A JSON value for an error reason: strings quoted, anything else as JSON text.
fn quote_value(v: &Json) -> String {
    match v {
        Json::String(s) => quote(s),
        other => quote(&other.to_string()),
    }
}

/// `s` as a JSON string, cut to [`MAX_QUOTE_LEN`] characters.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(MAX_QUOTE_LEN).collect();
    let mut out = Vec::new();
    json::write_str(&mut out, &cut);
    if cut.len() < s.len() {
        out.insert(out.len() - 1, b'.');
        out.insert(out.len() - 1, b'.');
        out.insert(out.len() - 1, b'.');
    }
    String::from_utf8(out).unwrap_or_default()
}
