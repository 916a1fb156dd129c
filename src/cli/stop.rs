//! The shutdown signal for the programs that run without an async runtime
//! (`tstat-parse --follow`): the first SIGINT or SIGTERM triggers it and
//! the loop ends cleanly; a second one ends the process at once (the
//! default action is back in place).

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::cli::Exit;
use crate::shutdown::Shutdown;

static STOP: OnceLock<Shutdown> = OnceLock::new();
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic loads and stores: all a signal handler may safely do.
    SIGNAL.store(sig, Ordering::Relaxed);
    if let Some(stop) = STOP.get() {
        stop.trigger_from_signal_handler();
    }
}

/// The shutdown triggered by the first SIGINT or SIGTERM.
pub fn on_signals() -> io::Result<Shutdown> {
    let stop = STOP.get_or_init(Shutdown::new).clone();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to
        // atomics; SA_RESETHAND restores the default action for a second
        // signal.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(stop)
}

/// The exit status for the signal that set the flag (130 for SIGINT, 143
/// for SIGTERM), if one did.
pub fn stopped_by() -> Option<Exit> {
    match SIGNAL.load(Ordering::Relaxed) {
        libc::SIGINT => Some(Exit::Interrupted),
        libc::SIGTERM => Some(Exit::Terminated),
        _ => None,
    }
}

/// True when stdout is a pipe whose reading end is closed (`| head` has
/// exited), found without writing, so an idle follower ends as soon as its
/// reader is gone.
pub fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & libc::POLLERR != 0
}
