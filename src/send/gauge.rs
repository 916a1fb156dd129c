//! How far behind Tstat a followed directory is (design §12.3): bytes not
//! read yet and the read-to-confirm lag, kept by the reader and the record,
//! written to the metrics file every few seconds.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{LiveMetrics, Metrics};
use crate::publish::Recorder;
use crate::report::Reporter;
use crate::resume::Mark;

/// How often the metrics file is written while a directory is followed.
const LIVE_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// How far behind Tstat a followed stream is.
#[derive(Debug, Default)]
pub(super) struct LiveGauge {
    /// Bytes written to the logs and not read yet.
    pub(super) behind: u64,
    /// For each message handed on and not yet confirmed: when its oldest
    /// row was first read, and its body's bytes (only when confirms are
    /// recorded, which empties it).
    pub(super) pending: VecDeque<(Instant, u64)>,
    /// Whether `pending` is kept.
    pub(super) timed: bool,
    /// Seconds from the first read of the oldest row of the last confirmed
    /// message to its confirm.
    pub(super) lag: f64,
    /// Messages confirmed so far, counted at each confirm.
    pub(super) messages: u64,
    /// Their bytes.
    pub(super) bytes: u64,
}

impl LiveGauge {
    /// A message is handed on: its oldest row was first read at `read_at`.
    pub(super) fn handed_on(gauge: &Gauge, read_at: Instant, bytes: usize) {
        if let Ok(mut g) = gauge.lock()
            && g.timed
        {
            g.pending.push_back((read_at, bytes as u64));
        }
    }

    /// Messages and bytes confirmed so far.
    pub(super) fn confirmed(gauge: &Gauge) -> (u64, u64) {
        gauge.lock().map_or((0, 0), |g| (g.messages, g.bytes))
    }
}

/// The gauge as the reader and the recorder share it.
pub(super) type Gauge = Arc<Mutex<LiveGauge>>;

/// Writes `metrics` to `path` every few seconds with the gauge of the
/// followed `directory`, until aborted. A failed write is said once.
pub(super) fn live_metrics(
    mut m: Metrics,
    path: PathBuf,
    directory: String,
    gauge: Gauge,
    reporter: Arc<dyn Reporter>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIVE_METRICS_INTERVAL);
        let mut warned = false;
        // What earlier directories and passes counted; this one's confirms
        // are added as they come.
        let base = m.totals;
        loop {
            tick.tick().await;
            if let Ok(g) = gauge.lock() {
                m.totals.messages = base.messages + g.messages;
                m.totals.bytes = base.bytes + g.bytes;
                m.live = Some(LiveMetrics {
                    directory: directory.clone(),
                    lag_seconds: g.lag,
                    bytes_behind: g.behind,
                });
            }
            let written = m.write(&path);
            if let Err(e) = written
                && !std::mem::replace(&mut warned, true)
            {
                reporter.warning(&format_args!(
                    "writing metrics file {}: {e}",
                    path.display()
                ));
            }
        }
    })
}

/// Keeps the progress record and, from the confirms it records, the lag
/// of the stream and the messages and bytes confirmed.
pub(super) struct LagRecorder<'a> {
    pub(super) inner: &'a mut dyn Recorder,
    /// Id index of the stream's first message.
    pub(super) start: u64,
    /// Messages whose confirm was already counted.
    pub(super) counted: u64,
    pub(super) gauge: Gauge,
}

impl Recorder for LagRecorder<'_> {
    fn save(&mut self, confirmed: u64, mark: Mark, reserved: u64) -> io::Result<()> {
        self.inner.save(confirmed, mark, reserved)?;
        let done = confirmed.saturating_sub(self.start);
        if let Ok(mut g) = self.gauge.lock() {
            let mut last = None;
            while self.counted < done {
                if let Some((read_at, bytes)) = g.pending.pop_front() {
                    last = Some(read_at);
                    g.messages += 1;
                    g.bytes += bytes;
                }
                self.counted += 1;
            }
            if let Some(t) = last {
                g.lag = t.elapsed().as_secs_f64();
            }
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        self.inner.path()
    }

    fn stream_epoch(&mut self, epoch: u32) -> io::Result<()> {
        self.inner.stream_epoch(epoch)
    }
}
