//! Progress a watch makes without an event to show for it, reported out of band.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// A point a watch stream has reached with no event to show for it: the resourceVersion of a
/// BOOKMARK, or of a list whose initial sync just completed.
///
/// A consumer that must know how far the stream has reached (a store that lets a caller wait
/// until it reflects a write) needs these points; a consumer that only applies events does
/// not. So [`Event`](crate::Event) keeps its five variants, and the
/// [`watcher`](crate::watcher) reports each point to whoever is *polling it*: a consumer wraps
/// its poll of the stream in [`observe_progress`] and receives the last point reported during
/// that poll. kache-store's `reflect` does this on every poll. Why this shape:
///
/// - Every consumer of the event protocol (subscribers, `touched_objects`, code matching on
///   events) stays as it is; none has to learn to skip a variant it has no use for.
/// - Nothing is wired by hand, so nothing can be wired wrongly: a point reaches exactly the
///   consumer whose poll drove the watcher to it, never a store fed by another watch that
///   happens to share a configuration. A watcher polled outside any `observe_progress` (on
///   another task, behind a channel) reports to no one; its events still carry versions.
/// - A point holds only once the events before it have been applied, and an adapter between
///   the watcher and the consumer may hold some back (a buffer). So each point says how many
///   `Ok` items the watcher had yielded when it reached it
///   ([`after_items`](Self::after_items)); the consumer counts the `Ok` items it has received
///   and uses the point once it has received as many. Adapters that map items one to one
///   (backoff, `modify`, `map_ok`) keep the counts equal. One that drops items leaves the
///   consumer behind the watcher's count, so its points are never used: later, never wrong.
///   One that adds `Ok` items of its own would put the consumer ahead and let it use a point
///   too early: keep such an adapter out of the way between a watcher and its store.
///
/// ```
/// // Nothing reports outside a watcher, so this poll reached no point.
/// let (value, reached) = kache_watch::plumbing::observe_progress(|| 42);
/// assert_eq!(value, 42);
/// assert_eq!(reached, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The resourceVersion reached, as the server sent it: a bookmark's, or that of a list
    /// whose `InitDone` was just yielded.
    pub resource_version: String,
    /// How many `Ok` items the stream had yielded when it reached the point (counting the
    /// `InitDone` that closes a list). The point holds for a consumer that has applied that
    /// many items of this stream.
    pub after_items: u64,
    /// The watch stream that reached it.
    pub stream: StreamId,
}

/// One watch stream: each call of [`watcher`](crate::watcher) (or another of the crate's
/// watchers) makes a stream with an id of its own, unique in the process.
///
/// A consumer that holds the state of one stream (a store, whose relist replaces everything
/// it holds) uses it to tell that items of two streams reach it, as when two watchers are
/// merged with `futures::stream::select`: each stream's relist would replace the other's
/// objects, and each stream's bookmarks would claim a point the other has not reached.
/// [`ProgressScope::stream`] tells which stream yielded the item a poll returned, and each
/// [`Progress`] which stream reached it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(NonZeroU64);

impl StreamId {
    /// A new id, never given before in this process.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // Relaxed: only uniqueness matters, which the atomic add gives in any order.
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watch stream {}", self.0)
    }
}

