//! The command lines of the programs (clap derive structs), one per program.
//!
//! They live in the library, not in `src/bin/`, so that the man pages and
//! shell completions (`examples/gen-docs.rs`, design §13.2) are generated from
//! the very definitions the programs parse with. This module only describes
//! flags and their help; turning them into typed options is each program's
//! job, and nothing here reads files or talks to a broker.

use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;

use crate::cli::{self, runtime};
use crate::{chunk, cull, find};

/// Where every key of the config file is explained, from a source tree and
/// from the Debian package.
const CONFIG_DOC: &str = "\
config.ini.example explains every key of config.ini (in the source tree, or
/usr/share/doc/tstat-transport/config.ini.example from the Debian package).";

const FIND_AFTER: &str = "\
Examples:
  tstat-find /var/lib/tstat                       # finished directories, oldest first
  tstat-find --all /var/lib/tstat | tstat-parse   # every directory not yet processed
  tstat-find --mark /var/lib/tstat/2026_03_01_00_00.out

Exit status:
  0  everything could be examined (or marked)
  1  a path could not be read or marked (the others are still listed)
  2  usage error

See also: tstat_send(1), which runs the whole job.
";

const PARSE_AFTER: &str = "\
Examples:
  tstat-parse --bytes 0 /var/lib/tstat/2026_03_01_00_00.out | jq .
  tstat-find /var/lib/tstat | tstat-parse -S sensor1 | tstat-chunk
  tstat-find --all /var/lib/tstat | tstat-parse   # a whole tree (tstat-parse reads directories, not trees)
  zcat old/log_udp_complete.gz | tstat-parse --protocol udp -
  tstat-parse --follow -b 0 /var/lib/tstat | jq .   # flows as Tstat writes them, across rotations

Exit status:
  0    every input was read completely (malformed rows are skipped and counted, not errors);
       with --follow: Tstat rotated away from the followed directory or log
  1    an input could not be read, has no usable header, or is a truncated .gz
       (with --follow: a gzipped log, which cannot be followed)
  2    usage error
  130  --follow interrupted by SIGINT, 143 by SIGTERM (what was parsed is printed)
A closed stdout (tstat-parse … | head) ends it quietly with status 0.

See also: tstat-find(1), tstat-chunk(1), tstat_send(1).
";

const CHUNK_AFTER: &str = "\
Examples:
  tstat-parse DIR | tstat-chunk | tstat-rabbit -c config.ini
  tstat-parse DIR | tstat-chunk --size 500 --max-bytes 4Mi

Exit status:
  0  ok
  1  an input line is not a JSON object (the arrays before it are written)
  2  usage error

See also: tstat-parse(1), tstat-rabbit(1).
";

const CULL_AFTER: &str = "\
Examples:
  tstat-cull -d /var/lib/tstat -D          # what would be removed
  tstat-cull -d /var/lib/tstat -t 168 -v   # keep processed directories for a week

Exit status:
  0  everything could be examined and every due removal succeeded
  1  a path could not be read or removed (the others are still handled)
  2  usage error

Short flags are the original tool's: -t is --ttl and -D is --dry-run here,
while in tstat_send -t is --transport and -D is --debug.

See also: tstat_send(1).
";

const RABBIT_AFTER: &str = "\
Examples:
  tstat-parse DIR | tstat-chunk | tstat-rabbit -c config.ini
  tstat-parse DIR | tstat-chunk | tstat-rabbit -c config.ini --message-id-prefix sensor1:DIR --progress DIR/.progress
  tstat_send --check -d /var/lib/tstat -c config.ini   # check the config and the broker, send nothing

Exit status:
  0    every line was confirmed by the broker
  1    a message was nacked, unroutable or unconfirmed after the retries, or the
       broker could not be reached (with --progress, a re-run resumes)
  2    usage or config error (nothing was sent)
  3    the --progress record is not this input's (nothing sent; --reship sends it anyway)
  130  interrupted by SIGINT, 143 by SIGTERM (with --progress, progress saved)

