//! The speaker: one ALSA playback device shared by every played stream, mixed.
//!
//! `interaudiosrc (one per stream) → audiomixer → [echo probes] → alsasink`, built when the
//! first stream plays to the speaker and stopped with the last. Players feed it through
//! `interaudiosink`, so a player's pipeline failing never touches the mixer.
//!
//! When a microphone cancels echo, what the speaker plays passes its channel's echo probe
//! first (`audio_processing.rs`), in the processor's format; a simulated room
//! (`test_room.rs`) also gets a copy of it.

use std::sync::Mutex;

use gst::prelude::*;
use tracing::{info, warn};

use super::MediaError;
use super::audio_processing::{self, EchoReference, RAW_CAPS};

struct Mixer {
    pipeline: gst::Pipeline,
    mixer: gst::Element,
    inputs: usize,
}

/// One stream's way into the mixer.
pub struct SpeakerInput {
    elements: Vec<gst::Element>,
    mixer_pad: gst::Pad,
}

pub struct Speaker {
    device: String,
    echo: EchoReference,
    /// Simulated rooms that get a copy of what is played (`appsink` names).
    loopbacks: Vec<String>,
    mixer: Mutex<Option<Mixer>>,
}

impl Speaker {
    pub fn new(device: &str, echo: EchoReference, loopbacks: Vec<String>) -> Self {
        Self {
            device: device.to_owned(),
            echo,
            loopbacks,
            mixer: Mutex::new(None),
        }
    }

    /// Whether the speaker plays now (the echo reference is then live).
    pub fn is_playing(&self) -> bool {
        self.mixer.lock().map(|m| m.is_some()).unwrap_or(false)
    }

    fn description(&self) -> String {
        let device = self.device.replace('"', "");
        let probes = self.echo.probes();
        if probes.is_empty() && self.loopbacks.is_empty() {
            return format!(
                "audiomixer name=mix ! audioconvert ! audioresample ! alsasink name=speaker device=\"{device}\""
            );
        }
        // The probes go between `reference` and `out` (they are made once, not parsed).
        let mut text = format!(
            "audiomixer name=mix ! audioconvert ! audioresample ! capsfilter name=reference caps={RAW_CAPS} ! tee name=out allow-not-linked=true  \
             out. ! queue ! audioconvert ! audioresample ! alsasink name=speaker device=\"{device}\""
        );
        for name in &self.loopbacks {
            text.push_str(&format!(
                "  out. ! queue max-size-time=200000000 leaky=downstream ! appsink name={name} sync=false"
            ));
        }
        text
    }

