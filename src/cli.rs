//! Shared pieces of the programs: exit codes, the one error-line format, and
//! recognising a closed stdout. Never used for data, only for reporting.

use std::io;
use std::process::ExitCode;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: a runtime failure (bad file, broker error, …).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status after SIGINT.
pub const EXIT_SIGINT: u8 = 130;
/// Exit status after SIGTERM.
pub const EXIT_SIGTERM: u8 = 143;

/// Prints `prog: error: msg` on stderr.
pub fn error(prog: &str, msg: impl std::fmt::Display) {
    print_line(&format!("{prog}: error: {msg}"));
}

/// Prints `prog: warning: msg` on stderr.
pub fn warning(prog: &str, msg: impl std::fmt::Display) {
    print_line(&format!("{prog}: warning: {msg}"));
}

/// The progress bar on screen, if any: lines printed meanwhile go above it
/// instead of through it.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Makes `bar` the one lines are printed around (`None`: no bar).
pub fn set_progress_bar(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar;
    }
}

/// Prints one line on stderr, above the progress bar when one is shown.
pub fn print_line(line: &str) {
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// The programs' reporter: events become `prog: …` lines on stderr, printed
/// above the progress bar when one is shown.
#[derive(Clone, Debug)]
pub struct StderrReporter {
    prog: String,
    verbose: bool,
}

impl StderrReporter {
    /// A reporter for program `prog`; `verbose` adds skipped rows and notices.
    pub fn new(prog: &str, verbose: bool) -> Self {
        StderrReporter {
            prog: prog.to_string(),
            verbose,
        }
    }
}

impl crate::report::Reporter for StderrReporter {
    fn report(&self, event: crate::report::Event<'_>) {
        use crate::report::{Event, Level};
        let prog = &self.prog;
        match event {
            Event::RowSkipped { file, line, why } => {
                if self.verbose {
                    print_line(&format!("{prog}: {file}: line {line}: {why}"));
                }
            }
            Event::FileDone { file, stats } => {
                if let Some(s) = stats.summary() {
                    warning(prog, format!("{file}: {s}"));
                }
            }
            Event::FileFailed { error: e } => error(prog, e),
            Event::Message { level, text } => match level {
                Level::Error => error(prog, text),
                Level::Warning => warning(prog, text),
                Level::Info => {
                    if self.verbose {
                        print_line(&format!("{prog}: {text}"));
                    }
                }
            },
        }
    }
}

/// True when the error (or anything in its chain) is a closed pipe, which a
/// filter treats as a quiet, successful end.
pub fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Maps an `anyhow` error from a filter to an exit code: a closed stdout is a
/// quiet 0, anything else is reported and gives 1.
pub fn finish(prog: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            error(prog, format!("{e:#}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Reports a usage error (exit 2) from a value that failed validation.
pub fn usage_error(prog: &str, msg: impl std::fmt::Display) -> ExitCode {
    error(prog, msg);
    ExitCode::from(EXIT_USAGE)
}

/// The host name, used as the default sensor id.
pub fn hostname() -> String {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_string();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string())
}

/// Parses the command line; on a usage error prints it as
/// `prog: error: …` and returns exit status 2 (0 for --help/--version).
pub fn parse_args<T: clap::Parser>(prog: &str) -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = e.print();
                ExitCode::SUCCESS
            }
            _ => {
                let text = e.render().to_string();
                let text = text.strip_prefix("error: ").unwrap_or(&text);
                eprint!("{prog}: error: {text}");
                ExitCode::from(EXIT_USAGE)
            }
        }
    })
}

/// clap value parser for byte counts (`--bytes`).
pub fn bytes_arg(s: &str) -> Result<u64, String> {
    crate::bytesize::parse_bytes(s)
}

/// clap value parser for megabytes (`-T/--threshold`).
pub fn megabytes_arg(s: &str) -> Result<u64, String> {
    crate::bytesize::parse_megabytes(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_found_in_chain() {
        let e = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(e.as_ref()));
        let e = anyhow::anyhow!("other");
        assert!(!is_broken_pipe(e.as_ref()));
    }
}
