//! tstat-consume against private RabbitMQ nodes (design §15.8, spec
//! §14.6). Queue: what tstat-rabbit shipped comes back equal to
//! `tstat-parse -b 0`; `| head`, kill -9 and a broker restart lose nothing
//! (a second run gets the rest); a body that is not a JSON array stops the
//! run naming it, or is skipped and counted; `--dedupe`; the `--arrays`
//! bridge into another queue carries every array unchanged; peak RSS is
//! bounded by the prefetch window. Stream (shipped by tstat_send): read by
//! `--name` twice gives only what came in between; `| head`, kill -9 and a
//! broker restart continue with no gap; a stalled stdout keeps the
//! connection. Signals, clear errors, and the README's commands as written.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::rabbit::{NodeOptions, RabbitNode, shared_node, unique, write_private};
use common::run::{assert_status, bin, command, program, text, wait_until};
use common::streams::write_stream_config;
use common::trees::{SETTLED, copy_fixture};
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
    assert!(err.contains("1 message, 2 documents written"), "{err}");
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

    // No broker there: a clear error at once, naming the host.
    let (config, port) = common::rabbit::unreachable_config(dir.path());
    let out = program(CONSUME).arg("-c").arg(&config).run();
    assert_status(&out, 1, "no broker");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("tstat-consume: error: cannot connect to RabbitMQ")
            && err.contains(&format!("127.0.0.1:{port}: connection refused")),
        "{err}"
    );
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

// ---- streams ----

/// The node with the stream plugin the stream tests share.
fn stream_node() -> &'static RabbitNode {
    static NODE: std::sync::OnceLock<RabbitNode> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let node = RabbitNode::start_with(NodeOptions {
            stream: true,
            ..NodeOptions::default()
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = write_stream_config(&node, dir.path(), "ready");
        common::streams::await_listener(&common::streams::load(&cfg), RUN);
        node
    })
}

/// A stream (created by the first tstat_send) with its config and a tree.
struct Stream {
    config: PathBuf,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stream {
    fn new(node: &RabbitNode) -> Stream {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_stream_config(node, dir.path(), &unique("consume_stream"));
        let root = dir.path().join("tree");
        std::fs::create_dir_all(&root).expect("tree");
        Stream {
            config,
            root,
            _dir: dir,
        }
    }

    /// Copies fixture directory `name` into the tree and ships what is
    /// not shipped yet with tstat_send.
    fn ship(&self, name: &str) {
        copy_fixture(
            &format!("synthetic/{name}"),
            &self.root.join(name),
            Some(SETTLED),
        );
        let out = program("tstat_send")
            .arg("-d")
            .arg(&self.root)
            .arg("-c")
            .arg(&self.config)
            .args(["--all", "-b", "0", "-S", "s", "-I", "1"])
            .deadline(RUN)
            .run();
        assert_status(&out, 0, "tstat_send into the stream");
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

/// `tstat-parse -b 0` of fixture directory `name`.
fn parsed_dir(name: &str) -> String {
    let out = program("tstat-parse")
        .args(["-b", "0", "-S", "s", "-I", "1"])
        .arg(format!("tests/fixtures/synthetic/{name}"))
        .run();
    assert_status(&out, 0, "tstat-parse");
    text(&out.stdout)
}

const D1: &str = "2026_03_01_00_00.out";
const D2: &str = "2026_03_01_01_00.out";

#[test]
fn a_stream_read_by_name_twice_gives_only_what_came_in_between() {
    let node = stream_node();
    let s = Stream::new(node);
    s.ship(D1);
    let out = s.consume(&["--name", "reader1", "--idle-exit", "3", "-v"]);
    assert_status(&out, 0, "first read");
    assert_eq!(multiset(&text(&out.stdout)), multiset(&parsed_dir(D1)));
    let err = text(&out.stderr);
    assert!(
        err.contains("no offset is stored under 'reader1': starting at the first message"),
        "{err}"
    );

    s.ship(D2);
    let out = s.consume(&["--name", "reader1", "--idle-exit", "3", "-v"]);
    assert_status(&out, 0, "second read");
    assert_eq!(multiset(&text(&out.stdout)), multiset(&parsed_dir(D2)));
    assert!(text(&out.stderr).contains("is stored under 'reader1': continuing after it"));

    // Nothing new: nothing written.
    let out = s.consume(&["--name", "reader1", "--idle-exit", "2"]);
    assert_status(&out, 0, "third read");
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("0 messages, 0 documents"));

    // --from first without a name: everything, whatever is stored.
    let out = s.consume(&["--from", "first", "--idle-exit", "3"]);
    assert_status(&out, 0, "--from first");
    let both = union(&parsed_dir(D1), &parsed_dir(D2));
    assert_eq!(multiset(&text(&out.stdout)), both);

    // --from OFFSET --count 1 --arrays: the one message at that offset.
    let out = s.consume(&["--from", "1", "--count", "1", "--arrays"]);
    assert_status(&out, 0, "--from 1");
    let all = s.consume(&["--from", "first", "--count", "2", "--arrays"]);
    let second = text(&all.stdout).lines().nth(1).map(String::from);
    assert_eq!(text(&out.stdout).lines().next().map(String::from), second);

    // A time after everything: nothing.
    let out = s.consume(&["--from", "2100-01-01T00:00:00Z", "--idle-exit", "2"]);
    assert_status(&out, 0, "--from a future time");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn a_stream_reader_killed_or_cut_off_by_head_continues_with_no_gap() {
    let node = stream_node();
    let s = Stream::new(node);
    s.ship(D1);
    let want = multiset(&parsed_dir(D1));

    // | head -n 5: stored only what was written.
    let script = r#""$0" -c "$1" --name r2 | head -n 5; echo "status ${PIPESTATUS[0]}" >&2"#;
    let out = command("bash")
        .args(["-c", script])
        .arg(bin(CONSUME))
        .arg(&s.config)
        .deadline(RUN)
        .run();
    assert_status(&out, 0, "the pipeline");
    assert!(text(&out.stderr).contains("status 0"));
    let mut got = text(&out.stdout);

    // kill -9 while blocked on a full pipe.
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&s.config)
        .args(["--name", "r2", "--prefetch", "5"])
        .stdout(Stdio::piped())
        .spawn();
    let mut reader = BufReader::new(run.take_stdout());
    for _ in 0..120 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0);
        got.push_str(&line);
    }
    run.kill();
    let mut tail = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut tail);
    got.extend(tail.split_inclusive('\n').filter(|l| l.ends_with('\n')));
    assert!(multiset(&got).values().sum::<usize>() < want.values().sum::<usize>());

    let out = s.consume(&["--name", "r2", "--idle-exit", "3"]);
    assert_status(&out, 0, "the last run");
    let all = union(&got, &text(&out.stdout));
    assert_eq!(missing(&all, &want), 0);
}

