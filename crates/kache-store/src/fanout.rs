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
//!
//! The wake-up handshakes (a receiver parks its waker, the writer pushes and wakes; the writer
//! waits for room, a receiver hands a message over and wakes it; a receiver leaves while the
//! writer pushes) are model-checked with loom over every interleaving: build the crate's
//! tests with `--cfg kache_loom` (see the `test` recipe of the justfile).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use kache_watch::Event;
use tracing::debug;

use self::sync::{AtomicBool, AtomicU64, AtomicUsize, AtomicWaker, Mutex, fence, seq_cst_pair};

/// The primitives the handshakes are built on: `parking_lot`'s mutex and the standard atomics.
#[cfg(not(all(test, kache_loom)))]
mod sync {
    pub(super) use futures::task::AtomicWaker;
    pub(super) use parking_lot::Mutex;
    pub(super) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};

    /// Between a `SeqCst` store and a `SeqCst` load of another atomic: nothing, the two
    /// accesses are ordered already (see the loom version).
    #[inline(always)]
    pub(super) fn seq_cst_pair() {}
}

/// Loom's models of the same primitives, with the API the module uses (`lock` unwraps: a
/// poisoned lock means a model has failed already).
#[cfg(all(test, kache_loom))]
mod sync {
    use std::task::Waker;

