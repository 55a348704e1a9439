//! Set reconciliation of per-room event sets (`protocol-spec/reconcile.md`).
//!
//! Two parties each hold a set of [`Item`]s `(origin_ts_ms, EventId)` and
//! learn which items the other lacks, exchanging far fewer bytes than the
//! sets. A [`Session`] is a pure two-party state machine: the initiator
//! creates one with [`Session::initiate`], the responder with
//! [`Session::respond`], and each feeds every [`Message`] it receives to
//! [`Session::handle`], sending back what it returns, until
//! [`Session::outcome`] is `Some`.
//!
//! ```text
//!  initiator                                responder
//!  Init{salt, n_I, H(set_I)}  ───────────▶  equal? ─▶ Equal          (1 round trip)
//!                             ◀───────────  Sketch{n_R, 48 counters}
//!  estimate d, encode m≈2.4d  ───────────▶  peel (rateless IBLT)
//!  Symbols{0..m}                            ─▶ Decoded{you_lack, i_lack}   (2 round trips)
//!                             ◀───────────  or More{k} ─▶ Symbols{m..m+k} …
//! ```
//!
//! * **Equality** is a 16-byte SHA-256 of the whole sorted set.
//! * **Estimation** ([`estimate`]): a tug-of-war sketch, 48 counters of
//!   items by salted sign bit; the mean square of the counter differences
//!   estimates the difference size `d` (exact for `d = 1`, ±20 % beyond).
//! * **Rateless IBLT** ([`riblt`], after Yang et al., SIGCOMM 2024): each
//!   item is a salted 64-bit short ID mapped to an infinite sequence of
//!   cells with density ≈ 2/(i+2); a coded symbol is the XOR of the short
//!   IDs in a cell plus a XOR of 32-bit checks. The responder subtracts its
//!   own cells and peels pure cells until cell 0 is empty.
//!
//! The differences come back as short IDs: each side maps those it owns
//! back to full items ([`Outcome::peer_lacks`]); those it lacks arrive
//! later as event bodies from the peer. Memory and work per message are
//! bounded by [`MAX_SESSION_SYMBOLS`] and [`MAX_DIFFERENCES`].

pub mod estimate;
pub mod riblt;
mod session;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::crypto::domain;
use crate::event::{EventId, RoomId};

pub use riblt::{SYMBOL_BYTES, Symbol};
pub use session::{Outcome, Role, Session};

/// A salted 64-bit short ID of an item, valid within one session.
pub type ShortId = u64;

/// One element of a reconciled set, ordered by timestamp then ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    /// The event's origin timestamp, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The event ID.
    pub id: EventId,
}

/// Most coded symbols in one [`Message::Symbols`] (49 KB, under the frame cap).
pub const MAX_SYMBOLS_PER_MESSAGE: usize = 4096;
/// Most coded symbols a responder accepts in one session; beyond this the
/// session ends with [`FAIL_TOO_MANY_DIFFERENCES`].
pub const MAX_SESSION_SYMBOLS: usize = 8192;
/// Most differences (both directions together) one session resolves.
pub const MAX_DIFFERENCES: usize = 4096;
/// Counters in the difference estimator (each a 16-bit count).
pub const SKETCH_COUNTERS: usize = 48;
/// Coded symbols sent per estimated difference in the first batch.
pub const SYMBOLS_PER_DIFFERENCE: f64 = 2.4;
/// Coded symbols added to every first batch.
pub const SYMBOL_SLACK: usize = 8;
/// Below this many received symbols a follow-up batch at least doubles
/// them; above it, it adds at least half.
pub const DOUBLING_BELOW: usize = 128;
/// Smallest follow-up batch a responder asks for.
pub const MIN_MORE_SYMBOLS: usize = 16;

/// An initiator whose difference estimate exceeds this fails the session
/// at once, before sending symbols (the estimate is within about ±20 %, so
/// this leaves room below [`MAX_DIFFERENCES`]); the Node then splits the
/// slice into parts of about [`PART_TARGET_DIFFERENCES`] each.
pub const SPLIT_ESTIMATE_ABOVE: u64 = 3072;
/// Differences aimed for per part when a slice is split by its estimate.
pub const PART_TARGET_DIFFERENCES: u64 = 2048;

