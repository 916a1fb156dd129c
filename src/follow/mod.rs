//! Reading Tstat logs while Tstat writes them (design §12): complete rows
//! only, from a recorded position, across a log deleted and created again
//! (Tstat restarted within the hour), and noticing when Tstat rotates to a
//! new directory. It reads and parses; it never publishes. [`Follower`] is
//! the one reader; [`docs`] is its sink for `tstat-parse --follow`, the
//! driver's follow mode another.

pub mod docs;
mod reader;
mod tail;

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use self::reader::{
    DirEnd, FollowFailed, FollowSink, Follower, POLL, ROTATION_CHECK, Seen, Watch,
};
pub use self::tail::{Polled, Tail};
use crate::find;
use crate::parse::{FileStats, Header, ParseError, Protocol};
use crate::report::{Event, Reporter};
use crate::resume::LogPos;

/// The two logs a Tstat directory can hold, in stream order.
pub const LOGS: [(&str, Protocol); 2] = [
    ("log_tcp_complete", Protocol::Tcp),
    ("log_udp_complete", Protocol::Udp),
];

/// A log followed for rows: its tail, its header once read and the number
/// of the next line.
#[derive(Debug)]
pub struct LiveLog {
    name: String,
    proto: Protocol,
    tail: Tail,
    header: Option<Header>,
    /// Number of the first line not yet handed out (1: the header).
    line: u64,
    block: Vec<u8>,
}

/// What one look at a live log gave.
#[derive(Debug)]
pub enum Step<'a> {
    /// Complete rows (perhaps none).
    Rows(Rows<'a>),
    /// The file was replaced (deleted and created again) after what it held
    /// was read; follow the new one with [`LiveLog::new`] from position 0.
    Replaced {
        /// Line number of a last row the old file holds without its newline
        /// (Tstat stopped part-way through it): a truncated row.
        truncated: Option<u64>,
    },
}

/// Rows read from a live log, for [`crate::parse::Parser::parse_lines`].
#[derive(Debug)]
pub struct Rows<'a> {
    /// The log's header.
    pub header: Option<&'a Header>,
    /// Complete lines.
    pub lines: &'a [u8],
    /// Number of the first of them.
    pub first_line: u64,
    /// Bytes of an unterminated last line of a finished log (not in
    /// `lines`; a truncated row).
    pub truncated: usize,
    /// That line's number.
    pub truncated_line: u64,
    /// The log holds more: read again at once.
    pub more: bool,
}

impl LiveLog {
    /// Follows the log at `path` from `pos` (of an earlier run, or the
    /// default: from its start). A file that is not the one recorded (another
    /// inode, or shorter than the position) is read from its start: the
    /// second value says so.
    pub fn new(path: &Path, proto: Protocol, pos: LogPos) -> Result<(LiveLog, bool), ParseError> {
        let name = path.display().to_string();
        let io_err = |source| ParseError::Io {
            path: name.clone(),
            source,
        };
        let mut log = LiveLog {
            name: name.clone(),
            proto,
            tail: Tail::new(path, 0, 0),
            header: None,
            line: 1,
            block: Vec::new(),
        };
        if pos.offset == 0 {
            log.tail = Tail::new(path, pos.inode, 0);
            // Only a position with something read before it can be lost.
            let replaced = pos.inode != 0
                && pos.docs > 0
                && std::fs::metadata(path).is_ok_and(|m| m.ino() != pos.inode);
            return Ok((log, replaced));
        }
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        match meta {
            Some(m) if m.ino() == pos.inode && m.len() >= pos.offset => {
                let mut first = Vec::new();
                BufReader::new(File::open(path).map_err(io_err)?)
                    .read_until(b'\n', &mut first)
                    .map_err(io_err)?;
                log.header = Some(Header::from_line(&first, &name, proto)?);
                log.tail = Tail::new(path, pos.inode, pos.offset);
                log.line = pos.line + 1;
                Ok((log, false))
            }
            _ => Ok((log, true)),
        }
    }

    /// The log's path as shown in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The inode followed (0 before the file exists).
    pub fn inode(&self) -> u64 {
        self.tail.inode()
    }

    /// Bytes written to the file that are not handed out yet.
    pub fn behind(&self) -> u64 {
        self.tail.behind()
    }

    /// The position after the rows handed out so far: byte offset and lines.
    pub fn position(&self) -> (u64, u64) {
        (self.tail.offset(), self.line - 1)
    }

