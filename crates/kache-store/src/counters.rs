//! The counters of one cache (the `metrics` feature), kept next to its state: the writer and
//! [`reflect`](crate::ReflectExt::reflect) bump them (one relaxed add per event, a clock read
//! per event for the age of the last one), and the collector in `metrics` reads them at
//! scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};

use kache_watch::plumbing::Activity;
use kache_watch::{ErrorClass, Event};
use parking_lot::Mutex;

use crate::wait::{Handover, Stats};

/// Event types, in the order of [`CacheMetrics::events`].
pub(crate) const EVENT_TYPES: [&str; 5] = ["init", "init_apply", "init_done", "apply", "delete"];

/// Why a list started, in the order of [`CacheMetrics::relists`].
#[derive(Clone, Copy)]
enum Cause {
    /// The cache's first list.
    FirstSync,
    /// A `410 Gone` since the previous `Init`: the version to resume from expired.
    Gone,
    /// The previous list had not reached its `InitDone`.
    UnfinishedList,
    /// Any other: a watch event without a resourceVersion, an object without a name.
    Other,
}

pub(crate) const CAUSES: [&str; 4] = ["first_sync", "gone", "unfinished_list", "other"];

/// The counters of one cache, kept next to its state.
#[derive(Default)]
pub(crate) struct CacheMetrics {
    events: [AtomicU64; 5],
    relists: [AtomicU64; 4],
    watch_starts: AtomicU64,
    watch_resumes: AtomicU64,
    bookmarks: AtomicU64,
    errors: [AtomicU64; ErrorClass::ALL.len()],
    backpressure_nanos: AtomicU64,
    /// When the last event was applied / bookmark arrived, as [`Clock`] ticks (0: never).
    last_event: AtomicU64,
    last_bookmark: AtomicU64,
    /// How long the first sync took, in nanoseconds plus one (0: not synced yet).
    initial_sync: AtomicU64,
    subscribers: Mutex<Vec<SubscriberProbe>>,
}

impl CacheMetrics {
    /// Counts an applied event; called by the writer for every event.
    #[inline]
    pub(crate) fn on_event<K>(&self, event: &Event<K>) {
        let index = match event {
            Event::Init => 0,
            Event::InitApply(_) => 1,
            Event::InitDone => 2,
            Event::Apply(_) => 3,
            Event::Delete(_) => 4,
        };
        self.events[index].fetch_add(1, Relaxed);
        self.last_event.store(clock::now(), Relaxed);
    }

    /// Counts what the watcher did during a poll.
    #[inline]
    pub(crate) fn on_activity(&self, activity: Activity) {
        if activity.is_empty() {
            return;
        }
        self.watch_starts.fetch_add(activity.watch_starts, Relaxed);
        self.watch_resumes
            .fetch_add(activity.watch_resumes, Relaxed);
        if activity.bookmarks > 0 {
            self.bookmarks.fetch_add(activity.bookmarks, Relaxed);
            self.last_bookmark.store(clock::now(), Relaxed);
        }
    }
}

/// A named subscriber, as the collector reads it.
struct SubscriberProbe {
    name: String,
    // `Arc`s shared with the subscriber: reading them never touches its stream.
    stats: Arc<Stats>,
    handover: Arc<Handover>,
}

/// What [`reflect`](crate::ReflectExt::reflect) keeps to count relists by cause, the first
/// sync's duration and the writer's waits.
#[derive(Debug, Default)]
pub(crate) struct ReflectMetrics {
    /// The first poll, where the first sync's duration starts.
    started: Option<Instant>,
    /// An `Init` has been seen.
    listed: bool,
    /// An `Init` has been seen and its `InitDone` not yet.
    listing: bool,
    /// A `410 Gone` since the last `Init`.
    gone: bool,
    /// Since when the writer waits for a backpressure subscriber.
    waiting_since: Option<Instant>,
}

