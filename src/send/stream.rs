//! The stream destination (design §14): arrays published over RabbitMQ's
//! stream protocol by named producers (one per sensor, instance, tree and
//! log kind) under publishing ids that name the source position of their
//! last document. The broker keeps each producer's last stored id and drops
//! anything at or below it, so after any crash every flow arrives once,
//! with no repeat: before a directory is shipped the broker is asked what
//! it holds, and only what comes after is sent.
//!
//! The local record keeps the fingerprint rules of §8.7, the producers'
//! epoch of the directory and, when it is followed, where each log was
//! read to. Where the record and the broker disagree, the broker wins and
//! the run says so.

use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dest::{Delivered, Destination, Drain, ProducerNeeds, Undelivered};
use crate::config::RabbitConfig;
use crate::identity::{self, DirStamp, LogKind, NewEpoch, Producers, StreamPlan};
use crate::publish::stream::{ProducerId, StreamCounts, StreamPublisher};
use crate::publish::{Item, PublishError, PublishOptions, Recorder};
use crate::report::Reporter;
use crate::resume::{LogPos, Mark, Plan, RecordFile};

/// How often a followed directory's record is brought up to date with the
/// confirms (the broker, not the record, says where to resume: the record
/// only saves re-reading the logs from their start).
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// Epochs probed past the highest one found in use: a stream forgets the
/// least recently used producer names, so one epoch may read as empty
/// while a later one is not.
const EPOCH_GAP: u32 = 2;

/// Publishes to the configured stream.
pub struct StreamDestination {
    config: Box<RabbitConfig>,
    publish: PublishOptions,
    reporter: Arc<dyn Reporter>,
    producers: Producers,
    /// The run's one publisher, made on first use and dropped after a
    /// failure (the next pass connects again).
    publisher: Option<StreamPublisher>,
    /// When the current publisher connected (and found the stream).
    connected_at: Option<Instant>,
    /// Producers declared on the publisher, by log kind and epoch.
    declared: HashMap<(LogKind, u32), ProducerId>,
    /// The directory `prepare` planned, for `drain`.
    current: Option<Current>,
    /// Counts of earlier publishers of this run.
    past: StreamCounts,
    /// Directories resumed from what the stream held; new epochs; arrays
    /// skipped because the stream held them.
    resumes: u64,
    new_epochs: u64,
    skipped: u64,
}

/// What `prepare` decided for a directory.
struct Current {
    stamp: DirStamp,
    plan: StreamPlan,
    ids: [ProducerId; 2],
    names: [String; 2],
    producers: Producers,
    /// The highest epoch in use on the stream.
    highest: u32,
    /// Per log, the last id sent in this epoch.
    last: [u64; 2],
    /// Arrays not sent: the stream held them.
    skipped: u64,
}

impl StreamDestination {
    /// A destination for the stream of `config` (`config.stream` is set);
    /// `producers` names this run's producers. Nothing is connected yet.
    pub fn new(
        config: RabbitConfig,
        publish: PublishOptions,
        producers: Producers,
        reporter: Arc<dyn Reporter>,
    ) -> StreamDestination {
        StreamDestination {
            config: Box::new(config),
            publish,
            reporter,
            producers,
            publisher: None,
            connected_at: None,
            declared: HashMap::new(),
            current: None,
            past: StreamCounts::default(),
            resumes: 0,
            new_epochs: 0,
            skipped: 0,
        }
    }

    /// The counters of every publisher of this run so far.
    pub fn counts(&self) -> StreamCounts {
        let now = self
            .publisher
            .as_ref()
            .map(StreamPublisher::counts)
            .unwrap_or_default();
        StreamCounts {
            confirmed: self.past.confirmed + now.confirmed,
            resent: self.past.resent + now.resent,
            already_stored: self.past.already_stored + now.already_stored,
            below_sequence: self.past.below_sequence + now.below_sequence,
            reconnects: self.past.reconnects + now.reconnects,
        }
    }

