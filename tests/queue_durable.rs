//! A queue that cannot keep what it confirms: persistent messages in a
//! queue that is not durable are lost on a broker restart while the
//! directories stay marked as shipped. `tstat_send` and `--check` refuse
//! such a queue — made by someone else, by an earlier config, or declared
//! by this config — before anything is published or marked; durable,
//! quorum and stream queues made by others pass as before. One private
//! node for the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::flows::{queue_len, with_channel};
use common::rabbit::{RabbitNode, shared_node as node, unique, write_private};
use common::run::{program, text};
use common::trees::{SETTLED, copy_fixture};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

const DEADLINE: Duration = Duration::from_secs(120);
const DIR: &str = "2026_03_01_00_00.out";

/// A tree with one finished Tstat directory; returns the root.
fn tree(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    copy_fixture(&format!("synthetic/{DIR}"), &root.join(DIR), Some(SETTLED));
    root
}

/// Declares `queue` as another program would, with `x-queue-type` when
/// given.
fn declare(node: &RabbitNode, queue: &str, durable: bool, queue_type: Option<&str>) {
    let mut args = FieldTable::default();
    if let Some(t) = queue_type {
        args.insert("x-queue-type".into(), AMQPValue::LongString(t.into()));
    }
    with_channel(&node.url(), DEADLINE, async |ch| {
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .expect("declare the queue")
    });
}

fn queue_exists(node: &RabbitNode, queue: &str) -> bool {
    node.list_queues(&["name"])
        .iter()
        .any(|row| row.first().map(String::as_str) == Some(queue))
}

fn tstat_send(root: &Path, cfg: &Path, extra: &[&str]) -> Output {
    program("tstat_send")
        .args(["--bytes", "0", "--connect-timeout", "5", "-d"])
        .arg(root)
        .arg("-c")
        .arg(cfg)
        .args(extra)
        .deadline(DEADLINE)
        .run()
}

/// The `queue` line of `tstat_send --check`, and the exit status.
fn check_queue_line(root: &Path, cfg: &Path) -> (Option<i32>, String) {
    let out = tstat_send(root, cfg, &["--check"]);
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(" queue: "))
        .unwrap_or_else(|| panic!("no queue line in:\n{stdout}{}", text(&out.stderr)))
        .to_owned();
    (out.status.code(), line)
}

fn nothing_marked(root: &Path) {
    let d = root.join(DIR);
    assert!(!d.join(".processed").exists(), "{DIR} was marked");
    assert!(!d.join(".progress").exists(), "{DIR} has a record");
}

#[test]
fn a_queue_made_non_durable_by_someone_else_is_refused_before_anything_is_marked() {
    let node = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tree(tmp.path());
    let queue = unique("transient");
    declare(node, &queue, false, None);
    let cfg = write_private(&tmp.path().join("c.ini"), &node.config(&queue, ""));
    let why = format!(
        "cannot publish persistent messages to queue '{queue}': it exists but is not durable, \
         so a broker restart would lose every message confirmed into it: delete it \
         (rabbitmqctl delete_queue {queue}, once its consumers have drained it) so that it is \
         created durable, or set persistent = false in [rabbit] if that loss is acceptable"
    );

    let out = tstat_send(&root, &cfg, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("tstat_send: error: ") && l.ends_with(&why)),
        "no refusal ending in\n{why}\nin:\n{err}"
    );
    nothing_marked(&root);
    assert_eq!(queue_len(node, &queue), 0, "nothing was published");

    let (code, line) = check_queue_line(&root, &cfg);
    assert_eq!(code, Some(1), "{line}");
    assert_eq!(line, format!("✗ queue: {why}"));

    // passive = true only looks, and still sees it.
    let cfg = write_private(
        &tmp.path().join("c.ini"),
        &node.config(&queue, "[rabbit_queue_options]\npassive = true\n"),
    );
    let (code, line) = check_queue_line(&root, &cfg);
    assert_eq!((code, line), (Some(1), format!("✗ queue: {why}")));

    // Transient messages are what such a queue can keep: no refusal.
    let cfg = write_private(
        &tmp.path().join("c.ini"),
        &node
            .config(&queue, "")
            .replace("exchange =\n", "exchange =\npersistent = false\n"),
    );
    let (code, line) = check_queue_line(&root, &cfg);
    assert_eq!(line, format!("✓ queue: '{queue}' exists as configured"));
    assert_eq!(code, Some(0));
}

