//! `audio = "test-room"`: a simulated classroom, so that echo cancellation can be tried
//! (and tested) on a box without a sound card.
//!
//! ```text
//! talker: a 190 Hz voice, syllable-paced ────────────────────────┐
//! speaker (what the box plays) ─▶ loopback ─▶ −6 dB ─▶ +40 ms ───┴─▶ "microphone" ─▶ processing
//! ```
//!
//! The talker is a sawtooth (a voice's harmonics) in bursts of 300 ms with 200 ms pauses
//! (speech has pauses; a steady sound would be taken for noise by noise suppression).
//! What the speaker plays comes back with its timestamps — an `appsink` in the speaker
//! hands each buffer to an `appsrc` in the source, and both pipelines share one clock and
//! base time — so the echo path is as steady as a room's air: 40 ms, 6 dB down.
//!
//! The echo comes back when a real speaker would sound it: a sample whose running time is
//! `t` leaves a loudspeaker at `t` plus the speaker pipeline's latency (the sink renders it
//! then), and reaches the microphone 40 ms later. The loopback is taken before the sink, so
//! it adds that latency itself. (A loopback that came back at `t` + 40 ms would be an echo
//! heard before the speaker played it: GStreamer 1.26's canceller, which pairs the
//! microphone with the reference by these times, cannot cancel it.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gst::prelude::*;

use crate::engine::types::Channel;

/// The near-end talker's voice: a sawtooth around 190 Hz (harmonics at every multiple,
/// as a voice has; see [`pitch`]), apart from the voices the tests play as the far end.
pub const TALKER_HZ: u32 = 190;
/// The talker's element (an `identity` whose output the envelope shapes).
pub const TALKER: &str = "talker";
/// The `appsrc` the echo comes back through, into the "microphone" mixer.
pub const ECHO_PATH: &str = "roomecho";
/// How late the echo arrives (the room's acoustic path plus the devices').
pub const ECHO_DELAY: Duration = Duration::from_millis(40);
/// How long the "microphone" mixer waits for its inputs. The echo is not what it waits
/// for any more: it comes back stamped when the speaker sounds it (see the module docs),
/// a few hundred milliseconds after it reaches the loopback; this is margin for a loaded
/// machine.
pub const MIXER_LATENCY: Duration = Duration::from_millis(200);

const BURST: Duration = Duration::from_millis(300);
const PAUSE: Duration = Duration::from_millis(200);
const RAMP: Duration = Duration::from_millis(10);

/// The name of the speaker's `appsink` that feeds channel `channel`'s simulated room.
pub fn loopback_name(channel: Channel) -> String {
    format!("roomcast-room-{channel}")
}

type EchoInputs = Mutex<HashMap<String, gst::glib::WeakRef<gst_app::AppSrc>>>;

/// The simulated rooms' echo inputs by loopback name: a source registers its `appsrc`
/// when it starts, the speaker pushes what it plays into the one registered.
fn echo_inputs() -> &'static EchoInputs {
    static INPUTS: OnceLock<EchoInputs> = OnceLock::new();
    INPUTS.get_or_init(Default::default)
}

/// The speaker pipeline's latency as its sinks last configured it (nanoseconds): how long
/// after its running time a sample leaves the loudspeaker.
#[derive(Clone, Default)]
pub struct RenderLatency(Arc<AtomicU64>);

