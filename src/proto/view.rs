//! Cached views of the store that reconciliation reads on every contact
//! (`protocol-spec/wire.md`, "Node limits"): the list of rooms held and
//! each room's items `(origin_ts_ms, id)`.
//!
//! Without them every Hello and every reconciliation round listed all rooms
//! from the store, and every session scanned its room's items, so a relay
//! carrying many small rooms (one per direct-message pair) paid a full
//! store walk per contact and per round.
//!
//! The views are valid for one [`EventStore::event_set_version`]: when it moves
//! for any reason other than an insert the node made itself (an eviction,
//! an expiry, a rollback, the application writing through `store_mut`),
//! they are dropped and rebuilt lazily from the store. The node's own
//! inserts update them in place. A store that does not track versions is
//! never cached. Item lists are bounded by [`MAX_VIEW_ROOMS`] rooms and
//! [`MAX_VIEW_ITEMS`] items in all; over either bound, the lowest room IDs
//! are dropped first (deterministic, and cheaper than an LRU: a lookup is
//! on every reconciliation session).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::event::RoomId;
use crate::reconcile::Item;
use crate::store::{EventStore, StoreError};

/// Most rooms whose item lists are cached.
pub const MAX_VIEW_ROOMS: usize = 4096;
/// Most items cached over all rooms (40 bytes each: about 640 KiB, a
/// field relay's budget; rooms beyond it are read from the store per
/// session, one range read of the room's items).
pub const MAX_VIEW_ITEMS: usize = 16_384;
/// How many items a view reads from the store per page.
const ITEM_PAGE: usize = 16_384;

/// The cached views (see the module docs).
pub(crate) struct StoreView {
    /// The store version the views reflect (`None`: nothing cached).
    version: Option<u64>,
    /// Rooms held in the store, ascending.
    rooms: Option<Vec<RoomId>>,
    /// Items per room, ascending, and whether strangers' events were left
    /// out ([`StoreView::items`]).
    items: BTreeMap<RoomId, (bool, Vec<Item>)>,
    /// Items held in `items`.
    cached_items: usize,
}

impl StoreView {
    pub(crate) fn new() -> Self {
        Self {
            version: None,
            rooms: None,
            items: BTreeMap::new(),
            cached_items: 0,
        }
    }

    /// Drops cached rooms, lowest IDs first, until within both bounds.
    fn shrink(&mut self) {
        while self.cached_items > MAX_VIEW_ITEMS || self.items.len() > MAX_VIEW_ROOMS {
            match self.items.pop_first() {
                Some((_, (_, old))) => self.cached_items -= old.len(),
                None => break,
            }
        }
    }

    /// Drops the views unless they reflect the store's current version.
    fn sync<S: EventStore>(&mut self, store: &S) {
        let now = store.event_set_version();
        if now.is_none() || now != self.version {
            self.rooms = None;
            self.items.clear();
            self.cached_items = 0;
            self.version = now;
        }
    }

    /// Rooms with at least one held event, ascending (as [`EventStore::rooms`]).
    pub(crate) fn rooms<S: EventStore>(&mut self, store: &S) -> Result<&[RoomId], StoreError> {
        self.sync(store);
        let rooms = match self.rooms.take() {
            Some(r) => r,
            None => store.rooms()?.into_iter().map(|r| r.room).collect(),
        };
        Ok(self.rooms.insert(rooms).as_slice())
    }

    /// Every held item of `room`, ascending; without the events held in
    /// the strangers' class when `skip_strangers` (a member's quarantine,
    /// `protocol-spec/wire.md`, "Quarantine").
    pub(crate) fn items<S: EventStore>(
        &mut self,
        store: &S,
        room: &RoomId,
        skip_strangers: bool,
    ) -> Result<Vec<Item>, StoreError> {
        self.sync(store);
        if let Some((skip, items)) = self.items.get(room)
            && *skip == skip_strangers
        {
            return Ok(items.clone());
        }
        let items = read_items(store, room, skip_strangers)?;
        if self.version.is_some() && items.len() <= MAX_VIEW_ITEMS {
            self.cached_items += items.len();
            if let Some((_, old)) = self.items.insert(*room, (skip_strangers, items.clone())) {
                self.cached_items -= old.len();
            }
            self.shrink();
        }
        Ok(items)
    }

    /// Records an insert this node made (`stranger`: in the strangers'
    /// class): `before` and `after` are the store's versions around it. If
    /// nothing else changed the event set (exactly one step), the views are
    /// updated in place; otherwise the next read rebuilds them.
    pub(crate) fn inserted(
        &mut self,
        before: Option<u64>,
        after: Option<u64>,
        room: RoomId,
        item: Item,
        stranger: bool,
    ) {
        let (Some(b), Some(a)) = (before, after) else {
            return;
        };
        if self.version != Some(b) || a != b.wrapping_add(1) {
            return;
        }
        self.version = Some(a);
        if let Some(rooms) = &mut self.rooms
            && let Err(at) = rooms.binary_search(&room)
        {
            rooms.insert(at, room);
        }
        if let Some((skip, items)) = self.items.get_mut(&room)
            && !(*skip && stranger)
            && let Err(at) = items.binary_search(&item)
        {
            items.insert(at, item);
            self.cached_items += 1;
        }
        self.shrink();
    }
}

