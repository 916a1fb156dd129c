//! tstat-rabbit's guards against losing or leaking things: a queue deleted
//! during a run stops it with an error instead of being re-created; no log
//! line carries the password, whatever RUST_LOG says; config mistakes that
//! would change behaviour silently (or panic) are errors before any
//! connection; a password in a file others can read is warned about; the
//! -v dump escapes control characters. One private node for the file; a
//! test that breaks connections does it only for its own user.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::rabbit::{RabbitNode, confirmed_count, shared_node as node, write_private};
use common::run::{program, text, wait_until};

const DEADLINE: Duration = Duration::from_secs(120);

fn lines(range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("[{{\"i\":{i}}}]\n")).collect()
}

fn write_config(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let p = write_private(&dir.join("config.ini"), text);
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod config");
    p
}

/// `node`'s config for `queue`, logging in as `user`.
fn user_config(node: &RabbitNode, queue: &str, user: &str, password: &str) -> String {
    node.config(queue, "")
        .replace("username = guest", &format!("username = {user}"))
        .replace("password = guest", &format!("password = {password}"))
}

fn run(config: &Path, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    program("tstat-rabbit")
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(stdin)
        .deadline(DEADLINE)
        .run()
}

fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// A port nothing listens on: connecting fails at once.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn queues(node: &RabbitNode) -> Vec<String> {
    node.list_queues(&["name"])
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect()
}

#[test]
fn queue_deleted_during_the_run_stops_it_with_an_error_and_is_not_recreated() {
    const QUEUE: &str = "guards_vanishing";
    const FIRST: usize = 300;
    let node = node();
    node.add_user("vanish", "vanish-pw");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &user_config(node, QUEUE, "vanish", "vanish-pw"),
        0o600,
    );
    let progress = dir.path().join("progress");
    let mut run = program("tstat-rabbit")
        .arg("-c")
        .arg(&cfg)
        .arg("--progress")
        .arg(&progress)
        .args(["--message-id-prefix", "v", "--retries", "3"])
        .stdin_pipe()
        .stdout(Stdio::null())
        .spawn();
    let mut stdin = run.stdin();
    stdin.write_all(lines(0..FIRST).as_bytes()).expect("feed");
    stdin.flush().expect("flush");
    wait_until(
        "the first lines to be confirmed",
        Duration::from_secs(60),
        || confirmed_count(&progress) == FIRST as u64,
    );
    assert!(queues(node).iter().any(|q| q == QUEUE));

    // The queue goes, with the messages confirmed into it, and the link
    // breaks: the reconnect must not quietly create a new, empty queue.
    node.ctl_ok(&["delete_queue", QUEUE]);
    node.ctl_ok(&["close_all_user_connections", "vanish", "test"]);
    // More input makes the publisher find out; it may stop reading at once.
    let _ = stdin.write_all(lines(FIRST..FIRST + 50).as_bytes());
    drop(stdin);

    let out = run.wait(DEADLINE);
    let (status, err) = (out.status, stderr(&out));
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tstat-rabbit: error: ")
            && last.contains(&format!("queue '{QUEUE}' has disappeared from the broker"))
            && last.contains("probably lost")
            && last.contains("not re-creating it"),
        "{err}"
    );
    assert!(
        !queues(node).iter().any(|q| q == QUEUE),
        "the queue was created again; stderr:\n{err}"
    );
    assert_eq!(
        confirmed_count(&progress),
        FIRST as u64,
        "nothing counts as confirmed after the queue went"
    );
}

#[test]
fn no_log_line_holds_the_password_even_at_trace_level() {
    const QUEUE: &str = "guards_trace";
    const PASSWORD: &str = "Zq7-unique-trace-secret-41";
    let node = node();
    node.add_user("tracer", PASSWORD);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &user_config(node, QUEUE, "tracer", PASSWORD),
        0o600,
    );
    for filter in [
        "trace",
        "lapin=trace,amq_protocol=trace,amq_protocol_types=trace",
        "lapin::channel=trace,lapin::io_loop=trace,lapin::frames=trace,tstat_transport=trace",
    ] {
        let out = run(
            &cfg,
            &["-v"],
            &[("RUST_LOG", filter)],
            lines(0..5).as_bytes(),
        );
        let err = stderr(&out);
        assert!(out.status.success(), "RUST_LOG={filter}:\n{err}");
        for form in secret_forms(PASSWORD) {
            assert!(
                !err.contains(&form),
                "RUST_LOG={filter}: the password is in the log as {form:?}:\n{err}"
            );
        }
        // The filter really took effect: lapin's debug events are there.
        if filter == "trace" {
            assert!(err.contains("lapin"), "no lapin events at all:\n{err}");
        }
    }
    // The wrong password is not printed either (a refused login).
    let bad = write_config(
        dir.path(),
        &fs::read_to_string(&cfg)
            .expect("config")
            .replace(PASSWORD, "Wr0ng-unique-trace-secret-77"),
        0o600,
    );
    let out = run(&bad, &[], &[("RUST_LOG", "trace")], b"[1]\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for form in secret_forms("Wr0ng-unique-trace-secret-77") {
        assert!(!stderr(&out).contains(&form), "{form:?}:\n{}", stderr(&out));
    }
}

