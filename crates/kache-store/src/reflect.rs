use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use kache_watch::Event;
use kache_watch::plumbing::{Progress, ProgressScope};
use kube_client::Resource;
use pin_project_lite::pin_project;

use crate::observer::Observer;
use crate::origin::{Merged, Origin};
use crate::writer::Writer;

pin_project! {
    /// A stream that applies every event of an inner stream to a [`Writer`] and passes it on
    /// with its object shared with the store. Errors pass through untouched.
    ///
    /// It also applies the points the watcher reports without an event (bookmarks, completed
    /// lists; see `kache_watch::plumbing::Progress`) with [`Writer::apply_progress`], once it has
    /// applied every event the watcher yielded before each point. So the store's
    /// [`resource_version`](crate::Store::resource_version) advances with bookmarks when the watcher is polled
    /// through this stream, directly or through adapters that pass its items on one for one
    /// (backoff, `modify`, `map_ok`). An adapter that drops items only stops the bookmarks
    /// from counting; one that adds `Ok` items of its own must not sit in between.
    ///
    /// It checks that one watch stream feeds the writer: items or points of a second one
    /// (two watchers merged with `futures::stream::select`) stop it, with an error in the log
    /// and in [`Health::stopped`](crate::Health::stopped), and the stream ends: each stream's
    /// relist would replace the other's objects. Feed one store from several watches with
    /// [`Sources`](crate::Sources).
    ///
    /// It keeps the store's [`Health`](crate::Health) (errors in a row, the last one, one
    /// warning per streak) and, with the `metrics` feature, counts what the watch does.
    ///
    /// Created by [`reflector`] or [`ReflectExt::reflect`].
    #[must_use = "streams do nothing unless polled"]
    pub struct Reflect<St, K> {
        #[pin]
        stream: St,
        writer: Writer<K>,
        // `Ok` items received from `stream`, to place the watcher's points.
        received: u64,
        // A point reported before the items it follows have all been received.
        pending: Option<Progress>,
        // Health and metrics: see health.rs.
        observer: Observer,
        // The one watch stream that may feed the writer: see origin.rs.
        origin: Origin,
        // A second stream reached the writer: the stream ends.
        stopped: bool,
    }
}

impl<St, K> fmt::Debug for Reflect<St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflect")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl<St, K, E> Reflect<St, K>
where
    St: Stream<Item = Result<Event<K>, E>>,
    K: Resource + Send + Sync + 'static,
    E: 'static,
{
    /// A poll that also notes what the watcher did (see `Observer::observes_polls`): rare
    /// without the `metrics` feature, so kept apart from the plain one.
    #[cfg_attr(not(feature = "metrics"), cold, inline(never))]
    fn poll_observed(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event<Arc<K>>, E>>> {
        self.poll_item::<true>(cx)
    }

    // The observed poll is a copy of its own: code around the poll of the inner stream made
    // the compiler copy each event (hundreds of bytes) once more.
    #[inline]
    fn poll_item<const OBSERVED: bool>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event<Arc<K>>, E>>> {
        let this = self.project();
        if *this.stopped {
            return Poll::Ready(None);
        }
        // Backpressure subscribers must have room for the previous event before the next one
        // is applied.
        ready!(this.observer.poll_flush(this.writer, cx));
        let before = OBSERVED.then(|| this.observer.before_poll());
        // A scope rather than `observe_progress`: the poll writes the item here, where a
        // closure's result would be copied out (a whole event, hundreds of bytes, twice).
        let scope = ProgressScope::enter();
        let item = this.stream.poll_next(cx);
        let seen = Origin::seen(&scope);
        let reached = scope.finish();
        if let Some(before) = before {
            this.observer.after_poll(before, &this.writer.shared);
        }
        if let Err(merged) = this.origin.check(seen, reached.as_ref()) {
            stop(this.writer, &merged);
            *this.stopped = true;
            return Poll::Ready(None);
        }
        if reached.is_some() {
            // A later point supersedes an earlier one still waiting.
            *this.pending = reached;
        }
        // A `match` rather than nested `map`s: each `map` would move the event once more.
        let item = match item {
            Poll::Ready(Some(Ok(event))) => {
                this.observer.on_event(&event, &this.writer.shared);
                let applied = this.writer.apply_buffered(event);
                // Counted once applied: an event whose transform or index function panicked
                // was not, and a point after it must never count (polled again, the stream
                // then stays one behind the watcher's count: its points are never used).
                *this.received += 1;
                Poll::Ready(Some(Ok(applied)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.observer.on_error(&err, &this.writer.shared);
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
        let received = *this.received;
        if let Some(point) = this.pending.take_if(|point| point.after_items <= received) {
            this.writer.apply_progress(&point.resource_version);
        }
        item
    }
}

impl<St, K, E> Stream for Reflect<St, K>
where
    St: Stream<Item = Result<Event<K>, E>>,
    K: Resource + Send + Sync + 'static,
    // `'static`: the health tells the watcher's errors apart by type (`Any`).
    E: 'static,
{
    type Item = Result<Event<Arc<K>>, E>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.observer.observes_polls() {
            self.poll_observed(cx)
        } else {
            self.poll_item::<false>(cx)
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

/// Ends a reflector fed by two watch streams: loudly, in the log and in the store's health.
#[cold]
#[inline(never)]
fn stop<K>(writer: &Writer<K>, merged: &Merged) {
    let reason = merged.reason(None);
    tracing::error!(cache = %writer.shared.health.name(), "{reason}; the store stops following its watch");
    writer.shared.health.stop(reason);
}

/// Applies every event of `stream` to `writer`, yielding the events with their objects shared
/// with the store.
///
/// The stream must be polled for the store to stay current. See [`Reflect`].
pub fn reflector<K, St, E>(writer: Writer<K>, stream: St) -> Reflect<St, K>
where
    St: Stream<Item = Result<Event<K>, E>>,
    K: Resource + Send + Sync + 'static,
{
    Reflect {
        stream,
        writer,
        received: 0,
        pending: None,
        observer: Observer::default(),
        origin: Origin::default(),
        stopped: false,
    }
}

/// Extension for event streams: [`reflect`](ReflectExt::reflect) them into a store.
pub trait ReflectExt: Stream {
    /// Applies every event of this stream to `writer`; see [`reflector`].
    fn reflect<K, E>(self, writer: Writer<K>) -> Reflect<Self, K>
    where
        Self: Stream<Item = Result<Event<K>, E>> + Sized,
        K: Resource + Send + Sync + 'static,
    {
        reflector(writer, self)
    }
}

impl<St: Stream + ?Sized> ReflectExt for St {}
