//! The stream transport's publisher (design §14): RabbitMQ's stream
//! protocol, named producers whose last publishing id the broker keeps and
//! deduplicates on, confirms within a bounded window, TLS, failover over the
//! configured hosts, publishing on the stream's leader, and reconnecting
//! with the broker's sequence as the truth about what it stored.
//!
//! Why our own connection on the codec crate `rabbitmq-stream-protocol`
//! and not the client crate `rabbitmq-stream-client` 0.11: the client's
//! `Client::connect` (src/client/mod.rs) calls
//! `client.exchange_command_versions()` unconditionally right after
//! `initialize` (peer properties, SASL, tune, open), and that sends command
//! 0x001b (exchange command versions), which RabbitMQ added in 3.11.
//! RabbitMQ 3.10 (the Debian package we support) answers an unknown command
//! by closing the connection, so the client cannot connect at all; there is
//! no option to skip it. It also neither reconnects a producer nor follows
//! a leader that moves, which we need anyway. The codec crate encodes and
//! decodes every frame we use (peer properties, SASL handshake and
//! authenticate, tune, open, metadata, create, declare publisher, query
//! publisher sequence, publish, confirm, heartbeat, close) and the AMQP 1.0
//! message format. Where it falls short, [`frame`] reads the field itself:
//! the response codes of `QueryPublisherResponse` and `CloseResponse` and
//! the fields of `MetadataUpdateCommand` are private, a close the broker
//! starts is decoded as a response (its reason is lost), and a publish
//! error with a response code the crate does not know fails the whole
//! frame.
//!
//! Inside: `conn` is one connection (handshake, requests and answers,
//! events), `wire` its framing and its reader and writer tasks
//! (heartbeats both ways), `frame` reads frames, `ledger` keeps the
//! pending messages and the reconnect rule (pure, unit-tested), `link`
//! finds the leader and connects to it, this file drives them.
//!
//! Each message is an AMQP 1.0 message with the body as its data section
//! and the properties `message-id` and `content-type` application/json, so
//! an AMQP 0-9-1 consumer of the stream reads the same body as from a
//! queue. One message per publishing id (no sub-entry batching: it would
//! void deduplication).

mod chunk;
mod conn;
mod frame;
mod ledger;
mod link;
mod reader;
mod wire;

use std::fmt;

use rabbitmq_stream_protocol::Request;
use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::commands::declare_publisher::DeclarePublisherCommand;
use rabbitmq_stream_protocol::commands::publish::PublishCommand;
use rabbitmq_stream_protocol::commands::query_publisher_sequence::QueryPublisherRequest;
use rabbitmq_stream_protocol::message::Message;
use rabbitmq_stream_protocol::types::PublishedMessage;

use super::{CONTENT_TYPE, Notice, PublishError, PublishOptions};
use crate::config::{RabbitConfig, StreamConfig};
use conn::{Conn, Event};
use frame::code_name;
pub use ledger::StreamCounts;
use ledger::{Ledger, Refusal};
pub use reader::{Delivery, StartAt, StreamReader};

/// Most producers on one connection (the protocol's publisher id is a byte).
pub const MAX_PRODUCERS: usize = 255;

/// A producer declared on a [`StreamPublisher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerId(u8);

/// Publishes to one stream over the stream protocol. Needs a tokio runtime
/// with timers and I/O enabled (it spawns a reader and a writer task per
/// connection; heartbeats are answered only while the runtime runs).
///
/// Failures that a reconnect may cure are retried inside the calls (see
/// [`send`](Self::send)); an error returned means the run should stop:
/// drop the publisher (or [`close`](Self::close) it).
pub struct StreamPublisher {
    cfg: RabbitConfig,
    stream: StreamConfig,
    opts: PublishOptions,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<Conn>,
    ledger: Ledger<Message>,
    /// Frame limit of the last connection.
    frame_max: u32,
    /// Failures in a row without a confirm in between.
    failures: u32,
    /// Confirmed count at the last failure.
    progress_at_failure: u64,
}

impl fmt::Debug for StreamPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamPublisher")
            .field("stream", &self.stream.name)
            .field("endpoint", &self.endpoint())
            .field("pending", &self.ledger.pending())
            .field("counts", &self.ledger.counts())
            .finish()
    }
}

fn describe(refusal: Refusal) -> String {
    match refusal {
        Refusal::Zero => "is 0 (ids start at 1)".into(),
        Refusal::NotIncreasing { last } => {
            format!("is not above the producer's previous id {last} (ids must increase)")
        }
        Refusal::UnknownProducer => "names a producer not declared on this publisher".into(),
    }
}

