//! [`Value`], the typed LwM2M value, and the conversions every format shares: bytes and
//! text typed by a resource definition, coercion of self-described values to the
//! definition's type, base64, object links, and the §5 typed values of MQTT commands.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

use super::ContentError;
use crate::lwm2m::{Path, ResourceType};

/// A typed LwM2M value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer (LwM2M 1.1).
    Unsigned(u64),
    /// Floating point number.
    Float(f64),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 text.
    String(String),
    /// Bytes.
    Opaque(Vec<u8>),
    /// Seconds since the Unix epoch.
    Time(i64),
    /// Object link `ObjectID:InstanceID`.
    Objlnk(u16, u16),
    /// CoRE link-format text.
    CoreLink(String),
}

/// A typed LwM2M value borrowing its text and bytes from the payload it was decoded from,
/// so typing a TLV, text or opaque payload allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer (LwM2M 1.1).
    Unsigned(u64),
    /// Floating point number.
    Float(f64),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 text.
    String(&'a str),
    /// Bytes.
    Opaque(&'a [u8]),
    /// Seconds since the Unix epoch.
    Time(i64),
    /// Object link `ObjectID:InstanceID`.
    Objlnk(u16, u16),
    /// CoRE link-format text.
    CoreLink(&'a str),
}

impl<'a> ValueRef<'a> {
    /// Types binary bytes (TLV value, opaque payload) by the definition's type: big-endian
    /// integers of 1 to 8 bytes (the specification allows 1, 2, 4, 8; other widths are
    /// unambiguous and accepted), floats of 4 or 8, a Boolean byte 0 or 1, an object link
    /// as two 16-bit IDs. String and Corelnk bytes that are not UTF-8 are kept losslessly
    /// as Opaque rather than failing the whole payload; `None` (executable) and unknown
    /// resources are Opaque too.
    pub fn from_bytes(
        kind: Option<ResourceType>,
        bytes: &'a [u8],
        path: &Path,
    ) -> Result<ValueRef<'a>, ContentError> {
        let mismatch = |kind, reason| ContentError::TypeMismatch {
            path: *path,
            kind,
            reason,
        };
        let Some(kind) = kind else {
            return Ok(ValueRef::Opaque(bytes));
        };
        Ok(match kind {
            ResourceType::Integer | ResourceType::Time => {
                let n = be_signed(bytes).ok_or_else(|| mismatch(kind, "length not 1 to 8"))?;
                if kind == ResourceType::Time {
                    ValueRef::Time(n)
                } else {
                    ValueRef::Integer(n)
                }
            }
            ResourceType::UnsignedInteger => ValueRef::Unsigned(
                be_unsigned(bytes).ok_or_else(|| mismatch(kind, "length not 1 to 8"))?,
            ),
            ResourceType::Float => match bytes {
                [a, b, c, d] => ValueRef::Float(f64::from(f32::from_be_bytes([*a, *b, *c, *d]))),
                _ => ValueRef::Float(f64::from_be_bytes(
                    bytes
                        .try_into()
                        .map_err(|_| mismatch(kind, "length not 4 or 8"))?,
                )),
            },
            ResourceType::Boolean => match bytes {
                [0] => ValueRef::Boolean(false),
                [1] => ValueRef::Boolean(true),
                [_] => return Err(mismatch(kind, "byte not 0 or 1")),
                _ => return Err(mismatch(kind, "length not 1")),
            },
            ResourceType::Objlnk => match bytes {
                [a, b, c, d] => {
                    ValueRef::Objlnk(u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
                }
                _ => return Err(mismatch(kind, "length not 4")),
            },
            ResourceType::String | ResourceType::CoreLink => match std::str::from_utf8(bytes) {
                Ok(s) if kind == ResourceType::String => ValueRef::String(s),
                Ok(s) => ValueRef::CoreLink(s),
                Err(_) => ValueRef::Opaque(bytes),
            },
            ResourceType::Opaque | ResourceType::None => ValueRef::Opaque(bytes),
        })
    }

    /// Types a text/plain value as [`Value::from_text`] does, borrowing the text.
    pub(crate) fn from_text(
        kind: Option<ResourceType>,
        text: &'a str,
        path: &Path,
    ) -> Result<ValueRef<'a>, ContentError> {
        let mismatch = |kind, reason| ContentError::TypeMismatch {
            path: *path,
            kind,
            reason,
        };
        let t = text.trim();
        let Some(kind) = kind else {
            return Ok(ValueRef::String(text));
        };
        Ok(match kind {
            ResourceType::Integer => ValueRef::Integer(
                t.parse()
                    .map_err(|_| mismatch(kind, "not a decimal integer"))?,
            ),
            ResourceType::Time => ValueRef::Time(
                t.parse()
                    .map_err(|_| mismatch(kind, "not a decimal integer"))?,
            ),
            ResourceType::UnsignedInteger => ValueRef::Unsigned(
                t.parse()
                    .map_err(|_| mismatch(kind, "not an unsigned decimal integer"))?,
            ),
            ResourceType::Float => ValueRef::Float(
                t.parse()
                    .map_err(|_| mismatch(kind, "not a decimal number"))?,
            ),
            ResourceType::Boolean => ValueRef::Boolean(
                parse_bool(t).ok_or_else(|| mismatch(kind, "not 0, 1, true or false"))?,
            ),
            ResourceType::Objlnk => {
                let (o, i) = parse_objlnk(t).ok_or_else(|| mismatch(kind, "not A:B"))?;
                ValueRef::Objlnk(o, i)
            }
            // The bytes as sent, as EMQX reads them: `abc` publishes as `YWJj`. (LwM2M 1.1
            // would have the text be base64, but decoding it loses whatever is not.)
            ResourceType::Opaque => ValueRef::Opaque(text.as_bytes()),
            ResourceType::CoreLink => ValueRef::CoreLink(text),
            ResourceType::String | ResourceType::None => ValueRef::String(text),
        })
    }

    /// An owned copy.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Integer(n) => Value::Integer(n),
            ValueRef::Unsigned(n) => Value::Unsigned(n),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Boolean(b) => Value::Boolean(b),
            ValueRef::String(s) => Value::String(s.to_owned()),
            ValueRef::Opaque(b) => Value::Opaque(b.to_vec()),
            ValueRef::Time(n) => Value::Time(n),
            ValueRef::Objlnk(o, i) => Value::Objlnk(o, i),
            ValueRef::CoreLink(s) => Value::CoreLink(s.to_owned()),
        }
    }
}

