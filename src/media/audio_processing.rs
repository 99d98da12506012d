//! The microphone's processing — acoustic echo cancellation, noise suppression, gain
//! control, high-pass filter — and the echo reference it cancels against.
//!
//! ```text
//! played streams ─▶ speaker mixer ─▶ S16 48 kHz mono ─▶ echo probe (per channel) ─▶ speaker
//!                                                             ┆ (what is played, by name)
//! microphone ─▶ S16 48 kHz mono ─▶ processor (webrtcdsp) ─▶ opusenc ─▶ every room
//! ```
//!
//! The processor sits before the shared encoder, so it runs once per channel whatever the
//! number of rooms. It finds its probe by name inside this process (`webrtcechoprobe` /
//! `webrtcdsp`, gst-plugins-bad), and each probe serves one processor: one probe per
//! channel, made once and kept for the life of the media, so a processor can start before
//! anything plays (it then cancels against silence) and the speaker can come and go.
//!
//! The processor matches the microphone to what was played by running time (on
//! GStreamer 1.22 and 1.26 alike, see [`properties`]): a sample the speaker pipeline
//! stamps `t` leaves the loudspeaker at `t` plus that pipeline's latency. The source
//! and the speaker are separate pipelines, so every pipeline of the box runs on the system
//! clock from one base time ([`align_clock`]): a running time then means the same instant
//! in all of them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use gst::prelude::*;
use tracing::{info, warn};

use super::MediaError;
use crate::config::audio_processing::AudioProcessingConfig;
use crate::engine::types::Channel;

/// The name of the element between the microphone's format and the encoder: the
/// processor, or an `identity` when every stage is off.
pub const PROCESSOR: &str = "aproc";

/// The format the processor and the probes work in (they take 10 ms periods at 48, 32,
/// 16 or 8 kHz; probe and processor must agree on the rate).
pub const RAW_CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=1";

/// The probe a channel's processor reads what the speaker played from.
pub fn probe_name(channel: Channel) -> String {
    format!("roomcast-echo-{channel}")
}

/// The processor's properties for `config` (names and values as gst-launch takes them).
/// Only properties that GStreamer 1.22 and 1.26 both have.
fn properties(config: &AudioProcessingConfig, channel: Channel) -> Vec<(&'static str, String)> {
    let on = |b: bool| if b { "true" } else { "false" }.to_owned();
    let mut props = vec![
        ("probe", probe_name(channel)),
        ("echo-cancel", on(config.echo_cancel)),
        ("gain-control", on(config.gain_control)),
        ("high-pass-filter", on(config.high_pass_filter)),
        (
            "noise-suppression",
            on(config.noise_suppression.level().is_some()),
        ),
    ];
    if let Some(level) = config.noise_suppression.level() {
        props.push(("noise-suppression-level", level.to_owned()));
    }
    // Pair the microphone with what was played by running time, as GStreamer 1.26 always
    // does (it ignores this property): the probe hands the processor what the speaker
    // sounds `delay` after the capture (its timestamp plus the speaker pipeline's latency,
    // gstwebrtcechoprobe.cpp `gst_webrtc_echo_probe_read`) and reports that `delay` (the
    // latency upstream of the probe) to the canceller, which then finds the room's few
    // milliseconds itself. 1.22's delay-agnostic mode instead reads the probe first in,
    // first out, which leads the echo by the speaker's whole latency on a real speaker
    // (hundreds of milliseconds, more than its canceller searches).
    props.push(("delay-agnostic", "false".to_owned()));
    props
}

/// The gst-launch fragment for the processor (`name=aproc`).
pub fn describe(config: &AudioProcessingConfig, channel: Channel) -> String {
    if config.is_off() {
        return format!("identity name={PROCESSOR} silent=true");
    }
    let props: String = properties(config, channel)
        .into_iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    format!("webrtcdsp name={PROCESSOR}{props}")
}

