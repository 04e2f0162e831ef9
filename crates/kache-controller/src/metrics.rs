//! Prometheus metrics for controllers, on a `prometheus-client` registry (the `metrics`
//! feature): client-go's `workqueue_*` families, and kache's reconcile, fence and staleness
//! counts, each labelled by `controller` (the name given to [`Config::name`](crate::Config::name)).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;

/// The families every controller reports through, registered once on a registry; give it to
/// each controller with [`Config::metrics`](crate::Config::metrics). Cheap to clone.
///
/// ```
/// use kache_controller::{Config, Metrics};
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// let metrics = Metrics::new(&mut registry);
/// let config = Config::default().name("children").metrics(&metrics);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct Metrics {
    families: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    depth: Family<Labels, Gauge>,
    adds: Family<Labels, Counter>,
    queue_duration: Family<Labels, Histogram>,
    work_duration: Family<Labels, Histogram>,
    unfinished: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    longest: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    retries: Family<Labels, Counter>,
    reconciles: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    fence_waits: Family<Labels, Counter>,
    fence_timeouts: Family<Labels, Counter>,
    stale: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    held_share: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    held_ranges: Family<Labels, Gauge>,
    handoffs: Family<Labels, Counter>,
    unowned: Family<Labels, Histogram>,
}

/// The families of replicas, and the controller's refusals.
fn register_replicas(registry: &mut Registry, f: &Families) {
    registry.register(
            "kache_controller_refused_reconciles",
            "Queued objects dropped at their turn because their range is not held (it moved to another replica)",
            f.refused.clone(),
        );
    registry.register(
        "kache_replica_held_share",
        "The share of the uid-hash space this replica holds, 0 to 1",
        f.held_share.clone(),
    );
    registry.register(
        "kache_replica_held_ranges",
        "Ranges of uid hashes this replica holds",
        f.held_ranges.clone(),
    );
    registry.register(
        "kache_replica_handoffs",
        "Ranges taken and released by this replica, by direction",
        f.handoffs.clone(),
    );
    registry.register_with_unit(
            "kache_replica_unowned",
            "Time a range this replica took had no owner: from its release (or its last owner's last renewal) to the take",
            Unit::Seconds,
            f.unowned.clone(),
        );
}

fn seconds() -> Family<Labels, Histogram> {
    // client-go's buckets: 10 ns to 10 s, ten steps of ten.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e-8, 10.0, 10)))
}

impl Metrics {
    /// Registers the families on `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let families = Families {
            depth: Family::default(),
            adds: Family::default(),
            queue_duration: seconds(),
            work_duration: seconds(),
            unfinished: Family::default(),
            longest: Family::default(),
            retries: Family::default(),
            reconciles: Family::default(),
            active: Family::default(),
            fence_waits: Family::default(),
            fence_timeouts: Family::default(),
            stale: Family::default(),
            refused: Family::default(),
            held_share: Family::default(),
            held_ranges: Family::default(),
            handoffs: Family::default(),
            unowned: Family::new_with_constructor(|| {
                // 10 ms to about 5 min.
                Histogram::new(exponential_buckets(0.01, 2.0, 15))
            }),
        };
        let f = &families;
        registry.register(
            "workqueue_depth",
            "Objects queued, ready or not",
            f.depth.clone(),
        );
        registry.register("workqueue_adds", "Triggers of objects", f.adds.clone());
        registry.register_with_unit(
            "workqueue_queue_duration",
            "Time from an object's first trigger to the start of its reconcile",
            Unit::Seconds,
            f.queue_duration.clone(),
        );
        registry.register_with_unit(
            "workqueue_work_duration",
            "Time a reconcile takes",
            Unit::Seconds,
            f.work_duration.clone(),
        );
        registry.register_with_unit(
            "workqueue_unfinished_work",
            "Time the running reconciles have run, summed",
            Unit::Seconds,
            f.unfinished.clone(),
        );
        registry.register_with_unit(
            "workqueue_longest_running_processor",
            "Time the longest-running reconcile has run",
            Unit::Seconds,
            f.longest.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Retries after a failure",
            f.retries.clone(),
        );
        registry.register(
            "kache_controller_reconciles",
            "Reconciles by result: success, error, panic, or revoked (stopped: the replica lost its range)",
            f.reconciles.clone(),
        );
        registry.register(
            "kache_controller_active_workers",
            "Reconciles running",
            f.active.clone(),
        );
        registry.register(
            "kache_controller_fence_waits",
            "Objects whose next reconcile waited for the caches to show their writes",
            f.fence_waits.clone(),
        );
        registry.register(
            "kache_controller_fence_timeouts",
            "Fences that gave up before the caches showed the writes",
            f.fence_timeouts.clone(),
        );
        registry.register(
            "kache_controller_stale_reconciles",
            "Reconciles that started on a cache older than their object's last writes",
            f.stale.clone(),
        );
        register_replicas(registry, f);
        Self {
            families: Arc::new(families),
        }
    }

    /// The series of the replica group `group`.
    pub(crate) fn replica(&self, group: &str) -> ReplicaReporter {
        let labels = vec![("group", group.to_owned())];
        let f = &self.families;
        drop(f.held_share.get_or_create(&labels));
        drop(f.held_ranges.get_or_create(&labels));
        for direction in ["taken", "released"] {
            let mut labels = labels.clone();
            labels.push(("direction", direction.to_owned()));
            drop(f.handoffs.get_or_create(&labels));
        }
        ReplicaReporter {
            families: Arc::clone(&self.families),
            labels,
        }
    }

    /// The series of the controller `name`.
    pub(crate) fn of(&self, name: &str) -> Reporter {
        let labels = vec![("controller", name.to_owned())];
        // Every series from the start, at zero: a rate needs its first point.
        let f = &self.families;
        drop(f.depth.get_or_create(&labels));
        drop(f.adds.get_or_create(&labels));
        drop(f.retries.get_or_create(&labels));
        drop(f.active.get_or_create(&labels));
        drop(f.fence_waits.get_or_create(&labels));
        drop(f.fence_timeouts.get_or_create(&labels));
        drop(f.stale.get_or_create(&labels));
        drop(f.refused.get_or_create(&labels));
        drop(f.unfinished.get_or_create(&labels));
        drop(f.longest.get_or_create(&labels));
        for result in ["success", "error", "panic", "revoked"] {
            let mut labels = labels.clone();
            labels.push(("result", result.to_owned()));
            drop(f.reconciles.get_or_create(&labels));
        }
        Reporter {
            families: Arc::clone(&self.families),
            labels,
        }
    }
}

