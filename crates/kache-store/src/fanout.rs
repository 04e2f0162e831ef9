//! Fan-out plumbing: the change messages, the rings that carry them, and publishing.
//!
//! Each change the writer makes visible gets a sequence number, stored with the objects under
//! the same lock (see `State::seq`). The writer publishes the change, tagged with its number,
//! on a bounded ring *after* making it visible; [`Subscriber`](crate::Subscriber), the
//! consumer side, explains how a subscriber uses the numbers to join without missing or
//! repeating a change. Two rings: one that overflows (resync subscribers) and one the writer
//! waits on (backpressure subscribers).
//!
//! The writer's cost per change does not grow with the number of subscribers when they keep
//! up: publishing is one push under the ring's own mutex (not the store's lock), each
//! subscriber copies what it has not read yet in batches of up to [`BATCH`] messages (one lock
//! per batch, not per message), and a subscriber asks to be woken only once it has read
//! everything, so a burst of changes wakes it once, whatever the burst's length.
//!
//! This module knows nothing of the store: a [`Hub`] lives with the state every handle shares
//! and hands out receivers, a [`Publisher`] lives with the writer alone.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use futures::task::AtomicWaker;
use kache_watch::Event;
use parking_lot::Mutex;
use tracing::debug;

/// How many messages a receiver copies out of its ring under one lock.
pub(crate) const BATCH: usize = 64;

/// A change message: its sequence number and its events.
pub(crate) struct Msg<K> {
    pub(crate) seq: u64,
    pub(crate) payload: Payload<K>,
}

/// One event for a live change, or the batch of a relist (which may be empty when it only
/// announces readiness). `Arc<[_]>` so every subscriber shares one batch.
pub(crate) enum Payload<K> {
    One(Event<Arc<K>>),
    Many(Batch<K>),
}

pub(crate) type Batch<K> = Arc<[Event<Arc<K>>]>;

// Manual impls: `derive` would require `K: Clone`, and only `Arc`s are cloned here.
impl<K> Clone for Msg<K> {
    fn clone(&self) -> Self {
        let payload = match &self.payload {
            Payload::One(event) => Payload::One(event.clone()),
            Payload::Many(events) => Payload::Many(Arc::clone(events)),
        };
        Self {
            seq: self.seq,
            payload,
        }
    }
}

impl<K> Msg<K> {
    pub(crate) fn one(seq: u64, event: Event<Arc<K>>) -> Self {
        Self {
            seq,
            payload: Payload::One(event),
        }
    }

    pub(crate) fn many(seq: u64, events: Vec<Event<Arc<K>>>) -> Self {
        Self {
            seq,
            payload: Payload::Many(events.into()),
        }
    }
}

/// A bounded ring of messages shared by the receivers of one delivery mode. Positions count
/// every message ever pushed, so a receiver knows from its own position whether the ring has
/// dropped a message it had not read (it overflowed).
struct Ring<K> {
    inner: Mutex<Inner<K>>,
    /// Live receivers: read without the lock so that publishing to nobody costs one load.
    receivers: AtomicUsize,
    /// Whether the writer waits on this ring for the slowest receiver (backpressure).
    waits: bool,
    /// Wakes a writer waiting for room; `writer_waits` says whether to bother.
    room: AtomicWaker,
    writer_waits: AtomicBool,
}

struct Inner<K> {
    msgs: VecDeque<Msg<K>>,
    /// The position of `msgs[0]`.
    start: u64,
    capacity: usize,
    /// The writer is gone: receivers end once they have read what is left.
    closed: bool,
    /// Per receiver slot: the waker of a receiver that has read everything, and (backpressure
    /// only) how far it has handed messages over to its subscriber.
    wakers: Vec<Option<Waker>>,
    cursors: Vec<Option<Arc<AtomicU64>>>,
    /// Slots whose waker is set, so that waking costs nothing per receiver that is busy.
    parked: Vec<usize>,
    free: Vec<usize>,
    /// The newest sequence number dropped from the ring, and how many times the ring has
    /// gone from no receiver to one (the writer publishes nothing while nobody listens):
    /// a snapshot at `seq` can be replayed from the ring iff `seq >= gap` in the same era.
    gap: u64,
    era: u64,
    /// The last snapshot a resyncing receiver took, while some subscriber still walks it:
    /// others resyncing soon after share it instead of reading the whole store again.
    shared: Option<SharedSnapshot<K>>,
}

struct SharedSnapshot<K> {
    objects: Weak<[Arc<K>]>,
    seq: u64,
    era: u64,
}

impl<K> Inner<K> {
    fn end(&self) -> u64 {
        self.start + self.msgs.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some(msg) = self.msgs.pop_front() {
            self.start += 1;
            self.gap = self.gap.max(msg.seq);
        }
    }

