//! Bundle import through the rooms' sessions (`protocol-spec/app.md` §3).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    AppError, Device, FailedRoom, ImportSummary, RejectedInfo, UnauthorizedInfo, pt_key,
    room_keys_key, ud_key,
};
use crate::proto::urgent::UrgentMark;
use std::io::Read;

use crate::bundle::{self, BundleStream, RawEvent};
use crate::crypto::DeviceId;
use crate::event::{Event, EventId, RoomId};
use crate::limits::MAX_EVENT_BYTES;
use crate::room::membership::invites_device;
use crate::room::{Content, DagError, Received, RoomKeys, RoomSession, SessionError};
use crate::store::{InsertMeta, InsertOutcome, Priority, Source, Store};

/// Most event bytes a streamed import verifies and stores per batch
/// (`protocol-spec/app.md` §3): with one event being decoded and the
/// store's write buffer, what bounds an import's memory.
pub const IMPORT_BATCH_BYTES: usize = 1024 * 1024;

/// Most staged events [`Device::absorb`] reads and processes at once.
pub const ABSORB_CHUNK_EVENTS: usize = 1024;

/// Why a bundle's event of `n` bytes is rejected unread.
pub fn oversize_reason(n: u64) -> String {
    format!("event is {n} bytes, over the {MAX_EVENT_BYTES}-byte limit")
}

/// What the batches of a streamed import did so far.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// Some room of some batch was stored.
    stored: bool,
    /// The first error of a batch whose rooms all failed.
    first_err: Option<AppError>,
}

/// The batch in causal order: an event after the batch's events it cites,
/// otherwise in the given order (Kahn's algorithm over the batch). Time
/// order is not causal when clocks disagree, and the room's pending quotas
/// are small for senders without standing yet (`rooms.md`, "Admission").
fn causal_order<'a>(evs: &[&'a Event]) -> Vec<&'a Event> {
    let pos: BTreeMap<EventId, usize> = evs.iter().enumerate().map(|(i, e)| (e.id(), i)).collect();
    let mut waiting = vec![0usize; evs.len()];
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, e) in evs.iter().enumerate() {
        for p in e.prev() {
            if let Some(&j) = pos.get(p)
                && j != i
            {
                waiting[i] += 1;
                children.entry(j).or_default().push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..evs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut out = Vec::with_capacity(evs.len());
    while let Some(i) = ready.pop_first() {
        out.push(evs[i]);
        for &c in children.get(&i).into_iter().flatten() {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.insert(c);
            }
        }
    }
    // A cycle cannot be signed, but never lose an event: append the rest.
    if out.len() < evs.len() {
        let done: BTreeSet<EventId> = out.iter().map(|e| e.id()).collect();
        out.extend(evs.iter().filter(|e| !done.contains(&e.id())));
    }
    out
}

/// Whether a session error is the room's admission refusing an event (as
/// opposed to a malformed or forged one).
fn admission_refusal(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::Dag(
            DagError::NotAuthorized(_) | DagError::StrangerPendingFull | DagError::PendingFull
        )
    )
}

/// Whether the room's history holds `ev`, or it waits for predecessors
/// from a sender with standing: such events are the room's own class
/// (`protocol-spec/store.md`, "Priority classes").
fn holds_with_standing(s: &mut RoomSession, ev: &Event, me: &DeviceId) -> bool {
    let id = ev.id();
    let dag = s.dag();
    dag.admitted(&id)
        || (dag.is_pending(&id) && (ev.sender() == *me || dag.standing().contains(&ev.sender())))
}

impl<S: Store> Device<S> {
    /// Raises a stored stranger-class event to the own-room class.
    fn promote(&mut self, id: &EventId) -> Result<(), AppError> {
        if self.store.event_info(id)?.map(|i| i.priority) == Some(Priority::Stranger) {
            self.store.set_priority(id, Priority::OwnRoom)?;
        }
        Ok(())
    }

    /// Lowers a stored own-room-class event to the stranger class (the
    /// room's admission refused it). Own events are never lowered.
    fn demote(&mut self, id: &EventId) -> Result<(), AppError> {
        if self.store.event_info(id)?.map(|i| i.priority) == Some(Priority::OwnRoom) {
            self.store.set_priority(id, Priority::Stranger)?;
        }
        Ok(())
    }

