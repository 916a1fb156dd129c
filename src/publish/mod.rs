//! The publish stage (design §6): one RabbitMQ connection and channel in confirm
//! mode, a window of unconfirmed messages, failover over the configured hosts,
//! reconnect-and-resend with backoff, and the hooks that keep a progress
//! record ([`Recorder`]) exact: written before new ids go out and as confirms
//! arrive. A message counts as delivered only
//! on a plain broker Ack: a nack, a returned (unroutable) message, a confirm
//! that was never requested, an error and a timeout are each failures.
//!
//! Both `tstat-rabbit` and the driver `tstat_send` publish through
//! [`Publisher`]; neither talks to lapin directly. This module never reads
//! files other than the TLS material, never parses flows, and never prints: what the operator should see is handed to the
//! caller's [`NoticeSink`] or returned as a [`PublishError`].
//!
//! Inside: `error` words every failure and notice, `link` connects and fails
//! over, `window` keeps the confirm bookkeeping (pure, unit-tested), `queue`
//! checks the queue, `tls` builds the connector; this file drives them.
//!
//! ```no_run
//! # async fn run(cfg: tstat_transport::config::RabbitConfig) -> Result<(), tstat_transport::publish::PublishError> {
//! use tstat_transport::publish::{Item, PublishOptions, Publisher, StreamStart};
//! let (tx, rx) = tokio::sync::mpsc::channel(1024);
//! let shutdown = tstat_transport::shutdown::Shutdown::new();
//! std::thread::spawn(move || {
//!     for i in 0..10 {
//!         let _ = tx.blocking_send(Item::message(format!("[{i}]").into_bytes()));
//!     }
//! });
//! let mut publisher = Publisher::connect(&cfg, &PublishOptions::default()).await?;
//! let start = StreamStart::default();
//! let report = publisher.publish_stream(Some("sensor:dir"), start, None, rx, &shutdown).await?;
//! assert_eq!(report.confirmed, 10);
//! publisher.close().await;
//! # Ok(()) }
//! ```

mod error;
mod item;
mod link;
mod queue;
pub mod stream;
mod tls;
mod window;

use std::fmt;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use lapin::Confirmation;
use lapin::tcp::RustlsConnector;
use tokio::time::Instant;

use crate::config::RabbitConfig;
use crate::shutdown::Shutdown;
pub use error::{EndpointFailure, Notice, NoticeSink, PublishError};
pub use item::{Input, Item, Outgoing, Recorder, Source, StreamReport, StreamStart};
pub use link::config_warnings;
use link::{Link, Pending};
pub(crate) use link::{SetupError, amqp_error, describe, failover};
pub use queue::QueueState;
use window::{Answer, Window};

/// The TLS connector of `[ssl_options]` for AMQP connections.
pub(crate) fn tls_connector(t: &crate::config::TlsOptions) -> Result<RustlsConnector, String> {
    tls::connector(t)
}

/// The `app_id` property of every message.
pub const APP_ID: &str = "tstat-transport";
/// The `content_type` property of every message.
pub const CONTENT_TYPE: &str = "application/json";

/// Default bound on unconfirmed message bytes (8 MiB): with the reader's
/// channel and the broker connection this keeps a run within 32 MB.
pub const DEFAULT_WINDOW_BYTES: usize = 8 << 20;

