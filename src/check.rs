//! `tstat_send --check` (design §13.1): everything a run needs, looked at
//! without shipping or marking anything — the broker (connect, log in, TLS,
//! the queue as declared, never created), the tree (Tstat directories, what
//! is ready, writable for the records), the metrics file's directory and the
//! tree's lock. Each check gives one line: what was found, or what is wrong
//! and how to fix it.

use std::path::Path;
use std::time::SystemTime;

use crate::config::RabbitConfig;
use crate::find::{self, FindOptions};
use crate::lock::{self, LockError};
use crate::parse::logs_size;
use crate::publish::stream::StreamPublisher;
use crate::publish::{PublishError, PublishOptions, Publisher, QueueState};

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Passed.
    pub ok: bool,
    /// What was checked (`broker`, `queue`, `tree`, …).
    pub what: &'static str,
    /// What was found, or what is wrong and how to fix it.
    pub detail: String,
}

impl Check {
    fn pass(what: &'static str, detail: impl Into<String>) -> Check {
        Check {
            ok: true,
            what,
            detail: detail.into(),
        }
    }

    fn fail(what: &'static str, detail: impl Into<String>) -> Check {
        Check {
            ok: false,
            what,
            detail: detail.into(),
        }
    }

    /// `✓ what: detail` or `✗ what: detail`.
    pub fn line(&self) -> String {
        format!(
            "{} {}: {}",
            if self.ok { "✓" } else { "✗" },
            self.what,
            self.detail
        )
    }
}

/// Connects and logs in as a run would, and looks at the queue without
/// creating it.
pub async fn broker(cfg: &RabbitConfig, opts: &PublishOptions) -> Vec<Check> {
    let opts = PublishOptions {
        check_only: true,
        retries: 0,
        ..opts.clone()
    };
    if let Some(stream) = &cfg.stream {
        return stream_broker(cfg, &stream.name, &opts).await;
    }
    match Publisher::connect(cfg, &opts).await {
        Ok(p) => {
            let endpoint = p.endpoint().unwrap_or("?").to_string();
            let tls = if cfg.tls.is_some() { " over TLS" } else { "" };
            let mut out = vec![Check::pass(
                "broker",
                format!(
                    "connected to {endpoint}{tls} as '{}' (vhost '{}')",
                    cfg.username, cfg.vhost
                ),
            )];
            let queue = cfg.queue.as_deref().unwrap_or_default();
            out.push(match p.queue_state() {
                Some(QueueState::Present) => {
                    Check::pass("queue", format!("'{queue}' exists as configured"))
                }
                Some(QueueState::Missing) => Check::pass(
                    "queue",
                    format!("'{queue}' does not exist yet; the first run creates it"),
                ),
                _ => Check::pass(
                    "queue",
                    format!(
                        "none configured; messages go to exchange '{}' with routing key '{}'",
                        cfg.exchange, cfg.routing_key
                    ),
                ),
            });
            p.close().await;
            out
        }
        Err(e) => {
            // A failed connect says itself what to check, naming the file.
            let what = match e.root() {
                PublishError::QueueMismatch { .. } | PublishError::Queue { .. } => "queue",
                _ => "broker",
            };
            vec![Check::fail(what, e.to_string())]
        }
    }
}

/// The broker and the stream of the stream transport (design §14.2): a
/// login on the stream port, and the stream present or to be created.
async fn stream_broker(cfg: &RabbitConfig, name: &str, opts: &PublishOptions) -> Vec<Check> {
    let login = |endpoint: &str| {
        let tls = if cfg.tls.is_some() { " over TLS" } else { "" };
        Check::pass(
            "broker",
            format!(
                "connected to {endpoint}{tls} (stream protocol) as '{}' (vhost '{}')",
                cfg.username, cfg.vhost
            ),
        )
    };
    match StreamPublisher::connect(cfg, opts).await {
        Ok(p) => {
            let endpoint = p.endpoint().unwrap_or("?").to_string();
            p.close().await;
            vec![
                login(&endpoint),
                Check::pass(
                    "stream",
                    format!("'{name}' exists; its leader is {endpoint}"),
                ),
            ]
        }
        Err(e) if StreamPublisher::is_missing_stream(&e) => vec![
            login(&cfg.endpoints.first().map_or(String::new(), |h| {
                let port = cfg.stream.as_ref().map_or(h.port, |s| s.port);
                format!("{}:{port}", h.host)
            })),
            Check::pass(
                "stream",
                format!("'{name}' does not exist yet; the first run creates it"),
            ),
        ],
        // The publisher's errors say what to check (stream_port, the plugin).
        Err(e) => vec![Check::fail("broker", e.to_string())],
    }
}

