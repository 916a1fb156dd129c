//! A private RabbitMQ node per test (see ../shared/rabbitmq-node.md): the
//! OS package's Erlang scripts run directly, on free ports, with their own
//! epmd, data and logs in a temp dir, so a test may stop, block or restart
//! its broker without touching the system one (127.0.0.1:5672, epmd 4369).
//!
//! The node is stopped in `Drop` (also on panic); a watchdog process stops
//! it too if the test process dies or never drops it (a node shared through
//! a `OnceLock` static is never dropped).
//!
//! Also here: writing a tool's config for a node (owner-only, it holds a
//! password), and reading messages back with lapin.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::run::{Running, command, wait_until};
use super::tls::TlsFiles;
use lapin::options::BasicGetOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
const STREAMS: &str = "/usr/lib/rabbitmq/bin/rabbitmq-streams";
const MISSING: &str =
    "rabbitmq-server is not installed: run scripts/test.sh or apt-get install rabbitmq-server";

/// How long a node may take to boot on a busy 2-core machine.
const BOOT_DEADLINE: Duration = Duration::from_secs(90);
/// Bound on one rabbitmqctl call.
const CTL_DEADLINE: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A TLS listener for the node; its certificates are generated into the
/// node's directory (see [`RabbitNode::certs`]).
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// Refuse clients without a certificate.
    pub fail_if_no_peer_cert: bool,
}

/// Settings for [`RabbitNode::start_with`].
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Also listen for AMQPS.
    pub tls: Option<TlsListener>,
    /// Erlang cookie (cluster members must share it).
    pub cookie: Option<String>,
    /// Use this (already chosen) epmd port instead of a fresh one; cluster
    /// members share one private epmd so they can find each other.
    pub epmd_port: Option<u16>,
    /// Name prefix, e.g. `tA` (a unique suffix is added).
    pub name_prefix: Option<String>,
    /// Enable the `rabbitmq_stream` plugin with a stream listener on
    /// 127.0.0.1 (advertised as 127.0.0.1 and its port), and a TLS stream
    /// listener too when `tls` is set.
    pub stream: bool,
    /// With `stream`: listen on (and advertise) this address and port
    /// instead of 127.0.0.1 and a free port. The nodes of a cluster on one
    /// machine can so share one `stream_port`, on 127.0.0.1, 127.0.0.2, …
    pub stream_listen: Option<(String, u16)>,
}

/// One private node.
pub struct RabbitNode {
    /// `tNNN@localhost`.
    pub name: String,
    /// Plain AMQP port on 127.0.0.1.
    pub port: u16,
    /// AMQPS port when a TLS listener was asked for.
    pub tls_port: Option<u16>,
    /// Erlang distribution port.
    pub dist_port: u16,
    /// The generated certificates when the node has a TLS listener.
    pub certs: Option<TlsFiles>,
    /// The private epmd's port.
    pub epmd_port: u16,
    /// Stream protocol port when the stream plugin was asked for.
    pub stream_port: Option<u16>,
    /// Stream protocol TLS port when both the stream plugin and TLS were
    /// asked for.
    pub stream_tls_port: Option<u16>,
    dir: tempfile::TempDir,
    server: Option<Running>,
    watchdog: Option<Running>,
    owns_epmd: bool,
    env: Vec<(String, String)>,
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    /// Body.
    pub body: Vec<u8>,
    /// AMQP properties.
    pub properties: BasicProperties,
}

impl Received {
    /// The `message_id` property, or "".
    pub fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
}

/// Picks `n` distinct free TCP ports on 127.0.0.1, below the ephemeral
/// range, for a node to take.
pub fn free_ports(n: usize) -> Vec<u16> {
    // Below Linux's ephemeral range (32768+): a port the kernel hands out
    // for bind(0) can be taken by any outgoing connection of a parallel test
    // before the node binds it (a node then dies of eaddrinuse). Each test
    // process walks its own stretch of 20000..32000, skipping ports in use.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 600) * 20;
    let mut out = Vec::with_capacity(n);
    for _ in 0..12_000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((start + k) % 12_000) as u16;
        if !out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
            if out.len() == n {
                return out;
            }
        }
    }
    panic!("no {n} free ports between 20000 and 32000 on 127.0.0.1");
}

/// Panics with the install hint when the broker package is missing.
pub fn require_rabbitmq() {
    if !Path::new(SERVER).exists() || !Path::new(CTL).exists() {
        panic!("{MISSING}");
    }
}

impl RabbitNode {
    /// Starts a plain node and waits until it accepts connections.
    pub fn start() -> RabbitNode {
        RabbitNode::start_with(NodeOptions::default())
    }

