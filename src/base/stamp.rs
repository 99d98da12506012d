//! BLK1: a capture timestamp painted into the luma plane so that any subscriber can
//! read when a decoded frame was captured (layout: `docs/latency-stamp.md`).
//!
//! 66 blocks of 32×32 pixels from the top-left, wrapping at the frame's width: block 0
//! white, block 1 black (markers), blocks 2–65 a 64-bit word, most significant bit
//! first: 42 bits of CLOCK_REALTIME milliseconds, 14 bits of frame sequence, CRC-8.

/// Block size in pixels.
pub const BLOCK: usize = 32;
/// Blocks in a stamp.
pub const BLOCKS: usize = 66;
const WHITE: u8 = 235;
const BLACK: u8 = 16;
/// Markers closer than this are unreadable.
const MIN_CONTRAST: i32 = 60;
const TIME_BITS: u32 = 42;
const SEQ_BITS: u32 = 14;

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Capture time, Unix milliseconds modulo 2^42.
    pub time_ms: u64,
    /// Frame sequence number modulo 2^14.
    pub sequence: u16,
}

/// Whether a frame of this size can carry a stamp. The config check calls it with any
/// u32 from the file (before the size ranges are enforced): on the 32-bit boards
/// (armv7) `usize` is 32 bits and the block count must not overflow.
pub fn fits(width: usize, height: usize) -> bool {
    let per_row = width / BLOCK;
    per_row > 0 && per_row.saturating_mul(height / BLOCK) >= BLOCKS
}

