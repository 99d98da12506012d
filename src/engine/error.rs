//! The engine's errors, each with the numeric code the API promises.
//!
//! Codes follow the reference RTC SDK's error table (the table in the README, "Room rules and their codes").
//! Codes in the `xxx9xx` band are roomcast's own, for failures the SDK table has no
//! entry for (the SFU or the media pipeline failing).

use std::fmt;

use serde::Serialize;

use super::types::{Channel, RoomId, RoomMode, StreamId, User};

/// A numeric error code as carried in replies and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(0);
    /// The engine task is gone (shutting down).
    pub const ENGINE_STOPPED: ErrorCode = ErrorCode(1000001);
    pub const STREAM_ID_TOO_LONG: ErrorCode = ErrorCode(1000014);
    pub const STREAM_ID_EMPTY: ErrorCode = ErrorCode(1000015);
    pub const STREAM_ID_INVALID: ErrorCode = ErrorCode(1000016);
    pub const INVALID_PARAMETER: ErrorCode = ErrorCode(1000017);
    pub const ROOM_MODE_FIXED: ErrorCode = ErrorCode(1001020);
    pub const ROOM_COUNT_EXCEEDED_SINGLE: ErrorCode = ErrorCode(1002001);
    pub const ROOM_NOT_LOGGED_IN: ErrorCode = ErrorCode(1002002);
    pub const USER_ID_EMPTY: ErrorCode = ErrorCode(1002005);
    pub const USER_ID_INVALID: ErrorCode = ErrorCode(1002006);
    pub const USER_ID_TOO_LONG: ErrorCode = ErrorCode(1002007);
    pub const USER_NAME_EMPTY: ErrorCode = ErrorCode(1002008);
    pub const USER_NAME_INVALID: ErrorCode = ErrorCode(1002009);
    pub const USER_NAME_TOO_LONG: ErrorCode = ErrorCode(1002010);
    pub const ROOM_ID_EMPTY: ErrorCode = ErrorCode(1002011);
    pub const ROOM_ID_INVALID: ErrorCode = ErrorCode(1002012);
    pub const ROOM_ID_TOO_LONG: ErrorCode = ErrorCode(1002013);
    pub const MULTI_ROOM_USER_DIFFERS: ErrorCode = ErrorCode(1002018);
    pub const ROOM_AUTH_FAILED: ErrorCode = ErrorCode(1002033);
    pub const MULTI_ROOM_NOT_ENABLED: ErrorCode = ErrorCode(1002036);
    pub const ROOM_COUNT_EXCEEDED_MULTI: ErrorCode = ErrorCode(1002037);
    pub const PUBLISH_CHANNEL_BUSY: ErrorCode = ErrorCode(1003023);
    pub const PUBLISH_STREAM_ID_IN_USE: ErrorCode = ErrorCode(1003028);
    pub const PUBLISH_ROOM_REQUIRED: ErrorCode = ErrorCode(1003070);
    pub const PLAY_ROOM_REQUIRED: ErrorCode = ErrorCode(1004070);
    pub const MESSAGE_EMPTY: ErrorCode = ErrorCode(1009001);
    pub const MESSAGE_TOO_LONG: ErrorCode = ErrorCode(1009002);
    pub const MESSAGE_ROOM_NOT_LOGGED_IN: ErrorCode = ErrorCode(1009005);

    // roomcast's own codes (the `xxx9xx` band).
    /// The SFU cannot be reached or the connection dropped during the request.
    pub const SFU_UNREACHABLE: ErrorCode = ErrorCode(1002901);
    /// The SFU did not answer a request within the configured timeout.
    pub const SFU_TIMEOUT: ErrorCode = ErrorCode(1002902);
    /// The room does not exist on the SFU and `janus.create_rooms` is off.
    pub const SFU_ROOM_NOT_FOUND: ErrorCode = ErrorCode(1002903);
    /// The SFU refused the request for another reason (its message is in the error).
    pub const SFU_REFUSED: ErrorCode = ErrorCode(1002904);
    /// Reconnecting to the SFU did not succeed within `janus.reconnect_window_s`.
    pub const SFU_RECONNECT_FAILED: ErrorCode = ErrorCode(1002905);
    /// No TURN relay of `network.turn_servers` gave the room's message channel a path
    /// (the relay refused the credentials or cannot be reached) and no direct path worked.
    pub const ROOM_RELAY_FAILED: ErrorCode = ErrorCode(1002907);
    /// The room is not on the box's allow-list (`rooms.allowed`).
    pub const ROOM_NOT_ALLOWED: ErrorCode = ErrorCode(1002906);
    /// `login_room` named a server that is not configured (`[janus.servers.<name>]`).
    pub const SERVER_UNKNOWN: ErrorCode = ErrorCode(1002908);
    /// The media source or encoder for the channel failed or is not configured.
    pub const PUBLISH_MEDIA_FAILED: ErrorCode = ErrorCode(1003901);
    /// WebRTC negotiation or connectivity for a published stream failed.
    pub const PUBLISH_WEBRTC_FAILED: ErrorCode = ErrorCode(1003902);
    /// `rooms.fanout = "server"` and the room's server cannot relay the box's upload into
    /// the room (no VideoRoom remote publishers, or it refused the private carrier room).
    pub const PUBLISH_FANOUT_UNSUPPORTED: ErrorCode = ErrorCode(1003903);
    /// No TURN relay of `network.turn_servers` gave a published stream a path (the relay
    /// refused the credentials or cannot be reached) and no direct path worked.
    pub const PUBLISH_RELAY_FAILED: ErrorCode = ErrorCode(1003904);
    /// The stream to play is not published in that room.
    pub const PLAY_STREAM_NOT_FOUND: ErrorCode = ErrorCode(1004901);
    /// WebRTC negotiation, connectivity or decoding for a played stream failed.
    pub const PLAY_WEBRTC_FAILED: ErrorCode = ErrorCode(1004902);
    /// As [`ErrorCode::PUBLISH_RELAY_FAILED`], for a played stream.
    pub const PLAY_RELAY_FAILED: ErrorCode = ErrorCode(1004904);
    /// The box already holds the most streams it keeps
    /// ([`super::limits::MAX_STREAMS`], published and played together).
    pub const TOO_MANY_STREAMS: ErrorCode = ErrorCode(1000903);

    pub fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which identifier or parameter a validation error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    RoomId,
    UserId,
    UserName,
    StreamId,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::RoomId => "room_id",
            Field::UserId => "user_id",
            Field::UserName => "user_name",
            Field::StreamId => "stream_id",
        })
    }
}

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdProblem {
    Empty,
    TooLong { len: usize, max: usize },
    BadCharacter { found: char, allowed: &'static str },
}

/// A failure reported by a boundary (the SFU backend or the media engine), carrying the
/// code the engine passes on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub code: ErrorCode,
    pub message: String,
}

