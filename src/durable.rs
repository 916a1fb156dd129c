//! Files that must survive a crash or a power loss whole or not at all: the
//! progress record, the `.processed` marker and the metrics file. Each is
//! written to a temporary file in the same directory, fsynced, renamed over
//! the old one, and the directory is fsynced so the rename itself is on disk.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably. `mode` sets the
/// file's permission bits (tempfile's default is 0600).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut builder = tempfile::Builder::new();
    builder.prefix(&name).suffix(".tmp");
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    // On any failure below the temporary file is deleted when dropped. The
    // error says why, never the temporary name: the caller names `path`.
    let mut tmp = builder.tempfile_in(dir).map_err(without_temp_name)?;
    tmp.as_file_mut()
        .write_all(bytes)
        .map_err(without_temp_name)?;
    tmp.as_file().sync_all().map_err(without_temp_name)?;
    tmp.persist(path).map_err(|e| without_temp_name(e.error))?;
    sync_dir(dir)
}

/// The error without the temporary file's name tempfile adds to some of
/// its errors (`… at path "/dir/.progressAb12Cd.tmp"`): an operator would
/// look for a file that never exists for long.
pub fn without_temp_name(e: io::Error) -> io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let text = e.to_string();
    let Some(cut) = text.rfind(" at path ") else {
        return e;
    };
    let why = &text[..cut];
    // "No space left on device (os error 28)": the plain OS error again.
    let code = why
        .strip_suffix(')')
        .and_then(|w| w.rsplit_once("(os error "))
        .and_then(|(_, n)| n.parse::<i32>().ok());
    match code {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), why.to_string()),
    }
}

/// Flushes a directory's entries (a rename or an unlink in it) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes `path` if it exists and flushes the removal to disk.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => sync_dir(d),
        _ => sync_dir(Path::new(".")),
    }
}

/// Removes the temporary files [`atomic_write`] leaves behind in `dir` for
/// `names` when a process is killed mid-write. Only safe while no other
/// process can be writing them (the tree's lock).
pub fn remove_stale_temps(dir: &Path, names: &[&str]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.ends_with(".tmp")
            && names
                .iter()
                .any(|p| n.len() > p.len() + 4 && n.starts_with(p))
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("record");
        atomic_write(&p, b"one\n", None).expect("write");
        atomic_write(&p, b"two\n", Some(0o644)).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two\n");
        let mode = fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("record")]);
        remove(&p).expect("remove");
        remove(&p).expect("a missing file is removed already");
        assert!(!p.exists());
    }

    #[test]
    fn stale_temporary_files_of_named_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [
            ".progressAb12Cd.tmp",
            ".progress",
            "log_tcp_complete.tmp",
            ".processedXy.tmp",
        ] {
            fs::write(dir.path().join(n), b"x").expect("write");
        }
        remove_stale_temps(dir.path(), &[".progress", ".processed"]);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".progress", "log_tcp_complete.tmp"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_names_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing-dir").join("record");
        let e = atomic_write(&p, b"x", None).expect_err("no directory");
        assert_eq!(e.to_string(), "No such file or directory (os error 2)");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn temporary_names_are_cut_from_errors() {
        let wrapped = io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (os error 28) at path \"/t/.progresssA535k.tmp\"",
        );
        assert_eq!(without_temp_name(wrapped).raw_os_error(), Some(28));
        let other = io::Error::other("odd at path \"/t/x.tmp\"");
        assert_eq!(without_temp_name(other).to_string(), "odd");
        let plain = io::Error::from_raw_os_error(13);
        assert_eq!(without_temp_name(plain).raw_os_error(), Some(13));
    }
}