thread_local! {
    // Thread-local because a poll runs on one thread from start to end: a point reported
    // inside it can only be meant for an `observe_progress` enclosing it on this thread.
    // `DEPTH` and `REPORTS` hold no resources, so reading them is a plain memory access: a
    // poll that reports nothing (nearly every poll) touches only those two.

    /// How many `observe_progress` calls enclose the current code (0: a report goes nowhere).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// How many points have been reported on this thread, to tell whether a poll reported any.
    static REPORTS: Cell<u64> = const { Cell::new(0) };
    /// The last point reported at each depth not yet handed out, innermost last.
    static POINTS: RefCell<Vec<(u32, Progress)>> = const { RefCell::new(Vec::new()) };
    /// The stream that yielded the last `Ok` item on this thread since the innermost scope
    /// began (0: none did).
    static YIELDED_BY: Cell<u64> = const { Cell::new(0) };
    /// The first stream polled on this thread since the innermost scope began, and another
    /// one polled after it (0: none).
    static POLLED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Runs `poll` (a poll of a watch stream) and returns its result with the last [`Progress`]
/// the watcher reported while it ran.
///
/// Calls nest: a point goes to the innermost call, and an outer one sees none of it. A call
/// costs four accesses to plain thread-local counters when nothing is reported.
///
/// The result passes through this function: for a large item (a whole event), poll inside a
/// [`ProgressScope`] instead, which writes the item where the caller wants it.
#[inline]
pub fn observe_progress<R>(poll: impl FnOnce() -> R) -> (R, Option<Progress>) {
    let scope = ProgressScope::enter();
    let out = poll();
    (out, scope.finish())
}

/// The span of one poll whose reported [`Progress`] the caller wants: what
/// [`observe_progress`] does, with the poll written in the caller's own code.
///
/// ```
/// use std::task::{Context, Poll, Waker};
///
/// use futures::{StreamExt, stream};
/// use kache_watch::plumbing::ProgressScope;
///
/// let mut events = stream::iter([1, 2]);
/// let mut cx = Context::from_waker(Waker::noop());
/// let scope = ProgressScope::enter();
/// let item = events.poll_next_unpin(&mut cx);
/// // A plain stream reports no point; a watcher reports one when a list or a bookmark
/// // brings it to a resourceVersion.
/// assert_eq!(scope.finish(), None);
/// assert_eq!(item, Poll::Ready(Some(1)));
/// ```
///
/// Scopes nest as `observe_progress` calls do. One dropped without [`finish`](Self::finish)
/// (the poll panicked) drops its point and restores the enclosing scope.
#[derive(Debug)]
#[must_use = "a scope ends with `finish`, which returns the point reported within it"]
pub struct ProgressScope {
    depth: u32,
    reports: u64,
}

impl ProgressScope {
    /// Starts observing: points reported from now until [`finish`](Self::finish), by code on
    /// this thread not inside an inner scope, go to this one.
    #[inline]
    pub fn enter() -> Self {
        let depth = DEPTH.get() + 1;
        DEPTH.set(depth);
        YIELDED_BY.set(0);
        POLLED.set((0, 0));
        Self {
            depth,
            reports: REPORTS.get(),
        }
    }

    /// The watch stream that yielded the item the poll returned, if a watcher of this crate
    /// yielded one during the scope: read it after the poll, before
    /// [`finish`](Self::finish). `None` for an item from any other stream, or from a buffer
    /// that a watcher filled in an earlier poll.
    #[inline]
    #[must_use]
    pub fn stream(&self) -> Option<StreamId> {
        NonZeroU64::new(YIELDED_BY.get()).map(StreamId)
    }

    /// Two different watch streams polled during the scope, if there were two: the poll
    /// drives more than one watcher, as a `select` of two does from its first poll on. A
    /// consumer that holds one stream's state (a store) cannot be fed by both.
    #[inline]
    #[must_use]
    pub fn two_streams(&self) -> Option<(StreamId, StreamId)> {
        match POLLED.get() {
            (_, 0) => None,
            (first, other) => Some((
                StreamId(NonZeroU64::new(first)?),
                StreamId(NonZeroU64::new(other)?),
            )),
        }
    }

    /// Stops observing and returns the last point reported within the scope.
    #[inline]
    #[must_use]
    pub fn finish(self) -> Option<Progress> {
        let reached = self.leave();
        std::mem::forget(self);
        reached
    }

    #[inline]
    fn leave(&self) -> Option<Progress> {
        DEPTH.set(self.depth - 1);
        if REPORTS.get() == self.reports {
            None
        } else {
            take_point(self.depth)
        }
    }
}

impl Drop for ProgressScope {
    fn drop(&mut self) {
        // Only reached on unwind or when `finish` is skipped: drop this scope's point.
        self.leave();
    }
}

/// The point reported at `depth`, if any, dropping any left deeper (by a poll that unwound).
#[cold]
fn take_point(depth: u32) -> Option<Progress> {
    POINTS.with_borrow_mut(|points| {
        while points.last().is_some_and(|(at, _)| *at > depth) {
            points.pop();
        }
        if points.last().is_some_and(|(at, _)| *at == depth) {
            points.pop().map(|(_, point)| point)
        } else {
            None
        }
    })
}

/// Notes that `stream` yields an `Ok` item now, for [`ProgressScope::stream`].
#[inline]
fn yielded_by(stream: StreamId) {
    YIELDED_BY.set(stream.0.get());
}

/// Notes that `stream` is polled now, for [`ProgressScope::two_streams`].
#[inline]
fn polling(stream: StreamId) {
    let id = stream.0.get();
    match POLLED.get() {
        (0, _) => POLLED.set((id, 0)),
        (first, 0) if first != id => POLLED.set((first, id)),
        _ => {}
    }
}

pin_project_lite::pin_project! {
    /// A watch stream that tells each poll's scope that it was polled, and which stream
    /// yielded the item.
    pub(crate) struct Tagged<St> {
        stream: StreamId,
        #[pin]
        inner: St,
    }
}

impl<St> Tagged<St> {
    pub(crate) fn new(stream: StreamId, inner: St) -> Self {
        Self { stream, inner }
    }
}

impl<St, T, E> futures::Stream for Tagged<St>
where
    St: futures::Stream<Item = Result<T, E>>,
{
    type Item = Result<T, E>;

    #[inline]
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.project();
        polling(*this.stream);
        let item = this.inner.poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &item {
            yielded_by(*this.stream);
        }
        item
    }
}

