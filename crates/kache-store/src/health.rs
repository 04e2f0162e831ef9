//! Whether a cache is synced, and when it is not, why: for `/readyz`, logs and fail-fast
//! start-up.
//!
//! [`reflect`](crate::ReflectExt::reflect) sees every item of the watch stream. It counts the
//! errors in a row, keeps the last one with the time the streak began, and logs one warning
//! per streak (at once for a `403` or `404`, which retrying will not heal; after a few
//! attempts otherwise) instead of one line per retry. The health lives with the store, so
//! any [`Store`] clone reads it.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::{Either, select};
use kache_watch::{Activity, ErrorClass};
use kube_client::Resource;
use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::store::{Shared, Store};
use crate::writer::Writer;

/// Errors in a row, of a class that may heal, before the one warning of a streak.
const WARN_AFTER: u64 = 5;

/// The health of a cache, from [`Store::health`]: whether it has synced and whether its
/// watch is failing now.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::{Event, Writer};
///
/// let mut writer = Writer::<ConfigMap>::new().with_name("config");
/// let store = writer.as_reader();
/// assert!(!store.health().is_ready());
/// writer.apply(Event::Init);
/// writer.apply(Event::InitDone);
/// let health = store.health();
/// assert!(health.is_ready() && health.failing.is_none());
/// assert_eq!(health.to_string(), "config: synced");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The cache's name, from [`Writer::with_name`] (empty if it has none).
    pub name: Arc<str>,
    /// Whether the store has completed its first list: see [`Store::is_ready`].
    pub synced: bool,
    /// The errors the watch has met since its last success, if its last attempt failed.
    pub failing: Option<Failing>,
    /// Whether the store was restored from a snapshot and the server has not yet confirmed
    /// that the replay of the changes made since has caught up: until the first bookmark of
    /// the resumed watch, or the first list if the history was gone. The store is ready
    /// meanwhile, serving a real past state of the server that the replay brings up to date;
    /// see [`Writer::restore`].
    pub replaying: bool,
}

/// A watch whose attempts keep failing: the errors it met since its last success.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failing {
    /// The class of the last error; `None` when the stream's error type is not
    /// `kache_watch::Error`, whose class is unknown.
    pub class: Option<ErrorClass>,
    /// The last error, as it displays.
    pub error: String,
    /// When the first error of this streak happened.
    pub since: Instant,
    /// How many errors in a row, with no successful item in between.
    pub attempts: u64,
}

impl Health {
    /// Whether a readiness probe should pass: the store has synced and its watch is not
    /// refused ([`Health::is_refused`]). A watch that fails for other reasons (a server that
    /// is restarting) keeps a synced store ready: it serves the last state it saw, and the
    /// watcher resumes.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.synced && !self.is_refused()
    }

    /// Whether the last error was a `403 Forbidden` or a `404 Not Found`: the watch will not
    /// heal until someone changes the cluster (RBAC rules, an installed CRD).
    #[must_use]
    pub fn is_refused(&self) -> bool {
        self.failing
            .as_ref()
            .and_then(|failing| failing.class)
            .is_some_and(ErrorClass::is_persistent)
    }
}

impl Failing {
    /// How long the streak has lasted.
    #[must_use]
    pub fn duration(&self) -> Duration {
        self.since.elapsed()
    }
}

impl fmt::Display for Health {
    /// One line: `NAME: synced`, or `NAME: not synced`, followed by `; N attempts in a row
    /// failed over S s (CLASS), the last: ERROR` when the watch is failing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.synced { "synced" } else { "not synced" };
        write!(f, "{}: {state}", self.name)?;
        if self.replaying {
            f.write_str(", replaying the changes since a restored snapshot")?;
        }
        if let Some(failing) = &self.failing {
            write!(f, "; {failing}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = self.attempts;
        let plural = if attempts == 1 { "" } else { "s" };
        let seconds = self.duration().as_secs_f64();
        write!(
            f,
            "{attempts} attempt{plural} in a row failed over {seconds:.1} s"
        )?;
        if let Some(class) = self.class {
            write!(f, " ({class})")?;
        }
        write!(f, ", the last: {}", self.error)
    }
}

/// The health every handle of one store shares.
#[derive(Debug)]
pub(crate) struct HealthState {
    name: RwLock<Arc<str>>,
    /// `watch`: a wait for readiness that fails fast sleeps on it.
    failing: watch::Sender<Option<Failing>>,
    /// See [`Health::replaying`]. Relaxed: a flag read on its own, ordering nothing else.
    replaying: AtomicBool,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            name: RwLock::new(Arc::from("")),
            failing: watch::Sender::new(None),
            replaying: AtomicBool::new(false),
        }
    }
}

impl HealthState {
    pub(crate) fn name(&self) -> Arc<str> {
        Arc::clone(&self.name.read())
    }

    pub(crate) fn set_name(&self, name: &str) {
        *self.name.write() = Arc::from(name);
    }

