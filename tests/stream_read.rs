//! The stream reader (design §14.6) against private RabbitMQ nodes with the
//! stream plugin: messages published by our stream publisher and over AMQP
//! 0-9-1 read back equal and in offset order; the start positions (first,
//! an offset inside a chunk, next, last, a timestamp); offsets stored on the
//! broker and read back by a new reader; the broker killed (SIGKILL) and
//! restarted while reading, with no message lost or repeated; a missing
//! stream named in a clear error.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::rabbit::{NodeOptions, RabbitNode, unique};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tstat_transport::config::{RabbitConfig, StreamConfig, StreamOptions, check, process_env};
use tstat_transport::publish::stream::{Delivery, StartAt, StreamPublisher, StreamReader};
use tstat_transport::publish::{Notice, PublishError, PublishOptions};

/// Bound on one wait for a message (a loaded machine, a broker restart).
const DEADLINE: Duration = Duration::from_secs(120);

fn node() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| {
        let node = RabbitNode::start_with(NodeOptions {
            stream: true,
            ..NodeOptions::default()
        });
        common::streams::await_listener(&config(&node, "ready"), DEADLINE);
        node
    })
}

/// The node's config (through the real config reader) with the stream set.
fn config(node: &RabbitNode, stream: &str) -> RabbitConfig {
    let mut cfg = check(
        &node.config("unused", ""),
        Path::new("stream-read-test.ini"),
        &process_env,
    )
    .expect("test config")
    .config;
    cfg.stream = Some(StreamConfig {
        name: stream.to_string(),
        port: node.stream_port(),
        options: StreamOptions::default(),
    });
    cfg
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Options with the notices collected (and shown live).
fn options() -> (PublishOptions, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let opts = PublishOptions {
        window: std::num::NonZeroUsize::new(64).expect("64"),
        retries: 30,
        backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(10),
        confirm_timeout: Duration::from_secs(20),
        notices: Some(Arc::new(move |n: &Notice| {
            eprintln!("notice: {n}");
            sink.lock().expect("notices").push(n.to_string());
        })),
        ..PublishOptions::default()
    };
    (opts, seen)
}

/// A message as (message id, body).
type Message = (String, Vec<u8>);

fn message(producer: &str, id: u64) -> Message {
    (
        format!("{producer}:{id}"),
        format!(
            "[{{\"producer\":\"{producer}\",\"id\":{id},\"pad\":\"{}\"}}]",
            "x".repeat(300)
        )
        .into_bytes(),
    )
}

/// Publishes `ids` of `producer` with our stream publisher (creating the
/// stream when absent); returns them.
async fn publish_stream(
    cfg: &RabbitConfig,
    opts: &PublishOptions,
    producer: &str,
    ids: std::ops::RangeInclusive<u64>,
) -> Vec<Message> {
    let mut p = StreamPublisher::connect(cfg, opts)
        .await
        .expect("connect the publisher");
    let s = p.declare(producer).await.expect("declare");
    let mut sent = Vec::new();
    for id in ids {
        let (mid, body) = message(producer, id);
        p.send(s, id, &mid, body.clone()).await.expect("send");
        sent.push((mid, body));
    }
    p.flush().await.expect("flush");
    p.close().await;
    sent
}

/// Publishes `ids` of `producer` over AMQP 0-9-1 into the (existing)
/// stream, each confirmed; returns them.
async fn publish_amqp(
    url: &str,
    stream: &str,
    producer: &str,
    ids: std::ops::RangeInclusive<u64>,
) -> Vec<Message> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect over AMQP 0-9-1");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirm_select");
    let mut sent = Vec::new();
    let mut confirms = Vec::new();
    for id in ids {
        let (mid, body) = message(producer, id);
        let c = ch
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_message_id(mid.clone().into())
                    .with_content_type("application/json".into()),
            )
            .await
            .expect("publish over AMQP 0-9-1");
        confirms.push(c);
        sent.push((mid, body));
    }
    for c in confirms {
        c.await.expect("confirmed");
    }
    let _ = conn.close(200, "done".into()).await;
    sent
}

