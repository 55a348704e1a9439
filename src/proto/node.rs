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
//! * **Hello.** Each side sends `Hello{nonce, rooms}` first. The side with the
//!   lower nonce initiates one reconciliation session per room in the union of
//!   both lists (so a relay also learns rooms it does not carry yet).
//! * **Anti-entropy.** One [`crate::reconcile::Session`] per room finds
//!   what each side lacks (`protocol-spec/reconcile.md`); each side then
//!   sends the events the other lacks. The lower-nonce side runs periods:
//!   own rooms first, then every other room once, at most
//!   `MAX_SESSIONS_PER_LINK` sessions per round; the next period starts
//!   `anti_entropy_interval_ms` later, doubled per period that found
//!   nothing (up to `2^MAX_ANTI_ENTROPY_BACKOFF_SHIFT` times). The room
//!   list and per-room items come from a cache (`src/proto/view.rs`) kept in
//!   step with the store (`protocol-spec/wire.md`, "Node limits").
//! * **Live push (Plumtree).** A newly *committed* event goes in full to at
//!   most `eager_fanout` eager links and as an `IHave` to the others. A
//!   duplicate arriving eagerly prunes that link to lazy; an `IHave` for an
//!   unknown event not filled by an eager push within `ihave_timeout_ms`
//!   grafts the announcing link.
//! * **Copy budget** (off by default). The Hello also lists the sender's
//!   member and spraying rooms (`Members` updates the former). An
//!   event of a room the peer is not a member of goes to it only while this
//!   node holds two or more copies of it, half of which travel along in a
//!   `Spray` frame (binary spray; `NodeConfig::copy_budget`,
//!   `protocol-spec/wire.md`, "Copy budget"). Members always get their
//!   rooms' events. Under a budget, Hello and anti-entropy cover own rooms
//!   and rooms with copies to hand over, not every carried room.
//! * **Validate before relaying.** An event is relayed only after its
//!   structure and signature verified and it was committed.
//! * **Budgets.** Each link has a byte budget for intake; new links share a
//!   global budget; a misbehaving source address is refused for
//!   `penalty_ms`; a signing key has an event-rate budget for strangers'
//!   events. A link that sends a malformed frame or an invalid event is
//!   closed and its source penalised. All per-peer state is capped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroUsize;

use lru::LruCache;
use rand_core::Rng;

use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, RoomId, Timeliness, timeliness};
use crate::proto::budget::TokenBucket;
use crate::proto::io::{AppEvent, Command, Input, LinkId, LinkKind, Output};
use crate::proto::view::StoreView;
use crate::reconcile::{FAIL_TOO_MANY_DIFFERENCES, Item, Message, Part, Session};
use crate::room::ROOM_CAP;
use crate::store::{
    EventStore, InsertMeta, InsertOutcome, Priority, Source, SourceKey, StoreError,
};
use crate::wire::{
    CloseReason, Fragmenter, Frame, MAX_COPY_BUDGET, MAX_EVENTS_PER_FRAME, MAX_FRAME_BYTES,
    MAX_HELLO_ROOMS, MAX_IDS_PER_FRAME, Reassembler,
};

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
    /// Bytes of event data in flight per link before waiting for the driver
    /// to report the link drained.
    pub link_window_bytes: usize,
    /// Copy budget for carried events (binary spray, `protocol-spec/wire.md`,
    /// "Copy budget"): how many carriers (peers that are not members of the
    /// event's room) each event this node publishes may reach. A holder of
    /// `n >= 2` copies hands `n / 2` to a carrier that lacks the event; a
    /// holder of one copy only delivers to members. Members always get their
    /// rooms' events. `0` = no budget: every node hands every event to every
    /// peer (epidemic carrying). At most [`MAX_COPY_BUDGET`].
    pub copy_budget: u8,
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
        }
    }
}

/// Default [`NodeConfig::copy_budget`]: `0`, no budget
/// (`protocol-spec/wire.md`, "Copy budget"). A budget stops a member from
/// handing its room's events to a device that is not a member *yet*: an
/// invitee reached only through a member relay never receives its invite.
/// Until invitees are announced, the budget is for carrier networks (the
/// simulator's scenarios use [`SIM_COPY_BUDGET`]).
pub const DEFAULT_COPY_BUDGET: u8 = 0;

