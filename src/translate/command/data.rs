//! The `data` member of a command: fields, paths, typed values and attributes.

use std::fmt::Write as _;

use serde_json::{Map, Value as Json};

use super::{
    CommandErrorKind, CommandKind, Failure, Target, ATTR_KEYS, MAX_COMPOSITE_PATHS, MAX_ENTRIES,
    MAX_QUERY_LEN, MAX_QUERY_PARAMS, MAX_QUOTE_LEN,
};
use crate::content::{self, Entry};
use crate::lwm2m::Path;
use crate::translate::json;

/// The operations a command names with its `msgType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `read`
    Read,
    /// `discover`
    Discover,
    /// `write`
    Write,
    /// `write-attr`
    WriteAttr,
    /// `execute`
    Execute,
    /// `create`
    Create,
    /// `delete`
    Delete,
    /// `observe`
    Observe,
    /// `cancel-observe`
    CancelObserve,
    /// `read-composite`
    ReadComposite,
    /// `write-composite`
    WriteComposite,
    /// `observe-composite`
    ObserveComposite,
    /// `cancel-observe-composite`
    CancelObserveComposite,
}

impl Operation {
    /// Every operation, in declaration order (so `op as usize` indexes it).
    pub const ALL: [Operation; 13] = [
        Operation::Read,
        Operation::Discover,
        Operation::Write,
        Operation::WriteAttr,
        Operation::Execute,
        Operation::Create,
        Operation::Delete,
        Operation::Observe,
        Operation::CancelObserve,
        Operation::ReadComposite,
        Operation::WriteComposite,
        Operation::ObserveComposite,
        Operation::CancelObserveComposite,
    ];

    /// The operation named by `msgType` (case-sensitive, as in EMQX).
    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == s)
    }

    /// The `msgType` naming the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Discover => "discover",
            Operation::Write => "write",
            Operation::WriteAttr => "write-attr",
            Operation::Execute => "execute",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Observe => "observe",
            Operation::CancelObserve => "cancel-observe",
            Operation::ReadComposite => "read-composite",
            Operation::WriteComposite => "write-composite",
            Operation::ObserveComposite => "observe-composite",
            Operation::CancelObserveComposite => "cancel-observe-composite",
        }
    }

    /// Whether the operation is one of LwM2M 1.1's composite operations on `/`.
    pub(super) fn is_composite(self) -> bool {
        matches!(
            self,
            Operation::ReadComposite
                | Operation::WriteComposite
                | Operation::ObserveComposite
                | Operation::CancelObserveComposite
        )
    }

    /// Path depths the operation allows (LwM2M 1.1 §6.3, §6.4).
    fn depths(self) -> (usize, usize) {
        match self {
            Operation::Read
            | Operation::WriteAttr
            | Operation::Observe
            | Operation::CancelObserve => (1, 4),
            // Each of `data.paths`; `data.content` items need a resource (instance).
            Operation::ReadComposite
            | Operation::ObserveComposite
            | Operation::CancelObserveComposite => (1, 4),
            Operation::WriteComposite => (3, 4),
            Operation::Discover => (1, 3),
            Operation::Execute => (3, 3),
            Operation::Create => (1, 1),
            Operation::Delete => (2, 4),
            // Checked per shape in `parse_write`: 3 to 4 for a single write, 2 to 3 for a batch.
            Operation::Write => (2, 4),
        }
    }
}

/// The operation `op` with its arguments from `data`; `top_hex` is EMQX's top-level
/// `"encoding":"hex"`.
pub(super) fn parse_kind(
    op: Operation,
    data: &Map<String, Json>,
    top_hex: bool,
) -> Result<CommandKind, Failure> {
    let target = || target_field(op, data, "path");
    Ok(match op {
        Operation::Read => CommandKind::Read {
            target: target()?,
            accept: accept_field(data)?,
        },
        Operation::Discover => CommandKind::Discover { target: target()? },
        Operation::Write => parse_write(data, top_hex)?,
        Operation::WriteAttr => {
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
        Operation::Execute => CommandKind::Execute {
            target: target()?,
            args: match data.get("args") {
                None | Some(Json::Null) => String::new(),
                // EMQX maps a literal "undefined" to no arguments.
                Some(Json::String(s)) if s == "undefined" => String::new(),
                Some(Json::String(s)) => s.clone(),
                Some(_) => return Err(wrong_type("data.args", "a string")),
            },
        },
        Operation::Create => {
            let base = target_field(op, data, "basePath")?;
            let entries = entries(data, &base.path, 2, top_hex)?;
            CommandKind::Create { base, entries }
        }
        Operation::Delete => CommandKind::Delete { target: target()? },
        Operation::Observe => CommandKind::Observe {
            target: target()?,
            accept: accept_field(data)?,
        },
        Operation::CancelObserve => CommandKind::CancelObserve { target: target()? },
        Operation::ReadComposite => CommandKind::ReadComposite {
            paths: paths_field(op, data)?,
            accept: composite_accept(data)?,
            format: composite_format(data)?,
        },
        Operation::WriteComposite => CommandKind::WriteComposite {
            // Every item names its absolute path: relative to `/`, at least 3 levels.
            entries: entries(data, &Path::ROOT, 3, top_hex)?,
            format: composite_format(data)?,
        },
        Operation::ObserveComposite => CommandKind::ObserveComposite {
            paths: paths_field(op, data)?,
            accept: composite_accept(data)?,
            format: composite_format(data)?,
        },
        Operation::CancelObserveComposite => CommandKind::CancelObserveComposite {
            paths: paths_field(op, data)?,
            format: composite_format(data)?,
        },
    })
}

/// `data.paths` of a composite command: 1 to [`MAX_COMPOSITE_PATHS`] distinct paths, in
/// the order given (the device answers in its own order anyway).
fn paths_field(op: Operation, data: &Map<String, Json>) -> Result<Vec<Path>, Failure> {
    let items = match data.get("paths") {
        None | Some(Json::Null) => return Err(missing("data.paths")),
        Some(Json::Array(items)) => items,
        Some(_) => return Err(wrong_type("data.paths", "an array")),
    };
    if items.is_empty() {
        return Err((
            CommandErrorKind::MissingField,
            "data.paths is empty".to_owned(),
        ));
    }
    if items.len() > MAX_COMPOSITE_PATHS {
        return Err((
            CommandErrorKind::TooManyPaths,
            format!("data.paths has more than {MAX_COMPOSITE_PATHS} paths"),
        ));
    }
    let mut paths = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("data.paths[{i}]");
        let Json::String(s) = item else {
            return Err(wrong_type(&field, "a string"));
        };
        let path = Path::parse(s).map_err(|_| {
            (
                CommandErrorKind::BadPath,
                format!("bad path {} in {field}", quote(s)),
            )
        })?;
        check_depth(op.as_str(), &field, &path, op.depths())?;
        if paths.contains(&path) {
            return Err((
                CommandErrorKind::DuplicatePath,
                format!("{field} {path} is listed twice"),
            ));
        }
        paths.push(path);
    }
    Ok(paths)
}

