//! Running programs in tests, one way for all of them.
//!
//! [`program`] names a binary of this package (found through cargo, never a
//! hard-coded target/ path), [`command`] any other program (bash, setpriv,
//! rabbitmqctl). The [`Cmd`] it returns is built like a `Command`, then
//! either [`run`](Cmd::run) to completion under a deadline, or
//! [`spawn`](Cmd::spawn)ed as a [`Running`] child that a test polls with a
//! deadline, signals and waits on; a `Running` still alive when dropped is
//! killed, so a failing test leaves no process behind.
//!
//! stdin is fed from a thread (a full stdout pipe cannot deadlock the test),
//! stdout and stderr are collected by threads as they come, so a test can
//! poll what a running program has said so far.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// This package's programs.
pub const PROGRAMS: [&str; 7] = [
    "tstat-find",
    "tstat-parse",
    "tstat-chunk",
    "tstat-rabbit",
    "tstat-consume",
    "tstat_send",
    "tstat-cull",
];

/// Bound on one run of a program unless a test sets its own.
pub const RUN_DEADLINE: Duration = Duration::from_secs(240);

/// The path of this package's program `name` (`tstat-parse`, `tstat_send`…).
pub fn bin(name: &str) -> PathBuf {
    assert_cmd::cargo::cargo_bin(name)
}

/// The directory of this build's programs.
pub fn bin_dir() -> PathBuf {
    bin("tstat_send")
        .parent()
        .expect("programs have a directory")
        .to_path_buf()
}

/// `scripts/tstat_send.sh` (the shell pipeline of the filters), told to use
/// this build's programs.
pub fn tstat_send_sh() -> Cmd {
    command("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/tstat_send.sh"
        ))
        .env("TSTAT_BIN_DIR", bin_dir())
}

/// A command for this package's program `name`.
pub fn program(name: &str) -> Cmd {
    command(bin(name))
}

/// A command for any other program (a path, or a name looked up in PATH).
pub fn command(program: impl AsRef<OsStr>) -> Cmd {
    let program = program.as_ref();
    Cmd {
        name: program.to_string_lossy().into_owned(),
        cmd: Command::new(program),
        stdin: Input::Null,
        stdout: None,
        stderr: None,
        deadline: RUN_DEADLINE,
    }
}

/// Where a program's stdin comes from.
enum Input {
    /// Nothing (`/dev/null`).
    Null,
    /// These bytes, written from a thread, then end of input.
    Bytes(Vec<u8>),
    /// A pipe the test writes itself ([`Running::stdin`]).
    Pipe,
    /// A file, a terminal or another program's output.
    From(Stdio),
}

/// A program to run: arguments, environment, stdin, and a deadline.
pub struct Cmd {
    name: String,
    cmd: Command,
    stdin: Input,
    /// `None`: collected; `Some`: as given (null, a file, a pipe to take).
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    deadline: Duration,
}

impl Cmd {
    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Cmd
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    /// Removes an environment variable the test process may have.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env_remove(key);
        self
    }

    /// Runs it in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<std::path::Path>) -> Cmd {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds `input` on stdin (from a thread), then closes it.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Input::Bytes(input.into());
        self
    }

    /// Leaves stdin open as a pipe the test writes ([`Running::stdin`]).
    pub fn stdin_pipe(mut self) -> Cmd {
        self.stdin = Input::Pipe;
        self
    }

    /// stdin from `from` (a file, a terminal, another program's stdout).
    pub fn stdin_from(mut self, from: impl Into<Stdio>) -> Cmd {
        self.stdin = Input::From(from.into());
        self
    }

    /// stdout to `to` instead of being collected; `Stdio::piped()` leaves
    /// it for [`Running::take_stdout`].
    pub fn stdout(mut self, to: impl Into<Stdio>) -> Cmd {
        self.stdout = Some(to.into());
        self
    }

    /// stderr to `to` instead of being collected.
    pub fn stderr(mut self, to: impl Into<Stdio>) -> Cmd {
        self.stderr = Some(to.into());
        self
    }

    /// How long [`run`](Cmd::run) lets it run before killing it.
    pub fn deadline(mut self, deadline: Duration) -> Cmd {
        self.deadline = deadline;
        self
    }

    /// Runs it to completion; panics (showing its stderr) if it is still
    /// running at the deadline or cannot be started.
    pub fn run(self) -> Output {
        let deadline = self.deadline;
        self.spawn().wait(deadline)
    }

    /// Starts it.
    pub fn spawn(self) -> Running {
        let Cmd {
            name,
            mut cmd,
            stdin,
            stdout,
            stderr,
            deadline: _,
        } = self;
        let (stdin, input) = match stdin {
            Input::Null => (Stdio::null(), None),
            Input::Bytes(b) => (Stdio::piped(), Some(b)),
            Input::Pipe => (Stdio::piped(), None),
            Input::From(s) => (s, None),
        };
        let collect_out = stdout.is_none();
        let collect_err = stderr.is_none();
        cmd.stdin(stdin)
            .stdout(stdout.unwrap_or_else(Stdio::piped))
            .stderr(stderr.unwrap_or_else(Stdio::piped));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut threads = Vec::new();
        if let Some(input) = input
            && let Some(mut pipe) = child.stdin.take()
        {
            threads.push(thread::spawn(move || {
                // The program may stop reading early (a failure): fine.
                let _ = pipe.write_all(&input);
            }));
        }
        let stdout = Collected::default();
        if collect_out && let Some(s) = child.stdout.take() {
            threads.push(stdout.collect(s));
        }
        let stderr = Collected::default();
        if collect_err && let Some(s) = child.stderr.take() {
            threads.push(stderr.collect(s));
        }
        Running {
            name,
            child,
            stdout,
            stderr,
            threads,
            status: None,
        }
    }
}

