//! Who is publishing and where a message comes from (design §14.3): the
//! tree's identity, the stream producers' names and the publishing ids
//! that name source positions, and the rule that picks a producer epoch so
//! the broker's deduplication never drops a flow it has not stored.
//!
//! Pure: no files, no broker. The driver asks the broker for the stored
//! ids and hands them in; this module decides.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

use crate::find;
use crate::parse::DocAt;

/// A document's position in its log as one number: its row's line times
/// two, plus one for the row's second document. Increasing through a log,
/// never 0 for a row (the header is line 1), and the same in every run
/// while the directory's settings are those of its record.
pub fn ordinal(at: DocAt) -> u64 {
    at.line * 2 + u64::from(at.second)
}

/// Longest producer name the stream protocol takes (a short string).
pub const MAX_PRODUCER_NAME: usize = 255;

/// Longest message id (`PRODUCER:ID`) a stream message carries: its AMQP
/// 1.0 properties must stay a short list (under 256 bytes), the only
/// form the codec writes correctly.
pub const MAX_STREAM_MESSAGE_ID: usize = 200;

/// Bytes a producer name adds to its base: `/udp~4294967295`.
const NAME_SUFFIX: usize = 15;
/// Bytes a message id adds to its producer's name: `:` and 20 digits.
const ID_SUFFIX: usize = 21;

/// Bits of a publishing id, high to low: the directory's time in minutes
/// since 2000-01-01 (26 bits: until 2127), the directory's generation
/// (4 bits, reserved: 0; a directory shipped again takes a new producer
/// epoch instead), and the position of the message's last document in its
/// log (34 bits): see [`ordinal`].
const TIME_BITS: u32 = 26;
const GEN_BITS: u32 = 4;
const POS_BITS: u32 = 34;

/// Largest directory time, generation and position an id can hold.
pub const MAX_MINUTES: u32 = (1 << TIME_BITS) - 1;
/// Largest generation an id can hold.
pub const MAX_GENERATION: u8 = (1 << GEN_BITS) - 1;
/// Largest document ordinal an id can hold (rows up to line 8.6 billion).
pub const MAX_ORDINAL: u64 = (1 << POS_BITS) - 1;

/// A short, stable name for a tree: eight hex digits of the CRC-32 of its
/// canonical absolute path. Two Tstat output directories on one host
/// always differ; moving the tree changes it.
pub fn tree_tag(root: &Path) -> String {
    let path = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    format!(
        "{:08x}",
        crc32fast::hash(path.as_os_str().as_encoded_bytes())
    )
}

/// The message id prefix of a tree's directory in a queue,
/// `SENSOR@TREE:DIRNAME` (ids are `PREFIX:INDEX`): the same tree identity
/// as the stream producers', so two trees of one host never share an id.
pub fn message_id_base(sensor: &str, tree: &str, dir_name: &str) -> String {
    format!("{sensor}@{tree}:{dir_name}")
}

/// The log a producer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// `log_tcp_complete`.
    Tcp,
    /// `log_udp_complete`.
    Udp,
}

impl LogKind {
    /// Both kinds, in the order a directory's logs are read.
    pub const ALL: [LogKind; 2] = [LogKind::Tcp, LogKind::Udp];

    /// The kind of the log at `part` (0: TCP, 1: UDP) of a directory.
    pub fn of_part(part: u32) -> LogKind {
        if part == 0 {
            LogKind::Tcp
        } else {
            LogKind::Udp
        }
    }

    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Tcp => "tcp",
            LogKind::Udp => "udp",
        }
    }
}

/// The producers of one sensor, instance and tree (design §14.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Producers {
    base: String,
}

impl Producers {
    /// `SENSOR[/INSTANCE]@TREE`; `Err` when a name would be too long.
    pub fn new(sensor: &str, instance: Option<&str>, tree: &str) -> Result<Producers, String> {
        let base = match instance {
            Some(i) => format!("{sensor}/{i}@{tree}"),
            None => format!("{sensor}@{tree}"),
        };
        let limit =
            (MAX_PRODUCER_NAME - NAME_SUFFIX).min(MAX_STREAM_MESSAGE_ID - NAME_SUFFIX - ID_SUFFIX);
        if base.len() > limit {
            return Err(format!(
                "the stream producer name {base:?} is {} bytes long; sensor and instance \
                 together may take at most {} bytes",
                base.len(),
                limit - tree.len() - 1
            ));
        }
        Ok(Producers { base })
    }