/// CRC-8, polynomial 0x07, initial value 0.
fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in bytes {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn word(stamp: Stamp) -> u64 {
    let time = stamp.time_ms & ((1 << TIME_BITS) - 1);
    let seq = u64::from(stamp.sequence) & ((1 << SEQ_BITS) - 1);
    let payload = (time << (SEQ_BITS + 8)) | (seq << 8);
    let bytes = payload.to_be_bytes();
    payload | u64::from(crc8(&bytes[..7]))
}

/// Top-left pixel of block `index` for a frame `width` wide.
fn origin(index: usize, width: usize) -> (usize, usize) {
    let per_row = width / BLOCK;
    ((index % per_row) * BLOCK, (index / per_row) * BLOCK)
}

/// Paints `stamp` into a luma plane (`stride` bytes per row). Does nothing when the
/// frame is too small (see [`fits`]).
pub fn paint(luma: &mut [u8], stride: usize, width: usize, height: usize, stamp: Stamp) {
    if !fits(width, height) {
        return;
    }
    let bits = word(stamp);
    for index in 0..BLOCKS {
        let value = match index {
            0 => WHITE,
            1 => BLACK,
            _ if bits >> (63 - (index - 2)) & 1 == 1 => WHITE,
            _ => BLACK,
        };
        let (x, y) = origin(index, width);
        for row in y..y + BLOCK {
            let start = row * stride + x;
            if let Some(line) = luma.get_mut(start..start + BLOCK) {
                line.fill(value);
            }
        }
    }
}

/// Mean luma of the central 16×16 pixels of a block (edges blur under compression).
fn block_mean(luma: &[u8], stride: usize, x: usize, y: usize) -> i32 {
    let (mut sum, mut count) = (0u32, 0u32);
    for row in y + 8..y + 24 {
        let start = row * stride + x + 8;
        if let Some(line) = luma.get(start..start + 16) {
            sum += line.iter().map(|&v| u32::from(v)).sum::<u32>();
            count += 16;
        }
    }
    sum.checked_div(count).map_or(0, |mean| mean as i32)
}

/// Reads a stamp; `None` when the frame is too small, the markers lack contrast or the
/// CRC fails. Never guesses.
pub fn read(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<Stamp> {
    if !fits(width, height) {
        return None;
    }
    let mean = |index| {
        let (x, y) = origin(index, width);
        block_mean(luma, stride, x, y)
    };
    let (white, black) = (mean(0), mean(1));
    if white - black < MIN_CONTRAST {
        return None;
    }
    let threshold = (white + black) / 2;
    let mut bits = 0u64;
    for index in 2..BLOCKS {
        bits = (bits << 1) | u64::from(mean(index) > threshold);
    }
    let bytes = bits.to_be_bytes();
    if crc8(&bytes[..7]) != bytes[7] {
        return None;
    }
    Some(Stamp {
        time_ms: bits >> (SEQ_BITS + 8),
        sequence: ((bits >> 8) & ((1 << SEQ_BITS) - 1)) as u16,
    })
}

/// Milliseconds from `captured_ms` (mod 2^42) to `now_ms`, allowing for the wrap.
pub fn elapsed_ms(captured_ms: u64, now_ms: u64) -> u64 {
    let modulus = 1u64 << TIME_BITS;
    (now_ms % modulus + modulus - captured_ms % modulus) % modulus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_does_not_overflow_on_absurd_sizes() {
        assert!(fits(usize::MAX, usize::MAX));
        assert!(!fits(usize::MAX, 0));
        assert!(!fits(0, usize::MAX));
        let max = u32::MAX as usize;
        assert!(fits(max, max));
    }

    fn frame(width: usize, height: usize) -> Vec<u8> {
        (0..width * height).map(|i| (i % 200) as u8 + 20).collect()
    }

    #[test]
    fn round_trip_at_720p() {
        let (w, h) = (1280, 720);
        let mut luma = frame(w, h);
        let stamp = Stamp {
            time_ms: 1_795_639_652_123 & ((1 << 42) - 1),
            sequence: 12_345,
        };
        paint(&mut luma, w, w, h, stamp);
        assert_eq!(read(&luma, w, w, h), Some(stamp));
    }

    #[test]
    fn wraps_rows_on_narrow_frames_and_honours_stride() {
        let (w, h, stride) = (320, 240, 384);
        assert!(fits(w, h));
        let mut luma = vec![128u8; stride * h];
        let stamp = Stamp {
            time_ms: 42,
            sequence: 7,
        };
        paint(&mut luma, stride, w, h, stamp);
        assert_eq!(read(&luma, stride, w, h), Some(stamp));
        assert!(!fits(160, 120));
    }

    #[test]
    fn survives_noise_but_never_guesses() {
        let (w, h) = (640, 480);
        let mut luma = frame(w, h);
        let stamp = Stamp {
            time_ms: 99_999,
            sequence: 3,
        };
        paint(&mut luma, w, w, h, stamp);
        // Compression-like noise of ±20 keeps it readable.
        let noisy: Vec<u8> = luma
            .iter()
            .enumerate()
            .map(|(i, &v)| v.saturating_add((i * 7 % 41) as u8).saturating_sub(20))
            .collect();
        assert_eq!(read(&noisy, w, w, h), Some(stamp));
        // One flipped data block breaks the CRC: unreadable, not wrong.
        let mut broken = luma.clone();
        let (x, y) = origin(30, w);
        for row in y..y + BLOCK {
            for v in &mut broken[row * w + x..row * w + x + BLOCK] {
                *v = if *v > 128 { BLACK } else { WHITE };
            }
        }
        assert_eq!(read(&broken, w, w, h), None);
        // A plain picture has no markers.
        assert_eq!(read(&frame(w, h), w, w, h), None);
    }

    #[test]
    fn crc_matches_the_reference_polynomial() {
        // CRC-8/SMBUS check value of "123456789".
        assert_eq!(crc8(b"123456789"), 0xF4);
    }

    #[test]
    fn elapsed_handles_the_wrap() {
        assert_eq!(elapsed_ms(100, 150), 50);
        let modulus = 1u64 << 42;
        assert_eq!(elapsed_ms(modulus - 10, modulus + 5), 15);
    }
}
