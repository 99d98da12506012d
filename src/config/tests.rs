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
    assert_eq!(config.mqtt.brokers()[0].port, 1883);
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
fn a_test_room_takes_an_optional_recorded_talker() {
    let with = |audio: &str| {
        MINIMAL.replace(
            "[sources.main]",
            &format!("[sources.main]\naudio = \"{audio}\""),
        )
    };
    let config = parse(&with("test-room")).unwrap();
    assert_eq!(
        config.sources.main.audio,
        AudioInput::TestRoom { talker: None }
    );
    let config = parse(&with("test-room:/srv/talk.wav")).unwrap();
    let audio = &config.sources.main.audio;
    assert_eq!(
        audio,
        &AudioInput::TestRoom {
            talker: Some("/srv/talk.wav".into())
        }
    );
    assert_eq!(audio.to_string(), "test-room:/srv/talk.wav");
    let message = error_text(&with("test-room:"));
    assert!(message.contains("name the talker's recording"), "{message}");
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
fn fanout_defaults_to_device_and_takes_server_and_auto() {
    use crate::engine::FanoutPolicy;
    assert_eq!(parse(MINIMAL).unwrap().rooms.fanout, FanoutPolicy::Device);
    for (value, policy) in [
        ("device", FanoutPolicy::Device),
        ("server", FanoutPolicy::Server),
        ("auto", FanoutPolicy::Auto),
    ] {
        let text = format!("{MINIMAL}[rooms]\nfanout = \"{value}\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.rooms.fanout, policy);
        assert_eq!(config.engine_settings().fanout, policy);
    }
    let message = error_text(&format!("{MINIMAL}[rooms]\nfanout = \"janus\"\n"));
    assert!(message.contains("`rooms.fanout`"), "{message}");
    assert!(
        message.contains("device") && message.contains("server") && message.contains("auto"),
        "{message}"
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

/// Issue 18: credentials over plaintext to anything but this machine — private
/// addresses included — are warned about; TLS or loopback is not.
#[test]
fn plaintext_with_credentials_is_warned() {
    let with = |mqtt: &str, janus: &str| {
        let text = MINIMAL
            .replace("mqtt://127.0.0.1:1883", mqtt)
            .replace("ws://127.0.0.1:8188", janus);
        parse(&text).unwrap().warnings()
    };
    let mqtt_password = "[mqtt]\nusername = \"box\"\npassword = \"pw-S9\"\nurl";
    let text = MINIMAL
        .replace("[mqtt]\nurl", mqtt_password)
        .replace("mqtt://127.0.0.1:1883", "mqtt://192.168.1.20:1883")
        .replace(
            "ws://127.0.0.1:8188\"",
            "ws://10.0.0.7:8188\"\napi_secret = \"s-S9\"\ntoken = \"t-S9\"",
        );
    let warnings = parse(&text).unwrap().warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("mqtt.url mqtt://192.168.1.20:1883 is unencrypted and mqtt.password is set"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("janus.api_secret, janus.token are set"),
        "{warnings:?}"
    );
    assert!(!warnings.join(" ").contains("S9"), "no secret in a warning");
    // Loopback, TLS, or no credentials: nothing to say about credentials.
    let text = MINIMAL.replace("[mqtt]\nurl", mqtt_password).replace(
        "ws://127.0.0.1:8188\"",
        "ws://localhost:8188\"\napi_secret = \"s\"",
    );
    assert!(parse(&text).unwrap().warnings().is_empty());
    let existing = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let text = MINIMAL.replace("[mqtt]\nurl", mqtt_password).replace(
        "mqtt://127.0.0.1:1883",
        &format!("mqtts://192.168.1.20:8883\"\nca_file = \"{existing}"),
    );
    assert!(parse(&text).unwrap().warnings().is_empty());
    assert!(with("mqtt://192.168.1.20:1883", "ws://127.0.0.1:8188").is_empty());
    let text = MINIMAL.replace(
        "ws://127.0.0.1:8188\"",
        "wss://janus.school.lan:8989\"\nadmin_key = \"k\"",
    );
    assert!(parse(&text).unwrap().warnings().is_empty());
}

#[test]
fn janus_urls_with_credentials_or_a_query_are_refused() {
    for (url, expected) in [
        ("ws://user:pass@127.0.0.1:8188", "not in the URL"),
        ("ws://127.0.0.1:8188/janus?token=abc", "has a query"),
        ("wss://janus.lan:8989/#x", "has a query or a fragment"),
    ] {
        let error = error_text(&MINIMAL.replace("ws://127.0.0.1:8188", url));
        assert!(error.contains(expected), "{url}: {error}");
        assert!(
            !error.contains("pass@") && !error.contains("abc"),
            "{error}"
        );
    }
}

#[test]
fn janus_ca_file_is_checked_when_the_config_is() {
    let garbage = std::env::temp_dir().join(format!("roomcast-janus-ca-{}", std::process::id()));
    std::fs::write(&garbage, "not a certificate").unwrap();
    let with = |url: &str| {
        MINIMAL.replace(
            "ws://127.0.0.1:8188\"",
            &format!("{url}\"\nca_file = \"{}\"", garbage.display()),
        )
    };
    let error = error_text(&with("ws://127.0.0.1:8188"));
    assert!(
        error.contains("`janus.ca_file`: is set but janus.url"),
        "{error}"
    );
    let error = error_text(&with("wss://janus.school.lan:8989"));
    assert!(error.contains("contains no certificate"), "{error}");
    std::fs::remove_file(&garbage).ok();
}

#[test]
fn more_janus_servers_and_routes() {
    let text = format!(
        "{MINIMAL}[janus.servers.district]\nurl = \"wss://janus.district.example/ws\"\napi_secret = \"s3cret\"\nrequest_timeout_ms = 2000\n[janus.servers.school-2]\nurl = \"ws://10.0.0.2:8188/\"\n"
    )
    .replace(
        "[mqtt]",
        "[rooms]\nroutes = [ { rooms = \"group-*\", server = \"district\" }, { rooms = \"lab\", server = \"default\" } ]\n[mqtt]",
    );
    let config = parse(&text).unwrap();
    let names: Vec<&str> = config.janus.all_servers().map(|(n, _)| n).collect();
    assert_eq!(names, ["default", "district", "school-2"]);
    assert_eq!(config.janus.servers["district"].request_timeout_ms, 2000);
    let routes = config.server_routes();
    let name = |n: &str| crate::engine::ServerName::parse(n).unwrap();
    assert_eq!(
        routes.reconnect_window(&name("district")),
        Some(std::time::Duration::from_secs(300))
    );
    let room = |r: &str| crate::engine::RoomId::parse(r).unwrap();
    assert_eq!(
        routes.resolve(&room("group-3"), None).unwrap().as_str(),
        "district"
    );
    assert_eq!(
        routes.resolve(&room("lab"), None).unwrap().as_str(),
        "default"
    );
    assert_eq!(
        routes.resolve(&room("bigclass"), None).unwrap().as_str(),
        "default"
    );
    let summary = config.summary();
    assert!(
        summary.contains("district wss://janus.district.example/ws")
            && summary.contains("2 routes"),
        "{summary}"
    );
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn a_route_to_an_unknown_server_is_refused() {
    let text = MINIMAL.replace(
        "[mqtt]",
        "[rooms]\nroutes = [ { rooms = \"group-*\", server = \"district\" } ]\n[mqtt]",
    );
    let e = error_text(&text);
    assert!(
        e.contains("`rooms.routes[0].server`")
            && e.contains("\"district\" is not a configured Janus server"),
        "{e}"
    );
    assert!(e.contains(":3") || e.contains("test.toml"), "{e}");
}

#[test]
fn server_sections_are_checked_like_janus() {
    let text = format!(
        "{MINIMAL}[janus.servers.default]\nurl = \"ws://10.0.0.2:8188/\"\n[janus.servers.b]\nurl = \"ws://10.0.0.3:8188/\"\nrequest_timeout_ms = 5\n[janus.servers.b.servers.c]\nurl = \"ws://10.0.0.4:8188/\"\n"
    );
    let e = error_text(&text);
    assert!(e.contains("`janus.servers.default`"), "{e}");
    assert!(e.contains("`janus.servers.b.request_timeout_ms`"), "{e}");
    assert!(e.contains("`janus.servers.b.servers`"), "{e}");
    let typo = format!("{MINIMAL}[janus.servers.b]\nurl = \"ws://10.0.0.3:8188/\"\nurll = 1\n");
    assert!(error_text(&typo).contains("urll"));
    let secret = format!(
        "{MINIMAL}[janus.servers.b]\nurl = \"ws://192.168.1.9:8188/\"\napi_secret = \"x\"\n"
    );
    let warnings = parse(&secret).unwrap().warnings();
    assert!(
        warnings.iter().any(|w| w.contains("janus.servers.b.url")
            && w.contains("janus.servers.b.api_secret is set")),
        "{warnings:?}"
    );
}

#[test]
fn a_broker_list_in_mqtt_urls() {
    let list = MINIMAL.replace(
        "url = \"mqtt://127.0.0.1:1883\"",
        "urls = [\"mqtt://127.0.0.1:1883\", \"mqtt://10.0.0.9\"]",
    );
    let config = parse(&list).unwrap();
    let brokers: Vec<String> = config
        .mqtt
        .brokers()
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(brokers, ["mqtt://127.0.0.1:1883", "mqtt://10.0.0.9:1883"]);
    assert!(
        config
            .summary()
            .contains("MQTT [mqtt://127.0.0.1:1883, mqtt://10.0.0.9:1883]")
    );

    let both = MINIMAL.replace(
        "url = \"mqtt://127.0.0.1:1883\"",
        "url = \"mqtt://127.0.0.1:1883\"\nurls = [\"mqtt://10.0.0.9\"]",
    );
    assert!(error_text(&both).contains("`mqtt.urls`: set mqtt.url (one broker) or mqtt.urls"));
    let none = MINIMAL.replace("url = \"mqtt://127.0.0.1:1883\"", "");
    assert!(error_text(&none).contains("`mqtt.url`: no broker"));
    let mixed = MINIMAL.replace(
        "url = \"mqtt://127.0.0.1:1883\"",
        "urls = [\"mqtts://a.example\", \"mqtt://b.example\"]\nca_file = \"/etc/hostname\"",
    );
    assert!(error_text(&mixed).contains("mixes mqtt:// and mqtts://"));
    let twice = MINIMAL.replace(
        "url = \"mqtt://127.0.0.1:1883\"",
        "urls = [\"mqtt://b.example\", \"mqtt://b.example:1883\"]",
    );
    assert!(error_text(&twice).contains("`mqtt.urls[1]`: mqtt://b.example:1883 is listed twice"));
    let tls = MINIMAL.replace(
        "url = \"mqtt://127.0.0.1:1883\"",
        "urls = [\"mqtts://a.example\", \"mqtts://b.example\"]",
    );
    assert!(error_text(&tls).contains("`mqtt.ca_file`"));
}