    /// One stored event offered again to the room's session: received if
    /// the session left it out (carried as a courier's, or refused while
    /// its sender had no standing), else decrypted (with `decrypt`, a
    /// member's) if it is a message still unread.
    fn retry_event(
        &mut self,
        s: &mut RoomSession,
        ev: &Event,
        decrypt: bool,
    ) -> Result<(), AppError> {
        let id = ev.id();
        let dag = s.dag();
        if !dag.contains(&id) && !dag.is_pending(&id) {
            for r in s.receive(&self.keys.prekeys, ev).unwrap_or_default() {
                if let Received::Message {
                    event_id,
                    sender,
                    ts,
                    content,
                } = r
                {
                    let mark = UrgentMark {
                        id: event_id,
                        room: ev.room(),
                        sender,
                        ts_ms: ts,
                    };
                    self.keep_plaintext(mark, &content)?;
                }
            }
            return Ok(());
        }
        if decrypt
            && ev.kind().in_sender_chain()
            && self.store.get_secret(&pt_key(&id))?.is_none()
            && let Ok(content) = s.decrypt(ev)
        {
            let mark = UrgentMark {
                id,
                room: ev.room(),
                sender: ev.sender(),
                ts_ms: ev.origin_ts_ms(),
            };
            self.keep_plaintext(mark, &content)?;
        }
        Ok(())
    }

    /// Verifies a bundle and stores its new events, passing them through
    /// the rooms' sessions (key shares, decryption, retries). The framing
    /// is checked first, so a malformed bundle stores nothing; then the
    /// bundle is imported as [`Device::import_from`] does.
    pub fn import(&mut self, bytes: &[u8], now_ms: u64) -> Result<ImportSummary, AppError> {
        bundle::check_framing(bytes)?;
        self.import_from(bytes, now_ms)
    }

    /// Imports a bundle read from `r`, streaming (`protocol-spec/app.md`
    /// §3): events are decoded and verified one at a time and stored in
    /// batches of at most [`IMPORT_BATCH_BYTES`] of event bytes, one commit
    /// per room per batch, so memory stays bounded whatever the bundle's
    /// size. The summary is returned only after the last commit. A framing
    /// error found after a batch was committed still fails the import
    /// (those events stay stored: they were verified); callers that can
    /// read the input twice check the framing first
    /// ([`bundle::check_framing`]).
    pub fn import_from(&mut self, r: impl Read, now_ms: u64) -> Result<ImportSummary, AppError> {
        let mut stream = BundleStream::new(r)?;
        let mut sum = ImportSummary::default();
        let mut seen: BTreeSet<EventId> = BTreeSet::new();
        let mut batch: Vec<(usize, Event)> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut outcome = BatchOutcome::default();
        let mut index = 0usize;
        while let Some(raw) = stream.next_event()? {
            let i = index;
            index += 1;
            let reject = |sum: &mut ImportSummary, id: Option<EventId>, reason: String| {
                sum.rejections.push(RejectedInfo {
                    index: i,
                    event_id: id.map(|id| id.to_string()),
                    reason,
                });
            };
            let mut ev = match raw {
                RawEvent::Oversize(n) => {
                    reject(&mut sum, None, oversize_reason(n));
                    continue;
                }
                RawEvent::Bytes(b) => match Event::decode_unverified(&b) {
                    Ok(ev) => ev,
                    Err(e) => {
                        reject(&mut sum, None, e.to_string());
                        continue;
                    }
                },
            };
            if seen.contains(&ev.id()) || self.store.has_event(&ev.id())? {
                sum.duplicates += 1;
                continue;
            }
            if let Err(reason) = bundle::admit(&mut ev, now_ms, None) {
                reject(&mut sum, Some(ev.id()), reason);
                continue;
            }
            seen.insert(ev.id());
            batch_bytes += ev.bytes().len();
            batch.push((i, ev));
            if batch_bytes >= IMPORT_BATCH_BYTES {
                self.import_batch(std::mem::take(&mut batch), now_ms, &mut sum, &mut outcome);
                batch_bytes = 0;
            }
        }
        self.import_batch(batch, now_ms, &mut sum, &mut outcome);
        if !outcome.stored
            && let Some(e) = outcome.first_err
        {
            return Err(e);
        }
        sum.rejected = sum.rejections.len();
        Ok(sum)
    }

