//! The wire format of commands and replies: `{"id", "op", "args"}` in,
//! `{"id", "ok", "result" | "error"}` out. Parsing never trusts the payload: every
//! refusal is code 1000017 with a message naming the field at fault.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::base::secret::Secret;
use crate::engine::{Channel, ErrorCode, PlayOutput, RoomMode};

/// Commands larger than this are refused (1000017) without being parsed.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Command ids are 1 to this many characters.
pub const ID_MAX_CHARS: usize = 64;

/// roomcast's own control codes (the `xxx9xx` band of the general `1000xxx` range).
pub mod codes {
    use crate::engine::ErrorCode;

    /// Too many commands are queued or running; nothing was done, send it again later.
    pub const BUSY: ErrorCode = ErrorCode(1000901);
    /// The command did not finish within the agent's command timeout; it may still take
    /// effect: read `state`.
    pub const TIMED_OUT: ErrorCode = ErrorCode(1000902);
    /// The command id was used for another command (another `op` or `args`) in the last
    /// 10 minutes; nothing was done.
    pub const ID_REUSED: ErrorCode = ErrorCode(1000904);
}

/// A command that passed the format checks. Identifiers are still raw strings: the
/// engine checks them and answers with their own codes (1002011 for an empty room id…).
#[derive(Debug)]
pub struct Request {
    pub id: String,
    pub op: Op,
}

/// Every operation, with its typed arguments.
#[derive(Debug)]
pub enum Op {
    LoginRoom {
        room_id: String,
        /// `None`: the identity from the config file.
        user: Option<(String, String)>,
        token: Option<Secret>,
        /// The Janus server (`default` or a `[janus.servers.<name>]`); `None`: by
        /// `rooms.routes`.
        server: Option<String>,
    },
    LogoutRoom {
        room_id: Option<String>,
    },
    StartPublishing {
        stream_id: String,
        room_id: Option<String>,
        channel: Channel,
    },
    StopPublishing {
        stream_id: String,
    },
    StartPlaying {
        stream_id: String,
        room_id: Option<String>,
        output: PlayOutput,
    },
    StopPlaying {
        stream_id: String,
    },
    SendBroadcastMessage {
        room_id: String,
        message: String,
    },
    SendCustomCommand {
        room_id: String,
        command: String,
        to_users: Vec<String>,
    },
    SetRoomMode {
        mode: RoomMode,
    },
    GetState,
    ListDevices,
}

/// The op names and the arguments each accepts (for parsing and for error messages).
const OPS: &[(&str, &[&str])] = &[
    ("login_room", &["room_id", "user", "token", "server"]),
    ("logout_room", &["room_id"]),
    ("start_publishing", &["stream_id", "room_id", "channel"]),
    ("stop_publishing", &["stream_id"]),
    ("start_playing", &["stream_id", "room_id", "output"]),
    ("stop_playing", &["stream_id"]),
    ("send_broadcast_message", &["room_id", "message"]),
    ("send_custom_command", &["room_id", "command", "to_users"]),
    ("set_room_mode", &["mode"]),
    ("get_state", &[]),
    ("list_devices", &[]),
];

/// The names of every op, in the documented order.
pub fn op_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|(name, _)| *name)
}

impl Op {
    /// Ops that change nothing: they are run again on a redelivery, never remembered.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Op::GetState | Op::ListDevices)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::LoginRoom { .. } => "login_room",
            Op::LogoutRoom { .. } => "logout_room",
            Op::StartPublishing { .. } => "start_publishing",
            Op::StopPublishing { .. } => "stop_publishing",
            Op::StartPlaying { .. } => "start_playing",
            Op::StopPlaying { .. } => "stop_playing",
            Op::SendBroadcastMessage { .. } => "send_broadcast_message",
            Op::SendCustomCommand { .. } => "send_custom_command",
            Op::SetRoomMode { .. } => "set_room_mode",
            Op::GetState => "get_state",
            Op::ListDevices => "list_devices",
        }
    }
}

