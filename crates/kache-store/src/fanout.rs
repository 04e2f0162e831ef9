//! Fan-out plumbing: the change messages, the channels that carry them, and publishing.
//!
//! Each change the writer makes visible gets a sequence number, stored with the objects under
//! the same lock (see `State::seq`). The writer broadcasts the change, tagged with its number,
//! on a bounded channel *after* making it visible; [`Subscriber`](crate::Subscriber), the
//! consumer side, explains how a subscriber uses the numbers to join without missing or
//! repeating a change. Two channels: one that overflows (resync subscribers) and one the
//! writer waits on (backpressure subscribers).
//!
//! This module knows nothing of the store: a [`Hub`] lives with the state every handle shares
//! and hands out receivers, a [`Publisher`] lives with the writer alone.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_broadcast::{InactiveReceiver, Receiver, Sender};
use futures::task::AtomicWaker;
use kache_watch::Event;
use tracing::debug;

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

/// The subscription side of the channels, shared by the writer and every store handle.
pub(crate) struct Hub<K> {
    /// Inactive receivers keep the channels open with no subscriber and let any store handle
    /// subscribe later; they hold no messages, so they cost nothing.
    resync: InactiveReceiver<Msg<K>>,
    backpressure: InactiveReceiver<Msg<K>>,
    /// Wakes a writer waiting for a backpressure subscriber to make room.
    room: AtomicWaker,
}

impl<K> Hub<K> {
    /// A receiver on the channel that overflows: its subscriber resyncs when it falls behind.
    pub(crate) fn resync_receiver(&self) -> Receiver<Msg<K>> {
        self.resync.activate_cloned()
    }

    /// A receiver on the channel the writer waits on.
    pub(crate) fn backpressure_receiver(&self) -> Receiver<Msg<K>> {
        self.backpressure.activate_cloned()
    }

    /// Tells a writer waiting for a backpressure subscriber that a slot may have been freed.
    pub(crate) fn made_room(&self) {
        self.room.wake();
    }
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
    pub(crate) fn poll_flush(&mut self, hub: &Hub<K>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(msg) = self.pending.take() else {
            return Poll::Ready(());
        };
        // Register before trying, so room freed in between still wakes us.
        hub.room.register(cx.waker());
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

// For metrics: the live subscribers, counted without touching the channels' queues.
#[cfg(feature = "metrics")]
impl<K> Hub<K> {
    pub(crate) fn subscribers(&self) -> usize {
        self.resync.receiver_count() + self.backpressure.receiver_count()
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
