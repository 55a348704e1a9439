//! Compact storage of a room DAG's admitted events (`protocol-spec/rooms.md`,
//! "DAG"; `reports/history-cost.md`).
//!
//! A daemon keeps the DAG of each room it is in, so its memory per event is
//! the daemon's memory per event of history. Events are numbered in the
//! order they enter (a `u32` index, below [`super::MAX_ROOM_EVENTS`]) and
//! every edge is stored as indices: an event costs its ID once, one fixed
//! 40-byte record ([`Slot`]), an entry of the ID index, its predecessors (4
//! bytes each), one child link per predecessor (8 bytes) and 4 bytes of
//! its sender's sequence runs: about 110 bytes, against about 640 when
//! every edge named a 32-byte ID in maps of its own. Records live in
//! fixed-size chunks ([`Chunked`]), so a growing room never holds a doubled
//! array or copies one.
//!
//! The ID index is a B-tree from the first 8 bytes of an ID to its index.
//! An ID whose prefix another event already has (which costs whoever makes
//! it about 2^32 work) goes to a second B-tree keyed by the whole ID, so a
//! lookup is at most two B-tree searches. A sender's sequence numbers are
//! kept as runs ([`super::seqs`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Bits;
use super::seqs::SeqRuns;
use crate::crypto::keys::DeviceId;
use crate::event::{EventId, EventKind};
use crate::limits::MAX_PREV_EVENTS;

/// No index (an empty child list).
const NONE: u32 = u32::MAX;
/// Elements per chunk of a [`Chunked`] array.
const CHUNK: usize = 1024;
/// Bits of [`Slot::prev`] holding the number of predecessors.
const PREV_LEN_BITS: u32 = 5;
/// Bits of [`Slot::depth_kind`] holding the depth.
const DEPTH_BITS: u32 = 24;

/// A growable array in chunks of [`CHUNK`] elements: appending never
/// moves what is stored, and at most one chunk is slack.
#[derive(Debug, Clone)]
pub(super) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn push(&mut self, v: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(v);
            self.len += 1;
        }
    }
    fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

/// Every event's predecessors, each event's run within one chunk.
#[derive(Debug, Clone, Default)]
struct PrevPool {
    chunks: Vec<Vec<u32>>,
}

impl PrevPool {
    /// Stores a run; returns where it starts.
    fn push(&mut self, run: &[u32]) -> u32 {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() + run.len() <= CHUNK);
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let k = self.chunks.len().saturating_sub(1);
        let Some(c) = self.chunks.last_mut() else {
            return 0;
        };
        let at = (k * CHUNK + c.len()) as u32;
        c.extend_from_slice(run);
        at
    }
    fn get(&self, at: u32, len: usize) -> &[u32] {
        let (k, o) = (at as usize / CHUNK, at as usize % CHUNK);
        self.chunks
            .get(k)
            .and_then(|c| c.get(o..o + len))
            .unwrap_or_default()
    }
}

/// What the DAG keeps about one admitted event, besides its ID: 40 bytes.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// Sequence number.
    pub seq: u64,
    /// Origin timestamp.
    pub ts: u64,
    /// Membership events among the strict ancestors (shared between
    /// events with the same set).
    pub anc: Arc<Bits>,
    /// Depth (1 + the greatest depth of a predecessor, 0 for roots; below
    /// `MAX_ROOM_EVENTS` < 2^24) and the kind's code in the top byte.
    depth_kind: u32,
    /// Sender, as an index into [`Arena::sender`].
    pub sender: u32,
    /// Where the predecessors start in the pool, and (low bits) how many.
    prev: u32,
    /// Most recent child link, or `NONE`.
    last_child: u32,
}

/// A kind's one-byte code; 0 is an unknown kind, whose wire value is kept
/// aside ([`Arena::other_kinds`]).
fn kind_code(k: EventKind) -> u8 {
    match k {
        EventKind::Other(_) => 0,
        // The known kinds' wire values are 1..=6.
        k => k.to_u64() as u8,
    }
}

impl Slot {
    /// Depth.
    pub fn depth(&self) -> u32 {
        self.depth_kind & ((1 << DEPTH_BITS) - 1)
    }
    fn kind_code(&self) -> u8 {
        (self.depth_kind >> DEPTH_BITS) as u8
    }
    /// Whether this is a membership event.
    pub fn is_membership(&self) -> bool {
        self.kind_code() == kind_code(EventKind::Membership)
    }
    fn prev_len(&self) -> usize {
        (self.prev & ((1 << PREV_LEN_BITS) - 1)) as usize
    }
    fn prev_at(&self) -> u32 {
        self.prev >> PREV_LEN_BITS
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
}

/// Admitted events by index. See the module docs.
#[derive(Debug, Clone, Default)]
pub(super) struct Arena {
    ids: Chunked<EventId>,
    slots: Chunked<Slot>,
    /// ID prefix → index, for the first event with that prefix.
    index: BTreeMap<u64, u32>,
    /// Further events whose prefix another event has (made on purpose).
    collided: BTreeMap<EventId, u32>,
    prevs: PrevPool,
    /// Child links: (child, the parent's previous link or `NONE`).
    edges: Chunked<(u32, u32)>,
    /// Wire values of admitted events of unknown kinds, by index.
    other_kinds: BTreeMap<u32, u64>,
    senders: Vec<DeviceId>,
    sender_index: BTreeMap<DeviceId, u32>,
    /// Per sender index: sequence number → the first event with it.
    seqs: Vec<SeqRuns>,
    /// Per sender index: its highest admitted `Message` sequence number (0:
    /// none), what a delivered receipt entry counts up to.
    top_message: Vec<u64>,
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
        match self.index.get(&prefix(id)) {
            Some(&i) if self.ids.get(i as usize) == Some(id) => Some(i),
            Some(_) => self.collided.get(id).copied(),
            None => None,
        }
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
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    /// An event's kind.
    pub fn kind(&self, i: u32) -> Option<EventKind> {
        let code = self.slot(i)?.kind_code();
        Some(match code {
            0 => EventKind::Other(self.other_kinds.get(&i).copied().unwrap_or(0)),
            c => EventKind::from_u64(u64::from(c)),
        })
    }