/// The ways a debug dump may spell a secret: as text, and as lapin's
/// `LongString([90, 113, …])` byte list (how the login frame is traced).
fn secret_forms(secret: &str) -> [String; 3] {
    let bytes = secret.as_bytes();
    let decimal: Vec<String> = bytes.iter().map(u8::to_string).collect();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    [secret.to_owned(), decimal.join(", "), hex]
}

#[test]
fn config_mistakes_are_all_reported_before_any_connection_and_never_panic() {
    let watch = TcpListener::bind("127.0.0.1:0").expect("bind");
    watch.set_nonblocking(true).expect("nonblocking");
    let port = watch.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let long = "n".repeat(300);
    let cfg = write_config(
        dir.path(),
        &format!(
            "[rabbit]\nhost = 127.0.0.1\nport = {port}\nusername = guest\npassword = guest\n\
             vhost = /{long}\nqueue = {long}\nrouting_key = {long}\nexchange = {long}\n\
             [rabbit_queue_options]\ndurabel = true\nx-queue-type = quorum\n\
             [rabit_queue_options]\ndurable = true\n"
        ),
        0o600,
    );
    let out = run(&cfg, &[], &[], b"[1]\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let file = cfg.display().to_string();
    let want = [
        (
            "[rabbit] vhost",
            "is 301 bytes long; AMQP allows at most 255 bytes",
        ),
        ("[rabbit] queue", "is 300 bytes long"),
        ("[rabbit] routing_key", "is 300 bytes long"),
        ("[rabbit] exchange", "is 300 bytes long"),
        (
            "[rabbit_queue_options] durabel",
            "unknown key (did you mean durable?)",
        ),
        (
            "[rabit_queue_options]",
            "did you mean [rabbit_queue_options]?",
        ),
    ];
    for (place, needle) in want {
        let prefix = format!("tstat-rabbit: error: {file}: {place}: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "no {prefix}…{needle} in:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), want.len(), "{err}");
    assert!(
        matches!(watch.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "tstat-rabbit connected although the config was invalid"
    );
}

#[test]
fn a_password_in_a_file_others_can_read_is_warned_about_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = guest\npassword = PW_IN_FILE\n\
         queue = q\nexchange =\n",
        closed_port()
    );
    let warning = |out: &Output| -> Vec<String> {
        stderr(out)
            .lines()
            .filter(|l| l.contains("[rabbit] password:"))
            .map(str::to_owned)
            .collect()
    };
    let cfg = write_config(dir.path(), &text, 0o644);
    let out = run(&cfg, &["--retries", "0"], &[], b"[1]\n");
    let got = warning(&out);
    assert_eq!(got.len(), 1, "{}", stderr(&out));
    assert_eq!(
        got[0],
        format!(
            "tstat-rabbit: warning: {f}: [rabbit] password: the file holds a password and is \
             readable by its group and others (mode 0644): chmod 600 {f}, or write \
             password = ${{RABBIT_PASSWORD}} and set that variable",
            f = cfg.display()
        )
    );
    assert!(!stderr(&out).contains("PW_IN_FILE"));
    // The connection failure still decides the exit status.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let cfg = write_config(dir.path(), &text, 0o600);
    assert!(warning(&run(&cfg, &["--retries", "0"], &[], b"")).is_empty());

    let from_env = text.replace("PW_IN_FILE", "${GUARDS_PW}");
    let cfg = write_config(dir.path(), &from_env, 0o644);
    let out = run(&cfg, &[], &[("GUARDS_PW", "x")], b"");
    assert!(warning(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn verbose_dump_escapes_control_characters_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = ${{GUARDS_USER}}\n\
             password = ${{GUARDS_PW}}\nqueue = q\nexchange =\n",
            closed_port()
        ),
        0o600,
    );
    let out = run(
        &cfg,
        &["-v", "--retries", "0"],
        &[
            ("GUARDS_USER", "guest\nhost = forged\t\u{1b}[2J"),
            ("GUARDS_PW", "x"),
        ],
        b"",
    );
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l == "username = guest\\nhost = forged\\t\\u{1b}[2J"),
        "{err}"
    );
    assert!(
        !err.lines().any(|l| l.starts_with("host = forged")),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err}");
}
