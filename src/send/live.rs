//! The driver's follow mode (design §12): the sink the follower of a
//! directory pushes into. One array batcher per log; each array is handed
//! on within the flush time and carries the position of every log after
//! it. A log that cannot be read fails the directory: it stays unmarked and
//! is resumed from its record.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::gauge::LiveGauge;
use super::produce::{Batching, Produced, PublisherStopped, consumer_error};
use crate::chunk::Chunker;
use crate::follow::{FollowFailed, FollowSink, Follower, Seen, Watch};
use crate::parse::{DocAt, FlowSink, ParseError, Parser, Protocol};
use crate::publish::{Item, Outgoing, Source};
use crate::report::{Event, Progress};
use crate::resume::{LogPos, Mark, Positions};

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
    pub(super) batching: Batching,
    pub(super) dir: PathBuf,
    pub(super) logs: [(PathBuf, Protocol); 2],
    /// Where the earlier runs got to.
    pub(super) start: Positions,
    /// Per log: documents at or before this position of the starting file
    /// are held by the destination already (dropped, not sent again).
    pub(super) stored_through: [u64; 2],
    /// Longest time a document waits in a partial array.
    pub(super) flush: Duration,
    pub(super) until: Until,
}

type Arrays = Rc<RefCell<Vec<(Vec<u8>, usize)>>>;
type Batcher = Chunker<Box<dyn FnMut(&[u8], usize) -> io::Result<()>>>;

/// One log's batching state.
struct LogBatch {
    /// Its position: rows before `anchor.offset` and `anchor.docs` documents
    /// after it are in arrays handed on.
    anchor: LogPos,
    /// Documents after the anchor still to drop (sent by an earlier run).
    skip: u64,
    chunker: Batcher,
    /// Arrays formed and not handed on yet.
    arrays: Arrays,
    /// When the oldest document of the pending array came.
    since: Option<Instant>,
    /// Rows of the documents batched and not handed on yet, each with
    /// when its row was first read.
    rows: VecDeque<(DocAt, Instant)>,
    /// Documents at or before this position are held already (0: none).
    stored_through: u64,
}

impl LogBatch {
    fn new(pos: LogPos, size: usize, max_bytes: usize, stored_through: u64) -> LogBatch {
        let arrays: Arrays = Rc::default();
        let out = arrays.clone();
        let chunker: Batcher = Chunker::new(
            size,
            max_bytes,
            Box::new(move |a: &[u8], n: usize| {
                out.borrow_mut().push((a.to_vec(), n));
                Ok(())
            }),
        );
        LogBatch {
            anchor: pos,
            skip: pos.docs,
            chunker,
            arrays,
            since: None,
            rows: VecDeque::new(),
            stored_through,
        }
    }

    /// With every document read handed on (and none left to drop), the
    /// position moves to the end of what was read.
    fn advance(&mut self, seen: &Seen) {
        if self.skip == 0 {
            self.anchor = LogPos {
                inode: seen.inode,
                offset: seen.offset,
                line: seen.line,
                docs: 0,
            };
        }
    }
}

/// Drops the documents an earlier run sent, then batches the rest.
impl FlowSink for LogBatch {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        self.flow_at(doc, DocAt::default())
    }

    fn flow_at(&mut self, doc: &[u8], at: DocAt) -> io::Result<()> {
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(());
        }
        if crate::identity::ordinal(at) <= self.stored_through {
            return Ok(());
        }
        if self.chunker.pending() == 0 {
            self.since = Some(Instant::now());
        }
        self.rows.push_back((at, Instant::now()));
        self.chunker.push(doc)
    }
}

/// The driver's sink: arrays per log, handed on with the positions of
/// every log.
struct Batches<'a> {
    job: &'a LiveJob,
    tx: &'a mpsc::Sender<Item>,
    logs: Vec<LogBatch>,
    messages: u64,
}

impl Batches<'_> {
    /// Positions of every log after the arrays handed on.
    fn positions(&self, seen: &[Seen]) -> Positions {
        let mut p = Positions::default();
        for (i, l) in self.logs.iter().enumerate() {
            p.logs[i] = l.anchor;
            if p.logs[i].inode == 0 {
                p.logs[i].inode = seen[i].inode;
            }
        }
        p
    }

    /// Hands on the arrays log `i` formed.
    fn send(&mut self, i: usize, seen: &[Seen]) -> io::Result<()> {
        let arrays = std::mem::take(&mut *self.logs[i].arrays.borrow_mut());
        for (body, docs) in arrays {
            let log = &mut self.logs[i];
            log.anchor.docs += docs as u64;
            let mut rows = log.rows.drain(..docs.min(log.rows.len()));
            // The lag counts from the oldest row's first read.
            let oldest = rows.next();
            let last = rows.next_back().or(oldest);
            drop(rows);
            let mark = Mark {
                part: i as u32,
                follow: Some(self.positions(seen)),
                ..Mark::default()
            };
            let source = last.map(|(at, _)| Source { log: i as u32, at });
            let read_at = oldest.map_or_else(Instant::now, |(_, t)| t);
            LiveGauge::handed_on(&self.job.batching.gauge, read_at, body.len());
            self.tx
                .blocking_send(Item::Message(Outgoing { body, mark, source }))
                .map_err(|_| io::Error::other(PublisherStopped))?;
            self.messages += 1;
            self.job
                .batching
                .reporter
                .report(Event::Progress(Progress::Messages {
                    name: &self.job.batching.name,
                    count: self.messages,
                }));
        }
        Ok(())
    }

    /// Hands on log `i`'s partial array.
    fn flush(&mut self, i: usize, seen: &[Seen]) -> io::Result<()> {
        self.logs[i].chunker.flush()?;
        self.logs[i].since = None;
        self.send(i, seen)?;
        self.logs[i].advance(&seen[i]);
        Ok(())
    }
}

