//! Budgets and eviction: usage charged per class, room, intake link and
//! signing key; making room by evicting the lowest class first, oldest first;
//! tombstones pruned at expiry (`protocol-spec/store.md`, §4 "Retention").

use super::rows::MetaRow;
use super::*;
use crate::event::Event;

impl<K: Kv> Engine<K> {
    /// Removes the `(room, sender, seq)` row of an expired event: it can
    /// never be accepted again (intake rejects expired events), so the
    /// tombstone is no longer needed. Raises the gap floor; drops the mark
    /// of a stranger's (room, sender) once nothing of it remains.
    pub(super) fn prune_tombstone(
        &mut self,
        seq_key: &[u8],
        id: &EventId,
    ) -> Result<(), StoreError> {
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
        let seq = be_u64(&seq_key[48..]).ok_or_else(|| bad("expiry row"))?;
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
    pub(super) fn evict(&mut self, id: &EventId, reason: EvictReason) -> Result<bool, StoreError> {
        let Some(row) = self.meta_row(id)? else {
            return Ok(false);
        };
        self.version = self.version.wrapping_add(1);
        if let Some(list) = &mut self.evicted {
            if list.len() < crate::store::MAX_EVICTED_RECORDS {
                list.push((row.room, *id));
            } else {
                self.evicted = None;
            }
        }
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
        // A tombstone records whether the event was evicted from the
        // strangers' class (`store.md` §3): only such an event may be
        // stored again, and only in a higher class.
        let seq_key = cat(&[room, &row.sender, &be(row.seq)]);
        let flag = if row.priority == Priority::Stranger {
            SEQ_STRANGER_TOMBSTONE
        } else {
            SEQ_TOMBSTONE
        };
        self.kv.put(Table::Seqs, &seq_key, &cat(&[idb, &[flag]]))?;
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
                EvictReason::Fork => C_FORKS_DISPLACED,
                EvictReason::Delivered => C_EVICT_DELIVERED,
            },
            1,
        )?;
        Ok(true)
    }

    pub(super) fn charge_usage(&mut self, row: &MetaRow) -> Result<(), StoreError> {
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

    pub(super) fn release_usage(&mut self, row: &MetaRow) -> Result<(), StoreError> {
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
    pub(super) fn oldest_in(&self, p: Priority) -> Result<Option<EventId>, StoreError> {
        Ok(self
            .scan_prefix(Table::ByClass, &[p.tag()], None, 1, false)?
            .first()
            .and_then(|(_, v)| id_from(v)))
    }

    pub(super) fn reject(&mut self, r: RejectReason) -> Result<InsertOutcome, StoreError> {
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
    pub(super) fn make_room(&mut self, p: Priority, size: u64) -> Result<bool, StoreError> {
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
}