/// The stream producers a tree uses (design §14.4): a stream remembers the
/// last id of at most [`STREAM_NAME_BUDGET`] producer names; past that the
/// least recently used are forgotten and a resumed directory may repeat.
pub async fn stream_producers(
    cfg: &RabbitConfig,
    opts: &PublishOptions,
    producers: &crate::identity::Producers,
) -> Option<Check> {
    let opts = PublishOptions {
        check_only: true,
        retries: 0,
        ..opts.clone()
    };
    let mut p = StreamPublisher::connect(cfg, &opts).await.ok()?;
    let mut epochs = 0u32;
    let mut empty = 0;
    let mut e = 0u32;
    while empty < 3 && (e as usize) * 2 < STREAM_NAME_BUDGET {
        let mut used = false;
        for kind in crate::identity::LogKind::ALL {
            let id = p.declare(&producers.name(kind, e)).await.ok()?;
            used |= p.last_id(id).await.ok()? > 0;
        }
        if used {
            epochs = e + 1;
            empty = 0;
        } else {
            empty += 1;
        }
        e += 1;
    }
    p.close().await;
    let names = 2 * epochs.max(1) as usize;
    let text = format!(
        "this tree ships as {} and {} ({names} producer name{} in use; a stream remembers \
         {STREAM_NAME_BUDGET}, shared by every tree and sensor shipping into it)",
        producers.name(crate::identity::LogKind::Tcp, 0),
        producers.name(crate::identity::LogKind::Udp, 0),
        if names == 1 { "" } else { "s" }
    );
    Some(if names * 2 > STREAM_NAME_BUDGET {
        Check::fail(
            "producers",
            format!(
                "{text}: past half the budget, the stream may forget producers and a \
                     resumed directory may repeat"
            ),
        )
    } else {
        Check::pass("producers", text)
    })
}

/// Producer names a stream keeps the last publishing id of.
pub const STREAM_NAME_BUDGET: usize = 255;

/// The tree: it exists, holds Tstat directories, what is ready, and that the
/// records can be written where they must.
pub fn tree(root: &Path, find_opts: &FindOptions) -> Vec<Check> {
    if let Err(why) = root_dir(root) {
        return vec![Check::fail(
            "tree",
            format!("{}: {why} (-d)", root.display()),
        )];
    }
    let mut out = Vec::new();
    let mut walk_errors = Vec::new();
    let all = find::walk_tstat_dirs(root, &mut |e| walk_errors.push(e.to_string()));
    if all.is_empty() {
        // Nothing here is ours to write into.
        return vec![Check::fail(
            "tree",
            format!(
                "{} holds no Tstat directory (NAME.out with log_tcp_complete or \
                 log_udp_complete); is -d the directory Tstat writes into (tstat -s DIR)?",
                root.display()
            ),
        )];
    } else {
        let done = all.iter().filter(|d| d.done).count();
        out.push(Check::pass(
            "tree",
            format!(
                "{}: {} Tstat directories, {} of them processed",
                root.display(),
                all.len(),
                done
            ),
        ));
    }
    for e in walk_errors {
        out.push(Check::fail("tree", e));
    }
    let mut opts = find_opts.clone();
    opts.now = SystemTime::now();
    let ready = find::find_ready([root], &opts, |_| {});
    let bytes: u64 = ready.iter().map(|d| logs_size(d)).sum();
    let name = |d: Option<&std::path::PathBuf>| {
        d.and_then(|d| d.file_name())
            .map_or("-".into(), |n| n.to_string_lossy().into_owned())
    };
    out.push(Check::pass(
        "ready",
        if ready.is_empty() {
            "no directory is ready to ship now".to_string()
        } else {
            format!(
                "{} director{} ({:.1} MB of logs), oldest {}, newest {}",
                ready.len(),
                if ready.len() == 1 { "y" } else { "ies" },
                bytes as f64 / 1e6,
                name(ready.first()),
                name(ready.last())
            )
        },
    ));
    let mut unwritable: Vec<String> = Vec::new();
    for d in std::iter::once(root).chain(ready.iter().map(|d| d.as_path())) {
        if let Err(e) = probe_write(d) {
            unwritable.push(format!("{}: {e}", d.display()));
        }
    }
    out.push(if unwritable.is_empty() {
        Check::pass(
            "writable",
            "the tree and every ready directory take the lock, .progress and .processed",
        )
    } else {
        Check::fail(
            "writable",
            format!(
                "{} (run as the user that owns the tree, or give it write access)",
                unwritable.join("; ")
            ),
        )
    });
    out
}

/// Whether `root` can be a tree (`-d`): why not, in words ("does not
/// exist", "not a directory", the system's reason).
pub fn root_dir(root: &Path) -> Result<(), String> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates and removes a temporary file in `dir`; the error says why, not
/// which temporary name failed.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    tempfile::Builder::new()
        .prefix(".tstat_send-check")
        .tempfile_in(dir)
        .map(drop)
        .map_err(crate::durable::without_temp_name)
}

/// The metrics file's directory exists and is writable.
pub fn metrics(path: &Path) -> Check {
    if path.is_dir() {
        return Check::fail(
            "metrics",
            format!(
                "{}: is a directory; name the file in it, e.g. {}",
                path.display(),
                path.join("tstat_send.prom").display()
            ),
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match probe_write(dir) {
        Ok(()) => Check::pass("metrics", format!("{} can be written", path.display())),
        Err(e) => Check::fail(
            "metrics",
            format!(
                "{}: cannot write in {}: {e} (create the directory, e.g. \
                 node_exporter's textfile directory, writable by this user)",
                path.display(),
                dir.display()
            ),
        ),
    }
}

/// Whether the tree's lock is free now (it takes and releases it).
pub fn lock(root: &Path, prog: &str) -> Check {
    match lock::lock_tree(root, prog) {
        Ok(held) => {
            drop(held);
            Check::pass("lock", "free (no other run is shipping this tree)")
        }
        Err(e @ LockError::Held { .. }) => Check::fail("lock", e.to_string()),
        Err(e) => Check::fail("lock", e.to_string()),
    }
}
