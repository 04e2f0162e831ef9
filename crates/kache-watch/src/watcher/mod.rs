//! The watcher's state machine: the initial list (paged or streaming), then the watch,
//! resumed when it drops; the relist on `410 Gone`, the shard filter and the wait after an
//! error.
//!
//! It speaks to the server through one seam, [`ApiMode`] (`mode.rs`), which each wire mode
//! implements beside it: JSON in `json.rs` ([`watcher`], [`metadata_watcher`]) and, with the
//! `protobuf` feature, protobuf in `proto/` ([`protobuf_watcher`](crate::protobuf_watcher)).
//! Each mode's entry point hands its [`ApiMode`] to [`run`], so every wire mode has the same
//! strategies, errors and resume logic.

mod json;
mod mode;
#[cfg(feature = "protobuf")]
mod proto;

use std::{collections::VecDeque, task::Poll};

use futures::{Stream, StreamExt};
use kube_client::{Resource, ResourceExt, api::WatchEvent};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::activity;
use crate::backoff::{self, Backoff};
use crate::error::status_code;
use crate::progress::{self, Progress, StreamId};
use crate::{Config, Error, Event, InitialListStrategy, Result, Shard};

pub use json::{metadata_watcher, server_shards, watch_object, watcher};
#[cfg(feature = "protobuf")]
pub use proto::{Proto, ProtoObject, ProtoScope, protobuf_watcher};

pub(crate) use json::null_as_empty;
pub(crate) use mode::prepare;

use mode::{ApiMode, WatchStream};

/// The annotation on the bookmark that closes a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Where the watcher stands between two items.
enum State<K> {
    /// Nothing listed yet, or a relist is due.
    Empty,
    /// Paging through a LIST; `Init` has been sent and `objects` are waiting to be sent.
    Listing {
        continue_token: Option<String>,
        resource_version: Option<String>,
        objects: VecDeque<K>,
        /// The `limit` of the next page ([`Config::page_bytes`]).
        next_page_size: Option<u32>,
    },
    /// A streaming list is sending its initial events; `Init` has been sent.
    StreamingList {
        stream: WatchStream<K>,
        deadline: Instant,
    },
    /// The initial sync is done; a watch from `resource_version` is to be started.
    Listed { resource_version: String },
    /// Watching from `resource_version`, the last point seen.
    Watching {
        resource_version: String,
        stream: WatchStream<K>,
    },
}

impl<K> State<K> {
    /// Whether the next step starts with a request to the server.
    fn requests(&self) -> bool {
        match self {
            State::Empty | State::Listed { .. } => true,
            State::Listing {
                continue_token,
                objects,
                ..
            } => objects.is_empty() && continue_token.is_some(),
            State::StreamingList { .. } | State::Watching { .. } => false,
        }
    }
}

/// Returns to the runtime once: returns `Pending` after waking its own task, so the runtime
/// runs other tasks (and lands an abort) before it polls this one again. Like tokio's
/// `yield_now`, without requiring tokio's runtime feature.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// What the server accepted, learned while running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Streaming {
    Untried,
    Supported,
    Refused,
}

#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts the watcher learned, each documented; not a state to encode"
)]
struct Watcher<A: ApiMode> {
    api: A,
    config: Config,
    streaming: Streaming,
    /// Use a paged list for the next initial sync whatever the strategy (set after a
    /// streaming list that never finished).
    list_next: bool,
    /// `Ok` items yielded so far, which places each progress report in the stream.
    yielded: u64,
    /// The resume point at which the server last answered a watch with an ERROR event other
    /// than 410: a second such answer at the same point relists instead of resuming again.
    failed_resume: Option<String>,
    /// The last item yielded was an error: the next request waits first. Not every error is
    /// followed by a request (an invalid object in a list page is not).
    after_error: bool,
    /// How long to wait before that request; `None` when [`Config::retry_backoff`] is off.
    retry: Option<Backoff>,
    /// What the server asked that wait to be at least (`Retry-After`).
    retry_after: Option<std::time::Duration>,
    /// The next WATCH from `State::Listed` follows a completed paged list (a start), not a
    /// dropped watch (a resume). For [`activity`] only.
    after_list: bool,
    /// The shard to watch and its `shardSelector`, formatted once.
    shard: Option<(Shard, String)>,
    /// Whether the server applies the shard itself, as far as the watcher has seen.
    shard_support: ShardSupport,
    /// Started from [`Config::resume_from`] and the server has not yet shown that it has
    /// reached that version (an event or a bookmark on the watch).
    unconfirmed_start: bool,
    /// This stream's id, on its items and points.
    stream: StreamId,
}

