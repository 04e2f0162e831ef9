//! Secondary indexes: the built-in namespace index and user index functions.
//!
//! An index maps a value to the set of keys of the objects that carry it. Keys, not `Arc<K>`s,
//! are stored, so an `Apply` that leaves an object's index values alone touches no index.
//!
//! The namespace index is built when first asked for: a store nobody queries by namespace
//! never builds it (it cost more than a third of an initial sync). Once built, the writer keeps
//! it up to date and builds it for every later relist, off the lock, like the custom indexes.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use ahash::RandomState;

use crate::key::ObjectKey;

/// The objects of one store generation, by key. hashbrown's own map rather than the standard
/// library's (the same table): its lookups take any [`hashbrown::Equivalent`] key, so
/// `Store::get` searches with two borrowed `&str` through inlined code, with no trait object
/// and no `ObjectKey` built.
pub(crate) type ObjectMap<K> = hashbrown::HashMap<ObjectKey, Arc<K>, RandomState>;

/// A user index function: the values under which an object is indexed. Owned by the writer
/// alone, which runs it (a relist's indexes are built from the same functions, by reference).
pub(crate) type IndexFn<K> = Box<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// The keys of the objects that carry a value.
pub(crate) type KeySet = HashSet<ObjectKey, RandomState>;

/// Value to keys, for one index.
#[cfg_attr(test, derive(Debug))]
pub(crate) struct Postings<V> {
    map: HashMap<V, KeySet, RandomState>,
}

#[cfg(test)]
impl<V: Hash + Eq> PartialEq for Postings<V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<V> Default for Postings<V> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
        }
    }
}

/// Values are looked up by what they borrow as (`str` for custom indexes, bytes for the
/// namespace index).
impl<V: Hash + Eq> Postings<V> {
    fn insert(&mut self, value: V, key: &ObjectKey) {
        self.map.entry(value).or_default().insert(key.clone());
    }

    /// Like `insert`, but allocates the value only the first time it is seen.
    fn insert_borrowed<Q>(&mut self, value: &Q, key: &ObjectKey)
    where
        Q: Hash + Eq + ?Sized,
        V: Borrow<Q> + for<'a> From<&'a Q>,
    {
        if let Some(keys) = self.map.get_mut(value) {
            keys.insert(key.clone());
        } else {
            self.map
                .entry(V::from(value))
                .or_default()
                .insert(key.clone());
        }
    }

    fn remove<Q>(&mut self, value: &Q, key: &ObjectKey)
    where
        Q: Hash + Eq + ?Sized,
        V: Borrow<Q>,
    {
        if let Some(keys) = self.map.get_mut(value) {
            keys.remove(key);
            if keys.is_empty() {
                self.map.remove(value);
            }
        }
    }

    pub(crate) fn get<Q>(&self, value: &Q) -> Option<&KeySet>
    where
        Q: Hash + Eq + ?Sized,
        V: Borrow<Q>,
    {
        self.map.get(value)
    }
}

/// The index functions registered on a writer, in registration order.
pub(crate) struct IndexFns<K> {
    fns: Vec<(String, IndexFn<K>)>,
}

impl<K> IndexFns<K> {
    /// Whether no custom index is registered (the namespace index is built in, not here).
    pub(crate) fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }
}

impl<K> Default for IndexFns<K> {
    fn default() -> Self {
        Self { fns: Vec::new() }
    }
}

impl<K> fmt::Debug for IndexFns<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.fns.iter().map(|(name, _)| name))
            .finish()
    }
}

/// How one object's index values change, computed before the write lock is taken.
pub(crate) struct IndexChange {
    index: usize,
    removed: Vec<String>,
    added: Vec<String>,
}

impl<K> IndexFns<K> {
    /// Registers `f` under `name`, replacing (in place) an index of the same name.
    /// Returns the position of the index.
    pub(crate) fn set(&mut self, name: String, f: IndexFn<K>) -> usize {
        if let Some(pos) = self.fns.iter().position(|(n, _)| *n == name) {
            self.fns[pos].1 = f;
            pos
        } else {
            self.fns.push((name, f));
            self.fns.len() - 1
        }
    }

    /// The index value changes for an object going from `old` to `new` (either may be absent).
    pub(crate) fn plan(&self, old: Option<&K>, new: Option<&K>) -> Vec<IndexChange> {
        let mut changes = Vec::new();
        for (index, (_, f)) in self.fns.iter().enumerate() {
            let old_values = old.map(f).unwrap_or_default();
            let new_values = new.map(f).unwrap_or_default();
            let removed: Vec<String> = old_values
                .iter()
                .filter(|v| !new_values.contains(v))
                .cloned()
                .collect();
            let added: Vec<String> = new_values
                .into_iter()
                .filter(|v| !old_values.contains(v))
                .collect();
            if !removed.is_empty() || !added.is_empty() {
                changes.push(IndexChange {
                    index,
                    removed,
                    added,
                });
            }
        }
        changes
    }