    /// The run's publisher, made on first use.
    async fn connected(&mut self) -> Result<&mut StreamPublisher, PublishError> {
        if self.publisher.is_none() {
            self.declared.clear();
            self.publisher = Some(StreamPublisher::connect(&self.config, &self.publish).await?);
            self.connected_at = Some(Instant::now());
        }
        Ok(self.publisher.as_mut().expect("connected above"))
    }

    /// Forgets a publisher that failed, keeping its counts.
    fn drop_publisher(&mut self) {
        if let Some(p) = self.publisher.take() {
            let c = p.counts();
            self.past.confirmed += c.confirmed;
            self.past.resent += c.resent;
            self.past.already_stored += c.already_stored;
            self.past.below_sequence += c.below_sequence;
            self.past.reconnects += c.reconnects;
        }
        self.declared.clear();
    }

    /// The producer of `kind` in `epoch`, declared on first use.
    async fn producer(&mut self, kind: LogKind, epoch: u32) -> Result<ProducerId, PublishError> {
        if let Some(id) = self.declared.get(&(kind, epoch)) {
            return Ok(*id);
        }
        let name = self.producers.name(kind, epoch);
        let id = self.connected().await?.declare(&name).await?;
        self.declared.insert((kind, epoch), id);
        Ok(id)
    }

    /// What the broker holds for the TCP and UDP producers of each epoch,
    /// up to the highest in use (and at least up to `at_least`).
    async fn stored(&mut self, at_least: Option<u32>) -> Result<Vec<[u64; 2]>, PublishError> {
        let mut out: Vec<[u64; 2]> = Vec::new();
        let mut epoch = 0u32;
        loop {
            let mut pair = [0u64; 2];
            for (i, kind) in LogKind::ALL.into_iter().enumerate() {
                let id = self.producer(kind, epoch).await?;
                pair[i] = self.connected().await?.last_id(id).await?;
            }
            out.push(pair);
            let highest = out.iter().rposition(|p| *p != [0, 0]).unwrap_or(0) as u32;
            if epoch >= highest + EPOCH_GAP && at_least.is_none_or(|e| epoch >= e) {
                out.truncate(highest.max(at_least.unwrap_or(0)) as usize + 1);
                return Ok(out);
            }
            epoch += 1;
        }
    }

