//! The progress record that makes resuming exact (design §8.7, §6.3).
//!
//! A record says what a stream of messages is (the settings that shaped it
//! and the logs it was read from), how much of it was confirmed, where the
//! next message starts (a position in the input and a digest of every body
//! before it) and which message ids may already have been sent. A resumed run
//! applies it only after proving it describes the stream being sent now:
//! same settings, logs that at most grew, and the same bodies up to the
//! recorded position. It owns the record's format and those rules; it never
//! publishes or parses.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;

/// Version of the record's layout.
pub const FORMAT: u32 = 2;

/// Where a message ends in its stream: the input part (log) it ends in, how
/// many items (documents, or input lines) of that part precede the end, and
/// a digest of every body up to and including it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Index of the input part (0: the TCP log, 1: the UDP log; 0 for stdin).
    pub part: u32,
    /// Items of that part before the next message.
    pub items: u64,
    /// CRC-32 of the concatenated bodies so far.
    pub digest: u32,
    /// Follow mode (design §12): where each log is after this message. A
    /// stream read while Tstat writes is cut by time, so it is resumed from
    /// these positions under new ids, never re-formed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<Positions>,
}

/// Where every log of a followed directory is (TCP, UDP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// The TCP log, then the UDP log.
    pub logs: [LogPos; 2],
}

/// A position in a followed log: the documents of the rows before `offset`
/// and the first `docs` documents after it are in messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPos {
    /// The file's inode (0: not opened yet).
    pub inode: u64,
    /// A byte offset at the start of a line.
    pub offset: u64,
    /// Lines before `offset` (the header included).
    pub line: u64,
    /// Documents after `offset` already in messages.
    pub docs: u64,
}

/// A running digest of message bodies, the `digest` of a [`Mark`].
#[derive(Clone, Debug, Default)]
pub struct Digest(crc32fast::Hasher);

impl Digest {
    /// Adds one body; returns the digest of all bodies so far.
    pub fn add(&mut self, body: &[u8]) -> u32 {
        self.0.update(body);
        // The length separates bodies: ["ab","c"] and ["a","bc"] differ.
        self.0.update(&(body.len() as u64).to_le_bytes());
        self.0.clone().finalize()
    }
}

/// The identity of a log file when it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogId {
    /// File name inside the directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
}

impl LogId {
    /// The identity of `path` now.
    pub fn of(path: &Path) -> io::Result<LogId> {
        let m = fs::metadata(path)?;
        Ok(LogId {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: m.size(),
            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            inode: m.ino(),
        })
    }
}

/// The record as stored in `DIR/.progress` (pretty JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// Program that wrote it.
    pub program: String,
    /// Re-ship generation: 0, or the one `--reship` chose; part of the ids.
    pub generation: u64,
    /// Settings that shape the stream, by name.
    pub settings: BTreeMap<String, String>,
    /// Logs read, as they were when this run opened them.
    pub logs: Vec<LogId>,
    /// Messages of the stream confirmed (a contiguous prefix).
    pub confirmed: u64,
    /// Where the next message starts.
    pub next: Mark,
    /// Id index of the next message (≥ `confirmed` after a resume of grown logs).
    pub next_index: u64,
    /// Ids below this may have been sent (written before they are).
    pub reserved: u64,
    /// The stream producers' epoch the directory is shipped under (design
    /// §14.3), written before its first message; absent for a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_epoch: Option<u32>,
}

impl Record {
    /// True when no message may have been sent under it (the record a
    /// re-ship of a live directory leaves): it applies whatever the
    /// settings and logs of now, since no id of it carries a body yet. A
    /// stream's record is never such (its ids are log positions, sent
    /// without reserving).
    pub fn nothing_sent(&self) -> bool {
        self.stream_epoch.is_none()
            && self.confirmed == 0
            && self.reserved == 0
            && self.next_index == 0
            && self.next.items == 0
            && self.next.follow.is_none_or(|p| p == Positions::default())
    }
}