    fn start(&self) -> Result<Mixer, MediaError> {
        let description = self.description();
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| MediaError::Setup(format!("cannot build the speaker pipeline: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| {
                MediaError::Setup("the speaker description did not make a pipeline".into())
            })?;
        let mixer = pipeline
            .by_name("mix")
            .ok_or_else(|| MediaError::Setup("speaker pipeline has no mixer".into()))?;
        // Running times must agree with the microphones' (see `audio_processing`).
        audio_processing::align_clock(&pipeline);
        let latency = super::test_room::RenderLatency::default();
        if !self.loopbacks.is_empty()
            && let Some(pad) = pipeline.by_name("out").and_then(|t| t.static_pad("sink"))
        {
            latency.track(&pad);
        }
        for name in &self.loopbacks {
            if let Some(sink) = pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            {
                super::test_room::feed_from(&sink, name.clone(), latency.clone());
            }
        }
        if let Err(e) = self.insert_probes(&pipeline) {
            self.remove_probes(&pipeline);
            return Err(e);
        }
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            let _ = pipeline.set_state(gst::State::Null);
            self.remove_probes(&pipeline);
            MediaError::Setup(format!(
                "cannot play to ALSA device `{}`; set player.audio_device (see `roomcast devices`)",
                self.device
            ))
        })?;
        info!(device = %self.device, echo_reference = !self.echo.probes().is_empty(), "speaker started");
        Ok(Mixer {
            pipeline,
            mixer,
            inputs: 0,
        })
    }

    fn insert_probes(&self, pipeline: &gst::Pipeline) -> Result<(), MediaError> {
        let probes = self.echo.probes();
        if probes.is_empty() {
            return Ok(());
        }
        let err = |what: &str| MediaError::Setup(format!("speaker echo reference: {what}"));
        let (Some(reference), Some(out)) = (pipeline.by_name("reference"), pipeline.by_name("out"))
        else {
            return Err(err("the pipeline has no reference point"));
        };
        reference.unlink(&out);
        pipeline
            .add_many(&probes)
            .map_err(|e| err(&e.to_string()))?;
        let mut chain = vec![reference];
        chain.extend(probes);
        chain.push(out);
        gst::Element::link_many(&chain).map_err(|e| err(&e.to_string()))
    }

    /// Takes the probes out of a stopped pipeline so that the next one can have them.
    fn remove_probes(&self, pipeline: &gst::Pipeline) {
        for probe in self.echo.probes() {
            if probe
                .parent()
                .is_some_and(|p| &p == pipeline.upcast_ref::<gst::Object>())
            {
                let _ = probe.set_state(gst::State::Null);
                let _ = pipeline.remove(&probe);
            }
        }
    }

    /// Adds a mixer input fed by `interaudiosink channel=<channel>`.
    pub fn connect(&self, channel: &str) -> Result<SpeakerInput, MediaError> {
        let mut guard = self
            .mixer
            .lock()
            .map_err(|_| MediaError::Setup("speaker state poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.start()?);
        }
        let Some(mixer) = guard.as_mut() else {
            return Err(MediaError::Setup("speaker did not start".into()));
        };
        let make = |factory: &str| {
            gst::ElementFactory::make(factory)
                .build()
                .map_err(|_| MediaError::Setup(format!("GStreamer element `{factory}` is missing")))
        };
        let src = make("interaudiosrc")?;
        src.set_property("channel", channel);
        let elements = vec![
            src,
            make("audioconvert")?,
            make("audioresample")?,
            make("queue")?,
        ];
        let setup = || -> Result<gst::Pad, MediaError> {
            let err = |e: &dyn std::fmt::Display| MediaError::Setup(format!("speaker input: {e}"));
            mixer.pipeline.add_many(&elements).map_err(|e| err(&e))?;
            gst::Element::link_many(&elements).map_err(|e| err(&e))?;
            let mixer_pad = mixer
                .mixer
                .request_pad_simple("sink_%u")
                .ok_or_else(|| MediaError::Setup("the mixer refused an input".into()))?;
            let tail = elements[3]
                .static_pad("src")
                .ok_or_else(|| MediaError::Setup("queue has no src".into()))?;
            tail.link(&mixer_pad).map_err(|e| err(&format!("{e:?}")))?;
            for element in elements.iter().rev() {
                element.sync_state_with_parent().map_err(|e| err(&e))?;
            }
            Ok(mixer_pad)
        };
        let mixer_pad = setup()?;
        mixer.inputs += 1;
        Ok(SpeakerInput {
            elements,
            mixer_pad,
        })
    }

    /// Removes a stream's input; the last one stops the speaker.
    pub fn disconnect(&self, input: SpeakerInput) {
        let Ok(mut guard) = self.mixer.lock() else {
            return;
        };
        let Some(mixer) = guard.as_mut() else { return };
        for element in &input.elements {
            let _ = element.set_state(gst::State::Null);
            let _ = mixer.pipeline.remove(element);
        }
        mixer.mixer.release_request_pad(&input.mixer_pad);
        mixer.inputs = mixer.inputs.saturating_sub(1);
        if mixer.inputs == 0
            && let Some(mixer) = guard.take()
        {
            if mixer.pipeline.set_state(gst::State::Null).is_err() {
                warn!("the speaker pipeline did not stop cleanly");
            }
            self.remove_probes(&mixer.pipeline);
        }
    }
}
