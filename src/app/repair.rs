//! `room repair`: the room's state rebuilt from its stored events
//! (`protocol-spec/app.md` §7, "Repair").
//!
//! The stored events are the truth; the room-key state is derived from
//! them (the key shares sealed to this device) plus this device's own
//! sending chain. When that state is damaged or over its storage limit,
//! every later `send` and import of the room fails. Repair replays the
//! stored events through the same rebuild as every other room operation
//! ([`crate::room::Rebuild::replay`]) starting from **empty** keys, derives
//! the inbound chains again ([`RoomSession::rederive_keys`]), drops the
//! sending chain (the next send starts a new one, shared with exactly the
//! current members), stores what became readable, and reports which stored
//! events the rebuilt history leaves out and why. Nothing is deleted from
//! the store, and decrypted contents already stored are kept.

use super::{
    AppError, Device, DroppedInfo, KeyStateInfo, RepairReport, pt_key, room_keys_key, ud_key,
};
use crate::event::RoomId;
use crate::room::{RoomKeys, RoomSession};
use crate::store::Store;

impl<S: Store> Device<S> {
    /// Rebuilds `room`'s state from its stored events (see the module
    /// docs) and commits it (in deferred mode it only stages). An unknown
    /// room (no stored event) is [`AppError::UnknownRoom`].
    pub fn room_repair(&mut self, room: &RoomId) -> Result<RepairReport, AppError> {
        let before = self.stored_keys(room)?;
        let empty = RoomKeys::new(*room).to_bytes();
        let mut stored = 0usize;
        let (mut s, events) = RoomSession::rebuild(*room, self.device_id(), &empty)?.replay(
            |add| {
                self.for_each_room_event(room, |ev| {
                    stored += 1;
                    add(ev);
                })
            },
            |id| self.stored_event(id),
            true,
        )?;
        if stored == 0 {
            return Err(AppError::UnknownRoom(*room));
        }
        let derived = s.rederive_keys(&self.keys.prekeys, &events);
        let me = self.device_id();
        let member = s.members().is_member(&me);
        self.forget_session(room);
        let keys = s.keys_bytes();
        // A courier never held keys: it still holds none.
        let write_keys = before.is_some() || member;
        if write_keys {
            self.store.put_secret(&room_keys_key(room), &keys)?;
        }
        for (id, content) in &derived.readable {
            if self.store.get_secret(&pt_key(id))?.is_none() {
                self.store.put_secret(&pt_key(id), &content.to_bytes())?;
            }
            self.store.remove_secret(&ud_key(id))?;
        }
        for (id, reason) in &derived.unreadable {
            if self.store.get_secret(&pt_key(id))?.is_none() {
                self.store.put_secret(&ud_key(id), reason.as_bytes())?;
            }
        }
        if self.deferred.is_none()
            && let Err(e) = self.store.commit()
        {
            let _ = self.store.rollback();
            return Err(e.into());
        }
        tracing::info!(%room, kept = events.len(), dropped = s.dropped(), "room repaired");
        Ok(RepairReport {
            room_id: room.to_string(),
            events: stored,
            kept: events.len(),
            dropped_count: s.dropped(),
            dropped: s
                .dropped_events()
                .iter()
                .map(|d| DroppedInfo {
                    event_id: d.event_id.to_string(),
                    reason: d.reason.clone(),
                })
                .collect(),
            key_state: KeyStateInfo {
                before_bytes: before.as_ref().map_or(0, |k| k.len()),
                after_bytes: if write_keys { keys.len() } else { 0 },
            },
        })
    }
}
