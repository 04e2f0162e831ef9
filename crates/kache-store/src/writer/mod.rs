use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use ahash::RandomState;

use kache_watch::Event;
use kube_client::Resource;
use tracing::{debug, trace, warn};

mod restore;

use crate::fanout::{self, Msg, Publisher};
use crate::index::{IndexFn, IndexFns, ObjectMap, build_postings};
use crate::key::ObjectKey;
use crate::shared::Shared;
use crate::store::Store;
use crate::subscriber::{DEFAULT_BUFFER, Delivery, Subscriber};
use crate::version::Reached;

/// Creates a store: a [`Store`] to read from and the [`Writer`] that fills it.
///
/// Hand the writer to [`reflector`](crate::reflector()) (or
/// [`ReflectExt::reflect`](crate::ReflectExt::reflect)) and clone the store wherever it is
/// read.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::Event;
///
/// let (store, mut writer) = kache_store::store::<ConfigMap>();
/// let mut cm = ConfigMap::default();
/// cm.metadata.name = Some("a".into());
/// writer.apply(Event::Apply(cm));
/// assert_eq!(store.len(), 1);
/// ```
#[must_use]
pub fn store<K>() -> (Store<K>, Writer<K>)
where
    K: Resource + Send + Sync + 'static,
{
    let writer = Writer::new();
    (writer.as_reader(), writer)
}

/// The only handle that changes a store: it applies [`Event`]s.
///
/// There is one writer per store, so a relist from one event stream can never interleave
/// with another's. Dropping the writer ends subscriber streams and makes a pending
/// [`Store::wait_synced`] fail.
///
/// # User code
///
/// The transform ([`Writer::with_transform`]) and the index functions
/// ([`Writer::add_index`]) run on the caller's thread, in [`Writer::apply`] (or the stream
/// that calls it) and in [`Writer::add_index`], with no lock held: they may read the store.
///
/// If one panics, the panic propagates to that caller, and the event (or the new index) is
/// not applied: the objects, every index, the relist in progress, the version and what
/// subscribers hear are exactly as before the call. Nothing is lost silently: through
/// [`reflect`](crate::ReflectExt::reflect), the panic unwinds the task that polls it, and the
/// writer dropped on the way ends the subscriber streams and fails pending waits with
/// [`Error::WriterDropped`](crate::Error::WriterDropped). A caller that catches the panic
/// (`std::panic::catch_unwind`) keeps a usable writer and a consistent store that misses
/// that one event until a later event or relist brings the object up to date.
pub struct Writer<K> {
    // `Arc`: the state is shared with every `Store` clone.
    pub(crate) shared: Arc<Shared<K>>,
    /// The generation being listed, between `Init` and `InitDone`; readers never see it.
    relist: Option<Relist<K>>,
    fns: IndexFns<K>,
    transform: Option<Transform<K>>,
    publisher: Publisher<K>,
    /// Runs when the writer is dropped other than by a panic: a snapshot save (snapshot.rs).
    pub(crate) on_clean_drop: Option<DropHook<K>>,
}

/// What runs when a writer is dropped cleanly.
pub(crate) type DropHook<K> = Box<dyn FnOnce(&Store<K>) + Send>;

/// A user function applied to each object before it is stored.
type Transform<K> = Box<dyn FnMut(&mut K) + Send>;

/// A generation being built off to the side.
struct Relist<K> {
    objects: ObjectMap<K>,
    /// Where the generation will have reached once visible.
    version: Reached,
    /// Whether the visible generation is known to hold no object: then no listed object can
    /// be an unchanged stored one, and an `InitApply` skips the lock and the lookup (the
    /// whole of an initial sync). Cleared by any change to the visible generation.
    visible_empty: bool,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self {
            objects: ObjectMap::default(),
            version: Reached::Nothing,
            visible_empty: false,
        }
    }
}

impl<K> fmt::Debug for Writer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("store", &Store::new(Arc::clone(&self.shared)))
            .field("relisting", &self.relist.as_ref().map(|r| r.objects.len()))
            .field("indexes", &self.fns)
            .field("transform", &self.transform.is_some())
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

