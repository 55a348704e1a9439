//! Delivery to the mesh (`protocol-spec/store.md`, "Delivery to the
//! mesh"): an own event leaves the `mesh` delivery queue once a peer showed
//! it holds it. The proof is a reconciliation of the event's room that
//! ended with the event in this side's set and not among what the peer
//! lacks ([`AppEvent::PeerHolds`](crate::proto::AppEvent::PeerHolds)), or
//! the peer's `IHave` of it ([`AppEvent::PeerHas`](crate::proto::AppEvent::PeerHas):
//! a carrier under a copy budget announces back what it took). The
//! acknowledgements wait in memory for the next commit (they never make one
//! due on their own, so an operation is never refused for them) and are
//! lost harmlessly on a crash: the next reconciliation proves them again.

use rand_core::{CryptoRng, Rng};

use super::{CoreError, DeviceCore};
use crate::event::{EventId, RoomId};
use crate::reconcile::Item;
use crate::store::{DeliveryState, Destination, Store};

/// Most acknowledgements held for the next commit.
pub const MAX_MESH_ACKS: usize = 4096;
/// Most queued own events looked at per finished reconciliation.
pub const MAX_MESH_ACK_SCAN: usize = 1024;

impl<S: Store, R: Rng + CryptoRng> DeviceCore<S, R> {
    /// A peer holds `items` of `room` but `lacks` (both sorted): note the
    /// own events among them still queued for the mesh.
    pub(super) fn peer_holds(&mut self, room: RoomId, items: &[Item], lacks: &[Item]) {
        let store = self.node.store();
        let Ok(queued) = store.undelivered(&Destination::Mesh, None, MAX_MESH_ACK_SCAN) else {
            return;
        };
        for id in queued {
            if self.mesh_acks.len() >= MAX_MESH_ACKS {
                return;
            }
            let Ok(Some(info)) = store.event_info(&id) else {
                continue;
            };
            let item = Item {
                ts_ms: info.origin_ts_ms,
                id,
            };
            if info.room == room
                && items.binary_search(&item).is_ok()
                && lacks.binary_search(&item).is_err()
            {
                self.mesh_acks.insert((room, id));
            }
        }
    }

    /// A peer announced that it holds `ids` of `room`: the own events
    /// among them still queued for the mesh are acknowledged.
    pub(super) fn peer_has(&mut self, room: RoomId, ids: &[EventId]) {
        let store = self.node.store();
        for id in ids {
            if self.mesh_acks.len() >= MAX_MESH_ACKS {
                return;
            }
            if let Ok(Some(state)) = store.delivery_state(&Destination::Mesh, id)
                && state != DeliveryState::Acked
            {
                self.mesh_acks.insert((room, *id));
            }
        }
    }

    /// Stages the held acknowledgements (with a commit that is due anyway).
    pub(super) fn apply_mesh_acks(&mut self) -> Result<(), CoreError> {
        for (room, id) in std::mem::take(&mut self.mesh_acks) {
            let store = self.node.store_mut();
            if store.delivery_state(&Destination::Mesh, &id)? != Some(DeliveryState::Acked) {
                store.mark_acked(&Destination::Mesh, &id)?;
                self.touched.insert(room);
            }
        }
        Ok(())
    }
}