    /// All indexes over `objects`, the namespace index only `with_namespaces`: used to build a
    /// relist generation off to the side.
    pub(crate) fn build(&self, objects: &ObjectMap<K>, with_namespaces: bool) -> Indexes {
        let by_namespace = if with_namespaces {
            OnceLock::from(namespace_postings(objects))
        } else {
            OnceLock::new()
        };
        let custom = self
            .fns
            .iter()
            .map(|(name, f)| (name.clone(), build_postings(f, objects)))
            .collect();
        Indexes {
            by_namespace,
            custom,
        }
    }
}

/// The namespace index over `objects`.
fn namespace_postings<K>(objects: &ObjectMap<K>) -> Postings<Box<[u8]>> {
    let mut postings = Postings::default();
    for key in objects.keys() {
        if let Some(ns) = key.namespace_bytes() {
            postings.insert_borrowed(ns, key);
        }
    }
    postings
}

/// The postings of the index function `f` over `objects`.
pub(crate) fn build_postings<K>(f: &IndexFn<K>, objects: &ObjectMap<K>) -> Postings<String> {
    let mut postings = Postings::default();
    for (key, obj) in objects {
        for value in f(obj) {
            postings.insert(value, key);
        }
    }
    postings
}

/// The indexes of one store generation; swapped together with its objects.
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(crate) struct Indexes {
    /// By the namespace's bytes, as the key holds them: recording a key needs no UTF-8 check.
    /// Empty until built, by the first reader asking by namespace or by the writer for a relist
    /// of a store already asked; while empty, the writer has nothing to keep.
    by_namespace: OnceLock<Postings<Box<[u8]>>>,
    /// Same order as the writer's `IndexFns`; few enough that a linear name search wins.
    custom: Vec<(String, Postings<String>)>,
}

impl Indexes {
    /// Records a new key in the namespace index, if built (a key never changes namespace).
    pub(crate) fn insert_namespace(&mut self, key: &ObjectKey) {
        if let (Some(ns), Some(postings)) = (key.namespace_bytes(), self.by_namespace.get_mut()) {
            postings.insert_borrowed(ns, key);
        }
    }

    /// Forgets a removed key in the namespace index, if built.
    pub(crate) fn remove_namespace(&mut self, key: &ObjectKey) {
        if let (Some(ns), Some(postings)) = (key.namespace_bytes(), self.by_namespace.get_mut()) {
            postings.remove(ns, key);
        }
    }

    /// Whether the namespace index of this generation is built: once a reader has asked for
    /// it, the writer builds it for the next generation too.
    pub(crate) fn has_namespaces(&self) -> bool {
        self.by_namespace.get().is_some()
    }

    /// Applies changes computed by [`IndexFns::plan`] for `key`.
    pub(crate) fn apply(&mut self, key: &ObjectKey, changes: Vec<IndexChange>) {
        for change in changes {
            let Some((_, postings)) = self.custom.get_mut(change.index) else {
                continue;
            };
            for value in &change.removed {
                postings.remove(value, key);
            }
            for value in change.added {
                postings.insert(value, key);
            }
        }
    }

    /// Installs (or replaces) the postings of the index at `index`.
    /// Returns the replaced postings, so the caller can drop them outside the lock.
    pub(crate) fn set(
        &mut self,
        index: usize,
        name: String,
        postings: Postings<String>,
    ) -> Option<Postings<String>> {
        if let Some(slot) = self.custom.get_mut(index) {
            Some(std::mem::replace(slot, (name, postings)).1)
        } else {
            self.custom.push((name, postings));
            None
        }
    }

    /// The keys in `namespace`. The first call on a generation without the namespace index
    /// builds it from `objects`, the generation's own (under the caller's shared lock, so
    /// `objects` cannot change meanwhile; concurrent first calls wait for the one building).
    pub(crate) fn namespace<K>(&self, namespace: &str, objects: &ObjectMap<K>) -> Option<&KeySet> {
        self.by_namespace
            .get_or_init(|| namespace_postings(objects))
            .get(namespace.as_bytes())
    }

    /// The postings of the index named `name`, if registered.
    pub(crate) fn custom(&self, name: &str) -> Option<&Postings<String>> {
        self.custom
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, postings)| postings)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.custom.iter().map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
impl Indexes {
    /// Index entries whose key is not in `objects`: always zero unless an update leaked.
    pub(crate) fn stale_entries<K>(&self, objects: &ObjectMap<K>) -> usize {
        let namespaced = self
            .by_namespace
            .get()
            .into_iter()
            .flat_map(|p| p.map.values().flatten());
        let custom = self
            .custom
            .iter()
            .flat_map(|(_, p)| p.map.values().flatten());
        namespaced
            .chain(custom)
            .filter(|key| !objects.contains_key(*key))
            .count()
    }
}
