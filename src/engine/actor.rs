//! The engine task: the only owner of rooms, published and played streams.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::future::join_all;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::backend::{
    BackendEvent, MediaEngine, PeerHandle, PeerState, RoomBackend, StreamQuality,
};
use super::desired::{DesiredPlay, DesiredPublish, DesiredRoom, DesiredState, RestoreReport};
use super::error::{BackendError, EngineError, ErrorCode};
use super::event::{Event, StreamInfo, UserInfo};
use super::limits::{MAX_ROOMS, MAX_STREAMS};
use super::servers::{ServerName, ServerRoutes};
use super::snapshot::{EngineSnapshot, PlaySnapshot, PublishSnapshot, RoomSnapshot};
use super::types::{
    Channel, Direction, Fanout, FanoutPolicy, PlayOutput, PlayerState, PublisherState, RoomId,
    RoomMode, RoomState, RoomStateReason, StreamId, UpdateType, User,
};
use super::{Command, EngineSettings, Reply};
use crate::base::secret::Secret;

/// How long shutdown waits for the SFU to confirm that every room was left.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Published and played streams share one lifecycle; the direction says which one an
/// entry is.
type StreamKey = (Direction, StreamId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Requesting,
    Active,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Publish { channel: Channel },
    Play { output: PlayOutput },
}

enum Waiter {
    Publish(Reply<PublisherState>),
    Play(Reply<PlayerState>),
}

impl Waiter {
    fn resolve(self, result: Result<Phase, EngineError>) {
        match self {
            Waiter::Publish(reply) => {
                let _ = reply.send(result.map(publisher_state));
            }
            Waiter::Play(reply) => {
                let _ = reply.send(result.map(player_state));
            }
        }
    }
}

fn publisher_state(phase: Phase) -> PublisherState {
    match phase {
        Phase::Requesting => PublisherState::PublishRequesting,
        Phase::Active => PublisherState::Publishing,
    }
}

fn player_state(phase: Phase) -> PlayerState {
    match phase {
        Phase::Requesting => PlayerState::PlayRequesting,
        Phase::Active => PlayerState::Playing,
    }
}

struct Room {
    state: RoomState,
    /// The SFU server the room is on, resolved at login.
    server: ServerName,
    /// The server `login_room` named (kept in the desired state), if any.
    named_server: Option<ServerName>,
    user: User,
    token: Option<Secret>,
    generation: u64,
    login_waiters: Vec<Reply<()>>,
    /// When the connection was lost, while Reconnecting.
    lost_at: Option<Instant>,
    attempt: u32,
    users: BTreeMap<String, UserInfo>,
    streams: BTreeMap<String, StreamInfo>,
    /// Part of the desired state: the login succeeded once, or the room was restored.
    accepted: bool,
    /// Restored after a restart and not logged in yet: a transient failure is retried
    /// (like a lost room) instead of ending the room.
    restored: bool,
    /// The login carried a token (never kept across restarts).
    had_token: bool,
    /// Reconnecting and waiting out a backoff before logging in again (no login in
    /// flight): a session to its server coming back ends the wait.
    retry_waiting: bool,
}

struct StreamEntry {
    room: RoomId,
    role: Role,
    phase: Phase,
    generation: u64,
    peer: Option<PeerHandle>,
    waiter: Option<Waiter>,
    /// Once up, a failure is retried with backoff instead of ending the stream.
    established: bool,
    attempt: u32,
    /// A played stream that is not published in its room (yet): starts when it appears.
    awaiting_remote: bool,
    /// Part of the desired state: its start was answered ok, or it was restored.
    accepted: bool,
    /// A published stream's fan-out, once decided (`auto` may fall back to `device`).
    fanout: Option<Fanout>,
}

impl StreamEntry {
    /// A stream just asked for: requesting, no peer yet, not yet up or accepted.
    fn requested(room: RoomId, role: Role, waiter: Option<Waiter>) -> Self {
        Self {
            room,
            role,
            phase: Phase::Requesting,
            generation: 0,
            peer: None,
            waiter,
            established: false,
            attempt: 0,
            awaiting_remote: false,
            accepted: false,
            fanout: None,
        }
    }
}

/// What made a peer fail.
#[derive(Debug, Clone, Copy)]
enum FailureCause {
    Connection,
    Media,
    Relay,
}

/// The outcome of work the engine started; handled back on the engine task.
enum Outcome {
    Login {
        room: RoomId,
        generation: u64,
        result: Result<(), BackendError>,
    },
    RetryLogin {
        room: RoomId,
        generation: u64,
    },
    Logout {
        results: Vec<(RoomId, ServerName, Result<(), BackendError>)>,
        reply: Option<Reply<Vec<RoomId>>>,
    },
    PeerOpened {
        key: StreamKey,
        generation: u64,
        result: Result<PeerHandle, BackendError>,
    },
    /// A stream published by server-side fan-out is relayed into its room (or not).
    Relayed {
        key: StreamKey,
        generation: u64,
        result: Result<PeerHandle, BackendError>,
    },
    Negotiated {
        key: StreamKey,
        generation: u64,
        result: Result<(), BackendError>,
    },
    PeerFailed {
        key: StreamKey,
        generation: u64,
        reason: String,
        /// What failed: the connection, the media behind it, or the TURN relay.
        cause: FailureCause,
    },
    RetryStream {
        key: StreamKey,
        generation: u64,
    },
    Done,
}

pub(super) struct Engine {
    settings: EngineSettings,
    backend: Arc<dyn RoomBackend>,
    media: Arc<dyn MediaEngine>,
    events: broadcast::Sender<Event>,
    rooms: BTreeMap<RoomId, Room>,
    /// The identity in use while any room is present (multi-room mode: the same in all).
    user: Option<User>,
    streams: BTreeMap<StreamKey, StreamEntry>,
    ops: JoinSet<Outcome>,
    next_generation: u64,
    /// The desired state, republished whenever it changes (see `desired.rs`).
    desired: watch::Sender<DesiredState>,
}

