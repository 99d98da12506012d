//! The shared encoder's bitrate follows the narrowest room.
//!
//! One encode feeds every room, so it can only be as rich as the narrowest room allows.
//! Each room tells the box what it may send in two ways:
//! - **measured**: the room's Google Congestion Control estimate (`congestion.rs`), from
//!   the SFU's transport-wide feedback on the packets the room actually sent. It moves
//!   with the path: a narrow or shared uplink pulls it down within seconds.
//! - **REMB** (RTCP payload-specific feedback, "application layer", draft-alvestrand-
//!   rmcat-remb): the room's configured `bitrate` cap, or the cap a moderator set for
//!   this publisher. Janus sends it every few seconds; it is a ceiling, not a measure.
//!
//! The encoder runs at the lowest of all rooms' values, never above the configured
//! `bitrate_kbps` and never below the configured floor (`encoder.min_bitrate_kbps`).
//! Rooms on one uplink each see its congestion, so together they settle under it.
//!
//! Janus starts every publisher's REMB with a ramp (a quarter, a third, half, then all
//! of the cap, a second apart), so a branch's REMB counts only from [`SETTLE`] after its
//! first one: a room joining does not pull the picture of every other room down for a
//! few seconds. Measured estimates start at what the room needs and count at once.
//! Changes under [`HYSTERESIS`] are not applied.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The default floor (`encoder.min_bitrate_kbps`).
pub const DEFAULT_FLOOR_KBPS: u32 = crate::config::DEFAULT_MIN_BITRATE_KBPS;
/// A branch's REMB estimates count from this long after its first one.
pub const SETTLE: Duration = Duration::from_secs(4);
/// Relative change under which the encoder is left alone.
pub const HYSTERESIS: f64 = 0.10;

/// The bitrate in bit/s of a REMB feedback control information block (FCI):
/// `"REMB"`, the SSRC count, 6 bits of exponent and 18 of mantissa, then the SSRCs.
pub fn parse_remb(fci: &[u8]) -> Option<u64> {
    if fci.len() < 8 || &fci[..4] != b"REMB" {
        return None;
    }
    let exponent = u32::from(fci[5] >> 2);
    let mantissa = (u64::from(fci[5] & 0x03) << 16) | (u64::from(fci[6]) << 8) | u64::from(fci[7]);
    // 18 bits shifted by up to 63: u128 holds it, u64 may not.
    u64::try_from(u128::from(mantissa) << exponent).ok()
}

/// Where a room's estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The SFU's REMB: a cap, with a ramp at the start.
    Remb,
    /// The room's own congestion controller: counts at once.
    Measured,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    first: Instant,
    /// The latest estimate received once settled; `None` during the ramp.
    kbps: Option<u32>,
}

/// Per-branch estimates and the bitrate the encoder was last set to.
#[derive(Debug)]
pub struct BitrateFollower {
    target_kbps: u32,
    floor_kbps: u32,
    applied_kbps: u32,
    estimates: HashMap<(String, Origin), Estimate>,
}

impl BitrateFollower {
    /// Starts at the configured bitrate, which is also the ceiling; never goes under
    /// `floor_kbps` (nor over the ceiling, whichever is lower).
    pub fn new(target_kbps: u32, floor_kbps: u32) -> Self {
        Self {
            target_kbps,
            floor_kbps: floor_kbps.min(target_kbps),
            applied_kbps: target_kbps,
            estimates: HashMap::new(),
        }
    }

    /// What the encoder runs at now.
    pub fn applied_kbps(&self) -> u32 {
        self.applied_kbps
    }

    /// A new encoder started (at the configured bitrate): forget what was applied.
    pub fn restarted(&mut self) {
        self.applied_kbps = self.target_kbps;
    }

    /// Branch `branch` received a REMB estimate of `bps` (video bit/s); returns the
    /// bitrate to set the encoder to when it should change.
    pub fn estimate(&mut self, branch: &str, bps: u64, now: Instant) -> Option<u32> {
        self.estimate_from(branch, Origin::Remb, bps, now)
    }

    /// Branch `branch` received an estimate of `bps` (video bit/s) from `origin`.
    pub fn estimate_from(
        &mut self,
        branch: &str,
        origin: Origin,
        bps: u64,
        now: Instant,
    ) -> Option<u32> {
        let kbps = u32::try_from(bps / 1000).unwrap_or(u32::MAX);
        let estimate = self
            .estimates
            .entry((branch.to_owned(), origin))
            .or_insert(Estimate {
                first: now,
                kbps: None,
            });
        if origin == Origin::Remb && now.saturating_duration_since(estimate.first) < SETTLE {
            return None;
        }
        estimate.kbps = Some(kbps);
        self.decide()
    }

    /// Branch `branch` is gone (its room was left): the others may allow more.
    pub fn remove(&mut self, branch: &str) -> Option<u32> {
        let before = self.estimates.len();
        self.estimates.retain(|(b, _), _| b != branch);
        if self.estimates.len() == before {
            return None;
        }
        self.decide()
    }