fn make_processor(
    config: &AudioProcessingConfig,
    channel: Channel,
) -> Result<gst::Element, MediaError> {
    let missing = |factory: &str| {
        MediaError::Setup(format!(
            "GStreamer element `{factory}` is missing: install gstreamer1.0-plugins-bad"
        ))
    };
    if config.is_off() {
        return gst::ElementFactory::make("identity")
            .name(PROCESSOR)
            .property("silent", true)
            .build()
            .map_err(|_| missing("identity"));
    }
    let element = gst::ElementFactory::make("webrtcdsp")
        .name(PROCESSOR)
        .build()
        .map_err(|_| missing("webrtcdsp"))?;
    for (key, value) in properties(config, channel) {
        if element.find_property(key).is_none() {
            return Err(MediaError::Setup(format!(
                "this GStreamer's webrtcdsp has no `{key}` property; set [audio_processing] to match what it supports"
            )));
        }
        element.set_property_from_str(key, &value);
    }
    Ok(element)
}

/// Replaces `pipeline`'s processor with one for `config`, while it plays: the
/// microphone's pad is held for the moment of the swap (the 10 ms the old processor
/// holds are dropped), rooms and encoder are not touched.
pub fn replace(
    pipeline: &gst::Pipeline,
    config: &AudioProcessingConfig,
    channel: Channel,
) -> Result<(), MediaError> {
    let old = pipeline.by_name(PROCESSOR).ok_or_else(|| {
        MediaError::Setup(format!("channel `{channel}` has no audio processing stage"))
    })?;
    let (Some(upstream), Some(downstream)) = (
        old.static_pad("sink").and_then(|p| p.peer()),
        old.static_pad("src").and_then(|p| p.peer()),
    ) else {
        return Err(MediaError::Setup(format!(
            "channel `{channel}`: the audio processing stage is not linked"
        )));
    };
    let new = make_processor(config, channel)?;
    let weak = pipeline.downgrade();
    let described = describe(config, channel);
    upstream.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
        let Some(pipeline) = weak.upgrade() else {
            return gst::PadProbeReturn::Remove;
        };
        if let Err(e) = swap(&pipeline, pad, &old, &new, &downstream) {
            warn!(channel = %channel, "audio processing was not changed: {e}");
        } else {
            info!(channel = %channel, processor = %described, "audio processing changed");
        }
        gst::PadProbeReturn::Remove
    });
    Ok(())
}

fn swap(
    pipeline: &gst::Pipeline,
    upstream: &gst::Pad,
    old: &gst::Element,
    new: &gst::Element,
    downstream: &gst::Pad,
) -> Result<(), String> {
    let (Some(old_sink), Some(old_src), Some(new_sink), Some(new_src)) = (
        old.static_pad("sink"),
        old.static_pad("src"),
        new.static_pad("sink"),
        new.static_pad("src"),
    ) else {
        return Err("a processor has no pads".into());
    };
    upstream
        .unlink(&old_sink)
        .map_err(|e| format!("unlink: {e}"))?;
    old_src
        .unlink(downstream)
        .map_err(|e| format!("unlink: {e}"))?;
    // The old processor releases its echo probe when it stops, before the new one
    // takes it.
    let _ = old.set_state(gst::State::Null);
    pipeline.remove(old).map_err(|e| format!("remove: {e}"))?;
    pipeline.add(new).map_err(|e| format!("add: {e}"))?;
    upstream
        .link(&new_sink)
        .map_err(|e| format!("link: {e:?}"))?;
    new_src
        .link(downstream)
        .map_err(|e| format!("link: {e:?}"))?;
    new.sync_state_with_parent()
        .map_err(|e| format!("start: {e}"))?;
    Ok(())
}

/// What the speaker plays, as each channel's processor reads it: one `webrtcechoprobe`
/// per channel, made once. The speaker links them into its pipeline while it runs.
pub struct EchoReference {
    probes: BTreeMap<Channel, gst::Element>,
}

impl EchoReference {
    /// Probes for `channels` (those whose microphone cancels echo); none when
    /// `webrtcechoprobe` is missing (the processor then cannot start either, which
    /// `GstMedia::new` reports).
    pub fn new(channels: impl IntoIterator<Item = Channel>) -> Self {
        let probes = channels
            .into_iter()
            .filter_map(|channel| {
                gst::ElementFactory::make("webrtcechoprobe")
                    .name(probe_name(channel))
                    .build()
                    .ok()
                    .map(|probe| (channel, probe))
            })
            .collect();
        Self { probes }
    }

