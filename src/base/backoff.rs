//! Exponential backoff with jitter, for everything that tries again: the engine's rooms
//! and streams, the Janus session, the MQTT connection, the console's.

use std::time::Duration;

/// Doubling delays from `initial`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The delay before try `attempt` (0-based): `initial × 2^attempt`, at most `max`,
    /// with ±25 % jitter so that boxes restarted together do not retry in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(16)))
            .min(self.max);
        base.mul_f64(rand::random_range(0.75..=1.25))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        for (attempt, base_ms) in [(0, 250), (1, 500), (2, 1000), (5, 8000), (6, 10_000)] {
            for _ in 0..50 {
                let ms = backoff.delay(attempt).as_secs_f64() * 1000.0;
                let (low, high) = (base_ms as f64 * 0.75, base_ms as f64 * 1.25);
                assert!(
                    (low - 0.001..=high + 0.001).contains(&ms),
                    "try {attempt}: {ms} ms"
                );
            }
        }
        // Huge attempt counts neither overflow nor pass the cap.
        assert!(backoff.delay(u32::MAX) <= Duration::from_millis(12_500));
    }
}
