//! `tstat-cull`: removes processed tstat directories older than a TTL
//! (SPEC §11), printing each removal on stdout.
//!
//! Exit status: 0 when everything could be examined and every due removal
//! succeeded; 1 when any path could not be read or removed (the others are
//! still handled); 2 on a usage error. A closed stdout stops the run at once
//! (nothing more is removed) and ends it quietly with status 0.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use tstat_transport::cli::{self, EXIT_FAILURE};
use tstat_transport::cull::{self, CullOptions};

const PROG: &str = "tstat-cull";

/// Remove processed Tstat log directories older than a TTL.
///
/// Only a tstat directory holding a .processed file older than the TTL is
/// removed; symbolic links are never followed.
#[derive(Debug, Parser)]
#[command(name = "tstat-cull", version)]
struct Cli {
    /// The tstat tree to clean.
    #[arg(short = 'd', long, value_name = "ROOT")]
    directory: PathBuf,

    /// Keep processed directories for this many hours (fractions allowed).
    #[arg(short = 't', long, value_name = "HOURS", default_value = "48",
          value_parser = cull::parse_ttl_hours, allow_negative_numbers = true)]
    ttl: Duration,

    /// Print what would be removed, remove nothing.
    #[arg(short = 'D', long)]
    dry_run: bool,

    /// Print a summary on stderr at the end.
    #[arg(short = 'v', long)]
    verbose: bool,
}

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
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
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
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        let c = Cli::try_parse_from(["tstat-cull", "-d", "r"]).expect("parse");
        assert_eq!(c.ttl, Duration::from_secs(48 * 3600));
        assert!(!c.dry_run && !c.verbose);
        let c = Cli::try_parse_from(["tstat-cull", "--directory", "r", "-t", "1.5", "-D", "-v"])
            .expect("parse");
        assert_eq!(c.ttl, Duration::from_secs(5400));
        assert!(c.dry_run && c.verbose);
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["tstat-cull"][..],
            &["tstat-cull", "-d", "r", "-t", "-1"],
            &["tstat-cull", "-d", "r", "-t", "two"],
            &["tstat-cull", "-d", "r", "extra"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
