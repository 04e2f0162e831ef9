//! Whether a cache is synced, and when it is not, why: for `/readyz`, logs and fail-fast
//! start-up.
//!
//! [`reflect`](crate::ReflectExt::reflect) sees every item of the watch stream. It counts the
//! errors in a row, keeps the last one with the time the streak began, and logs one warning
//! per streak (at once for a `403` or `404`, which retrying will not heal; after a few
//! attempts otherwise) instead of one line per retry (see the `observer` module). The health
//! lives with the store, so any [`Store`](crate::Store) clone reads it
//! ([`Store::health`](crate::Store::health)).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kache_watch::ErrorClass;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::error::Error;

/// The health of a cache, from [`Store::health`](crate::Store::health): whether it has synced and whether its
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
    /// The cache's name, from [`Writer::with_name`](crate::Writer::with_name) (empty if it has none).
    pub name: Arc<str>,
    /// Whether the store has completed its first list: see [`Store::is_synced`](crate::Store::is_synced).
    pub synced: bool,
    /// The errors the watch has met since its last success, if its last attempt failed.
    pub failing: Option<Failing>,
    /// Whether the store was restored from a snapshot and the server has not yet confirmed
    /// that the replay of the changes made since has caught up: until the first bookmark of
    /// the resumed watch, or the first list if the history was gone. The store is ready
    /// meanwhile, serving a real past state of the server that the replay brings up to date;
    /// see [`Writer::restore`](crate::Writer::restore).
    pub replaying: bool,
    /// Why the cache stopped following its watch, if it did: items of two watch streams
    /// reached one store or source (watchers merged with `futures::stream::select`), which
    /// it cannot hold correctly. The store keeps what it held, no longer updated; the cause is
    /// in how the cache is built, so it never clears.
    pub stopped: Option<String>,
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
    /// How long the server asked to wait before the next request (`Retry-After`, on a 429 or
    /// 503 of an overloaded server), if it did: the watcher waits at least that long.
    pub retry_after: Option<Duration>,
}

impl Health {
    /// Whether a readiness probe should pass: the store has synced, its watch is not
    /// refused ([`Health::is_refused`]) and it has not stopped ([`Health::stopped`]). A watch that fails for other reasons (a server that
    /// is restarting) keeps a synced store ready: it serves the last state it saw, and the
    /// watcher resumes.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.synced && !self.is_refused() && self.stopped.is_none()
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
        if let Some(stopped) = &self.stopped {
            write!(f, "; stopped: {stopped}")?;
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
        write!(f, ", the last: {}", self.error)?;
        if let Some(wait) = self.retry_after {
            write!(f, " (the server asked to wait {} s)", wait.as_secs())?;
        }
        Ok(())
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
    /// See [`Health::stopped`]; set once.
    stopped: std::sync::OnceLock<String>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            name: RwLock::new(Arc::from("")),
            failing: watch::Sender::new(None),
            replaying: AtomicBool::new(false),
            stopped: std::sync::OnceLock::new(),
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
            tracing::debug!(cache = %self.name(), "the replay since the restored snapshot has caught up");
        }
    }

    pub(crate) fn stopped(&self) -> Option<String> {
        self.stopped.get().cloned()
    }

    /// The cache stopped following its watch, for `reason`; wakes a wait for readiness that
    /// fails fast.
    #[cold]
    pub(crate) fn stop(&self, reason: String) {
        if self.stopped.set(reason).is_ok() {
            // Wakes `refused`, which reads `stopped` first.
            self.failing.send_modify(|_| {});
        }
    }

    /// Errors in a row now (0 when the watch is not failing).
    #[cfg(feature = "metrics")]
    pub(crate) fn attempts(&self) -> u64 {
        self.failing.borrow().as_ref().map_or(0, |f| f.attempts)
    }

    /// What the server asked to wait, while the watch is failing.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code, reason = "read by metrics"))]
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.failing.borrow().as_ref().and_then(|f| f.retry_after)
    }

    /// The errors of the current streak, if the watch is failing.
    pub(crate) fn failing(&self) -> Option<Failing> {
        self.failing.borrow().clone()
    }

    /// When the current streak began, if the watch is failing.
    pub(crate) fn failing_since(&self) -> Option<Instant> {
        self.failing.borrow().as_ref().map(|f| f.since)
    }

    /// Replaces the current streak (`None`: the watch works); returns the previous one.
    pub(crate) fn set_failing(&self, failing: Option<Failing>) -> Option<Failing> {
        self.failing.send_replace(failing)
    }

    /// Resolves with [`Error::WatchRefused`] once the watch is refused (`403`, `404`), or
    /// [`Error::Stopped`] once the cache has stopped: at once if it is now.
    pub(crate) async fn refused(&self) -> Error {
        let mut updates = self.failing.subscribe();
        loop {
            if let Some(reason) = self.stopped.get() {
                return Error::Stopped {
                    reason: reason.clone(),
                };
            }
            if let Some(refusal) = refusal(updates.borrow_and_update().as_ref()) {
                return refusal;
            }
            // The sender lives as long as the store, which this borrows: it cannot be
            // dropped while this waits.
            if updates.changed().await.is_err() {
                std::future::pending::<()>().await;
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
