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
pub struct SessionCache {
    sessions: lru::LruCache<RoomId, RoomSession>,
    /// Rooms (not this device's yet) holding an invite of this device
    /// that waits for the history it cites, at most
    /// [`MAX_CACHED_SESSIONS`]: their messages are always passed through
    /// the room's session, never skipped as a courier's.
    expecting: std::collections::BTreeSet<RoomId>,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache {
            sessions: lru::LruCache::new(
                std::num::NonZeroUsize::new(MAX_CACHED_SESSIONS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            expecting: std::collections::BTreeSet::new(),
        }
    }
}

impl SessionCache {
    /// Forgets every session (not the expected rooms: they rest on
    /// stored events).
    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    /// Records that `room` holds an invite of this device waiting for its
    /// history (ignored beyond [`MAX_CACHED_SESSIONS`] rooms).
    pub(super) fn expect(&mut self, room: RoomId) {
        if self.expecting.len() < MAX_CACHED_SESSIONS {
            self.expecting.insert(room);
        }
    }

    /// Whether `room` is expected ([`SessionCache::expect`]).
    pub(super) fn expects(&self, room: &RoomId) -> bool {
        self.expecting.contains(room)
    }

    /// `room` is this device's now (or left): no longer expected.
    pub(super) fn joined(&mut self, room: &RoomId) {
        self.expecting.remove(room);
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
            if let Some(s) = self.sessions.peek_mut(room) {
                let dag = s.dag();
                if dag.node(id).is_some() || dag.is_pending(id) {
                    stale.push(*room);
                }
            }
        }
        for room in stale {
            self.sessions.pop(&room);
        }
    }

    /// Whether a session of `room` is cached.
    pub(super) fn contains(&self, room: &RoomId) -> bool {
        self.sessions.contains(room)
    }

    pub(super) fn take(&mut self, room: &RoomId) -> Option<RoomSession> {
        self.sessions.pop(room)
    }

    pub(super) fn put(&mut self, room: RoomId, s: RoomSession) {
        self.sessions.put(room, s);
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCache({} rooms)", self.sessions.len())
    }
}
