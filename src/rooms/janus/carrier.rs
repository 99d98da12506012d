//! Server-side fan-out (`rooms.fanout = "server"`): the box uploads each channel once to
//! Janus, into a private *carrier room* of its own, and Janus relays that upload into
//! every room the channel is published in, as a VideoRoom remote publisher
//! (`add_remote_publisher` in the room, `publish_remotely` from the carrier).
//!
//! Why a room of its own rather than one of the classroom rooms: a remote publisher is fed
//! by its source publisher's forwarders, and they end when that publisher leaves its room.
//! With the upload in a classroom room, logging out of that room would cut every other
//! room until a new upload was negotiated (a second or more). No classroom logout touches
//! the carrier room: logging out of a room removes only that room's remote publisher.
//! The carrier's upload lives while any room relays it; the carrier room is destroyed
//! when the last channel's upload goes. It is unlisted and has a pin and a secret new for
//! every run (see [`Credentials`]): it carries what goes into pin-protected rooms too.
//!
//! Janus 1.1.2 relays plain RTP (SRTP for the relay came in 1.3.0): the remote publishers
//! are bound to 127.0.0.1, so the relay never leaves the Janus host.
//!
//! One actor owns the carriers (one per channel) of the one Janus server; each room's
//! relay task ([`run_relay`]) holds a [`Lease`] on its channel's carrier and owns its
//! remote publisher, so leaving a room (its tasks stop) cleans up exactly that room.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::{Handle, HandleEvent, HandleEvents, JanusClient, JanusError};
use super::protocol::{Publisher, RelayRequest, RemoteStream, VideoRoom, remote_streams};
use super::room::{
    StreamContext, VIDEOROOM, ice_candidate, negotiate, negotiation_timeout, parse_videoroom,
};
use super::{JanusSettings, errors};
use crate::base::secret::Secret;
use crate::engine::backend::{
    BackendEvent, IceCandidate, MediaEngine, PeerHandle, PeerState, PeerStats, StreamQuality,
    WebRtcPeer,
};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::types::{Channel, RoomId, StreamId, User};

/// VideoRoom's "unknown request": a Janus older than 1.1.0, without remote publishers.
const VIDEOROOM_INVALID_REQUEST: i64 = 423;
const VIDEOROOM_ROOM_EXISTS: i64 = 427;
const VIDEOROOM_MISSING_ELEMENT: i64 = 429;
const VIDEOROOM_UNAUTHORIZED: i64 = 433;
const VIDEOROOM_ID_EXISTS: i64 = 436;
/// Janus binds the remote publishers' sockets here: the relay stays on the Janus host.
const RELAY_IFACE: &str = "127.0.0.1";

/// A carrier room of the box logged in as `user`; `tag` is this run's.
pub(super) fn carrier_room(user: &User, tag: &str) -> String {
    format!("roomcast-carrier-{}-{tag}", user.user_id)
}

/// The carrier room's credentials, new for every run of the box. The room carries what
/// the box publishes into every room, pin-protected ones included: without its pin no one
/// can join it or subscribe there, without its secret no one can relay from it or
/// destroy it. A room an earlier run left (it crashed) keeps its own, so each run has a
/// room of its own (the name carries `tag`); the one left is empty and Janus forgets it
/// when it restarts.
struct Credentials {
    tag: String,
    pin: Secret,
    secret: Secret,
}

impl Credentials {
    fn new() -> Self {
        Self {
            tag: format!("{:08x}", rand::random::<u32>()),
            pin: Secret::new(format!("{:032x}", rand::random::<u128>())),
            secret: Secret::new(format!("{:032x}", rand::random::<u128>())),
        }
    }
}

fn unsupported(message: String) -> BackendError {
    BackendError::new(ErrorCode::PUBLISH_FANOUT_UNSUPPORTED, message)
}

/// A cloneable handle to the carriers' actor.
#[derive(Clone)]
pub(super) struct Carriers {
    ops: mpsc::UnboundedSender<CarrierOp>,
}

