//! The shape of the config file. Every section denies unknown fields, so a typo is an
//! error that names the field, never a silently ignored setting.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::base::secret::Secret;
use crate::engine::{FanoutPolicy, RoomMode, User};

/// The most rooms `rooms.max_rooms` may allow.
pub const MAX_ROOMS_LIMIT: usize = crate::engine::limits::MAX_ROOMS;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This box's id: part of every MQTT topic, so letters, digits, `-` and `_`.
    pub device_id: String,
    /// Where the desired state (rooms, streams) survives restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The identity this box logs in to rooms with.
    pub identity: User,
    #[serde(default)]
    pub rooms: RoomsConfig,
    pub sources: SourcesConfig,
    #[serde(default)]
    pub encoder: EncoderConfig,
    #[serde(default)]
    pub player: PlayerSettings,
    pub mqtt: MqttConfig,
    pub janus: JanusConfig,
    #[serde(default)]
    pub network: super::network::NetworkConfig,
    #[serde(default)]
    pub audio_processing: super::audio_processing::AudioProcessingConfig,
    #[serde(default)]
    pub media: super::media::MediaConfig,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/roomcast")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Fixed for the life of the process; `set_room_mode` cannot change it (1001020).
    #[serde(default)]
    pub mode: RoomMode,
    #[serde(default = "default_max_rooms")]
    pub max_rooms: usize,
    /// The deployment's switch for multi-room mode: when false, logins in multi mode fail
    /// with 1002036.
    #[serde(default)]
    pub multi_room_enabled: bool,
    /// Seconds between `publisher_quality_update` / `player_quality_update` events per
    /// stream; 0 sends none (the state snapshot still carries the figures).
    #[serde(default = "default_quality_interval")]
    pub quality_interval_s: u64,
    /// The rooms this box may be sent into, as globs (`*`, `?`): `login_room` to another
    /// fails with 1002906. Empty (the default): every room.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// How a channel published into several rooms reaches them: one upload per room
    /// (`device`), one per server relayed by Janus (`server`), or `server` where the
    /// server can (`auto`).
    #[serde(default)]
    pub fanout: FanoutPolicy,
    /// Which Janus server a room is on when `login_room` names none: the first route
    /// whose glob matches the room id; no match: the default server (`[janus]`).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// One `rooms.routes` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A glob over room ids (`*`, `?`), as in `rooms.allowed`.
    pub rooms: String,
    /// `default` or the name of a `[janus.servers.<name>]`.
    pub server: String,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            mode: RoomMode::Single,
            max_rooms: default_max_rooms(),
            multi_room_enabled: false,
            quality_interval_s: default_quality_interval(),
            allowed: Vec::new(),
            fanout: FanoutPolicy::Device,
            routes: Vec::new(),
        }
    }
}

fn default_quality_interval() -> u64 {
    3
}

fn default_max_rooms() -> usize {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    pub main: SourceConfig,
    pub aux: Option<SourceConfig>,
}

impl SourcesConfig {
    /// The configured sources with their channel names.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &SourceConfig)> {
        std::iter::once(("main", &self.main)).chain(self.aux.as_ref().map(|aux| ("aux", aux)))
    }

    pub fn get(&self, channel: crate::engine::Channel) -> Option<&SourceConfig> {
        match channel {
            crate::engine::Channel::Main => Some(&self.main),
            crate::engine::Channel::Aux => self.aux.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub video: VideoInput,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default = "default_framerate")]
    pub framerate: u32,
    #[serde(default = "default_audio")]
    pub audio: AudioInput,
    /// Paint the BLK1 capture timestamp into the top-left of the picture, so that
    /// subscribers can measure latency. Default: on for `test`, off for cameras.
    pub stamp: Option<bool>,
}

impl SourceConfig {
    pub fn stamp_enabled(&self) -> bool {
        self.stamp.unwrap_or(self.video == VideoInput::Test)
    }
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_framerate() -> u32 {
    30
}
fn default_audio() -> AudioInput {
    AudioInput::None
}

/// Where a channel's video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoInput {
    /// A moving test pattern carrying a BLK1 capture timestamp.
    Test,
    /// A V4L2 capture device, e.g. `/dev/video0`.
    V4l2(PathBuf),
}

impl<'de> Deserialize<'de> for VideoInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        match raw.as_str() {
            "test" => Ok(VideoInput::Test),
            path if path.starts_with("/dev/") && path.len() > 5 => {
                Ok(VideoInput::V4l2(PathBuf::from(path)))
            }
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not a video input: use \"test\" or a V4L2 device path such as \"/dev/video0\" (see `roomcast devices`)"
            ))),
        }
    }
}