impl RenderLatency {
    /// Follows the LATENCY events the sinks send upstream through `pad`.
    pub fn track(&self, pad: &gst::Pad) {
        let latency = self.0.clone();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            if let Some(gst::EventView::Latency(event)) = info.event().map(|e| e.view()) {
                let ns = event.latency().nseconds();
                if latency.swap(ns, Ordering::Relaxed) != ns {
                    tracing::info!(
                        latency_ms = ns as f64 / 1e6,
                        "test room: the echo comes back this long after its running time, plus the room's"
                    );
                }
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn get(&self) -> gst::ClockTime {
        gst::ClockTime::from_nseconds(self.0.load(Ordering::Relaxed))
    }
}

/// Hands what the speaker's `appsink` plays to the simulated room registered as
/// `loopback`, stamped with the running time at which the speaker sounds it (its
/// running time plus `latency`).
pub fn feed_from(sink: &gst_app::AppSink, loopback: String, latency: RenderLatency) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let input = echo_inputs()
                    .lock()
                    .ok()
                    .and_then(|inputs| inputs.get(&loopback).and_then(|w| w.upgrade()));
                let segment = sample
                    .segment()
                    .and_then(|s| s.clone().downcast::<gst::ClockTime>().ok());
                let (Some(input), Some(buffer), Some(segment)) = (input, sample.buffer(), segment)
                else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let running = buffer
                    .pts()
                    .and_then(|pts| segment.to_running_time(pts))
                    .map(|t| t + latency.get());
                let mut copy = buffer.copy();
                {
                    let copy = copy.make_mut();
                    copy.set_pts(running);
                    copy.set_dts(gst::ClockTime::NONE);
                }
                // A room whose source stopped drops it.
                let _ = input.push_buffer(copy);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// The talker's loudness at running time `t`, 0 to 1: bursts with raised-cosine ramps.
pub fn envelope(t: Duration) -> f64 {
    let period = (BURST + PAUSE).as_secs_f64();
    let phase = t.as_secs_f64() % period;
    let (burst, ramp) = (BURST.as_secs_f64(), RAMP.as_secs_f64());
    if phase >= burst {
        return 0.0;
    }
    let edge = phase.min(burst - phase);
    if edge >= ramp {
        1.0
    } else {
        0.5 - 0.5 * (std::f64::consts::PI * edge / ramp).cos()
    }
}

/// The talker's pitch at running time `t`, Hz: gliding between 175 and 205 Hz, as a
/// voice's intonation does (a perfectly steady voice is taken for noise).
pub fn pitch(t: Duration) -> f64 {
    f64::from(TALKER_HZ) + 15.0 * (2.0 * std::f64::consts::PI * t.as_secs_f64() / 1.3).sin()
}

/// Shapes the talker, delays the echo and registers the echo input of a source pipeline
/// built with a test room.
pub fn install(pipeline: &gst::Pipeline, channel: Channel) {
    let voice = pipeline.by_name("asrc");
    if let Some(pad) = pipeline.by_name(TALKER).and_then(|e| e.static_pad("src")) {
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let rate = 48_000u64;
            let segment = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|e| e.segment().clone().downcast::<gst::ClockTime>().ok());
            let Some(buffer) = info.buffer_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let start = buffer
                .pts()
                .and_then(|pts| segment.as_ref().and_then(|s| s.to_running_time(pts)))
                .map_or(Duration::ZERO, Duration::from);
            // Intonation: the voice glides (the next buffers take the new pitch).
            if let Some(voice) = &voice {
                voice.set_property("freq", pitch(start));
            }
            let buffer = buffer.make_mut();
            let Ok(mut map) = buffer.map_writable() else {
                return gst::PadProbeReturn::Ok;
            };
            for (n, sample) in map.chunks_exact_mut(2).enumerate() {
                let t = start + Duration::from_nanos(n as u64 * 1_000_000_000 / rate);
                let value = i16::from_le_bytes([sample[0], sample[1]]);
                let shaped = (f64::from(value) * envelope(t)) as i16;
                sample.copy_from_slice(&shaped.to_le_bytes());
            }
            gst::PadProbeReturn::Ok
        });
    }
    let Some(echo) = pipeline.by_name(ECHO_PATH) else {
        return;
    };
    if let Some(mixer_pad) = echo.static_pad("src").and_then(|p| p.peer()) {
        mixer_pad.set_offset(ECHO_DELAY.as_nanos() as i64);
    }
    if let Ok(echo) = echo.downcast::<gst_app::AppSrc>()
        && let Ok(mut inputs) = echo_inputs().lock()
    {
        inputs.insert(loopback_name(channel), echo.downgrade());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_talker_speaks_in_bursts_with_soft_edges() {
        let at = |ms: u64| envelope(Duration::from_millis(ms));
        assert_eq!(at(0), 0.0);
        assert!((at(5) - 0.5).abs() < 1e-9);
        assert_eq!(at(150), 1.0);
        assert_eq!(at(350), 0.0);
        assert_eq!(at(650), 1.0, "the next burst");
        let speaking = (0..5000)
            .filter(|ms| envelope(Duration::from_millis(*ms)) > 0.5)
            .count();
        assert!((2800..=3000).contains(&speaking), "about 60 % of the time");
    }
}