impl Engine {
    pub(super) fn new(
        settings: EngineSettings,
        backend: Arc<dyn RoomBackend>,
        media: Arc<dyn MediaEngine>,
        events: broadcast::Sender<Event>,
        desired: watch::Sender<DesiredState>,
    ) -> Self {
        let mut settings = settings;
        // The config cannot ask for more (`rooms.max_rooms`); a library caller might.
        settings.max_rooms = settings.max_rooms.min(MAX_ROOMS);
        Self {
            settings,
            backend,
            media,
            events,
            rooms: BTreeMap::new(),
            user: None,
            streams: BTreeMap::new(),
            ops: JoinSet::new(),
            next_generation: 1,
            desired,
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut backend_events: mpsc::Receiver<BackendEvent>,
        shutdown: CancellationToken,
    ) {
        info!(mode = %self.settings.mode, max_rooms = self.settings.max_rooms, "room engine started");
        let mut backend_open = true;
        let mut addresses = self.media.address_changes();
        let mut quality_tick = self.settings.quality_interval.map(|period| {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(_) = async {
                    match quality_tick.as_mut() {
                        Some(tick) => Some(tick.tick().await),
                        None => None,
                    }
                }, if quality_tick.is_some() => self.emit_quality(),
                Some(()) = async {
                    match addresses.as_mut() {
                        Some(changes) => changes.changed().await.ok(),
                        None => None,
                    }
                }, if addresses.is_some() => self.on_address_lost(),
                Some(done) = self.ops.join_next(), if !self.ops.is_empty() => match done {
                    Ok(outcome) => self.on_outcome(outcome),
                    Err(e) if e.is_panic() => warn!("an engine operation panicked: {e}"),
                    Err(_) => {}
                },
                event = backend_events.recv(), if backend_open => match event {
                    Some(event) => self.on_backend_event(event),
                    None => backend_open = false,
                },
                command = commands.recv() => match command {
                    Some(Command::FaultStall { duration }) => {
                        // Fault injection (tests only): the engine task stops serving
                        // anything, as a bug awaiting something that never comes would.
                        warn!(?duration, "fault injection: the room engine stalls");
                        tokio::time::sleep(duration).await;
                        warn!("fault injection: the room engine serves again");
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
            }
            self.publish_desired();
        }
        self.leave_everything().await;
        info!("room engine stopped");
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn emit(&self, event: Event) {
        debug!(event = event.name(), room = %event.room_id(), "event");
        let _ = self.events.send(event);
    }

    /// A room's state change, on the server it is on (`server`: when the room is gone
    /// from the table already, or was never in it).
    fn emit_room_on(
        &self,
        room: &RoomId,
        server: Option<&ServerName>,
        reason: RoomStateReason,
        error: Option<&BackendError>,
    ) {
        self.emit(Event::RoomStateChanged {
            room_id: room.clone(),
            server: server.cloned(),
            reason,
            error_code: error.map_or(ErrorCode::NONE, |e| e.code),
            error_message: error.map(|e| e.message.clone()),
        });
    }

    /// A state change of a room in the table.
    fn emit_room(&self, room: &RoomId, reason: RoomStateReason, error: Option<&BackendError>) {
        let server = self.rooms.get(room).map(|r| r.server.clone());
        self.emit_room_on(room, server.as_ref(), reason, error);
    }

    fn emit_stream(
        &self,
        key: &StreamKey,
        room: &RoomId,
        phase: Option<Phase>,
        error: Option<&BackendError>,
    ) {
        let (stream_id, room_id) = (key.1.clone(), room.clone());
        let error_code = error.map_or(ErrorCode::NONE, |e| e.code);
        let error_message = error.map(|e| e.message.clone());
        self.emit(match key.0 {
            Direction::Publish => Event::PublisherStateUpdate {
                stream_id,
                room_id,
                state: phase.map_or(PublisherState::NoPublish, publisher_state),
                error_code,
                error_message,
            },
            Direction::Play => Event::PlayerStateUpdate {
                stream_id,
                room_id,
                state: phase.map_or(PlayerState::NoPlay, player_state),
                error_code,
                error_message,
            },
        });
    }

    // ---- commands ------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Login {
                room,
                server,
                user,
                token,
                reply,
            } => match self.check_login(&room, server.as_ref(), &user) {
                Ok(resolved) => self.login(room, resolved, server, user, token, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Logout { room, reply } => self.logout(room, reply),
            Command::StartPublishing {
                stream,
                room,
                channel,
                reply,
            } => {
                let checked = self.check_publish(&stream, room, channel);
                match checked {
                    Ok(room) => self.add_stream(
                        (Direction::Publish, stream),
                        room,
                        Role::Publish { channel },
                        Waiter::Publish(reply),
                    ),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::StopPublishing { stream, reply } => {
                self.stop_stream((Direction::Publish, stream), reply)
            }
            Command::StartPlaying {
                stream,
                room,
                output,
                reply,
            } => match self.check_play(&stream, room) {
                Ok(room) => self.add_stream(
                    (Direction::Play, stream),
                    room,
                    Role::Play { output },
                    Waiter::Play(reply),
                ),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::StopPlaying { stream, reply } => {
                self.stop_stream((Direction::Play, stream), reply)
            }
            Command::Broadcast { room, text, reply } => {
                if !self.rooms.contains_key(&room) {
                    let _ = reply.send(Err(EngineError::MessageRoomNotLoggedIn(room)));
                    return;
                }
                let sent = self.backend.send_broadcast_message(&room, &text);
                self.ops.spawn(async move {
                    let _ = reply.send(sent.await.map_err(EngineError::from));
                    Outcome::Done
                });
            }
            Command::Custom {
                room,
                to,
                text,
                reply,
            } => {
                if !self.rooms.contains_key(&room) {
                    let _ = reply.send(Err(EngineError::MessageRoomNotLoggedIn(room)));
                    return;
                }
                let sent = self.backend.send_custom_command(&room, &to, &text);
                self.ops.spawn(async move {
                    let _ = reply.send(sent.await.map_err(EngineError::from));
                    Outcome::Done
                });
            }
            Command::SetRoomMode { mode, reply } => {
                let result = if mode == self.settings.mode {
                    Ok(())
                } else {
                    Err(EngineError::RoomModeFixed {
                        current: self.settings.mode,
                        requested: mode,
                    })
                };
                let _ = reply.send(result);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::Restore { state, reply } => {
                let _ = reply.send(self.restore(state));
            }
            Command::Reroute {
                servers,
                changed,
                reply,
            } => {
                let _ = reply.send(self.reroute(servers, changed));
            }
            // Handled in `run` (it has to hold the task up).
            Command::FaultStall { .. } => {}
        }
    }

    /// The login rules, in the order the reference SDK applies them (the allow-list and
    /// the server first: they are the box's own); resolves the room's server.
    fn check_login(
        &self,
        room: &RoomId,
        server: Option<&ServerName>,
        user: &User,
    ) -> Result<ServerName, EngineError> {
        if !self.settings.allowed_rooms.allows(room) {
            return Err(EngineError::RoomNotAllowed {
                room: room.clone(),
                allowed: self.settings.allowed_rooms.to_string(),
            });
        }
        let server = self.settings.servers.resolve(room, server)?;
        let multi = self.settings.mode == RoomMode::Multi;
        if multi && !self.settings.multi_room_enabled {
            return Err(EngineError::MultiRoomNotEnabled);
        }
        if self.rooms.contains_key(room) {
            return Err(EngineError::AlreadyLoggedIn(room.clone()));
        }
        if !multi {
            if let Some(current) = self.rooms.keys().next() {
                return Err(EngineError::SingleRoomOccupied {
                    current: current.clone(),
                });
            }
            return Ok(server);
        }
        if let Some(current) = &self.user
            && current != user
        {
            return Err(EngineError::UserDiffers {
                current: current.clone(),
                requested: user.clone(),
            });
        }
        if self.rooms.len() >= self.settings.max_rooms {
            return Err(EngineError::TooManyRooms {
                max: self.settings.max_rooms,
            });
        }
        Ok(server)
    }

    fn login(
        &mut self,
        room_id: RoomId,
        server: ServerName,
        named_server: Option<ServerName>,
        user: User,
        token: Option<Secret>,
        reply: Reply<()>,
    ) {
        let generation = self.generation();
        info!(room = %room_id, server = %server, user = %user.user_id, "logging in");
        let login = self.backend.login(&room_id, &server, &user, token.as_ref());
        self.user = Some(user.clone());
        let had_token = token.is_some();
        self.rooms.insert(
            room_id.clone(),
            Room {
                state: RoomState::Logining,
                server,
                named_server,
                user,
                token,
                generation,
                login_waiters: vec![reply],
                lost_at: None,
                attempt: 0,
                users: BTreeMap::new(),
                streams: BTreeMap::new(),
                accepted: false,
                restored: false,
                had_token,
                retry_waiting: false,
            },
        );
        self.emit_room(&room_id, RoomStateReason::Logining, None);
        self.ops.spawn(async move {
            Outcome::Login {
                room: room_id,
                generation,
                result: login.await,
            }
        });
    }

    fn logout(&mut self, room: Option<RoomId>, reply: Reply<Vec<RoomId>>) {
        let rooms: Vec<RoomId> = match room {
            Some(room) if self.rooms.contains_key(&room) => vec![room],
            Some(room) => {
                let _ = reply.send(Err(EngineError::RoomNotLoggedIn(room)));
                return;
            }
            None => self.rooms.keys().cloned().collect(),
        };
        if rooms.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let mut leaving = Vec::new();
        for room in &rooms {
            info!(room = %room, "logging out");
            let server = self
                .remove_room(room, EngineError::RoomNotLoggedIn(room.clone()), None)
                .unwrap_or_default();
            leaving.push((room.clone(), server, self.backend.logout(room)));
        }
        self.ops.spawn(async move {
            let mut results = Vec::new();
            for (room, server, left) in leaving {
                results.push((room, server, left.await));
            }
            Outcome::Logout {
                results,
                reply: Some(reply),
            }
        });
    }

    fn resolve_room(
        &self,
        room: Option<RoomId>,
        missing: EngineError,
    ) -> Result<RoomId, EngineError> {
        match room {
            Some(room) if self.rooms.contains_key(&room) => Ok(room),
            Some(room) => Err(EngineError::RoomNotLoggedIn(room)),
            None if self.settings.mode == RoomMode::Multi => Err(missing),
            None => self
                .rooms
                .keys()
                .next()
                .cloned()
                .ok_or(EngineError::NoRoomLoggedIn),
        }
    }

    fn check_publish(
        &self,
        stream: &StreamId,
        room: Option<RoomId>,
        channel: Channel,
    ) -> Result<RoomId, EngineError> {
        let room = self.resolve_room(room, EngineError::PublishRoomRequired(stream.clone()))?;
        if let Some(entry) = self.streams.get(&(Direction::Publish, stream.clone())) {
            return Err(EngineError::StreamIdInUse {
                stream: stream.clone(),
                room: entry.room.clone(),
            });
        }
        self.check_stream_count()?;
        let busy = self.streams.iter().find(|((kind, _), entry)| {
            *kind == Direction::Publish
                && entry.room == room
                && matches!(entry.role, Role::Publish { channel: c } if c == channel)
        });
        if let Some(((_, other), _)) = busy {
            return Err(EngineError::ChannelBusy {
                channel,
                room,
                stream: other.clone(),
            });
        }
        Ok(room)
    }

    fn check_play(&self, stream: &StreamId, room: Option<RoomId>) -> Result<RoomId, EngineError> {
        let room = self.resolve_room(room, EngineError::PlayRoomRequired(stream.clone()))?;
        if let Some(entry) = self.streams.get(&(Direction::Play, stream.clone())) {
            return Err(EngineError::AlreadyPlaying {
                stream: stream.clone(),
                room: entry.room.clone(),
            });
        }
        self.check_stream_count()?;
        Ok(room)
    }

    /// One stream more must still fit in the state file (`limits.rs`).
    fn check_stream_count(&self) -> Result<(), EngineError> {
        if self.streams.len() >= MAX_STREAMS {
            return Err(EngineError::TooManyStreams { max: MAX_STREAMS });
        }
        Ok(())
    }

    fn add_stream(&mut self, key: StreamKey, room: RoomId, role: Role, waiter: Waiter) {
        info!(room = %room, stream = %key.1, kind = ?key.0, "stream requested");
        let room_ready = self
            .rooms
            .get(&room)
            .is_some_and(|r| r.state == RoomState::Logined);
        self.streams.insert(
            key.clone(),
            StreamEntry::requested(room.clone(), role, Some(waiter)),
        );
        self.emit_stream(&key, &room, Some(Phase::Requesting), None);
        if room_ready {
            self.begin_stream(&key);
        }
    }

    fn stop_stream(&mut self, key: StreamKey, reply: Reply<()>) {
        let Some(mut entry) = self.streams.remove(&key) else {
            let stream = key.1;
            let _ = reply.send(Err(match key.0 {
                Direction::Publish => EngineError::NotPublishing(stream),
                Direction::Play => EngineError::NotPlaying(stream),
            }));
            return;
        };
        info!(room = %entry.room, stream = %key.1, kind = ?key.0, "stream stopped");
        if let Some(waiter) = entry.waiter.take() {
            waiter.resolve(Err(EngineError::InvalidParameter(format!(
                "starting stream `{}` was cancelled by a stop request",
                key.1
            ))));
        }
        self.emit_stream(&key, &entry.room, None, None);
        let released = self.release_remote(&key, &entry.room);
        let peer = entry.peer.take();
        self.ops.spawn(async move {
            let result = released.await;
            if let Some(peer) = peer {
                peer.close().await;
            }
            let _ = reply.send(result.map_err(EngineError::from));
            Outcome::Done
        });
    }

    /// Registers the SFU-side teardown of one stream.
    fn release_remote(&self, key: &StreamKey, room: &RoomId) -> super::backend::OpFuture<()> {
        match key.0 {
            Direction::Publish => self.backend.unpublish(room, &key.1),
            Direction::Play => self.backend.stop_playing(room, &key.1),
        }
    }

    // ---- stream lifecycle -------------------------------------------------------

    /// Opens a media peer for the stream; negotiation follows in `on_peer_opened`.
    fn begin_stream(&mut self, key: &StreamKey) {
        let generation = self.generation();
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        entry.awaiting_remote = false;
        if let Role::Publish { channel } = entry.role {
            let fanout = match (self.settings.fanout, entry.fanout) {
                (FanoutPolicy::Device, _) | (FanoutPolicy::Auto, Some(Fanout::Device)) => {
                    Fanout::Device
                }
                (FanoutPolicy::Server | FanoutPolicy::Auto, _) => Fanout::Server,
            };
            entry.fanout = Some(fanout);
            if fanout == Fanout::Server {
                let relayed =
                    self.backend
                        .publish_relayed(&entry.room, &key.1, channel, self.media.clone());
                let key = key.clone();
                self.ops.spawn(async move {
                    Outcome::Relayed {
                        key,
                        generation,
                        result: relayed.await,
                    }
                });
                return;
            }
        }
        let (media, room, role, key) = (
            self.media.clone(),
            entry.room.clone(),
            entry.role,
            key.clone(),
        );
        self.ops.spawn(async move {
            let result = match role {
                Role::Publish { channel } => media.open_publisher(&room, &key.1, channel).await,
                Role::Play { output } => media.open_player(&room, &key.1, output).await,
            };
            Outcome::PeerOpened {
                key,
                generation,
                result,
            }
        });
    }

    fn current(&self, key: &StreamKey, generation: u64) -> bool {
        self.streams
            .get(key)
            .is_some_and(|e| e.generation == generation)
    }

    fn on_peer_opened(
        &mut self,
        key: StreamKey,
        generation: u64,
        result: Result<PeerHandle, BackendError>,
    ) {
        if !self.current(&key, generation) {
            if let Ok(peer) = result {
                self.close_peer(peer);
            }
            return;
        }
        let peer = match result {
            Ok(peer) => peer,
            Err(e) => return self.stream_failed(&key, e),
        };
        let Some(entry) = self.streams.get_mut(&key) else {
            return;
        };
        entry.peer = Some(peer.clone());
        let negotiated = match key.0 {
            Direction::Publish => self.backend.publish(&entry.room, &key.1, peer),
            Direction::Play => self.backend.play(&entry.room, &key.1, peer),
        };
        self.ops.spawn(async move {
            Outcome::Negotiated {
                key,
                generation,
                result: negotiated.await,
            }
        });
    }

    /// Server-side fan-out: the relay is up (the peer is a view of the shared upload), or
    /// it failed; under `auto`, a server that cannot relay means `device` for the stream.
    fn on_relayed(
        &mut self,
        key: StreamKey,
        generation: u64,
        result: Result<PeerHandle, BackendError>,
    ) {
        if !self.current(&key, generation) {
            return;
        }
        match result {
            Ok(peer) => {
                if let Some(entry) = self.streams.get_mut(&key) {
                    entry.peer = Some(peer);
                }
                self.on_negotiated(key, generation, Ok(()));
            }
            Err(e)
                if e.code == ErrorCode::PUBLISH_FANOUT_UNSUPPORTED
                    && self.settings.fanout == FanoutPolicy::Auto =>
            {
                info!(stream = %key.1, "server fan-out not possible, publishing from the box: {}", e.message);
                if let Some(entry) = self.streams.get_mut(&key) {
                    entry.fanout = Some(Fanout::Device);
                }
                self.begin_stream(&key);
            }
            Err(e) => self.stream_failed(&key, e),
        }
    }

    fn on_negotiated(&mut self, key: StreamKey, generation: u64, result: Result<(), BackendError>) {
        if !self.current(&key, generation) {
            return;
        }
        if let Err(e) = result {
            return self.stream_failed(&key, e);
        }
        let Some(entry) = self.streams.get_mut(&key) else {
            return;
        };
        entry.phase = Phase::Active;
        entry.established = true;
        entry.accepted = true;
        entry.attempt = 0;
        let waiter = entry.waiter.take();
        let room = entry.room.clone();
        let peer = entry.peer.clone();
        info!(room = %room, stream = %key.1, kind = ?key.0, "stream up");
        self.emit_stream(&key, &room, Some(Phase::Active), None);
        if let Some(waiter) = waiter {
            waiter.resolve(Ok(Phase::Active));
        }
        if let Some(peer) = peer {
            self.watch_peer(key, generation, peer);
        }
    }

    /// Turns a peer's failure into an outcome on the engine task.
    fn watch_peer(&mut self, key: StreamKey, generation: u64, peer: PeerHandle) {
        let mut state = peer.state();
        self.ops.spawn(async move {
            loop {
                let current = state.borrow_and_update().clone();
                match current {
                    PeerState::Failed(reason) => {
                        return Outcome::PeerFailed {
                            key,
                            generation,
                            reason,
                            cause: FailureCause::Connection,
                        };
                    }
                    PeerState::MediaFailed(reason) => {
                        return Outcome::PeerFailed {
                            key,
                            generation,
                            reason,
                            cause: FailureCause::Media,
                        };
                    }
                    PeerState::RelayFailed(reason) => {
                        return Outcome::PeerFailed {
                            key,
                            generation,
                            reason,
                            cause: FailureCause::Relay,
                        };
                    }
                    PeerState::Closed => return Outcome::Done,
                    _ => {}
                }
                if state.changed().await.is_err() {
                    return Outcome::Done;
                }
            }
        });
    }

    fn close_peer(&mut self, peer: PeerHandle) {
        self.ops.spawn(async move {
            peer.close().await;
            Outcome::Done
        });
    }

    /// A stream's start or its running peer failed: end it, or retry it if it was up
    /// before (a source that failed mid-stream, a lost connection).
    fn stream_failed(&mut self, key: &StreamKey, error: BackendError) {
        let generation = self.generation();
        let released = match self.streams.get(key) {
            Some(entry) => self.release_remote(key, &entry.room),
            None => return,
        };
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        let peer = entry.peer.take();
        let room = entry.room.clone();
        warn!(room = %room, stream = %key.1, kind = ?key.0, code = %error.code, "stream failed: {}", error.message);
        self.ops.spawn(async move {
            let _ = released.await;
            if let Some(peer) = peer {
                peer.close().await;
            }
            Outcome::Done
        });

        let not_published =
            key.0 == Direction::Play && error.code == ErrorCode::PLAY_STREAM_NOT_FOUND;
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        if not_published {
            // Play it as soon as it is published (the reference SDK does the same).
            entry.phase = Phase::Requesting;
            entry.awaiting_remote = true;
            entry.accepted = true;
            let waiter = entry.waiter.take();
            let listed = self
                .rooms
                .get(&room)
                .is_some_and(|r| r.streams.contains_key(key.1.as_str()));
            self.emit_stream(key, &room, Some(Phase::Requesting), Some(&error));
            if let Some(waiter) = waiter {
                waiter.resolve(Ok(Phase::Requesting));
            }
            if listed {
                self.schedule_stream_retry(key);
            }
        } else if entry.established {
            entry.phase = Phase::Requesting;
            self.emit_stream(key, &room, Some(Phase::Requesting), Some(&error));
            self.schedule_stream_retry(key);
        } else {
            let waiter = entry.waiter.take();
            self.streams.remove(key);
            self.emit_stream(key, &room, None, Some(&error));
            if let Some(waiter) = waiter {
                waiter.resolve(Err(error.into()));
            }
        }
    }

    fn schedule_stream_retry(&mut self, key: &StreamKey) {
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        let delay = self.settings.reconnect.backoff(entry.attempt);
        entry.attempt = entry.attempt.saturating_add(1);
        let (key, generation) = (key.clone(), entry.generation);
        debug!(stream = %key.1, ?delay, "stream retry scheduled");
        self.ops.spawn(async move {
            tokio::time::sleep(delay).await;
            Outcome::RetryStream { key, generation }
        });
    }

    /// Stops a stream's peer without ending the stream (its room is reconnecting).
    fn suspend_stream(&mut self, key: &StreamKey, error: &BackendError) {
        let generation = self.generation();
        let Some(entry) = self.streams.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        let was_active = entry.phase == Phase::Active;
        entry.phase = Phase::Requesting;
        let peer = entry.peer.take();
        let room = entry.room.clone();
        if let Some(peer) = peer {
            self.close_peer(peer);
        }
        if was_active {
            self.emit_stream(key, &room, Some(Phase::Requesting), Some(error));
        }
    }

    fn room_streams(&self, room: &RoomId) -> Vec<StreamKey> {
        self.streams
            .iter()
            .filter(|(_, e)| &e.room == room)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Removes a room and ends its streams; returns the server it was on. The SFU side
    /// is the caller's business.
    fn remove_room(
        &mut self,
        room_id: &RoomId,
        cancelled: EngineError,
        error: Option<&BackendError>,
    ) -> Option<ServerName> {
        let room = self.rooms.remove(room_id)?;
        for waiter in room.login_waiters {
            let _ = waiter.send(Err(match error {
                Some(e) => e.clone().into(),
                None => EngineError::LoginCancelled(room_id.clone()),
            }));
        }
        for key in self.room_streams(room_id) {
            if let Some(mut entry) = self.streams.remove(&key) {
                if let Some(waiter) = entry.waiter.take() {
                    waiter.resolve(Err(cancelled.clone()));
                }
                if let Some(peer) = entry.peer.take() {
                    self.close_peer(peer);
                }
                self.emit_stream(&key, room_id, None, error);
            }
        }
        if self.rooms.is_empty() {
            self.user = None;
        }
        Some(room.server)
    }

    // ---- outcomes ------------------------------------------------------------------

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Login {
                room,
                generation,
                result,
            } => self.on_login(room, generation, result),
            Outcome::RetryLogin { room, generation } => {
                let Some(entry) = self.rooms.get(&room) else {
                    return;
                };
                if entry.generation != generation || entry.state != RoomState::Reconnecting {
                    return;
                }
                if let Some(room) = self.rooms.get_mut(&room) {
                    room.retry_waiting = false;
                }
                let Some(entry) = self.rooms.get(&room) else {
                    return;
                };
                debug!(room = %room, server = %entry.server, attempt = entry.attempt, "logging in again");
                let login =
                    self.backend
                        .login(&room, &entry.server, &entry.user, entry.token.as_ref());
                self.ops.spawn(async move {
                    Outcome::Login {
                        room,
                        generation,
                        result: login.await,
                    }
                });
            }
            Outcome::Logout { results, reply } => {
                let mut first_error = None;
                let mut left = Vec::new();
                for (room, server, result) in results {
                    match result {
                        Ok(()) => {
                            info!(room = %room, "logged out");
                            self.emit_room_on(&room, Some(&server), RoomStateReason::Logout, None);
                        }
                        Err(e) => {
                            warn!(room = %room, code = %e.code, "the SFU did not confirm the logout (the room is left here regardless): {}", e.message);
                            self.emit_room_on(
                                &room,
                                Some(&server),
                                RoomStateReason::LogoutFailed,
                                Some(&e),
                            );
                            first_error.get_or_insert(e);
                        }
                    }
                    left.push(room);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(match first_error {
                        Some(e) => Err(e.into()),
                        None => Ok(left),
                    });
                }
            }
            Outcome::PeerOpened {
                key,
                generation,
                result,
            } => self.on_peer_opened(key, generation, result),
            Outcome::Relayed {
                key,
                generation,
                result,
            } => self.on_relayed(key, generation, result),
            Outcome::Negotiated {
                key,
                generation,
                result,
            } => self.on_negotiated(key, generation, result),
            Outcome::PeerFailed {
                key,
                generation,
                reason,
                cause,
            } => {
                if self.current(&key, generation) {
                    let code = match (key.0, cause) {
                        (Direction::Publish, FailureCause::Media) => {
                            ErrorCode::PUBLISH_MEDIA_FAILED
                        }
                        (Direction::Publish, FailureCause::Relay) => {
                            ErrorCode::PUBLISH_RELAY_FAILED
                        }
                        (Direction::Publish, FailureCause::Connection) => {
                            ErrorCode::PUBLISH_WEBRTC_FAILED
                        }
                        (Direction::Play, FailureCause::Relay) => ErrorCode::PLAY_RELAY_FAILED,
                        (Direction::Play, _) => ErrorCode::PLAY_WEBRTC_FAILED,
                    };
                    self.stream_failed(&key, BackendError::new(code, reason));
                }
            }
            Outcome::RetryStream { key, generation } => {
                if !self.current(&key, generation) {
                    return;
                }
                let ready = self.streams.get(&key).is_some_and(|e| {
                    self.rooms
                        .get(&e.room)
                        .is_some_and(|r| r.state == RoomState::Logined)
                });
                if ready {
                    self.begin_stream(&key);
                }
            }
            Outcome::Done => {}
        }
    }

    fn on_login(&mut self, room_id: RoomId, generation: u64, result: Result<(), BackendError>) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.generation != generation {
            return;
        }
        let reconnecting = room.state == RoomState::Reconnecting;
        match result {
            Ok(()) => {
                room.state = RoomState::Logined;
                room.lost_at = None;
                room.attempt = 0;
                room.accepted = true;
                room.restored = false;
                let waiters = std::mem::take(&mut room.login_waiters);
                let reason = if reconnecting {
                    info!(room = %room_id, "reconnected");
                    RoomStateReason::Reconnected
                } else {
                    info!(room = %room_id, "logged in");
                    RoomStateReason::Logined
                };
                self.emit_room(&room_id, reason, None);
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
                for key in self.room_streams(&room_id) {
                    let idle = self
                        .streams
                        .get(&key)
                        .is_some_and(|e| e.peer.is_none() && !e.awaiting_remote);
                    if idle {
                        self.begin_stream(&key);
                    }
                }
            }
            Err(e) if !reconnecting && room.restored && !ends_restore(&e) => {
                // The SFU is not reachable yet after a restart (the box booted before the
                // network, or Janus still holds our previous session): keep trying, as
                // for a lost room, within the reconnect window.
                room.state = RoomState::Reconnecting;
                room.attempt = 1;
                room.retry_waiting = true;
                let delay = self.settings.reconnect.backoff(0);
                warn!(room = %room_id, code = %e.code, ?delay, "the restored room cannot be joined yet, retrying: {}", e.message);
                self.emit_room(&room_id, RoomStateReason::Reconnecting, Some(&e));
                self.ops.spawn(async move {
                    tokio::time::sleep(delay).await;
                    Outcome::RetryLogin {
                        room: room_id,
                        generation,
                    }
                });
            }
            Err(e) if !reconnecting => {
                let e = if room.restored && room.had_token && e.code == ErrorCode::ROOM_AUTH_FAILED
                {
                    BackendError::new(
                        e.code,
                        format!(
                            "{} — room `{room_id}` was joined with a token (room pin), which roomcast never stores: send login_room with the token again",
                            e.message
                        ),
                    )
                } else {
                    e
                };
                warn!(room = %room_id, code = %e.code, "login failed: {}", e.message);
                let server = self.remove_room(&room_id, e.clone().into(), Some(&e));
                self.emit_room_on(
                    &room_id,
                    server.as_ref(),
                    RoomStateReason::LoginFailed,
                    Some(&e),
                );
            }
            Err(e) => {
                let lost_for = room.lost_at.map_or(Duration::ZERO, |t| t.elapsed());
                let window = self
                    .settings
                    .servers
                    .reconnect_window(&room.server)
                    .unwrap_or(self.settings.reconnect.window);
                if lost_for >= window {
                    let failed = BackendError::new(
                        ErrorCode::SFU_RECONNECT_FAILED,
                        format!(
                            "could not reconnect to room `{room_id}` within {} s (last error {}: {}); the room was left",
                            window.as_secs(),
                            e.code,
                            e.message
                        ),
                    );
                    warn!(room = %room_id, "{}", failed.message);
                    let server = self.remove_room(&room_id, failed.clone().into(), Some(&failed));
                    self.emit_room_on(
                        &room_id,
                        server.as_ref(),
                        RoomStateReason::ReconnectFailed,
                        Some(&failed),
                    );
                    let left = self.backend.logout(&room_id);
                    self.ops.spawn(async move {
                        let _ = left.await;
                        Outcome::Done
                    });
                } else {
                    let delay = self.settings.reconnect.backoff(room.attempt);
                    room.attempt = room.attempt.saturating_add(1);
                    room.retry_waiting = true;
                    debug!(room = %room_id, code = %e.code, ?delay, "login again failed: {}", e.message);
                    self.ops.spawn(async move {
                        tokio::time::sleep(delay).await;
                        Outcome::RetryLogin {
                            room: room_id,
                            generation,
                        }
                    });
                }
            }
        }
    }

    // ---- backend events ------------------------------------------------------------

    fn on_backend_event(&mut self, event: BackendEvent) {
        match event {
            BackendEvent::Users {
                room,
                update,
                users,
            } => {
                let Some(entry) = self.rooms.get_mut(&room) else {
                    return;
                };
                for user in &users {
                    match update {
                        UpdateType::Add => {
                            entry.users.insert(user.user_id.clone(), user.clone());
                        }
                        UpdateType::Delete => {
                            entry.users.remove(&user.user_id);
                        }
                    }
                }
                self.emit(Event::RoomUserUpdate {
                    room_id: room,
                    update_type: update,
                    users,
                });
            }
            BackendEvent::Streams {
                room,
                update,
                streams,
            } => self.on_remote_streams(room, update, streams),
            BackendEvent::BroadcastMessage { room, message } => {
                if self.rooms.contains_key(&room) {
                    self.emit(Event::BroadcastMessage {
                        room_id: room,
                        messages: vec![message],
                    });
                }
            }
            BackendEvent::CustomCommand {
                room,
                from_user,
                command,
            } => {
                if self.rooms.contains_key(&room) {
                    self.emit(Event::CustomCommand {
                        room_id: room,
                        from_user,
                        command,
                    });
                }
            }
            BackendEvent::RoomLost { room, reason } => self.on_room_lost(room, reason),
            BackendEvent::StreamLost {
                room,
                stream,
                direction,
                reason,
            } => {
                let code = match direction {
                    Direction::Publish => ErrorCode::PUBLISH_WEBRTC_FAILED,
                    Direction::Play => ErrorCode::PLAY_WEBRTC_FAILED,
                };
                let key = (direction, stream);
                // Only an active stream in that room: a report about an older attempt
                // must not end the one in progress.
                let active = self
                    .streams
                    .get(&key)
                    .is_some_and(|e| e.room == room && e.phase == Phase::Active);
                if active {
                    self.stream_failed(&key, BackendError::new(code, reason));
                }
            }
            BackendEvent::ServerConnected { server } => self.on_server_connected(&server),
            BackendEvent::KickedOut { room, error } => {
                if !self.rooms.contains_key(&room) {
                    return;
                }
                warn!(room = %room, code = %error.code, "removed from the room: {}", error.message);
                let server = self.remove_room(&room, error.clone().into(), Some(&error));
                self.emit_room_on(
                    &room,
                    server.as_ref(),
                    RoomStateReason::KickOut,
                    Some(&error),
                );
                let left = self.backend.logout(&room);
                self.ops.spawn(async move {
                    let _ = left.await;
                    Outcome::Done
                });
            }
        }
    }

    fn on_remote_streams(&mut self, room_id: RoomId, update: UpdateType, streams: Vec<StreamInfo>) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        for stream in &streams {
            match update {
                UpdateType::Add => {
                    room.streams
                        .insert(stream.stream_id.clone(), stream.clone());
                }
                UpdateType::Delete => {
                    room.streams.remove(&stream.stream_id);
                }
            }
        }
        let room_ready = room.state == RoomState::Logined;
        self.emit(Event::RoomStreamUpdate {
            room_id: room_id.clone(),
            update_type: update,
            streams: streams.clone(),
        });
        for stream in streams {
            let Ok(stream_id) = StreamId::parse(stream.stream_id) else {
                continue;
            };
            let key = (Direction::Play, stream_id);
            let Some(entry) = self.streams.get(&key) else {
                continue;
            };
            if entry.room != room_id {
                continue;
            }
            match update {
                UpdateType::Add if entry.awaiting_remote && room_ready => self.begin_stream(&key),
                UpdateType::Delete => {
                    let gone = BackendError::new(
                        ErrorCode::PLAY_STREAM_NOT_FOUND,
                        format!(
                            "stream `{}` is no longer published in room `{room_id}`; it plays again when it is",
                            key.1
                        ),
                    );
                    self.suspend_stream(&key, &gone);
                    if let Some(entry) = self.streams.get_mut(&key) {
                        entry.awaiting_remote = true;
                    }
                    let released = self.backend.stop_playing(&room_id, &key.1);
                    self.ops.spawn(async move {
                        let _ = released.await;
                        Outcome::Done
                    });
                }
                UpdateType::Add => {}
            }
        }
    }

    /// A session to `server` is up: rooms on it waiting out a backoff log in now (a new
    /// generation: the sleeping retry is dropped when it wakes).
    fn on_server_connected(&mut self, server: &ServerName) {
        let waiting: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, r)| {
                &r.server == server && r.state == RoomState::Reconnecting && r.retry_waiting
            })
            .map(|(id, _)| id.clone())
            .collect();
        for room_id in waiting {
            let generation = self.generation();
            if let Some(room) = self.rooms.get_mut(&room_id) {
                room.generation = generation;
                room.retry_waiting = false;
            }
            debug!(room = %room_id, server = %server, "the server is reachable again: logging in now");
            self.ops.spawn(async move {
                Outcome::RetryLogin {
                    room: room_id,
                    generation,
                }
            });
        }
    }

    fn on_room_lost(&mut self, room_id: RoomId, reason: String) {
        let generation = self.generation();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if room.state != RoomState::Logined {
            // A login in flight reports its own failure; a reconnect is already running.
            return;
        }
        room.state = RoomState::Reconnecting;
        room.generation = generation;
        room.lost_at = Some(Instant::now());
        room.attempt = 1;
        room.retry_waiting = true;
        room.users.clear();
        room.streams.clear();
        let error = BackendError::new(ErrorCode::SFU_UNREACHABLE, reason);
        warn!(room = %room_id, "connection to the room lost, reconnecting: {}", error.message);
        self.emit_room(&room_id, RoomStateReason::Reconnecting, Some(&error));
        for key in self.room_streams(&room_id) {
            self.suspend_stream(&key, &error);
            if let Some(entry) = self.streams.get_mut(&key) {
                entry.awaiting_remote = false;
            }
        }
        let delay = self.settings.reconnect.backoff(0);
        self.ops.spawn(async move {
            tokio::time::sleep(delay).await;
            Outcome::RetryLogin {
                room: room_id,
                generation,
            }
        });
    }

    // ---- servers changed by a reload ------------------------------------------------

    fn reroute(&mut self, servers: ServerRoutes, changed: Vec<ServerName>) -> Vec<RoomId> {
        self.settings.servers = servers;
        let affected: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, room)| changed.contains(&room.server))
            .map(|(id, _)| id.clone())
            .collect();
        let mut moved = Vec::new();
        for room_id in affected {
            let Some(room) = self.rooms.get(&room_id) else {
                continue;
            };
            let named = room.named_server.clone();
            match self.settings.servers.resolve(&room_id, named.as_ref()) {
                Ok(server) => {
                    self.rehome(&room_id, server);
                    moved.push(room_id);
                }
                Err(e) => {
                    let error = BackendError::new(
                        e.code(),
                        format!(
                            "room `{room_id}` was left: the server it was logged in to is no longer configured ({e})"
                        ),
                    );
                    warn!(room = %room_id, code = %error.code, "{}", error.message);
                    let server = self.remove_room(&room_id, error.clone().into(), Some(&error));
                    self.emit_room_on(
                        &room_id,
                        server.as_ref(),
                        RoomStateReason::ReconnectFailed,
                        Some(&error),
                    );
                    let left = self.backend.logout(&room_id);
                    self.ops.spawn(async move {
                        let _ = left.await;
                        Outcome::Done
                    });
                }
            }
        }
        moved
    }

