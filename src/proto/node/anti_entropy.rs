//! Anti-entropy: which rooms each period reconciles on a link, the
//! reconciliation sessions and their slices, and the backoff of quiet
//! periods (`protocol-spec/wire.md`, "Anti-entropy";
//! `protocol-spec/reconcile.md`, "Partitioned sessions").

use std::collections::BTreeSet;

use rand_core::Rng;

use crate::event::RoomId;
use crate::proto::io::{AppEvent, LinkId, Output};
use crate::reconcile::{FAIL_TOO_MANY_DIFFERENCES, Item, Message, Part, Session};
use crate::store::{EventStore, StoreError};
use crate::wire::{CloseReason, Frame};

use super::announce::merge_sorted;
use super::{
    CATCH_UP_LOW_WATER, MAX_ANTI_ENTROPY_BACKOFF_SHIFT, MAX_DEFERRED_INITS, MAX_QUEUED_PARTS,
    MAX_SESSION_ITEMS, MAX_SESSIONS_PER_LINK, Node, ROUND_SESSIONS, SLICE_BACKLOG_SHARE,
};

impl<S: EventStore, R: Rng> Node<S, R> {
    /// The next rooms to reconcile on `link`. An anti-entropy period
    /// starts with this device's own rooms (at most `ROUND_SESSIONS`; the
    /// rest join the rotation), then covers every other room (held here or
    /// listed by the peer) once, in rotation from the link's cursor, in
    /// rounds of at most `ROUND_SESSIONS` sessions. When every room
    /// was covered the period ends: the next starts after
    /// `anti_entropy_interval_ms`, not at once (that kept the link busy
    /// with reconciliation and starved event transfer).
    pub(super) fn next_rooms(&mut self, link: LinkId) -> Result<Vec<RoomId>, StoreError> {
        // Every room held or joined here (not only the first
        // `MAX_HELLO_ROOMS` the Hello could list), and the peer's.
        let spraying: BTreeSet<RoomId> = if self.config.copy_budget == 0 {
            BTreeSet::new()
        } else {
            self.spraying_rooms()?.into_iter().collect()
        };
        let held = self.view.rooms(&self.store)?;
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(Vec::new());
        };
        let mut all: BTreeSet<RoomId> = merge_sorted(held, &self.own_rooms).collect();
        all.extend(l.peer.offered.iter().copied());
        if self.config.copy_budget != 0 && l.peer_wants_roles {
            // Both sides run a budget: only the rooms both are members of.
            // What one may hand the other in any other room it announces
            // (`offer_by_announcement`; `protocol-spec/wire.md`, "Copy
            // budget").
            all.retain(|r| self.own_rooms.contains(r) && l.peer.member_of(r));
        } else if self.config.copy_budget != 0 {
            // Only rooms where one side may hand the other something
            // (`protocol-spec/wire.md`, "Copy budget"): what a side holds
            // goes to a member, or to anyone while it has copies to give.
            let own = &self.own_rooms;
            all.retain(|r| {
                let me_holds = own.contains(r) || held.binary_search(r).is_ok();
                let i_give = me_holds && (l.peer.member_of(r) || spraying.contains(r));
                let peer_gives = l.peer.holds(r) && (own.contains(r) || l.peer.sprays(r));
                i_give || peer_gives
            });
        }
        let first: Vec<RoomId> = self
            .own_rooms
            .iter()
            .filter(|r| all.contains(r))
            .take(ROUND_SESSIONS)
            .copied()
            .collect();
        let others: Vec<RoomId> = all
            .iter()
            .filter(|r| first.binary_search(r).is_err())
            .copied()
            .collect();
        let start = l
            .recon_cursor
            .map_or(0, |c| others.partition_point(|r| *r <= c));
        // A new period (not the continuation of one that left rooms out)
        // starts with the own rooms and then covers every other room once.
        let continuing = l.more_rooms;
        if !continuing {
            l.rotation_left = others.len();
        }
        if others.is_empty() {
            l.rotation_left = 0;
        }
        let mut batch = if continuing { Vec::new() } else { first };
        let room_left = ROUND_SESSIONS.saturating_sub(batch.len());
        let take = room_left.min(others.len()).min(l.rotation_left);
        for i in 0..take {
            batch.push(others[(start + i) % others.len()]);
        }
        if take > 0 {
            l.recon_cursor = Some(others[(start + take - 1) % others.len()]);
        }
        l.rotation_left -= take;
        l.more_rooms = l.rotation_left > 0;
        Ok(batch)
    }

    /// Every item of a room, ascending (from the cached view); without the
    /// events held in the strangers' class when `skip_strangers`.
    pub(super) fn room_items(
        &mut self,
        room: &RoomId,
        skip_strangers: bool,
    ) -> Result<Vec<Item>, StoreError> {
        self.view.items(&self.store, room, skip_strangers)
    }

    /// Whether this node leaves its quarantine out of what it reconciles
    /// of `room` with the peer of `link` (`protocol-spec/wire.md`,
    /// "Quarantine"): an own room, with a peer that runs a copy budget as
    /// this node does. Two such sides reconcile only rooms both are members
    /// of, so both leave strangers' events out and their sets agree on
    /// everything else; with any other peer the whole room is reconciled.
    pub(super) fn quarantines(&self, link: LinkId, room: &RoomId) -> bool {
        self.config.copy_budget != 0
            && self.own_rooms.contains(room)
            && self.links.get(&link).is_some_and(|l| l.peer_wants_roles)
    }

    /// Items held by every open reconciliation session of this node (the
    /// session budget, `MAX_SESSION_ITEMS`).
    pub(super) fn session_items(&self) -> usize {
        self.links
            .values()
            .flat_map(|l| l.sessions.values())
            .map(Session::item_count)
            .sum()
    }

    /// Whether `link`, with `open` sessions, may open another now: always
    /// its first, further ones within the node's session budget.
    fn may_open(&self, open: usize) -> bool {
        open == 0 || self.session_items() < MAX_SESSION_ITEMS
    }

    /// Answers the peers' `Init`s that waited for the session budget, in
    /// arrival order: each once its link has no session open or the
    /// budget has room (the others keep their place).
    pub(super) fn answer_deferred(&mut self) -> Result<(), StoreError> {
        if self.deferred_inits.is_empty() {
            return Ok(());
        }
        let mut total = self.session_items();
        let mut k = 0;
        while let Some(&(link, _, _)) = self.deferred_inits.get(k) {
            let open = self.links.get(&link).map_or(0, |l| l.sessions.len());
            if open > 0 && total >= MAX_SESSION_ITEMS {
                k += 1;
                continue;
            }
            if let Some((link, number, msg)) = self.deferred_inits.remove(k) {
                self.on_reconcile(link, number, msg)?;
                total = self.session_items();
            }
        }
        Ok(())
    }

    pub(super) fn start_sessions(
        &mut self,
        link: LinkId,
        rooms: Vec<RoomId>,
    ) -> Result<(), StoreError> {
        for room in rooms {
            let open = self
                .links
                .get(&link)
                .map_or(usize::MAX, |l| l.sessions.len());
            if open >= ROUND_SESSIONS || !self.may_open(open) {
                break;
            }
            let items = self.room_items(&room, self.quarantines(link, &room))?;
            self.open_session(link, room, Part::WHOLE, items);
        }
        Ok(())
    }

    pub(super) fn on_reconcile(
        &mut self,
        link: LinkId,
        number: u64,
        msg: Message,
    ) -> Result<(), StoreError> {
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        let existing = l.sessions.contains_key(&number);
        // A peer's count of a whole room: sync progress (`progress`).
        match &msg {
            Message::Init {
                room,
                part: Part::WHOLE,
                count,
                ..
            } => self.note_peer_count(*room, *count),
            Message::Sketch { count, .. } => {
                if let Some(s) = l.sessions.get(&number)
                    && s.part() == Part::WHOLE
                {
                    let room = s.room();
                    self.note_peer_count(room, *count);
                }
            }
            _ => {}
        }
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        let replies = if let Message::Init { room, .. } = &msg {
            let waiting = self.deferred_inits.iter().filter(|(k, _, _)| *k == link);
            let (waiting, again) = waiting.fold((0, false), |(n, again), (_, num, _)| {
                (n + 1, again || *num == number)
            });
            // Only the lower-nonce side initiates; a fresh number only.
            if l.initiator
                || existing
                || again
                || l.sessions.len() + waiting >= MAX_SESSIONS_PER_LINK
            {
                self.penalise(
                    link,
                    "unexpected reconciliation session",
                    CloseReason::ProtocolViolation,
                );
                return Ok(());
            }
            // Over the node's session budget, a link that already has a
            // session waits for its turn (`answer_deferred`).
            if !l.sessions.is_empty()
                && self.deferred_inits.len() < MAX_DEFERRED_INITS
                && self.session_items() >= MAX_SESSION_ITEMS
            {
                self.deferred_inits.push_back((link, number, msg));
                self.stats.inits_deferred += 1;
                return Ok(());
            }
            let part = match &msg {
                Message::Init { part, .. } => *part,
                _ => Part::WHOLE,
            };
            let mut items = self.room_items(room, self.quarantines(link, room))?;
            items.retain(|i| part.contains(i));
            // As in `start_parts`: a slice's session holds only its slice.
            items.shrink_to_fit();
            match Session::respond(items, &msg) {
                Some((session, replies)) => {
                    if let Some(l) = self.links.get_mut(&link) {
                        l.sessions.insert(number, session);
                    }
                    replies
                }
                None => Vec::new(),
            }
        } else {
            let Some(session) = self
                .links
                .get_mut(&link)
                .and_then(|l| l.sessions.get_mut(&number))
            else {
                self.penalise(
                    link,
                    "message for an unknown reconciliation session",
                    CloseReason::ProtocolViolation,
                );
                return Ok(());
            };
            match session.handle(msg) {
                Ok(r) => r,
                Err(e) => {
                    self.penalise(
                        link,
                        &format!("bad reconciliation message: {e}"),
                        CloseReason::ProtocolViolation,
                    );
                    return Ok(());
                }
            }
        };
        for reply in replies {
            self.send(
                link,
                &Frame::Reconcile {
                    session: number,
                    msg: reply,
                },
            );
        }
        let done = self
            .links
            .get(&link)
            .and_then(|l| l.sessions.get(&number))
            .and_then(|s| {
                s.outcome().map(|o| {
                    let i_lack = !o.i_lack.is_empty();
                    let est = o.estimate.unwrap_or(0);
                    (
                        o.peer_lacks.clone(),
                        i_lack,
                        o.failed,
                        est,
                        s.room(),
                        s.part(),
                    )
                })
            });
        if let Some((peer_lacks, i_lack, failed, estimate, room, part)) = done {
            let now = self.now_ms;
            // In an own room, what the peer showed it holds acknowledges
            // this device's own events to the mesh (the device core keeps
            // the delivery queue).
            let raw_lacks =
                (failed.is_none() && self.own_rooms.contains(&room)).then(|| peer_lacks.clone());
            // Events this side may not hand over (no copies left for a
            // carrier) are not a difference worth another period (whether
            // it vouches for each is checked when it is sent).
            let rule = self.spray_rule();
            let peer_lacks: Vec<Item> = match self.links.get(&link) {
                Some(l) => peer_lacks
                    .into_iter()
                    .filter(|i| rule.offerable(&self.copies, l, &i.id, &room, true))
                    .collect(),
                None => Vec::new(),
            };
            // Likewise what this side lacks counts only where the peer
            // surely sends it: to a member, or without a budget.
            let found = !peer_lacks.is_empty()
                || failed.is_some()
                || (i_lack && (self.config.copy_budget == 0 || self.own_rooms.contains(&room)));
            if let Some(l) = self.links.get_mut(&link) {
                let finished = l.sessions.remove(&number);
                if let (Some(mut s), Some(lacks)) = (finished, raw_lacks) {
                    self.outputs.push_back(Output::App(AppEvent::PeerHolds {
                        room,
                        items: s.take_items(),
                        lacks,
                    }));
                }
                l.period_found |= found;
                // Too many differences for one session: reconcile slices
                // of the slice separately (initiator side), as many as the
                // estimate asks for, or the two halves without one.
                if l.initiator
                    && failed == Some(FAIL_TOO_MANY_DIFFERENCES)
                    && let Some(parts) = part.split_for(estimate)
                    && l.parts.len() + parts.len() <= MAX_QUEUED_PARTS
                {
                    // Each slice's expected differences (the estimate is
                    // within about ±20 %): its share of the backlog.
                    let share = slice_share(estimate, parts.len());
                    l.parts.extend(parts.into_iter().map(|p| (room, p, share)));
                }
                // A round that left rooms out, or slices still to
                // reconcile, continue at once (once the link's catch-up
                // drained, `anti_entropy_due`).
                if l.sessions.is_empty() && l.initiator && (l.more_rooms || !l.parts.is_empty()) {
                    l.next_anti_entropy_ms = now;
                }
            }
            self.queue_catch_up(link, peer_lacks);
            self.start_parts(link)?;
            self.pump(link)?;
        }
        Ok(())
    }

    /// Starts queued slices while the link has free session slots and its
    /// catch-up has room for what they may find (each slice's share of the
    /// estimate plus a quarter, at least `SLICE_BACKLOG_SHARE`, within
    /// the link's backlog cap; one at a time once the catch-up drained to
    /// `CATCH_UP_LOW_WATER` whatever the share): the slices of a room are
    /// reconciled ahead of the transfer, so its whole catch-up is sent in
    /// one order (control events first, oldest first), not slice by slice
    /// in the random order of event-ID prefixes.
    pub(super) fn start_parts(&mut self, link: LinkId) -> Result<(), StoreError> {
        loop {
            let cap = self.backlog_cap();
            let budget = self.session_items() < MAX_SESSION_ITEMS;
            let Some(l) = self.links.get_mut(&link) else {
                return Ok(());
            };
            let Some(&(_, _, share)) = l.parts.front() else {
                return Ok(());
            };
            // The slices of one split are alike: each open session may
            // find about as much as the next. A drained link always starts
            // one (a share larger than the backlog, from an inflated
            // estimate, must not stall the link's anti-entropy).
            let ahead = (l.sessions.len() + 1).saturating_mul(share);
            let fits = l.catch_up_len().saturating_add(ahead) <= cap;
            let drained = l.sessions.is_empty() && l.catch_up_len() <= CATCH_UP_LOW_WATER;
            let open = l.sessions.len();
            // Within the node's session budget, as `may_open`.
            if open >= ROUND_SESSIONS || !(fits || drained) || !(open == 0 || budget) {
                return Ok(());
            }
            let Some((room, part, _)) = l.parts.pop_front() else {
                return Ok(());
            };
            let mut items = self.room_items(&room, self.quarantines(link, &room))?;
            items.retain(|i| part.contains(i));
            // The slice's session keeps its items: not the whole room's
            // capacity (up to `MAX_SESSIONS_PER_LINK` slices are open at
            // once, each of a room that may hold tens of thousands).
            items.shrink_to_fit();
            self.open_session(link, room, part, items);
        }
    }

    /// Opens one session as initiator and sends its `Init`.
    pub(super) fn open_session(
        &mut self,
        link: LinkId,
        room: RoomId,
        part: Part,
        items: Vec<Item>,
    ) {
        let mut salt = [0u8; 8];
        self.rng.fill_bytes(&mut salt);
        let (session, init) = Session::initiate_part(room, part, items, salt);
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        let number = l.next_session;
        l.next_session += 1;
        l.sessions.insert(number, session);
        self.send(
            link,
            &Frame::Reconcile {
                session: number,
                msg: init,
            },
        );
    }

    /// Starts the anti-entropy rounds that are due (the lower-nonce side
    /// initiates), backing off after quiet periods.
    pub(super) fn anti_entropy_due(&mut self) -> Result<(), StoreError> {
        let now = self.now_ms;
        let due: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.next_anti_entropy_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        let interval = self.config.anti_entropy_interval_ms;
        for link in due {
            if let Some(l) = self.links.get_mut(&link) {
                // Backpressure: what earlier rounds found is still being
                // sent; the next round waits until the link drained it
                // (`pump` brings the time forward), at the latest one
                // interval.
                if l.initiator && l.rooms_seen && l.catch_up_len() > CATCH_UP_LOW_WATER {
                    l.drain_wait = true;
                    l.next_anti_entropy_ms = now.saturating_add(interval);
                    continue;
                }
                // Slices left by a failed session continue the round.
                if l.initiator && l.rooms_seen && l.sessions.is_empty() && !l.parts.is_empty() {
                    l.next_anti_entropy_ms = now.saturating_add(interval);
                    self.start_parts(link)?;
                    continue;
                }
                let new_period = !l.more_rooms;
                let both_budget = self.config.copy_budget != 0 && l.peer_wants_roles;
                if new_period {
                    // A new period: back off if the last one found nothing.
                    if l.period_found {
                        l.quiet_periods = 0;
                    } else {
                        l.quiet_periods = l.quiet_periods.saturating_add(1);
                    }
                    l.period_found = false;
                }
                let shift = l.quiet_periods.min(MAX_ANTI_ENTROPY_BACKOFF_SHIFT);
                let wait = interval.saturating_mul(1 << shift);
                l.next_anti_entropy_ms = now.saturating_add(wait);
                if new_period && both_budget && l.rooms_seen {
                    self.want_refused_on(link)?;
                    self.offer_after_hold(link);
                }
                let Some(l) = self.links.get(&link) else {
                    continue;
                };
                if !l.sessions.is_empty() || !l.parts.is_empty() || !l.rooms_seen || !l.initiator {
                    continue;
                }
            }
            let rooms = self.next_rooms(link)?;
            self.start_sessions(link, rooms)?;
        }
        Ok(())
    }
}

/// The backlog room one of `parts` slices of a split reserves: its share of
/// the split's `estimate` plus a quarter (estimates are within about
/// ±20 %), at least `SLICE_BACKLOG_SHARE` (without an estimate, or for a
/// small one).
fn slice_share(estimate: u64, parts: usize) -> usize {
    let each = estimate.div_ceil(parts.max(1) as u64);
    usize::try_from(each + each / 4)
        .unwrap_or(usize::MAX)
        .max(SLICE_BACKLOG_SHARE)
}
