//! Shards of a collection by the hash of each object's uid (KEP-5866, Kubernetes 1.36).

use std::fmt;
use std::str::FromStr;

use kube_client::Resource;

use crate::{Error, Result};

/// The field a shard hashes. KEP-5866 also allows `object.metadata.namespace`; kache shards
/// by uid, which spreads objects evenly and never changes for the life of an object.
const UID_FIELD: &str = "object.metadata.uid";

/// `2^64`, the exclusive end of the hash space.
const SPACE_END: u128 = 1 << 64;

/// The 64-bit FNV-1a hash of an object's uid: the hash the API server's sharded list and watch
/// uses (`k8s.io/apimachinery/pkg/sharding`), so a shard selects the same objects whether the
/// server or the client applies it.
///
/// ```
/// // A value computed by the Go library's `HashField`.
/// assert_eq!(kache_watch::uid_hash("test-uid-12345"), 0xd4c5_3b72_f928_7c28);
/// ```
#[must_use]
pub fn uid_hash(uid: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    uid.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// A range `[start, end)` of uid hashes, within `[0, 2^64)`.
///
/// ```
/// use kache_watch::ShardRange;
///
/// let lower = ShardRange::new(0, 1 << 63)?;
/// assert!(lower.contains(42));
/// assert!(!lower.contains(1 << 63));
/// // The second of two halves: from 2^63 to the end of the space.
/// assert_eq!(ShardRange::nth(1, 2)?, ShardRange::from_start(1 << 63));
/// # Ok::<(), kache_watch::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardRange {
    start: u64,
    /// Exclusive, at most `2^64`: a `u128` so that the end of the space is a value.
    end: u128,
}

impl ShardRange {
    /// The hashes from `start` (inclusive) to `end` (exclusive).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidShard`] unless `start < end`.
    pub fn new(start: u64, end: u64) -> Result<Self> {
        if start < end {
            Ok(Self {
                start,
                end: u128::from(end),
            })
        } else {
            Err(invalid(
                format!("[{start:#x}, {end:#x})"),
                "a shard range must start before it ends",
            ))
        }
    }

    /// The hashes from `start` to the end of the space, `2^64`.
    #[must_use]
    pub fn from_start(start: u64) -> Self {
        Self {
            start,
            end: SPACE_END,
        }
    }

    /// Every hash: `[0, 2^64)`.
    #[must_use]
    pub fn full() -> Self {
        Self::from_start(0)
    }

    /// The `index`-th of `count` ranges of equal width (to one hash) that cover the space in
    /// order: how `count` replicas split it, `index` counting from 0.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidShard`] unless `index < count`.
    pub fn nth(index: u32, count: u32) -> Result<Self> {
        if index >= count {
            return Err(invalid(
                format!("{index} of {count}"),
                "a shard index must be below the shard count",
            ));
        }
        let bound = |i: u32| SPACE_END * u128::from(i) / u128::from(count);
        Ok(Self {
            start: u64::try_from(bound(index)).unwrap_or(u64::MAX),
            end: bound(index + 1),
        })
    }

    /// The first hash in the range.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The first hash past the range; `None` for `2^64`, the end of the space.
    #[must_use]
    pub fn end(&self) -> Option<u64> {
        u64::try_from(self.end).ok()
    }

    /// Whether `hash` (a [`uid_hash`]) is in the range.
    #[must_use]
    pub fn contains(&self, hash: u64) -> bool {
        self.start <= hash && u128::from(hash) < self.end
    }
}

impl fmt::Display for ShardRange {
    /// The selector term the API server parses: bounds of exactly 16 hex digits (it refuses
    /// others), except `0x10000000000000000` for the end of the space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shardRange({UID_FIELD}, '0x{:016x}', '0x{:016x}')",
            self.start, self.end
        )
    }
}

