//! Tstat trees for tests, made in temp dirs from the bundled fixtures, with
//! modification times set instead of sleeping (the tools judge a directory
//! finished by the age of its logs).

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An hour.
pub const HOUR: Duration = Duration::from_secs(3600);

/// Logs this old are settled: every tool treats their directory as finished.
pub const SETTLED: Duration = Duration::from_secs(3 * 3600);

/// The bundled golden fixtures (a copy of shared/testdata).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The time `d` ago.
pub fn ago(d: Duration) -> SystemTime {
    SystemTime::now() - d
}

/// Sets the modification time of the file at `path`.
pub fn set_mtime(path: &Path, t: SystemTime) {
    let f = File::options()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_times(FileTimes::new().set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Sets the mtime of every file in `dir` to `t`.
pub fn set_mtimes(dir: &Path, t: SystemTime) {
    for e in fs::read_dir(dir).expect("read dir") {
        let p = e.expect("dir entry").path();
        if p.is_file() {
            set_mtime(&p, t);
        }
    }
}

/// Copies fixture directory `from` (relative to tests/fixtures) to `to`,
/// writable, with its logs written `age` ago (`None`: just now).
pub fn copy_fixture(from: &str, to: &Path, age: Option<Duration>) {
    let src = fixtures().join(from);
    fs::create_dir_all(to).expect("create dir");
    for e in fs::read_dir(&src).expect("read fixture dir") {
        let p = e.expect("dir entry").path();
        let dst = to.join(p.file_name().expect("file name"));
        fs::copy(&p, &dst).expect("copy log");
        let mode = fs::metadata(&dst).expect("metadata").permissions().mode();
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode | 0o200)).expect("chmod u+w");
    }
    if let Some(age) = age {
        set_mtimes(to, ago(age));
    }
}
