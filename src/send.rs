//! The standard job of `tstat_send` (SPEC §8): for each ready directory,
//! oldest first, parse → threshold → chunk → publish with per-directory
//! resume, then mark it `.processed`. It wires the library stages together
//! (find, parse, chunk, publish, metrics) and never re-implements one.
//!
//! Parsing runs on its own thread and feeds the publisher through a bounded
//! channel, so the two overlap on two cores and memory stays bounded.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::chunk::Chunker;
use crate::cli;
use crate::config::RabbitConfig;
use crate::find::{self, FindOptions};
use crate::metrics::Metrics;
use crate::parse::{FileStats, ParseError, ParseOptions, Parser};
use crate::publish::{PublishError, PublishOptions, Publisher};

/// Name of the per-directory resume record (SPEC §6.3, §8.2).
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

impl SendError {
    /// True when the cause is a closed stdout (a quiet end for `-N | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SendError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Totals of a run for the summary line and the metrics file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Directories finished (marked, or printed with `-N`).
    pub directories: u64,
    /// Rows read.
    pub rows: u64,
    /// Rows skipped plus directions dropped.
    pub skipped: u64,
    /// Flows kept.
    pub flows: u64,
    /// Messages confirmed (or printed).
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
}

impl Summary {
    /// The one summary line of SPEC §8.5; `printed` for `-N`, where
    /// messages are printed rather than confirmed.
    pub fn line(&self, secs: f64, printed: bool) -> String {
        format!(
            "{} director{}, {} rows read, {} rows skipped, {} flows kept, {} messages {}, {:.1} MB, {:.1} s",
            self.directories,
            if self.directories == 1 { "y" } else { "ies" },
            self.rows,
            self.skipped,
            self.flows,
            self.messages,
            if printed { "printed" } else { "confirmed" },
            self.bytes as f64 / 1e6,
            secs
        )
    }
}

