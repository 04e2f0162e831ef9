use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::index::{Indexes, KeySet, ObjectMap};
use crate::key::{KeyRef, KeyView, ObjectKey};
use crate::subscriber::{Delivery, Hub, Subscriber};

/// One generation of the store, with the bookkeeping that must change atomically with it.
pub(crate) struct State<K> {
    pub(crate) objects: ObjectMap<K>,
    pub(crate) indexes: Indexes,
    /// Sequence number of the last change made visible (an apply, a delete, or a relist).
    /// Kept under the same lock as `objects` so a snapshot and its seq are taken together.
    pub(crate) seq: u64,
    pub(crate) ready: bool,
    pub(crate) resource_version: Option<String>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            objects: ObjectMap::default(),
            indexes: Indexes::default(),
            seq: 0,
            ready: false,
            resource_version: None,
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
            .field("resource_version", &state.resource_version)
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

    /// Some cached object for which `predicate` holds.
    ///
    /// The read lock is held while `predicate` runs: keep it cheap.
    #[must_use]
    pub fn find(&self, mut predicate: impl FnMut(&K) -> bool) -> Option<Arc<K>> {
        self.shared
            .state
            .read()
            .objects
            .values()
            .find(|obj| predicate(obj))
            .cloned()
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

    /// The resourceVersion of the last change the store applied.
    ///
    /// After an `Apply` or `Delete` it is that object's resourceVersion; after a relist it is
    /// the highest resourceVersion among the listed objects (compared as integers, which is
    /// what Kubernetes API servers use; opaque values compare as later-wins). An empty relist
    /// keeps the previous value. `None` until an object carrying one is applied.
    #[must_use]
    pub fn resource_version(&self) -> Option<String> {
        self.shared.state.read().resource_version.clone()
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

fn resolve<K>(objects: &ObjectMap<K>, keys: Option<&KeySet>) -> Vec<Arc<K>> {
    keys.into_iter()
        .flatten()
        .filter_map(|key| objects.get(key).cloned())
        .collect()
}
