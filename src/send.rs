//! The standard job of `tstat_send` (design §8): for each ready directory,
//! oldest first, parse → threshold → chunk → publish with per-directory
//! resume, then mark it `.processed`. It wires the library stages together
//! (find, parse, chunk, publish, metrics) and never re-implements one.
//!
//! Parsing runs on its own thread and feeds the publisher through a bounded
//! channel, so the two overlap on two cores and memory stays bounded.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::chunk::Chunker;
use crate::config::RabbitConfig;
use crate::find::{self, FindOptions};
use crate::metrics::Metrics;
use crate::parse::{
    FileStats, FlowSink, ParseError, ParseOptions, Parser, Protocol, dir_logs, logs_size,
};
use crate::publish::{
    Item, Outgoing, PublishError, PublishOptions, Publisher, Recorder, StreamStart,
};
use crate::resume::{self, Digest, LogId, Mark, Plan, RecordFile, Refusal};
use crate::{cli, durable, flow};

/// Name of the per-directory resume record (design §6.3, §8.2).
pub const PROGRESS_FILE: &str = ".progress";

/// Messages buffered between the parser thread and the publisher.
const CHANNEL_DEPTH: usize = 16;

/// Where the arrays go.
pub enum Transport {
    /// Publish to RabbitMQ and mark directories when all is confirmed.
    Rabbit {
        /// Broker settings.
        config: Box<RabbitConfig>,
        /// Publisher tuning.
        publish: PublishOptions,
    },
    /// Print arrays to stdout, one per line; never mark (`-N`).
    Stdout,
}

/// Everything a run needs, already validated.
pub struct SendOptions {
    /// The tstat tree.
    pub root: PathBuf,
    /// Readiness rules (`now` is refreshed on every pass).
    pub find: FindOptions,
    /// Threshold and document metadata.
    pub parse: ParseOptions,
    /// Documents per array.
    pub chunk_size: usize,
    /// Largest array in bytes.
    pub max_bytes: usize,
    /// Stop after the first directory that yielded data.
    pub single: bool,
    /// Keep running, one pass per interval.
    pub watch: Option<Duration>,
    /// Prometheus textfile to keep up to date.
    pub metrics_file: Option<PathBuf>,
    /// Show a progress bar (only honoured on a terminal).
    pub progress_bar: bool,
    /// Ship only these directories, from their start under new message ids
    /// (`--reship`), whatever their progress record says.
    pub reship: Vec<PathBuf>,
    /// Program name for messages.
    pub prog: &'static str,
}

/// Why a run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Publishing a directory failed; it stays unmarked with its progress.
    #[error("{dir}: not marked: {source}")]
    Publish {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: PublishError,
    },
    /// Some directories had unreadable logs; they stay unmarked.
    #[error("{count} director{} not marked because of log errors (see above)", if *.count == 1 { "y" } else { "ies" })]
    Data {
        /// How many.
        count: usize,
    },
    /// The run was stopped by a signal; the current directory stays unmarked.
    #[error(
        "interrupted: {dir} not marked, {confirmed} messages of it confirmed and recorded in {progress}"
    )]
    Interrupted {
        /// The directory being shipped.
        dir: String,
        /// Messages of it confirmed so far.
        confirmed: u64,
        /// Its progress file.
        progress: String,
    },
    /// The queue disappeared during the run (deleted, or lost by the
    /// broker): what was confirmed into it is probably gone.
    #[error(
        "{dir}: not marked: {source}; {dir} starts over under new message ids on the next run{}",
        lost_list(.marked_since, .root)
    )]
    QueueLost {
        /// The directory being shipped.
        dir: String,
        /// The tree.
        root: String,
        /// Directories marked since the queue was last seen.
        marked_since: Vec<String>,
        /// The publisher's error.
        #[source]
        source: Box<PublishError>,
    },
    /// Writing stdout, a marker or the metrics file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The part of a [`SendError::QueueLost`] message about marked directories.
fn lost_list(marked: &[String], root: &str) -> String {
    if marked.is_empty() {
        return String::new();
    }
    format!(
        "; marked since the queue was last seen, so their messages are probably lost with it: \
         {} (ship each again: rm DIR/.processed && tstat_send -d {root} --reship DIR)",
        marked.join(", ")
    )
}

