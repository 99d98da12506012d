//! The Janus protocol as typed messages: the core API (`janus` field), and the VideoRoom
//! (`videoroom`) and TextRoom (`textroom`) plugins' bodies and events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::base::secret::Secret;
use crate::engine::event::UserInfo;
use crate::engine::types::User;

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

/// Credentials every request carries when the server asks for them. Secrets: `Debug`
/// (of this, of every request and of the client's config) prints `***`; serialized,
/// they are the wire value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Auth {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_secret"
    )]
    pub apisecret: Option<Secret>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_secret"
    )]
    pub token: Option<Secret>,
}

fn expose_secret<S: serde::Serializer>(
    secret: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_str(secret.expose()),
        None => serializer.serialize_none(),
    }
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
    /// Moves a session to this connection (Janus keeps a session whose socket went
    /// silent until `session_timeout`): the way to destroy one left on a dead socket.
    Claim {
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
            | Request::Destroy { transaction, .. }
            | Request::Claim { transaction, .. } => transaction,
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
    /// A remote publisher (relayed into the room from another room or server).
    #[serde(default)]
    pub remote: bool,
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
        /// `add_remote_publisher`: where the remote publisher receives RTP.
        #[serde(default)]
        ip: Option<String>,
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        rtcp_port: Option<u16>,
    },
    Created {
        room: String,
    },
    /// The answer to `listparticipants`.
    Participants {
        #[serde(default)]
        participants: Vec<Participant>,
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

/// VideoRoom requests of server-side fan-out (`body` of a `message`): the box's private
/// carrier room, its publisher, and the remote publishers that relay it into rooms.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum RelayRequest<'a> {
    Exists {
        room: &'a str,
    },
    Listparticipants {
        room: &'a str,
    },
    Create {
        room: &'a str,
        description: &'a str,
        is_private: bool,
        publishers: u32,
        bitrate: u64,
        videocodec: &'a str,
        audiocodec: &'a str,
        fir_freq: u32,
        notify_joining: bool,
        permanent: bool,
        /// Needed to join the room or subscribe in it.
        pin: &'a str,
        /// Needed to edit or destroy the room, and to relay from it.
        secret: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        admin_key: Option<&'a str>,
    },
    Destroy {
        room: &'a str,
        secret: &'a str,
        permanent: bool,
    },
    AddRemotePublisher {
        room: &'a str,
        id: &'a str,
        display: &'a str,
        iface: &'a str,
        streams: &'a [RemoteStream],
    },
    RemoveRemotePublisher {
        room: &'a str,
        id: &'a str,
    },
    PublishRemotely {
        room: &'a str,
        publisher_id: &'a str,
        remote_id: &'a str,
        host: &'a str,
        port: u16,
        rtcp_port: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        admin_key: Option<&'a str>,
    },
    UnpublishRemotely {
        room: &'a str,
        publisher_id: &'a str,
        remote_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<&'a str>,
    },
}

