//! Reading Tstat logs (design §3): the header, row splitting, malformed-row
//! accounting, gzip, directories, and the byte threshold. Columns are found by
//! name, rows are streamed through a reused buffer, and each kept direction is
//! handed to a [`FlowSink`]. It never decides where documents go, and never
//! prints: skipped rows, file counts and file errors go to a [`Reporter`].
//!
//! Layout: `header` (the header line), `split` (lines and fields), `rows`
//! (rows to documents), `read` (the read loop), `pool` (worker threads),
//! `logs` (a directory's logs), `error`; the document bytes are written by
//! `flow`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

mod error;
mod header;
mod logs;
mod pool;
mod read;
mod rows;
mod split;

pub use self::error::ParseError;
pub use self::header::{Header, Protocol};
pub use self::logs::{dir_logs, logs_size};
pub use self::pool::{THREADS_ENV, threads_from_env};
pub use crate::report::FileStats;
use crate::report::{Event, Reporter, Silent};

use self::read::Log;
use self::rows::{Lines, RowParser};

/// What the flow documents carry and which flows are kept.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Keep a direction when its byte count is at least this (design §3.5).
    pub threshold: u64,
    /// `sensor_id`.
    pub sensor: String,
    /// `instance_id`: a string when given, the integer 0 otherwise.
    pub instance: Option<String>,
    /// Reproduce the reference's UDP durations (milliseconds, design §4.2).
    pub legacy_udp: bool,
    /// Report every skipped row (as [`Event::RowSkipped`]).
    pub verbose: bool,
    /// Threads formatting documents of one large file (1: this thread only;
    /// see [`threads_from_env`]).
    pub threads: usize,
    /// Triggered from elsewhere (a signal) to stop parsing: the read loop
    /// looks at it once per 256 KiB read and returns
    /// [`ParseError::Interrupted`].
    pub stop: Option<crate::shutdown::Shutdown>,
    /// Largest document kept: a larger one could never fit in an array, so
    /// its row is skipped as malformed instead of stopping the stream.
    pub max_doc: usize,
}

impl Default for ParseOptions {
    /// `tstat-parse`'s defaults on one thread: the 25 GB threshold, an
    /// empty sensor id, no size limit on a document.
    fn default() -> ParseOptions {
        ParseOptions {
            threshold: crate::bytesize::DEFAULT_BYTES,
            sensor: String::new(),
            instance: None,
            legacy_udp: false,
            verbose: false,
            threads: 1,
            stop: None,
            max_doc: usize::MAX,
        }
    }
}

/// Receives each kept flow document (compact JSON, no newline).
pub trait FlowSink {
    /// Takes one document.
    fn flow(&mut self, doc: &[u8]) -> io::Result<()>;

    /// Takes many documents, each followed by a newline.
    fn flows(&mut self, ndjson: &[u8]) -> io::Result<()> {
        let mut p = 0;
        while let Some(nl) = memchr::memchr(b'\n', &ndjson[p..]) {
            self.flow(&ndjson[p..p + nl])?;
            p += nl + 1;
        }
        Ok(())
    }

    /// Takes one document with the row it comes from (the parser always
    /// calls this one; a sink that needs no positions keeps the default).
    fn flow_at(&mut self, doc: &[u8], at: DocAt) -> io::Result<()> {
        let _ = at;
        self.flow(doc)
    }

    /// Takes many documents, each followed by a newline, with the row of
    /// each (`at` has one entry per document).
    fn flows_at(&mut self, ndjson: &[u8], at: &[DocAt]) -> io::Result<()> {
        let _ = at;
        self.flows(ndjson)
    }
}

impl<S: FlowSink + ?Sized> FlowSink for &mut S {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        (**self).flow(doc)
    }

    fn flows(&mut self, ndjson: &[u8]) -> io::Result<()> {
        (**self).flows(ndjson)
    }

    fn flow_at(&mut self, doc: &[u8], at: DocAt) -> io::Result<()> {
        (**self).flow_at(doc, at)
    }

    fn flows_at(&mut self, ndjson: &[u8], at: &[DocAt]) -> io::Result<()> {
        (**self).flows_at(ndjson, at)
    }
}

/// Where a document comes from: its row's line in the log, and whether it
/// is the second document of that row (each row gives at most two, one per
/// direction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DocAt {
    /// The row's line number (1: the header).
    pub line: u64,
    /// The row's first document was handed on before this one.
    pub second: bool,
}

