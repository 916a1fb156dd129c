//! The standard job of `tstat_send` (design §8): for each ready directory,
//! oldest first, parse → threshold → chunk → publish with per-directory
//! resume, then mark it `.processed`. It wires the library stages together
//! (find, parse, chunk, publish, metrics) and never re-implements one.
//!
//! Parsing runs on its own thread and feeds the destination through a
//! bounded channel, so the two overlap on two cores and memory stays
//! bounded. Where the arrays go is a [`Destination`] the program chooses:
//! [`PrintArrays`] (`-N`), [`QueueDestination`].

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::find::{self, FindOptions};
use crate::metrics::Metrics;
use crate::parse::{ParseOptions, logs_size};
use crate::report::{Event, Progress, Reporter};
use crate::shutdown::Shutdown;
use crate::{flow, follow, resume};

mod dest;
mod gauge;
mod live;
mod produce;
mod queue;
mod ship;
mod stdout;
mod stream;

pub use dest::{Delivered, Destination, Drain, ProducerNeeds, Undelivered};
pub use queue::QueueDestination;
pub use stdout::PrintArrays;
pub use stream::StreamDestination;

/// Name of the per-directory resume record (design §6.3, §8.2).
pub const PROGRESS_FILE: &str = ".progress";

/// Time between passes in follow mode without `--watch`.
const FOLLOW_PASS: Duration = Duration::from_secs(1);
/// Time before the next pass after a failed one in follow mode.
const FOLLOW_RETRY: Duration = Duration::from_secs(30);
/// Longest time between full walks of the tree in follow mode (a
/// `.processed` removed by hand is seen within it; new directories at
/// once).
const FOLLOW_FULL_WALK: Duration = Duration::from_secs(300);

/// Messages buffered between the parser thread and the publisher.
const CHANNEL_DEPTH: usize = 16;

/// Everything a run needs, already validated.
pub struct SendOptions {
    /// The tstat tree.
    pub root: PathBuf,
    /// The tree's identity in message ids and stream producer names
    /// ([`crate::identity::tree_tag`]), decided once for both.
    pub tree: String,
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
    /// Also ship the directory Tstat is writing (design §12); the flush time.
    pub follow: Option<Duration>,
    /// Prometheus textfile to keep up to date.
    pub metrics_file: Option<PathBuf>,
    /// Where errors, warnings and progress go.
    pub reporter: Arc<dyn Reporter>,
    /// Ship only these directories, from their start under new message ids
    /// (`--reship`), whatever their progress record says.
    pub reship: Vec<PathBuf>,
    /// Program name for messages.
    pub prog: &'static str,
}

