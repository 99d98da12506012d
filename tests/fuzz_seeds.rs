//! Replays the fuzz seeds and every input that once crashed a fuzz target through the
//! same checks the targets run (`fuzz/checks/`), on every `cargo test`: the fuzzers need
//! cargo-fuzz and time, these need neither. New crash inputs go in
//! `fuzz/regressions/<target>/` (and get a unit test next to the code they broke).

use std::path::Path;

#[path = "../fuzz/checks/config_file.rs"]
mod config_file;
#[path = "../fuzz/checks/janus_message.rs"]
mod janus_message;
#[path = "../fuzz/checks/mqtt_command.rs"]
mod mqtt_command;
#[path = "../fuzz/checks/persisted_state.rs"]
mod persisted_state;

/// Runs `check` on every file of `fuzz/seeds/<target>` and `fuzz/regressions/<target>`.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if !path.is_file() || path.file_name().is_some_and(|n| n == ".gitkeep") {
                continue;
            }
            let data = std::fs::read(&path).expect("read a seed");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no seeds for {target}");
}

#[test]
fn mqtt_command_seeds_and_regressions() {
    replay("mqtt_command", mqtt_command::check);
}

#[test]
fn janus_message_seeds_and_regressions() {
    replay("janus_message", janus_message::check);
}

#[test]
fn config_file_seeds_and_regressions() {
    replay("config_file", config_file::check);
}

#[test]
fn persisted_state_seeds_and_regressions() {
    replay("persisted_state", persisted_state::check);
}
