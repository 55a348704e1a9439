//! The durable store-and-forward queue (`protocol-spec/store.md`).
//!
//! Every event a node accepts, every queue position, the homeserver sync
//! cursor, contacts and key material live behind the [`Store`] trait. Two
//! backends implement it with identical semantics, because both are the same
//! [`Engine`] over a different key-value layer ([`kv::Kv`]):
//!
//! * [`MemoryStore`]: for unit tests and the simulator. [`MemoryStore::crash`]
//!   drops every uncommitted write, as a power cut would.
//! * [`RedbStore`]: for real nodes, one redb file in the data directory
//!   (mode 0600: it holds key material), with a page cache sized for small
//!   boards ([`redb_backend::DEFAULT_CACHE_BYTES`]).
//!
//! # The commit contract
//!
//! The sans-IO core calls the synchronous mutating methods; they accumulate in
//! one pending write set (for redb, an open write transaction) and every read
//! sees them. **The driver owns commits**: it feeds the core a batch of
//! inputs, calls [`EventStore::commit`] once (group commit), and only then releases
//! the outputs that acknowledge or relay those events: CLI output, replies to
//! peers, uplink acknowledgements. A crash before `commit` loses the whole
//! batch and nothing was acknowledged; a crash after it loses nothing.
//!
//! # Retention
//!
//! Events carry a [`Priority`] class. Expired events (by their signed expiry,
//! see [`crate::event::clock::timeliness`]) are dropped by [`EventStore::expire`].
//! The total size ([`StoreConfig::budget_bytes`], default 256 MiB) is kept by
//! evicting the lowest class first, oldest first. Strangers' events share one
//! pool ([`StoreConfig::stranger_pool_bytes`]) with occupancy budgets per
//! intake link and per signing key, so a flood of fresh identities can only
//! churn the pool and never pushes out the node's own or its rooms' events.
//!
//! # Replays and forks
//!
//! Deduplication does not depend on a cache: the `(room, sender, seq)` index
//! keeps an entry (a tombstone) even after its event is evicted, so an event
//! seen once is never stored twice, and a *different* event reusing an
//! existing `(room, sender, seq)` is a fork: recorded as evidence
//! ([`ForkEvidence`]), counted, and never replaces the first.

mod borrowed;
pub mod engine;
pub mod kv;
pub mod memory;
pub mod redb_backend;
mod types;

#[cfg(test)]
mod conformance;

use std::ops::Bound;

use zeroize::Zeroizing;

use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, RoomId};

pub use engine::Engine;
pub use memory::{MemKv, MemoryStore};
pub use redb_backend::{RedbKv, RedbStore};
pub use types::*;

/// Version of the on-disk schema this build writes (`protocol-spec/store.md`,
/// "Schema"). Older versions are migrated on open; newer ones are refused.
pub const SCHEMA_VERSION: u64 = 1;

/// Default total size budget for stored events: 256 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

/// Smallest budget a store accepts (must hold a few maximum-size events).
pub const MIN_BUDGET_BYTES: u64 = 64 * 1024;

/// Default share of the budget for strangers' events: one quarter.
pub const DEFAULT_STRANGER_POOL_DIVISOR: u64 = 4;

/// Default occupancy budget of one intake link in the stranger pool: one
/// quarter of the pool.
pub const DEFAULT_LINK_SHARE_DIVISOR: u64 = 4;

/// Default occupancy budget of one signing key in the stranger pool: 1/16 of
/// the pool.
pub const DEFAULT_KEY_SHARE_DIVISOR: u64 = 16;

/// Bytes charged per stored event on top of its encoding, for its index rows.
pub const PER_EVENT_OVERHEAD_BYTES: u64 = 256;

/// Most fork evidence records kept; later forks are only counted.
pub const MAX_FORK_EVIDENCE: u64 = 4096;

/// Most events [`EventStore::expire`] drops per call (bounds one transaction).
pub const MAX_EXPIRE_BATCH: usize = 4096;

/// Largest key for opaque blobs (uplink bundles, key material, metadata).
pub const MAX_BLOB_KEY_BYTES: usize = 128;

/// Largest value stored under an opaque key (key material, bundle
/// compositions, metadata, contact cards).
pub const MAX_BLOB_VALUE_BYTES: usize = 1024 * 1024;

/// Largest homeserver sync token, in bytes.
pub const MAX_SINCE_TOKEN_BYTES: usize = 1024;

/// Largest result any list method returns in one call, whatever `limit` the
/// caller passes (callers page with the last key they saw).
pub const MAX_LIST_LIMIT: usize = 65_536;

