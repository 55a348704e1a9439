//! The in-memory backend: for unit tests and the simulator.
//!
//! Writes apply to the live maps at once and are recorded in an undo log;
//! [`MemKv::commit`](super::kv::Kv::commit) clears the log, and a crash
//! ([`MemoryStore::crash`]) replays it backwards, so exactly the uncommitted
//! writes are lost, at a cost proportional to the batch, not the store.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::kv::{Kv, Pair, Table, be_u64};
use super::{Engine, StoreConfig, StoreError};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory ordered key-value backend with an undo log. Its `Debug`
/// shows sizes only (the maps hold key material), and secret values are
/// zeroized on drop.
#[derive(Default)]
pub struct MemKv {
    tables: BTreeMap<Table, Map>,
    undo: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    commits: u64,
}

impl std::fmt::Debug for MemKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemKv")
            .field("tables", &self.tables.len())
            .field("staged", &self.undo.len())
            .field("commits", &self.commits)
            .finish()
    }
}

impl Drop for MemKv {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(secrets) = self.tables.get_mut(&Table::Secrets) {
            for v in secrets.values_mut() {
                v.zeroize();
            }
        }
        for (t, _, old) in &mut self.undo {
            if *t == Table::Secrets
                && let Some(v) = old
            {
                v.zeroize();
            }
        }
    }
}

impl MemKv {
    /// An empty backend.
    pub fn new() -> Self {
        MemKv::default()
    }

    /// Number of commits so far (for tests and the simulator).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    fn undo_all(&mut self) {
        while let Some((t, k, old)) = self.undo.pop() {
            let map = self.tables.entry(t).or_default();
            match old {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
    }
}

impl Kv for MemKv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables.get(&t).and_then(|m| m.get(key)).cloned())
    }

    fn get_u64(&self, t: Table, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tables
            .get(&t)
            .and_then(|m| m.get(key))
            .and_then(|v| be_u64(v)))
    }

    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let old = self
            .tables
            .entry(t)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        self.undo.push((t, key.to_vec(), old));
        Ok(())
    }

    fn remove(&mut self, t: Table, key: &[u8]) -> Result<bool, StoreError> {
        let old = self.tables.entry(t).or_default().remove(key);
        let existed = old.is_some();
        if existed {
            self.undo.push((t, key.to_vec(), old));
        }
        Ok(existed)
    }

    fn range(
        &self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: usize,
        rev: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        let Some(map) = self.tables.get(&t) else {
            return Ok(Vec::new());
        };
        // BTreeMap::range panics on inverted or empty-excluded bounds.
        if bounds_empty(lo, hi) {
            return Ok(Vec::new());
        }
        let r = map.range::<[u8], _>((lo, hi));
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if rev {
            r.rev().take(limit).map(clone).collect()
        } else {
            r.take(limit).map(clone).collect()
        })
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.undo.clear();
        self.commits += 1;
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.undo_all();
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.undo.is_empty()
    }
}

/// Whether a pair of bounds selects nothing (and would panic a BTreeMap).
pub(crate) fn bounds_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// The in-memory store.
pub type MemoryStore = Engine<MemKv>;

impl Engine<MemKv> {
    /// An empty in-memory store with the default retention configuration.
    pub fn new_memory() -> MemoryStore {
        // The default configuration is valid.
        Engine::new_memory_with(StoreConfig::default())
            .unwrap_or_else(|_| Engine::from_kv_unchecked(MemKv::new(), StoreConfig::default()))
    }

    /// An empty in-memory store with `config`.
    pub fn new_memory_with(config: StoreConfig) -> Result<MemoryStore, StoreError> {
        Engine::open_kv(MemKv::new(), config)
    }

    /// Simulates a power cut: every uncommitted write is lost, committed
    /// state is kept.
    pub fn crash(&mut self) {
        self.kv_mut().undo_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{EventStore, MetaStore, SecretStore};

    #[test]
    fn debug_does_not_print_key_material() {
        let mut s = MemoryStore::new_memory();
        s.put_secret(b"ratchet/1", b"TOPSECRETCHAINKEY").unwrap();
        s.commit().unwrap();
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("TOPSECRET") && !dbg.contains("84, 79, 80"),
            "{dbg}"
        );
        assert!(dbg.contains("MemKv"));
    }

    #[test]
    fn counters_read_in_place_as_copied() {
        crate::store::kv::check_get_u64(&mut MemKv::new());
    }

    #[test]
    fn crash_keeps_commit_count_and_drops_staging() {
        let mut s = MemoryStore::new_memory();
        s.put_meta("k", b"v").unwrap();
        s.commit().unwrap();
        let commits = s.kv().commits();
        s.put_meta("k", b"w").unwrap();
        s.crash();
        assert_eq!(s.get_meta("k").unwrap().unwrap(), b"v");
        assert_eq!(s.kv().commits(), commits);
        assert!(!s.has_pending());
    }
}
