//! tstat-rabbit against a private RabbitMQ node shared by the tests of this
//! file (each uses its own queue): the happy path compared with the golden
//! flows, message properties, resume from --progress, unroutable messages,
//! login and connection failures, failover, config errors and queue options.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::rabbit::{
    RabbitNode, confirmed_count, free_ports, shared_node as node, unique, write_private,
};
use common::run::{program, text, wait_until};
use serde_json::Value;

const GOLDEN: &str = "tests/fixtures/synthetic/expected.bytes0.sensor-s.instance-1.ndjson";
const RUN_DEADLINE: Duration = Duration::from_secs(120);
const READ_DEADLINE: Duration = Duration::from_secs(60);

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes a file only its owner can read (a config with a password in
    /// it is otherwise warned about).
    fn write(&self, name: &str, text: &str) -> PathBuf {
        write_private(&self.dir.path().join(name), text)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn run(config: &Path, args: &[&str], stdin: &[u8]) -> Output {
    program("tstat-rabbit")
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(stdin)
        .deadline(RUN_DEADLINE)
        .run()
}

fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// The `list_queues` row of `queue` (name first, then `columns`).
fn listed(node: &RabbitNode, queue: &str, columns: &[&str]) -> Vec<String> {
    let rows = node.list_queues(&[&["name"], columns].concat());
    rows.iter()
        .find(|r| r.first().map(String::as_str) == Some(queue))
        .cloned()
        .unwrap_or_else(|| panic!("queue {queue} not listed: {rows:?}"))
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr:\n{}",
        stderr(out)
    );
}

/// The golden flows and the same flows as JSON arrays of 100, one per line
/// (what tstat-chunk makes of them).
fn golden() -> (Vec<Value>, String) {
    let text = fs::read_to_string(GOLDEN).expect("read golden file");
    let flows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("golden line is JSON"))
        .collect();
    let mut lines = String::new();
    for chunk in flows.chunks(100) {
        lines.push_str(&serde_json::to_string(chunk).expect("serialize chunk"));
        lines.push('\n');
    }
    (flows, lines)
}

fn index_of(id: &str, prefix: &str) -> usize {
    id.strip_prefix(prefix)
        .and_then(|s| s.strip_prefix(':'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("message id {id:?} is not {prefix}:INDEX"))
}

#[test]
fn happy_path_every_flow_arrives_once_with_the_right_properties() {
    let node = node();
    let queue = unique("happy");
    let s = Scratch::new();
    let cfg = s.write("config.ini", &node.config(&queue, ""));
    let (flows, lines) = golden();
    let arrays = lines.lines().count();
    assert!(arrays > 1, "the golden file should give several arrays");

    let out = run(
        &cfg,
        &["--message-id-prefix", "s:2026_03_01_00_00.out"],
        lines.as_bytes(),
    );
    assert_exit(&out, 0);

    let got = node.drain(&queue, READ_DEADLINE);
    assert_eq!(got.len(), arrays, "one message per input line");
    let mut all = Vec::new();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(index_of(&m.message_id(), "s:2026_03_01_00_00.out"), i);
        let p = &m.properties;
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(
            p.app_id().as_ref().map(|s| s.as_str()),
            Some("tstat-transport")
        );
        let ts = p.timestamp().expect("timestamp set");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(ts <= now && ts + 3600 > now, "timestamp {ts} is now-ish");
        let array: Value = serde_json::from_slice(&m.body).expect("body is JSON");
        let Value::Array(items) = array else {
            panic!("body is not an array")
        };
        assert!(items.len() <= 100);
        all.extend(items);
    }
    assert_eq!(all.len(), flows.len());
    // serde_json compares number kinds too (1 != 1.0).
    for (i, (a, b)) in all.iter().zip(&flows).enumerate() {
        assert_eq!(a, b, "flow {i} differs from the golden file");
    }
}

#[test]
fn non_persistent_config_and_no_prefix_give_transient_messages_without_id() {
    let node = node();
    let queue = unique("transient");
    let s = Scratch::new();
    let cfg = node
        .config(&queue, "")
        .replace("exchange =\n", "exchange =\npersistent = false\n");
    let cfg = s.write("config.ini", &cfg);
    let out = run(&cfg, &[], b"[1]\n[2]\n");
    assert_exit(&out, 0);
    let got = node.drain(&queue, READ_DEADLINE);
    assert_eq!(got.len(), 2);
    for m in &got {
        assert_ne!(*m.properties.delivery_mode(), Some(2));
        assert_eq!(*m.properties.message_id(), None);
    }
}