/// Whether the server applies the `shardSelector`, learned while running. The watcher checks
/// every object against the shard whatever this says; it only decides what is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardSupport {
    Unknown,
    /// A list response echoed the selector back (`metadata.shardInfo`).
    Server,
    /// A list response without the echo, or an object outside the shard, came back.
    Client,
}

/// The stream of events of the wire mode `api`: what each entry point returns.
fn run<A>(api: A, config: Config) -> impl Stream<Item = Result<Event<A::Value>>> + Send
where
    A: ApiMode + 'static,
{
    // A start from a known version is a resume: the consumer holds the objects as of it.
    let start = match config.resume_from.clone() {
        Some(resource_version) => {
            debug!(%resource_version, "starting with a watch from a known resourceVersion");
            State::Listed { resource_version }
        }
        None => State::Empty,
    };
    let stream = StreamId::next();
    let watcher = Watcher {
        retry: config.retry_backoff.then(Backoff::default),
        shard: config.shard.clone().map(|shard| {
            let selector = shard.selector();
            (shard, selector)
        }),
        shard_support: ShardSupport::Unknown,
        api,
        config,
        streaming: Streaming::Untried,
        list_next: false,
        failed_resume: None,
        retry_after: None,
        yielded: 0,
        after_error: false,
        after_list: false,
        unconfirmed_start: matches!(start, State::Listed { .. }),
        stream,
    };
    progress::Tagged::new(
        stream,
        futures::stream::unfold((watcher, start), |(mut watcher, state)| async move {
            let (item, state) = watcher.step(state).await;
            watcher.yielded += u64::from(item.is_ok());
            watcher.after_error = item.is_err();
            watcher.retry_after = item.as_ref().err().and_then(Error::retry_after);
            if let Some(wait) = watcher.retry_after {
                // For a `StreamBackoff` that polls this watcher and waits in its stead.
                backoff::hint_retry_after(wait);
            }
            Some((item, (watcher, state)))
        }),
    )
}

impl<A: ApiMode> Watcher<A> {
    /// Advances until there is an item to yield.
    async fn step(
        &mut self,
        mut state: State<A::Value>,
    ) -> (Result<Event<A::Value>>, State<A::Value>) {
        loop {
            if state.requests() {
                self.before_request().await;
            }
            match self.step_once(state).await {
                (Some(item), next) => return (item, next),
                (None, next) => state = next,
            }
        }
    }

    /// `obj` copied into allocations of exactly its size, unless [`Config::compact`] is off.
    fn compacted(&self, obj: A::Value) -> A::Value {
        if self.config.compact {
            // A clone allocates each `Vec` and `String` at its length; the decoded object,
            // with the room its lists grew into, is freed.
            obj.clone()
        } else {
            obj
        }
    }

    /// Returns to the runtime before each request, after waiting if the request follows an
    /// error (see [`Config::retry_backoff`]).
    ///
    /// A request can fail without waiting for anything (a client whose connection tasks are
    /// gone, as at runtime shutdown). Each such failure is an item, and a consumer that polls
    /// again at once (`for_each`) used to keep one poll of its task running forever: retrying
    /// at full speed, never returning to the runtime, so the task could not even be aborted.
    /// Now no request starts without the task having returned `Pending` since the last one.
    async fn before_request(&mut self) {
        let after_error = std::mem::take(&mut self.after_error);
        match &mut self.retry {
            // A backoff adapter polling this watcher has waited after the error already.
            Some(backoff) if after_error && !backoff::spaced_by_adapter() => {
                let delay = backoff.delay_after_error(Instant::now());
                let delay = backoff.at_least(delay, self.retry_after.take());
                debug!(?delay, "waiting before a retry after an error");
                tokio::time::sleep(delay).await;
            }
            _ => yield_now().await,
        }
    }

