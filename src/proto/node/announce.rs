//! Announcements: which rooms each side names on a link, and how
//! (`protocol-spec/wire.md`, "Room announcements", "Copy budget").
//!
//! The Hello names no room. After both Hellos each side knows both nonces;
//! the initiator sends `Rooms`, its rooms as [`RoomToken`]s keyed by each
//! room ID and bound to the link; the responder answers with an `Offer` of
//! the rooms it would hand over that the initiator did not list (by ID: a
//! peer cannot recognise a room it lacks), then its own `Rooms`. A side
//! keeps the peer's token lists ([`PeerRooms`]) and tests a room against
//! them when it needs to know, so it recognises exactly the rooms it knows
//! the IDs of (also those it gains while the link lasts) and learns
//! nothing of the rest; tokens differ on every link. Member and spraying
//! roles are sent only to a peer that runs a copy budget
//! (`FEATURE_ROLES`); `Members` replaces the member role. To such a peer a
//! side also names itself by a device token, so a holder of an invite for
//! it hands it the room it cannot announce yet (`offer_to_invitee`).

use std::collections::{BTreeMap, BTreeSet};

use rand_core::Rng;

use crate::crypto::keys::DeviceId;
use crate::event::{EventId, RoomId};
use crate::proto::io::LinkId;
use crate::store::{EventStore, StoreError};
use crate::wire::{
    CloseReason, FEATURE_ROLES, Frame, MAX_HELLO_ROOMS, RoomToken, device_token, room_token,
    tokens_of,
};

use super::Node;
use super::spray::{spare, vouched};

/// What the peer announced on a link: its token lists (kept as sent, each
/// ascending) and the rooms it offered by ID. A room is tested against the
/// lists by computing its token for the link (one SipHash), so nothing is
/// matched in advance and a room this side gains later is recognised too.
#[derive(Debug, Default)]
pub(super) struct PeerRooms {
    /// The link's nonces in token order (initiator's, responder's), set
    /// when the peer's Hello arrives.
    pub(super) nonces: (u64, u64),
    held: Vec<RoomToken>,
    members: Vec<RoomToken>,
    spraying: Vec<RoomToken>,
    /// Rooms the peer offered by ID (it is the responder and this side
    /// lacked them): held and spraying there.
    pub(super) offered: BTreeSet<RoomId>,
    /// The peer's device token, when it runs a copy budget and this side
    /// asked for roles.
    device: Option<RoomToken>,
    /// Rooms whose members include the device the peer's token names
    /// (`Node::offer_to_invitee`): the peer counts as their member, at
    /// most `MAX_HELLO_ROOMS`.
    invited: BTreeSet<RoomId>,
}

impl PeerRooms {
    /// The room's token on this link. Computed at each test, not kept:
    /// one SipHash costs less than a map lookup of the room.
    fn token(&self, room: &RoomId) -> RoomToken {
        room_token(room, self.nonces.0, self.nonces.1)
    }

    /// Whether the peer announced `room` (or offered it).
    pub(super) fn holds(&self, room: &RoomId) -> bool {
        self.offered.contains(room) || listed(&self.held, || self.token(room))
    }

    /// Whether the peer said it is a member of `room`, or its device token
    /// names one of the room's members (an invitee that does not know yet).
    pub(super) fn member_of(&self, room: &RoomId) -> bool {
        self.invited.contains(room) || listed(&self.members, || self.token(room))
    }

    /// Whether the peer named itself `device` (its device token).
    pub(super) fn is_device(&self, device: &DeviceId) -> bool {
        self.device
            .is_some_and(|t| t == device_token(device, self.nonces.0, self.nonces.1))
    }

    /// Whether the peer would hand carriers events of `room`.
    pub(super) fn sprays(&self, room: &RoomId) -> bool {
        self.offered.contains(room) || listed(&self.spraying, || self.token(room))
    }
}

/// Whether `token` (computed only for a non-empty list) is in `list`.
fn listed(list: &[RoomToken], token: impl FnOnce() -> RoomToken) -> bool {
    !list.is_empty() && list.binary_search(&token()).is_ok()
}

