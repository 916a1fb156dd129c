//! Reading back (design §14.6): `tstat-consume`, the inverse filter of
//! `tstat-rabbit`. It takes messages from the configured queue (AMQP 0-9-1,
//! a consumer with a prefetch window) or stream (the stream protocol, from
//! an offset) and writes each message's flow documents as NDJSON, or each
//! array as one line (`arrays`).
//!
//! What it promises: a queue message is acknowledged only once its
//! documents are written *and flushed* to the output, so a crash or a
//! `kill -9` repeats messages, never loses one; a stream position stored
//! under `--name` is stored only after what it covers was flushed, so a
//! restart continues with no gap. A closed output (`| head`) ends the run
//! quietly, acknowledging only what was written. A body that is not a
//! JSON array stops the run (named by message id and delivery tag or
//! offset) unless `skip_bad`, which counts and reports it.
//!
//! Inside: `output` writes documents, `dedupe` remembers recent message
//! ids, `queue` is the AMQP consumer, `stream` the stream reader; this file
//! holds the options, the counts and what both share: taking one message.
//! Connections, failover and backoff are the publisher's ([`crate::publish`]).

mod dedupe;
mod output;
mod queue;
mod start;
mod stream;

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

pub use dedupe::Dedupe;
pub use output::{BadBody, Output, check_array};
pub use start::Start;

use crate::config::RabbitConfig;
use crate::publish::{PublishError, PublishOptions};
use crate::report::{Event, Level, Reporter};
use crate::shutdown::Shutdown;

/// Default `--prefetch`: messages the broker sends ahead of what is written.
pub const DEFAULT_PREFETCH: u16 = 100;

/// Output flushed (and the messages acknowledged) at the latest after this
/// many bytes, even while more messages are ready.
const FLUSH_BYTES: usize = 1 << 20;

/// How a run reads and when it ends.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// One array per line as published, instead of one document per line.
    pub arrays: bool,
    /// Messages read ahead of what is written: for a queue the broker's
    /// unacknowledged window (basic.qos), for a stream the reader's queue.
    pub prefetch: u16,
    /// Drop a message whose id is among the last N written (0: off).
    pub dedupe: usize,
    /// Stop after this many messages written.
    pub count: Option<u64>,
    /// Stop when no message came for this long.
    pub idle_exit: Option<Duration>,
    /// Acknowledge (skip) a body that is not a JSON array, counted and
    /// reported, instead of stopping.
    pub skip_bad: bool,
    /// Stream: where to start (`None`: after the offset stored under `name`,
    /// else the first message).
    pub from: Option<Start>,
    /// Stream: store the offset reached under this name.
    pub name: Option<String>,
    /// Stream: store the offset after at most this many messages…
    pub store_every: u64,
    /// …or this much time, whichever comes first (and at the end).
    pub store_interval: Duration,
    /// Connecting, retries and backoff: the publisher's options.
    pub broker: PublishOptions,
    /// Tells, without writing, that the output's reader has gone (a closed
    /// pipe): the run then ends without acknowledging what it could not
    /// have read, also while no message comes.
    pub output_gone: Option<fn() -> bool>,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            arrays: false,
            prefetch: DEFAULT_PREFETCH,
            dedupe: 0,
            count: None,
            idle_exit: None,
            skip_bad: false,
            from: None,
            name: None,
            store_every: 1000,
            store_interval: Duration::from_secs(1),
            broker: PublishOptions::default(),
            output_gone: None,
        }
    }
}

/// Why a run ended without an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum End {
    /// `--count` messages were written.
    #[default]
    Count,
    /// No message came within `--idle-exit`.
    Idle,
    /// The shutdown signal (SIGINT, SIGTERM).
    Signal,
    /// The output was closed (`| head`).
    ClosedOutput,
}

/// The counts of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages written.
    pub messages: u64,
    /// Documents written (elements of their arrays).
    pub documents: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Messages dropped as repeats (`--dedupe`).
    pub repeats: u64,
    /// Messages skipped as not a JSON array (`--skip-bad`).
    pub skipped: u64,
    /// Reconnects after a lost connection.
    pub reconnects: u64,
    /// Stream: the last offset written (and stored, with a name).
    pub last_offset: Option<u64>,
    /// Why it ended.
    pub end: End,
}