    pub(crate) fn replaying(&self) -> bool {
        self.replaying.load(Ordering::Relaxed)
    }

    /// The store now holds a restored snapshot that the watch is to bring up to date.
    pub(crate) fn start_replay(&self) {
        self.replaying.store(true, Ordering::Relaxed);
    }

    /// The server confirmed a point (a bookmark, a list) since the restore.
    #[inline]
    pub(crate) fn end_replay(&self) {
        if self.replaying() {
            self.replaying.store(false, Ordering::Relaxed);
            debug!(cache = %self.name(), "the replay since the restored snapshot has caught up");
        }
    }

    /// Errors in a row now (0 when the watch is not failing).
    #[cfg(feature = "metrics")]
    pub(crate) fn attempts(&self) -> u64 {
        self.failing.borrow().as_ref().map_or(0, |f| f.attempts)
    }
}

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
    pub(crate) metrics: crate::metrics::ReflectMetrics,
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
        let failing = shared.health.failing.send_replace(None);
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
        let (class, error) = describe(err);
        #[cfg(feature = "metrics")]
        self.metrics.on_error(class, &shared.metrics);
        self.streak += 1;
        let attempts = self.streak;
        let now = Instant::now();
        let since = shared
            .health
            .failing
            .borrow()
            .as_ref()
            .map_or(now, |f| f.since);
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
        shared.health.failing.send_replace(Some(Failing {
            class,
            error,
            since,
            attempts,
        }));
    }
}

/// The class and text of a stream's error, when it is the watcher's.
fn describe<E: 'static>(err: &E) -> (Option<ErrorClass>, String) {
    match (err as &dyn Any).downcast_ref::<kache_watch::Error>() {
        Some(err) => (Some(err.class()), err.to_string()),
        None => (
            None,
            format!("an error of type {}", std::any::type_name::<E>()),
        ),
    }
}

impl<K> Writer<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// Names this cache in its [`Health`] and its log lines. With the `metrics` feature,
    /// `Writer::with_metrics` names it too, with the name of its `cache` label.
    #[must_use]
    pub fn with_name(self, name: &str) -> Self {
        self.shared.health.set_name(name);
        self
    }
}

impl<K> Store<K> {
    /// The cache's health: whether it has synced, and whether its watch is failing now (the
    /// last error, since when, how many in a row). The watch's errors are known when it feeds
    /// the store through [`reflect`](crate::ReflectExt::reflect).
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, ReflectExt, Writer};
    /// use kache_watch::{Error, ErrorClass};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let writer = Writer::<ConfigMap>::new().with_name("config");
    /// let store = writer.as_reader();
    /// let items = stream::iter([Err(Error::NoResourceVersion), Err(Error::NoResourceVersion)]);
    /// items.reflect(writer).for_each(|_| async {}).await;
    ///
    /// let failing = store.health().failing.expect("two errors in a row");
    /// assert_eq!((failing.attempts, failing.class), (2, Some(ErrorClass::Decode)));
    /// # }
    /// ```
    #[must_use]
    pub fn health(&self) -> Health {
        Health {
            name: self.shared.health.name(),
            synced: self.is_ready(),
            failing: self.shared.health.failing.borrow().clone(),
            replaying: self.shared.health.replaying(),
        }
    }

    /// Waits until the store has completed its first list, like [`Store::wait_until_ready`],
    /// but fails as soon as the watch is refused with `403 Forbidden` or `404 Not Found`
    /// before that: the cases that retrying does not heal. Use it at start-up to exit with
    /// a clear error rather than wait forever for a permission that was never granted.
    ///
    /// # Errors
    ///
    /// [`Error::WatchRefused`] on such a refusal, with the server's message;
    /// [`Error::WriterDropped`] if the writer is dropped before the store became ready.
    pub async fn wait_until_ready_or_fail(&self) -> Result<()> {
        let mut ready = self.shared.ready.clone();
        let mut failing = self.shared.health.failing.subscribe();
        loop {
            if *ready.borrow_and_update() {
                return Ok(());
            }
            if let Some(refusal) = refusal(failing.borrow_and_update().as_ref()) {
                return Err(refusal);
            }
            let ready_changed = std::pin::pin!(ready.changed());
            let failing_changed = std::pin::pin!(failing.changed());
            match select(ready_changed, failing_changed).await {
                // The sender of `failing` lives as long as the store: it cannot be dropped.
                Either::Left((Err(_), _)) => return Err(Error::WriterDropped),
                Either::Left((Ok(()), _)) | Either::Right(_) => {}
            }
        }
    }
}

fn refusal(failing: Option<&Failing>) -> Option<Error> {
    let failing = failing?;
    let class = failing.class.filter(|class| class.is_persistent())?;
    Some(Error::WatchRefused {
        class,
        message: failing.error.clone(),
    })
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
        #[cfg(feature = "metrics")]
        return self.metrics.poll_flush(writer, cx);
        #[cfg(not(feature = "metrics"))]
        writer.poll_flush(cx)
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
