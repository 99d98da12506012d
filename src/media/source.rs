//! One channel's capture and encode, shared by every room it is published into:
//! `source → [stamp] → encoder → h264parse → rtph264pay → tee` and
//! `audio → opusenc → rtpopuspay → tee`.
//!
//! The pipeline is written as a gst-launch description and parsed, so `roomcast
//! pipeline` prints exactly what runs. It starts when the first publisher attaches and
//! stops [`LINGER`] after the last one leaves (a quiet classroom costs no CPU). An error
//! from the capture or the encoder stops it and fails every attached publisher; the
//! engine restarts them with backoff, which rebuilds the pipeline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use gst::prelude::*;
use gst_video::prelude::*;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::MediaError;
use super::audio_processing::{self, RAW_CAPS};
use super::bandwidth::{BitrateFollower, Origin};
use super::congestion::{self, EstimatorBounds};
use super::encoder::{self, EncoderSpec, Selected};
use super::stamp;
use super::test_room;
use super::workarounds::{self, FastPath, framelist, shared_segment};
use crate::config::audio_processing::AudioProcessingConfig;
use crate::config::{AudioInput, EncoderConfig, SourceConfig, VideoInput};
use crate::engine::types::Channel;

/// How long a source keeps running after its last publisher left.
pub const LINGER: Duration = Duration::from_secs(10);
/// At most one forced keyframe per this interval, across every room of the channel.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// What a V4L2 camera can deliver at the configured size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraFormat {
    /// The camera encodes H.264 itself (UVC H.264): used as is, no re-encode.
    H264,
    /// MJPEG, decoded before our encoder.
    Mjpeg,
    /// Raw frames (YUYV, NV12, …), converted and scaled as needed.
    Raw,
}

/// Asks the camera what it can do (GStreamer's view of the V4L2 formats).
pub fn probe_camera(device: &str, width: u32, height: u32) -> Result<CameraFormat, MediaError> {
    let src = gst::ElementFactory::make("v4l2src")
        .property("device", device)
        .build()
        .map_err(|_| {
            MediaError::Setup("v4l2src is missing (install gstreamer1.0-plugins-good)".into())
        })?;
    src.set_state(gst::State::Ready).map_err(|_| {
        MediaError::Setup(format!(
            "cannot open camera {device}: is it plugged in, and may roomcast use it (group video)?"
        ))
    })?;
    let caps = src.static_pad("src").map(|pad| pad.query_caps(None));
    let _ = src.set_state(gst::State::Null);
    let caps =
        caps.ok_or_else(|| MediaError::Setup(format!("camera {device} reports no formats")))?;
    Ok(choose_camera_format(&caps, width, height))
}