/// Reads `n` messages, each within the deadline.
async fn read_n(reader: &mut StreamReader, n: usize) -> Vec<Delivery> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(DEADLINE, reader.next()).await {
            Err(_) => panic!(
                "only {} of {n} messages came before the deadline",
                got.len()
            ),
            Ok(Err(e)) => panic!("reading failed after {} messages: {e}", got.len()),
            Ok(Ok(d)) => got.push(d),
        }
    }
    got
}

fn as_messages(got: &[Delivery]) -> Vec<Message> {
    got.iter()
        .map(|d| (d.message_id.clone().unwrap_or_default(), d.body.clone()))
        .collect()
}

/// Requires `got` to be `want` in order, with offsets `first..` without a
/// gap.
fn assert_read(got: &[Delivery], want: &[Message], first: u64) {
    let offsets: Vec<u64> = got.iter().map(|d| d.offset).collect();
    let expected: Vec<u64> = (first..first + want.len() as u64).collect();
    assert_eq!(offsets, expected, "offsets");
    let ids: Vec<String> = got
        .iter()
        .map(|d| d.message_id.clone().unwrap_or_default())
        .collect();
    let want_ids: Vec<String> = want.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, want_ids, "message ids");
    assert!(
        as_messages(got) == want,
        "a body differs from what was sent"
    );
}

#[test]
fn messages_published_both_ways_come_back_equal_in_offset_order() {
    let node = node();
    let stream = unique("both");
    let cfg = config(node, &stream);
    let (opts, _) = options();
    runtime().block_on(async {
        let mut want = publish_stream(&cfg, &opts, "sp", 1..=300).await;
        want.extend(publish_amqp(&node.url(), &stream, "amqp", 1..=200).await);
        want.extend(publish_stream(&cfg, &opts, "sp2", 1..=100).await);
        // An AMQP 0-9-1 message without a message id, with headers and an
        // empty body.
        let conn = Connection::connect(&node.url(), ConnectionProperties::default())
            .await
            .expect("connect over AMQP 0-9-1");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default())
            .await
            .expect("confirm_select");
        let mut headers = lapin::types::FieldTable::default();
        headers.insert("k".into(), lapin::types::AMQPValue::LongString("v".into()));
        ch.basic_publish(
            "".into(),
            stream.as_str().into(),
            BasicPublishOptions::default(),
            b"",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirmed");
        let _ = conn.close(200, "done".into()).await;

        let mut reader = StreamReader::connect(&cfg, &opts)
            .await
            .expect("connect the reader");
        assert_eq!(reader.stream(), stream);
        reader
            .subscribe(StartAt::First, 2)
            .await
            .expect("subscribe");
        let mut got = read_n(&mut reader, want.len() + 1).await;
        let bare = got.pop().expect("the bare message");
        assert_eq!(bare.offset, want.len() as u64);
        assert_eq!(bare.message_id, None, "no message id");
        assert!(bare.body.is_empty(), "an empty body");
        assert_read(&got, &want, 0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        assert!(
            got.windows(2)
                .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms),
            "chunk timestamps go forward"
        );
        assert!(
            got.iter()
                .all(|d| d.timestamp_ms > now_ms - 600_000 && d.timestamp_ms <= now_ms + 60_000),
            "chunk timestamps are the broker's clock in ms"
        );
        // Nothing more: the next read waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), reader.next())
                .await
                .is_err(),
            "no message beyond what was published"
        );
        reader.close().await;
    });
}

