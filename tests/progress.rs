//! `tstat_send`'s progress bar on a real pseudo-terminal: which directory of
//! how many, bytes and percentage with an ETA, messages of the directory;
//! warnings printed above it on lines of their own; nothing of it left on
//! screen at the end.

mod common;
#[path = "support/gentree.rs"]
mod gentree;
#[path = "support/pty.rs"]
mod pty;

use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::run::program;

/// What a terminal would show: for each line, what follows its last
/// carriage return, without escape sequences.
fn screen(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    text.split('\n')
        .map(|line| {
            // The terminal sends "\r\n" for each "\n".
            let line = line.strip_suffix('\r').unwrap_or(line);
            let visible = line.rsplit('\r').next().unwrap_or_default();
            let mut out = String::new();
            let mut chars = visible.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    // CSI: ESC [ params final-byte
                    if chars.peek() == Some(&'[') {
                        chars.next();
                        for d in chars.by_ref() {
                            if d.is_ascii_alphabetic() {
                                break;
                            }
                        }
                    }
                    continue;
                }
                out.push(c);
            }
            out
        })
        .collect()
}

#[test]
fn the_bar_names_the_directory_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().expect("tempdir");
    let sum = gentree::generate_tree(
        root.path(),
        &gentree::GenConfig {
            dirs: 2,
            tcp_rows: 60_000,
            udp_rows: 20_000,
            seed: 6,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate tree");
    // A malformed row: its warning must not be drawn through the bar.
    let log = sum.dirs[1].join("log_udp_complete");
    let mut text = fs::read(&log).expect("read");
    text.extend_from_slice(b"garbage row\n");
    fs::write(&log, text).expect("write");

    let (mut master, slave) = pty::open();
    let run = program("tstat_send")
        .args(["--all", "-N", "-b", "0", "-S", "s", "-d"])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(slave)
        .spawn();
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        // EIO once the child (the last holder of the slave) is gone.
        let _ = master.read_to_end(&mut raw);
        raw
    });
    let out = run.wait(Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(0));
    let raw = reader.join().expect("reader");
    let all = String::from_utf8_lossy(&raw);
    assert!(all.contains("[1/2]") && all.contains("[2/2]"), "{all:?}");
    assert!(all.contains("%, ETA"), "{all:?}");
    assert!(all.contains("messages"), "{all:?}");
    let lines: Vec<String> = screen(&raw)
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let warning = lines
        .iter()
        .find(|l| l.contains("malformed row skipped"))
        .unwrap_or_else(|| panic!("a warning line: {lines:?}"));
    assert!(warning.starts_with("tstat_send: warning: "), "{warning:?}");
    let last = lines.last().expect("output");
    assert!(
        last.starts_with("tstat_send: 2 directories, "),
        "the summary is the last thing on screen: {lines:?}"
    );
}
