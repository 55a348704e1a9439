//! `&mut S` is a store too, so a caller that owns a store (the daemon's
//! [`crate::proto::Node`]) can lend it to code generic over [`Store`] (the
//! application layer) for one operation.

use std::ops::Bound;

use zeroize::Zeroizing;

use super::*;
use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, RoomId};

impl<S: Store + ?Sized> Store for &mut S {
    fn commit(&mut self) -> Result<(), StoreError> {
        (**self).commit()
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        (**self).rollback()
    }

    fn has_pending(&self) -> bool {
        (**self).has_pending()
    }

    fn insert_event(
        &mut self,
        event: &Event,
        meta: &InsertMeta,
    ) -> Result<InsertOutcome, StoreError> {
        (**self).insert_event(event, meta)
    }

    fn get_event(&self, id: &EventId) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_event(id)
    }

    fn has_event(&self, id: &EventId) -> Result<bool, StoreError> {
        (**self).has_event(id)
    }

    fn seen_event(&self, event: &Event) -> Result<bool, StoreError> {
        (**self).seen_event(event)
    }

    fn event_info(&self, id: &EventId) -> Result<Option<EventInfo>, StoreError> {
        (**self).event_info(id)
    }

    fn set_priority(&mut self, id: &EventId, priority: Priority) -> Result<bool, StoreError> {
        (**self).set_priority(id, priority)
    }

    fn set_room_priority(&mut self, room: &RoomId, priority: Priority) -> Result<u64, StoreError> {
        (**self).set_room_priority(room, priority)
    }

    fn room_items(
        &self,
        room: &RoomId,
        range: (Bound<ItemKey>, Bound<ItemKey>),
        limit: usize,
    ) -> Result<Vec<ItemKey>, StoreError> {
        (**self).room_items(room, range, limit)
    }

    fn event_set_version(&self) -> Option<u64> {
        (**self).event_set_version()
    }

    fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        (**self).rooms()
    }

    fn heads(&self, room: &RoomId) -> Result<Vec<EventId>, StoreError> {
        (**self).heads(room)
    }

    fn high_water(&self, room: &RoomId, sender: &DeviceId) -> Result<u64, StoreError> {
        (**self).high_water(room, sender)
    }

    fn gaps(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        limit: usize,
    ) -> Result<Vec<SeqGap>, StoreError> {
        (**self).gaps(room, sender, limit)
    }

    fn event_at_seq(
        &self,
        room: &RoomId,
        sender: &DeviceId,
        seq: u64,
    ) -> Result<Option<EventId>, StoreError> {
        (**self).event_at_seq(room, sender, seq)
    }

    fn forks(&self, limit: usize) -> Result<Vec<ForkEvidence>, StoreError> {
        (**self).forks(limit)
    }

    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        (**self).expire(now_ms)
    }

    fn enqueue(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError> {
        (**self).enqueue(dest, id)
    }

    fn mark_offered(
        &mut self,
        dest: &Destination,
        id: &EventId,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        (**self).mark_offered(dest, id, now_ms)
    }

    fn mark_acked(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError> {
        (**self).mark_acked(dest, id)
    }

    fn delivery_state(
        &self,
        dest: &Destination,
        id: &EventId,
    ) -> Result<Option<DeliveryState>, StoreError> {
        (**self).delivery_state(dest, id)
    }

    fn undelivered(
        &self,
        dest: &Destination,
        after: Option<&EventId>,
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        (**self).undelivered(dest, after, limit)
    }

    fn since_token(&self) -> Result<Option<String>, StoreError> {
        (**self).since_token()
    }

    fn set_since_token(&mut self, token: Option<&str>) -> Result<(), StoreError> {
        (**self).set_since_token(token)
    }

    fn put_uplink(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put_uplink(key, value)
    }

    fn get_uplink(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_uplink(key)
    }

    fn remove_uplink(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        (**self).remove_uplink(key)
    }

    fn uplink_keys(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        (**self).uplink_keys(limit)
    }

    fn put_contact(&mut self, device: &DeviceId, card: &[u8]) -> Result<(), StoreError> {
        (**self).put_contact(device, card)
    }

    fn get_contact(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_contact(device)
    }

    fn remove_contact(&mut self, device: &DeviceId) -> Result<bool, StoreError> {
        (**self).remove_contact(device)
    }

    fn contacts(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        (**self).contacts()
    }

    fn put_secret(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put_secret(key, value)
    }

    fn get_secret(&self, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        (**self).get_secret(key)
    }

    fn remove_secret(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        (**self).remove_secret(key)
    }

    fn secret_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        (**self).secret_keys(prefix)
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).put_meta(key, value)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_meta(key)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        (**self).stats()
    }

    fn config(&self) -> &StoreConfig {
        (**self).config()
    }
}
