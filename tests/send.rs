//! tstat_send (and scripts/tstat_send.sh) end to end against private
//! RabbitMQ nodes: every golden flow delivered once with stable ids, the
//! directory Tstat still writes left alone, the shell pipeline publishing the
//! same messages as the driver, broker loss and SIGTERM mid-directory then a
//! resumed run, -N, --single, --watch, config and usage errors before any
//! directory is read, the Prometheus metrics file, and scripts/demo.sh.
//!
//! The tests that only need a broker share one node (each with its own
//! queue); the ones that stop or block their broker start their own.

mod common;
#[path = "support/gentree.rs"]
mod gentree;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::docs;
use common::flows::{consume_all, dedup, flatten, queue_len, split_id};
use common::rabbit::{RabbitNode, shared_node, unique, unreachable_config};
use common::run::{
    RUN_DEADLINE, Running, assert_status, bin_dir, command, program, text, tstat_send_sh,
    wait_until,
};
use common::trees::{SETTLED, copy_fixture};
use serde_json::Value;
use tstat_transport::identity::tree_tag;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
const GOLDEN: &str = "synthetic/expected.bytes0.sensor-s.instance-1.ndjson";
const DIR0: &str = "2026_03_01_00_00.out";
const DIR1: &str = "2026_03_01_01_00.out";
/// The "current" directory Tstat is still writing (newest name, fresh logs).
const CURRENT: &str = "2026_03_01_02_00.out";
/// The flags every run here uses to match the golden file.
const GOLDEN_FLAGS: [&str; 6] = ["--bytes", "0", "-S", "s", "-I", "1"];

// ---------------------------------------------------------------------------
// Helpers

/// ROOT with the two synthetic golden directories, written three hours ago,
/// and (with `current`) a newer directory whose logs were just written.
fn golden_tree(current: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let old = Some(SETTLED);
    copy_fixture(&format!("synthetic/{DIR0}"), &root.path().join(DIR0), old);
    copy_fixture(&format!("synthetic/{DIR1}"), &root.path().join(DIR1), old);
    if current {
        copy_fixture(
            &format!("synthetic/{DIR1}"),
            &root.path().join(CURRENT),
            None,
        );
    }
    root
}

/// `tstat_send args`, run to completion.
fn send(args: &[&str]) -> Output {
    program("tstat_send").args(args).run()
}

/// `tstat_send args`, started.
fn start(args: &[&str]) -> Running {
    program("tstat_send").args(args).spawn()
}

/// `scripts/tstat_send.sh args`, run to completion.
fn script(args: &[&str]) -> Output {
    tstat_send_sh().args(args).run()
}

fn is_marked(dir: &Path) -> bool {
    match fs::read_to_string(dir.join(".processed")) {
        Ok(t) => {
            assert_eq!(t, "processed", "{}/.processed content", dir.display());
            true
        }
        Err(_) => false,
    }
}

/// Every `.processed` and `.progress` (and temp file) under `root`; the
/// tree's lock file is not a marker.
fn markers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.') && n != ".tstat_send.lock")
            {
                found.push(p);
            }
        }
    }
    found
}

fn golden_docs() -> Vec<Value> {
    let t = fs::read_to_string(docs::fixtures().join(GOLDEN)).expect("read golden");
    docs::ndjson(&t)
}

#[track_caller]
fn assert_docs(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: flow count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            docs::same(g, w),
            "{what}: flow {i} differs\n got: {g}\nwant: {w}"
        );
    }
}

/// The confirmed count in a `.progress` record (0 when missing or being
/// replaced).
fn progress_count(dir: &Path) -> u64 {
    common::rabbit::confirmed_count(&dir.join(".progress"))
}

// ---------------------------------------------------------------------------
// Prometheus text exposition, as node_exporter's textfile collector reads it

/// Parses exposition text into sample name (with labels) → value. Every
/// sample must follow a `# TYPE` line for its metric, values must be floats,
/// the text must end with a newline.
fn parse_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    if text.is_empty() {
        return Err("empty file".into());
    }
    if !text.ends_with('\n') {
        return Err("does not end with a newline (partial file?)".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut samples = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().ok_or(format!("line {n}: HELP without name"))?;
                    if !valid_name(name) {
                        return Err(format!("line {n}: bad metric name {name:?}"));
                    }
                    let help = words.next().unwrap_or_default();
                    if helps.insert(name.into(), help.into()).is_some() {
                        return Err(format!("line {n}: second HELP for {name}"));
                    }
                }
                Some("TYPE") => {
                    let name = words.next().ok_or(format!("line {n}: TYPE without name"))?;
                    let kind = words.next().unwrap_or_default();
                    if !valid_name(name) {
                        return Err(format!("line {n}: bad metric name {name:?}"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(format!("line {n}: unknown type {kind:?}"));
                    }
                    if samples.keys().any(|s: &String| s == name) {
                        return Err(format!("line {n}: TYPE for {name} after its samples"));
                    }
                    if types.insert(name.into(), kind.into()).is_some() {
                        return Err(format!("line {n}: second TYPE for {name}"));
                    }
                }
                _ => {} // a plain comment
            }
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(open) => {
                let close = line[open..]
                    .find('}')
                    .ok_or(format!("line {n}: unclosed labels"))?;
                (&line[..open + close + 1], &line[open + close + 1..])
            }
            None => line
                .split_once(' ')
                .ok_or(format!("line {n}: sample without value: {line:?}"))?,
        };
        let name = series.split('{').next().unwrap_or_default();
        if !valid_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        if !types.contains_key(name) {
            return Err(format!("line {n}: sample {name} has no TYPE before it"));
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .ok_or(format!("line {n}: sample without value"))?;
        let v: f64 = value
            .parse()
            .map_err(|e| format!("line {n}: value {value:?}: {e}"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| format!("line {n}: timestamp {ts:?}: {e}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing fields"));
        }
        if samples.insert(series.to_string(), v).is_some() {
            return Err(format!("line {n}: duplicate sample {series}"));
        }
    }
    if samples.is_empty() {
        return Err("no samples".into());
    }
    Ok(samples)
}

