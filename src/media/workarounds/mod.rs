//! The fast paths: performance workarounds that reach into GStreamer's and libsrtp's
//! internals to make what each room costs smaller. Each is switched by `[media]`
//! (`fast_paths`, and a key per fast path), engages only on the versions it was checked
//! on, and is reported once at info and in the state snapshot (`fast_paths`). Why each
//! exists, the versions verified, its test and the upstream report that would make it
//! unnecessary: `docs/workarounds.md`.
//!
//! - [`framelist`]: a video frame's packets travel as one buffer list from the payloader.
//! - [`fec_bypass`]: past webrtcbin's FEC stage while it has nothing to do.
//! - [`hops`]: past the pads of webrtcbin's sending path that only hand data on.
//! - [`shared_segment`]: one segment event for both tees, so rtpfunnel re-sends none.
//! - SRTP primitives (`crate::webrtc::srtp_crypto`): AES-ICM and HMAC-SHA1 handed to
//!   libsrtp in place of its NSS ones (process-wide, so it lives with the WebRTC setup).

pub mod fec_bypass;
pub mod framelist;
pub mod hops;
pub mod shared_segment;

use std::collections::BTreeMap;
use std::sync::RwLock;

use tracing::{info, warn};

pub use crate::config::media::FastPath;
use crate::config::media::MediaConfig;

/// GStreamer versions (major, minor) the GStreamer fast paths were checked on: Debian 12
/// (1.22.0) and Debian 13 (1.26.2).
pub const TESTED_GSTREAMER: [(u32, u32); 2] = [(1, 22), (1, 26)];

/// Whether a fast path is in use, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engagement {
    Engaged,
    Off(String),
}

impl Engagement {
    /// `engaged`, or `off: <why>` (the state snapshot's words).
    pub fn describe(&self) -> String {
        match self {
            Engagement::Engaged => "engaged".to_owned(),
            Engagement::Off(why) => format!("off: {why}"),
        }
    }
}

fn decided() -> &'static RwLock<Option<BTreeMap<FastPath, Engagement>>> {
    static DECIDED: RwLock<Option<BTreeMap<FastPath, Engagement>>> = RwLock::new(None);
    &DECIDED
}

/// Why a GStreamer fast path cannot engage on this GStreamer, if it cannot.
fn untested_gstreamer() -> Option<String> {
    let (major, minor, micro, _) = gst::version();
    (!TESTED_GSTREAMER.contains(&(major, minor))).then(|| {
        format!(
            "GStreamer {major}.{minor}.{micro} is not a version it was checked on (1.22 and 1.26)"
        )
    })
}

fn decide_one(config: &MediaConfig, path: FastPath) -> Engagement {
    if path == FastPath::SrtpPrimitives {
        let installed = crate::webrtc::srtp_primitives_installed();
        if !config.wants(path) {
            return match installed {
                // libsrtp cannot be given its own primitives back in a running process.
                Some(Ok(())) => {
                    warn!(
                        "media.srtp_primitives = false takes effect at the next start: libsrtp already uses roomcast's"
                    );
                    Engagement::Engaged
                }
                _ => Engagement::Off("turned off in [media]".to_owned()),
            };
        }
        return match crate::webrtc::install_srtp_primitives() {
            Ok(()) => Engagement::Engaged,
            Err(e) => Engagement::Off(e.to_string()),
        };
    }
    if !config.wants(path) {
        return Engagement::Off("turned off in [media]".to_owned());
    }
    match untested_gstreamer() {
        Some(why) => Engagement::Off(why),
        None => Engagement::Engaged,
    }
}

/// Decides every fast path for `config` on this machine, installs the SRTP primitives
/// when wanted, and says what engaged (once per call: at start and at each reload).
pub fn decide(config: &MediaConfig) -> BTreeMap<FastPath, Engagement> {
    let decisions: BTreeMap<FastPath, Engagement> = FastPath::ALL
        .into_iter()
        .map(|path| (path, decide_one(config, path)))
        .collect();
    let listed: Vec<String> = decisions
        .iter()
        .map(|(path, engagement)| format!("{path} {}", engagement.describe()))
        .collect();
    info!("fast paths: {}", listed.join("; "));
    if let Ok(mut slot) = decided().write() {
        *slot = Some(decisions.clone());
    }
    decisions
}

