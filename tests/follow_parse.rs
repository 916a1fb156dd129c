//! `tstat-parse --follow` against a writer that imitates Tstat (design
//! §12.1): rows appended in bursts with a row split across two writes come
//! out once each, in order, as the documents `tstat-parse -b 0` gives for the
//! whole file; half a row is not printed before its newline; a tree follows
//! Tstat to its next directories (none skipped); SIGINT/SIGTERM end it with
//! 130/143 and everything parsed printed; `| head -n 5` exits 0; a `.gz` log
//! is refused. Every wait polls with a deadline.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::docs::{ndjson, same};
use common::run::{Running, assert_status, command, program, text, wait_until};
use common::trees::fixtures;

/// The real Tstat 3.3 directory the rows come from.
const FIXTURE: &str = "real-3.3/2024_06_08_09_10.out";
/// Flags giving the same documents as the golden files.
const DOC_FLAGS: [&str; 6] = ["-b", "0", "-S", "s", "-I", "1"];
/// Bound on every wait for output.
const DEADLINE: Duration = Duration::from_secs(60);

/// A log of the fixture: its header line and its rows, each with its newline.
fn fixture_log(name: &str) -> (String, Vec<String>) {
    let text = fs::read_to_string(fixtures().join(FIXTURE).join(name)).unwrap();
    let mut lines = text.split_inclusive('\n').map(String::from);
    let header = lines.next().unwrap();
    (header, lines.collect())
}

/// Appends `bytes` to `path` in one write, as Tstat's stdio does.
fn append(path: &Path, bytes: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(bytes.as_bytes()).unwrap();
}

/// What `tstat-parse -b 0` prints for a log holding `header` and `rows`.
fn expected(header: &str, rows: &[String], name: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, format!("{header}{}", rows.concat())).unwrap();
    let out = program("tstat-parse").args(DOC_FLAGS).arg(&path).run();
    assert_status(&out, 0, "tstat-parse of the complete log");
    ndjson(&text(&out.stdout))
}

/// The documents a running follower has printed so far (complete lines).
fn printed(p: &Running) -> Vec<Value> {
    let out = p.stdout_so_far();
    let complete = out.rfind('\n').map_or("", |n| &out[..=n]);
    ndjson(complete)
}

fn of_protocol<'a>(docs: &'a [Value], proto: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["meta"]["protocol"] == proto)
        .collect()
}

/// Asserts `ours` are `want`, document by document, in order.
#[track_caller]
fn assert_docs(ours: &[&Value], want: &[Value], what: &str) {
    assert_eq!(ours.len(), want.len(), "{what}: number of documents");
    for (i, (a, b)) in ours.iter().zip(want).enumerate() {
        assert!(
            same(a, b),
            "{what}: document {i} differs\n ours: {a}\n want: {b}"
        );
    }
}

/// A live Tstat directory `name` below a new tree, holding only headers.
fn live_tree(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tree = tempfile::tempdir().unwrap();
    let dir = tree.path().join(name);
    fs::create_dir(&dir).unwrap();
    (tree, dir)
}

fn follow(args: &[&str], path: &Path) -> Running {
    program("tstat-parse")
        .arg("--follow")
        .args(DOC_FLAGS)
        .args(args)
        .arg(path)
        .spawn()
}

#[test]
fn rows_written_in_bursts_come_out_once_in_order_and_sigint_ends_it() {
    let (_tree, dir) = live_tree("2024_06_08_09_10.out");
    let (tcp_header, tcp_rows) = fixture_log("log_tcp_complete");
    let (udp_header, udp_rows) = fixture_log("log_udp_complete");
    let (tcp, udp) = (dir.join("log_tcp_complete"), dir.join("log_udp_complete"));
    append(&tcp, &tcp_header);
    append(&udp, &udp_header);
    let mut p = follow(&[], &dir);

    // Bursts of 7 TCP and 4 UDP rows; the last TCP row of a burst is written
    // half now and half with the next burst. Each burst lands in a look of
    // its own: each look reads the TCP log before the UDP log, so once a
    // burst's UDP rows are printed a look has read its TCP part (half row
    // included), and only then is the next burst written.
    let mut carry = String::new();
    let mut written_udp = 0;
    let mut udp_chunks = udp_rows.chunks(4);
    for burst in tcp_rows.chunks(7) {
        let mut text = std::mem::take(&mut carry);
        let (whole, last) = burst.split_at(burst.len() - 1);
        text.push_str(&whole.concat());
        let (head, tail) = last[0].split_at(last[0].len() / 2);
        text.push_str(head);
        carry = tail.to_string();
        append(&tcp, &text);
        if let Some(u) = udp_chunks.next() {
            append(&udp, &u.concat());
            written_udp += u.len();
            let want = expected(&udp_header, &udp_rows[..written_udp], "log_udp_complete").len();
            wait_until("the burst's UDP rows", DEADLINE, || {
                of_protocol(&printed(&p), "udp").len() >= want
            });
        }
    }
    append(&tcp, &carry);
    for u in udp_chunks {
        append(&udp, &u.concat());
    }

    let want_tcp = expected(&tcp_header, &tcp_rows, "log_tcp_complete");
    let want_udp = expected(&udp_header, &udp_rows, "log_udp_complete");
    let total = want_tcp.len() + want_udp.len();
    wait_until("every row's documents", DEADLINE, || {
        printed(&p).len() >= total
    });
    p.signal(libc::SIGINT);
    let status = p.wait_status(DEADLINE);
    assert_eq!(status.code(), Some(130), "stderr:\n{}", p.stderr_so_far());
    assert_eq!(p.stderr_so_far(), "", "a clean stop says nothing");
    let docs = printed(&p);
    assert_docs(&of_protocol(&docs, "tcp"), &want_tcp, "TCP");
    assert_docs(&of_protocol(&docs, "udp"), &want_udp, "UDP");
    assert_eq!(docs.len(), total, "nothing printed twice");
}