/// Why a run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Delivering a directory failed; it stays unmarked with its progress.
    #[error("{dir}: not marked: {source}")]
    Publish {
        /// The directory.
        dir: String,
        /// Why (the destination's error).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Some directories had unreadable logs, or a progress record that
    /// does not describe them any more; they stay unmarked.
    #[error("{}", data_text(*.count, *.refused))]
    Data {
        /// How many (refused ones included).
        count: usize,
        /// How many of them were refused by their progress record.
        refused: usize,
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
        /// The destination's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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

/// The message of a [`SendError::Data`]: log errors and refused records are
/// told apart (they need different fixes).
fn data_text(count: usize, refused: usize) -> String {
    let dirs = |n: usize| format!("{n} director{}", if n == 1 { "y" } else { "ies" });
    let records = |n: usize| {
        if n == 1 {
            "refused by its progress record"
        } else {
            "refused by their progress records"
        }
    };
    match (count - refused.min(count), refused) {
        (_, 0) => format!(
            "{} not marked because of log errors (see above)",
            dirs(count)
        ),
        (0, r) => format!("{} not marked: {} (see above)", dirs(r), records(r)),
        (logs, r) => format!(
            "{} not marked (see above): {} because of log errors, {} {}",
            dirs(count),
            logs,
            r,
            records(r)
        ),
    }
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
    /// True when no broker could be connected to: `tstat_send --check` then
    /// says more.
    pub fn is_connect_failure(&self) -> bool {
        let source = match self {
            SendError::Publish { source, .. } | SendError::QueueLost { source, .. } => source,
            _ => return false,
        };
        source
            .downcast_ref::<crate::publish::PublishError>()
            .is_some_and(|e| matches!(e.root(), crate::publish::PublishError::Connect { .. }))
    }

    /// For a stop a signal asked for while following, where this is the
    /// normal end: what was left and where the next run starts, as a
    /// notice rather than an error (`None` for any other error).
    pub fn stopped_following(&self) -> Option<String> {
        let SendError::Interrupted {
            dir,
            confirmed,
            progress,
        } = self
        else {
            return None;
        };
        Some(format!(
            "stopped: {dir} stays unmarked, {confirmed} messages of it confirmed and \
             recorded in {progress}; the next run resumes from there"
        ))
    }

    /// True when the cause is a closed stdout (a quiet end for `-N | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SendError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

pub use crate::report::Summary;

/// The state of a run across passes: its destination and the totals.
pub struct Sender<D: Destination> {
    opts: SendOptions,
    dest: D,
    /// Totals over all passes.
    pub summary: Summary,
    metrics: Metrics,
    /// Directories marked in this run, and when.
    marked: Vec<(std::time::Instant, PathBuf)>,
    /// The "no Tstat directory here" warning was given.
    warned_empty: bool,
    /// Directories shipped in full without a record (`-N`), which later
    /// passes skip.
    printed: std::collections::HashSet<PathBuf>,
    /// Directories a follow-mode notice was given for.
    noted: std::collections::HashSet<PathBuf>,
    /// The "several directories are being written" notice was given.
    noted_several: bool,
    /// Where fresh streams of the tree get their generation.
    generations: crate::resume::Generations,
    /// The tree's Tstat directories, walked fully only when needed.
    tree: find::TreeWatch,
    /// Why each directory left unmarked was, as said (said again only
    /// when the cause changes).
    said: std::collections::HashMap<PathBuf, String>,
    /// Directories whose failure the current pass said.
    said_in_pass: usize,
}

/// What shipping one directory gave.
enum DirResult {
    /// Done (marked, or printed); `had_data` when it yielded messages.
    Done { had_data: bool },
    /// Left unmarked because a log could not be read completely.
    DataError,
    /// Left unmarked because its progress record does not describe it.
    Refused,
}

impl<D: Destination> Sender<D> {
    /// A sender to `dest`; nothing is connected or read yet.
    pub fn new(opts: SendOptions, dest: D) -> Sender<D> {
        // Without --follow every pass walks the whole tree.
        let follow_full_walk = match opts.follow {
            Some(_) => FOLLOW_FULL_WALK,
            None => Duration::ZERO,
        };
        let tree = find::TreeWatch::new(&opts.root, follow_full_walk);
        let mut metrics = Metrics::default();
        if let Some(p) = &opts.metrics_file {
            metrics.last_success = Metrics::previous_success(p).unwrap_or(0.0);
        }
        Sender {
            dest,
            summary: Summary::default(),
            metrics,
            marked: Vec::new(),
            warned_empty: false,
            noted: Default::default(),
            noted_several: false,
            printed: Default::default(),
            generations: crate::resume::Generations::of_tree(&opts.root),
            tree,
            said: Default::default(),
            said_in_pass: 0,
            opts,
        }
    }

    /// Runs one pass, or passes every `watch` interval until `shutdown`.
    /// In watch mode a failed pass is reported and the next pass retries.
    pub async fn run(&mut self, shutdown: &Shutdown) -> Result<(), SendError> {
        loop {
            let started = Instant::now();
            self.said_in_pass = 0;
            let result = self.pass(shutdown).await;
            self.metrics.last_run_seconds = started.elapsed().as_secs_f64();
            // Directories failed again for causes already said: no new
            // error line, no new count.
            let repeated = matches!(&result, Err(SendError::Data { .. })) && self.said_in_pass == 0;
            match &result {
                Ok(()) => {
                    self.metrics.last_success = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64())
                }
                // A requested stop is no failure (it is how --follow ends).
                Err(SendError::Interrupted { .. }) => {}
                Err(_) if repeated => {}
                Err(_) => self.metrics.errors += 1,
            }
            // A metrics problem is reported, but a failed pass decides the
            // outcome: its cause is what the operator must see.
            let result = match (self.write_metrics(), result) {
                (Ok(()), r) => r,
                (Err(m), Ok(())) => Err(m),
                (Err(m), Err(e)) => {
                    self.opts.reporter.error(&m);
                    Err(e)
                }
            };
            let Some(mut interval) = self.opts.watch.or(self.opts.follow.map(|_| FOLLOW_PASS))
            else {
                return result;
            };
            // Following, a pass the broker or the tree failed is not tried
            // again every second (a directory that failed on its own data
            // does not hold up the next live directory).
            if self.opts.watch.is_none()
                && matches!(&result, Err(e) if !matches!(e, SendError::Data { .. }))
            {
                interval = FOLLOW_RETRY;
            }
            match result {
                Err(e @ SendError::Interrupted { .. }) => return Err(e),
                Err(e) if e.is_broken_pipe() => return Err(e),
                // The queue is gone with what it held and is never
                // re-created by this run: every later pass would fail the
                // same way. The run ends (exit 1) so that its supervisor's
                // restart policy applies; the next run creates the queue.
                Err(e @ SendError::QueueLost { .. }) => return Err(e),
                Err(_) if repeated => {}
                Err(e) => self.opts.reporter.error(&format_args!(
                    "{e} (next pass in {} s)",
                    interval.as_secs_f64()
                )),
                Ok(()) => {}
            }
            if shutdown.is_triggered() {
                return Ok(());
            }
            let reporter = self.opts.reporter.clone();
            // Following, passes are a second apart: no spinner for that.
            let _waiting = self.opts.follow.is_none().then(|| {
                reporter.report(Event::Progress(Progress::Waiting {
                    text: &format_args!(
                        "waiting {} s for the next pass; so far {}",
                        interval.as_secs_f64(),
                        self.summary.line(0.0, false)
                    ),
                }));
                Finally(&*reporter, Progress::WaitDone)
            });
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                () = shutdown.triggered() => {
                    return Ok(());
                }
            }
        }
    }

    /// Ends the run: closes the destination (its broker connection).
    pub async fn close(self) {
        self.dest.close().await;
    }

    fn write_metrics(&mut self) -> Result<(), SendError> {
        let Some(path) = &self.opts.metrics_file else {
            return Ok(());
        };
        self.metrics.totals = self.summary;
        self.metrics.stream = self.dest.stream_metrics();
        self.metrics.write(path).map_err(|source| SendError::Io {
            what: format!("writing metrics file {}", path.display()),
            source,
        })
    }

    async fn pass(&mut self, shutdown: &Shutdown) -> Result<(), SendError> {
        let mut find_opts = self.opts.find.clone();
        find_opts.now = SystemTime::now();
        let reporter = self.opts.reporter.clone();
        let mut walk_errors = 0usize;
        // Following, the tree is looked at every second: the watch walks
        // it fully only when it changed (not once per processed directory).
        let found = self.tree.tstat_dirs(&mut |e| {
            walk_errors += 1;
            reporter.error(&e);
        });
        let following = self.opts.follow.is_some();
        let live = match following {
            true => follow::live_among(&found),
            false => Vec::new(),
        };
        let any = !found.is_empty();
        let dirs = find::ready_among(found, &find_opts, |e| {
            walk_errors += 1;
            reporter.error(&e);
        });
        tracing::info!(
            "{} ready director{}",
            dirs.len(),
            if dirs.len() == 1 { "y" } else { "ies" }
        );
        if dirs.is_empty() && !self.warned_empty {
            // A mistyped -d would otherwise ship nothing, quietly, for ever.
            if !any {
                self.warned_empty = true;
                reporter.warning(&format_args!(
                    "{} holds no Tstat directory (NAME.out with log_tcp_complete or \
                     log_udp_complete): is -d the directory Tstat writes into? \
                     (tstat_send --check looks at everything)",
                    self.opts.root.display()
                ));
            }
        }
        let reship = !self.opts.reship.is_empty();
        // A re-shipped directory Tstat is still writing goes back to the
        // follower instead of being shipped and marked half-written.
        let ready: std::collections::HashSet<PathBuf> = if reship {
            dirs.iter().filter_map(|d| d.canonicalize().ok()).collect()
        } else {
            Default::default()
        };
        let dirs = if reship {
            self.opts.reship.clone()
        } else {
            // -N marks nothing: a later pass must not print a directory again.
            dirs.into_iter()
                .filter(|d| !self.printed.contains(d))
                .collect()
        };
        // Said above, each time.
        self.said_in_pass += walk_errors;
        let mut data_errors = walk_errors;
        let mut refused = 0;
        // Sizes only for a bar on screen: no extra stat per directory else.
        let sizes: Vec<u64> = if reporter.shows_progress() {
            dirs.iter().map(|d| logs_size(d)).collect()
        } else {
            vec![0; dirs.len()]
        };
        reporter.report(Event::Progress(Progress::PassStarted {
            dirs: dirs.len(),
            bytes: sizes.iter().sum(),
        }));
        let _pass = Finally(&*reporter, Progress::PassDone);
        for (i, dir) in dirs.iter().enumerate() {
            if shutdown.is_triggered() {
                break;
            }
            reporter.report(Event::Progress(Progress::DirStarted {
                index: i,
                name: &self.id_name(dir),
            }));
            let live = reship && !dir.canonicalize().is_ok_and(|d| ready.contains(&d));
            let shipped = self.ship(dir, shutdown, reship, live).await;
            reporter.report(Event::Progress(Progress::DirDone { bytes: sizes[i] }));
            match shipped? {
                DirResult::Done { had_data } => {
                    if had_data && self.opts.single {
                        break;
                    }
                }
                DirResult::DataError => data_errors += 1,
                DirResult::Refused => refused += 1,
            }
        }
        // Shipping took a while: Tstat may have rotated meanwhile.
        let live = match following && !dirs.is_empty() {
            true => follow::live_among(&self.tree.tstat_dirs(&mut |_| {})),
            false => live,
        };
        if following
            && !shutdown.is_triggered()
            && let Some(dir) = self.live_dir(live)
        {
            reporter.report(Event::Progress(Progress::DirStarted {
                index: dirs.len().saturating_sub(1),
                name: &self.id_name(&dir),
            }));
            match self.ship(&dir, shutdown, false, true).await? {
                DirResult::DataError => data_errors += 1,
                DirResult::Refused => refused += 1,
                DirResult::Done { .. } => {}
            }
        }
        if data_errors + refused > 0 {
            return Err(SendError::Data {
                count: data_errors + refused,
                refused,
            });
        }
        Ok(())
    }

    /// The directory to follow (design §12): the newest one Tstat may still
    /// be writing, unless it cannot be followed (said once).
    fn live_dir(&mut self, live: Vec<PathBuf>) -> Option<PathBuf> {
        let dir = follow::newest_live(
            live,
            " (run one tstat_send --follow per Tstat output directory)",
            &*self.opts.reporter,
            &mut self.noted_several,
        )?;
        if let Err(gz) = follow::live_logs(&dir) {
            if self.noted.insert(dir.clone()) {
                self.opts.reporter.warning(&format_args!(
                    "{}: a gzipped log (tstat -Z) cannot be read while it is written; \
                     the directory is shipped when Tstat rotates",
                    gz.display()
                ));
            }
            return None;
        }
        if let Ok(Some(rec)) = crate::resume::load(&dir.join(PROGRESS_FILE))
            && rec.next.follow.is_none()
        {
            if self.noted.insert(dir.clone()) {
                self.opts.reporter.warning(&format_args!(
                    "{}: a run without --follow began shipping it; it is shipped when Tstat \
                     rotates",
                    dir.display()
                ));
            }
            return None;
        }
        Some(dir)
    }

    /// The settings that shape a directory's stream (design §8.7), by name.
    fn settings(&self, id_prefix: &str) -> BTreeMap<String, String> {
        let p = &self.opts.parse;
        resume::settings([
            ("threshold", Some(p.threshold.to_string())),
            ("chunk_size", Some(self.opts.chunk_size.to_string())),
            ("max_bytes", Some(self.opts.max_bytes.to_string())),
            ("sensor", Some(p.sensor.clone())),
            ("instance", p.instance.clone()),
            ("legacy_udp_duration", Some(p.legacy_udp.to_string())),
            ("document", Some(flow::DOCUMENT_VERSION.to_string())),
            ("message_id_prefix", Some(id_prefix.to_string())),
        ])
    }

    /// A directory's message id prefix, `SENSOR@TREE:NAME`: with the tree's
    /// identity no two trees of one host share an id. A directory begun by
    /// a version without it (`SENSOR:NAME` in its record) keeps its prefix
    /// until it is marked, so its resume stays exact.
    fn id_base(&self, dir: &Path, name: &str, reship: bool) -> String {
        let sensor = &self.opts.parse.sensor;
        if !reship && let Ok(Some(rec)) = crate::resume::load(&dir.join(PROGRESS_FILE)) {
            let legacy = format!("{sensor}:{name}");
            if rec.settings.get("message_id_prefix") == Some(&legacy) {
                return legacy;
            }
        }
        crate::identity::message_id_base(sensor, &self.opts.tree, name)
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

    /// Reports a directory left unmarked for a reason of its own, once per
    /// cause: passes a second apart (`--follow`) meet the same cause again
    /// until it changes or the directory is marked.
    fn refuse(&mut self, dir: &Path, why: impl std::fmt::Display) -> DirResult {
        let why = why.to_string();
        if self.said.get(dir) != Some(&why) {
            self.opts
                .reporter
                .error(&format_args!("{}: not marked: {why}", dir.display()));
            self.said.insert(dir.to_path_buf(), why);
            self.said_in_pass += 1;
        }
        DirResult::DataError
    }

    /// Reports a directory its progress record refuses (counted apart from
    /// log errors: the fix is another), counted once per cause in
    /// `directories_refused_total`.
    fn refuse_record(&mut self, dir: &Path, why: impl std::fmt::Display) -> DirResult {
        let said = self.said_in_pass;
        self.refuse(dir, why);
        if self.said_in_pass > said {
            self.metrics.refused += 1;
        }
        DirResult::Refused
    }
}

/// Reports a progress step when dropped: a pass or a wait is over however it
/// ends.
struct Finally<'a>(&'a dyn Reporter, Progress<'static>);

impl Drop for Finally<'_> {
    fn drop(&mut self) {
        self.0.report(Event::Progress(self.1));
    }
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
