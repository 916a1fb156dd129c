//! tstat-consume against private RabbitMQ nodes (design §14.6): what
//! tstat-rabbit shipped comes back equal to `tstat-parse -b 0`; a closed
//! stdout, a kill -9 and a broker restart lose nothing (a second run gets
//! the rest); a body that is not a JSON array stops the run naming it, or is
//! skipped and counted; the `--arrays` bridge into another queue carries
//! every array unchanged.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::rabbit::{RabbitNode, shared_node, unique, write_private};
use common::run::{assert_status, bin, command, program, text, wait_until};
use serde_json::Value;

const CONSUME: &str = "tstat-consume";
const DIR: &str = "tests/fixtures/synthetic/2026_03_01_00_00.out";
const RUN: Duration = Duration::from_secs(120);

/// A queue on `node` and its config in a temp dir.
struct Queue {
    name: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Queue {
    fn new(node: &RabbitNode) -> Queue {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = unique("consume");
        let config = write_private(&dir.path().join("q.ini"), &node.config(&name, ""));
        Queue {
            name,
            config,
            _dir: dir,
        }
    }

    /// Publishes `lines` (one message each) with tstat-rabbit, ids PREFIX:N.
    fn publish(&self, lines: &[String], prefix: &str) {
        let mut input = lines.join("\n");
        input.push('\n');
        let out = program("tstat-rabbit")
            .arg("-c")
            .arg(&self.config)
            .args(["--message-id-prefix", prefix])
            .stdin(input)
            .deadline(RUN)
            .run();
        assert_status(&out, 0, "tstat-rabbit");
    }

    fn consume(&self, args: &[&str]) -> Output {
        program(CONSUME)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .deadline(RUN)
            .run()
    }
}

/// `tstat-parse -b 0` of the fixture directory: the expected documents.
fn parsed() -> String {
    let out = program("tstat-parse")
        .args(["-b", "0", "-S", "s", "-I", "1", DIR])
        .run();
    assert_status(&out, 0, "tstat-parse");
    text(&out.stdout)
}

/// The parsed documents in arrays of `size`, as tstat-chunk makes them.
fn arrays(docs: &str, size: usize) -> Vec<String> {
    let out = program("tstat-chunk")
        .args(["--size", &size.to_string()])
        .stdin(docs.as_bytes().to_vec())
        .run();
    assert_status(&out, 0, "tstat-chunk");
    text(&out.stdout).lines().map(String::from).collect()
}

/// Documents as a multiset of their canonical JSON text (parsed values).
fn multiset(ndjson: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (i, line) in ndjson.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("output line {}: {e}: {line}", i + 1));
        *m.entry(v.to_string()).or_insert(0) += 1;
    }
    m
}

/// Documents of `want` missing from `got` (counting repeats).
fn missing(got: &BTreeMap<String, usize>, want: &BTreeMap<String, usize>) -> usize {
    want.iter()
        .map(|(d, n)| n.saturating_sub(got.get(d).copied().unwrap_or(0)))
        .sum()
}

fn union(a: &str, b: &str) -> BTreeMap<String, usize> {
    let mut m = multiset(a);
    for (d, n) in multiset(b) {
        *m.entry(d).or_insert(0) += n;
    }
    m
}

fn ready(node: &RabbitNode, queue: &str) -> u64 {
    node.list_queues(&["name", "messages"])
        .iter()
        .find(|r| r[0] == queue)
        .map_or(0, |r| r[1].parse().expect("a count"))
}

