//! The stream publisher (design §14) against private RabbitMQ nodes with the
//! stream plugin: broker-side deduplication by producer name and publishing
//! id, reconnecting after the broker was killed (SIGKILL) or stopped while
//! messages were in flight with every message stored exactly once, clear
//! errors for a wrong password and a missing stream listener, and TLS.
//! Streams are read back over AMQP 0-9-1 from `first`; a marker message
//! published last says where the stream's content ends.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::rabbit::{NodeOptions, RabbitNode, TlsListener, free_ports, read_stream_until, unique};
use tstat_transport::config::{RabbitConfig, StreamConfig, StreamOptions, check, process_env};
use tstat_transport::publish::stream::{StreamCounts, StreamPublisher};
use tstat_transport::publish::{Notice, PublishError, PublishOptions};

const DEADLINE: Duration = Duration::from_secs(120);
const MARKER: &str = "end-of-test";

/// A stream's messages as (message id, body).
type Content = Vec<(String, Vec<u8>)>;

fn node() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| {
        ready(RabbitNode::start_with(NodeOptions {
            stream: true,
            ..NodeOptions::default()
        }))
    })
}

/// Waits until the node's stream listener completes a handshake: right
/// after boot, RabbitMQ 3.10 was seen to drop the first stream connections
/// in the middle of the handshake.
fn ready(node: RabbitNode) -> RabbitNode {
    await_stream_listener(&config(&node, "ready"));
    node
}

