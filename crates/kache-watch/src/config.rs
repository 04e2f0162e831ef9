use std::time::Duration;

use kube_client::api::{ListParams, WatchParams};

use crate::Shard;

/// How the watcher gets the initial set of objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialListStrategy {
    /// A paged LIST, then a WATCH from the list's resourceVersion. Works on every server.
    ListWatch,
    /// A WATCH with `sendInitialEvents=true` (Kubernetes 1.27+ streaming lists, KEP-3157): the
    /// server sends the current objects as events, then a bookmark annotated
    /// `k8s.io/initial-events-end`. Lower peak memory on the server; fails on older servers.
    StreamingList,
    /// Try [`StreamingList`](Self::StreamingList) once; if the server refuses it (a 1.20 server
    /// answers `422 Invalid`, others `400`), use [`ListWatch`](Self::ListWatch) from then on.
    /// The answer is remembered for the life of the stream.
    #[default]
    Auto,
}

/// How to list and watch: selectors, paging, timeouts and the initial list strategy.
///
/// ```
/// use kache_watch::{Config, InitialListStrategy};
///
/// let config = Config::default()
///     .labels("app=web")
///     .page_size(100)
///     .initial_list_strategy(InitialListStrategy::ListWatch);
/// assert_eq!(config.page_size, Some(100));
/// assert!(config.bookmarks);
/// assert!(config.retry_backoff);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches, each set by a method of its own"
)]
pub struct Config {
    /// Label selector applied by the server, like `app=web,tier!=db`. `None` selects all.
    pub label_selector: Option<String>,
    /// Field selector applied by the server, like `metadata.name=x`. `None` selects all.
    pub field_selector: Option<String>,
    /// Objects on the first LIST page (`limit`). Default 500, as client-go. `None` lists in one
    /// request. Later pages may grow: see [`page_bytes`](Self::page_bytes).
    pub page_size: Option<u32>,
    /// The response size, in bytes, that the pages of a paged LIST grow toward. Default 4 MiB.
    ///
    /// The first page asks for [`page_size`](Self::page_size) objects; each next page asks for
    /// twice as many as the one before while that one's response was at most half of this (up
    /// to 32,000 objects). Small objects are then listed in few requests, and pages of large
    /// ones stay at most about this size. It matters on large collections: the server's work
    /// for each page grows with the objects still to list (etcd counts every remaining key to
    /// answer a page), so fixed pages of 500 make a list's cost grow with the square of its
    /// length (docs/benchmarks.md, "Large collections"). The client holds one page at a time,
    /// decoded, beside the objects it keeps.
    ///
    /// `None` ([`Config::fixed_pages()`]): every page asks for `page_size` objects.
    pub page_bytes: Option<usize>,
    /// Server-side watch timeout in seconds (`timeoutSeconds`). Default 290. The watcher also
    /// gives up on a silent connection after this plus a small margin, and resumes.
    pub timeout: Option<u32>,
    /// Ask for BOOKMARK events, which advance the resume point without changes. Default on.
    pub bookmarks: bool,
    /// How the initial list is fetched. Default [`InitialListStrategy::Auto`].
    pub initial_list_strategy: InitialListStrategy,
    /// How long a streaming list may run without its closing bookmark before the watcher
    /// gives up on it and falls back to a paged list. Default 5 minutes.
    pub initial_events_timeout: Duration,
    /// Wait before a request that follows an error, as client-go's reflector does, so that a
    /// failing server is never hammered. Default on.
    ///
    /// The waits are [`Backoff::default`](crate::Backoff)'s: 800 ms, doubling up to 30 s, with
    /// jitter, starting over once 120 s pass without an error. A backoff adapter that polls
    /// the watcher ([`WatchStreamExt::backoff`](crate::WatchStreamExt::backoff) or
    /// [`default_backoff`](crate::WatchStreamExt::default_backoff), which is how to choose
    /// other delays) takes over: after each error its own wait is the only one.
    ///
    /// Off ([`Config::disable_retry_backoff`]), the watcher retries at once, only returning
    /// to the runtime first (so other tasks run and an abort lands): for a consumer that
    /// spaces its polls after an error itself.
    pub retry_backoff: bool,
    /// Watch only this part of the collection ([`Config::shard`]). Default `None`: all of it.
    pub shard: Option<Shard>,
    /// Start by watching from this resourceVersion, with no initial list. Default `None`: the
    /// stream opens with an initial sync.
    ///
    /// For a consumer that already holds every object as of that version, such as a store
    /// restored from a snapshot (kache-store's `Writer::restore`): the stream then opens with
    /// the changes made since, as `Apply` and `Delete` (deletes included), and with no `Init`.
    /// If the server no longer has that history (`410 Gone`), the watcher falls back to the
    /// ordinary initial sync (`Init`, `InitApply`*, `InitDone`), which the consumer treats as
    /// any relist. A server answers a watch from a version it has not reached (a snapshot of
    /// another cluster, or from before an etcd restore) with silence: if that first watch
    /// ends (its `timeout`) with no event and no bookmark, the watcher lists too. Set it with
    /// [`Config::resume_from()`].
    pub resume_from: Option<String>,
    /// Keep each object's `metadata.managedFields`. Default off: the watcher leaves them out.
    ///
    /// The server's record of which manager set which field (server-side apply) is often the
    /// largest part of a small object: decoded, about 4 KB for a `ConfigMap` with one
    /// manager's entry, more than the rest of it (docs/benchmarks.md, memory). Few controllers read it,
    /// and a cache would hold it for every object, so by default the watcher skips the field
    /// while decoding each object: it is never allocated, which a transform after decoding
    /// (`modify`, a store's transform) cannot avoid.
    ///
    /// Turn this on ([`Config::keep_managed_fields()`]) if you read `managedFields` from the
    /// watched objects, for instance to see which manager owns a field before a server-side
    /// apply. Applying itself needs nothing from the cache: the server keeps the record.
    pub keep_managed_fields: bool,
    /// Copy each object the stream yields for a store (`InitApply`, `Apply`) once into
    /// allocations of exactly its size. Default on.
    ///
    /// Decoding grows each list in an object (a Pod's containers, their env, ports and
    /// mounts, its conditions) by doubling, so the decoded object keeps room it will never
    /// use: about a fifth of a Pod's heap (4.4 KiB of 20 KiB for a Pod with two containers
    /// and a status, docs/benchmarks.md). A cache holds every object for its life, so the
    /// watcher copies each one into exact allocations and frees the decoded one: a `clone`,
    /// equal to it, that costs a copy of the object per event. Deletes are passed on as
    /// decoded. Turn it off ([`Config::keep_decoded_capacity()`]) for a stream whose objects
    /// are not kept.
    pub compact: bool,
}

