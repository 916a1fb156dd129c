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
//! ```no_run
//! # async fn run(cfg: tstat_transport::config::RabbitConfig) -> Result<(), tstat_transport::publish::PublishError> {
//! use tstat_transport::publish::{Item, PublishOptions, Publisher, StreamStart};
//! let (tx, rx) = tokio::sync::mpsc::channel(1024);
//! let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
//! std::thread::spawn(move || {
//!     for i in 0..10 {
//!         let _ = tx.blocking_send(Item::message(format!("[{i}]").into_bytes()));
//!     }
//! });
//! let mut publisher = Publisher::connect(&cfg, &PublishOptions::default()).await?;
//! let start = StreamStart::default();
//! let report = publisher.publish_stream(Some("sensor:dir"), start, None, rx, stop_rx).await?;
//! assert_eq!(report.confirmed, 10);
//! publisher.close().await;
//! # Ok(()) }
//! ```

mod queue;

pub use queue::QueueState;
mod tls;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind, Event,
    PublisherConfirm,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{CertReqs, Endpoint, RabbitConfig};
use crate::resume::Mark;

/// One message for [`Publisher::publish_stream`], with where it ends in its
/// stream (what the progress record stores once it is confirmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The body.
    pub body: Vec<u8>,
    /// Its end in the stream.
    pub mark: Mark,
}

/// What a producer hands the publisher: a message, or the reason the stream
/// stops early (the publisher then drains its window, records what was
/// confirmed and returns [`PublishError::Input`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The next message.
    Message(Outgoing),
    /// The producer failed; nothing more comes.
    Failed(String),
}

impl Item {
    /// A message without a stream position (for callers that keep no record).
    pub fn message(body: Vec<u8>) -> Item {
        Item::Message(Outgoing {
            body,
            mark: Mark::default(),
        })
    }
}

/// Where a stream starts: the id index of its first message and the mark
/// before it (from the progress record of an earlier run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStart {
    /// Id index of the first message.
    pub index: u64,
    /// Mark of the stream before it.
    pub mark: Mark,
}

/// Keeps the progress record of a stream (see [`crate::resume::RecordFile`]).
pub trait Recorder {
    /// Records that ids below `confirmed` are confirmed, the last ending at
    /// `mark`, and that ids below `reserved` may have been sent. Called
    /// before any id at or above the previous `reserved` is sent, and as
    /// confirms arrive.
    fn save(&mut self, confirmed: u64, mark: Mark, reserved: u64) -> std::io::Result<()>;
    /// The record's file, for messages.
    fn path(&self) -> PathBuf;
}

impl Recorder for crate::resume::RecordFile {
    fn save(&mut self, confirmed: u64, mark: Mark, reserved: u64) -> std::io::Result<()> {
        crate::resume::RecordFile::save(self, confirmed, mark, reserved)
    }

    fn path(&self) -> PathBuf {
        crate::resume::RecordFile::path(self).to_path_buf()
    }
}

/// The `app_id` property of every message.
pub const APP_ID: &str = "tstat-transport";
/// The `content_type` property of every message.
pub const CONTENT_TYPE: &str = "application/json";

/// Longest time confirmed messages wait to be recorded while confirms arrive.
const RECORD_INTERVAL: Duration = Duration::from_secs(1);

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

/// A callback for [`Notice`]s; called from the publishing task, so keep it
/// short (print a line, bump a counter).
pub type NoticeSink = Arc<dyn Fn(&Notice) + Send + Sync>;

/// Something that happened during a run that is not (yet) an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Connected to a broker (and the queue and confirm mode are set up).
    Connected {
        /// `host:port`.
        endpoint: String,
    },
    /// One host could not be used; the next one is tried.
    EndpointFailed {
        /// `host:port`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The broker blocks publishers (memory or disk alarm); we wait up to
    /// `wait` for it to unblock.
    Blocked {
        /// The broker's reason, e.g. `low on memory`.
        reason: String,
        /// How long we keep waiting (the confirm timeout).
        wait: Duration,
    },
    /// The broker accepts publishes again.
    Unblocked,
    /// A failure is retried: reconnect after `delay`, then resend.
    Retrying {
        /// This retry's number, from 1.
        attempt: u32,
        /// Retries allowed.
        retries: u32,
        /// Wait before reconnecting.
        delay: Duration,
        /// 0-based index of the first unconfirmed line.
        first_unconfirmed: u64,
        /// What went wrong.
        cause: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Connected { endpoint } => write!(f, "connected to {endpoint}"),
            Notice::EndpointFailed { endpoint, reason } => {
                write!(f, "cannot use {endpoint}: {reason}; trying the next host")
            }
            Notice::Blocked { reason, wait } => write!(
                f,
                "the broker is blocking publishers ({reason}); waiting up to {} s",
                wait.as_secs_f64()
            ),
            Notice::Unblocked => write!(f, "the broker accepts messages again"),
            Notice::Retrying {
                attempt,
                retries,
                delay,
                first_unconfirmed,
                cause,
            } => write!(
                f,
                "{cause}; reconnecting in {:.1} s and resending from {} (retry {attempt} of {retries})",
                delay.as_secs_f64(),
                line(*first_unconfirmed)
            ),
        }
    }
}

