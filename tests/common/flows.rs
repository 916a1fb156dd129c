//! Reading what tests published back from a queue: every message in queue
//! order, ids split into (directory, index), de-duplication by id that fails
//! on an id carrying two different bodies, and arrays flattened into flows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use super::rabbit::{RabbitNode, Received};

/// Bound on reading a queue back.
pub const READ_DEADLINE: Duration = Duration::from_secs(120);

/// The flow documents of a sequence of array messages, in order.
pub fn flatten<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, b) in bodies.into_iter().enumerate() {
        match serde_json::from_slice::<Value>(b) {
            Ok(Value::Array(a)) => out.extend(a),
            other => panic!("message {i} is not a JSON array: {other:?}"),
        }
    }
    out
}

/// Runs `f` on a fresh connection to `url` (bounded by `deadline`).
pub fn with_channel<T>(
    url: &str,
    deadline: Duration,
    f: impl AsyncFnOnce(&lapin::Channel) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let work = async {
            let conn = Connection::connect(url, ConnectionProperties::default())
                .await
                .expect("connect to read back");
            let channel = conn.create_channel().await.expect("channel");
            let r = f(&channel).await;
            let _ = conn.close(200, "done".into()).await;
            r
        };
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or_else(|_| panic!("broker work not done within {deadline:?}"))
    })
}

/// Messages in `queue` now (passive declare).
pub fn queue_len(node: &RabbitNode, queue: &str) -> u32 {
    passive_count(node, queue).expect("passive declare")
}

/// Messages in `queue` now; 0 while it does not exist yet.
pub fn published_so_far(node: &RabbitNode, queue: &str) -> u32 {
    passive_count(node, queue).unwrap_or(0)
}

/// The message count a passive declare reports, on a fresh connection.
fn passive_count(node: &RabbitNode, queue: &str) -> Result<u32, lapin::Error> {
    with_channel(&node.url(), READ_DEADLINE, async |ch| {
        message_count(ch, queue).await
    })
}

/// The message count a passive declare of `queue` reports on `ch`.
async fn message_count(ch: &lapin::Channel, queue: &str) -> Result<u32, lapin::Error> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
}

/// Consumes every message in `queue` (the count is taken first; the
/// publishers have finished), in queue order.
pub fn consume_all(node: &RabbitNode, queue: &str) -> Vec<Received> {
    with_channel(&node.url(), READ_DEADLINE, async |ch| {
        let n = message_count(ch, queue).await.expect("passive declare") as usize;
        let mut got = Vec::with_capacity(n);
        if n == 0 {
            return got;
        }
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "send-test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("basic_consume");
        while got.len() < n {
            let d = consumer
                .next()
                .await
                .expect("consumer ended early")
                .expect("delivery");
            got.push(Received {
                body: d.data,
                properties: d.properties,
            });
        }
        got
    })
}

/// `SENSOR:DIR:INDEX` split into (DIR, INDEX).
pub fn split_id(id: &str) -> (String, u64) {
    let mut parts = id.rsplitn(2, ':');
    let index = parts
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("message id {id:?} has no index"));
    let rest = parts.next().unwrap_or_default();
    let dir = rest.split_once(':').map(|(_, d)| d).unwrap_or_default();
    (dir.to_string(), index)
}

/// Messages de-duplicated by id (first copy kept), ordered by (dir, index),
/// and the number of ids that arrived more than once.
pub fn dedup(msgs: &[Received]) -> (Vec<(String, u64, Vec<u8>)>, usize) {
    let mut by_id: BTreeMap<(String, u64), Vec<u8>> = BTreeMap::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for m in msgs {
        let id = m.message_id();
        *seen.entry(id.clone()).or_default() += 1;
        let (dir, index) = split_id(&id);
        let body = by_id.entry((dir, index)).or_insert_with(|| m.body.clone());
        assert_eq!(
            *body, m.body,
            "message {id} arrived twice with different bodies"
        );
    }
    let dups = seen.values().filter(|&&c| c > 1).count();
    let list = by_id.into_iter().map(|((d, i), b)| (d, i, b)).collect();
    (list, dups)
}
