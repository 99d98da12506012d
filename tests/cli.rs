//! The `roomcast` binary's command line, run as a process.

use std::path::Path;
use std::process::{Command, Output};

fn roomcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(args)
        .env_remove("ROOMCAST_CONFIG")
        .output()
        .expect("run roomcast")
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/roomcast.example.toml")
        .display()
        .to_string()
}

#[test]
fn version_prints_the_crate_version() {
    let out = roomcast(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("roomcast {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_example_with_a_one_line_summary() {
    let out = roomcast(&["check-config", "--config", &example()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(": ok: device box-17"), "{text}");
}

#[test]
fn check_config_rejects_a_broken_file_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("roomcast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("max_rooms = 5", "max_rooms = 500")
        .replace("password = ", "passwd = ");
    std::fs::write(&broken, text).unwrap();
    let out = roomcast(&["check-config", "--config", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:"), "{err}");
    assert!(
        err.contains("`rooms.max_rooms`: 500 is out of range: allowed 1 to 32"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_config_on_a_missing_file_says_how_to_fix_it() {
    let out = roomcast(&["check-config", "--config", "/nonexistent/roomcast.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/roomcast.toml"),
        "{err}"
    );
    assert!(err.contains("--config"), "{err}");
}

/// Issue 18: check-config warns about credentials that would cross the network in
/// clear (a private address is no exception), without printing them; exit 0.
#[test]
fn check_config_warns_about_plaintext_credentials() {
    let dir = std::env::temp_dir().join(format!("roomcast-cli-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plain.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("mqtt://127.0.0.1:1883", "mqtt://192.168.1.20:1883")
        .replace("ws://127.0.0.1:8188", "ws://10.0.0.7:8188");
    let text = format!(
        "{}\n",
        text.replacen(
            "[mqtt]",
            "[mqtt]\nusername = \"box-17\"\npassword = \"pw-Q7\"",
            1
        )
        .replacen("[janus]", "[janus]\napi_secret = \"as-Q7\"", 1)
    );
    std::fs::write(&path, text).unwrap();
    let out = roomcast(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: mqtt.url mqtt://192.168.1.20:1883 is unencrypted and mqtt.password is set"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: janus.url ws://10.0.0.7:8188/ is unencrypted and janus.api_secret is set"
        ),
        "{err}"
    );
    assert!(!err.contains("Q7"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 20: a route to a server that is not configured is refused (exit 2), naming the
/// route and the servers there are; the same route to a configured server is fine.
#[test]
fn check_config_refuses_a_route_to_an_unknown_server() {
    let dir = std::env::temp_dir().join(format!("roomcast-cli-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.toml");
    let text = std::fs::read_to_string(example()).unwrap().replace(
        "# routes = [ { rooms = \"group-*\", server = \"district\" } ]",
        "routes = [ { rooms = \"group-*\", server = \"district\" } ]",
    );
    std::fs::write(&path, &text).unwrap();
    let out = roomcast(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`rooms.routes[0].server`: \"district\" is not a configured Janus server")
            && err.contains("(default)"),
        "{err}"
    );
    let text = text.replace(
        "# [janus.servers.district]\n# url = \"wss://janus.district.example/ws\"",
        "[janus.servers.district]\nurl = \"wss://janus.district.example/ws\"",
    );
    std::fs::write(&path, &text).unwrap();
    let out = roomcast(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("and district wss://janus.district.example/ws (1 route)"),
        "{summary}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
