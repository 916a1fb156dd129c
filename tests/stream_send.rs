//! `tstat_send` into a RabbitMQ stream (design §14.3-14.4) against private
//! nodes with the stream plugin: every flow exactly once with no repeat at
//! all — after a second run, an older directory shipped after newer ones,
//! a deliberate re-ship, and a seeded torture of kill -9 of the tool and of
//! the broker at observed points. The stream is read back from `first` and
//! its flows compared with `tstat-parse` as a multiset.

mod common;
#[path = "support/gentree.rs"]
mod gentree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::rabbit::{NodeOptions, RabbitNode, unique};
use common::run::{RUN_DEADLINE, Running, assert_status, program, text, wait_until};
use common::streams::{
    compare, content, flow_counts, load, save_registrations, stored, write_stream_config,
};

fn node() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| {
        RabbitNode::start_with(NodeOptions {
            stream: true,
            ..NodeOptions::default()
        })
    })
}

/// A generated tree of `dirs` directories; their paths, oldest first.
fn generated(root: &Path, dirs: u32, rows: u64, seed: u64) -> Vec<PathBuf> {
    gentree::generate_tree(
        root,
        &gentree::GenConfig {
            dirs,
            tcp_rows: rows * 3 / 5,
            udp_rows: rows * 2 / 5,
            seed,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate tree")
    .dirs
}

/// The flows `tstat-parse -S s -b 0` gives for `dirs`, as a multiset.
fn expected<'a>(dirs: impl IntoIterator<Item = &'a PathBuf>) -> BTreeMap<String, usize> {
    let mut all = BTreeMap::new();
    for d in dirs {
        let out = program("tstat-parse")
            .args(["-S", "s", "-b", "0"])
            .arg(d)
            .run();
        assert_status(&out, 0, "tstat-parse");
        let lines = text(&out.stdout);
        let arrays: Vec<Vec<u8>> = lines
            .lines()
            .map(|l| format!("[{l}]").into_bytes())
            .collect();
        for (f, n) in flow_counts(arrays.iter().map(Vec::as_slice)) {
            *all.entry(f).or_insert(0) += n;
        }
    }
    all
}

fn args<'a>(root: &'a str, cfg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["-d", root, "-c", cfg, "--all", "-b", "0", "-S", "s"];
    a.extend_from_slice(extra);
    a
}

fn send(args: &[&str]) -> std::process::Output {
    program("tstat_send").args(args).run()
}

/// The stream's flows against `want`: every one once, none more.
#[track_caller]
fn assert_exactly_once(node: &RabbitNode, stream: &str, want: &BTreeMap<String, usize>) -> usize {
    let msgs = content(&node.url(), stream);
    let mut ids = std::collections::HashSet::new();
    for (id, _) in &msgs {
        assert!(
            ids.insert(id.clone()),
            "message id {id} twice in the stream"
        );
    }
    let got = flow_counts(msgs.iter().map(|(_, b)| b.as_slice()));
    let (missing, repeated) = compare(&got, want);
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "flows missing, repeated ({} messages read)",
        msgs.len()
    );
    msgs.len()
}

#[test]
fn a_tree_shipped_to_a_stream_arrives_once_and_a_second_run_sends_nothing() {
    let node = node();
    let stream = unique("ship");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = write_stream_config(node, work.path(), &stream);
    let dirs = generated(root.path(), 3, 900, 11);
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());
    let out = send(&args(r, c, &["--chunk-size", "7"]));
    assert_status(&out, 0, "first run");
    for d in &dirs {
        assert!(d.join(".processed").exists(), "{} marked", d.display());
    }
    let out = send(&args(r, c, &["-v"]));
    assert_status(&out, 0, "second run");
    assert!(
        text(&out.stderr).contains("0 messages confirmed"),
        "{}",
        text(&out.stderr)
    );
    let want = expected(&dirs);
    let n = assert_exactly_once(node, &stream, &want);
    // Ids name producers of this sensor and tree, by log kind.
    let msgs = content(&node.url(), &stream);
    assert!(
        msgs.iter()
            .all(|(id, _)| id.starts_with("s@") && (id.contains("/tcp:") || id.contains("/udp:"))),
        "{:?}",
        msgs.first()
    );
    assert_eq!(msgs.len(), n);

    // A deliberate re-ship arrives again, whole, under a new epoch: the
    // broker's deduplication drops none of it.
    std::fs::remove_file(dirs[0].join(".processed")).expect("unmark");
    let d0 = dirs[0].to_str().unwrap();
    let out = send(&args(r, c, &["--reship", d0]));
    assert_status(&out, 0, "re-ship");
    let err = text(&out.stderr);
    assert!(err.contains("new producer epoch 1"), "{err}");
    let mut twice = want.clone();
    for (f, n) in expected([&dirs[0]]) {
        *twice.get_mut(&f).expect("a flow of the tree") += n;
    }
    assert_exactly_once(node, &stream, &twice);
}

