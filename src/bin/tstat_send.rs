//! `tstat_send`: the standard job in one process (design §8): find the ready
//! directories, parse, keep the big flows, batch them and publish them with
//! confirms, then mark each directory `.processed`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tstat_transport::cli;
use tstat_transport::cli::args::{SendCli as Cli, TransportArg};
use tstat_transport::cli::runtime;
use tstat_transport::config::RabbitConfig;
use tstat_transport::find::FindOptions;
use tstat_transport::identity::{self, Producers};
use tstat_transport::parse::ParseOptions;
use tstat_transport::publish::PublishOptions;
use tstat_transport::send::{
    Destination, PrintArrays, QueueDestination, SendError, SendOptions, Sender, StreamDestination,
};
use tstat_transport::shutdown::Shutdown;
use tstat_transport::{check, find, lock, resume};

const PROG: &str = "tstat_send";

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime::init_logging(PROG, cli.verbose, cli.debug);
    if cli.check {
        return check(&cli);
    }
    let stdout = cli.no_transport || cli.transport == TransportArg::Stdout;
    let threads = match checked_threads(&cli, stdout) {
        Ok(n) => n,
        Err(code) => return code,
    };
    // The program picks the destination: stdout (-N) or the queue.
    let queue = match stdout {
        true => None,
        false => match queue_settings(&cli) {
            Ok(q) => Some(q),
            Err(code) => return code,
        },
    };
    let quiet = cli.quiet;
    let follow = cli.follow;
    let opts = options(cli, threads);
    // One shipping run per tree; printing with -N writes nothing in it.
    let _lock = match stdout {
        true => None,
        false => match lock_tree(&opts.root) {
            Ok(l) => Some(l),
            Err(code) => return code,
        },
    };
    let rt = match runtime::async_runtime(PROG) {
        Ok(rt) => rt,
        Err(code) => return code.into(),
    };
    match queue {
        None => rt.block_on(ship(
            opts,
            PrintArrays::new(cli::stdout_writer()),
            quiet,
            None,
            follow,
        )),
        Some((config, publish)) if config.stream.is_some() => {
            let producers = match stream_producers(&opts) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let check = check_command(&opts.root, &config.path);
            let dest = StreamDestination::new(config, publish, producers, opts.reporter.clone());
            rt.block_on(ship(opts, dest, quiet, Some(check), follow))
        }
        Some((config, publish)) => {
            let check = check_command(&opts.root, &config.path);
            let dest = QueueDestination::new(config, publish, opts.reporter.clone());
            rt.block_on(ship(opts, dest, quiet, Some(check), follow))
        }
    }
}

/// The `tstat_send --check` command line for this tree and config.
fn check_command(root: &std::path::Path, config: &std::path::Path) -> String {
    format!(
        "{PROG} --check -d {} -c {}",
        shell_word(root),
        shell_word(config)
    )
}

