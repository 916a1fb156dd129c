//! `tstat-find`: lists the tstat directories under one or more roots that are
//! ready to be shipped, oldest first (design §2), or with `--mark` writes their
//! `.processed` markers.
//!
//! Exit status: 0 when everything could be examined (or marked); 1 when any
//! path could not be read or marked — the directories that could be examined
//! are still listed, because a cautious operator wants to hear about an
//! unreadable corner of the tree instead of silently shipping around it; 2 on
//! a usage error. A closed stdout ends the program quietly with status 0.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tstat_transport::cli::{self, Exit};
use tstat_transport::find::{self, FindOptions};

const PROG: &str = "tstat-find";

type Cli = tstat_transport::cli::args::FindCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.mark {
        return mark(&cli.paths);
    }
    if cli.tree_id {
        return cli::finish(PROG, tree_ids(&cli.paths, cli.null));
    }
    let opts = FindOptions {
        all: cli.all,
        include_done: cli.include_done,
        settle: Duration::from_secs(cli.settle),
        now: SystemTime::now(),
    };
    cli::finish(PROG, list(&cli.paths, &opts, cli.null))
}

/// Lists the ready directories under `roots` on stdout.
fn list(roots: &[PathBuf], opts: &FindOptions, null: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let dirs = find::find_ready(roots, opts, |e| {
        failed = true;
        cli::error(PROG, e);
    });
    let mut out = cli::stdout_writer();
    let end: &[u8] = if null { b"\0" } else { b"\n" };
    for d in &dirs {
        out.write_all(d.as_os_str().as_encoded_bytes())
            .and_then(|()| out.write_all(end))
            .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(if failed {
        Exit::Failure.into()
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints the identity of each root, as message ids carry it.
fn tree_ids(roots: &[PathBuf], null: bool) -> anyhow::Result<ExitCode> {
    let mut out = cli::stdout_writer();
    let end = if null { "\0" } else { "\n" };
    for r in roots {
        if !r.is_dir() {
            cli::error(PROG, format!("{}: not a directory", r.display()));
            return Ok(Exit::Usage.into());
        }
        write!(out, "{}{end}", tstat_transport::identity::tree_tag(r))
            .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Marks each of `dirs` done; refuses (and reports) a path that is not a
/// tstat directory, and goes on with the others.
fn mark(dirs: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for d in dirs {
        let result = match find::is_tstat_dir(d) {
            Ok(true) => find::mark_processed(d).context("cannot write .processed"),
            Ok(false) => Err(anyhow::anyhow!(
                "not a tstat directory (expected a directory named *.out holding \
                 log_tcp_complete or log_udp_complete); not marked"
            )),
            Err(e) => Err(anyhow::Error::new(e).context("cannot examine")),
        };
        if let Err(e) = result {
            failed = true;
            cli::error(PROG, format!("{}: {e:#}", d.display()));
        }
    }
    if failed {
        Exit::Failure.into()
    } else {
        ExitCode::SUCCESS
    }
}