    /// Stores one batch of a streamed import (verified, new events with
    /// their bundle positions), one commit per room.
    fn import_batch(
        &mut self,
        batch: Vec<(usize, Event)>,
        now_ms: u64,
        sum: &mut ImportSummary,
        outcome: &mut BatchOutcome,
    ) {
        if batch.is_empty() {
            return;
        }
        let mut by_room: BTreeMap<RoomId, Vec<&Event>> = BTreeMap::new();
        let mut index_of: BTreeMap<EventId, usize> = BTreeMap::new();
        for (i, ev) in &batch {
            index_of.insert(ev.id(), *i);
            by_room.entry(ev.room()).or_default().push(ev);
        }
        match self.receive_grouped(&by_room, Source::Import, now_ms, &index_of, sum) {
            Ok(()) => outcome.stored = true,
            Err(e) => {
                outcome.first_err.get_or_insert(e);
            }
        }
    }

    /// Stores verified events that arrived from `source` (the homeserver's
    /// downlink, a bundle file) and passes them through their rooms'
    /// sessions, exactly like [`Device::import`] does for a bundle's events:
    /// key shares, decryption, retries, re-classing on join. Events must
    /// already be verified ([`Event::decode`]). One commit at the end; the
    /// summary is returned only after it. `index` in a rejection is the
    /// event's position in `events`.
    pub fn receive_events(
        &mut self,
        events: &[Event],
        source: Source,
        now_ms: u64,
    ) -> Result<ImportSummary, AppError> {
        let mut by_room: BTreeMap<RoomId, Vec<&Event>> = BTreeMap::new();
        let mut index_of: BTreeMap<EventId, usize> = BTreeMap::new();
        for (i, ev) in events.iter().enumerate() {
            if index_of.contains_key(&ev.id()) {
                continue;
            }
            index_of.insert(ev.id(), i);
            by_room.entry(ev.room()).or_default().push(ev);
        }
        let mut sum = ImportSummary {
            duplicates: events.len() - index_of.len(),
            ..ImportSummary::default()
        };
        self.receive_grouped(&by_room, source, now_ms, &index_of, &mut sum)?;
        sum.rejected = sum.rejections.len();
        Ok(sum)
    }

    /// Runs grouped events through their rooms, one commit per room
    /// (`protocol-spec/app.md` §3): a room that fails is rolled back and
    /// listed in `sum.failed_rooms` with its reason, and the other rooms
    /// are still stored. Only when every room failed is the (first) error
    /// returned, as before.
    fn receive_grouped(
        &mut self,
        by_room: &BTreeMap<RoomId, Vec<&Event>>,
        source: Source,
        now_ms: u64,
        index_of: &BTreeMap<EventId, usize>,
        sum: &mut ImportSummary,
    ) -> Result<(), AppError> {
        let mut first_err = None;
        let mut stored_rooms = 0usize;
        for (room, evs) in by_room {
            // What this room adds to the summary is dropped if it fails.
            let mark = (
                sum.imported,
                sum.duplicates,
                sum.rejections.len(),
                sum.unauthorized.len(),
            );
            let result = self
                .import_room(room, evs, now_ms, index_of, &BTreeSet::new(), source, sum)
                .and_then(|()| self.store.commit().map_err(AppError::from));
            match result {
                Ok(()) => stored_rooms += 1,
                Err(e) => {
                    let _ = self.store.rollback();
                    // The cached session may hold what was rolled back.
                    self.forget_session(room);
                    sum.imported = mark.0;
                    sum.duplicates = mark.1;
                    sum.rejections.truncate(mark.2);
                    sum.unauthorized.truncate(mark.3);
                    sum.failed_rooms.push(FailedRoom {
                        room_id: room.to_string(),
                        reason: e.to_string(),
                    });
                    first_err.get_or_insert(e);
                }
            }
        }
        if stored_rooms == 0
            && let Some(e) = first_err
        {
            return Err(e);
        }
        Ok(())
    }