/// One controller's series.
#[derive(Debug)]
pub(crate) struct Reporter {
    families: Arc<Families>,
    labels: Labels,
}

impl Reporter {
    pub(crate) fn added(&self, depth: usize) {
        self.families.adds.get_or_create(&self.labels).inc();
        self.depth(depth);
    }

    pub(crate) fn depth(&self, depth: usize) {
        self.families
            .depth
            .get_or_create(&self.labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub(crate) fn started(&self, queued: Duration, active: usize, stale: bool) {
        let f = &self.families;
        f.queue_duration
            .get_or_create(&self.labels)
            .observe(queued.as_secs_f64());
        f.active
            .get_or_create(&self.labels)
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        if stale {
            f.stale.get_or_create(&self.labels).inc();
        }
    }

    pub(crate) fn finished(
        &self,
        took: Duration,
        result: &'static str,
        retry: bool,
        active: usize,
    ) {
        let f = &self.families;
        f.work_duration
            .get_or_create(&self.labels)
            .observe(took.as_secs_f64());
        let mut labels = self.labels.clone();
        labels.push(("result", result.to_owned()));
        f.reconciles.get_or_create(&labels).inc();
        if retry {
            f.retries.get_or_create(&self.labels).inc();
        }
        f.active
            .get_or_create(&self.labels)
            .set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    /// The running reconciles' total and longest time so far.
    pub(crate) fn running(&self, total: Duration, longest: Duration) {
        let f = &self.families;
        f.unfinished
            .get_or_create(&self.labels)
            .set(total.as_secs_f64());
        f.longest
            .get_or_create(&self.labels)
            .set(longest.as_secs_f64());
    }

    pub(crate) fn refused(&self) {
        self.families.refused.get_or_create(&self.labels).inc();
    }

    pub(crate) fn fenced(&self) {
        self.families.fence_waits.get_or_create(&self.labels).inc();
    }

    pub(crate) fn fence_timed_out(&self) {
        self.families
            .fence_timeouts
            .get_or_create(&self.labels)
            .inc();
    }
}

/// One replica's series.
#[derive(Debug)]
pub(crate) struct ReplicaReporter {
    families: Arc<Families>,
    labels: Labels,
}

impl ReplicaReporter {
    pub(crate) fn held(&self, held: &crate::ranges::Ranges) {
        let f = &self.families;
        f.held_share.get_or_create(&self.labels).set(held.share());
        f.held_ranges
            .get_or_create(&self.labels)
            .set(i64::try_from(held.shard_ranges().len()).unwrap_or(i64::MAX));
    }

    fn handoff(&self, direction: &str) {
        let mut labels = self.labels.clone();
        labels.push(("direction", direction.to_owned()));
        self.families.handoffs.get_or_create(&labels).inc();
    }

    pub(crate) fn taken(&self, unowned: Duration) {
        self.handoff("taken");
        self.families
            .unowned
            .get_or_create(&self.labels)
            .observe(unowned.as_secs_f64());
    }

    pub(crate) fn released(&self) {
        self.handoff("released");
    }
}
