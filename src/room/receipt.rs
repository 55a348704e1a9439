//! Delivery and read receipts (`protocol-spec/rooms.md` §9 "Receipts").
//!
//! A receipt is a `Receipt` event, encrypted with the sender's chain like
//! a message, whose content ([`crate::room::Content::Receipt`]) says, per
//! sender of the room:
//!
//! * **delivered**: "I hold and decrypted every one of your events up to
//!   sequence `upto`, except these" (at most [`MAX_RECEIPT_EXCEPTIONS`]);
//! * **read**: "a person here was shown your messages up to `upto`".
//!
//! Entries are cumulative, so a device sends only the senders whose
//! figures moved since its previous receipt, and the newest entry a device
//! sent for a sender is its whole state for that sender ([`ReceiptBook`]).
//! `upto` only ever counts `Message` events: receiving a receipt never
//! moves a figure, so receipts are never sent for receipts.
//!
//! ```text
//! receipt   = [delivered: [* dentry], read: [* rentry]]
//! dentry    = [sender: bstr .size 32, upto: uint, except: [* uint]]
//! rentry    = [sender: bstr .size 32, upto: uint]
//! ```
//!
//! Canonical: entries strictly ascending by sender, at most
//! [`MAX_RECEIPT_ENTRIES`] per list, at least one entry in all; `upto ≥ 1`;
//! `except` strictly ascending, each `≥ 1` and `< upto`.

use std::collections::{BTreeMap, BTreeSet};

use crate::cbor::{CborError, Reader, Writer};
use crate::crypto::DeviceId;

/// Most entries in each of a receipt's lists.
pub const MAX_RECEIPT_ENTRIES: usize = 128;
/// Most sequence numbers a delivered entry lists as missing below `upto`.
pub const MAX_RECEIPT_EXCEPTIONS: usize = 16;
/// How long a device gathers what it received or showed before sending
/// one receipt for all of it (coalescing).
pub const RECEIPT_DELAY_MS: u64 = 15_000;

/// "Every event of `sender` up to `upto`, except `except`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Whose events.
    pub sender: DeviceId,
    /// Highest sequence number covered.
    pub upto: u64,
    /// Sequence numbers below `upto` not held (ascending).
    pub except: Vec<u64>,
}

impl Delivered {
    /// Whether this entry covers sequence number `seq`.
    pub fn covers(&self, seq: u64) -> bool {
        seq <= self.upto && self.except.binary_search(&seq).is_err()
    }

    /// The entry for `sender` whose highest event is `upto`, missing
    /// `missing` (ascending; `upto` itself missing lowers it): when more are missing than an entry may
    /// list, `upto` stops below the first one that does not fit.
    pub fn new(sender: DeviceId, upto: u64, missing: &[u64]) -> Option<Self> {
        let mut upto = upto;
        while upto > 0 && missing.binary_search(&upto).is_ok() {
            upto -= 1;
        }
        let mut except: Vec<u64> = missing.iter().copied().filter(|&s| s < upto).collect();
        if except.len() > MAX_RECEIPT_EXCEPTIONS {
            upto = except[MAX_RECEIPT_EXCEPTIONS] - 1;
            except.truncate(MAX_RECEIPT_EXCEPTIONS);
            while except.last().is_some_and(|&s| s >= upto) {
                upto = except.pop().unwrap_or(1).saturating_sub(1);
            }
        }
        (upto >= 1).then_some(Self {
            sender,
            upto,
            except,
        })
    }
}

/// A receipt's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptBody {
    /// Delivered entries, ascending by sender.
    pub delivered: Vec<Delivered>,
    /// Read entries `(sender, upto)`, ascending by sender.
    pub read: Vec<(DeviceId, u64)>,
}