/// What a [`Publisher::publish_stream`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Distinct messages published by this call (resends not counted).
    pub published: u64,
    /// Messages published again after a reconnect.
    pub resent: u64,
    /// Bytes of the distinct message bodies published by this call.
    pub bytes: u64,
    /// Id index after the last confirmed message (a contiguous prefix,
    /// including what earlier runs confirmed): what the record holds.
    pub confirmed: u64,
    /// Reconnects made during the call.
    pub reconnects: u32,
}

/// Why one host could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    /// `host:port`.
    pub endpoint: String,
    /// What happened, e.g. `connection refused` or `TLS handshake failed: …`.
    pub reason: String,
    /// True when retrying cannot help (certificate rejected, login refused).
    pub permanent: bool,
}

impl fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.reason)
    }
}

fn list(failures: &[EndpointFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// "line 1235 (index 1234)": 1-based for people, the 0-based index that
/// appears in message ids.
fn line(index: u64) -> String {
    format!("line {} (index {index})", index + 1)
}

/// Seconds with one decimal, for messages.
fn secs1(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn exchange_name(exchange: &str) -> String {
    if exchange.is_empty() {
        "the default exchange".to_string()
    } else {
        format!("exchange '{exchange}'")
    }
}

/// Every way a publishing run can fail; each failure to confirm a message is
/// its own variant so callers can tell them apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No host could be connected to.
    #[error("cannot connect to RabbitMQ: {}", list(.failures))]
    Connect {
        /// One entry per host tried, in order.
        failures: Vec<EndpointFailure>,
    },
    /// The broker refused the login or the vhost (never retried).
    #[error(
        "login refused: user '{user}' at {endpoint}: {reason} (check username, password and vhost in {config})"
    )]
    Auth {
        /// The configured user name.
        user: String,
        /// `host:port`.
        endpoint: String,
        /// The broker's text (it never contains the password).
        reason: String,
        /// The config file, for the hint.
        config: PathBuf,
    },
    /// The TLS settings could not be turned into a client configuration.
    #[error("TLS setup failed: {0}")]
    TlsSetup(String),
    /// The queue exists with other properties than configured (406).
    #[error("queue '{queue}' does not match the config: {explanation}")]
    QueueMismatch {
        /// Queue name.
        queue: String,
        /// What differs and how to fix the config.
        explanation: String,
    },
    /// Checking, creating or binding the queue failed otherwise.
    #[error("cannot {what} queue '{queue}': {reason}")]
    Queue {
        /// Queue name.
        queue: String,
        /// `check`, `create`, `declare`, `bind`, …
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The queue this run had seen (declared or checked on an earlier link)
    /// is missing after a reconnect: an operator deleted it or the broker
    /// lost it. Every message confirmed into it that no consumer took is
    /// gone with it, so it is not re-created (never retried).
    #[error(
        "queue '{queue}' has disappeared from the broker ({broker}); it was last seen {} s ago, \
         so the messages confirmed into it since then are probably lost (deleted by an operator, \
         or lost in a broker failure); not re-creating it",
        secs1(*.ago)
    )]
    QueueVanished {
        /// Queue name.
        queue: String,
        /// When the queue was last seen present (see
        /// [`Publisher::queue_seen`]): messages confirmed after this are
        /// probably lost.
        since: std::time::Instant,
        /// How long before the failed check that was.
        ago: Duration,
        /// The broker's answer to the check.
        broker: String,
    },
    /// The broker nacked a message (it could not take responsibility for it).
    #[error("the broker rejected (nacked) {}", line(*.index))]
    Nacked {
        /// 0-based line index.
        index: u64,
    },
    /// The broker returned a message: no queue is bound for its routing key.
    #[error(
        "the broker returned {} as unroutable ({reply_code} {reply_text}): {} has no queue bound with routing key '{routing_key}'",
        line(*.index),
        exchange_name(.exchange)
    )]
    Returned {
        /// 0-based line index.
        index: u64,
        /// Exchange published to (empty: the default exchange).
        exchange: String,
        /// Routing key used.
        routing_key: String,
        /// AMQP reply code (312 NO_ROUTE).
        reply_code: u16,
        /// AMQP reply text.
        reply_text: String,
    },
    /// The channel was not in confirm mode, so nothing was confirmed.
    #[error("{} was published without a confirm being requested", line(*.index))]
    NotRequested {
        /// 0-based line index.
        index: u64,
    },
    /// No confirm arrived in time.
    #[error("no confirm for {} within {} s", line(*.index), .timeout.as_secs_f64())]
    ConfirmTimeout {
        /// 0-based line index.
        index: u64,
        /// The confirm timeout.
        timeout: Duration,
    },
    /// The broker kept publishers blocked (memory or disk alarm) longer than
    /// the confirm timeout (never retried: the wait was the bound).
    #[error(
        "the broker blocked publishing ({reason}) for longer than the confirm timeout ({} s); {} not confirmed",
        .timeout.as_secs_f64(),
        line(*.index)
    )]
    Blocked {
        /// 0-based line index of the first unconfirmed message.
        index: u64,
        /// The broker's reason.
        reason: String,
        /// The confirm timeout.
        timeout: Duration,
    },
    /// The connection or channel broke while messages were unconfirmed.
    #[error("connection lost at {}: {reason}", line(*.index))]
    ConnectionLost {
        /// 0-based line index of the first unconfirmed message.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The run gave up: `cause` happened again after `retries` retries.
    #[error("{} was not confirmed after {retries} retries: {cause}", line(*.index))]
    Unconfirmed {
        /// 0-based index of the first unconfirmed line.
        index: u64,
        /// Retries made.
        retries: u32,
        /// Messages sent and not confirmed when it gave up.
        pending: u64,
        /// The last failure.
        #[source]
        cause: Box<PublishError>,
    },
    /// The shutdown signal stopped the run; `confirmed` lines are confirmed
    /// and recorded in the progress file.
    #[error("interrupted after {confirmed} confirmed lines")]
    Interrupted {
        /// Contiguous confirmed lines (including skipped ones).
        confirmed: u64,
    },
    /// The producer of the messages failed; `confirmed` ids before it are
    /// confirmed and recorded.
    #[error("{reason}")]
    Input {
        /// Why the stream stopped.
        reason: String,
        /// Contiguous confirmed ids.
        confirmed: u64,
    },
    /// The progress record could not be written.
    #[error("cannot write the progress record {}: {source}", .path.display())]
    Progress {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl PublishError {
    /// True when reconnecting and resending may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Connect { failures } => failures.iter().any(|f| !f.permanent),
            PublishError::Nacked { .. }
            | PublishError::Returned { .. }
            | PublishError::NotRequested { .. }
            | PublishError::ConfirmTimeout { .. }
            | PublishError::ConnectionLost { .. } => true,
            _ => false,
        }
    }

    /// The failure underneath an [`PublishError::Unconfirmed`], else itself.
    pub fn root(&self) -> &PublishError {
        match self {
            PublishError::Unconfirmed { cause, .. } => cause.root(),
            other => other,
        }
    }
}

