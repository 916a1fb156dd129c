//! Removal of old, already shipped tstat directories (design §11).
//!
//! It owns the decision "may this directory be deleted": only a tstat
//! directory strictly below the root, holding a `.processed` file whose
//! modification time is older than the TTL. It never removes a directory
//! without `.processed`, never the root itself, and never follows a symbolic
//! link: the walk does not ([`crate::find::walk_tstat_dirs`]) and the removal
//! (`std::fs::remove_dir_all`, which unlinks symbolic links inside the
//! directory instead of descending into them) does not either.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::find::{self, FindError, PROCESSED};

/// The default time a processed directory is kept: 48 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(48 * 3600);

/// How [`cull`] decides and acts.
#[derive(Debug, Clone)]
pub struct CullOptions {
    /// A processed directory is removed when its `.processed` is older than
    /// this.
    pub ttl: Duration,
    /// Print what would be removed, remove nothing.
    pub dry_run: bool,
    /// The current time, injectable so tests need not sleep.
    pub now: SystemTime,
}

impl Default for CullOptions {
    fn default() -> Self {
        CullOptions {
            ttl: DEFAULT_TTL,
            dry_run: false,
            now: SystemTime::now(),
        }
    }
}

/// What [`cull`] did, for the `--verbose` summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CullSummary {
    /// Tstat directories found below the root.
    pub examined: usize,
    /// Removed (or, on a dry run, that would have been).
    pub removed: usize,
    /// Kept because they hold no `.processed`.
    pub unprocessed: usize,
    /// Kept because their `.processed` is not older than the TTL.
    pub young: usize,
    /// Problems reported to `on_error` (unreadable directories, failed
    /// removals).
    pub errors: usize,
}

/// Parses a TTL given in hours (fractions allowed, e.g. `0.5`) into a
/// duration; negative, non-finite and absurdly large values are refused with
/// a message saying why (clap adds the value itself).
pub fn parse_ttl_hours(s: &str) -> Result<Duration, String> {
    let hours: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of hours".to_string())?;
    if !hours.is_finite() || hours < 0.0 {
        return Err("expected a non-negative, finite number of hours".to_string());
    }
    Duration::try_from_secs_f64(hours * 3600.0)
        .map_err(|_| "too large a number of hours".to_string())
}

/// Walks `root` and removes every processed tstat directory whose
/// `.processed` is older than `opts.ttl` (see the module documentation for
/// what is never removed). Each removal is written to `out` as `removing
/// PATH` and flushed before the directory is removed (`would remove PATH` on
/// a dry run), one per line, paths as joined from `root`. Problems go to
/// `on_error` and the walk goes on.
///
/// The only error returned is a failure to write to `out`; it stops the run
/// at once, so nothing is removed without being reported.
pub fn cull<W: Write>(
    root: &Path,
    opts: &CullOptions,
    out: &mut W,
    mut on_error: impl FnMut(FindError),
) -> io::Result<CullSummary> {
    let mut summary = CullSummary::default();
    let mut report = |summary: &mut CullSummary, e: FindError| {
        summary.errors += 1;
        on_error(e);
    };
    let dirs = find::walk_tstat_dirs(root, &mut |e| report(&mut summary, e));
    for d in dirs {
        // The root itself is what the operator pointed us at, never a
        // candidate.
        if d.depth == 0 {
            continue;
        }
        summary.examined += 1;
        if !d.done {
            summary.unprocessed += 1;
            continue;
        }
        let marker = d.path.join(PROCESSED);
        let mtime = match fs::symlink_metadata(&marker).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(err) => {
                report(&mut summary, FindError { path: marker, err });
                continue;
            }
        };
        // A marker from the future (clock skew) is young.
        let old = opts
            .now
            .duration_since(mtime)
            .is_ok_and(|age| age > opts.ttl);
        if !old {
            summary.young += 1;
            continue;
        }
        // Reported (and flushed) before it is removed: a crash never
        // removes a directory nobody was told about.
        out.write_all(if opts.dry_run {
            b"would remove "
        } else {
            b"removing "
        })?;
        out.write_all(d.path.as_os_str().as_encoded_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        if !opts.dry_run
            && let Err(err) = fs::remove_dir_all(&d.path)
        {
            report(
                &mut summary,
                FindError {
                    path: d.path.clone(),
                    err,
                },
            );
            continue;
        }
        summary.removed += 1;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_hours_parse() {
        assert_eq!(parse_ttl_hours("48"), Ok(DEFAULT_TTL));
        assert_eq!(parse_ttl_hours("0.5"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl_hours("0"), Ok(Duration::ZERO));
        for bad in ["-1", "nan", "inf", "", "2h", "1e300"] {
            let e = parse_ttl_hours(bad).expect_err(bad);
            assert!(e.contains("number of hours"), "{e}");
        }
    }

    #[test]
    fn removal_does_not_follow_inner_symlinks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("keep"), b"keep").expect("write");
        let root = tmp.path().join("root");
        let d = root.join("2024_01_01_00_00.out");
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("log_tcp_complete"), b"").expect("write");
        fs::write(d.join(PROCESSED), b"processed").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, d.join("link")).expect("symlink");
        let opts = CullOptions {
            ttl: Duration::ZERO,
            now: SystemTime::now() + Duration::from_secs(60),
            ..CullOptions::default()
        };
        let mut out = Vec::new();
        let s = cull(&root, &opts, &mut out, |e| panic!("{e}")).expect("cull");
        assert_eq!(s.removed, 1);
        assert!(!d.exists());
        assert_eq!(fs::read(outside.join("keep")).expect("read"), b"keep");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("removing {}\n", d.display())
        );
    }

    /// Records, at every flush, whether the directory still exists.
    struct Witness<'a> {
        dir: &'a Path,
        text: Vec<u8>,
        existed_at_flush: Vec<bool>,
    }

    impl Write for Witness<'_> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.text.extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.existed_at_flush.push(self.dir.exists());
            Ok(())
        }
    }

    #[test]
    fn each_removal_is_reported_and_flushed_before_it_happens() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("2024_01_01_00_00.out");
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("log_tcp_complete"), b"").expect("write");
        fs::write(d.join(PROCESSED), b"processed").expect("write");
        let opts = CullOptions {
            ttl: Duration::ZERO,
            now: SystemTime::now() + Duration::from_secs(60),
            ..CullOptions::default()
        };
        let mut w = Witness {
            dir: &d,
            text: Vec::new(),
            existed_at_flush: Vec::new(),
        };
        let s = cull(tmp.path(), &opts, &mut w, |e| panic!("{e}")).expect("cull");
        assert_eq!(s.removed, 1);
        assert!(!d.exists());
        assert_eq!(w.existed_at_flush, [true], "flushed while still there");
        assert_eq!(
            String::from_utf8(w.text).expect("utf8"),
            format!("removing {}\n", d.display())
        );
    }
}
