//! Finding a tstat directory's logs and opening them safely: a log must be
//! a regular file inside its directory, and opening never blocks.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{ParseError, Protocol};

/// Bytes of a directory's logs as they are now (0 for what cannot be
/// read): what progress and `--check` count.
pub fn logs_size(dir: &Path) -> u64 {
    dir_logs(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// The log files of a tstat directory, TCP first; a `.gz` log is used when
/// the plain one is absent.
///
/// A log name that is present must be a regular file: a FIFO, socket,
/// device or directory under a log's name is an error naming what it is,
/// never treated as absent (the directory would be marked done without that
/// log). A symbolic link is followed only when its target, resolved, lies
/// inside `dir` itself: this function does not know the tree's root, so a
/// link to a sibling directory is refused as well. Nothing is opened here.
pub fn dir_logs(dir: &Path) -> Result<Vec<(PathBuf, Protocol)>, ParseError> {
    let mut out = Vec::new();
    for (name, proto) in [
        ("log_tcp_complete", Protocol::Tcp),
        ("log_udp_complete", Protocol::Udp),
    ] {
        for path in [dir.join(name), dir.join(format!("{name}.gz"))] {
            if log_present(dir, &path)? {
                out.push((path, proto));
                break;
            }
        }
    }
    Ok(out)
}

/// Whether a log name is present as a usable file (see [`dir_logs`]).
fn log_present(dir: &Path, path: &Path) -> Result<bool, ParseError> {
    let io_err = |source| ParseError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(true);
    }
    let not_regular = |what: String| ParseError::NotRegular {
        path: path.display().to_string(),
        what,
    };
    if !kind.is_symlink() {
        return Err(not_regular(file_kind(kind).into()));
    }
    let target = match std::fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_regular(
                "a symbolic link whose target does not exist".into(),
            ));
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = std::fs::metadata(&target).map_err(io_err)?;
    if !meta.is_file() {
        return Err(not_regular(format!(
            "a symbolic link to {}",
            file_kind(meta.file_type())
        )));
    }
    let base = std::fs::canonicalize(dir).map_err(io_err)?;
    if !target.starts_with(&base) {
        return Err(ParseError::Outside {
            path: path.display().to_string(),
            target: target.display().to_string(),
        });
    }
    Ok(true)
}

/// What a file that is not a regular file is, for messages.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens a log of a directory without ever blocking (a FIFO put in its
/// place after [`dir_logs`] looked opens at once) and checks, on the open
/// file, that it is a regular file.
pub(super) fn open_dir_log(path: &Path) -> Result<File, ParseError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = || path.display().to_string();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| ParseError::Io {
            path: name(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| ParseError::Io {
        path: name(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ParseError::NotRegular {
            path: name(),
            what: file_kind(meta.file_type()).into(),
        });
    }
    Ok(file)
}
