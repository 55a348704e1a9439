//! Prekey rotation (`protocol-spec/encryption.md`, "Prekey rotation").
//!
//! Key shares are sealed to a recipient's current prekey, never to its
//! long-term key. Every [`PREKEY_ROTATE_MS`] a device makes a new prekey,
//! keeps the old secret for [`PREKEY_GRACE_MS`] (shares in flight still
//! open), then deletes it, so a device seized later cannot open key shares
//! a homeserver kept for months. The new prekey reaches members as a
//! `PrekeyUpdate` event in every room this device is in, and contacts
//! through a re-issued contact card.
//!
//! Order, for crash safety: the ring (new secret) and the update events are
//! committed together; only then is `card.txt` rewritten. A crash between
//! the two leaves a card naming the previous prekey, which is still in the
//! ring (retired, within its grace period): [`Device::reissue_card`]
//! repairs it on the next start.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use super::{AppError, Device, PREKEY_RING_KEY, ROOM_KEYS_PREFIX};
use crate::crypto::ContactCard;
pub use crate::crypto::key_share::{PREKEY_GRACE_MS, PREKEY_ROTATE_MS};
use crate::datadir::{CARD_FILE, DataDir};
use crate::event::RoomId;
use crate::store::Store;

/// What a rotation did (`meshrelay prekey rotate --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyRotation {
    /// The new current prekey's ID.
    pub prekey_id: u32,
    /// Rooms told through a `PrekeyUpdate` event.
    pub rooms: usize,
    /// Retired prekeys deleted because their grace period ended.
    pub pruned: usize,
}

impl<S: Store> Device<S> {
    /// Whether the current prekey is older than [`PREKEY_ROTATE_MS`].
    pub fn prekey_due(&self, now_ms: u64) -> bool {
        self.keys.prekeys.should_rotate(now_ms)
    }

    /// Rotates the prekey and tells every room this device is a member
    /// of. Without deferred mode this commits and then re-issues the card;
    /// in deferred mode the driver commits, then calls
    /// [`Device::reissue_card`].
    pub fn rotate_prekey<R: CryptoRng + ?Sized>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<PrekeyRotation, AppError> {
        let mut ring = self.keys.prekeys.clone();
        let update = ring.rotate(now_ms, rng);
        let pruned = ring.prune(now_ms);
        let me = self.device_id();
        let mut rooms = 0;
        for key in self.store.secret_keys(ROOM_KEYS_PREFIX)? {
            let Some(room) = key
                .get(ROOM_KEYS_PREFIX.len()..)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(RoomId)
            else {
                continue;
            };
            let mut s = self.session(&room)?;
            if s.dag().holds_nothing() || !s.members().is_member(&me) {
                continue;
            }
            let out = s.publish_prekey(&self.keys.identity, &update, now_ms)?;
            let keys = zeroize::Zeroizing::new(out.keys().to_vec());
            let events = out.release();
            self.stage(&room, &keys, &events, &[], now_ms)?;
            rooms += 1;
        }
        self.store.put_secret(PREKEY_RING_KEY, &ring.to_bytes())?;
        self.keys.prekeys = ring;
        if self.deferred.is_none() {
            if let Err(e) = self.store.commit() {
                let _ = self.store.rollback();
                return Err(e.into());
            }
            self.reissue_card(now_ms)?;
        }
        Ok(PrekeyRotation {
            prekey_id: update.prekey_id,
            rooms,
            pruned,
        })
    }

    /// Rewrites `card.txt` if it does not publish the current prekey (after
    /// a rotation, or a crash between a rotation's commit and the card
    /// write). Call only when the prekey ring is committed. Returns whether
    /// the card changed.
    pub fn reissue_card(&mut self, now_ms: u64) -> Result<bool, AppError> {
        let current = self.keys.prekeys.current_id();
        if self.keys.card.prekey_id == current {
            return Ok(false);
        }
        let Some(prekey) = self.keys.prekeys.public(current) else {
            return Err(AppError::Corrupt(
                "the prekey ring has no current prekey".into(),
            ));
        };
        let created = now_ms.max(self.keys.card.created_ms.saturating_add(1));
        let card = ContactCard::create_with_prekey(
            &self.keys.identity,
            &self.keys.card.name,
            created,
            current,
            prekey,
        )
        .map_err(|e| AppError::Corrupt(format!("re-issuing the card: {e}")))?
        .with_bridge_flag(&self.keys.identity, self.keys.card.bridge);
        if let Some(dir) = &self.dir {
            DataDir::new(dir).write_atomic(CARD_FILE, card.to_text().as_bytes())?;
        }
        self.keys.card = card;
        Ok(true)
    }
}
