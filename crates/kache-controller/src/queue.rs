//! The work queue: which key runs next, and when. Pure bookkeeping on an explicit clock, so its
//! rules are tested without a runtime (see the property tests).
//!
//! The rules:
//! - **Dedup.** A key is queued at most once; triggers of a queued key merge into its entry
//!   (the earlier time, the higher priority).
//! - **One at a time.** A key that runs is not handed out again; a trigger that arrives while
//!   it runs marks it dirty, and it is queued again, at once, when it finishes.
//! - **Priorities with aging.** Ready keys are taken earliest deadline first: a live change's
//!   deadline is the time it became ready, background work's (initial sync, resync, requeue,
//!   retry) that time plus [`QueueConfig::aging`]. Live changes go first, yet no background key
//!   waits past its deadline for live changes that arrived after it.
//! - **Backoff.** A failure delays the key's next run: the error policy's delay, which by
//!   default grows per key from [`QueueConfig::backoff_base`] to [`QueueConfig::backoff_max`]
//!   and resets on success, and at least the global rate limit's delay (a token bucket over
//!   every retry), which is capped at [`QueueConfig::rate_limit_ceiling`].
//! - **Fences.** A fenced key (its last run's writes are not yet in the caches) is never taken;
//!   it keeps its entry and becomes ready again when its fence lifts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// The queue's maps hash with ahash: several lookups per reconcile, on the hot path.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Why a key is queued: live changes before the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A change seen on a watch since the controller started.
    Live,
    /// The initial sync, a subscriber's resync, a periodic resync or `reconcile_all_on`, a
    /// requeue, a retry.
    Background,
}

/// The queue's tunables; see [`Config`](crate::Config), which sets them.
#[derive(Clone, Debug)]
pub(crate) struct QueueConfig {
    pub(crate) debounce: Duration,
    pub(crate) aging: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) rate_limit_qps: f64,
    pub(crate) rate_limit_burst: u32,
    pub(crate) rate_limit_ceiling: Duration,
}

/// How a run ended, as the queue needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Succeeded; run again after the delay, if any.
    Success(Option<Duration>),
    /// Failed; run again after the delay (the error policy's), if any, and at least the
    /// global rate limit's.
    Failure(Option<Duration>),
}

/// A key handed out by [`Queue::pop`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Popped<Q> {
    pub(crate) key: Q,
    pub(crate) priority: Priority,
    /// Since the key's first trigger of this entry: the queue duration.
    pub(crate) queued_at: Instant,
    /// Consecutive failures before this run.
    pub(crate) failures: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    ready_at: Instant,
    priority: Priority,
    queued_at: Instant,
    /// Set by a trigger under debounce: a later trigger moves `ready_at` later again.
    debounced: bool,
    /// Tells this entry's heap items from stale ones.
    seq: u64,
}

#[derive(Debug, Default)]
struct KeyState {
    queued: Option<Entry>,
    running: bool,
    dirty: Option<Priority>,
    fenced: bool,
    failures: u32,
}

impl KeyState {
    fn is_idle(&self) -> bool {
        self.queued.is_none()
            && !self.running
            && self.dirty.is_none()
            && !self.fenced
            && self.failures == 0
    }
}

/// A token bucket over retries, whose reservations may go into debt (as Go's `rate.Limiter`):
/// the n-th retry beyond the burst waits n / qps.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// See the module's docs.
#[derive(Debug)]
pub(crate) struct Queue<Q> {
    config: QueueConfig,
    keys: HashMap<Q, KeyState>,
    /// Queued entries not yet ready, by `ready_at`.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Ready entries, by deadline.
    ready: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The key of each heap item still live.
    by_seq: HashMap<u64, Q>,
    seq: u64,
    bucket: Bucket,
    running: usize,
}

impl<Q: Clone + Eq + Hash> Queue<Q> {
    pub(crate) fn new(config: QueueConfig, now: Instant) -> Self {
        let tokens = f64::from(config.rate_limit_burst);
        Self {
            config,
            keys: HashMap::default(),
            delayed: BinaryHeap::new(),
            ready: BinaryHeap::new(),
            by_seq: HashMap::default(),
            seq: 0,
            bucket: Bucket { tokens, at: now },
            running: 0,
        }
    }

