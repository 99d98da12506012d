//! The Janus protocol as typed messages: the core API (`janus` field), and the VideoRoom
//! (`videoroom`) and TextRoom (`textroom`) plugins' bodies and events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An SDP offer or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jsep {
    #[serde(rename = "type")]
    pub kind: JsepType,
    pub sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsepType {
    Offer,
    Answer,
}

/// A trickled ICE candidate, or the end of candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrickleCandidate {
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMLineIndex")]
        sdp_m_line_index: u32,
        #[serde(rename = "sdpMid", skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
    },
    Completed {
        completed: bool,
    },
}

/// Credentials every request carries when the server asks for them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Auth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apisecret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A request to the Janus core.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "janus", rename_all = "lowercase")]
pub enum Request {
    Create {
        transaction: String,
        #[serde(flatten)]
        auth: Auth,
    },
    Attach {
        transaction: String,
        session_id: u64,
        plugin: String,
        #[serde(flatten)]
        auth: Auth,
    },
    Message {
        transaction: String,
        session_id: u64,
        handle_id: u64,
        body: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        jsep: Option<Jsep>,
        #[serde(flatten)]
        auth: Auth,
    },
    Trickle {
        transaction: String,
        session_id: u64,
        handle_id: u64,
        candidate: TrickleCandidate,
        #[serde(flatten)]
        auth: Auth,
    },
    Detach {
        transaction: String,
        session_id: u64,
        handle_id: u64,
        #[serde(flatten)]
        auth: Auth,
    },
    Keepalive {
        transaction: String,
        session_id: u64,
        #[serde(flatten)]
        auth: Auth,
    },
    Destroy {
        transaction: String,
        session_id: u64,
        #[serde(flatten)]
        auth: Auth,
    },
}

impl Request {
    pub fn transaction(&self) -> &str {
        match self {
            Request::Create { transaction, .. }
            | Request::Attach { transaction, .. }
            | Request::Message { transaction, .. }
            | Request::Trickle { transaction, .. }
            | Request::Detach { transaction, .. }
            | Request::Keepalive { transaction, .. }
            | Request::Destroy { transaction, .. } => transaction,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IdData {
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub code: i64,
    #[serde(default)]
    pub reason: String,
}

/// A plugin's answer or event; `data` is parsed by the plugin's own type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PluginData {
    pub plugin: String,
    pub data: Value,
}

/// Anything Janus sends us.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "janus", rename_all = "lowercase")]
pub enum Incoming {
    Success {
        transaction: Option<String>,
        #[serde(default)]
        sender: Option<u64>,
        #[serde(default)]
        data: Option<IdData>,
        #[serde(default)]
        plugindata: Option<PluginData>,
    },
    Error {
        transaction: Option<String>,
        error: ErrorBody,
    },
    Ack {
        transaction: Option<String>,
    },
    Event {
        #[serde(default)]
        transaction: Option<String>,
        sender: u64,
        plugindata: PluginData,
        #[serde(default)]
        jsep: Option<Jsep>,
    },
    Webrtcup {
        sender: u64,
    },
    Media {
        sender: u64,
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        receiving: bool,
    },
    Slowlink {
        sender: u64,
    },
    Hangup {
        sender: u64,
        #[serde(default)]
        reason: String,
    },
    Detached {
        sender: u64,
    },
    Trickle {
        sender: u64,
        candidate: TrickleCandidate,
    },
    Timeout {
        session_id: u64,
    },
    #[serde(other)]
    Other,
}

/// A plugin-level error inside `plugindata.data` (`error_code`, `error`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PluginError {
    pub error_code: i64,
    #[serde(default)]
    pub error: String,
}

impl PluginData {
    /// The plugin error this data carries, if any.
    pub fn error(&self) -> Option<PluginError> {
        self.data
            .get("error_code")
            .and_then(|_| serde_json::from_value(self.data.clone()).ok())
    }
}

// ---- VideoRoom ---------------------------------------------------------------------

/// A publisher as VideoRoom lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Publisher {
    pub id: String,
    #[serde(default)]
    pub display: Option<String>,
}

/// A participant as `listparticipants` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Participant {
    pub id: String,
    #[serde(default)]
    pub display: Option<String>,
    #[serde(default)]
    pub publisher: bool,
}

/// VideoRoom answers and events (`plugindata.data`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "videoroom", rename_all = "lowercase")]
pub enum VideoRoom {
    Success {
        #[serde(default)]
        exists: Option<bool>,
        #[serde(default)]
        participants: Option<Vec<Participant>>,
    },
    Created {
        room: String,
    },
    Joined {
        room: String,
        id: String,
        #[serde(default)]
        publishers: Vec<Publisher>,
    },
    Attached {
        room: String,
    },
    Destroyed {
        room: String,
    },
    Event {
        #[serde(default)]
        publishers: Option<Vec<Publisher>>,
        #[serde(default)]
        unpublished: Option<Value>,
        #[serde(default)]
        leaving: Option<Value>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        configured: Option<String>,
        #[serde(default)]
        started: Option<String>,
        #[serde(default)]
        error_code: Option<i64>,
        #[serde(default)]
        error: Option<String>,
    },
    Talking {},
    #[serde(rename = "stopped-talking")]
    StoppedTalking {},
    Updated {},
    #[serde(other)]
    Other,
}

