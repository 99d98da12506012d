//! Independent media peers for the tests: a VideoRoom subscriber that decodes and counts
//! frames (reading BLK1 stamps), and a publisher of a test pattern (see `janus_ws`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use gst_video::prelude::*;
use serde_json::json;

use super::janus_ws::{RawJanus, answer, promise_reply, webrtcbin_for};

/// What a subscriber saw.
#[derive(Default)]
pub struct Seen {
    pub frames: AtomicU64,
    /// Arrival time of every decoded frame.
    pub arrivals: Mutex<Vec<Instant>>,
    /// Capture→decoded latency of every stamped frame, ms.
    pub latencies_ms: Mutex<Vec<f64>>,
    pub size: Mutex<Option<(u32, u32)>>,
    /// The decoded audio's far-end and near-end voice levels, second by second.
    pub voices: Mutex<super::audio_meter::VoiceMeter>,
    /// When the feed appeared in the room (for `wait_for`), and when Janus confirmed the
    /// subscription (`started`).
    pub feed_seen: Mutex<Option<Instant>>,
    pub started: Mutex<Option<Instant>>,
    /// RTP packets webrtcbin handed on (after SRTP and the jitter buffer), all media.
    pub packets: AtomicU64,
    /// The subscriber's peer connection states, in order.
    pub connection: Mutex<Vec<String>>,
}

impl Seen {
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// What a failing test prints about this subscriber: where the media stopped.
    pub fn describe(&self) -> String {
        format!(
            "{} frames decoded, {} RTP packets received, peer connection {:?}",
            self.frames(),
            self.packets.load(Ordering::Relaxed),
            self.connection.lock().unwrap()
        )
    }

