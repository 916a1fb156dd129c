//! Writing a message: its body must be a JSON array; each element becomes
//! one NDJSON line (or, with `arrays`, the whole array one line, as it was
//! published). A body is checked completely before a byte of it is
//! written, so a bad message leaves nothing half-written behind. Elements
//! are copied as they are, byte for byte; only an element or array that
//! spans lines loses the whitespace between its tokens (a line must stay
//! one document).

use std::fmt;
use std::io::{self, Write};

use serde::de::{Deserializer as _, IgnoredAny, SeqAccess, Visitor};

/// Why a body is not a message of flow documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody(pub String);

impl fmt::Display for BadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The writer of messages' documents on a byte sink (stdout).
#[derive(Debug)]
pub struct Output<W: Write> {
    w: W,
    arrays: bool,
    /// Bytes written since the last flush.
    unflushed: usize,
    scratch: Vec<u8>,
}

impl<W: Write> Output<W> {
    /// Documents as NDJSON on `w`, or arrays one a line when `arrays`.
    pub fn new(w: W, arrays: bool) -> Self {
        Output {
            w,
            arrays,
            unflushed: 0,
            scratch: Vec::new(),
        }
    }

    /// Writes one message body; `Ok(Err(_))` when the body is not a JSON
    /// array (nothing written), else the number of documents it holds.
    pub fn message(&mut self, body: &[u8]) -> io::Result<Result<u64, BadBody>> {
        let n = match check_array(body) {
            Ok(n) => n,
            Err(bad) => return Ok(Err(bad)),
        };
        let body = trim(body);
        if self.arrays {
            self.line(body)?;
        } else {
            for element in Elements::new(body) {
                self.line(element)?;
            }
        }
        Ok(Ok(n))
    }

    /// Bytes written since the last [`flush`](Self::flush).
    pub fn unflushed(&self) -> usize {
        self.unflushed
    }

    /// Flushes what was written down to the sink.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()?;
        self.unflushed = 0;
        Ok(())
    }

    /// The sink back.
    pub fn into_inner(self) -> W {
        self.w
    }

    fn line(&mut self, text: &[u8]) -> io::Result<()> {
        if memchr::memchr2(b'\n', b'\r', text).is_some() {
            self.scratch.clear();
            compact(text, &mut self.scratch);
            self.w.write_all(&self.scratch)?;
            self.unflushed += self.scratch.len();
        } else {
            self.w.write_all(text)?;
            self.unflushed += text.len();
        }
        self.w.write_all(b"\n")?;
        self.unflushed += 1;
        Ok(())
    }
}

/// Checks that `body` is exactly one JSON array (serde_json's grammar) and
/// counts its elements.
pub fn check_array(body: &[u8]) -> Result<u64, BadBody> {
    let first = body.iter().find(|b| !is_ws(**b));
    match first {
        None => return Err(BadBody("the body is empty, not a JSON array".into())),
        Some(b'[') => {}
        Some(&b) => {
            let what = match b {
                b'{' => "a JSON object".to_string(),
                b'"' => "a JSON string".to_string(),
                b'0'..=b'9' | b'-' => "a number".to_string(),
                _ if b.is_ascii_graphic() => format!("'{}'", b as char),
                _ => format!("byte 0x{b:02x}"),
            };
            return Err(BadBody(format!(
                "the body is not a JSON array (it starts with {what})"
            )));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let n = de
        .deserialize_seq(CountElements)
        .and_then(|n| de.end().map(|()| n))
        .map_err(|e| BadBody(format!("the body is not valid JSON: {e}")))?;
    Ok(n)
}

struct CountElements;

impl<'de> Visitor<'de> for CountElements {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !is_ws(*c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_ws(*c)).map_or(start, |e| e + 1);
    &b[start..end]
}

/// Copies JSON text without the whitespace between tokens.
fn compact(text: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !is_ws(b) {
            out.push(b);
            in_string = b == b'"';
        }
    }
}

/// The elements of a checked JSON array (trimmed text, `[` first), each
/// as its text without surrounding whitespace.
struct Elements<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Elements<'a> {
    fn new(array: &'a [u8]) -> Self {
        Elements {
            text: array,
            pos: 1,
        }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let t = self.text;
        let mut i = self.pos;
        while i < t.len() && is_ws(t[i]) {
            i += 1;
        }
        if i >= t.len() || t[i] == b']' {
            self.pos = t.len();
            return None;
        }
        let start = i;
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        while i < t.len() {
            let b = t[i];
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => break,
                    _ => {}
                }
            }
            i += 1;
        }
        self.pos = if i < t.len() && t[i] == b',' {
            i + 1
        } else {
            i
        };
        Some(trim(&t[start..i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(arrays: bool, body: &str) -> (Result<u64, BadBody>, String) {
        let mut o = Output::new(Vec::new(), arrays);
        let r = o.message(body.as_bytes()).unwrap();
        o.flush().unwrap();
        (r, String::from_utf8(o.into_inner()).unwrap())
    }

    #[test]
    fn documents_are_copied_byte_for_byte() {
        let body = r#"[{"a":1.50,"s":"x,]}\"y"},{"b":[1,{"c":2}]} , 3,"z"]"#;
        let (r, text) = out(false, body);
        assert_eq!(r, Ok(4));
        assert_eq!(
            text,
            "{\"a\":1.50,\"s\":\"x,]}\\\"y\"}\n{\"b\":[1,{\"c\":2}]}\n3\n\"z\"\n"
        );
        let (r, text) = out(true, body);
        assert_eq!(r, Ok(4));
        assert_eq!(text, format!("{body}\n"));
        assert_eq!(out(false, " [ ] "), (Ok(0), String::new()));
        assert_eq!(out(true, "[]\n"), (Ok(0), "[]\n".to_string()));
    }

    #[test]
    fn documents_spanning_lines_become_one_line() {
        let body = "[\n {\n  \"a\": \"x y\\n\",\n  \"b\": [1, 2]\n },\r\n {\"c\":3}\n]\n";
        assert_eq!(
            out(false, body),
            (
                Ok(2),
                "{\"a\":\"x y\\n\",\"b\":[1,2]}\n{\"c\":3}\n".to_string()
            )
        );
        assert_eq!(
            out(true, body),
            (
                Ok(2),
                "[{\"a\":\"x y\\n\",\"b\":[1,2]},{\"c\":3}]\n".to_string()
            )
        );
    }

    #[test]
    fn anything_but_one_array_is_refused_and_nothing_written() {
        for (body, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("{\"a\":1}", "starts with a JSON object"),
            ("hello", "starts with 'h'"),
            ("42", "starts with a number"),
            ("[1,2", "not valid JSON"),
            ("[1,2] [3]", "not valid JSON"),
            ("[1,,2]", "not valid JSON"),
            ("[\"a\u{1}\"]", "not valid JSON"),
        ] {
            let (r, text) = out(false, body);
            let e = r.expect_err(body);
            assert!(e.0.contains(why), "{body:?}: {e}");
            assert!(text.is_empty());
        }
        assert!(check_array(b"\xff[").is_err());
    }
}
