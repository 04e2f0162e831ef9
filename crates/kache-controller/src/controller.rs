//! The controller: triggers from kache stores, the queue, the reconciles and their fences.

use std::any::TypeId;
/// The driver's maps hash with ahash, as the queue's.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, FuturesUnordered, SelectAll};
use futures::{FutureExt, Stream, StreamExt};
use kache_store::{Event, ObjectKey, Store};
use kube_client::Resource;
use kube_client::core::{ClusterResourceScope, NamespaceResourceScope};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::action::{Action, Retry};
use crate::config::Config;
use crate::error::Error;
use crate::fence::{self, Fenced, Written};
#[cfg(feature = "metrics")]
use crate::metrics::Reporter;
use crate::ownership::Ownership;
use crate::queue::{Outcome, Popped, Priority, Queue};
use crate::ranges::Ranges;

/// Without the `metrics` feature, nothing is reported.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
enum Reporter {}

#[cfg(not(feature = "metrics"))]
impl Reporter {
    fn added(&self, _: usize) {
        match *self {}
    }
    fn depth(&self, _: usize) {
        match *self {}
    }
    fn started(&self, _: Duration, _: usize, _: bool) {
        match *self {}
    }
    fn finished(&self, _: Duration, _: &'static str, _: bool, _: usize) {
        match *self {}
    }
    fn running(&self, _: Duration, _: Duration) {
        match *self {}
    }
    fn fenced(&self) {
        match *self {}
    }
    fn fence_timed_out(&self) {
        match *self {}
    }
    fn refused(&self) {
        match *self {}
    }
}

/// Triggers taken in one pass of the driver beyond the first.
const TRIGGER_BATCH: usize = 255;

/// What made a key due.
enum Trigger {
    Key(ObjectKey, Priority),
    All(Priority),
}

/// A reconcile loop over a kache [`Store`]: it subscribes to the store (and to the stores of
/// related objects), runs a reconcile per changed object, and never runs two reconciles of one
/// object at once. It makes no watch of its own: the stores may be shared with any other
/// readers and controllers.
///
/// Its builder follows kube-runtime's `Controller`: [`owns`](Self::owns),
/// [`watches`](Self::watches), [`reconcile_all_on`](Self::reconcile_all_on),
/// [`graceful_shutdown_on`](Self::graceful_shutdown_on), [`run`](Self::run), with the same
/// [`Action`]. See the crate's docs for the queue's rules and the fences.
pub struct Controller<K> {
    store: Store<K>,
    config: Config,
    triggers: Vec<BoxStream<'static, Trigger>>,
    fence_stores: Vec<Fenced>,
    shutdown: Option<BoxFuture<'static, ()>>,
    ownership: Option<Ownership>,
}

impl<K> fmt::Debug for Controller<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

