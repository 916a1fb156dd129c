//! Discovery of Tstat output directories (design §2): which directories under a
//! root are tstat directories, which are done (`.processed`), which are ready
//! (tstat has rotated away from them or they have been quiet for the settle
//! time), and the atomic `.processed` marker itself.
//!
//! This module only looks at names, file types and modification times; it
//! never opens a log file, never follows a symbolic link during a walk, and
//! never lists the directory Tstat may still be writing unless the caller asks
//! for it (`all`). The only thing it ever writes is `DIR/.processed`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file whose presence marks a tstat directory as done.
pub const PROCESSED: &str = ".processed";

/// What `mark_processed` writes into [`PROCESSED`]: the same bytes as the
/// reference implementation, so trees can move between the two.
pub const PROCESSED_CONTENT: &[u8] = b"processed";

/// The log files whose presence (any one of them) makes a `*.out` directory a
/// tstat directory.
pub const LOG_NAMES: [&str; 4] = [
    "log_tcp_complete",
    "log_udp_complete",
    "log_tcp_complete.gz",
    "log_udp_complete.gz",
];

/// The default quiet time after which a directory without a newer sibling is
/// considered finished: two hours, because Tstat rotates once per hour of
/// packet time and buffers its writes.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(7200);

/// How [`find_ready`] chooses directories.
#[derive(Debug, Clone)]
pub struct FindOptions {
    /// List every directory that is not done, ignoring the readiness rules
    /// (backfills, tests).
    pub all: bool,
    /// Also list directories that are done.
    pub include_done: bool,
    /// How long none of a directory's log files may have been modified before
    /// it counts as finished when no newer sibling exists.
    pub settle: Duration,
    /// The current time, injectable so tests need not sleep.
    pub now: SystemTime,
}

impl Default for FindOptions {
    fn default() -> Self {
        FindOptions {
            all: false,
            include_done: false,
            settle: DEFAULT_SETTLE,
            now: SystemTime::now(),
        }
    }
}

/// A problem met while looking at one path; the walk goes on without it.
#[derive(Debug)]
pub struct FindError {
    /// The path that could not be read.
    pub path: PathBuf,
    /// Why.
    pub err: io::Error,
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.err)
    }
}

impl std::error::Error for FindError {}

/// A tstat directory met during a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TstatDir {
    /// The path as joined from the root (not canonicalised).
    pub path: PathBuf,
    /// 0 when the root itself is the tstat directory.
    pub depth: usize,
    /// True when it holds [`PROCESSED`].
    pub done: bool,
}

/// True when `name` (a file name component) ends in `.out`.
fn has_out_suffix(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.len() > 4 && b.ends_with(b".out")
}

