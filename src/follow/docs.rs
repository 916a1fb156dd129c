//! Flow documents of the logs Tstat is writing, as they are written
//! (`tstat-parse --follow`, design §12.1): a log, a directory or the newest
//! directory of a tree, then each newer one as Tstat rotates. The
//! [`Follower`] reads; this module is its sink for documents on a
//! [`LiveSink`] (stdout), whose policy is to go on with the other logs when
//! one cannot be read. It never prints: documents go to the sink, errors and
//! warnings to a [`Reporter`]; it stops on the caller's [`Shutdown`].

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::reader::{DirEnd, FollowFailed, FollowSink, Follower, POLL, Seen, Watch};
use crate::find;
use crate::parse::{FileStats, FlowSink, NdjsonSink, ParseError, Parser, Protocol};
use crate::report::Reporter;
use crate::shutdown::Shutdown;

/// How often a tree without a Tstat directory yet is walked again.
pub const TREE_WAIT: Duration = Duration::from_secs(1);

/// A sink that is told when a look at the logs is over, so that what it
/// holds can be flushed then: once per poll, not once per document.
pub trait LiveSink: FlowSink {
    /// A look at the logs is over; `wrote`: documents came since the last
    /// call. An error (a closed stdout) ends the follow.
    fn polled(&mut self, wrote: bool) -> io::Result<()>;
}

impl<W: Write> LiveSink for NdjsonSink<W> {
    fn polled(&mut self, wrote: bool) -> io::Result<()> {
        if wrote { self.0.flush() } else { Ok(()) }
    }
}

/// What to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One log file. It ends when the Tstat directory holding it rotates.
    Log {
        /// The log.
        path: PathBuf,
        /// Its protocol.
        proto: Protocol,
    },
    /// A Tstat directory: its TCP and its UDP log. It ends when Tstat
    /// rotates to a newer directory beside it.
    Dir(PathBuf),
    /// A tree: the newest Tstat directory below it, then each newer one as
    /// Tstat rotates, until stopped.
    Tree(PathBuf),
}

impl Target {
    /// What a path on the command line names: a file is a log (`proto`, or
    /// its name tells), a directory named `*.out` or holding Tstat logs is a
    /// Tstat directory, any other directory a tree (also with `tree`).
    pub fn from_path(
        path: &Path,
        proto: Option<Protocol>,
        tree: bool,
    ) -> Result<Target, FollowError> {
        let meta = std::fs::metadata(path).map_err(|error| FollowError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        if tree {
            return if meta.is_dir() {
                Ok(Target::Tree(path.to_path_buf()))
            } else {
                Err(FollowError::NotTree(path.to_path_buf()))
            };
        }
        if !meta.is_dir() {
            if path.extension().is_some_and(|e| e == "gz") {
                return Err(FollowError::Gzipped(path.to_path_buf()));
            }
            return match proto.or_else(|| Protocol::from_file_name(path)) {
                Some(proto) => Ok(Target::Log {
                    path: path.to_path_buf(),
                    proto,
                }),
                None => Err(FollowError::Protocol(path.to_path_buf())),
            };
        }
        let named_out = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().ends_with(b".out"));
        if named_out || find::is_tstat_dir(path).unwrap_or(false) {
            Ok(Target::Dir(path.to_path_buf()))
        } else {
            Ok(Target::Tree(path.to_path_buf()))
        }
    }
}

/// Why following could not start or go on. Rows and files that fail are
/// reported and counted, not returned.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// A gzipped log is only readable once Tstat has closed it.
    #[error("{}: a gzipped log (tstat -Z) cannot be followed; parse it when Tstat has rotated", .0.display())]
    Gzipped(PathBuf),
    /// A log whose name does not say TCP or UDP.
    #[error("{}: cannot tell TCP from UDP by the file name; use --protocol tcp|udp", .0.display())]
    Protocol(PathBuf),
    /// `--tree` names something that is not a directory.
    #[error("{}: not a directory; --tree follows the Tstat directories below a directory", .0.display())]
    NotTree(PathBuf),
    /// A path to follow, or the directory listing that shows rotation,
    /// cannot be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error (shown in the message, so not a `source`: the
        /// programs print an error's chain, which would say it twice).
        error: io::Error,
    },
    /// The sink failed (a closed stdout): the follow ends.
    #[error(transparent)]
    Output(ParseError),
}