/// [`Message::Failed`] reason: the difference exceeds the session bounds.
pub const FAIL_TOO_MANY_DIFFERENCES: u64 = 1;
/// [`Message::Failed`] reason: the peer's messages were inconsistent.
pub const FAIL_INCONSISTENT: u64 = 2;

/// Most bits a partition prefix has: a session over a set with more than
/// [`MAX_DIFFERENCES`] differences splits into halves, quarters... down to
/// 1/2^`MAX_PART_BITS` of the set (`protocol-spec/reconcile.md`,
/// "Partitioned sessions"), so up to `MAX_DIFFERENCES << MAX_PART_BITS`
/// differences reconcile.
pub const MAX_PART_BITS: u8 = 8;

/// Which slice of a room's set a session reconciles: the items whose event
/// ID begins with the `bits`-bit prefix `prefix` (IDs are SHA-256 outputs,
/// so slices are even). `bits == 0` is the whole set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Part {
    /// Prefix length in bits, `0..=MAX_PART_BITS`.
    pub bits: u8,
    /// The prefix, `< 2^bits`.
    pub prefix: u32,
}

impl Part {
    /// The whole set.
    pub const WHOLE: Part = Part { bits: 0, prefix: 0 };

    /// Whether `item` is in this slice.
    pub fn contains(&self, item: &Item) -> bool {
        if self.bits == 0 {
            return true;
        }
        let b = item.id.as_bytes();
        let top = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        top >> (32 - u32::from(self.bits)) == self.prefix
    }

    /// The sub-slices that split this one into about `estimate /
    /// PART_TARGET_DIFFERENCES` parts (a power of two, at least 2), as deep
    /// as `MAX_PART_BITS` allows; `None` at the deepest level. Without an
    /// estimate (`0`), the two halves.
    pub fn split_for(&self, estimate: u64) -> Option<Vec<Part>> {
        let room = MAX_PART_BITS.checked_sub(self.bits).filter(|r| *r > 0)?;
        let parts = estimate.div_ceil(PART_TARGET_DIFFERENCES).max(2);
        let levels = (parts.next_power_of_two().trailing_zeros() as u8).clamp(1, room);
        let bits = self.bits + levels;
        let base = self.prefix << levels;
        Some(
            (0..1u32 << levels)
                .map(|i| Part {
                    bits,
                    prefix: base | i,
                })
                .collect(),
        )
    }

    /// Wire form: `bits << 32 | prefix`.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.bits) << 32) | u64::from(self.prefix)
    }

    /// Parses the wire form of a proper slice (`1..=MAX_PART_BITS` bits).
    pub fn from_u64(v: u64) -> Option<Part> {
        let bits = u8::try_from(v >> 32).ok()?;
        let prefix = (v & 0xffff_ffff) as u32;
        ((1..=MAX_PART_BITS).contains(&bits) && u64::from(prefix) < (1u64 << bits))
            .then_some(Part { bits, prefix })
    }
}

/// One reconciliation message; carried in `wire::Frame::Reconcile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Initiator → responder: open a session over one room's set.
    Init {
        /// The room whose set is reconciled.
        room: RoomId,
        /// The slice of the room's set ([`Part::WHOLE`] normally).
        part: Part,
        /// Random salt for short IDs and sketch hashes.
        salt: [u8; 8],
        /// The initiator's item count.
        count: u64,
        /// [`set_fingerprint`] of the initiator's set.
        fingerprint: [u8; 16],
    },
    /// Responder → initiator: sets differ; here is a difference estimator.
    Sketch {
        /// The responder's item count.
        count: u64,
        /// [`SKETCH_COUNTERS`] counters: counter `k` is the number of
        /// items whose sign bit `k` is set, modulo 2^16.
        counters: Vec<u16>,
    },
    /// Initiator → responder: coded symbols `start..start+len` of its set.
    Symbols {
        /// Index of the first symbol.
        start: u64,
        /// The symbols.
        symbols: Vec<Symbol>,
    },
    /// Responder → initiator: decoding needs `count` more symbols.
    More {
        /// How many.
        count: u64,
    },
    /// Responder → initiator: the sets are identical. Session over.
    Equal,
    /// Responder → initiator: decoded. Session over.
    Decoded {
        /// Short IDs of responder items the initiator lacks.
        you_lack: Vec<ShortId>,
        /// Short IDs of initiator items the responder lacks.
        i_lack: Vec<ShortId>,
    },
    /// Either side: the session failed (`FAIL_*` reason). Session over.
    Failed {
        /// Reason code.
        reason: u64,
    },
}

