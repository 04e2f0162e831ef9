use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures::future::{Either, select};
use hashbrown::Equivalent;
use kube_client::Resource;

use crate::error::{Error, Result};
use crate::health::Health;
use crate::index::{KeySet, ObjectMap};
use crate::key::{KeyRef, ObjectKey};
use crate::shared::Shared;
use crate::state::State;
use crate::subscriber::{Delivery, Subscriber};
use crate::version::ResourceVersion;
use crate::wait::Target;

/// A read handle to the cache of objects of kind `K`.
///
/// Cloning is cheap (one `Arc`) and every clone sees the same data. Obtain one from
/// [`store`](crate::store()) or [`Writer::as_reader`](crate::Writer::as_reader).
///
/// Every read takes a shared lock for as long as it takes to copy out `Arc`s; see the crate's
/// Consistency section for what a read can observe.
pub struct Store<K> {
    // `Arc`: readers on many tasks share one state with the writer.
    shared: Arc<Shared<K>>,
}

impl<K> Store<K> {
    /// A read handle on `shared`.
    pub(crate) fn new(shared: Arc<Shared<K>>) -> Self {
        Self { shared }
    }

    /// Runs `f` on the visible generation under the shared lock: for a consistent read of
    /// several of its parts at once (a snapshot's objects, version and change number).
    pub(crate) fn read_state<R>(&self, f: impl FnOnce(&State<K>) -> R) -> R {
        f(&self.shared.state.read())
    }

    /// The uid of the cluster the store's watch serves, once [`Writer::restore`] has learned it.
    pub(crate) fn cluster(&self) -> Option<&str> {
        self.shared.cluster.get().map(String::as_str)
    }

    /// Resolves once the writer is dropped.
    pub(crate) async fn writer_gone(&self) {
        self.shared.waiters.closed().await;
    }
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for Store<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.read();
        f.debug_struct("Store")
            .field("len", &state.objects.len())
            .field("ready", &state.ready)
            .field("version", &state.version)
            .finish_non_exhaustive()
    }
}

