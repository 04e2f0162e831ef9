use thiserror::Error;

/// Everything that can go wrong in `kache-store`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`Writer`](crate::Writer) was dropped before the store saw its first `InitDone`, so
    /// the store will never become ready.
    #[error("writer was dropped before the store became ready")]
    WriterDropped,
    /// [`Store::by_index`](crate::Store::by_index) was asked for an index that was never
    /// registered with [`Writer::add_index`](crate::Writer::add_index).
    #[error("no index named {name:?} is registered")]
    UnknownIndex {
        /// The index name that was asked for.
        name: String,
    },
    /// The [`Subscriber`](crate::Subscriber) behind a
    /// [`SubscriberHandle`](crate::SubscriberHandle) was dropped before it consumed its
    /// initial state.
    #[error("subscriber was dropped before it synced")]
    SubscriberDropped,
}

/// The result type of `kache-store`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
