//! The sans-IO [`Node`]: the whole relay protocol as a deterministic state
//! machine (`protocol-spec/wire.md`, "The node state machine").
//!
//! # Run loop
//!
//! The driver (the tokio daemon or the simulator) owns the clock, the links,
//! the RNG seed and the store's commits. It repeats:
//!
//! 1. feed a batch of inputs with [`Node::handle`] (`now_ms` is a parameter);
//! 2. if [`Node::needs_commit`], call `node.store_mut().commit()`, then feed
//!    [`Input::CommitDone`]: outputs that acknowledge or relay stored events
//!    are held back until then (acknowledge only after commit);
//! 3. drain [`Node::poll_output`] until it returns `None`;
//! 4. sleep until [`Node::poll_timeout`] or the next input, then feed
//!    [`Input::Timeout`].
//!
//! # Protocol sketch
//!
//! * **Hello and room announcements.** Each side sends `Hello{nonce}` first;
//!   then `Rooms` names its rooms as tokens keyed by each room ID and both
//!   nonces, so only a peer holding a room recognises it, and tokens differ
//!   on every link; the responder `Offer`s by ID the rooms the initiator
//!   lacks (`announce`, `protocol-spec/wire.md`, "Room announcements"). The
//!   side with the lower nonce initiates one reconciliation session per room
//!   either side announced.
//! * **Anti-entropy.** One [`crate::reconcile::Session`] per room finds
//!   what each side lacks (`protocol-spec/reconcile.md`); each side then
//!   sends the events the other lacks. The lower-nonce side runs periods:
//!   own rooms first, then every other room once, at most
//!   `ROUND_SESSIONS` sessions per round, each round only once the link
//!   sent what earlier rounds found (`CATCH_UP_LOW_WATER`); the next period starts
//!   `anti_entropy_interval_ms` later, doubled per period that found
//!   nothing (up to `2^MAX_ANTI_ENTROPY_BACKOFF_SHIFT` times). The room
//!   list and per-room items come from a cache (`src/proto/view.rs`) kept in
//!   step with the store (`protocol-spec/wire.md`, "Node limits").
//! * **Live push (Plumtree).** A newly *committed* event goes in full to at
//!   most `eager_fanout` eager links and as an `IHave` to the others. A
//!   duplicate arriving eagerly prunes that link to lazy; an `IHave` for an
//!   unknown event not filled by an eager push within `ihave_timeout_ms`
//!   grafts the announcing link.
//! * **Copy budget** (`DEFAULT_COPY_BUDGET`). A peer under a budget asks
//!   (`FEATURE_ROLES`) for the sender's member and spraying rooms in
//!   `Rooms` (`Members` updates the former). An
//!   event of a room the peer is not a member of goes to it only while this
//!   node holds two or more copies of it, half of which travel along in a
//!   `Spray` frame (binary spray; `NodeConfig::copy_budget`,
//!   `protocol-spec/wire.md`, "Copy budget"), and the peer is neither a
//!   companion nor in the group of the last carrier (`spray`, "Where
//!   copies go"). Members always get their
//!   rooms' events. Between two sides under a budget only the rooms both
//!   are members of are reconciled; what else one may hand the other it
//!   announces (`IHave`) at link-up.
//! * **Validate before relaying.** An event is relayed only after its
//!   structure and signature verified and it was committed.
//! * **Budgets.** Each link has a byte budget for intake; new links share a
//!   global budget; a misbehaving source address is refused for
//!   `penalty_ms`; a signing key has an event-rate budget for strangers'
//!   events. A link that sends a malformed frame or an invalid event is
//!   closed and its source penalised. All per-peer state is capped.
//!
//! # Modules
//!
//! `config` (the tunables and their defaults), `link` (a link's state,
//! link-up, framing, penalties), `announce` (Hello,
//! `Rooms`, `Offer` and `Members`), `anti_entropy` (reconciliation periods and sessions),
//! `intake` (received events and application commands into the store),
//! `push` (Plumtree push, grafts, each link's outbox and pacing), `spray`
//! (the copy budget).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod announce;
mod anti_entropy;
mod carried;
mod config;
mod intake;
mod link;
mod progress;
mod purge;
mod push;
mod spray;
#[cfg(test)]
mod testing;
mod urgent;

