//! `tstat-parse`: Tstat logs in, NDJSON flow documents out (design §3, §4).

use std::ffi::OsStr;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tstat_transport::cli::args::ProtocolArg;
use tstat_transport::find::{self, FindOptions};
use tstat_transport::follow::docs::{self, LiveSink, Target};
use tstat_transport::parse::{
    self, FlowSink, NdjsonSink, ParseError, ParseOptions, Parser, Protocol,
};
use tstat_transport::{chunk, cli};

const PROG: &str = "tstat-parse";

type Cli = tstat_transport::cli::args::ParseCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let protocol = cli.protocol.map(|p| match p {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
    });
    let follow = match cli.follow_path() {
        Ok(f) => f,
        Err(msg) => return cli::usage_error(PROG, msg),
    };
    if follow.is_none() && cli.paths.iter().any(|p| p.as_os_str() == "-") && protocol.is_none() {
        return cli::usage_error(
            PROG,
            "reading a log from stdin ('-') needs --protocol tcp|udp",
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match parse::threads_from_env(cores) {
        Ok(n) => n,
        Err(msg) => return cli::usage_error(PROG, msg),
    };
    let opts = ParseOptions {
        threshold: cli.doc.threshold_bytes(),
        sensor: cli.doc.sensor_id(),
        instance: cli.doc.instance,
        legacy_udp: cli.doc.legacy_udp_duration,
        verbose: cli.verbose,
        threads,
        stop: None,
        // Skipped like tstat_send does, so `| tstat-chunk` gives its arrays.
        max_doc: chunk::DEFAULT_MAX_BYTES - 2,
    };
    if let Some((path, tree)) = follow {
        return cli::finish(PROG, run_follow(&path, tree, protocol, opts));
    }
    cli::finish(PROG, run(cli.paths, cli.null, protocol, opts))
}

/// `--follow`: documents as Tstat writes rows, until a signal or (for a
/// directory or a log) Tstat rotating away from it.
fn run_follow(
    path: &Path,
    tree: bool,
    protocol: Option<Protocol>,
    opts: ParseOptions,
) -> anyhow::Result<ExitCode> {
    let stop = cli::stop::on_signals()?;
    let reporter = Arc::new(cli::StderrReporter::new(PROG, opts.verbose));
    let target = Target::from_path(path, protocol, tree)?;
    let mut parser = Parser::with_reporter(opts, reporter.clone());
    let stdout = io::stdout();
    let mut sink = Stdout(NdjsonSink(io::BufWriter::with_capacity(
        1 << 17,
        stdout.lock(),
    )));
    let done = docs::follow(&target, &mut parser, &mut sink, &stop, &*reporter);
    // What was parsed is printed, however it ended (not on a closed stdout).
    let flushed = sink.0.0.flush();
    let done = done?;
    flushed?;
    let exit = if done.failed {
        cli::Exit::Failure
    } else {
        cli::Exit::Ok
    };
    let exit = match cli::stop::stopped_by() {
        Some(signal) if done.stopped => exit.merge(signal),
        _ => exit,
    };
    Ok(exit.into())
}

/// stdout for `--follow`: flushed after each look that printed, and
/// checked for a reader that went away during a look that did not.
struct Stdout<W: Write>(NdjsonSink<W>);

impl<W: Write> FlowSink for Stdout<W> {
    fn flow(&mut self, doc: &[u8]) -> io::Result<()> {
        self.0.flow(doc)
    }

    fn flows(&mut self, ndjson: &[u8]) -> io::Result<()> {
        self.0.flows(ndjson)
    }
}

impl<W: Write> LiveSink for Stdout<W> {
    fn polled(&mut self, wrote: bool) -> io::Result<()> {
        if !wrote && cli::stop::stdout_closed() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.0.polled(wrote)
    }
}

fn run(
    paths: Vec<PathBuf>,
    null: bool,
    protocol: Option<Protocol>,
    opts: ParseOptions,
) -> anyhow::Result<ExitCode> {
    let reporter = Arc::new(cli::StderrReporter::new(PROG, opts.verbose));
    let mut parser = Parser::with_reporter(opts, reporter);
    let mut sink = NdjsonSink(cli::stdout_writer());
    let mut failed = false;
    let mut one =
        |parser: &mut Parser, path: PathBuf, sink: &mut NdjsonSink<_>| -> Result<(), ParseError> {
            let outcome = if path.as_os_str() == "-" {
                parser.parse_stdin(protocol.unwrap_or(Protocol::Tcp), sink)?
            } else {
                parser.parse_path(&path, protocol, sink)?
            };
            if outcome
                .errors
                .iter()
                .any(|e| matches!(e, ParseError::NoLogs { .. }))
            {
                suggest_find(&path);
            }
            failed |= !outcome.errors.is_empty();
            Ok(())
        };
    if paths.is_empty() {
        if io::stdin().is_terminal() {
            // Typed alone, it would otherwise wait in silence.
            eprintln!(
                "{PROG}: reading tstat directory paths from stdin, one per line \
                 (e.g. tstat-find ROOT | tstat-parse); Ctrl-D ends, --help shows more"
            );
        }
        // Paths are bytes on Unix: a directory name need not be UTF-8.
        let end = if null { b'\0' } else { b'\n' };
        let mut input = io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(end, &mut line)? == 0 {
                break;
            }
            let path = stdin_path(&line, null);
            if !path.is_empty() {
                one(
                    &mut parser,
                    PathBuf::from(OsStr::from_bytes(path)),
                    &mut sink,
                )?;
            }
        }
    } else {
        for path in paths {
            one(&mut parser, path, &mut sink)?;
        }
    }
    sink.0.flush()?;
    Ok(if failed {
        cli::Exit::Failure.into()
    } else {
        ExitCode::SUCCESS
    })
}

/// The path in one record read from stdin: without its terminator (and a
/// CR before a newline); empty when there is none (a blank line).
fn stdin_path(record: &[u8], null: bool) -> &[u8] {
    if null {
        return record.strip_suffix(b"\0").unwrap_or(record);
    }
    let p = record.strip_suffix(b"\n").unwrap_or(record);
    let p = p.strip_suffix(b"\r").unwrap_or(p);
    if p.iter().all(u8::is_ascii_whitespace) {
        &[]
    } else {
        p
    }
}

/// A tree root given where a tstat directory belongs: say how to parse the
/// tstat directories below it.
fn suggest_find(root: &Path) {
    let opts = FindOptions {
        all: true,
        include_done: true,
        ..FindOptions::default()
    };
    let found = find::find_ready([root], &opts, |_| {}).len();
    if found > 0 {
        eprintln!(
            "{PROG}: hint: {} holds {found} tstat director{} below it; to parse them all: \
             tstat-find --all {} | {PROG}",
            root.display(),
            if found == 1 { "y" } else { "ies" },
            root.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_records_are_bytes() {
        assert_eq!(stdin_path(b"a\xffb\n", false), b"a\xffb");
        assert_eq!(stdin_path(b"a b\r\n", false), b"a b");
        assert_eq!(stdin_path(b"last", false), b"last");
        assert_eq!(stdin_path(b"  \n", false), b"");
        assert_eq!(stdin_path(b"a\nb\0", true), b"a\nb");
        assert_eq!(stdin_path(b"\0", true), b"");
    }
}
