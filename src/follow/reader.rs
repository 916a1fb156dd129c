//! The one reader of a directory Tstat is writing (design §12): every
//! [`POLL`] it looks at each log, parses the complete rows written since
//! and pushes their documents into a [`FollowSink`], until Tstat rotates
//! away from the directory (then every log is read to its end) or the
//! shutdown comes. Like ripgrep's `Searcher` and `Sink`, the reader knows
//! nothing of where documents go: the sink can stop it (`Ok(false)`) or
//! fail it (`Err`), and chooses what a log that cannot be read means.
//! `tstat-parse --follow` and the driver's follow mode are two sinks.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{LiveLog, Step};
use crate::parse::{FileStats, FlowSink, ParseError, Parser, Protocol};
use crate::report::{Event, Reporter};
use crate::resume::LogPos;
use crate::shutdown::Shutdown;

/// How often the logs are looked at: rows appear within this of being
/// written, and an idle follower wakes five times a second.
pub const POLL: Duration = Duration::from_millis(200);
/// How often the parent directory is listed for a newer Tstat directory (a
/// directory listing costs more than a look at two open files).
pub const ROTATION_CHECK: Duration = Duration::from_secs(1);

/// Where a [`Follower`] pushes what it reads. Each log of the directory is
/// named by its index in the list given to [`Follower::dir`].
pub trait FollowSink {
    /// Where the documents of log `log`'s rows go.
    fn docs(&mut self, log: usize) -> &mut dyn FlowSink;

    /// Log `log` was looked at once (its complete rows, if any, went to
    /// [`docs`](FollowSink::docs)); `logs` is where every log is now.
    fn read(&mut self, log: usize, logs: &[Seen]) -> io::Result<()> {
        let _ = (log, logs);
        Ok(())
    }

    /// Log `log` was deleted and created again (Tstat restarted): the old
    /// file was read to its end (`logs`: where it ended); the new one is
    /// read from its start next.
    fn replaced(&mut self, log: usize, logs: &[Seen]) -> io::Result<()> {
        let _ = (log, logs);
        Ok(())
    }

    /// Log `log` is read from its start, not from the position it was
    /// given: the file there is not the one that position was in.
    fn reset(&mut self, log: usize) {
        let _ = log;
    }

    /// Log `log` cannot be opened or read (already reported): `true`
    /// follows the others without it, `false` ends the follow with the
    /// error.
    fn carry_on(&mut self, log: usize, error: &ParseError) -> bool;

    /// The reading of one file is over (the follow ended, the file was
    /// replaced, or it failed and the follow carries on): its counts.
    fn file_done(&mut self, name: &str, stats: &FileStats) {
        let _ = (name, stats);
    }

    /// A look at every log is over; `finished`: Tstat rotated away and
    /// every log was read to its end. `Ok(false)` stops the follow.
    fn polled(&mut self, finished: bool, logs: &[Seen]) -> io::Result<bool>;
}

/// Where a followed log is after a look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The file's inode (0 before it exists).
    pub inode: u64,
    /// Byte offset after the rows handed on.
    pub offset: u64,
    /// Lines before `offset`.
    pub line: u64,
    /// Bytes written and not read yet (only at the end of a look).
    pub behind: u64,
    /// When the look began.
    pub at: Option<Instant>,
}

/// What ends a directory's follow besides the shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch<'a> {
    /// Tstat rotating away from this directory.
    Rotation(&'a Path),
    /// Nothing: a lone log outside a Tstat directory.
    Nothing,
    /// The logs' end now (a directory Tstat has finished).
    End,
}

/// How following one directory ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirEnd {
    /// Tstat rotated away from it; it was read to its end.
    Rotated,
    /// The shutdown came, or the sink stopped it.
    Stopped,
}

/// Why following a directory failed.
#[derive(Debug)]
pub enum FollowFailed {
    /// A log could not be opened and the sink would not carry on.
    Open(PathBuf, Box<ParseError>),
    /// A log could not be read and the sink would not carry on.
    Read(Box<ParseError>),
    /// The directory listing that shows rotation could not be read.
    Rotation(PathBuf, io::Error),
    /// The sink failed.
    Output(io::Error),
}