impl<S: EventStore, R: Rng> Node<S, R> {
    /// Own rooms, ascending, at most `MAX_HELLO_ROOMS`.
    pub(super) fn member_list(&self) -> Vec<RoomId> {
        self.own_rooms
            .iter()
            .take(MAX_HELLO_ROOMS)
            .copied()
            .collect()
    }

    /// Tells every link that asked for roles the new own-room set, once
    /// this side's `Rooms` went out on it.
    pub(super) fn announce_members(&mut self) {
        let rooms = self.member_list();
        let links: Vec<(LinkId, (u64, u64))> = self
            .links
            .iter()
            .filter(|(_, l)| l.rooms_sent && l.peer_wants_roles)
            .map(|(id, l)| (*id, l.peer.nonces))
            .collect();
        for (link, (i, r)) in links {
            let tokens = tokens_of(&rooms, i, r);
            self.send(link, &Frame::Members { tokens });
        }
    }

    /// The rooms this side announces: own rooms and rooms held, ascending,
    /// at most `MAX_HELLO_ROOMS`. Under a copy budget only own and
    /// spraying rooms: a carried room this node holds one copy of goes to
    /// members only, and it offers those when it meets one
    /// (`offer_by_announcement`).
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

    /// Sends this side's `Rooms` on `link` (the peer's nonce is known).
    fn send_rooms(&mut self, link: LinkId) -> Result<(), StoreError> {
        let Some((roles, (i, r))) = self
            .links
            .get(&link)
            .map(|l| (l.peer_wants_roles, l.peer.nonces))
        else {
            return Ok(());
        };
        let both_budget = roles && self.config.copy_budget != 0;
        let held = if both_budget {
            // Both sides run a budget: the peer needs only the member rooms
            // (it reconciles those with this side and hands over what it
            // carries of them); what this side sprays it announces
            // (`offer_by_announcement`).
            tokens_of(&self.member_list(), i, r)
        } else {
            tokens_of(&self.room_list()?, i, r)
        };
        let (mut members, mut spraying) = if both_budget {
            (held.clone(), Vec::new())
        } else if roles {
            let spraying = self.spraying_rooms()?;
            (
                tokens_of(&self.member_list(), i, r),
                tokens_of(&spraying, i, r),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        // A role names a listed room (the lists are capped separately).
        members.retain(|t| held.binary_search(t).is_ok());
        spraying.retain(|t| held.binary_search(t).is_ok());
        let device = roles.then(|| device_token(&self.own, i, r));
        self.send(
            link,
            &Frame::Rooms {
                held,
                members,
                spraying,
                device,
            },
        );
        if let Some(l) = self.links.get_mut(&link) {
            l.rooms_sent = true;
        }
        Ok(())
    }

    /// Under a copy budget, announces (`IHave`) what this side may hand the
    /// peer in the rooms they are not both members of
    /// (`protocol-spec/wire.md`, "Copy budget"): every event it holds of a
    /// room the peer is a member of and it is not (the peer cannot know of
    /// a carried room it was not told of), and, to a peer that runs a
    /// budget too, the events it holds two copies or more of in the rooms
    /// the peer is not a member of. Those rooms are then not reconciled:
    /// a set difference this side may not hand over was paid for in
    /// symbols at every anti-entropy period. To a peer without a budget
    /// only the responder announces, and only the first kind (it
    /// reconciles the rest).
    pub(super) fn offer_by_announcement(&mut self, link: LinkId) -> Result<(), StoreError> {
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        let both = l.peer_wants_roles;
        if self.config.copy_budget == 0 || (l.initiator && !both) {
            return Ok(());
        }
        let mut sprayed: BTreeMap<RoomId, Vec<EventId>> = BTreeMap::new();
        if both {
            let rule = self.spray_rule();
            for (id, c) in self.copies.iter() {
                if rule.may_spray(c, l) {
                    sprayed.entry(c.room).or_default().push(*id);
                }
            }
        }
        let held = self.view.rooms(&self.store)?;
        let mut offers: Vec<(RoomId, Option<Vec<EventId>>)> = Vec::new();
        for room in held.iter() {
            if l.peer.member_of(room) {
                if !self.own_rooms.contains(room) {
                    offers.push((*room, None));
                }
            } else if let Some(mut ids) = sprayed.remove(room) {
                ids.sort_unstable();
                offers.push((*room, Some(ids)));
            }
        }
        for (room, ids) in offers {
            match ids {
                Some(ids) => self.send_ids(link, &ids, |ids| Frame::IHave { room, ids }),
                None => self.announce_room(link, room)?,
            }
        }
        Ok(())
    }

    /// Under a copy budget, at each anti-entropy period of a link to a
    /// peer under a budget too, announces (`IHave`) the events whose
    /// companion hold ended since the last period and that may now go to
    /// the peer (`protocol-spec/wire.md`, "Where copies go"): nothing else
    /// would tell a companion of them, as carried rooms are not reconciled
    /// between two budgets and link-up is long past.
    pub(super) fn offer_after_hold(&mut self, link: LinkId) {
        let rule = self.spray_rule();
        let (now, hold) = (self.now_ms, self.config.companion_hold_ms);
        let Some(l) = self.links.get(&link) else {
            return;
        };
        let from = l.hold_offered_ms;
        let mut due: BTreeMap<RoomId, Vec<EventId>> = BTreeMap::new();
        if rule.companion(l) {
            for (id, c) in self.copies.iter() {
                // The hold itself is `may_spray`'s to check.
                if c.since_ms.saturating_add(hold) > from
                    && !l.known.contains(id)
                    && !l.peer.member_of(&c.room)
                    && rule.may_spray(c, l)
                {
                    due.entry(c.room).or_default().push(*id);
                }
            }
        }
        if let Some(l) = self.links.get_mut(&link) {
            l.hold_offered_ms = now;
        }
        for (room, mut ids) in due {
            ids.sort_unstable();
            self.send_ids(link, &ids, |ids| Frame::IHave { room, ids });
        }
    }

    /// Under a copy budget, hands the peer (`IHave`) the rooms it is
    /// invited to and not a member of yet (it may carry them): held rooms,
    /// own or carried, whose members (the rooms layer's word) include the
    /// device its token names (`protocol-spec/wire.md`, "Invitees"). The peer then counts as their
    /// member (a carrier's last copies go to it). An invitee does not know
    /// its invite yet, so it cannot announce the room; without a budget
    /// every held room reaches every peer anyway. Each device is tested
    /// once (one SipHash).
    pub(super) fn offer_to_invitee(&mut self, link: LinkId) -> Result<(), StoreError> {
        if self.config.copy_budget == 0 {
            return Ok(());
        }
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        if l.peer.device.is_none() {
            return Ok(());
        }
        let held = self.view.rooms(&self.store)?;
        let mut tested: BTreeMap<DeviceId, bool> = BTreeMap::new();
        let mut rooms = Vec::new();
        for room in held.iter() {
            // A peer that carries the room may still lack its invite.
            if l.peer.member_of(room) {
                continue;
            }
            let Some(members) = self
                .standing
                .get(room)
                .or_else(|| self.carried.members(room))
            else {
                continue;
            };
            if members
                .iter()
                .any(|d| *tested.entry(*d).or_insert_with(|| l.peer.is_device(d)))
            {
                rooms.push(*room);
            }
            if rooms.len() >= MAX_HELLO_ROOMS {
                break;
            }
        }
        self.hand_to_invitee(link, rooms)
    }

    /// A room's members grew (the rooms layer's word, for an own or a
    /// carried room): a link whose device token names one of the `added`
    /// members, and whose peer is not known as its member, is handed the
    /// room as at link-up ([`Self::offer_to_invitee`]). One SipHash per added
    /// member and link.
    pub(super) fn offer_to_new_members(
        &mut self,
        room: RoomId,
        added: &BTreeSet<DeviceId>,
    ) -> Result<(), StoreError> {
        if self.config.copy_budget == 0 || added.is_empty() {
            return Ok(());
        }
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.peer.device.is_some()
                    && l.peer.invited.len() < MAX_HELLO_ROOMS
                    && !l.peer.member_of(&room)
                    && added.iter().any(|d| l.peer.is_device(d))
            })
            .map(|(id, _)| *id)
            .collect();
        for link in links {
            self.hand_to_invitee(link, vec![room])?;
        }
        Ok(())
    }