    fn decide(&mut self) -> Option<u32> {
        let lowest = self
            .estimates
            .values()
            .filter_map(|e| e.kbps)
            .min()
            .unwrap_or(self.target_kbps);
        let wanted = lowest.clamp(self.floor_kbps, self.target_kbps);
        let change = (f64::from(wanted) - f64::from(self.applied_kbps)).abs()
            / f64::from(self.applied_kbps.max(1));
        // Back to the ceiling is always applied: a small cap gone must not leave the
        // encoder just under the configured bitrate for good.
        if change < HYSTERESIS && !(wanted == self.target_kbps && wanted != self.applied_kbps) {
            return None;
        }
        if wanted == self.applied_kbps {
            return None;
        }
        self.applied_kbps = wanted;
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remb(bps: u64) -> Vec<u8> {
        let mut exponent = 0u32;
        let mut mantissa = bps;
        while mantissa >= 1 << 18 {
            mantissa >>= 1;
            exponent += 1;
        }
        let mut fci = b"REMB".to_vec();
        fci.push(1);
        fci.push(((exponent as u8) << 2) | ((mantissa >> 16) as u8 & 0x03));
        fci.push((mantissa >> 8) as u8);
        fci.push(mantissa as u8);
        fci.extend_from_slice(&[0x1f, 0x30, 0x82, 0xaf]);
        fci
    }

    #[test]
    fn parses_what_janus_sends() {
        // Captured from Janus 1.1.2 with a 4 Mbit/s room: its ramp, then the cap.
        let ramp = [
            [82, 69, 77, 66, 1, 11, 208, 144, 31, 48, 130, 175],
            [82, 69, 77, 66, 1, 14, 139, 10, 31, 48, 130, 175],
            [82, 69, 77, 66, 1, 15, 208, 144, 31, 48, 130, 175],
            [82, 69, 77, 66, 1, 19, 208, 144, 31, 48, 130, 175],
        ];
        let bps: Vec<u64> = ramp.iter().filter_map(|f| parse_remb(f)).collect();
        assert_eq!(bps, [1_000_000, 1_333_328, 2_000_000, 4_000_000]);
        assert_eq!(parse_remb(&remb(300_000)), Some(300_000));
    }

    #[test]
    fn refuses_what_is_not_remb() {
        assert_eq!(parse_remb(b""), None);
        assert_eq!(parse_remb(b"REMB\x01\x0b"), None);
        assert_eq!(parse_remb(b"GOOG\x01\x0b\xd0\x90"), None);
        // The largest exponent does not overflow.
        assert_eq!(parse_remb(b"REMB\x01\xff\xff\xff"), None);
    }

    #[test]
    fn follows_the_lowest_room_after_it_settles() {
        let t0 = Instant::now();
        let mut follower = BitrateFollower::new(2000, DEFAULT_FLOOR_KBPS);
        // Two rooms with a 4 Mbit/s cap: nothing to do, above the configured bitrate.
        assert_eq!(follower.estimate("a", 1_000_000, t0), None);
        assert_eq!(follower.estimate("b", 1_000_000, t0), None);
        assert_eq!(follower.estimate("a", 4_000_000, t0 + SETTLE), None);
        assert_eq!(follower.estimate("b", 4_000_000, t0 + SETTLE), None);
        // A narrow room joins: its ramp (a quarter of 500 first) counts for nothing...
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(follower.estimate("narrow", 125_000, t1), None);
        assert_eq!(
            follower.estimate("narrow", 500_000, t1 + Duration::from_secs(3)),
            None
        );
        // ...until it settled: then everyone gets what the narrowest room takes.
        assert_eq!(follower.estimate("narrow", 500_000, t1 + SETTLE), Some(500));
        assert_eq!(follower.applied_kbps(), 500);
        // The same again changes nothing; the room leaving brings the ceiling back.
        assert_eq!(follower.estimate("narrow", 510_000, t1 + SETTLE * 2), None);
        assert_eq!(follower.remove("narrow"), Some(2000));
        assert_eq!(follower.remove("narrow"), None);
    }

    #[test]
    fn stays_between_the_floor_and_the_ceiling() {
        let t0 = Instant::now();
        let mut follower = BitrateFollower::new(2000, DEFAULT_FLOOR_KBPS);
        follower.estimate("a", 0, t0);
        assert_eq!(
            follower.estimate("a", 0, t0 + SETTLE),
            Some(DEFAULT_FLOOR_KBPS)
        );
        assert_eq!(follower.estimate("a", 50_000_000, t0 + SETTLE), Some(2000));
        // Small moves are not worth reconfiguring the encoder, except back to the top.
        assert_eq!(follower.estimate("a", 1_900_000, t0 + SETTLE), None);
        assert_eq!(follower.estimate("a", 1_000_000, t0 + SETTLE), Some(1000));
        assert_eq!(follower.estimate("a", 1_050_000, t0 + SETTLE), None);
        assert_eq!(follower.estimate("a", 1_950_000, t0 + SETTLE), Some(1950));
        assert_eq!(follower.estimate("a", 2_500_000, t0 + SETTLE), Some(2000));
        follower.restarted();
        assert_eq!(follower.applied_kbps(), 2000);
    }

    #[test]
    fn measured_estimates_count_at_once_and_the_lowest_of_both_wins() {
        let t0 = Instant::now();
        let mut follower = BitrateFollower::new(2000, 300);
        // A congested room's measure counts at once (no ramp to wait out)...
        assert_eq!(
            follower.estimate_from("a", Origin::Measured, 700_000, t0),
            Some(700)
        );
        // ...and a REMB cap above it changes nothing once settled.
        assert_eq!(follower.estimate("a", 4_000_000, t0), None);
        assert_eq!(follower.estimate("a", 4_000_000, t0 + SETTLE), None);
        // Another room measures less: everyone follows it, down to the floor at most.
        assert_eq!(
            follower.estimate_from("b", Origin::Measured, 100_000, t0),
            Some(300)
        );
        // That room left: back to the first room's measure; the path clears: the top.
        assert_eq!(follower.remove("b"), Some(700));
        assert_eq!(
            follower.estimate_from("a", Origin::Measured, 2_500_000, t0),
            Some(2000)
        );
        // Leaving forgets both of a room's estimates.
        assert_eq!(follower.remove("a"), None);
        assert!(follower.estimates.is_empty());
    }
}
