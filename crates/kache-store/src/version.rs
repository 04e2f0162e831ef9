use std::cmp::Ordering;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use kube_client::Resource;
use tracing::warn;

use crate::error::{Error, Result};

/// A `metadata.resourceVersion`, parsed so that versions compare as the Kubernetes API defines
/// since 1.35 (KEP-5504).
///
/// The rule, as `k8s.io/apimachinery/pkg/util/resourceversion` implements it: a comparable
/// version is a decimal integer written with ASCII digits only, at least one, without a
/// leading zero (so no sign, no `+`, no spaces, and not `0`, which the API uses in requests to
/// mean "any version" and never gives an object). Two comparable versions of the same
/// resource type compare as integers, whatever their size. Anything else is not comparable:
/// [`parse`](Self::parse) rejects it with [`Error::NotComparable`] rather than guess an order.
///
/// Every version kube-apiserver issues today fits in 64 bits (they are etcd revisions) and is
/// held as a `u64`, with no allocation; a larger one keeps its digits and still compares
/// exactly.
///
/// ```
/// use kache_store::{Error, ResourceVersion};
///
/// let v9: ResourceVersion = "9".parse()?;
/// let v10 = ResourceVersion::parse("10")?;
/// assert!(v9 < v10, "numeric order, not the order of the strings");
/// assert!(ResourceVersion::parse("18446744073709551616")? > ResourceVersion::parse("18446744073709551615")?);
/// assert_eq!(
///     ResourceVersion::parse("007"),
///     Err(Error::NotComparable { version: "007".to_owned() })
/// );
/// assert!(ResourceVersion::parse("a1b2").is_err());
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceVersion(Repr);

/// One canonical form per value (a value that fits in 64 bits is always `Small`), so the
/// derived `Eq` and `Hash` agree with [`Ord`].
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Small(NonZeroU64),
    /// Digits of a value above `u64::MAX`: at least 20, no leading zero.
    Big(Box<str>),
}

impl ResourceVersion {
    /// Parses a resourceVersion.
    ///
    /// # Errors
    ///
    /// [`Error::NotComparable`], carrying `version`, if it is not a decimal integer without a
    /// leading zero: empty, `0`, `007`, `+5`, `-5`, ` 5`, `abc`, `1.5`...
    pub fn parse(version: &str) -> Result<Self> {
        let digits = version.as_bytes();
        // Up to 19 digits cannot overflow a `u64` (10^19 - 1 < 2^64): every version
        // kube-apiserver issues takes this loop, with no overflow checks.
        if !digits.is_empty() && digits.len() <= 19 && digits[0] != b'0' {
            let mut value = 0_u64;
            for digit in digits {
                let digit = digit.wrapping_sub(b'0');
                if digit > 9 {
                    return Err(not_comparable(version));
                }
                value = value * 10 + u64::from(digit);
            }
            if let Some(small) = NonZeroU64::new(value) {
                return Ok(Self(Repr::Small(small)));
            }
        }
        Self::parse_long(version)
    }

    /// [`parse`](Self::parse) for what its fast loop leaves: errors, and 20 digits or more.
    #[cold]
    fn parse_long(version: &str) -> Result<Self> {
        let digits = version.as_bytes();
        let well_formed = digits.first().is_some_and(|first| *first != b'0')
            && digits.iter().all(u8::is_ascii_digit);
        if !well_formed {
            return Err(not_comparable(version));
        }
        let value = digits.iter().try_fold(0_u64, |value, digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        });
        Ok(Self(match value.and_then(NonZeroU64::new) {
            Some(small) => Repr::Small(small),
            None => Repr::Big(version.into()),
        }))
    }

    /// The resourceVersion of `obj`.
    ///
    /// # Errors
    ///
    /// [`Error::NotComparable`] if it has none (with an empty `version`) or one that is not
    /// comparable.
    pub fn of<K: Resource>(obj: &K) -> Result<Self> {
        Self::parse(obj.meta().resource_version.as_deref().unwrap_or_default())
    }

    /// The value, if it fits in a `u64` (every version kube-apiserver issues does).
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        match &self.0 {
            Repr::Small(small) => Some(small.get()),
            Repr::Big(_) => None,
        }
    }
}

#[cold]
fn not_comparable(version: &str) -> Error {
    Error::NotComparable {
        version: version.to_owned(),
    }
}

