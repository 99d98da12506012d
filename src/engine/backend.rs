//! The two boundaries the engine drives: the rooms backend (the SFU's signalling) and the
//! media engine (capture, encode, WebRTC peers), joined by [`WebRtcPeer`].
//!
//! Ordering contract: calling a [`RoomBackend`] method *registers* the operation; the
//! returned future only waits for its outcome. Operations on one room are applied in the
//! order they were registered, so the engine can submit "unpublish s, then publish s" or
//! "logout r, then login r" from its single task without awaiting in between.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::error::BackendError;
use super::event::{BroadcastMessage, StreamInfo, UserInfo};
use super::servers::ServerName;
use super::types::{Channel, Direction, PlayOutput, RoomId, StreamId, UpdateType, User, UserId};
use crate::base::secret::Secret;

/// The outcome of a registered backend operation.
pub type OpFuture<T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'static>>;

/// A WebRTC peer connection owned by the media engine, negotiated by the rooms backend.
pub type PeerHandle = Arc<dyn WebRtcPeer>;

/// The SFU side: rooms, presence, messages and the signalling of published and played
/// streams. Implemented by `rooms::janus`.
pub trait RoomBackend: Send + Sync + 'static {
    /// Joins `room` on `server` as `user`. If the backend still holds state for `room`
    /// (a lost connection being re-established), it is replaced. A failed login leaves
    /// nothing behind. Every later operation on `room` goes to the same server, until
    /// it is left.
    fn login(
        &self,
        room: &RoomId,
        server: &ServerName,
        user: &User,
        token: Option<&Secret>,
    ) -> OpFuture<()>;

    /// Leaves `room` and releases everything held for it. Unknown rooms are not an error.
    fn logout(&self, room: &RoomId) -> OpFuture<()>;

    /// Publishes `peer` into `room` as `stream`; resolves once media flows to the SFU.
    fn publish(&self, room: &RoomId, stream: &StreamId, peer: PeerHandle) -> OpFuture<()>;

    /// Server-side fan-out: makes `channel` appear in `room` as `stream`, relayed by the
    /// SFU from the box's one upload of that channel to the room's server (opened with
    /// `media` by the first stream that needs it, released after the last). Resolves once
    /// the relay is set up, with a view of the shared upload's peer: its state and stats
    /// are the upload's, and closing it releases nothing (`unpublish` does). Fails with
    /// `PUBLISH_FANOUT_UNSUPPORTED` when the server cannot relay.
    fn publish_relayed(
        &self,
        room: &RoomId,
        stream: &StreamId,
        channel: Channel,
        media: Arc<dyn MediaEngine>,
    ) -> OpFuture<PeerHandle> {
        let _ = (stream, channel, media);
        let message = format!(
            "the rooms backend of `{room}` cannot relay streams (server fan-out): set rooms.fanout = \"device\""
        );
        Box::pin(async move {
            Err(BackendError::new(
                super::error::ErrorCode::PUBLISH_FANOUT_UNSUPPORTED,
                message,
            ))
        })
    }

    /// Stops publishing `stream` in `room` (either way it was published). Unknown streams
    /// are not an error.
    fn unpublish(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()>;

    /// Subscribes `peer` to `stream` in `room`; resolves once media flows from the SFU.
    /// Fails with `PLAY_STREAM_NOT_FOUND` when the stream is not published there (yet).
    fn play(&self, room: &RoomId, stream: &StreamId, peer: PeerHandle) -> OpFuture<()>;

    /// Stops playing `stream` from `room`. Unknown streams are not an error.
    fn stop_playing(&self, room: &RoomId, stream: &StreamId) -> OpFuture<()>;

    /// Sends a broadcast message to everyone in `room`; resolves to its message id.
    fn send_broadcast_message(&self, room: &RoomId, text: &str) -> OpFuture<u64>;

    /// Sends a custom command to `to` (everyone in the room when empty).
    fn send_custom_command(&self, room: &RoomId, to: &[UserId], text: &str) -> OpFuture<()>;

    /// The box lost a network address: connections built on it are dead, even if no
    /// error says so yet. The backend drops them and connects again at once (its rooms
    /// come back as after any lost connection).
    fn network_changed(&self) {}
}

/// What a rooms backend reports on its own, through the channel it was built with.
#[derive(Debug, Clone)]
pub enum BackendEvent {
    Users {
        room: RoomId,
        update: UpdateType,
        users: Vec<UserInfo>,
    },
    Streams {
        room: RoomId,
        update: UpdateType,
        streams: Vec<StreamInfo>,
    },
    BroadcastMessage {
        room: RoomId,
        message: BroadcastMessage,
    },
    CustomCommand {
        room: RoomId,
        from_user: UserInfo,
        command: String,
    },
    /// The room's connection to the SFU broke (session lost, handle failed). The engine
    /// reports Reconnecting and logs in again with backoff.
    RoomLost { room: RoomId, reason: String },
    /// One published or played stream's SFU side broke while its room is fine (its
    /// handle hung up). The engine restarts the stream if it was up.
    StreamLost {
        room: RoomId,
        stream: StreamId,
        direction: Direction,
        reason: String,
    },
    /// The SFU removed us from the room (kicked, or the room was destroyed).
    KickedOut { room: RoomId, error: BackendError },
    /// A session to `server` is up (again): rooms on it waiting to log in again need
    /// not wait for their next backoff.
    ServerConnected { server: ServerName },
}

