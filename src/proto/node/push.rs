//! Live push (Plumtree): committed events go in full to eager links and as
//! `IHave` to the others, unfilled announcements graft, and each link's
//! outbox is sent oldest first within its window and pacing
//! (`protocol-spec/wire.md`, "Live push").
//!
//! What a link has to send is paged: the outbox holds at most
//! `MAX_OUTBOX_PER_LINK` event IDs in sending order, a catch-up found by
//! reconciliation waits in the link's backlog as bare items (origin time and
//! ID) and moves into the outbox as it drains, and an event's bytes are read
//! from the store only when the window has room for them
//! (`protocol-spec/wire.md`, "Node limits").

use std::collections::{BTreeMap, BTreeSet};

use rand_core::Rng;

use crate::event::{Event, EventId, RoomId};
use crate::proto::io::{AppEvent, LinkId, Output};
use crate::reconcile::Item;
use crate::store::{EventStore, Priority, StoreError};
use crate::wire::{Frame, MAX_EVENTS_PER_FRAME, MAX_FRAME_BYTES};

use super::link::{OutboxKey, SendClass};
use super::spray::{SprayRule, vouched};
use super::{
    CATCH_UP_LOW_WATER, FRAME_OVERHEAD, MAX_BACKLOG_PER_LINK, MAX_BACKLOG_TOTAL,
    MAX_CATCH_UP_IN_OUTBOX, MAX_CONTROL_IN_OUTBOX, MAX_OUTBOX_PER_LINK, MIN_BACKLOG_PER_LINK, Node,
    PACING_DIVISOR, PER_EVENT_OVERHEAD, SPRAY_FRAME_OVERHEAD,
};

impl<S: EventStore, R: Rng> Node<S, R> {
    pub(super) fn on_commit_done(&mut self) -> Result<(), StoreError> {
        let done = std::mem::take(&mut self.after_commit);
        self.outputs.extend(self.after_commit_outputs.drain(..));
        let mut touched = BTreeSet::new();
        // Lazy-push announcements, batched per (link, room): one `IHave`
        // frame per batch of a commit, not one per event.
        let mut announce: BTreeMap<(LinkId, RoomId), Vec<EventId>> = BTreeMap::new();
        let mut overflow: BTreeMap<LinkId, Vec<Item>> = BTreeMap::new();
        for c in done {
            self.stats.events_stored += 1;
            self.note_carried(c.room);
            self.outputs.push_back(Output::App(AppEvent::EventStored {
                id: c.id,
                room: c.room,
            }));
            // Only peers this node may hand the event to (members, or
            // carriers while copies are left) get it or hear of it; nobody,
            // when it holds the event of an own room as strangers' traffic
            // (its sender has no standing there: `wire.md`, "Quarantine").
            let rule = self.spray_rule();
            let copies = &self.copies;
            let quarantined = c.priority == Priority::Stranger && self.own_rooms.contains(&c.room);
            let vouched = vouched(&self.own_rooms, &self.carried, &c.room, &c.sender);
            let links: Vec<(LinkId, bool)> = self
                .links
                .iter_mut()
                .filter(|(id, l)| {
                    !quarantined
                        && Some(**id) != c.from
                        && rule.offerable(copies, l, &c.id, &c.room, vouched)
                })
                .map(|(id, l)| {
                    let eager = l.eager && !l.pruned.contains(&c.room);
                    (*id, eager && !l.known.contains(&c.id))
                })
                .collect();
            let mut lazy = Vec::new();
            for (link, eager) in links {
                if eager {
                    let full = self
                        .links
                        .get(&link)
                        .is_some_and(|l| l.outbox.len() >= MAX_OUTBOX_PER_LINK);
                    if full {
                        // A burst bigger than the outbox (a bundle imported
                        // while the link drains) waits in the link's
                        // backlog, not for the next anti-entropy period.
                        if let Some(info) = self.store.event_info(&c.id)? {
                            overflow.entry(link).or_default().push(Item {
                                ts_ms: info.origin_ts_ms,
                                id: c.id,
                            });
                        }
                    } else {
                        self.queue_send(link, c.id, c.priority, c.class)?;
                    }
                    touched.insert(link);
                } else {
                    lazy.push(link);
                }
            }
            // Under a budget, a carrier announces back to a member what it
            // took from it: they do not reconcile that room, and the
            // member's own events leave its delivery queue on this proof
            // (`protocol-spec/store.md`, "Delivery to the mesh").
            if let Some(from) = c.from
                && self.config.copy_budget != 0
                && !self.own_rooms.contains(&c.room)
                && self
                    .links
                    .get(&from)
                    .is_some_and(|l| l.peer_wants_roles && l.peer.member_of(&c.room))
            {
                announce.entry((from, c.room)).or_default().push(c.id);
            }
            for link in lazy {
                let known = self
                    .links
                    .get(&link)
                    .is_some_and(|l| l.known.contains(&c.id));
                if !known {
                    announce.entry((link, c.room)).or_default().push(c.id);
                }
            }
        }
        for ((link, room), ids) in announce {
            self.send_ids(link, &ids, |ids| Frame::IHave { room, ids });
        }
        for (link, items) in overflow {
            self.queue_catch_up(link, items);
        }
        for link in touched {
            self.pump(link)?;
        }
        Ok(())
    }

