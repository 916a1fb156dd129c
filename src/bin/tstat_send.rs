//! `tstat_send`: the standard job in one process (design §8): find the ready
//! directories, parse, keep the big flows, batch them and publish them with
//! confirms, then mark each directory `.processed`.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tstat_transport::cli;
use tstat_transport::cli::runtime;
use tstat_transport::find::FindOptions;
use tstat_transport::parse::ParseOptions;
use tstat_transport::send::{SendError, SendOptions, Sender, Transport};
use tstat_transport::{find, lock, resume};

const PROG: &str = "tstat_send";

use tstat_transport::cli::args::{SendCli as Cli, TransportArg};

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime::init_logging(PROG, cli.verbose, cli.debug);
    if cli.check {
        return check(&cli);
    }
    if !cli.directory.is_dir() {
        return cli::usage_error(
            PROG,
            format!("{}: not a directory", cli.directory.display()),
        );
    }
    // The publisher has the other core; one parser thread keeps up with it
    // (TSTAT_PARSE_THREADS overrides, as for tstat-parse).
    let threads = match tstat_transport::parse::threads_from_env(1) {
        Ok(n) => n,
        Err(msg) => return cli::usage_error(PROG, msg),
    };
    let sensor = cli.doc.sensor_id();
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
        let publish = tstat_transport::publish::PublishOptions {
            // Each directory is marked .processed durably once confirmed.
            record_at_end: false,
            ..cli.publish.options(PROG, cli.verbose)
        };
        Transport::Rabbit {
            config: Box::new(config),
            publish,
        }
    };
    let opts = SendOptions {
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
            sensor,
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
        reporter: std::sync::Arc::new(
            cli::StderrReporter::new(PROG, cli.verbose || cli.debug).with_progress(!cli.quiet),
        ),
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
                return cli::Exit::Locked.into();
            }
            Err(e) => {
                cli::error(PROG, e);
                return cli::Exit::Failure.into();
            }
        }
    };
    let rt = match runtime::async_runtime(PROG) {
        Ok(rt) => rt,
        Err(code) => return code.into(),
    };
    let started = Instant::now();
    let quiet = cli.quiet;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let signals = tokio::spawn(runtime::watch_signals(PROG, stop_tx));
        let mut sender = Sender::new(opts, transport);
        let result = sender.run(stop_rx).await;
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
            Err(e) if e.is_broken_pipe() => cli::Exit::Ok,
            Err(e @ SendError::Interrupted { .. }) => {
                cli::error(PROG, &e);
                signal.unwrap_or(cli::Exit::Interrupted)
            }
            Err(e) => {
                cli::error(PROG, &e);
                cli::Exit::Failure
            }
        };
        if !quiet {
            eprintln!(
                "{PROG}: {}",
                summary.line(started.elapsed().as_secs_f64(), stdout)
            );
        }
        code.into()
    })
}

/// `--check`: one line per check on stdout.
fn check(cli: &Cli) -> ExitCode {
    use tstat_transport::check::{self, Check};
    let mut lines: Vec<Check> = Vec::new();
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
            Ok(rt) => lines.extend(rt.block_on(check::broker(cfg, &publish))),
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
