//! The node's tunables ([`NodeConfig`]) and their defaults: each default is
//! a named constant of `protocol-spec/wire.md` ("Node limits", "Copy
//! budget") or `protocol-spec/daemon.md`.

use super::{COMPANION_HOLD_MS, COMPANION_LINK_MS, GROUP_WINDOW_MS};

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
pub(super) const SPRAY_FRAME_OVERHEAD: usize = 8;

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
pub(super) const FRAME_OVERHEAD: usize = 16;
/// Bytes a batch frame adds per event (byte-string head, fragment share).
pub(super) const PER_EVENT_OVERHEAD: usize = 8;
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