    /// Takes the wakers of every receiver waiting for a message, to be woken after the lock is
    /// released.
    fn take_parked(&mut self, into: &mut Vec<Waker>) {
        for slot in self.parked.drain(..) {
            if let Some(waker) = self.wakers.get_mut(slot).and_then(Option::take) {
                into.push(waker);
            }
        }
    }

    /// Drops the messages every backpressure receiver has handed over.
    fn trim_handed_over(&mut self) {
        let oldest = self
            .cursors
            .iter()
            .flatten()
            .map(|cursor| cursor.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX);
        while self.start < oldest && !self.msgs.is_empty() {
            self.pop_front();
        }
    }
}

impl<K> Ring<K> {
    fn new(capacity: usize, waits: bool) -> Self {
        Self {
            inner: Mutex::new(Inner {
                msgs: VecDeque::new(),
                start: 0,
                capacity,
                closed: false,
                wakers: Vec::new(),
                cursors: Vec::new(),
                parked: Vec::new(),
                free: Vec::new(),
                gap: 0,
                era: 0,
                shared: None,
            }),
            receivers: AtomicUsize::new(0),
            waits,
            room: AtomicWaker::new(),
            writer_waits: AtomicBool::new(false),
        }
    }

    fn receiver(self: &Arc<Self>) -> Receiver<K> {
        let mut inner = self.inner.lock();
        let end = inner.end();
        let cursor = Arc::new(AtomicU64::new(end));
        let slot = if let Some(slot) = inner.free.pop() {
            inner.wakers[slot] = None;
            inner.cursors[slot] = self.waits.then(|| Arc::clone(&cursor));
            slot
        } else {
            inner.wakers.push(None);
            inner.cursors.push(self.waits.then(|| Arc::clone(&cursor)));
            inner.wakers.len() - 1
        };
        // SeqCst, paired with the fence in `has_receivers`: a writer that misses this
        // receiver made its change visible before the receiver's snapshot reads the store.
        if self.receivers.fetch_add(1, Ordering::SeqCst) == 0 {
            inner.era += 1;
        }
        Receiver {
            ring: Arc::clone(self),
            slot,
            next: end,
            local: VecDeque::new(),
            handed_over: cursor,
        }
    }

    fn has_receivers(&self) -> bool {
        // Checked after the change is visible: the fence orders that store before this load.
        fence(Ordering::SeqCst);
        self.receivers.load(Ordering::SeqCst) > 0
    }

    /// Pushes `msg`, dropping the oldest message when full (its laggards resync).
    fn push_overflowing(&self, msg: Msg<K>, wake: &mut Vec<Waker>) {
        {
            let mut inner = self.inner.lock();
            if self.receivers.load(Ordering::Relaxed) == 0 {
                return;
            }
            if inner.msgs.len() >= inner.capacity {
                debug!("a subscriber fell a full buffer behind and will be resynced");
                if self.waits {
                    inner.trim_handed_over();
                }
                while inner.msgs.len() >= inner.capacity {
                    inner.pop_front();
                }
            }
            inner.msgs.push_back(msg);
            inner.take_parked(wake);
        }
        wake.drain(..).for_each(Waker::wake);
    }

    /// Pushes `msg` unless the slowest backpressure receiver has a full buffer.
    fn try_push(&self, msg: Msg<K>, wake: &mut Vec<Waker>) -> Result<(), Msg<K>> {
        {
            let mut inner = self.inner.lock();
            if self.receivers.load(Ordering::Relaxed) == 0 {
                return Ok(());
            }
            if inner.msgs.len() >= inner.capacity {
                inner.trim_handed_over();
                if inner.msgs.len() >= inner.capacity {
                    return Err(msg);
                }
            }
            inner.msgs.push_back(msg);
            inner.take_parked(wake);
        }
        wake.drain(..).for_each(Waker::wake);
        Ok(())
    }

    fn close(&self) {
        let mut wake = Vec::new();
        {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.take_parked(&mut wake);
        }
        wake.into_iter().for_each(Waker::wake);
    }
}

/// One subscriber's reading position on a ring, and the batch it copied out last.
pub(crate) struct Receiver<K> {
    // `Arc`: the ring is shared by the writer and every receiver.
    ring: Arc<Ring<K>>,
    slot: usize,
    /// The position of the next message to copy out of the ring.
    next: u64,
    /// Messages copied out and not yet handed over.
    local: VecDeque<Msg<K>>,
    /// Backpressure: the position up to which messages were handed over, read by the writer
    /// when the ring is full. `Arc`: shared with the ring's slot.
    handed_over: Arc<AtomicU64>,
}

