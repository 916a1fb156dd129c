//! Shared pieces of the programs: exit codes, the one error-line format, and
//! recognising a closed stdout. Never used for data, only for reporting.

pub mod args;
pub mod bar;
pub mod runtime;
pub mod stop;

use std::io;
use std::process::ExitCode;

/// How a program ends (README, "Exit status").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything was done.
    Ok,
    /// 1: a runtime failure (bad file, broker error, …).
    Failure,
    /// 2: a usage or configuration error.
    Usage,
    /// 3: `tstat-rabbit --fingerprint`: the resume point no longer matches
    /// the input.
    Refused,
    /// 75 (EX_TEMPFAIL): another run holds the tree; nothing was done.
    Locked,
    /// 130: stopped by SIGINT.
    Interrupted,
    /// 143: stopped by SIGTERM.
    Terminated,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Refused => 3,
            Exit::Locked => 75,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// The outcome of two parts of one run: a signal outranks everything (the
    /// run was stopped), a usage error outranks what happened at run time,
    /// and a specific status (3, 75) outranks the generic failure.
    pub fn merge(self, other: Exit) -> Exit {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    fn rank(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Refused => 2,
            Exit::Locked => 3,
            Exit::Usage => 4,
            Exit::Interrupted => 5,
            Exit::Terminated => 6,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

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
#[derive(Debug)]
pub struct StderrReporter {
    prog: String,
    verbose: bool,
    bar: Option<bar::Bar>,
}

impl StderrReporter {
    /// A reporter for program `prog`; `verbose` adds skipped rows and notices.
    pub fn new(prog: &str, verbose: bool) -> Self {
        StderrReporter {
            prog: prog.to_string(),
            verbose,
            bar: None,
        }
    }

    /// Also draws a progress bar, when `wanted` and stderr is a terminal.
    pub fn with_progress(mut self, wanted: bool) -> Self {
        self.bar = bar::Bar::available(wanted).then(bar::Bar::default);
        self
    }
}

impl crate::report::Reporter for StderrReporter {
    fn shows_progress(&self) -> bool {
        self.bar.is_some()
    }

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
            Event::Progress(step) => {
                if let Some(b) = &self.bar {
                    b.update(step);
                }
            }
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
            Exit::Failure.into()
        }
    }
}

/// Reports a usage error (exit 2) from a value that failed validation.
pub fn usage_error(prog: &str, msg: impl std::fmt::Display) -> ExitCode {
    error(prog, msg);
    Exit::Usage.into()
}

/// Buffered stdout for a filter's data, one size for every program.
pub fn stdout_writer() -> io::BufWriter<io::StdoutLock<'static>> {
    io::BufWriter::with_capacity(1 << 17, io::stdout().lock())
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
                Exit::Usage.into()
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
    fn merge_keeps_the_more_serious_outcome() {
        use Exit::*;
        assert_eq!(Ok.merge(Ok), Ok);
        assert_eq!(Ok.merge(Failure), Failure);
        assert_eq!(Failure.merge(Ok), Failure);
        assert_eq!(Failure.merge(Refused), Refused);
        assert_eq!(Locked.merge(Failure), Locked);
        assert_eq!(Failure.merge(Usage), Usage);
        assert_eq!(Usage.merge(Interrupted), Interrupted);
        assert_eq!(Terminated.merge(Interrupted), Terminated);
        let all = [Ok, Failure, Usage, Refused, Locked, Interrupted, Terminated];
        for a in all {
            for b in all {
                assert_eq!(a.merge(b), b.merge(a), "{a:?} {b:?}");
                assert_eq!(a.merge(b).merge(b), a.merge(b));
            }
        }
        assert_eq!(all.map(Exit::code), [0, 1, 2, 3, 75, 130, 143]);
    }

    #[test]
    fn broken_pipe_found_in_chain() {
        let e = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(e.as_ref()));
        let e = anyhow::anyhow!("other");
        assert!(!is_broken_pipe(e.as_ref()));
    }
}
