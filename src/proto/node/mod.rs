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
//! `link` (a link's state, link-up, framing, penalties), `announce` (Hello,
//! `Rooms`, `Offer` and `Members`), `anti_entropy` (reconciliation periods and sessions),
//! `intake` (received events and application commands into the store),
//! `push` (Plumtree push, grafts, each link's outbox and pacing), `spray`
//! (the copy budget).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod announce;
mod anti_entropy;
mod carried;
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

/// Tunables of the node. Defaults suit a phone or a small board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Most links at once; further `LinkUp`s are closed.
    pub max_links: usize,
    /// Most eager (full-push) links per node.
    pub eager_fanout: usize,
    /// How long an `IHave` may go unfilled before grafting.
    pub ihave_timeout_ms: u64,
    /// Anti-entropy rerun interval per link.
    pub anti_entropy_interval_ms: u64,
    /// Intake budget per link: burst bytes.
    pub link_burst_bytes: u64,
    /// Intake budget per link: sustained bytes per second.
    pub link_bytes_per_s: u64,
    /// New links accepted in a burst (all sources together).
    pub new_link_burst: u64,
    /// New links accepted per second, sustained.
    pub new_links_per_s: u64,
    /// How long a penalised source is refused.
    pub penalty_ms: u64,
    /// Strangers' events accepted per signing key: burst.
    pub key_event_burst: u64,
    /// Strangers' events accepted per signing key per second.
    pub key_events_per_s: u64,
    /// Most bytes of event data in flight per link before waiting for the
    /// driver to report the link drained; a link's window is half a
    /// second of its budget within this ([`NodeConfig::window_bytes`]).
    pub link_window_bytes: usize,
    /// Copy budget for carried events (binary spray, `protocol-spec/wire.md`,
    /// "Copy budget"): how many carriers (peers that are not members of the
    /// event's room) each event this node publishes may reach. A holder of
    /// `n >= 2` copies hands `n / 2` to a carrier that lacks the event; a
    /// holder of one copy only delivers to members. Members always get their
    /// rooms' events. `0` = no budget: every node hands every event to every
    /// peer (epidemic carrying). At most [`MAX_COPY_BUDGET`](crate::wire::MAX_COPY_BUDGET).
    pub copy_budget: u8,
    /// A BLE peer linked this long counts as a companion, which gets an
    /// event's copies only after [`Self::companion_hold_ms`]
    /// ([`COMPANION_LINK_MS`]; `0` = no companions;
    /// `protocol-spec/wire.md`, "Where copies go").
    pub companion_link_ms: u64,
    /// How long an event waits for a fresh peer before a companion gets its
    /// copies ([`COMPANION_HOLD_MS`]).
    pub companion_hold_ms: u64,
    /// BLE links that came up this close together count as one group,
    /// which gets one share of an event's copies ([`GROUP_WINDOW_MS`];
    /// `0` = no groups).
    pub group_window_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            max_links: 64,
            eager_fanout: 4,
            ihave_timeout_ms: 1_500,
            anti_entropy_interval_ms: 60_000,
            link_burst_bytes: 4 * 1024 * 1024,
            link_bytes_per_s: 512 * 1024,
            new_link_burst: 16,
            new_links_per_s: 2,
            penalty_ms: 10 * 60 * 1000,
            key_event_burst: 200,
            key_events_per_s: 5,
            link_window_bytes: 256 * 1024,
            copy_budget: DEFAULT_COPY_BUDGET,
            companion_link_ms: COMPANION_LINK_MS,
            companion_hold_ms: COMPANION_HOLD_MS,
            group_window_ms: GROUP_WINDOW_MS,
        }
    }
}

impl NodeConfig {
    /// Bytes of event data a link may have in flight: what the link's
    /// budget sends in `1 / WINDOW_DIVISOR` s, at least `MIN_WINDOW_BYTES`,
    /// at most `link_window_bytes` (256 KiB at the default 512 KiB/s, 64
    /// KiB at the battery profile's 128 KiB/s: a slow link's driver holds
    /// no more than the link drains in a moment; `protocol-spec/wire.md`,
    /// "Node limits"). A window is sent per report of the link drained,
    /// so a driver slow to answer (a board short of CPU) sends at most a
    /// window per answer: a quarter second's window halved what a relay
    /// under emulation sent (`reports/field.md`).
    pub fn window_bytes(&self) -> usize {
        let by_rate = usize::try_from(self.link_bytes_per_s / WINDOW_DIVISOR).unwrap_or(usize::MAX);
        by_rate.clamp(
            MIN_WINDOW_BYTES,
            self.link_window_bytes.max(MIN_WINDOW_BYTES),
        )
    }
}

