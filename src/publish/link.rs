//! The broker link: connecting to one host (TCP, TLS, AMQP handshake, each
//! bounded by the connect timeout), failing over across the configured hosts,
//! setting up queue and confirm mode, publishing one message, and turning
//! lapin's errors into words and [`PublishError`]s; also the warning an
//! unverified TLS setup must give. It keeps no window and never writes the
//! progress record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::AsyncTcpStream;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind, Event,
    PublisherConfirm,
};
use tokio::sync::watch;
use tokio::time::Instant;

use lapin::tcp::RustlsConnector;

use super::{
    APP_ID, CONTENT_TYPE, EndpointFailure, Notice, PublishError, PublishOptions, Publisher,
    QueueState, queue,
};
use crate::config::{CertReqs, Endpoint, RabbitConfig};

/// Warnings every run must print for this configuration (design §7.3: an
/// unverified TLS connection).
pub fn config_warnings(cfg: &RabbitConfig) -> Vec<String> {
    match &cfg.tls {
        Some(t) if t.cert_reqs == CertReqs::None => vec![format!(
            "{}: [ssl_options] cert_reqs = CERT_NONE: the broker's TLS certificate is NOT verified; \
             anyone on the path can read and change the data",
            cfg.path.display()
        )],
        _ => Vec::new(),
    }
}

/// The (reply code, text) of a broker-sent AMQP error.
pub(crate) fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        ErrorKind::ProtocolError(err) => Some((err.get_id(), err.get_message().to_string())),
        _ => None,
    }
}

/// A lapin error in words, without Debug noise.
pub(crate) fn describe(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::ProtocolError(err) => err.get_message().to_string(),
        ErrorKind::IOError(io) => io_words(io),
        ErrorKind::InvalidConnectionState(state) => format!("connection is {state:?}"),
        ErrorKind::InvalidChannelState(state, _) => format!("channel is {state:?}"),
        ErrorKind::MissingHeartbeatError => "the broker stopped sending heartbeats".to_string(),
        _ => e.to_string(),
    }
}

fn io_words(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let is_tls = io
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if is_tls || io.kind() == K::InvalidData {
        return format!("TLS handshake failed: {io}");
    }
    match io.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset by the broker".to_string(),
        K::UnexpectedEof => "the broker closed the connection".to_string(),
        _ => io.to_string(),
    }
}

/// A published message waiting for its confirm.
pub(super) struct Pending {
    /// Resolves with the broker's answer.
    pub(super) confirm: PublisherConfirm,
    /// When waiting for it stops.
    pub(super) deadline: Instant,
}

/// One live connection with its confirm-mode channel.
pub(super) struct Link {
    pub(super) conn: Connection,
    pub(super) channel: Channel,
    pub(super) endpoint: String,
    /// The broker's reason while it blocks publishers.
    blocked: watch::Receiver<Option<String>>,
    /// The last connection error the events reported.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    events: tokio::task::JoinHandle<()>,
}

impl Link {
    fn blocked_reason(&self) -> Option<String> {
        let reason = self.blocked.borrow().clone();
        reason.or_else(|| {
            self.conn
                .status()
                .blocked()
                .then(|| "reason not given".to_string())
        })
    }

    pub(super) async fn close(self) {
        self.events.abort();
        if self.conn.status().connected() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into()))
                    .await;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.events.abort();
    }
}