    /// An event's sender.
    pub fn sender(&self, s: &Slot) -> DeviceId {
        // A slot's sender index is one `push` gave out.
        self.senders[s.sender as usize]
    }

    /// An event's predecessors.
    pub fn prev(&self, s: &Slot) -> &[u32] {
        self.prevs.get(s.prev_at(), s.prev_len())
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
                self.seqs.push(SeqRuns::default());
                self.top_message.push(0);
                s
            }
        };
        // At most `MAX_PREV_EVENTS` (16) predecessors: five bits.
        let prev_n = n.prev.len().min(MAX_PREV_EVENTS);
        let prev_at = self.prevs.push(&n.prev[..prev_n]);
        for &p in &n.prev[..prev_n] {
            let link = self.edges.len() as u32;
            if let Some(ps) = self.slots.get_mut(p as usize) {
                self.edges.push((i, ps.last_child));
                ps.last_child = link;
            }
        }
        if let Some(seqs) = self.seqs.get_mut(sender as usize)
            && let Some(first) = seqs.insert(n.seq, i)
        {
            let first = self.ids.get(first as usize).copied();
            let ids = self
                .forks
                .entry((sender, n.seq))
                .or_insert_with(|| first.into_iter().collect());
            if let Err(at) = ids.binary_search(&n.id) {
                ids.insert(at, n.id);
            }
        }
        if n.kind == EventKind::Message
            && let Some(top) = self.top_message.get_mut(sender as usize)
        {
            *top = (*top).max(n.seq);
        }
        let p = prefix(&n.id);
        match self.index.entry(p) {
            std::collections::btree_map::Entry::Occupied(_) => {
                self.collided.insert(n.id, i);
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
        self.ids.push(n.id);
        let code = kind_code(n.kind);
        if code == 0 {
            self.other_kinds.insert(i, n.kind.to_u64());
        }
        self.slots.push(Slot {
            seq: n.seq,
            ts: n.ts,
            anc: n.anc,
            depth_kind: n.depth.min((1 << DEPTH_BITS) - 1) | u32::from(code) << DEPTH_BITS,
            sender,
            prev: prev_at << PREV_LEN_BITS | prev_n as u32,
            last_child: NONE,
        });
        i
    }

    fn sender_seqs(&self, sender: &DeviceId) -> Option<(u32, &SeqRuns)> {
        let s = *self.sender_index.get(sender)?;
        Some((s, self.seqs.get(s as usize)?))
    }

    /// `sender`'s events, newest sequence number first (a fork's events
    /// by ID).
    pub fn sender_events_newest_first(
        &self,
        sender: &DeviceId,
    ) -> impl Iterator<Item = EventId> + '_ {
        self.sender_seqs(sender)
            .into_iter()
            .flat_map(move |(s, seqs)| {
                seqs.newest_first().flat_map(move |(seq, first)| {
                    let fork = self.forks.get(&(s, seq));
                    let single = fork.is_none().then(|| self.id(first));
                    fork.into_iter().flatten().copied().chain(single)
                })
            })
    }

    /// `sender`'s highest admitted `Message` sequence number (0 if none).
    pub fn top_message(&self, sender: &DeviceId) -> u64 {
        self.sender_index
            .get(sender)
            .and_then(|&s| self.top_message.get(s as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Highest sequence number seen from `sender` (0 if none).
    pub fn max_seq(&self, sender: &DeviceId) -> u64 {
        self.sender_seqs(sender).map_or(0, |(_, s)| s.max())
    }

    /// Every sender's missing sequence ranges, in (sender, seq) order.
    pub fn gaps(&self) -> Vec<(DeviceId, u64, u64)> {
        self.sender_index
            .iter()
            .filter_map(|(d, &s)| Some((d, self.seqs.get(s as usize)?)))
            .flat_map(|(d, seqs)| seqs.gaps().into_iter().map(|(a, b)| (*d, a, b)))
            .collect()
    }

    /// (sender, seq) pairs used by more than one event, with their IDs.
    pub fn forks(&self) -> impl Iterator<Item = (DeviceId, u64, &Vec<EventId>)> {
        self.forks
            .iter()
            .map(|(&(s, seq), ids)| (self.senders[s as usize], seq, ids))
    }
}
