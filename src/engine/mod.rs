//! The room engine: the multi-room rules, their error codes, and the one task that owns
//! which rooms the box is in and what it publishes and plays.
//!
//! Callers hold a cloneable [`EngineHandle`]; each call is a message to the engine task
//! and a reply. The engine never awaits the SFU or the media pipeline itself: it registers
//! an operation with a boundary ([`RoomBackend`], [`MediaEngine`]) and handles the outcome
//! when it comes back, so a slow login never holds up a message to another room.

mod actor;
pub mod allow;
pub mod backend;
pub mod desired;
pub mod error;
pub mod event;
pub mod limits;
pub mod servers;
pub mod snapshot;
pub mod types;

#[cfg(test)]
mod double;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use allow::RoomAllowList;
pub use backend::{BackendEvent, MediaEngine, PeerHandle, RoomBackend, WebRtcPeer};
pub use desired::{DesiredPlay, DesiredPublish, DesiredRoom, DesiredState, RestoreReport};
pub use error::{BackendError, EngineError, ErrorCode};
pub use event::Event;
pub use servers::{Route, ServerName, ServerRoutes};
pub use snapshot::EngineSnapshot;
pub use types::{
    Channel, Fanout, FanoutPolicy, PlayOutput, PlayerState, PublisherState, RoomId, RoomMode,
    RoomState, RoomStateReason, StreamId, UpdateType, User, UserId,
};

use crate::base::backoff::Backoff;
use crate::base::secret::Secret;

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BUFFER: usize = 1024;
/// How many calls may queue for the engine task.
const COMMAND_BUFFER: usize = 256;

/// The rules the engine enforces, fixed when it is built.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub mode: RoomMode,
    pub max_rooms: usize,
    pub multi_room_enabled: bool,
    /// How often each active stream's quality figures go out as events; `None`: never.
    pub quality_interval: Option<Duration>,
    /// `rooms.allowed`: logins to other rooms fail with 1002906.
    pub allowed_rooms: RoomAllowList,
    pub reconnect: ReconnectPolicy,
    /// How published streams reach their rooms (`rooms.fanout`).
    pub fanout: FanoutPolicy,
    /// The configured SFU servers and `rooms.routes`: which server a room is on.
    pub servers: ServerRoutes,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            mode: RoomMode::Single,
            max_rooms: 5,
            multi_room_enabled: false,
            quality_interval: None,
            allowed_rooms: RoomAllowList::any(),
            reconnect: ReconnectPolicy::default(),
            fanout: FanoutPolicy::Device,
            servers: ServerRoutes::default(),
        }
    }
}

/// How a room that lost its SFU connection is logged in again, and how a stream of the
/// desired state (up before, restored, or waiting for its publisher) that failed is
/// restarted.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// Give up on a lost room after this long (ReconnectFailed).
    pub window: Duration,
    pub backoff: Backoff,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
        }
    }
}

/// Builds the engine. The room mode can be chosen here and only here.
pub struct EngineBuilder {
    settings: EngineSettings,
}

impl EngineBuilder {
    pub fn new(settings: EngineSettings) -> Self {
        Self { settings }
    }

    /// Chooses single- or multi-room mode. After [`EngineBuilder::start`] the mode is
    /// fixed and [`EngineHandle::set_room_mode`] refuses changes with 1001020.
    pub fn set_room_mode(&mut self, mode: RoomMode) -> &mut Self {
        self.settings.mode = mode;
        self
    }

