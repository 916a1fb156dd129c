//! `tstat_send --follow` (design §12) against private broker nodes, with a
//! writer thread that imitates Tstat: rows appended in bursts, a row split
//! across two writes, rotation to a newer directory, a restart that deletes
//! and creates the live directory again. Every row written arrives (no id
//! with two bodies), in time, and duplicates stay within a window per
//! interruption.

mod common;
#[path = "support/gentree.rs"]
mod gentree;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::flows::{consume_all, dedup, flatten, published_so_far};
use common::rabbit::{NodeOptions, RabbitNode, Received, shared_node, unique};
use common::run::{Running, program, text, wait_until};
use common::streams;
use futures_lite::StreamExt;
use serde_json::Value;

/// How long a test waits for what the tool must do.
const DEADLINE: Duration = Duration::from_secs(180);
/// The flush time the tests use.
const FLUSH: &str = "1";

/// The logs of `dirs` generated Tstat directories (one hour apart).
fn source(dirs: u32, tcp_rows: u64, udp_rows: u64, seed: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let src = tempfile::tempdir().expect("tempdir");
    let sum = gentree::generate_tree(
        src.path(),
        &gentree::GenConfig {
            dirs,
            tcp_rows,
            udp_rows,
            seed,
            ..gentree::GenConfig::default()
        },
    )
    .expect("generate");
    (src, sum.dirs)
}

/// `tstat-parse -b 0 -S s` of a directory or log: the documents it gives.
fn parsed(path: &Path) -> Vec<Value> {
    let out = program("tstat-parse")
        .args(["-b", "0", "-S", "s"])
        .arg(path)
        .run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// Documents as sorted canonical strings (a multiset).
fn bag(docs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    v.sort();
    v
}

/// The directory part of an id `SENSOR:DIR~GEN:INDEX`, without `~GEN`.
fn dir_of(id: &str) -> String {
    let (dir, _) = common::flows::split_id(id);
    dir.split('~').next().unwrap_or_default().to_string()
}

/// Flows received per directory (de-duplicated by id, which fails on an id
/// with two bodies), and the number of ids that came more than once.
fn flows_by_dir(msgs: &[Received]) -> (HashMap<String, Vec<Value>>, usize) {
    let (unique_msgs, dups) = dedup(msgs);
    let mut by_dir: HashMap<String, Vec<Value>> = HashMap::new();
    for (dir, _, body) in &unique_msgs {
        let base = dir.split('~').next().unwrap_or_default().to_string();
        by_dir
            .entry(base)
            .or_default()
            .extend(flatten([body.as_slice()]));
    }
    (by_dir, dups)
}

/// A Tstat imitation: writes the logs of `dirs` into `root` one directory
/// after the other, `burst` rows of each log at a time, every burst ending
/// part-way through a row whose rest comes with the next. After each
/// directory it creates the next (rotation); after the last, a directory
/// with only headers, so the last one is finished too.
struct Writer {
    done: Arc<AtomicBool>,
    /// Bursts written so far.
    bursts: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Burst>>>,
    handle: Option<thread::JoinHandle<()>>,
}

/// When a burst was written, in which directory, and the bytes of each log
/// written by then (complete lines only).
type Burst = (Instant, String, [usize; 2]);

struct WriterPlan {
    burst: usize,
    pause: Duration,
    /// Called between directories (before the next is created).
    between: Option<Box<dyn FnMut(usize) + Send>>,
}

fn logs_of(dir: &Path) -> [Vec<u8>; 2] {
    ["log_tcp_complete", "log_udp_complete"].map(|n| fs::read(dir.join(n)).unwrap_or_default())
}

/// Byte ends of the lines of `data`.
fn line_ends(data: &[u8]) -> Vec<usize> {
    data.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect()
}

impl Writer {
    fn start(root: &Path, dirs: Vec<PathBuf>, mut plan: WriterPlan) -> Writer {
        let done = Arc::new(AtomicBool::new(false));
        let bursts = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        let (d, b, l) = (done.clone(), bursts.clone(), log.clone());
        let handle = thread::spawn(move || {
            for (k, src) in dirs.iter().enumerate() {
                if k > 0
                    && let Some(f) = plan.between.as_mut()
                {
                    f(k);
                }
                let name = src
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                let dst = root.join(&name);
                fs::create_dir_all(&dst).expect("live dir");
                let data = logs_of(src);
                let ends = data.clone().map(|d| line_ends(&d));
                let mut written = [0usize; 2];
                let mut lines = [0usize; 2];
                loop {
                    let mut any = false;
                    for i in 0..2 {
                        if data[i].is_empty() || lines[i] >= ends[i].len() {
                            continue;
                        }
                        any = true;
                        lines[i] = (lines[i] + plan.burst).min(ends[i].len());
                        let complete = ends[i][lines[i] - 1];
                        // Up to half of the next row goes out now.
                        let upto = match ends[i].get(lines[i]) {
                            Some(&next) => complete + (next - complete) / 2,
                            None => complete,
                        };
                        let path = dst.join(["log_tcp_complete", "log_udp_complete"][i]);
                        let mut f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .expect("open log");
                        f.write_all(&data[i][written[i]..upto]).expect("write");
                        written[i] = upto;
                    }
                    if !any {
                        break;
                    }
                    let complete = [0, 1].map(|i| {
                        if lines[i] == 0 {
                            0
                        } else {
                            ends[i][lines[i] - 1]
                        }
                    });
                    l.lock()
                        .expect("log")
                        .push((Instant::now(), name.clone(), complete));
                    b.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(plan.pause);
                }
            }
            // Rotate away from the last directory.
            let last = dirs.last().expect("a directory");
            let name = last.file_name().expect("name").to_string_lossy();
            let next = root.join(format!("9{name}"));
            fs::create_dir_all(&next).expect("final dir");
            let data = logs_of(last);
            let header = &data[0][..line_ends(&data[0])[0]];
            fs::write(next.join("log_tcp_complete"), header).expect("header");
            d.store(true, Ordering::SeqCst);
        });
        Writer {
            done,
            bursts,
            log,
            handle: Some(handle),
        }
    }

    fn finish(&mut self) {
        if let Some(h) = self.handle.take() {
            h.join().expect("writer");
        }
    }
}

/// Counts every flow of every message as it arrives, with the time.
struct Collector {
    got: Arc<Mutex<Vec<(Instant, Received)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Collector {
    fn start(node: &RabbitNode, queue: &str) -> Collector {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, url, queue) = (got.clone(), stop.clone(), node.url(), queue.to_string());
        let handle = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                    .await
                    .expect("connect");
                let ch = conn.create_channel().await.expect("channel");
                ch.queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("declare");
                let mut consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "follow-test".into(),
                        lapin::options::BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await
                    .expect("consume");
                while !s.load(Ordering::SeqCst) {
                    match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                        Ok(Some(Ok(d))) => g.lock().expect("got").push((
                            Instant::now(),
                            Received {
                                body: d.data,
                                properties: d.properties,
                            },
                        )),
                        Ok(_) => break,
                        Err(_) => {}
                    }
                }
            });
        });
        Collector {
            got,
            stop,
            handle: Some(handle),
        }
    }

    fn messages(&self) -> Vec<Received> {
        let g = self.got.lock().expect("got");
        g.iter().map(|(_, r)| r.clone()).collect()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("collector");
        }
    }
}