impl fmt::Display for VideoInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VideoInput::Test => f.write_str("test"),
            VideoInput::V4l2(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Where a channel's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInput {
    /// A test tone.
    Test,
    /// A simulated classroom for trying the audio processing without a sound card: the
    /// "microphone" hears a near-end talker and what the speaker plays, 6 dB down and
    /// 40 ms late, as a real room would. The talker is a 190 Hz voice in syllable-paced
    /// bursts, or the recording in `talker` (`"test-room:/path/to/speech.wav"`: 16-bit
    /// PCM mono WAV, looped).
    TestRoom { talker: Option<PathBuf> },
    /// No audio track.
    None,
    /// An ALSA capture device name, e.g. `default`, `hw:1,0`, `plughw:CARD=C920`.
    Alsa(String),
}

impl<'de> Deserialize<'de> for AudioInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        match raw.as_str() {
            "test" => Ok(AudioInput::Test),
            "test-room" => Ok(AudioInput::TestRoom { talker: None }),
            room if room.starts_with("test-room:") => {
                let path = &room["test-room:".len()..];
                if path.is_empty() || path.chars().any(char::is_control) {
                    return Err(serde::de::Error::custom(format!(
                        "{room:?}: name the talker's recording after \"test-room:\", e.g. \"test-room:/usr/share/sounds/speech.wav\""
                    )));
                }
                Ok(AudioInput::TestRoom {
                    talker: Some(PathBuf::from(path)),
                })
            }
            "none" => Ok(AudioInput::None),
            "null" => Err(serde::de::Error::custom(
                "ALSA's \"null\" device captures no real-time audio (it returns silence as fast as it is read); use audio = \"none\" for no audio track",
            )),
            name if !name.is_empty()
                && name.len() <= 128
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '!') =>
            {
                Ok(AudioInput::Alsa(name.to_owned()))
            }
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not an audio input: use \"test\", \"test-room\" (or \"test-room:TALKER.wav\"), \"none\" or an ALSA device name such as \"default\" or \"hw:1,0\" (see `roomcast devices`)"
            ))),
        }
    }
}

impl fmt::Display for AudioInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AudioInput::Test => f.write_str("test"),
            AudioInput::TestRoom { talker: None } => f.write_str("test-room"),
            AudioInput::TestRoom { talker: Some(path) } => {
                write!(f, "test-room:{}", path.display())
            }
            AudioInput::None => f.write_str("none"),
            AudioInput::Alsa(name) => write!(f, "alsa:{name}"),
        }
    }
}

/// Which H.264 encoder to use; `auto` probes hardware encoders first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncoderPreference {
    #[default]
    Auto,
    V4l2h264enc,
    Nvv4l2h264enc,
    Mpph264enc,
    Vah264enc,
    Vaapih264enc,
    X264enc,
    Openh264enc,
}

impl EncoderPreference {
    /// The GStreamer element name, or `None` for `auto`.
    pub fn element(self) -> Option<&'static str> {
        Some(match self {
            EncoderPreference::Auto => return None,
            EncoderPreference::V4l2h264enc => "v4l2h264enc",
            EncoderPreference::Nvv4l2h264enc => "nvv4l2h264enc",
            EncoderPreference::Mpph264enc => "mpph264enc",
            EncoderPreference::Vah264enc => "vah264enc",
            EncoderPreference::Vaapih264enc => "vaapih264enc",
            EncoderPreference::X264enc => "x264enc",
            EncoderPreference::Openh264enc => "openh264enc",
        })
    }
}

impl fmt::Display for EncoderPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element().unwrap_or("auto"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    #[serde(default)]
    pub preference: EncoderPreference,
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u32,
    #[serde(default = "default_keyframe_interval")]
    pub keyframe_interval_s: u32,
    #[serde(default = "default_audio_bitrate")]
    pub audio_bitrate_kbps: u32,
    /// The shared encoder's bitrate follows the lowest bitrate any room asks for (REMB),
    /// `bitrate_kbps` being the ceiling.
    #[serde(default = "default_true")]
    pub follow_room_bitrate: bool,
    /// The lowest video bitrate the encoder is taken down to, in kbit/s.
    #[serde(default = "default_min_bitrate")]
    pub min_bitrate_kbps: u32,
    /// Each room's sender estimates its path with Google Congestion Control
    /// (transport-wide feedback from Janus), paces its packets to the estimate, and the
    /// shared encoder follows the narrowest room.
    #[serde(default = "default_true")]
    pub congestion_control: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            preference: EncoderPreference::Auto,
            bitrate_kbps: default_bitrate(),
            keyframe_interval_s: default_keyframe_interval(),
            audio_bitrate_kbps: default_audio_bitrate(),
            follow_room_bitrate: true,
            min_bitrate_kbps: default_min_bitrate(),
            congestion_control: true,
        }
    }
}

