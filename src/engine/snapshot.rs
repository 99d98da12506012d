//! The engine's state as callers see it (`state()`, the MQTT `state` topic).

use serde::Serialize;

use super::backend::{MediaSnapshot, PeerStats, PlayerQuality, PublisherQuality};
use super::event::{StreamInfo, UserInfo};
use super::servers::ServerName;
use super::types::{
    Channel, Fanout, PlayOutput, PlayerState, PublisherState, RoomId, RoomMode, RoomState,
    StreamId, User,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineSnapshot {
    pub room_mode: RoomMode,
    pub multi_room_enabled: bool,
    pub max_rooms: usize,
    /// The identity in use while any room is logged in.
    pub user: Option<User>,
    pub rooms: Vec<RoomSnapshot>,
    pub publishing: Vec<PublishSnapshot>,
    pub playing: Vec<PlaySnapshot>,
    #[serde(flatten)]
    pub media: MediaSnapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomSnapshot {
    pub room_id: RoomId,
    /// The SFU server the room is on: `default` (`[janus]`) or a `[janus.servers.<name>]`.
    pub server: ServerName,
    pub state: RoomState,
    /// Other users present in the room.
    pub users: Vec<UserInfo>,
    /// Streams others publish in the room.
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishSnapshot {
    pub stream_id: StreamId,
    pub room_id: RoomId,
    pub channel: Channel,
    pub state: PublisherState,
    /// How the stream reaches its room: its own upload (`device`) or relayed by the SFU
    /// from the box's one upload to that server (`server`). Absent until it is decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<Fanout>,
    /// In `server` fan-out these are the counters of the one shared upload.
    pub stats: PeerStats,
    /// The latest quality figures (as in `publisher_quality_update`), once sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<PublisherQuality>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaySnapshot {
    pub stream_id: StreamId,
    pub room_id: RoomId,
    pub output: PlayOutput,
    pub state: PlayerState,
    pub stats: PeerStats,
    /// The latest quality figures (as in `player_quality_update`), once sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<PlayerQuality>,
}
