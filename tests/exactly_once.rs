//! The exactly-once promise of design §8.7, run against private broker nodes
//! with the real binaries: a truncated log completed later, flag changes
//! between an interrupted run and the next (refused, then re-shipped on
//! purpose), two runs at once, a tree the service user cannot write, a full
//! disk, and a crash torture (tstat_send and the broker killed with SIGKILL
//! at pseudo-random moments) — after which every flow arrived, no id carries
//! two bodies and duplicates stay within a window per interruption.

mod common;
#[path = "support/gentree.rs"]
mod gentree;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::docs;
use common::flows::{consume_all, dedup, flatten, published_so_far, queue_len};
use common::rabbit::{
    RabbitNode, Received, confirmed_count, shared_node, unique, unreachable_config,
};
use common::run::{
    RUN_DEADLINE, Running, assert_status, bin, command, program, text, tstat_send_sh, wait_until,
};
use common::trees::copy_fixture;
use serde_json::Value;

/// `tstat_send args`, run to completion.
fn send(args: &[&str]) -> Output {
    program("tstat_send").args(args).run()
}

/// `tstat_send args`, started.
fn start(args: &[&str]) -> Running {
    program("tstat_send").args(args).spawn()
}
/// The real Tstat 3.3 directory of the fixtures.
const REAL: &str = "real-3.3/2024_06_08_09_10.out";
const DIR: &str = "2024_06_08_09_10.out";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// The flows `tstat-parse -S s` gives for `dir` (`-b 0` unless `extra`
/// sets the threshold).
fn parsed(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let d = dir.to_str().expect("utf-8");
    let mut args = vec!["-S", "s"];
    if !extra.contains(&"-b") {
        args.extend(["-b", "0"]);
    }
    args.extend_from_slice(extra);
    args.push(d);
    let out = program("tstat-parse").args(&args).run();
    assert_status(&out, 0, "tstat-parse");
    docs::ndjson(&text(&out.stdout))
}

#[track_caller]
fn assert_flows(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: flow count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(docs::same(g, w), "{what}: flow {i}\n got: {g}\nwant: {w}");
    }
}

/// The flows of every distinct id whose directory part is `dir`, in index
/// order; fails on an id with two bodies.
fn flows_of(msgs: &[Received], dir: &str) -> Vec<Value> {
    let (unique_msgs, _) = dedup(msgs);
    flatten(
        unique_msgs
            .iter()
            .filter(|(d, _, _)| d == dir)
            .map(|(_, _, b)| b.as_slice()),
    )
}

fn is_marked(dir: &Path) -> bool {
    dir.join(".processed").exists()
}

/// ROOT/DIR with the real 3.3 logs gzipped; the TCP log cut at 60 % of its
/// compressed bytes. Returns the complete TCP `.gz` bytes.
fn truncated_tree(root: &Path) -> Vec<u8> {
    let src = docs::fixtures().join(REAL);
    let dir = root.join(DIR);
    fs::create_dir_all(&dir).expect("mkdir");
    let tcp = gzip(&fs::read(src.join("log_tcp_complete")).expect("read"));
    let udp = gzip(&fs::read(src.join("log_udp_complete")).expect("read"));
    fs::write(dir.join("log_tcp_complete.gz"), &tcp[..tcp.len() * 6 / 10]).expect("write");
    fs::write(dir.join("log_udp_complete.gz"), udp).expect("write");
    tcp
}

/// Flags that shape the stream in the truncated-log tests.
const FLAGS: [&str; 8] = ["--all", "-b", "0", "-S", "s", "--chunk-size", "10", "-q"];

