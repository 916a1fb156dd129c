//! The `--metrics-file` of tstat_send (design §8.5): Prometheus text
//! exposition format for node_exporter's textfile collector, replaced
//! atomically so a scrape never sees half a file.
//!
//! tstat_send usually runs as a oneshot unit, one process per run, so a
//! counter kept only in memory would restart at 0 every run and break
//! `rate()`/`increase()`. The `_total` counters are therefore cumulative
//! across runs: the first write of a process reads the counters of the file
//! it replaces and adds this process's totals to them. A missing file starts
//! from zero; an unreadable or damaged one too (Prometheus sees a counter
//! reset, which it handles), and only the values it can still read are kept.
//! This module never touches anything but the one file.

use std::io;
use std::path::Path;

use crate::report::Summary;

/// Counters of a tstat_send process, cumulative over its passes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Directories, rows, skips, flows, messages and bytes so far.
    pub totals: Summary,
    /// Failed passes or directories.
    pub errors: u64,
    /// Directories refused because their `.progress` no longer matches what
    /// would be sent (design §8.7); they stay unshipped until re-shipped by hand.
    pub refused: u64,
    /// Messages published but never confirmed when a run gave up on them
    /// (nack, returned, timeout, lost connection); the next run resends them.
    pub unconfirmed: u64,
    /// Seconds the last pass took.
    pub last_run_seconds: f64,
    /// Unix time of the last pass that ended without error (0: never).
    pub last_success: f64,
    /// The directory being followed (`--follow`), while there is one.
    pub live: Option<LiveMetrics>,
    /// What the stream transport counted (zero for a queue).
    pub stream: StreamMetrics,
    /// What earlier runs counted, read from the file on the first write.
    previous: Option<Previous>,
}

/// Counters of the stream transport (design §14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamMetrics {
    /// Directories whose start came from what the stream already held.
    pub resumes: u64,
    /// Messages not sent, or not sent again after a reconnect, because the
    /// stream already held them (what its deduplication would have dropped).
    pub already_stored: u64,
    /// Messages sent again after a reconnect.
    pub resent: u64,
    /// Directories (or replaced logs) moved to a new producer epoch.
    pub new_epochs: u64,
}

/// Gauges of the directory `--follow` ships while Tstat writes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveMetrics {
    /// Its path.
    pub directory: String,
    /// Seconds from the first read of the oldest row of the last confirmed
    /// message to its confirm (its wait for the array, up to the flush
    /// time, plus the broker's confirm).
    pub lag_seconds: f64,
    /// Bytes Tstat wrote that are not read yet.
    pub bytes_behind: u64,
}

/// The counters of earlier runs, as found in an existing metrics file.
#[derive(Clone, Debug, Default, PartialEq)]
struct Previous {
    counters: [u64; COUNTERS.len()],
    last_success: f64,
}

const PREFIX: &str = "tstat_send_";

/// The counters, in file order: name (after the prefix) and help text.
const COUNTERS: [(&str, &str); 13] = [
    (
        "directories_total",
        "Tstat directories shipped and marked processed.",
    ),
    ("rows_total", "Log rows read."),
    (
        "rows_skipped_total",
        "Malformed rows skipped and flow directions dropped.",
    ),
    (
        "flows_total",
        "Flow documents at or above the byte threshold.",
    ),
    (
        "messages_total",
        "Messages confirmed by the broker (printed with -N).",
    ),
    ("bytes_total", "Bytes of confirmed message bodies."),
    ("errors_total", "Passes or directories that failed."),
    (
        "directories_refused_total",
        "Directories refused because their .progress no longer matches.",
    ),
    (
        "messages_unconfirmed_total",
        "Messages published but not confirmed when a run gave up on them.",
    ),
    (
        "stream_resumes_total",
        "Directories resumed from the position the stream had stored.",
    ),
    (
        "stream_already_stored_total",
        "Messages not sent (again) because the stream already held them.",
    ),
    (
        "stream_resent_total",
        "Messages sent to the stream again after a reconnect.",
    ),
    (
        "stream_new_epochs_total",
        "Directories moved to a new stream producer epoch (late, recreated, re-shipped).",
    ),
];