#[test]
fn prometheus_parser_rejects_what_node_exporter_rejects() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n# TYPE b gauge\nb{x=\"1 2\"} 1.5e3\n";
    let m = parse_prometheus(good).expect("valid text");
    assert_eq!(m["a_total"], 3.0);
    assert_eq!(m["b{x=\"1 2\"}"], 1500.0);
    for bad in [
        "",
        "a_total 3\n",                  // no TYPE
        "# TYPE a counter\na x\n",      // value not a float
        "# TYPE a counter\na 1",        // cut short
        "# TYPE a counter\na 1\na 2\n", // duplicate
        "# TYPE a counter\n# TYPE a gauge\na 1\n",
        "# TYPE 1a counter\n1a 1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// End to end

#[test]
fn every_golden_flow_delivered_once_and_current_dir_left_alone() {
    let node = shared_node();
    let root = golden_tree(true);
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("send_e2e");
    let cfg = node.write_config(work.path(), &queue);
    let r = root.path().to_str().expect("utf-8");
    let c = cfg.to_str().expect("utf-8");
    let mut args = vec!["-d", r, "-c", c, "-q"];
    args.extend(GOLDEN_FLAGS);

    let out = send(&args);
    assert_status(&out, 0, "first run");
    assert!(is_marked(&root.path().join(DIR0)), "{DIR0} marked");
    assert!(is_marked(&root.path().join(DIR1)), "{DIR1} marked");
    let current = root.path().join(CURRENT);
    assert!(
        !is_marked(&current),
        "the directory Tstat writes is left alone"
    );
    let mut found = markers(root.path());
    found.sort();
    let want: Vec<PathBuf> = [DIR0, DIR1]
        .iter()
        .map(|d| root.path().join(d).join(".processed"))
        .collect();
    assert_eq!(found, want, "the two markers and no .progress");

    let msgs = consume_all(node, &queue);
    let want = golden_docs();
    assert_docs(
        &flatten(msgs.iter().map(|m| m.body.as_slice())),
        &want,
        "delivered flows",
    );
    // Ids: SENSOR@TREE:DIRNAME:INDEX, per directory from 0, in publishing
    // order.
    let owner = format!("s@{}:", tree_tag(root.path()));
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for m in &msgs {
        let id = m.message_id();
        let (dir, index) = split_id(&id);
        assert!(
            id.starts_with(&owner),
            "id {id} carries the sensor and tree"
        );
        assert!(dir == DIR0 || dir == DIR1, "id {id} names a golden dir");
        let n = next.entry(dir.clone()).or_default();
        assert_eq!(index, *n, "ids of {dir} in order");
        *n += 1;
        let p = &m.properties;
        assert_eq!(p.delivery_mode(), &Some(2), "{id}: persistent");
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json"),
            "{id}: content type"
        );
    }
    assert_eq!(
        msgs.first().map(|m| m.message_id()).as_deref(),
        Some(format!("{owner}2026_03_01_00_00.out:0").as_str())
    );
    assert_eq!(next.len(), 2, "both directories published");

    // A second run has nothing to do.
    let out = send(&args);
    assert_status(&out, 0, "second run");
    assert_eq!(
        queue_len(node, &queue),
        0,
        "the second run published nothing"
    );
    assert!(!is_marked(&current), "still left alone");
}