/// Why a record cannot be applied to the stream being sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The file exists but is not a record this version can read.
    Unreadable(String),
    /// Settings differ: (name, recorded, now).
    Settings(Vec<(String, String, String)>),
    /// A recorded log was replaced, shrank or is gone.
    Logs(Vec<String>),
    /// The stream before the recorded position is not what was sent.
    Stream(String),
    /// A new generation could not be kept (see [`Generations`]): nothing
    /// may be sent under it.
    Generation(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unreadable(why) => write!(f, "the progress record cannot be used: {why}"),
            Refusal::Settings(diffs) => {
                let list: Vec<String> = diffs
                    .iter()
                    .map(|(k, was, now)| format!("{k} was {was}, now {now}"))
                    .collect();
                write!(
                    f,
                    "settings changed since the interrupted run: {}",
                    list.join("; ")
                )
            }
            Refusal::Logs(what) => write!(
                f,
                "logs changed since the interrupted run: {}",
                what.join("; ")
            ),
            Refusal::Stream(why) => write!(
                f,
                "the logs no longer give the messages that were sent: {why}"
            ),
            Refusal::Generation(why) => write!(f, "{why}"),
        }
    }
}

/// Reads a record; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Record>, Refusal> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Refusal::Unreadable(e.to_string())),
    };
    let trimmed = String::from_utf8_lossy(&text);
    let trimmed = trimmed.trim();
    if trimmed.is_empty() {
        return Err(Refusal::Unreadable("the file is empty".into()));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Unreadable(format!(
            "it holds only a count ({trimmed}) from an older version, which cannot say \
             what it counted"
        )));
    }
    let rec: Record = serde_json::from_slice(&text)
        .map_err(|e| Refusal::Unreadable(format!("not a progress record: {e}")))?;
    if rec.format != FORMAT {
        return Err(Refusal::Unreadable(format!(
            "record format {} (this version reads {FORMAT})",
            rec.format
        )));
    }
    Ok(Some(rec))
}

/// Writes a record atomically and durably.
pub fn save(path: &Path, rec: &Record) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    text.push(b'\n');
    durable::atomic_write(path, &text, Some(0o644))
}

/// What a resumed stream must do, from a record that applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Messages of the stream to skip (confirmed earlier).
    pub skip: u64,
    /// The mark the stream must be at after skipping them.
    pub expect: Mark,
    /// Id index of the first message sent.
    pub next_index: u64,
    /// Re-ship generation for the ids.
    pub generation: u64,
    /// The stream producers' epoch an earlier run chose (design §14.3).
    pub stream_epoch: Option<u32>,
}

impl Plan {
    /// A stream started from its beginning.
    pub fn fresh(generation: u64) -> Plan {
        Plan {
            skip: 0,
            expect: Mark::default(),
            next_index: 0,
            generation,
            stream_epoch: None,
        }
    }
}

/// Checks a record against the settings and logs of now; returns how to
/// resume. Logs may have grown (a truncated `.gz` completed, a log that
/// appeared): then ids that may have been in flight are not reused.
pub fn plan(
    rec: &Record,
    settings: &BTreeMap<String, String>,
    logs: &[LogId],
) -> Result<Plan, Refusal> {
    if rec.nothing_sent() {
        return Ok(Plan::fresh(rec.generation));
    }
    same_settings(rec, settings)?;
    let mut bad = Vec::new();
    let mut grew = false;
    for old in &rec.logs {
        match logs.iter().find(|l| l.name == old.name) {
            None => bad.push(format!("{} is gone", old.name)),
            Some(new) if new.inode != old.inode => bad.push(format!(
                "{} was replaced (inode {} → {})",
                old.name, old.inode, new.inode
            )),
            Some(new) if new.size < old.size => bad.push(format!(
                "{} shrank ({} → {} bytes)",
                old.name, old.size, new.size
            )),
            Some(new) if new != old => grew = true,
            Some(_) => {}
        }
    }
    if !bad.is_empty() {
        return Err(Refusal::Logs(bad));
    }
    grew |= logs
        .iter()
        .any(|l| !rec.logs.iter().any(|o| o.name == l.name));
    // Unchanged logs give the same bodies again, so an id that may have been
    // sent carries the same body; after growth it might not.
    let next_index = if grew {
        rec.next_index.max(rec.reserved)
    } else {
        rec.next_index
    };
    Ok(Plan {
        skip: rec.confirmed,
        expect: rec.next,
        next_index,
        generation: rec.generation,
        stream_epoch: rec.stream_epoch,
    })
}

