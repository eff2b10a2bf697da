//! A small JSON writer for the uplink path: appends to a caller's reused `Vec<u8>`, never
//! allocates on its own, escapes per RFC 8259 (quotes, backslash, control characters) and
//! passes non-ASCII text through as UTF-8.

/// Appends `s` as a JSON string, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    // Runs of plain bytes are copied at once; only the bytes JSON forbids are escaped.
    while let Some(i) = rest
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        out.extend_from_slice(&rest[..i]);
        write_escape(out, rest[i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Appends the escape of one byte JSON does not allow in a string.
fn write_escape(out: &mut Vec<u8>, b: u8) {
    let escape: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
            return;
        }
    };
    out.extend_from_slice(escape);
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `n` in decimal.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Writes one JSON object member by member; `end` closes it.
///
/// The writer does not track keys: callers must not write a key twice.
#[derive(Debug)]
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Opens an object at the end of `out`.
    pub fn begin(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter { out, empty: true }
    }

    /// Writes `"key":` (with a separating comma when needed) and returns the buffer for
    /// the value, which the caller must then write exactly once.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// Writes pre-rendered members: `"k":v` pairs of valid JSON joined by commas, with no
    /// leading or trailing comma (e.g. a command's echo); nothing when `members` is empty.
    pub fn raw_members(&mut self, members: &str) -> &mut Self {
        if members.is_empty() {
            return self;
        }
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.extend_from_slice(members.as_bytes());
        self
    }

    /// Writes a string member.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        write_str(self.key(key), value);
        self
    }

    /// Writes an unsigned number member.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        write_u64(self.key(key), value);
        self
    }

    /// Writes a signed number member.
    pub fn i64(&mut self, key: &str, value: i64) -> &mut Self {
        write_i64(self.key(key), value);
        self
    }

    /// Writes a member whose value is an array of strings.
    pub fn str_array<'s>(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = &'s str>,
    ) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, v);
        }
        out.push(b']');
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_str(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn escapes() {
        assert_eq!(json_str("plain"), r#""plain""#);
        assert_eq!(json_str("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_str("\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(json_str("\x00\x1f\x7f"), "\"\\u0000\\u001f\x7f\"");
        assert_eq!(json_str("grüße ☃ 😀"), "\"grüße ☃ 😀\"");
        assert_eq!(json_str(""), r#""""#);
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 86400, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for n in [0i64, -1, 42, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn object_writer_nests_and_appends() {
        let mut out = b"prefix ".to_vec();
        let mut o = ObjectWriter::begin(&mut out);
        o.str("a", "x").u64("n", 3).i64("m", -3);
        let mut inner = ObjectWriter::begin(o.key("data"));
        inner
            .raw_members("")
            .str_array("list", ["/1", "/2"])
            .raw_members(r#""r":[1],"s":{}"#)
            .str_array("none", []);
        inner.end();
        o.end();
        assert_eq!(
            out,
            br#"prefix {"a":"x","n":3,"m":-3,"data":{"list":["/1","/2"],"r":[1],"s":{},"none":[]}}"#
        );
        let mut empty = Vec::new();
        ObjectWriter::begin(&mut empty).end();
        assert_eq!(empty, b"{}");
    }

    proptest! {
        #[test]
        fn any_string_round_trips(s in any::<String>()) {
            let mut out = Vec::new();
            let mut o = ObjectWriter::begin(&mut out);
            o.str(&s, &s);
            o.end();
            let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            prop_assert_eq!(v.get(&s).and_then(|v| v.as_str()), Some(s.as_str()));
        }
    }
}