impl<K> Store<K> {
    /// The object named `name` in `namespace`, if cached.
    ///
    /// A cluster-scoped object is found whatever `namespace` the lookup carries (as in
    /// kube-runtime), so a caller need not know the scope of `K`. The lookup allocates
    /// nothing.
    ///
    /// This is a cache: the object may have changed or been deleted in the cluster since.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("settings".into());
    /// cm.metadata.namespace = Some("default".into());
    /// writer.apply(Event::Apply(cm));
    /// assert!(store.get(Some("default"), "settings").is_some());
    /// assert!(store.get(Some("kube-system"), "settings").is_none());
    /// ```
    #[must_use]
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let state = self.shared.state.read();
        lookup(
            &state.objects,
            &KeyRef::new(namespace, name),
            namespace,
            name,
        )
        .cloned()
    }

    /// The object with this key, with the same cluster-scoped fallback as [`Store::get`].
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Namespace;
    /// use kache_store::{Event, ObjectKey, Writer};
    ///
    /// let mut writer = Writer::<Namespace>::new();
    /// let store = writer.as_reader();
    /// let mut ns = Namespace::default();
    /// ns.metadata.name = Some("team-a".into());
    /// let key = ObjectKey::from_object(&ns);
    /// writer.apply(Event::Apply(ns));
    /// assert!(store.get_key(&key).is_some());
    /// // A cluster-scoped object is found whatever the namespace asked for.
    /// assert!(store.get_key(&ObjectKey::new(Some("default"), "team-a")).is_some());
    /// ```
    #[must_use]
    pub fn get_key(&self, key: &ObjectKey) -> Option<Arc<K>> {
        let state = self.shared.state.read();
        lookup(&state.objects, key, key.namespace(), key.name()).cloned()
    }

    /// Every cached object, in no particular order, from one generation of the store.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// for name in ["b", "a"] {
    ///     let mut cm = ConfigMap::default();
    ///     cm.metadata.name = Some(name.into());
    ///     writer.apply(Event::Apply(cm));
    /// }
    /// let state = store.state();
    /// let mut names: Vec<_> = state.iter().filter_map(|cm| cm.metadata.name.as_deref()).collect();
    /// names.sort();
    /// assert_eq!(names, ["a", "b"]);
    /// ```
    #[must_use]
    pub fn state(&self) -> Vec<Arc<K>> {
        self.shared.state.read().objects.values().cloned().collect()
    }

    /// Some cached object for which `predicate` holds, from one generation of the store.
    ///
    /// `predicate` runs after the lock is released, on a snapshot of the generation (as
    /// [`Store::state`] takes it), so it may read this store (`get`, `len`, even `find`) and
    /// take as long as it likes without holding up the writer or other readers. The price is
    /// the snapshot: one `Arc` clone per object, wherever the match is. To look objects up by
    /// a value again and again, register an index ([`Writer::add_index`](crate::Writer::add_index)).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// for name in ["a", "b"] {
    ///     let mut cm = ConfigMap::default();
    ///     cm.metadata.name = Some(name.into());
    ///     writer.apply(Event::Apply(cm));
    /// }
    /// // The predicate may read the store it searches.
    /// let found = store.find(|cm| cm.metadata.name.as_deref() == Some("b") && store.len() == 2);
    /// assert!(found.is_some());
    /// ```
    #[must_use]
    pub fn find(&self, mut predicate: impl FnMut(&K) -> bool) -> Option<Arc<K>> {
        // Not under the lock: parking_lot's lock is fair, so a read the predicate makes would
        // queue behind a waiting writer, which waits for this read: a deadlock.
        self.state().into_iter().find(|obj| predicate(obj))
    }

    /// The number of cached objects.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// writer.apply(Event::Apply(cm.clone()));
    /// writer.apply(Event::Apply(cm.clone())); // the same object again: still one
    /// assert_eq!(store.len(), 1);
    /// writer.apply(Event::Delete(cm));
    /// assert_eq!(store.len(), 0);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.state.read().objects.len()
    }

    /// Whether the store holds no object.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// // Synced, and empty: the list had no object.
    /// assert!(store.is_synced() && store.is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shared.state.read().objects.is_empty()
    }

    /// Whether the store has completed its first list (seen its first `InitDone`).
    ///
    /// Never goes back to `false`: a later relist keeps serving the previous generation until
    /// it is complete.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// assert!(!store.is_synced());
    /// writer.apply(Event::Init);
    /// assert!(!store.is_synced(), "a list in progress is no sync");
    /// writer.apply(Event::InitDone);
    /// assert!(store.is_synced());
    /// writer.apply(Event::Init); // a relist: readers keep the previous generation meanwhile
    /// assert!(store.is_synced());
    /// ```
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.shared.is_synced()
    }

    /// Waits until the store has completed its first list.
    ///
    /// This does not drive the event stream that feeds the [`Writer`](crate::Writer): poll
    /// that (for example the [`reflect`](crate::ReflectExt::reflect) stream) on another task.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kache_store::Error> {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// // In an operator, the watcher feeds the writer through `reflect`, on another task.
    /// tokio::spawn(async move {
    ///     writer.apply(Event::Init);
    ///     writer.apply(Event::InitDone);
    /// });
    /// store.wait_synced().await?;
    /// assert!(store.is_synced());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WriterDropped`] if the writer is dropped before the store became ready. Once
    /// ready, this returns `Ok` immediately, even after the writer is gone.
    pub async fn wait_synced(&self) -> Result<()> {
        self.shared.wait_synced().await
    }

    /// The newest resourceVersion the store reflects: every read from now on sees every
    /// change up to it. `None` until the store has seen one.
    ///
    /// It advances with each `Apply` and `Delete` (to the object's version), with each
    /// completed relist (to the list's version, or the newest of its objects), and with each
    /// bookmark the watcher reports to [`reflect`](crate::ReflectExt::reflect). It never goes
    /// back. While a relist is being built it stands still: the readers still see the
    /// previous generation.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, ResourceVersion, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// assert_eq!(store.resource_version(), Ok(None));
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// cm.metadata.resource_version = Some("42".into());
    /// writer.apply(Event::Apply(cm));
    /// writer.apply_progress("50"); // a bookmark: no object changed up to 50
    /// assert_eq!(store.resource_version(), Ok(Some(ResourceVersion::parse("50")?)));
    /// // As the server wrote it:
    /// assert_eq!(store.resource_version()?.map(|v| v.to_string()).as_deref(), Some("50"));
    /// # Ok::<(), kache_store::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotComparable`] once the store has seen a version that is not comparable:
    /// the server's versions cannot be ordered, so how far the store has reached is unknown.
    pub fn resource_version(&self) -> Result<Option<ResourceVersion>> {
        self.shared
            .state
            .read()
            .version
            .comparable()
            .map(Option::<&ResourceVersion>::cloned)
    }

    /// The cached objects in `namespace` (the built-in namespace index).
    ///
    /// The first call builds the namespace index, reading every key once under the shared lock
    /// (as [`Store::state`] reads every object): the writer waits meanwhile, about 9 ms at
    /// 100,000 objects, less than one scan of kube-runtime's store. From then on the writer
    /// keeps the index, and builds it for each relist off the lock, so a call reads only the
    /// namespace's keys. A store never asked by namespace never builds it, which makes its
    /// initial sync about a third faster.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// for (namespace, name) in [("web", "a"), ("web", "b"), ("db", "a")] {
    ///     let mut cm = ConfigMap::default();
    ///     cm.metadata.namespace = Some(namespace.into());
    ///     cm.metadata.name = Some(name.into());
    ///     writer.apply(Event::Apply(cm));
    /// }
    /// assert_eq!(store.by_namespace("web").len(), 2);
    /// assert!(store.by_namespace("cache").is_empty());
    /// ```
    #[must_use]
    pub fn by_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let state = self.shared.state.read();
        resolve(
            &state.objects,
            state.indexes.namespace(namespace, &state.objects),
        )
    }

    /// The cached objects for which the index function registered as `index` returned
    /// `value`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Pod;
    /// use kache_store::{Error, Event, Writer};
    ///
    /// // Pods by the node they run on.
    /// let mut writer = Writer::<Pod>::new().with_index("node", |pod: &Pod| {
    ///     pod.spec.iter().filter_map(|spec| spec.node_name.clone()).collect()
    /// });
    /// let store = writer.as_reader();
    /// let mut pod = Pod::default();
    /// pod.metadata.name = Some("web-0".into());
    /// pod.spec = Some(Default::default());
    /// pod.spec.as_mut().unwrap().node_name = Some("node-1".into());
    /// writer.apply(Event::Apply(pod));
    /// assert_eq!(store.by_index("node", "node-1")?.len(), 1);
    /// assert!(store.by_index("node", "node-2")?.is_empty());
    /// assert!(matches!(store.by_index("zone", "a"), Err(Error::UnknownIndex { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownIndex`] if no index of that name was registered with
    /// [`Writer::add_index`](crate::Writer::add_index).
    pub fn by_index(&self, index: &str, value: &str) -> Result<Vec<Arc<K>>> {
        let state = self.shared.state.read();
        match state.indexes.custom(index) {
            Some(postings) => Ok(resolve(&state.objects, postings.get(value))),
            None => Err(Error::UnknownIndex {
                name: index.to_owned(),
            }),
        }
    }

    /// A new [`Subscriber`] with the default [`Delivery::Resync`] policy: a stream of this
    /// store's state and then its changes. Any clone of the store can subscribe, at any time.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let mut changes = writer.as_reader().subscribe();
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitApply(cm.clone()));
    /// writer.apply(Event::InitDone);
    ///
    /// // First the store as it is when the subscriber is first polled...
    /// assert_eq!(changes.next().await, Some(Event::Init));
    /// assert!(matches!(changes.next().await, Some(Event::InitApply(_))));
    /// assert_eq!(changes.next().await, Some(Event::InitDone));
    /// // ... then each change, as the store makes it.
    /// writer.apply(Event::Delete(cm));
    /// assert!(matches!(changes.next().await, Some(Event::Delete(_))));
    /// # }
    /// ```
    #[must_use]
    pub fn subscribe(&self) -> Subscriber<K> {
        self.subscribe_with(Delivery::Resync)
    }

    /// A new [`Subscriber`] with the given delivery policy.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Delivery, Writer};
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// // An audit log must see every change: the writer waits for it rather than resync it.
    /// let audit = writer.as_reader().subscribe_with(Delivery::Backpressure);
    /// assert_eq!(audit.delivery(), Delivery::Backpressure);
    /// ```
    #[must_use]
    pub fn subscribe_with(&self, delivery: Delivery) -> Subscriber<K> {
        Subscriber::new(Arc::clone(&self.shared), delivery)
    }

    /// The names of the registered indexes, in registration order.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::Writer;
    ///
    /// let writer = Writer::<ConfigMap>::new()
    ///     .with_index("app", |_: &ConfigMap| Vec::new())
    ///     .with_index("tier", |_: &ConfigMap| Vec::new());
    /// assert_eq!(writer.as_reader().index_names(), ["app", "tier"]);
    /// ```
    #[must_use]
    pub fn index_names(&self) -> Vec<String> {
        self.shared
            .state
            .read()
            .indexes
            .names()
            .map(str::to_owned)
            .collect()
    }
}