/// H.264 at the size beats MJPEG at the size beats raw (scaled as needed).
pub fn choose_camera_format(caps: &gst::CapsRef, width: u32, height: u32) -> CameraFormat {
    let offers = |name: &str| {
        caps.iter().any(|s| {
            s.name() == name
                && s.get::<i32>("width").is_ok_and(|w| w as u32 == width)
                && s.get::<i32>("height").is_ok_and(|h| h as u32 == height)
        })
    };
    if offers("video/x-h264") {
        CameraFormat::H264
    } else if offers("image/jpeg") {
        CameraFormat::Mjpeg
    } else {
        CameraFormat::Raw
    }
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn caps_field(caps: &str, field: &str) -> Option<String> {
    caps.split(',')
        .find_map(|part| part.trim().strip_prefix(&format!("{field}=")))
        .map(|v| v.trim_start_matches("(string)").to_owned())
}

/// The channel's pipeline as a gst-launch description. `camera` is the probed format of
/// a V4L2 source (ignored for `test`).
pub fn describe(
    channel: Channel,
    source: &SourceConfig,
    encoder: &Selected,
    settings: &EncoderConfig,
    camera: Option<CameraFormat>,
    processing: &AudioProcessingConfig,
) -> String {
    let (w, h, fps) = (source.width, source.height, source.framerate);
    let spec = &encoder.spec;
    let raw_format = caps_field(&spec.input, "format").unwrap_or_else(|| "I420".into());
    let raw = format!("video/x-raw,format={raw_format},width={w},height={h},framerate={fps}/1");
    // Payloaded once for every room: each room's branch is only a queue into its
    // webrtcbin. config-interval=-1 repeats SPS/PPS with every IDR for late joiners.
    let au = "h264parse name=vparse config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au ! \
              rtph264pay name=vpay config-interval=-1 aggregate-mode=zero-latency mtu=1200 pt=96 ! \
              application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000 ! tee name=vtee allow-not-linked=true";
    let mut video = match (&source.video, camera) {
        (VideoInput::Test, _) => {
            format!("videotestsrc name=vsrc is-live=true pattern=smpte horizontal-speed=2 ! {raw}")
        }
        (VideoInput::V4l2(device), Some(CameraFormat::H264)) => {
            let device = quote(&device.display().to_string());
            format!(
                "v4l2src name=vsrc device={device} ! video/x-h264,width={w},height={h},framerate={fps}/1 ! {au}"
            )
        }
        (VideoInput::V4l2(device), Some(CameraFormat::Mjpeg)) => {
            let device = quote(&device.display().to_string());
            format!(
                "v4l2src name=vsrc device={device} ! image/jpeg,width={w},height={h},framerate={fps}/1 ! jpegdec ! videoconvert ! {raw}"
            )
        }
        (VideoInput::V4l2(device), _) => {
            let device = quote(&device.display().to_string());
            format!(
                "v4l2src name=vsrc device={device} ! video/x-raw ! videoconvert ! videoscale ! videorate ! {raw}"
            )
        }
    };
    if camera != Some(CameraFormat::H264) || source.video == VideoInput::Test {
        let gop = gop(settings, fps);
        let props: String = encoder::properties(spec, settings.bitrate_kbps, gop)
            .into_iter()
            .map(|(k, v)| format!(" {k}={}", quote(&v)))
            .collect();
        let convert = spec
            .convert
            .as_ref()
            .map(|c| format!("{c} ! {} ! ", spec.input))
            .unwrap_or_default();
        video.push_str(&format!(
            " ! identity name=stamp silent=true ! queue name=vqueue max-size-buffers=2 max-size-bytes=0 max-size-time=0 leaky=downstream ! {convert}{} name=venc{props} ! {} ! {au}",
            spec.element, spec.output
        ));
    }
    let encode = format!(
        "opusenc name=aenc bitrate={} frame-size=20 ! \
         rtpopuspay name=apay mtu=1200 pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! tee name=atee allow-not-linked=true",
        settings.audio_bitrate_kbps * 1000
    );
    // A microphone is processed once, before the shared encoder; a test tone is not.
    let processed = |input: &str| {
        format!(
            "{input} ! audioconvert ! audioresample ! {RAW_CAPS} ! {} ! {encode}",
            audio_processing::describe(processing, channel)
        )
    };
    let audio = match &source.audio {
        AudioInput::None => return video,
        AudioInput::Test => format!(
            "audiotestsrc name=asrc is-live=true wave=sine freq=440 volume=0.2 ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 ! {encode}"
        ),
        // The ALSA device paces capture (10 ms periods); the system clock stays the
        // pipeline's clock so audio and video share it.
        AudioInput::Alsa(device) => processed(&format!(
            "alsasrc name=asrc device={} provide-clock=false buffer-time=40000 latency-time=10000",
            quote(device)
        )),
        // The simulated room: a talker plus what the speaker plays, 6 dB down (the 40 ms
        // are a pad offset set at start, see `test_room`).
        AudioInput::TestRoom { .. } => format!(
            "{}  audiotestsrc name=asrc is-live=true wave=saw freq={} volume=0.5 samplesperbuffer=480 ! {RAW_CAPS} ! identity name={} silent=true ! roommic.  \
             appsrc name={} is-live=true format=time do-timestamp=false caps={RAW_CAPS} max-bytes=96000 leaky-type=downstream ! volume volume=0.5 ! queue ! roommic.",
            processed(&format!(
                "audiomixer name=roommic latency={}",
                test_room::MIXER_LATENCY.as_nanos()
            )),
            test_room::TALKER_HZ,
            test_room::TALKER,
            test_room::ECHO_PATH,
        ),
    };
    format!("{video}  {audio}")
}

/// Forced keyframes, coalesced: at most one per [`KEYFRAME_MIN_INTERVAL`]; a request in
/// between is deferred to the end of the interval, never dropped.
#[derive(Default)]
pub struct KeyframeGate {
    last: Mutex<Option<Instant>>,
    pending: std::sync::atomic::AtomicBool,
    pub forwarded: AtomicU64,
    pub coalesced: AtomicU64,
}

impl KeyframeGate {
    fn admit(&self) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        if last.is_none_or(|t| t.elapsed() >= KEYFRAME_MIN_INTERVAL) {
            *last = Some(Instant::now());
            self.pending.store(false, Ordering::Relaxed);
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.pending.store(true, Ordering::Relaxed);
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn due(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
            && self
                .last
                .lock()
                .map(|l| l.is_none_or(|t| t.elapsed() >= KEYFRAME_MIN_INTERVAL))
                .unwrap_or(true)
    }
}

/// Called with an error that came from one publisher branch's elements.
pub type BranchErrorHandler = Box<dyn Fn(String) + Send + Sync>;

/// Handles to a running channel pipeline, for attaching publisher branches.
#[derive(Clone)]
pub struct Running {
    /// Which start of the source this is: a publisher releases the pipeline it acquired,
    /// never a later one.
    pub generation: u64,
    pub pipeline: gst::Pipeline,
    pub video_tee: gst::Element,
    pub audio_tee: Option<gst::Element>,
    pub frames_encoded: Arc<AtomicU64>,
    pub keyframes: Arc<KeyframeGate>,
    /// The video encoder; `None` when the camera delivers H.264 itself.
    pub encoder: Option<gst::Element>,
    /// Cancelled when this pipeline stops (error or linger): attached branches are dead.
    pub stopped: CancellationToken,
    /// Branches register here to hear about errors from their own elements.
    branches: Arc<Mutex<HashMap<String, BranchErrorHandler>>>,
}

impl Running {
    /// Asks the encoder for a keyframe (rate-limited with every other request).
    pub fn request_keyframe(&self) {
        if let Some(pad) = self.video_tee.static_pad("sink") {
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.push_event(event);
        }
    }

    /// Routes bus errors from elements named `{prefix}…` to `on_error`.
    pub fn register_branch(&self, prefix: &str, on_error: BranchErrorHandler) {
        if let Ok(mut branches) = self.branches.lock() {
            branches.insert(prefix.to_owned(), on_error);
        }
    }

    pub fn unregister_branch(&self, prefix: &str) {
        if let Ok(mut branches) = self.branches.lock() {
            branches.remove(prefix);
        }
    }
}

struct State {
    running: Option<Running>,
    users: usize,
    generation: u64,
    last_error: Option<String>,
    /// Fault injection: starting fails until then (a camera unplugged for a while).
    unavailable_until: Option<Instant>,
}

/// A fault to inject into a running source, for the fault tests (see
/// [`super::GstMedia::inject_source_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFault {
    /// The capture element posts an error, as a camera that stops delivering does.
    Error,
    /// An error now, and the source cannot start again for this long (a camera
    /// unplugged, then plugged back in).
    Unavailable(Duration),
    /// Frames stop flowing while the pipeline stays PLAYING and reports nothing (a
    /// wedged driver): only the watchdog's liveness check notices.
    Stall,
}

/// What the watchdog looks at in a running source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceProbe {
    /// Changes whenever the pipeline is rebuilt.
    pub generation: u64,
    /// Encoded video frames (access units out of the parser) since it started.
    pub frames_encoded: u64,
    /// The pipeline's current state is PLAYING.
    pub playing: bool,
}