/// Why a payload is not a command we can run: always code 1000017. `id` is the command's
/// id when it could be read, so the sender can match the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub id: Option<String>,
    pub message: String,
}

impl Refused {
    fn new(id: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            id: id.map(str::to_owned),
            message: message.into(),
        }
    }
}

const SHAPE: &str =
    r#"a command is a JSON object {"id": "<1-64 characters>", "op": "<op>", "args": {…}}"#;

/// Parses one payload from the `cmd` topic.
pub fn parse(payload: &[u8]) -> Result<Request, Refused> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Refused::new(
            None,
            format!(
                "the payload is {} bytes; a command may be at most {MAX_COMMAND_BYTES} bytes (it was not read)",
                payload.len()
            ),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Refused::new(
            None,
            format!(
                "the payload is not UTF-8 text (invalid byte at offset {}); {SHAPE}",
                e.valid_up_to()
            ),
        )
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Refused::new(None, format!("the payload is not JSON ({e}); {SHAPE}")))?;
    let Value::Object(mut object) = value else {
        return Err(Refused::new(
            None,
            format!("the payload is a JSON {}; {SHAPE}", kind(&value)),
        ));
    };
    let id = read_id(object.get("id"))?;
    let refuse = |message: String| Refused::new(Some(&id), message);

    let op_name = match object.remove("op") {
        Some(Value::String(op)) => op,
        None | Some(Value::Null) => {
            return Err(refuse(format!(
                "op is missing; {SHAPE}, with op one of: {}",
                op_names().collect::<Vec<_>>().join(", ")
            )));
        }
        Some(other) => {
            return Err(refuse(format!(
                "op must be a string, not {}",
                a_kind(&other)
            )));
        }
    };
    let Some((name, allowed)) = OPS.iter().find(|(name, _)| *name == op_name) else {
        return Err(refuse(format!(
            "op {op_name:?} is unknown; the ops are: {}",
            op_names().collect::<Vec<_>>().join(", ")
        )));
    };
    let mut args = Args::new(name, allowed, object.remove("args")).map_err(refuse)?;
    let op = parse_op(name, &mut args).map_err(refuse)?;
    Ok(Request { id, op })
}