impl<K> Default for Writer<K>
where
    K: Resource + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Writer<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// A writer for a new, empty, not yet ready store.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::Writer;
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// assert!(store.is_empty() && !store.is_synced());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        let (hub, publisher) = fanout::channels(DEFAULT_BUFFER);
        Self {
            shared: Arc::new(Shared::new(hub)),
            relist: None,
            on_clean_drop: None,
            fns: IndexFns::default(),
            transform: None,
            publisher,
        }
    }

    /// Sets how many changes a subscriber may fall behind (default [`DEFAULT_BUFFER`],
    /// at least 1). One bounded buffer is shared by the [`Delivery::Resync`] subscribers and
    /// one by the [`Delivery::Backpressure`] subscribers; a relist counts as one change.
    ///
    /// ```
    /// use futures::{FutureExt, StreamExt};
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new().with_buffer(1);
    /// let mut slow = writer.subscribe();
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// while slow.next().now_or_never().flatten().is_some() {} // its snapshot
    /// for name in ["a", "b"] {
    ///     let mut cm = ConfigMap::default();
    ///     cm.metadata.name = Some(name.into());
    ///     writer.apply(Event::Apply(cm)); // two changes: one more than its buffer holds
    /// }
    /// // It skipped ahead to a fresh snapshot rather than hold up the writer.
    /// let caught_up: Vec<_> =
    ///     std::iter::from_fn(|| slow.next().now_or_never().flatten()).collect();
    /// assert_eq!(slow.resyncs(), 1);
    /// assert_eq!((caught_up.first(), caught_up.len()), (Some(&Event::Init), 4));
    /// ```
    #[must_use]
    pub fn with_buffer(mut self, capacity: usize) -> Self {
        self.publisher.set_capacity(capacity);
        self
    }

    /// A new [`Subscriber`] with the default [`Delivery::Resync`] policy; same as
    /// [`Store::subscribe`].
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Delivery, Writer};
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// let subscriber = writer.subscribe();
    /// assert_eq!(subscriber.delivery(), Delivery::Resync);
    /// ```
    #[must_use]
    pub fn subscribe(&self) -> Subscriber<K> {
        self.as_reader().subscribe()
    }

    /// A new [`Subscriber`] with the given delivery policy; same as
    /// [`Store::subscribe_with`].
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Delivery, Writer};
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// let audit = writer.subscribe_with(Delivery::Backpressure);
    /// assert_eq!(audit.delivery(), Delivery::Backpressure);
    /// ```
    #[must_use]
    pub fn subscribe_with(&self, delivery: Delivery) -> Subscriber<K> {
        self.as_reader().subscribe_with(delivery)
    }

    /// A read handle to this writer's store. Call it as often as needed, or clone the result.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// let other = store.clone(); // every clone reads the same store
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// assert!(store.is_synced() && other.is_synced());
    /// ```
    #[must_use]
    pub fn as_reader(&self) -> Store<K> {
        Store::new(Arc::clone(&self.shared))
    }

    /// Changes every object before it is stored, for example to drop `metadata.managedFields`
    /// and save memory. Replaces an earlier transform.
    ///
    /// The transform runs on `Apply`, `InitApply` and `Delete` objects, before the key is
    /// computed: it must not change the name or namespace. A panic in it leaves the event
    /// unapplied (see [User code](Writer#user-code)).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer =
    ///     Writer::<ConfigMap>::new().with_transform(|cm| cm.metadata.managed_fields = None);
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// cm.metadata.managed_fields = Some(vec![Default::default()]);
    /// writer.apply(Event::Apply(cm));
    /// let stored = writer.as_reader().get(None, "a").expect("stored");
    /// assert!(stored.metadata.managed_fields.is_none());
    /// ```
    #[must_use]
    pub fn with_transform(mut self, transform: impl FnMut(&mut K) + Send + 'static) -> Self {
        self.transform = Some(Box::new(transform));
        self
    }

    /// Names this cache in its [`Health`](crate::Health) and its log lines. With the `metrics` feature,
    /// `Writer::with_metrics` names it too, with the name of its `cache` label.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::Writer;
    ///
    /// let writer = Writer::<ConfigMap>::new().with_name("config");
    /// assert_eq!(writer.as_reader().health().to_string(), "config: not synced");
    /// ```
    #[must_use]
    pub fn with_name(self, name: &str) -> Self {
        self.shared.health.set_name(name);
        self
    }

    /// Reports this cache's metrics through `metrics`, with `name` as the `cache` label (and
    /// as the cache's name in its health and logs, as [`Writer::with_name`]). A name another
    /// live cache already has gets a suffix (`-2`), with a warning, so that no two caches
    /// share a series.
    ///
    /// The counters run from the writer's creation, whenever this is called.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics(self, metrics: &crate::metrics::Metrics, name: &str) -> Self {
        // `Weak<Shared<K>>` to `Weak<dyn Probe>`: the collector reads any kind of cache.
        let probe: std::sync::Weak<dyn crate::metrics::Probe> =
            Arc::downgrade(&self.shared) as std::sync::Weak<dyn crate::metrics::Probe>;
        let name = metrics.attach(probe, name);
        self.with_name(&name)
    }

    /// Registers an index: `index` returns the values under which an object is found by
    /// [`Store::by_index`]`(name, value)`. Builder form of [`Writer::add_index`].
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// // Config maps by the `app` label.
    /// let mut writer = Writer::<ConfigMap>::new().with_index("app", |cm: &ConfigMap| {
    ///     let labels = cm.metadata.labels.iter().flatten();
    ///     labels.filter(|(k, _)| *k == "app").map(|(_, v)| v.clone()).collect()
    /// });
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("web-settings".into());
    /// cm.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    /// writer.apply(Event::Apply(cm));
    /// assert_eq!(writer.as_reader().by_index("app", "web")?.len(), 1);
    /// # Ok::<(), kache_store::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If `index` panics on an object already stored. The writer is then dropped, with the
    /// effects of a dropped writer; the store keeps its objects and indexes as they were.
    #[must_use]
    pub fn with_index(
        mut self,
        name: impl Into<String>,
        index: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.add_index(name, index);
        self
    }

    /// Registers an index: `index` returns the values under which an object is found by
    /// [`Store::by_index`]`(name, value)`.
    ///
    /// May be called at any time: objects already in the store are indexed at once (the
    /// index is built under a shared lock and installed in one step), and a relist in
    /// progress is indexed when it completes. Registering a name again replaces that index.
    /// The function must be deterministic: it is called again on the stored object to find
    /// the values to remove when the object changes or goes away.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("settings".into());
    /// cm.data = Some([("tier".to_owned(), "web".to_owned())].into());
    /// writer.apply(Event::Apply(cm));
    /// writer.add_index("tier", |cm: &ConfigMap| {
    ///     cm.data.iter().flatten().filter(|(k, _)| *k == "tier").map(|(_, v)| v.clone()).collect()
    /// });
    /// assert_eq!(store.by_index("tier", "web")?.len(), 1);
    /// # Ok::<(), kache_store::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If `index` panics on an object already stored. Nothing changes then: the index is not
    /// registered, and every other index is as it was.
    pub fn add_index(
        &mut self,
        name: impl Into<String>,
        index: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        let name = name.into();
        let index: IndexFn<K> = Box::new(index);
        // The objects are copied out so that `index` runs with no lock held (see the crate's
        // Consistency section); nothing can change them meanwhile, since only this writer
        // mutates. The index is built before it is registered: if `index` panics, nothing
        // has changed.
        let objects = self.shared.state.read().objects.clone();
        let postings = build_postings(&index, &objects);
        let pos = self.fns.set(name.clone(), index);
        let replaced = self.shared.state.write().indexes.set(pos, name, postings);
        drop((replaced, objects));
    }

    /// Applies one event to the store and returns it with its object shared with the store.
    ///
    /// The object is moved into an `Arc`, never deep-cloned:
    /// - `Apply` inserts or replaces the object and returns the stored `Arc`. During a relist it
    ///   also goes into the generation being built, so `InitDone` keeps it.
    /// - `Delete` removes the object (a delete of an unknown object changes nothing) and
    ///   returns the event's own object, which carries its final state. During a relist it
    ///   also removes the object from the generation being built.
    /// - `Init` starts a new generation off to the side, discarding an unfinished one.
    /// - `InitApply` adds to that generation. An object with the same uid and resourceVersion
    ///   as the stored one keeps the stored `Arc` (the new copy is dropped at once) and is the
    ///   `Arc` returned. An `InitApply` without a preceding `Init` starts a generation, as if
    ///   the `Init` had been lost.
    /// - `InitDone` makes the generation visible in one step, dropping objects absent from it,
    ///   and marks the store ready. An `InitDone` with no generation in progress changes no
    ///   object (it only marks the store ready): a duplicate `InitDone` must not empty the
    ///   store.
    ///
    /// An `Apply` or `Delete` between `Init` and `InitDone` is a change readers see at once,
    /// and one the list may predate, so it also applies to the generation being built:
    /// `InitDone` neither undoes an `Apply` (bringing back an older listed copy, or dropping
    /// an object created since) nor resurrects a deleted object, and subscribers hear each
    /// change once. kache-watch's watcher sends neither during a list (a streaming list's
    /// delete aside), but a source that merges event streams may.
    ///
    /// Subscribers are sent the resulting change without waiting: a full
    /// [`Delivery::Backpressure`] subscriber is resynced rather than waited for. Use
    /// [`Writer::apply_async`] or [`reflect`](crate::ReflectExt::reflect) to wait for them.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// fn named(name: &str) -> ConfigMap {
    ///     let mut cm = ConfigMap::default();
    ///     cm.metadata.name = Some(name.into());
    ///     cm
    /// }
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// // The event comes back with the object the store holds: one allocation, shared.
    /// let Event::Apply(applied) = writer.apply(Event::Apply(named("a"))) else { unreachable!() };
    /// assert!(Arc::ptr_eq(&applied, &store.get(None, "a").expect("stored")));
    ///
    /// // A relist is built off to the side and made visible at once, at `InitDone`.
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitApply(named("b")));
    /// assert!(store.get(None, "b").is_none() && store.get(None, "a").is_some());
    /// writer.apply(Event::InitDone);
    /// // `a` was not listed again: it is gone.
    /// assert!(store.get(None, "b").is_some() && store.get(None, "a").is_none());
    /// ```
    ///
    /// # Panics
    ///
    /// If the transform or an index function panics. The event is then not applied: the
    /// store and the writer are as they were (see [User code](Writer#user-code)).
    pub fn apply(&mut self, event: Event<K>) -> Event<Arc<K>> {
        self.publisher.force_flush();
        let applied = self.apply_buffered(event);
        self.publisher.force_flush();
        applied
    }

    /// Like [`Writer::apply`], but first waits until every [`Delivery::Backpressure`]
    /// subscriber has room for the previous change, and then for this one.
    ///
    /// Cancel safe: if the future is dropped while waiting, the change stays queued and is
    /// delivered before the next one (or forced out when the writer is dropped).
    ///
    /// ```
    /// use std::collections::BTreeSet;
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Delivery, Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut writer = Writer::<ConfigMap>::new().with_buffer(1);
    /// let mut audit = writer.subscribe_with(Delivery::Backpressure);
    /// let consumer = tokio::spawn(async move {
    ///     let mut seen = BTreeSet::new();
    ///     while let Some(event) = audit.next().await {
    ///         if let Event::InitApply(cm) | Event::Apply(cm) = event {
    ///             seen.insert(cm.metadata.name.clone().unwrap_or_default());
    ///         }
    ///     }
    ///     (seen, audit.resyncs())
    /// });
    /// writer.apply_async(Event::Init).await;
    /// writer.apply_async(Event::InitDone).await;
    /// for name in ["a", "b", "c"] {
    ///     let mut cm = ConfigMap::default();
    ///     cm.metadata.name = Some(name.into());
    ///     // Waits while the audit subscriber's one-change buffer is full.
    ///     writer.apply_async(Event::Apply(cm)).await;
    /// }
    /// drop(writer); // ends the subscriber's stream
    /// let (seen, resyncs) = consumer.await.unwrap();
    /// assert_eq!(seen, BTreeSet::from(["a".to_owned(), "b".to_owned(), "c".to_owned()]));
    /// assert_eq!(resyncs, 0, "it was waited for, never skipped ahead");
    /// # }
    /// ```
    pub async fn apply_async(&mut self, event: Event<K>) -> Event<Arc<K>> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await;
        let applied = self.apply_buffered(event);
        std::future::poll_fn(|cx| self.poll_flush(cx)).await;
        applied
    }

    /// Waits until every backpressure subscriber has taken the last change.
    pub(crate) fn poll_flush(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.publisher.poll_flush(cx)
    }

    /// Applies `event`, queueing the change for backpressure subscribers; the caller flushes.
    pub(crate) fn apply_buffered(&mut self, event: Event<K>) -> Event<Arc<K>> {
        let applied = match event {
            Event::Apply(obj) => Event::Apply(self.apply_object(obj)),
            Event::Delete(obj) => Event::Delete(self.delete_object(obj)),
            Event::Init => {
                self.start_relist();
                Event::Init
            }
            Event::InitApply(obj) => Event::InitApply(self.buffer_object(obj)),
            Event::InitDone => {
                self.finish_relist();
                Event::InitDone
            }
        };
        #[cfg(feature = "metrics")]
        self.shared.metrics.on_event(&applied);
        // Nothing visible changes before `InitDone`: no waiter to wake.
        if !matches!(applied, Event::Init | Event::InitApply(_)) {
            self.shared.waiters.wake();
        }
        // Try to deliver at once; whoever is full is waited for (or forced) by the caller.
        let _ = self.poll_flush(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        applied
    }

    /// Records that the event source has reached `resource_version` with no object changing
    /// (a bookmark), and wakes the tasks waiting for the store to get there.
    ///
    /// [`reflect`](crate::ReflectExt::reflect) calls this for every point the watcher reports
    /// (see `kache_watch::plumbing::Progress`); call it yourself only if you apply events by hand, and
    /// only once every event before that point has been applied: the store then claims that
    /// every read sees every change up to `resource_version`. During a relist the point is
    /// kept for the new generation. An empty version is ignored; one that is not comparable
    /// makes [`Store::resource_version`] fail from then on, as an object's would.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, ResourceVersion, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// writer.apply_progress("50"); // a bookmark: nothing changed up to 50
    /// assert_eq!(store.resource_version(), Ok(Some(ResourceVersion::parse("50")?)));
    /// # Ok::<(), kache_store::Error>(())
    /// ```
    pub fn apply_progress(&mut self, resource_version: &str) {
        if let Some(relist) = &mut self.relist {
            relist.version.advance(resource_version);
            return;
        }
        self.shared.state.write().version.advance(resource_version);
        // The server has confirmed a point since a restore: the replay is behind us.
        self.shared.health.end_replay();
        trace!(resource_version, "progress");
        self.shared.waiters.wake();
    }

    fn start_relist(&mut self) {
        let visible = self.shared.state.read().objects.len();
        // Sized like the current generation: a relist usually lists about as many.
        let relist = Relist {
            objects: ObjectMap::with_capacity_and_hasher(visible, RandomState::default()),
            version: Reached::Nothing,
            visible_empty: visible == 0,
        };
        if let Some(unfinished) = self.relist.replace(relist) {
            debug!(
                buffered = unfinished.objects.len(),
                "relist restarted; discarding the unfinished one"
            );
        } else {
            debug!("relist started");
        }
    }

    /// Transforms `obj` in place and returns its key. In place, because an object is a few
    /// hundred bytes that every move by value copies.
    fn prepare(&mut self, obj: &mut K) -> ObjectKey {
        if let Some(transform) = &mut self.transform {
            transform(obj);
        }
        ObjectKey::from_object(obj)
    }

    fn apply_object(&mut self, mut obj: K) -> Arc<K> {
        let key = self.prepare(&mut obj);
        let new = Arc::new(obj);
        // Index values are computed before the write lock so user code never runs under it;
        // a shared lock is enough to read the old object, since only this writer mutates.
        // Without custom indexes there is nothing to plan, and one lock suffices.
        let planned = if self.fns.is_empty() {
            None
        } else {
            let old = self.shared.state.read().objects.get(&key).cloned();
            let changes = self.fns.plan(old.as_deref(), Some(&new));
            Some((old, changes))
        };
        let (seq, replaced) = {
            let mut state = self.shared.state.write();
            // Arc clone: the map and the returned event share the object.
            let replaced = state.objects.insert(key.clone(), Arc::clone(&new));
            if replaced.is_none() {
                state.indexes.insert_namespace(&key);
            }
            if let Some((_, changes)) = planned {
                state.indexes.apply(&key, changes);
            }
            state.seq += 1;
            if self.relist.is_none() {
                // Under the same lock as the change: see `State::version`.
                state.version.advance(version_of(new.as_ref()));
            }
            (state.seq, replaced)
        };
        if let Some(relist) = &mut self.relist {
            // An apply during a relist also goes into the generation being built, as a delete
            // leaves it: otherwise `InitDone` would undo a change readers have already seen
            // (an older listed copy comes back, an object created since disappears), with no
            // event to tell subscribers. The same `Arc`, so the relist diff sees no change.
            relist.objects.insert(key.clone(), Arc::clone(&new));
            relist.visible_empty = false;
            // Readers still see the generation from before the relist began, which this
            // version does not describe: it counts once the new generation is visible.
            relist.version.advance(version_of(new.as_ref()));
        }
        trace!(%key, replaced = replaced.is_some(), "apply");
        if self.publisher.has_subscribers() {
            self.publisher
                .publish(Msg::one(seq, Event::Apply(Arc::clone(&new))));
        }
        // `replaced` is dropped here, outside the lock: it may be the last reference.
        drop(replaced);
        new
    }

    fn delete_object(&mut self, mut obj: K) -> Arc<K> {
        let key = self.prepare(&mut obj);
        // As in `apply_object`: index changes are planned before the write lock, and only when
        // a custom index exists.
        let changes = if self.fns.is_empty() {
            Vec::new()
        } else {
            let old = self.shared.state.read().objects.get(&key).cloned();
            old.as_deref()
                .map(|old| self.fns.plan(Some(old), None))
                .unwrap_or_default()
        };
        // Nothing changes before this point, so that a panicking transform or index function
        // leaves the event unapplied.
        // A delete during a relist (a streaming list may report one) also removes the object
        // from the generation being built, or `InitDone` would bring it back.
        // Its version, as in `apply_object`, counts once the new generation is visible.
        if let Some(relist) = &mut self.relist {
            relist.objects.remove(&key);
            relist.version.advance(version_of(&obj));
        }
        let (seq, removed) = {
            let mut state = self.shared.state.write();
            let removed = state.objects.remove(&key);
            if removed.is_some() {
                state.indexes.remove_namespace(&key);
                state.indexes.apply(&key, changes);
                state.seq += 1;
            }
            if self.relist.is_none() {
                state.version.advance(version_of(&obj));
            }
            (state.seq, removed)
        };
        trace!(%key, known = removed.is_some(), "delete");
        let obj = Arc::new(obj);
        if removed.is_some() && self.publisher.has_subscribers() {
            self.publisher
                .publish(Msg::one(seq, Event::Delete(Arc::clone(&obj))));
        }
        // `removed` is dropped here, outside the lock: it may be the last reference.
        drop(removed);
        obj
    }

    fn buffer_object(&mut self, mut obj: K) -> Arc<K> {
        if self.transform.is_none()
            && let Some(relist) = self.relist.as_mut().filter(|r| r.visible_empty)
        {
            // Nothing stored to reuse (an initial sync) and nothing to change: the object goes
            // straight into its `Arc`, and its version and key are read next to each other. On
            // a large list each read misses the cache; side by side, the misses overlap (an
            // initial sync of 100,000 objects took about 10% less time than reading the version
            // after the key).
            let obj = Arc::new(obj);
            relist.version.advance(version_of(obj.as_ref()));
            let key = ObjectKey::from_object(obj.as_ref());
            trace!(%key, "init apply");
            relist.objects.insert(key, Arc::clone(&obj));
            return obj;
        }
        let key = self.prepare(&mut obj);
        let relist = self.relist.get_or_insert_with(|| {
            warn!("InitApply without Init; starting a relist");
            Relist::default()
        });
        relist.version.advance(version_of(&obj));
        let existing = if relist.visible_empty {
            None
        } else {
            self.shared
                .state
                .read()
                .objects
                .get(&key)
                .filter(|stored| same_version(stored.as_ref(), &obj))
                .cloned()
        };
        // Reuse the stored `Arc` for an unchanged object: the relist then costs no new copy,
        // and pointer equality tells the relist diff that nothing changed.
        let obj = match existing {
            Some(existing) => existing,
            None => Arc::new(obj),
        };
        trace!(%key, "init apply");
        relist.objects.insert(key, Arc::clone(&obj));
        obj
    }

    fn finish_relist(&mut self) {
        // Indexes for the new generation are built here, with no lock held, and before the
        // relist is taken: if an index function panics, the relist is still in progress. The
        // namespace index only if readers have asked for the visible generation's.
        let with_namespaces = self.shared.state.read().indexes.has_namespaces();
        let Some(mut indexes) = self
            .relist
            .as_ref()
            .map(|r| self.fns.build(&r.objects, with_namespaces))
        else {
            warn!("InitDone without a relist in progress; no object changes");
            self.mark_ready();
            return;
        };
        let Some(Relist {
            mut objects,
            version,
            ..
        }) = self.relist.take()
        else {
            unreachable!("a relist is in progress: its indexes were just built");
        };
        let len = objects.len();
        let (seq, lock_held) = {
            let mut state = self.shared.state.write();
            // Reported in the relist log line: how long readers could have been kept waiting.
            let locked = Instant::now();
            // O(1) swaps: readers wait only for these pointer exchanges.
            std::mem::swap(&mut state.objects, &mut objects);
            std::mem::swap(&mut state.indexes, &mut indexes);
            state.seq += 1;
            state.ready = true;
            if self.shared.health.replaying() {
                // The first list after a restore is the server's word on where it stands; a
                // snapshot may claim a version the server never reached (another cluster).
                state.version = version;
            } else {
                state.version.merge(version);
            }
            (state.seq, locked.elapsed())
        };
        // A list is the server's current state: no replay of a restored snapshot is pending.
        self.shared.health.end_replay();
        let old_len = objects.len();
        if self.publisher.has_subscribers() {
            // Diffed after the swap, off the write lock: `objects` is now the old generation.
            let changes = self.relist_changes(&objects);
            debug!(
                len,
                old_len,
                changes = changes.len(),
                ?lock_held,
                "relist done"
            );
            // Sent even when empty: the relist took a sequence number, and subscribers must see
            // it to know they are caught up (an empty batch yields no event).
            self.publisher.publish(Msg::many(seq, changes));
        } else {
            debug!(len, old_len, ?lock_held, "relist done");
        }
        // The previous generation is freed here, after the lock is released.
        drop((objects, indexes));
    }

    /// Marks the store ready, changing no object.
    pub(crate) fn mark_ready(&mut self) {
        let became_ready = {
            let mut state = self.shared.state.write();
            let became_ready = !state.ready;
            state.ready = true;
            state.seq += u64::from(became_ready);
            became_ready.then_some(state.seq)
        };
        if let Some(seq) = became_ready
            && self.publisher.has_subscribers()
        {
            // Wakes subscribers waiting for the first sync.
            self.publisher.publish(Msg::many(seq, Vec::new()));
        }
        // Wakes `wait_synced`, which waits through the waiters like every other wait.
        self.shared.waiters.wake();
    }

    /// Makes `objects`, consistent at `resource_version`, the store's first generation, as a
    /// list ending in `InitDone` would (objects and indexes swapped in at once, readiness,
    /// subscribers told): how a restored snapshot enters the store. The objects are stored as
    /// they are: the transform ran on them before they were saved. `false`, and nothing
    /// changes, if the store already has a generation or a relist is in progress.
    pub(crate) fn install_first_generation(
        &mut self,
        objects: impl IntoIterator<Item = Arc<K>>,
        resource_version: &str,
    ) -> bool {
        if self.relist.is_some() || self.shared.state.read().ready {
            return false;
        }
        let objects = objects.into_iter();
        // Sized at once: no rehash while a large snapshot goes in.
        let mut relist = Relist {
            objects: ObjectMap::with_capacity_and_hasher(
                objects.size_hint().0,
                RandomState::default(),
            ),
            version: Reached::Nothing,
            visible_empty: false,
        };
        for obj in objects {
            relist
                .objects
                .insert(ObjectKey::from_object(obj.as_ref()), obj);
        }
        relist.version.advance(resource_version);
        self.relist = Some(relist);
        self.finish_relist();
        // Readiness is waited on through the waiters: `apply` wakes them, this path must too.
        self.shared.waiters.wake();
        true
    }

    /// What subscribers must hear about a relist: `Apply` for each new or changed object,
    /// `Delete` for each object gone. Unchanged objects kept their `Arc`, so pointer equality
    /// finds them.
    fn relist_changes(&self, old: &ObjectMap<K>) -> Vec<Event<Arc<K>>> {
        // A shared lock suffices: only this writer mutates.
        let state = self.shared.state.read();
        let new = &state.objects;
        let applied = new
            .iter()
            .filter(|(key, obj)| old.get(*key).is_none_or(|prev| !Arc::ptr_eq(prev, obj)))
            .map(|(_, obj)| Event::Apply(Arc::clone(obj)));
        let deleted = old
            .iter()
            .filter(|(key, _)| !new.contains_key(*key))
            .map(|(_, obj)| Event::Delete(Arc::clone(obj)));
        applied.chain(deleted).collect()
    }
}

