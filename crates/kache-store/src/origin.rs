//! One watch stream per store (or per source): a second one is a loud stop, not half a store.
//!
//! A store's relist replaces everything it holds, and its version is the point its watch has
//! reached. Both assume that one watch stream feeds it. Two watchers merged into one stream
//! (`futures::stream::select`, the way kube-runtime users watch several namespaces) break
//! both at once, silently: each stream's list replaces the other's objects, and each stream's
//! bookmarks claim a version the other has not delivered. kache-watch names the stream behind
//! each poll, item and point (`kache_watch::plumbing::StreamId`); the reflectors check that one stream
//! feeds each store (and each source of a [`Sources`](crate::Sources) store) and stop, with an
//! error in the log and in [`Health::stopped`](crate::Health::stopped), at the first poll that
//! drives two watchers (a `select` does from its first poll on, before anything is applied), or
//! at the first item or point of a second one. Watching several namespaces or selectors into one store is what
//! `Sources` is for.

use kache_watch::plumbing::{Progress, ProgressScope, StreamId};

/// The watch stream that feeds one store or source, once it has been seen.
#[derive(Debug, Default)]
pub(crate) struct Origin(Option<StreamId>);

/// Items of two watch streams reached one store: why it stopped.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) first: StreamId,
    pub(crate) second: StreamId,
}

/// What a poll's scope saw: two streams polled in it, and the stream whose item it returned.
pub(crate) type Seen = (Option<(StreamId, StreamId)>, Option<StreamId>);

impl Origin {
    /// What `scope` saw, read after the poll and before the scope finishes.
    #[inline]
    pub(crate) fn seen(scope: &ProgressScope) -> Seen {
        (scope.two_streams(), scope.stream())
    }

    /// Checks what one poll saw ([`Origin::seen`]) and the point it reported.
    #[inline]
    pub(crate) fn check(&mut self, seen: Seen, point: Option<&Progress>) -> Result<(), Merged> {
        let (two, item) = seen;
        if let Some((first, second)) = two {
            return Err(Merged { first, second });
        }
        for stream in [item, point.map(|point| point.stream)]
            .into_iter()
            .flatten()
        {
            match self.0 {
                None => self.0 = Some(stream),
                Some(first) if first != stream => {
                    return Err(Merged {
                        first,
                        second: stream,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl Merged {
    /// What the log and the health say.
    pub(crate) fn reason(&self, source: Option<&str>) -> String {
        let fed = match source {
            Some(name) => format!("source {name} is fed"),
            None => "this writer is fed".to_owned(),
        };
        format!(
            "{fed} by two watch streams ({} and {}, merged with `select`?): each one's list would replace the other's objects and its bookmarks claim versions the other has not delivered; feed one store from several watches with kache_store::Sources",
            self.first, self.second
        )
    }
}
