use std::{collections::VecDeque, fmt::Debug, future::Future, task::Poll};

use futures::{Stream, StreamExt, stream::BoxStream};
use kube_client::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, WatchEvent, WatchParams},
    core::PartialObjectMeta,
};
use serde::{Deserialize, de::DeserializeOwned};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::activity;
use crate::backoff::{self, Backoff};
use crate::decode::Trimmed;
use crate::error::status_code;
use crate::progress::{self, Progress, StreamId};
use crate::shard::encode_query_value;
use crate::{Config, Error, Event, InitialListStrategy, Result, Shard};

/// The annotation on the bookmark that closes a streaming list's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Lists and then watches the objects that `api` and `config` select.
///
/// The stream opens with an initial sync (`Init`, one `InitApply` per object, `InitDone`) and
/// then yields `Apply` and `Delete` as objects change. It never ends by itself:
/// - a watch that times out or drops is resumed from the last seen resourceVersion (bookmarks
///   advance it), without a relist;
/// - a `410 Gone` (an ERROR event on the watch, or an expired continue token on a LIST page)
///   starts over with `Init` and a full relist;
/// - with [`Config::resume_from`](Config#structfield.resume_from) set, the stream skips the
///   initial sync and opens with the changes made since that version (a consumer restored
///   from a snapshot); a `410 Gone` there falls back to the initial sync;
/// - every error is yielded as an `Err` item and the stream goes on. The request that follows
///   an error waits first ([`Config::retry_backoff`], on by default), so a persistent error
///   is never a busy loop; a backoff adapter
///   ([`default_backoff`](crate::WatchStreamExt::default_backoff)) that polls the watcher
///   replaces that wait with its own.
///
/// Before each request the stream returns to the runtime at least once, so a task that drives
/// it can be aborted, and other tasks run, even when every request fails at once.
///
/// Objects missing `metadata.name` are skipped with an [`Error::InvalidObject`] item; a watch
/// event missing `metadata.resourceVersion` also makes the watcher relist, since the resume
/// point can no longer be trusted.
///
/// Bookmarks, and the resourceVersion of each completed list, are not events: the watcher
/// reports them to the consumer polling it, if that consumer asks (see [`Progress`](crate::Progress)).
///
/// ```no_run
/// use futures::TryStreamExt;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_watch::{watcher, Config, Event, WatchStreamExt};
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// let mut events = std::pin::pin!(watcher(api, Config::default().labels("app=web")).default_backoff());
/// while let Some(event) = events.try_next().await? {
///     match event {
///         Event::Apply(cm) => println!("changed {:?}", cm.metadata.name),
///         Event::Delete(cm) => println!("deleted {:?}", cm.metadata.name),
///         Event::Init | Event::InitApply(_) | Event::InitDone => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub fn watcher<K>(api: Api<K>, config: Config) -> impl Stream<Item = Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let keep_managed_fields = config.keep_managed_fields;
    run(
        FullObject {
            api,
            keep_managed_fields,
        },
        config,
    )
}

/// Like [`watcher`], but fetches only each object's metadata (`PartialObjectMeta`).
///
/// A cache of metadata is much smaller than one of full objects: use it when a controller
/// needs names, labels, owners or resourceVersions but not specs.
pub fn metadata_watcher<K>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<Event<PartialObjectMeta<K>>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let keep_managed_fields = config.keep_managed_fields;
    run(
        MetaOnly {
            api,
            keep_managed_fields,
        },
        config,
    )
}

/// Watches one object by name: yields `Some(object)` when it is listed, created or changed,
/// and `None` when it is deleted or absent from a (re)list.
///
/// ```no_run
/// use futures::TryStreamExt;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_watch::watch_object;
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// let mut stream = std::pin::pin!(watch_object(api, "settings"));
/// while let Some(cm) = stream.try_next().await? {
///     println!("settings now: {:?}", cm.and_then(|cm| cm.data));
/// }
/// # Ok(())
/// # }
/// ```
pub fn watch_object<K>(api: Api<K>, name: &str) -> impl Stream<Item = Result<Option<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = Config::default().fields(&format!("metadata.name={name}"));
    // `seen` says whether the current list has listed the object, so that a list without it
    // reports `None` (deleted while the watch was down).
    watcher(api, config)
        .scan(false, |seen, event| {
            let item = match event {
                Err(err) => Some(Err(err)),
                Ok(Event::Init) => {
                    *seen = false;
                    None
                }
                Ok(Event::InitApply(obj)) => {
                    *seen = true;
                    Some(Ok(Some(obj)))
                }
                Ok(Event::InitDone) => (!*seen).then_some(Ok(None)),
                Ok(Event::Apply(obj)) => Some(Ok(Some(obj))),
                Ok(Event::Delete(_)) => Some(Ok(None)),
            };
            futures::future::ready(Some(item))
        })
        .filter_map(futures::future::ready)
}

