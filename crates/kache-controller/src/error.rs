//! What a controller's result stream reports as failed.

use kache_store::ObjectKey;
use thiserror::Error;

/// A reconcile that did not succeed, as the [`Controller::run`](crate::Controller::run)
/// stream reports it; the controller goes on either way.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error<E: std::error::Error + 'static> {
    /// The reconciler returned an error; the error policy chose what next.
    #[error("reconciling {key} failed: {source}")]
    ReconcileFailed {
        /// The object.
        key: ObjectKey,
        /// The reconciler's error.
        #[source]
        source: E,
    },
    /// The reconciler panicked; the object is retried with its backoff.
    #[error("reconciling {key} panicked: {message}")]
    ReconcilePanicked {
        /// The object.
        key: ObjectKey,
        /// The panic's message.
        message: String,
    },
    /// The replica lost the object's range while the reconcile ran, and stopped it: the
    /// object's new owner reconciles it.
    #[error("reconciling {key} stopped: its range was revoked")]
    Revoked {
        /// The object.
        key: ObjectKey,
    },
}
