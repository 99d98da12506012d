//! What this box has to capture, play and encode with: the data behind `roomcast devices`.
//!
//! [`list`] never fails as a whole: a device that cannot be opened is listed with the
//! reason (and what to do about it), a missing subsystem (no `/dev/video*`, no
//! `/dev/snd`) gives an empty section. The operator copies the names it shows into the
//! configuration (`video`, `audio`, `player.audio_device`, `encoder.preference`).
//!
//! - cameras and other V4L2 nodes ([`video`]): driver, card, bus, what the node is
//!   (camera, M2M H.264 encoder, metadata, …) and, for capture queues, every format with
//!   its frame sizes and rates;
//! - ALSA capture and playback devices ([`audio`]): every card's PCM devices as
//!   `hw:CARD=…,DEV=…` (and the `plughw:` twin that converts rate and channels), then
//!   ALSA's own hints (`default`, `sysdefault:CARD=…`, `dsnoop:…`);
//! - the H.264 encoders the board presets know, whether GStreamer has them, and what
//!   `encoder.preference = "auto"` picks here.

mod audio;
mod video;

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::encoder;
use crate::config::EncoderPreference;

/// Why one device (or one kind of device) could not be looked at. It ends up as text in
/// the [`DeviceList`]; listing goes on with the next device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}: permission denied; add the service user to group `{group}`")]
    PermissionDenied {
        path: String,
        group: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {query} failed: {source}")]
    Query {
        path: String,
        query: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ALSA: {what}: {source}")]
    Alsa {
        what: String,
        #[source]
        source: alsa::Error,
    },
    #[error("GStreamer: {0}")]
    Gst(String),
}

impl DeviceError {
    /// An error opening `path`, with the group to join when it is a permission problem.
    fn open(path: &str, group: &'static str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            DeviceError::PermissionDenied {
                path: path.to_owned(),
                group,
                source,
            }
        } else {
            DeviceError::Open {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// Everything `roomcast devices` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    /// `/proc/device-tree/model`, on boards that have one.
    pub board_model: Option<String>,
    /// Every `/dev/video*` node, in number order.
    pub cameras: Vec<VideoDevice>,
    pub audio_capture: Vec<AudioDevice>,
    pub audio_playback: Vec<AudioDevice>,
    /// Every H.264 encoder element a board preset uses, in `auto`'s probing order.
    pub encoders: Vec<EncoderInfo>,
    /// What `encoder.preference = "auto"` picks on this box.
    pub auto: AutoChoice,
    /// Problems listing a whole kind of device (not one device: those carry their own).
    pub errors: Vec<String>,
}

/// One V4L2 node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoDevice {
    pub path: String,
    /// Stable names for the node (`/dev/v4l/by-id/…`, `/dev/v4l/by-path/…`).
    pub links: Vec<String>,
    /// The kernel's name for the node (sysfs), readable even when the node cannot be opened.
    pub name: Option<String>,
    pub card: Option<String>,
    pub driver: Option<String>,
    pub bus: Option<String>,
    pub kind: VideoKind,
    /// The node's V4L2 capability flags, e.g. `video_capture`, `streaming`.
    pub capabilities: Vec<String>,
    /// Whether frames can be captured from it (`v4l2src`).
    pub capture: bool,
    /// The formats of its capture queue (for an M2M device: what it produces).
    pub formats: Vec<VideoFormat>,
    /// Why it could not be opened or queried.
    pub error: Option<String>,
}

/// What a V4L2 node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoKind {
    /// A capture device: a camera, an HDMI grabber.
    Camera,
    /// A memory-to-memory H.264 encoder (`v4l2h264enc` drives it).
    M2mH264Encoder,
    /// A memory-to-memory encoder of another codec (JPEG, HEVC, …).
    M2mEncoder,
    M2mDecoder,
    /// A memory-to-memory converter or scaler (an ISP).
    M2mConverter,
    /// Per-frame metadata of a camera (UVC cameras have one such node each).
    Metadata,
    /// An image signal processor's node (Raspberry Pi `bcm2835-isp`, `pispbe`): it has a
    /// capture queue, but is fed by software, not by a camera.
    Isp,
    Other,
    /// Not known: the node could not be opened.
    Unknown,
}

