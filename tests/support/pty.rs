//! A pseudo-terminal for tests of what programs do on a terminal.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

/// A new pseudo-terminal: the master side to read and type into, and the
/// slave side to give a child as stdin or stderr.
pub fn open() -> (File, OwnedFd) {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two new descriptors into m and s; the null
    // pointers ask for no name, settings or size.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned only here.
    unsafe { (File::from(OwnedFd::from_raw_fd(m)), OwnedFd::from_raw_fd(s)) }
}