See also: tstat_send(1), tstat-chunk(1).
";

const CONSUME_AFTER: &str = "\
Examples:
  tstat-consume -c config.ini --idle-exit 5 | jq .              # take what the queue holds, stop when empty
  tstat-consume -c config.ini --count 1 --arrays                # one message, as published
  tstat-consume -c stream.ini --name analyst1 --idle-exit 10    # a stream, from where analyst1 stopped
  tstat-consume -c stream.ini --from 2026-03-01T12:00:00Z --idle-exit 5 > flows.ndjson
  tstat-consume -c stream.ini --arrays --name bridge | tstat-rabbit -c queue.ini   # stream into a queue

A queue message is acknowledged only after its documents are flushed to stdout:
a crash repeats messages, never loses one (--dedupe drops the repeats it sees).
--from takes first, last, next, an offset (a number) or an RFC 3339 time.

Exit status:
  0    --count messages written, --idle-exit reached, or stdout closed (... | head;
       only what was written is acknowledged)
  1    the broker could not be reached or stayed away longer than the retries, the
       queue or stream does not exist, or a message is not a JSON array (it is named
       and not acknowledged)
  2    usage or config error
  130  interrupted by SIGINT, 143 by SIGTERM (what was written is acknowledged)

See also: tstat-rabbit(1), tstat_send(1).
";

const SEND_AFTER: &str = "\
Examples:
  tstat_send -d /var/lib/tstat -c /etc/tstat-transport/config.ini
  tstat_send -d /var/lib/tstat -N --bytes 0 | head -1 | jq .   # look, ship and mark nothing
  tstat_send -d /var/lib/tstat --all -v                        # a backfill, the live directory too
  tstat_send -d /var/lib/tstat --watch 600 --metrics-file /var/lib/tstat-transport/tstat_send.prom
  tstat_send -d /var/lib/tstat --follow                        # rows a few seconds after Tstat writes them

Exit status:
  0    every ready directory was shipped and marked
  1    a directory failed (it stays unmarked; the next run resumes it) or the
       broker failed
  2    usage or config error (nothing was read or sent)
  75   another tstat_send holds the tree's lock (nothing touched; try later)
  130  interrupted by SIGINT, 143 by SIGTERM (progress saved, nothing marked;
       the usual end of --watch and --follow)

Short flags are the original tool's: -t is --transport and -D is --debug here,
while in tstat-cull -t is --ttl and -D is --dry-run.

See also: tstat-find(1), tstat-cull(1), tstat_send.sh (the same job as a pipeline).
";

fn after(text: &str) -> String {
    format!("{text}{CONFIG_DOC}")
}

/// List finished Tstat log directories, oldest first.
///
/// A directory is listed when it is not done (holds no .processed) and Tstat
/// has rotated away from it (a later tstat directory exists beside it) or
/// none of its log files was modified for --settle seconds.
#[derive(Debug, clap::Parser)]
#[command(name = "tstat-find", version, after_help = after(FIND_AFTER))]
pub struct FindCli {
    /// List every directory that is not done, ignoring --settle and rotation.
    #[arg(long)]
    pub all: bool,

    /// Also list directories that are done (hold .processed).
    #[arg(long)]
    pub include_done: bool,

    /// Quiet time after which a directory without a newer sibling is finished.
    #[arg(long, value_name = "SECONDS", default_value_t = find::DEFAULT_SETTLE.as_secs())]
    pub settle: u64,

    /// Terminate each path with NUL instead of a newline.
    #[arg(short = '0', long)]
    pub null: bool,

    /// Mark the given tstat directories done (write DIR/.processed
    /// atomically) instead of listing.
    #[arg(long, conflicts_with_all = ["all", "include_done", "settle", "null"])]
    pub mark: bool,