enum CarrierOp {
    Acquire {
        channel: Channel,
        user: User,
        media: Arc<dyn MediaEngine>,
        reply: oneshot::Sender<Result<Lease, BackendError>>,
    },
    Release {
        channel: Channel,
        generation: u64,
    },
    Lost {
        channel: Channel,
        generation: u64,
        reason: String,
    },
    /// Answered once every op sent before it is done (shutdown: the last releases).
    Flush {
        reply: oneshot::Sender<()>,
    },
}

/// A room's hold on its channel's carrier; dropping it releases the hold.
pub(super) struct Lease {
    channel: Channel,
    generation: u64,
    /// The carrier room and the upload's publisher id in it.
    pub room: String,
    pub publisher_id: String,
    pub streams: Arc<Vec<RemoteStream>>,
    /// The upload's peer as the engine sees a relayed stream.
    pub view: PeerHandle,
    /// The carrier room's secret, which relaying from it needs.
    pub secret: Secret,
    ops: mpsc::UnboundedSender<CarrierOp>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.ops.send(CarrierOp::Release {
            channel: self.channel,
            generation: self.generation,
        });
    }
}

impl Carriers {
    /// Starts the actor; it ends when the last handle and lease are gone.
    pub(super) fn start(
        client: JanusClient,
        settings: Arc<JanusSettings>,
        events: mpsc::Sender<BackendEvent>,
    ) -> Self {
        let (ops, ops_rx) = mpsc::unbounded_channel();
        let actor = CarrierActor {
            client,
            settings,
            events,
            ops: ops_rx,
            me: ops.downgrade(),
            carriers: BTreeMap::new(),
            room: None,
            credentials: Credentials::new(),
            next_generation: 0,
        };
        tokio::spawn(actor.run());
        Self { ops }
    }

