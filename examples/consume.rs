//! A tiny consumer for `scripts/demo.sh`: reads every message of a queue
//! (as a Logstash consumer would, one flow per array element), then prints
//! the counts and one flow, pretty.
//!
//! Usage: `consume AMQP_URL QUEUE`, e.g.
//! `cargo run --example consume -- amqp://guest:guest@127.0.0.1:5672/%2f netsage_tstat`.
//! The messages are acknowledged, so the queue is empty afterwards.

use std::process::ExitCode;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

/// Bound on the whole read-back.
const DEADLINE: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, queue] = args.as_slice() else {
        eprintln!("usage: consume AMQP_URL QUEUE");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("consume: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(async { tokio::time::timeout(DEADLINE, read_all(url, queue)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("consume: error: {e}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("consume: error: not done within {} s", DEADLINE.as_secs());
            ExitCode::from(1)
        }
    }
}

async fn read_all(url: &str, queue: &str) -> Result<(), String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| format!("opening a channel: {e}"))?;
    // The publisher has finished: the count now is the count to read.
    let waiting = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue {queue}: {e}"))?
        .message_count();
    channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .map_err(|e| format!("basic.qos: {e}"))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "tstat-demo".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consuming {queue}: {e}"))?;
    let (mut messages, mut flows, mut bytes) = (0u64, 0u64, 0u64);
    let mut sample: Option<(String, String)> = None;
    while messages < u64::from(waiting) {
        let delivery = consumer
            .next()
            .await
            .ok_or("the consumer was cancelled")?
            .map_err(|e| format!("delivery: {e}"))?;
        let doc: Value = serde_json::from_slice(&delivery.data)
            .map_err(|e| format!("message {messages} is not JSON: {e}"))?;
        let Value::Array(items) = doc else {
            return Err(format!("message {messages} is not a JSON array"));
        };
        messages += 1;
        bytes += delivery.data.len() as u64;
        flows += items.len() as u64;
        if sample.is_none()
            && !items.is_empty()
            && let Some(first) = first_element(&delivery.data)
        {
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            sample = Some((id, first));
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| format!("ack: {e}"))?;
    }
    let _ = conn.close(200, "done".into()).await;

    println!("messages received: {messages} ({bytes} bytes)");
    println!("flows received: {flows}");
    if let Some((id, flow)) = sample {
        println!(
            "first flow (message {id}), keys in wire order:\n{}",
            pretty(&flow)
        );
    }
    Ok(())
}

/// The text of the first element of a compact JSON array, as sent (so the
/// keys keep their order, which a `serde_json::Value` would sort).
fn first_element(array: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(array).ok()?;
    let body = text.trim_start().strip_prefix('[')?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in body.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' if depth > 0 => depth -= 1,
            ',' | ']' if depth == 0 => return Some(body[..i].trim().to_string()),
            _ => {}
        }
    }
    None
}

/// Indents compact JSON text two spaces per level, keeping its key order.
fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                depth += 1;
                out.push(c);
                newline(&mut out, depth);
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}