/// The state of a run across passes: the one broker connection and the totals.
pub struct Sender {
    opts: SendOptions,
    transport: Transport,
    publisher: Option<Publisher>,
    /// Totals over all passes.
    pub summary: Summary,
    metrics: Metrics,
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
            self.write_metrics()?;
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
        let mut data_errors = walk_errors;
        for dir in dirs {
            if *shutdown.borrow() {
                break;
            }
            match self.ship(&dir, shutdown).await? {
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

    /// Ships one directory: parse on a thread, publish (or print) here.
    async fn ship(
        &mut self,
        dir: &Path,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<DirResult, SendError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::info!("{}: shipping", dir.display());
        let bar = self.progress_bar(&name);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
        let producer = {
            let dir = dir.to_path_buf();
            let opts = self.opts.parse.clone();
            let (size, max) = (self.opts.chunk_size, self.opts.max_bytes);
            let bar = bar.clone();
            std::thread::Builder::new()
                .name("parse".into())
                .spawn(move || produce(&dir, opts, size, max, tx, bar.as_ref()))
                .map_err(|source| SendError::Io {
                    what: "starting the parser thread".into(),
                    source,
                })?
        };
        let first = rx.recv().await;
        let had_data = first.is_some();
        let outcome = match (&self.transport, first) {
            (_, None) => Ok(PublishOutcome {
                messages: 0,
                bytes: 0,
            }),
            (Transport::Stdout, Some(first)) => print_all(first, rx).await,
            (Transport::Rabbit { config, publish }, Some(first)) => {
                let progress = dir.join(PROGRESS_FILE);
                let prefix = format!("{}:{name}", self.opts.parse.sensor);
                // The first message was taken to see whether there is any;
                // a forwarder hands it back in front of the rest.
                let (ftx, frx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
                let forward = tokio::spawn(async move {
                    if ftx.send(first).await.is_err() {
                        return;
                    }
                    while let Some(m) = rx.recv().await {
                        if ftx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
                let result = async {
                    if self.publisher.is_none() {
                        self.publisher = Some(Publisher::connect(config, publish).await?);
                    }
                    let publisher = self.publisher.as_mut().expect("connected above");
                    publisher
                        .publish_stream(Some(&prefix), Some(&progress), frx, shutdown.clone())
                        .await
                }
                .await;
                // Let the runtime actually drop the forwarder (and the
                // receiver it holds) before the blocking join below: a
                // parser still sending would otherwise wait for ever.
                forward.abort();
                let _ = forward.await;
                match result {
                    Ok(report) => Ok(PublishOutcome {
                        messages: report.published,
                        bytes: report.bytes,
                    }),
                    Err(PublishError::Interrupted { confirmed }) => Err(SendError::Interrupted {
                        dir: dir.display().to_string(),
                        confirmed,
                        progress: progress.display().to_string(),
                    }),
                    Err(source) => Err(SendError::Publish {
                        dir: dir.display().to_string(),
                        source,
                    }),
                }
            }
        };
        let parsed = producer.join().unwrap_or_else(|_| Produced::panicked());
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let sent = outcome?;
        self.summary.rows += parsed.stats.rows;
        self.summary.skipped += parsed.stats.skipped_rows + parsed.stats.dropped;
        self.summary.flows += parsed.stats.flows;
        self.summary.messages += sent.messages;
        self.summary.bytes += sent.bytes;
        if let Some(e) = parsed.output_error {
            return Err(SendError::Io {
                what: format!("{}: passing arrays on", dir.display()),
                source: e,
            });
        }
        if parsed.failed {
            cli::error(
                self.opts.prog,
                format!(
                    "{}: not marked: a log could not be read completely",
                    dir.display()
                ),
            );
            return Ok(DirResult::DataError);
        }
        if let Transport::Rabbit { .. } = self.transport {
            find::mark_processed(dir).map_err(|source| SendError::Io {
                what: format!("marking {} processed", dir.display()),
                source,
            })?;
            match std::fs::remove_file(dir.join(PROGRESS_FILE)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => cli::warning(
                    self.opts.prog,
                    format!("{}: cannot remove {PROGRESS_FILE}: {e}", dir.display()),
                ),
            }
            tracing::info!(
                "{}: {} messages confirmed, marked processed",
                dir.display(),
                sent.messages
            );
        }
        self.summary.directories += 1;
        Ok(DirResult::Done { had_data })
    }

    fn progress_bar(&self, name: &str) -> Option<indicatif::ProgressBar> {
        if !self.opts.progress_bar || !io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} messages ({per_sec})")
        {
            bar.set_style(style);
        }
        bar.set_message(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

struct PublishOutcome {
    messages: u64,
    bytes: u64,
}

/// What the parser thread reports back.
struct Produced {
    stats: FileStats,
    /// A log of the directory could not be read completely.
    failed: bool,
    /// The consumer side failed for a reason other than stopping.
    output_error: Option<io::Error>,
}

impl Produced {
    fn panicked() -> Produced {
        Produced {
            stats: FileStats::default(),
            failed: true,
            output_error: None,
        }
    }
}

/// Parses a directory into arrays sent on `tx` (runs on its own thread).
fn produce(
    dir: &Path,
    opts: ParseOptions,
    size: usize,
    max_bytes: usize,
    tx: mpsc::Sender<Vec<u8>>,
    bar: Option<&indicatif::ProgressBar>,
) -> Produced {
    let mut parser = Parser::new(opts);
    let mut chunker = Chunker::new(size, max_bytes, |a: &[u8]| {
        tx.blocking_send(a.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the publisher stopped"))?;
        if let Some(b) = bar {
            b.inc(1);
        }
        Ok(())
    });
    let parsed = parser.parse_path(dir, None, &mut chunker);
    let flushed = chunker.flush();
    match (parsed, flushed) {
        (Ok(outcome), Ok(())) => Produced {
            stats: outcome.stats,
            failed: !outcome.errors.is_empty(),
            output_error: None,
        },
        (Ok(outcome), Err(e)) => Produced {
            stats: outcome.stats,
            failed: true,
            output_error: consumer_error(e),
        },
        (Err(ParseError::Output(e)), _) => Produced {
            stats: FileStats::default(),
            failed: true,
            output_error: consumer_error(e),
        },
        (Err(_), _) => Produced {
            stats: FileStats::default(),
            failed: true,
            output_error: None,
        },
    }
}

/// A closed channel means the consumer stopped and reports why itself; a
/// document too large for an array is a real error.
fn consumer_error(e: io::Error) -> Option<io::Error> {
    (e.kind() != io::ErrorKind::BrokenPipe).then_some(e)
}

/// `-N`: writes each array as a line on stdout.
async fn print_all(
    first: Vec<u8>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> Result<PublishOutcome, SendError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 17, stdout.lock());
    let mut n = PublishOutcome {
        messages: 0,
        bytes: 0,
    };
    let mut next = Some(first);
    while let Some(m) = next {
        out.write_all(&m)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|source| SendError::Io {
                what: "writing stdout".into(),
                source,
            })?;
        n.messages += 1;
        n.bytes += m.len() as u64;
        next = rx.recv().await;
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
            "1 directory, 10 rows read, 1 rows skipped, 18 flows kept, 1 messages confirmed, 2.5 MB, 0.2 s"
        );
        assert!(s.line(0.25, true).contains("1 messages printed"));
    }
}