/// A part of a collection: the objects whose [`uid_hash`] falls in one of its ranges.
///
/// Give it to the watcher with [`Config::shard`](crate::Config::shard). A server with sharded
/// list and watch (Kubernetes 1.36 with the `ShardedListAndWatch` feature gate) then sends
/// only these objects; any other server sends every object and the watcher drops the others
/// itself, with the same hash: the same objects either way, at the cost of the bandwidth.
///
/// Since an object's uid never changes, an object stays in the same shard for its whole life:
/// no update moves it in or out.
///
/// ```
/// use kache_watch::{Shard, ShardRange};
///
/// let shard = Shard::nth(0, 2)?;
/// assert_eq!(
///     shard.to_string(),
///     "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"
/// );
/// // The wire form parses back, and ranges join with `||`.
/// let two: Shard = "shardRange(object.metadata.uid, '0x0000000000000000', '0x1000000000000000') || \
///                   shardRange(object.metadata.uid, '0x8000000000000000', '0x10000000000000000')"
///     .parse()?;
/// assert_eq!(two.ranges().len(), 2);
/// assert!(two.contains_hash(0x0fff_ffff_ffff_ffff) && !two.contains_hash(0x1000_0000_0000_0000));
/// // Bad input is an error, never a panic.
/// assert!(Shard::new([]).is_err());
/// assert!("shardRange(object.metadata.uid, '0x2', '0x1')".parse::<Shard>().is_err());
/// # Ok::<(), kache_watch::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    ranges: Vec<ShardRange>,
}

impl Shard {
    /// The objects in any of `ranges`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidShard`] if `ranges` is empty: a shard of nothing is a mistake, and the
    /// API server refuses an empty selector.
    pub fn new(ranges: impl IntoIterator<Item = ShardRange>) -> Result<Self> {
        let ranges: Vec<_> = ranges.into_iter().collect();
        if ranges.is_empty() {
            return Err(invalid(String::new(), "a shard needs at least one range"));
        }
        Ok(Self { ranges })
    }

    /// The `index`-th of `count` equal shards ([`ShardRange::nth`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidShard`] unless `index < count`.
    pub fn nth(index: u32, count: u32) -> Result<Self> {
        Ok(Self {
            ranges: vec![ShardRange::nth(index, count)?],
        })
    }

    /// Its ranges, in the order given.
    #[must_use]
    pub fn ranges(&self) -> &[ShardRange] {
        &self.ranges
    }

    /// Whether an object with this [`uid_hash`] is in the shard.
    #[must_use]
    pub fn contains_hash(&self, hash: u64) -> bool {
        self.ranges.iter().any(|range| range.contains(hash))
    }

    /// Whether `obj` is in the shard. An object with no uid hashes as the empty string, as on
    /// the server.
    #[must_use]
    pub fn contains<K: Resource>(&self, obj: &K) -> bool {
        self.contains_hash(uid_hash(obj.meta().uid.as_deref().unwrap_or_default()))
    }

    /// The `shardSelector` parameter, as the server also formats it: ranges joined by ` || `.
    #[must_use]
    pub fn selector(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, range) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(" || ")?;
            }
            write!(f, "{range}")?;
        }
        Ok(())
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses a selector of `shardRange(object.metadata.uid, 'START', 'END')` terms joined by
    /// `||`, with bounds as the API server accepts them (`0x` and 16 lowercase hex digits, or
    /// `0x10000000000000000`), and `START < END`.
    fn from_str(selector: &str) -> Result<Self> {
        let fail = |reason| invalid(selector.to_owned(), reason);
        let mut ranges = Vec::new();
        for term in selector.split("||") {
            let args = term
                .trim()
                .strip_prefix("shardRange(")
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| fail("expected shardRange(field, 'start', 'end') terms"))?;
            let mut args = args.split(',').map(str::trim);
            let (Some(field), Some(start), Some(end), None) =
                (args.next(), args.next(), args.next(), args.next())
            else {
                return Err(fail("shardRange takes three arguments"));
            };
            if field != UID_FIELD {
                return Err(fail("only object.metadata.uid is supported"));
            }
            let start = parse_bound(start).ok_or_else(|| fail("bad start bound"))?;
            let end = parse_bound(end).ok_or_else(|| fail("bad end bound"))?;
            let start =
                u64::try_from(start).map_err(|_| fail("a start bound must be below 2^64"))?;
            if u128::from(start) >= end {
                return Err(fail("a shard range must start before it ends"));
            }
            ranges.push(ShardRange { start, end });
        }
        Self::new(ranges).map_err(|_| fail("a shard needs at least one range"))
    }
}

