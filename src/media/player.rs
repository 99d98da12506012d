//! A played stream: its own pipeline, `webrtcbin → depay → decoder → output`, so one failing
//! stream never touches another. Outputs: `display` (KMS, else a window), `speaker`
//! (audio to the shared mixer, video not decoded), `none` (decode and count only).
//! Decoded frames are counted and their BLK1 stamp, if any, gives capture→decoded
//! latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gst::prelude::*;
use gst_video::prelude::*;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::quality::{self, Growth, Latest};
use super::speaker::{Speaker, SpeakerInput};
use super::stamp;
use crate::engine::backend::{
    IceCandidate, PeerState, PeerStats, PlayerQuality, StreamQuality, WebRtcPeer,
};
use crate::engine::error::{BackendError, ErrorCode};
use crate::engine::types::PlayOutput;
use crate::webrtc::{Negotiator, WebRtcError};

static NEXT_PLAYER: AtomicU64 = AtomicU64::new(1);

fn play_error(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorCode::PLAY_WEBRTC_FAILED, e.to_string())
}

fn webrtc_error(e: WebRtcError) -> BackendError {
    play_error(e)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters shared with the streaming threads.
#[derive(Default)]
pub struct PlayCounters {
    pub frames_decoded: AtomicU64,
    pub bytes_received: AtomicU64,
    pub last_frame_unix_ms: AtomicU64,
    /// Last capture→decoded latency in microseconds (0: no stamp read yet).
    pub latency_us: AtomicU64,
    pub stamps_read: AtomicU64,
}

pub struct Player {
    label: String,
    pipeline: gst::Pipeline,
    negotiator: Negotiator,
    counters: Arc<PlayCounters>,
    speaker_input: Arc<Mutex<Option<SpeakerInput>>>,
    speaker: Arc<Speaker>,
    closed: AtomicBool,
    stop: tokio_util::sync::CancellationToken,
    /// The jitter buffer's latency, ms (reported with the quality figures).
    latency_ms: u32,
    quality: Latest<PlayerQuality>,
    /// The path ICE chose (`crate::webrtc::selected_path`), sampled with the quality.
    path: Latest<String>,
}

impl Player {
    /// Samples the stream's quality every [`quality::PERIOD`] until it closes: what
    /// arrived and was decoded, and what the RTP session counted lost.
    fn sample_quality(&self) {
        let counters = self.counters.clone();
        let webrtcbin = self.negotiator.element().downgrade();
        let jitter_buffer_ms = self.latency_ms;
        let path = self.path.clone();
        let (mut arrived, mut decoded) = (Growth::default(), Growth::default());
        // Packets lost and received: read after the stats' await, so shared with it.
        let window = Arc::new(Mutex::new((Growth::default(), Growth::default())));
        arrived.since_last(counters.bytes_received.load(Ordering::Relaxed));
        decoded.since_last(counters.frames_decoded.load(Ordering::Relaxed));
        quality::spawn_sampler(self.stop.clone(), self.quality.clone(), move |elapsed| {
            let kbps_received = quality::kbps(
                arrived.since_last(counters.bytes_received.load(Ordering::Relaxed)),
                elapsed,
            );
            let fps_decoded = quality::per_second(
                decoded.since_last(counters.frames_decoded.load(Ordering::Relaxed)),
                elapsed,
            );
            let webrtcbin = webrtcbin.upgrade();
            if let (Some(chosen), Ok(mut slot)) = (
                webrtcbin.as_ref().and_then(crate::webrtc::selected_path),
                path.lock(),
            ) {
                *slot = Some(chosen);
            }
            let window = window.clone();
            let counts = move |(l, r, jitter): (u64, u64, Option<f64>)| {
                let Ok(mut window) = window.lock() else {
                    return (None, jitter);
                };
                let (lost, received) = (window.0.since_last(l), window.1.since_last(r));
                (quality::loss_percent(lost, received), jitter)
            };
            async move {
                let stats = match webrtcbin {
                    Some(webrtcbin) => crate::webrtc::stats_of(&webrtcbin).await,
                    None => None,
                };
                let (loss_percent, jitter_ms) = stats
                    .as_ref()
                    .map(|s| counts(quality::receiver_counts(s)))
                    .unwrap_or((None, None));
                Some(PlayerQuality {
                    kbps_received,
                    loss_percent,
                    fps_decoded,
                    jitter_ms,
                    jitter_buffer_ms,
                })
            }
        });
    }

    pub fn open(
        label: String,
        output: PlayOutput,
        latency_ms: u32,
        speaker: Arc<Speaker>,
    ) -> Result<Arc<Self>, BackendError> {
        let id = NEXT_PLAYER.fetch_add(1, Ordering::Relaxed);
        let pipeline = gst::Pipeline::with_name(&format!("player{id}"));
        let negotiator = Negotiator::new(&format!("player{id}-webrtcbin")).map_err(webrtc_error)?;
        let webrtcbin = negotiator.element().clone();
        webrtcbin.set_property("latency", latency_ms);
        pipeline.add(&webrtcbin).map_err(play_error)?;
        let counters = Arc::new(PlayCounters::default());
        let speaker_input = Arc::new(Mutex::new(None));

        let weak_pipeline = pipeline.downgrade();
        let (c, si, sp) = (counters.clone(), speaker_input.clone(), speaker.clone());
        let channel_name = format!("roomcast-player{id}");
        webrtcbin.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = weak_pipeline.upgrade() else {
                return;
            };
            if let Err(e) = link_incoming(&pipeline, pad, output, &c, &si, &sp, &channel_name) {
                warn!("cannot play an incoming track: {e}");
                gst::element_error!(pipeline, gst::CoreError::Negotiation, ("{}", e));
            }
        });

        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| play_error("the player pipeline would not start"))?;
        let player = Arc::new(Self {
            label,
            pipeline,
            negotiator,
            counters,
            speaker_input,
            speaker,
            closed: AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new(),
            latency_ms,
            quality: Latest::default(),
            path: Latest::default(),
        });
        player.watch_bus();
        info!(stream = %player.label, %output, "player opened");
        Ok(player)
    }

    fn watch_bus(self: &Arc<Self>) {
        let Some(bus) = self.pipeline.bus() else {
            return;
        };
        let mut messages = bus.stream();
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = messages.next() => match m { Some(m) => m, None => return },
                };
                if let gst::MessageView::Error(error) = message.view() {
                    let origin = message
                        .src()
                        .map(|s| s.name().to_string())
                        .unwrap_or_default();
                    if let Some(player) = weak.upgrade() {
                        player
                            .negotiator
                            .fail(format!("playing failed: {} (from {origin})", error.error()));
                    }
                    return;
                }
            }
        });
    }
}