/// The default of `encoder.min_bitrate_kbps`: under this a 720p picture is mush.
pub const DEFAULT_MIN_BITRATE_KBPS: u32 = 150;

fn default_min_bitrate() -> u32 {
    DEFAULT_MIN_BITRATE_KBPS
}

fn default_bitrate() -> u32 {
    2000
}
fn default_keyframe_interval() -> u32 {
    2
}
fn default_audio_bitrate() -> u32 {
    32
}

/// How played streams are rendered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerSettings {
    /// Jitter-buffer latency of played streams, in milliseconds.
    #[serde(default = "default_player_latency")]
    pub latency_ms: u32,
    /// ALSA playback device for `speaker` and `display` outputs.
    #[serde(default = "default_playback_device")]
    pub audio_device: String,
}

impl Default for PlayerSettings {
    fn default() -> Self {
        Self {
            latency_ms: default_player_latency(),
            audio_device: default_playback_device(),
        }
    }
}

fn default_player_latency() -> u32 {
    100
}
fn default_playback_device() -> String {
    "default".to_owned()
}

/// A broker address: `mqtt://host:port` or `mqtts://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttUrl {
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The broker is this machine (a loopback address or `localhost`). A private address
    /// is not: the school's network is a network.
    pub fn is_loopback(&self) -> bool {
        host_is_loopback(&self.host)
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                    "scheme {other:?} is not allowed: use mqtt://host:port or mqtts://host:port"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{raw:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if url.path() != "" && url.path() != "/" {
            return Err(format!(
                "{raw:?} has a path; a broker URL is just mqtt(s)://host:port"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "put credentials in mqtt.username / mqtt.password, not in the URL".to_owned(),
            );
        }
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(Self { tls, host, port })
    }
}

impl<'de> Deserialize<'de> for MqttUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        MqttUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker (one). Either this or `urls`.
    pub url: Option<MqttUrl>,
    /// Several brokers (a cluster, or bridged brokers sharing the topics), tried in
    /// order: when the one connected goes away the box moves to the next. Either this or
    /// `url`.
    #[serde(default)]
    pub urls: Vec<MqttUrl>,
    /// Defaults to `roomcast-{device_id}`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// CA certificate (PEM) for an mqtts:// broker.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that require them.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_mqtt_keepalive")]
    pub keepalive_s: u16,
}

/// The most brokers `mqtt.urls` may list.
pub const MAX_BROKERS: usize = 8;

