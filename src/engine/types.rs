//! Identifiers and small value types of the room API, validated on construction.
//!
//! The character sets and limits are the reference SDK's: a value of one of these types
//! has passed them, so the rest of the engine never re-checks.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{EngineError, Field, IdProblem};

/// Punctuation the reference SDK allows in room ids (besides ASCII letters and digits).
const ROOM_ID_PUNCTUATION: &str = "~!@#$%^&*()_+=-`;',.<>/\\";
/// Punctuation allowed in user ids: the room id set without `/`.
const USER_ID_PUNCTUATION: &str = "~!@#$%^&*()_+=-`;',.<>\\";

const ROOM_ID_ALLOWED: &str = "ASCII letters, digits and ~!@#$%^&*()_+=-`;',.<>/\\";
const USER_ID_ALLOWED: &str = "ASCII letters, digits and ~!@#$%^&*()_+=-`;',.<>\\";
const USER_NAME_ALLOWED: &str = "any text without control characters";
const STREAM_ID_ALLOWED: &str = "ASCII letters, digits, '-' and '_'";

/// Room ids must be shorter than this many bytes.
pub const ROOM_ID_LIMIT: usize = 128;
/// User ids must be shorter than this many bytes.
pub const USER_ID_LIMIT: usize = 64;
/// User names must be shorter than this many bytes.
pub const USER_NAME_LIMIT: usize = 256;
/// Stream ids may be at most this many bytes.
pub const STREAM_ID_MAX: usize = 256;
/// Broadcast messages and custom commands may be at most this many bytes.
pub const MESSAGE_MAX: usize = 1024;

fn check(
    field: Field,
    value: &str,
    max_len: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), EngineError> {
    let problem = if value.is_empty() {
        Some(IdProblem::Empty)
    } else if let Some(found) = value.chars().find(|c| !ok(*c)) {
        Some(IdProblem::BadCharacter { found, allowed })
    } else if value.len() > max_len {
        Some(IdProblem::TooLong {
            len: value.len(),
            max: max_len,
        })
    } else {
        None
    };
    match problem {
        Some(problem) => Err(EngineError::InvalidId { field, problem }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A room id: 1 to 127 bytes of ASCII letters, digits and the SDK's punctuation.
    RoomId
);
string_id!(
    /// A user id: 1 to 63 bytes; as a room id but without `/`.
    UserId
);
string_id!(
    /// A user's display name: 1 to 255 bytes, no control characters.
    UserName
);
string_id!(
    /// A stream id: 1 to 256 bytes of ASCII letters, digits, `-` and `_`.
    StreamId
);

impl RoomId {
    pub fn parse(value: impl Into<String>) -> Result<Self, EngineError> {
        let value = value.into();
        check(
            Field::RoomId,
            &value,
            ROOM_ID_LIMIT - 1,
            ROOM_ID_ALLOWED,
            |c| c.is_ascii_alphanumeric() || ROOM_ID_PUNCTUATION.contains(c),
        )?;
        Ok(Self(value))
    }
}

impl UserId {
    pub fn parse(value: impl Into<String>) -> Result<Self, EngineError> {
        let value = value.into();
        check(
            Field::UserId,
            &value,
            USER_ID_LIMIT - 1,
            USER_ID_ALLOWED,
            |c| c.is_ascii_alphanumeric() || USER_ID_PUNCTUATION.contains(c),
        )?;
        Ok(Self(value))
    }
}

impl UserName {
    pub fn parse(value: impl Into<String>) -> Result<Self, EngineError> {
        let value = value.into();
        check(
            Field::UserName,
            &value,
            USER_NAME_LIMIT - 1,
            USER_NAME_ALLOWED,
            |c| !c.is_control(),
        )?;
        Ok(Self(value))
    }
}

impl StreamId {
    pub fn parse(value: impl Into<String>) -> Result<Self, EngineError> {
        let value = value.into();
        check(
            Field::StreamId,
            &value,
            STREAM_ID_MAX,
            STREAM_ID_ALLOWED,
            |c| c.is_ascii_alphanumeric() || c == '-' || c == '_',
        )?;
        Ok(Self(value))
    }
}

/// The identity a box logs in with. In multi-room mode it is the same in every room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub user_id: UserId,
    pub user_name: UserName,
}

impl User {
    pub fn parse(
        user_id: impl Into<String>,
        user_name: impl Into<String>,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            user_id: UserId::parse(user_id)?,
            user_name: UserName::parse(user_name)?,
        })
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.user_id, self.user_name)
    }
}

/// Whether the engine allows one room at a time or several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    #[default]
    Single,
    Multi,
}

impl fmt::Display for RoomMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoomMode::Single => "single",
            RoomMode::Multi => "multi",
        })
    }
}

/// How a channel published into several rooms reaches them (`rooms.fanout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FanoutPolicy {
    /// One WebRTC upload per room from the box (one shared encode, N copies sent).
    #[default]
    Device,
    /// One upload per server; the SFU relays it into every room (remote publishers).
    /// A publish fails with 1003903 when the server cannot.
    Server,
    /// `server` when the room's server can relay, `device` otherwise.
    Auto,
}