#[test]
fn each_start_position_starts_where_it_says() {
    let node = node();
    let stream = unique("starts");
    let cfg = config(node, &stream);
    let (opts, _) = options();
    runtime().block_on(async {
        let want = publish_stream(&cfg, &opts, "p", 1..=600).await;
        let n = want.len() as u64;
        let mut all = StreamReader::connect(&cfg, &opts).await.expect("connect");
        all.subscribe(StartAt::First, 1).await.expect("subscribe");
        let all_read = read_n(&mut all, want.len()).await;
        assert_read(&all_read, &want, 0);
        all.close().await;

        // An offset inside a chunk (records of one chunk share its
        // timestamp): the broker delivers the whole chunk, the reader
        // starts exactly at the offset.
        let k = (1..all_read.len())
            .find(|&i| i > 250 && all_read[i - 1].timestamp_ms == all_read[i].timestamp_ms)
            .unwrap_or(300) as u64;
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::Offset(k), 2).await.expect("subscribe");
        let got = read_n(&mut r, (n - k) as usize).await;
        assert_read(&got, &want[k as usize..], k);
        r.close().await;

        // Last: the last chunk (its records share a timestamp), up to the
        // last message.
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::Last, 1).await.expect("subscribe");
        let first = read_n(&mut r, 1).await.remove(0);
        assert!(first.offset < n, "{}", first.offset);
        let rest = read_n(&mut r, (n - 1 - first.offset) as usize).await;
        let last_chunk: Vec<Delivery> = std::iter::once(first.clone()).chain(rest).collect();
        assert_read(&last_chunk, &want[first.offset as usize..], first.offset);
        assert!(
            last_chunk
                .iter()
                .all(|d| d.timestamp_ms == last_chunk[0].timestamp_ms),
            "Last starts at the last chunk"
        );
        r.close().await;

        // A timestamp: the first chunk stored at or after it.
        let j = (1..all_read.len())
            .find(|&i| i > 100 && all_read[i - 1].timestamp_ms < all_read[i].timestamp_ms);
        if let Some(j) = j {
            let ts = all_read[j].timestamp_ms;
            let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
            r.subscribe(StartAt::Timestamp(ts), 1)
                .await
                .expect("subscribe");
            let got = read_n(&mut r, want.len() - j).await;
            assert_read(&got, &want[j..], j as u64);
            r.close().await;
        } else {
            eprintln!("every chunk has one timestamp: timestamp start not checked");
        }

        // Next: only what is published after the subscription.
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::Next, 1).await.expect("subscribe");
        let later = publish_stream(&cfg, &opts, "later", 1..=20).await;
        let got = read_n(&mut r, later.len()).await;
        assert_read(&got, &later, n);
        r.close().await;
    });
}

#[test]
fn a_stored_offset_is_read_back_by_a_new_reader() {
    let node = node();
    let stream = unique("track");
    let cfg = config(node, &stream);
    let (opts, _) = options();
    runtime().block_on(async {
        publish_stream(&cfg, &opts, "p", 1..=50).await;
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        assert_eq!(r.query_offset("app").await.expect("query"), None);
        r.subscribe(StartAt::First, 1).await.expect("subscribe");
        let got = read_n(&mut r, 30).await;
        r.store_offset("app", got[29].offset).await.expect("store");
        r.close().await;

        // The broker writes a store asynchronously: polled with a deadline.
        let mut r2 = StreamReader::connect(&cfg, &opts).await.expect("connect");
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let stored = r2.query_offset("app").await.expect("query");
            if stored == Some(29) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "the stored offset never came back: {stored:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(r2.query_offset("other").await.expect("query"), None);
        // Continuing after it gives the rest.
        r2.subscribe(StartAt::Offset(30), 1)
            .await
            .expect("subscribe");
        let rest = read_n(&mut r2, 20).await;
        assert_eq!(rest[0].offset, 30);
        assert_eq!(rest[0].message_id.as_deref(), Some("p:31"));
        // A name the broker cannot take is refused before asking.
        let e = r2.store_offset("", 1).await.expect_err("empty name");
        assert!(e.to_string().contains("1 to 255 bytes"), "{e}");
        r2.close().await;
    });
}

#[test]
fn a_missing_stream_is_a_clear_error_and_is_not_created() {
    let node = node();
    let stream = unique("absent");
    let cfg = config(node, &stream);
    let (opts, _) = options();
    runtime().block_on(async {
        let started = std::time::Instant::now();
        let e = StreamReader::connect(&cfg, &opts)
            .await
            .expect_err("a missing stream");
        let text = e.to_string();
        assert!(matches!(e, PublishError::Stream { .. }), "{e:?}");
        assert!(!e.is_retryable(), "{e:?}");
        assert!(text.contains(&format!("'{stream}'")), "{text}");
        assert!(
            text.contains(&format!("127.0.0.1:{}", node.stream_port())),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(30), "not retried");
        // Still absent: the reader did not create it.
        let e = StreamReader::connect(&cfg, &opts)
            .await
            .expect_err("still missing");
        assert!(e.to_string().contains("does not exist"), "{e}");
    });
}