/// A list of brokers for messages: `mqtt://a:1883`, or `[mqtt://a:1883, mqtt://b:1883]`.
pub fn describe_broker_list(urls: &[MqttUrl]) -> String {
    let urls: Vec<String> = urls.iter().map(ToString::to_string).collect();
    match urls.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// What is wrong with a list of brokers (the agent's `mqtt.urls`, the console's
/// `--broker`s): more than [`MAX_BROKERS`], one listed twice (with its index), or
/// `mqtt://` mixed with `mqtts://`. Empty when the list can be used.
pub fn broker_list_problems(urls: &[MqttUrl]) -> Vec<(Option<usize>, String)> {
    let mut problems = Vec::new();
    if urls.len() > MAX_BROKERS {
        problems.push((
            None,
            format!("{} brokers listed; at most {MAX_BROKERS}", urls.len()),
        ));
    }
    for (i, url) in urls.iter().enumerate() {
        if urls[..i].contains(url) {
            problems.push((Some(i), format!("{url} is listed twice")));
        }
    }
    if urls.iter().any(MqttUrl::is_tls) && !urls.iter().all(MqttUrl::is_tls) {
        problems.push((
            None,
            "mixes mqtt:// and mqtts:// brokers: use mqtts:// for all (roomcast never falls \
             back to plaintext) or mqtt:// for all"
                .to_owned(),
        ));
    }
    problems
}

impl MqttConfig {
    /// The brokers in the order they are tried: `url`, or `urls`.
    pub fn brokers(&self) -> Vec<MqttUrl> {
        self.url.iter().chain(self.urls.iter()).cloned().collect()
    }

    /// Some broker is reached over TLS (then all are: the config refuses a mix).
    pub fn is_tls(&self) -> bool {
        self.brokers().iter().any(MqttUrl::is_tls)
    }

    /// The brokers for messages: `mqtt://a:1883`, or `[mqtt://a:1883, mqtt://b:1883]`.
    pub fn describe_brokers(&self) -> String {
        describe_broker_list(&self.brokers())
    }
}

fn default_topic_prefix() -> String {
    "roomcast".to_owned()
}
fn default_mqtt_keepalive() -> u16 {
    30
}

/// Whether `host` (a name or an address, IPv6 without brackets) is this machine.
fn host_is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A Janus WebSocket address: `ws://host:port/path` or `wss://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanusUrl(url::Url);

impl JanusUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// `ws://` (not `wss://`).
    pub fn is_plaintext(&self) -> bool {
        self.0.scheme() == "ws"
    }

    /// Janus is this machine (see [`MqttUrl::is_loopback`]).
    pub fn is_loopback(&self) -> bool {
        self.0.host_str().is_none_or(host_is_loopback)
    }

    pub fn is_plaintext_remote(&self) -> bool {
        let local = match self.0.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => true,
        };
        self.0.scheme() == "ws" && !local
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(format!(
                "scheme {:?} is not allowed: Janus is reached over WebSockets, ws://host:8188 or wss://host:8989",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{raw:?} has no host"));
        }
        // Refused like credentials in mqtt.url: the URL is logged and shown by
        // check-config, and a secret in it would be printed with it.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "put credentials in janus.api_secret / janus.token, not in the URL".to_owned(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(
                "has a query or a fragment; a Janus URL is ws(s)://host:port/path (put a token in janus.token, not in the URL)"
                    .to_owned(),
            );
        }
        Ok(Self(url))
    }
}

impl<'de> Deserialize<'de> for JanusUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        JanusUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for JanusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JanusConfig {
    pub url: JanusUrl,
    /// Janus's `api_secret`, when the server sets one.
    pub api_secret: Option<Secret>,
    /// A Janus stored-auth token, when the server uses token auth.
    pub token: Option<Secret>,
    /// Create a room that does not exist yet (otherwise logging in to it fails, 1002903).
    #[serde(default = "default_true")]
    pub create_rooms: bool,
    /// The plugins' `admin_key`, needed to create rooms when the server sets one.
    pub admin_key: Option<Secret>,
    /// For `wss://`: the CA certificate (PEM) that signed Janus's certificate, when it
    /// is the school's own CA. Only that CA is then trusted; without it, the system's.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_keepalive_interval")]
    pub keepalive_interval_s: u64,
    /// Give up reconnecting a room after this long (ReconnectFailed).
    #[serde(default = "default_reconnect_window")]
    pub reconnect_window_s: u64,
    /// Settings of rooms roomcast creates.
    #[serde(default)]
    pub room: JanusRoomSettings,
    /// More servers, by name (`[janus.servers.<name>]`), with the same keys as `[janus]`
    /// (but no `servers` of their own). `[janus]` itself is the server named `default`.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, JanusConfig>,
}

impl JanusConfig {
    /// Every configured server: `default` (this section) first, then
    /// `[janus.servers.*]` by name.
    pub fn all_servers(&self) -> impl Iterator<Item = (&str, &JanusConfig)> {
        std::iter::once((crate::engine::ServerName::DEFAULT, self))
            .chain(self.servers.iter().map(|(name, c)| (name.as_str(), c)))
    }
}

pub(super) fn default_true() -> bool {
    true
}
fn default_request_timeout() -> u64 {
    5000
}
fn default_keepalive_interval() -> u64 {
    25
}
fn default_reconnect_window() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JanusRoomSettings {
    /// Most publishers at once in a created room.
    #[serde(default = "default_publishers")]
    pub publishers: u32,
    /// Bitrate cap Janus announces to each publisher of a created room.
    #[serde(default = "default_room_bitrate")]
    pub bitrate_kbps: u32,
}

impl Default for JanusRoomSettings {
    fn default() -> Self {
        Self {
            publishers: default_publishers(),
            bitrate_kbps: default_room_bitrate(),
        }
    }
}

fn default_publishers() -> u32 {
    16
}
fn default_room_bitrate() -> u32 {
    4000
}