impl RelayRequest<'_> {
    /// The request as a `message` body.
    pub fn body(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Requests of a room (`body` of a `message`): to the VideoRoom, for the room's presence
/// and for each stream's handle, and to the TextRoom's handle (its chat travels over the
/// data channel instead: `TextRequest`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum RoomRequest<'a> {
    /// Whether the room exists (both plugins).
    Exists { room: &'a str },
    /// Creates the room (both plugins; `video` only for the VideoRoom).
    Create {
        room: &'a str,
        description: &'a str,
        permanent: bool,
        #[serde(flatten)]
        video: Option<VideoRoomOptions>,
        #[serde(skip_serializing_if = "Option::is_none")]
        admin_key: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pin: Option<&'a str>,
    },
    /// Lists who is in the room (both plugins; the TextRoom wants a `transaction`).
    Listparticipants {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        transaction: Option<&'a str>,
    },
    /// Destroys the room (both plugins; the TextRoom wants a `transaction`).
    Destroy {
        room: &'a str,
        permanent: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        admin_key: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        transaction: Option<&'a str>,
    },
    /// Joins the VideoRoom as the room's presence, a stream's publisher or a subscriber.
    Join {
        room: &'a str,
        #[serde(flatten)]
        role: JoinAs<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pin: Option<&'a str>,
    },
    /// Publishes on a joined publisher handle (with the SDP offer).
    Publish,
    /// Starts a subscription (with the SDP answer).
    Start,
    /// Leaves the VideoRoom.
    Leave,
    /// Asks the TextRoom for its data channel's SDP offer.
    Setup,
    /// Answers the TextRoom's offer (with the SDP answer).
    Ack,
}

impl RoomRequest<'_> {
    /// The request as a `message` body.
    pub fn body(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// How a VideoRoom is joined.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "ptype", rename_all = "lowercase")]
pub enum JoinAs<'a> {
    /// The room's presence (no `id`: Janus picks one), or a stream's publisher (its
    /// stream id as the feed id).
    Publisher {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        display: &'a str,
    },
    /// A subscriber to one feed.
    Subscriber { streams: [Feed<'a>; 1] },
}

/// One feed a subscriber asks for.
#[derive(Debug, Clone, Serialize)]
pub struct Feed<'a> {
    pub feed: &'a str,
}

/// What roomcast sets when it creates a VideoRoom.
#[derive(Debug, Clone, Serialize)]
pub struct VideoRoomOptions {
    pub publishers: u32,
    pub bitrate: u64,
    pub videocodec: &'static str,
    pub audiocodec: &'static str,
    pub fir_freq: u32,
    pub notify_joining: bool,
}

/// One m-line of a publisher, as `add_remote_publisher` describes it: the same `mindex`
/// as at the source (Janus demultiplexes the relayed RTP by it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteStream {
    #[serde(rename = "type")]
    pub kind: String,
    pub mindex: u32,
    pub mid: String,
    pub codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h264_profile: Option<String>,
}

/// The audio and video m-lines of an SDP offer, as remote-publisher streams.
pub fn remote_streams(sdp: &str) -> Vec<RemoteStream> {
    struct Section {
        kind: String,
        payloads: Vec<String>,
        mid: Option<String>,
        rtpmap: Vec<(String, String)>,
        fmtp: Vec<(String, String)>,
    }
    let mut sections: Vec<Section> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = parts.next().unwrap_or_default().to_owned();
            let payloads = parts.skip(2).map(str::to_owned).collect();
            sections.push(Section {
                kind,
                payloads,
                mid: None,
                rtpmap: Vec::new(),
                fmtp: Vec::new(),
            });
        } else if let Some(section) = sections.last_mut() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                section.mid = Some(mid.to_owned());
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, codec)) = map.split_once(' ') {
                    let name = codec.split('/').next().unwrap_or_default();
                    section
                        .rtpmap
                        .push((pt.to_owned(), name.to_ascii_lowercase()));
                }
            } else if let Some(fmtp) = line.strip_prefix("a=fmtp:")
                && let Some((pt, params)) = fmtp.split_once(' ')
            {
                section.fmtp.push((pt.to_owned(), params.to_owned()));
            }
        }
    }
    sections
        .into_iter()
        .enumerate()
        .filter(|(_, s)| s.kind == "audio" || s.kind == "video")
        .filter_map(|(mindex, s)| {
            // The first payload type that is a codec (not rtx, red, ulpfec).
            let (pt, codec) = s.payloads.iter().find_map(|pt| {
                s.rtpmap
                    .iter()
                    .find(|(p, name)| p == pt && !matches!(name.as_str(), "rtx" | "red" | "ulpfec"))
                    .cloned()
            })?;
            let h264_profile = (codec == "h264")
                .then(|| {
                    s.fmtp
                        .iter()
                        .find(|(p, _)| *p == pt)
                        .and_then(|(_, params)| {
                            params.split(';').find_map(|kv| {
                                kv.trim()
                                    .strip_prefix("profile-level-id=")
                                    .map(str::to_owned)
                            })
                        })
                })
                .flatten();
            Some(RemoteStream {
                kind: s.kind,
                mindex: u32::try_from(mindex).ok()?,
                mid: s.mid?,
                codec,
                h264_profile,
            })
        })
        .collect()
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

