//! ALSA devices, through the `alsa` crate: every card's PCM devices (by the card's id,
//! which survives reboots, unlike its index), then the names ALSA's configuration offers
//! (`default`, `sysdefault:CARD=…`, `dsnoop:…`), as `arecord -L` / `aplay -L` list them.

use std::collections::BTreeSet;
use std::fs;

use alsa::Direction;
use alsa::ctl::{Ctl, DeviceIter};
use alsa::device_name::HintIter;

use super::{AudioDevice, AudioSource, DeviceError};

/// The capture and the playback devices. A card that cannot be opened appears in both,
/// with the reason.
pub(super) fn list(errors: &mut Vec<String>) -> (Vec<AudioDevice>, Vec<AudioDevice>) {
    // alsa-lib prints its own complaints (a card it cannot open, a name it cannot expand)
    // straight to stderr. The list carries the reasons already: on this thread they go to
    // a buffer, and from there to the debug log.
    let quiet = alsa::Output::local_error_handler().ok();
    let mut capture = Vec::new();
    let mut playback = Vec::new();
    for index in card_indexes(errors) {
        card(index, &mut capture, &mut playback);
    }
    hints(errors, &mut capture, &mut playback);
    if let Some(buffer) = quiet {
        let said = buffer.borrow().to_string();
        if !said.is_empty() {
            tracing::debug!("alsa-lib said while listing devices: {}", said.trim_end());
        }
    }
    (capture, playback)
}

