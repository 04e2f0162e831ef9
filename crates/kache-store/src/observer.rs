//! What [`reflect`](crate::ReflectExt::reflect) notes about its watch besides applying
//! events: the error streak for the store's [`Health`](crate::Health) (one warning per
//! streak, at once for a `403` or `404`), and with the `metrics` feature what the metrics
//! count.

use std::any::Any;
use std::time::{Duration, Instant};

use kache_watch::ErrorClass;
use kache_watch::plumbing::Activity;
use kube_client::Resource;
use tracing::{debug, info, warn};

use crate::health::Failing;
use crate::shared::Shared;
use crate::writer::Writer;

/// Errors in a row, of a class that may heal, before the one warning of a streak.
const WARN_AFTER: u64 = 5;

/// What [`reflect`](crate::ReflectExt::reflect) keeps to report on its watch: the error
/// streak for the health and, with the `metrics` feature, what the metrics count.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    /// Errors since the last `Ok` item; a copy of the store's `Failing::attempts`, so that an
    /// `Ok` item costs one comparison.
    streak: u64,
    /// The streak has logged its warning.
    warned: bool,
    /// The streak has logged its warning for a refusal (`403`, `404`).
    warned_refused: bool,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::counters::ReflectMetrics,
}

impl Observer {
    /// Notes an `Ok` item: the watch is making progress, so a streak of errors is over.
    #[inline]
    pub(crate) fn on_ok<K>(&mut self, shared: &Shared<K>) {
        if self.streak != 0 {
            self.recovered(shared);
        }
    }

    #[cold]
    fn recovered<K>(&mut self, shared: &Shared<K>) {
        let name = shared.health.name();
        let failing = shared.health.set_failing(None);
        let duration = failing.as_ref().map(Failing::duration).unwrap_or_default();
        if self.warned {
            info!(cache = %name, attempts = self.streak, ?duration, "the watch works again");
        } else {
            debug!(cache = %name, attempts = self.streak, ?duration, "the watch works again");
        }
        self.streak = 0;
        self.warned = false;
        self.warned_refused = false;
    }

    /// Notes an error item: the streak grows, and its first refusal (or its
    /// [`WARN_AFTER`]th error) logs the streak's one warning.
    #[cold]
    pub(crate) fn on_error<K, E: 'static>(&mut self, err: &E, shared: &Shared<K>) {
        let (class, error, retry_after) = describe(err);
        #[cfg(feature = "metrics")]
        self.metrics.on_error(class, &shared.metrics);
        self.streak += 1;
        let attempts = self.streak;
        let now = Instant::now();
        let since = shared.health.failing_since().unwrap_or(now);
        let name = shared.health.name();
        let refused = class.is_some_and(ErrorClass::is_persistent);
        if refused && !self.warned_refused {
            let (what, fix) = if class == Some(ErrorClass::Forbidden) {
                ("forbidden (403)", "grant this client list and watch on it")
            } else {
                (
                    "not found (404)",
                    "check that the resource is served, such as an installed CRD",
                )
            };
            warn!(
                cache = %name,
                attempts,
                error = %error,
                "the API server refuses this cache's watch: {what}; it cannot sync until that \
                 changes ({fix}); retrying with backoff, no further warning for this streak"
            );
            self.warned = true;
            self.warned_refused = true;
        } else if attempts >= WARN_AFTER && !self.warned {
            warn!(
                cache = %name,
                attempts,
                error = %error,
                "the watch has failed {attempts} times in a row; retrying with backoff, no \
                 further warning for this streak"
            );
            self.warned = true;
        }
        shared.health.set_failing(Some(Failing {
            class,
            error,
            since,
            attempts,
            retry_after,
        }));
    }
}

/// The class, text and `Retry-After` of a stream's error, when it is the watcher's.
fn describe<E: 'static>(err: &E) -> (Option<ErrorClass>, String, Option<Duration>) {
    match (err as &dyn Any).downcast_ref::<kache_watch::Error>() {
        Some(err) => (Some(err.class()), err.to_string(), err.retry_after()),
        None => (
            None,
            format!("an error of type {}", std::any::type_name::<E>()),
            None,
        ),
    }
}

/// The hooks [`reflect`](crate::ReflectExt::reflect) calls; without the `metrics` feature
/// they keep only the health, and cost one comparison per `Ok` item.
impl Observer {
    /// Flushes the writer's pending change to backpressure subscribers (timing the wait
    /// with the `metrics` feature).
    #[inline]
    #[cfg_attr(
        not(feature = "metrics"),
        expect(clippy::unused_self, reason = "the metrics feature uses it")
    )]
    pub(crate) fn poll_flush<K>(
        &mut self,
        writer: &mut Writer<K>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()>
    where
        K: Resource + Send + Sync + 'static,
    {
        let flushed = writer.poll_flush(cx);
        #[cfg(feature = "metrics")]
        self.metrics.on_flush(flushed, &writer.shared.metrics);
        flushed
    }

    /// Whether [`reflect`](crate::ReflectExt::reflect) must note what the watcher does
    /// around its next poll. A WATCH the server accepts ends a streak of errors as an `Ok`
    /// item does (a resumed watch yields nothing until something changes), so it must
    /// during a streak; with the `metrics` feature, always.
    #[inline]
    pub(crate) fn observes_polls(&self) -> bool {
        cfg!(feature = "metrics") || self.streak != 0
    }

    /// Before an observed poll: the watch's activity totals so far.
    // Read around the poll rather than through a closure that wraps it, so that the poll's
    // item is written once, where the caller wants it.
    #[inline]
    #[cfg_attr(
        not(feature = "metrics"),
        expect(clippy::unused_self, reason = "the metrics feature uses it")
    )]
    pub(crate) fn before_poll(&mut self) -> Activity {
        #[cfg(feature = "metrics")]
        self.metrics.before_poll();
        Activity::so_far()
    }

    /// After the poll: notes what the watcher did since [`Observer::before_poll`].
    #[inline]
    pub(crate) fn after_poll<K>(&mut self, before: Activity, shared: &Shared<K>) {
        let activity = Activity::so_far().since(before);
        #[cfg(feature = "metrics")]
        shared.metrics.on_activity(activity);
        if self.streak != 0 && activity.watch_starts + activity.watch_resumes > 0 {
            self.recovered(shared);
        }
    }

    /// Notes an `Ok` item.
    #[inline]
    pub(crate) fn on_event<K>(&mut self, event: &kache_watch::Event<K>, shared: &Shared<K>) {
        self.on_ok(shared);
        #[cfg(feature = "metrics")]
        self.metrics.on_event(event, &shared.metrics);
        #[cfg(not(feature = "metrics"))]
        let _ = event;
    }
}