// ---- roomcast's conventions inside Janus messages ---------------------------------

/// How a custom command travels in a TextRoom message, so that receivers can tell it
/// from a broadcast message: `{"custom_command": "<text>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCommandEnvelope {
    pub custom_command: String,
}

/// How our VideoRoom participants show who they are: `display` is this JSON.
#[derive(Serialize, Deserialize)]
struct DisplayIdentity {
    user_id: String,
    user_name: String,
}

/// The VideoRoom `display` of our own participants.
pub fn display_of(user: &User) -> String {
    serde_json::to_string(&DisplayIdentity {
        user_id: user.user_id.to_string(),
        user_name: user.user_name.to_string(),
    })
    .unwrap_or_else(|_| user.user_id.to_string())
}

/// Who publishes a feed, from its `display` (ours is JSON; others may be plain text).
pub fn user_of_feed(feed: &str, display: Option<&str>) -> UserInfo {
    match display {
        Some(display) => match serde_json::from_str::<DisplayIdentity>(display) {
            Ok(identity) => UserInfo {
                user_id: identity.user_id,
                user_name: identity.user_name,
            },
            Err(_) => UserInfo {
                user_id: display.to_owned(),
                user_name: display.to_owned(),
            },
        },
        None => UserInfo {
            user_id: feed.to_owned(),
            user_name: feed.to_owned(),
        },
    }
}

/// A TextRoom participant as a room user.
pub fn text_user(p: &TextParticipant) -> UserInfo {
    UserInfo {
        user_id: p.username.clone(),
        user_name: p.display.clone().unwrap_or_else(|| p.username.clone()),
    }
}