#[test]
fn durable_classic_quorum_and_stream_queues_made_by_others_pass() {
    let node = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tree(tmp.path());
    for queue_type in [None, Some("quorum"), Some("stream")] {
        let queue = unique(queue_type.unwrap_or("classic"));
        declare(node, &queue, true, queue_type);
        let cfg = write_private(&tmp.path().join("c.ini"), &node.config(&queue, ""));
        let (code, line) = check_queue_line(&root, &cfg);
        assert_eq!(line, format!("✓ queue: '{queue}' exists as configured"));
        assert_eq!(code, Some(0), "{queue_type:?}");
    }
    // A real run into a quorum queue: the check's refused declaration
    // (x-queue-type differs) leaves the publishing channel alone.
    let queue = unique("quorum_run");
    declare(node, &queue, true, Some("quorum"));
    let cfg = write_private(&tmp.path().join("c.ini"), &node.config(&queue, ""));
    let out = tstat_send(&root, &cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(root.join(DIR).join(".processed").exists());
    assert!(queue_len(node, &queue) > 0);
}

#[test]
fn a_config_that_declares_the_queue_non_durable_is_refused_and_creates_nothing() {
    let node = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tree(tmp.path());
    let queue = unique("declared_transient");
    // Options without durable = true declare the queue non-durable.
    let cfg = write_private(
        &tmp.path().join("c.ini"),
        &node.config(&queue, "[rabbit_queue_options]\nauto_delete = false\n"),
    );
    let why = format!(
        "cannot publish persistent messages to queue '{queue}': [rabbit_queue_options] declares \
         it non-durable (durable = false or not given), so a broker restart would lose every \
         message confirmed into it: set durable = true in [rabbit_queue_options] (and delete \
         the queue if it exists: rabbitmqctl delete_queue {queue}), or set persistent = false \
         in [rabbit] if that loss is acceptable"
    );
    let out = tstat_send(&root, &cfg, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.ends_with(&why)),
        "no refusal ending in\n{why}\nin:\n{err}"
    );
    assert!(!queue_exists(node, &queue), "the queue was created");
    nothing_marked(&root);
    let (code, line) = check_queue_line(&root, &cfg);
    assert_eq!((code, line), (Some(1), format!("✗ queue: {why}")));

    // It exists non-durable (an earlier config): still refused.
    declare(node, &queue, false, None);
    let out = tstat_send(&root, &cfg, &[]);
    assert!(text(&out.stderr).contains(&why), "{}", text(&out.stderr));
    nothing_marked(&root);

    // The config asks for durable = true: the 406 says to delete it.
    let cfg = write_private(
        &tmp.path().join("c.ini"),
        &node.config(&queue, "[rabbit_queue_options]\ndurable = true\n"),
    );
    let (code, line) = check_queue_line(&root, &cfg);
    assert_eq!(code, Some(1));
    let want = format!(
        "✗ queue: queue '{queue}' does not match the config: the existing queue is not durable \
         but the config asks for durable = true (persistent messages need a durable queue): \
         delete it (rabbitmqctl delete_queue {queue}, once its consumers have drained it) so \
         that it is created durable [broker said: PRECONDITION_FAILED - inequivalent arg \
         'durable' for queue '{queue}' in vhost '/': received 'true' but current is 'false']"
    );
    assert_eq!(line, want);
    nothing_marked(&root);
}
