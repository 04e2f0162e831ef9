use std::fmt;
use std::sync::Arc;

use kache_watch::Event;
use kube_client::Resource;
use tokio::sync::watch;
use tracing::{debug, trace, warn};

use crate::index::{IndexFns, ObjectMap};
use crate::key::ObjectKey;
use crate::store::{Shared, State, Store};

/// Creates a store: a [`Store`] to read from and the [`Writer`] that fills it.
///
/// Hand the writer to [`reflector`](crate::reflector()) (or
/// [`ReflectExt::reflect`](crate::ReflectExt::reflect)) and clone the store wherever it is
/// read.
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
/// [`Store::wait_until_ready`] fail.
pub struct Writer<K> {
    // `Arc`: the state is shared with every `Store` clone.
    shared: Arc<Shared<K>>,
    ready_tx: watch::Sender<bool>,
    /// The generation being listed, between `Init` and `InitDone`; readers never see it.
    relist: Option<Relist<K>>,
    fns: IndexFns<K>,
    transform: Option<Transform<K>>,
}

/// A user function applied to each object before it is stored.
type Transform<K> = Box<dyn FnMut(&mut K) + Send>;

/// A generation being built off to the side.
struct Relist<K> {
    objects: ObjectMap<K>,
    resource_version: Option<String>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self {
            objects: ObjectMap::default(),
            resource_version: None,
        }
    }
}