impl From<NonZeroU64> for ResourceVersion {
    fn from(value: NonZeroU64) -> Self {
        Self(Repr::Small(value))
    }
}

impl FromStr for ResourceVersion {
    type Err = Error;

    fn from_str(version: &str) -> Result<Self> {
        Self::parse(version)
    }
}

impl Ord for ResourceVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Small(a), Repr::Small(b)) => a.cmp(b),
            // A big value exceeds every `u64`.
            (Repr::Small(_), Repr::Big(_)) => Ordering::Less,
            (Repr::Big(_), Repr::Small(_)) => Ordering::Greater,
            // Without leading zeros, the longer number is the larger; at equal lengths, digit
            // strings order as their values.
            (Repr::Big(a), Repr::Big(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        }
    }
}

impl PartialOrd for ResourceVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Small(small) => fmt::Display::fmt(small, f),
            Repr::Big(digits) => f.write_str(digits),
        }
    }
}

impl fmt::Debug for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceVersion({self})")
    }
}

/// How far a store (or a relist being built) has reached: the newest resourceVersion it
/// reflects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Reached {
    /// No version seen yet.
    #[default]
    Nothing,
    /// Everything up to this version is reflected.
    At(ResourceVersion),
    /// A version that is not comparable was seen: the server's versions cannot be ordered, so
    /// no wait can be answered. Keeps the last version seen, for
    /// [`Store::resource_version`](crate::Store::resource_version). Never left: one server
    /// issues the versions of one resource type, and ordering them cannot become possible.
    Opaque(String),
}

impl Reached {
    /// Advances to `version` if it is newer. An empty version carries nothing and is skipped;
    /// one that is not comparable makes this opaque for good.
    pub(crate) fn advance(&mut self, version: &str) {
        if version.is_empty() {
            return;
        }
        if let Self::Opaque(last) = self {
            // Reuses the allocation: no allocation per event once warm.
            last.clear();
            last.push_str(version);
            return;
        }
        if let Ok(version) = ResourceVersion::parse(version) {
            if !matches!(self, Self::At(current) if *current >= version) {
                *self = Self::At(version);
            }
        } else {
            warn!(
                version,
                "resourceVersion is not comparable; this store cannot tell how far it has reached"
            );
            *self = Self::Opaque(version.to_owned());
        }
    }

    /// Advances to where `other` has reached (a finished relist).
    pub(crate) fn merge(&mut self, other: Self) {
        match other {
            Self::Nothing => {}
            Self::At(version) => {
                let newer = match self {
                    Self::Nothing => true,
                    Self::At(current) => *current < version,
                    Self::Opaque(_) => false,
                };
                if newer {
                    *self = Self::At(version);
                }
            }
            Self::Opaque(last) => *self = Self::Opaque(last),
        }
    }

    /// The version as the server wrote it, if any.
    pub(crate) fn to_resource_version_string(&self) -> Option<String> {
        match self {
            Self::Nothing => None,
            Self::At(version) => Some(version.to_string()),
            Self::Opaque(last) => Some(last.clone()),
        }
    }