/// Reads `id`, for the reply to a payload we will not run (busy, shutting down).
/// `None` when the payload is too large, not a JSON object or has no valid id.
pub fn peek_id(payload: &[u8]) -> Option<String> {
    if payload.len() > MAX_COMMAND_BYTES {
        return None;
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    read_id(object.get("id")).ok()
}

fn read_id(raw: Option<&Value>) -> Result<String, Refused> {
    match raw {
        None | Some(Value::Null) => Err(Refused::new(None, format!("id is missing; {SHAPE}"))),
        Some(Value::String(id)) => {
            let chars = id.chars().count();
            if chars == 0 || chars > ID_MAX_CHARS {
                Err(Refused::new(
                    None,
                    format!("id is {chars} characters; it must be 1 to {ID_MAX_CHARS}"),
                ))
            } else {
                Ok(id.clone())
            }
        }
        Some(other) => Err(Refused::new(
            None,
            format!(
                "id must be a string of 1 to {ID_MAX_CHARS} characters, not {}",
                a_kind(other)
            ),
        )),
    }
}

fn parse_op(name: &str, args: &mut Args) -> Result<Op, String> {
    Ok(match name {
        "login_room" => Op::LoginRoom {
            room_id: args.required_str("room_id")?,
            user: args.user("user")?,
            token: args.optional_str("token")?.map(Secret::new),
            server: args.optional_str("server")?,
        },
        "logout_room" => Op::LogoutRoom {
            room_id: args.optional_str("room_id")?,
        },
        "start_publishing" => Op::StartPublishing {
            stream_id: args.required_str("stream_id")?,
            room_id: args.optional_str("room_id")?,
            channel: args.choice(
                "channel",
                &[("main", Channel::Main), ("aux", Channel::Aux)],
                Channel::Main,
            )?,
        },
        "stop_publishing" => Op::StopPublishing {
            stream_id: args.required_str("stream_id")?,
        },
        "start_playing" => Op::StartPlaying {
            stream_id: args.required_str("stream_id")?,
            room_id: args.optional_str("room_id")?,
            output: args.choice(
                "output",
                &[
                    ("display", PlayOutput::Display),
                    ("speaker", PlayOutput::Speaker),
                    ("none", PlayOutput::None),
                ],
                PlayOutput::None,
            )?,
        },
        "stop_playing" => Op::StopPlaying {
            stream_id: args.required_str("stream_id")?,
        },
        "send_broadcast_message" => Op::SendBroadcastMessage {
            room_id: args.required_str("room_id")?,
            message: args.required_str("message")?,
        },
        "send_custom_command" => Op::SendCustomCommand {
            room_id: args.required_str("room_id")?,
            command: args.required_str("command")?,
            to_users: args.string_list("to_users")?,
        },
        "set_room_mode" => {
            let mode = args.required_str("mode")?;
            Op::SetRoomMode {
                mode: match mode.as_str() {
                    "single" => RoomMode::Single,
                    "multi" => RoomMode::Multi,
                    other => {
                        return Err(format!(
                            "args.mode must be \"single\" or \"multi\", not {other:?}"
                        ));
                    }
                },
            }
        }
        "get_state" => Op::GetState,
        "list_devices" => Op::ListDevices,
        other => return Err(format!("op {other:?} is unknown")),
    })
}

/// The `args` object of one command, read field by field so that every error names its
/// field. Unknown fields are refused: a typo never silently becomes a default.
struct Args {
    op: &'static str,
    map: Map<String, Value>,
}

impl Args {
    fn new(op: &'static str, allowed: &[&str], raw: Option<Value>) -> Result<Self, String> {
        let map = match raw {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(format!(
                    "args must be a JSON object, not {}",
                    a_kind(&other)
                ));
            }
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(if allowed.is_empty() {
                format!("args.{unknown} is not an argument of {op}: it takes none")
            } else {
                format!(
                    "args.{unknown} is not an argument of {op}; its arguments are: {}",
                    allowed.join(", ")
                )
            });
        }
        Ok(Self { op, map })
    }

    fn optional(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn required_str(&mut self, key: &str) -> Result<String, String> {
        match self.optional_str(key)? {
            Some(value) => Ok(value),
            None => Err(format!("args.{key} is missing: {} needs it", self.op)),
        }
    }

    fn optional_str(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.optional(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "args.{key} must be a string, not {}",
                a_kind(&other)
            )),
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Result<T, String> {
        let Some(value) = self.optional_str(key)? else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
                format!(
                    "args.{key} must be one of {}, not {value:?}",
                    names.join(", ")
                )
            })
    }

    fn string_list(&mut self, key: &str) -> Result<Vec<String>, String> {
        match self.optional(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    other => Err(format!(
                        "args.{key}[{i}] must be a string (a user id), not {}",
                        a_kind(&other)
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "args.{key} must be an array of user ids, not {}",
                a_kind(&other)
            )),
        }
    }

    /// `{"user_id": …, "user_name": …}`, both required when the object is given.
    fn user(&mut self, key: &str) -> Result<Option<(String, String)>, String> {
        let map = match self.optional(key) {
            None => return Ok(None),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(format!(
                    "args.{key} must be an object {{\"user_id\", \"user_name\"}}, not {}",
                    a_kind(&other)
                ));
            }
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "user_id" | "user_name"))
        {
            return Err(format!(
                "args.{key}.{unknown} is not a field of a user; a user is {{\"user_id\", \"user_name\"}}"
            ));
        }
        let field = |name: &str| match map.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(format!("args.{key}.{name} is missing")),
            Some(other) => Err(format!(
                "args.{key}.{name} must be a string, not {}",
                a_kind(other)
            )),
        };
        Ok(Some((field("user_id")?, field("user_name")?)))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn a_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The error half of a reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyError {
    pub code: u32,
    pub message: String,
}

/// One reply on `{base}/reply`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    pub id: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
}