/// Warnings every run must print for this configuration (design §7.3: an
/// unverified TLS connection).
pub fn config_warnings(cfg: &RabbitConfig) -> Vec<String> {
    match &cfg.tls {
        Some(t) if t.cert_reqs == CertReqs::None => vec![format!(
            "{}: [ssl_options] cert_reqs = CERT_NONE: the broker's TLS certificate is NOT verified; \
             anyone on the path can read and change the data",
            cfg.path.display()
        )],
        _ => Vec::new(),
    }
}

/// The (reply code, text) of a broker-sent AMQP error.
pub(crate) fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        ErrorKind::ProtocolError(err) => Some((err.get_id(), err.get_message().to_string())),
        _ => None,
    }
}

/// A lapin error in words, without Debug noise.
pub(crate) fn describe(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::ProtocolError(err) => err.get_message().to_string(),
        ErrorKind::IOError(io) => io_words(io),
        ErrorKind::InvalidConnectionState(state) => format!("connection is {state:?}"),
        ErrorKind::InvalidChannelState(state, _) => format!("channel is {state:?}"),
        ErrorKind::MissingHeartbeatError => "the broker stopped sending heartbeats".to_string(),
        _ => e.to_string(),
    }
}

fn io_words(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let is_tls = io
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if is_tls || io.kind() == K::InvalidData {
        return format!("TLS handshake failed: {io}");
    }
    match io.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset by the broker".to_string(),
        K::UnexpectedEof => "the broker closed the connection".to_string(),
        _ => io.to_string(),
    }
}

/// One live connection with its confirm-mode channel.
struct Link {
    conn: Connection,
    channel: Channel,
    endpoint: String,
    /// The broker's reason while it blocks publishers.
    blocked: watch::Receiver<Option<String>>,
    /// The last connection error the events reported.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    events: tokio::task::JoinHandle<()>,
}

impl Link {
    fn blocked_reason(&self) -> Option<String> {
        let reason = self.blocked.borrow().clone();
        reason.or_else(|| {
            self.conn
                .status()
                .blocked()
                .then(|| "reason not given".to_string())
        })
    }

    async fn close(self) {
        self.events.abort();
        if self.conn.status().connected() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into()))
                    .await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.events.abort();
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

