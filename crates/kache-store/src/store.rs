use std::fmt;
use std::future::Future;
use std::sync::Arc;

use kube_client::Resource;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::index::{Indexes, KeySet, ObjectMap};
use crate::key::{KeyRef, KeyView, ObjectKey};
use crate::subscriber::{Delivery, Hub, Subscriber};
use crate::version::{Reached, ResourceVersion};
use crate::wait::{Target, Waiters};

/// One generation of the store, with the bookkeeping that must change atomically with it.
pub(crate) struct State<K> {
    pub(crate) objects: ObjectMap<K>,
    pub(crate) indexes: Indexes,
    /// Sequence number of the last change made visible (an apply, a delete, or a relist).
    /// Kept under the same lock as `objects` so a snapshot and its seq are taken together.
    pub(crate) seq: u64,
    pub(crate) ready: bool,
    /// The newest resourceVersion this generation reflects. Kept under the same lock as
    /// `objects`, so a reader that sees a version also sees every change up to it.
    pub(crate) version: Reached,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            objects: ObjectMap::default(),
            indexes: Indexes::default(),
            seq: 0,
            ready: false,
            version: Reached::Nothing,
        }
    }
}

/// What the writer and every reader share.
pub(crate) struct Shared<K> {
    /// A `parking_lot::RwLock`: readers never contend with each other, the lock is not poisoned by
    /// a panicking reader, and the writer only holds it for O(1) swaps or single-key updates.
    pub(crate) state: RwLock<State<K>>,
    /// Flips to `true` once; closed when the writer is dropped, which is how
    /// `wait_until_ready` learns that readiness will never come.
    pub(crate) ready: watch::Receiver<bool>,
    pub(crate) hub: Hub<K>,
    /// Tasks waiting for the store to reflect a write; closed when the writer is dropped.
    pub(crate) waiters: Waiters,
    // Observability hooks: see health.rs and metrics.rs.
    pub(crate) health: crate::health::HealthState,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::CacheMetrics,
}

impl<K: Resource> Shared<K> {
    /// Waits until the store meets `target`; returns the sequence number of the generation
    /// that met it.
    pub(crate) async fn wait(&self, target: &Target) -> Result<u64> {
        self.waiters
            .until(|| target.check(&self.state.read()), Error::WriterDropped)
            .await
    }
}

