//! `tstat_send`: the standard job in one process (SPEC §8): find the ready
//! directories, parse, keep the big flows, batch them and publish them with
//! confirms, then mark each directory `.processed`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tstat_transport::cli;
use tstat_transport::find::{DEFAULT_SETTLE, FindOptions};
use tstat_transport::parse::ParseOptions;
use tstat_transport::send::{SendError, SendOptions, Sender, Transport};
use tstat_transport::{bytesize, chunk, find, lock, resume, runtime};

const PROG: &str = "tstat_send";

/// Ship every finished Tstat directory under DIRECTORY to RabbitMQ, exactly once.
#[derive(clap::Parser, Debug)]
#[command(name = PROG, version)]
struct Cli {
    /// The Tstat output tree.
    #[arg(short = 'd', long, value_name = "ROOT")]
    directory: PathBuf,
    /// The config.ini with the [rabbit] section (not read with -N).
    #[arg(short = 'c', long, value_name = "FILE", default_value = "./config.ini")]
    config: PathBuf,
    /// Keep flows of at least this many bytes (25G, 1.5G, 10GiB, 0 …) [default: 25Gb].
    #[arg(short = 'b', long, value_name = "N", value_parser = cli::bytes_arg, conflicts_with = "threshold")]
    bytes: Option<u64>,
    /// Keep flows of at least this many megabytes (10^6 bytes).
    #[arg(short = 'T', long, value_name = "MB", value_parser = cli::megabytes_arg)]
    threshold: Option<u64>,
    /// Where arrays go.
    #[arg(short = 't', long, value_enum, default_value = "rabbit")]
    transport: TransportArg,
    /// Print the arrays on stdout and mark nothing (= --transport stdout).
    #[arg(short = 'N', long)]
    no_transport: bool,
    /// Stop after the first directory that yielded data.
    #[arg(short = 's', long)]
    single: bool,
    /// Sensor id [default: the host name].
    #[arg(short = 'S', long, value_name = "ID")]
    sensor: Option<String>,
    /// Instance id (a JSON string when given; the integer 0 otherwise).
    #[arg(short = 'I', long, value_name = "ID")]
    instance: Option<String>,
    /// Reproduce the original tool's UDP durations (1000× too small).
    #[arg(long)]
    legacy_udp_duration: bool,
    /// Ship every directory that is not done, even the one Tstat may still write.
    #[arg(long)]
    all: bool,
    /// Seconds without a write after which a directory without a newer sibling counts as finished.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SETTLE.as_secs())]
    settle: u64,
    /// Keep running: one pass every SECONDS, reusing the connection.
    #[arg(long, value_name = "SECONDS", value_parser = runtime::seconds)]
    watch: Option<Duration>,
    /// Ship these directories again from their start under new message ids,
    /// whatever their progress record says (after a refusal; flows confirmed
    /// before arrive a second time, under the new ids).
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with_all = ["watch", "no_transport", "single"])]
    reship: Vec<PathBuf>,
    /// Write Prometheus metrics here after every pass (atomically).
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// Objects per message.
    #[arg(long, value_name = "N", default_value_t = chunk::DEFAULT_SIZE as u64, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_size: u64,
    #[command(flatten)]
    publish: runtime::PublishArgs,
    /// Report each directory and connection.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Debug logging.
    #[arg(short = 'D', long)]
    debug: bool,
    /// No summary line and no progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TransportArg {
    Rabbit,
    Stdout,
}

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime::init_logging(cli.verbose, cli.debug);
    if !cli.directory.is_dir() {
        return cli::usage_error(
            PROG,
            format!("{}: not a directory", cli.directory.display()),
        );
    }
    let sensor = cli.sensor.clone().unwrap_or_else(cli::hostname);
    // SENSOR:DIRNAME:INDEX must fit in an AMQP short string.
    if let Err(e) = resume::check_id_prefix(&format!("{sensor}:d")) {
        return cli::usage_error(PROG, format!("-S/--sensor: {e}"));
    }
    let stdout = cli.no_transport || cli.transport == TransportArg::Stdout;
    if stdout && !cli.reship.is_empty() {
        return cli::usage_error(PROG, "--reship needs the rabbit transport");
    }
    for d in &cli.reship {
        if let Err(why) = reship_target(&cli.directory, d) {
            return cli::usage_error(PROG, format!("--reship {}: {why}", d.display()));
        }
    }
    let transport = if stdout {
        Transport::Stdout
    } else {
        let config = match runtime::load_config(PROG, &cli.config, cli.verbose) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let publish = cli.publish.options(PROG, cli.verbose);
        Transport::Rabbit {
            config: Box::new(config),
            publish,
        }
    };
    let opts = SendOptions {
        root: cli.directory,
        find: FindOptions {
            all: cli.all,
            settle: Duration::from_secs(cli.settle),
            ..FindOptions::default()
        },
        parse: ParseOptions {
            threshold: cli
                .threshold
                .or(cli.bytes)
                .unwrap_or(bytesize::DEFAULT_BYTES),
            sensor,
            instance: cli.instance,
            legacy_udp: cli.legacy_udp_duration,
            // Each skipped row is listed only with -D; -v gives per-file summaries.
            verbose: cli.debug,
            prog: PROG.into(),
            // The publisher has the other core; one parser thread keeps up with it.
            threads: 1,
            stop: None,
        },
        chunk_size: cli.chunk_size as usize,
        max_bytes: chunk::DEFAULT_MAX_BYTES,
        single: cli.single,
        watch: cli.watch,
        metrics_file: cli.metrics_file,
        progress_bar: !cli.quiet,
        reship: cli.reship,
        prog: PROG,
    };
    // One shipping run per tree; printing with -N writes nothing in it.
    let _lock = if stdout {
        None
    } else {
        match lock::lock_tree(&opts.root, PROG) {
            Ok(l) => Some(l),
            Err(e @ lock::LockError::Held { .. }) => {
                cli::error(PROG, e);
                return ExitCode::from(lock::EXIT_LOCKED);
            }
            Err(e) => {
                cli::error(PROG, e);
                return ExitCode::from(cli::EXIT_FAILURE);
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::error(PROG, format!("cannot start the async runtime: {e}"));
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    let started = Instant::now();
    let quiet = cli.quiet;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let signals = tokio::spawn(runtime::watch_signals(PROG, stop_tx));
        let mut sender = Sender::new(opts, transport);
        let result = sender.run(stop_rx).await;
        let summary = sender.summary.clone();
        sender.close().await;
        let signal = if signals.is_finished() {
            signals.await.ok().flatten()
        } else {
            None
        };
        if !quiet {
            eprintln!(
                "{PROG}: {}",
                summary.line(started.elapsed().as_secs_f64(), stdout)
            );
        }
        match result {
            Ok(()) => match signal {
                Some(code) => ExitCode::from(code),
                None => ExitCode::SUCCESS,
            },
            Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
            Err(e @ SendError::Interrupted { .. }) => {
                cli::error(PROG, &e);
                ExitCode::from(signal.unwrap_or(cli::EXIT_SIGINT))
            }
            Err(e) => {
                cli::error(PROG, &e);
                ExitCode::from(cli::EXIT_FAILURE)
            }
        }
    })
}

