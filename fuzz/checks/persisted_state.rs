//! The persisted-state loader (issue 6): the bytes of `{state_dir}/state.json`, whatever
//! a power cut or a full disk left there, become the desired state or a `StateError`,
//! never a panic, so the agent still starts (with nothing to restore) instead of
//! crash-looping under systemd. Issue 18: what the salvaging reader keeps is itself a
//! valid state file (it renders and parses back unchanged), and for a file the strict
//! reader accepts it keeps everything.

use roomcast::service::state::{parse_state, render_state, salvage_state};

pub fn check(data: &[u8]) {
    let strict = parse_state(data);
    if let Ok(salvaged) = salvage_state(data) {
        let again = parse_state(&render_state(&salvaged.state)).expect("what is kept parses");
        assert_eq!(again, salvaged.state, "what is kept round-trips");
        if let Ok(strict) = strict {
            assert_eq!(strict, salvaged.state);
            assert!(salvaged.left_out.is_empty(), "{:?}", salvaged.left_out);
        }
    } else {
        assert!(
            strict.is_err(),
            "the strict reader accepts what salvage refuses"
        );
    }
}