pub use carried::{MAX_CARRIED_MEMBERS, MAX_CARRIED_ROOMS};
pub use config::{
    CATCH_UP_LOW_WATER, DEFAULT_COPY_BUDGET, EXPECTED_ROOM_EVENTS, MAX_ANTI_ENTROPY_BACKOFF_SHIFT,
    MAX_BACKLOG_PER_LINK, MAX_BACKLOG_TOTAL, MAX_CATCH_UP_IN_OUTBOX, MAX_CONTROL_IN_OUTBOX,
    MAX_COPY_RECORDS, MAX_DEFERRED_INITS, MAX_EXPECTED_ROOMS, MAX_KEY_BUCKETS, MAX_KNOWN_PER_LINK,
    MAX_OUTBOX_PER_LINK, MAX_PENALISED_SOURCES, MAX_PENDING_IHAVE, MAX_QUEUED_PARTS,
    MAX_REFUSED_STRANGERS, MAX_SESSION_ITEMS, MAX_SESSIONS_PER_LINK, MIN_BACKLOG_PER_LINK,
    MIN_WINDOW_BYTES, NodeConfig, PACING_DIVISOR, RECEIPT_COPY_BUDGET, ROUND_SESSIONS,
    SIM_COPY_BUDGET, SLICE_BACKLOG_SHARE, WINDOW_DIVISOR,
};
use config::{FRAME_OVERHEAD, PER_EVENT_OVERHEAD, SPRAY_FRAME_OVERHEAD};
use link::Link;
pub use progress::{MAX_SYNCING_ROOMS, SyncProgress};
pub use purge::{MAX_DROPPED_IDS, MAX_PURGE_EVENTS, MAX_PURGE_ROOMS, PURGE_INTERVAL_MS};
pub use spray::{COMPANION_HOLD_MS, COMPANION_LINK_MS, GROUP_WINDOW_MS};

use lru::LruCache;
use rand_core::Rng;

use crate::crypto::keys::DeviceId;
use crate::event::{EventId, RoomId};
use crate::proto::budget::TokenBucket;
use crate::proto::io::{AppEvent, Input, LinkId, LinkKind, Output};
use crate::proto::view::StoreView;
use crate::store::{EventStore, Priority, SourceKey, StoreError};
use crate::wire::{CloseReason, Frame, MAX_HELLO_ROOMS};

/// Counters the status command and the simulator read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Events newly stored.
    pub events_stored: u64,
    /// Events received that were already held.
    pub duplicates: u64,
    /// Events rejected as invalid.
    pub invalid_events: u64,
    /// Events the store refused (budget, expiry).
    pub refused_events: u64,
    /// Links closed for misbehaviour.
    pub links_penalised: u64,
    /// Links refused at link-up (busy, penalised or over the new-link budget).
    pub links_refused: u64,
    /// Full events sent.
    pub events_sent: u64,
    /// Events not stored because the driver restricted admission (the
    /// disk is low or full, [`Admission`]); also counted in
    /// `refused_events`. Peers keep them queued and offer them again.
    pub shed_events: u64,
    /// Messages read as urgent and given the urgent place in the queues.
    pub urgent_marked: u64,
    /// Urgent marks not honoured: their sender was over its burst
    /// (`crate::proto::urgent::URGENT_BURST`).
    pub urgent_refused: u64,
    /// Peers' session openings that waited for the session budget
    /// (`MAX_SESSION_ITEMS`).
    pub inits_deferred: u64,
    /// Carried copies dropped because every member of their room holds
    /// them (`protocol-spec/rooms.md` §9, "Carried copies").
    pub carried_dropped: u64,
}

/// Which new events the node stores, set by the driver from the state of
/// its disk (`protocol-spec/daemon.md`, "Disk full"). Restricting never
/// touches what is held: reads, relaying and acknowledgements of stored
/// events go on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Admission {
    /// Everything (the default).
    #[default]
    All,
    /// Everything but stranger traffic (events carried for others): shed
    /// first when space runs low.
    NoStrangers,
    /// Nothing new, not even this device's own events: the disk is full.
    Nothing,
}