impl VideoKind {
    fn label(self) -> &'static str {
        match self {
            VideoKind::Camera => "camera",
            VideoKind::M2mH264Encoder => "H.264 encoder (M2M)",
            VideoKind::M2mEncoder => "encoder (M2M)",
            VideoKind::M2mDecoder => "decoder (M2M)",
            VideoKind::M2mConverter => "converter (M2M)",
            VideoKind::Metadata => "metadata",
            VideoKind::Isp => "ISP",
            VideoKind::Other => "other",
            VideoKind::Unknown => "unknown",
        }
    }
}

/// One pixel or coded format of a capture queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoFormat {
    /// The V4L2 fourcc, e.g. `YUYV`, `MJPG`, `H264`.
    pub fourcc: String,
    pub description: String,
    pub compressed: bool,
    pub sizes: Vec<FrameSize>,
    /// Why the sizes could not be listed.
    pub error: Option<String>,
}

/// A frame size a format offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FrameSize {
    Discrete {
        width: u32,
        height: u32,
        rates: FrameRates,
    },
    /// Any size in the range, in the steps given (rates depend on the size chosen).
    Stepwise {
        min_width: u32,
        max_width: u32,
        step_width: u32,
        min_height: u32,
        max_height: u32,
        step_height: u32,
    },
}

/// The frame rates at one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FrameRates {
    Discrete {
        fps: Vec<Fps>,
    },
    Range {
        min: Fps,
        max: Fps,
    },
    /// The driver does not say.
    Unknown,
}

/// Frames per second as a fraction (`30/1`, `15/2`, `30000/1001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fps {
    pub num: u32,
    pub den: u32,
}

impl fmt::Display for Fps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 0 {
            return f.write_str("?");
        }
        if self.num.is_multiple_of(self.den) {
            return write!(f, "{}", self.num / self.den);
        }
        let text = format!("{:.2}", f64::from(self.num) / f64::from(self.den));
        f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// One ALSA PCM device, under a name the configuration accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioDevice {
    /// `hw:CARD=C920,DEV=0`, or a hint's name (`default`, `sysdefault:CARD=C920`).
    pub name: String,
    /// The `plughw:` twin of a hardware device: converts rate, format and channels.
    pub plug: Option<String>,
    pub description: String,
    pub source: AudioSource,
    pub card: Option<u32>,
    /// The card's id, stable across reboots (`C920`, `PCH`).
    pub card_id: Option<String>,
    pub device: Option<u32>,
    /// Why the card or device could not be looked at.
    pub error: Option<String>,
}

/// Where an ALSA name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioSource {
    /// A card's PCM device, found through its control interface.
    Hardware,
    /// ALSA's configuration (`snd_device_name_hint`): plugins such as `default` or `dsnoop`.
    Hint,
}

/// One H.264 encoder element the presets use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderInfo {
    pub element: String,
    /// The presets (`gst/*.toml`) that use it.
    pub presets: Vec<String>,
    /// Whether GStreamer has the element here.
    pub present: bool,
    /// A converter element it needs in front of it (Jetson: `nvvidconv`).
    pub needs: Option<String>,
    /// Present, and so is what it needs.
    pub usable: bool,
}

/// What `auto` picks: the element and its preset, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoChoice {
    pub element: Option<String>,
    pub preset: Option<String>,
    pub error: Option<String>,
}

/// Looks at every device. Initialises GStreamer if the caller has not.
pub fn list() -> DeviceList {
    let mut errors = Vec::new();
    let board_model = encoder::board_model();
    let cameras = video::list(&mut errors);
    let (audio_capture, audio_playback) = audio::list(&mut errors);
    let (encoders, auto) = encoders(board_model.as_deref(), &mut errors);
    DeviceList {
        board_model,
        cameras,
        audio_capture,
        audio_playback,
        encoders,
        auto,
        errors,
    }
}

