//! One room on Janus, owned by one task: a VideoRoom participant for presence (it sees
//! who publishes), a TextRoom handle with its data channel (users and messages), and a
//! task per published or played stream with its own handle.
//!
//! Operations arrive in the order the engine registered them. Stream negotiations run in
//! their own tasks, so a slow publish never holds up a message to the room.
//!
//! This file is the actor (its state, its loop, the operations and the presence events);
//! `login` joins and leaves the room (and creates or destroys it), `text` is the TextRoom
//! exchange over the data channel, `stream` negotiates each stream on its own handle.
//! One actor owns it all: the split is by concern, not by owner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use super::carrier::{Carriers, RelayContext, remove_left_behind, run_relay};
use super::client::{Handle, HandleEvent, HandleEvents, JanusClient, JanusError, PluginReply};
use super::protocol::{
    CustomCommandEnvelope, Feed, JoinAs, Jsep, JsepType, RoomRequest, TextEvent, TextParticipant,
    TextRequest, TextRoomApi, TrickleCandidate, VideoRoom, VideoRoomOptions, display_of,
    parse_janus_date, text_user, user_of_feed,
};
use super::{Created, CreatedRooms, JanusSettings, RoomSlots, errors};
use crate::base::secret::Secret;
use crate::engine::backend::{BackendEvent, IceCandidate, MediaEngine, PeerHandle, PeerState};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::event::{BroadcastMessage, StreamInfo, UserInfo};
use crate::engine::types::{Channel, Direction, RoomId, StreamId, UpdateType, User, UserId};
use crate::peer::{TextChannel, TextChannels};

mod login;
mod stream;
mod text;

use stream::trickle;
pub(super) use stream::{StreamContext, ice_candidate, negotiate, negotiation_timeout};

pub(super) const VIDEOROOM: &str = "janus.plugin.videoroom";
pub(super) const TEXTROOM: &str = "janus.plugin.textroom";

type Reply<T> = oneshot::Sender<Result<T, BackendError>>;

/// What the backend asks of a room, in the engine's order.
pub(super) enum RoomOp {
    Login {
        user: User,
        token: Option<Secret>,
        reply: Reply<()>,
    },
    Logout {
        reply: Reply<()>,
    },
    /// Publishes `peer` as `stream`, or plays `stream` into it.
    Negotiate {
        direction: Direction,
        stream: StreamId,
        peer: PeerHandle,
        reply: Reply<()>,
    },
    /// Server-side fan-out: the stream appears in the room relayed from the carrier.
    PublishRelayed {
        stream: StreamId,
        channel: Channel,
        media: Arc<dyn MediaEngine>,
        reply: Reply<PeerHandle>,
    },
    /// Ends a stream's publishing or playing (nothing to do if there is none).
    Stop {
        direction: Direction,
        stream: StreamId,
        reply: Reply<()>,
    },
    Broadcast {
        text: String,
        reply: Reply<u64>,
    },
    Custom {
        to: Vec<UserId>,
        text: String,
        reply: Reply<()>,
    },
}

/// One running stream negotiation and its handle.
struct StreamTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl StreamTask {
    /// Asks the task to detach its handle and waits (bounded) until it has.
    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Everything held while the room is logged in.
struct Joined {
    user: User,
    pin: Option<Secret>,
    presence: Handle,
    presence_events: HandleEvents,
    text: Handle,
    text_events: HandleEvents,
    channel: Arc<dyn TextChannel>,
    channel_state: watch::Receiver<PeerState>,
    incoming: crate::base::lossy::Receiver<String>,
    text_pending: HashMap<String, oneshot::Sender<Result<TextEvent, BackendError>>>,
    next_transaction: u64,
    feeds: BTreeMap<String, StreamInfo>,
    users: BTreeMap<String, UserInfo>,
    publishers: HashMap<StreamId, StreamTask>,
    players: HashMap<StreamId, StreamTask>,
}

impl Joined {
    /// The running negotiations of one direction.
    fn tasks(&mut self, direction: Direction) -> &mut HashMap<StreamId, StreamTask> {
        match direction {
            Direction::Publish => &mut self.publishers,
            Direction::Play => &mut self.players,
        }
    }
}

pub(super) struct RoomActor {
    pub(super) room: RoomId,
    pub(super) slot_id: u64,
    pub(super) client: JanusClient,
    pub(super) settings: Arc<JanusSettings>,
    pub(super) events: mpsc::Sender<BackendEvent>,
    pub(super) slots: RoomSlots,
    pub(super) created: CreatedRooms,
    pub(super) ops: mpsc::UnboundedReceiver<RoomOp>,
    pub(super) message_ids: Arc<std::sync::atomic::AtomicU64>,
    pub(super) carriers: Carriers,
    /// Builds each login's TextRoom channel (the WebRTC side's business).
    pub(super) channels: Arc<dyn TextChannels>,
}

/// Why a joined room was lost.
struct Lost {
    reason: String,
    /// One handle failed but the Janus session lives on (its other handles too).
    session_alive: bool,
}

impl Lost {
    fn session(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            session_alive: false,
        }
    }

