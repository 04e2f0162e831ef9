//! One store fed by several event streams ("sources"): namespaces, selectors, shards.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use kache_watch::Event;
use kube_client::Resource;
use tokio::sync::watch;
use tracing::debug;

use crate::key::ObjectKey;
use crate::store::Store;
use crate::version::{Reached, ResourceVersion};
use crate::writer::Writer;

/// One source's bookkeeping.
struct Source<K> {
    /// The keys this source holds: what its last complete list and later events say exist.
    keys: HashSet<ObjectKey, ahash::RandomState>,
    /// Between `Init` and `InitDone`: the list being received. `None` for a key the source
    /// applied live during the list (its object is in the store already).
    relist: Option<Relist<K>>,
    /// Whether the source has completed a list.
    synced: bool,
    /// How far the source's stream has reached (its events and progress points).
    reached: Reached,
}

struct Relist<K> {
    objects: HashMap<ObjectKey, Option<K>, ahash::RandomState>,
    reached: Reached,
}

impl<K> Default for Source<K> {
    fn default() -> Self {
        Self {
            keys: HashSet::default(),
            relist: None,
            synced: false,
            reached: Reached::Nothing,
        }
    }
}

/// A store fed by several sources, each speaking the [`Event`] protocol on its own.
///
/// Each source is named, and has its own initial sync (`Init`, `InitApply`*, `InitDone`): a
/// relist of one source replaces only that source's objects. The store holds the union of the
/// sources' objects, each once, whichever sources hold it:
///
/// - An object is in the store while at least one source holds it: a relist or a `Delete`
///   from one source never removes an object another source still holds.
/// - The same object from two sources is stored once, at the newest resourceVersion either
///   has sent: a source lagging behind never replaces a newer copy with an older one, and an
///   object received again unchanged (same uid and resourceVersion) is no change at all.
/// - A source's relist is applied in one step when its `InitDone` arrives: readers see the
///   store before the relist or after it, and subscribers hear only what changed.
/// - [`Sources::remove`] deletes exactly the objects no other source holds, in one step;
///   subscribers hear those deletes.
/// - The store becomes ready once every source added so far has synced; later sources do not
///   make it unready. [`Sources::is_synced`] tells one source's state.
/// - [`Store::resource_version`] is the point every synced source has reached (the lowest): a wait for
///   a write resolves once each source has passed it. A source that is quiet passes it only
///   with a bookmark (about once a minute on current servers), so with several sources a
///   read-your-writes wait can take that long.
///
/// Resharding costs nothing for the objects that stay: add the new range's source, and remove
/// the old one once the new one has synced. The objects both hold are never deleted and
/// re-added, for readers or subscribers.
///
/// Readers, indexes, the transform and subscribers are the [`Writer`]'s, and work as with one
/// source. Feed the sources by hand with [`Sources::apply`], or let
/// [`Sources::into_reflector`] poll their streams.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::{Event, Sources, Writer};
///
/// fn cm(name: &str, uid: &str) -> ConfigMap {
///     let mut cm = ConfigMap::default();
///     cm.metadata.name = Some(name.into());
///     cm.metadata.uid = Some(uid.into());
///     cm.metadata.resource_version = Some("1".into());
///     cm
/// }
///
/// let mut sources = Sources::new(Writer::<ConfigMap>::new());
/// let store = sources.store();
/// sources.add("a");
/// sources.add("b");
/// for event in [Event::Init, Event::InitApply(cm("x", "1")), Event::InitApply(cm("y", "2")), Event::InitDone] {
///     sources.apply("a", event);
/// }
/// assert!(!store.is_synced(), "b has not synced");
/// for event in [Event::Init, Event::InitApply(cm("y", "2")), Event::InitDone] {
///     sources.apply("b", event);
/// }
/// assert!(store.is_synced());
/// assert_eq!(store.len(), 2);
///
/// // Removing `a` deletes what only `a` held; `y` stays, held by `b`.
/// sources.remove("a");
/// assert!(store.get(None, "x").is_none());
/// assert!(store.get(None, "y").is_some());
/// ```
pub struct Sources<K> {
    writer: Writer<K>,
    by_name: HashMap<Arc<str>, Source<K>>,
    /// Each source's synced state, for [`SourceSet`] handles on other tasks.
    synced_tx: watch::Sender<HashMap<Arc<str>, bool>>,
    /// Keys the store dropped (no source held them), with the newest version known of each
    /// then: a source that lags (overlapping selectors, a new shard's list) must not put back
    /// an older copy, which a wait on the object may already have seen pass. Kept until every
    /// source has reached that version, after which no source can send an older copy.
    tombstones: HashMap<ObjectKey, ResourceVersion>,
}

