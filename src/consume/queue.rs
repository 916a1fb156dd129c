//! The queue consumer: one AMQP 0-9-1 connection (the publisher's
//! connect and failover), a passive check of the queue (never created
//! here), a consumer with a prefetch window and manual acknowledgements.
//!
//! Deliveries are taken as they come; once none is ready (or a megabyte
//! is buffered) the output is flushed and everything taken so far is
//! acknowledged with one `multiple` ack. So a message is acknowledged only
//! after its documents reached the output; the broker holds at most the
//! prefetch window unacknowledged, which bounds memory whatever the backlog.
//! A lost connection is retried with the publisher's backoff; what was
//! written but not acknowledged comes again (a repeat, never a loss).

use std::io::Write;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::tcp::RustlsConnector;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

use super::{ConsumeError, ConsumeOptions, End, Summary, Taken, Taker, backoff, is_closed_output};
use crate::config::RabbitConfig;
use crate::publish::{PublishError, PublishOptions, SetupError, amqp_error, describe, failover};
use crate::shutdown::Shutdown;

/// The consumer's tag on the channel.
const CONSUMER_TAG: &str = "tstat-consume";

/// One connection consuming the queue.
struct Session {
    conn: Connection,
    channel: Channel,
    consumer: Consumer,
    endpoint: String,
}

impl Session {
    /// Closes the connection: what was not acknowledged goes back to the
    /// queue.
    async fn close(self) {
        if self.conn.status().connected() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into()))
                    .await;
        }
    }
}

/// How a session ended other than well.
enum Stop {
    /// The connection or the consumer is gone: reconnect.
    Lost(String),
    /// Stop the run.
    Fatal(ConsumeError),
}

/// Consumes the configured queue until the run ends; reconnects (bounded
/// by the retries, with backoff) when the connection is lost.
pub(super) async fn run<W: Write>(
    cfg: &RabbitConfig,
    opts: &ConsumeOptions,
    taker: &mut Taker<'_, W>,
    shutdown: &Shutdown,
) -> Result<Summary, ConsumeError> {
    let queue = cfg
        .queue
        .as_deref()
        .ok_or_else(|| ConsumeError::NoQueue(cfg.path.clone()))?;
    let tls = match &cfg.tls {
        Some(t) => Some(crate::publish::tls_connector(t).map_err(PublishError::TlsSetup)?),
        None => None,
    };
    let retries = opts.broker.retries;
    let mut failures = 0u32;
    let mut connected_before = false;
    loop {
        let progress_before = progress(&taker.summary);
        let cause = match open(cfg, &opts.broker, tls.as_ref(), queue, opts.prefetch).await {
            Ok((mut session, held)) => {
                if connected_before {
                    taker.summary.reconnects += 1;
                }
                connected_before = true;
                taker.info(&format_args!(
                    "connected to {}; queue '{queue}' holds {held} ready messages",
                    session.endpoint
                ));
                let stopped = pump(&mut session, opts, taker, shutdown).await;
                session.close().await;
                match stopped {
                    Ok(end) => {
                        taker.summary.end = end;
                        return Ok(taker.summary.clone());
                    }
                    Err(Stop::Fatal(e)) => return Err(e),
                    Err(Stop::Lost(reason)) => reason,
                }
            }
            // The first connect is not retried (like the publisher's): a
            // wrong host or port fails at once.
            Err(e) if connected_before && e.is_retryable() => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        if progress(&taker.summary) > progress_before {
            failures = 0;
        }
        if failures >= retries {
            return Err(ConsumeError::GaveUp {
                retries: failures,
                cause,
            });
        }
        failures += 1;
        let delay = backoff(&opts.broker, failures);
        taker.warn(&format_args!(
            "{cause}; reconnecting in {:.1} s (retry {failures} of {retries})",
            delay.as_secs_f64()
        ));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.triggered() => {
                taker.summary.end = End::Signal;
                return Ok(taker.summary.clone());
            }
        }
    }
}

/// Messages done with, for telling progress between failures.
fn progress(s: &Summary) -> u64 {
    s.messages + s.repeats + s.skipped
}

