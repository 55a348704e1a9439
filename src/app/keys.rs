//! A device's keys, loaded once ([`DeviceKeys`]): what the device core
//! keeps in memory instead of re-reading the identity files per operation
//! (`protocol-spec/daemon.md`, "Device core").

use super::{AppError, PREKEY_RING_KEY};
use crate::crypto::key_share::PrekeyRing;
use crate::crypto::{ContactCard, DeviceId, Identity};
use crate::store::Store;

/// A device's secrets and public card, loaded once: the identity, the own
/// contact card and the prekey ring. The daemon's device core keeps one in
/// memory; a command without a daemon loads it with [`Device::open`](crate::app::Device::open).
pub struct DeviceKeys {
    pub(super) identity: Identity,
    pub(super) card: ContactCard,
    pub(super) prekeys: PrekeyRing,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("device", &self.identity.device_id())
            .field("prekey_id", &self.card.prekey_id)
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    /// The keys of `identity` with its own `card`, and the prekey ring from
    /// `store` (created from the identity's published prekey and staged,
    /// not committed, the first time). Reads no file.
    pub fn load<S: Store>(
        identity: Identity,
        card: ContactCard,
        store: &mut S,
        now_ms: u64,
    ) -> Result<Self, AppError> {
        let prekeys = match store.get_secret(PREKEY_RING_KEY)? {
            Some(b) => PrekeyRing::from_bytes(&b)
                .map_err(|e| AppError::Corrupt(format!("prekey ring: {e}")))?,
            None => {
                let ring = PrekeyRing::from_identity(&identity, now_ms);
                store.put_secret(PREKEY_RING_KEY, &ring.to_bytes())?;
                ring
            }
        };
        if prekeys.public(card.prekey_id) != Some(card.prekey) {
            return Err(AppError::Corrupt(
                "the prekey published in card.txt is not in the stored prekey ring".into(),
            ));
        }
        Ok(Self {
            identity,
            card,
            prekeys,
        })
    }

    /// This device's ID.
    pub fn device_id(&self) -> DeviceId {
        self.identity.device_id()
    }

    /// This device's current contact card.
    pub fn card(&self) -> &ContactCard {
        &self.card
    }
}
