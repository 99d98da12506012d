//! `cargo fuzz run persisted_state`: see `../checks/persisted_state.rs`.

#![no_main]

#[path = "../checks/persisted_state.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
