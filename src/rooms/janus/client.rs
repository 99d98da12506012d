//! The connection to Janus: one WebSocket and one session, owned by one task.
//!
//! Every request is matched to its reply by `transaction` and bounded by the configured
//! timeout. `message` requests resolve on `success` (a plugin's synchronous answer) or on
//! the `event` that follows an `ack`. Keepalives go out well inside `session_timeout`.
//! When the connection drops, every pending request fails, every handle's event stream
//! ends (so its owner knows its room is lost), and the task reconnects with exponential
//! backoff and jitter, creating a new session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::base::backoff::Backoff;
use crate::base::lossy;

use super::protocol::{Auth, Incoming, Jsep, PluginData, Request, TrickleCandidate};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a request to Janus failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JanusError {
    #[error("not connected to Janus at {url}")]
    NotConnected { url: String },
    #[error("the connection to Janus dropped before it answered")]
    ConnectionLost,
    #[error("Janus did not answer {what} within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("Janus refused {what}: {reason} (error {code})")]
    Refused {
        what: String,
        code: i64,
        reason: String,
    },
    #[error("{plugin} refused {what}: {reason} (error {code})")]
    Plugin {
        plugin: String,
        what: String,
        code: i64,
        reason: String,
    },
    #[error("unexpected answer from Janus to {what}: {detail}")]
    Protocol { what: String, detail: String },
}

/// Settings of the connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub url: String,
    pub auth: Auth,
    /// For `wss://`: trust only this CA (PEM), not the system's roots (`janus.ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    pub request_timeout: Duration,
    pub keepalive_interval: Duration,
    /// Between tries to reach Janus again.
    pub reconnect: Backoff,
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Connected { session_id: u64 },
    Stopped,
}

/// Something Janus reported about one handle.
#[derive(Debug, Clone)]
pub enum HandleEvent {
    Plugin {
        data: PluginData,
        jsep: Option<Jsep>,
    },
    WebrtcUp,
    Media {
        kind: String,
        receiving: bool,
    },
    SlowLink,
    Hangup {
        reason: String,
    },
    Detached,
    Trickle(TrickleCandidate),
}

/// A plugin's answer to a `message`.
#[derive(Debug, Clone)]
pub struct PluginReply {
    pub data: PluginData,
    pub jsep: Option<Jsep>,
}

/// How a pending request completes.
enum Pending {
    /// `attach`: registers the handle's event stream and resolves with its id.
    Attach {
        session_id: u64,
        events: lossy::Sender<HandleEvent>,
        reply: oneshot::Sender<Result<(u64, u64), JanusError>>,
    },
    /// `message`: resolves on `success` or on the `event` after an `ack`.
    Message(oneshot::Sender<Result<PluginReply, JanusError>>),
    /// `trickle`, `detach`, `keepalive`: resolves on `ack` or `success`.
    Done(oneshot::Sender<Result<(), JanusError>>),
}

