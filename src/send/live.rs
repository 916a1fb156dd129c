//! The reader thread of a followed directory (design §12): rows as Tstat
//! writes them → documents → arrays, each sent within the flush time and
//! carrying the position of every log after it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::gauge::Gauge;
use super::produce::{Produced, PublisherStopped, consumer_error};
use crate::chunk::Chunker;
use crate::follow::docs::{POLL, ROTATION_CHECK};
use crate::follow::{self, LiveLog, Step};
use crate::parse::{DocAt, FileStats, FlowSink, ParseError, ParseOptions, Parser, Protocol};
use crate::publish::{Item, Outgoing, Source};
use crate::report::{Event, Progress, Reporter};
use crate::resume::{LogPos, Mark, Positions};
use crate::shutdown::Shutdown;

/// When a followed stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Until {
    /// When Tstat rotates to a newer directory (then read to the end).
    Rotated,
    /// At the logs' end now (a directory Tstat has finished).
    End,
}

/// What the reader thread is to do.
pub(super) struct LiveJob {
    pub(super) dir: PathBuf,
    pub(super) logs: [(PathBuf, Protocol); 2],
    pub(super) opts: ParseOptions,
    pub(super) size: usize,
    pub(super) max_bytes: usize,
    /// Where the earlier runs got to.
    pub(super) start: Positions,
    /// Longest time a document waits in a partial array.
    pub(super) flush: Duration,
    pub(super) until: Until,
    pub(super) stop: Shutdown,
    pub(super) reporter: Arc<dyn Reporter>,
    /// The directory's name in ids and on the bar.
    pub(super) name: String,
    /// What the metrics file shows of the stream.
    pub(super) gauge: Gauge,
}

type Arrays = Rc<RefCell<Vec<(Vec<u8>, usize)>>>;

/// One log's reading state.
struct Log {
    live: LiveLog,
    path: PathBuf,
    proto: Protocol,
    /// Its position: rows before `anchor.offset` and `anchor.docs` documents
    /// after it are in arrays handed on.
    anchor: LogPos,
    /// Documents after the anchor still to drop (sent by an earlier run).
    skip: u64,
    chunker: Batcher,
    arrays: Arrays,
    /// When the oldest document of the pending array came.
    since: Option<Instant>,
    /// Rows of the documents batched and not handed on yet.
    rows: VecDeque<DocAt>,
}

type Batcher = Chunker<Box<dyn FnMut(&[u8], usize) -> io::Result<()>>>;

/// Drops the documents an earlier run sent, then batches the rest.
struct Feed<'a> {
    skip: &'a mut u64,
    chunker: &'a mut Batcher,
    since: &'a mut Option<Instant>,
    rows: &'a mut VecDeque<DocAt>,
}

impl FlowSink for Feed<'_> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        self.flow_at(doc, DocAt::default())
    }

    fn flow_at(&mut self, doc: &[u8], at: DocAt) -> io::Result<()> {
        if *self.skip > 0 {
            *self.skip -= 1;
            return Ok(());
        }
        if self.chunker.pending() == 0 {
            *self.since = Some(Instant::now());
        }
        self.rows.push_back(at);
        self.chunker.push(doc)
    }
}

impl Log {
    /// The log at `path` from `pos`; true with it when the file is not the
    /// one `pos` was in (said, and read from its start).
    fn new(
        path: PathBuf,
        proto: Protocol,
        pos: LogPos,
        job: &LiveJob,
    ) -> Result<(Log, bool), ParseError> {
        let (live, was_replaced) = LiveLog::new(&path, proto, pos)?;
        let pos = if was_replaced {
            job.reporter.warning(&format_args!(
                "{}: not the file the progress record names (Tstat restarted?): the rows \
                 written to the old one after line {} could not be read; shipping this one \
                 from its start",
                path.display(),
                pos.line
            ));
            LogPos::default()
        } else {
            pos
        };
        let arrays: Arrays = Rc::default();
        let out = arrays.clone();
        let chunker: Batcher = Chunker::new(
            job.size,
            job.max_bytes,
            Box::new(move |a: &[u8], n: usize| {
                out.borrow_mut().push((a.to_vec(), n));
                Ok(())
            }),
        );
        let log = Log {
            live,
            path,
            proto,
            anchor: pos,
            skip: pos.docs,
            chunker,
            arrays,
            since: None,
            rows: VecDeque::new(),
        };
        Ok((log, was_replaced))
    }
}

