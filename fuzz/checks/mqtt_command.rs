//! The MQTT command decoder: any payload on `{base}/cmd` becomes a typed command or a
//! coded refusal, never a panic. Then what the dispatcher does with a parsed command
//! before the engine sees it: the identifier checks (each refusal carries its code) and
//! the room's topic level. Replies must always serialize to the contract's shape.
//!
//! Shared by the fuzz target and the root test suite (`tests/fuzz_seeds.rs`), which
//! replays the seeds and every past crash on each `cargo test`.

use roomcast::control::protocol::{self, ID_MAX_CHARS, MAX_COMMAND_BYTES, Op, Reply};
use roomcast::control::topics::{Topics, encode_level};
use roomcast::engine::types::{RoomId, StreamId, User, UserId, check_message};
use roomcast::engine::{EngineError, ErrorCode};
use serde_json::Value;

pub fn check(data: &[u8]) {
    let peeked = protocol::peek_id(data);
    match protocol::parse(data) {
        Ok(request) => {
            assert!(data.len() <= MAX_COMMAND_BYTES);
            let chars = request.id.chars().count();
            assert!((1..=ID_MAX_CHARS).contains(&chars), "id of {chars} chars");
            assert_eq!(peeked.as_deref(), Some(request.id.as_str()));
            check_op(&request.op);
            let reply = Reply::ok(&request.id, serde_json::json!({"op": request.op.name()}));
            assert_reply(&reply, Some(&request.id), None);
        }
        Err(refused) => {
            assert!(!refused.message.is_empty());
            // The id is in the refusal exactly when it could be read.
            assert_eq!(refused.id, peeked);
            let id = refused.id.clone();
            let reply = Reply::refused(refused);
            assert_reply(
                &reply,
                id.as_deref(),
                Some(ErrorCode::INVALID_PARAMETER.as_u32()),
            );
        }
    }
}

/// The checks `run_op` and the engine handle make before anything is changed.
fn check_op(op: &Op) {
    match op {
        Op::LoginRoom { room_id, user, .. } => {
            room(room_id);
            if let Some((id, name)) = user {
                coded(User::parse(id.as_str(), name.as_str()));
            }
        }
        Op::LogoutRoom { room_id } => {
            if let Some(room_id) = room_id {
                room(room_id);
            }
        }
        Op::StartPublishing {
            stream_id, room_id, ..
        }
        | Op::StartPlaying {
            stream_id, room_id, ..
        } => {
            coded(StreamId::parse(stream_id.as_str()));
            if let Some(room_id) = room_id {
                room(room_id);
            }
        }
        Op::StopPublishing { stream_id } | Op::StopPlaying { stream_id } => {
            coded(StreamId::parse(stream_id.as_str()));
        }
        Op::SendBroadcastMessage { room_id, message } => {
            coded(check_message(message));
            room(room_id);
        }
        Op::SendCustomCommand {
            room_id,
            command,
            to_users,
        } => {
            coded(check_message(command));
            room(room_id);
            for user in to_users {
                coded(UserId::parse(user.as_str()));
            }
        }
        Op::SetRoomMode { .. } | Op::GetState | Op::ListDevices => {}
    }
}

fn room(room_id: &str) {
    if let Some(room) = coded(RoomId::parse(room_id)) {
        // A valid room id is one topic level, never a wildcard.
        let level = encode_level(room.as_str());
        assert!(!level.contains(['/', '+', '#']), "{level}");
        let topic = Topics::new("roomcast", "box").room_events(room.as_str());
        assert_eq!(topic.split('/').count(), 5, "{topic}");
    }
}

/// A refusal always carries one of the documented, non-zero codes.
fn coded<T>(result: Result<T, EngineError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let code = e.code().as_u32();
            assert!(
                (1_000_000..1_010_000).contains(&code),
                "code {code} for {e}"
            );
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

fn assert_reply(reply: &Reply, id: Option<&str>, code: Option<u32>) {
    let value: Value = match serde_json::from_slice(&reply.to_bytes()) {
        Ok(value) => value,
        Err(e) => panic!("a reply is not JSON: {e}"),
    };
    assert_eq!(value["id"].as_str(), id);
    assert_eq!(value["ok"].as_bool(), Some(code.is_none()));
    if let Some(code) = code {
        assert_eq!(value["error"]["code"].as_u64(), Some(u64::from(code)));
    }
}
