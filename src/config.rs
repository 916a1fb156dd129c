//! The `config.ini` file (SPEC §7): reading with rust-ini, `${VAR}`
//! interpolation, and validation of every key before anything is touched.
//! It owns the typed broker settings; it never opens a connection.

use std::path::PathBuf;

/// One broker address from `host = a,b:5673`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (from `host` when given there, else `port`).
    pub port: u16,
}

/// How the server certificate is checked (`cert_reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    /// Verify the chain and the host name (default; `CERT_REQUIRED`).
    #[default]
    Required,
    /// Verify when offered (`CERT_OPTIONAL`); treated as `Required` for a server cert.
    Optional,
    /// No verification (`CERT_NONE`): a warning is printed on every run.
    None,
}

/// `[ssl_options]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file with the CA certificates to trust; system roots when absent.
    pub ca_certs: Option<PathBuf>,
    /// PEM client certificate chain.
    pub certfile: Option<PathBuf>,
    /// PEM client private key.
    pub keyfile: Option<PathBuf>,
    /// Name to verify instead of the host name.
    pub server_hostname: Option<String>,
    /// Verification mode.
    pub cert_reqs: CertReqs,
}

/// A typed `x-` queue argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueArg {
    /// A value that parsed as an integer.
    Int(i64),
    /// Anything else.
    Str(String),
}

/// `[rabbit_queue_options]`; `None` fields were not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// `durable`.
    pub durable: Option<bool>,
    /// `exclusive`.
    pub exclusive: Option<bool>,
    /// `auto_delete`.
    pub auto_delete: Option<bool>,
    /// `passive`.
    pub passive: Option<bool>,
    /// Every other key, in file order, e.g. `x-queue-type = quorum`.
    pub arguments: Vec<(String, QueueArg)>,
}

impl QueueOptions {
    /// True when the section was absent or empty (SPEC §6.4 default rule).
    pub fn is_empty(&self) -> bool {
        self.durable.is_none()
            && self.exclusive.is_none()
            && self.auto_delete.is_none()
            && self.passive.is_none()
            && self.arguments.is_empty()
    }
}

/// The validated `[rabbit]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitConfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Brokers in failover order.
    pub endpoints: Vec<Endpoint>,
    /// User name.
    pub username: String,
    /// Password; never printed (see the `Debug` impl).
    pub password: String,
    /// Virtual host (default `/`).
    pub vhost: String,
    /// TLS settings when `use_ssl = true`.
    pub tls: Option<TlsOptions>,
    /// Queue to check/declare; `None` when empty.
    pub queue: Option<String>,
    /// Routing key for publishing (default: the queue name).
    pub routing_key: String,
    /// Exchange; empty is the default exchange.
    pub exchange: String,
    /// `delivery_mode = 2` unless `persistent = false`.
    pub persistent: bool,
    /// Queue declaration options.
    pub queue_options: QueueOptions,
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("path", &self.path)
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &"***")
            .field("vhost", &self.vhost)
            .field("tls", &self.tls)
            .field("queue", &self.queue)
            .field("routing_key", &self.routing_key)
            .field("exchange", &self.exchange)
            .field("persistent", &self.persistent)
            .field("queue_options", &self.queue_options)
            .finish()
    }
}