impl<K> Controller<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// A controller of the objects in `store`, which it subscribes to: every object is
    /// reconciled once after the store's first sync (as background work), then on each change.
    #[must_use]
    pub fn new(store: Store<K>, config: Config) -> Self {
        let triggers = store
            .subscribe()
            .filter_map(|event| {
                futures::future::ready(match event {
                    Event::InitApply(object) => Some(Trigger::Key(
                        ObjectKey::from_object(&*object),
                        Priority::Background,
                    )),
                    Event::Apply(object) => Some(Trigger::Key(
                        ObjectKey::from_object(&*object),
                        Priority::Live,
                    )),
                    // A deleted object is not reconciled (use a finalizer to act on deletes).
                    Event::Delete(_) | Event::Init | Event::InitDone => None,
                })
            })
            .boxed();
        Self {
            fence_stores: vec![Fenced {
                store: Arc::new(store.clone()),
                owner: None,
            }],
            store,
            config,
            triggers: vec![triggers],
            shutdown: None,
            ownership: None,
        }
    }

    /// Reconciles the owner of each object of `store` that changes or is deleted: the object
    /// its `ownerReferences` name with `controller: true` and this controller's kind. For
    /// kinds known at compile time; see [`owns_with`](Self::owns_with) for dynamic ones.
    #[must_use]
    pub fn owns<C>(self, store: Store<C>) -> Self
    where
        C: Resource + Send + Sync + 'static,
        K::DynamicType: Default,
    {
        self.owns_with(store, &K::DynamicType::default())
    }

    /// [`owns`](Self::owns), for a controller of a dynamic kind, `dyntype`.
    #[must_use]
    pub fn owns_with<C>(self, store: Store<C>, dyntype: &K::DynamicType) -> Self
    where
        C: Resource + Send + Sync + 'static,
    {
        let (kind, api_version) = (
            K::kind(dyntype).into_owned(),
            K::api_version(dyntype).into_owned(),
        );
        let scope = TypeId::of::<K::Scope>();
        let owners = self.store.clone();
        let mapper = move |child: &C| -> Option<ObjectKey> {
            let owner = child
                .meta()
                .owner_references
                .as_ref()?
                .iter()
                .find(|owner| {
                    owner.controller == Some(true)
                        && owner.kind == kind
                        && owner.api_version == api_version
                })?;
            let namespace = child.meta().namespace.as_deref();
            let key = if scope == TypeId::of::<NamespaceResourceScope>() {
                ObjectKey::new(namespace, &owner.name)
            } else if scope == TypeId::of::<ClusterResourceScope>() {
                ObjectKey::new(None, &owner.name)
            } else {
                // A dynamic kind: the owner in the child's namespace if the store has one
                // there, else the cluster-scoped one.
                let namespaced = ObjectKey::new(namespace, &owner.name);
                if owners.get_key(&namespaced).is_some() {
                    namespaced
                } else {
                    ObjectKey::new(None, &owner.name)
                }
            };
            Some(key)
        };
        let owner = Some((
            K::api_version(dyntype).into_owned(),
            K::kind(dyntype).into_owned(),
        ));
        self.related(store, owner, move |child| {
            mapper(child).into_iter().collect()
        })
    }

    /// Reconciles the objects `mapper` names for each object of `store` that changes or is
    /// deleted.
    #[must_use]
    pub fn watches<O, I>(self, store: Store<O>, mapper: impl Fn(&O) -> I + Send + 'static) -> Self
    where
        O: Resource + Send + Sync + 'static,
        I: IntoIterator<Item = ObjectKey>,
    {
        self.related(store, None, move |object| {
            mapper(object).into_iter().collect()
        })
    }

    fn related<O>(
        mut self,
        store: Store<O>,
        owner: Option<(String, String)>,
        mapper: impl Fn(&O) -> Vec<ObjectKey> + Send + 'static,
    ) -> Self
    where
        O: Resource + Send + Sync + 'static,
    {
        // A snapshot after the first (the subscriber fell a buffer behind and resynced) does not
        // say what was deleted meanwhile, and a deleted child's owner must still be reconciled:
        // such a snapshot reconciles every object of the controller, once, at its end.
        let (mut synced, mut resyncing) = (false, false);
        let triggers = store
            .subscribe()
            .flat_map(move |event| {
                let (object, priority) = match event {
                    Event::InitApply(_) if resyncing => return stream::iter(Vec::new()),
                    Event::InitApply(object) => (object, Priority::Background),
                    Event::Apply(object) | Event::Delete(object) => (object, Priority::Live),
                    Event::Init => {
                        resyncing = synced;
                        return stream::iter(Vec::new());
                    }
                    Event::InitDone => {
                        let all = std::mem::take(&mut resyncing);
                        synced = true;
                        let triggers = if all {
                            debug!("a related store's subscriber resynced: every object is reconciled");
                            vec![Trigger::All(Priority::Background)]
                        } else {
                            Vec::new()
                        };
                        return stream::iter(triggers);
                    }
                };
                let keys = std::panic::catch_unwind(AssertUnwindSafe(|| mapper(&object)))
                    .unwrap_or_else(|panic| {
                        warn!(message = %panic_message(&*panic), "a trigger mapper panicked; the change triggers nothing");
                        Vec::new()
                    });
                stream::iter(
                    keys.into_iter()
                        .map(|key| Trigger::Key(key, priority))
                        .collect::<Vec<_>>(),
                )
            })
            .boxed();
        self.triggers.push(triggers);
        self.fence_stores.push(Fenced {
            store: Arc::new(store),
            owner,
        });
        self
    }

    /// Reconciles every object of the store each time `trigger` yields, as background work.
    #[must_use]
    pub fn reconcile_all_on(mut self, trigger: impl Stream<Item = ()> + Send + 'static) -> Self {
        self.triggers
            .push(trigger.map(|()| Trigger::All(Priority::Background)).boxed());
        self
    }

    /// Reconciles only the objects whose uid hash is in a range `ownership` holds: a replica's
    /// share of the work ([`Replica::ownership`](crate::replicas::Replica::ownership)). An
    /// object is reconciled only while its range is held and the replica's authority is
    /// current; a reconcile running when its range is revoked is stopped (its future dropped).
    /// Queued objects whose range left are dropped at their turn; the objects of a range that
    /// arrives are queued (as background work).
    #[must_use]
    pub fn within(mut self, ownership: Ownership) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// Shuts down when `signal` resolves: no reconcile starts after it, those running may
    /// finish within [`Config::shutdown_timeout`], then [`run`](Self::run)'s stream ends.
    #[must_use]
    pub fn graceful_shutdown_on(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(signal.boxed());
        self
    }

    /// Runs the controller: a stream of each reconcile's result, to be polled (the controller
    /// runs while it is). `reconcile` gets the object as the store holds it when the reconcile
    /// starts; `error_policy` chooses what follows a failure, given the attempt and the
    /// object's backoff ([`Retry`]). A reconcile that panics fails alone: it is retried with
    /// its backoff, and the stream reports it.
    pub fn run<Ctx, R, Fut, E, P>(
        self,
        reconcile: R,
        error_policy: P,
        context: Arc<Ctx>,
    ) -> impl Stream<Item = Result<(ObjectKey, Action), Error<E>>> + Send
    where
        Ctx: Send + Sync + 'static,
        R: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
        P: Fn(Arc<K>, &E, Arc<Ctx>, Retry) -> Action + Send + 'static,
    {
        let Self {
            store,
            config,
            triggers,
            fence_stores,
            shutdown,
            ownership,
        } = self;
        let mut triggers: SelectAll<_> = triggers.into_iter().collect();
        if let Some(period) = config.resync {
            let ticks = tokio::time::interval_at(Instant::now() + period, period);
            triggers.push(
                tokio_stream_interval(ticks)
                    .map(|()| Trigger::All(Priority::Background))
                    .boxed(),
            );
        }
        let state = Run {
            queue: Queue::new(config.queue.clone(), Instant::now()),
            store,
            triggers,
            triggers_open: true,
            fence_stores: fence_stores.into(),
            running: FuturesUnordered::new(),
            fences: FuturesUnordered::new(),
            writes: HashMap::default(),
            shutdown: shutdown.unwrap_or_else(|| futures::future::pending().boxed()),
            stopping: None,
            starts: HashMap::default(),
            shard: ownership.map(|ownership| Sharded {
                changes: {
                    // The ranges held before the controller started arrive at its first pass.
                    let mut changes = ownership.changes();
                    changes.mark_changed();
                    changes
                },
                ownership,
                allowed: Ranges::empty(),
                running: HashMap::default(),
            }),
            reporter: config.reporter(),
            reconcile,
            error_policy,
            context,
            config,
        };
        stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
    }
}

