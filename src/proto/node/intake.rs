//! Intake: a received event is decoded and verified, checked for
//! timeliness, classed by its sender's standing in the room, held to the
//! stranger budget per signing key, then staged in the store; commands from
//! the application (publish, deliver, room standing) enter here too
//! (`protocol-spec/store.md`, "Priority classes").

use std::collections::{BTreeMap, BTreeSet};

use rand_core::Rng;

use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, EventKind, RoomId, Timeliness, timeliness};
use crate::proto::budget::TokenBucket;
use crate::proto::io::{AppEvent, Command, LinkId, Output};
use crate::reconcile::Item;
use crate::room::ROOM_CAP;
use crate::room::membership::{creates_room, invites_device};
use crate::store::{EventStore, InsertMeta, InsertOutcome, Priority, Source, StoreError};
use crate::wire::{CloseReason, Frame, MAX_COPY_BUDGET};

use super::spray::Copies;
use super::{Committed, EXPECTED_ROOM_EVENTS, Node, RECEIPT_COPY_BUDGET};

impl<S: EventStore, R: Rng> Node<S, R> {
    /// One received event; `copies` is how many copies the sender handed
    /// over with it (1 from an `Events` frame).
    pub(super) fn on_event_bytes(
        &mut self,
        link: LinkId,
        bytes: &[u8],
        copies: u8,
    ) -> Result<(), StoreError> {
        let event = match Event::decode_cached(bytes, &mut self.keys) {
            Ok(e) => e,
            Err(e) => {
                self.stats.invalid_events += 1;
                self.penalise(
                    link,
                    &format!("invalid event: {e}"),
                    CloseReason::ProtocolViolation,
                );
                return Ok(());
            }
        };
        let id = event.id();
        self.pending_ihave.remove(&id);
        let source = match self.links.get_mut(&link) {
            Some(l) => {
                l.known.put(id, ());
                l.source
            }
            None => return Ok(()),
        };
        let spray = self.config.copy_budget != 0 && copies >= 2;
        if self.store.has_event(&id)? {
            self.stats.duplicates += 1;
            // Copies handed over with a duplicate are kept, not lost:
            // together they are what the sender gave up.
            if spray {
                let now = self.now_ms;
                let total = |held: u8| held.saturating_add(copies).min(MAX_COPY_BUDGET);
                match self.copies.get_mut(&id) {
                    Some(c) => c.n = total(c.n),
                    None => {
                        let c = Copies::new(event.room(), total(1), now);
                        self.copies.put(id, c);
                    }
                }
            }
            // Plumtree: a duplicate pushed eagerly means a redundant path.
            let prune = self.links.get(&link).is_some_and(|l| l.eager);
            if prune {
                self.send(link, &Frame::Prune { room: event.room() });
            }
            return Ok(());
        }
        match timeliness(&event, self.now_ms) {
            Timeliness::Current => {}
            Timeliness::Expired | Timeliness::FromFuture => {
                self.stats.refused_events += 1;
                return Ok(());
            }
        }
        let priority = self.classify(&event);
        let expected = priority == Priority::Stranger && self.take_expected(event.room());
        // A member of a room this node carries: carried at link speed,
        // still in the strangers' class ("Carried rooms").
        let carried = priority == Priority::Stranger
            && !expected
            && self.carried.is_member(&event.room(), &event.sender());
        if priority == Priority::Stranger && !expected && !carried {
            let now = self.now_ms;
            let (burst, rate) = (self.config.key_event_burst, self.config.key_events_per_s);
            let control = !event.kind().in_sender_chain();
            let bucket = self
                .key_buckets
                .get_or_insert_mut((event.sender(), control), || {
                    TokenBucket::new(burst, rate, now)
                });
            if !bucket.try_take(1, now) {
                self.stats.refused_events += 1;
                self.refused_strangers
                    .put(id, (link, event.room(), event.sender(), Some(control)));
                return Ok(());
            }
        }
        // An invite of this device: the room is expected at once, so the
        // history that follows it on the link (in the same batch, before
        // the rooms layer sees the invite) is not refused for the key
        // budget and sent again (`protocol-spec/wire.md`, "A room that
        // becomes an own room", rule 2).
        if priority == Priority::Stranger && invites_device(&event, &self.own) {
            self.expect_room(event.room())?;
        }
        // A room's creation names its first member: the creator's history,
        // which follows in the same batch before the rooms layer judged
        // the room, is carried, not refused and wanted again ("Carried
        // rooms").
        // Its events that came before the creation (another slice of a
        // long catch-up) are wanted again, as for any new carried member.
        if priority == Priority::Stranger
            && !self.own_rooms.contains(&event.room())
            && creates_room(&event)
            && self.carried.created(event.room(), event.sender())
        {
            let creator = event.sender();
            self.want_refused_from(event.room(), |d| *d == creator)?;
        }
        if spray {
            let c = Copies::new(event.room(), copies.min(MAX_COPY_BUDGET), self.now_ms);
            self.copies.put(id, c);
        }
        self.ingest(
            &event,
            InsertMeta {
                priority,
                source: Source::Link(source),
                received_ms: self.now_ms,
                carried,
            },
            Some(link),
        )
    }