/// One channel's source: starts on demand, shared by its publishers.
pub struct Source {
    pub channel: Channel,
    pub description: String,
    pub video_label: String,
    pub audio_label: String,
    stamp: bool,
    width: u32,
    height: u32,
    bitrate: EncoderBitrate,
    /// The microphone's processing: what the description was built with, and what it is
    /// now (a reload changes it in place). `None` when the audio is not a microphone.
    described_processing: Option<AudioProcessingConfig>,
    processing: Mutex<Option<AudioProcessingConfig>>,
    /// The simulated room's talker, when the audio is one.
    test_room: Option<test_room::Talker>,
    state: Mutex<State>,
}

/// Whether a channel's audio goes through [`audio_processing`]: microphones (and the
/// simulated room) do; a test tone and no audio do not.
pub fn processes_audio(config: &SourceConfig) -> bool {
    matches!(
        config.audio,
        AudioInput::Alsa(_) | AudioInput::TestRoom { .. }
    )
}

/// How the channel's encoder is driven at run time: its bitrate follows the lowest room
/// ([`super::bandwidth`]).
pub struct EncoderBitrate {
    pub spec: EncoderSpec,
    pub gop: u32,
    /// Whether rooms' REMB estimates move the bitrate (`encoder.follow_room_bitrate`;
    /// turned off for good if the encoder cannot change its bitrate while running).
    follow: AtomicBool,
    follower: Mutex<BitrateFollower>,
    /// Per-room congestion control (`congestion.rs`): `None` when turned off.
    pub congestion: Option<EstimatorBounds>,
    audio_kbps: u32,
}

impl EncoderBitrate {
    pub fn new(spec: EncoderSpec, settings: &EncoderConfig, framerate: u32) -> Self {
        Self {
            spec,
            gop: gop(settings, framerate),
            follow: AtomicBool::new(settings.follow_room_bitrate),
            follower: Mutex::new(BitrateFollower::new(
                settings.bitrate_kbps,
                settings.min_bitrate_kbps,
            )),
            congestion: settings.congestion_control.then(|| {
                EstimatorBounds::for_encoder(
                    settings.bitrate_kbps,
                    settings.audio_bitrate_kbps,
                    settings.min_bitrate_kbps,
                )
            }),
            audio_kbps: settings.audio_bitrate_kbps,
        }
    }
}

/// Keyframe interval in frames.
fn gop(settings: &EncoderConfig, framerate: u32) -> u32 {
    (settings.keyframe_interval_s * framerate).max(1)
}

