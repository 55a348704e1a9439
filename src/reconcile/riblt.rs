//! Rateless invertible Bloom lookup table over 64-bit short IDs
//! (`protocol-spec/reconcile.md`, "Coded symbols").
//!
//! Item `x` maps to cell 0 and then to an increasing, unbounded sequence of
//! cells drawn from a generator seeded with `x`, so that cell `i` holds
//! about a `2/(i+2)` fraction of the items. Cell `i` of a set is the XOR of
//! its items' short IDs and of their 32-bit checks. Subtracting (XOR) one
//! set's cells from the other's leaves the cells of the symmetric difference,
//! which peel: a cell whose key's check equals its check holds exactly one
//! item (false positive 2^-32), which is removed from every cell it maps to.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::ShortId;

/// Bytes of one encoded coded symbol (8-byte key sum, 4-byte check sum).
pub const SYMBOL_BYTES: usize = 12;

/// One coded symbol: XOR of short IDs and XOR of their checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Symbol {
    /// XOR of the short IDs in the cell.
    pub key: u64,
    /// XOR of the checks of those short IDs.
    pub check: u32,
}

impl Symbol {
    /// The symbol of a single short ID.
    pub fn of(key: ShortId) -> Self {
        Symbol {
            key,
            check: check(key),
        }
    }

    /// XORs `other` into `self`.
    pub fn xor(&mut self, other: Symbol) {
        self.key ^= other.key;
        self.check ^= other.check;
    }

    /// Whether the cell is empty.
    pub fn is_zero(&self) -> bool {
        self.key == 0 && self.check == 0
    }

    /// Whether the cell holds exactly one short ID (up to a 2^-32 false positive).
    pub fn is_pure(&self) -> bool {
        self.key != 0 && check(self.key) == self.check
    }

    /// Big-endian `key ‖ check`.
    pub fn to_bytes(&self) -> [u8; SYMBOL_BYTES] {
        let mut b = [0u8; SYMBOL_BYTES];
        b[..8].copy_from_slice(&self.key.to_be_bytes());
        b[8..].copy_from_slice(&self.check.to_be_bytes());
        b
    }

    /// Inverse of [`Symbol::to_bytes`].
    pub fn from_bytes(b: [u8; SYMBOL_BYTES]) -> Self {
        let mut k = [0u8; 8];
        k.copy_from_slice(&b[..8]);
        let mut c = [0u8; 4];
        c.copy_from_slice(&b[8..]);
        Symbol {
            key: u64::from_be_bytes(k),
            check: u32::from_be_bytes(c),
        }
    }
}

/// The splitmix64 output function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 32-bit check of a short ID: the high half of `mix64(key)`.
pub fn check(key: ShortId) -> u32 {
    (mix64(key) >> 32) as u32
}

/// The cell-index sequence of one short ID.
#[derive(Debug, Clone, Copy)]
pub struct IndexGen {
    state: u64,
    /// The current cell index.
    pub idx: u64,
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// Upper end of the remaining-difference estimate.
const MAX_CELLS_ESTIMATE: usize = super::MAX_SESSION_SYMBOLS;

/// Indices never exceed this, so arithmetic cannot overflow.
const MAX_INDEX: u64 = 1 << 62;

impl IndexGen {
    /// The sequence of `key`, positioned at cell 0.
    pub fn new(key: ShortId) -> Self {
        IndexGen { state: key, idx: 0 }
    }

