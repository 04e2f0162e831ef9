//! Change streams for any number of readers sharing one writer.
//!
//! Each change the writer makes visible gets a sequence number, stored with the objects under
//! the same lock. The writer broadcasts the change, tagged with its number, on a bounded
//! channel *after* making it visible. A subscriber takes a snapshot and its number in one read
//! of the store and then skips every message numbered at or below it: a message numbered
//! above it was sent after the snapshot, so the subscriber's receiver (created before the
//! snapshot) holds it, unless it overflowed, in which case the subscriber resyncs.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use async_broadcast::{InactiveReceiver, Receiver, RecvError, Sender};
use futures::Stream;
use futures::task::AtomicWaker;
use kache_watch::Event;
use tokio::sync::watch;
use tracing::debug;

use crate::error::{Error, Result};
use crate::store::Shared;

/// How many changes a subscriber can fall behind by default; see
/// [`Writer::with_buffer`](crate::Writer::with_buffer).
pub const DEFAULT_BUFFER: usize = 1024;

/// What happens when a subscriber falls a full buffer behind the writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivery {
    /// The subscriber skips what it missed and is resynced: on its next poll it receives a
    /// fresh `Init`, `InitApply`*, `InitDone` snapshot of the store, then live changes again.
    /// It loses no state, the writer never waits for it, and its memory stays bounded.
    #[default]
    Resync,
    /// The writer waits for the subscriber, which receives every change, in order.
    ///
    /// Only the asynchronous paths wait: [`reflect`](crate::ReflectExt::reflect) and
    /// [`Writer::apply_async`](crate::Writer::apply_async). The synchronous
    /// [`Writer::apply`](crate::Writer::apply) never blocks: if a backpressure subscriber is
    /// full when it runs, that subscriber is resynced like a [`Delivery::Resync`] one.
    Backpressure,
}

/// A change message: its sequence number and its events.
pub(crate) struct Msg<K> {
    seq: u64,
    payload: Payload<K>,
}

/// One event for a live change, or the batch of a relist (which may be empty when it only
/// announces readiness). `Arc<[_]>` so every subscriber shares one batch.
enum Payload<K> {
    One(Event<Arc<K>>),
    Many(Batch<K>),
}

type Batch<K> = Arc<[Event<Arc<K>>]>;

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

/// The subscription side of the channels, shared by the writer and every store handle.
pub(crate) struct Hub<K> {
    /// Inactive receivers keep the channels open with no subscriber and let any store handle
    /// subscribe later; they hold no messages, so they cost nothing.
    resync: InactiveReceiver<Msg<K>>,
    backpressure: InactiveReceiver<Msg<K>>,
    /// Wakes a writer waiting for a backpressure subscriber to make room.
    pub(crate) room: AtomicWaker,
}

/// The sending side, owned by the writer alone so that dropping it ends every subscriber.
pub(crate) struct Publisher<K> {
    resync: Sender<Msg<K>>,
    backpressure: Sender<Msg<K>>,
    /// A change not yet accepted by the backpressure channel.
    pending: Option<Msg<K>>,
}

pub(crate) fn channels<K>(capacity: usize) -> (Hub<K>, Publisher<K>) {
    let capacity = capacity.max(1);
    let (mut resync, resync_rx) = async_broadcast::broadcast(capacity);
    resync.set_overflow(true);
    resync.set_await_active(false);
    let (mut backpressure, backpressure_rx) = async_broadcast::broadcast(capacity);
    backpressure.set_await_active(false);
    (
        Hub {
            resync: resync_rx.deactivate(),
            backpressure: backpressure_rx.deactivate(),
            room: AtomicWaker::new(),
        },
        Publisher {
            resync,
            backpressure,
            pending: None,
        },
    )
}

