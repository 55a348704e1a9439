//! Store semantics over any [`Kv`] backend: deduplication, forks, DAG heads,
//! sequence gaps, delivery queues and retention (`protocol-spec/store.md`).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::kv::{Kv, Pair, Table, prefix_end};
use super::*;
use crate::cbor::{CborError, Reader, Writer};
use crate::crypto::keys::DeviceId;
use crate::event::clock::{Timeliness, timeliness};
use crate::event::{Event, EventId, RoomId};
use crate::limits::EXPIRY_GRACE_MS;

const SCHEMA_KEY: &[u8] = b"schema_version";
const SINCE_KEY: &[u8] = b"sync/since";
/// Application metadata keys live under this prefix in `AppMeta`, apart from
/// the store's own entries.
const APP_PREFIX: &[u8] = b"app/";

const C_SERIAL: &[u8] = b"serial";
const C_EVICT_EXPIRED: &[u8] = b"evicted/expired";
const C_EVICT_POOL: &[u8] = b"evicted/stranger_pool";
const C_EVICT_BUDGET: &[u8] = b"evicted/budget";
const C_REJ_EXPIRED: &[u8] = b"rejected/expired";
const C_REJ_FUTURE: &[u8] = b"rejected/from_future";
const C_REJ_LINK: &[u8] = b"rejected/link_budget";
const C_REJ_KEY: &[u8] = b"rejected/key_budget";
const C_REJ_FULL: &[u8] = b"rejected/full";
const C_FORKS: &[u8] = b"forks";
const C_FORKS_RECORDED: &[u8] = b"forks/recorded";
const C_FORKS_UNRECORDED: &[u8] = b"forks/unrecorded";

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

fn read_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
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

/// Sequence marks of one (room, sender).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    /// Highest sequence number accepted.
    high: u64,
    /// Sequence numbers at or below this are not reported as gaps (their
    /// tombstones were pruned at expiry).
    floor: u64,
    /// Keep the mark even when every row is pruned (own and room senders:
    /// the node's own send path resumes from it).
    keep: bool,
}

/// Bookkeeping row of one held event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaRow {
    priority: Priority,
    source: Source,
    received_ms: u64,
    expires_ms: u64,
    origin_ts_ms: u64,
    charged: u64,
    serial: u64,
    room: RoomId,
    sender: [u8; 32],
    seq: u64,
}

impl MetaRow {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        let src_key;
        let src: &[u8] = match &self.source {
            Source::Link(k) => {
                src_key = k.key();
                &src_key
            }
            _ => &[],
        };
        w.array(11)
            .u64(self.priority.tag().into())
            .u64(self.source.tag())
            .bytes(src)
            .u64(self.received_ms)
            .u64(self.expires_ms)
            .u64(self.origin_ts_ms)
            .u64(self.charged)
            .u64(self.serial)
            .bytes(self.room.as_bytes())
            .bytes(&self.sender)
            .u64(self.seq);
        w.into_bytes()
    }

    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        const W: &str = "event metadata";
        let e = enc(W);
        let mut r = Reader::new(b);
        r.array_of(11, W).map_err(&e)?;
        let priority = Priority::from_tag(r.u64().map_err(&e)?).ok_or_else(|| bad(W))?;
        let tag = r.u64().map_err(&e)?;
        let src = r.bytes().map_err(&e)?;
        let source = match tag {
            0 => Source::Local,
            1 => Source::Homeserver,
            2 => Source::Import,
            3 => Source::Link(SourceKey(src.try_into().map_err(|_| bad(W))?)),
            _ => return Err(bad(W)),
        };
        let row = MetaRow {
            priority,
            source,
            received_ms: r.u64().map_err(&e)?,
            expires_ms: r.u64().map_err(&e)?,
            origin_ts_ms: r.u64().map_err(&e)?,
            charged: r.u64().map_err(&e)?,
            serial: r.u64().map_err(&e)?,
            room: RoomId(r.byte_array::<16>(W).map_err(&e)?),
            sender: r.byte_array::<32>(W).map_err(&e)?,
            seq: r.u64().map_err(&e)?,
        };
        r.finish().map_err(&e)?;
        Ok(row)
    }
}

