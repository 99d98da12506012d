//! `[media]`: the fast paths — performance workarounds that reach into GStreamer's and
//! libsrtp's internals (`docs/workarounds.md`). On by default; each engages only on the
//! versions it was checked on. `fast_paths = false` turns all off; a key per fast path
//! overrides it for that one.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    #[serde(default = "super::types::default_true")]
    pub fast_paths: bool,
    #[serde(default)]
    pub frame_lists: Option<bool>,
    #[serde(default)]
    pub fec_bypass: Option<bool>,
    #[serde(default)]
    pub sending_path_shortcut: Option<bool>,
    #[serde(default)]
    pub shared_segment: Option<bool>,
    #[serde(default)]
    pub srtp_primitives: Option<bool>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            fast_paths: true,
            frame_lists: None,
            fec_bypass: None,
            sending_path_shortcut: None,
            shared_segment: None,
            srtp_primitives: None,
        }
    }
}

/// One fast path (see `docs/workarounds.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FastPath {
    /// A video frame's packets as one buffer list from the payloader on.
    FrameLists,
    /// Past webrtcbin's idle FEC stage (and its clocksync).
    FecBypass,
    /// Past the pads of webrtcbin's sending path that only hand data on.
    SendingPathShortcut,
    /// One segment event for both tees, so rtpfunnel re-sends none.
    SharedSegment,
    /// AES-ICM and HMAC-SHA1 handed to libsrtp in place of its NSS ones.
    SrtpPrimitives,
}

impl FastPath {
    pub const ALL: [FastPath; 5] = [
        FastPath::FrameLists,
        FastPath::FecBypass,
        FastPath::SendingPathShortcut,
        FastPath::SharedSegment,
        FastPath::SrtpPrimitives,
    ];

    /// The config key (`media.<key>`) and snapshot name.
    pub fn key(self) -> &'static str {
        match self {
            FastPath::FrameLists => "frame_lists",
            FastPath::FecBypass => "fec_bypass",
            FastPath::SendingPathShortcut => "sending_path_shortcut",
            FastPath::SharedSegment => "shared_segment",
            FastPath::SrtpPrimitives => "srtp_primitives",
        }
    }
}

impl fmt::Display for FastPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl MediaConfig {
    /// Whether the configuration wants `path` (its own key, else `fast_paths`).
    pub fn wants(&self, path: FastPath) -> bool {
        let own = match path {
            FastPath::FrameLists => self.frame_lists,
            FastPath::FecBypass => self.fec_bypass,
            FastPath::SendingPathShortcut => self.sending_path_shortcut,
            FastPath::SharedSegment => self.shared_segment,
            FastPath::SrtpPrimitives => self.srtp_primitives,
        };
        own.unwrap_or(self.fast_paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_switch_for_all_and_a_key_for_each() {
        let all: MediaConfig = toml::from_str("").unwrap();
        assert!(FastPath::ALL.iter().all(|p| all.wants(*p)));
        let none: MediaConfig = toml::from_str("fast_paths = false").unwrap();
        assert!(FastPath::ALL.iter().all(|p| !none.wants(*p)));
        let one: MediaConfig =
            toml::from_str("fast_paths = false\nsrtp_primitives = true").unwrap();
        let wanted: Vec<FastPath> = FastPath::ALL
            .into_iter()
            .filter(|p| one.wants(*p))
            .collect();
        assert_eq!(wanted, [FastPath::SrtpPrimitives]);
        let but_one: MediaConfig = toml::from_str("sending_path_shortcut = false").unwrap();
        assert!(!but_one.wants(FastPath::SendingPathShortcut));
        assert!(but_one.wants(FastPath::FecBypass));
        assert!(toml::from_str::<MediaConfig>("hops = false").is_err());
    }
}
