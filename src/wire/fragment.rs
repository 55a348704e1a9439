//! Fragmentation and reassembly for small-MTU links (`protocol-spec/wire.md`,
//! "Fragmentation").
//!
//! A packet is either a whole payload (`0x00 ‖ payload`) or one fragment
//! (`0x01 ‖ id:u16 ‖ index:u16 ‖ count:u16 ‖ chunk`, big-endian). All
//! fragments of a payload but the last carry chunks of one equal length, so a
//! fragment's place is `index × chunk length` and overlap can only be a
//! repeated index, which is rejected like any other inconsistency.
//!
//! [`Reassembler`] state is bounded: at most [`MAX_REASSEMBLIES_PER_LINK`]
//! payloads in progress, each at most [`crate::wire::MAX_FRAME_BYTES`], all
//! together at most [`MAX_REASSEMBLY_BYTES_PER_LINK`], and each dropped
//! [`REASSEMBLY_TIMEOUT_MS`] after its first fragment arrived.

use std::collections::BTreeMap;

use thiserror::Error;

use super::frame::MAX_FRAME_BYTES;

/// Smallest link MTU supported (BLE ATT default payload is 20 bytes).
pub const MIN_MTU: usize = 20;
/// Largest packet this layer produces or accepts.
pub const MAX_MTU: usize = 65_535;
/// Bytes of header on a fragment packet.
pub const FRAGMENT_HEADER_BYTES: usize = 7;
/// Bytes of header on a whole (unfragmented) packet.
pub const WHOLE_HEADER_BYTES: usize = 1;
/// Most reassemblies in progress on one link.
pub const MAX_REASSEMBLIES_PER_LINK: usize = 128;
/// Most bytes buffered across all reassemblies of one link.
pub const MAX_REASSEMBLY_BYTES_PER_LINK: usize = 256 * 1024;
/// Bytes charged against [`MAX_REASSEMBLY_BYTES_PER_LINK`] for each buffered
/// fragment on top of its chunk, so tiny fragments cannot hide bookkeeping cost.
pub const FRAGMENT_ACCOUNTING_OVERHEAD: usize = 64;
/// A reassembly not complete this long after its first fragment is dropped.
pub const REASSEMBLY_TIMEOUT_MS: u64 = 30_000;

const KIND_WHOLE: u8 = 0;
const KIND_FRAGMENT: u8 = 1;

/// Why a packet was rejected. Any of these closes the link.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FragmentError {
    /// The packet is empty, has an unknown kind byte or a short header.
    #[error("malformed packet header")]
    MalformedHeader,
    /// The MTU given to the fragmenter is outside [`MIN_MTU`]..=[`MAX_MTU`].
    #[error("MTU {0} outside the supported range")]
    BadMtu(usize),
    /// The payload to fragment or reassemble exceeds the frame size cap.
    #[error("payload of {0} bytes exceeds the frame size cap")]
    TooLarge(usize),
    /// A fragment claims fewer than two fragments, or more than the size cap allows.
    #[error("fragment count {0} is invalid")]
    BadCount(u16),
    /// A fragment index is not below the fragment count.
    #[error("fragment index {index} not below count {count}")]
    IndexOutOfRange {
        /// The claimed index.
        index: u16,
        /// The claimed count.
        count: u16,
    },
    /// A fragment with this index was already received (overlap).
    #[error("duplicate or overlapping fragment {index} of id {id}")]
    Duplicate {
        /// The fragment ID.
        id: u16,
        /// The repeated index.
        index: u16,
    },
    /// A fragment reuses an ID in progress with a different count or chunk size.
    #[error("fragment id {0} reused with inconsistent count or size")]
    Inconsistent(u16),
    /// Starting another reassembly would exceed [`MAX_REASSEMBLIES_PER_LINK`].
    #[error("too many reassemblies in progress")]
    TooManyInProgress,
    /// Buffering this fragment would exceed [`MAX_REASSEMBLY_BYTES_PER_LINK`].
    #[error("reassembly buffer budget exhausted")]
    BufferFull,
    /// An empty chunk.
    #[error("empty fragment")]
    Empty,
}

