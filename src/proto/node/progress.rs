//! A room's sync progress (`protocol-spec/daemon.md`, "Status"): while
//! this device holds fewer of an own or expected room's events than a
//! peer reported holding, the room is *syncing*, with `have` (held here)
//! and `estimate` (the largest count a peer reported).
//!
//! A peer's count arrives with every whole-room reconciliation session:
//! the initiator's in its `Init`, the responder's in its `Sketch`
//! (`protocol-spec/reconcile.md`). A room handed over by `IHave` before
//! it is an own room (an invitee's, under a copy budget) counts as the
//! events held plus those announced and not fetched yet. A count is a peer's claim, shown as
//! progress and never acted on; it is capped at `MAX_ROOM_EVENTS`. Counts
//! of any room are kept, at most [`MAX_SYNCING_ROOMS`] (least recently
//! reported forgotten): a room's first session usually runs before this
//! device knows it is invited. Only own and expected rooms are reported.

use rand_core::Rng;

use crate::event::RoomId;
use crate::room::dag::MAX_ROOM_EVENTS;
use crate::store::{EventStore, StoreError};

use super::Node;

/// Most rooms whose peer-reported event count is remembered.
pub const MAX_SYNCING_ROOMS: usize = 64;

/// One room's first sync (or catch-up) in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    /// The room.
    pub room_id: RoomId,
    /// Events of the room held here.
    pub have: u64,
    /// Events of the room the best-stocked peer reported holding.
    pub estimate: u64,
}

impl<S: EventStore, R: Rng> Node<S, R> {
    /// Records a peer's event count for `room` (a whole-room session's
    /// `Init` or `Sketch`). Any room's is kept: the first session of a
    /// room usually runs before this device knows it will be a member.
    pub(super) fn note_peer_count(&mut self, room: RoomId, count: u64) {
        let count = count.min(MAX_ROOM_EVENTS as u64);
        match self.peer_counts.get_mut(&room) {
            Some(c) => *c = (*c).max(count),
            None => {
                self.peer_counts.push(room, count);
            }
        }
    }

    /// A fresh `IHave` for `room`: the events held plus those announced
    /// and not fetched yet is a count some peer holds at least.
    pub(super) fn note_announced(&mut self, room: RoomId) -> Result<(), StoreError> {
        let pending = self
            .pending_ihave
            .values()
            .filter(|(_, r, _)| *r == room)
            .count();
        let held = self.store.room_events(&room)?;
        self.note_peer_count(room, held + pending as u64);
        Ok(())
    }

    /// The rooms still syncing: held events below a peer's reported count,
    /// ascending by room. Rooms that caught up are forgotten.
    pub fn syncing(&mut self) -> Result<Vec<SyncProgress>, StoreError> {
        // Only own and expected rooms are reported; the store's room list
        // is read only when one of them has a count.
        let tracked = |r: &RoomId| self.own_rooms.contains(r) || self.expected.contains(r);
        if !self.peer_counts.iter().any(|(r, _)| tracked(r)) {
            return Ok(Vec::new());
        }
        let held: std::collections::BTreeMap<RoomId, u64> = self
            .store
            .rooms()?
            .into_iter()
            .map(|r| (r.room, r.events))
            .collect();
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (room, estimate) in self.peer_counts.iter() {
            if !tracked(room) {
                continue;
            }
            let have = held.get(room).copied().unwrap_or(0);
            if have >= *estimate {
                done.push(*room);
            } else {
                out.push(SyncProgress {
                    room_id: *room,
                    have,
                    estimate: *estimate,
                });
            }
        }
        for room in done {
            self.peer_counts.pop(&room);
        }
        out.sort_by_key(|p| p.room_id);
        Ok(out)
    }
}