impl Source {
    pub fn new(
        channel: Channel,
        config: &SourceConfig,
        description: String,
        bitrate: EncoderBitrate,
        processing: &AudioProcessingConfig,
    ) -> Self {
        let processing = processes_audio(config).then_some(*processing);
        Self {
            channel,
            description,
            video_label: config.video.to_string(),
            audio_label: config.audio.to_string(),
            stamp: config.stamp_enabled(),
            width: config.width,
            height: config.height,
            bitrate,
            described_processing: processing,
            processing: Mutex::new(processing),
            test_room: match &config.audio {
                AudioInput::TestRoom { talker: None } => Some(test_room::Talker::Voice),
                AudioInput::TestRoom { talker: Some(path) } => {
                    Some(test_room::Talker::Recording(path.clone()))
                }
                _ => None,
            },
            state: Mutex::new(State {
                running: None,
                users: 0,
                generation: 0,
                last_error: None,
                unavailable_until: None,
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, MediaError> {
        self.state
            .lock()
            .map_err(|_| MediaError::Setup("source state poisoned".into()))
    }

    /// The microphone's processing now; `None` when this channel has no microphone.
    pub fn audio_processing(&self) -> Option<AudioProcessingConfig> {
        self.processing.lock().ok().and_then(|p| *p)
    }

    /// Changes the microphone's processing: at once when the source runs (its rooms and
    /// encoder are not touched), else from its next start. Nothing to do without a
    /// microphone.
    pub fn set_audio_processing(&self, config: &AudioProcessingConfig) -> Result<(), MediaError> {
        {
            let mut current = self
                .processing
                .lock()
                .map_err(|_| MediaError::Setup("audio processing state poisoned".into()))?;
            match current.as_mut() {
                None => return Ok(()),
                Some(current) if current == config => return Ok(()),
                Some(current) => *current = *config,
            }
        }
        let pipeline = self.lock()?.running.as_ref().map(|r| r.pipeline.clone());
        match pipeline {
            Some(pipeline) => audio_processing::replace(&pipeline, config, self.channel),
            None => Ok(()),
        }
    }

    pub fn is_running(&self) -> bool {
        self.lock().map(|s| s.running.is_some()).unwrap_or(false)
    }

    pub fn last_error(&self) -> Option<String> {
        self.lock().ok().and_then(|s| s.last_error.clone())
    }

    /// The video bitrate the encoder runs at, when this source encodes and runs.
    pub fn bitrate_kbps(&self) -> Option<u32> {
        let encodes = self
            .lock()
            .ok()?
            .running
            .as_ref()
            .is_some_and(|r| r.encoder.is_some());
        let follower = self.bitrate.follower.lock().ok()?;
        encodes.then(|| follower.applied_kbps())
    }

    /// Publisher branch `branch` heard its room's estimate (REMB) of `bps`.
    pub fn report_bandwidth(&self, branch: &str, bps: u64) {
        self.report(branch, Origin::Remb, bps, "the lowest room's cap (REMB)");
    }

    /// Publisher branch `branch`'s congestion controller estimates its path carries
    /// `transport_bps` (everything the room sends); the video gets what the audio and
    /// the overhead leave of it.
    pub fn report_measured(&self, branch: &str, transport_bps: u64) {
        let video_kbps = congestion::video_kbps_for(transport_bps, self.bitrate.audio_kbps);
        self.report(
            branch,
            Origin::Measured,
            u64::from(video_kbps) * 1000,
            "the narrowest room's measured estimate",
        );
    }

    fn report(&self, branch: &str, origin: Origin, bps: u64, why: &str) {
        if !self.bitrate.follow.load(Ordering::Relaxed) {
            return;
        }
        let change = match self.bitrate.follower.lock() {
            Ok(mut follower) => follower.estimate_from(branch, origin, bps, Instant::now()),
            Err(_) => None,
        };
        if let Some(kbps) = change {
            self.apply_bitrate(kbps, why);
        }
    }

    /// The congestion controller's bounds for a new room, when it is on.
    pub fn congestion_bounds(&self) -> Option<EstimatorBounds> {
        self.bitrate.congestion
    }

    /// Publisher branch `branch` is gone: its room no longer limits the encoder.
    pub fn forget_bandwidth(&self, branch: &str) {
        let change = match self.bitrate.follower.lock() {
            Ok(mut follower) => follower.remove(branch),
            Err(_) => None,
        };
        if let Some(kbps) = change {
            self.apply_bitrate(kbps, "a room that limited it was left");
        }
    }

    /// Sets the running encoder's bitrate properties (those of the preset that use a
    /// bitrate placeholder) for `kbps`.
    fn apply_bitrate(&self, kbps: u32, why: &str) {
        let encoder = match self.lock() {
            Ok(state) => state.running.as_ref().and_then(|r| r.encoder.clone()),
            Err(_) => None,
        };
        let Some(encoder) = encoder else { return };
        let spec = &self.bitrate.spec;
        for (name, value) in encoder::properties(spec, kbps, self.bitrate.gop) {
            let uses_bitrate = spec
                .properties
                .get(&name)
                .is_some_and(|template| template.contains("{bitrate"));
            if !uses_bitrate {
                continue;
            }
            if let Err(e) = set_while_playing(&encoder, &name, &value) {
                self.bitrate.follow.store(false, Ordering::Relaxed);
                if let Ok(mut follower) = self.bitrate.follower.lock() {
                    follower.restarted();
                }
                warn!(channel = %self.channel, encoder = %spec.element, property = %name, "cannot change the encoder's bitrate, so it stays at the configured one: {e}");
                return;
            }
        }
        info!(channel = %self.channel, kbps, "video bitrate set: {why}");
    }

    /// Starts the pipeline if needed and counts one more user of it.
    pub fn acquire(self: &Arc<Self>) -> Result<Running, MediaError> {
        let mut state = self.lock()?;
        if let Some(running) = state.running.clone() {
            state.users += 1;
            return Ok(running);
        }
        if let Some(until) = state.unavailable_until {
            let now = Instant::now();
            if now < until {
                let error = format!(
                    "channel `{}`: the source would not start (fault injection: unavailable for another {:.1} s)",
                    self.channel,
                    (until - now).as_secs_f64()
                );
                state.last_error = Some(error.clone());
                return Err(MediaError::Setup(error));
            }
            state.unavailable_until = None;
        }
        let mut running = self.start()?;
        state.generation += 1;
        running.generation = state.generation;
        state.users += 1;
        state.running = Some(running.clone());
        state.last_error = None;
        let generation = state.generation;
        drop(state);
        self.watch_bus(&running, generation);
        self.tick_keyframes(&running);
        Ok(running)
    }

    /// One user fewer of pipeline `generation`; the pipeline stops [`LINGER`] after the
    /// last. Releasing a pipeline that already failed (and may have been replaced) does
    /// nothing: failing let go of all its users at once.
    pub fn release(self: &Arc<Self>, generation: u64) {
        let generation = {
            let Ok(mut state) = self.lock() else { return };
            if state.generation != generation || state.running.is_none() {
                return;
            }
            state.users = state.users.saturating_sub(1);
            if state.users > 0 {
                return;
            }
            state.generation
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            if let Some(source) = weak.upgrade() {
                source.stop_if_idle(generation);
            }
        });
    }

    fn stop_if_idle(&self, generation: u64) {
        let running = {
            let Ok(mut state) = self.lock() else { return };
            if state.users > 0 || state.generation != generation {
                return;
            }
            state.running.take()
        };
        if let Some(running) = running {
            info!(channel = %self.channel, "no publisher left: stopping the source");
            stop(running);
        }
    }

    /// What the watchdog checks: `None` when the source is not running.
    pub fn probe(&self) -> Option<SourceProbe> {
        let state = self.lock().ok()?;
        let running = state.running.as_ref()?;
        Some(SourceProbe {
            generation: running.generation,
            frames_encoded: running.frames_encoded.load(Ordering::Relaxed),
            playing: running.pipeline.current_state() == gst::State::Playing,
        })
    }

    /// Injects `fault` (fault tests only). `Error` and `Stall` need the source running.
    pub fn inject(&self, fault: SourceFault) -> Result<(), MediaError> {
        let running = {
            let mut state = self.lock()?;
            if let SourceFault::Unavailable(duration) = fault {
                state.unavailable_until = Some(Instant::now() + duration);
            }
            state.running.clone()
        };
        let Some(running) = running else {
            return match fault {
                SourceFault::Unavailable(_) => Ok(()),
                _ => Err(MediaError::Setup(format!(
                    "channel `{}` is not running: nothing to inject a fault into",
                    self.channel
                ))),
            };
        };
        warn!(channel = %self.channel, ?fault, "fault injection");
        match fault {
            SourceFault::Error | SourceFault::Unavailable(_) => {
                let src = running
                    .pipeline
                    .by_name("vsrc")
                    .ok_or_else(|| MediaError::Setup("the pipeline has no vsrc".into()))?;
                let message = gst::message::Error::builder(
                    gst::ResourceError::Read,
                    "fault injection: the capture device stopped delivering frames",
                )
                .src(&src)
                .build();
                src.post_message(message)
                    .map_err(|_| MediaError::Setup("the source has no bus to post to".into()))?;
            }
            SourceFault::Stall => {
                // Hold every buffer on its way into the parser: frames stop, no error.
                let pad = running
                    .pipeline
                    .by_name("vparse")
                    .and_then(|p| p.static_pad("sink"))
                    .ok_or_else(|| MediaError::Setup("the pipeline has no vparse".into()))?;
                let stopped = running.stopped.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    // Blocks this streaming thread until the pipeline is stopped.
                    while !stopped.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    gst::PadProbeReturn::Drop
                });
            }
        }
        Ok(())
    }

    /// Stops the pipeline at once (shutdown).
    pub fn shutdown(&self) {
        let running = self.lock().ok().and_then(|mut s| s.running.take());
        if let Some(running) = running {
            stop(running);
        }
    }

    fn start(&self) -> Result<Running, MediaError> {
        // A new encoder starts at the configured bitrate.
        if let Ok(mut follower) = self.bitrate.follower.lock() {
            follower.restarted();
        }
        let pipeline = gst::parse::launch(&self.description)
            .map_err(|e| {
                MediaError::Setup(format!(
                    "channel `{}`: cannot build the pipeline ({e}): {}",
                    self.channel, self.description
                ))
            })?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Setup("the description did not make a pipeline".into()))?;
        pipeline.set_property("name", format!("source-{}", self.channel));
        // Running times must agree with the speaker's, where the echo reference is taken.
        audio_processing::align_clock(&pipeline);
        match &self.test_room {
            Some(test_room::Talker::Voice) => test_room::install(&pipeline, self.channel, None),
            Some(test_room::Talker::Recording(path)) => {
                let recording = test_room::Recording::load(path)?;
                test_room::install(&pipeline, self.channel, Some(recording));
            }
            None => {}
        }
        if let Some(now) = self.audio_processing()
            && Some(now) != self.described_processing
        {
            // A reload changed it since the description was made.
            audio_processing::replace(&pipeline, &now, self.channel)?;
        }
        if self.bitrate.congestion.is_some() {
            // Every room's RTP session numbers its own copy of each packet.
            for name in ["vpay", "apay"] {
                if let Some(payloader) = pipeline.by_name(name) {
                    congestion::add_twcc_extension(&payloader)
                        .map_err(|e| MediaError::Setup(e.to_string()))?;
                }
            }
        }
        let video_tee = pipeline
            .by_name("vtee")
            .ok_or_else(|| MediaError::Setup("pipeline has no vtee".into()))?;
        if workarounds::engaged(FastPath::FrameLists) {
            gather_frames_before(&pipeline, &video_tee)?;
        }
        let audio_tee = pipeline.by_name("atee");
        let tee_sinks: Vec<gst::Pad> = [Some(&video_tee), audio_tee.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|tee| tee.static_pad("sink"))
            .collect();
        if workarounds::engaged(FastPath::SharedSegment) {
            shared_segment::install(&tee_sinks);
        }
        let frames_encoded = Arc::new(AtomicU64::new(0));
        let keyframes = Arc::new(KeyframeGate::default());

        // Count encoded frames (access units out of the parser).
        if let Some(pad) = pipeline.by_name("vparse").and_then(|p| p.static_pad("src")) {
            let frames = frames_encoded.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                frames.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        if let Some(pad) = video_tee.static_pad("sink") {
            // Every room's keyframe request goes through one gate.
            let gate = keyframes.clone();
            pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                let is_key_request = info
                    .event()
                    .is_some_and(|e| gst_video::ForceKeyUnitEvent::is(e));
                if is_key_request && !gate.admit() {
                    // Consume it (returning Drop for an upstream event pushed from this
                    // pad makes GStreamer 1.22 unref it twice).
                    drop(info.take_event());
                    return gst::PadProbeReturn::Handled;
                }
                gst::PadProbeReturn::Ok
            });
        }
        if self.stamp
            && let Some(pad) = pipeline.by_name("stamp").and_then(|e| e.static_pad("src"))
        {
            add_stamp_painter(&pad, self.width, self.height);
        }
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            let _ = pipeline.set_state(gst::State::Null);
            MediaError::Setup(format!(
                "channel `{}`: the source would not start (video {}, audio {}); check the device names with `roomcast devices`",
                self.channel, self.video_label, self.audio_label
            ))
        })?;
        info!(channel = %self.channel, "source started");
        let encoder = pipeline.by_name("venc");
        debug!(channel = %self.channel, pipeline = %self.description, "source pipeline");
        Ok(Running {
            generation: 0,
            pipeline,
            video_tee,
            audio_tee,
            frames_encoded,
            keyframes,
            encoder,
            stopped: CancellationToken::new(),
            branches: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn watch_bus(self: &Arc<Self>, running: &Running, generation: u64) {
        let Some(bus) = running.pipeline.bus() else {
            return;
        };
        let mut messages = bus.stream();
        let weak: Weak<Self> = Arc::downgrade(self);
        let running = running.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = running.stopped.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => message,
                        None => return,
                    },
                };
                let gst::MessageView::Error(error) = message.view() else {
                    if let gst::MessageView::Warning(w) = message.view() {
                        debug!("source warning: {}", w.error());
                    }
                    continue;
                };
                let lineage = lineage(message.src());
                let origin = lineage.first().cloned().unwrap_or_default();
                let detail = format!("{} (from {origin})", error.error());
                // An error inside one room's branch (its webrtcbin or any element
                // within it: DTLS, SRTP, ICE) ends that branch only.
                let routed = running.branches.lock().ok().and_then(|branches| {
                    branches
                        .iter()
                        .find(|(prefix, _)| lineage.iter().any(|n| n.starts_with(prefix.as_str())))
                        .map(|(_, on_error)| on_error(detail.clone()))
                });
                if routed.is_some() {
                    continue;
                }
                let Some(source) = weak.upgrade() else { return };
                source.fail(generation, detail);
                return;
            }
        });
    }

    /// The capture or the encoder failed: stop, remember why, and let every attached
    /// publisher know (their peers fail; the engine restarts them with backoff).
    fn fail(&self, generation: u64, detail: String) {
        let running = {
            let Ok(mut state) = self.lock() else { return };
            if state.generation != generation {
                return;
            }
            warn!(channel = %self.channel, "source failed: {detail}");
            state.last_error = Some(detail);
            state.users = 0;
            state.running.take()
        };
        if let Some(running) = running {
            stop(running);
        }
    }

    fn tick_keyframes(&self, running: &Running) {
        let running = running.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = running.stopped.cancelled() => return,
                    _ = tick.tick() => {
                        if running.keyframes.due() {
                            running.request_keyframe();
                        }
                    }
                }
            }
        });
    }
}

