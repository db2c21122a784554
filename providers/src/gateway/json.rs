//! A small lossless JSON reader and the canonical (sorted-keys) writer the IPN
//! signature is computed over.
//!
//! `serde_json::Value` turns every number into an `f64`/`i64`/`u64` unless a
//! crate feature is switched on somewhere in the workspace, so the text of an
//! amount like `155.38559757` would be lost. This reader keeps each number's
//! text as it arrived: money is read from that text exactly, and the canonical
//! form re-emits it unchanged.
//!
//! Canonical form (what NOWPayments signs, `JSON.stringify(sortObject(body))`):
//! no whitespace; object keys sorted by UTF-16 code units (JavaScript's default
//! sort), recursively; arrays keep their order (their elements are made
//! canonical); strings escaped as `JSON.stringify` does (`\"`, `\\`, `\b`,
//! `\f`, `\n`, `\r`, `\t`, other control characters as `\u00xx`, everything
//! else literal); numbers as received. Numbers are not re-formatted: a body
//! produced by `JSON.stringify` already carries JavaScript's shortest form, so
//! the received text is what the sender's re-serialization produced.
//!
//! Duplicate keys are refused (which value was signed would be ambiguous), as
//! are lone surrogates, bodies nested deeper than [`MAX_DEPTH`] and anything
//! after the value. Reading is linear in the input's size: each byte is looked
//! at a bounded number of times, and each key is checked for a duplicate with
//! one lookup in a hash set of its object's keys.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt::Write as _;

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// A JSON value with numbers kept as their source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text, exactly as received (validated against RFC 8259).
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Members in the order received; keys are unique.
    Object(Vec<(String, Json)>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed JSON at byte {at}: {what}")]
pub struct JsonError {
    pub at: usize,
    pub what: &'static str,
}

impl Json {
    /// Parses one JSON value (RFC 8259), with optional surrounding whitespace.
    pub fn parse(input: &[u8]) -> Result<Json, JsonError> {
        let text = std::str::from_utf8(input).map_err(|e| JsonError {
            at: e.valid_up_to(),
            what: "not UTF-8",
        })?;
        let mut parser = Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        parser.skip_ws();
        let value = parser.value(0)?;
        parser.skip_ws();
        if parser.at != parser.bytes.len() {
            return Err(parser.error("trailing characters"));
        }
        Ok(value)
    }

    /// A member of an object (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a number, or of a string (gateways send some ids and
    /// amounts either way).
    pub fn scalar_text(&self) -> Option<&str> {
        match self {
            Json::Number(n) => Some(n),
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The canonical form: keys sorted recursively, no whitespace.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, true);
        out
    }

    /// Compact, members in their own order.
    pub fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, false);
        out
    }

    fn write(&self, out: &mut String, sorted: bool) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Number(n) => out.push_str(n),
            Json::String(s) => write_string(out, s),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, sorted);
                }
                out.push(']');
            }
            Json::Object(members) => {
                let mut members: Vec<&(String, Json)> = members.iter().collect();
                if sorted {
                    members.sort_by(|a, b| utf16_order(&a.0, &b.0));
                }
                out.push('{');
                for (i, (key, value)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, key);
                    out.push(':');
                    value.write(out, sorted);
                }
                out.push('}');
            }
        }
    }
}

