use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use kube_client::Resource;

/// The identity of an object in a [`Store`](crate::Store): its namespace (`None` for a
/// cluster-scoped object) and its name.
///
/// One store holds one kind, so kind and group are not part of the key. The strings are
/// reference-counted, so cloning a key (as every index entry does) never copies them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    namespace: Option<Arc<str>>,
    name: Arc<str>,
}

impl ObjectKey {
    /// A key for the object named `name` in `namespace` (`None` for a cluster-scoped object).
    #[must_use]
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self {
            namespace: namespace.map(Arc::from),
            name: Arc::from(name),
        }
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
        self.namespace.as_deref()
    }

    /// The name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared namespace string, so index entries can reuse it without copying.
    pub(crate) fn namespace_arc(&self) -> Option<&Arc<str>> {
        self.namespace.as_ref()
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A borrowed view of a key, so a map keyed by [`ObjectKey`] can be searched with two `&str`
/// without allocating an `ObjectKey` (the `Borrow<dyn KeyView>` trick).
pub(crate) trait KeyView {
    fn namespace(&self) -> Option<&str>;
    fn name(&self) -> &str;
}

impl KeyView for ObjectKey {
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// A key made of borrowed strings, for lookups.
pub(crate) struct KeyRef<'a> {
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: &'a str,
}

impl KeyView for KeyRef<'_> {
    fn namespace(&self) -> Option<&str> {
        self.namespace
    }
    fn name(&self) -> &str {
        self.name
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace().hash(state);
        self.name().hash(state);
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.namespace() == other.namespace()
    }
}

impl Eq for dyn KeyView + '_ {}

// Must hash exactly like `dyn KeyView`, or borrowed lookups would miss.
impl Hash for ObjectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyView).hash(state);
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
    fn key_displays_as_namespace_slash_name() {
        assert_eq!(ObjectKey::new(Some("ns"), "a").to_string(), "ns/a");
        assert_eq!(ObjectKey::new(None, "a").to_string(), "a");
    }
}