    /// Reports that the stream has reached `resource_version` once the `Ok` items yielded so
    /// far, plus `ahead` more (the `InitDone` about to be yielded), have been applied.
    fn reached(&self, resource_version: &str, ahead: u64) {
        progress::report(Progress {
            resource_version: resource_version.to_owned(),
            after_items: self.yielded + ahead,
            stream: self.stream,
        });
    }

    fn wants_streaming(&self) -> bool {
        if self.list_next {
            return false;
        }
        match self.config.initial_list_strategy {
            InitialListStrategy::ListWatch => false,
            InitialListStrategy::StreamingList => true,
            InitialListStrategy::Auto => self.streaming != Streaming::Refused,
        }
    }

    fn shard_selector(&self) -> Option<&str> {
        self.shard.as_ref().map(|(_, selector)| selector.as_str())
    }

    /// Whether `obj` belongs to the watched shard (always, without one). The first object
    /// outside it shows that the server does not shard.
    fn in_shard(&mut self, obj: &A::Value) -> bool {
        let Some((shard, selector)) = &self.shard else {
            return true;
        };
        if shard.contains(obj) {
            return true;
        }
        if self.shard_support != ShardSupport::Client {
            info!(shard = %selector, "the server sends objects outside the shard (no sharded list and watch); filtering on the client, which receives every object");
            self.shard_support = ShardSupport::Client;
        }
        false
    }

    /// Learns from a list response whether the server applied the shard: a server that does
    /// echoes the selector in `metadata.shardInfo`.
    fn note_shard_echo(&mut self, echo: Option<&str>) {
        let Some((_, selector)) = &self.shard else {
            return;
        };
        let support = match echo {
            Some(echo) => {
                if echo != selector {
                    warn!(sent = %selector, echoed = %echo, "the server echoed another shard selector than the one sent");
                }
                ShardSupport::Server
            }
            None => ShardSupport::Client,
        };
        if support != self.shard_support {
            match support {
                ShardSupport::Server => {
                    info!(shard = %selector, "the server shards lists and watches");
                }
                _ => {
                    info!(shard = %selector, "the server ignored the shard selector (no sharded list and watch); filtering on the client, which receives every object");
                }
            }
            self.shard_support = support;
        }
    }