/// Runs the first, failing run on the truncated tree and checks it left a
/// partial record and no marker.
fn interrupted_by_truncation(root: &Path, cfg: &Path) -> u64 {
    let mut args = vec![
        "-d",
        root.to_str().expect("utf-8"),
        "-c",
        cfg.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(&FLAGS);
    let out = send(&args);
    assert_status(&out, 1, "run on a truncated .gz");
    let err = text(&out.stderr);
    assert!(err.contains("log_tcp_complete.gz"), "names the log:\n{err}");
    assert!(err.contains("not marked"), "{err}");
    let dir = root.join(DIR);
    assert!(!is_marked(&dir));
    let confirmed = confirmed_count(&dir.join(".progress"));
    assert!(confirmed > 0, "full arrays before the cut are confirmed");
    confirmed
}

#[test]
fn truncated_gz_completed_later_delivers_every_flow_exactly_once() {
    let node = shared_node();
    let queue = unique("trunc");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let full = truncated_tree(root.path());
    let want = parsed(&docs::fixtures().join(REAL), &[]);

    let confirmed = interrupted_by_truncation(root.path(), &cfg);
    let first = consume_all(node, &queue);
    assert_eq!(
        first.len() as u64,
        confirmed,
        "no partial array after the error"
    );
    let first_flows = flows_of(&first, DIR);
    assert_eq!(first_flows.len() as u64, confirmed * 10, "only full arrays");
    assert_flows(&first_flows, &want[..first_flows.len()], "run 1");

    // Tstat finishes the file (same inode, it only grew).
    fs::write(root.path().join(DIR).join("log_tcp_complete.gz"), full).expect("complete");
    let mut args = vec![
        "-d",
        root.path().to_str().expect("utf-8"),
        "-c",
        cfg.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(&FLAGS);
    let out = send(&args);
    assert_status(&out, 0, "run on the completed .gz");
    let dir = root.path().join(DIR);
    assert!(is_marked(&dir) && !dir.join(".progress").exists());

    let mut all = first;
    all.extend(consume_all(node, &queue));
    assert_flows(
        &flows_of(&all, DIR),
        &want,
        "every flow once (dedupe by id)",
    );
}

#[test]
fn flag_changes_are_refused_by_name_and_reship_delivers_every_flow() {
    let node = shared_node();
    let queue = unique("flags");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let full = truncated_tree(root.path());
    interrupted_by_truncation(root.path(), &cfg);
    let dir = root.path().join(DIR);
    fs::write(dir.join("log_tcp_complete.gz"), full).expect("complete");
    let record = fs::read(dir.join(".progress")).expect("record");

    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let base = ["-d", r, "-c", c, "--all", "-q"];
    let variants: [(&[&str], &str); 5] = [
        (
            &["-b", "1000", "-S", "s", "--chunk-size", "10"],
            "threshold",
        ),
        (&["-b", "0", "-S", "s", "--chunk-size", "11"], "chunk_size"),
        (&["-b", "0", "-S", "t", "--chunk-size", "10"], "sensor"),
        (
            &["-b", "0", "-S", "s", "--chunk-size", "10", "-I", "7"],
            "instance",
        ),
        (
            &[
                "-b",
                "0",
                "-S",
                "s",
                "--chunk-size",
                "10",
                "--legacy-udp-duration",
            ],
            "legacy_udp_duration",
        ),
    ];
    for (flags, setting) in variants {
        let out = send(&[&base[..], flags].concat());
        assert_status(&out, 1, setting);
        let err = text(&out.stderr);
        assert!(
            err.contains("settings changed since the interrupted run")
                && err.contains(&format!("{setting} was")),
            "{setting} named:\n{err}"
        );
        assert!(err.contains("--reship"), "says how to re-ship:\n{err}");
        assert!(!is_marked(&dir), "{setting}: not marked");
        assert_eq!(
            fs::read(dir.join(".progress")).expect("record"),
            record,
            "{setting}: record untouched"
        );
    }
    assert_eq!(
        queue_len(node, &queue) as u64,
        confirmed_count(&dir.join(".progress"))
    );
    // The refusal is counted for the alert on it.
    let prom = work.path().join("tstat.prom");
    let p = prom.to_str().expect("utf-8");
    let out = send(&[&base[..], variants[0].0, &["--metrics-file", p]].concat());
    assert_status(&out, 1, "refused with metrics");
    let metrics = fs::read_to_string(&prom).expect("metrics file");
    assert!(
        metrics.contains("\ntstat_send_directories_refused_total 1\n"),
        "{metrics}"
    );

    // Deliberately, with new settings: new ids, every flow.
    let d = dir.to_str().expect("utf-8");
    let flags = ["-b", "1000", "-S", "s", "--chunk-size", "7"];
    let out = send(&[&base[..], &flags, &["--reship", d]].concat());
    assert_status(&out, 0, "--reship");
    assert!(is_marked(&dir) && !dir.join(".progress").exists());
    let msgs = consume_all(node, &queue);
    let generations: Vec<String> = msgs
        .iter()
        .map(|m| m.message_id())
        .filter(|id| id.contains('~'))
        .collect();
    assert!(!generations.is_empty(), "re-shipped under new ids");
    let reshipped: Vec<Received> = msgs
        .into_iter()
        .filter(|m| m.message_id().contains('~'))
        .collect();
    let name = common::flows::split_id(&generations[0]).0;
    let want = parsed(&docs::fixtures().join(REAL), &["-b", "1000"]);
    assert_flows(&flows_of(&reshipped, &name), &want, "re-shipped flows");
}

/// `-d ROOT -c CONFIG --all -b 0 -S s -q`, then `extra`.
fn job<'a>(root: &'a str, cfg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["-d", root, "-c", cfg, "--all", "-b", "0", "-S", "s", "-q"];
    a.extend_from_slice(extra);
    a
}

/// A generated tree of `dirs` directories and the flows each must deliver.
fn generated(root: &Path, dirs: u32, rows: u64, seed: u64) -> Vec<(String, Vec<Value>)> {
    let sum = gentree::generate_tree(
        root,
        &gentree::GenConfig {
            dirs,
            tcp_rows: rows * 3 / 5,
            udp_rows: rows * 2 / 5,
            seed,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate tree");
    sum.dirs
        .iter()
        .map(|d| {
            let name = d.file_name().and_then(|n| n.to_str()).expect("name");
            (name.to_string(), parsed(d, &[]))
        })
        .collect()
}

#[test]
fn two_runs_at_once_only_one_ships_and_names_the_other() {
    let node = RabbitNode::start();
    let queue = unique("lock");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let want = generated(root.path(), 2, 2_000, 5);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let args = job(r, c, &["--confirm-timeout", "120"]);
    // The first run is held up by a blocked broker, so it is surely still
    // running when the second starts.
    node.set_memory_alarm();
    let first = start(&args);
    let lock = root.path().join(".tstat_send.lock");
    let pid = first.id();
    wait_until(
        "the first run holds the lock",
        Duration::from_secs(60),
        || fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {pid} "))),
    );
    let second = send(&args);
    assert_status(&second, 75, "second tstat_send");
    let err = text(&second.stderr);
    assert!(
        err.contains(&format!("pid {pid} (tstat_send) since")) && err.contains("nothing done"),
        "{err}"
    );
    let third = tstat_send_sh().args(args).run();
    assert_status(&third, 75, "tstat_send.sh while tstat_send runs");
    node.clear_memory_alarm();
    let ended = first.wait(RUN_DEADLINE);
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(0), "{err}");

    let msgs = consume_all(&node, &queue);
    let (unique_msgs, _) = dedup(&msgs);
    assert_eq!(msgs.len(), unique_msgs.len(), "no id twice");
    for (name, flows) in &want {
        assert_flows(&flows_of(&msgs, name), flows, name);
    }
}

/// Runs `tstat_send args` as the unprivileged user `nobody`.
fn as_nobody(args: &[&str]) -> Output {
    command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("tstat_send"))
        .args(args)
        .run()
}

#[test]
fn a_tree_the_user_cannot_write_gets_nothing_published() {
    let node = shared_node();
    let queue = unique("ro");
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = node.write_config(tmp.path(), &queue);
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).expect("chmod");
    let root = tmp.path().join("root");
    generated(&root, 1, 500, 9);
    let mode =
        |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).expect("chmod");
    let (r, c) = (root.to_str().expect("utf-8"), cfg.to_str().expect("utf-8"));
    let args = ["-d", r, "-c", c, "--all", "-b", "0", "-q"];

    // The root itself: no lock, nothing done.
    mode(&root, 0o755);
    let out = as_nobody(&args);
    assert_status(&out, 1, "read-only root");
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot lock") && err.contains("Permission denied"),
        "{err}"
    );

    // The root writable, the directory not: refused before publishing.
    mode(&root, 0o777);
    let out = as_nobody(&args);
    assert_status(&out, 1, "read-only directory");
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot write the progress record") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("not marked"), "{err}");
    assert_eq!(published(node, &queue), 0, "nothing published");
}