    /// Passes events that the node has just stored (staged, not yet
    /// committed) through their rooms' sessions: key shares, decryption,
    /// retries, re-classing on join. Stages the results and does not
    /// commit: the driver commits them together with the node's writes, so
    /// a crash loses both or neither. Returns what the sessions refused.
    ///
    /// The events are read and processed `ABSORB_CHUNK_EVENTS` at a time
    /// (a group commit may stage tens of thousands), so memory stays
    /// bounded whatever a batch holds.
    pub fn absorb(&mut self, staged: &[EventId], now_ms: u64) -> Result<ImportSummary, AppError> {
        let mut sum = ImportSummary::default();
        // A session restored from the store during a chunk leaves out that
        // chunk's events and the later ones (they are received next), and
        // holds the earlier ones.
        let mut rest: BTreeSet<EventId> = staged.iter().copied().collect();
        for chunk in staged.chunks(ABSORB_CHUNK_EVENTS) {
            self.absorb_chunk(chunk, &rest, now_ms, &mut sum)?;
            for id in chunk {
                rest.remove(id);
            }
        }
        sum.rejected = sum.rejections.len();
        Ok(sum)
    }

    fn absorb_chunk(
        &mut self,
        staged: &[EventId],
        set: &BTreeSet<EventId>,
        now_ms: u64,
        sum: &mut ImportSummary,
    ) -> Result<(), AppError> {
        let mut by_room: BTreeMap<RoomId, Vec<Event>> = BTreeMap::new();
        for id in staged {
            let Some(b) = self.store.get_event(id)? else {
                continue;
            };
            // Staged by the node, which verified it (the rooms layer does
            // not verify it again).
            let ev = Event::decode_stored(&b)
                .map_err(|e| AppError::Corrupt(format!("stored event {id}: {e}")))?;
            by_room.entry(ev.room()).or_default().push(ev);
        }
        for (room, evs) in &by_room {
            // A courier's messages: nothing to decrypt, nothing to learn
            // (a later invite retries earlier messages anyway). Skipping
            // them keeps a relay from replaying a room per batch.
            // A cached session may hold events waiting for these (a new
            // member's invite waiting for the messages it cites): those
            // must be received.
            // So may a room whose invite of this device waits for them:
            // its messages always go through its session, which holds
            // every event stored so far (a courier's session that had to
            // leave one out is not kept, so the next chunk rebuilds it
            // from the store).
            let expected = self.cache.as_ref().is_some_and(|c| c.expects(room));
            let in_flight = expected || self.cache.as_ref().is_some_and(|c| c.contains(room));
            if !in_flight
                && self.stored_keys(room)?.is_none()
                && evs.iter().all(|e| e.kind().in_sender_chain())
            {
                self.forget_session(room);
                continue;
            }
            let refs: Vec<&Event> = evs.iter().collect();
            self.import_room(
                room,
                &refs,
                now_ms,
                &BTreeMap::new(),
                set,
                Source::Import,
                sum,
            )?;
        }
        Ok(())
    }

