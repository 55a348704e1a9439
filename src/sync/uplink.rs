//! Uplink store steps (`protocol-spec/homeserver.md`, "Uplink"): pick
//! queued events, pack them into bundles, persist each bundle's
//! composition before it is sent, and record its events as present on the
//! server after the homeserver accepted it.
//!
//! A composition is stored in the store's uplink table under the bundle's
//! transaction ID; its value is the bundle's sorted event IDs, 32 bytes
//! each. After a crash the same events rebuild the same bundle, so the
//! retry reuses the transaction ID and the homeserver returns the original
//! Matrix event instead of storing a copy.

use std::collections::BTreeSet;

use crate::event::{Event, EventId};
use crate::store::{DeliveryStore, Destination, EventStore, MAX_LIST_LIMIT, Store};
use crate::transport::homeserver::bundle::MAX_BUNDLE_EVENTS;
use crate::transport::homeserver::{Bundle, MAX_BUNDLE_BYTES, pack};

use super::SyncError;

/// Most bundle compositions persisted and in flight at once.
pub const MAX_PENDING_BUNDLES: usize = 16;

/// Smallest bundle size the uplink falls back to after a `413`.
pub const MIN_UPLINK_BUNDLE_BYTES: usize = 16 * 1024 + 64;

/// Most queued events examined per [`prepare`] call.
pub const MAX_UPLINK_SCAN: usize = MAX_PENDING_BUNDLES * MAX_BUNDLE_EVENTS;

/// Events queued for the homeserver and not yet present there (capped at
/// [`MAX_LIST_LIMIT`]).
pub fn queued<S: Store>(store: &S) -> Result<u64, SyncError> {
    Ok(store.queue_len(&Destination::Homeserver, MAX_LIST_LIMIT)? as u64)
}

fn encode_ids(ids: &[EventId]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.0).collect()
}

fn decode_ids(v: &[u8]) -> Option<Vec<EventId>> {
    if !v.len().is_multiple_of(EventId::LEN) {
        return None;
    }
    v.chunks_exact(EventId::LEN)
        .map(|c| c.try_into().ok().map(EventId))
        .collect()
}

fn load<S: Store>(store: &S, id: &EventId) -> Result<Option<Event>, SyncError> {
    match store.get_event(id)? {
        None => Ok(None),
        Some(b) => Event::decode_unverified(&b)
            .map(Some)
            .map_err(|e| SyncError::Corrupt(format!("stored event {id}: {e}"))),
    }
}

/// The next bundles to send, at most `max_bundles` (capped at
/// [`MAX_PENDING_BUNDLES`]), each at most `max_bytes` encoded: first the
/// compositions persisted by an earlier run (sent again under the same
/// transaction ID), then new bundles packed from the homeserver queue.
/// New compositions are persisted and **committed** before this returns.
/// An empty result means the queue is drained.
pub fn prepare<S: Store>(
    store: &mut S,
    max_bundles: usize,
    max_bytes: usize,
    now_ms: u64,
) -> Result<Vec<Bundle>, SyncError> {
    let max_bundles = max_bundles.clamp(1, MAX_PENDING_BUNDLES);
    let mut out = Vec::new();
    let mut in_flight: BTreeSet<EventId> = BTreeSet::new();
    for key in store.uplink_keys(MAX_PENDING_BUNDLES)? {
        let Some(value) = store.get_uplink(&key)? else {
            continue;
        };
        let Some(ids) = decode_ids(&value) else {
            // Unreadable: forget it; its events are still queued.
            tracing::warn!("dropping a malformed uplink composition");
            store.remove_uplink(&key)?;
            continue;
        };
        let mut events = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(e) = load(store, id)? {
                events.push(e);
            }
        }
        in_flight.extend(ids.iter().copied());
        match Bundle::new(events) {
            Ok(b) if b.txn_id().as_bytes() == key.as_slice() => out.push(b),
            Ok(b) => {
                // Some events were evicted since: a different bundle now.
                store.remove_uplink(&key)?;
                store.put_uplink(b.txn_id().as_bytes(), &encode_ids(&b.event_ids()))?;
                out.push(b);
            }
            Err(_) => {
                store.remove_uplink(&key)?;
            }
        }
        if out.len() >= max_bundles {
            break;
        }
    }
    let want = max_bundles.saturating_sub(out.len());
    if want > 0 {
        let budget = want.saturating_mul(max_bytes.min(MAX_BUNDLE_BYTES));
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut after: Option<EventId> = None;
        let mut scanned = 0usize;
        'scan: while bytes < budget && scanned < MAX_UPLINK_SCAN {
            let page =
                store.undelivered(&Destination::Homeserver, after.as_ref(), MAX_BUNDLE_EVENTS)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            for id in &page {
                scanned += 1;
                if in_flight.contains(id) {
                    continue;
                }
                if let Some(e) = load(store, id)? {
                    bytes += e.bytes().len() + 3;
                    events.push(e);
                }
                if bytes >= budget || scanned >= MAX_UPLINK_SCAN {
                    break 'scan;
                }
            }
            after = Some(last);
        }
        for b in pack(events, max_bytes).into_iter().take(want) {
            store.put_uplink(b.txn_id().as_bytes(), &encode_ids(&b.event_ids()))?;
            for id in b.event_ids() {
                store.mark_offered(&Destination::Homeserver, &id, now_ms)?;
            }
            out.push(b);
        }
    }
    if store.has_pending() {
        store.commit()?;
    }
    Ok(out)
}

