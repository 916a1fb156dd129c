//! `tstat-cull`: removes processed tstat directories older than a TTL
//! (design §11), printing each removal on stdout.
//!
//! Exit status: 0 when everything could be examined and every due removal
//! succeeded; 1 when any path could not be read or removed (the others are
//! still handled); 2 on a usage error. A closed stdout stops the run at once
//! (nothing more is removed) and ends it quietly with status 0.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use tstat_transport::cli::{self, Exit};
use tstat_transport::cull::{self, CullOptions};

const PROG: &str = "tstat-cull";

type Cli = tstat_transport::cli::args::CullCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cli::finish(PROG, run(&cli))
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let opts = CullOptions {
        ttl: cli.ttl,
        dry_run: cli.dry_run,
        now: SystemTime::now(),
    };
    let mut out = cli::stdout_writer();
    let summary = cull::cull(&cli.directory, &opts, &mut out, |e| cli::error(PROG, e))
        .context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    if cli.verbose {
        let verb = if cli.dry_run {
            "would remove"
        } else {
            "removed"
        };
        eprintln!(
            "{PROG}: {} tstat directories examined, {verb} {}, kept {} not processed, \
             kept {} processed within {} h, {} errors",
            summary.examined,
            summary.removed,
            summary.unprocessed,
            summary.young,
            cli.ttl.as_secs_f64() / 3600.0,
            summary.errors,
        );
    }
    Ok(if summary.errors > 0 {
        Exit::Failure.into()
    } else {
        ExitCode::SUCCESS
    })
}