/// Whether `stored` and `new` are the same version of the same object.
fn same_version<K: Resource>(stored: &K, new: &K) -> bool {
    let (stored, new) = (stored.meta(), new.meta());
    stored.uid.is_some()
        && stored.uid == new.uid
        && stored.resource_version.is_some()
        && stored.resource_version == new.resource_version
}

/// The resourceVersion of `obj`, empty if it has none.
fn version_of<K: Resource>(obj: &K) -> &str {
    obj.meta().resource_version.as_deref().unwrap_or_default()
}

impl<K> Drop for Writer<K> {
    fn drop(&mut self) {
        // A change still queued for backpressure subscribers is delivered (or forces a
        // resync) before the channel closes, so no subscriber misses the final state.
        self.publisher.force_flush();
        // Not while unwinding: the panic may have come from the middle of a change.
        if let Some(hook) = self.on_clean_drop.take()
            && !std::thread::panicking()
        {
            hook(&Store::new(Arc::clone(&self.shared)));
        }
        // After the last change: a waiter that finds the store closed has seen its final state.
        self.shared.waiters.close();
    }
}

#[cfg(test)]
impl<K> Writer<K> {
    /// Panics unless every index of the visible generation, the namespace index (if built) and
    /// each registered one in order, is exactly what a rebuild from its objects gives.
    pub(crate) fn assert_indexes_exact(&self) {
        let state = self.shared.state.read();
        let with_namespaces = state.indexes.has_namespaces();
        assert_eq!(
            state.indexes,
            self.fns.build(&state.objects, with_namespaces)
        );
    }

