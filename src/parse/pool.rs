//! Worker threads for one large file: blocks of complete lines go out
//! round-robin and come back in order, so output and skip notes keep input
//! order. The caller parses on its own thread when none can be spawned.

use std::io;

use super::header::Header;
use super::rows::{Lines, RowParser};
use super::{DocAt, ParseError, ParseOptions};
use crate::report::FileStats;

/// Lines of a file handed to a worker, with the line number of the first.
struct Job {
    data: Vec<u8>,
    out: Vec<u8>,
    at: Vec<DocAt>,
    first_lineno: u64,
    utf8: bool,
}

/// A worker's result: documents as NDJSON, verbose notes, counts.
pub(super) struct Done {
    data: Vec<u8>,
    /// The documents, one per line.
    pub(super) out: Vec<u8>,
    /// The row of each document.
    pub(super) at: Vec<DocAt>,
    /// The block's counts.
    pub(super) stats: FileStats,
    /// `--verbose` notes (line, why), in line order.
    pub(super) notes: Vec<(u64, String)>,
    /// The block could not be formatted (never expected; reported as a
    /// worker failure rather than lost).
    error: Option<String>,
}

/// Most blocks handed to workers and not yet written, whatever the worker
/// count: peak memory must not grow with the machine's cores.
pub(super) const IN_FLIGHT: usize = 4;
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
pub(super) struct Pool {
    workers: Vec<Worker>,
    submitted: usize,
    collected: usize,
    spare: Vec<(Vec<u8>, Vec<u8>, Vec<DocAt>)>,
    name: String,
}

impl Pool {
    /// Starts up to `opts.threads` workers for file `name`; `None` when not
    /// one thread could be spawned (`spawn_fails`: tests act as if so).
    pub(super) fn new(
        opts: &ParseOptions,
        header: &Header,
        name: &str,
        spawn_fails: bool,
    ) -> Option<Pool> {
        let n = opts.threads.clamp(1, MAX_WORKERS);
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (jtx, jrx) = std::sync::mpsc::channel::<Job>();
            let (dtx, drx) = std::sync::mpsc::channel::<Done>();
            let rows = RowParser::new(opts);
            let header = header.clone();
            let spawned = if spawn_fails {
                Err(io::Error::other("spawning disabled for a test"))
            } else {
                std::thread::Builder::new()
                    .name("parse-worker".into())
                    .spawn(move || work(rows, header, jrx, dtx))
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
    pub(super) fn submit(
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
        let (mut data, out, at) = self.spare.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(region);
        let job = Job {
            data,
            out,
            at,
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
    pub(super) fn collect(&mut self) -> Result<Option<Done>, ParseError> {
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

    /// Takes a block's buffers back for the next one.
    pub(super) fn recycle(&mut self, done: Done) {
        self.spare.push((done.data, done.out, done.at));
    }

    /// Stops the workers once every block is collected; a worker that
    /// panicked is an error even then.
    pub(super) fn finish(mut self) -> Result<(), ParseError> {
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

/// A worker's loop: format each block it is given.
fn work(
    mut rows: RowParser,
    header: Header,
    jobs: std::sync::mpsc::Receiver<Job>,
    done: std::sync::mpsc::Sender<Done>,
) {
    // Debug builds only: a forced failure, so tests can show that a
    // failing worker is an error for its file, never fewer rows.
    #[cfg(debug_assertions)]
    let forced_panic = std::env::var_os("TSTAT_TEST_WORKER_PANIC").is_some_and(|v| v == "1");
    while let Ok(job) = jobs.recv() {
        #[cfg(debug_assertions)]
        if forced_panic {
            panic!("forced failure (TSTAT_TEST_WORKER_PANIC=1)");
        }
        let Job {
            data,
            mut out,
            mut at,
            first_lineno,
            utf8,
        } = job;
        out.clear();
        at.clear();
        let mut stats = FileStats::default();
        let lines = Lines {
            bytes: &data,
            first: first_lineno,
            utf8,
        };
        // Writing to a Vec cannot fail, so an error here is a bug: it fails
        // the file.
        let error = rows
            .block_ndjson(&header, lines, &mut stats, (&mut out, &mut at))
            .err()
            .map(|(lineno, e)| format!("line {lineno}: {}", ParseError::Output(e)));
        let notes = rows.take_notes();
        let failed = error.is_some();
        if done
            .send(Done {
                data,
                out,
                at,
                stats,
                notes,
                error,
            })
            .is_err()
            || failed
        {
            return;
        }
    }
}
