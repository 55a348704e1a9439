//! The ordered key-value layer under [`Engine`](super::Engine).
//!
//! A backend offers named tables of byte keys to byte values, ordered
//! bytewise, with one pending write set that reads see and that
//! [`Kv::commit`] makes durable or [`Kv::rollback`] discards. All store
//! semantics (deduplication, forks, retention) live once in the engine, so
//! the in-memory and redb backends cannot drift apart.

use std::ops::Bound;

use super::StoreError;

/// The tables of the store (`protocol-spec/store.md`, "Tables").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `schema_version` and other store-internal values.
    System,
    /// insertion serial (BE) → canonical event bytes (append order packs
    /// pages densely).
    Events,
    /// event ID → CBOR bookkeeping (class, source, times, room, sender, seq).
    EventMeta,
    /// room ‖ origin_ts (BE) ‖ event ID → empty: reconciliation order.
    RoomItems,
    /// room → CBOR [events, bytes].
    Rooms,
    /// room ‖ sender ‖ seq (BE) → event ID ‖ held flag: dedup, forks, gaps.
    Seqs,
    /// room ‖ sender → CBOR [high_water, floor, keep]: sequence marks.
    HighWater,
    /// room ‖ event ID → empty: DAG heads.
    Heads,
    /// room ‖ cited ID ‖ citing ID → empty: DAG predecessor index.
    Cited,
    /// class ‖ serial (BE) → event ID: eviction order.
    ByClass,
    /// expires (BE) ‖ event ID → room ‖ sender ‖ seq: expiry order (kept
    /// for evicted events too, so their tombstones are pruned at expiry).
    ByExpiry,
    /// room ‖ sender ‖ seq (BE) ‖ conflicting ID → conflicting bytes.
    Forks,
    /// destination ‖ event ID → CBOR [offers, last_ms]: queued, not acked.
    Outbox,
    /// destination ‖ event ID → empty: acknowledged.
    Delivered,
    /// event ID ‖ destination → empty: reverse index for cleanup.
    DeliveryById,
    /// source key → bytes held in the stranger pool.
    IntakeLink,
    /// sender → bytes held in the stranger pool.
    IntakeKey,
    /// counter name → u64 (BE).
    Counters,
    /// device ID → contact card bytes.
    Contacts,
    /// key → secret key material.
    Secrets,
    /// key → application metadata (sync cursor, ...).
    AppMeta,
    /// key → uplink bundle composition.
    Uplink,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 22] = [
        Table::System,
        Table::Events,
        Table::EventMeta,
        Table::RoomItems,
        Table::Rooms,
        Table::Seqs,
        Table::HighWater,
        Table::Heads,
        Table::Cited,
        Table::ByClass,
        Table::ByExpiry,
        Table::Forks,
        Table::Outbox,
        Table::Delivered,
        Table::DeliveryById,
        Table::IntakeLink,
        Table::IntakeKey,
        Table::Counters,
        Table::Contacts,
        Table::Secrets,
        Table::AppMeta,
        Table::Uplink,
    ];

    /// The table's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Table::System => "system",
            Table::Events => "events",
            Table::EventMeta => "event_meta",
            Table::RoomItems => "room_items",
            Table::Rooms => "rooms",
            Table::Seqs => "seqs",
            Table::HighWater => "high_water",
            Table::Heads => "heads",
            Table::Cited => "cited",
            Table::ByClass => "by_class",
            Table::ByExpiry => "by_expiry",
            Table::Forks => "forks",
            Table::Outbox => "outbox",
            Table::Delivered => "delivered",
            Table::DeliveryById => "delivery_by_id",
            Table::IntakeLink => "intake_link",
            Table::IntakeKey => "intake_key",
            Table::Counters => "counters",
            Table::Contacts => "contacts",
            Table::Secrets => "secrets",
            Table::AppMeta => "app_meta",
            Table::Uplink => "uplink",
        }
    }
}

/// A key-value pair read from a table.
pub type Pair = (Vec<u8>, Vec<u8>);

/// An ordered, transactional key-value backend.
pub trait Kv {
    /// Reads a value (seeing staged writes).
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads a value that starts with a big-endian `u64` (a counter)
    /// without copying it out; `None` if absent or shorter.
    fn get_u64(&self, t: Table, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.get(t, key)?.as_deref().and_then(be_u64))
    }

    /// Stages a write.
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Stages a removal; returns whether the key existed.
    fn remove(&mut self, t: Table, key: &[u8]) -> Result<bool, StoreError>;

    /// Up to `limit` pairs within the bounds, ascending (or descending if
    /// `rev`), seeing staged writes.
    fn range(
        &self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: usize,
        rev: bool,
    ) -> Result<Vec<Pair>, StoreError>;

    /// Makes staged writes durable.
    fn commit(&mut self) -> Result<(), StoreError>;

    /// Discards staged writes.
    fn rollback(&mut self) -> Result<(), StoreError>;

    /// Whether writes are staged.
    fn has_pending(&self) -> bool;
}

/// The big-endian `u64` that `b` starts with, if it is that long.
pub fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` if there is none (prefix all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Checks a backend's [`Kv::get_u64`] against [`Kv::get`]: staged and
/// committed, for values of 8 bytes, longer and shorter, and none.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn check_get_u64<K: Kv>(kv: &mut K) {
    let rows: [(&[u8], &[u8]); 3] = [
        (b"eight", &7u64.to_be_bytes()),
        (b"longer", &[0, 0, 0, 0, 0, 0, 1, 2, 9, 9]),
        (b"short", &[1, 2, 3]),
    ];
    for (k, v) in rows {
        kv.put(Table::Counters, k, v).unwrap();
    }
    for _ in 0..2 {
        for key in [&b"eight"[..], b"longer", b"short", b"absent"] {
            let copied = kv.get(Table::Counters, key).unwrap();
            let read = kv.get_u64(Table::Counters, key).unwrap();
            assert_eq!(read, copied.as_deref().and_then(be_u64), "{key:?}");
        }
        assert_eq!(kv.get_u64(Table::Counters, b"eight").unwrap(), Some(7));
        assert_eq!(kv.get_u64(Table::Counters, b"longer").unwrap(), Some(258));
        assert_eq!(kv.get_u64(Table::Counters, b"short").unwrap(), None);
        kv.commit().unwrap();
    }
}
