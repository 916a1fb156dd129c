//! The writer and the consumer of `scripts/bench-follow.sh`: appends Tstat
//! rows (copied unchanged from a fixture log, round and round) to a live log
//! at a steady rate, in bursts, while consuming the queue that `tstat_send
//! --follow` publishes to, and reports the rate it achieved (measured: a slow
//! disk or CPU makes it fall short of the one asked for) and the lag from a
//! burst written to its last flow delivered (p50/p99/max).
//!
//! Usage: `follow-lag AMQP_URL QUEUE LIVE_LOG FIXTURE_LOG ROWS_PER_SEC SECONDS`.
//! LIVE_LOG must already hold the fixture's header line (the script writes it
//! before starting `tstat_send`). The queue is declared durable (as
//! `tstat_send` would create it) and consumed without acks.
//!
//! Lag is measured per burst (one every [`BURST`]): `tstat_send` publishes a
//! log's arrays in row order, so the burst whose rows end at flow number C
//! is delivered when the consumer has received C flows. The flows each row
//! gives are counted beforehand with the library's parser (`-b 0`).

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tstat_transport::parse::{FlowSink, Header, ParseOptions, Parser, Protocol};

/// One burst of rows this often.
const BURST: Duration = Duration::from_millis(100);
/// How long the consumer waits for the last flows after the writer stops
/// (`--flush` plus a generous margin).
const DRAIN: Duration = Duration::from_secs(60);

/// A burst: when its write returned, and the flows of every row up to it.
type Written = Arc<Mutex<Vec<(Instant, u64)>>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, queue, live, fixture, rate, seconds] = args.as_slice() else {
        eprintln!("usage: follow-lag AMQP_URL QUEUE LIVE_LOG FIXTURE_LOG ROWS_PER_SEC SECONDS");
        return ExitCode::from(2);
    };
    let (Ok(rate), Ok(seconds)) = (rate.parse::<u64>(), seconds.parse::<u64>()) else {
        eprintln!("follow-lag: error: ROWS_PER_SEC and SECONDS are whole numbers");
        return ExitCode::from(2);
    };
    match run(url, queue, live, fixture, rate, seconds) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("follow-lag: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Counts documents.
struct Count(u64);

impl FlowSink for Count {
    fn flow(&mut self, _: &[u8]) -> std::io::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

/// The fixture's rows (with their newlines) and the flows each gives.
fn fixture_rows(path: &str) -> Result<Vec<(Vec<u8>, u64)>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut lines = text.split_inclusive(|&b| b == b'\n');
    let header = lines.next().ok_or(format!("{path}: empty"))?;
    let proto = Protocol::from_file_name(std::path::Path::new(path)).unwrap_or(Protocol::Tcp);
    let header = Header::from_line(header, path, proto).map_err(|e| e.to_string())?;
    let mut parser = Parser::new(ParseOptions {
        threshold: 0,
        sensor: "bench".into(),
        ..ParseOptions::default()
    });
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if !line.ends_with(b"\n") {
            break;
        }
        let mut count = Count(0);
        parser
            .parse_lines(&header, path, line, i as u64 + 2, &mut count)
            .map_err(|e| e.to_string())?;
        rows.push((line.to_vec(), count.0));
    }
    if rows.is_empty() {
        return Err(format!("{path}: no rows"));
    }
    Ok(rows)
}