fn encoders(model: Option<&str>, errors: &mut Vec<String>) -> (Vec<EncoderInfo>, AutoChoice) {
    let failed = |error: String| AutoChoice {
        element: None,
        preset: None,
        error: Some(error),
    };
    if let Err(e) = crate::webrtc::init() {
        let e = DeviceError::Gst(e.to_string()).to_string();
        errors.push(e.clone());
        return (Vec::new(), failed(e));
    }
    let presets = match encoder::presets() {
        Ok(presets) => presets,
        Err(e) => {
            let e = e.to_string();
            errors.push(e.clone());
            return (Vec::new(), failed(e));
        }
    };
    let mut out: Vec<EncoderInfo> = Vec::new();
    for preset in &presets {
        for spec in &preset.encoder {
            if let Some(known) = out.iter_mut().find(|e| e.element == spec.element) {
                known.presets.push(preset.name.clone());
                continue;
            }
            let present = encoder::element_exists(&spec.element);
            let needs = spec.convert.clone();
            let usable = present && needs.as_deref().is_none_or(encoder::element_exists);
            out.push(EncoderInfo {
                element: spec.element.clone(),
                presets: vec![preset.name.clone()],
                present,
                needs,
                usable,
            });
        }
    }
    let auto = match encoder::select(EncoderPreference::Auto, model, encoder::element_exists) {
        Ok(selected) => AutoChoice {
            element: Some(selected.spec.element),
            preset: Some(selected.preset),
            error: None,
        },
        Err(e) => failed(e.to_string()),
    };
    (out, auto)
}

/// Text up to the first NUL of a fixed-size C buffer, as UTF-8 (drivers may cut a
/// multi-byte character in half at the end of the buffer).
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

/// Rows of cells, each column padded to its widest cell. A row's last cell is not padded
/// and does not widen its column (so a lone heading or comment does not push the others).
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

impl DeviceList {
    /// The camera to suggest for `video`: USB (UVC) cameras first, then capture devices
    /// with fixed frame sizes (cameras, grabbers), in node order.
    pub fn first_camera(&self) -> Option<&VideoDevice> {
        let discrete = |d: &VideoDevice| {
            d.formats.iter().any(|f| {
                f.sizes
                    .iter()
                    .any(|s| matches!(s, FrameSize::Discrete { .. }))
            })
        };
        self.cameras
            .iter()
            .filter(|d| d.kind == VideoKind::Camera && d.error.is_none() && !d.formats.is_empty())
            .min_by_key(|d| (d.driver.as_deref() != Some("uvcvideo"), !discrete(d)))
    }

    fn render_cameras(&self, out: &mut String) {
        out.push_str("Cameras and other V4L2 devices\n");
        if self.cameras.is_empty() {
            out.push_str("  none found (no /dev/video* device on this machine)\n");
            return;
        }
        let headers: Vec<Vec<String>> = self
            .cameras
            .iter()
            .map(|d| {
                let what = match &d.error {
                    Some(e) => e.clone(),
                    None => {
                        let mut what = format!(
                            "{}  [{}]",
                            d.card.as_deref().or(d.name.as_deref()).unwrap_or("?"),
                            d.kind.label()
                        );
                        let origin: Vec<&str> = [d.driver.as_deref(), d.bus.as_deref()]
                            .into_iter()
                            .flatten()
                            .filter(|s| !s.is_empty())
                            .collect();
                        if !origin.is_empty() {
                            let _ = write!(what, "  {}", origin.join(", "));
                        }
                        what
                    }
                };
                vec![d.path.clone(), what]
            })
            .collect();
        let width = headers.iter().map(|h| h[0].len()).max().unwrap_or(0);
        for (device, header) in self.cameras.iter().zip(headers.iter()) {
            let _ = writeln!(out, "  {:<width$}  {}", header[0], header[1]);
            for link in &device.links {
                let _ = writeln!(out, "      also {link}");
            }
            if device.kind != VideoKind::Camera && device.error.is_none() {
                // An encoder's or a metadata node's formats are not something to configure.
                let fourccs: Vec<&str> = device.formats.iter().map(|f| f.fourcc.as_str()).collect();
                if !fourccs.is_empty() {
                    let _ = writeln!(out, "      formats: {}", fourccs.join(", "));
                }
                continue;
            }
            if device.error.is_none() && device.formats.is_empty() {
                out.push_str("      no capture formats\n");
            }
            for format in &device.formats {
                let compressed = if format.compressed {
                    "  (compressed)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "      {:<4}  {}{compressed}",
                    format.fourcc, format.description
                );
                if let Some(e) = &format.error {
                    let _ = writeln!(out, "          sizes unknown: {e}");
                }
                let rows: Vec<Vec<String>> = format.sizes.iter().map(size_row).collect();
                table(out, "          ", &rows);
            }
        }
    }