#[test]
fn shell_pipeline_publishes_the_same_messages_as_the_driver() {
    let node = shared_node();
    let work = tempfile::tempdir().expect("tempdir");
    let (tree_a, tree_b) = (golden_tree(true), golden_tree(true));
    let (qa, qb) = (unique("send_driver"), unique("send_shell"));
    let (ca, cb) = (
        node.write_config(work.path(), &qa),
        node.write_config(work.path(), &qb),
    );
    let args = |root: &Path, cfg: &Path| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-d".into(),
            root.display().to_string(),
            "-c".into(),
            cfg.display().to_string(),
            "-q".into(),
        ];
        a.extend(GOLDEN_FLAGS.iter().map(|s| s.to_string()));
        a
    };
    let a = args(tree_a.path(), &ca);
    let out = send(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_status(&out, 0, "tstat_send");
    let b = args(tree_b.path(), &cb);
    let out = script(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_status(&out, 0, "tstat_send.sh");

    for tree in [&tree_a, &tree_b] {
        assert!(is_marked(&tree.path().join(DIR0)));
        assert!(is_marked(&tree.path().join(DIR1)));
        assert!(!is_marked(&tree.path().join(CURRENT)));
        assert_eq!(markers(tree.path()).len(), 2, "no .progress left");
    }
    let (ma, mb) = (consume_all(node, &qa), consume_all(node, &qb));
    assert!(!ma.is_empty());
    assert_eq!(ma.len(), mb.len(), "message count");
    // The same ids but for each tree's own identity.
    let (ta, tb) = (
        format!("@{}:", tree_tag(tree_a.path())),
        format!("@{}:", tree_tag(tree_b.path())),
    );
    for (x, y) in ma.iter().zip(&mb) {
        assert!(x.message_id().contains(&ta) && y.message_id().contains(&tb));
        assert_eq!(
            x.message_id().replace(&ta, "@TREE:"),
            y.message_id().replace(&tb, "@TREE:"),
            "ids in the same order"
        );
        assert!(
            x.body == y.body,
            "{}: bodies differ byte for byte",
            x.message_id()
        );
        assert_eq!(x.properties.delivery_mode(), y.properties.delivery_mode());
        assert_eq!(x.properties.content_type(), y.properties.content_type());
    }
    assert_docs(
        &flatten(mb.iter().map(|m| m.body.as_slice())),
        &golden_docs(),
        "shell pipeline flows",
    );

    // And the script's -N prints what tstat_send -N prints.
    let tree_c = golden_tree(false);
    let r = tree_c.path().to_str().expect("utf-8");
    let mut n = vec!["-d", r, "-N", "--all"];
    n.extend(GOLDEN_FLAGS);
    let (d, s) = (send(&n), script(&n));
    assert_status(&d, 0, "tstat_send -N");
    assert_status(&s, 0, "tstat_send.sh -N");
    assert!(d.stdout == s.stdout, "-N output differs");
    assert!(markers(tree_c.path()).is_empty(), "-N marks nothing");
}

// ---------------------------------------------------------------------------
// Faults

#[test]
fn broker_stopped_mid_directory_then_resumed_run_delivers_each_flow() {
    let mut node = RabbitNode::start();
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let sum = gentree::generate_tree(
        root.path(),
        &gentree::GenConfig {
            dirs: 1,
            tcp_rows: 30_000,
            udp_rows: 20_000,
            seed: 17,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate tree");
    assert!(sum.rows() >= 50_000);
    let dir = sum.dirs[0].clone();
    let queue = unique("send_stop");
    let cfg = node.write_config(work.path(), &queue);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    // Small messages and a small window keep the run long enough (many
    // confirm round trips and record writes) for `stop_app`, which takes a
    // second or two to act, to land while it publishes.
    let window = 16usize;
    let common = [
        "-d",
        r,
        "--all",
        "--bytes",
        "0",
        "-S",
        "s",
        "--chunk-size",
        "5",
    ];

    // What must arrive: the arrays of -N, in order.
    let expected = send(&[&common[..], &["-N"]].concat());
    assert_status(&expected, 0, "-N");
    let expected: Vec<&[u8]> = expected
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert!(expected.len() > 1000, "{} messages", expected.len());

    let w = window.to_string();
    let publish = [
        &common[..],
        &[
            "-c",
            c,
            "-q",
            "--window",
            &w,
            "--retries",
            "0",
            "--confirm-timeout",
            "5",
            "--connect-timeout",
            "5",
        ],
    ]
    .concat();
    let run1 = start(&publish);
    // Stop the broker once some messages are confirmed (so queued).
    wait_until(
        "the first confirms (.progress > 0)",
        Duration::from_secs(60),
        || progress_count(&dir) > 0,
    );
    node.stop_app();
    let ended = run1.wait(Duration::from_secs(90));
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(1), "broker gone → exit 1; stderr:\n{err}");
    assert!(!is_marked(&dir), "not marked after a failure");
    let confirmed = progress_count(&dir);
    assert!(
        confirmed > 0 && (confirmed as usize) < expected.len(),
        ".progress records a partial count: {confirmed} of {}; stderr:\n{err}",
        expected.len()
    );

    node.start_app();
    let out = send(&publish);
    assert_status(&out, 0, "resumed run");
    assert!(is_marked(&dir), "marked after the resumed run");
    assert!(!dir.join(".progress").exists(), ".progress removed");

    let msgs = consume_all(&node, &queue);
    let (unique_msgs, dups) = dedup(&msgs);
    assert_eq!(unique_msgs.len(), expected.len(), "every id delivered");
    let name = dir.file_name().and_then(|n| n.to_str()).expect("dir name");
    for (i, (d, index, body)) in unique_msgs.iter().enumerate() {
        assert_eq!((d.as_str(), *index), (name, i as u64), "ids 0..n");
        assert!(body.as_slice() == expected[i], "message {i} body");
    }
    assert!(
        dups <= window,
        "{dups} ids delivered twice, more than the window of {window}"
    );
}

/// A generated directory big enough that the parser is still producing
/// when publishing stops (far more messages than the channels between
/// parser and publisher hold).
fn large_tree(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let sum = gentree::generate_tree(
        root.path(),
        &gentree::GenConfig {
            dirs: 1,
            tcp_rows: 20_000,
            udp_rows: 10_000,
            seed,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate tree");
    let dir = sum.dirs[0].clone();
    (root, dir)
}

/// Regression: when publishing a directory stopped early (broker
/// unreachable, lost, or a signal) while its parser thread was still
/// producing, the driver joined that thread from the async runtime before
/// the task holding the channel's receiver was dropped: parser and runtime
/// waited on each other for ever, and SIGTERM could not end it either.
#[test]
fn unreachable_broker_with_a_large_directory_fails_instead_of_hanging() {
    let (root, dir) = large_tree(5);
    let work = tempfile::tempdir().expect("tempdir");
    let (cfg, port) = unreachable_config(work.path());
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let run = start(&[
        "-d",
        r,
        "-c",
        c,
        "--all",
        "--bytes",
        "0",
        "-q",
        "--retries",
        "0",
        "--connect-timeout",
        "2",
    ]);
    let ended = run.wait(Duration::from_secs(60));
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(1), "stderr:\n{err}");
    assert!(err.contains(&port.to_string()), "names the broker:\n{err}");
    assert!(!is_marked(&dir));
}

#[test]
fn sigterm_mid_directory_exits_143_and_next_run_resumes() {
    let node = shared_node();
    let (root, dir) = large_tree(23);
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("send_term_mid");
    let cfg = node.write_config(work.path(), &queue);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let window = 16usize;
    let w = window.to_string();
    let common = [
        "-d",
        r,
        "--all",
        "--bytes",
        "0",
        "-S",
        "s",
        "--chunk-size",
        "10",
    ];
    let expected = send(&[&common[..], &["-N"]].concat());
    assert_status(&expected, 0, "-N");
    let expected: Vec<&[u8]> = expected
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let args = [
        &common[..],
        &["-c", c, "-q", "--window", &w, "--confirm-timeout", "5"],
    ]
    .concat();
    let mut run1 = start(&args);
    wait_until(
        "the first confirms (.progress > 0)",
        Duration::from_secs(60),
        || progress_count(&dir) > 0,
    );
    assert!(run1.running(), "still publishing when signalled");
    run1.term();
    // The deadline only stops a hang; that the run stopped early rather
    // than finishing is what the exit status and the partial record show.
    let ended = run1.wait(Duration::from_secs(60));
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(143), "SIGTERM → 143; stderr:\n{err}");
    assert!(!is_marked(&dir), "interrupted dir unmarked");
    let confirmed = progress_count(&dir);
    assert!(
        confirmed > 0 && (confirmed as usize) < expected.len(),
        ".progress {confirmed} of {}",
        expected.len()
    );

    let out = send(&args);
    assert_status(&out, 0, "next run");
    assert!(is_marked(&dir));
    assert!(!dir.join(".progress").exists());
    let msgs = consume_all(node, &queue);
    let (unique_msgs, dups) = dedup(&msgs);
    assert_eq!(unique_msgs.len(), expected.len(), "every id delivered");
    for (i, (_, index, body)) in unique_msgs.iter().enumerate() {
        assert_eq!(*index, i as u64);
        assert!(body.as_slice() == expected[i], "message {i} body");
    }
    assert!(dups <= window, "{dups} ids delivered twice");
}

/// design §8.4: SIGTERM ends the run with 143 whatever publishing waits on,
/// also a publish held up by a blocked broker (regression: it exited 1).
#[test]
fn sigterm_while_blocked_exits_143_and_next_run_completes() {
    let node = RabbitNode::start();
    let root = golden_tree(false);
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("send_term");
    let cfg = node.write_config(work.path(), &queue);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let mut args = vec!["-d", r, "-c", c, "--confirm-timeout", "8"];
    args.extend(GOLDEN_FLAGS);

    // Publishing blocks under a memory alarm: the run is caught mid-directory.
    node.set_memory_alarm();
    let run1 = start(&args);
    wait_until(
        "tstat_send to report the blocked broker",
        Duration::from_secs(60),
        || run1.stderr_so_far().contains("blocking publishers"),
    );
    run1.term();
    // Observed: it ends with 143 while the broker still blocks (the alarm
    // is cleared only below), so the blocked publish did not hold it; the
    // deadline only stops a hang.
    let ended = run1.wait(RUN_DEADLINE);
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(143), "SIGTERM → 143; stderr:\n{err}");
    assert!(
        !is_marked(&root.path().join(DIR0)),
        "interrupted dir unmarked"
    );
    assert!(!is_marked(&root.path().join(DIR1)), "later dir untouched");
    assert!(
        err.contains("interrupted"),
        "says it was interrupted:\n{err}"
    );

    node.clear_memory_alarm();
    let out = send(&args);
    assert_status(&out, 0, "next run");
    assert!(is_marked(&root.path().join(DIR0)));
    assert!(is_marked(&root.path().join(DIR1)));
    assert_eq!(markers(root.path()).len(), 2, "no .progress left");
    let msgs = consume_all(&node, &queue);
    let (unique_msgs, _) = dedup(&msgs);
    assert_docs(
        &flatten(unique_msgs.iter().map(|(_, _, b)| b.as_slice())),
        &golden_docs(),
        "flows after the resumed run",
    );
}

// ---------------------------------------------------------------------------
// Modes

#[test]
fn no_transport_prints_arrays_and_marks_nothing() {
    let root = golden_tree(false);
    let r = root.path().to_str().expect("utf-8");
    // -N never reads the config: a missing one is fine.
    let mut args = vec!["-d", r, "-N", "--all", "-c", "/nonexistent/config.ini"];
    args.extend(GOLDEN_FLAGS);
    let out = send(&args);
    assert_status(&out, 0, "-N");
    let lines: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for l in &lines {
        let n = serde_json::from_slice::<Value>(l)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .expect("each line an array");
        assert!((1..=100).contains(&n), "array of {n}");
    }
    assert_docs(&flatten(lines), &golden_docs(), "-N output");
    assert!(markers(root.path()).is_empty(), "-N marks nothing");
}

#[test]
fn single_stops_after_the_first_directory_with_data() {
    let node = shared_node();
    let root = golden_tree(false);
    // An older directory whose only log has no rows: no flows, marked at once.
    let empty = root.path().join("2026_02_28_23_00.out");
    fs::create_dir(&empty).expect("mkdir");
    fs::write(
        empty.join("log_udp_complete"),
        format!("{}\n", gentree::UDP_HEADER),
    )
    .expect("write header-only log");
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("send_single");
    let cfg = node.write_config(work.path(), &queue);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let mut args = vec!["-d", r, "-c", c, "--all", "--single", "-q"];
    args.extend(GOLDEN_FLAGS);
    let out = send(&args);
    assert_status(&out, 0, "--single");
    assert!(is_marked(&empty), "the empty directory is marked");
    assert!(is_marked(&root.path().join(DIR0)), "the first with data");
    assert!(!is_marked(&root.path().join(DIR1)), "--single stops there");
    let msgs = consume_all(node, &queue);
    assert!(!msgs.is_empty());
    for m in &msgs {
        assert_eq!(split_id(&m.message_id()).0, DIR0, "only {DIR0} published");
    }

    // The shell pipeline does the same on a fresh copy.
    let root2 = golden_tree(false);
    let empty2 = root2.path().join("2026_02_28_23_00.out");
    fs::create_dir(&empty2).expect("mkdir");
    fs::write(
        empty2.join("log_udp_complete"),
        format!("{}\n", gentree::UDP_HEADER),
    )
    .expect("write header-only log");
    let queue2 = unique("send_single_sh");
    let cfg2 = node.write_config(work.path(), &queue2);
    let r2 = root2.path().to_str().expect("utf-8");
    let c2 = cfg2.to_str().expect("utf-8");
    let mut args2 = vec!["-d", r2, "-c", c2, "--all", "--single", "-q"];
    args2.extend(GOLDEN_FLAGS);
    let out = script(&args2);
    assert_status(&out, 0, "tstat_send.sh --single");
    assert!(is_marked(&empty2));
    assert!(is_marked(&root2.path().join(DIR0)));
    assert!(!is_marked(&root2.path().join(DIR1)));
    let msgs2 = consume_all(node, &queue2);
    assert_eq!(msgs2.len(), msgs.len(), "same messages as the driver");
}

#[test]
fn watch_ships_a_directory_that_appears_and_metrics_are_never_partial() {
    let node = shared_node();
    let root = tempfile::tempdir().expect("tempdir");
    let staging = tempfile::tempdir().expect("tempdir");
    let metrics_dir = tempfile::tempdir().expect("tempdir");
    let old = Some(SETTLED);
    copy_fixture(&format!("synthetic/{DIR0}"), &root.path().join(DIR0), old);
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("send_watch");
    let cfg = node.write_config(work.path(), &queue);
    let metrics = metrics_dir.path().join("tstat_send.prom");
    let (r, c, m) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
        metrics.to_str().expect("utf-8"),
    );
    let mut args = vec![
        "-d",
        r,
        "-c",
        c,
        "--all",
        "--watch",
        "1",
        "-q",
        "--metrics-file",
        m,
    ];
    args.extend(GOLDEN_FLAGS);

    // Read the metrics file as fast as possible while the run rewrites it.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let path = metrics.clone();
        thread::spawn(move || {
            let (mut reads, mut bad) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                if let Ok(t) = fs::read_to_string(&path) {
                    reads += 1;
                    if let Err(e) = parse_prometheus(&t) {
                        bad.push(format!("{e}:\n{t}"));
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            (reads, bad)
        })
    };

    let run = start(&args);
    wait_until(
        "the first directory marked",
        Duration::from_secs(60),
        || is_marked(&root.path().join(DIR0)),
    );
    // A directory appears whole (renamed in), as when Tstat's tree is
    // copied in; --all takes it on the next pass.
    let staged = staging.path().join(DIR1);
    copy_fixture(&format!("synthetic/{DIR1}"), &staged, old);
    fs::rename(&staged, root.path().join(DIR1)).expect("move the directory in");
    wait_until("the new directory marked", Duration::from_secs(60), || {
        is_marked(&root.path().join(DIR1))
    });
    // Wait for a metrics file written after the second directory.
    wait_until(
        "metrics for both directories",
        Duration::from_secs(30),
        || {
            fs::read_to_string(&metrics)
                .ok()
                .and_then(|t| parse_prometheus(&t).ok())
                .is_some_and(|s| s.get("tstat_send_directories_total") == Some(&2.0))
        },
    );
    let mut run = run;
    assert!(run.running(), "--watch keeps running");
    run.term();
    let ended = run.wait(Duration::from_secs(40));
    let (st, err) = (ended.status, text(&ended.stderr));
    // Idle between passes, SIGTERM ends the watch loop with 128+15.
    assert_eq!(st.code(), Some(143), "stderr:\n{err}");

    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().expect("reader thread");
    assert!(reads > 10, "only {reads} reads of the metrics file");
    assert!(bad.is_empty(), "partial or invalid metrics seen: {bad:?}");
    let left: Vec<_> = fs::read_dir(metrics_dir.path())
        .expect("read metrics dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec!["tstat_send.prom"], "no temp files left");

    let msgs = consume_all(node, &queue);
    assert_docs(
        &flatten(msgs.iter().map(|m| m.body.as_slice())),
        &golden_docs(),
        "flows of both passes",
    );
}

/// `--watch` keeps its connection between passes; when the broker restarts
/// in between, the next directory is still shipped over a new connection.
#[test]
fn watch_survives_a_broker_restart_between_passes() {
    let mut node = RabbitNode::start();
    let root = tempfile::tempdir().expect("tempdir");
    let staging = tempfile::tempdir().expect("tempdir");
    let old = Some(SETTLED);
    copy_fixture(&format!("synthetic/{DIR0}"), &root.path().join(DIR0), old);
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("send_watch_restart");
    let cfg = node.write_config(work.path(), &queue);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let mut args = vec!["-d", r, "-c", c, "--all", "--watch", "1", "-q"];
    args.extend(GOLDEN_FLAGS);
    let mut run = start(&args);
    wait_until(
        "the first directory marked",
        Duration::from_secs(60),
        || is_marked(&root.path().join(DIR0)),
    );
    node.stop_app();
    node.start_app();
    let staged = staging.path().join(DIR1);
    copy_fixture(&format!("synthetic/{DIR1}"), &staged, old);
    fs::rename(&staged, root.path().join(DIR1)).expect("move the directory in");
    wait_until(
        "the second directory marked after the restart",
        Duration::from_secs(90),
        || is_marked(&root.path().join(DIR1)),
    );
    assert!(
        run.running(),
        "--watch keeps running after the broker restart"
    );
    run.term();
    let ended = run.wait(Duration::from_secs(40));
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(143), "stderr:\n{err}");
    // Durable queue, persistent messages: both directories are there once.
    let got = consume_all(&node, &queue);
    let (unique_msgs, dups) = dedup(&got);
    assert_eq!(dups, 0, "nothing was sent twice");
    assert_docs(
        &flatten(unique_msgs.iter().map(|(_, _, b)| b.as_slice())),
        &golden_docs(),
        "flows after the restart",
    );
}

#[test]
fn metrics_file_is_prometheus_text_with_the_run_counters() {
    let node = shared_node();
    let root = golden_tree(true);
    let work = tempfile::tempdir().expect("tempdir");
    let metrics_dir = tempfile::tempdir().expect("tempdir");
    let metrics = metrics_dir.path().join("tstat_send.prom");
    let queue = unique("send_metrics");
    let cfg = node.write_config(work.path(), &queue);
    let (r, c, m) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
        metrics.to_str().expect("utf-8"),
    );
    let mut args = vec!["-d", r, "-c", c, "-q", "--metrics-file", m];
    args.extend(GOLDEN_FLAGS);
    let out = send(&args);
    assert_status(&out, 0, "run with --metrics-file");
    let t = fs::read_to_string(&metrics).expect("metrics file written");
    let s = parse_prometheus(&t).unwrap_or_else(|e| panic!("{e}:\n{t}"));
    let msgs = consume_all(node, &queue);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in:\n{t}"));
    assert!(get("tstat_send_last_success_timestamp_seconds") > 0.0);
    assert_eq!(get("tstat_send_messages_total"), msgs.len() as f64);
    assert_eq!(get("tstat_send_directories_total"), 2.0);
    assert_eq!(get("tstat_send_flows_total"), golden_docs().len() as f64);
    assert_eq!(
        get("tstat_send_bytes_total"),
        msgs.iter().map(|m| m.body.len()).sum::<usize>() as f64
    );
    assert_eq!(get("tstat_send_errors_total"), 0.0);
    let left = fs::read_dir(metrics_dir.path()).expect("read dir").count();
    assert_eq!(left, 1, "no temp files beside the metrics file");
    let mode = fs::metadata(&metrics)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o044, 0o044, "readable by node_exporter");
}

