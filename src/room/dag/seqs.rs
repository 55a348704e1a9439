//! One sender's sequence numbers in a room's DAG (`protocol-spec/rooms.md`,
//! "Gaps"), as runs of consecutive numbers.
//!
//! A sender numbers its events 1, 2, 3, …, so its sequence numbers are
//! almost always one run, with a few more while a gap is open. Each run is
//! its first number and the arena indices of its events: 4 bytes per event
//! instead of a search-tree entry per event. The first event with a number
//! is kept here; further events with the same number (forks) are listed by
//! the arena.

use std::collections::BTreeMap;

/// Runs of consecutive sequence numbers: first number → arena index of each.
#[derive(Debug, Clone, Default)]
pub(super) struct SeqRuns {
    runs: BTreeMap<u64, Vec<u32>>,
}

impl SeqRuns {
    /// The arena index of the first event numbered `seq`.
    pub fn get(&self, seq: u64) -> Option<u32> {
        let (&start, run) = self.runs.range(..=seq).next_back()?;
        run.get(usize::try_from(seq - start).ok()?).copied()
    }

    /// Records event `i` numbered `seq`; returns the event already holding
    /// `seq`, if any (then nothing is recorded).
    pub fn insert(&mut self, seq: u64, i: u32) -> Option<u32> {
        if let Some(first) = self.get(seq) {
            return Some(first);
        }
        let next = seq.checked_add(1).and_then(|n| self.runs.remove_entry(&n));
        let before = self.runs.range_mut(..seq).next_back();
        match before {
            // `seq` extends the run before it (whose end is `seq`, as
            // `get` found no event numbered `seq`).
            Some((&start, run)) if start.saturating_add(run.len() as u64) == seq => {
                run.push(i);
                if let Some((_, after)) = next {
                    run.extend(after);
                }
            }
            _ => {
                let mut run = vec![i];
                if let Some((_, after)) = next {
                    run.extend(after);
                }
                self.runs.insert(seq, run);
            }
        }
        None
    }

    /// The highest number (0 if none).
    pub fn max(&self) -> u64 {
        self.runs.last_key_value().map_or(0, |(&start, run)| {
            start + (run.len() as u64).saturating_sub(1)
        })
    }

    /// (number, arena index), highest first.
    pub fn newest_first(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.runs.iter().rev().flat_map(|(&start, run)| {
            run.iter()
                .enumerate()
                .rev()
                .map(move |(k, &i)| (start + k as u64, i))
        })
    }

    /// Missing ranges below the highest number, from 1, ascending.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut expect = 1u64;
        for (&start, run) in &self.runs {
            if start > expect {
                out.push((expect, start - 1));
            }
            expect = start.saturating_add(run.len() as u64);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::SeqRuns;

    proptest::proptest! {
        /// Whatever order numbers arrive in, the runs answer as a map of
        /// number → first index would.
        #[test]
        fn runs_answer_like_a_map(
            seqs in proptest::collection::vec(proptest::prop_oneof![0u64..60, (u64::MAX - 3)..=u64::MAX], 0..80),
        ) {
            let mut runs = SeqRuns::default();
            let mut map: BTreeMap<u64, u32> = BTreeMap::new();
            for (i, &s) in seqs.iter().enumerate() {
                let first = map.get(&s).copied();
                proptest::prop_assert_eq!(runs.insert(s, i as u32), first);
                map.entry(s).or_insert(i as u32);
            }
            for s in (0..62).chain(u64::MAX - 4..=u64::MAX) {
                proptest::prop_assert_eq!(runs.get(s), map.get(&s).copied());
            }
            proptest::prop_assert_eq!(runs.max(), map.keys().next_back().copied().unwrap_or(0));
            let newest: Vec<(u64, u32)> = map.iter().rev().map(|(&s, &i)| (s, i)).collect();
            proptest::prop_assert_eq!(runs.newest_first().collect::<Vec<_>>(), newest);
            let mut gaps = Vec::new();
            let mut expect = 1;
            for &s in map.keys() {
                if s > expect {
                    gaps.push((expect, s - 1));
                }
                expect = s.saturating_add(1);
            }
            proptest::prop_assert_eq!(runs.gaps(), gaps);
        }
    }
}
