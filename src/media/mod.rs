//! Media: capture, one shared encode per channel, a WebRTC peer per published or
//! played stream.
//!
//! ```text
//! camera ─▶ [stamp] ─▶ encoder ─▶ pay ─▶ frames ─▶ tee ─┬─▶ gate ─▶ webrtcbin (room A)
//! mic ──────────────▶ opusenc ─▶ pay ─────────────▶ tee ─┼─▶ gate ─▶ webrtcbin (room B)
//!                                                        └─▶ …  (one encode, one payload, N rooms)
//! room X ─▶ webrtcbin ─▶ depay ─▶ decoder ─▶ display / speaker mixer / counter
//! ```
//!
//! `frames` gathers each video frame's packets into one buffer list (`framelist.rs`);
//! each `gate` is a probe on the tee pad that passes media once that room's peer
//! connection is up (`publisher.rs`). The tees' threads send into every room themselves.
//! Two things keep that cheap per room inside webrtcbin: a frame's list passes its
//! idle FEC stage whole (`fec_bypass.rs`), and both tees carry one shared segment
//! event, so the bundle's funnel has none to re-send when it switches between audio
//! and video (`shared_segment.rs`).

mod audio_processing;
pub mod bandwidth;
pub mod congestion;
pub mod devices;
pub mod encoder;
mod player;
mod publisher;
mod quality;
pub mod source;
mod speaker;
/// The BLK1 stamp (its layout lives in `base`: the config checks that it fits).
pub use crate::base::stamp;
pub mod test_room;
pub mod workarounds;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tracing::info;

use self::audio_processing::EchoReference;
use self::encoder::Selected;
use self::player::Player;
use self::publisher::Publisher;
use self::source::{CameraFormat, EncoderBitrate, Source};
pub use self::source::{SourceFault, SourceProbe};
use self::speaker::Speaker;
use crate::config::audio_processing::AudioProcessingConfig;
use crate::config::{AudioInput, Config, VideoInput};
use crate::engine::backend::{
    AudioProcessingSnapshot, MediaEngine, MediaSnapshot, PeerHandle, SourceSnapshot,
};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::types::{Channel, PlayOutput, RoomId, StreamId};

/// Why media could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{0}")]
    Setup(String),
}