    /// The class an event is stored in: from its sender's standing in the
    /// room, never from the room ID alone (`protocol-spec/store.md`,
    /// "Priority classes"). An outsider's events of an own room are
    /// stranger traffic: rate-limited per key, within the stranger pool,
    /// evicted first.
    pub(super) fn classify(&self, event: &Event) -> Priority {
        if event.sender() == self.own {
            Priority::OwnUndelivered
        } else if self
            .standing
            .get(&event.room())
            .is_some_and(|m| m.contains(&event.sender()))
        {
            Priority::OwnRoom
        } else {
            Priority::Stranger
        }
    }

    /// Stores a verified event (staged) and schedules its acknowledgement and
    /// relay for after the commit.
    pub(super) fn ingest(
        &mut self,
        event: &Event,
        meta: InsertMeta,
        from: Option<LinkId>,
    ) -> Result<(), StoreError> {
        if !self.admission.admits(meta.priority) {
            self.stats.refused_events += 1;
            self.stats.shed_events += 1;
            return Ok(());
        }
        let before = self.store.event_set_version();
        match self.store.insert_event(event, &meta)? {
            InsertOutcome::Inserted => {
                let item = Item {
                    ts_ms: event.origin_ts_ms(),
                    id: event.id(),
                };
                let after = self.store.event_set_version();
                let stranger = meta.priority == Priority::Stranger;
                self.view
                    .inserted(before, after, event.room(), item, stranger);
                if let Some(gap) = self.new_gap(event)? {
                    self.after_commit_outputs.push(Output::App(gap));
                }
                self.after_commit.push(Committed {
                    id: event.id(),
                    room: event.room(),
                    sender: event.sender(),
                    from,
                    priority: meta.priority,
                    class: super::link::SendClass::of(event.kind()),
                });
            }
            InsertOutcome::Duplicate => self.stats.duplicates += 1,
            InsertOutcome::Fork(ev) => {
                self.after_commit_outputs
                    .push(Output::App(AppEvent::ForkDetected {
                        room: ev.room,
                        sender: ev.sender,
                        seq: ev.seq,
                    }));
            }
            InsertOutcome::Rejected(_) => {
                self.stats.refused_events += 1;
                // Over a stranger share: asked for again if the room
                // becomes expected or own ([`Node::want_refused`]).
                if meta.priority == Priority::Stranger
                    && let Some(link) = from
                {
                    self.refused_strangers
                        .put(event.id(), (link, event.room(), event.sender(), None));
                }
            }
        }
        Ok(())
    }

    /// A gap newly opened below this event's sequence number, if any.
    pub(super) fn new_gap(&self, event: &Event) -> Result<Option<AppEvent>, StoreError> {
        let gap = self
            .store
            .gap_below(&event.room(), &event.sender(), event.seq())?;
        Ok(gap.map(|g| AppEvent::GapDetected {
            room: event.room(),
            sender: event.sender(),
            from_seq: g.from_seq,
            to_seq: g.to_seq,
        }))
    }