/// Parses Janus's `%FT%T%z` dates (`2026-11-25T20:47:32+0000`) to Unix milliseconds.
/// `None` for anything else, including fields out of their range: the date comes from
/// the SFU (or whoever writes into the room), so it is checked before any arithmetic
/// (the fuzzer found a year of 20260000709551615 overflowing it).
pub fn parse_janus_date(date: &str) -> Option<u64> {
    let (ymd, rest) = date.split_once('T')?;
    let mut parts = ymd.split('-').map(str::parse::<i64>);
    let (y, m, d) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    let time = rest.get(..8)?;
    let mut hms = time.split(':').map(str::parse::<i64>);
    let (hh, mm, ss) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let in_range = parts.next().is_none()
        && hms.next().is_none()
        && (1970..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&d)
        && (0..24).contains(&hh)
        && (0..60).contains(&mm)
        && (0..=60).contains(&ss);
    if !in_range {
        return None;
    }
    let zone = rest.get(8..).unwrap_or("");
    let offset = match zone {
        "" | "Z" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let h: i64 = z.get(1..3)?.parse().ok()?;
            let min: i64 = z.get(3..5)?.parse().ok()?;
            if !(0..=23).contains(&h) || !(0..60).contains(&min) {
                return None;
            }
            sign * (h * 3600 + min * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm); every term is small now.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u64::try_from(seconds).ok().map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The room requests as the VideoRoom and TextRoom plugins read them (the bodies
    /// roomcast sent as hand-written JSON before they were typed).
    #[test]
    fn room_requests_serialize_as_the_plugins_expect() {
        use serde_json::json;
        let presence = RoomRequest::Join {
            room: "bigclass",
            role: JoinAs::Publisher {
                id: None,
                display: "{\"user_id\":\"box-17\"}",
            },
            pin: Some("1234"),
        };
        assert_eq!(
            presence.body(),
            json!({"request": "join", "ptype": "publisher", "room": "bigclass",
                   "display": "{\"user_id\":\"box-17\"}", "pin": "1234"})
        );
        let publisher = RoomRequest::Join {
            room: "bigclass",
            role: JoinAs::Publisher {
                id: Some("cam"),
                display: "d",
            },
            pin: None,
        };
        assert_eq!(
            publisher.body(),
            json!({"request": "join", "ptype": "publisher", "room": "bigclass", "id": "cam", "display": "d"})
        );
        let subscriber = RoomRequest::Join {
            room: "bigclass",
            role: JoinAs::Subscriber {
                streams: [Feed { feed: "cam" }],
            },
            pin: None,
        };
        assert_eq!(
            subscriber.body(),
            json!({"request": "join", "ptype": "subscriber", "room": "bigclass", "streams": [{"feed": "cam"}]})
        );
        for (request, name) in [
            (RoomRequest::Publish, "publish"),
            (RoomRequest::Start, "start"),
            (RoomRequest::Leave, "leave"),
            (RoomRequest::Setup, "setup"),
            (RoomRequest::Ack, "ack"),
        ] {
            assert_eq!(request.body(), json!({ "request": name }));
        }
        assert_eq!(
            RoomRequest::Exists { room: "r" }.body(),
            json!({"request": "exists", "room": "r"})
        );
        let video = RoomRequest::Create {
            room: "r",
            description: "r",
            permanent: false,
            video: Some(VideoRoomOptions {
                publishers: 6,
                bitrate: 2_000_000,
                videocodec: "h264",
                audiocodec: "opus",
                fir_freq: 0,
                notify_joining: false,
            }),
            admin_key: Some("k"),
            pin: None,
        };
        assert_eq!(
            video.body(),
            json!({"request": "create", "room": "r", "description": "r", "publishers": 6,
                   "bitrate": 2_000_000, "videocodec": "h264", "audiocodec": "opus",
                   "fir_freq": 0, "notify_joining": false, "permanent": false, "admin_key": "k"})
        );
        let text = RoomRequest::Create {
            room: "r",
            description: "r",
            permanent: false,
            video: None,
            admin_key: None,
            pin: Some("p"),
        };
        assert_eq!(
            text.body(),
            json!({"request": "create", "room": "r", "description": "r", "permanent": false, "pin": "p"})
        );
        assert_eq!(
            RoomRequest::Listparticipants {
                room: "r",
                transaction: Some("list")
            }
            .body(),
            json!({"request": "listparticipants", "room": "r", "transaction": "list"})
        );
        assert_eq!(
            RoomRequest::Destroy {
                room: "r",
                permanent: false,
                admin_key: None,
                transaction: None
            }
            .body(),
            json!({"request": "destroy", "room": "r", "permanent": false})
        );
    }

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
                apisecret: Some(Secret::new("s")),
                token: None,
            },
        };
        assert!(!format!("{request:?}").contains("\"s\""), "{request:?}");
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

    #[test]
    fn janus_dates_parse() {
        assert_eq!(parse_janus_date("1970-01-01T00:00:00+0000"), Some(0));
        assert_eq!(
            parse_janus_date("2026-11-25T20:47:32+0000"),
            Some(1_795_639_652_000)
        );
        assert_eq!(
            parse_janus_date("2026-11-25T21:47:32+0100"),
            Some(1_795_639_652_000)
        );
        assert_eq!(parse_janus_date("yesterday"), None);
    }

    /// Found by the `janus_message` fuzz target (fuzz/regressions/janus_message/): an
    /// absurd year overflowed the day arithmetic (a panic in debug builds, a wrong time
    /// in release). Every field is range-checked first now.
    #[test]
    fn absurd_janus_dates_are_refused_not_overflowed() {
        for date in [
            "20260000709551615-11-205T20:47:32+0000",
            "9223372036854775807-01-01T00:00:00+0000",
            "2026-9223372036854775807-01T00:00:00+0000",
            "2026-01-9223372036854775807T00:00:00+0000",
            "-9223372036854775808-01-01T00:00:00Z",
            "2026-13-01T00:00:00+0000",
            "2026-00-10T00:00:00+0000",
            "2026-01-32T00:00:00+0000",
            "2026-01-01T24:00:00+0000",
            "2026-01-01T00:60:00+0000",
            "2026-01-01T00:00:61+0000",
            "2026-01-01T00:00:00+9999",
            "2026-01-01T00:00:00 0100",
            "1969-12-31T23:59:59+0000",
            "2026-01-01-01T00:00:00+0000",
        ] {
            assert_eq!(parse_janus_date(date), None, "{date}");
        }
        assert_eq!(
            parse_janus_date("9999-12-31T23:59:60-2359"),
            Some(253_402_387_140_000)
        );
        // The message still arrives: a TextRoom message with such a date parses, and the
        // room falls back to the time of receipt.
        let e: TextEvent = serde_json::from_str(
            r#"{"textroom":"message","room":"r","from":"u","date":"20260000709551615-11-205T20:47:32+0000","text":"hi"}"#,
        )
        .unwrap();
        let TextEvent::Message { date, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(date.as_deref().and_then(parse_janus_date), None);
    }

    #[test]
    fn feeds_show_who_publishes() {
        let user = User::parse("box-17", "Room 101").unwrap();
        let info = user_of_feed("box-17-main", Some(&display_of(&user)));
        assert_eq!(info.user_id, "box-17");
        assert_eq!(info.user_name, "Room 101");
        let info = user_of_feed("cam", Some("Teacher"));
        assert_eq!(
            (info.user_id.as_str(), info.user_name.as_str()),
            ("Teacher", "Teacher")
        );
        let info = user_of_feed("cam", None);
        assert_eq!(info.user_id, "cam");
    }

    #[test]
    fn remote_streams_come_from_the_offer() {
        let sdp = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:video0\r\na=rtpmap:96 H264/90000\r\n\
            a=fmtp:96 packetization-mode=1;profile-level-id=42c01e\r\na=rtpmap:97 rtx/90000\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio1\r\na=rtpmap:111 OPUS/48000/2\r\n";
        let streams = remote_streams(sdp);
        assert_eq!(
            streams,
            vec![
                RemoteStream {
                    kind: "video".into(),
                    mindex: 0,
                    mid: "video0".into(),
                    codec: "h264".into(),
                    h264_profile: Some("42c01e".into()),
                },
                RemoteStream {
                    kind: "audio".into(),
                    mindex: 1,
                    mid: "audio1".into(),
                    codec: "opus".into(),
                    h264_profile: None,
                },
            ]
        );
        let request = RelayRequest::AddRemotePublisher {
            room: "bigclass",
            id: "cam",
            display: "d",
            iface: "127.0.0.1",
            streams: &streams[1..],
        };
        assert_eq!(
            request.body(),
            serde_json::json!({"request": "add_remote_publisher", "room": "bigclass", "id": "cam",
                "display": "d", "iface": "127.0.0.1",
                "streams": [{"type": "audio", "mindex": 1, "mid": "audio1", "codec": "opus"}]})
        );
    }

    #[test]
    fn custom_commands_are_enveloped() {
        let text = serde_json::to_string(&CustomCommandEnvelope {
            custom_command: "raise-hand".into(),
        })
        .unwrap();
        assert_eq!(text, r#"{"custom_command":"raise-hand"}"#);
        assert!(serde_json::from_str::<CustomCommandEnvelope>(r#"{"text":"hi"}"#).is_err());
        assert!(serde_json::from_str::<CustomCommandEnvelope>("hello").is_err());
    }
}
