//! Shipping one directory, in four steps: **plan** (its logs, the resume
//! gate when the destination keeps a record, the destination's own
//! preparation), **start** its producer (a parser thread, or a follower of
//! the logs Tstat writes), **drain** (the destination takes the arrays),
//! **finish** (counts; the mark when the destination keeps a record). The
//! destination is a value of the program's choosing: nothing here depends
//! on which one it is.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::dest::{Delivered, Destination, Drain, Undelivered};
use super::gauge::{Gauge, LagRecorder, LiveGauge, live_metrics};
use super::live::{LiveJob, Until, follow};
use super::produce::{Batching, Job, Produced, produce};
use super::{CHANNEL_DEPTH, DirResult, PROGRESS_FILE, SendError, Sender};
use crate::parse::{FileStats, Protocol, dir_logs};
use crate::publish::{Input, Item, Recorder};
use crate::resume::{self, LogId, Open, Override, Plan, Positions, RecordFile, Refusal};
use crate::shutdown::Shutdown;
use crate::{durable, find, follow};

/// A directory planned for shipping.
struct DirJob {
    dir: PathBuf,
    /// Its name in ids and on the bar.
    name: String,
    logs: Vec<(PathBuf, Protocol)>,
    plan: Plan,
    /// Its progress record, when the destination keeps one.
    record: Option<RecordFile>,
    /// Message id prefix (`SENSOR:NAME`, `~GENERATION` after a re-ship).
    prefix: String,
    /// Followed while Tstat writes it.
    live: bool,
}

/// A directory's producer at work.
struct Running {
    thread: std::thread::JoinHandle<Produced>,
    /// Stops it (the run's shutdown, or the destination being done).
    stop: Shutdown,
    gauge: Gauge,
    /// Writes the metrics file while the directory is followed.
    metrics: Option<tokio::task::JoinHandle<()>>,
}

/// What draining a directory gave.
struct Drained {
    outcome: Result<Delivered, SendError>,
    /// It gave at least one array.
    had_data: bool,
    /// The shutdown came before its first array.
    interrupted_early: bool,
}

impl<D: Destination> Sender<D> {
    /// Ships one directory: plan, start its producer, drain, finish.
    pub(super) async fn ship(
        &mut self,
        dir: &Path,
        shutdown: &Shutdown,
        reship: bool,
        live: bool,
    ) -> Result<DirResult, SendError> {
        let mut job = match self.plan(dir, reship, live).await? {
            Ok(job) => job,
            Err(refused) => return Ok(refused),
        };
        let (running, rx) = self.start(&job, shutdown)?;
        let drained = self.drain(&mut job, rx, &running.gauge, shutdown).await;
        self.finish(job, running, drained).await
    }

    /// Step 1: the directory's logs and how to resume it; `Ok(Err)` when it
    /// is refused, or re-shipped while Tstat writes it (said here).
    async fn plan(
        &mut self,
        dir: &Path,
        reship: bool,
        live: bool,
    ) -> Result<Result<DirJob, DirResult>, SendError> {
        let name = self.id_name(dir);
        let base = self.id_base(dir, &name, reship);
        if let Err(e) = resume::check_id_prefix(&base) {
            return Ok(Err(self.refuse(dir, e)));
        }
        let logs = match dir_logs(dir) {
            Ok(l) if live => Ok(l.into_iter().filter(|(p, _)| p.exists()).collect()),
            other => other,
        };
        let logs = match logs {
            Ok(l) if l.is_empty() => {
                let why = "no log_tcp_complete or log_udp_complete in this directory";
                return Ok(Err(self.refuse(dir, why)));
            }
            Ok(l) => l,
            Err(e) => return Ok(Err(self.refuse(dir, e))),
        };
        let (plan, mut record) = if self.dest.keeps_record() {
            // Left by a run killed mid-write; this run holds the tree's lock.
            durable::remove_stale_temps(dir, &[PROGRESS_FILE, find::PROCESSED]);
            match self.gate(dir, &logs, &base, reship, live) {
                Ok((plan, rec)) if reship && live => {
                    return Ok(Err(self.hand_back(dir, &base, &plan, &rec)));
                }
                Ok((plan, rec)) => (plan, Some(rec)),
                Err(why) => return Ok(Err(self.refuse_record(dir, why))),
            }
        } else if live {
            // Nothing is kept: the ids are printed, never published.
            (resume::follow_fresh(resume::new_generation(None)), None)
        } else {
            (Plan::fresh(0), None)
        };
        let plan = match self.dest.prepare(dir, plan, record.as_mut()).await {
            Ok(plan) => plan,
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
        } else if plan.resumes() {
            tracing::info!(
                "{}: resuming at the recorded positions, ids from {}",
                dir.display(),
                plan.next_index
            );
        }
        tracing::info!("{}: shipping", dir.display());
        Ok(Ok(DirJob {
            dir: dir.to_path_buf(),
            name,
            logs,
            plan,
            record,
            prefix,
            live,
        }))
    }

