//! [`EventStore`] over the engine: commits, intake (dedup by ID and by
//! `(room, sender, seq)`, forks, timeliness, intake budgets), DAG heads,
//! sequence gaps, room items and expiry (`protocol-spec/store.md`, §1 "The commit
//! contract", §3 "Deduplication, replays and forks", §4 "Retention").

use super::rows::MetaRow;
use super::*;
use crate::crypto::keys::DeviceId;
use crate::event::Event;
use crate::event::clock::{Timeliness, timeliness};
use crate::limits::EXPIRY_GRACE_MS;
use crate::store::EventStore;

impl<K: Kv> EventStore for Engine<K> {
    fn commit(&mut self) -> Result<(), StoreError> {
        self.kv.commit()
    }

    fn set_share_exempt(&mut self, room: RoomId, exempt: bool) {
        if !exempt {
            self.share_exempt.remove(&room);
        } else if self.share_exempt.len() < super::super::MAX_SHARE_EXEMPT_ROOMS {
            self.share_exempt.insert(room);
        }
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
        if let Some(row) = self.kv.get(Table::Seqs, &seq_key)?
            && !readmits(&row, &id, meta.priority)
        {
            let existing = id_from(&row).ok_or_else(|| bad("sequence index"))?;
            if existing == id {
                return Ok(InsertOutcome::Duplicate);
            }
            let held = row.get(32) == Some(&SEQ_HELD);
            let current = timeliness(event, meta.received_ms) == Timeliness::Current;
            if !(held && current && id < existing) {
                self.record_fork(&seq_key, &id, event.bytes())?;
                return Ok(InsertOutcome::Fork(Box::new(ForkEvidence {
                    room,
                    sender,
                    seq: event.seq(),
                    existing,
                    conflicting: id,
                    conflicting_bytes: event.bytes().to_vec(),
                })));
            }
            // The copy with the lowest event ID counts, whatever the arrival
            // order (`protocol-spec/rooms.md` §7.1): the held copy becomes
            // the evidence and this one takes its place.
            let old = self
                .get_event(&existing)?
                .ok_or_else(|| bad("sequence index"))?;
            self.record_fork(&seq_key, &existing, &old)?;
            self.evict(&existing, EvictReason::Fork)?;
            self.kv.remove(Table::Seqs, &seq_key)?;
        }
        match timeliness(event, meta.received_ms) {
            Timeliness::Current => {}
            Timeliness::Expired => return self.reject(RejectReason::Expired),
            Timeliness::FromFuture => return self.reject(RejectReason::FromFuture),
        }
        let size = (event.bytes().len() as u64).saturating_add(PER_EVENT_OVERHEAD_BYTES);
        if meta.priority == Priority::Stranger && !self.share_exempt.contains(&room) {
            if let Source::Link(k) = meta.source
                && self
                    .usage(Table::IntakeLink, &k.key())?
                    .saturating_add(size)
                    > self.config.link_share_bytes
            {
                return self.reject(RejectReason::LinkBudget);
            }
            if !meta.carried
                && self
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
            &[row.priority.tag()],
        )?;
        self.kv
            .put(Table::Seqs, &seq_key, &cat(&[idb, &[SEQ_HELD]]))?;
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
        if (row.priority == Priority::Stranger) != (priority == Priority::Stranger) {
            // The room's item lists filtered by class change with it.
            self.version = self.version.wrapping_add(1);
        }
        row.priority = priority;
        self.kv.put(
            Table::RoomItems,
            &cat(&[row.room.as_bytes(), &be(row.origin_ts_ms), id.as_bytes()]),
            &[priority.tag()],
        )?;
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
        Ok(self
            .room_items_classed(room, range, limit)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn room_items_classed(
        &self,
        room: &RoomId,
        range: (Bound<ItemKey>, Bound<ItemKey>),
        limit: usize,
    ) -> Result<Vec<(ItemKey, bool)>, StoreError> {
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
            .map(|(k, v)| {
                let ts = k.get(16..24).and_then(be_u64);
                let id = k.get(24..).and_then(id_from);
                // The class tag; empty in rows written before it was kept
                // (`store.md`, "Tables"): counted as not strangers'.
                let stranger = v.as_slice() == [Priority::Stranger.tag()];
                match (ts, id) {
                    (Some(origin_ts_ms), Some(id)) => Ok((ItemKey { origin_ts_ms, id }, stranger)),
                    _ => Err(bad("room item")),
                }
            })
            .collect()
    }

    fn event_set_version(&self) -> Option<u64> {
        Some(self.version)
    }

    fn take_evicted(&mut self) -> Option<Vec<(RoomId, EventId)>> {
        self.evicted.replace(Vec::new())
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

    fn room_events(&self, room: &RoomId) -> Result<u64, StoreError> {
        Ok(self.room_usage(room)?.0)
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
                    .and_then(be_u64)
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

    fn gap_below(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        seq: u64,
    ) -> Result<Option<SeqGap>, StoreError> {
        let p = cat(&[room.as_bytes(), sender.as_bytes()]);
        let floor = self.mark(&p)?.floor;
        let Some(below) = seq.checked_sub(1).filter(|b| *b > floor) else {
            return Ok(None);
        };
        let at = cat(&[&p, &be(below)]);
        if self.kv.get(Table::Seqs, &at)?.is_some() {
            return Ok(None);
        }
        // The highest accepted sequence number under it, above the floor.
        let lo = cat(&[&p, &be(floor)]);
        let last = self.kv.range(
            Table::Seqs,
            Bound::Excluded(lo.as_slice()),
            Bound::Excluded(at.as_slice()),
            1,
            true,
        )?;
        let from_seq = match last.first() {
            Some((k, _)) => k
                .get(48..)
                .and_then(be_u64)
                .ok_or_else(|| bad("sequence"))?
                .saturating_add(1),
            None => floor.saturating_add(1),
        };
        Ok(Some(SeqGap {
            from_seq,
            to_seq: below,
        }))
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
        self.fork_rows(rows)
    }

    fn room_forks(&self, room: &RoomId, limit: usize) -> Result<Vec<ForkEvidence>, StoreError> {
        let rows = self.scan_prefix(Table::Forks, room.as_bytes(), None, limit, false)?;
        self.fork_rows(rows)
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

    fn drop_carried(&mut self, id: &EventId) -> Result<bool, StoreError> {
        match self.meta_row(id)? {
            Some(row) if row.priority == Priority::Stranger => {
                self.evict(id, EvictReason::Delivered)
            }
            _ => Ok(false),
        }
    }
}

impl<K: Kv> Engine<K> {
    /// Records `id`'s bytes as fork evidence at `seq_key` (room ‖ sender ‖
    /// seq) once, counted; at most [`MAX_FORK_EVIDENCE`] records are kept,
    /// later forks are only counted (`protocol-spec/store.md` §3).
    fn record_fork(
        &mut self,
        seq_key: &[u8],
        id: &EventId,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let fk = cat(&[seq_key, id.as_bytes()]);
        if self.kv.get(Table::Forks, &fk)?.is_none() {
            self.add(C_FORKS, 1)?;
            if self.counter(C_FORKS_RECORDED)? < MAX_FORK_EVIDENCE {
                self.add(C_FORKS_RECORDED, 1)?;
                self.kv.put(Table::Forks, &fk, bytes)?;
            } else {
                self.add(C_FORKS_UNRECORDED, 1)?;
            }
        }
        Ok(())
    }

    /// Decodes fork-evidence rows (key room ‖ sender ‖ seq ‖ conflicting ID).
    fn fork_rows(&self, rows: Vec<Pair>) -> Result<Vec<ForkEvidence>, StoreError> {
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
                let seq = k.get(48..56).and_then(be_u64).ok_or_else(|| bad("fork"))?;
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
}
