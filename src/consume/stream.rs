//! The stream consumer: a [`StreamReader`] subscription read by a task of
//! its own, which hands messages over a bounded channel (the prefetch
//! window), so waiting for a message, a signal or the idle timeout never
//! cancels the reader halfway through a call. With `--name` a second
//! connection asks the broker for the stored offset and stores the offset
//! of the last message written, once its documents are flushed: every
//! `store_every` messages, at the latest `store_interval` after a write,
//! and at the end. A restart so continues after the stored offset with no
//! gap, repeating at most what was written since the last store.

use std::io::Write;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::queue::{sleep_opt, watch_output};
use super::{ConsumeError, ConsumeOptions, End, Start, Summary, Taken, Taker, is_closed_output};
use crate::config::RabbitConfig;
use crate::publish::PublishError;
use crate::publish::stream::{Delivery, StartAt, StreamReader};
use crate::shutdown::Shutdown;

/// Chunks the broker may deliver ahead of what was taken from the reader.
const CREDIT: u16 = 2;

/// What happens to a bad message that is not skipped.
const KEPT: &str = "not stored as read: a run with --name starts at it again";

/// Reads the configured stream until the run ends.
pub(super) async fn run<W: Write>(
    cfg: &RabbitConfig,
    opts: &ConsumeOptions,
    taker: &mut Taker<'_, W>,
    shutdown: &Shutdown,
) -> Result<Summary, ConsumeError> {
    // The offset connection: the stored offset now, stores later.
    let mut tracker = match &opts.name {
        Some(name) => {
            let mut control = StreamReader::connect(cfg, &opts.broker).await?;
            let stored = control.query_offset(name).await?;
            Some(Tracker {
                name: name.clone(),
                reader: control,
                stored,
                written: None,
                since_store: 0,
                due: None,
            })
        }
        None => None,
    };
    let at = start(opts.from, tracker.as_ref(), taker);
    let mut reader = StreamReader::connect(cfg, &opts.broker).await?;
    taker.info(&format_args!(
        "connected to {}; reading stream '{}' from {at}",
        reader.endpoint().unwrap_or("the broker"),
        reader.stream()
    ));
    reader.subscribe(at, CREDIT).await?;
    let (tx, mut rx) = mpsc::channel(usize::from(opts.prefetch.max(1)));
    let task = tokio::spawn(async move {
        loop {
            let next = reader.next().await;
            // An unreadable message is its own error; the reader goes on.
            let failed = next
                .as_ref()
                .is_err_and(|e| !matches!(e, PublishError::StreamMessage { .. }));
            if tx.send(next).await.is_err() || failed {
                break;
            }
        }
        reader.close().await;
    });
    let result = pump(&mut rx, opts, taker, shutdown, tracker.as_mut()).await;
    task.abort();
    // Whatever ended the run, the offset of what was written is stored.
    if let Some(t) = tracker {
        let stored = t.finish().await;
        if let Err(e) = stored {
            return Err(result.err().unwrap_or(ConsumeError::Broker(e)));
        }
    }
    let end = result?;
    taker.summary.end = end;
    Ok(taker.summary.clone())
}

/// Where to start: `--from`, else after the stored offset, else the first
/// message.
fn start<W: Write>(
    from: Option<Start>,
    tracker: Option<&Tracker>,
    taker: &Taker<'_, W>,
) -> StartAt {
    if let Some(from) = from {
        return match from {
            Start::First => StartAt::First,
            Start::Last => StartAt::Last,
            Start::Next => StartAt::Next,
            Start::Offset(o) => StartAt::Offset(o),
            Start::Time(ms) => StartAt::Timestamp(ms),
        };
    }
    match tracker {
        Some(Tracker {
            name,
            stored: Some(o),
            ..
        }) => {
            taker.info(&format_args!(
                "offset {o} is stored under '{name}': continuing after it"
            ));
            StartAt::Offset(o + 1)
        }
        Some(Tracker { name, .. }) => {
            taker.info(&format_args!(
                "no offset is stored under '{name}': starting at the first message"
            ));
            StartAt::First
        }
        None => StartAt::First,
    }
}

/// The offset stored under `--name`, and what was written since.
struct Tracker {
    name: String,
    reader: StreamReader,
    /// The offset stored last (or found stored at the start).
    stored: Option<u64>,
    /// The offset of the last message written and flushed.
    written: Option<u64>,
    /// Messages written since the last store.
    since_store: u64,
    /// When a store is due for what was written.
    due: Option<Instant>,
}

