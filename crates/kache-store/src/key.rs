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

/// Which form a key takes follows from its length alone (inline up to [`INLINE`] bytes), so two
/// equal keys always have the same form: equality and hashing may look at the form first.
#[derive(Clone)]
enum Repr {
    Inline(Inline),
    /// `ns` as in [`Inline`]; `text` is the namespace followed by the name.
    Shared {
        ns: usize,
        text: Arc<str>,
    },
}

/// A short key's bytes. `ns` is the namespace's length plus one, 0 for a cluster-scoped object:
/// the namespace is `text[..ns - 1]`, the name follows it, and the bytes after `len` are 0, so
/// two equal keys are equal byte for byte.
#[derive(Clone)]
struct Inline {
    ns: u8,
    len: u8,
    text: [u8; INLINE],
}

impl Inline {
    /// The inline form of a key, or `None` if namespace and name are too long together.
    #[inline]
    fn new(namespace: Option<&str>, name: &str) -> Option<Self> {
        let ns_len = namespace.map_or(0, str::len);
        let len = ns_len
            .checked_add(name.len())
            .filter(|&len| len <= INLINE)?;
        let mut text = [0; INLINE];
        text[..ns_len].copy_from_slice(namespace.unwrap_or_default().as_bytes());
        text[ns_len..len].copy_from_slice(name.as_bytes());
        // Both fit in a `u8`: they are at most `INLINE + 1`.
        let ns = u8::try_from(namespace.map_or(0, |_| ns_len + 1)).ok()?;
        let len = u8::try_from(len).ok()?;
        Some(Self { ns, len, text })
    }

    /// The text's last bytes, with `ns` and `len`, as one word.
    #[inline]
    fn last_word(&self) -> u64 {
        let (_, tail) = self.text.as_chunks::<8>();
        let mut last = [0; 8];
        last[..tail.len()].copy_from_slice(tail);
        last[6] = self.ns;
        last[7] = self.len;
        u64::from_ne_bytes(last)
    }
}

/// Word by word, without branches: a comparison of the 37 bytes would be a call to `memcmp`.
impl PartialEq for Inline {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, _) = self.text.as_chunks::<8>();
        let (b, _) = other.text.as_chunks::<8>();
        let differ = a
            .iter()
            .zip(b)
            .fold(self.last_word() ^ other.last_word(), |differ, (a, b)| {
                differ | (u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b))
            });
        differ == 0
    }
}

impl Eq for Inline {}