/// The gauges: name (after the prefix) and help text.
const GAUGES: [(&str, &str); 2] = [
    ("last_run_seconds", "Duration of the last pass in seconds."),
    (
        "last_success_timestamp_seconds",
        "Unix time of the last pass that ended without error.",
    ),
];

/// The gauges of a followed directory: name (after the prefix) and help.
const LIVE: [(&str, &str); 3] = [
    (
        "follow_lag_seconds",
        "Seconds from the first read of the oldest row of the last confirmed message to its confirm (--follow): its wait for the array (up to --flush) plus the broker's confirm.",
    ),
    (
        "follow_bytes_behind",
        "Bytes Tstat wrote to the followed directory that are not read yet.",
    ),
    (
        "follow_directory_info",
        "The directory --follow ships while Tstat writes it.",
    ),
];

impl Metrics {
    /// Every metric name the file holds, prefix included (for dashboards and
    /// alert rules, which must use only these).
    pub fn names() -> impl Iterator<Item = String> {
        COUNTERS
            .iter()
            .chain(GAUGES.iter())
            .map(|(n, _)| format!("{PREFIX}{n}"))
    }

    /// This process's counters, in the order of `COUNTERS`.
    fn own_counters(&self) -> [u64; COUNTERS.len()] {
        let t = &self.totals;
        [
            t.directories,
            t.rows,
            t.skipped,
            t.flows,
            t.messages,
            t.bytes,
            self.errors,
            self.refused,
            self.unconfirmed,
            self.stream.resumes,
            self.stream.already_stored,
            self.stream.resent,
            self.stream.new_epochs,
        ]
    }

    /// The exposition text: earlier runs' counters (if read) plus this
    /// process's.
    pub fn render(&self) -> String {
        let previous = self.previous.clone().unwrap_or_default();
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            s.push_str(&format!(
                "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n{PREFIX}{name} {value}\n"
            ));
        };
        for (((name, help), own), before) in COUNTERS
            .iter()
            .zip(self.own_counters())
            .zip(previous.counters)
        {
            put(
                name,
                "counter",
                help,
                own.saturating_add(before).to_string(),
            );
        }
        let last_success = if self.last_success > 0.0 {
            self.last_success
        } else {
            previous.last_success
        };
        let values = [self.last_run_seconds, last_success];
        for ((name, help), value) in GAUGES.iter().zip(values) {
            put(name, "gauge", help, format!("{value:.3}"));
        }
        if let Some(live) = &self.live {
            put(
                LIVE[0].0,
                "gauge",
                LIVE[0].1,
                format!("{:.3}", live.lag_seconds),
            );
            put(LIVE[1].0, "gauge", LIVE[1].1, live.bytes_behind.to_string());
            let dir = live
                .directory
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            s.push_str(&format!(
                "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} gauge\n\
                 {PREFIX}{name}{{directory=\"{dir}\"}} 1\n",
                name = LIVE[2].0,
                help = LIVE[2].1
            ));
        }
        s
    }

    /// The names of the gauges written while `--follow` ships a directory.
    pub fn live_names() -> impl Iterator<Item = String> {
        LIVE.iter().map(|(n, _)| format!("{PREFIX}{n}"))
    }

    /// Reads the counters of earlier runs now (a copy written meanwhile
    /// then continues from them too, never from its own output).
    pub fn load_previous(&mut self, path: &Path) {
        if self.previous.is_none() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            self.previous = Some(Previous::parse(&text));
        }
    }

    /// The last-success time recorded in an existing metrics file, so a
    /// failing run does not reset it to 0.
    pub fn previous_success(path: &Path) -> Option<f64> {
        let text = std::fs::read_to_string(path).ok()?;
        let p = Previous::parse(&text);
        (p.last_success > 0.0).then_some(p.last_success)
    }

    /// Writes the file atomically and durably (`durable::atomic_write`).
    /// The first write of a process reads the file it replaces, so
    /// the counters continue from the last run.
    pub fn write(&mut self, path: &Path) -> io::Result<()> {
        self.load_previous(path);
        // node_exporter runs as another user: the file must be readable.
        crate::durable::atomic_write(path, self.render().as_bytes(), Some(0o644))
    }
}