impl FollowError {
    /// True when the sink failed rather than the input.
    pub fn is_output(&self) -> bool {
        matches!(self, FollowError::Output(_))
    }
}

/// How a follow ended (when it did not fail).
#[derive(Debug, Default)]
pub struct Followed {
    /// Counts over every log read.
    pub stats: FileStats,
    /// A log could not be read (its error was reported); the others were
    /// followed on.
    pub failed: bool,
    /// The shutdown ended it (rather than Tstat rotating away from a
    /// followed log or directory).
    pub stopped: bool,
}

/// Follows `target`, handing the documents of every complete row to `sink`
/// as rows are written, until `stop` is triggered or (for a log or a
/// directory) Tstat rotates away from it, at which point it is read to its
/// end first. `parser` turns rows into documents (and reports skipped
/// rows); `reporter` gets each log's counts, file errors and notices.
pub fn follow<S: LiveSink>(
    target: &Target,
    parser: &mut Parser,
    sink: &mut S,
    stop: &Shutdown,
    reporter: &dyn Reporter,
) -> Result<Followed, FollowError> {
    let mut docs = Docs {
        sink,
        reporter,
        wrote: false,
        failed: false,
        dir: None,
    };
    let mut follower = Follower::new(parser, stop, reporter);
    let end = match target {
        Target::Log { path, proto } => {
            let dir = path
                .parent()
                .filter(|d| find::is_tstat_dir(d).unwrap_or(false));
            docs.dir = dir.map(Path::to_path_buf);
            let watch = dir.map_or(Watch::Nothing, Watch::Rotation);
            (follower.dir(&[(path.clone(), *proto)], &[], watch, &mut docs)).map_err(Stop::from)
        }
        Target::Dir(dir) => {
            let logs = super::live_logs(dir).map_err(FollowError::Gzipped)?;
            docs.dir = Some(dir.clone());
            (follower.dir(&logs, &[], Watch::Rotation(dir), &mut docs)).map_err(Stop::from)
        }
        Target::Tree(root) => tree(&mut follower, root, &mut docs),
    };
    let end = end.map_err(follow_error)?;
    Ok(Followed {
        stats: follower.stats,
        failed: docs.failed,
        stopped: end == DirEnd::Stopped || stop.is_triggered(),
    })
}

/// The newest Tstat directory below `root`, then the next one each time
/// Tstat rotates, until stopped.
fn tree<S: LiveSink>(
    follower: &mut Follower<'_>,
    root: &Path,
    docs: &mut Docs<'_, S>,
) -> Result<DirEnd, Stop> {
    let mut next: Option<PathBuf> = None;
    let mut noted = false;
    let mut waiting = false;
    loop {
        if follower.stopped() {
            return Ok(DirEnd::Stopped);
        }
        let dir = match next.take() {
            Some(d) => d,
            None => {
                let Some(newest) = super::live_dir(root, "", docs.reporter, &mut noted) else {
                    if !waiting {
                        waiting = true;
                        docs.reporter.info(&format_args!(
                            "{}: no Tstat directory being written below it yet; waiting",
                            root.display()
                        ));
                    }
                    // Keep a closed stdout from waiting unnoticed.
                    docs.sink.polled(false).map_err(FollowFailed::Output)?;
                    nap(follower, TREE_WAIT);
                    continue;
                };
                newest
            }
        };
        waiting = false;
        let logs = super::live_logs(&dir).map_err(Stop::Gzipped)?;
        docs.reporter
            .info(&format_args!("{}: following", dir.display()));
        docs.dir = Some(dir.clone());
        match follower.dir(&logs, &[], Watch::Rotation(&dir), docs)? {
            DirEnd::Stopped => return Ok(DirEnd::Stopped),
            DirEnd::Rotated => {
                next = super::successor(&dir).map_err(|source| {
                    FollowFailed::Rotation(dir.parent().unwrap_or(&dir).to_path_buf(), source)
                })?
            }
        }
    }
}

/// Sleeps `d` unless stopped first (looked at every [`POLL`]).
fn nap(follower: &Follower<'_>, d: Duration) {
    let end = Instant::now() + d;
    while !follower.stopped() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(POLL));
    }
}