    /// Starts a node with `opts` and waits until it is up.
    pub fn start_with(opts: NodeOptions) -> RabbitNode {
        require_rabbitmq();
        let ports = free_ports(6);
        let (port, dist_port, tls_port) = (ports[0], ports[1], ports[2]);
        let (epmd_port, owns_epmd) = match opts.epmd_port {
            Some(p) => (p, false),
            None => (ports[3], true),
        };
        let dir = tempfile::Builder::new()
            .prefix("tstat-rabbit-node.")
            .tempdir()
            .expect("temp dir for the node");
        let d = dir.path();
        let prefix = opts.name_prefix.as_deref().unwrap_or("t");
        let name = format!(
            "{prefix}{}x{}@localhost",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );

        let mut conf = format!(
            "loopback_users = none\nlisteners.tcp.default = 127.0.0.1:{port}\n\
             log.file.level = info\nlog.console = false\n"
        );
        let certs = opts
            .tls
            .as_ref()
            .map(|_| TlsFiles::generate(&d.join("certs")));
        let tls_port = opts.tls.as_ref().zip(certs.as_ref()).map(|(t, c)| {
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = {}\n",
                c.ca.display(),
                c.server_cert.display(),
                c.server_key.display(),
                t.fail_if_no_peer_cert
            ));
            tls_port
        });
        let (stream_port, stream_tls_port) = if opts.stream {
            let (addr, port) = opts
                .stream_listen
                .clone()
                .unwrap_or_else(|| ("127.0.0.1".to_string(), ports[4]));
            stream_listeners(&mut conf, &addr, port, tls_port.map(|_| ports[5]))
        } else {
            (None, None)
        };
        fs::write(d.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        let plugins = if opts.stream {
            "[rabbitmq_stream].\n"
        } else {
            "[].\n"
        };
        fs::write(d.join("enabled_plugins"), plugins).expect("write enabled_plugins");
        // Our own (empty) env file, so /etc/rabbitmq/rabbitmq-env.conf
        // cannot point the node at the system broker's settings.
        fs::write(d.join("rabbitmq-env.conf"), "").expect("write rabbitmq-env.conf");
        if let Some(cookie) = &opts.cookie {
            let p = d.join(".erlang.cookie");
            fs::write(&p, cookie).expect("write cookie");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).expect("chmod cookie");
        }

        let s = |p: &Path| p.display().to_string();
        let env: Vec<(String, String)> = vec![
            ("HOME".into(), s(d)),
            ("RABBITMQ_NODENAME".into(), name.clone()),
            ("RABBITMQ_NODE_PORT".into(), port.to_string()),
            ("RABBITMQ_DIST_PORT".into(), dist_port.to_string()),
            ("ERL_EPMD_PORT".into(), epmd_port.to_string()),
            ("RABBITMQ_MNESIA_BASE".into(), s(&d.join("mnesia"))),
            ("RABBITMQ_LOG_BASE".into(), s(&d.join("log"))),
            ("RABBITMQ_PID_FILE".into(), s(&d.join("pid"))),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                s(&d.join("enabled_plugins")),
            ),
            ("RABBITMQ_CONFIG_FILE".into(), s(&d.join("rabbitmq"))),
            (
                "RABBITMQ_CONF_ENV_FILE".into(),
                s(&d.join("rabbitmq-env.conf")),
            ),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".into(),
                s(&d.join("advanced.config")),
            ),
        ];

        let out = fs::File::create(d.join("server.out")).expect("server.out");
        let err = out.try_clone().expect("clone server.out");
        let server = command(SERVER)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(out)
            .stderr(err)
            .spawn();

        let mut node = RabbitNode {
            name,
            port,
            tls_port,
            dist_port,
            certs,
            epmd_port,
            stream_port,
            stream_tls_port,
            dir,
            server: Some(server),
            watchdog: None,
            owns_epmd,
            env,
        };
        node.watchdog = node.spawn_watchdog();
        node.await_startup();
        node
    }

    /// A process that outlives us: once the test process is gone it stops
    /// the node (or kills it), kills our epmd and removes the directory.
    fn spawn_watchdog(&self) -> Option<Running> {
        let d = self.dir.path().display().to_string();
        let epmd = if self.owns_epmd {
            // epmd refuses -kill while a node is registered, so retry.
            format!(
                "for i in 1 2 3 4 5 6 7 8 9 10; do \
                 epmd -port {p} -kill >/dev/null 2>&1; \
                 epmd -port {p} -names >/dev/null 2>&1 || break; sleep 1; done",
                p = self.epmd_port
            )
        } else {
            ":".to_string()
        };
        // Stop the node, wait for its beam to go (kill it after 30 s), then
        // our epmd, then the directory.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             beam=$(cat {d}/pid 2>/dev/null); \
             timeout 60 {CTL} -n {name} stop >/dev/null 2>&1; \
             i=0; while [ -n \"$beam\" ] && kill -0 \"$beam\" 2>/dev/null && [ $i -lt 60 ]; do \
             sleep 0.5; i=$((i+1)); done; \
             [ -n \"$beam\" ] && kill -9 \"$beam\" 2>/dev/null; \
             {epmd}; rm -rf {d}",
            pid = std::process::id(),
            name = self.name,
        );
        Some(
            command("setsid")
                .args(["sh", "-c", &script])
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
        )
    }

    /// The stream protocol port (the node must have been started with
    /// `stream: true`).
    pub fn stream_port(&self) -> u16 {
        self.stream_port
            .expect("the node was started without the stream plugin (NodeOptions.stream)")
    }

    /// Reads `n` messages of `stream` from its first one (see
    /// [`read_stream`]).
    pub fn read_stream(
        &self,
        stream: &str,
        n: usize,
        deadline: Duration,
    ) -> Vec<(String, Vec<u8>)> {
        read_stream(&self.url(), stream, n, deadline)
    }

    /// The node's directory (logs in `log/`, console output in `server.out`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `rabbitmqctl -n NODE args…` with the node's environment.
    pub fn ctl(&self, args: &[&str]) -> Output {
        command(CTL)
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .deadline(CTL_DEADLINE)
            .run()
    }

    /// Runs `rabbitmq-streams -n NODE args…` (add_replica, delete_replica,
    /// stream_status) with the node's environment; panics unless it
    /// succeeds.
    pub fn streams_ok(&self, args: &[&str]) -> String {
        let out = command(STREAMS)
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .deadline(CTL_DEADLINE)
            .run();
        assert!(
            out.status.success(),
            "rabbitmq-streams {args:?} on {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`ctl`](Self::ctl) but panics unless it succeeds.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} on {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `await_startup` until it succeeds (the node registered with
    /// epmd and booted) or the deadline passes.
    pub fn await_startup(&mut self) {
        let deadline = Instant::now() + BOOT_DEADLINE;
        loop {
            if let Some(server) = self.server.as_mut()
                && let Some(status) = server.try_status()
            {
                panic!(
                    "rabbitmq-server {} exited during boot ({status}):\n{}",
                    self.name,
                    self.server_output()
                );
            }
            let out = self.ctl(&["await_startup", "--timeout", "10"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "rabbitmq node {} did not start within {:?}: {}\n{}",
                    self.name,
                    BOOT_DEADLINE,
                    String::from_utf8_lossy(&out.stderr),
                    self.server_output()
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    fn server_output(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("server.out")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A `config.ini` for this node publishing straight to `queue` through
    /// the default exchange, with `extra` appended (more sections).
    pub fn config(&self, queue: &str, extra: &str) -> String {
        format!(
            "[rabbit]\nhost = 127.0.0.1\nport = {}\nusername = guest\npassword = guest\n\
             queue = {queue}\nrouting_key = {queue}\nexchange =\n{extra}",
            self.port
        )
    }

    /// Writes [`config`](Self::config) for `queue` to `dir/QUEUE.ini`,
    /// owner-only.
    pub fn write_config(&self, dir: &Path, queue: &str) -> PathBuf {
        write_private(&dir.join(format!("{queue}.ini")), &self.config(queue, ""))
    }

    /// The broker down with its data kept (`stop_app`).
    pub fn stop_app(&self) {
        self.ctl_ok(&["stop_app"]);
    }

    /// The broker back up (`start_app`), waiting until it has booted.
    pub fn start_app(&mut self) {
        self.ctl_ok(&["start_app"]);
        self.await_startup();
    }

    /// Closes every client connection.
    pub fn close_all_connections(&self) {
        self.ctl_ok(&["close_all_connections", "test"]);
    }

    /// Raises the memory alarm: publishers get blocked.
    pub fn set_memory_alarm(&self) {
        self.ctl_ok(&["set_vm_memory_high_watermark", "0.0000001"]);
    }

    /// Clears the memory alarm.
    pub fn clear_memory_alarm(&self) {
        self.ctl_ok(&["set_vm_memory_high_watermark", "0.4"]);
    }

    /// Adds a user with full permissions on `/`.
    pub fn add_user(&self, user: &str, password: &str) {
        self.ctl_ok(&["add_user", user, password]);
        self.ctl_ok(&["set_permissions", "-p", "/", user, ".*", ".*", ".*"]);
    }

    /// `list_queues` with the given columns, one row per queue.
    pub fn list_queues(&self, columns: &[&str]) -> Vec<Vec<String>> {
        let mut args = vec!["list_queues", "-q", "--no-table-headers"];
        args.extend_from_slice(columns);
        table(&self.ctl_ok(&args))
    }

    /// `list_connections` with the given columns.
    pub fn list_connections(&self, columns: &[&str]) -> Vec<Vec<String>> {
        let mut args = vec!["list_connections", "-q", "--no-table-headers"];
        args.extend_from_slice(columns);
        table(&self.ctl_ok(&args))
    }

    /// Reads every message in `queue` (basic_get, auto-ack) until the queue
    /// is empty; panics after `deadline`.
    pub fn drain(&self, queue: &str, deadline: Duration) -> Vec<Received> {
        read_queue(&self.url(), queue, None, deadline)
    }

    /// Reads exactly `n` messages from `queue`, waiting for them up to
    /// `deadline`.
    pub fn get_n(&self, queue: &str, n: usize, deadline: Duration) -> Vec<Received> {
        read_queue(&self.url(), queue, Some(n), deadline)
    }

    /// Kills the broker's Erlang VM with SIGKILL (no clean shutdown: what
    /// was not fsynced is lost), then starts it again on the same data and
    /// ports and waits until it accepts connections.
    pub fn kill9_and_restart(&mut self) {
        let beam = fs::read_to_string(self.dir.path().join("pid")).unwrap_or_default();
        let beam = beam.trim().to_string();
        assert!(!beam.is_empty(), "no pid file for {}", self.name);
        if let Ok(pid) = beam.parse::<i32>() {
            // SAFETY: kill(2) on the beam's pid, read from its pid file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Dropping the start script's process kills it if it still runs.
        drop(self.server.take());
        wait_until("the killed broker gone", Duration::from_secs(30), || {
            !Path::new(&format!("/proc/{beam}")).exists()
        });
        let out = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("server.out"))
            .expect("server.out");
        let err = out.try_clone().expect("clone server.out");
        let server = command(SERVER)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(out)
            .stderr(err)
            .spawn();
        self.server = Some(server);
        self.await_startup();
    }

    /// Stops the node now (also done on drop).
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let stopped = self.ctl(&["stop"]).status.success();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stopped && server.running() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        // Dropping it kills the start script if it still runs.
        drop(server);
        // The beam process may outlive the script we spawned.
        if let Ok(pid) = fs::read_to_string(self.dir.path().join("pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
            && !stopped
        {
            // SAFETY: kill(2) on the beam's pid, read from its pid file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
        if self.owns_epmd {
            kill_epmd(self.epmd_port);
        }
        // Dropping the watchdog kills it: its work is done.
        drop(self.watchdog.take());
    }
}

/// Kills our private epmd. It refuses while a node is still registered
/// (the stopped node's registration goes away a moment after it exits), so
/// retry until it no longer answers.
fn kill_epmd(port: u16) {
    let epmd = |arg: &str| {
        command("epmd")
            .args(["-port", &port.to_string(), arg])
            .env("ERL_EPMD_PORT", port.to_string())
            .run()
            .status
            .success()
    };
    for _ in 0..50 {
        epmd("-kill");
        if !epmd("-names") {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `text` to `path` readable by its owner only, as a config holding
/// a password should be (the tools warn about any other mode).
pub fn write_private(path: &Path, text: &str) -> PathBuf {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path.to_path_buf()
}

/// A config in `dir` for a broker that is not there: a port on 127.0.0.1
/// nothing listens on (connecting fails at once). Returns it and the port.
pub fn unreachable_config(dir: &Path) -> (PathBuf, u16) {
    let port = free_ports(1)[0];
    let text = format!(
        "[rabbit]\nhost = 127.0.0.1\nport = {port}\nusername = guest\npassword = guest\n\
         queue = q\nrouting_key = q\nexchange =\n"
    );
    (write_private(&dir.join("unreachable.ini"), &text), port)
}

fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// Reads messages with basic_get until `want` are read (or, without `want`,
/// until the queue is empty).
pub fn read_queue(
    url: &str,
    queue: &str,
    want: Option<usize>,
    deadline: Duration,
) -> Vec<Received> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let end = Instant::now() + deadline;
    rt.block_on(async {
        let conn = tokio::time::timeout(
            deadline,
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        .expect("connect to read back: timed out")
        .expect("connect to read back");
        let channel = conn.create_channel().await.expect("channel");
        let mut got = Vec::new();
        loop {
            if want.is_some_and(|n| got.len() >= n) {
                break;
            }
            assert!(
                Instant::now() < end,
                "read {} of {want:?} messages from {queue} before the deadline",
                got.len()
            );
            let msg = tokio::time::timeout(
                Duration::from_secs(10),
                channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
            )
            .await
            .expect("basic_get timed out")
            .expect("basic_get");
            match msg {
                Some(m) => got.push(Received {
                    body: m.delivery.data,
                    properties: m.delivery.properties,
                }),
                None if want.is_none() => break,
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let _ = conn.close(200, "done".into()).await;
        got
    })
}

/// The confirmed count in a progress record (0 when missing or being
/// replaced).
pub fn confirmed_count(path: &Path) -> u64 {
    fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| v["confirmed"].as_u64())
        .unwrap_or(0)
}

/// The broker node the tests of one test program share (started on first
/// use, stopped by the watchdog when the program ends).
pub fn shared_node() -> &'static RabbitNode {
    static NODE: std::sync::OnceLock<RabbitNode> = std::sync::OnceLock::new();
    NODE.get_or_init(RabbitNode::start)
}

/// A queue (or other) name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A node with a TLS listener that verifies client certificates when
/// offered but does not require one, shared like [`shared_node`].
pub fn shared_tls_node() -> &'static RabbitNode {
    static NODE: std::sync::OnceLock<RabbitNode> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        RabbitNode::start_with(NodeOptions {
            tls: Some(TlsListener {
                fail_if_no_peer_cert: false,
            }),
            ..NodeOptions::default()
        })
    })
}

/// Adds the stream listeners to `conf`: plain on `addr:port`, TLS on
/// 127.0.0.1:`tls_port` (the node's `ssl_options` apply), each advertised
/// as the address it listens on, so metadata names an address the tests
/// (and the certificate) accept.
fn stream_listeners(
    conf: &mut String,
    addr: &str,
    port: u16,
    tls_port: Option<u16>,
) -> (Option<u16>, Option<u16>) {
    conf.push_str(&format!(
        "stream.listeners.tcp.1 = {addr}:{port}\n\
         stream.advertised_host = {addr}\n\
         stream.advertised_port = {port}\n"
    ));
    if let Some(t) = tls_port {
        conf.push_str(&format!(
            "stream.listeners.ssl.1 = 127.0.0.1:{t}\n\
             stream.advertised_tls_host = 127.0.0.1\n\
             stream.advertised_tls_port = {t}\n"
        ));
    }
    (Some(port), tls_port)
}

/// Reads a stream from its first message over AMQP 0-9-1 (lapin: a prefetch
/// window, `x-stream-offset = "first"`, manual acks) until `n` messages are
/// read; panics at `deadline` with how many came. Returns (message id,
/// body) pairs in stream order.
pub fn read_stream(
    url: &str,
    stream: &str,
    n: usize,
    deadline: Duration,
) -> Vec<(String, Vec<u8>)> {
    read_stream_while(url, stream, deadline, |got| got.len() < n)
}

/// Reads a stream from its first message up to and including the message
/// whose id is `last_id` (a marker published after everything else, so the
/// result is the stream's whole content before it).
pub fn read_stream_until(
    url: &str,
    stream: &str,
    last_id: &str,
    deadline: Duration,
) -> Vec<(String, Vec<u8>)> {
    read_stream_while(url, stream, deadline, |got| {
        got.last().is_none_or(|(id, _)| id != last_id)
    })
}

fn read_stream_while(
    url: &str,
    stream: &str,
    deadline: Duration,
    more: impl Fn(&[(String, Vec<u8>)]) -> bool,
) -> Vec<(String, Vec<u8>)> {
    use futures_lite::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let end = tokio::time::Instant::now() + deadline;
    rt.block_on(async {
        let conn = tokio::time::timeout(
            deadline,
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        .expect("connect to read the stream: timed out")
        .expect("connect to read the stream");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .basic_qos(500, BasicQosOptions::default())
            .await
            .expect("basic_qos");
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut consumer = channel
            .basic_consume(
                stream.into(),
                "read-stream".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .expect("basic_consume on the stream");
        let mut got = Vec::new();
        while more(&got) {
            let next = tokio::time::timeout_at(end, consumer.next()).await;
            let delivery = match next {
                Err(_) => panic!(
                    "read only {} messages from stream {stream} before the deadline",
                    got.len()
                ),
                Ok(None) => panic!(
                    "the consumer on {stream} ended after {} messages",
                    got.len()
                ),
                Ok(Some(d)) => d.expect("delivery"),
            };
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            got.push((id, delivery.data));
        }
        let _ = conn.close(200, "done".into()).await;
        got
    })
}
