//! Helpers for the node's unit tests.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Node, NodeConfig};
use crate::crypto::Identity;
use crate::event::{EventId, EventKind, RoomId, UnsignedEvent};
use crate::store::{EventStore, InsertMeta, MemoryStore, Priority, Source};

/// A node of the device with seed 7 on an in-memory store.
pub(super) fn node(config: NodeConfig) -> Node<MemoryStore, StdRng> {
    Node::new(
        Identity::from_seed(&[7; 32]).device_id(),
        MemoryStore::new_memory(),
        StdRng::seed_from_u64(3),
        config,
        0,
    )
}

/// Signs an event of `room` by `who` citing `prev` and stores it as a
/// stranger's (a carried copy); returns its ID.
pub(super) fn carry(
    n: &mut Node<MemoryStore, StdRng>,
    room: RoomId,
    who: &Identity,
    seq: u64,
    kind: EventKind,
    prev: Vec<EventId>,
) -> EventId {
    let ev = UnsignedEvent {
        room,
        sender: who.device_id(),
        seq,
        prev,
        origin_ts_ms: seq,
        expires_ms: 3_600_000,
        kind,
        payload: vec![1; 10],
    }
    .sign(who)
    .unwrap();
    n.store
        .insert_event(
            &ev,
            &InsertMeta {
                priority: Priority::Stranger,
                source: Source::Local,
                received_ms: 1,
                carried: true,
            },
        )
        .unwrap();
    ev.id()
}
