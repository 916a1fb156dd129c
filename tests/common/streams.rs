//! Streams in tests (design §14): a tool's config for a node's stream, the
//! stream's whole content read back (a marker published last over AMQP
//! 0-9-1 says where it ends), what the broker holds for a tree's producers
//! (its progress, observed without reading the stream), and the flows of
//! every message compared as a multiset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use tstat_transport::config::{RabbitConfig, check, process_env};
use tstat_transport::identity::{LogKind, Producers, tree_tag};
use tstat_transport::publish::PublishOptions;
use tstat_transport::publish::stream::StreamPublisher;

use super::rabbit::{RabbitNode, read_stream_until, write_private};

/// How long reading a stream back may take.
pub const READ_DEADLINE: Duration = Duration::from_secs(180);

/// The config text of `node`'s stream `stream` (hosts as given, e.g. a
/// cluster's list; the stream port of the first node for all).
pub fn stream_config_text(
    hosts: &str,
    port: u16,
    stream_port: u16,
    stream: &str,
    extra: &str,
) -> String {
    format!(
        "[rabbit]\nhost = {hosts}\nport = {port}\nusername = guest\npassword = guest\n\
         transport = stream\nstream = {stream}\nstream_port = {stream_port}\n{extra}"
    )
}

/// Writes the config of `node`'s stream `stream` to `dir/STREAM.ini`.
pub fn write_stream_config(node: &RabbitNode, dir: &Path, stream: &str) -> PathBuf {
    let text = stream_config_text("127.0.0.1", node.port, node.stream_port(), stream, "");
    write_private(&dir.join(format!("{stream}.ini")), &text)
}

/// The config the library reads from `path`.
pub fn load(path: &Path) -> RabbitConfig {
    let text = std::fs::read_to_string(path).expect("read config");
    check(&text, path, &process_env)
        .expect("a valid config")
        .config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every message of `stream` (message id, body), read from its first after
/// a marker was published last over AMQP 0-9-1.
pub fn content(amqp_url: &str, stream: &str) -> Vec<(String, Vec<u8>)> {
    // A new marker each time: an earlier read's marker is in the stream.
    static READS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("end-of-content-{}-{n}", std::process::id());
    runtime().block_on(async {
        let conn = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to publish the marker");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default())
            .await
            .expect("confirm_select");
        ch.basic_publish(
            "".into(),
            stream.into(),
            BasicPublishOptions::default(),
            b"[]",
            BasicProperties::default().with_message_id(marker.clone().into()),
        )
        .await
        .expect("publish the marker")
        .await
        .expect("the marker confirmed");
        let _ = conn.close(200, "done".into()).await;
    });
    let mut got = read_stream_until(amqp_url, stream, &marker, READ_DEADLINE);
    assert_eq!(got.pop().map(|(id, _)| id), Some(marker));
    got.retain(|(id, _)| !id.starts_with("end-of-content-"));
    got
}

/// What the broker holds for the TCP and UDP producers of epoch `epoch` of
/// the tree at `root` shipped as `sensor` (0 when nothing); `None` when the
/// broker cannot be asked now (down, restarting).
pub fn stored(cfg: &RabbitConfig, root: &Path, sensor: &str, epoch: u32) -> Option<[u64; 2]> {
    let producers = Producers::new(sensor, None, &tree_tag(root)).expect("producer names");
    let opts = PublishOptions {
        retries: 0,
        connect_timeout: Duration::from_secs(2),
        confirm_timeout: Duration::from_secs(2),
        ..PublishOptions::default()
    };
    runtime().block_on(async {
        let mut p = StreamPublisher::connect(cfg, &opts).await.ok()?;
        let mut out = [0u64; 2];
        for (i, kind) in LogKind::ALL.into_iter().enumerate() {
            let id = p.declare(&producers.name(kind, epoch)).await.ok()?;
            out[i] = p.last_id(id).await.ok()?;
        }
        p.close().await;
        Some(out)
    })
}

/// Makes a fresh node's stream registrations durable before it is killed.
/// RabbitMQ 3.10 keeps the stream coordinator's registrations in a file it
/// saves lazily (every 3 minutes, or on a clean stop): a SIGKILL within
/// minutes of a fresh node's first stream loses them and the stream stays
/// "not available" for good. A production broker saved them long ago; the
/// tortures are about the tool, so they save them first.
pub fn save_registrations(node: &RabbitNode) {
    node.ctl_ok(&["eval", "[dets:sync(T) || T <- dets:all()]."]);
}

/// The flows of message bodies (JSON arrays), each as its JSON text, with
/// how often it occurs.
pub fn flow_counts<'a>(bodies: impl IntoIterator<Item = &'a [u8]>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for b in bodies {
        let v: Value = serde_json::from_slice(b).expect("a message is JSON");
        for f in v.as_array().expect("a message is an array") {
            *out.entry(f.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// The difference between two flow multisets: (missing, repeated) counts.
pub fn compare(got: &BTreeMap<String, usize>, want: &BTreeMap<String, usize>) -> (usize, usize) {
    let mut missing = 0;
    let mut extra = 0;
    for (f, &n) in want {
        let g = got.get(f).copied().unwrap_or(0);
        missing += n.saturating_sub(g);
        extra += g.saturating_sub(n);
    }
    for (f, &g) in got {
        if !want.contains_key(f) {
            extra += g;
        }
    }
    (missing, extra)
}

/// Polls until a publisher can connect with `cfg` (right after a boot,
/// RabbitMQ 3.10 was seen to drop the first stream connections in the
/// middle of the handshake).
pub fn await_listener(cfg: &RabbitConfig, deadline: Duration) {
    let opts = PublishOptions {
        retries: 0,
        connect_timeout: Duration::from_secs(2),
        ..PublishOptions::default()
    };
    let rt = runtime();
    super::run::wait_until("the stream listener to answer", deadline, || {
        rt.block_on(async {
            match StreamPublisher::connect(cfg, &opts).await {
                Ok(p) => {
                    p.close().await;
                    true
                }
                Err(_) => false,
            }
        })
    });
}
