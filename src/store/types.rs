//! Value types of the [`Store`](super::Store) interface.

use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use super::{
    DEFAULT_BUDGET_BYTES, DEFAULT_KEY_SHARE_DIVISOR, DEFAULT_LINK_SHARE_DIVISOR,
    DEFAULT_STRANGER_POOL_DIVISOR, MIN_BUDGET_BYTES,
};
use crate::cbor::CborError;
use crate::crypto::keys::DeviceId;
use crate::event::{EventId, RoomId};

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store file could not be opened, created or secured.
    #[error("store file {path}: {source}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store file is corrupted or truncated.
    #[error(
        "store file {path} is corrupted or truncated: {detail}; move it aside (the node then starts empty) or restore a backup"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What the backend reported.
        detail: String,
    },
    /// The store file was written by a newer meshrelay.
    #[error(
        "store file {path} was written by a newer meshrelay (schema version {found}; this build reads up to {supported}); it was left untouched: upgrade meshrelay again (downgrades are refused)"
    )]
    SchemaTooNew {
        /// The store file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Newest version this build reads.
        supported: u64,
    },
    /// Another process holds the store open.
    #[error("store file {path} is in use by another process (is a meshrelay daemon running?)")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// A stored value failed to decode: the file is inconsistent.
    #[error("stored {what} is malformed: {source}")]
    Encoding {
        /// Which record.
        what: &'static str,
        /// The decoding error.
        source: CborError,
    },
    /// A key or value exceeds its limit.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Which argument.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The retention configuration is invalid.
    #[error("invalid store configuration: {0}")]
    Config(&'static str),
    /// Any other backend failure.
    #[error("store backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether the file was written by a newer meshrelay (a downgrade,
    /// refused without touching the file; exit code 2 in the CLI).
    pub fn is_too_new(&self) -> bool {
        matches!(self, StoreError::SchemaTooNew { .. })
    }

    /// Whether a write failed for lack of space (`ENOSPC`, `EDQUOT`), or
    /// the backend refuses to go on after such a failure until reopened.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.kind() == std::io::ErrorKind::QuotaExceeded
                    || matches!(source.raw_os_error(), Some(28 | 122))
            }
            StoreError::Backend(detail) => detail.contains("Previous I/O error"),
            _ => false,
        }
    }
}

/// Priority class of a stored event; eviction empties a lower class before
/// touching a higher one (`protocol-spec/store.md`, "Priority classes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The node's own events not yet delivered anywhere (highest).
    OwnUndelivered = 0,
    /// Events of the node's own rooms.
    OwnRoom = 1,
    /// Strangers' events relayed for others (lowest; the stranger pool).
    Stranger = 2,
}

impl Priority {
    /// All classes, highest priority first.
    pub const ALL: [Priority; 3] = [
        Priority::OwnUndelivered,
        Priority::OwnRoom,
        Priority::Stranger,
    ];

    /// Storage tag.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// Parses a storage tag.
    pub fn from_tag(t: u64) -> Option<Self> {
        match t {
            0 => Some(Priority::OwnUndelivered),
            1 => Some(Priority::OwnRoom),
            2 => Some(Priority::Stranger),
            _ => None,
        }
    }

    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Priority::OwnUndelivered => "own_undelivered",
            Priority::OwnRoom => "own_room",
            Priority::Stranger => "stranger",
        }
    }
}

/// What an attacker cannot change cheaply that an event came from: the
/// remote address of a LAN link, or a constant for a BLE neighbourhood
/// (the driver derives 16 bytes, for example a truncated hash of the
/// address; re-exported as `proto::io::SourceKey`). Stranger-pool intake
/// budgets attach to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey(pub [u8; 16]);

impl SourceKey {
    pub(crate) fn key(self) -> [u8; 16] {
        self.0
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Created on this node.
    Local,
    /// Received from the homeserver (so it is present there).
    Homeserver,
    /// Imported from a bundle file.
    Import,
    /// Received over a mesh link or LAN source.
    Link(SourceKey),
}

impl Source {
    pub(crate) fn tag(self) -> u64 {
        match self {
            Source::Local => 0,
            Source::Homeserver => 1,
            Source::Import => 2,
            Source::Link(_) => 3,
        }
    }
}

/// What the driver knows about an event it inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertMeta {
    /// Priority class.
    pub priority: Priority,
    /// Intake source (budgets for strangers' events attach to it).
    pub source: Source,
    /// The receiver's clock when the event arrived (ms since the epoch).
    pub received_ms: u64,
    /// A stranger's event whose sender is a member of a room this node
    /// carries (`protocol-spec/wire.md`, "Carried rooms"): held to the
    /// per-source share and the stranger pool, not to the per-key share.
    pub carried: bool,
}