/// Resolves when a replica's ownership changes; never without one.
async fn ownership_changed(shard: Option<&mut Sharded>) {
    if let Some(shard) = shard
        && shard.changes.changed().await.is_ok()
    {
        return;
    }
    futures::future::pending::<()>().await;
}

/// An interval as a stream of ticks.
fn tokio_stream_interval(mut ticks: tokio::time::Interval) -> impl Stream<Item = ()> + Send {
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stream::unfold(ticks, |mut ticks| async move {
        ticks.tick().await;
        Some(((), ticks))
    })
}

/// A replica's share of the work, as the driver follows it.
struct Sharded {
    ownership: Ownership,
    changes: tokio::sync::watch::Receiver<u64>,
    /// The ranges held at the last look: a range that arrives is queued.
    allowed: Ranges,
    /// The uid hash of each running reconcile, and how to stop it.
    running: HashMap<ObjectKey, (u64, futures::future::AbortHandle)>,
}

impl Drop for Sharded {
    /// A controller dropped with reconciles running stops them: they no longer hold their
    /// ranges (a replica leaving can release them).
    fn drop(&mut self) {
        for (hash, _) in self.running.values() {
            self.ownership.ended(*hash);
        }
    }
}

/// How a reconcile ended.
enum Ending<E> {
    Returned(Result<Action, E>),
    Panicked(String),
    /// Stopped: its range was revoked.
    Revoked,
}

