//! The engine task: the only owner of rooms, published and played streams.
//!
//! This file holds the actor's state and its loop; the work is split by concern, all of
//! it methods of the one `Engine`: `commands` (the room rules, checked as commands
//! arrive), `streams` (a stream's lifecycle), `outcomes` (finished work reporting back),
//! `events` (what the room backends report), `reroute` (servers changed by a reload),
//! `restore` (the desired state and restoring it) and `snapshot` (state and shutdown).

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

mod commands;
mod events;
mod outcomes;
mod reroute;
mod restore;
mod snapshot;
mod streams;

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

impl Role {
    /// The direction of a stream in this role: the first half of its key, always
    /// taken from here so that the two cannot disagree.
    fn direction(self) -> Direction {
        match self {
            Role::Publish { .. } => Direction::Publish,
            Role::Play { .. } => Direction::Play,
        }
    }
}

/// The command that started a stream, answered in its direction's terms when the
/// stream comes up or fails to.
struct Waiter(Box<dyn FnOnce(Result<Phase, EngineError>) + Send>);

impl Waiter {
    fn publish(reply: Reply<PublisherState>) -> Self {
        Self(Box::new(move |result| {
            let _ = reply.send(result.map(publisher_state));
        }))
    }

    fn play(reply: Reply<PlayerState>) -> Self {
        Self(Box::new(move |result| {
            let _ = reply.send(result.map(player_state));
        }))
    }

    fn resolve(self, result: Result<Phase, EngineError>) {
        (self.0)(result)
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

/// Where a room is with its SFU. What a reconnect needs (since when, which attempt,
/// whether a backoff is running) exists only while the room reconnects, and a restored
/// room's window only while its first login runs: neither can go stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// The first login is in flight. A room restored after a restart (`restored_at`)
    /// retries transient failures like a lost room, within the reconnect window from
    /// its restore, instead of ending.
    LoggingIn {
        restored_at: Option<Instant>,
    },
    Logined,
    /// Lost `since`; logging in again (`attempt` counts the tries), or waiting out a
    /// backoff before the next try (`backoff`: a session to its server coming back ends
    /// the wait).
    Reconnecting {
        since: Instant,
        attempt: u32,
        backoff: bool,
    },
}

impl Connection {
    /// Lost just now, the first try to follow after a backoff (or at once, `backoff`
    /// false).
    fn lost(backoff: bool) -> Self {
        Connection::Reconnecting {
            since: Instant::now(),
            attempt: 1,
            backoff,
        }
    }

    /// The state the control surface shows.
    fn state(self) -> RoomState {
        match self {
            Connection::LoggingIn { .. } => RoomState::Logining,
            Connection::Logined => RoomState::Logined,
            Connection::Reconnecting { .. } => RoomState::Reconnecting,
        }
    }

    fn is_reconnecting(self) -> bool {
        matches!(self, Connection::Reconnecting { .. })
    }

    fn restored_at(self) -> Option<Instant> {
        match self {
            Connection::LoggingIn { restored_at } => restored_at,
            _ => None,
        }
    }

    fn attempt(self) -> u32 {
        match self {
            Connection::Reconnecting { attempt, .. } => attempt,
            _ => 0,
        }
    }

    /// How long the room has been reconnecting (zero when it is not).
    fn lost_for(self) -> Duration {
        match self {
            Connection::Reconnecting { since, .. } => since.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// A login is starting: no backoff runs any more.
    fn end_backoff(&mut self) {
        if let Connection::Reconnecting { backoff, .. } = self {
            *backoff = false;
        }
    }

    /// A login again failed: the attempt whose backoff to wait out now, counted.
    fn back_off(&mut self) -> u32 {
        match self {
            Connection::Reconnecting {
                attempt, backoff, ..
            } => {
                let this = *attempt;
                *attempt = attempt.saturating_add(1);
                *backoff = true;
                this
            }
            _ => 0,
        }
    }
}

struct Room {
    connection: Connection,
    /// The SFU server the room is on, resolved at login.
    server: ServerName,
    /// The server `login_room` named (kept in the desired state), if any.
    named_server: Option<ServerName>,
    user: User,
    token: Option<Secret>,
    generation: u64,
    login_waiters: Vec<Reply<()>>,
    users: BTreeMap<String, UserInfo>,
    streams: BTreeMap<String, StreamInfo>,
    /// Part of the desired state: the login succeeded once, or the room was restored.
    accepted: bool,
    /// The login carried a token (never kept across restarts).
    had_token: bool,
}

struct StreamEntry {
    room: RoomId,
    role: Role,
    lifecycle: Lifecycle,
    generation: u64,
    peer: Option<PeerHandle>,
    /// A published stream's fan-out, once decided (`auto` may fall back to `device`).
    fanout: Option<Fanout>,
}

/// Where a stream is in its life. Every stage but `Starting` is part of the desired
/// state (the start was answered ok, or the stream was restored), so a failure there
/// is retried with backoff, never the stream's end.
enum Lifecycle {
    /// Asked for, not answered yet: `waiter` hears when it comes up; a failure ends
    /// the stream and answers `waiter` with the error.
    Starting { waiter: Waiter },
    /// A played stream not published in its room (yet): it starts when it appears.
    /// `attempt` counts the tries that found it missing, for the backoff.
    AwaitingRemote { attempt: u32 },
    /// Up: media flows through the peer.
    Up,
    /// Down, being brought back; `attempt` retries so far (the backoff grows with it).
    Recovering { attempt: u32 },
}

impl StreamEntry {
    fn new(room: RoomId, role: Role, lifecycle: Lifecycle) -> Self {
        Self {
            room,
            role,
            lifecycle,
            generation: 0,
            peer: None,
            fanout: None,
        }
    }

    /// What the control surface shows.
    fn phase(&self) -> Phase {
        match self.lifecycle {
            Lifecycle::Up => Phase::Active,
            _ => Phase::Requesting,
        }
    }

    fn is_up(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Up)
    }

    fn is_awaiting_remote(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::AwaitingRemote { .. })
    }

    /// Part of the desired state (kept across restarts).
    fn is_desired(&self) -> bool {
        !matches!(self.lifecycle, Lifecycle::Starting { .. })
    }

    /// Retries so far since the stream was last up.
    fn attempt(&self) -> u32 {
        match self.lifecycle {
            Lifecycle::AwaitingRemote { attempt } | Lifecycle::Recovering { attempt } => attempt,
            Lifecycle::Starting { .. } | Lifecycle::Up => 0,
        }
    }

    /// Moves to `next`; returns the start's waiter if it was still unanswered.
    fn enter(&mut self, next: Lifecycle) -> Option<Waiter> {
        match std::mem::replace(&mut self.lifecycle, next) {
            Lifecycle::Starting { waiter } => Some(waiter),
            _ => None,
        }
    }

    /// The start's waiter, if unanswered, as the stream goes.
    fn into_waiter(self) -> Option<Waiter> {
        match self.lifecycle {
            Lifecycle::Starting { waiter } => Some(waiter),
            _ => None,
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
}

/// Failures that end a restored room at once; others (the SFU unreachable, slow, or
/// still holding our previous session) are retried within the reconnect window.
fn ends_restore(error: &BackendError) -> bool {
    matches!(
        error.code,
        ErrorCode::ROOM_AUTH_FAILED | ErrorCode::SFU_ROOM_NOT_FOUND
    )
}