/// The names of `object` and of every bin it is in, innermost first: a message from
/// deep inside a room's webrtcbin (its DTLS or ICE elements) belongs to that room.
fn lineage(object: Option<&gst::Object>) -> Vec<String> {
    let mut names = Vec::new();
    let mut next = object.cloned();
    while let Some(current) = next {
        names.push(current.name().to_string());
        next = current.parent();
    }
    names
}

/// Puts a [`framelist`] element in front of the video tee, so every room's branch gets
/// one push per frame. Kept out of [`describe`], whose text stays runnable with
/// gst-launch-1.0 (which does not know roomcast's own element).
fn gather_frames_before(pipeline: &gst::Pipeline, tee: &gst::Element) -> Result<(), MediaError> {
    let setup = |what: &str| {
        MediaError::Setup(format!("cannot put the frame gatherer before vtee: {what}"))
    };
    framelist::register().map_err(|e| setup(&e))?;
    let gatherer = gst::ElementFactory::make(framelist::FACTORY)
        .name("vframes")
        .build()
        .map_err(|e| setup(&e.to_string()))?;
    let tee_sink = tee
        .static_pad("sink")
        .ok_or_else(|| setup("vtee has no sink pad"))?;
    let upstream = tee_sink.peer().ok_or_else(|| setup("vtee is not linked"))?;
    upstream
        .unlink(&tee_sink)
        .map_err(|e| setup(&e.to_string()))?;
    pipeline.add(&gatherer).map_err(|e| setup(&e.to_string()))?;
    let (Some(sink), Some(src)) = (gatherer.static_pad("sink"), gatherer.static_pad("src")) else {
        return Err(setup("the element has no pads"));
    };
    upstream.link(&sink).map_err(|e| setup(&format!("{e:?}")))?;
    src.link(&tee_sink).map_err(|e| setup(&format!("{e:?}")))?;
    Ok(())
}