impl FollowSink for Batches<'_> {
    fn docs(&mut self, log: usize) -> &mut dyn FlowSink {
        &mut self.logs[log]
    }

    fn read(&mut self, i: usize, seen: &[Seen]) -> io::Result<()> {
        self.send(i, seen)?;
        let log = &mut self.logs[i];
        if log.anchor.inode == 0 {
            log.anchor.inode = seen[i].inode;
        }
        if log.chunker.pending() == 0 {
            log.since = None;
            log.advance(&seen[i]);
        }
        Ok(())
    }

    /// What the old file held is handed on at once: at rotation there is no
    /// later look.
    fn replaced(&mut self, i: usize, seen: &[Seen]) -> io::Result<()> {
        self.flush(i, seen)
    }

    fn reset(&mut self, i: usize) {
        let b = &self.job.batching;
        // Another file: what the destination held was of the old one.
        self.logs[i] = LogBatch::new(LogPos::default(), b.size, b.max_bytes, 0);
    }

    /// A directory is shipped whole or not marked: a log that cannot be
    /// read fails it (it is resumed from its record once it can be).
    fn carry_on(&mut self, _: usize, _: &ParseError) -> bool {
        false
    }

    /// Partial arrays older than the flush time go out (all of them once
    /// the directory is finished).
    fn polled(&mut self, finished: bool, seen: &[Seen]) -> io::Result<bool> {
        for i in 0..self.logs.len() {
            let due = self.logs[i]
                .since
                .is_some_and(|t| finished || t.elapsed() >= self.job.flush);
            if due {
                self.flush(i, seen)?;
            }
        }
        let behind = seen.iter().map(|s| s.behind).sum();
        if let Ok(mut g) = self.job.batching.gauge.lock() {
            g.behind = behind;
        }
        Ok(true)
    }
}

/// Follows a directory's logs, sending arrays on `tx` (runs on its own
/// thread). Stops at `job.until`, on the stop signal (pending documents are
/// read again next time) or at the first error.
pub(super) fn follow(job: LiveJob, tx: mpsc::Sender<Item>) -> Produced {
    let b = &job.batching;
    let mut parser = Parser::with_reporter(b.opts.clone(), b.reporter.clone());
    let mut sink = Batches {
        job: &job,
        tx: &tx,
        logs: (job.start.logs.iter().zip(job.stored_through))
            .map(|(&pos, stored)| LogBatch::new(pos, b.size, b.max_bytes, stored))
            .collect(),
        messages: 0,
    };
    let mut follower = Follower::new(&mut parser, &b.stop, &*b.reporter);
    let watch = match job.until {
        Until::Rotated => Watch::Rotation(&job.dir),
        Until::End => Watch::End,
    };
    let mut failed = None;
    let mut output_error = None;
    let completely = || format!("{}: cannot be read completely", job.dir.display());
    match follower.dir(&job.logs, &job.start.logs, watch, &mut sink) {
        Ok(_) => {}
        Err(FollowFailed::Open(path, _)) => {
            failed = Some(format!("{}: cannot be read", path.display()));
        }
        Err(FollowFailed::Read(_)) => failed = Some(completely()),
        Err(FollowFailed::Rotation(dir, source)) => {
            let e = ParseError::Io {
                path: dir.display().to_string(),
                source,
            };
            b.reporter.report(Event::FileFailed { error: &e });
            failed = Some(completely());
        }
        Err(FollowFailed::Output(e)) => output_error = consumer_error(e),
    }
    if let Some(why) = &failed {
        let _ = tx.try_send(Item::Failed(why.clone()));
    }
    let replaced = follower.replaced;
    if replaced > 0 && failed.is_none() && output_error.is_none() {
        b.reporter.warning(&format_args!(
            "{}: its logs were replaced {} time{} while it was shipped (Tstat restarted); \
             every file was read to its end",
            job.dir.display(),
            replaced,
            if replaced == 1 { "" } else { "s" }
        ));
    }
    let stats = follower.stats;
    b.reporter.report(Event::FileDone {
        file: &job.dir.display().to_string(),
        stats: &stats,
    });
    Produced {
        stats,
        failed,
        refused: None,
        output_error,
    }
}