    /// Logs `room_id` out of its server and in again on `server` (the same one, with
    /// new settings, or another), as after a lost connection: `Reconnecting`, its
    /// streams suspended and started again once it is back.
    fn rehome(&mut self, room_id: &RoomId, server: ServerName) {
        let generation = self.generation();
        let left = self.backend.logout(room_id);
        self.ops.spawn(async move {
            let _ = left.await;
            Outcome::Done
        });
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        info!(room = %room_id, from = %room.server, to = %server, "the room's server changed: logging in again");
        room.state = RoomState::Reconnecting;
        room.generation = generation;
        room.lost_at = Some(Instant::now());
        room.attempt = 1;
        room.users.clear();
        room.streams.clear();
        room.server = server;
        self.emit_room(room_id, RoomStateReason::Reconnecting, None);
        let error = BackendError::new(
            ErrorCode::SFU_UNREACHABLE,
            format!("room `{room_id}` moves to another Janus session (reload)"),
        );
        for key in self.room_streams(room_id) {
            self.suspend_stream(&key, &error);
            if let Some(entry) = self.streams.get_mut(&key) {
                entry.awaiting_remote = false;
            }
        }
        let room = room_id.clone();
        self.ops
            .spawn(async move { Outcome::RetryLogin { room, generation } });
    }

