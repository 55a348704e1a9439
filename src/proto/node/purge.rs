//! Carried copies every member holds (`protocol-spec/rooms.md` §9,
//! "Carried copies"). A carrier drops its copy of an event `E` of a carried
//! room once, for every member of the room (the rooms layer's verified
//! word, `Command::CarriedMembers`), it holds an event signed by that
//! member with `E` in its causal past through events it holds (`E` itself
//! counts when the member signed it). Each such member holds `E`, so the
//! copy can never be needed again; receipts make this happen for members
//! who only read.
//!
//! Rooms that gained carried events (or whose members changed) are swept
//! at most every `PURGE_INTERVAL_MS`, `MAX_PURGE_ROOMS` per sweep, each
//! whole: its held events are decoded once and walked in one pass from the
//! heads back. A room with more than `MAX_PURGE_EVENTS` held events
//! is not swept (the work per sweep stays bounded). Rooms with fewer than
//! two known members are not swept: a room just created is known by its
//! creator alone until its membership is verified. The store keeps each
//! dropped event's tombstone, so it is never taken again as a stranger's,
//! and the node remembers the last `MAX_DROPPED_IDS` dropped IDs, so an
//! announcement of one is not grafted.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::Rng;

use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, RoomId};
use crate::store::{EventStore, StoreError};

use super::Node;

/// Least time between two sweeps of carried rooms.
pub const PURGE_INTERVAL_MS: u64 = 60_000;
/// Most carried rooms swept at once (the rest wait for the next sweep).
pub const MAX_PURGE_ROOMS: usize = 16;
/// Most held events of a carried room for it to be swept.
pub const MAX_PURGE_EVENTS: usize = 4096;
/// Most dropped event IDs remembered (not grafted when announced).
pub const MAX_DROPPED_IDS: usize = 8192;

impl<S: EventStore, R: Rng> Node<S, R> {
    /// `room` gained carried events or its members changed: sweep it with
    /// the next sweep.
    pub(super) fn note_carried(&mut self, room: RoomId) {
        if self.own_rooms.contains(&room) || self.carried.members(&room).is_none() {
            return;
        }
        if self.purge_dirty.len() < super::carried::MAX_CARRIED_ROOMS {
            self.purge_dirty.insert(room);
        }
        if self.next_purge_ms.is_none() {
            self.next_purge_ms = Some(self.now_ms.saturating_add(PURGE_INTERVAL_MS));
        }
    }

    /// Sweeps the noted rooms when the sweep is due.
    pub(super) fn purge_due(&mut self) -> Result<(), StoreError> {
        if self.next_purge_ms.is_none_or(|t| t > self.now_ms) {
            return Ok(());
        }
        self.next_purge_ms = None;
        let rooms: Vec<RoomId> = self
            .purge_dirty
            .iter()
            .take(MAX_PURGE_ROOMS)
            .copied()
            .collect();
        for room in rooms {
            self.purge_dirty.remove(&room);
            self.purge_room(room)?;
        }
        if !self.purge_dirty.is_empty() {
            self.next_purge_ms = Some(self.now_ms.saturating_add(PURGE_INTERVAL_MS));
        }
        Ok(())
    }

    /// Drops the copies of `room` every member holds.
    fn purge_room(&mut self, room: RoomId) -> Result<(), StoreError> {
        if self.own_rooms.contains(&room) {
            return Ok(());
        }
        let Some(members) = self.carried.members(&room).cloned() else {
            return Ok(());
        };
        if members.len() < 2 {
            return Ok(());
        }
        // A carried room: no own-room quarantine to leave out.
        let items = self.room_items(&room, false)?;
        if items.len() > MAX_PURGE_EVENTS {
            return Ok(());
        }
        let mut held: BTreeMap<EventId, (DeviceId, Vec<EventId>)> = BTreeMap::new();
        for item in &items {
            let Some(bytes) = self.store.get_event(&item.id)? else {
                continue;
            };
            // Verified when it was stored; only its sender and `prev` are read.
            if let Ok(ev) = Event::decode_unverified(&bytes) {
                held.insert(item.id, (ev.sender(), ev.prev().to_vec()));
            }
        }
        for id in held_by_every(&held, &members) {
            if self.store.drop_carried(&id)? {
                self.copies.pop(&id);
                self.dropped.put(id, ());
                self.stats.carried_dropped += 1;
            }
        }
        Ok(())
    }
}