    /// Decides the directory's epoch and start and writes the epoch into
    /// its record before anything is sent.
    async fn plan_dir(
        &mut self,
        dir: &Path,
        plan: Plan,
        rec: &mut RecordFile,
    ) -> Result<Plan, Box<dyn Error + Send + Sync>> {
        let stamp = DirStamp::of_name(dir.file_name().unwrap_or(dir.as_os_str()));
        let stored = self.stored(plan.stream_epoch).await?;
        let recorded = plan.expect.follow.map(|p| p.logs.map(confirmed_ordinal));
        let record = plan.stream_epoch.map(|e| (e, recorded.unwrap_or([0, 0])));
        let sp = identity::plan_stream(stamp, &stored, record);
        let mut plan = plan;
        self.new_epochs += u64::from(sp.new_epoch.is_some());
        self.resumes += u64::from(sp.after != [0, 0]);
        match sp.new_epoch {
            Some(NewEpoch::Overlaps) => self.reporter.warning(&format_args!(
                "{}: the stream already holds this directory's positions or later ones \
                 (an older directory shipped after newer ones, a recreated directory, or \
                 --reship): shipping it under the new producer epoch {} so that none of it \
                 is dropped as a repeat",
                dir.display(),
                sp.epoch
            )),
            Some(NewEpoch::Overtaken) => self.reporter.warning(&format_args!(
                "{}: its producers moved on to newer directories before it was finished: \
                 continuing it from its record under the new producer epoch {}",
                dir.display(),
                sp.epoch
            )),
            None => {}
        }
        // A followed directory restarts from the record's log positions;
        // they must not be past what the broker holds.
        if sp.new_epoch.is_none()
            && let Some(rec_at) = recorded
            && (0..2).any(|k| rec_at[k] > sp.after[k])
        {
            self.reporter.warning(&format_args!(
                "{}: the stream holds less of it than its record says (the stream was \
                 deleted, or forgot its producers): the broker wins, reading its logs \
                 again from where the stream ends",
                dir.display()
            ));
            // From the logs' start; `sp.after`, the broker's own position,
            // still skips what the stream holds.
            rec.rewind()?;
            plan = rec.rewound_plan();
        }
        if plan.stream_epoch != Some(sp.epoch) {
            rec.set_stream_epoch(sp.epoch)
                .map_err(|source| PublishError::Progress {
                    path: rec.path().to_path_buf(),
                    source,
                })?;
            plan.stream_epoch = Some(sp.epoch);
        }
        let ids = [
            self.producer(LogKind::Tcp, sp.epoch).await?,
            self.producer(LogKind::Udp, sp.epoch).await?,
        ];
        let names = LogKind::ALL.map(|k| self.producers.name(k, sp.epoch));
        self.current = Some(Current {
            stamp,
            highest: (stored.len() as u32).saturating_sub(1).max(sp.epoch),
            plan: sp,
            ids,
            names,
            producers: self.producers.clone(),
            last: [0, 0],
            skipped: 0,
        });
        if plan.expect.follow.is_none() {
            // Arrays are re-formed from the logs' start: the same arrays
            // again (the settings are the record's), and those the stream
            // holds are skipped by their ids.
            plan.skip = 0;
            plan.expect = Mark::default();
        }
        Ok(plan)
    }

    async fn drain_dir(&mut self, job: Drain<'_>) -> Result<Delivered, Undelivered> {
        let (Some(cur), Some(mut publisher)) = (self.current.take(), self.publisher.take()) else {
            return Err(failed(PublishError::Stream {
                stream: self.stream_name(),
                what: "ship to",
                reason: "a directory was drained before it was planned".into(),
                retryable: false,
            }));
        };
        let mut cur = cur;
        let epoch = cur.plan.epoch;
        let result = drain_into(&mut publisher, &mut cur, job)
            .await
            .map_err(|u| self.gone(u));
        self.new_epochs += u64::from(cur.plan.epoch - epoch);
        self.skipped += cur.skipped;
        self.publisher = Some(publisher);
        if matches!(result, Err(Undelivered::Failed { .. })) {
            self.drop_publisher();
        }
        result
    }

    /// A stream that no longer exists (deleted, or lost by the broker)
    /// took what was confirmed into it: [`Undelivered::Lost`], which ends
    /// the run, instead of a failed pass whose retry would create the
    /// stream again without a word about what went with it.
    fn gone(&self, u: Undelivered) -> Undelivered {
        match u {
            Undelivered::Failed {
                source,
                unconfirmed,
            } if source
                .downcast_ref::<PublishError>()
                .is_some_and(|e| StreamPublisher::is_missing_stream(e.root())) =>
            {
                Undelivered::Lost {
                    source,
                    since: self.connected_at.unwrap_or_else(Instant::now),
                    unconfirmed,
                }
            }
            u => u,
        }
    }

    fn stream_name(&self) -> String {
        self.config
            .stream
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default()
    }
}