/// Writes documents as NDJSON.
pub struct NdjsonSink<W: Write>(pub W);

impl<W: Write> FlowSink for NdjsonSink<W> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        self.0.write_all(doc)?;
        self.0.write_all(b"\n")
    }

    fn flows(&mut self, ndjson: &[u8]) -> io::Result<()> {
        self.0.write_all(ndjson)
    }
}

/// What parsing one argument (a directory or a file) gave.
#[derive(Debug, Default)]
pub struct PathOutcome {
    /// Counts over its files.
    pub stats: FileStats,
    /// File-level errors (already reported); the other files of the
    /// argument were still parsed.
    pub errors: Vec<ParseError>,
}

/// Turns log files into flow documents. One parser can read many files; its
/// buffers are reused so no row allocates.
pub struct Parser {
    opts: ParseOptions,
    reporter: Arc<dyn Reporter>,
    rows: RowParser,
    buf: Vec<u8>,
    /// Tests: behave as if no worker thread could be spawned.
    spawn_fails: bool,
}

impl Parser {
    /// A parser with these options that reports nothing (see
    /// [`Parser::with_reporter`]).
    pub fn new(opts: ParseOptions) -> Parser {
        Parser::with_reporter(opts, Arc::new(Silent))
    }

    /// A parser with these options that tells `reporter` about skipped rows
    /// (with `verbose`), each file's counts and file errors.
    pub fn with_reporter(opts: ParseOptions, reporter: Arc<dyn Reporter>) -> Parser {
        Parser {
            rows: RowParser::new(&opts),
            opts,
            reporter,
            buf: Vec::with_capacity(read::READ_CHUNK * 2),
            spawn_fails: false,
        }
    }

    /// The options in use.
    pub fn options(&self) -> &ParseOptions {
        &self.opts
    }

    /// Parses one log file (plain or `.gz`).
    pub fn parse_file<S: FlowSink>(
        &mut self,
        path: &Path,
        proto: Protocol,
        sink: &mut S,
    ) -> Result<FileStats, ParseError> {
        let file = File::open(path).map_err(|source| ParseError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.parse_open(file, path, proto, sink)
    }

    /// Parses a log from any reader; `name` is used in messages.
    pub fn parse_reader<R: Read, S: FlowSink>(
        &mut self,
        reader: R,
        name: &str,
        proto: Protocol,
        sink: &mut S,
    ) -> Result<FileStats, ParseError> {
        // The read buffer is kept for the next file, whatever happens.
        self.rows.new_file();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut log = Log {
            name,
            proto,
            header: None,
            stats: FileStats::default(),
        };
        let result = self.read_lines(reader, &mut buf, &mut log, sink);
        self.buf = buf;
        match result {
            Ok(()) => Ok(log.stats),
            Err(mut e) => {
                // An error part-way keeps the counts of the rows before it.
                if let Some(s) = e.partial_stats_mut() {
                    *s = log.stats;
                }
                Err(e)
            }
        }
    }

    /// Parses the complete lines in `lines` of log `name`, which come after
    /// its `header` (read with [`Header::from_line`]); the first is line
    /// number `first_line`. Bytes after the last newline are not read: keep
    /// them until their line is complete. For reading a log as it grows;
    /// skipped rows are reported, the file's counts are returned (not
    /// reported).
    pub fn parse_lines<S: FlowSink>(
        &mut self,
        header: &Header,
        name: &str,
        lines: &[u8],
        first_line: u64,
        sink: &mut S,
    ) -> Result<FileStats, ParseError> {
        let mut stats = FileStats::default();
        let lines = Lines {
            bytes: lines,
            first: first_line,
            utf8: std::str::from_utf8(lines).is_ok(),
        };
        let done = self.rows.block(header, lines, &mut stats, sink);
        self.report_skipped(name);
        done.map_err(|(_, e)| ParseError::Output(e))?;
        Ok(stats)
    }

    /// Parses a tstat directory (TCP log, then UDP log) or a single log file,
    /// reporting each file's counts and errors. Only an output error is
    /// returned as `Err`: it must stop the whole run.
    pub fn parse_path<S: FlowSink>(
        &mut self,
        path: &Path,
        protocol: Option<Protocol>,
        sink: &mut S,
    ) -> Result<PathOutcome, ParseError> {
        let mut outcome = PathOutcome::default();
        let is_dir = path.is_dir();
        let files = if is_dir {
            let logs = dir_logs(path).and_then(|logs| {
                if logs.is_empty() {
                    Err(ParseError::NoLogs {
                        path: path.display().to_string(),
                    })
                } else {
                    Ok(logs)
                }
            });
            match logs {
                Ok(logs) => logs,
                Err(e) => {
                    self.reporter.report(Event::FileFailed { error: &e });
                    outcome.errors.push(e);
                    vec![]
                }
            }
        } else {
            match protocol.or_else(|| Protocol::from_file_name(path)) {
                Some(p) => vec![(path.to_path_buf(), p)],
                None if !path.exists() => {
                    let e = ParseError::Io {
                        path: path.display().to_string(),
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "no such file or directory",
                        ),
                    };
                    self.reporter.report(Event::FileFailed { error: &e });
                    outcome.errors.push(e);
                    vec![]
                }
                None => {
                    let e = ParseError::Header {
                        path: path.display().to_string(),
                        msg: "cannot tell TCP from UDP by the file name; use --protocol tcp|udp"
                            .into(),
                    };
                    self.reporter.report(Event::FileFailed { error: &e });
                    outcome.errors.push(e);
                    vec![]
                }
            }
        };
        for (file, proto) in files {
            // A log found in a directory must be a regular file; a file named
            // on the command line may be anything readable (a pipe from
            // `<(zcat …)`).
            let parsed = if is_dir {
                logs::open_dir_log(&file).and_then(|f| self.parse_open(f, &file, proto, sink))
            } else {
                self.parse_file(&file, proto, sink)
            };
            match parsed {
                Ok(st) => {
                    self.report_file(&file.display().to_string(), &st);
                    outcome.stats.add(&st);
                }
                Err(e) if e.is_output() => return Err(e),
                Err(e) => self.file_failed(e, &mut outcome),
            }
        }
        Ok(outcome)
    }

