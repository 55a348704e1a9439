//! Links: a link's state, bringing one up (admission by the new-link
//! budget and penalties, the Hello), framing and fragmenting what is sent,
//! and closing a misbehaving link (`protocol-spec/wire.md`, "The node state
//! machine", "Node limits").

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lru::LruCache;
use rand_core::Rng;

use crate::event::{EventId, RoomId};
use crate::proto::budget::TokenBucket;
use crate::proto::io::{AppEvent, LinkId, LinkKind, Output};
use crate::reconcile::{Item, Part, Session};
use crate::store::{EventStore, Priority, SourceKey, StoreError};
use crate::wire::{
    CloseReason, FEATURE_ROLES, Fragmenter, Frame, MAX_FRAME_BYTES, MAX_IDS_PER_FRAME, Reassembler,
};

use super::{MAX_KNOWN_PER_LINK, Node, NodeConfig, PACING_DIVISOR};

/// One link's state: framing, budgets, push and anti-entropy bookkeeping,
/// and what the peer announced. All of it is capped.
pub(super) struct Link {
    pub(super) kind: LinkKind,
    pub(super) source: SourceKey,
    pub(super) mtu: usize,
    pub(super) fragmenter: Fragmenter,
    pub(super) reassembler: Reassembler,
    pub(super) since_ms: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) intake: TokenBucket,
    pub(super) nonce: u64,
    /// Whether this side initiates reconciliation (its nonce is lower).
    pub(super) initiator: bool,
    pub(super) hello_seen: bool,
    /// Whether the peer's Hello asked for member and spraying roles.
    pub(super) peer_wants_roles: bool,
    /// Copies whose companion hold ended up to this time were announced
    /// to the peer (`Node::offer_after_hold`).
    pub(super) hold_offered_ms: u64,
    /// Whether this side's `Rooms` went out, and the peer's came in.
    pub(super) rooms_sent: bool,
    pub(super) rooms_seen: bool,
    /// Whether the responder's `Offer` came in (initiator only).
    pub(super) offer_seen: bool,
    pub(super) eager: bool,
    /// Rooms the peer pruned (lazy push only), bounded by `MAX_HELLO_ROOMS`.
    pub(super) pruned: BTreeSet<RoomId>,
    pub(super) known: LruCache<EventId, ()>,
    /// Ordered by (priority, send class, origin time, queue order): a
    /// catch-up goes out control events first, each class oldest first,
    /// so creates, invites and key shares precede the messages that need
    /// them, whatever order reconciliation found them in. At most
    /// `MAX_OUTBOX_PER_LINK`.
    pub(super) outbox: BTreeMap<OutboxKey, (RoomId, EventId)>,
    /// The event IDs in `outbox`.
    pub(super) queued: BTreeSet<EventId>,
    pub(super) outbox_seq: u64,
    /// The rest of a catch-up: items reconciliation found the peer lacks
    /// that do not fit the outbox yet, control events first, each class
    /// oldest first, at most `MAX_BACKLOG_PER_LINK`. Only the class and
    /// the item are kept (41 bytes); the outbox is refilled from the front
    /// as it drains, and the event's bytes are read from the store only
    /// when the window has room for them.
    pub(super) backlog: VecDeque<(SendClass, Item)>,
    /// Whether an anti-entropy round waits for the catch-up to drain to
    /// `CATCH_UP_LOW_WATER` (initiator only).
    pub(super) drain_wait: bool,
    pub(super) in_flight: usize,
    /// Pacing: this node never sends faster than the peer's intake budget.
    pub(super) pacing: TokenBucket,
    /// When pacing allows the next batch, if the outbox is waiting for it.
    pub(super) resume_at_ms: Option<u64>,
    /// Reconciliation sessions by session number (initiated here, or
    /// answered here), at most `MAX_SESSIONS_PER_LINK`.
    pub(super) sessions: BTreeMap<u64, Session>,
    pub(super) next_session: u64,
    /// What the peer announced (`Rooms`, `Offer`, `Members`).
    pub(super) peer: super::announce::PeerRooms,
    /// Rotation: the last non-own room reconciled, so successive rounds
    /// cover every room, not only the first `MAX_SESSIONS_PER_LINK`.
    pub(super) recon_cursor: Option<RoomId>,
    /// Whether the last round left rooms out (the next round starts as soon
    /// as this one finishes).
    pub(super) more_rooms: bool,
    /// Slices still to reconcile after a session found more differences
    /// than one session can decode (initiator only), at most
    /// `MAX_QUEUED_PARTS`, each with the backlog room it reserves.
    pub(super) parts: VecDeque<(RoomId, Part, usize)>,
    /// Rooms of the rotation not yet reconciled in this anti-entropy
    /// period: a period covers every room once, then waits for the next.
    pub(super) rotation_left: usize,
    /// Whether a session of this period found a difference (or failed).
    pub(super) period_found: bool,
    /// Periods in a row that found nothing: the next period waits
    /// `anti_entropy_interval_ms << min(quiet_periods,
    /// MAX_ANTI_ENTROPY_BACKOFF_SHIFT)`.
    pub(super) quiet_periods: u32,
    pub(super) next_anti_entropy_ms: u64,
}