/// Links one incoming RTP pad of webrtcbin to the output.
fn link_incoming(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    output: PlayOutput,
    counters: &Arc<PlayCounters>,
    speaker_input: &Arc<Mutex<Option<SpeakerInput>>>,
    speaker: &Arc<Speaker>,
    channel_name: &str,
) -> Result<(), String> {
    let caps = pad.current_caps().ok_or("incoming pad without caps")?;
    let media = caps
        .structure(0)
        .and_then(|s| s.get::<String>("media").ok())
        .unwrap_or_default();
    let c = counters.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            c.bytes_received
                .fetch_add(buffer.size() as u64, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    let skip = (media == "video" && output == PlayOutput::Speaker)
        || (media != "video" && media != "audio");
    if skip {
        let sink = make("fakesink")?;
        sink.set_property("sync", false);
        add_and_link(pipeline, pad, &[sink])?;
        return Ok(());
    }
    // Explicit chains by encoding: decodebin would autoplug (and load) far more than
    // this needs — measured: libavfilter, librsvg and flite mapped in, ~20 MiB.
    let encoding = caps
        .structure(0)
        .and_then(|s| s.get::<String>("encoding-name").ok())
        .unwrap_or_default()
        .to_ascii_uppercase();
    let chain: Vec<gst::Element> = match encoding.as_str() {
        "H264" => h264_chain(h264_decoder()?)?,
        "VP8" => vec![make("rtpvp8depay")?, make("vp8dec")?],
        "VP9" => vec![make("rtpvp9depay")?, make("vp9dec")?],
        "OPUS" => vec![make("rtpopusdepay")?, make("opusdec")?],
        other => return Err(format!("cannot play {media} encoded as {other:?}")),
    };
    add_and_link(pipeline, pad, &chain)?;
    let decoded = chain
        .last()
        .and_then(|e| e.static_pad("src"))
        .ok_or("decoder without src pad")?;
    if media == "video" {
        link_video(pipeline, &decoded, output, counters)
    } else {
        link_audio(
            pipeline,
            &decoded,
            output,
            speaker_input,
            speaker,
            channel_name,
        )
    }
}

/// `rtph264depay → h264parse → decoder`, the depayloader made to output AVC.
///
/// AVC matters: a sender whose payloader repeats SPS/PPS before every IDR NAL
/// (`rtph264pay config-interval=-1`, which roomcast and many GStreamer senders use) puts
/// them before *each slice* of a multi-slice keyframe (x264 `sliced-threads`, hardware
/// encoders). Depayloaded as byte-stream, those repeats stay in the access unit and
/// openh264 starts a new picture at each, concealing every frame after (error 32; found
/// with roomcast's own stream). As AVC, the parameter sets go to `codec_data` and
/// h264parse writes them once per keyframe. Any decoder takes what h264parse makes.
fn h264_chain(decoder: gst::Element) -> Result<Vec<gst::Element>, String> {
    let avc = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    Ok(vec![
        make("rtph264depay")?,
        avc,
        make("h264parse")?,
        decoder,
    ])
}

/// The board's H.264 decoder if it has one, else openh264's, else libav's.
///
/// openh264dec (gstreamer1.0-plugins-bad) decodes every progressive profile a WebRTC
/// sender uses (constrained baseline to high, B-frames; checked with x264 streams) and
/// maps far less than avdec_h264: libavcodec as Debian builds it pulls in libavfilter
/// and ~150 libraries (librsvg, flite voices…), ~30 MiB of RSS for the first player
/// (docs/performance.md). After a lost packet it drops pictures until the next keyframe
/// and asks upstream for one, where avdec_h264 would show a damaged picture meanwhile.
/// avdec_h264 (gstreamer1.0-libav) stays the fallback, on one thread per stream (frame
/// threads multiply its memory; a classroom stream decodes fine on one).
fn h264_decoder() -> Result<gst::Element, String> {
    for name in H264_DECODERS {
        if let Ok(decoder) = gst::ElementFactory::make(name).build() {
            if name == "avdec_h264" {
                decoder.set_property("max-threads", 1i32);
            }
            return Ok(decoder);
        }
    }
    Err(format!(
        "no H.264 decoder: install gstreamer1.0-plugins-bad (openh264dec), tried {}",
        H264_DECODERS.join(", ")
    ))
}

/// H.264 decoders in the order [`h264_decoder`] tries them: hardware first.
const H264_DECODERS: [&str; 6] = [
    "v4l2h264dec",
    "nvv4l2decoder",
    "mppvideodec",
    "vah264dec",
    "openh264dec",
    "avdec_h264",
];

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| format!("GStreamer element `{factory}` is missing"))
}