/// Secret entries read per page when listing their names
/// ([`SecretStore::secret_keys_page`]): the values of a page (a decrypted
/// message each, at most) are read and dropped together.
pub const SECRET_KEYS_PAGE: usize = 64;

/// The storage interface of the protocol core: the union of the role
/// traits below, implemented for every type that implements all of them.
/// Synchronous; every role trait is object-safe.
///
/// Mutating methods take `&mut self` and only stage writes; reads see staged
/// writes. Nothing is durable until [`EventStore::commit`] returns `Ok`.
/// Every method takes its time as a parameter (`now_ms`) when it needs one.
///
/// Code that needs one role only bounds by it: the sans-IO
/// [`crate::proto::Node`] needs [`EventStore`] alone. A caller holding a
/// concrete store imports the role traits whose methods it calls (or
/// `use crate::store::roles::*`).
pub trait Store:
    EventStore + DeliveryStore + SyncStore + ContactStore + SecretStore + MetaStore
{
}

impl<S> Store for S where
    S: EventStore + DeliveryStore + SyncStore + ContactStore + SecretStore + MetaStore + ?Sized
{
}

/// The role traits, to import all at once (`use crate::store::roles::*`).
pub mod roles {
    pub use super::{
        ContactStore, DeliveryStore, EventStore, MetaStore, SecretStore, Store, SyncStore,
    };
}

/// Events and the commit bookkeeping: what the sans-IO
/// [`crate::proto::Node`] needs (`protocol-spec/store.md`, §1 "The commit
/// contract" and §3 "Deduplication, replays and forks").
///
/// Events passed to [`EventStore::insert_event`] must already be verified
/// ([`Event::decode`] / [`Event::verify`]): the store trusts signatures.
pub trait EventStore {
    /// Makes every staged write durable (one group commit). Only after this
    /// returns `Ok` may the driver acknowledge or relay the batch's events.
    fn commit(&mut self) -> Result<(), StoreError>;

    /// Discards every staged write, as a crash before commit would.
    fn rollback(&mut self) -> Result<(), StoreError>;

    /// Whether writes are staged and not yet committed.
    fn has_pending(&self) -> bool;

    /// Stores a verified event. Deduplicates by ID and by
    /// `(room, sender, seq)` (also against evicted events); records a
    /// different event at an existing `(room, sender, seq)` as a fork; rejects
    /// expired events and events over their intake budget; evicts lower
    /// priority events to make room. `meta.received_ms` is "now".
    fn insert_event(
        &mut self,
        event: &Event,
        meta: &InsertMeta,
    ) -> Result<InsertOutcome, StoreError>;