#[test]
fn half_a_row_is_not_printed_before_its_newline() {
    let (_tree, dir) = live_tree("2024_06_08_09_10.out");
    let (tcp_header, tcp_rows) = fixture_log("log_tcp_complete");
    let (udp_header, udp_rows) = fixture_log("log_udp_complete");
    let (tcp, udp) = (dir.join("log_tcp_complete"), dir.join("log_udp_complete"));
    append(&tcp, &format!("{tcp_header}{}", tcp_rows[..3].concat()));
    append(&udp, &udp_header);
    let mut p = follow(&["-v"], &dir);
    let first = expected(&tcp_header, &tcp_rows[..3], "log_tcp_complete");
    wait_until("the first rows", DEADLINE, || {
        printed(&p).len() >= first.len()
    });

    let (head, tail) = tcp_rows[3].split_at(tcp_rows[3].len() / 2);
    append(&tcp, head);
    // Each look reads the TCP log before the UDP log: once the second of two
    // UDP rows written one after the other is printed, a whole look has read
    // the TCP log since the half row was on disk.
    for (i, row) in udp_rows[..2].iter().enumerate() {
        append(&udp, row);
        wait_until("a UDP row", DEADLINE, || {
            of_protocol(&printed(&p), "udp").len() >= 2 * (i + 1)
        });
    }
    assert_docs(
        &of_protocol(&printed(&p), "tcp"),
        &first,
        "TCP before the newline",
    );

    append(&tcp, tail);
    let four = expected(&tcp_header, &tcp_rows[..4], "log_tcp_complete");
    wait_until("the completed row", DEADLINE, || {
        of_protocol(&printed(&p), "tcp").len() >= four.len()
    });
    p.term();
    let status = p.wait_status(DEADLINE);
    assert_eq!(status.code(), Some(143), "stderr:\n{}", p.stderr_so_far());
    assert_docs(
        &of_protocol(&printed(&p), "tcp"),
        &four,
        "TCP after the newline",
    );
    let err = p.stderr_so_far();
    assert!(
        !err.contains("skipped") && !err.contains("warning"),
        "the half row was never a bad row:\n{err}"
    );
}

/// Follows a tree (given as the path, or with `--tree`) while Tstat rotates
/// twice in a row: the old directory's last rows, then both new ones in
/// order.
fn tree_follows_rotation(tree_flag: bool) {
    let tree = tempfile::tempdir().unwrap();
    let root = tree.path().join("sensor1");
    let names = [
        "2024_06_08_09_10.out",
        "2024_06_08_10_10.out",
        "2024_06_08_11_10.out",
    ];
    let dirs: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    fs::create_dir_all(&dirs[0]).unwrap();
    // An older, finished directory is not where a tree starts.
    let old = root.join("2024_06_08_08_10.out");
    fs::create_dir_all(&old).unwrap();
    fs::copy(
        fixtures().join(FIXTURE).join("log_tcp_complete"),
        old.join("log_tcp_complete"),
    )
    .unwrap();
    fs::write(old.join(".processed"), "processed").unwrap();

    let (header, rows) = fixture_log("log_tcp_complete");
    let parts = [&rows[..30], &rows[30..40], &rows[40..70], &rows[70..]];
    let log = |d: usize| dirs[d].join("log_tcp_complete");
    append(&log(0), &format!("{header}{}", parts[0].concat()));
    let mut p = if tree_flag {
        program("tstat-parse")
            .args(DOC_FLAGS)
            .arg("--tree")
            .arg(tree.path())
            .spawn()
    } else {
        follow(&[], tree.path())
    };
    let want0 = expected(&header, parts[0], "log_tcp_complete");
    wait_until("the live directory's rows", DEADLINE, || {
        printed(&p).len() >= want0.len()
    });
    assert_docs(
        &printed(&p).iter().collect::<Vec<_>>(),
        &want0,
        "before rotation",
    );

    // Tstat writes its last rows and rotates twice before the next look at
    // the parent directory.
    append(&log(0), &parts[1].concat());
    for (d, part) in [(1, parts[2]), (2, parts[3])] {
        fs::create_dir(&dirs[d]).unwrap();
        append(&log(d), &format!("{header}{}", part.concat()));
    }
    let want = expected(&header, &rows, "log_tcp_complete");
    wait_until("every directory's rows", DEADLINE, || {
        printed(&p).len() >= want.len()
    });
    // And it keeps following the newest.
    let (udp_header, udp_rows) = fixture_log("log_udp_complete");
    append(
        &dirs[2].join("log_udp_complete"),
        &format!("{udp_header}{}", udp_rows[0]),
    );
    let want_udp = expected(&udp_header, &udp_rows[..1], "log_udp_complete");
    wait_until("a row of the newest directory", DEADLINE, || {
        printed(&p).len() >= want.len() + want_udp.len()
    });
    p.signal(libc::SIGINT);
    let status = p.wait_status(DEADLINE);
    assert_eq!(status.code(), Some(130), "stderr:\n{}", p.stderr_so_far());
    let docs = printed(&p);
    assert_docs(&of_protocol(&docs, "tcp"), &want, "TCP across rotations");
    assert_docs(&of_protocol(&docs, "udp"), &want_udp, "UDP of the newest");
}