/// Why an event was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Its signed expiry (plus grace) has passed.
    Expired,
    /// Its origin time is too far ahead of the receiver's clock.
    FromFuture,
    /// The intake link's share of the stranger pool is used up.
    LinkBudget,
    /// The signing key's share of the stranger pool is used up.
    KeyBudget,
    /// The budget is full of events of equal or higher priority.
    Full,
}

/// Evidence of equivocation: two validly signed events at one
/// `(room, sender, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    /// Room.
    pub room: RoomId,
    /// The equivocating sender.
    pub sender: DeviceId,
    /// The reused sequence number.
    pub seq: u64,
    /// The event accepted first (kept).
    pub existing: EventId,
    /// The conflicting event (not stored as an event).
    pub conflicting: EventId,
    /// The conflicting event's bytes, as evidence.
    pub conflicting_bytes: Vec<u8>,
}

/// Result of [`EventStore::insert_event`](super::EventStore::insert_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored (staged until commit).
    Inserted,
    /// Already accepted before (held, or evicted and tombstoned).
    Duplicate,
    /// A different event reuses an accepted `(room, sender, seq)`.
    Fork(Box<ForkEvidence>),
    /// Not stored.
    Rejected(RejectReason),
}

/// The store's bookkeeping for one held event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// Room.
    pub room: RoomId,
    /// Sender.
    pub sender: DeviceId,
    /// Sequence number.
    pub seq: u64,
    /// Signed origin time.
    pub origin_ts_ms: u64,
    /// Signed expiry.
    pub expires_ms: u64,
    /// Priority class.
    pub priority: Priority,
    /// Bytes charged against the budget.
    pub charged_bytes: u64,
    /// When it arrived.
    pub received_ms: u64,
}

/// One reconciliation item: events sort by origin time, then ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemKey {
    /// Signed origin time.
    pub origin_ts_ms: u64,
    /// Event ID.
    pub id: EventId,
}

/// A room the store holds events of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSummary {
    /// Room.
    pub room: RoomId,
    /// Held events.
    pub events: u64,
    /// Bytes charged.
    pub bytes: u64,
}

/// A run of missing sequence numbers, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqGap {
    /// First missing sequence number.
    pub from_seq: u64,
    /// Last missing sequence number.
    pub to_seq: u64,
}

/// A delivery destination whose queue state the store records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// The Matrix homeserver (uplink).
    Homeserver,
    /// The mesh as a whole (any peer acknowledged it).
    Mesh,
    /// One peer device on the mesh.
    Peer([u8; 32]),
}

impl Destination {
    pub(crate) fn key(&self) -> Vec<u8> {
        match self {
            Destination::Homeserver => vec![0],
            Destination::Mesh => vec![1],
            Destination::Peer(p) => {
                let mut v = Vec::with_capacity(33);
                v.push(2);
                v.extend_from_slice(p);
                v
            }
        }
    }

    pub(crate) fn from_key(k: &[u8]) -> Option<(Destination, &[u8])> {
        match k.split_first()? {
            (0, rest) => Some((Destination::Homeserver, rest)),
            (1, rest) => Some((Destination::Mesh, rest)),
            (2, rest) if rest.len() >= 32 => {
                let (p, rest) = rest.split_at(32);
                Some((Destination::Peer(p.try_into().ok()?), rest))
            }
            _ => None,
        }
    }
}

/// Delivery state of an event for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Queued, never offered.
    Queued,
    /// Offered `count` times, last at `last_ms`; not acknowledged.
    Offered {
        /// Offers so far.
        count: u64,
        /// Time of the last offer.
        last_ms: u64,
    },
    /// Acknowledged (for the homeserver: present on the server).
    Acked,
}