    fn has_sound_card(&self) -> bool {
        self.audio_capture
            .iter()
            .chain(&self.audio_playback)
            .any(|d| d.source == AudioSource::Hardware)
    }

    fn render_audio(&self, out: &mut String, title: &str, devices: &[AudioDevice]) {
        let _ = writeln!(out, "{title}");
        if devices.is_empty() {
            out.push_str(if self.has_sound_card() {
                "  none found (the sound cards here have none)\n"
            } else {
                "  none found (no sound card on this machine)\n"
            });
            return;
        }
        let rows: Vec<Vec<String>> = devices
            .iter()
            .map(|d| match &d.error {
                Some(e) => vec![d.name.clone(), String::new(), e.clone()],
                None => vec![
                    d.name.clone(),
                    d.plug.clone().unwrap_or_default(),
                    d.description.clone(),
                ],
            })
            .collect();
        table(out, "  ", &rows);
        if !devices.iter().any(|d| d.source == AudioSource::Hardware) {
            out.push_str("  (no sound card found: these are ALSA's software devices only)\n");
        }
    }

    fn render_encoders(&self, out: &mut String) {
        out.push_str("H.264 encoders (GStreamer)\n");
        if self.encoders.is_empty() {
            out.push_str("  none found\n");
        }
        let rows: Vec<Vec<String>> = self
            .encoders
            .iter()
            .map(|e| {
                let state = match (e.present, e.usable) {
                    (true, true) => "present",
                    (true, false) => "present, but its converter is missing",
                    (false, _) => "missing",
                };
                let mut presets = e.presets.join(", ");
                if let Some(needs) = &e.needs {
                    let _ = write!(presets, " (needs {needs})");
                }
                vec![e.element.clone(), state.to_owned(), presets]
            })
            .collect();
        table(out, "  ", &rows);
        match (&self.auto.element, &self.auto.preset, &self.auto.error) {
            (Some(element), Some(preset), _) => {
                let _ = writeln!(out, "  auto picks {element} (preset {preset})");
            }
            (_, _, error) => {
                let _ = writeln!(
                    out,
                    "  auto picks nothing: {}",
                    error.as_deref().unwrap_or("no encoder")
                );
            }
        }
    }

    fn render_config(&self, out: &mut String) {
        out.push_str("Configuration lines for this box\n");
        let mut rows: Vec<Vec<String>> = vec![vec!["[sources.main]".into()]];
        let mut stable_link = None;
        match self.first_camera() {
            Some(camera) => {
                rows.push(vec![
                    format!("video = \"{}\"", camera.path),
                    format!("# {}", camera.card.as_deref().unwrap_or("camera")),
                ]);
                stable_link = camera.links.iter().find(|l| l.contains("/by-id/"));
            }
            None => rows.push(vec![
                "video = \"test\"".into(),
                "# no camera found: a moving test pattern".into(),
            ]),
        }
        let microphone = self
            .audio_capture
            .iter()
            .find(|d| d.source == AudioSource::Hardware && d.error.is_none());
        match microphone {
            Some(mic) => rows.push(vec![
                format!("audio = \"{}\"", mic.plug.as_deref().unwrap_or(&mic.name)),
                format!("# {}", mic.description),
            ]),
            None => rows.push(vec![
                "audio = \"none\"".into(),
                "# no microphone found (\"test\" sends a tone)".into(),
            ]),
        }
        rows.push(vec!["[encoder]".into()]);
        rows.push(vec![
            "preference = \"auto\"".into(),
            match &self.auto.element {
                Some(element) => format!("# picks {element} here"),
                None => "# finds no H.264 encoder here: install gstreamer1.0-plugins-ugly".into(),
            },
        ]);
        let speaker = self
            .audio_playback
            .iter()
            .find(|d| d.source == AudioSource::Hardware && d.error.is_none());
        let has_default = self.audio_playback.iter().any(|d| d.name == "default");
        rows.push(vec!["[player]".into()]);
        match (speaker, has_default) {
            (Some(speaker), _) => rows.push(vec![
                format!(
                    "audio_device = \"{}\"",
                    speaker.plug.as_deref().unwrap_or(&speaker.name)
                ),
                format!("# {}", speaker.description),
            ]),
            (None, true) => rows.push(vec![
                "audio_device = \"default\"".into(),
                "# no sound card found: ALSA's default".into(),
            ]),
            (None, false) => rows.push(vec!["# audio_device: no playback device found".into()]),
        }
        table(out, "  ", &rows);
        if let Some(link) = stable_link {
            let _ = writeln!(
                out,
                "  # the same camera under a name that survives reboots and replugging:\n  # video = \"{link}\""
            );
        }
    }
}

