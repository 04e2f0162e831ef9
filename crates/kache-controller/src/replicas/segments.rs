//! The segments of a replica's cache: one source per range, kept across moves.

use kache_watch::ShardRange;

use crate::ranges::Ranges;

/// The ranges a replica watches, one source each. Moving to a new set keeps every segment
/// inside it (no relist of what the replica keeps) and adds sources only for the gaps; the
/// segments outside it retire once the new ones have synced.
///
/// Where the server does not shard, every watch receives every object: there a replica keeps
/// one source (`max` 1), and each move relists its new set in full.
#[derive(Debug, Default)]
pub(super) struct Segments {
    pub(super) live: Vec<ShardRange>,
    pub(super) retiring: Vec<ShardRange>,
    /// Past this many segments a replica starts over with one source per range of its set:
    /// each move may cut a range in two, and a watch per sliver costs more than one relist.
    pub(super) max: usize,
}

/// The most segments a replica watches where the server shards.
pub(super) const MAX_SEGMENTS: usize = 4;

impl Segments {
    /// Moves to `target`; returns the segments to add as sources.
    pub(super) fn move_to(&mut self, target: &Ranges) -> Vec<ShardRange> {
        let inside = |seg: &ShardRange| Ranges::of(&[*seg]).minus(target).is_empty();
        let mut keep = Vec::new();
        let mut all = std::mem::take(&mut self.live);
        all.append(&mut self.retiring);
        for seg in all {
            if inside(&seg) && !keep.contains(&seg) {
                keep.push(seg);
            } else {
                self.retiring.push(seg);
            }
        }
        let gaps = |keep: &[ShardRange]| target.minus(&Ranges::of(keep)).shard_ranges();
        if keep.len() + gaps(&keep).len() > self.max.max(1) {
            self.retiring.append(&mut keep);
        }
        let added = gaps(&keep);
        keep.extend(added.iter().copied());
        // A segment added again is live, not retiring: removing its source once the new ones
        // synced would drop its objects.
        self.retiring.retain(|segment| !keep.contains(segment));
        self.live = keep;
        added
    }
}

#[cfg(test)]
mod tests {
    use kache_watch::ShardRange;

    use super::{MAX_SEGMENTS, Segments};
    use crate::ranges::Ranges;

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
    fn moving_keeps_the_segments_inside_the_new_set() {
        let mut segments = Segments {
            max: MAX_SEGMENTS,
            ..Segments::default()
        };
        assert_eq!(segments.move_to(&set(&[third(0)])), [third(0)]);
        // From the first third to the first half: only the gap is new.
        let added = segments.move_to(&set(&[half(0)]));
        assert_eq!(
            added,
            [ShardRange::new(third(1).start(), half(1).start()).unwrap()]
        );
        assert!(segments.retiring.is_empty());
        assert_eq!(segments.live.len(), 2);
        // To the second half: nothing is inside it, everything retires.
        assert_eq!(segments.move_to(&set(&[half(1)])), [half(1)]);
        assert_eq!(segments.retiring.len(), 2);
        assert_eq!(segments.live, [half(1)]);
        // Back to the first third: a retiring segment comes back without a relist.
        assert!(segments.move_to(&set(&[third(0)])).is_empty());
        assert_eq!(segments.live, [third(0)]);
    }

    #[test]
    fn with_one_segment_at_most_a_move_lists_the_whole_new_set() {
        let mut segments = Segments {
            max: 1,
            ..Segments::default()
        };
        segments.move_to(&set(&[third(0)]));
        assert_eq!(segments.move_to(&set(&[half(0)])), [half(0)]);
        assert_eq!(segments.retiring, [third(0)]);
        assert_eq!(segments.live, [half(0)]);
    }

    #[test]
    fn a_segment_listed_again_is_never_also_retiring() {
        let mut segments = Segments {
            max: 1,
            ..Segments::default()
        };
        segments.move_to(&set(&[third(2)]));
        // Two disjoint ranges with one segment at most: everything is listed again.
        let added = segments.move_to(&set(&[half(0), third(2)]));
        assert_eq!(added, [half(0), third(2)]);
        assert!(
            segments.retiring.iter().all(|s| !segments.live.contains(s)),
            "live {:?}, retiring {:?}",
            segments.live,
            segments.retiring
        );
    }
}