    pub(super) fn on_command(&mut self, cmd: Command) -> Result<(), StoreError> {
        match cmd {
            Command::Publish(event) => {
                // Own events are verified like any other: a bug that signs
                // garbage must not reach the mesh.
                if event.verify().is_err() {
                    return Ok(());
                }
                let meta = InsertMeta {
                    priority: Priority::OwnUndelivered,
                    source: Source::Local,
                    received_ms: self.now_ms,
                    carried: false,
                };
                let mut budget = self.config.copy_budget.min(MAX_COPY_BUDGET);
                if event.kind() == EventKind::Receipt {
                    // Receipts matter to members only: one copy for a
                    // carrier, the rest member to member (`rooms.md` §9).
                    budget = budget.min(RECEIPT_COPY_BUDGET);
                }
                if budget >= 2 && !self.store.has_event(&event.id())? {
                    let c = Copies::new(event.room(), budget, self.now_ms);
                    self.copies.put(event.id(), c);
                }
                self.ingest(&event, meta, None)
            }
            Command::Deliver { event, source } => {
                if event.verify().is_err() {
                    self.stats.invalid_events += 1;
                    return Ok(());
                }
                if timeliness(&event, self.now_ms) != Timeliness::Current {
                    self.stats.refused_events += 1;
                    return Ok(());
                }
                let priority = self.classify(&event);
                let carried = priority == Priority::Stranger
                    && self.carried.is_member(&event.room(), &event.sender());
                let meta = InsertMeta {
                    priority,
                    source,
                    received_ms: self.now_ms,
                    carried,
                };
                self.ingest(&event, meta, None)
            }
            Command::JoinRoom { room, members } => {
                if self.expected.pop(&room).is_some() {
                    self.store.set_share_exempt(room, false);
                }
                // Members the carrier side already knew are not new.
                self.set_standing(room, members)?;
                self.carried.remove(&room);
                if self.own_rooms.insert(room) {
                    self.announce_members();
                    self.want_refused(room)?;
                }
                Ok(())
            }
            Command::RoomMembers { room, members } => {
                if self.own_rooms.contains(&room) {
                    self.set_standing(room, members)?;
                }
                Ok(())
            }
            Command::CarriedMembers { room, members } => {
                if self.own_rooms.contains(&room) {
                    return Ok(());
                }
                // New members: what their key budgets refused is wanted
                // again (rule 3 of "A room that becomes an own room").
                let added: BTreeSet<DeviceId> = members
                    .iter()
                    .filter(|d| !self.carried.peek_member(&room, d))
                    .copied()
                    .collect();
                self.carried.set(room, members);
                self.note_carried(room);
                if added.is_empty() {
                    return Ok(());
                }
                self.offer_to_new_members(room, &added)?;
                self.want_refused_from(room, |d| added.contains(d))
            }
            Command::ExpectRoom(room) => self.expect_room(room),
            Command::Urgent(marks) => {
                self.mark_urgent(marks);
                Ok(())
            }
            Command::LeaveRoom(room) => {
                self.standing.remove(&room);
                if self.own_rooms.remove(&room) {
                    self.announce_members();
                }
                Ok(())
            }
        }
    }

    /// Expects `room` (`Command::ExpectRoom`, or an invite of this device
    /// just received): its strangers' events skip the key budgets and
    /// store shares for `EXPECTED_ROOM_EVENTS`, and what was refused is
    /// wanted again.
    fn expect_room(&mut self, room: RoomId) -> Result<(), StoreError> {
        if !self.own_rooms.contains(&room) && !self.expected.contains(&room) {
            if let Some((old, _)) = self.expected.push(room, EXPECTED_ROOM_EVENTS) {
                self.store.set_share_exempt(old, false);
            }
            self.store.set_share_exempt(room, true);
            self.want_refused(room)?;
        }
        Ok(())
    }

    /// Takes one event of an expected room's allowance (`Command::ExpectRoom`):
    /// whether the event skips the key's stranger budget. An allowance
    /// used up ends the room's exemption from the store's shares too.
    fn take_expected(&mut self, room: RoomId) -> bool {
        let Some(left) = self.expected.get_mut(&room) else {
            return false;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.expected.pop(&room);
            self.store.set_share_exempt(room, false);
        }
        true
    }