fn size_row(size: &FrameSize) -> Vec<String> {
    match size {
        FrameSize::Discrete {
            width,
            height,
            rates,
        } => vec![format!("{width}x{height}"), rates.to_string()],
        FrameSize::Stepwise {
            min_width,
            max_width,
            step_width,
            min_height,
            max_height,
            step_height,
        } => vec![
            format!("{min_width}x{min_height} to {max_width}x{max_height}"),
            format!("in steps of {step_width}x{step_height}"),
        ],
    }
}

impl fmt::Display for FrameRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameRates::Discrete { fps } if fps.is_empty() => f.write_str("fps unknown"),
            FrameRates::Discrete { fps } => {
                let list: Vec<String> = fps.iter().map(Fps::to_string).collect();
                write!(f, "{} fps", list.join(", "))
            }
            FrameRates::Range { min, max } => write!(f, "{min} to {max} fps"),
            FrameRates::Unknown => f.write_str("fps unknown"),
        }
    }
}

/// The human-readable report: one section per kind of device, "none found" where there
/// is none, and the configuration lines to use.
impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Board: {}\n",
            self.board_model
                .as_deref()
                .unwrap_or("unknown (no /proc/device-tree/model)")
        );
        self.render_cameras(&mut out);
        out.push('\n');
        self.render_audio(&mut out, "Audio capture (ALSA)", &self.audio_capture);
        out.push('\n');
        self.render_audio(&mut out, "Audio playback (ALSA)", &self.audio_playback);
        out.push('\n');
        self.render_encoders(&mut out);
        if !self.errors.is_empty() {
            out.push_str("\nProblems\n");
            for e in &self.errors {
                let _ = writeln!(out, "  {e}");
            }
        }
        out.push('\n');
        self.render_config(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> DeviceList {
        DeviceList {
            board_model: None,
            cameras: vec![],
            audio_capture: vec![],
            audio_playback: vec![],
            encoders: vec![],
            auto: AutoChoice {
                element: None,
                preset: None,
                error: Some("no H.264 encoder found".into()),
            },
            errors: vec![],
        }
    }

    fn camera() -> VideoDevice {
        VideoDevice {
            path: "/dev/video0".into(),
            links: vec!["/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index0".into()],
            name: Some("HD Pro Webcam C920".into()),
            card: Some("HD Pro Webcam C920".into()),
            driver: Some("uvcvideo".into()),
            bus: Some("usb-0000:00:14.0-1".into()),
            kind: VideoKind::Camera,
            capabilities: vec!["video_capture".into(), "streaming".into()],
            capture: true,
            formats: vec![
                VideoFormat {
                    fourcc: "YUYV".into(),
                    description: "YUYV 4:2:2".into(),
                    compressed: false,
                    sizes: vec![
                        FrameSize::Discrete {
                            width: 640,
                            height: 480,
                            rates: FrameRates::Discrete {
                                fps: vec![Fps { num: 30, den: 1 }, Fps { num: 15, den: 2 }],
                            },
                        },
                        FrameSize::Discrete {
                            width: 1280,
                            height: 720,
                            rates: FrameRates::Discrete {
                                fps: vec![Fps { num: 10, den: 1 }],
                            },
                        },
                    ],
                    error: None,
                },
                VideoFormat {
                    fourcc: "MJPG".into(),
                    description: "Motion-JPEG".into(),
                    compressed: true,
                    sizes: vec![FrameSize::Stepwise {
                        min_width: 160,
                        max_width: 1920,
                        step_width: 16,
                        min_height: 120,
                        max_height: 1080,
                        step_height: 8,
                    }],
                    error: None,
                },
            ],
            error: None,
        }
    }

    fn mic(name: &str, plug: Option<&str>, source: AudioSource) -> AudioDevice {
        AudioDevice {
            name: name.into(),
            plug: plug.map(Into::into),
            description: "HD Pro Webcam C920: USB Audio".into(),
            source,
            card: Some(1),
            card_id: Some("C920".into()),
            device: Some(0),
            error: None,
        }
    }

    #[test]
    fn frame_rates_read_like_numbers() {
        let fps = |num, den| Fps { num, den }.to_string();
        assert_eq!(fps(30, 1), "30");
        assert_eq!(fps(60, 2), "30");
        assert_eq!(fps(15, 2), "7.5");
        assert_eq!(fps(30000, 1001), "29.97");
        assert_eq!(fps(1, 0), "?");
        let rates = FrameRates::Discrete {
            fps: vec![Fps { num: 30, den: 1 }, Fps { num: 15, den: 2 }],
        };
        assert_eq!(rates.to_string(), "30, 7.5 fps");
        let range = FrameRates::Range {
            min: Fps { num: 1, den: 1 },
            max: Fps { num: 60, den: 1 },
        };
        assert_eq!(range.to_string(), "1 to 60 fps");
    }

    #[test]
    fn c_buffers_stop_at_nul_and_survive_cut_characters() {
        assert_eq!(c_text(b"uvcvideo\0\0\0\0"), "uvcvideo");
        assert_eq!(c_text(b"no nul"), "no nul");
        // "Caméra" cut inside the two-byte é.
        assert_eq!(c_text(&[b'C', b'a', b'm', 0xc3, 0]), "Cam\u{fffd}");
    }

    #[test]
    fn nothing_found_says_so_in_every_section_and_suggests_test_sources() {
        let text = empty().to_string();
        for section in [
            "Cameras and other V4L2 devices\n  none found",
            "Audio capture (ALSA)\n  none found",
            "Audio playback (ALSA)\n  none found",
            "H.264 encoders (GStreamer)\n  none found",
        ] {
            assert!(text.contains(section), "{section}:\n{text}");
        }
        assert!(
            text.contains("auto picks nothing: no H.264 encoder found"),
            "{text}"
        );
        assert!(text.contains("video = \"test\""), "{text}");
        assert!(text.contains("audio = \"none\""), "{text}");
        assert!(
            text.contains("# audio_device: no playback device found"),
            "{text}"
        );
    }

    #[test]
    fn a_camera_and_a_microphone_become_the_suggested_config() {
        let mut list = empty();
        list.cameras.push(camera());
        list.cameras.push(VideoDevice {
            path: "/dev/video11".into(),
            links: vec![],
            name: None,
            card: Some("bcm2835-codec-encode".into()),
            driver: Some("bcm2835-codec".into()),
            bus: Some("platform:bcm2835-codec".into()),
            kind: VideoKind::M2mH264Encoder,
            capabilities: vec!["video_m2m_mplane".into()],
            capture: false,
            formats: vec![VideoFormat {
                fourcc: "H264".into(),
                description: "H.264".into(),
                compressed: true,
                sizes: vec![],
                error: None,
            }],
            error: None,
        });
        list.cameras.push(VideoDevice {
            path: "/dev/video2".into(),
            links: vec![],
            name: Some("HD Pro Webcam C920".into()),
            card: None,
            driver: None,
            bus: None,
            kind: VideoKind::Unknown,
            capabilities: vec![],
            capture: false,
            formats: vec![],
            error: Some(
                "cannot open /dev/video2: permission denied; add the service user to group `video`"
                    .into(),
            ),
        });
        list.audio_capture.push(mic(
            "hw:CARD=C920,DEV=0",
            Some("plughw:CARD=C920,DEV=0"),
            AudioSource::Hardware,
        ));
        list.audio_capture
            .push(mic("sysdefault:CARD=C920", None, AudioSource::Hint));
        list.audio_playback
            .push(mic("default", None, AudioSource::Hint));
        list.encoders.push(EncoderInfo {
            element: "x264enc".into(),
            presets: vec!["pi5".into(), "generic".into()],
            present: true,
            needs: None,
            usable: true,
        });
        list.auto = AutoChoice {
            element: Some("x264enc".into()),
            preset: Some("generic".into()),
            error: None,
        };
        let text = list.to_string();
        assert!(
            text.contains(
                "  /dev/video0   HD Pro Webcam C920  [camera]  uvcvideo, usb-0000:00:14.0-1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  /dev/video11  bcm2835-codec-encode  [H.264 encoder (M2M)]"),
            "{text}"
        );
        assert!(text.contains("      formats: H264\n"), "{text}");
        assert!(text.contains("group `video`"), "{text}");
        assert!(text.contains("      YUYV  YUYV 4:2:2\n"), "{text}");
        assert!(text.contains("          640x480   30, 7.5 fps\n"), "{text}");
        assert!(text.contains("          1280x720  10 fps\n"), "{text}");
        assert!(
            text.contains("      MJPG  Motion-JPEG  (compressed)\n"),
            "{text}"
        );
        assert!(
            text.contains("160x120 to 1920x1080  in steps of 16x8"),
            "{text}"
        );
        assert!(
            text.contains(
                "  hw:CARD=C920,DEV=0    plughw:CARD=C920,DEV=0  HD Pro Webcam C920: USB Audio\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  x264enc  present  pi5, generic\n"),
            "{text}"
        );
        assert!(
            text.contains("  auto picks x264enc (preset generic)"),
            "{text}"
        );
        assert!(text.contains("  video = \"/dev/video0\"   "), "{text}");
        assert!(
            text.contains("  audio = \"plughw:CARD=C920,DEV=0\""),
            "{text}"
        );
        assert!(text.contains("  audio_device = \"default\""), "{text}");
        assert!(
            text.contains("# video = \"/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index0\""),
            "{text}"
        );
        assert!(!text.contains("none found"), "{text}");
        // Playback has only a hint: the operator is told there is no card.
        assert!(text.contains("ALSA's software devices only"), "{text}");
    }

    #[test]
    fn the_suggested_camera_is_a_usb_camera_before_other_capture_nodes() {
        let mut list = empty();
        let mut grabber = camera();
        grabber.path = "/dev/video0".into();
        grabber.driver = Some("tc358743".into());
        grabber.formats[0].sizes = vec![FrameSize::Stepwise {
            min_width: 64,
            max_width: 1920,
            step_width: 2,
            min_height: 64,
            max_height: 1080,
            step_height: 2,
        }];
        grabber.formats.truncate(1);
        let mut isp = camera();
        isp.path = "/dev/video14".into();
        isp.kind = VideoKind::Isp;
        let mut usb = camera();
        usb.path = "/dev/video20".into();
        list.cameras = vec![grabber.clone(), isp.clone()];
        assert_eq!(
            list.first_camera().map(|c| c.path.as_str()),
            Some("/dev/video0")
        );
        list.cameras.push(usb);
        assert_eq!(
            list.first_camera().map(|c| c.path.as_str()),
            Some("/dev/video20")
        );
        list.cameras = vec![isp];
        assert_eq!(list.first_camera(), None);
        assert!(list.to_string().contains("video = \"test\""));
    }

    #[test]
    fn the_list_round_trips_through_json() {
        let mut list = empty();
        list.cameras.push(camera());
        let json = serde_json::to_string(&list).unwrap();
        assert!(json.contains(r#""type":"discrete""#), "{json}");
        assert!(json.contains(r#""kind":"camera""#), "{json}");
        let back: DeviceList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn listing_this_machine_never_fails() {
        let list = list();
        // Whatever the machine has, the encoders the presets know are all listed.
        assert!(list.encoders.iter().any(|e| e.element == "x264enc"));
        assert!(list.encoders.iter().any(|e| e.element == "v4l2h264enc"));
        let _ = list.to_string();
    }
}