#[test]
fn a_broker_killed_while_reading_loses_and_repeats_nothing() {
    let mut node = RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    });
    let stream = unique("killed");
    let cfg = config(&node, &stream);
    common::streams::await_listener(&cfg, DEADLINE);
    let (opts, notices) = options();
    let rt = runtime();
    let want = rt.block_on(publish_stream(&cfg, &opts, "p", 1..=3000));
    // RabbitMQ 3.10 saves its stream registrations lazily: a SIGKILL soon
    // after a fresh node's first stream would lose the stream for good.
    common::streams::save_registrations(&node);
    let mut reader = rt.block_on(async {
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::First, 1).await.expect("subscribe");
        r
    });
    let mut got = rt.block_on(read_n(&mut reader, 1000));
    // The reader holds at most one chunk: most of the stream is still on
    // the broker when it dies.
    node.kill9_and_restart();
    let rest = rt.block_on(read_n(&mut reader, want.len() - got.len()));
    got.extend(rest);
    assert_read(&got, &want, 0);
    let seen = notices.lock().expect("notices").clone();
    assert!(
        seen.iter().any(|n| n.contains("reading again from offset")),
        "the reader resubscribed: {seen:?}"
    );
    rt.block_on(reader.close());
}

#[test]
fn an_idle_subscription_stays_alive_on_heartbeats() {
    let node = node();
    let stream = unique("idle");
    let cfg = config(node, &stream);
    let (mut opts, notices) = options();
    // One-second heartbeats: silence for three seconds would end the
    // connection; the broker's heartbeats keep an idle one alive.
    opts.heartbeat = Duration::from_secs(1);
    runtime().block_on(async {
        publish_stream(&cfg, &opts, "p", 1..=1).await;
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::Next, 1).await.expect("subscribe");
        // Idle on purpose, for longer than two missed heartbeats.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), r.next())
                .await
                .is_err(),
            "nothing was published"
        );
        let later = publish_stream(&cfg, &opts, "p2", 1..=3).await;
        let got = read_n(&mut r, 3).await;
        assert_read(&got, &later, 1);
        r.close().await;
    });
    let seen = notices.lock().expect("notices").clone();
    assert!(
        !seen.iter().any(|n| n.contains("reading again")),
        "the idle subscription was lost: {seen:?}"
    );
}

#[test]
fn reading_over_tls_works() {
    let node = RabbitNode::start_with(NodeOptions {
        stream: true,
        tls: Some(common::rabbit::TlsListener {
            fail_if_no_peer_cert: false,
        }),
        ..NodeOptions::default()
    });
    let certs = node.certs.as_ref().expect("certificates");
    let stream = unique("tls");
    let text = format!(
        "[rabbit]\nhost = localhost\nport = {}\nusername = guest\npassword = guest\nuse_ssl = true\n\
         queue = unused\nrouting_key = unused\nexchange =\n[ssl_options]\nca_certs = {}\n",
        node.tls_port.expect("TLS port"),
        certs.ca.display()
    );
    let mut cfg = check(&text, Path::new("stream-read-tls.ini"), &process_env)
        .expect("TLS config")
        .config;
    cfg.stream = Some(StreamConfig {
        name: stream.clone(),
        port: node.stream_tls_port.expect("stream TLS port"),
        options: StreamOptions::default(),
    });
    common::streams::await_listener(&cfg, DEADLINE);
    let (opts, _) = options();
    runtime().block_on(async {
        let want = publish_stream(&cfg, &opts, "t", 1..=40).await;
        let mut r = StreamReader::connect(&cfg, &opts)
            .await
            .expect("connect over TLS");
        assert_eq!(
            r.endpoint(),
            Some(format!("localhost:{}", node.stream_tls_port.expect("port")).as_str())
        );
        r.subscribe(StartAt::First, 1).await.expect("subscribe");
        let got = read_n(&mut r, want.len()).await;
        assert_read(&got, &want, 0);
        r.close().await;
    });
}

