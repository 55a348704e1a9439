//! `&mut S` is a store too, so a caller that owns a store (the daemon's
//! [`crate::proto::Node`]) can lend it to code generic over [`Store`] (the
//! application layer) for one operation (`protocol-spec/store.md`, §1 "The
//! commit contract"): each role trait is implemented for `&mut S` by
//! forwarding every method, default ones included.

use std::ops::Bound;

use zeroize::Zeroizing;

use super::*;
use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, RoomId};

/// Implements a role trait for `&mut S` by forwarding each listed method.
macro_rules! forward {
    ($role:ident { $(fn $name:ident($($params:tt)*) -> $ret:ty;)* }) => {
        impl<S: $role + ?Sized> $role for &mut S {
            $(forward_fn!(fn $name($($params)*) -> $ret);)*
        }
    };
}

/// One forwarding method, by receiver.
macro_rules! forward_fn {
    (fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty) => {
        fn $name(&mut self $(, $arg: $ty)*) -> $ret {
            (**self).$name($($arg),*)
        }
    };
    (fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty) => {
        fn $name(&self $(, $arg: $ty)*) -> $ret {
            (**self).$name($($arg),*)
        }
    };
}

forward! {
    EventStore {
        fn commit(&mut self) -> Result<(), StoreError>;
        fn rollback(&mut self) -> Result<(), StoreError>;
        fn has_pending(&self) -> bool;
        fn insert_event(&mut self, event: &Event, meta: &InsertMeta) -> Result<InsertOutcome, StoreError>;
        fn get_event(&self, id: &EventId) -> Result<Option<Vec<u8>>, StoreError>;
        fn has_event(&self, id: &EventId) -> Result<bool, StoreError>;
        fn seen_event(&self, event: &Event) -> Result<bool, StoreError>;
        fn event_info(&self, id: &EventId) -> Result<Option<EventInfo>, StoreError>;
        fn set_priority(&mut self, id: &EventId, priority: Priority) -> Result<bool, StoreError>;
        fn set_room_priority(&mut self, room: &RoomId, priority: Priority) -> Result<u64, StoreError>;
        fn room_items(&self, room: &RoomId, range: (Bound<ItemKey>, Bound<ItemKey>), limit: usize) -> Result<Vec<ItemKey>, StoreError>;
        fn room_items_classed(&self, room: &RoomId, range: (Bound<ItemKey>, Bound<ItemKey>), limit: usize) -> Result<Vec<(ItemKey, bool)>, StoreError>;
        fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError>;
        fn room_events(&self, room: &RoomId) -> Result<u64, StoreError>;
        fn event_set_version(&self) -> Option<u64>;
        fn take_evicted(&mut self) -> Option<Vec<(RoomId, EventId)>>;
        fn set_share_exempt(&mut self, room: RoomId, exempt: bool) -> ();
        fn heads(&self, room: &RoomId) -> Result<Vec<EventId>, StoreError>;
        fn high_water(&self, room: &RoomId, sender: &DeviceId) -> Result<u64, StoreError>;
        fn gaps(&self, room: &RoomId, sender: &DeviceId, limit: usize) -> Result<Vec<SeqGap>, StoreError>;
        fn gap_below(&self, room: &RoomId, sender: &DeviceId, seq: u64) -> Result<Option<SeqGap>, StoreError>;
        fn event_at_seq(&self, room: &RoomId, sender: &DeviceId, seq: u64) -> Result<Option<EventId>, StoreError>;
        fn forks(&self, limit: usize) -> Result<Vec<ForkEvidence>, StoreError>;
        fn room_forks(&self, room: &RoomId, limit: usize) -> Result<Vec<ForkEvidence>, StoreError>;
        fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError>;
        fn drop_carried(&mut self, id: &EventId) -> Result<bool, StoreError>;
    }
}

forward! {
    DeliveryStore {
        fn enqueue(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError>;
        fn mark_offered(&mut self, dest: &Destination, id: &EventId, now_ms: u64) -> Result<(), StoreError>;
        fn mark_acked(&mut self, dest: &Destination, id: &EventId) -> Result<(), StoreError>;
        fn delivery_state(&self, dest: &Destination, id: &EventId) -> Result<Option<DeliveryState>, StoreError>;
        fn undelivered(&self, dest: &Destination, after: Option<&EventId>, limit: usize) -> Result<Vec<EventId>, StoreError>;
    }
}

forward! {
    SyncStore {
        fn since_token(&self) -> Result<Option<String>, StoreError>;
        fn set_since_token(&mut self, token: Option<&str>) -> Result<(), StoreError>;
        fn put_uplink(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
        fn get_uplink(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
        fn remove_uplink(&mut self, key: &[u8]) -> Result<bool, StoreError>;
        fn uplink_keys(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
    }
}

forward! {
    ContactStore {
        fn put_contact(&mut self, device: &DeviceId, card: &[u8]) -> Result<(), StoreError>;
        fn get_contact(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError>;
        fn remove_contact(&mut self, device: &DeviceId) -> Result<bool, StoreError>;
        fn contacts(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError>;
    }
}

forward! {
    SecretStore {
        fn put_secret(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
        fn get_secret(&self, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
        fn remove_secret(&mut self, key: &[u8]) -> Result<bool, StoreError>;
        fn secret_keys_page(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
        fn secret_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError>;
    }
}

forward! {
    MetaStore {
        fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
        fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
        fn occupancy(&self) -> Result<Occupancy, StoreError>;
        fn stats(&self) -> Result<StoreStats, StoreError>;
        fn config(&self) -> &StoreConfig;
    }
}
