//! The consumer side of the fan-out: change streams for any number of readers sharing one
//! writer, and handles to follow them.
//!
//! Each change the writer makes visible gets a sequence number, stored with the objects under
//! the same lock; the writer broadcasts it, tagged with its number, *after* making it visible
//! (see the `fanout` module). A subscriber takes a snapshot and its number in one read
//! of the store and then skips every message numbered at or below it: a message numbered
//! above it was sent after the snapshot, so the subscriber's receiver (created before the
//! snapshot) holds it, unless it overflowed, in which case the subscriber resyncs.
//!
//! A resync may instead take the snapshot another subscriber of the same ring took shortly
//! before (see `Receiver::join_snapshot`): its receiver is then moved back to the first
//! message numbered above that snapshot, which the ring still holds (that is the condition for
//! sharing it), and the same skipping rule applies from there.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use futures::Stream;
use kache_watch::Event;
use kube_client::Resource;
use tokio::sync::watch;
use tracing::debug;

use crate::error::{Error, Result};
use crate::fanout::{Batch, Payload, Receiver, Recv};
use crate::shared::Shared;
use crate::version::ResourceVersion;
use crate::wait::{Handover, Stats, Target};

/// How many changes a subscriber can fall behind by default; see
/// [`Writer::with_buffer`](crate::Writer::with_buffer).
pub const DEFAULT_BUFFER: usize = 1024;

/// What happens when a subscriber falls a full buffer behind the writer.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::{Delivery, Writer};
///
/// let writer = Writer::<ConfigMap>::new();
/// // A cache that only needs the current state: resynced when it falls behind.
/// let view = writer.subscribe();
/// // An audit log that needs every change: the writer waits for it.
/// let audit = writer.subscribe_with(Delivery::Backpressure);
/// assert_eq!((view.delivery(), audit.delivery()), (Delivery::Resync, Delivery::Backpressure));
/// ```
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
    rx: Receiver<K>,
    // `Arc`: a subscriber reads snapshots from the same state as every store handle.
    pub(crate) shared: Arc<Shared<K>>,
    delivery: Delivery,
    phase: Phase<K>,
    /// Messages numbered at or below this are already in the last snapshot.
    snapshot_seq: u64,
    /// The number of the last change this subscriber has taken in (for `lag`).
    delivered_seq: u64,
    /// A relist batch being delivered, and the index of its next event.
    batch: Option<(Batch<K>, usize)>,
    synced: watch::Sender<bool>,
    // `Arc`: shared with every `SubscriberHandle` (and metrics).
    pub(crate) stats: Arc<Stats>,
    // `Arc`: shared with every `SubscriberHandle`, whose waits follow it (and metrics).
    pub(crate) handover: Arc<Handover>,
}

enum Phase<K> {
    NeedSnapshot,
    /// A snapshot (possibly shared with other subscribers) and the index of its next object.
    Snapshot(Arc<[Arc<K>]>, usize),
    Live,
}

