//! Getting a connection to the stream's leader: the configured hosts in
//! order (on the stream port), the stream created when absent, its leader
//! from the metadata, and a second connection when the leader is another
//! node than the one we reached.

use std::collections::HashMap;
use std::time::Duration;

use rabbitmq_stream_protocol::commands::create_stream::CreateStreamCommand;
use rabbitmq_stream_protocol::commands::metadata::MetadataCommand;
use tokio::time::Instant;

use super::conn::{Conn, Login, OpenError, Target};
use super::frame::{self, code_name};
use super::{StreamPublisher, refused};
use crate::config::{Endpoint, RabbitConfig};
use crate::publish::{EndpointFailure, Notice, PublishError, PublishOptions};

/// Pause between metadata queries while a new stream has no leader yet.
const LEADER_POLL: Duration = Duration::from_millis(200);

/// What connecting needs, shared by the publisher and the reader: the
/// configured hosts, login and TLS, and the stream port.
pub(super) struct Site<'a> {
    /// Hosts, credentials, vhost, TLS settings.
    pub cfg: &'a RabbitConfig,
    /// Timeouts, heartbeat, notices.
    pub opts: &'a PublishOptions,
    /// The TLS connector when TLS is configured.
    pub tls: Option<&'a tokio_rustls::TlsConnector>,
    /// The stream port.
    pub port: u16,
    /// Largest frame accepted from the broker (`None`: the negotiated
    /// frame size).
    pub inbound_max: Option<u32>,
}

impl<'a> Site<'a> {
    pub(super) fn login(&self) -> Login<'a> {
        Login {
            user: &self.cfg.username,
            password: &self.cfg.password,
            vhost: &self.cfg.vhost,
            heartbeat: self.opts.heartbeat,
            connect_timeout: self.opts.connect_timeout,
            request_timeout: self.opts.confirm_timeout,
            inbound_max: self.inbound_max,
        }
    }

    pub(super) fn target<'b>(&self, host: &'b str, port: u16) -> Target<'b>
    where
        'a: 'b,
    {
        let endpoint = Endpoint {
            host: host.to_string(),
            port,
        }
        .to_string();
        let tls = self.tls.map(|c| {
            let name = self
                .cfg
                .tls
                .as_ref()
                .and_then(|t| t.server_hostname.clone())
                .unwrap_or_else(|| host.to_string());
            (c, name)
        });
        Target {
            host,
            port,
            endpoint,
            tls,
        }
    }

    pub(super) fn auth(&self, endpoint: &str, reason: String) -> PublishError {
        PublishError::Auth {
            user: self.cfg.username.clone(),
            endpoint: endpoint.to_string(),
            reason,
            config: self.cfg.path.clone(),
        }
    }

    pub(super) fn notice(&self, n: &Notice) {
        if let Some(sink) = &self.opts.notices {
            sink(n);
        }
    }

    /// Opens a connection to the configured hosts in order (on the stream
    /// port) and hands it to `then` (which may move to another node); the
    /// first that works is returned. A refused login or an error `then`
    /// says retrying cannot cure ends the pass at once.
    pub(super) async fn each_host<F, Fut>(&self, mut then: F) -> Result<Conn, PublishError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<Conn, PublishError>>,
    {
        let mut failures = Vec::new();
        for ep in &self.cfg.endpoints {
            let target = self.target(&ep.host, self.port);
            let failure = match Conn::open(&target, &self.login()).await {
                Ok(conn) => match then(conn).await {
                    Ok(conn) => {
                        self.notice(&Notice::Connected {
                            endpoint: conn.endpoint.clone(),
                        });
                        return Ok(conn);
                    }
                    Err(e @ PublishError::Auth { .. }) => return Err(e),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => EndpointFailure {
                        endpoint: target.endpoint.clone(),
                        reason: e.to_string(),
                        permanent: false,
                    },
                },
                Err(OpenError::Auth(reason)) => return Err(self.auth(&target.endpoint, reason)),
                Err(OpenError::Endpoint { reason, permanent }) => EndpointFailure {
                    endpoint: target.endpoint.clone(),
                    reason,
                    permanent,
                },
            };
            if self.cfg.endpoints.len() > 1 {
                self.notice(&Notice::EndpointFailed {
                    endpoint: failure.endpoint.clone(),
                    reason: failure.reason.clone(),
                });
            }
            failures.push(failure);
        }
        Err(PublishError::Connect {
            failures,
            config: self.cfg.path.clone(),
            keys: if self.cfg.tls.is_some() {
                "host, stream_port and [ssl_options]"
            } else {
                "host and stream_port"
            },
        })
    }
}