    /// Sets an own room's members (the rooms layer's word) and hands the
    /// room to linked invitees among the new ones
    /// ([`Self::offer_to_new_members`]).
    pub(super) fn set_standing(
        &mut self,
        room: RoomId,
        members: BTreeSet<DeviceId>,
    ) -> Result<(), StoreError> {
        let members: BTreeSet<DeviceId> = members.into_iter().take(ROOM_CAP).collect();
        let before = self
            .standing
            .get(&room)
            .or_else(|| self.carried.members(&room));
        let added: BTreeSet<DeviceId> = members
            .iter()
            .filter(|d| before.is_none_or(|b| !b.contains(d)))
            .copied()
            .collect();
        self.standing.insert(room, members);
        self.offer_to_new_members(room, &added)
    }

    /// A room just became an own room (a new member's invite was
    /// processed): ask the links that offered its events again for those
    /// the stranger budget refused, instead of leaving them to the next
    /// anti-entropy period. The peer answers `Want` like a graft.
    pub(super) fn want_refused(&mut self, room: RoomId) -> Result<(), StoreError> {
        self.want_refused_from(room, |_| true)
    }

    /// [`Self::want_refused`] for the events of senders `wanted` picks
    /// (a carried room's members: an outsider's refused events stay
    /// refused).
    fn want_refused_from(
        &mut self,
        room: RoomId,
        wanted: impl Fn(&DeviceId) -> bool,
    ) -> Result<(), StoreError> {
        let ids: Vec<(EventId, LinkId)> = self
            .refused_strangers
            .iter()
            .filter(|(_, (_, r, sender, _))| *r == room && wanted(sender))
            .map(|(id, (link, ..))| (*id, *link))
            .collect();
        let mut wants: BTreeMap<(LinkId, RoomId), Vec<EventId>> = BTreeMap::new();
        for (id, link) in ids {
            self.refused_strangers.pop(&id);
            wants.entry((link, room)).or_default().push(id);
        }
        self.send_wants(wants)
    }

    /// Between two sides under a copy budget only rooms both are members
    /// of are reconciled, so what a signing key's budget refused from
    /// `link` would not be found again: at each anti-entropy period it is
    /// asked for again, as many events per key as its bucket holds now
    /// (`protocol-spec/wire.md`, "Copy budget").
    pub(super) fn want_refused_on(&mut self, link: LinkId) -> Result<(), StoreError> {
        let now = self.now_ms;
        let burst = self.config.key_event_burst;
        let refused: Vec<(EventId, RoomId, (DeviceId, bool))> = self
            .refused_strangers
            .iter()
            .filter(|(_, (l, ..))| *l == link)
            .filter_map(|(id, (_, room, sender, control))| {
                control.map(|c| (*id, *room, (*sender, c)))
            })
            .collect();
        let mut left: BTreeMap<(DeviceId, bool), u64> = BTreeMap::new();
        let mut wants: BTreeMap<(LinkId, RoomId), Vec<EventId>> = BTreeMap::new();
        for (id, room, key) in refused {
            let tokens = left.entry(key).or_insert_with(|| {
                self.key_buckets
                    .peek_mut(&key)
                    .map_or(burst, |b| b.available(now))
            });
            if *tokens == 0 {
                continue;
            }
            *tokens -= 1;
            self.refused_strangers.pop(&id);
            wants.entry((link, room)).or_default().push(id);
        }
        self.send_wants(wants)
    }

    /// Sends `Want` for the events not held yet, per link and room, on
    /// the links still up.
    fn send_wants(
        &mut self,
        wants: BTreeMap<(LinkId, RoomId), Vec<EventId>>,
    ) -> Result<(), StoreError> {
        for ((link, room), ids) in wants {
            if !self.links.contains_key(&link) {
                continue;
            }
            let mut missing = Vec::with_capacity(ids.len());
            for id in ids {
                if !self.store.has_event(&id)? {
                    missing.push(id);
                }
            }
            missing.sort_unstable();
            self.send_ids(link, &missing, |ids| Frame::Want { room, ids });
        }
        Ok(())
    }
}