// ---- TextRoom ----------------------------------------------------------------------

/// A TextRoom participant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TextParticipant {
    pub username: String,
    #[serde(default)]
    pub display: Option<String>,
}

/// TextRoom answers over the Janus API (`plugindata.data`): `setup`, `exists`, `create`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "textroom", rename_all = "lowercase")]
pub enum TextRoomApi {
    Success {
        #[serde(default)]
        exists: Option<bool>,
        #[serde(default)]
        participants: Option<Vec<TextParticipant>>,
    },
    Event {
        #[serde(default)]
        error_code: Option<i64>,
        #[serde(default)]
        error: Option<String>,
    },
    Created {},
    #[serde(other)]
    Other,
}

/// A request sent over the TextRoom data channel.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "textroom", rename_all = "lowercase")]
pub enum TextRequest<'a> {
    Join {
        transaction: &'a str,
        room: &'a str,
        username: &'a str,
        display: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pin: Option<&'a str>,
        history: bool,
    },
    Leave {
        transaction: &'a str,
        room: &'a str,
    },
    Message {
        transaction: &'a str,
        room: &'a str,
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tos: Option<Vec<&'a str>>,
        ack: bool,
    },
}

/// What arrives over the TextRoom data channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "textroom", rename_all = "lowercase")]
pub enum TextEvent {
    Success {
        transaction: String,
        #[serde(default)]
        participants: Option<Vec<TextParticipant>>,
    },
    Error {
        #[serde(default)]
        transaction: Option<String>,
        error_code: i64,
        #[serde(default)]
        error: String,
    },
    Join {
        room: String,
        username: String,
        #[serde(default)]
        display: Option<String>,
    },
    Leave {
        room: String,
        username: String,
    },
    Message {
        room: String,
        from: String,
        #[serde(default)]
        date: Option<String>,
        text: String,
        #[serde(default)]
        whisper: bool,
    },
    Whisper {
        room: String,
        from: String,
        #[serde(default)]
        date: Option<String>,
        text: String,
    },
    Announcement {
        room: String,
        #[serde(default)]
        date: Option<String>,
        text: String,
    },
    Kicked {
        room: String,
        username: String,
    },
    Destroyed {
        room: String,
    },
    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_serialize_as_janus_expects() {
        let request = Request::Message {
            transaction: "t1".into(),
            session_id: 1,
            handle_id: 2,
            body: serde_json::json!({"request": "join", "room": "bigclass"}),
            jsep: Some(Jsep {
                kind: JsepType::Offer,
                sdp: "v=0".into(),
            }),
            auth: Auth {
                apisecret: Some("s".into()),
                token: None,
            },
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"janus": "message", "transaction": "t1", "session_id": 1,
                "handle_id": 2, "body": {"request": "join", "room": "bigclass"},
                "jsep": {"type": "offer", "sdp": "v=0"}, "apisecret": "s"})
        );
        let trickle = TrickleCandidate::Completed { completed: true };
        assert_eq!(
            serde_json::to_value(&trickle).unwrap(),
            serde_json::json!({"completed": true})
        );
    }

    #[test]
    fn incoming_messages_parse() {
        let msg: Incoming = serde_json::from_str(
            r#"{"janus":"event","session_id":1,"sender":2,"transaction":"t","plugindata":
               {"plugin":"janus.plugin.videoroom","data":{"videoroom":"joined","room":"bigclass",
               "id":"abc","private_id":5,"publishers":[{"id":"teacher-cam","display":"T"}]}},
               "jsep":{"type":"offer","sdp":"v=0"}}"#,
        )
        .unwrap();
        let Incoming::Event {
            plugindata, jsep, ..
        } = msg
        else {
            panic!("not an event: {msg:?}");
        };
        assert_eq!(jsep.unwrap().kind, JsepType::Offer);
        let data: VideoRoom = serde_json::from_value(plugindata.data).unwrap();
        assert!(matches!(data, VideoRoom::Joined { publishers, .. } if publishers.len() == 1));

        let msg: Incoming = serde_json::from_str(r#"{"janus":"server_info","name":"x"}"#).unwrap();
        assert_eq!(msg, Incoming::Other);
        let msg: Incoming =
            serde_json::from_str(r#"{"janus":"error","transaction":"t","error":{"code":458,"reason":"No such session"}}"#)
                .unwrap();
        assert!(matches!(msg, Incoming::Error { error, .. } if error.code == 458));
    }

    #[test]
    fn plugin_errors_are_found() {
        let data = PluginData {
            plugin: "janus.plugin.videoroom".into(),
            data: serde_json::json!({"videoroom": "event", "error_code": 426, "error": "No such room"}),
        };
        assert_eq!(data.error().unwrap().error_code, 426);
    }

    #[test]
    fn textroom_events_parse() {
        let e: TextEvent = serde_json::from_str(
            r#"{"textroom":"message","room":"g3","from":"student","date":"2026-11-25T20:00:00+0000","text":"hi"}"#,
        )
        .unwrap();
        assert!(matches!(e, TextEvent::Message { from, .. } if from == "student"));
        let e: TextEvent = serde_json::from_str(r#"{"textroom":"something-new"}"#).unwrap();
        assert_eq!(e, TextEvent::Other);
    }
}