impl StreamPublisher {
    fn site(&self) -> Site<'_> {
        Site {
            cfg: &self.cfg,
            opts: &self.opts,
            tls: self.tls.as_ref(),
            port: self.stream.port,
            inbound_max: None,
        }
    }

    fn login(&self) -> Login<'_> {
        self.site().login()
    }

    fn target<'a>(&'a self, host: &'a str, port: u16) -> Target<'a> {
        self.site().target(host, port)
    }

    fn auth(&self, endpoint: &str, reason: String) -> PublishError {
        self.site().auth(endpoint, reason)
    }

    /// A connection to the stream's leader, trying the configured hosts in
    /// order; `create` makes the stream when it does not exist (only on the
    /// first connect: a stream gone later is an error, not a fresh start).
    pub(super) async fn link(&self, create: bool) -> Result<Conn, PublishError> {
        self.site()
            .each_host(|conn| self.to_leader(conn, create))
            .await
    }

    /// Finds the leader from `conn` (creating the stream first when asked
    /// and absent) and returns a connection to it: `conn` itself, or a new
    /// one to the leader's advertised host and port.
    async fn to_leader(&self, mut conn: Conn, create: bool) -> Result<Conn, PublishError> {
        let (host, port) = self.leader(&mut conn, create).await?;
        let here = if conn.advertised.0.is_empty() {
            None
        } else {
            Some(&conn.advertised)
        };
        if here.is_some_and(|(h, p)| *h == host && *p == port) {
            return Ok(conn);
        }
        let Ok(port16) = u16::try_from(port) else {
            return Err(refused(
                &self.stream.name,
                "reach the leader of",
                &conn.endpoint,
                format!("the broker names port {port}"),
                false,
            ));
        };
        if here.is_none() && conn.endpoint == self.target(&host, port16).endpoint {
            return Ok(conn);
        }
        let target = self.target(&host, port16);
        let leader = match Conn::open(&target, &self.login()).await {
            Ok(l) => l,
            Err(OpenError::Auth(reason)) => return Err(self.auth(&target.endpoint, reason)),
            Err(OpenError::Endpoint { reason, .. }) => {
                return Err(refused(
                    &self.stream.name,
                    "reach the leader of",
                    &conn.endpoint,
                    format!(
                        "the leader is at {} (as the broker advertises it): {reason}",
                        target.endpoint
                    ),
                    true,
                ));
            }
        };
        conn.close().await;
        Ok(leader)
    }

    /// The stream's leader (advertised host and port); creates the stream
    /// when `create` and it does not exist. A new stream may have no leader
    /// for a moment: asked again until the connect timeout.
    async fn leader(&self, conn: &mut Conn, create: bool) -> Result<(String, u32), PublishError> {
        let name = self.stream.name.clone();
        let deadline = Instant::now() + self.opts.connect_timeout;
        let mut created = false;
        loop {
            let n = name.clone();
            let answer = conn.call(|c| MetadataCommand::new(c, vec![n]).into()).await;
            let frame = answer.map_err(|reason| PublishError::StreamLost {
                endpoint: conn.endpoint.clone(),
                reason,
            })?;
            match frame::leader(&frame, &name) {
                Ok(leader) => return Ok(leader),
                Err(frame::STREAM_DOES_NOT_EXIST) if create && !created => {
                    self.create(conn).await?;
                    created = true;
                }
                Err(frame::STREAM_DOES_NOT_EXIST) => {
                    let reason = if create {
                        "it still does not exist after creating it".to_string()
                    } else {
                        "it no longer exists (deleted by an operator, or lost by the broker); \
                         not re-creating it, since the broker's record of what it stored went with it"
                            .to_string()
                    };
                    return Err(refused(&name, "find", &conn.endpoint, reason, false));
                }
                Err(code) if code == frame::STREAM_NOT_AVAILABLE && Instant::now() < deadline => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(code) => {
                    return Err(refused(
                        &name,
                        "find the leader of",
                        &conn.endpoint,
                        code_name(code),
                        code == frame::STREAM_NOT_AVAILABLE,
                    ));
                }
            }
        }
    }

    /// Creates the stream with the configured arguments. "Already exists"
    /// is fine (another publisher was quicker); the broker does not compare
    /// the arguments of an existing stream over this protocol.
    async fn create(&self, conn: &mut Conn) -> Result<(), PublishError> {
        let args: HashMap<String, String> = self
            .stream
            .options
            .arguments()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let listed = if args.is_empty() {
            "no arguments".to_string()
        } else {
            let mut v: Vec<String> = args.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            v.sort();
            v.join(", ")
        };
        let name = self.stream.name.clone();
        let answer = conn
            .call(|c| CreateStreamCommand::new(c, name, args).into())
            .await;
        // RabbitMQ 3.10 drops the connection instead of answering when it
        // cannot parse an argument (e.g. max-age = soon).
        let frame = answer.map_err(|reason| {
            refused(
                &self.stream.name,
                "create",
                &conn.endpoint,
                format!(
                    "{reason}; the broker probably rejected the arguments ({listed}): \
                     check [rabbit_stream_options]"
                ),
                false,
            )
        })?;
        match frame::code(&frame) {
            Some(frame::OK | frame::STREAM_ALREADY_EXISTS) => Ok(()),
            Some(code) => {
                let hint = if code == 17 {
                    format!(
                        "; the broker rejected the arguments ({listed}): check [rabbit_stream_options]"
                    )
                } else if code == 16 {
                    format!(
                        "; user '{}' needs the configure permission on vhost '{}' to create it",
                        self.cfg.username, self.cfg.vhost
                    )
                } else {
                    String::new()
                };
                Err(refused(
                    &self.stream.name,
                    "create",
                    &conn.endpoint,
                    format!("{}{hint}", code_name(code)),
                    false,
                ))
            }
            None => Err(refused(
                &self.stream.name,
                "create",
                &conn.endpoint,
                "malformed answer".into(),
                true,
            )),
        }
    }
}