    #[allow(clippy::too_many_lines)] // one arm per state reads better than arms split apart
    async fn step_once(
        &mut self,
        state: State<A::Value>,
    ) -> (Option<Result<Event<A::Value>>>, State<A::Value>) {
        match state {
            State::Empty if self.wants_streaming() => {
                let params = self.config.watch_params(true);
                match self.api.watch(&params, "", self.shard_selector()).await {
                    Ok(stream) => {
                        debug!("streaming list started");
                        activity::watch_accepted(false);
                        let deadline = Instant::now() + self.config.initial_events_timeout;
                        (
                            Some(Ok(Event::Init)),
                            State::StreamingList { stream, deadline },
                        )
                    }
                    Err(err)
                        if self.config.initial_list_strategy == InitialListStrategy::Auto
                            && refuses_streaming(&err) =>
                    {
                        info!(error = %err, "server refused a streaming list; using paged lists from now on");
                        self.streaming = Streaming::Refused;
                        (None, State::Empty)
                    }
                    Err(err) => (
                        Some(Err(log_error(Error::WatchStartFailed(err)))),
                        State::Empty,
                    ),
                }
            }
            State::Empty => match self.list_page(None, self.config.page_size).await {
                Ok(state) => {
                    debug!("list started");
                    self.list_next = false;
                    (Some(Ok(Event::Init)), state)
                }
                Err(err) => (Some(Err(err)), State::Empty),
            },
            State::Listing {
                continue_token,
                resource_version,
                mut objects,
                next_page_size,
            } => {
                if let Some(obj) = objects.pop_front() {
                    let state = State::Listing {
                        continue_token,
                        resource_version,
                        objects,
                        next_page_size,
                    };
                    if !self.in_shard(&obj) {
                        return (None, state);
                    }
                    let item = match check_name(&obj, "InitApply") {
                        Ok(()) => Ok(Event::InitApply(self.compacted(obj))),
                        Err(err) => Err(err),
                    };
                    return (Some(item), state);
                }
                match (continue_token, resource_version) {
                    (None, Some(resource_version)) => {
                        debug!(%resource_version, "list complete");
                        self.reached(&resource_version, 1);
                        self.after_list = true;
                        (
                            Some(Ok(Event::InitDone)),
                            State::Listed { resource_version },
                        )
                    }
                    (Some(token), _) => match self.list_page(Some(token), next_page_size).await {
                        Ok(state) => (None, state),
                        Err(err) => {
                            // An expired continue token (410) or any failed page: the pages
                            // already sent cannot be completed, so start the list over.
                            (Some(Err(err)), State::Empty)
                        }
                    },
                    (None, None) => (Some(Err(log_error(Error::NoResourceVersion))), State::Empty),
                }
            }
            State::StreamingList {
                mut stream,
                deadline,
            } => {
                let next = tokio::time::timeout_at(deadline, stream.next()).await;
                let Ok(next) = next else {
                    let err = Error::InitialEventsTimeout(self.config.initial_events_timeout);
                    warn!(error = %err, "falling back to a paged list");
                    if self.config.initial_list_strategy == InitialListStrategy::Auto {
                        self.streaming = Streaming::Refused;
                    }
                    // The paged list that follows opens with a fresh `Init`, which drops
                    // whatever the broken streaming attempt sent.
                    self.list_next = true;
                    return (Some(Err(err)), State::Empty);
                };
                match next {
                    Some(Ok(
                        WatchEvent::Added(obj)
                        | WatchEvent::Modified(obj)
                        | WatchEvent::Deleted(obj),
                    )) if !self.in_shard(&obj) => (None, State::StreamingList { stream, deadline }),
                    Some(Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj))) => {
                        let item = check_name(&obj, "InitApply")
                            .map(|()| Event::InitApply(self.compacted(obj)));
                        (Some(item), State::StreamingList { stream, deadline })
                    }
                    Some(Ok(WatchEvent::Deleted(obj))) => {
                        // The API says this cannot happen during initial events; if it does,
                        // pass it on: a store removes it from the list it is building.
                        warn!(name = ?obj.meta().name, "deleted event during a streaming list's initial events");
                        let item = check_name(&obj, "Delete").map(|()| Event::Delete(obj));
                        (Some(item), State::StreamingList { stream, deadline })
                    }
                    Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                        if bookmark
                            .metadata
                            .annotations
                            .contains_key(INITIAL_EVENTS_END)
                        {
                            self.streaming = Streaming::Supported;
                            let resource_version = bookmark.metadata.resource_version;
                            debug!(%resource_version, "streaming list complete");
                            self.reached(&resource_version, 1);
                            (
                                Some(Ok(Event::InitDone)),
                                State::Watching {
                                    resource_version,
                                    stream,
                                },
                            )
                        } else {
                            (None, State::StreamingList { stream, deadline })
                        }
                    }
                    Some(Ok(WatchEvent::Error(status))) => (
                        Some(Err(log_error(Error::WatchError(status)))),
                        State::Empty,
                    ),
                    Some(Err(err)) => (Some(Err(log_error(Error::WatchFailed(err)))), State::Empty),
                    None => {
                        debug!(
                            "streaming list ended before its initial-events-end bookmark; relisting"
                        );
                        (None, State::Empty)
                    }
                }
            }
            State::Listed { resource_version } => {
                let params = self.config.watch_params(false);
                match self
                    .api
                    .watch(&params, &resource_version, self.shard_selector())
                    .await
                {
                    Ok(stream) => {
                        trace!(%resource_version, "watch started");
                        activity::watch_accepted(!std::mem::take(&mut self.after_list));
                        (
                            None,
                            State::Watching {
                                resource_version,
                                stream,
                            },
                        )
                    }
                    Err(err) if is_gone(&err) => (
                        Some(Err(log_error(Error::WatchStartFailed(err)))),
                        State::Empty,
                    ),
                    Err(err) => (
                        Some(Err(log_error(Error::WatchStartFailed(err)))),
                        State::Listed { resource_version },
                    ),
                }
            }
            State::Watching {
                resource_version,
                mut stream,
            } => {
                let Ok(next) =
                    tokio::time::timeout(self.config.idle_timeout(), stream.next()).await
                else {
                    debug!(%resource_version, "watch connection silent too long; resuming");
                    return (None, self.after_watch_end(resource_version));
                };
                if matches!(next, Some(Ok(_))) {
                    // An event or a bookmark: the server has reached the version watched from.
                    self.unconfirmed_start = false;
                }
                match next {
                    Some(Ok(
                        WatchEvent::Added(obj)
                        | WatchEvent::Modified(obj)
                        | WatchEvent::Deleted(obj),
                    )) if !self.in_shard(&obj) => {
                        // Not the shard's, but the watch has passed it: resume after it.
                        let resource_version = obj
                            .resource_version()
                            .filter(|rv| !rv.is_empty())
                            .unwrap_or(resource_version);
                        (
                            None,
                            State::Watching {
                                resource_version,
                                stream,
                            },
                        )
                    }
                    Some(Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj))) => {
                        let obj = self.compacted(obj);
                        watched(obj, "Apply", Event::Apply, &resource_version, stream)
                    }
                    Some(Ok(WatchEvent::Deleted(obj))) => {
                        watched(obj, "Delete", Event::Delete, &resource_version, stream)
                    }
                    Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                        trace!(resource_version = %bookmark.metadata.resource_version, "bookmark");
                        let resource_version = bookmark.metadata.resource_version;
                        self.reached(&resource_version, 0);
                        activity::bookmark();
                        (
                            None,
                            State::Watching {
                                resource_version,
                                stream,
                            },
                        )
                    }
                    Some(Ok(WatchEvent::Error(status))) => {
                        let next = if status.code == 410 {
                            debug!("watch expired (410 Gone); relisting");
                            State::Empty
                        } else if crate::retry::is_too_large(&status) {
                            // An API server whose watch cache is behind the one that served
                            // this version (behind a load balancer): it will get there.
                            // Resume from the same version, never relist, never go back.
                            info!(%resource_version, "the API server has not reached the watch's resourceVersion yet; retrying the watch from it");
                            State::Listed { resource_version }
                        } else if self.failed_resume.as_deref() == Some(resource_version.as_str()) {
                            // The same answer twice at the same point: resuming cannot get
                            // past it (a 1.36 server says 500 "PrevKv=nil" when a delete at
                            // the resume point was compacted away), so relist, as client-go
                            // does after any watch error.
                            info!(%resource_version, code = status.code, "watch failed twice at the same resourceVersion; relisting");
                            self.failed_resume = None;
                            State::Empty
                        } else {
                            self.failed_resume = Some(resource_version.clone());
                            State::Listed { resource_version }
                        };
                        (Some(Err(log_error(Error::WatchError(status)))), next)
                    }
                    // An event that could not be read may have been a change: resume from the
                    // last good resourceVersion so the server sends it again.
                    Some(Err(err)) => (
                        Some(Err(log_error(Error::WatchFailed(err)))),
                        State::Listed { resource_version },
                    ),
                    None => {
                        trace!(%resource_version, "watch ended; resuming");
                        (None, self.after_watch_end(resource_version))
                    }
                }
            }
        }
    }

    /// The state after a watch ended or went silent: resume, unless the watch was the start
    /// from [`Config::resume_from`] and the server never showed that it had reached that
    /// version (no event, no bookmark in a whole watch). A server answers a watch from a
    /// version it has not reached (a snapshot of another cluster, or from before an etcd
    /// restore) with silence, so resuming there again would wait forever: list instead.
    fn after_watch_end(&mut self, resource_version: String) -> State<A::Value> {
        if std::mem::take(&mut self.unconfirmed_start) {
            warn!(%resource_version, "the watch from the start version ended with no event or bookmark; the server may not have reached that version: relisting");
            State::Empty
        } else {
            State::Listed { resource_version }
        }
    }

    /// Fetches one LIST page of `size` objects and returns the state that sends it.
    async fn list_page(
        &mut self,
        continue_token: Option<String>,
        size: Option<u32>,
    ) -> Result<State<A::Value>> {
        let params = self.config.list_params(continue_token, size);
        let list = self
            .api
            .list(&params, self.shard_selector())
            .await
            .map_err(|err| log_error(Error::InitialListFailed(err)))?;
        self.note_shard_echo(list.shard_echo.as_deref());
        let items = list.items;
        let continue_token = list.continue_token.filter(|s| !s.is_empty());
        let resource_version = list.resource_version.filter(|s| !s.is_empty());
        let next_page_size = self.config.next_page_size(size, list.bytes);
        trace!(
            items = items.len(),
            bytes = list.bytes,
            more = continue_token.is_some(),
            next_page_size,
            "list page"
        );
        Ok(State::Listing {
            continue_token,
            resource_version,
            objects: items.into(),
            next_page_size,
        })
    }
}