/// TLS connector of a stream connection.
pub(crate) type Tls = Option<tokio_rustls::TlsConnector>;

/// The configured stream and the TLS connector for it, shared by the
/// publisher and the reader (`what`: the verb for a missing stream).
pub(crate) fn configured(
    cfg: &RabbitConfig,
    what: &'static str,
) -> Result<(StreamConfig, Tls), PublishError> {
    let Some(stream) = cfg.stream.clone() else {
        return Err(PublishError::Stream {
            stream: String::new(),
            what,
            reason: "no stream is configured (transport = stream needs stream = NAME)".into(),
            retryable: false,
        });
    };
    let tls = match &cfg.tls {
        Some(t) => {
            let config = super::tls::client_config(t).map_err(PublishError::TlsSetup)?;
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                config,
            )))
        }
        None => None,
    };
    Ok((stream, tls))
}

impl StreamPublisher {
    /// Connects to the first usable host of `cfg.endpoints` (on the stream
    /// port), creates the stream when absent (with
    /// [`StreamOptions::arguments`](crate::config::StreamOptions::arguments)),
    /// and connects to the stream's leader when that is another node. One
    /// pass over the hosts, each bounded by the connect timeout; a refused
    /// login is returned as [`PublishError::Auth`].
    pub async fn connect(cfg: &RabbitConfig, opts: &PublishOptions) -> Result<Self, PublishError> {
        let (stream, tls) = configured(cfg, "use")?;
        let mut publisher = StreamPublisher {
            cfg: cfg.clone(),
            stream,
            opts: opts.clone(),
            tls,
            conn: None,
            ledger: Ledger::new(opts.window.get(), opts.window_bytes),
            frame_max: 0,
            failures: 0,
            progress_at_failure: 0,
        };
        // `--check` only looks: a missing stream is reported, not made.
        let conn = publisher.link(!opts.check_only).await?;
        publisher.frame_max = conn.frame_max;
        publisher.conn = Some(conn);
        Ok(publisher)
    }