/// The store: its semantics over a key-value backend `K`.
#[derive(Debug)]
pub struct Engine<K> {
    kv: K,
    config: StoreConfig,
    path: Option<PathBuf>,
    /// [`Store::event_set_version`]: bumped by every change to the set of
    /// held events (in memory only).
    version: u64,
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
        }
    }

    /// The schema version recorded in the store, if any.
    pub fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        match self.kv.get(Table::System, SCHEMA_KEY)? {
            None => Ok(None),
            Some(b) => read_be(&b).map(Some).ok_or_else(|| bad("schema version")),
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
        Ok(self
            .kv
            .get(Table::Counters, name)?
            .and_then(|b| read_be(&b))
            .unwrap_or(0))
    }

    fn add(&mut self, name: &[u8], delta: i128) -> Result<u64, StoreError> {
        let v = (i128::from(self.counter(name)?) + delta).clamp(0, i128::from(u64::MAX)) as u64;
        self.kv.put(Table::Counters, name, &be(v))?;
        Ok(v)
    }

    fn usage(&self, t: Table, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.kv.get(t, key)?.and_then(|b| read_be(&b)).unwrap_or(0))
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

    // ---- sequence marks -----------------------------------------------

    fn mark(&self, key: &[u8]) -> Result<Mark, StoreError> {
        let Some(b) = self.kv.get(Table::HighWater, key)? else {
            return Ok(Mark::default());
        };
        let e = enc("high-water mark");
        let mut r = Reader::new(&b);
        r.array_of(3, "high-water mark").map_err(&e)?;
        let m = Mark {
            high: r.u64().map_err(&e)?,
            floor: r.u64().map_err(&e)?,
            keep: r.bool().map_err(&e)?,
        };
        r.finish().map_err(&e)?;
        Ok(m)
    }

    fn put_mark(&mut self, key: &[u8], m: &Mark) -> Result<(), StoreError> {
        let mut w = Writer::new();
        w.array(3).u64(m.high).u64(m.floor).bool(m.keep);
        self.kv.put(Table::HighWater, key, &w.into_bytes())
    }

    /// Removes the `(room, sender, seq)` row of an expired event: it can
    /// never be accepted again (intake rejects expired events), so the
    /// tombstone is no longer needed. Raises the gap floor; drops the mark
    /// of a stranger's (room, sender) once nothing of it remains.
    fn prune_tombstone(&mut self, seq_key: &[u8], id: &EventId) -> Result<(), StoreError> {
        if seq_key.len() != 56 {
            return Err(bad("expiry row"));
        }
        let points_here = self
            .kv
            .get(Table::Seqs, seq_key)?
            .is_some_and(|v| v.get(..32) == Some(id.as_bytes().as_slice()));
        if !points_here {
            return Ok(());
        }
        self.kv.remove(Table::Seqs, seq_key)?;
        let hw_key = &seq_key[..48];
        let seq = read_be(&seq_key[48..]).ok_or_else(|| bad("expiry row"))?;
        let mut mark = self.mark(hw_key)?;
        mark.floor = mark.floor.max(seq);
        let empty = self
            .scan_prefix(Table::Seqs, hw_key, None, 1, false)?
            .is_empty();
        if empty && !mark.keep {
            self.kv.remove(Table::HighWater, hw_key)?;
        } else {
            self.put_mark(hw_key, &mark)?;
        }
        Ok(())
    }

    // ---- eviction -----------------------------------------------------

    /// Removes a held event and its index rows, keeping its `(room, sender,
    /// seq)` tombstone. Returns false if it was not held.
    fn evict(&mut self, id: &EventId, reason: EvictReason) -> Result<bool, StoreError> {
        let Some(row) = self.meta_row(id)? else {
            return Ok(false);
        };
        self.version = self.version.wrapping_add(1);
        let bytes = self.kv.get(Table::Events, &be(row.serial))?;
        let idb = id.as_bytes();
        let room = row.room.as_bytes();
        self.kv.remove(Table::Events, &be(row.serial))?;
        self.kv.remove(Table::EventMeta, idb)?;
        self.kv
            .remove(Table::RoomItems, &cat(&[room, &be(row.origin_ts_ms), idb]))?;
        self.kv.remove(
            Table::ByClass,
            &cat(&[&[row.priority.tag()], &be(row.serial)]),
        )?;
        // The ByExpiry row stays: `expire` prunes the tombstone with it.
        let seq_key = cat(&[room, &row.sender, &be(row.seq)]);
        self.kv.put(Table::Seqs, &seq_key, &cat(&[idb, &[0]]))?;
        // DAG: drop the head row and the citations it made; a cited event
        // nobody else cites becomes a head again if still held.
        self.kv.remove(Table::Heads, &cat(&[room, idb]))?;
        if let Some(prev) = bytes
            .as_deref()
            .and_then(|b| Event::decode_unverified(b).ok())
            .map(|e| e.prev().to_vec())
        {
            for p in prev {
                self.kv
                    .remove(Table::Cited, &cat(&[room, p.as_bytes(), idb]))?;
                let still_cited = !self
                    .scan_prefix(Table::Cited, &cat(&[room, p.as_bytes()]), None, 1, false)?
                    .is_empty();
                if !still_cited && self.kv.get(Table::EventMeta, p.as_bytes())?.is_some() {
                    self.kv
                        .put(Table::Heads, &cat(&[room, p.as_bytes()]), &[])?;
                }
            }
        }
        // Delivery rows for every destination.
        for (k, _) in self.scan_prefix(Table::DeliveryById, idb, None, MAX_LIST_LIMIT, false)? {
            let dest = k.get(32..).unwrap_or_default();
            let dk = cat(&[dest, idb]);
            self.kv.remove(Table::Outbox, &dk)?;
            self.kv.remove(Table::Delivered, &dk)?;
            self.kv.remove(Table::DeliveryById, &k)?;
        }
        self.release_usage(&row)?;
        self.add(
            match reason {
                EvictReason::Expired => C_EVICT_EXPIRED,
                EvictReason::StrangerPool => C_EVICT_POOL,
                EvictReason::Budget => C_EVICT_BUDGET,
            },
            1,
        )?;
        Ok(true)
    }

    fn charge_usage(&mut self, row: &MetaRow) -> Result<(), StoreError> {
        let c = i128::from(row.charged);
        self.add(c_events(row.priority), 1)?;
        self.add(c_bytes(row.priority), c)?;
        self.add_room(&row.room, 1, c)?;
        if row.priority == Priority::Stranger {
            if let Source::Link(k) = row.source {
                self.add_usage(Table::IntakeLink, &k.key(), c)?;
            }
            self.add_usage(Table::IntakeKey, &row.sender, c)?;
        }
        Ok(())
    }

    fn release_usage(&mut self, row: &MetaRow) -> Result<(), StoreError> {
        let c = -i128::from(row.charged);
        self.add(c_events(row.priority), -1)?;
        self.add(c_bytes(row.priority), c)?;
        self.add_room(&row.room, -1, c)?;
        if row.priority == Priority::Stranger {
            if let Source::Link(k) = row.source {
                self.add_usage(Table::IntakeLink, &k.key(), c)?;
            }
            self.add_usage(Table::IntakeKey, &row.sender, c)?;
        }
        Ok(())
    }

    /// The oldest held event of class `p`.
    fn oldest_in(&self, p: Priority) -> Result<Option<EventId>, StoreError> {
        Ok(self
            .scan_prefix(Table::ByClass, &[p.tag()], None, 1, false)?
            .first()
            .and_then(|(_, v)| id_from(v)))
    }

    fn reject(&mut self, r: RejectReason) -> Result<InsertOutcome, StoreError> {
        self.add(
            match r {
                RejectReason::Expired => C_REJ_EXPIRED,
                RejectReason::FromFuture => C_REJ_FUTURE,
                RejectReason::LinkBudget => C_REJ_LINK,
                RejectReason::KeyBudget => C_REJ_KEY,
                RejectReason::Full => C_REJ_FULL,
            },
            1,
        )?;
        Ok(InsertOutcome::Rejected(r))
    }

    /// Makes room for `size` bytes of class `p`; false if only higher
    /// classes could be evicted.
    fn make_room(&mut self, p: Priority, size: u64) -> Result<bool, StoreError> {
        if p == Priority::Stranger {
            while self
                .counter(c_bytes(Priority::Stranger))?
                .saturating_add(size)
                > self.config.stranger_pool_bytes
            {
                match self.oldest_in(Priority::Stranger)? {
                    Some(v) => {
                        self.evict(&v, EvictReason::StrangerPool)?;
                    }
                    None => return Ok(false),
                }
            }
        }
        while self.total_bytes()?.saturating_add(size) > self.config.budget_bytes {
            let mut victim = None;
            for class in Priority::ALL.iter().rev() {
                if *class < p {
                    break;
                }
                if let Some(v) = self.oldest_in(*class)? {
                    victim = Some(v);
                    break;
                }
            }
            match victim {
                Some(v) => {
                    self.evict(&v, EvictReason::Budget)?;
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    fn queue(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError> {
        let dk = cat(&[&dest.key(), id.as_bytes()]);
        if self.kv.get(Table::Delivered, &dk)?.is_some()
            || self.kv.get(Table::Outbox, &dk)?.is_some()
        {
            return Ok(());
        }
        let mut w = Writer::new();
        w.array(2).u64(0).u64(0);
        self.kv.put(Table::Outbox, &dk, &w.into_bytes())?;
        self.kv.put(
            Table::DeliveryById,
            &cat(&[id.as_bytes(), &dest.key()]),
            &[],
        )?;
        Ok(())
    }

    fn check_blob(what: &'static str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if key.len() > MAX_BLOB_KEY_BYTES {
            return Err(StoreError::TooLarge {
                what,
                len: key.len(),
                max: MAX_BLOB_KEY_BYTES,
            });
        }
        if value.len() > MAX_BLOB_VALUE_BYTES {
            return Err(StoreError::TooLarge {
                what,
                len: value.len(),
                max: MAX_BLOB_VALUE_BYTES,
            });
        }
        Ok(())
    }

    /// Re-reads every held event, checks its signature, ID and index rows,
    /// and recounts usage. `path` and `file_bytes` describe the file.
    pub fn check_report(&self) -> Result<CheckReport, StoreError> {
        const PAGE: usize = 256;
        let mut problems = Vec::new();
        let mut verified = 0u64;
        let mut usage = [ClassUsage::default(); 3];
        let mut held = 0u64;
        self.for_each_page(Table::EventMeta, PAGE, |page| {
            for (k, v) in &page {
                held += 1;
                let Some(id) = id_from(k) else {
                    problems.push("event metadata key of wrong length".to_string());
                    continue;
                };
                let row = match MetaRow::decode(v) {
                    Ok(row) => row,
                    Err(e) => {
                        problems.push(format!("event {id}: {e}"));
                        continue;
                    }
                };
                match self.kv.get(Table::Events, &be(row.serial))? {
                    None => problems.push(format!("event {id}: bytes missing")),
                    Some(b) => match Event::decode(&b) {
                        Ok(ev) if ev.id() == id => verified += 1,
                        Ok(_) => problems.push(format!("event {id}: bytes do not hash to the ID")),
                        Err(e) => problems.push(format!("event {id}: {e}")),
                    },
                }
                let u = &mut usage[usize::from(row.priority.tag())];
                u.events += 1;
                u.bytes += row.charged;
                let seq_key = cat(&[row.room.as_bytes(), &row.sender, &be(row.seq)]);
                match self.kv.get(Table::Seqs, &seq_key)? {
                    Some(s) if s.get(..32) == Some(id.as_bytes().as_slice()) => {}
                    _ => problems.push(format!("event {id}: sequence index row missing")),
                }
                let hw = self.mark(&cat(&[row.room.as_bytes(), &row.sender]))?.high;
                if hw < row.seq {
                    problems.push(format!("event {id}: high-water {hw} below seq {}", row.seq));
                }
                let item = cat(&[row.room.as_bytes(), &be(row.origin_ts_ms), k]);
                if self.kv.get(Table::RoomItems, &item)?.is_none() {
                    problems.push(format!("event {id}: room item row missing"));
                }
            }
            Ok(())
        })?;
        // Orphaned event bytes (no metadata row) waste budget invisibly.
        let mut stored = 0u64;
        self.for_each_page(Table::Events, PAGE, |page| {
            stored += page.len() as u64;
            Ok(())
        })?;
        if stored != held {
            problems.push(format!("{stored} event bodies for {held} metadata rows"));
        }
        let stats = self.stats()?;
        for (p, u) in Priority::ALL.iter().zip(usage.iter()) {
            let rec = match p {
                Priority::OwnUndelivered => stats.own_undelivered,
                Priority::OwnRoom => stats.own_room,
                Priority::Stranger => stats.stranger,
            };
            if rec != *u {
                problems.push(format!(
                    "class {}: counters say {} events / {} bytes, found {} / {}",
                    p.name(),
                    rec.events,
                    rec.bytes,
                    u.events,
                    u.bytes
                ));
            }
        }
        let rooms = self.rooms()?.len() as u64;
        Ok(CheckReport {
            path: self.path.as_ref().map(|p| p.display().to_string()),
            file_bytes: self
                .path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()),
            schema_version: self.schema_version()?.unwrap_or(0),
            ok: problems.is_empty(),
            stats,
            config: self.config,
            rooms,
            events_verified: verified,
            problems,
        })
    }
}

impl<K: Kv> Store for Engine<K> {
    fn commit(&mut self) -> Result<(), StoreError> {
        self.kv.commit()
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.version = self.version.wrapping_add(1);
        self.kv.rollback()
    }

    fn has_pending(&self) -> bool {
        self.kv.has_pending()
    }

    fn insert_event(
        &mut self,
        event: &Event,
        meta: &InsertMeta,
    ) -> Result<InsertOutcome, StoreError> {
        let id = event.id();
        let idb = id.as_bytes();
        if self.kv.get(Table::EventMeta, idb)?.is_some() {
            return Ok(InsertOutcome::Duplicate);
        }
        let room = event.room();
        let sender = event.sender();
        let seq_key = cat(&[room.as_bytes(), sender.as_bytes(), &be(event.seq())]);
        if let Some(existing) = self.kv.get(Table::Seqs, &seq_key)? {
            let existing = id_from(&existing).ok_or_else(|| bad("sequence index"))?;
            if existing == id {
                return Ok(InsertOutcome::Duplicate);
            }
            let evidence = ForkEvidence {
                room,
                sender,
                seq: event.seq(),
                existing,
                conflicting: id,
                conflicting_bytes: event.bytes().to_vec(),
            };
            let fk = cat(&[&seq_key, idb]);
            if self.kv.get(Table::Forks, &fk)?.is_none() {
                self.add(C_FORKS, 1)?;
                if self.counter(C_FORKS_RECORDED)? < MAX_FORK_EVIDENCE {
                    self.add(C_FORKS_RECORDED, 1)?;
                    self.kv.put(Table::Forks, &fk, event.bytes())?;
                } else {
                    self.add(C_FORKS_UNRECORDED, 1)?;
                }
            }
            return Ok(InsertOutcome::Fork(Box::new(evidence)));
        }
        match timeliness(event, meta.received_ms) {
            Timeliness::Current => {}
            Timeliness::Expired => return self.reject(RejectReason::Expired),
            Timeliness::FromFuture => return self.reject(RejectReason::FromFuture),
        }
        let size = (event.bytes().len() as u64).saturating_add(PER_EVENT_OVERHEAD_BYTES);
        if meta.priority == Priority::Stranger {
            if let Source::Link(k) = meta.source
                && self
                    .usage(Table::IntakeLink, &k.key())?
                    .saturating_add(size)
                    > self.config.link_share_bytes
            {
                return self.reject(RejectReason::LinkBudget);
            }
            if self
                .usage(Table::IntakeKey, sender.as_bytes())?
                .saturating_add(size)
                > self.config.key_share_bytes
            {
                return self.reject(RejectReason::KeyBudget);
            }
        }
        if !self.make_room(meta.priority, size)? {
            return self.reject(RejectReason::Full);
        }
        let serial = self.add(C_SERIAL, 1)?;
        self.version = self.version.wrapping_add(1);
        let row = MetaRow {
            priority: meta.priority,
            source: meta.source,
            received_ms: meta.received_ms,
            expires_ms: event.expires_ms(),
            origin_ts_ms: event.origin_ts_ms(),
            charged: size,
            serial,
            room,
            sender: *sender.as_bytes(),
            seq: event.seq(),
        };
        let rb = room.as_bytes();
        // Events are keyed by insertion serial: appends fill pages densely,
        // where random IDs as keys would leave them half empty.
        self.kv.put(Table::Events, &be(serial), event.bytes())?;
        self.kv.put(Table::EventMeta, idb, &row.encode())?;
        self.kv.put(
            Table::RoomItems,
            &cat(&[rb, &be(row.origin_ts_ms), idb]),
            &[],
        )?;
        self.kv.put(Table::Seqs, &seq_key, &cat(&[idb, &[1]]))?;
        self.kv.put(
            Table::ByClass,
            &cat(&[&[row.priority.tag()], &be(serial)]),
            idb,
        )?;
        self.kv
            .put(Table::ByExpiry, &cat(&[&be(row.expires_ms), idb]), &seq_key)?;
        let hw_key = cat(&[rb, sender.as_bytes()]);
        let mut mark = self.mark(&hw_key)?;
        mark.high = mark.high.max(event.seq());
        mark.keep |= meta.priority != Priority::Stranger;
        self.put_mark(&hw_key, &mark)?;
        for p in event.prev() {
            self.kv.remove(Table::Heads, &cat(&[rb, p.as_bytes()]))?;
            self.kv
                .put(Table::Cited, &cat(&[rb, p.as_bytes(), idb]), &[])?;
        }
        let cited = !self
            .scan_prefix(Table::Cited, &cat(&[rb, idb]), None, 1, false)?
            .is_empty();
        if !cited {
            self.kv.put(Table::Heads, &cat(&[rb, idb]), &[])?;
        }
        self.charge_usage(&row)?;
        if meta.source == Source::Homeserver {
            let dk = cat(&[&Destination::Homeserver.key(), idb]);
            self.kv.put(Table::Delivered, &dk, &[])?;
            self.kv.put(
                Table::DeliveryById,
                &cat(&[idb, &Destination::Homeserver.key()]),
                &[],
            )?;
        } else {
            self.queue(&Destination::Homeserver, &id)?;
        }
        if meta.priority == Priority::OwnUndelivered {
            self.queue(&Destination::Mesh, &id)?;
        }
        Ok(InsertOutcome::Inserted)
    }

    fn get_event(&self, id: &EventId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.meta_row(id)? {
            Some(row) => self.kv.get(Table::Events, &be(row.serial)),
            None => Ok(None),
        }
    }

    fn has_event(&self, id: &EventId) -> Result<bool, StoreError> {
        Ok(self.kv.get(Table::EventMeta, id.as_bytes())?.is_some())
    }

    fn seen_event(&self, event: &Event) -> Result<bool, StoreError> {
        let k = cat(&[
            event.room().as_bytes(),
            event.sender().as_bytes(),
            &be(event.seq()),
        ]);
        Ok(self
            .kv
            .get(Table::Seqs, &k)?
            .is_some_and(|v| v.get(..32) == Some(event.id().as_bytes().as_slice())))
    }

    fn event_info(&self, id: &EventId) -> Result<Option<EventInfo>, StoreError> {
        let Some(row) = self.meta_row(id)? else {
            return Ok(None);
        };
        Ok(Some(EventInfo {
            room: row.room,
            sender: DeviceId::from_bytes(&row.sender).map_err(|_| bad("event metadata"))?,
            seq: row.seq,
            origin_ts_ms: row.origin_ts_ms,
            expires_ms: row.expires_ms,
            priority: row.priority,
            charged_bytes: row.charged,
            received_ms: row.received_ms,
        }))
    }

    fn set_priority(&mut self, id: &EventId, priority: Priority) -> Result<bool, StoreError> {
        let Some(mut row) = self.meta_row(id)? else {
            return Ok(false);
        };
        if row.priority == priority {
            return Ok(true);
        }
        self.release_usage(&row)?;
        self.kv.remove(
            Table::ByClass,
            &cat(&[&[row.priority.tag()], &be(row.serial)]),
        )?;
        row.priority = priority;
        self.kv.put(
            Table::ByClass,
            &cat(&[&[priority.tag()], &be(row.serial)]),
            id.as_bytes(),
        )?;
        self.kv
            .put(Table::EventMeta, id.as_bytes(), &row.encode())?;
        self.charge_usage(&row)?;
        Ok(true)
    }

    fn set_room_priority(&mut self, room: &RoomId, priority: Priority) -> Result<u64, StoreError> {
        let mut changed = 0;
        let mut lo = Bound::Unbounded;
        loop {
            let page = self.room_items(room, (lo, Bound::Unbounded), 1024)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            for item in &page {
                let Some(row) = self.meta_row(&item.id)? else {
                    continue;
                };
                if row.priority != Priority::OwnUndelivered && row.priority != priority {
                    self.set_priority(&item.id, priority)?;
                    changed += 1;
                }
            }
            lo = Bound::Excluded(last);
        }
        if priority == Priority::Stranger {
            self.make_room(Priority::Stranger, 0)?;
        }
        Ok(changed)
    }

    fn room_items(
        &self,
        room: &RoomId,
        range: (Bound<ItemKey>, Bound<ItemKey>),
        limit: usize,
    ) -> Result<Vec<ItemKey>, StoreError> {
        let rb = room.as_bytes();
        let key = |k: &ItemKey| cat(&[rb, &be(k.origin_ts_ms), k.id.as_bytes()]);
        let end = prefix_end(rb);
        let (lo_k, hi_k);
        let lo = match &range.0 {
            Bound::Included(k) => {
                lo_k = key(k);
                Bound::Included(lo_k.as_slice())
            }
            Bound::Excluded(k) => {
                lo_k = key(k);
                Bound::Excluded(lo_k.as_slice())
            }
            Bound::Unbounded => Bound::Included(rb.as_slice()),
        };
        let hi = match &range.1 {
            Bound::Included(k) => {
                hi_k = key(k);
                Bound::Included(hi_k.as_slice())
            }
            Bound::Excluded(k) => {
                hi_k = key(k);
                Bound::Excluded(hi_k.as_slice())
            }
            Bound::Unbounded => match &end {
                Some(e) => Bound::Excluded(e.as_slice()),
                None => Bound::Unbounded,
            },
        };
        let rows = self
            .kv
            .range(Table::RoomItems, lo, hi, limit.min(MAX_LIST_LIMIT), false)?;
        rows.iter()
            .map(|(k, _)| {
                let ts = k.get(16..24).and_then(read_be);
                let id = k.get(24..).and_then(id_from);
                match (ts, id) {
                    (Some(origin_ts_ms), Some(id)) => Ok(ItemKey { origin_ts_ms, id }),
                    _ => Err(bad("room item")),
                }
            })
            .collect()
    }

    fn event_set_version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let mut out = Vec::new();
        self.for_each_page(Table::Rooms, 1024, |page| {
            for (k, _) in &page {
                let room = RoomId(k.as_slice().try_into().map_err(|_| bad("room"))?);
                let (events, bytes) = self.room_usage(&room)?;
                out.push(RoomSummary {
                    room,
                    events,
                    bytes,
                });
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn heads(&self, room: &RoomId) -> Result<Vec<EventId>, StoreError> {
        self.scan_prefix(Table::Heads, room.as_bytes(), None, MAX_LIST_LIMIT, false)?
            .iter()
            .map(|(k, _)| k.get(16..).and_then(id_from).ok_or_else(|| bad("head")))
            .collect()
    }

    fn high_water(&self, room: &RoomId, sender: &DeviceId) -> Result<u64, StoreError> {
        Ok(self.mark(&cat(&[room.as_bytes(), sender.as_bytes()]))?.high)
    }

    fn gaps(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        limit: usize,
    ) -> Result<Vec<SeqGap>, StoreError> {
        let p = cat(&[room.as_bytes(), sender.as_bytes()]);
        let mark = self.mark(&p)?;
        let mut out = Vec::new();
        let mut expect = mark.floor.saturating_add(1);
        let mut after: Option<Vec<u8>> = Some(cat(&[&p, &be(mark.floor)]));
        let limit = limit.min(MAX_LIST_LIMIT);
        'pages: loop {
            let page = self.scan_prefix(Table::Seqs, &p, after.as_deref(), 1024, false)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, _) in &page {
                let seq = k
                    .get(48..)
                    .and_then(read_be)
                    .ok_or_else(|| bad("sequence"))?;
                if seq > expect {
                    if out.len() >= limit {
                        break 'pages;
                    }
                    out.push(SeqGap {
                        from_seq: expect,
                        to_seq: seq - 1,
                    });
                }
                expect = seq.saturating_add(1);
            }
        }
        Ok(out)
    }

    fn event_at_seq(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        seq: u64,
    ) -> Result<Option<EventId>, StoreError> {
        let k = cat(&[room.as_bytes(), sender.as_bytes(), &be(seq)]);
        Ok(self.kv.get(Table::Seqs, &k)?.and_then(|v| id_from(&v)))
    }

    fn forks(&self, limit: usize) -> Result<Vec<ForkEvidence>, StoreError> {
        let rows = self.kv.range(
            Table::Forks,
            Bound::Unbounded,
            Bound::Unbounded,
            limit.min(MAX_LIST_LIMIT),
            false,
        )?;
        rows.into_iter()
            .map(|(k, v)| {
                let room = RoomId(
                    k.get(..16)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| bad("fork"))?,
                );
                let sender: [u8; 32] = k
                    .get(16..48)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("fork"))?;
                let sender = DeviceId::from_bytes(&sender).map_err(|_| bad("fork"))?;
                let seq = k.get(48..56).and_then(read_be).ok_or_else(|| bad("fork"))?;
                let conflicting = k.get(56..).and_then(id_from).ok_or_else(|| bad("fork"))?;
                let existing = self
                    .event_at_seq(&room, &sender, seq)?
                    .ok_or_else(|| bad("fork"))?;
                Ok(ForkEvidence {
                    room,
                    sender,
                    seq,
                    existing,
                    conflicting,
                    conflicting_bytes: v,
                })
            })
            .collect()
    }

    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        // Expired once now > expires + grace, i.e. expires < now - grace.
        let Some(cutoff) = now_ms.checked_sub(EXPIRY_GRACE_MS) else {
            return Ok(0);
        };
        let hi = be(cutoff);
        let rows = self.kv.range(
            Table::ByExpiry,
            Bound::Unbounded,
            Bound::Excluded(&hi),
            MAX_EXPIRE_BATCH,
            false,
        )?;
        let mut n = 0;
        for (k, v) in rows {
            let id = k
                .get(8..)
                .and_then(id_from)
                .ok_or_else(|| bad("expiry row"))?;
            if self.evict(&id, EvictReason::Expired)? {
                n += 1;
            }
            self.prune_tombstone(&v, &id)?;
            self.kv.remove(Table::ByExpiry, &k)?;
        }
        Ok(n)
    }

    fn enqueue(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError> {
        if !self.has_event(id)? {
            return Ok(());
        }
        self.queue(dest, id)
    }

    fn mark_offered(
        &mut self,
        dest: &Destination,
        id: &EventId,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let count = match self.delivery_state(dest, id)? {
            Some(DeliveryState::Offered { count, .. }) => count,
            Some(DeliveryState::Queued) => 0,
            // Not queued for this destination, or already acknowledged.
            Some(DeliveryState::Acked) | None => return Ok(()),
        };
        let mut w = Writer::new();
        w.array(2).u64(count.saturating_add(1)).u64(now_ms);
        let dk = cat(&[&dest.key(), id.as_bytes()]);
        self.kv.put(Table::Outbox, &dk, &w.into_bytes())
    }

    fn mark_acked(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError> {
        if !self.has_event(id)? {
            return Ok(());
        }
        let dk = cat(&[&dest.key(), id.as_bytes()]);
        self.kv.remove(Table::Outbox, &dk)?;
        self.kv.put(Table::Delivered, &dk, &[])?;
        self.kv.put(
            Table::DeliveryById,
            &cat(&[id.as_bytes(), &dest.key()]),
            &[],
        )?;
        if self
            .meta_row(id)?
            .is_some_and(|r| r.priority == Priority::OwnUndelivered)
        {
            self.set_priority(id, Priority::OwnRoom)?;
        }
        Ok(())
    }

    fn delivery_state(
        &self,
        dest: &Destination,
        id: &EventId,
    ) -> Result<Option<DeliveryState>, StoreError> {
        let dk = cat(&[&dest.key(), id.as_bytes()]);
        if self.kv.get(Table::Delivered, &dk)?.is_some() {
            return Ok(Some(DeliveryState::Acked));
        }
        let Some(v) = self.kv.get(Table::Outbox, &dk)? else {
            return Ok(None);
        };
        let e = enc("queue entry");
        let mut r = Reader::new(&v);
        r.array_of(2, "queue entry").map_err(&e)?;
        let count = r.u64().map_err(&e)?;
        let last_ms = r.u64().map_err(&e)?;
        r.finish().map_err(&e)?;
        Ok(Some(if count == 0 {
            DeliveryState::Queued
        } else {
            DeliveryState::Offered { count, last_ms }
        }))
    }

    fn undelivered(
        &self,
        dest: &Destination,
        after: Option<&EventId>,
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        let dkey = dest.key();
        let after_k = after.map(|a| cat(&[&dkey, a.as_bytes()]));
        self.scan_prefix(Table::Outbox, &dkey, after_k.as_deref(), limit, false)?
            .iter()
            .map(|(k, _)| {
                Destination::from_key(k)
                    .and_then(|(_, rest)| id_from(rest))
                    .ok_or_else(|| bad("queue entry"))
            })
            .collect()
    }

    fn since_token(&self) -> Result<Option<String>, StoreError> {
        match self.kv.get(Table::AppMeta, SINCE_KEY)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Encoding {
                    what: "sync token",
                    source: CborError::InvalidUtf8,
                }),
        }
    }

    fn set_since_token(&mut self, token: Option<&str>) -> Result<(), StoreError> {
        match token {
            Some(t) => {
                if t.len() > MAX_SINCE_TOKEN_BYTES {
                    return Err(StoreError::TooLarge {
                        what: "sync token",
                        len: t.len(),
                        max: MAX_SINCE_TOKEN_BYTES,
                    });
                }
                self.kv.put(Table::AppMeta, SINCE_KEY, t.as_bytes())
            }
            None => self.kv.remove(Table::AppMeta, SINCE_KEY).map(|_| ()),
        }
    }

    fn put_uplink(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Self::check_blob("uplink bundle", key, value)?;
        self.kv.put(Table::Uplink, key, value)
    }

    fn get_uplink(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Table::Uplink, key)
    }

    fn remove_uplink(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        self.kv.remove(Table::Uplink, key)
    }

    fn uplink_keys(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .range(
                Table::Uplink,
                Bound::Unbounded,
                Bound::Unbounded,
                limit.min(MAX_LIST_LIMIT),
                false,
            )?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn put_contact(&mut self, device: &DeviceId, card: &[u8]) -> Result<(), StoreError> {
        Self::check_blob("contact card", device.as_bytes(), card)?;
        self.kv.put(Table::Contacts, device.as_bytes(), card)
    }

    fn get_contact(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Table::Contacts, device.as_bytes())
    }

    fn remove_contact(&mut self, device: &DeviceId) -> Result<bool, StoreError> {
        self.kv.remove(Table::Contacts, device.as_bytes())
    }

    fn contacts(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_page(Table::Contacts, 1024, |page| {
            for (k, v) in page {
                let b: [u8; 32] = k.as_slice().try_into().map_err(|_| bad("contact"))?;
                out.push((DeviceId::from_bytes(&b).map_err(|_| bad("contact"))?, v));
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn put_secret(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Self::check_blob("key material", key, value)?;
        self.kv.put(Table::Secrets, key, value)
    }

    fn get_secret(&self, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self.kv.get(Table::Secrets, key)?.map(Zeroizing::new))
    }

    fn remove_secret(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        self.kv.remove(Table::Secrets, key)
    }

    fn secret_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .scan_prefix(Table::Secrets, prefix, None, MAX_LIST_LIMIT, false)?
            .into_iter()
            .map(|(k, v)| {
                drop(Zeroizing::new(v));
                k
            })
            .collect())
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = cat(&[APP_PREFIX, key.as_bytes()]);
        Self::check_blob("metadata", &k, value)?;
        self.kv.put(Table::AppMeta, &k, value)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv
            .get(Table::AppMeta, &cat(&[APP_PREFIX, key.as_bytes()]))
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let class = |p| -> Result<ClassUsage, StoreError> {
            Ok(ClassUsage {
                events: self.counter(c_events(p))?,
                bytes: self.counter(c_bytes(p))?,
            })
        };
        let own_undelivered = class(Priority::OwnUndelivered)?;
        let own_room = class(Priority::OwnRoom)?;
        let stranger = class(Priority::Stranger)?;
        Ok(StoreStats {
            events: own_undelivered.events + own_room.events + stranger.events,
            bytes: own_undelivered.bytes + own_room.bytes + stranger.bytes,
            own_undelivered,
            own_room,
            stranger,
            evictions: Evictions {
                expired: self.counter(C_EVICT_EXPIRED)?,
                stranger_pool: self.counter(C_EVICT_POOL)?,
                budget: self.counter(C_EVICT_BUDGET)?,
            },
            rejections: Rejections {
                expired: self.counter(C_REJ_EXPIRED)?,
                from_future: self.counter(C_REJ_FUTURE)?,
                link_budget: self.counter(C_REJ_LINK)?,
                key_budget: self.counter(C_REJ_KEY)?,
                full: self.counter(C_REJ_FULL)?,
            },
            forks: self.counter(C_FORKS)?,
            forks_unrecorded: self.counter(C_FORKS_UNRECORDED)?,
        })
    }

    fn config(&self) -> &StoreConfig {
        &self.config
    }
}
