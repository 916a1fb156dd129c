//! `tstat-parse`: Tstat logs in, NDJSON flow documents out (SPEC §3, §4).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tstat_transport::args::ProtocolArg;
use tstat_transport::cli;
use tstat_transport::find::{self, FindOptions};
use tstat_transport::parse::{NdjsonSink, ParseError, ParseOptions, Parser, Protocol};

const PROG: &str = "tstat-parse";

type Cli = tstat_transport::args::ParseCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let protocol = cli.protocol.map(|p| match p {
        ProtocolArg::Tcp => Protocol::Tcp,
        ProtocolArg::Udp => Protocol::Udp,
    });
    if cli.paths.iter().any(|p| p.as_os_str() == "-") && protocol.is_none() {
        return cli::usage_error(
            PROG,
            "reading a log from stdin ('-') needs --protocol tcp|udp",
        );
    }
    let opts = ParseOptions {
        threshold: cli
            .threshold
            .or(cli.bytes)
            .unwrap_or(tstat_transport::bytesize::DEFAULT_BYTES),
        sensor: cli.sensor.unwrap_or_else(cli::hostname),
        instance: cli.instance,
        legacy_udp: cli.legacy_udp_duration,
        verbose: cli.verbose,
        prog: PROG.into(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    cli::finish(PROG, run(cli.paths, protocol, opts))
}

fn run(
    paths: Vec<PathBuf>,
    protocol: Option<Protocol>,
    opts: ParseOptions,
) -> anyhow::Result<ExitCode> {
    let mut parser = Parser::new(opts);
    let stdout = io::stdout();
    let mut sink = NdjsonSink(io::BufWriter::with_capacity(1 << 17, stdout.lock()));
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
        for line in io::stdin().lock().lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            one(&mut parser, PathBuf::from(line), &mut sink)?;
        }
    } else {
        for path in paths {
            one(&mut parser, path, &mut sink)?;
        }
    }
    sink.0.flush()?;
    Ok(if failed {
        ExitCode::from(cli::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
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
