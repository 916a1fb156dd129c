//! Queue checks before publishing (design §6.4): a passive declare (and a
//! durable create plus binding when the queue is missing) when
//! `[rabbit_queue_options]` is empty, or a declare with exactly the configured
//! options. It turns the broker's 406 PRECONDITION_FAILED text into a sentence
//! that says what differs and which config line fixes it. On a reconnect a
//! queue the run has already seen is only checked, never re-created: its
//! disappearance is an error. With persistent messages a queue that is not
//! durable is refused (a passive declare cannot see that; a durable
//! declaration on a channel of its own can). It never publishes.

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
///
/// With persistent messages (the default) the queue must be durable: a
/// queue that is not, or a config that would declare it so, is refused
/// before anything is published (a broker restart would lose every
/// message confirmed into it).
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
    let target = Target {
        conn,
        cfg,
        queue,
        timeout,
    };
    let opts = &cfg.queue_options;
    if let Some(since) = seen {
        target.still_there(&channel, since).await?;
        if opts.is_empty() {
            return Ok((channel, QueueState::Present));
        }
        // Still there: declare it as configured (that checks the options
        // and the binding) on the same channel.
        return target.as_configured(channel, create).await;
    }
    if opts.is_empty() {
        return target.by_default(channel, create).await;
    }
    let non_durable = target.asks_non_durable();
    if !create || non_durable {
        // Only look: a missing queue is reported, never created (and never
        // created non-durable).
        if let Some(fresh) = target.look(&channel).await? {
            if non_durable {
                return Err(target.non_durable_config());
            }
            return Ok((fresh, QueueState::Missing));
        }
        // It exists: declaring it as configured below changes nothing when
        // the options match and explains the 406 when they do not.
    }
    let (channel, state) = target.as_configured(channel, create).await?;
    if non_durable {
        // The broker took a non-durable declaration: the queue is not durable.
        return Err(target.non_durable_config());
    }
    if opts.passive == Some(true) {
        target.check_durable().await?;
    }
    Ok((channel, state))
}

/// The configured queue on one connection: what every step of [`ensure`]
/// needs.
struct Target<'a> {
    conn: &'a Connection,
    cfg: &'a RabbitConfig,
    queue: &'a str,
    timeout: Duration,
}

impl Target<'_> {
    fn fail(&self, what: &'static str, e: lapin::Error) -> PublishError {
        queue_error(self.queue, what, &e)
    }

    fn passive() -> QueueDeclareOptions {
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        }
    }

    /// A passive declare without the configured arguments.
    async fn passive_check(
        &self,
        channel: &Channel,
    ) -> Result<Result<(), lapin::Error>, PublishError> {
        let no_args = QueueOptions::default();
        let fut = declare(channel, self.queue, Self::passive(), &no_args);
        with_timeout(self.timeout, "check", self.queue, fut).await
    }

    /// A fresh channel after a 404 closed the last one.
    async fn fresh_channel(&self, what: &'static str) -> Result<Channel, PublishError> {
        with_timeout(
            self.timeout,
            "open a channel for",
            self.queue,
            self.conn.create_channel(),
        )
        .await?
        .map_err(|e| self.fail(what, e))
    }

    /// On a reconnect: the queue seen on an earlier link is still there.
    async fn still_there(
        &self,
        channel: &Channel,
        since: std::time::Instant,
    ) -> Result<(), PublishError> {
        match self.passive_check(channel).await? {
            Ok(()) => Ok(()),
            Err(e) => Err(match amqp_error(&e) {
                // "no queue 'q' in vhost '/'"; another 404 (a durable
                // queue whose node is down) is not a deletion.
                Some((NOT_FOUND, text)) if text.contains("no queue") => {
                    PublishError::QueueVanished {
                        queue: self.queue.to_string(),
                        since,
                        ago: since.elapsed(),
                        broker: text,
                    }
                }
                _ => self.fail("check (passive declare)", e),
            }),
        }
    }

    /// Without `[rabbit_queue_options]`: a passive declare, and a durable
    /// queue created and bound when it is missing (and `create`).
    async fn by_default(
        &self,
        channel: Channel,
        create: bool,
    ) -> Result<(Channel, QueueState), PublishError> {
        match self.passive_check(&channel).await? {
            Ok(()) => {
                self.check_durable().await?;
                return Ok((channel, QueueState::Present));
            }
            Err(e) if amqp_error(&e).is_some_and(|(code, _)| code == NOT_FOUND) => {}
            Err(e) => return Err(self.fail("check (passive declare)", e)),
        }
        // The 404 closed the channel; declare on a fresh one.
        let channel = self.fresh_channel("open a channel to create").await?;
        if !create {
            return Ok((channel, QueueState::Missing));
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let fut = declare(&channel, self.queue, durable, &self.cfg.queue_options);
        with_timeout(self.timeout, "create", self.queue, fut)
            .await?
            .map_err(|e| self.fail("create", e))?;
        bind(&channel, self.cfg, self.queue, self.timeout).await?;
        Ok((channel, QueueState::Created))
    }

    /// Whether the queue exists, by a passive declare: `None` when it does,
    /// else a fresh channel (the 404 closed the given one).
    async fn look(&self, channel: &Channel) -> Result<Option<Channel>, PublishError> {
        match self.passive_check(channel).await? {
            Ok(()) => Ok(None),
            Err(e) if amqp_error(&e).is_some_and(|(code, _)| code == NOT_FOUND) => self
                .fresh_channel("open a channel after checking")
                .await
                .map(Some),
            Err(e) => Err(self.fail("check (passive declare)", e)),
        }
    }

    /// A declare with exactly the configured options; a 406 says what
    /// differs and which config line fixes it.
    async fn as_configured(
        &self,
        channel: Channel,
        create: bool,
    ) -> Result<(Channel, QueueState), PublishError> {
        let opts = &self.cfg.queue_options;
        let options = QueueDeclareOptions {
            passive: opts.passive.unwrap_or(false),
            durable: opts.durable.unwrap_or(false),
            exclusive: opts.exclusive.unwrap_or(false),
            auto_delete: opts.auto_delete.unwrap_or(false),
            nowait: false,
        };
        let queue = self.queue;
        with_timeout(
            self.timeout,
            "declare",
            queue,
            declare(&channel, queue, options, opts),
        )
        .await?
        .map_err(|e| match amqp_error(&e) {
            Some((PRECONDITION_FAILED, text)) => PublishError::QueueMismatch {
                queue: queue.to_string(),
                explanation: if self.cfg.persistent && existing_not_durable(&text) {
                    format!("{} [broker said: {text}]", self.not_durable_fix())
                } else {
                    explain_precondition(&text)
                },
            },
            Some((NOT_FOUND, _)) if options.passive => PublishError::Queue {
                queue: queue.to_string(),
                what: "check",
                reason:
                    "it does not exist (passive = true in [rabbit_queue_options] never creates it)"
                        .into(),
            },
            _ => self.fail("declare", e),
        })?;
        if !options.passive && create {
            bind(&channel, self.cfg, queue, self.timeout).await?;
        }
        Ok((channel, QueueState::Present))
    }
}