#[test]
fn an_older_directory_shipped_after_newer_ones_arrives_whole() {
    let node = node();
    let stream = unique("late");
    let root = tempfile::tempdir().expect("tempdir");
    let aside = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = write_stream_config(node, work.path(), &stream);
    let dirs = generated(root.path(), 3, 600, 12);
    // The oldest directory appears only after the newer ones were shipped
    // (restored from a backup, a late copy).
    let held = aside.path().join(dirs[0].file_name().unwrap());
    std::fs::rename(&dirs[0], &held).expect("move aside");
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());
    assert_status(&send(&args(r, c, &["-q"])), 0, "newer directories");
    std::fs::rename(&held, &dirs[0]).expect("move back");
    let metrics = work.path().join("tstat_send.prom");
    let m = metrics.to_str().unwrap();
    let out = send(&args(r, c, &["--metrics-file", m]));
    assert_status(&out, 0, "the older directory");
    let err = text(&out.stderr);
    assert!(err.contains("under the new producer epoch 1"), "{err}");
    let prom = std::fs::read_to_string(&metrics).expect("metrics file");
    for line in [
        "tstat_send_stream_new_epochs_total 1",
        "tstat_send_stream_resumes_total 0",
        "tstat_send_directories_total 1",
    ] {
        assert!(prom.lines().any(|l| l == line), "{line} in:\n{prom}");
    }
    assert_exactly_once(node, &stream, &expected(&dirs));
}

#[test]
fn check_looks_at_the_stream_without_creating_it() {
    let node = node();
    let stream = unique("check");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = write_stream_config(node, work.path(), &stream);
    generated(root.path(), 2, 60, 13);
    let (r, c) = (root.path().to_str().unwrap(), cfg.to_str().unwrap());
    let check = || {
        let out = program("tstat_send")
            .args(["--check", "-d", r, "-c", c, "-S", "s"])
            .run();
        assert_status(&out, 0, "--check");
        text(&out.stdout)
    };
    for _ in 0..2 {
        // Looking twice: the first look created nothing.
        let out = check();
        assert!(
            out.contains(&format!(
                "✓ stream: '{stream}' does not exist yet; the first run creates it"
            )),
            "{out}"
        );
        assert!(out.contains("(stream protocol) as 'guest'"), "{out}");
    }
    assert_status(&send(&args(r, c, &["-q"])), 0, "shipping");
    let out = check();
    assert!(
        out.contains(&format!("✓ stream: '{stream}' exists")),
        "{out}"
    );
    let tag = tstat_transport::identity::tree_tag(root.path());
    assert!(
        out.contains(&format!(
            "✓ producers: this tree ships as s@{tag}/tcp and s@{tag}/udp (2 producer names in use"
        )),
        "{out}"
    );
}

#[test]
fn tstat_rabbit_leaves_streams_to_tstat_send() {
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = common::rabbit::write_private(
        &work.path().join("stream.ini"),
        &common::streams::stream_config_text("127.0.0.1", 5672, 5552, "flows", ""),
    );
    let out = program("tstat-rabbit")
        .args(["-c", cfg.to_str().unwrap()])
        .stdin(b"[]\n".to_vec())
        .run();
    assert_status(&out, 2, "tstat-rabbit with a stream config");
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "tstat-rabbit: error: {}: transport = stream: tstat-rabbit publishes to queues \
             only; ship to a stream with tstat_send (README, Streams)",
            cfg.display()
        )
    );
}