fn run(
    url: &str,
    queue: &str,
    live: &str,
    fixture: &str,
    rate: u64,
    seconds: u64,
) -> Result<bool, String> {
    let rows = fixture_rows(fixture)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue {queue}: {e}"))?;
        channel
            .basic_qos(2000, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "follow-lag".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consuming {queue}: {e}"))?;

        let written: Written = Arc::default();
        let writer = {
            let (written, live) = (written.clone(), live.to_string());
            std::thread::spawn(move || write(&live, &rows, rate, seconds, &written))
        };
        let mut received: Vec<(Instant, u64)> = Vec::new();
        let (mut flows, mut messages, mut duplicates) = (0u64, 0u64, 0u64);
        let mut ids = HashSet::new();
        let marker = memchr::memmem::Finder::new(b"{\"type\":\"flow\"");
        let mut drain_end: Option<Instant> = None;
        loop {
            if drain_end.is_none() && writer.is_finished() {
                drain_end = Some(Instant::now() + DRAIN);
            }
            let target = written.lock().map_or(0, |w| w.last().map_or(0, |b| b.1));
            if drain_end.is_some() && flows >= target {
                break;
            }
            if drain_end.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            let next = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
            let Ok(next) = next else { continue };
            let delivery = next
                .ok_or("the consumer was cancelled")?
                .map_err(|e| format!("delivery: {e}"))?;
            let now = Instant::now();
            if let Some(id) = delivery.properties.message_id()
                && !ids.insert(id.to_string())
            {
                duplicates += 1;
                continue;
            }
            messages += 1;
            flows += marker.find_iter(&delivery.data).count() as u64;
            received.push((now, flows));
        }
        let _ = conn.close(200, "done".into()).await;
        let wrote = writer
            .join()
            .map_err(|_| "the writer panicked".to_string())??;
        let bursts = written.lock().map(|w| w.clone()).unwrap_or_default();
        report(&bursts, &received, &wrote, rate);
        println!("messages received: {messages}, flows: {flows}, duplicate ids: {duplicates}");
        let want = bursts.last().map_or(0, |b| b.1);
        if flows < want {
            println!("MISSING: {} of {want} flows not delivered", want - flows);
            return Ok(false);
        }
        Ok(true)
    })
}

/// What the writer did, measured: the rate it reached may fall short of
/// the one asked for.
struct Wrote {
    /// Rows appended.
    rows: u64,
    /// The writing period: the bursts' slots ([`BURST`] each), or longer
    /// when the last write ended after its slot.
    took: Duration,
    /// Bursts that started more than a burst late (the disk or the CPU
    /// could not keep up).
    late: u64,
}

/// Appends `rate` rows a second for `seconds`, one burst every [`BURST`],
/// recording each burst.
fn write(
    live: &str,
    rows: &[(Vec<u8>, u64)],
    rate: u64,
    seconds: u64,
    written: &Written,
) -> Result<Wrote, String> {
    let mut log = OpenOptions::new()
        .append(true)
        .open(live)
        .map_err(|e| format!("{live}: {e}"))?;
    let per_burst = (rate as u128 * BURST.as_millis() / 1000).max(1) as usize;
    let bursts = seconds * 1000 / BURST.as_millis() as u64;
    let start = Instant::now();
    let (mut next_row, mut flows, mut total, mut late) = (0usize, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    for k in 0..bursts {
        let due = start + BURST * k as u32;
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now - due > BURST {
            late += 1;
        }
        buf.clear();
        for _ in 0..per_burst {
            let (row, n) = &rows[next_row];
            buf.extend_from_slice(row);
            flows += n;
            next_row = (next_row + 1) % rows.len();
        }
        log.write_all(&buf).map_err(|e| format!("{live}: {e}"))?;
        total += per_burst as u64;
        if let Ok(mut w) = written.lock() {
            w.push((Instant::now(), flows));
        }
    }
    Ok(Wrote {
        rows: total,
        took: start.elapsed().max(BURST * bursts as u32),
        late,
    })
}

/// Prints the lag of every burst: from its write to the delivery of its
/// last flow.
fn report(bursts: &[(Instant, u64)], received: &[(Instant, u64)], wrote: &Wrote, asked: u64) {
    let mut lags = Vec::new();
    let mut r = 0;
    for &(t, cum) in bursts {
        while r < received.len() && received[r].1 < cum {
            r += 1;
        }
        let Some(&(got, _)) = received.get(r) else {
            break;
        };
        lags.push(got.saturating_duration_since(t).as_secs_f64());
    }
    let secs = wrote.took.as_secs_f64();
    let achieved = if secs > 0.0 {
        format!("{:.0}", wrote.rows as f64 / secs)
    } else {
        "n/a".to_string()
    };
    println!(
        "rows written: {} in {secs:.2} s: {achieved} rows/s achieved ({asked} asked), \
         {} bursts, {} started late",
        wrote.rows,
        bursts.len(),
        wrote.late
    );
    if lags.is_empty() {
        println!("lag: no burst was delivered");
        return;
    }
    let delivered = lags.len();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags[((lags.len() - 1) as f64 * p).round() as usize];
    println!(
        "lag (burst written -> its last flow delivered, {delivered} bursts): p50 {:.3} s, \
         p99 {:.3} s, max {:.3} s",
        pct(0.50),
        pct(0.99),
        lags[lags.len() - 1]
    );
}