#[test]
fn progress_file_counts_confirmed_lines_and_a_rerun_skips_them() {
    let node = node();
    let queue = unique("progress");
    let s = Scratch::new();
    let cfg = s.write("config.ini", &node.config(&queue, ""));
    let progress = s.path("progress");
    let p = progress.to_str().expect("utf-8 path");
    let first: String = (0..10).map(|i| format!("[{i}]\n")).collect();
    let out = run(
        &cfg,
        &["--message-id-prefix", "p", "--progress", p],
        first.as_bytes(),
    );
    assert_exit(&out, 0);
    assert_eq!(confirmed_count(&progress), 10);

    // The same input grew by five lines: only those are sent.
    let second: String = (0..15).map(|i| format!("[{i}]\n")).collect();
    let out = run(
        &cfg,
        &["--message-id-prefix", "p", "--progress", p, "-v"],
        second.as_bytes(),
    );
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("10 skipped from progress"),
        "{}",
        stderr(&out)
    );
    assert_eq!(common::rabbit::confirmed_count(&progress), 15);
    let ids: Vec<usize> = node
        .drain(&queue, READ_DEADLINE)
        .iter()
        .map(|m| index_of(&m.message_id(), "p"))
        .collect();
    assert_eq!(ids, (0..15).collect::<Vec<_>>(), "each line exactly once");
}

#[test]
fn empty_input_publishes_nothing_and_succeeds() {
    let node = node();
    let queue = unique("empty");
    let s = Scratch::new();
    let cfg = s.write("config.ini", &node.config(&queue, ""));
    let out = run(&cfg, &[], b"");
    assert_exit(&out, 0);
    assert!(node.drain(&queue, READ_DEADLINE).is_empty());
}

#[test]
fn unroutable_message_fails_naming_exchange_and_routing_key() {
    let node = node();
    let key = unique("nobody_binds_this");
    let s = Scratch::new();
    let cfg = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = guest\npassword = guest\n\
         queue =\nrouting_key = {key}\nexchange = amq.direct\n",
        node.port
    );
    let cfg = s.write("config.ini", &cfg);
    let out = run(&cfg, &["--retries", "0"], b"[1]\n[2]\n");
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("tstat-rabbit: error: line 1 (index 0) was not confirmed"),
        "{err}"
    );
    assert!(err.contains("exchange 'amq.direct'"), "{err}");
    assert!(err.contains(&format!("routing key '{key}'")), "{err}");
    assert!(err.contains("NO_ROUTE"), "{err}");
}

#[test]
fn wrong_password_fails_fast_naming_user_and_host_but_not_the_password() {
    let node = node();
    let user = unique("tstat_user");
    node.add_user(&user, "the-right-one");
    let s = Scratch::new();
    let secret = "Wr0ng-Pa55word-xyz";
    let cfg = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = {user}\npassword = {secret}\n\
         queue = {q}\nrouting_key = {q}\nexchange =\n",
        node.port,
        q = unique("auth")
    );
    let cfg = s.write("config.ini", &cfg);
    // Fails fast: the refusal itself is the error, not a timeout waited out
    // or a retry (one pass over the host, no reconnecting).
    let out = run(&cfg, &["--connect-timeout", "5", "-v"], b"[1]\n");
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(!err.contains("no answer within"), "{err}");
    assert!(!err.contains("reconnecting"), "{err}");
    assert!(err.contains(&format!("user '{user}'")), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", node.port)), "{err}");
    assert!(err.contains("login refused"), "{err}");
    assert!(!err.contains(secret), "the password leaked: {err}");

    // The right password works (the user is real).
    let good = s.write(
        "good.ini",
        &fs::read_to_string(&cfg)
            .expect("read config")
            .replace(secret, "the-right-one"),
    );
    assert_exit(&run(&good, &[], b"[1]\n"), 0);
}

#[test]
fn closed_port_is_a_clear_error_at_once() {
    let port = free_ports(1)[0];
    let s = Scratch::new();
    let cfg = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {port}\nusername = guest\npassword = guest\n\
         queue = q\nrouting_key = q\nexchange =\n"
    );
    let cfg = s.write("config.ini", &cfg);
    // The refusal is the whole error (the exact text), not a timeout.
    let out = run(&cfg, &["--connect-timeout", "5"], b"[1]\n");
    assert_exit(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "tstat-rabbit: error: cannot connect to RabbitMQ: 127.0.0.1:{port}: connection refused \
             (is the broker running there, and are host and port right in {}?)",
            cfg.display()
        )
    );
}