    /// Counts the peer on `link` as a member of `rooms` and announces their
    /// events to it (`IHave`).
    fn hand_to_invitee(&mut self, link: LinkId, rooms: Vec<RoomId>) -> Result<(), StoreError> {
        if let Some(l) = self.links.get_mut(&link) {
            l.peer.invited.extend(rooms.iter().copied());
        }
        for room in rooms {
            self.announce_room(link, room)?;
        }
        Ok(())
    }

    /// Announces (`IHave`) every event held of `room` on `link`.
    fn announce_room(&mut self, link: LinkId, room: RoomId) -> Result<(), StoreError> {
        // Never what this node holds of an own room as strangers' traffic,
        // nor, of a carried room, events it does not vouch for and holds
        // no copies to give of (`wire.md`, "Quarantine").
        let skip = self.own_rooms.contains(&room);
        let mut ids: Vec<EventId> = self.room_items(&room, skip)?.iter().map(|i| i.id).collect();
        if self.config.copy_budget != 0 && self.carried.members(&room).is_some() {
            let mut kept = Vec::with_capacity(ids.len());
            for id in ids {
                let sender = self.store.event_info(&id)?.map(|i| i.sender);
                if spare(&self.copies, &id)
                    || sender.is_some_and(|s| vouched(&self.own_rooms, &self.carried, &room, &s))
                {
                    kept.push(id);
                }
            }
            ids = kept;
        }
        self.send_ids(link, &ids, |ids| Frame::IHave { room, ids });
        Ok(())
    }

