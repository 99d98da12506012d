//! `cargo fuzz run janus_message`: see `../checks/janus_message.rs`.

#![no_main]

#[path = "../checks/janus_message.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