    /// Parses a log read from stdin.
    pub fn parse_stdin<S: FlowSink>(
        &mut self,
        protocol: Protocol,
        sink: &mut S,
    ) -> Result<PathOutcome, ParseError> {
        let mut outcome = PathOutcome::default();
        let stdin = io::stdin();
        match self.parse_reader(stdin.lock(), "<stdin>", protocol, sink) {
            Ok(st) => {
                self.report_file("<stdin>", &st);
                outcome.stats = st;
            }
            Err(e) if e.is_output() => return Err(e),
            Err(e) => self.file_failed(e, &mut outcome),
        }
        Ok(outcome)
    }

    /// Reports a file's counts ([`Event::FileDone`]; printed as a warning
    /// when anything was skipped or dropped).
    pub fn report_file(&self, name: &str, st: &FileStats) {
        self.reporter.report(Event::FileDone {
            file: name,
            stats: st,
        });
    }

    /// Reports a file's error, keeping the counts of the rows read before it.
    fn file_failed(&self, e: ParseError, outcome: &mut PathOutcome) {
        self.reporter.report(Event::FileFailed { error: &e });
        if let Some((name, st)) = e.path().zip(e.partial_stats()) {
            self.report_file(name, st);
            outcome.stats.add(st);
        }
        outcome.errors.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::pool::IN_FLIGHT;
    use super::read::READ_CHUNK;
    use super::*;
    use crate::report::Collect;

    fn opts(threshold: u64) -> ParseOptions {
        ParseOptions {
            threshold,
            sensor: "s".into(),
            ..ParseOptions::default()
        }
    }

    #[test]
    fn worker_threads_give_the_same_output_and_counts() {
        let hdr = "#c_ip:1 c_port:2 c_first_abs:3 c_durat:4 c_bytes_all:5 c_pkts_all:6 s_ip:7 s_port:8 s_first_abs:9 s_durat:10 s_bytes_all:11 s_pkts_all:12\n";
        let mut text = hdr.to_string();
        for i in 0..60_000u32 {
            match i % 997 {
                5 => text.push_str("short row\n"),
                9 => text.push_str(hdr),
                _ => text.push_str(&format!(
                    "10.0.0.1 {i} 1000000.5 2.5 {} 2 10.0.0.2 53 1000001.0 1.0 0 0\n",
                    i % 50
                )),
            }
        }
        text.push_str("10.0.0.1 1 2");
        let run = |threads: usize, spawn_fails: bool| {
            let mut o = opts(10);
            o.threads = threads;
            o.verbose = true;
            let events = Arc::new(Collect::default());
            let mut p = Parser::with_reporter(o, events.clone());
            p.spawn_fails = spawn_fails;
            let mut out = NdjsonSink(Vec::new());
            let st = p
                .parse_reader(text.as_bytes(), "x", Protocol::Udp, &mut out)
                .unwrap();
            (st, out.0, events.lines())
        };
        let (s1, o1, e1) = run(1, false);
        for t in [2, 3, 16, 100] {
            let (s2, o2, e2) = run(t, false);
            assert_eq!(s1, s2);
            assert!(o1 == o2, "output differs with {t} threads");
            assert_eq!(e1, e2, "skipped rows reported out of order");
        }
        // Not one worker could be spawned: this thread parses it all.
        let (s2, o2, e2) = run(4, true);
        assert_eq!(s1, s2);
        assert!(o1 == o2, "output differs without workers");
        assert_eq!(e1, e2);
        assert_eq!(s1.skipped_rows, 2 * 61 + 1);
        assert_eq!(s1.first_problem_line, Some(7));
        assert_eq!(e1.len() as u64, s1.skipped_rows);
        assert_eq!(e1[0], "skipped: x: line 7: expected 12 fields, got 2");
        assert_eq!(
            e1.last().map(String::as_str),
            Some("skipped: x: line 60002: incomplete last line (no newline at end of file)")
        );
    }

    #[test]
    fn quiet_rows_are_not_reported_but_files_and_errors_are() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d.out");
        std::fs::create_dir(&dir).unwrap();
        let mut text = udp_text(3);
        text.push_str("short row\n");
        std::fs::write(dir.join("log_udp_complete"), &text).unwrap();
        std::fs::write(dir.join("log_tcp_complete"), "no header\n").unwrap();
        let events = Arc::new(Collect::default());
        let mut p = Parser::with_reporter(opts(1), events.clone());
        let outcome = p
            .parse_path(&dir, None, &mut NdjsonSink(Vec::new()))
            .unwrap();
        assert_eq!(outcome.errors.len(), 1);
        let tcp = dir.join("log_tcp_complete").display().to_string();
        let udp = dir.join("log_udp_complete").display().to_string();
        assert_eq!(
            events.lines(),
            [
                format!("failed: {tcp}: {}", header::NO_HEADER),
                format!("done: {udp}: 3 rows"),
            ]
        );
    }

