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
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// The store reflects `version` or a newer one.
    Version(ResourceVersion),
    /// The store reflects `version` (the last one the caller knew of the object) or a newer
    /// one, and no longer holds the object at `key` (with `uid`, when known).
    Gone {
        version: ResourceVersion,
        key: ObjectKey,
        uid: Option<String>,
    },
}

impl Target {
    /// The version of an object a write returned.
    pub(crate) fn written<K: Resource>(obj: &K) -> Result<Self> {
        ResourceVersion::of(obj).map(Self::Version)
    }

    /// The newest version among objects that writes returned; `None` for no object.
    pub(crate) fn newest<'a, K: Resource + 'a>(
        objs: impl IntoIterator<Item = &'a K>,
    ) -> Result<Option<Self>> {
        let mut newest: Option<ResourceVersion> = None;
        for obj in objs {
            let version = ResourceVersion::of(obj)?;
            if newest.as_ref().is_none_or(|n| *n < version) {
                newest = Some(version);
            }
        }
        Ok(newest.map(Self::Version))
    }

    /// The deletion of `obj`, as the caller last knew it.
    pub(crate) fn deleted<K: Resource>(obj: &K) -> Result<Self> {
        Ok(Self::Gone {
            version: ResourceVersion::of(obj)?,
            key: ObjectKey::from_object(obj),
            uid: obj.meta().uid.clone(),
        })
    }

    fn version(&self) -> &ResourceVersion {
        match self {
            Self::Version(version) | Self::Gone { version, .. } => version,
        }
    }

    /// Whether `state` meets this target: `Some(Ok(seq))` with the state's sequence number if
    /// it does, `None` if not yet, an error if it never can.
    pub(crate) fn check<K: Resource>(&self, state: &State<K>) -> Option<Result<u64>> {
        let reached = match state.version.comparable() {
            Ok(reached) => reached?,
            Err(err) => return Some(Err(err)),
        };
        if reached < self.version() {
            return None;
        }
        if let Self::Gone { key, uid, .. } = self
            && let Some(obj) = state.objects.get(key)
            && (uid.is_none() || obj.meta().uid == *uid)
        {
            // The store has passed the last version the caller knew of the object and still
            // holds it: the delete is not reflected yet.
            return None;
        }
        Some(Ok(state.seq))
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
