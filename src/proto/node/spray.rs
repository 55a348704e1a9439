//! The copy budget (binary spray): whether an event may go to a peer and
//! how many copies travel with it (`protocol-spec/wire.md`, "Copy budget",
//! "Where copies go").
//!
//! Copies are conserved, so the budget bounds the carriers per event; what
//! decides delivery and latency is *which* carriers get them. Two rules
//! keep copies from piling up on nodes that move together and would meet
//! the same peers anyway:
//!
//! * **Companions.** A BLE peer linked for [`COMPANION_LINK_MS`] or longer
//!   is taken to move with this node (a team walking together). It gets
//!   copies of an event only once the event waited [`COMPANION_HOLD_MS`]
//!   for a fresh peer, so a node whose only peers are old ones (a fixed
//!   relay chain) still sprays, later.
//! * **Groups.** Of BLE peers whose links came up within
//!   [`GROUP_WINDOW_MS`] of each other (a team of five coming into range
//!   together), one gets a node's copies of an event: the rest of the
//!   group would carry them to the same places.

use std::collections::BTreeSet;

use lru::LruCache;

use crate::crypto::keys::DeviceId;
use crate::event::{EventId, RoomId};
use crate::proto::LinkKind;

use super::NodeConfig;
use super::carried::CarriedRooms;
use super::link::Link;

/// How long a BLE link must have been up for its peer to count as a
/// companion (`NodeConfig::companion_link_ms`): a peer met two minutes ago
/// and still in range is moving with this node.
pub const COMPANION_LINK_MS: u64 = 120_000;
/// How long an event waits, since its copies arrived, before a companion
/// may get some (`NodeConfig::companion_hold_ms`): a phone linked to the
/// same relay for an hour still carries that hour's messages, those older
/// than the hold that have copies left.
pub const COMPANION_HOLD_MS: u64 = 600_000;
/// BLE links that came up this close together are one group, which gets
/// one share of a node's copies of an event (`NodeConfig::group_window_ms`).
pub const GROUP_WINDOW_MS: u64 = 30_000;

/// The copies this node holds of one event, recorded only while it holds
/// two or more (one copy is the default: deliver to members only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Copies {
    /// The event's room.
    pub(super) room: RoomId,
    /// How many, at least 2 once recorded.
    pub(super) n: u8,
    /// When the copies arrived (the publisher's: when it published).
    pub(super) since_ms: u64,
    /// The link over which this node last handed copies of the event to a
    /// carrier, if it did: when it came up, and this side's nonce on it
    /// (which tells the link from others that came up at once).
    pub(super) sprayed_link: Option<(u64, u64)>,
}

impl Copies {
    /// Copies that arrived (or were made, by the publisher) at `now_ms`.
    pub(super) fn new(room: RoomId, n: u8, now_ms: u64) -> Self {
        Self {
            room,
            n,
            since_ms: now_ms,
            sprayed_link: None,
        }
    }
}

/// The copy records, bounded by `MAX_COPY_RECORDS`.
pub(super) type CopyMap = LruCache<EventId, Copies>;

/// Whether this node holds two copies or more of `id` (it may spray it).
pub(super) fn spare(copies: &CopyMap, id: &EventId) -> bool {
    copies.peek(id).is_some_and(|c| c.n >= 2)
}

/// The copy budget's settings at one instant: every decision of where an
/// event's copies may go.
#[derive(Debug, Clone, Copy)]
pub(super) struct SprayRule {
    budget: u8,
    now_ms: u64,
    companion_ms: u64,
    hold_ms: u64,
    group_ms: u64,
}

impl SprayRule {
    pub(super) fn new(config: &NodeConfig, now_ms: u64) -> Self {
        Self {
            budget: config.copy_budget,
            now_ms,
            companion_ms: config.companion_link_ms,
            hold_ms: config.companion_hold_ms,
            group_ms: config.group_window_ms,
        }
    }

    /// Whether `l`'s peer counts as a companion ([`COMPANION_LINK_MS`]).
    pub(super) fn companion(&self, l: &Link) -> bool {
        self.companion_ms != 0
            && l.kind == LinkKind::Ble
            && self.now_ms >= l.since_ms.saturating_add(self.companion_ms)
    }

    /// Whether copies `c` may go to a carrier on `l` now: two or more held;
    /// to a companion only once the hold is over; over BLE not to a peer
    /// met together with the one that got copies last ([`GROUP_WINDOW_MS`]),
    /// companions included (a team is one group).
    pub(super) fn may_spray(&self, c: &Copies, l: &Link) -> bool {
        if c.n < 2 {
            return false;
        }
        if self.companion(l) && self.now_ms < c.since_ms.saturating_add(self.hold_ms) {
            return false;
        }
        // The link that got them may have them again (its peer refused
        // them and asks again, `Want`).
        l.kind != LinkKind::Ble
            || c.sprayed_link.is_none_or(|(up_ms, nonce)| {
                nonce == l.nonce || up_ms.abs_diff(l.since_ms) >= self.group_ms
            })
    }

    /// Whether event `id` of `room` may go to `l`'s peer
    /// (`protocol-spec/wire.md`, "Copy budget"): always without a budget,
    /// to a member of the room when this node `vouched` for the event
    /// ([`vouched`]), otherwise only while it may hand copies to a carrier
    /// ([`Self::may_spray`]).
    pub(super) fn offerable(
        &self,
        copies: &CopyMap,
        l: &Link,
        id: &EventId,
        room: &RoomId,
        vouched: bool,
    ) -> bool {
        self.budget == 0
            || (vouched && l.peer.member_of(room))
            || copies.peek(id).is_some_and(|c| self.may_spray(c, l))
    }