/// A path as one shell word, quoted only when it needs to be.
fn shell_word(p: &std::path::Path) -> String {
    let s = p.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs the job to `dest` until done or a signal; the error, then the
/// summary. `check`: the `--check` command a failed connect points to.
/// Following, a signal is the normal end: a notice, not an error.
async fn ship<D: Destination>(
    opts: SendOptions,
    dest: D,
    quiet: bool,
    check: Option<String>,
    follow: bool,
) -> ExitCode {
    let started = Instant::now();
    let printed = !dest.keeps_record();
    let shutdown = Shutdown::new();
    let signals = tokio::spawn(runtime::watch_signals(PROG, shutdown.clone()));
    let mut sender = Sender::new(opts, dest);
    let result = sender.run(&shutdown).await;
    let summary = sender.summary;
    sender.close().await;
    let signal = if signals.is_finished() {
        signals.await.ok().flatten()
    } else {
        None
    };
    // The error first, then the summary: a failed run's counts are
    // no success report.
    let code = match result {
        Ok(()) => signal.unwrap_or(cli::Exit::Ok),
        // A closed stdout (`-N | head`): quiet, no summary either.
        Err(e) if e.is_broken_pipe() => return cli::Exit::Ok.into(),
        Err(e @ SendError::Interrupted { .. }) if follow => {
            if let (false, Some(notice)) = (quiet, e.stopped_following()) {
                cli::print_line(&format!("{PROG}: {notice}"));
            }
            signal.unwrap_or(cli::Exit::Interrupted)
        }
        Err(e @ SendError::Interrupted { .. }) => {
            cli::error(PROG, &e);
            signal.unwrap_or(cli::Exit::Interrupted)
        }
        Err(e) => {
            cli::error(PROG, &e);
            if let Some(check) = check.filter(|_| e.is_connect_failure()) {
                cli::print_line(&format!(
                    "{PROG}: hint: {check} looks at the config, the broker and the tree, \
                     one line each"
                ));
            }
            cli::Exit::Failure
        }
    };
    if !quiet {
        eprintln!(
            "{PROG}: {}",
            summary.line(started.elapsed().as_secs_f64(), printed)
        );
    }
    code.into()
}

/// Checks the flags that need no config; the parser's thread count.
fn checked_threads(cli: &Cli, stdout: bool) -> Result<usize, ExitCode> {
    if let Err(why) = check::root_dir(&cli.directory) {
        let msg = format!("-d {}: {why}", cli.directory.display());
        return Err(cli::usage_error(PROG, msg));
    }
    // Before any directory is shipped and marked, not after the first pass.
    if let Some(m) = &cli.metrics_file {
        let c = check::metrics(m);
        if !c.ok {
            return Err(cli::usage_error(
                PROG,
                format!("--metrics-file {}", c.detail),
            ));
        }
    }
    // The publisher has the other core; one parser thread keeps up with it
    // (TSTAT_PARSE_THREADS overrides, as for tstat-parse).
    let threads =
        tstat_transport::parse::threads_from_env(1).map_err(|m| cli::usage_error(PROG, m))?;
    // SENSOR:DIRNAME:INDEX must fit in an AMQP short string.
    if let Err(e) = resume::check_id_prefix(&format!("{}:d", cli.doc.sensor_id())) {
        return Err(cli::usage_error(PROG, format!("-S/--sensor: {e}")));
    }
    if stdout && !cli.reship.is_empty() {
        return Err(cli::usage_error(
            PROG,
            "--reship needs the rabbit transport",
        ));
    }
    for d in &cli.reship {
        if let Err(why) = reship_target(&cli.directory, d) {
            let msg = format!("--reship {}: {why}", d.display());
            return Err(cli::usage_error(PROG, msg));
        }
    }
    Ok(threads)
}

/// The broker settings and publisher tuning of the queue destination.
fn queue_settings(cli: &Cli) -> Result<(RabbitConfig, PublishOptions), ExitCode> {
    let config = runtime::load_config(PROG, &cli.config, cli.verbose)?;
    let publish = PublishOptions {
        // Each directory is marked .processed durably once confirmed.
        record_at_end: false,
        ..cli.publish.options(PROG, cli.verbose)
    };
    Ok((config, publish))
}

/// The names of this run's stream producers: sensor, instance and tree.
fn stream_producers(opts: &SendOptions) -> Result<Producers, ExitCode> {
    let p = &opts.parse;
    Producers::new(&p.sensor, p.instance.as_deref(), &opts.tree)
        .map_err(|e| cli::usage_error(PROG, format!("-S/--sensor, -I/--instance: {e}")))
}

/// The run's options from the command line.
fn options(cli: Cli, threads: usize) -> SendOptions {
    SendOptions {
        tree: identity::tree_tag(&cli.directory),
        root: cli.directory,
        find: FindOptions {
            all: cli.all,
            // Following, only a newer directory finishes one.
            settle: if cli.follow {
                Duration::MAX
            } else {
                Duration::from_secs(cli.settle)
            },
            ..FindOptions::default()
        },
        parse: ParseOptions {
            threshold: cli.doc.threshold_bytes(),
            sensor: cli.doc.sensor_id(),
            instance: cli.doc.instance,
            legacy_udp: cli.doc.legacy_udp_duration,
            // Each skipped row is listed only with -D; -v gives per-file summaries.
            verbose: cli.debug,
            threads,
            stop: None,
            max_doc: cli.max_bytes - 2,
        },
        chunk_size: cli.chunk_size as usize,
        max_bytes: cli.max_bytes,
        single: cli.single,
        watch: cli.watch,
        follow: cli.follow.then_some(cli.flush),
        metrics_file: cli.metrics_file,
        reporter: Arc::new(
            cli::StderrReporter::new(PROG, cli.verbose || cli.debug).with_progress(!cli.quiet),
        ),
        reship: cli.reship,
        prog: PROG,
    }
}

/// The tree's lock, or the exit for a tree locked by another run.
fn lock_tree(root: &std::path::Path) -> Result<lock::TreeLock, ExitCode> {
    lock::lock_tree(root, PROG).map_err(|e| {
        let code = match e {
            lock::LockError::Held { .. } => cli::Exit::Locked,
            _ => cli::Exit::Failure,
        };
        cli::error(PROG, e);
        code.into()
    })
}

/// `--check`: one line per check on stdout.
fn check(cli: &Cli) -> ExitCode {
    use tstat_transport::check::Check;
    let mut lines: Vec<Check> = Vec::new();
    let tag = identity::tree_tag(&cli.directory);
    let config = runtime::load_config(PROG, &cli.config, cli.verbose);
    lines.push(Check {
        ok: config.is_ok(),
        what: "config",
        detail: match &config {
            Ok(_) => format!("{} is valid", cli.config.display()),
            Err(_) => format!("{}: see the errors above", cli.config.display()),
        },
    });
    if let Ok(cfg) = &config {
        let publish = cli.publish.options(PROG, cli.verbose);
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                lines.extend(rt.block_on(check::broker(cfg, &publish)));
                let producers =
                    Producers::new(&cli.doc.sensor_id(), cli.doc.instance.as_deref(), &tag);
                if cfg.stream.is_some()
                    && lines.iter().all(|l| l.ok)
                    && let Ok(producers) = producers
                {
                    lines.extend(rt.block_on(check::stream_producers(cfg, &publish, &producers)));
                }
            }
            Err(e) => lines.push(Check {
                ok: false,
                what: "broker",
                detail: format!("cannot start the async runtime: {e}"),
            }),
        }
    }
    let find = FindOptions {
        all: cli.all,
        settle: Duration::from_secs(cli.settle),
        ..FindOptions::default()
    };
    let tree = check::tree(&cli.directory, &find);
    let is_tree = tree.iter().all(|c| c.ok || c.what != "tree");
    lines.extend(tree);
    if is_tree {
        lines.push(Check {
            ok: true,
            what: "ids",
            detail: format!(
                "{}:INDEX (tree {tag}: {})",
                identity::message_id_base(&cli.doc.sensor_id(), &tag, "DIRNAME"),
                cli.directory
                    .canonicalize()
                    .unwrap_or_else(|_| cli.directory.clone())
                    .display()
            ),
        });
    }
    if let Some(m) = &cli.metrics_file {
        lines.push(check::metrics(m));
    }
    if is_tree {
        lines.push(check::lock(&cli.directory, PROG));
    }
    let mut out = std::io::stdout().lock();
    for l in &lines {
        if writeln!(out, "{}", l.line()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
    let checks = if lines.iter().all(|l| l.ok) {
        cli::Exit::Ok
    } else {
        cli::Exit::Failure
    };
    let config = if config.is_err() {
        cli::Exit::Usage
    } else {
        cli::Exit::Ok
    };
    checks.merge(config).into()
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
    use std::path::Path;

    #[test]
    fn the_check_hint_can_be_pasted_whatever_the_paths() {
        assert_eq!(
            check_command(Path::new("/var/lib/tstat"), Path::new("./config.ini")),
            "tstat_send --check -d /var/lib/tstat -c ./config.ini"
        );
        assert_eq!(
            check_command(Path::new("/srv/my tree"), Path::new("/etc/it's.ini")),
            r"tstat_send --check -d '/srv/my tree' -c '/etc/it'\''s.ini'"
        );
    }
}