    /// Starts the engine task. It runs until `shutdown` is cancelled, then leaves every
    /// room (bounded by a short timeout) and ends.
    pub fn start(
        self,
        backend: Arc<dyn RoomBackend>,
        backend_events: mpsc::Receiver<BackendEvent>,
        media: Arc<dyn MediaEngine>,
        shutdown: CancellationToken,
    ) -> (EngineHandle, JoinHandle<()>) {
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_BUFFER);
        let (events_tx, _) = broadcast::channel(EVENT_BUFFER);
        let (desired_tx, desired_rx) = watch::channel(DesiredState::default());
        let engine = actor::Engine::new(
            self.settings,
            backend,
            media.clone(),
            events_tx.clone(),
            desired_tx,
        );
        let task = tokio::spawn(engine.run(commands_rx, backend_events, shutdown));
        let handle = EngineHandle {
            commands: commands_tx,
            events: events_tx,
            desired: desired_rx,
        };
        (handle, task)
    }
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What a caller asked the engine task to do.
pub(crate) enum Command {
    Login {
        room: RoomId,
        /// The server `login_room` named; `None`: by `rooms.routes`.
        server: Option<ServerName>,
        user: User,
        token: Option<Secret>,
        reply: Reply<()>,
    },
    Logout {
        room: Option<RoomId>,
        reply: Reply<Vec<RoomId>>,
    },
    StartPublishing {
        stream: StreamId,
        room: Option<RoomId>,
        channel: Channel,
        reply: Reply<PublisherState>,
    },
    StopPublishing {
        stream: StreamId,
        reply: Reply<()>,
    },
    StartPlaying {
        stream: StreamId,
        room: Option<RoomId>,
        output: PlayOutput,
        reply: Reply<PlayerState>,
    },
    StopPlaying {
        stream: StreamId,
        reply: Reply<()>,
    },
    Broadcast {
        room: RoomId,
        text: String,
        reply: Reply<u64>,
    },
    Custom {
        room: RoomId,
        to: Vec<UserId>,
        text: String,
        reply: Reply<()>,
    },
    SetRoomMode {
        mode: RoomMode,
        reply: Reply<()>,
    },
    Snapshot {
        reply: oneshot::Sender<EngineSnapshot>,
    },
    /// A reload changed the servers (`changed`) and routes: rooms on those servers are
    /// logged in again where they now belong.
    Reroute {
        servers: ServerRoutes,
        changed: Vec<ServerName>,
        reply: oneshot::Sender<Vec<RoomId>>,
    },
    Restore {
        state: DesiredState,
        reply: oneshot::Sender<RestoreReport>,
    },
    /// Fault injection: the engine task stops serving for `duration`.
    FaultStall {
        duration: Duration,
    },
}

/// Where the publisher of a stream says it goes.
#[derive(Debug, Clone, Default)]
pub struct PublisherConfig {
    /// The room to publish in; required in multi-room mode (1003070 otherwise).
    pub room_id: Option<String>,
}

/// Where a played stream comes from and goes.
#[derive(Debug, Clone, Default)]
pub struct PlayerConfig {
    /// The room the stream is in; required in multi-room mode (1004070 otherwise).
    pub room_id: Option<String>,
    pub output: PlayOutput,
}

/// A cloneable handle to the engine task.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    desired: watch::Receiver<DesiredState>,
}

