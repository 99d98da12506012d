//! `cargo fuzz run mqtt_command`: see `../checks/mqtt_command.rs`.

#![no_main]

#[path = "../checks/mqtt_command.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