/// Polls until a publisher can connect with `cfg`.
fn await_stream_listener(cfg: &RabbitConfig) {
    let (opts, _) = notices();
    let rt = runtime();
    common::run::wait_until("the stream listener to answer", DEADLINE, || {
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

fn tls_node() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| {
        ready(RabbitNode::start_with(NodeOptions {
            stream: true,
            tls: Some(TlsListener {
                fail_if_no_peer_cert: false,
            }),
            ..NodeOptions::default()
        }))
    })
}

fn stream_node() -> RabbitNode {
    ready(RabbitNode::start_with(NodeOptions {
        stream: true,
        ..NodeOptions::default()
    }))
}

/// The node's config (through the real config reader) with the stream set.
fn config_text(text: &str, stream: &str, port: u16) -> RabbitConfig {
    let mut cfg = check(text, Path::new("stream-test.ini"), &process_env)
        .expect("test config")
        .config;
    cfg.stream = Some(StreamConfig {
        name: stream.to_string(),
        port,
        options: StreamOptions::default(),
    });
    cfg
}

fn config(node: &RabbitNode, stream: &str) -> RabbitConfig {
    config_text(&node.config("unused", ""), stream, node.stream_port())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn body(producer: &str, id: u64) -> Vec<u8> {
    format!(
        "[{{\"producer\":\"{producer}\",\"id\":{id},\"pad\":\"{}\"}}]",
        "x".repeat(200)
    )
    .into_bytes()
}

fn message_id(producer: &str, id: u64) -> String {
    format!("{producer}:{id}")
}

/// Notices collected for assertions and failure messages.
fn notices() -> (PublishOptions, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let opts = PublishOptions {
        window: std::num::NonZeroUsize::new(64).expect("64"),
        retries: 200,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(10),
        confirm_timeout: Duration::from_secs(20),
        notices: Some(Arc::new(move |n: &Notice| {
            // Shown live so a stuck run says how far it got.
            eprintln!("notice: {n}");
            sink.lock().expect("notices").push(n.to_string());
        })),
        ..PublishOptions::default()
    };
    (opts, seen)
}

/// Publishes the marker under its own producer, so a reader knows where
/// the stream's content ends.
async fn publish_marker(cfg: &RabbitConfig, opts: &PublishOptions) {
    let mut p = StreamPublisher::connect(cfg, opts)
        .await
        .expect("connect for the marker");
    let m = p.declare("marker").await.expect("declare marker");
    let next = p.last_id(m).await.expect("marker sequence") + 1;
    p.send(m, next, MARKER, b"[]".to_vec())
        .await
        .expect("send marker");
    p.flush().await.expect("marker confirmed");
    p.close().await;
}

/// Everything in the stream before the marker, as (message id, body).
fn stream_content(
    node: &RabbitNode,
    stream: &str,
    cfg: &RabbitConfig,
    opts: &PublishOptions,
) -> Vec<(String, Vec<u8>)> {
    runtime().block_on(publish_marker(cfg, opts));
    let mut got = read_stream_until(&node.url(), stream, MARKER, DEADLINE);
    assert_eq!(got.pop().map(|(id, _)| id).as_deref(), Some(MARKER));
    got
}

/// Requires the stream to hold `producer`'s ids `ids` exactly once each,
/// in order, with their bodies.
fn assert_exactly(got: &[(String, Vec<u8>)], producer: &str, ids: impl Iterator<Item = u64>) {
    let want: Vec<(String, Vec<u8>)> = ids
        .map(|id| (message_id(producer, id), body(producer, id)))
        .collect();
    let got_ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    let repeats: Vec<&&str> = got_ids.iter().filter(|id| !seen.insert(**id)).collect();
    assert!(repeats.is_empty(), "repeated in the stream: {repeats:?}");
    let missing: Vec<&&str> = want_ids.iter().filter(|id| !seen.contains(**id)).collect();
    assert!(
        missing.is_empty(),
        "missing from the stream: {} ids, first {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(
        got_ids, want_ids,
        "the stream holds other messages or another order"
    );
    assert!(got == want, "a body differs from what was sent");
}

#[test]
fn the_broker_drops_ids_a_producer_already_stored() {
    let node = node();
    let stream = unique("dedup");
    let cfg = config(node, &stream);
    let (opts, _) = notices();
    let n = 50;
    let rt = runtime();
    let first = rt.block_on(async {
        let mut p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect");
        let a = p.declare("sensor-a").await.expect("declare");
        assert_eq!(p.last_id(a).await.expect("sequence"), 0, "a new producer");
        for id in 1..=n {
            p.send(a, id, &message_id("sensor-a", id), body("sensor-a", id))
                .await
                .expect("send");
        }
        p.flush().await.expect("flush");
        assert_eq!(p.confirmed(a), n);
        let counts = p.counts();
        p.close().await;
        counts
    });
    assert_eq!(first.confirmed, n);

    // A new publisher under the same name sends 3..n+5: the broker keeps
    // only n+1..n+5 and confirms all.
    let second = rt.block_on(async {
        let mut p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect");
        let a = p.declare("sensor-a").await.expect("declare again");
        assert_eq!(
            p.last_id(a).await.expect("sequence"),
            n,
            "the broker remembers the producer"
        );
        for id in 3..=n + 5 {
            p.send(a, id, &message_id("sensor-a", id), body("sensor-a", id))
                .await
                .expect("send");
        }
        p.flush().await.expect("flush");
        assert_eq!(p.confirmed(a), n + 5);
        assert_eq!(p.last_id(a).await.expect("sequence"), n + 5);
        let counts = p.counts();
        p.close().await;
        counts
    });
    assert_eq!(second.confirmed, n + 3, "every message sent is confirmed");
    assert_eq!(
        second.below_sequence,
        n - 2,
        "sent at or below the broker's sequence"
    );
    let got = stream_content(node, &stream, &cfg, &opts);
    assert_exactly(&got, "sensor-a", 1..=n + 5);
}

#[test]
fn producers_are_independent_and_ids_must_increase() {
    let node = node();
    let stream = unique("two");
    let cfg = config(node, &stream);
    let (opts, _) = notices();
    runtime().block_on(async {
        let mut p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect");
        let a = p.declare("a").await.expect("declare a");
        let b = p.declare("b").await.expect("declare b");
        let err = p.declare("a").await.expect_err("a twice");
        assert!(err.to_string().contains("declared twice"), "{err}");
        p.send(a, 10, "a:10", body("a", 10)).await.expect("a 10");
        p.send(b, 5, "b:5", body("b", 5)).await.expect("b 5");
        let err = p
            .send(a, 10, "a:10", body("a", 10))
            .await
            .expect_err("a repeated id");
        assert!(matches!(err, PublishError::StreamId { .. }), "{err}");
        assert!(err.to_string().contains("previous id 10"), "{err}");
        let err = p
            .send(b, 6, "b:6", vec![b'x'; 2 << 20])
            .await
            .expect_err("over the frame size");
        assert!(matches!(err, PublishError::StreamTooLarge { .. }), "{err}");
        let err = p.send(b, 0, "b:0", body("b", 0)).await.expect_err("id 0");
        assert!(err.to_string().contains("ids start at 1"), "{err}");
        p.flush().await.expect("flush");
        assert_eq!((p.confirmed(a), p.confirmed(b)), (10, 5));
        assert_eq!(p.last_id(b).await.expect("b"), 5);
        p.close().await;
    });
}

/// When the fault hook of [`publish_around`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The publisher has declared its producer (the stream exists).
    Ready,
    /// The publisher saw `k` confirms and holds still (or, with a pid to
    /// kill, has just killed it).
    AtK,
}

/// Publishes ids 1..=n of `producer` on a thread. `fault` runs on this
/// thread at each [`Stage`] and calls its argument to let the publisher go
/// on. After `k` confirms the publisher first kills `kill` (a broker's
/// pid) itself, at once, while its last messages are in flight, then holds
/// still until `fault` lets it go on (into the broken broker). Returns the
/// publisher's counts.
fn publish_around(
    cfg: &RabbitConfig,
    opts: &PublishOptions,
    producer: &str,
    (n, k, kill): (u64, u64, Option<i32>),
    mut fault: impl FnMut(Stage, &dyn Fn()),
) -> StreamCounts {
    let (stage_tx, stage) = mpsc::channel::<Stage>();
    let (go_tx, go) = mpsc::channel::<()>();
    let publisher = {
        let (cfg, opts, producer) = (cfg.clone(), opts.clone(), producer.to_string());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let mut p = StreamPublisher::connect(&cfg, &opts)
                    .await
                    .expect("connect");
                let s = p.declare(&producer).await.expect("declare");
                stage_tx.send(Stage::Ready).expect("tell the test");
                go.recv().expect("the test lets the publisher start");
                let mut signalled = false;
                for id in 1..=n {
                    p.send(s, id, &message_id(&producer, id), body(&producer, id))
                        .await
                        .expect("send");
                    if !signalled && p.confirmed(s) >= k {
                        signalled = true;
                        if let Some(pid) = kill {
                            // SAFETY: kill(2) on the test broker's beam.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                        stage_tx.send(Stage::AtK).expect("tell the test");
                        go.recv().expect("the test broke the broker");
                    }
                }
                p.flush().await.expect("every message confirmed");
                assert_eq!(p.confirmed(s), n);
                let counts = p.counts();
                p.close().await;
                counts
            })
        })
    };
    let go = || go_tx.send(()).expect("the publisher waits");
    for want in [Stage::Ready, Stage::AtK] {
        let got = stage
            .recv_timeout(DEADLINE)
            .expect("the publisher's progress");
        assert_eq!(got, want);
        fault(got, &go);
    }
    publisher.join().expect("publisher thread")
}

