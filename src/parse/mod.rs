//! Reading Tstat logs (design §3): the header, row splitting, malformed-row
//! accounting, gzip, directories, and the byte threshold. Columns are found by
//! name, rows are streamed through a reused buffer, and each kept direction is
//! handed to a [`FlowSink`]. It never decides where documents go.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::flow::{self, Num, Val};

/// Which log a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `log_tcp_complete`.
    Tcp,
    /// `log_udp_complete`.
    Udp,
}

impl Protocol {
    /// The protocol named by a log file name (`log_tcp_complete[.gz]`).
    pub fn from_file_name(path: &Path) -> Option<Protocol> {
        let name = path.file_name()?.to_str()?;
        let name = name.strip_suffix(".gz").unwrap_or(name);
        match name {
            "log_tcp_complete" => Some(Protocol::Tcp),
            "log_udp_complete" => Some(Protocol::Udp),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

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
    /// Report every skipped row on stderr.
    pub verbose: bool,
    /// Program name for messages.
    pub prog: String,
    /// Threads formatting documents of one large file (1: this thread only;
    /// see [`threads_from_env`]).
    pub threads: usize,
    /// Set from elsewhere (a signal handler) to stop parsing: the read loop
    /// looks at it once per 256 KiB read and returns
    /// [`ParseError::Interrupted`].
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Largest document kept: a larger one could never fit in an array, so
    /// its row is skipped as malformed instead of stopping the stream.
    pub max_doc: usize,
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

pub use crate::report::FileStats;

/// Why a file (not a row) could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The header is missing, unsupported, or lacks a core column.
    #[error("{path}: {msg}")]
    Header {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A gzip stream ended early, or reading failed part-way; the complete
    /// rows before it were emitted.
    #[error("{path}: {msg}")]
    Truncated {
        /// The file.
        path: String,
        /// What happened.
        msg: String,
        /// Counts of the rows read before it.
        stats: FileStats,
    },
    /// A parser worker thread failed (panicked or stopped); the rows of the
    /// blocks before the failed one were emitted, nothing after it.
    #[error("{path}: a parser thread failed: {msg}; the rest of the file was not parsed")]
    Worker {
        /// The file.
        path: String,
        /// What happened (the panic message).
        msg: String,
        /// Counts of the rows emitted before it.
        stats: FileStats,
    },
    /// The stop flag of [`ParseOptions::stop`] was set while this file was
    /// read; the rows before it were emitted.
    #[error("{path}: parsing interrupted")]
    Interrupted {
        /// The file.
        path: String,
        /// Counts of the rows emitted before it.
        stats: FileStats,
    },
    /// The sink (stdout, a channel) failed; this ends all parsing.
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
    /// A log name in a directory is not a regular file.
    #[error("{path}: is {what}, not a regular file; a Tstat log must be a regular file")]
    NotRegular {
        /// The log.
        path: String,
        /// What it is instead.
        what: String,
    },
    /// A log is a symbolic link that resolves outside its directory.
    #[error("{path}: is a symbolic link to {target}, outside its directory; refusing to follow it")]
    Outside {
        /// The log.
        path: String,
        /// Where it resolves to.
        target: String,
    },
    /// Neither log exists in a directory.
    #[error("{path}: no log_tcp_complete or log_udp_complete in this directory")]
    NoLogs {
        /// The directory.
        path: String,
    },
}

impl ParseError {
    /// True when the error comes from the output side and must stop the run.
    pub fn is_output(&self) -> bool {
        matches!(self, ParseError::Output(_))
    }

    /// The file or directory the error is about (`None` for output errors).
    pub fn path(&self) -> Option<&str> {
        match self {
            ParseError::Io { path, .. }
            | ParseError::Header { path, .. }
            | ParseError::Truncated { path, .. }
            | ParseError::Worker { path, .. }
            | ParseError::Interrupted { path, .. }
            | ParseError::NotRegular { path, .. }
            | ParseError::Outside { path, .. }
            | ParseError::NoLogs { path } => Some(path),
            ParseError::Output(_) => None,
        }
    }

    /// True when the stop flag ended parsing.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, ParseError::Interrupted { .. })
    }

    /// The counts of the rows read before a file failed part-way (a
    /// truncated `.gz`, a read error, a worker failure, an interruption):
    /// those rows' documents were emitted, so summaries and metrics must
    /// count them. `None` for errors that happen before any row.
    pub fn partial_stats(&self) -> Option<&FileStats> {
        match self {
            ParseError::Truncated { stats, .. }
            | ParseError::Worker { stats, .. }
            | ParseError::Interrupted { stats, .. } => Some(stats),
            _ => None,
        }
    }

    fn partial_stats_mut(&mut self) -> Option<&mut FileStats> {
        match self {
            ParseError::Truncated { stats, .. }
            | ParseError::Worker { stats, .. }
            | ParseError::Interrupted { stats, .. } => Some(stats),
            _ => None,
        }
    }
}

/// Longest accepted line; longer ones are skipped so memory stays bounded.
const MAX_LINE: usize = 1 << 20;
const READ_CHUNK: usize = 1 << 18;

/// The columns a TCP direction needs (`None` = missing from the header).
#[derive(Clone, Debug)]
struct TcpDir {
    ip: usize,
    port: usize,
    bytes: usize,
    pkts: usize,
    pkts_retx: Option<usize>,
    /// `,"key":` ready to copy, the column, and how the value is made.
    fields: Vec<(Box<[u8]>, Option<usize>, Extra)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Extra {
    Col,
    RexmitRate,
    Mss,
    Sack,
}

/// JSON key and column suffix (after `c_`/`s_`) of the TCP fields, in order.
const TCP_FIELDS: &[(&str, &str, Extra)] = &[
    ("tcp_rexmit_bytes", "bytes_retx", Extra::Col),
    ("tcp_rexmit_pkts", "pkts_retx", Extra::Col),
    ("tcp_rexmit_rate", "", Extra::RexmitRate),
    ("tcp_syn_cnt", "syn_cnt", Extra::Col),
    ("tcp_rtt_avg", "rtt_avg", Extra::Col),
    ("tcp_rtt_min", "rtt_min", Extra::Col),
    ("tcp_rtt_max", "rtt_max", Extra::Col),
    ("tcp_rtt_std", "rtt_std", Extra::Col),
    ("tcp_pkts_rto", "pkts_rto", Extra::Col),
    ("tcp_pkts_fs", "pkts_fs", Extra::Col),
    ("tcp_pkts_reor", "pkts_reor", Extra::Col),
    ("tcp_pkts_dup", "pkts_dup", Extra::Col),
    ("tcp_pkts_unk", "pkts_unk", Extra::Col),
    ("tcp_pkts_fc", "pkts_fc", Extra::Col),
    ("tcp_pkts_unrto", "pkts_unrto", Extra::Col),
    ("tcp_pkts_unfs", "pkts_unfs", Extra::Col),
    ("tcp_cwin_min", "cwin_min", Extra::Col),
    ("tcp_cwin_max", "cwin_max", Extra::Col),
    ("tcp_out_seq_pkts", "pkts_ooo", Extra::Col),
    ("tcp_window_scale", "win_scl", Extra::Col),
    ("tcp_mss", "", Extra::Mss),
    ("tcp_max_seg_size", "mss_max", Extra::Col),
    ("tcp_min_seg_size", "mss_min", Extra::Col),
    ("tcp_win_max", "cwin_max", Extra::Col),
    ("tcp_win_min", "cwin_min", Extra::Col),
    ("tcp_initial_cwin", "cwin_ini", Extra::Col),
    ("tcp_sack_cnt", "", Extra::Sack),
];

#[derive(Clone, Debug)]
struct TcpCols {
    durat: usize,
    first: usize,
    last: usize,
    mss: Option<(usize, usize)>,
    sack: Option<(usize, usize)>,
    dirs: [TcpDir; 2],
}

#[derive(Clone, Debug)]
struct UdpDir {
    ip: usize,
    port: usize,
    first_abs: usize,
    durat: usize,
    bytes: usize,
    pkts: usize,
}

#[derive(Clone, Debug)]
enum Layout {
    Tcp(Box<TcpCols>),
    Udp([UdpDir; 2]),
}

/// The parsed header: column count and the needed columns.
#[derive(Clone, Debug)]
struct Header {
    ncols: usize,
    /// Fields needed for the threshold test (both byte columns).
    filter_upto: usize,
    layout: Layout,
}

const NO_HEADER: &str = "no header line: the first line does not start with '#' \
                         (Tstat before 2.4 wrote headerless logs; they are not supported)";

/// Column names of a header line, in order; an error when the line is not a
/// Tstat header.
fn header_names(line: &str) -> Result<Vec<&str>, String> {
    if !line.starts_with('#') {
        return Err(NO_HEADER.into());
    }
    let mut names = Vec::new();
    for tok in line.split(' ') {
        let name = tok.rsplit('#').next().unwrap_or(tok);
        let name = name.split(':').next().unwrap_or(name);
        if name.is_empty() {
            return Err(format!("malformed header token '{tok}'"));
        }
        names.push(name);
    }
    Ok(names)
}

impl Header {
    fn parse(line: &str, proto: Protocol) -> Result<Header, String> {
        let names = header_names(line)?;
        let find = |n: &str| names.iter().position(|&x| x == n);
        let mut missing: Vec<String> = Vec::new();
        let mut need = |n: String| -> usize {
            match find(&n) {
                Some(i) => i,
                None => {
                    missing.push(n);
                    0
                }
            }
        };
        let layout = match proto {
            Protocol::Tcp => {
                if find("first_abs").is_some() {
                    return Err(
                        "this is a Tstat 2.4 log (its header has 'first_abs'; 'first' \
                                and 'last' are relative times): Tstat 2.4 logs are not supported"
                            .into(),
                    );
                }
                let durat = need("durat".into());
                let first = need("first".into());
                let last = need("last".into());
                let mut dir = |p: &str| TcpDir {
                    ip: need(format!("{p}_ip")),
                    port: need(format!("{p}_port")),
                    bytes: need(format!("{p}_bytes_uniq")),
                    pkts: need(format!("{p}_pkts_data")),
                    pkts_retx: find(&format!("{p}_pkts_retx")),
                    fields: TCP_FIELDS
                        .iter()
                        .map(|&(key, suffix, extra)| {
                            let col = if extra == Extra::Col {
                                find(&format!("{p}_{suffix}"))
                            } else {
                                None
                            };
                            (
                                format!(",\"{key}\":").into_bytes().into_boxed_slice(),
                                col,
                                extra,
                            )
                        })
                        .collect(),
                };
                let dirs = [dir("c"), dir("s")];
                let pair = |a: &str, b: &str| Some((find(a)?, find(b)?));
                Layout::Tcp(Box::new(TcpCols {
                    durat,
                    first,
                    last,
                    mss: pair("c_mss", "s_mss"),
                    sack: pair("c_sack_cnt", "s_sack_cnt"),
                    dirs,
                }))
            }
            Protocol::Udp => {
                let mut dir = |p: &str| UdpDir {
                    ip: need(format!("{p}_ip")),
                    port: need(format!("{p}_port")),
                    first_abs: need(format!("{p}_first_abs")),
                    durat: need(format!("{p}_durat")),
                    bytes: need(format!("{p}_bytes_all")),
                    pkts: need(format!("{p}_pkts_all")),
                };
                Layout::Udp([dir("c"), dir("s")])
            }
        };
        if !missing.is_empty() {
            return Err(format!(
                "header lacks column{} {} needed for {} flows",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                proto.as_str()
            ));
        }
        let filter_upto = match &layout {
            Layout::Tcp(c) => c.dirs[0].bytes.max(c.dirs[1].bytes) + 1,
            Layout::Udp(d) => d[0].bytes.max(d[1].bytes) + 1,
        };
        Ok(Header {
            ncols: names.len(),
            filter_upto,
            layout,
        })
    }
}

/// Turns log files into flow documents. One parser can read many files; its
/// buffers are reused so no row allocates.
pub struct Parser {
    opts: ParseOptions,
    /// `,"protocol":"tcp","sensor_id":…,"flow_type":"tstat"},"start":`
    tail_tcp: Vec<u8>,
    tail_udp: Vec<u8>,
    buf: Vec<u8>,
    doc: Vec<u8>,
    fields: Vec<(u32, u32)>,
    /// Verbose messages kept for the caller instead of printed (workers).
    captured: Option<std::cell::RefCell<Vec<String>>>,
    /// Line of the last row skipped for an oversized document (so a row
    /// with two such directions counts once).
    oversized_line: std::cell::Cell<u64>,
    /// Tests: behave as if no worker thread could be spawned.
    spawn_fails: bool,
}

const DOC_HEAD: &[u8] = br#"{"type":"flow","interval":600,"values":{"duration":"#;

impl Parser {
    /// A parser with these options.
    pub fn new(opts: ParseOptions) -> Parser {
        let tail = |proto: &str| {
            let mut t = Vec::new();
            t.extend_from_slice(b",\"protocol\":\"");
            t.extend_from_slice(proto.as_bytes());
            t.extend_from_slice(b"\",\"sensor_id\":");
            flow::write_str(&mut t, &opts.sensor);
            t.extend_from_slice(b",\"instance_id\":");
            match &opts.instance {
                Some(i) => flow::write_str(&mut t, i),
                None => t.push(b'0'),
            }
            t.extend_from_slice(b",\"flow_type\":\"tstat\"},\"start\":");
            t
        };
        Parser {
            tail_tcp: tail("tcp"),
            tail_udp: tail("udp"),
            opts,
            buf: Vec::with_capacity(READ_CHUNK * 2),
            doc: Vec::with_capacity(2048),
            fields: Vec::with_capacity(160),
            captured: None,
            oversized_line: std::cell::Cell::new(0),
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

    /// Parses an opened log; `path` gives its name and whether it is gzip.
    fn parse_open<S: FlowSink>(
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

    /// Parses a log from any reader; `name` is used in messages.
    pub fn parse_reader<R: Read, S: FlowSink>(
        &mut self,
        reader: R,
        name: &str,
        proto: Protocol,
        sink: &mut S,
    ) -> Result<FileStats, ParseError> {
        // The read buffer is kept for the next file, whatever happens.
        self.oversized_line.set(0);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut stats = FileStats::default();
        let result = self.read_lines(reader, &mut buf, name, proto, sink, &mut stats);
        self.buf = buf;
        match result {
            Ok(()) => Ok(stats),
            Err(mut e) => {
                // An error part-way keeps the counts of the rows before it.
                if let Some(s) = e.partial_stats_mut() {
                    *s = stats;
                }
                Err(e)
            }
        }
    }

    fn read_lines<R: Read, S: FlowSink>(
        &mut self,
        mut reader: R,
        buf: &mut Vec<u8>,
        name: &str,
        proto: Protocol,
        sink: &mut S,
        stats: &mut FileStats,
    ) -> Result<(), ParseError> {
        let mut header: Option<Header> = None;
        let mut lineno: u64 = 0;
        let mut start = 0usize;
        let mut discarding = false;
        let mut eof = false;
        let mut read_error: Option<io::Error> = None;
        let mut pool: Option<Pool> = None;
        // Workers are tried once per file; without any, this thread parses.
        let mut pool_tried = false;
        loop {
            self.check_stop(name)?;
            // Refill: keep the unfinished line, read more after it.
            if start > 0 {
                buf.drain(..start);
            }
            if !eof {
                let old = buf.len();
                buf.resize(old + READ_CHUNK, 0);
                match read_full(&mut reader, &mut buf[old..]) {
                    Ok(0) => {
                        buf.truncate(old);
                        eof = true;
                    }
                    Ok(n) => buf.truncate(old + n),
                    Err(e) => {
                        buf.truncate(old);
                        eof = true;
                        read_error = Some(e);
                    }
                }
            }
            // A file larger than one read gets worker threads once its
            // header is known.
            if !pool_tried
                && !eof
                && self.opts.threads > 1
                && let Some(h) = &header
            {
                pool_tried = true;
                pool = Pool::new(self, h, name, proto);
            }
            let mut pos = 0usize;
            let last_nl = memchr::memrchr(b'\n', buf);
            // One check for the whole chunk; lines are checked one by one
            // only when it holds invalid bytes somewhere.
            let utf8 = last_nl.is_none_or(|end| std::str::from_utf8(&buf[..end]).is_ok());
            if let Some(p) = pool.as_mut()
                && !discarding
                && let Some(end) = last_nl
            {
                let region = &buf[..=end];
                let first = lineno + 1;
                lineno += memchr::memchr_iter(b'\n', region).count() as u64;
                pos = end + 1;
                if let Some(done) = p.submit(region, first, utf8)? {
                    self.emit(p, done, sink, stats)?;
                }
            }
            while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
                let line = &buf[pos..pos + nl];
                pos += nl + 1;
                lineno += 1;
                if discarding {
                    discarding = false;
                    continue;
                }
                self.line(line, utf8, lineno, name, proto, &mut header, stats, sink)?;
            }
            start = pos;
            let pending = buf.len() - start;
            if (eof || pending > MAX_LINE)
                && let Some(p) = pool.as_mut()
            {
                // Keep messages in line order: finish the blocks first.
                while let Some(done) = p.collect()? {
                    self.emit(p, done, sink, stats)?;
                    self.check_stop(name)?;
                }
            }
            if eof {
                // After a read error the unfinished line is the cut, which
                // the error reports; it is no malformed row.
                if pending > 0 && !discarding && read_error.is_none() {
                    lineno += 1;
                    if header.is_none() {
                        // A file of just a header without its newline.
                        let line = &buf[start..];
                        self.line(line, false, lineno, name, proto, &mut header, stats, sink)?;
                    } else {
                        self.skip(
                            name,
                            lineno,
                            "incomplete last line (no newline at end of file)",
                            stats,
                        );
                    }
                }
                break;
            }
            if pending > MAX_LINE {
                if header.is_none() {
                    // No header can be this long: the answer a short
                    // garbage line gets.
                    let msg = if buf[start] == b'#' {
                        "the first line is longer than 1 MiB, so it is no Tstat header".into()
                    } else {
                        NO_HEADER.into()
                    };
                    return Err(ParseError::Header {
                        path: name.to_string(),
                        msg,
                    });
                }
                if !discarding {
                    // Its line number is counted when its newline arrives.
                    self.skip(name, lineno + 1, "line longer than 1 MiB", stats);
                }
                discarding = true;
                buf.truncate(start);
            }
        }
        if let Some(p) = pool {
            p.finish()?;
        }
        if let Some(e) = read_error {
            let msg = if e.kind() == io::ErrorKind::UnexpectedEof {
                format!(
                    "compressed stream ends early (Tstat may still be writing it); \
                     kept the {} complete rows before line {}",
                    stats.rows,
                    lineno + 1
                )
            } else {
                format!("read error after line {lineno}: {e}")
            };
            return Err(ParseError::Truncated {
                path: name.to_string(),
                msg,
                stats: FileStats::default(),
            });
        }
        // An empty file is no error: Tstat creates its logs empty.
        Ok(())
    }

    /// `Interrupted` once the stop flag is set.
    fn check_stop(&self, name: &str) -> Result<(), ParseError> {
        match &self.opts.stop {
            Some(stop) if stop.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(ParseError::Interrupted {
                    path: name.to_string(),
                    stats: FileStats::default(),
                })
            }
            _ => Ok(()),
        }
    }

    fn skip(&self, name: &str, lineno: u64, why: &str, stats: &mut FileStats) {
        stats.skipped_rows += 1;
        stats.first_problem_line.get_or_insert(lineno);
        self.note(name, lineno, why);
    }

    fn drop_dir(&self, name: &str, lineno: u64, why: &str, n: u64, stats: &mut FileStats) {
        stats.dropped += n;
        stats.first_problem_line.get_or_insert(lineno);
        self.note(name, lineno, why);
    }

    /// The `--verbose` line for a skip.
    fn note(&self, name: &str, lineno: u64, why: &str) {
        if !self.opts.verbose {
            return;
        }
        let msg = format!("{}: {name}: line {lineno}: {why}", self.opts.prog);
        match &self.captured {
            Some(c) => c.borrow_mut().push(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Hands a finished block's documents, messages and counts on, in order,
    /// and gives its buffers back to the pool.
    fn emit<S: FlowSink>(
        &self,
        pool: &mut Pool,
        done: Done,
        sink: &mut S,
        stats: &mut FileStats,
    ) -> Result<(), ParseError> {
        for m in &done.messages {
            eprintln!("{m}");
        }
        let written = sink.flows(&done.out).map_err(ParseError::Output);
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

    #[allow(clippy::too_many_arguments)]
    fn line<S: FlowSink>(
        &mut self,
        line: &[u8],
        utf8_checked: bool,
        lineno: u64,
        name: &str,
        proto: Protocol,
        header: &mut Option<Header>,
        stats: &mut FileStats,
        sink: &mut S,
    ) -> Result<(), ParseError> {
        // A log copied through Windows ends its lines (header too) with CRLF.
        let line = match line {
            [rest @ .., b'\r'] => rest,
            _ => line,
        };
        if line.is_empty() {
            return Ok(());
        }
        let Some(h) = header.as_ref() else {
            let text = std::str::from_utf8(line).map_err(|_| ParseError::Header {
                path: name.to_string(),
                msg: "the first line is not valid UTF-8, so it is no Tstat header".into(),
            })?;
            let h = Header::parse(text, proto).map_err(|msg| ParseError::Header {
                path: name.to_string(),
                msg,
            })?;
            *header = Some(h);
            return Ok(());
        };
        if line[0] == b'#' {
            self.skip(name, lineno, "repeated header line", stats);
            return Ok(());
        }
        let nfields = count_fields(line);
        if nfields != h.ncols {
            let why = format!("expected {} fields, got {nfields}", h.ncols);
            self.skip(name, lineno, &why, stats);
            return Ok(());
        }
        let text = if utf8_checked {
            // SAFETY: the whole chunk holding this line is valid UTF-8 and
            // the line ends at a newline, which is a character boundary.
            unsafe { std::str::from_utf8_unchecked(line) }
        } else {
            match std::str::from_utf8(line) {
                Ok(t) => t,
                Err(_) => {
                    self.skip(name, lineno, "not valid UTF-8", stats);
                    return Ok(());
                }
            }
        };
        let threshold = self.opts.threshold;
        if threshold > 0 {
            // Most rows fall below the threshold: decide on the byte columns
            // before splitting the rest of the row.
            split_fields(line, &mut self.fields, h.filter_upto);
            let row = Row {
                text,
                fields: &self.fields,
            };
            let bytes = match &h.layout {
                Layout::Tcp(c) => [c.dirs[0].bytes, c.dirs[1].bytes],
                Layout::Udp(d) => [d[0].bytes, d[1].bytes],
            };
            if bytes
                .iter()
                .all(|&i| keeps(row.val(i), threshold) == Keep::No)
            {
                stats.rows += 1;
                return Ok(());
            }
        }
        split_fields(line, &mut self.fields, usize::MAX);
        stats.rows += 1;
        let row = Row {
            text,
            fields: &self.fields,
        };
        let threshold = self.opts.threshold;
        let mut doc = std::mem::take(&mut self.doc);
        let r = match &h.layout {
            Layout::Tcp(cols) => {
                self.tcp_row(&row, cols, threshold, &mut doc, sink, name, lineno, stats)
            }
            Layout::Udp(dirs) => {
                self.udp_row(&row, dirs, threshold, &mut doc, sink, name, lineno, stats)
            }
        };
        self.doc = doc;
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp_row<S: FlowSink>(
        &self,
        row: &Row<'_>,
        cols: &TcpCols,
        threshold: u64,
        doc: &mut Vec<u8>,
        sink: &mut S,
        name: &str,
        lineno: u64,
        stats: &mut FileStats,
    ) -> Result<(), ParseError> {
        // Cheap threshold check first: most rows are rejected here.
        let keep = [0, 1].map(|d| keeps(row.val(cols.dirs[d].bytes), threshold));
        if keep == [Keep::No, Keep::No] {
            return Ok(());
        }
        let shared = (|| {
            let durat = row.val(cols.durat).num()?;
            let first = row.val(cols.first).num()?;
            let last = row.val(cols.last).num()?;
            let secs = durat.as_f64() / 1000.0;
            let start = flow::trunc(Num::Float(first.as_f64() / 1000.0))?;
            let end = flow::trunc(Num::Float(last.as_f64() / 1000.0))?;
            let mss = match cols.mss {
                Some((c, s)) => Some(flow::min_pref_second(row.val(s), row.val(c))?),
                None => None,
            };
            let sack = match cols.sack {
                Some((c, s)) => Some(flow::max_pref_second(row.val(s), row.val(c))?),
                None => None,
            };
            secs.is_finite()
                .then_some((durat, secs, start, end, mss, sack))
        })();
        let Some((durat, secs, start, end, mss, sack)) = shared else {
            let n = keep.iter().filter(|k| **k != Keep::No).count() as u64;
            self.drop_dir(
                name,
                lineno,
                "durat, first, last, mss or sack_cnt cannot be computed",
                n,
                stats,
            );
            return Ok(());
        };
        for (d, &k) in keep.iter().enumerate() {
            match k {
                Keep::No => continue,
                Keep::Bad => {
                    self.drop_dir(name, lineno, "bytes_uniq is not a number", 1, stats);
                    continue;
                }
                Keep::Yes => {}
            }
            let me = &cols.dirs[d];
            let other = &cols.dirs[1 - d];
            doc.clear();
            let ok = (|| {
                let bytes = row.val(me.bytes).num()?;
                let pkts = row.val(me.pkts).num()?;
                let bits = flow::times8(bytes)?;
                doc.extend_from_slice(DOC_HEAD);
                flow::write_rounded(doc, secs, 2)?;
                write_counts(doc, durat, Num::Float(secs), bits, pkts)?;
                for (key, col, extra) in &me.fields {
                    let (col, extra) = (*col, *extra);
                    doc.extend_from_slice(key);
                    let written = match extra {
                        Extra::Col => match col {
                            Some(i) => flow::write_raw(doc, row.raw(i)),
                            None => {
                                doc.extend_from_slice(b"null");
                                true
                            }
                        },
                        Extra::RexmitRate => {
                            let retx = me.pkts_retx.map(|i| row.val(i));
                            let rate = match retx {
                                None => None,
                                Some(r) => {
                                    let falsy = |v: Val<'_>| v.num().is_some_and(Num::is_zero);
                                    if falsy(row.val(me.pkts)) || falsy(r) {
                                        Some(Num::Int(0))
                                    } else {
                                        Some(Num::Float(flow::div(r.num()?, pkts)?))
                                    }
                                }
                            };
                            match rate {
                                Some(n) => flow::write_num(doc, n),
                                None => {
                                    doc.extend_from_slice(b"null");
                                    true
                                }
                            }
                        }
                        Extra::Mss | Extra::Sack => {
                            match if extra == Extra::Mss { mss } else { sack } {
                                Some(v) => flow::write_val(doc, v),
                                None => {
                                    doc.extend_from_slice(b"null");
                                    true
                                }
                            }
                        }
                    };
                    written.then_some(())?;
                }
                let ends = ((me.ip, me.port), (other.ip, other.port));
                self.finish_doc(doc, row, ends, &self.tail_tcp, start, end)
            })();
            self.deliver(ok, doc, sink, stats, name, lineno)?;
        }
        Ok(())
    }

    /// Writes the rest of a document after its values: the endpoints, the
    /// metadata tail, start and end.
    fn finish_doc(
        &self,
        doc: &mut Vec<u8>,
        row: &Row<'_>,
        (src, dst): ((usize, usize), (usize, usize)),
        tail: &[u8],
        start: i128,
        end: i128,
    ) -> Option<()> {
        doc.extend_from_slice(b"},\"meta\":{\"src_ip\":");
        flow::write_raw(doc, row.raw(src.0)).then_some(())?;
        doc.extend_from_slice(b",\"src_port\":");
        flow::write_raw(doc, row.raw(src.1)).then_some(())?;
        doc.extend_from_slice(b",\"dst_ip\":");
        flow::write_raw(doc, row.raw(dst.0)).then_some(())?;
        doc.extend_from_slice(b",\"dst_port\":");
        flow::write_raw(doc, row.raw(dst.1)).then_some(())?;
        doc.extend_from_slice(tail);
        flow::write_int(doc, start);
        doc.extend_from_slice(b",\"end\":");
        flow::write_int(doc, end);
        doc.push(b'}');
        Some(())
    }

    /// Hands a finished document on, or counts its direction as dropped.
    fn deliver<S: FlowSink>(
        &self,
        ok: Option<()>,
        doc: &[u8],
        sink: &mut S,
        stats: &mut FileStats,
        name: &str,
        lineno: u64,
    ) -> Result<(), ParseError> {
        if ok.is_some() && doc.len() > self.opts.max_doc {
            if self.oversized_line.replace(lineno) != lineno {
                let why = format!(
                    "its document of {} bytes does not fit in an array (at most {} bytes)",
                    doc.len(),
                    self.opts.max_doc + 2
                );
                self.skip(name, lineno, &why, stats);
            }
        } else if ok.is_some() {
            sink.flow(doc).map_err(ParseError::Output)?;
            stats.flows += 1;
        } else {
            self.drop_dir(
                name,
                lineno,
                "a value of this direction cannot be computed",
                1,
                stats,
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn udp_row<S: FlowSink>(
        &self,
        row: &Row<'_>,
        dirs: &[UdpDir; 2],
        threshold: u64,
        doc: &mut Vec<u8>,
        sink: &mut S,
        name: &str,
        lineno: u64,
        stats: &mut FileStats,
    ) -> Result<(), ParseError> {
        for d in 0..2 {
            let me = &dirs[d];
            let other = &dirs[1 - d];
            match keeps(row.val(me.bytes), threshold) {
                Keep::No => continue,
                Keep::Bad => {
                    self.drop_dir(name, lineno, "bytes_all is not a number", 1, stats);
                    continue;
                }
                Keep::Yes => {}
            }
            doc.clear();
            let ok = (|| {
                let durat = row.val(me.durat).num()?;
                let bytes = row.val(me.bytes).num()?;
                let pkts = row.val(me.pkts).num()?;
                let first = row.val(me.first_abs).num()?;
                let secs = if self.opts.legacy_udp {
                    Num::Float(durat.as_f64() / 1000.0)
                } else {
                    durat
                };
                let duration = flow::round2(secs);
                let bits = flow::times8(bytes)?;
                let start = flow::trunc(Num::Float(first.as_f64() / 1000.0))?;
                let end = flow::trunc(flow::add(Num::Int(start), duration)?)?;
                doc.extend_from_slice(DOC_HEAD);
                flow::write_num(doc, duration).then_some(())?;
                write_counts(doc, durat, secs, bits, pkts)?;
                let ends = ((me.ip, me.port), (other.ip, other.port));
                self.finish_doc(doc, row, ends, &self.tail_udp, start, end)
            })();
            self.deliver(ok, doc, sink, stats, name, lineno)?;
        }
        Ok(())
    }
}

/// Writes `num_bits` … `packets_per_second` of a document: the rates are
/// `round(x / secs, 2)`, or the integer 0 when the duration column is zero.
fn write_counts(doc: &mut Vec<u8>, durat: Num, secs: Num, bits: Num, pkts: Num) -> Option<()> {
    doc.extend_from_slice(b",\"num_bits\":");
    flow::write_num(doc, bits).then_some(())?;
    doc.extend_from_slice(b",\"num_packets\":");
    flow::write_num(doc, pkts).then_some(())?;
    for (key, x) in [
        (&b",\"bits_per_second\":"[..], bits),
        (&b",\"packets_per_second\":"[..], pkts),
    ] {
        doc.extend_from_slice(key);
        if durat.is_zero() {
            doc.push(b'0');
        } else {
            flow::write_rounded(doc, flow::div(x, secs)?, 2)?;
        }
    }
    Some(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keep {
    Yes,
    No,
    /// The byte count is not a number: the direction is dropped and counted.
    Bad,
}

/// The threshold test `bytes × 8 / 8 ≥ N`.
fn keeps(bytes: Val<'_>, threshold: u64) -> Keep {
    match bytes {
        Val::Int(b) => {
            if b >= threshold as i128 {
                Keep::Yes
            } else {
                Keep::No
            }
        }
        Val::Float(f) if f.is_finite() => {
            if f * 8.0 / 8.0 >= threshold as f64 {
                Keep::Yes
            } else {
                Keep::No
            }
        }
        _ => Keep::Bad,
    }
}

/// One split row.
struct Row<'a> {
    text: &'a str,
    fields: &'a [(u32, u32)],
}

impl<'a> Row<'a> {
    fn raw(&self, i: usize) -> &'a str {
        let (s, e) = self.fields[i];
        &self.text[s as usize..e as usize]
    }

    fn val(&self, i: usize) -> Val<'a> {
        flow::cast(self.raw(i))
    }
}

/// Lines of a file handed to a worker, with the line number of the first.
struct Job {
    data: Vec<u8>,
    out: Vec<u8>,
    first_lineno: u64,
    utf8: bool,
}

/// A worker's result: documents as NDJSON, verbose messages, counts.
struct Done {
    data: Vec<u8>,
    out: Vec<u8>,
    stats: FileStats,
    messages: Vec<String>,
    /// The block could not be formatted (never expected; reported as a
    /// worker failure rather than lost).
    error: Option<String>,
}

/// Most blocks handed to workers and not yet written, whatever the worker
/// count: peak memory must not grow with the machine's cores.
const IN_FLIGHT: usize = 4;
/// Most worker threads; more could never be busy with `IN_FLIGHT` blocks.
const MAX_WORKERS: usize = 16;

/// The environment variable that forces the parser's worker count.
pub const THREADS_ENV: &str = "TSTAT_PARSE_THREADS";

/// The worker count forced by `TSTAT_PARSE_THREADS`, or `default` when it is
/// unset or empty; an error text when it is not a whole number ≥ 1. Counts
/// above 16 act as 16; at most 4 blocks are in flight whatever the count.
pub fn threads_from_env(default: usize) -> Result<usize, String> {
    let Some(v) = std::env::var_os(THREADS_ENV) else {
        return Ok(default);
    };
    if v.is_empty() {
        return Ok(default);
    }
    v.to_str()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{THREADS_ENV}={v:?}: expected a thread count of at least 1"))
}

/// One worker thread and its two channels.
struct Worker {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    done: Option<std::sync::mpsc::Receiver<Done>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Worker threads formatting blocks of one file; blocks go round-robin and
/// come back in the same order, so output order is input order. At most
/// `IN_FLIGHT` blocks are out at once, so the channels never fill up and a
/// send never blocks.
struct Pool {
    workers: Vec<Worker>,
    submitted: usize,
    collected: usize,
    spare: Vec<(Vec<u8>, Vec<u8>)>,
    name: String,
}

impl Pool {
    /// Starts up to `parser.opts.threads` workers; `None` when not one
    /// thread could be spawned (the caller then parses on its own thread).
    fn new(parser: &Parser, header: &Header, name: &str, proto: Protocol) -> Option<Pool> {
        let n = parser.opts.threads.clamp(1, MAX_WORKERS);
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (jtx, jrx) = std::sync::mpsc::channel::<Job>();
            let (dtx, drx) = std::sync::mpsc::channel::<Done>();
            let worker = Parser::worker(parser.opts.clone());
            let header = header.clone();
            let file = name.to_string();
            let spawned = if parser.spawn_fails {
                Err(io::Error::other("spawning disabled for a test"))
            } else {
                std::thread::Builder::new()
                    .name("parse-worker".into())
                    .spawn(move || worker.work(header, &file, proto, jrx, dtx))
            };
            match spawned {
                Ok(h) => workers.push(Worker {
                    jobs: Some(jtx),
                    done: Some(drx),
                    handle: Some(h),
                }),
                Err(_) => break,
            }
        }
        (!workers.is_empty()).then(|| Pool {
            workers,
            submitted: 0,
            collected: 0,
            spare: Vec::new(),
            name: name.to_string(),
        })
    }

    /// Queues a block; first takes back the oldest finished one when the
    /// in-flight budget is used up.
    fn submit(
        &mut self,
        region: &[u8],
        first_lineno: u64,
        utf8: bool,
    ) -> Result<Option<Done>, ParseError> {
        let ready = if self.submitted - self.collected >= IN_FLIGHT {
            self.collect()?
        } else {
            None
        };
        let (mut data, out) = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(region);
        let job = Job {
            data,
            out,
            first_lineno,
            utf8,
        };
        let w = self.submitted % self.workers.len();
        let sent = self.workers[w].jobs.as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.failure(w));
        }
        self.submitted += 1;
        Ok(ready)
    }

    /// The oldest block still out, waiting for it; `None` when none is.
    fn collect(&mut self) -> Result<Option<Done>, ParseError> {
        if self.collected == self.submitted {
            return Ok(None);
        }
        let w = self.collected % self.workers.len();
        let got = self.workers[w].done.as_ref().map(|rx| rx.recv());
        match got {
            Some(Ok(mut done)) => {
                self.collected += 1;
                match done.error.take() {
                    Some(msg) => Err(self.error(msg)),
                    None => Ok(Some(done)),
                }
            }
            _ => Err(self.failure(w)),
        }
    }

    fn recycle(&mut self, done: Done) {
        self.spare.push((done.data, done.out));
    }

    /// Stops the workers once every block is collected; a worker that
    /// panicked is an error even then.
    fn finish(mut self) -> Result<(), ParseError> {
        for w in &mut self.workers {
            w.jobs = None;
        }
        for i in 0..self.workers.len() {
            if let Some(h) = self.workers[i].handle.take()
                && let Err(panic) = h.join()
            {
                return Err(self.error(panic_text(&*panic)));
            }
        }
        Ok(())
    }

    /// Why worker `w` stopped answering: its panic message when it panicked.
    fn failure(&mut self, w: usize) -> ParseError {
        let worker = &mut self.workers[w];
        worker.jobs = None;
        worker.done = None;
        let msg = match worker.handle.take().map(|h| h.join()) {
            Some(Err(panic)) => panic_text(&*panic),
            _ => "the thread stopped unexpectedly".to_string(),
        };
        self.error(msg)
    }

    fn error(&self, msg: String) -> ParseError {
        ParseError::Worker {
            path: self.name.clone(),
            msg,
            stats: FileStats::default(),
        }
    }
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("panicked: {text}")
}

impl Drop for Pool {
    /// On an error path: workers stop after their current block (their
    /// results have nowhere to go); the error is already being returned.
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs = None;
            w.done = None;
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl Parser {
    /// A parser for a worker thread: no read buffer, messages captured.
    fn worker(opts: ParseOptions) -> Parser {
        let mut p = Parser::new(opts);
        p.buf = Vec::new();
        p.captured = Some(std::cell::RefCell::new(Vec::new()));
        p
    }

    /// A worker's loop: format each block it is given.
    fn work(
        mut self,
        header: Header,
        name: &str,
        proto: Protocol,
        jobs: std::sync::mpsc::Receiver<Job>,
        done: std::sync::mpsc::Sender<Done>,
    ) {
        // Debug builds only: a forced failure, so tests can show that a
        // failing worker is an error for its file, never fewer rows.
        #[cfg(debug_assertions)]
        let forced_panic = std::env::var_os("TSTAT_TEST_WORKER_PANIC").is_some_and(|v| v == "1");
        let mut header = Some(header);
        while let Ok(job) = jobs.recv() {
            #[cfg(debug_assertions)]
            if forced_panic {
                panic!("forced failure (TSTAT_TEST_WORKER_PANIC=1)");
            }
            let Job {
                data,
                mut out,
                first_lineno,
                utf8,
            } = job;
            out.clear();
            let mut stats = FileStats::default();
            let mut sink = NdjsonSink(&mut out);
            let mut lineno = first_lineno;
            let mut p = 0;
            let mut error = None;
            while let Some(nl) = memchr::memchr(b'\n', &data[p..]) {
                // Writing to a Vec cannot fail and the header is known, so
                // an error here is a bug: it fails the file.
                if let Err(e) = self.line(
                    &data[p..p + nl],
                    utf8,
                    lineno,
                    name,
                    proto,
                    &mut header,
                    &mut stats,
                    &mut sink,
                ) {
                    error = Some(format!("line {lineno}: {e}"));
                    break;
                }
                p += nl + 1;
                lineno += 1;
            }
            let messages = self
                .captured
                .as_ref()
                .map(|c| std::mem::take(&mut *c.borrow_mut()))
                .unwrap_or_default();
            let failed = error.is_some();
            if done
                .send(Done {
                    data,
                    out,
                    stats,
                    messages,
                    error,
                })
                .is_err()
                || failed
            {
                return;
            }
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is a space.
#[inline]
fn space_mask(w: u64) -> u64 {
    let v = w ^ (LO * u64::from(b' '));
    !(((v & !HI).wrapping_add(!HI)) | v | !HI)
}

/// Number of space-separated fields, eight bytes at a time.
fn count_fields(line: &[u8]) -> usize {
    let mut chunks = line.chunks_exact(8);
    let mut n = 0usize;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        n += space_mask(w).count_ones() as usize;
    }
    n += chunks.remainder().iter().filter(|&&b| b == b' ').count();
    n + 1
}

/// Splits `line` at spaces into at most `limit` (start, end) fields.
fn split_fields(line: &[u8], out: &mut Vec<(u32, u32)>, limit: usize) {
    out.clear();
    let mut start = 0usize;
    let mut i = 0usize;
    while i + 8 <= line.len() {
        let w = u64::from_le_bytes(line[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut m = space_mask(w);
        while m != 0 {
            let pos = i + (m.trailing_zeros() / 8) as usize;
            out.push((start as u32, pos as u32));
            if out.len() == limit {
                return;
            }
            start = pos + 1;
            m &= m - 1;
        }
        i += 8;
    }
    for (j, &b) in line.iter().enumerate().skip(i) {
        if b == b' ' {
            out.push((start as u32, j as u32));
            if out.len() == limit {
                return;
            }
            start = j + 1;
        }
    }
    out.push((start as u32, line.len() as u32));
}

/// Reads until the buffer is full or the input ends.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if n > 0 {
                    // Hand back what was read; the error repeats on the next call.
                    return Ok(n);
                }
                return Err(e);
            }
        }
    }
    Ok(n)
}

/// The log files of a tstat directory, TCP first; a `.gz` log is used when
/// the plain one is absent.
///
/// Bytes of a directory's logs as they are now (0 for what cannot be
/// read): what progress and `--check` count.
pub fn logs_size(dir: &Path) -> u64 {
    dir_logs(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// A log name that is present must be a regular file: a FIFO, socket,
/// device or directory under a log's name is an error naming what it is,
/// never treated as absent (the directory would be marked done without that
/// log). A symbolic link is followed only when its target, resolved, lies
/// inside `dir` itself: this function does not know the tree's root, so a
/// link to a sibling directory is refused as well. Nothing is opened here.
pub fn dir_logs(dir: &Path) -> Result<Vec<(PathBuf, Protocol)>, ParseError> {
    let mut out = Vec::new();
    for (name, proto) in [
        ("log_tcp_complete", Protocol::Tcp),
        ("log_udp_complete", Protocol::Udp),
    ] {
        for path in [dir.join(name), dir.join(format!("{name}.gz"))] {
            if log_present(dir, &path)? {
                out.push((path, proto));
                break;
            }
        }
    }
    Ok(out)
}

/// Whether a log name is present as a usable file (see [`dir_logs`]).
fn log_present(dir: &Path, path: &Path) -> Result<bool, ParseError> {
    let io_err = |source| ParseError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(true);
    }
    let not_regular = |what: String| ParseError::NotRegular {
        path: path.display().to_string(),
        what,
    };
    if !kind.is_symlink() {
        return Err(not_regular(file_kind(kind).into()));
    }
    let target = match std::fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_regular(
                "a symbolic link whose target does not exist".into(),
            ));
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = std::fs::metadata(&target).map_err(io_err)?;
    if !meta.is_file() {
        return Err(not_regular(format!(
            "a symbolic link to {}",
            file_kind(meta.file_type())
        )));
    }
    let base = std::fs::canonicalize(dir).map_err(io_err)?;
    if !target.starts_with(&base) {
        return Err(ParseError::Outside {
            path: path.display().to_string(),
            target: target.display().to_string(),
        });
    }
    Ok(true)
}

/// What a file that is not a regular file is, for messages.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens a log of a directory without ever blocking (a FIFO put in its
/// place after [`dir_logs`] looked opens at once) and checks, on the open
/// file, that it is a regular file.
fn open_dir_log(path: &Path) -> Result<File, ParseError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = || path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| ParseError::Io {
            path: name(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| ParseError::Io {
        path: name(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ParseError::NotRegular {
            path: name(),
            what: file_kind(meta.file_type()).into(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(threshold: u64) -> ParseOptions {
        ParseOptions {
            threshold,
            sensor: "s".into(),
            instance: None,
            legacy_udp: false,
            verbose: false,
            prog: "test".into(),
            threads: 1,
            stop: None,
            max_doc: usize::MAX,
        }
    }

    #[test]
    fn splitting_matches_split_on_space() {
        for line in [
            "",
            "a",
            "a b",
            " a  b ",
            "1 22 333 4444 55555 666666 7777777 88888888 999999999",
            "x y z w v u t s r q p o n m",
        ] {
            let want: Vec<&str> = line.split(' ').collect();
            assert_eq!(count_fields(line.as_bytes()), want.len(), "{line:?}");
            let mut f = Vec::new();
            split_fields(line.as_bytes(), &mut f, usize::MAX);
            let got: Vec<&str> = f
                .iter()
                .map(|&(s, e)| &line[s as usize..e as usize])
                .collect();
            assert_eq!(got, want);
            for limit in 1..want.len() {
                split_fields(line.as_bytes(), &mut f, limit);
                assert_eq!(f.len(), limit);
                let got: Vec<&str> = f
                    .iter()
                    .map(|&(s, e)| &line[s as usize..e as usize])
                    .collect();
                assert_eq!(got, want[..limit]);
            }
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
            let mut p = Parser::new(o);
            p.spawn_fails = spawn_fails;
            let mut out = NdjsonSink(Vec::new());
            let st = p
                .parse_reader(text.as_bytes(), "x", Protocol::Udp, &mut out)
                .unwrap();
            (st, out.0)
        };
        let (s1, o1) = run(1, false);
        for t in [2, 3, 16, 100] {
            let (s2, o2) = run(t, false);
            assert_eq!(s1, s2);
            assert!(o1 == o2, "output differs with {t} threads");
        }
        // Not one worker could be spawned: this thread parses it all.
        let (s2, o2) = run(4, true);
        assert_eq!(s1, s2);
        assert!(o1 == o2, "output differs without workers");
        assert_eq!(s1.skipped_rows, 2 * 61 + 1);
        assert_eq!(s1.first_problem_line, Some(7));
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
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Read for StopAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.after {
                self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
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
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
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
    fn header_names_are_cut_at_colon_and_hash() {
        let names = header_names("#15#c_ip:1 c_port:2 durat:31").unwrap();
        assert_eq!(names, ["c_ip", "c_port", "durat"]);
        assert!(header_names("1.2.3.4 80").is_err());
    }

    #[test]
    fn tstat_24_is_refused() {
        let e = Header::parse(
            "#c_ip:1 durat:89 first:90 last:91 first_abs:98",
            Protocol::Tcp,
        )
        .unwrap_err();
        assert!(e.contains("2.4"), "{e}");
    }

    #[test]
    fn missing_core_columns_are_named() {
        let e = Header::parse("#c_ip:1 c_port:2", Protocol::Udp).unwrap_err();
        assert!(e.contains("s_ip") && e.contains("c_durat"), "{e}");
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

/// What parsing one argument (a directory or a file) gave.
#[derive(Debug, Default)]
pub struct PathOutcome {
    /// Counts over its files.
    pub stats: FileStats,
    /// File-level errors (already reported on stderr); the other files of
    /// the argument were still parsed.
    pub errors: Vec<ParseError>,
}

impl Parser {
    /// Parses a tstat directory (TCP log, then UDP log) or a single log file,
    /// printing each file's skip summary and errors on stderr. Only an output
    /// error is returned as `Err`: it must stop the whole run.
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
                    crate::cli::error(&self.opts.prog, &e);
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
                    crate::cli::error(&self.opts.prog, &e);
                    outcome.errors.push(e);
                    vec![]
                }
                None => {
                    let e = ParseError::Header {
                        path: path.display().to_string(),
                        msg: "cannot tell TCP from UDP by the file name; use --protocol tcp|udp"
                            .into(),
                    };
                    crate::cli::error(&self.opts.prog, &e);
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
                open_dir_log(&file).and_then(|f| self.parse_open(f, &file, proto, sink))
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

    /// Reports a file's error, keeping the counts of the rows read before it.
    fn file_failed(&self, e: ParseError, outcome: &mut PathOutcome) {
        crate::cli::error(&self.opts.prog, &e);
        if let Some((name, st)) = e.path().zip(e.partial_stats()) {
            self.report_file(name, st);
            outcome.stats.add(st);
        }
        outcome.errors.push(e);
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

    /// Prints a file's skip summary (`FILE: 2 malformed rows skipped …`) as a
    /// warning on stderr, when anything was skipped or dropped.
    pub fn report_file(&self, name: &str, st: &FileStats) {
        if let Some(s) = st.summary() {
            crate::cli::warning(&self.opts.prog, format!("{name}: {s}"));
        }
    }
}