    fn handle(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            session_alive: true,
        }
    }
}

/// What woke the actor up while joined.
enum Wake {
    Op(Option<RoomOp>),
    Presence(Option<HandleEvent>),
    Text(Option<HandleEvent>),
    Incoming(Option<String>),
    ChannelState,
}

impl RoomActor {
    pub(super) async fn run(mut self) {
        let span = info_span!("room", room = %self.room);
        async move {
            let mut joined: Option<Joined> = None;
            loop {
                let wake = match joined.as_mut() {
                    None => Wake::Op(self.ops.recv().await),
                    Some(j) => tokio::select! {
                        op = self.ops.recv() => Wake::Op(op),
                        event = j.presence_events.recv() => Wake::Presence(event),
                        event = j.text_events.recv() => Wake::Text(event),
                        text = j.incoming.recv() => Wake::Incoming(text),
                        _ = j.channel_state.changed() => Wake::ChannelState,
                    },
                };
                match wake {
                    Wake::Op(None) => break,
                    Wake::Op(Some(op)) => self.on_op(op, &mut joined).await,
                    Wake::Presence(event) => self.on_presence(event, &mut joined).await,
                    Wake::Text(event) => {
                        let lost = match event {
                            None => Some(Lost::session("the Janus session ended")),
                            Some(HandleEvent::Hangup { reason }) => Some(Lost::handle(format!(
                                "Janus hung up the TextRoom connection: {reason}"
                            ))),
                            Some(HandleEvent::Detached) => {
                                Some(Lost::handle("Janus detached the TextRoom handle"))
                            }
                            Some(HandleEvent::Trickle(candidate)) => {
                                if let (Some(j), Some(candidate)) =
                                    (joined.as_ref(), ice_candidate(&candidate))
                                {
                                    j.channel.add_remote_candidate(&candidate);
                                }
                                None
                            }
                            Some(_) => None,
                        };
                        if let Some(lost) = lost {
                            self.lose(&mut joined, lost).await;
                        }
                    }
                    Wake::Incoming(Some(text)) => self.on_text(&text, &mut joined).await,
                    Wake::Incoming(None) => {
                        self.lose(&mut joined, Lost::handle("the TextRoom data channel ended"))
                            .await
                    }
                    Wake::ChannelState => {
                        let failed =
                            joined
                                .as_ref()
                                .and_then(|j| match &*j.channel_state.borrow() {
                                    PeerState::Failed(reason) => Some(reason.clone()),
                                    _ => None,
                                });
                        if let Some(reason) = failed {
                            self.lose(
                                &mut joined,
                                Lost::handle(format!("TextRoom connection failed: {reason}")),
                            )
                            .await;
                        }
                    }
                }
                if joined.is_none() && self.release_slot() {
                    break;
                }
            }
            if let Some(j) = joined.take() {
                self.teardown(j, true).await;
            }
            debug!("room task ended");
        }
        .instrument(span)
        .await
    }