/// Bytes a thread appends as a program writes them.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn collect(&self, mut from: impl Read + Send + 'static) -> thread::JoinHandle<()> {
        let sink = self.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .0
                        .lock()
                        .expect("output lock")
                        .extend_from_slice(&buf[..n]),
                }
            }
        })
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.lock().expect("output lock").clone()
    }
}

/// A started program. Killed if dropped while it still runs.
pub struct Running {
    name: String,
    child: Child,
    stdout: Collected,
    stderr: Collected,
    threads: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Running {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The stdin pipe (after [`Cmd::stdin_pipe`]); drop it to close stdin.
    pub fn stdin(&mut self) -> ChildStdin {
        self.child
            .stdin
            .take()
            .unwrap_or_else(|| panic!("{}: stdin is not a pipe (or already taken)", self.name))
    }

    /// The stdout pipe (after `.stdout(Stdio::piped())`).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{}: stdout is not a pipe (or already taken)", self.name))
    }

    /// What it has written on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        text(&self.stderr.bytes())
    }

    /// What it has written on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        text(&self.stdout.bytes())
    }

    /// Its exit status once it has exited (polls without blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("{}: wait: {e}", self.name));
        }
        self.status
    }

    /// True while it has not exited.
    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to this process only.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        // SAFETY: kill(2) with a pid we started and have not reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "{}: kill({pid}, {signal}): {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Kills it with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = Some(
                self.child
                    .wait()
                    .unwrap_or_else(|e| panic!("{}: wait: {e}", self.name)),
            );
        }
    }

    /// Waits for its exit, polling; panics (showing its stderr so far) if it
    /// still runs after `deadline` (it is killed then).
    pub fn wait_status(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.try_status() {
                return st;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {deadline:?}, killed; stderr:\n{}",
                    self.name,
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for its exit (see [`wait_status`](Self::wait_status)) and
    /// returns the status with all it wrote on stdout and stderr (what was
    /// collected).
    pub fn wait(mut self, deadline: Duration) -> Output {
        let status = self.wait_status(deadline);
        drop(self.child.stdin.take());
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        Output {
            status,
            stdout: self.stdout.bytes(),
            stderr: self.stderr.bytes(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A torture's seed: the number in environment variable `var` (to replay
/// a run), else one from the clock. Printed, with how to replay it.
pub fn seed(what: &str, var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{what} seed {seed} (replay with {var}={seed})");
    seed
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after
/// `deadline`.
#[track_caller]
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes as text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit status, showing stderr when it differs.
#[track_caller]
pub fn assert_status(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit status {:?}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// Input written to a running program in three steps, so a test can make a
/// fault land mid-stream: a head at once; after [`go`](Trickle::go), one
/// chunk about every 50 ms (a steady trickle); after
/// [`stop`](Trickle::stop), all the rest at once. Dropping it before `go`
/// writes nothing more.
pub struct Trickle {
    go: std::sync::mpsc::Sender<()>,
    stop: std::sync::mpsc::Sender<()>,
    feeder: thread::JoinHandle<()>,
}

impl Trickle {
    /// Starts feeding `stdin`: `head` now, `chunks` once told to go.
    pub fn start(mut stdin: ChildStdin, head: String, chunks: Vec<String>) -> Trickle {
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let feeder = thread::spawn(move || {
            // The program may stop reading at any time (a failure): fine.
            let _ = stdin.write_all(head.as_bytes());
            let _ = stdin.flush();
            if go_rx.recv().is_err() {
                return;
            }
            let mut chunks = chunks.into_iter();
            for chunk in chunks.by_ref() {
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                let _ = stdin.flush();
                if stop_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    break;
                }
            }
            let rest: String = chunks.collect();
            let _ = stdin.write_all(rest.as_bytes());
        });
        Trickle { go, stop, feeder }
    }

    /// Starts the trickle.
    pub fn go(&self) {
        let _ = self.go.send(());
    }

    /// Ends the trickle: the rest of the chunks go at once.
    pub fn stop(&self) {
        let _ = self.stop.send(());
    }

    /// Waits until all is written (or the program stopped reading); stdin
    /// is closed then.
    pub fn join(self) {
        let Trickle { go, stop, feeder } = self;
        drop((go, stop));
        let _ = feeder.join();
    }
}