impl<K> Store<K> {
    /// The cache's health: whether it has synced, and whether its watch is failing now (the
    /// last error, since when, how many in a row). The watch's errors are known when it feeds
    /// the store through [`reflect`](crate::ReflectExt::reflect).
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, ReflectExt, Writer};
    /// use kache_watch::{Error, ErrorClass};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let writer = Writer::<ConfigMap>::new().with_name("config");
    /// let store = writer.as_reader();
    /// let items = stream::iter([Err(Error::NoResourceVersion), Err(Error::NoResourceVersion)]);
    /// items.reflect(writer).for_each(|_| async {}).await;
    ///
    /// let failing = store.health().failing.expect("two errors in a row");
    /// assert_eq!((failing.attempts, failing.class), (2, Some(ErrorClass::Decode)));
    /// # }
    /// ```
    #[must_use]
    pub fn health(&self) -> Health {
        Health {
            name: self.shared.health.name(),
            synced: self.is_synced(),
            failing: self.shared.health.failing(),
            replaying: self.shared.health.replaying(),
            stopped: self.shared.health.stopped(),
        }
    }

    /// Waits until the store has completed its first list, like [`Store::wait_synced`],
    /// but fails as soon as the watch is refused with `403 Forbidden` or `404 Not Found`
    /// before that: the cases that retrying does not heal. Use it at start-up to exit with
    /// a clear error rather than wait forever for a permission that was never granted.
    ///
    /// # Errors
    ///
    /// [`Error::WatchRefused`] on such a refusal, with the server's message;
    /// [`Error::Stopped`] if the cache stopped (two watch streams fed it);
    /// [`Error::WriterDropped`] if the writer is dropped before the store became ready.
    pub async fn wait_synced_or_fail(&self) -> Result<()> {
        let ready = std::pin::pin!(self.shared.wait_synced());
        let refused = std::pin::pin!(self.shared.health.refused());
        // Readiness first: a store that is ready is ready, whatever its watch does now.
        match select(ready, refused).await {
            // A cache that stopped drops its writer: say why it stopped.
            Either::Left((Err(Error::WriterDropped), _)) => Err(self
                .shared
                .health
                .stopped()
                .map_or(Error::WriterDropped, |reason| Error::Stopped { reason })),
            Either::Left((ready, _)) => ready,
            Either::Right((refusal, _)) => Err(refusal),
        }
    }
}