/// One followed log.
struct Open {
    log: LiveLog,
    path: PathBuf,
    proto: Protocol,
    stats: FileStats,
}

/// Reads directories as Tstat writes them, with one parser; counts over
/// everything it read.
pub struct Follower<'a> {
    parser: &'a mut Parser,
    stop: &'a Shutdown,
    reporter: &'a dyn Reporter,
    /// Counts over every log read.
    pub stats: FileStats,
    /// Logs found replaced (Tstat restarted), at the start or while read.
    pub replaced: u32,
}

impl<'a> Follower<'a> {
    /// A reader parsing with `parser`, stopped by `stop`, telling
    /// `reporter` of skipped rows, replaced files and failed logs.
    pub fn new(parser: &'a mut Parser, stop: &'a Shutdown, reporter: &'a dyn Reporter) -> Self {
        Follower {
            parser,
            stop,
            reporter,
            stats: FileStats::default(),
            replaced: 0,
        }
    }

    /// True once the shutdown came.
    pub fn stopped(&self) -> bool {
        self.stop.is_triggered()
    }

    /// Follows `logs` (stream order), each from its `start` position (from
    /// its beginning when there is none), until `watch` ends it or the
    /// shutdown comes.
    pub fn dir<S: FollowSink>(
        &mut self,
        logs: &[(PathBuf, Protocol)],
        start: &[LogPos],
        watch: Watch<'_>,
        sink: &mut S,
    ) -> Result<DirEnd, FollowFailed> {
        let mut open = Vec::with_capacity(logs.len());
        for (i, (path, proto)) in logs.iter().enumerate() {
            let pos = start.get(i).copied().unwrap_or_default();
            match self.open(path, *proto, pos) {
                Ok((log, was_replaced)) => {
                    if was_replaced {
                        sink.reset(i);
                    }
                    open.push(Some(log));
                }
                Err(e) => {
                    self.reporter.report(Event::FileFailed { error: &e });
                    if !sink.carry_on(i, &e) {
                        return Err(FollowFailed::Open(path.clone(), Box::new(e)));
                    }
                    open.push(None);
                }
            }
        }
        let mut last_check: Option<Instant> = None;
        let mut rotation = super::RotationWatch::default();
        let end = loop {
            if self.stop.is_triggered() {
                break DirEnd::Stopped;
            }
            // Looked at before the logs are read: rows written before the
            // rotation are then all on disk and read below.
            let finished = match watch {
                Watch::End => true,
                Watch::Nothing => false,
                Watch::Rotation(d) if last_check.is_none_or(|t| t.elapsed() >= ROTATION_CHECK) => {
                    last_check = Some(Instant::now());
                    rotation
                        .rotated(d)
                        .map_err(|e| FollowFailed::Rotation(d.to_path_buf(), e))?
                }
                Watch::Rotation(_) => false,
            };
            for i in 0..open.len() {
                self.read(&mut open, i, finished, sink)?;
            }
            let logs = seen(&open, Look::End);
            if !sink.polled(finished, &logs).map_err(FollowFailed::Output)? {
                break DirEnd::Stopped;
            }
            if finished {
                break DirEnd::Rotated;
            }
            std::thread::sleep(POLL);
        };
        for o in open.iter().flatten() {
            sink.file_done(o.log.name(), &o.stats);
        }
        Ok(end)
    }

    /// Opens a log at `pos`; a file that is not the one `pos` was in is
    /// said, and read from its start (then `true` comes with it).
    fn open(
        &mut self,
        path: &Path,
        proto: Protocol,
        pos: LogPos,
    ) -> Result<(Open, bool), ParseError> {
        let (log, was_replaced) = LiveLog::new(path, proto, pos)?;
        if was_replaced {
            self.replaced += 1;
            self.reporter.warning(&format_args!(
                "{}: not the file the progress record names (Tstat restarted?): the rows \
                 written to the old one after line {} could not be read; shipping this one \
                 from its start",
                path.display(),
                pos.line
            ));
        }
        let open = Open {
            log,
            path: path.to_path_buf(),
            proto,
            stats: FileStats::default(),
        };
        Ok((open, was_replaced))
    }