/// The follower's sink for `tstat-parse --follow`: documents to a
/// [`LiveSink`], each file's counts reported, and a log that cannot be read
/// left behind while the others are followed on.
struct Docs<'a, S> {
    sink: &'a mut S,
    reporter: &'a dyn Reporter,
    /// Documents came since the last look.
    wrote: bool,
    /// A log could not be read.
    failed: bool,
    /// The directory followed, if any (for the rotation notice).
    dir: Option<PathBuf>,
}

impl<S: LiveSink> FlowSink for Docs<'_, S> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        self.wrote = true;
        self.sink.flow(doc)
    }

    fn flows(&mut self, ndjson: &[u8]) -> io::Result<()> {
        self.wrote |= !ndjson.is_empty();
        self.sink.flows(ndjson)
    }
}

impl<S: LiveSink> FollowSink for Docs<'_, S> {
    fn docs(&mut self, _: usize) -> &mut dyn FlowSink {
        self
    }

    fn carry_on(&mut self, _: usize, _: &ParseError) -> bool {
        self.failed = true;
        true
    }

    fn file_done(&mut self, name: &str, stats: &FileStats) {
        self.reporter
            .report(crate::report::Event::FileDone { file: name, stats });
    }

    fn polled(&mut self, finished: bool, _: &[Seen]) -> io::Result<bool> {
        self.sink.polled(std::mem::take(&mut self.wrote))?;
        if finished && let Some(d) = &self.dir {
            self.reporter.info(&format_args!(
                "{}: Tstat rotated to a newer directory; read to its end",
                d.display()
            ));
        }
        Ok(true)
    }
}

fn output(e: io::Error) -> FollowError {
    FollowError::Output(ParseError::Output(e))
}

/// Why a tree's follow ended early.
enum Stop {
    /// A directory's log is gzipped.
    Gzipped(PathBuf),
    /// Following a directory failed.
    Failed(Box<FollowFailed>),
}

impl From<FollowFailed> for Stop {
    fn from(e: FollowFailed) -> Stop {
        Stop::Failed(Box::new(e))
    }
}