impl<K> Publisher<K> {
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.resync.set_capacity(capacity.max(1));
        self.backpressure.set_capacity(capacity.max(1));
    }

    /// Whether anyone listens. Checked *after* a change is made visible: a subscriber that
    /// joined earlier is counted, and one joining later sees the change in its snapshot.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.resync.receiver_count() > 0 || self.backpressure.receiver_count() > 0
    }

    /// Sends `msg` to resync subscribers (never blocks: overflow drops their oldest message)
    /// and queues it for backpressure subscribers. The previous pending message must have
    /// been flushed.
    pub(crate) fn publish(&mut self, msg: Msg<K>) {
        if self.backpressure.receiver_count() > 0 {
            self.pending = Some(msg.clone());
        }
        if let Ok(Some(_)) = self.resync.try_broadcast(msg) {
            debug!("a subscriber fell a full buffer behind and will be resynced");
        }
    }

    /// Tries to hand the pending message to backpressure subscribers; `Pending` (with `cx`
    /// registered on `room`) while one of them is full.
    pub(crate) fn poll_flush(&mut self, room: &AtomicWaker, cx: &mut Context<'_>) -> Poll<()> {
        let Some(msg) = self.pending.take() else {
            return Poll::Ready(());
        };
        // Register before trying, so room freed in between still wakes us.
        room.register(cx.waker());
        match self.backpressure.try_broadcast(msg) {
            Err(async_broadcast::TrySendError::Full(msg)) => {
                self.pending = Some(msg);
                Poll::Pending
            }
            // Delivered, or nobody left to deliver to.
            _ => Poll::Ready(()),
        }
    }

    /// Delivers the pending message without waiting: if a backpressure subscriber is full,
    /// its oldest message is dropped, so it resyncs.
    pub(crate) fn force_flush(&mut self) {
        let Some(msg) = self.pending.take() else {
            return;
        };
        if let Err(async_broadcast::TrySendError::Full(msg)) = self.backpressure.try_broadcast(msg)
        {
            tracing::warn!(
                "a backpressure subscriber is full on a path that cannot wait; it will be resynced"
            );
            self.backpressure.set_overflow(true);
            let _ = self.backpressure.try_broadcast(msg);
            self.backpressure.set_overflow(false);
        }
    }
}

#[cfg(test)]
impl<K> Publisher<K> {
    /// Messages held by the (resync, backpressure) channels.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.resync.len(), self.backpressure.len())
    }
}

impl<K> fmt::Debug for Publisher<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("resync_subscribers", &self.resync.receiver_count())
            .field(
                "backpressure_subscribers",
                &self.backpressure.receiver_count(),
            )
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

/// A stream of the changes to a store, speaking the same [`Event`] protocol as the watcher.
///
/// It opens with the store's state as `Init`, `InitApply`*, `InitDone` (once the store is
/// ready), then yields `Apply` and `Delete` as the store changes, including a `Delete` for
/// each object a relist reveals as gone and an `Apply` for each object a relist adds or
/// changes. A relist's own `Init`/`InitApply` events are never forwarded. It ends when the
/// [`Writer`](crate::Writer) is dropped, after the changes already buffered for it.
///
/// Created by [`Store::subscribe`](crate::Store::subscribe) or
/// [`Writer::subscribe`](crate::Writer::subscribe). Dropping it frees its buffer at once.
pub struct Subscriber<K> {
    // Declared first so it is dropped before `_room` wakes the writer: by then the buffer
    // it held has been released.
    rx: Receiver<Msg<K>>,
    _room: RoomGuard<K>,
    // `Arc`: a subscriber reads snapshots from the same state as every store handle.
    shared: Arc<Shared<K>>,
    delivery: Delivery,
    phase: Phase<K>,
    /// Messages numbered at or below this are already in the last snapshot.
    snapshot_seq: u64,
    /// The number of the last change this subscriber has taken in (for `lag`).
    delivered_seq: u64,
    /// A relist batch being delivered, and the index of its next event.
    batch: Option<(Batch<K>, usize)>,
    synced: watch::Sender<bool>,
    // `Arc`: shared with every `SubscriberHandle`.
    stats: Arc<Stats>,
}

enum Phase<K> {
    NeedSnapshot,
    Snapshot(std::vec::IntoIter<Arc<K>>),
    Live,
}

#[derive(Default)]
struct Stats {
    resyncs: AtomicU64,
}

/// Wakes a writer waiting on a backpressure subscriber when that subscriber goes away.
struct RoomGuard<K> {
    shared: Option<Arc<Shared<K>>>,
}

impl<K> Drop for RoomGuard<K> {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.hub.room.wake();
        }
    }
}

