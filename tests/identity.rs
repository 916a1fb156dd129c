//! Message ids that name one body forever (issue: identity): two Tstat
//! output directories on one host never share an id, a `--reship` of the
//! directory Tstat is still writing goes back to the next run instead of
//! being marked half-written, and two re-ships of one directory never share
//! a generation, even within one second.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use common::docs;
use common::flows::{consume_all, dedup, flatten};
use common::rabbit::{RabbitNode, shared_node, unique};
use common::run::{RUN_DEADLINE, assert_status, program, text, tstat_send_sh, wait_until};
use common::trees::{SETTLED, copy_fixture, fixtures, set_mtimes};
use serde_json::Value;
use tstat_transport::identity::tree_tag;

const DIR0: &str = "2026_03_01_00_00.out";
const DIR1: &str = "2026_03_01_01_00.out";
const DIR2: &str = "2026_03_01_02_00.out";

/// A tree with the two synthetic directories, finished hours ago.
fn tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    for d in [DIR0, DIR1] {
        copy_fixture(
            &format!("synthetic/{d}"),
            &root.path().join(d),
            Some(SETTLED),
        );
    }
    root
}

fn send(args: &[&str]) -> std::process::Output {
    program("tstat_send").args(args).run()
}

/// `tstat_send -b 0` of the tree at `root` with config `cfg`, successful.
fn ship_all(cfg: &str, root: &Path) {
    let out = send(&["-c", cfg, "-d", &root.display().to_string(), "-b", "0"]);
    assert_status(&out, 0, "tstat_send");
}

fn marked(dir: &Path) -> bool {
    dir.join(".processed").exists()
}

/// The flows `tstat-parse -b 0 FLAGS` gives for `dir`.
fn parsed_with(dir: &Path, flags: &[&str]) -> Vec<Value> {
    let d = dir.display().to_string();
    let mut args = vec!["-b", "0"];
    args.extend_from_slice(flags);
    args.push(&d);
    let out = docs::parse(&args);
    assert_status(&out, 0, "tstat-parse");
    docs::ndjson(&text(&out.stdout))
}

/// The flows `tstat-parse -b 0` gives for `dir` (default sensor).
fn parsed(dir: &Path) -> Vec<Value> {
    parsed_with(dir, &[])
}

/// Sorted canonical JSON texts, to compare flows as multisets.
fn canon(v: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(Value::to_string).collect();
    out.sort();
    out
}

/// An id's prefix (everything before `:DIR`): `SENSOR@TREE`.
fn owner(id: &str) -> &str {
    id.split_once(':').map_or("", |(o, _)| o)
}

#[test]
fn two_trees_on_one_host_never_share_an_id() {
    let node = shared_node();
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("two-trees");
    let cfg = node.write_config(work.path(), &queue);
    let cfg = cfg.display().to_string();
    // Two Tstat output directories (two interfaces) with the same
    // directory names, the default sensor (the host name), no -S.
    let (a, b) = (tree(), tree());
    for root in [&a, &b] {
        ship_all(&cfg, root.path());
    }
    let msgs = consume_all(node, &queue);
    let ids: BTreeSet<String> = msgs.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), msgs.len(), "every message has an id of its own");
    let (_, dups) = dedup(&msgs);
    assert_eq!(dups, 0);
    // Each tree's ids carry its own identity; the two are told apart.
    let owners: BTreeSet<&str> = ids.iter().map(|i| owner(i)).collect();
    assert_eq!(owners.len(), 2, "two owners: {owners:?}");
    for root in [&a, &b] {
        let tag = tree_tag(root.path());
        assert!(
            owners.iter().any(|o| o.ends_with(&format!("@{tag}"))),
            "an owner ends in @{tag}: {owners:?}"
        );
    }
    // A consumer that drops repeated ids keeps every flow of both trees.
    let mut want = Vec::new();
    for root in [&a, &b] {
        for d in [DIR0, DIR1] {
            want.extend(parsed(&root.path().join(d)));
        }
    }
    let got = flatten(msgs.iter().map(|m| m.body.as_slice()));
    assert_eq!(canon(&got), canon(&want), "every flow of both trees");

    // Ids are stable: the same tree shipped again (markers removed) into a
    // fresh queue gives the same ids.
    let queue2 = unique("two-trees-again");
    let cfg2 = node
        .write_config(work.path(), &queue2)
        .display()
        .to_string();
    for d in [DIR0, DIR1] {
        fs::remove_file(a.path().join(d).join(".processed")).expect("unmark");
    }
    ship_all(&cfg2, a.path());
    let again: BTreeSet<String> = consume_all(node, &queue2)
        .iter()
        .map(|m| m.message_id())
        .collect();
    let tag_a = format!("@{}:", tree_tag(a.path()));
    let first: BTreeSet<String> = ids.iter().filter(|i| i.contains(&tag_a)).cloned().collect();
    assert_eq!(again, first, "the same ids in a second run");
}