/// The homeserver accepted `bundle`: its events are present there (they
/// leave the queue) and its composition is dropped. Commits.
pub fn sent<S: Store>(store: &mut S, bundle: &Bundle) -> Result<(), SyncError> {
    for id in bundle.event_ids() {
        store.mark_acked(&Destination::Homeserver, &id)?;
    }
    store.remove_uplink(bundle.txn_id().as_bytes())?;
    store.commit()?;
    Ok(())
}

/// Forgets a composition without sending it (after a `413`, the events are
/// packed again into smaller bundles). Its events stay queued. Commits.
pub fn discard<S: Store>(store: &mut S, bundle: &Bundle) -> Result<(), SyncError> {
    store.remove_uplink(bundle.txn_id().as_bytes())?;
    store.commit()?;
    Ok(())
}

/// Compositions persisted and not yet confirmed sent.
pub fn pending<S: Store>(store: &S) -> Result<u64, SyncError> {
    Ok(store.uplink_keys(MAX_LIST_LIMIT)?.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::event::{EventKind, RoomId, UnsignedEvent};
    use crate::store::{DeliveryState, InsertMeta, MemoryStore, Priority, Source};

    const NOW: u64 = 1_700_000_000_000;

    fn insert(store: &mut MemoryStore, n: u64, source: Source) -> Vec<Event> {
        let id = Identity::from_seed(&[9; 32]);
        let evs: Vec<Event> = (1..=n)
            .map(|seq| {
                UnsignedEvent {
                    room: RoomId([3; 16]),
                    sender: id.device_id(),
                    seq,
                    prev: vec![],
                    origin_ts_ms: NOW,
                    expires_ms: NOW + 86_400_000,
                    kind: EventKind::Message,
                    payload: vec![seq as u8; 1024],
                }
                .sign(&id)
                .expect("sign")
            })
            .collect();
        for e in &evs {
            store
                .insert_event(
                    e,
                    &InsertMeta {
                        priority: Priority::OwnRoom,
                        source,
                        received_ms: NOW,
                        carried: false,
                    },
                )
                .expect("insert");
        }
        store.commit().expect("commit");
        evs
    }

    #[test]
    fn compositions_survive_a_crash_and_rebuild_the_same_txn_ids() {
        let mut s = MemoryStore::new_memory();
        insert(&mut s, 200, Source::Local);
        assert_eq!(queued(&s).expect("q"), 200);
        let first = prepare(&mut s, 3, MAX_BUNDLE_BYTES, NOW).expect("prepare");
        assert_eq!(first.len(), 3);
        assert_eq!(pending(&s).expect("p"), 3);
        sent(&mut s, &first[0]).expect("sent");
        // Crash: uncommitted nothing here, but a fresh prepare must return
        // the two unconfirmed compositions first, unchanged.
        s.crash();
        let again = prepare(&mut s, 3, MAX_BUNDLE_BYTES, NOW).expect("prepare");
        let want: BTreeSet<&str> = first[1..].iter().map(|b| b.txn_id()).collect();
        let got: BTreeSet<&str> = again[..2].iter().map(|b| b.txn_id()).collect();
        assert_eq!(got, want);
        let third = &again[2];
        assert!(
            third
                .event_ids()
                .iter()
                .all(|id| !first.iter().any(|b| b.event_ids().contains(id))),
            "a new bundle never repeats an in-flight event"
        );
        for b in &again {
            sent(&mut s, b).expect("sent");
        }
        let mut total =
            first[0].events().len() + again.iter().map(|b| b.events().len()).sum::<usize>();
        loop {
            let more = prepare(&mut s, 16, MAX_BUNDLE_BYTES, NOW).expect("prepare");
            if more.is_empty() {
                break;
            }
            for b in &more {
                total += b.events().len();
                sent(&mut s, b).expect("sent");
            }
        }
        assert_eq!(total, 200, "every event uploaded once");
        assert_eq!(queued(&s).expect("q"), 0);
        assert_eq!(pending(&s).expect("p"), 0);
    }

    #[test]
    fn homeserver_events_are_not_queued_and_discard_keeps_the_queue() {
        let mut s = MemoryStore::new_memory();
        insert(&mut s, 10, Source::Homeserver);
        assert!(
            prepare(&mut s, 4, MAX_BUNDLE_BYTES, NOW)
                .expect("p")
                .is_empty()
        );
        let mut s = MemoryStore::new_memory();
        let evs = insert(&mut s, 30, Source::Local);
        let b = prepare(&mut s, 4, MAX_BUNDLE_BYTES, NOW).expect("p");
        assert_eq!(b.len(), 1);
        assert!(matches!(
            s.delivery_state(&Destination::Homeserver, &evs[0].id())
                .expect("st"),
            Some(DeliveryState::Offered { .. })
        ));
        discard(&mut s, &b[0]).expect("discard");
        assert_eq!(queued(&s).expect("q"), 30);
        let small = prepare(&mut s, 16, MIN_UPLINK_BUNDLE_BYTES, NOW).expect("p");
        assert!(
            small.len() >= 2
                && small
                    .iter()
                    .all(|b| b.encoded().len() <= MIN_UPLINK_BUNDLE_BYTES)
        );
    }
}