    /// Print each ROOT's identity (eight hex digits of the CRC-32 of its
    /// canonical path), as tstat_send puts it in message ids
    /// (SENSOR@TREE:DIR:INDEX) and stream producer names, instead of listing.
    #[arg(long, conflicts_with_all = ["all", "include_done", "settle", "mark"])]
    pub tree_id: bool,

    /// Directories to search (with --mark: the tstat directories to mark).
    #[arg(value_name = "ROOT|DIR", required = true, value_hint = clap::ValueHint::DirPath)]
    pub paths: Vec<PathBuf>,
}

/// Turn Tstat log rows into flow documents, one JSON object per line.
///
/// Each PATH is a tstat directory (its log_tcp_complete, then its
/// log_udp_complete, plain or .gz) or a single log file; `-` reads a log from
/// stdin (with --protocol). Without PATHs, directory paths are read from stdin,
/// one per line (or NUL-terminated with -0), as bytes, so
/// `tstat-find ROOT | tstat-parse` works with any directory name.
///
/// TSTAT_PARSE_THREADS=N sets the number of worker threads for large files
/// (default: the number of cores).
#[derive(clap::Parser, Debug)]
#[command(name = "tstat-parse", version, after_help = after(PARSE_AFTER))]
pub struct ParseCli {
    /// Tstat directories or log files.
    #[arg(value_hint = clap::ValueHint::AnyPath)]
    pub paths: Vec<PathBuf>,
    /// The document flags shared with the other programs.
    #[command(flatten)]
    pub doc: DocArgs,
    /// Protocol of a log file whose name does not tell (or of stdin `-`).
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Report every skipped row with its file and line number.
    #[arg(short, long)]
    pub verbose: bool,
    /// Paths on stdin end with NUL instead of a newline (`tstat-find -0`).
    #[arg(short = '0', long, conflicts_with = "paths")]
    pub null: bool,
    /// Keep printing documents as Tstat writes rows, like `tail -f` (one
    /// PATH). A Tstat directory or a log is followed until Tstat rotates to
    /// a newer directory (then read to its end); a tree (a directory that
    /// is not a Tstat directory) as with --tree. A row is printed once its
    /// line is complete; Ctrl-C stops.
    #[arg(long, conflicts_with = "null")]
    pub follow: bool,
    /// Follow the newest Tstat directory below ROOT and, each time Tstat
    /// rotates, the next one, until stopped (implies --follow).
    #[arg(long, value_name = "ROOT", conflicts_with_all = ["paths", "null"], value_hint = clap::ValueHint::DirPath)]
    pub tree: Option<PathBuf>,
}

impl ParseCli {
    /// What `--follow`/`--tree` asks for: the one path to follow and whether
    /// it must be a tree; `None` without them; a usage error when the paths
    /// do not fit (none, several, stdin).
    pub fn follow_path(&self) -> Result<Option<(PathBuf, bool)>, String> {
        if let Some(root) = &self.tree {
            return Ok(Some((root.clone(), true)));
        }
        if !self.follow {
            return Ok(None);
        }
        match &self.paths[..] {
            [] => Err("--follow needs a Tstat directory, a log file or a tree to follow".into()),
            [p] if p.as_os_str() == "-" => {
                Err("--follow reads a Tstat directory or log file, not stdin ('-')".into())
            }
            [p] => Ok(Some((p.clone(), false))),
            more => Err(format!(
                "--follow follows one path, got {}; run one tstat-parse --follow per path",
                more.len()
            )),
        }
    }
}

