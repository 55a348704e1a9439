//! Announcements: the Hello's room lists (held, member and spraying
//! rooms), `Members` updates, and what a responder offers a member under a
//! copy budget (`protocol-spec/wire.md`, "Hello", "Copy budget").

use std::collections::BTreeSet;

use rand_core::Rng;

use crate::event::{EventId, RoomId};
use crate::proto::io::LinkId;
use crate::store::{EventStore, StoreError};
use crate::wire::{CloseReason, Frame, MAX_HELLO_ROOMS};

use super::Node;

impl<S: EventStore, R: Rng> Node<S, R> {
    /// The `Members` list: own rooms, ascending, at most `MAX_HELLO_ROOMS`.
    pub(super) fn member_list(&self) -> Vec<RoomId> {
        self.own_rooms
            .iter()
            .take(MAX_HELLO_ROOMS)
            .copied()
            .collect()
    }

    /// Tells every link the new own-room set.
    pub(super) fn announce_members(&mut self) {
        let rooms = self.member_list();
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            self.send(
                link,
                &Frame::Members {
                    rooms: rooms.clone(),
                },
            );
        }
    }

    /// The Hello room list: own rooms and rooms held, ascending, at most
    /// `MAX_HELLO_ROOMS`. Under a copy budget only own and spraying rooms:
    /// a carried room this node holds one copy of goes to members only, and
    /// it offers those when it meets one (`offer_to_member`).
    pub(super) fn room_list(&mut self) -> Result<Vec<RoomId>, StoreError> {
        if self.config.copy_budget != 0 {
            let spraying = self.spraying_rooms()?;
            return Ok(merge_sorted(&spraying, &self.own_rooms)
                .take(MAX_HELLO_ROOMS)
                .collect());
        }
        let held = self.view.rooms(&self.store)?;
        Ok(merge_sorted(held, &self.own_rooms)
            .take(MAX_HELLO_ROOMS)
            .collect())
    }

    /// Under a copy budget the responder announces (`IHave`) what it
    /// carries of the rooms the peer is a member of: the initiator cannot
    /// know of those rooms (the Hello lists only own and spraying rooms)
    /// and grafts what it lacks (`protocol-spec/wire.md`, "Copy budget").
    pub(super) fn offer_to_member(&mut self, link: LinkId) -> Result<(), StoreError> {
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        if self.config.copy_budget == 0 || l.initiator {
            return Ok(());
        }
        let held = self.view.rooms(&self.store)?;
        let rooms: Vec<RoomId> = held
            .iter()
            .filter(|r| l.peer_members.contains(r) && !self.own_rooms.contains(r))
            .copied()
            .collect();
        for room in rooms {
            let ids: Vec<EventId> = self.room_items(&room)?.iter().map(|i| i.id).collect();
            self.send_ids(link, &ids, |ids| Frame::IHave { room, ids });
        }
        Ok(())
    }

    /// The Hello spraying list (`protocol-spec/wire.md`, "Copy budget"):
    /// rooms in which this node would hand an event to a carrier, ascending,
    /// at most `MAX_HELLO_ROOMS`: every room held without a budget, else the
    /// rooms of events held with two copies or more.
    pub(super) fn spraying_rooms(&mut self) -> Result<Vec<RoomId>, StoreError> {
        if self.config.copy_budget == 0 {
            let held = self.view.rooms(&self.store)?;
            return Ok(held.iter().take(MAX_HELLO_ROOMS).copied().collect());
        }
        let spraying: BTreeSet<RoomId> = self
            .copies
            .iter()
            .filter(|(_, (_, n))| *n >= 2)
            .map(|(_, (room, _))| *room)
            .collect();
        Ok(spraying.into_iter().take(MAX_HELLO_ROOMS).collect())
    }

    /// `lists`: the peer's held, member and spraying rooms.
    pub(super) fn on_hello(
        &mut self,
        link: LinkId,
        nonce: u64,
        lists: [Vec<RoomId>; 3],
    ) -> Result<(), StoreError> {
        let [rooms, members, spraying] = lists;
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(());
        };
        if l.hello_seen {
            self.penalise(link, "second hello", CloseReason::ProtocolViolation);
            return Ok(());
        }
        l.hello_seen = true;
        if nonce == l.nonce {
            // Astronomically unlikely unless the peer echoes our nonce.
            self.penalise(link, "nonce collision", CloseReason::ProtocolViolation);
            return Ok(());
        }
        l.initiator = l.nonce < nonce;
        l.peer_members = members.into_iter().take(MAX_HELLO_ROOMS).collect();
        l.peer_spraying = spraying.into_iter().take(MAX_HELLO_ROOMS).collect();
        // Every room the peer listed, whichever list names it.
        l.peer_rooms = rooms.into_iter().take(MAX_HELLO_ROOMS).collect();
        l.peer_rooms
            .extend(l.peer_members.iter().chain(&l.peer_spraying).copied());
        if l.initiator {
            let batch = self.next_rooms(link)?;
            self.start_sessions(link, batch)?;
        }
        self.offer_to_member(link)
    }
}

/// The union of the ascending `held` rooms and `own`, ascending.
pub(super) fn merge_sorted<'a>(
    held: &'a [RoomId],
    own: &'a BTreeSet<RoomId>,
) -> impl Iterator<Item = RoomId> + 'a {
    let mut a = held.iter().copied().peekable();
    let mut b = own.iter().copied().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x == y => {
            b.next();
            a.next()
        }
        (Some(x), Some(y)) if x < y => a.next(),
        (Some(_), Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}