/// A message in the window.
struct Slot {
    index: u64,
    body: Vec<u8>,
    mark: Mark,
    confirm: Option<PublisherConfirm>,
    deadline: Instant,
    acked: bool,
}

/// State of one `publish_stream` call, kept across reconnects.
struct Stream<'a> {
    prefix: Option<&'a str>,
    recorder: Option<&'a mut dyn Recorder>,
    window: VecDeque<Slot>,
    /// Bytes of the bodies in the window not yet confirmed.
    held: usize,
    next_index: u64,
    confirmed: u64,
    /// Mark after the last confirmed message.
    confirmed_mark: Mark,
    recorded: u64,
    /// Ids below this are covered by a record written before sending.
    reserved: u64,
    /// Why the producer stopped early.
    failed: Option<String>,
    /// When the record was last written.
    last_write: Instant,
    input_done: bool,
    stopping: Option<Instant>,
    shutdown_gone: bool,
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
    Shutdown(bool),
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
    /// * `shutdown`: when it turns `true`, stop reading, wait for the
    ///   in-flight confirms (bounded by the confirm timeout), save progress
    ///   and return [`PublishError::Interrupted`]. A dropped sender means no
    ///   shutdown will come.
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
        mut bodies: mpsc::Receiver<Item>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<StreamReport, PublishError> {
        let mut st = Stream {
            prefix: id_prefix,
            recorder,
            window: VecDeque::with_capacity(self.opts.window.get()),
            held: 0,
            next_index: start.index,
            confirmed: start.index,
            confirmed_mark: start.mark,
            recorded: start.index,
            reserved: start.index,
            failed: None,
            last_write: Instant::now(),
            input_done: false,
            stopping: None,
            shutdown_gone: false,
            report: StreamReport::default(),
        };
        if *shutdown.borrow() {
            return Err(PublishError::Interrupted {
                confirmed: st.confirmed,
            });
        }

        let mut failures: u32 = 0;
        let mut confirmed_at_failure = st.confirmed;
        loop {
            let result = match self.ensure_link(&mut st).await {
                Ok(()) => self.pump(&mut st, &mut bodies, &mut shutdown).await,
                Err(e) => Err(Stop::Fail(e)),
            };
            match result {
                Ok(()) => {
                    self.record(&mut st, false)?;
                    st.report.confirmed = st.confirmed;
                    if let Some(reason) = st.failed.take() {
                        return Err(PublishError::Input {
                            reason,
                            confirmed: st.confirmed,
                        });
                    }
                    return Ok(st.report);
                }
                Err(Stop::Interrupted) => {
                    self.record(&mut st, false)?;
                    return Err(PublishError::Interrupted {
                        confirmed: st.confirmed,
                    });
                }
                Err(Stop::Fail(err)) => {
                    self.salvage(&mut st).await;
                    self.record(&mut st, false)?;
                    let first = st.window.front().map_or(st.next_index, |s| s.index);
                    // A signal that came while a publish was held up (a
                    // blocked broker) is still a stop, not a failure.
                    if st.stopping.is_some() || *shutdown.borrow() {
                        return Err(PublishError::Interrupted {
                            confirmed: st.confirmed,
                        });
                    }
                    if st.confirmed > confirmed_at_failure {
                        failures = 0;
                    }
                    confirmed_at_failure = st.confirmed;
                    if !err.is_retryable() || failures >= self.opts.retries {
                        return Err(PublishError::Unconfirmed {
                            index: first,
                            retries: failures,
                            pending: st.next_index - st.confirmed,
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
                        changed = shutdown.changed(), if !st.shutdown_gone => {
                            if changed.is_ok() && *shutdown.borrow() {
                                return Err(PublishError::Interrupted { confirmed: st.confirmed });
                            }
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
        // Nothing sent on the old link can be confirmed any more.
        for slot in st.window.iter_mut().filter(|s| !s.acked) {
            slot.confirm = None;
        }
        self.link = Some(self.open_link().await?);
        Ok(())
    }

    /// After a failure: keep the confirms that already arrived, forget the
    /// rest (they are resent) and drop the connection.
    async fn salvage(&mut self, st: &mut Stream<'_>) {
        for slot in st.window.iter_mut().filter(|s| !s.acked) {
            if let Some(mut confirm) = slot.confirm.take()
                && let Some(Ok(Confirmation::Ack(None))) =
                    futures_lite::future::poll_once(&mut confirm).await
            {
                slot.acked = true;
                st.held -= slot.body.len();
                slot.body = Vec::new();
            }
        }
        self.advance(st);
        if let Some(link) = self.link.take() {
            link.close().await;
        }
    }

    /// Moves the confirmed prefix out of the window.
    fn advance(&self, st: &mut Stream<'_>) {
        while st.window.front().is_some_and(|s| s.acked) {
            if let Some(slot) = st.window.pop_front() {
                st.confirmed = slot.index + 1;
                st.confirmed_mark = slot.mark;
            }
        }
    }

    /// Writes the progress record; `extend` also lets the next window of
    /// ids go out (they are recorded as possibly sent before they are).
    fn record(&self, st: &mut Stream<'_>, extend: bool) -> Result<(), PublishError> {
        let Some(rec) = st.recorder.as_deref_mut() else {
            return Ok(());
        };
        if extend {
            st.reserved = st
                .reserved
                .max(st.confirmed + self.opts.window.get() as u64);
        }
        rec.save(st.confirmed, st.confirmed_mark, st.reserved)
            .map_err(|source| PublishError::Progress {
                path: rec.path(),
                source,
            })?;
        st.recorded = st.confirmed;
        st.last_write = Instant::now();
        Ok(())
    }

    /// Keeps the record close behind the confirms at a few durable writes
    /// per window: ids go out only below `reserved` (recorded before they
    /// are sent, so a crash never reuses an id for another body), and at
    /// most one window beyond the recorded confirms (so a resumed run sends
    /// at most a window twice). Writes when sending is held up and half a
    /// window was confirmed since the last write (or all of it), and at
    /// least every second while confirms arrive.
    fn keep_record(&self, st: &mut Stream<'_>) -> Result<(), PublishError> {
        if st.recorder.is_none() {
            return Ok(());
        }
        let lag = st.confirmed - st.recorded;
        let held_up = !st.input_done && st.next_index >= st.reserved;
        let half = (self.opts.window.get() as u64 / 2).max(1);
        let stale = lag > 0 && st.last_write.elapsed() >= RECORD_INTERVAL;
        if (held_up && (lag >= half || st.confirmed == st.next_index)) || stale {
            self.record(st, true)?;
        }
        Ok(())
    }

    /// Publishes and confirms until the input ends and the window drains,
    /// the shutdown signal fires, or something fails.
    async fn pump(
        &mut self,
        st: &mut Stream<'_>,
        bodies: &mut mpsc::Receiver<Item>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        // Resend what a broken link left unconfirmed, in order.
        for i in 0..st.window.len() {
            if !st.window[i].acked && st.window[i].confirm.is_none() {
                let (confirm, deadline) = self.send(&st.window[i], st.prefix).await?;
                let slot = &mut st.window[i];
                slot.confirm = Some(confirm);
                slot.deadline = deadline;
                st.report.resent += 1;
            }
        }
        loop {
            self.advance(st);
            self.keep_record(st)?;
            if st.window.is_empty() && st.input_done {
                return match st.stopping {
                    Some(_) => Err(Stop::Interrupted),
                    None => Ok(()),
                };
            }
            let want_input = !st.input_done
                && st.window.len() < self.opts.window.get()
                && (st.held < self.opts.window_bytes || st.window.is_empty())
                && (st.next_index < st.reserved || st.recorder.is_none());
            let drain_deadline = st.stopping;
            // Confirms not yet recorded are written at the latest a second
            // after the last write, even when nothing else happens.
            let record_due = (st.recorder.is_some() && st.confirmed > st.recorded)
                .then(|| st.last_write + RECORD_INTERVAL);
            let step = {
                let front = st.window.iter_mut().find(|s| !s.acked);
                let confirm = async {
                    match front {
                        Some(Slot {
                            confirm: Some(c),
                            deadline,
                            ..
                        }) => tokio::time::timeout_at(*deadline, c).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    changed = shutdown.changed(), if !st.shutdown_gone && st.stopping.is_none() => {
                        Step::Shutdown(changed.is_ok())
                    }
                    r = confirm => Step::Confirm(Box::new(r)),
                    b = bodies.recv(), if want_input => Step::Body(b),
                    _ = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => Step::DrainExpired,
                    _ = sleep_until_opt(record_due), if record_due.is_some() => Step::RecordDue,
                    else => Step::Idle,
                }
            };
            match step {
                Step::Shutdown(false) => st.shutdown_gone = true,
                Step::Shutdown(true) => {
                    if *shutdown.borrow() {
                        st.input_done = true;
                        st.stopping = Some(Instant::now() + self.opts.confirm_timeout);
                    }
                }
                Step::DrainExpired => return Err(Stop::Interrupted),
                Step::RecordDue => {}
                Step::Idle => {
                    // Nothing pending and nothing to read: only possible
                    // with an empty window while input is done (handled
                    // above), so treat it as the end.
                    st.input_done = true;
                }
                Step::Body(None) => st.input_done = true,
                Step::Body(Some(Item::Failed(reason))) => {
                    st.input_done = true;
                    st.failed = Some(reason);
                }
                Step::Body(Some(Item::Message(Outgoing { body, mark }))) => {
                    let index = st.next_index;
                    st.next_index += 1;
                    st.report.published += 1;
                    st.report.bytes += body.len() as u64;
                    let mut slot = Slot {
                        index,
                        body,
                        mark,
                        confirm: None,
                        deadline: Instant::now(),
                        acked: false,
                    };
                    // Queue it first so a failed send leaves it for a resend.
                    let sent = self.send(&slot, st.prefix).await;
                    match sent {
                        Ok((confirm, deadline)) => {
                            slot.confirm = Some(confirm);
                            slot.deadline = deadline;
                            st.held += slot.body.len();
                            st.window.push_back(slot);
                        }
                        Err(e) => {
                            st.held += slot.body.len();
                            st.window.push_back(slot);
                            return Err(Stop::Fail(e));
                        }
                    }
                }
                Step::Confirm(r) => {
                    let Some(slot) = st.window.iter_mut().find(|s| !s.acked) else {
                        continue;
                    };
                    slot.confirm = None;
                    let index = slot.index;
                    match self.judge(index, *r) {
                        Ok(()) => {
                            slot.acked = true;
                            st.held -= slot.body.len();
                            slot.body = Vec::new();
                            self.harvest(st).await?;
                        }
                        Err(e) => return Err(Stop::Fail(e)),
                    }
                }
            }
        }
    }

    /// Collects the confirms that are already there without waiting, so a
    /// burst of confirms is taken in one step.
    async fn harvest(&self, st: &mut Stream<'_>) -> Result<(), Stop> {
        for slot in st.window.iter_mut().filter(|s| !s.acked) {
            let Some(confirm) = slot.confirm.as_mut() else {
                break;
            };
            match futures_lite::future::poll_once(confirm).await {
                None => break,
                Some(r) => {
                    slot.confirm = None;
                    self.judge(slot.index, Ok(r))?;
                    slot.acked = true;
                    st.held -= slot.body.len();
                    slot.body = Vec::new();
                }
            }
        }
        Ok(())
    }

    /// Only a plain Ack is success.
    fn judge(
        &self,
        index: u64,
        r: Result<lapin::Result<Confirmation>, tokio::time::error::Elapsed>,
    ) -> Result<(), PublishError> {
        match r {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned))))
            | Ok(Ok(Confirmation::Nack(Some(returned)))) => Err(PublishError::Returned {
                index,
                exchange: returned.delivery.exchange.to_string(),
                routing_key: returned.delivery.routing_key.to_string(),
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(None))) => Err(PublishError::Nacked { index }),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::NotRequested { index }),
            Ok(Err(e)) => Err(PublishError::ConnectionLost {
                index,
                reason: self.lost_reason(&e),
            }),
            Err(_) => Err(self.stalled(index)),
        }
    }

    /// Why an operation failed: a "channel is closed" error says little, so
    /// prefer what the broker or the socket reported (e.g. "broker forced
    /// connection closure with reason 'shutdown'").
    fn lost_reason(&self, e: &lapin::Error) -> String {
        let state_error = matches!(
            e.kind(),
            ErrorKind::InvalidChannelState(..) | ErrorKind::InvalidConnectionState(..)
        );
        let last = self
            .link
            .as_ref()
            .and_then(|l| l.last_error.lock().ok().and_then(|g| g.clone()));
        match last {
            Some(last) if state_error => last,
            _ => describe(e),
        }
    }

    /// A timeout: blocked broker or silent one.
    fn stalled(&self, index: u64) -> PublishError {
        match self.link.as_ref().and_then(Link::blocked_reason) {
            Some(reason) => PublishError::Blocked {
                index,
                reason,
                timeout: self.opts.confirm_timeout,
            },
            None => PublishError::ConfirmTimeout {
                index,
                timeout: self.opts.confirm_timeout,
            },
        }
    }

    /// Publishes one message; the returned deadline bounds its confirm.
    async fn send(
        &self,
        slot: &Slot,
        prefix: Option<&str>,
    ) -> Result<(PublisherConfirm, Instant), PublishError> {
        let Some(link) = self.link.as_ref() else {
            return Err(PublishError::ConnectionLost {
                index: slot.index,
                reason: "not connected".into(),
            });
        };
        let mut props = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_app_id(APP_ID.into())
            .with_timestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
        if self.cfg.persistent {
            props = props.with_delivery_mode(2);
        }
        if let Some(prefix) = prefix {
            props = props.with_message_id(format!("{prefix}:{}", slot.index).into());
        }
        let publish = link.channel.basic_publish(
            self.cfg.exchange.as_str().into(),
            self.cfg.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &slot.body,
            props,
        );
        // While the broker blocks us the frame is never written, so this
        // wait is the "bounded by the confirm timeout" of design §6.5.
        match tokio::time::timeout(self.opts.confirm_timeout, publish).await {
            Ok(Ok(confirm)) => Ok((confirm, Instant::now() + self.opts.confirm_timeout)),
            Ok(Err(e)) => Err(PublishError::ConnectionLost {
                index: slot.index,
                reason: self.lost_reason(&e),
            }),
            Err(_) => Err(self.stalled(slot.index)),
        }
    }

    /// Tries every host in order; sets up queue and confirm mode on the
    /// first that answers. After the first link the queue is only checked
    /// (see [`queue::ensure`]).
    async fn open_link(&mut self) -> Result<Link, PublishError> {
        let mut failures = Vec::new();
        let mut auth: Option<PublishError> = None;
        for ep in &self.cfg.endpoints {
            let name = ep.to_string();
            let failure = match self.open_connection(ep).await {
                Ok(conn) => match self.setup(conn, &name).await {
                    Ok(link) => {
                        if self.cfg.queue.is_some() {
                            self.queue_seen = Some(std::time::Instant::now());
                        }
                        self.notice(&Notice::Connected { endpoint: name });
                        return Ok(link);
                    }
                    Err(SetupError::Fatal(e)) => return Err(e),
                    Err(SetupError::Endpoint(reason)) => EndpointFailure {
                        endpoint: name,
                        reason,
                        permanent: false,
                    },
                },
                Err(ConnectError::Refused(reason)) => {
                    auth.get_or_insert(PublishError::Auth {
                        user: self.cfg.username.clone(),
                        endpoint: name.clone(),
                        reason: reason.clone(),
                        config: self.cfg.path.clone(),
                    });
                    EndpointFailure {
                        endpoint: name,
                        reason,
                        permanent: true,
                    }
                }
                Err(ConnectError::Other { reason, permanent }) => EndpointFailure {
                    endpoint: name,
                    reason,
                    permanent,
                },
            };
            if self.cfg.endpoints.len() > 1 {
                self.notice(&Notice::EndpointFailed {
                    endpoint: failure.endpoint.clone(),
                    reason: failure.reason.clone(),
                });
            }
            failures.push(failure);
        }
        Err(auth.unwrap_or(PublishError::Connect { failures }))
    }

    async fn open_connection(&self, ep: &Endpoint) -> Result<Connection, ConnectError> {
        let timeout = self.opts.connect_timeout;
        let timed_out = || ConnectError::Other {
            reason: format!("no answer within {} s", timeout.as_secs_f64()),
            permanent: false,
        };
        let deadline = Instant::now() + timeout;

        let host = ep.host.clone();
        let port = ep.port;
        let resolve = tokio::task::spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<SocketAddr>>())
        });
        let addrs = match tokio::time::timeout_at(deadline, resolve).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(ConnectError::Other {
                    reason: format!("name lookup failed: {e}"),
                    permanent: false,
                });
            }
            Ok(Ok(Err(e))) => {
                return Err(ConnectError::Other {
                    reason: format!("cannot resolve host name '{}': {e}", ep.host),
                    permanent: false,
                });
            }
            Ok(Ok(Ok(addrs))) => addrs,
        };

        let uri = AMQPUri {
            scheme: if self.tls.is_some() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.cfg.username.clone(),
                    password: self.cfg.password.clone(),
                },
                host: ep.host.clone(),
                port: ep.port,
            },
            vhost: self.cfg.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(u16::try_from(self.opts.heartbeat.as_secs()).unwrap_or(u16::MAX)),
                connection_timeout: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                ..AMQPQueryString::default()
            },
        };
        let tls = self.tls.clone();
        let domain = self
            .cfg
            .tls
            .as_ref()
            .and_then(|t| t.server_hostname.clone())
            .unwrap_or_else(|| ep.host.clone());
        let runtime = lapin::runtime::default_runtime().map_err(|e| ConnectError::Other {
            reason: describe(&e),
            permanent: true,
        })?;
        let properties = ConnectionProperties::default().with_connection_name(APP_ID.into());
        let connect = Connection::connector(
            uri,
            runtime,
            async move |_uri, rt| {
                // Runs on lapin's I/O thread; the timeout makes sure a
                // black-holed host does not keep that thread forever.
                let open = async {
                    let stream = AsyncTcpStream::connect(&rt, addrs.clone()).await?;
                    match &tls {
                        Some(connector) => stream.into_rustls(connector, &domain).await,
                        None => Ok(stream),
                    }
                };
                match tokio::time::timeout_at(deadline, open).await {
                    Ok(r) => r.map_err(lapin::Error::from),
                    Err(_) => Err(lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out",
                    ))),
                }
            },
            properties,
        );
        match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                let mut err = classify_connect_error(&e, timeout);
                // With TLS 1.3 a broker that wants a client certificate
                // refuses it after the handshake; the alert often loses the
                // race with the TCP reset, so say what it probably was.
                let no_client_cert = self.cfg.tls.as_ref().is_some_and(|t| t.certfile.is_none());
                if let ConnectError::Other { reason, permanent } = &mut err
                    && no_client_cert
                    && matches!(
                        e.kind(),
                        ErrorKind::IOError(io) if matches!(
                            io.kind(),
                            std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::UnexpectedEof
                                | std::io::ErrorKind::BrokenPipe
                        )
                    )
                {
                    reason.push_str(
                        " right after the TLS handshake (does the broker require a client \
                         certificate? set certfile and keyfile in [ssl_options])",
                    );
                    *permanent = false;
                }
                Err(err)
            }
        }
    }

    async fn setup(&self, conn: Connection, endpoint: &str) -> Result<Link, SetupError> {
        let (tx, blocked) = watch::channel(None);
        let mut events = Box::pin(conn.events_listener());
        let sink = self.opts.notices.clone();
        let wait = self.opts.confirm_timeout;
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let last = last_error.clone();
        let events = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let notice = match event {
                    Event::Error(e) => {
                        if let Ok(mut g) = last.lock() {
                            *g = Some(describe(&e));
                        }
                        continue;
                    }
                    Event::ConnectionBlocked(reason) => {
                        tx.send_replace(Some(reason.clone()));
                        Notice::Blocked { reason, wait }
                    }
                    Event::ConnectionUnblocked => {
                        tx.send_replace(None);
                        Notice::Unblocked
                    }
                    _ => continue,
                };
                if let Some(sink) = &sink {
                    sink(&notice);
                }
            }
        });
        let timeout = self.opts.confirm_timeout;
        let step =
            |what: &str, e: lapin::Error| SetupError::Endpoint(format!("{what}: {}", describe(&e)));
        let stalled = |what: &str| {
            SetupError::Endpoint(format!(
                "{what}: no answer within {} s",
                timeout.as_secs_f64()
            ))
        };
        let channel = tokio::time::timeout(timeout, conn.create_channel())
            .await
            .map_err(|_| stalled("opening a channel"))?
            .map_err(|e| step("opening a channel", e))?;
        let (channel, state) = queue::ensure(
            &conn,
            channel,
            &self.cfg,
            timeout,
            self.queue_seen,
            !self.opts.check_only,
        )
        .await
        .map_err(SetupError::Fatal)?;
        if let Ok(mut s) = self.queue_state.lock() {
            *s = Some(state);
        }
        if state == QueueState::Created
            && let Ok(mut c) = self.queue_created.lock()
        {
            c.get_or_insert_with(SystemTime::now);
        }
        tokio::time::timeout(
            timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .map_err(|_| stalled("enabling publisher confirms"))?
        .map_err(|e| step("enabling publisher confirms", e))?;
        Ok(Link {
            conn,
            channel,
            endpoint: endpoint.to_string(),
            blocked,
            last_error,
            events,
        })
    }
}

