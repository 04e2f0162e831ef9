use thiserror::Error;

/// Everything that can go wrong in `kache-store`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`Writer`](crate::Writer) was dropped before the store got to what was waited for:
    /// its first `InitDone`, or a write. The store will never change again.
    #[error("writer was dropped before the store got to what was waited for")]
    WriterDropped,
    /// [`Store::by_index`](crate::Store::by_index) was asked for an index that was never
    /// registered with [`Writer::add_index`](crate::Writer::add_index).
    #[error("no index named {name:?} is registered")]
    UnknownIndex {
        /// The index name that was asked for.
        name: String,
    },
    /// The [`Subscriber`](crate::Subscriber) behind a
    /// [`SubscriberHandle`](crate::SubscriberHandle) was dropped before it got to what was
    /// waited for: its initial state, or a write.
    #[error("subscriber was dropped before it got to what was waited for")]
    SubscriberDropped,
    /// A resourceVersion is not a decimal integer without a leading zero, so it cannot be
    /// ordered (Kubernetes 1.35, KEP-5504); see [`ResourceVersion`](crate::ResourceVersion).
    /// Returned when parsing one, and by a wait when the version waited for, or the versions
    /// the store has seen, cannot be ordered. `version` is the version at fault (empty for an
    /// object without one).
    #[error(
        "resource version {version:?} is not comparable: not a decimal integer without a leading zero"
    )]
    NotComparable {
        /// The version at fault.
        version: String,
    },
    /// The watch feeding the store was refused with `403 Forbidden` or `404 Not Found`
    /// before the store's first sync; see
    /// [`Store::wait_until_ready_or_fail`](crate::Store::wait_until_ready_or_fail). Retrying
    /// will not help until someone changes the cluster (RBAC rules, an installed CRD).
    #[error("the watch was refused ({class}) before the first sync: {message}")]
    WatchRefused {
        /// [`Forbidden`](kache_watch::ErrorClass::Forbidden) or
        /// [`NotFound`](kache_watch::ErrorClass::NotFound).
        class: kache_watch::ErrorClass,
        /// The watcher's error, as it displays.
        message: String,
    },
    /// The cache stopped following its watch before the first sync: see
    /// [`Health::stopped`](crate::Health::stopped).
    #[error("the cache stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
    /// [`SnapshotFile::save`](crate::SnapshotFile::save) found no synced state to save: the
    /// store has not completed its first list.
    #[error("the store has not synced: nothing to save")]
    NothingToSave,
    /// A snapshot could not be written (no space, no permission, an object that does not
    /// serialize). The previous snapshot, if any, is intact.
    #[error("failed to save a snapshot to {}: {source}", path.display())]
    SnapshotSave {
        /// The snapshot's path.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: crate::snapshot::IoError,
    },
    /// [`Writer::restore`](crate::Writer::restore) did not restore a snapshot; the store is
    /// untouched and starts cold.
    #[error("snapshot {} not restored: {reason}", path.display())]
    SnapshotRejected {
        /// The snapshot's path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        reason: crate::snapshot::Rejected,
    },
}

/// The result type of `kache-store`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