/// Messages in `queue`, 0 when it was never declared.
fn published(node: &RabbitNode, queue: &str) -> u64 {
    node.list_queues(&["name", "messages"])
        .into_iter()
        .find(|row| row.first().map(String::as_str) == Some(queue))
        .and_then(|row| row.get(1).and_then(|n| n.parse::<u64>().ok()))
        .unwrap_or(0)
}

/// Bytes free on the filesystem of `p`.
fn free_bytes(p: &Path) -> u64 {
    let out = command("df").args(["--output=avail", "-B1"]).arg(p).run();
    text(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// A small tmpfs mounted on a temp dir, unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let d = tempfile::tempdir().expect("tempdir");
        let st = command("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(d.path())
            .run()
            .status;
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the tests run as root in CI)"
        );
        SmallFs(d)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        command("umount").arg(self.0.path()).run();
    }
}

#[test]
fn a_full_disk_marks_nothing_wrongly_and_the_next_run_loses_nothing() {
    let node = shared_node();
    let queue = unique("full");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let small = SmallFs::mount("4m");
    let root = small.0.path().join("root");
    let want = generated(&root, 1, 1_500, 3);
    let (r, c) = (root.to_str().expect("utf-8"), cfg.to_str().expect("utf-8"));
    let args = job(r, c, &["--chunk-size", "5", "--window", "4"]);
    let filler = small.0.path().join("filler");
    let fill_leaving = |keep: u64| {
        let _ = fs::remove_file(&filler);
        let n = free_bytes(small.0.path()).saturating_sub(keep);
        fs::write(&filler, vec![0u8; n as usize]).expect("filler");
    };
    let dir = root.join(&want[0].0);

    // No room at all: nothing can be recorded, so nothing is published.
    fill_leaving(0);
    let out = send(&args);
    assert_status(&out, 1, "disk full");
    let err = text(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!is_marked(&dir));
    assert_eq!(published(node, &queue), 0, "nothing published");

    // Room for one record: the run stops when it can no longer record.
    fill_leaving(4096);
    let out = send(&args);
    assert_status(&out, 1, "disk full mid-run");
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot write the progress record") && err.contains("No space left"),
        "{err}"
    );
    assert!(!is_marked(&dir));

    // Room again: the next run completes with nothing lost.
    fs::remove_file(&filler).expect("rm filler");
    let out = send(&args);
    assert_status(&out, 0, "with room");
    assert!(is_marked(&dir));
    let msgs = consume_all(node, &queue);
    assert_flows(&flows_of(&msgs, &want[0].0), &want[0].1, "every flow");
}

