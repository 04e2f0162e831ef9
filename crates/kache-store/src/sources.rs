//! One store fed by several event streams ("sources"): namespaces, selectors, shards.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use kache_watch::{Event, Progress, ProgressScope};
use kube_client::Resource;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::key::ObjectKey;
use crate::observer::Observer;
use crate::origin::Origin;
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
/// - [`Store::version`] is the point every synced source has reached (the lowest): a wait for
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
/// assert!(!store.is_ready(), "b has not synced");
/// for event in [Event::Init, Event::InitApply(cm("y", "2")), Event::InitDone] {
///     sources.apply("b", event);
/// }
/// assert!(store.is_ready());
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

/// A source's event stream, boxed so that sources of different types share one driver.
type SourceStream<K, E> = Pin<Box<dyn Stream<Item = Result<Event<K>, E>> + Send>>;

/// What a [`SourceSet`] asks the driver to do.
enum Command<K, E> {
    Add(Arc<str>, SourceStream<K, E>),
    Remove(Arc<str>),
}

/// A source stream being polled, with the progress points its watcher reports (see
/// [`crate::Reflect`], which does the same for one stream).
struct Polled<K, E> {
    name: Arc<str>,
    stream: SourceStream<K, E>,
    received: u64,
    pending: Option<Progress>,
    observer: Observer,
    /// The one watch stream that may feed this source: see origin.rs.
    origin: Origin,
}

/// A handle that adds and removes the sources of a [`SourcesReflector`] while it runs, from
/// any task. Cheap to clone.
pub struct SourceSet<K, E> {
    commands: mpsc::UnboundedSender<Command<K, E>>,
    synced: watch::Receiver<HashMap<Arc<str>, bool>>,
}

impl<K, E> Clone for SourceSet<K, E> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K, E> fmt::Debug for SourceSet<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSet")
            .field("synced", &*self.synced.borrow())
            .finish_non_exhaustive()
    }
}

impl<K, E> SourceSet<K, E> {
    /// Adds a source that `stream` feeds (a `kache_watch::watcher`, say). It takes effect when
    /// the [`SourcesReflector`] is next polled. A source of the same name gets the new stream
    /// and keeps its objects until the stream's first list replaces them, as a relist would.
    pub fn add<S>(&self, name: &str, stream: S)
    where
        S: Stream<Item = Result<Event<K>, E>> + Send + 'static,
    {
        // A closed channel means the reflector is gone: there is nothing left to feed.
        let _ = self
            .commands
            .send(Command::Add(Arc::from(name), Box::pin(stream)));
    }

    /// Removes the source `name`: its stream is dropped and the objects no other source holds
    /// are deleted, in one step, when the [`SourcesReflector`] is next polled.
    pub fn remove(&self, name: &str) {
        let _ = self.commands.send(Command::Remove(Arc::from(name)));
    }

    /// Each source's name and whether it has synced, as the reflector last applied.
    #[must_use]
    pub fn synced(&self) -> HashMap<Arc<str>, bool> {
        self.synced.borrow().clone()
    }

    /// Waits until the source `name` exists and has synced.
    ///
    /// # Errors
    ///
    /// [`Error::WriterDropped`](crate::Error::WriterDropped) if the reflector is dropped
    /// first.
    pub async fn wait_synced(&self, name: &str) -> crate::Result<()> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|synced| synced.get(name).copied().unwrap_or(false))
            .await
            .map(|_| ())
            .map_err(|_| crate::Error::WriterDropped)
    }
}

/// A stream that polls every source's stream and applies their events to [`Sources`];
/// created by [`Sources::into_reflector`]. It yields each source's items after they are
/// applied, as the source name and `Ok(())` or the source's error, and ends once every
/// [`SourceSet`] is dropped and no source is left.
#[must_use = "streams do nothing unless polled"]
pub struct SourcesReflector<K, E> {
    sources: Sources<K>,
    polled: Vec<Polled<K, E>>,
    commands: mpsc::UnboundedReceiver<Command<K, E>>,
    commands_open: bool,
    /// Where the next round of polls starts, so no source starves the others.
    next: usize,
}

// Nothing in it is ever pinned (each source stream is boxed), so it moves freely whatever `K`.
impl<K, E> Unpin for SourcesReflector<K, E> {}

