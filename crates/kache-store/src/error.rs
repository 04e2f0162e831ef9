use std::{fmt, io};

use thiserror::Error;

use crate::identity::WatchIdentity;

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
    /// [`Store::wait_synced_or_fail`](crate::Store::wait_synced_or_fail). Retrying
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
        source: IoError,
    },
    /// [`Writer::restore`](crate::Writer::restore) did not restore a snapshot; the store is
    /// untouched and starts cold.
    #[error("snapshot {} not restored: {reason}", path.display())]
    SnapshotRejected {
        /// The snapshot's path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        reason: Rejected,
    },
}

/// The result type of `kache-store`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a snapshot was not restored: the store starts cold.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The file could not be read.
    #[error("the file could not be read: {0}")]
    Unreadable(#[source] IoError),
    /// The file is shorter than its header says.
    #[error("the file is truncated")]
    Truncated,
    /// The payload does not match its checksum, or is longer than its header says.
    #[error("the file is corrupt (checksum or length mismatch)")]
    Corrupt,
    /// The file is not a kache snapshot.
    #[error("the file is not a kache snapshot")]
    ForeignFormat,
    /// A kache snapshot of a format version this build does not read.
    #[error("format version {found} (this build reads {supported})")]
    FormatVersion {
        /// The file's format version.
        found: u32,
        /// The version this build reads,
        /// [`SNAPSHOT_FORMAT_VERSION`](crate::SNAPSHOT_FORMAT_VERSION).
        supported: u32,
    },
    /// A snapshot of another watch.
    #[error("it belongs to another watch ({found}; this store is {expected})")]
    Identity {
        /// This store's watch.
        expected: Box<WatchIdentity>,
        /// The snapshot's.
        found: Box<WatchIdentity>,
    },
    /// A snapshot saved under another schema tag.
    #[error("it has schema tag {found:?}, this store {expected:?}")]
    Schema {
        /// This store's tag.
        expected: String,
        /// The snapshot's.
        found: String,
    },
    /// The checksum holds but the objects do not decode as this store's type: a change of
    /// type without a change of schema tag.
    #[error("its objects do not decode: {0}")]
    Undecodable(String),
    /// The store already holds a generation, or a list is in progress: a snapshot only
    /// starts a store.
    #[error("the store is not new")]
    StoreNotNew,
    /// The snapshot was taken against another cluster: its `kube-system` namespace has
    /// another uid.
    #[error(
        "it was taken against another cluster (kube-system uid {found}; this server's is {expected})"
    )]
    OtherCluster {
        /// This server's cluster uid.
        expected: String,
        /// The snapshot's.
        found: String,
    },
    /// The snapshot's version is newer than any the server has reached: etcd was restored
    /// from a backup, or the snapshot comes from another cluster.
    #[error(
        "its version {found} is ahead of the server's {expected}: another cluster, or etcd restored from a backup"
    )]
    AheadOfServer {
        /// The server's current resourceVersion.
        expected: String,
        /// The snapshot's.
        found: String,
    },
    /// The server holds an object, unchanged since before the snapshot's version, that the
    /// snapshot lacks or holds at another uid or version: the snapshot is of another cluster
    /// or another history.
    #[error(
        "it does not hold {object} as the server has held it since before the snapshot's version: another cluster or another history"
    )]
    Diverged {
        /// The object, as `namespace/name` (or `name`).
        object: String,
    },
    /// The server could not be asked which cluster it serves or how far it has reached (it is
    /// unreachable, or refused): an unverified snapshot is not served.
    #[error("the server could not be asked to verify it: {0}")]
    Unverified(String),
}

/// An I/O error, kept comparable and cloneable (its kind and message) so that
/// [`Error`](enum@Error) stays `Clone + Eq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoError {
    /// The kind of the original error.
    pub kind: io::ErrorKind,
    /// The original error, as it displayed.
    pub message: String,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IoError {}

impl From<io::Error> for IoError {
    fn from(err: io::Error) -> Self {
        Self {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}