impl Value {
    /// Types binary bytes by the definition's type; see [`ValueRef::from_bytes`].
    pub fn from_bytes(
        kind: Option<ResourceType>,
        bytes: &[u8],
        path: &Path,
    ) -> Result<Value, ContentError> {
        ValueRef::from_bytes(kind, bytes, path).map(ValueRef::to_value)
    }

    /// Types a text/plain value by the definition's type (LwM2M 1.1 §7.4.1): decimal
    /// numbers, Boolean `0`/`1` (or `true`/`false`), Objlnk `A:B`, Opaque as the text's
    /// own bytes. Without a definition the text is a String.
    pub fn from_text(
        kind: Option<ResourceType>,
        text: &str,
        path: &Path,
    ) -> Result<Value, ContentError> {
        ValueRef::from_text(kind, text, path).map(ValueRef::to_value)
    }

    /// The value borrowed.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Integer(n) => ValueRef::Integer(*n),
            Value::Unsigned(n) => ValueRef::Unsigned(*n),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Boolean(b) => ValueRef::Boolean(*b),
            Value::String(s) => ValueRef::String(s),
            Value::Opaque(b) => ValueRef::Opaque(b),
            Value::Time(n) => ValueRef::Time(*n),
            Value::Objlnk(o, i) => ValueRef::Objlnk(*o, *i),
            Value::CoreLink(s) => ValueRef::CoreLink(s),
        }
    }

    /// Converts a self-described value to the definition's type where that is exact (an
    /// integral float for an Integer resource, a base64 string for Opaque, `"A:B"` for
    /// Objlnk, ...); anything else is returned as it came.
    pub fn coerce(self, kind: Option<ResourceType>) -> Value {
        let Some(kind) = kind else { return self };
        match (kind, self) {
            (ResourceType::Integer, Value::Unsigned(n)) if i64::try_from(n).is_ok() => {
                Value::Integer(n as i64)
            }
            (ResourceType::Integer, Value::Float(f)) => match float_to_i64(f) {
                Some(n) => Value::Integer(n),
                None => Value::Float(f),
            },
            (ResourceType::Time, Value::Integer(n)) => Value::Time(n),
            (ResourceType::Time, Value::Unsigned(n)) if i64::try_from(n).is_ok() => {
                Value::Time(n as i64)
            }
            (ResourceType::Time, Value::Float(f)) => match float_to_i64(f) {
                Some(n) => Value::Time(n),
                None => Value::Float(f),
            },
            (ResourceType::UnsignedInteger, Value::Integer(n)) if n >= 0 => {
                Value::Unsigned(n as u64)
            }
            (ResourceType::UnsignedInteger, Value::Float(f)) => match float_to_i64(f) {
                Some(n) if n >= 0 => Value::Unsigned(n as u64),
                _ => Value::Float(f),
            },
            (ResourceType::Float, Value::Integer(n)) => Value::Float(n as f64),
            (ResourceType::Float, Value::Unsigned(n)) => Value::Float(n as f64),
            (ResourceType::Opaque, Value::String(s)) => match decode_base64(&s) {
                Some(bytes) => Value::Opaque(bytes),
                None => Value::String(s),
            },
            (ResourceType::Objlnk, Value::String(s)) => match parse_objlnk(&s) {
                Some((o, i)) => Value::Objlnk(o, i),
                None => Value::String(s),
            },
            (ResourceType::CoreLink, Value::String(s)) => Value::CoreLink(s),
            (ResourceType::Boolean, Value::Integer(n @ (0 | 1))) => Value::Boolean(n == 1),
            (_, v) => v,
        }
    }

    /// Converts a JSON number to an Integer (or Unsigned above `i64::MAX`) when it has no
    /// fraction or exponent, else to a Float.
    pub fn from_json_number(n: &serde_json::Number) -> Value {
        if let Some(i) = n.as_i64() {
            Value::Integer(i)
        } else if let Some(u) = n.as_u64() {
            Value::Unsigned(u)
        } else {
            Value::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }
}