    /// A trigger for `key`.
    pub(crate) fn add(&mut self, key: Q, priority: Priority, now: Instant) {
        let (debounce, aging) = (self.config.debounce, self.config.aging);
        let state = self.keys.entry(key.clone()).or_default();
        if state.running {
            state.dirty = Some(state.dirty.map_or(priority, |p| p.min(priority)));
            return;
        }
        let ready_at = now + debounce;
        let entry = match state.queued {
            Some(old) => Entry {
                // Debounce moves a debounced entry later, but never past the aging bound
                // after its first trigger: a key triggered without pause still runs.
                ready_at: if old.debounced && !debounce.is_zero() {
                    ready_at.min(old.queued_at + aging.max(debounce))
                } else {
                    old.ready_at.min(ready_at)
                },
                priority: old.priority.min(priority),
                queued_at: old.queued_at,
                debounced: !debounce.is_zero() && (old.debounced || ready_at <= old.ready_at),
                seq: 0,
            },
            None => Entry {
                ready_at,
                priority,
                queued_at: now,
                debounced: !debounce.is_zero(),
                seq: 0,
            },
        };
        self.enqueue(key, entry, now);
    }

    /// Queues `key` to run after `delay` as background work, unless it is queued sooner.
    fn requeue(&mut self, key: Q, delay: Duration, now: Instant) {
        let state = self.keys.entry(key.clone()).or_default();
        // A year stands for "never" without overflowing the clock.
        let ready_at = now + delay.min(Duration::from_secs(365 * 24 * 3600));
        let entry = match state.queued {
            Some(old) if old.ready_at <= ready_at => return,
            Some(old) => Entry {
                ready_at,
                debounced: false,
                ..old
            },
            None => Entry {
                ready_at,
                priority: Priority::Background,
                queued_at: now,
                debounced: false,
                seq: 0,
            },
        };
        self.enqueue(key, entry, now);
    }

    fn enqueue(&mut self, key: Q, mut entry: Entry, now: Instant) {
        self.seq += 1;
        entry.seq = self.seq;
        let state = self.keys.get_mut(&key).expect("the key's state exists");
        if let Some(old) = state.queued.replace(entry) {
            self.by_seq.remove(&old.seq);
        }
        let fenced = state.fenced;
        self.by_seq.insert(entry.seq, key);
        if entry.ready_at <= now && !fenced {
            self.ready.push(Reverse((self.deadline(&entry), entry.seq)));
        } else {
            // A fenced key's entry waits here too; it is skipped while the fence holds.
            self.delayed.push(Reverse((entry.ready_at, entry.seq)));
        }
    }

    fn deadline(&self, entry: &Entry) -> Instant {
        match entry.priority {
            Priority::Live => entry.ready_at,
            Priority::Background => entry.ready_at + self.config.aging,
        }
    }

    /// Moves the entries that are due into the ready heap.
    fn promote(&mut self, now: Instant) {
        while let Some(&Reverse((ready_at, seq))) = self.delayed.peek() {
            if ready_at > now {
                break;
            }
            self.delayed.pop();
            let Some(key) = self.by_seq.get(&seq) else {
                continue;
            };
            let state = &self.keys[key];
            if state.fenced {
                // Put back when the fence lifts.
                continue;
            }
            let entry = state.queued.expect("a live item has an entry");
            self.ready.push(Reverse((self.deadline(&entry), seq)));
        }
    }

    /// The next key to run, if one is ready: it is then running until [`Queue::done`].
    pub(crate) fn pop(&mut self, now: Instant) -> Option<Popped<Q>> {
        self.promote(now);
        while let Some(Reverse((_, seq))) = self.ready.pop() {
            let Some(key) = self.by_seq.remove(&seq) else {
                continue;
            };
            let state = self.keys.get_mut(&key).expect("the key's state exists");
            let entry = state.queued.take().expect("a live item has an entry");
            state.running = true;
            self.running += 1;
            return Some(Popped {
                failures: state.failures,
                key,
                priority: entry.priority,
                queued_at: entry.queued_at,
            });
        }
        None
    }