fn follow(root: &Path, cfg: &Path, extra: &[&str]) -> Running {
    program("tstat_send")
        .args([
            "--follow", "--flush", FLUSH, "-b", "0", "-S", "s", "-q", "-d",
        ])
        .arg(root)
        .arg("-c")
        .arg(cfg)
        .args(extra)
        .spawn()
}

fn marked(root: &Path, dir: &Path) -> bool {
    root.join(dir.file_name().expect("name"))
        .join(".processed")
        .exists()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn rows_arrive_once_within_the_flush_time_and_rotation_marks_the_directory() {
    let node = shared_node();
    let queue = unique("follow_live");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(2, 600, 200, 11);
    let mut collector = Collector::start(node, &queue);
    let prom = work.path().join("tstat_send.prom");
    let mut send = follow(
        root.path(),
        &cfg,
        &["--metrics-file", prom.to_str().expect("utf-8")],
    );
    let mut writer = Writer::start(
        root.path(),
        dirs.clone(),
        WriterPlan {
            burst: 40,
            pause: Duration::from_millis(150),
            between: None,
        },
    );
    // While a directory is followed the metrics file names it, with the lag.
    wait_until("the follow gauges in the metrics file", DEADLINE, || {
        let m = fs::read_to_string(&prom).unwrap_or_default();
        m.contains("tstat_send_follow_directory_info{directory=")
            && m.contains("\ntstat_send_follow_lag_seconds ")
            && m.contains("\ntstat_send_follow_bytes_behind ")
    });
    wait_until("every directory written and marked", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        writer.done.load(Ordering::SeqCst) && dirs.iter().all(|d| marked(root.path(), d))
    });
    writer.finish();
    // Expected flows after each burst: the documents of the lines written.
    let log = writer.log.lock().expect("log").clone();
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut expected_after = Vec::new();
    for (when, name, complete) in &log {
        let src = dirs.iter().find(|d| d.ends_with(name)).expect("source dir");
        let data = logs_of(src);
        let prefix = scratch.path().join(name);
        fs::create_dir_all(&prefix).expect("prefix dir");
        for (i, file) in ["log_tcp_complete", "log_udp_complete"].iter().enumerate() {
            fs::write(prefix.join(file), &data[i][..complete[i]]).expect("prefix");
        }
        expected_after.push((*when, name.clone(), parsed(&prefix).len()));
    }
    let total: usize = dirs.iter().map(|d| parsed(d).len()).sum();
    wait_until("every flow collected", DEADLINE, || {
        let msgs = collector.messages();
        flatten(msgs.iter().map(|m| m.body.as_slice())).len() >= total
    });
    send.term();
    let status = send.wait_status(DEADLINE);
    assert_eq!(status.code(), Some(143), "{}", send.stderr_so_far());
    collector.stop();

    let got = collector.got.lock().expect("got").clone();
    let msgs: Vec<Received> = got.iter().map(|(_, r)| r.clone()).collect();
    let (by_dir, dups) = flows_by_dir(&msgs);
    assert_eq!(dups, 0, "no message twice without an interruption");
    for d in &dirs {
        let name = d.file_name().expect("name").to_string_lossy().into_owned();
        assert_eq!(
            bag(by_dir.get(&name).map_or(&[][..], |v| v.as_slice())),
            bag(&parsed(d)),
            "{name}: every flow exactly once"
        );
    }
    // Lag: when the flows of each burst had all arrived.
    let mut lags = Vec::new();
    for (when, name, want) in &expected_after {
        let mut n = 0usize;
        let arrived = got.iter().find_map(|(t, r)| {
            if dir_of(&r.message_id()) == *name {
                n += flatten([r.body.as_slice()]).len();
            }
            (n >= *want).then_some(*t)
        });
        let arrived = arrived.unwrap_or_else(|| panic!("{name}: {want} flows never arrived"));
        lags.push(arrived.saturating_duration_since(*when).as_secs_f64());
    }
    lags.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lags, 0.5), percentile(&lags, 0.99));
    eprintln!(
        "follow lag over {} bursts: p50 {p50:.2} s, p99 {p99:.2} s",
        lags.len()
    );
    let flush: f64 = FLUSH.parse().expect("number");
    assert!(
        p99 <= flush + 20.0,
        "rows took {p99:.1} s to arrive (flush {flush} s)"
    );
}

