//! The connection's byte level: encoding a request, reading one frame
//! (size prefix included), and the two tasks that own the socket once the
//! handshake is done: the writer (frames from the publisher, heartbeats)
//! and the reader (answers to their waiting requests, everything else to
//! the publisher as events).

use std::time::Duration;

use rabbitmq_stream_protocol::Request;
use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::commands::heart_beat::HeartBeatCommand;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::conn::{Event, Waiters};
use super::frame;

pub(super) fn encode(req: Request) -> Vec<u8> {
    let mut buf = Vec::with_capacity(req.encoded_size() as usize + 4);
    // Encoding into a Vec cannot fail.
    let _ = req.encode(&mut buf);
    buf
}

pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> std::io::Result<Vec<u8>> {
    let size = r.read_u32().await?;
    if max > 0 && size > max.saturating_add(64) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {size} bytes is over the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; size as usize + 4];
    buf[..4].copy_from_slice(&size.to_be_bytes());
    r.read_exact(&mut buf[4..]).await?;
    Ok(buf)
}

pub(super) const CLOSED: &str = "the broker closed the connection";
pub(super) const RESET: &str = "connection reset by the broker";

pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => CLOSED.to_string(),
        std::io::ErrorKind::ConnectionReset => RESET.to_string(),
        _ => e.to_string(),
    }
}

pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut frames: mpsc::Receiver<Vec<u8>>,
    heartbeat: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut w = BufWriter::with_capacity(256 << 10, w);
    let beat = encode(HeartBeatCommand::default().into());
    let period = if heartbeat.is_zero() {
        Duration::from_secs(3600)
    } else {
        heartbeat
    };
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        let first = tokio::select! {
            f = frames.recv() => match f {
                Some(f) => f,
                None => return,
            },
            _ = tick.tick() => if heartbeat.is_zero() { continue } else { beat.clone() },
        };
        let mut result = w.write_all(&first).await;
        while result.is_ok()
            && let Ok(f) = frames.try_recv()
        {
            result = w.write_all(&f).await;
        }
        if let Err(e) = result.and(w.flush().await) {
            let _ = events.send(Event::Lost(io_reason(&e)));
            return;
        }
    }
}

pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    frame_max: u32,
    heartbeat: Duration,
    waiters: Waiters,
    outbox: mpsc::Sender<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
) {
    // The broker sends a heartbeat when idle; two missed ones mean it is gone.
    let quiet = if heartbeat.is_zero() {
        Duration::from_secs(u64::from(u32::MAX))
    } else {
        heartbeat * 2 + Duration::from_secs(1)
    };
    let reason = loop {
        let frame = match timeout(quiet, read_frame(&mut r, frame_max)).await {
            Err(_) => break Some(format!("nothing from the broker for {} s", quiet.as_secs())),
            Ok(Err(e)) => break Some(io_reason(&e)),
            Ok(Ok(f)) => f,
        };
        if let Some(id) = frame::correlation(&frame) {
            let waiter = waiters.lock().ok().and_then(|mut w| w.remove(&id));
            if let Some(tx) = waiter {
                let _ = tx.send(frame);
            }
            continue;
        }
        let event = match frame::key(&frame) {
            // A chunk can be large: handed over as it is, not copied.
            Some(frame::DELIVER) => Event::Deliver {
                subscription: frame.get(8).copied().unwrap_or(0),
                frame,
            },
            Some(frame::CLOSE) => {
                let (code, reason) = frame::close(&frame);
                if let Some(corr) = frame::close_correlation(&frame) {
                    let _ = outbox.try_send(frame::close_response(corr));
                }
                Event::Closed { code, reason }
            }
            Some(_) => match frame::unasked(&frame) {
                Some(e) => e,
                None => continue,
            },
            None => continue,
        };
        let closed = matches!(event, Event::Closed { .. });
        if events.send(event).is_err() || closed {
            break None;
        }
    };
    // Dropping the waiters fails every request still waiting.
    if let Ok(mut w) = waiters.lock() {
        w.clear();
    }
    // After a close the event already said why.
    if let Some(reason) = reason {
        let _ = events.send(Event::Lost(reason));
    }
}
