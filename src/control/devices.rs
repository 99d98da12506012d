//! What `list_devices` answers: the H.264 encoders this box's GStreamer has.
//!
//! The media module's device listing (cameras, microphones, their capabilities) replaces
//! this when it lands; the reply keeps the `encoders` field.

use serde::Serialize;

use crate::config::EncoderPreference;

/// The `list_devices` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceList {
    /// Every encoder `encoder.preference` may name, in the order `auto` tries them.
    pub encoders: Vec<EncoderInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncoderInfo {
    /// The GStreamer element, as `encoder.preference` names it.
    pub element: &'static str,
    /// A hardware encoder (probed first by `auto`).
    pub hardware: bool,
    /// Whether this GStreamer installation has the element.
    pub available: bool,
}

/// The encoders `auto` probes, hardware first.
const ENCODERS: &[(EncoderPreference, bool)] = &[
    (EncoderPreference::V4l2h264enc, true),
    (EncoderPreference::Nvv4l2h264enc, true),
    (EncoderPreference::Mpph264enc, true),
    (EncoderPreference::Vah264enc, true),
    (EncoderPreference::Vaapih264enc, true),
    (EncoderPreference::X264enc, false),
    (EncoderPreference::Openh264enc, false),
];

/// Lists the encoders. GStreamer must be initialised (the media engine does it at start;
/// if it is not, every encoder reads as unavailable).
pub fn list() -> DeviceList {
    let initialised = gst::INITIALIZED.load(std::sync::atomic::Ordering::SeqCst);
    DeviceList {
        encoders: ENCODERS
            .iter()
            .filter_map(|(preference, hardware)| {
                let element = preference.element()?;
                Some(EncoderInfo {
                    element,
                    hardware: *hardware,
                    available: initialised && gst::ElementFactory::find(element).is_some(),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_encoder_the_config_can_name() {
        let _ = gst::init();
        let list = list();
        assert_eq!(list.encoders.len(), 7);
        assert!(list.encoders[..5].iter().all(|e| e.hardware));
        let x264 = list
            .encoders
            .iter()
            .find(|e| e.element == "x264enc")
            .unwrap();
        // gstreamer1.0-plugins-ugly is in scripts/apt-packages.txt.
        assert!(x264.available, "{list:?}");
    }
}