    #[test]
    fn lines_after_a_known_header_parse_like_the_whole_file() {
        let text = udp_text(1000) + "short row\n" + &udp_text(10)[UDP_HDR.len()..];
        let mut whole = NdjsonSink(Vec::new());
        let want = Parser::new(opts(1))
            .parse_reader(text.as_bytes(), "x", Protocol::Udp, &mut whole)
            .unwrap();
        let header = Header::from_line(UDP_HDR.trim_end().as_bytes(), "x", Protocol::Udp).unwrap();
        let mut o = opts(1);
        o.verbose = true;
        let events = Arc::new(Collect::default());
        let mut p = Parser::with_reporter(o, events.clone());
        let mut out = NdjsonSink(Vec::new());
        let body = &text.as_bytes()[UDP_HDR.len()..];
        // Two blocks cut after line 501, and a partial line that is left alone.
        let cut = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(499)
            .unwrap()
            .0
            + 1;
        let mut got = p
            .parse_lines(&header, "x", &body[..cut], 2, &mut out)
            .unwrap();
        got.add(
            &p.parse_lines(&header, "x", &body[cut..], 502, &mut out)
                .unwrap(),
        );
        p.parse_lines(&header, "x", b"10.0.0.1 1", 1013, &mut out)
            .unwrap();
        assert_eq!(
            (got.rows, got.flows, got.skipped_rows),
            (want.rows, want.flows, want.skipped_rows)
        );
        assert!(out.0 == whole.0);
        assert_eq!(
            events.lines(),
            ["skipped: x: line 1002: expected 12 fields, got 2"]
        );
    }