impl<K> Subscriber<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>, delivery: Delivery) -> Self {
        // The receiver is created before any snapshot is taken; see the module docs.
        let rx = match delivery {
            Delivery::Resync => shared.hub.resync_receiver(),
            Delivery::Backpressure => shared.hub.backpressure_receiver(),
        };
        Self {
            rx,
            shared,
            delivery,
            phase: Phase::NeedSnapshot,
            snapshot_seq: 0,
            delivered_seq: 0,
            batch: None,
            synced: watch::Sender::new(false),
            stats: Arc::default(),
            handover: Arc::default(),
        }
    }

    /// A handle to follow this subscriber from elsewhere (readiness, resyncs, waits for its
    /// consumer to see a write).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::Writer;
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// let subscriber = writer.subscribe();
    /// let handle = subscriber.handle(); // cloneable; the subscriber moves to its own task
    /// assert!(!handle.is_synced());
    /// ```
    #[must_use]
    pub fn handle(&self) -> SubscriberHandle<K> {
        SubscriberHandle {
            synced: self.synced.subscribe(),
            stats: Arc::clone(&self.stats),
            shared: Arc::clone(&self.shared),
            handover: Arc::clone(&self.handover),
        }
    }

    /// Whether this subscriber has yielded the `InitDone` of its first snapshot.
    ///
    /// ```
    /// use futures::{FutureExt, StreamExt};
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let mut subscriber = writer.subscribe();
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// assert!(!subscriber.is_synced(), "the store is, but it has not yielded its snapshot yet");
    /// while subscriber.next().now_or_never().flatten().is_some() {}
    /// assert!(subscriber.is_synced());
    /// ```
    #[must_use]
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// How many times this subscriber fell behind and was resynced.
    ///
    /// See [`Writer::with_buffer`](crate::Writer::with_buffer) for a subscriber that falls
    /// behind and is resynced.
    #[must_use]
    pub fn resyncs(&self) -> u64 {
        self.stats.resyncs.load(Ordering::Relaxed)
    }

    /// How many changes (applies, deletes, relists) the store has made visible that this
    /// subscriber has not yet taken in. Zero when caught up; before its first snapshot, the
    /// number of changes the store has made.
    ///
    /// ```
    /// use futures::{FutureExt, StreamExt};
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let mut subscriber = writer.subscribe();
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// assert_eq!(subscriber.lag(), 1, "the first sync, not yet taken in");
    /// while subscriber.next().now_or_never().flatten().is_some() {}
    /// assert_eq!(subscriber.lag(), 0);
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("a".into());
    /// writer.apply(Event::Apply(cm));
    /// assert_eq!(subscriber.lag(), 1);
    /// ```
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.shared
            .state
            .read()
            .seq
            .saturating_sub(self.delivered_seq)
    }

    /// The delivery policy of this subscriber.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Delivery, Writer};
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// assert_eq!(writer.subscribe().delivery(), Delivery::Resync);
    /// ```
    #[must_use]
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The next event of the relist batch being delivered, if any. Handing over the last one
    /// (or finding the batch empty) completes the change numbered `delivered_seq`.
    fn next_in_batch(&mut self) -> Option<Event<Arc<K>>> {
        let (events, next) = self.batch.as_mut()?;
        let event = events.get(*next).cloned();
        *next += 1;
        if *next >= events.len() {
            self.batch = None;
            self.handover.handed_over(self.delivered_seq);
        }
        event
    }
}

impl<K> Drop for Subscriber<K> {
    fn drop(&mut self) {
        // Waits on its handles can no longer be met.
        self.handover.waiters.close();
    }
}