/// The copy budget the simulator's scenarios run with (16: the disaster
/// area's overhead goal is met with it, `sim/reports/disaster-area/`).
pub const SIM_COPY_BUDGET: u8 = 16;

/// Most events whose copy counts (above one) a node remembers; a forgotten
/// count falls back to one copy (deliver to members only).
pub const MAX_COPY_RECORDS: usize = 65_536;

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
/// Most event IDs remembered per link as known to the peer.
pub const MAX_KNOWN_PER_LINK: usize = 8192;
/// Most event IDs queued for sending on one link.
pub const MAX_OUTBOX_PER_LINK: usize = 65_536;
/// A sender paces each link at `(1 - 1/PACING_DIVISOR)` of the intake rate
/// and `1/PACING_DIVISOR` of the intake burst, leaving headroom for control
/// frames, so an honest relay is never penalised for forwarding a flood.
pub const PACING_DIVISOR: u64 = 4;
/// Bytes a batch frame adds around its events (head, version, type, array).
const FRAME_OVERHEAD: usize = 16;
/// Bytes a batch frame adds per event (byte-string head, fragment share).
const PER_EVENT_OVERHEAD: usize = 8;
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

struct Link {
    kind: LinkKind,
    source: SourceKey,
    mtu: usize,
    fragmenter: Fragmenter,
    reassembler: Reassembler,
    since_ms: u64,
    bytes_in: u64,
    bytes_out: u64,
    intake: TokenBucket,
    nonce: u64,
    /// Whether this side initiates reconciliation (its nonce is lower).
    initiator: bool,
    hello_seen: bool,
    eager: bool,
    /// Rooms the peer pruned (lazy push only), bounded by `MAX_HELLO_ROOMS`.
    pruned: BTreeSet<RoomId>,
    known: LruCache<EventId, ()>,
    /// Ordered by (class, origin time, queue order): a catch-up goes out
    /// oldest first, so creates and invites precede the messages that
    /// need them, whatever order reconciliation found them in.
    outbox: BTreeMap<(Priority, u64, u64), (RoomId, EventId)>,
    queued: BTreeSet<EventId>,
    outbox_seq: u64,
    in_flight: usize,
    /// Pacing: this node never sends faster than the peer's intake budget.
    pacing: TokenBucket,
    /// When pacing allows the next batch, if the outbox is waiting for it.
    resume_at_ms: Option<u64>,
    /// Reconciliation sessions by session number (initiated here, or
    /// answered here), at most `MAX_SESSIONS_PER_LINK`.
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    /// Rooms the peer listed in its hello.
    peer_rooms: BTreeSet<RoomId>,
    /// Rooms the peer is a member of (its Hello, then its latest
    /// `Members` frame).
    peer_members: BTreeSet<RoomId>,
    /// Rooms in which the peer would hand events to a carrier (its Hello).
    peer_spraying: BTreeSet<RoomId>,
    /// Rotation: the last non-own room reconciled, so successive rounds
    /// cover every room, not only the first `MAX_SESSIONS_PER_LINK`.
    recon_cursor: Option<RoomId>,
    /// Whether the last round left rooms out (the next round starts as soon
    /// as this one finishes).
    more_rooms: bool,
    /// Slices still to reconcile after a session found more differences
    /// than one session can decode (initiator only), at most
    /// `MAX_QUEUED_PARTS`.
    parts: VecDeque<(RoomId, Part)>,
    /// Rooms of the rotation not yet reconciled in this anti-entropy
    /// period: a period covers every room once, then waits for the next.
    rotation_left: usize,
    /// Whether a session of this period found a difference (or failed).
    period_found: bool,
    /// Periods in a row that found nothing: the next period waits
    /// `anti_entropy_interval_ms << min(quiet_periods,
    /// MAX_ANTI_ENTROPY_BACKOFF_SHIFT)`.
    quiet_periods: u32,
    next_anti_entropy_ms: u64,
}

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
}