    pub(super) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};

    /// Loom models `SeqCst` loads and stores as acquire and release only (a limitation it
    /// documents), so a store-then-load handshake that `SeqCst` on both sides makes sound
    /// would deadlock in the model; its `SeqCst` fence gives back the order the real
    /// accesses have.
    pub(super) fn seq_cst_pair() {
        fence(std::sync::atomic::Ordering::SeqCst);
    }

    #[derive(Debug)]
    pub(super) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(super) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(super) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().expect("no panic while locked")
        }
    }

    /// The contract of `futures`' `AtomicWaker` (a `wake` after a `register` wakes the waker
    /// registered last), modelled with a mutex: loom's own prints a trace on every call.
    #[derive(Debug)]
    pub(super) struct AtomicWaker(Mutex<Option<Waker>>);

    impl AtomicWaker {
        pub(super) fn new() -> Self {
            Self(Mutex::new(None))
        }

        pub(super) fn register(&self, waker: &Waker) {
            *self.0.lock() = Some(waker.clone());
        }

        pub(super) fn wake(&self) {
            let waker = self.0.lock().take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

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
    /// One per live receiver (a dropped receiver's slot is reused by the next one): this list,
    /// `parked` and `free` never outgrow the most receivers live at once.
    slots: Vec<Slot>,
    /// The slots whose waker is set, so that waking costs nothing per receiver that is busy.
    /// Exactly those: a receiver leaving takes its slot out, in constant time.
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

/// A receiver's place in its ring.
struct Slot {
    /// The waker of a receiver that has read everything, with the slot's index in `parked`.
    waker: Option<(Waker, usize)>,
    /// Backpressure only: how far the receiver has handed messages over to its subscriber.
    cursor: Option<Arc<AtomicU64>>,
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
            if let Some((waker, _)) = self.slots[slot].waker.take() {
                into.push(waker);
            }
        }
    }

    /// Frees `slot` for the next receiver, taking it out of `parked` (by swapping the last
    /// parked slot into its place); returns its waker, to be dropped after the lock.
    fn leave(&mut self, slot: usize) -> Option<Waker> {
        let Slot { waker, cursor } = &mut self.slots[slot];
        *cursor = None;
        let (waker, at) = waker.take()?;
        self.parked.swap_remove(at);
        if let Some(&moved) = self.parked.get(at)
            && let Some((_, moved_at)) = &mut self.slots[moved].waker
        {
            *moved_at = at;
        }
        Some(waker)
    }

    /// Drops the messages every backpressure receiver has handed over.
    fn trim_handed_over(&mut self) {
        let oldest = self
            .slots
            .iter()
            .filter_map(|slot| slot.cursor.as_ref())
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
                slots: Vec::new(),
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
        let joined = Slot {
            waker: None,
            cursor: self.waits.then(|| Arc::clone(&cursor)),
        };
        let slot = if let Some(slot) = inner.free.pop() {
            inner.slots[slot] = joined;
            slot
        } else {
            inner.slots.push(joined);
            inner.slots.len() - 1
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
        let (slot, at) = (self.slot, inner.parked.len());
        match &mut inner.slots[slot].waker {
            Some((waker, _)) => waker.clone_from(cx.waker()),
            empty @ None => {
                *empty = Some((cx.waker().clone(), at));
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
            seq_cst_pair();
            if self.ring.writer_waits.load(Ordering::SeqCst) {
                self.ring.room.wake();
            }
        }
    }
}

impl<K> Drop for Receiver<K> {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.ring.inner.lock();
            let waker = inner.leave(self.slot);
            inner.free.push(self.slot);
            if self.ring.receivers.fetch_sub(1, Ordering::SeqCst) == 1 {
                // Nobody reads: free the buffer now rather than at the next subscriber.
                let end = inner.end();
                inner.msgs.clear();
                inner.start = end;
                inner.shared = None;
            }
            waker
        };
        drop(waker);
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
    /// Changes not yet accepted by the backpressure ring, oldest first. Callers flush after
    /// each event, so this holds at most the few changes one event publishes (`Sources` makes
    /// a batch and then readiness visible in one): a queue, so that none is ever lost.
    pending: VecDeque<Msg<K>>,
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
            pending: VecDeque::new(),
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
    /// and queues it for backpressure subscribers, after any change still queued.
    pub(crate) fn publish(&mut self, msg: Msg<K>) {
        if self.backpressure.receivers.load(Ordering::Relaxed) > 0 {
            self.pending.push_back(msg.clone());
        }
        self.resync.push_overflowing(msg, &mut self.wake);
    }

    /// Tries to hand the queued changes to backpressure subscribers, in order; `Pending` (with
    /// `cx` registered to be woken when one hands a message over) while one of them is full.
    #[inline]
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Inline, the common case (nothing queued): polled before and after every event.
        if self.pending.is_empty() {
            return Poll::Ready(());
        }
        self.poll_flush_pending(cx)
    }

    fn poll_flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let ring = &self.backpressure;
        while let Some(msg) = self.pending.pop_front() {
            let Err(msg) = ring.try_push(msg, &mut self.wake) else {
                continue;
            };
            // Register, then say so, then try again: room made in between is seen or wakes us.
            ring.room.register(cx.waker());
            ring.writer_waits.store(true, Ordering::SeqCst);
            seq_cst_pair();
            if let Err(msg) = ring.try_push(msg, &mut self.wake) {
                self.pending.push_front(msg);
                return Poll::Pending;
            }
        }
        // A wait that is over, or given up earlier (a cancelled `apply_async`), no longer
        // needs waking.
        if ring.writer_waits.load(Ordering::Relaxed) {
            ring.writer_waits.store(false, Ordering::Relaxed);
        }
        Poll::Ready(())
    }

    /// Delivers the queued changes without waiting: if a backpressure subscriber is full, the
    /// oldest message is dropped, so it resyncs.
    pub(crate) fn force_flush(&mut self) {
        while let Some(msg) = self.pending.pop_front() {
            if let Err(msg) = self.backpressure.try_push(msg, &mut self.wake) {
                tracing::warn!(
                    "a backpressure subscriber is full on a path that cannot wait; it will be resynced"
                );
                self.backpressure.push_overflowing(msg, &mut self.wake);
            }
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

#[cfg(test)]
impl<K> Hub<K> {
    /// Parked wakers and receiver slots, summed over both rings.
    pub(crate) fn parked_and_slots(&self) -> (usize, usize) {
        [&self.resync, &self.backpressure]
            .into_iter()
            .map(|ring| {
                let inner = ring.inner.lock();
                (inner.parked.len(), inner.slots.len())
            })
            .fold((0, 0), |(parked, slots), (p, s)| (parked + p, slots + s))
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
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The handshakes, over every interleaving loom makes of them: two or three threads and one or
/// two messages, so that each model runs to the end of its state space in about a second at
/// most (release build). A lost wake-up leaves a thread blocked forever, which loom reports as
/// a deadlock.
#[cfg(all(test, kache_loom))]
mod loom_tests {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::task::{Context, Waker};

    use kache_watch::Event;
    use loom::future::block_on;
    use loom::thread;

    use super::{Msg, Receiver, Recv, channels};

    fn msg(seq: u64) -> Msg<u64> {
        Msg::one(seq, Event::Apply(Arc::new(seq)))
    }

    /// The sequence numbers `rx` gets until the writer is gone (or `limit` of them), waiting
    /// for each as a subscriber does.
    fn recv(rx: &mut Receiver<u64>, limit: usize) -> Vec<u64> {
        let mut seen = Vec::new();
        while seen.len() < limit {
            match block_on(poll_fn(|cx| rx.poll_recv(cx))) {
                Recv::Msg(msg) => seen.push(msg.seq),
                Recv::Overflowed(missed) => panic!("overflowed by {missed}"),
                Recv::Closed => break,
            }
        }
        seen
    }

    #[test]
    fn loom_parked_receiver_is_woken_by_a_publish() {
        loom::model(|| {
            let (hub, mut publisher) = channels(4);
            let mut rx = hub.resync_receiver();
            let reader = thread::spawn(move || recv(&mut rx, 1));
            publisher.publish(msg(1));
            assert_eq!(reader.join().unwrap(), [1]);
        });
    }

    #[test]
    fn loom_two_receivers_both_get_one_publish() {
        loom::model(|| {
            let (hub, mut publisher) = channels(4);
            let mut resync = hub.resync_receiver();
            let mut backpressure = hub.backpressure_receiver();
            let a = thread::spawn(move || recv(&mut resync, 1));
            let b = thread::spawn(move || recv(&mut backpressure, 1));
            publisher.publish(msg(1));
            block_on(poll_fn(|cx| publisher.poll_flush(cx)));
            assert_eq!(a.join().unwrap(), [1]);
            assert_eq!(b.join().unwrap(), [1]);
        });
    }

    #[test]
    fn loom_receiver_leaving_during_a_publish_leaves_no_slot_behind() {
        loom::model(|| {
            let (hub, mut publisher) = channels(4);
            let mut rx = hub.resync_receiver();
            let leaver = thread::spawn(move || {
                // Parks, or reads the message if the publish came first; then leaves.
                let _ = rx.poll_recv(&mut Context::from_waker(Waker::noop()));
            });
            publisher.publish(msg(1));
            leaver.join().unwrap();
            assert_eq!(hub.parked_and_slots(), (0, 1));
            let mut next = hub.resync_receiver();
            let _ = next.poll_recv(&mut Context::from_waker(Waker::noop()));
            assert_eq!(hub.parked_and_slots(), (1, 1), "the slot is reused");
        });
    }

    #[test]
    fn loom_writer_waiting_for_room_is_woken_by_a_hand_over() {
        loom::model(|| {
            let (hub, mut publisher) = channels(1);
            let mut rx = hub.backpressure_receiver();
            publisher.publish(msg(1));
            block_on(poll_fn(|cx| publisher.poll_flush(cx)));
            // The ring is full: the second message waits until the reader hands the first over.
            let reader = thread::spawn(move || recv(&mut rx, 2));
            publisher.publish(msg(2));
            block_on(poll_fn(|cx| publisher.poll_flush(cx)));
            assert_eq!(reader.join().unwrap(), [1, 2]);
        });
    }

    #[test]
    fn loom_backpressure_receiver_leaving_releases_a_waiting_writer() {
        loom::model(|| {
            let (hub, mut publisher) = channels(1);
            let mut rx = hub.backpressure_receiver();
            publisher.publish(msg(1));
            block_on(poll_fn(|cx| publisher.poll_flush(cx)));
            let leaver = thread::spawn(move || {
                let _ = rx.poll_recv(&mut Context::from_waker(Waker::noop()));
            });
            // The ring is full until the receiver hands the first message over or leaves.
            publisher.publish(msg(2));
            block_on(poll_fn(|cx| publisher.poll_flush(cx)));
            leaver.join().unwrap();
            assert_eq!(hub.parked_and_slots(), (0, 1));
        });
    }
}