    /// The producer of `kind` logs in `epoch`: `BASE/tcp`, `BASE/udp~2`.
    pub fn name(&self, kind: LogKind, epoch: u32) -> String {
        if epoch == 0 {
            format!("{}/{}", self.base, kind.as_str())
        } else {
            format!("{}/{}~{epoch}", self.base, kind.as_str())
        }
    }
}

/// Which directory an id belongs to: its time and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirStamp {
    /// Minutes since 2000-01-01 from the directory's Tstat name (0 for a
    /// name that is not a Tstat time).
    pub minutes: u32,
    /// The directory's generation (0 unless recreated).
    pub generation: u8,
}

impl DirStamp {
    /// The stamp of the directory named `name`, generation 0.
    pub fn of_name(name: &OsStr) -> DirStamp {
        DirStamp {
            minutes: dir_minutes(name),
            generation: 0,
        }
    }

    /// The publishing id of the message whose last document is the
    /// `ordinal`-th (from 1) of its log; `None` for 0, past
    /// [`MAX_ORDINAL`] or past [`MAX_GENERATION`].
    pub fn id(self, ordinal: u64) -> Option<u64> {
        if ordinal == 0 || ordinal > MAX_ORDINAL || self.generation > MAX_GENERATION {
            return None;
        }
        Some(self.first_id() | ordinal)
    }

    /// The lowest id of this directory (below any of its documents).
    pub fn first_id(self) -> u64 {
        (u64::from(self.minutes.min(MAX_MINUTES)) << (GEN_BITS + POS_BITS))
            | (u64::from(self.generation.min(MAX_GENERATION)) << POS_BITS)
    }

    /// The highest id this directory can use.
    pub fn last_id(self) -> u64 {
        self.first_id() | MAX_ORDINAL
    }

    /// Where `id` falls relative to this directory's ids.
    pub fn locate(self, id: u64) -> Place {
        if id <= self.first_id() {
            Place::Before
        } else if id > self.last_id() {
            Place::After
        } else {
            Place::Within(id & MAX_ORDINAL)
        }
    }
}

impl fmt::Display for DirStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "minute {} generation {}", self.minutes, self.generation)
    }
}

/// Where a stored id is relative to one directory's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Below all of them (an older directory, or nothing stored).
    Before,
    /// Inside: the log's documents up to and including this ordinal are
    /// stored.
    Within(u64),
    /// Above all of them (a newer directory, or a later generation).
    After,
}

/// Minutes since 2000-01-01 of a Tstat directory name
/// (`YYYY_MM_DD_HH_MM.out`, or the old `HH_MM_DD_Mon_YYYY.out`); 0 when the
/// name is not a Tstat time or lies outside what an id can hold.
pub fn dir_minutes(name: &OsStr) -> u32 {
    let key = find::name_key(name);
    let Some(t) = key.strip_suffix(b".out") else {
        return 0;
    };
    let field = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(t.get(r)?).ok()?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let parts = (|| {
        if t.len() != 16 || [4, 7, 10, 13].iter().any(|&i| t[i] != b'_') {
            return None;
        }
        Some((
            field(0..4)?,
            field(5..7)?,
            field(8..10)?,
            field(11..13)?,
            field(14..16)?,
        ))
    })();
    let Some((y, mo, d, h, mi)) = parts else {
        return 0;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 {
        return 0;
    }
    let days = days_from_civil(y, mo, d) - days_from_civil(2000, 1, 1);
    let minutes = days * 1440 + h * 60 + mi;
    u32::try_from(minutes)
        .ok()
        .filter(|&m| m <= MAX_MINUTES)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How a directory is shipped to a stream: under which producer epoch, and
/// from where in each log (documents at or before `after` are stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPlan {
    /// The producers' epoch.
    pub epoch: u32,
    /// Per log (TCP, UDP): documents already stored (an ordinal; 0: none).
    pub after: [u64; 2],
    /// Why the epoch is new, when it is.
    pub new_epoch: Option<NewEpoch>,
}

/// Why a directory gets a producer epoch no earlier directory used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewEpoch {
    /// The broker already holds ids at or above this directory's first:
    /// it is older than one shipped before, recreated, or re-shipped.
    Overlaps,
    /// Its own epoch moved on to newer directories before it was finished;
    /// it continues from its local record under a new epoch.
    Overtaken,
}