    /// Messages held by the (resync, backpressure) channels.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        self.publisher.buffered()
    }

    /// The object the relist in progress holds under `key`.
    pub(crate) fn relist_object(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.relist.as_ref()?.objects.get(key).cloned()
    }
}

// The primitives `Sources` builds on: several changes made visible in one step, and the few
// reads of the writer's own state it needs.
impl<K> Writer<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// The stored copy of `key`, if any.
    pub(crate) fn stored(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.shared.state.read().objects.get(key).cloned()
    }

    /// Delivers the pending change to subscribers without waiting (see `Publisher::force_flush`).
    pub(crate) fn force_flush(&mut self) {
        self.publisher.force_flush();
    }

    /// Stores `puts` and removes `deletes` in one step (one sequence number, one batch for
    /// subscribers), and advances the version to `version`, under the same lock.
    ///
    /// As in [`Writer::apply`], the transform and the index functions run first, with no lock
    /// held: if one panics, nothing has changed.
    pub(crate) fn apply_batch(
        &mut self,
        puts: Vec<K>,
        deletes: &[ObjectKey],
        version: Option<&str>,
    ) {
        if puts.is_empty() && deletes.is_empty() {
            if let Some(version) = version {
                self.apply_progress(version);
            }
            return;
        }
        let puts: Vec<(ObjectKey, Arc<K>)> = puts
            .into_iter()
            .map(|mut obj| {
                if let Some(transform) = &mut self.transform {
                    transform(&mut obj);
                }
                (ObjectKey::from_object(&obj), Arc::new(obj))
            })
            .collect();
        // Index changes are planned before the write lock, from copies of the stored `Arc`s,
        // so that no user code runs under it; only this writer mutates, so they stay true.
        let (put_changes, delete_changes) = if self.fns.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let (old_puts, old_deletes): (Vec<_>, Vec<_>) = {
                let state = self.shared.state.read();
                (
                    puts.iter()
                        .map(|(key, _)| state.objects.get(key).cloned())
                        .collect(),
                    deletes
                        .iter()
                        .map(|key| state.objects.get(key).cloned())
                        .collect(),
                )
            };
            let put_changes = puts
                .iter()
                .zip(&old_puts)
                .map(|((_, new), old)| self.fns.plan(old.as_deref(), Some(new)))
                .collect();
            let delete_changes = old_deletes
                .iter()
                .map(|old| {
                    old.as_deref()
                        .map(|old| self.fns.plan(Some(old), None))
                        .unwrap_or_default()
                })
                .collect();
            (put_changes, delete_changes)
        };
        if let Some(relist) = &mut self.relist {
            relist.visible_empty = false;
        }
        let mut put_changes = put_changes.into_iter();
        let mut delete_changes = delete_changes.into_iter();
        let mut events = Vec::with_capacity(puts.len() + deletes.len());
        let mut dropped = Vec::with_capacity(puts.len() + deletes.len());
        let seq = {
            let mut state = self.shared.state.write();
            for (key, new) in puts {
                let replaced = state.objects.insert(key.clone(), Arc::clone(&new));
                if replaced.is_none() {
                    state.indexes.insert_namespace(&key);
                }
                if let Some(changes) = put_changes.next() {
                    state.indexes.apply(&key, changes);
                }
                events.push(Event::Apply(new));
                dropped.extend(replaced);
            }
            for key in deletes {
                let changes = delete_changes.next();
                if let Some(removed) = state.objects.remove(key) {
                    state.indexes.remove_namespace(key);
                    if let Some(changes) = changes {
                        state.indexes.apply(key, changes);
                    }
                    events.push(Event::Delete(Arc::clone(&removed)));
                    dropped.push(removed);
                }
            }
            if !events.is_empty() {
                state.seq += 1;
            }
            if let Some(version) = version {
                state.version.advance(version);
            }
            state.seq
        };
        trace!(changes = events.len(), "batch");
        if !events.is_empty() && self.publisher.has_subscribers() {
            self.publisher.publish(Msg::many(seq, events));
        }
        self.shared.waiters.wake();
        // Try to deliver at once; whoever is full is waited for (or forced) by the caller.
        let _ = self.poll_flush(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        // Replaced and removed objects are dropped here, outside the lock.
        drop(dropped);
    }
}
