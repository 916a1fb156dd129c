//! Batching flow documents into JSON arrays (design §5): at most `size`
//! elements and `max_bytes` bytes per array, one compact array per message.
//! It owns the array framing; it never parses logs or talks to a broker.

use std::io::{self, BufRead};

use crate::parse::FlowSink;

/// Default number of documents per array.
pub const DEFAULT_SIZE: usize = 100;
/// Default largest array in bytes (8 MiB).
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;

/// Groups documents into arrays and hands each finished array, with the
/// number of documents in it, to `emit`.
pub struct Chunker<F: FnMut(&[u8], usize) -> io::Result<()>> {
    size: usize,
    max_bytes: usize,
    buf: Vec<u8>,
    count: usize,
    emit: F,
}

/// A document larger than the array byte limit on its own.
#[derive(Debug, thiserror::Error)]
#[error("a document of {len} bytes does not fit in an array of at most {max} bytes (--max-bytes)")]
pub struct TooLarge {
    /// The document's length.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

impl<F: FnMut(&[u8], usize) -> io::Result<()>> Chunker<F> {
    /// A chunker with `size` ≥ 1 elements and `max_bytes` per array.
    pub fn new(size: usize, max_bytes: usize, emit: F) -> Self {
        Chunker {
            size: size.max(1),
            max_bytes,
            buf: Vec::with_capacity(64 * 1024),
            count: 0,
            emit,
        }
    }

    /// Adds one document (a compact JSON object).
    pub fn push(&mut self, doc: &[u8]) -> io::Result<()> {
        if doc.len() + 2 > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TooLarge {
                    len: doc.len(),
                    max: self.max_bytes,
                },
            ));
        }
        if self.count > 0 && self.buf.len() + 1 + doc.len() + 1 > self.max_bytes {
            self.flush()?;
        }
        self.buf.push(if self.count == 0 { b'[' } else { b',' });
        self.buf.extend_from_slice(doc);
        self.count += 1;
        if self.count == self.size {
            self.flush()?;
        }
        Ok(())
    }

    /// Emits the pending (shorter) array, if any.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        self.buf.push(b']');
        let r = (self.emit)(&self.buf, self.count);
        self.buf.clear();
        self.count = 0;
        r
    }

    /// Number of documents waiting for the next array.
    pub fn pending(&self) -> usize {
        self.count
    }
}

impl<F: FnMut(&[u8], usize) -> io::Result<()>> FlowSink for Chunker<F> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        self.push(doc)
    }
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line (with its newline, if it had one) is in the buffer.
    Line,
    /// The line was longer than the limit; it was not kept, and the input
    /// stops somewhere inside it.
    TooLong,
    /// The input is finished.
    End,
}

/// Reads one line into `line`, streaming: a line longer than `limit` bytes
/// (newline not counted) is refused as soon as that many bytes are seen,
/// so memory stays bounded however long the line is.
pub fn read_line_bounded<R: BufRead>(
    input: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    line.clear();
    loop {
        let avail = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::End
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let content = take - usize::from(done);
        if line.len() + content > limit {
            input.consume(take);
            line.clear();
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(&avail[..take]);
        input.consume(take);
        if done {
            return Ok(LineRead::Line);
        }
    }
}

/// Checks that a line is exactly one JSON object; returns it without the
/// surrounding whitespace.
pub fn check_object(line: &[u8]) -> Result<&[u8], String> {
    let start = line.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err("empty line, expected a JSON object".into());
    };
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(line.len(), |e| e + 1);
    let t = &line[start..end];
    if t[0] != b'{' {
        return Err("not a JSON object".into());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(t).map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(docs: &[&str], size: usize, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut c = Chunker::new(size, max, |a: &[u8], _n: usize| {
            out.push(String::from_utf8(a.to_vec()).unwrap());
            Ok(())
        });
        for d in docs {
            c.push(d.as_bytes()).unwrap();
        }
        c.flush().unwrap();
        drop(c);
        out
    }

    #[test]
    fn arrays_respect_both_bounds() {
        assert_eq!(run(&["{}", "{}", "{}"], 2, 100), ["[{},{}]", "[{}]"]);
        assert_eq!(
            run(&[r#"{"a":1}"#, r#"{"b":2}"#], 100, 12),
            [r#"[{"a":1}]"#, r#"[{"b":2}]"#]
        );
        assert!(run(&[], 100, 100).is_empty());
    }

    #[test]
    fn long_lines_are_refused_while_streaming() {
        let text = b"{}\n0123456789\n{\"a\":1}\nlast";
        let mut r = io::BufReader::with_capacity(4, &text[..]);
        let mut line = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut r, &mut line, 9).unwrap() {
                LineRead::End => break,
                LineRead::TooLong => got.push("too long".to_string()),
                LineRead::Line => got.push(String::from_utf8(line.clone()).unwrap()),
            }
            if got.len() == 2 {
                // Stop reading at the refused line, as tstat-chunk does.
                break;
            }
        }
        assert_eq!(got, ["{}\n", "too long"]);
        // Exactly at the limit is accepted, the newline not counted.
        let mut r = io::BufReader::with_capacity(3, &b"123456789\n12"[..]);
        assert_eq!(
            read_line_bounded(&mut r, &mut line, 9).unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"123456789\n");
        assert_eq!(
            read_line_bounded(&mut r, &mut line, 9).unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"12");
        assert_eq!(
            read_line_bounded(&mut r, &mut line, 9).unwrap(),
            LineRead::End
        );
    }

    #[test]
    fn objects_only() {
        assert!(check_object(b" {\"a\":1} ").is_ok());
        assert!(check_object(b"[1]").is_err());
        assert!(check_object(b"{\"a\":").is_err());
        assert!(check_object(b"{} {}").is_err());
        assert!(check_object(b"").is_err());
    }
}