#[test]
fn crash_torture_into_a_stream_loses_nothing_and_repeats_nothing() {
    let seed = common::run::seed("stream crash torture", "STREAM_TORTURE_SEED");
    let mut rng = gentree::Rng::new(seed);
    let mut node = RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    });
    let stream = unique("torture");
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let cfg_path = write_stream_config(&node, work.path(), &stream);
    let cfg = load(&cfg_path);
    let dirs = generated(root.path(), 6, 8_000, seed % 1000);
    let want = expected(&dirs);
    let (r, c) = (root.path().to_str().unwrap(), cfg_path.to_str().unwrap());
    let run_args = args(
        r,
        c,
        &[
            "-q",
            "--chunk-size",
            "5",
            "--window",
            "16",
            "--retries",
            "2",
            "--connect-timeout",
            "5",
            "--confirm-timeout",
            "10",
        ],
    );
    let start = || -> Running { program("tstat_send").args(&run_args).spawn() };
    // What the broker holds for the tree's producers: grows as it stores.
    let progress = || stored(&cfg, root.path(), "s", 0);
    // Six kills of the tool and two of the broker, in a seeded order.
    let mut events: Vec<bool> = [vec![true; 6], vec![false; 2]].concat();
    for i in (1..events.len()).rev() {
        events.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut journal: Vec<String> = Vec::new();
    let mut running: Option<Running> = None;
    let mut interruptions = 0;
    let mut next = 0;
    let mut last = [0u64; 2];
    while next < events.len() {
        let mut run = running.take().unwrap_or_else(start);
        // A seeded number of further messages stored first (observed).
        let steps = 1 + rng.below(4);
        let mut seen = 0;
        let mut finished = false;
        wait_until("progress before the next fault", RUN_DEADLINE, || {
            finished = !run.running();
            if let Some(now) = progress()
                && now != last
            {
                last = now;
                seen += 1;
            }
            finished || seen >= steps
        });
        if finished {
            let ended = run.wait(RUN_DEADLINE);
            let err = text(&ended.stderr);
            journal.push(format!("run ended {:?}: {err}", ended.status));
            if ended.status.success() {
                // It shipped the rest of the tree between two looks.
                break;
            }
            assert_eq!(
                ended.status.code(),
                Some(1),
                "{err}\n{}",
                journal.join("\n")
            );
            continue;
        }
        interruptions += 1;
        if events[next] {
            run.kill();
            journal.push(format!("SIGKILL of tstat_send with {last:?} stored"));
        } else {
            save_registrations(&node);
            node.kill9_and_restart();
            journal.push(format!("SIGKILL of the broker with {last:?} stored"));
            running = Some(run);
        }
        next += 1;
    }
    if let Some(run) = running.take() {
        let ended = run.wait(RUN_DEADLINE);
        journal.push(format!(
            "run ended {:?}: {}",
            ended.status,
            text(&ended.stderr)
        ));
    }
    let mut done = false;
    for _ in 0..3 {
        let out = program("tstat_send").args(&run_args).run();
        journal.push(format!("final run {:?}: {}", out.status, text(&out.stderr)));
        if out.status.success() {
            done = true;
            break;
        }
    }
    assert!(
        done,
        "a clean run completes the tree:\n{}",
        journal.join("\n")
    );
    for d in &dirs {
        assert!(d.join(".processed").exists(), "{} marked", d.display());
    }
    assert!(
        interruptions >= 4,
        "only {interruptions} faults landed before the tree was shipped:\n{}",
        journal.join("\n")
    );
    let msgs = content(&node.url(), &stream);
    let got = flow_counts(msgs.iter().map(|(_, b)| b.as_slice()));
    let (missing, repeated) = compare(&got, &want);
    let flows: usize = want.values().sum();
    eprintln!(
        "stream crash torture: {interruptions} interruptions, {} messages, {flows} flows, \
         {missing} missing, {repeated} repeated",
        msgs.len()
    );
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "flows missing and repeated; seed {seed}; what happened:\n{}",
        journal.join("\n")
    );
}
