//! Prometheus metrics for caches, on a `prometheus-client` registry (the `metrics` feature).
//!
//! Each store keeps plain atomic counters next to its state; the writer and
//! [`reflect`](crate::ReflectExt::reflect) bump them (one relaxed add per event, a clock read
//! per event for the age of the last one). Nothing is registered per cache: one
//! [`Metrics`] collector reads every live cache at scrape time, so gauges such as the number
//! of objects or a subscriber's lag are exact at the scrape, and a dropped cache disappears.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kache_watch::{Activity, ErrorClass, Event};
use kube_client::Resource;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

use crate::store::Shared;
use crate::subscriber::{Stats, Subscriber};
use crate::wait::Handover;
use crate::writer::Writer;

/// The metrics of every cache attached to it, as one `prometheus-client` collector.
///
/// Create one per registry with [`Metrics::new`], attach each cache with
/// [`Writer::with_metrics`] (its name becomes the `cache` label) and, for per-subscriber
/// figures, name subscribers with [`Subscriber::with_metrics`]. Cheap to clone; clones share
/// the caches. Every metric is listed in the README and `docs/observability.md`.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::{Event, Metrics, Writer};
/// use prometheus_client::{encoding::text::encode, registry::Registry};
///
/// let mut registry = Registry::default();
/// let metrics = Metrics::new(&mut registry);
/// let mut writer = Writer::<ConfigMap>::new().with_metrics(&metrics, "config");
/// let _audit = writer.subscribe().with_metrics("audit");
/// writer.apply(Event::Init);
/// writer.apply(Event::InitDone);
///
/// let mut text = String::new();
/// encode(&mut text, &registry)?;
/// assert!(text.contains(r#"kache_events_total{cache="config",type="init_done"} 1"#));
/// assert!(text.contains(r#"kache_synced{cache="config"} 1"#));
/// assert!(text.contains(r#"kache_subscriber_lag{cache="config",subscriber="audit"} 1"#));
/// # Ok::<(), std::fmt::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Metrics {
    // `Weak`: the collector must not keep a dropped cache alive.
    caches: Arc<Mutex<Vec<Weak<dyn Probe>>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.live().iter().map(|cache| cache.name()).collect();
        f.debug_struct("Metrics").field("caches", &names).finish()
    }
}

impl Metrics {
    /// A collector for caches, registered on `registry`.
    #[must_use]
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register_collector(Box::new(metrics.clone()));
        metrics
    }

    /// The caches still alive, pruning the others.
    fn live(&self) -> Vec<Arc<dyn Probe>> {
        let mut caches = self.caches.lock();
        let mut live = Vec::with_capacity(caches.len());
        caches.retain(|cache| {
            cache.upgrade().is_some_and(|cache| {
                live.push(cache);
                true
            })
        });
        live
    }

    fn attach(&self, cache: Weak<dyn Probe>, name: &str) -> String {
        let taken: Vec<String> = self.live().iter().map(|cache| cache.name()).collect();
        let unique = unique_name(name, &taken);
        if unique != name {
            warn!(
                cache = name,
                reported_as = %unique,
                "another live cache on these metrics has this name; this one is reported under another"
            );
        }
        self.caches.lock().push(cache);
        unique
    }
}

/// `name`, or `name-2`, `name-3` ... whichever is not taken.
fn unique_name(name: &str, taken: &[String]) -> String {
    let mut unique = name.to_owned();
    let mut n = 1;
    while taken.contains(&unique) {
        n += 1;
        unique = format!("{name}-{n}");
    }
    unique
}

