//! Room sessions kept in memory ([`SessionCache`]), so the device core
//! does not rebuild a room from the store per batch or per operation
//! (`protocol-spec/daemon.md`, "Device core").

use crate::event::{EventId, RoomId};
use crate::room::RoomSession;

/// Most room sessions a [`SessionCache`] keeps.
pub const MAX_CACHED_SESSIONS: usize = 16;

/// Room sessions kept in memory between batches, so a daemon receiving a
/// stream of events does not replay each room's whole history per batch.
///
/// Only [`Device::absorb`] reads it; every other operation on a room drops
/// that room's entry (and a driver that runs other operations on a device
/// without the cache must [`SessionCache::clear`] it).
pub struct SessionCache(lru::LruCache<RoomId, RoomSession>);

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache(lru::LruCache::new(
            std::num::NonZeroUsize::new(MAX_CACHED_SESSIONS).unwrap_or(std::num::NonZeroUsize::MIN),
        ))
    }
}

impl SessionCache {
    /// Forgets every session.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Forgets every session whose room's DAG holds (admitted or waiting)
    /// one of `evicted`, the store's evictions since the last call; every
    /// session if they are unknown (`None`). A session must rest only on
    /// stored events: one that kept an evicted event in memory would admit
    /// later events (a member's own invite) that a rebuild from the store
    /// cannot, and the device would hold keys for a room whose history
    /// says it is no member.
    pub fn forget_holding(&mut self, evicted: Option<&[(RoomId, EventId)]>) {
        let Some(evicted) = evicted else {
            self.clear();
            return;
        };
        let mut stale = Vec::new();
        for (room, id) in evicted {
            if let Some(s) = self.0.peek_mut(room) {
                let dag = s.dag();
                if dag.node(id).is_some() || dag.is_pending(id) {
                    stale.push(*room);
                }
            }
        }
        for room in stale {
            self.0.pop(&room);
        }
    }

    /// Whether a session of `room` is cached.
    pub(super) fn contains(&self, room: &RoomId) -> bool {
        self.0.contains(room)
    }

    pub(super) fn take(&mut self, room: &RoomId) -> Option<RoomSession> {
        self.0.pop(room)
    }

    pub(super) fn put(&mut self, room: RoomId, s: RoomSession) {
        self.0.put(room, s);
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCache({} rooms)", self.0.len())
    }
}
