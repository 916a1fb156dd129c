//! Queue checks before publishing (design §6.4): a passive declare (and a
//! durable create plus binding when the queue is missing) when
//! `[rabbit_queue_options]` is empty, or a declare with exactly the configured
//! options. It turns the broker's 406 PRECONDITION_FAILED text into a sentence
//! that says what differs and which config line fixes it. On a reconnect a
//! queue the run has already seen is only checked, never re-created: its
//! disappearance is an error. It never publishes.

use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

use super::PublishError;
use super::link::{amqp_error, describe};
use crate::config::{QueueArg, QueueOptions, RabbitConfig};

/// Reply code of a channel closed because the queue does not exist.
const NOT_FOUND: u16 = 404;
/// Reply code of a declare whose properties differ from the existing queue.
const PRECONDITION_FAILED: u16 = 406;

/// What the broker holds of the configured queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    /// No queue is configured (publishing to an exchange only).
    NotConfigured,
    /// It exists (and matches the configured options, when there are any).
    Present,
    /// It does not exist yet (only seen when asked not to create it).
    Missing,
    /// It did not exist and was created now (durable, and bound).
    Created,
}

/// Makes sure the configured queue exists as configured. A 404 closes the
/// channel, so this may return a different (new) channel than it was given.
/// With `create` false it only looks: a missing queue is
/// [`QueueState::Missing`], an existing one is still checked against the
/// configured options.
///
/// `seen` is when this run last found the queue present (on an earlier
/// link). Then it is checked first, and never re-created: a queue that went
/// away took the messages confirmed into it with it, so that is
/// [`PublishError::QueueVanished`].
pub(crate) async fn ensure(
    conn: &Connection,
    channel: Channel,
    cfg: &RabbitConfig,
    timeout: Duration,
    seen: Option<std::time::Instant>,
    create: bool,
) -> Result<(Channel, QueueState), PublishError> {
    let Some(queue) = cfg.queue.as_deref() else {
        return Ok((channel, QueueState::NotConfigured));
    };
    let fail = |what: &'static str, e: lapin::Error| queue_error(queue, what, &e);
    let opts = &cfg.queue_options;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };

    if let Some(since) = seen {
        let no_args = QueueOptions::default();
        match with_timeout(
            timeout,
            "check",
            queue,
            declare(&channel, queue, passive, &no_args),
        )
        .await?
        {
            Ok(()) if opts.is_empty() => return Ok((channel, QueueState::Present)),
            // Still there: declare it as configured below (that checks the
            // options and the binding) on the same channel.
            Ok(()) => {}
            Err(e) => {
                return Err(match amqp_error(&e) {
                    // "no queue 'q' in vhost '/'"; another 404 (a durable
                    // queue whose node is down) is not a deletion.
                    Some((NOT_FOUND, text)) if text.contains("no queue") => {
                        PublishError::QueueVanished {
                            queue: queue.to_string(),
                            since,
                            ago: since.elapsed(),
                            broker: text,
                        }
                    }
                    _ => fail("check (passive declare)", e),
                });
            }
        }
    }

    if opts.is_empty() {
        match with_timeout(
            timeout,
            "check",
            queue,
            declare(&channel, queue, passive, opts),
        )
        .await?
        {
            Ok(()) => return Ok((channel, QueueState::Present)),
            Err(e) if amqp_error(&e).is_some_and(|(code, _)| code == NOT_FOUND) => {}
            Err(e) => return Err(fail("check (passive declare)", e)),
        }
        // The 404 closed the channel; declare on a fresh one.
        let channel = with_timeout(timeout, "open a channel for", queue, conn.create_channel())
            .await?
            .map_err(|e| fail("open a channel to create", e))?;
        if !create {
            return Ok((channel, QueueState::Missing));
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        with_timeout(
            timeout,
            "create",
            queue,
            declare(&channel, queue, durable, opts),
        )
        .await?
        .map_err(|e| fail("create", e))?;
        bind(&channel, cfg, queue, timeout).await?;
        return Ok((channel, QueueState::Created));
    }

    if !create && seen.is_none() {
        // Only look: a missing queue is reported, never created.
        match with_timeout(
            timeout,
            "check",
            queue,
            declare(&channel, queue, passive, &QueueOptions::default()),
        )
        .await?
        {
            Ok(()) => {}
            Err(e) if amqp_error(&e).is_some_and(|(code, _)| code == NOT_FOUND) => {
                let fresh =
                    with_timeout(timeout, "open a channel for", queue, conn.create_channel())
                        .await?
                        .map_err(|e| fail("open a channel after checking", e))?;
                return Ok((fresh, QueueState::Missing));
            }
            Err(e) => return Err(fail("check (passive declare)", e)),
        }
        // It exists: declaring it as configured below changes nothing when
        // the options match and explains the 406 when they do not.
    }
    let options = QueueDeclareOptions {
        passive: opts.passive.unwrap_or(false),
        durable: opts.durable.unwrap_or(false),
        exclusive: opts.exclusive.unwrap_or(false),
        auto_delete: opts.auto_delete.unwrap_or(false),
        nowait: false,
    };
    with_timeout(
        timeout,
        "declare",
        queue,
        declare(&channel, queue, options, opts),
    )
    .await?
    .map_err(|e| match amqp_error(&e) {
        Some((PRECONDITION_FAILED, text)) => PublishError::QueueMismatch {
            queue: queue.to_string(),
            explanation: explain_precondition(&text),
        },
        Some((NOT_FOUND, _)) if options.passive => PublishError::Queue {
            queue: queue.to_string(),
            what: "check",
            reason: "it does not exist (passive = true in [rabbit_queue_options] never creates it)"
                .into(),
        },
        _ => fail("declare", e),
    })?;
    if !options.passive && create {
        bind(&channel, cfg, queue, timeout).await?;
    }
    Ok((channel, QueueState::Present))
}

