//! What the stages tell the operator, and the counts of a run.
//!
//! The library never writes to stderr: the parser, the driver and the
//! publisher hand [`Event`]s to a [`Reporter`], and only the programs decide
//! how they are printed (see `cli::StderrReporter`).

use std::fmt;

/// Counts for one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Data rows read (not counting the header, blank or skipped lines).
    pub rows: u64,
    /// Flow documents emitted.
    pub flows: u64,
    /// Lines skipped as malformed (wrong field count, bad UTF-8, repeated
    /// header, truncated last line).
    pub skipped_rows: u64,
    /// Directions dropped because a value could not be computed.
    pub dropped: u64,
    /// Line number of the first skip or drop.
    pub first_problem_line: Option<u64>,
}

impl FileStats {
    /// Adds counts of a later part (or another file); the first problem
    /// line stays the first one seen.
    pub fn add(&mut self, o: &FileStats) {
        self.rows += o.rows;
        self.flows += o.flows;
        self.skipped_rows += o.skipped_rows;
        self.dropped += o.dropped;
        if self.first_problem_line.is_none() {
            self.first_problem_line = o.first_problem_line;
        }
    }

    /// The end-of-file warning text, or `None` when nothing was skipped.
    pub fn summary(&self) -> Option<String> {
        let line = self.first_problem_line?;
        let mut parts = Vec::new();
        if self.skipped_rows > 0 {
            parts.push(format!(
                "{} malformed row{} skipped",
                self.skipped_rows,
                if self.skipped_rows == 1 { "" } else { "s" }
            ));
        }
        if self.dropped > 0 {
            parts.push(format!(
                "{} flow direction{} dropped (values that cannot be computed)",
                self.dropped,
                if self.dropped == 1 { "" } else { "s" }
            ));
        }
        Some(format!("{} (first at line {line})", parts.join(", ")))
    }
}

/// The totals of a driver run (design §8.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Directories finished (marked, or printed with `-N`).
    pub directories: u64,
    /// Rows read.
    pub rows: u64,
    /// Rows skipped plus directions dropped.
    pub skipped: u64,
    /// Flows kept.
    pub flows: u64,
    /// Messages confirmed (or printed).
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
}

impl Summary {
    /// The one summary line of design §8.5; `printed` for `-N`, where
    /// messages are printed rather than confirmed.
    pub fn line(&self, secs: f64, printed: bool) -> String {
        let n = |count: u64, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        format!(
            "{}, {} read, {} skipped, {} kept, {} {}, {:.1} MB, {:.1} s",
            n(self.directories, "directory", "directories"),
            n(self.rows, "row", "rows"),
            n(self.skipped, "row", "rows"),
            n(self.flows, "flow", "flows"),
            n(self.messages, "message", "messages"),
            if printed { "printed" } else { "confirmed" },
            self.bytes as f64 / 1e6,
            secs
        )
    }
}

/// How much an event matters to the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed; the run will not exit 0 because of it.
    Error,
    /// Something was skipped or held back, or may need a look.
    Warning,
    /// Progress or a decision worth a line with `--verbose`.
    Info,
}

/// One thing a stage tells the operator.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    /// A row was skipped or a direction dropped (printed with `--verbose`).
    RowSkipped {
        /// The log's name.
        file: &'a str,
        /// Its line number.
        line: u64,
        /// Why.
        why: &'a str,
    },
    /// A file was read to its end; its counts (a warning when anything was
    /// skipped).
    FileDone {
        /// The log's name.
        file: &'a str,
        /// What was read, kept and skipped.
        stats: &'a FileStats,
    },
    /// A file, directory or path could not be (fully) read.
    FileFailed {
        /// What went wrong; names the path.
        error: &'a (dyn std::error::Error + 'a),
    },
    /// Where a driver run is (a progress bar on a terminal).
    Progress(Progress<'a>),
    /// Any other line: an error, a warning or a notice.
    Message {
        /// How much it matters.
        level: Level,
        /// The text, without the program's name.
        text: &'a dyn fmt::Display,
    },
}

/// The steps of a driver run, for a progress display.
#[derive(Clone, Copy)]
pub enum Progress<'a> {
    /// A pass over `dirs` directories starts; `bytes` is the size of their
    /// logs when [`Reporter::shows_progress`] asked for it, else 0.
    PassStarted {
        /// Directories in the pass.
        dirs: usize,
        /// Their logs' size.
        bytes: u64,
    },
    /// A directory of the pass starts.
    DirStarted {
        /// Its place in the pass, from 0.
        index: usize,
        /// Its name in message ids.
        name: &'a str,
    },
    /// Messages of the current directory handed on so far.
    Messages {
        /// The directory's name.
        name: &'a str,
        /// How many.
        count: u64,
    },
    /// The current directory is over; `bytes` of logs are done.
    DirDone {
        /// Its logs' size (0 when sizes were not asked for).
        bytes: u64,
    },
    /// The pass is over, however it ended.
    PassDone,
    /// Waiting for the next pass (`--watch`).
    Waiting {
        /// What is waited for, and the totals so far.
        text: &'a dyn fmt::Display,
    },
    /// The wait is over.
    WaitDone,
}

/// Receives the events of a stage. Implementations must tolerate calls from
/// several threads.
pub trait Reporter: Send + Sync {
    /// Takes one event.
    fn report(&self, event: Event<'_>);

    /// Whether progress is shown, so that sizes are worth measuring.
    fn shows_progress(&self) -> bool {
        false
    }

    /// Reports an error line.
    fn error(&self, text: &dyn fmt::Display) {
        self.report(Event::Message {
            level: Level::Error,
            text,
        });
    }

    /// Reports a warning line.
    fn warning(&self, text: &dyn fmt::Display) {
        self.report(Event::Message {
            level: Level::Warning,
            text,
        });
    }

    /// Reports a notice (`--verbose`).
    fn info(&self, text: &dyn fmt::Display) {
        self.report(Event::Message {
            level: Level::Info,
            text,
        });
    }
}

/// A reporter that drops everything (for library users who only want the
/// returned counts).
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event<'_>) {}
}

/// A reporter that keeps every event as a line of text, for tests.
#[derive(Debug, Default)]
pub struct Collect(pub std::sync::Mutex<Vec<String>>);

impl Collect {
    /// The lines kept so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Reporter for Collect {
    fn report(&self, event: Event<'_>) {
        let line = match event {
            Event::RowSkipped { file, line, why } => format!("skipped: {file}: line {line}: {why}"),
            Event::FileDone { file, stats } => format!("done: {file}: {} rows", stats.rows),
            Event::FileFailed { error } => format!("failed: {error}"),
            Event::Progress(_) => return,
            Event::Message { level, text } => format!("{level:?}: {text}"),
        };
        if let Ok(mut v) = self.0.lock() {
            v.push(line);
        }
    }
}
