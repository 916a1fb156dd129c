//! Reading a stream back (design §14.6): one subscription on one
//! connection to any node holding a member of the stream, credit-bounded
//! (at most `credit` chunks delivered and not yet consumed), messages in
//! offset order, the broker's offset tracking (store and query by name),
//! and after a lost connection a new subscription from the offset after
//! the last message returned (no gap, no repeat), with the publisher's
//! bounded backoff and retries.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use rabbitmq_stream_protocol::commands::credit::CreditCommand;
use rabbitmq_stream_protocol::commands::metadata::MetadataCommand;
use rabbitmq_stream_protocol::commands::query_offset::QueryOffsetRequest;
use rabbitmq_stream_protocol::commands::store_offset::StoreOffset;
use rabbitmq_stream_protocol::commands::subscribe::{OffsetSpecification, SubscribeCommand};
use tokio::time::Instant;

use super::chunk::{self, USER_CHUNK};
use super::conn::{Conn, Event, OpenError};
use super::frame::{self, code_name};
use super::link::Site;
use super::refused;
use super::wire::encode;
use crate::config::{RabbitConfig, StreamConfig};
use crate::publish::{Notice, PublishError, PublishOptions};

/// The subscription id we use (one subscription per connection).
const SUBSCRIPTION: u8 = 0;
/// Largest deliver frame taken: a chunk is one frame whatever the
/// negotiated frame size (the broker sizes chunks by its batching).
const CHUNK_MAX: u32 = 256 << 20;
/// Pause between metadata queries while the stream has no member ready.
const MEMBER_POLL: Duration = Duration::from_millis(200);
/// How long one wait for a chunk lasts before it is simply started again
/// (an idle subscription is normal; a dead broker is found by the
/// heartbeats, which end the connection).
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first message the stream still holds.
    First,
    /// The last chunk the stream holds (its messages, then what comes).
    Last,
    /// Only messages stored after the subscription.
    Next,
    /// The message at this offset (or the first one after it that the
    /// stream still holds).
    Offset(u64),
    /// The first chunk stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl fmt::Display for StartAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartAt::First => write!(f, "first"),
            StartAt::Last => write!(f, "last"),
            StartAt::Next => write!(f, "next"),
            StartAt::Offset(o) => write!(f, "offset {o}"),
            StartAt::Timestamp(t) => write!(f, "timestamp {t} ms"),
        }
    }
}

impl StartAt {
    fn spec(self) -> OffsetSpecification {
        match self {
            StartAt::First => OffsetSpecification::First,
            StartAt::Last => OffsetSpecification::Last,
            StartAt::Next => OffsetSpecification::Next,
            StartAt::Offset(o) => OffsetSpecification::Offset(o),
            StartAt::Timestamp(t) => OffsetSpecification::Timestamp(t),
        }
    }
}

/// One message read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its offset in the stream (store it to continue after it).
    pub offset: u64,
    /// When the broker stored its chunk (ms since the epoch).
    pub timestamp_ms: i64,
    /// Its AMQP 1.0 data section(s), joined: the bytes as published,
    /// whether over the stream protocol or AMQP 0-9-1.
    pub body: Vec<u8>,
    /// Its `message-id` property as text (AMQP 0-9-1's `message_id`
    /// arrives there); `None` when it has none.
    pub message_id: Option<String>,
}

/// Reads one stream over the stream protocol (design §14.6). Needs a tokio
/// runtime with timers and I/O enabled (a reader and a writer task per
/// connection answer heartbeats while the runtime runs).
///
/// Never creates the stream. Failures a reconnect may cure are retried
/// inside the calls with the publisher's backoff and retries; an error
/// returned means reading should stop (except
/// [`PublishError::StreamMessage`], see [`next`](Self::next)). A broker
/// that goes silent is noticed by the heartbeats
/// ([`PublishOptions::heartbeat`]; with 0, an idle subscription to a
/// vanished host without a closed socket waits for ever).
pub struct StreamReader {
    cfg: RabbitConfig,
    stream: StreamConfig,
    opts: PublishOptions,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<Conn>,
    /// Where the subscription started and its credit, once subscribed.
    subscribed: Option<(StartAt, u16)>,
    /// Messages of the chunk being consumed, not yet returned.
    buffer: VecDeque<Taken>,
    /// A chunk was taken and its credit is not given back yet (given when
    /// its last message was consumed, at the next call).
    owed: bool,
    /// Offset of the next message to return: records below it are
    /// dropped (a subscription at an offset inside a chunk gets the whole
    /// chunk; a resubscription must not repeat).
    from: Option<u64>,
    /// Messages returned.
    returned: u64,
    /// Failures in a row without a message returned in between.
    failures: u32,
    /// Messages returned at the last failure.
    returned_at_failure: u64,
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("stream", &self.stream.name)
            .field("endpoint", &self.endpoint())
            .field("subscribed", &self.subscribed)
            .field("from", &self.from)
            .field("returned", &self.returned)
            .finish()
    }
}

