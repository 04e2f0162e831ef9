//! The ranges of uid hashes a replica may reconcile now: written by its membership, read by
//! its controllers before each reconcile starts and while it runs.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::ranges::Ranges;

/// What a replica may reconcile, shared by its membership and its controllers (cheap to
/// clone). Give it to a controller with [`Controller::within`](crate::Controller::within).
///
/// A reconcile of an object starts only while the object's uid hash is in a range the replica
/// holds and its authority is current (its Lease renewed within the renew deadline); it is
/// stopped (its future dropped) if its range is revoked or the authority lapses while it runs.
#[derive(Clone, Debug)]
pub struct Ownership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Bumped on every change of the ranges or the authority.
    changes: watch::Sender<u64>,
    /// Woken when a reconcile ends.
    ended: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Ranges where reconciles may start.
    start: Ranges,
    /// Ranges where running reconciles may go on: `start` and the ranges draining.
    run: Ranges,
    /// Until when this replica's authority holds; `None` before its first renewal.
    valid_until: Option<Instant>,
    /// The uid hashes of the reconciles running, with their counts.
    running: Vec<(u64, u32)>,
}

impl State {
    fn current(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }
}

impl Default for Ownership {
    fn default() -> Self {
        Self::new()
    }
}

impl Ownership {
    /// Holding nothing: no reconcile may start until ranges are granted.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes: watch::Sender::new(0),
                ended: Notify::new(),
            }),
        }
    }

    /// The ranges where reconciles may start now (empty while the authority has lapsed).
    #[must_use]
    pub fn held(&self) -> Ranges {
        self.held_at(Instant::now())
    }

    pub(crate) fn held_at(&self, now: Instant) -> Ranges {
        let state = self.inner.state.lock();
        if state.current(now) {
            state.start.clone()
        } else {
            Ranges::empty()
        }
    }

    /// Whether a reconcile of an object with this uid hash may start now.
    #[must_use]
    pub fn may_start(&self, hash: u64) -> bool {
        let state = self.inner.state.lock();
        state.current(Instant::now()) && state.start.contains(hash)
    }

    /// Registers a reconcile of `hash` as running, if it may start.
    pub(crate) fn try_start(&self, hash: u64, now: Instant) -> bool {
        let mut state = self.inner.state.lock();
        if !(state.current(now) && state.start.contains(hash)) {
            return false;
        }
        match state.running.iter_mut().find(|(h, _)| *h == hash) {
            Some((_, count)) => *count += 1,
            None => state.running.push((hash, 1)),
        }
        true
    }

    /// Whether a running reconcile of `hash` may go on.
    pub(crate) fn may_run(&self, hash: u64, now: Instant) -> bool {
        let state = self.inner.state.lock();
        state.current(now) && state.run.contains(hash)
    }

    /// A reconcile of `hash` registered by [`try_start`](Self::try_start) ended.
    pub(crate) fn ended(&self, hash: u64) {
        let mut state = self.inner.state.lock();
        if let Some(at) = state.running.iter().position(|(h, _)| *h == hash) {
            state.running[at].1 -= 1;
            if state.running[at].1 == 0 {
                state.running.swap_remove(at);
            }
        }
        drop(state);
        self.inner.ended.notify_waiters();
    }

    /// When the authority lapses, if it holds now.
    pub(crate) fn valid_until(&self) -> Option<Instant> {
        self.inner.state.lock().valid_until
    }

    /// A receiver that changes with the ranges or the authority.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn changed(&self) {
        self.inner
            .changes
            .send_modify(|generation| *generation += 1);
    }

    /// Sets where reconciles may start, and where running ones may go on (a superset).
    pub(crate) fn set(&self, start: Ranges, run: &Ranges) {
        let mut state = self.inner.state.lock();
        if state.start == start && state.run == *run {
            return;
        }
        state.run = run.union(&start);
        state.start = start;
        drop(state);
        self.changed();
    }

    /// Extends the authority to `until` (never shortens it).
    pub(crate) fn extend(&self, until: Instant) {
        let mut state = self.inner.state.lock();
        if state.valid_until.is_some_and(|old| old >= until) {
            return;
        }
        let was_current = state.current(Instant::now());
        state.valid_until = Some(until);
        drop(state);
        if !was_current {
            self.changed();
        }
    }

    /// Reconciles running in `ranges`.
    pub(crate) fn running_in(&self, ranges: &Ranges) -> usize {
        let state = self.inner.state.lock();
        state
            .running
            .iter()
            .filter(|(hash, _)| ranges.contains(*hash))
            .map(|(_, count)| *count as usize)
            .sum()
    }

    /// Waits until no reconcile runs in `ranges`.
    pub(crate) async fn idle_in(&self, ranges: &Ranges) {
        loop {
            let ended = self.inner.ended.notified();
            if self.running_in(ranges) == 0 {
                return;
            }
            ended.await;
        }
    }
}