    /// The resume gate for `dir` (design §8.7): its plan and record, or the
    /// refusal's text.
    fn gate(
        &self,
        dir: &Path,
        logs: &[(PathBuf, Protocol)],
        id_prefix: &str,
        reship: bool,
        live: bool,
    ) -> Result<(Plan, RecordFile), String> {
        let mut ids = Vec::with_capacity(logs.len());
        for (log, _) in logs {
            ids.push(LogId::of(log).map_err(|e| format!("{}: {e}", log.display()))?);
        }
        let how = match (reship, live) {
            (true, true) => Open::ReshipLive,
            (true, false) => Open::Reship,
            (false, true) => Open::Follow,
            (false, false) => Open::Resume,
        };
        let path = dir.join(PROGRESS_FILE);
        let settings = self.settings(id_prefix);
        resume::open(
            path.clone(),
            self.opts.prog,
            settings,
            ids,
            how,
            &self.generations,
        )
        .map_err(|r| match r {
            Refusal::Generation(why) => why,
            r => self.refusal(&r, &path, dir),
        })
    }

    /// `--reship` of a directory Tstat is still writing: nothing is sent
    /// and it is not marked (the rest of its hour is still to come). Its
    /// record, from the gate, starts over under a new generation with
    /// follow positions, so the follower, or the first run after Tstat
    /// finishes it, ships it from its start whatever the record said before.
    fn hand_back(&mut self, dir: &Path, base: &str, plan: &Plan, record: &RecordFile) -> DirResult {
        if let Err(e) = record.write() {
            return self.refuse(
                dir,
                format!("cannot write {}: {e}", record.path().display()),
            );
        }
        self.opts.reporter.warning(&format_args!(
            "{}: not shipped now and not marked: Tstat is still writing it (a newer \
             directory or --settle decides when it is finished). Its record starts it over \
             under new message ids ({}): `tstat_send --follow -d {}` ships it from its start, \
             or the first run after Tstat finishes it",
            dir.display(),
            resume::id_prefix(base, plan.generation),
            self.opts.root.display()
        ));
        DirResult::Done { had_data: false }
    }

