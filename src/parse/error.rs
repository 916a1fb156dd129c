//! Why a file (not a row) could not be parsed: one matchable error, each
//! variant naming its path, with the counts of rows read before a failure
//! part-way.

use std::io;

use crate::report::FileStats;

/// Why a file (not a row) could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The header is missing, unsupported, or lacks a core column.
    #[error("{path}: {msg}")]
    Header {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A gzip stream ended early, or reading failed part-way; the complete
    /// rows before it were emitted.
    #[error("{path}: {msg}")]
    Truncated {
        /// The file.
        path: String,
        /// What happened.
        msg: String,
        /// Counts of the rows read before it.
        stats: FileStats,
    },
    /// A parser worker thread failed (panicked or stopped); the rows of the
    /// blocks before the failed one were emitted, nothing after it.
    #[error("{path}: a parser thread failed: {msg}; the rest of the file was not parsed")]
    Worker {
        /// The file.
        path: String,
        /// What happened (the panic message).
        msg: String,
        /// Counts of the rows emitted before it.
        stats: FileStats,
    },
    /// The stop flag of [`ParseOptions::stop`] was set while this file was
    /// read; the rows before it were emitted.
    #[error("{path}: parsing interrupted")]
    Interrupted {
        /// The file.
        path: String,
        /// Counts of the rows emitted before it.
        stats: FileStats,
    },
    /// The sink (stdout, a channel) failed; this ends all parsing.
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
    /// A log name in a directory is not a regular file.
    #[error("{path}: is {what}, not a regular file; a Tstat log must be a regular file")]
    NotRegular {
        /// The log.
        path: String,
        /// What it is instead.
        what: String,
    },
    /// A log is a symbolic link that resolves outside its directory.
    #[error("{path}: is a symbolic link to {target}, outside its directory; refusing to follow it")]
    Outside {
        /// The log.
        path: String,
        /// Where it resolves to.
        target: String,
    },
    /// Neither log exists in a directory.
    #[error("{path}: no log_tcp_complete or log_udp_complete in this directory")]
    NoLogs {
        /// The directory.
        path: String,
    },
}

impl ParseError {
    /// True when the error comes from the output side and must stop the run.
    pub fn is_output(&self) -> bool {
        matches!(self, ParseError::Output(_))
    }

    /// The file or directory the error is about (`None` for output errors).
    pub fn path(&self) -> Option<&str> {
        match self {
            ParseError::Io { path, .. }
            | ParseError::Header { path, .. }
            | ParseError::Truncated { path, .. }
            | ParseError::Worker { path, .. }
            | ParseError::Interrupted { path, .. }
            | ParseError::NotRegular { path, .. }
            | ParseError::Outside { path, .. }
            | ParseError::NoLogs { path } => Some(path),
            ParseError::Output(_) => None,
        }
    }

    /// True when the stop flag ended parsing.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, ParseError::Interrupted { .. })
    }

    /// The counts of the rows read before a file failed part-way (a
    /// truncated `.gz`, a read error, a worker failure, an interruption):
    /// those rows' documents were emitted, so summaries and metrics must
    /// count them. `None` for errors that happen before any row.
    pub fn partial_stats(&self) -> Option<&FileStats> {
        match self {
            ParseError::Truncated { stats, .. }
            | ParseError::Worker { stats, .. }
            | ParseError::Interrupted { stats, .. } => Some(stats),
            _ => None,
        }
    }

    /// The counts to fill in when an error part-way is returned.
    pub(super) fn partial_stats_mut(&mut self) -> Option<&mut FileStats> {
        match self {
            ParseError::Truncated { stats, .. }
            | ParseError::Worker { stats, .. }
            | ParseError::Interrupted { stats, .. } => Some(stats),
            _ => None,
        }
    }
}