/// `publish_around` on a fresh node; returns the counts, the notices and
/// the stream's content.
fn publish_through(
    kill: bool,
    mut fault: impl FnMut(Stage, &mut RabbitNode, &dyn Fn()),
    n: u64,
    k: u64,
) -> (StreamCounts, Vec<String>, Content) {
    let mut node = stream_node();
    let stream = unique("fault");
    let cfg = config(&node, &stream);
    let (opts, seen) = notices();
    let pid = kill.then(|| {
        std::fs::read_to_string(node.dir().join("pid"))
            .expect("beam pid")
            .trim()
            .parse()
            .expect("pid")
    });
    let counts = publish_around(&cfg, &opts, "sensor-f", (n, k, pid), |stage, go| {
        fault(stage, &mut node, go)
    });
    let notices = seen.lock().expect("notices").clone();
    let got = stream_content(&node, &stream, &cfg, &opts);
    (counts, notices, got)
}

#[test]
fn a_broker_killed_while_publishing_gets_every_message_exactly_once() {
    let (n, k) = (2000, 500);
    let (counts, notices, got) = publish_through(
        true,
        |stage, node, go| match stage {
            Stage::Ready => {
                // RabbitMQ 3.10 registers the stream coordinator in a file
                // it saves lazily (dets, every 3 minutes or on a clean
                // stop): a SIGKILL within minutes of a fresh node's first
                // stream loses the registration and the stream stays
                // unavailable for good. A production broker saved it long
                // ago; this test is about the publisher, so save it now.
                node.ctl_ok(&["eval", "[dets:sync(T) || T <- dets:all()]."]);
                go();
            }
            Stage::AtK => {
                go();
                // Already dead: this waits for it to go and starts it again.
                node.kill9_and_restart();
            }
        },
        n,
        k,
    );
    eprintln!("kill -9: {counts:?}");
    assert!(counts.reconnects >= 1, "{counts:?} {notices:?}");
    assert!(
        notices.iter().any(|n| n.contains("reconnecting")),
        "{notices:?}"
    );
    assert_eq!(counts.confirmed, n, "{counts:?}");
    assert_exactly(&got, "sensor-f", 1..=n);
}

