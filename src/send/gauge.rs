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
    /// When the rows of each message handed on and not yet confirmed were
    /// read (only when confirms are recorded, which empties it).
    pub(super) read_at: VecDeque<Instant>,
    /// Whether `read_at` is kept.
    pub(super) timed: bool,
    /// Read-to-confirm seconds of the last confirmed message.
    pub(super) lag: f64,
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
        loop {
            tick.tick().await;
            if let Ok(g) = gauge.lock() {
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
/// of the stream.
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
                last = g.read_at.pop_front().or(last);
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
