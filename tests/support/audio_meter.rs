//! Tone levels in decoded audio: how loud each test tone is, second by second. The tests
//! tell the far end (a 285 Hz sawtooth the box plays) from the near end (the simulated room's
//! 1900 Hz talker) by frequency, so both can be measured while both sound at once.

use std::f64::consts::PI;

/// Samples per analysis block (80 ms at 48 kHz: 12.5 Hz bins, Hann-windowed, so that
/// the two voices' nearest harmonics — 60 Hz and more apart — stay out of each other's
/// measurement).
const BLOCK: usize = 3840;
pub const RATE: f64 = 48_000.0;

/// The far end's fundamental (what the box plays: `TestPublisher::start_talking`).
pub const FAR_END_HZ: f64 = 285.0;
/// The near end's talker (`audio = "test-room"`): its voice glides from 175 to 205 Hz,
/// measured as the power in these bins together.
pub const NEAR_END_HZ: [f64; 5] = [170.0, 180.0, 190.0, 200.0, 210.0];

/// Per-second mean power of each watched band (a set of frequencies whose powers add),
/// dB relative to a full-scale sine.
pub struct ToneMeter {
    bands: Vec<Vec<f64>>,
    block: Vec<f32>,
    /// Summed power per frequency in the current second, and its block count.
    sums: Vec<f64>,
    blocks: usize,
    /// One row per completed second: the level of each frequency, dB.
    pub seconds: Vec<Vec<f64>>,
}

impl Default for ToneMeter {
    /// Watches the far end (column 0) and the near end (column 1).
    fn default() -> Self {
        Self::new(&[&[FAR_END_HZ][..], &NEAR_END_HZ[..]])
    }
}

impl ToneMeter {
    pub fn new(bands: &[&[f64]]) -> Self {
        Self {
            bands: bands.iter().map(|b| b.to_vec()).collect(),
            block: Vec::with_capacity(BLOCK),
            sums: vec![0.0; bands.len()],
            blocks: 0,
            seconds: Vec::new(),
        }
    }

    pub fn push(&mut self, samples: &[f32]) {
        for &sample in samples {
            self.block.push(sample);
            if self.block.len() == BLOCK {
                for (sum, band) in self.sums.iter_mut().zip(&self.bands) {
                    *sum += band
                        .iter()
                        .map(|&f| goertzel_power(&self.block, f))
                        .sum::<f64>();
                }
                self.block.clear();
                self.blocks += 1;
                if self.blocks == (RATE as usize) / BLOCK {
                    let row = self
                        .sums
                        .iter()
                        .map(|s| to_db(s / self.blocks as f64))
                        .collect();
                    self.seconds.push(row);
                    self.sums.iter_mut().for_each(|s| *s = 0.0);
                    self.blocks = 0;
                }
            }
        }
    }
}

/// The power of frequency `f` in `block`, normalised so that a full-scale sine is 1.
fn goertzel_power(block: &[f32], f: f64) -> f64 {
    let w = 2.0 * PI * f / RATE;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let n = block.len() as f64;
    for (i, &x) in block.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / n).cos();
        let s0 = f64::from(x) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A unit sine gives (n/4)^2 through the Hann window.
    power / (n * n / 16.0)
}

pub fn to_db(power: f64) -> f64 {
    10.0 * power.max(1e-12).log10()
}

/// The mean level (dB) of the power of `rows`' column `column`.
pub fn mean_db(rows: &[Vec<f64>], column: usize) -> f64 {
    let powers: Vec<f64> = rows.iter().map(|r| 10f64.powf(r[column] / 10.0)).collect();
    to_db(powers.iter().sum::<f64>() / powers.len().max(1) as f64)
}