/// Sorted ids as runs: `0-146, 300-599`.
fn ranges(ids: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut start: Option<(u64, u64)> = None;
    for &i in ids {
        start = match start {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                out.push(format!("{a}-{b}"));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = start {
        out.push(format!("{a}-{b}"));
    }
    out.join(", ")
}

/// A small deterministic generator (SplitMix64) for the torture's moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn crash_torture_kill9_of_the_tool_and_the_broker_loses_and_repeats_nothing() {
    let seed = common::run::seed("crash torture", "TORTURE_SEED");
    let mut rng = Rng(seed);
    let mut node = RabbitNode::start();
    let queue = unique("torture");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let want = generated(root.path(), 4, 6_000, seed % 1000);
    let total_flows: usize = want.iter().map(|(_, f)| f.len()).sum();
    let window = 32u64;
    let w = window.to_string();
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let args = job(
        r,
        c,
        &[
            "--chunk-size",
            "5",
            "--window",
            &w,
            "--retries",
            "2",
            "--connect-timeout",
            "5",
            "--confirm-timeout",
            "10",
        ],
    );
    // Small messages: many of them (9,600), so a run cannot finish the tree
    // between two looks at the queue however fast the machine is.
    let expected_msgs = (total_flows as u64).div_ceil(5);

    // Ten kills of the tool and two of the broker, in a seeded order.
    let mut events: Vec<bool> = [vec![true; 10], vec![false; 2]].concat();
    for i in (1..events.len()).rev() {
        events.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut interruptions = 0u64;
    let mut running = None;
    let mut next = 0;
    // What happened, shown if a flow is missing.
    let mut journal: Vec<String> = Vec::new();
    while next < events.len() {
        let mut run1 = running.take().unwrap_or_else(|| start(&args));
        // Let it make some progress (observed in the queue) first.
        let target = published_so_far(&node, &queue) as u64 + 1 + rng.below(expected_msgs / 25);
        let mut finished = false;
        wait_until("progress before the next fault", RUN_DEADLINE, || {
            finished = !run1.running();
            finished || published_so_far(&node, &queue) as u64 >= target
        });
        if finished {
            // Gave up after the broker went away: start it again.
            let ended = run1.wait(RUN_DEADLINE);
            let (st, err) = (ended.status, text(&ended.stderr));
            assert_eq!(
                st.code(),
                Some(1),
                "ended before all faults landed: {err}\nwhat happened:\n{}",
                journal.join("\n")
            );
            journal.push(format!("run ended {st:?}: {err}"));
            continue;
        }
        interruptions += 1;
        let depth = published_so_far(&node, &queue);
        if events[next] {
            run1.kill();
            journal.push(format!("SIGKILL of tstat_send at queue depth {depth}"));
        } else {
            node.kill9_and_restart();
            journal.push(format!(
                "SIGKILL of the broker at queue depth {depth}; {} after its restart",
                published_so_far(&node, &queue)
            ));
            running = Some(run1);
        }
        next += 1;
    }
    if let Some(r) = running.take() {
        let ended = r.wait(RUN_DEADLINE);
        let (st, err) = (ended.status, text(&ended.stderr));
        assert!(matches!(st.code(), Some(0 | 1)), "{st:?}: {err}");
        journal.push(format!("run ended {st:?}: {err}"));
    }
    assert_eq!(interruptions, 12);
    // Then to completion.
    let mut done = false;
    for _ in 0..3 {
        let out = send(&args);
        journal.push(format!("final run {:?}: {}", out.status, text(&out.stderr)));
        if out.status.code() == Some(0) {
            done = true;
            break;
        }
    }
    assert!(done, "a clean run completes the tree");

    let msgs = consume_all(&node, &queue);
    let (unique_msgs, _) = dedup(&msgs);
    let dups = (msgs.len() - unique_msgs.len()) as u64;
    for (name, flows) in &want {
        assert!(is_marked(&root.path().join(name)), "{name} marked");
        let got = flows_of(&msgs, name);
        if got.len() != flows.len() {
            let ids: Vec<u64> = unique_msgs
                .iter()
                .filter(|(d, _, _)| d == name)
                .map(|(_, i, _)| *i)
                .collect();
            panic!(
                "{name}: {} of {} flows; ids present: {}; seed {seed}; what happened:\n{}",
                got.len(),
                flows.len(),
                ranges(&ids),
                journal.join("\n")
            );
        }
        assert_flows(&got, flows, name);
    }
    eprintln!(
        "crash torture: {interruptions} interruptions, {} messages ({} distinct), \
         {dups} duplicates, {total_flows} flows checked",
        msgs.len(),
        unique_msgs.len()
    );
    assert!(
        dups <= window * interruptions,
        "{dups} duplicates > window {window} × {interruptions} interruptions"
    );
}

// ---------------------------------------------------------------------------
// Ids unique per tree, and one directory's problem never holds back others

/// ROOT/eth0/DIR0 and ROOT/eth1/DIR0 with different logs (a per-interface
/// layout): ids carry the path relative to ROOT, so none collides.
#[test]
fn same_directory_name_in_two_sub_trees_gets_distinct_ids() {
    let node = shared_node();
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let name = "2026_03_01_00_00.out";
    for (sub, from) in [
        ("eth0", "2026_03_01_00_00.out"),
        ("eth1", "2026_03_01_01_00.out"),
    ] {
        copy_fixture(
            &format!("synthetic/{from}"),
            &root.path().join(sub).join(name),
            None,
        );
    }
    let r = root.path().to_str().expect("utf-8");
    let tag = tstat_transport::identity::tree_tag(root.path());
    for shell in [false, true] {
        let queue = unique("subtrees");
        let cfg = node.write_config(work.path(), &queue);
        for sub in ["eth0", "eth1"] {
            let _ = fs::remove_file(root.path().join(sub).join(name).join(".processed"));
        }
        let args = job(r, cfg.to_str().expect("utf-8"), &[]);
        let out = if shell {
            tstat_send_sh().args(args).run()
        } else {
            send(&args)
        };
        assert_status(&out, 0, if shell { "tstat_send.sh" } else { "tstat_send" });
        let msgs = consume_all(node, &queue);
        for sub in ["eth0", "eth1"] {
            let dir = root.path().join(sub).join(name);
            let id_dir = format!("{sub}/{name}");
            assert!(
                msgs.iter()
                    .any(|m| m.message_id() == format!("s@{tag}:{id_dir}:0")),
                "ids name {id_dir}"
            );
            assert_flows(&flows_of(&msgs, &id_dir), &parsed(&dir, &[]), &id_dir);
        }
    }
}

#[test]
fn a_corrupt_record_or_a_too_long_name_holds_back_only_its_directory() {
    let node = shared_node();
    let queue = unique("corrupt");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let want = generated(root.path(), 3, 300, 21);
    let first = root.path().join(&want[0].0);
    fs::write(first.join(".progress"), "").expect("empty record (power loss)");
    // A name that leaves no room for the message id (ext4 allows 255 bytes).
    let long = root.path().join(format!("{}.out", "x".repeat(246)));
    fs::create_dir(&long).expect("mkdir");
    fs::copy(
        root.path().join(&want[1].0).join("log_tcp_complete"),
        long.join("log_tcp_complete"),
    )
    .expect("copy");
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let out = send(&["-d", r, "-c", c, "--all", "-b", "0", "-S", "s", "-q"]);
    assert_status(&out, 1, "two directories held back");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: not marked: the progress record cannot be used: the file is empty",
            first.display()
        )),
        "{err}"
    );
    assert!(err.contains("ids must fit in 255 bytes"), "{err}");
    assert!(!is_marked(&first) && !is_marked(&long));
    let msgs = consume_all(node, &queue);
    for (name, flows) in &want[1..] {
        assert!(is_marked(&root.path().join(name)), "{name} shipped");
        assert_flows(&flows_of(&msgs, name), flows, name);
    }
    assert!(flows_of(&msgs, &want[0].0).is_empty());

    // A sensor id that leaves no room is a usage error.
    let sensor = "s".repeat(260);
    let out = send(&["-d", r, "-c", c, "--all", "-S", &sensor]);
    assert_status(&out, 2, "long sensor");
    assert!(
        text(&out.stderr).contains("-S/--sensor"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_metrics_file_problem_is_said_before_the_broker_is_tried() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    generated(root.path(), 1, 50, 2);
    let (cfg, _) = unreachable_config(work.path());
    let missing = work.path().join("missing-dir");
    let metrics = missing.join("tstat.prom");
    let out = send(&[
        "-d",
        root.path().to_str().expect("utf-8"),
        "-c",
        cfg.to_str().expect("utf-8"),
        "--all",
        "-b",
        "0",
        "--metrics-file",
        metrics.to_str().expect("utf-8"),
        "--connect-timeout",
        "2",
    ]);
    // A usage error: said first, before any connection or directory.
    assert_status(&out, 2, "a metrics file in a missing directory");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot write in {}", missing.display())),
        "the metrics problem:\n{err}"
    );
    assert!(
        !err.contains("cannot connect"),
        "the broker is not tried:\n{err}"
    );
    for d in fs::read_dir(root.path()).expect("read root").flatten() {
        for f in [".processed", ".progress"] {
            assert!(
                !d.path().join(f).exists(),
                "no {f} in {}",
                d.path().display()
            );
        }
    }
}