#[test]
fn a_bad_stream_message_stops_the_run_naming_its_offset_or_is_skipped() {
    let node = stream_node();
    let stream = unique("consume_bad");
    let dir = tempfile::tempdir().unwrap();
    let config = write_stream_config(node, dir.path(), &stream);
    publish_to_stream(
        node,
        &stream,
        &[
            ("ok-1", r#"[{"a":1}]"#),
            ("bad-1", "oops"),
            ("ok-2", r#"[{"b":2}]"#),
        ],
    );
    let consume = |args: &[&str]| {
        program(CONSUME)
            .arg("-c")
            .arg(&config)
            .args(args)
            .deadline(RUN)
            .run()
    };
    let out = consume(&["--name", "n", "--idle-exit", "3"]);
    assert_status(&out, 1, "a bad message");
    assert_eq!(text(&out.stdout), "{\"a\":1}\n");
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "error: message bad-1 (offset 1): the body is not a JSON array (it starts with 'o')"
        ),
        "{err}"
    );
    let out = consume(&["--name", "n", "--idle-exit", "3", "--skip-bad"]);
    assert_status(&out, 0, "--skip-bad");
    assert_eq!(text(&out.stdout), "{\"b\":2}\n");
    let err = text(&out.stderr);
    assert!(err.contains("message bad-1 (offset 1) skipped"), "{err}");
    assert!(err.contains("1 bad skipped, last offset 2"), "{err}");

    // A stream that does not exist: named, never created.
    let missing = unique("consume_missing");
    let config = write_stream_config(node, dir.path(), &missing);
    let out = program(CONSUME)
        .arg("-c")
        .arg(&config)
        .args(["--idle-exit", "1"])
        .deadline(RUN)
        .run();
    assert_status(&out, 1, "a missing stream");
    let err = text(&out.stderr);
    assert!(err.contains(&format!("'{missing}'")), "{err}");
    assert!(!node.list_queues(&["name"]).iter().any(|r| r[0] == missing));
}

/// Declares `stream` and publishes `(id, body)` messages into it over AMQP
/// 0-9-1, each confirmed.
fn publish_to_stream(node: &RabbitNode, stream: &str, messages: &[(&str, &str)]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = lapin::Connection::connect(&node.url(), lapin::ConnectionProperties::default())
            .await
            .expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        ch.queue_declare(
            stream.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .expect("declare the stream");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        for (id, body) in messages {
            ch.basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default().with_message_id((*id).into()),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
        }
        let _ = conn.close(200, "done".into()).await;
    });
}

