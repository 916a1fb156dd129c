//! What a newcomer sees first: every program's --help has examples, exit
//! statuses and a pointer to config.ini.example; the filters typed alone on
//! a terminal say they are reading stdin instead of waiting in silence; and
//! `tstat-parse ROOT` on a tree root suggests `tstat-find --all ROOT`.

#[path = "support/pty.rs"]
mod pty;

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROGRAMS: [&str; 6] = [
    env!("CARGO_BIN_EXE_tstat-find"),
    env!("CARGO_BIN_EXE_tstat-parse"),
    env!("CARGO_BIN_EXE_tstat-chunk"),
    env!("CARGO_BIN_EXE_tstat-rabbit"),
    env!("CARGO_BIN_EXE_tstat_send"),
    env!("CARGO_BIN_EXE_tstat-cull"),
];
const PARSE: &str = env!("CARGO_BIN_EXE_tstat-parse");
const CHUNK: &str = env!("CARGO_BIN_EXE_tstat-chunk");

#[test]
fn every_help_has_examples_exit_statuses_and_the_config_pointer() {
    for prog in PROGRAMS {
        for flag in ["-h", "--help"] {
            let out = Command::new(prog).arg(flag).output().expect("run --help");
            assert!(out.status.success(), "{prog} {flag}: {:?}", out.status);
            let text = String::from_utf8_lossy(&out.stdout);
            for want in ["Examples:", "Exit status:", "config.ini.example"] {
                assert!(text.contains(want), "{prog} {flag} lacks {want:?}:\n{text}");
            }
        }
    }
}

#[test]
fn parse_on_a_tree_root_suggests_tstat_find() {
    let tree = tempfile::tempdir().unwrap();
    for d in ["2026_03_01_00_00.out", "2026_03_01_01_00.out"] {
        let dir = tree.path().join("sensor").join(d);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("log_tcp_complete"), "").unwrap();
    }
    let root = tree.path().display().to_string();
    let out = Command::new(PARSE).arg(&root).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "tstat-parse: hint: {root} holds 2 tstat directories below it; to parse them all: \
             tstat-find --all {root} | tstat-parse"
        )),
        "{err}"
    );

    // A directory with nothing of Tstat's below it gets the error only.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(PARSE).arg(empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no log_tcp_complete or log_udp_complete"),
        "{err}"
    );
    assert!(!err.contains("hint"), "{err}");
}

/// Runs `prog` with a pseudo-terminal as stdin, waits for its first stderr
/// line, then types Ctrl-D; returns that line and the exit status.
fn on_a_terminal(prog: &str) -> (String, Option<i32>) {
    let (mut master, slave) = pty::open();
    let mut child = Command::new(prog)
        .stdin(Stdio::from(slave))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut byte = [0u8];
        while stderr.read(&mut byte).unwrap_or(0) == 1 {
            text.push(byte[0]);
            if byte[0] == b'\n' {
                let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
                text.clear();
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    // Ctrl-D at the start of a line: end of input for the program.
    master.write_all(&[4]).expect("type Ctrl-D");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{prog} did not end after Ctrl-D");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(master);
    reader.join().expect("stderr reader");
    (
        first.unwrap_or_else(|_| panic!("{prog} printed nothing on a terminal")),
        status.code(),
    )
}

#[test]
fn filters_typed_alone_on_a_terminal_say_they_read_stdin() {
    let (line, code) = on_a_terminal(PARSE);
    assert!(
        line.starts_with("tstat-parse: reading tstat directory paths from stdin"),
        "{line}"
    );
    assert!(line.contains("tstat-find ROOT | tstat-parse"), "{line}");
    assert_eq!(code, Some(0), "an empty stdin is not an error");

    let (line, code) = on_a_terminal(CHUNK);
    assert!(
        line.starts_with("tstat-chunk: reading NDJSON flow documents from stdin"),
        "{line}"
    );
    assert_eq!(code, Some(0));
}

#[test]
fn filters_on_a_pipe_print_no_hint() {
    for prog in [PARSE, CHUNK] {
        let out = Command::new(prog)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert!(out.status.success(), "{prog}: {:?}", out.status);
        assert!(
            out.stderr.is_empty(),
            "{prog}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
