//! A bounded cache of validated, decompressed sender keys.
//!
//! Validating an ed25519 public key means decompressing its point, which
//! costs about a tenth of a signature check. A node sees a small, stable set
//! of senders (the members of its rooms), so [`crate::event::Event::decode_cached`]
//! keeps the decompressed keys of recent senders here, bounded by
//! [`KEY_CACHE_CAPACITY`] and evicted least-recently-used. Only keys that
//! passed validation are cached, so the cache never changes a verdict.

use ed25519_dalek::VerifyingKey;
use lru::LruCache;

use crate::crypto::keys::{DeviceId, KeyError};

/// Most sender keys a [`KeyCache`] holds (about 300 bytes each).
pub const KEY_CACHE_CAPACITY: usize = 256;

/// Validated sender keys, least-recently-used first out.
#[derive(Debug)]
pub struct KeyCache {
    keys: LruCache<[u8; 32], VerifyingKey>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::with_capacity(KEY_CACHE_CAPACITY)
    }
}

impl KeyCache {
    /// A cache of at most `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: crate::bounded::lru(capacity),
        }
    }

    /// Validates `bytes` as a device key, from the cache when possible.
    pub fn device_key(&mut self, bytes: &[u8; 32]) -> Result<(DeviceId, VerifyingKey), KeyError> {
        if let Some(vk) = self.keys.get(bytes) {
            return Ok((DeviceId::from_validated(*bytes), *vk));
        }
        let (id, vk) = DeviceId::from_bytes_with_key(bytes)?;
        self.keys.put(*bytes, vk);
        Ok((id, vk))
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;

    #[test]
    fn caches_valid_keys_only_and_stays_bounded() {
        let mut cache = KeyCache::with_capacity(2);
        let mut small = [0u8; 32];
        small[0] = 1;
        assert_eq!(cache.device_key(&small), Err(KeyError::SmallOrder));
        assert!(cache.is_empty());
        for s in 0..5u8 {
            let id = Identity::from_seed(&[s; 32]).device_id();
            let (got, _) = cache.device_key(id.as_bytes()).unwrap();
            assert_eq!(got, id);
            let (again, _) = cache.device_key(id.as_bytes()).unwrap();
            assert_eq!(again, id);
        }
        assert_eq!(cache.len(), 2);
    }
}
