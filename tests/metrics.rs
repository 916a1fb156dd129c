//! The metrics file as Prometheus sees it across oneshot runs (design §8.5):
//! real `tstat_send -N` runs write it, the counters continue from one run
//! to the next, and the Grafana dashboard and alert rules in `contrib/` use
//! only metric names the file holds.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::run::{program, text};
use common::trees::copy_fixture;

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib");

/// A copy of the synthetic tree (two directories) in a temp dir.
fn tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["2026_03_01_00_00.out", "2026_03_01_01_00.out"] {
        copy_fixture(&format!("synthetic/{d}"), &tmp.path().join(d), None);
    }
    tmp
}

/// One `tstat_send -N` run over `root` writing `metrics`.
fn run(root: &Path, metrics: &Path) {
    let out = program("tstat_send")
        .args(["-N", "-q", "--all", "--bytes", "0", "-S", "s", "-d"])
        .arg(root)
        .arg("--metrics-file")
        .arg(metrics)
        .run();
    assert!(
        out.status.success(),
        "tstat_send -N failed: {}",
        text(&out.stderr)
    );
}

/// Sample lines of a metrics file: name → value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.split_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(text: &str, name: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        .1
}

/// Every `tstat_send_…` token in a file.
fn referenced(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).expect("read contrib file");
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("tstat_send_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn counters_continue_across_runs() {
    let tree = tree();
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("tstat_send.prom");

    run(tree.path(), &metrics);
    let first = fs::read_to_string(&metrics).unwrap();
    let messages = value(&first, "tstat_send_messages_total");
    let rows = value(&first, "tstat_send_rows_total");
    assert!(messages > 0.0 && rows > 0.0, "{first}");
    assert_eq!(value(&first, "tstat_send_directories_total"), 2.0);
    let success = value(&first, "tstat_send_last_success_timestamp_seconds");
    assert!(success > 0.0, "{first}");

    // -N marks nothing, so the second run (a new process) sees the same
    // directories and its counts are added to the first run's.
    run(tree.path(), &metrics);
    let second = fs::read_to_string(&metrics).unwrap();
    assert_eq!(value(&second, "tstat_send_messages_total"), 2.0 * messages);
    assert_eq!(value(&second, "tstat_send_rows_total"), 2.0 * rows);
    assert_eq!(value(&second, "tstat_send_directories_total"), 4.0);
    assert!(value(&second, "tstat_send_last_success_timestamp_seconds") >= success);

    // A damaged file does not stop a run; counting starts again from it.
    fs::write(&metrics, "this is not a metrics file\n").unwrap();
    run(tree.path(), &metrics);
    let third = fs::read_to_string(&metrics).unwrap();
    assert_eq!(value(&third, "tstat_send_messages_total"), messages);
}

#[test]
fn dashboard_and_alerts_use_only_metrics_the_tool_writes() {
    let tree = tree();
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("tstat_send.prom");
    run(tree.path(), &metrics);
    let mut written: BTreeSet<String> = samples(&fs::read_to_string(&metrics).unwrap())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // Written only while --follow ships a directory (tests/follow.rs).
    written.extend(
        [
            "tstat_send_follow_lag_seconds",
            "tstat_send_follow_bytes_behind",
            "tstat_send_follow_directory_info",
        ]
        .map(String::from),
    );

    let dashboard = Path::new(CONTRIB).join("grafana-dashboard.json");
    let alerts = Path::new(CONTRIB).join("prometheus-alerts.yml");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&dashboard).unwrap()).expect("dashboard JSON");
    assert!(
        json["panels"].as_array().is_some_and(|p| !p.is_empty()),
        "the dashboard has panels"
    );

    for (file, must) in [
        (&dashboard, &["tstat_send_messages_total"][..]),
        (
            &alerts,
            &[
                "tstat_send_last_success_timestamp_seconds",
                "tstat_send_directories_refused_total",
                "tstat_send_messages_unconfirmed_total",
            ][..],
        ),
    ] {
        let used = referenced(file);
        let unknown: Vec<_> = used.difference(&written).collect();
        assert!(
            unknown.is_empty(),
            "{} uses metrics tstat_send never writes: {unknown:?} (it writes {written:?})",
            file.display()
        );
        for m in must {
            assert!(used.contains(*m), "{} lacks {m}", file.display());
        }
    }
    let alert_text = fs::read_to_string(&alerts).unwrap();
    assert!(
        alert_text.contains("> 2 * 3600"),
        "no successful run in 2 hours"
    );
}
