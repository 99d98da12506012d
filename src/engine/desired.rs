//! What the box *should* be doing, as opposed to what it is doing right now: the rooms it
//! was told to be in and the streams it was told to publish and play. The engine keeps it
//! in a `watch` ([`super::EngineHandle::desired`]); the service writes it to `state_dir`
//! and hands it back to [`super::EngineHandle::restore`] after a restart.
//!
//! What counts: a room once its login succeeded (or it was restored), until it is left
//! (`logout_room`), the SFU removes us (KickOut), a reconnect gives up (ReconnectFailed)
//! or a restored login is refused for good; a stream once `start_publishing` /
//! `start_playing` answered ok (or it was restored), until it is stopped or its room goes.
//! A room that is merely reconnecting, or a stream retrying after a failure, stays. Shutting
//! down changes nothing: the box comes back to the same rooms after a clean restart too.
//!
//! No secret is part of it: a login token (room pin) is never kept, only the fact that
//! the room was joined with one (`had_token`), so that a restore can say why it fails.
//! ([`crate::base::secret::Secret`] cannot be serialized, so this is enforced by type.)

use std::fmt;

use serde::{Deserialize, Serialize};

use super::servers::ServerName;
use super::types::{Channel, PlayOutput, RoomId, StreamId, User};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    #[serde(default)]
    pub rooms: Vec<DesiredRoom>,
    #[serde(default)]
    pub publishing: Vec<DesiredPublish>,
    #[serde(default)]
    pub playing: Vec<DesiredPlay>,
}

/// A room to be in, and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredRoom {
    pub room_id: RoomId,
    pub user: User,
    /// The server `login_room` named. Absent: the room goes where `rooms.routes` sends
    /// it when it is restored (so a changed route applies after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerName>,
    /// The login carried a token (room pin). The token itself is never stored: a restore
    /// logs in without it, and a room that needs it fails with 1002033.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub had_token: bool,
}

/// A stream to publish: `channel` into `room_id` as `stream_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredPublish {
    pub stream_id: StreamId,
    pub room_id: RoomId,
    pub channel: Channel,
}

/// A stream to play from `room_id` to `output`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredPlay {
    pub stream_id: StreamId,
    pub room_id: RoomId,
    pub output: PlayOutput,
}

impl DesiredState {
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.publishing.is_empty() && self.playing.is_empty()
    }
}

/// For logs: `2 rooms (bigclass, group-3), publishing 2, playing 1`.
impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rooms: Vec<&str> = self.rooms.iter().map(|r| r.room_id.as_str()).collect();
        match rooms.len() {
            0 => f.write_str("no rooms")?,
            1 => write!(f, "1 room ({})", rooms[0])?,
            n => write!(f, "{n} rooms ({})", rooms.join(", "))?,
        }
        write!(
            f,
            ", publishing {}, playing {}",
            self.publishing.len(),
            self.playing.len()
        )
    }
}

/// What [`super::EngineHandle::restore`] did with a desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Rooms being logged in again.
    pub rooms: Vec<RoomId>,
    /// Streams being started again (published, then played).
    pub publishing: Vec<StreamId>,
    pub playing: Vec<StreamId>,
    /// What the engine's rules refused (the configuration changed since it was saved),
    /// each with its code and reason. Each also got its failure event.
    pub refused: Vec<String>,
}