impl Admission {
    /// Whether an event of this class is admitted.
    pub fn admits(self, priority: Priority) -> bool {
        match self {
            Admission::All => true,
            Admission::NoStrangers => priority != Priority::Stranger,
            Admission::Nothing => false,
        }
    }
}

/// Per-link facts for `meshrelay peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link.
    pub link: LinkId,
    /// What carries it.
    pub kind: LinkKind,
    /// When it came up.
    pub since_ms: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Events queued in the link's outbox.
    pub outbox: usize,
    /// Catch-up items waiting in the link's backlog.
    pub backlog: usize,
    /// Items held by the link's open reconciliation sessions.
    pub session_items: usize,
}

/// Something held until the store commits.
#[derive(Debug, Clone)]
struct Committed {
    id: EventId,
    room: RoomId,
    sender: DeviceId,
    from: Option<LinkId>,
    priority: Priority,
    class: link::SendClass,
}

/// The protocol core. `S` is the store, `R` the RNG (seeded in tests and
/// the simulator, the OS RNG in the daemon).
pub struct Node<S: EventStore, R: Rng> {
    config: NodeConfig,
    own: DeviceId,
    own_rooms: BTreeSet<RoomId>,
    /// Members of each own room (the rooms layer's word): the senders whose
    /// events get the own-room class. Bounded by `ROOM_CAP` per room.
    standing: BTreeMap<RoomId, BTreeSet<DeviceId>>,
    store: S,
    rng: R,
    now_ms: u64,
    links: BTreeMap<LinkId, Link>,
    outputs: VecDeque<Output>,
    after_commit: Vec<Committed>,
    after_commit_outputs: Vec<Output>,
    new_links: TokenBucket,
    penalised: LruCache<SourceKey, u64>,
    /// Stranger budgets per signing key, one for its messages and one
    /// for its control events (membership, key shares, prekey updates), so
    /// a long history never starves the invite it leads to.
    key_buckets: LruCache<(DeviceId, bool), TokenBucket>,
    /// Members of rooms this node carries without being a member: their
    /// events skip the per-key stranger budgets.
    carried: carried::CarriedRooms,
    /// Rooms whose invite of this device waits for what it cites, with
    /// the strangers' events they may still take past the key budgets.
    expected: LruCache<RoomId, u64>,
    /// The largest event count a peer reported per own or expected room
    /// (`progress`, sync progress for `status`).
    peer_counts: LruCache<RoomId, u64>,
    pending_ihave: BTreeMap<EventId, (LinkId, RoomId, u64)>,
    /// Peers' session openings (`Init`) waiting for the node's session
    /// budget, oldest first (`MAX_SESSION_ITEMS`, at most
    /// `MAX_DEFERRED_INITS`).
    deferred_inits: std::collections::VecDeque<(LinkId, u64, crate::reconcile::Message)>,
    /// Events refused by a signing key's stranger budget, with the link
    /// that offered them and their sender: if their room becomes one of
    /// this device's own (its invite was just processed), or their sender
    /// a carried room's member, they are asked for again at once. Those
    /// the key budget refused carry the bucket they were refused by
    /// (`Some(control)`): between two sides under a budget they are asked
    /// for again at each anti-entropy period, within the bucket
    /// ([`Node::want_refused_on`]).
    refused_strangers: LruCache<EventId, (LinkId, RoomId, DeviceId, Option<bool>)>,
    /// Carried rooms to sweep for copies every member holds, and when
    /// (`purge`).
    purge_dirty: BTreeSet<RoomId>,
    next_purge_ms: Option<u64>,
    /// Carried copies dropped lately: an announcement of one is not
    /// grafted (`MAX_DROPPED_IDS`).
    dropped: LruCache<EventId, ()>,
    stats: NodeStats,
    /// Cached room list and per-room items (see [`StoreView`]).
    view: StoreView,
    /// Copies held per carried event, only counts of two or more (one is
    /// the default), at most `MAX_COPY_RECORDS` (least recently used
    /// forgotten).
    copies: spray::CopyMap,
    /// What new events are stored ([`Node::set_admission`]).
    admission: Admission,
    /// Events read as urgent and honoured (`urgent.rs`).
    urgent: LruCache<EventId, ()>,
    /// Honoured urgent messages per (room, sender).
    urgent_windows: LruCache<(RoomId, DeviceId), crate::proto::urgent::UrgentWindow>,
    /// Decompressed keys of recent senders: a catch-up from one sender
    /// validates its key once, not per event (`KEY_CACHE_CAPACITY`).
    keys: crate::crypto::KeyCache,
}

