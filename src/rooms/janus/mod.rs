//! Rooms on Janus SFUs: VideoRoom for media and presence of publishers, TextRoom for
//! users and messages, string room ids. [`JanusRooms`] is one server: one WebSocket
//! session, one task per room owning that room's handles. [`JanusServers`] is the
//! engine's backend: the configured servers, each a `JanusRooms` opened while rooms are
//! on it (`servers.rs`).

mod carrier;
pub mod client;
mod errors;
pub mod protocol;
mod room;
mod servers;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::carrier::Carriers;
use self::client::{ClientConfig, JanusClient};
use self::protocol::Auth;
use self::room::{RoomActor, RoomOp};
pub use self::servers::JanusServers;
use crate::base::backoff::Backoff;
use crate::base::secret::Secret;
use crate::config::JanusConfig;
use crate::engine::backend::{BackendEvent, MediaEngine, OpFuture, PeerHandle, RoomBackend};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::servers::ServerName;
use crate::engine::types::{Channel, Direction, RoomId, StreamId, User, UserId};
use crate::peer::TextChannels;

/// Room settings and policies from `[janus]`.
#[derive(Debug, Clone)]
pub struct JanusSettings {
    pub create_rooms: bool,
    pub admin_key: Option<Secret>,
    pub publishers: u32,
    pub bitrate_bps: u64,
}

impl JanusSettings {
    pub fn from_config(config: &JanusConfig) -> Self {
        Self {
            create_rooms: config.create_rooms,
            admin_key: config.admin_key.clone(),
            publishers: config.room.publishers,
            bitrate_bps: u64::from(config.room.bitrate_kbps) * 1000,
        }
    }
}

/// The connection settings from `[janus]`.
pub fn client_config(config: &JanusConfig) -> ClientConfig {
    ClientConfig {
        url: config.url.to_string(),
        auth: Auth {
            apisecret: config.api_secret.clone(),
            token: config.token.clone(),
        },
        ca_file: config.ca_file.clone(),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        keepalive_interval: Duration::from_secs(config.keepalive_interval_s),
        // A Janus that comes back is found within ~2.5 s (2 s ±25 %), leaving the rooms
        // on it time to be flowing again within 5 s of it listening (issue 20); an
        // attempt to a server that is down costs one refused TCP connection.
        reconnect: Backoff::new(Duration::from_millis(250), Duration::from_secs(2)),
    }
}

struct RoomSlot {
    id: u64,
    ops: mpsc::UnboundedSender<RoomOp>,
}

type RoomSlots = Arc<Mutex<HashMap<RoomId, RoomSlot>>>;

/// Which of a room's two Janus rooms this box created (`janus.create_rooms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Created {
    pub video: bool,
    pub text: bool,
}

/// The rooms this box created on Janus, across logins (a room lost and joined again is
/// still ours). They are destroyed when the box leaves them last (`room/login.rs`), so that
/// login/logout loops do not fill a shared Janus; rooms made by others are never touched.
type CreatedRooms = Arc<Mutex<HashMap<RoomId, Created>>>;

/// The engine's [`RoomBackend`] on Janus.
pub struct JanusRooms {
    client: JanusClient,
    settings: Arc<JanusSettings>,
    events: mpsc::Sender<BackendEvent>,
    slots: RoomSlots,
    created: CreatedRooms,
    next_slot: AtomicU64,
    message_ids: Arc<AtomicU64>,
    /// The box's uploads for server-side fan-out on this server.
    carriers: Carriers,
    channels: Arc<dyn TextChannels>,
}

impl JanusRooms {
    /// Connects to Janus (in the background, reconnecting until `shutdown`) and returns
    /// the backend with the receiver of its events, for the engine. `channels` builds the
    /// rooms' TextRoom channels.
    pub fn start(
        config: &JanusConfig,
        channels: Arc<dyn TextChannels>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, mpsc::Receiver<BackendEvent>) {
        let client = JanusClient::start(client_config(config), shutdown);
        Self::with_client(client, JanusSettings::from_config(config), channels)
    }

    pub fn with_client(
        client: JanusClient,
        settings: JanusSettings,
        channels: Arc<dyn TextChannels>,
    ) -> (Arc<Self>, mpsc::Receiver<BackendEvent>) {
        let (events, events_rx) = mpsc::channel(BACKEND_EVENT_BUFFER);
        (
            Self::with_events(client, settings, events, channels),
            events_rx,
        )
    }

    /// One server among several: its events go to `events`, shared by all.
    pub(crate) fn with_events(
        client: JanusClient,
        settings: JanusSettings,
        events: mpsc::Sender<BackendEvent>,
        channels: Arc<dyn TextChannels>,
    ) -> Arc<Self> {
        let first_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let settings = Arc::new(settings);
        let carriers = Carriers::start(client.clone(), settings.clone(), events.clone());
        Arc::new(Self {
            client,
            settings,
            carriers,
            channels,
            events,
            slots: Arc::new(Mutex::new(HashMap::new())),
            created: Arc::new(Mutex::new(HashMap::new())),
            next_slot: AtomicU64::new(1),
            message_ids: Arc::new(AtomicU64::new(first_id)),
        })
    }

    pub fn client(&self) -> &JanusClient {
        &self.client
    }

