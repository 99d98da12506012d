//! The speaker: one ALSA playback device shared by every played stream, mixed.
//!
//! `interaudiosrc (one per stream) → audiomixer → alsasink`, built when the first stream
//! plays to the speaker and stopped with the last. Players feed it through
//! `interaudiosink`, so a player's pipeline failing never touches the mixer.

use std::sync::Mutex;

use gst::prelude::*;
use tracing::{info, warn};

use super::MediaError;

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
    mixer: Mutex<Option<Mixer>>,
}

impl Speaker {
    pub fn new(device: &str) -> Self {
        Self {
            device: device.to_owned(),
            mixer: Mutex::new(None),
        }
    }

    fn start(&self) -> Result<Mixer, MediaError> {
        let description = format!(
            "audiomixer name=mix ! audioconvert ! audioresample ! alsasink name=speaker device=\"{}\"",
            self.device.replace('"', "")
        );
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| MediaError::Setup(format!("cannot build the speaker pipeline: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| {
                MediaError::Setup("the speaker description did not make a pipeline".into())
            })?;
        let mixer = pipeline
            .by_name("mix")
            .ok_or_else(|| MediaError::Setup("speaker pipeline has no mixer".into()))?;
        pipeline.set_state(gst::State::Playing).map_err(|_| {
            let _ = pipeline.set_state(gst::State::Null);
            MediaError::Setup(format!(
                "cannot play to ALSA device `{}`; set player.audio_device (see `roomcast devices`)",
                self.device
            ))
        })?;
        info!(device = %self.device, "speaker started");
        Ok(Mixer {
            pipeline,
            mixer,
            inputs: 0,
        })
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
            && mixer.pipeline.set_state(gst::State::Null).is_err()
        {
            warn!("the speaker pipeline did not stop cleanly");
        }
    }
}