impl Publisher {
    /// Only a plain Ack is success.
    pub(super) fn judge(
        &self,
        index: u64,
        r: Result<lapin::Result<Confirmation>, tokio::time::error::Elapsed>,
    ) -> Result<(), PublishError> {
        match r {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned))))
            | Ok(Ok(Confirmation::Nack(Some(returned)))) => Err(PublishError::Returned {
                index,
                exchange: returned.delivery.exchange.to_string(),
                routing_key: returned.delivery.routing_key.to_string(),
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(None))) => Err(PublishError::Nacked { index }),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::NotRequested { index }),
            Ok(Err(e)) => Err(PublishError::ConnectionLost {
                index,
                reason: self.lost_reason(&e),
            }),
            Err(_) => Err(self.stalled(index)),
        }
    }

    /// Why an operation failed: a "channel is closed" error says little, so
    /// prefer what the broker or the socket reported (e.g. "broker forced
    /// connection closure with reason 'shutdown'").
    fn lost_reason(&self, e: &lapin::Error) -> String {
        let state_error = matches!(
            e.kind(),
            ErrorKind::InvalidChannelState(..) | ErrorKind::InvalidConnectionState(..)
        );
        let last = self
            .link
            .as_ref()
            .and_then(|l| l.last_error.lock().ok().and_then(|g| g.clone()));
        match last {
            Some(last) if state_error => last,
            _ => describe(e),
        }
    }

    /// A timeout: blocked broker or silent one.
    fn stalled(&self, index: u64) -> PublishError {
        match self.link.as_ref().and_then(Link::blocked_reason) {
            Some(reason) => PublishError::Blocked {
                index,
                reason,
                timeout: self.opts.confirm_timeout,
            },
            None => PublishError::ConfirmTimeout {
                index,
                timeout: self.opts.confirm_timeout,
            },
        }
    }

    /// Publishes message `index`; the returned deadline bounds its confirm.
    pub(super) async fn send(
        &self,
        index: u64,
        body: &[u8],
        prefix: Option<&str>,
    ) -> Result<Pending, PublishError> {
        let Some(link) = self.link.as_ref() else {
            return Err(PublishError::ConnectionLost {
                index,
                reason: "not connected".into(),
            });
        };
        let mut props = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_app_id(APP_ID.into())
            .with_timestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
        if self.cfg.persistent {
            props = props.with_delivery_mode(2);
        }
        if let Some(prefix) = prefix {
            props = props.with_message_id(format!("{prefix}:{index}").into());
        }
        let publish = link.channel.basic_publish(
            self.cfg.exchange.as_str().into(),
            self.cfg.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        );
        // While the broker blocks us the frame is never written, so this
        // wait is the "bounded by the confirm timeout" of design §6.5.
        match tokio::time::timeout(self.opts.confirm_timeout, publish).await {
            Ok(Ok(confirm)) => Ok(Pending {
                confirm,
                deadline: Instant::now() + self.opts.confirm_timeout,
            }),
            Ok(Err(e)) => Err(PublishError::ConnectionLost {
                index,
                reason: self.lost_reason(&e),
            }),
            Err(_) => Err(self.stalled(index)),
        }
    }

    /// Tries every host in order; sets up queue and confirm mode on the
    /// first that answers. After the first link the queue is only checked
    /// (see [`queue::ensure`]).
    pub(super) async fn open_link(&mut self) -> Result<Link, PublishError> {
        let this = &*self;
        let link = failover(
            &this.cfg,
            &this.opts,
            this.tls.as_ref(),
            async |conn, name| this.setup(conn, name).await,
        )
        .await?;
        if self.cfg.queue.is_some() {
            self.queue_seen = Some(std::time::Instant::now());
        }
        self.notice(&Notice::Connected {
            endpoint: link.endpoint.clone(),
        });
        Ok(link)
    }
}

