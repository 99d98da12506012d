//! H.264 encoder selection from the board presets in `gst/`.
//!
//! The presets are data compiled into the binary (so a box never runs without them).
//! `auto` walks them in order — hardware first (Pi 4 V4L2 M2M, Jetson, Rockchip, VA-API),
//! then software (Pi 5, generic) — and takes the first encoder present in the GStreamer
//! registry. A preset may name the boards it is for (`model_contains`, matched against
//! /proc/device-tree/model).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::MediaError;
use crate::config::EncoderPreference;

/// The presets, in `auto`'s probing order.
const PRESETS: [(&str, &str); 6] = [
    ("pi4", include_str!("../../gst/pi4.toml")),
    ("jetson", include_str!("../../gst/jetson.toml")),
    ("rockchip", include_str!("../../gst/rockchip.toml")),
    ("x86-va", include_str!("../../gst/x86-va.toml")),
    ("pi5", include_str!("../../gst/pi5.toml")),
    ("generic", include_str!("../../gst/generic.toml")),
];

/// One board family's way of encoding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub board: String,
    /// Only for boards whose device-tree model contains one of these.
    #[serde(default)]
    pub model_contains: Vec<String>,
    pub encoder: Vec<EncoderSpec>,
}

/// One encoder element and how to drive it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    pub element: String,
    /// A converter the encoder needs in front of it instead of `videoconvert`.
    #[serde(default)]
    pub convert: Option<String>,
    /// Raw caps the encoder is fed.
    pub input: String,
    /// Caps forced on its output (constrained baseline for browsers and Janus).
    pub output: String,
    /// Properties, as gst-launch strings; `{bitrate_bps}`, `{bitrate_kbps}` and `{gop}`
    /// are filled in.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// The encoder chosen for this box.
#[derive(Debug, Clone)]
pub struct Selected {
    pub preset: String,
    pub spec: EncoderSpec,
}

/// Parses every preset.
pub fn presets() -> Result<Vec<Preset>, MediaError> {
    PRESETS
        .iter()
        .map(|(name, text)| {
            toml::from_str::<Preset>(text)
                .map_err(|e| MediaError::Setup(format!("gst/{name}.toml: {e}")))
        })
        .collect()
}

/// The board's device-tree model (`Raspberry Pi 5 Model B Rev 1.0`), if it has one.
pub fn board_model() -> Option<String> {
    std::fs::read_to_string("/proc/device-tree/model")
        .ok()
        .map(|m| m.trim_end_matches('\0').trim().to_owned())
}