/// Splits payloads into packets for one link direction.
#[derive(Debug, Default, Clone)]
pub struct Fragmenter {
    next_id: u16,
}

impl Fragmenter {
    /// A fragmenter whose first fragment ID is 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Packets (each at most `mtu` bytes) carrying `payload`.
    pub fn fragment(&mut self, payload: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, FragmentError> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(FragmentError::BadMtu(mtu));
        }
        if payload.len() > MAX_FRAME_BYTES {
            return Err(FragmentError::TooLarge(payload.len()));
        }
        if payload.len() + WHOLE_HEADER_BYTES <= mtu {
            let mut p = Vec::with_capacity(payload.len() + 1);
            p.push(KIND_WHOLE);
            p.extend_from_slice(payload);
            return Ok(vec![p]);
        }
        let chunk = mtu - FRAGMENT_HEADER_BYTES;
        let count = payload.len().div_ceil(chunk);
        let count16 = u16::try_from(count).map_err(|_| FragmentError::TooLarge(payload.len()))?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        Ok(payload
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut p = Vec::with_capacity(FRAGMENT_HEADER_BYTES + c.len());
                p.push(KIND_FRAGMENT);
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&(i as u16).to_be_bytes());
                p.extend_from_slice(&count16.to_be_bytes());
                p.extend_from_slice(c);
                p
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
struct Partial {
    count: u16,
    /// Length of every non-last chunk, once one has been seen.
    chunk_len: Option<usize>,
    /// Length of the last chunk, once it has been seen.
    last_len: Option<usize>,
    chunks: BTreeMap<u16, Vec<u8>>,
    /// Bytes charged to the link budget (chunks plus per-fragment overhead).
    bytes: usize,
    deadline_ms: u64,
}

/// Reassembles packets from one link into payloads, with bounded state.
#[derive(Debug, Default, Clone)]
pub struct Reassembler {
    partials: BTreeMap<u16, Partial>,
    buffered: usize,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reassemblies in progress.
    pub fn in_progress(&self) -> usize {
        self.partials.len()
    }

    /// Bytes buffered across all reassemblies.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// The earliest deadline of a reassembly in progress: the driver should
    /// call [`Reassembler::expire`] then.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.partials.values().map(|p| p.deadline_ms).min()
    }