/// [`Config::page_bytes`]' default: 4 MiB.
const DEFAULT_PAGE_BYTES: usize = 4 << 20;

/// The most objects a page grows to, however small they are: what a page holds decoded stays
/// bounded when the objects are far larger decoded than on the wire.
const MAX_PAGE_SIZE: u32 = 32_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            label_selector: None,
            field_selector: None,
            page_size: Some(500),
            page_bytes: Some(DEFAULT_PAGE_BYTES),
            timeout: None,
            bookmarks: true,
            initial_list_strategy: InitialListStrategy::Auto,
            initial_events_timeout: Duration::from_secs(300),
            retry_backoff: true,
            shard: None,
            resume_from: None,
            keep_managed_fields: false,
            compact: true,
        }
    }
}

impl Config {
    /// Filters by label selector, such as `app=web`.
    #[must_use]
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_owned());
        self
    }

    /// Filters by field selector, such as `metadata.name=web`.
    #[must_use]
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_owned());
        self
    }

    /// Sets the first LIST page's size; `0` means no paging (one request for the whole list).
    /// Later pages grow while small ([`Config::page_bytes`]); with
    /// [`fixed_pages()`](Self::fixed_pages), every page has this size.
    #[must_use]
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = (size > 0).then_some(size);
        self
    }

    /// Sets the response size that LIST pages grow toward ([`Config::page_bytes`]); `0` means
    /// pages that do not grow, as [`fixed_pages()`](Self::fixed_pages).
    #[must_use]
    pub fn page_bytes(mut self, bytes: usize) -> Self {
        self.page_bytes = (bytes > 0).then_some(bytes);
        self
    }

    /// Every LIST page asks for [`page_size`](Self::page_size) objects, none grows
    /// ([`Config::page_bytes`]).
    #[must_use]
    pub fn fixed_pages(mut self) -> Self {
        self.page_bytes = None;
        self
    }

    /// Sets the server-side watch timeout in seconds.
    #[must_use]
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }

    /// Turns off BOOKMARK events. Not recommended: a resumed watch then starts further back.
    /// Streaming lists need bookmarks, so this also selects [`InitialListStrategy::ListWatch`].
    #[must_use]
    pub fn disable_bookmarks(mut self) -> Self {
        self.bookmarks = false;
        self.initial_list_strategy = InitialListStrategy::ListWatch;
        self
    }

    /// Sets the initial list strategy.
    #[must_use]
    pub fn initial_list_strategy(mut self, strategy: InitialListStrategy) -> Self {
        self.initial_list_strategy = strategy;
        self
    }

    /// Uses streaming lists (Kubernetes 1.27+) without falling back.
    #[must_use]
    pub fn streaming_lists(self) -> Self {
        self.initial_list_strategy(InitialListStrategy::StreamingList)
    }

    /// Sets how long a streaming list may run without its closing bookmark.
    #[must_use]
    pub fn initial_events_timeout(mut self, timeout: Duration) -> Self {
        self.initial_events_timeout = timeout;
        self
    }

    /// Turns off the wait before a request that follows an error
    /// ([`Config::retry_backoff`]). Not recommended unless the consumer waits after an error
    /// itself: the watcher then retries a failing server as fast as it is polled.
    #[must_use]
    pub fn disable_retry_backoff(mut self) -> Self {
        self.retry_backoff = false;
        self
    }

    /// Watches only the objects of `shard` (see [`Shard`]).
    ///
    /// The watcher sends the shard as the `shardSelector` parameter of every LIST and WATCH
    /// (KEP-5866). A server with sharded list and watch (Kubernetes 1.36+ with the
    /// `ShardedListAndWatch` feature gate) then sends only the shard's objects, and says so
    /// in each list response; any other server ignores the parameter and sends every object.
    /// Either way the watcher also checks each object against the shard, with the server's
    /// hash, and drops the others: the stream holds exactly the shard's objects, and only the
    /// cost differs. Without server support every replica receives, decodes and drops the
    /// whole collection. The watcher logs which case it met, once.
    ///
    /// ```
    /// use kache_watch::{Config, Shard};
    ///
    /// // The second of three replicas.
    /// let config = Config::default().shard(Shard::nth(1, 3)?);
    /// assert!(config.shard.is_some());
    /// # Ok::<(), kache_watch::Error>(())
    /// ```
    #[must_use]
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Starts with a WATCH from `resource_version` instead of an initial list: see
    /// [`Config::resume_from`](Config#structfield.resume_from). An empty version is ignored.
    ///
    /// ```
    /// use kache_watch::Config;
    ///
    /// // The version a restored snapshot was consistent at.
    /// let config = Config::default().resume_from("4711");
    /// assert_eq!(config.resume_from.as_deref(), Some("4711"));
    /// ```
    #[must_use]
    pub fn resume_from(mut self, resource_version: &str) -> Self {
        self.resume_from = (!resource_version.is_empty()).then(|| resource_version.to_owned());
        self
    }

    /// Keeps each object's `metadata.managedFields`, which the watcher drops by default
    /// (see [`Config::keep_managed_fields`](Config#structfield.keep_managed_fields)).
    ///
    /// ```
    /// use kache_watch::Config;
    ///
    /// assert!(!Config::default().keep_managed_fields);
    /// assert!(Config::default().keep_managed_fields().keep_managed_fields);
    /// ```
    #[must_use]
    pub fn keep_managed_fields(mut self) -> Self {
        self.keep_managed_fields = true;
        self
    }

    /// Yields objects as decoded, with the spare capacity decoding left in their lists: see
    /// [`Config::compact`].
    ///
    /// ```
    /// use kache_watch::Config;
    ///
    /// assert!(Config::default().compact);
    /// assert!(!Config::default().keep_decoded_capacity().compact);
    /// ```
    #[must_use]
    pub fn keep_decoded_capacity(mut self) -> Self {
        self.compact = false;
        self
    }

    /// The size of the page after one of `size` objects whose response had `bytes` bytes: twice
    /// as many while the response was at most half of [`page_bytes`](Self::page_bytes), up to
    /// [`MAX_PAGE_SIZE`].
    pub(crate) fn next_page_size(&self, size: Option<u32>, bytes: usize) -> Option<u32> {
        let size = size?;
        match self.page_bytes {
            Some(target) if bytes <= target / 2 && size < MAX_PAGE_SIZE => {
                Some(size.saturating_mul(2).min(MAX_PAGE_SIZE))
            }
            _ => Some(size),
        }
    }

    pub(crate) fn list_params(
        &self,
        continue_token: Option<String>,
        size: Option<u32>,
    ) -> ListParams {
        ListParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            limit: size,
            continue_token,
            ..ListParams::default()
        }
    }

    pub(crate) fn watch_params(&self, send_initial_events: bool) -> WatchParams {
        WatchParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            timeout: self.timeout,
            // Streaming lists end with a bookmark, so they need bookmarks whatever the config.
            bookmarks: self.bookmarks || send_initial_events,
            send_initial_events,
        }
    }

    /// How long the client waits on a silent watch connection before resuming it.
    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout.unwrap_or(290)) + 5)
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, DEFAULT_PAGE_BYTES, MAX_PAGE_SIZE};

    #[test]
    fn pages_double_while_their_responses_stay_under_half_the_target() {
        let config = Config::default();
        let half = DEFAULT_PAGE_BYTES / 2;
        assert_eq!(config.next_page_size(Some(500), 600_000), Some(1000));
        assert_eq!(config.next_page_size(Some(500), half), Some(1000));
        assert_eq!(config.next_page_size(Some(500), half + 1), Some(500));
        assert_eq!(config.next_page_size(Some(20_000), 1), Some(MAX_PAGE_SIZE));
        assert_eq!(
            config.next_page_size(Some(MAX_PAGE_SIZE), 1),
            Some(MAX_PAGE_SIZE)
        );
        // Unpaginated stays unpaginated; fixed pages stay as they are.
        assert_eq!(config.next_page_size(None, 1), None);
        assert_eq!(
            config.clone().fixed_pages().next_page_size(Some(7), 1),
            Some(7)
        );
        assert_eq!(config.page_bytes(0).page_bytes, None);
    }
}
