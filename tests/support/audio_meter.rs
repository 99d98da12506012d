//! Voice levels in decoded audio: how loud each of the echo test's two voices is, second
//! by second, while both talk at once. Each voice is speech with one band taken out
//! (`scripts/make-speech-fixtures.sh`), where the other voice is measured:
//!
//! - the teacher (the far end the box plays; `tests/data/teacher.wav`) has no 300-900 Hz
//!   and is measured at [`TEACHER_BAND`], inside the pupil's gap;
//! - the pupil (the near end, the simulated room's talker; `tests/data/pupil.wav`) has no
//!   1.3-3.3 kHz and is measured at [`PUPIL_BAND`], inside the teacher's gap.

use std::f64::consts::PI;
use std::path::PathBuf;

pub const RATE: f64 = 48_000.0;

/// Where the teacher is measured (Hz): inside the pupil's 1.3-3.3 kHz gap.
pub const TEACHER_BAND: (f64, f64) = (1_800.0, 2_600.0);
/// Where the pupil is measured (Hz): inside the teacher's 300-900 Hz gap.
pub const PUPIL_BAND: (f64, f64) = (450.0, 650.0);

/// The test voices' recordings.
pub fn voice(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.wav"))
}

/// Samples per analysis block (80 ms at 48 kHz), Hann-windowed: a band's level is the
/// power at its frequencies every 25 Hz together; the window's side lobes fall fast
/// enough that the other voice, hundreds of hertz outside the band, stays out.
const BLOCK: usize = 3840;
const STEP_HZ: f64 = 25.0;

/// Per-second mean power in each watched band, dB (a full-scale sine in one of the
/// band's frequencies is 0 dB).
pub struct VoiceMeter {
    bands: Vec<Vec<f64>>,
    block: Vec<f32>,
    /// Summed power per band in the current second, and its block count.
    sums: Vec<f64>,
    blocks: usize,
    /// One row per completed second: the level of each band, dB.
    pub seconds: Vec<Vec<f64>>,
}

impl Default for VoiceMeter {
    /// Watches the teacher, the far end (column 0), and the pupil, the near end (column 1).
    fn default() -> Self {
        Self::new(&[TEACHER_BAND, PUPIL_BAND])
    }
}

impl VoiceMeter {
    pub fn new(bands: &[(f64, f64)]) -> Self {
        let frequencies = |(low, high): (f64, f64)| {
            let steps = ((high - low) / STEP_HZ) as usize;
            (0..=steps).map(|k| low + k as f64 * STEP_HZ).collect()
        };
        Self {
            bands: bands.iter().map(|b| frequencies(*b)).collect(),
            block: Vec::with_capacity(BLOCK),
            sums: vec![0.0; bands.len()],
            blocks: 0,
            seconds: Vec::new(),
        }
    }

    pub fn push(&mut self, samples: &[f32]) {
        for &sample in samples {
            self.block.push(sample);
            if self.block.len() < BLOCK {
                continue;
            }
            let windowed: Vec<f64> = self
                .block
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    f64::from(x) * (0.5 - 0.5 * (2.0 * PI * i as f64 / BLOCK as f64).cos())
                })
                .collect();
            for (sum, band) in self.sums.iter_mut().zip(&self.bands) {
                *sum += band
                    .iter()
                    .map(|&f| goertzel_power(&windowed, f))
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

/// The power of frequency `f` in a Hann-windowed `block`, normalised so that a
/// full-scale sine is 1.
fn goertzel_power(block: &[f64], f: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * f / RATE).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A unit sine gives (n/4)^2 through the Hann window.
    let n = block.len() as f64;
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