impl EngineHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        response.await.map_err(|_| EngineError::EngineStopped)?
    }

    /// Logs in to `room_id` as `user`. Resolves once the room is Logined, or with the
    /// reason it could not be (the same code is in the LoginFailed event).
    pub async fn login_room(
        &self,
        room_id: &str,
        user: User,
        token: Option<Secret>,
    ) -> Result<(), EngineError> {
        self.login_room_on(room_id, None, user, token).await
    }

    /// [`EngineHandle::login_room`] on a named server (`None`: the server
    /// `rooms.routes` gives the room). An unconfigured server fails with 1002908.
    pub async fn login_room_on(
        &self,
        room_id: &str,
        server: Option<&str>,
        user: User,
        token: Option<Secret>,
    ) -> Result<(), EngineError> {
        let room = RoomId::parse(room_id)?;
        // A malformed name is not configured either: the engine says which are.
        let server = server
            .map(|name| ServerName::parse(name).unwrap_or_else(|_| ServerName::unconfigured(name)));
        self.call(|reply| Command::Login {
            room,
            server,
            user,
            token,
            reply,
        })
        .await
    }

    /// A reload changed the servers named in `changed` (added, removed or with other
    /// settings) and perhaps the routes: the engine takes `servers` as its new servers
    /// and routes; each room on a changed server is logged in again on the server it
    /// now belongs on (its named server, else by route): `Reconnecting` →
    /// `Reconnected`, its streams back after. A room whose named server is gone is left
    /// (`ReconnectFailed`, 1002908). Rooms on other servers are not touched; new routes
    /// apply to later logins. Resolves to the rooms logged in again.
    pub async fn reroute(
        &self,
        servers: ServerRoutes,
        changed: Vec<ServerName>,
    ) -> Result<Vec<RoomId>, EngineError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Reroute {
                servers,
                changed,
                reply,
            })
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        response.await.map_err(|_| EngineError::EngineStopped)
    }

    /// Leaves `room_id`, or every room when `None`; resolves to the rooms left. Stops the
    /// publishing and playing of exactly those rooms.
    pub async fn logout_room(&self, room_id: Option<&str>) -> Result<Vec<RoomId>, EngineError> {
        let room = room_id.map(RoomId::parse).transpose()?;
        self.call(|reply| Command::Logout { room, reply }).await
    }

    /// Publishes `channel` as `stream_id`. Resolves once Publishing.
    pub async fn start_publishing(
        &self,
        stream_id: &str,
        config: PublisherConfig,
        channel: Channel,
    ) -> Result<PublisherState, EngineError> {
        let stream = StreamId::parse(stream_id)?;
        let room = config.room_id.map(RoomId::parse).transpose()?;
        self.call(|reply| Command::StartPublishing {
            stream,
            room,
            channel,
            reply,
        })
        .await
    }

    pub async fn stop_publishing(&self, stream_id: &str) -> Result<(), EngineError> {
        let stream = StreamId::parse(stream_id)?;
        self.call(|reply| Command::StopPublishing { stream, reply })
            .await
    }

    /// Plays `stream_id`. Resolves once Playing, or PlayRequesting when the stream is not
    /// published in the room yet (it starts playing as soon as it is).
    pub async fn start_playing(
        &self,
        stream_id: &str,
        config: PlayerConfig,
    ) -> Result<PlayerState, EngineError> {
        let stream = StreamId::parse(stream_id)?;
        let room = config.room_id.map(RoomId::parse).transpose()?;
        let output = config.output;
        self.call(|reply| Command::StartPlaying {
            stream,
            room,
            output,
            reply,
        })
        .await
    }

    pub async fn stop_playing(&self, stream_id: &str) -> Result<(), EngineError> {
        let stream = StreamId::parse(stream_id)?;
        self.call(|reply| Command::StopPlaying { stream, reply })
            .await
    }

    /// Sends `text` to everyone in `room_id`; resolves to the message id.
    pub async fn send_broadcast_message(
        &self,
        room_id: &str,
        text: &str,
    ) -> Result<u64, EngineError> {
        types::check_message(text)?;
        let room = RoomId::parse(room_id)?;
        let text = text.to_owned();
        self.call(|reply| Command::Broadcast { room, text, reply })
            .await
    }

    /// Sends a custom command to `to_users` in `room_id` (everyone when empty).
    pub async fn send_custom_command(
        &self,
        room_id: &str,
        to_users: &[String],
        text: &str,
    ) -> Result<(), EngineError> {
        types::check_message(text)?;
        let room = RoomId::parse(room_id)?;
        let to = to_users
            .iter()
            .map(|u| UserId::parse(u.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let text = text.to_owned();
        self.call(|reply| Command::Custom {
            room,
            to,
            text,
            reply,
        })
        .await
    }

    /// The mode is fixed once the engine runs: any change is refused with 1001020.
    pub async fn set_room_mode(&self, mode: RoomMode) -> Result<(), EngineError> {
        self.call(|reply| Command::SetRoomMode { mode, reply })
            .await
    }

    /// The current state. Also proves the engine task is alive and responsive.
    pub async fn state(&self) -> Result<EngineSnapshot, EngineError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Snapshot { reply })
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        response.await.map_err(|_| EngineError::EngineStopped)
    }

    /// Logs in to the rooms of a desired state saved before a restart and starts its
    /// streams again (see [`desired`]). Resolves at once with what is being restored and
    /// what the rules refused; the outcome follows in events (`room_restored`, then the
    /// usual room and stream events).
    pub async fn restore(&self, state: DesiredState) -> Result<RestoreReport, EngineError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::Restore { state, reply })
            .await
            .map_err(|_| EngineError::EngineStopped)?;
        response.await.map_err(|_| EngineError::EngineStopped)
    }

    /// The desired state (see [`desired`]), updated whenever it changes.
    pub fn desired(&self) -> watch::Receiver<DesiredState> {
        self.desired.clone()
    }

    /// Fault injection for tests (the watchdog's): the engine task stops serving anything
    /// for `duration`, as a task stuck on a bug would. Nothing in roomcast calls it except
    /// the test-only fault socket (`service::faults`).
    #[doc(hidden)]
    pub async fn inject_stall(&self, duration: Duration) -> Result<(), EngineError> {
        self.commands
            .send(Command::FaultStall { duration })
            .await
            .map_err(|_| EngineError::EngineStopped)
    }

    /// Every event from now on. A subscriber that falls more than 1024 events behind
    /// gets `RecvError::Lagged` and should re-read [`EngineHandle::state`].
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
