//! Waiting until a store, or a subscriber's consumer, reflects a write.
//!
//! A wait is a loop: register for a wake-up, check, sleep. The writer wakes the waiters of a
//! store after each change it makes visible; a subscriber wakes its own after each change it
//! hands to its consumer. Registering before checking means no wake-up is lost between the
//! check and the sleep. A count of waiters lets the writer skip the wake-up when nobody
//! waits, so that an event costs one atomic load.
//!
//! A subscriber's wait is the store's wait followed by one more: the store reports the
//! sequence number of the generation in which it first saw the condition hold, and the
//! subscriber's consumer must then have been handed every change up to that number.
//!
//! Also here, since a subscriber shares them with its handles and the metrics: [`Handover`]
//! and [`Stats`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use kube_client::Resource;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::key::ObjectKey;
use crate::state::State;
use crate::version::ResourceVersion;

/// The tasks waiting on one thing (a store, or a subscriber), and whether that thing can
/// still change.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    count: AtomicUsize,
    notify: Notify,
    closed: AtomicBool,
}

impl Waiters {
    /// Wakes every waiter to check again; called after a change is made visible, with no lock
    /// held.
    ///
    /// `SeqCst` here and in [`Registered::new`]: either this load sees the waiter's count, or
    /// the waiter's check (which comes after its count) sees the change made before this load.
    pub(crate) fn wake(&self) {
        if self.count.load(SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// How many waits are registered.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.count.load(SeqCst)
    }

    /// Says that nothing will change any more, and wakes every waiter to find out.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once the waiters are closed (the writer is gone). Not counted as a waiter: the
    /// writer does not wake it for each change, only at the close.
    pub(crate) async fn closed(&self) {
        loop {
            // Created before the check, as in `until`: the close cannot slip between them.
            let notified = self.notify.notified();
            if self.closed.load(SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `check` returns a result. Fails with `closed` once nothing can change and
    /// `check` still has no result.
    ///
    /// Cancel safe: dropping the future unregisters it and leaves nothing behind.
    pub(crate) async fn until<T>(
        &self,
        mut check: impl FnMut() -> Option<Result<T>>,
        closed: Error,
    ) -> Result<T> {
        let _registered = Registered::new(&self.count);
        loop {
            // A `Notified` receives every `notify_waiters` made after it is created, polled or
            // not: created before the check, it cannot miss a change made after the check.
            let notified = self.notify.notified();
            // Read before the check: once closed, the check sees the final state.
            let was_closed = self.closed.load(SeqCst);
            if let Some(result) = check() {
                return result;
            }
            if was_closed {
                return Err(closed);
            }
            notified.await;
        }
    }
}

/// Counts one waiter for as long as it lives.
struct Registered<'a>(&'a AtomicUsize);

impl<'a> Registered<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        Self(count)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// What a wait waits for.
///
/// A wait on objects (`Written`, `All`, `Gone`) resolves either way that keeps its promise:
/// the store-wide version has passed the caller's, or the store shows the object itself at
/// that version or newer (gone, for a deletion). The second does not wait for the store-wide
/// version, which in a store fed by several sources is the lowest of theirs: a quiet source
/// moves it only at its next bookmark, a minute or more away. It is sound because a store never
/// puts back an older copy of an object it holds: events of one watch arrive in order, a relist
/// is consistent at a version no older than the watch had reached, and a store of several
/// sources keeps the newer of two copies.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// The store reflects `version` or a newer one.
    Version(ResourceVersion),
    /// The store reflects an object a write returned, at its version or a newer one.
    Written(Object),
    /// Each of several objects writes returned.
    All(Vec<Object>),
    /// The store no longer holds the object the caller last knew at `object.version`.
    Gone(Object),
}

/// An object as the caller knows it: where it is, which one it is, and its version.
#[derive(Clone, Debug)]
pub(crate) struct Object {
    version: ResourceVersion,
    key: ObjectKey,
    /// `None` when the caller's copy has none: any object under the key then counts.
    uid: Option<String>,
}

impl Object {
    fn of<K: Resource>(obj: &K) -> Result<Self> {
        Ok(Self {
            version: ResourceVersion::of(obj)?,
            key: ObjectKey::from_object(obj),
            uid: obj.meta().uid.clone(),
        })
    }

    /// The copy the store holds under this key, if it is this object (same uid).
    fn held<'a, K: Resource>(&self, state: &'a State<K>) -> Option<&'a K> {
        let held = state.objects.get(&self.key)?;
        (self.uid.is_none() || held.meta().uid == self.uid).then_some(held.as_ref())
    }

