//! Room tokens: how a link's announcements name rooms without naming them
//! (`protocol-spec/wire.md`, "Room tokens").
//!
//! A `Rooms` or `Members` frame lists each room as an 8-byte token keyed by
//! the room ID and bound to the link by both sides' Hello nonces:
//!
//! ```text
//! token = HMAC-SHA-256(key = room_id, "meshrelay/v2/room-token\0"
//!                      || initiator_nonce (u64 BE) || responder_nonce (u64 BE))[0..8]
//! ```
//!
//! A peer that holds the room (it knows the ID) recognises it; anyone else
//! sees 8 pseudo-random bytes that change with every link, since each side
//! draws a fresh nonce per link. Room IDs are 128-bit hashes, so a peer
//! cannot test guesses of IDs it never held.
//!
//! A side that runs a copy budget also names itself by a **device token**,
//! so that a holder of an invite for it recognises an invitee that does not
//! know yet that it is one (`protocol-spec/wire.md`, "Invitees"):
//!
//! ```text
//! device_token = HMAC-SHA-256(key = device_id, "meshrelay/v2/device-token\0"
//!                             || initiator_nonce (u64 BE) || responder_nonce (u64 BE))[0..8]
//! ```

use hmac::{KeyInit, Mac};

use crate::crypto::domain;
use crate::crypto::keys::DeviceId;
use crate::event::RoomId;

type Hmac = hmac::Hmac<sha2::Sha256>;

/// Bytes in a room token.
pub const ROOM_TOKEN_BYTES: usize = 8;

/// One room as a link's announcements name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomToken(pub [u8; ROOM_TOKEN_BYTES]);

/// The token of `room` on the link whose initiator drew `initiator_nonce`
/// and whose responder drew `responder_nonce`.
pub fn room_token(room: &RoomId, initiator_nonce: u64, responder_nonce: u64) -> RoomToken {
    link_token(
        &room.0,
        domain::ROOM_TOKEN,
        initiator_nonce,
        responder_nonce,
    )
}

/// The device token of `device` on the link whose initiator drew
/// `initiator_nonce` and whose responder drew `responder_nonce`.
pub fn device_token(device: &DeviceId, initiator_nonce: u64, responder_nonce: u64) -> RoomToken {
    link_token(
        device.as_bytes(),
        domain::DEVICE_TOKEN,
        initiator_nonce,
        responder_nonce,
    )
}

/// HMAC-SHA-256 keyed by `id` (at most one hash block), over `label` and
/// both nonces, cut to [`ROOM_TOKEN_BYTES`].
fn link_token(id: &[u8], label: &[u8], initiator_nonce: u64, responder_nonce: u64) -> RoomToken {
    // A key shorter than the hash's block is zero-padded to the block
    // (RFC 2104): the padded block is the same HMAC key, and fixed-size.
    let mut key = hmac::digest::Key::<Hmac>::default();
    key[..id.len()].copy_from_slice(id);
    let mut mac = <Hmac as KeyInit>::new(&key);
    mac.update(label);
    mac.update(&initiator_nonce.to_be_bytes());
    mac.update(&responder_nonce.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let mut t = [0u8; ROOM_TOKEN_BYTES];
    t.copy_from_slice(&tag[..ROOM_TOKEN_BYTES]);
    RoomToken(t)
}

/// The tokens of `rooms` on one link, ascending and without repeats (two
/// rooms whose tokens collide on a link, about one pair in 2^64, are
/// announced once: the peer may miss one of them until the next link).
pub fn tokens_of<'a>(
    rooms: impl IntoIterator<Item = &'a RoomId>,
    initiator_nonce: u64,
    responder_nonce: u64,
) -> Vec<RoomToken> {
    let mut out: Vec<RoomToken> = rooms
        .into_iter()
        .map(|r| room_token(r, initiator_nonce, responder_nonce))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_depends_on_the_room_and_both_nonces() {
        let r = RoomId([7; 16]);
        let t = room_token(&r, 1, 2);
        assert_eq!(t, room_token(&r, 1, 2));
        assert_ne!(t, room_token(&r, 2, 1));
        assert_ne!(t, room_token(&r, 1, 3));
        assert_ne!(t, room_token(&RoomId([8; 16]), 1, 2));
    }

    #[test]
    fn a_device_token_depends_on_the_device_and_both_nonces() {
        let d = crate::crypto::Identity::from_seed(&[3; 32]).device_id();
        let e = crate::crypto::Identity::from_seed(&[4; 32]).device_id();
        let t = device_token(&d, 1, 2);
        assert_eq!(t, device_token(&d, 1, 2));
        assert_ne!(t, device_token(&d, 2, 1));
        assert_ne!(t, device_token(&e, 1, 2));
        // Another label: a device ID never gives a room token's bytes.
        let mut first16 = RoomId([0; 16]);
        first16.0.copy_from_slice(&d.as_bytes()[..16]);
        assert_ne!(t, room_token(&first16, 1, 2));
    }

    #[test]
    fn tokens_are_ascending_and_unique() {
        let rooms: Vec<RoomId> = (0..50u8).map(|b| RoomId([b; 16])).collect();
        let t = tokens_of(rooms.iter().chain(&rooms), 5, 9);
        assert_eq!(t.len(), 50);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }
}