/// What the flow documents carry and which flows are kept: the flags
/// `tstat-parse` and `tstat_send` share.
#[derive(clap::Args, Debug, Clone)]
pub struct DocArgs {
    /// Keep flows of at least this many bytes: 1000, 25G, 25Gb, 1.5G, 10GiB …
    /// [default: 25Gb]
    #[arg(short = 'b', long, value_name = "N", value_parser = cli::bytes_arg, conflicts_with = "threshold")]
    pub bytes: Option<u64>,
    /// Keep flows of at least this many megabytes (10^6 bytes).
    #[arg(short = 'T', long, value_name = "MB", value_parser = cli::megabytes_arg)]
    pub threshold: Option<u64>,
    /// Sensor id in every document [default: the host name].
    #[arg(short = 'S', long, value_name = "ID")]
    pub sensor: Option<String>,
    /// Instance id (a JSON string when given; the integer 0 otherwise).
    #[arg(short = 'I', long, value_name = "ID")]
    pub instance: Option<String>,
    /// Reproduce the original tool's UDP durations (1000× too small).
    #[arg(long)]
    pub legacy_udp_duration: bool,
}

impl DocArgs {
    /// The byte threshold these flags give (default 25 GB).
    pub fn threshold_bytes(&self) -> u64 {
        self.threshold
            .or(self.bytes)
            .unwrap_or(crate::bytesize::DEFAULT_BYTES)
    }

    /// The sensor id (default: the host name).
    pub fn sensor_id(&self) -> String {
        self.sensor.clone().unwrap_or_else(cli::hostname)
    }
}

/// The protocol of a log given as `--protocol`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    /// A log_tcp_complete.
    Tcp,
    /// A log_udp_complete.
    Udp,
}

/// Group NDJSON objects from stdin into JSON arrays, one compact array per line.
#[derive(clap::Parser, Debug)]
#[command(name = "tstat-chunk", version, after_help = after(CHUNK_AFTER))]
pub struct ChunkCli {
    /// Objects per array.
    #[arg(short = 'n', long, default_value_t = chunk::DEFAULT_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub size: u64,
    /// Largest array in bytes (K, M, Ki, Mi … suffixes accepted).
    #[arg(long, value_name = "BYTES", default_value = "8Mi", value_parser = cli::bytes_arg)]
    pub max_bytes: u64,
}

/// Remove processed Tstat log directories older than a TTL.
///
/// Only a tstat directory holding a .processed file older than the TTL is
/// removed; symbolic links are never followed.
#[derive(Debug, clap::Parser)]
#[command(name = "tstat-cull", version, after_help = after(CULL_AFTER))]
pub struct CullCli {
    /// The tstat tree to clean.
    #[arg(short = 'd', long, value_name = "ROOT", value_hint = clap::ValueHint::DirPath)]
    pub directory: PathBuf,

    /// Keep processed directories for this many hours (fractions allowed).
    #[arg(short = 't', long, value_name = "HOURS", default_value = "48",
          value_parser = cull::parse_ttl_hours, allow_negative_numbers = true)]
    pub ttl: Duration,

    /// Print what would be removed, remove nothing.
    #[arg(short = 'D', long)]
    pub dry_run: bool,

    /// Print a summary on stderr at the end.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Publish one message per stdin line to RabbitMQ and wait for every confirm.
