//! The bottom of the store: one generation of objects, its indexes, and what must change
//! atomically with them (the change number, readiness, the version reached).
//!
//! `wait` checks waits against a `State`; `shared` puts it under the lock that the writer and
//! every reader share.

use crate::index::{Indexes, ObjectMap};
use crate::version::Reached;

/// One generation of the store, with the bookkeeping that must change atomically with it.
pub(crate) struct State<K> {
    pub(crate) objects: ObjectMap<K>,
    pub(crate) indexes: Indexes,
    /// Sequence number of the last change made visible (an apply, a delete, or a relist).
    /// Kept under the same lock as `objects` so a snapshot and its seq are taken together.
    pub(crate) seq: u64,
    /// Whether the store has completed its first list: the one record of readiness. Set at
    /// the first `InitDone`, in the same write that makes its generation visible, and never
    /// cleared (a later relist keeps serving the previous generation until it is complete).
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
