//! One stream-protocol connection: TCP or TLS, the 4-byte size framing,
//! the handshake (peer properties, SASL PLAIN, tune, open), requests
//! matched to responses by correlation id, heartbeats both ways, and the
//! frames the broker sends unasked (confirms, publish errors, metadata
//! updates, close) handed to the publisher as [`Event`]s. Every wait on the
//! network is bounded. Frames are encoded and decoded with
//! `rabbitmq-stream-protocol`; where it keeps a field private, the few
//! fixed-offset fields are read here (see [`frame`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rabbitmq_stream_protocol::commands::close::CloseRequest;
use rabbitmq_stream_protocol::commands::open::OpenCommand;
use rabbitmq_stream_protocol::commands::peer_properties::PeerPropertiesCommand;
use rabbitmq_stream_protocol::commands::sasl_authenticate::SaslAuthenticateCommand;
use rabbitmq_stream_protocol::commands::sasl_handshake::SaslHandshakeCommand;
use rabbitmq_stream_protocol::commands::tune::TunesCommand;
use rabbitmq_stream_protocol::{Request, Response, ResponseCode, ResponseKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use super::frame::{self, code_name};
use super::wire::{CLOSED, RESET, encode, io_reason, read_frame, read_loop, write_loop};

/// Frame size we accept before the broker's tune (and propose): 1 MiB, the
/// broker's default.
const FRAME_MAX: u32 = 1 << 20;
/// Frames queued for the writer task.
const OUTBOX: usize = 256;

/// Something the broker sent unasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Publish confirm.
    Confirm {
        /// The publisher id on this connection.
        publisher: u8,
        /// Confirmed publishing ids.
        ids: Vec<u64>,
    },
    /// Publish error: (publishing id, response code) pairs.
    Refused {
        /// The publisher id on this connection.
        publisher: u8,
        /// Refused ids and why.
        errors: Vec<(u64, u16)>,
    },
    /// The stream's topology changed (leader moved, stream deleted).
    MetadataUpdate {
        /// The stream.
        stream: String,
        /// Response code (6: stream not available).
        code: u16,
    },
    /// The broker closed the connection.
    Closed {
        /// Its response code.
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// The socket failed or went quiet.
    Lost(String),
    /// A chunk delivered to a subscription: the whole deliver frame (size
    /// prefix included), parsed by the reader.
    Deliver {
        /// The subscription id on this connection.
        subscription: u8,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The broker refused a credit (it knows no such subscription).
    CreditRefused {
        /// The subscription id on this connection.
        subscription: u8,
        /// Its response code.
        code: u16,
    },
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Login or vhost refused (retrying cannot help).
    Auth(String),
    /// Anything else; `permanent` when retrying cannot help.
    Endpoint {
        /// What happened.
        reason: String,
        /// True for certificate and protocol errors.
        permanent: bool,
    },
}

/// What the handshake needs.
pub(crate) struct Login<'a> {
    /// User name.
    pub user: &'a str,
    /// Password.
    pub password: &'a str,
    /// Virtual host.
    pub vhost: &'a str,
    /// Heartbeat we propose (0: none).
    pub heartbeat: Duration,
    /// Bound on the whole connect and handshake.
    pub connect_timeout: Duration,
    /// Bound on one request's answer.
    pub request_timeout: Duration,
    /// Frame size proposed and largest frame taken from the broker once
    /// open (`None`: 1 MiB proposed, the negotiated size taken). A reader
    /// needs more: a delivered chunk is one frame, sized by the broker's
    /// batching (RabbitMQ 3.10 sends it whatever the frame size; later
    /// versions close the connection when it does not fit).
    pub inbound_max: Option<u32>,
}

/// A byte stream: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<Vec<u8>>>>>;

/// An open connection; dropping it stops its tasks (and so the socket).
pub(crate) struct Conn {
    /// `host:port` connected to.
    pub endpoint: String,
    /// The broker's `advertised_host`/`advertised_port` from the open
    /// response (empty/0 when absent): how metadata names this node.
    pub advertised: (String, u32),
    /// Negotiated frame size limit (0: none).
    pub frame_max: u32,
    outbox: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    events: mpsc::UnboundedReceiver<Event>,
    next_correlation: u32,
    request_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The handshake on a fresh socket, before the tasks take it over.
struct Handshake<'a> {
    io: Box<dyn Io>,
    deadline: Instant,
    correlation: u32,
    login: &'a Login<'a>,
    /// The step under way, for messages.
    step: &'static str,
}

impl Handshake<'_> {
    async fn send(&mut self, req: Request) -> Result<(), OpenError> {
        let bytes = encode(req);
        let write = async {
            self.io.write_all(&bytes).await?;
            self.io.flush().await
        };
        match timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(lost(&e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn recv(&mut self) -> Result<Vec<u8>, OpenError> {
        loop {
            let frame = match timeout_at(self.deadline, read_frame(&mut self.io, FRAME_MAX)).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return Err(lost(&e)),
                Err(_) => return Err(self.timed_out()),
            };
            match frame::key(&frame) {
                Some(frame::HEARTBEAT) => continue,
                Some(frame::CLOSE) => {
                    let (code, reason) = frame::close(&frame);
                    return Err(OpenError::Endpoint {
                        reason: format!(
                            "the broker closed the connection: {reason} ({})",
                            code_name(code)
                        ),
                        permanent: false,
                    });
                }
                _ => return Ok(frame),
            }
        }
    }

    /// Sends a request built with the next correlation id and returns the
    /// answer's frame and response code.
    async fn call(
        &mut self,
        build: impl FnOnce(u32) -> Request,
    ) -> Result<(Vec<u8>, u16), OpenError> {
        self.correlation += 1;
        let req = build(self.correlation);
        self.send(req).await?;
        let frame = self.recv().await?;
        let code = frame::code(&frame).unwrap_or(0);
        Ok((frame, code))
    }

    fn timed_out(&self) -> OpenError {
        OpenError::Endpoint {
            reason: format!(
                "no answer within {} s",
                self.login.connect_timeout.as_secs_f64()
            ),
            permanent: false,
        }
    }

    async fn run(&mut self) -> Result<(u32, u32, (String, u32)), OpenError> {
        let mut props = HashMap::new();
        props.insert("product".to_string(), super::super::APP_ID.to_string());
        props.insert("version".to_string(), env!("CARGO_PKG_VERSION").to_string());
        props.insert(
            "connection_name".to_string(),
            super::super::APP_ID.to_string(),
        );
        self.step = "exchanging peer properties";
        self.call(|c| PeerPropertiesCommand::new(c, props).into())
            .await?;

        self.step = "the SASL handshake";
        let (frame, code) = self.call(|c| SaslHandshakeCommand::new(c).into()).await?;
        if code != frame::OK {
            return Err(protocol("SASL handshake", code));
        }
        let plain = Response::decode_frame(&frame)
            .and_then(|r| match r.kind() {
                ResponseKind::SaslHandshake(h) => Some(h.mechanisms.iter().any(|m| m == "PLAIN")),
                _ => None,
            })
            .unwrap_or(false);
        if !plain {
            return Err(OpenError::Endpoint {
                reason: "the broker does not offer SASL PLAIN".into(),
                permanent: true,
            });
        }
        let mut sasl = Vec::with_capacity(self.login.user.len() + self.login.password.len() + 2);
        sasl.push(0);
        sasl.extend_from_slice(self.login.user.as_bytes());
        sasl.push(0);
        sasl.extend_from_slice(self.login.password.as_bytes());
        self.step = "login";
        let answer = self
            .call(|c| SaslAuthenticateCommand::new(c, "PLAIN".into(), sasl).into())
            .await;
        let code = match answer {
            Ok((_, code)) => code,
            // After a refused login the broker closes the connection; under
            // load the close can overtake its answer.
            Err(OpenError::Endpoint { reason, .. }) if reason == CLOSED || reason == RESET => {
                return Err(OpenError::Auth(format!(
                    "{reason} during login: probably an authentication failure \
                     (wrong user name or password)"
                )));
            }
            Err(e) => return Err(e),
        };
        match code {
            frame::OK => {}
            frame::AUTHENTICATION_FAILURE
            | frame::AUTHENTICATION_FAILURE_LOOPBACK
            | frame::SASL_ERROR => {
                return Err(OpenError::Auth(code_name(code)));
            }
            _ => return Err(protocol("SASL authenticate", code)),
        }

        // The broker proposes frame size and heartbeat; we take the smaller
        // non-zero value of each.
        self.step = "tuning";
        let tune = self.recv().await?;
        let (their_frame, their_hb) = frame::tune(&tune).ok_or_else(|| OpenError::Endpoint {
            reason: "expected the broker's tune frame".into(),
            permanent: true,
        })?;
        let ours_hb = u32::try_from(self.login.heartbeat.as_secs()).unwrap_or(u32::MAX);
        // A reader asks for its own limit: a broker that holds deliveries to
        // the frame size closes a subscription whose chunks do not fit.
        let frame_max = min_nonzero(their_frame, self.login.inbound_max.unwrap_or(FRAME_MAX));
        let heartbeat = min_nonzero(their_hb, ours_hb);
        self.send(TunesCommand::new(frame_max, heartbeat).into())
            .await?;

        let vhost = self.login.vhost.to_string();
        self.step = "opening the vhost";
        let (frame, code) = self.call(|c| OpenCommand::new(c, vhost).into()).await?;
        match code {
            frame::OK => {}
            frame::VIRTUAL_HOST_ACCESS_FAILURE => {
                return Err(OpenError::Auth(format!(
                    "{} for vhost '{}'",
                    code_name(code),
                    self.login.vhost
                )));
            }
            _ => return Err(protocol("open", code)),
        }
        let advertised = Response::decode_frame(&frame)
            .and_then(|r| match r.kind() {
                ResponseKind::Open(o) => {
                    let p = o.connection_properties;
                    let host = p.get("advertised_host").cloned().unwrap_or_default();
                    let port = p
                        .get("advertised_port")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    Some((host, port))
                }
                _ => None,
            })
            .unwrap_or_default();
        Ok((frame_max, heartbeat, advertised))
    }
}

fn min_nonzero(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

fn lost(e: &std::io::Error) -> OpenError {
    OpenError::Endpoint {
        reason: io_reason(e),
        permanent: false,
    }
}

fn protocol(step: &str, code: u16) -> OpenError {
    OpenError::Endpoint {
        reason: format!("{step} refused: {}", code_name(code)),
        permanent: false,
    }
}

/// Small extension: decode a whole frame (size prefix included).
trait DecodeFrame {
    fn decode_frame(frame: &[u8]) -> Option<Response>;
}

impl DecodeFrame for Response {
    fn decode_frame(frame: &[u8]) -> Option<Response> {
        use rabbitmq_stream_protocol::codec::Decoder;
        Response::decode(frame).ok().map(|(_, r)| r)
    }
}

/// How to reach one host.
pub(crate) struct Target<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// Stream port.
    pub port: u16,
    /// `host:port` for messages.
    pub endpoint: String,
    /// TLS: the connector and the name to verify.
    pub tls: Option<(&'a tokio_rustls::TlsConnector, String)>,
}

impl Conn {
    /// Connects to `target` and runs the handshake, all within the connect
    /// timeout.
    pub(crate) async fn open(target: &Target<'_>, login: &Login<'_>) -> Result<Conn, OpenError> {
        let deadline = Instant::now() + login.connect_timeout;
        let timed_out = || OpenError::Endpoint {
            reason: format!("no answer within {} s", login.connect_timeout.as_secs_f64()),
            permanent: false,
        };
        let tcp = match timeout_at(
            deadline,
            tokio::net::TcpStream::connect((target.host, target.port)),
        )
        .await
        {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(OpenError::Endpoint {
                    // The failed connect adds which keys and file to check.
                    reason: "connection refused: nothing listens for the stream protocol there \
                             (is the rabbitmq_stream plugin enabled?)"
                        .into(),
                    permanent: false,
                });
            }
            Ok(Err(e)) => {
                return Err(OpenError::Endpoint {
                    reason: e.to_string(),
                    permanent: false,
                });
            }
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &target.tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                let server =
                    rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                        OpenError::Endpoint {
                            reason: format!("'{name}' is not a valid TLS server name: {e}"),
                            permanent: true,
                        }
                    })?;
                match timeout_at(deadline, connector.connect(server, tcp)).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Err(e)) => {
                        let permanent =
                            e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
                        return Err(OpenError::Endpoint {
                            reason: format!("TLS handshake failed: {e}"),
                            permanent,
                        });
                    }
                    Ok(Ok(s)) => Box::new(s),
                }
            }
        };
        let mut hs = Handshake {
            io,
            deadline,
            correlation: 0,
            login,
            step: "connecting",
        };
        let (frame_max, heartbeat, advertised) = match hs.run().await {
            Ok(t) => t,
            Err(OpenError::Endpoint { reason, permanent }) => {
                return Err(OpenError::Endpoint {
                    reason: format!("{reason} (during {})", hs.step),
                    permanent,
                });
            }
            Err(e) => return Err(e),
        };
        let (read, write) = tokio::io::split(hs.io);
        let (out_tx, out_rx) = mpsc::channel(OUTBOX);
        let (ev_tx, events) = mpsc::unbounded_channel();
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let hb = Duration::from_secs(u64::from(heartbeat));
        let writer = tokio::spawn(write_loop(write, out_rx, hb, ev_tx.clone()));
        let reader = tokio::spawn(read_loop(
            read,
            login.inbound_max.unwrap_or(frame_max),
            hb,
            waiters.clone(),
            out_tx.clone(),
            ev_tx,
        ));
        Ok(Conn {
            endpoint: target.endpoint.clone(),
            advertised,
            frame_max,
            outbox: out_tx,
            waiters,
            events,
            next_correlation: hs.correlation,
            request_timeout: login.request_timeout,
            tasks: vec![writer, reader],
        })
    }

    /// Sends a request and waits (bounded) for its answer; returns the
    /// answer's frame.
    pub(crate) async fn call(
        &mut self,
        build: impl FnOnce(u32) -> Request,
    ) -> Result<Vec<u8>, String> {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let id = self.next_correlation;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(id, tx);
        }
        if let Err(e) = self.send_frame(encode(build(id))).await {
            if let Ok(mut w) = self.waiters.lock() {
                w.remove(&id);
            }
            return Err(e);
        }
        match timeout(self.request_timeout, rx).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err("the connection was lost while waiting for an answer".into()),
            Err(_) => {
                if let Ok(mut w) = self.waiters.lock() {
                    w.remove(&id);
                }
                Err(format!(
                    "no answer within {} s",
                    self.request_timeout.as_secs_f64()
                ))
            }
        }
    }

    /// Queues an encoded frame for the writer (bounded wait when the socket
    /// does not drain).
    pub(crate) async fn send_frame(&self, frame: Vec<u8>) -> Result<(), String> {
        match timeout(self.request_timeout, self.outbox.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the connection is closed".into()),
            Err(_) => Err(format!(
                "the broker took nothing for {} s",
                self.request_timeout.as_secs_f64()
            )),
        }
    }

    /// The next event, waiting at most `wait`; `None` when none came.
    pub(crate) async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        match timeout(wait, self.events.recv()).await {
            Ok(Some(e)) => Some(e),
            Ok(None) => Some(Event::Lost("the connection's tasks ended".into())),
            Err(_) => None,
        }
    }

    /// An event that is already there.
    pub(crate) fn try_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Closes politely: a close request, its answer awaited for at most
    /// two seconds.
    pub(crate) async fn close(mut self) {
        self.request_timeout = self.request_timeout.min(Duration::from_secs(2));
        let _ = self
            .call(|c| CloseRequest::new(c, ResponseCode::Ok, "done".into()).into())
            .await;
    }
}