impl Reply {
    pub fn ok(id: &str, result: Value) -> Self {
        Self {
            id: Some(id.to_owned()),
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(id: Option<&str>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id: id.map(str::to_owned),
            ok: false,
            result: None,
            error: Some(ReplyError {
                code: code.as_u32(),
                message: message.into(),
            }),
        }
    }

    pub fn refused(refused: Refused) -> Self {
        Self::error(
            refused.id.as_deref(),
            ErrorCode::INVALID_PARAMETER,
            refused.message,
        )
    }

    /// The payload. A reply is plain data: serializing it cannot fail.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"id\":null,\"ok\":false}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(payload: &[u8]) -> Refused {
        parse(payload).expect_err("should be refused")
    }

    #[test]
    fn a_full_command_parses() {
        let r = parse(
            br#"{"id":"c1","op":"login_room","args":{"room_id":"bigclass","user":{"user_id":"u","user_name":"U"},"token":"pin","server":"district"}}"#,
        )
        .unwrap();
        assert_eq!(r.id, "c1");
        let Op::LoginRoom {
            room_id,
            user,
            token,
            server,
        } = r.op
        else {
            panic!("{:?}", r.op)
        };
        assert_eq!(room_id, "bigclass");
        assert_eq!(user, Some(("u".into(), "U".into())));
        assert_eq!(token.unwrap().expose(), "pin");
        assert_eq!(server.as_deref(), Some("district"));
    }