#[test]
fn a_broker_stopped_while_publishing_gets_every_message_exactly_once() {
    let (n, k) = (2000, 700);
    let (counts, notices, got) = publish_through(
        false,
        |stage, node, go| {
            if stage == Stage::AtK {
                node.stop_app();
                go();
                node.start_app();
            } else {
                go();
            }
        },
        n,
        k,
    );
    eprintln!("stop_app: {counts:?}");
    assert!(counts.reconnects >= 1, "{counts:?} {notices:?}");
    assert_eq!(counts.confirmed, n, "{counts:?}");
    assert_exactly(&got, "sensor-f", 1..=n);
}

#[test]
fn a_wrong_password_fails_at_once_naming_user_and_host() {
    let node = node();
    let mut cfg = config(node, &unique("auth"));
    cfg.password = "not-the-password".into();
    let (opts, _) = notices();
    let err = runtime()
        .block_on(StreamPublisher::connect(&cfg, &opts))
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(matches!(err, PublishError::Auth { .. }), "{text}");
    assert!(text.contains("user 'guest'"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", node.stream_port())),
        "{text}"
    );
    assert!(text.contains("authentication failure"), "{text}");
}

#[test]
fn nothing_on_the_stream_port_is_a_clear_error() {
    let node = node();
    let port = free_ports(1)[0];
    let cfg = config_text(&node.config("unused", ""), &unique("refused"), port);
    let (opts, _) = notices();
    let err = runtime()
        .block_on(StreamPublisher::connect(&cfg, &opts))
        .expect_err("nothing listens");
    let text = err.to_string();
    assert!(matches!(err, PublishError::Connect { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(
        text.contains("stream_port") && text.contains("rabbitmq_stream"),
        "{text}"
    );
}

#[test]
fn publishing_over_tls_works() {
    let node = tls_node();
    let certs = node.certs.as_ref().expect("certificates");
    let stream = unique("tls");
    let text = format!(
        "[rabbit]\nhost = localhost\nport = {}\nusername = guest\npassword = guest\nuse_ssl = true\n\
         queue = unused\nrouting_key = unused\nexchange =\n[ssl_options]\nca_certs = {}\n",
        node.tls_port.expect("TLS port"),
        certs.ca.display()
    );
    let port = node.stream_tls_port.expect("stream TLS port");
    let cfg = config_text(&text, &stream, port);
    let (opts, _) = notices();
    let n = 20;
    runtime().block_on(async {
        let mut p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect over TLS");
        let s = p.declare("sensor-t").await.expect("declare");
        for id in 1..=n {
            p.send(s, id, &message_id("sensor-t", id), body("sensor-t", id))
                .await
                .expect("send");
        }
        p.flush().await.expect("flush");
        p.close().await;
    });
    // The marker and the read-back go over the plain listeners.
    let plain = config(node, &stream);
    let got = stream_content(node, &stream, &plain, &opts);
    assert_exactly(&got, "sensor-t", 1..=n);

    // A CA that did not sign the broker's certificate is refused.
    let wrong = text.replace(
        &certs.ca.display().to_string(),
        &certs.other_ca.display().to_string(),
    );
    let cfg = config_text(&wrong, &stream, port);
    let err = runtime()
        .block_on(StreamPublisher::connect(&cfg, &opts))
        .expect_err("wrong CA");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    assert!(
        !err.is_retryable(),
        "a certificate error is permanent: {err}"
    );
}

#[test]
fn a_new_stream_gets_the_configured_arguments() {
    let node = node();
    let stream = unique("args");
    let mut cfg = config(node, &stream);
    if let Some(s) = cfg.stream.as_mut() {
        s.options = StreamOptions {
            max_length_bytes: Some(5_000_000),
            max_age: Some("7D".into()),
            max_segment_size_bytes: Some(1_000_000),
            initial_cluster_size: None,
        };
    }
    let (opts, _) = notices();
    let rt = runtime();
    rt.block_on(async {
        let p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect");
        p.close().await;
    });
    let rows = node.list_queues(&["name", "type", "arguments"]);
    let row = rows
        .iter()
        .find(|r| r[0] == stream)
        .unwrap_or_else(|| panic!("stream {stream} not listed: {rows:?}"));
    let shown = row.join(" ");
    assert!(shown.contains("stream"), "{shown}");
    assert!(
        shown.contains("5000000") && shown.contains("7D") && shown.contains("1000000"),
        "{shown}"
    );

    // The stream exists now: other arguments are not an error (the broker
    // does not compare them over this protocol).
    if let Some(s) = cfg.stream.as_mut() {
        s.options.max_age = Some("1D".into());
    }
    rt.block_on(async {
        let p = StreamPublisher::connect(&cfg, &opts)
            .await
            .expect("connect to the existing stream");
        p.close().await;
    });
}

/// Two clustered nodes whose stream listeners share one port on two
/// loopback addresses: `a` on 127.0.0.1, `b` on 127.0.0.2. Fields drop in
/// order: `b` first, since `a` owns the epmd both use.
struct Pair {
    b: RabbitNode,
    a: RabbitNode,
    stream_port: u16,
}

fn pair() -> Pair {
    let stream_port = free_ports(1)[0];
    let cookie = format!("STREAMPAIR{}", std::process::id());
    let a = RabbitNode::start_with(NodeOptions {
        stream: true,
        stream_listen: Some(("127.0.0.1".into(), stream_port)),
        cookie: Some(cookie.clone()),
        name_prefix: Some("sA".into()),
        ..NodeOptions::default()
    });
    let mut b = RabbitNode::start_with(NodeOptions {
        stream: true,
        stream_listen: Some(("127.0.0.2".into(), stream_port)),
        cookie: Some(cookie),
        epmd_port: Some(a.epmd_port),
        name_prefix: Some("sB".into()),
        ..NodeOptions::default()
    });
    b.ctl_ok(&["stop_app"]);
    b.ctl_ok(&["join_cluster", &a.name]);
    b.ctl_ok(&["start_app"]);
    b.await_startup();
    for host in ["127.0.0.1", "127.0.0.2"] {
        await_stream_listener(&hosts_config(host, "ready", stream_port));
    }
    Pair { b, a, stream_port }
}

/// A config for the hosts `hosts` (comma-separated) and `stream`.
fn hosts_config(hosts: &str, stream: &str, port: u16) -> RabbitConfig {
    let text = format!(
        "[rabbit]\nhost = {hosts}\nport = 5672\nusername = guest\npassword = guest\n\
         queue = unused\nrouting_key = unused\nexchange =\n"
    );
    config_text(&text, stream, port)
}

#[test]
fn publishing_fails_over_across_hosts_and_goes_to_the_leader() {
    let pair = pair();
    let port = pair.stream_port;
    let stream = unique("leader");
    let (opts, seen) = notices();
    let rt = runtime();
    // Created through b, the stream's leader is on b (client-local).
    let on_b = hosts_config("127.0.0.2", &stream, port);
    rt.block_on(async {
        let mut p = StreamPublisher::connect(&on_b, &opts)
            .await
            .expect("connect to b");
        let s = p.declare("sensor-l").await.expect("declare");
        for id in 1..=3 {
            p.send(s, id, &message_id("sensor-l", id), body("sensor-l", id))
                .await
                .expect("send");
        }
        p.flush().await.expect("flush");
        p.close().await;
    });
    let leaders = pair.a.list_queues(&["name", "leader"]);
    assert!(
        leaders
            .iter()
            .any(|r| r[0] == stream && r[1] == pair.b.name),
        "the leader should be on {}: {leaders:?}",
        pair.b.name
    );

    // Hosts: one where nothing listens, then a, which is not the leader.
    let via_a = hosts_config("127.0.0.9,127.0.0.1", &stream, port);
    rt.block_on(async {
        let mut p = StreamPublisher::connect(&via_a, &opts)
            .await
            .expect("connect via a");
        assert_eq!(
            p.endpoint(),
            Some(format!("127.0.0.2:{port}").as_str()),
            "publishing goes to the leader"
        );
        let s = p.declare("sensor-l").await.expect("declare");
        assert_eq!(p.last_id(s).await.expect("sequence"), 3);
        for id in 4..=6 {
            p.send(s, id, &message_id("sensor-l", id), body("sensor-l", id))
                .await
                .expect("send");
        }
        p.flush().await.expect("flush");
        p.close().await;
    });
    let notices = seen.lock().expect("notices").clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains(&format!("127.0.0.9:{port}")) && n.contains("connection refused")),
        "{notices:?}"
    );
    let got = stream_content(&pair.a, &stream, &via_a, &opts);
    assert_exactly(&got, "sensor-l", 1..=6);
}

#[test]
fn a_leader_that_moves_while_publishing_is_followed() {
    let pair = pair();
    let port = pair.stream_port;
    let stream = unique("moving");
    let (opts, seen) = notices();
    // Two replicas, created through b: b leads, a follows.
    let mut on_b = hosts_config("127.0.0.2", &stream, port);
    if let Some(s) = on_b.stream.as_mut() {
        s.options.initial_cluster_size = Some(2);
    }
    runtime().block_on(async {
        let p = StreamPublisher::connect(&on_b, &opts)
            .await
            .expect("create on b");
        p.close().await;
    });
    // The publisher knows only a; it publishes on b, the leader, until b's
    // replica is deleted and a leads.
    let via_a = hosts_config("127.0.0.1", &stream, port);
    let (n, k) = (1500, 400);
    let counts = publish_around(&via_a, &opts, "sensor-m", (n, k, None), |stage, go| {
        if stage == Stage::AtK {
            pair.a
                .streams_ok(&["delete_replica", "--vhost", "/", &stream, &pair.b.name]);
        }
        go();
    });
    let notices = seen.lock().expect("notices").clone();
    eprintln!("leader moved: {counts:?}");
    assert!(counts.reconnects >= 1, "{counts:?} {notices:?}");
    assert!(
        notices
            .iter()
            .any(|n| n == &format!("connected to 127.0.0.1:{port}")),
        "publishing should have moved to a: {notices:?}"
    );
    let got = stream_content(&pair.a, &stream, &via_a, &opts);
    assert_exactly(&got, "sensor-m", 1..=n);
}

/// A value the broker rejects, on a new stream, is named. On its own node:
/// RabbitMQ 3.10 answers a bad `max-age` by crashing more than the one
/// connection (other connections in their handshake at that moment were
/// seen dropped too).
#[test]
fn a_bad_stream_argument_is_explained() {
    let node = stream_node();
    let (opts, _) = notices();
    let rt = runtime();
    let bad = unique("badargs");
    let mut cfg = config(&node, &bad);
    if let Some(s) = cfg.stream.as_mut() {
        s.options.max_age = Some("soon".into());
    }
    let err = rt
        .block_on(StreamPublisher::connect(&cfg, &opts))
        .expect_err("a bad max-age");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains(&format!("cannot create stream '{bad}'")),
        "{text}"
    );
    assert!(text.contains("max-age = soon"), "{text}");
}
