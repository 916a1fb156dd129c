//! `tstat-consume`: reads the configured queue or stream and writes each
//! message's flow documents as NDJSON on stdout (design §14.6). Exits 0 at
//! `--count`, `--idle-exit` or a closed stdout; 1 on a runtime failure; 2
//! on a usage or config error; 130/143 on SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use tstat_transport::cli;
use tstat_transport::cli::runtime;
use tstat_transport::consume::{self, ConsumeError, ConsumeOptions, End};
use tstat_transport::publish::{PublishError, PublishOptions};
use tstat_transport::shutdown::Shutdown;

const PROG: &str = "tstat-consume";

type Cli = tstat_transport::cli::args::ConsumeCli;

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
    if cfg.stream.is_none() {
        for (flag, given) in [
            ("--from", cli.from.is_some()),
            ("--name", cli.name.is_some()),
        ] {
            if given {
                let msg = format!(
                    "{flag} reads a stream, and {} has transport = queue",
                    cli.config.display()
                );
                return cli::usage_error(PROG, msg);
            }
        }
    }
    let opts = ConsumeOptions {
        arrays: cli.arrays,
        prefetch: cli.prefetch,
        dedupe: cli.dedupe,
        count: cli.count,
        idle_exit: cli.idle_exit,
        skip_bad: cli.skip_bad,
        from: cli.from,
        name: cli.name.clone(),
        broker: PublishOptions {
            retries: cli.retries,
            connect_timeout: cli.connect_timeout,
            heartbeat: Duration::from_secs(u64::from(cli.heartbeat)),
            notices: Some(runtime::print_notices(PROG, cli.verbose)),
            ..PublishOptions::default()
        },
        output_gone: Some(cli::stop::stdout_closed),
        ..ConsumeOptions::default()
    };
    // One worker thread besides the main one: while writing to a slow
    // stdout blocks the main thread, the stream connections' tasks still
    // answer heartbeats (lapin has its own I/O thread for queues).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::error(PROG, format!("cannot start the async runtime: {e}"));
            return cli::Exit::Failure.into();
        }
    };
    let reporter = cli::StderrReporter::new(PROG, cli.verbose);
    let (result, signal) = runtime.block_on(async {
        let shutdown = Shutdown::new();
        let stopping = match (&cfg.stream, &opts.name) {
            (None, _) => "stopping: acknowledging what was written (signal again to quit at once)",
            (Some(_), Some(_)) => {
                "stopping: storing the offset of what was written (signal again to quit at once)"
            }
            (Some(_), None) => "stopping (signal again to quit at once)",
        };
        let signal = tokio::spawn(runtime::watch_signals_saying(
            PROG,
            shutdown.clone(),
            stopping,
        ));
        let result = consume::run(&cfg, &opts, cli::stdout_writer(), &shutdown, &reporter).await;
        let signal = if signal.is_finished() {
            signal.await.ok().flatten()
        } else {
            signal.abort();
            None
        };
        (result, signal)
    });
    let (summary, result) = result;
    // After a failure the counts say what was written before it.
    let taken = summary.messages + summary.repeats + summary.skipped;
    if !cli.quiet && (result.is_ok() || taken > 0) {
        cli::print_line(&format!("{PROG}: {}", summary.line()));
    }
    match result {
        Ok(End::Signal) => signal.unwrap_or(cli::Exit::Interrupted).into(),
        Ok(_) => ExitCode::SUCCESS,
        Err(ConsumeError::Broker(e @ PublishError::TlsSetup(_))) => {
            cli::error(PROG, format!("{}: [ssl_options]: {e}", cfg.path.display()));
            cli::Exit::Usage.into()
        }
        Err(e @ ConsumeError::NoQueue(_)) => cli::usage_error(PROG, e),
        Err(e) => {
            cli::error(PROG, e);
            cli::Exit::Failure.into()
        }
    }
}
