//! `tstat-chunk`: NDJSON objects in, JSON arrays of N objects out (design §5).

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use tstat_transport::chunk::{self, Chunker, LineRead};
use tstat_transport::cli;

const PROG: &str = "tstat-chunk";

type Cli = tstat_transport::cli::args::ChunkCli;

fn main() -> ExitCode {
    let cli = match cli::parse_args::<Cli>(PROG) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cli::finish(PROG, run(cli.size as usize, cli.max_bytes as usize))
}

fn run(size: usize, max_bytes: usize) -> anyhow::Result<ExitCode> {
    let mut out = cli::stdout_writer();
    let mut chunker = Chunker::new(size, max_bytes, |a: &[u8], _n: usize| {
        out.write_all(a)?;
        out.write_all(b"\n")
    });
    let stdin = io::stdin();
    if stdin.is_terminal() {
        // Typed alone, it would otherwise wait in silence.
        eprintln!(
            "{PROG}: reading NDJSON flow documents from stdin \
             (e.g. tstat-parse DIR | tstat-chunk); Ctrl-D ends, --help shows more"
        );
    }
    let mut input = io::BufReader::with_capacity(1 << 17, stdin.lock());
    let mut line = Vec::with_capacity(4096);
    let mut lineno = 0u64;
    // A data error ends the input; what came before is still written.
    let mut bad_line: Option<String> = None;
    loop {
        // A line is refused as soon as it is longer than an array may be,
        // never buffered whole (it could be any size).
        let read =
            chunk::read_line_bounded(&mut input, &mut line, max_bytes).context("reading stdin")?;
        if read == LineRead::End {
            break;
        }
        lineno += 1;
        if read == LineRead::TooLong {
            bad_line = Some(format!(
                "longer than {max_bytes} bytes, so no document on it fits in an array \
                 of at most {max_bytes} bytes (--max-bytes)"
            ));
            break;
        }
        let pushed = match chunk::check_object(&line) {
            Ok(doc) => chunker.push(doc),
            Err(why) => {
                bad_line = Some(why);
                break;
            }
        };
        match pushed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                bad_line = Some(e.to_string());
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    chunker.flush()?;
    drop(chunker);
    out.flush()?;
    Ok(match bad_line {
        Some(why) => {
            cli::error(PROG, format!("stdin: line {lineno}: {why}"));
            cli::Exit::Failure.into()
        }
        None => ExitCode::SUCCESS,
    })
}