// ---------------------------------------------------------------------------
// Errors before any directory is read

#[test]
fn config_and_usage_errors_exit_2_before_any_directory_is_read() {
    let root = golden_tree(false);
    let work = tempfile::tempdir().expect("tempdir");
    let r = root.path().to_str().expect("utf-8");
    let no_rabbit = work.path().join("norabbit.ini");
    fs::write(&no_rabbit, "[Rabbit]\nhost = 127.0.0.1\n").expect("write");
    let bad_port = work.path().join("badport.ini");
    fs::write(
        &bad_port,
        "[rabbit]\nhost = 127.0.0.1\nport = 99999\nusername = u\npassword = secret-pw\nexchange =\n",
    )
    .expect("write");
    let nr = no_rabbit.to_str().expect("utf-8");
    let bp = bad_port.to_str().expect("utf-8");
    let missing = root.path().join("missing.ini");
    let mi = missing.to_str().expect("utf-8");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["-d", r, "-c", nr, "--all"], vec![nr, "[rabbit]"]),
        (
            vec!["-d", r, "-c", bp, "--all"],
            vec![bp, "[rabbit] port", "99999"],
        ),
        (vec!["-d", r, "-c", mi, "--all"], vec!["missing.ini"]),
        (vec!["-d", r, "-c", nr, "--bytes", "12Q"], vec!["12Q"]),
        (vec!["-d", r, "-c", nr, "--bytes", "-5"], vec!["-5"]),
        (
            vec!["-d", r, "-c", nr, "-b", "1G", "-T", "5"],
            vec!["--threshold"],
        ),
        (
            vec!["-d", "/nonexistent/tree", "-c", nr],
            vec!["/nonexistent/tree"],
        ),
        (vec!["-c", nr], vec!["--directory"]),
        (vec!["-d", r, "--no-such-flag"], vec!["--no-such-flag"]),
    ];
    for (args, names) in &cases {
        for label in ["tstat_send", "tstat_send.sh"] {
            let out = if label == "tstat_send" {
                send(args)
            } else {
                script(args)
            };
            let what = format!("{label} {args:?}");
            assert_status(&out, 2, &what);
            let err = text(&out.stderr);
            // The shell script delegates the -d check to its own message.
            if label == "tstat_send" || !args.contains(&"/nonexistent/tree") {
                for n in names {
                    if label == "tstat_send.sh" && *n == "--directory" {
                        continue;
                    }
                    assert!(err.contains(n), "{what}: stderr names {n:?}:\n{err}");
                }
            }
            assert!(!err.contains("secret-pw"), "{what}: password printed");
            assert!(
                markers(root.path()).is_empty(),
                "{what}: left {:?}",
                markers(root.path())
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Errors as good as --check's

/// stderr's lines.
fn err_lines(out: &Output) -> Vec<String> {
    text(&out.stderr).lines().map(str::to_string).collect()
}

#[test]
fn a_missing_tree_or_metrics_directory_is_named_before_anything_is_marked() {
    let root = golden_tree(false);
    let work = tempfile::tempdir().expect("tempdir");
    let (cfg, _) = unreachable_config(work.path());
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let missing = root.path().join("no-such-tree");
    let out = send(&["-d", missing.to_str().expect("utf-8"), "-c", c]);
    assert_status(&out, 2, "missing -d");
    assert_eq!(
        err_lines(&out),
        [format!(
            "tstat_send: error: -d {}: does not exist",
            missing.display()
        )]
    );
    let out = script(&["-d", missing.to_str().expect("utf-8"), "-c", c]);
    assert_status(&out, 2, "tstat_send.sh, missing -d");
    assert_eq!(
        err_lines(&out).first(),
        Some(&format!(
            "tstat_send.sh: error: -d {}: does not exist",
            missing.display()
        ))
    );
    let file = root.path().join(DIR0).join("log_tcp_complete");
    let out = send(&["-d", file.to_str().expect("utf-8"), "-c", c]);
    assert_status(&out, 2, "-d names a file");
    assert_eq!(
        err_lines(&out),
        [format!(
            "tstat_send: error: -d {}: not a directory",
            file.display()
        )]
    );

    // Checked before the first pass, with a broker or printing (-N): not
    // after directories were marked.
    let prom = work.path().join("no-such-dir").join("tstat_send.prom");
    let p = prom.to_str().expect("utf-8");
    for extra in [&[][..], &["-N"]] {
        let out = send(&[&["-d", r, "-c", c, "--all", "--metrics-file", p][..], extra].concat());
        assert_status(&out, 2, "metrics directory missing");
        assert_eq!(
            err_lines(&out),
            [format!(
                "tstat_send: error: --metrics-file {p}: cannot write in {}: No such file or \
                 directory (os error 2) (create the directory, e.g. node_exporter's textfile \
                 directory, writable by this user)",
                prom.parent().expect("parent").display()
            )]
        );
        assert!(out.stdout.is_empty(), "{extra:?}: nothing printed");
        assert!(
            markers(root.path()).is_empty(),
            "{:?}",
            markers(root.path())
        );
    }
    // A directory given as the file: renaming onto it would fail after the pass.
    let w = work.path().to_str().expect("utf-8");
    let out = send(&["-d", r, "-c", c, "--all", "--metrics-file", w]);
    assert_status(&out, 2, "metrics file is a directory");
    assert_eq!(
        err_lines(&out),
        [format!(
            "tstat_send: error: --metrics-file {w}: is a directory; name the file in it, e.g. \
             {w}/tstat_send.prom"
        )]
    );
    assert!(
        markers(root.path()).is_empty(),
        "{:?}",
        markers(root.path())
    );
}

#[test]
fn a_refused_connection_names_the_config_file_and_the_check_command() {
    let root = golden_tree(false);
    let work = tempfile::tempdir().expect("tempdir");
    let (cfg, port) = unreachable_config(work.path());
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let out = send(&["-d", r, "-c", c, "--all", "-q", "--retries", "0"]);
    assert_status(&out, 1, "broker not running");
    let lines = err_lines(&out);
    let want = [
        format!(
            "tstat_send: error: {}: not marked: cannot connect to RabbitMQ: 127.0.0.1:{port}: \
             connection refused (is the broker running there, and are host and port right in {c}?)",
            root.path().join(DIR0).display()
        ),
        format!(
            "tstat_send: hint: tstat_send --check -d {r} -c {c} looks at the config, the broker \
             and the tree, one line each"
        ),
    ];
    assert!(lines.ends_with(&want), "{lines:#?}");
    assert!(
        markers(root.path()).is_empty(),
        "{:?}",
        markers(root.path())
    );
}

#[test]
fn refused_records_and_log_errors_are_summarised_apart() {
    let root = golden_tree(false);
    let work = tempfile::tempdir().expect("tempdir");
    let (cfg, _) = unreachable_config(work.path());
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    // DIR0: a record that is not one; DIR1: a log without its header. Both
    // are left unmarked before any connection is needed.
    fs::write(root.path().join(DIR0).join(".progress"), "garbage\n").expect("write");
    fs::write(root.path().join(DIR1).join("log_tcp_complete"), "1 2 3\n").expect("write");
    fs::remove_file(root.path().join(DIR1).join("log_udp_complete")).expect("rm");
    let out = send(&["-d", r, "-c", c, "--all", "-q"]);
    assert_status(&out, 1, "refused and unreadable");
    assert_eq!(
        err_lines(&out).last().map(String::as_str),
        Some(
            "tstat_send: error: 2 directories not marked (see above): 1 because of log errors, \
             1 refused by its progress record"
        ),
        "{}",
        text(&out.stderr)
    );

    // The refused one alone is not called a log error.
    fs::remove_dir_all(root.path().join(DIR1)).expect("rm");
    let out = send(&["-d", r, "-c", c, "--all", "-q"]);
    assert_status(&out, 1, "refused");
    let lines = err_lines(&out);
    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            "tstat_send: error: 1 directory not marked: refused by its progress record (see above)"
        ),
        "{lines:#?}"
    );
    assert!(
        lines[0].starts_with(&format!(
            "tstat_send: error: {}: not marked: the progress record cannot be used",
            root.path().join(DIR0).display()
        )),
        "{lines:#?}"
    );
    assert!(!is_marked(&root.path().join(DIR0)));
}

// ---------------------------------------------------------------------------
// The demo

#[test]
fn demo_script_ships_the_sample_tree_and_reports_its_flows() {
    common::rabbit::require_rabbitmq();
    let demo = command(DEMO);
    // The test build is there already (debug, or release under
    // `cargo test --release`); another build would take minutes.
    let profile = bin_dir()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory")
        .to_string();
    let demo = demo.env("TSTAT_DEMO_PROFILE", profile);
    // Wherever cargo put this build (CARGO_TARGET_DIR, build.target-dir), the
    // demo must find the programs there: it asks cargo, never assumes ./target.
    let target_dir = bin_dir()
        .parent()
        .expect("the profile directory has a parent")
        .to_path_buf();
    let out = demo
        .env("CARGO_TARGET_DIR", &target_dir)
        .deadline(Duration::from_secs(900))
        .run();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "demo.sh failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("programs in {}\n", bin_dir().display())),
        "demo runs the programs cargo built in {}:\n{stdout}",
        bin_dir().display()
    );
    let want = golden_docs().len()
        + docs::ndjson(
            &fs::read_to_string(
                docs::fixtures().join("real-3.3/expected.bytes0.sensor-s.instance-1.ndjson"),
            )
            .expect("read golden"),
        )
        .len();
    assert_eq!(want, 2855);
    assert!(
        stdout.contains(&format!("flows received: {want}")),
        "demo reports {want} flows:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("expected {want}")),
        "demo compares with the expectation:\n{stdout}"
    );
}

/// `tstat_send -N | head`: a closed stdout ends the run quietly with 0, no
/// summary claiming what was printed.
#[test]
fn printing_into_a_closed_pipe_is_quiet() {
    use std::io::BufRead;
    let root = tempfile::tempdir().expect("tempdir");
    gentree::generate_tree(
        root.path(),
        &gentree::GenConfig {
            dirs: 1,
            tcp_rows: 5000,
            udp_rows: 0,
            seed: 3,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate");
    let mut run = program("tstat_send")
        .args(["-N", "--all", "-b", "0", "-S", "s", "-d"])
        .arg(root.path())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut first = String::new();
    std::io::BufReader::new(run.take_stdout())
        .read_line(&mut first)
        .expect("a line");
    assert!(first.starts_with('['), "{first}");
    // The reader is gone (as `head -1` would be).
    let out = run.wait(Duration::from_secs(120));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "quiet on a closed pipe: {err}");
}