impl ReflectMetrics {
    /// Times the writer's waits for backpressure subscribers: `flushed` is the outcome of
    /// one attempt to hand them the last change.
    #[inline]
    pub(crate) fn on_flush(&mut self, flushed: Poll<()>, metrics: &CacheMetrics) {
        match flushed {
            Poll::Pending => {
                self.waiting_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(()) => {
                if let Some(since) = self.waiting_since.take() {
                    let waited = duration_nanos(since.elapsed());
                    metrics.backpressure_nanos.fetch_add(waited, Relaxed);
                }
            }
        }
    }

    /// Before each poll: the first one starts the clock of the first sync.
    #[inline]
    pub(crate) fn before_poll(&mut self) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    #[inline]
    pub(crate) fn on_event<K>(&mut self, event: &Event<K>, metrics: &CacheMetrics) {
        match event {
            Event::Init => self.relist(metrics),
            Event::InitDone => self.listed(metrics),
            Event::InitApply(_) | Event::Apply(_) | Event::Delete(_) => {}
        }
    }

    #[cold]
    fn relist(&mut self, metrics: &CacheMetrics) {
        let cause = if !self.listed {
            Cause::FirstSync
        } else if self.gone {
            Cause::Gone
        } else if self.listing {
            Cause::UnfinishedList
        } else {
            Cause::Other
        };
        metrics.relists[cause as usize].fetch_add(1, Relaxed);
        self.listed = true;
        self.listing = true;
        self.gone = false;
    }

    #[cold]
    fn listed(&mut self, metrics: &CacheMetrics) {
        self.listing = false;
        if let Some(started) = self.started
            && metrics.initial_sync.load(Relaxed) == 0
        {
            let took = duration_nanos(started.elapsed()).saturating_add(1);
            metrics.initial_sync.store(took, Relaxed);
        }
    }

    pub(crate) fn on_error(&mut self, class: Option<ErrorClass>, metrics: &CacheMetrics) {
        let Some(class) = class else { return };
        self.gone |= class == ErrorClass::Gone;
        let index = ErrorClass::ALL
            .iter()
            .position(|c| *c == class)
            .unwrap_or_default();
        metrics.errors[index].fetch_add(1, Relaxed);
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A process-wide monotonic clock in nanoseconds, so that a time fits an atomic.
mod clock {
    use std::sync::OnceLock;
    use std::time::Instant;

    static START: OnceLock<Instant> = OnceLock::new();

    /// Nanoseconds since the first call, plus one (so that 0 can mean "never").
    #[inline]
    pub(super) fn now() -> u64 {
        let start = START.get_or_init(Instant::now);
        super::duration_nanos(start.elapsed()).saturating_add(1)
    }

    /// Seconds from `then` (a value of [`now`], 0 for never) to now.
    pub(super) fn seconds_since(then: u64) -> Option<f64> {
        (then != 0).then(|| seconds(now().saturating_sub(then)))
    }

    #[expect(
        clippy::cast_precision_loss,
        reason = "seconds as f64: ns precision is not needed"
    )]
    pub(super) fn seconds(nanos: u64) -> f64 {
        nanos as f64 / 1e9
    }
}

impl CacheMetrics {
    /// Reports a subscriber's lag and resyncs under `name` (with a suffix if another live
    /// subscriber of the store has it), until the subscriber is dropped.
    pub(crate) fn name_subscriber(&self, name: &str, stats: Arc<Stats>, handover: Arc<Handover>) {
        let mut subscribers = self.subscribers.lock();
        subscribers.retain(|probe| !probe.handover.is_closed());
        let taken: Vec<String> = subscribers.iter().map(|s| s.name.clone()).collect();
        subscribers.push(SubscriberProbe {
            name: unique_name(name, &taken),
            stats,
            handover,
        });
    }

    /// This cache's figures now; the rest (`objects` ... `subscribers`) is read by the
    /// caller from the store's state, health and hub.
    pub(crate) fn snapshot(&self, name: String, state: StateFigures) -> Snapshot {
        let named = {
            let mut subscribers = self.subscribers.lock();
            subscribers.retain(|probe| !probe.handover.is_closed());
            subscribers
                .iter()
                .map(|s| {
                    let resyncs = s.stats.resyncs.load(Relaxed);
                    (s.name.clone(), s.handover.lag(state.seq), resyncs)
                })
                .collect()
        };
        let initial_sync = self.initial_sync.load(Relaxed);
        Snapshot {
            name,
            events: load(&self.events),
            relists: load(&self.relists),
            watch_starts: self.watch_starts.load(Relaxed),
            watch_resumes: self.watch_resumes.load(Relaxed),
            bookmarks: self.bookmarks.load(Relaxed),
            errors: load(&self.errors),
            backpressure_seconds: clock::seconds(self.backpressure_nanos.load(Relaxed)),
            last_event_age: clock::seconds_since(self.last_event.load(Relaxed)),
            last_bookmark_age: clock::seconds_since(self.last_bookmark.load(Relaxed)),
            initial_sync: (initial_sync != 0).then(|| clock::seconds(initial_sync - 1)),
            objects: state.objects,
            synced: state.synced,
            replaying: state.replaying,
            consecutive_errors: state.consecutive_errors,
            retry_after: state.retry_after,
            subscribers: state.subscribers,
            named,
        }
    }
}

/// What a snapshot needs from outside the counters.
#[derive(Clone, Copy)]
pub(crate) struct StateFigures {
    /// The store's change number, against which subscribers' lag is measured.
    pub(crate) seq: u64,
    pub(crate) objects: u64,
    pub(crate) synced: bool,
    pub(crate) replaying: bool,
    pub(crate) consecutive_errors: u64,
    /// Seconds.
    pub(crate) retry_after: f64,
    pub(crate) subscribers: u64,
}

/// One cache's figures at a scrape.
pub(crate) struct Snapshot {
    pub(crate) name: String,
    pub(crate) events: [u64; 5],
    pub(crate) relists: [u64; 4],
    pub(crate) watch_starts: u64,
    pub(crate) watch_resumes: u64,
    pub(crate) bookmarks: u64,
    pub(crate) errors: [u64; ErrorClass::ALL.len()],
    pub(crate) backpressure_seconds: f64,
    pub(crate) last_event_age: Option<f64>,
    pub(crate) last_bookmark_age: Option<f64>,
    pub(crate) initial_sync: Option<f64>,
    pub(crate) objects: u64,
    pub(crate) synced: bool,
    pub(crate) replaying: bool,
    pub(crate) consecutive_errors: u64,
    pub(crate) retry_after: f64,
    pub(crate) subscribers: u64,
    /// Named subscribers: name, lag, resyncs.
    pub(crate) named: Vec<(String, u64, u64)>,
}

fn load<const N: usize>(counters: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counters[i].load(Relaxed))
}

/// `name`, or `name-2`, `name-3` ... whichever is not taken.
pub(crate) fn unique_name(name: &str, taken: &[String]) -> String {
    let mut unique = name.to_owned();
    let mut n = 1;
    while taken.contains(&unique) {
        n += 1;
        unique = format!("{name}-{n}");
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn a_taken_name_gets_the_first_free_suffix() {
        let taken = ["pods".to_owned(), "pods-2".to_owned()];
        assert_eq!(unique_name("pods", &taken), "pods-3");
        assert_eq!(unique_name("configmaps", &taken), "configmaps");
    }
}
