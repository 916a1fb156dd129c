//! tstat-rabbit when the broker misbehaves; each test owns its node because
//! it stops, restarts or alarms it: durable + persistent messages survive a
//! restart, a broker stopped mid-stream is resumed from --progress without
//! resending confirmed lines, and a memory alarm is waited out (bounded).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::rabbit::{RabbitNode, confirmed_count};
use common::run::{Trickle, program, text, wait_until};

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
    let cfg = node.write_config(dir.path(), "survivors");
    let out = program("tstat-rabbit")
        .arg("-c")
        .arg(&cfg)
        .args(["--message-id-prefix", "keep"])
        .stdin(lines(50).concat())
        .deadline(DEADLINE)
        .run();
    assert!(out.status.success(), "{}", text(&out.stderr));

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
    let cfg = node.write_config(dir.path(), "resume");
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
    let mut run1 = program("tstat-rabbit")
        .args(args(&cfg, &progress))
        .stdin_pipe()
        .stdout(Stdio::null())
        .spawn();
    let head = all[..FIRST].concat();
    let tail: Vec<String> = all[FIRST..].chunks(50).map(|c| c.concat()).collect();
    let feeder = Trickle::start(run1.stdin(), head, tail);
    wait_until(
        "the first lines to be confirmed",
        Duration::from_secs(60),
        || confirmed_count(&progress) == FIRST as u64,
    );
    feeder.go();
    wait_until(
        "publishing to go on past the first lines",
        Duration::from_secs(60),
        || confirmed_count(&progress) > FIRST as u64,
    );
    node.stop_app();
    feeder.stop();
    let out1 = run1.wait(DEADLINE);
    feeder.join();
    let (status, err1) = (out1.status, text(&out1.stderr));
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
    let out = program("tstat-rabbit")
        .args(args(&cfg, &progress))
        .stdin(all.concat())
        .deadline(DEADLINE)
        .run();
    let err2 = text(&out.stderr);
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
    let cfg = node.write_config(dir.path(), "blocked");
    node.set_memory_alarm();
    let started = Instant::now();
    let out = program("tstat-rabbit")
        .arg("-c")
        .arg(&cfg)
        .args(["--confirm-timeout", "3", "--retries", "0"])
        .stdin("[1]\n[2]\n[3]\n")
        .deadline(DEADLINE)
        .run();
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // Only a floor: the blocked broker was waited on for the confirm
    // timeout, not given up early. Load can only make it longer; DEADLINE
    // stops a hang.
    assert!(took >= Duration::from_millis(2900), "took {took:?}");
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
    let cfg = node.write_config(dir.path(), "unblocked");
    let running = program("tstat-rabbit")
        .arg("-c")
        .arg(&cfg)
        .args(["--confirm-timeout", "60", "--retries", "0"])
        .stdin(lines(10).concat())
        .spawn();
    wait_until(
        "tstat-rabbit to report the blocked broker",
        Duration::from_secs(30),
        || running.stderr_so_far().contains("blocking publishers"),
    );
    node.clear_memory_alarm();
    let out = running.wait(DEADLINE);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("the broker accepts messages again"), "{err}");
    assert_eq!(node.drain("unblocked", DEADLINE).len(), 10);
}