/// Retention configuration (`protocol-spec/store.md`, "Retention").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    /// Total bytes charged for events (default 256 MiB).
    pub budget_bytes: u64,
    /// Bytes the stranger pool may hold (default budget / 4).
    pub stranger_pool_bytes: u64,
    /// Bytes one intake link may hold in the stranger pool (default pool / 4).
    pub link_share_bytes: u64,
    /// Bytes one signing key may hold in the stranger pool (default pool / 16).
    pub key_share_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::with_budget(DEFAULT_BUDGET_BYTES)
    }
}

impl StoreConfig {
    /// The default shares for a total budget.
    pub fn with_budget(budget_bytes: u64) -> Self {
        let pool = budget_bytes / DEFAULT_STRANGER_POOL_DIVISOR;
        StoreConfig {
            budget_bytes,
            stranger_pool_bytes: pool,
            link_share_bytes: pool / DEFAULT_LINK_SHARE_DIVISOR,
            key_share_bytes: pool / DEFAULT_KEY_SHARE_DIVISOR,
        }
    }

    /// Checks the configuration is usable.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.budget_bytes < MIN_BUDGET_BYTES {
            return Err(StoreError::Config("budget is below MIN_BUDGET_BYTES"));
        }
        if self.stranger_pool_bytes > self.budget_bytes {
            return Err(StoreError::Config("stranger pool exceeds the budget"));
        }
        if self.link_share_bytes > self.stranger_pool_bytes
            || self.key_share_bytes > self.stranger_pool_bytes
        {
            return Err(StoreError::Config("a share exceeds the stranger pool"));
        }
        Ok(())
    }
}

/// Usage of one priority class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassUsage {
    /// Held events.
    pub events: u64,
    /// Bytes charged.
    pub bytes: u64,
}

/// What each priority class holds: the part of [`StoreStats`] that a
/// caller sampling many stores often needs (six counters, not nineteen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// The node's own undelivered events.
    pub own_undelivered: ClassUsage,
    /// Events of the node's rooms.
    pub own_room: ClassUsage,
    /// Strangers' events.
    pub stranger: ClassUsage,
}

impl Occupancy {
    /// Held events, all classes.
    pub fn events(&self) -> u64 {
        self.own_undelivered.events + self.own_room.events + self.stranger.events
    }

    /// Bytes charged, all classes.
    pub fn bytes(&self) -> u64 {
        self.own_undelivered.bytes + self.own_room.bytes + self.stranger.bytes
    }
}

/// Events evicted, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Evictions {
    /// Signed expiry passed.
    pub expired: u64,
    /// Evicted from the stranger pool to admit a newer stranger event.
    pub stranger_pool: u64,
    /// Evicted to keep the total budget.
    pub budget: u64,
    /// Carried copies dropped because every member of the room holds
    /// them (`protocol-spec/rooms.md` §9, "Carried copies").
    pub delivered: u64,
}

/// Events refused at intake, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rejections {
    /// Already expired.
    pub expired: u64,
    /// From the future.
    pub from_future: u64,
    /// Over the link's pool share.
    pub link_budget: u64,
    /// Over the signing key's pool share.
    pub key_budget: u64,
    /// Budget full of higher-priority events.
    pub full: u64,
}

/// Usage counters (`meshrelay store check --json`, later `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Held events.
    pub events: u64,
    /// Bytes charged for held events.
    pub bytes: u64,
    /// The node's own undelivered events.
    pub own_undelivered: ClassUsage,
    /// Events of the node's rooms.
    pub own_room: ClassUsage,
    /// Strangers' events.
    pub stranger: ClassUsage,
    /// Evictions by reason.
    pub evictions: Evictions,
    /// Intake rejections by reason.
    pub rejections: Rejections,
    /// Forks detected.
    pub forks: u64,
    /// Fork evidence records dropped beyond `MAX_FORK_EVIDENCE`.
    pub forks_unrecorded: u64,
}

/// Integrity and usage report of `meshrelay store check [--json]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// The store file, if any.
    pub path: Option<String>,
    /// File size on disk, if any.
    pub file_bytes: Option<u64>,
    /// Schema version in the file.
    pub schema_version: u64,
    /// Whether every check passed.
    pub ok: bool,
    /// Counters as recorded.
    pub stats: StoreStats,
    /// Retention configuration.
    pub config: StoreConfig,
    /// Rooms held.
    pub rooms: u64,
    /// Held events re-read, decoded and re-hashed.
    pub events_verified: u64,
    /// Problems found (empty when `ok`).
    pub problems: Vec<String>,
}