/// What a receiver gets.
pub(crate) enum Recv<K> {
    Msg(Msg<K>),
    /// The ring dropped this many messages the receiver had not read; it now reads from the
    /// newest position.
    Overflowed(u64),
    /// The writer is gone and every message has been read.
    Closed,
}

impl<K> Receiver<K> {
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv<K>> {
        if let Some(msg) = self.local.pop_front() {
            self.handed_over();
            return Poll::Ready(Recv::Msg(msg));
        }
        let mut inner = self.ring.inner.lock();
        if self.next < inner.start {
            let missed = inner.start - self.next;
            self.next = inner.end();
            drop(inner);
            self.handed_over();
            return Poll::Ready(Recv::Overflowed(missed));
        }
        let end = inner.end();
        if self.next < end {
            // Both fit in `usize`: the ring holds at most `capacity` messages.
            let from = usize::try_from(self.next - inner.start).unwrap_or(usize::MAX);
            let n = usize::try_from(end - self.next)
                .unwrap_or(usize::MAX)
                .min(BATCH);
            self.local.extend(inner.msgs.range(from..from + n).cloned());
            drop(inner);
            self.next += n as u64;
            if let Some(msg) = self.local.pop_front() {
                self.handed_over();
                return Poll::Ready(Recv::Msg(msg));
            }
            return Poll::Pending;
        }
        if inner.closed {
            return Poll::Ready(Recv::Closed);
        }
        let slot = self.slot;
        match &mut inner.wakers[slot] {
            Some(waker) => waker.clone_from(cx.waker()),
            empty @ None => {
                *empty = Some(cx.waker().clone());
                inner.parked.push(slot);
            }
        }
        Poll::Pending
    }

    /// Joins the snapshot another receiver of this (resync) ring shared, if it is still being
    /// walked, every change after it is still in the ring, and at most half a ring of changes
    /// came after it: rewinds this receiver to the first message after the snapshot and
    /// returns the snapshot and its sequence number.
    pub(crate) fn join_snapshot(&mut self) -> Option<(Arc<[Arc<K>]>, u64)> {
        if self.ring.waits {
            // Backpressure rings drop messages once handed over: nothing to rewind to.
            return None;
        }
        let inner = self.ring.inner.lock();
        let shared = inner.shared.as_ref()?;
        if shared.era != inner.era || shared.seq < inner.gap {
            return None;
        }
        let after = inner.msgs.partition_point(|msg| msg.seq <= shared.seq);
        if inner.msgs.len() - after > inner.capacity / 2 {
            return None;
        }
        let objects = shared.objects.upgrade()?;
        let seq = shared.seq;
        self.next = inner.start + after as u64;
        drop(inner);
        self.local.clear();
        Some((objects, seq))
    }

    /// Offers a snapshot this receiver took, numbered `seq`, to receivers that resync soon
    /// after. It is kept only while some subscriber walks it (a `Weak`): sharing never holds
    /// superseded objects alive.
    pub(crate) fn share_snapshot(&self, objects: &Arc<[Arc<K>]>, seq: u64) {
        if self.ring.waits {
            return;
        }
        let mut inner = self.ring.inner.lock();
        let era = inner.era;
        inner.shared = Some(SharedSnapshot {
            objects: Arc::downgrade(objects),
            seq,
            era,
        });
    }

    fn handed_over(&self) {
        if self.ring.waits {
            let position = self.next - self.local.len() as u64;
            // SeqCst both ways with the writer's `writer_waits` then cursors: either it sees
            // this position or this sees it waiting and wakes it.
            self.handed_over.store(position, Ordering::SeqCst);
            if self.ring.writer_waits.load(Ordering::SeqCst) {
                self.ring.room.wake();
            }
        }
    }
}

impl<K> Drop for Receiver<K> {
    fn drop(&mut self) {
        {
            let mut inner = self.ring.inner.lock();
            inner.wakers[self.slot] = None;
            inner.cursors[self.slot] = None;
            inner.free.push(self.slot);
            if self.ring.receivers.fetch_sub(1, Ordering::SeqCst) == 1 {
                // Nobody reads: free the buffer now rather than at the next subscriber.
                let end = inner.end();
                inner.msgs.clear();
                inner.start = end;
                inner.shared = None;
            }
        }
        // A writer waiting for this receiver may go on.
        self.ring.room.wake();
    }
}

/// The subscription side of the rings, shared by the writer and every store handle.
pub(crate) struct Hub<K> {
    // `Arc`s: the publisher pushes onto the same rings.
    resync: Arc<Ring<K>>,
    backpressure: Arc<Ring<K>>,
}

impl<K> Hub<K> {
    /// A receiver on the ring that overflows: its subscriber resyncs when it falls behind.
    pub(crate) fn resync_receiver(&self) -> Receiver<K> {
        self.resync.receiver()
    }