/// Builds the item and next state for an object from a live watch.
fn watched<K: Resource>(
    obj: K,
    event: &'static str,
    make: fn(K) -> Event<K>,
    last_resource_version: &str,
    stream: WatchStream<K>,
) -> (Option<Result<Event<K>>>, State<K>) {
    if let Err(err) = check_name(&obj, event) {
        return (Some(Err(err)), State::Empty);
    }
    if let Some(resource_version) = obj.resource_version().filter(|rv| !rv.is_empty()) {
        return (
            Some(Ok(make(obj))),
            State::Watching {
                resource_version,
                stream,
            },
        );
    }
    let err = Error::InvalidObject {
        field: "metadata.resourceVersion",
        event,
    };
    warn!(error = %err, last_resource_version, "relisting, since the resume point is uncertain");
    (Some(Err(err)), State::Empty)
}

fn check_name<K: Resource>(obj: &K, event: &'static str) -> Result<()> {
    if obj.meta().name.as_deref().is_some_and(|n| !n.is_empty()) {
        Ok(())
    } else {
        let err = Error::InvalidObject {
            field: "metadata.name",
            event,
        };
        warn!(error = %err, "skipping object");
        Err(err)
    }
}

fn is_gone(err: &kube_client::Error) -> bool {
    status_code(err) == Some(410)
}

/// A server that predates streaming lists answers `422 Invalid` (1.20:
/// "resourceVersionMatch is forbidden for watch") or `400 Bad Request`.
fn refuses_streaming(err: &kube_client::Error) -> bool {
    matches!(status_code(err), Some(400 | 422))
}

/// Logs an error at a level that matches how much a person should care, and returns it.
fn log_error(err: Error) -> Error {
    match err.status_code() {
        // Every retry meets it again: the error item says it each time, and a consumer that
        // tracks a streak (kache-store's health) warns once.
        Some(403) => debug!(error = %err, "permission denied; check the RBAC rules for this watch"),
        Some(410) => debug!(error = %err, "resource version expired"),
        _ => debug!(error = %err, "watcher error"),
    }
    err
}