/// Sends a directory's arrays to the producers `cur` planned, skipping
/// what the stream holds, until the input ends, fails or a signal comes.
async fn drain_into(
    publisher: &mut StreamPublisher,
    cur: &mut Current,
    job: Drain<'_>,
) -> Result<Delivered, Undelivered> {
    let Drain {
        mut input,
        mut recorder,
        shutdown,
        plan,
        ..
    } = job;
    let followed = plan.expect.follow.is_some();
    let mut book = Book {
        start: plan.next_index,
        ..Book::default()
    };
    let mut interrupted = false;
    let mut producer_failed = false;
    loop {
        // Following, confirms that come while Tstat is quiet are recorded
        // (and counted) a second later, not only at the next array.
        let settle_due = followed && !book.marks.is_empty();
        let item = tokio::select! {
            biased;
            () = shutdown.triggered() => { interrupted = true; None }
            item = input.recv() => item,
            () = tokio::time::sleep_until((book.saved + RECORD_EVERY).into()), if settle_due => {
                if let Err(e) = publisher.poll().await {
                    return Err(failed_with(e, publisher.pending() as u64));
                }
                book.settle(publisher, &cur.ids, recorder.as_deref_mut());
                continue;
            }
        };
        let out = match item {
            None => break,
            Some(Item::Failed(_)) => {
                producer_failed = true;
                break;
            }
            Some(Item::Message(out)) => out,
        };
        let Some(src) = out.source else {
            return Err(failed(PublishError::Stream {
                stream: publisher.stream().to_string(),
                what: "ship to",
                reason: "an array without its source position".into(),
                retryable: false,
            }));
        };
        let k = (src.log as usize).min(1);
        let ord = identity::ordinal(src.at);
        if ord <= cur.plan.after[k] {
            // Stored by an earlier run: neither sent nor counted.
            book.marks.push_back((k, 0, out.mark));
            cur.skipped += 1;
            continue;
        }
        let Some(id) = cur.stamp.id(ord) else {
            return Err(failed(PublishError::StreamId {
                producer: cur.names[k].clone(),
                id: 0,
                problem: format!(
                    "cannot name line {} of its log (too many rows)",
                    src.at.line
                ),
            }));
        };
        if id <= cur.last[k] {
            // Tstat replaced the log (it restarted): its rows start again
            // at line 2, below what this epoch holds. What was sent in
            // the old epoch is settled first.
            if let Err(e) = publisher.flush().await {
                return Err(failed_with(e, publisher.pending() as u64));
            }
            book.settle(publisher, &cur.ids, recorder.as_deref_mut());
            next_epoch(publisher, cur, recorder.as_deref_mut()).await?;
        }
        cur.last[k] = id;
        let message_id = format!("{}:{id}", cur.names[k]);
        let len = out.body.len() as u64;
        if let Err(e) = publisher.send(cur.ids[k], id, &message_id, out.body).await {
            return Err(failed_with(e, publisher.pending() as u64));
        }
        book.sent += 1;
        book.bytes += len;
        book.marks.push_back((k, id, out.mark));
        if followed && book.saved.elapsed() >= RECORD_EVERY {
            book.settle(publisher, &cur.ids, recorder.as_deref_mut());
        }
    }
    let flushed = publisher.flush().await;
    book.settle(publisher, &cur.ids, recorder);
    if let Err(e) = flushed {
        return Err(failed_with(e, publisher.pending() as u64));
    }
    if interrupted {
        return Err(Undelivered::Interrupted {
            confirmed: book.start + book.popped,
        });
    }
    if producer_failed {
        return Err(Undelivered::ProducerFailed);
    }
    Ok(Delivered {
        messages: book.sent,
        bytes: book.bytes,
    })
}