impl Summary {
    /// The summary line (without the program's name).
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} message{}, {} document{} written ({} bytes)",
            self.messages,
            plural(self.messages),
            self.documents,
            plural(self.documents),
            self.bytes
        );
        if self.repeats > 0 {
            s.push_str(&format!(", {} repeated dropped", self.repeats));
        }
        if self.skipped > 0 {
            s.push_str(&format!(", {} bad skipped", self.skipped));
        }
        if self.reconnects > 0 {
            s.push_str(&format!(
                ", {} reconnect{}",
                self.reconnects,
                plural(self.reconnects)
            ));
        }
        if let Some(o) = self.last_offset {
            s.push_str(&format!(", last offset {o}"));
        }
        s
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Every way a run fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// Connecting failed, or the broker stayed away after the retries.
    #[error("{0}")]
    Broker(#[from] PublishError),
    /// No queue is configured.
    #[error("{}: [rabbit] queue is empty: nothing to read from", .0.display())]
    NoQueue(std::path::PathBuf),
    /// The broker went away and did not come back within the retries.
    #[error("gave up after {retries} retries: {cause}")]
    GaveUp {
        /// Retries made.
        retries: u32,
        /// The last failure.
        cause: String,
    },
    /// A body is not a JSON array; it was not acknowledged.
    #[error("message {id} ({place}): {why}; {kept} (--skip-bad skips such messages)")]
    BadMessage {
        /// Its message id (`(no message id)` when it has none).
        id: String,
        /// `delivery tag N` or `offset N`.
        place: String,
        /// What is wrong with it.
        why: String,
        /// What happens to it.
        kept: &'static str,
    },
    /// Writing the output failed (other than a closed pipe, which ends the
    /// run quietly).
    #[error("writing the output: {0}")]
    Output(#[source] io::Error),
}

/// Reads the configured queue, or with `transport = stream` the stream,
/// and writes its messages to `out` until `--count`, `--idle-exit`, the
/// shutdown signal or a closed output ends it (else it runs on). The counts
/// come back whatever the outcome (what was written before a failure).
pub async fn run<W: Write>(
    cfg: &RabbitConfig,
    opts: &ConsumeOptions,
    out: W,
    shutdown: &Shutdown,
    reporter: &dyn Reporter,
) -> (Summary, Result<End, ConsumeError>) {
    let mut taker = Taker::new(out, opts, reporter);
    let result = match &cfg.stream {
        None => queue::run(cfg, opts, &mut taker, shutdown).await,
        Some(_) => stream::run(cfg, opts, &mut taker, shutdown).await,
    };
    (taker.summary.clone(), result.map(|s| s.end))
}

/// What became of one message.
#[derive(Debug)]
enum Taken {
    /// Its documents were written (not yet flushed).
    Written,
    /// Dropped as a repeat, or skipped as bad: nothing written, done with.
    Dropped,
    /// Not a JSON array: the run stops; it is not done with.
    Bad(ConsumeError),
}

/// Takes messages one by one: repeats, bad bodies, the output, the counts.
struct Taker<'a, W: Write> {
    out: Output<W>,
    dedupe: Dedupe,
    skip_bad: bool,
    count: Option<u64>,
    summary: Summary,
    reporter: &'a dyn Reporter,
}

impl<'a, W: Write> Taker<'a, W> {
    fn new(out: W, opts: &ConsumeOptions, reporter: &'a dyn Reporter) -> Self {
        Taker {
            out: Output::new(out, opts.arrays),
            dedupe: Dedupe::new(opts.dedupe),
            skip_bad: opts.skip_bad,
            count: opts.count,
            summary: Summary::default(),
            reporter,
        }
    }

    /// Takes one message; `place` says where it is (`delivery tag 7`),
    /// `kept` what happens to a bad one that is not skipped.
    fn take(
        &mut self,
        body: &[u8],
        id: Option<&str>,
        place: &dyn fmt::Display,
        kept: &'static str,
    ) -> io::Result<Taken> {
        if let Some(id) = id
            && self.dedupe.is_repeat(id)
        {
            self.summary.repeats += 1;
            self.info(&format_args!(
                "message {id} ({place}) dropped: written before"
            ));
            return Ok(Taken::Dropped);
        }
        let before = self.out.unflushed();
        match self.out.message(body)? {
            Ok(docs) => {
                self.summary.messages += 1;
                self.summary.documents += docs;
                self.summary.bytes += (self.out.unflushed() - before) as u64;
                if let Some(id) = id {
                    self.dedupe.remember(id);
                }
                Ok(Taken::Written)
            }
            Err(BadBody(why)) => {
                let id = id.unwrap_or("(no message id)");
                Ok(match self.unreadable(id, place, why, kept) {
                    None => Taken::Dropped,
                    Some(e) => Taken::Bad(e),
                })
            }
        }
    }

    /// A message that is not a JSON array (or cannot be read at all):
    /// skipped with a warning and counted (`None`) under `skip_bad`, else
    /// the error that stops the run.
    fn unreadable(
        &mut self,
        id: &str,
        place: &dyn fmt::Display,
        why: String,
        kept: &'static str,
    ) -> Option<ConsumeError> {
        if self.skip_bad {
            self.summary.skipped += 1;
            self.reporter.report(Event::Message {
                level: Level::Warning,
                text: &format_args!("message {id} ({place}) skipped: {why}"),
            });
            return None;
        }
        Some(ConsumeError::BadMessage {
            id: id.to_string(),
            place: place.to_string(),
            why,
            kept,
        })
    }

    /// True once `--count` messages are written.
    fn done(&self) -> bool {
        self.count.is_some_and(|n| self.summary.messages >= n)
    }

    /// True when the output should be flushed before taking more.
    fn flush_due(&self) -> bool {
        self.out.unflushed() >= FLUSH_BYTES
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn info(&self, text: &dyn fmt::Display) {
        self.reporter.report(Event::Message {
            level: Level::Info,
            text,
        });
    }

    fn warn(&self, text: &dyn fmt::Display) {
        self.reporter.report(Event::Message {
            level: Level::Warning,
            text,
        });
    }
}

/// The delay before reconnect number `attempt` (from 1): the publisher's
/// backoff, doubling up to its maximum.
fn backoff(opts: &PublishOptions, attempt: u32) -> Duration {
    opts.backoff
        .saturating_mul(1 << (attempt.saturating_sub(1)).min(16))
        .min(opts.max_backoff)
}

/// A closed pipe, which ends the run quietly.
fn is_closed_output(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_reads_well() {
        let mut s = Summary {
            messages: 1,
            documents: 100,
            bytes: 4096,
            ..Summary::default()
        };
        assert_eq!(s.line(), "1 message, 100 documents written (4096 bytes)");
        s.repeats = 2;
        s.skipped = 1;
        s.last_offset = Some(7);
        assert_eq!(
            s.line(),
            "1 message, 100 documents written (4096 bytes), 2 repeated dropped, 1 bad skipped, last offset 7"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let o = PublishOptions::default();
        assert_eq!(backoff(&o, 1), o.backoff);
        assert_eq!(backoff(&o, 2), o.backoff * 2);
        assert_eq!(backoff(&o, 30), o.max_backoff);
    }
}