#[derive(clap::Parser, Debug)]
#[command(name = "tstat-rabbit", version, after_help = after(RABBIT_AFTER))]
pub struct RabbitCli {
    /// The config.ini with the [rabbit] section.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: PathBuf,
    /// The publisher's flags shared by tstat-rabbit and tstat_send.
    #[command(flatten)]
    pub publish: runtime::PublishArgs,
    /// Give each message the id PREFIX:INDEX (INDEX = 0-based line number).
    #[arg(long, value_name = "PREFIX")]
    pub message_id_prefix: Option<String>,
    /// Keep the progress record here: confirmed lines are skipped on start,
    /// after checking they are the lines that were sent.
    #[arg(long, value_name = "FILE")]
    pub progress: Option<PathBuf>,
    /// What the input is made of (settings, log identities): stored in the
    /// progress record, which is refused when it differs.
    #[arg(long, value_name = "TEXT", requires = "progress")]
    pub fingerprint: Option<String>,
    /// Start over under new message ids (PREFIX~GEN:INDEX), whatever the
    /// progress record says.
    #[arg(long, requires = "progress")]
    pub reship: bool,
    /// Keep the last generation given here (and take the next above it), so
    /// that two re-ships never share a generation even after the progress
    /// record was removed (tstat_send.sh: ROOT/.tstat_send.generation).
    #[arg(long, value_name = "FILE", requires = "progress")]
    pub generations: Option<PathBuf>,
    /// Print the checked config (password hidden), connections and a summary.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

/// Read flow documents back from the configured queue or stream, as NDJSON on stdout.
///
/// The inverse of tstat-rabbit: each message's JSON array becomes one line
/// per document (with --arrays, the array itself on one line). Without
/// --count or --idle-exit it runs until stopped.
#[derive(clap::Parser, Debug)]
#[command(name = "tstat-consume", version, after_help = after(CONSUME_AFTER))]
pub struct ConsumeCli {
    /// The config.ini with the [rabbit] section (its queue, or its stream
    /// with transport = stream).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: PathBuf,
    /// Write each message's array on one line, as published, instead of one
    /// document per line (input for tstat-rabbit).
    #[arg(long)]
    pub arrays: bool,
    /// Stop after N messages written (not documents: an array is never cut).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop when no message came for SECONDS.
    #[arg(long, value_name = "SECONDS", value_parser = runtime::seconds)]
    pub idle_exit: Option<Duration>,
    /// Messages read ahead of what is written (a queue's basic.qos window);
    /// bounds memory.
    #[arg(long, value_name = "N", default_value_t = crate::consume::DEFAULT_PREFETCH,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Drop a message whose message id is among the last N written (0: off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub dedupe: usize,
    /// Skip (and acknowledge) a message that is not a JSON array, with a
    /// warning naming it, instead of stopping with an error.
    #[arg(long)]
    pub skip_bad: bool,
    /// Stream: start at first, last, next, an OFFSET or an RFC 3339 time
    /// (2026-03-01T12:00:00Z). Default: after the offset stored under
    /// --name, else first.
    #[arg(long, value_name = "WHERE")]
    pub from: Option<crate::consume::Start>,
    /// Stream: store the offset reached under NAME on the broker (after
    /// writing), and start after it next time.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Reconnects after a lost connection without progress before giving up.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Seconds allowed to connect to one host (TCP, TLS, login).
    #[arg(long, value_name = "S", default_value = "10", value_parser = runtime::seconds)]
    pub connect_timeout: Duration,
    /// AMQP heartbeat interval in whole seconds (0: off).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub heartbeat: u16,
    /// Print the checked config, connections and each repeat dropped.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// No summary line.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Ship every finished Tstat directory under DIRECTORY to RabbitMQ, exactly once.
#[derive(clap::Parser, Debug)]
#[command(name = "tstat_send", version, after_help = after(SEND_AFTER))]
pub struct SendCli {
    /// The Tstat output tree.
    #[arg(short = 'd', long, value_name = "ROOT")]
    pub directory: PathBuf,
    /// The config.ini with the [rabbit] section (not read with -N).
    #[arg(short = 'c', long, value_name = "FILE", default_value = "./config.ini")]
    pub config: PathBuf,
    /// The document flags shared with the other programs.
    #[command(flatten)]
    pub doc: DocArgs,
    /// Where arrays go.
    #[arg(short = 't', long, value_enum, default_value = "rabbit")]
    pub transport: TransportArg,
    /// Print the arrays on stdout and mark nothing (= --transport stdout).
    #[arg(short = 'N', long)]
    pub no_transport: bool,
    /// Stop after the first directory that yielded data.
    #[arg(short = 's', long)]
    pub single: bool,
    /// Ship every directory that is not done, even the one Tstat may still write.
    #[arg(long)]
    pub all: bool,
    /// Seconds without a write after which a directory without a newer sibling counts as finished.
    #[arg(long, value_name = "SECONDS", default_value_t = find::DEFAULT_SETTLE.as_secs())]
    pub settle: u64,
    /// Keep running: one pass every SECONDS, reusing the connection.
    #[arg(long, value_name = "SECONDS", value_parser = runtime::seconds)]
    pub watch: Option<Duration>,
    /// Keep running and also ship the directory Tstat is still writing: each
    /// complete row reaches the broker within --flush seconds plus about
    /// half a second and the broker's confirm time (about 2 s more just
    /// after a rotation); the directory is marked when Tstat rotates to the
    /// next.
    #[arg(long, conflicts_with_all = ["all", "single", "watch"])]
    pub follow: bool,
    /// With --follow: longest time a flow waits for its array to fill.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = runtime::seconds, requires = "follow")]
    pub flush: Duration,
    /// Ship these directories again from their start under new message ids,
    /// whatever their progress record says (after a refusal; flows confirmed
    /// before arrive a second time, under the new ids).
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with_all = ["watch", "follow", "no_transport", "single"])]
    pub reship: Vec<PathBuf>,
    /// Check everything a run needs (config, broker login and queue, the
    /// tree, metrics directory, lock) without shipping or marking anything;
    /// one line per check, exit 0 only when all pass.
    #[arg(long, conflicts_with_all = ["no_transport", "watch", "follow", "reship"])]
    pub check: bool,
    /// Write Prometheus metrics here after every pass (atomically).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Objects per message.
    #[arg(long, value_name = "N", default_value_t = chunk::DEFAULT_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_size: u64,
    /// Largest message in bytes (an array is sent earlier rather than grow
    /// past it; a row whose document alone is larger is skipped as malformed).
    #[arg(long, value_name = "N", default_value_t = chunk::DEFAULT_MAX_BYTES, value_parser = max_bytes_arg)]
    pub max_bytes: usize,
    /// The publisher's flags shared by tstat-rabbit and tstat_send.
    #[command(flatten)]
    pub publish: runtime::PublishArgs,
    /// Report each directory and connection.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Debug logging.
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// No summary line and no progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Where tstat_send sends the arrays (`--transport`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportArg {
    /// Publish to RabbitMQ.
    Rabbit,
    /// Print them on stdout (as -N).
    Stdout,
}