    /// Moves to the next cell: with `u` uniform in (0, 1] from splitmix64,
    /// `next = max(idx + 1, ceil((idx + 2) / sqrt(u) - 2))`.
    pub fn advance(&mut self) {
        self.state = self.state.wrapping_add(GOLDEN);
        let r = mix64(self.state);
        let u = ((r >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let next = ((self.idx as f64 + 2.0) / u.sqrt() - 2.0).ceil();
        let next = if next >= MAX_INDEX as f64 {
            MAX_INDEX
        } else {
            next as u64
        };
        self.idx = next.max(self.idx + 1).min(MAX_INDEX);
    }
}

/// Produces consecutive coded symbols of a set of short IDs.
#[derive(Debug, Clone)]
pub struct Encoder {
    keys: Vec<ShortId>,
    gens: Vec<IndexGen>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    next_cell: u64,
}

impl Encoder {
    /// An encoder over `keys`, positioned at cell 0.
    pub fn new(keys: impl IntoIterator<Item = ShortId>) -> Self {
        let mut e = Encoder {
            keys: Vec::new(),
            gens: Vec::new(),
            heap: BinaryHeap::new(),
            next_cell: 0,
        };
        for k in keys {
            e.add(k, IndexGen::new(k));
        }
        e
    }

    /// Adds a key whose generator is positioned at or after the next cell.
    fn add(&mut self, key: ShortId, gen_: IndexGen) {
        let slot = self.keys.len();
        self.keys.push(key);
        self.gens.push(gen_);
        self.heap.push(Reverse((gen_.idx, slot)));
    }

    /// Index of the next cell [`Encoder::produce`] will emit.
    pub fn next_cell(&self) -> u64 {
        self.next_cell
    }

    /// XORs the next `out.len()` cells of the set into `out`.
    pub fn produce(&mut self, out: &mut [Symbol]) {
        let end = self.next_cell + out.len() as u64;
        while let Some(Reverse((idx, slot))) = self.heap.peek().copied() {
            if idx >= end {
                break;
            }
            self.heap.pop();
            let (Some(key), Some(g)) = (self.keys.get(slot).copied(), self.gens.get_mut(slot))
            else {
                continue;
            };
            if let Some(cell) = out.get_mut((idx - self.next_cell) as usize) {
                cell.xor(Symbol::of(key));
            }
            g.advance();
            self.heap.push(Reverse((g.idx, slot)));
        }
        self.next_cell = end;
    }

    /// Next `n` coded symbols of the set.
    pub fn next_symbols(&mut self, n: usize) -> Vec<Symbol> {
        let mut v = vec![Symbol::default(); n];
        self.produce(&mut v);
        v
    }
}

/// Why peeling stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeelError {
    /// More than the allowed number of differences were peeled.
    TooManyDifferences,
    /// A short ID was peeled twice: the input was not a valid encoding.
    Inconsistent,
}

/// Decodes the difference between a remote set (given as coded symbols)
/// and a local set.
#[derive(Debug, Clone)]
pub struct Decoder {
    local: Encoder,
    local_keys: Vec<ShortId>,
    peeled: Encoder,
    cells: Vec<Symbol>,
    seen: BTreeSet<ShortId>,
    remote_only: Vec<ShortId>,
    local_only: Vec<ShortId>,
    max_differences: usize,
}

impl Decoder {
    /// A decoder for the local set `keys`, resolving at most
    /// `max_differences` differences.
    pub fn new(keys: Vec<ShortId>, max_differences: usize) -> Self {
        let local = Encoder::new(keys.iter().copied());
        let mut local_keys = keys;
        local_keys.sort_unstable();
        Decoder {
            local,
            local_keys,
            peeled: Encoder::new([]),
            cells: Vec::new(),
            seen: BTreeSet::new(),
            remote_only: Vec::new(),
            local_only: Vec::new(),
            max_differences,
        }
    }

    /// Coded symbols received so far.
    pub fn received(&self) -> usize {
        self.cells.len()
    }

    /// Short IDs only the remote set holds.
    pub fn remote_only(&self) -> &[ShortId] {
        &self.remote_only
    }

    /// Short IDs only the local set holds.
    pub fn local_only(&self) -> &[ShortId] {
        &self.local_only
    }

    /// Whether decoding is complete (cell 0, which every item maps to, is empty).
    pub fn is_decoded(&self) -> bool {
        self.cells.first().is_some_and(Symbol::is_zero)
    }

    /// Maximum-likelihood estimate of the differences not yet peeled, from
    /// which of the upper half of the received cells are still non-empty
    /// (an item occupies cell `i` with probability about `2/(i+2)`).
    pub fn estimate_remaining(&self) -> u64 {
        let m = self.cells.len();
        let from = m / 2;
        let mut best = (f64::NEG_INFINITY, 1.0f64);
        let mut r = 1.0f64;
        while r <= (4 * MAX_CELLS_ESTIMATE) as f64 {
            let mut ll = 0.0;
            for (i, c) in self.cells.iter().enumerate().skip(from) {
                let p_zero = (1.0 - 2.0 / (i as f64 + 2.0)).powf(r);
                ll += if c.is_zero() {
                    p_zero.max(1e-300).ln()
                } else {
                    (1.0 - p_zero).max(1e-300).ln()
                };
            }
            if ll > best.0 {
                best = (ll, r);
            }
            r = (r * 1.05).ceil();
        }
        best.1 as u64
    }

    /// Adds the next remote coded symbols and peels what it can. Work is
    /// `O((symbols + new differences) · log(cells))` plus the local encoding.
    pub fn add_symbols(&mut self, remote: &[Symbol]) -> Result<(), PeelError> {
        let start = self.cells.len();
        let mut fresh = vec![Symbol::default(); remote.len()];
        self.local.produce(&mut fresh);
        self.peeled.produce(&mut fresh);
        for (c, r) in fresh.iter_mut().zip(remote) {
            c.xor(*r);
        }
        self.cells.extend_from_slice(&fresh);
        let mut stack: Vec<usize> = (start..self.cells.len()).collect();
        while let Some(i) = stack.pop() {
            let Some(cell) = self.cells.get(i).copied() else {
                continue;
            };
            if !cell.is_pure() {
                continue;
            }
            let x = cell.key;
            if !self.seen.insert(x) {
                return Err(PeelError::Inconsistent);
            }
            if self.seen.len() > self.max_differences {
                return Err(PeelError::TooManyDifferences);
            }
            if self.local_keys.binary_search(&x).is_ok() {
                self.local_only.push(x);
            } else {
                self.remote_only.push(x);
            }
            let sym = Symbol::of(x);
            let mut g = IndexGen::new(x);
            while let Some(c) = self.cells.get_mut(g.idx as usize) {
                c.xor(sym);
                stack.push(g.idx as usize);
                g.advance();
            }
            self.peeled.add(x, g);
        }
        Ok(())
    }
}