/// Whether GStreamer has an element factory of this name.
pub fn element_exists(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// Picks the encoder: `auto` probes the presets in order; an explicit element uses the
/// first preset that drives it.
pub fn select(
    preference: EncoderPreference,
    model: Option<&str>,
    exists: impl Fn(&str) -> bool,
) -> Result<Selected, MediaError> {
    let presets = presets()?;
    let usable =
        |spec: &EncoderSpec| exists(&spec.element) && spec.convert.as_deref().is_none_or(&exists);
    match preference.element() {
        None => {
            for preset in &presets {
                let board_ok = preset.model_contains.is_empty()
                    || model.is_some_and(|m| {
                        preset
                            .model_contains
                            .iter()
                            .any(|want| m.contains(want.as_str()))
                    });
                if !board_ok {
                    continue;
                }
                if let Some(spec) = preset.encoder.iter().find(|s| usable(s)) {
                    return Ok(Selected {
                        preset: preset.name.clone(),
                        spec: spec.clone(),
                    });
                }
            }
            Err(MediaError::Setup(
                "no H.264 encoder found: install gstreamer1.0-plugins-ugly (x264enc) or gstreamer1.0-plugins-bad (openh264enc), or the board's hardware encoder plugin".into(),
            ))
        }
        Some(element) => {
            let spec = presets
                .iter()
                .flat_map(|p| p.encoder.iter().map(move |s| (p, s)))
                .find(|(_, s)| s.element == element);
            match spec {
                Some((preset, spec)) if usable(spec) => Ok(Selected {
                    preset: preset.name.clone(),
                    spec: spec.clone(),
                }),
                Some(_) => Err(MediaError::Setup(format!(
                    "encoder.preference = \"{element}\" but GStreamer has no `{element}` here; use \"auto\" or install its plugin (see `roomcast devices`)"
                ))),
                None => Err(MediaError::Setup(format!("no preset drives `{element}`"))),
            }
        }
    }
}

/// The encoder's properties with the placeholders filled in.
pub fn properties(spec: &EncoderSpec, bitrate_kbps: u32, gop: u32) -> Vec<(String, String)> {
    spec.properties
        .iter()
        .map(|(key, value)| {
            let value = value
                .replace(
                    "{bitrate_bps}",
                    &(u64::from(bitrate_kbps) * 1000).to_string(),
                )
                .replace("{bitrate_kbps}", &bitrate_kbps.to_string())
                .replace("{gop}", &gop.to_string());
            (key.clone(), value)
        })
        .collect()
}

/// Checks that every property the preset sets exists on the element (a typo or a plugin
/// version without it would otherwise only show at run time).
pub fn check_properties(spec: &EncoderSpec) -> Result<(), MediaError> {
    let element = gst::ElementFactory::make(&spec.element)
        .build()
        .map_err(|_| MediaError::Setup(format!("cannot create `{}`", spec.element)))?;
    for key in spec.properties.keys() {
        if gst::prelude::ObjectExt::find_property(&element, key).is_none() {
            return Err(MediaError::Setup(format!(
                "`{}` has no property `{key}` (preset for {}); the plugin version differs from what the preset expects",
                spec.element, spec.element
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_documents_its_board() {
        let presets = presets().unwrap();
        assert_eq!(presets.len(), 6);
        for preset in &presets {
            assert!(!preset.encoder.is_empty(), "{}", preset.name);
            assert!(!preset.board.is_empty());
            for spec in &preset.encoder {
                assert!(
                    spec.output.contains("constrained-baseline"),
                    "{}: browsers need baseline",
                    spec.element
                );
            }
        }
    }

    #[test]
    fn auto_prefers_hardware_then_software() {
        let only = |names: &'static [&'static str]| move |e: &str| names.contains(&e);
        let pick = |names: &'static [&'static str], model: Option<&str>| {
            select(EncoderPreference::Auto, model, only(names)).map(|s| (s.preset, s.spec.element))
        };
        assert_eq!(
            pick(&["v4l2h264enc", "x264enc"], None).unwrap(),
            ("pi4".into(), "v4l2h264enc".into())
        );
        assert_eq!(
            pick(&["nvv4l2h264enc", "nvvidconv", "x264enc"], None).unwrap(),
            ("jetson".into(), "nvv4l2h264enc".into())
        );
        // Without its converter the Jetson encoder is unusable.
        assert_eq!(
            pick(&["nvv4l2h264enc", "x264enc"], None).unwrap().1,
            "x264enc"
        );
        assert_eq!(
            pick(&["vaapih264enc", "x264enc"], None).unwrap(),
            ("x86-va".into(), "vaapih264enc".into())
        );
        assert_eq!(
            pick(&["x264enc"], Some("Raspberry Pi 5 Model B Rev 1.0")).unwrap(),
            ("pi5".into(), "x264enc".into())
        );
        assert_eq!(
            pick(&["x264enc"], None).unwrap(),
            ("generic".into(), "x264enc".into())
        );
        assert_eq!(
            pick(&["openh264enc"], None).unwrap(),
            ("generic".into(), "openh264enc".into())
        );
        assert!(pick(&[], None).is_err());
    }

    #[test]
    fn explicit_choice_must_exist() {
        let selected = select(EncoderPreference::Openh264enc, None, |_| true).unwrap();
        assert_eq!(selected.spec.element, "openh264enc");
        let err = select(EncoderPreference::Vah264enc, None, |e| e == "x264enc").unwrap_err();
        assert!(err.to_string().contains("no `vah264enc`"), "{err}");
    }

    #[test]
    fn placeholders_are_filled() {
        let presets = presets().unwrap();
        let pi4 = &presets[0].encoder[0];
        let props = properties(pi4, 2000, 60);
        let controls = &props.iter().find(|(k, _)| k == "extra-controls").unwrap().1;
        assert!(controls.contains("video_bitrate=2000000"), "{controls}");
        assert!(controls.contains("h264_i_frame_period=60"), "{controls}");
    }
}