impl ObjectKey {
    /// A key for the object named `name` in `namespace` (`None` for a cluster-scoped object).
    #[must_use]
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        let repr = if let Some(inline) = Inline::new(namespace, name) {
            Repr::Inline(inline)
        } else {
            let mut text = String::with_capacity(namespace.map_or(0, str::len) + name.len());
            text.push_str(namespace.unwrap_or_default());
            text.push_str(name);
            Repr::Shared {
                ns: namespace.map_or(0, |ns| ns.len() + 1),
                text: Arc::from(text),
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

    /// The namespace's bytes, with no UTF-8 check.
    pub(crate) fn namespace_bytes(&self) -> Option<&[u8]> {
        self.parts().0
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        as_str(self.parts().1)
    }

    /// The namespace's and the name's bytes: what hashing and comparing need, with no UTF-8
    /// check (both came from `&str`s, split where they were joined).
    #[inline]
    fn parts(&self) -> (Option<&[u8]>, &[u8]) {
        let (ns, text) = match &self.repr {
            Repr::Inline(Inline { ns, len, text }) => {
                (usize::from(*ns), &text[..usize::from(*len)])
            }
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
        match (&self.repr, &other.repr) {
            (Repr::Inline(a), Repr::Inline(b)) => a == b,
            (Repr::Shared { .. }, Repr::Shared { .. }) => self.parts() == other.parts(),
            // Equal keys have equal lengths, so the same form.
            _ => false,
        }
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

/// A key for lookups, made of two borrowed `&str`: it hashes like the [`ObjectKey`] it equals,
/// so a map keyed by `ObjectKey` is searched with it directly, reading the caller's strings
/// where they are.
pub(crate) struct KeyRef<'a> {
    namespace: Option<&'a str>,
    name: &'a str,
}

impl<'a> KeyRef<'a> {
    #[inline]
    pub(crate) fn new(namespace: Option<&'a str>, name: &'a str) -> Self {
        Self { namespace, name }
    }

    #[inline]
    fn parts(&self) -> (Option<&[u8]>, &[u8]) {
        (self.namespace.map(str::as_bytes), self.name.as_bytes())
    }
}

/// The one hash of a key, owned or borrowed, of either form: the two lengths in one word, then
/// each string's bytes as words.
///
/// It reads the bytes where they lie. A lookup that first copied the caller's strings into a
/// key on the stack and then read that copy back as words would make the CPU wait for those
/// stores to be written, and so for everything before them, such as the previous `get`'s
/// cache miss: consecutive lookups could no longer overlap (measured at 100,000 objects: about
/// 330 ns a `get` in a loop, against about 210 ns reading the strings in place).
#[inline]
fn hash_parts<H: Hasher>((namespace, name): (Option<&[u8]>, &[u8]), state: &mut H) {
    // The namespace's length (plus one; 0: none) tells where the name starts.
    let ns = namespace.map_or(0, |ns| ns.len() + 1) as u64;
    state.write_u64(ns | (name.len() as u64) << 32);
    hash_bytes(namespace.unwrap_or_default(), state);
    hash_bytes(name, state);
}

/// Hashes `bytes` as words read in place, with no call and no copy. Their length is hashed
/// already, so a short string's overlapping or repeated reads are unambiguous.
#[inline]
fn hash_bytes<H: Hasher>(bytes: &[u8], state: &mut H) {
    let word = |chunk: Option<&[u8; 8]>| chunk.map_or(0, |chunk| u64::from_le_bytes(*chunk));
    let len = bytes.len();
    if len > 16 {
        let (words, rest) = bytes.as_chunks::<8>();
        for chunk in words {
            state.write_u64(u64::from_le_bytes(*chunk));
        }
        if !rest.is_empty() {
            // The last 8 bytes, overlapping the last whole word.
            state.write_u64(word(bytes.last_chunk()));
        }
    } else if len >= 8 {
        // The first and the last 8 bytes, overlapping unless there are 16.
        state.write_u64(word(bytes.first_chunk()));
        state.write_u64(word(bytes.last_chunk()));
    } else if len >= 4 {
        let half = |chunk: Option<&[u8; 4]>| chunk.map_or(0, |chunk| u32::from_le_bytes(*chunk));
        state.write_u64(
            u64::from(half(bytes.first_chunk())) | u64::from(half(bytes.last_chunk())) << 32,
        );
    } else if len > 0 {
        state.write_u64(
            u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16,
        );
    }
}

// `ObjectKey` and `KeyRef` must hash alike, or lookups would miss.
impl Hash for ObjectKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.parts(), state);
    }
}

impl Hash for KeyRef<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.parts(), state);
    }
}

impl hashbrown::Equivalent<ObjectKey> for KeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &ObjectKey) -> bool {
        self.parts() == key.parts()
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyRef, ObjectKey};
    use hashbrown::HashMap;

    #[test]
    fn borrowed_lookup_finds_owned_key() {
        let mut map = HashMap::with_hasher(ahash::RandomState::new());
        map.insert(ObjectKey::new(Some("ns"), "a"), 1);
        map.insert(ObjectKey::new(None, "a"), 2);
        let get = |namespace, name| map.get(&KeyRef::new(namespace, name)).copied();
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
            assert!(map.contains_key(&KeyRef::new(namespace, name)));
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
    fn every_key_finds_itself_and_no_other() {
        // Lengths on both sides of the inline limit, keys that differ only in their last byte
        // (the word that also holds the lengths), and the same bytes split differently.
        let text = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";
        let mut keys = Vec::new();
        for len in [0, 1, 7, 8, 9, 16, 29, 30, 36, 37, 38, 44] {
            for ns_len in [None, Some(0), Some(1), Some(8), Some(len / 2), Some(len)] {
                let Some(ns_len) = ns_len.map_or(Some(None), |ns| (ns <= len).then_some(Some(ns)))
                else {
                    continue;
                };
                let (ns, name) = text[..len].split_at(ns_len.unwrap_or(0));
                keys.push((ns_len.map(|_| ns.to_owned()), name.to_owned()));
                let mut last = name.to_owned();
                if last.pop().is_some() {
                    last.push('!');
                    keys.push((ns_len.map(|_| ns.to_owned()), last));
                }
            }
        }
        keys.sort();
        keys.dedup();
        let mut map = HashMap::with_hasher(ahash::RandomState::new());
        for (i, (ns, name)) in keys.iter().enumerate() {
            assert!(map.insert(ObjectKey::new(ns.as_deref(), name), i).is_none());
        }
        assert_eq!(map.len(), keys.len());
        for (i, (ns, name)) in keys.iter().enumerate() {
            assert_eq!(
                map.get(&KeyRef::new(ns.as_deref(), name)),
                Some(&i),
                "{ns:?}/{name}"
            );
            assert_eq!(map.get(&ObjectKey::new(ns.as_deref(), name)), Some(&i));
        }
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
