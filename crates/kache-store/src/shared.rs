//! What the writer and every reader of one store share: the state under its lock, the
//! subscription side of the fan-out, the tasks waiting on the store, its health and counters.
//!
//! Readiness is told here, once: `State::ready`, under the same lock as the objects, and the
//! waits on it go through the store's `Waiters` like every other wait.

use kube_client::Resource;
use parking_lot::RwLock;

#[cfg(feature = "metrics")]
use crate::counters::CacheMetrics;
use crate::error::{Error, Result};
use crate::fanout::Hub;
use crate::health::HealthState;
use crate::state::State;
use crate::wait::{Target, Waiters};

/// What the writer and every reader share.
pub(crate) struct Shared<K> {
    /// A `parking_lot::RwLock`: readers never contend with each other, the lock is not poisoned by
    /// a panicking reader, and the writer only holds it for O(1) swaps or single-key updates.
    pub(crate) state: RwLock<State<K>>,
    pub(crate) hub: Hub<K>,
    /// Tasks waiting for the store to change (to become ready, or to reflect a write); closed
    /// when the writer is dropped.
    pub(crate) waiters: Waiters,
    // Observability hooks: see health.rs, counters.rs and metrics.rs.
    pub(crate) health: HealthState,
    /// The uid of the cluster the store's watch serves, once `Writer::restore` has learned it:
    /// recorded in every snapshot saved (see snapshot.rs).
    pub(crate) cluster: std::sync::OnceLock<String>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: CacheMetrics,
}

impl<K> Shared<K> {
    /// The state of a new, empty, not yet ready store, with `hub` to subscribe to it.
    pub(crate) fn new(hub: Hub<K>) -> Self {
        Self {
            state: RwLock::new(State::default()),
            hub,
            waiters: Waiters::default(),
            health: HealthState::default(),
            cluster: std::sync::OnceLock::new(),
            #[cfg(feature = "metrics")]
            metrics: CacheMetrics::default(),
        }
    }

    /// Whether the store has completed its first list.
    pub(crate) fn is_synced(&self) -> bool {
        self.state.read().ready
    }

    /// Waits until the store has completed its first list; fails once the writer is dropped
    /// before that.
    pub(crate) async fn wait_synced(&self) -> Result<()> {
        self.waiters
            .until(|| self.is_synced().then_some(Ok(())), Error::WriterDropped)
            .await
    }
}

impl<K: Resource> Shared<K> {
    /// Waits until the store meets `target`; returns the sequence number of the generation
    /// that met it.
    pub(crate) async fn wait(&self, target: &Target) -> Result<u64> {
        let mut check = target.checker();
        self.waiters
            .until(|| check(&self.state.read()), Error::WriterDropped)
            .await
    }
}
