//! The parser thread of a directory: logs → documents → arrays, checked
//! against the progress record, handed to the publisher.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chunk::Chunker;
use crate::parse::{DocAt, FileStats, FlowSink, ParseError, ParseOptions, Parser, Protocol};
use crate::publish::{Item, Outgoing, Source};
use crate::report::{Event, Progress, Reporter};
use crate::resume::{Digest, Mark};

/// What the parser thread reports back.
pub(super) struct Produced {
    pub(super) stats: FileStats,
    /// Why the directory's logs could not be read completely.
    pub(super) failed: Option<String>,
    /// Why the stream does not match the progress record.
    pub(super) refused: Option<String>,
    /// The consumer side failed for a reason other than stopping.
    pub(super) output_error: Option<io::Error>,
}

/// What the parser thread is to do.
pub(super) struct Job {
    pub(super) logs: Vec<(PathBuf, Protocol)>,
    pub(super) opts: ParseOptions,
    pub(super) size: usize,
    pub(super) max_bytes: usize,
    /// Messages confirmed by an earlier run: formed and checked, not sent.
    pub(super) skip: u64,
    /// Where the stream must be after them.
    pub(super) expect: Mark,
    /// The pending array is sent when a log ends: none holds two logs.
    pub(super) one_log_per_array: bool,
    pub(super) reporter: Arc<dyn Reporter>,
    /// The directory's name in ids and on the bar.
    pub(super) name: String,
}

/// The stream's position as arrays are formed.
struct Track<'a> {
    tx: &'a mpsc::Sender<Item>,
    reporter: &'a dyn Reporter,
    /// The directory's name, for the bar.
    name: &'a str,
    skip: u64,
    expect: Mark,
    /// Current log.
    part: u32,
    /// Documents handed to arrays before the current log began.
    part_start: u64,
    /// Documents in arrays so far.
    emitted: u64,
    arrays: u64,
    digest: Digest,
    refused: Option<String>,
    /// Rows of the documents pushed and not in an array yet.
    rows: VecDeque<DocAt>,
}

impl Track<'_> {
    fn array(&mut self, body: &[u8], docs: usize) -> io::Result<()> {
        self.emitted += docs as u64;
        self.arrays += 1;
        let last = self.rows.drain(..docs.min(self.rows.len())).next_back();
        let mark = Mark {
            part: self.part,
            items: self.emitted - self.part_start,
            digest: self.digest.add(body),
            follow: None,
        };
        if self.arrays < self.skip {
            return Ok(());
        }
        if self.arrays == self.skip {
            if mark != self.expect {
                self.refused = Some(format!(
                    "message {} of the earlier run ended at document {} of log {} \
                     (digest {:08x}); it now ends at document {} of log {} (digest {:08x})",
                    self.skip - 1,
                    self.expect.items,
                    self.expect.part,
                    self.expect.digest,
                    mark.items,
                    mark.part,
                    mark.digest
                ));
                return Err(io::Error::other("stream differs from the record"));
            }
            return Ok(());
        }
        self.tx
            .blocking_send(Item::Message(Outgoing {
                body: body.to_vec(),
                mark,
                source: last.map(|at| Source { log: mark.part, at }),
            }))
            .map_err(|_| io::Error::other(PublisherStopped))?;
        self.reporter.report(Event::Progress(Progress::Messages {
            name: self.name,
            count: self.arrays,
        }));
        Ok(())
    }
}