    // ---- desired state and restore ---------------------------------------------------

    /// The rooms and streams that are part of the desired state (see `desired.rs`).
    fn desired_now(&self) -> DesiredState {
        let rooms: Vec<DesiredRoom> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.accepted)
            .map(|(id, room)| DesiredRoom {
                room_id: id.clone(),
                user: room.user.clone(),
                server: room.named_server.clone(),
                had_token: room.had_token,
            })
            .collect();
        let in_desired_room = |room: &RoomId| rooms.iter().any(|r| &r.room_id == room);
        let mut publishing = Vec::new();
        let mut playing = Vec::new();
        for ((kind, stream), entry) in &self.streams {
            if !entry.accepted || !in_desired_room(&entry.room) {
                continue;
            }
            match (kind, entry.role) {
                (Direction::Publish, Role::Publish { channel }) => {
                    publishing.push(DesiredPublish {
                        stream_id: stream.clone(),
                        room_id: entry.room.clone(),
                        channel,
                    })
                }
                (Direction::Play, Role::Play { output }) => playing.push(DesiredPlay {
                    stream_id: stream.clone(),
                    room_id: entry.room.clone(),
                    output,
                }),
                _ => {}
            }
        }
        DesiredState {
            rooms,
            publishing,
            playing,
        }
    }

    fn publish_desired(&self) {
        let now = self.desired_now();
        self.desired.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            *current = now;
            true
        });
    }

    /// Takes up a desired state saved before a restart: every room is logged in again
    /// and every stream started again once its room is in, under the same rules as the
    /// commands (the configuration may have changed since). Restored rooms retry
    /// transient failures; restored streams retry failures with backoff, as streams that
    /// were up do (a camera still unplugged at boot keeps being retried).
    fn restore(&mut self, state: DesiredState) -> RestoreReport {
        let mut report = RestoreReport::default();
        let now = Instant::now();
        for DesiredRoom {
            room_id,
            user,
            server: named_server,
            had_token,
        } in state.rooms
        {
            let checked = self.check_login(&room_id, named_server.as_ref(), &user);
            let server = match checked {
                Ok(server) => server,
                Err(e) => {
                    let error = BackendError::new(
                        e.code(),
                        format!("room `{room_id}` was not restored after the restart: {e}"),
                    );
                    warn!(room = %room_id, code = %error.code, "{}", error.message);
                    self.emit_room_on(
                        &room_id,
                        named_server.as_ref(),
                        RoomStateReason::LoginFailed,
                        Some(&error),
                    );
                    report
                        .refused
                        .push(format!("room {room_id}: {} ({})", e, e.code()));
                    continue;
                }
            };
            let generation = self.generation();
            info!(room = %room_id, server = %server, user = %user.user_id, "restoring the room: logging in");
            let login = self.backend.login(&room_id, &server, &user, None);
            self.user = Some(user.clone());
            self.rooms.insert(
                room_id.clone(),
                Room {
                    state: RoomState::Logining,
                    server: server.clone(),
                    named_server,
                    user,
                    token: None,
                    generation,
                    login_waiters: Vec::new(),
                    lost_at: Some(now),
                    attempt: 0,
                    users: BTreeMap::new(),
                    streams: BTreeMap::new(),
                    accepted: true,
                    restored: true,
                    had_token,
                    retry_waiting: false,
                },
            );
            let publishing = state
                .publishing
                .iter()
                .filter(|p| p.room_id == room_id)
                .map(|p| p.stream_id.clone())
                .collect();
            let playing = state
                .playing
                .iter()
                .filter(|p| p.room_id == room_id)
                .map(|p| p.stream_id.clone())
                .collect();
            self.emit(Event::RoomRestored {
                room_id: room_id.clone(),
                server,
                publishing,
                playing,
            });
            self.emit_room(&room_id, RoomStateReason::Logining, None);
            report.rooms.push(room_id.clone());
            self.ops.spawn(async move {
                Outcome::Login {
                    room: room_id,
                    generation,
                    result: login.await,
                }
            });
        }
        // Checked one by one: each restored stream is seen by the next one's check.
        let publishing = state.publishing.into_iter().map(|p| {
            (
                (Direction::Publish, p.stream_id),
                p.room_id,
                Role::Publish { channel: p.channel },
            )
        });
        let playing = state.playing.into_iter().map(|p| {
            (
                (Direction::Play, p.stream_id),
                p.room_id,
                Role::Play { output: p.output },
            )
        });
        let streams: Vec<(StreamKey, RoomId, Role)> = publishing.chain(playing).collect();
        for (key, room, role) in streams {
            let checked = match role {
                Role::Publish { channel } => {
                    self.check_publish(&key.1, Some(room.clone()), channel)
                }
                Role::Play { .. } => self.check_play(&key.1, Some(room.clone())),
            };
            if let Err(e) = checked {
                let error = BackendError::new(
                    e.code(),
                    format!("stream `{}` was not restored after the restart: {e}", key.1),
                );
                warn!(room = %room, stream = %key.1, code = %error.code, "{}", error.message);
                self.emit_stream(&key, &room, None, Some(&error));
                report
                    .refused
                    .push(format!("stream {}: {} ({})", key.1, e, e.code()));
                continue;
            }
            info!(room = %room, stream = %key.1, kind = ?key.0, "restoring the stream");
            match key.0 {
                Direction::Publish => report.publishing.push(key.1.clone()),
                Direction::Play => report.playing.push(key.1.clone()),
            }
            self.streams.insert(
                key.clone(),
                StreamEntry {
                    // Restored: it was up before the restart, so a failure is retried.
                    established: true,
                    accepted: true,
                    ..StreamEntry::requested(room.clone(), role, None)
                },
            );
            self.emit_stream(&key, &room, Some(Phase::Requesting), None);
            let room_ready = self
                .rooms
                .get(&room)
                .is_some_and(|r| r.state == RoomState::Logined);
            if room_ready {
                self.begin_stream(&key);
            }
        }
        report
    }

    /// The box lost a network address: the SFU connection and every peer connection
    /// may be built on it, dead without an error yet (TCP would notice in minutes, ICE
    /// in tens of seconds). The backend connects again at once; each room then comes
    /// back as after any lost connection (`Reconnecting` → `Reconnected`, never left),
    /// and its streams start again on new peer connections, gathering candidates on the
    /// new address: the recovery path every lost room already takes, rather than an
    /// ICE restart of each peer, which would leave the signalling socket dead.
    fn on_address_lost(&mut self) {
        if self.rooms.is_empty() {
            return;
        }
        info!(
            rooms = self.rooms.len(),
            "network address lost: reconnecting to the SFU and restarting the streams"
        );
        self.backend.network_changed();
    }

    /// One quality event per stream that is up and has figures (`quality_interval`).
    fn emit_quality(&self) {
        for ((_, stream), entry) in &self.streams {
            if entry.phase != Phase::Active {
                continue;
            }
            let Some(quality) = entry.peer.as_ref().and_then(|p| p.quality()) else {
                continue;
            };
            let (stream_id, room_id) = (stream.clone(), entry.room.clone());
            self.emit(match quality {
                StreamQuality::Publisher(quality) => Event::PublisherQualityUpdate {
                    stream_id,
                    room_id,
                    quality,
                },
                StreamQuality::Player(quality) => Event::PlayerQualityUpdate {
                    stream_id,
                    room_id,
                    quality,
                },
            });
        }
    }

    // ---- state and shutdown ----------------------------------------------------------

    fn snapshot(&self) -> EngineSnapshot {
        let mut publishing = Vec::new();
        let mut playing = Vec::new();
        for ((kind, stream), entry) in &self.streams {
            let stats = entry.peer.as_ref().map(|p| p.stats()).unwrap_or_default();
            let quality = entry.peer.as_ref().and_then(|p| p.quality());
            match (kind, entry.role) {
                (Direction::Publish, Role::Publish { channel }) => {
                    publishing.push(PublishSnapshot {
                        stream_id: stream.clone(),
                        room_id: entry.room.clone(),
                        channel,
                        state: publisher_state(entry.phase),
                        fanout: entry.fanout,
                        stats,
                        quality: match quality {
                            Some(StreamQuality::Publisher(q)) => Some(q),
                            _ => None,
                        },
                    })
                }
                (Direction::Play, Role::Play { output }) => playing.push(PlaySnapshot {
                    stream_id: stream.clone(),
                    room_id: entry.room.clone(),
                    output,
                    state: player_state(entry.phase),
                    stats,
                    quality: match quality {
                        Some(StreamQuality::Player(q)) => Some(q),
                        _ => None,
                    },
                }),
                _ => {}
            }
        }
        EngineSnapshot {
            room_mode: self.settings.mode,
            multi_room_enabled: self.settings.multi_room_enabled,
            max_rooms: self.settings.max_rooms,
            user: self.user.clone(),
            rooms: self
                .rooms
                .iter()
                .map(|(id, room)| RoomSnapshot {
                    room_id: id.clone(),
                    server: room.server.clone(),
                    state: room.state,
                    users: room.users.values().cloned().collect(),
                    streams: room.streams.values().cloned().collect(),
                })
                .collect(),
            publishing,
            playing,
            media: self.media.snapshot(),
        }
    }

    /// Shutdown: leave every room, close every peer, bounded by [`SHUTDOWN_GRACE`].
    async fn leave_everything(&mut self) {
        let rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        let mut peers = Vec::new();
        let mut leaving = Vec::new();
        let mut servers = Vec::new();
        for room in &rooms {
            for key in self.room_streams(room) {
                if let Some(entry) = self.streams.get_mut(&key)
                    && let Some(peer) = entry.peer.take()
                {
                    peers.push(peer);
                }
            }
            let server = self.remove_room(room, EngineError::EngineStopped, None);
            servers.push(server);
            leaving.push(self.backend.logout(room));
        }
        self.ops.abort_all();
        let closing = join_all(peers.iter().map(|p| p.close()));
        let left = join_all(leaving);
        match tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join(left, closing)).await {
            Ok((results, _)) => {
                for ((room, server), result) in rooms.iter().zip(&servers).zip(results) {
                    match result {
                        Ok(()) => {
                            self.emit_room_on(room, server.as_ref(), RoomStateReason::Logout, None)
                        }
                        Err(e) => self.emit_room_on(
                            room,
                            server.as_ref(),
                            RoomStateReason::LogoutFailed,
                            Some(&e),
                        ),
                    }
                }
            }
            Err(_) => {
                warn!("leaving the rooms took longer than {SHUTDOWN_GRACE:?}; stopping anyway")
            }
        }
    }
}

/// Failures that end a restored room at once; others (the SFU unreachable, slow, or
/// still holding our previous session) are retried within the reconnect window.
fn ends_restore(error: &BackendError) -> bool {
    matches!(
        error.code,
        ErrorCode::ROOM_AUTH_FAILED | ErrorCode::SFU_ROOM_NOT_FOUND
    )
}