/// Picks the epoch and start of a directory (design §14.3-14.4).
///
/// `stored[e]` is what the broker holds for the TCP and UDP producers of
/// epoch `e` (0 when it knows none), for every epoch up to the highest in
/// use. `record` is the epoch the directory's local record names, with the
/// positions it says were confirmed. The rule: a directory continues its
/// recorded epoch while the broker's ids there are its own; a new one
/// takes the highest epoch when all of that epoch's ids are below its own,
/// and a fresh epoch otherwise, so nothing is ever sent at or below a
/// stored id of another directory.
pub fn plan_stream(
    dir: DirStamp,
    stored: &[[u64; 2]],
    record: Option<(u32, [u64; 2])>,
) -> StreamPlan {
    let highest = stored.len().saturating_sub(1) as u32;
    let at = |e: u32| stored.get(e as usize).copied().unwrap_or([0, 0]);
    let fresh = |why| StreamPlan {
        epoch: highest + 1,
        after: [0, 0],
        new_epoch: Some(why),
    };
    if let Some((epoch, confirmed)) = record {
        let places = at(epoch).map(|id| dir.locate(id));
        if places.contains(&Place::After) {
            return StreamPlan {
                after: confirmed,
                ..fresh(NewEpoch::Overtaken)
            };
        }
        return StreamPlan {
            epoch,
            after: places.map(|p| match p {
                Place::Within(n) => n,
                _ => 0,
            }),
            new_epoch: None,
        };
    }
    if at(highest).iter().any(|&id| id >= dir.first_id()) {
        return fresh(NewEpoch::Overlaps);
    }
    StreamPlan {
        epoch: highest,
        after: [0, 0],
        new_epoch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(name: &str) -> DirStamp {
        DirStamp::of_name(OsStr::new(name))
    }

    #[test]
    fn directory_times_count_minutes_from_2000() {
        assert_eq!(dir_minutes(OsStr::new("2000_01_01_00_00.out")), 0);
        assert_eq!(dir_minutes(OsStr::new("2000_01_01_01_05.out")), 65);
        assert_eq!(dir_minutes(OsStr::new("2000_03_01_00_00.out")), 60 * 1440);
        // 2026-03-01 is 9556 days after 2000-01-01.
        assert_eq!(
            dir_minutes(OsStr::new("2026_03_01_05_00.out")),
            9556 * 1440 + 300
        );
        // The old name form is the same time.
        assert_eq!(
            dir_minutes(OsStr::new("05_00_01_Mar_2026.out")),
            dir_minutes(OsStr::new("2026_03_01_05_00.out"))
        );
        for other in [
            "parse_data.out",
            "1999_12_31_23_59.out",
            "2026_13_01_00_00.out",
            "x",
        ] {
            assert_eq!(dir_minutes(OsStr::new(other)), 0, "{other}");
        }
    }

    #[test]
    fn ids_order_by_directory_then_generation_then_ordinal_and_are_never_zero() {
        let a = stamp("2026_03_01_05_00.out");
        let b = stamp("2026_03_01_06_00.out");
        let a1 = DirStamp { generation: 1, ..a };
        let ids = [
            a.id(1).unwrap(),
            a.id(2).unwrap(),
            a.id(MAX_ORDINAL).unwrap(),
            a1.id(1).unwrap(),
            b.id(1).unwrap(),
        ];
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(stamp("odd.out").id(1), Some(1));
        assert_eq!(a.id(0), None);
        assert_eq!(a.id(MAX_ORDINAL + 1), None);
        for n in [1, 2, 77, MAX_ORDINAL] {
            assert_eq!(a.locate(a.id(n).unwrap()), Place::Within(n), "{n}");
        }
        assert_eq!(a.locate(ids[3]), Place::After);
        assert_eq!(b.locate(ids[0]), Place::Before);
        assert_eq!(a.locate(0), Place::Before);
    }

    #[test]
    fn producer_names_are_stable_and_bounded() {
        let p = Producers::new("host1", None, "0badf00d").unwrap();
        assert_eq!(p.name(LogKind::Tcp, 0), "host1@0badf00d/tcp");
        assert_eq!(p.name(LogKind::Udp, 3), "host1@0badf00d/udp~3");
        let p = Producers::new("host1", Some("eth0"), "0badf00d").unwrap();
        assert_eq!(p.name(LogKind::Udp, 0), "host1/eth0@0badf00d/udp");
        let long = "s".repeat(240);
        let e = Producers::new(&long, None, "0badf00d").unwrap_err();
        assert!(e.contains("at most"), "{e}");
        let ok = "s".repeat(MAX_STREAM_MESSAGE_ID - NAME_SUFFIX - ID_SUFFIX - 9);
        let p = Producers::new(&ok, None, "0badf00d").unwrap();
        let name = p.name(LogKind::Udp, u32::MAX);
        assert!(name.len() <= MAX_PRODUCER_NAME);
        assert!(format!("{name}:{}", u64::MAX).len() <= MAX_STREAM_MESSAGE_ID);
        assert!(Producers::new(&format!("{ok}s"), None, "0badf00d").is_err());
    }

    #[test]
    fn tree_tags_differ_per_tree_and_repeat_for_one() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert_eq!(tree_tag(a.path()), tree_tag(a.path()));
        assert_eq!(tree_tag(a.path()), tree_tag(&a.path().join(".")));
        assert_ne!(tree_tag(a.path()), tree_tag(b.path()));
        assert_eq!(tree_tag(a.path()).len(), 8);
    }

    #[test]
    fn a_new_directory_takes_the_highest_epoch_when_it_is_newer_than_all_it_holds() {
        let old = stamp("2026_03_01_05_00.out");
        let new = stamp("2026_03_01_06_00.out");
        let stored_old = old.id(901).unwrap();
        // Nothing stored: epoch 0 from the start.
        let p = plan_stream(new, &[], None);
        assert_eq!((p.epoch, p.after, p.new_epoch), (0, [0, 0], None));
        // Older directories stored in epoch 1: the newer one joins it.
        let p = plan_stream(new, &[[9, 9], [stored_old, 0]], None);
        assert_eq!((p.epoch, p.new_epoch), (1, None));
        // The older directory again (restored from a backup, re-shipped):
        // a fresh epoch, never at or below what is stored.
        let p = plan_stream(old, &[[9, 9], [stored_old, 0]], None);
        assert_eq!((p.epoch, p.new_epoch), (2, Some(NewEpoch::Overlaps)));
        // Even when only its first document is stored.
        let p = plan_stream(old, &[[0, old.id(1).unwrap()]], None);
        assert_eq!((p.epoch, p.new_epoch), (1, Some(NewEpoch::Overlaps)));
    }

    #[test]
    fn a_recorded_directory_resumes_after_what_the_broker_holds() {
        let d = stamp("2026_03_01_05_00.out");
        let tcp = d.id(81).unwrap();
        let p = plan_stream(d, &[[tcp, 0]], Some((0, [20, 0])));
        // The broker wins over the record (it holds more than the record says).
        assert_eq!(p.epoch, 0);
        assert_eq!(p.after, [81, 0]);
        assert_eq!(p.new_epoch, None);
        // An older directory's ids in its epoch: nothing of this one stored.
        let older = stamp("2026_03_01_04_00.out").id(7).unwrap();
        let p = plan_stream(d, &[[older, older]], Some((0, [0, 0])));
        assert_eq!((p.epoch, p.after), (0, [0, 0]));
    }

    #[test]
    fn a_recorded_directory_overtaken_in_its_epoch_moves_to_a_new_one() {
        let d = stamp("2026_03_01_05_00.out");
        let newer = stamp("2026_03_01_06_00.out").id(5).unwrap();
        let p = plan_stream(d, &[[newer, 0], [1, 1]], Some((0, [61, 8])));
        assert_eq!(p.epoch, 2);
        assert_eq!(p.after, [61, 8]);
        assert_eq!(p.new_epoch, Some(NewEpoch::Overtaken));
    }
}
