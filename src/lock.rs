//! One shipping run per tree (design §8.7): an advisory lock (flock) on
//! `ROOT/.tstat_send.lock`, held for the life of the process and released by
//! the kernel when it dies, so a crash never leaves a stale lock. The file
//! names the holder for the run that finds it taken. `scripts/tstat_send.sh`
//! takes the same lock with flock(1).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lock file's name in the tree's root.
pub const LOCK_FILE: &str = ".tstat_send.lock";

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct TreeLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it.
    #[error("another run is shipping {root}: {holder} holds {path}; nothing done")]
    Held {
        /// The tree.
        root: String,
        /// The lock file.
        path: String,
        /// What the holder wrote: pid, program, start time.
        holder: String,
    },
    /// The lock file cannot be created or locked.
    #[error("cannot lock {path}: {source} (the tree must be writable by this user)")]
    Io {
        /// The lock file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Takes the lock on `root` without waiting, and writes who holds it.
pub fn lock_tree(root: &Path, prog: &str) -> Result<TreeLock, LockError> {
    let path: PathBuf = root.join(LOCK_FILE);
    let io_err = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                root: root.display().to_string(),
                path: path.display().to_string(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = format!(
        "pid {} ({prog}) since {}\n",
        std::process::id(),
        utc_time(now)
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(text.as_bytes()))
        .map_err(io_err)?;
    Ok(TreeLock { _file: file })
}

/// `2026-12-01 00:50:14 UTC` for a Unix time.
pub fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock_tree(dir.path(), "tstat_send").expect("first");
        let e = lock_tree(dir.path(), "tstat_send").expect_err("second");
        let text = e.to_string();
        assert!(
            text.contains(&format!("pid {} (tstat_send) since ", std::process::id())),
            "{text}"
        );
        drop(held);
        lock_tree(dir.path(), "tstat_send").expect("free again");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_764_550_214), "2025-12-01 00:50:14 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