/// Why a receipt body did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Malformed encoding.
    #[error("receipt encoding: {0}")]
    Cbor(#[from] CborError),
    /// A list, a sequence number or the order breaks the canonical rules.
    #[error("receipt: {0}")]
    Invalid(&'static str),
}

impl ReceiptBody {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty() && self.read.is_empty()
    }

    /// Writes the body (one CBOR array of 2).
    pub fn write(&self, w: &mut Writer) {
        w.array(2).array(self.delivered.len());
        for d in &self.delivered {
            w.array(3)
                .bytes(d.sender.as_bytes())
                .u64(d.upto)
                .array(d.except.len());
            for s in &d.except {
                w.u64(*s);
            }
        }
        w.array(self.read.len());
        for (sender, upto) in &self.read {
            w.array(2).bytes(sender.as_bytes()).u64(*upto);
        }
    }

    /// Reads and checks a body written by [`ReceiptBody::write`].
    pub fn read(r: &mut Reader<'_>) -> Result<Self, ReceiptError> {
        r.array_of(2, "receipt array of 2")?;
        let n = bounded(r.array()?, MAX_RECEIPT_ENTRIES)?;
        let mut delivered = Vec::with_capacity(n);
        for _ in 0..n {
            r.array_of(3, "delivered entry array of 3")?;
            let sender = device(r)?;
            let upto = positive(r.u64()?)?;
            let k = r.array()?;
            if k > MAX_RECEIPT_EXCEPTIONS {
                return Err(ReceiptError::Invalid("too many exceptions"));
            }
            let mut except = Vec::with_capacity(k);
            for _ in 0..k {
                let s = positive(r.u64()?)?;
                if s >= upto || except.last().is_some_and(|&p| p >= s) {
                    return Err(ReceiptError::Invalid("exceptions not ascending below upto"));
                }
                except.push(s);
            }
            delivered.push(Delivered {
                sender,
                upto,
                except,
            });
        }
        let n = bounded(r.array()?, MAX_RECEIPT_ENTRIES)?;
        let mut read = Vec::with_capacity(n);
        for _ in 0..n {
            r.array_of(2, "read entry array of 2")?;
            read.push((device(r)?, positive(r.u64()?)?));
        }
        let body = Self { delivered, read };
        if body.is_empty() {
            return Err(ReceiptError::Invalid("empty receipt"));
        }
        if !ascending(body.delivered.iter().map(|d| d.sender))
            || !ascending(body.read.iter().map(|(s, _)| *s))
        {
            return Err(ReceiptError::Invalid("entries not ascending by sender"));
        }
        Ok(body)
    }
}

fn bounded(n: usize, max: usize) -> Result<usize, ReceiptError> {
    if n > max {
        return Err(ReceiptError::Invalid("too many entries"));
    }
    Ok(n)
}

fn positive(v: u64) -> Result<u64, ReceiptError> {
    if v == 0 {
        return Err(ReceiptError::Invalid("sequence number 0"));
    }
    Ok(v)
}

fn device(r: &mut Reader<'_>) -> Result<DeviceId, ReceiptError> {
    let b = r.byte_array::<32>("32-byte device ID")?;
    DeviceId::from_bytes(&b).map_err(|_| ReceiptError::Invalid("not a device key"))
}

fn ascending(mut it: impl Iterator<Item = DeviceId>) -> bool {
    let Some(mut prev) = it.next() else {
        return true;
    };
    for d in it {
        if d <= prev {
            return false;
        }
        prev = d;
    }
    true
}

/// What a room's receipts say: the newest entry each device sent for each
/// sender (a later receipt of the same device replaces its entry).
#[derive(Debug, Clone, Default)]
pub struct ReceiptBook {
    /// (reader, sender) → (the receipt's sequence number, entry).
    delivered: BTreeMap<(DeviceId, DeviceId), (u64, Delivered)>,
    /// (reader, sender) → (the receipt's sequence number, upto).
    read: BTreeMap<(DeviceId, DeviceId), (u64, u64)>,
}

/// This device's own receipts in a room, folded as they were admitted, so
/// the receipt it owes next reads only its receipts admitted since
/// (kept with the room's session; a rebuilt session starts again from 0).
#[derive(Debug, Clone, Default)]
pub struct OwnReceipts {
    /// Admission index up to which the room's events were looked at
    /// ([`crate::room::RoomDag::admitted_from`]).
    pub seen: usize,
    /// What those receipts say.
    pub book: ReceiptBook,
}

impl ReceiptBook {
    /// Folds in the receipt `body` that `reader` sent at sequence `seq`.
    /// Entries a device sent about its own events are ignored.
    pub fn add(&mut self, reader: DeviceId, seq: u64, body: &ReceiptBody) {
        for d in &body.delivered {
            if d.sender == reader {
                continue;
            }
            let e = self
                .delivered
                .entry((reader, d.sender))
                .or_insert_with(|| (seq, d.clone()));
            if e.0 < seq {
                *e = (seq, d.clone());
            }
        }
        for (sender, upto) in &body.read {
            if *sender == reader {
                continue;
            }
            let e = self.read.entry((reader, *sender)).or_insert((seq, *upto));
            if e.0 < seq {
                *e = (seq, *upto);
            }
        }
    }

    /// The devices that hold `sender`'s event at `seq`.
    pub fn delivered_to(&self, sender: &DeviceId, seq: u64) -> BTreeSet<DeviceId> {
        self.delivered
            .iter()
            .filter(|((_, s), (_, d))| s == sender && d.covers(seq))
            .map(|((r, _), _)| *r)
            .collect()
    }