impl StreamReader {
    /// Connects to the first usable host of `cfg.endpoints` (on the stream
    /// port, TLS as configured) and checks that the stream exists; a node
    /// without a member of the stream hands over to one that has one. A
    /// missing stream is an error naming the stream and the host (it is
    /// never created: a reader has nothing to put in it).
    pub async fn connect(cfg: &RabbitConfig, opts: &PublishOptions) -> Result<Self, PublishError> {
        let (stream, tls) = super::configured(cfg, "read")?;
        let mut reader = StreamReader {
            cfg: cfg.clone(),
            stream,
            opts: opts.clone(),
            tls,
            conn: None,
            subscribed: None,
            buffer: VecDeque::new(),
            owed: false,
            from: None,
            returned: 0,
            failures: 0,
            returned_at_failure: 0,
        };
        reader.conn = Some(reader.link().await?);
        Ok(reader)
    }

    /// `host:port` of the node read from.
    pub fn endpoint(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.endpoint.as_str())
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream.name
    }

    /// The offset stored on the broker under `name` (server-side offset
    /// tracking: [`store_offset`](Self::store_offset)), `None` when none
    /// is stored.
    pub async fn query_offset(&mut self, name: &str) -> Result<Option<u64>, PublishError> {
        check_name(&self.stream.name, name)?;
        loop {
            let asked = match self.conn.as_mut() {
                Some(conn) => query_on(conn, &self.stream.name, name).await,
                None => Err(self.lost("not connected")),
            };
            match asked {
                Ok(o) => return Ok(o),
                Err(e) => self.recover(e).await?,
            }
        }
    }

    /// Starts the subscription at `at` with `credit` chunks in flight
    /// (at least 1): memory is bounded by `credit` chunks whatever the
    /// backlog. Once per reader.
    pub async fn subscribe(&mut self, at: StartAt, credit: u16) -> Result<(), PublishError> {
        if self.subscribed.is_some() {
            return Err(PublishError::Stream {
                stream: self.stream.name.clone(),
                what: "subscribe to",
                reason: "this reader is subscribed already".into(),
                retryable: false,
            });
        }
        let credit = credit.max(1);
        self.subscribed = Some((at, credit));
        self.from = match at {
            StartAt::First => Some(0),
            StartAt::Offset(o) => Some(o),
            _ => None,
        };
        let done = match self.conn.as_mut() {
            Some(conn) => subscribe_on(conn, &self.stream.name, at, credit).await,
            None => Err(self.lost("not connected")),
        };
        match done {
            Ok(()) => Ok(()),
            // The reconnect subscribes again.
            Err(e) => self.recover(e).await,
        }
    }

    /// The next message in offset order. Waits as long as needed (wrap it
    /// in a timeout to stop when the stream stays idle). A lost connection
    /// is retried: reconnect, subscribe again from the offset after the
    /// last message returned (no gap, no repeat); an error after the
    /// retries are spent. Cancel-safe: a call dropped while it waits (in a
    /// timeout) loses no message and no credit.
    ///
    /// A message that cannot be read (not AMQP 1.0, or a body that is not
    /// bytes) is [`PublishError::StreamMessage`] naming its offset; the
    /// reader stays usable and the next call goes on after it. Any other
    /// error means reading should stop.
    pub async fn next(&mut self) -> Result<Delivery, PublishError> {
        if self.subscribed.is_none() {
            return Err(PublishError::Stream {
                stream: self.stream.name.clone(),
                what: "read",
                reason: "not subscribed (call subscribe first)".into(),
                retryable: false,
            });
        }
        loop {
            if let Some(taken) = self.buffer.pop_front() {
                self.returned += 1;
                return match taken {
                    Ok(d) => {
                        self.from = Some(d.offset + 1);
                        Ok(d)
                    }
                    Err((offset, reason)) => {
                        self.from = Some(offset + 1);
                        Err(PublishError::StreamMessage {
                            stream: self.stream.name.clone(),
                            offset,
                            reason,
                        })
                    }
                };
            }
            if self.owed {
                // Cleared only once sent: a call cancelled meanwhile (a
                // timeout around `next`) leaves the credit owed, not lost.
                if let Err(e) = self.credit().await {
                    self.recover(e).await?;
                    continue;
                }
                self.owed = false;
            }
            let event = match self.conn.as_mut() {
                Some(conn) => conn.next_event(IDLE_WAIT).await,
                None => {
                    self.recover(self.lost("not connected")).await?;
                    continue;
                }
            };
            match event {
                None => {}
                Some(e) => {
                    if let Err(e) = self.handle(e) {
                        self.recover(e).await?;
                    }
                }
            }
        }
    }

    /// Stores `offset` under `name` on the broker (server-side offset
    /// tracking; read back with [`query_offset`](Self::query_offset)). The
    /// protocol has no answer to a store: a query follows it on the same
    /// connection, so once this returns the broker has taken the store
    /// (it writes it asynchronously: a query right after may still see the
    /// previous value). Store after the messages are written out: a crash
    /// then repeats at most what was written since the last store.
    pub async fn store_offset(&mut self, name: &str, offset: u64) -> Result<(), PublishError> {
        check_name(&self.stream.name, name)?;
        loop {
            let done = match self.conn.as_mut() {
                Some(conn) => store_on(conn, &self.stream.name, name, offset).await,
                None => Err(self.lost("not connected")),
            };
            match done {
                Ok(()) => return Ok(()),
                Err(e) => self.recover(e).await?,
            }
        }
    }

    /// Closes the connection politely (bounded to a couple of seconds).
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }

    /// Takes in one event: a chunk goes to the buffer (records below
    /// `from` dropped); what ends the subscription is an error to recover.
    fn handle(&mut self, event: Event) -> Result<(), PublishError> {
        match event {
            Event::Deliver {
                subscription,
                frame,
            } if subscription == SUBSCRIPTION => {
                let from = self.from.unwrap_or(0);
                let got = deliveries(&frame, from).map_err(|reason| self.unreadable(&reason))?;
                self.owed = true;
                self.buffer.extend(got);
                Ok(())
            }
            Event::Deliver { .. } | Event::Confirm { .. } | Event::Refused { .. } => Ok(()),
            Event::CreditRefused { code, .. } => {
                Err(self.lost(&format!("the broker refused a credit: {}", code_name(code))))
            }
            Event::MetadataUpdate { stream, code } if stream == self.stream.name => {
                Err(self.lost(&format!(
                    "the broker ended the subscription: the stream's topology changed ({})",
                    code_name(code)
                )))
            }
            Event::MetadataUpdate { .. } => Ok(()),
            Event::Closed { code, reason } => Err(self.lost(&format!(
                "the broker closed the connection: {reason} ({})",
                code_name(code)
            ))),
            Event::Lost(reason) => Err(self.lost(&reason)),
        }
    }

    /// Gives the broker one chunk of credit back.
    async fn credit(&mut self) -> Result<(), PublishError> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(self.lost("not connected"));
        };
        conn.send_frame(encode(CreditCommand::new(SUBSCRIPTION, 1).into()))
            .await
            .map_err(|reason| PublishError::StreamLost {
                endpoint: conn.endpoint.clone(),
                reason,
            })
    }

    fn unreadable(&self, reason: &str) -> PublishError {
        PublishError::Stream {
            stream: self.stream.name.clone(),
            what: "read",
            reason: format!("at {}: {reason}", self.endpoint().unwrap_or("the broker")),
            retryable: false,
        }
    }

    fn lost(&self, reason: &str) -> PublishError {
        PublishError::StreamLost {
            endpoint: self.endpoint().unwrap_or("the broker").to_string(),
            reason: reason.to_string(),
        }
    }

    fn notice(&self, n: &Notice) {
        if let Some(sink) = &self.opts.notices {
            sink(n);
        }
    }

    /// After a failure: drop the connection and what was buffered, back
    /// off, connect again and subscribe from the offset after the last
    /// message returned. Gives up (returning the failure) when it cannot
    /// be retried or after `retries` rounds without a message returned.
    async fn recover(&mut self, mut cause: PublishError) -> Result<(), PublishError> {
        loop {
            self.conn = None;
            self.buffer.clear();
            self.owed = false;
            if self.returned > self.returned_at_failure {
                self.failures = 0;
            }
            self.returned_at_failure = self.returned;
            if !cause.is_retryable() || self.failures >= self.opts.retries {
                return Err(self.give_up(cause));
            }
            self.failures += 1;
            let delay = self
                .opts
                .backoff
                .saturating_mul(1 << (self.failures - 1).min(16))
                .min(self.opts.max_backoff);
            let at = self.resume_at();
            self.notice(&Notice::StreamResubscribing {
                attempt: self.failures,
                retries: self.opts.retries,
                delay,
                from: at.map(|(a, _)| a.to_string()),
                cause: cause.to_string(),
            });
            tokio::time::sleep(delay).await;
            match self.relink(at).await {
                Ok(()) => return Ok(()),
                Err(e) => cause = e,
            }
        }
    }

    fn resume_at(&self) -> Option<(StartAt, u16)> {
        resume_at(self.subscribed, self.from)
    }

    fn give_up(&self, cause: PublishError) -> PublishError {
        if self.failures == 0 {
            return cause;
        }
        PublishError::StreamUnread {
            stream: self.stream.name.clone(),
            from: self.from,
            retries: self.failures,
            cause: Box::new(cause),
        }
    }

    async fn relink(&mut self, at: Option<(StartAt, u16)>) -> Result<(), PublishError> {
        let mut conn = self.link().await?;
        if let Some((at, credit)) = at {
            subscribe_on(&mut conn, &self.stream.name, at, credit).await?;
        }
        self.conn = Some(conn);
        Ok(())
    }

    fn site(&self) -> Site<'_> {
        Site {
            cfg: &self.cfg,
            opts: &self.opts,
            tls: self.tls.as_ref(),
            port: self.stream.port,
            inbound_max: Some(CHUNK_MAX),
        }
    }

    /// A connection to a node with a member of the stream (the one first
    /// reached when it has one), trying the configured hosts in order.
    async fn link(&self) -> Result<Conn, PublishError> {
        self.site().each_host(|conn| self.to_member(conn)).await
    }

    /// Checks that the stream exists and returns a connection to a node
    /// holding a member of it: `conn` itself when it does (or when the
    /// broker does not say where it is), else a replica, else the leader.
    async fn to_member(&self, mut conn: Conn) -> Result<Conn, PublishError> {
        let members = self.members(&mut conn).await?;
        let here = &conn.advertised;
        if here.0.is_empty() || members.iter().any(|m| m == here) {
            return Ok(conn);
        }
        let site = self.site();
        let mut last = String::new();
        for (host, port) in members.iter().rev() {
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            let target = site.target(host, port);
            match Conn::open(&target, &site.login()).await {
                Ok(c) => {
                    conn.close().await;
                    return Ok(c);
                }
                Err(OpenError::Auth(reason)) => return Err(site.auth(&target.endpoint, reason)),
                Err(OpenError::Endpoint { reason, .. }) => {
                    last = format!("{}: {reason}", target.endpoint);
                }
            }
        }
        Err(refused(
            &self.stream.name,
            "reach a member of",
            &conn.endpoint,
            format!("no node holding it could be reached ({last})"),
            true,
        ))
    }

    /// The nodes holding the stream (leader first, then replicas), asked
    /// until the connect timeout while it has none ready.
    async fn members(&self, conn: &mut Conn) -> Result<Vec<(String, u32)>, PublishError> {
        let name = self.stream.name.clone();
        let deadline = Instant::now() + self.opts.connect_timeout;
        loop {
            let n = name.clone();
            let answer = conn.call(|c| MetadataCommand::new(c, vec![n]).into()).await;
            let frame = answer.map_err(|reason| PublishError::StreamLost {
                endpoint: conn.endpoint.clone(),
                reason,
            })?;
            match frame::members(&frame, &name) {
                Ok(m) => return Ok(m),
                Err(frame::STREAM_DOES_NOT_EXIST) => {
                    return Err(refused(
                        &name,
                        "read",
                        &conn.endpoint,
                        format!(
                            "{} in vhost '{}' (a reader never creates it)",
                            code_name(frame::STREAM_DOES_NOT_EXIST),
                            self.cfg.vhost
                        ),
                        false,
                    ));
                }
                Err(code) if code == frame::STREAM_NOT_AVAILABLE && Instant::now() < deadline => {
                    tokio::time::sleep(MEMBER_POLL).await;
                }
                Err(code) => {
                    return Err(refused(
                        &name,
                        "read",
                        &conn.endpoint,
                        code_name(code),
                        code == frame::STREAM_NOT_AVAILABLE,
                    ));
                }
            }
        }
    }
}