    /// Grafts the links whose `IHave` announcements were not filled in time.
    pub(super) fn graft_expired(&mut self) -> Result<(), StoreError> {
        let now = self.now_ms;
        let expired: Vec<EventId> = self
            .pending_ihave
            .iter()
            .filter(|(_, (_, _, t))| *t <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut grafts: BTreeMap<(LinkId, RoomId), Vec<EventId>> = BTreeMap::new();
        for id in expired {
            if let Some((link, room, _)) = self.pending_ihave.remove(&id)
                && !self.store.has_event(&id)?
            {
                grafts.entry((link, room)).or_default().push(id);
            }
        }
        for ((link, room), ids) in grafts {
            if let Some(l) = self.links.get_mut(&link) {
                l.eager = true;
                l.pruned.remove(&room);
            }
            self.send_ids(link, &ids, |ids| Frame::Graft { room, ids });
        }
        Ok(())
    }

    /// Pumps the links whose pacing now allows the next batch.
    pub(super) fn resume_paced(&mut self) -> Result<(), StoreError> {
        let now = self.now_ms;
        let resume: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.resume_at_ms.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for link in resume {
            if let Some(l) = self.links.get_mut(&link) {
                l.resume_at_ms = None;
            }
            self.pump(link)?;
        }
        Ok(())
    }

    /// Queues a held event for `link` (ignored if not held or already
    /// queued). Callers make room first: live push sends what finds the
    /// outbox full to the backlog, wanted and grafted events go through the
    /// backlog, and `refill` stops at its cap; a full outbox here is a
    /// bound, not a path (anti-entropy would find the event again).
    pub(super) fn queue_send(
        &mut self,
        link: LinkId,
        id: EventId,
        priority: Priority,
        class: SendClass,
    ) -> Result<(), StoreError> {
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        if l.outbox.len() >= MAX_OUTBOX_PER_LINK || l.queued.contains(&id) {
            return Ok(());
        }
        let Some(info) = self.store.event_info(&id)? else {
            return Ok(());
        };
        let (priority, class) = if self.is_urgent(&id) {
            super::urgent::URGENT_PLACE
        } else if class == SendClass::Bulk {
            // Own chunks wait behind own rooms' messages too.
            (priority.max(Priority::OwnRoom), class)
        } else {
            (priority, class)
        };
        if let Some(l) = self.links.get_mut(&link) {
            l.queued.insert(id);
            l.outbox_seq += 1;
            l.outbox.insert(
                (priority, class, info.origin_ts_ms, l.outbox_seq),
                (info.room, id),
            );
        }
        Ok(())
    }

    /// Adds what reconciliation found the peer lacks to `link`'s backlog:
    /// control events (membership, key shares, prekey updates: what makes
    /// a peer a member and lets it read) before messages, each oldest
    /// first; beyond the link's [`Node::backlog_cap`] the last are dropped
    /// (a later anti-entropy period finds them again). The class is read
    /// from the stored event once, here (`protocol-spec/wire.md`,
    /// "Catch-up order").
    pub(super) fn queue_catch_up(&mut self, link: LinkId, items: Vec<Item>) {
        if items.is_empty() || !self.links.contains_key(&link) {
            return;
        }
        let classed: Vec<(SendClass, Item)> = items
            .into_iter()
            .map(|i| (self.catch_up_class(&i.id), i))
            .collect();
        let cap = self.backlog_cap();
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let mut all: Vec<(SendClass, Item)> = l.backlog.drain(..).chain(classed).collect();
        all.sort_unstable();
        all.dedup();
        all.retain(|(_, i)| !l.queued.contains(&i.id));
        all.truncate(cap);
        all.shrink_to_fit();
        l.backlog = all.into();
    }

    /// Most items one link's backlog may hold now: `MAX_BACKLOG_PER_LINK`
    /// for a node with one link, else its share of `MAX_BACKLOG_TOTAL`,
    /// at least `MIN_BACKLOG_PER_LINK` (`protocol-spec/wire.md`, "Node
    /// limits").
    pub(super) fn backlog_cap(&self) -> usize {
        (MAX_BACKLOG_TOTAL / self.links.len().max(1))
            .clamp(MIN_BACKLOG_PER_LINK, MAX_BACKLOG_PER_LINK)
    }

    /// Whether a stored event is urgent, a control event or a message (a
    /// message if it cannot be read).
    pub(super) fn catch_up_class(&self, id: &EventId) -> SendClass {
        if self.is_urgent(id) {
            return SendClass::Urgent;
        }
        self.store
            .get_event(id)
            .ok()
            .flatten()
            .and_then(|b| crate::event::Event::decode_unverified(&b).ok())
            .map_or(SendClass::Message, |e| SendClass::of(e.kind()))
    }

    /// Moves backlog items into `link`'s outbox up to
    /// `MAX_CATCH_UP_IN_OUTBOX`.
    fn refill(&mut self, link: LinkId) -> Result<(), StoreError> {
        loop {
            let Some(l) = self.links.get_mut(&link) else {
                return Ok(());
            };
            // Control events found later (another slice of the room) may
            // pass the messages already in the outbox: they go into it past
            // the catch-up's share, up to `MAX_CONTROL_IN_OUTBOX`.
            let cap = match l.backlog.front() {
                Some((SendClass::Urgent | SendClass::Control, _)) => MAX_CONTROL_IN_OUTBOX,
                Some(_) => MAX_CATCH_UP_IN_OUTBOX,
                None => return Ok(()),
            };
            if l.outbox.len() >= cap {
                return Ok(());
            }
            let Some((class, item)) = l.backlog.pop_front() else {
                return Ok(());
            };
            self.queue_send(link, item.id, Priority::OwnRoom, class)?;
        }
    }

    /// Sends queued events on `link` while its window allows, refilling
    /// the outbox from the backlog; an anti-entropy round waiting for the
    /// catch-up to drain is brought forward once it has.
    pub(super) fn pump(&mut self, link: LinkId) -> Result<(), StoreError> {
        self.refill(link)?;
        self.pump_window(link)?;
        self.refill(link)?;
        let now = self.now_ms;
        if let Some(l) = self.links.get_mut(&link)
            && l.drain_wait
            && l.catch_up_len() <= CATCH_UP_LOW_WATER
        {
            l.drain_wait = false;
            l.next_anti_entropy_ms = l.next_anti_entropy_ms.min(now);
        }
        Ok(())
    }

    /// Sends outbox events on `link` while its window and pacing allow.
    fn pump_window(&mut self, link: LinkId) -> Result<(), StoreError> {
        loop {
            let Some(l) = self.links.get_mut(&link) else {
                return Ok(());
            };
            if l.in_flight >= self.config.window_bytes() || l.outbox.is_empty() {
                return Ok(());
            }
            let now = self.now_ms;
            // Strangers' events may not spend the last quarter of the pacing
            // burst: it stays in reserve for the node's own and its rooms'
            // events, so a relayed flood never delays them.
            let reserve = self.config.link_burst_bytes / PACING_DIVISOR / 4;
            let mut avail = l.pacing.available(now);
            let budget = self.config.copy_budget;
            let rule = SprayRule::new(&self.config, now);
            let mut batch = Vec::new();
            let mut handed = Vec::new();
            let mut waiting = false;
            let mut size = FRAME_OVERHEAD + if budget == 0 { 0 } else { SPRAY_FRAME_OVERHEAD };
            // One frame carries events of one room: the head's.
            let Some(batch_room) = l.outbox.values().next().map(|(r, _)| *r) else {
                return Ok(());
            };
            let same_room: Vec<(OutboxKey, EventId)> = l
                .outbox
                .iter()
                .filter(|(_, (r, _))| *r == batch_room)
                .take(MAX_EVENTS_PER_FRAME)
                .map(|(k, (_, id))| (*k, *id))
                .collect();
            for (key, id) in same_room {
                if batch.len() >= MAX_EVENTS_PER_FRAME {
                    break;
                }
                // Copies may have run out since the event was queued (the
                // member's privilege is checked below, with the sender).
                if !rule.offerable(&self.copies, l, &id, &batch_room, true) {
                    l.outbox.remove(&key);
                    l.queued.remove(&id);
                    continue;
                }
                let Some(bytes) = self.store.get_event(&id)? else {
                    l.outbox.remove(&key);
                    l.queued.remove(&id);
                    continue;
                };
                // A member's privilege only for an event this node vouches
                // for, whichever way it was queued (reconciliation, a
                // graft, a want). Only a carried room whose members this
                // node knows can hold one it does not vouch for.
                if budget != 0
                    && self.carried.members(&batch_room).is_some()
                    && let Ok(ev) = Event::decode_unverified(&bytes)
                    && !rule.offerable(
                        &self.copies,
                        l,
                        &id,
                        &batch_room,
                        vouched(&self.own_rooms, &self.carried, &batch_room, &ev.sender()),
                    )
                {
                    l.outbox.remove(&key);
                    l.queued.remove(&id);
                    continue;
                }
                let cost = bytes.len() + PER_EVENT_OVERHEAD;
                if !batch.is_empty() && size + cost > MAX_FRAME_BYTES {
                    break;
                }
                let floor = if key.0 == Priority::Stranger {
                    reserve
                } else {
                    0
                };
                let need = (size + cost) as u64 + floor;
                if avail < need {
                    if batch.is_empty() {
                        let wait = l.pacing.wait_ms(need, now).clamp(1, 60_000);
                        l.resume_at_ms = Some(now.saturating_add(wait));
                        waiting = true;
                    }
                    break;
                }
                avail -= cost as u64;
                size += cost;
                l.outbox.remove(&key);
                l.queued.remove(&id);
                l.known.put(id, ());
                handed.push(rule.take(&mut self.copies, l, &id, &batch_room));
                batch.push(bytes);
            }
            if batch.is_empty() {
                if waiting {
                    return Ok(());
                }
                // Every head event had been evicted: the outbox shrank.
                continue;
            }
            self.stats.events_sent += batch.len() as u64;
            let frame = if handed.iter().any(|c| *c >= 2) {
                Frame::Spray {
                    room: batch_room,
                    copies: handed,
                    events: batch,
                }
            } else {
                Frame::Events {
                    room: batch_room,
                    events: batch,
                }
            };
            let n = self.send(link, &frame);
            if let Some(l) = self.links.get_mut(&link) {
                l.in_flight += n;
                l.pacing.try_take(n as u64, now);
            }
        }
    }
}