#[test]
fn silent_host_times_out_within_the_connect_timeout() {
    // A listener that never accepts: the TCP handshake completes in the
    // kernel backlog, the AMQP handshake never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let s = Scratch::new();
    let cfg = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {port}\nusername = guest\npassword = guest\n\
         queue = q\nrouting_key = q\nexchange =\n"
    );
    let cfg = s.write("config.ini", &cfg);
    let started = Instant::now();
    let out = run(&cfg, &["--connect-timeout", "1.5"], b"[1]\n");
    let took = started.elapsed();
    assert_exit(&out, 1);
    // Only a floor: the timeout was waited out, not given up early. A busy
    // machine can only make it longer; the run's deadline stops a hang.
    assert!(took >= Duration::from_millis(1400), "took {took:?}");
    assert!(
        stderr(&out).contains(&format!(
            "cannot connect to RabbitMQ: 127.0.0.1:{port}: no answer within 1.5 s"
        )),
        "{}",
        stderr(&out)
    );
    drop(silent);
}

#[test]
fn first_host_down_second_up_delivers_through_the_second() {
    let node = node();
    let down = free_ports(1)[0];
    let queue = unique("failover");
    let s = Scratch::new();
    let cfg = node.config(&queue, "").replace(
        "host = 127.0.0.1\n",
        &format!("host = 127.0.0.1:{down},127.0.0.1:{}\n", node.port),
    );
    let cfg = s.write("config.ini", &cfg);
    let out = run(&cfg, &["--message-id-prefix", "f"], b"[1]\n[2]\n[3]\n");
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot use 127.0.0.1:{down}: connection refused; trying the next host"
        )),
        "{err}"
    );
    let ids: Vec<String> = node
        .drain(&queue, READ_DEADLINE)
        .iter()
        .map(|m| m.message_id())
        .collect();
    assert_eq!(ids, ["f:0", "f:1", "f:2"]);
}

#[test]
fn config_errors_are_all_reported_before_any_connection() {
    // A listener that would see any connection attempt.
    let watch = TcpListener::bind("127.0.0.1:0").expect("bind");
    watch.set_nonblocking(true).expect("nonblocking");
    let port = watch.local_addr().expect("addr").port();
    let s = Scratch::new();
    let cfg = s.write(
        "bad.ini",
        &format!(
            "[rabbit]\nhost = 127.0.0.1,bad host!\nport = {port}\nusername = guest\n\
             exchange =\nqueue = q\nuse_ssl = true\n[ssl_options]\ncert_reqs = MAYBE\n"
        ),
    );
    let out = run(&cfg, &[], b"[1]\n");
    assert_exit(&out, 2);
    let err = stderr(&out);
    let file = cfg.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    for (section, key) in [
        ("rabbit", "password"),
        ("rabbit", "host"),
        ("ssl_options", "cert_reqs"),
    ] {
        let want = format!("tstat-rabbit: error: {file}: [{section}] {key}: ");
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "no line starting with {want:?} in:\n{err}"
        );
    }
    assert!(
        lines.iter().all(|l| l.starts_with("tstat-rabbit: error: ")),
        "{err}"
    );
    assert!(
        matches!(watch.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "tstat-rabbit connected although the config was invalid"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = run(Path::new("x.ini"), &["--window", "0"], b"");
    assert_exit(&out, 2);
    assert!(
        stderr(&out).starts_with("tstat-rabbit: error: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn quorum_queue_is_declared_from_queue_options() {
    let node = node();
    let queue = unique("quorum");
    let s = Scratch::new();
    let cfg = s.write(
        "config.ini",
        &node.config(
            &queue,
            "[rabbit_queue_options]\ndurable = true\nx-queue-type = quorum\n",
        ),
    );
    let out = run(&cfg, &[], b"[1]\n[2]\n");
    assert_exit(&out, 0);
    let row = listed(node, &queue, &["type", "durable", "messages"]);
    assert_eq!(row[1], "quorum", "{row:?}");
    assert_eq!(row[2], "true", "{row:?}");
    assert_eq!(node.drain(&queue, READ_DEADLINE).len(), 2);

    // Declaring it again with the same options is fine.
    assert_exit(&run(&cfg, &[], b"[3]\n"), 0);
}

/// RabbitMQ refuses x-single-active-consumer unless it is a boolean
/// (regression: `true` was sent as a string).
#[test]
fn boolean_queue_argument_is_accepted_by_the_broker() {
    let node = node();
    let queue = unique("sac");
    let s = Scratch::new();
    let cfg = s.write(
        "config.ini",
        &node.config(
            &queue,
            "[rabbit_queue_options]\ndurable = true\nx-single-active-consumer = true\n",
        ),
    );
    let out = run(&cfg, &[], b"[1]\n");
    assert_exit(&out, 0);
    let row = listed(node, &queue, &["arguments"]);
    assert!(
        row[1].contains("x-single-active-consumer") && row[1].contains("true"),
        "{row:?}"
    );
    assert_eq!(node.drain(&queue, READ_DEADLINE).len(), 1);
}

#[test]
fn durable_mismatch_is_explained_with_the_config_fix() {
    let node = node();
    let queue = unique("mismatch");
    let s = Scratch::new();
    // Default options: the queue is created durable.
    let plain = s.write("plain.ini", &node.config(&queue, ""));
    assert_exit(&run(&plain, &[], b"[1]\n"), 0);

    let cfg = s.write(
        "config.ini",
        &node.config(&queue, "[rabbit_queue_options]\ndurable = false\n"),
    );
    let out = run(&cfg, &[], b"[2]\n");
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "tstat-rabbit: error: queue '{queue}' does not match the config: the existing queue has durable = true but the config asks for durable = false: set durable = true in [rabbit_queue_options]"
        )),
        "{err}"
    );
    // Nothing was published by the failed run.
    assert_eq!(node.drain(&queue, READ_DEADLINE).len(), 1);
}