    /// A hold on `channel`'s carrier, set up first if there is none.
    async fn acquire(
        &self,
        channel: Channel,
        user: User,
        media: Arc<dyn MediaEngine>,
    ) -> Result<Lease, BackendError> {
        let (reply, answer) = oneshot::channel();
        let gone = || BackendError::new(ErrorCode::SFU_UNREACHABLE, "the carrier task ended");
        self.ops
            .send(CarrierOp::Acquire {
                channel,
                user,
                media,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Waits (at most `within`) until the actor has done everything asked of it so far:
    /// after the rooms are left, the last uploads are taken down and the carrier room
    /// destroyed, so shutdown leaves no empty room of ours on Janus.
    pub(super) async fn flush(&self, within: std::time::Duration) {
        let (reply, done) = oneshot::channel();
        if self.ops.send(CarrierOp::Flush { reply }).is_ok() {
            let _ = tokio::time::timeout(within, done).await;
        }
    }
}

/// One channel's upload in the carrier room.
struct Carrier {
    generation: u64,
    users: usize,
    room: String,
    publisher_id: String,
    streams: Arc<Vec<RemoteStream>>,
    peer: PeerHandle,
    view: PeerHandle,
    handle: Handle,
    state: watch::Sender<PeerState>,
    watching: CancellationToken,
}

struct CarrierActor {
    client: JanusClient,
    settings: Arc<JanusSettings>,
    /// Only to build the negotiation context (the carrier reports through its view).
    events: mpsc::Sender<BackendEvent>,
    ops: mpsc::UnboundedReceiver<CarrierOp>,
    me: mpsc::WeakUnboundedSender<CarrierOp>,
    carriers: BTreeMap<Channel, Carrier>,
    /// The carrier room, while it exists.
    room: Option<String>,
    credentials: Credentials,
    next_generation: u64,
}

impl CarrierActor {
    async fn run(mut self) {
        // One op at a time: a carrier being set up holds up the others (at most the
        // negotiation timeout); a lease asked for meanwhile gets the carrier being set up.
        while let Some(op) = self.ops.recv().await {
            match op {
                CarrierOp::Acquire {
                    channel,
                    user,
                    media,
                    reply,
                } => {
                    let lease = self.acquire(channel, &user, media).await;
                    if let Err(Ok(lease)) = reply.send(lease) {
                        drop(lease); // the asker is gone: release at once
                    }
                }
                CarrierOp::Release {
                    channel,
                    generation,
                } => self.release(channel, generation).await,
                CarrierOp::Lost {
                    channel,
                    generation,
                    reason,
                } => {
                    if self
                        .carriers
                        .get(&channel)
                        .is_some_and(|c| c.generation == generation)
                        && let Some(carrier) = self.carriers.remove(&channel)
                    {
                        warn!(%channel, "the upload of the server fan-out failed: {reason}");
                        let _ = carrier.state.send(PeerState::Failed(format!(
                            "the box's upload to the carrier room failed: {reason}"
                        )));
                        self.take_down(carrier).await;
                    }
                }
                CarrierOp::Flush { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        for (_, carrier) in std::mem::take(&mut self.carriers) {
            self.take_down(carrier).await;
        }
    }

    fn lease(&self, channel: Channel) -> Option<Lease> {
        let carrier = self.carriers.get(&channel)?;
        Some(Lease {
            channel,
            generation: carrier.generation,
            room: carrier.room.clone(),
            publisher_id: carrier.publisher_id.clone(),
            streams: carrier.streams.clone(),
            view: carrier.view.clone(),
            secret: self.credentials.secret.clone(),
            ops: self.me.upgrade()?,
        })
    }

    async fn acquire(
        &mut self,
        channel: Channel,
        user: &User,
        media: Arc<dyn MediaEngine>,
    ) -> Result<Lease, BackendError> {
        if !self.carriers.contains_key(&channel) {
            match self.open(channel, user, media).await {
                Ok(carrier) => {
                    self.carriers.insert(channel, carrier);
                }
                Err(e) => {
                    self.destroy_room_if_unused().await;
                    return Err(e);
                }
            }
        }
        let lease = self.lease(channel).ok_or_else(|| {
            BackendError::new(ErrorCode::SFU_UNREACHABLE, "the carrier task is stopping")
        })?;
        if let Some(carrier) = self.carriers.get_mut(&channel) {
            carrier.users += 1;
        }
        Ok(lease)
    }

    async fn release(&mut self, channel: Channel, generation: u64) {
        // A lease on an upload that already failed only counts for the room below.
        if let Some(carrier) = self.carriers.get_mut(&channel)
            && carrier.generation == generation
        {
            carrier.users = carrier.users.saturating_sub(1);
            if carrier.users > 0 {
                return;
            }
            if let Some(carrier) = self.carriers.remove(&channel) {
                info!(%channel, room = %carrier.room, "no room relays the upload any more: taking it down");
                let _ = carrier.state.send(PeerState::Closed);
                self.take_down(carrier).await;
            }
        }
        self.destroy_room_if_unused().await;
    }

    /// Destroys the carrier room once no channel uploads into it.
    async fn destroy_room_if_unused(&mut self) {
        if self.carriers.is_empty()
            && let Some(room) = self.room.take()
        {
            self.destroy_room(&room).await;
        }
    }

    async fn take_down(&self, carrier: Carrier) {
        carrier.watching.cancel();
        let _ = carrier.handle.detach().await;
        carrier.peer.close().await;
    }

    /// Sets up `channel`'s upload: the carrier room (created if needed, and the server
    /// checked for remote publishers), a publisher peer from `media`, its negotiation.
    async fn open(
        &mut self,
        channel: Channel,
        user: &User,
        media: Arc<dyn MediaEngine>,
    ) -> Result<Carrier, BackendError> {
        let timeout = self.client.request_timeout();
        self.client
            .wait_connected(timeout)
            .await
            .map_err(|e| errors::map(e, "publish"))?;
        let room = self
            .room
            .clone()
            .unwrap_or_else(|| carrier_room(user, &self.credentials.tag));
        self.ensure_room(&room).await?;
        self.room = Some(room.clone());
        let invalid = |e: crate::engine::EngineError| {
            BackendError::new(
                ErrorCode::PUBLISH_FANOUT_UNSUPPORTED,
                format!("no carrier room can be named after this identity ({e})"),
            )
        };
        let room_id = RoomId::parse(room.as_str()).map_err(invalid)?;
        let stream = StreamId::parse(format!("carrier-{channel}")).map_err(invalid)?;
        let peer = media.open_publisher(&room_id, &stream, channel).await?;
        let (handle, mut events) = match self.client.attach(VIDEOROOM).await {
            Ok(attached) => attached,
            Err(e) => {
                peer.close().await;
                return Err(errors::map(e, "publish"));
            }
        };
        let cx = StreamContext {
            client: self.client.clone(),
            room: room_id,
            stream: stream.clone(),
            display: super::protocol::display_of(user),
            pin: Some(self.credentials.pin.clone()),
            direction: crate::engine::types::Direction::Publish,
            events: self.events.clone(),
        };
        let limit = negotiation_timeout(timeout);
        let negotiated = tokio::time::timeout(limit, negotiate(&cx, &handle, &mut events, &peer))
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::new(
                    ErrorCode::PUBLISH_WEBRTC_FAILED,
                    format!("the upload to the carrier room was not up within {limit:?}"),
                ))
            });
        let streams = match negotiated {
            Ok(Some(offer)) => remote_streams(&offer),
            Ok(None) => Vec::new(),
            Err(e) => {
                let _ = handle.detach().await;
                peer.close().await;
                return Err(e);
            }
        };
        if streams.is_empty() {
            let _ = handle.detach().await;
            peer.close().await;
            return Err(BackendError::new(
                ErrorCode::PUBLISH_WEBRTC_FAILED,
                "the upload's offer has no audio or video to relay",
            ));
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let (state, state_rx) = watch::channel(peer.state().borrow().clone());
        let view: PeerHandle = Arc::new(RelayedPeer {
            label: format!("publish {room} (server fan-out of `{channel}`)"),
            inner: peer.clone(),
            state: state_rx,
        });
        let watching = CancellationToken::new();
        if let Some(ops) = self.me.upgrade() {
            tokio::spawn(watch_upload(Watch {
                channel,
                generation,
                events,
                peer: peer.clone(),
                state: state.clone(),
                ops,
                cancel: watching.clone(),
            }));
        }
        info!(%channel, %room, "the upload of the server fan-out is up");
        Ok(Carrier {
            generation,
            users: 0,
            room,
            publisher_id: stream.to_string(),
            streams: Arc::new(streams),
            peer,
            view,
            handle,
            state,
            watching,
        })
    }

    /// Makes sure the carrier room exists (private, never listed), and that this Janus
    /// has remote publishers at all.
    async fn ensure_room(&self, room: &str) -> Result<(), BackendError> {
        let (control, _events) = self
            .client
            .attach(VIDEOROOM)
            .await
            .map_err(|e| errors::map(e, "publish"))?;
        let result = async {
            // First, before anything is created: Janus before 1.1.0 has no remote
            // publishers ("unknown request"); a newer one answers that the probe's room or
            // publisher does not exist.
            let probe = RelayRequest::UnpublishRemotely {
                room,
                publisher_id: "roomcast-probe",
                remote_id: "roomcast-probe",
                secret: Some(self.credentials.secret.expose()),
            };
            let probed = match control
                .message("check for remote publishers", probe.body(), None)
                .await
            {
                Err(JanusError::Plugin {
                    code: VIDEOROOM_INVALID_REQUEST,
                    ..
                }) => Err(unsupported(format!(
                    "Janus at {} cannot relay a stream into other rooms (its VideoRoom has no remote publishers; they came in Janus 1.1.0): upgrade Janus, or set rooms.fanout = \"auto\" or \"device\"",
                    self.client.url()
                ))),
                Err(
                    e @ (JanusError::NotConnected { .. }
                    | JanusError::ConnectionLost
                    | JanusError::Timeout { .. }),
                ) => Err(errors::map(e, "publish")),
                _ => Ok(()),
            };
            probed?;
            let exists = control
                .message(
                    "check the carrier room exists",
                    RelayRequest::Exists { room }.body(),
                    None,
                )
                .await
                .map_err(|e| errors::map(e, "publish"))?;
            let exists = matches!(
                parse_videoroom(&exists)?,
                VideoRoom::Success {
                    exists: Some(true),
                    ..
                }
            );
            if !exists {
                let create = RelayRequest::Create {
                    room,
                    description: "roomcast carrier (server fan-out)",
                    is_private: true,
                    publishers: 4,
                    bitrate: self.settings.bitrate_bps,
                    videocodec: "h264",
                    audiocodec: "opus",
                    fir_freq: 0,
                    notify_joining: false,
                    permanent: false,
                    pin: self.credentials.pin.expose(),
                    secret: self.credentials.secret.expose(),
                    admin_key: self.settings.admin_key.as_ref().map(|k| k.expose()),
                };
                match control
                    .message("create the carrier room", create.body(), None)
                    .await
                {
                    Ok(_) => info!(%room, "created the carrier room"),
                    Err(JanusError::Plugin {
                        code: VIDEOROOM_ROOM_EXISTS,
                        ..
                    }) => {}
                    Err(e) => {
                        return Err(unsupported(format!(
                            "Janus refused to create the box's private carrier room `{room}`, which server fan-out needs ({e}): set janus.admin_key if the server wants one to create rooms, or set rooms.fanout = \"device\""
                        )));
                    }
                }
            }
            Ok(())
        }
        .await;
        let _ = control.detach().await;
        result
    }

    async fn destroy_room(&self, room: &str) {
        let Ok((control, _events)) = self.client.attach(VIDEOROOM).await else {
            return;
        };
        let destroy = RelayRequest::Destroy {
            room,
            secret: self.credentials.secret.expose(),
            permanent: false,
        };
        match control
            .message("destroy the carrier room", destroy.body(), None)
            .await
        {
            Ok(_) => info!(%room, "destroyed the carrier room"),
            Err(e) => {
                warn!(%room, "could not destroy the carrier room (it is empty; Janus forgets it when it restarts): {e}")
            }
        }
        let _ = control.detach().await;
    }
}

struct Watch {
    channel: Channel,
    generation: u64,
    events: HandleEvents,
    peer: PeerHandle,
    state: watch::Sender<PeerState>,
    ops: mpsc::UnboundedSender<CarrierOp>,
    cancel: CancellationToken,
}

/// Follows the upload: its peer's state goes to every room's view; its handle or peer
/// failing is reported to the actor (which fails every view, so each stream restarts).
async fn watch_upload(mut w: Watch) {
    let mut peer_state = w.peer.state();
    let reason = loop {
        tokio::select! {
            _ = w.cancel.cancelled() => return,
            event = w.events.recv() => match event {
                None => break "the Janus session ended".to_owned(),
                Some(HandleEvent::Hangup { reason }) => break format!("Janus hung up: {reason}"),
                Some(HandleEvent::Detached) => break "Janus detached the handle".to_owned(),
                Some(HandleEvent::Trickle(candidate)) => {
                    if let Some(candidate) = ice_candidate(&candidate) {
                        let _ = w.peer.add_remote_candidate(&candidate);
                    }
                }
                Some(_) => {}
            },
            changed = peer_state.changed() => {
                if changed.is_err() {
                    break "the upload's peer is gone".to_owned();
                }
                let now = peer_state.borrow_and_update().clone();
                if let Some(reason) = now.failure() {
                    break reason.to_owned();
                }
                let _ = w.state.send(now);
            }
        }
    };
    let _ = w.ops.send(CarrierOp::Lost {
        channel: w.channel,
        generation: w.generation,
        reason,
    });
}

/// What the engine holds for a relayed stream: the shared upload's state and counters.
/// It is never negotiated on its own, and closing it releases nothing (the room's relay
/// task does, when the stream is unpublished).
struct RelayedPeer {
    label: String,
    inner: PeerHandle,
    state: watch::Receiver<PeerState>,
}

fn not_negotiable() -> BackendError {
    BackendError::new(
        ErrorCode::PUBLISH_WEBRTC_FAILED,
        "a relayed stream has no WebRTC connection of its own",
    )
}

#[async_trait]
impl WebRtcPeer for RelayedPeer {
    fn label(&self) -> &str {
        &self.label
    }

    async fn create_offer(&self) -> Result<String, BackendError> {
        Err(not_negotiable())
    }

    async fn apply_answer(&self, _: &str) -> Result<(), BackendError> {
        Err(not_negotiable())
    }

    async fn answer_offer(&self, _: &str) -> Result<String, BackendError> {
        Err(not_negotiable())
    }

    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        None
    }

    fn add_remote_candidate(&self, _: &IceCandidate) -> Result<(), BackendError> {
        Ok(())
    }

    fn state(&self) -> watch::Receiver<PeerState> {
        self.state.clone()
    }

    fn stats(&self) -> PeerStats {
        self.inner.stats()
    }

    fn quality(&self) -> Option<StreamQuality> {
        self.inner.quality()
    }

    async fn close(&self) {}
}

// ---- one room's relay ------------------------------------------------------------------

/// What a room's relay task needs.
pub(super) struct RelayContext {
    pub client: JanusClient,
    pub carriers: Carriers,
    pub settings: Arc<JanusSettings>,
    pub room: RoomId,
    pub stream: StreamId,
    pub channel: Channel,
    pub user: User,
    pub display: String,
    pub media: Arc<dyn MediaEngine>,
}

/// A room's remote publisher, fed from its channel's carrier.
struct Relay {
    lease: Lease,
    handle: Handle,
    events: HandleEvents,
    remote_id: String,
}

/// Makes the stream appear in the room, relayed from the carrier; answers `reply` with
/// the carrier's view; then holds the relay until cancelled and takes it down.
pub(super) async fn run_relay(
    cx: RelayContext,
    reply: oneshot::Sender<Result<PeerHandle, BackendError>>,
    cancel: CancellationToken,
) {
    // Not cancelled halfway: a remote publisher added must also be removed. Every step
    // is bounded by the request or negotiation timeout.
    let mut relay = match set_up(&cx).await {
        Ok(relay) => relay,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
    info!(carrier = %relay.lease.room, "stream relayed into the room by Janus");
    if reply.send(Ok(relay.lease.view.clone())).is_err() {
        cancel.cancel();
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            event = relay.events.recv() => if event.is_none() {
                // The session ended: the room reports it; the remote publisher is
                // replaced when the stream is relayed again.
                return;
            },
        }
    }
    take_down(&cx, &relay).await;
}

async fn set_up(cx: &RelayContext) -> Result<Relay, BackendError> {
    let lease = cx
        .carriers
        .acquire(cx.channel, cx.user.clone(), cx.media.clone())
        .await?;
    let (handle, events) = cx
        .client
        .attach(VIDEOROOM)
        .await
        .map_err(|e| errors::map(e, "publish"))?;
    let relay = Relay {
        remote_id: format!("{}/{}", cx.room, cx.stream),
        lease,
        handle,
        events,
    };
    match relay_into_room(cx, &relay).await {
        Ok(()) => Ok(relay),
        Err(e) => {
            take_down(cx, &relay).await;
            Err(e)
        }
    }
}

async fn relay_into_room(cx: &RelayContext, relay: &Relay) -> Result<(), BackendError> {
    let room = cx.room.as_str();
    let add = RelayRequest::AddRemotePublisher {
        room,
        id: cx.stream.as_str(),
        display: &cx.display,
        iface: RELAY_IFACE,
        streams: &relay.lease.streams,
    };
    let added = match relay
        .handle
        .message("add the remote publisher", add.body(), None)
        .await
    {
        // The id is taken. Ours, left behind by an earlier life of this stream (a relay
        // of the box's display): replace it. Anyone else's: the stream id is in use.
        Err(JanusError::Plugin {
            code: VIDEOROOM_ID_EXISTS,
            ..
        }) => {
            let ours = remove_left_behind(
                &relay.handle,
                room,
                &cx.display,
                &[Publisher {
                    id: cx.stream.to_string(),
                    display: Some(cx.display.clone()),
                }],
                Some(cx.stream.as_str()),
            )
            .await
            .iter()
            .any(|id| id == cx.stream.as_str());
            if !ours {
                return Err(BackendError::new(
                    ErrorCode::PUBLISH_STREAM_ID_IN_USE,
                    format!(
                        "someone in room `{room}` already publishes under stream id `{}`",
                        cx.stream
                    ),
                ));
            }
            relay
                .handle
                .message("add the remote publisher", add.body(), None)
                .await
        }
        other => other,
    }
    .map_err(|e| relay_error(e, cx))?;
    let (ip, port, rtcp_port) = match parse_videoroom(&added)? {
        VideoRoom::Success {
            ip,
            port: Some(port),
            rtcp_port,
            ..
        } => (ip, port, rtcp_port.unwrap_or(0)),
        other => {
            return Err(BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!("unexpected VideoRoom answer to add_remote_publisher: {other:?}"),
            ));
        }
    };
    let host = ip.unwrap_or_else(|| RELAY_IFACE.to_owned());
    let forward = RelayRequest::PublishRemotely {
        room: &relay.lease.room,
        publisher_id: &relay.lease.publisher_id,
        remote_id: &relay.remote_id,
        host: &host,
        port,
        rtcp_port,
        secret: Some(relay.lease.secret.expose()),
        admin_key: cx.settings.admin_key.as_ref().map(|k| k.expose()),
    };
    relay
        .handle
        .message("relay the upload into the room", forward.body(), None)
        .await
        .map_err(|e| relay_error(e, cx))?;
    wait_until_listed(cx, relay).await
}

/// How often [`wait_until_listed`] asks Janus.
const LISTED_POLL: Duration = Duration::from_millis(10);

/// Janus 1.1.2 answers `add_remote_publisher` before the remote publisher is in the room:
/// its own thread adds it to the room's participants when it starts. Until then a viewer
/// subscribing to the stream gets "No such feed", so the stream is not reported
/// published before Janus lists it (usually the first answer; bounded by the request
/// timeout).
async fn wait_until_listed(cx: &RelayContext, relay: &Relay) -> Result<(), BackendError> {
    let room = cx.room.as_str();
    let deadline = Instant::now() + cx.client.request_timeout();
    loop {
        let listed = relay
            .handle
            .message(
                "list the room's participants",
                RelayRequest::Listparticipants { room }.body(),
                None,
            )
            .await
            .map_err(|e| relay_error(e, cx))?;
        if let VideoRoom::Participants { participants } = parse_videoroom(&listed)?
            && participants
                .iter()
                .any(|p| p.remote && p.id == cx.stream.as_str())
        {
            return Ok(());
        }
        if Instant::now() + LISTED_POLL >= deadline {
            return Err(BackendError::new(
                ErrorCode::SFU_REFUSED,
                format!(
                    "Janus accepted the relay of `{}` into room `{room}` but did not list it \
                     within {} ms; see Janus's log (the remote publisher's thread may have \
                     failed to start)",
                    cx.stream,
                    cx.client.request_timeout().as_millis()
                ),
            ));
        }
        tokio::time::sleep(LISTED_POLL).await;
    }
}

/// Removes the room's remote publisher and its feed from the carrier (each best effort),
/// then releases the handle; the lease goes with the relay.
async fn take_down(cx: &RelayContext, relay: &Relay) {
    let stop = RelayRequest::UnpublishRemotely {
        room: &relay.lease.room,
        publisher_id: &relay.lease.publisher_id,
        remote_id: &relay.remote_id,
        secret: Some(relay.lease.secret.expose()),
    };
    if let Err(e) = relay
        .handle
        .message("stop relaying into the room", stop.body(), None)
        .await
    {
        debug!("unpublish_remotely: {e}");
    }
    let remove = RelayRequest::RemoveRemotePublisher {
        room: cx.room.as_str(),
        id: cx.stream.as_str(),
    };
    if let Err(e) = relay
        .handle
        .message("remove the remote publisher", remove.body(), None)
        .await
    {
        debug!("remove_remote_publisher: {e}");
    }
    let _ = relay.handle.detach().await;
    info!("relay into the room taken down");
}

fn relay_error(error: JanusError, cx: &RelayContext) -> BackendError {
    match error {
        JanusError::Plugin {
            code: VIDEOROOM_INVALID_REQUEST,
            ..
        } => unsupported(format!(
            "Janus at {} cannot relay a stream into room `{}` (no VideoRoom remote publishers; they came in Janus 1.1.0): upgrade Janus, or set rooms.fanout = \"auto\" or \"device\"",
            cx.client.url(),
            cx.room
        )),
        JanusError::Plugin {
            code, ref reason, ..
        } if code == VIDEOROOM_UNAUTHORIZED
            || (code == VIDEOROOM_MISSING_ELEMENT
                && (reason.contains("(secret)") || reason.contains("(admin_key)"))) =>
        {
            unsupported(format!(
                "Janus refused to relay into room `{}` ({reason}): the room has an edit secret roomcast does not know, or the server locks RTP forwarding behind janus.admin_key; set janus.admin_key, or rooms.fanout = \"device\"",
                cx.room
            ))
        }
        other => errors::map(other, "publish"),
    }
}

/// Removes the remote publishers an earlier life of this box left in `room` (it crashed
/// or lost Janus while relaying: unlike a WebRTC publisher, a remote publisher has no
/// session that ends with it). They carry the box's `display`; `publishers` is the room's
/// list at join; `only` limits it to one id. Returns the ids removed. Best effort: a
/// failure leaves them listed.
pub(super) async fn remove_left_behind(
    handle: &Handle,
    room: &str,
    display: &str,
    publishers: &[Publisher],
    only: Option<&str>,
) -> Vec<String> {
    if !publishers
        .iter()
        .any(|p| p.display.as_deref() == Some(display))
    {
        return Vec::new();
    }
    let listed = handle
        .message(
            "list the room's participants",
            RelayRequest::Listparticipants { room }.body(),
            None,
        )
        .await;
    let participants = match listed.map(|reply| parse_videoroom(&reply)) {
        Ok(Ok(VideoRoom::Participants { participants })) => participants,
        _ => return Vec::new(),
    };
    let mut removed = Vec::new();
    for p in participants
        .into_iter()
        .filter(|p| p.remote && p.display.as_deref() == Some(display))
        .filter(|p| only.is_none_or(|id| p.id == id))
    {
        let remove = RelayRequest::RemoveRemotePublisher { room, id: &p.id };
        match handle
            .message("remove a remote publisher left behind", remove.body(), None)
            .await
        {
            Ok(_) => {
                info!(stream = %p.id, "removed a relayed stream an earlier run left in the room");
                removed.push(p.id);
            }
            Err(e) => {
                warn!(stream = %p.id, "could not remove a relayed stream an earlier run left in the room: {e}")
            }
        }
    }
    removed
}