/// A message taken from a chunk: read, or its offset and why it cannot be.
type Taken = Result<Delivery, (u64, String)>;

/// The messages of a deliver frame at or after offset `from`, in offset
/// order (a subscription at an offset inside a chunk gets the whole chunk);
/// none from a chunk that is not user data. An error for a frame that
/// cannot be parsed; a message that cannot be read is its own entry.
fn deliveries(frame: &[u8], from: u64) -> Result<Vec<Taken>, String> {
    let c = chunk::parse(frame)?;
    if c.kind != USER_CHUNK {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(c.records.len());
    for (i, record) in c.records.iter().enumerate() {
        let offset = c.first_offset + i as u64;
        if offset < from {
            continue;
        }
        out.push(
            chunk::amqp(record)
                .map(|m| Delivery {
                    offset,
                    timestamp_ms: c.timestamp_ms,
                    body: m.body,
                    message_id: m.message_id,
                })
                .map_err(|reason| (offset, reason)),
        );
    }
    Ok(out)
}

/// Where a new subscription starts: after the last message returned
/// (`from`), else where the first one started (before any message of a
/// `next` or `last` subscription, what came meanwhile is not known);
/// `None` before subscribing.
fn resume_at(subscribed: Option<(StartAt, u16)>, from: Option<u64>) -> Option<(StartAt, u16)> {
    let (at, credit) = subscribed?;
    Some(match from {
        Some(o) => (StartAt::Offset(o), credit),
        None => (at, credit),
    })
}

/// An offset-tracking name: 1 to 255 bytes.
fn check_name(stream: &str, name: &str) -> Result<(), PublishError> {
    if name.is_empty() || name.len() > 255 {
        return Err(PublishError::Stream {
            stream: stream.to_string(),
            what: "track offsets on",
            reason: format!("the name '{name}' cannot be used: it must have 1 to 255 bytes"),
            retryable: false,
        });
    }
    Ok(())
}

fn lost_on(conn: &Conn, reason: String) -> PublishError {
    PublishError::StreamLost {
        endpoint: conn.endpoint.clone(),
        reason,
    }
}

/// Subscribes on `conn` (subscription 0).
async fn subscribe_on(
    conn: &mut Conn,
    stream: &str,
    at: StartAt,
    credit: u16,
) -> Result<(), PublishError> {
    let s = stream.to_string();
    let answer = conn
        .call(|c| {
            SubscribeCommand::new(c, SUBSCRIPTION, s, at.spec(), credit, HashMap::new()).into()
        })
        .await;
    let frame = answer.map_err(|r| lost_on(conn, r))?;
    match frame::code(&frame) {
        Some(frame::OK) => Ok(()),
        Some(code) => Err(refused(
            stream,
            "subscribe to",
            &conn.endpoint,
            format!("from {at}: {}", code_name(code)),
            code == frame::STREAM_NOT_AVAILABLE,
        )),
        None => Err(refused(
            stream,
            "subscribe to",
            &conn.endpoint,
            "malformed answer".into(),
            true,
        )),
    }
}

/// Asks for the offset stored under `name`.
async fn query_on(conn: &mut Conn, stream: &str, name: &str) -> Result<Option<u64>, PublishError> {
    let s = stream.to_string();
    let reference = name.to_string();
    let answer = conn
        .call(|c| QueryOffsetRequest::new(c, reference, s).into())
        .await;
    let frame = answer.map_err(|r| lost_on(conn, r))?;
    match (frame::code(&frame), frame::offset(&frame)) {
        (Some(frame::OK), Some(o)) => Ok(Some(o)),
        (Some(frame::NO_OFFSET), _) => Ok(None),
        (Some(code), _) if code != frame::OK => Err(refused(
            stream,
            "query the stored offset on",
            &conn.endpoint,
            format!("name '{name}': {}", code_name(code)),
            code == frame::STREAM_NOT_AVAILABLE,
        )),
        _ => Err(refused(
            stream,
            "query the stored offset on",
            &conn.endpoint,
            "malformed answer".into(),
            true,
        )),
    }
}

/// Stores `offset` under `name`, then waits for the answer to a query
/// sent after it (the broker handles a connection's frames in order).
async fn store_on(
    conn: &mut Conn,
    stream: &str,
    name: &str,
    offset: u64,
) -> Result<(), PublishError> {
    let store = StoreOffset::new(name.to_string(), stream.to_string(), offset);
    conn.send_frame(encode(store.into()))
        .await
        .map_err(|r| lost_on(conn, r))?;
    query_on(conn, stream, name).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::chunk::test_frames::{deliver, simple};
    use super::*;
    use rabbitmq_stream_protocol::codec::Encoder;
    use rabbitmq_stream_protocol::message::Message;

    fn entry(id: &str, body: &str) -> Vec<u8> {
        let m = Message::builder()
            .body(body.as_bytes().to_vec())
            .properties()
            .message_id(id.to_string())
            .message_builder()
            .build();
        let mut b = Vec::new();
        m.encode(&mut b).unwrap();
        simple(&b)
    }

    fn chunk_of_three() -> Vec<u8> {
        deliver(
            10,
            1_000,
            &[entry("a", "[1]"), entry("b", "[2]"), entry("c", "[3]")],
            3,
        )
    }

    fn read(f: &[u8], from: u64) -> Vec<Delivery> {
        deliveries(f, from)
            .unwrap()
            .into_iter()
            .map(|t| t.unwrap())
            .collect()
    }

    #[test]
    fn the_reader_and_its_futures_can_move_between_threads() {
        fn is_send<T: Send>(_: &T) {}
        fn check(r: &mut StreamReader) {
            is_send(&r.next());
            is_send(&r.store_offset("n", 1));
            is_send(&r.query_offset("n"));
            is_send(&r.subscribe(StartAt::First, 1));
        }
        let _ = check;
        fn reader_is_send<T: Send + Sync>() {}
        reader_is_send::<StreamReader>();
    }

    #[test]
    fn records_below_the_start_are_dropped() {
        let f = chunk_of_three();
        let all = read(&f, 0);
        assert_eq!(
            all.iter().map(|d| d.offset).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        assert_eq!(all[0].message_id.as_deref(), Some("a"));
        assert_eq!(all[2].body, b"[3]");
        assert!(all.iter().all(|d| d.timestamp_ms == 1_000));
        let mid = read(&f, 11);
        assert_eq!(
            mid.iter()
                .map(|d| d.message_id.clone().unwrap())
                .collect::<Vec<_>>(),
            vec!["b", "c"]
        );
        assert!(deliveries(&f, 13).unwrap().is_empty());
    }

    #[test]
    fn a_chunk_that_is_not_user_data_gives_nothing() {
        let mut f = chunk_of_three();
        f[10] = 1; // tracking delta
        assert!(deliveries(&f, 0).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_message_is_its_own_entry_named_by_its_offset() {
        let f = deliver(
            5,
            0,
            &[
                entry("a", "[1]"),
                simple(&[0x00, 0x53, 0x77, 0x45]),
                entry("c", "[3]"),
            ],
            3,
        );
        let got = deliveries(&f, 0).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().offset, 5);
        let (offset, reason) = got[1].clone().unwrap_err();
        assert_eq!(offset, 6);
        assert!(reason.contains("amqp-value"), "{reason}");
        assert_eq!(got[2].as_ref().unwrap().offset, 7);
        // Below the start it is not even read.
        assert_eq!(read(&f, 7).len(), 1);
    }

    #[test]
    fn a_resubscription_starts_after_the_last_message_returned() {
        let next = Some((StartAt::Next, 3));
        assert_eq!(resume_at(next, None), Some((StartAt::Next, 3)));
        assert_eq!(resume_at(next, Some(42)), Some((StartAt::Offset(42), 3)));
        assert_eq!(resume_at(None, Some(42)), None);
    }
}