impl<S: EventStore, R: Rng> Node<S, R> {
    /// A node for device `own`, over `store`, at time `now_ms`.
    pub fn new(own: DeviceId, store: S, rng: R, config: NodeConfig, now_ms: u64) -> Self {
        // Copy counts are only recorded under a budget.
        let copy_records = if config.copy_budget == 0 {
            1
        } else {
            MAX_COPY_RECORDS
        };
        Self {
            new_links: TokenBucket::new(config.new_link_burst, config.new_links_per_s, now_ms),
            config,
            own,
            own_rooms: BTreeSet::new(),
            standing: BTreeMap::new(),
            store,
            rng,
            now_ms,
            links: BTreeMap::new(),
            outputs: VecDeque::new(),
            after_commit: Vec::new(),
            after_commit_outputs: Vec::new(),
            penalised: crate::bounded::lru(MAX_PENALISED_SOURCES),
            key_buckets: crate::bounded::lru(MAX_KEY_BUCKETS),
            carried: carried::CarriedRooms::new(),
            expected: crate::bounded::lru(MAX_EXPECTED_ROOMS),
            peer_counts: crate::bounded::lru(MAX_SYNCING_ROOMS),
            pending_ihave: BTreeMap::new(),
            deferred_inits: std::collections::VecDeque::new(),
            refused_strangers: crate::bounded::lru(MAX_REFUSED_STRANGERS),
            purge_dirty: BTreeSet::new(),
            next_purge_ms: None,
            dropped: crate::bounded::lru(MAX_DROPPED_IDS),
            stats: NodeStats::default(),
            view: StoreView::new(),
            copies: crate::bounded::lru(copy_records),
            admission: Admission::All,
            urgent: crate::bounded::lru(crate::proto::urgent::MAX_URGENT_EVENTS),
            urgent_windows: crate::bounded::lru(crate::proto::urgent::MAX_URGENT_SENDERS),
            keys: crate::crypto::KeyCache::default(),
        }
    }