impl<K> Stream for Subscriber<K> {
    type Item = Event<Arc<K>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::NeedSnapshot => {
                    // A snapshot another subscriber took moments ago, with the changes after
                    // it replayed from the ring, or a fresh one: objects and their sequence
                    // number read under one lock.
                    let snapshot = this.rx.join_snapshot().or_else(|| {
                        let (objects, seq) = {
                            let state = this.shared.state.read();
                            if !state.ready {
                                return None;
                            }
                            (
                                state.objects.values().cloned().collect::<Vec<_>>(),
                                state.seq,
                            )
                        };
                        // Made shareable after the lock is released.
                        let objects: Arc<[_]> = objects.into();
                        this.rx.share_snapshot(&objects, seq);
                        Some((objects, seq))
                    });
                    if let Some((objects, seq)) = snapshot {
                        this.snapshot_seq = seq;
                        this.batch = None;
                        this.phase = Phase::Snapshot(objects, 0);
                        return Poll::Ready(Some(Event::Init));
                    }
                    // Not ready: the writer sends a message when the store becomes ready.
                    match ready!(this.rx.poll_recv(cx)) {
                        Recv::Msg(_) | Recv::Overflowed(_) => {}
                        Recv::Closed => return Poll::Ready(None),
                    }
                }
                Phase::Snapshot(objects, next) => {
                    if let Some(obj) = objects.get(*next) {
                        *next += 1;
                        return Poll::Ready(Some(Event::InitApply(Arc::clone(obj))));
                    }
                    this.phase = Phase::Live;
                    this.delivered_seq = this.snapshot_seq;
                    this.synced.send_replace(true);
                    this.handover.handed_over(this.snapshot_seq);
                    return Poll::Ready(Some(Event::InitDone));
                }
                Phase::Live => {
                    if let Some(event) = this.next_in_batch() {
                        return Poll::Ready(Some(event));
                    }
                    match ready!(this.rx.poll_recv(cx)) {
                        Recv::Closed => return Poll::Ready(None),
                        Recv::Overflowed(missed) => {
                            this.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                            debug!(missed, "subscriber fell behind; resyncing");
                            this.phase = Phase::NeedSnapshot;
                        }
                        Recv::Msg(msg) => {
                            if msg.seq <= this.snapshot_seq {
                                continue;
                            }
                            this.delivered_seq = msg.seq;
                            match msg.payload {
                                Payload::One(event) => {
                                    this.handover.handed_over(msg.seq);
                                    return Poll::Ready(Some(event));
                                }
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
/// client-go's per-handler `HasSynced`), how often it was resynced, and waits until its
/// consumer has been handed a write.
pub struct SubscriberHandle<K> {
    synced: watch::Receiver<bool>,
    // `Arc`: the counters live with the subscriber, which may be on another task.
    stats: Arc<Stats>,
    // `Arc`: a wait first waits for the store, then for the subscriber.
    shared: Arc<Shared<K>>,
    handover: Arc<Handover>,
}

// Manual impl: `derive` would require `K: Clone`.
impl<K> Clone for SubscriberHandle<K> {
    fn clone(&self) -> Self {
        Self {
            synced: self.synced.clone(),
            stats: Arc::clone(&self.stats),
            shared: Arc::clone(&self.shared),
            handover: Arc::clone(&self.handover),
        }
    }
}

impl<K> SubscriberHandle<K> {
    /// Whether the subscriber has yielded the `InitDone` of its first snapshot. Never goes
    /// back to `false`, even while a later resync is being delivered.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let mut subscriber = writer.subscribe();
    /// let handle = subscriber.handle();
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// assert_eq!(subscriber.next().await, Some(Event::Init));
    /// assert!(!handle.is_synced());
    /// assert_eq!(subscriber.next().await, Some(Event::InitDone));
    /// assert!(handle.is_synced());
    /// # }
    /// ```
    #[must_use]
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the subscriber has yielded the `InitDone` of its first snapshot.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Event, Writer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kache_store::Error> {
    /// let mut writer = Writer::<ConfigMap>::new();
    /// let mut subscriber = writer.subscribe();
    /// let handle = subscriber.handle();
    /// // The consumer runs on its own task; start-up waits until it has the whole state.
    /// let consumer = tokio::spawn(async move { while subscriber.next().await.is_some() {} });
    /// writer.apply(Event::Init);
    /// writer.apply(Event::InitDone);
    /// handle.wait_synced().await?;
    /// drop(writer);
    /// consumer.await.unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SubscriberDropped`] if the subscriber is dropped before that.
    pub async fn wait_synced(&self) -> Result<()> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|synced| *synced)
            .await
            .map(drop)
            .map_err(|_| Error::SubscriberDropped)
    }

    /// How many times the subscriber fell behind and was resynced.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::Writer;
    ///
    /// let writer = Writer::<ConfigMap>::new();
    /// let subscriber = writer.subscribe();
    /// let handle = subscriber.handle();
    /// assert_eq!((handle.resyncs(), subscriber.resyncs()), (0, 0));
    /// ```
    #[must_use]
    pub fn resyncs(&self) -> u64 {
        self.stats.resyncs.load(Ordering::Relaxed)
    }
}

/// Waits until the subscriber's consumer has been handed a write: the same waits as
/// [`Store`](crate::Store)'s, for what the subscriber has *yielded* rather than what the store
/// holds.
///
/// Each resolves once the store has reflected the write and the subscriber has yielded every
/// change up to the one that did: the event that carries the write (or, for a subscriber that
/// was resynced meanwhile, the `InitDone` of a snapshot that holds it), or for a relist the
/// last event of its difference. It resolves when the subscriber yields, before the consumer
/// has acted on what it got. Bounded by the caller and cancel safe, like the store's waits.
///
/// ```
/// use futures::StreamExt;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::{Event, Writer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kache_store::Error> {
/// let mut writer = Writer::<ConfigMap>::new();
/// let mut subscriber = writer.subscribe();
/// let handle = subscriber.handle();
/// writer.apply(Event::Init);
/// writer.apply(Event::InitDone);
/// assert_eq!(subscriber.next().await, Some(Event::Init));
/// assert_eq!(subscriber.next().await, Some(Event::InitDone));
///
/// let mut written = ConfigMap::default();
/// written.metadata.name = Some("a".into());
/// written.metadata.resource_version = Some("3".into());
/// writer.apply(Event::Apply(written.clone()));
///
/// // The store has the write, but the consumer has not been handed it yet.
/// writer.as_reader().wait_for(&written).await?;
/// let mut wait = std::pin::pin!(handle.wait_for(&written));
/// assert!(futures::poll!(wait.as_mut()).is_pending());
///
/// // Consuming the stream hands it over.
/// assert!(matches!(subscriber.next().await, Some(Event::Apply(_))));
/// wait.await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As the store's waits, and [`Error::SubscriberDropped`] if the subscriber is dropped before
/// it yields the write.
impl<K: Resource> SubscriberHandle<K> {
    /// Waits until the consumer has been handed every change up to `version`; see
    /// [`Store::wait_for_version`](crate::Store::wait_for_version).
    ///
    /// # Errors
    ///
    /// See above.
    pub fn wait_for_version(
        &self,
        version: &ResourceVersion,
    ) -> impl Future<Output = Result<()>> + '_ {
        self.wait(Ok(Some(Target::Version(version.clone()))))
    }

    /// Waits until the consumer has been handed `written` (the object a write returned), or a
    /// newer version of it; see [`Store::wait_for`](crate::Store::wait_for).
    ///
    /// # Errors
    ///
    /// See above.
    pub fn wait_for(&self, written: &K) -> impl Future<Output = Result<()>> + '_ {
        self.wait(Target::written(written).map(Some))
    }

    /// Waits until the consumer has been handed each of `written`; see
    /// [`Store::wait_for_all`](crate::Store::wait_for_all).
    ///
    /// # Errors
    ///
    /// See above.
    pub fn wait_for_all<'a>(
        &self,
        written: impl IntoIterator<Item = &'a K>,
    ) -> impl Future<Output = Result<()>> + '_
    where
        K: 'a,
    {
        self.wait(Target::all(written))
    }

    /// Waits until the consumer has been handed the deletion of `deleted`; see
    /// [`Store::wait_for_deletion`](crate::Store::wait_for_deletion).
    ///
    /// # Errors
    ///
    /// See above.
    pub fn wait_for_deletion(&self, deleted: &K) -> impl Future<Output = Result<()>> + '_ {
        self.wait(Target::deleted(deleted).map(Some))
    }

    /// Waits for the store to meet `target`, then for the subscriber to hand over the change
    /// that met it. `None`: nothing to wait for.
    async fn wait(&self, target: Result<Option<Target>>) -> Result<()> {
        let Some(target) = target? else {
            return Ok(());
        };
        let seq = self.shared.wait(&target).await?;
        self.handover.reach(seq).await
    }
}

impl<K> fmt::Debug for SubscriberHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberHandle")
            .field("synced", &self.is_synced())
            .field("resyncs", &self.resyncs())
            .finish_non_exhaustive()
    }
}

impl<K> Subscriber<K> {
    /// Reports this subscriber's lag and resyncs in its store's metrics, with `name` as the
    /// `subscriber` label (a name another live subscriber of the store has gets a suffix).
    /// Unnamed subscribers are only counted, in `kache_subscribers`.
    ///
    /// The series disappear when the subscriber is dropped.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_name(self, name: &str) -> Self {
        self.shared.metrics.name_subscriber(
            name,
            Arc::clone(&self.stats),
            Arc::clone(&self.handover),
        );
        self
    }
}