impl BackendError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Every error the engine API returns. [`EngineError::code`] is the number callers see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("{field} {}", describe_id_problem(problem))]
    InvalidId { field: Field, problem: IdProblem },

    #[error("{0}")]
    InvalidParameter(String),

    #[error(
        "room mode is fixed at `{current}` once the engine has started; set `rooms.mode = \"{requested}\"` in the config and restart roomcast"
    )]
    RoomModeFixed {
        current: RoomMode,
        requested: RoomMode,
    },

    #[error(
        "single-room mode allows one room at a time and `{current}` is logged in; log out of it first, or set `rooms.mode = \"multi\"`"
    )]
    SingleRoomOccupied { current: RoomId },

    #[error(
        "room `{room}` is not on this box's allow-list (rooms.allowed = {allowed}); use an allowed room, or add it to rooms.allowed in the config and reload roomcast"
    )]
    RoomNotAllowed { room: RoomId, allowed: String },

    #[error(
        "no Janus server `{server}` is configured (configured: {known}); name one of them, or add [janus.servers.{server}] to the config and reload roomcast"
    )]
    UnknownServer { server: String, known: String },

    #[error("already logged in to room `{0}`")]
    AlreadyLoggedIn(RoomId),

    #[error(
        "multi-room mode needs the same user in every room: logged in as {current} but this login is as {requested}"
    )]
    UserDiffers { current: User, requested: User },

    #[error(
        "multi-room mode is not enabled for this deployment (`rooms.multi_room_enabled = false`); enable it or use `rooms.mode = \"single\"`"
    )]
    MultiRoomNotEnabled,

    #[error("already in {max} rooms, the most allowed (`rooms.max_rooms`); log out of one first")]
    TooManyRooms { max: usize },

    #[error("room `{0}` is not logged in; call login_room first")]
    RoomNotLoggedIn(RoomId),

    #[error("no room is logged in; call login_room first")]
    NoRoomLoggedIn,

    #[error("cannot send a message to room `{0}`: it is not logged in")]
    MessageRoomNotLoggedIn(RoomId),

    #[error("in multi-room mode start_publishing must name the room of stream `{0}`")]
    PublishRoomRequired(StreamId),

    #[error("in multi-room mode start_playing must name the room of stream `{0}`")]
    PlayRoomRequired(StreamId),

    #[error(
        "channel `{channel}` is already publishing into room `{room}` as stream `{stream}`; stop it first or use another room"
    )]
    ChannelBusy {
        channel: Channel,
        room: RoomId,
        stream: StreamId,
    },

    #[error(
        "stream id `{stream}` is already publishing (in room `{room}`); choose another stream id"
    )]
    StreamIdInUse { stream: StreamId, room: RoomId },

    #[error("stream `{stream}` is already playing (from room `{room}`); stop_playing it first")]
    AlreadyPlaying { stream: StreamId, room: RoomId },

    #[error(
        "already {max} streams published and played, the most the box keeps; stop_playing or stop_publishing one first"
    )]
    TooManyStreams { max: usize },

    #[error("no stream `{0}` is publishing")]
    NotPublishing(StreamId),

    #[error("no stream `{0}` is playing")]
    NotPlaying(StreamId),

    #[error("message is empty")]
    MessageEmpty,

    #[error("message is {len} bytes; the limit is {max} bytes")]
    MessageTooLong { len: usize, max: usize },

    #[error("login to room `{0}` was cancelled by logout_room")]
    LoginCancelled(RoomId),

    #[error("{0}")]
    Backend(#[from] BackendError),

    #[error("the room engine has stopped (roomcast is shutting down)")]
    EngineStopped,
}