    /// Shutdown, after the engine left every room and before the session closes: waits
    /// (at most `within`) for the server fan-out's last uploads to be taken down and its
    /// carrier room destroyed.
    pub async fn settle(&self, within: Duration) {
        self.carriers.flush(within).await;
    }

    /// Registers `op` with the room's task (starting one if needed) and returns its
    /// outcome. Registration happens now, so operations keep the caller's order.
    fn submit<T: Send + 'static>(
        &self,
        room: &RoomId,
        make: impl FnOnce(oneshot::Sender<Result<T, BackendError>>) -> RoomOp,
    ) -> OpFuture<T> {
        let (reply, outcome) = oneshot::channel();
        let op = make(reply);
        let sent = match self.slots.lock() {
            Ok(mut slots) => {
                let alive = slots.get(room).is_some_and(|slot| !slot.ops.is_closed());
                if !alive {
                    let (ops_tx, ops) = mpsc::unbounded_channel();
                    let id = self
                        .next_slot
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let actor = RoomActor {
                        room: room.clone(),
                        slot_id: id,
                        client: self.client.clone(),
                        settings: self.settings.clone(),
                        events: self.events.clone(),
                        slots: self.slots.clone(),
                        created: self.created.clone(),
                        ops,
                        message_ids: self.message_ids.clone(),
                        carriers: self.carriers.clone(),
                        channels: self.channels.clone(),
                    };
                    tokio::spawn(actor.run());
                    slots.insert(room.clone(), RoomSlot { id, ops: ops_tx });
                }
                slots
                    .get(room)
                    .is_some_and(|slot| slot.ops.send(op).is_ok())
            }
            Err(_) => false,
        };
        let room = room.clone();
        Box::pin(async move {
            if !sent {
                return Err(BackendError::new(
                    ErrorCode::SFU_UNREACHABLE,
                    format!("room `{room}`'s task is not running"),
                ));
            }
            outcome.await.unwrap_or_else(|_| {
                Err(BackendError::new(
                    ErrorCode::SFU_UNREACHABLE,
                    format!("room `{room}`'s task ended"),
                ))
            })
        })
    }

    /// Like `submit`, but an op for a room with no task is answered `Ok` at once (leaving
    /// something never joined is not an error).
    fn submit_if_known(
        &self,
        room: &RoomId,
        make: impl FnOnce(oneshot::Sender<Result<(), BackendError>>) -> RoomOp,
    ) -> OpFuture<()> {
        let known = self
            .slots
            .lock()
            .map(|s| s.contains_key(room))
            .unwrap_or(false);
        if known {
            self.submit(room, make)
        } else {
            Box::pin(async { Ok(()) })
        }
    }
}

/// Events the backend queues for the engine before its rooms wait.
const BACKEND_EVENT_BUFFER: usize = 1024;

/// One server: `server` is not looked at (every room is on this one).
impl RoomBackend for JanusRooms {
    fn login(
        &self,
        room: &RoomId,
        _server: &ServerName,
        user: &User,
        token: Option<&Secret>,
    ) -> OpFuture<()> {
        let (user, token) = (user.clone(), token.cloned());
        self.submit(room, |reply| RoomOp::Login { user, token, reply })
    }

    fn logout(&self, room: &RoomId) -> OpFuture<()> {
        self.submit_if_known(room, |reply| RoomOp::Logout { reply })
    }

    fn publish(&self, room: &RoomId, stream: &StreamId, peer: PeerHandle) -> OpFuture<()> {
        let stream = stream.clone();
        self.submit(room, |reply| RoomOp::Negotiate {
            direction: Direction::Publish,
            stream,
            peer,
            reply,
        })
    }

    fn publish_relayed(
        &self,
        room: &RoomId,
        stream: &StreamId,
        channel: Channel,
        media: Arc<dyn MediaEngine>,
    ) -> OpFuture<PeerHandle> {
        let stream = stream.clone();
        self.submit(room, |reply| RoomOp::PublishRelayed {
            stream,
            channel,
            media,
            reply,
        })
    }

    fn unpublish(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()> {
        let stream = stream.clone();
        self.submit_if_known(room, |reply| RoomOp::Stop {
            direction: Direction::Publish,
            stream,
            reply,
        })
    }

    fn play(&self, room: &RoomId, stream: &StreamId, peer: PeerHandle) -> OpFuture<()> {
        let stream = stream.clone();
        self.submit(room, |reply| RoomOp::Negotiate {
            direction: Direction::Play,
            stream,
            peer,
            reply,
        })
    }

    fn stop_playing(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()> {
        let stream = stream.clone();
        self.submit_if_known(room, |reply| RoomOp::Stop {
            direction: Direction::Play,
            stream,
            reply,
        })
    }

    fn send_broadcast_message(&self, room: &RoomId, text: &str) -> OpFuture<u64> {
        let text = text.to_owned();
        self.submit(room, |reply| RoomOp::Broadcast { text, reply })
    }

    fn send_custom_command(&self, room: &RoomId, to: &[UserId], text: &str) -> OpFuture<()> {
        let (to, text) = (to.to_vec(), text.to_owned());
        self.submit(room, |reply| RoomOp::Custom { to, text, reply })
    }

    fn network_changed(&self) {
        self.client
            .reconnect("the box's network address changed; connecting again from the new one");
    }
}