/// A link's window is its budget's bytes per second divided by this.
pub const WINDOW_DIVISOR: u64 = 2;
/// Least window of a link, whatever its budget (a few frames of events).
pub const MIN_WINDOW_BYTES: usize = 64 * 1024;

/// Default [`NodeConfig::copy_budget`], 18: with the companion and group
/// rules ("Where copies go") the least that delivers 98% of the oracle's
/// messages in the disaster area at under a tenth of epidemic's overhead
/// (`sim/reports/disaster-area/`; `protocol-spec/wire.md`, "Copy budget").
/// Invitees that are not members yet are recognised by their device token
/// ("Invitees"), so a member relay hands them their rooms whatever its
/// copies.
pub const DEFAULT_COPY_BUDGET: u8 = 18;

/// Copies of an own receipt under a copy budget: one for a carrier, the
/// rest go member to member (`protocol-spec/rooms.md` §9).
pub const RECEIPT_COPY_BUDGET: u8 = 2;

/// The copy budget most of the simulator's scenarios run with, 16, so
/// their reports stay comparable across rounds; the disaster area runs
/// the daemon's [`DEFAULT_COPY_BUDGET`].
pub const SIM_COPY_BUDGET: u8 = 16;

/// Most events whose copy counts (above one) a node remembers; a forgotten
/// count falls back to one copy (deliver to members only).
pub const MAX_COPY_RECORDS: usize = 16_384;

/// Bytes a `Spray` frame adds over an `Events` frame of the same events
/// (copy-count list head; one byte per event is in `PER_EVENT_OVERHEAD`'s
/// slack), counted when batching so a spray batch stays within
/// `MAX_FRAME_BYTES`.
const SPRAY_FRAME_OVERHEAD: usize = 8;

/// Most sources remembered as penalised.
pub const MAX_PENALISED_SOURCES: usize = 4096;
/// Most signing keys with a live event-rate bucket.
pub const MAX_KEY_BUCKETS: usize = 4096;
/// Most outstanding `IHave` announcements tracked for grafting.
pub const MAX_PENDING_IHAVE: usize = 8192;
/// Most events remembered as refused by a key's stranger budget (asked for
/// again when their room becomes an own room).
pub const MAX_REFUSED_STRANGERS: usize = 8192;

/// Rooms at most whose invite of this device waits for the events it cites
/// (`Command::ExpectRoom`, least recently expected forgotten).
pub const MAX_EXPECTED_ROOMS: usize = 16;