impl Previous {
    /// Reads what it can: each `name value` sample line of a known metric
    /// whose value is a finite, non-negative number; anything else is ignored.
    fn parse(text: &str) -> Previous {
        let mut p = Previous::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_ascii_whitespace();
            let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Some(name) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if !value.is_finite() || value < 0.0 {
                continue;
            }
            if let Some(i) = COUNTERS.iter().position(|(n, _)| *n == name) {
                p.counters[i] = value as u64;
            } else if name == GAUGES[1].0 {
                p.last_success = value;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(directories: u64, messages: u64) -> Metrics {
        Metrics {
            totals: Summary {
                directories,
                messages,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{PREFIX}{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_followed_directory_adds_its_gauges() {
        let mut m = sample(0, 0);
        assert!(!m.render().contains("follow_"));
        m.live = Some(LiveMetrics {
            directory: "/t/2026_03_01_00_00.out".into(),
            lag_seconds: 1.25,
            bytes_behind: 4096,
        });
        let t = m.render();
        assert_eq!(value(&t, "follow_lag_seconds"), 1.25);
        assert_eq!(value(&t, "follow_bytes_behind"), 4096.0);
        assert!(t.contains(
            "tstat_send_follow_directory_info{directory=\"/t/2026_03_01_00_00.out\"} 1\n"
        ));
        for name in Metrics::live_names() {
            assert!(t.contains(&format!("# TYPE {name} gauge")), "{name}");
        }
    }

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let mut m = sample(2, 26);
        m.last_success = 1.5;
        let t = m.render();
        assert!(t.contains(
            "# TYPE tstat_send_directories_total counter\ntstat_send_directories_total 2\n"
        ));
        assert!(t.contains("tstat_send_last_success_timestamp_seconds 1.500\n"));
        for name in Metrics::names() {
            assert!(t.contains(&format!("# HELP {name} ")), "{name}");
            assert!(t.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(t.contains(&format!("\n{name} ")), "{name}");
        }
        // node_exporter's conventions: counters end in _total, units in names.
        for (name, _) in COUNTERS {
            assert!(name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn counters_continue_across_runs_and_passes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.prom");

        let mut first = sample(2, 26);
        first.last_success = 100.0;
        first.write(&p).unwrap();

        // A new process (the next oneshot run) adds to what is there.
        let mut second = sample(1, 10);
        second.errors = 1;
        second.write(&p).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(value(&t, "directories_total"), 3.0);
        assert_eq!(value(&t, "messages_total"), 36.0);
        assert_eq!(value(&t, "errors_total"), 1.0);
        // It failed: the last success stays the first run's.
        assert_eq!(value(&t, "last_success_timestamp_seconds"), 100.0);
        assert_eq!(Metrics::previous_success(&p), Some(100.0));

        // A later pass of the same process (--watch) carries cumulative
        // totals: the earlier runs are added once, not again.
        second.totals.messages = 15;
        second.write(&p).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(value(&t, "messages_total"), 41.0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn missing_or_damaged_file_starts_from_what_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.prom");
        let mut m = sample(1, 1);
        m.write(&p).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(value(&t, "messages_total"), 1.0);

        std::fs::write(
            &p,
            "garbage\x00\ntstat_send_messages_total banana\ntstat_send_rows_total -4\n\
             tstat_send_flows_total NaN\ntstat_send_bytes_total 7 extra\n\
             tstat_send_directories_total 5\n",
        )
        .unwrap();
        let mut m = sample(1, 1);
        m.write(&p).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(value(&t, "messages_total"), 1.0);
        assert_eq!(value(&t, "rows_total"), 0.0);
        assert_eq!(value(&t, "flows_total"), 0.0);
        assert_eq!(value(&t, "bytes_total"), 0.0);
        assert_eq!(value(&t, "directories_total"), 6.0);

        // Not text at all.
        std::fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
        let mut m = sample(0, 3);
        m.write(&p).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(value(&t, "messages_total"), 3.0);
    }
}
