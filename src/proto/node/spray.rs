//! The copy budget (binary spray): whether an event may go to a peer and
//! how many copies travel with it (`protocol-spec/wire.md`, "Copy budget").

use std::collections::BTreeSet;

use lru::LruCache;

use crate::crypto::keys::DeviceId;
use crate::event::{EventId, RoomId};

use super::carried::CarriedRooms;
use super::link::Link;

/// Whether this node holds two copies or more of `id` (it may spray it).
pub(super) fn spare(copies: &LruCache<EventId, (RoomId, u8)>, id: &EventId) -> bool {
    copies.peek(id).is_some_and(|c| c.1 >= 2)
}

/// Whether event `id` of `room` may go to `l`'s peer (`protocol-spec/wire.md`,
/// "Copy budget"): always without a budget, to a member of the room when
/// this node `vouched` for the event ([`vouched`]), otherwise only while
/// this node holds two copies or more.
pub(super) fn offerable(
    budget: u8,
    copies: &LruCache<EventId, (RoomId, u8)>,
    l: &Link,
    id: &EventId,
    room: &RoomId,
    vouched: bool,
) -> bool {
    budget == 0 || (vouched && l.peer.member_of(room)) || spare(copies, id)
}

/// Whether a node under a copy budget may hand `sender`'s event of `room`
/// to the room's members whatever its copies (`protocol-spec/wire.md`,
/// "Quarantine"): in an own room always (what it holds as strangers'
/// traffic there it never offers at all), in a carried room whose members
/// it knows only a member's event, in any other room always. An event it
/// does not vouch for goes only where its copies take it.
pub(super) fn vouched(
    own_rooms: &BTreeSet<RoomId>,
    carried: &CarriedRooms,
    room: &RoomId,
    sender: &DeviceId,
) -> bool {
    own_rooms.contains(room) || carried.members(room).is_none_or(|m| m.contains(sender))
}

/// Hands copies of an offerable event to `l`'s peer: a carrier gets half of
/// the `n >= 2` copies held (this node keeps the rest), a member or any peer
/// without a budget one (nothing changes here). Returns the copies handed.
pub(super) fn take_copies(
    budget: u8,
    copies: &mut LruCache<EventId, (RoomId, u8)>,
    l: &Link,
    id: &EventId,
    room: &RoomId,
) -> u8 {
    if budget == 0 || l.peer.member_of(room) {
        return 1;
    }
    let held = copies.pop(id).map_or(1, |c| c.1);
    if held < 2 {
        return 1;
    }
    let given = held / 2;
    let kept = held - given;
    if kept >= 2 {
        copies.put(*id, (*room, kept));
    }
    given
}