/// The exact integer value of `f`, if it has one that fits an `i64`.
fn float_to_i64(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every integral float in [-2^63, 2^63) fits.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

/// A big-endian two's complement integer of 1 to 8 bytes.
pub(crate) fn be_signed(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    Some(i64::from_be_bytes(buf))
}

/// A big-endian unsigned integer of 1 to 8 bytes.
pub(crate) fn be_unsigned(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut buf = [0; 8];
    buf[8 - bytes.len()..].copy_from_slice(bytes);
    Some(u64::from_be_bytes(buf))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Parses an object link `ObjectID:InstanceID`.
pub fn parse_objlnk(s: &str) -> Option<(u16, u16)> {
    let (o, i) = s.split_once(':')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(o) || !digits(i) {
        return None;
    }
    Some((o.parse().ok()?, i.parse().ok()?))
}

/// Decodes base64 in any of the alphabets devices and users send: standard or URL-safe,
/// padded or not.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let engine = if s.contains(['-', '_']) {
        if s.ends_with('=') {
            &URL_SAFE
        } else {
            &URL_SAFE_NO_PAD
        }
    } else if s.ends_with('=') {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    engine.decode(s).ok()
}

/// Decodes hex digits (either case, even count).
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16);
    s.chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
        .collect()
}