/// Every program's clap command, for generating man pages and completions.
pub fn commands() -> Vec<clap::Command> {
    vec![
        FindCli::command(),
        ParseCli::command(),
        ChunkCli::command(),
        RabbitCli::command(),
        ConsumeCli::command(),
        SendCli::command(),
        CullCli::command(),
    ]
}

/// A message size limit: at least 1 KiB, so a normal flow fits.
fn max_bytes_arg(s: &str) -> Result<usize, String> {
    let n = cli::bytes_arg(s)?;
    if n < 1024 {
        return Err(format!("at least 1024 bytes, got {n}"));
    }
    usize::try_from(n).map_err(|_| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn every_command_is_consistent_and_documents_exits() {
        for mut c in commands() {
            c.build();
            let name = c.get_name().to_string();
            c.clone().debug_assert();
            let help = c.render_long_help().to_string();
            for want in ["Examples:", "Exit status:", "config.ini.example"] {
                assert!(help.contains(want), "{name} --help lacks {want:?}");
            }
            // A line of --help that starts with a dash is an option line:
            // man pages and completions are checked against them.
            let longs: Vec<String> = c
                .get_arguments()
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .chain(["--help".into(), "--version".into()])
                .collect();
            for line in help.lines().map(str::trim_start) {
                if line.starts_with('-')
                    && let Some(word) = line.split([' ', ',', '=']).find(|w| w.starts_with("--"))
                {
                    assert!(
                        longs.iter().any(|l| l == word),
                        "{name} --help: {line:?} reads like an option line"
                    );
                }
            }
        }
    }

    #[test]
    fn find_defaults_and_flags() {
        let c = FindCli::try_parse_from(["tstat-find", "root"]).expect("parse");
        assert!(!c.all && !c.include_done && !c.null && !c.mark);
        assert_eq!(c.settle, 7200);
        assert_eq!(c.paths, [PathBuf::from("root")]);
        let c = FindCli::try_parse_from([
            "tstat-find",
            "--all",
            "--include-done",
            "--settle",
            "60",
            "-0",
            "a",
            "b",
        ])
        .expect("parse");
        assert!(c.all && c.include_done && c.null);
        assert_eq!(c.settle, 60);
        assert_eq!(c.paths.len(), 2);
        let c = FindCli::try_parse_from(["tstat-find", "--mark", "a.out", "b.out"]).expect("parse");
        assert!(c.mark);
        assert_eq!(c.paths.len(), 2);
    }

    #[test]
    fn find_usage_errors() {
        for args in [
            &["tstat-find"][..],
            &["tstat-find", "--settle", "-5", "r"],
            &["tstat-find", "--settle", "soon", "r"],
            &["tstat-find", "--mark", "--all", "a.out"],
            &["tstat-find", "--mark", "-0", "a.out"],
            &["tstat-find", "--mark"],
            &["tstat-find", "--bogus", "r"],
        ] {
            assert!(FindCli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn parse_flags() {
        let c = ParseCli::try_parse_from(["tstat-parse", "-b", "1.5G", "-S", "s", "-I", "1", "d"])
            .unwrap();
        assert_eq!(
            (
                c.doc.bytes,
                c.doc.sensor.as_deref(),
                c.doc.instance.as_deref()
            ),
            (Some(1_500_000_000), Some("s"), Some("1"))
        );
        assert!(ParseCli::try_parse_from(["tstat-parse", "-b", "1G", "-T", "5"]).is_err());
        assert!(ParseCli::try_parse_from(["tstat-parse", "--bytes", "12X"]).is_err());
        assert!(
            ParseCli::try_parse_from(["tstat-parse", "-0"])
                .unwrap()
                .null
        );
        assert!(ParseCli::try_parse_from(["tstat-parse", "-0", "d"]).is_err());
    }

    #[test]
    fn follow_takes_one_path_or_a_tree() {
        let follow = |args: &[&str]| {
            ParseCli::try_parse_from(args)
                .map_err(|e| e.kind())
                .map(|c| c.follow_path())
        };
        assert_eq!(
            follow(&["tstat-parse", "--follow", "-b", "0", "d"]),
            Ok(Ok(Some((PathBuf::from("d"), false))))
        );
        assert_eq!(
            follow(&["tstat-parse", "--tree", "r"]),
            Ok(Ok(Some((PathBuf::from("r"), true))))
        );
        assert_eq!(
            follow(&["tstat-parse", "--follow", "--tree", "r"]),
            Ok(Ok(Some((PathBuf::from("r"), true))))
        );
        assert_eq!(follow(&["tstat-parse", "d"]), Ok(Ok(None)));
        for args in [
            &["tstat-parse", "--follow"][..],
            &["tstat-parse", "--follow", "-"],
            &["tstat-parse", "--follow", "a", "b"],
        ] {
            assert!(matches!(follow(args), Ok(Err(_))), "{args:?}");
        }
        for args in [
            &["tstat-parse", "--follow", "-0"][..],
            &["tstat-parse", "--tree", "r", "d"],
            &["tstat-parse", "--tree", "r", "-0"],
        ] {
            assert!(follow(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn chunk_flags() {
        let c = ChunkCli::try_parse_from(["tstat-chunk"]).unwrap();
        assert_eq!((c.size, c.max_bytes), (100, 8 << 20));
        assert!(ChunkCli::try_parse_from(["tstat-chunk", "--size", "0"]).is_err());
    }

    #[test]
    fn cull_defaults_flags_and_errors() {
        let c = CullCli::try_parse_from(["tstat-cull", "-d", "r"]).expect("parse");
        assert_eq!(c.ttl, Duration::from_secs(48 * 3600));
        assert!(!c.dry_run && !c.verbose);
        let c =
            CullCli::try_parse_from(["tstat-cull", "--directory", "r", "-t", "1.5", "-D", "-v"])
                .expect("parse");
        assert_eq!(c.ttl, Duration::from_secs(5400));
        assert!(c.dry_run && c.verbose);
        for args in [
            &["tstat-cull"][..],
            &["tstat-cull", "-d", "r", "-t", "-1"],
            &["tstat-cull", "-d", "r", "-t", "two"],
            &["tstat-cull", "-d", "r", "extra"],
        ] {
            assert!(CullCli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn rabbit_flags() {
        let c = RabbitCli::try_parse_from(["tstat-rabbit", "-c", "x.ini"]).unwrap();
        assert_eq!(
            (
                c.publish.window.get(),
                c.publish.retries,
                c.publish.heartbeat
            ),
            (256, 5, 60)
        );
        assert!(
            RabbitCli::try_parse_from(["tstat-rabbit"]).is_err(),
            "-c is required"
        );
        assert!(RabbitCli::try_parse_from(["tstat-rabbit", "-c", "x", "--window", "0"]).is_err());
        assert!(
            RabbitCli::try_parse_from(["tstat-rabbit", "-c", "x", "--confirm-timeout", "0"])
                .is_err()
        );
    }

    #[test]
    fn consume_flags() {
        let c = ConsumeCli::try_parse_from(["tstat-consume", "-c", "x.ini"]).unwrap();
        assert_eq!((c.prefetch, c.dedupe, c.retries), (100, 0, 5));
        assert!(c.count.is_none() && c.idle_exit.is_none() && c.from.is_none());
        let c = ConsumeCli::try_parse_from([
            "tstat-consume",
            "-c",
            "x.ini",
            "--from",
            "2026-03-01T12:00:00Z",
            "--name",
            "me",
            "--idle-exit",
            "0.5",
            "--count",
            "3",
        ])
        .unwrap();
        assert_eq!(c.from, Some(crate::consume::Start::Time(1_772_366_400_000)));
        assert_eq!(c.idle_exit, Some(Duration::from_millis(500)));
        for args in [
            &["tstat-consume"][..],
            &["tstat-consume", "-c", "x", "--count", "0"],
            &["tstat-consume", "-c", "x", "--prefetch", "0"],
            &["tstat-consume", "-c", "x", "--from", "soon"],
            &["tstat-consume", "-c", "x", "-q", "-v"],
        ] {
            assert!(ConsumeCli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn send_flags() {
        let c = SendCli::try_parse_from(["tstat_send", "-d", "r"]).unwrap();
        assert_eq!(
            (c.doc.bytes, c.settle, c.publish.window.get()),
            (None, 7200, 256)
        );
        assert_eq!(c.config, PathBuf::from("./config.ini"));
        let c = SendCli::try_parse_from([
            "tstat_send",
            "-d",
            "r",
            "-N",
            "-s",
            "--watch",
            "0.5",
            "--confirm-timeout",
            "3",
        ])
        .unwrap();
        assert!(c.no_transport && c.single);
        assert_eq!(
            (c.watch, c.publish.confirm_timeout),
            (Some(Duration::from_millis(500)), Duration::from_secs(3))
        );
        assert!(
            SendCli::try_parse_from(["tstat_send"]).is_err(),
            "-d is required"
        );
        assert!(SendCli::try_parse_from(["tstat_send", "-d", "r", "--watch", "-1"]).is_err());
    }

    #[test]
    fn original_short_flags_keep_their_meaning_in_each_program() {
        // design §8.1 and §11: -t and -D differ between tstat_send and tstat-cull.
        let c = SendCli::try_parse_from(["tstat_send", "-d", "r", "-t", "stdout", "-D"]).unwrap();
        assert_eq!(c.transport, TransportArg::Stdout);
        assert!(c.debug);
        let c = CullCli::try_parse_from(["tstat-cull", "-d", "r", "-t", "2", "-D"]).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(7200));
        assert!(c.dry_run);
    }
}