/// True when `path` is a tstat directory: a real directory (not a symbolic
/// link to one) named `*.out` holding `log_tcp_complete` or
/// `log_udp_complete`, plain or `.gz`.
///
/// An error is returned only when the directory's contents cannot be
/// examined (for instance, permission denied); a missing path is `Ok(false)`.
pub fn is_tstat_dir(path: &Path) -> io::Result<bool> {
    if !path.file_name().is_some_and(has_out_suffix) {
        return Ok(false);
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    holds_log(path)
}

/// The log-name test of [`is_tstat_dir`], for a path already known to be a
/// directory.
fn holds_log(dir: &Path) -> io::Result<bool> {
    for name in LOG_NAMES {
        match fs::symlink_metadata(dir.join(name)) {
            Ok(m) if !m.is_dir() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// True when `dir` holds a regular file named [`PROCESSED`].
pub fn is_done(dir: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(dir.join(PROCESSED)) {
        Ok(m) => Ok(m.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `Some(done)` when the directory `dir` (named `name`) is a tstat directory:
/// a `*.out` name and a log in it.
fn holds_dir_log(dir: &Path, name: Option<&OsStr>) -> io::Result<Option<bool>> {
    if !name.is_some_and(has_out_suffix) || !holds_log(dir)? {
        return Ok(None);
    }
    is_done(dir).map(Some)
}

/// Directories open at once during a walk; below this depth the rest of a
/// listing is read into memory first, so a deep tree cannot run out of file
/// descriptors (walkdir's rule, which this walk replaced).
const MAX_OPEN: usize = 10;

/// The entries of one directory still to be visited.
enum Pending {
    /// Read from the open directory as the walk goes.
    Open(fs::ReadDir),
    /// Read ahead, the directory closed.
    Read(std::vec::IntoIter<io::Result<fs::DirEntry>>),
}

impl Pending {
    /// Lists `dir`, found at `depth` (0 for the root).
    fn open(dir: &Path, depth: usize) -> io::Result<Pending> {
        let rd = fs::read_dir(dir)?;
        Ok(if depth >= MAX_OPEN {
            Pending::Read(rd.collect::<Vec<_>>().into_iter())
        } else {
            Pending::Open(rd)
        })
    }
}

impl Iterator for Pending {
    type Item = io::Result<fs::DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Pending::Open(rd) => rd.next(),
            Pending::Read(it) => it.next(),
        }
    }
}

/// Walks `root` (without following symbolic links below it) and returns every
/// tstat directory in walk order. Problems (an unreadable directory, a root
/// that does not exist or is not a directory) go to `on_error` and the walk
/// goes on. A tstat directory's own subdirectories (Tstat's histogram
/// directories) are not walked.
pub fn walk_tstat_dirs(root: &Path, on_error: &mut dyn FnMut(FindError)) -> Vec<TstatDir> {
    walk(root, on_error, &mut Vec::new())
}

/// [`walk_tstat_dirs`], also collecting in `listed` every directory whose
/// listing it read (the root first): a Tstat directory can appear or go
/// only where one of them changes.
fn walk(
    root: &Path,
    on_error: &mut dyn FnMut(FindError),
    listed: &mut Vec<PathBuf>,
) -> Vec<TstatDir> {
    let mut found = Vec::new();
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            on_error(FindError {
                path: root.to_path_buf(),
                err: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
            return found;
        }
        Err(err) => {
            on_error(FindError {
                path: root.to_path_buf(),
                err,
            });
            return found;
        }
    }
    // The root itself may be a tstat directory (depth 0); it is followed
    // when it is a symbolic link, as the caller named it.
    match holds_dir_log(root, root.file_name()) {
        Ok(Some(done)) => {
            found.push(TstatDir {
                path: root.to_path_buf(),
                depth: 0,
                done,
            });
            return found;
        }
        Ok(None) => {}
        Err(err) => {
            on_error(FindError {
                path: root.to_path_buf(),
                err,
            });
            return found;
        }
    }
    // Depth first, each directory in the order the file system lists it.
    // A tstat directory is recognised from its parent's listing and a stat
    // of its log names, never opened: on a tree of 100,000 directories that
    // is two system calls each instead of five.
    let mut stack: Vec<(Pending, PathBuf)> = Vec::new();
    match Pending::open(root, 0) {
        Ok(p) => {
            listed.push(root.to_path_buf());
            stack.push((p, root.to_path_buf()))
        }
        Err(err) => on_error(FindError {
            path: root.to_path_buf(),
            err,
        }),
    }
    while let Some((pending, dir)) = stack.last_mut() {
        let entry = match pending.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Ok(entry)) => entry,
            Some(Err(err)) => {
                let path = dir.clone();
                // A listing that failed part-way is not read further.
                stack.pop();
                on_error(FindError { path, err });
                continue;
            }
        };
        let path = entry.path();
        // DirEntry::file_type does not follow symbolic links: a link is
        // never a directory here.
        match entry.file_type() {
            Ok(t) if t.is_dir() => {}
            Ok(_) => continue,
            Err(err) => {
                on_error(FindError { path, err });
                continue;
            }
        }
        let depth = stack.len();
        match holds_dir_log(&path, Some(&entry.file_name())) {
            Ok(Some(done)) => found.push(TstatDir { path, depth, done }),
            Ok(None) => match Pending::open(&path, depth) {
                Ok(p) => {
                    listed.push(path.clone());
                    stack.push((p, path))
                }
                Err(err) => on_error(FindError { path, err }),
            },
            Err(err) => on_error(FindError { path, err }),
        }
    }
    found
}

/// The newest modification time among the `log_*` files directly in `dir`,
/// or `None` when there is none. Every log Tstat writes counts, not only the
/// two we read: a write to any of them means Tstat is still in `dir`.
pub fn newest_log_mtime(dir: &Path) -> io::Result<Option<SystemTime>> {
    let mut newest: Option<SystemTime> = None;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().as_encoded_bytes().starts_with(b"log_") {
            continue;
        }
        // DirEntry::metadata does not follow symbolic links.
        let m = entry.metadata()?;
        if m.is_dir() {
            continue;
        }
        let t = m.modified()?;
        newest = Some(newest.map_or(t, |n| n.max(t)));
    }
    Ok(newest)
}

/// True when none of `dir`'s log files has been modified for `settle` as of
/// `now`. A modification time in the future (clock skew) counts as recent.
fn is_settled(dir: &Path, settle: Duration, now: SystemTime) -> io::Result<bool> {
    Ok(match newest_log_mtime(dir)? {
        None => true,
        Some(t) => now.duration_since(t).is_ok_and(|age| age >= settle),
    })
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The key directories are ordered by: the directory name itself, which
/// sorts chronologically for Tstat's `YYYY_MM_DD_HH_MM.out` names, except
/// that the names Tstat 2.3 and older wrote, `HH_MM_DD_Mon_YYYY.out`, are
/// rewritten as `YYYY_MM_DD_HH_MM.out` first (as written they do not sort
/// chronologically, and the rotation rule would then take the live directory
/// for an old one).
pub fn name_key(name: &OsStr) -> Cow<'_, [u8]> {
    let b = name.as_encoded_bytes();
    old_name_key(b).map_or(Cow::Borrowed(b), Cow::Owned)
}

/// `HH_MM_DD_Mon_YYYY.out` → `YYYY_MM_DD_HH_MM.out`, or `None`.
fn old_name_key(b: &[u8]) -> Option<Vec<u8>> {
    // 0123456789012345678901
    // HH_MM_DD_Mon_YYYY.out
    if b.len() != 21 || !b.ends_with(b".out") {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let seps = [2, 5, 8, 12].iter().all(|&i| b[i] == b'_');
    if !(seps && digits(0..2) && digits(3..5) && digits(6..8) && digits(13..17)) {
        return None;
    }
    let month = MONTHS.iter().position(|m| m[..] == b[9..12])? + 1;
    let mut key = Vec::with_capacity(21);
    key.extend_from_slice(&b[13..17]);
    key.push(b'_');
    key.extend_from_slice(format!("{month:02}").as_bytes());
    key.push(b'_');
    key.extend_from_slice(&b[6..8]);
    key.push(b'_');
    key.extend_from_slice(&b[0..2]);
    key.push(b'_');
    key.extend_from_slice(&b[3..5]);
    key.extend_from_slice(b".out");
    Some(key)
}

/// The [`name_key`] of a path's last component (empty when it has none).
pub fn path_key(path: &Path) -> Cow<'_, [u8]> {
    path.file_name().map_or(Cow::Borrowed(&[][..]), name_key)
}

/// The [`path_key`] of the latest Tstat directory in each parent of
/// `dirs`: every other one there has been rotated away from.
pub fn latest_per_parent(dirs: &[TstatDir]) -> HashMap<&Path, Cow<'_, [u8]>> {
    let mut latest: HashMap<&Path, Cow<'_, [u8]>> = HashMap::new();
    for d in dirs {
        let Some(parent) = d.path.parent() else {
            continue;
        };
        let key = path_key(&d.path);
        match latest.get_mut(parent) {
            Some(slot) if *slot >= key => {}
            Some(slot) => *slot = key,
            None => {
                latest.insert(parent, key);
            }
        }
    }
    latest
}

/// Sorts directories the way they are listed and processed: by directory
/// name (see [`name_key`]), then by full path; duplicates are removed.
pub fn sort_dirs(dirs: &mut Vec<PathBuf>) {
    dirs.sort_by(|a, b| path_key(a).cmp(&path_key(b)).then_with(|| a.cmp(b)));
    dirs.dedup();
}

/// Finds the directories to process under every root (design §2.3), oldest
/// first (see [`sort_dirs`]).
///
/// A directory that is not done is listed when a tstat directory with a
/// later name ([`name_key`]) exists in the same parent, or when none of its log files has
/// been modified for `opts.settle`; with `opts.all`, always. Done directories
/// are listed only with `opts.include_done`. Problems go to `on_error`; the
/// result holds everything that could be examined.
pub fn find_ready<I>(
    roots: I,
    opts: &FindOptions,
    mut on_error: impl FnMut(FindError),
) -> Vec<PathBuf>
where
    I: IntoIterator,
    I::Item: AsRef<Path>,
{
    let mut found = Vec::new();
    for root in roots {
        found.extend(walk_tstat_dirs(root.as_ref(), &mut on_error));
    }
    ready_among(found, opts, on_error)
}

/// The directories of `found` (a walk's Tstat directories) to process, by
/// the rules of [`find_ready`], oldest first.
pub fn ready_among(
    found: Vec<TstatDir>,
    opts: &FindOptions,
    mut on_error: impl FnMut(FindError),
) -> Vec<PathBuf> {
    let latest = latest_per_parent(&found);

    // Which directories a later sibling rotated away from, decided before
    // `found` is taken apart (the map borrows its paths).
    let rotated: Vec<bool> = found
        .iter()
        .map(|d| {
            d.path
                .parent()
                .and_then(|parent| latest.get(parent))
                .is_some_and(|l| path_key(&d.path) < *l)
        })
        .collect();
    drop(latest);

    // The paths are moved, not copied: on 100,000 directories a second copy
    // of every path would be most of the memory this takes.
    let mut out = Vec::new();
    for (d, rotated) in found.into_iter().zip(rotated) {
        let listed = if d.done {
            opts.include_done
        } else if opts.all || rotated {
            true
        } else {
            match is_settled(&d.path, opts.settle, opts.now) {
                Ok(settled) => settled,
                Err(err) => {
                    on_error(FindError { path: d.path, err });
                    continue;
                }
            }
        };
        if listed {
            out.push(d.path);
        }
    }
    sort_dirs(&mut out);
    out
}

/// How long a directory's modification time may lag behind a change made
/// in it: a listing read this close after its last change may miss part
/// of it (file systems with coarse timestamps), so it is read again.
pub(crate) const MTIME_SLACK: Duration = Duration::from_secs(2);

/// The Tstat directories below a root for a process that looks every
/// second (`tstat_send --follow`), at a cost that does not grow with the
/// directories already processed. The tree is walked fully only when a
/// directory whose listing the last walk read (the root, `eth0/`, a day
/// directory, …) has changed since, when that walk met an error, or once
/// every `full_every`; otherwise only the directories not done yet are
/// looked at again (a few stats each). A Tstat directory appears or goes
/// only where a listing changes, and one marked done stays done until the
/// next full walk (a `.processed` removed by hand is seen within
/// `full_every`).
#[derive(Debug)]
pub struct TreeWatch {
    root: PathBuf,
    full_every: Duration,
    /// Tstat directories as last seen (those [`TreeWatch::tstat_dirs`]
    /// gives).
    dirs: Vec<TstatDir>,
    /// Directories the last full walk listed, with their modification time
    /// then (`None`: listed too close to a change, read again).
    listed: Vec<(PathBuf, Option<SystemTime>)>,
    /// When the last full walk began; `None`: walk next time.
    walked: Option<std::time::Instant>,
    /// Full walks so far.
    walks: u64,
}

impl TreeWatch {
    /// A watch of `root`, walked fully at least every `full_every` (zero:
    /// every time).
    pub fn new(root: &Path, full_every: Duration) -> TreeWatch {
        TreeWatch {
            root: root.to_path_buf(),
            full_every,
            dirs: Vec::new(),
            listed: Vec::new(),
            walked: None,
            walks: 0,
        }
    }

    /// Full walks of the tree so far.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// The Tstat directories below the root now that readiness depends on
    /// ([`ready_among`] without `include_done`, and
    /// [`crate::follow::live_among`], give what they would give for all of
    /// [`walk_tstat_dirs`]): every one not done, and the latest of each
    /// parent. Problems go to `on_error`.
    pub fn tstat_dirs(&mut self, on_error: &mut dyn FnMut(FindError)) -> Vec<TstatDir> {
        if !self.refreshed() {
            self.walk(on_error);
        }
        if self.full_every.is_zero() {
            // Walked again next time anyway: no copy.
            return std::mem::take(&mut self.dirs);
        }
        self.dirs.clone()
    }

    /// Brings the last walk up to date without walking; false when only a
    /// walk can.
    fn refreshed(&mut self) -> bool {
        match self.walked {
            Some(t) if t.elapsed() < self.full_every => {}
            _ => return false,
        }
        let unchanged = |(dir, then): &(PathBuf, Option<SystemTime>)| {
            then.is_some() && fs::metadata(dir).and_then(|m| m.modified()).ok() == *then
        };
        if !self.listed.iter().all(unchanged) {
            return false;
        }
        for d in self.dirs.iter_mut().filter(|d| !d.done) {
            match holds_dir_log(&d.path, d.path.file_name()) {
                Ok(Some(done)) => d.done = done,
                _ => return false,
            }
        }
        true
    }

    fn walk(&mut self, on_error: &mut dyn FnMut(FindError)) {
        let began = SystemTime::now();
        self.walks += 1;
        self.walked = Some(std::time::Instant::now());
        let mut errors = false;
        let mut listed = Vec::new();
        let all = walk(
            &self.root,
            &mut |e| {
                errors = true;
                on_error(e)
            },
            &mut listed,
        );
        // Only what readiness depends on is kept: the directories not done,
        // and the latest of each parent (a later sibling finishes them).
        let latest = latest_per_parent(&all);
        let keep: Vec<bool> = all
            .iter()
            .map(|d| {
                !d.done
                    || d.path
                        .parent()
                        .and_then(|p| latest.get(p))
                        .is_some_and(|l| path_key(&d.path) == *l)
            })
            .collect();
        drop(latest);
        self.dirs = all
            .into_iter()
            .zip(keep)
            .filter_map(|(d, keep)| keep.then_some(d))
            .collect();
        if errors {
            // Walked again (and the errors said again) next time.
            self.walked = None;
        }
        self.listed = listed
            .into_iter()
            .map(|dir| {
                let t = fs::metadata(&dir).and_then(|m| m.modified()).ok();
                // Changed within the slack of the walk: perhaps after its
                // listing was read.
                let settled = t.filter(|t| *t + MTIME_SLACK < began);
                (dir, settled)
            })
            .collect();
    }
}

/// Marks `dir` as done by writing `dir/.processed` atomically: the content
/// goes to a temporary file in `dir`, which is flushed to disk and renamed
/// over `.processed`, and then the directory itself is flushed so the rename
/// survives a crash. No temporary file is left behind, whatever happens
/// (short of the process being killed mid-way).
///
/// It does not check that `dir` is a tstat directory; callers do
/// ([`is_tstat_dir`]).
pub fn mark_processed(dir: &Path) -> io::Result<()> {
    // 0644: what a plain create gives (before the umask), like the reference.
    crate::durable::atomic_write(&dir.join(PROCESSED), PROCESSED_CONTENT, Some(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::fs::{File, FileTimes};

    fn touch(path: &Path, mtime: SystemTime) {
        let f = File::create(path).expect("create");
        f.set_times(FileTimes::new().set_modified(mtime))
            .expect("set mtime");
    }

    fn tstat_dir(parent: &Path, name: &str, mtime: SystemTime) -> PathBuf {
        let d = parent.join(name);
        fs::create_dir_all(&d).expect("mkdir");
        touch(&d.join("log_tcp_complete"), mtime);
        touch(&d.join("log_udp_complete"), mtime);
        d
    }

    fn opts(now: SystemTime) -> FindOptions {
        FindOptions {
            now,
            ..FindOptions::default()
        }
    }

    #[test]
    fn tree_watch_walks_again_only_where_a_listing_changed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let iface = root.join("eth0");
        fs::create_dir(&iface).expect("mkdir");
        let a = tstat_dir(&iface, "2026_03_01_00_00.out", old);
        touch(&a.join(PROCESSED), old);
        let b = tstat_dir(&iface, "2026_03_01_01_00.out", old);
        for d in [root, &iface] {
            let f = File::open(d).expect("open dir");
            f.set_times(FileTimes::new().set_modified(old))
                .expect("set mtime");
        }
        let mut w = TreeWatch::new(root, Duration::from_secs(3600));
        let seen = |w: &mut TreeWatch| -> Vec<(PathBuf, bool)> {
            let mut v: Vec<_> = w
                .tstat_dirs(&mut |e| panic!("{e}"))
                .into_iter()
                .map(|d| (d.path, d.done))
                .collect();
            v.sort();
            v
        };
        // A done directory with a later sibling is of no interest.
        assert_eq!(seen(&mut w), [(b.clone(), false)]);
        assert_eq!(w.walks(), 1);
        assert_eq!(seen(&mut w), [(b.clone(), false)]);
        assert_eq!(w.walks(), 1, "nothing changed: no walk");
        // Marked: seen without a walk.
        touch(&b.join(PROCESSED), old);
        assert_eq!(seen(&mut w), [(b.clone(), true)]);
        assert_eq!(w.walks(), 1);
        // A new directory changes its parent's listing: walked, found.
        let c = tstat_dir(&iface, "2026_03_01_02_00.out", old);
        assert_eq!(seen(&mut w), [(c, false)]);
        assert_eq!(w.walks(), 2);
        // Without a bound on the time between walks, every look walks.
        let mut every = TreeWatch::new(root, Duration::ZERO);
        seen(&mut every);
        seen(&mut every);
        assert_eq!(every.walks(), 2);
    }

    #[test]
    fn out_suffix_needs_a_stem() {
        assert!(has_out_suffix(OsStr::new("2024_05_22_08_55.out")));
        assert!(!has_out_suffix(OsStr::new(".out")));
        assert!(!has_out_suffix(OsStr::new("2024_05_22_08_55.outx")));
    }

    #[test]
    fn injected_clock_decides_settle() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let d = tstat_dir(tmp.path(), "2024_01_01_00_00.out", t0);
        let mut errors = Vec::new();
        let early = find_ready([tmp.path()], &opts(t0 + Duration::from_secs(7199)), |e| {
            errors.push(e)
        });
        assert!(early.is_empty());
        let late = find_ready([tmp.path()], &opts(t0 + DEFAULT_SETTLE), |e| errors.push(e));
        assert_eq!(late, vec![d]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn future_mtime_is_not_settled() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        tstat_dir(tmp.path(), "a.out", now + Duration::from_secs(10));
        let got = find_ready([tmp.path()], &opts(now), |e| panic!("{e}"));
        assert!(got.is_empty());
    }

    #[test]
    fn mark_writes_exactly_processed_and_no_temp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tstat_dir(tmp.path(), "x.out", SystemTime::now());
        mark_processed(&d).expect("mark");
        mark_processed(&d).expect("mark twice");
        assert_eq!(fs::read(d.join(PROCESSED)).expect("read"), b"processed");
        let mut names: Vec<_> = fs::read_dir(&d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".processed", "log_tcp_complete", "log_udp_complete"].map(OsString::from)
        );
        assert!(is_done(&d).expect("is_done"));
    }

    #[test]
    fn mark_failure_leaves_no_temp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tstat_dir(tmp.path(), "x.out", SystemTime::now());
        // A directory in the way makes the rename fail.
        fs::create_dir(d.join(PROCESSED)).expect("mkdir");
        fs::write(d.join(PROCESSED).join("f"), b"").expect("write");
        assert!(mark_processed(&d).is_err());
        let leftovers: Vec<_> = fs::read_dir(&d)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.as_encoded_bytes().ends_with(b".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(
            !is_done(&d).expect("is_done"),
            "a directory is not a marker"
        );
    }

    #[test]
    fn old_names_sort_chronologically() {
        let key = |s: &str| name_key(OsStr::new(s)).into_owned();
        assert_eq!(key("23_00_28_Jun_2008.out"), b"2008_06_28_23_00.out");
        assert_eq!(key("2016_02_17_12_53.out"), b"2016_02_17_12_53.out");
        // Not quite the old format: left as it is.
        assert_eq!(key("23_00_28_Foo_2008.out"), b"23_00_28_Foo_2008.out");
        assert_eq!(key("23_00_28_Jun_2008.outx"), b"23_00_28_Jun_2008.outx");
        let mut v = [
            "r/2012_07_04_10_00.out",
            "r/00_00_29_Jun_2008.out",
            "r/23_00_28_Jun_2008.out",
            "r/01_00_01_Jan_2009.out",
        ]
        .map(PathBuf::from)
        .to_vec();
        sort_dirs(&mut v);
        assert_eq!(
            v,
            [
                "r/23_00_28_Jun_2008.out",
                "r/00_00_29_Jun_2008.out",
                "r/01_00_01_Jan_2009.out",
                "r/2012_07_04_10_00.out",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn live_old_format_directory_is_not_taken_for_rotated() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let older = tstat_dir(tmp.path(), "23_00_28_Jun_2008.out", now);
        tstat_dir(tmp.path(), "00_00_29_Jun_2008.out", now);
        let got = find_ready([tmp.path()], &opts(now), |e| panic!("{e}"));
        assert_eq!(got, vec![older]);
    }

    #[test]
    fn sort_is_by_name_then_path() {
        let mut v = vec![
            PathBuf::from("b/2024_01_01_02_00.out"),
            PathBuf::from("a/2024_01_01_02_00.out"),
            PathBuf::from("z/2024_01_01_01_00.out"),
            PathBuf::from("a/2024_01_01_02_00.out"),
        ];
        sort_dirs(&mut v);
        assert_eq!(
            v,
            [
                "z/2024_01_01_01_00.out",
                "a/2024_01_01_02_00.out",
                "b/2024_01_01_02_00.out"
            ]
            .map(PathBuf::from)
        );
    }
}
