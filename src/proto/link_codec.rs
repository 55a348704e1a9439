//! Fragmentation and reassembly of frames over small-MTU links
//! (`protocol-spec/wire.md`, "Fragmentation").
//!
//! ```text
//! datagram = 0x00 frame                                  -- whole frame
//!          | 0x01 msg_id:u16be index:u16be count:u16be chunk  -- fragment
//! ```
//!
//! Link encryption (where a link has it) wraps whole frames *before* they
//! reach this layer, so it is paid once per frame, not once per fragment.
//! Reassembly is bounded: at most [`MAX_REASSEMBLIES`] frames in progress per
//! link, each at most `MAX_FRAME_BYTES`, each dropped after
//! [`REASSEMBLY_TIMEOUT_MS`].

use std::collections::BTreeMap;

use thiserror::Error;

use crate::proto::msg::MAX_FRAME_BYTES;

/// Most frames being reassembled at once on one link.
pub const MAX_REASSEMBLIES: usize = 128;
/// A partial frame older than this is dropped.
pub const REASSEMBLY_TIMEOUT_MS: u64 = 30_000;
/// Smallest MTU a link may have (BLE's minimum ATT payload is 20).
pub const MIN_MTU: usize = 20;
/// Bytes of a fragment header.
pub const FRAGMENT_HEADER: usize = 7;

const TAG_WHOLE: u8 = 0;
const TAG_FRAGMENT: u8 = 1;

/// Why a datagram was rejected. Any of these closes the link.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FragmentError {
    /// Empty datagram or unknown tag.
    #[error("malformed datagram")]
    Malformed,
    /// Index not below count, or count of zero.
    #[error("fragment index out of range")]
    BadIndex,
    /// The same fragment twice.
    #[error("duplicate fragment")]
    Duplicate,
    /// A fragment whose count disagrees with earlier fragments of its frame.
    #[error("fragment ID reused with a different count")]
    Inconsistent,
    /// The frame would exceed `MAX_FRAME_BYTES`.
    #[error("reassembled frame too large")]
    TooLarge,
    /// More than `MAX_REASSEMBLIES` frames in progress.
    #[error("too many frames in reassembly")]
    TooManyReassemblies,
}

struct Partial {
    count: u16,
    chunks: BTreeMap<u16, Vec<u8>>,
    bytes: usize,
    started_ms: u64,
}

/// Per-link fragmenter and reassembler.
pub struct LinkCodec {
    mtu: usize,
    next_id: u16,
    partial: BTreeMap<u16, Partial>,
}

impl LinkCodec {
    /// A codec for a link of `mtu` bytes per datagram.
    pub fn new(mtu: usize) -> Self {
        Self {
            mtu: mtu.max(MIN_MTU),
            next_id: 0,
            partial: BTreeMap::new(),
        }
    }

    /// Splits a frame into datagrams of at most the MTU.
    pub fn send(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        if frame.len() < self.mtu {
            let mut d = Vec::with_capacity(frame.len() + 1);
            d.push(TAG_WHOLE);
            d.extend_from_slice(frame);
            return vec![d];
        }
        let chunk = self.mtu - FRAGMENT_HEADER;
        let count = frame.len().div_ceil(chunk);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut d = Vec::with_capacity(FRAGMENT_HEADER + c.len());
                d.push(TAG_FRAGMENT);
                d.extend_from_slice(&id.to_be_bytes());
                d.extend_from_slice(&(i as u16).to_be_bytes());
                d.extend_from_slice(&(count as u16).to_be_bytes());
                d.extend_from_slice(c);
                d
            })
            .collect()
    }

    /// Takes one datagram; returns a complete frame when one is ready.
    pub fn receive(
        &mut self,
        datagram: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        self.partial
            .retain(|_, p| now_ms.saturating_sub(p.started_ms) < REASSEMBLY_TIMEOUT_MS);
        let (&tag, rest) = datagram.split_first().ok_or(FragmentError::Malformed)?;
        match tag {
            TAG_WHOLE => {
                if rest.len() > MAX_FRAME_BYTES {
                    return Err(FragmentError::TooLarge);
                }
                Ok(Some(rest.to_vec()))
            }
            TAG_FRAGMENT => {
                if rest.len() < FRAGMENT_HEADER - 1 {
                    return Err(FragmentError::Malformed);
                }
                let id = u16::from_be_bytes([rest[0], rest[1]]);
                let index = u16::from_be_bytes([rest[2], rest[3]]);
                let count = u16::from_be_bytes([rest[4], rest[5]]);
                let chunk = &rest[6..];
                if count == 0 || index >= count {
                    return Err(FragmentError::BadIndex);
                }
                if !self.partial.contains_key(&id) && self.partial.len() >= MAX_REASSEMBLIES {
                    return Err(FragmentError::TooManyReassemblies);
                }
                let p = self.partial.entry(id).or_insert_with(|| Partial {
                    count,
                    chunks: BTreeMap::new(),
                    bytes: 0,
                    started_ms: now_ms,
                });
                if p.count != count {
                    return Err(FragmentError::Inconsistent);
                }
                if p.chunks.contains_key(&index) {
                    return Err(FragmentError::Duplicate);
                }
                p.bytes += chunk.len();
                if p.bytes > MAX_FRAME_BYTES {
                    return Err(FragmentError::TooLarge);
                }
                p.chunks.insert(index, chunk.to_vec());
                if p.chunks.len() < count as usize {
                    return Ok(None);
                }
                let done = self
                    .partial
                    .remove(&id)
                    .map(|p| p.chunks.into_values().flatten().collect());
                Ok(done)
            }
            _ => Err(FragmentError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_reassemble_in_any_order() {
        let frame: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut tx = LinkCodec::new(23);
        let mut rx = LinkCodec::new(23);
        let mut parts = tx.send(&frame);
        assert!(parts.iter().all(|p| p.len() <= 23));
        parts.reverse();
        let mut out = None;
        for p in parts {
            if let Some(f) = rx.receive(&p, 0).unwrap() {
                out = Some(f);
            }
        }
        assert_eq!(out.unwrap(), frame);
    }

    #[test]
    fn adversarial_fragments_are_rejected() {
        let mut rx = LinkCodec::new(185);
        assert_eq!(rx.receive(&[], 0), Err(FragmentError::Malformed));
        assert_eq!(
            rx.receive(&[1, 0, 0, 0, 5, 0, 5, 1], 0),
            Err(FragmentError::BadIndex)
        );
        assert_eq!(rx.receive(&[1, 0, 0, 0, 0, 0, 2, 1], 0), Ok(None));
        assert_eq!(
            rx.receive(&[1, 0, 0, 0, 0, 0, 2, 1], 0),
            Err(FragmentError::Duplicate)
        );
        assert_eq!(
            rx.receive(&[1, 0, 0, 0, 1, 0, 3, 1], 0),
            Err(FragmentError::Inconsistent)
        );
        for id in 1..MAX_REASSEMBLIES as u16 {
            let h = id.to_be_bytes();
            assert_eq!(rx.receive(&[1, h[0], h[1], 0, 0, 0, 2, 1], 0), Ok(None));
        }
        assert_eq!(
            rx.receive(&[1, 0xff, 0xff, 0, 0, 0, 2, 1], 0),
            Err(FragmentError::TooManyReassemblies)
        );
        // After the timeout the partial frames are gone.
        assert_eq!(
            rx.receive(&[1, 0xff, 0xff, 0, 0, 0, 2, 1], REASSEMBLY_TIMEOUT_MS),
            Ok(None)
        );
    }
}
