//! Store semantics over any [`Kv`] backend: deduplication, forks, DAG heads,
//! sequence gaps, delivery queues and retention (`protocol-spec/store.md`).
//!
//! | module | holds |
//! |---|---|
//! | `mod.rs` | [`Engine`], opening and schema, counters and shared row helpers |
//! | `rows` | the encoded bookkeeping rows: event metadata, sequence marks |
//! | `events` | [`EventStore`]: insert, dedup and forks, DAG heads, gaps, expiry |
//! | `budget` | budgets and eviction: usage charges, stranger pool, tombstones |
//! | `delivery` | [`DeliveryStore`]: queues per destination, offered / acknowledged |
//! | `blobs` | sync token, uplink compositions, contacts, secrets, metadata, stats |
//! | `check` | the integrity check (`meshrelay store check`) |

mod blobs;
mod budget;
mod check;
mod delivery;
mod events;
mod rows;

use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::kv::{Kv, Pair, Table, be_u64, prefix_end};
use super::*;
use crate::cbor::{CborError, Reader, Writer};
use crate::event::{EventId, RoomId};
use rows::MetaRow;

/// Key of the schema version in the `system` table.
pub(crate) const SCHEMA_KEY: &[u8] = b"schema_version";
const SINCE_KEY: &[u8] = b"sync/since";
/// Application metadata keys live under this prefix in `AppMeta`, apart from
/// the store's own entries.
const APP_PREFIX: &[u8] = b"app/";

const C_SERIAL: &[u8] = b"serial";
const C_EVICT_EXPIRED: &[u8] = b"evicted/expired";
const C_EVICT_POOL: &[u8] = b"evicted/stranger_pool";
const C_EVICT_BUDGET: &[u8] = b"evicted/budget";
const C_EVICT_DELIVERED: &[u8] = b"evicted/delivered";
const C_REJ_EXPIRED: &[u8] = b"rejected/expired";
const C_REJ_FUTURE: &[u8] = b"rejected/from_future";
const C_REJ_LINK: &[u8] = b"rejected/link_budget";
const C_REJ_KEY: &[u8] = b"rejected/key_budget";
const C_REJ_FULL: &[u8] = b"rejected/full";
const C_FORKS: &[u8] = b"forks";
const C_FORKS_RECORDED: &[u8] = b"forks/recorded";
const C_FORKS_UNRECORDED: &[u8] = b"forks/unrecorded";
const C_FORKS_DISPLACED: &[u8] = b"forks/displaced";

fn c_events(p: Priority) -> &'static [u8] {
    match p {
        Priority::OwnUndelivered => b"events/own_undelivered",
        Priority::OwnRoom => b"events/own_room",
        Priority::Stranger => b"events/stranger",
    }
}

fn c_bytes(p: Priority) -> &'static [u8] {
    match p {
        Priority::OwnUndelivered => b"bytes/own_undelivered",
        Priority::OwnRoom => b"bytes/own_room",
        Priority::Stranger => b"bytes/stranger",
    }
}

/// Why an event left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvictReason {
    Expired,
    StrangerPool,
    Budget,
    /// A copy with a lower event ID at the same (room, sender, seq)
    /// displaced it (`protocol-spec/rooms.md` §7.1).
    Fork,
    /// Every member of its room holds it (a carried copy,
    /// `protocol-spec/rooms.md` §9).
    Delivered,
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// `seqs` row flag: the event is held.
const SEQ_HELD: u8 = 1;
/// `seqs` row flag: a tombstone (the event was evicted, expired or
/// displaced by a fork's lower copy).
const SEQ_TOMBSTONE: u8 = 0;
/// `seqs` row flag: the tombstone of an event evicted from the strangers'
/// class (`protocol-spec/store.md` §3).
const SEQ_STRANGER_TOMBSTONE: u8 = 2;

/// Whether the `seqs` row `row` lets `id` be stored again in `class`: the
/// tombstone of this very event, evicted from the strangers' class, while
/// it now comes in a higher class (its sender gained standing in an own
/// room after a flood had pushed it out of the strangers' pool). A flood
/// cannot recycle itself (its events stay strangers'), and an event
/// evicted from a higher class stays out.
fn readmits(row: &[u8], id: &EventId, class: Priority) -> bool {
    class != Priority::Stranger
        && row.get(32) == Some(&SEQ_STRANGER_TOMBSTONE)
        && id_from(row) == Some(*id)
}

fn id_from(b: &[u8]) -> Option<EventId> {
    Some(EventId(b.get(..32)?.try_into().ok()?))
}

fn enc(what: &'static str) -> impl Fn(CborError) -> StoreError {
    move |source| StoreError::Encoding { what, source }
}

fn bad(what: &'static str) -> StoreError {
    StoreError::Encoding {
        what,
        source: CborError::WrongType { expected: what },
    }
}

/// The store: its semantics over a key-value backend `K`.
#[derive(Debug)]
pub struct Engine<K> {
    kv: K,
    config: StoreConfig,
    path: Option<PathBuf>,
    /// [`EventStore::event_set_version`]: bumped by every change to the set of
    /// held events (in memory only).
    version: u64,
    /// [`EventStore::take_evicted`]: evictions since the last call (`None`
    /// once more than [`super::MAX_EVICTED_RECORDS`]).
    evicted: Option<Vec<(RoomId, EventId)>>,
    /// [`EventStore::set_share_exempt`]: rooms whose strangers' events are
    /// held to the pool only.
    share_exempt: std::collections::BTreeSet<RoomId>,
}