/// Writes `dirs` into `root` as Tstat would while `tstat_send --follow`
/// ships them, with three kill -9 of tstat_send and one of the broker at
/// seeded points of the writing, each once the point is reached and
/// `shipped` says something arrived; returns when every directory is
/// written and marked, with the number of faults.
fn torture(
    node: &mut RabbitNode,
    rng: &mut gentree::Rng,
    root: &Path,
    cfg: &Path,
    dirs: &[PathBuf],
    shipped: impl Fn(&RabbitNode) -> bool,
) -> usize {
    let extra = ["--chunk-size", "10", "--window", "16"];
    let mut send = follow(root, cfg, &extra);
    let burst = rng.range(20, 50) as usize;
    let mut writer = Writer::start(
        root,
        dirs.to_vec(),
        WriterPlan {
            burst,
            pause: Duration::from_millis(rng.range(60, 140)),
            between: None,
        },
    );
    let total_bursts = dirs.len() * 900_usize.div_ceil(burst);
    let mut faults: Vec<(usize, bool)> = (0..4)
        .map(|i| (rng.range(5, total_bursts as u64 - 5) as usize, i == 0))
        .collect();
    faults.sort();
    let mut interruptions = 0;
    for (at, broker) in faults {
        wait_until("the next fault's moment", DEADLINE, || {
            writer.bursts.load(Ordering::SeqCst) >= at && shipped(node)
        });
        if broker {
            eprintln!("burst {at}: kill -9 of the broker, restart");
            if node.stream_port.is_some() {
                streams::save_registrations(node);
            }
            node.kill9_and_restart();
        } else {
            eprintln!("burst {at}: kill -9 of tstat_send");
            send.kill();
        }
        interruptions += 1;
        if !send.running() {
            send = follow(root, cfg, &extra);
        }
    }
    wait_until("every directory written and marked", DEADLINE, || {
        if !send.running() {
            // A run that gave up on the broker is started again, as systemd does.
            send = follow(root, cfg, &extra);
        }
        writer.done.load(Ordering::SeqCst) && dirs.iter().all(|d| marked(root, d))
    });
    writer.finish();
    send.term();
    send.wait_status(DEADLINE);
    interruptions
}

#[test]
fn kill9_of_the_tool_and_of_the_broker_at_seeded_moments_lose_nothing() {
    let seed = common::run::seed("follow torture", "FOLLOW_SEED");
    let mut rng = gentree::Rng::new(seed);
    let mut node = RabbitNode::start();
    let queue = unique("follow_faults");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(3, 900, 300, seed % 1000);
    let interruptions = torture(&mut node, &mut rng, root.path(), &cfg, &dirs, |node| {
        published_so_far(node, &queue) > 0
    });
    let msgs = consume_all(&node, &queue);
    let (by_dir, dups) = flows_by_dir(&msgs);
    let window = 16 * 10;
    for d in &dirs {
        let name = d.file_name().expect("name").to_string_lossy().into_owned();
        let want = bag(&parsed(d));
        let got = bag(by_dir.get(&name).map_or(&[][..], |v| v.as_slice()));
        // Every flow is there; extras are re-sent copies, within a window
        // per interruption.
        let mut extra_flows = got.clone();
        for w in &want {
            let at = extra_flows
                .binary_search(w)
                .unwrap_or_else(|_| panic!("{name}: a flow is missing: {w}"));
            extra_flows.remove(at);
        }
        assert!(
            extra_flows.len() <= window * interruptions,
            "{name}: {} flows twice, more than a window per interruption",
            extra_flows.len()
        );
        eprintln!(
            "{name}: {} flows, {} repeated, {dups} ids twice",
            want.len(),
            extra_flows.len()
        );
    }
}