impl<K, E> fmt::Debug for SourcesReflector<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourcesReflector")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl<K> Sources<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// A stream that drives these sources from their event streams, and a handle that adds
    /// and removes sources while it runs.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Sources, Writer};
    /// use kache_watch::{Config, WatchStreamExt, watcher};
    /// use kube_client::{Api, Client};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = Client::try_default().await?;
    /// let sources = Sources::new(Writer::<ConfigMap>::new());
    /// let store = sources.store();
    /// let (set, reflector) = sources.into_reflector();
    /// // One watch per namespace, one store.
    /// for ns in ["team-a", "team-b"] {
    ///     let api = Api::namespaced(client.clone(), ns);
    ///     set.add(ns, watcher(api, Config::default()).default_backoff());
    /// }
    /// tokio::spawn(reflector.for_each(|_| async {}));
    /// store.wait_until_ready().await?;
    /// set.remove("team-b"); // its objects leave the store, and subscribers hear it
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_reflector<E>(self) -> (SourceSet<K, E>, SourcesReflector<K, E>) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let set = SourceSet {
            commands: commands_tx,
            synced: self.synced_tx.subscribe(),
        };
        let reflector = SourcesReflector {
            sources: self,
            polled: Vec::new(),
            commands,
            commands_open: true,
            next: 0,
        };
        (set, reflector)
    }
}

impl<K, E> Stream for SourcesReflector<K, E>
where
    K: Resource + Send + Sync + 'static,
    E: 'static,
{
    type Item = (Arc<str>, Result<(), E>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Backpressure subscribers must have room for the previous change first.
        ready!(this.sources.writer.poll_flush(cx));
        while this.commands_open {
            match this.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Add(name, stream))) => {
                    // A source added again keeps its objects: the new stream's first list
                    // replaces them as a relist would.
                    this.polled.retain(|p| p.name != name);
                    this.sources.add(&name);
                    this.polled.push(Polled {
                        name,
                        stream,
                        received: 0,
                        pending: None,
                        observer: Observer::default(),
                        origin: Origin::default(),
                    });
                }
                Poll::Ready(Some(Command::Remove(name))) => {
                    this.polled.retain(|p| p.name != name);
                    this.sources.remove_buffered(&name);
                }
                Poll::Ready(None) => this.commands_open = false,
                Poll::Pending => break,
            }
        }
        let count = this.polled.len();
        for offset in 0..count {
            let index = (this.next + offset) % count;
            let polled = &mut this.polled[index];
            // As `Reflect` does: what the watcher did around the poll (WATCH requests,
            // bookmarks) ends an error streak and feeds the metrics.
            let before = polled
                .observer
                .observes_polls()
                .then(|| polled.observer.before_poll());
            // Polled in a scope rather than through `observe_progress`: the item is written
            // here, with no copy of the event on its way out.
            let scope = ProgressScope::enter();
            let item = polled.stream.as_mut().poll_next(cx);
            let seen = Origin::seen(&scope);
            let reached = scope.finish();
            if let Some(before) = before {
                polled
                    .observer
                    .after_poll(before, &this.sources.writer.shared);
            }
            if let Err(merged) = polled.origin.check(seen, reached.as_ref()) {
                let reason = merged.reason(Some(&polled.name));
                tracing::error!(cache = %this.sources.writer.shared.health.name(), "{reason}; the source stops");
                this.sources.writer.shared.health.stop(reason);
                this.polled.remove(index);
                this.next = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if reached.is_some() {
                polled.pending = reached;
            }
            let name = Arc::clone(&polled.name);
            let out = match item {
                Poll::Pending => {
                    apply_point(&mut this.sources, polled);
                    continue;
                }
                Poll::Ready(None) => {
                    debug!(source = %name, "source stream ended; its objects stay until it is removed");
                    this.polled.remove(index);
                    this.next = 0;
                    // Poll again: the remaining sources have not been polled this round.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(event))) => {
                    polled
                        .observer
                        .on_event(&event, &this.sources.writer.shared);
                    this.sources.apply_buffered(&name, event);
                    polled.received += 1;
                    Ok(())
                }
                Poll::Ready(Some(Err(err))) => {
                    polled.observer.on_error(&err, &this.sources.writer.shared);
                    Err(err)
                }
            };
            let polled = &mut this.polled[index];
            apply_point(&mut this.sources, polled);
            this.next = index + 1;
            return Poll::Ready(Some((name, out)));
        }
        if !this.commands_open && this.polled.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Applies a source's progress point once the items before it have been applied.
fn apply_point<K, E>(sources: &mut Sources<K>, polled: &mut Polled<K, E>)
where
    K: Resource + Send + Sync + 'static,
{
    let received = polled.received;
    if let Some(point) = polled
        .pending
        .take_if(|point| point.after_items <= received)
    {
        sources.apply_progress(&polled.name, &point.resource_version);
    }
}