/// Reading your own writes: each wait resolves once every later read of this store sees a
/// write the caller made. See the crate's Consistency section for what it can and cannot
/// promise.
///
/// Every wait resolves at once when the store is already there, is bounded by the caller
/// (wrap it in [`tokio::time::timeout`], or race it against a deadline) and is cancel safe:
/// dropping it leaves nothing behind. None of them drives the event stream that feeds the
/// [`Writer`](crate::Writer); poll that on another task, as for
/// [`Store::wait_synced`].
///
/// The returned futures borrow the store but not the objects passed in.
impl<K: Resource> Store<K> {
    /// Waits until every later read sees `version` or a newer one.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{ResourceVersion, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kache_store::Error> {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// writer.apply_progress("10"); // a bookmark at 10
    /// store.wait_for_version(&ResourceVersion::parse("10")?).await?; // already there
    ///
    /// let later = ResourceVersion::parse("11")?;
    /// let mut wait = std::pin::pin!(store.wait_for_version(&later));
    /// assert!(futures::poll!(wait.as_mut()).is_pending());
    /// writer.apply_progress("12");
    /// wait.await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WriterDropped`] if the writer is dropped before the store gets there;
    /// [`Error::NotComparable`] if the store has seen versions that cannot be ordered.
    pub fn wait_for_version(
        &self,
        version: &ResourceVersion,
    ) -> impl Future<Output = Result<()>> + '_ {
        self.wait(Ok(Some(Target::Version(version.clone()))))
    }

    /// Waits until every later read sees `written` (the object a create, update or patch
    /// returned) at its version or a newer one.
    ///
    /// It resolves as soon as the store holds that object (same uid) at that version or a
    /// newer one, or once the store-wide [`resource_version`](Store::resource_version) passes it: whichever
    /// comes first. So in a store fed by several sources it waits for the watch that carries
    /// the write, not for a bookmark of the quietest source. A store never puts back an older
    /// copy of an object it holds, so every later read keeps seeing the write or a newer one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// // What `api.patch(..)` returned: the object at the version the write made.
    /// let mut written = ConfigMap::default();
    /// written.metadata.name = Some("settings".into());
    /// written.metadata.namespace = Some("default".into());
    /// written.metadata.resource_version = Some("7".into());
    ///
    /// // The watch delivers the write a little later, on another task.
    /// let event = Event::Apply(written.clone());
    /// tokio::spawn(async move { writer.apply(event) });
    ///
    /// tokio::time::timeout(Duration::from_secs(5), store.wait_for(&written)).await??;
    /// let cached = store.get(Some("default"), "settings").expect("the write is visible");
    /// assert_eq!(cached.metadata.resource_version.as_deref(), Some("7"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotComparable`] if `written` has no resourceVersion or one that is not
    /// comparable, or if the store has seen versions that cannot be ordered;
    /// [`Error::WriterDropped`] if the writer is dropped before the store gets there.
    pub fn wait_for(&self, written: &K) -> impl Future<Output = Result<()>> + '_ {
        self.wait(Target::written(written).map(Some))
    }

    /// Waits until every later read sees each of `written` (objects that writes returned) at
    /// its version or a newer one: each is met as in [`Store::wait_for`], by the store holding
    /// it at that version or newer, or by the store-wide version passing it. Resolves at once
    /// for no object.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    /// use kube_client::api::ObjectMeta;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kache_store::Error> {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// // What two creates returned.
    /// let written: Vec<ConfigMap> = [("a", "3"), ("b", "5")]
    ///     .map(|(name, version)| ConfigMap {
    ///         metadata: ObjectMeta {
    ///             name: Some(name.into()),
    ///             resource_version: Some(version.into()),
    ///             ..ObjectMeta::default()
    ///         },
    ///         ..ConfigMap::default()
    ///     })
    ///     .into();
    /// let event = Event::Apply(written[1].clone());
    /// tokio::spawn(async move {
    ///     writer.apply(event);
    /// });
    /// // Waits for the newest, 5: the store then shows both.
    /// store.wait_for_all(&written).await?;
    /// assert!(store.get(None, "b").is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Store::wait_for`], for any of the objects.
    pub fn wait_for_all<'a>(
        &self,
        written: impl IntoIterator<Item = &'a K>,
    ) -> impl Future<Output = Result<()>> + '_
    where
        K: 'a,
    {
        self.wait(Target::all(written))
    }

    /// Waits until every later read finds `deleted` gone.
    ///
    /// `deleted` is the object as the caller last knew it (from the store, or from the write
    /// before the delete): its resourceVersion and uid. The wait resolves once the store holds
    /// no object with that name and uid (another object created since under the same name does
    /// not count) and either held it at that version or a newer one while the wait ran, or
    /// has reached that version store-wide: an object the store has not received yet does not
    /// count as deleted. A delete that only marks the object
    /// (finalizers, graceful deletion) resolves nothing until the object is really gone: bound
    /// the wait. (A store that has reached the version of the delete itself reflects it too,
    /// but the API does not tell that version: a delete answers with a `Status`, or with the
    /// object as it was.)
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kache_store::Error> {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let store = writer.as_reader();
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// cm.metadata.uid = Some("uid-a".into());
    /// cm.metadata.resource_version = Some("3".into());
    /// writer.apply(Event::Apply(cm.clone()));
    ///
    /// // The object as the caller last knew it, before `api.delete(..)`.
    /// let mut gone = std::pin::pin!(store.wait_for_deletion(&cm));
    /// assert!(futures::poll!(gone.as_mut()).is_pending());
    /// let mut deleted = cm.clone();
    /// deleted.metadata.resource_version = Some("4".into());
    /// writer.apply(Event::Delete(deleted));
    /// gone.await?;
    /// assert!(store.get(None, "a").is_none());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Store::wait_for`].
    pub fn wait_for_deletion(&self, deleted: &K) -> impl Future<Output = Result<()>> + '_ {
        self.wait(Target::deleted(deleted).map(Some))
    }

    /// Waits for the store to meet `target`; `None`: nothing to wait for.
    async fn wait(&self, target: Result<Option<Target>>) -> Result<()> {
        match target? {
            Some(target) => self.shared.wait(&target).await.map(drop),
            None => Ok(()),
        }
    }
}