#[test]
fn a_tree_root_follows_tstat_to_each_next_directory() {
    tree_follows_rotation(false);
}

#[test]
fn tree_flag_follows_tstat_to_each_next_directory() {
    tree_follows_rotation(true);
}

#[test]
fn a_directory_is_read_to_its_end_when_tstat_rotates() {
    let (tree, dir) = live_tree("2024_06_08_09_10.out");
    let (header, rows) = fixture_log("log_tcp_complete");
    append(
        &dir.join("log_tcp_complete"),
        &format!("{header}{}", rows[..50].concat()),
    );
    let mut p = follow(&[], &dir);
    let half = expected(&header, &rows[..50], "log_tcp_complete");
    wait_until("the first rows", DEADLINE, || {
        printed(&p).len() >= half.len()
    });
    append(&dir.join("log_tcp_complete"), &rows[50..].concat());
    let next = tree.path().join("2024_06_08_10_10.out");
    fs::create_dir(&next).unwrap();
    append(&next.join("log_tcp_complete"), &header);
    let status = p.wait_status(DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr_so_far());
    let want = expected(&header, &rows, "log_tcp_complete");
    assert_docs(&printed(&p).iter().collect::<Vec<_>>(), &want, "whole log");
}

#[test]
fn a_closed_stdout_ends_it_quietly_with_status_0() {
    let (_tree, dir) = live_tree("2024_06_08_09_10.out");
    let (header, rows) = fixture_log("log_tcp_complete");
    append(
        &dir.join("log_tcp_complete"),
        &format!("{header}{}", rows.concat()),
    );
    // No more rows come: the follower must notice the reader left while idle.
    let out = command("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$0\" --follow -b 0 \"$1\" | head -n 5")
        .arg(common::run::bin("tstat-parse"))
        .arg(&dir)
        .deadline(DEADLINE)
        .run();
    assert_status(&out, 0, "tstat-parse --follow | head -n 5");
    assert_eq!(text(&out.stdout).lines().count(), 5);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_gzipped_log_cannot_be_followed() {
    let (_tree, dir) = live_tree("2024_06_08_09_10.out");
    fs::write(dir.join("log_tcp_complete.gz"), b"").unwrap();
    let out = program("tstat-parse")
        .args(["--follow", "-b", "0"])
        .arg(&dir)
        .deadline(DEADLINE)
        .run();
    assert_status(&out, 1, "--follow of a -Z directory");
    assert_eq!(
        text(&out.stderr),
        format!(
            "tstat-parse: error: {}/log_tcp_complete.gz: a gzipped log (tstat -Z) cannot be \
             followed; parse it when Tstat has rotated\n",
            dir.display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn follow_needs_one_path_not_stdin() {
    for (args, want) in [
        (
            &["--follow", "-"][..],
            "tstat-parse: error: --follow reads a Tstat directory or log file, not stdin ('-')\n",
        ),
        (
            &["--follow"],
            "tstat-parse: error: --follow needs a Tstat directory, a log file or a tree to follow\n",
        ),
    ] {
        let out = program("tstat-parse").args(args).run();
        assert_status(&out, 2, &format!("{args:?}"));
        assert_eq!(text(&out.stderr), want);
    }
}

#[test]
fn a_missing_path_to_follow_is_named_with_its_reason_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-tree");
    for flag in ["--follow", "--tree"] {
        let out = program("tstat-parse")
            .arg(flag)
            .arg(&missing)
            .deadline(DEADLINE)
            .run();
        assert_status(&out, 1, flag);
        assert_eq!(
            text(&out.stderr),
            format!(
                "tstat-parse: error: {}: No such file or directory (os error 2)\n",
                missing.display()
            ),
            "{flag}"
        );
    }
}
