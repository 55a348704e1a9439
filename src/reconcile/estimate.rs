//! Difference-size estimator (`protocol-spec/reconcile.md`, "Sketch").
//!
//! For each of [`SKETCH_HASHES`] salted 16-bit hashes `h_k` and each level
//! `j = 1..=L`, the cell `(k, j)` is the XOR of the top 8 bits of the short
//! IDs of the items with at least `j` leading zero bits in `h_k`. A
//! difference of `d` items leaves cell `(k, j)` equal on both sides with
//! probability about `(1 - 2^-j)^d`; [`estimate`] returns the `d` that
//! maximises the likelihood of the observed equal/unequal pattern.

use super::{ItemHash, MAX_SKETCH_LEVELS, SKETCH_HASHES};

/// Levels used for sets of up to `max_count` items: enough for a level to
/// hold about one item, and at least 8.
pub fn levels_for(max_count: u64) -> usize {
    let bits = (64 - max_count.leading_zeros()) as usize;
    (bits + 2).clamp(8, MAX_SKETCH_LEVELS)
}

/// The sketch of a set: `SKETCH_HASHES × levels` cells, hash-major.
pub fn sketch(hashes: &[ItemHash], levels: usize) -> Vec<u8> {
    let levels = levels.min(MAX_SKETCH_LEVELS);
    let mut cells = vec![0u8; SKETCH_HASHES * levels];
    for h in hashes {
        let v = (h.short >> 56) as u8;
        for (k, hk) in h.sketch.iter().enumerate() {
            let lz = (hk.leading_zeros() as usize).min(levels);
            for j in 0..lz {
                if let Some(c) = cells.get_mut(k * levels + j) {
                    *c ^= v;
                }
            }
        }
    }
    cells
}

/// Chance that two unequal multisets still give equal 8-bit cells.
const FALSE_MATCH: f64 = 1.0 / 256.0;
/// Largest difference the estimator considers.
const MAX_ESTIMATE: f64 = 1_048_576.0;

/// Maximum-likelihood estimate of the symmetric difference size from two
/// sketches of equal shape, at least `lower_bound` and at least 1.
pub fn estimate(a: &[u8], b: &[u8], lower_bound: u64) -> u64 {
    let levels = a.len() / SKETCH_HASHES;
    if levels == 0 || a.len() != b.len() {
        return lower_bound.max(1);
    }
    let mut best = (f64::NEG_INFINITY, 1.0f64);
    let mut d = 1.0f64;
    while d <= MAX_ESTIMATE {
        let mut ll = 0.0;
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let j = (i % levels) as i32 + 1;
            let q = (1.0 - 2f64.powi(-j)).powf(d);
            let p_equal = q + (1.0 - q) * FALSE_MATCH;
            ll += if x == y {
                p_equal.ln()
            } else {
                (1.0 - p_equal).max(1e-300).ln()
            };
        }
        if ll > best.0 {
            best = (ll, d);
        }
        d = (d * 1.05).ceil();
    }
    (best.1 as u64).max(lower_bound).max(1)
}