    /// Whether the store holds this object at its version or a newer one.
    fn shown<K: Resource>(&self, state: &State<K>) -> bool {
        self.held(state)
            .and_then(|held| ResourceVersion::of(held).ok())
            .is_some_and(|held| held >= self.version)
    }
}

/// Whether the store-wide version has reached `version`; an error if it never can compare.
fn reached<K>(state: &State<K>, version: &ResourceVersion) -> Result<bool> {
    Ok(state
        .version
        .comparable()?
        .is_some_and(|reached| reached >= version))
}

impl Target {
    /// The version of an object a write returned.
    pub(crate) fn written<K: Resource>(obj: &K) -> Result<Self> {
        Object::of(obj).map(Self::Written)
    }

    /// Each of the objects that writes returned; `None` for no object.
    pub(crate) fn all<'a, K: Resource + 'a>(
        objs: impl IntoIterator<Item = &'a K>,
    ) -> Result<Option<Self>> {
        let objects = objs
            .into_iter()
            .map(Object::of)
            .collect::<Result<Vec<_>>>()?;
        Ok((!objects.is_empty()).then_some(Self::All(objects)))
    }

    /// The deletion of `obj`, as the caller last knew it.
    pub(crate) fn deleted<K: Resource>(obj: &K) -> Result<Self> {
        Object::of(obj).map(Self::Gone)
    }

    /// A check of this target to run at each wake-up: `Some(Ok(seq))` with the state's
    /// sequence number once the state meets it, `None` if not yet, an error if it never can.
    /// The check remembers what it has seen between calls (a deletion's object held).
    pub(crate) fn checker<K: Resource>(&self) -> impl FnMut(&State<K>) -> Option<Result<u64>> + '_ {
        let mut seen_held = false;
        move |state| {
            let met = match self {
                Self::Version(version) => reached(state, version),
                Self::Written(object) => Self::object_met(state, object),
                Self::All(objects) => objects
                    .iter()
                    .map(|object| Self::object_met(state, object))
                    .find(|met| !matches!(met, Ok(true)))
                    .unwrap_or(Ok(true)),
                Self::Gone(object) => Self::gone(state, object, &mut seen_held),
            };
            match met {
                Ok(true) => Some(Ok(state.seq)),
                Ok(false) => None,
                Err(err) => Some(Err(err)),
            }
        }
    }

    fn object_met<K: Resource>(state: &State<K>, object: &Object) -> Result<bool> {
        if object.shown(state) {
            return Ok(true);
        }
        reached(state, &object.version)
    }

    /// A deletion is reflected once the store has held the object at the caller's version or
    /// a newer one and holds it no more, or once the store-wide version has passed the
    /// caller's and the object is not there. Without the first, an object the store has not
    /// received yet would look deleted.
    fn gone<K: Resource>(state: &State<K>, object: &Object, seen_held: &mut bool) -> Result<bool> {
        if object.held(state).is_some() {
            *seen_held |= object.shown(state);
            return Ok(false);
        }
        if *seen_held {
            return Ok(true);
        }
        reached(state, &object.version)
    }
}

/// How far a subscriber has handed changes to its consumer, for waits on its handle.
#[derive(Debug, Default)]
pub(crate) struct Handover {
    /// One more than the sequence number of the last change handed over in full; 0 before
    /// the subscriber has handed over its first snapshot.
    position: AtomicU64,
    pub(crate) waiters: Waiters,
}

impl Handover {
    /// Records that every change up to `seq` has been handed to the consumer.
    pub(crate) fn handed_over(&self, seq: u64) {
        // `SeqCst`, paired with `Waiters::until`: see `Waiters::wake`.
        self.position.store(seq + 1, SeqCst);
        self.waiters.wake();
    }

    /// How many changes the store has made visible, up to `store_seq`, that have not been
    /// handed over (all of them before the first snapshot); for metrics.
    #[cfg(feature = "metrics")]
    pub(crate) fn lag(&self, store_seq: u64) -> u64 {
        let position = self.position.load(SeqCst);
        store_seq.saturating_sub(position.saturating_sub(1))
    }

    /// Whether the subscriber is gone (its waits were closed).
    #[cfg(feature = "metrics")]
    pub(crate) fn is_closed(&self) -> bool {
        self.waiters.closed.load(SeqCst)
    }

    /// Waits until every change up to `seq` has been handed over.
    pub(crate) async fn reach(&self, seq: u64) -> Result<()> {
        self.waiters
            .until(
                || (self.position.load(SeqCst) > seq).then_some(Ok(())),
                Error::SubscriberDropped,
            )
            .await
    }
}

/// What a subscriber counts for its handles and the metrics.
#[derive(Default)]
pub(crate) struct Stats {
    /// How many times it fell behind and was resynced.
    pub(crate) resyncs: AtomicU64,
}
