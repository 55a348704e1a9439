//! Plaintext retention: decrypted contents live only as long as their
//! events (`protocol-spec/app.md` §4, "Retention").
//!
//! The store drops events when they expire (their sender's signed
//! `expires_ms`) or when the budget evicts them; the contents the rooms layer
//! decrypted (`pt/`) and the reasons it could not (`ud/`) are application
//! data kept beside them. [`Device::prune_orphaned_plaintexts`] deletes those
//! whose event is no longer held, so an expired message does not outlive its
//! expiry in readable form. The daemon runs it with the hourly expiry pass.

use super::{AppError, Device, PLAINTEXT_PREFIX, SAVED_PREFIX, UNDECRYPTABLE_PREFIX};
use crate::event::EventId;
use crate::store::{SECRET_KEYS_PAGE, Store};

impl<S: Store> Device<S> {
    /// Deletes stored plaintexts and undecryptable-message reasons whose
    /// event is no longer held (expired or evicted). Stages the deletions
    /// without committing; returns how many entries were deleted.
    pub fn prune_orphaned_plaintexts(&mut self) -> Result<usize, AppError> {
        let mut removed = 0;
        for prefix in [PLAINTEXT_PREFIX, UNDECRYPTABLE_PREFIX, SAVED_PREFIX] {
            // A page at a time, whatever the number held: a page's values
            // (plaintexts) are read and dropped together.
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page =
                    self.store
                        .secret_keys_page(prefix, after.as_deref(), SECRET_KEYS_PAGE)?;
                for key in &page {
                    let id = key
                        .get(prefix.len()..)
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .map(EventId);
                    // A malformed name is not ours to judge: leave it.
                    let Some(id) = id else { continue };
                    if !self.store.has_event(&id)? && self.store.remove_secret(key)? {
                        removed += 1;
                    }
                }
                if page.len() < SECRET_KEYS_PAGE {
                    break;
                }
                after = page.into_iter().last();
            }
        }
        Ok(removed)
    }
}