impl<K: Kv> Engine<K> {
    /// Opens a store over `kv`: checks the configuration and the schema
    /// version, migrating an older one, and commits the result.
    pub fn open_kv(kv: K, config: StoreConfig) -> Result<Self, StoreError> {
        Self::open_kv_at(kv, config, None)
    }

    pub(crate) fn open_kv_at(
        kv: K,
        config: StoreConfig,
        path: Option<&Path>,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        let mut s = Engine {
            kv,
            config,
            path: path.map(Path::to_path_buf),
            version: 0,
            evicted: Some(Vec::new()),
            share_exempt: std::collections::BTreeSet::new(),
        };
        match s.schema_version()? {
            None => {
                s.kv.put(Table::System, SCHEMA_KEY, &be(SCHEMA_VERSION))?;
                s.kv.commit()?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    path: s.path.clone().unwrap_or_default(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(v) => {
                s.migrate(v)?;
                s.kv.commit()?;
            }
        }
        Ok(s)
    }

    pub(crate) fn from_kv_unchecked(kv: K, config: StoreConfig) -> Self {
        Engine {
            kv,
            config,
            path: None,
            version: 0,
            evicted: Some(Vec::new()),
            share_exempt: std::collections::BTreeSet::new(),
        }
    }

    /// The schema version recorded in the store, if any.
    pub fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        match self.kv.get(Table::System, SCHEMA_KEY)? {
            None => Ok(None),
            Some(b) => be_u64(&b).map(Some).ok_or_else(|| bad("schema version")),
        }
    }

    /// Migrates from `from` (older than [`SCHEMA_VERSION`]) in the pending
    /// write set. Version 1 is the first; there is nothing older to convert,
    /// so an older number means a file from a development build: refuse it.
    fn migrate(&mut self, from: u64) -> Result<(), StoreError> {
        Err(StoreError::Corrupt {
            path: self.path.clone().unwrap_or_default(),
            detail: format!(
                "schema version {from} predates the first released schema {SCHEMA_VERSION} and cannot be migrated"
            ),
        })
    }

    /// The backend.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    pub(crate) fn kv_mut(&mut self) -> &mut K {
        // The caller may change anything: views derived from the event set
        // are stale.
        self.version = self.version.wrapping_add(1);
        &mut self.kv
    }

    /// Consumes the store, returning its backend.
    pub fn into_kv(self) -> K {
        self.kv
    }

    // ---- counters -----------------------------------------------------

    fn counter(&self, name: &[u8]) -> Result<u64, StoreError> {
        self.usage(Table::Counters, name)
    }

    fn add(&mut self, name: &[u8], delta: i128) -> Result<u64, StoreError> {
        let v = (i128::from(self.counter(name)?) + delta).clamp(0, i128::from(u64::MAX)) as u64;
        self.kv.put(Table::Counters, name, &be(v))?;
        Ok(v)
    }

    fn usage(&self, t: Table, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.kv.get_u64(t, key)?.unwrap_or(0))
    }

    fn add_usage(&mut self, t: Table, key: &[u8], delta: i128) -> Result<(), StoreError> {
        let v = (i128::from(self.usage(t, key)?) + delta).clamp(0, i128::from(u64::MAX)) as u64;
        if v == 0 {
            self.kv.remove(t, key)?;
        } else {
            self.kv.put(t, key, &be(v))?;
        }
        Ok(())
    }

    fn total_bytes(&self) -> Result<u64, StoreError> {
        let mut t = 0u64;
        for p in Priority::ALL {
            t = t.saturating_add(self.counter(c_bytes(p))?);
        }
        Ok(t)
    }

    fn meta_row(&self, id: &EventId) -> Result<Option<MetaRow>, StoreError> {
        self.kv
            .get(Table::EventMeta, id.as_bytes())?
            .map(|b| MetaRow::decode(&b))
            .transpose()
    }

    fn room_usage(&self, room: &RoomId) -> Result<(u64, u64), StoreError> {
        let Some(b) = self.kv.get(Table::Rooms, room.as_bytes())? else {
            return Ok((0, 0));
        };
        let e = enc("room usage");
        let mut r = Reader::new(&b);
        r.array_of(2, "room usage").map_err(&e)?;
        let v = (r.u64().map_err(&e)?, r.u64().map_err(&e)?);
        r.finish().map_err(&e)?;
        Ok(v)
    }

    fn add_room(&mut self, room: &RoomId, events: i128, bytes: i128) -> Result<(), StoreError> {
        let (e, b) = self.room_usage(room)?;
        let clamp = |v: u64, d: i128| (i128::from(v) + d).clamp(0, i128::from(u64::MAX)) as u64;
        let (e, b) = (clamp(e, events), clamp(b, bytes));
        if e == 0 {
            self.kv.remove(Table::Rooms, room.as_bytes())?;
        } else {
            let mut w = Writer::new();
            w.array(2).u64(e).u64(b);
            self.kv
                .put(Table::Rooms, room.as_bytes(), &w.into_bytes())?;
        }
        Ok(())
    }

    /// Calls `f` with every row of `t`, ascending, `page` rows at a time,
    /// so a full-table walk never holds more than one page in memory.
    fn for_each_page(
        &self,
        t: Table,
        page: usize,
        mut f: impl FnMut(Vec<Pair>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = self.kv.range(
                t,
                after.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
                page,
                false,
            )?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            f(rows)?;
        }
    }

    fn scan_prefix(
        &self,
        t: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        rev: bool,
    ) -> Result<Vec<super::kv::Pair>, StoreError> {
        let end = prefix_end(prefix);
        let hi = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let lo = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Included(prefix),
        };
        self.kv.range(t, lo, hi, limit.min(MAX_LIST_LIMIT), rev)
    }
}
