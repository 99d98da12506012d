//! The persisted-state loader (issue 6): the bytes of `{state_dir}/state.json`, whatever
//! a power cut or a full disk left there, become the desired state or a `StateError`,
//! never a panic, so the agent still starts (with nothing to restore) instead of
//! crash-looping under systemd.

pub fn check(data: &[u8]) {
    let _ = roomcast::service::state::parse_state(data);
}
