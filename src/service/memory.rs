//! Memory housekeeping. GStreamer, libnice and the WebRTC stack allocate and free from
//! many threads; glibc keeps what one thread frees in that thread's arena, so after every
//! reconnect (a webrtcbin per room and stream torn down and built again) the process
//! holds a little more free memory it never returns. Measured on 10 Janus restarts with
//! 5 rooms (tests/faults.rs): +11 to +12 % RSS without this, +8 to +10 % with it, with every GStreamer
//! object accounted for (GST_TRACERS=leaks: as many destroyed as created) and threads
//! and file descriptors flat; heaptrack on `./scripts/bench.sh churn 24 5 4 restart`
//! finds the live heap growing by about 70 KiB per restart of 5 rooms (buffers in flight
//! and per-thread crypto state inside libnice and NSS) while the heap glibc holds grows
//! by about 400 KiB: the rest of the growth is fragmentation, fast at first, then slower.
//! So once the engine has been busy and then quiet for a
//! moment, the free memory is handed back (`malloc_trim`), at most every
//! [`MIN_INTERVAL`]. A box that is never quiet (messages flowing all day: the soak run
//! sends 20 commands a second) is trimmed anyway once activity has waited [`BUSY_MAX`].
//! And the agent keeps glibc to [`ARENAS`] arenas ([`limit_arenas`]), so that what one
//! thread frees is reused by the next rather than stranded in an arena of its own.

use std::time::{Duration, Instant};

use tracing::debug;

/// How long things must be quiet after activity before trimming.
pub const QUIET: Duration = Duration::from_secs(2);
/// Trims at most this often.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Activity never followed by a quiet moment is trimmed after this long.
pub const BUSY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Housekeeping {
    /// The first activity since the last trim.
    first_activity: Option<Instant>,
    last_activity: Option<Instant>,
    last_trim: Option<Instant>,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self::new()
    }
}

impl Housekeeping {
    pub fn new() -> Self {
        Self {
            first_activity: None,
            last_activity: None,
            last_trim: None,
        }
    }

    /// Something happened (an engine event): streams or rooms may have been torn down.
    pub fn activity(&mut self, now: Instant) {
        self.first_activity.get_or_insert(now);
        self.last_activity = Some(now);
    }

    /// Whether to trim now; records the trim when it says yes.
    pub fn due(&mut self, now: Instant) -> bool {
        let quiet = self
            .last_activity
            .is_some_and(|t| now.saturating_duration_since(t) >= QUIET);
        let waited_long = self
            .first_activity
            .is_some_and(|t| now.saturating_duration_since(t) >= BUSY_MAX);
        let spaced = self
            .last_trim
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_INTERVAL);
        if (quiet || waited_long) && spaced {
            self.first_activity = None;
            self.last_activity = None;
            self.last_trim = Some(now);
            true
        } else {
            false
        }
    }
}

/// glibc arenas the agent allows itself (`M_ARENA_MAX`). glibc's default is 8 per core;
/// with dozens of GStreamer, libnice and tokio threads each freeing into its own arena,
/// every rebuilt webrtcbin leaves free memory scattered where no other thread reuses it.
/// Two arenas (one per core here, on a Pi 4 half its cores) measured side by side on the
/// media bench: no CPU cost (15.8 % vs 16.3 % of a core, 5 rooms publishing) and the
/// soak's RSS growth from minute 1 went from +11.2 % to +5.4 % and +8.0 % (two runs).
/// The price: ~7 % more CPU while Janus restarts over and over (churn bench, side by
/// side), not growing over time (docs/operations.md, Reliability).
pub const ARENAS: i32 = 2;

/// Limits glibc's arenas to [`ARENAS`] unless the operator set `MALLOC_ARENA_MAX`
/// (which glibc has read already and which then wins). Call first in `main`, before
/// any thread starts; does nothing outside glibc.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; called before other threads exist.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    }
}

/// Returns free heap memory to the system (glibc); does nothing elsewhere.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let before = rss_kib();
        // SAFETY: malloc_trim only walks glibc's own arenas; no pointers are passed.
        unsafe { libc::malloc_trim(0) };
        debug!(
            before_kib = before,
            after_kib = rss_kib(),
            "returned free heap memory to the system"
        );
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_quiet_after_activity_and_not_too_often() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut h = Housekeeping::new();
        assert!(!h.due(at(100.0)), "nothing happened");
        h.activity(at(0.0));
        assert!(!h.due(at(1.0)), "not quiet yet");
        assert!(h.due(at(2.5)));
        assert!(!h.due(at(3.0)), "done already");
        h.activity(at(4.0));
        assert!(!h.due(at(7.0)), "within MIN_INTERVAL of the last trim");
        assert!(h.due(at(7.6)));
        trim();
    }

    #[test]
    fn a_box_that_is_never_quiet_is_trimmed_every_busy_max() {
        let t0 = Instant::now();
        let mut h = Housekeeping::new();
        let mut trims = Vec::new();
        // An event every 0.5 s for 150 s, a check every second.
        for half_seconds in 0..300u64 {
            let now = t0 + Duration::from_millis(half_seconds * 500);
            h.activity(now);
            if half_seconds % 2 == 0 && h.due(now) {
                trims.push(half_seconds / 2);
            }
        }
        assert_eq!(
            trims,
            vec![60, 121],
            "60 s after the first event not yet trimmed"
        );
    }
}