/// Refuses a record made with other settings, naming each difference.
fn same_settings(rec: &Record, settings: &BTreeMap<String, String>) -> Result<(), Refusal> {
    let mut diffs = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        rec.settings.keys().chain(settings.keys()).collect();
    for k in keys {
        let was = rec.settings.get(k);
        let now = settings.get(k);
        if was != now {
            let show = |v: Option<&String>| v.map_or("(not set)".to_string(), |v| format!("{v:?}"));
            diffs.push((k.clone(), show(was), show(now)));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Refusal::Settings(diffs))
    }
}

/// How to resume a directory read while Tstat wrote it (design §12): from
/// the recorded log positions, under ids above any that may have been sent
/// (its arrays were cut by time, so they are not formed again).
pub fn follow_plan(rec: &Record, settings: &BTreeMap<String, String>) -> Result<Plan, Refusal> {
    if rec.nothing_sent() && rec.next.follow.is_some() {
        return Ok(follow_fresh(rec.generation));
    }
    same_settings(rec, settings)?;
    if rec.next.follow.is_none() {
        return Err(Refusal::Stream(
            "a run without --follow counted its messages; it cannot be followed from there \
             (it is shipped when Tstat has finished the directory)"
                .into(),
        ));
    }
    Ok(Plan {
        skip: 0,
        expect: rec.next,
        next_index: rec.next_index.max(rec.reserved),
        generation: rec.generation,
        stream_epoch: rec.stream_epoch,
    })
}

/// A stream of a directory read while Tstat writes it, from its start. Its
/// ids carry a generation (see [`Generations`]) so that a directory Tstat
/// deletes and creates again never reuses the ids of the one before.
pub fn follow_fresh(generation: u64) -> Plan {
    Plan {
        expect: Mark {
            follow: Some(Positions::default()),
            ..Mark::default()
        },
        ..Plan::fresh(generation)
    }
}

impl Plan {
    /// Whether it continues from something an earlier run confirmed.
    pub fn resumes(&self) -> bool {
        self.skip > 0
            || self
                .expect
                .follow
                .is_some_and(|p| p != Positions::default())
    }
}

/// Message id prefix for a stream: `PREFIX`, or `PREFIX~GEN` after a re-ship.
pub fn id_prefix(prefix: &str, generation: u64) -> String {
    if generation == 0 {
        prefix.to_string()
    } else {
        format!("{prefix}~{generation}")
    }
}

/// The longest message id AMQP carries (a short string).
pub const MAX_ID: usize = 255;

/// Checks that ids `PREFIX:INDEX` fit in [`MAX_ID`] bytes for any index.
pub fn check_id_prefix(prefix: &str) -> Result<(), String> {
    // ":" and up to 20 digits.
    if prefix.len() + 21 > MAX_ID {
        return Err(format!(
            "the message id prefix {:?}… is {} bytes; ids must fit in {MAX_ID} bytes \
             (shorten the sensor id or the directory path)",
            prefix.chars().take(40).collect::<String>(),
            prefix.len()
        ));
    }
    Ok(())
}

/// A generation: the current Unix time, above any earlier one.
pub fn new_generation(previous: Option<u64>) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    now.max(previous.map_or(0, |p| p.saturating_add(1))).max(1)
}

/// File beside a tree's lock holding the last generation given in the tree.
pub const GENERATION_FILE: &str = ".tstat_send.generation";