async fn declare(
    channel: &Channel,
    queue: &str,
    options: QueueDeclareOptions,
    opts: &QueueOptions,
) -> Result<(), lapin::Error> {
    channel
        .queue_declare(queue.into(), options, arguments(opts))
        .await
        .map(|_| ())
}

/// Binds the queue to a non-default exchange so the first message is routable.
async fn bind(
    channel: &Channel,
    cfg: &RabbitConfig,
    queue: &str,
    timeout: Duration,
) -> Result<(), PublishError> {
    if cfg.exchange.is_empty() {
        return Ok(());
    }
    let fut = channel.queue_bind(
        queue.into(),
        cfg.exchange.as_str().into(),
        cfg.routing_key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    with_timeout(timeout, "bind", queue, fut)
        .await?
        .map_err(|e| PublishError::Queue {
            queue: queue.to_string(),
            what: "bind",
            reason: format!(
                "to exchange '{}' with routing key '{}': {}",
                cfg.exchange,
                cfg.routing_key,
                describe(&e)
            ),
        })
}

async fn with_timeout<T>(
    timeout: Duration,
    what: &'static str,
    queue: &str,
    fut: impl Future<Output = T>,
) -> Result<T, PublishError> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| PublishError::Queue {
            queue: queue.to_string(),
            what,
            reason: format!(
                "no answer from the broker within {} s",
                timeout.as_secs_f64()
            ),
        })
}

fn queue_error(queue: &str, what: &'static str, e: &lapin::Error) -> PublishError {
    PublishError::Queue {
        queue: queue.to_string(),
        what,
        reason: describe(e),
    }
}

/// The typed `x-` arguments: integers as signed 64-bit, the rest as strings.
pub(crate) fn arguments(opts: &QueueOptions) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in &opts.arguments {
        let value = match value {
            QueueArg::Int(i) => AMQPValue::LongLongInt(*i),
            QueueArg::Bool(b) => AMQPValue::Boolean(*b),
            QueueArg::Str(s) => AMQPValue::LongString(s.as_str().into()),
        };
        table.insert(key.as_str().into(), value);
    }
    table
}