fn describe_id_problem(problem: &IdProblem) -> String {
    match problem {
        IdProblem::Empty => "is empty".to_owned(),
        IdProblem::TooLong { len, max } => {
            format!("is {len} bytes; it must be at most {max} bytes")
        }
        IdProblem::BadCharacter { found, allowed } => {
            format!("contains {found:?}, which is not allowed; allowed: {allowed}")
        }
    }
}

impl EngineError {
    /// The numeric code the API promises for this error.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            EngineError::InvalidId { field, problem } => match (field, problem) {
                (Field::RoomId, IdProblem::Empty) => C::ROOM_ID_EMPTY,
                (Field::RoomId, IdProblem::BadCharacter { .. }) => C::ROOM_ID_INVALID,
                (Field::RoomId, IdProblem::TooLong { .. }) => C::ROOM_ID_TOO_LONG,
                (Field::UserId, IdProblem::Empty) => C::USER_ID_EMPTY,
                (Field::UserId, IdProblem::BadCharacter { .. }) => C::USER_ID_INVALID,
                (Field::UserId, IdProblem::TooLong { .. }) => C::USER_ID_TOO_LONG,
                (Field::UserName, IdProblem::Empty) => C::USER_NAME_EMPTY,
                (Field::UserName, IdProblem::BadCharacter { .. }) => C::USER_NAME_INVALID,
                (Field::UserName, IdProblem::TooLong { .. }) => C::USER_NAME_TOO_LONG,
                (Field::StreamId, IdProblem::TooLong { .. }) => C::STREAM_ID_TOO_LONG,
                (Field::StreamId, IdProblem::Empty) => C::STREAM_ID_EMPTY,
                (Field::StreamId, IdProblem::BadCharacter { .. }) => C::STREAM_ID_INVALID,
            },
            EngineError::InvalidParameter(_)
            | EngineError::NotPublishing(_)
            | EngineError::NotPlaying(_)
            | EngineError::AlreadyPlaying { .. } => C::INVALID_PARAMETER,
            EngineError::RoomModeFixed { .. } => C::ROOM_MODE_FIXED,
            EngineError::SingleRoomOccupied { .. } | EngineError::AlreadyLoggedIn(_) => {
                C::ROOM_COUNT_EXCEEDED_SINGLE
            }
            EngineError::RoomNotAllowed { .. } => C::ROOM_NOT_ALLOWED,
            EngineError::UnknownServer { .. } => C::SERVER_UNKNOWN,
            EngineError::UserDiffers { .. } => C::MULTI_ROOM_USER_DIFFERS,
            EngineError::MultiRoomNotEnabled => C::MULTI_ROOM_NOT_ENABLED,
            EngineError::TooManyRooms { .. } => C::ROOM_COUNT_EXCEEDED_MULTI,
            EngineError::RoomNotLoggedIn(_)
            | EngineError::NoRoomLoggedIn
            | EngineError::LoginCancelled(_) => C::ROOM_NOT_LOGGED_IN,
            EngineError::MessageRoomNotLoggedIn(_) => C::MESSAGE_ROOM_NOT_LOGGED_IN,
            EngineError::PublishRoomRequired(_) => C::PUBLISH_ROOM_REQUIRED,
            EngineError::PlayRoomRequired(_) => C::PLAY_ROOM_REQUIRED,
            EngineError::ChannelBusy { .. } => C::PUBLISH_CHANNEL_BUSY,
            EngineError::StreamIdInUse { .. } => C::PUBLISH_STREAM_ID_IN_USE,
            EngineError::TooManyStreams { .. } => C::TOO_MANY_STREAMS,
            EngineError::MessageEmpty => C::MESSAGE_EMPTY,
            EngineError::MessageTooLong { .. } => C::MESSAGE_TOO_LONG,
            EngineError::Backend(e) => e.code,
            EngineError::EngineStopped => C::ENGINE_STOPPED,
        }
    }
}