/// Where the generations of fresh streams come from. A generation is part
/// of every message id of a stream started over (`--reship`, a directory
/// first followed), so two such streams of one directory must never share
/// one. The clock alone cannot promise that (two re-ships in one second, a
/// clock set back) and a directory's record is dropped when it is marked, so
/// a tree keeps the last generation it gave in [`GENERATION_FILE`] (under the
/// tree's lock) and gives the next one above it, the record's and the clock.
#[derive(Clone, Debug)]
pub struct Generations {
    file: Option<PathBuf>,
}

impl Generations {
    /// The generations of the tree at `root`, kept in its
    /// [`GENERATION_FILE`]; the caller holds the tree's lock.
    pub fn of_tree(root: &Path) -> Generations {
        Generations::in_file(root.join(GENERATION_FILE))
    }

    /// The generations kept in `file` (`tstat-rabbit --generations`).
    pub fn in_file(file: PathBuf) -> Generations {
        Generations { file: Some(file) }
    }

    /// Generations from the clock and the record only, for a record that is
    /// never dropped (`tstat-rabbit --progress` alone).
    pub fn from_records() -> Generations {
        Generations { file: None }
    }

    /// A generation above `previous`, above every one given before in the
    /// tree and not below the Unix time; kept durably before it is returned.
    pub fn next(&self, previous: Option<u64>) -> Result<u64, String> {
        let Some(file) = &self.file else {
            return Ok(new_generation(previous));
        };
        let last = match fs::read_to_string(file) {
            Ok(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                format!(
                    "{}: not a generation ({:?}); it keeps the last re-ship generation of                      the tree: remove it only if no tstat_send runs on the tree",
                    file.display(),
                    text.trim().chars().take(40).collect::<String>()
                )
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {}: {e}", file.display())),
        };
        let next = new_generation(previous.max(last));
        durable::atomic_write(file, format!("{next}\n").as_bytes(), Some(0o644))
            .map_err(|e| format!("keeping the new generation in {}: {e}", file.display()))?;
        Ok(next)
    }
}

/// How a stream meets its record in [`open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Resume what the record says was confirmed, if the record applies
    /// (from its log positions when the stream was followed).
    Resume,
    /// A directory Tstat is writing (design §12): from the record's log
    /// positions, or from the start under a new generation of ids.
    Follow,
    /// From the start under a new generation of ids, whatever the record
    /// says (`--reship`).
    Reship,
    /// As [`Open::Reship`], for a directory Tstat is still writing: its
    /// record starts over with follow positions, so a follower (or the first
    /// run after Tstat finishes it) ships it from the start.
    ReshipLive,
}

/// The one gate of exactly once (design §8.7), for every program that
/// keeps a record: reads the record at `path`, checks it against the
/// `settings` and `logs` of now and says how the stream resumes, with the
/// record file that keeps it from then on. `Err` when the record does not
/// apply: nothing may be sent ([`refusal_text`] words it).
pub fn open(
    path: PathBuf,
    program: &str,
    settings: BTreeMap<String, String>,
    logs: Vec<LogId>,
    how: Open,
    generations: &Generations,
) -> Result<(Plan, RecordFile), Refusal> {
    let loaded = load(&path);
    let fresh = |previous: Option<u64>| generations.next(previous).map_err(Refusal::Generation);
    let plan = match (how, loaded) {
        (Open::Reship, loaded) => Plan::fresh(fresh(loaded.ok().flatten().map(|r| r.generation))?),
        (Open::ReshipLive, loaded) => {
            follow_fresh(fresh(loaded.ok().flatten().map(|r| r.generation))?)
        }
        (_, Err(r)) => return Err(r),
        (Open::Follow, Ok(None)) => follow_fresh(fresh(None)?),
        (Open::Resume, Ok(None)) => Plan::fresh(0),
        (Open::Follow, Ok(Some(rec))) => follow_plan(&rec, &settings)?,
        (Open::Resume, Ok(Some(rec))) if rec.next.follow.is_some() => follow_plan(&rec, &settings)?,
        (Open::Resume, Ok(Some(rec))) => plan(&rec, &settings, &logs)?,
    };
    let rec = RecordFile::new(path, program, settings, logs, &plan);
    Ok((plan, rec))
}