/// The events of `held` (ID → sender, `prev`) in the causal past, through
/// events of `held`, of an event of `held` signed by each of `members`.
/// One pass from the heads back (each event after every held event citing
/// it), carrying per event the set of members one of whose events reaches
/// it, as a bitset: linear in events and citations.
fn held_by_every(
    held: &BTreeMap<EventId, (DeviceId, Vec<EventId>)>,
    members: &BTreeSet<DeviceId>,
) -> BTreeSet<EventId> {
    if members.is_empty() {
        return BTreeSet::new();
    }
    let index: BTreeMap<&DeviceId, usize> = members.iter().zip(0..).collect();
    let words = members.len().div_ceil(64);
    let all: Vec<u64> = (0..words)
        .map(|w| {
            let bits = members.len().saturating_sub(w * 64).min(64);
            if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            }
        })
        .collect();
    // How many held events cite each held event.
    let mut citing: BTreeMap<&EventId, usize> = held.keys().map(|id| (id, 0)).collect();
    for (_, prev) in held.values() {
        for p in prev {
            if let Some(n) = citing.get_mut(p) {
                *n += 1;
            }
        }
    }
    let mut reach: BTreeMap<&EventId, Vec<u64>> = BTreeMap::new();
    let mut ready: Vec<&EventId> = citing
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut out = BTreeSet::new();
    while let Some(id) = ready.pop() {
        let Some((sender, prev)) = held.get(id) else {
            continue;
        };
        let mut bits = reach.remove(id).unwrap_or_else(|| vec![0; words]);
        if let Some(&i) = index.get(sender)
            && let Some(w) = bits.get_mut(i / 64)
        {
            *w |= 1 << (i % 64);
        }
        if bits == all {
            out.insert(*id);
        }
        for p in prev {
            let Some((p, n)) = citing.get_key_value(p).map(|(k, n)| (*k, *n)) else {
                continue;
            };
            let into = reach.entry(p).or_insert_with(|| vec![0; words]);
            for (a, b) in into.iter_mut().zip(&bits) {
                *a |= b;
            }
            if n == 1 {
                ready.push(p);
            }
            citing.insert(p, n.saturating_sub(1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::event::EventKind;
    use crate::proto::io::{Command, Input};
    use crate::proto::node::NodeConfig;
    use crate::proto::node::testing::{carry, node};
    use crate::store::MetaStore;

    #[test]
    fn a_carrier_drops_the_copies_every_member_cites_and_keeps_the_rest() {
        let room = RoomId([0x43; 16]);
        let (ana, bo) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let mut n = node(NodeConfig::default());
        // Ana's message; Bo's receipt cites it (receipts are never cited,
        // so Ana never cites the receipt); Ana's second message cites
        // nothing Bo signed.
        let m1 = carry(&mut n, room, &ana, 1, EventKind::Message, vec![]);
        let r1 = carry(&mut n, room, &bo, 1, EventKind::Receipt, vec![m1]);
        let m2 = carry(&mut n, room, &ana, 2, EventKind::Message, vec![m1]);
        let members = BTreeSet::from([ana.device_id(), bo.device_id()]);
        // Known by one member only (a room just created): nothing goes.
        n.handle(
            10,
            Input::Command(Command::CarriedMembers {
                room,
                members: BTreeSet::from([ana.device_id()]),
            }),
        )
        .unwrap();
        n.handle(10 + PURGE_INTERVAL_MS, Input::Timeout).unwrap();
        assert_eq!(n.stats().carried_dropped, 0);
        // The verified members: not before the sweep is due, then Ana's
        // first message, which both hold, is dropped.
        n.handle(
            20 + PURGE_INTERVAL_MS,
            Input::Command(Command::CarriedMembers { room, members }),
        )
        .unwrap();
        assert_eq!(n.poll_timeout(), Some(20 + 2 * PURGE_INTERVAL_MS));
        n.handle(19 + 2 * PURGE_INTERVAL_MS, Input::Timeout)
            .unwrap();
        assert_eq!(n.stats().carried_dropped, 0, "not due yet");
        n.handle(20 + 2 * PURGE_INTERVAL_MS, Input::Timeout)
            .unwrap();
        assert_eq!(n.stats().carried_dropped, 1);
        assert!(!n.store.has_event(&m1).unwrap());
        assert!(n.store.has_event(&r1).unwrap() && n.store.has_event(&m2).unwrap());
        n.store.commit().unwrap();
        assert_eq!(n.store.stats().unwrap().evictions.delivered, 1);
        assert!(n.dropped.contains(&m1), "not grafted when announced again");
    }

    fn id(n: u8) -> EventId {
        EventId([n; 32])
    }

    fn dev(n: u8) -> DeviceId {
        Identity::from_seed(&[n; 32]).device_id()
    }

    /// The rule as written: the intersection, over members, of the
    /// causal pasts of their events.
    fn by_definition(
        held: &BTreeMap<EventId, (DeviceId, Vec<EventId>)>,
        members: &BTreeSet<DeviceId>,
    ) -> BTreeSet<EventId> {
        let mut common: Option<BTreeSet<EventId>> = None;
        for m in members {
            let mut past = BTreeSet::new();
            let mut stack: Vec<EventId> = held
                .iter()
                .filter(|(_, (s, _))| s == m)
                .map(|(id, _)| *id)
                .collect();
            while let Some(id) = stack.pop() {
                if past.insert(id) {
                    let prev = held.get(&id).map(|h| h.1.clone()).unwrap_or_default();
                    stack.extend(prev.into_iter().filter(|p| held.contains_key(p)));
                }
            }
            common = Some(match common {
                None => past,
                Some(c) => c.intersection(&past).copied().collect(),
            });
        }
        common.unwrap_or_default()
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_equals_the_rule(
            events in proptest::collection::vec(
                (0u8..5, proptest::collection::vec(0usize..40, 0..4)),
                0..30,
            ),
            members in proptest::collection::btree_set(0u8..6, 0..5),
        ) {
            // Event i cites earlier events (indices below i); an index
            // past the end is an event not held.
            let mut held = BTreeMap::new();
            let ids: Vec<EventId> = (0..40u8).map(|i| EventId([i + 1; 32])).collect();
            for (i, (sender, prev)) in events.iter().enumerate() {
                let prev: Vec<EventId> = prev
                    .iter()
                    .filter(|p| **p < i || **p >= events.len())
                    .map(|p| ids[*p])
                    .collect();
                held.insert(ids[i], (dev(*sender + 1), prev));
            }
            let members: BTreeSet<DeviceId> = members.iter().map(|m| dev(*m + 1)).collect();
            proptest::prop_assert_eq!(held_by_every(&held, &members), by_definition(&held, &members));
        }
    }

    #[test]
    fn only_what_every_member_has_in_its_past_is_held_by_every_member() {
        // a1 <- b1 <- a2; c1 (an outsider's, or a member's that cites
        // nothing held) stays.
        let mut held = BTreeMap::new();
        held.insert(id(1), (dev(0xa), vec![]));
        held.insert(id(2), (dev(0xb), vec![id(1), id(9)]));
        held.insert(id(3), (dev(0xa), vec![id(2)]));
        held.insert(id(4), (dev(0xc), vec![id(3)]));
        let ab = BTreeSet::from([dev(0xa), dev(0xb)]);
        assert_eq!(held_by_every(&held, &ab), BTreeSet::from([id(1), id(2)]));
        // A third member who signed nothing held: nothing is dropped.
        let abd = BTreeSet::from([dev(0xa), dev(0xb), dev(0xd)]);
        assert!(held_by_every(&held, &abd).is_empty());
        // With c a member, c's event covers everything before it.
        let abc = BTreeSet::from([dev(0xa), dev(0xb), dev(0xc)]);
        assert_eq!(held_by_every(&held, &abc), BTreeSet::from([id(1), id(2)]));
    }
}