    /// Step 2: the producer thread, feeding a channel the destination
    /// drains; stopped by the run's shutdown or once the drain is over.
    fn start(
        &mut self,
        job: &DirJob,
        shutdown: &Shutdown,
    ) -> Result<(Running, mpsc::Receiver<Item>), SendError> {
        let stop = shutdown.child();
        let (tx, rx) = mpsc::channel::<Item>(CHANNEL_DEPTH);
        let gauge = Arc::new(Mutex::new(LiveGauge {
            timed: job.record.is_some(),
            ..LiveGauge::default()
        }));
        let batching = Batching {
            opts: self.opts.parse.clone(),
            stop: stop.clone(),
            size: self.opts.chunk_size,
            max_bytes: self.opts.max_bytes,
            reporter: self.opts.reporter.clone(),
            name: job.name.clone(),
            gauge: gauge.clone(),
        };
        let followed = job.plan.expect.follow.or(job.live.then(Positions::default));
        let spawned = if let Some(start) = followed {
            let live = LiveJob {
                batching,
                dir: job.dir.clone(),
                logs: follow::LOGS.map(|(n, p)| (job.dir.join(n), p)),
                start,
                stored_through: self.dest.producer().stored_through,
                flush: self.opts.follow.unwrap_or(Duration::from_secs(5)),
                until: if job.live { Until::Rotated } else { Until::End },
            };
            spawn("follow", "reader", move || follow(live, tx))?
        } else {
            let batch = Job {
                batching,
                logs: job.logs.clone(),
                skip: job.plan.skip,
                expect: job.plan.expect,
                one_log_per_array: self.dest.producer().arrays_within_one_log,
            };
            spawn("parse", "parser", move || produce(batch, tx))?
        };
        let metrics = match self.opts.metrics_file.clone() {
            Some(path) if job.live => {
                // Counters of earlier runs are read once, here: copies
                // written meanwhile never count this run twice.
                self.metrics.load_previous(&path);
                let mut m = self.metrics.clone();
                m.totals = self.summary;
                let dir = job.dir.display().to_string();
                let reporter = self.opts.reporter.clone();
                Some(live_metrics(m, path, dir, gauge.clone(), reporter))
            }
            _ => None,
        };
        let running = Running {
            thread: spawned,
            stop,
            gauge,
            metrics,
        };
        Ok((running, rx))
    }

    /// Step 3: waits for the first array (there may be none), then the
    /// destination takes them all.
    async fn drain(
        &mut self,
        job: &mut DirJob,
        mut rx: mpsc::Receiver<Item>,
        gauge: &Gauge,
        shutdown: &Shutdown,
    ) -> Drained {
        let first = if shutdown.is_triggered() {
            None
        } else {
            tokio::select! {
                item = rx.recv() => item,
                () = shutdown.triggered() => None,
            }
        };
        let interrupted_early = first.is_none() && shutdown.is_triggered();
        // A failure before any array: nothing to deliver.
        let Some(Item::Message(first)) = first else {
            // A producer still sending must not wait for a reader.
            drop(rx);
            return Drained {
                outcome: Ok(Delivered::default()),
                had_data: false,
                interrupted_early,
            };
        };
        let mut lag = job.record.as_mut().map(|r| LagRecorder {
            inner: r,
            start: job.plan.next_index,
            counted: 0,
            gauge: gauge.clone(),
        });
        let delivered = self
            .dest
            .drain(Drain {
                dir: &job.dir,
                id_prefix: &job.prefix,
                plan: &job.plan,
                input: Input::new(Some(Item::Message(first)), rx),
                recorder: lag.as_mut().map(|r| r as &mut dyn Recorder),
                shutdown,
            })
            .await;
        drop(lag);
        let outcome = match delivered {
            Ok(d) => Ok(d),
            // The producer's own report says why.
            Err(Undelivered::ProducerFailed) => Ok(Delivered::default()),
            Err(u) => Err(self.undelivered(&job.dir, u, job.record.as_mut())),
        };
        Drained {
            outcome,
            had_data: true,
            interrupted_early,
        }
    }

