//! One room on Janus, owned by one task: a VideoRoom participant for presence (it sees
//! who publishes), a TextRoom handle with its data channel (users and messages), and a
//! task per published or played stream with its own handle.
//!
//! Operations arrive in the order the engine registered them. Stream negotiations run in
//! their own tasks, so a slow publish never holds up a message to the room.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, trace, warn};

use super::carrier::{Carriers, RelayContext, remove_left_behind, run_relay};
use super::client::{Handle, HandleEvent, HandleEvents, JanusClient, JanusError, PluginReply};
use super::protocol::{
    CustomCommandEnvelope, Jsep, JsepType, TextEvent, TextParticipant, TextRequest, TextRoomApi,
    TrickleCandidate, VideoRoom, display_of, parse_janus_date, text_user, user_of_feed,
};
use super::{Created, CreatedRooms, JanusSettings, RoomSlots, errors};
use crate::base::secret::Secret;
use crate::engine::backend::{BackendEvent, IceCandidate, MediaEngine, PeerHandle, PeerState};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::event::{BroadcastMessage, StreamInfo, UserInfo};
use crate::engine::types::{Channel, RoomId, StreamId, UpdateType, User, UserId};
use crate::webrtc::DataChannelPeer;

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
    Publish {
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
    Unpublish {
        stream: StreamId,
        reply: Reply<()>,
    },
    Play {
        stream: StreamId,
        peer: PeerHandle,
        reply: Reply<()>,
    },
    StopPlaying {
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
    channel: Arc<DataChannelPeer>,
    channel_state: watch::Receiver<PeerState>,
    incoming: crate::base::lossy::Receiver<String>,
    text_pending: HashMap<String, oneshot::Sender<Result<TextEvent, BackendError>>>,
    next_transaction: u64,
    feeds: BTreeMap<String, StreamInfo>,
    users: BTreeMap<String, UserInfo>,
    publishers: HashMap<StreamId, StreamTask>,
    players: HashMap<StreamId, StreamTask>,
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
            RoomOp::Publish {
                stream,
                peer,
                reply,
            } => {
                let Some(j) = joined.as_mut() else {
                    let _ = reply.send(Err(not_joined(&self.room)));
                    return;
                };
                if let Some(old) = j.publishers.remove(&stream) {
                    old.stop().await;
                }
                let task = self.spawn_stream(j, stream.clone(), peer, reply, true);
                j.publishers.insert(stream, task);
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
            RoomOp::Unpublish { stream, reply } => {
                if let Some(task) = joined.as_mut().and_then(|j| j.publishers.remove(&stream)) {
                    task.stop().await;
                }
                let _ = reply.send(Ok(()));
            }
            RoomOp::Play {
                stream,
                peer,
                reply,
            } => {
                let Some(j) = joined.as_mut() else {
                    let _ = reply.send(Err(not_joined(&self.room)));
                    return;
                };
                if !j.feeds.contains_key(stream.as_str()) {
                    let _ = reply.send(Err(BackendError::new(
                        ErrorCode::PLAY_STREAM_NOT_FOUND,
                        format!("stream `{stream}` is not published in room `{}`", self.room),
                    )));
                    return;
                }
                if let Some(old) = j.players.remove(&stream) {
                    old.stop().await;
                }
                let task = self.spawn_stream(j, stream.clone(), peer, reply, false);
                j.players.insert(stream, task);
            }
            RoomOp::StopPlaying { stream, reply } => {
                if let Some(task) = joined.as_mut().and_then(|j| j.players.remove(&stream)) {
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

    // ---- login and logout ----------------------------------------------------------

    async fn login(&self, user: &User, token: Option<Secret>) -> Result<Joined, BackendError> {
        let timeout = self.client.request_timeout();
        self.client
            .wait_connected(timeout)
            .await
            .map_err(|e| errors::map(e, "connect"))?;
        let room = self.room.as_str();
        let pin = token.as_ref().map(|t| t.expose().to_owned());

        let (presence, presence_events) = self
            .client
            .attach(VIDEOROOM)
            .await
            .map_err(|e| errors::map(e, "attach"))?;
        let (text, text_events) = match self.client.attach(TEXTROOM).await {
            Ok(attached) => attached,
            Err(e) => {
                let _ = presence.detach().await;
                return Err(errors::map(e, "attach"));
            }
        };
        let partial = (presence.clone(), text.clone());
        let result = async {
            self.ensure_rooms(&presence, &text, token.as_ref()).await?;

            let mut join = json!({"request": "join", "ptype": "publisher", "room": room, "display": display_of(user)});
            if let Some(pin) = &pin {
                join["pin"] = json!(pin);
            }
            let joined = presence.message("join the VideoRoom", join, None).await.map_err(|e| errors::map(e, "login"))?;
            let publishers = match parse_videoroom(&joined)? {
                VideoRoom::Joined { publishers, .. } => publishers,
                other => return Err(unexpected("join the VideoRoom", &other)),
            };
            let left_behind = remove_left_behind(&presence, room, &display_of(user), &publishers, None).await;
            let publishers = publishers.into_iter().filter(|p| !left_behind.contains(&p.id));

            debug!("VideoRoom joined");
            let channel = DataChannelPeer::new(&format!("textroom-{room}"))
                .map_err(|e| BackendError::new(ErrorCode::SFU_REFUSED, format!("cannot open the TextRoom data channel: {e}")))?;
            let setup = text.message("set up the TextRoom", json!({"request": "setup"}), None).await.map_err(|e| errors::map(e, "login"))?;
            let offer = setup.jsep.ok_or_else(|| BackendError::new(ErrorCode::SFU_REFUSED, "the TextRoom setup carried no SDP offer"))?;
            let answer = channel
                .answer_offer(&offer.sdp)
                .await
                .map_err(|e| BackendError::new(ErrorCode::SFU_REFUSED, format!("cannot answer the TextRoom offer: {e}")))?;
            text.message("answer the TextRoom", json!({"request": "ack"}), Some(Jsep { kind: JsepType::Answer, sdp: answer }))
                .await
                .map_err(|e| errors::map(e, "login"))?;
            if let Some(candidates) = channel.take_local_candidates() {
                tokio::spawn(trickle(text.clone(), candidates));
            }
            debug!("TextRoom answered; waiting for the data channel");
            channel
                .wait_open(negotiation_timeout(timeout))
                .await
                .map_err(|e| match e {
                    crate::webrtc::WebRtcError::RelayFailed => BackendError::new(ErrorCode::ROOM_RELAY_FAILED, e.to_string()),
                    e => BackendError::new(ErrorCode::SFU_TIMEOUT, format!("TextRoom data channel: {e}")),
                })?;
            let incoming = channel
                .take_incoming()
                .ok_or_else(|| BackendError::new(ErrorCode::SFU_REFUSED, "TextRoom data channel has no receiver"))?;
            debug!("TextRoom data channel open");
            let channel_state = channel.state();
            let mut j = Joined {
                user: user.clone(),
                pin: token.clone(),
                presence: presence.clone(),
                presence_events,
                text: text.clone(),
                text_events,
                channel,
                channel_state,
                incoming,
                text_pending: HashMap::new(),
                next_transaction: 1,
                feeds: BTreeMap::new(),
                users: BTreeMap::new(),
                publishers: HashMap::new(),
                players: HashMap::new(),
            };
            for publisher in publishers {
                let info = StreamInfo {
                    stream_id: publisher.id.clone(),
                    user: user_of_feed(&publisher.id, publisher.display.as_deref()),
                };
                j.feeds.insert(publisher.id, info);
            }
            let participants = self.text_join(&mut j, pin.as_deref()).await?;
            for p in participants {
                if p.username != user.user_id.as_str() {
                    j.users.insert(p.username.clone(), text_user(&p));
                }
            }
            Ok(j)
        }
        .await;
        if result.is_err() {
            let (presence, text) = partial;
            let _ = presence.detach().await;
            let _ = text.detach().await;
        }
        result
    }

    /// Makes sure the VideoRoom and the TextRoom exist, creating them when configured to.
    async fn ensure_rooms(
        &self,
        presence: &Handle,
        text: &Handle,
        pin: Option<&Secret>,
    ) -> Result<(), BackendError> {
        let room = self.room.as_str();
        let exists = presence
            .message(
                "check the VideoRoom exists",
                json!({"request": "exists", "room": room}),
                None,
            )
            .await
            .map_err(|e| errors::map(e, "login"))?;
        let video_exists = matches!(
            parse_videoroom(&exists)?,
            VideoRoom::Success {
                exists: Some(true),
                ..
            }
        );
        let exists = text
            .message(
                "check the TextRoom exists",
                json!({"request": "exists", "room": room}),
                None,
            )
            .await
            .map_err(|e| errors::map(e, "login"))?;
        let text_exists = matches!(
            serde_json::from_value::<TextRoomApi>(exists.data.data.clone()),
            Ok(TextRoomApi::Success {
                exists: Some(true),
                ..
            })
        );
        if video_exists && text_exists {
            return Ok(());
        }
        if !self.settings.create_rooms {
            return Err(BackendError::new(
                ErrorCode::SFU_ROOM_NOT_FOUND,
                format!(
                    "room `{room}` does not exist on Janus and janus.create_rooms is false; create it on the server or enable create_rooms"
                ),
            ));
        }
        let mut extra = serde_json::Map::new();
        if let Some(key) = &self.settings.admin_key {
            extra.insert("admin_key".into(), json!(key.expose()));
        }
        if let Some(pin) = pin {
            extra.insert("pin".into(), json!(pin.expose()));
        }
        if !video_exists {
            let mut create = json!({
                "request": "create", "room": room, "description": room,
                "publishers": self.settings.publishers, "bitrate": self.settings.bitrate_bps,
                "videocodec": "h264", "audiocodec": "opus",
                "fir_freq": 0, "notify_joining": false, "permanent": false,
            });
            if let Some(object) = create.as_object_mut() {
                object.extend(extra.clone());
            }
            match presence.message("create the VideoRoom", create, None).await {
                Ok(_) => {
                    info!("created VideoRoom");
                    self.mark_created(|c| c.video = true);
                }
                Err(JanusError::Plugin { code: 427, .. }) => {} // someone else was faster
                Err(e) => return Err(errors::map(e, "create")),
            }
        }
        if !text_exists {
            let mut create =
                json!({"request": "create", "room": room, "description": room, "permanent": false});
            if let Some(object) = create.as_object_mut() {
                object.extend(extra);
            }
            match text.message("create the TextRoom", create, None).await {
                Ok(_) => {
                    info!("created TextRoom");
                    self.mark_created(|c| c.text = true);
                }
                Err(JanusError::Plugin { code: 418, .. }) => {}
                Err(e) => return Err(errors::map(e, "create")),
            }
        }
        Ok(())
    }

    fn mark_created(&self, mark: impl FnOnce(&mut Created)) {
        if let Ok(mut created) = self.created.lock() {
            mark(created.entry(self.room.clone()).or_default());
        }
    }

    /// After a logout: destroys what this box created of the room when nobody else is
    /// in it (VideoRoom and TextRoom participants both counted), so that login/logout
    /// loops do not fill a shared Janus. Best effort, bounded by the request timeout;
    /// a room someone else is in (or joins meanwhile: Janus then refuses nothing, they
    /// are told it was destroyed) is kept, and destroyed by whoever leaves it last.
    async fn destroy_if_created_and_empty(&self) {
        let created = match self.created.lock() {
            Ok(created) => created.get(&self.room).copied().unwrap_or_default(),
            Err(_) => return,
        };
        if created == Created::default() {
            return;
        }
        let room = self.room.as_str();
        let list = json!({"request": "listparticipants", "room": room});
        let (video, _video_events) = match self.client.attach(VIDEOROOM).await {
            Ok(attached) => attached,
            Err(e) => return debug!("not destroying the room: {e}"),
        };
        let (text, _text_events) = match self.client.attach(TEXTROOM).await {
            Ok(attached) => attached,
            Err(e) => {
                let _ = video.detach().await;
                return debug!("not destroying the room: {e}");
            }
        };
        // VideoRoom answers `"videoroom": "participants"`, TextRoom `"textroom": "success"`:
        // both carry a `participants` list.
        let count = |reply: Result<PluginReply, JanusError>| {
            reply
                .ok()
                .and_then(|r| r.data.data["participants"].as_array().map(Vec::len))
        };
        let in_video = count(
            video
                .message("list the VideoRoom", list.clone(), None)
                .await,
        );
        let mut list = list;
        list["transaction"] = json!("list");
        let in_text = count(text.message("list the TextRoom", list, None).await);
        let mut destroy = json!({"request": "destroy", "room": room, "permanent": false});
        if let Some(key) = &self.settings.admin_key {
            destroy["admin_key"] = json!(key.expose());
        }
        match (in_video, in_text) {
            (Some(0), Some(0)) => {
                let mut left = created;
                if created.video {
                    match video
                        .message("destroy the VideoRoom", destroy.clone(), None)
                        .await
                    {
                        Ok(_) | Err(JanusError::Plugin { code: 426, .. }) => left.video = false,
                        Err(e) => warn!("cannot destroy the VideoRoom this box created: {e}"),
                    }
                }
                if created.text {
                    destroy["transaction"] = json!("destroy");
                    match text.message("destroy the TextRoom", destroy, None).await {
                        Ok(_) | Err(JanusError::Plugin { code: 417, .. }) => left.text = false,
                        Err(e) => warn!("cannot destroy the TextRoom this box created: {e}"),
                    }
                }
                if left != created {
                    info!("destroyed the room this box created and left last");
                }
                if let Ok(mut all) = self.created.lock() {
                    if left == Created::default() {
                        all.remove(&self.room);
                    } else {
                        all.insert(self.room.clone(), left);
                    }
                }
            }
            (video_count, text_count) => debug!(
                ?video_count,
                ?text_count,
                "the room this box created is not empty (or cannot be listed): kept"
            ),
        }
        let _ = video.detach().await;
        let _ = text.detach().await;
    }

    async fn text_join(
        &self,
        j: &mut Joined,
        pin: Option<&str>,
    ) -> Result<Vec<TextParticipant>, BackendError> {
        let transaction = next_transaction(j);
        let user_id = j.user.user_id.to_string();
        let user_name = j.user.user_name.to_string();
        let request = TextRequest::Join {
            transaction: &transaction,
            room: self.room.as_str(),
            username: &user_id,
            display: &user_name,
            pin,
            history: false,
        };
        match self
            .text_request(j, transaction.clone(), &request, "join the TextRoom")
            .await?
        {
            TextEvent::Success { participants, .. } => Ok(participants.unwrap_or_default()),
            other => Err(BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("unexpected TextRoom answer to join: {other:?}"),
            )),
        }
    }

    /// Sends a TextRoom request over the data channel and waits for its answer, handling
    /// other data-channel traffic meanwhile.
    async fn text_request(
        &self,
        j: &mut Joined,
        transaction: String,
        request: &TextRequest<'_>,
        what: &str,
    ) -> Result<TextEvent, BackendError> {
        let text = serde_json::to_string(request)
            .map_err(|e| BackendError::new(ErrorCode::INVALID_PARAMETER, e.to_string()))?;
        let (tx, mut rx) = oneshot::channel();
        j.text_pending.insert(transaction.clone(), tx);
        if let Err(e) = j.channel.send(&text) {
            j.text_pending.remove(&transaction);
            return Err(BackendError::new(
                ErrorCode::SFU_UNREACHABLE,
                format!("{what}: {e}"),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.client.request_timeout();
        loop {
            tokio::select! {
                answer = &mut rx => {
                    return answer.unwrap_or_else(|_| Err(BackendError::new(ErrorCode::SFU_UNREACHABLE, format!("{what}: the data channel closed"))));
                }
                incoming = j.incoming.recv() => match incoming {
                    Some(message) => self.dispatch_text(j, &message).await,
                    None => return Err(BackendError::new(ErrorCode::SFU_UNREACHABLE, format!("{what}: the data channel closed"))),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    j.text_pending.remove(&transaction);
                    return Err(BackendError::new(ErrorCode::SFU_TIMEOUT, format!("Janus did not answer `{what}` within {:?}", self.client.request_timeout())));
                }
            }
        }
    }

    async fn send_text(
        &self,
        j: &mut Joined,
        text: &str,
        tos: Option<Vec<&str>>,
    ) -> Result<(), BackendError> {
        let transaction = next_transaction(j);
        let request = TextRequest::Message {
            transaction: &transaction,
            room: self.room.as_str(),
            text,
            tos,
            ack: true,
        };
        match self
            .text_request(j, transaction.clone(), &request, "send a message")
            .await?
        {
            TextEvent::Success { .. } => Ok(()),
            other => Err(BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("unexpected TextRoom answer to a message: {other:?}"),
            )),
        }
    }

    /// Leaves the room on Janus and releases every handle; `polite` sends the leave
    /// requests first (not when the session is already gone).
    async fn teardown(&self, mut j: Joined, polite: bool) {
        for (_, task) in j.publishers.drain().chain(j.players.drain()) {
            task.stop().await;
        }
        if polite {
            let transaction = next_transaction(&mut j);
            let leave = TextRequest::Leave {
                transaction: &transaction,
                room: self.room.as_str(),
            };
            if let Ok(text) = serde_json::to_string(&leave) {
                let _ = j.channel.send(&text);
            }
            let _ = j
                .presence
                .message("leave the VideoRoom", json!({"request": "leave"}), None)
                .await;
            let _ = j.presence.detach().await;
            let _ = j.text.detach().await;
        }
        j.channel.close();
        for (_, pending) in j.text_pending.drain() {
            let _ = pending.send(Err(BackendError::new(
                ErrorCode::SFU_UNREACHABLE,
                "left the room",
            )));
        }
        info!("left the room on Janus");
    }

    /// The room's connection broke: release what is left and tell the engine.
    ///
    /// When only one of the room's handles failed, the session is still there, and so
    /// are our other handles in the room: they are detached (bounded by the request
    /// timeout), or the TextRoom would still hold our username and refuse every rejoin
    /// with 420 for as long as the session lives.
    async fn lose(&self, joined: &mut Option<Joined>, lost: Lost) {
        let Some(j) = joined.take() else {
            return;
        };
        warn!("room lost: {}", lost.reason);
        if lost.session_alive {
            let timeout = self.client.request_timeout();
            if tokio::time::timeout(timeout, self.teardown(j, true))
                .await
                .is_err()
            {
                warn!("releasing the room's other handles took longer than {timeout:?}");
            }
        } else {
            self.teardown(j, false).await;
        }
        self.emit(BackendEvent::RoomLost {
            room: self.room.clone(),
            reason: lost.reason,
        })
        .await;
    }

    async fn kicked(&self, joined: &mut Option<Joined>, reason: &str) {
        let Some(j) = joined.take() else {
            return;
        };
        warn!("removed from the room by Janus: {reason}");
        self.teardown(j, true).await;
        self.emit(BackendEvent::KickedOut {
            room: self.room.clone(),
            error: BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("removed from room `{}`: {reason}", self.room),
            ),
        })
        .await;
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
            _ => {}
        }
    }

    async fn on_text(&self, message: &str, joined: &mut Option<Joined>) {
        trace!(target: "roomcast::janus::wire", "textroom <- {message}");
        if let Some(j) = joined.as_mut() {
            self.dispatch_text(j, message).await;
        }
        // Being kicked or the room's destruction arrive here too.
        let removal =
            joined
                .as_ref()
                .and_then(|j| match serde_json::from_str::<TextEvent>(message) {
                    Ok(TextEvent::Kicked { username, .. })
                        if username == j.user.user_id.as_str() =>
                    {
                        Some("kicked from the TextRoom")
                    }
                    Ok(TextEvent::Destroyed { room }) if room == self.room.as_str() => {
                        Some("the room was destroyed")
                    }
                    _ => None,
                });
        if let Some(reason) = removal {
            self.kicked(joined, reason).await;
        }
    }

    async fn dispatch_text(&self, j: &mut Joined, message: &str) {
        let event = match serde_json::from_str::<TextEvent>(message) {
            Ok(event) => event,
            Err(e) => {
                debug!("ignoring a TextRoom message that does not parse ({e})");
                return;
            }
        };
        let room = self.room.clone();
        match event {
            TextEvent::Success {
                ref transaction, ..
            } => {
                if let Some(waiter) = j.text_pending.remove(transaction) {
                    let _ = waiter.send(Ok(event));
                }
            }
            TextEvent::Error {
                transaction,
                error_code,
                error,
            } => {
                let error = errors::textroom(error_code, error);
                match transaction.and_then(|t| j.text_pending.remove(&t)) {
                    Some(waiter) => {
                        let _ = waiter.send(Err(error));
                    }
                    None => warn!("TextRoom error: {}", error.message),
                }
            }
            TextEvent::Join {
                room: r,
                username,
                display,
            } if r == room.as_str() && username != j.user.user_id.as_str() => {
                let user = text_user(&TextParticipant {
                    username: username.clone(),
                    display,
                });
                j.users.insert(username, user.clone());
                self.emit(BackendEvent::Users {
                    room,
                    update: UpdateType::Add,
                    users: vec![user],
                })
                .await;
            }
            TextEvent::Leave { room: r, username } if r == room.as_str() => {
                if let Some(user) = j.users.remove(&username) {
                    self.emit(BackendEvent::Users {
                        room,
                        update: UpdateType::Delete,
                        users: vec![user],
                    })
                    .await;
                }
            }
            TextEvent::Message {
                room: r,
                from,
                date,
                text,
                ..
            }
            | TextEvent::Whisper {
                room: r,
                from,
                date,
                text,
            } if r == room.as_str() && from != j.user.user_id.as_str() => {
                let from_user = j.users.get(&from).cloned().unwrap_or_else(|| UserInfo {
                    user_id: from.clone(),
                    user_name: from.clone(),
                });
                match serde_json::from_str::<CustomCommandEnvelope>(&text) {
                    Ok(envelope) => {
                        self.emit(BackendEvent::CustomCommand {
                            room,
                            from_user,
                            command: envelope.custom_command,
                        })
                        .await;
                    }
                    Err(_) => {
                        let message = BroadcastMessage {
                            message: text,
                            message_id: self
                                .message_ids
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            send_time: date
                                .as_deref()
                                .and_then(parse_janus_date)
                                .unwrap_or_else(now_ms),
                            from_user,
                        };
                        self.emit(BackendEvent::BroadcastMessage { room, message })
                            .await;
                    }
                }
            }
            _ => {}
        }
    }

    // ---- streams ---------------------------------------------------------------------

    fn spawn_stream(
        &self,
        j: &Joined,
        stream: StreamId,
        peer: PeerHandle,
        reply: Reply<()>,
        publishing: bool,
    ) -> StreamTask {
        let cancel = CancellationToken::new();
        let context = StreamContext {
            client: self.client.clone(),
            room: self.room.clone(),
            stream: stream.clone(),
            display: display_of(&j.user),
            pin: j.pin.clone(),
            publishing,
            events: self.events.clone(),
        };
        let span = info_span!("stream", stream = %stream, publishing);
        let task = tokio::spawn(run_stream(context, peer, reply, cancel.clone()).instrument(span));
        StreamTask { cancel, task }
    }
}

pub(super) struct StreamContext {
    pub(super) client: JanusClient,
    pub(super) room: RoomId,
    pub(super) stream: StreamId,
    pub(super) display: String,
    pub(super) pin: Option<Secret>,
    pub(super) publishing: bool,
    pub(super) events: mpsc::Sender<BackendEvent>,
}

/// Negotiates one stream on its own handle, then watches the handle until the stream
/// is stopped (detaching it) or Janus hangs it up (reporting StreamLost).
async fn run_stream(
    cx: StreamContext,
    peer: PeerHandle,
    reply: Reply<()>,
    cancel: CancellationToken,
) {
    let attached = tokio::select! {
        _ = cancel.cancelled() => return,
        attached = cx.client.attach(VIDEOROOM) => attached,
    };
    let (handle, mut events) = match attached {
        Ok(attached) => attached,
        Err(e) => {
            let _ = reply.send(Err(errors::map(
                e,
                if cx.publishing { "publish" } else { "play" },
            )));
            return;
        }
    };
    let timeout = negotiation_timeout(cx.client.request_timeout());
    let negotiated = tokio::select! {
        _ = cancel.cancelled() => {
            let _ = handle.detach().await;
            return;
        }
        result = tokio::time::timeout(timeout, negotiate(&cx, &handle, &mut events, &peer)) => result.unwrap_or_else(|_| {
            Err(BackendError::new(
                if cx.publishing { ErrorCode::PUBLISH_WEBRTC_FAILED } else { ErrorCode::PLAY_WEBRTC_FAILED },
                format!("the WebRTC connection to Janus was not up within {timeout:?}"),
            ))
        }),
    };
    if let Err(e) = negotiated {
        let _ = handle.detach().await;
        let _ = reply.send(Err(e));
        return;
    }
    info!("stream up on Janus");
    let _ = reply.send(Ok(()));
    let lost = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = handle.detach().await;
                return;
            }
            event = events.recv() => match event {
                // The session ended: the room reports it, the stream need not.
                None => return,
                Some(HandleEvent::Hangup { reason }) => break format!("Janus hung up: {reason}"),
                Some(HandleEvent::Detached) => break "Janus detached the handle".to_owned(),
                Some(HandleEvent::Trickle(candidate)) => {
                    if let Some(candidate) = ice_candidate(&candidate) {
                        let _ = peer.add_remote_candidate(&candidate);
                    }
                }
                Some(_) => {}
            },
        }
    };
    warn!("stream lost: {lost}");
    let _ = handle.detach().await;
    let _ = cx
        .events
        .send(BackendEvent::StreamLost {
            room: cx.room,
            stream: cx.stream,
            publishing: cx.publishing,
            reason: lost,
        })
        .await;
}