/// The same torture into a stream (design §14.3): the broker keeps each
/// producer's last position, so not even the window of a queue repeats.
/// Three kill -9 of tstat_send and one of the broker, at seeded points.
#[test]
fn into_a_stream_kill9_of_the_tool_and_of_the_broker_repeat_nothing() {
    let seed = common::run::seed("follow stream torture", "FOLLOW_STREAM_SEED");
    let mut rng = gentree::Rng::new(seed);
    let mut node = RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    });
    let stream = unique("follow_stream");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = streams::write_stream_config(&node, work.path(), &stream);
    let lib_cfg = streams::load(&cfg);
    let (_src, dirs) = source(3, 900, 300, seed % 1000);
    let interruptions = torture(&mut node, &mut rng, root.path(), &cfg, &dirs, |_| {
        streams::stored(&lib_cfg, root.path(), "s", 0).is_some_and(|s| s != [0, 0])
    });
    let msgs = streams::content(&node.url(), &stream);
    let got = streams::flow_counts(msgs.iter().map(|(_, b)| b.as_slice()));
    let mut want = std::collections::BTreeMap::new();
    for d in &dirs {
        for f in bag(&parsed(d)) {
            *want.entry(f).or_insert(0) += 1;
        }
    }
    let (missing, repeated) = streams::compare(&got, &want);
    let flows: usize = want.values().sum();
    eprintln!(
        "follow stream torture: {interruptions} interruptions, {} messages, {flows} flows, \
         {missing} missing, {repeated} repeated",
        msgs.len()
    );
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "flows missing, repeated; seed {seed}"
    );
}

#[test]
fn a_live_directory_deleted_and_created_again_loses_nothing_written() {
    let node = shared_node();
    let queue = unique("follow_restart");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(2, 400, 100, 13);
    let live = root.path().join(dirs[0].file_name().expect("name"));
    let old = logs_of(&dirs[0]);
    let new = logs_of(&dirs[1]);
    // The old log: its first half now, the rest just before the restart.
    let cut = line_ends(&old[0])[200];
    fs::create_dir_all(&live).expect("live dir");
    fs::write(live.join("log_tcp_complete"), &old[0][..cut]).expect("first half");
    let mut send = follow(root.path(), &cfg, &[]);
    wait_until("the first half shipped", DEADLINE, || {
        published_so_far(node, &queue) > 0
    });
    OpenOptions::new()
        .append(true)
        .open(live.join("log_tcp_complete"))
        .and_then(|mut f| f.write_all(&old[0][cut..]))
        .expect("the rest of the old log");
    // Tstat restarted within the hour: rm -rf of the directory, then the
    // same name again with new logs.
    wait_until("the directory removed", DEADLINE, || {
        fs::remove_dir_all(&live).is_ok()
    });
    fs::create_dir_all(&live).expect("live dir again");
    fs::write(live.join("log_tcp_complete"), &new[0]).expect("new log");
    fs::write(live.join("log_udp_complete"), &new[1]).expect("new log");
    let scratch = tempfile::tempdir().expect("tempdir");
    let (a, b) = (scratch.path().join("a.out"), scratch.path().join("b.out"));
    fs::create_dir_all(&a).expect("dir");
    fs::create_dir_all(&b).expect("dir");
    fs::write(a.join("log_tcp_complete"), &old[0]).expect("old");
    fs::write(b.join("log_tcp_complete"), &new[0]).expect("new");
    fs::write(b.join("log_udp_complete"), &new[1]).expect("new");
    let mut want = parsed(&a);
    want.extend(parsed(&b));
    let name = live
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    wait_until("every flow of both files published", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        let n = published_so_far(node, &queue) as usize;
        n > 0 && {
            let msgs = consume_peek(node, &queue);
            flows_by_dir(&msgs).0.get(&name).map_or(0, Vec::len) >= want.len()
        }
    });
    // Rotation: the directory is finished and marked.
    let next = root.path().join(format!("9{name}"));
    fs::create_dir_all(&next).expect("next dir");
    fs::write(
        next.join("log_tcp_complete"),
        &new[0][..line_ends(&new[0])[0]],
    )
    .expect("header");
    wait_until("the directory marked", DEADLINE, || {
        live.join(".processed").exists()
    });
    send.term();
    let out = send.wait(DEADLINE);
    let err = text(&out.stderr);
    assert!(err.contains("was replaced (Tstat restarted?)"), "{err}");
    let msgs = consume_all(node, &queue);
    let (by_dir, dups) = flows_by_dir(&msgs);
    assert_eq!(dups, 0);
    assert_eq!(
        bag(by_dir.get(&name).map_or(&[][..], |v| v.as_slice())),
        bag(&want),
        "every row of the old file and of the new one, once"
    );
}