/// A reconcile's end, as the driver learns it.
struct Ended<E> {
    key: ObjectKey,
    result: Ending<E>,
    object: Arc<dyn std::any::Any + Send + Sync>,
    writes: Vec<Written>,
}

/// The controller's state while it runs.
struct Run<K, Ctx, R, E, P> {
    queue: Queue<ObjectKey>,
    store: Store<K>,
    triggers: SelectAll<BoxStream<'static, Trigger>>,
    triggers_open: bool,
    fence_stores: Arc<[Fenced]>,
    running: FuturesUnordered<BoxFuture<'static, Ended<E>>>,
    fences: FuturesUnordered<BoxFuture<'static, (ObjectKey, bool)>>,
    /// The writes of each object's last reconcile, until the caches show them.
    writes: HashMap<ObjectKey, Vec<Written>>,
    shutdown: BoxFuture<'static, ()>,
    /// Set once shutting down: when running reconciles are abandoned.
    stopping: Option<Instant>,
    /// When each running reconcile started.
    starts: HashMap<ObjectKey, Instant>,
    shard: Option<Sharded>,
    reporter: Option<Reporter>,
    reconcile: R,
    error_policy: P,
    context: Arc<Ctx>,
    config: Config,
}

impl<K, Ctx, R, Fut, E, P> Run<K, Ctx, R, E, P>
where
    K: Resource + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
    P: Fn(Arc<K>, &E, Arc<Ctx>, Retry) -> Action + Send + 'static,
{
    /// Drives the controller to its next result; `None` once shut down.
    async fn next(&mut self) -> Option<Result<(ObjectKey, Action), Error<E>>> {
        loop {
            if let Some(deadline) = self.stopping {
                match self.while_stopping(deadline).await {
                    Some(done) => return done,
                    None => continue,
                }
            }
            self.start_ready();
            self.report_running();
            // While reconciles run, the gauges of their running time move every second.
            // Timers only when something waits on them: creating one per pass costs more than
            // the rest of a pass.
            let ticking = self.reporter.is_some() && !self.running.is_empty();
            let gauges = async move {
                if ticking {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    futures::future::pending::<()>().await;
                }
            };
            // A replica's authority lapses at a known instant: its running reconciles stop then.
            let lapse = self.lapse_instant();
            let lapse = async move {
                match lapse {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => futures::future::pending().await,
                }
            };
            let wakeup = self.queue.next_wakeup();
            let sleep = async move {
                match wakeup {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(ended) = self.running.next(), if !self.running.is_empty() => {
                    return Some(self.finish(ended));
                }
                Some((key, timed_out)) = self.fences.next(), if !self.fences.is_empty() => {
                    if timed_out {
                        debug!(controller = %self.config.name, object = %key, "fence timed out; the reconcile runs");
                        if let Some(reporter) = &self.reporter {
                            reporter.fence_timed_out();
                        }
                    }
                    self.queue.unfence(&key, Instant::now());
                }
                trigger = self.triggers.next(), if self.triggers_open => match trigger {
                    Some(trigger) => {
                        self.trigger(trigger);
                        // The triggers already waiting, in one pass (a bounded batch, so that
                        // completions and starts keep their turn).
                        for _ in 0..TRIGGER_BATCH {
                            match self.triggers.next().now_or_never() {
                                Some(Some(trigger)) => self.trigger(trigger),
                                Some(None) => {
                                    self.triggers_open = false;
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                    None => self.triggers_open = false,
                },
                () = ownership_changed(self.shard.as_mut()) => self.follow_ownership(),
                () = lapse => self.follow_ownership(),
                () = sleep => {}
                () = gauges => {}
                () = &mut self.shutdown => {
                    info!(controller = %self.config.name, running = self.running.len(), "shutting down: no new reconciles");
                    self.stopping = Some(Instant::now() + self.config.shutdown_timeout);
                }
            }
            if !self.triggers_open && self.running.is_empty() && self.queue.depth() == 0 {
                // Every store is gone: nothing can change any more.
                return None;
            }
        }
    }

    /// One step of a shutdown: the next result (`Some`), or `None` to look again.
    async fn while_stopping(
        &mut self,
        deadline: Instant,
    ) -> Option<Option<Result<(ObjectKey, Action), Error<E>>>> {
        if self.running.is_empty() {
            info!(controller = %self.config.name, "controller shut down");
            return Some(None);
        }
        // A replica's ranges can still be revoked, or its authority lapse, while its
        // reconciles finish.
        let lapse = self.lapse_instant();
        let lapse = async move {
            match lapse {
                Some(at) => tokio::time::sleep_until(at).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            ended = tokio::time::timeout_at(deadline, self.running.next()) => Some(match ended {
                Ok(Some(ended)) => Some(self.finish(ended)),
                Ok(None) => None,
                Err(_) => {
                    warn!(controller = %self.config.name, abandoned = self.running.len(), "shutdown deadline passed; abandoning running reconciles");
                    None
                }
            }),
            () = ownership_changed(self.shard.as_mut()) => {
                self.follow_ownership();
                None
            }
            () = lapse => {
                self.follow_ownership();
                None
            }
        }
    }

    fn report_running(&self) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let now = Instant::now();
        let (total, longest) = self.starts.values().fold(
            (Duration::ZERO, Duration::ZERO),
            |(total, longest), started| {
                let ran = now.saturating_duration_since(*started);
                (total + ran, longest.max(ran))
            },
        );
        reporter.running(total, longest);
        reporter.depth(self.queue.depth());
    }

    fn trigger(&mut self, trigger: Trigger) {
        let now = Instant::now();
        match trigger {
            Trigger::Key(key, priority) => {
                if !self.in_share(&key) {
                    // Another replica's: queued if its range arrives.
                    return;
                }
                self.queue.add(key, priority, now);
                if let Some(reporter) = &self.reporter {
                    reporter.added(self.queue.depth());
                }
            }
            Trigger::All(priority) => {
                let allowed = self
                    .shard
                    .as_ref()
                    .map(|shard| shard.ownership.held_at(now));
                for object in self.store.state() {
                    if allowed
                        .as_ref()
                        .is_some_and(|allowed| !allowed.contains(uid_hash(&*object)))
                    {
                        continue;
                    }
                    self.queue
                        .add(ObjectKey::from_object(&*object), priority, now);
                    if let Some(reporter) = &self.reporter {
                        reporter.added(self.queue.depth());
                    }
                }
            }
        }
    }

    /// When a replica's authority lapses, while reconciles run.
    fn lapse_instant(&self) -> Option<Instant> {
        self.shard
            .as_ref()
            .filter(|shard| !shard.running.is_empty())
            .and_then(|shard| shard.ownership.valid_until())
    }

    /// Whether `key` is this controller's to reconcile: always without an ownership; with one,
    /// if its object is in a held range (an object not in the store yet is let through, and
    /// checked at its turn).
    fn in_share(&self, key: &ObjectKey) -> bool {
        let Some(shard) = &self.shard else {
            return true;
        };
        self.store
            .get_key(key)
            .is_none_or(|object| shard.allowed.contains(uid_hash(&*object)))
    }

    /// After the ownership changed: queues the objects of the ranges that arrived, and stops
    /// the reconciles whose range was revoked.
    fn follow_ownership(&mut self) {
        let now = Instant::now();
        let Some(shard) = &mut self.shard else {
            return;
        };
        let held = shard.ownership.held_at(now);
        let arrived = held.minus(&shard.allowed);
        shard.allowed = held;
        for (key, (hash, stop)) in &shard.running {
            if !shard.ownership.may_run(*hash, now) {
                debug!(controller = %self.config.name, object = %key, "its range was revoked: the reconcile stops");
                stop.abort();
            }
        }
        if arrived.is_empty() {
            return;
        }
        debug!(controller = %self.config.name, ranges = %arrived, "ranges arrived: their objects are queued");
        for object in self.store.state() {
            if arrived.contains(uid_hash(&*object)) {
                self.queue
                    .add(ObjectKey::from_object(&*object), Priority::Background, now);
            }
        }
        if let Some(reporter) = &self.reporter {
            reporter.added(self.queue.depth());
        }
    }

    /// Starts reconciles while there is room and a key is ready.
    fn start_ready(&mut self) {
        let now = Instant::now();
        while self.running.len() < self.config.concurrency {
            let Some(popped) = self.queue.pop(now) else {
                return;
            };
            self.start(popped, now);
        }
    }

    fn start(&mut self, popped: Popped<ObjectKey>, now: Instant) {
        let Popped {
            key,
            failures,
            priority,
            queued_at,
        } = popped;
        let Some(object) = self.store.get_key(&key) else {
            // Deleted since it was queued: nothing to reconcile.
            debug!(controller = %self.config.name, object = %key, "not in the store any more; skipped");
            self.queue.done(&key, Outcome::Success(None), false, now);
            return;
        };
        let hash = uid_hash(&*object);
        if let Some(shard) = &self.shard
            && !shard.ownership.try_start(hash, now)
        {
            // The range left this replica (or its authority lapsed) since the key was queued.
            debug!(controller = %self.config.name, object = %key, "not in this replica's ranges any more; dropped");
            if let Some(reporter) = &self.reporter {
                reporter.refused();
            }
            self.queue.done(&key, Outcome::Success(None), false, now);
            return;
        }
        let mut stale = false;
        if let Some(writes) = self.writes.remove(&key)
            && !fence::visible(&self.fence_stores, &writes)
        {
            // Only with fences off, or after a fence timed out.
            stale = true;
            debug!(controller = %self.config.name, object = %key, "reconcile starts on a cache older than its last writes");
        }
        if let Some(reporter) = &self.reporter {
            self.starts.insert(key.clone(), now);
            reporter.started(
                now.saturating_duration_since(queued_at),
                self.running.len() + 1,
                stale,
            );
        }
        let span = tracing::info_span!("reconcile", controller = %self.config.name, object = %key, attempt = failures + 1, ?priority, queued = ?now.saturating_duration_since(queued_at));
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (self.reconcile)(Arc::clone(&object), Arc::clone(&self.context))
        }));
        let future = match made {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().boxed(),
            Err(panic) => futures::future::ready(Err(panic)).boxed(),
        };
        let (run, stop) = futures::future::abortable(fence::recording(future));
        // Each poll of a replica's reconcile first checks that its range is still held and the
        // authority current: a reconcile is never polled (and sends nothing) past either, even
        // when the driver is late to stop it.
        let gate = self.shard.as_ref().map(|shard| shard.ownership.clone());
        let run = async move {
            let mut run = std::pin::pin!(run);
            futures::future::poll_fn(|cx| {
                if let Some(ownership) = &gate
                    && !ownership.may_run(hash, Instant::now())
                {
                    return std::task::Poll::Ready(Err(futures::future::Aborted));
                }
                run.as_mut().poll(cx)
            })
            .await
        };
        if let Some(shard) = &mut self.shard {
            shard.running.insert(key.clone(), (hash, stop));
        }
        let erased: Arc<dyn std::any::Any + Send + Sync> = object;
        self.running.push(
            async move {
                let (result, writes) = match run.await {
                    Ok((Ok(returned), writes)) => (Ending::Returned(returned), writes),
                    Ok((Err(panic), writes)) => (Ending::Panicked(panic_message(&*panic)), writes),
                    Err(futures::future::Aborted) => (Ending::Revoked, Vec::new()),
                };
                Ended {
                    key,
                    result,
                    object: erased,
                    writes,
                }
            }
            .instrument(span)
            .boxed(),
        );
    }

    /// Books a reconcile's end; the item the stream yields for it.
    fn finish(&mut self, ended: Ended<E>) -> Result<(ObjectKey, Action), Error<E>> {
        let now = Instant::now();
        let Ended {
            key,
            result,
            object,
            writes,
        } = ended;
        let fence = if writes.is_empty() {
            None
        } else {
            let fence = self
                .config
                .fences
                .then(|| fence::fence(&self.fence_stores, &writes, self.config.fence_timeout))
                .flatten();
            self.writes.insert(key.clone(), writes);
            fence
        };
        let fenced = fence.is_some();
        if let Some(shard) = &mut self.shard
            && let Some((hash, _)) = shard.running.remove(&key)
        {
            shard.ownership.ended(hash);
        }
        let (outcome, item) = match result {
            Ending::Revoked => {
                debug!(controller = %self.config.name, object = %key, "reconcile stopped: its range was revoked");
                (
                    Outcome::Success(None),
                    Err(Error::Revoked { key: key.clone() }),
                )
            }
            Ending::Returned(Ok(action)) => (
                Outcome::Success(action.requeue_after()),
                Ok((key.clone(), action)),
            ),
            Ending::Returned(Err(err)) => {
                let object = object.downcast::<K>().expect("the reconciled object");
                let attempt = self.queue.failures_of(&key) + 1;
                let retry = Retry {
                    attempt,
                    backoff: self.queue.backoff(attempt),
                };
                let context = Arc::clone(&self.context);
                let policy = &self.error_policy;
                let action = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    policy(object, &err, context, retry)
                }))
                .unwrap_or_else(|panic| {
                    warn!(controller = %self.config.name, object = %key, message = %panic_message(&*panic), "the error policy panicked; retried with backoff");
                    Action::requeue(retry.backoff)
                });
                (
                    Outcome::Failure(action.requeue_after()),
                    Err(Error::ReconcileFailed {
                        key: key.clone(),
                        source: err,
                    }),
                )
            }
            Ending::Panicked(message) => {
                warn!(controller = %self.config.name, object = %key, %message, "reconcile panicked; retried with backoff");
                let attempt = self.queue.failures_of(&key) + 1;
                (
                    Outcome::Failure(Some(self.queue.backoff(attempt))),
                    Err(Error::ReconcilePanicked {
                        key: key.clone(),
                        message,
                    }),
                )
            }
        };
        self.queue.done(&key, outcome, fenced, now);
        let started = self.starts.remove(&key).unwrap_or(now);
        if let Some(reporter) = &self.reporter {
            let result = match &item {
                Ok(_) => "success",
                Err(Error::ReconcilePanicked { .. }) => "panic",
                Err(Error::Revoked { .. }) => "revoked",
                Err(_) => "error",
            };
            let retry = matches!(outcome, Outcome::Failure(Some(_)));
            reporter.finished(
                now.saturating_duration_since(started),
                result,
                retry,
                self.running.len(),
            );
            if fenced {
                reporter.fenced();
            }
        }
        if let Some(fence) = fence {
            self.fences
                .push(fence.map(move |timed_out| (key, timed_out)).boxed());
        }
        item
    }
}

/// An object's uid hash, as shards use it.
fn uid_hash<K: Resource>(object: &K) -> u64 {
    kache_watch::uid_hash(object.meta().uid.as_deref().unwrap_or_default())
}

/// A panic's message, if it is a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