/// Why a reconciliation message was rejected. The session is over; the
/// peer sent something an honest implementation never sends.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReconcileError {
    /// A message arrived that the session's state does not allow.
    #[error("unexpected {0} message in this session state")]
    Unexpected(&'static str),
    /// Symbols did not continue where the previous batch ended.
    #[error("symbols start at {got}, expected {expected}")]
    OutOfOrder {
        /// The start index expected.
        expected: u64,
        /// The start index received.
        got: u64,
    },
    /// A sketch had a malformed shape.
    #[error("malformed sketch of {0} cells")]
    BadSketch(usize),
    /// The peer asked for more symbols than a session allows.
    #[error("peer requested {0} symbols beyond the session limit")]
    TooManySymbols(u64),
    /// A decoded list named a short ID this side does not hold, or repeated one.
    #[error("result names unknown or repeated short ID {0:016x}")]
    UnknownShortId(ShortId),
    /// A result list is longer than [`MAX_DIFFERENCES`].
    #[error("result lists too long")]
    TooManyDifferences,
    /// The session has already ended.
    #[error("session already finished")]
    Finished,
}

/// SHA-256 over the whole sorted set, truncated to 16 bytes: the equality test.
pub fn set_fingerprint(items: &[Item]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(domain::RECONCILE_SET);
    h.update((items.len() as u64).to_be_bytes());
    for it in items {
        h.update(it.ts_ms.to_be_bytes());
        h.update(it.id.0);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The salted per-item hash: short ID (never 0) and the estimator hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemHash {
    /// The item's short ID.
    pub short: ShortId,
    /// Estimator sign bits: bit `k` (from the least significant) is the
    /// item's sign in counter `k`.
    pub signs: u64,
}

/// `SHA-256(RECONCILE_ITEM ‖ salt ‖ ts_ms ‖ id)` split into the short ID
/// (bytes 0..8, 0 replaced by 1) and the estimator sign bits (bytes 8..16).
pub fn item_hash(salt: &[u8; 8], item: &Item) -> ItemHash {
    let d = Sha256::new()
        .chain_update(domain::RECONCILE_ITEM)
        .chain_update(salt)
        .chain_update(item.ts_ms.to_be_bytes())
        .chain_update(item.id.0)
        .finalize();
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[i * 8..i * 8 + 8]);
        u64::from_be_bytes(b)
    };
    let short = match word(0) {
        0 => 1,
        s => s,
    };
    ItemHash {
        short,
        signs: word(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_for_sizes_parts_from_the_estimate() {
        let halves = Part::WHOLE.split_for(0).unwrap();
        assert_eq!(halves.len(), 2);
        assert_eq!(halves[1], Part { bits: 1, prefix: 1 });
        // 10 000 differences: 5 parts of 2 048 -> 8 parts of 3 bits.
        let parts = Part::WHOLE.split_for(10_000).unwrap();
        assert_eq!(parts.len(), 8);
        assert!(parts.iter().all(|p| p.bits == 3));
        // Sub-slices of a slice keep its prefix and cover it exactly.
        let p = Part { bits: 2, prefix: 3 };
        let subs = p.split_for(5_000).unwrap();
        assert_eq!(subs.len(), 4);
        for s in &subs {
            assert_eq!(s.prefix >> 2, 3);
            assert_eq!(s.bits, 4);
        }
        // Never deeper than MAX_PART_BITS, and not at all at the bottom.
        let deep = Part {
            bits: MAX_PART_BITS - 1,
            prefix: 0,
        };
        assert_eq!(deep.split_for(1 << 40).unwrap().len(), 2);
        assert!(
            Part {
                bits: MAX_PART_BITS,
                prefix: 0
            }
            .split_for(0)
            .is_none()
        );
        for s in Part::WHOLE.split_for(u64::MAX).unwrap() {
            assert!(Part::from_u64(s.to_u64()).is_some());
        }
    }
}