    /// `host:port` of the node publishing goes to (the stream's leader).
    pub fn endpoint(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.endpoint.as_str())
    }

    /// True when `e` says the configured stream does not exist (only a
    /// publisher made with [`PublishOptions::check_only`] reports that
    /// instead of creating it).
    pub fn is_missing_stream(e: &PublishError) -> bool {
        matches!(
            e,
            PublishError::Stream {
                what: "find",
                retryable: false,
                ..
            }
        )
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream.name
    }

    /// Counters so far (confirmed, resent, found stored after a reconnect…).
    pub fn counts(&self) -> StreamCounts {
        self.ledger.counts()
    }

    /// Messages sent (or taken) and not confirmed yet.
    pub fn pending(&self) -> usize {
        self.ledger.pending()
    }

    fn notice(&self, n: &Notice) {
        if let Some(sink) = &self.opts.notices {
            sink(n);
        }
    }

    /// Declares a producer named `name` (the broker's deduplication key: keep
    /// it stable across runs) and asks the broker for its last stored id
    /// (see [`last_id`](Self::last_id)). At most [`MAX_PRODUCERS`].
    pub async fn declare(&mut self, name: &str) -> Result<ProducerId, PublishError> {
        if name.is_empty() || name.len() > 255 {
            return Err(PublishError::StreamId {
                producer: name.to_string(),
                id: 0,
                problem: "cannot be used: a producer name has 1 to 255 bytes".into(),
            });
        }
        if (0..self.ledger.producers()).any(|p| self.ledger.name(p) == name) {
            return Err(PublishError::StreamId {
                producer: name.to_string(),
                id: 0,
                problem: "cannot be declared twice on one publisher".into(),
            });
        }
        if self.ledger.producers() >= MAX_PRODUCERS {
            return Err(PublishError::StreamId {
                producer: name.to_string(),
                id: 0,
                problem: format!(
                    "cannot be declared: at most {MAX_PRODUCERS} producers per publisher"
                ),
            });
        }
        let p = self.ledger.add(name);
        let first = match self.conn.as_mut() {
            Some(conn) => match declare_on(conn, &self.stream.name, p, name).await {
                Ok(()) => query_on(conn, &self.stream.name, name).await,
                Err(e) => Err(e),
            },
            None => Err(self.lost("not connected")),
        };
        match first {
            Ok(sequence) => {
                self.ledger.resume(p, sequence);
            }
            // A reconnect declares every producer again, this one included.
            Err(e) => {
                if let Err(e) = self.recover(e).await {
                    self.ledger.forget_last();
                    return Err(e);
                }
            }
        }
        Ok(ProducerId(p as u8))
    }

    /// The broker's last stored publishing id for `producer` (0 when it
    /// knows none), asked now. Send only ids above it: the broker drops
    /// (and confirms) anything at or below.
    pub async fn last_id(&mut self, producer: ProducerId) -> Result<u64, PublishError> {
        let p = usize::from(producer.0);
        let name = self.ledger.name(p).to_string();
        let asked = match self.conn.as_mut() {
            Some(conn) => query_on(conn, &self.stream.name, &name).await,
            None => Err(self.lost("not connected")),
        };
        match asked {
            Ok(sequence) => {
                self.ledger.resume(p, sequence);
            }
            // The reconnect asks again for every producer.
            Err(e) => self.recover(e).await?,
        }
        Ok(self.ledger.sequence(p))
    }

    /// Highest publishing id of `producer` such that it and every message
    /// sent before it are confirmed (or the broker's sequence when that is
    /// higher and nothing is pending); 0 when none. Call [`poll`](Self::poll)
    /// to take in the confirms that arrived.
    pub fn confirmed(&self, producer: ProducerId) -> u64 {
        self.ledger.confirmed(usize::from(producer.0))
    }

    /// Sends one message: `body` as its data section, `message_id` as its
    /// message id, under `publishing_id` (above the producer's previous
    /// one). Waits while the window (messages or bytes) is full; a failure
    /// on the way is recovered (reconnect, ask, resend) up to the retries.
    pub async fn send(
        &mut self,
        producer: ProducerId,
        publishing_id: u64,
        message_id: &str,
        body: Vec<u8>,
    ) -> Result<(), PublishError> {
        let p = usize::from(producer.0);
        self.poll().await?;
        while !self.ledger.has_room() {
            self.wait().await?;
        }
        let len = body.len();
        let message = Message::builder()
            .body(body)
            .properties()
            .message_id(message_id.to_string())
            .content_type(CONTENT_TYPE)
            .message_builder()
            .build();
        let size = publish_request(producer.0, publishing_id, &message).encoded_size() as usize + 4;
        if self.frame_max > 0 && size > self.frame_max as usize {
            return Err(PublishError::StreamTooLarge {
                producer: self.ledger.name(p).to_string(),
                id: publishing_id,
                size,
                max: self.frame_max,
            });
        }
        self.ledger
            .take(p, publishing_id, message, len)
            .map_err(|r| PublishError::StreamId {
                producer: self.ledger.name(p).to_string(),
                id: publishing_id,
                problem: describe(r),
            })?;
        if let Err(e) = self.transmit(p, publishing_id).await {
            // The reconnect resends it with the rest.
            self.recover(e).await?;
        }
        Ok(())
    }

    /// Writes pending message `id` of `p` on the current connection.
    async fn transmit(&mut self, p: usize, id: u64) -> Result<(), PublishError> {
        let Some(message) = self.ledger.payload(p, id) else {
            return Ok(());
        };
        let bytes = publish_frame(p as u8, id, message);
        let Some(conn) = self.conn.as_ref() else {
            return Err(self.lost("not connected"));
        };
        let endpoint = conn.endpoint.clone();
        conn.send_frame(bytes)
            .await
            .map_err(|reason| PublishError::StreamLost { endpoint, reason })?;
        self.ledger.sent(p, id);
        Ok(())
    }

    /// Takes in the confirms and errors that have arrived, without waiting.
    pub async fn poll(&mut self) -> Result<(), PublishError> {
        while let Some(event) = self.conn.as_mut().and_then(Conn::try_event) {
            self.handle(event).await?;
        }
        if self.conn.is_none() {
            return self.recover(self.lost("not connected")).await;
        }
        Ok(())
    }

    /// Waits until every message sent is confirmed.
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        while self.ledger.pending() > 0 {
            self.wait().await?;
        }
        Ok(())
    }

    /// Closes the connection politely (bounded to a couple of seconds);
    /// unconfirmed messages are abandoned (call [`flush`](Self::flush)
    /// first).
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }

    /// Waits for one event (bounded by the confirm timeout) and handles it.
    async fn wait(&mut self) -> Result<(), PublishError> {
        let wait = self.opts.confirm_timeout;
        let event = match self.conn.as_mut() {
            Some(conn) => conn.next_event(wait).await,
            None => return self.recover(self.lost("not connected")).await,
        };
        match event {
            Some(e) => self.handle(e).await,
            None if self.ledger.pending() > 0 => {
                let reason = format!("no confirm within {} s", wait.as_secs_f64());
                self.recover(self.lost(&reason)).await
            }
            None => Ok(()),
        }
    }

    fn lost(&self, reason: &str) -> PublishError {
        PublishError::StreamLost {
            endpoint: self.endpoint().unwrap_or("the broker").to_string(),
            reason: reason.to_string(),
        }
    }

    async fn handle(&mut self, event: Event) -> Result<(), PublishError> {
        match event {
            Event::Confirm { publisher, ids } => {
                self.ledger.confirm(usize::from(publisher), &ids);
                Ok(())
            }
            Event::Refused { publisher, errors } => {
                let p = usize::from(publisher);
                let mut retry = None;
                for &(id, code) in &errors {
                    if !self.ledger.refused(p, id) {
                        continue;
                    }
                    let reason = code_name(code);
                    match code {
                        frame::STREAM_NOT_AVAILABLE
                        | frame::PUBLISHER_DOES_NOT_EXIST
                        | frame::INTERNAL_ERROR => {
                            retry.get_or_insert(format!(
                                "the broker refused message {id}: {reason}"
                            ));
                        }
                        _ => {
                            return Err(PublishError::StreamRefused {
                                stream: self.stream.name.clone(),
                                producer: self.ledger.name(p).to_string(),
                                id,
                                reason,
                            });
                        }
                    }
                }
                match retry {
                    Some(reason) => self.recover(self.lost(&reason)).await,
                    None => Ok(()),
                }
            }
            Event::MetadataUpdate { stream, code } if stream == self.stream.name => {
                let reason = format!(
                    "the broker reports a change of the stream's topology ({}); finding its leader again",
                    code_name(code)
                );
                self.recover(self.lost(&reason)).await
            }
            Event::MetadataUpdate { .. } => Ok(()),
            Event::Closed { code, reason } => {
                let reason = format!(
                    "the broker closed the connection: {reason} ({})",
                    code_name(code)
                );
                self.recover(self.lost(&reason)).await
            }
            Event::Lost(reason) => self.recover(self.lost(&reason)).await,
            // A publisher never subscribes.
            Event::Deliver { .. } | Event::CreditRefused { .. } => Ok(()),
        }
    }

    /// After a failure: drop the connection, back off, connect to the
    /// leader again, declare every producer, ask each for its sequence,
    /// count what the broker stored and resend the rest in id order.
    /// Gives up (returning the failure) when it cannot be retried or after
    /// `retries` rounds without a confirm.
    async fn recover(&mut self, mut cause: PublishError) -> Result<(), PublishError> {
        loop {
            self.conn = None;
            self.ledger.lose_link();
            let progress = self.ledger.counts().confirmed;
            if progress > self.progress_at_failure {
                self.failures = 0;
            }
            self.progress_at_failure = progress;
            if !cause.is_retryable() || self.failures >= self.opts.retries {
                return Err(self.give_up(cause));
            }
            self.failures += 1;
            let delay = self
                .opts
                .backoff
                .saturating_mul(1 << (self.failures - 1).min(16))
                .min(self.opts.max_backoff);
            self.notice(&Notice::StreamRetrying {
                attempt: self.failures,
                retries: self.opts.retries,
                delay,
                pending: self.ledger.pending() as u64,
                cause: cause.to_string(),
            });
            tokio::time::sleep(delay).await;
            match self.relink().await {
                Ok(()) => {
                    self.ledger.reconnected();
                    return Ok(());
                }
                Err(e) => cause = e,
            }
        }
    }

    fn give_up(&self, cause: PublishError) -> PublishError {
        match self.ledger.first_pending() {
            Some((p, id)) => PublishError::StreamUnconfirmed {
                producer: self.ledger.name(p).to_string(),
                id,
                retries: self.failures,
                pending: self.ledger.pending() as u64,
                cause: Box::new(cause),
            },
            None => cause,
        }
    }

    /// A new connection to the leader with every producer declared again,
    /// its sequence asked, and the pending messages above it resent.
    async fn relink(&mut self) -> Result<(), PublishError> {
        let conn = self.link(false).await?;
        self.frame_max = conn.frame_max;
        self.conn = Some(conn);
        for p in 0..self.ledger.producers() {
            let name = self.ledger.name(p).to_string();
            let Some(conn) = self.conn.as_mut() else {
                return Err(self.lost("not connected"));
            };
            declare_on(conn, &self.stream.name, p, &name).await?;
            let sequence = query_on(conn, &self.stream.name, &name).await?;
            let before = self.ledger.counts().already_stored;
            let pending_before = self.ledger.pending();
            let resend = self.ledger.resume(p, sequence);
            let stored = self.ledger.counts().already_stored - before;
            if pending_before > 0 && (stored > 0 || !resend.is_empty()) {
                self.notice(&Notice::StreamResumed {
                    producer: name,
                    sequence,
                    already_stored: stored,
                    resent: resend.len() as u64,
                });
            }
            for id in resend {
                self.transmit(p, id).await?;
                self.ledger.resent();
            }
        }
        Ok(())
    }
}