    const UDP_HDR: &str = "#c_ip:1 c_port:2 c_first_abs:3 c_durat:4 c_bytes_all:5 c_pkts_all:6 s_ip:7 s_port:8 s_first_abs:9 s_durat:10 s_bytes_all:11 s_pkts_all:12\n";

    /// A UDP log of `n` rows, one kept direction each.
    fn udp_text(n: usize) -> String {
        let mut text = UDP_HDR.to_string();
        for i in 0..n {
            text.push_str(&format!(
                "10.0.0.1 {i} 1000000.5 2.5 100 2 10.0.0.2 53 1000001.0 1.0 0 0\n"
            ));
        }
        text
    }

    /// A reader that sets a stop flag once `after` bytes were read.
    struct StopAfter<'a> {
        data: &'a [u8],
        pos: usize,
        after: usize,
        stop: crate::shutdown::Shutdown,
    }

    impl Read for StopAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.after {
                self.stop.trigger();
            }
            let n = buf.len().min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn stop_flag_interrupts_within_a_read_chunk_and_keeps_counts() {
        let text = udp_text(100_000);
        for threads in [1, 2] {
            for after in [0, 1 << 20] {
                let stop = crate::shutdown::Shutdown::new();
                let mut o = opts(1);
                o.threads = threads;
                o.stop = Some(stop.clone());
                let mut p = Parser::new(o);
                let mut out = NdjsonSink(Vec::new());
                let reader = StopAfter {
                    data: text.as_bytes(),
                    pos: 0,
                    after,
                    stop,
                };
                let e = p
                    .parse_reader(reader, "x", Protocol::Udp, &mut out)
                    .unwrap_err();
                assert!(e.is_interrupted(), "{e}");
                assert_eq!(e.to_string(), "x: parsing interrupted");
                let st = e.partial_stats().expect("partial counts");
                let emitted = out.0.iter().filter(|&&b| b == b'\n').count() as u64;
                assert_eq!(st.flows, emitted, "counts match what was emitted");
                assert_eq!(st.rows, st.flows);
                // At most one read chunk (and the blocks in flight) after
                // the flag was set.
                let limit = (after + (IN_FLIGHT + 2) * READ_CHUNK) as u64 / 60;
                assert!(st.rows < limit, "{threads} threads, after {after}: {st:?}");
                if after > 0 {
                    assert!(st.rows > 0, "{threads} threads: {st:?}");
                }
            }
        }
    }

    #[test]
    fn parse_path_keeps_the_counts_of_a_log_cut_short() {
        use std::io::Write as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d.out");
        std::fs::create_dir(&dir).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(udp_text(50_000).as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        std::fs::write(dir.join("log_udp_complete.gz"), &gz[..gz.len() / 2]).unwrap();
        let mut p = Parser::new(opts(1));
        let mut out = NdjsonSink(Vec::new());
        let outcome = p.parse_path(&dir, None, &mut out).unwrap();
        assert_eq!(outcome.errors.len(), 1);
        let st = outcome.errors[0].partial_stats().unwrap();
        let emitted = out.0.iter().filter(|&&b| b == b'\n').count() as u64;
        assert!(emitted > 1000 && emitted < 50_000, "{emitted}");
        assert_eq!((st.rows, st.flows), (emitted, emitted));
        assert_eq!(
            (outcome.stats.rows, outcome.stats.flows),
            (emitted, emitted)
        );
    }

    #[test]
    fn reader_handles_lines_across_chunks() {
        let hdr = "#c_ip:1 c_port:2 c_first_abs:3 c_durat:4 c_bytes_all:5 c_pkts_all:6 s_ip:7 s_port:8 s_first_abs:9 s_durat:10 s_bytes_all:11 s_pkts_all:12\n";
        let row = "10.0.0.1 5353 1000000.5 2.5 100 2 10.0.0.2 53 1000001.0 1.0 0 0\n";
        let mut text = hdr.to_string();
        for _ in 0..20_000 {
            text.push_str(row);
        }
        let mut p = Parser::new(opts(1));
        let mut out = NdjsonSink(Vec::new());
        let st = p
            .parse_reader(text.as_bytes(), "x", Protocol::Udp, &mut out)
            .unwrap();
        assert_eq!(st.rows, 20_000);
        assert_eq!(st.flows, 20_000);
        assert_eq!(out.0.iter().filter(|&&b| b == b'\n').count(), 20_000);
    }
}