/// Connects (hosts in order), checks the queue passively and starts the
/// consumer; also returns how many messages the queue holds ready.
async fn open(
    cfg: &RabbitConfig,
    bopts: &PublishOptions,
    tls: Option<&RustlsConnector>,
    queue: &str,
    prefetch: u16,
) -> Result<(Session, u32), PublishError> {
    let wait = bopts.confirm_timeout;
    failover(cfg, bopts, tls, async |conn: Connection, endpoint: &str| {
        let stalled = |what: &str| {
            SetupError::Endpoint(format!("{what}: no answer within {} s", wait.as_secs_f64()))
        };
        let failed =
            |what: &str, e: lapin::Error| SetupError::Endpoint(format!("{what}: {}", describe(&e)));
        let channel = tokio::time::timeout(wait, conn.create_channel())
            .await
            .map_err(|_| stalled("opening a channel"))?
            .map_err(|e| failed("opening a channel", e))?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = tokio::time::timeout(
            wait,
            channel.queue_declare(queue.into(), passive, FieldTable::default()),
        )
        .await
        .map_err(|_| stalled("checking the queue"))?;
        let held = match declared {
            Ok(q) => q.message_count(),
            Err(e) => {
                return Err(match amqp_error(&e) {
                    Some((404, _)) => SetupError::Fatal(PublishError::Queue {
                        queue: queue.to_string(),
                        what: "read",
                        reason: format!(
                            "it does not exist at {endpoint} (vhost '{}'); tstat-consume never \
                             creates a queue: check 'queue' in {}",
                            cfg.vhost,
                            cfg.path.display()
                        ),
                    }),
                    _ => failed("checking the queue", e),
                });
            }
        };
        tokio::time::timeout(
            wait,
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await
        .map_err(|_| stalled("setting the prefetch window"))?
        .map_err(|e| failed("setting the prefetch window", e))?;
        let consumer = tokio::time::timeout(
            wait,
            channel.basic_consume(
                queue.into(),
                CONSUMER_TAG.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| stalled("starting the consumer"))?
        .map_err(|e| failed("starting the consumer", e))?;
        Ok((
            Session {
                conn,
                channel,
                consumer,
                endpoint: endpoint.to_string(),
            },
            held,
        ))
    })
    .await
}

/// Takes deliveries until the run ends or the session breaks. Between
/// waits everything taken is flushed and acknowledged.
async fn pump<W: Write>(
    s: &mut Session,
    opts: &ConsumeOptions,
    taker: &mut Taker<'_, W>,
    shutdown: &Shutdown,
) -> Result<End, Stop> {
    loop {
        if taker.done() {
            return Ok(End::Count);
        }
        let idle = opts.idle_exit;
        let first = tokio::select! {
            biased;
            () = shutdown.triggered() => return Ok(End::Signal),
            d = s.consumer.next() => d,
            () = sleep_opt(idle) => return Ok(End::Idle),
            () = watch_output(opts.output_gone) => return Ok(End::ClosedOutput),
        };
        // Take this delivery and every one already there, then flush and
        // acknowledge them together.
        let mut next = Some(first);
        let mut last_tag = None;
        let mut lost = None;
        let mut bad = None;
        while let Some(d) = next.take() {
            let delivery = match d {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    lost = Some(describe(&e));
                    break;
                }
                None => {
                    lost = Some("the broker cancelled the consumer".to_string());
                    break;
                }
            };
            let tag = delivery.delivery_tag;
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|i| i.to_string());
            let place = format_args!("delivery tag {tag}");
            let kept = "not acknowledged: it stays in the queue";
            match taker.take(&delivery.data, id.as_deref(), &place, kept) {
                Ok(Taken::Written | Taken::Dropped) => last_tag = Some(tag),
                Ok(Taken::Bad(e)) => {
                    bad = Some(e);
                    break;
                }
                Err(e) if is_closed_output(&e) => return Ok(End::ClosedOutput),
                Err(e) => return Err(Stop::Fatal(ConsumeError::Output(e))),
            }
            if taker.done() || taker.flush_due() {
                break;
            }
            next = futures_lite::future::poll_once(s.consumer.next()).await;
        }
        match taker.flush() {
            Ok(()) => {}
            Err(e) if is_closed_output(&e) => return Ok(End::ClosedOutput),
            Err(e) => return Err(Stop::Fatal(ConsumeError::Output(e))),
        }
        if (opts.output_gone).is_some_and(|gone| gone()) {
            // The reader left before taking all of it: acknowledge nothing
            // more (what it read comes again).
            return Ok(End::ClosedOutput);
        }
        if let Some(tag) = last_tag {
            let ack = s
                .channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await;
            if let Err(e) = ack
                && lost.is_none()
            {
                return Err(Stop::Lost(format!(
                    "acknowledging up to delivery tag {tag}: {}",
                    describe(&e)
                )));
            }
        }
        if let Some(e) = bad {
            return Err(Stop::Fatal(e));
        }
        if let Some(reason) = lost {
            return Err(Stop::Lost(format!(
                "connection to {}: {reason}",
                s.endpoint
            )));
        }
    }
}

/// Resolves after `d`, never without one.
pub(super) async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `gone` says the output's reader left (looked at every
/// half second); never without a check.
pub(super) async fn watch_output(gone: Option<fn() -> bool>) {
    let Some(gone) = gone else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if gone() {
            return;
        }
    }
}
