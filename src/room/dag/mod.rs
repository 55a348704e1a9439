//! A room's causal DAG (`protocol-spec/rooms.md`, "DAG", "Ordering", "Gaps").
//!
//! [`RoomDag`] is derived state: it indexes the signed events a node holds
//! for one room and is rebuilt by re-inserting them from the store, so it
//! needs no persistence of its own. An event enters the DAG only when all
//! its predecessors are present; until then it waits in a bounded pending
//! set and [`RoomDag::missing`] names what to fetch.
//!
//! For membership, each event records the set of membership events among
//! its ancestors (a bitset shared between events with the same set), which
//! makes "is an ancestor of" and "is concurrent with" constant-time for
//! the resolver (`crate::room::resolve`).
//!
//! * **Display order** ([`RoomDag::display_order`]): Kahn's topological sort
//!   of the whole DAG, taking among ready events the smallest
//!   `(origin_ts_ms, event_id)`; identical on every node with the same
//!   events.
//! * **Gaps** ([`RoomDag::gaps`]): per-(room, sender) sequence numbers start
//!   at 1; a missing range below a sender's highest seen sequence is a gap
//!   (a withheld or not yet delivered event) and is reported, never hidden.
//!   Two events with the same (sender, seq) are a fork ([`RoomDag::forks`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use thiserror::Error;

use crate::crypto::keys::DeviceId;
use crate::crypto::roster::RosterSecret;
use crate::event::{Event, EventError, EventId, EventKind, RoomId};
use crate::limits::MAX_PREV_EVENTS;
use crate::room::membership::{Membership, MembershipError, derive_room_id};
use crate::room::resolve::{self, MEvent, MembershipState, Resolution};
use crate::room::roster::Roster;

mod arena;
mod seqs;
use arena::{Arena, NewSlot, Slot};

/// Most events waiting for missing predecessors, per room.
pub const MAX_PENDING_EVENTS: usize = 4096;
/// Most events waiting for predecessors from one sender without standing
/// in the room (never validly invited as far as this DAG knows): an
/// outsider's events cannot crowd out the members' (`rooms.md`,
/// "Admission").
pub const MAX_PENDING_PER_STRANGER: usize = 16;
/// Most events waiting for predecessors from all senders without standing
/// together.
pub const MAX_PENDING_FROM_STRANGERS: usize = 256;
/// Most membership events one room may accumulate.
pub const MAX_MEMBERSHIP_EVENTS: usize = 2048;
/// Most events one in-memory room index holds.
pub const MAX_ROOM_EVENTS: usize = 200_000;

