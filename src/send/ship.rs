//! Shipping one directory: its resume plan, the parser thread, publishing
//! (or printing) its arrays, and marking it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::live::{LagRecorder, LiveGauge, LiveJob, Until, follow};
use super::produce::{Job, Produced, produce};
use super::{CHANNEL_DEPTH, DirResult, PROGRESS_FILE, SendError, Sender, Transport, connected};
use crate::metrics::LiveMetrics;
use crate::parse::{FileStats, Protocol, dir_logs};
use crate::publish::{Input, Item, Outgoing, PublishError, Recorder, StreamStart};
use crate::resume::Positions;
use crate::resume::{self, LogId, Plan, RecordFile, Refusal};
use crate::{durable, find, follow};
use std::time::Duration;

impl Sender {
    /// Writes the metrics file every few seconds while `dir` is followed,
    /// with its lag and what is left to read.
    fn live_metrics(
        &mut self,
        path: PathBuf,
        dir: &Path,
        gauge: &Arc<Mutex<LiveGauge>>,
    ) -> tokio::task::JoinHandle<()> {
        // Counters of earlier runs are read once, here: copies written
        // meanwhile never count this run twice.
        self.metrics.load_previous(&path);
        let mut m = self.metrics.clone();
        m.totals = self.summary;
        let (gauge, directory) = (gauge.clone(), dir.display().to_string());
        let reporter = self.opts.reporter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIVE_METRICS_INTERVAL);
            let mut warned = false;
            loop {
                tick.tick().await;
                if let Ok(g) = gauge.lock() {
                    m.live = Some(LiveMetrics {
                        directory: directory.clone(),
                        lag_seconds: g.lag,
                        bytes_behind: g.behind,
                    });
                }
                let written = m.write(&path);
                if let Err(e) = written
                    && !std::mem::replace(&mut warned, true)
                {
                    reporter.warning(&format_args!(
                        "writing metrics file {}: {e}",
                        path.display()
                    ));
                }
            }
        })
    }

    /// How to resume `dir`, and its record; `Err` when it must be refused.
    fn resume_plan(
        &self,
        dir: &Path,
        logs: &[(PathBuf, Protocol)],
        id_prefix: &str,
        reship: bool,
        live: bool,
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
                Ok(None) if live => resume::follow_fresh(),
                Ok(None) => Plan::fresh(0),
                Ok(Some(rec)) if live || rec.next.follow.is_some() => {
                    resume::follow_plan(&rec, &settings)
                        .map_err(|r| refusal_text(&r, &path, &self.opts.root, dir))?
                }
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
            self.opts.reporter.error(&format_args!(
                "{}: cannot rewind the progress record: {e}",
                rec.path().display()
            ));
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
        if !plan.resumes() {
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
        self.opts.reporter.warning(&format_args!(
            "{}: the queue did not exist and was created by this run, so the {} messages \
             confirmed into the old one are gone with it: shipping the directory again \
             from its start under new message ids",
            dir.display(),
            plan.skip
        ));
        rec.rewind().map_err(|source| PublishError::Progress {
            path: rec.path().to_path_buf(),
            source,
        })?;
        Ok(Some(rec.rewound_plan()))
    }

    /// Ships one directory: parse on a thread, publish (or print) here.
    pub(super) async fn ship(
        &mut self,
        dir: &Path,
        shutdown: &watch::Receiver<bool>,
        reship: bool,
        live: bool,
    ) -> Result<DirResult, SendError> {
        let name = self.id_name(dir);
        let base = format!("{}:{name}", self.opts.parse.sensor);
        if let Err(e) = resume::check_id_prefix(&base) {
            return Ok(self.refuse(dir, e));
        }
        let logs = match dir_logs(dir) {
            Ok(l) if live => Ok(l.into_iter().filter(|(p, _)| p.exists()).collect()),
            other => other,
        };
        let logs = match logs {
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
            Transport::Stdout if live => (resume::follow_fresh(), None),
            Transport::Stdout => (Plan::fresh(0), None),
            Transport::Rabbit { .. } => match self.resume_plan(dir, &logs, &base, reship, live) {
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
        } else if plan.resumes() {
            tracing::info!(
                "{}: resuming at the recorded positions, ids from {}",
                dir.display(),
                plan.next_index
            );
        }
        tracing::info!("{}: shipping", dir.display());
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
        let followed = plan.expect.follow.or(live.then(Positions::default));
        let gauge = Arc::new(Mutex::new(LiveGauge {
            timed: record.is_some(),
            ..LiveGauge::default()
        }));
        let producer = if let Some(start) = followed {
            let mut opts = self.opts.parse.clone();
            opts.stop = Some(stop.clone());
            let job = LiveJob {
                dir: dir.to_path_buf(),
                logs: follow::LOGS.map(|(n, p)| (dir.join(n), p)),
                opts,
                size: self.opts.chunk_size,
                max_bytes: self.opts.max_bytes,
                start,
                flush: self.opts.follow.unwrap_or(Duration::from_secs(5)),
                until: if live { Until::Rotated } else { Until::End },
                stop: stop.clone(),
                reporter: self.opts.reporter.clone(),
                name: name.clone(),
                gauge: gauge.clone(),
            };
            std::thread::Builder::new()
                .name("follow".into())
                .spawn(move || follow(job, tx))
                .map_err(|source| SendError::Io {
                    what: "starting the reader thread".into(),
                    source,
                })?
        } else {
            let mut opts = self.opts.parse.clone();
            opts.stop = Some(stop.clone());
            let job = Job {
                logs,
                opts,
                size: self.opts.chunk_size,
                max_bytes: self.opts.max_bytes,
                skip: plan.skip,
                expect: plan.expect,
                reporter: self.opts.reporter.clone(),
                name: name.clone(),
            };
            std::thread::Builder::new()
                .name("parse".into())
                .spawn(move || produce(job, tx))
                .map_err(|source| SendError::Io {
                    what: "starting the parser thread".into(),
                    source,
                })?
        };
        let live_metrics = match self.opts.metrics_file.clone() {
            Some(path) if live => Some(self.live_metrics(path, dir, &gauge)),
            _ => None,
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
                let start = StreamStart {
                    index: plan.next_index,
                    mark: plan.expect,
                };
                let result = async {
                    let publisher = connected(&mut self.publisher, config, publish).await?;
                    let mut lag = record.as_mut().map(|r| LagRecorder {
                        inner: r,
                        start: plan.next_index,
                        counted: 0,
                        gauge: gauge.clone(),
                    });
                    let recorder = lag.as_mut().map(|r| r as &mut dyn Recorder);
                    publisher
                        .publish_stream(
                            Some(&prefix),
                            start,
                            recorder,
                            Input::new(Some(Item::Message(first)), rx),
                            shutdown.clone(),
                        )
                        .await
                }
                .await;

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
        if let Some(task) = live_metrics {
            task.abort();
            let _ = task.await;
        }
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
            self.marked
                .push((std::time::Instant::now(), dir.to_path_buf()));
            tracing::info!(
                "{}: {} messages confirmed, marked processed",
                dir.display(),
                sent.messages
            );
        }
        if let Transport::Stdout = self.transport {
            self.printed.insert(dir.to_path_buf());
        }
        self.summary.directories += 1;
        Ok(DirResult::Done { had_data })
    }
}

struct PublishOutcome {
    messages: u64,
    bytes: u64,
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

/// How often the metrics file is written while a directory is followed.
const LIVE_METRICS_INTERVAL: Duration = Duration::from_secs(5);

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
        // What is written goes out before waiting (a followed directory's
        // arrays come as Tstat writes).
        let item = match rx.try_recv() {
            Ok(item) => Some(item),
            Err(mpsc::error::TryRecvError::Empty) => {
                flush(&mut out)?;
                rx.recv().await
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        next = match item {
            Some(Item::Message(o)) => Some(o.body),
            Some(Item::Failed(_)) | None => None,
        };
    }
    flush(&mut out)?;
    Ok(n)
}

fn flush(out: &mut impl Write) -> Result<(), SendError> {
    out.flush().map_err(|source| SendError::Io {
        what: "writing stdout".into(),
        source,
    })
}
