//! Prometheus metrics for caches, on a `prometheus-client` registry (the `metrics` feature).
//!
//! Each store keeps plain atomic counters next to its state (see the `counters` module).
//! Nothing is registered per cache: one
//! [`Metrics`] collector reads every live cache at scrape time, so gauges such as the number
//! of objects or a subscriber's lag are exact at the scrape, and a dropped cache disappears.

use std::fmt;
use std::sync::{Arc, Weak};

use kache_watch::ErrorClass;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

use crate::counters::{CAUSES, EVENT_TYPES, Snapshot, StateFigures, unique_name};
use crate::shared::Shared;

/// The metrics of every cache attached to it, as one `prometheus-client` collector.
///
/// Create one per registry with [`Metrics::new`], attach each cache with
/// [`Writer::with_metrics`](crate::Writer::with_metrics) (its name becomes the `cache` label) and, for per-subscriber
/// figures, name subscribers with [`Subscriber::with_name`](crate::Subscriber::with_name). Cheap to clone; clones share
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
/// let _audit = writer.subscribe().with_name("audit");
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

    pub(crate) fn attach(&self, cache: Weak<dyn Probe>, name: &str) -> String {
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

/// A cache as the collector sees it, whatever the kind of its objects.
pub(crate) trait Probe: Send + Sync {
    fn name(&self) -> String;
    fn snapshot(&self) -> Snapshot;
}

impl<K: Send + Sync + 'static> Probe for Shared<K> {
    fn name(&self) -> String {
        self.health.name().to_string()
    }

    fn snapshot(&self) -> Snapshot {
        let (objects, seq, synced) = {
            let state = self.state.read();
            (state.objects.len() as u64, state.seq, state.ready)
        };
        let figures = StateFigures {
            seq,
            objects,
            synced,
            replaying: self.health.replaying(),
            consecutive_errors: self.health.attempts(),
            retry_after: self
                .health
                .retry_after()
                .map_or(0.0, |wait| wait.as_secs_f64()),
            subscribers: self.hub.subscribers() as u64,
        };
        self.metrics.snapshot(self.name(), figures)
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
                "kache_retry_after",
                MetricType::Gauge,
                "What an overloaded server asked the failing watch to wait before its next request (Retry-After); 0 when it asked nothing or the watch is not failing.",
            )
            .seconds()
            .per_cache(caches, |c| Some(Value::Float(c.retry_after))),
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