/// Cards ALSA lists, plus any `/dev/snd/controlCN` it skipped (it skips cards whose
/// control device this user may not open: those are the ones to explain).
fn card_indexes(errors: &mut Vec<String>) -> Vec<u32> {
    let mut found = BTreeSet::new();
    for card in alsa::card::Iter::new() {
        match card {
            Ok(card) => {
                if let Ok(index) = u32::try_from(card.get_index()) {
                    found.insert(index);
                }
            }
            Err(source) => {
                errors.push(
                    DeviceError::Alsa {
                        what: "listing the sound cards".into(),
                        source,
                    }
                    .to_string(),
                );
                break;
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/dev/snd") {
        for entry in entries.filter_map(Result::ok) {
            if let Some(index) = entry.file_name().to_str().and_then(control_index) {
                found.insert(index);
            }
        }
    }
    found.into_iter().collect()
}

/// N of a `controlCN` node name.
fn control_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("controlC")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn failed(name: String, card: u32, error: DeviceError) -> AudioDevice {
    AudioDevice {
        name,
        plug: None,
        description: String::new(),
        source: AudioSource::Hardware,
        card: Some(card),
        card_id: None,
        device: None,
        error: Some(error.to_string()),
    }
}

/// An ALSA error opening a device node, with the group to join for permission problems.
fn open_error(path: &str, error: &alsa::Error) -> DeviceError {
    DeviceError::open(
        path,
        "audio",
        std::io::Error::from_raw_os_error(error.errno()),
    )
}

fn card(index: u32, capture: &mut Vec<AudioDevice>, playback: &mut Vec<AudioDevice>) {
    let control = format!("/dev/snd/controlC{index}");
    let both = |capture: &mut Vec<AudioDevice>, playback: &mut Vec<AudioDevice>, e: DeviceError| {
        let entry = failed(format!("hw:{index}"), index, e);
        capture.push(entry.clone());
        playback.push(entry);
    };
    let ctl = match Ctl::new(&format!("hw:{index}"), false) {
        Ok(ctl) => ctl,
        Err(e) => return both(capture, playback, open_error(&control, &e)),
    };
    let info = match ctl.card_info() {
        Ok(info) => info,
        Err(source) => {
            let e = DeviceError::Alsa {
                what: format!("card {index}: reading its name"),
                source,
            };
            return both(capture, playback, e);
        }
    };
    let id = match info.get_id() {
        Ok(id) if !id.is_empty() => id.to_owned(),
        _ => index.to_string(),
    };
    let card_name = info.get_name().unwrap_or_default().to_owned();
    for device in DeviceIter::new(&ctl) {
        let Ok(device) = u32::try_from(device) else {
            continue;
        };
        for direction in [Direction::Capture, Direction::Playback] {
            let list = match direction {
                Direction::Capture => &mut *capture,
                Direction::Playback => &mut *playback,
            };
            let name = format!("hw:CARD={id},DEV={device}");
            match ctl.pcm_info(device, 0, direction) {
                Ok(pcm) => list.push(AudioDevice {
                    plug: Some(format!("plug{name}")),
                    name,
                    description: describe(&card_name, pcm.get_name().unwrap_or_default()),
                    source: AudioSource::Hardware,
                    card: Some(index),
                    card_id: Some(id.clone()),
                    device: Some(device),
                    error: None,
                }),
                // The device has no stream in this direction.
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(source) => {
                    let mut entry = failed(
                        name,
                        index,
                        DeviceError::Alsa {
                            what: format!("card {id} device {device}"),
                            source,
                        },
                    );
                    entry.card_id = Some(id.clone());
                    entry.device = Some(device);
                    list.push(entry);
                }
            }
        }
    }
}

fn describe(card: &str, pcm: &str) -> String {
    match (card.is_empty(), pcm.is_empty()) {
        (_, true) => card.to_owned(),
        (true, false) => pcm.to_owned(),
        (false, false) => format!("{card}: {pcm}"),
    }
}

/// ALSA's own names for PCMs (its plugins), minus `hw:` and `plughw:`, which the cards
/// above already gave.
fn hints(
    errors: &mut Vec<String>,
    capture: &mut Vec<AudioDevice>,
    playback: &mut Vec<AudioDevice>,
) {
    let hints = match HintIter::new_str(None, "pcm") {
        Ok(hints) => hints,
        Err(source) => {
            errors.push(
                DeviceError::Alsa {
                    what: "listing PCM names".into(),
                    source,
                }
                .to_string(),
            );
            return;
        }
    };
    for hint in hints {
        let Some(name) = hint.name else { continue };
        let parsed = parse_alsa_name(&name);
        if matches!(parsed.plugin, "hw" | "plughw") {
            continue;
        }
        let card_id = parsed.card.map(str::to_owned);
        let card = capture
            .iter()
            .chain(playback.iter())
            .find(|d| d.card_id.is_some() && d.card_id == card_id)
            .and_then(|d| d.card);
        let entry = AudioDevice {
            plug: None,
            description: one_line(hint.desc.as_deref().unwrap_or_default()),
            source: AudioSource::Hint,
            card,
            card_id,
            device: parsed.device,
            error: None,
            name,
        };
        match hint.direction {
            Some(Direction::Capture) => capture.push(entry),
            Some(Direction::Playback) => playback.push(entry),
            None => {
                // `null` "captures" silence as fast as it is read: the configuration
                // refuses it as a source, so it is not offered as one.
                if entry.name != "null" {
                    capture.push(entry.clone());
                }
                playback.push(entry);
            }
        }
    }
}

/// A hint's description on one line: ALSA puts the card and the purpose on separate
/// lines (`HD Pro Webcam C920, USB Audio\nDefault Audio Device`).
fn one_line(desc: &str) -> String {
    desc.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unquote(value: &str) -> &str {
    value.trim_matches('"').trim_matches('\'')
}

/// The parts of an ALSA PCM name: `sysdefault:CARD=C920`, `hw:CARD=C920,DEV=0`, `hw:1,0`,
/// `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlsaName<'a> {
    pub plugin: &'a str,
    pub card: Option<&'a str>,
    pub device: Option<u32>,
}

pub fn parse_alsa_name(name: &str) -> AlsaName<'_> {
    let (plugin, args) = name.split_once(':').unwrap_or((name, ""));
    let mut parsed = AlsaName {
        plugin,
        card: None,
        device: None,
    };
    for (position, arg) in args.split(',').filter(|a| !a.is_empty()).enumerate() {
        match arg.split_once('=') {
            Some(("CARD", value)) => parsed.card = Some(unquote(value)),
            Some(("DEV", value)) => parsed.device = unquote(value).parse().ok(),
            Some(_) => {}
            None if position == 0 => parsed.card = Some(arg),
            None if position == 1 => parsed.device = unquote(arg).parse().ok(),
            None => {}
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (&str, Option<&str>, Option<u32>) {
        let parsed = parse_alsa_name(text);
        (parsed.plugin, parsed.card, parsed.device)
    }

    #[test]
    fn alsa_names_parse_into_plugin_card_and_device() {
        assert_eq!(parts("default"), ("default", None, None));
        assert_eq!(parts("null"), ("null", None, None));
        assert_eq!(
            parts("sysdefault:CARD=C920"),
            ("sysdefault", Some("C920"), None)
        );
        assert_eq!(parts("hw:CARD=C920,DEV=0"), ("hw", Some("C920"), Some(0)));
        assert_eq!(
            parts("dsnoop:CARD=PCH,DEV=2"),
            ("dsnoop", Some("PCH"), Some(2))
        );
        assert_eq!(parts("hw:1,0"), ("hw", Some("1"), Some(0)));
        assert_eq!(parts("plughw:1"), ("plughw", Some("1"), None));
        assert_eq!(
            parts("hw:CARD=\"C920\",DEV=\"3\""),
            ("hw", Some("C920"), Some(3))
        );
        assert_eq!(
            parts("surround51:CARD=PCH,DEV=0,SUBDEV=1"),
            ("surround51", Some("PCH"), Some(0))
        );
    }

    #[test]
    fn hint_descriptions_become_one_line() {
        assert_eq!(
            one_line("HD Pro Webcam C920, USB Audio\nDefault Audio Device"),
            "HD Pro Webcam C920, USB Audio, Default Audio Device"
        );
        assert_eq!(
            one_line("Discard all samples (playback) or generate zero samples (capture)"),
            "Discard all samples (playback) or generate zero samples (capture)"
        );
        assert_eq!(one_line("  a \n\n b  "), "a, b");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn card_and_pcm_names_combine() {
        assert_eq!(
            describe("HD Pro Webcam C920", "USB Audio"),
            "HD Pro Webcam C920: USB Audio"
        );
        assert_eq!(describe("PCH", ""), "PCH");
        assert_eq!(describe("", "USB Audio"), "USB Audio");
    }

    #[test]
    fn control_nodes_give_card_numbers() {
        assert_eq!(control_index("controlC0"), Some(0));
        assert_eq!(control_index("controlC12"), Some(12));
        assert_eq!(control_index("controlC"), None);
        assert_eq!(control_index("pcmC0D0c"), None);
        assert_eq!(control_index("timer"), None);
    }

    #[test]
    fn a_card_that_cannot_be_opened_says_why_in_both_lists() {
        let (mut capture, mut playback) = (Vec::new(), Vec::new());
        let _quiet = alsa::Output::local_error_handler();
        // No machine has 99 sound cards.
        card(99, &mut capture, &mut playback);
        assert_eq!(capture.len(), 1);
        assert_eq!(capture, playback);
        assert_eq!(capture[0].name, "hw:99");
        let error = capture[0].error.as_deref().unwrap();
        assert!(
            error.starts_with("cannot open /dev/snd/controlC99:"),
            "{error}"
        );
        let denied = open_error(
            "/dev/snd/controlC0",
            &alsa::Error::new("snd_ctl_open", libc::EACCES),
        );
        assert!(
            denied
                .to_string()
                .ends_with("permission denied; add the service user to group `audio`"),
            "{denied}"
        );
    }
}
