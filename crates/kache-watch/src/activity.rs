//! What a watcher does between its items (WATCH requests, bookmarks), counted for whoever
//! polls it.

use std::cell::Cell;

/// What the [`watcher`](crate::watcher) did during one poll besides yielding its item: the
/// WATCH requests the server accepted, and the bookmarks it received.
///
/// None of these is an [`Event`](crate::Event): a watch that resumes, or a bookmark, changes
/// no object. They matter to whoever reports on a watch (kache-store's metrics count them).
/// Like [`Progress`](crate::plumbing::Progress), they reach the consumer whose poll drove the watcher
/// to them: wrap a poll in [`observe_activity`]. A call nested in another is seen by both,
/// since a watcher polled inside both polls feeds both consumers.
///
/// ```
/// // Nothing happens outside a watcher, so this poll saw no activity.
/// let (value, activity) = kache_watch::plumbing::observe_activity(|| 42);
/// assert_eq!(value, 42);
/// assert!(activity.is_empty());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// WATCH requests accepted right after a list: the watch from a paged list's version, or
    /// a streaming list (which goes on as the watch).
    pub watch_starts: u64,
    /// WATCH requests accepted that continue from the last seen resourceVersion, without a
    /// relist: after a server-side timeout, a dropped connection, a server restart.
    pub watch_resumes: u64,
    /// BOOKMARK events received on a live watch.
    pub bookmarks: u64,
}

impl Activity {
    /// Whether nothing happened.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The running totals of this thread: everything the watchers polled on it have done so
    /// far. Read them before and after a poll, and [`since`](Self::since) gives what the
    /// poll did; [`observe_activity`] does both around a closure. This form leaves the
    /// poll's item where the caller wants it, with no closure in between.
    ///
    /// ```
    /// use kache_watch::plumbing::Activity;
    ///
    /// let before = Activity::so_far();
    /// // ... poll a watch stream ...
    /// assert!(Activity::so_far().since(before).is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub fn so_far() -> Self {
        TOTALS.get()
    }

    /// What happened between `before` (an earlier [`so_far`](Self::so_far) on the same
    /// thread) and these totals.
    #[must_use]
    pub fn since(self, before: Self) -> Self {
        Self {
            watch_starts: self.watch_starts - before.watch_starts,
            watch_resumes: self.watch_resumes - before.watch_resumes,
            bookmarks: self.bookmarks - before.bookmarks,
        }
    }
}

thread_local! {
    // Thread-local for the reason given in `progress.rs`: a poll runs on one thread from start
    // to end. Running totals, so an observer reads them before and after its poll and keeps
    // the difference: no registration, and a plain copy when nothing happened.
    static TOTALS: Cell<Activity> = const {
        Cell::new(Activity { watch_starts: 0, watch_resumes: 0, bookmarks: 0 })
    };
}

/// Runs `poll` (a poll of a watch stream) and returns its result with what the watcher did
/// while it ran; see [`Activity`].
#[inline]
pub fn observe_activity<R>(poll: impl FnOnce() -> R) -> (R, Activity) {
    let before = TOTALS.get();
    let out = poll();
    (out, TOTALS.get().since(before))
}

/// Counts an accepted WATCH request: a resume, or a start after a list.
pub(crate) fn watch_accepted(resumed: bool) {
    let mut totals = TOTALS.get();
    if resumed {
        totals.watch_resumes += 1;
    } else {
        totals.watch_starts += 1;
    }
    TOTALS.set(totals);
}

/// Counts a bookmark received on a live watch.
pub(crate) fn bookmark() {
    let mut totals = TOTALS.get();
    totals.bookmarks += 1;
    TOTALS.set(totals);
}

#[cfg(test)]
mod tests {
    use super::{Activity, bookmark, observe_activity as observe, watch_accepted};

    #[test]
    fn an_observer_sees_what_happened_during_its_poll_only() {
        watch_accepted(true);
        let ((), seen) = observe(|| {
            watch_accepted(false);
            watch_accepted(true);
            bookmark();
            bookmark();
        });
        let expected = Activity {
            watch_starts: 1,
            watch_resumes: 1,
            bookmarks: 2,
        };
        assert_eq!(seen, expected);
        assert!(observe(|| ()).1.is_empty());
    }

    #[test]
    fn nested_observers_both_see_the_inner_activity() {
        let (inner, outer) = observe(|| {
            bookmark();
            observe(bookmark).1
        });
        assert_eq!(inner.bookmarks, 1);
        assert_eq!(outer.bookmarks, 2);
    }
}