    /// Hands copies of an offerable event to `l`'s peer: a carrier gets
    /// half of the `n >= 2` copies held (this node keeps the rest and
    /// notes the link, [`GROUP_WINDOW_MS`]), a member or any peer without a budget one
    /// (nothing changes here). Returns the copies handed.
    pub(super) fn take(&self, copies: &mut CopyMap, l: &Link, id: &EventId, room: &RoomId) -> u8 {
        if self.budget == 0 || l.peer.member_of(room) {
            return 1;
        }
        let Some(held) = copies.pop(id).filter(|c| c.n >= 2) else {
            return 1;
        };
        let given = held.n / 2;
        let kept = held.n - given;
        if kept >= 2 {
            let c = Copies {
                room: *room,
                n: kept,
                sprayed_link: Some((l.since_ms, l.nonce)),
                ..held
            };
            copies.put(*id, c);
        }
        given
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SourceKey;

    const ROOM: RoomId = RoomId([7; 16]);
    const ID: EventId = EventId([9; 32]);
    const MIN: u64 = 60_000;

    /// A link that came up at `up_ms` (its nonce: the time, so each test
    /// link is a different one).
    fn link(kind: LinkKind, up_ms: u64) -> Link {
        let config = NodeConfig::default();
        Link::new(&config, kind, 185, SourceKey([1; 16]), up_ms, false, up_ms)
    }

    fn rule(now_ms: u64) -> SprayRule {
        SprayRule::new(&NodeConfig::default(), now_ms)
    }

    fn held(n: u8, since_ms: u64) -> CopyMap {
        let mut copies = crate::bounded::lru(4);
        copies.put(ID, Copies::new(ROOM, n, since_ms));
        copies
    }

    #[test]
    fn a_companion_gets_copies_only_after_the_hold() {
        // A BLE peer linked for an hour moves with this node: copies that
        // arrived a minute ago wait for a fresh peer...
        let old = link(LinkKind::Ble, 0);
        let now = 60 * MIN;
        let copies = held(8, now - MIN);
        assert!(rule(now).companion(&old));
        assert!(!rule(now).offerable(&copies, &old, &ID, &ROOM, true));
        // ...which gets them at once...
        let fresh = link(LinkKind::Ble, now - 1_000);
        assert!(!rule(now).companion(&fresh));
        assert!(rule(now).offerable(&copies, &fresh, &ID, &ROOM, true));
        // ...and once they waited the hold, the companion gets them too (a
        // phone linked to one relay for an hour still carries its messages).
        let later = now - MIN + COMPANION_HOLD_MS;
        assert!(rule(later).offerable(&copies, &old, &ID, &ROOM, true));
        // A LAN link is never a companion (a fixed relay on the camp's LAN).
        let lan = link(LinkKind::Lan, 0);
        assert!(!rule(now).companion(&lan));
        assert!(rule(now).offerable(&copies, &lan, &ID, &ROOM, true));
    }

    #[test]
    fn one_share_per_group_met_at_once() {
        let now = 10 * MIN;
        let mut copies = held(16, now);
        let r = rule(now);
        // A team of five came into range within seconds: the first gets half.
        let team: Vec<Link> = (0..5)
            .map(|i| link(LinkKind::Ble, now - 5_000 + i * 1_000))
            .collect();
        assert!(r.offerable(&copies, &team[0], &ID, &ROOM, true));
        assert_eq!(r.take(&mut copies, &team[0], &ID, &ROOM), 8);
        // The rest of the team gets none: they go where the first goes.
        for l in &team[1..] {
            assert!(!r.offerable(&copies, l, &ID, &ROOM, true));
        }
        // The first may have them again (it refused them and asks again).
        assert!(r.offerable(&copies, &team[0], &ID, &ROOM, true));
        // A peer met later, apart from the team, gets half of what is left.
        let apart = link(LinkKind::Ble, now + GROUP_WINDOW_MS);
        let r = rule(now + GROUP_WINDOW_MS);
        assert!(r.offerable(&copies, &apart, &ID, &ROOM, true));
        assert_eq!(r.take(&mut copies, &apart, &ID, &ROOM), 4);
        // Copies are conserved: 16 = 8 + 4 + the 4 kept.
        assert_eq!(copies.peek(&ID).map(|c| c.n), Some(4));
        // Over LAN there are no groups.
        let lan = link(LinkKind::Lan, now + GROUP_WINDOW_MS);
        assert!(r.offerable(&copies, &lan, &ID, &ROOM, true));
    }

    #[test]
    fn one_copy_stays_and_the_rules_can_be_turned_off() {
        let now = 60 * MIN;
        let copies = held(2, now);
        let old = link(LinkKind::Ble, 0);
        // One copy: a carrier never gets it, companion or not.
        let one = held(1, now);
        assert!(!rule(now + COMPANION_HOLD_MS).offerable(
            &one,
            &link(LinkKind::Ble, now),
            &ID,
            &ROOM,
            true
        ));
        // Without a budget every peer gets every event.
        let config = NodeConfig {
            copy_budget: 0,
            ..NodeConfig::default()
        };
        assert!(SprayRule::new(&config, now).offerable(&copies, &old, &ID, &ROOM, false));
        // The rules off (`0`): an old BLE link is no companion.
        let config = NodeConfig {
            companion_link_ms: 0,
            ..NodeConfig::default()
        };
        assert!(SprayRule::new(&config, now).offerable(&copies, &old, &ID, &ROOM, true));
    }
}
