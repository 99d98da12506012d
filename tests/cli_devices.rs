//! `roomcast devices`, run as a process on this machine: whatever hardware it has (or
//! lacks), the command succeeds and tells the truth about it.

use std::path::Path;
use std::process::{Command, Output};

use roomcast::media::devices::{AudioSource, DeviceList};

fn roomcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(args)
        .env_remove("ROOMCAST_CONFIG")
        .output()
        .expect("run roomcast")
}

fn has_cameras() -> bool {
    std::fs::read_dir("/dev").is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("video"))
    })
}

#[test]
fn json_lists_the_encoders_and_what_auto_picks() {
    let out = roomcast(&["devices", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list: DeviceList = serde_json::from_slice(&out.stdout).expect("the output is a DeviceList");

    // The test machine has GStreamer's software encoders (scripts/apt-packages.txt).
    for element in ["x264enc", "openh264enc"] {
        let encoder = list
            .encoders
            .iter()
            .find(|e| e.element == element)
            .unwrap_or_else(|| panic!("{element} missing from {:?}", list.encoders));
        assert!(encoder.present && encoder.usable, "{encoder:?}");
        assert!(
            encoder.presets.iter().any(|p| p == "generic"),
            "{encoder:?}"
        );
    }
    // Every element the presets name is listed, present or not.
    assert!(list.encoders.iter().any(|e| e.element == "v4l2h264enc"));
    let hardware = list
        .encoders
        .iter()
        .any(|e| e.usable && e.element != "x264enc" && e.element != "openh264enc");
    let pi5 = list
        .board_model
        .as_deref()
        .is_some_and(|m| m.contains("Raspberry Pi 5"));
    if !hardware && !pi5 {
        assert_eq!(
            list.auto.element.as_deref(),
            Some("x264enc"),
            "{:?}",
            list.auto
        );
        assert_eq!(
            list.auto.preset.as_deref(),
            Some("generic"),
            "{:?}",
            list.auto
        );
    } else {
        assert!(list.auto.element.is_some(), "{:?}", list.auto);
    }

    if !Path::new("/dev/video0").exists() && !has_cameras() {
        assert!(list.cameras.is_empty(), "{:?}", list.cameras);
    }
    for camera in &list.cameras {
        assert!(camera.path.starts_with("/dev/video"), "{camera:?}");
        // Either it was looked at, or it says why not.
        assert!(
            camera.error.is_some() || camera.driver.is_some(),
            "{camera:?}"
        );
    }
    for device in list.audio_capture.iter().chain(&list.audio_playback) {
        assert!(!device.name.is_empty(), "{device:?}");
    }
}

#[test]
fn the_report_has_every_section_and_the_config_lines() {
    let out = roomcast(&["devices"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for section in [
        "Cameras and other V4L2 devices\n",
        "Audio capture (ALSA)\n",
        "Audio playback (ALSA)\n",
        "H.264 encoders (GStreamer)\n",
        "Configuration lines for this box\n",
        "  [sources.main]\n",
        "  preference = \"auto\"",
    ] {
        assert!(text.contains(section), "{section:?} missing:\n{text}");
    }
    assert!(text.contains("  x264enc "), "{text}");
    if !Path::new("/dev/video0").exists() && !has_cameras() {
        assert!(
            text.contains("Cameras and other V4L2 devices\n  none found"),
            "{text}"
        );
        assert!(text.contains("  video = \"test\""), "{text}");
    }
    // alsa-lib's own complaints (cards it cannot find) do not leak onto the terminal.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("ALSA lib"), "{err}");
}

#[test]
fn alsa_names_from_its_configuration_are_offered_for_capture_and_playback() {
    let system = Path::new("/usr/share/alsa/alsa.conf");
    if !system.exists() {
        eprintln!("skipped: no {}", system.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!("roomcast-cli-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "<{}>\npcm.classroom {{\n type null\n hint {{ show on description \"Classroom test PCM\" }}\n}}\n",
            system.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["devices", "--json"])
        .env("ALSA_CONFIG_PATH", &conf)
        .output()
        .expect("run roomcast");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list: DeviceList = serde_json::from_slice(&out.stdout).unwrap();
    for devices in [&list.audio_capture, &list.audio_playback] {
        let classroom = devices
            .iter()
            .find(|d| d.name == "classroom")
            .unwrap_or_else(|| panic!("no `classroom` in {devices:?}"));
        assert_eq!(classroom.description, "Classroom test PCM");
        assert_eq!(classroom.source, AudioSource::Hint);
        assert!(classroom.plug.is_none() && classroom.error.is_none());
    }
    // `null` is no microphone: the configuration refuses it as a source.
    assert!(!list.audio_capture.iter().any(|d| d.name == "null"));
}