    /// The rooms in which this node would hand an event to a carrier
    /// (`protocol-spec/wire.md`, "Copy budget"), ascending, at most
    /// `MAX_HELLO_ROOMS`: every room held without a budget, else the rooms
    /// of events held with two copies or more.
    pub(super) fn spraying_rooms(&mut self) -> Result<Vec<RoomId>, StoreError> {
        if self.config.copy_budget == 0 {
            let held = self.view.rooms(&self.store)?;
            return Ok(held.iter().take(MAX_HELLO_ROOMS).copied().collect());
        }
        let spraying: BTreeSet<RoomId> = self
            .copies
            .iter()
            .filter(|(_, c)| c.n >= 2)
            .map(|(_, c)| c.room)
            .collect();
        Ok(spraying.into_iter().take(MAX_HELLO_ROOMS).collect())
    }

    /// The peer's Hello: its nonce fixes the roles and the tokens; the
    /// initiator announces first.
    pub(super) fn on_hello(
        &mut self,
        link: LinkId,
        nonce: u64,
        features: u64,
    ) -> Result<(), StoreError> {
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
        l.peer.nonces = if l.initiator {
            (l.nonce, nonce)
        } else {
            (nonce, l.nonce)
        };
        l.peer_wants_roles = features & FEATURE_ROLES != 0;
        if l.initiator {
            self.send_rooms(link)?;
        }
        Ok(())
    }

