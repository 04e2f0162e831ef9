//! What a reconcile asks for next.

use std::sync::Arc;
use std::time::Duration;

/// What the controller does with a key after its reconcile, as kube-runtime's `Action`.
///
/// ```
/// use std::time::Duration;
/// use kache_controller::Action;
///
/// assert_eq!(Action::requeue(Duration::from_secs(300)).requeue_after(), Some(Duration::from_secs(300)));
/// assert_eq!(Action::await_change().requeue_after(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconciles the object again after `duration` (as background work), unless a change
    /// triggers it sooner.
    #[must_use]
    pub const fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Reconciles the object again only when a change triggers it.
    #[must_use]
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// The requeue delay, if any.
    #[must_use]
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// What the error policy learns of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// This failure's number among the object's consecutive failures: 1 for the first; a
    /// success resets it.
    pub attempt: u32,
    /// The object's backoff for this attempt (see [`Config::backoff`](crate::Config::backoff)):
    /// `Action::requeue(retry.backoff)` retries with it.
    pub backoff: Duration,
}

/// The error policy most controllers want: retry the object after its backoff, which grows with
/// its consecutive failures and resets on a success ([`Retry`]).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use futures::StreamExt;
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// # use kache_controller::{Action, Config, Controller};
/// # async fn reconcile(_: Arc<ConfigMap>, _: Arc<()>) -> kube_client::Result<Action> {
/// #     Ok(Action::await_change())
/// # }
/// # async fn run(store: kache_store::Store<ConfigMap>) {
/// Controller::new(store, Config::default())
///     .run(reconcile, kache_controller::backoff, Arc::new(()))
///     .for_each(|_| async {})
///     .await;
/// # }
/// ```
#[must_use]
pub fn backoff<K, E, Ctx>(_: Arc<K>, _: &E, _: Arc<Ctx>, retry: Retry) -> Action {
    Action::requeue(retry.backoff)
}
