//! Rebuilding a room's session from its stored events (`protocol-spec/rooms.md`
//! §3.1): every stored event offered once in store order, what a pending
//! quota refused offered again once its sender has standing, and what is
//! still refused after the last pass left out of the view (still stored)
//! with why.

use super::*;

impl RoomSession {
    /// Rebuilds a session from persisted keys and the events in this node's
    /// store (verified when they were stored; not re-verified here). Events
    /// the DAG refuses (admission, limits) are left out and counted
    /// ([`RoomSession::dropped`]): the offending sender's events are
    /// dropped, never the room (`protocol-spec/rooms.md`, "Admission").
    pub fn restore<'a>(
        room: RoomId,
        me: DeviceId,
        keys: &[u8],
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Self, SessionError> {
        let order: Vec<&Event> = events.into_iter().collect();
        let events: BTreeMap<EventId, &Event> = order.iter().map(|e| (e.id(), *e)).collect();
        let (s, _) = Self::rebuild(room, me, keys)?.replay(
            |add| {
                order.iter().for_each(|e| add((*e).clone()));
                Ok::<(), SessionError>(())
            },
            |id| Ok(events.get(id).map(|e| (*e).clone())),
            false,
        )?;
        Ok(s)
    }

    /// Starts a streaming rebuild (see [`RoomSession::restore`]): feed
    /// stored events with [`Rebuild::add`], in any order, then
    /// [`Rebuild::finish`]. Only what the DAG admits is kept in memory.
    pub fn rebuild(room: RoomId, me: DeviceId, keys: &[u8]) -> Result<Rebuild, SessionError> {
        let mut session = Self::new(room, me);
        session.keys = RoomKeys::from_bytes(keys)?;
        session
            .dag
            .preset_roster_secrets(session.keys.roster.clone());
        Ok(Rebuild {
            session,
            updates: Vec::new(),
            retry: Vec::new(),
        })
    }
}

/// Most passes of a rebuild over stored events (the first, then offers
/// again of what a pending quota refused).
pub const MAX_REBUILD_PASSES: usize = 4;
/// Most events remembered for another pass (ID and sender), offered again
/// or waiting for their sender's standing: beyond it, an event refused by
/// a quota is dropped from the rebuilt view (still stored).
pub const MAX_REBUILD_RETRIES: usize = 65_536;
/// Most dropped events a rebuild lists with their reasons (the rest are
/// only counted): what `room repair` reports (`protocol-spec/daemon.md`,
/// "Control API").
pub const MAX_REBUILD_DROPPED_LISTED: usize = 256;

/// Why a rebuild leaves out an event a pending quota refused on every
/// pass.
pub const NO_STANDING_REASON: &str = "its sender has no standing in the room";
/// Why a rebuild leaves out an event still refused after the last pass.
pub const STILL_WAITING_REASON: &str = "still refused by a pending quota after the last pass";

/// A session being rebuilt from stored events ([`RoomSession::rebuild`]).
#[derive(Debug)]
pub struct Rebuild {
    session: RoomSession,
    /// Members' prekey updates, applied at the end (they need the
    /// membership of the whole history).
    updates: Vec<Event>,
    /// Events a pending quota refused, to offer again once their sender
    /// has standing (its invite may be among the events offered again);
    /// left out at the end if not. An outsider never gains standing, so
    /// its events are never read again: its flood costs one pass.
    retry: Vec<(EventId, DeviceId)>,
}

/// An event a rebuild left out, with why ([`RoomSession::dropped_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The event.
    pub event_id: EventId,
    /// Why (one line).
    pub reason: String,
}

impl Rebuild {
    /// Adds one stored event (verified when it was stored; not re-verified
    /// here). Returns whether the DAG holds it (admitted, or waiting for
    /// predecessors); refused events are counted in
    /// [`RoomSession::dropped`].
    pub fn add(&mut self, e: &Event) -> bool {
        let s = &mut self.session;
        match s.dag.insert_from_store(e) {
            Ok(_) => {
                if e.kind() == EventKind::PrekeyUpdate && e.sender() != s.me {
                    self.updates.push(e.clone());
                }
                true
            }
            Err(DagError::StrangerPendingFull | DagError::PendingFull)
                if self.retry.len() < MAX_REBUILD_RETRIES =>
            {
                // Stored order is (time, ID), not causal: a sender whose
                // clock runs behind can come before the event that gives it
                // standing. Offered again after this pass.
                self.retry.push((e.id(), e.sender()));
                false
            }
            Err(err) => {
                s.note_dropped(e.id(), err.to_string());
                false
            }
        }
    }

    /// Events a pending quota refused so far whose sender has standing
    /// now: the caller offers them again (in stored order) after the pass,
    /// at most [`MAX_REBUILD_PASSES`] passes in all. The others wait
    /// (their sender may gain standing in the next pass: the invite that
    /// gives it may itself be among the events offered again); an
    /// outsider's never gain it, so its flood costs one pass.
    pub fn take_retry(&mut self) -> Vec<EventId> {
        let standing = self.session.dag.standing();
        let (again, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(_, sender)| standing.contains(sender));
        self.retry = later;
        again.into_iter().map(|(id, _)| id).collect()
    }

    /// Runs the whole rebuild: `scan` passes every stored event (in stored
    /// order) to the function it is given; events a pending quota refused
    /// are then read again with `fetch` and offered again, in stored
    /// order, at most [`MAX_REBUILD_PASSES`] passes in all. Returns the
    /// session and the events its DAG holds (admitted or waiting for
    /// predecessors) when `keep`, in the order they were admitted (refused
    /// events are never kept). The one rebuild loop of [`RoomSession::restore`], the
    /// application's room loading and `room repair`.
    pub fn replay<E>(
        mut self,
        scan: impl FnOnce(&mut dyn FnMut(Event)) -> Result<(), E>,
        mut fetch: impl FnMut(&EventId) -> Result<Option<Event>, E>,
        keep: bool,
    ) -> Result<(RoomSession, Vec<Event>), E> {
        let mut kept = Vec::new();
        scan(&mut |ev: Event| {
            if self.add(&ev) && keep {
                kept.push(ev);
            }
        })?;
        for _ in 1..MAX_REBUILD_PASSES {
            let retry = self.take_retry();
            if retry.is_empty() {
                break;
            }
            for id in retry {
                if let Some(ev) = fetch(&id)?
                    && self.add(&ev)
                    && keep
                {
                    kept.push(ev);
                }
            }
        }
        Ok((self.finish(), kept))
    }

    /// The rebuilt session. Events still waiting for a retry count as
    /// dropped.
    pub fn finish(self) -> RoomSession {
        let mut s = self.session;
        for (id, sender) in self.retry {
            let reason = if s.dag.standing().contains(&sender) {
                STILL_WAITING_REASON
            } else {
                NO_STANDING_REASON
            };
            s.note_dropped(id, reason.to_owned());
        }
        // Members' rotated prekeys: senders must seal to the newest.
        for e in &self.updates {
            if let Ok(u) = accept_prekey_update(&mut s.dag, e) {
                s.note_prekey_update(e.sender(), u);
            }
        }
        s.members_seen = s.dag.members();
        s.next_seq = s.dag.max_seq(&s.me) + 1;
        s
    }
}