    /// The peer's `Offer` (the responder's, before its `Rooms`): rooms it
    /// would hand this side, which lacks them.
    pub(super) fn on_offer(&mut self, link: LinkId, rooms: Vec<RoomId>) -> Result<(), StoreError> {
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(());
        };
        if !l.hello_seen || !l.initiator || l.rooms_seen || l.offer_seen {
            self.penalise(link, "offer out of order", CloseReason::ProtocolViolation);
            return Ok(());
        }
        l.offer_seen = true;
        l.peer.offered.extend(rooms);
        Ok(())
    }

    /// The peer's `Rooms`: kept as the peer's lists. The initiator then
    /// starts reconciling; the responder offers what the initiator lacks
    /// and announces its own rooms.
    pub(super) fn on_rooms(
        &mut self,
        link: LinkId,
        lists: [Vec<RoomToken>; 3],
        device: Option<RoomToken>,
    ) -> Result<(), StoreError> {
        let [held, members, spraying] = lists;
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(());
        };
        if !l.hello_seen || l.rooms_seen {
            self.penalise(link, "rooms out of order", CloseReason::ProtocolViolation);
            return Ok(());
        }
        l.rooms_seen = true;
        l.peer.held = held;
        l.peer.members = members;
        l.peer.spraying = spraying;
        l.peer.device = device;
        self.offer_to_invitee(link)?;
        if self.links.get(&link).is_some_and(|l| l.initiator) {
            let batch = self.next_rooms(link)?;
            self.start_sessions(link, batch)?;
            return self.offer_by_announcement(link);
        }
        // Between two sides under a budget, what one sprays to the other
        // goes by announcement (`offer_by_announcement`), not by `Offer`.
        let spraying = self.spraying_rooms()?;
        let offer: Vec<RoomId> = match self.links.get(&link) {
            Some(l) if self.config.copy_budget != 0 && l.peer_wants_roles => Vec::new(),
            Some(l) => spraying.into_iter().filter(|r| !l.peer.holds(r)).collect(),
            None => return Ok(()),
        };
        if !offer.is_empty() {
            self.send(link, &Frame::Offer { rooms: offer });
        }
        self.send_rooms(link)?;
        self.offer_by_announcement(link)
    }

    /// The peer's `Members` update: its new member list. Under a budget,
    /// the carried rooms it became a member of are announced to it as at
    /// link-up (`offer_by_announcement`).
    pub(super) fn on_members(
        &mut self,
        link: LinkId,
        tokens: Vec<RoomToken>,
    ) -> Result<(), StoreError> {
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        if !l.hello_seen {
            self.penalise(link, "members before hello", CloseReason::ProtocolViolation);
            return Ok(());
        }
        let carried: Vec<RoomId> = if self.config.copy_budget == 0 {
            Vec::new()
        } else {
            let held = self.view.rooms(&self.store)?;
            held.iter()
                .filter(|r| !self.own_rooms.contains(r) && !l.peer.member_of(r))
                .copied()
                .collect()
        };
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(());
        };
        l.peer.members = tokens;
        let gained: Vec<RoomId> = carried
            .into_iter()
            .filter(|r| l.peer.member_of(r))
            .collect();
        for room in gained {
            self.announce_room(link, room)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    //! The announcement order (`protocol-spec/wire.md`, "Room
    //! announcements"), one node fed frames by hand.

    use rand::rngs::StdRng;

    use super::*;
    use crate::crypto::identity::Identity;
    use crate::proto::NodeConfig;
    use crate::proto::io::{Input, LinkKind, Output};
    use crate::store::{MemoryStore, SourceKey};
    use crate::wire::{Fragmenter, MAX_FRAME_BYTES, MAX_MTU};

    const LINK: LinkId = LinkId(1);
    const ROOM: RoomId = RoomId([0x42; 16]);

    #[test]
    fn a_peers_lists_answer_for_the_rooms_it_announced_only() {
        let rooms: Vec<RoomId> = (0..MAX_HELLO_ROOMS as u32 + 40)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                RoomId(id)
            })
            .collect();
        let nonces = (7, 9);
        // The peer holds every other room.
        let held = tokens_of(rooms.iter().step_by(2), nonces.0, nonces.1);
        let peer = PeerRooms {
            nonces,
            held,
            ..PeerRooms::default()
        };
        for (i, r) in rooms.iter().enumerate() {
            assert_eq!(peer.holds(r), i % 2 == 0, "room {i}");
        }
    }

    /// A node of one own room, with a link up, and what it sent.
    fn node() -> (Node<MemoryStore, StdRng>, Vec<Frame>) {
        let mut n = crate::proto::node::testing::node(NodeConfig::default());
        n.own_rooms.insert(ROOM);
        let sent = link_up(&mut n);
        (n, sent)
    }

    /// Brings `LINK` up; returns what the node sent (its Hello).
    fn link_up(n: &mut Node<MemoryStore, StdRng>) -> Vec<Frame> {
        n.handle(
            0,
            Input::LinkUp {
                link: LINK,
                kind: LinkKind::Memory,
                mtu: MAX_MTU,
                source: SourceKey([1; 16]),
            },
        )
        .unwrap();
        drain(n)
    }

    /// The frames the node sent since the last call (a closed link ends
    /// with the node's `Close`).
    fn drain(n: &mut Node<MemoryStore, StdRng>) -> Vec<Frame> {
        let mut r = crate::wire::Reassembler::new();
        let mut out = Vec::new();
        while let Some(o) = n.poll_output() {
            if let Output::Transmit { bytes, .. } = o
                && let Ok(Some(f)) = r.receive(0, &bytes)
            {
                out.push(Frame::decode(&f).unwrap());
            }
        }
        out
    }

    /// Feeds the encoded frame `bytes`; returns what the node sent.
    fn feed_bytes(n: &mut Node<MemoryStore, StdRng>, bytes: &[u8]) -> Vec<Frame> {
        for d in Fragmenter::new().fragment(bytes, MAX_MTU).unwrap() {
            n.handle(
                1,
                Input::Received {
                    link: LINK,
                    bytes: d,
                },
            )
            .unwrap();
        }
        drain(n)
    }

    fn feed(n: &mut Node<MemoryStore, StdRng>, frame: &Frame) -> Vec<Frame> {
        feed_bytes(n, &frame.encode())
    }

    fn hello(nonce: u64, features: u64) -> Frame {
        Frame::Hello {
            max_frame_bytes: MAX_FRAME_BYTES as u64,
            features,
            nonce,
        }
    }

    fn rooms(held: Vec<RoomToken>, members: Vec<RoomToken>) -> Frame {
        Frame::Rooms {
            held,
            members,
            spraying: vec![],
            device: None,
        }
    }

    fn closed(frames: &[Frame]) -> bool {
        frames.iter().any(|f| matches!(f, Frame::Close { .. }))
    }

    #[test]
    fn the_hello_names_no_room_and_the_initiator_announces_tokens() {
        let (mut n, sent) = node();
        let Some(Frame::Hello {
            nonce, features, ..
        }) = sent.first().cloned()
        else {
            panic!("a Hello first: {sent:?}");
        };
        assert_eq!(
            features, FEATURE_ROLES,
            "the default copy budget asks for roles"
        );
        // The peer's nonce is larger: this node initiates and announces.
        let got = feed(&mut n, &hello(u64::MAX, FEATURE_ROLES));
        let want = Frame::Rooms {
            held: vec![room_token(&ROOM, nonce, u64::MAX)],
            members: vec![room_token(&ROOM, nonce, u64::MAX)],
            spraying: vec![],
            device: Some(device_token(
                &Identity::from_seed(&[7; 32]).device_id(),
                nonce,
                u64::MAX,
            )),
        };
        assert_eq!(got.first(), Some(&want), "roles to a peer that asks");
        // The responder's Rooms names the room as a member's: both sides
        // run a budget and are its members, so reconciliation starts.
        let token = room_token(&ROOM, nonce, u64::MAX);
        let got = feed(&mut n, &rooms(vec![token], vec![token]));
        assert!(
            got.iter().any(|f| matches!(
                f,
                Frame::Reconcile { msg: crate::reconcile::Message::Init { room, .. }, .. }
                    if *room == ROOM
            )),
            "{got:?}"
        );
        assert!(n.links[&LINK].peer.holds(&ROOM));
        assert!(!n.links[&LINK].peer.holds(&RoomId([0x43; 16])));
    }

    #[test]
    fn the_responder_offers_what_the_initiator_lacks_then_announces() {
        let (mut n, sent) = node();
        let Some(Frame::Hello { nonce, .. }) = sent.first().cloned() else {
            panic!("a Hello first");
        };
        // The peer's nonce is 0: this node answers, after the peer's Rooms.
        assert!(feed(&mut n, &hello(0, 0)).is_empty(), "the responder waits");
        let got = feed(&mut n, &rooms(vec![], vec![]));
        // The node holds no event of its room: nothing to offer, and no
        // roles for a peer that did not ask.
        assert_eq!(got, vec![rooms(vec![room_token(&ROOM, 0, nonce)], vec![])]);
    }

    #[test]
    fn a_version_1_hello_closes_the_link_as_a_version_mismatch() {
        let (mut n, _) = node();
        // Version 1's Hello listed room IDs in clear (`vectors/frames.json`).
        let v1 = [
            0x86, 0x01, 0x00, 0x1a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1b, 0x01, 0x23, 0x45, 0x67,
            0x89, 0xab, 0xcd, 0xef, 0x50, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
            0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        ];
        let got = feed_bytes(&mut n, &v1);
        let [Frame::Close { reason, detail }] = got.as_slice() else {
            panic!("one Close: {got:?}");
        };
        assert_eq!(reason, &CloseReason::VersionMismatch);
        assert!(detail.contains("wire version 1"), "{detail}");
    }

    #[test]
    fn announcements_out_of_order_close_the_link() {
        let token = vec![RoomToken([1; 4])];
        let offer = Frame::Offer { rooms: vec![ROOM] };
        for (what, frames) in [
            ("rooms before hello", vec![rooms(token.clone(), vec![])]),
            (
                "members before hello",
                vec![Frame::Members {
                    tokens: token.clone(),
                }],
            ),
            ("offer from the initiator", vec![hello(0, 0), offer.clone()]),
            (
                "second rooms",
                vec![
                    hello(u64::MAX, 0),
                    rooms(vec![], vec![]),
                    rooms(vec![], vec![]),
                ],
            ),
            (
                "offer after the responder's rooms",
                vec![hello(u64::MAX, 0), rooms(vec![], vec![]), offer.clone()],
            ),
            ("second hello", vec![hello(5, 0), hello(6, 0)]),
        ] {
            let (mut n, _) = node();
            let mut got = Vec::new();
            for f in &frames {
                got.extend(feed(&mut n, f));
            }
            assert!(closed(&got), "{what}: {got:?}");
        }
    }

    /// A node under a copy budget that holds one event of a carried room
    /// whose members (the rooms layer's word) are `members`; a link up.
    /// Returns it and its Hello nonce.
    fn carrier_of(room: RoomId, members: &[DeviceId]) -> (Node<MemoryStore, StdRng>, u64) {
        use crate::event::EventKind;
        let config = NodeConfig {
            copy_budget: 16,
            ..NodeConfig::default()
        };
        let mut n = crate::proto::node::testing::node(config);
        let author = Identity::from_seed(&[9; 32]);
        crate::proto::node::testing::carry(&mut n, room, &author, 1, EventKind::Message, vec![]);
        n.carried.set(room, members.iter().copied().collect());
        match link_up(&mut n).as_slice() {
            [Frame::Hello { nonce, .. }] => {
                let nonce = *nonce;
                (n, nonce)
            }
            other => panic!("a Hello: {other:?}"),
        }
    }

    /// The peer (initiator, nonce 0, running a budget, holding nothing)
    /// says Hello and announces itself as `device`; what the node sent.
    fn named(
        n: &mut Node<MemoryStore, StdRng>,
        nonce: u64,
        device: Option<DeviceId>,
    ) -> Vec<Frame> {
        assert!(feed(n, &hello(0, FEATURE_ROLES)).is_empty());
        feed(
            n,
            &Frame::Rooms {
                held: vec![],
                members: vec![],
                spraying: vec![],
                device: device.map(|d| device_token(&d, 0, nonce)),
            },
        )
    }

    /// Whether `sent` announces events of `room`.
    fn ihave(sent: &[Frame], room: RoomId) -> bool {
        sent.iter()
            .any(|f| matches!(f, Frame::IHave { room: r, .. } if *r == room))
    }

    #[test]
    fn between_budgets_rooms_not_shared_as_members_go_by_announcement() {
        let room = RoomId([0x43; 16]);
        let author = Identity::from_seed(&[9; 32]).device_id();
        let reconciles = |sent: &[Frame]| {
            sent.iter()
                .any(|f| matches!(f, Frame::Reconcile { .. } | Frame::Offer { .. }))
        };
        // One copy, a peer that is no member: nothing to hand over.
        let (mut n, nonce) = carrier_of(room, &[author]);
        let sent = named(&mut n, nonce, None);
        assert!(!ihave(&sent, room) && !reconciles(&sent), "{sent:?}");
        // The peer becomes a member (`Members`): the room is announced.
        let tokens = vec![room_token(&room, 0, nonce)];
        let sent = feed(&mut n, &Frame::Members { tokens });
        assert!(ihave(&sent, room), "{sent:?}");
        // Copies to give: announced to a peer that is no member.
        let (mut n, nonce) = carrier_of(room, &[author]);
        let id = n.room_items(&room, false).unwrap()[0].id;
        n.copies
            .put(id, super::super::spray::Copies::new(room, 4, 0));
        let sent = named(&mut n, nonce, None);
        assert!(ihave(&sent, room) && !reconciles(&sent), "{sent:?}");
        // As initiator, to a member of the carried room: announced, not
        // reconciled.
        let (mut n, nonce) = carrier_of(room, &[author]);
        assert!(feed(&mut n, &hello(u64::MAX, FEATURE_ROLES)).len() == 1);
        let token = room_token(&room, nonce, u64::MAX);
        let sent = feed(&mut n, &rooms(vec![token], vec![token]));
        assert!(ihave(&sent, room) && !reconciles(&sent), "{sent:?}");
    }

    #[test]
    fn an_invitee_is_handed_the_room_its_device_token_names() {
        let room = RoomId([0x43; 16]);
        let bo = Identity::from_seed(&[8; 32]).device_id();
        let eve = Identity::from_seed(&[10; 32]).device_id();
        // The peer initiates (nonce 0), runs a budget, holds nothing, and
        // names itself: Bo, invited (a member), is handed the room; Eve,
        // not invited, is not; a peer without a token neither.
        for (who, token, handed) in [
            ("the invitee", Some(bo), true),
            ("a stranger", Some(eve), false),
            ("a peer without a token", None, false),
        ] {
            let (mut n, nonce) = carrier_of(room, &[Identity::from_seed(&[9; 32]).device_id(), bo]);
            let sent = named(&mut n, nonce, token);
            assert_eq!(ihave(&sent, room), handed, "{who}: {sent:?}");
            // The responder names itself to a peer that asked for roles.
            let mine = Identity::from_seed(&[7; 32]).device_id();
            assert!(
                sent.iter()
                    .any(|f| matches!(f, Frame::Rooms { device: Some(t), .. }
                    if *t == device_token(&mine, 0, nonce))),
                "{who}: {sent:?}"
            );
        }
    }

    #[test]
    fn an_invite_learnt_while_the_link_lasts_hands_the_room_over() {
        use crate::proto::io::Command;
        let room = RoomId([0x43; 16]);
        let author = Identity::from_seed(&[9; 32]).device_id();
        let bo = Identity::from_seed(&[8; 32]).device_id();
        // The link comes up while Bo is not a member; Bo names itself.
        let (mut n, nonce) = carrier_of(room, &[author]);
        let sent = named(&mut n, nonce, Some(bo));
        assert!(!ihave(&sent, room), "{sent:?}");
        // Bo's invite is verified: the room is handed over at once, once,
        // and Bo counts as a member of it on this link.
        for (round, members, handed) in [
            ("the invite", vec![author, bo], true),
            ("the same members again", vec![author, bo], false),
        ] {
            n.handle(
                2,
                Input::Command(Command::CarriedMembers {
                    room,
                    members: members.into_iter().collect(),
                }),
            )
            .unwrap();
            let sent = drain(&mut n);
            assert_eq!(ihave(&sent, room), handed, "{round}: {sent:?}");
        }
        assert!(n.links[&LINK].peer.member_of(&room));
        // An own room's members growing does the same.
        let own = RoomId([0x44; 16]);
        n.handle(
            3,
            Input::Command(Command::JoinRoom {
                room: own,
                members: [author].into_iter().collect(),
            }),
        )
        .unwrap();
        drain(&mut n);
        n.handle(
            4,
            Input::Command(Command::RoomMembers {
                room: own,
                members: [author, bo].into_iter().collect(),
            }),
        )
        .unwrap();
        assert!(n.links[&LINK].peer.member_of(&own));
    }
}