/// A log name that is a FIFO holds back its directory (never read, never
/// skipped as absent); the other directory is shipped.
#[test]
fn a_log_that_is_not_a_regular_file_holds_back_its_directory() {
    let node = shared_node();
    let queue = unique("fifo");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let want = generated(root.path(), 2, 200, 17);
    let first = root.path().join(&want[0].0);
    fs::remove_file(first.join("log_udp_complete")).expect("rm");
    let st = command("mkfifo")
        .arg(first.join("log_udp_complete"))
        .run()
        .status;
    assert!(st.success());
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let out = send(&job(r, c, &[]));
    assert_status(&out, 1, "a FIFO for a log");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}: not marked", first.display())) && err.contains("FIFO"),
        "{err}"
    );
    assert!(!is_marked(&first));
    let msgs = consume_all(node, &queue);
    assert!(flows_of(&msgs, &want[0].0).is_empty(), "nothing of it sent");
    assert_flows(&flows_of(&msgs, &want[1].0), &want[1].1, &want[1].0);
    assert!(is_marked(&root.path().join(&want[1].0)));
}

/// A row whose document can never fit in a message is skipped and counted
/// with its line; the rest of its directory and the next one are shipped.
#[test]
fn a_row_too_large_for_any_message_is_skipped_not_blocking() {
    let node = shared_node();
    let queue = unique("oversized");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let want = generated(root.path(), 2, 200, 13);
    // Line 3 of the first directory's TCP log: 2×360 kB of control bytes in
    // its addresses, 4.3 MB of JSON escapes per document.
    let log = root.path().join(&want[0].0).join("log_tcp_complete");
    let text_log = fs::read(&log).expect("read");
    let mut lines: Vec<Vec<u8>> = text_log
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let mut row: Vec<Vec<u8>> = lines[2].split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
    row[0] = vec![1u8; 360_000];
    row[14] = vec![1u8; 360_000];
    lines[2] = row.join(&b' ');
    fs::write(&log, lines.join(&b'\n')).expect("write");
    let expect_first = parsed(&root.path().join(&want[0].0), &[]);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let args = job(r, c, &["--max-bytes", "1M"]);
    let out = send(&args);
    assert_status(&out, 0, "an oversized row is a malformed row");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: 1 malformed row skipped (first at line 3)",
            log.display()
        )),
        "{err}"
    );
    let msgs = consume_all(node, &queue);
    let first = flows_of(&msgs, &want[0].0);
    assert_eq!(
        first.len(),
        want[0].1.len() - 2,
        "both directions of the row left out"
    );
    assert_eq!(
        expect_first.len(),
        want[0].1.len(),
        "tstat-parse keeps 4.3 MB under 8 MiB"
    );
    assert_flows(&flows_of(&msgs, &want[1].0), &want[1].1, &want[1].0);
    assert!(is_marked(&root.path().join(&want[0].0)) && is_marked(&root.path().join(&want[1].0)));
}