/// Why an event could not be added to a room's DAG.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DagError {
    /// The event belongs to another room.
    #[error("event belongs to room {0}, not this room")]
    WrongRoom(RoomId),
    /// The signature does not verify.
    #[error("event: {0}")]
    Event(#[from] EventError),
    /// A membership event's payload is malformed or its card is forged.
    #[error("membership payload: {0}")]
    Membership(#[from] MembershipError),
    /// Too many events are waiting for predecessors.
    #[error("too many events waiting for missing predecessors ({MAX_PENDING_EVENTS})")]
    PendingFull,
    /// The room has `MAX_MEMBERSHIP_EVENTS` membership events.
    #[error("room has reached {MAX_MEMBERSHIP_EVENTS} membership events")]
    MembershipHistoryFull,
    /// The room index has `MAX_ROOM_EVENTS` events.
    #[error("room index holds {MAX_ROOM_EVENTS} events")]
    RoomIndexFull,
    /// Admission: the sender is not a member at the event's causal
    /// position (nor is the event the room's well-formed create). Final:
    /// an event's causal past never changes.
    #[error("sender {0} is not a member at this event's place in the room history")]
    NotAuthorized(DeviceId),
    /// Too many events from senders without standing wait for
    /// predecessors (`MAX_PENDING_PER_STRANGER`,
    /// `MAX_PENDING_FROM_STRANGERS`).
    #[error("too many events from non-members wait for missing predecessors")]
    StrangerPendingFull,
    /// A chunk that does not hang off one message of its own sender, or
    /// whose framing is malformed (`protocol-spec/attachments.md` §5).
    #[error("chunk: {0}")]
    Chunk(&'static str),
}

/// A small growable bitset over membership indices.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// A set able to hold `n` indices without growing.
    pub fn with_len(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    /// Whether `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    /// Adds `i`.
    pub fn insert(&mut self, i: usize) {
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    /// Adds every element of `other`.
    pub fn union_with(&mut self, other: &Bits) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    /// Number of elements.
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// An event the DAG holds, without its body ([`RoomDag::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Sender.
    pub sender: DeviceId,
    /// Sequence number.
    pub seq: u64,
    /// Kind.
    pub kind: EventKind,
    /// Origin timestamp.
    pub ts: u64,
}

/// The outcome of [`RoomDag::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Already held (in the DAG or pending).
    Duplicate,
    /// Held back until these predecessors arrive.
    Pending {
        /// Predecessors not yet held.
        missing: Vec<EventId>,
    },
    /// Added, together with any pending events it released (in order).
    Accepted(Vec<EventId>),
}

/// A detected sequence gap for one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gap {
    /// The sender.
    pub sender: DeviceId,
    /// First missing sequence number.
    pub from_seq: u64,
    /// Last missing sequence number.
    pub to_seq: u64,
}

/// One room's causal DAG. See the module docs.
#[derive(Debug, Clone)]
pub struct RoomDag {
    room: RoomId,
    /// Admitted events, by index ([`arena`]).
    arena: Arena,
    /// The heads ([`RoomDag::heads`] before its order and cap): every
    /// non-chunk node no non-chunk node cites, kept as nodes enter, so a
    /// send costs no scan of the room's history.
    tips: BTreeSet<u32>,
    /// Membership events by membership index: arena index and change.
    mlist: Vec<(u32, Membership)>,
    /// Membership index by arena index.
    midx: BTreeMap<u32, usize>,
    pending: BTreeMap<EventId, Event>,
    waiters: BTreeMap<EventId, BTreeSet<EventId>>,
    resolution: Option<Resolution>,
    /// Causally valid membership indices (admission; each judged once, by
    /// its own causal past).
    cvalid: Bits,
    /// Devices a causally valid create or invite names: senders with
    /// standing, whose early events may wait in the members' pending pool.
    standing: BTreeSet<DeviceId>,
    /// Pending events of senders without standing, by event.
    stranger_pending: BTreeMap<EventId, DeviceId>,
    /// The same, counted per sender.
    stranger_pending_by: BTreeMap<DeviceId, usize>,
    /// The last admission state computed: a membership-ancestor set and the
    /// members it defines (consecutive messages share their ancestor set).
    causal_cache: Option<(Arc<Bits>, BTreeSet<DeviceId>)>,
    /// The roster secret, when held, and the cards it opened.
    roster: Roster,
}

/// Kinds no event cites (`protocol-spec/rooms.md` §9, `attachments.md`
/// §5): they cite the heads they saw but are never heads themselves, and
/// citing an event does not stop it being one. So no event waits for a
/// chunk or for someone's receipt to be admitted.
fn never_cited(kind: EventKind) -> bool {
    matches!(kind, EventKind::Chunk | EventKind::Receipt)
}

impl RoomDag {
    /// An empty DAG for `room`.
    pub fn new(room: RoomId) -> Self {
        Self {
            room,
            arena: Arena::default(),
            tips: BTreeSet::new(),
            mlist: Vec::new(),
            midx: BTreeMap::new(),
            pending: BTreeMap::new(),
            waiters: BTreeMap::new(),
            resolution: None,
            cvalid: Bits::default(),
            standing: BTreeSet::new(),
            stranger_pending: BTreeMap::new(),
            stranger_pending_by: BTreeMap::new(),
            causal_cache: None,
            roster: Roster::default(),
        }
    }

    /// The room.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// Number of events in the DAG (not counting pending ones).
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether the DAG is empty.
    pub fn is_empty(&self) -> bool {
        self.arena.len() == 0
    }

    /// Whether the event is held (in the DAG or pending).
    pub fn contains(&self, id: &EventId) -> bool {
        self.admitted(id) || self.pending.contains_key(id)
    }

    /// Whether the event is in the DAG (admitted, not pending).
    pub fn admitted(&self, id: &EventId) -> bool {
        self.arena.find(id).is_some()
    }

    fn slot(&self, id: &EventId) -> Option<&Slot> {
        self.arena.find(id).and_then(|i| self.arena.slot(i))
    }

    /// The membership change an admitted membership event makes.
    pub fn membership(&self, id: &EventId) -> Option<&Membership> {
        let m = *self.midx.get(&self.arena.find(id)?)?;
        self.mlist.get(m).map(|(_, op)| op)
    }

    /// Verifies and adds a signed event of this room.
    pub fn insert(&mut self, event: &Event) -> Result<Inserted, DagError> {
        self.insert_full(event).map(|(i, _)| i)
    }

    /// Like [`RoomDag::insert`], also returning the accepted events
    /// themselves (the given one and the pending ones it released), in
    /// acceptance order, so the caller can process released events.
    pub fn insert_full(&mut self, event: &Event) -> Result<(Inserted, Vec<Event>), DagError> {
        self.insert_inner(event, true)
    }

    /// Adds an event loaded from this node's own store, whose signature was
    /// verified before it was stored: skips the signature check so a
    /// restart does not re-verify the whole history. Never use it for
    /// bytes from the network or from a bundle.
    pub fn insert_from_store(&mut self, event: &Event) -> Result<Inserted, DagError> {
        self.insert_inner(event, false).map(|(i, _)| i)
    }

    fn insert_inner(
        &mut self,
        event: &Event,
        verify: bool,
    ) -> Result<(Inserted, Vec<Event>), DagError> {
        if event.room() != self.room {
            return Err(DagError::WrongRoom(event.room()));
        }
        if self.contains(&event.id()) {
            return Ok((Inserted::Duplicate, Vec::new()));
        }
        if verify {
            event.verify()?;
        }
        if event.kind() == EventKind::Membership {
            Membership::from_bytes(event.payload())?;
        }
        let missing: Vec<EventId> = event
            .prev()
            .iter()
            .filter(|p| !self.admitted(p))
            .copied()
            .collect();
        if !missing.is_empty() {
            if self.pending.len() >= MAX_PENDING_EVENTS {
                return Err(DagError::PendingFull);
            }
            let sender = event.sender();
            if !self.standing.contains(&sender) {
                let by = self.stranger_pending_by.get(&sender).copied().unwrap_or(0);
                if by >= MAX_PENDING_PER_STRANGER
                    || self.stranger_pending.len() >= MAX_PENDING_FROM_STRANGERS
                {
                    return Err(DagError::StrangerPendingFull);
                }
                self.stranger_pending_by.insert(sender, by + 1);
                self.stranger_pending.insert(event.id(), sender);
            }
            for m in &missing {
                self.waiters.entry(*m).or_default().insert(event.id());
            }
            self.pending.insert(event.id(), event.clone());
            return Ok((Inserted::Pending { missing }, Vec::new()));
        }
        self.accept(event)?;
        let mut accepted = vec![event.id()];
        let mut events = vec![event.clone()];
        let mut queue = Vec::new();
        self.release(event.id(), &mut queue);
        while let Some(ev) = queue.pop() {
            let id = ev.id();
            // A released event that no longer fits (a limit reached while
            // it waited) is dropped; the event the caller passed was added.
            if self.accept(&ev).is_err() {
                continue;
            }
            accepted.push(id);
            self.release(id, &mut queue);
            events.push(ev);
        }
        Ok((Inserted::Accepted(accepted), events))
    }

    /// Moves pending events that waited only for `id` to `queue`.
    fn release(&mut self, id: EventId, queue: &mut Vec<Event>) {
        let Some(ws) = self.waiters.remove(&id) else {
            return;
        };
        for w in ws.into_iter().rev() {
            let ready = self
                .pending
                .get(&w)
                .is_some_and(|p| p.prev().iter().all(|x| self.admitted(x)));
            if ready && let Some(p) = self.pending.remove(&w) {
                self.unpend_stranger(&w);
                queue.push(p);
            }
        }
    }

    /// Forgets a released pending event's stranger quota.
    fn unpend_stranger(&mut self, id: &EventId) {
        if let Some(sender) = self.stranger_pending.remove(id)
            && let Some(n) = self.stranger_pending_by.get_mut(&sender)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.stranger_pending_by.remove(&sender);
            }
        }
    }

    fn accept(&mut self, ev: &Event) -> Result<(), DagError> {
        if self.arena.len() >= MAX_ROOM_EVENTS {
            return Err(DagError::RoomIndexFull);
        }
        let membership = if ev.kind() == EventKind::Membership {
            Some(Membership::from_bytes(ev.payload())?)
        } else {
            None
        };
        let mut prev: Vec<u32> = Vec::with_capacity(ev.prev().len());
        let mut anc: Option<Arc<Bits>> = None;
        let mut depth = 0u32;
        for p in ev.prev() {
            let Some(pi) = self.arena.find(p) else {
                continue;
            };
            let Some(pn) = self.arena.slot(pi) else {
                continue;
            };
            prev.push(pi);
            depth = depth.max(pn.depth().saturating_add(1));
            let mut with_parent: Option<Bits> = None;
            if pn.is_membership()
                && let Some(&m) = self.midx.get(&pi)
            {
                let mut b = (*pn.anc).clone();
                b.insert(m);
                with_parent = Some(b);
            }
            anc = Some(match (anc, with_parent) {
                (None, Some(b)) => Arc::new(b),
                (None, None) => pn.anc.clone(),
                (Some(a), Some(b)) => {
                    let mut u = (*a).clone();
                    u.union_with(&b);
                    Arc::new(u)
                }
                (Some(a), None) => {
                    if a == pn.anc || Arc::ptr_eq(&a, &pn.anc) {
                        a
                    } else {
                        let mut u = (*a).clone();
                        u.union_with(&pn.anc);
                        if u == *pn.anc {
                            pn.anc.clone()
                        } else {
                            Arc::new(u)
                        }
                    }
                }
            });
        }
        let anc = anc.unwrap_or_default();
        if ev.kind() == EventKind::Chunk {
            self.check_chunk(ev)?;
        }
        // Admission before anything of the event counts against the
        // room's caps: only members (at the event's causal position) fill
        // them.
        self.admit(ev, membership.as_ref(), &anc)?;
        if membership.is_some() && self.mlist.len() >= MAX_MEMBERSHIP_EVENTS {
            return Err(DagError::MembershipHistoryFull);
        }
        let i = self.arena.push(NewSlot {
            id: ev.id(),
            sender: ev.sender(),
            seq: ev.seq(),
            ts: ev.origin_ts_ms(),
            kind: ev.kind(),
            prev: &prev,
            anc,
            depth,
        });
        if !never_cited(ev.kind()) {
            for p in &prev {
                self.tips.remove(p);
            }
            self.tips.insert(i);
        }
        if let Some(m) = membership {
            let midx = self.mlist.len();
            self.midx.insert(i, midx);
            self.roster.note(&self.room, ev.id(), &m);
            self.mlist.push((i, m));
            self.resolution = None;
            self.judge_membership(midx);
        }
        Ok(())
    }

    /// Admission (`protocol-spec/rooms.md`, "Admission"): the event enters
    /// the room's history only if it is the room's well-formed create, or
    /// its sender is a member in the state that the causally valid
    /// membership events among its ancestors define.
    fn admit(
        &mut self,
        ev: &Event,
        membership: Option<&Membership>,
        anc: &Arc<Bits>,
    ) -> Result<(), DagError> {
        let sender = ev.sender();
        let ok = match membership.and_then(Membership::creation) {
            Some((creator, nonce)) => {
                ev.prev().is_empty()
                    && creator == sender
                    && derive_room_id(&sender, nonce) == self.room
            }
            None => self.is_causal_member(anc, &sender),
        };
        if ok {
            Ok(())
        } else {
            Err(DagError::NotAuthorized(sender))
        }
    }

    /// Whether `sender` is a member in the state that the causally valid
    /// membership events of `anc` define.
    fn is_causal_member(&mut self, anc: &Arc<Bits>, sender: &DeviceId) -> bool {
        if let Some((bits, members)) = &self.causal_cache
            && (Arc::ptr_eq(bits, anc) || **bits == **anc)
        {
            return members.contains(sender);
        }
        let past = self.causal_past(anc);
        let members = resolve::causal_members(&self.mevents(), &past);
        let ok = members.contains(sender);
        self.causal_cache = Some((anc.clone(), members));
        ok
    }

    /// The causally valid membership indices of `anc`, in a topological
    /// order that depends on them alone: (depth, time, ID).
    fn causal_past(&self, anc: &Bits) -> Vec<usize> {
        let mut past: Vec<(u32, u64, EventId, usize)> = self
            .mlist
            .iter()
            .enumerate()
            .filter(|(i, _)| anc.contains(*i) && self.cvalid.contains(*i))
            .filter_map(|(i, (a, _))| {
                let n = self.arena.slot(*a)?;
                Some((n.depth(), n.ts, self.arena.id(*a), i))
            })
            .collect();
        past.sort_unstable();
        past.into_iter().map(|p| p.3).collect()
    }

    /// Judges a newly added membership event once, by its own past: if
    /// causally valid it counts for the admission of its descendants, and
    /// the device it creates or invites gains standing.
    fn judge_membership(&mut self, m: usize) {
        let Some((node, op)) = self
            .mlist
            .get(m)
            .and_then(|(a, op)| Some((self.arena.slot(*a)?, op)))
        else {
            return;
        };
        let past = self.causal_past(&node.anc);
        if !resolve::causally_valid(&self.room, &self.mevents(), &past, m) {
            return;
        }
        let named = Some(op)
            .filter(|m| m.creation().is_some() || m.invitee().is_some())
            .and_then(Membership::named);
        self.cvalid.insert(m);
        if let Some(d) = named {
            self.standing.insert(d);
        }
    }

    /// Whether the event waits for predecessors.
    pub fn is_pending(&self, id: &EventId) -> bool {
        self.pending.contains_key(id)
    }

    /// The predecessors a pending event cites, or `None` if it is not
    /// pending.
    pub fn pending_prev(&self, id: &EventId) -> Option<&[EventId]> {
        self.pending.get(id).map(Event::prev)
    }

    /// Devices with standing: named by a causally valid create or invite.
    pub fn standing(&self) -> &BTreeSet<DeviceId> {
        &self.standing
    }

    /// Predecessors that pending events wait for and nobody holds.
    pub fn missing(&self) -> Vec<EventId> {
        self.waiters
            .keys()
            .filter(|k| !self.contains(k))
            .copied()
            .collect()
    }

    /// Number of pending events.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the DAG holds no event, admitted or pending.
    pub fn holds_nothing(&self) -> bool {
        self.is_empty() && self.pending.is_empty()
    }

    /// What the room's views need of an event the DAG holds (admitted or
    /// pending), without its body: views read bodies and plaintexts from
    /// the store one event at a time, so their memory is the DAG's
    /// whatever the room's stored size.
    pub fn held(&self, id: &EventId) -> Option<Held> {
        if let Some(i) = self.arena.find(id)
            && let (Some(n), Some(kind)) = (self.arena.slot(i), self.arena.kind(i))
        {
            return Some(Held {
                sender: self.arena.sender(n),
                seq: n.seq,
                kind,
                ts: n.ts,
            });
        }
        self.pending.get(id).map(|e| Held {
            sender: e.sender(),
            seq: e.seq(),
            kind: e.kind(),
            ts: e.origin_ts_ms(),
        })
    }

    /// The admitted events from admission index `from` on (the first
    /// [`RoomDag::len`] is where the next one will be), in admission order:
    /// what a reader that keeps its own position needs to see only what
    /// entered since.
    pub fn admitted_from(&self, from: usize) -> impl Iterator<Item = (EventId, Held)> + '_ {
        (from..self.arena.len()).filter_map(|i| {
            let i = i as u32;
            let (n, kind) = (self.arena.slot(i)?, self.arena.kind(i)?);
            let held = Held {
                sender: self.arena.sender(n),
                seq: n.seq,
                kind,
                ts: n.ts,
            };
            Some((self.arena.id(i), held))
        })
    }

    /// `sender`'s highest admitted `Message` sequence number (0 if none):
    /// what a delivered receipt entry for it counts up to (§9).
    pub fn top_message(&self, sender: &DeviceId) -> u64 {
        self.arena.top_message(sender)
    }

    /// Pending events' IDs, ascending.
    pub fn pending_ids(&self) -> impl Iterator<Item = &EventId> {
        self.pending.keys()
    }

    /// Every sender of a held event (admitted or pending), ascending.
    pub fn held_senders(&self) -> BTreeSet<DeviceId> {
        self.arena
            .senders()
            .copied()
            .chain(self.pending.values().map(Event::sender))
            .collect()
    }

    fn mevents(&self) -> Vec<MEvent<'_>> {
        self.mlist
            .iter()
            .filter_map(|(a, op)| {
                let n = self.arena.slot(*a)?;
                let id = self.arena.id(*a);
                Some(MEvent {
                    id,
                    sender: self.arena.sender(n),
                    ts: n.ts,
                    op,
                    card: self.roster.card(&id, op),
                    anc: &n.anc,
                })
            })
            .collect()
    }

    /// Membership events with their IDs and senders, in membership order.
    fn mlist_ops<'a>(
        arena: &'a Arena,
        mlist: &'a [(u32, Membership)],
    ) -> impl Iterator<Item = (EventId, DeviceId, &'a Membership)> + Clone {
        mlist.iter().filter_map(|(a, op)| {
            let n = arena.slot(*a)?;
            Some((arena.id(*a), arena.sender(n), op))
        })
    }

    /// The room's roster secrets this device holds, the room's own first
    /// (`crate::room::roster`).
    pub fn roster_secrets(&self) -> &[RosterSecret] {
        self.roster.secrets()
    }

    /// Sets roster secrets this device accepted before (its persisted room
    /// keys, or a room it creates), before events are fed.
    pub fn preset_roster_secrets(&mut self, secrets: Vec<RosterSecret>) {
        self.roster.preset(secrets);
        self.resolution = None;
    }

    /// Offers the roster secrets opened from this device's invite: taken
    /// only if the first opens the room's create card
    /// (`crate::room::roster`); then every sealed card held is read.
    /// Returns whether they were taken.
    pub fn offer_roster_secrets(&mut self, secrets: Vec<RosterSecret>) -> bool {
        let room = self.room;
        let events = Self::mlist_ops(&self.arena, &self.mlist);
        let ok = self.roster.offer(&room, secrets, events);
        if ok {
            self.resolution = None;
        }
        ok
    }

    /// Adds a rotated roster secret (from an admin's key share) and reads
    /// the cards it seals. Returns whether it was new.
    pub fn add_roster_secret(&mut self, secret: RosterSecret) -> bool {
        let room = self.room;
        let events = Self::mlist_ops(&self.arena, &self.mlist).map(|(id, _, op)| (id, op));
        let new = self.roster.add(&room, &[secret], events);
        if new {
            self.resolution = None;
        }
        new
    }

    /// The membership resolution (cached until the next membership event).
    pub fn resolve(&mut self) -> &Resolution {
        if self.resolution.is_none() {
            let r = resolve::resolve(&self.room, &self.mevents());
            self.resolution = Some(r);
        }
        self.resolution.get_or_insert_with(Resolution::default)
    }

    /// Current membership (all valid membership events applied).
    pub fn members(&mut self) -> MembershipState {
        self.resolve().state.clone()
    }

    /// Membership at an event's causal position: the valid membership events
    /// among its strict ancestors, applied. `None` if the event is unknown.
    pub fn members_at(&mut self, id: &EventId) -> Option<MembershipState> {
        self.resolve();
        let anc = self.slot(id)?.anc.clone();
        let res = self.resolution.as_ref()?;
        Some(resolve::state_at(&self.mevents(), res, &anc))
    }

    /// Whether `a` is a strict ancestor of `b`.
    pub fn is_ancestor(&self, a: &EventId, b: &EventId) -> bool {
        let (Some(ia), Some(ib)) = (self.arena.find(a), self.arena.find(b)) else {
            return false;
        };
        let (Some(na), Some(nb)) = (self.arena.slot(ia), self.arena.slot(ib)) else {
            return false;
        };
        if na.is_membership()
            && let Some(&m) = self.midx.get(&ia)
        {
            return nb.anc.contains(m);
        }
        let mut stack = vec![ib];
        let mut seen = BTreeSet::new();
        while let Some(x) = stack.pop() {
            let Some(n) = self.arena.slot(x) else {
                continue;
            };
            for &p in self.arena.prev(n) {
                if p == ia {
                    return true;
                }
                let deeper = self.arena.slot(p).is_some_and(|pn| pn.depth() > na.depth());
                if deeper && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        false
    }

    /// Whether `sender` may act in the room at event `id`: a member at the
    /// event's causal position, and no valid remove or leave of `sender` is
    /// concurrent with the event. Used to accept key shares and to flag
    /// messages from non-members.
    pub fn sender_authorized_at(&mut self, id: &EventId, sender: &DeviceId) -> bool {
        let Some(st) = self.members_at(id) else {
            return false;
        };
        if !st.is_member(sender) {
            return false;
        }
        let Some(res) = self.resolution.clone() else {
            return false;
        };
        let Some(anc) = self.slot(id).map(|n| n.anc.clone()) else {
            return false;
        };
        for &m in &res.t_order {
            if !res.valid.contains(m) || anc.contains(m) {
                continue;
            }
            let Some((a, op)) = self.mlist.get(m) else {
                continue;
            };
            let Some(node) = self.arena.slot(*a) else {
                continue;
            };
            let removes = matches!(op, Membership::Remove { .. } | Membership::Leave)
                && op.target(&self.arena.sender(node)) == *sender;
            if removes && !self.is_ancestor(id, &self.arena.id(*a)) {
                return false;
            }
        }
        true
    }

    /// Deterministic display order of every event in the DAG.
    pub fn display_order(&self) -> Vec<EventId> {
        let mut remaining: Vec<u8> = Vec::with_capacity(self.arena.len());
        let mut heap = BinaryHeap::new();
        for (i, s) in self.arena.slots().enumerate() {
            let n = self.arena.prev(s).len();
            remaining.push(n as u8);
            if n == 0 {
                heap.push(Reverse((s.ts, self.arena.id(i as u32), i as u32)));
            }
        }
        let mut out = Vec::with_capacity(self.arena.len());
        while let Some(Reverse((_, id, i))) = heap.pop() {
            out.push(id);
            for c in self.arena.children(i) {
                if let Some(r) = remaining.get_mut(c as usize) {
                    *r = r.saturating_sub(1);
                    if *r == 0
                        && let Some(cn) = self.arena.slot(c)
                    {
                        heap.push(Reverse((cn.ts, self.arena.id(c), c)));
                    }
                }
            }
        }
        out
    }

    /// The current DAG heads (events nobody cites), deepest first then by
    /// ID, at most `MAX_PREV_EVENTS`: the `prev` of the next local event.
    /// Chunks and receipts are never heads (`never_cited`).
    pub fn heads(&self) -> Vec<EventId> {
        self.heads_without(&BTreeSet::new())
    }

    /// A chunk hangs off exactly one message of its own sender, which its
    /// framing names (`protocol-spec/attachments.md` §5).
    fn check_chunk(&self, ev: &Event) -> Result<(), DagError> {
        let body = crate::room::attachment::ChunkBody::from_bytes(ev.payload())
            .map_err(|_| DagError::Chunk("malformed framing"))?;
        let [file] = ev.prev() else {
            return Err(DagError::Chunk("must cite exactly its announcement"));
        };
        let announced = self.arena.find(file).is_some_and(|i| {
            self.arena.kind(i) == Some(EventKind::Message)
                && self.arena.slot(i).map(|n| self.arena.sender(n)) == Some(ev.sender())
        });
        if body.file != *file || !announced {
            return Err(DagError::Chunk("not a chunk of its sender's message"));
        }
        Ok(())
    }

    /// The chunk events held for the announcement `file` (`attachments.md`
    /// §5), at most `limit`, in the order the DAG accepted them (a chunk
    /// cites one event, so each is listed once). The limit bounds what a
    /// sender who sends more chunks than its file has can cost a reader.
    pub fn chunks_of(&self, file: &EventId, limit: usize) -> Vec<EventId> {
        let Some(f) = self.arena.find(file) else {
            return Vec::new();
        };
        let mut chunks: Vec<u32> = self
            .arena
            .children(f)
            .filter(|&c| self.arena.kind(c) == Some(EventKind::Chunk))
            .collect();
        // Children come most recent first.
        chunks.reverse();
        chunks
            .into_iter()
            .take(limit)
            .map(|c| self.arena.id(c))
            .collect()
    }

    /// The heads of the DAG without the events of `skip` (which must hold
    /// every child of what it holds: a suffix of this device's own events
    /// that no peer holds yet), the same way [`RoomDag::heads`] orders and
    /// caps them. An urgent message cites these, so a receiver can admit
    /// it before the backlog it overtook (`protocol-spec/wire.md`, "Urgent
    /// messages"). With `skip` empty, [`RoomDag::heads`].
    pub fn heads_without(&self, skip: &BTreeSet<EventId>) -> Vec<EventId> {
        let mut h: Vec<(Reverse<u32>, EventId)> = if skip.is_empty() {
            self.tips
                .iter()
                .filter_map(|&i| Some((Reverse(self.arena.slot(i)?.depth()), self.arena.id(i))))
                .collect()
        } else {
            // Nothing cites a chunk or a receipt: a node whose children are
            // all such (or skipped) is a head, and they never are.
            let skipped = |i: u32| skip.contains(&self.arena.id(i));
            let cites = |i: u32| self.arena.kind(i).is_some_and(|k| !never_cited(k));
            let cited = |c: u32| !skipped(c) && cites(c);
            self.arena
                .slots()
                .enumerate()
                .map(|(i, n)| (i as u32, n))
                .filter(|&(i, _)| cites(i) && !skipped(i))
                .filter(|&(i, _)| !self.arena.children(i).any(cited))
                .map(|(i, n)| (Reverse(n.depth()), self.arena.id(i)))
                .collect()
        };
        h.sort();
        h.into_iter()
            .take(MAX_PREV_EVENTS)
            .map(|(_, id)| id)
            .collect()
    }

    /// `sender`'s held events, newest sequence number first.
    pub fn sender_events_newest_first(
        &self,
        sender: &DeviceId,
    ) -> impl Iterator<Item = EventId> + '_ {
        self.arena.sender_events_newest_first(sender)
    }

    /// Highest sequence number seen from `sender` (0 if none).
    pub fn max_seq(&self, sender: &DeviceId) -> u64 {
        self.arena.max_seq(sender)
    }

    /// Whether an event from `me` uses a sequence number at or above
    /// `my_next_seq`: another copy of this device (a restored or cloned data
    /// directory) has sent in this room. The caller then continues above
    /// [`RoomDag::max_seq`] and starts a new sender chain.
    pub fn own_seq_reused(&self, me: &DeviceId, my_next_seq: u64) -> bool {
        self.max_seq(me) >= my_next_seq
    }

    /// Sequence gaps per sender, in (sender, seq) order.
    pub fn gaps(&self) -> Vec<Gap> {
        self.arena
            .gaps()
            .into_iter()
            .map(|(sender, from_seq, to_seq)| Gap {
                sender,
                from_seq,
                to_seq,
            })
            .collect()
    }

    /// (sender, seq) pairs used by more than one event: forks or replays
    /// from a cloned device, in (sender, seq) order.
    pub fn forks(&self) -> Vec<(DeviceId, u64, Vec<EventId>)> {
        let mut out: Vec<(DeviceId, u64, Vec<EventId>)> = self
            .arena
            .forks()
            .map(|(d, seq, ids)| (d, seq, ids.clone()))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ContactCard, Identity};
    use crate::event::UnsignedEvent;
    use crate::room::membership::derive_room_id;

    fn ev(
        id: &Identity,
        room: RoomId,
        seq: u64,
        prev: &[&Event],
        kind: EventKind,
        payload: Vec<u8>,
    ) -> Event {
        UnsignedEvent {
            room,
            sender: id.device_id(),
            seq,
            prev: prev.iter().map(|e| e.id()).collect(),
            origin_ts_ms: 1000 + seq,
            expires_ms: 100_000,
            kind,
            payload,
        }
        .sign(id)
        .unwrap()
    }

    /// A device, its room and the room's create event.
    fn created_room() -> (Identity, RoomId, Event) {
        let a = Identity::from_seed(&[1; 32]);
        let room = derive_room_id(&a.device_id(), &[0; 16]);
        let card = ContactCard::create(&a, "A", 1).unwrap();
        let create = ev(
            &a,
            room,
            1,
            &[],
            EventKind::Membership,
            Membership::Create {
                card,
                nonce: [0; 16],
            }
            .to_bytes(),
        );
        (a, room, create)
    }

    #[test]
    fn pending_release_duplicates_forks_and_ancestry() {
        let (a, room, create) = created_room();
        let m2 = ev(&a, room, 2, &[&create], EventKind::Message, vec![1]);
        let m3 = ev(&a, room, 3, &[&m2], EventKind::Message, vec![2]);
        let fork3 = ev(&a, room, 3, &[&m2], EventKind::Message, vec![3]);
        let mut dag = RoomDag::new(room);
        assert_eq!(
            dag.insert(&m3).unwrap(),
            Inserted::Pending {
                missing: vec![m2.id()]
            }
        );
        assert_eq!(
            dag.insert(&m2).unwrap(),
            Inserted::Pending {
                missing: vec![create.id()]
            }
        );
        assert_eq!(dag.missing(), vec![create.id()]);
        assert_eq!(dag.insert(&m3).unwrap(), Inserted::Duplicate);
        assert_eq!(
            dag.insert(&create).unwrap(),
            Inserted::Accepted(vec![create.id(), m2.id(), m3.id()])
        );
        assert_eq!(dag.pending_len(), 0);
        assert!(dag.is_ancestor(&create.id(), &m3.id()));
        assert!(dag.is_ancestor(&m2.id(), &m3.id()));
        assert!(!dag.is_ancestor(&m3.id(), &m2.id()));
        dag.insert(&fork3).unwrap();
        assert_eq!(
            dag.forks(),
            vec![(a.device_id(), 3, {
                let mut v = vec![m3.id(), fork3.id()];
                v.sort();
                v
            })]
        );
        assert_eq!(dag.heads().len(), 2);
        assert_eq!(dag.display_order()[..2], [create.id(), m2.id()]);
        let other = ev(&a, RoomId([9; 16]), 1, &[], EventKind::Message, vec![]);
        assert_eq!(
            dag.insert(&other),
            Err(DagError::WrongRoom(RoomId([9; 16])))
        );
        let bad = ev(&a, room, 9, &[&create], EventKind::Membership, vec![0x80]);
        assert!(matches!(dag.insert(&bad), Err(DagError::Membership(_))));
    }

    /// Past the arena's chunk size (1,024) every lookup still answers
    /// from the right event: kinds (an unknown one too), senders, edges,
    /// the display order, chunks and forks.
    #[test]
    fn a_long_history_crosses_chunks_intact() {
        let (a, room, create) = created_room();
        let mut dag = RoomDag::new(room);
        dag.insert(&create).unwrap();
        let mut chain = vec![create];
        for seq in 2..2600u64 {
            let kind = if seq % 500 == 0 {
                EventKind::Other(77)
            } else {
                EventKind::Message
            };
            let e = ev(
                &a,
                room,
                seq,
                &[chain.last().unwrap()],
                kind,
                vec![seq as u8],
            );
            assert!(matches!(dag.insert(&e).unwrap(), Inserted::Accepted(_)));
            chain.push(e);
        }
        let fork = ev(
            &a,
            room,
            1500,
            &[&chain[1400]],
            EventKind::Message,
            vec![9, 9],
        );
        dag.insert(&fork).unwrap();
        assert_eq!(dag.len(), 2600);
        let ids: Vec<EventId> = chain.iter().map(Event::id).collect();
        let order = dag.display_order();
        assert_eq!(order.len(), 2600);
        assert!(order[..1400] == ids[..1400]);
        assert_eq!(dag.held(&ids[1999]).unwrap().kind, EventKind::Other(77));
        assert_eq!(dag.held(&ids[2100]).unwrap().seq, 2101);
        assert!(dag.is_ancestor(&ids[3], &ids[2500]));
        assert!(!dag.is_ancestor(&ids[2500], &fork.id()));
        let mut both = vec![ids[1499], fork.id()];
        both.sort();
        assert_eq!(dag.forks(), vec![(a.device_id(), 1500, both)]);
        assert_eq!(dag.max_seq(&a.device_id()), 2599);
        let newest: Vec<EventId> = dag
            .sender_events_newest_first(&a.device_id())
            .take(2)
            .collect();
        assert_eq!(newest, vec![ids[2598], ids[2597]]);
        let mut heads = vec![ids[2598], fork.id()];
        heads.sort_by_key(|id| (Reverse(if *id == fork.id() { 1400 } else { 2598 }), *id));
        assert_eq!(dag.heads(), heads);
        assert!(dag.gaps().is_empty());
        // A newer event of another kind does not move the top message.
        let other = ev(
            &a,
            room,
            2600,
            &[&chain[2598]],
            EventKind::Other(77),
            vec![],
        );
        dag.insert(&other).unwrap();
        assert_eq!(dag.top_message(&a.device_id()), 2599);
        assert_eq!(
            dag.top_message(&Identity::from_seed(&[2; 32]).device_id()),
            0
        );
        // What entered since an index, in admission order.
        let since: Vec<(EventId, u64)> =
            dag.admitted_from(2598).map(|(id, h)| (id, h.seq)).collect();
        assert_eq!(
            since,
            vec![(ids[2598], 2599), (fork.id(), 1500), (other.id(), 2600)]
        );
        assert_eq!(dag.admitted_from(dag.len()).count(), 0);
    }

    proptest::proptest! {
        /// The heads kept as nodes enter are the heads a scan of every
        /// node finds (a skip set naming no node takes the scan), whatever
        /// the shape of the DAG and the order the events arrive in; no
        /// receipt is ever one (`rooms.md` §9, "Never cited").
        #[test]
        fn kept_heads_are_the_scanned_heads_and_never_receipts(
            cites in proptest::collection::vec(proptest::collection::vec(0usize..64, 1..4), 1..40),
            order in proptest::collection::vec(0usize..1000, 0..40),
        ) {
            let a = Identity::from_seed(&[1; 32]);
            let room = derive_room_id(&a.device_id(), &[0; 16]);
            let card = ContactCard::create(&a, "A", 1).unwrap();
            let create = ev(&a, room, 1, &[], EventKind::Membership,
                Membership::Create { card, nonce: [0; 16] }.to_bytes());
            let mut events = vec![create];
            for (i, c) in cites.iter().enumerate() {
                let mut prev: Vec<&Event> = c.iter().map(|k| &events[k % events.len()]).collect();
                prev.sort_by_key(|e| e.id());
                prev.dedup_by_key(|e| e.id());
                // Every third event a receipt: never a head, and citing
                // an event does not stop it being one.
                let kind = if i % 3 == 2 { EventKind::Receipt } else { EventKind::Message };
                let e = ev(&a, room, i as u64 + 2, &prev, kind, vec![i as u8]);
                events.push(e);
            }
            // The create first (before it the sender has no standing, and
            // a stranger's pending events are capped), the rest shuffled.
            let mut arrival = events.clone();
            for (i, k) in order.iter().enumerate() {
                let n = arrival.len() - 1;
                arrival.swap(1 + i % n.max(1), 1 + k % n.max(1));
            }
            let mut dag = RoomDag::new(room);
            let nobody = BTreeSet::from([EventId([0xee; 32])]);
            for e in &arrival {
                dag.insert(e).unwrap();
                proptest::prop_assert_eq!(dag.heads(), dag.heads_without(&nobody));
            }
            proptest::prop_assert!(!dag.heads().is_empty());
            let receipts: BTreeSet<EventId> = events
                .iter()
                .filter(|e| e.kind() == EventKind::Receipt)
                .map(Event::id)
                .collect();
            proptest::prop_assert!(dag.heads().iter().all(|h| !receipts.contains(h)));
            // Every event that is not a receipt and is cited by none but
            // receipts is a head (up to the cap).
            let cited: BTreeSet<EventId> = events
                .iter()
                .filter(|e| e.kind() != EventKind::Receipt)
                .flat_map(|e| e.prev().iter().copied())
                .collect();
            let want = events
                .iter()
                .filter(|e| e.kind() != EventKind::Receipt && !cited.contains(&e.id()))
                .count();
            proptest::prop_assert_eq!(dag.heads().len(), want.min(MAX_PREV_EVENTS));
        }
    }
}