/// Negotiates `peer` on `handle` until Janus says it is up; a publisher's SDP offer is
/// returned (server fan-out describes the streams it relays from it).
pub(super) async fn negotiate(
    cx: &StreamContext,
    handle: &Handle,
    events: &mut HandleEvents,
    peer: &PeerHandle,
) -> Result<Option<String>, BackendError> {
    let room = cx.room.as_str();
    let context = if cx.publishing { "publish" } else { "play" };
    let mut offered = None;
    if cx.publishing {
        let mut join = json!({"request": "join", "ptype": "publisher", "room": room, "id": cx.stream.as_str(), "display": cx.display});
        if let Some(pin) = &cx.pin {
            join["pin"] = json!(pin.expose());
        }
        handle
            .message("join as publisher", join, None)
            .await
            .map_err(|e| errors::map(e, context))?;
        let offer = peer.create_offer().await?;
        offered = Some(offer.clone());
        let answer = handle
            .message(
                "publish",
                json!({"request": "publish"}),
                Some(Jsep {
                    kind: JsepType::Offer,
                    sdp: offer,
                }),
            )
            .await
            .map_err(|e| errors::map(e, context))?;
        let answer = answer.jsep.ok_or_else(|| {
            BackendError::new(
                ErrorCode::PUBLISH_WEBRTC_FAILED,
                "Janus answered the publish without SDP",
            )
        })?;
        peer.apply_answer(&answer.sdp).await?;
    } else {
        let mut join = json!({"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": cx.stream.as_str()}]});
        if let Some(pin) = &cx.pin {
            join["pin"] = json!(pin.expose());
        }
        let attached = handle
            .message("subscribe", join, None)
            .await
            .map_err(|e| errors::map(e, context))?;
        let offer = attached.jsep.ok_or_else(|| {
            BackendError::new(
                ErrorCode::PLAY_WEBRTC_FAILED,
                "Janus offered the subscription without SDP",
            )
        })?;
        let answer = peer.answer_offer(&offer.sdp).await?;
        handle
            .message(
                "start",
                json!({"request": "start"}),
                Some(Jsep {
                    kind: JsepType::Answer,
                    sdp: answer,
                }),
            )
            .await
            .map_err(|e| errors::map(e, context))?;
    }
    if let Some(candidates) = peer.take_local_candidates() {
        tokio::spawn(trickle(handle.clone(), candidates));
    }
    // Up when Janus says DTLS is done.
    let mut state = peer.state();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(HandleEvent::WebrtcUp) => return Ok(offered),
                Some(HandleEvent::Trickle(candidate)) => {
                    if let Some(candidate) = ice_candidate(&candidate) {
                        let _ = peer.add_remote_candidate(&candidate);
                    }
                }
                Some(HandleEvent::Hangup { reason }) => {
                    return Err(BackendError::new(webrtc_code(cx.publishing), format!("Janus hung up during negotiation: {reason}")));
                }
                Some(_) => {}
                None => return Err(BackendError::new(ErrorCode::SFU_UNREACHABLE, "the Janus session ended during negotiation")),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(BackendError::new(webrtc_code(cx.publishing), "the peer closed during negotiation"));
                }
                let failure = match &*state.borrow() {
                    PeerState::MediaFailed(reason) if cx.publishing => Some((ErrorCode::PUBLISH_MEDIA_FAILED, reason.clone())),
                    other => other.failure().map(|reason| (webrtc_code(cx.publishing), reason.to_owned())),
                };
                if let Some((code, reason)) = failure {
                    return Err(BackendError::new(code, reason));
                }
            }
        }
    }
}