/// Tuning of a publishing run; [`Default`] gives the documented defaults of
/// `tstat-rabbit` (design §6.1, §6.5).
#[derive(Clone)]
pub struct PublishOptions {
    /// Most messages published but not yet confirmed (`--window`, 256).
    pub window: NonZeroUsize,
    /// Most bytes of message bodies published but not yet confirmed (kept
    /// for a resend); bounds memory whatever the message size. One message
    /// is always allowed.
    pub window_bytes: usize,
    /// Reconnect-and-resend rounds allowed after a failure without any
    /// confirm in between (`--retries`, 5); progress resets the count.
    pub retries: u32,
    /// Bound on one connection attempt to one host: TCP, TLS and the AMQP
    /// handshake (`--connect-timeout`, 10 s).
    pub connect_timeout: Duration,
    /// Bound on waiting for one message's confirm, for a broker operation
    /// (queue declare), and for a broker that blocks publishers
    /// (`--confirm-timeout`, 30 s).
    pub confirm_timeout: Duration,
    /// AMQP heartbeat interval proposed to the broker (`--heartbeat`, 60 s;
    /// whole seconds, 0 turns heartbeats off).
    pub heartbeat: Duration,
    /// First delay before a reconnect; it doubles each round up to
    /// [`max_backoff`](Self::max_backoff).
    pub backoff: Duration,
    /// Longest delay between reconnects.
    pub max_backoff: Duration,
    /// Receives what the operator should hear about while a run goes on
    /// (blocked broker, failover, retries); `None` drops them.
    pub notices: Option<NoticeSink>,
    /// Only look at the broker: never create or bind the queue
    /// (`tstat_send --check`); see [`Publisher::queue_state`].
    pub check_only: bool,
    /// Record the last confirms when a stream ends well. Off when the caller
    /// durably marks the whole stream done right after (tstat_send's
    /// `.processed`): a crash between the two then repeats at most a window,
    /// under the same ids, and every directory saves two fsyncs.
    pub record_at_end: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            window: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            window_bytes: DEFAULT_WINDOW_BYTES,
            retries: 5,
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(60),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            notices: None,
            check_only: false,
            record_at_end: true,
        }
    }
}

impl fmt::Debug for PublishOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishOptions")
            .field("window", &self.window)
            .field("window_bytes", &self.window_bytes)
            .field("retries", &self.retries)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("notices", &self.notices.is_some())
            .finish()
    }
}
/// A publisher: one connection (failing over across the configured hosts)
/// for a whole run, reused by every [`publish_stream`](Self::publish_stream)
/// call. Needs a tokio runtime (a `current_thread` one is enough) with
/// timers enabled.
pub struct Publisher {
    cfg: RabbitConfig,
    opts: PublishOptions,
    tls: Option<RustlsConnector>,
    link: Option<Link>,
    /// When the configured queue was last found present (declared or
    /// checked on a link); `None` before the first link or without a queue.
    queue_seen: Option<std::time::Instant>,
    /// What the last connect found of the queue.
    queue_state: std::sync::Mutex<Option<QueueState>>,
    /// When this publisher first had to create the queue.
    queue_created: std::sync::Mutex<Option<SystemTime>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("cfg", &self.cfg)
            .field("opts", &self.opts)
            .field("endpoint", &self.link.as_ref().map(|l| l.endpoint.as_str()))
            .finish()
    }
}

/// State of one `publish_stream` call, kept across reconnects.
struct Stream<'a> {
    prefix: Option<&'a str>,
    recorder: Option<&'a mut dyn Recorder>,
    window: Window<Pending>,
    /// Why the producer stopped early.
    failed: Option<String>,
    stopping: Option<Instant>,
    report: StreamReport,
}

enum Stop {
    Interrupted,
    Fail(PublishError),
}

impl From<PublishError> for Stop {
    fn from(e: PublishError) -> Self {
        Stop::Fail(e)
    }
}

enum Step {
    Shutdown,
    Confirm(Box<Result<lapin::Result<Confirmation>, tokio::time::error::Elapsed>>),
    Body(Option<Item>),
    DrainExpired,
    /// Time to write the record (`keep_record` sees it is stale).
    RecordDue,
    Idle,
}

impl Publisher {
    /// Connects to the first reachable host of `cfg.endpoints` (in order),
    /// checks or declares the queue (design §6.4) and puts the channel in
    /// confirm mode. One pass over the hosts, each bounded by the connect
    /// timeout; a refused login, a certificate error or a queue mismatch is
    /// returned as such.
    pub async fn connect(cfg: &RabbitConfig, opts: &PublishOptions) -> Result<Self, PublishError> {
        let tls = match &cfg.tls {
            Some(t) => Some(tls::connector(t).map_err(PublishError::TlsSetup)?),
            None => None,
        };
        let mut publisher = Publisher {
            cfg: cfg.clone(),
            opts: opts.clone(),
            tls,
            link: None,
            queue_seen: None,
            queue_state: std::sync::Mutex::new(None),
            queue_created: std::sync::Mutex::new(None),
        };
        publisher.link = Some(publisher.open_link().await?);
        Ok(publisher)
    }

