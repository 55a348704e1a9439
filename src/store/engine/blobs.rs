//! The opaque rows: the homeserver `/sync` token and uplink compositions,
//! contacts, secret key material, application metadata, and the usage report
//! (`protocol-spec/store.md`, §2 "Tables", §4 "Retention", "Counters").

use zeroize::Zeroizing;

use super::*;
use crate::crypto::keys::DeviceId;
use crate::store::{ContactStore, MetaStore, SecretStore, SyncStore};

impl<K: Kv> Engine<K> {
    pub(super) fn check_blob(
        what: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        if key.len() > MAX_BLOB_KEY_BYTES {
            return Err(StoreError::TooLarge {
                what,
                len: key.len(),
                max: MAX_BLOB_KEY_BYTES,
            });
        }
        if value.len() > MAX_BLOB_VALUE_BYTES {
            return Err(StoreError::TooLarge {
                what,
                len: value.len(),
                max: MAX_BLOB_VALUE_BYTES,
            });
        }
        Ok(())
    }
}

impl<K: Kv> SyncStore for Engine<K> {
    fn since_token(&self) -> Result<Option<String>, StoreError> {
        match self.kv.get(Table::AppMeta, SINCE_KEY)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| StoreError::Encoding {
                    what: "sync token",
                    source: CborError::InvalidUtf8,
                }),
        }
    }

    fn set_since_token(&mut self, token: Option<&str>) -> Result<(), StoreError> {
        match token {
            Some(t) => {
                if t.len() > MAX_SINCE_TOKEN_BYTES {
                    return Err(StoreError::TooLarge {
                        what: "sync token",
                        len: t.len(),
                        max: MAX_SINCE_TOKEN_BYTES,
                    });
                }
                self.kv.put(Table::AppMeta, SINCE_KEY, t.as_bytes())
            }
            None => self.kv.remove(Table::AppMeta, SINCE_KEY).map(|_| ()),
        }
    }

    fn put_uplink(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Self::check_blob("uplink bundle", key, value)?;
        self.kv.put(Table::Uplink, key, value)
    }

    fn get_uplink(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Table::Uplink, key)
    }

    fn remove_uplink(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        self.kv.remove(Table::Uplink, key)
    }

    fn uplink_keys(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .kv
            .range(
                Table::Uplink,
                Bound::Unbounded,
                Bound::Unbounded,
                limit.min(MAX_LIST_LIMIT),
                false,
            )?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }
}

impl<K: Kv> ContactStore for Engine<K> {
    fn put_contact(&mut self, device: &DeviceId, card: &[u8]) -> Result<(), StoreError> {
        Self::check_blob("contact card", device.as_bytes(), card)?;
        self.kv.put(Table::Contacts, device.as_bytes(), card)
    }

    fn get_contact(&self, device: &DeviceId) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Table::Contacts, device.as_bytes())
    }

    fn remove_contact(&mut self, device: &DeviceId) -> Result<bool, StoreError> {
        self.kv.remove(Table::Contacts, device.as_bytes())
    }

    fn contacts(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_page(Table::Contacts, 1024, |page| {
            for (k, v) in page {
                let b: [u8; 32] = k.as_slice().try_into().map_err(|_| bad("contact"))?;
                out.push((DeviceId::from_bytes(&b).map_err(|_| bad("contact"))?, v));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl<K: Kv> SecretStore for Engine<K> {
    fn put_secret(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        Self::check_blob("key material", key, value)?;
        self.kv.put(Table::Secrets, key, value)
    }

    fn get_secret(&self, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self.kv.get(Table::Secrets, key)?.map(Zeroizing::new))
    }

    fn remove_secret(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        self.kv.remove(Table::Secrets, key)
    }

    fn secret_keys_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .scan_prefix(
                Table::Secrets,
                prefix,
                after,
                limit.min(SECRET_KEYS_PAGE),
                false,
            )?
            .into_iter()
            .map(|(k, v)| {
                drop(Zeroizing::new(v));
                k
            })
            .collect())
    }
}

impl<K: Kv> MetaStore for Engine<K> {
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = cat(&[APP_PREFIX, key.as_bytes()]);
        Self::check_blob("metadata", &k, value)?;
        self.kv.put(Table::AppMeta, &k, value)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv
            .get(Table::AppMeta, &cat(&[APP_PREFIX, key.as_bytes()]))
    }

    fn occupancy(&self) -> Result<Occupancy, StoreError> {
        let class = |p| -> Result<ClassUsage, StoreError> {
            Ok(ClassUsage {
                events: self.counter(c_events(p))?,
                bytes: self.counter(c_bytes(p))?,
            })
        };
        Ok(Occupancy {
            own_undelivered: class(Priority::OwnUndelivered)?,
            own_room: class(Priority::OwnRoom)?,
            stranger: class(Priority::Stranger)?,
        })
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let o = self.occupancy()?;
        Ok(StoreStats {
            events: o.events(),
            bytes: o.bytes(),
            own_undelivered: o.own_undelivered,
            own_room: o.own_room,
            stranger: o.stranger,
            evictions: Evictions {
                expired: self.counter(C_EVICT_EXPIRED)?,
                stranger_pool: self.counter(C_EVICT_POOL)?,
                budget: self.counter(C_EVICT_BUDGET)?,
                delivered: self.counter(C_EVICT_DELIVERED)?,
            },
            rejections: Rejections {
                expired: self.counter(C_REJ_EXPIRED)?,
                from_future: self.counter(C_REJ_FUTURE)?,
                link_budget: self.counter(C_REJ_LINK)?,
                key_budget: self.counter(C_REJ_KEY)?,
                full: self.counter(C_REJ_FULL)?,
            },
            forks: self.counter(C_FORKS)?,
            forks_unrecorded: self.counter(C_FORKS_UNRECORDED)?,
        })
    }

    fn config(&self) -> &StoreConfig {
        &self.config
    }
}