    /// The probes in a fixed order, for the speaker to chain.
    pub fn probes(&self) -> Vec<gst::Element> {
        self.probes.values().cloned().collect()
    }
}

/// Puts `pipeline` on the system clock with the process's one base time, so that running
/// times agree between the box's pipelines (see the module docs). Call before PLAYING.
pub fn align_clock(pipeline: &gst::Pipeline) {
    static BASE_TIME: OnceLock<gst::ClockTime> = OnceLock::new();
    let clock = gst::SystemClock::obtain();
    let base = *BASE_TIME.get_or_init(|| clock.time());
    pipeline.use_clock(Some(&clock));
    pipeline.set_start_time(gst::ClockTime::NONE);
    pipeline.set_base_time(base);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::audio_processing::NoiseSuppression;

    #[test]
    fn the_description_names_each_stage_and_the_channels_probe() {
        let config = AudioProcessingConfig::default();
        let text = describe(&config, Channel::Main);
        assert_eq!(
            text,
            "webrtcdsp name=aproc probe=roomcast-echo-main echo-cancel=true gain-control=true high-pass-filter=true noise-suppression=true noise-suppression-level=moderate delay-agnostic=false"
        );
        let quiet = AudioProcessingConfig {
            echo_cancel: false,
            noise_suppression: NoiseSuppression::Off,
            ..config
        };
        let text = describe(&quiet, Channel::Aux);
        assert!(text.contains("echo-cancel=false"), "{text}");
        assert!(text.contains("noise-suppression=false"), "{text}");
        assert!(!text.contains("noise-suppression-level"), "{text}");
        let off = AudioProcessingConfig {
            gain_control: false,
            high_pass_filter: false,
            ..quiet
        };
        assert_eq!(
            describe(&off, Channel::Main),
            "identity name=aproc silent=true"
        );
    }

    #[test]
    fn processors_and_probes_are_made_with_every_property_this_gstreamer_has() {
        crate::webrtc::init().unwrap();
        for level in [
            NoiseSuppression::Off,
            NoiseSuppression::Low,
            NoiseSuppression::VeryHigh,
        ] {
            let config = AudioProcessingConfig {
                noise_suppression: level,
                ..Default::default()
            };
            let element = make_processor(&config, Channel::Main).unwrap();
            assert_eq!(element.property::<String>("probe"), "roomcast-echo-main");
            assert_eq!(
                element.property::<bool>("noise-suppression"),
                level != NoiseSuppression::Off
            );
        }
        let reference = EchoReference::new([Channel::Main, Channel::Aux]);
        let names: Vec<String> = reference.probes().iter().map(|p| p.name().into()).collect();
        assert_eq!(names, ["roomcast-echo-main", "roomcast-echo-aux"]);
    }

    /// Live sources on an aligned pipeline still run in real time (their first
    /// timestamps are far from zero running time).
    #[test]
    fn aligned_pipelines_run_in_real_time() {
        crate::webrtc::init().unwrap();
        let first = gst::parse::launch("audiotestsrc is-live=true ! fakesink sync=true")
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        align_clock(&first);
        first.set_state(gst::State::Playing).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let counted = gst::parse::launch(
            "videotestsrc is-live=true ! video/x-raw,framerate=30/1,width=64,height=48 ! identity name=count ! fakesink sync=true \
             audiotestsrc is-live=true samplesperbuffer=480 ! identity name=acount ! fakesink sync=true",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        align_clock(&counted);
        assert_eq!(counted.base_time(), first.base_time());
        let count = |name: &str| {
            let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let c = n.clone();
            counted
                .by_name(name)
                .unwrap()
                .static_pad("src")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            n
        };
        let (video, audio) = (count("count"), count("acount"));
        counted.set_state(gst::State::Playing).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let (v, a) = (
            video.load(std::sync::atomic::Ordering::Relaxed),
            audio.load(std::sync::atomic::Ordering::Relaxed),
        );
        counted.set_state(gst::State::Null).unwrap();
        first.set_state(gst::State::Null).unwrap();
        assert!((20..=40).contains(&v), "{v} video frames in 1 s");
        assert!((70..=130).contains(&a), "{a} 10 ms audio buffers in 1 s");
    }
}