    /// What new events are stored.
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// Sets what new events are stored (the driver's disk check,
    /// `protocol-spec/daemon.md`, "Disk full").
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = admission;
    }

    /// The store (read access).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, for the driver's commit.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The store and the RNG at once, for the device core's rooms layer
    /// (which signs and encrypts with this node's randomness).
    pub fn store_and_rng(&mut self) -> (&mut S, &mut R) {
        (&mut self.store, &mut self.rng)
    }

    /// Whether staged writes wait for a commit.
    pub fn needs_commit(&self) -> bool {
        self.store.has_pending() || !self.after_commit.is_empty()
    }

    /// How many events were stored since the last commit.
    pub fn uncommitted_len(&self) -> usize {
        self.after_commit.len()
    }

    /// Events stored since the last commit (staged, not yet durable), in
    /// the order they were stored: the driver passes them to the
    /// application before committing, so both commit together.
    pub fn uncommitted_events(&self) -> Vec<EventId> {
        self.after_commit.iter().map(|c| c.id).collect()
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Connected links.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.links
            .iter()
            .map(|(id, l)| LinkInfo {
                link: *id,
                kind: l.kind,
                since_ms: l.since_ms,
                bytes_in: l.bytes_in,
                bytes_out: l.bytes_out,
                outbox: l.outbox.len(),
                backlog: l.backlog.len(),
                session_items: l.sessions.values().map(|s| s.item_count()).sum(),
            })
            .collect()
    }

    /// The class an arriving event would be stored in now (its sender's
    /// standing in the room: `protocol-spec/store.md`, "Priority classes").
    pub fn priority_of(&self, event: &crate::event::Event) -> Priority {
        self.classify(event)
    }

    /// Whether an arriving event is a carried member's: its sender is a
    /// member of a room this node carries without being a member, so it
    /// skips the per-key stranger budgets (`protocol-spec/wire.md`,
    /// "Carried rooms").
    pub fn carries_member(&self, event: &crate::event::Event) -> bool {
        self.classify(event) == Priority::Stranger
            && self.carried.peek_member(&event.room(), &event.sender())
    }

    /// Rooms this device is a member of.
    pub fn own_rooms(&self) -> &BTreeSet<RoomId> {
        &self.own_rooms
    }

    /// Feeds one input at time `now_ms`. Store errors are fatal to the
    /// driver (the disk failed); everything a peer sends is handled inside.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<(), StoreError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.dispatch(input)?;
        // Sessions may have ended: answer peers' openings that waited.
        self.answer_deferred()
    }

    fn dispatch(&mut self, input: Input) -> Result<(), StoreError> {
        match input {
            Input::LinkUp {
                link,
                kind,
                mtu,
                source,
            } => self.on_link_up(link, kind, mtu, source),
            Input::LinkDown(link) => {
                self.forget_link(link);
                Ok(())
            }
            Input::Received { link, bytes } => self.on_datagram(link, &bytes),
            Input::Drained(link) => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.in_flight = 0;
                }
                self.pump(link)
            }
            Input::Timeout => self.on_timeout(),
            Input::Command(c) => self.on_command(c),
            Input::CommitDone => self.on_commit_done(),
            Input::CommitFailed => {
                // Nothing staged became durable: nothing may be announced,
                // acknowledged or relayed; peers offer it again.
                self.after_commit.clear();
                self.after_commit_outputs.clear();
                Ok(())
            }
        }
    }

    /// The next output, if any. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest time at which [`Input::Timeout`] must be fed.
    pub fn poll_timeout(&self) -> Option<u64> {
        let ae = self
            .links
            .values()
            .flat_map(|l| [Some(l.next_anti_entropy_ms), l.resume_at_ms])
            .flatten()
            .min();
        let ih = self.pending_ihave.values().map(|(_, _, t)| *t).min();
        [ae, ih, self.next_purge_ms].into_iter().flatten().min()
    }

    fn on_datagram(&mut self, link: LinkId, bytes: &[u8]) -> Result<(), StoreError> {
        let now = self.now_ms;
        let Some(l) = self.links.get_mut(&link) else {
            return Ok(());
        };
        l.bytes_in += bytes.len() as u64;
        if !l.intake.try_take(bytes.len() as u64, now) {
            self.penalise(link, "intake budget exceeded", CloseReason::OverBudget);
            return Ok(());
        }
        let frame = match l.reassembler.receive(now, bytes) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.penalise(
                    link,
                    &format!("bad fragment: {e}"),
                    CloseReason::ProtocolViolation,
                );
                return Ok(());
            }
        };
        match Frame::decode(&frame) {
            Ok(f) => self.on_frame(link, f),
            Err(crate::wire::FrameError::UnsupportedVersion(v)) => {
                // Not hostile, but no use retrying at once either: the
                // penalty spaces out reconnections between versions.
                let why = format!(
                    "peer speaks wire version {v}, this node {}: update one of them",
                    crate::wire::WIRE_VERSION
                );
                self.penalise(link, &why, CloseReason::VersionMismatch);
                Ok(())
            }
            Err(e) => {
                self.penalise(
                    link,
                    &format!("bad frame: {e}"),
                    CloseReason::ProtocolViolation,
                );
                Ok(())
            }
        }
    }

    fn on_frame(&mut self, link: LinkId, frame: Frame) -> Result<(), StoreError> {
        match frame {
            Frame::Hello {
                nonce, features, ..
            } => self.on_hello(link, nonce, features),
            Frame::Rooms {
                held,
                members,
                spraying,
                device,
            } => self.on_rooms(link, [held, members, spraying], device),
            Frame::Offer { rooms } => self.on_offer(link, rooms),
            Frame::Reconcile { session, msg } => self.on_reconcile(link, session, msg),
            Frame::Events { events, .. } => {
                for bytes in events {
                    if !self.links.contains_key(&link) {
                        break;
                    }
                    self.on_event_bytes(link, &bytes, 1)?;
                }
                Ok(())
            }
            Frame::Spray { copies, events, .. } => {
                for (bytes, copies) in events.iter().zip(copies) {
                    if !self.links.contains_key(&link) {
                        break;
                    }
                    self.on_event_bytes(link, bytes, copies)?;
                }
                Ok(())
            }
            Frame::Members { tokens } => self.on_members(link, tokens),
            Frame::IHave { room, ids } => {
                let deadline = self.now_ms.saturating_add(self.config.ihave_timeout_ms);
                let mut fresh = false;
                let mut held = Vec::new();
                for id in ids {
                    if let Some(l) = self.links.get_mut(&link) {
                        l.known.put(id, ());
                    }
                    if self.store.has_event(&id)? {
                        held.push(id);
                        continue;
                    }
                    // A carried copy dropped here is not fetched again
                    // (unless the room became this device's own).
                    let dropped = self.dropped.contains(&id) && !self.own_rooms.contains(&room);
                    if self.pending_ihave.contains_key(&id) || dropped {
                        continue;
                    }
                    if self.pending_ihave.len() < MAX_PENDING_IHAVE {
                        self.pending_ihave.insert(id, (link, room, deadline));
                        fresh = true;
                    }
                }
                // A room this device does not hold as its own yet is being
                // handed over (an invitee's); live push of an own room is
                // not a sync to show.
                if fresh && !self.own_rooms.contains(&room) {
                    self.note_announced(room)?;
                }
                // A carrier's announcement back of what it took is the
                // proof of delivery to the mesh; between members the
                // reconciliation of the room is (and live push would cost
                // a delivery lookup per announced event).
                let carrier = self
                    .links
                    .get(&link)
                    .is_some_and(|l| !l.peer.member_of(&room));
                if !held.is_empty() && carrier && self.own_rooms.contains(&room) {
                    held.sort_unstable();
                    self.outputs
                        .push_back(Output::App(AppEvent::PeerHas { room, ids: held }));
                }
                Ok(())
            }
            Frame::Want { ids, .. } => self.send_wanted(link, ids),
            Frame::Prune { room } => {
                if let Some(l) = self.links.get_mut(&link)
                    && l.pruned.len() < MAX_HELLO_ROOMS
                {
                    l.pruned.insert(room);
                }
                Ok(())
            }
            Frame::Graft { room, ids } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.eager = true;
                    l.pruned.remove(&room);
                }
                self.send_wanted(link, ids)
            }
            Frame::Close { .. } => {
                self.forget_link(link);
                self.outputs.push_back(Output::Close {
                    link,
                    reason: "peer closed".into(),
                });
                Ok(())
            }
        }
    }

    /// Sends the held events of `ids` (a `Want` or a `Graft`) through the
    /// link's backlog, which sends oldest first: a new member asking for
    /// thousands of events (those its stranger budget refused) gets them in
    /// causal order, and none is dropped for a full outbox. A few wanted
    /// events go out at once: `pump` refills from the backlog.
    fn send_wanted(&mut self, link: LinkId, ids: Vec<EventId>) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(info) = self.store.event_info(&id)? {
                items.push(crate::reconcile::Item {
                    ts_ms: info.origin_ts_ms,
                    id,
                });
            }
        }
        self.queue_catch_up(link, items);
        self.pump(link)
    }

    /// Timers: grafts for unfilled announcements, paced links that may
    /// send again, anti-entropy periods that are due.
    fn on_timeout(&mut self) -> Result<(), StoreError> {
        self.graft_expired()?;
        self.resume_paced()?;
        self.anti_entropy_due()?;
        self.purge_due()
    }
}