/// Adds `chain` to the pipeline, links `pad` to its head and the chain in order.
fn add_and_link(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    chain: &[gst::Element],
) -> Result<(), String> {
    pipeline.add_many(chain).map_err(|e| e.to_string())?;
    if chain.len() > 1 {
        gst::Element::link_many(chain).map_err(|e| e.to_string())?;
    }
    for element in chain.iter().rev() {
        element
            .sync_state_with_parent()
            .map_err(|e| e.to_string())?;
    }
    let sink = chain[0]
        .static_pad("sink")
        .ok_or("element without sink pad")?;
    pad.link(&sink).map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn link_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    output: PlayOutput,
    counters: &Arc<PlayCounters>,
) -> Result<(), String> {
    let c = counters.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let now = now_ms();
        c.frames_decoded.fetch_add(1, Ordering::Relaxed);
        c.last_frame_unix_ms.store(now, Ordering::Relaxed);
        if let (Some(buffer), Some(caps)) = (info.buffer(), pad.current_caps())
            && let Ok(video) = gst_video::VideoInfo::from_caps(&caps)
            && video.format_info().is_yuv()
            && let Ok(frame) = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video)
            && let Ok(luma) = frame.plane_data(0)
            && let Some(stamp) = stamp::read(
                luma,
                frame.plane_stride()[0] as usize,
                video.width() as usize,
                video.height() as usize,
            )
        {
            let micros = now_micros();
            let elapsed = stamp::elapsed_ms(stamp.time_ms, micros / 1000) * 1000 + micros % 1000;
            c.latency_us.store(elapsed, Ordering::Relaxed);
            c.stamps_read.fetch_add(1, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    let sink = match output {
        PlayOutput::Display => display_sink()?,
        _ => {
            let sink = make("fakesink")?;
            sink.set_property("sync", false);
            sink
        }
    };
    let queue = make("queue")?;
    let convert = make("videoconvert")?;
    add_and_link(pipeline, pad, &[queue, convert, sink])
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// KMS when the box has a screen it may drive, else whatever autovideosink finds.
fn display_sink() -> Result<gst::Element, String> {
    if let Ok(kms) = gst::ElementFactory::make("kmssink").build() {
        if kms.set_state(gst::State::Ready).is_ok() {
            let _ = kms.set_state(gst::State::Null);
            return Ok(kms);
        }
        let _ = kms.set_state(gst::State::Null);
    }
    make("autovideosink")
}

fn link_audio(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    output: PlayOutput,
    speaker_input: &Arc<Mutex<Option<SpeakerInput>>>,
    speaker: &Arc<Speaker>,
    channel_name: &str,
) -> Result<(), String> {
    if output == PlayOutput::None {
        let sink = make("fakesink")?;
        sink.set_property("sync", false);
        return add_and_link(pipeline, pad, &[sink]);
    }
    let input = speaker.connect(channel_name).map_err(|e| e.to_string())?;
    if let Ok(mut slot) = speaker_input.lock() {
        *slot = Some(input);
    }
    let convert = make("audioconvert")?;
    let resample = make("audioresample")?;
    let sink = make("interaudiosink")?;
    sink.set_property("channel", channel_name);
    add_and_link(pipeline, pad, &[convert, resample, sink])
}

#[async_trait]
impl WebRtcPeer for Player {
    fn label(&self) -> &str {
        &self.label
    }

    async fn create_offer(&self) -> Result<String, BackendError> {
        Err(play_error("a player answers offers; it does not make them"))
    }

    async fn apply_answer(&self, _sdp: &str) -> Result<(), BackendError> {
        Err(play_error(
            "a player answers offers; it does not apply answers",
        ))
    }

    async fn answer_offer(&self, sdp: &str) -> Result<String, BackendError> {
        let answer = self
            .negotiator
            .answer_offer(sdp)
            .await
            .map_err(webrtc_error)?;
        self.sample_quality();
        Ok(answer)
    }

    fn take_local_candidates(&self) -> Option<mpsc::UnboundedReceiver<IceCandidate>> {
        self.negotiator.take_local_candidates()
    }

    fn add_remote_candidate(&self, candidate: &IceCandidate) -> Result<(), BackendError> {
        self.negotiator.add_remote_candidate(candidate);
        Ok(())
    }

    fn state(&self) -> watch::Receiver<PeerState> {
        self.negotiator.state()
    }

    fn quality(&self) -> Option<StreamQuality> {
        let latest = self.quality.lock().ok()?.clone()?;
        Some(StreamQuality::Player(latest))
    }

    fn stats(&self) -> PeerStats {
        let c = &self.counters;
        let latency = c.latency_us.load(Ordering::Relaxed);
        let last = c.last_frame_unix_ms.load(Ordering::Relaxed);
        PeerStats {
            bytes_received: Some(c.bytes_received.load(Ordering::Relaxed)),
            frames_decoded: Some(c.frames_decoded.load(Ordering::Relaxed)),
            last_frame_unix_ms: (last > 0).then_some(last),
            latency_ms: (latency > 0).then_some(latency as f64 / 1000.0),
            transport: self.path.lock().ok().and_then(|p| p.clone()),
            ..PeerStats::default()
        }
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop.cancel();
        let pipeline = self.pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
        let input = self.speaker_input.lock().ok().and_then(|mut s| s.take());
        if let Some(input) = input {
            self.speaker.disconnect(input);
        }
        self.negotiator.mark_closed();
        debug!(stream = %self.label, "player closed");
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 720p30 x264 stream in two slices per frame, payloaded the way roomcast and the
    /// test publishers do (`config-interval=-1`), through the player's H.264 chain:
    /// every frame comes out.
    fn decoded_frames(decoder: &str) -> Option<u64> {
        crate::webrtc::init().unwrap();
        let decoder = gst::ElementFactory::make(decoder).build().ok()?;
        let frames = 60;
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers={frames} pattern=ball ! \
             video/x-raw,width=1280,height=720,framerate=30/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! \
             video/x-h264,profile=constrained-baseline ! \
             rtph264pay config-interval=-1 ! application/x-rtp,media=video ! identity name=rtp"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let chain = h264_chain(decoder).unwrap();
        let sink = gst::ElementFactory::make("fakesink").build().unwrap();
        pipeline.add_many(&chain).unwrap();
        pipeline.add(&sink).unwrap();
        gst::Element::link_many(&chain).unwrap();
        chain.last().unwrap().link(&sink).unwrap();
        pipeline.by_name("rtp").unwrap().link(&chain[0]).unwrap();
        let counted = Arc::new(AtomicU64::new(0));
        let c = counted.clone();
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                c.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        crate::media::testing::run_to_eos(pipeline.upcast_ref(), 30);
        Some(counted.load(Ordering::Relaxed))
    }

    #[test]
    fn multi_slice_keyframes_with_repeated_parameter_sets_decode_with_openh264() {
        assert_eq!(decoded_frames("openh264dec"), Some(60));
    }

    #[test]
    fn multi_slice_keyframes_with_repeated_parameter_sets_decode_with_libav() {
        // avdec_h264 is the fallback; skip where gstreamer1.0-libav is not installed.
        if let Some(frames) = decoded_frames("avdec_h264") {
            assert_eq!(frames, 60);
        }
    }

    #[test]
    fn plugins_bad_alone_gives_a_decoder() {
        crate::webrtc::init().unwrap();
        let decoder = h264_decoder().unwrap();
        let name = decoder.factory().unwrap().name();
        assert!(H264_DECODERS.contains(&name.as_str()), "{name}");
        assert_ne!(name, "avdec_h264", "openh264dec comes before libav");
    }
}