/// The lines of `path`: the header and the rows.
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read log")
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String], append: bool) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .expect("open log");
    for l in lines {
        writeln!(f, "{l}").expect("write log");
    }
}

#[test]
fn reship_of_the_directory_tstat_writes_loses_nothing() {
    let node = shared_node();
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("reship-live");
    let cfg = node.write_config(work.path(), &queue).display().to_string();
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path().display().to_string();
    copy_fixture(
        &format!("synthetic/{DIR0}"),
        &root.path().join(DIR0),
        Some(SETTLED),
    );
    // The directory Tstat writes: the header and the first half of its rows.
    let live = root.path().join(DIR1);
    fs::create_dir_all(&live).expect("mkdir");
    let src = fixtures().join("synthetic").join(DIR1);
    let mut rest: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for log in ["log_tcp_complete", "log_udp_complete"] {
        let all = lines(&src.join(log));
        let half = 1 + (all.len() - 1) / 2;
        write_lines(&live.join(log), &all[..half], false);
        rest.insert(log.into(), all[half..].to_vec());
    }
    let out = send(&["-c", &cfg, "-d", &r, "-b", "0"]);
    assert_status(&out, 0, "first run");
    assert!(marked(&root.path().join(DIR0)) && !marked(&live));

    // The shell pipeline cannot hand it back to a follower: it refuses.
    let l = live.display().to_string();
    let out = tstat_send_sh()
        .args(["-c", &cfg, "-d", &r, "-b", "0", "--reship", &l])
        .run();
    assert_status(&out, 2, "tstat_send.sh --reship of the live directory");
    assert!(text(&out.stderr).contains("Tstat is still writing it"));
    assert!(!marked(&live) && !live.join(".progress").exists());

    let out = send(&["-c", &cfg, "-d", &r, "-b", "0", "--reship", &l]);
    assert_status(&out, 0, "--reship of the live directory");
    let err = text(&out.stderr);
    assert!(!marked(&live), "a directory Tstat writes is never marked");
    assert!(
        err.contains("not shipped now and not marked: Tstat is still writing it"),
        "{err}"
    );
    let record: Value =
        serde_json::from_slice(&fs::read(live.join(".progress")).expect("a record")).expect("json");
    let generation = record["generation"].as_u64().expect("generation");
    assert!(generation > 0, "{record}");

    // Tstat writes the rest of the hour, then rotates.
    for (log, rows) in &rest {
        write_lines(&live.join(log), rows, true);
    }
    set_mtimes(&live, common::trees::ago(SETTLED));
    copy_fixture(&format!("synthetic/{DIR0}"), &root.path().join(DIR2), None);
    let out = send(&["-c", &cfg, "-d", &r, "-b", "0"]);
    assert_status(&out, 0, "the run after Tstat finished it");
    assert!(marked(&live));

    let msgs = consume_all(node, &queue);
    let (_, dups) = dedup(&msgs);
    assert_eq!(dups, 0);
    let name = format!(":{DIR1}~{generation}:");
    let got = flatten(
        msgs.iter()
            .filter(|m| m.message_id().contains(&name))
            .map(|m| m.body.as_slice()),
    );
    assert_eq!(
        canon(&got),
        canon(&parsed(&live)),
        "every row of the hour, under the re-ship's ids"
    );
}