/// Connects to the hosts of `cfg` in order (each bounded by the connect
/// timeout) and runs `setup` on the first connection that opens; returns
/// what `setup` made of it. A refused login is [`PublishError::Auth`]; a
/// [`SetupError::Fatal`] stops at once; otherwise every host's failure is
/// in [`PublishError::Connect`]. Shared by the publisher and the consumer
/// (`tstat-consume`), so both fail over and word failures alike.
pub(crate) async fn failover<T>(
    cfg: &RabbitConfig,
    opts: &PublishOptions,
    tls: Option<&RustlsConnector>,
    mut setup: impl AsyncFnMut(Connection, &str) -> Result<T, SetupError>,
) -> Result<T, PublishError> {
    let mut failures = Vec::new();
    let mut auth: Option<PublishError> = None;
    for ep in &cfg.endpoints {
        let name = ep.to_string();
        let failure = match open_connection(cfg, opts, tls, ep).await {
            Ok(conn) => match setup(conn, &name).await {
                Ok(made) => return Ok(made),
                Err(SetupError::Fatal(e)) => return Err(e),
                Err(SetupError::Endpoint(reason)) => EndpointFailure {
                    endpoint: name,
                    reason,
                    permanent: false,
                },
            },
            Err(ConnectError::Refused(reason)) => {
                auth.get_or_insert(PublishError::Auth {
                    user: cfg.username.clone(),
                    endpoint: name.clone(),
                    reason: reason.clone(),
                    config: cfg.path.clone(),
                });
                EndpointFailure {
                    endpoint: name,
                    reason,
                    permanent: true,
                }
            }
            Err(ConnectError::Other { reason, permanent }) => EndpointFailure {
                endpoint: name,
                reason,
                permanent,
            },
        };
        if cfg.endpoints.len() > 1
            && let Some(sink) = &opts.notices
        {
            sink(&Notice::EndpointFailed {
                endpoint: failure.endpoint.clone(),
                reason: failure.reason.clone(),
            });
        }
        failures.push(failure);
    }
    Err(auth.unwrap_or(PublishError::Connect {
        failures,
        config: cfg.path.clone(),
        keys: if cfg.tls.is_some() {
            "host, port and [ssl_options]"
        } else {
            "host and port"
        },
    }))
}

/// One AMQP connection to `ep`: name lookup, TCP, TLS and the handshake,
/// all within the connect timeout.
async fn open_connection(
    cfg: &RabbitConfig,
    opts: &PublishOptions,
    tls: Option<&RustlsConnector>,
    ep: &Endpoint,
) -> Result<Connection, ConnectError> {
    {
        let timeout = opts.connect_timeout;
        let timed_out = || ConnectError::Other {
            reason: format!("no answer within {} s", timeout.as_secs_f64()),
            permanent: false,
        };
        let deadline = Instant::now() + timeout;

        let host = ep.host.clone();
        let port = ep.port;
        let resolve = tokio::task::spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<SocketAddr>>())
        });
        let addrs = match tokio::time::timeout_at(deadline, resolve).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(ConnectError::Other {
                    reason: format!("name lookup failed: {e}"),
                    permanent: false,
                });
            }
            Ok(Ok(Err(e))) => {
                return Err(ConnectError::Other {
                    reason: format!("cannot resolve host name '{}': {e}", ep.host),
                    permanent: false,
                });
            }
            Ok(Ok(Ok(addrs))) => addrs,
        };

        let uri = AMQPUri {
            scheme: if tls.is_some() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: cfg.username.clone(),
                    password: cfg.password.clone(),
                },
                host: ep.host.clone(),
                port: ep.port,
            },
            vhost: cfg.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(u16::try_from(opts.heartbeat.as_secs()).unwrap_or(u16::MAX)),
                connection_timeout: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                ..AMQPQueryString::default()
            },
        };
        let tls = tls.cloned();
        let domain = cfg
            .tls
            .as_ref()
            .and_then(|t| t.server_hostname.clone())
            .unwrap_or_else(|| ep.host.clone());
        let runtime = lapin::runtime::default_runtime().map_err(|e| ConnectError::Other {
            reason: describe(&e),
            permanent: true,
        })?;
        let properties = ConnectionProperties::default().with_connection_name(APP_ID.into());
        let connect = Connection::connector(
            uri,
            runtime,
            async move |_uri, rt| {
                // Runs on lapin's I/O thread; the timeout makes sure a
                // black-holed host does not keep that thread forever.
                let open = async {
                    let stream = AsyncTcpStream::connect(&rt, addrs.clone()).await?;
                    match &tls {
                        Some(connector) => stream.into_rustls(connector, &domain).await,
                        None => Ok(stream),
                    }
                };
                match tokio::time::timeout_at(deadline, open).await {
                    Ok(r) => r.map_err(lapin::Error::from),
                    Err(_) => Err(lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out",
                    ))),
                }
            },
            properties,
        );
        match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                let mut err = classify_connect_error(&e, timeout);
                // With TLS 1.3 a broker that wants a client certificate
                // refuses it after the handshake; the alert often loses the
                // race with the TCP reset, so say what it probably was.
                let no_client_cert = cfg.tls.as_ref().is_some_and(|t| t.certfile.is_none());
                if let ConnectError::Other { reason, permanent } = &mut err
                    && no_client_cert
                    && matches!(
                        e.kind(),
                        ErrorKind::IOError(io) if matches!(
                            io.kind(),
                            std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::UnexpectedEof
                                | std::io::ErrorKind::BrokenPipe
                        )
                    )
                {
                    reason.push_str(
                        " right after the TLS handshake (does the broker require a client \
                         certificate? set certfile and keyfile in [ssl_options])",
                    );
                    *permanent = false;
                }
                Err(err)
            }
        }
    }
}