    /// The canonical bytes of a stored event.
    fn get_event(&self, id: &EventId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether the event's bytes are held (false for evicted events).
    fn has_event(&self, id: &EventId) -> Result<bool, StoreError>;

    /// Whether the event was ever accepted here (held or evicted tombstone).
    fn seen_event(&self, event: &Event) -> Result<bool, StoreError>;

    /// The store's bookkeeping for a held event.
    fn event_info(&self, id: &EventId) -> Result<Option<EventInfo>, StoreError>;

    /// Changes a held event's priority class (for example when the node
    /// joins the room, or an own event is delivered). Returns false if the
    /// event is not held.
    fn set_priority(&mut self, id: &EventId, priority: Priority) -> Result<bool, StoreError>;

    /// Re-classes a room's held events when the node joins the room
    /// (`OwnRoom`) or leaves it (`Stranger`); the node's own undelivered
    /// events are never re-classed. Demoted events then obey the stranger
    /// pool cap (oldest evicted). Returns how many events changed class.
    fn set_room_priority(&mut self, room: &RoomId, priority: Priority) -> Result<u64, StoreError>;

    /// A room's items for reconciliation, ascending by `(origin_ts_ms, id)`,
    /// within `range`, at most `limit` (capped at [`MAX_LIST_LIMIT`]).
    fn room_items(
        &self,
        room: &RoomId,
        range: (Bound<ItemKey>, Bound<ItemKey>),
        limit: usize,
    ) -> Result<Vec<ItemKey>, StoreError>;

    /// [`EventStore::room_items`], each with whether the event is held in
    /// the strangers' class (`store.md` §4): what a member leaves out of
    /// what it offers an own room's members (`wire.md`, "Quarantine").
    fn room_items_classed(
        &self,
        room: &RoomId,
        range: (Bound<ItemKey>, Bound<ItemKey>),
        limit: usize,
    ) -> Result<Vec<(ItemKey, bool)>, StoreError>;

    /// Every room with at least one held event (own and carried), ascending.
    fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError>;

    /// Events of `room` held (0 for a room not held).
    fn room_events(&self, room: &RoomId) -> Result<u64, StoreError> {
        Ok(self
            .rooms()?
            .into_iter()
            .find(|r| r.room == *room)
            .map_or(0, |r| r.events))
    }

    /// A counter that moves whenever the set of held events may have
    /// changed (an insert, an eviction, an expiry, a rollback or a crash),
    /// so a caller can keep views derived from [`EventStore::rooms`] and
    /// [`EventStore::room_items`] and drop them when it moves. It is not
    /// persisted and only compares within one open store. `None` (the
    /// default) means the store does not track changes: do not cache.
    fn event_set_version(&self) -> Option<u64> {
        None
    }

    /// The events evicted since the last call, with their rooms, at most
    /// [`MAX_EVICTED_RECORDS`] (`None`: more were evicted than recorded, or
    /// the store does not record them: treat every room as changed). Kept
    /// in memory only; an eviction rolled back is still reported. Callers
    /// holding state derived from stored events (the rooms layer's cached
    /// sessions) drop what rested on an evicted event.
    fn take_evicted(&mut self) -> Option<Vec<(RoomId, EventId)>> {
        None
    }

    /// Holds strangers' events of `room` to the stranger pool only, not to
    /// the per-source and per-key shares (`exempt`), or again to both: a
    /// room whose invite of this device waits for the history it cites
    /// (`protocol-spec/store.md`, "The stranger pool and intake budgets").
    /// In memory only; at most [`MAX_SHARE_EXEMPT_ROOMS`] rooms (more are
    /// ignored).
    fn set_share_exempt(&mut self, room: RoomId, exempt: bool) {
        let _ = (room, exempt);
    }

    /// The room's DAG heads among held events: events no held event cites.
    fn heads(&self, room: &RoomId) -> Result<Vec<EventId>, StoreError>;

    /// Highest sequence number accepted for `(room, sender)`; 0 if none.
    fn high_water(&self, room: &RoomId, sender: &DeviceId) -> Result<u64, StoreError>;

    /// Missing sequence ranges below the high-water mark, ascending, at most
    /// `limit` ranges.
    fn gaps(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        limit: usize,
    ) -> Result<Vec<SeqGap>, StoreError>;

    /// The missing range directly below `seq` (ending at `seq - 1`), if
    /// `seq - 1` was never accepted: what a newly stored event at `seq`
    /// opened. Costs two index lookups, not a scan of the sender's
    /// sequence numbers like [`EventStore::gaps`].
    fn gap_below(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        seq: u64,
    ) -> Result<Option<SeqGap>, StoreError>;

    /// The event accepted at `(room, sender, seq)`, held or evicted.
    fn event_at_seq(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        seq: u64,
    ) -> Result<Option<EventId>, StoreError>;

    /// Recorded fork evidence, oldest key first, at most `limit`.
    fn forks(&self, limit: usize) -> Result<Vec<ForkEvidence>, StoreError>;

    /// Recorded fork evidence of one room, by (sender, seq, conflicting
    /// ID), at most `limit`.
    fn room_forks(&self, room: &RoomId, limit: usize) -> Result<Vec<ForkEvidence>, StoreError>;

    /// Drops every event whose signed expiry (plus grace) is before `now_ms`,
    /// at most [`MAX_EXPIRE_BATCH`] per call. Returns how many were dropped.
    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError>;

    /// Drops a held event of the strangers' class (a carried copy) that
    /// every member of its room holds (`protocol-spec/rooms.md` §9,
    /// "Carried copies"), keeping its tombstone (§3): it is never taken
    /// again as a stranger's. Returns whether it was dropped (false if not
    /// held or not in the strangers' class).
    fn drop_carried(&mut self, id: &EventId) -> Result<bool, StoreError>;
}

/// Delivery queues per destination: queued, offered, acknowledged
/// (`protocol-spec/store.md`, §2 "Tables").
pub trait DeliveryStore {
    /// Queues a held event for `dest`. Inserting already queues every event
    /// for [`Destination::Homeserver`] (unless it came from there) and own
    /// undelivered events for [`Destination::Mesh`].
    fn enqueue(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError>;

    /// Records that the event was offered to `dest` at `now_ms`.
    fn mark_offered(
        &mut self,
        dest: &Destination,
        id: &EventId,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Records that `dest` acknowledged the event: it leaves `dest`'s queue,
    /// and an own undelivered event becomes [`Priority::OwnRoom`].
    fn mark_acked(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError>;

    /// The delivery state of an event for `dest`.
    fn delivery_state(
        &self,
        dest: &Destination,
        id: &EventId,
    ) -> Result<Option<DeliveryState>, StoreError>;

    /// Events queued and not acknowledged for `dest`, ascending by ID,
    /// strictly after `after`, at most `limit`.
    fn undelivered(
        &self,
        dest: &Destination,
        after: Option<&EventId>,
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError>;

    /// How many events are queued for `dest`, counting at most `cap`: read
    /// [`QUEUE_COUNT_PAGE`] IDs at a time, so a count costs no memory
    /// whatever the queue's length (`status` and metrics ask often).
    fn queue_len(&self, dest: &Destination, cap: usize) -> Result<usize, StoreError> {
        let mut n = 0usize;
        let mut after = None;
        while n < cap {
            let want = QUEUE_COUNT_PAGE.min(cap - n);
            let page = self.undelivered(dest, after.as_ref(), want)?;
            n += page.len();
            if page.len() < want {
                break;
            }
            after = page.last().copied();
        }
        Ok(n)
    }
}

/// Most evictions [`EventStore::take_evicted`] records between two calls.
pub const MAX_EVICTED_RECORDS: usize = 4096;

/// Rooms at most whose strangers' events skip the per-source and per-key
/// shares ([`EventStore::set_share_exempt`]).
pub const MAX_SHARE_EXEMPT_ROOMS: usize = 16;

/// IDs [`DeliveryStore::queue_len`] reads per page.
pub const QUEUE_COUNT_PAGE: usize = 1024;

/// Homeserver sync state: the `/sync` token and uplink bundle compositions
/// (`protocol-spec/store.md`, §2 "Tables").
pub trait SyncStore {
    /// The homeserver `/sync` `since` token.
    fn since_token(&self) -> Result<Option<String>, StoreError>;

    /// Sets (or clears) the `/sync` `since` token.
    fn set_since_token(&mut self, token: Option<&str>) -> Result<(), StoreError>;

    /// Stores the composition of an uplink bundle (opaque bytes) under `key`.
    fn put_uplink(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Reads an uplink bundle composition.
    fn get_uplink(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes an uplink bundle composition. Returns whether it existed.
    fn remove_uplink(&mut self, key: &[u8]) -> Result<bool, StoreError>;

    /// Uplink keys, ascending, at most `limit`.
    fn uplink_keys(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// The contact book (`protocol-spec/store.md`, §2 "Tables").
pub trait ContactStore {
    /// Stores a contact card (encoded bytes) for `device`.
    fn put_contact(&mut self, device: &DeviceId, card: &[u8]) -> Result<(), StoreError>;

    /// Reads a contact card.
    fn get_contact(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes a contact. Returns whether it existed.
    fn remove_contact(&mut self, device: &DeviceId) -> Result<bool, StoreError>;

    /// All contacts, ascending by device ID.
    fn contacts(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError>;
}

/// Secret key material in its own table (`protocol-spec/store.md`, §2
/// "Tables").
pub trait SecretStore {
    /// Stores secret key material (ratchet states, prekeys) under `key`.
    fn put_secret(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Reads secret key material; the copy is zeroized on drop.
    fn get_secret(&self, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// Removes secret key material. Returns whether it existed.
    fn remove_secret(&mut self, key: &[u8]) -> Result<bool, StoreError>;

    /// A page of secret keys (names, not values) starting with `prefix`,
    /// ascending, after `after` if given: at most `limit` (capped at
    /// [`SECRET_KEYS_PAGE`]), so a page reads at most that many values
    /// whatever the table holds.
    fn secret_keys_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Secret keys (names, not values) starting with `prefix`, ascending,
    /// at most [`MAX_LIST_LIMIT`]: read a page at a time, so the memory is
    /// the names' (plaintexts of a whole room's history are never read at
    /// once).
    fn secret_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            let page =
                self.secret_keys_page(prefix, out.last().map(Vec::as_slice), SECRET_KEYS_PAGE)?;
            let last = page.len() < SECRET_KEYS_PAGE;
            out.extend(page);
            if last || out.len() >= MAX_LIST_LIMIT {
                out.truncate(MAX_LIST_LIMIT);
                return Ok(out);
            }
        }
    }
}

/// Application metadata and reporting: usage counters and the retention
/// configuration (`protocol-spec/store.md`, §4 "Retention").
pub trait MetaStore {
    /// Stores an application metadata value (the store's own schema version
    /// lives elsewhere and cannot be overwritten here).
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Reads an application metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// What each priority class holds (a part of [`Self::stats`]).
    fn occupancy(&self) -> Result<Occupancy, StoreError>;

    /// Usage counters: events, bytes per class, evictions by reason, forks.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// The retention configuration in force.
    fn config(&self) -> &StoreConfig;
}
