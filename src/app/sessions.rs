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
/// Only [`Device::absorb`](crate::app::Device::absorb) reads it; every other operation on a room drops
/// that room's entry (and a driver that runs other operations on a device
/// without the cache must [`SessionCache::clear`] it).
///
/// It also remembers the name of each room whose session it holds (the
/// last rename in display order, `protocol-spec/app.md` §4): a session
/// only ever gains leaves (an event enters the DAG once everything it
/// cites is there), and a leaf never changes the display order of the
/// events before it, so the name stays right until a rename becomes
/// readable or the session is dropped. `rooms` then costs no replay and
/// no scan of the room's history.
pub struct SessionCache {
    sessions: lru::LruCache<RoomId, RoomSession>,
    /// The names of rooms whose session is cached or lent out: dropped
    /// with the session, and when a rename becomes readable.
    names: std::collections::BTreeMap<RoomId, String>,
    /// Rooms (not this device's yet) holding an invite of this device
    /// that waits for the history it cites, at most
    /// [`MAX_CACHED_SESSIONS`]: their messages are always passed through
    /// the room's session, never skipped as a courier's.
    expecting: std::collections::BTreeSet<RoomId>,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache {
            sessions: crate::bounded::lru(MAX_CACHED_SESSIONS),
            expecting: std::collections::BTreeSet::new(),
            names: std::collections::BTreeMap::new(),
        }
    }
}

impl SessionCache {
    /// Forgets every session (not the expected rooms: they rest on
    /// stored events).
    pub fn clear(&mut self) {
        self.sessions.clear();
        self.names.clear();
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
            match self.sessions.peek_mut(room) {
                Some(s) => {
                    let dag = s.dag();
                    if dag.contains(id) {
                        stale.push(*room);
                    }
                }
                // A name without its session (lent out) may rest on it.
                None => {
                    self.names.remove(room);
                }
            }
        }
        for room in stale {
            self.forget(&room);
        }
    }

    /// Forgets `room`'s session and name.
    pub(super) fn forget(&mut self, room: &RoomId) {
        self.sessions.pop(room);
        self.names.remove(room);
    }

    /// Whether a session more fits without evicting one.
    pub(super) fn has_space(&self) -> bool {
        self.sessions.len() < self.sessions.cap().get()
    }

    /// The remembered name of `room` (its session is cached or lent).
    pub(super) fn name(&self, room: &RoomId) -> Option<&str> {
        self.names.get(room).map(String::as_str)
    }

    /// Remembers `room`'s name, read from the session now lent out.
    pub(super) fn set_name(&mut self, room: RoomId, name: String) {
        self.names.insert(room, name);
    }

    /// A rename of `room` became readable: its name is read again.
    pub(super) fn forget_name(&mut self, room: &RoomId) {
        self.names.remove(room);
    }

    /// Whether a session of `room` is cached.
    pub(super) fn contains(&self, room: &RoomId) -> bool {
        self.sessions.contains(room)
    }

    pub(super) fn take(&mut self, room: &RoomId) -> Option<RoomSession> {
        self.sessions.pop(room)
    }

    pub(super) fn put(&mut self, room: RoomId, s: RoomSession) {
        if let Some((gone, _)) = self.sessions.push(room, s)
            && gone != room
        {
            self.names.remove(&gone);
        }
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCache({} rooms)", self.sessions.len())
    }
}
