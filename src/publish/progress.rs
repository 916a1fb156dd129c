//! The `--progress FILE` record (SPEC §6.3): one decimal number, the count of
//! input lines confirmed so far as a contiguous prefix. It is replaced
//! atomically (write a temporary file in the same directory, then rename), so
//! a crash leaves either the old or the new count, never a torn file.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Reads the confirmed count; a missing file means nothing was confirmed yet.
pub(crate) fn read(path: &Path) -> io::Result<u64> {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected a line count, found {:?}: {e}", text.trim()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Replaces the file with `count`, atomically.
pub(crate) fn write(path: &Path, count: u64) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".progress.")
        .tempfile_in(dir)?;
    writeln!(tmp, "{count}")?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_zero_and_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("progress");
        assert_eq!(read(&p).expect("read"), 0);
        write(&p, 1234).expect("write");
        assert_eq!(read(&p).expect("read"), 1234);
        write(&p, 1235).expect("write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "1235\n");
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("progress");
        fs::write(&p, "abc").expect("write");
        assert_eq!(
            read(&p).expect_err("garbage").kind(),
            io::ErrorKind::InvalidData
        );
    }
}