/// The publish request for one message (protocol version 1: no filter
/// value; one message per publishing id, no sub-entry batching).
fn publish_request(publisher: u8, id: u64, message: &Message) -> Request {
    let cmd = PublishCommand::new(
        publisher,
        vec![PublishedMessage::new(id, message.clone(), None)],
        1,
    );
    Request::from(cmd)
}

/// The publish frame for one message.
fn publish_frame(publisher: u8, id: u64, message: &Message) -> Vec<u8> {
    let req = publish_request(publisher, id, message);
    let mut buf = Vec::with_capacity(req.encoded_size() as usize + 4);
    // Encoding into a Vec cannot fail.
    let _ = req.encode(&mut buf);
    buf
}

fn refused(
    stream: &str,
    what: &'static str,
    endpoint: &str,
    reason: String,
    retryable: bool,
) -> PublishError {
    PublishError::Stream {
        stream: stream.to_string(),
        what,
        reason: format!("at {endpoint}: {reason}"),
        retryable,
    }
}

/// Declares publisher `p` named `name` on `conn`.
async fn declare_on(
    conn: &mut Conn,
    stream: &str,
    p: usize,
    name: &str,
) -> Result<(), PublishError> {
    let s = stream.to_string();
    let reference = Some(name.to_string());
    let answer = conn
        .call(|c| DeclarePublisherCommand::new(c, p as u8, reference, s).into())
        .await;
    let frame = answer.map_err(|reason| PublishError::StreamLost {
        endpoint: conn.endpoint.clone(),
        reason,
    })?;
    match frame::code(&frame) {
        Some(frame::OK) => Ok(()),
        Some(code) => Err(refused(
            stream,
            "declare a producer on",
            &conn.endpoint,
            format!("producer '{name}': {}", code_name(code)),
            // Both pass: a new stream elects its leader, a killed run's
            // connection is noticed (bounded by the retries).
            code == frame::STREAM_NOT_AVAILABLE || code == frame::PRECONDITION_FAILED,
        )),
        None => Err(refused(
            stream,
            "declare a producer on",
            &conn.endpoint,
            "malformed answer".into(),
            true,
        )),
    }
}