impl<K> Writer<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// Reports this cache's metrics through `metrics`, with `name` as the `cache` label (and
    /// as the cache's name in its health and logs, as [`Writer::with_name`]). A name another
    /// live cache already has gets a suffix (`-2`), with a warning, so that no two caches
    /// share a series.
    ///
    /// The counters run from the writer's creation, whenever this is called.
    #[must_use]
    pub fn with_metrics(self, metrics: &Metrics, name: &str) -> Self {
        // `Weak<Shared<K>>` to `Weak<dyn Probe>`: the collector reads any kind of cache.
        let probe: Weak<dyn Probe> = Arc::downgrade(&self.shared) as Weak<dyn Probe>;
        let name = metrics.attach(probe, name);
        self.with_name(&name)
    }
}

impl<K> Subscriber<K> {
    /// Reports this subscriber's lag and resyncs in its store's metrics, with `name` as the
    /// `subscriber` label (a name another live subscriber of the store has gets a suffix).
    /// Unnamed subscribers are only counted, in `kache_subscribers`.
    ///
    /// The series disappear when the subscriber is dropped.
    #[must_use]
    pub fn with_metrics(self, name: &str) -> Self {
        let mut subscribers = self.shared.metrics.subscribers.lock();
        subscribers.retain(|probe| !probe.handover.is_closed());
        let taken: Vec<String> = subscribers.iter().map(|s| s.name.clone()).collect();
        subscribers.push(SubscriberProbe {
            name: unique_name(name, &taken),
            stats: Arc::clone(&self.stats),
            handover: Arc::clone(&self.handover),
        });
        drop(subscribers);
        self
    }
}

/// Event types, in the order of [`CacheMetrics::events`].
const EVENT_TYPES: [&str; 5] = ["init", "init_apply", "init_done", "apply", "delete"];

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

