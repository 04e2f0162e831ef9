use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use kube_client::Resource;

/// The identity of an object in a [`Store`](crate::Store): its namespace (`None` for a
/// cluster-scoped object) and its name.
///
/// One store holds one kind, so kind and group are not part of the key. A key as long as most
/// (namespace and name together up to 37 bytes) holds its strings inline: making one allocates
/// nothing, and a lookup that compares it reads no memory beyond the map's own entry. A longer
/// key keeps both strings in one reference-counted allocation, so cloning it (as every index
/// entry does) never copies them.
#[derive(Clone)]
pub struct ObjectKey {
    repr: Repr,
}

/// Bytes of namespace and name held inline; 37 keeps the key at 40 bytes (the tag takes one).
const INLINE: usize = 37;

/// `ns` is the namespace's length plus one, 0 for a cluster-scoped object: the namespace is
/// `text[..ns - 1]`, the name follows it.
#[derive(Clone)]
enum Repr {
    Inline { ns: u8, len: u8, text: [u8; INLINE] },
    Shared { ns: usize, text: Arc<str> },
}

impl ObjectKey {
    /// A key for the object named `name` in `namespace` (`None` for a cluster-scoped object).
    #[must_use]
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        let ns_len = namespace.map_or(0, str::len);
        let len = ns_len + name.len();
        let ns = namespace.map_or(0, |ns| ns.len() + 1);
        let repr = match (u8::try_from(ns), u8::try_from(len)) {
            (Ok(ns_tag), Ok(len_tag)) if len <= INLINE => {
                let mut text = [0; INLINE];
                text[..ns_len].copy_from_slice(namespace.unwrap_or_default().as_bytes());
                text[ns_len..len].copy_from_slice(name.as_bytes());
                Repr::Inline {
                    ns: ns_tag,
                    len: len_tag,
                    text,
                }
            }
            _ => {
                let mut text = String::with_capacity(len);
                text.push_str(namespace.unwrap_or_default());
                text.push_str(name);
                Repr::Shared {
                    ns,
                    text: Arc::from(text),
                }
            }
        };
        Self { repr }
    }

    /// The key of `obj`, from its metadata. An object without a name gets the empty name.
    #[must_use]
    pub fn from_object<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Self::new(
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// The namespace, or `None` for a cluster-scoped object.
    #[must_use]
    pub fn namespace(&self) -> Option<&str> {
        self.parts().0.map(as_str)
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        as_str(self.parts().1)
    }

    /// The namespace's and the name's bytes: what hashing and comparing need, with no UTF-8
    /// check (both came from `&str`s, split where they were joined).
    fn parts(&self) -> (Option<&[u8]>, &[u8]) {
        let (ns, text) = match &self.repr {
            Repr::Inline { ns, len, text } => (usize::from(*ns), &text[..usize::from(*len)]),
            Repr::Shared { ns, text } => (*ns, text.as_bytes()),
        };
        match ns.checked_sub(1) {
            Some(split) => {
                let (namespace, name) = text.split_at(split);
                (Some(namespace), name)
            }
            None => (None, text),
        }
    }
}

/// The `&str` of bytes that were a `&str` when the key was made, split at the boundary of two
/// of them: always valid UTF-8, so the empty fallback is never taken.
fn as_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl PartialEq for ObjectKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for ObjectKey {}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By namespace (cluster-scoped first), then name: bytes order as their strings do.
impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{ns}/{}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// A borrowed view of a key, so a map keyed by [`ObjectKey`] can be searched with two `&str`
/// without allocating an `ObjectKey` (the `Borrow<dyn KeyView>` trick).
pub(crate) trait KeyView {
    /// The namespace's bytes (`None`: cluster-scoped) and the name's.
    fn parts(&self) -> (Option<&[u8]>, &[u8]);
}

impl KeyView for ObjectKey {
    fn parts(&self) -> (Option<&[u8]>, &[u8]) {
        ObjectKey::parts(self)
    }
}

