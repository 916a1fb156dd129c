//! `tstat-parse`: Tstat logs in, NDJSON flow documents out (SPEC §3, §4).

use std::ffi::OsStr;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use tstat_transport::parse::{self, NdjsonSink, ParseError, ParseOptions, Parser, Protocol};
use tstat_transport::{chunk, cli};

const PROG: &str = "tstat-parse";

/// Turn Tstat log rows into flow documents, one JSON object per line.
///
/// Each PATH is a tstat directory (its log_tcp_complete, then its
/// log_udp_complete, plain or .gz) or a single log file; `-` reads a log from
/// stdin (with --protocol). Without PATHs, directory paths are read from stdin,
/// one per line (or NUL-terminated with -0), as bytes, so
/// `tstat-find ROOT | tstat-parse` works with any directory name.
///
/// TSTAT_PARSE_THREADS=N sets the number of worker threads for large files
/// (default: the number of cores).
#[derive(clap::Parser, Debug)]
#[command(name = PROG, version)]
struct Cli {
    /// Tstat directories or log files.
    paths: Vec<PathBuf>,
    /// Keep flows of at least this many bytes: 1000, 25G, 25Gb, 1.5G, 10GiB …
    /// [default: 25Gb]
    #[arg(short = 'b', long, value_name = "N", value_parser = cli::bytes_arg, conflicts_with = "threshold")]
    bytes: Option<u64>,
    /// Keep flows of at least this many megabytes (10^6 bytes).
    #[arg(short = 'T', long, value_name = "MB", value_parser = cli::megabytes_arg)]
    threshold: Option<u64>,
    /// Sensor id in every document [default: the host name].
    #[arg(short = 'S', long, value_name = "ID")]
    sensor: Option<String>,
    /// Instance id (a JSON string when given; the integer 0 otherwise).
    #[arg(short = 'I', long, value_name = "ID")]
    instance: Option<String>,
    /// Reproduce the original tool's UDP durations (1000× too small).
    #[arg(long)]
    legacy_udp_duration: bool,
    /// Protocol of a log file whose name does not tell (or of stdin `-`).
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// Report every skipped row with its file and line number.
    #[arg(short, long)]
    verbose: bool,
    /// Paths on stdin end with NUL instead of a newline (`tstat-find -0`).
    #[arg(short = '0', long, conflicts_with = "paths")]
    null: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ProtocolArg {
    Tcp,
    Udp,
}

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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match parse::threads_from_env(cores) {
        Ok(n) => n,
        Err(msg) => return cli::usage_error(PROG, msg),
    };
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
        threads,
        stop: None,
        // Skipped like tstat_send does, so `| tstat-chunk` gives its arrays.
        max_doc: chunk::DEFAULT_MAX_BYTES - 2,
    };
    cli::finish(PROG, run(cli.paths, cli.null, protocol, opts))
}

fn run(
    paths: Vec<PathBuf>,
    null: bool,
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
            failed |= !outcome.errors.is_empty();
            Ok(())
        };
    if paths.is_empty() {
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
        ExitCode::from(cli::EXIT_FAILURE)
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
        let c =
            Cli::try_parse_from(["tstat-parse", "-b", "1.5G", "-S", "s", "-I", "1", "d"]).unwrap();
        assert_eq!(
            (c.bytes, c.sensor.as_deref(), c.instance.as_deref()),
            (Some(1_500_000_000), Some("s"), Some("1"))
        );
        assert!(Cli::try_parse_from(["tstat-parse", "-b", "1G", "-T", "5"]).is_err());
        assert!(Cli::try_parse_from(["tstat-parse", "--bytes", "12X"]).is_err());
        assert!(Cli::try_parse_from(["tstat-parse", "-0"]).unwrap().null);
        assert!(Cli::try_parse_from(["tstat-parse", "-0", "d"]).is_err());
    }

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