/// A read handle to the cache of objects of kind `K`.
///
/// Cloning is cheap (one `Arc`) and every clone sees the same data. Obtain one from
/// [`store`](crate::store()) or [`Writer::as_reader`](crate::Writer::as_reader).
///
/// Every read takes a shared lock for as long as it takes to copy out `Arc`s; see the crate's
/// Consistency section for what a read can observe.
pub struct Store<K> {
    // `Arc`: readers on many tasks share one state with the writer.
    pub(crate) shared: Arc<Shared<K>>,
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
    #[must_use]
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let state = self.shared.state.read();
        let exact = KeyRef { namespace, name };
        state
            .objects
            .get(&exact as &dyn KeyView)
            .or_else(|| {
                namespace?;
                let cluster = KeyRef {
                    namespace: None,
                    name,
                };
                state.objects.get(&cluster as &dyn KeyView)
            })
            .cloned()
    }

    /// The object with this key, with the same cluster-scoped fallback as [`Store::get`].
    #[must_use]
    pub fn get_key(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.get(key.namespace(), key.name())
    }

    /// Every cached object, in no particular order, from one generation of the store.
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
    #[must_use]
    pub fn len(&self) -> usize {
        self.shared.state.read().objects.len()
    }

    /// Whether the store holds no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shared.state.read().objects.is_empty()
    }

    /// Whether the store has completed its first list (seen its first `InitDone`).
    ///
    /// Never goes back to `false`: a later relist keeps serving the previous generation until
    /// it is complete.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits until the store has completed its first list.
    ///
    /// This does not drive the event stream that feeds the [`Writer`](crate::Writer): poll
    /// that (for example the [`reflect`](crate::ReflectExt::reflect) stream) on another task.
    ///
    /// # Errors
    ///
    /// [`Error::WriterDropped`] if the writer is dropped before the store became ready. Once
    /// ready, this returns `Ok` immediately, even after the writer is gone.
    pub async fn wait_until_ready(&self) -> Result<()> {
        let mut ready = self.shared.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(drop)
            .map_err(|_| Error::WriterDropped)
    }

    /// The newest resourceVersion the store reflects, as the server wrote it: see
    /// [`Store::version`]. For a server whose versions are not comparable, the last version
    /// seen. `None` until the store has seen one.
    #[must_use]
    pub fn resource_version(&self) -> Option<String> {
        self.shared
            .state
            .read()
            .version
            .to_resource_version_string()
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
    /// assert_eq!(store.version(), Ok(None));
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// cm.metadata.resource_version = Some("42".into());
    /// writer.apply(Event::Apply(cm));
    /// writer.apply_progress("50"); // a bookmark: no object changed up to 50
    /// assert_eq!(store.version(), Ok(Some(ResourceVersion::parse("50")?)));
    /// # Ok::<(), kache_store::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotComparable`] once the store has seen a version that is not comparable:
    /// the server's versions cannot be ordered, so how far the store has reached is unknown.
    pub fn version(&self) -> Result<Option<ResourceVersion>> {
        self.shared
            .state
            .read()
            .version
            .comparable()
            .map(Option::<&ResourceVersion>::cloned)
    }

    /// The cached objects in `namespace` (the built-in namespace index).
    #[must_use]
    pub fn by_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let state = self.shared.state.read();
        resolve(&state.objects, state.indexes.namespace(namespace))
    }

    /// The cached objects for which the index function registered as `index` returned
    /// `value`.
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
    #[must_use]
    pub fn subscribe(&self) -> Subscriber<K> {
        self.subscribe_with(Delivery::Resync)
    }

    /// A new [`Subscriber`] with the given delivery policy.
    #[must_use]
    pub fn subscribe_with(&self, delivery: Delivery) -> Subscriber<K> {
        Subscriber::new(Arc::clone(&self.shared), delivery)
    }

    /// The names of the registered indexes, in registration order.
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

/// Reading your own writes: each wait resolves once every later read of this store sees a
/// write the caller made. See the crate's Consistency section for what it can and cannot
/// promise.
///
/// Every wait resolves at once when the store is already there, is bounded by the caller
/// (wrap it in [`tokio::time::timeout`], or race it against a deadline) and is cancel safe:
/// dropping it leaves nothing behind. None of them drives the event stream that feeds the
/// [`Writer`](crate::Writer); poll that on another task, as for
/// [`Store::wait_until_ready`].
///
/// The returned futures borrow the store but not the objects passed in.
impl<K: Resource> Store<K> {
    /// Waits until every later read sees `version` or a newer one.
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
    /// its version or a newer one: that is, until the store reaches the newest of them.
    /// Resolves at once for no object.
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
        self.wait(Target::newest(written))
    }

    /// Waits until every later read finds `deleted` gone.
    ///
    /// `deleted` is the object as the caller last knew it (from the store, or from the write
    /// before the delete): its resourceVersion and uid. The wait resolves once the store has
    /// reached that version and holds no object with that name and uid (another object
    /// created since under the same name does not count). A delete that only marks the object
    /// (finalizers, graceful deletion) resolves nothing until the object is really gone: bound
    /// the wait. (A store that has reached the version of the delete itself reflects it too,
    /// but the API does not tell that version: a delete answers with a `Status`, or with the
    /// object as it was.)
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

fn resolve<K>(objects: &ObjectMap<K>, keys: Option<&KeySet>) -> Vec<Arc<K>> {
    keys.into_iter()
        .flatten()
        .filter_map(|key| objects.get(key).cloned())
        .collect()
}