#[test]
fn missing_queue_is_created_durable_and_bound_to_the_exchange() {
    let node = node();
    let queue = unique("bound");
    let s = Scratch::new();
    let cfg = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = guest\npassword = guest\n\
         queue = {queue}\nrouting_key = {queue}.key\nexchange = amq.direct\n",
        node.port
    );
    let cfg = s.write("config.ini", &cfg);
    let out = run(&cfg, &["--retries", "0"], b"[1]\n[2]\n");
    assert_exit(&out, 0);
    let rows = node.list_queues(&["name", "durable"]);
    assert!(
        rows.iter()
            .any(|r| r.first() == Some(&queue) && r.get(1).map(String::as_str) == Some("true")),
        "{rows:?}"
    );
    assert_eq!(node.drain(&queue, READ_DEADLINE).len(), 2);
}

#[test]
fn sigterm_waits_for_confirms_saves_progress_and_exits_143() {
    use std::io::Write;
    let node = node();
    let queue = unique("sigterm");
    let s = Scratch::new();
    let cfg = s.write("config.ini", &node.config(&queue, ""));
    let progress = s.path("progress");
    let mut run = program("tstat-rabbit")
        .arg("-c")
        .arg(&cfg)
        .arg("--progress")
        .arg(&progress)
        .stdin_pipe()
        .stdout(Stdio::null())
        .spawn();
    // Ten lines, and stdin stays open: the run is waiting for more.
    let mut stdin = run.stdin();
    stdin
        .write_all("[1]\n".repeat(10).as_bytes())
        .expect("write stdin");
    stdin.flush().expect("flush");
    wait_until("ten confirms", Duration::from_secs(60), || {
        confirmed_count(&progress) == 10
    });
    run.term();
    let out = run.wait(RUN_DEADLINE);
    drop(stdin);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        err.contains(&format!(
            "tstat-rabbit: error: interrupted: 10 lines confirmed, recorded in {}",
            progress.display()
        )),
        "{err}"
    );
    assert_eq!(confirmed_count(&progress), 10);
    assert_eq!(node.drain(&queue, READ_DEADLINE).len(), 10);
}

#[test]
fn parse_chunk_rabbit_pipeline_delivers_the_golden_flows() {
    let node = node();
    let queue = unique("pipeline");
    let s = Scratch::new();
    let cfg = s.write("config.ini", &node.config(&queue, ""));
    let mut parse = program("tstat-parse")
        .args(["--bytes", "0", "--sensor", "s", "--instance", "1"])
        .arg("tests/fixtures/synthetic/2026_03_01_00_00.out")
        .arg("tests/fixtures/synthetic/2026_03_01_01_00.out")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut chunk = program("tstat-chunk")
        .stdin_from(parse.take_stdout())
        .stdout(Stdio::piped())
        .spawn();
    let rabbit = program("tstat-rabbit")
        .arg("-c")
        .arg(&cfg)
        .args(["--message-id-prefix", "s:pipe"])
        .stdin_from(chunk.take_stdout())
        .stdout(Stdio::null())
        .spawn();
    let out = rabbit.wait(RUN_DEADLINE);
    let parse_status = parse.wait_status(RUN_DEADLINE);
    let chunk_status = chunk.wait_status(RUN_DEADLINE);
    let (rabbit_status, err) = (out.status, text(&out.stderr));
    assert!(parse_status.success() && chunk_status.success());
    assert!(rabbit_status.success(), "{err}");

    let (flows, lines) = golden();
    let got = node.drain(&queue, READ_DEADLINE);
    assert_eq!(got.len(), lines.lines().count());
    let mut all = Vec::new();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.message_id(), format!("s:pipe:{i}"));
        match serde_json::from_slice(&m.body).expect("JSON body") {
            Value::Array(items) => all.extend(items),
            other => panic!("not an array: {other}"),
        }
    }
    assert_eq!(all, flows);
}
