//! Sets of uid-hash ranges: what a replica holds, claims, caches and releases, and how a
//! claim is written on its Lease. Below the replicas and the controller's ownership, which
//! both speak of them.

use std::fmt;

use kache_watch::ShardRange;

/// The end of the hash space, `2^64`.
const END: u128 = 1 << 64;

/// A set of uid hashes: sorted, disjoint, non-adjacent half-open intervals within `[0, 2^64)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Vec<(u128, u128)>);

impl Ranges {
    /// No hash.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every hash.
    #[must_use]
    pub fn full() -> Self {
        Self(vec![(0, END)])
    }

    /// The hashes of `ranges`.
    pub fn of(ranges: &[ShardRange]) -> Self {
        Self::normalised(ranges.iter().map(bounds).collect())
    }

    fn normalised(mut intervals: Vec<(u128, u128)>) -> Self {
        intervals.retain(|(start, end)| start < end);
        intervals.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            match out.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => out.push((start, end)),
            }
        }
        Self(out)
    }

    /// Whether it holds no hash.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `hash` is in the set.
    #[must_use]
    pub fn contains(&self, hash: u64) -> bool {
        let hash = u128::from(hash);
        // The last interval starting at or before `hash`.
        let at = self.0.partition_point(|(start, _)| *start <= hash);
        at > 0 && hash < self.0[at - 1].1
    }

    /// The hashes in either.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        Self::normalised(self.0.iter().chain(&other.0).copied().collect())
    }

    /// The hashes in `self` but not in `other`.
    #[must_use]
    pub fn minus(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(start, end) in &self.0 {
            let mut from = start;
            for &(cut_start, cut_end) in &other.0 {
                if cut_end <= from || cut_start >= end {
                    continue;
                }
                if cut_start > from {
                    out.push((from, cut_start));
                }
                from = from.max(cut_end);
            }
            if from < end {
                out.push((from, end));
            }
        }
        Self::normalised(out)
    }

    /// The hashes in both.
    #[must_use]
    pub fn intersection(&self, other: &Self) -> Self {
        self.minus(&self.minus(other))
    }

    /// Whether the two share a hash.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        !self.intersection(other).is_empty()
    }

    /// Its fraction of the hash space, for metrics and logs.
    #[must_use]
    #[allow(
        clippy::cast_precision_loss,
        reason = "a share of the space, for display"
    )]
    pub fn share(&self) -> f64 {
        let width: u128 = self.0.iter().map(|(start, end)| end - start).sum();
        width as f64 / END as f64
    }

    /// As shard ranges, for a watch.
    #[must_use]
    pub fn shard_ranges(&self) -> Vec<ShardRange> {
        self.0
            .iter()
            .filter_map(|&(start, end)| range_of(start, end))
            .collect()
    }

    /// Parses [`Display`](fmt::Display)'s form: `START-END` pairs of hex bounds, joined by
    /// `,`; the empty string is the empty set. `None` if it does not parse.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Some(Self::empty());
        }
        let mut intervals = Vec::new();
        for pair in text.split(',') {
            let (start, end) = pair.trim().split_once('-')?;
            let start = u128::from_str_radix(start, 16).ok()?;
            let end = u128::from_str_radix(end, 16).ok()?;
            if start >= end || end > END {
                return None;
            }
            intervals.push((start, end));
        }
        Some(Self::normalised(intervals))
    }
}

impl fmt::Display for Ranges {
    /// `START-END` in hex, 16 digits (the end of the space is `10000000000000000`), joined
    /// by `,`: the form a Lease carries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (start, end)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{start:016x}-{end:016x}")?;
        }
        Ok(())
    }
}

/// A range's bounds, the end of the space as `2^64`.
pub(crate) fn bounds(range: &ShardRange) -> (u128, u128) {
    (
        u128::from(range.start()),
        range.end().map_or(END, u128::from),
    )
}

/// The shard range `[start, end)`, if it is one.
pub(crate) fn range_of(start: u128, end: u128) -> Option<ShardRange> {
    let start = u64::try_from(start).ok()?;
    match u64::try_from(end) {
        Ok(end) => ShardRange::new(start, end).ok(),
        Err(_) if end == END => Some(ShardRange::from_start(start)),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use kache_watch::ShardRange;

    use super::Ranges;

    fn third(i: u32) -> ShardRange {
        ShardRange::nth(i, 3).unwrap()
    }

    fn half(i: u32) -> ShardRange {
        ShardRange::nth(i, 2).unwrap()
    }

    fn set(ranges: &[ShardRange]) -> Ranges {
        Ranges::of(ranges)
    }

    #[test]
    fn arithmetic() {
        let all = set(&[third(0), third(1), third(2)]);
        assert_eq!(all, Ranges::full());
        assert_eq!(all.shard_ranges(), [ShardRange::full()]);
        let rest = all.minus(&set(&[third(1)]));
        assert_eq!(rest.shard_ranges(), [third(0), third(2)]);
        assert!(rest.contains(0) && rest.contains(u64::MAX) && !rest.contains(third(1).start()));
        assert!(!rest.overlaps(&set(&[third(1)])));
        assert!(rest.overlaps(&set(&[half(1)])));
        assert_eq!(
            set(&[half(0)])
                .intersection(&set(&[third(1)]))
                .shard_ranges(),
            [ShardRange::new(third(1).start(), half(1).start()).unwrap()]
        );
        assert!((set(&[half(1)]).share() - 0.5).abs() < 1e-9);
        assert!(Ranges::empty().minus(&all).is_empty());
    }

    #[test]
    fn the_lease_form_parses_back_and_bad_input_is_refused() {
        for ranges in [
            Ranges::empty(),
            Ranges::full(),
            set(&[third(0), third(2)]),
            set(&[half(1)]),
        ] {
            assert_eq!(Ranges::parse(&ranges.to_string()), Some(ranges));
        }
        assert_eq!(
            set(&[half(1)]).to_string(),
            "8000000000000000-10000000000000000"
        );
        for bad in ["x", "10-5", "0-20000000000000000", "0-", "-5", "1-2,,3-4"] {
            assert_eq!(Ranges::parse(bad), None, "{bad}");
        }
    }
}