    /// A receiver on the ring the writer waits on.
    pub(crate) fn backpressure_receiver(&self) -> Receiver<K> {
        self.backpressure.receiver()
    }
}

/// The sending side, owned by the writer alone so that dropping it ends every subscriber.
pub(crate) struct Publisher<K> {
    resync: Arc<Ring<K>>,
    backpressure: Arc<Ring<K>>,
    /// A change not yet accepted by the backpressure ring.
    pending: Option<Msg<K>>,
    /// Wakers taken under a ring's lock, woken after it; kept to reuse its allocation.
    wake: Vec<Waker>,
}

pub(crate) fn channels<K>(capacity: usize) -> (Hub<K>, Publisher<K>) {
    let capacity = capacity.max(1);
    let resync = Arc::new(Ring::new(capacity, false));
    let backpressure = Arc::new(Ring::new(capacity, true));
    (
        Hub {
            resync: Arc::clone(&resync),
            backpressure: Arc::clone(&backpressure),
        },
        Publisher {
            resync,
            backpressure,
            pending: None,
            wake: Vec::new(),
        },
    )
}

impl<K> Publisher<K> {
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.resync.inner.lock().capacity = capacity.max(1);
        self.backpressure.inner.lock().capacity = capacity.max(1);
    }

    /// Whether anyone listens. Checked *after* a change is made visible: a subscriber that
    /// joined earlier is counted, and one joining later sees the change in its snapshot.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.resync.has_receivers() || self.backpressure.has_receivers()
    }

    /// Sends `msg` to resync subscribers (never blocks: a full ring drops its oldest message)
    /// and queues it for backpressure subscribers. The previous pending message must have
    /// been flushed.
    pub(crate) fn publish(&mut self, msg: Msg<K>) {
        if self.backpressure.receivers.load(Ordering::Relaxed) > 0 {
            self.pending = Some(msg.clone());
        }
        self.resync.push_overflowing(msg, &mut self.wake);
    }

    /// Tries to hand the pending message to backpressure subscribers; `Pending` (with `cx`
    /// registered to be woken when one hands a message over) while one of them is full.
    #[inline]
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Inline, the common case (nothing queued): polled before and after every event.
        if self.pending.is_none() {
            return Poll::Ready(());
        }
        self.poll_flush_pending(cx)
    }

    fn poll_flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(msg) = self.pending.take() else {
            return Poll::Ready(());
        };
        let ring = &self.backpressure;
        let Err(msg) = ring.try_push(msg, &mut self.wake) else {
            // A wait given up earlier (a cancelled `apply_async`) no longer needs waking.
            if ring.writer_waits.load(Ordering::Relaxed) {
                ring.writer_waits.store(false, Ordering::Relaxed);
            }
            return Poll::Ready(());
        };
        // Register, then say so, then try again: room made in between is seen or wakes us.
        ring.room.register(cx.waker());
        ring.writer_waits.store(true, Ordering::SeqCst);
        match ring.try_push(msg, &mut self.wake) {
            Ok(()) => {
                ring.writer_waits.store(false, Ordering::Relaxed);
                Poll::Ready(())
            }
            Err(msg) => {
                self.pending = Some(msg);
                Poll::Pending
            }
        }
    }

    /// Delivers the pending message without waiting: if a backpressure subscriber is full,
    /// the oldest message is dropped, so it resyncs.
    pub(crate) fn force_flush(&mut self) {
        let Some(msg) = self.pending.take() else {
            return;
        };
        if let Err(msg) = self.backpressure.try_push(msg, &mut self.wake) {
            tracing::warn!(
                "a backpressure subscriber is full on a path that cannot wait; it will be resynced"
            );
            self.backpressure.push_overflowing(msg, &mut self.wake);
        }
    }
}

impl<K> Drop for Publisher<K> {
    fn drop(&mut self) {
        self.resync.close();
        self.backpressure.close();
    }
}

// For metrics: the live subscribers, counted without touching the rings' queues.
#[cfg(feature = "metrics")]
impl<K> Hub<K> {
    pub(crate) fn subscribers(&self) -> usize {
        self.resync.receivers.load(Ordering::Relaxed)
            + self.backpressure.receivers.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
impl<K> Publisher<K> {
    /// Messages held by the (resync, backpressure) rings.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        let backpressure = {
            let mut inner = self.backpressure.inner.lock();
            inner.trim_handed_over();
            inner.msgs.len()
        };
        (self.resync.inner.lock().msgs.len(), backpressure)
    }
}

impl<K> fmt::Debug for Publisher<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field(
                "resync_subscribers",
                &self.resync.receivers.load(Ordering::Relaxed),
            )
            .field(
                "backpressure_subscribers",
                &self.backpressure.receivers.load(Ordering::Relaxed),
            )
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}
