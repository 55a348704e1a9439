//! Compact storage of a room DAG's admitted events (`protocol-spec/rooms.md`,
//! "DAG"; `reports/history-cost.md`).
//!
//! A daemon keeps the DAG of each room it is in, so its memory per event is
//! the daemon's memory per event of history. Events are numbered in the
//! order they enter (a `u32` index, below [`super::MAX_ROOM_EVENTS`]) and
//! every edge is stored as indices: an event costs its ID once, one fixed
//! record ([`Slot`]), an entry of the ID index, its predecessors (4 bytes
//! each), one child link per predecessor (8 bytes) and a sequence entry —
//! about 130 bytes, against about 640 when every edge named a 32-byte ID in
//! maps of its own.
//!
//! The ID index is a B-tree of (first 8 bytes of the ID, index). IDs that
//! share a prefix (which costs whoever makes them 2^32 work per pair) sit
//! next to each other and are told apart by their full ID: a lookup stays a
//! B-tree search plus a scan of the colliding entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Bits;
use crate::crypto::keys::DeviceId;
use crate::event::{EventId, EventKind};

/// No index (an empty child list).
const NONE: u32 = u32::MAX;

/// What the DAG keeps about one admitted event, besides its ID.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// Sequence number.
    pub seq: u64,
    /// Origin timestamp.
    pub ts: u64,
    /// Kind, as its wire value (`EventKind` itself is twice the size).
    kind: u64,
    /// Membership events among the strict ancestors (shared between
    /// events with the same set).
    pub anc: Arc<Bits>,
    /// 1 + the greatest depth of a predecessor (0 for roots).
    pub depth: u32,
    /// Sender, as an index into [`Arena::sender`].
    pub sender: u32,
    /// Index among membership events, or `NONE`.
    midx: u32,
    /// First predecessor in the predecessor pool.
    prev_at: u32,
    /// Most recent child link, or `NONE`.
    last_child: u32,
    /// Number of predecessors (at most `MAX_PREV_EVENTS`).
    prev_len: u8,
}

impl Slot {
    /// Kind.
    pub fn kind(&self) -> EventKind {
        EventKind::from_u64(self.kind)
    }
    /// Index among membership events, for membership events.
    pub fn midx(&self) -> Option<usize> {
        (self.midx != NONE).then_some(self.midx as usize)
    }
}

/// An event about to be added ([`Arena::push`]).
pub(super) struct NewSlot<'a> {
    pub id: EventId,
    pub sender: DeviceId,
    pub seq: u64,
    pub ts: u64,
    pub kind: EventKind,
    pub prev: &'a [u32],
    pub anc: Arc<Bits>,
    pub depth: u32,
    pub midx: Option<usize>,
}

/// Admitted events by index. See the module docs.
#[derive(Debug, Clone, Default)]
pub(super) struct Arena {
    ids: Vec<EventId>,
    slots: Vec<Slot>,
    /// (ID prefix, index), ascending.
    index: BTreeSet<(u64, u32)>,
    /// Every event's predecessors, contiguous per event.
    prevs: Vec<u32>,
    /// Child links: (child, the parent's previous link or `NONE`).
    edges: Vec<(u32, u32)>,
    senders: Vec<DeviceId>,
    sender_index: BTreeMap<DeviceId, u32>,
    /// Per sender index: sequence number → the first event with it.
    seqs: Vec<BTreeMap<u64, u32>>,
    /// (sender index, seq) used by more than one event: all their IDs,
    /// ascending (forks; rare).
    forks: BTreeMap<(u32, u64), Vec<EventId>>,
}

fn prefix(id: &EventId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(b)
}

impl Arena {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The index of an event, if admitted.
    pub fn find(&self, id: &EventId) -> Option<u32> {
        let p = prefix(id);
        self.index
            .range((p, 0)..=(p, u32::MAX))
            .map(|&(_, i)| i)
            .find(|&i| self.ids.get(i as usize) == Some(id))
    }

    /// An event's ID.
    pub fn id(&self, i: u32) -> EventId {
        self.ids
            .get(i as usize)
            .copied()
            .unwrap_or(EventId([0; 32]))
    }