/// The `last_success_timestamp_seconds` value of a metrics file, as
/// written (None while it is missing or being replaced).
fn last_success(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("tstat_send_last_success_timestamp_seconds "))
        .map(str::to_string)
}

/// Messages in `queue` now, left in it (read through a temporary queue
/// copy is not possible: consume and re-check counts only).
fn consume_peek(node: &RabbitNode, queue: &str) -> Vec<Received> {
    common::flows::with_channel(&node.url(), Duration::from_secs(60), async |ch| {
        let mut out = Vec::new();
        loop {
            let got = ch
                .basic_get(
                    queue.into(),
                    lapin::options::BasicGetOptions { no_ack: false },
                )
                .await
                .expect("basic_get");
            match got {
                Some(m) => out.push(Received {
                    body: m.delivery.data.clone(),
                    properties: m.delivery.properties.clone(),
                }),
                None => break,
            }
        }
        // Not acknowledged: closing the channel puts them back.
        out
    })
}

#[test]
fn a_gzipped_live_log_is_shipped_at_rotation_with_one_notice() {
    let node = shared_node();
    let queue = unique("follow_gz");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(1, 200, 0, 14);
    let name = dirs[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let live = root.path().join(&name);
    fs::create_dir_all(&live).expect("live dir");
    let data = logs_of(&dirs[0]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&data[0]).expect("gzip");
    fs::write(live.join("log_tcp_complete.gz"), gz.finish().expect("gzip")).expect("write");
    // Every pass ends by rewriting the metrics file with its own
    // last-success time: a new value is a pass seen.
    let metrics = work.path().join("send.prom");
    let m = metrics.to_str().expect("utf-8");
    let mut send = follow(root.path(), &cfg, &["--metrics-file", m]);
    wait_until("the notice", DEADLINE, || {
        send.stderr_so_far()
            .contains("cannot be read while it is written")
    });
    // Several passes go by (three finished after the notice was seen); the
    // notice is not repeated.
    let mut passes = std::collections::HashSet::new();
    wait_until("three passes after the notice", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        if let Some(t) = last_success(&metrics) {
            passes.insert(t);
        }
        passes.len() >= 3
    });
    assert!(!live.join(".processed").exists());
    let next = root.path().join(format!("9{name}"));
    fs::create_dir_all(&next).expect("next dir");
    fs::write(
        next.join("log_tcp_complete"),
        &data[0][..line_ends(&data[0])[0]],
    )
    .expect("header");
    wait_until("the gzipped directory marked", DEADLINE, || {
        live.join(".processed").exists()
    });
    send.term();
    let out = send.wait(DEADLINE);
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("cannot be read while it is written").count(),
        1,
        "{err}"
    );
    let (by_dir, _) = flows_by_dir(&consume_all(node, &queue));
    assert_eq!(
        bag(by_dir.get(&name).map_or(&[][..], |v| v.as_slice())),
        bag(&parsed(&dirs[0]))
    );
}

