//! `audio = "test-room"`: a simulated classroom, so that echo cancellation can be tried
//! (and tested) on a box without a sound card.
//!
//! ```text
//! talker: a 190 Hz voice, syllable-paced ────────────────────────┐
//! speaker (what the box plays) ─▶ loopback ─▶ −6 dB ─▶ +40 ms ───┴─▶ "microphone" ─▶ processing
//! ```
//!
//! The talker is a sawtooth (a voice's harmonics) in bursts of 300 ms with 200 ms pauses
//! (speech has pauses; a steady sound would be taken for noise by noise suppression), or
//! a recording of speech (`audio = "test-room:talker.wav"`, [`Recording`]), looped: a
//! tone, however shaped, is still partly taken for noise by GStreamer 1.22's noise
//! suppression, which real speech is not.
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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gst::prelude::*;

use super::MediaError;
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

/// What the simulated room's talker says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Talker {
    /// The synthetic voice ([`TALKER_HZ`], [`envelope`], [`pitch`]).
    Voice,
    /// A recording of speech, looped (`audio = "test-room:PATH"`).
    Recording(PathBuf),
}

/// Speech to play as the talker: 48 kHz mono samples, looped.
#[derive(Clone)]
pub struct Recording {
    samples: Arc<[i16]>,
}

impl Recording {
    /// Reads a 16-bit PCM mono WAV file at 8 to 48 kHz (resampled to 48 kHz).
    pub fn load(path: &Path) -> Result<Self, MediaError> {
        let fail = |what: String| {
            MediaError::Setup(format!(
                "test-room talker {}: {what}; give a 16-bit PCM mono WAV at 8-48 kHz (e.g. `sox speech.flac -b 16 -c 1 talker.wav`)",
                path.display()
            ))
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(&bytes).map_err(fail)
    }

    /// The samples of a WAV file's bytes (see [`Recording::load`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err("not a WAV file".into());
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let (mut at, mut rate, mut data) = (12, None, None);
        while at + 8 <= bytes.len() {
            let size = u32_at(at + 4) as usize;
            let body = at + 8..(at + 8).saturating_add(size).min(bytes.len());
            match &bytes[at..at + 4] {
                b"fmt " if body.len() >= 16 => {
                    let (format, channels, bits) = (
                        u16_at(body.start),
                        u16_at(body.start + 2),
                        u16_at(body.start + 14),
                    );
                    if format != 1 || channels != 1 || bits != 16 {
                        return Err(format!("format {format}, {channels} channels, {bits} bits"));
                    }
                    rate = Some(u32_at(body.start + 4));
                }
                b"data" => data = Some(&bytes[body]),
                _ => {}
            }
            // Chunks are padded to an even size.
            at = at.saturating_add(8).saturating_add(size + size % 2);
        }
        let (Some(rate), Some(data)) = (rate, data) else {
            return Err("no `fmt ` or `data` chunk".into());
        };
        if !(8_000..=48_000).contains(&rate) {
            return Err(format!("{rate} Hz"));
        }
        let source: Vec<i16> = data
            .chunks_exact(2)
            .map(|s| i16::from_le_bytes([s[0], s[1]]))
            .collect();
        if source.is_empty() {
            return Err("no samples".into());
        }
        // Linear interpolation to 48 kHz: a talker for the tests, not a hi-fi path.
        let step = f64::from(rate) / 48_000.0;
        let length = (source.len() as f64 / step) as usize;
        let samples = (0..length)
            .map(|n| {
                let x = n as f64 * step;
                let (k, fraction) = (x as usize, x.fract());
                let next = source.get(k + 1).copied().unwrap_or(source[k]);
                (f64::from(source[k]) * (1.0 - fraction) + f64::from(next) * fraction) as i16
            })
            .collect();
        Ok(Self { samples })
    }

    /// The sample at 48 kHz sample index `n`, the recording looped.
    pub fn at(&self, n: u64) -> i16 {
        self.samples[(n % self.samples.len() as u64) as usize]
    }

    /// How long the recording plays before it loops.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / 48_000.0)
    }
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

/// Shapes the talker (or replaces it with `recording`), delays the echo and registers the
/// echo input of a source pipeline built with a test room.
pub fn install(pipeline: &gst::Pipeline, channel: Channel, recording: Option<Recording>) {
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
            if let Some(recording) = &recording {
                // Sample-exact by running time, so the talk continues across buffers.
                let first = (start.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
                for (n, sample) in map.chunks_exact_mut(2).enumerate() {
                    sample.copy_from_slice(&recording.at(first + n as u64).to_le_bytes());
                }
                return gst::PadProbeReturn::Ok;
            }
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

    fn wav(format: u16, channels: u16, rate: u32, bits: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut bytes = b"RIFF".to_vec();
        bytes.extend((36 + data.len() as u32).to_le_bytes());
        bytes.extend(b"WAVEfmt ");
        bytes.extend(16u32.to_le_bytes());
        bytes.extend(format.to_le_bytes());
        bytes.extend(channels.to_le_bytes());
        bytes.extend(rate.to_le_bytes());
        bytes.extend((rate * 2).to_le_bytes());
        bytes.extend(2u16.to_le_bytes());
        bytes.extend(bits.to_le_bytes());
        bytes.extend(b"LIST");
        bytes.extend(3u32.to_le_bytes());
        bytes.extend([1, 2, 3, 0]);
        bytes.extend(b"data");
        bytes.extend((data.len() as u32).to_le_bytes());
        bytes.extend(data);
        bytes
    }

    #[test]
    fn a_recording_is_read_resampled_to_48_khz_and_looped() {
        let recording = Recording::parse(&wav(1, 1, 16_000, 16, &[0, 300, 600, 900])).unwrap();
        // Three 48 kHz samples per 16 kHz sample, interpolated; an odd-sized chunk before
        // `data` is skipped with its padding.
        assert_eq!(recording.duration(), Duration::from_micros(250));
        assert_eq!(
            (0..4).map(|n| recording.at(n)).collect::<Vec<_>>(),
            [0, 100, 200, 300]
        );
        assert_eq!(recording.at(12), recording.at(0), "looped");
    }

    #[test]
    fn a_recording_that_is_not_16_bit_pcm_mono_is_refused_with_the_reason() {
        for (bytes, reason) in [
            (b"not a wav at all".to_vec(), "not a WAV file"),
            (wav(1, 2, 48_000, 16, &[0, 0]), "2 channels"),
            (wav(3, 1, 48_000, 32, &[0, 0]), "format 3"),
            (wav(1, 1, 96_000, 16, &[0]), "96000 Hz"),
            (wav(1, 1, 48_000, 16, &[]), "no samples"),
            (
                wav(1, 1, 48_000, 16, &[1])[..40].to_vec(),
                "no `fmt ` or `data`",
            ),
        ] {
            let error = Recording::parse(&bytes).err().unwrap();
            assert!(error.contains(reason), "{error} should say {reason}");
        }
        let error = Recording::load(Path::new("/nonexistent/talker.wav"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("/nonexistent/talker.wav") && error.contains("16-bit PCM mono"),
            "{error}"
        );
    }

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