/// An event's sending class: within a priority, control events (what
/// makes a peer a member and gives it keys) go before messages
/// (`protocol-spec/wire.md`, "Catch-up order").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SendClass {
    /// Messages read as urgent here (`protocol-spec/wire.md`, "Urgent
    /// messages"): before everything else.
    Urgent,
    /// Membership, key shares, prekey updates.
    Control,
    /// Messages and receipts (both encrypted with sender chains: sent in
    /// origin-time order, so chains are read in order).
    Message,
    /// Attachment chunks: after everything else, so a photo never delays
    /// text (`protocol-spec/attachments.md` §6).
    Bulk,
}

impl SendClass {
    /// The class of an event of `kind`.
    pub(super) fn of(kind: crate::event::EventKind) -> SendClass {
        if kind == crate::event::EventKind::Chunk {
            SendClass::Bulk
        } else if kind.in_sender_chain() {
            SendClass::Message
        } else {
            SendClass::Control
        }
    }
}

/// An outbox entry's place: priority, send class, origin time, queue order.
pub(super) type OutboxKey = (Priority, SendClass, u64, u64);

impl Link {
    /// Events queued on this link, in the outbox and the backlog.
    pub(super) fn catch_up_len(&self) -> usize {
        self.outbox.len() + self.backlog.len()
    }

    /// A link that just came up, before its Hello; `eager` if the node has
    /// fewer than `eager_fanout` eager links.
    pub(super) fn new(
        config: &NodeConfig,
        kind: LinkKind,
        mtu: usize,
        source: SourceKey,
        nonce: u64,
        eager: bool,
        now: u64,
    ) -> Self {
        Self {
            kind,
            source,
            mtu: mtu.clamp(crate::wire::MIN_MTU, crate::wire::MAX_MTU),
            fragmenter: Fragmenter::new(),
            reassembler: Reassembler::new(),
            since_ms: now,
            bytes_in: 0,
            bytes_out: 0,
            intake: TokenBucket::new(config.link_burst_bytes, config.link_bytes_per_s, now),
            nonce,
            initiator: false,
            hello_seen: false,
            peer_wants_roles: false,
            hold_offered_ms: now,
            rooms_sent: false,
            rooms_seen: false,
            offer_seen: false,
            eager,
            pruned: BTreeSet::new(),
            known: crate::bounded::lru(MAX_KNOWN_PER_LINK),
            outbox: BTreeMap::new(),
            queued: BTreeSet::new(),
            outbox_seq: 0,
            backlog: VecDeque::new(),
            drain_wait: false,
            in_flight: 0,
            pacing: TokenBucket::new(
                config.link_burst_bytes / PACING_DIVISOR,
                config.link_bytes_per_s - config.link_bytes_per_s / PACING_DIVISOR,
                now,
            ),
            resume_at_ms: None,
            sessions: BTreeMap::new(),
            next_session: 0,
            peer: Default::default(),
            recon_cursor: None,
            more_rooms: false,
            parts: VecDeque::new(),
            rotation_left: 0,
            period_found: false,
            quiet_periods: 0,
            next_anti_entropy_ms: now.saturating_add(config.anti_entropy_interval_ms),
        }
    }
}

impl<S: EventStore, R: Rng> Node<S, R> {
    pub(super) fn on_link_up(
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
        let link_state = Link::new(&self.config, kind, mtu, source, nonce, eager, now);
        self.links.insert(link, link_state);
        // The Hello names no room: the rooms follow as tokens once both
        // nonces are known (`announce`).
        let features = if self.config.copy_budget != 0 {
            FEATURE_ROLES
        } else {
            0
        };
        self.send(
            link,
            &Frame::Hello {
                max_frame_bytes: MAX_FRAME_BYTES as u64,
                features,
                nonce,
            },
        );
        Ok(())
    }

    /// Encodes, fragments and queues a frame; returns the bytes queued.
    /// Sends `ids` in frames of at most `MAX_IDS_PER_FRAME` IDs each.
    pub(super) fn send_ids(
        &mut self,
        link: LinkId,
        ids: &[EventId],
        frame: impl Fn(Vec<EventId>) -> Frame,
    ) {
        for chunk in ids.chunks(MAX_IDS_PER_FRAME) {
            self.send(link, &frame(chunk.to_vec()));
        }
    }

    /// Where copies may go now (`spray::SprayRule`).
    pub(super) fn spray_rule(&self) -> super::spray::SprayRule {
        super::spray::SprayRule::new(&self.config, self.now_ms)
    }

    pub(super) fn send(&mut self, link: LinkId, frame: &Frame) -> usize {
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

    /// Drops a link and what the node keeps for it elsewhere.
    pub(super) fn forget_link(&mut self, link: LinkId) {
        self.links.remove(&link);
        self.pending_ihave.retain(|_, (l, _, _)| *l != link);
        self.deferred_inits.retain(|(l, _, _)| *l != link);
    }

    pub(super) fn penalise(&mut self, link: LinkId, reason: &str, code: CloseReason) {
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
        self.forget_link(link);
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
