//! A private RabbitMQ cluster of N nodes on one machine (see
//! ../shared/rabbitmq-node.md, "A cluster on one machine"): one cookie and
//! one private epmd for all of them, each node with its own name, ports and
//! directory ([`RabbitNode`]). Node 1 boots first, the others boot at once
//! and then join it one by one (`stop_app`, `join_cluster`, `start_app`).
//!
//! Also here: the node holding a queue's leader, a node killed with SIGKILL
//! and started again on the same directory and ports, a tool's config with
//! the cluster's host list, and one cluster shared by the tests of a test
//! program (its nodes are stopped by their watchdogs when the program ends).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

use super::rabbit::{NodeOptions, RabbitNode};
use super::run::wait_until;

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// Nodes joined into one cluster.
pub struct Cluster {
    /// Node 1 (it started the epmd the others use) first.
    pub nodes: Vec<RabbitNode>,
}

impl Cluster {
    /// Starts `n` plain nodes as one cluster.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, NodeOptions::default())
    }

    /// Starts `n` nodes as one cluster, each with `opts` (a TLS listener,
    /// the stream plugin…); the cookie and the epmd port are the cluster's,
    /// and each node's name starts with `opts.name_prefix` (or `tc`) and its
    /// number.
    pub fn start_with(n: usize, opts: NodeOptions) -> Cluster {
        assert!(n >= 2, "a cluster needs two nodes");
        let cookie = format!(
            "TSTATCOOKIE{}X{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::SeqCst)
        );
        let prefix = opts.name_prefix.clone().unwrap_or_else(|| "tc".into());
        // With a shared stream port, node i listens on 127.0.0.(i+1): one
        // `stream_port` in a config then fits every host of the list.
        let node_opts = |i: usize, epmd_port: Option<u16>| NodeOptions {
            cookie: Some(cookie.clone()),
            epmd_port,
            name_prefix: Some(format!("{prefix}{}x", i + 1)),
            stream_listen: opts
                .stream_listen
                .as_ref()
                .map(|(_, port)| (format!("127.0.0.{}", i + 1), *port)),
            ..opts.clone()
        };
        let first = RabbitNode::start_with(node_opts(0, None));
        let epmd = Some(first.epmd_port);
        // The others boot at the same time (a boot is mostly waiting), then
        // join one after the other.
        let others: Vec<RabbitNode> = thread::scope(|s| {
            let booting: Vec<_> = (1..n)
                .map(|i| {
                    let o = node_opts(i, epmd);
                    s.spawn(move || RabbitNode::start_with(o))
                })
                .collect();
            booting
                .into_iter()
                .map(|b| b.join().expect("a node's boot panicked"))
                .collect()
        });
        let mut nodes = vec![first];
        for node in others {
            node.ctl_ok(&["stop_app"]);
            node.ctl_ok(&["join_cluster", &nodes[0].name]);
            node.ctl_ok(&["start_app"]);
            nodes.push(node);
        }
        for node in &mut nodes {
            node.await_startup();
        }
        Cluster { nodes }
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,…` in node order, for a config's `host`.
    pub fn hosts(&self) -> String {
        self.hosts_in(&(0..self.nodes.len()).collect::<Vec<_>>())
    }

    /// The host list of the nodes `order` (indexes), in that order: a tool
    /// tries its hosts in order, so the first one is the one it connects to.
    pub fn hosts_in(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.nodes[i].port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A `config.ini` publishing to `queue` through the default exchange on
    /// the hosts `order`, with `extra` appended (more sections).
    pub fn config(&self, order: &[usize], queue: &str, extra: &str) -> String {
        format!(
            "[rabbit]\nhost = {}\nport = 5672\nusername = guest\npassword = guest\n\
             queue = {queue}\nrouting_key = {queue}\nexchange =\n{extra}",
            self.hosts_in(order)
        )
    }

    /// `list_queues` with `columns` (the first is expected to be `name`),
    /// asked of the first node that answers (one may be down); the row of
    /// `queue`, if listed.
    pub fn queue_row(&self, queue: &str, columns: &[&str]) -> Option<Vec<String>> {
        let mut args = vec!["list_queues", "-q", "--no-table-headers"];
        args.extend_from_slice(columns);
        let out = self
            .nodes
            .iter()
            .map(|n| n.ctl(&args))
            .find(|o| o.status.success())?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                l.split('\t')
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .find(|r| r.first().map(String::as_str) == Some(queue))
    }

    /// The index of the node holding `queue`'s leader (`list_queues name
    /// leader`), if the queue is listed with a leader that is one of ours.
    pub fn leader(&self, queue: &str) -> Option<usize> {
        let row = self.queue_row(queue, &["name", "leader"])?;
        let leader = row.get(1)?;
        self.nodes.iter().position(|n| &n.name == leader)
    }

    /// Waits (up to `deadline`) until `queue` has a leader on one of our
    /// nodes, and returns its index.
    pub fn wait_leader(&self, queue: &str, deadline: Duration) -> usize {
        let mut found = None;
        wait_until(&format!("a leader for {queue}"), deadline, || {
            found = self.leader(queue);
            found.is_some()
        });
        found.expect("found")
    }

    /// The indexes of our nodes that `list_queues name members` names as
    /// members of `queue` (a quorum queue or a stream).
    pub fn members(&self, queue: &str) -> Vec<usize> {
        let row = self
            .queue_row(queue, &["name", "members"])
            .unwrap_or_default();
        let members = row.get(1).cloned().unwrap_or_default();
        (0..self.nodes.len())
            .filter(|&i| members.contains(&self.nodes[i].name))
            .collect()
    }

    /// Makes sure every node's broker runs (`start_app` where a test left
    /// it stopped), so a test finds the whole cluster whatever the one
    /// before it did.
    pub fn all_up(&mut self) {
        for node in &mut self.nodes {
            node.ctl_ok(&["start_app"]);
            node.await_startup();
        }
    }

    /// The stream hosts `127.0.0.1,127.0.0.2,…` of the nodes `order`, for a
    /// cluster started with a shared stream port (`stream_listen`).
    pub fn stream_hosts_in(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| format!("127.0.0.{}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Saves every running node's stream registrations (see
    /// [`super::streams::save_registrations`]), the nodes at once.
    pub fn save_stream_registrations(&self) {
        thread::scope(|s| {
            for node in &self.nodes {
                s.spawn(move || super::streams::save_registrations(node));
            }
        });
    }

    /// Kills node `i`'s Erlang VM with SIGKILL, then starts it again on the
    /// same directory and ports and waits until it has booted (it rejoins
    /// the cluster by itself).
    pub fn kill9_and_restart(&mut self, i: usize) {
        self.nodes[i].kill9_and_restart();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Later nodes first: the first one owns the epmd they all use.
        while let Some(node) = self.nodes.pop() {
            drop(node);
        }
    }
}

/// The cluster the tests of one test program share: `n` nodes started with
/// `opts()` on first use, held by one test at a time (a test kills and
/// restarts nodes). A static is never dropped: each node's watchdog stops
/// it when the test program ends.
pub fn shared(n: usize, opts: impl FnOnce() -> NodeOptions) -> MutexGuard<'static, Cluster> {
    static CLUSTER: OnceLock<Mutex<Cluster>> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| Mutex::new(Cluster::start_with(n, opts())));
    let guard = cluster
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    assert_eq!(guard.nodes.len(), n, "the shared cluster has another size");
    guard
}
