//! `tstat-rabbit`: one message body per stdin line, published to RabbitMQ
//! with publisher confirms (design §6). Exits 0 only when every line was
//! confirmed; 1 on a runtime failure; 2 on a usage or config error.

use std::io::{self, BufRead};
use std::process::ExitCode;
use std::thread;

use std::collections::BTreeMap;

use tokio::sync::{mpsc, watch};
use tstat_transport::cli;
use tstat_transport::cli::runtime;
use tstat_transport::publish::{Item, Outgoing, PublishError, Publisher, Recorder, StreamStart};
use tstat_transport::resume::{self, Digest, Mark, Plan, RecordFile};

const PROG: &str = "tstat-rabbit";

type Cli = tstat_transport::cli::args::RabbitCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime::init_logging(PROG, cli.verbose, false);

    let cfg = match runtime::load_config(PROG, &cli.config, cli.verbose) {
        Ok(c) => c,
        Err(code) => return code,
    };

    let verbose = cli.verbose;
    let opts = cli.publish.options(PROG, verbose);

    // The progress record, and how far it lets this input resume.
    let (plan, mut record) = match &cli.progress {
        None => (Plan::fresh(0), None),
        Some(path) => {
            let settings = BTreeMap::from([
                (
                    "message_id_prefix".to_string(),
                    cli.message_id_prefix
                        .clone()
                        .unwrap_or_else(|| "(none)".into()),
                ),
                (
                    "fingerprint".to_string(),
                    cli.fingerprint.clone().unwrap_or_else(|| "(none)".into()),
                ),
            ]);
            let loaded = resume::load(path);
            let plan = if cli.reship {
                Plan::fresh(resume::new_generation(
                    loaded.ok().flatten().map(|r| r.generation),
                ))
            } else {
                match loaded.and_then(|r| {
                    r.map_or(Ok(Plan::fresh(0)), |r| resume::plan(&r, &settings, &[]))
                }) {
                    Ok(p) => p,
                    Err(r) => return refused(path, &r.to_string()),
                }
            };
            let rec = RecordFile::new(path.clone(), PROG, settings, Vec::new(), &plan);
            (plan, Some(rec))
        }
    };
    let prefix = cli
        .message_id_prefix
        .as_deref()
        .map(|p| resume::id_prefix(p, plan.generation));
    if let Some(p) = &prefix
        && let Err(e) = resume::check_id_prefix(p)
    {
        return cli::usage_error(PROG, format!("--message-id-prefix: {e}"));
    }

    let runtime = match runtime::async_runtime(PROG) {
        Ok(rt) => rt,
        Err(code) => return code.into(),
    };

    // Lines are read on their own thread so publishing never waits on a
    // slow producer while confirms are due; the channel bounds memory.
    let (tx, rx) = mpsc::channel::<Item>(16);
    let (skip, expect) = (plan.skip, plan.expect);
    let reader = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(tx, skip, expect));
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            cli::error(PROG, format!("cannot start the stdin reader: {e}"));
            return cli::Exit::Failure.into();
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let result = runtime.block_on(async {
        let signal = tokio::spawn(runtime::watch_signals(PROG, stop_tx));
        let result = async {
            let mut publisher = Publisher::connect(&cfg, &opts).await?;
            let start = StreamStart {
                index: plan.next_index,
                mark: plan.expect,
            };
            let recorder = record.as_mut().map(|r| r as &mut dyn Recorder);
            let report = publisher
                .publish_stream(prefix.as_deref(), start, recorder, rx, stop_rx)
                .await;
            publisher.close().await;
            report
        }
        .await;
        let signal_code = if signal.is_finished() {
            signal.await.ok().flatten()
        } else {
            signal.abort();
            None
        };
        (result, signal_code)
    });

    match result {
        (Ok(report), _) => {
            // The publisher saw the end of input; was it a real end?
            match reader.join() {
                Ok(Ok(_)) => {}
                Ok(Err(ReadError::Refused(why))) => {
                    if let Some(path) = &cli.progress {
                        return refused(path, &why);
                    }
                }
                Ok(Err(ReadError::Io(e))) => {
                    cli::error(
                        PROG,
                        format!(
                            "reading stdin: {e} (the {} lines before were confirmed)",
                            report.confirmed
                        ),
                    );
                    return cli::Exit::Failure.into();
                }
                Err(_) => {
                    cli::error(PROG, "reading stdin: the reader thread panicked");
                    return cli::Exit::Failure.into();
                }
            }
            if verbose {
                eprintln!(
                    "{PROG}: {} lines confirmed ({} skipped from progress, {} published, {} resent, {} bytes, {} reconnects)",
                    report.confirmed,
                    plan.skip,
                    report.published,
                    report.resent,
                    report.bytes,
                    report.reconnects
                );
            }
            ExitCode::SUCCESS
        }
        (Err(PublishError::Interrupted { confirmed }), code) => {
            let saved = match &cli.progress {
                Some(p) => format!(", recorded in {}", p.display()),
                None => " (no --progress: a re-run starts from the first line)".into(),
            };
            cli::error(
                PROG,
                format!("interrupted: {confirmed} lines confirmed{saved}"),
            );
            code.unwrap_or(cli::Exit::Interrupted).into()
        }
        (Err(e @ PublishError::TlsSetup(_)), _) => {
            // Unusable certificate files are a config problem.
            cli::error(PROG, format!("{}: [ssl_options]: {e}", cfg.path.display()));
            cli::Exit::Usage.into()
        }
        (Err(e), _) => {
            cli::error(PROG, e);
            cli::Exit::Failure.into()
        }
    }
}

/// Why reading the input stopped.
enum ReadError {
    Io(io::Error),
    /// The confirmed lines of the record are not this input's first lines.
    Refused(String),
}

/// A record that does not apply: nothing is published (exit 3).
fn refused(path: &std::path::Path, why: &str) -> ExitCode {
    cli::error(
        PROG,
        format!(
            "{}: {why}; nothing published (to send this input anyway under new message ids, add --reship)",
            path.display()
        ),
    );
    cli::Exit::Refused.into()
}

/// Sends each stdin line (without its `\n` or `\r\n`) to the publisher,
/// after skipping the `skip` lines an earlier run confirmed and checking that
/// they end at `expect`. Stops quietly when the publisher is gone.
fn read_lines(tx: mpsc::Sender<Item>, skip: u64, expect: Mark) -> Result<u64, ReadError> {
    let stdin = io::stdin();
    let mut input = io::BufReader::with_capacity(1 << 17, stdin.lock());
    let mut count = 0u64;
    let mut digest = Digest::default();
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line).map_err(ReadError::Io)? == 0 {
            if count < skip {
                return Err(ReadError::Refused(format!(
                    "the input has {count} lines, fewer than the {skip} confirmed"
                )));
            }
            return Ok(count);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        count += 1;
        let mark = Mark {
            part: 0,
            items: count,
            digest: digest.add(&line),
            follow: None,
        };
        if count < skip {
            continue;
        }
        if count == skip {
            if mark != expect {
                return Err(ReadError::Refused(format!(
                    "the first {skip} lines differ from the ones confirmed before"
                )));
            }
            continue;
        }
        if tx
            .blocking_send(Item::Message(Outgoing { body: line, mark }))
            .is_err()
        {
            return Ok(count);
        }
    }
}