/// Settings by name for a record; one not given is stored as `(none)`.
pub fn settings<'a>(
    pairs: impl IntoIterator<Item = (&'a str, Option<String>)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.unwrap_or_else(|| "(none)".into())))
        .collect()
}

/// How to ship anyway what a record refuses, as its message says.
#[derive(Clone, Copy, Debug)]
pub enum Override<'a> {
    /// A directory of a tree: `tstat_send -d ROOT --reship DIR`.
    ReshipDir {
        /// The tree.
        root: &'a Path,
        /// The directory.
        dir: &'a Path,
    },
    /// An input on stdin: the program's `--reship`.
    ReshipInput,
}

/// The message for a stream its record refuses (`why`: a [`Refusal`], or
/// the producer's own finding), with the way to ship it anyway.
pub fn refusal_text(why: &dyn fmt::Display, record: &Path, how: Override<'_>) -> String {
    match how {
        Override::ReshipDir { root, dir } => format!(
            "{why} (record {}); to ship it again deliberately under new message ids: \
             tstat_send -d {} --reship {} (flows confirmed before arrive a second time \
             under the new ids)",
            record.display(),
            root.display(),
            dir.display()
        ),
        Override::ReshipInput => format!(
            "{}: {why}; nothing published (to send this input anyway under new message ids, \
             add --reship)",
            record.display()
        ),
    }
}

/// The record file of a stream, kept up to date as confirms arrive.
#[derive(Debug)]
pub struct RecordFile {
    path: PathBuf,
    record: Record,
    /// Stream position minus id index (0 unless ids were moved past a
    /// window that may have been in flight).
    offset: u64,
}

