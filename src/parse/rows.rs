//! The rows after a header: field count, UTF-8, the threshold, and each
//! kept direction's document handed to a sink. It keeps no state of a file
//! but the line numbers it is given, so blocks of complete lines can be
//! parsed on any thread, or as they are appended to a log.

use std::io;

use super::header::Header;
use super::split::{split_count, trim_cr};
use super::{DocAt, FlowSink, ParseOptions};
use crate::flow::doc::{DocWriter, Row, RowOut};
use crate::report::FileStats;

/// Complete lines of a log (or one line without its newline).
#[derive(Clone, Copy)]
pub(crate) struct Lines<'a> {
    /// The bytes; each line ends in `\n` (for a single line: no newline).
    pub(crate) bytes: &'a [u8],
    /// The line number of the first line.
    pub(crate) first: u64,
    /// True when all of `bytes` is known to be valid UTF-8.
    pub(crate) utf8: bool,
}

/// Turns rows into documents; its buffers are reused so no row allocates.
pub(crate) struct RowParser {
    writer: DocWriter,
    fields: Vec<(u32, u32)>,
    /// Where a document for a [`FlowSink`] is written before it is handed on.
    doc: Vec<u8>,
    threshold: u64,
    max_doc: usize,
    /// Line of the last row skipped for an oversized document (so a row
    /// with two such directions counts once).
    oversized_line: u64,
    skips: Skips,
}

impl RowParser {
    /// A row parser for these options.
    pub(crate) fn new(opts: &ParseOptions) -> RowParser {
        RowParser {
            writer: DocWriter::new(
                &opts.sensor,
                opts.instance.as_deref(),
                opts.threshold,
                opts.legacy_udp,
            ),
            fields: Vec::with_capacity(160),
            doc: Vec::with_capacity(2048),
            threshold: opts.threshold,
            max_doc: opts.max_doc,
            oversized_line: 0,
            skips: Skips {
                verbose: opts.verbose,
                notes: Vec::new(),
            },
        }
    }

    /// Forgets the last file's oversized row.
    pub(crate) fn new_file(&mut self) {
        self.oversized_line = 0;
    }

    /// The `--verbose` notes (line, why) of the rows skipped since the last
    /// call, in line order.
    pub(crate) fn take_notes(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.skips.notes)
    }

    /// True when notes wait to be taken.
    pub(crate) fn has_notes(&self) -> bool {
        !self.skips.notes.is_empty()
    }

    /// Counts a skipped row and notes why.
    pub(crate) fn skip(&mut self, lineno: u64, why: &str, stats: &mut FileStats) {
        self.skips.skip(lineno, why, stats);
    }

    /// Parses every complete line of `lines`; bytes after the last newline
    /// are left alone. On an output error, the line it happened on.
    pub(crate) fn block<S: FlowSink>(
        &mut self,
        h: &Header,
        lines: Lines<'_>,
        stats: &mut FileStats,
        sink: &mut S,
    ) -> Result<(), (u64, io::Error)> {
        let mut dest = SinkDest {
            sink,
            doc: std::mem::take(&mut self.doc),
        };
        let done = self.block_to(h, lines, stats, &mut dest);
        self.doc = dest.doc;
        done
    }

    /// [`RowParser::block`] appending the documents to `out.0` as NDJSON,
    /// each formatted in place, and the row of each to `out.1`.
    pub(crate) fn block_ndjson(
        &mut self,
        h: &Header,
        lines: Lines<'_>,
        stats: &mut FileStats,
        out: (&mut Vec<u8>, &mut Vec<DocAt>),
    ) -> Result<(), (u64, io::Error)> {
        self.block_to(h, lines, stats, &mut NdjsonDest(out.0, out.1))
    }

    fn block_to<D: Dest>(
        &mut self,
        h: &Header,
        lines: Lines<'_>,
        stats: &mut FileStats,
        dest: &mut D,
    ) -> Result<(), (u64, io::Error)> {
        let data = lines.bytes;
        let mut lineno = lines.first;
        let mut p = 0;
        while let Some(nl) = memchr::memchr(b'\n', &data[p..]) {
            let line = Lines {
                bytes: &data[p..p + nl],
                first: lineno,
                utf8: lines.utf8,
            };
            self.row(h, line, stats, dest).map_err(|e| (lineno, e))?;
            p += nl + 1;
            lineno += 1;
        }
        Ok(())
    }

    /// Parses one row (`line.bytes` without its newline).
    pub(crate) fn line<S: FlowSink>(
        &mut self,
        h: &Header,
        line: Lines<'_>,
        stats: &mut FileStats,
        sink: &mut S,
    ) -> io::Result<()> {
        let mut dest = SinkDest {
            sink,
            doc: std::mem::take(&mut self.doc),
        };
        let done = self.row(h, line, stats, &mut dest);
        self.doc = dest.doc;
        done
    }

    fn row<D: Dest>(
        &mut self,
        h: &Header,
        line: Lines<'_>,
        stats: &mut FileStats,
        dest: &mut D,
    ) -> io::Result<()> {
        let lineno = line.first;
        let line_bytes = trim_cr(line.bytes);
        if line_bytes.is_empty() {
            return Ok(());
        }
        if line_bytes[0] == b'#' {
            self.skips.skip(lineno, "repeated header line", stats);
            return Ok(());
        }
        // One pass splits the fields a document (or, with a threshold, the
        // threshold test) needs and counts the rest.
        let upto = if self.threshold > 0 {
            h.filter_upto
        } else {
            h.split_upto
        };
        let (mut split, nfields) = split_count(line_bytes, &mut self.fields, upto);
        if nfields != h.ncols {
            let why = format!("expected {} fields, got {nfields}", h.ncols);
            self.skips.skip(lineno, &why, stats);
            return Ok(());
        }
        let text = if line.utf8 {
            // SAFETY: the whole chunk holding this line is valid UTF-8 and
            // the line ends at a newline, which is a character boundary.
            unsafe { std::str::from_utf8_unchecked(line_bytes) }
        } else {
            match std::str::from_utf8(line_bytes) {
                Ok(t) => t,
                Err(_) => {
                    self.skips.skip(lineno, "not valid UTF-8", stats);
                    return Ok(());
                }
            }
        };
        if self.threshold > 0 {
            // Most rows fall below the threshold: decide on the byte columns
            // before splitting the rest of the row.
            let row = Row {
                text,
                fields: &self.fields[..split],
            };
            if self.writer.below_threshold(&row, &h.columns) {
                stats.rows += 1;
                return Ok(());
            }
            split = split_count(line_bytes, &mut self.fields, h.split_upto).0;
        }
        stats.rows += 1;
        let row = Row {
            text,
            fields: &self.fields[..split],
        };
        let mut out = Deliver {
            dest,
            stats,
            skips: &mut self.skips,
            oversized_line: &mut self.oversized_line,
            max_doc: self.max_doc,
            lineno,
            kept: false,
        };
        self.writer.write(&row, &h.columns, &mut out)
    }
}

