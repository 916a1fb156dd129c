//! The read loop of one log: chunks are read, cut at newlines, the header
//! is taken from the first line and the rows go to this thread's row parser
//! or, for a file larger than one read, to worker threads. Long lines, a cut
//! last line, read errors and the stop flag are handled here.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::header::{Header, NO_HEADER, Protocol};
use super::pool::{Done, Pool};
use super::rows::Lines;
use super::split::{read_full, trim_cr};
use super::{FlowSink, ParseError, Parser};
use crate::report::{Event, FileStats};

/// Longest accepted line; longer ones are skipped so memory stays bounded.
const MAX_LINE: usize = 1 << 20;
/// Bytes read at once.
pub(super) const READ_CHUNK: usize = 1 << 18;

/// The log being read: its name, protocol, header once read, and counts.
pub(super) struct Log<'a> {
    pub(super) name: &'a str,
    pub(super) proto: Protocol,
    pub(super) header: Option<Header>,
    pub(super) stats: FileStats,
}

/// Where the read loop of one log stands between two reads.
#[derive(Default)]
struct Cursor {
    /// Lines counted so far.
    lineno: u64,
    /// Where the unfinished line starts in the buffer.
    start: usize,
    /// Skipping the rest of a line longer than [`MAX_LINE`].
    discarding: bool,
    /// The reader is done (at its end, or failed).
    eof: bool,
    /// Why the reader failed, reported after the rows before it.
    read_error: Option<io::Error>,
    /// Worker threads for a file larger than one read.
    pool: Option<Pool>,
    /// Workers are tried once per file; without any, this thread parses.
    pool_tried: bool,
}

impl Cursor {
    /// Keeps the unfinished line and reads more after it, up to
    /// [`READ_CHUNK`] bytes; the end or an error sets `eof`.
    fn refill<R: Read>(&mut self, reader: &mut R, buf: &mut Vec<u8>) {
        if self.start > 0 {
            buf.drain(..self.start);
            self.start = 0;
        }
        if self.eof {
            return;
        }
        let old = buf.len();
        buf.resize(old + READ_CHUNK, 0);
        match read_full(reader, &mut buf[old..]) {
            Ok(0) => {
                buf.truncate(old);
                self.eof = true;
            }
            Ok(n) => buf.truncate(old + n),
            Err(e) => {
                buf.truncate(old);
                self.eof = true;
                self.read_error = Some(e);
            }
        }
    }
}

/// The error of a log whose reader failed after `lineno` lines.
fn read_failure(e: &io::Error, log: &Log<'_>, lineno: u64) -> ParseError {
    let msg = if e.kind() == io::ErrorKind::UnexpectedEof {
        format!(
            "compressed stream ends early (Tstat may still be writing it); \
             kept the {} complete rows before line {}",
            log.stats.rows,
            lineno + 1
        )
    } else {
        format!("read error after line {lineno}: {e}")
    };
    ParseError::Truncated {
        path: log.name.to_string(),
        msg,
        stats: FileStats::default(),
    }
}