/// The error of a follow that ended early.
fn follow_error(e: impl Into<Stop>) -> FollowError {
    let failed = match e.into() {
        Stop::Gzipped(gz) => return FollowError::Gzipped(gz),
        Stop::Failed(f) => *f,
    };
    match failed {
        FollowFailed::Rotation(path, error) => FollowError::Io { path, error },
        FollowFailed::Output(e) => output(e),
        // This sink carries on past a log that fails; a row that cannot be
        // parsed only fails on its way out.
        FollowFailed::Open(_, e) | FollowFailed::Read(e) => FollowError::Output(*e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ParseOptions;
    use crate::report::Collect;
    use std::sync::Arc;

    const HEADER: &str = "#c_ip:1 c_port:2 c_first_abs:3 c_durat:4 c_bytes_all:5 c_pkts_all:6 \
        c_isint:7 c_iscrypto:8 c_type:9 s_ip:10 s_port:11 s_first_abs:12 s_durat:13 \
        s_bytes_all:14 s_pkts_all:15 s_isint:16 s_iscrypto:17 s_type:18 fqdn:19 quic_SNI:20 \
        quic_UA:21 quic_c_vers:22 quic_s_vers:23 quic_zero_rtt:24\n";

    fn row(port: u32) -> String {
        format!(
            "10.0.0.1 {port} 1717834695000.0 1.5 100 2 0 0 0 10.0.0.2 53 1717834695000.0 1.5 \
             200 3 0 0 0 - - - - - -\n"
        )
    }

    fn parser() -> Parser {
        Parser::new(ParseOptions {
            threshold: 0,
            sensor: "s".into(),
            max_doc: 1 << 20,
            ..ParseOptions::default()
        })
    }

    /// A sink that sets the stop flag once it has seen `want` documents.
    struct Until<'a> {
        docs: Vec<String>,
        polls: usize,
        want: usize,
        stop: &'a Shutdown,
    }

    impl FlowSink for Until<'_> {
        fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
            self.docs.push(String::from_utf8_lossy(doc).into_owned());
            Ok(())
        }
    }

    impl LiveSink for Until<'_> {
        fn polled(&mut self, _: bool) -> io::Result<()> {
            self.polls += 1;
            if self.docs.len() >= self.want {
                self.stop.trigger();
            }
            Ok(())
        }
    }

    fn ports(docs: &[String]) -> Vec<u64> {
        docs.iter()
            .map(|d| {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                v["meta"]["src_port"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_directory_is_read_to_its_end_when_tstat_rotates() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("2026_01_01_00_00.out");
        std::fs::create_dir(&dir).unwrap();
        let udp = dir.join("log_udp_complete");
        // The last row has no newline yet when Tstat rotates: skipped.
        std::fs::write(&udp, format!("{HEADER}{}{}10.0.0.1 7", row(1), row(2))).unwrap();
        std::fs::create_dir(root.path().join("2026_01_01_01_00.out")).unwrap();
        std::fs::write(
            root.path().join("2026_01_01_01_00.out/log_udp_complete"),
            HEADER,
        )
        .unwrap();
        let stop = Shutdown::new();
        let mut sink = Until {
            docs: vec![],
            polls: 0,
            want: usize::MAX,
            stop: &stop,
        };
        let collect = Arc::new(Collect::default());
        let mut p = parser();
        let done = follow(
            &Target::Dir(dir.clone()),
            &mut p,
            &mut sink,
            &stop,
            &*collect,
        )
        .unwrap();
        assert!(!done.stopped && !done.failed);
        assert_eq!(done.stats.rows, 2);
        assert_eq!(done.stats.skipped_rows, 1);
        // Each row is two documents (one per direction).
        assert_eq!(ports(&sink.docs), [1, 53, 2, 53]);
        assert_eq!(sink.polls, 1);
    }

    #[test]
    fn a_tree_starts_at_its_newest_directory_and_rotation_skips_none() {
        let root = tempfile::tempdir().unwrap();
        let names = ["2026_01_01_00_00.out", "2026_01_01_01_00.out"];
        for (i, n) in names.iter().enumerate() {
            let d = root.path().join(n);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(
                d.join("log_udp_complete"),
                format!("{HEADER}{}", row(i as u32)),
            )
            .unwrap();
        }
        // The first one is followed (not yet rotated) only until a newer one
        // appears; then the newer ones in order.
        let first = root.path().join(names[0]);
        assert_eq!(
            super::super::successor(&first).unwrap(),
            Some(root.path().join(names[1]))
        );
        assert_eq!(
            super::super::successor(&root.path().join(names[1])).unwrap(),
            None
        );
        let stop = Shutdown::new();
        let mut sink = Until {
            docs: vec![],
            polls: 0,
            want: 2,
            stop: &stop,
        };
        let collect = Arc::new(Collect::default());
        let mut p = parser();
        let done = follow(
            &Target::Tree(root.path().to_path_buf()),
            &mut p,
            &mut sink,
            &stop,
            &*collect,
        )
        .unwrap();
        assert!(done.stopped);
        // The newest directory is where a tree starts.
        assert_eq!(ports(&sink.docs), [1, 53]);
    }

    #[test]
    fn targets_from_paths() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("2026_01_01_00_00.out");
        std::fs::create_dir(&dir).unwrap();
        let gz = dir.join("log_tcp_complete.gz");
        std::fs::write(&gz, b"").unwrap();
        assert_eq!(
            Target::from_path(&dir, None, false).unwrap(),
            Target::Dir(dir.clone())
        );
        assert_eq!(
            Target::from_path(root.path(), None, false).unwrap(),
            Target::Tree(root.path().to_path_buf())
        );
        assert_eq!(
            Target::from_path(&dir, None, true).unwrap(),
            Target::Tree(dir.clone())
        );
        let e = Target::from_path(&gz, None, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: a gzipped log (tstat -Z) cannot be followed; parse it when Tstat has rotated",
                gz.display()
            )
        );
        let stop = Shutdown::new();
        let mut sink = NdjsonSink(Vec::new());
        let e = follow(
            &Target::Dir(dir),
            &mut parser(),
            &mut sink,
            &stop,
            &crate::report::Silent,
        )
        .unwrap_err();
        assert!(matches!(e, FollowError::Gzipped(p) if p == gz));
        let other = root.path().join("notes");
        std::fs::write(&other, b"").unwrap();
        assert!(matches!(
            Target::from_path(&other, None, false),
            Err(FollowError::Protocol(_))
        ));
        assert!(matches!(
            Target::from_path(&other, Some(Protocol::Udp), false),
            Ok(Target::Log { .. })
        ));
    }
}