    #[test]
    fn args_may_be_omitted_or_null_and_defaults_apply() {
        assert!(matches!(
            parse(br#"{"id":"1","op":"get_state"}"#).unwrap().op,
            Op::GetState
        ));
        assert!(matches!(
            parse(br#"{"id":"1","op":"logout_room","args":null}"#)
                .unwrap()
                .op,
            Op::LogoutRoom { room_id: None }
        ));
        let r = parse(br#"{"id":"1","op":"start_publishing","args":{"stream_id":"s"}}"#).unwrap();
        assert!(matches!(
            r.op,
            Op::StartPublishing {
                channel: Channel::Main,
                room_id: None,
                ..
            }
        ));
        let r = parse(
            br#"{"id":"1","op":"start_playing","args":{"stream_id":"s","output":"speaker"}}"#,
        )
        .unwrap();
        assert!(matches!(
            r.op,
            Op::StartPlaying {
                output: PlayOutput::Speaker,
                ..
            }
        ));
    }

    #[test]
    fn what_is_not_a_command_has_no_id() {
        for (payload, needle) in [
            (&b"hello"[..], "not JSON"),
            (b"[1,2]", "JSON array"),
            (b"\"x\"", "JSON string"),
            (b"{\"op\":\"get_state\"}", "id is missing"),
            (b"{\"id\":7,\"op\":\"get_state\"}", "id must be a string"),
            (b"{\"id\":\"\",\"op\":\"get_state\"}", "id is 0 characters"),
            (b"{\"id\":\"\xff\xfe\"}", "not UTF-8"),
        ] {
            let r = refused(payload);
            assert_eq!(r.id, None, "{payload:?}");
            assert!(r.message.contains(needle), "{payload:?}: {}", r.message);
        }
        let long = format!(r#"{{"id":"{}","op":"get_state"}}"#, "i".repeat(65));
        assert!(refused(long.as_bytes()).message.contains("65 characters"));
        assert!(
            parse(format!(r#"{{"id":"{}","op":"get_state"}}"#, "é".repeat(64)).as_bytes()).is_ok()
        );
    }

    #[test]
    fn oversized_payloads_are_not_read() {
        // Not even JSON: refused for the size alone.
        let payload = vec![b'x'; MAX_COMMAND_BYTES + 1];
        let r = refused(&payload);
        assert_eq!(r.id, None);
        assert!(r.message.contains("65537 bytes"), "{}", r.message);
        assert!(r.message.contains("65536"), "{}", r.message);
        assert_eq!(peek_id(&payload), None);
    }

    #[test]
    fn errors_after_the_id_carry_it_and_name_the_field() {
        for (payload, needle) in [
            (r#"{"id":"a","args":{}}"#, "op is missing"),
            (r#"{"id":"a","op":5}"#, "op must be a string, not a number"),
            (r#"{"id":"a","op":"reboot"}"#, "op \"reboot\" is unknown"),
            (
                r#"{"id":"a","op":"get_state","args":[]}"#,
                "args must be a JSON object, not an array",
            ),
            (
                r#"{"id":"a","op":"get_state","args":{"x":1}}"#,
                "args.x is not an argument of get_state",
            ),
            (
                r#"{"id":"a","op":"login_room","args":{}}"#,
                "args.room_id is missing",
            ),
            (
                r#"{"id":"a","op":"login_room","args":{"room_id":5}}"#,
                "args.room_id must be a string, not a number",
            ),
            (
                r#"{"id":"a","op":"login_room","args":{"room_id":"r","user":"u"}}"#,
                "args.user must be an object",
            ),
            (
                r#"{"id":"a","op":"login_room","args":{"room_id":"r","user":{"user_id":"u"}}}"#,
                "args.user.user_name is missing",
            ),
            (
                r#"{"id":"a","op":"login_room","args":{"room_id":"r","user":{"user_id":1,"user_name":"n"}}}"#,
                "args.user.user_id must be a string",
            ),
            (
                r#"{"id":"a","op":"start_publishing","args":{"stream_id":"s","chanel":"aux"}}"#,
                "args.chanel is not an argument of start_publishing",
            ),
            (
                r#"{"id":"a","op":"start_publishing","args":{"stream_id":"s","channel":"side"}}"#,
                "args.channel must be one of \"main\", \"aux\", not \"side\"",
            ),
            (
                r#"{"id":"a","op":"start_playing","args":{"stream_id":"s","output":"tv"}}"#,
                "args.output must be one of",
            ),
            (
                r#"{"id":"a","op":"send_custom_command","args":{"room_id":"r","command":"c","to_users":"u"}}"#,
                "args.to_users must be an array",
            ),
            (
                r#"{"id":"a","op":"send_custom_command","args":{"room_id":"r","command":"c","to_users":["u",2]}}"#,
                "args.to_users[1] must be a string",
            ),
            (
                r#"{"id":"a","op":"set_room_mode","args":{"mode":"dual"}}"#,
                "args.mode must be \"single\" or \"multi\"",
            ),
            (
                r#"{"id":"a","op":"send_broadcast_message","args":{"room_id":"r"}}"#,
                "args.message is missing",
            ),
        ] {
            let r = refused(payload.as_bytes());
            assert_eq!(r.id.as_deref(), Some("a"), "{payload}");
            assert!(r.message.contains(needle), "{payload}: {}", r.message);
        }
    }

    #[test]
    fn peek_id_reads_what_it_can() {
        assert_eq!(peek_id(br#"{"id":"x","op":"nope"}"#).as_deref(), Some("x"));
        assert_eq!(peek_id(br#"{"id":3}"#), None);
        assert_eq!(peek_id(b"[]"), None);
    }

    #[test]
    fn replies_have_the_contract_shape() {
        let ok = Reply::ok("c1", serde_json::json!({"room_id": "r"}));
        assert_eq!(
            serde_json::from_slice::<Value>(&ok.to_bytes()).unwrap(),
            serde_json::json!({"id": "c1", "ok": true, "result": {"room_id": "r"}})
        );
        let err = Reply::refused(Refused::new(None, "bad"));
        assert_eq!(
            serde_json::from_slice::<Value>(&err.to_bytes()).unwrap(),
            serde_json::json!({"id": null, "ok": false, "error": {"code": 1000017, "message": "bad"}})
        );
    }

    #[test]
    fn the_op_table_and_the_parser_agree() {
        for name in op_names() {
            let payload = format!(r#"{{"id":"1","op":"{name}"}}"#);
            match parse(payload.as_bytes()) {
                Ok(r) => assert_eq!(r.op.name(), name),
                Err(e) => assert!(e.message.contains("is missing"), "{name}: {}", e.message),
            }
        }
    }
}