fn webrtc_code(publishing: bool) -> ErrorCode {
    if publishing {
        ErrorCode::PUBLISH_WEBRTC_FAILED
    } else {
        ErrorCode::PLAY_WEBRTC_FAILED
    }
}

/// Forwards our ICE candidates to Janus, then tells it gathering is complete.
async fn trickle(handle: Handle, mut candidates: mpsc::UnboundedReceiver<IceCandidate>) {
    while let Some(candidate) = candidates.recv().await {
        let c = TrickleCandidate::Candidate {
            candidate: candidate.candidate,
            sdp_m_line_index: candidate.sdp_m_line_index,
            sdp_mid: None,
        };
        if handle.trickle(c).await.is_err() {
            return;
        }
    }
    let _ = handle
        .trickle(TrickleCandidate::Completed { completed: true })
        .await;
}

pub(super) fn ice_candidate(candidate: &TrickleCandidate) -> Option<IceCandidate> {
    match candidate {
        TrickleCandidate::Candidate {
            candidate,
            sdp_m_line_index,
            ..
        } => Some(IceCandidate {
            sdp_m_line_index: *sdp_m_line_index,
            candidate: candidate.clone(),
        }),
        TrickleCandidate::Completed { .. } => None,
    }
}

/// Time allowed for a negotiation up to connected media.
pub(super) fn negotiation_timeout(request_timeout: Duration) -> Duration {
    (request_timeout * 2).max(Duration::from_secs(10))
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
