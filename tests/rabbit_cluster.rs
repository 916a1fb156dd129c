//! tstat-rabbit against a two-node cluster (one cookie, one private epmd):
//! `host = node1,node2`, a quorum queue from `[rabbit_queue_options]`, and
//! the node the tool is connected to stopped mid-stream. Every message must
//! arrive, through failover within the run or, failing that, through a
//! resumed run with --progress.

mod common;

use std::collections::HashMap;
use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::rabbit::{RabbitCluster, RabbitNode, confirmed_count};
use common::run::{Trickle, program, text, wait_until};

const DEADLINE: Duration = Duration::from_secs(180);
const QUEUE: &str = "cluster_quorum";
const OPTIONS: &str = "[rabbit_queue_options]\ndurable = true\nx-queue-type = quorum\nx-quorum-initial-group-size = 1\n";

fn config(hosts: &[&RabbitNode]) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    format!(
        "[rabbit]\nhost = {}\nport = 5672\nusername = guest\npassword = guest\n\
         queue = {QUEUE}\nrouting_key = {QUEUE}\nexchange =\n{OPTIONS}",
        hosts.join(",")
    )
}

#[test]
fn stopping_the_connected_node_mid_stream_loses_nothing() {
    const TOTAL: usize = 5_000;
    const WINDOW: usize = 256;
    let mut cluster = RabbitCluster::start(2);
    let dir = tempfile::tempdir().expect("tempdir");

    // Declare the quorum queue from the config through node 2 only, with a
    // single member, then find where that member lives: the tool is then
    // pointed first at the *other* node, which is the one we stop, so the
    // queue stays available to the failover target.
    let warm = dir.path().join("warm.ini");
    fs::write(&warm, config(&[&cluster.nodes[1]])).expect("config");
    let out = program("tstat-rabbit")
        .arg("-c")
        .arg(&warm)
        .args(["--message-id-prefix", "warm"])
        .stdin("[0]\n")
        .deadline(DEADLINE)
        .run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = cluster.nodes[0].list_queues(&["name", "type", "leader"]);
    let row = rows
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(QUEUE))
        .unwrap_or_else(|| panic!("{QUEUE} not listed: {rows:?}"));
    assert_eq!(row[1], "quorum", "{row:?}");
    let member = cluster
        .nodes
        .iter()
        .position(|n| n.name == row[2])
        .unwrap_or_else(|| panic!("leader {} is not one of our nodes", row[2]));
    let other = 1 - member;

    let cfg = dir.path().join("config.ini");
    fs::write(
        &cfg,
        config(&[&cluster.nodes[other], &cluster.nodes[member]]),
    )
    .expect("config");
    let progress = dir.path().join("progress");
    let args: Vec<String> = vec![
        "-c".into(),
        cfg.display().to_string(),
        "--message-id-prefix".into(),
        "c".into(),
        "--progress".into(),
        progress.display().to_string(),
        "--retries".into(),
        "5".into(),
        "--confirm-timeout".into(),
        "15".into(),
        "--window".into(),
        WINDOW.to_string(),
        "-v".into(),
    ];
    let lines: Vec<String> = (0..TOTAL).map(|i| format!("[{{\"i\":{i}}}]\n")).collect();

    // Trickle the input (about 1000 lines/s) so the stop lands mid-stream;
    // once the node is stopped, send the rest at once.
    let mut run1 = program("tstat-rabbit")
        .args(&args)
        .stdin_pipe()
        .stdout(Stdio::null())
        .spawn();
    let chunks: Vec<String> = lines.chunks(50).map(|c| c.concat()).collect();
    let feeder = Trickle::start(run1.stdin(), String::new(), chunks);
    feeder.go();
    wait_until(
        "the first confirms through the first node",
        Duration::from_secs(60),
        || confirmed_count(&progress) >= 500,
    );
    cluster.nodes[other].stop_app();
    feeder.stop();
    let out1 = run1.wait(DEADLINE);
    feeder.join();
    let (status, err1) = (out1.status, text(&out1.stderr));
    let confirmed = confirmed_count(&progress);
    assert!(confirmed < TOTAL as u64 || status.success(), "{err1}");

    if status.success() {
        // Failover within the run.
        assert!(
            err1.contains(&format!(
                "connected to 127.0.0.1:{}",
                cluster.nodes[member].port
            )),
            "{err1}"
        );
    } else {
        // Resume: the stopped node back, the same command again.
        eprintln!("run 1 failed, resuming: {err1}");
        cluster.nodes[other].start_app();
        let out = program("tstat-rabbit")
            .args(&args)
            .stdin(lines.concat())
            .deadline(DEADLINE)
            .run();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(confirmed_count(&progress), TOTAL as u64);
    assert!(err1.contains("reconnecting"), "{err1}");

    let got = cluster.nodes[member].drain(QUEUE, DEADLINE);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &got {
        *seen.entry(m.message_id()).or_default() += 1;
    }
    assert_eq!(seen.get("warm:0"), Some(&1));
    for i in 0..TOTAL {
        assert!(
            seen.contains_key(&format!("c:{i}")),
            "message c:{i} was never delivered"
        );
    }
    assert_eq!(seen.len(), TOTAL + 1, "no unexpected ids");
    let duplicates = got.len() - TOTAL - 1;
    assert!(duplicates <= WINDOW, "{duplicates} duplicates");
    eprintln!("run 1 {status}, {duplicates} duplicates:\n{err1}");
}