impl SendError {
    /// True when the cause is a closed stdout (a quiet end for `-N | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SendError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

pub use crate::report::Summary;

/// The state of a run across passes: the one broker connection and the totals.
pub struct Sender {
    opts: SendOptions,
    transport: Transport,
    publisher: Option<Publisher>,
    /// Totals over all passes.
    pub summary: Summary,
    metrics: Metrics,
    /// Directories marked in this run, and when.
    marked: Vec<(std::time::Instant, PathBuf)>,
    /// The "no Tstat directory here" warning was given.
    warned_empty: bool,
}

/// What shipping one directory gave.
enum DirResult {
    /// Done (marked, or printed); `had_data` when it yielded messages.
    Done { had_data: bool },
    /// Left unmarked because a log could not be read completely.
    DataError,
}

impl Sender {
    /// A sender; nothing is connected or read yet.
    pub fn new(opts: SendOptions, transport: Transport) -> Sender {
        let mut metrics = Metrics::default();
        if let Some(p) = &opts.metrics_file {
            metrics.last_success = Metrics::previous_success(p).unwrap_or(0.0);
        }
        Sender {
            opts,
            transport,
            publisher: None,
            summary: Summary::default(),
            metrics,
            marked: Vec::new(),
            warned_empty: false,
        }
    }