/// What losing the messages of a queue that is not durable means, for
/// every refusal below.
const LOST_ON_RESTART: &str = "so a broker restart would lose every message confirmed into it";

impl Target<'_> {
    /// With persistent messages, a declaration that is neither passive nor
    /// durable: the config itself makes a queue that cannot keep them.
    fn asks_non_durable(&self) -> bool {
        let opts = &self.cfg.queue_options;
        self.cfg.persistent && opts.passive != Some(true) && opts.durable != Some(true)
    }

    /// `rabbitmqctl delete_queue …` for this queue, with its vhost.
    fn delete_command(&self) -> String {
        match self.cfg.vhost.as_str() {
            "/" => format!("rabbitmqctl delete_queue {}", self.queue),
            vhost => format!("rabbitmqctl delete_queue -p {vhost} {}", self.queue),
        }
    }

    /// The configured declaration is not durable.
    fn non_durable_config(&self) -> PublishError {
        PublishError::Queue {
            queue: self.queue.to_string(),
            what: "publish persistent messages to",
            reason: format!(
                "[rabbit_queue_options] declares it non-durable (durable = false or not given), \
                 {LOST_ON_RESTART}: set durable = true in [rabbit_queue_options] (and delete the \
                 queue if it exists: {}), or set persistent = false in [rabbit] if that loss is \
                 acceptable",
                self.delete_command()
            ),
        }
    }

    /// The existing queue is not durable while the config asks for
    /// durable = true (the explanation of that 406).
    fn not_durable_fix(&self) -> String {
        format!(
            "the existing queue is not durable but the config asks for durable = true \
             (persistent messages need a durable queue): delete it ({}, once its consumers \
             have drained it) so that it is created durable",
            self.delete_command()
        )
    }

    /// With persistent messages, refuses an existing queue that is not
    /// durable. A passive declare cannot tell, so this declares it durable
    /// with the configured arguments on a channel of its own: the broker
    /// compares durability before anything else and answers 406 when it
    /// differs (which closes that channel). Quorum queues and streams are
    /// always durable; their 406 about arguments (`x-queue-type`) and any
    /// other refusal (no configure permission: 403) say nothing about
    /// durability and are left alone.
    async fn check_durable(&self) -> Result<(), PublishError> {
        if !self.cfg.persistent {
            return Ok(());
        }
        let probe = self
            .fresh_channel("open a channel to check durability of")
            .await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let fut = declare(&probe, self.queue, durable, &self.cfg.queue_options);
        match with_timeout(self.timeout, "check", self.queue, fut).await? {
            Ok(()) => {
                let close = probe.close(200, "durability checked".into());
                let _ = tokio::time::timeout(self.timeout, close).await;
                Ok(())
            }
            Err(e) => match amqp_error(&e) {
                Some((PRECONDITION_FAILED, text)) if existing_not_durable(&text) => {
                    Err(PublishError::Queue {
                        queue: self.queue.to_string(),
                        what: "publish persistent messages to",
                        reason: format!(
                            "it exists but is not durable, {LOST_ON_RESTART}: delete it ({}, \
                             once its consumers have drained it) so that it is created durable, \
                             or set persistent = false in [rabbit] if that loss is acceptable",
                            self.delete_command()
                        ),
                    })
                }
                Some(_) => Ok(()),
                None => Err(self.fail("check durability of", e)),
            },
        }
    }
}

/// A 406 that says the existing queue is not durable
/// (`inequivalent arg 'durable' … received 'true' but current is 'false'`).
fn existing_not_durable(text: &str) -> bool {
    between(text, "inequivalent arg '", "'") == Some("durable")
        && text.contains("current is 'false'")
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
