//! Reading a log that is still being written: complete lines only, from a
//! byte position, noticing when the file is replaced.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes read per system call.
const READ_SIZE: usize = 256 << 10;
/// Most bytes of lines one look hands out (memory stays bounded on a log
/// that is far ahead).
const MAX_BLOCK: usize = 4 * READ_SIZE;

/// A followed log: its open file, the position after the last complete line
/// handed out, and the bytes of a line still being written.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    /// Bytes handed out (always at a line boundary).
    offset: u64,
    /// Bytes read after `offset`: the start of a line without its newline.
    partial: Vec<u8>,
}

/// What one look at a followed log found.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Bytes of complete lines were appended to the caller's buffer (none:
    /// nothing new, or only part of a line); `more` when the file holds
    /// more than one look hands out.
    Lines {
        /// Bytes appended.
        bytes: usize,
        /// Look again at once.
        more: bool,
    },
    /// The path now names another file (the log was deleted and created
    /// again) or the file shrank: what the old file held is read; the caller
    /// starts a new [`Tail`] on the new file.
    Replaced,
}

impl Tail {
    /// Follows `path` from byte `offset` (a line boundary), provided the file
    /// there is `inode` (any file when `inode` is 0). A file that does not
    /// exist yet is waited for.
    pub fn new(path: &Path, inode: u64, offset: u64) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            inode,
            offset,
            partial: Vec::new(),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The inode of the file followed (0 before it exists).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The position after the last complete line handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes in the file not handed out yet (an unfinished line included).
    pub fn behind(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len().saturating_sub(self.offset))
    }

    /// Bytes of an unfinished last line held back.
    pub fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Appends the complete lines written since the last look to `out`.
    pub fn poll(&mut self, out: &mut Vec<u8>) -> io::Result<Polled> {
        if self.file.is_none() && !self.open()? {
            return Ok(Polled::Lines {
                bytes: 0,
                more: false,
            });
        }
        let (bytes, more) = self.read_lines(out)?;
        if bytes > 0 || more {
            return Ok(Polled::Lines { bytes, more });
        }
        let none = Polled::Lines {
            bytes: 0,
            more: false,
        };
        // Nothing new from the open file: has the name moved on?
        match std::fs::metadata(&self.path) {
            Ok(m) if m.ino() != self.inode || m.len() < self.offset + self.partial.len() as u64 => {
                Ok(Polled::Replaced)
            }
            Ok(_) => Ok(none),
            // Deleted and not yet created again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(none),
            Err(e) => Err(e),
        }
    }

    /// Takes the bytes of an unterminated last line (the file is finished:
    /// Tstat rotated away from it); returns how many.
    pub fn take_partial(&mut self) -> usize {
        let rest = self.partial.len();
        self.partial.clear();
        self.offset += rest as u64;
        rest
    }

    /// Opens the file if it exists; `Replaced` cases (another inode than
    /// expected, shorter than the position) start it from 0.
    fn open(&mut self) -> io::Result<bool> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if (self.inode != 0 && meta.ino() != self.inode) || meta.len() < self.offset {
            self.offset = 0;
        }
        self.inode = meta.ino();
        file.seek(SeekFrom::Start(self.offset))?;
        self.file = Some(file);
        Ok(true)
    }

    /// Reads what the open file has, up to [`MAX_BLOCK`]; moves complete
    /// lines to `out`. True with the count when more is there.
    fn read_lines(&mut self, out: &mut Vec<u8>) -> io::Result<(usize, bool)> {
        let Some(file) = self.file.as_mut() else {
            return Ok((0, false));
        };
        let start = out.len();
        loop {
            let have = self.partial.len();
            self.partial.resize(have + READ_SIZE, 0);
            let n = match file.read(&mut self.partial[have..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.partial.truncate(have);
                    return Err(e);
                }
            };
            self.partial.truncate(have + n);
            if let Some(nl) = memchr::memrchr(b'\n', &self.partial[have..]) {
                let end = have + nl + 1;
                out.extend_from_slice(&self.partial[..end]);
                self.partial.drain(..end);
                self.offset += end as u64;
            }
            if n < READ_SIZE {
                return Ok((out.len() - start, false));
            }
            if out.len() - start >= MAX_BLOCK {
                return Ok((out.len() - start, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn hands_out_complete_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut t = Tail::new(&p, 0, 0);
        let mut out = Vec::new();
        assert_eq!(
            t.poll(&mut out).unwrap(),
            Polled::Lines {
                bytes: 0,
                more: false
            }
        );
        append(&p, b"head\nrow 1\nro");
        assert_eq!(
            t.poll(&mut out).unwrap(),
            Polled::Lines {
                bytes: 11,
                more: false
            }
        );
        assert_eq!(out, b"head\nrow 1\n");
        assert_eq!(t.offset(), 11);
        assert_eq!(t.partial_len(), 2);
        append(&p, b"w 2");
        assert_eq!(
            t.poll(&mut out).unwrap(),
            Polled::Lines {
                bytes: 0,
                more: false
            }
        );
        append(&p, b"\nrow 3\n");
        out.clear();
        assert_eq!(
            t.poll(&mut out).unwrap(),
            Polled::Lines {
                bytes: 12,
                more: false
            }
        );
        assert_eq!(out, b"row 2\nrow 3\n");
        assert_eq!(t.offset(), 23);
    }

    #[test]
    fn resumes_at_a_position_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"head\nrow 1\nrow 2\n");
        let inode = std::fs::metadata(&p).unwrap().ino();
        let mut t = Tail::new(&p, inode, 11);
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        assert_eq!(out, b"row 2\n");
    }

    #[test]
    fn a_replaced_file_is_read_to_its_end_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"head\nrow 1\n");
        let mut t = Tail::new(&p, 0, 0);
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        // Written to the old file, then it is deleted and created again.
        append(&p, b"row 2\n");
        std::fs::remove_file(&p).unwrap();
        append(&p, b"new head\n");
        out.clear();
        assert_eq!(
            t.poll(&mut out).unwrap(),
            Polled::Lines {
                bytes: 6,
                more: false
            }
        );
        assert_eq!(out, b"row 2\n");
        assert_eq!(t.poll(&mut out).unwrap(), Polled::Replaced);
        let mut t = Tail::new(&p, t.inode(), t.offset());
        out.clear();
        t.poll(&mut out).unwrap();
        assert_eq!(out, b"new head\n");
    }

    #[test]
    fn a_file_recorded_with_another_inode_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"head\nrow 1\nrow 2\n");
        let inode = std::fs::metadata(&p).unwrap().ino();
        let mut t = Tail::new(&p, inode + 1, 11);
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        assert_eq!(out, b"head\nrow 1\nrow 2\n");
    }

    #[test]
    fn an_unterminated_last_line_is_taken_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"head\nrow 1\nrow");
        let mut t = Tail::new(&p, 0, 0);
        let mut out = Vec::new();
        t.poll(&mut out).unwrap();
        assert_eq!(out, b"head\nrow 1\n");
        assert_eq!(t.take_partial(), 3);
        assert_eq!(t.offset(), 14);
    }

    #[test]
    fn a_long_log_is_handed_out_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let line = [b'x'; 999];
        let mut all = Vec::new();
        for _ in 0..3000 {
            all.extend_from_slice(&line);
            all.push(b'\n');
        }
        append(&p, &all);
        let mut t = Tail::new(&p, 0, 0);
        let mut out = Vec::new();
        let mut looks = 0;
        loop {
            let before = out.len();
            match t.poll(&mut out).unwrap() {
                Polled::Lines { bytes, more } => {
                    assert!(bytes <= MAX_BLOCK + READ_SIZE);
                    assert_eq!(out.len() - before, bytes);
                    looks += 1;
                    if !more {
                        break;
                    }
                }
                Polled::Replaced => panic!("not replaced"),
            }
        }
        assert!(looks >= 3, "{looks} looks");
        assert_eq!(out, all);
    }
}