    /// An event's record.
    pub fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)
    }

    /// Every record, in admission order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// An event's sender.
    pub fn sender(&self, s: &Slot) -> DeviceId {
        // A slot's sender index is one `push` gave out.
        self.senders[s.sender as usize]
    }

    /// An event's predecessors.
    pub fn prev(&self, s: &Slot) -> &[u32] {
        let at = s.prev_at as usize;
        self.prevs
            .get(at..at + s.prev_len as usize)
            .unwrap_or_default()
    }

    /// An event's children (one entry per citation), most recent first.
    pub fn children(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        let mut link = self.slot(i).map_or(NONE, |s| s.last_child);
        std::iter::from_fn(move || {
            let &(child, next) = self.edges.get(link as usize)?;
            link = next;
            Some(child)
        })
    }

    /// Senders of admitted events, ascending.
    pub fn senders(&self) -> impl Iterator<Item = &DeviceId> {
        self.sender_index.keys()
    }

    /// Adds an admitted event whose predecessors are all here; returns its
    /// index.
    pub fn push(&mut self, n: NewSlot<'_>) -> u32 {
        let i = self.ids.len() as u32;
        let sender = match self.sender_index.get(&n.sender) {
            Some(&s) => s,
            None => {
                let s = self.senders.len() as u32;
                self.senders.push(n.sender);
                self.sender_index.insert(n.sender, s);
                self.seqs.push(BTreeMap::new());
                s
            }
        };
        let prev_at = self.prevs.len() as u32;
        self.prevs.extend_from_slice(n.prev);
        for &p in n.prev {
            let link = self.edges.len() as u32;
            if let Some(ps) = self.slots.get_mut(p as usize) {
                self.edges.push((i, ps.last_child));
                ps.last_child = link;
            }
        }
        if let Some(seqs) = self.seqs.get_mut(sender as usize) {
            match seqs.get(&n.seq).copied() {
                None => {
                    seqs.insert(n.seq, i);
                }
                Some(first) => {
                    let first = self.ids.get(first as usize).copied();
                    let ids = self
                        .forks
                        .entry((sender, n.seq))
                        .or_insert_with(|| first.into_iter().collect::<Vec<EventId>>());
                    if let Err(at) = ids.binary_search(&n.id) {
                        ids.insert(at, n.id);
                    }
                }
            }
        }
        self.index.insert((prefix(&n.id), i));
        self.ids.push(n.id);
        self.slots.push(Slot {
            seq: n.seq,
            ts: n.ts,
            kind: n.kind.to_u64(),
            anc: n.anc,
            depth: n.depth,
            sender,
            midx: n.midx.map_or(NONE, |m| m as u32),
            prev_at,
            last_child: NONE,
            prev_len: n.prev.len() as u8,
        });
        i
    }

    fn sender_seqs(&self, sender: &DeviceId) -> Option<(u32, &BTreeMap<u64, u32>)> {
        let s = *self.sender_index.get(sender)?;
        Some((s, self.seqs.get(s as usize)?))
    }

    /// The events with `sender`'s sequence number `seq`, ascending.
    fn with_seq(&self, s: u32, seq: u64, first: u32) -> Vec<EventId> {
        match self.forks.get(&(s, seq)) {
            Some(ids) => ids.clone(),
            None => vec![self.id(first)],
        }
    }

    /// `sender`'s events, newest sequence number first.
    pub fn sender_events_newest_first(
        &self,
        sender: &DeviceId,
    ) -> impl Iterator<Item = EventId> + '_ {
        self.sender_seqs(sender)
            .into_iter()
            .flat_map(move |(s, seqs)| {
                seqs.iter()
                    .rev()
                    .flat_map(move |(&seq, &first)| self.with_seq(s, seq, first))
            })
    }

    /// Highest sequence number seen from `sender` (0 if none).
    pub fn max_seq(&self, sender: &DeviceId) -> u64 {
        self.sender_seqs(sender)
            .and_then(|(_, s)| s.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// Every sender with its sequence numbers, ascending.
    pub fn seqs(&self) -> impl Iterator<Item = (&DeviceId, &BTreeMap<u64, u32>)> {
        self.sender_index
            .iter()
            .filter_map(|(d, &s)| Some((d, self.seqs.get(s as usize)?)))
    }

    /// (sender, seq) pairs used by more than one event, with their IDs.
    pub fn forks(&self) -> impl Iterator<Item = (DeviceId, u64, &Vec<EventId>)> {
        self.forks
            .iter()
            .map(|(&(s, seq), ids)| (self.senders[s as usize], seq, ids))
    }
}