/// JavaScript's default string order: by UTF-16 code units.
pub fn utf16_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// A string literal as `JSON.stringify` writes it.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &'static str) -> JsonError {
        JsonError { at: self.at, what }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &'static str, value: Json) -> Result<Json, JsonError> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        match self.peek() {
            None => Err(self.error("unexpected end")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        self.at += 1;
        let mut members: Vec<(String, Json)> = Vec::new();
        // The keys seen so far in this object: one hash lookup per key keeps
        // the duplicate check linear in the body's size (comparing each key
        // with every earlier one was quadratic in the number of keys).
        let mut keys: HashSet<String> = HashSet::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key_at = self.at;
            let key = self.string()?;
            if !keys.insert(key.clone()) {
                return Err(JsonError {
                    at: key_at,
                    what: "duplicate key",
                });
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.at += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deep"));
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("expected a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected an exponent"));
            }
        }
        Ok(Json::Number(self.text[start..self.at].to_owned()))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(hex) = self.text.get(self.at..self.at + 4) else {
            return Err(self.error("short \\u escape"));
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("bad \\u escape"));
        }
        self.at += 4;
        Ok(u32::from_str_radix(hex, 16).expect("four hex digits"))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let run_start = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(&self.text[run_start..self.at]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = match first {
                                0xD800..=0xDBFF => {
                                    if !self.bytes[self.at..].starts_with(b"\\u") {
                                        return Err(self.error("lone surrogate"));
                                    }
                                    self.at += 2;
                                    let second = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&second) {
                                        return Err(self.error("lone surrogate"));
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(self.error("lone surrogate")),
                                other => other,
                            };
                            out.push(char::from_u32(code).expect("a valid scalar value"));
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_number_text_and_sorts_keys_recursively() {
        let body = br#" { "b": 155.38559757, "a": {"z": 1E-7, "y": [ {"d":0,"c":-0.5} ] }, "c": "x\u00e9\n/" } "#;
        let value = Json::parse(body).unwrap();
        assert_eq!(
            value.canonical(),
            r#"{"a":{"y":[{"c":-0.5,"d":0}],"z":1E-7},"b":155.38559757,"c":"xé\n/"}"#
        );
        assert_eq!(value.get("b"), Some(&Json::Number("155.38559757".into())));
    }

    #[test]
    fn sorts_like_javascript() {
        // U+1F600 is 0xD83D 0xDE00 in UTF-16, so it sorts before U+FF5E there,
        // though after it by code point.
        let value =
            Json::parse("{\"\u{1F600}\":1,\"\u{FF5E}\":2,\"B\":3,\"a\":4}".as_bytes()).unwrap();
        assert_eq!(
            value.canonical(),
            "{\"B\":3,\"a\":4,\"\u{1F600}\":1,\"\u{FF5E}\":2}"
        );
    }

    #[test]
    fn escapes_like_json_stringify() {
        let value = Json::String("q\"b\\\u{1}\u{8}\u{c}\t\r\u{2028}".into());
        assert_eq!(
            value.canonical(),
            "\"q\\\"b\\\\\\u0001\\b\\f\\t\\r\u{2028}\""
        );
        let parsed = Json::parse(br#""\ud83d\ude00""#).unwrap();
        assert_eq!(parsed, Json::String("\u{1F600}".into()));
    }

    #[test]
    fn refuses_what_is_not_strict_json() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":1,}",
            b"{\"a\":1 \"b\":2}",
            b"{\"a\":1,\"a\":2}",
            b"[01]",
            b"[1.]",
            b"[.5]",
            b"[1e]",
            b"[+1]",
            b"[NaN]",
            b"{'a':1}",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"a\x01\"",
            b"{} {}",
            b"\xff",
            b"tru",
        ] {
            assert!(
                Json::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(Json::parse(br#"{"a":{"b":1,"b":1}}"#).is_err(), "nested");
        assert!(
            Json::parse(br#"[{"a":1},{"a":1}]"#).is_ok(),
            "keys of other objects"
        );
        assert!(Json::parse(deep.as_bytes()).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Json::parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn a_duplicate_among_thousands_of_keys_is_found_wherever_it_is() {
        let keys: Vec<String> = (0..8_000).map(|i| format!("\"k{i}\":0")).collect();
        let distinct = format!("{{{}}}", keys.join(","));
        let Json::Object(members) = Json::parse(distinct.as_bytes()).unwrap() else {
            panic!("an object");
        };
        assert_eq!(members.len(), 8_000);
        for repeated in ["k0", "k3999", "k7999"] {
            let body = format!("{{{},\"{repeated}\":1}}", keys.join(","));
            let error = Json::parse(body.as_bytes()).unwrap_err();
            assert_eq!(error.what, "duplicate key");
            // The second key starts after the comma that took the place of `}`.
            assert_eq!(error.at, distinct.len(), "the second `{repeated}`");
        }
    }
}