    /// The rows written since the last look. With `finished` (Tstat has
    /// rotated away from the directory), to the end of the file.
    pub fn read(&mut self, finished: bool) -> Result<Step<'_>, ParseError> {
        self.block.clear();
        let io_err = |source| ParseError::Io {
            path: self.name.clone(),
            source,
        };
        let (more, truncated) = match self.tail.poll(&mut self.block).map_err(io_err)? {
            Polled::Replaced => {
                let truncated = (self.tail.take_partial() > 0).then_some(self.line);
                return Ok(Step::Replaced { truncated });
            }
            Polled::Lines { more, .. } if more || !finished => (more, 0),
            Polled::Lines { .. } => (false, self.tail.take_partial()),
        };
        let mut lines = &self.block[..];
        let mut first_line = self.line;
        if self.header.is_none()
            && let Some(nl) = memchr::memchr(b'\n', lines)
        {
            self.header = Some(Header::from_line(&lines[..nl], &self.name, self.proto)?);
            lines = &lines[nl + 1..];
            first_line += 1;
        }
        let count = memchr::memchr_iter(b'\n', lines).count() as u64;
        self.line = first_line + count + u64::from(truncated > 0);
        Ok(Step::Rows(Rows {
            header: self.header.as_ref(),
            lines,
            first_line,
            truncated,
            truncated_line: first_line + count,
            more,
        }))
    }
}

/// Counts a row a log ended part-way through as skipped, and reports it.
pub fn count_truncated(
    stats: &mut FileStats,
    reporter: &dyn Reporter,
    file: &str,
    line: u64,
    why: &str,
) {
    stats.skipped_rows += 1;
    stats.first_problem_line.get_or_insert(line);
    reporter.report(Event::RowSkipped {
        file,
        line,
        why: &format!("truncated last line ({why})"),
    });
}

/// Whether a newer Tstat directory exists beside `dir`: Tstat rotated away
/// from it, so it is complete.
pub fn rotated(dir: &Path) -> io::Result<bool> {
    Ok(successor(dir)?.is_some())
}

/// The Tstat directory Tstat wrote after `dir`: the oldest one newer than
/// it beside it (so none is skipped when Tstat rotated twice meanwhile).
pub fn successor(dir: &Path) -> io::Result<Option<PathBuf>> {
    Ok(scan_successor(dir)?.0)
}

/// [`successor`], and whether any entry beside `dir` sorts after it (a
/// directory Tstat has made but not yet put a log in, say).
fn scan_successor(dir: &Path) -> io::Result<(Option<PathBuf>, bool)> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok((None, false));
    };
    let ours = find::name_key(name);
    let mut best: Option<(Vec<u8>, PathBuf)> = None;
    let mut newer = false;
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let key = find::name_key(&entry.file_name()).into_owned();
        newer |= *key > *ours;
        if *key > *ours
            && best.as_ref().is_none_or(|(b, _)| key < *b)
            && find::is_tstat_dir(&entry.path()).unwrap_or(false)
        {
            best = Some((key, entry.path()));
        }
    }
    Ok((best.map(|(_, p)| p), newer))
}

/// [`rotated`] for a follower asking every second, at a cost that does not
/// grow with the directories beside the followed one: the parent is listed
/// again only when its modification time changed (a new directory in it
/// changes it), or while an entry that sorts after the followed directory
/// is there but not yet a Tstat directory.
#[derive(Debug, Default)]
pub struct RotationWatch {
    /// The parent's modification time when a listing found nothing after
    /// the followed directory (`None`: list it next time).
    quiet_at: Option<std::time::SystemTime>,
}

impl RotationWatch {
    /// Whether Tstat rotated away from `dir`.
    pub fn rotated(&mut self, dir: &Path) -> io::Result<bool> {
        let Some(parent) = dir.parent() else {
            return rotated(dir);
        };
        let mtime = std::fs::metadata(parent)?.modified()?;
        if self.quiet_at == Some(mtime) {
            return Ok(false);
        }
        let began = std::time::SystemTime::now();
        let (next, newer) = scan_successor(dir)?;
        // A listing read within the slack of the parent's last change may
        // have missed part of it: read again next time.
        self.quiet_at = (!newer && mtime + find::MTIME_SLACK < began).then_some(mtime);
        Ok(next.is_some())
    }
}

/// The directories Tstat may still be writing below `root`: in each
/// directory holding Tstat directories, the newest one, unless it is marked
/// done. Newest first.
pub fn live_dirs(root: &Path) -> Vec<PathBuf> {
    live_among(&find::walk_tstat_dirs(root, &mut |_| {}))
}

/// [`live_dirs`] among the Tstat directories of a walk.
pub fn live_among(found: &[find::TstatDir]) -> Vec<PathBuf> {
    let latest = find::latest_per_parent(found);
    let mut out: Vec<&Path> = found
        .iter()
        .filter(|d| {
            !d.done
                && d.path
                    .parent()
                    .and_then(|parent| latest.get(parent))
                    .is_some_and(|l| find::path_key(&d.path) == *l)
        })
        .map(|d| d.path.as_path())
        .collect();
    out.sort_by_key(|d| std::cmp::Reverse(find::path_key(d)));
    out.into_iter().map(Path::to_path_buf).collect()
}