    /// `host:port` of the broker currently connected to, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.link.as_ref().map(|l| l.endpoint.as_str())
    }

    /// When the configured queue was last verified present: at the connect
    /// and at every reconnect (each checks it). If a later reconnect finds
    /// it gone ([`PublishError::QueueVanished`], whose `since` is this
    /// instant), whatever was confirmed into it after this is probably
    /// lost. `None` when no queue is configured.
    pub fn queue_seen(&self) -> Option<std::time::Instant> {
        self.queue_seen
    }

    /// When this publisher found the queue missing and created it: messages
    /// confirmed before that (by earlier runs) went into a queue that is gone.
    pub fn queue_created_at(&self) -> Option<SystemTime> {
        self.queue_created.lock().ok().and_then(|c| *c)
    }

    /// What the last connect found of the configured queue.
    pub fn queue_state(&self) -> Option<QueueState> {
        self.queue_state.lock().ok().and_then(|s| *s)
    }

    /// Closes the connection politely (bounded to a couple of seconds).
    pub async fn close(mut self) {
        if let Some(link) = self.link.take() {
            link.close().await;
        }
    }

    /// Publishes every message received from `items` as one message, in
    /// order, and returns when all are confirmed (the sender side was dropped
    /// and the window drained).
    ///
    /// * `id_prefix`: message ids are `PREFIX:INDEX`, INDEX counting from
    ///   `start.index`.
    /// * `recorder`: the progress record. It is written before the first
    ///   message (proving it can be), before ids beyond what it covers go
    ///   out (once per window), and as confirms arrive, on failure and on
    ///   interruption. Callers skip what an earlier run confirmed.
    /// * `shutdown`: once it is triggered, stop reading, wait for the
    ///   in-flight confirms (bounded by the confirm timeout), save progress
    ///   and return [`PublishError::Interrupted`].
    ///
    /// On a failure it reconnects (hosts in order again) and resends the
    /// unconfirmed messages, up to `retries` rounds without progress, then
    /// returns [`PublishError::Unconfirmed`] naming the first unconfirmed
    /// message. An [`Item::Failed`] ends the stream with
    /// [`PublishError::Input`] once the window is drained. The producer
    /// should stop when its `send` fails: the receiver is dropped when this
    /// returns.
    pub async fn publish_stream<'a>(
        &mut self,
        id_prefix: Option<&'a str>,
        start: StreamStart,
        recorder: Option<&'a mut dyn Recorder>,
        bodies: impl Into<Input>,
        shutdown: &Shutdown,
    ) -> Result<StreamReport, PublishError> {
        let mut bodies = bodies.into();
        let window = Window::new(
            start.index,
            start.mark,
            self.opts.window,
            self.opts.window_bytes,
            recorder.is_some(),
            now(),
        );
        let mut st = Stream {
            prefix: id_prefix,
            recorder,
            window,
            failed: None,
            stopping: None,
            report: StreamReport::default(),
        };
        if shutdown.is_triggered() {
            return Err(PublishError::Interrupted {
                confirmed: st.window.confirmed(),
            });
        }

        let mut failures: u32 = 0;
        let mut confirmed_at_failure = st.window.confirmed();
        loop {
            let result = match self.ensure_link(&mut st).await {
                Ok(()) => self.pump(&mut st, &mut bodies, shutdown).await,
                Err(e) => Err(Stop::Fail(e)),
            };
            match result {
                Ok(()) => {
                    if self.opts.record_at_end || st.failed.is_some() {
                        self.record(&mut st, false)?;
                    }
                    st.report.confirmed = st.window.confirmed();
                    if let Some(reason) = st.failed.take() {
                        return Err(PublishError::Input {
                            reason,
                            confirmed: st.window.confirmed(),
                        });
                    }
                    return Ok(st.report);
                }
                Err(Stop::Interrupted) => {
                    self.record(&mut st, false)?;
                    return Err(PublishError::Interrupted {
                        confirmed: st.window.confirmed(),
                    });
                }
                Err(Stop::Fail(err)) => {
                    self.salvage(&mut st).await;
                    self.record(&mut st, false)?;
                    let first = st.window.first_unconfirmed();
                    // A signal that came while a publish was held up (a
                    // blocked broker) is still a stop, not a failure.
                    if st.stopping.is_some() || shutdown.is_triggered() {
                        return Err(PublishError::Interrupted {
                            confirmed: st.window.confirmed(),
                        });
                    }
                    if st.window.confirmed() > confirmed_at_failure {
                        failures = 0;
                    }
                    confirmed_at_failure = st.window.confirmed();
                    if !err.is_retryable() || failures >= self.opts.retries {
                        return Err(PublishError::Unconfirmed {
                            index: first,
                            retries: failures,
                            pending: st.window.pending(),
                            cause: Box::new(err),
                        });
                    }
                    failures += 1;
                    let delay = self
                        .opts
                        .backoff
                        .saturating_mul(1 << (failures - 1).min(16))
                        .min(self.opts.max_backoff);
                    self.notice(&Notice::Retrying {
                        attempt: failures,
                        retries: self.opts.retries,
                        delay,
                        first_unconfirmed: first,
                        cause: err.to_string(),
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        () = shutdown.triggered() => {
                            return Err(PublishError::Interrupted { confirmed: st.window.confirmed() });
                        }
                    }
                    st.report.reconnects += 1;
                }
            }
        }
    }

    fn notice(&self, n: &Notice) {
        if let Some(sink) = &self.opts.notices {
            sink(n);
        }
    }

    /// Reconnects when there is no live link.
    async fn ensure_link(&mut self, st: &mut Stream<'_>) -> Result<(), PublishError> {
        let alive = self
            .link
            .as_ref()
            .is_some_and(|l| l.conn.status().connected() && l.channel.status().connected());
        if alive {
            return Ok(());
        }
        if let Some(old) = self.link.take() {
            old.close().await;
        }
        st.window.lose_link();
        self.link = Some(self.open_link().await?);
        Ok(())
    }

    /// After a failure: keep the confirms that already arrived, forget the
    /// rest (they are resent) and drop the connection.
    async fn salvage(&mut self, st: &mut Stream<'_>) {
        for id in st.window.in_flight() {
            if let Some(pending) = st.window.ticket_mut(id)
                && let Some(Ok(Confirmation::Ack(None))) =
                    futures_lite::future::poll_once(&mut pending.confirm).await
            {
                st.window.settle(id, false, Answer::Ack);
            }
        }
        st.window.lose_link();
        if let Some(link) = self.link.take() {
            link.close().await;
        }
    }

    /// Writes the progress record; `extend` also lets the next window of
    /// ids go out (they are recorded as possibly sent before they are).
    fn record(&self, st: &mut Stream<'_>, extend: bool) -> Result<(), PublishError> {
        let Some(rec) = st.recorder.as_deref_mut() else {
            return Ok(());
        };
        let w = &mut st.window;
        if extend {
            w.reserve();
        }
        rec.save(w.confirmed(), w.confirmed_mark(), w.reserved())
            .map_err(|source| PublishError::Progress {
                path: rec.path(),
                source,
            })?;
        w.recorded(now());
        Ok(())
    }

    /// Writes the record when the window says it is due (see
    /// [`Window::record_now`]): ids go out only below what it reserves, so a
    /// crash never reuses an id for another body.
    fn keep_record(&self, st: &mut Stream<'_>) -> Result<(), PublishError> {
        if st.window.record_now(now()) {
            self.record(st, true)?;
        }
        Ok(())
    }

    /// Publishes and confirms until the input ends and the window drains,
    /// the shutdown signal fires, or something fails.
    async fn pump(
        &mut self,
        st: &mut Stream<'_>,
        bodies: &mut Input,
        shutdown: &Shutdown,
    ) -> Result<(), Stop> {
        // Resend what a broken link left unconfirmed, in order.
        for id in st.window.unsent() {
            let pending = self.send(id, st.window.body(id), st.prefix).await?;
            st.window.sent(id, pending);
            st.report.resent += 1;
        }
        loop {
            self.keep_record(st)?;
            if st.window.is_drained() {
                return match st.stopping {
                    Some(_) => Err(Stop::Interrupted),
                    None => Ok(()),
                };
            }
            let want_input = st.window.wants_input();
            let drain_deadline = st.stopping;
            // Confirms not yet recorded are written at the latest a second
            // after the last write, even when nothing else happens.
            let record_due = st.window.record_due().map(Instant::from_std);
            let step = {
                let front = st.window.first_mut();
                let confirm = async {
                    match front {
                        Some((_, Some(Pending { confirm, deadline }))) => {
                            tokio::time::timeout_at(*deadline, confirm).await
                        }
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    () = shutdown.triggered(), if st.stopping.is_none() => Step::Shutdown,
                    r = confirm => Step::Confirm(Box::new(r)),
                    b = bodies.recv(), if want_input => Step::Body(b),
                    _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => Step::DrainExpired,
                    _ = sleep_until_opt(record_due), if record_due.is_some() => Step::RecordDue,
                    else => Step::Idle,
                }
            };
            match step {
                Step::Shutdown => {
                    st.window.end_input();
                    st.stopping = Some(Instant::now() + self.opts.confirm_timeout);
                }
                Step::DrainExpired => return Err(Stop::Interrupted),
                Step::RecordDue => {}
                Step::Idle => {
                    // Nothing pending and nothing to read: only possible
                    // with an empty window while input is done (handled
                    // above), so treat it as the end.
                    st.window.end_input();
                }
                Step::Body(None) => st.window.end_input(),
                Step::Body(Some(Item::Failed(reason))) => {
                    st.window.end_input();
                    st.failed = Some(reason);
                }
                Step::Body(Some(Item::Message(Outgoing { body, mark, .. }))) => {
                    st.report.published += 1;
                    st.report.bytes += body.len() as u64;
                    // Queue it first so a failed send leaves it for a resend.
                    let id = st.window.push(body, mark);
                    let pending = self.send(id, st.window.body(id), st.prefix).await?;
                    st.window.sent(id, pending);
                }
                Step::Confirm(r) => {
                    let Some((id, _)) = st.window.first_mut() else {
                        continue;
                    };
                    let judged = self.judge(id, *r);
                    st.window.settle(id, false, answer(&judged));
                    judged?;
                    self.harvest(st).await?;
                }
            }
        }
    }

    /// Collects the confirms that are already there without waiting, so a
    /// burst of confirms is taken in one step.
    async fn harvest(&self, st: &mut Stream<'_>) -> Result<(), Stop> {
        while let Some((id, Some(pending))) = st.window.first_mut() {
            let Some(r) = futures_lite::future::poll_once(&mut pending.confirm).await else {
                break;
            };
            let judged = self.judge(id, Ok(r));
            st.window.settle(id, false, answer(&judged));
            judged?;
        }
        Ok(())
    }
}

/// What the window makes of a judged confirm: only a plain Ack confirms.
fn answer(judged: &Result<(), PublishError>) -> Answer {
    match judged {
        Ok(()) => Answer::Ack,
        Err(PublishError::Nacked { .. }) => Answer::Nack,
        Err(PublishError::Returned { .. }) => Answer::Returned,
        Err(_) => Answer::Lost,
    }
}

/// Now on the runtime's clock, for the window's record timing.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_match_the_spec() {
        let o = PublishOptions::default();
        assert_eq!(o.window.get(), 256);
        assert_eq!(o.retries, 5);
        assert_eq!(o.connect_timeout, Duration::from_secs(10));
        assert_eq!(o.confirm_timeout, Duration::from_secs(30));
        assert_eq!(o.heartbeat, Duration::from_secs(60));
    }
}