    /// The comparable version reached, if any.
    ///
    /// # Errors
    /// [`Error::NotComparable`] if the versions seen cannot be ordered.
    pub(crate) fn comparable(&self) -> Result<Option<&ResourceVersion>> {
        match self {
            Self::Nothing => Ok(None),
            Self::At(version) => Ok(Some(version)),
            Self::Opaque(last) => Err(Error::NotComparable {
                version: last.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::{Reached, ResourceVersion};
    use crate::Error;

    fn rv(s: &str) -> ResourceVersion {
        ResourceVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_as_integers_not_as_strings() {
        assert!(rv("9") < rv("10"));
        assert!(rv("100") > rv("99"));
        assert_eq!(rv("42"), rv("42"));
        assert_eq!(rv("42").as_u64(), Some(42));
        assert_eq!(rv("42").to_string(), "42");
        assert_eq!(format!("{:?}", rv("42")), "ResourceVersion(42)");
    }

    #[test]
    fn anything_but_a_decimal_integer_without_leading_zero_is_not_comparable() {
        for bad in [
            "", "0", "00", "007", "+5", "-5", " 5", "5 ", "1.5", "1e3", "abc", "12a", "0x1f", "١٢",
            "５",
        ] {
            assert_eq!(
                ResourceVersion::parse(bad),
                Err(Error::NotComparable {
                    version: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn huge_versions_compare_exactly() {
        let max = u64::MAX.to_string();
        let above = "18446744073709551616";
        assert_eq!(rv(&max).as_u64(), Some(u64::MAX));
        assert_eq!(rv(above).as_u64(), None);
        assert!(rv(&max) < rv(above));
        assert!(rv("1") < rv(above));
        assert!(rv(above) < rv("18446744073709551617"));
        assert!(rv("99999999999999999999") < rv("100000000000000000000"));
        let long = format!("1{}", "0".repeat(100));
        assert!(rv(&long) > rv(&"9".repeat(100)));
        assert_eq!(rv(&long).to_string(), long);
        assert_eq!(rv(above), rv(above));
    }

    #[test]
    fn version_of_an_object_without_one_is_not_comparable() {
        let cm = k8s_openapi::api::core::v1::ConfigMap::default();
        assert_eq!(
            ResourceVersion::of(&cm),
            Err(Error::NotComparable {
                version: String::new()
            })
        );
    }

    #[test]
    fn reached_is_monotonic_and_opaque_is_final() {
        let mut reached = Reached::default();
        reached.advance("");
        assert_eq!(reached, Reached::Nothing);
        reached.advance("10");
        reached.advance("9");
        assert_eq!(reached, Reached::At(rv("10")));
        reached.merge(Reached::At(rv("8")));
        assert_eq!(reached, Reached::At(rv("10")));
        reached.merge(Reached::At(rv("12")));
        assert_eq!(reached, Reached::At(rv("12")));
        reached.advance("x1");
        assert_eq!(reached, Reached::Opaque("x1".to_owned()));
        reached.advance("13");
        assert_eq!(reached, Reached::Opaque("13".to_owned()));
        reached.merge(Reached::At(rv("14")));
        assert!(reached.comparable().is_err());
        assert_eq!(reached.to_resource_version_string().as_deref(), Some("13"));
    }

    /// A decimal string of any length without a leading zero.
    fn decimal() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_filter_map("zero", |n| (n > 0).then(|| n.to_string())),
            "[1-9][0-9]{0,45}",
        ]
    }

    /// The reference order of decimal strings without a leading zero: the longer is larger,
    /// then digit by digit. Checked against `u128` too where both fit.
    fn reference(a: &str, b: &str) -> Ordering {
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }

    proptest! {
        #[test]
        fn order_matches_integer_order(a in decimal(), b in decimal()) {
            let (va, vb) = (rv(&a), rv(&b));
            prop_assert_eq!(va.cmp(&vb), reference(&a, &b));
            if let (Ok(x), Ok(y)) = (a.parse::<u128>(), b.parse::<u128>()) {
                prop_assert_eq!(va.cmp(&vb), x.cmp(&y));
            }
            prop_assert_eq!(va == vb, a == b);
            prop_assert_eq!(va.to_string(), a.clone());
            prop_assert_eq!(va.as_u64(), a.parse::<u64>().ok());
        }

        #[test]
        fn u64_values_round_trip(n in 1..=u64::MAX) {
            let v = rv(&n.to_string());
            prop_assert_eq!(v.as_u64(), Some(n));
            prop_assert_eq!(v, ResourceVersion::from(std::num::NonZeroU64::new(n).unwrap()));
        }

        #[test]
        fn any_non_digit_makes_a_version_not_comparable(
            prefix in "[0-9]{0,5}",
            bad in "[^0-9]",
            suffix in "[0-9]{0,5}",
        ) {
            let version = format!("{prefix}{bad}{suffix}");
            prop_assert!(ResourceVersion::parse(&version).is_err());
        }

        #[test]
        fn a_leading_zero_makes_a_version_not_comparable(digits in "0[0-9]{0,20}") {
            prop_assert!(ResourceVersion::parse(&digits).is_err());
        }

        #[test]
        fn reached_keeps_the_maximum(versions in proptest::collection::vec(1..u64::MAX, 0..20)) {
            let mut reached = Reached::default();
            for v in &versions {
                reached.advance(&v.to_string());
            }
            let expected = versions.iter().max().map(|m| rv(&m.to_string()));
            prop_assert_eq!(reached.comparable().unwrap().cloned(), expected);
        }
    }
}