/// Reports `progress` to the innermost enclosing [`observe_progress`], if there is one.
pub(crate) fn report(progress: Progress) {
    let depth = DEPTH.get();
    if depth == 0 {
        return;
    }
    // `try_with`: a poll during thread teardown has no observer left to tell.
    let _ = POINTS.try_with(|points| {
        let mut points = points.borrow_mut();
        match points.last_mut() {
            // The latest point wins: it is later than any earlier one of the same poll.
            Some((at, point)) if *at == depth => *point = progress,
            _ => points.push((depth, progress)),
        }
    });
    REPORTS.set(REPORTS.get() + 1);
}

#[cfg(test)]
mod tests {
    use super::{
        Progress, ProgressScope, StreamId, observe_progress as observe, polling, report, yielded_by,
    };

    fn point(rv: &str, after_items: u64) -> Progress {
        Progress {
            resource_version: rv.to_owned(),
            after_items,
            stream: STREAM.with(|stream| *stream),
        }
    }

    thread_local! {
        static STREAM: StreamId = StreamId::next();
    }

    #[test]
    fn a_scope_tells_which_stream_yielded_its_item() {
        let (a, b) = (StreamId::next(), StreamId::next());
        assert_ne!(a, b);
        let scope = ProgressScope::enter();
        assert_eq!(scope.stream(), None);
        yielded_by(a);
        yielded_by(b);
        assert_eq!(scope.stream(), Some(b), "the last item's");
        assert_eq!(scope.finish(), None);
        let scope = ProgressScope::enter();
        assert_eq!(scope.stream(), None, "a new scope starts with none");
        let inner = ProgressScope::enter();
        yielded_by(a);
        assert_eq!(inner.finish(), None);
        assert_eq!(
            scope.stream(),
            Some(a),
            "an item an inner scope saw passes outward"
        );
        let _ = scope.finish();
    }

    #[test]
    fn a_scope_tells_that_it_polled_two_streams() {
        let (a, b) = (StreamId::next(), StreamId::next());
        let scope = ProgressScope::enter();
        polling(a);
        polling(a);
        assert_eq!(scope.two_streams(), None, "one stream, polled twice");
        polling(b);
        polling(a);
        assert_eq!(scope.two_streams(), Some((a, b)));
        let _ = scope.finish();
        let scope = ProgressScope::enter();
        assert_eq!(scope.two_streams(), None, "a new scope starts with none");
        let _ = scope.finish();
    }

    #[test]
    fn a_report_outside_observe_goes_nowhere() {
        report(point("5", 1));
        assert_eq!(observe(|| ()).1, None);
    }

    #[test]
    fn observe_returns_the_last_report_of_its_poll() {
        let ((), reached) = observe(|| {
            report(point("5", 1));
            report(point("7", 2));
        });
        assert_eq!(reached, Some(point("7", 2)));
        assert_eq!(observe(|| ()).1, None, "a report is handed out once");
    }

    #[test]
    fn nested_observers_each_get_their_own_reports() {
        let (inner, outer) = observe(|| {
            report(point("3", 1));
            let ((), inner) = observe(|| report(point("9", 4)));
            inner
        });
        assert_eq!(inner, Some(point("9", 4)));
        assert_eq!(outer, Some(point("3", 1)));
    }

    #[test]
    fn a_panicking_poll_restores_the_enclosing_observer() {
        let ((), outer) = observe(|| {
            let caught = std::panic::catch_unwind(|| observe(|| panic!("poll failed")));
            assert!(caught.is_err());
            report(point("4", 2));
        });
        assert_eq!(outer, Some(point("4", 2)));
    }
}