impl Drop for Source {
    /// The media engine went while the source ran (a shutdown that did not stop every
    /// publisher first, a test's agent dropped): the pipeline is stopped like any other,
    /// rather than freed while its streaming threads still run.
    fn drop(&mut self) {
        let running = match self.state.get_mut() {
            Ok(state) => state.running.take(),
            Err(poisoned) => poisoned.into_inner().running.take(),
        };
        if let Some(running) = running {
            stop(running);
        }
    }
}

fn stop(running: Running) {
    running.stopped.cancel();
    // NULL before the pipeline is dropped; off the async threads (it can block).
    let pipeline = running.pipeline.clone();
    std::thread::spawn(move || {
        let _ = pipeline.set_state(gst::State::Null);
    });
}

/// Paints the BLK1 stamp into every frame passing `pad` (raw video, luma first).
fn add_stamp_painter(pad: &gst::Pad, width: u32, height: u32) {
    let sequence = AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(caps) = pad.current_caps() else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(video) = gst_video::VideoInfo::from_caps(&caps) else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let buffer = buffer.make_mut();
        let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video)
        else {
            return gst::PadProbeReturn::Ok;
        };
        let stride = frame.plane_stride()[0] as usize;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let seq = sequence.fetch_add(1, Ordering::Relaxed);
        if let Ok(luma) = frame.plane_data_mut(0) {
            stamp::paint(
                luma,
                stride,
                width as usize,
                height as usize,
                stamp::Stamp {
                    time_ms: now,
                    sequence: (seq & 0x3fff) as u16,
                },
            );
        }
        gst::PadProbeReturn::Ok
    });
}

