//! The `--metrics-file` of tstat_send (SPEC §8.5): counters in Prometheus
//! text exposition format for node_exporter's textfile collector, replaced
//! atomically so a scrape never sees half a file.

use std::io;
use std::path::Path;

use crate::send::Summary;

/// Counters of a tstat_send process, cumulative over its passes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Directories, rows, skips, flows, messages and bytes so far.
    pub totals: Summary,
    /// Failed passes or directories.
    pub errors: u64,
    /// Seconds the last pass took.
    pub last_run_seconds: f64,
    /// Unix time of the last pass that ended without error (0: never).
    pub last_success: f64,
}

const PREFIX: &str = "tstat_send_";

impl Metrics {
    /// The exposition text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            s.push_str(&format!("# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n{PREFIX}{name} {value}\n"));
        };
        put(
            "directories_total",
            "counter",
            "Tstat directories shipped and marked processed.",
            self.totals.directories.to_string(),
        );
        put(
            "rows_total",
            "counter",
            "Log rows read.",
            self.totals.rows.to_string(),
        );
        put(
            "rows_skipped_total",
            "counter",
            "Malformed rows skipped and flow directions dropped.",
            self.totals.skipped.to_string(),
        );
        put(
            "flows_total",
            "counter",
            "Flow documents at or above the byte threshold.",
            self.totals.flows.to_string(),
        );
        put(
            "messages_total",
            "counter",
            "Messages confirmed by the broker.",
            self.totals.messages.to_string(),
        );
        put(
            "bytes_total",
            "counter",
            "Bytes of confirmed message bodies.",
            self.totals.bytes.to_string(),
        );
        put(
            "errors_total",
            "counter",
            "Passes or directories that failed.",
            self.errors.to_string(),
        );
        put(
            "last_run_seconds",
            "gauge",
            "Duration of the last pass in seconds.",
            format!("{:.3}", self.last_run_seconds),
        );
        put(
            "last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last pass that ended without error.",
            format!("{:.3}", self.last_success),
        );
        s
    }

    /// The last-success time recorded in an existing metrics file, so a
    /// failing run does not reset it to 0.
    pub fn previous_success(path: &Path) -> Option<f64> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("tstat_send_last_success_timestamp_seconds "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Writes the file atomically and durably (node_exporter runs as
    /// another user, so it is made readable: 0644).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        crate::durable::atomic_write(path, self.render().as_bytes(), Some(0o644))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_type() {
        let m = Metrics {
            totals: Summary {
                directories: 2,
                messages: 26,
                ..Default::default()
            },
            last_success: 1.5,
            ..Default::default()
        };
        let t = m.render();
        assert!(t.contains(
            "# TYPE tstat_send_directories_total counter\ntstat_send_directories_total 2\n"
        ));
        assert!(t.contains("tstat_send_last_success_timestamp_seconds 1.500\n"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.prom");
        m.write(&p).unwrap();
        assert_eq!(Metrics::previous_success(&p), Some(1.5));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