/// The queue deleted while a live directory is followed: the run names the
/// directories to ship again and ends with exit 1, so the service's restart
/// policy applies, instead of failing a pass every 30 s for ever; it never
/// re-creates the queue itself.
#[test]
fn a_vanished_queue_ends_the_follow_run_saying_what_to_ship_again() {
    // Its own node: every connection to it is closed below.
    let node = RabbitNode::start();
    let queue = unique("follow_vanish");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(2, 3000, 0, 21);
    let name = |d: &Path| d.file_name().expect("name").to_os_string();
    // A finished directory, marked by this run, and the live one after it.
    let old = root.path().join(name(&dirs[0]));
    fs::create_dir_all(&old).expect("old dir");
    fs::write(old.join("log_tcp_complete"), &logs_of(&dirs[0])[0]).expect("old log");
    let live = root.path().join(name(&dirs[1]));
    fs::create_dir_all(&live).expect("live dir");
    let data = logs_of(&dirs[1])[0].clone();
    let ends = line_ends(&data);
    let mut written = 100;
    fs::write(live.join("log_tcp_complete"), &data[..ends[written]]).expect("live log");
    let mut send = follow(root.path(), &cfg, &[]);
    wait_until(
        "the old directory marked and live rows confirmed",
        DEADLINE,
        || {
            assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
            old.join(".processed").exists()
                && common::rabbit::confirmed_count(&live.join(".progress")) > 0
        },
    );
    node.ctl_ok(&["delete_queue", &queue]);
    node.close_all_connections();
    // Tstat goes on writing: the next array finds the queue gone.
    let mut log = OpenOptions::new()
        .append(true)
        .open(live.join("log_tcp_complete"))
        .expect("open log");
    wait_until("tstat_send to end", DEADLINE, || {
        if written + 10 < ends.len() {
            log.write_all(&data[ends[written]..ends[written + 10]])
                .expect("append");
            written += 10;
        }
        !send.running()
    });
    let out = send.wait(DEADLINE);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has disappeared from the broker"), "{err}");
    assert!(
        err.contains(&format!("{} starts over", live.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("lost with it: {} (ship each again", old.display())),
        "{err}"
    );
    assert_eq!(
        err.matches("has disappeared").count(),
        1,
        "said once, not once per retry: {err}"
    );
    assert!(
        node.list_queues(&["name"])
            .iter()
            .all(|row| row.first() != Some(&queue)),
        "the queue is not re-created"
    );
    assert!(!live.join(".processed").exists());
}

/// A value of a metrics file (`None` while it is missing, being replaced or
/// without that sample).
fn metric(path: &Path, name: &str) -> Option<f64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// While a directory is followed, the confirmed messages are counted as they
/// are confirmed (not at rotation), the lag counts from a row's first read
/// (so rows that waited the flush time show it), and SIGTERM, the normal end
/// of `--follow`, counts what it confirmed and is no error.
#[test]
fn follow_counts_at_confirm_and_a_sigterm_is_no_error() {
    let node = shared_node();
    let queue = unique("follow_counts");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(1, 400, 0, 23);
    let live = root.path().join(dirs[0].file_name().expect("name"));
    fs::create_dir_all(&live).expect("live dir");
    let data = logs_of(&dirs[0])[0].clone();
    let ends = line_ends(&data);
    // Fewer rows than an array: they go when the flush time is up.
    fs::write(live.join("log_tcp_complete"), &data[..ends[10]]).expect("live log");
    let prom = work.path().join("send.prom");
    let flush = 3.0;
    let mut send = program("tstat_send")
        .args(["--follow", "--flush", "3", "-b", "0", "-S", "s", "-d"])
        .arg(root.path())
        .arg("-c")
        .arg(&cfg)
        .arg("--metrics-file")
        .arg(&prom)
        .spawn();
    let messages = "tstat_send_messages_total";
    wait_until("messages counted while following", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        metric(&prom, messages).is_some_and(|m| m >= 1.0)
    });
    assert!(metric(&prom, "tstat_send_bytes_total").is_some_and(|b| b > 0.0));
    // The rows were read at once and waited the flush time in their array.
    let lag = metric(&prom, "tstat_send_follow_lag_seconds").expect("lag");
    assert!(lag >= flush - 0.1, "lag {lag} s, below the flush time");
    // More rows, then the stop once they are in the queue.
    let mut log = OpenOptions::new()
        .append(true)
        .open(live.join("log_tcp_complete"))
        .expect("open log");
    log.write_all(&data[ends[10]..ends[300]]).expect("append");
    let want = parsed(&dirs[0]);
    let first300 = {
        let scratch = tempfile::tempdir().expect("tempdir");
        fs::write(scratch.path().join("log"), &data[..ends[300]]).expect("prefix");
        let d = scratch.path().join("x.out");
        fs::create_dir_all(&d).expect("dir");
        fs::rename(scratch.path().join("log"), d.join("log_tcp_complete")).expect("mv");
        parsed(&d).len()
    };
    assert!(first300 < want.len());
    wait_until("the appended rows in the queue", DEADLINE, || {
        let msgs = consume_peek(node, &queue);
        flatten(msgs.iter().map(|m| m.body.as_slice())).len() >= first300
    });
    send.term();
    let out = send.wait(DEADLINE);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        !err.contains("error:"),
        "a requested stop is no error: {err}"
    );
    assert!(
        err.contains(&format!("{} stays unmarked", live.display())),
        "{err}"
    );
    let in_queue = consume_all(node, &queue).len() as f64;
    assert_eq!(
        metric(&prom, messages),
        Some(in_queue),
        "every confirmed message counted"
    );
    assert_eq!(metric(&prom, "tstat_send_errors_total"), Some(0.0));
    assert!(!live.join(".processed").exists());
}

/// The inode of a file (a new one each time the metrics file is replaced,
/// which every pass does); `None` while it is missing.
fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Waits until `path` has been replaced `n` more times.
fn passes(send: &mut Running, path: &Path, n: usize) {
    let mut seen = std::collections::HashSet::new();
    seen.extend(inode(path));
    let first = seen.len();
    wait_until(&format!("{n} more passes"), DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        seen.extend(inode(path));
        seen.len() >= first + n
    });
}

