//! `tstat_send --check` (design §13.1) against a private TLS-capable broker:
//! one line per check, ✓ or ✗ with the fix, exit 0 only when all pass, and
//! nothing shipped, marked or created (not even the queue).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::rabbit::{RabbitNode, shared_tls_node as node, unique, write_private};
use common::run::{bin, command, program, text};
use common::trees::{SETTLED, copy_fixture};

const DEADLINE: Duration = Duration::from_secs(120);

/// A tree with one finished Tstat directory (logs three hours old).
fn tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    copy_fixture(
        "real-3.3/2024_06_08_09_10.out",
        &root.join("2024_06_08_09_10.out"),
        Some(SETTLED),
    );
    root
}

fn config(dir: &Path, body: &str) -> PathBuf {
    write_private(&dir.join("config.ini"), body)
}

fn plain(node: &RabbitNode, queue: &str, password: &str, extra: &str) -> String {
    format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = guest\npassword = {password}\n\
         queue = {queue}\nrouting_key = {queue}\nexchange =\n{extra}",
        node.port
    )
}

fn check(root: &Path, cfg: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = program("tstat_send")
        .arg("--check")
        .arg("-d")
        .arg(root)
        .arg("-c")
        .arg(cfg)
        .args(["--connect-timeout", "5"])
        .args(extra)
        .deadline(DEADLINE)
        .run();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn queue_exists(node: &RabbitNode, queue: &str) -> bool {
    node.list_queues(&["name"])
        .iter()
        .any(|row| row.first().map(String::as_str) == Some(queue))
}

#[test]
fn a_good_setup_passes_every_check_and_changes_nothing() {
    let node = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tree(tmp.path());
    let queue = unique("check_ok");
    let cfg = config(tmp.path(), &plain(node, &queue, "guest", ""));
    let metrics = tmp.path().join("tstat.prom");
    let (code, out, err) = check(
        &root,
        &cfg,
        &["--metrics-file", metrics.to_str().expect("utf-8")],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    for what in [
        "config", "broker", "queue", "tree", "ready", "writable", "metrics", "lock",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("✓ {what}: "))),
            "{what} passes:\n{out}"
        );
    }
    assert!(
        out.contains("does not exist yet; the first run creates it"),
        "{out}"
    );
    // The ids a run gives, with the tree's identity.
    let tag = tstat_transport::identity::tree_tag(&root);
    assert!(
        out.contains("✓ ids: ") && out.contains(&format!("@{tag}:DIRNAME:INDEX (tree {tag}: ")),
        "{out}"
    );
    assert!(
        out.contains("1 directory (0.1 MB of logs), oldest 2024_06_08_09_10.out"),
        "{out}"
    );
    assert!(
        !queue_exists(node, &queue),
        "the queue is not created by --check"
    );
    let d = root.join("2024_06_08_09_10.out");
    assert!(!d.join(".processed").exists() && !d.join(".progress").exists());
    assert!(!metrics.exists(), "no metrics file written");
}

#[test]
fn each_problem_is_a_cross_with_what_to_do() {
    let node = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tree(tmp.path());

    // Wrong password.
    let queue = unique("check_pw");
    let cfg = config(tmp.path(), &plain(node, &queue, "not-the-password", ""));
    let (code, out, _) = check(&root, &cfg, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ broker: login refused: user 'guest'"),
        "{out}"
    );
    assert!(out.contains("check username, password and vhost"), "{out}");
    assert!(
        !out.contains("not-the-password"),
        "never the password:\n{out}"
    );
    assert!(
        out.contains("✓ tree: "),
        "the other checks still run:\n{out}"
    );

    // The queue exists with other properties (a 406, explained).
    let queue = unique("check_406");
    common::flows::with_channel(&node.url(), DEADLINE, async |ch| {
        ch.queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare a transient queue")
    });
    let cfg = config(
        tmp.path(),
        &plain(
            node,
            &queue,
            "guest",
            "[rabbit_queue_options]\ndurable = true\n",
        ),
    );
    let (code, out, _) = check(&root, &cfg, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "✗ queue: queue '{queue}' does not match the config"
        )),
        "{out}"
    );

    // TLS with a CA that did not sign the broker's certificate.
    let certs = node.certs.as_ref().expect("certs");
    let cfg = config(
        tmp.path(),
        &format!(
            "[rabbit]\nhost = localhost\nport = {}\nusername = guest\npassword = guest\n\
             use_ssl = true\nqueue = q\nrouting_key = q\nexchange =\n[ssl_options]\nca_certs = {}\n",
            node.tls_port.expect("tls port"),
            certs.other_ca.display()
        ),
    );
    let (code, out, _) = check(&root, &cfg, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ broker: cannot connect to RabbitMQ: localhost:"),
        "{out}"
    );
    assert!(out.to_lowercase().contains("certificate"), "{out}");

    // A missing metrics directory.
    let queue = unique("check_m");
    let cfg = config(tmp.path(), &plain(node, &queue, "guest", ""));
    let (code, out, _) = check(&root, &cfg, &["--metrics-file", "/nonexistent-dir/x.prom"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ metrics: /nonexistent-dir/x.prom: cannot write in /nonexistent-dir: No such file or directory"),
        "{out}"
    );

    // An empty root.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let (code, out, _) = check(&empty, &cfg, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("holds no Tstat directory"), "{out}");
    assert!(
        !out.contains("lock"),
        "nothing written in a directory that is not a tree:\n{out}"
    );
    assert!(!empty.join(".tstat_send.lock").exists());

    // A config error: exit 2, the checks that need no broker still run.
    let bad = config(tmp.path(), "[rabbit]\nhost = 127.0.0.1\n");
    let (code, out, err) = check(&root, &bad, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("✗ config: ") && out.contains("✓ tree: "),
        "{out}"
    );
}

#[test]
fn an_unwritable_tree_is_a_cross() {
    let node = node();
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let root = tree(tmp.path());
    let queue = unique("check_ro");
    let cfg = config(tmp.path(), &plain(node, &queue, "guest", ""));
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("tstat_send"))
        .args(["--check", "-d"])
        .arg(&root)
        .arg("-c")
        .arg(&cfg)
        .deadline(DEADLINE)
        .run();
    let text = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("✗ writable: ") && text.contains("Permission denied"),
        "{text}"
    );
    assert!(text.contains("✗ lock: cannot lock"), "{text}");
}

/// Without --check: a root without any Tstat directory is said once, and
/// -v lines read like the program's own.
#[test]
fn a_run_over_an_empty_root_says_so_and_verbose_lines_are_plain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = program("tstat_send")
        .args(["-N", "-v", "-d"])
        .arg(tmp.path())
        .run();
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("holds no Tstat directory") && err.contains("tstat_send --check"),
        "{err}"
    );
    for line in err.lines() {
        assert!(line.starts_with("tstat_send: "), "{line:?} in\n{err}");
    }
    assert!(err.contains("tstat_send: 0 ready directories"), "{err}");
}