/// Checks that a `--reship` directory is an unmarked tstat directory inside
/// the tree.
fn reship_target(root: &std::path::Path, dir: &std::path::Path) -> Result<(), String> {
    let (Ok(r), Ok(d)) = (root.canonicalize(), dir.canonicalize()) else {
        return Err("no such directory".into());
    };
    if !d.starts_with(&r) || d == r {
        return Err(format!("not a directory below {}", root.display()));
    }
    if !find::is_tstat_dir(dir).unwrap_or(false) {
        return Err("not a tstat directory (no log_tcp_complete or log_udp_complete)".into());
    }
    if dir.join(find::PROCESSED).exists() {
        return Err(format!(
            "already marked {} (remove that file first to ship it again)",
            find::PROCESSED
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser as _};

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from(["tstat_send", "-d", "r"]).unwrap();
        assert_eq!(
            (c.bytes, c.settle, c.publish.window.get()),
            (None, 7200, 256)
        );
        assert_eq!(c.config, PathBuf::from("./config.ini"));
        let c = Cli::try_parse_from([
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
            Cli::try_parse_from(["tstat_send"]).is_err(),
            "-d is required"
        );
        assert!(Cli::try_parse_from(["tstat_send", "-d", "r", "--watch", "-1"]).is_err());
    }
}