    /// When the next delayed entry becomes ready, if any.
    pub(crate) fn next_wakeup(&mut self) -> Option<Instant> {
        while let Some(&Reverse((ready_at, seq))) = self.delayed.peek() {
            match self.by_seq.get(&seq) {
                Some(key) if !self.keys[key].fenced => return Some(ready_at),
                _ => {
                    self.delayed.pop();
                }
            }
        }
        None
    }

    /// `key`'s run ended. `fenced`: its writes are not in the caches yet; see
    /// [`Queue::unfence`]. Returns the consecutive failures so far (0 after a success).
    pub(crate) fn done(&mut self, key: &Q, outcome: Outcome, fenced: bool, now: Instant) -> u32 {
        let state = self.keys.get_mut(key).expect("done for a key that runs");
        assert!(state.running, "done for a key that runs");
        state.running = false;
        self.running -= 1;
        state.fenced = fenced;
        let dirty = state.dirty.take();
        let delay = match outcome {
            Outcome::Success(delay) => {
                state.failures = 0;
                delay
            }
            Outcome::Failure(delay) => {
                state.failures = state.failures.saturating_add(1);
                delay.map(|delay| delay.max(self.rate_limit(now)))
            }
        };
        let failures = self.keys[key].failures;
        if let Some(priority) = dirty {
            self.add(key.clone(), priority, now);
        }
        if let Some(delay) = delay {
            self.requeue(key.clone(), delay, now);
        }
        self.forget_if_idle(key);
        failures
    }

    /// `key`'s fence lifted: a queued entry may run.
    pub(crate) fn unfence(&mut self, key: &Q, now: Instant) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        state.fenced = false;
        if let Some(entry) = state.queued
            && entry.ready_at <= now
        {
            self.ready.push(Reverse((self.deadline(&entry), entry.seq)));
        } else if let Some(entry) = state.queued {
            self.delayed.push(Reverse((entry.ready_at, entry.seq)));
        }
        self.forget_if_idle(key);
    }

    fn forget_if_idle(&mut self, key: &Q) {
        if self.keys.get(key).is_some_and(KeyState::is_idle) {
            self.keys.remove(key);
        }
    }

    /// The delay of the `failures`-th consecutive failure: base × 2^(failures − 1), at most the
    /// maximum.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        self.config
            .backoff_base
            .checked_mul(1_u32 << doublings.min(31))
            .map_or(self.config.backoff_max, |d| d.min(self.config.backoff_max))
    }

    /// The global bucket's delay for one more retry, capped at the ceiling.
    fn rate_limit(&mut self, now: Instant) -> Duration {
        let qps = self.config.rate_limit_qps;
        if qps <= 0.0 || !qps.is_finite() {
            return Duration::ZERO;
        }
        let burst = f64::from(self.config.rate_limit_burst.max(1));
        let elapsed = now.saturating_duration_since(self.bucket.at).as_secs_f64();
        self.bucket.tokens = (self.bucket.tokens + elapsed * qps).min(burst);
        self.bucket.at = now;
        self.bucket.tokens -= 1.0;
        if self.bucket.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.bucket.tokens / qps).min(self.config.rate_limit_ceiling)
    }

    /// The consecutive failures of `key` so far.
    pub(crate) fn failures_of(&self, key: &Q) -> u32 {
        self.keys.get(key).map_or(0, |state| state.failures)
    }

    /// Keys queued (ready or not), fenced ones included: the queue's depth.
    pub(crate) fn depth(&self) -> usize {
        self.by_seq.len()
    }

    /// Keys running now.
    #[cfg(test)]
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Whether `key` is running.
    #[cfg(test)]
    pub(crate) fn is_running(&self, key: &Q) -> bool {
        self.keys.get(key).is_some_and(|state| state.running)
    }

    /// Keys the queue keeps state for: bounded by those queued, running, fenced or failing.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.keys.len()
    }
}