/// Peak memory is bounded by the prefetch window, not by the backlog: a
/// queue holding about 80 MB is read with a resident set far below it.
#[test]
fn memory_is_bounded_by_the_prefetch_window_whatever_the_backlog() {
    const MESSAGES: usize = 2000;
    const LIMIT_KIB: u64 = 32 * 1024;
    let node = shared_node();
    let q = Queue::new(node);
    let pad = "x".repeat(400);
    let lines: Vec<String> = (0..MESSAGES)
        .map(|m| {
            let docs: Vec<String> = (0..100)
                .map(|i| format!("{{\"m\":{m},\"i\":{i},\"pad\":\"{pad}\"}}"))
                .collect();
            format!("[{}]", docs.join(","))
        })
        .collect();
    let backlog: usize = lines.iter().map(String::len).sum();
    q.publish(&lines, "mem");
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&q.config)
        .args(["--idle-exit", "3", "-q"])
        .stdout(Stdio::piped())
        .spawn();
    let pid = run.id();
    // Counted while read: the output is not kept.
    let out = run.take_stdout();
    let counting = std::thread::spawn(move || BufReader::new(out).lines().count());
    let mut peak = 0u64;
    let hwm = || -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    // VmHWM is the high-water mark: read while it runs (its last 3 s are
    // idle, after every message), it is the peak.
    while run.running() {
        if let Some(k) = hwm() {
            peak = peak.max(k);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = run.wait_status(RUN);
    assert_eq!(status.code(), Some(0), "{}", run.stderr_so_far());
    assert_eq!(counting.join().expect("counter"), MESSAGES * 100);
    assert!(peak > 0, "no VmHWM read");
    assert!(
        peak <= LIMIT_KIB,
        "peak RSS {peak} KiB over {LIMIT_KIB} KiB for a backlog of {backlog} bytes"
    );
    assert!(backlog as u64 > 2 * LIMIT_KIB * 1024, "{backlog} bytes");
    eprintln!("peak RSS {peak} KiB for a backlog of {backlog} bytes");
}

#[test]
fn sigterm_and_sigint_stop_after_acknowledging_or_storing_what_was_written() {
    // Queue, SIGTERM: 143, everything written is acknowledged.
    let node = shared_node();
    let q = Queue::new(node);
    let docs = parsed();
    let lines = arrays(&docs, 100);
    q.publish(&lines, "term");
    let want = docs.lines().count();
    let mut run = program(CONSUME).arg("-c").arg(&q.config).spawn();
    wait_until("every document written", RUN, || {
        run.stdout_so_far().lines().count() == want
    });
    run.term();
    let status = run.wait_status(RUN);
    let err = run.stderr_so_far();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(
        err.contains("stopping: acknowledging what was written"),
        "{err}"
    );
    assert_eq!(multiset(&run.stdout_so_far()), multiset(&docs));
    assert_eq!(ready(node, &q.name), 0);

    // Stream, SIGINT: 130, the offset of everything written is stored.
    let node = stream_node();
    let s = Stream::new(node);
    s.ship(D1);
    let want = parsed_dir(D1).lines().count();
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&s.config)
        .args(["--name", "int"])
        .spawn();
    wait_until("every document written", RUN, || {
        run.stdout_so_far().lines().count() == want
    });
    run.signal(libc::SIGINT);
    let status = run.wait_status(RUN);
    let err = run.stderr_so_far();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopping: storing the offset of what was written"),
        "{err}"
    );
    let out = s.consume(&["--name", "int", "--idle-exit", "2"]);
    assert_status(&out, 0, "after SIGINT");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn a_stream_broker_restart_while_consuming_loses_and_repeats_nothing() {
    let mut node = RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    });
    let s = Stream::new(&node);
    s.ship(D1);
    let docs = parsed_dir(D1);
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&s.config)
        .args(["--name", "r", "--prefetch", "5", "--idle-exit", "5"])
        .args(["--retries", "20"])
        .stdout(Stdio::piped())
        .spawn();
    let mut reader = BufReader::new(run.take_stdout());
    let mut got = String::new();
    for _ in 0..100 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0);
        got.push_str(&line);
    }
    // It is blocked on the pipe, mid-way through the stream.
    node.stop_app();
    let reading = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        rest
    });
    wait_until("the reader noticed", RUN, || {
        run.stderr_so_far().contains("reconnecting")
    });
    node.start_app();
    let status = run.wait_status(RUN);
    got.push_str(&reading.join().expect("reader"));
    let err = run.stderr_so_far();
    assert_eq!(status.code(), Some(0), "{err}");
    // The reader continues after the last message it returned: nothing
    // lost, nothing twice.
    assert_eq!(multiset(&got), multiset(&docs), "{err}");
    let out = s.consume(&["--name", "r", "--idle-exit", "2"]);
    assert_status(&out, 0, "after the restart");
    assert_eq!(text(&out.stdout), "");
}

