use std::path::Path;

use super::*;
use crate::engine::RoomMode;

const EXAMPLE: &str = include_str!("../../config/roomcast.example.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

/// The smallest valid file.
const MINIMAL: &str = r#"
device_id = "box-1"
[identity]
user_id = "box-1"
user_name = "Box one"
[sources.main]
video = "test"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[janus]
url = "ws://127.0.0.1:8188"
"#;

fn error_text(text: &str) -> String {
    parse(text).expect_err("should be refused").to_string()
}

#[test]
fn the_example_is_valid_and_complete() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.device_id, "box-17");
    assert_eq!(config.rooms.mode, RoomMode::Multi);
    assert_eq!(config.rooms.max_rooms, 5);
    assert!(config.rooms.multi_room_enabled);
    assert_eq!(config.rooms.allowed, ["bigclass", "group-*"]);
    assert_eq!(config.sources.main.video, VideoInput::Test);
    assert_eq!(config.sources.main.audio, AudioInput::Test);
    assert_eq!(config.mqtt.url.port, 1883);
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    let summary = config.summary();
    assert!(
        summary.contains("box-17") && summary.contains("multi-room"),
        "{summary}"
    );
}

#[test]
fn defaults_are_sensible() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.rooms.mode, RoomMode::Single);
    assert_eq!(config.rooms.max_rooms, 5);
    assert!(!config.rooms.multi_room_enabled);
    assert!(config.rooms.allowed.is_empty(), "every room by default");
    assert!(config.engine_settings().allowed_rooms.is_any());
    assert_eq!(config.state_dir, Path::new("/var/lib/roomcast"));
    assert_eq!(
        (config.sources.main.width, config.sources.main.height),
        (1280, 720)
    );
    assert_eq!(config.sources.main.audio, AudioInput::None);
    assert_eq!(config.encoder.preference, EncoderPreference::Auto);
    assert_eq!(config.mqtt.topic_prefix, "roomcast");
    assert!(config.janus.create_rooms);
    assert_eq!(config.janus.keepalive_interval_s, 25);
}

#[test]
fn unknown_field_names_field_line_and_allowed_keys() {
    let text = MINIMAL.replace("[sources.main]", "[sources.main]\nfps = 30");
    let message = error_text(&text);
    assert!(message.starts_with("test.toml:7:"), "{message}");
    assert!(message.contains("fps"), "{message}");
    assert!(
        message.contains("framerate"),
        "lists what is allowed: {message}"
    );
}

#[test]
fn bad_enum_value_lists_the_variants() {
    let text = format!("{MINIMAL}[rooms]\nmode = \"dual\"\n");
    let message = error_text(&text);
    assert!(message.contains("test.toml:13:"), "{message}");
    assert!(message.contains("`rooms.mode`"), "{message}");
    assert!(
        message.contains("single") && message.contains("multi"),
        "{message}"
    );
}

#[test]
fn bad_identity_uses_the_room_rules() {
    let message = error_text(&MINIMAL.replace("user_id = \"box-1\"", "user_id = \"box 1\""));
    assert!(message.contains("test.toml:4:"), "{message}");
    assert!(
        message.contains("user_id") && message.contains("allowed"),
        "{message}"
    );
}

#[test]
fn bad_urls_say_what_is_allowed() {
    let message = error_text(&MINIMAL.replace("mqtt://127.0.0.1:1883", "http://broker"));
    assert!(
        message.contains("`mqtt.url`") && message.contains("mqtts://"),
        "{message}"
    );
    let message = error_text(&MINIMAL.replace("ws://127.0.0.1:8188", "http://janus:8088"));
    assert!(
        message.contains("`janus.url`") && message.contains("ws://"),
        "{message}"
    );
}

#[test]
fn cross_field_rules_name_field_and_line() {
    let text = format!("{MINIMAL}[rooms]\nmax_rooms = 0\n");
    let message = error_text(&text);
    assert_eq!(
        message,
        "test.toml:13: `rooms.max_rooms`: 0 is out of range: allowed 1 to 32"
    );

    let text = MINIMAL.replace("mqtt://127.0.0.1:1883", "mqtts://broker.school:8883");
    let message = error_text(&text);
    assert!(message.contains("`mqtt.ca_file`"), "{message}");

    let text = MINIMAL.replace("[mqtt]", "[mqtt]\nca_file = \"/etc/ca.pem\"");
    let message = error_text(&text);
    assert!(
        message.contains("`mqtt.url`") && message.contains("never falls back"),
        "{message}"
    );
}

#[test]
fn room_patterns_are_checked() {
    let text = MINIMAL.replace(
        "[sources.main]",
        "[rooms]\nallowed = [\"bigclass\", \"\", \"a b\"]\n[sources.main]",
    );
    let error = error_text(&text);
    assert!(error.contains("rooms.allowed[1]"), "{error}");
    assert!(error.contains("rooms.allowed[2]"), "{error}");
    assert!(!error.contains("rooms.allowed[0]"), "{error}");
}

#[test]
fn several_problems_are_all_reported() {
    let text = MINIMAL
        .replace("device_id = \"box-1\"", "device_id = \"box/1\"")
        .replace(
            "video = \"test\"",
            "video = \"test\"\nwidth = 641\nframerate = 0",
        );
    let message = error_text(&text);
    assert_eq!(message.lines().count(), 3, "{message}");
    assert!(message.contains("test.toml:2: `device_id`"), "{message}");
    assert!(message.contains("`sources.main.width`"), "{message}");
    assert!(message.contains("`sources.main.framerate`"), "{message}");
}

#[test]
fn missing_required_section_is_named() {
    let text = MINIMAL.replace("[janus]\nurl = \"ws://127.0.0.1:8188\"\n", "");
    let message = error_text(&text);
    assert!(message.contains("missing field `janus`"), "{message}");
}

#[test]
fn not_toml_at_all() {
    let message = error_text("device_id = \n[[[");
    assert!(message.starts_with("test.toml:1:"), "{message}");
}

#[test]
fn secrets_do_not_leak_through_debug() {
    let text = MINIMAL.replace(
        "[mqtt]",
        "[mqtt]\nusername = \"box\"\npassword = \"hunter2-secret\"",
    );
    let config = parse(&text).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2-secret"), "{debug}");
    assert!(!config.summary().contains("hunter2-secret"));
}

#[test]
fn multi_without_the_switch_is_valid_but_warned() {
    let text = format!("{MINIMAL}[rooms]\nmode = \"multi\"\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.warnings().len(), 1);
    assert!(config.warnings()[0].contains("1002036"));
}