impl RecordFile {
    /// A record for a stream with these settings and logs, resumed by `plan`.
    pub fn new(
        path: PathBuf,
        program: &str,
        settings: BTreeMap<String, String>,
        logs: Vec<LogId>,
        plan: &Plan,
    ) -> RecordFile {
        RecordFile {
            path,
            offset: plan.next_index - plan.skip,
            record: Record {
                format: FORMAT,
                program: program.to_string(),
                generation: plan.generation,
                settings,
                logs,
                confirmed: plan.skip,
                next: plan.expect,
                next_index: plan.next_index,
                reserved: plan.next_index,
                stream_epoch: plan.stream_epoch,
            },
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How a stream resumes after [`rewind`](Self::rewind): from its start,
    /// under ids above any sent before.
    pub fn rewound_plan(&self) -> Plan {
        Plan {
            skip: 0,
            expect: self.start(),
            next_index: self.record.next_index,
            generation: self.record.generation,
            stream_epoch: self.record.stream_epoch,
        }
    }

    /// The mark of the stream's start: a followed stream stays one.
    fn start(&self) -> Mark {
        Mark {
            follow: self.record.next.follow.map(|_| Positions::default()),
            ..Mark::default()
        }
    }

    /// Writes the record as it stands, durably.
    pub fn write(&self) -> io::Result<()> {
        save(&self.path, &self.record)
    }

    /// Forgets what was confirmed (the queue it went to is gone): the stream
    /// starts over from its beginning under ids above any sent before.
    pub fn rewind(&mut self) -> io::Result<()> {
        let fresh = self.record.reserved.max(self.record.next_index);
        self.record.confirmed = 0;
        self.record.next = self.start();
        self.record.next_index = fresh;
        self.record.reserved = fresh;
        self.offset = fresh;
        save(&self.path, &self.record)
    }

    /// Records, durably and before the directory's first message, the
    /// stream producers' epoch it is shipped under.
    pub fn set_stream_epoch(&mut self, epoch: u32) -> io::Result<()> {
        self.record.stream_epoch = Some(epoch);
        save(&self.path, &self.record)
    }

    /// Records that ids below `confirmed` are confirmed (the last one ending
    /// at `mark`) and that ids below `reserved` may have been sent.
    pub fn save(&mut self, confirmed: u64, mark: Mark, reserved: u64) -> io::Result<()> {
        self.record.next_index = confirmed;
        self.record.confirmed = confirmed - self.offset;
        self.record.next = mark;
        self.record.reserved = reserved.max(confirmed);
        save(&self.path, &self.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(threshold: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("threshold".to_string(), threshold.to_string()),
            ("chunk_size".to_string(), "100".to_string()),
        ])
    }

    fn log(name: &str, size: u64, inode: u64) -> LogId {
        LogId {
            name: name.into(),
            size,
            mtime_ns: 5,
            inode,
        }
    }

    fn record() -> Record {
        let plan = Plan::fresh(0);
        let mut f = RecordFile::new(
            "x".into(),
            "tstat_send",
            settings("0"),
            vec![log("log_tcp_complete", 100, 7)],
            &plan,
        );
        f.record.confirmed = 3;
        f.record.next_index = 3;
        f.record.reserved = 259;
        f.record
    }

    #[test]
    fn a_followed_stream_resumes_at_its_positions_under_new_ids() {
        let mut r = record();
        assert!(matches!(
            follow_plan(&r, &settings("0")),
            Err(Refusal::Stream(_))
        ));
        let at = Positions {
            logs: [
                LogPos {
                    inode: 7,
                    offset: 4096,
                    line: 30,
                    docs: 1,
                },
                LogPos::default(),
            ],
        };
        r.next.follow = Some(at);
        let p = follow_plan(&r, &settings("0")).expect("applies");
        assert_eq!((p.skip, p.next_index), (0, 259));
        assert_eq!(p.expect.follow, Some(at));
        assert!(p.resumes());
        assert!(matches!(
            follow_plan(&r, &settings("1")),
            Err(Refusal::Settings(_))
        ));
        let fresh = follow_fresh(7);
        assert!(!fresh.resumes());
        assert_eq!(fresh.generation, 7);
    }

    #[test]
    fn a_tree_never_gives_a_generation_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = Generations::of_tree(dir.path());
        let a = g.next(None).expect("first");
        let b = g.next(None).expect("second, in the same second");
        assert!(b > a, "{a} then {b}");
        let kept: u64 = fs::read_to_string(dir.path().join(GENERATION_FILE))
            .expect("kept")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(kept, b);
        // A record's generation above the clock (a clock set back) wins.
        let c = g.next(Some(u64::MAX / 2)).expect("above the record");
        assert_eq!(c, u64::MAX / 2 + 1);
        assert!(g.next(None).expect("above the kept one") > c);
        fs::write(dir.path().join(GENERATION_FILE), "garbage").expect("write");
        let e = g.next(None).expect_err("refused");
        assert!(
            e.contains(GENERATION_FILE) && e.contains("not a generation"),
            "{e}"
        );
    }

    #[test]
    fn a_record_with_nothing_sent_applies_whatever_the_settings() {
        let live = RecordFile::new(
            "x".into(),
            "tstat_send",
            settings("0"),
            vec![],
            &follow_fresh(42),
        );
        assert!(live.record.nothing_sent());
        let p = follow_plan(&live.record, &settings("9")).expect("applies");
        assert_eq!((p.generation, p.next_index, p.skip), (42, 0, 0));
        assert!(!p.resumes());
        let p = plan(&live.record, &settings("9"), &[]).expect("applies");
        assert_eq!(p.generation, 42);
        // Something reserved, or a stream's epoch: the settings must match.
        assert!(!record().nothing_sent());
        let mut streamed = live.record.clone();
        streamed.stream_epoch = Some(0);
        assert!(!streamed.nothing_sent());
        assert!(matches!(
            follow_plan(&streamed, &settings("9")),
            Err(Refusal::Settings(_))
        ));
    }

    #[test]
    fn same_settings_and_logs_resume_at_the_confirmed_index() {
        let r = record();
        let p = plan(&r, &settings("0"), &r.logs).expect("applies");
        assert_eq!((p.skip, p.next_index), (3, 3));
    }

    #[test]
    fn a_rewound_followed_stream_is_followed_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut plan = follow_fresh(1_800_000_000);
        plan.expect.follow = Some(Positions {
            logs: [
                LogPos {
                    inode: 3,
                    offset: 100,
                    line: 4,
                    docs: 0,
                },
                LogPos::default(),
            ],
        });
        let mut f = RecordFile::new(
            dir.path().join(".progress"),
            "tstat_send",
            settings("0"),
            vec![],
            &plan,
        );
        f.save(7, plan.expect, 40).expect("save");
        f.rewind().expect("rewind");
        let rec = load(f.path()).expect("loads").expect("a record");
        assert_eq!(rec.next.follow, Some(Positions::default()));
        let again = follow_plan(&rec, &settings("0")).expect("applies");
        assert!(!again.resumes());
        assert_eq!(again.next_index, 40);
        assert_eq!(f.rewound_plan().expect.follow, Some(Positions::default()));
    }