/// Every item of a room, ascending, read from the store in pages.
fn read_items<S: EventStore>(
    store: &S,
    room: &RoomId,
    skip_strangers: bool,
) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::new();
    let mut from = Bound::Unbounded;
    loop {
        let page = store.room_items_classed(room, (from, Bound::Unbounded), ITEM_PAGE)?;
        let full = page.len() == ITEM_PAGE;
        if let Some((last, _)) = page.last() {
            from = Bound::Excluded(*last);
        }
        out.extend(
            page.into_iter()
                .filter(|(_, stranger)| !(skip_strangers && *stranger))
                .map(|(k, _)| Item {
                    ts_ms: k.origin_ts_ms,
                    id: k.id,
                }),
        );
        if !full {
            return Ok(out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::event::{EventKind, UnsignedEvent};
    use crate::store::{InsertMeta, MemoryStore, Priority, Source, StoreConfig};

    fn event(id: &Identity, room: RoomId, seq: u64, ts: u64) -> crate::event::Event {
        UnsignedEvent {
            room,
            sender: id.device_id(),
            seq,
            prev: Vec::new(),
            origin_ts_ms: ts,
            expires_ms: ts + 3_600_000,
            kind: EventKind::Message,
            payload: vec![1; 10],
        }
        .sign(id)
        .unwrap()
    }

    fn meta(now: u64) -> InsertMeta {
        InsertMeta {
            priority: Priority::OwnRoom,
            source: Source::Local,
            received_ms: now,
            carried: false,
        }
    }

    fn fresh(store: &MemoryStore, room: &RoomId, skip: bool) -> (Vec<RoomId>, Vec<Item>) {
        let rooms = store.rooms().unwrap().into_iter().map(|r| r.room).collect();
        (rooms, read_items(store, room, skip).unwrap())
    }

    /// The views always equal a fresh read, whatever changed the store:
    /// the node's own inserts, inserts behind its back, rollbacks, a
    /// change of class; with and without strangers' events.
    #[test]
    fn views_follow_inserts_rollbacks_and_writes_behind_their_back() {
        let id = Identity::from_seed(&[7; 32]);
        let mut store = MemoryStore::new_memory_with(StoreConfig::default()).unwrap();
        let mut view = StoreView::new();
        let (r1, r2) = (RoomId([1; 16]), RoomId([2; 16]));
        let check = |view: &mut StoreView, store: &MemoryStore| {
            for r in [r1, r2] {
                for skip in [false, true] {
                    let (rooms, items) = fresh(store, &r, skip);
                    assert_eq!(view.rooms(store).unwrap(), rooms.as_slice());
                    assert_eq!(view.items(store, &r, skip).unwrap(), items);
                }
            }
        };
        check(&mut view, &store);
        // Own inserts, in and out of timestamp order: updated in place.
        for (seq, ts) in [(1, 5_000), (2, 3_000), (3, 9_000)] {
            let ev = event(&id, r1, seq, ts);
            let before = store.event_set_version();
            store.insert_event(&ev, &meta(ts)).unwrap();
            let item = Item {
                ts_ms: ts,
                id: ev.id(),
            };
            view.inserted(before, store.event_set_version(), r1, item, false);
            assert_eq!(view.version, store.event_set_version());
            check(&mut view, &store);
        }
        // A strangers' event: left out of the view that skips them, in
        // place; listed once its sender gains standing.
        let ev = event(&Identity::from_seed(&[8; 32]), r1, 1, 7_000);
        let before = store.event_set_version();
        let stranger = InsertMeta {
            priority: Priority::Stranger,
            ..meta(7_000)
        };
        store.insert_event(&ev, &stranger).unwrap();
        let item = Item {
            ts_ms: 7_000,
            id: ev.id(),
        };
        view.inserted(before, store.event_set_version(), r1, item, true);
        assert_eq!(view.version, store.event_set_version());
        assert!(!view.items(&store, &r1, true).unwrap().contains(&item));
        check(&mut view, &store);
        assert!(view.items(&store, &r1, false).unwrap().contains(&item));
        store.set_priority(&ev.id(), Priority::OwnRoom).unwrap();
        assert!(view.items(&store, &r1, true).unwrap().contains(&item));
        // The item row follows the class (`store check` compares them).
        let report = store.check_report().unwrap();
        assert!(report.ok, "{:?}", report.problems);
        check(&mut view, &store);
        store.commit().unwrap();
        // An insert the view was not told about, then a rollback.
        store
            .insert_event(&event(&id, r2, 1, 4_000), &meta(4_000))
            .unwrap();
        check(&mut view, &store);
        store.rollback().unwrap();
        check(&mut view, &store);
        assert!(view.items(&store, &r2, false).unwrap().is_empty());
        // A crash drops staged inserts the view was told about.
        let ev = event(&id, r2, 1, 6_000);
        let before = store.event_set_version();
        store.insert_event(&ev, &meta(6_000)).unwrap();
        let item = Item {
            ts_ms: 6_000,
            id: ev.id(),
        };
        view.inserted(before, store.event_set_version(), r2, item, false);
        check(&mut view, &store);
        store.crash();
        check(&mut view, &store);
        assert_eq!(view.rooms(&store).unwrap(), &[r1]);
    }

    #[test]
    fn item_cache_stays_within_its_bounds() {
        let store = MemoryStore::new_memory();
        let mut view = StoreView::new();
        for i in 0..(MAX_VIEW_ROOMS + 10) {
            let mut r = [0u8; 16];
            r[..8].copy_from_slice(&(i as u64).to_be_bytes());
            view.items(&store, &RoomId(r), false).unwrap();
        }
        assert_eq!(view.items.len(), MAX_VIEW_ROOMS);
        assert!(view.cached_items <= MAX_VIEW_ITEMS);
    }
}
