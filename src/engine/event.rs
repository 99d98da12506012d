//! Events the engine emits. Every event that belongs to a room carries its `room_id`;
//! their JSON form (field `event`) is the MQTT contract's, see `docs/mqtt.md`.

use serde::{Deserialize, Serialize};

use super::backend::{PlayerQuality, PublisherQuality};
use super::error::ErrorCode;
use super::servers::ServerName;
use super::types::{PlayerState, PublisherState, RoomId, RoomStateReason, StreamId, UpdateType};

/// A user as another party reported it. Remote parties are not held to our id rules, so
/// these are plain strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserInfo {
    pub user_id: String,
    pub user_name: String,
}

/// A stream published in a room, and who publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub stream_id: String,
    pub user: UserInfo,
}

/// One received broadcast message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastMessage {
    pub message: String,
    pub message_id: u64,
    /// When the sender sent it, milliseconds since the Unix epoch.
    pub send_time: u64,
    pub from_user: UserInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RoomStateChanged {
        room_id: RoomId,
        /// The SFU server the room is on (`default` or a `[janus.servers.<name>]`);
        /// absent when the login was refused before a server was chosen.
        #[serde(skip_serializing_if = "Option::is_none")]
        server: Option<ServerName>,
        reason: RoomStateReason,
        error_code: ErrorCode,
        /// What went wrong, for people; present when `error_code` is not 0.
        #[serde(skip_serializing_if = "Option::is_none")]
        error_message: Option<String>,
    },
    RoomUserUpdate {
        room_id: RoomId,
        update_type: UpdateType,
        users: Vec<UserInfo>,
    },
    RoomStreamUpdate {
        room_id: RoomId,
        update_type: UpdateType,
        streams: Vec<StreamInfo>,
    },
    BroadcastMessage {
        room_id: RoomId,
        messages: Vec<BroadcastMessage>,
    },
    CustomCommand {
        room_id: RoomId,
        from_user: UserInfo,
        command: String,
    },
    PublisherStateUpdate {
        stream_id: StreamId,
        room_id: RoomId,
        state: PublisherState,
        error_code: ErrorCode,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_message: Option<String>,
    },
    PlayerStateUpdate {
        stream_id: StreamId,
        room_id: RoomId,
        state: PlayerState,
        error_code: ErrorCode,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_message: Option<String>,
    },
    /// Every `rooms.quality_interval_s` per published stream that is up.
    PublisherQualityUpdate {
        stream_id: StreamId,
        room_id: RoomId,
        quality: PublisherQuality,
    },
    /// Every `rooms.quality_interval_s` per played stream that is up.
    PlayerQualityUpdate {
        stream_id: StreamId,
        room_id: RoomId,
        quality: PlayerQuality,
    },
    /// After a restart, the room is being joined again from the saved desired state,
    /// with these streams. Its `room_state_changed` and stream events follow.
    RoomRestored {
        room_id: RoomId,
        /// The SFU server the room is logged in to again.
        server: ServerName,
        publishing: Vec<StreamId>,
        playing: Vec<StreamId>,
    },
}

impl Event {
    /// The room this event belongs to.
    pub fn room_id(&self) -> &RoomId {
        match self {
            Event::RoomStateChanged { room_id, .. }
            | Event::RoomUserUpdate { room_id, .. }
            | Event::RoomStreamUpdate { room_id, .. }
            | Event::BroadcastMessage { room_id, .. }
            | Event::CustomCommand { room_id, .. }
            | Event::PublisherStateUpdate { room_id, .. }
            | Event::PlayerStateUpdate { room_id, .. }
            | Event::PublisherQualityUpdate { room_id, .. }
            | Event::PlayerQualityUpdate { room_id, .. }
            | Event::RoomRestored { room_id, .. } => room_id,
        }
    }

    /// The event's name, as in its `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::RoomStateChanged { .. } => "room_state_changed",
            Event::RoomUserUpdate { .. } => "room_user_update",
            Event::RoomStreamUpdate { .. } => "room_stream_update",
            Event::BroadcastMessage { .. } => "broadcast_message",
            Event::CustomCommand { .. } => "custom_command",
            Event::PublisherStateUpdate { .. } => "publisher_state_update",
            Event::PlayerStateUpdate { .. } => "player_state_update",
            Event::PublisherQualityUpdate { .. } => "publisher_quality_update",
            Event::PlayerQualityUpdate { .. } => "player_quality_update",
            Event::RoomRestored { .. } => "room_restored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_the_contract() {
        let event = Event::RoomStateChanged {
            room_id: RoomId::parse("bigclass").unwrap(),
            server: Some(ServerName::default_server()),
            reason: RoomStateReason::Logined,
            error_code: ErrorCode::NONE,
            error_message: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "room_state_changed", "room_id": "bigclass",
                "server": "default", "reason": "Logined", "error_code": 0})
        );

        let event = Event::PublisherStateUpdate {
            stream_id: StreamId::parse("box-main").unwrap(),
            room_id: RoomId::parse("group-3").unwrap(),
            state: PublisherState::PublishRequesting,
            error_code: ErrorCode::PUBLISH_MEDIA_FAILED,
            error_message: Some("camera gone".into()),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "publisher_state_update");
        assert_eq!(json["state"], "PublishRequesting");
        assert_eq!(json["error_code"], 1003901);
        assert_eq!(event.name(), "publisher_state_update");
    }
}
