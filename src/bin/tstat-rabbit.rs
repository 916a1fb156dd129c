//! `tstat-rabbit`: one message body per stdin line, published to RabbitMQ
//! with publisher confirms (SPEC §6). Exits 0 only when every line was
//! confirmed; 1 on a runtime failure; 2 on a usage or config error.

use std::io::{self, BufRead};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;

use tokio::sync::{mpsc, watch};
use tstat_transport::cli;
use tstat_transport::publish::{PublishError, Publisher};
use tstat_transport::runtime;

const PROG: &str = "tstat-rabbit";

/// Publish one message per stdin line to RabbitMQ and wait for every confirm.
#[derive(clap::Parser, Debug)]
#[command(name = PROG, version)]
struct Cli {
    /// The config.ini with the [rabbit] section.
    #[arg(short = 'c', long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    publish: runtime::PublishArgs,
    /// Give each message the id PREFIX:INDEX (INDEX = 0-based line number).
    #[arg(long, value_name = "PREFIX")]
    message_id_prefix: Option<String>,
    /// Record the count of confirmed lines here; skip that many on start.
    #[arg(long, value_name = "FILE")]
    progress: Option<PathBuf>,
    /// Print the checked config (password hidden), connections and a summary.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime::init_logging(cli.verbose, false);

    let cfg = match runtime::load_config(PROG, &cli.config, cli.verbose) {
        Ok(c) => c,
        Err(code) => return code,
    };

    let verbose = cli.verbose;
    let opts = cli.publish.options(PROG, verbose);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::error(PROG, format!("cannot start the async runtime: {e}"));
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };

    // Lines are read on their own thread so publishing never waits on a
    // slow producer while confirms are due; the channel bounds memory.
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let reader = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_lines(tx));
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            cli::error(PROG, format!("cannot start the stdin reader: {e}"));
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let result = runtime.block_on(async {
        let signal = tokio::spawn(runtime::watch_signals(PROG, stop_tx));
        let result = async {
            let mut publisher = Publisher::connect(&cfg, &opts).await?;
            let report = publisher
                .publish_stream(
                    cli.message_id_prefix.as_deref(),
                    cli.progress.as_deref(),
                    rx,
                    stop_rx,
                )
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
                Ok(Err(e)) => {
                    cli::error(
                        PROG,
                        format!(
                            "reading stdin: {e} (the {} lines before were confirmed)",
                            report.confirmed
                        ),
                    );
                    return ExitCode::from(cli::EXIT_FAILURE);
                }
                Err(_) => {
                    cli::error(PROG, "reading stdin: the reader thread panicked");
                    return ExitCode::from(cli::EXIT_FAILURE);
                }
            }
            if verbose {
                eprintln!(
                    "{PROG}: {} lines confirmed ({} skipped from progress, {} published, {} resent, {} bytes, {} reconnects)",
                    report.confirmed,
                    report.skipped,
                    report.published,
                    report.resent,
                    report.bytes,
                    report.reconnects
                );
            }
            ExitCode::SUCCESS
        }
        (Err(PublishError::Interrupted { confirmed }), code) => {
            cli::error(
                PROG,
                format!("interrupted: {confirmed} lines confirmed, progress saved"),
            );
            ExitCode::from(code.unwrap_or(cli::EXIT_SIGINT))
        }
        (Err(e @ PublishError::TlsSetup(_)), _) => {
            // Unusable certificate files are a config problem.
            cli::error(PROG, format!("{}: [ssl_options]: {e}", cfg.path.display()));
            ExitCode::from(cli::EXIT_USAGE)
        }
        (Err(e), _) => {
            cli::error(PROG, e);
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}

/// Sends each stdin line (without its `\n` or `\r\n`) to the publisher.
/// Stops quietly when the publisher is gone.
fn read_lines(tx: mpsc::Sender<Vec<u8>>) -> io::Result<u64> {
    let stdin = io::stdin();
    let mut input = io::BufReader::with_capacity(1 << 17, stdin.lock());
    let mut count = 0u64;
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(count);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if tx.blocking_send(line).is_err() {
            return Ok(count);
        }
        count += 1;
    }
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
        let c = Cli::try_parse_from(["tstat-rabbit", "-c", "x.ini"]).unwrap();
        assert_eq!(
            (
                c.publish.window.get(),
                c.publish.retries,
                c.publish.heartbeat
            ),
            (256, 5, 60)
        );
        assert!(
            Cli::try_parse_from(["tstat-rabbit"]).is_err(),
            "-c is required"
        );
        assert!(Cli::try_parse_from(["tstat-rabbit", "-c", "x", "--window", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["tstat-rabbit", "-c", "x", "--confirm-timeout", "0"]).is_err()
        );
    }
}