/// `rchar` of a running process: bytes it has read so far.
fn bytes_read(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// With the production threshold a large directory yields no message for a
/// long while; a SIGTERM then must still end the run at once, unmarked.
#[test]
fn sigterm_while_a_large_directory_is_parsed_stops_at_once() {
    let node = shared_node();
    let queue = unique("parse_term");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let sum = gentree::generate_tree(
        root.path(),
        &gentree::GenConfig {
            dirs: 1,
            tcp_rows: 300_000,
            udp_rows: 0,
            seed: 4,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate tree");
    let dir = sum.dirs[0].clone();
    let size = fs::metadata(dir.join("log_tcp_complete"))
        .expect("stat")
        .len();
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    let run1 = start(&["-d", r, "-c", c, "--all"]);
    let pid = run1.id();
    wait_until("parsing under way", RUN_DEADLINE, || {
        bytes_read(pid) > 4 << 20
    });
    let at_signal = bytes_read(pid);
    assert!(at_signal < size / 2, "signalled early in a {size}-byte log");
    run1.term();
    let ended = run1.wait(RUN_DEADLINE);
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(143), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!is_marked(&dir), "a directory cut short is never marked");
    // The summary counts the rows read before the signal.
    let rows: u64 = err
        .lines()
        .find_map(|l| {
            l.split(" rows read")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("summary line");
    assert!(rows > 0 && rows < 300_000, "{rows} rows read:\n{err}");
}

/// The queue deleted mid-run: the run stops (never re-creates it), names the
/// directories marked since it was last seen and rewinds the current one;
/// following its advice delivers every flow to the new queue.
#[test]
fn a_vanished_queue_stops_the_run_and_says_what_to_ship_again() {
    let node = RabbitNode::start();
    let queue = unique("vanish");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let want = generated(root.path(), 3, 6_000, 8);
    let (r, c) = (
        root.path().to_str().expect("utf-8"),
        cfg.to_str().expect("utf-8"),
    );
    // Small messages and window: a directory takes seconds (a durable record
    // write every few messages), time enough for rabbitmqctl to act.
    let args = job(r, c, &["--chunk-size", "5", "--window", "8"]);
    let dirs: Vec<PathBuf> = want.iter().map(|(n, _)| root.path().join(n)).collect();
    let run1 = start(&args);
    wait_until("the first directory marked", RUN_DEADLINE, || {
        is_marked(&dirs[0]) && confirmed_count(&dirs[1].join(".progress")) > 0
    });
    node.ctl_ok(&["delete_queue", &queue]);
    node.close_all_connections();
    let ended = run1.wait(RUN_DEADLINE);
    let (st, err) = (ended.status, text(&ended.stderr));
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("probably lost"), "{err}");
    // Where it stopped depends on how fast the broker acted.
    let marked: Vec<&PathBuf> = dirs.iter().filter(|d| is_marked(d)).collect();
    let current = dirs
        .iter()
        .find(|d| !is_marked(d))
        .expect("a directory was in progress");
    assert!(!marked.is_empty(), "the first directory was marked before");
    assert!(
        err.contains(&format!("{} starts over", current.display())),
        "{err}"
    );
    let listed: Vec<String> = marked.iter().map(|d| d.display().to_string()).collect();
    assert!(
        err.contains(&format!(
            "lost with it: {} (ship each again",
            listed.join(", ")
        )),
        "{err}"
    );
    assert!(
        node.list_queues(&["name"])
            .iter()
            .all(|row| row.first() != Some(&queue)),
        "the queue is not re-created"
    );

    // As told: the marked directories again, then the rest.
    let mut reship = vec!["--reship"];
    for d in &marked {
        fs::remove_file(d.join(".processed")).expect("rm .processed");
        reship.push(d.to_str().expect("utf-8"));
    }
    let out = send(&[&args[..], &reship].concat());
    assert_status(&out, 0, "--reship");
    let out = send(&args);
    assert_status(&out, 0, "the rest");
    let msgs = consume_all(&node, &queue);
    let (unique_msgs, _) = dedup(&msgs);
    for (i, (name, flows)) in want.iter().enumerate() {
        assert!(is_marked(&dirs[i]));
        let ids: std::collections::BTreeSet<String> = unique_msgs
            .iter()
            .filter(|(d, _, _)| d.starts_with(name.as_str()))
            .map(|(d, _, _)| d.clone())
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "{name}: one id family in the new queue: {ids:?}"
        );
        let family = ids.into_iter().next().expect("family");
        assert_flows(&flows_of(&msgs, &family), flows, name);
    }
}

/// The queue lost between two runs (deleted, or gone with a broker crash):
/// the next run creates it and must not resume a directory from a count of
/// messages that went into the old one.
#[test]
fn a_queue_lost_between_runs_rewinds_the_directories_it_held() {
    let node = shared_node();
    let queue = unique("lost_between");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let full = truncated_tree(root.path());
    let confirmed = interrupted_by_truncation(root.path(), &cfg);
    assert!(confirmed > 0);
    node.ctl_ok(&["delete_queue", &queue]);
    let dir = root.path().join(DIR);
    fs::write(dir.join("log_tcp_complete.gz"), full).expect("complete");
    let mut args = vec![
        "-d",
        root.path().to_str().expect("utf-8"),
        "-c",
        cfg.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(&FLAGS);
    let out = send(&args);
    assert_status(&out, 0, "the run after the queue was lost");
    let err = text(&out.stderr);
    assert!(
        err.contains("the queue did not exist and was created by this run"),
        "{err}"
    );
    assert!(is_marked(&dir));
    let want = parsed(&docs::fixtures().join(REAL), &[]);
    assert_flows(
        &flows_of(&consume_all(node, &queue), DIR),
        &want,
        "every flow in the new queue",
    );
}