/// Elements every box needs, with the Debian package that has them.
const REQUIRED: [(&str, &str); 12] = [
    ("webrtcbin", "gstreamer1.0-plugins-bad"),
    ("nicesrc", "gstreamer1.0-nice"),
    ("rtph264pay", "gstreamer1.0-plugins-good"),
    ("rtpopuspay", "gstreamer1.0-plugins-good"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("rtph264depay", "gstreamer1.0-plugins-good"),
    ("openh264dec", "gstreamer1.0-plugins-bad"),
    ("opusdec", "gstreamer1.0-plugins-base"),
    ("audiomixer", "gstreamer1.0-plugins-base"),
    ("interaudiosrc", "gstreamer1.0-plugins-bad"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
];

/// The pipeline each configured channel would run, gst-launch style (for `roomcast
/// pipeline`). Probes cameras when they are present.
pub fn describe_all(config: &Config) -> Result<(Selected, Vec<(Channel, String)>), MediaError> {
    crate::webrtc::init().map_err(|e| MediaError::Setup(e.to_string()))?;
    let model = encoder::board_model();
    let selected = encoder::select(
        config.encoder.preference,
        model.as_deref(),
        encoder::element_exists,
    )?;
    let mut out = Vec::new();
    for (channel, source) in [
        (Channel::Main, Some(&config.sources.main)),
        (Channel::Aux, config.sources.aux.as_ref()),
    ] {
        let Some(source) = source else { continue };
        let camera = match &source.video {
            VideoInput::Test => None,
            VideoInput::V4l2(device) => Some(
                source::probe_camera(&device.display().to_string(), source.width, source.height)
                    .unwrap_or(CameraFormat::Raw),
            ),
        };
        out.push((
            channel,
            source::describe(
                channel,
                source,
                &selected,
                &config.encoder,
                camera,
                &config.audio_processing,
            ),
        ));
    }
    Ok((selected, out))
}

/// Puts each `turns://` relay behind a local TLS tunnel (libnice would speak cleartext
/// TCP to it) and hands webrtcbin the tunnel instead.
fn tunnel_tls_relays(
    ice: &mut crate::config::network::IceServers,
    config: &Config,
) -> Result<Vec<crate::webrtc::turn_tls::Tunnel>, MediaError> {
    use crate::config::network::RelayTransport;
    use crate::webrtc::turn_tls;
    if !ice.turn.iter().any(|t| t.transport == RelayTransport::Tls) {
        return Ok(Vec::new());
    }
    let tls = turn_tls::tls_config(config.network.turn_ca_file.as_deref())
        .map_err(|e| MediaError::Setup(e.to_string()))?;
    let mut tunnels = Vec::new();
    for relay in ice.turn.iter_mut() {
        if relay.transport != RelayTransport::Tls {
            continue;
        }
        let tunnel =
            turn_tls::start(relay, tls.clone()).map_err(|e| MediaError::Setup(e.to_string()))?;
        *relay = turn_tls::through(relay, &tunnel);
        tunnels.push(tunnel);
    }
    Ok(tunnels)
}

/// The GStreamer media engine.
pub struct GstMedia {
    sources: BTreeMap<Channel, Arc<Source>>,
    /// The local ends of the `turns://` relays (`webrtc::turn_tls`); they stop with
    /// this media engine.
    _turn_tunnels: Vec<crate::webrtc::turn_tls::Tunnel>,
    encoder: Selected,
    speaker: Arc<Speaker>,
    player_latency_ms: u32,
}

impl GstMedia {
    /// Chooses the encoder and checks every element the configuration needs. Sources
    /// start when something is first published.
    pub fn new(config: &Config) -> Result<Self, MediaError> {
        crate::webrtc::init().map_err(|e| MediaError::Setup(e.to_string()))?;
        let mut ice = config
            .network
            .ice_servers()
            .map_err(|(key, message)| MediaError::Setup(format!("{key}: {message}")))?;
        let turn_tunnels = tunnel_tls_relays(&mut ice, config)?;
        if !ice.turn.is_empty() || ice.stun.is_some() {
            let relays: Vec<String> = ice.turn.iter().map(ToString::to_string).collect();
            info!(stun = ?ice.stun, turn = ?relays, policy = ice.policy.nick(), "ICE servers");
        }
        crate::webrtc::configure_ice(ice);
        // Before any peer: the SRTP primitives are process-wide.
        workarounds::decide(&config.media);
        for (element, package) in REQUIRED {
            if !encoder::element_exists(element) {
                return Err(MediaError::Setup(format!(
                    "GStreamer element `{element}` is missing: install {package}"
                )));
            }
        }
        let (selected, descriptions) = describe_all(config)?;
        if selected.spec.properties.keys().next().is_some() {
            encoder::check_properties(&selected.spec)?;
        }
        info!(encoder = %selected.spec.element, preset = %selected.preset, "video encoder chosen");
        let mut sources = BTreeMap::new();
        for (channel, description) in descriptions {
            let Some(source_config) = config.sources.get(channel) else {
                continue;
            };
            // Parse now so a bad device name or a missing element fails at startup.
            gst::parse::launch(&description).map_err(|e| {
                MediaError::Setup(format!(
                    "channel `{channel}`: the pipeline does not build ({e}): {description}"
                ))
            })?;
            let bitrate = EncoderBitrate::new(
                selected.spec.clone(),
                &config.encoder,
                source_config.framerate,
            );
            sources.insert(
                channel,
                Arc::new(Source::new(
                    channel,
                    source_config,
                    description,
                    bitrate,
                    &config.audio_processing,
                )),
            );
        }
        // Every microphone gets an echo probe, even with echo_cancel off now: a reload
        // may turn it on without rebuilding the speaker.
        let configured = || {
            [Channel::Main, Channel::Aux]
                .into_iter()
                .filter_map(|channel| config.sources.get(channel).map(|s| (channel, s)))
        };
        let microphones: Vec<Channel> = configured()
            .filter(|(_, source)| source::processes_audio(source))
            .map(|(channel, _)| channel)
            .collect();
        if !microphones.is_empty() {
            for element in ["webrtcdsp", "webrtcechoprobe"] {
                if !encoder::element_exists(element) {
                    return Err(MediaError::Setup(format!(
                        "GStreamer element `{element}` is missing (audio processing): install gstreamer1.0-plugins-bad"
                    )));
                }
            }
        }
        // A test room's recorded talker is read now, so that a bad file fails the start.
        for (_, source) in configured() {
            if let AudioInput::TestRoom { talker: Some(path) } = &source.audio {
                test_room::Recording::load(path)?;
            }
        }
        let loopbacks = configured()
            .filter(|(_, source)| matches!(source.audio, AudioInput::TestRoom { .. }))
            .map(|(channel, _)| test_room::loopback_name(channel))
            .collect();
        let speaker = Speaker::new(
            &config.player.audio_device,
            EchoReference::new(microphones),
            loopbacks,
        );
        Ok(Self {
            _turn_tunnels: turn_tunnels,
            sources,
            encoder: selected,
            speaker: Arc::new(speaker),
            player_latency_ms: config.player.latency_ms,
        })
    }

    /// Applies a reloaded `[audio_processing]` to every microphone, in place: no room is
    /// left, no encoder restarted.
    pub fn set_audio_processing(&self, config: &AudioProcessingConfig) -> Result<(), MediaError> {
        for source in self.sources.values() {
            source.set_audio_processing(config)?;
        }
        Ok(())
    }

    fn audio_processing_snapshot(&self) -> Option<AudioProcessingSnapshot> {
        let mut processed = self
            .sources
            .values()
            .filter_map(|s| s.audio_processing().map(|p| (s.channel, p)));
        let (first, stages) = processed.next()?;
        let mut channels = vec![first];
        channels.extend(processed.map(|(channel, _)| channel));
        Some(AudioProcessingSnapshot {
            stages,
            channels,
            echo_reference: self.speaker.is_playing(),
        })
    }

    /// Stops every source (shutdown).
    pub fn shutdown(&self) {
        for source in self.sources.values() {
            source.shutdown();
        }
    }

    pub fn encoder(&self) -> &Selected {
        &self.encoder
    }

    /// What the watchdog checks of each configured channel: `None` when it is not
    /// running (nothing publishes it, or it failed and the engine is retrying).
    pub fn probes(&self) -> Vec<(Channel, Option<SourceProbe>)> {
        self.sources
            .iter()
            .map(|(channel, source)| (*channel, source.probe()))
            .collect()
    }

    /// Fault injection for the fault tests: makes `channel`'s source fail as a camera
    /// does (see [`SourceFault`]). Nothing in roomcast calls it except the test-only
    /// fault socket (`service::faults`).
    pub fn inject_source_fault(
        &self,
        channel: Channel,
        fault: SourceFault,
    ) -> Result<(), MediaError> {
        self.sources
            .get(&channel)
            .ok_or_else(|| MediaError::Setup(format!("channel `{channel}` is not configured")))?
            .inject(fault)
    }

    /// Fault injection: the capture element of `channel` posts an error (the pipeline
    /// fails, its publishers fail, the engine rebuilds it with backoff).
    pub fn inject_source_error(&self, channel: Channel) -> Result<(), MediaError> {
        self.inject_source_fault(channel, SourceFault::Error)
    }
}

#[async_trait]
impl MediaEngine for GstMedia {
    async fn open_publisher(
        &self,
        room: &RoomId,
        stream: &StreamId,
        channel: Channel,
    ) -> Result<PeerHandle, BackendError> {
        let source = self.sources.get(&channel).ok_or_else(|| {
            BackendError::new(
                ErrorCode::PUBLISH_MEDIA_FAILED,
                format!("channel `{channel}` has no source: add [sources.{channel}] to the config"),
            )
        })?;
        let publisher = Publisher::attach(source.clone(), format!("publish {room}/{stream}"))?;
        Ok(publisher)
    }

    async fn open_player(
        &self,
        room: &RoomId,
        stream: &StreamId,
        output: PlayOutput,
    ) -> Result<PeerHandle, BackendError> {
        let player = Player::open(
            format!("play {room}/{stream}"),
            output,
            self.player_latency_ms,
            self.speaker.clone(),
        )?;
        Ok(player)
    }

    fn address_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(crate::base::netwatch::watch_addresses())
    }

    fn snapshot(&self) -> MediaSnapshot {
        MediaSnapshot {
            sources: self
                .sources
                .values()
                .map(|s| SourceSnapshot {
                    channel: s.channel,
                    video: s.video_label.clone(),
                    audio: s.audio_label.clone(),
                    running: s.is_running(),
                    bitrate_kbps: s.bitrate_kbps(),
                    error: s.last_error(),
                })
                .collect(),
            encoder: Some(self.encoder.spec.element.clone()),
            audio_processing: self.audio_processing_snapshot(),
            fast_paths: workarounds::snapshot(),
        }
    }
}

/// Test helpers shared by the media modules' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use gst::prelude::*;

    /// A live appsrc of H.264 RTP (payload type 96), the caps a webrtcbin sink pad needs
    /// to offer it.
    pub fn rtp_video_appsrc() -> gst::Element {
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "H264")
            .field("payload", 96i32)
            .field("clock-rate", 90_000i32)
            .field("packetization-mode", "1")
            .field("profile-level-id", "42e01f")
            .build();
        gst::ElementFactory::make("appsrc")
            .property("caps", &caps)
            .property("is-live", true)
            .property("do-timestamp", true)
            .property_from_str("format", "time")
            .build()
            .unwrap()
    }

    /// A new sink pad of `webrtcbin`, its transceiver send-only.
    pub fn sendonly_pad(webrtcbin: &gst::Element) -> gst::Pad {
        let pad = webrtcbin.request_pad_simple("sink_%u").unwrap();
        pad.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
            .unwrap()
            .set_property(
                "direction",
                gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
            );
        pad
    }

    /// A minimal RTP packet (version 2, payload type 96, SSRC 7): marker as given,
    /// payload of `len` bytes.
    pub fn rtp_packet(timestamp: u32, marker: bool, len: usize) -> gst::Buffer {
        let mut bytes = vec![0x80, 96 | if marker { 0x80 } else { 0 }, 0, 1];
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 7]);
        bytes.resize(12 + len, 0xab);
        gst::Buffer::from_mut_slice(bytes)
    }

    /// Plays `pipeline` until end of stream (an error or `within_s` seconds fails the
    /// test), then takes it to NULL.
    pub fn run_to_eos(pipeline: &gst::Element, within_s: u64) {
        use gst::prelude::*;
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let message = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(within_s),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .unwrap_or_else(|| panic!("the pipeline ends within {within_s} s"));
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(message.type_(), gst::MessageType::Eos, "{message:?}");
    }
}