#[test]
fn reading_under_short_timeouts_loses_nothing() {
    let node = node();
    let stream = unique("cancel");
    let cfg = config(node, &stream);
    let (opts, _) = options();
    // One message at a time: a chunk each, so reading waits for each
    // chunk's delivery after its credit.
    let one = PublishOptions {
        window: std::num::NonZeroUsize::MIN,
        ..opts.clone()
    };
    runtime().block_on(async {
        let want = publish_stream(&cfg, &one, "c", 1..=200).await;
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::First, 1).await.expect("subscribe");
        // Each call may be dropped while it waits (as an idle timeout
        // does): no message and no credit may be lost with it.
        let mut got = Vec::new();
        let (mut dropped, end) = (0u64, tokio::time::Instant::now() + DEADLINE);
        while got.len() < want.len() {
            assert!(
                tokio::time::Instant::now() < end,
                "stalled after {} messages ({dropped} calls dropped)",
                got.len()
            );
            match tokio::time::timeout(Duration::from_micros(200), r.next()).await {
                Err(_) => dropped += 1,
                Ok(d) => got.push(d.expect("read")),
            }
        }
        assert!(dropped > 0, "no call was dropped: nothing shown");
        assert_read(&got, &want, 0);
        r.close().await;
    });
}

#[test]
fn a_node_without_a_member_of_the_stream_hands_over_to_one_with_it() {
    let cluster = common::cluster::Cluster::start_with(
        2,
        NodeOptions {
            stream: true,
            stream_listen: Some(("127.0.0.1".into(), common::rabbit::free_ports(1)[0])),
            ..NodeOptions::default()
        },
    );
    let port = cluster.nodes[0].stream_port();
    let stream = unique("member");
    // The stream has one member; the reader's host list names the other
    // node first.
    let cfg_on = |order: &[usize]| {
        let text = common::streams::stream_config_text(
            &cluster.stream_hosts_in(order),
            cluster.nodes[order[0]].port,
            port,
            &stream,
            "[rabbit_stream_options]\ninitial-cluster-size = 1\n",
        );
        check(&text, Path::new("stream-read-cluster.ini"), &process_env)
            .expect("cluster config")
            .config
    };
    common::streams::await_listener(&cfg_on(&[0]), DEADLINE);
    common::streams::await_listener(&cfg_on(&[1]), DEADLINE);
    let (opts, _) = options();
    runtime().block_on(async {
        let want = publish_stream(&cfg_on(&[0]), &opts, "m", 1..=30).await;
        // The broker places the one member: found from the metadata (a
        // reader ends on it from either node).
        let probe = StreamReader::connect(&cfg_on(&[0]), &opts)
            .await
            .expect("connect");
        let at = probe.endpoint().expect("connected").to_string();
        probe.close().await;
        let member = usize::from(at.starts_with("127.0.0.2:"));
        let other = 1 - member;
        let mut r = StreamReader::connect(&cfg_on(&[other, member]), &opts)
            .await
            .expect("connect through the node without a member");
        assert_eq!(
            r.endpoint(),
            Some(format!("127.0.0.{}:{port}", member + 1).as_str()),
            "read from the node holding the stream"
        );
        r.subscribe(StartAt::First, 1).await.expect("subscribe");
        let got = read_n(&mut r, want.len()).await;
        assert_read(&got, &want, 0);
        r.close().await;
    });
}

#[test]
fn chunks_larger_than_the_frame_size_are_read() {
    let node = node();
    let stream = unique("large");
    let cfg = config(node, &stream);
    let (opts, _) = options();
    runtime().block_on(async {
        // 60 KB messages sent 64 at a time: the broker writes chunks of
        // megabytes, each delivered as one frame (1 MiB is the default
        // frame size).
        let mut p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect the publisher");
        let s = p.declare("big").await.expect("declare");
        let mut want = Vec::new();
        for id in 1..=200u64 {
            let mid = format!("big:{id}");
            let body = format!("[\"{id}{}\"]", "y".repeat(60_000)).into_bytes();
            p.send(s, id, &mid, body.clone()).await.expect("send");
            want.push((mid, body));
        }
        p.flush().await.expect("flush");
        p.close().await;
        let mut r = StreamReader::connect(&cfg, &opts).await.expect("connect");
        r.subscribe(StartAt::First, 1).await.expect("subscribe");
        let got = read_n(&mut r, want.len()).await;
        assert_read(&got, &want, 0);
        r.close().await;
    });
}