/// Strangers' events of an expected room that skip the per-key stranger
/// budget, per room (the history an invite cites; an invite forged by an
/// outsider buys it no more than this, in the stranger class).
pub const EXPECTED_ROOM_EVENTS: u64 = 65_536;
/// Most event IDs remembered per link as known to the peer (sent to it,
/// announced by it): enough to keep live push from repeating the events
/// of the last few windows; about 80 bytes each.
pub const MAX_KNOWN_PER_LINK: usize = 2048;
/// Most events in one link's outbox, the ordered queue the link's window
/// is filled from (live push, `Want` and `Graft` answers, and the head of
/// a catch-up). A window (`NodeConfig::window_bytes`, 256 KiB by default) holds a
/// few hundred events, so the outbox only needs a few windows' worth; more
/// found by reconciliation waits in the link's backlog as bare items
/// (`protocol-spec/wire.md`, "Node limits").
pub const MAX_OUTBOX_PER_LINK: usize = 1024;
/// Most of a link's outbox that events found by reconciliation (a
/// catch-up) may fill from the backlog: the rest stays free for live push
/// and answers to `Want` and `Graft`, so a catch-up never crowds them out.
pub const MAX_CATCH_UP_IN_OUTBOX: usize = MAX_OUTBOX_PER_LINK * 3 / 4;
/// Most of a link's outbox a catch-up may fill when the next event to
/// move in is a control event (membership, key share, prekey update): a
/// control event found after the outbox filled with messages (another
/// slice of the room) still goes out next, since the outbox sends control
/// events first (`protocol-spec/wire.md`, "Catch-up order").
pub const MAX_CONTROL_IN_OUTBOX: usize = MAX_CATCH_UP_IN_OUTBOX + MAX_OUTBOX_PER_LINK / 8;
/// Most items (40 bytes each: origin time and event ID) a link's backlog
/// holds: the events reconciliation found the peer lacks that do not fit
/// the outbox yet, sent oldest first as the outbox drains. 16 384 items of
/// 1 KiB are about 40 s of a default link's pacing. Items beyond it (the
/// newest) are dropped and found again by a later anti-entropy period.
pub const MAX_BACKLOG_PER_LINK: usize = 16_384;
/// Most backlog items over all links together (about 1 MiB): a link may
/// hold `MAX_BACKLOG_PER_LINK` while it is alone, and its share of this
/// budget (never under `MIN_BACKLOG_PER_LINK`) when it is not, so a relay
/// that meets many empty peers at once, or cannot send as fast as it
/// reconciles, does not hold a full backlog per link
/// (`Node::backlog_cap`, `protocol-spec/wire.md`, "Node limits").
pub const MAX_BACKLOG_TOTAL: usize = 24_576;
/// Least backlog a link may hold whatever the number of links: two
/// rounds' worth of small rooms, so a busy node still sends every link a
/// catch-up ordered beyond its outbox.
pub const MIN_BACKLOG_PER_LINK: usize = 2_048;
/// The initiator opens reconciliation sessions on a link (a round, or the
/// slices of a failed session) only while the link's outbox and backlog
/// hold at most this many events together: a catch-up is reconciled about
/// as fast as the link sends it, not all at once into memory.
pub const CATCH_UP_LOW_WATER: usize = 512;
/// Least backlog room each open slice session of a partitioned
/// reconciliation reserves (otherwise its share of the split's estimate
/// plus a quarter): slices start while the link's catch-up plus this much
/// per open slice fits `MAX_BACKLOG_PER_LINK`, so a room's slices are
/// reconciled ahead of the transfer, all of them for up to about 13,000
/// differences.
pub const SLICE_BACKLOG_SHARE: usize = crate::reconcile::PART_TARGET_DIFFERENCES as usize / 2;
/// Most reconciliation sessions the initiator opens at once on one link
/// (one round). A responder still accepts up to `MAX_SESSIONS_PER_LINK`
/// (older peers open that many); each open session holds its room's items.
pub const ROUND_SESSIONS: usize = 8;
/// A sender paces each link at `(1 - 1/PACING_DIVISOR)` of the intake rate
/// and `1/PACING_DIVISOR` of the intake burst, leaving headroom for control
/// frames, so an honest relay is never penalised for forwarding a flood.
pub const PACING_DIVISOR: u64 = 4;
/// Bytes a batch frame adds around its events (head, version, type, array).
const FRAME_OVERHEAD: usize = 16;
/// Bytes a batch frame adds per event (byte-string head, fragment share).
const PER_EVENT_OVERHEAD: usize = 8;
/// Most items held by this node's open reconciliation sessions, all links
/// together (each session keeps its side's items and their coded state:
/// about 140 bytes per item). A link with no session open may always open
/// one; beyond the budget, a peer's further `Init`s wait (answered in
/// arrival order as sessions end) and an initiator opens no more
/// (`protocol-spec/wire.md`, "Node limits").
pub const MAX_SESSION_ITEMS: usize = 12_288;
/// Most peers' `Init`s waiting for the session budget, all links together;
/// beyond it they are answered at once.
pub const MAX_DEFERRED_INITS: usize = 256;
/// Most reconciliation sessions open on one link.
pub const MAX_SESSIONS_PER_LINK: usize = 64;

/// Most reconciliation slices queued per link after sessions failed with
/// too many differences (`protocol-spec/reconcile.md`, "Partitioned
/// sessions").
pub const MAX_QUEUED_PARTS: usize = 1024;

/// A link whose anti-entropy periods keep finding nothing (live push keeps
/// both sides in step) backs off: each quiet period doubles the wait, up to
/// `2^MAX_ANTI_ENTROPY_BACKOFF_SHIFT` times `anti_entropy_interval_ms`. Any
/// difference found resets it.
pub const MAX_ANTI_ENTROPY_BACKOFF_SHIFT: u32 = 4;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_links_window_is_half_a_second_of_its_budget_within_bounds() {
        let mut c = NodeConfig::default();
        assert_eq!(c.window_bytes(), 256 * 1024, "the default 512 KiB/s");
        c.link_bytes_per_s = 128 * 1024;
        assert_eq!(c.window_bytes(), 64 * 1024, "the battery profile");
        c.link_bytes_per_s = 64 * 1024 * 1024;
        assert_eq!(
            c.window_bytes(),
            c.link_window_bytes,
            "a wired LAN: the cap"
        );
        c.link_bytes_per_s = 16 * 1024;
        assert_eq!(c.window_bytes(), MIN_WINDOW_BYTES, "a slow link: the floor");
        c.link_window_bytes = 0;
        assert_eq!(c.window_bytes(), MIN_WINDOW_BYTES, "never below the floor");
    }
}