/// The commands of the README's `tstat-consume` section, one by one as
/// written, in a directory holding the `config.ini` (a queue with flows),
/// `stream.ini` (a stream with flows) and `queue.ini` they name.
#[test]
fn the_readme_examples_work_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Reading back: `tstat-consume`")
        .nth(1)
        .expect("the README has the tstat-consume section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    let commands: Vec<String> = block
        .replace("\\\n", "")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(commands.len(), 4, "{commands:?}");

    let node = stream_node();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let queue = unique("readme_q");
    write_private(&cwd.join("config.ini"), &node.config(&queue, ""));
    let bridged = unique("readme_bridge");
    write_private(&cwd.join("queue.ini"), &node.config(&bridged, ""));
    let s = Stream::new(node);
    std::fs::copy(&s.config, cwd.join("stream.ini")).unwrap();
    s.ship(D1);
    let q = Queue {
        name: queue.clone(),
        config: cwd.join("config.ini"),
        _dir: tempfile::tempdir().unwrap(),
    };
    let lines = arrays(&parsed(), 100);
    q.publish(&lines, "readme");

    let path = format!(
        "{}:{}",
        common::run::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |cmd: &str| {
        command("bash")
            .args(["-o", "pipefail", "-c", cmd])
            .current_dir(cwd)
            .env("PATH", &path)
            .deadline(RUN)
    };
    // The queue, through jq.
    let out = sh(&commands[0]).run();
    assert_status(&out, 0, &commands[0]);
    // jq writes numbers its own way (1.0 as 1): count the documents.
    let through_jq = text(&out.stdout);
    assert_eq!(through_jq.lines().count(), parsed().lines().count());
    assert!(
        through_jq
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
    );
    // The stream by name, into a file.
    let out = sh(&commands[1]).run();
    assert_status(&out, 0, &commands[1]);
    let file = std::fs::read_to_string(cwd.join("flows.ndjson")).unwrap();
    assert_eq!(multiset(&file), multiset(&parsed_dir(D1)));
    // Top talkers: ten lines of bits and an address.
    let out = sh(&commands[2]).run();
    assert_status(&out, 0, &commands[2]);
    let talkers = text(&out.stdout);
    assert_eq!(talkers.lines().count(), 10, "{talkers}");
    assert!(
        talkers.lines().all(|l| l.split('\t').count() == 2),
        "{talkers}"
    );
    // The bridge runs until stopped: every message of the stream reaches
    // the queue, then SIGTERM ends both.
    let all = s.consume(&["--from", "first", "--idle-exit", "2", "--arrays", "-q"]);
    assert_status(&all, 0, "counting the stream's messages");
    let want = text(&all.stdout).lines().count();
    // In a session of its own: SIGTERM to the shell stops the whole
    // pipeline (both programs end cleanly), nothing is left running.
    let script = format!(
        "trap 'trap - TERM; kill -TERM 0' TERM; {} & wait",
        commands[3]
    );
    let mut bridge = command("setsid")
        .args(["bash", "-o", "pipefail", "-c", &script])
        .current_dir(cwd)
        .env("PATH", &path)
        .spawn();
    wait_until("the bridge filled the queue", RUN, || {
        ready(node, &bridged) as usize >= want
    });
    bridge.term();
    bridge.wait_status(RUN);
    let got = node.get_n(&bridged, want, RUN);
    let bodies: Vec<&[u8]> = got.iter().map(|m| m.body.as_slice()).collect();
    let docs: String = bodies
        .iter()
        .flat_map(|b| {
            serde_json::from_slice::<Vec<Value>>(b)
                .expect("an array")
                .into_iter()
                .map(|d| format!("{d}\n"))
        })
        .collect();
    assert_eq!(multiset(&docs), multiset(&parsed_dir(D1)));
}

/// A reader that stops reading stdout for a while (longer than a few
/// heartbeats) keeps its stream connection: heartbeats are answered while
/// a write blocks, so nothing reconnects and nothing repeats.
#[test]
fn a_stalled_stdout_does_not_cost_the_stream_connection() {
    let node = stream_node();
    let s = Stream::new(node);
    s.ship(D1);
    let mut run = program(CONSUME)
        .arg("-c")
        .arg(&s.config)
        .args(["--name", "slow", "--heartbeat", "1", "--idle-exit", "3"])
        .stdout(Stdio::piped())
        .spawn();
    let mut reader = BufReader::new(run.take_stdout());
    let mut got = String::new();
    for _ in 0..50 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).expect("read") > 0);
        got.push_str(&line);
    }
    // The stall itself is the fault: the program is blocked writing for
    // five heartbeat intervals.
    std::thread::sleep(Duration::from_secs(5));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("read");
    got.push_str(&rest);
    let status = run.wait_status(RUN);
    let err = run.stderr_so_far();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("reconnecting"), "{err}");
    assert_eq!(multiset(&got), multiset(&parsed_dir(D1)), "{err}");
}
