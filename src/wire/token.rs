//! Room tokens: how a link's announcements name rooms without naming them
//! (`protocol-spec/wire.md`, "Room tokens").
//!
//! A `Rooms` or `Members` frame lists each room as a 4-byte token keyed by
//! the room ID and bound to the link by both sides' Hello nonces:
//!
//! ```text
//! token = SipHash-2-4(key = room_id, "meshrelay/v5/room-token\0"
//!                     || initiator_nonce (u64 BE) || responder_nonce (u64 BE))[0..4]
//! ```
//!
//! SipHash-2-4 is a pseudorandom function with a 128-bit key and a 64-bit
//! output, made for short inputs: a room ID is its key and a token its
//! output. It replaced HMAC-SHA-256 (wire versions 2 and 3, four SHA-256
//! blocks a token), since a carrier tests every room it holds at each
//! link-up. A peer that holds the room (it knows the ID) recognises it;
//! anyone else sees 4 pseudo-random bytes that change with every link,
//! since each side draws a fresh nonce per link. Room IDs are 128-bit
//! hashes, so a peer cannot test guesses of IDs it never held.
//!
//! A side that runs a copy budget also names itself by a **device token**,
//! so that a holder of an invite for it recognises an invitee that does not
//! know yet that it is one (`protocol-spec/wire.md`, "Invitees"). The
//! device ID's first half keys it and its second half is hashed with the
//! label, so the token depends on all of the ID:
//!
//! ```text
//! device_token = SipHash-2-4(key = device_id[0..16], "meshrelay/v5/device-token\0"
//!                            || device_id[16..32] || initiator_nonce (u64 BE)
//!                            || responder_nonce (u64 BE))[0..4]
//! ```
//!
//! A token is the first 4 of the 64-bit SipHash value's 8 little-endian
//! bytes (the byte order of the reference implementation's test vectors).
//! Wire version 4 sent all 8: the room lists were most of a link-up's bytes,
//! and 4 bytes keep a false match rare (about one test in 2^32 per room the
//! peer lists) and harmless: it costs an announcement or a reconciliation
//! the peer cannot use (`protocol-spec/wire.md`, "Room tokens").

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::crypto::domain;
use crate::crypto::keys::DeviceId;
use crate::event::RoomId;

/// Bytes in a room (or device) token: the first bytes of the SipHash output.
pub const ROOM_TOKEN_BYTES: usize = 4;

/// One room as a link's announcements name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomToken(pub [u8; ROOM_TOKEN_BYTES]);

/// The token of `room` on the link whose initiator drew `initiator_nonce`
/// and whose responder drew `responder_nonce`.
pub fn room_token(room: &RoomId, initiator_nonce: u64, responder_nonce: u64) -> RoomToken {
    link_token(
        &room.0,
        &[domain::ROOM_TOKEN],
        initiator_nonce,
        responder_nonce,
    )
}

/// The device token of `device` on the link whose initiator drew
/// `initiator_nonce` and whose responder drew `responder_nonce`.
pub fn device_token(device: &DeviceId, initiator_nonce: u64, responder_nonce: u64) -> RoomToken {
    let id = device.as_bytes();
    let mut key = [0u8; 16];
    key.copy_from_slice(&id[..16]);
    link_token(
        &key,
        &[domain::DEVICE_TOKEN, &id[16..]],
        initiator_nonce,
        responder_nonce,
    )
}

/// Longest token input: the device-token label, half a device ID, two nonces.
const MAX_TOKEN_INPUT: usize = 64;
const _: () = assert!(domain::DEVICE_TOKEN.len() + 16 + 16 <= MAX_TOKEN_INPUT);
const _: () = assert!(domain::ROOM_TOKEN.len() + 16 <= MAX_TOKEN_INPUT);

/// SipHash-2-4 keyed by `key` over `parts` and both nonces, hashed in one
/// `write` (the hasher buffers each call's ragged tail).
fn link_token(
    key: &[u8; 16],
    parts: &[&[u8]],
    initiator_nonce: u64,
    responder_nonce: u64,
) -> RoomToken {
    let mut msg = [0u8; MAX_TOKEN_INPUT];
    let mut n = 0;
    let nonces = [initiator_nonce.to_be_bytes(), responder_nonce.to_be_bytes()];
    for p in parts.iter().copied().chain(nonces.iter().map(|b| &b[..])) {
        // The parts are this module's labels and fixed-size IDs.
        if let Some(dst) = msg.get_mut(n..n + p.len()) {
            dst.copy_from_slice(p);
            n += p.len();
        }
    }
    let mut h = SipHasher24::new_with_key(key);
    h.write(&msg[..n]);
    let mut token = [0u8; ROOM_TOKEN_BYTES];
    token.copy_from_slice(&h.finish().to_le_bytes()[..ROOM_TOKEN_BYTES]);
    RoomToken(token)
}

/// The tokens of `rooms` on one link, ascending and without repeats (two
/// rooms whose tokens collide on a link, about one pair in 2^32, are
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
    fn the_device_token_depends_on_both_halves_of_the_id() {
        // Two valid device IDs that share their first half (the SipHash
        // key) differ in their tokens through the hashed second half.
        let d = crate::crypto::Identity::from_seed(&[3; 32]).device_id();
        let mut other = None;
        for b in 0..=255u8 {
            let mut bytes = *d.as_bytes();
            bytes[16] ^= 1;
            bytes[20] = b;
            if let Ok(e) = DeviceId::from_bytes(&bytes) {
                other = Some(e);
                break;
            }
        }
        let e = other.expect("some point shares the first half");
        assert_eq!(d.as_bytes()[..16], e.as_bytes()[..16]);
        assert_ne!(device_token(&d, 1, 2), device_token(&e, 1, 2));
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // SipHash paper, appendix A: key 00..0f, message 00..0e; the
        // reference implementation's `vectors.h` gives these output bytes.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        let mut h = SipHasher24::new_with_key(&key);
        h.write(&msg);
        assert_eq!(
            h.finish().to_le_bytes(),
            [0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1]
        );
    }

    #[test]
    fn tokens_are_ascending_and_unique() {
        let rooms: Vec<RoomId> = (0..50u8).map(|b| RoomId([b; 16])).collect();
        let t = tokens_of(rooms.iter().chain(&rooms), 5, 9);
        assert_eq!(t.len(), 50);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }
}