#[test]
fn everything_shipped_comes_back_equal_to_parse() {
    let node = shared_node();
    let q = Queue::new(node);
    let docs = parsed();
    let lines = arrays(&docs, 100);
    q.publish(&lines, "all");
    let n = lines.len().to_string();

    // Documents: the same multiset as tstat-parse -b 0, and the queue is
    // empty after --count took every message.
    let out = q.consume(&["--count", &n]);
    assert_status(&out, 0, "consume");
    let got = text(&out.stdout);
    assert_eq!(multiset(&got), multiset(&docs));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{n} messages, {} documents written",
            docs.lines().count()
        )),
        "{err}"
    );
    wait_until("the queue emptied", RUN, || ready(node, &q.name) == 0);

    // --arrays: each array byte for byte as published, in order; -q: no
    // summary; --idle-exit ends it once the queue is empty.
    q.publish(&lines, "again");
    let out = q.consume(&["--arrays", "--idle-exit", "2", "-q"]);
    assert_status(&out, 0, "consume --arrays");
    let got: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(got, lines);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_closed_stdout_acknowledges_only_what_was_written() {
    let node = shared_node();
    let q = Queue::new(node);
    let docs = parsed();
    let lines = arrays(&docs, 100);
    q.publish(&lines, "head");
    let script = r#""$0" -c "$1" --prefetch 10 | head -n 5; echo "status ${PIPESTATUS[0]}" >&2"#;
    let out = command("bash")
        .args(["-c", script])
        .arg(bin(CONSUME))
        .arg(&q.config)
        .deadline(RUN)
        .run();
    assert_status(&out, 0, "the pipeline");
    let head = text(&out.stdout);
    assert_eq!(head.lines().count(), 5);
    let err = text(&out.stderr);
    assert!(err.contains("status 0"), "{err}");
    assert!(!err.contains("error"), "{err}");

    let rest = q.consume(&["--idle-exit", "2"]);
    assert_status(&rest, 0, "the second run");
    let all = union(&head, &text(&rest.stdout));
    assert_eq!(missing(&all, &multiset(&docs)), 0);
}

#[test]
fn kill_9_mid_way_then_a_second_run_loses_nothing() {
    let node = shared_node();
    let q = Queue::new(node);
    let docs = parsed();
    let lines = arrays(&docs, 50);
    q.publish(&lines, "kill");
    // The test reads stdout slowly: the program blocks on a full pipe with
    // messages taken and not acknowledged; it is killed there.
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&q.config)
        .args(["--prefetch", "5"])
        .stdout(Stdio::piped())
        .spawn();
    let mut reader = BufReader::new(run.take_stdout());
    let mut first = String::new();
    for _ in 0..120 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0);
        first.push_str(&line);
    }
    run.kill();
    // What was read of a partly written line is not a document.
    let mut tail = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut tail);
    let complete: String = tail
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    first.push_str(&complete);
    assert!(
        multiset(&first).values().sum::<usize>() < docs.lines().count(),
        "the kill came after everything was written: the test proves nothing"
    );

    let rest = q.consume(&["--idle-exit", "3"]);
    assert_status(&rest, 0, "the second run");
    let all = union(&first, &text(&rest.stdout));
    assert_eq!(missing(&all, &multiset(&docs)), 0);
}

#[test]
fn a_body_that_is_not_an_array_stops_the_run_naming_it_or_is_skipped() {
    let node = shared_node();
    let q = Queue::new(node);
    let good = r#"[{"a":1},{"b":2}]"#.to_string();
    let lines = vec![
        good.clone(),
        "not json".to_string(),
        r#"[{"c":3}]"#.to_string(),
    ];
    q.publish(&lines, "bad");

    let out = q.consume(&["--idle-exit", "3"]);
    assert_status(&out, 1, "a bad message");
    assert_eq!(text(&out.stdout), "{\"a\":1}\n{\"b\":2}\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("tstat-consume: error: message bad:1 (delivery tag 2): the body is not a JSON array (it starts with 'n'); not acknowledged"),
        "{err}"
    );
    // The first was acknowledged; the bad one and the one after stay.
    wait_until("two messages back in the queue", RUN, || {
        ready(node, &q.name) == 2
    });

    let out = q.consume(&["--idle-exit", "2", "--skip-bad"]);
    assert_status(&out, 0, "--skip-bad");
    assert_eq!(text(&out.stdout), "{\"c\":3}\n");
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "warning: message bad:1 (delivery tag 1) skipped: the body is not a JSON array"
        ),
        "{err}"
    );
    assert!(err.contains("1 message, 1 document written"), "{err}");
    assert!(err.contains("1 bad skipped"), "{err}");
    wait_until("the queue emptied", RUN, || ready(node, &q.name) == 0);
}