/// Whether `path` is engaged. Before [`decide`] ran (unit tests that build peers
/// directly), the GStreamer fast paths follow the defaults and the SRTP primitives are
/// whatever the process installed.
pub fn engaged(path: FastPath) -> bool {
    if let Ok(slot) = decided().read()
        && let Some(decisions) = slot.as_ref()
    {
        return decisions.get(&path) == Some(&Engagement::Engaged);
    }
    match path {
        FastPath::SrtpPrimitives => {
            matches!(crate::webrtc::srtp_primitives_installed(), Some(Ok(())))
        }
        _ => untested_gstreamer().is_none(),
    }
}

/// Per-stream outcomes of the fast paths installed per stream (FEC bypass, the
/// sending-path shortcut): how many streams took it, how many did not and the last
/// reason, so that "engaged" cannot hide a fast path that stopped taking.
#[derive(Default)]
struct Streams {
    took: u64,
    refused: u64,
    last_refusal: Option<String>,
}

fn streams() -> &'static std::sync::Mutex<BTreeMap<FastPath, Streams>> {
    static STREAMS: std::sync::Mutex<BTreeMap<FastPath, Streams>> =
        std::sync::Mutex::new(BTreeMap::new());
    &STREAMS
}

/// Records whether a stream took `path` (`Err`: why not).
pub fn record(path: FastPath, outcome: Result<(), String>) {
    if let Ok(mut all) = streams().lock() {
        let entry = all.entry(path).or_default();
        match outcome {
            Ok(()) => entry.took += 1,
            Err(why) => {
                entry.refused += 1;
                entry.last_refusal = Some(why);
            }
        }
    }
}

fn stream_counts(path: FastPath) -> Option<String> {
    let all = streams().lock().ok()?;
    let entry = all.get(&path)?;
    let total = entry.took + entry.refused;
    Some(match &entry.last_refusal {
        Some(why) if entry.refused > 0 => {
            format!("{} of {total} streams; not taken: {why}", entry.took)
        }
        _ => format!("{} of {total} streams", entry.took),
    })
}

/// What the state snapshot says: each fast path, `engaged` or `off: <why>`, with how
/// many streams took it for those installed per stream.
pub fn snapshot() -> BTreeMap<String, String> {
    FastPath::ALL
        .into_iter()
        .map(|path| {
            let engagement = decided()
                .read()
                .ok()
                .and_then(|slot| slot.as_ref().and_then(|d| d.get(&path).cloned()))
                .unwrap_or_else(|| {
                    if engaged(path) {
                        Engagement::Engaged
                    } else {
                        Engagement::Off("not decided".to_owned())
                    }
                });
            let mut text = engagement.describe();
            if engagement == Engagement::Engaged
                && let Some(counts) = stream_counts(path)
            {
                text = format!("{text} ({counts})");
            }
            (path.key().to_owned(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switches_decide_and_this_gstreamer_was_checked() {
        crate::webrtc::init().unwrap();
        assert_eq!(
            untested_gstreamer(),
            None,
            "the tests run on a GStreamer the fast paths were checked on"
        );
        let off = MediaConfig {
            fast_paths: false,
            ..Default::default()
        };
        for path in [
            FastPath::FrameLists,
            FastPath::FecBypass,
            FastPath::SendingPathShortcut,
            FastPath::SharedSegment,
        ] {
            assert_eq!(
                decide_one(&off, path),
                Engagement::Off("turned off in [media]".into())
            );
            assert_eq!(
                decide_one(&MediaConfig::default(), path),
                Engagement::Engaged
            );
        }
        assert_eq!(
            Engagement::Off("x".into()).describe(),
            "off: x",
            "the snapshot's words"
        );
    }
}