/// The directory to follow below `root` (design §12): the newest one Tstat
/// may still be writing. When several are being written, says once (with
/// `noted`) which is followed and which are not, then `advice`.
pub fn live_dir(
    root: &Path,
    advice: &str,
    reporter: &dyn Reporter,
    noted: &mut bool,
) -> Option<PathBuf> {
    newest_live(live_dirs(root), advice, reporter, noted)
}

/// The newest of the directories Tstat may still be writing, `live`
/// (newest first); when there are several, says so once (see [`live_dir`]).
pub fn newest_live(
    live: Vec<PathBuf>,
    advice: &str,
    reporter: &dyn Reporter,
    noted: &mut bool,
) -> Option<PathBuf> {
    let newest = live.first()?.clone();
    if live.len() > 1 && !std::mem::replace(noted, true) {
        let others: Vec<String> = live[1..].iter().map(|d| d.display().to_string()).collect();
        reporter.warning(&format_args!(
            "several directories are being written; following the newest, {}, not {}{advice}",
            newest.display(),
            others.join(", ")
        ));
    }
    Some(newest)
}

/// The paths of a directory's logs in stream order; `Err` names a gzipped
/// log (`tstat -Z`), which cannot be read while it is written.
pub fn live_logs(dir: &Path) -> Result<[(PathBuf, Protocol); 2], PathBuf> {
    for (name, _) in LOGS {
        let gz = dir.join(format!("{name}.gz"));
        if gz.exists() {
            return Err(gz);
        }
    }
    Ok(LOGS.map(|(name, proto)| (dir.join(name), proto)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/real-3.3/2024_06_08_09_10.out/log_tcp_complete");
        std::fs::read(p).expect("fixture")
    }

    #[test]
    fn rotation_watch_sees_a_successor_that_gets_its_log_later() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let live = tmp.path().join("2026_03_01_00_00.out");
        std::fs::create_dir(&live).expect("mkdir");
        std::fs::write(live.join("log_tcp_complete"), b"#\n").expect("log");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let set_mtime = |t| {
            File::open(tmp.path())
                .expect("open dir")
                .set_times(std::fs::FileTimes::new().set_modified(t))
                .expect("set mtime")
        };
        set_mtime(old);
        let mut w = RotationWatch::default();
        assert!(!w.rotated(&live).expect("look"));
        assert!(!w.rotated(&live).expect("look"));
        // Tstat makes the next directory, then its logs: the parent's time
        // changes only with the first step (long ago, beyond the slack).
        let next = tmp.path().join("2026_03_01_01_00.out");
        std::fs::create_dir(&next).expect("mkdir");
        set_mtime(old + std::time::Duration::from_secs(1));
        assert!(!w.rotated(&live).expect("look"), "no log in it yet");
        std::fs::write(next.join("log_tcp_complete"), b"#\n").expect("log");
        assert!(w.rotated(&live).expect("look"));
    }

    #[test]
    fn a_replaced_log_reports_its_unfinished_last_row() {
        let data = fixture();
        let ends: Vec<usize> = memchr::memchr_iter(b'\n', &data).map(|i| i + 1).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log_tcp_complete");
        // Header, two rows, half of the third.
        std::fs::write(&path, &data[..ends[2] + 10]).expect("write");
        let (mut log, replaced) =
            LiveLog::new(&path, Protocol::Tcp, LogPos::default()).expect("open");
        assert!(!replaced);
        match log.read(false).expect("read") {
            Step::Rows(r) => {
                assert!(r.header.is_some());
                assert_eq!(r.first_line, 2);
                assert_eq!(r.lines, &data[ends[0]..ends[2]]);
            }
            Step::Replaced { .. } => panic!("not replaced yet"),
        }
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, &data[..ends[1]]).expect("new file");
        match log.read(false).expect("read") {
            Step::Replaced { truncated } => assert_eq!(truncated, Some(4)),
            Step::Rows(r) => panic!("{} bytes read from the old file", r.lines.len()),
        }
    }

    #[test]
    fn a_recorded_position_of_another_file_is_said_to_be_replaced() {
        let data = fixture();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log_tcp_complete");
        std::fs::write(&path, &data).expect("write");
        let inode = std::fs::metadata(&path).expect("stat").ino();
        let at = |inode, offset, docs| LogPos {
            inode,
            offset,
            line: 1,
            docs,
        };
        let (_, replaced) = LiveLog::new(&path, Protocol::Tcp, at(inode, 0, 3)).expect("open");
        assert!(!replaced);
        let (_, replaced) = LiveLog::new(&path, Protocol::Tcp, at(inode + 1, 0, 0)).expect("open");
        assert!(!replaced, "nothing was read of the other file");
        let (_, replaced) = LiveLog::new(&path, Protocol::Tcp, at(inode + 1, 0, 3)).expect("open");
        assert!(replaced);
        let (_, replaced) =
            LiveLog::new(&path, Protocol::Tcp, at(inode, data.len() as u64 + 1, 0)).expect("open");
        assert!(replaced, "shorter than the position");
    }
}
