//! The parser thread of a directory: logs → documents → arrays, checked
//! against the progress record, handed to the publisher.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::gauge::{Gauge, LiveGauge};
use crate::chunk::Chunker;
use crate::parse::{DocAt, FileStats, FlowSink, ParseError, ParseOptions, Parser, Protocol};
use crate::publish::{Item, Outgoing, Source};
use crate::report::{Event, Progress, Reporter};
use crate::resume::{Digest, Mark};
use crate::shutdown::Shutdown;

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

/// How any producer forms arrays, and for whom it reports.
pub(super) struct Batching {
    pub(super) opts: ParseOptions,
    /// Stops the producer: the run's shutdown, or the destination is done.
    pub(super) stop: Shutdown,
    /// Documents per array.
    pub(super) size: usize,
    /// Largest array in bytes.
    pub(super) max_bytes: usize,
    pub(super) reporter: Arc<dyn Reporter>,
    /// The directory's name in ids and on the bar.
    pub(super) name: String,
    /// Counts what is handed on, for the confirms to count and time.
    pub(super) gauge: Gauge,
}

/// What the parser thread is to do.
pub(super) struct Job {
    pub(super) batching: Batching,
    pub(super) logs: Vec<(PathBuf, Protocol)>,
    /// Messages confirmed by an earlier run: formed and checked, not sent.
    pub(super) skip: u64,
    /// Where the stream must be after them.
    pub(super) expect: Mark,
    /// The pending array is sent when a log ends: none holds two logs.
    pub(super) one_log_per_array: bool,
}

/// The stream's position as arrays are formed.
struct Track<'a> {
    tx: &'a mpsc::Sender<Item>,
    gauge: &'a Gauge,
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
        LiveGauge::handed_on(self.gauge, Instant::now(), body.len());
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
    let b = job.batching;
    let track = RefCell::new(Track {
        tx: &tx,
        gauge: &b.gauge,
        reporter: &*b.reporter,
        name: &b.name,
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
    let opts = ParseOptions {
        stop: Some(b.stop),
        ..b.opts
    };
    let mut parser = Parser::with_reporter(opts, b.reporter.clone());
    let mut chunker = Chunker::new(b.size, b.max_bytes, |a: &[u8], n: usize| {
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
                    b.reporter.report(Event::FileFailed { error: &e });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::dir_logs;
    use crate::report::Silent;

    fn fixture() -> PathBuf {
        // Its TCP log is larger than one read: with two threads the worker
        // pool forms its documents.
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/synthetic/2026_03_01_00_00.out")
    }

    fn opts(threads: usize) -> ParseOptions {
        ParseOptions {
            threshold: 0,
            sensor: "s".into(),
            threads,
            ..ParseOptions::default()
        }
    }

    /// The row of every document, as the parser gives them.
    struct Rows(Vec<DocAt>);

    impl FlowSink for Rows {
        fn flow(&mut self, _: &[u8]) -> io::Result<()> {
            panic!("a document without its row");
        }

        fn flow_at(&mut self, _: &[u8], at: DocAt) -> io::Result<()> {
            self.0.push(at);
            Ok(())
        }
    }

    fn arrays(threads: usize, one_log_per_array: bool) -> Vec<Outgoing> {
        let (tx, mut rx) = mpsc::channel(4);
        let job = Job {
            batching: Batching {
                opts: opts(threads),
                stop: Shutdown::new(),
                size: 7,
                max_bytes: 1 << 20,
                reporter: Arc::new(Silent),
                name: "d".into(),
                gauge: Default::default(),
            },
            logs: dir_logs(&fixture()).unwrap(),
            skip: 0,
            expect: Mark::default(),
            one_log_per_array,
        };
        let producer = std::thread::spawn(move || produce(job, tx));
        let mut out = Vec::new();
        while let Some(item) = rx.blocking_recv() {
            match item {
                Item::Message(m) => out.push(m),
                Item::Failed(why) => panic!("{why}"),
            }
        }
        let done = producer.join().unwrap();
        assert!(done.failed.is_none() && done.output_error.is_none());
        out
    }

    #[test]
    fn each_array_names_the_row_of_its_last_document() {
        let mut rows = Vec::new();
        for (log, proto) in dir_logs(&fixture()).unwrap() {
            let mut sink = Rows(Vec::new());
            Parser::new(opts(1))
                .parse_file(&log, proto, &mut sink)
                .unwrap();
            rows.push(sink.0);
        }
        let body = |a: &[Outgoing]| a.iter().map(|m| m.body.clone()).collect::<Vec<_>>();
        let one_thread = arrays(1, false);
        for (threads, one_log) in [(1, false), (2, false), (1, true), (2, true)] {
            let got = arrays(threads, one_log);
            if !one_log {
                assert_eq!(body(&got), body(&one_thread), "the same arrays");
            }
            let mut spans = 0;
            for m in &got {
                let docs = serde_json::from_slice::<Vec<serde_json::Value>>(&m.body)
                    .unwrap()
                    .len() as u64;
                let (part, items) = (m.mark.part, m.mark.items);
                spans += usize::from(docs > items);
                let at = rows[part as usize][items as usize - 1];
                assert_eq!(m.source, Some(Source { log: part, at }));
            }
            // Without the option an array runs on from the TCP log into the
            // UDP log; with it none does.
            assert_eq!(spans, usize::from(!one_log), "threads {threads}");
        }
        assert!(rows.iter().flatten().any(|at| at.second));
    }
}
