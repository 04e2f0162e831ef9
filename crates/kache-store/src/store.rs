use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::{Either, select};
use kube_client::Resource;

use crate::error::{Error, Result};
use crate::health::Health;
use crate::index::{KeySet, ObjectMap};
use crate::key::{KeyRef, KeyView, ObjectKey};
use crate::shared::Shared;
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
        self.shared.is_ready()
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
        self.shared.wait_until_ready().await
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
            synced: self.is_ready(),
            failing: self.shared.health.failing(),
        }
    }

    /// Waits until the store has completed its first list, like [`Store::wait_until_ready`],
    /// but fails as soon as the watch is refused with `403 Forbidden` or `404 Not Found`
    /// before that: the cases that retrying does not heal. Use it at start-up to exit with
    /// a clear error rather than wait forever for a permission that was never granted.
    ///
    /// # Errors
    ///
    /// [`Error::WatchRefused`] on such a refusal, with the server's message;
    /// [`Error::WriterDropped`] if the writer is dropped before the store became ready.
    pub async fn wait_until_ready_or_fail(&self) -> Result<()> {
        let ready = std::pin::pin!(self.shared.wait_until_ready());
        let refused = std::pin::pin!(self.shared.health.refused());
        // Readiness first: a store that is ready is ready, whatever its watch does now.
        match select(ready, refused).await {
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

#[cfg(test)]
impl<K> Store<K> {
    /// How many waits on this store are registered.
    pub(crate) fn waiters(&self) -> usize {
        self.shared.waiters.count()
    }

    /// Index entries of the visible generation that name no object of it.
    pub(crate) fn stale_index_entries(&self) -> usize {
        let state = self.shared.state.read();
        state.indexes.stale_entries(&state.objects)
    }
}