/// Something held until the store commits.
#[derive(Debug, Clone)]
struct Committed {
    id: EventId,
    room: RoomId,
    from: Option<LinkId>,
    priority: Priority,
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
    key_buckets: LruCache<DeviceId, TokenBucket>,
    pending_ihave: BTreeMap<EventId, (LinkId, RoomId, u64)>,
    /// Events refused by a signing key's stranger budget, with the link
    /// that offered them: if their room becomes one of this device's own
    /// (its invite was just processed), they are asked for again at once.
    refused_strangers: LruCache<EventId, (LinkId, RoomId)>,
    stats: NodeStats,
    /// Cached room list and per-room items (see [`StoreView`]).
    view: StoreView,
    /// Copies held per carried event, only counts of two or more (one is
    /// the default), at most `MAX_COPY_RECORDS` (least recently used
    /// forgotten).
    copies: LruCache<EventId, (RoomId, u8)>,
    /// What new events are stored ([`Node::set_admission`]).
    admission: Admission,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

impl<S: EventStore, R: Rng> Node<S, R> {
    /// A node for device `own`, over `store`, at time `now_ms`.
    pub fn new(own: DeviceId, store: S, rng: R, config: NodeConfig, now_ms: u64) -> Self {
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
            penalised: LruCache::new(nz(MAX_PENALISED_SOURCES)),
            key_buckets: LruCache::new(nz(MAX_KEY_BUCKETS)),
            pending_ihave: BTreeMap::new(),
            refused_strangers: LruCache::new(nz(MAX_REFUSED_STRANGERS)),
            stats: NodeStats::default(),
            view: StoreView::new(),
            copies: LruCache::new(nz(MAX_COPY_RECORDS)),
            admission: Admission::All,
        }
    }

    // ---- getters ---------------------------------------------------------

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