#[test]
fn two_reships_of_one_directory_never_share_an_id() {
    let node = shared_node();
    let work = tempfile::tempdir().expect("tempdir");
    // tstat_send, and the same job as a shell pipeline.
    for shell in [false, true] {
        let queue = unique("reship-twice");
        let cfg = node.write_config(work.path(), &queue).display().to_string();
        let root = tree();
        let r = root.path().display().to_string();
        let dir = root.path().join(DIR0);
        let d = dir.display().to_string();
        let run = |args: &[&str]| {
            if shell {
                tstat_send_sh().args(args).run()
            } else {
                send(args)
            }
        };
        let out = run(&["-c", &cfg, "-d", &r, "-b", "0"]);
        assert_status(&out, 0, "first run");
        // Two re-ships in a row (within one second on a quiet machine),
        // the second with another threshold: other bodies.
        for bytes in ["0", "5000"] {
            fs::remove_file(dir.join(".processed")).expect("unmark");
            let out = run(&["-c", &cfg, "-d", &r, "-b", bytes, "--reship", &d]);
            assert_status(&out, 0, "--reship");
            assert!(marked(&dir));
        }
        let msgs = consume_all(node, &queue);
        // Fails on an id that came with two bodies.
        let (_, dups) = dedup(&msgs);
        assert_eq!(dups, 0);
        let generations: BTreeSet<String> = msgs
            .iter()
            .map(|m| m.message_id())
            .filter_map(|id| {
                let (_, rest) = id.split_once(&format!(":{DIR0}~"))?;
                Some(rest.split(':').next()?.to_string())
            })
            .collect();
        assert_eq!(
            generations.len(),
            2,
            "shell {shell}: two generations: {generations:?}"
        );
        let kept = fs::read_to_string(root.path().join(".tstat_send.generation")).expect("kept");
        assert!(
            generations.contains(kept.trim()),
            "{kept} is the last one given"
        );
    }
}

#[test]
fn a_directory_begun_before_tree_ids_resumes_under_its_old_ids() {
    let node = RabbitNode::start();
    let work = tempfile::tempdir().expect("tempdir");
    let queue = unique("upgrade");
    let cfg = node.write_config(work.path(), &queue).display().to_string();
    let root = tree();
    let r = root.path().display().to_string();
    let dir = root.path().join(DIR0);
    let progress = dir.join(".progress");
    // A run held up by a blocked broker writes the record of the ids it is
    // about to send, then dies.
    node.set_memory_alarm();
    let mut first = program("tstat_send")
        .args(["-c", &cfg, "-d", &r, "-b", "0", "-S", "s"])
        .spawn();
    wait_until("the record is written", RUN_DEADLINE, || progress.exists());
    first.kill();
    node.clear_memory_alarm();
    // The record as the version before tree ids wrote it: `SENSOR:DIR`.
    let mut rec: Value = serde_json::from_slice(&fs::read(&progress).expect("read")).expect("json");
    let prefix = rec["settings"]["message_id_prefix"]
        .as_str()
        .expect("prefix")
        .to_string();
    assert_eq!(prefix, format!("s@{}:{DIR0}", tree_tag(root.path())));
    rec["settings"]["message_id_prefix"] = Value::from(format!("s:{DIR0}"));
    fs::write(&progress, serde_json::to_vec_pretty(&rec).expect("json")).expect("write");

    let out = send(&["-c", &cfg, "-d", &r, "-b", "0", "-S", "s"]);
    assert_status(&out, 0, "the run after the upgrade");
    assert!(marked(&dir) && marked(&root.path().join(DIR1)));
    let msgs = consume_all(&node, &queue);
    let (_, dups) = dedup(&msgs);
    assert_eq!(dups, 0);
    let old: Vec<&[u8]> = msgs
        .iter()
        .filter(|m| m.message_id().starts_with(&format!("s:{DIR0}:")))
        .map(|m| m.body.as_slice())
        .collect();
    assert!(!old.is_empty(), "the begun directory keeps its old ids");
    let want = parsed_with(&dir, &["-S", "s"]);
    assert_eq!(canon(&flatten(old)), canon(&want), "all of {DIR0}, once");
    assert!(
        msgs.iter().any(|m| m
            .message_id()
            .starts_with(&format!("s@{}:{DIR1}:", tree_tag(root.path())))),
        "a directory begun now takes the tree's ids"
    );
}