impl fmt::Display for FanoutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FanoutPolicy::Device => "device",
            FanoutPolicy::Server => "server",
            FanoutPolicy::Auto => "auto",
        })
    }
}

/// How one published stream actually reaches its room (the state snapshot's `fanout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fanout {
    /// Its own WebRTC upload from the box.
    Device,
    /// Relayed by the SFU from the box's one upload to that server.
    Server,
}

/// Which way a stream goes between the box and its room: published by the box, or
/// played by it. The engine and the room backends name a stream's direction with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Publish,
    Play,
}

impl Direction {
    /// The verb an operator reads in errors and logs: "publish" or "play".
    pub fn verb(self) -> &'static str {
        match self {
            Direction::Publish => "publish",
            Direction::Play => "play",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// Which captured source a stream publishes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Main,
    Aux,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Main => "main",
            Channel::Aux => "aux",
        })
    }
}

/// Where a played stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlayOutput {
    /// Video to the screen (KMS, or a window where there is one), audio to the speaker.
    Display,
    /// Audio only, to the configured ALSA playback device.
    Speaker,
    /// Decode and count frames only (monitoring).
    #[default]
    None,
}

impl fmt::Display for PlayOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlayOutput::Display => "display",
            PlayOutput::Speaker => "speaker",
            PlayOutput::None => "none",
        })
    }
}

/// A room's state as reported to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomState {
    Logining,
    Logined,
    Reconnecting,
}

/// Why a room's state changed: the `reason` of a `room_state_changed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomStateReason {
    Logining,
    Logined,
    LoginFailed,
    Reconnecting,
    Reconnected,
    ReconnectFailed,
    KickOut,
    Logout,
    LogoutFailed,
}

/// A published stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublisherState {
    NoPublish,
    PublishRequesting,
    Publishing,
}

/// A played stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlayerState {
    NoPlay,
    PlayRequesting,
    Playing,
}

/// Whether users or streams were added to a room or removed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateType {
    Add,
    Delete,
}

/// Checks a broadcast message or custom command against the SDK's limits.
pub fn check_message(text: &str) -> Result<(), EngineError> {
    if text.is_empty() {
        return Err(EngineError::MessageEmpty);
    }
    if text.len() > MESSAGE_MAX {
        return Err(EngineError::MessageTooLong {
            len: text.len(),
            max: MESSAGE_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::ErrorCode;

    fn code<T: std::fmt::Debug>(r: Result<T, EngineError>) -> u32 {
        r.expect_err("should be refused").code().as_u32()
    }

    #[test]
    fn room_id_rules_and_codes() {
        assert!(RoomId::parse("bigclass").is_ok());
        assert!(RoomId::parse("a/b+c#d%e~!@$^&*()_=-`;',.<>\\").is_ok());
        assert_eq!(code(RoomId::parse("")), 1002011);
        assert_eq!(code(RoomId::parse("big class")), 1002012);
        assert_eq!(code(RoomId::parse("bigclass\u{e9}")), 1002012);
        assert!(RoomId::parse("r".repeat(127)).is_ok());
        assert_eq!(code(RoomId::parse("r".repeat(128))), 1002013);
    }

    #[test]
    fn user_rules_and_codes() {
        assert!(UserId::parse("box-17").is_ok());
        assert_eq!(code(UserId::parse("")), 1002005);
        assert_eq!(code(UserId::parse("a/b")), 1002006);
        assert!(UserId::parse("u".repeat(63)).is_ok());
        assert_eq!(code(UserId::parse("u".repeat(64))), 1002007);

        assert!(UserName::parse("Room 101 caméra").is_ok());
        assert_eq!(code(UserName::parse("")), 1002008);
        assert_eq!(code(UserName::parse("line\nbreak")), 1002009);
        assert!(UserName::parse("n".repeat(255)).is_ok());
        assert_eq!(code(UserName::parse("n".repeat(256))), 1002010);
    }

    #[test]
    fn stream_id_rules_and_codes() {
        assert!(StreamId::parse("box-17_main").is_ok());
        assert!(StreamId::parse("s".repeat(256)).is_ok());
        assert_eq!(code(StreamId::parse("s".repeat(257))), 1000014);
        assert_eq!(code(StreamId::parse("")), 1000015);
        assert_eq!(code(StreamId::parse("a.b")), 1000016);
    }

    #[test]
    fn message_limits() {
        assert!(check_message("hello").is_ok());
        assert!(check_message(&"m".repeat(1024)).is_ok());
        assert_eq!(code(check_message("")), 1009001);
        assert_eq!(code(check_message(&"m".repeat(1025))), 1009002);
    }

    #[test]
    fn error_messages_name_what_is_allowed() {
        let err = RoomId::parse("big class").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("room_id"), "{text}");
        assert!(text.contains("allowed"), "{text}");
        assert_eq!(err.code(), ErrorCode::ROOM_ID_INVALID);
    }
}