impl Pending {
    fn fail(self, error: JanusError) {
        match self {
            Pending::Attach { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Pending::Message(tx) => {
                let _ = tx.send(Err(error));
            }
            Pending::Done(tx) => {
                let _ = tx.send(Err(error));
            }
        }
    }
}

enum Command {
    Attach {
        plugin: String,
        events: lossy::Sender<HandleEvent>,
        reply: oneshot::Sender<Result<(u64, u64), JanusError>>,
    },
    Message {
        session_id: u64,
        handle_id: u64,
        body: Value,
        jsep: Option<Jsep>,
        what: String,
        reply: oneshot::Sender<Result<PluginReply, JanusError>>,
    },
    Trickle {
        session_id: u64,
        handle_id: u64,
        candidate: TrickleCandidate,
        reply: oneshot::Sender<Result<(), JanusError>>,
    },
    Detach {
        session_id: u64,
        handle_id: u64,
        reply: oneshot::Sender<Result<(), JanusError>>,
    },
    /// Drop the connection and connect again now (its socket may be dead unnoticed).
    Reconnect { why: String },
}

/// A cloneable handle to the connection task.
#[derive(Clone)]
pub struct JanusClient {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<Status>,
    config: Arc<ClientConfig>,
}

/// One attached plugin handle; cheap to clone. Its event stream (returned by
/// [`JanusClient::attach`]) ends when the handle or the session is gone.
#[derive(Clone)]
pub struct Handle {
    pub id: u64,
    pub session_id: u64,
    client: JanusClient,
}

/// What Janus reports about one handle, in order.
pub type HandleEvents = lossy::Receiver<HandleEvent>;

/// Events queued per handle before the oldest are dropped (and counted): a room full of
/// participants joining, leaving and talking cannot grow the box's memory without end.
pub const HANDLE_EVENT_BUFFER: usize = 256;
/// The largest WebSocket message (and frame) read from Janus. Its largest legitimate
/// messages (SDP, participant lists) are tens of KiB; a larger one ends the connection,
/// which is then re-established like a lost one.
pub const MAX_JANUS_MESSAGE: usize = 1024 * 1024;

impl JanusClient {
    /// Starts the connection task; it connects (and reconnects) until `shutdown`.
    pub fn start(config: ClientConfig, shutdown: CancellationToken) -> Self {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Status::Connecting);
        let config = Arc::new(config);
        let connection = Connection {
            config: config.clone(),
            commands: commands_rx,
            status: status_tx,
            shutdown,
            pending: HashMap::new(),
            handles: HashMap::new(),
            next_transaction: AtomicU64::new(1),
            transaction_prefix: format!("{:08x}", rand::random::<u32>()),
        };
        tokio::spawn(connection.run());
        Self {
            commands,
            status,
            config,
        }
    }

    /// Drops the connection and connects again now, with a new session: the socket may
    /// be dead without any error yet (the box's address changed).
    pub fn reconnect(&self, why: &str) {
        let _ = self.commands.send(Command::Reconnect {
            why: why.to_owned(),
        });
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits up to `timeout` for a session; fails at once if the task has stopped.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, JanusError> {
        let mut status = self.status.clone();
        let wait = async {
            loop {
                match &*status.borrow_and_update() {
                    Status::Connected { session_id } => return Ok(*session_id),
                    Status::Stopped => break,
                    Status::Connecting => {}
                }
                if status.changed().await.is_err() {
                    break;
                }
            }
            Err(self.not_connected())
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(self.not_connected()))
    }

    fn not_connected(&self) -> JanusError {
        JanusError::NotConnected {
            url: self.config.url.clone(),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, JanusError>>) -> Command,
    ) -> Result<T, JanusError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| self.not_connected())?;
        // The task answers every request (timeouts included); the outer bound only guards
        // against a bug there.
        let guard = self.config.request_timeout + Duration::from_secs(2);
        match tokio::time::timeout(guard, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JanusError::ConnectionLost),
            Err(_) => Err(JanusError::Timeout {
                what: "a request".into(),
                timeout: guard,
            }),
        }
    }

    /// Attaches a plugin handle to the current session.
    pub async fn attach(&self, plugin: &str) -> Result<(Handle, HandleEvents), JanusError> {
        let (events_tx, events) = lossy::channel(HANDLE_EVENT_BUFFER, "Janus events for a handle");
        let (session_id, id) = self
            .call(|reply| Command::Attach {
                plugin: plugin.to_owned(),
                events: events_tx,
                reply,
            })
            .await?;
        Ok((
            Handle {
                id,
                session_id,
                client: self.clone(),
            },
            events,
        ))
    }
}

impl Handle {
    /// Sends a plugin message; resolves with the plugin's answer. A plugin error
    /// (`error_code`) becomes [`JanusError::Plugin`].
    pub async fn message(
        &self,
        what: &str,
        body: Value,
        jsep: Option<Jsep>,
    ) -> Result<PluginReply, JanusError> {
        let reply = self
            .client
            .call(|reply| Command::Message {
                session_id: self.session_id,
                handle_id: self.id,
                body,
                jsep,
                what: what.to_owned(),
                reply,
            })
            .await?;
        if let Some(error) = reply.data.error() {
            return Err(JanusError::Plugin {
                plugin: reply.data.plugin.clone(),
                what: what.to_owned(),
                code: error.error_code,
                reason: error.error,
            });
        }
        Ok(reply)
    }

    pub async fn trickle(&self, candidate: TrickleCandidate) -> Result<(), JanusError> {
        self.client
            .call(|reply| Command::Trickle {
                session_id: self.session_id,
                handle_id: self.id,
                candidate,
                reply,
            })
            .await
    }