/// Moves the rest of a directory to a producer epoch no directory used:
/// written into its record first, then declared.
async fn next_epoch(
    publisher: &mut StreamPublisher,
    cur: &mut Current,
    recorder: Option<&mut (dyn Recorder + '_)>,
) -> Result<(), Undelivered> {
    let epoch = cur.highest + 1;
    if let Some(rec) = recorder {
        rec.stream_epoch(epoch).map_err(|source| {
            failed(PublishError::Progress {
                path: rec.path(),
                source,
            })
        })?;
    }
    for (i, kind) in LogKind::ALL.into_iter().enumerate() {
        let name = cur.producers.name(kind, epoch);
        cur.ids[i] = publisher
            .declare(&name)
            .await
            .map_err(|e| failed_with(e, 0))?;
        cur.names[i] = name;
    }
    cur.highest = epoch;
    cur.plan.epoch = epoch;
    cur.last = [0, 0];
    Ok(())
}

/// What a directory's drain has sent and what the record holds of it.
struct Book {
    /// Id index of the directory's first message (the record's counting).
    start: u64,
    sent: u64,
    bytes: u64,
    /// Messages confirmed and recorded, in order.
    popped: u64,
    /// Sent and not recorded yet: log, publishing id (0: stored before),
    /// the mark after it.
    marks: VecDeque<(usize, u64, Mark)>,
    saved: Instant,
}

impl Default for Book {
    fn default() -> Self {
        Book {
            start: 0,
            sent: 0,
            bytes: 0,
            popped: 0,
            marks: VecDeque::new(),
            saved: Instant::now(),
        }
    }
}

impl Book {
    /// Records the confirmed prefix (a followed directory's positions).
    fn settle(
        &mut self,
        publisher: &StreamPublisher,
        ids: &[ProducerId; 2],
        recorder: Option<&mut (dyn Recorder + '_)>,
    ) {
        let confirmed = ids.map(|p| publisher.confirmed(p));
        let mut last = None;
        while let Some(&(k, id, mark)) = self.marks.front() {
            if id > confirmed[k] {
                break;
            }
            self.marks.pop_front();
            self.popped += 1;
            last = Some(mark);
        }
        self.saved = Instant::now();
        if let (Some(mark), Some(rec)) = (last, recorder)
            && mark.follow.is_some()
        {
            let confirmed = self.start + self.popped;
            let reserved = confirmed + self.marks.len() as u64;
            // A record that cannot be written only costs re-reading: the
            // broker says where to resume.
            let _ = rec.save(confirmed, mark, reserved);
        }
    }
}

/// The ordinal of the last document a followed log's position surely
/// covers: every document of the rows before its offset (the documents
/// counted after it may span several rows, so they are left out: a lower
/// bound repeats a few documents at worst, never skips one).
fn confirmed_ordinal(p: LogPos) -> u64 {
    match p.line {
        0 => 0,
        line => identity::ordinal(crate::parse::DocAt { line, second: true }),
    }
}

fn failed(source: PublishError) -> Undelivered {
    failed_with(source, 0)
}

fn failed_with(source: PublishError, unconfirmed: u64) -> Undelivered {
    match source {
        PublishError::Interrupted { confirmed } => Undelivered::Interrupted { confirmed },
        source => Undelivered::Failed {
            source: Box::new(source),
            unconfirmed,
        },
    }
}

impl Destination for StreamDestination {
    fn keeps_record(&self) -> bool {
        true
    }

    fn producer(&self) -> ProducerNeeds {
        ProducerNeeds {
            arrays_within_one_log: true,
            stored_through: self.current.as_ref().map_or([0, 0], |c| c.plan.after),
        }
    }

    async fn prepare(
        &mut self,
        dir: &Path,
        plan: Plan,
        record: Option<&mut RecordFile>,
    ) -> Result<Plan, Box<dyn Error + Send + Sync>> {
        let Some(rec) = record else {
            return Ok(plan);
        };
        match self.plan_dir(dir, plan, rec).await {
            Ok(plan) => Ok(plan),
            Err(e) => {
                self.drop_publisher();
                Err(e)
            }
        }
    }

    async fn drain(&mut self, job: Drain<'_>) -> Result<Delivered, Undelivered> {
        self.drain_dir(job).await
    }

    async fn close(mut self) {
        if let Some(p) = self.publisher.take() {
            p.close().await;
        }
    }

    fn stream_metrics(&self) -> crate::metrics::StreamMetrics {
        let c = self.counts();
        crate::metrics::StreamMetrics {
            resumes: self.resumes,
            already_stored: self.skipped + c.already_stored + c.below_sequence,
            resent: c.resent,
            new_epochs: self.new_epochs,
        }
    }
}