    #[test]
    fn grown_logs_resume_past_what_may_have_been_sent() {
        let r = record();
        let p = plan(&r, &settings("0"), &[log("log_tcp_complete", 150, 7)]).expect("grew");
        assert_eq!((p.skip, p.next_index), (3, 259));
        let p = plan(
            &r,
            &settings("0"),
            &[
                log("log_tcp_complete", 100, 7),
                log("log_udp_complete", 1, 8),
            ],
        )
        .expect("a log appeared");
        assert_eq!(p.next_index, 259);
    }

    #[test]
    fn changed_settings_and_replaced_logs_are_refused_by_name() {
        let r = record();
        let e = plan(&r, &settings("25000000000"), &r.logs).expect_err("settings");
        assert_eq!(
            e.to_string(),
            "settings changed since the interrupted run: threshold was \"0\", now \"25000000000\""
        );
        let e = plan(&r, &settings("0"), &[log("log_tcp_complete", 100, 8)]).expect_err("inode");
        assert!(
            e.to_string().contains("log_tcp_complete was replaced"),
            "{e}"
        );
        let e = plan(&r, &settings("0"), &[log("log_tcp_complete", 99, 7)]).expect_err("shrank");
        assert!(e.to_string().contains("shrank (100 → 99 bytes)"), "{e}");
        let e = plan(&r, &settings("0"), &[]).expect_err("gone");
        assert!(e.to_string().contains("log_tcp_complete is gone"), "{e}");
    }

    #[test]
    fn record_round_trips_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(".progress");
        assert_eq!(load(&p), Ok(None));
        let r = record();
        save(&p, &r).expect("save");
        assert_eq!(load(&p), Ok(Some(r)));
        for (text, why) in [
            ("", "empty"),
            ("12\n", "only a count"),
            ("{", "not a progress record"),
        ] {
            fs::write(&p, text).expect("write");
            let e = load(&p).expect_err(text);
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn digest_separates_bodies_and_offsets_carry_over() {
        let mut a = Digest::default();
        let mut b = Digest::default();
        a.add(b"ab");
        b.add(b"a");
        assert_ne!(a.add(b"c"), b.add(b"bc"));
        let dir = tempfile::tempdir().expect("tempdir");
        let r = record();
        let plan = plan(&r, &settings("0"), &[log("log_tcp_complete", 150, 7)]).expect("grew");
        let mut f = RecordFile::new(
            dir.path().join(".progress"),
            "tstat_send",
            settings("0"),
            vec![],
            &plan,
        );
        f.save(260, Mark::default(), 300).expect("save");
        let back = load(f.path()).expect("load").expect("some");
        assert_eq!(
            (back.confirmed, back.next_index, back.reserved),
            (4, 260, 300)
        );
    }

    #[test]
    fn ids_fit_in_a_short_string() {
        assert!(check_id_prefix("sensor:2026_03_01_00_00.out").is_ok());
        assert!(check_id_prefix(&"x".repeat(234)).is_ok());
        assert!(check_id_prefix(&"x".repeat(235)).is_err());
        assert_eq!(id_prefix("s:d", 0), "s:d");
        assert_eq!(id_prefix("s:d", 7), "s:d~7");
        assert!(new_generation(Some(u64::MAX - 1)) == u64::MAX);
    }
}
