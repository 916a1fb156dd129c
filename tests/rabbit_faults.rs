//! tstat-rabbit when the broker misbehaves; each test owns its node because
//! it stops, restarts or alarms it: durable + persistent messages survive a
//! restart, a broker stopped mid-stream is resumed from --progress without
//! resending confirmed lines, and a memory alarm is waited out (bounded).

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::rabbit::{
    RabbitNode, confirmed_count, run_with_deadline, spawn_with_stdin, wait_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_tstat-rabbit");
const DEADLINE: Duration = Duration::from_secs(120);

fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("[{{\"i\":{i},\"pad\":\"{}\"}}]\n", "x".repeat(64)))
        .collect()
}

fn index_of(id: &str) -> usize {
    id.rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad message id {id:?}"))
}

#[test]
fn durable_queue_and_persistent_messages_survive_a_broker_restart() {
    let mut node = RabbitNode::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.ini");
    fs::write(&cfg, node.config("survivors", "")).expect("config");
    let input: String = lines(50).concat();
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(&cfg)
        .args(["--message-id-prefix", "keep"]);
    let out = run_with_deadline(cmd, Some(input.into_bytes()), DEADLINE).expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    node.stop_app();
    node.start_app();

    let got = node.drain("survivors", DEADLINE);
    assert_eq!(got.len(), 50, "every message is still there after restart");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.message_id(), format!("keep:{i}"));
        assert_eq!(*m.properties.delivery_mode(), Some(2));
        let v: serde_json::Value = serde_json::from_slice(&m.body).expect("JSON body");
        assert_eq!(v[0]["i"], i);
    }
}

#[test]
fn broker_stopped_mid_stream_fails_then_a_rerun_resumes_without_resending_confirmed_lines() {
    const TOTAL: usize = 20_000;
    const FIRST: usize = 2_000;
    const WINDOW: usize = 256;
    let mut node = RabbitNode::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.ini");
    fs::write(&cfg, node.config("resume", "")).expect("config");
    let progress = dir.path().join("progress");
    let all = lines(TOTAL);
    let args = |cfg: &Path, progress: &Path| -> Vec<String> {
        vec![
            "-c".into(),
            cfg.display().to_string(),
            "--message-id-prefix".into(),
            "r".into(),
            "--progress".into(),
            progress.display().to_string(),
            "--retries".into(),
            "1".into(),
            "--window".into(),
            WINDOW.to_string(),
            "-v".into(),
        ]
    };

    // Run 1: the first FIRST lines; once they are confirmed, a steady
    // trickle (about 1000 lines/s) so the broker is stopped while messages
    // are in flight; once it is stopped, the rest at once.
    let mut child = Command::new(BIN)
        .args(args(&cfg, &progress))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (stopped_tx, stopped_rx) = mpsc::channel::<()>();
    let head = all[..FIRST].concat();
    let tail: Vec<String> = all[FIRST..].chunks(50).map(|c| c.concat()).collect();
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(head.as_bytes());
        let _ = stdin.flush();
        if go_rx.recv_timeout(DEADLINE).is_err() {
            return false;
        }
        let mut chunks = tail.into_iter();
        for chunk in chunks.by_ref() {
            if stdin.write_all(chunk.as_bytes()).is_err() {
                return true;
            }
            let _ = stdin.flush();
            if stopped_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
        }
        // The broker is down (or the input ran out): the rest at once. It
        // may exit before reading it all: fine.
        let rest: String = chunks.collect();
        let _ = stdin.write_all(rest.as_bytes());
        true
    });
    wait_until(
        "the first lines to be confirmed",
        Duration::from_secs(60),
        || confirmed_count(&progress) == FIRST as u64,
    );
    let _ = go_tx.send(());
    wait_until(
        "publishing to go on past the first lines",
        Duration::from_secs(60),
        || confirmed_count(&progress) > FIRST as u64,
    );
    node.stop_app();
    let _ = stopped_tx.send(());
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(Instant::now() < end, "run 1 did not end");
        thread::sleep(Duration::from_millis(50));
    };
    let _ = feeder.join();
    let mut err1 = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err1);
    }
    assert_eq!(status.code(), Some(1), "run 1 must fail; stderr:\n{err1}");
    assert!(
        err1.contains("tstat-rabbit: error: line ")
            && err1.contains("was not confirmed after 1 retries"),
        "{err1}"
    );
    let confirmed = confirmed_count(&progress);
    assert!(
        (FIRST as u64..TOTAL as u64).contains(&confirmed),
        "progress {confirmed}"
    );
    let first_unconfirmed = format!("line {} (index {confirmed})", confirmed + 1);
    assert!(
        err1.contains(&first_unconfirmed),
        "error names {first_unconfirmed}: {err1}"
    );

    // Run 2: broker back, same command, same input.
    node.start_app();
    let mut cmd = Command::new(BIN);
    cmd.args(args(&cfg, &progress));
    let out = run_with_deadline(cmd, Some(all.concat().into_bytes()), DEADLINE).expect("run 2");
    let err2 = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run 2: {err2}");
    assert!(
        err2.contains(&format!("{confirmed} skipped from progress")),
        "{err2}"
    );
    assert_eq!(confirmed_count(&progress), TOTAL as u64);

    let got = node.drain("resume", DEADLINE);
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for m in &got {
        *seen.entry(index_of(&m.message_id())).or_default() += 1;
    }
    for i in 0..TOTAL {
        let n = seen.get(&i).copied().unwrap_or(0);
        assert!(n >= 1, "message r:{i} was never delivered");
        if (i as u64) < confirmed {
            assert_eq!(n, 1, "r:{i} was confirmed in run 1 but sent again");
        }
    }
    assert_eq!(seen.len(), TOTAL, "no unexpected ids");
    let duplicates = got.len() - TOTAL;
    eprintln!(
        "run 1 confirmed {confirmed}, {duplicates} duplicates\nrun 1 stderr:\n{err1}\nrun 2 stderr:\n{err2}"
    );
    assert!(
        duplicates <= WINDOW,
        "{duplicates} duplicates, more than the window"
    );
}