/// Sets property `name` of a running element from its gst-launch string, when the
/// element allows changing it while PLAYING.
fn set_while_playing(element: &gst::Element, name: &str, value: &str) -> Result<(), String> {
    let pspec = element
        .find_property(name)
        .ok_or_else(|| format!("`{}` has no property `{name}`", element.name()))?;
    if !pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_PLAYING) {
        return Err(format!(
            "`{name}` cannot change while the encoder runs (set encoder.follow_room_bitrate = false to silence this)"
        ));
    }
    let value = gst::glib::Value::deserialize_with_pspec(value, &pspec)
        .map_err(|e| format!("`{value}` is not a valid `{name}`: {e}"))?;
    element.set_property_from_value(name, &value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(video: &str, audio: &str) -> SourceConfig {
        toml::from_str(&format!("video = \"{video}\"\naudio = \"{audio}\"")).unwrap()
    }

    fn x264() -> Selected {
        encoder::select(crate::config::EncoderPreference::X264enc, None, |_| true).unwrap()
    }

    #[test]
    fn keyframe_requests_are_coalesced_not_dropped() {
        let gate = KeyframeGate::default();
        assert!(gate.admit(), "the first request passes");
        assert!(!gate.admit(), "a second within the interval waits");
        assert!(!gate.admit());
        assert!(!gate.due(), "not before the interval is over");
        std::thread::sleep(KEYFRAME_MIN_INTERVAL);
        assert!(
            gate.due(),
            "the waiting request is due at the end of the interval"
        );
        assert!(gate.admit(), "and passes then");
        assert!(!gate.due(), "one keyframe served every request that waited");
        assert_eq!(gate.forwarded.load(Ordering::Relaxed), 2);
        assert_eq!(gate.coalesced.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn test_source_description() {
        let text = describe(
            Channel::Main,
            &source("test", "test"),
            &x264(),
            &EncoderConfig::default(),
            None,
            &AudioProcessingConfig::default(),
        );
        assert!(
            text.starts_with("videotestsrc name=vsrc is-live=true"),
            "{text}"
        );
        assert!(
            text.contains("video/x-raw,format=I420,width=1280,height=720,framerate=30/1"),
            "{text}"
        );
        assert!(text.contains("x264enc name=venc"), "{text}");
        assert!(
            text.contains("key-int-max=\"60\""),
            "gop = 2 s at 30 fps: {text}"
        );
        assert!(text.contains("tee name=vtee"), "{text}");
        assert!(text.contains("opusenc name=aenc bitrate=32000"), "{text}");
    }

    #[test]
    fn an_element_deep_in_a_branch_belongs_to_it() {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::with_name("source-main");
        let branch = gst::Bin::with_name("pub7-webrtcbin");
        let transport = gst::Bin::with_name("transportsendbin3");
        let sink = gst::ElementFactory::make("fakesink")
            .name("nicesink3")
            .build()
            .unwrap();
        transport.add(&sink).unwrap();
        branch.add(&transport).unwrap();
        pipeline.add(&branch).unwrap();
        assert_eq!(
            lineage(Some(sink.upcast_ref())),
            [
                "nicesink3",
                "transportsendbin3",
                "pub7-webrtcbin",
                "source-main"
            ]
        );
        assert!(lineage(None).is_empty());
    }

    #[test]
    fn camera_formats_pick_the_cheapest_path() {
        gst::init().unwrap();
        let caps: gst::Caps = "video/x-raw,format=YUY2,width=1280,height=720; image/jpeg,width=1280,height=720; video/x-h264,width=1920,height=1080"
            .parse()
            .unwrap();
        assert_eq!(choose_camera_format(&caps, 1280, 720), CameraFormat::Mjpeg);
        assert_eq!(choose_camera_format(&caps, 1920, 1080), CameraFormat::H264);
        assert_eq!(choose_camera_format(&caps, 640, 480), CameraFormat::Raw);
        let h264 = describe(
            Channel::Main,
            &source("/dev/video0", "none"),
            &x264(),
            &EncoderConfig::default(),
            Some(CameraFormat::H264),
            &AudioProcessingConfig::default(),
        );
        assert!(!h264.contains("x264enc"), "no re-encode: {h264}");
        let mjpeg = describe(
            Channel::Main,
            &source("/dev/video0", "hw:1,0"),
            &x264(),
            &EncoderConfig::default(),
            Some(CameraFormat::Mjpeg),
            &AudioProcessingConfig::default(),
        );
        assert!(
            mjpeg.contains("jpegdec") && mjpeg.contains("alsasrc name=asrc device=\"hw:1,0\""),
            "{mjpeg}"
        );
    }
}