enum ConnectError {
    /// The broker refused the login or vhost.
    Refused(String),
    Other {
        reason: String,
        permanent: bool,
    },
}

enum SetupError {
    /// Not this host's fault alone (queue mismatch): stop trying.
    Fatal(PublishError),
    /// This host failed; try the next one.
    Endpoint(String),
}

fn classify_connect_error(e: &lapin::Error, timeout: Duration) -> ConnectError {
    match e.kind() {
        // 403 ACCESS_REFUSED (login), 530 NOT_ALLOWED (vhost).
        ErrorKind::ProtocolError(err) if matches!(err.get_id(), 403 | 530) => {
            ConnectError::Refused(err.get_message().to_string())
        }
        ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ConnectError::Other {
                reason: format!("no answer within {} s", timeout.as_secs_f64()),
                permanent: false,
            }
        }
        ErrorKind::IOError(io) => {
            let reason = io_words(io);
            ConnectError::Other {
                permanent: reason.starts_with("TLS"),
                reason,
            }
        }
        _ => ConnectError::Other {
            reason: describe(e),
            permanent: false,
        },
    }
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
    fn errors_read_well() {
        let e = PublishError::Returned {
            index: 4,
            exchange: "amq.direct".into(),
            routing_key: "nowhere".into(),
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        };
        assert_eq!(
            e.to_string(),
            "the broker returned line 5 (index 4) as unroutable (312 NO_ROUTE): exchange 'amq.direct' has no queue bound with routing key 'nowhere'"
        );
        let wrapped = PublishError::Unconfirmed {
            index: 4,
            retries: 0,
            pending: 1,
            cause: Box::new(e),
        };
        assert!(wrapped.to_string().starts_with(
            "line 5 (index 4) was not confirmed after 0 retries: the broker returned"
        ));
        assert!(matches!(wrapped.root(), PublishError::Returned { .. }));
    }

    #[test]
    fn retryable_classes() {
        assert!(PublishError::Nacked { index: 0 }.is_retryable());
        assert!(
            !PublishError::Blocked {
                index: 0,
                reason: "x".into(),
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );
        let tls_only = PublishError::Connect {
            failures: vec![EndpointFailure {
                endpoint: "h:1".into(),
                reason: "TLS handshake failed".into(),
                permanent: true,
            }],
        };
        assert!(!tls_only.is_retryable());
    }

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