/// A quoted bound as the server accepts it: `'0x'` and 16 lowercase hex digits, or the end of
/// the space.
fn parse_bound(quoted: &str) -> Option<u128> {
    let hex = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    if hex == "0x10000000000000000" {
        return Some(SPACE_END);
    }
    let digits = hex.strip_prefix("0x")?;
    let well_formed = digits.len() == 16
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed
        .then(|| u64::from_str_radix(digits, 16).ok())
        .flatten()
        .map(u128::from)
}

fn invalid(input: String, reason: &'static str) -> Error {
    Error::InvalidShard { input, reason }
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub(crate) fn encode_query_value(value: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(value.len() * 2);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Shard, ShardRange, encode_query_value, uid_hash};

    /// Values printed by the Go library's `sharding.HashField` (Go 1.27 `hash/fnv`), and the
    /// FNV-1a test vectors.
    #[test]
    fn uid_hash_matches_the_go_library() {
        for (uid, hash) in [
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
            ("abc", 0xe71f_a219_0541_574b),
            ("test-uid-12345", 0xd4c5_3b72_f928_7c28),
            (
                "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                0x9375_4b72_48a0_0eb9,
            ),
            (
                "6f1c9a3e-2b4d-4c8e-9f70-1a2b3c4d5e6f",
                0xa8c9_b322_2bd4_5d97,
            ),
        ] {
            assert_eq!(uid_hash(uid), hash, "uid {uid:?}");
        }
    }

    #[test]
    fn nth_ranges_cover_the_space_without_overlap() {
        for count in [1, 2, 3, 7, 64] {
            let mut next = 0_u128;
            for index in 0..count {
                let range = ShardRange::nth(index, count).unwrap();
                assert_eq!(u128::from(range.start()), next, "{index} of {count}");
                next = range.end;
            }
            assert_eq!(next, super::SPACE_END);
        }
        let last = ShardRange::nth(u32::MAX - 1, u32::MAX).unwrap();
        assert!(last.contains(u64::MAX) && last.end().is_none());
        assert!(ShardRange::nth(3, 3).is_err());
        assert!(ShardRange::nth(0, 0).is_err());
    }

    #[test]
    fn adjacent_ranges_split_at_their_bound() {
        let a = ShardRange::nth(0, 3).unwrap();
        let b = ShardRange::nth(1, 3).unwrap();
        let bound = b.start();
        assert_eq!(a.end(), Some(bound));
        assert!(a.contains(bound - 1) && !a.contains(bound));
        assert!(b.contains(bound) && !b.contains(bound - 1));
    }

    #[test]
    fn selector_round_trips_through_the_wire_form() {
        let shard = Shard::new([
            ShardRange::new(0, 0x10).unwrap(),
            ShardRange::from_start(0x8000_0000_0000_0000),
        ])
        .unwrap();
        let wire = shard.selector();
        assert_eq!(
            wire,
            "shardRange(object.metadata.uid, '0x0000000000000000', '0x0000000000000010') || \
             shardRange(object.metadata.uid, '0x8000000000000000', '0x10000000000000000')"
        );
        assert_eq!(wire.parse::<Shard>().unwrap(), shard);
    }

    #[test]
    fn bad_selectors_are_errors() {
        for bad in [
            "",
            "||",
            "shardRange(object.metadata.uid, '0x0', '0x8000000000000000')",
            "shardRange(object.metadata.name, '0x0000000000000000', '0x8000000000000000')",
            "shardRange(object.metadata.uid, '0x8000000000000000', '0x0000000000000000')",
            "shardRange(object.metadata.uid, '0x0000000000000000', '0x0000000000000000')",
            "shardRange(object.metadata.uid, '0x10000000000000000', '0x10000000000000000')",
            "shardRange(object.metadata.uid, '0x000000000000000G', '0x8000000000000000')",
            "shardRange(object.metadata.uid, '0x00000000000000AA', '0x8000000000000000')",
            "shardRange(object.metadata.uid, '0x0000000000000000')",
            "shardRange(object.metadata.uid, 0x0000000000000000, '0x8000000000000000')",
            "shardRange(object.metadata.uid, 'é', '0x8000000000000000')",
        ] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert_eq!(err.kind(), "InvalidShard", "{bad:?}");
        }
        assert!(ShardRange::new(5, 5).is_err());
        assert!(Shard::new([]).is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query_value("shardRange(a, '0x1') || b"),
            "shardRange%28a%2C%20%270x1%27%29%20%7C%7C%20b"
        );
    }
}
