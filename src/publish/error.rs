//! The error model of publishing: [`PublishError`] (every way a run fails,
//! one variant per kind of unconfirmed message), [`EndpointFailure`] (why one
//! host could not be used) and [`Notice`] (what the operator hears while a
//! run goes on). It owns their wording; it never talks to the broker.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// Stream transport: a failure is retried; reconnect after `delay`,
    /// ask the broker for each producer's sequence, resend the rest.
    StreamRetrying {
        /// This retry's number, from 1.
        attempt: u32,
        /// Retries allowed.
        retries: u32,
        /// Wait before reconnecting.
        delay: Duration,
        /// Messages not confirmed yet.
        pending: u64,
        /// What went wrong.
        cause: String,
    },
    /// Stream transport, reading: a failure is retried; reconnect after
    /// `delay`, then subscribe again after the last message returned.
    StreamResubscribing {
        /// This retry's number, from 1.
        attempt: u32,
        /// Retries allowed.
        retries: u32,
        /// Wait before reconnecting.
        delay: Duration,
        /// Where the new subscription starts (`offset 1234`, `first`…);
        /// `None` before subscribing.
        from: Option<String>,
        /// What went wrong.
        cause: String,
    },
    /// Stream transport: after a reconnect the broker said how far it holds
    /// a producer that had messages pending.
    StreamResumed {
        /// The producer's name.
        producer: String,
        /// The broker's last stored publishing id for it.
        sequence: u64,
        /// Pending messages at or below it (stored before the link broke:
        /// confirmed now, not resent).
        already_stored: u64,
        /// Pending messages above it, sent again.
        resent: u64,
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
            Notice::StreamRetrying {
                attempt,
                retries,
                delay,
                pending,
                cause,
            } => write!(
                f,
                "{cause}; reconnecting in {:.1} s, then asking the broker what it stored of {pending} unconfirmed messages (retry {attempt} of {retries})",
                delay.as_secs_f64()
            ),
            Notice::StreamResubscribing {
                attempt,
                retries,
                delay,
                from,
                cause,
            } => {
                write!(f, "{cause}; reconnecting in {:.1} s", delay.as_secs_f64())?;
                if let Some(from) = from {
                    write!(f, " and reading again from {from}")?;
                }
                write!(f, " (retry {attempt} of {retries})")
            }
            Notice::StreamResumed {
                producer,
                sequence,
                already_stored,
                resent,
            } => write!(
                f,
                "producer '{producer}': the broker holds up to publishing id {sequence}; {already_stored} unconfirmed messages were stored already, {resent} sent again"
            ),
        }
    }
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
    #[error(
        "cannot connect to RabbitMQ: {} (is the broker running there, and are {keys} right in {}?)",
        list(.failures),
        .config.display()
    )]
    Connect {
        /// One entry per host tried, in order.
        failures: Vec<EndpointFailure>,
        /// The config file, for the hint.
        config: PathBuf,
        /// The keys of the config that chose where to connect
        /// (`host and port`, …), for the hint.
        keys: &'static str,
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
        /// [`Publisher::queue_seen`](super::Publisher::queue_seen)):
        /// messages confirmed after this are probably lost.
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
    /// Stream transport (design §14): checking, creating or using the
    /// stream failed, or the broker answered with a response code.
    #[error("cannot {what} stream '{stream}': {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// `check`, `create`, `find the leader of`, `declare a producer on`, …
        what: &'static str,
        /// Where and why (`at HOST:PORT: …`; a response code is named).
        reason: String,
        /// True when a reconnect may help (no leader yet, leader moving).
        retryable: bool,
    },
    /// Stream transport: the broker refused a message (a publish error; it
    /// is not confirmed).
    #[error(
        "the broker refused message {id} of producer '{producer}' on stream '{stream}': {reason}"
    )]
    StreamRefused {
        /// The stream.
        stream: String,
        /// The producer's name.
        producer: String,
        /// The publishing id.
        id: u64,
        /// The response code, named.
        reason: String,
    },
    /// Stream transport: the connection broke or went quiet while messages
    /// were pending, or no confirm came in time.
    #[error("stream connection to {endpoint}: {reason}")]
    StreamLost {
        /// `host:port`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Stream transport: a publishing id the caller gave is unusable (ids of
    /// one producer start at 1 and increase); a bug in the caller.
    #[error("publishing id {id} of producer '{producer}' {problem}")]
    StreamId {
        /// The producer's name (or its number when unknown).
        producer: String,
        /// The id given.
        id: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// Stream transport: a message does not fit the broker's frame size.
    #[error(
        "message {id} of producer '{producer}' is {size} bytes as a frame, over the broker's limit of {max} bytes"
    )]
    StreamTooLarge {
        /// The producer's name.
        producer: String,
        /// The publishing id.
        id: u64,
        /// Its frame size.
        size: usize,
        /// The negotiated limit.
        max: u32,
    },
    /// Stream transport: the run gave up after `retries` reconnects without
    /// progress; `id` of `producer` is the first unconfirmed message.
    #[error(
        "message {id} of producer '{producer}' was not confirmed after {retries} retries: {cause}"
    )]
    StreamUnconfirmed {
        /// The producer's name.
        producer: String,
        /// Its first unconfirmed publishing id.
        id: u64,
        /// Retries made.
        retries: u32,
        /// Messages not confirmed when it gave up.
        pending: u64,
        /// The last failure.
        #[source]
        cause: Box<PublishError>,
    },
    /// Stream transport, reading: the message at `offset` cannot be read
    /// (not AMQP 1.0, or a body that is not bytes). The reader goes on
    /// after it when asked for the next message.
    #[error("cannot read the message at offset {offset} of stream '{stream}': {reason}")]
    StreamMessage {
        /// The stream.
        stream: String,
        /// The message's offset.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// Stream transport, reading: gave up after `retries` reconnects
    /// without a message read in between.
    #[error(
        "cannot read stream '{stream}'{} after {retries} retries: {cause}",
        .from.map(|o| format!(" from offset {o}")).unwrap_or_default()
    )]
    StreamUnread {
        /// The stream.
        stream: String,
        /// The offset reading would have continued from.
        from: Option<u64>,
        /// Retries made.
        retries: u32,
        /// The last failure.
        #[source]
        cause: Box<PublishError>,
    },
}

impl PublishError {
    /// True when reconnecting and resending may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Connect { failures, .. } => failures.iter().any(|f| !f.permanent),
            PublishError::Nacked { .. }
            | PublishError::Returned { .. }
            | PublishError::NotRequested { .. }
            | PublishError::ConfirmTimeout { .. }
            | PublishError::ConnectionLost { .. }
            | PublishError::StreamLost { .. } => true,
            PublishError::Stream { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The failure underneath an [`PublishError::Unconfirmed`], else itself.
    pub fn root(&self) -> &PublishError {
        match self {
            PublishError::Unconfirmed { cause, .. }
            | PublishError::StreamUnconfirmed { cause, .. }
            | PublishError::StreamUnread { cause, .. } => cause.root(),
            other => other,
        }
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
            config: "/etc/t/config.ini".into(),
            keys: "host, port and [ssl_options]",
        };
        assert!(!tls_only.is_retryable());
        assert_eq!(
            tls_only.to_string(),
            "cannot connect to RabbitMQ: h:1: TLS handshake failed (is the broker running there, \
             and are host, port and [ssl_options] right in /etc/t/config.ini?)"
        );
    }
}