#[test]
fn dedupe_drops_a_message_id_seen_among_the_last_n() {
    let node = shared_node();
    let q = Queue::new(node);
    let a = r#"[{"a":1}]"#.to_string();
    // The same id twice (a publisher's resend after a crash).
    q.publish(std::slice::from_ref(&a), "same");
    q.publish(std::slice::from_ref(&a), "same");
    q.publish(&[r#"[{"b":2}]"#.to_string()], "other");
    let out = q.consume(&["--idle-exit", "2", "--dedupe", "10"]);
    assert_status(&out, 0, "--dedupe");
    assert_eq!(text(&out.stdout), "{\"a\":1}\n{\"b\":2}\n");
    assert!(text(&out.stderr).contains("1 repeated dropped"));
    wait_until("the queue emptied", RUN, || ready(node, &q.name) == 0);
}

#[test]
fn the_arrays_bridge_carries_every_array_into_another_queue() {
    let node = shared_node();
    let from = Queue::new(node);
    let to = Queue::new(node);
    let lines = arrays(&parsed(), 100);
    from.publish(&lines, "bridge");
    let script = r#""$0" -c "$1" --arrays --idle-exit 2 -q | "$2" -c "$3""#;
    let out = command("bash")
        .args(["-c", script])
        .arg(bin(CONSUME))
        .arg(&from.config)
        .arg(bin("tstat-rabbit"))
        .arg(&to.config)
        .deadline(RUN)
        .run();
    assert_status(&out, 0, "the bridge");
    let got: Vec<String> = node
        .get_n(&to.name, lines.len(), RUN)
        .into_iter()
        .map(|m| text(&m.body))
        .collect();
    assert_eq!(got, lines);
}

#[test]
fn a_missing_queue_and_flags_for_streams_are_clear_errors() {
    let node = shared_node();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("nowhere");
    let config = write_private(&dir.path().join("c.ini"), &node.config(&name, ""));
    let out = program(CONSUME).arg("-c").arg(&config).run();
    assert_status(&out, 1, "a missing queue");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot read queue '{name}': it does not exist at 127.0.0.1:{}",
            node.port
        )),
        "{err}"
    );
    // Never created.
    assert!(!node.list_queues(&["name"]).iter().any(|r| r[0] == name));

    for flag in [&["--from", "first"][..], &["--name", "me"]] {
        let out = program(CONSUME).arg("-c").arg(&config).args(flag).run();
        assert_status(&out, 2, "a stream flag on a queue");
        assert!(text(&out.stderr).contains("transport = queue"));
    }
    let out = program(CONSUME)
        .args(["-c", "x.ini", "--from", "yesterday"])
        .run();
    assert_status(&out, 2, "a bad --from");
}

#[test]
fn a_broker_restart_while_consuming_loses_nothing() {
    let mut node = RabbitNode::start();
    let q = Queue::new(&node);
    let docs = parsed();
    let lines = arrays(&docs, 50);
    q.publish(&lines, "restart");
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&q.config)
        .args(["--prefetch", "5", "--idle-exit", "5", "--retries", "20"])
        .stdout(Stdio::piped())
        .spawn();
    let mut reader = BufReader::new(run.take_stdout());
    let mut got = String::new();
    for _ in 0..100 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0);
        got.push_str(&line);
    }
    // The program is blocked on the pipe with messages unacknowledged.
    node.stop_app();
    let reading = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        rest
    });
    wait_until("the consumer noticed", RUN, || {
        run.stderr_so_far().contains("reconnecting")
    });
    node.start_app();
    let status = run.wait_status(RUN);
    let rest = reading.join().expect("reader");
    let err = run.stderr_so_far();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("reconnect"), "{err}");
    got.push_str(&rest);
    assert_eq!(missing(&multiset(&got), &multiset(&docs)), 0, "{err}");
    // Everything was acknowledged in the end.
    assert_eq!(ready(&node, &q.name), 0);
}