    /// Reads what log `i` has, a bounded piece at a time (to its end when
    /// `finished`).
    fn read<S: FollowSink>(
        &mut self,
        open: &mut [Option<Open>],
        i: usize,
        finished: bool,
        sink: &mut S,
    ) -> Result<(), FollowFailed> {
        loop {
            if self.stop.is_triggered() {
                return Ok(());
            }
            let Some(o) = open[i].as_mut() else {
                return Ok(());
            };
            let at = Instant::now();
            let name = o.log.name().to_string();
            let rows = match o.log.read(finished) {
                Ok(Step::Rows(rows)) => rows,
                Ok(Step::Replaced { truncated }) => {
                    if let Some(line) = truncated {
                        let why = "the file was replaced part-way through it";
                        self.truncated(&mut o.stats, &name, line, why);
                    }
                    self.replace(open, i, at, sink)?;
                    continue;
                }
                Err(e) => {
                    self.reporter.report(Event::FileFailed { error: &e });
                    if !sink.carry_on(i, &e) {
                        return Err(FollowFailed::Read(Box::new(e)));
                    }
                    sink.file_done(&name, &o.stats);
                    open[i] = None;
                    return Ok(());
                }
            };
            let more = rows.more;
            if rows.truncated > 0 {
                let why = "no newline when Tstat rotated";
                self.truncated(&mut o.stats, &name, rows.truncated_line, why);
            }
            if let Some(header) = rows.header
                && !rows.lines.is_empty()
            {
                let st = self
                    .parser
                    .parse_lines(
                        header,
                        &name,
                        rows.lines,
                        rows.first_line,
                        &mut sink.docs(i),
                    )
                    .map_err(|e| match e {
                        ParseError::Output(e) => FollowFailed::Output(e),
                        e => {
                            self.reporter.report(Event::FileFailed { error: &e });
                            FollowFailed::Read(Box::new(e))
                        }
                    })?;
                o.stats.add(&st);
                self.stats.add(&st);
            }
            sink.read(i, &seen(open, Look::Log(i, at)))
                .map_err(FollowFailed::Output)?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Counts a row a log ended part-way through, in the log's and the
    /// total counts.
    fn truncated(&mut self, stats: &mut FileStats, name: &str, line: u64, why: &str) {
        super::count_truncated(stats, self.reporter, name, line, why);
        self.stats.skipped_rows += 1;
        self.stats.first_problem_line.get_or_insert(line);
    }

    /// Log `i` was deleted and created again: what the old file held is
    /// handed on, then the new one is read from its start.
    fn replace<S: FollowSink>(
        &mut self,
        open: &mut [Option<Open>],
        i: usize,
        at: Instant,
        sink: &mut S,
    ) -> Result<(), FollowFailed> {
        sink.replaced(i, &seen(open, Look::Log(i, at)))
            .map_err(FollowFailed::Output)?;
        self.replaced += 1;
        let old = open[i].take().expect("a log being read");
        self.reporter.warning(&format_args!(
            "{}: the file was replaced (Tstat restarted?): the old one was read to its end; \
             reading the new one from its start",
            old.log.name()
        ));
        sink.file_done(old.log.name(), &old.stats);
        sink.reset(i);
        match self.open(&old.path, old.proto, LogPos::default()) {
            Ok((o, _)) => open[i] = Some(o),
            Err(e) => {
                self.reporter.report(Event::FileFailed { error: &e });
                if !sink.carry_on(i, &e) {
                    return Err(FollowFailed::Read(Box::new(e)));
                }
            }
        }
        Ok(())
    }
}

/// What a [`seen`] is for.
#[derive(Clone, Copy)]
enum Look {
    /// A look at log `.0` that began at `.1`.
    Log(usize, Instant),
    /// The end of a look at every log (with what each has left).
    End,
}

/// Where every log is.
fn seen(open: &[Option<Open>], look: Look) -> Vec<Seen> {
    open.iter()
        .enumerate()
        .map(|(i, o)| {
            let Some(o) = o else {
                return Seen::default();
            };
            let (offset, line) = o.log.position();
            Seen {
                inode: o.log.inode(),
                offset,
                line,
                behind: match look {
                    Look::End => o.log.behind(),
                    _ => 0,
                },
                at: match look {
                    Look::Log(l, t) if l == i => Some(t),
                    _ => None,
                },
            }
        })
        .collect()
}