/// The media side: sources, the shared encoders and a WebRTC peer per published or
/// played stream. Implemented by `media`.
#[async_trait]
pub trait MediaEngine: Send + Sync + 'static {
    /// A peer that sends `channel`'s encoded media; the encoder is shared by every peer
    /// of the channel.
    async fn open_publisher(
        &self,
        room: &RoomId,
        stream: &StreamId,
        channel: Channel,
    ) -> Result<PeerHandle, BackendError>;

    /// A peer that receives a stream and renders it to `output`.
    async fn open_player(
        &self,
        room: &RoomId,
        stream: &StreamId,
        output: PlayOutput,
    ) -> Result<PeerHandle, BackendError>;

    /// Sources, encoder and health, for the state snapshot.
    fn snapshot(&self) -> MediaSnapshot;

    /// Goes up by one each time the box loses a network address: every WebRTC path
    /// built on it is dead. `None`: not watched (test doubles).
    fn address_changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

// The peer types the signalling and the WebRTC layer share live in `crate::peer`, which
// neither side owns; they are re-exported here for the engine's backends.
pub use crate::peer::{IceCandidate, PeerState};

/// Counters of one peer, for the state snapshot. Fields that do not apply are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerStats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_encoded: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_decoded: Option<u64>,
    /// Wall-clock time of the last decoded frame, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_frame_unix_ms: Option<u64>,
    /// Capture → decoded latency of the last stamped frame (BLK1), in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The path the media takes: `udp` or `tcp` (direct to the SFU), `relay-udp`,
    /// `relay-tcp` or `relay-tls` (through a TURN relay); absent until ICE chose one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// How a published stream does in its room, over the last sampling period (about 2 s).
/// The MQTT contract's `publisher_quality_update` (docs/mqtt.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublisherQuality {
    /// What the room's branch sent (video and audio RTP payloads), in kbit/s.
    pub kbps_sent: u32,
    /// The room's congestion-control estimate of its path (whole transport), in kbit/s;
    /// absent when congestion control is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate_kbps: Option<u32>,
    /// Packets lost on the way to the SFU, in % (from its receiver reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_percent: Option<f64>,
    /// Round-trip time to the SFU, in ms (from its receiver reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Video frames per second sent into the room.
    pub fps: f64,
}

/// How a played stream does, over the last sampling period (about 2 s). The MQTT
/// contract's `player_quality_update` (docs/mqtt.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlayerQuality {
    /// What arrived, in kbit/s.
    pub kbps_received: u32,
    /// Packets lost on the way from the SFU, in %.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_percent: Option<f64>,
    /// Video frames decoded per second.
    pub fps_decoded: f64,
    /// Inter-arrival jitter the RTP session measured, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// The jitter buffer's delay (`player.latency_ms`), in ms.
    pub jitter_buffer_ms: u32,
}

/// One stream's quality figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StreamQuality {
    Publisher(PublisherQuality),
    Player(PlayerQuality),
}

/// One WebRTC peer connection. The media engine creates it; the rooms backend drives the
/// offer/answer exchange and ICE through it; the engine watches its state and closes it.
#[async_trait]
pub trait WebRtcPeer: Send + Sync + 'static {
    /// A short label for logs, e.g. `publish bigclass/box-17-main`.
    fn label(&self) -> &str;

    /// Publisher side: an SDP offer, made once the media's caps are known.
    async fn create_offer(&self) -> Result<String, BackendError>;

    /// Publisher side: applies the SFU's SDP answer.
    async fn apply_answer(&self, sdp: &str) -> Result<(), BackendError>;

    /// Subscriber side: applies the SFU's SDP offer and returns our answer.
    async fn answer_offer(&self, sdp: &str) -> Result<String, BackendError>;

    /// Local ICE candidates as they are gathered; the channel closes when gathering is
    /// complete. Can be taken once.
    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>>;

    /// Adds a candidate received from the SFU.
    fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), BackendError>;

    /// The connection state, updated as it changes.
    fn state(&self) -> watch::Receiver<PeerState>;

    fn stats(&self) -> PeerStats;

    /// The latest quality figures, once the peer has sent or received for a while.
    fn quality(&self) -> Option<StreamQuality> {
        None
    }

    /// Tears the peer down (its pipeline branch goes to NULL and is removed).
    async fn close(&self);
}

/// The media part of the state snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaSnapshot {
    pub sources: Vec<SourceSnapshot>,
    /// The video encoder element in use, e.g. `x264enc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
    /// The microphones' processing; absent when no channel has a microphone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_processing: Option<AudioProcessingSnapshot>,
    /// Each fast path (`[media]`, docs/workarounds.md): `engaged` (with how many streams
    /// took it, for those installed per stream) or `off: <why>`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fast_paths: std::collections::BTreeMap<String, String>,
}

/// What is done to the microphones now (`[audio_processing]`, as a reload left it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioProcessingSnapshot {
    #[serde(flatten)]
    pub stages: crate::config::audio_processing::AudioProcessingConfig,
    /// The channels whose microphone is processed.
    pub channels: Vec<Channel>,
    /// The speaker plays, so echo cancellation has a reference to cancel (without it
    /// there is nothing to cancel and the stage idles).
    pub echo_reference: bool,
}

/// One configured source (channel) and its health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceSnapshot {
    pub channel: Channel,
    pub video: String,
    pub audio: String,
    pub running: bool,
    /// The video bitrate the encoder runs at (it follows the lowest room); absent when
    /// the source is stopped or the camera delivers H.264 itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