    /// The devices where a person was shown `sender`'s message at `seq`.
    pub fn read_by(&self, sender: &DeviceId, seq: u64) -> BTreeSet<DeviceId> {
        self.read
            .iter()
            .filter(|((_, s), (_, upto))| s == sender && seq <= *upto)
            .map(|((r, _), _)| *r)
            .collect()
    }

    /// `reader`'s newest delivered entry for `sender`.
    pub fn delivered_entry(&self, reader: &DeviceId, sender: &DeviceId) -> Option<&Delivered> {
        self.delivered.get(&(*reader, *sender)).map(|(_, d)| d)
    }

    /// `reader`'s newest read mark for `sender` (0: none).
    pub fn read_upto(&self, reader: &DeviceId, sender: &DeviceId) -> u64 {
        self.read.get(&(*reader, *sender)).map_or(0, |(_, u)| *u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor::Writer;
    use crate::crypto::Identity;
    use proptest::prelude::*;

    fn dev(seed: u8) -> DeviceId {
        Identity::from_seed(&[seed; 32]).device_id()
    }

    fn round_trip(b: &ReceiptBody) -> Result<ReceiptBody, ReceiptError> {
        let mut w = Writer::new();
        b.write(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        let out = ReceiptBody::read(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn entries_cover_up_to_their_sequence_except_the_missing() {
        let d = Delivered::new(dev(1), 10, &[3, 7, 12]).unwrap();
        assert_eq!(d.except, vec![3, 7]);
        assert!(d.covers(1) && d.covers(10) && !d.covers(3) && !d.covers(11));
        let many: Vec<u64> = (2..40).step_by(2).collect();
        let d = Delivered::new(dev(1), 50, &many).unwrap();
        assert_eq!(d.except.len(), MAX_RECEIPT_EXCEPTIONS);
        assert_eq!(d.upto, many[MAX_RECEIPT_EXCEPTIONS] - 1);
        // Everything from 1 missing: nothing to cover.
        let all: Vec<u64> = (1..=20).collect();
        assert!(Delivered::new(dev(1), 30, &all).is_none());
    }

    #[test]
    fn non_canonical_bodies_are_refused() {
        let (a, b) = if dev(1) < dev(2) {
            (dev(1), dev(2))
        } else {
            (dev(2), dev(1))
        };
        let ok = ReceiptBody {
            delivered: vec![Delivered::new(a, 5, &[2]).unwrap()],
            read: vec![(a, 4), (b, 1)],
        };
        assert_eq!(round_trip(&ok).unwrap(), ok);
        let unordered = ReceiptBody {
            delivered: vec![],
            read: vec![(b, 1), (a, 4)],
        };
        assert!(round_trip(&unordered).is_err());
        assert!(round_trip(&ReceiptBody::default()).is_err());
        let bad_except = ReceiptBody {
            delivered: vec![Delivered {
                sender: a,
                upto: 5,
                except: vec![5],
            }],
            read: vec![],
        };
        assert!(round_trip(&bad_except).is_err());
    }

    #[test]
    fn the_newest_entry_of_a_reader_counts() {
        let (a, b, c) = (dev(1), dev(2), dev(3));
        let mut book = ReceiptBook::default();
        let old = ReceiptBody {
            delivered: vec![Delivered::new(a, 3, &[2]).unwrap()],
            read: vec![(a, 1)],
        };
        let new = ReceiptBody {
            delivered: vec![Delivered::new(a, 5, &[]).unwrap()],
            read: vec![(a, 5)],
        };
        book.add(b, 9, &new);
        book.add(b, 4, &old);
        assert!(book.delivered_to(&a, 2).contains(&b));
        assert!(book.read_by(&a, 5).contains(&b));
        // A device's entries about itself say nothing.
        book.add(
            c,
            1,
            &ReceiptBody {
                delivered: vec![],
                read: vec![(c, 9)],
            },
        );
        assert!(book.read_by(&c, 1).is_empty());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = Reader::new(&bytes);
            let _ = ReceiptBody::read(&mut r);
        }

        #[test]
        fn entries_round_trip(upto in 1u64..1000, missing in proptest::collection::btree_set(1u64..1000, 0..40)) {
            let missing: Vec<u64> = missing.into_iter().collect();
            if let Some(d) = Delivered::new(dev(1), upto, &missing) {
                let body = ReceiptBody { delivered: vec![d.clone()], read: vec![] };
                prop_assert_eq!(round_trip(&body).unwrap(), body);
                for s in &missing {
                    prop_assert!(!d.covers(*s));
                }
            }
        }
    }
}