/// Parses a value given as MQTT JSON (a string, or a native number/bool) of the §5 type
/// name (`Integer`, `Unsigned`, `Float`, `Boolean`, `String`, `Opaque`, `Time`, `Objlnk`,
/// also `Corelnk`; case-insensitive). Opaque is base64, or hex when `hex`; a String may
/// also be hex when `hex`. Floats must be finite.
pub fn parse_typed_value(
    type_name: &str,
    value: &serde_json::Value,
    hex: bool,
) -> Result<Value, ContentError> {
    use serde_json::Value as J;
    let bad = |type_name, reason| ContentError::BadValue { type_name, reason };
    let lower = type_name.to_ascii_lowercase();
    match lower.as_str() {
        "integer" | "time" => {
            let name = if lower == "time" { "Time" } else { "Integer" };
            let n = match value {
                J::Number(n) => n
                    .as_i64()
                    .or_else(|| n.as_f64().and_then(float_to_i64))
                    .ok_or_else(|| bad(name, "not an integer in the i64 range"))?,
                J::String(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| bad(name, "not a decimal integer in the i64 range"))?,
                _ => return Err(bad(name, "not a number or string")),
            };
            Ok(if lower == "time" {
                Value::Time(n)
            } else {
                Value::Integer(n)
            })
        }
        "unsigned" | "unsigned integer" => {
            const NAME: &str = "Unsigned";
            let n = match value {
                J::Number(n) => n
                    .as_u64()
                    .or_else(|| {
                        n.as_f64()
                            .and_then(float_to_i64)
                            .and_then(|i| u64::try_from(i).ok())
                    })
                    .ok_or_else(|| bad(NAME, "not an integer in the u64 range"))?,
                J::String(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| bad(NAME, "not a decimal integer in the u64 range"))?,
                _ => return Err(bad(NAME, "not a number or string")),
            };
            Ok(Value::Unsigned(n))
        }
        "float" => {
            const NAME: &str = "Float";
            let f = match value {
                J::Number(n) => n.as_f64().ok_or_else(|| bad(NAME, "not a number"))?,
                J::String(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| bad(NAME, "not a decimal number"))?,
                _ => return Err(bad(NAME, "not a number or string")),
            };
            if !f.is_finite() {
                return Err(bad(NAME, "not finite"));
            }
            Ok(Value::Float(f))
        }
        "boolean" => {
            const NAME: &str = "Boolean";
            let b = match value {
                J::Bool(b) => Some(*b),
                J::Number(n) => match n.as_u64() {
                    Some(0) => Some(false),
                    Some(1) => Some(true),
                    _ => None,
                },
                J::String(s) => parse_bool(&s.trim().to_ascii_lowercase()),
                _ => None,
            };
            Ok(Value::Boolean(
                b.ok_or_else(|| bad(NAME, "not true, false, 0 or 1"))?,
            ))
        }
        "string" | "corelnk" => {
            let name = if lower == "string" {
                "String"
            } else {
                "Corelnk"
            };
            let s = match value {
                J::String(s) if hex => {
                    let bytes = decode_hex(s).ok_or_else(|| bad(name, "not hex"))?;
                    String::from_utf8(bytes).map_err(|_| bad(name, "hex is not UTF-8"))?
                }
                J::String(s) => s.clone(),
                J::Number(n) => n.to_string(),
                J::Bool(b) => b.to_string(),
                _ => return Err(bad(name, "not a string")),
            };
            Ok(if lower == "string" {
                Value::String(s)
            } else {
                Value::CoreLink(s)
            })
        }
        "opaque" => {
            const NAME: &str = "Opaque";
            let J::String(s) = value else {
                return Err(bad(NAME, "not a string"));
            };
            let bytes = if hex {
                decode_hex(s).ok_or_else(|| bad(NAME, "not hex"))?
            } else {
                decode_base64(s).ok_or_else(|| bad(NAME, "not base64"))?
            };
            Ok(Value::Opaque(bytes))
        }
        "objlnk" => {
            const NAME: &str = "Objlnk";
            let J::String(s) = value else {
                return Err(bad(NAME, "not a string"));
            };
            let (o, i) = parse_objlnk(s.trim()).ok_or_else(|| bad(NAME, "not A:B"))?;
            Ok(Value::Objlnk(o, i))
        }
        _ => Err(ContentError::UnknownType(type_name.to_owned())),
    }
}
