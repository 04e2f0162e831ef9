//! What a reconcile asks for next.

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
