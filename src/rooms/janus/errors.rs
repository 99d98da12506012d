//! Janus errors → the engine's codes.

use super::client::JanusError;
use crate::engine::error::{BackendError, ErrorCode};

// VideoRoom plugin error codes (janus_videoroom.c).
const VIDEOROOM_MISSING_ELEMENT: i64 = 429;
const VIDEOROOM_NO_SUCH_ROOM: i64 = 426;
const VIDEOROOM_NO_SUCH_FEED: i64 = 428;
const VIDEOROOM_UNAUTHORIZED: i64 = 433;
const VIDEOROOM_ID_EXISTS: i64 = 436;
// TextRoom plugin error codes (janus_textroom.c).
const TEXTROOM_MISSING_ELEMENT: i64 = 418;
const TEXTROOM_NO_SUCH_ROOM: i64 = 417;
const TEXTROOM_UNAUTHORIZED: i64 = 419;
const TEXTROOM_USERNAME_EXISTS: i64 = 420;
const TEXTROOM_NO_SUCH_USER: i64 = 423;
// Janus core: wrong api secret / token.
const CORE_UNAUTHORIZED: i64 = 403;

/// Maps a Janus failure during `context` (`login`, `publish`, `play`, …) to a code.
pub fn map(error: JanusError, context: &str) -> BackendError {
    let message = error.to_string();
    let code = match &error {
        JanusError::NotConnected { .. } | JanusError::ConnectionLost => ErrorCode::SFU_UNREACHABLE,
        JanusError::Timeout { .. } => ErrorCode::SFU_TIMEOUT,
        JanusError::Refused { code, .. } if *code == CORE_UNAUTHORIZED => {
            ErrorCode::ROOM_AUTH_FAILED
        }
        JanusError::Refused { code: 0, .. } => ErrorCode::SFU_UNREACHABLE,
        JanusError::Refused { .. } | JanusError::Protocol { .. } => ErrorCode::SFU_REFUSED,
        JanusError::Plugin { code, reason, .. } => match *code {
            VIDEOROOM_NO_SUCH_ROOM | TEXTROOM_NO_SUCH_ROOM => ErrorCode::SFU_ROOM_NOT_FOUND,
            VIDEOROOM_UNAUTHORIZED | TEXTROOM_UNAUTHORIZED => ErrorCode::ROOM_AUTH_FAILED,
            // A pin-protected room joined without one: Janus says "Missing mandatory
            // element (pin)", and only the reason names the element. No pin is a wrong pin.
            VIDEOROOM_MISSING_ELEMENT | TEXTROOM_MISSING_ELEMENT if reason.contains("(pin)") => {
                ErrorCode::ROOM_AUTH_FAILED
            }
            VIDEOROOM_ID_EXISTS if context == "publish" => ErrorCode::PUBLISH_STREAM_ID_IN_USE,
            VIDEOROOM_NO_SUCH_FEED if context == "play" => ErrorCode::PLAY_STREAM_NOT_FOUND,
            _ => ErrorCode::SFU_REFUSED,
        },
    };
    let hint = match code {
        ErrorCode::ROOM_AUTH_FAILED => {
            " (check the login token / room pin, or janus.api_secret / janus.token)"
        }
        ErrorCode::SFU_UNREACHABLE => " (is Janus running and janus.url right?)",
        ErrorCode::PUBLISH_STREAM_ID_IN_USE => {
            " (someone in the room already publishes under this stream id)"
        }
        _ => "",
    };
    BackendError::new(code, format!("{message}{hint}"))
}

/// Maps a TextRoom data-channel error.
pub fn textroom(code: i64, reason: String) -> BackendError {
    let mapped = match code {
        TEXTROOM_NO_SUCH_ROOM => ErrorCode::SFU_ROOM_NOT_FOUND,
        TEXTROOM_UNAUTHORIZED => ErrorCode::ROOM_AUTH_FAILED,
        TEXTROOM_MISSING_ELEMENT if reason.contains("(pin)") => ErrorCode::ROOM_AUTH_FAILED,
        TEXTROOM_NO_SUCH_USER => ErrorCode::INVALID_PARAMETER,
        _ => ErrorCode::SFU_REFUSED,
    };
    let hint = if code == TEXTROOM_USERNAME_EXISTS {
        " (this user id is already in the room, e.g. from a session that has not timed out yet)"
    } else {
        ""
    };
    BackendError::new(
        mapped,
        format!("TextRoom refused: {reason} (error {code}){hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(code: i64) -> JanusError {
        JanusError::Plugin {
            plugin: "janus.plugin.videoroom".into(),
            what: "join".into(),
            code,
            reason: "x".into(),
        }
    }

    #[test]
    fn codes_map_to_the_engines() {
        assert_eq!(map(plugin(433), "login").code, ErrorCode::ROOM_AUTH_FAILED);
        assert_eq!(
            map(plugin(426), "login").code,
            ErrorCode::SFU_ROOM_NOT_FOUND
        );
        assert_eq!(
            map(plugin(436), "publish").code,
            ErrorCode::PUBLISH_STREAM_ID_IN_USE
        );
        assert_eq!(
            map(plugin(428), "play").code,
            ErrorCode::PLAY_STREAM_NOT_FOUND
        );
        assert_eq!(map(plugin(430), "login").code, ErrorCode::SFU_REFUSED);
        let no_pin = JanusError::Plugin {
            plugin: "janus.plugin.videoroom".into(),
            what: "join the VideoRoom".into(),
            code: 429,
            reason: "Missing mandatory element (pin)".into(),
        };
        assert_eq!(map(no_pin, "login").code, ErrorCode::ROOM_AUTH_FAILED);
        assert_eq!(map(plugin(429), "login").code, ErrorCode::SFU_REFUSED);
        assert_eq!(
            map(JanusError::ConnectionLost, "login").code,
            ErrorCode::SFU_UNREACHABLE
        );
        let timeout = JanusError::Timeout {
            what: "join".into(),
            timeout: std::time::Duration::from_secs(5),
        };
        assert_eq!(map(timeout, "login").code, ErrorCode::SFU_TIMEOUT);
        assert_eq!(
            textroom(419, "Unauthorized".into()).code,
            ErrorCode::ROOM_AUTH_FAILED
        );
        assert!(
            textroom(420, "Username taken".into())
                .message
                .contains("already in the room")
        );
    }
}