/// `data.accept` of a composite read or observe: SenML JSON (the default) or SenML CBOR,
/// the formats that can carry values of several paths.
fn composite_accept(data: &Map<String, Json>) -> Result<u16, Failure> {
    senml_format(data, "accept")
}

/// `data.format` of a composite command, the format its request body is written in: SenML
/// JSON (the default) or SenML CBOR.
fn composite_format(data: &Map<String, Json>) -> Result<u16, Failure> {
    senml_format(data, "format")
}

/// The content format named by `data.<key>`, SenML JSON when absent; another format than
/// SenML JSON or SenML CBOR is an error.
fn senml_format(data: &Map<String, Json>, key: &str) -> Result<u16, Failure> {
    match format_field(data, key)? {
        None => Ok(content::format::SENML_JSON),
        Some(f @ (content::format::SENML_JSON | content::format::SENML_CBOR)) => Ok(f),
        Some(other) => Err((
            CommandErrorKind::WrongFieldType,
            format!("data.{key} {other} is not SenML JSON (110) or SenML CBOR (112)"),
        )),
    }
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
    let base = target_field(Operation::Write, data, "path")?;
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
/// least `min_rel` levels; an item without `path` is at `base` itself (EMQX's single
/// value under a `basePath` naming the resource). Items at the same path: the last one
/// wins, as in EMQX; items at overlapping paths (a resource and one of its instances)
/// are an error.
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
        let path = match item.get("path") {
            None | Some(Json::Null) => at_base(base, &field)?,
            Some(Json::String(rel)) => relative_path(base, rel, min_rel)?,
            Some(_) => return Err(wrong_type(&format!("{field}.path"), "a string")),
        };
        let hex = data_hex || is_hex_encoding(&item.get("encoding").cloned());
        let value = typed_value(item, &field, hex)?;
        entries.push(Entry { path, value });
    }
    // Reversed, then a stable sort: of the items at one path the last comes first, and
    // `dedup` keeps the first of a run.
    entries.reverse();
    entries.sort_by_key(|e| e.path);
    entries.dedup_by_key(|e| e.path);
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

/// The path of a content item (`field`) without `path`: `base` itself, which must be a
/// resource or resource instance.
fn at_base(base: &Path, field: &str) -> Result<Path, Failure> {
    if *base == Path::ROOT {
        // A composite write: no basePath to fall back to.
        return Err(missing(&format!("{field}.path")));
    }
    if base.depth() < 3 {
        return Err((
            CommandErrorKind::MissingField,
            format!("missing {field}.path (basePath {base} is not a resource)"),
        ));
    }
    Ok(*base)
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
pub(super) fn is_hex_encoding(v: &Option<Json>) -> bool {
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
    format_field(data, "accept")
}

/// `data.<key>`: a content-format number or media type.
fn format_field(data: &Map<String, Json>, key: &str) -> Result<Option<u16>, Failure> {
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
            format!("data.{key} {} is not a content format", quote_value(v)),
        )
    };
    match data.get(key) {
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
fn target_field(op: Operation, data: &Map<String, Json>, key: &str) -> Result<Target, Failure> {
    let field = format!("data.{key}");
    let target = match data.get(key) {
        None | Some(Json::Null) => return Err(missing(&field)),
        Some(Json::String(s)) => parse_target(s, &field)?,
        Some(_) => return Err(wrong_type(&field, "a string")),
    };
    if op != Operation::Write {
        check_depth(op.as_str(), &field, &target.path, op.depths())?;
    }
    Ok(target)
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