impl<K> fmt::Debug for Sources<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("writer", &self.writer)
            .field("sources", &self.by_name.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<K> Sources<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// Feeds `writer`'s store from sources, none yet. Give the writer its indexes, transform
    /// and buffer first; apply no event to it directly from now on.
    #[must_use]
    pub fn new(writer: Writer<K>) -> Self {
        Self {
            writer,
            by_name: HashMap::new(),
            synced_tx: watch::Sender::new(HashMap::new()),
            tombstones: HashMap::new(),
        }
    }

    /// A read handle to the store.
    #[must_use]
    pub fn store(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Adds a source named `name`, not yet synced; `false` if it exists already.
    pub fn add(&mut self, name: &str) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        let name: Arc<str> = Arc::from(name);
        debug!(source = %name, "source added");
        self.by_name.insert(Arc::clone(&name), Source::default());
        self.synced_tx.send_modify(|synced| {
            synced.insert(name, false);
        });
        true
    }

    /// Removes the source `name`, deleting in one step every object that no other source
    /// holds; `false` if there is no such source.
    pub fn remove(&mut self, name: &str) -> bool {
        self.writer.force_flush();
        let removed = self.remove_buffered(name);
        self.writer.force_flush();
        removed
    }

    /// The names of the sources.
    #[must_use]
    pub fn names(&self) -> Vec<Arc<str>> {
        self.by_name.keys().cloned().collect()
    }

    /// Whether source `name` has completed a list (`false` for an unknown source).
    #[must_use]
    pub fn is_synced(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|source| source.synced)
    }

    /// Applies an event of source `name`; `false` (and nothing changes) if there is no such
    /// source.
    ///
    /// Subscribers are sent the resulting change without waiting, as by [`Writer::apply`].
    ///
    /// # Panics
    ///
    /// If the transform or an index function panics, as [`Writer::apply`] does.
    pub fn apply(&mut self, name: &str, event: Event<K>) -> bool {
        self.writer.force_flush();
        let known = self.apply_buffered(name, event);
        self.writer.force_flush();
        known
    }

    /// Records that source `name` has reached `resource_version` with no object changing (a
    /// bookmark); see [`Writer::apply_progress`].
    pub fn apply_progress(&mut self, name: &str, resource_version: &str) {
        let Some(source) = self.by_name.get_mut(name) else {
            return;
        };
        match &mut source.relist {
            Some(relist) => relist.reached.advance(resource_version),
            None => source.reached.advance(resource_version),
        }
        self.publish_version();
    }

    fn remove_buffered(&mut self, name: &str) -> bool {
        let Some(source) = self.by_name.remove(name) else {
            return false;
        };
        self.synced_tx.send_modify(|synced| {
            synced.remove(name);
        });
        let gone: Vec<ObjectKey> = source
            .keys
            .into_iter()
            .filter(|key| !self.held_elsewhere(key, name))
            .collect();
        debug!(source = name, deleted = gone.len(), "source removed");
        self.bury(&gone, None);
        let version = self.version();
        self.writer
            .apply_batch(Vec::new(), &gone, version.as_deref());
        self.update_ready();
        true
    }

    pub(crate) fn apply_buffered(&mut self, name: &str, event: Event<K>) -> bool {
        let Some(source) = self.by_name.get_mut(name) else {
            debug!(source = name, "event for an unknown source; ignored");
            return false;
        };
        match event {
            Event::Init => {
                if source.relist.is_some() {
                    debug!(
                        source = name,
                        "relist restarted; discarding the unfinished one"
                    );
                }
                source.relist = Some(Relist {
                    objects: HashMap::default(),
                    reached: Reached::Nothing,
                });
            }
            Event::InitApply(obj) => {
                let relist = source.relist.get_or_insert_with(|| Relist {
                    objects: HashMap::default(),
                    reached: Reached::Nothing,
                });
                relist.reached.advance(version_of(&obj));
                relist
                    .objects
                    .insert(ObjectKey::from_object(&obj), Some(obj));
            }
            Event::InitDone => self.finish_relist(name),
            Event::Apply(obj) => {
                let key = ObjectKey::from_object(&obj);
                source.keys.insert(key.clone());
                match &mut source.relist {
                    Some(relist) => {
                        relist.reached.advance(version_of(&obj));
                        relist.objects.insert(key.clone(), None);
                    }
                    None => source.reached.advance(version_of(&obj)),
                }
                let put = self.newer_than_stored(&key, &obj).then_some(obj);
                let version = self.version();
                self.writer
                    .apply_batch(put.into_iter().collect(), &[], version.as_deref());
            }
            Event::Delete(obj) => {
                let key = ObjectKey::from_object(&obj);
                source.keys.remove(&key);
                match &mut source.relist {
                    Some(relist) => {
                        relist.reached.advance(version_of(&obj));
                        relist.objects.remove(&key);
                    }
                    None => source.reached.advance(version_of(&obj)),
                }
                let delete: Vec<ObjectKey> = (!self.held_elsewhere(&key, name))
                    .then_some(key)
                    .into_iter()
                    .collect();
                self.bury(&delete, Some(version_of(&obj)));
                let version = self.version();
                self.writer
                    .apply_batch(Vec::new(), delete.as_slice(), version.as_deref());
            }
        }
        true
    }

    /// Applies a source's completed list in one step.
    fn finish_relist(&mut self, name: &str) {
        let Some(source) = self.by_name.get_mut(name) else {
            return;
        };
        let Some(relist) = source.relist.take() else {
            // A duplicate `InitDone` changes no object, as for a writer.
            source.synced = true;
            self.update_ready();
            return;
        };
        source.reached.merge(relist.reached);
        let old = std::mem::take(&mut source.keys);
        let mut puts = Vec::new();
        let mut keys =
            HashSet::with_capacity_and_hasher(relist.objects.len(), ahash::RandomState::default());
        for (key, obj) in relist.objects {
            if let Some(obj) = obj
                && self.newer_than_stored(&key, &obj)
            {
                puts.push(obj);
            }
            keys.insert(key);
        }
        let source = self
            .by_name
            .get_mut(name)
            .expect("the source was just found");
        source.keys = keys;
        source.synced = true;
        let gone: Vec<ObjectKey> = old
            .into_iter()
            .filter(|key| !self.held_by(key, name) && !self.held_elsewhere(key, name))
            .collect();
        debug!(
            source = name,
            changed = puts.len(),
            deleted = gone.len(),
            "source relist done"
        );
        self.bury(&gone, None);
        let version = self.version();
        if let Some(version) = &version {
            self.forget_tombstones(version);
        }
        self.writer.apply_batch(puts, &gone, version.as_deref());
        self.synced_tx.send_modify(|synced| {
            if let Some(state) = synced.get_mut(name) {
                *state = true;
            }
        });
        self.update_ready();
    }

    fn held_by(&self, key: &ObjectKey, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|source| source.keys.contains(key))
    }

    /// Whether a source other than `name` holds `key` (linear in the sources: a store has a
    /// few, one per namespace, selector or shard).
    fn held_elsewhere(&self, key: &ObjectKey, name: &str) -> bool {
        self.by_name
            .iter()
            .any(|(other, source)| &**other != name && source.keys.contains(key))
    }

    /// Whether `obj` should replace the stored copy: there is none, or it is another version
    /// and not an older one.
    fn newer_than_stored(&self, key: &ObjectKey, obj: &K) -> bool {
        // The exact key (no cluster-scoped fallback), under a short shared lock.
        let stored = self.writer.stored(key);
        let Some(stored) = stored else {
            // Dropped from the store since: an older copy never comes back (the same version
            // does: an object that left one source's selection and entered another's).
            return self
                .tombstones
                .get(key)
                .is_none_or(|at| ResourceVersion::of(obj).map_or(true, |version| version >= *at));
        };
        let (stored, new) = (stored.meta(), obj.meta());
        if stored.uid == new.uid && stored.resource_version == new.resource_version {
            return false;
        }
        let version = |meta: &kube_client::api::ObjectMeta| {
            ResourceVersion::parse(meta.resource_version.as_deref().unwrap_or_default())
        };
        match (version(stored), version(new)) {
            (Ok(stored), Ok(new)) => new > stored,
            // Versions that do not compare: the last one received wins.
            _ => true,
        }
    }

    /// The point every source has reached: `None` until each has synced.
    fn version(&self) -> Option<String> {
        let mut lowest: Option<&Reached> = None;
        for source in self.by_name.values() {
            if !source.synced {
                return None;
            }
            match (&source.reached, lowest) {
                (Reached::Nothing, _) => return None,
                (Reached::Opaque(_), _) => return source.reached.to_resource_version_string(),
                (Reached::At(_), None) => lowest = Some(&source.reached),
                (Reached::At(version), Some(Reached::At(low))) if version < low => {
                    lowest = Some(&source.reached);
                }
                _ => {}
            }
        }
        lowest.and_then(Reached::to_resource_version_string)
    }

    fn publish_version(&mut self) {
        if let Some(version) = self.version() {
            self.forget_tombstones(&version);
            self.writer.apply_progress(&version);
        }
    }

    /// Records the keys about to leave the store, each at the newest version known of it:
    /// its stored copy's, or the delete's (`deleted_at`) if newer.
    fn bury(&mut self, keys: &[ObjectKey], deleted_at: Option<&str>) {
        let deleted_at = deleted_at.and_then(|rv| ResourceVersion::parse(rv).ok());
        for key in keys {
            let stored = self
                .writer
                .stored(key)
                .and_then(|obj| ResourceVersion::of(obj.as_ref()).ok());
            if let Some(at) = stored.into_iter().chain(deleted_at.clone()).max() {
                self.tombstones.insert(key.clone(), at);
            }
        }
    }

    /// Drops the tombstones every source has passed: `version` is the lowest point reached.
    fn forget_tombstones(&mut self, version: &str) {
        if self.tombstones.is_empty() {
            return;
        }
        if let Ok(reached) = ResourceVersion::parse(version) {
            self.tombstones.retain(|_, at| *at > reached);
        }
    }

    fn update_ready(&mut self) {
        if !self.by_name.is_empty() && self.by_name.values().all(|source| source.synced) {
            self.writer.mark_ready();
        }
    }
}

/// The resourceVersion of `obj`, empty if it has none.
fn version_of<K: Resource>(obj: &K) -> &str {
    obj.meta().resource_version.as_deref().unwrap_or_default()
}

mod reflector;

pub use reflector::{SourceSet, SourcesReflector};