    /// The longest time between two decoded frames after `since`.
    pub fn max_gap_after(&self, since: Instant) -> Duration {
        let arrivals = self.arrivals.lock().unwrap();
        arrivals
            .windows(2)
            .filter(|w| w[1] >= since)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// How many stamped frames were seen so far (a mark for `latency_percentile`).
    pub fn stamped(&self) -> usize {
        self.latencies_ms.lock().unwrap().len()
    }

    /// The `p`-th percentile (0 to 100) of the capture→decoded latencies of the stamped
    /// frames after mark `from`, in ms.
    pub fn latency_percentile(&self, from: usize, p: f64) -> Option<f64> {
        let mut latencies = self.latencies_ms.lock().unwrap().get(from..)?.to_vec();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_by(f64::total_cmp);
        let index = ((latencies.len() - 1) as f64 * p / 100.0).round() as usize;
        latencies.get(index).copied()
    }

    pub fn first_frame(&self) -> Option<Instant> {
        self.arrivals.lock().unwrap().first().copied()
    }
}

pub struct Subscriber {
    pipeline: gst::Pipeline,
    pub seen: Arc<Seen>,
    _janus: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
}

fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl Subscriber {
    /// Subscribes to `feed` in `room` now (it must be published).
    pub async fn start(ws_url: &str, room: &str, feed: &str) -> Self {
        let mut janus = RawJanus::connect(ws_url).await;
        Self::subscribe(&mut janus, room, feed, 0)
            .await
            .finish(janus)
    }

    /// Joins `room` first and subscribes the moment `feed` is published there, with a
    /// jitter buffer of (near) zero, as a browser's is at the start.
    pub async fn wait_for(ws_url: &str, room: &str, feed: &str, within: Duration) -> Self {
        Self::wait_for_buffered(ws_url, room, feed, within, 0).await
    }

    /// As `wait_for`, with a jitter buffer that holds packets `jitter_buffer_ms` for
    /// the ones missing before it gives them up: as a browser's grows once it sees
    /// loss, and what lets retransmitted packets arrive in time to be decoded.
    pub async fn wait_for_buffered(
        ws_url: &str,
        room: &str,
        feed: &str,
        within: Duration,
        jitter_buffer_ms: u32,
    ) -> Self {
        let mut janus = RawJanus::connect(ws_url).await;
        let presence = janus.attach("janus.plugin.videoroom").await;
        janus.ensure_videoroom(presence, room).await;
        let joined = janus
            .message(presence, json!({"request": "join", "ptype": "publisher", "room": room, "display": "watcher"}), None)
            .await;
        assert_eq!(
            joined["plugindata"]["data"]["videoroom"], "joined",
            "{joined}"
        );
        let listed = |v: &serde_json::Value| {
            v["plugindata"]["data"]["publishers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["id"] == feed))
        };
        if !listed(&joined) {
            janus
                .wait_event(within, |v| v["sender"] == presence && listed(v))
                .await;
        }
        let feed_seen = Instant::now();
        let subscriber = Self::subscribe(&mut janus, room, feed, jitter_buffer_ms)
            .await
            .finish(janus);
        *subscriber.seen.feed_seen.lock().unwrap() = Some(feed_seen);
        subscriber
    }

    async fn subscribe(
        janus: &mut RawJanus,
        room: &str,
        feed: &str,
        jitter_buffer_ms: u32,
    ) -> Pending {
        let handle = janus.attach("janus.plugin.videoroom").await;
        let attached = janus
            .message(handle, json!({"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}), None)
            .await;
        let offer = attached["jsep"]["sdp"]
            .as_str()
            .unwrap_or_else(|| panic!("subscribing to {feed} in {room}: {attached}"))
            .to_owned();
        let pipeline = gst::Pipeline::new();
        let webrtcbin = webrtcbin_for(&pipeline, janus, handle);
        // Low latency by default, as a browser is at the start (its jitter buffer
        // adapts from near zero): webrtcbin's default 200 ms holds the first frames.
        webrtcbin.set_property("latency", jitter_buffer_ms);
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        webrtcbin.connect_notify(Some("connection-state"), move |webrtcbin, _| {
            let state = webrtcbin.property_value("connection-state");
            if let Ok(state) = state.get::<gst_webrtc::WebRTCPeerConnectionState>() {
                s.connection.lock().unwrap().push(format!("{state:?}"));
            }
        });
        let weak = pipeline.downgrade();
        let s = seen.clone();
        webrtcbin.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let counted = s.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counted.packets.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
            let decodebin = gst::ElementFactory::make("decodebin").build().unwrap();
            pipeline.add(&decodebin).unwrap();
            decodebin.sync_state_with_parent().unwrap();
            pad.link(&decodebin.static_pad("sink").unwrap()).unwrap();
            let (weak, s) = (pipeline.downgrade(), s.clone());
            decodebin.connect_pad_added(move |_, decoded| {
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let caps = decoded.current_caps().unwrap();
                if caps.structure(0).unwrap().name().starts_with("video/") {
                    let s = s.clone();
                    decoded.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                        let now = Instant::now();
                        s.frames.fetch_add(1, Ordering::Relaxed);
                        s.arrivals.lock().unwrap().push(now);
                        let caps = pad.current_caps().unwrap();
                        let video = gst_video::VideoInfo::from_caps(&caps).unwrap();
                        *s.size.lock().unwrap() = Some((video.width(), video.height()));
                        let buffer = info.buffer().unwrap();
                        if let Ok(frame) =
                            gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &video)
                            && let Some(stamp) = roomcast::media::stamp::read(
                                frame.plane_data(0).unwrap(),
                                frame.plane_stride()[0] as usize,
                                video.width() as usize,
                                video.height() as usize,
                            )
                        {
                            let now_ms = now_ms_f64();
                            let modulus = (1u64 << 42) as f64;
                            let latency =
                                (now_ms % modulus - stamp.time_ms as f64 + modulus) % modulus;
                            s.latencies_ms.lock().unwrap().push(latency);
                        }
                        gst::PadProbeReturn::Ok
                    });
                }
                let sink = gst::ElementFactory::make("fakesink")
                    .property("sync", false)
                    .build()
                    .unwrap();
                pipeline.add(&sink).unwrap();
                sink.sync_state_with_parent().unwrap();
                if caps.structure(0).unwrap().name().starts_with("audio/") {
                    // Metered as 48 kHz mono float.
                    let convert = gst::parse::bin_from_description(
                        "audioconvert ! audioresample ! capsfilter caps=audio/x-raw,format=F32LE,rate=48000,channels=1,layout=interleaved",
                        true,
                    )
                    .unwrap();
                    pipeline.add(&convert).unwrap();
                    convert.sync_state_with_parent().unwrap();
                    decoded.link(&convert.static_pad("sink").unwrap()).unwrap();
                    let metered = convert.static_pad("src").unwrap();
                    metered.link(&sink.static_pad("sink").unwrap()).unwrap();
                    let s = s.clone();
                    metered.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                        if let Some(buffer) = info.buffer()
                            && let Ok(map) = buffer.map_readable()
                        {
                            let samples: Vec<f32> = map
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                .collect();
                            s.voices.lock().unwrap().push(&samples);
                        }
                        gst::PadProbeReturn::Ok
                    });
                    return;
                }
                decoded.link(&sink.static_pad("sink").unwrap()).unwrap();
            });
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let answer_sdp = answer(&webrtcbin, &offer).await;
        let started = janus
            .message(
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer_sdp})),
            )
            .await;
        assert_eq!(started["plugindata"]["data"]["started"], "ok", "{started}");
        *seen.started.lock().unwrap() = Some(Instant::now());
        Pending { pipeline, seen }
    }

    /// Waits until at least `n` frames were decoded.
    pub async fn wait_frames(&self, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        while self.seen.frames() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} frames decoded within {within:?}",
                self.seen.frames()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen.frames()
    }
}

struct Pending {
    pipeline: gst::Pipeline,
    seen: Arc<Seen>,
}