    /// Drops every reassembly whose deadline is at or before `now_ms`.
    /// Returns how many were dropped.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.partials.len();
        let mut freed = 0;
        self.partials.retain(|_, p| {
            let keep = p.deadline_ms > now_ms;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.buffered -= freed;
        before - self.partials.len()
    }

    fn drop_partial(&mut self, id: u16) {
        if let Some(p) = self.partials.remove(&id) {
            self.buffered -= p.bytes;
        }
    }

    /// Accepts one packet received at `now_ms`. Returns a whole payload when
    /// one is complete. On error the offending reassembly is discarded; the
    /// caller should close the link.
    pub fn receive(
        &mut self,
        now_ms: u64,
        packet: &[u8],
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        self.expire(now_ms);
        if packet.len() > MAX_MTU {
            return Err(FragmentError::TooLarge(packet.len()));
        }
        match packet {
            [KIND_WHOLE, payload @ ..] => {
                if payload.len() > MAX_FRAME_BYTES {
                    return Err(FragmentError::TooLarge(payload.len()));
                }
                Ok(Some(payload.to_vec()))
            }
            [KIND_FRAGMENT, i0, i1, x0, x1, c0, c1, chunk @ ..] => {
                let id = u16::from_be_bytes([*i0, *i1]);
                let index = u16::from_be_bytes([*x0, *x1]);
                let count = u16::from_be_bytes([*c0, *c1]);
                let r = self.accept(now_ms, id, index, count, chunk);
                if r.is_err() {
                    self.drop_partial(id);
                }
                r
            }
            _ => Err(FragmentError::MalformedHeader),
        }
    }

    fn accept(
        &mut self,
        now_ms: u64,
        id: u16,
        index: u16,
        count: u16,
        chunk: &[u8],
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if count < 2 {
            return Err(FragmentError::BadCount(count));
        }
        if index >= count {
            return Err(FragmentError::IndexOutOfRange { index, count });
        }
        if chunk.is_empty() {
            return Err(FragmentError::Empty);
        }
        // Every non-last chunk is at least one byte, and the whole at most the cap.
        if usize::from(count - 1) >= MAX_FRAME_BYTES {
            return Err(FragmentError::BadCount(count));
        }
        if !self.partials.contains_key(&id) && self.partials.len() >= MAX_REASSEMBLIES_PER_LINK {
            return Err(FragmentError::TooManyInProgress);
        }
        let charge = chunk.len() + FRAGMENT_ACCOUNTING_OVERHEAD;
        if self.buffered + charge > MAX_REASSEMBLY_BYTES_PER_LINK {
            return Err(FragmentError::BufferFull);
        }
        let p = self.partials.entry(id).or_insert_with(|| Partial {
            count,
            chunk_len: None,
            last_len: None,
            chunks: BTreeMap::new(),
            bytes: 0,
            deadline_ms: now_ms.saturating_add(REASSEMBLY_TIMEOUT_MS),
        });
        if p.count != count {
            return Err(FragmentError::Inconsistent(id));
        }
        if p.chunks.contains_key(&index) {
            return Err(FragmentError::Duplicate { id, index });
        }
        let is_last = index == count - 1;
        if is_last {
            p.last_len = Some(chunk.len());
        } else {
            match p.chunk_len {
                Some(l) if l != chunk.len() => return Err(FragmentError::Inconsistent(id)),
                _ => p.chunk_len = Some(chunk.len()),
            }
        }
        if let (Some(c), Some(l)) = (p.chunk_len, p.last_len) {
            if l > c {
                return Err(FragmentError::Inconsistent(id));
            }
            let total = c * usize::from(count - 1) + l;
            if total > MAX_FRAME_BYTES {
                return Err(FragmentError::TooLarge(total));
            }
        }
        p.chunks.insert(index, chunk.to_vec());
        p.bytes += charge;
        self.buffered += charge;
        if p.chunks.len() < usize::from(count) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(p.chunks.values().map(Vec::len).sum());
        for c in p.chunks.values() {
            out.extend_from_slice(c);
        }
        self.drop_partial(id);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn frag_packet(id: u16, index: u16, count: u16, chunk: &[u8]) -> Vec<u8> {
        let mut p = vec![KIND_FRAGMENT];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&index.to_be_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        p.extend_from_slice(chunk);
        p
    }

    proptest! {
        #[test]
        fn fragments_reassemble_in_any_order(
            payload in vec(any::<u8>(), 0..5000),
            mtu in MIN_MTU..600usize,
            seed in any::<u64>(),
        ) {
            let mut f = Fragmenter::new();
            let mut packets = f.fragment(&payload, mtu).unwrap();
            prop_assert!(packets.iter().all(|p| p.len() <= mtu));
            // Deterministic shuffle.
            let mut s = seed;
            for i in (1..packets.len()).rev() {
                s = crate::reconcile::riblt::mix64(s.wrapping_add(i as u64));
                packets.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut r = Reassembler::new();
            let mut out = None;
            for (k, p) in packets.iter().enumerate() {
                let got = r.receive(0, p).unwrap();
                if k + 1 < packets.len() {
                    prop_assert!(got.is_none());
                } else {
                    out = got;
                }
            }
            prop_assert_eq!(out, Some(payload));
            prop_assert_eq!(r.in_progress(), 0);
            prop_assert_eq!(r.buffered_bytes(), 0);
        }

        #[test]
        fn arbitrary_packets_stay_bounded(data in vec(any::<u8>(), 0..4000)) {
            crate::wire::fuzz_reassembly(&data);
        }
    }

    #[test]
    fn rejects_bad_index_count_and_empty() {
        let mut r = Reassembler::new();
        assert_eq!(
            r.receive(0, &frag_packet(1, 3, 3, b"x")),
            Err(FragmentError::IndexOutOfRange { index: 3, count: 3 })
        );
        assert_eq!(
            r.receive(0, &frag_packet(1, 0, 1, b"x")),
            Err(FragmentError::BadCount(1))
        );
        assert_eq!(
            r.receive(0, &frag_packet(1, 0, 2, b"")),
            Err(FragmentError::Empty)
        );
        assert_eq!(r.receive(0, &[]), Err(FragmentError::MalformedHeader));
        assert_eq!(
            r.receive(0, &[1, 0, 0]),
            Err(FragmentError::MalformedHeader)
        );
        assert_eq!(r.receive(0, &[7, 1]), Err(FragmentError::MalformedHeader));
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn rejects_duplicate_and_inconsistent_reuse() {
        let mut r = Reassembler::new();
        assert_eq!(r.receive(0, &frag_packet(5, 0, 3, b"abcd")), Ok(None));
        assert_eq!(
            r.receive(0, &frag_packet(5, 0, 3, b"abcd")),
            Err(FragmentError::Duplicate { id: 5, index: 0 })
        );
        // The offending reassembly is discarded.
        assert_eq!(r.in_progress(), 0);
        assert_eq!(r.receive(0, &frag_packet(5, 0, 3, b"abcd")), Ok(None));
        assert_eq!(
            r.receive(0, &frag_packet(5, 1, 4, b"abcd")),
            Err(FragmentError::Inconsistent(5))
        );
        assert_eq!(r.receive(0, &frag_packet(6, 0, 3, b"abcd")), Ok(None));
        assert_eq!(
            r.receive(0, &frag_packet(6, 1, 3, b"abc")),
            Err(FragmentError::Inconsistent(6))
        );
        assert_eq!(r.receive(0, &frag_packet(7, 2, 3, b"abcde")), Ok(None));
        assert_eq!(
            r.receive(0, &frag_packet(7, 0, 3, b"abcd")),
            Err(FragmentError::Inconsistent(7)),
            "last fragment longer than the others"
        );
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn at_most_128_in_progress_and_they_expire() {
        let mut r = Reassembler::new();
        for id in 0..MAX_REASSEMBLIES_PER_LINK as u16 {
            assert_eq!(r.receive(10, &frag_packet(id, 0, 2, b"ab")), Ok(None));
        }
        assert_eq!(
            r.receive(10, &frag_packet(500, 0, 2, b"ab")),
            Err(FragmentError::TooManyInProgress)
        );
        // Existing reassemblies can still complete.
        assert_eq!(
            r.receive(11, &frag_packet(0, 1, 2, b"c")),
            Ok(Some(b"abc".to_vec()))
        );
        assert_eq!(r.poll_timeout(), Some(10 + REASSEMBLY_TIMEOUT_MS));
        assert_eq!(r.expire(10 + REASSEMBLY_TIMEOUT_MS - 1), 0);
        assert_eq!(r.expire(10 + REASSEMBLY_TIMEOUT_MS), 127);
        assert_eq!((r.in_progress(), r.buffered_bytes()), (0, 0));
        // A late fragment starts afresh rather than completing a stale payload.
        assert_eq!(
            r.receive(10 + REASSEMBLY_TIMEOUT_MS, &frag_packet(1, 1, 2, b"c")),
            Ok(None)
        );
    }

    #[test]
    fn size_caps_hold() {
        let mut r = Reassembler::new();
        // Claims 65535 fragments of 100 bytes: over the frame cap once both lengths are known.
        assert_eq!(r.receive(0, &frag_packet(1, 0, 65535, &[0; 100])), Ok(None));
        assert!(matches!(
            r.receive(0, &frag_packet(1, 65534, 65535, &[0; 10])),
            Err(FragmentError::TooLarge(_))
        ));
        // The per-link byte budget.
        let mut r = Reassembler::new();
        let chunk = vec![0u8; 60_000];
        let mut err = None;
        for id in 0..10u16 {
            if let Err(e) = r.receive(0, &frag_packet(id, 0, 2, &chunk)) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(FragmentError::BufferFull));
        assert!(r.buffered_bytes() <= MAX_REASSEMBLY_BYTES_PER_LINK);
        let mut f = Fragmenter::new();
        assert_eq!(f.fragment(b"x", 19), Err(FragmentError::BadMtu(19)));
        assert!(matches!(
            f.fragment(&vec![0; MAX_FRAME_BYTES + 1], 185),
            Err(FragmentError::TooLarge(_))
        ));
    }
}