    /// Runs one pass, or passes every `watch` interval until `shutdown`.
    /// In watch mode a failed pass is reported and the next pass retries.
    pub async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), SendError> {
        loop {
            let started = Instant::now();
            let result = self.pass(&shutdown).await;
            self.metrics.last_run_seconds = started.elapsed().as_secs_f64();
            match &result {
                Ok(()) => {
                    self.metrics.last_success = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64())
                }
                Err(_) => self.metrics.errors += 1,
            }
            // A metrics problem is reported, but a failed pass decides the
            // outcome: its cause is what the operator must see.
            let result = match (self.write_metrics(), result) {
                (Ok(()), r) => r,
                (Err(m), Ok(())) => Err(m),
                (Err(m), Err(e)) => {
                    cli::error(self.opts.prog, m);
                    Err(e)
                }
            };
            let Some(interval) = self.opts.watch else {
                return result;
            };
            match result {
                Err(e @ SendError::Interrupted { .. }) => return Err(e),
                Err(e) if e.is_broken_pipe() => return Err(e),
                Err(e) => cli::error(
                    self.opts.prog,
                    format!("{e} (next pass in {} s)", interval.as_secs_f64()),
                ),
                Ok(()) => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            let waiting = Bar::new(self.opts.progress_bar, 0, "{spinner} {msg} ({elapsed})");
            if let Some(b) = waiting.get() {
                b.set_message(format!(
                    "waiting {} s for the next pass; so far {}",
                    interval.as_secs_f64(),
                    self.summary.line(0.0, false)
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {
                    return Ok(());
                }
            }
        }
    }

    /// Closes the broker connection.
    pub async fn close(mut self) {
        if let Some(p) = self.publisher.take() {
            p.close().await;
        }
    }

    fn write_metrics(&mut self) -> Result<(), SendError> {
        let Some(path) = &self.opts.metrics_file else {
            return Ok(());
        };
        self.metrics.totals = self.summary.clone();
        self.metrics.write(path).map_err(|source| SendError::Io {
            what: format!("writing metrics file {}", path.display()),
            source,
        })
    }

    async fn pass(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), SendError> {
        let mut find_opts = self.opts.find.clone();
        find_opts.now = SystemTime::now();
        let prog = self.opts.prog;
        let mut walk_errors = 0usize;
        let dirs = find::find_ready([&self.opts.root], &find_opts, |e| {
            walk_errors += 1;
            cli::error(prog, e);
        });
        tracing::info!(
            "{} ready director{}",
            dirs.len(),
            if dirs.len() == 1 { "y" } else { "ies" }
        );
        if dirs.is_empty() && !self.warned_empty {
            // A mistyped -d would otherwise ship nothing, quietly, for ever.
            let any = !find::walk_tstat_dirs(&self.opts.root, &mut |_| {}).is_empty();
            if !any {
                self.warned_empty = true;
                cli::warning(
                    prog,
                    format!(
                        "{} holds no Tstat directory (NAME.out with log_tcp_complete or \
                         log_udp_complete): is -d the directory Tstat writes into? \
                         (tstat_send --check looks at everything)",
                        self.opts.root.display()
                    ),
                );
            }
        }
        let reship = !self.opts.reship.is_empty();
        let dirs = if reship {
            self.opts.reship.clone()
        } else {
            dirs
        };
        let mut data_errors = walk_errors;
        // Sizes only for a bar on screen: no extra stat per directory else.
        let sizes: Vec<u64> = if Bar::shown(self.opts.progress_bar) {
            dirs.iter().map(|d| logs_size(d)).collect()
        } else {
            vec![0; dirs.len()]
        };
        let bar = Bar::new(
            self.opts.progress_bar,
            sizes.iter().sum(),
            "{spinner} [{prefix}] {wide_msg} {bytes}/{total_bytes} ({percent}%, ETA {eta})",
        );
        for (i, dir) in dirs.iter().enumerate() {
            if *shutdown.borrow() {
                break;
            }
            if let Some(b) = bar.get() {
                b.set_prefix(format!("{}/{}", i + 1, dirs.len()));
                b.set_message(self.id_name(dir));
            }
            let shipped = self.ship(dir, shutdown, reship, bar.get()).await;
            if let Some(b) = bar.get() {
                b.inc(sizes[i]);
            }
            match shipped? {
                DirResult::Done { had_data } => {
                    if had_data && self.opts.single {
                        break;
                    }
                }
                DirResult::DataError => data_errors += 1,
            }
        }
        if data_errors > 0 {
            return Err(SendError::Data { count: data_errors });
        }
        Ok(())
    }

    /// The settings that shape a directory's stream (design §8.7), by name.
    fn settings(&self, id_prefix: &str) -> BTreeMap<String, String> {
        let p = &self.opts.parse;
        BTreeMap::from([
            ("threshold".into(), p.threshold.to_string()),
            ("chunk_size".into(), self.opts.chunk_size.to_string()),
            ("max_bytes".into(), self.opts.max_bytes.to_string()),
            ("sensor".into(), p.sensor.clone()),
            (
                "instance".into(),
                p.instance.clone().unwrap_or_else(|| "(none)".into()),
            ),
            ("legacy_udp_duration".into(), p.legacy_udp.to_string()),
            ("document".into(), flow::DOCUMENT_VERSION.to_string()),
            ("message_id_prefix".into(), id_prefix.to_string()),
        ])
    }

    /// The directory's name in message ids: its path relative to the root
    /// (its plain name at the top level), so ids are unique per tree.
    fn id_name(&self, dir: &Path) -> String {
        let rel = dir.strip_prefix(&self.opts.root).unwrap_or(dir);
        let rel = if rel.as_os_str().is_empty() {
            dir.file_name().map(Path::new).unwrap_or(dir)
        } else {
            rel
        };
        rel.to_string_lossy().into_owned()
    }

    /// Reports a directory left unmarked for a reason of its own.
    fn refuse(&self, dir: &Path, why: impl std::fmt::Display) -> DirResult {
        cli::error(
            self.opts.prog,
            format!("{}: not marked: {why}", dir.display()),
        );
        DirResult::DataError
    }

    /// How to resume `dir`, and its record; `Err` when it must be refused.
    fn resume_plan(
        &self,
        dir: &Path,
        logs: &[(PathBuf, Protocol)],
        id_prefix: &str,
        reship: bool,
    ) -> Result<(Plan, RecordFile), String> {
        let path = dir.join(PROGRESS_FILE);
        let mut ids = Vec::with_capacity(logs.len());
        for (log, _) in logs {
            ids.push(LogId::of(log).map_err(|e| format!("{}: {e}", log.display()))?);
        }
        let settings = self.settings(id_prefix);
        let loaded = resume::load(&path);
        let plan = if reship {
            let previous = loaded.ok().flatten().map(|r| r.generation);
            Plan::fresh(resume::new_generation(previous))
        } else {
            match loaded {
                Ok(None) => Plan::fresh(0),
                Ok(Some(rec)) => resume::plan(&rec, &settings, &ids)
                    .map_err(|r| refusal_text(&r, &path, &self.opts.root, dir))?,
                Err(r) => return Err(refusal_text(&r, &path, &self.opts.root, dir)),
            }
        };
        let rec = RecordFile::new(path, self.opts.prog, settings, ids, &plan);
        Ok((plan, rec))
    }

    /// The error for a publishing failure. A vanished queue also rewinds the
    /// directory's record (its confirms went into the lost queue) and names
    /// the directories marked since the queue was last seen.
    fn publish_failed(
        &self,
        dir: &Path,
        source: PublishError,
        record: Option<&mut RecordFile>,
    ) -> SendError {
        let PublishError::QueueVanished { since, .. } = source.root() else {
            return SendError::Publish {
                dir: dir.display().to_string(),
                source,
            };
        };
        if let Some(rec) = record
            && let Err(e) = rec.rewind()
        {
            cli::error(
                self.opts.prog,
                format!(
                    "{}: cannot rewind the progress record: {e}",
                    rec.path().display()
                ),
            );
        }
        let marked_since = self
            .marked
            .iter()
            .filter(|(at, _)| at >= since)
            .map(|(_, d)| d.display().to_string())
            .collect();
        SendError::QueueLost {
            dir: dir.display().to_string(),
            root: self.opts.root.display().to_string(),
            marked_since,
            source: Box::new(source),
        }
    }

    /// Before resuming a directory with confirmed messages: connects, and if
    /// this run had to create the queue after the record was written, the
    /// messages it counts went into a queue that is gone (deleted, or lost by
    /// the broker between runs). The record is then rewound and the new plan
    /// ships the directory from its start under new ids.
    async fn queue_lost_since(
        &mut self,
        dir: &Path,
        plan: &Plan,
        record: Option<&mut RecordFile>,
    ) -> Result<Option<Plan>, PublishError> {
        let (Transport::Rabbit { config, publish }, Some(rec)) = (&self.transport, record) else {
            return Ok(None);
        };
        if plan.skip == 0 {
            return Ok(None);
        }
        let created = connected(&mut self.publisher, config, publish)
            .await?
            .queue_created_at();
        let written = std::fs::metadata(rec.path())
            .and_then(|m| m.modified())
            .ok();
        match (created, written) {
            (Some(c), Some(w)) if w < c => {}
            _ => return Ok(None),
        }
        cli::warning(
            self.opts.prog,
            format!(
                "{}: the queue did not exist and was created by this run, so the {} messages \
                 confirmed into the old one are gone with it: shipping the directory again \
                 from its start under new message ids",
                dir.display(),
                plan.skip
            ),
        );
        rec.rewind().map_err(|source| PublishError::Progress {
            path: rec.path().to_path_buf(),
            source,
        })?;
        Ok(Some(rec.rewound_plan()))
    }

    /// Ships one directory: parse on a thread, publish (or print) here.
    async fn ship(
        &mut self,
        dir: &Path,
        shutdown: &watch::Receiver<bool>,
        reship: bool,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<DirResult, SendError> {
        let name = self.id_name(dir);
        let base = format!("{}:{name}", self.opts.parse.sensor);
        if let Err(e) = resume::check_id_prefix(&base) {
            return Ok(self.refuse(dir, e));
        }
        let logs = match dir_logs(dir) {
            Ok(l) => l,
            Err(e) => return Ok(self.refuse(dir, e)),
        };
        if logs.is_empty() {
            return Ok(self.refuse(
                dir,
                "no log_tcp_complete or log_udp_complete in this directory",
            ));
        }
        if let Transport::Rabbit { .. } = self.transport {
            // Left by a run killed mid-write; this run holds the tree's lock.
            durable::remove_stale_temps(dir, &[PROGRESS_FILE, find::PROCESSED]);
        }
        let (plan, mut record) = match &self.transport {
            Transport::Stdout => (Plan::fresh(0), None),
            Transport::Rabbit { .. } => match self.resume_plan(dir, &logs, &base, reship) {
                Ok((plan, rec)) => (plan, Some(rec)),
                Err(why) => {
                    self.metrics.refused += 1;
                    return Ok(self.refuse(dir, why));
                }
            },
        };
        let plan = match self.queue_lost_since(dir, &plan, record.as_mut()).await {
            Ok(Some(rewound)) => rewound,
            Ok(None) => plan,
            Err(source) => {
                return Err(SendError::Publish {
                    dir: dir.display().to_string(),
                    source,
                });
            }
        };
        let prefix = resume::id_prefix(&base, plan.generation);
        if plan.skip > 0 {
            tracing::info!(
                "{}: resuming after {} confirmed messages",
                dir.display(),
                plan.skip
            );
        }
        tracing::info!("{}: shipping", dir.display());
        let bar = bar.cloned();
        // The parser stops within one read once a signal comes.
        let stop = Arc::new(AtomicBool::new(false));
        let relay = {
            let stop = stop.clone();
            let mut signal = shutdown.clone();
            tokio::spawn(async move {
                while !*signal.borrow_and_update() {
                    if signal.changed().await.is_err() {
                        return;
                    }
                }
                stop.store(true, Ordering::Relaxed);
            })
        };
        let (tx, mut rx) = mpsc::channel::<Item>(CHANNEL_DEPTH);
        let producer = {
            let mut opts = self.opts.parse.clone();
            opts.stop = Some(stop.clone());
            let job = Job {
                logs,
                opts,
                size: self.opts.chunk_size,
                max_bytes: self.opts.max_bytes,
                skip: plan.skip,
                expect: plan.expect,
                prog: self.opts.prog,
                name: name.clone(),
            };
            let bar = bar.clone();
            std::thread::Builder::new()
                .name("parse".into())
                .spawn(move || produce(job, tx, bar.as_ref()))
                .map_err(|source| SendError::Io {
                    what: "starting the parser thread".into(),
                    source,
                })?
        };
        // Wait for the first message (there may be none), or a signal.
        let mut watch_stop = shutdown.clone();
        let first = loop {
            if *watch_stop.borrow() {
                break None;
            }
            tokio::select! {
                item = rx.recv() => break item,
                changed = watch_stop.changed() => if changed.is_err() {
                    break rx.recv().await;
                },
            }
        };
        let interrupted_early = first.is_none() && *shutdown.borrow();
        let first = match first {
            Some(Item::Message(m)) => Some(m),
            // A failure before any message: nothing to publish.
            Some(Item::Failed(_)) | None => None,
        };
        let had_data = first.is_some();
        let outcome = match (&self.transport, first) {
            (_, None) => {
                // A producer still sending must not wait for a reader.
                drop(rx);
                Ok(PublishOutcome {
                    messages: 0,
                    bytes: 0,
                })
            }
            (Transport::Stdout, Some(first)) => print_all(first, rx).await,
            (Transport::Rabbit { config, publish }, Some(first)) => {
                // The first message was taken to see whether there is any;
                // a forwarder hands it back in front of the rest.
                let (ftx, frx) = mpsc::channel::<Item>(CHANNEL_DEPTH);
                let forward = tokio::spawn(async move {
                    if ftx.send(Item::Message(first)).await.is_err() {
                        return;
                    }
                    while let Some(m) = rx.recv().await {
                        if ftx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
                let start = StreamStart {
                    index: plan.next_index,
                    mark: plan.expect,
                };
                let result = async {
                    let publisher = connected(&mut self.publisher, config, publish).await?;
                    let recorder = record.as_mut().map(|r| r as &mut dyn Recorder);
                    publisher
                        .publish_stream(Some(&prefix), start, recorder, frx, shutdown.clone())
                        .await
                }
                .await;
                // Let the runtime actually drop the forwarder (and the
                // receiver it holds) before the blocking join below: a
                // parser still sending would otherwise wait for ever.
                forward.abort();
                let _ = forward.await;
                let progress = dir.join(PROGRESS_FILE).display().to_string();
                match result {
                    Ok(report) => Ok(PublishOutcome {
                        messages: report.published,
                        bytes: report.bytes,
                    }),
                    Err(PublishError::Interrupted { confirmed }) => Err(SendError::Interrupted {
                        dir: dir.display().to_string(),
                        confirmed,
                        progress,
                    }),
                    // The parser's own report below says why.
                    Err(PublishError::Input { .. }) => Ok(PublishOutcome {
                        messages: 0,
                        bytes: 0,
                    }),
                    Err(source) => {
                        if let PublishError::Unconfirmed { pending, .. } = &source {
                            self.metrics.unconfirmed += pending;
                        }
                        Err(self.publish_failed(dir, source, record.as_mut()))
                    }
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        relay.abort();
        let parsed = producer.join().unwrap_or_else(|_| Produced {
            stats: FileStats::default(),
            failed: Some("the parser thread panicked".into()),
            refused: None,
            output_error: None,
        });
        self.summary.rows += parsed.stats.rows;
        self.summary.skipped += parsed.stats.skipped_rows + parsed.stats.dropped;
        self.summary.flows += parsed.stats.flows;
        let sent = outcome?;
        self.summary.messages += sent.messages;
        self.summary.bytes += sent.bytes;
        if interrupted_early {
            return Err(SendError::Interrupted {
                dir: dir.display().to_string(),
                confirmed: plan.skip,
                progress: dir.join(PROGRESS_FILE).display().to_string(),
            });
        }
        if let Some(e) = parsed.output_error {
            return Err(SendError::Io {
                what: format!("{}: passing arrays on", dir.display()),
                source: e,
            });
        }
        if let Some(why) = parsed.refused {
            self.metrics.refused += 1;
            let path = dir.join(PROGRESS_FILE);
            return Ok(self.refuse(
                dir,
                refusal_text(&Refusal::Stream(why), &path, &self.opts.root, dir),
            ));
        }
        if let Some(why) = parsed.failed {
            return Ok(self.refuse(
                dir,
                format!("{why}; it is shipped (resumed) once its logs can be read completely"),
            ));
        }
        if let Transport::Rabbit { .. } = self.transport {
            find::mark_processed(dir).map_err(|source| SendError::Io {
                what: format!("marking {} processed", dir.display()),
                source,
            })?;
            if let Err(e) = durable::remove(&dir.join(PROGRESS_FILE)) {
                cli::warning(
                    self.opts.prog,
                    format!("{}: cannot remove {PROGRESS_FILE}: {e}", dir.display()),
                );
            }
            self.marked
                .push((std::time::Instant::now(), dir.to_path_buf()));
            tracing::info!(
                "{}: {} messages confirmed, marked processed",
                dir.display(),
                sent.messages
            );
        }
        self.summary.directories += 1;
        Ok(DirResult::Done { had_data })
    }
}

/// The progress bar of a pass (or of the wait between passes): shown only
/// on a terminal and without `-q`, registered so that messages printed
/// meanwhile go above it, and cleared however the pass ends.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// Whether a bar asked for is shown (stderr is a terminal).
    fn shown(wanted: bool) -> bool {
        wanted && io::stderr().is_terminal()
    }

    fn new(wanted: bool, len: u64, template: &str) -> Bar {
        if !Bar::shown(wanted) {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        cli::set_progress_bar(Some(bar.clone()));
        Bar(Some(bar))
    }

    fn get(&self) -> Option<&indicatif::ProgressBar> {
        self.0.as_ref()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
            cli::set_progress_bar(None);
        }
    }
}

/// The run's one broker connection, made on first use.
async fn connected<'a>(
    slot: &'a mut Option<Publisher>,
    config: &RabbitConfig,
    publish: &PublishOptions,
) -> Result<&'a mut Publisher, PublishError> {
    if slot.is_none() {
        *slot = Some(Publisher::connect(config, publish).await?);
    }
    Ok(slot.as_mut().expect("connected above"))
}

struct PublishOutcome {
    messages: u64,
    bytes: u64,
}

/// What the parser thread reports back.
struct Produced {
    stats: FileStats,
    /// Why the directory's logs could not be read completely.
    failed: Option<String>,
    /// Why the stream does not match the progress record.
    refused: Option<String>,
    /// The consumer side failed for a reason other than stopping.
    output_error: Option<io::Error>,
}

/// What the parser thread is to do.
struct Job {
    logs: Vec<(PathBuf, Protocol)>,
    opts: ParseOptions,
    size: usize,
    max_bytes: usize,
    /// Messages confirmed by an earlier run: formed and checked, not sent.
    skip: u64,
    /// Where the stream must be after them.
    expect: Mark,
    prog: &'static str,
    /// The directory's name in ids and on the bar.
    name: String,
}

/// The stream's position as arrays are formed.
struct Track<'a> {
    tx: &'a mpsc::Sender<Item>,
    bar: Option<&'a indicatif::ProgressBar>,
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
}

impl Track<'_> {
    fn array(&mut self, body: &[u8], docs: usize) -> io::Result<()> {
        self.emitted += docs as u64;
        self.arrays += 1;
        let mark = Mark {
            part: self.part,
            items: self.emitted - self.part_start,
            digest: self.digest.add(body),
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
            }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the publisher stopped"))?;
        if let Some(b) = self.bar {
            b.set_message(format!("{}: {} messages", self.name, self.arrays));
        }
        Ok(())
    }
}

/// Parses a directory's logs into arrays sent on `tx` (runs on its own
/// thread). On a log error the stream stops at the last complete array: the
/// pending partial one is never sent because of an error.
fn produce(job: Job, tx: mpsc::Sender<Item>, bar: Option<&indicatif::ProgressBar>) -> Produced {
    let track = RefCell::new(Track {
        tx: &tx,
        bar,
        name: &job.name,
        skip: job.skip,
        expect: job.expect,
        part: 0,
        part_start: 0,
        emitted: 0,
        arrays: 0,
        digest: Digest::default(),
        refused: None,
    });
    let mut pushed = 0u64;
    let mut stats = FileStats::default();
    let reporter = Arc::new(cli::StderrReporter::new(job.prog, job.opts.verbose));
    let mut parser = Parser::with_reporter(job.opts, reporter);
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
        };
        let name = log.display().to_string();
        match parser.parse_file(log, *proto, &mut sink) {
            Ok(st) => {
                parser.report_file(&name, &st);
                stats.add(&st);
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
                    cli::error(job.prog, &e);
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

/// Counts documents on their way to the chunker.
struct Counting<'a, S: FlowSink> {
    inner: &'a mut S,
    pushed: &'a mut u64,
}

impl<S: FlowSink> FlowSink for Counting<'_, S> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        *self.pushed += 1;
        self.inner.flow(doc)
    }
}

/// The message for a directory whose record does not apply, with the way to
/// ship it anyway.
fn refusal_text(r: &Refusal, record: &Path, root: &Path, dir: &Path) -> String {
    format!(
        "{r} (record {}); to ship it again deliberately under new message ids: \
         tstat_send -d {} --reship {} (flows confirmed before arrive a second time \
         under the new ids)",
        record.display(),
        root.display(),
        dir.display()
    )
}

/// A closed channel means the consumer stopped and reports why itself; a
/// document too large for an array is a real error.
fn consumer_error(e: io::Error) -> Option<io::Error> {
    (e.kind() != io::ErrorKind::BrokenPipe).then_some(e)
}

/// `-N`: writes each array as a line on stdout.
async fn print_all(
    first: Outgoing,
    mut rx: mpsc::Receiver<Item>,
) -> Result<PublishOutcome, SendError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 17, stdout.lock());
    let mut n = PublishOutcome {
        messages: 0,
        bytes: 0,
    };
    let mut next = Some(first.body);
    while let Some(m) = next {
        out.write_all(&m)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|source| SendError::Io {
                what: "writing stdout".into(),
                source,
            })?;
        n.messages += 1;
        n.bytes += m.len() as u64;
        next = match rx.recv().await {
            Some(Item::Message(o)) => Some(o.body),
            Some(Item::Failed(_)) | None => None,
        };
    }
    out.flush().map_err(|source| SendError::Io {
        what: "writing stdout".into(),
        source,
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_names_what_happened_to_the_messages() {
        let s = Summary {
            directories: 1,
            rows: 10,
            skipped: 1,
            flows: 18,
            messages: 1,
            bytes: 2_500_000,
        };
        assert_eq!(
            s.line(0.25, false),
            "1 directory, 10 rows read, 1 row skipped, 18 flows kept, 1 message confirmed, 2.5 MB, 0.2 s"
        );
        assert!(s.line(0.25, true).contains("1 message printed"));
    }
}
