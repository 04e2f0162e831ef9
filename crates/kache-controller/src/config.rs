//! The controller's tunables.

use std::time::Duration;

use crate::queue::QueueConfig;

/// How a [`Controller`](crate::Controller) schedules its reconciles.
///
/// The defaults are bounded everywhere: 8 reconciles at once; retries backing off per key from
/// 5 ms to 1,000 s (as client-go's workqueue) under a global limit of 10 retries a second
/// (burst 100) that never delays one retry by more than 30 s; background work (the initial
/// sync, resyncs, requeues, retries) behind live changes, but never more than 10 s behind one
/// that arrived after it; a fence waits at most 10 s.
///
/// ```
/// use std::time::Duration;
/// use kache_controller::Config;
///
/// let config = Config::default()
///     .concurrency(16)
///     .debounce(Duration::from_millis(100))
///     .resync(Duration::from_secs(600));
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) concurrency: usize,
    pub(crate) queue: QueueConfig,
    pub(crate) fences: bool,
    pub(crate) fence_timeout: Duration,
    pub(crate) resync: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) name: String,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::metrics::Metrics>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 8,
            queue: QueueConfig {
                debounce: Duration::ZERO,
                aging: Duration::from_secs(10),
                backoff_base: Duration::from_millis(5),
                backoff_max: Duration::from_secs(1000),
                rate_limit_qps: 10.0,
                rate_limit_burst: 100,
                rate_limit_ceiling: Duration::from_secs(30),
            },
            fences: true,
            fence_timeout: Duration::from_secs(10),
            resync: None,
            shutdown_timeout: Duration::from_secs(30),
            name: String::new(),
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }
}

impl Config {
    /// Reconciles running at once, at least 1. Never two of one object.
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Waits this long after a trigger for more before reconciling; each trigger moves the
    /// start later again, up to the aging bound after the first. Zero (the default): at once.
    #[must_use]
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.queue.debounce = debounce;
        self
    }

    /// How long background work may be passed by live changes that arrived after it became
    /// ready: the bound on starvation.
    #[must_use]
    pub fn aging(mut self, aging: Duration) -> Self {
        self.queue.aging = aging;
        self
    }

    /// The per-object backoff after consecutive failures: `base` × 2^(failures − 1), at most
    /// `max`; a success resets it.
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.queue.backoff_base = base;
        self.queue.backoff_max = max.max(base);
        self
    }

    /// The global limit on retries: `qps` a second after a burst of `burst`; the limit never
    /// delays one retry by more than `ceiling`. A `qps` of 0 turns it off.
    #[must_use]
    pub fn rate_limit(mut self, qps: f64, burst: u32, ceiling: Duration) -> Self {
        self.queue.rate_limit_qps = qps;
        self.queue.rate_limit_burst = burst;
        self.queue.rate_limit_ceiling = ceiling;
        self
    }

    /// Whether an object's next reconcile waits until the caches show the writes its last
    /// reconcile recorded (on by default), and for how long at most.
    #[must_use]
    pub fn fences(mut self, on: bool, timeout: Duration) -> Self {
        self.fences = on;
        self.fence_timeout = timeout;
        self
    }

    /// Reconciles every object again this often, as background work.
    #[must_use]
    pub fn resync(mut self, period: Duration) -> Self {
        self.resync = Some(period);
        self
    }

    /// How long a graceful shutdown lets running reconciles finish.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Reports this controller's queue, reconciles and fences through `metrics`, under its
    /// [`name`](Self::name) (the `controller` label).
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn reporter(&self) -> Option<crate::metrics::Reporter> {
        self.metrics.as_ref().map(|metrics| metrics.of(&self.name))
    }

    #[cfg(not(feature = "metrics"))]
    #[allow(clippy::unused_self, reason = "the same call as with the feature")]
    pub(crate) fn reporter<T>(&self) -> Option<T> {
        None
    }

    /// The controller's name, in its logs, spans and metrics (`controller` label).
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }
}