/// Parses a directory's logs into arrays sent on `tx` (runs on its own
/// thread). On a log error the stream stops at the last complete array: the
/// pending partial one is never sent because of an error.
pub(super) fn produce(job: Job, tx: mpsc::Sender<Item>) -> Produced {
    let track = RefCell::new(Track {
        tx: &tx,
        reporter: &*job.reporter,
        name: &job.name,
        skip: job.skip,
        expect: job.expect,
        part: 0,
        part_start: 0,
        emitted: 0,
        arrays: 0,
        digest: Digest::default(),
        refused: None,
        rows: VecDeque::new(),
    });
    let mut pushed = 0u64;
    let mut stats = FileStats::default();
    let mut parser = Parser::with_reporter(job.opts, job.reporter.clone());
    let mut chunker = Chunker::new(job.size, job.max_bytes, |a: &[u8], n: usize| {
        track.borrow_mut().array(a, n)
    });
    let mut failed = None;
    let mut output_error = None;
    for (part, (log, proto)) in job.logs.iter().enumerate() {
        {
            let mut t = track.borrow_mut();
            t.part = part as u32;
            t.part_start = pushed;
        }
        let mut sink = Counting {
            inner: &mut chunker,
            pushed: &mut pushed,
            track: &track,
        };
        let name = log.display().to_string();
        match parser.parse_file(log, *proto, &mut sink) {
            Ok(st) => {
                parser.report_file(&name, &st);
                stats.add(&st);
                if job.one_log_per_array
                    && part + 1 < job.logs.len()
                    && let Err(e) = chunker.flush()
                {
                    output_error = consumer_error(e);
                    break;
                }
            }
            Err(ParseError::Output(e)) => {
                output_error = consumer_error(e);
                break;
            }
            Err(e) => {
                // Rows read before the failure still count.
                if let Some(st) = e.partial_stats() {
                    parser.report_file(&name, st);
                    stats.add(st);
                }
                if e.is_interrupted() {
                    failed = Some(format!("{name}: parsing stopped by a signal"));
                } else {
                    job.reporter.report(Event::FileFailed { error: &e });
                    failed = Some(format!("{name}: cannot be read completely"));
                }
                break;
            }
        }
    }
    if failed.is_none()
        && output_error.is_none()
        && track.borrow().refused.is_none()
        && let Err(e) = chunker.flush()
    {
        output_error = consumer_error(e);
    }
    drop(chunker);
    let mut t = track.into_inner();
    if t.refused.is_none() && failed.is_none() && output_error.is_none() && t.arrays < t.skip {
        t.refused = Some(format!(
            "the logs now give {} messages, fewer than the {} confirmed",
            t.arrays, t.skip
        ));
    }
    if let Some(why) = &failed {
        // Tell the publisher to stop after what it has (it may be gone).
        let _ = tx.try_send(Item::Failed(why.clone()));
    }
    if t.refused.is_some() {
        output_error = None;
    }
    Produced {
        stats,
        failed,
        refused: t.refused,
        output_error,
    }
}

/// Counts documents on their way to the chunker, and keeps their rows.
struct Counting<'a, 't, S: FlowSink> {
    inner: &'a mut S,
    pushed: &'a mut u64,
    track: &'a RefCell<Track<'t>>,
}

impl<S: FlowSink> FlowSink for Counting<'_, '_, S> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        *self.pushed += 1;
        self.inner.flow(doc)
    }

    fn flow_at(&mut self, doc: &[u8], at: DocAt) -> io::Result<()> {
        self.track.borrow_mut().rows.push_back(at);
        self.flow(doc)
    }

    fn flows_at(&mut self, ndjson: &[u8], at: &[DocAt]) -> io::Result<()> {
        let mut rows = at.iter();
        let mut p = 0;
        while let Some(nl) = memchr::memchr(b'\n', &ndjson[p..]) {
            let at = rows.next().copied().unwrap_or_default();
            self.flow_at(&ndjson[p..p + nl], at)?;
            p += nl + 1;
        }
        Ok(())
    }
}

/// The publisher (or printer) took no more arrays; it reports why itself.
#[derive(Debug, thiserror::Error)]
#[error("the publisher stopped")]
pub(super) struct PublisherStopped;

/// A stopped consumer reports why itself; anything else (a document too
/// large for an array) is a real error.
pub(super) fn consumer_error(e: io::Error) -> Option<io::Error> {
    let stopped = e.get_ref().is_some_and(|x| x.is::<PublisherStopped>());
    (!stopped).then_some(e)
}