impl Parser {
    /// Parses an opened log; `path` gives its name and whether it is gzip.
    pub(super) fn parse_open<S: FlowSink>(
        &mut self,
        file: File,
        path: &Path,
        proto: Protocol,
        sink: &mut S,
    ) -> Result<FileStats, ParseError> {
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "gz") {
            let gz =
                flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(READ_CHUNK, file));
            self.parse_reader(gz, &name, proto, sink)
        } else {
            self.parse_reader(file, &name, proto, sink)
        }
    }

    /// Reads `reader` to its end into `log`; `buf` is the reused buffer.
    pub(super) fn read_lines<R: Read, S: FlowSink>(
        &mut self,
        mut reader: R,
        buf: &mut Vec<u8>,
        log: &mut Log<'_>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        let mut at = Cursor::default();
        loop {
            self.check_stop(log.name)?;
            at.refill(&mut reader, buf);
            // A file larger than one read gets worker threads once its
            // header is known.
            if !at.pool_tried
                && !at.eof
                && self.opts.threads > 1
                && let Some(h) = &log.header
            {
                at.pool_tried = true;
                at.pool = Pool::new(&self.opts, h, log.name, self.spawn_fails);
            }
            self.complete_lines(&mut at, buf, log, sink)?;
            let pending = buf.len() - at.start;
            if at.eof || pending > MAX_LINE {
                self.drain_pool(&mut at, log, sink)?;
            }
            if at.eof {
                if pending > 0 {
                    self.last_line(&mut at, buf, log, sink)?;
                }
                break;
            }
            if pending > MAX_LINE {
                self.long_line(&mut at, buf, log)?;
            }
        }
        if let Some(p) = at.pool {
            p.finish()?;
        }
        match at.read_error {
            Some(e) => Err(read_failure(&e, log, at.lineno)),
            // An empty file is no error: Tstat creates its logs empty.
            None => Ok(()),
        }
    }

    /// Parses every complete line of `buf` after the unfinished one kept
    /// from the last read: as one block for the workers when there are
    /// any, else line by line here.
    fn complete_lines<S: FlowSink>(
        &mut self,
        at: &mut Cursor,
        buf: &[u8],
        log: &mut Log<'_>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        let mut pos = 0usize;
        let last_nl = memchr::memrchr(b'\n', buf);
        // One check for the whole chunk; lines are checked one by one
        // only when it holds invalid bytes somewhere.
        let utf8 = last_nl.is_none_or(|end| std::str::from_utf8(&buf[..end]).is_ok());
        if let Some(p) = at.pool.as_mut()
            && !at.discarding
            && let Some(end) = last_nl
        {
            let region = &buf[..=end];
            let first = at.lineno + 1;
            at.lineno += memchr::memchr_iter(b'\n', region).count() as u64;
            pos = end + 1;
            if let Some(done) = p.submit(region, first, utf8)? {
                self.emit(p, done, log, sink)?;
            }
        }
        while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
            let line = &buf[pos..pos + nl];
            pos += nl + 1;
            at.lineno += 1;
            if at.discarding {
                at.discarding = false;
                continue;
            }
            let line = Lines {
                bytes: line,
                first: at.lineno,
                utf8,
            };
            self.line(log, line, sink)?;
        }
        at.start = pos;
        Ok(())
    }

    /// Hands on every block the workers still hold, keeping messages in
    /// line order.
    fn drain_pool<S: FlowSink>(
        &mut self,
        at: &mut Cursor,
        log: &mut Log<'_>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        if let Some(p) = at.pool.as_mut() {
            while let Some(done) = p.collect()? {
                self.emit(p, done, log, sink)?;
                self.check_stop(log.name)?;
            }
        }
        Ok(())
    }

    /// The unfinished line at the end of the file: a header without its
    /// newline, or a cut row. After a read error it is the cut, which the
    /// error reports; it is no malformed row.
    fn last_line<S: FlowSink>(
        &mut self,
        at: &mut Cursor,
        buf: &[u8],
        log: &mut Log<'_>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        if at.discarding || at.read_error.is_some() {
            return Ok(());
        }
        at.lineno += 1;
        if log.header.is_none() {
            // A file of just a header without its newline.
            let line = Lines {
                bytes: &buf[at.start..],
                first: at.lineno,
                utf8: false,
            };
            self.line(log, line, sink)
        } else {
            let why = "incomplete last line (no newline at end of file)";
            self.rows.skip(at.lineno, why, &mut log.stats);
            self.report_skipped(log.name);
            Ok(())
        }
    }

    /// A line longer than [`MAX_LINE`] so far: skipped (its rest is
    /// discarded as it arrives), or the end of a file whose first line is
    /// that long (no header can be).
    fn long_line(
        &mut self,
        at: &mut Cursor,
        buf: &mut Vec<u8>,
        log: &mut Log<'_>,
    ) -> Result<(), ParseError> {
        if log.header.is_none() {
            // The answer a short garbage line gets.
            let msg = if buf[at.start] == b'#' {
                "the first line is longer than 1 MiB, so it is no Tstat header".into()
            } else {
                NO_HEADER.into()
            };
            return Err(ParseError::Header {
                path: log.name.to_string(),
                msg,
            });
        }
        if !at.discarding {
            // Its line number is counted when its newline arrives.
            let why = "line longer than 1 MiB";
            self.rows.skip(at.lineno + 1, why, &mut log.stats);
            self.report_skipped(log.name);
        }
        at.discarding = true;
        buf.truncate(at.start);
        Ok(())
    }

    /// `Interrupted` once the stop flag is set.
    fn check_stop(&self, name: &str) -> Result<(), ParseError> {
        match &self.opts.stop {
            Some(stop) if stop.is_triggered() => Err(ParseError::Interrupted {
                path: name.to_string(),
                stats: FileStats::default(),
            }),
            _ => Ok(()),
        }
    }

    /// One line on this thread: the header while there is none, a row
    /// after it.
    fn line<S: FlowSink>(
        &mut self,
        log: &mut Log<'_>,
        line: Lines<'_>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        let Some(h) = &log.header else {
            if !trim_cr(line.bytes).is_empty() {
                log.header = Some(Header::from_line(line.bytes, log.name, log.proto)?);
            }
            return Ok(());
        };
        let done = self.rows.line(h, line, &mut log.stats, sink);
        self.report_skipped(log.name);
        done.map_err(ParseError::Output)
    }

    /// Reports the rows skipped on this thread since the last call.
    pub(super) fn report_skipped(&mut self, name: &str) {
        if self.rows.has_notes() {
            for (line, why) in self.rows.take_notes() {
                self.reporter.report(Event::RowSkipped {
                    file: name,
                    line,
                    why: &why,
                });
            }
        }
    }

    /// Hands a finished block's documents, notes and counts on, in order,
    /// and gives its buffers back to the pool.
    fn emit<S: FlowSink>(
        &self,
        pool: &mut Pool,
        done: Done,
        log: &mut Log<'_>,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        for (line, why) in &done.notes {
            self.reporter.report(Event::RowSkipped {
                file: log.name,
                line: *line,
                why,
            });
        }
        let written = sink
            .flows_at(&done.out, &done.at)
            .map_err(ParseError::Output);
        let stats = &mut log.stats;
        stats.rows += done.stats.rows;
        stats.flows += done.stats.flows;
        stats.skipped_rows += done.stats.skipped_rows;
        stats.dropped += done.stats.dropped;
        if stats.first_problem_line.is_none() {
            stats.first_problem_line = done.stats.first_problem_line;
        }
        pool.recycle(done);
        written
    }
}