impl Pending {
    fn finish(self, janus: RawJanus) -> Subscriber {
        Subscriber {
            pipeline: self.pipeline,
            seen: self.seen,
            _janus: janus.drain(),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Publishes a moving test pattern (H.264 + Opus) into a room as `feed`.
pub struct TestPublisher {
    pipeline: gst::Pipeline,
    _janus: tokio::sync::mpsc::UnboundedSender<serde_json::Value>,
}

/// The default test audio: a steady 440 Hz tone.
const STEADY_TONE: &str = "audiotestsrc is-live=true";

impl TestPublisher {
    pub async fn start(ws_url: &str, room: &str, feed: &str, display: &str) -> Self {
        Self::start_with_audio(ws_url, room, feed, display, STEADY_TONE).await
    }

    /// A far-end teacher who speaks: `recording` (a 16-bit PCM mono WAV, e.g.
    /// [`super::audio_meter::voice`]) looped, in real time.
    pub async fn start_speaking(
        ws_url: &str,
        room: &str,
        feed: &str,
        display: &str,
        recording: &std::path::Path,
    ) -> Self {
        let speech = roomcast::media::test_room::Recording::load(recording).unwrap();
        let publisher = Self::start_with_audio(
            ws_url,
            room,
            feed,
            display,
            "audiotestsrc is-live=true wave=silence samplesperbuffer=480 ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! identity name=speech",
        )
        .await;
        let pad = publisher
            .pipeline
            .by_name("speech")
            .unwrap()
            .static_pad("src")
            .unwrap();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let buffer = info.buffer_mut().unwrap();
            let first = buffer.pts().map_or(0, |t| t.nseconds()) * 48 / 1_000_000;
            let mut map = buffer.make_mut().map_writable().unwrap();
            for (n, sample) in map.chunks_exact_mut(2).enumerate() {
                sample.copy_from_slice(&speech.at(first + n as u64).to_le_bytes());
            }
            gst::PadProbeReturn::Ok
        });
        publisher
    }

    /// Publishes with `audio` (a gst-launch fragment ending in raw audio) as the sound.
    pub async fn start_with_audio(
        ws_url: &str,
        room: &str,
        feed: &str,
        display: &str,
        audio: &str,
    ) -> Self {
        let mut janus = RawJanus::connect(ws_url).await;
        let handle = janus.attach("janus.plugin.videoroom").await;
        janus.ensure_videoroom(handle, room).await;
        let joined = janus
            .message(handle, json!({"request": "join", "ptype": "publisher", "room": room, "id": feed, "display": display}), None)
            .await;
        assert_eq!(
            joined["plugindata"]["data"]["videoroom"], "joined",
            "{joined}"
        );
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 ! \
             x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! video/x-h264,profile=constrained-baseline ! \
             rtph264pay config-interval=-1 pt=96 ! application/x-rtp,media=video,encoding-name=H264,payload=96 ! webrtcbin name=w bundle-policy=max-bundle \
             {audio} ! audioconvert ! opusenc ! rtpopuspay pt=111 ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! w.",
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let webrtcbin = pipeline.by_name("w").unwrap();
        let (trickle, session) = (janus.to_ws.clone(), janus.session);
        webrtcbin.connect("on-ice-candidate", false, move |values| {
            let index = values[1].get::<u32>().unwrap();
            let candidate = values[2].get::<String>().unwrap();
            let _ = trickle.send(json!({"janus": "trickle", "session_id": session, "handle_id": handle,
                "transaction": super::janus_ws::tx(), "candidate": {"candidate": candidate, "sdpMLineIndex": index}}));
            None
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        // Offer only once caps reached webrtcbin (else no fmtp/SSRC).
        let deadline = Instant::now() + Duration::from_secs(5);
        while webrtcbin
            .sink_pads()
            .iter()
            .any(|p| p.current_caps().is_none())
        {
            assert!(Instant::now() < deadline, "test publisher caps");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let created = promise_reply(&webrtcbin, "create-offer", &[&None::<gst::Structure>]);
        let reply = created.await.expect("an offer");
        let offer = reply
            .get::<gst_webrtc::WebRTCSessionDescription>("offer")
            .unwrap();
        let applied = promise_reply(&webrtcbin, "set-local-description", &[&offer]);
        applied.await;
        let configured = janus
            .message(
                handle,
                json!({"request": "publish"}),
                Some(json!({"type": "offer", "sdp": offer.sdp().as_text().unwrap()})),
            )
            .await;
        let answer_sdp = configured["jsep"]["sdp"]
            .as_str()
            .expect("publish answer")
            .to_owned();
        let sdp = gst_sdp::SDPMessage::parse_buffer(answer_sdp.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
        let applied = promise_reply(&webrtcbin, "set-remote-description", &[&answer]);
        applied.await;
        Self {
            pipeline,
            _janus: janus.drain(),
        }
    }
}

impl Drop for TestPublisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