impl Tracker {
    /// Notes that everything up to `offset` is written and flushed;
    /// stores it when enough was written since the last store.
    async fn written(
        &mut self,
        offset: u64,
        messages: u64,
        opts: &ConsumeOptions,
    ) -> Result<(), PublishError> {
        self.written = Some(offset);
        self.since_store += messages;
        self.due
            .get_or_insert_with(|| Instant::now() + opts.store_interval);
        if self.since_store >= opts.store_every {
            self.store().await?;
        }
        Ok(())
    }

    async fn store(&mut self) -> Result<(), PublishError> {
        if let Some(o) = self.written
            && self.stored != Some(o)
        {
            self.reader.store_offset(&self.name, o).await?;
            self.stored = Some(o);
        }
        self.since_store = 0;
        self.due = None;
        Ok(())
    }

    async fn finish(mut self) -> Result<(), PublishError> {
        let stored = self.store().await;
        self.reader.close().await;
        stored
    }
}

/// Takes messages until the run ends. Between waits what was taken is
/// flushed (and its offset noted for storing).
async fn pump<W: Write>(
    rx: &mut mpsc::Receiver<Result<Delivery, PublishError>>,
    opts: &ConsumeOptions,
    taker: &mut Taker<'_, W>,
    shutdown: &Shutdown,
    mut tracker: Option<&mut Tracker>,
) -> Result<End, ConsumeError> {
    loop {
        if taker.done() {
            return Ok(End::Count);
        }
        let due = tracker.as_ref().and_then(|t| t.due);
        let first = tokio::select! {
            biased;
            () = shutdown.triggered() => return Ok(End::Signal),
            d = rx.recv() => d,
            () = sleep_until_opt(due) => {
                if let Some(t) = tracker.as_deref_mut() {
                    t.store().await?;
                }
                continue;
            }
            () = sleep_opt(opts.idle_exit) => return Ok(End::Idle),
            () = watch_output(opts.output_gone) => return Ok(End::ClosedOutput),
        };
        let mut next = Some(first);
        let (mut last, mut taken) = (None, 0u64);
        let mut failed = None;
        while let Some(d) = next.take() {
            let delivery = match d {
                Some(Ok(d)) => d,
                Some(Err(PublishError::StreamMessage { offset, reason, .. })) => {
                    let place = format!("offset {offset}");
                    match taker.unreadable("(unreadable)", &place, reason, KEPT) {
                        None => {
                            last = Some(offset);
                            taken += 1;
                        }
                        Some(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                    next = match rx.try_recv() {
                        Ok(d) => Some(Some(d)),
                        Err(mpsc::error::TryRecvError::Empty) => None,
                        Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
                    };
                    continue;
                }
                Some(Err(e)) => {
                    failed = Some(ConsumeError::Broker(e));
                    break;
                }
                None => {
                    failed = Some(ConsumeError::GaveUp {
                        retries: opts.broker.retries,
                        cause: "the stream reader stopped".into(),
                    });
                    break;
                }
            };
            let place = format_args!("offset {}", delivery.offset);
            match taker.take(&delivery.body, delivery.message_id.as_deref(), &place, KEPT) {
                Ok(Taken::Written | Taken::Dropped) => {
                    last = Some(delivery.offset);
                    taken += 1;
                }
                Ok(Taken::Bad(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(e) if is_closed_output(&e) => return Ok(End::ClosedOutput),
                Err(e) => return Err(ConsumeError::Output(e)),
            }
            if taker.done() || taker.flush_due() {
                break;
            }
            next = match rx.try_recv() {
                Ok(d) => Some(Some(d)),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => Some(None),
            };
        }
        match taker.flush() {
            Ok(()) => {}
            Err(e) if is_closed_output(&e) => return Ok(End::ClosedOutput),
            Err(e) => return Err(ConsumeError::Output(e)),
        }
        if opts.output_gone.is_some_and(|gone| gone()) {
            return Ok(End::ClosedOutput);
        }
        if let Some(o) = last {
            taker.summary.last_offset = Some(o);
            if let Some(t) = tracker.as_deref_mut() {
                t.written(o, taken, opts).await?;
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