const CAUSES: [&str; 4] = ["first_sync", "gone", "unfinished_list", "other"];

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
    #[inline]
    pub(crate) fn poll_flush<K>(&mut self, writer: &mut Writer<K>, cx: &mut Context<'_>) -> Poll<()>
    where
        K: Resource + Send + Sync + 'static,
    {
        let flushed = writer.poll_flush(cx);
        match flushed {
            Poll::Pending => {
                self.waiting_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(()) => {
                if let Some(since) = self.waiting_since.take() {
                    let waited = duration_nanos(since.elapsed());
                    writer
                        .shared
                        .metrics
                        .backpressure_nanos
                        .fetch_add(waited, Relaxed);
                }
            }
        }
        flushed
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

/// A cache as the collector sees it, whatever the kind of its objects.
trait Probe: Send + Sync {
    fn name(&self) -> String;
    fn snapshot(&self) -> Snapshot;
}

/// One cache's figures at a scrape.
struct Snapshot {
    name: String,
    events: [u64; 5],
    relists: [u64; 4],
    watch_starts: u64,
    watch_resumes: u64,
    bookmarks: u64,
    errors: [u64; ErrorClass::ALL.len()],
    backpressure_seconds: f64,
    last_event_age: Option<f64>,
    last_bookmark_age: Option<f64>,
    initial_sync: Option<f64>,
    objects: u64,
    synced: bool,
    replaying: bool,
    consecutive_errors: u64,
    subscribers: u64,
    /// Named subscribers: name, lag, resyncs.
    named: Vec<(String, u64, u64)>,
}

fn load<const N: usize>(counters: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| counters[i].load(Relaxed))
}

impl<K: Send + Sync + 'static> Probe for Shared<K> {
    fn name(&self) -> String {
        self.health.name().to_string()
    }

    fn snapshot(&self) -> Snapshot {
        let m = &self.metrics;
        let (objects, seq, synced) = {
            let state = self.state.read();
            (state.objects.len() as u64, state.seq, state.ready)
        };
        let named = {
            let mut subscribers = m.subscribers.lock();
            subscribers.retain(|probe| !probe.handover.is_closed());
            subscribers
                .iter()
                .map(|s| {
                    let resyncs = s.stats.resyncs.load(Relaxed);
                    (s.name.clone(), s.handover.lag(seq), resyncs)
                })
                .collect()
        };
        let initial_sync = m.initial_sync.load(Relaxed);
        Snapshot {
            name: self.name(),
            events: load(&m.events),
            relists: load(&m.relists),
            watch_starts: m.watch_starts.load(Relaxed),
            watch_resumes: m.watch_resumes.load(Relaxed),
            bookmarks: m.bookmarks.load(Relaxed),
            errors: load(&m.errors),
            backpressure_seconds: clock::seconds(m.backpressure_nanos.load(Relaxed)),
            last_event_age: clock::seconds_since(m.last_event.load(Relaxed)),
            last_bookmark_age: clock::seconds_since(m.last_bookmark.load(Relaxed)),
            initial_sync: (initial_sync != 0).then(|| clock::seconds(initial_sync - 1)),
            objects,
            synced,
            replaying: self.health.replaying(),
            consecutive_errors: self.health.attempts(),
            subscribers: self.hub.subscribers() as u64,
            named,
        }
    }
}

/// A sample's value.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One metric family: its descriptor and samples, each with its labels after `cache`.
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    fn new(name: &'static str, kind: MetricType, help: &'static str) -> Self {
        Self {
            name,
            help,
            unit: None,
            kind,
            samples: Vec::new(),
        }
    }

    fn seconds(mut self) -> Self {
        self.unit = Some(Unit::Seconds);
        self
    }

    /// Adds one sample per cache, from `value`; `None` leaves the cache out.
    fn per_cache(
        mut self,
        caches: &[Snapshot],
        value: impl Fn(&Snapshot) -> Option<Value>,
    ) -> Self {
        for cache in caches {
            if let Some(value) = value(cache) {
                self.samples
                    .push((vec![("cache", cache.name.clone())], value));
            }
        }
        self
    }

    /// Adds one sample per cache and `label` value, from `values` (in the order of `names`).
    fn per_label<const N: usize>(
        mut self,
        caches: &[Snapshot],
        label: &'static str,
        names: [&'static str; N],
        values: impl Fn(&Snapshot) -> [u64; N],
    ) -> Self {
        for cache in caches {
            for (name, value) in names.iter().zip(values(cache)) {
                let labels = vec![("cache", cache.name.clone()), (label, (*name).to_owned())];
                self.samples.push((labels, Value::Int(value)));
            }
        }
        self
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if self.samples.is_empty() {
            return Ok(());
        }
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        for (labels, value) in &self.samples {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut sample = metric.encode_family(&labels)?;
            match (self.kind, *value) {
                (MetricType::Counter, Value::Int(v)) => {
                    sample.encode_counter::<NoLabelSet, _, f64>(&v, None)?;
                }
                (MetricType::Counter, Value::Float(v)) => {
                    sample.encode_counter::<NoLabelSet, _, f64>(&v, None)?;
                }
                (_, Value::Int(v)) => sample.encode_gauge(&v)?,
                (_, Value::Float(v)) => sample.encode_gauge(&v)?,
            }
        }
        Ok(())
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let caches: Vec<Snapshot> = self.live().iter().map(|cache| cache.snapshot()).collect();
        for family in counters(&caches).iter().chain(&gauges(&caches)) {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "a value for `Family::per_cache`, where `None` leaves a cache out"
)]
fn int(value: u64) -> Option<Value> {
    Some(Value::Int(value))
}

/// One sample per named subscriber of every cache, from `value` (of name, lag, resyncs).
fn per_subscriber(
    caches: &[Snapshot],
    value: fn(&(String, u64, u64)) -> u64,
) -> Vec<(Vec<(&'static str, String)>, Value)> {
    let mut samples = Vec::new();
    for cache in caches {
        for named in &cache.named {
            let labels = vec![
                ("cache", cache.name.clone()),
                ("subscriber", named.0.clone()),
            ];
            samples.push((labels, Value::Int(value(named))));
        }
    }
    samples
}

/// The counters (`_total`), for every cache.
fn counters(caches: &[Snapshot]) -> Vec<Family> {
    vec![
            Family::new("kache_events", MetricType::Counter, "Events applied to the store, by type.")
                .per_label(caches, "type", EVENT_TYPES, |c| c.events),
            Family::new(
                "kache_relists",
                MetricType::Counter,
                "Lists started (Init events), by cause: the first sync, a 410 Gone, the restart of an unfinished list, or another.",
            )
            .per_label(caches, "cause", CAUSES, |c| c.relists),
            Family::new(
                "kache_watch_starts",
                MetricType::Counter,
                "WATCH requests the server accepted right after a list (a streaming list counts as one).",
            )
            .per_cache(caches, |c| int(c.watch_starts)),
            Family::new(
                "kache_watch_resumes",
                MetricType::Counter,
                "WATCH requests the server accepted that resume from the last seen resourceVersion, without a relist.",
            )
            .per_cache(caches, |c| int(c.watch_resumes)),
            Family::new("kache_bookmarks", MetricType::Counter, "Bookmarks received on a live watch.")
                .per_cache(caches, |c| int(c.bookmarks)),
            Family::new("kache_errors", MetricType::Counter, "Errors of the watch, by class.")
                .per_label(caches, "class", ErrorClass::ALL.map(ErrorClass::as_str), |c| c.errors),
            Family::new(
                "kache_backpressure_wait",
                MetricType::Counter,
                "Time the writer waited for backpressure subscribers to take a change.",
            )
            .seconds()
            .per_cache(caches, |c| Some(Value::Float(c.backpressure_seconds))),
            Family {
                samples: per_subscriber(caches, |s| s.2),
                ..Family::new(
                    "kache_subscriber_resyncs",
                    MetricType::Counter,
                    "Times a named subscriber fell a full buffer behind and was resynced.",
                )
            },
    ]
}

/// The gauges, for every cache.
fn gauges(caches: &[Snapshot]) -> Vec<Family> {
    vec![
            Family::new("kache_objects", MetricType::Gauge, "Objects in the store.")
                .per_cache(caches, |c| int(c.objects)),
            Family::new("kache_synced", MetricType::Gauge, "1 once the store has completed its first list, else 0.")
                .per_cache(caches, |c| int(u64::from(c.synced))),
            Family::new(
                "kache_replaying",
                MetricType::Gauge,
                "1 while a store restored from a snapshot replays the changes made since (until the server confirms a point), else 0.",
            )
            .per_cache(caches, |c| int(u64::from(c.replaying))),
            Family::new(
                "kache_consecutive_errors",
                MetricType::Gauge,
                "Errors in a row since the watch last made progress (0 when it is not failing).",
            )
            .per_cache(caches, |c| int(c.consecutive_errors)),
            Family::new(
                "kache_initial_sync_duration",
                MetricType::Gauge,
                "Time from the first poll of the watch to the end of the first list (absent until then).",
            )
            .seconds()
            .per_cache(caches, |c| c.initial_sync.map(Value::Float)),
            Family::new(
                "kache_last_event_age",
                MetricType::Gauge,
                "Time since the last event was applied (absent before the first).",
            )
            .seconds()
            .per_cache(caches, |c| c.last_event_age.map(Value::Float)),
            Family::new(
                "kache_last_bookmark_age",
                MetricType::Gauge,
                "Time since the last bookmark on a live watch (absent before the first).",
            )
            .seconds()
            .per_cache(caches, |c| c.last_bookmark_age.map(Value::Float)),
            Family::new("kache_subscribers", MetricType::Gauge, "Live subscribers of the store.")
                .per_cache(caches, |c| int(c.subscribers)),
            Family {
                samples: per_subscriber(caches, |s| s.1),
                ..Family::new(
                    "kache_subscriber_lag",
                    MetricType::Gauge,
                    "Changes the store made visible that a named subscriber has not yet handed to its consumer.",
                )
            },
    ]
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