impl<K> Subscriber<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>, delivery: Delivery) -> Self {
        // The receiver is created before any snapshot is taken; see the module docs.
        let rx = match delivery {
            Delivery::Resync => shared.hub.resync.activate_cloned(),
            Delivery::Backpressure => shared.hub.backpressure.activate_cloned(),
        };
        let room = RoomGuard {
            shared: (delivery == Delivery::Backpressure).then(|| Arc::clone(&shared)),
        };
        Self {
            rx,
            _room: room,
            shared,
            delivery,
            phase: Phase::NeedSnapshot,
            snapshot_seq: 0,
            delivered_seq: 0,
            batch: None,
            synced: watch::Sender::new(false),
            stats: Arc::default(),
        }
    }

    /// A handle to follow this subscriber from elsewhere (readiness, resyncs).
    #[must_use]
    pub fn handle(&self) -> SubscriberHandle {
        SubscriberHandle {
            synced: self.synced.subscribe(),
            stats: Arc::clone(&self.stats),
        }
    }

    /// Whether this subscriber has yielded the `InitDone` of its first snapshot.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// How many times this subscriber fell behind and was resynced.
    #[must_use]
    pub fn resyncs(&self) -> u64 {
        self.stats.resyncs.load(Ordering::Relaxed)
    }

    /// How many changes (applies, deletes, relists) the store has made visible that this
    /// subscriber has not yet taken in. Zero when caught up; before its first snapshot, the
    /// number of changes the store has made.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.shared
            .state
            .read()
            .seq
            .saturating_sub(self.delivered_seq)
    }

    /// The delivery policy of this subscriber.
    #[must_use]
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    fn received(&self) {
        if self.delivery == Delivery::Backpressure {
            // A slot may have been freed: let a waiting writer retry.
            self.shared.hub.room.wake();
        }
    }

    fn next_in_batch(&mut self) -> Option<Event<Arc<K>>> {
        let (events, next) = self.batch.as_mut()?;
        let event = events.get(*next).cloned();
        *next += 1;
        if event.is_none() {
            self.batch = None;
        }
        event
    }
}

impl<K> Stream for Subscriber<K> {
    type Item = Event<Arc<K>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::NeedSnapshot => {
                    // Objects and their sequence number are read under one lock.
                    let snapshot = {
                        let state = this.shared.state.read();
                        state.ready.then(|| {
                            (
                                state.objects.values().cloned().collect::<Vec<_>>(),
                                state.seq,
                            )
                        })
                    };
                    if let Some((objects, seq)) = snapshot {
                        this.snapshot_seq = seq;
                        this.batch = None;
                        this.phase = Phase::Snapshot(objects.into_iter());
                        return Poll::Ready(Some(Event::Init));
                    }
                    // Not ready: the writer sends a message when the store becomes ready.
                    match ready!(Pin::new(&mut this.rx).poll_recv(cx)) {
                        Some(_) => this.received(),
                        None => return Poll::Ready(None),
                    }
                }
                Phase::Snapshot(objects) => {
                    if let Some(obj) = objects.next() {
                        return Poll::Ready(Some(Event::InitApply(obj)));
                    }
                    this.phase = Phase::Live;
                    this.delivered_seq = this.snapshot_seq;
                    this.synced.send_replace(true);
                    return Poll::Ready(Some(Event::InitDone));
                }
                Phase::Live => {
                    if let Some(event) = this.next_in_batch() {
                        return Poll::Ready(Some(event));
                    }
                    match ready!(Pin::new(&mut this.rx).poll_recv(cx)) {
                        None | Some(Err(RecvError::Closed)) => return Poll::Ready(None),
                        Some(Err(RecvError::Overflowed(missed))) => {
                            this.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                            debug!(missed, "subscriber fell behind; resyncing");
                            this.phase = Phase::NeedSnapshot;
                        }
                        Some(Ok(msg)) => {
                            this.received();
                            if msg.seq <= this.snapshot_seq {
                                continue;
                            }
                            this.delivered_seq = msg.seq;
                            match msg.payload {
                                Payload::One(event) => return Poll::Ready(Some(event)),
                                Payload::Many(events) => this.batch = Some((events, 0)),
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<K> fmt::Debug for Subscriber<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("delivery", &self.delivery)
            .field("synced", &self.is_synced())
            .field("resyncs", &self.resyncs())
            .field("delivered_seq", &self.delivered_seq)
            .finish_non_exhaustive()
    }
}

/// A cloneable handle on a [`Subscriber`]: whether it has consumed its initial state (like
/// client-go's per-handler `HasSynced`) and how often it was resynced.
#[derive(Clone)]
pub struct SubscriberHandle {
    synced: watch::Receiver<bool>,
    // `Arc`: the counters live with the subscriber, which may be on another task.
    stats: Arc<Stats>,
}

impl SubscriberHandle {
    /// Whether the subscriber has yielded the `InitDone` of its first snapshot. Never goes
    /// back to `false`, even while a later resync is being delivered.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the subscriber has yielded the `InitDone` of its first snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::SubscriberDropped`] if the subscriber is dropped before that.
    pub async fn synced(&self) -> Result<()> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|synced| *synced)
            .await
            .map(drop)
            .map_err(|_| Error::SubscriberDropped)
    }

    /// How many times the subscriber fell behind and was resynced.
    #[must_use]
    pub fn resyncs(&self) -> u64 {
        self.stats.resyncs.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for SubscriberHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberHandle")
            .field("synced", &self.is_synced())
            .field("resyncs", &self.resyncs())
            .finish()
    }
}