/// A live directory whose record a run refuses (the threshold changed) is
/// said once and counted once in `directories_refused_total`, not once a
/// second.
#[test]
fn a_refused_live_directory_is_said_and_counted_once() {
    let node = shared_node();
    let queue = unique("follow_refused");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(1, 200, 0, 24);
    let live = root.path().join(dirs[0].file_name().expect("name"));
    fs::create_dir_all(&live).expect("live dir");
    let data = logs_of(&dirs[0])[0].clone();
    let ends = line_ends(&data);
    fs::write(live.join("log_tcp_complete"), &data[..ends[50]]).expect("live log");
    let mut first = follow(root.path(), &cfg, &[]);
    wait_until("rows of the live directory confirmed", DEADLINE, || {
        assert!(
            first.running(),
            "tstat_send ended: {}",
            first.stderr_so_far()
        );
        !peek_when_there(node, &queue).is_empty()
    });
    first.term();
    assert_eq!(first.wait_status(DEADLINE).code(), Some(143));
    // The next run ships with another threshold: the record is refused.
    let prom = work.path().join("refused.prom");
    let mut send = program("tstat_send")
        .args([
            "--follow", "--flush", FLUSH, "-b", "1", "-S", "s", "-q", "-d",
        ])
        .arg(root.path())
        .arg("-c")
        .arg(&cfg)
        .arg("--metrics-file")
        .arg(&prom)
        .spawn();
    wait_until("the refusal", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        send.stderr_so_far().contains("not marked")
    });
    passes(&mut send, &prom, 3);
    assert_eq!(
        metric(&prom, "tstat_send_directories_refused_total"),
        Some(1.0)
    );
    assert_eq!(metric(&prom, "tstat_send_errors_total"), Some(1.0));
    send.term();
    let out = send.wait(DEADLINE);
    let err = text(&out.stderr);
    let refusal = format!("{}: not marked", live.display());
    assert_eq!(err.matches(&refusal).count(), 1, "{err}");
    assert!(!live.join(".processed").exists());
}

/// [`consume_peek`] once the queue exists (the run declares it).
fn peek_when_there(node: &RabbitNode, queue: &str) -> Vec<Received> {
    let there = node
        .list_queues(&["name"])
        .iter()
        .any(|row| row.first().is_some_and(|n| n == queue));
    if there {
        consume_peek(node, queue)
    } else {
        Vec::new()
    }
}

/// Idle on a tree with a processed history, a new Tstat directory is still
/// found and followed, and marked when Tstat rotates away from it (the
/// cheap looks between full walks miss nothing).
#[test]
fn a_new_directory_is_found_on_a_tree_with_history() {
    let node = shared_node();
    let queue = unique("follow_history");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = node.write_config(work.path(), &queue);
    let (_src, dirs) = source(1, 300, 50, 25);
    let header = {
        let tcp = &logs_of(&dirs[0])[0];
        tcp[..line_ends(tcp)[0]].to_vec()
    };
    // 300 processed hours before the live one, in one per-interface folder.
    let iface = root.path().join("eth0");
    for h in 0..300 {
        let d = iface.join(format!("2000_01_{:02}_{:02}_00.out", 1 + h / 24, h % 24));
        fs::create_dir_all(&d).expect("old dir");
        fs::write(d.join("log_tcp_complete"), &header).expect("old log");
        fs::write(d.join(".processed"), "processed").expect("mark");
    }
    let prom = work.path().join("history.prom");
    let mut send = follow(
        root.path(),
        &cfg,
        &["--metrics-file", prom.to_str().expect("utf-8")],
    );
    passes(&mut send, &prom, 3);
    let name = dirs[0].file_name().expect("name");
    let live = iface.join(name);
    fs::create_dir_all(&live).expect("live dir");
    for (i, log) in ["log_tcp_complete", "log_udp_complete"].iter().enumerate() {
        fs::write(live.join(log), &logs_of(&dirs[0])[i]).expect("live log");
    }
    let want = parsed(&dirs[0]).len();
    wait_until("the new directory's flows", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        let msgs = peek_when_there(node, &queue);
        flatten(msgs.iter().map(|m| m.body.as_slice())).len() >= want
    });
    assert!(!live.join(".processed").exists(), "still written");
    let next = iface.join(format!("9{}", name.to_string_lossy()));
    fs::create_dir_all(&next).expect("next dir");
    fs::write(next.join("log_tcp_complete"), &header).expect("header");
    wait_until("the directory marked at rotation", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        live.join(".processed").exists()
    });
    send.term();
    assert_eq!(send.wait_status(DEADLINE).code(), Some(143));
}

/// `--watch` would mean nothing next to `--follow` (passes are a second
/// apart): together they are a usage error.
#[test]
fn follow_with_watch_is_a_usage_error() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = program("tstat_send")
        .args(["--follow", "--watch", "5", "-N", "-d"])
        .arg(root.path())
        .run();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--watch") && err.contains("--follow"), "{err}");
}