    /// `staged`: events already inserted by the node (left out of the
    /// restored session and not inserted again). `source` is recorded with
    /// newly inserted events (the homeserver's are not queued for upload).
    #[allow(clippy::too_many_arguments)]
    fn import_room(
        &mut self,
        room: &RoomId,
        evs: &[&Event],
        now_ms: u64,
        index_of: &BTreeMap<EventId, usize>,
        staged: &BTreeSet<EventId>,
        source: Source,
        sum: &mut ImportSummary,
    ) -> Result<(), AppError> {
        let me = self.device_id();
        let had_keys = self.stored_keys(room)?.is_some();
        // Absorbing (events staged by the node): a cached session already
        // holds everything stored before them. Anything else makes the
        // cached session stale.
        let cached = if staged.is_empty() {
            self.forget_session(room);
            None
        } else {
            self.cache.as_mut().and_then(|c| c.take(room))
        };
        let mut s = match cached {
            Some(s) => s,
            None => self.session_only(room, staged)?,
        };
        let before = s.members();
        let standing_before = s.dag().standing().clone();
        let mut retry: BTreeSet<DeviceId> = BTreeSet::new();
        let mut rekey = false;
        // An event the session's pending pools had no room for: the
        // session no longer holds everything stored.
        let mut left_out = false;
        for ev in causal_order(evs) {
            let member = s.members().is_member(&me) || before.is_member(&me);
            let received = match s.receive(&self.keys.prekeys, ev) {
                Ok(r) => r,
                Err(e) => {
                    // A courier (no keys, not a member) carries what the
                    // room's admission does not let into its own view, as
                    // stranger traffic; a member refuses it
                    // (`protocol-spec/rooms.md`, "Admission").
                    left_out |= matches!(
                        e,
                        SessionError::Dag(DagError::PendingFull | DagError::StrangerPendingFull)
                    );
                    let carry = !(had_keys || member) && admission_refusal(&e);
                    let id = ev.id();
                    if carry && !staged.contains(&id) {
                        let meta = InsertMeta {
                            priority: Priority::Stranger,
                            source,
                            received_ms: now_ms,
                            carried: false,
                        };
                        if self.store.insert_event(ev, &meta)? == InsertOutcome::Inserted {
                            sum.imported += 1;
                            continue;
                        }
                    } else if staged.contains(&id) {
                        // Stored by the node already: out of the room's
                        // class, first to go.
                        self.demote(&id)?;
                    }
                    if !carry {
                        sum.rejections.push(RejectedInfo {
                            index: index_of.get(&id).copied().unwrap_or(0),
                            event_id: Some(id.to_string()),
                            reason: e.to_string(),
                        });
                    }
                    continue;
                }
            };
            let member = member || s.members().is_member(&me);
            // Priority from the sender's standing, never from the room ID
            // alone: in the room's history, or waiting from a sender with
            // standing.
            let own_class = member && holds_with_standing(&mut s, ev, &me);
            let meta = InsertMeta {
                priority: if own_class {
                    Priority::OwnRoom
                } else {
                    Priority::Stranger
                },
                source,
                received_ms: now_ms,
                carried: false,
            };
            let reject = |reason: String| RejectedInfo {
                index: index_of.get(&ev.id()).copied().unwrap_or(0),
                event_id: Some(ev.id().to_string()),
                reason,
            };
            let outcome = if staged.contains(&ev.id()) {
                if own_class {
                    self.promote(&ev.id())?;
                } else {
                    self.demote(&ev.id())?;
                }
                InsertOutcome::Inserted
            } else {
                self.store.insert_event(ev, &meta)?
            };
            match outcome {
                InsertOutcome::Inserted => sum.imported += 1,
                InsertOutcome::Duplicate => {
                    sum.duplicates += 1;
                    continue;
                }
                InsertOutcome::Fork(f) => {
                    sum.rejections.push(reject(format!(
                        "fork: sequence {} of this sender is already used by event {}",
                        f.seq, f.existing
                    )));
                    continue;
                }
                InsertOutcome::Rejected(r) => {
                    sum.rejections
                        .push(reject(format!("not stored: {r:?}").to_lowercase()));
                    continue;
                }
            }
            if ev.sender() == me {
                // Another copy of this device sent here: start a new chain.
                rekey = true;
            }
            for r in received {
                match r {
                    Received::Message {
                        event_id,
                        sender,
                        ts,
                        content,
                    } => {
                        if !matches!(content, Content::Receipt(_)) {
                            sum.readable.insert(*room);
                        }
                        let mark = UrgentMark {
                            id: event_id,
                            room: *room,
                            sender,
                            ts_ms: ts,
                        };
                        self.keep_plaintext(mark, &content)?;
                    }
                    Received::Undecryptable {
                        event_id, reason, ..
                    } => {
                        self.store
                            .put_secret(&ud_key(&event_id), reason.as_bytes())?;
                    }
                    Received::KeysInstalled { sender } => {
                        retry.insert(sender);
                    }
                    Received::Membership {
                        event_id,
                        rejected: Some(reason),
                    }
                    | Received::KeyRejected { event_id, reason } => {
                        sum.unauthorized.push(UnauthorizedInfo {
                            event_id: event_id.to_string(),
                            reason,
                        });
                    }
                    Received::Released { event_id } => {
                        if member {
                            self.promote(&event_id)?;
                        }
                    }
                    Received::Pending { event_id, .. } => {
                        if !member && event_id == ev.id() && invites_device(ev, &me) {
                            sum.expecting.insert(*room);
                            if let Some(c) = self.cache.as_mut() {
                                c.expect(*room);
                            }
                        }
                    }
                    Received::Membership { rejected: None, .. } => {}
                }
            }
        }
        // Senders who gained standing in this batch (their invite was
        // admitted): what they sent before it was stored as strangers'
        // traffic, and a flood could evict it from the strangers' pool
        // (`protocol-spec/store.md`, "Priority classes").
        // A courier re-offers them too: a sender's events that came before
        // the event giving it standing (the room's create, arriving late)
        // were refused by the session's strangers' pending pool, and the
        // room's later events (this device's own invite among them) would
        // wait for them for ever.
        let member_now = s.members().is_member(&me);
        retry.extend(
            s.dag()
                .standing()
                .difference(&standing_before)
                .filter(|d| **d != me)
                .copied(),
        );
        // Events of those senders and of senders whose keys arrived (read
        // one at a time: a room's history is never held in memory), in each
        // sender's sequence order: the store holds them in event-ID order,
        // and a chain decrypted out of order keeps at most
        // `MAX_SKIPPED_KEYS` skipped keys, so a long history read in ID
        // order would lose its oldest messages. Each is received if the
        // session left it out, decrypted if it is a message, and raised to
        // the room's class once the room holds it.
        if !retry.is_empty() {
            // Messages may become readable: a delivered receipt is due.
            if member_now {
                sum.readable.insert(*room);
            }
            let mut ids = Vec::new();
            self.for_each_room_event(room, |ev| {
                if retry.contains(&ev.sender()) && ev.sender() != me {
                    ids.push((ev.sender(), ev.seq(), ev.id()));
                }
            })?;
            ids.sort_unstable();
            for (_, _, id) in ids {
                let Some(ev) = self.stored_event(&id)? else {
                    continue;
                };
                self.retry_event(&mut s, &ev, member_now)?;
                if member_now && holds_with_standing(&mut s, &ev, &me) {
                    self.promote(&id)?;
                }
            }
        }
        let after = s.members();
        let changed = before.members.keys().ne(after.members.keys());
        if after.is_member(&me) && (changed || !before.is_member(&me)) {
            sum.members
                .insert(*room, after.members.keys().copied().collect());
        }
        if after.is_member(&me)
            && let Some(c) = self.cache.as_mut()
        {
            c.joined(room);
        }
        if !after.is_member(&me) && !after.members.is_empty() {
            // A carried room: its members' events are carried at link speed.
            sum.carried
                .insert(*room, after.members.keys().copied().collect());
        }
        if after.is_member(&me) && !before.is_member(&me) {
            // Joined: what this device carried as a courier and the room's
            // admission lets in is now its own room's history (a higher
            // retention class); an outsider's events stay strangers'.
            let mut ids = Vec::new();
            self.for_each_room_event(room, |ev| {
                if holds_with_standing(&mut s, &ev, &me) {
                    ids.push(ev.id());
                }
            })?;
            for id in ids {
                self.promote(&id)?;
            }
        }
        let keep = |dev: &mut Self, s| {
            if !staged.is_empty()
                && let Some(c) = dev.cache.as_mut()
            {
                c.put(*room, s);
            }
        };
        if !(had_keys || after.is_member(&me)) {
            // A courier: it stores and forwards, and holds no keys. A
            // session that left an event out is rebuilt from the store by
            // the next batch that needs it.
            if !left_out {
                keep(self, s);
            }
            return Ok(());
        }
        let mut keys = RoomKeys::from_bytes(&s.keys_bytes()).map_err(SessionError::from)?;
        if (changed || rekey) && after.is_member(&me) {
            // A restored session would not know that a new chain is due.
            // (The session itself is not kept: its keys now differ.)
            keys.outbound = None;
        } else {
            keep(self, s);
        }
        self.store
            .put_secret(&room_keys_key(room), &keys.to_bytes())?;
        Ok(())
    }
}
