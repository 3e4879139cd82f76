//! A set of `u128` offsets stored as maximal runs of consecutive members,
//! so that "lowest non-member at or above x" is one B-tree lookup and
//! memory grows with the number of runs, never with the span they cover.

use std::collections::BTreeMap;

/// Maximal runs: `start -> end` (inclusive); no two runs overlap or touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Runs {
    runs: BTreeMap<u128, u128>,
}

impl Runs {
    /// The run holding `x`, if any.
    fn run_of(&self, x: u128) -> Option<(u128, u128)> {
        let (&start, &end) = self.runs.range(..=x).next_back()?;
        (x <= end).then_some((start, end))
    }

    pub(crate) fn contains(&self, x: u128) -> bool {
        self.run_of(x).is_some()
    }

    /// Adds every offset in `[a, b]` (`a <= b`).
    pub(crate) fn insert_interval(&mut self, a: u128, b: u128) {
        let (mut start, mut end) = (a, b);
        // Absorb a run that holds or touches `a` from the left.
        if let Some((&s, &e)) = self.runs.range(..=a).next_back()
            && e.saturating_add(1) >= a
        {
            start = s;
            end = end.max(e);
        }
        // Absorb every run starting inside `[start, end + 1]`.
        let upper = end.saturating_add(1);
        let swallowed: Vec<(u128, u128)> = self
            .runs
            .range(start..=upper)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in swallowed {
            self.runs.remove(&s);
            end = end.max(e);
        }
        self.runs.insert(start, end);
    }

    /// Adds `x`; returns whether it was absent.
    pub(crate) fn insert(&mut self, x: u128) -> bool {
        if self.contains(x) {
            return false;
        }
        let left = x
            .checked_sub(1)
            .and_then(|p| self.run_of(p))
            .map(|(s, _)| s);
        let right = x
            .checked_add(1)
            .and_then(|n| self.runs.get(&n).copied().map(|e| (n, e)));
        match (left, right) {
            (Some(ls), Some((rs, re))) => {
                self.runs.remove(&rs);
                self.runs.insert(ls, re);
            }
            (Some(ls), None) => {
                self.runs.insert(ls, x);
            }
            (None, Some((rs, re))) => {
                self.runs.remove(&rs);
                self.runs.insert(x, re);
            }
            (None, None) => {
                self.runs.insert(x, x);
            }
        }
        true
    }

    /// Removes `x`; returns whether it was present.
    pub(crate) fn remove(&mut self, x: u128) -> bool {
        let Some((start, end)) = self.run_of(x) else {
            return false;
        };
        self.runs.remove(&start);
        if start < x {
            self.runs.insert(start, x - 1);
        }
        if x < end {
            self.runs.insert(x + 1, end);
        }
        true
    }

    /// The lowest non-member `>= x`, if any (none only when every offset
    /// up to `u128::MAX` is a member).
    pub(crate) fn first_gap_from(&self, x: u128) -> Option<u128> {
        match self.run_of(x) {
            // Runs are maximal, so the offset after one is never a member.
            Some((_, end)) => end.checked_add(1),
            None => Some(x),
        }
    }

    /// Number of runs (memory is proportional to this).
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut r = Runs::default();
        assert!(r.insert(5));
        assert!(r.insert(7));
        assert_eq!(r.len(), 2);
        assert!(r.insert(6));
        assert_eq!(r.len(), 1);
        assert!(!r.insert(6));
        assert_eq!(r.first_gap_from(5), Some(8));
        assert_eq!(r.first_gap_from(4), Some(4));
        assert!(r.remove(6));
        assert_eq!(r.len(), 2);
        assert_eq!(r.first_gap_from(5), Some(6));
        assert!(!r.remove(6));
        r.insert_interval(0, 100);
        assert_eq!(r.len(), 1);
        assert_eq!(r.first_gap_from(0), Some(101));
        r.insert_interval(200, u128::MAX);
        assert_eq!(r.first_gap_from(250), None);
        r.insert_interval(101, 199);
        assert_eq!(r.len(), 1);
        assert_eq!(r.first_gap_from(0), None);
        assert!(r.remove(u128::MAX));
        assert_eq!(r.first_gap_from(0), Some(u128::MAX));
        assert!(r.insert(u128::MAX));
        assert_eq!(r.len(), 1);
    }
}