    /// Whether staged writes wait for a commit.
    pub fn needs_commit(&self) -> bool {
        self.store.has_pending() || !self.after_commit.is_empty()
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
            })
            .collect()
    }

    /// Rooms this device is a member of.
    pub fn own_rooms(&self) -> &BTreeSet<RoomId> {
        &self.own_rooms
    }

    // ---- inputs ----------------------------------------------------------

    /// Feeds one input at time `now_ms`. Store errors are fatal to the
    /// driver (the disk failed); everything a peer sends is handled inside.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<(), StoreError> {
        self.now_ms = self.now_ms.max(now_ms);
        match input {
            Input::LinkUp {
                link,
                kind,
                mtu,
                source,
            } => self.on_link_up(link, kind, mtu, source),
            Input::LinkDown(link) => {
                self.links.remove(&link);
                self.pending_ihave.retain(|_, (l, _, _)| *l != link);
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

    // ---- outputs ---------------------------------------------------------

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
        match (ae, ih) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- handlers --------------------------------------------------------

    fn on_link_up(
        &mut self,
        link: LinkId,
        kind: LinkKind,
        mtu: usize,
        source: SourceKey,
    ) -> Result<(), StoreError> {
        let now = self.now_ms;
        let refused = if self.links.len() >= self.config.max_links {
            Some("too many links")
        } else if self
            .penalised
            .get(&source)
            .is_some_and(|until| *until > now)
        {
            Some("source is penalised")
        } else if !self.new_links.try_take(1, now) {
            Some("new-link budget exhausted")
        } else {
            None
        };
        if let Some(reason) = refused {
            self.stats.links_refused += 1;
            self.outputs.push_back(Output::Close {
                link,
                reason: reason.into(),
            });
            return Ok(());
        }
        let nonce = self.rng.next_u64();
        let eager = self.links.values().filter(|l| l.eager).count() < self.config.eager_fanout;
        self.links.insert(
            link,
            Link {
                kind,
                source,
                mtu: mtu.clamp(crate::wire::MIN_MTU, crate::wire::MAX_MTU),
                fragmenter: Fragmenter::new(),
                reassembler: Reassembler::new(),
                since_ms: now,
                bytes_in: 0,
                bytes_out: 0,
                intake: TokenBucket::new(
                    self.config.link_burst_bytes,
                    self.config.link_bytes_per_s,
                    now,
                ),
                nonce,
                initiator: false,
                hello_seen: false,
                eager,
                pruned: BTreeSet::new(),
                known: LruCache::new(nz(MAX_KNOWN_PER_LINK)),
                outbox: BTreeMap::new(),
                queued: BTreeSet::new(),
                outbox_seq: 0,
                in_flight: 0,
                pacing: TokenBucket::new(
                    self.config.link_burst_bytes / PACING_DIVISOR,
                    self.config.link_bytes_per_s - self.config.link_bytes_per_s / PACING_DIVISOR,
                    now,
                ),
                resume_at_ms: None,
                sessions: BTreeMap::new(),
                next_session: 0,
                peer_rooms: BTreeSet::new(),
                peer_members: BTreeSet::new(),
                peer_spraying: BTreeSet::new(),
                recon_cursor: None,
                more_rooms: false,
                parts: VecDeque::new(),
                rotation_left: 0,
                period_found: false,
                quiet_periods: 0,
                next_anti_entropy_ms: now.saturating_add(self.config.anti_entropy_interval_ms),
            },
        );
        let members = self.member_list();
        let spraying = self.spraying_rooms()?;
        // Rooms in a role list are not repeated in `rooms` (the peer takes
        // the union), which keeps the Hello, the largest control frame, small.
        let rooms = self
            .room_list()?
            .into_iter()
            .filter(|r| members.binary_search(r).is_err() && spraying.binary_search(r).is_err())
            .take(MAX_HELLO_ROOMS)
            .collect();
        self.send(
            link,
            &Frame::Hello {
                max_frame_bytes: MAX_FRAME_BYTES as u64,
                features: 0,
                nonce,
                rooms,
                members,
                spraying,
            },
        );
        Ok(())
    }

    /// The `Members` list: own rooms, ascending, at most `MAX_HELLO_ROOMS`.
    fn member_list(&self) -> Vec<RoomId> {
        self.own_rooms
            .iter()
            .take(MAX_HELLO_ROOMS)
            .copied()
            .collect()
    }

    /// Tells every link the new own-room set.
    fn announce_members(&mut self) {
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
    fn room_list(&mut self) -> Result<Vec<RoomId>, StoreError> {
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
    fn offer_to_member(&mut self, link: LinkId) -> Result<(), StoreError> {
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
    fn spraying_rooms(&mut self) -> Result<Vec<RoomId>, StoreError> {
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
                nonce,
                rooms,
                members,
                spraying,
                ..
            } => self.on_hello(link, nonce, [rooms, members, spraying]),
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
            Frame::Members { rooms } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.peer_members = rooms.into_iter().take(MAX_HELLO_ROOMS).collect();
                }
                Ok(())
            }
            Frame::IHave { room, ids } => {
                let deadline = self.now_ms.saturating_add(self.config.ihave_timeout_ms);
                for id in ids {
                    if let Some(l) = self.links.get_mut(&link) {
                        l.known.put(id, ());
                    }
                    if self.store.has_event(&id)? || self.pending_ihave.contains_key(&id) {
                        continue;
                    }
                    if self.pending_ihave.len() < MAX_PENDING_IHAVE {
                        self.pending_ihave.insert(id, (link, room, deadline));
                    }
                }
                Ok(())
            }
            Frame::Want { ids, .. } => {
                for id in ids {
                    self.queue_send(link, id, Priority::OwnRoom)?;
                }
                self.pump(link)
            }
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
                for id in ids {
                    self.queue_send(link, id, Priority::OwnRoom)?;
                }
                self.pump(link)
            }
            Frame::Close { .. } => {
                self.links.remove(&link);
                self.pending_ihave.retain(|_, (l, _, _)| *l != link);
                self.outputs.push_back(Output::Close {
                    link,
                    reason: "peer closed".into(),
                });
                Ok(())
            }
        }
    }

    /// `lists`: the peer's held, member and spraying rooms.
    fn on_hello(
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

    /// The next rooms to reconcile on `link`. An anti-entropy period
    /// starts with this device's own rooms (at most
    /// `MAX_SESSIONS_PER_LINK`), then covers every other room (held here or
    /// listed by the peer) once, in rotation from the link's cursor, in
    /// rounds of at most `MAX_SESSIONS_PER_LINK` sessions. When every room
    /// was covered the period ends: the next starts after
    /// `anti_entropy_interval_ms`, not at once (that kept the link busy
    /// with reconciliation and starved event transfer).
    fn next_rooms(&mut self, link: LinkId) -> Result<Vec<RoomId>, StoreError> {
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
        all.extend(l.peer_rooms.iter().copied());
        if self.config.copy_budget != 0 {
            // Only rooms where one side may hand the other something
            // (`protocol-spec/wire.md`, "Copy budget"): what a side holds
            // goes to a member, or to anyone while it has copies to give.
            let own = &self.own_rooms;
            all.retain(|r| {
                let me_holds = own.contains(r) || held.binary_search(r).is_ok();
                let i_give = me_holds && (l.peer_members.contains(r) || spraying.contains(r));
                let peer_gives =
                    l.peer_rooms.contains(r) && (own.contains(r) || l.peer_spraying.contains(r));
                i_give || peer_gives
            });
        }
        let first: Vec<RoomId> = self
            .own_rooms
            .iter()
            .filter(|r| all.contains(r))
            .take(MAX_SESSIONS_PER_LINK)
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
        let room_left = MAX_SESSIONS_PER_LINK.saturating_sub(batch.len());
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

    /// Every item of a room, ascending (from the cached view).
    fn room_items(&mut self, room: &RoomId) -> Result<Vec<Item>, StoreError> {
        self.view.items(&self.store, room)
    }

    fn start_sessions(&mut self, link: LinkId, rooms: Vec<RoomId>) -> Result<(), StoreError> {
        for room in rooms {
            let open = self
                .links
                .get(&link)
                .map_or(usize::MAX, |l| l.sessions.len());
            if open >= MAX_SESSIONS_PER_LINK {
                break;
            }
            let items = self.room_items(&room)?;
            self.open_session(link, room, Part::WHOLE, items);
        }
        Ok(())
    }

    fn on_reconcile(&mut self, link: LinkId, number: u64, msg: Message) -> Result<(), StoreError> {
        let Some(l) = self.links.get(&link) else {
            return Ok(());
        };
        let existing = l.sessions.contains_key(&number);
        let replies = if let Message::Init { room, .. } = &msg {
            // Only the lower-nonce side initiates; a fresh number only.
            if l.initiator || existing || l.sessions.len() >= MAX_SESSIONS_PER_LINK {
                self.penalise(
                    link,
                    "unexpected reconciliation session",
                    CloseReason::ProtocolViolation,
                );
                return Ok(());
            }
            let part = match &msg {
                Message::Init { part, .. } => *part,
                _ => Part::WHOLE,
            };
            let mut items = self.room_items(room)?;
            items.retain(|i| part.contains(i));
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
            // Events this side may not hand over (no copies left for a
            // carrier) are not a difference worth another period.
            let budget = self.config.copy_budget;
            let peer_lacks: Vec<Item> = match self.links.get(&link) {
                Some(l) => peer_lacks
                    .into_iter()
                    .filter(|i| offerable(budget, &self.copies, l, &i.id, &room))
                    .collect(),
                None => Vec::new(),
            };
            // Likewise what this side lacks counts only where the peer
            // surely sends it: to a member, or without a budget.
            let found = !peer_lacks.is_empty()
                || failed.is_some()
                || (i_lack && (budget == 0 || self.own_rooms.contains(&room)));
            if let Some(l) = self.links.get_mut(&link) {
                l.sessions.remove(&number);
                l.period_found |= found;
                // Too many differences for one session: reconcile slices
                // of the slice separately (initiator side), as many as the
                // estimate asks for, or the two halves without one.
                if l.initiator
                    && failed == Some(FAIL_TOO_MANY_DIFFERENCES)
                    && let Some(parts) = part.split_for(estimate)
                    && l.parts.len() + parts.len() <= MAX_QUEUED_PARTS
                {
                    l.parts.extend(parts.into_iter().map(|p| (room, p)));
                }
                // A round that left rooms out continues at once.
                if l.sessions.is_empty() && l.initiator && l.more_rooms {
                    l.next_anti_entropy_ms = now;
                }
            }
            self.start_parts(link)?;
            for item in peer_lacks {
                self.queue_send(link, item.id, Priority::OwnRoom)?;
            }
            self.pump(link)?;
        }
        Ok(())
    }

    /// Starts queued slices while the link has free session slots.
    fn start_parts(&mut self, link: LinkId) -> Result<(), StoreError> {
        loop {
            let Some(l) = self.links.get_mut(&link) else {
                return Ok(());
            };
            if l.sessions.len() >= MAX_SESSIONS_PER_LINK {
                return Ok(());
            }
            let Some((room, part)) = l.parts.pop_front() else {
                return Ok(());
            };
            let mut items = self.room_items(&room)?;
            items.retain(|i| part.contains(i));
            self.open_session(link, room, part, items);
        }
    }

    /// Opens one session as initiator and sends its `Init`.
    fn open_session(&mut self, link: LinkId, room: RoomId, part: Part, items: Vec<Item>) {
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

    /// One received event; `copies` is how many copies the sender handed
    /// over with it (1 from an `Events` frame).
    fn on_event_bytes(&mut self, link: LinkId, bytes: &[u8], copies: u8) -> Result<(), StoreError> {
        let event = match Event::decode(bytes) {
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
                let held = self.copies.peek(&id).map_or(1, |c| c.1);
                let total = held.saturating_add(copies).min(MAX_COPY_BUDGET);
                self.copies.put(id, (event.room(), total));
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
        if priority == Priority::Stranger {
            let now = self.now_ms;
            let (burst, rate) = (self.config.key_event_burst, self.config.key_events_per_s);
            let bucket = self
                .key_buckets
                .get_or_insert_mut(event.sender(), || TokenBucket::new(burst, rate, now));
            if !bucket.try_take(1, now) {
                self.stats.refused_events += 1;
                self.refused_strangers.put(id, (link, event.room()));
                return Ok(());
            }
        }
        if spray {
            self.copies
                .put(id, (event.room(), copies.min(MAX_COPY_BUDGET)));
        }
        self.ingest(
            &event,
            InsertMeta {
                priority,
                source: Source::Link(source),
                received_ms: self.now_ms,
            },
            Some(link),
        )
    }

    /// The class an event is stored in: from its sender's standing in the
    /// room, never from the room ID alone (`protocol-spec/store.md`,
    /// "Priority classes"). An outsider's events of an own room are
    /// stranger traffic: rate-limited per key, within the stranger pool,
    /// evicted first.
    fn classify(&self, event: &Event) -> Priority {
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
    fn ingest(
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
                self.view.inserted(before, after, event.room(), item);
                if let Some(gap) = self.new_gap(event)? {
                    self.after_commit_outputs.push(Output::App(gap));
                }
                self.after_commit.push(Committed {
                    id: event.id(),
                    room: event.room(),
                    from,
                    priority: meta.priority,
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
            InsertOutcome::Rejected(_) => self.stats.refused_events += 1,
        }
        Ok(())
    }

    /// A gap newly opened below this event's sequence number, if any.
    fn new_gap(&self, event: &Event) -> Result<Option<AppEvent>, StoreError> {
        let seq = event.seq();
        if seq <= 1 {
            return Ok(None);
        }
        let gaps = self.store.gaps(&event.room(), &event.sender(), 64)?;
        Ok(gaps
            .iter()
            .find(|g| g.to_seq + 1 == seq)
            .map(|g| AppEvent::GapDetected {
                room: event.room(),
                sender: event.sender(),
                from_seq: g.from_seq,
                to_seq: g.to_seq,
            }))
    }

    fn on_command(&mut self, cmd: Command) -> Result<(), StoreError> {
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
                };
                let budget = self.config.copy_budget.min(MAX_COPY_BUDGET);
                if budget >= 2 && !self.store.has_event(&event.id())? {
                    self.copies.put(event.id(), (event.room(), budget));
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
                let meta = InsertMeta {
                    priority: self.classify(&event),
                    source,
                    received_ms: self.now_ms,
                };
                self.ingest(&event, meta, None)
            }
            Command::JoinRoom { room, members } => {
                self.set_standing(room, members);
                if self.own_rooms.insert(room) {
                    self.announce_members();
                    self.want_refused(room)?;
                }
                Ok(())
            }
            Command::RoomMembers { room, members } => {
                if self.own_rooms.contains(&room) {
                    self.set_standing(room, members);
                }
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

    fn set_standing(&mut self, room: RoomId, members: BTreeSet<DeviceId>) {
        let members = members.into_iter().take(ROOM_CAP).collect();
        self.standing.insert(room, members);
    }

    /// A room just became an own room (a new member's invite was
    /// processed): ask the links that offered its events again for those
    /// the stranger budget refused, instead of leaving them to the next
    /// anti-entropy period. The peer answers `Want` like a graft.
    fn want_refused(&mut self, room: RoomId) -> Result<(), StoreError> {
        let ids: Vec<(EventId, LinkId)> = self
            .refused_strangers
            .iter()
            .filter(|(_, (_, r))| *r == room)
            .map(|(id, (link, _))| (*id, *link))
            .collect();
        let mut by_link: BTreeMap<LinkId, Vec<EventId>> = BTreeMap::new();
        for (id, link) in ids {
            self.refused_strangers.pop(&id);
            if self.links.contains_key(&link) && !self.store.has_event(&id)? {
                by_link.entry(link).or_default().push(id);
            }
        }
        for (link, mut ids) in by_link {
            ids.sort_unstable();
            self.send_ids(link, &ids, |ids| Frame::Want { room, ids });
        }
        Ok(())
    }

    fn on_commit_done(&mut self) -> Result<(), StoreError> {
        let done = std::mem::take(&mut self.after_commit);
        self.outputs.extend(self.after_commit_outputs.drain(..));
        let mut touched = BTreeSet::new();
        // Lazy-push announcements, batched per (link, room): one `IHave`
        // frame per batch of a commit, not one per event.
        let mut announce: BTreeMap<(LinkId, RoomId), Vec<EventId>> = BTreeMap::new();
        for c in done {
            self.stats.events_stored += 1;
            self.outputs.push_back(Output::App(AppEvent::EventStored {
                id: c.id,
                room: c.room,
            }));
            // Only peers this node may hand the event to (members, or
            // carriers while copies are left) get it or hear of it.
            let budget = self.config.copy_budget;
            let copies = &self.copies;
            let links: Vec<(LinkId, bool)> = self
                .links
                .iter_mut()
                .filter(|(id, l)| {
                    Some(**id) != c.from && offerable(budget, copies, l, &c.id, &c.room)
                })
                .map(|(id, l)| {
                    let eager = l.eager && !l.pruned.contains(&c.room);
                    (*id, eager && !l.known.contains(&c.id))
                })
                .collect();
            let mut lazy = Vec::new();
            for (link, eager) in links {
                if eager {
                    self.queue_send(link, c.id, c.priority)?;
                    touched.insert(link);
                } else {
                    lazy.push(link);
                }
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
        for link in touched {
            self.pump(link)?;
        }
        Ok(())
    }

    fn on_timeout(&mut self) -> Result<(), StoreError> {
        let now = self.now_ms;
        // Graft links whose announcements were not filled in time.
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
        // Links whose pacing now allows the next batch.
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
        // Periodic anti-entropy, initiated by the lower-nonce side.
        let due: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.next_anti_entropy_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for link in due {
            if let Some(l) = self.links.get_mut(&link) {
                if !l.more_rooms {
                    // A new period: back off if the last one found nothing.
                    if l.period_found {
                        l.quiet_periods = 0;
                    } else {
                        l.quiet_periods = l.quiet_periods.saturating_add(1);
                    }
                    l.period_found = false;
                }
                let shift = l.quiet_periods.min(MAX_ANTI_ENTROPY_BACKOFF_SHIFT);
                let wait = self
                    .config
                    .anti_entropy_interval_ms
                    .saturating_mul(1 << shift);
                l.next_anti_entropy_ms = now.saturating_add(wait);
                if !l.sessions.is_empty() || !l.parts.is_empty() || !l.hello_seen || !l.initiator {
                    continue;
                }
            }
            let rooms = self.next_rooms(link)?;
            self.start_sessions(link, rooms)?;
        }
        Ok(())
    }

    // ---- sending ---------------------------------------------------------

    /// Queues a held event for `link` (ignored if not held, already queued
    /// or the outbox is full; anti-entropy catches up later).
    fn queue_send(
        &mut self,
        link: LinkId,
        id: EventId,
        priority: Priority,
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
        if let Some(l) = self.links.get_mut(&link) {
            l.queued.insert(id);
            l.outbox_seq += 1;
            l.outbox
                .insert((priority, info.origin_ts_ms, l.outbox_seq), (info.room, id));
        }
        Ok(())
    }

    /// Sends queued events on `link` while its window allows.
    fn pump(&mut self, link: LinkId) -> Result<(), StoreError> {
        loop {
            let Some(l) = self.links.get_mut(&link) else {
                return Ok(());
            };
            if l.in_flight >= self.config.link_window_bytes || l.outbox.is_empty() {
                return Ok(());
            }
            let now = self.now_ms;
            // Strangers' events may not spend the last quarter of the pacing
            // burst: it stays in reserve for the node's own and its rooms'
            // events, so a relayed flood never delays them.
            let reserve = self.config.link_burst_bytes / PACING_DIVISOR / 4;
            let mut avail = l.pacing.available(now);
            let budget = self.config.copy_budget;
            let mut batch = Vec::new();
            let mut handed = Vec::new();
            let mut waiting = false;
            let mut size = FRAME_OVERHEAD + if budget == 0 { 0 } else { SPRAY_FRAME_OVERHEAD };
            // One frame carries events of one room: the head's.
            let Some(batch_room) = l.outbox.values().next().map(|(r, _)| *r) else {
                return Ok(());
            };
            let same_room: Vec<((Priority, u64, u64), EventId)> = l
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
                // Copies may have run out since the event was queued.
                if !offerable(budget, &self.copies, l, &id, &batch_room) {
                    l.outbox.remove(&key);
                    l.queued.remove(&id);
                    continue;
                }
                let Some(bytes) = self.store.get_event(&id)? else {
                    l.outbox.remove(&key);
                    l.queued.remove(&id);
                    continue;
                };
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
                handed.push(take_copies(budget, &mut self.copies, l, &id, &batch_room));
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

    /// Encodes, fragments and queues a frame; returns the bytes queued.
    /// Sends `ids` in frames of at most `MAX_IDS_PER_FRAME` IDs each.
    fn send_ids(&mut self, link: LinkId, ids: &[EventId], frame: impl Fn(Vec<EventId>) -> Frame) {
        for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
            self.send(link, &frame(chunk.to_vec()));
        }
    }

    fn send(&mut self, link: LinkId, frame: &Frame) -> usize {
        let Some(l) = self.links.get_mut(&link) else {
            return 0;
        };
        let bytes = frame.encode();
        // Frames built here respect MAX_FRAME_BYTES and the MTU is clamped
        // to the supported range, so fragmenting cannot fail.
        let Ok(datagrams) = l.fragmenter.fragment(&bytes, l.mtu) else {
            return 0;
        };
        let mut total = 0;
        for datagram in datagrams {
            total += datagram.len();
            l.bytes_out += datagram.len() as u64;
            self.outputs.push_back(Output::Transmit {
                link,
                bytes: datagram,
            });
        }
        total
    }

    fn penalise(&mut self, link: LinkId, reason: &str, code: CloseReason) {
        if let Some(l) = self.links.get(&link) {
            let until = self.now_ms.saturating_add(self.config.penalty_ms);
            self.penalised.put(l.source, until);
        }
        let mut end = reason.len().min(crate::wire::MAX_CLOSE_DETAIL_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let detail = reason[..end].to_owned();
        self.send(
            link,
            &Frame::Close {
                reason: code,
                detail,
            },
        );
        self.links.remove(&link);
        self.pending_ihave.retain(|_, (l, _, _)| *l != link);
        self.stats.links_penalised += 1;
        self.outputs.push_back(Output::App(AppEvent::PeerPenalised {
            link,
            reason: reason.to_owned(),
        }));
        self.outputs.push_back(Output::Close {
            link,
            reason: reason.to_owned(),
        });
    }
}

/// Whether event `id` of `room` may go to `l`'s peer (`protocol-spec/wire.md`,
/// "Copy budget"): always without a budget or to a member of the room,
/// otherwise only while this node holds two copies or more.
fn offerable(
    budget: u8,
    copies: &LruCache<EventId, (RoomId, u8)>,
    l: &Link,
    id: &EventId,
    room: &RoomId,
) -> bool {
    budget == 0 || l.peer_members.contains(room) || copies.peek(id).is_some_and(|c| c.1 >= 2)
}

/// Hands copies of an offerable event to `l`'s peer: a carrier gets half of
/// the `n >= 2` copies held (this node keeps the rest), a member or any peer
/// without a budget one (nothing changes here). Returns the copies handed.
fn take_copies(
    budget: u8,
    copies: &mut LruCache<EventId, (RoomId, u8)>,
    l: &Link,
    id: &EventId,
    room: &RoomId,
) -> u8 {
    if budget == 0 || l.peer_members.contains(room) {
        return 1;
    }
    let held = copies.pop(id).map_or(1, |c| c.1);
    if held < 2 {
        return 1;
    }
    let given = held / 2;
    let kept = held - given;
    if kept >= 2 {
        copies.put(*id, (*room, kept));
    }
    given
}

/// The union of the ascending `held` rooms and `own`, ascending.
fn merge_sorted<'a>(
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