#[test]
fn memory_alarm_is_waited_out_within_the_confirm_timeout_and_fails_after_it() {
    let node = RabbitNode::start();
    let dir = tempfile::tempdir().expect("tempdir");

    // Alarm stays on: bounded wait, then a clear error.
    let cfg = dir.path().join("blocked.ini");
    fs::write(&cfg, node.config("blocked", "")).expect("config");
    node.set_memory_alarm();
    let mut cmd = Command::new(BIN);
    cmd.arg("-c")
        .arg(&cfg)
        .args(["--confirm-timeout", "3", "--retries", "0"]);
    let started = Instant::now();
    let out = run_with_deadline(cmd, Some(b"[1]\n[2]\n[3]\n".to_vec()), DEADLINE).expect("run");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    assert!(
        err.contains("tstat-rabbit: warning: the broker is blocking publishers ("),
        "{err}"
    );
    assert!(
        err.contains("the broker blocked publishing (")
            && err.contains("for longer than the confirm timeout (3 s)"),
        "{err}"
    );

    // Alarm cleared while we wait: the run completes.
    let cfg = dir.path().join("unblocked.ini");
    fs::write(&cfg, node.config("unblocked", "")).expect("config");
    let input: String = lines(10).concat();
    let running = spawn_with_stdin(
        BIN,
        &[
            "-c",
            cfg.to_str().expect("utf-8"),
            "--confirm-timeout",
            "60",
            "--retries",
            "0",
        ],
        input.into_bytes(),
    );
    wait_until(
        "tstat-rabbit to report the blocked broker",
        Duration::from_secs(30),
        || running.stderr_so_far().contains("blocking publishers"),
    );
    node.clear_memory_alarm();
    let (status, err) = running.wait(DEADLINE);
    assert!(status.success(), "{err}");
    assert!(err.contains("the broker accepts messages again"), "{err}");
    assert_eq!(node.drain("unblocked", DEADLINE).len(), 10);
}
