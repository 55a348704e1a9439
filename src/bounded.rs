//! Bounded caches that allocate as they fill.
//!
//! `lru::LruCache::new(cap)` reserves its whole hash table when it is
//! made: a node's copy records (65,536) alone took 2 MiB before holding
//! anything, and a simulated node with all its caches about 3 MiB, which is
//! what bounded a simulation's size (issue 23: ≤ 0.5 MB per simulated
//! node). [`lru`](mod@lru) makes the same bounded cache with an empty table that
//! grows with what it holds: the bound and the eviction order are
//! unchanged; only memory that is never used is no longer taken.

use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

/// A least-recently-used cache of at most `cap` entries (at least one)
/// whose table grows as entries arrive.
pub fn lru<K: Hash + Eq, V>(cap: usize) -> LruCache<K, V> {
    let mut cache = LruCache::unbounded();
    cache.resize(NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN));
    cache
}

#[cfg(test)]
mod tests {
    use super::lru;

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let mut c = lru::<u32, u32>(3);
        assert_eq!(c.cap().get(), 3);
        for k in 0..3 {
            c.put(k, k);
        }
        assert_eq!(c.get(&0), Some(&0)); // 1 is now the least recent
        c.put(3, 3);
        assert_eq!(c.len(), 3);
        assert!(!c.contains(&1));
        assert!(c.contains(&0) && c.contains(&2) && c.contains(&3));
        // A push over the bound hands back the evicted entry.
        assert_eq!(c.push(4, 4), Some((2, 2)));
        assert_eq!(lru::<u8, u8>(0).cap().get(), 1);
    }
}
