//! `tstat-rabbit`: one message body per stdin line, published to RabbitMQ
//! with publisher confirms (design §6). Exits 0 only when every line was
//! confirmed; 1 on a runtime failure; 2 on a usage or config error.

use std::io::{self, BufRead};
use std::process::ExitCode;
use std::thread;

use tokio::sync::mpsc;
use tstat_transport::cli;
use tstat_transport::cli::runtime;
use tstat_transport::config::RabbitConfig;
use tstat_transport::publish::{
    Item, Outgoing, PublishError, PublishOptions, Publisher, Recorder, StreamReport, StreamStart,
};
use tstat_transport::resume::{self, Digest, Mark, Open, Override, Plan, RecordFile};
use tstat_transport::shutdown::Shutdown;

const PROG: &str = "tstat-rabbit";

type Cli = tstat_transport::cli::args::RabbitCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime::init_logging(PROG, cli.verbose, false);
    let cfg = match runtime::load_config(PROG, &cli.config, cli.verbose) {
        Ok(c) if c.stream.is_some() => {
            // Lines of stdin carry no source position to name a publishing
            // id with (design §14.3): a stream is tstat_send's.
            let msg = format!(
                "{}: transport = stream: tstat-rabbit publishes to queues only; ship to a \
                 stream with tstat_send (README, Streams)",
                cli.config.display()
            );
            return cli::usage_error(PROG, msg);
        }
        Ok(c) => c,
        Err(code) => return code,
    };
    let opts = cli.publish.options(PROG, cli.verbose);
    // The progress record, and how far it lets this input resume.
    let (plan, mut record) = match open_record(&cli) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let prefix = cli
        .message_id_prefix
        .as_deref()
        .map(|p| resume::id_prefix(p, plan.generation));
    if let Some(Err(e)) = prefix.as_deref().map(resume::check_id_prefix) {
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
    let Ok(reader) =
        reader.map_err(|e| cli::error(PROG, format!("cannot start the stdin reader: {e}")))
    else {
        return cli::Exit::Failure.into();
    };
    let recorder = record.as_mut().map(|r| r as &mut dyn Recorder);
    let published = runtime.block_on(publish(&cfg, &opts, prefix.as_deref(), &plan, recorder, rx));
    outcome(&cli, &cfg, &plan, published, reader)
}

/// The record of `--progress` through the resume gate (design §8.7); the
/// exit when it refuses.
fn open_record(cli: &Cli) -> Result<(Plan, Option<RecordFile>), ExitCode> {
    let Some(path) = &cli.progress else {
        return Ok((Plan::fresh(0), None));
    };
    let settings = resume::settings([
        ("message_id_prefix", cli.message_id_prefix.clone()),
        ("fingerprint", cli.fingerprint.clone()),
    ]);
    let how = if cli.reship {
        Open::Reship
    } else {
        Open::Resume
    };
    let generations = match &cli.generations {
        Some(file) => resume::Generations::in_file(file.clone()),
        None => resume::Generations::from_records(),
    };
    match resume::open(path.clone(), PROG, settings, Vec::new(), how, &generations) {
        Ok((plan, rec)) => Ok((plan, Some(rec))),
        Err(r) => Err(refused(path, &r)),
    }
}

/// Publishes what the reader sends until its end or a signal; the exit
/// status a signal asks for.
async fn publish<'a>(
    cfg: &RabbitConfig,
    opts: &PublishOptions,
    prefix: Option<&'a str>,
    plan: &Plan,
    recorder: Option<&'a mut dyn Recorder>,
    rx: mpsc::Receiver<Item>,
) -> (Result<StreamReport, PublishError>, Option<cli::Exit>) {
    let shutdown = Shutdown::new();
    let signal = tokio::spawn(runtime::watch_signals(PROG, shutdown.clone()));
    let result = async {
        let mut publisher = Publisher::connect(cfg, opts).await?;
        let start = StreamStart {
            index: plan.next_index,
            mark: plan.expect,
        };
        let report = publisher
            .publish_stream(prefix, start, recorder, rx, &shutdown)
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
}

/// The exit status, with its message, for what publishing and reading gave.
fn outcome(
    cli: &Cli,
    cfg: &RabbitConfig,
    plan: &Plan,
    published: (Result<StreamReport, PublishError>, Option<cli::Exit>),
    reader: thread::JoinHandle<Result<u64, ReadError>>,
) -> ExitCode {
    match published {
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
            if cli.verbose {
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
fn refused(path: &std::path::Path, why: &dyn std::fmt::Display) -> ExitCode {
    cli::error(PROG, resume::refusal_text(why, path, Override::ReshipInput));
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
            .blocking_send(Item::Message(Outgoing {
                body: line,
                mark,
                source: None,
            }))
            .is_err()
        {
            return Ok(count);
        }
    }
}