/// Asks the server whether it shards lists and watches (KEP-5866): one LIST of at most one
/// object with a `shardSelector`, whose response a sharding server marks with the selector.
///
/// A [`Config::shard`](crate::Config::shard) works either way (the watcher filters on the
/// client where the server does not); this tells what it will cost, for a start-up log or to
/// choose how to split work: without server support, every watch receives every object.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube_client::{Api, Client};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let api: Api<ConfigMap> = Api::default_namespaced(Client::try_default().await?);
/// if !kache_watch::server_shards(&api).await? {
///     println!("each replica will receive every object and filter it");
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::InitialListFailed`] if the LIST fails.
pub async fn server_shards<K>(api: &Api<K>) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let params = ListParams {
        limit: Some(1),
        ..ListParams::default()
    };
    let selector = Shard::new([crate::ShardRange::full()])?.selector();
    let page = FullObject {
        api: api.clone(),
        keep_managed_fields: false,
    }
    .list(&params, Some(&selector))
    .await
    .map_err(Error::InitialListFailed)?;
    Ok(page.shard_echo.is_some())
}

pub(crate) type WatchStream<K> = BoxStream<'static, kube_client::Result<WatchEvent<K>>>;

/// Where the watcher stands between two items.
enum State<K> {
    /// Nothing listed yet, or a relist is due.
    Empty,
    /// Paging through a LIST; `Init` has been sent and `objects` are waiting to be sent.
    Listing {
        continue_token: Option<String>,
        resource_version: Option<String>,
        objects: VecDeque<K>,
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

pub(crate) fn run<A>(api: A, config: Config) -> impl Stream<Item = Result<Event<A::Value>>> + Send
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
            State::Empty => match self.list_page(None).await {
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
            } => {
                if let Some(obj) = objects.pop_front() {
                    if !self.in_shard(&obj) {
                        let state = State::Listing {
                            continue_token,
                            resource_version,
                            objects,
                        };
                        return (None, state);
                    }
                    let item = match check_name(&obj, "InitApply") {
                        Ok(()) => Ok(Event::InitApply(obj)),
                        Err(err) => Err(err),
                    };
                    return (
                        Some(item),
                        State::Listing {
                            continue_token,
                            resource_version,
                            objects,
                        },
                    );
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
                    (Some(token), _) => match self.list_page(Some(token)).await {
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
                        let item = check_name(&obj, "InitApply").map(|()| Event::InitApply(obj));
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

    /// Fetches one LIST page and returns the state that sends it.
    async fn list_page(&mut self, continue_token: Option<String>) -> Result<State<A::Value>> {
        let params = self.config.list_params(continue_token);
        let list = self
            .api
            .list(&params, self.shard_selector())
            .await
            .map_err(|err| log_error(Error::InitialListFailed(err)))?;
        self.note_shard_echo(list.shard_echo.as_deref());
        let items = list.items;
        let continue_token = list.continue_token.filter(|s| !s.is_empty());
        let resource_version = list.resource_version.filter(|s| !s.is_empty());
        trace!(
            items = items.len(),
            more = continue_token.is_some(),
            "list page"
        );
        Ok(State::Listing {
            continue_token,
            resource_version,
            objects: items.into(),
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

/// One LIST page: its objects and what the watcher needs of its metadata.
pub(crate) struct Page<V> {
    pub(crate) items: Vec<V>,
    pub(crate) resource_version: Option<String>,
    pub(crate) continue_token: Option<String>,
    /// `metadata.shardInfo.selector`: the shard selector a server that shards echoes back.
    pub(crate) shard_echo: Option<String>,
}

impl<V> Page<V> {
    fn map<W>(self, f: impl FnMut(V) -> W) -> Page<W> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            resource_version: self.resource_version,
            continue_token: self.continue_token,
            shard_echo: self.shard_echo,
        }
    }
}

/// A list response read with its `shardInfo`, which k8s-openapi's `ListMeta` has only when
/// built for Kubernetes 1.36 or later (the final binary picks the version, not kache).
#[derive(Deserialize)]
#[serde(bound(deserialize = "V: DeserializeOwned"))]
struct ShardedList<V> {
    #[serde(default)]
    metadata: ShardedListMeta,
    #[serde(default = "Vec::new", deserialize_with = "null_as_empty")]
    items: Vec<V>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShardedListMeta {
    resource_version: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    shard_info: Option<ShardInfo>,
}

#[derive(Deserialize)]
struct ShardInfo {
    selector: String,
}

pub(crate) fn null_as_empty<'de, D, V>(deserializer: D) -> std::result::Result<Vec<V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: DeserializeOwned,
{
    Ok(Option::<Vec<V>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Adds `shardSelector`, if any, to a request that kube-client built (its parameters have no
/// field for it) and names the request for kube-client's tracing, as `Api`'s own methods do.
pub(crate) fn prepare(
    request: std::result::Result<http::Request<Vec<u8>>, kube_client::core::request::Error>,
    selector: Option<&str>,
    name: &'static str,
) -> kube_client::Result<http::Request<Vec<u8>>> {
    let mut request = request.map_err(kube_client::Error::BuildRequest)?;
    if let Some(selector) = selector {
        let uri = format!(
            "{}&shardSelector={}",
            request.uri(),
            encode_query_value(selector)
        );
        *request.uri_mut() = uri.parse().map_err(|err: http::uri::InvalidUri| {
            kube_client::Error::BuildRequest(kube_client::core::request::Error::BuildRequest(
                err.into(),
            ))
        })?;
    }
    request.extensions_mut().insert(name);
    Ok(request)
}

/// Sends a LIST request and decodes its page, without `managedFields` unless `keep` (see
/// [`Trimmed`]).
async fn list_page<V: Clone + DeserializeOwned>(
    client: Client,
    request: http::Request<Vec<u8>>,
    keep_managed_fields: bool,
) -> kube_client::Result<Page<V>> {
    if keep_managed_fields {
        decode_list::<V>(client, request).await
    } else {
        Ok(decode_list::<Trimmed<V>>(client, request)
            .await?
            .map(|Trimmed(obj)| obj))
    }
}

async fn decode_list<V: Clone + DeserializeOwned>(
    client: Client,
    request: http::Request<Vec<u8>>,
) -> kube_client::Result<Page<V>> {
    let list: ShardedList<V> = client.request(request).await?;
    Ok(Page {
        items: list.items,
        resource_version: list.metadata.resource_version,
        continue_token: list.metadata.continue_token,
        shard_echo: list.metadata.shard_info.map(|info| info.selector),
    })
}

/// Sends a WATCH request and decodes its events, objects without `managedFields` unless
/// `keep` (see [`Trimmed`]).
async fn watch_events<V: Clone + DeserializeOwned + Send + 'static>(
    client: Client,
    request: http::Request<Vec<u8>>,
    keep_managed_fields: bool,
) -> kube_client::Result<WatchStream<V>> {
    if keep_managed_fields {
        return client
            .request_events::<V>(request)
            .await
            .map(StreamExt::boxed);
    }
    let events = client.request_events::<Trimmed<V>>(request).await?;
    Ok(events
        .map(|event| {
            event.map(|event| match event {
                WatchEvent::Added(Trimmed(obj)) => WatchEvent::Added(obj),
                WatchEvent::Modified(Trimmed(obj)) => WatchEvent::Modified(obj),
                WatchEvent::Deleted(Trimmed(obj)) => WatchEvent::Deleted(obj),
                WatchEvent::Bookmark(bookmark) => WatchEvent::Bookmark(bookmark),
                WatchEvent::Error(status) => WatchEvent::Error(status),
            })
        })
        .boxed())
}

/// Lists and watches either whole objects or only their metadata.
pub(crate) trait ApiMode: Send + Sync {
    type Value: Resource + Clone + Debug + Send + 'static;

    /// One LIST page; with a shard selector, sent as `shardSelector`.
    fn list(
        &self,
        params: &ListParams,
        shard: Option<&str>,
    ) -> impl Future<Output = kube_client::Result<Page<Self::Value>>> + Send;

    /// A WATCH from `version`; with a shard selector, sent as `shardSelector`.
    fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> impl Future<Output = kube_client::Result<WatchStream<Self::Value>>> + Send;
}

/// Whole objects; `managedFields` decoded only if kept ([`Config::keep_managed_fields`]).
struct FullObject<K> {
    api: Api<K>,
    keep_managed_fields: bool,
}

impl<K> ApiMode for FullObject<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    type Value = K;

    async fn list(&self, params: &ListParams, shard: Option<&str>) -> kube_client::Result<Page<K>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = if K::metadata_api() {
            builder.list_metadata(params)
        } else {
            builder.list(params)
        };
        let request = prepare(request, shard, "list")?;
        list_page(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }

    async fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> kube_client::Result<WatchStream<K>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = if K::metadata_api() {
            builder.watch_metadata(params, version)
        } else {
            builder.watch(params, version)
        };
        let request = prepare(request, shard, "watch")?;
        watch_events(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }
}

/// Only the objects' metadata; `managedFields` decoded only if kept.
struct MetaOnly<K> {
    api: Api<K>,
    keep_managed_fields: bool,
}

impl<K> ApiMode for MetaOnly<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    type Value = PartialObjectMeta<K>;

    async fn list(
        &self,
        params: &ListParams,
        shard: Option<&str>,
    ) -> kube_client::Result<Page<Self::Value>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = prepare(builder.list_metadata(params), shard, "list_metadata")?;
        list_page(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }

    async fn watch(
        &self,
        params: &WatchParams,
        version: &str,
        shard: Option<&str>,
    ) -> kube_client::Result<WatchStream<Self::Value>> {
        let builder = kube_client::core::Request::new(self.api.resource_url());
        let request = prepare(
            builder.watch_metadata(params, version),
            shard,
            "watch_metadata",
        )?;
        watch_events(
            self.api.clone().into_client(),
            request,
            self.keep_managed_fields,
        )
        .await
    }
}