    /// Detaches the handle (Janus hangs up its PeerConnection).
    pub async fn detach(&self) -> Result<(), JanusError> {
        self.client
            .call(|reply| Command::Detach {
                session_id: self.session_id,
                handle_id: self.id,
                reply,
            })
            .await
    }

    pub fn client(&self) -> &JanusClient {
        &self.client
    }
}

struct Connection {
    config: Arc<ClientConfig>,
    commands: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<Status>,
    shutdown: CancellationToken,
    pending: HashMap<String, (Pending, Instant, String)>,
    handles: HashMap<u64, lossy::Sender<HandleEvent>>,
    next_transaction: AtomicU64,
    transaction_prefix: String,
}

/// Why serving a session ended.
enum Ended {
    Shutdown,
    Lost(String),
}

impl Connection {
    fn transaction(&self) -> String {
        let n = self.next_transaction.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.transaction_prefix)
    }

    fn not_connected(&self) -> JanusError {
        JanusError::NotConnected {
            url: self.config.url.clone(),
        }
    }

    async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut was_connected = false;
        // A session whose connection was lost: Janus may still hold it (and its rooms'
        // participants, whose ids a rejoin needs) if only our side noticed.
        let mut stale_session: Option<u64> = None;
        loop {
            let _ = self.status.send(Status::Connecting);
            let transaction = self.transaction();
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                result = Self::open(&self.config, &transaction) => result,
            };
            match connected {
                Ok((mut socket, session_id)) => {
                    attempt = 0;
                    info!(url = %self.config.url, session_id, "connected to Janus");
                    if let Some(old) = stale_session.take() {
                        self.retire(&mut socket, old).await;
                    }
                    was_connected = true;
                    let _ = self.status.send(Status::Connected { session_id });
                    let ended = self.serve(socket, session_id).await;
                    self.drop_session();
                    stale_session = Some(session_id);
                    match ended {
                        Ended::Shutdown => break,
                        Ended::Lost(why) => {
                            warn!(url = %self.config.url, "lost the Janus session: {why}; reconnecting")
                        }
                    }
                }
                Err(e) if attempt == 0 && was_connected => {
                    warn!(url = %self.config.url, "cannot reconnect to Janus yet: {e}")
                }
                Err(e) if attempt == 0 => {
                    warn!(url = %self.config.url, "cannot connect to Janus: {e}; retrying with backoff")
                }
                Err(e) => debug!(url = %self.config.url, attempt, "cannot connect to Janus: {e}"),
            }
            let _ = self.status.send(Status::Connecting);
            let delay = self.config.reconnect.delay(attempt);
            attempt = attempt.saturating_add(1);
            let wake = Instant::now() + delay;
            // Keep answering requests (with "not connected") while waiting.
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => {
                        let _ = self.status.send(Status::Stopped);
                        return;
                    }
                    _ = tokio::time::sleep_until(wake) => break,
                    Some(command) = self.commands.recv() => match command {
                        // The network changed: the next attempt may work at once.
                        Command::Reconnect { .. } => break,
                        command => self.refuse(command),
                    },
                }
            }
        }
        let _ = self.status.send(Status::Stopped);
        while let Ok(command) = self.commands.try_recv() {
            self.refuse(command);
        }
    }

    fn refuse(&self, command: Command) {
        let error = self.not_connected();
        match command {
            Command::Attach { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Message { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Trickle { reply, .. } | Command::Detach { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Reconnect { .. } => {}
        }
    }

    /// Claims the session `old` from the connection it was left on and destroys it, so
    /// that its participants leave their rooms now rather than at Janus's session
    /// timeout (a rejoin with the same ids is refused until then). Best effort: a Janus
    /// that restarted does not know it any more.
    async fn retire(&self, socket: &mut Socket, old: u64) {
        let auth = self.config.auth.clone();
        let claim = Request::Claim {
            transaction: self.transaction(),
            session_id: old,
            auth: auth.clone(),
        };
        let destroy = Request::Destroy {
            transaction: self.transaction(),
            session_id: old,
            auth,
        };
        let exchange = async {
            for request in [claim, destroy] {
                send(socket, &request).await.ok()?;
                loop {
                    let Message::Text(text) = socket.next().await?.ok()? else {
                        continue;
                    };
                    match serde_json::from_str::<Incoming>(&text) {
                        Ok(Incoming::Success {
                            transaction: Some(t),
                            ..
                        }) if t == request.transaction() => break,
                        Ok(Incoming::Error {
                            transaction: Some(t),
                            ..
                        }) if t == request.transaction() => return None,
                        _ => continue,
                    }
                }
            }
            Some(())
        };
        match tokio::time::timeout(Duration::from_secs(1), exchange).await {
            Ok(Some(())) => info!(
                session_id = old,
                "destroyed the Janus session left on the lost connection"
            ),
            _ => debug!(session_id = old, "the lost Janus session is already gone"),
        }
    }

    /// Opens the WebSocket and creates a session, within the request timeout.
    async fn open(config: &ClientConfig, transaction: &str) -> Result<(Socket, u64), JanusError> {
        let timeout = config.request_timeout;
        let what = "connect and create a session";
        let attempt =
            async {
                let mut request = config.url.as_str().into_client_request().map_err(|e| {
                    JanusError::Protocol {
                        what: what.into(),
                        detail: e.to_string(),
                    }
                })?;
                request.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static("janus-protocol"),
                );
                let connector = match &config.ca_file {
                    Some(ca_file) => Some(tokio_tungstenite::Connector::Rustls(
                        crate::base::tls::trusting_only("janus.ca_file", ca_file).map_err(
                            |reason| JanusError::Refused {
                                what: what.into(),
                                code: 0,
                                reason,
                            },
                        )?,
                    )),
                    None => None,
                };
                let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(
                    request,
                    Some(websocket_config()),
                    false,
                    connector,
                )
                .await
                .map_err(|e| JanusError::Refused {
                    what: what.into(),
                    code: 0,
                    reason: e.to_string(),
                })?;
                let create = Request::Create {
                    transaction: transaction.to_owned(),
                    auth: config.auth.clone(),
                };
                send(&mut socket, &create).await?;
                while let Some(frame) = socket.next().await {
                    let frame = frame.map_err(|e| JanusError::Refused {
                        what: what.into(),
                        code: 0,
                        reason: e.to_string(),
                    })?;
                    let Message::Text(text) = frame else { continue };
                    match serde_json::from_str::<Incoming>(&text) {
                        Ok(Incoming::Success {
                            transaction: Some(t),
                            data: Some(data),
                            ..
                        }) if t == transaction => return Ok((socket, data.id)),
                        Ok(Incoming::Error {
                            transaction: Some(t),
                            error,
                        }) if t == transaction => {
                            return Err(JanusError::Refused {
                                what: "create a session".into(),
                                code: error.code,
                                reason: error.reason,
                            });
                        }
                        _ => continue,
                    }
                }
                Err(JanusError::ConnectionLost)
            };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(JanusError::Timeout {
                    what: what.into(),
                    timeout,
                })
            })
    }

    async fn serve(&mut self, mut socket: Socket, session_id: u64) -> Ended {
        let mut keepalive = tokio::time::interval_at(
            Instant::now() + self.config.keepalive_interval,
            self.config.keepalive_interval,
        );
        let mut sweep = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let destroy = Request::Destroy {
                        transaction: self.transaction(),
                        session_id,
                        auth: self.config.auth.clone(),
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(500), async {
                        let _ = send(&mut socket, &destroy).await;
                        let _ = socket.close(None).await;
                    }).await;
                    return Ended::Shutdown;
                }
                Some(command) = self.commands.recv() => {
                    if let Command::Reconnect { why } = command {
                        let _ = tokio::time::timeout(Duration::from_millis(200), socket.close(None)).await;
                        return Ended::Lost(why);
                    }
                    if let Some(request) = self.register(command, session_id)
                        && let Err(e) = send(&mut socket, &request).await
                    {
                        return Ended::Lost(e.to_string());
                    }
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(ended) = self.dispatch(&text, session_id) {
                            return ended;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return Ended::Lost("Janus closed the WebSocket".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                },
                _ = keepalive.tick() => {
                    let request = Request::Keepalive {
                        transaction: self.transaction(),
                        session_id,
                        auth: self.config.auth.clone(),
                    };
                    let (tx, _rx) = oneshot::channel();
                    self.pending.insert(request.transaction().to_owned(), (Pending::Done(tx), Instant::now(), "keepalive".into()));
                    if let Err(e) = send(&mut socket, &request).await {
                        return Ended::Lost(e.to_string());
                    }
                }
                _ = sweep.tick() => {
                    if let Some(ended) = self.expire() {
                        return ended;
                    }
                }
            }
        }
    }

    /// Records a command as pending and returns the request to send.
    fn register(&mut self, command: Command, session_id: u64) -> Option<Request> {
        let transaction = self.transaction();
        let auth = self.config.auth.clone();
        let stale = |reply_session: u64| reply_session != session_id;
        let (request, pending, what) = match command {
            Command::Attach {
                plugin,
                events,
                reply,
            } => (
                Request::Attach {
                    transaction: transaction.clone(),
                    session_id,
                    plugin: plugin.clone(),
                    auth,
                },
                Pending::Attach {
                    session_id,
                    events,
                    reply,
                },
                format!("attach {plugin}"),
            ),
            Command::Message {
                session_id: s,
                handle_id,
                body,
                jsep,
                what,
                reply,
            } => {
                if stale(s) {
                    let _ = reply.send(Err(JanusError::ConnectionLost));
                    return None;
                }
                (
                    Request::Message {
                        transaction: transaction.clone(),
                        session_id,
                        handle_id,
                        body,
                        jsep,
                        auth,
                    },
                    Pending::Message(reply),
                    what,
                )
            }
            Command::Trickle {
                session_id: s,
                handle_id,
                candidate,
                reply,
            } => {
                if stale(s) {
                    let _ = reply.send(Err(JanusError::ConnectionLost));
                    return None;
                }
                (
                    Request::Trickle {
                        transaction: transaction.clone(),
                        session_id,
                        handle_id,
                        candidate,
                        auth,
                    },
                    Pending::Done(reply),
                    "trickle".to_owned(),
                )
            }
            Command::Detach {
                session_id: s,
                handle_id,
                reply,
            } => {
                self.handles.remove(&handle_id);
                if stale(s) {
                    let _ = reply.send(Ok(()));
                    return None;
                }
                (
                    Request::Detach {
                        transaction: transaction.clone(),
                        session_id,
                        handle_id,
                        auth,
                    },
                    Pending::Done(reply),
                    "detach".to_owned(),
                )
            }
            // Handled by `serve` before it registers anything.
            Command::Reconnect { .. } => return None,
        };
        self.pending
            .insert(transaction, (pending, Instant::now(), what));
        Some(request)
    }

    /// Handles one message from Janus; `Some` when the session is gone.
    fn dispatch(&mut self, text: &str, session_id: u64) -> Option<Ended> {
        // Every message as received (`RUST_LOG=roomcast::janus::wire=trace`): the fuzz
        // seeds in fuzz/seeds/janus_message were captured this way.
        trace!(target: "roomcast::janus::wire", "janus <- {text}");
        let incoming: Incoming = match serde_json::from_str(text) {
            Ok(incoming) => incoming,
            Err(e) => {
                warn!(
                    "ignoring a message from Janus that does not parse ({e}): {}",
                    truncate(text)
                );
                return None;
            }
        };
        match incoming {
            Incoming::Success {
                transaction,
                data,
                plugindata,
                ..
            } => {
                let (pending, _, what) = self.take(transaction.as_deref())?;
                match pending {
                    Pending::Attach {
                        session_id,
                        events,
                        reply,
                    } => match data {
                        Some(data) => {
                            self.handles.insert(data.id, events);
                            let _ = reply.send(Ok((session_id, data.id)));
                        }
                        None => {
                            let _ = reply.send(Err(protocol_error(&what, "no handle id")));
                        }
                    },
                    Pending::Message(reply) => {
                        let _ = reply.send(match plugindata {
                            Some(data) => Ok(PluginReply { data, jsep: None }),
                            None => Err(protocol_error(&what, "no plugindata")),
                        });
                    }
                    Pending::Done(reply) => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Incoming::Error { transaction, error } => {
                if error.code == JANUS_ERROR_SESSION_NOT_FOUND {
                    return Some(Ended::Lost(format!(
                        "Janus no longer knows session {session_id}"
                    )));
                }
                let (pending, _, what) = self.take(transaction.as_deref())?;
                pending.fail(JanusError::Refused {
                    what,
                    code: error.code,
                    reason: error.reason,
                });
            }
            Incoming::Ack { transaction } => {
                let key = transaction?;
                // A message's answer is the event that follows its ack.
                if matches!(self.pending.get(&key), Some((Pending::Done(_), ..)))
                    && let Some((Pending::Done(reply), ..)) = self.pending.remove(&key)
                {
                    let _ = reply.send(Ok(()));
                }
            }
            Incoming::Event {
                transaction,
                sender,
                plugindata,
                jsep,
            } => {
                let waiting = transaction.as_ref().is_some_and(|t| {
                    matches!(self.pending.get(t), Some((Pending::Message(_), ..)))
                });
                if waiting {
                    if let Some((Pending::Message(reply), ..)) = self.take(transaction.as_deref()) {
                        let _ = reply.send(Ok(PluginReply {
                            data: plugindata,
                            jsep,
                        }));
                    }
                } else {
                    self.route(
                        sender,
                        HandleEvent::Plugin {
                            data: plugindata,
                            jsep,
                        },
                    );
                }
            }
            Incoming::Webrtcup { sender } => self.route(sender, HandleEvent::WebrtcUp),
            Incoming::Media {
                sender,
                kind,
                receiving,
            } => self.route(sender, HandleEvent::Media { kind, receiving }),
            Incoming::Slowlink { sender } => self.route(sender, HandleEvent::SlowLink),
            Incoming::Hangup { sender, reason } => {
                self.route(sender, HandleEvent::Hangup { reason })
            }
            Incoming::Detached { sender } => {
                self.route(sender, HandleEvent::Detached);
                self.handles.remove(&sender);
            }
            Incoming::Trickle { sender, candidate } => {
                self.route(sender, HandleEvent::Trickle(candidate))
            }
            Incoming::Timeout { .. } => {
                return Some(Ended::Lost("Janus timed the session out".into()));
            }
            Incoming::Other => {}
        }
        None
    }

    fn take(&mut self, transaction: Option<&str>) -> Option<(Pending, Instant, String)> {
        self.pending.remove(transaction?)
    }

    fn route(&mut self, handle: u64, event: HandleEvent) {
        if let Some(events) = self.handles.get(&handle)
            && events.send(event).is_err()
        {
            // Its owner is gone; Janus will be told when the owner detaches or the
            // session ends.
            self.handles.remove(&handle);
        }
    }

    /// Fails requests past their deadline. An unanswered keepalive means the connection
    /// is dead even if the socket has not noticed.
    fn expire(&mut self) -> Option<Ended> {
        let timeout = self.config.request_timeout;
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, since, _))| since.elapsed() >= timeout)
            .map(|(t, _)| t.clone())
            .collect();
        let mut keepalive_lost = false;
        for transaction in expired {
            if let Some((pending, _, what)) = self.pending.remove(&transaction) {
                keepalive_lost |= what == "keepalive";
                pending.fail(JanusError::Timeout { what, timeout });
            }
        }
        keepalive_lost.then(|| Ended::Lost(format!("a keepalive went unanswered for {timeout:?}")))
    }

    /// Ends everything tied to the session that just ended.
    fn drop_session(&mut self) {
        for (_, (pending, _, _)) in self.pending.drain() {
            pending.fail(JanusError::ConnectionLost);
        }
        self.handles.clear();
    }
}

/// Janus's "no such session" error.
const JANUS_ERROR_SESSION_NOT_FOUND: i64 = 458;

fn protocol_error(what: &str, detail: &str) -> JanusError {
    JanusError::Protocol {
        what: what.to_owned(),
        detail: detail.to_owned(),
    }
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn send(socket: &mut Socket, request: &Request) -> Result<(), JanusError> {
    let text = serde_json::to_string(request).map_err(|e| JanusError::Protocol {
        what: "encode a request".into(),
        detail: e.to_string(),
    })?;
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| JanusError::Refused {
            what: "send a request".into(),
            code: 0,
            reason: e.to_string(),
        })
}

/// Bounds on what is read from Janus (see [`MAX_JANUS_MESSAGE`]).
fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_JANUS_MESSAGE))
        .max_frame_size(Some(MAX_JANUS_MESSAGE))
}