/// The object under `exact` (the key of `namespace` and `name`), or, for a namespaced key, the
/// cluster-scoped object of that name: the fallback of [`Store::get`] and [`Store::get_key`].
fn lookup<'a, K>(
    objects: &'a ObjectMap<K>,
    exact: &(impl Hash + Equivalent<ObjectKey> + ?Sized),
    namespace: Option<&str>,
    name: &str,
) -> Option<&'a Arc<K>> {
    objects.get(exact).or_else(|| {
        namespace?;
        objects.get(&KeyRef::new(None, name))
    })
}

fn resolve<K>(objects: &ObjectMap<K>, keys: Option<&KeySet>) -> Vec<Arc<K>> {
    keys.into_iter()
        .flatten()
        .filter_map(|key| objects.get(key).cloned())
        .collect()
}

#[cfg(test)]
impl<K> Store<K> {
    /// How many waits on this store are registered.
    pub(crate) fn waiters(&self) -> usize {
        self.shared.waiters.count()
    }

    /// Whether the visible generation's namespace index is built.
    pub(crate) fn has_namespace_index(&self) -> bool {
        self.shared.state.read().indexes.has_namespaces()
    }

    /// Index entries of the visible generation that name no object of it.
    pub(crate) fn stale_index_entries(&self) -> usize {
        let state = self.shared.state.read();
        state.indexes.stale_entries(&state.objects)
    }
}
