//! Support for kache's own tests (the `testing` feature; always on in this crate's unit
//! tests). Not part of the API: it may change in any release.
//!
//! [`Replay`] is the one replay of a subscriber's events into a map, as the protocol says a
//! consumer rebuilds the store: `Init` starts a snapshot, `InitApply` fills it, `InitDone`
//! swaps it in, `Apply` inserts, `Delete` removes.

use std::collections::BTreeMap;
use std::sync::Arc;

use kache_watch::Event;
use kube_client::Resource;

use crate::key::ObjectKey;
use crate::store::Store;

/// What a subscriber's consumer knows of the store, rebuilt from the events it received.
///
/// Strict: it panics on any event the protocol of a subscriber rules out (an `InitApply` or
/// `InitDone` outside a snapshot, an `Apply` or `Delete` inside one, the `Delete` of an
/// object it was never told of).
#[derive(Debug)]
pub struct Replay<K> {
    current: BTreeMap<ObjectKey, Arc<K>>,
    building: Option<BTreeMap<ObjectKey, Arc<K>>>,
    events: u64,
    inits: u64,
    deletes: u64,
}

impl<K> Default for Replay<K> {
    fn default() -> Self {
        Self {
            current: BTreeMap::new(),
            building: None,
            events: 0,
            inits: 0,
            deletes: 0,
        }
    }
}

impl<K: Resource> Replay<K> {
    /// Applies one event the subscriber yielded.
    ///
    /// # Panics
    ///
    /// When the event breaks the subscriber's protocol (see [`Replay`]).
    pub fn apply(&mut self, event: &Event<Arc<K>>) {
        self.events += 1;
        match event {
            Event::Init => {
                assert!(self.building.is_none(), "Init inside a snapshot");
                self.inits += 1;
                self.building = Some(BTreeMap::new());
            }
            Event::InitApply(obj) => {
                self.building
                    .as_mut()
                    .expect("InitApply only inside a snapshot")
                    .insert(ObjectKey::from_object(obj.as_ref()), Arc::clone(obj));
            }
            Event::InitDone => {
                self.current = self.building.take().expect("InitDone closes a snapshot");
            }
            Event::Apply(obj) => {
                assert!(self.building.is_none(), "no live event inside a snapshot");
                self.current
                    .insert(ObjectKey::from_object(obj.as_ref()), Arc::clone(obj));
            }
            Event::Delete(obj) => {
                assert!(self.building.is_none(), "no live event inside a snapshot");
                self.deletes += 1;
                let key = ObjectKey::from_object(obj.as_ref());
                assert!(
                    self.current.remove(&key).is_some(),
                    "the delete of {key}, an object never seen"
                );
            }
        }
    }

    /// The objects as the consumer has been told, by key.
    #[must_use]
    pub fn objects(&self) -> &BTreeMap<ObjectKey, Arc<K>> {
        &self.current
    }

    /// `namespace/name` → resourceVersion, as the consumer has been told.
    #[must_use]
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.current
            .values()
            .map(|obj| (key_of(obj.as_ref()), version_of(obj.as_ref())))
            .collect()
    }

    /// Whether a snapshot has begun (`Init`) and not ended (`InitDone`).
    #[must_use]
    pub fn in_snapshot(&self) -> bool {
        self.building.is_some()
    }

    /// Events received so far.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// `Init`s received so far: the first snapshot plus one per resync.
    #[must_use]
    pub fn inits(&self) -> u64 {
        self.inits
    }

    /// `Delete`s received so far.
    #[must_use]
    pub fn deletes(&self) -> u64 {
        self.deletes
    }
}

/// `namespace/name` of an object (`/name` when it has no namespace).
#[must_use]
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The resourceVersion of an object (empty when it has none).
#[must_use]
pub fn version_of<K: Resource>(obj: &K) -> String {
    obj.meta().resource_version.clone().unwrap_or_default()
}

/// `namespace/name` → resourceVersion of every object in `store`.
#[must_use]
pub fn stored_versions<K: Resource>(store: &Store<K>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|obj| (key_of(obj.as_ref()), version_of(obj.as_ref())))
        .collect()
}