    /// Step 4: the producer's counts and verdict, then the directory is
    /// marked (with a record) or remembered as shipped (without).
    async fn finish(
        &mut self,
        job: DirJob,
        running: Running,
        drained: Drained,
    ) -> Result<DirResult, SendError> {
        let dir = job.dir.as_path();
        if let Some(task) = running.metrics {
            task.abort();
            let _ = task.await;
        }
        running.stop.trigger();
        let parsed = running.thread.join().unwrap_or_else(|_| Produced {
            stats: FileStats::default(),
            failed: Some("the parser thread panicked".into()),
            refused: None,
            output_error: None,
        });
        self.summary.rows += parsed.stats.rows;
        self.summary.skipped += parsed.stats.skipped_rows + parsed.stats.dropped;
        self.summary.flows += parsed.stats.flows;
        // What the destination confirmed counts however the directory ends
        // (a stop, a failure): counted at each confirm.
        let sent = match drained.outcome {
            Ok(sent) => sent,
            Err(e) => {
                let (messages, bytes) = LiveGauge::confirmed(&running.gauge);
                self.summary.messages += messages;
                self.summary.bytes += bytes;
                return Err(e);
            }
        };
        self.summary.messages += sent.messages;
        self.summary.bytes += sent.bytes;
        if drained.interrupted_early {
            return Err(SendError::Interrupted {
                dir: dir.display().to_string(),
                confirmed: job.plan.skip,
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
            let path = dir.join(PROGRESS_FILE);
            let text = self.refusal(&Refusal::Stream(why), &path, dir);
            return Ok(self.refuse_record(dir, text));
        }
        if let Some(why) = parsed.failed {
            return Ok(self.refuse(
                dir,
                format!("{why}; it is shipped (resumed) once its logs can be read completely"),
            ));
        }
        if job.record.is_some() {
            self.mark(dir, sent.messages)?;
        } else {
            self.printed.insert(dir.to_path_buf());
        }
        self.summary.directories += 1;
        Ok(DirResult::Done {
            had_data: drained.had_data,
        })
    }

    /// Marks a directory whose every message is delivered, and drops its
    /// record.
    fn mark(&mut self, dir: &Path, messages: u64) -> Result<(), SendError> {
        find::mark_processed(dir).map_err(|source| SendError::Io {
            what: format!("marking {} processed", dir.display()),
            source,
        })?;
        // `.processed` is durable: the record may come back after a
        // crash, and is ignored then.
        if let Err(e) = std::fs::remove_file(dir.join(PROGRESS_FILE))
            .or_else(|e| (e.kind() == io::ErrorKind::NotFound).then_some(()).ok_or(e))
        {
            self.opts.reporter.warning(&format_args!(
                "{}: cannot remove {PROGRESS_FILE}: {e}",
                dir.display()
            ));
        }
        self.said.remove(dir);
        self.marked
            .push((std::time::Instant::now(), dir.to_path_buf()));
        tracing::info!(
            "{}: {} messages confirmed, marked processed",
            dir.display(),
            messages
        );
        Ok(())
    }

    /// The error for what a destination did not take. A lost destination
    /// also rewinds the directory's record (what it confirmed is gone) and
    /// names the directories marked since it was last seen.
    fn undelivered(
        &mut self,
        dir: &Path,
        u: Undelivered,
        record: Option<&mut RecordFile>,
    ) -> SendError {
        let shown = dir.display().to_string();
        match u {
            Undelivered::ProducerFailed => SendError::Data {
                count: 1,
                refused: 0,
            },
            Undelivered::Interrupted { confirmed } => SendError::Interrupted {
                dir: shown,
                confirmed,
                progress: dir.join(PROGRESS_FILE).display().to_string(),
            },
            Undelivered::Io { what, source } => SendError::Io { what, source },
            Undelivered::Failed {
                source,
                unconfirmed,
            } => {
                self.metrics.unconfirmed += unconfirmed;
                SendError::Publish { dir: shown, source }
            }
            Undelivered::Lost {
                source,
                since,
                unconfirmed,
            } => {
                self.metrics.unconfirmed += unconfirmed;
                if let Some(rec) = record
                    && let Err(e) = rec.rewind()
                {
                    self.opts.reporter.error(&format_args!(
                        "{}: cannot rewind the progress record: {e}",
                        rec.path().display()
                    ));
                }
                let marked_since = self
                    .marked
                    .iter()
                    .filter(|(at, _)| *at >= since)
                    .map(|(_, d)| d.display().to_string())
                    .collect();
                SendError::QueueLost {
                    dir: shown,
                    root: self.opts.root.display().to_string(),
                    marked_since,
                    source,
                }
            }
        }
    }

    /// The message for a directory whose record does not apply, with the
    /// way to ship it anyway.
    fn refusal(&self, r: &Refusal, record: &Path, dir: &Path) -> String {
        let how = Override::ReshipDir {
            root: &self.opts.root,
            dir,
        };
        resume::refusal_text(r, record, how)
    }
}

/// Starts a producer thread.
fn spawn(
    thread: &str,
    what: &str,
    f: impl FnOnce() -> Produced + Send + 'static,
) -> Result<std::thread::JoinHandle<Produced>, SendError> {
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(f)
        .map_err(|source| SendError::Io {
            what: format!("starting the {what} thread"),
            source,
        })
}
