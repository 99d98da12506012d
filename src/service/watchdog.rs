//! What `WATCHDOG=1` vouches for. Before each ping the service checks that
//!
//! - the room engine answers `state()` within a deadline (a stuck engine task, or one
//!   flooded beyond its queue, stops the pings), and
//! - every *running* source pipeline is still encoding: its count of encoded frames has
//!   moved within [`STALL_AFTER`] (a wedged capture driver or encoder that holds its
//!   streaming thread without posting an error stops the pings), and
//! - the MQTT control tasks are still there.
//!
//! A source that is not running is not a wedge: nothing publishes it, or it failed and
//! the engine is rebuilding it with backoff, which the agent handles itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::Channel;
use crate::media::SourceProbe;

/// A running source whose encoded-frame count has not moved for this long is wedged.
/// The slowest allowed source (1 frame per second) makes 5 frames in that time; a camera
/// that was just started gets the same time to deliver its first frame.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// How long the engine may take to answer `state()` before the check fails.
pub fn engine_deadline(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    generation: u64,
    frames: u64,
    /// When the count was last seen to change (or the pipeline first seen).
    since: Instant,
}

/// Remembers each running source's frame count between checks.
#[derive(Debug, Default)]
pub struct MediaLiveness {
    seen: BTreeMap<Channel, Seen>,
}

impl MediaLiveness {
    /// Forgets everything (the media was rebuilt by a reload).
    pub fn reset(&mut self) {
        self.seen.clear();
    }

    /// `Err` names every wedged source.
    pub fn check(
        &mut self,
        now: Instant,
        probes: &[(Channel, Option<SourceProbe>)],
    ) -> Result<(), String> {
        let mut wedged = Vec::new();
        for (channel, probe) in probes {
            let Some(probe) = probe else {
                self.seen.remove(channel);
                continue;
            };
            let seen = self.seen.entry(*channel).or_insert(Seen {
                generation: probe.generation,
                frames: probe.frames_encoded,
                since: now,
            });
            if seen.generation != probe.generation || seen.frames != probe.frames_encoded {
                *seen = Seen {
                    generation: probe.generation,
                    frames: probe.frames_encoded,
                    since: now,
                };
                continue;
            }
            let still = now.saturating_duration_since(seen.since);
            if still >= STALL_AFTER {
                wedged.push(format!(
                    "source `{channel}` has encoded no frame for {:.1} s (pipeline {}, {} frames in all)",
                    still.as_secs_f64(),
                    if probe.playing {
                        "PLAYING"
                    } else {
                        "not PLAYING"
                    },
                    probe.frames_encoded
                ));
            }
        }
        if wedged.is_empty() {
            Ok(())
        } else {
            Err(wedged.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(generation: u64, frames: u64) -> Option<SourceProbe> {
        Some(SourceProbe {
            generation,
            frames_encoded: frames,
            playing: true,
        })
    }

    #[test]
    fn a_source_that_stops_encoding_is_wedged_after_stall_after() {
        let mut liveness = MediaLiveness::default();
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        assert!(
            liveness
                .check(at(0.0), &[(Channel::Main, probe(1, 10))])
                .is_ok()
        );
        assert!(
            liveness
                .check(at(1.0), &[(Channel::Main, probe(1, 40))])
                .is_ok()
        );
        // Stuck at 40 frames: fine for a while, wedged from STALL_AFTER on.
        assert!(
            liveness
                .check(at(4.0), &[(Channel::Main, probe(1, 40))])
                .is_ok()
        );
        let error = liveness
            .check(at(6.5), &[(Channel::Main, probe(1, 40))])
            .unwrap_err();
        assert!(
            error.contains("source `main` has encoded no frame for 5.5 s"),
            "{error}"
        );
        // Frames again: alive.
        assert!(
            liveness
                .check(at(7.0), &[(Channel::Main, probe(1, 41))])
                .is_ok()
        );
    }

    #[test]
    fn stopped_and_rebuilt_sources_are_not_wedged() {
        let mut liveness = MediaLiveness::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(
            liveness
                .check(at(0), &[(Channel::Main, probe(1, 5))])
                .is_ok()
        );
        // Not running (failed; the engine is retrying): no claim either way.
        assert!(liveness.check(at(10), &[(Channel::Main, None)]).is_ok());
        // Rebuilt: a fresh pipeline gets its own grace, even with the same count.
        assert!(
            liveness
                .check(at(20), &[(Channel::Main, probe(2, 5))])
                .is_ok()
        );
        assert!(
            liveness
                .check(at(24), &[(Channel::Main, probe(2, 5))])
                .is_ok()
        );
        assert!(
            liveness
                .check(at(26), &[(Channel::Main, probe(2, 5))])
                .is_err()
        );
        // A pipeline that never delivers a frame is wedged too.
        let mut fresh = MediaLiveness::default();
        assert!(fresh.check(at(0), &[(Channel::Aux, probe(1, 0))]).is_ok());
        assert!(fresh.check(at(5), &[(Channel::Aux, probe(1, 0))]).is_err());
    }

    #[test]
    fn the_engine_deadline_is_half_the_interval_within_bounds() {
        assert_eq!(
            engine_deadline(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            engine_deadline(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            engine_deadline(Duration::from_millis(50)),
            Duration::from_millis(100)
        );
    }
}