impl Log {
    /// With every document read handed on (and none left to drop), the
    /// position moves to the end of what was read.
    fn advance(&mut self) {
        if self.skip == 0 {
            let (offset, line) = self.live.position();
            self.anchor = LogPos {
                inode: self.live.inode(),
                offset,
                line,
                docs: 0,
            };
        }
    }
}

/// The reader: all logs of the directory, in order, until `job.until`.
struct Reader<'a> {
    job: &'a LiveJob,
    tx: &'a mpsc::Sender<Item>,
    logs: Vec<Log>,
    parser: Parser,
    stats: FileStats,
    messages: u64,
    /// Logs found replaced (Tstat restarted) while this run read them.
    replaced: u32,
    /// When the rows being batched were read.
    read_at: Instant,
}

impl Reader<'_> {
    /// Positions of every log after the arrays handed on.
    fn positions(&self) -> Positions {
        let mut p = Positions::default();
        for (i, l) in self.logs.iter().enumerate() {
            p.logs[i] = l.anchor;
            if p.logs[i].inode == 0 {
                p.logs[i].inode = l.live.inode();
            }
        }
        p
    }

    /// Hands on the arrays log `i` formed.
    fn send(&mut self, i: usize) -> io::Result<()> {
        let arrays = std::mem::take(&mut *self.logs[i].arrays.borrow_mut());
        for (body, docs) in arrays {
            let log = &mut self.logs[i];
            log.anchor.docs += docs as u64;
            let last = log.rows.drain(..docs.min(log.rows.len())).next_back();
            let mark = Mark {
                part: i as u32,
                follow: Some(self.positions()),
                ..Mark::default()
            };
            let source = last.map(|at| Source { log: i as u32, at });
            if let Ok(mut g) = self.job.gauge.lock()
                && g.timed
            {
                g.read_at.push_back(self.read_at);
            }
            self.tx
                .blocking_send(Item::Message(Outgoing { body, mark, source }))
                .map_err(|_| io::Error::other(PublisherStopped))?;
            self.messages += 1;
            self.job
                .reporter
                .report(Event::Progress(Progress::Messages {
                    name: &self.job.name,
                    count: self.messages,
                }));
        }
        Ok(())
    }

    /// Reads and batches what log `i` has, a bounded piece at a time;
    /// `finished`: to its end.
    fn read(&mut self, i: usize, finished: bool) -> Result<(), ParseError> {
        loop {
            if self.job.stop.is_triggered() {
                return Ok(());
            }
            let Reader {
                logs,
                parser,
                stats,
                ..
            } = self;
            let Log {
                live,
                skip,
                chunker,
                since,
                rows: pending,
                ..
            } = &mut logs[i];
            let name = live.name().to_string();
            self.read_at = Instant::now();
            let rows = match live.read(finished)? {
                Step::Replaced { truncated } => {
                    if let Some(line) = truncated {
                        let why = "the file was replaced part-way through it";
                        follow::count_truncated(stats, &*self.job.reporter, &name, line, why);
                    }
                    // The new file is read at once: at rotation there is
                    // no later look.
                    self.replace(i)?;
                    continue;
                }
                Step::Rows(rows) => rows,
            };
            let more = rows.more;
            if rows.truncated > 0 {
                follow::count_truncated(
                    stats,
                    &*self.job.reporter,
                    &name,
                    rows.truncated_line,
                    "no newline when Tstat rotated",
                );
            }
            if let Some(header) = rows.header
                && !rows.lines.is_empty()
            {
                let mut feed = Feed {
                    skip,
                    chunker,
                    since,
                    rows: pending,
                };
                let st =
                    parser.parse_lines(header, &name, rows.lines, rows.first_line, &mut feed)?;
                stats.add(&st);
                if stats.first_problem_line.is_none() {
                    stats.first_problem_line = st.first_problem_line;
                }
            }
            self.send(i).map_err(ParseError::Output)?;
            let log = &mut self.logs[i];
            if log.anchor.inode == 0 {
                log.anchor.inode = log.live.inode();
            }
            if log.chunker.pending() == 0 {
                log.since = None;
                log.advance();
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// The log was deleted and created again: what the old file held is
    /// sent, then the new one is read from its start.
    fn replace(&mut self, i: usize) -> Result<(), ParseError> {
        self.flush(i).map_err(ParseError::Output)?;
        self.replaced += 1;
        let (path, proto) = (self.logs[i].path.clone(), self.logs[i].proto);
        self.job.reporter.warning(&format_args!(
            "{}: the file was replaced (Tstat restarted?): the old one was read to its end; \
             reading the new one from its start",
            path.display()
        ));
        self.logs[i] = Log::new(path, proto, LogPos::default(), self.job)?.0;
        Ok(())
    }

    /// Sends log `i`'s partial array.
    fn flush(&mut self, i: usize) -> io::Result<()> {
        self.logs[i].chunker.flush()?;
        self.logs[i].since = None;
        self.send(i)?;
        self.logs[i].advance();
        Ok(())
    }
}

/// Follows a directory's logs, sending arrays on `tx` (runs on its own
/// thread). Stops at `job.until`, on the stop flag (pending documents are
/// read again next time) or at the first error.
pub(super) fn follow(job: LiveJob, tx: mpsc::Sender<Item>) -> Produced {
    let mut replaced = 0;
    let mut logs = Vec::new();
    let mut failed = None;
    for (i, (path, proto)) in job.logs.iter().enumerate() {
        match Log::new(path.clone(), *proto, job.start.logs[i], &job) {
            Ok((l, was_replaced)) => {
                replaced += u32::from(was_replaced);
                logs.push(l);
            }
            Err(e) => {
                job.reporter.report(Event::FileFailed { error: &e });
                failed = Some(format!("{}: cannot be read", path.display()));
                break;
            }
        }
    }
    let mut reader = Reader {
        job: &job,
        tx: &tx,
        logs,
        parser: Parser::with_reporter(job.opts.clone(), job.reporter.clone()),
        stats: FileStats::default(),
        messages: 0,
        replaced,
        read_at: Instant::now(),
    };
    let mut output_error = None;
    if failed.is_none() {
        match run(&mut reader) {
            Ok(()) => {}
            Err(ParseError::Output(e)) => output_error = consumer_error(e),
            Err(e) => {
                job.reporter.report(Event::FileFailed { error: &e });
                failed = Some(format!("{}: cannot be read completely", job.dir.display()));
            }
        }
    }
    if let Some(why) = &failed {
        let _ = tx.try_send(Item::Failed(why.clone()));
    }
    if reader.replaced > 0 && failed.is_none() && output_error.is_none() {
        job.reporter.warning(&format_args!(
            "{}: its logs were replaced {} time{} while it was shipped (Tstat restarted); \
             every file was read to its end",
            job.dir.display(),
            reader.replaced,
            if reader.replaced == 1 { "" } else { "s" }
        ));
    }
    job.reporter.report(Event::FileDone {
        file: &job.dir.display().to_string(),
        stats: &reader.stats,
    });
    Produced {
        stats: reader.stats,
        failed,
        refused: None,
        output_error,
    }
}

fn run(reader: &mut Reader<'_>) -> Result<(), ParseError> {
    let job = reader.job;
    let mut last_check: Option<Instant> = None;
    loop {
        if job.stop.is_triggered() {
            return Ok(());
        }
        let finished = match job.until {
            Until::End => true,
            Until::Rotated => {
                if last_check.is_none_or(|t| t.elapsed() >= ROTATION_CHECK) {
                    last_check = Some(Instant::now());
                    follow::rotated(&job.dir).map_err(|source| ParseError::Io {
                        path: job.dir.display().to_string(),
                        source,
                    })?
                } else {
                    false
                }
            }
        };
        for i in 0..reader.logs.len() {
            reader.read(i, finished)?;
        }
        for i in 0..reader.logs.len() {
            let due = reader.logs[i]
                .since
                .is_some_and(|t| finished || t.elapsed() >= job.flush);
            if due {
                reader.flush(i).map_err(ParseError::Output)?;
            }
        }
        let behind = reader.logs.iter().map(|l| l.live.behind()).sum();
        if let Ok(mut g) = job.gauge.lock() {
            g.behind = behind;
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}