/// Turns RabbitMQ's PRECONDITION_FAILED text into what differs and how to
/// match it in the config, e.g. for
/// `inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current is 'true'`:
/// "the existing queue has durable = true but the config asks for durable =
/// false: set durable = true in [rabbit_queue_options] (or delete the queue …)".
pub(crate) fn explain_precondition(text: &str) -> String {
    let Some(arg) = between(text, "inequivalent arg '", "'") else {
        return format!(
            "the broker refused the declaration ({text}): make [rabbit_queue_options] match \
             the existing queue (see `rabbitmqctl list_queues name durable auto_delete arguments`) \
             or delete the queue"
        );
    };
    let received = text
        .split_once("received ")
        .and_then(|(_, rest)| rest.split_once(" but current is "))
        .map(|(r, _)| value_of(r));
    let current = text
        .split_once(" but current is ")
        .map(|(_, c)| value_of(c.trim_end_matches('.')));
    let asked = match received.flatten() {
        Some(v) => format!("{arg} = {v}"),
        None => format!("no {arg}"),
    };
    let (has, fix) = match current.flatten() {
        Some(v) => (
            format!("{arg} = {v}"),
            format!("set {arg} = {v} in [rabbit_queue_options]"),
        ),
        None => (
            format!("no {arg}"),
            format!("remove {arg} from [rabbit_queue_options]"),
        ),
    };
    format!(
        "the existing queue has {has} but the config asks for {asked}: {fix} \
         (or delete the queue so it is created with the new settings) [broker said: {text}]"
    )
}

/// `'true'` → `true`; `the value 'quorum' of type 'longstr'` → `quorum`;
/// `none` → no value.
fn value_of(s: &str) -> Option<String> {
    let s = s.trim();
    if s == "none" {
        return None;
    }
    let s = s.strip_prefix("the value ").unwrap_or(s);
    match between(s, "'", "'") {
        Some(v) => Some(v.to_string()),
        None => Some(s.to_string()),
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = s.split_once(start)?;
    let (v, _) = rest.split_once(end)?;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_mismatch_says_what_to_set() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
                    received 'false' but current is 'true'";
        let msg = explain_precondition(text);
        assert!(
            msg.starts_with("the existing queue has durable = true but the config asks for durable = false: set durable = true in [rabbit_queue_options]"),
            "{msg}"
        );
    }

    #[test]
    fn x_arg_missing_or_extra() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': \
                    received none but current is the value 'quorum' of type 'longstr'";
        let msg = explain_precondition(text);
        assert!(
            msg.contains("has x-queue-type = quorum but the config asks for no x-queue-type: set x-queue-type = quorum in [rabbit_queue_options]"),
            "{msg}"
        );
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': \
                    received the value '10' of type 'signedint' but current is none";
        let msg = explain_precondition(text);
        assert!(
            msg.contains("has no x-max-length but the config asks for x-max-length = 10: remove x-max-length from [rabbit_queue_options]"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_text_still_gives_advice() {
        let msg = explain_precondition("PRECONDITION_FAILED - something else");
        assert!(msg.contains("something else"));
        assert!(msg.contains("[rabbit_queue_options]"));
    }

    #[test]
    fn arguments_are_typed() {
        let opts = QueueOptions {
            arguments: vec![
                ("x-queue-type".into(), QueueArg::Str("quorum".into())),
                ("x-max-length".into(), QueueArg::Int(10)),
            ],
            ..QueueOptions::default()
        };
        let t = arguments(&opts);
        let inner = t.inner();
        assert_eq!(
            inner.get(&lapin::types::ShortString::from("x-queue-type")),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            inner.get(&lapin::types::ShortString::from("x-max-length")),
            Some(&AMQPValue::LongLongInt(10))
        );
    }
}