impl Publisher {
    async fn setup(&self, conn: Connection, endpoint: &str) -> Result<Link, SetupError> {
        let (tx, blocked) = watch::channel(None);
        let mut events = Box::pin(conn.events_listener());
        let sink = self.opts.notices.clone();
        let wait = self.opts.confirm_timeout;
        let last_error = Arc::new(std::sync::Mutex::new(None));
        let last = last_error.clone();
        let events = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let notice = match event {
                    Event::Error(e) => {
                        if let Ok(mut g) = last.lock() {
                            *g = Some(describe(&e));
                        }
                        continue;
                    }
                    Event::ConnectionBlocked(reason) => {
                        tx.send_replace(Some(reason.clone()));
                        Notice::Blocked { reason, wait }
                    }
                    Event::ConnectionUnblocked => {
                        tx.send_replace(None);
                        Notice::Unblocked
                    }
                    _ => continue,
                };
                if let Some(sink) = &sink {
                    sink(&notice);
                }
            }
        });
        let timeout = self.opts.confirm_timeout;
        let step =
            |what: &str, e: lapin::Error| SetupError::Endpoint(format!("{what}: {}", describe(&e)));
        let stalled = |what: &str| {
            SetupError::Endpoint(format!(
                "{what}: no answer within {} s",
                timeout.as_secs_f64()
            ))
        };
        let channel = tokio::time::timeout(timeout, conn.create_channel())
            .await
            .map_err(|_| stalled("opening a channel"))?
            .map_err(|e| step("opening a channel", e))?;
        let (channel, state) = queue::ensure(
            &conn,
            channel,
            &self.cfg,
            timeout,
            self.queue_seen,
            !self.opts.check_only,
        )
        .await
        .map_err(SetupError::Fatal)?;
        if let Ok(mut s) = self.queue_state.lock() {
            *s = Some(state);
        }
        if state == QueueState::Created
            && let Ok(mut c) = self.queue_created.lock()
        {
            c.get_or_insert_with(SystemTime::now);
        }
        tokio::time::timeout(
            timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .map_err(|_| stalled("enabling publisher confirms"))?
        .map_err(|e| step("enabling publisher confirms", e))?;
        Ok(Link {
            conn,
            channel,
            endpoint: endpoint.to_string(),
            blocked,
            last_error,
            events,
        })
    }
}

pub(crate) enum ConnectError {
    /// The broker refused the login or vhost.
    Refused(String),
    Other {
        reason: String,
        permanent: bool,
    },
}

pub(crate) enum SetupError {
    /// Not this host's fault alone (queue mismatch): stop trying.
    Fatal(PublishError),
    /// This host failed; try the next one.
    Endpoint(String),
}

fn classify_connect_error(e: &lapin::Error, timeout: Duration) -> ConnectError {
    match e.kind() {
        // 403 ACCESS_REFUSED (login), 530 NOT_ALLOWED (vhost).
        ErrorKind::ProtocolError(err) if matches!(err.get_id(), 403 | 530) => {
            ConnectError::Refused(err.get_message().to_string())
        }
        ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ConnectError::Other {
                reason: format!("no answer within {} s", timeout.as_secs_f64()),
                permanent: false,
            }
        }
        ErrorKind::IOError(io) => {
            let reason = io_words(io);
            ConnectError::Other {
                permanent: reason.starts_with("TLS"),
                reason,
            }
        }
        _ => ConnectError::Other {
            reason: describe(e),
            permanent: false,
        },
    }
}
