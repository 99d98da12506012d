//! `[audio_processing]`: what is done to the microphone before the shared encoder —
//! acoustic echo cancellation against what the speaker plays, noise suppression,
//! automatic gain control and a high-pass filter ("3A"). Processed once per channel,
//! whatever the number of rooms.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AudioProcessingConfig {
    /// Cancel what the speaker plays out of the microphone. Off for USB speakerphones
    /// that cancel echo themselves.
    #[serde(default = "super::types::default_true")]
    pub echo_cancel: bool,
    #[serde(default)]
    pub noise_suppression: NoiseSuppression,
    /// Automatic digital gain: a quiet or distant talker is brought up, a loud one down.
    #[serde(default = "super::types::default_true")]
    pub gain_control: bool,
    /// Removes rumble below speech (about 80 Hz): air conditioning, handling noise.
    #[serde(default = "super::types::default_true")]
    pub high_pass_filter: bool,
}

impl Default for AudioProcessingConfig {
    fn default() -> Self {
        Self {
            echo_cancel: true,
            noise_suppression: NoiseSuppression::default(),
            gain_control: true,
            high_pass_filter: true,
        }
    }
}

impl AudioProcessingConfig {
    /// Every stage off: the microphone goes to the encoder untouched.
    pub fn is_off(&self) -> bool {
        !self.echo_cancel
            && self.noise_suppression == NoiseSuppression::Off
            && !self.gain_control
            && !self.high_pass_filter
    }
}

impl fmt::Display for AudioProcessingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "echo cancellation {}, noise suppression {}, gain control {}, high-pass filter {}",
            on(self.echo_cancel),
            self.noise_suppression,
            on(self.gain_control),
            on(self.high_pass_filter)
        )
    }
}

/// How hard noise is suppressed; higher levels remove more noise and distort speech more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseSuppression {
    Off,
    Low,
    #[default]
    Moderate,
    High,
    VeryHigh,
}

impl NoiseSuppression {
    /// The `webrtcdsp` level nick, `None` when off.
    pub fn level(self) -> Option<&'static str> {
        match self {
            NoiseSuppression::Off => None,
            NoiseSuppression::Low => Some("low"),
            NoiseSuppression::Moderate => Some("moderate"),
            NoiseSuppression::High => Some("high"),
            NoiseSuppression::VeryHigh => Some("very-high"),
        }
    }
}

impl fmt::Display for NoiseSuppression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.level().unwrap_or("off"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_turn_every_stage_on() {
        let config: AudioProcessingConfig = toml::from_str("").unwrap();
        assert_eq!(config, AudioProcessingConfig::default());
        assert!(config.echo_cancel && config.gain_control && config.high_pass_filter);
        assert_eq!(config.noise_suppression, NoiseSuppression::Moderate);
        assert!(!config.is_off());
    }

    #[test]
    fn levels_parse_by_their_documented_names() {
        for (text, level) in [
            ("off", NoiseSuppression::Off),
            ("low", NoiseSuppression::Low),
            ("moderate", NoiseSuppression::Moderate),
            ("high", NoiseSuppression::High),
            ("very-high", NoiseSuppression::VeryHigh),
        ] {
            let config: AudioProcessingConfig =
                toml::from_str(&format!("noise_suppression = \"{text}\"")).unwrap();
            assert_eq!(config.noise_suppression, level);
            assert_eq!(level.to_string(), text);
        }
        let all_off: AudioProcessingConfig = toml::from_str(
            "echo_cancel = false\nnoise_suppression = \"off\"\ngain_control = false\nhigh_pass_filter = false",
        )
        .unwrap();
        assert!(all_off.is_off());
    }

    #[test]
    fn unknown_levels_and_keys_are_refused() {
        let bad = toml::from_str::<AudioProcessingConfig>("noise_suppression = \"max\"")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("very-high"), "{bad}");
        assert!(toml::from_str::<AudioProcessingConfig>("echo = true").is_err());
    }
}