/// Asks for the last stored publishing id of the producer `name`.
async fn query_on(conn: &mut Conn, stream: &str, name: &str) -> Result<u64, PublishError> {
    let s = stream.to_string();
    let reference = name.to_string();
    let answer = conn
        .call(|c| QueryPublisherRequest::new(c, reference, s).into())
        .await;
    let frame = answer.map_err(|reason| PublishError::StreamLost {
        endpoint: conn.endpoint.clone(),
        reason,
    })?;
    match (frame::code(&frame), frame::sequence(&frame)) {
        (Some(frame::OK), Some(seq)) => Ok(seq),
        (Some(code), _) if code != frame::OK => Err(refused(
            stream,
            "query the producer sequence on",
            &conn.endpoint,
            format!("producer '{name}': {}", code_name(code)),
            code == frame::STREAM_NOT_AVAILABLE,
        )),
        _ => Err(refused(
            stream,
            "query the producer sequence on",
            &conn.endpoint,
            "malformed answer".into(),
            true,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publisher_and_its_futures_can_move_between_threads() {
        fn is_send<T: Send>(_: &T) {}
        fn check(p: &mut StreamPublisher, id: ProducerId) {
            is_send(&p.send(id, 1, "m", Vec::new()));
            is_send(&p.flush());
            is_send(&p.declare("x"));
        }
        let _ = check;
        fn publisher_is_send<T: Send + Sync>() {}
        publisher_is_send::<StreamPublisher>();
    }

    #[test]
    fn a_publish_frame_says_its_size_before_it_is_built() {
        let m = Message::builder().body(vec![1u8; 100]).build();
        let size = publish_request(3, 7, &m).encoded_size() as usize + 4;
        assert_eq!(publish_frame(3, 7, &m).len(), size);
    }
}