/// The stream deleted while a live directory is followed into it: as for a
/// queue, the run names the directories to ship again and ends with exit 1
/// instead of creating the stream again on its next pass without a word
/// about what went with it.
#[test]
fn a_vanished_stream_ends_the_follow_run_saying_what_to_ship_again() {
    let node = RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    });
    let stream = unique("follow_stream_vanish");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = streams::write_stream_config(&node, work.path(), &stream);
    let (_src, dirs) = source(2, 3000, 0, 26);
    let old = root.path().join(dirs[0].file_name().expect("name"));
    fs::create_dir_all(&old).expect("old dir");
    fs::write(old.join("log_tcp_complete"), &logs_of(&dirs[0])[0]).expect("old log");
    let live = root.path().join(dirs[1].file_name().expect("name"));
    fs::create_dir_all(&live).expect("live dir");
    let data = logs_of(&dirs[1])[0].clone();
    let ends = line_ends(&data);
    let mut written = 100;
    fs::write(live.join("log_tcp_complete"), &data[..ends[written]]).expect("live log");
    let lib_cfg = streams::load(&cfg);
    let held = || streams::stored(&lib_cfg, root.path(), "s", 0);
    let mut send = follow(root.path(), &cfg, &[]);
    wait_until("the old directory marked", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        old.join(".processed").exists()
    });
    // Tstat goes on writing throughout.
    let mut log = OpenOptions::new()
        .append(true)
        .open(live.join("log_tcp_complete"))
        .expect("open log");
    let before = held();
    wait_until("live rows in the stream", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        if written + 10 < ends.len() {
            log.write_all(&data[ends[written]..ends[written + 10]])
                .expect("append");
            written += 10;
        }
        held() != before
    });
    node.ctl_ok(&["delete_queue", &stream]);
    let until = Instant::now() + DEADLINE;
    while send.running() {
        assert!(
            Instant::now() < until,
            "still running: {}",
            send.stderr_so_far()
        );
        if written + 10 < ends.len() {
            log.write_all(&data[ends[written]..ends[written + 10]])
                .expect("append");
            written += 10;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let out = send.wait(DEADLINE);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no longer exists"), "{err}");
    assert!(
        err.contains(&format!("{} starts over", live.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("lost with it: {} (ship each again", old.display())),
        "{err}"
    );
    assert!(
        node.list_queues(&["name"])
            .iter()
            .all(|row| row.first() != Some(&stream)),
        "the stream is not re-created"
    );
    assert!(!live.join(".processed").exists());
}

/// Into a stream, rows written once and then nothing more (a quiet
/// interface): their confirms are recorded and counted a second later, not
/// only when the next array is sent, so the metrics and the directory's
/// record say what the stream holds.
#[test]
fn a_quiet_live_directory_into_a_stream_is_recorded_and_counted() {
    let node = RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    });
    let stream = unique("follow_stream_quiet");
    let work = tempfile::tempdir().expect("tempdir");
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = streams::write_stream_config(&node, work.path(), &stream);
    let (_src, dirs) = source(1, 400, 0, 31);
    let live = root.path().join(dirs[0].file_name().expect("name"));
    fs::create_dir_all(&live).expect("live dir");
    let data = logs_of(&dirs[0])[0].clone();
    let ends = line_ends(&data);
    // One burst of rows, then Tstat stays quiet.
    fs::write(live.join("log_tcp_complete"), &data[..ends[250]]).expect("live log");
    let prom = work.path().join("send.prom");
    let mut send = program("tstat_send")
        .args(["--follow", "--flush", FLUSH, "-b", "0", "-S", "s", "-d"])
        .arg(root.path())
        .arg("-c")
        .arg(&cfg)
        .arg("--metrics-file")
        .arg(&prom)
        .spawn();
    let burst = {
        let scratch = tempfile::tempdir().expect("tempdir");
        let d = scratch.path().join("x.out");
        fs::create_dir_all(&d).expect("dir");
        fs::write(d.join("log_tcp_complete"), &data[..ends[250]]).expect("burst");
        parsed(&d).len()
    };
    let mut in_stream = 0;
    wait_until("the whole burst in the stream", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        let msgs = streams::content(&node.url(), &stream);
        in_stream = msgs.len();
        flatten(msgs.iter().map(|(_, b)| b.as_slice())).len() >= burst
    });
    assert!(in_stream >= 2, "{in_stream} messages");
    wait_until("every confirmed message counted", DEADLINE, || {
        assert!(send.running(), "tstat_send ended: {}", send.stderr_so_far());
        metric(&prom, "tstat_send_messages_total") == Some(in_stream as f64)
    });
    // The record covers the burst: a restart asks the broker, but the
    // record is what a stop reports.
    let rec: Value =
        serde_json::from_slice(&fs::read(live.join(".progress")).expect("record")).expect("json");
    assert_eq!(
        rec["confirmed"].as_u64(),
        Some(in_stream as u64),
        "the record covers every message in the stream: {rec}"
    );
    send.term();
    let out = send.wait(DEADLINE);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
}