/// A key made of borrowed strings, for lookups.
pub(crate) struct KeyRef<'a> {
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: &'a str,
}

impl KeyView for KeyRef<'_> {
    fn parts(&self) -> (Option<&[u8]>, &[u8]) {
        (self.namespace.map(str::as_bytes), self.name.as_bytes())
    }
}

/// The one hash of a key, owned or borrowed.
fn hash_parts<H: Hasher>((namespace, name): (Option<&[u8]>, &[u8]), state: &mut H) {
    // The namespace's length (plus one; 0: none) tells where the name starts.
    state.write_usize(namespace.map_or(0, |ns| ns.len() + 1));
    state.write(namespace.unwrap_or_default());
    state.write(name);
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.parts(), state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

// Must hash exactly like `dyn KeyView`, or borrowed lookups would miss.
impl Hash for ObjectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.parts(), state);
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for ObjectKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyRef, KeyView, ObjectKey};
    use std::collections::HashMap;

    #[test]
    fn borrowed_lookup_finds_owned_key() {
        let mut map = HashMap::with_hasher(ahash::RandomState::new());
        map.insert(ObjectKey::new(Some("ns"), "a"), 1);
        map.insert(ObjectKey::new(None, "a"), 2);
        let get = |namespace, name| {
            map.get(&KeyRef { namespace, name } as &dyn KeyView)
                .copied()
        };
        assert_eq!(get(Some("ns"), "a"), Some(1));
        assert_eq!(get(None, "a"), Some(2));
        assert_eq!(get(Some("other"), "a"), None);
        assert_eq!(get(Some("n"), "sa"), None);
    }

    #[test]
    fn long_keys_equal_hash_and_order_like_short_ones() {
        let long = "n".repeat(300);
        for (namespace, name) in [
            (Some("ns"), "a"),
            (None, "a"),
            (Some(""), "a"),
            (Some("ns"), long.as_str()),
            (Some(long.as_str()), "a"),
            (None, long.as_str()),
            (Some("a-namespace-of-twenty"), "a-name-of-16-byt"),
            (Some("a-namespace-of-twenty"), "a-name-of-17-byte"),
        ] {
            let key = ObjectKey::new(namespace, name);
            assert_eq!((key.namespace(), key.name()), (namespace, name));
            assert_eq!(key, key.clone());
            let mut map = HashMap::with_hasher(ahash::RandomState::new());
            map.insert(key.clone(), 1);
            assert!(map.contains_key(&KeyRef { namespace, name } as &dyn KeyView));
        }
        // Where the namespace ends is part of the key.
        assert_ne!(
            ObjectKey::new(Some("ab"), "c"),
            ObjectKey::new(Some("a"), "bc")
        );
        assert_ne!(ObjectKey::new(Some(""), "a"), ObjectKey::new(None, "a"));
        // Cluster-scoped first, then by namespace, then by name, whatever the length.
        let mut keys = [
            ObjectKey::new(Some("b"), "a"),
            ObjectKey::new(Some("a"), &long),
            ObjectKey::new(Some("a"), "b"),
            ObjectKey::new(None, "z"),
        ];
        keys.sort();
        let sorted: Vec<_> = keys.iter().map(|k| (k.namespace(), k.name())).collect();
        assert_eq!(
            sorted,
            [
                (None, "z"),
                (Some("a"), "b"),
                (Some("a"), long.as_str()),
                (Some("b"), "a")
            ]
        );
    }

    #[test]
    fn a_key_is_no_larger_than_two_shared_strings() {
        assert!(std::mem::size_of::<ObjectKey>() <= 40);
    }

    #[test]
    fn key_displays_as_namespace_slash_name() {
        assert_eq!(ObjectKey::new(Some("ns"), "a").to_string(), "ns/a");
        assert_eq!(ObjectKey::new(None, "a").to_string(), "a");
    }
}