/// Skipped rows and dropped directions: always counted, noted only for
/// `--verbose`.
struct Skips {
    verbose: bool,
    notes: Vec<(u64, String)>,
}

impl Skips {
    fn skip(&mut self, lineno: u64, why: &str, stats: &mut FileStats) {
        stats.skipped_rows += 1;
        stats.first_problem_line.get_or_insert(lineno);
        self.note(lineno, why);
    }

    fn note(&mut self, lineno: u64, why: &str) {
        if self.verbose {
            self.notes.push((lineno, why.to_string()));
        }
    }
}

/// Where finished documents go.
trait Dest {
    /// The buffer the next document is written into.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Takes the document in `buf()[start..]`, which comes from `at`.
    fn keep(&mut self, start: usize, at: DocAt) -> io::Result<()>;
}

/// Documents handed to a [`FlowSink`] one by one from a reused buffer.
struct SinkDest<'a, S> {
    sink: &'a mut S,
    doc: Vec<u8>,
}

impl<S: FlowSink> Dest for SinkDest<'_, S> {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.doc
    }

    fn keep(&mut self, start: usize, at: DocAt) -> io::Result<()> {
        let done = self.sink.flow_at(&self.doc[start..], at);
        self.doc.truncate(start);
        done
    }
}

/// Documents formatted in place at the end of an NDJSON buffer, and their
/// rows.
struct NdjsonDest<'a>(&'a mut Vec<u8>, &'a mut Vec<DocAt>);

impl Dest for NdjsonDest<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.0
    }

    fn keep(&mut self, _start: usize, at: DocAt) -> io::Result<()> {
        self.0.push(b'\n');
        self.1.push(at);
        Ok(())
    }
}

/// Where the documents of one row go: the destination, or the counts when
/// a document is too large or a direction is dropped.
struct Deliver<'a, D> {
    dest: &'a mut D,
    stats: &'a mut FileStats,
    skips: &'a mut Skips,
    oversized_line: &'a mut u64,
    max_doc: usize,
    lineno: u64,
    /// A document of this row was handed on.
    kept: bool,
}

impl<D: Dest> RowOut for Deliver<'_, D> {
    type Error = io::Error;

    fn buf(&mut self) -> &mut Vec<u8> {
        self.dest.buf()
    }

    fn doc(&mut self, start: usize) -> io::Result<()> {
        let len = self.dest.buf().len() - start;
        if len > self.max_doc {
            self.dest.buf().truncate(start);
            if std::mem::replace(self.oversized_line, self.lineno) != self.lineno {
                let why = format!(
                    "its document of {len} bytes does not fit in an array (at most {} bytes)",
                    self.max_doc + 2
                );
                self.skips.skip(self.lineno, &why, self.stats);
            }
            return Ok(());
        }
        let at = DocAt {
            line: self.lineno,
            second: std::mem::replace(&mut self.kept, true),
        };
        self.dest.keep(start, at)?;
        self.stats.flows += 1;
        Ok(())
    }

    fn dropped(&mut self, n: u64, why: &str) {
        self.stats.dropped += n;
        self.stats.first_problem_line.get_or_insert(self.lineno);
        self.skips.note(self.lineno, why);
    }
}