    /// Leaves the backend's table when idle, so rooms left long ago cost nothing.
    fn release_slot(&mut self) -> bool {
        let Ok(mut slots) = self.slots.lock() else {
            return false;
        };
        if !self.ops.is_empty() {
            return false;
        }
        if slots.get(&self.room).is_some_and(|s| s.id == self.slot_id) {
            slots.remove(&self.room);
        }
        true
    }

    async fn emit(&self, event: BackendEvent) {
        let _ = self.events.send(event).await;
    }

    async fn on_op(&mut self, op: RoomOp, joined: &mut Option<Joined>) {
        match op {
            RoomOp::Login { user, token, reply } => {
                if let Some(old) = joined.take() {
                    self.teardown(old, true).await;
                }
                let started = tokio::time::Instant::now();
                match self.login(&user, token).await {
                    Ok(j) => {
                        info!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "joined on Janus"
                        );
                        let users: Vec<UserInfo> = j.users.values().cloned().collect();
                        let feeds: Vec<StreamInfo> = j.feeds.values().cloned().collect();
                        *joined = Some(j);
                        let _ = reply.send(Ok(()));
                        if !users.is_empty() {
                            self.emit(BackendEvent::Users {
                                room: self.room.clone(),
                                update: UpdateType::Add,
                                users,
                            })
                            .await;
                        }
                        if !feeds.is_empty() {
                            self.emit(BackendEvent::Streams {
                                room: self.room.clone(),
                                update: UpdateType::Add,
                                streams: feeds,
                            })
                            .await;
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            RoomOp::Logout { reply } => {
                if let Some(j) = joined.take() {
                    self.teardown(j, true).await;
                    self.destroy_if_created_and_empty().await;
                }
                let _ = reply.send(Ok(()));
            }
            RoomOp::Negotiate {
                direction,
                stream,
                peer,
                reply,
            } => {
                let Some(j) = joined.as_mut() else {
                    let _ = reply.send(Err(not_joined(&self.room)));
                    return;
                };
                if direction == Direction::Play && !j.feeds.contains_key(stream.as_str()) {
                    let _ = reply.send(Err(BackendError::new(
                        ErrorCode::PLAY_STREAM_NOT_FOUND,
                        format!("stream `{stream}` is not published in room `{}`", self.room),
                    )));
                    return;
                }
                if let Some(old) = j.tasks(direction).remove(&stream) {
                    old.stop().await;
                }
                let task = self.spawn_stream(j, stream.clone(), peer, reply, direction);
                j.tasks(direction).insert(stream, task);
            }
            RoomOp::PublishRelayed {
                stream,
                channel,
                media,
                reply,
            } => {
                let Some(j) = joined.as_mut() else {
                    let _ = reply.send(Err(not_joined(&self.room)));
                    return;
                };
                if let Some(old) = j.publishers.remove(&stream) {
                    old.stop().await;
                }
                let cancel = CancellationToken::new();
                let context = RelayContext {
                    client: self.client.clone(),
                    carriers: self.carriers.clone(),
                    settings: self.settings.clone(),
                    room: self.room.clone(),
                    stream: stream.clone(),
                    channel,
                    user: j.user.clone(),
                    display: display_of(&j.user),
                    media,
                };
                let span = info_span!("relay", stream = %stream);
                let task = tokio::spawn(run_relay(context, reply, cancel.clone()).instrument(span));
                // Among the publishers: it is stopped, and filtered from the room's
                // feeds, like a stream the box uploads to the room itself.
                j.publishers.insert(stream, StreamTask { cancel, task });
            }
            RoomOp::Stop {
                direction,
                stream,
                reply,
            } => {
                if let Some(task) = joined
                    .as_mut()
                    .and_then(|j| j.tasks(direction).remove(&stream))
                {
                    task.stop().await;
                }
                let _ = reply.send(Ok(()));
            }
            RoomOp::Broadcast { text, reply } => {
                let id = self
                    .message_ids
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let result = match joined.as_mut() {
                    Some(j) => self.send_text(j, &text, None).await.map(|()| id),
                    None => Err(not_joined(&self.room)),
                };
                let _ = reply.send(result);
            }
            RoomOp::Custom { to, text, reply } => {
                let envelope = serde_json::to_string(&CustomCommandEnvelope {
                    custom_command: text,
                })
                .map_err(|e| BackendError::new(ErrorCode::INVALID_PARAMETER, e.to_string()));
                let result = match (joined.as_mut(), envelope) {
                    (Some(j), Ok(envelope)) => {
                        let to: Vec<&str> = to.iter().map(UserId::as_str).collect();
                        let tos = (!to.is_empty()).then_some(to);
                        self.send_text(j, &envelope, tos).await
                    }
                    (None, _) => Err(not_joined(&self.room)),
                    (_, Err(e)) => Err(e),
                };
                let _ = reply.send(result);
            }
        }
    }

    // ---- events ----------------------------------------------------------------------

    async fn on_presence(&self, event: Option<HandleEvent>, joined: &mut Option<Joined>) {
        let event = match event {
            None => {
                return self
                    .lose(joined, Lost::session("the Janus session ended"))
                    .await;
            }
            Some(HandleEvent::Detached) => {
                return self
                    .lose(joined, Lost::handle("Janus detached the VideoRoom handle"))
                    .await;
            }
            Some(HandleEvent::Plugin { data, .. }) => data,
            Some(_) => return,
        };
        let Ok(event) = serde_json::from_value::<VideoRoom>(event.data) else {
            return;
        };
        let Some(j) = joined.as_mut() else {
            return;
        };
        match event {
            VideoRoom::Destroyed { .. } => self.kicked(joined, "the room was destroyed").await,
            VideoRoom::Event {
                leaving: Some(serde_json::Value::String(who)),
                reason,
                ..
            } if who == "ok" => {
                let reason = reason.unwrap_or_else(|| "kicked".into());
                self.kicked(joined, &reason).await;
            }
            VideoRoom::Event {
                publishers,
                unpublished,
                leaving,
                ..
            } => {
                let mut added = Vec::new();
                for publisher in publishers.unwrap_or_default() {
                    if j.publishers.keys().any(|own| own.as_str() == publisher.id) {
                        continue; // our own stream
                    }
                    let info = StreamInfo {
                        stream_id: publisher.id.clone(),
                        user: user_of_feed(&publisher.id, publisher.display.as_deref()),
                    };
                    if j.feeds.insert(publisher.id, info.clone()).is_none() {
                        added.push(info);
                    }
                }
                let mut removed = Vec::new();
                for gone in [unpublished, leaving].into_iter().flatten() {
                    if let Some(id) = gone.as_str()
                        && let Some(info) = j.feeds.remove(id)
                    {
                        removed.push(info);
                    }
                }
                if !added.is_empty() {
                    self.emit(BackendEvent::Streams {
                        room: self.room.clone(),
                        update: UpdateType::Add,
                        streams: added,
                    })
                    .await;
                }
                if !removed.is_empty() {
                    self.emit(BackendEvent::Streams {
                        room: self.room.clone(),
                        update: UpdateType::Delete,
                        streams: removed,
                    })
                    .await;
                }
            }
            // Replies to the room's own requests travel with their transactions; talking
            // and `updated` events say nothing the room's presence needs.
            _ => {}
        }
    }
}

fn next_transaction(j: &mut Joined) -> String {
    j.next_transaction += 1;
    format!("rc-{}", j.next_transaction)
}

pub(super) fn parse_videoroom(reply: &PluginReply) -> Result<VideoRoom, BackendError> {
    serde_json::from_value(reply.data.data.clone()).map_err(|e| {
        BackendError::new(
            ErrorCode::SFU_REFUSED,
            format!("unexpected VideoRoom answer ({e})"),
        )
    })
}

fn unexpected(what: &str, answer: &VideoRoom) -> BackendError {
    BackendError::new(
        ErrorCode::SFU_REFUSED,
        format!("unexpected VideoRoom answer to `{what}`: {answer:?}"),
    )
}

fn not_joined(room: &RoomId) -> BackendError {
    BackendError::new(
        ErrorCode::SFU_UNREACHABLE,
        format!("room `{room}` is not connected on Janus right now"),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
