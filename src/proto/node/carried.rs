//! Carried rooms: rooms this node holds and forwards without being a member
//! (a carrier), with the members the rooms layer verified from each room's
//! signed membership chain (`protocol-spec/wire.md`, "Carried rooms").
//!
//! A carried member's events stay in the strangers' class (evicted first,
//! inside the stranger pool, never costing an own room anything), but they
//! skip the per-key stranger budgets: a member's long history is carried at
//! link speed instead of `key_events_per_s`. What an outsider sends to a
//! carried room is still held to every stranger budget. Creating a room
//! costs nothing, so an outsider can make itself a carried member of its
//! own room; that buys it no more than fresh keys buy any Sybil flood: the
//! per-source share and the stranger pool still bound it (`store.md`,
//! "The stranger pool and intake budgets").

use std::collections::BTreeSet;

use lru::LruCache;

use crate::crypto::keys::DeviceId;
use crate::event::RoomId;
use crate::room::ROOM_CAP;

/// Carried rooms whose members the node remembers (least recently used
/// forgotten; a forgotten room's events are held to the stranger budgets
/// until its membership changes again).
pub const MAX_CARRIED_ROOMS: usize = 256;
/// Members remembered over all carried rooms together (about 48 bytes
/// each): the least recently used rooms are forgotten beyond it.
pub const MAX_CARRIED_MEMBERS: usize = 4096;

/// The members of carried rooms (`Command::CarriedMembers`), bounded by
/// [`MAX_CARRIED_ROOMS`] and [`MAX_CARRIED_MEMBERS`].
#[derive(Debug)]
pub(super) struct CarriedRooms {
    rooms: LruCache<RoomId, BTreeSet<DeviceId>>,
    members: usize,
}

impl CarriedRooms {
    pub(super) fn new() -> Self {
        Self {
            rooms: crate::bounded::lru(MAX_CARRIED_ROOMS),
            members: 0,
        }
    }

    /// Records `room`'s members now (at most `ROOM_CAP`); an empty set
    /// forgets the room.
    pub(super) fn set(&mut self, room: RoomId, members: BTreeSet<DeviceId>) {
        self.remove(&room);
        if members.is_empty() {
            return;
        }
        let members: BTreeSet<DeviceId> = members.into_iter().take(ROOM_CAP).collect();
        self.members += members.len();
        if let Some((_, old)) = self.rooms.push(room, members) {
            self.members -= old.len();
        }
        while self.members > MAX_CARRIED_MEMBERS {
            match self.rooms.pop_lru() {
                Some((_, old)) => self.members -= old.len(),
                None => break,
            }
        }
    }

    /// Records the creator of a room not known yet as its first member
    /// (its `create` just arrived; the rooms layer's word replaces it
    /// after the batch).
    /// Whether it was recorded.
    pub(super) fn created(&mut self, room: RoomId, creator: DeviceId) -> bool {
        if self.rooms.contains(&room) {
            return false;
        }
        self.set(room, BTreeSet::from([creator]));
        true
    }

    /// Forgets `room` (it became an own room).
    pub(super) fn remove(&mut self, room: &RoomId) {
        if let Some(old) = self.rooms.pop(room) {
            self.members -= old.len();
        }
    }

    /// Whether `sender` is a member of the carried room `room`.
    pub(super) fn is_member(&mut self, room: &RoomId, sender: &DeviceId) -> bool {
        self.rooms.get(room).is_some_and(|m| m.contains(sender))
    }

    /// The members of the carried room `room`, without marking it used.
    pub(super) fn members(&self, room: &RoomId) -> Option<&BTreeSet<DeviceId>> {
        self.rooms.peek(room)
    }

    /// [`Self::is_member`] without marking the room used.
    pub(super) fn peek_member(&self, room: &RoomId, sender: &DeviceId) -> bool {
        self.rooms.peek(room).is_some_and(|m| m.contains(sender))
    }

    /// Rooms remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(i: u16) -> DeviceId {
        let mut seed = [0u8; 32];
        seed[..2].copy_from_slice(&i.to_be_bytes());
        crate::crypto::identity::Identity::from_seed(&seed).device_id()
    }

    fn room(i: u16) -> RoomId {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&i.to_be_bytes());
        RoomId(b)
    }

    #[test]
    fn members_over_all_rooms_stay_bounded() {
        let mut c = CarriedRooms::new();
        let all: BTreeSet<DeviceId> = (0..ROOM_CAP as u16).map(dev).collect();
        let five = dev(5);
        for r in 0..200u16 {
            c.set(room(r), all.clone());
            assert!(c.members <= MAX_CARRIED_MEMBERS);
        }
        assert_eq!(c.members, (MAX_CARRIED_MEMBERS / ROOM_CAP) * ROOM_CAP);
        // The most recent rooms are kept.
        assert!(c.is_member(&room(199), &five));
        assert!(!c.is_member(&room(0), &five));
    }

    #[test]
    fn a_room_is_replaced_and_forgotten() {
        let mut c = CarriedRooms::new();
        c.set(room(1), [dev(1), dev(2)].into());
        c.set(room(1), [dev(3)].into());
        assert_eq!(c.members, 1);
        assert!(!c.is_member(&room(1), &dev(1)));
        assert!(c.is_member(&room(1), &dev(3)));
        c.remove(&room(1));
        assert_eq!((c.members, c.len()), (0, 0));
        c.set(room(2), BTreeSet::new());
        assert_eq!(c.len(), 0);
        for r in 0..(MAX_CARRIED_ROOMS as u16 + 10) {
            c.set(room(r), [dev(r)].into());
        }
        assert_eq!(c.len(), MAX_CARRIED_ROOMS);
        assert_eq!(c.members, MAX_CARRIED_ROOMS);
    }
}