impl<K> fmt::Debug for Writer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field(
                "store",
                &Store {
                    shared: Arc::clone(&self.shared),
                },
            )
            .field("relisting", &self.relist.as_ref().map(|r| r.objects.len()))
            .field("indexes", &self.fns)
            .field("transform", &self.transform.is_some())
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
    #[must_use]
    pub fn new() -> Self {
        let (ready_tx, ready_rx) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                state: parking_lot::RwLock::new(State::default()),
                ready: ready_rx,
            }),
            ready_tx,
            relist: None,
            fns: IndexFns::default(),
            transform: None,
        }
    }

    /// A read handle to this writer's store. Call it as often as needed, or clone the result.
    #[must_use]
    pub fn as_reader(&self) -> Store<K> {
        Store {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Changes every object before it is stored, for example to drop `metadata.managedFields`
    /// and save memory. Replaces an earlier transform.
    ///
    /// The transform runs on `Apply`, `InitApply` and `Delete` objects, before the key is
    /// computed: it must not change the name or namespace.
    #[must_use]
    pub fn with_transform(mut self, transform: impl FnMut(&mut K) + Send + 'static) -> Self {
        self.transform = Some(Box::new(transform));
        self
    }

    /// Registers an index: `index` returns the values under which an object is found by
    /// [`Store::by_index`]`(name, value)`. Builder form of [`Writer::add_index`].
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
    pub fn add_index(
        &mut self,
        name: impl Into<String>,
        index: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        let name = name.into();
        let pos = self.fns.set(name.clone(), Arc::new(index));
        // A shared lock suffices to read: this writer is the only one that mutates.
        let postings = self.fns.build_one(pos, &self.shared.state.read().objects);
        let replaced = self.shared.state.write().indexes.set(pos, name, postings);
        drop(replaced);
    }

    /// Applies one event to the store and returns it with its object shared with the store.
    ///
    /// The object is moved into an `Arc`, never deep-cloned:
    /// - `Apply` inserts or replaces the object and returns the stored `Arc`.
    /// - `Delete` removes the object (a delete of an unknown object changes nothing) and
    ///   returns the event's own object, which carries its final state.
    /// - `Init` starts a new generation off to the side, discarding an unfinished one.
    /// - `InitApply` adds to that generation. An object with the same uid and resourceVersion
    ///   as the stored one keeps the stored `Arc` (the new copy is dropped at once) and is the
    ///   `Arc` returned. An `InitApply` without a preceding `Init` starts a generation, as if
    ///   the `Init` had been lost.
    /// - `InitDone` makes the generation visible in one step, dropping objects absent from it,
    ///   and marks the store ready. An `InitDone` with no generation in progress changes no
    ///   object (it only marks the store ready): a duplicate `InitDone` must not empty the
    ///   store.
    pub fn apply(&mut self, event: Event<K>) -> Event<Arc<K>> {
        match event {
            Event::Apply(obj) => Event::Apply(self.apply_object(obj)),
            Event::Delete(obj) => Event::Delete(self.delete_object(obj)),
            Event::Init => {
                if let Some(unfinished) = self.relist.replace(Relist::default()) {
                    debug!(
                        buffered = unfinished.objects.len(),
                        "relist restarted; discarding the unfinished one"
                    );
                } else {
                    debug!("relist started");
                }
                Event::Init
            }
            Event::InitApply(obj) => Event::InitApply(self.buffer_object(obj)),
            Event::InitDone => {
                self.finish_relist();
                Event::InitDone
            }
        }
    }

    fn prepare(&mut self, mut obj: K) -> (ObjectKey, K) {
        if let Some(transform) = &mut self.transform {
            transform(&mut obj);
        }
        (ObjectKey::from_object(&obj), obj)
    }

    fn apply_object(&mut self, obj: K) -> Arc<K> {
        let (key, obj) = self.prepare(obj);
        let resource_version = obj.meta().resource_version.clone();
        let new = Arc::new(obj);
        // Index values are computed before the write lock so user code never runs under it;
        // a shared lock is enough to read the old object, since only this writer mutates.
        let old = self.shared.state.read().objects.get(&key).cloned();
        let changes = self.fns.plan(old.as_deref(), Some(&new));
        {
            let mut state = self.shared.state.write();
            // Arc clone: the map and the returned event share the object.
            if state
                .objects
                .insert(key.clone(), Arc::clone(&new))
                .is_none()
            {
                state.indexes.insert_namespace(&key);
            }
            state.indexes.apply(&key, changes);
            state.seq += 1;
            if resource_version.is_some() {
                state.resource_version = resource_version;
            }
        }
        trace!(%key, replaced = old.is_some(), "apply");
        new
    }

    fn delete_object(&mut self, obj: K) -> Arc<K> {
        let (key, obj) = self.prepare(obj);
        let resource_version = obj.meta().resource_version.clone();
        let old = self.shared.state.read().objects.get(&key).cloned();
        let changes = old
            .as_deref()
            .map(|old| self.fns.plan(Some(old), None))
            .unwrap_or_default();
        {
            let mut state = self.shared.state.write();
            if old.is_some() {
                state.objects.remove(&key);
                state.indexes.remove_namespace(&key);
                state.indexes.apply(&key, changes);
                state.seq += 1;
            }
            if resource_version.is_some() {
                state.resource_version = resource_version;
            }
        }
        // `old` is dropped here, outside the lock: it may be the last reference.
        trace!(%key, known = old.is_some(), "delete");
        Arc::new(obj)
    }

    fn buffer_object(&mut self, obj: K) -> Arc<K> {
        let (key, obj) = self.prepare(obj);
        let relist = self.relist.get_or_insert_with(|| {
            warn!("InitApply without Init; starting a relist");
            Relist::default()
        });
        if let Some(rv) = obj.meta().resource_version.as_deref()
            && relist
                .resource_version
                .as_deref()
                .is_none_or(|seen| is_later(seen, rv))
        {
            relist.resource_version = Some(rv.to_owned());
        }
        let existing = self
            .shared
            .state
            .read()
            .objects
            .get(&key)
            .filter(|stored| same_version(stored.as_ref(), &obj))
            .cloned();
        // Reuse the stored `Arc` for an unchanged object: the relist then costs no new copy,
        // and pointer equality tells the relist diff that nothing changed.
        let obj = existing.unwrap_or_else(|| Arc::new(obj));
        trace!(%key, "init apply");
        relist.objects.insert(key, Arc::clone(&obj));
        obj
    }

    fn finish_relist(&mut self) {
        let Some(relist) = self.relist.take() else {
            warn!("InitDone without a relist in progress; no object changes");
            self.shared.state.write().ready = true;
            self.ready_tx.send_replace(true);
            return;
        };
        let Relist {
            mut objects,
            resource_version,
        } = relist;
        // Indexes for the new generation are built here, with no lock held.
        let mut indexes = self.fns.build(&objects);
        let len = objects.len();
        {
            let mut state = self.shared.state.write();
            // O(1) swaps: readers wait only for these pointer exchanges.
            std::mem::swap(&mut state.objects, &mut objects);
            std::mem::swap(&mut state.indexes, &mut indexes);
            state.seq += 1;
            state.ready = true;
            if resource_version.is_some() {
                state.resource_version = resource_version;
            }
        }
        // The previous generation is freed here, after the lock is released.
        let old_len = objects.len();
        drop((objects, indexes));
        self.ready_tx.send_replace(true);
        debug!(len, old_len, "relist done");
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

/// Whether resourceVersion `candidate` is later than `seen`: numerically when both are
/// integers (as every Kubernetes API server issues them), otherwise the later one seen wins.
fn is_later(seen: &str, candidate: &str) -> bool {
    match (seen.parse::<u64>(), candidate.parse::<u64>()) {
        (Ok(seen), Ok(candidate)) => candidate > seen,
        _ => true,
    }
}

impl<K> Writer<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// Waits until every backpressure subscriber has room for the last applied event.
    #[allow(clippy::unused_self)] // placeholder until subscribers land
    pub(crate) fn poll_flush(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }

    /// Applies `event`, leaving any backpressure delivery for [`Writer::poll_flush`].
    pub(crate) fn apply_buffered(&mut self, event: Event<K>) -> Event<Arc<K>> {
        self.apply(event)
    }
}
