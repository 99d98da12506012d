//! `cargo fuzz run config_file`: see `../checks/config_file.rs`.

#![no_main]

#[path = "../checks/config_file.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
