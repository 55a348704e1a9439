//! Delivery queues per destination: queued, offered, acknowledged
//! (`protocol-spec/store.md`, §2 "Tables").

use super::*;
use crate::store::DeliveryStore;

impl<K: Kv> Engine<K> {
    pub(super) fn queue(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError> {
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
}

impl<K: Kv> DeliveryStore for Engine<K> {
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
}
