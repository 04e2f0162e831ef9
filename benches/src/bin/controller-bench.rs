//! kache-controller's `Controller` beside kube-runtime 5's `Controller`, in one run:
//!
//! 1. **queue**: the cost per item of trigger, dispatch and completion with a no-op reconcile,
//!    in memory (no server). Each side's store is fed by its own reflector from a prebuilt
//!    stream of watch events: an initial list of N `ConfigMap`s (`Init`, `InitApply` × N,
//!    `InitDone`), timed until N results came out of the controller's stream; then N changes
//!    (`Apply` × N, each object once, at a newer resourceVersion), timed until N more. kache's
//!    controller subscribes to its store; kube-runtime's reads a shared store's subscription
//!    (`for_shared_stream`). Both run 8 reconciles at once.
//! 2. **stale**: the one-child operator of `tests/tests/controller.rs` (one `generateName` child
//!    per parent, its data following the parent's) on a real API server; P parents, each
//!    changed three times right after its creation. The bench remembers the resourceVersion of
//!    each parent's last write and counts the reconciles that start while the children's store
//!    does not show it yet ("stale"), and the parents that end with two children or more.
//!    kache with fences on and off, and kube-runtime (children read from a reflector store).
//! 3. **latency**: from a PATCH of one of 10,000 `ConfigMap`s (the timestamp is taken just
//!    before the request is sent) to the start of its reconcile, under steady churn, with a
//!    kache controller (its store fed by kache's watcher) and a kube-runtime controller (its own
//!    watcher) side by side on one namespace of one API server.
//! 4. **memory**: the resident memory a controller over 10,000 `ConfigMap`s adds to a fresh
//!    process once every object was reconciled: kache (one watch, one store shared with the
//!    controller) and kube-runtime (`Controller::new`: its own watch and store).
//!
//! Prints Markdown tables and writes `benches/results/controller.json`. Run:
//! `cargo run --release -p kache-benches --bin controller-bench`. Environment:
//! `KACHE_BENCH_CONTROLLER_PARTS` (`queue,stale,latency,memory` by default),
//! `KACHE_BENCH_QUEUE_SIZES` (`1000,10000,100000`), `KACHE_BENCH_PARENTS` (1000),
//! `KACHE_BENCH_OBJECTS` (10000, for latency and memory), `KACHE_BENCH_CHURN_RATE` (patches a
//! second, 200), `KACHE_BENCH_CHURN_SECS` (20), `KACHE_BENCH_SERVERS` (the first one named is
//! used; `modern` by default).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::ready;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    BoxError, ChildReport, Results, Table, config_map, connected_api, env_sizes, env_usize,
    fmt_bytes, fmt_ns, percentile, proc_status_bytes, ratio, seed_config_maps, world,
};
use kache_controller::{Action, Config as KacheConfig, Controller, Recorded, Retry};
use kache_examples::one_child::{
    CHILD, OnServer, PARENT, child_of, create_parents, follow, owner_uid, value_of,
};
use kache_store::{ReflectExt, Writer};
use kache_testenv::{Server, TestEnv};
use kube_client::Api;
use kube_client::api::{Patch, PatchParams, PostParams};
use kube_runtime::controller::{
    Action as KrAction, Config as KrConfig, Controller as KrController,
};
use kube_runtime::reflector::{self, ObjectRef};
use kube_runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;

/// Reconciles at once, on both sides (kube-runtime's default is unbounded).
const CONCURRENCY: usize = 8;
/// The buffer of kube-runtime's shared store (its subscribers apply backpressure).
const KR_BUFFER: usize = 1024;
/// How long a phase may take before the run fails.
const PHASE_BOUND: Duration = Duration::from_secs(300);

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        return runtime.block_on(memory_child(&args[2..]));
    }
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let parts = std::env::var("KACHE_BENCH_CONTROLLER_PARTS")
        .unwrap_or_else(|_| "queue,stale,latency,memory".to_owned());
    let has = |part: &str| parts.split(',').any(|p| p.trim() == part);
    let mut results = Results::new(
        "controller",
        "cargo run --release -p kache-benches --bin controller-bench",
    );
    results.setting("concurrency", CONCURRENCY);
    let mut printed = Vec::new();

    if has("queue") {
        let sizes = env_sizes("KACHE_BENCH_QUEUE_SIZES", &[1_000, 10_000, 100_000]);
        results.setting("queue_sizes", json!(sizes));
        printed.push(bench_queue(&sizes, &mut results).await?);
        results.write();
    }
    let server = std::env::var("KACHE_BENCH_SERVERS")
        .ok()
        .and_then(|list| list.split(',').next().map(str::to_owned))
        .filter(|s| !s.trim().is_empty())
        .map_or(Ok(Server::Modern), |s| s.parse::<Server>())?;
    let env = if has("stale") || has("latency") || has("memory") {
        eprintln!("[{server}] starting a local control plane...");
        results.setting("server", server.to_string());
        Some(TestEnv::builder().server(server).start().await?)
    } else {
        None
    };
    if let Some(env) = &env {
        if has("stale") {
            let parents = env_usize("KACHE_BENCH_PARENTS", 1_000);
            results.setting("parents", parents);
            printed.push(bench_stale(env, parents, &mut results).await?);
            results.write();
        }
        let n = env_usize("KACHE_BENCH_OBJECTS", 10_000);
        if has("latency") || has("memory") {
            results.setting("objects", n);
        }
        let mut seeded = None;
        if has("latency") {
            let (namespace, api) = seed(env, n).await?;
            let rate = env_usize("KACHE_BENCH_CHURN_RATE", 200);
            let secs = env_usize("KACHE_BENCH_CHURN_SECS", 20);
            results.setting("churn_rate_per_sec", rate);
            results.setting("churn_secs", secs);
            printed.push(bench_latency(env, &api, n, rate, secs, &mut results).await?);
            results.write();
            seeded = Some(namespace);
        }
        if has("memory") {
            let namespace = match seeded {
                Some(namespace) => namespace,
                None => seed(env, n).await?.0,
            };
            printed.push(bench_memory(env, &namespace, n, &mut results).await?);
            results.write();
        }
    }
    for text in printed {
        println!("{text}");
    }
    Ok(())
}

async fn seed(env: &TestEnv, n: usize) -> Result<(String, Api<ConfigMap>), BoxError> {
    let namespace = env.create_namespace("bench-ctl").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    seed_config_maps(&api, &namespace, n).await?;
    eprintln!("seeded {n} ConfigMaps in {namespace}");
    Ok((namespace, api))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts far below 2^52, shown as ratios"
)]
fn as_f64(n: usize) -> f64 {
    n as f64
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn per_item(d: Duration, n: usize) -> Duration {
    d.div_f64(as_f64(n.max(1)))
}

// ---------------------------------------------------------------------------------------------
// 1. Queue overhead.

async fn noop_kache(_: Arc<ConfigMap>, _: Arc<()>) -> Result<Action, Infallible> {
    Ok(Action::await_change())
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "the signature the controller asks for"
)]
fn never_kache(_: Arc<ConfigMap>, err: &Infallible, _: Arc<()>, _: Retry) -> Action {
    match *err {}
}

async fn noop_kr(_: Arc<ConfigMap>, _: Arc<()>) -> Result<KrAction, Infallible> {
    Ok(KrAction::await_change())
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "the signature the controller asks for"
)]
fn never_kr(_: Arc<ConfigMap>, err: &Infallible, _: Arc<()>) -> KrAction {
    match *err {}
}

/// What one queue run measured.
#[derive(Clone, Copy, Debug)]
struct QueueRun {
    /// From the first event of the initial list until N results.
    sync: Duration,
    /// From the first change until N more results.
    changes: Duration,
    /// Results after those 2N, within a quiet period: reconciles beyond one per trigger.
    extra: usize,
}

/// Takes `n` items of `results`, within [`PHASE_BOUND`].
async fn take_results<S: Stream + Unpin>(results: &mut S, n: usize) -> Result<(), BoxError> {
    let take = async {
        for taken in 0..n {
            if results.next().await.is_none() {
                return Err(format!(
                    "the controller's stream ended after {taken} of {n}"
                ));
            }
        }
        Ok(())
    };
    tokio::time::timeout(PHASE_BOUND, take)
        .await
        .map_err(|_| format!("fewer than {n} results within {PHASE_BOUND:?}"))??;
    Ok(())
}

/// Counts the items `results` yields until none came for `quiet`.
async fn drain<S: Stream + Unpin>(results: &mut S, quiet: Duration) -> usize {
    let mut count = 0;
    while let Ok(Some(_)) = tokio::time::timeout(quiet, results.next()).await {
        count += 1;
    }
    count
}

/// Watch events: an initial list of `initial`, then, once `go` resolves, an `Apply` of each
/// of `changed`; then nothing, forever (the store stays open).
fn two_phases<E: Send + 'static>(
    initial: Vec<E>,
    changed: Vec<E>,
    go: tokio::sync::oneshot::Receiver<()>,
) -> BoxStream<'static, E> {
    stream::iter(initial)
        .chain(
            stream::once(async move {
                let _ = go.await;
                stream::iter(changed)
            })
            .flatten(),
        )
        .chain(stream::pending())
        .boxed()
}

async fn queue_kache(n: usize, buffer: usize, controller: bool) -> Result<QueueRun, BoxError> {
    use kache_watch::Event;
    let mut initial = vec![Event::Init];
    initial.extend(world(n, 1, config_map).into_iter().map(Event::InitApply));
    initial.push(Event::InitDone);
    let changed: Vec<_> = world(n, 1 + n as u64, config_map)
        .into_iter()
        .map(Event::Apply)
        .collect();
    let writer = Writer::<ConfigMap>::new().with_buffer(buffer);
    let store = writer.as_reader();
    let mut results: BoxStream<'static, ()> = if controller {
        Controller::new(store, KacheConfig::default().concurrency(CONCURRENCY))
            .run(noop_kache, never_kache, Arc::new(()))
            .map(|_| ())
            .boxed()
    } else {
        // The floor: the triggers alone, as the controller's subscription yields them.
        store
            .subscribe()
            .filter(|event| {
                ready(matches!(
                    event,
                    kache_watch::Event::InitApply(_) | kache_watch::Event::Apply(_)
                ))
            })
            .map(|_| ())
            .boxed()
    };
    let (go, wait) = tokio::sync::oneshot::channel();
    let events = two_phases(initial, changed, wait).map(Ok::<_, Infallible>);
    let started = Instant::now();
    let feed = tokio::spawn(ReflectExt::reflect(events, writer).for_each(|_| ready(())));
    take_results(&mut results, n).await?;
    let sync = started.elapsed();
    let started = Instant::now();
    let _ = go.send(());
    take_results(&mut results, n).await?;
    let changed_in = started.elapsed();
    let extra = drain(&mut results, Duration::from_millis(500)).await;
    feed.abort();
    let _ = feed.await;
    Ok(QueueRun {
        sync,
        changes: changed_in,
        extra,
    })
}

async fn queue_kube_runtime(n: usize, controller: bool) -> Result<QueueRun, BoxError> {
    use kube_runtime::watcher::Event;
    let mut initial = vec![Event::Init];
    initial.extend(world(n, 1, config_map).into_iter().map(Event::InitApply));
    initial.push(Event::InitDone);
    let changed: Vec<_> = world(n, 1 + n as u64, config_map)
        .into_iter()
        .map(Event::Apply)
        .collect();
    let (reader, writer) = reflector::store_shared::<ConfigMap>(KR_BUFFER);
    let subscriber = writer.subscribe().ok_or("a shared store has subscribers")?;
    let concurrency = u16::try_from(CONCURRENCY)?;
    let mut results: BoxStream<'static, ()> = if controller {
        KrController::for_shared_stream(subscriber, reader)
            .with_config(KrConfig::default().concurrency(concurrency))
            .run(noop_kr, never_kr, Arc::new(()))
            .map(|_| ())
            .boxed()
    } else {
        // The floor: the triggers alone, as the shared store's subscription yields them.
        subscriber.map(|_| ()).boxed()
    };
    let (go, wait) = tokio::sync::oneshot::channel();
    let events = two_phases(initial, changed, wait).map(Ok::<_, watcher::Error>);
    let started = Instant::now();
    let feed = tokio::spawn(reflector::reflector(writer, events).for_each(|_| ready(())));
    take_results(&mut results, n).await?;
    let sync = started.elapsed();
    let started = Instant::now();
    let _ = go.send(());
    take_results(&mut results, n).await?;
    let changed_in = started.elapsed();
    let extra = drain(&mut results, Duration::from_millis(500)).await;
    feed.abort();
    let _ = feed.await;
    Ok(QueueRun {
        sync,
        changes: changed_in,
        extra,
    })
}

async fn bench_queue(sizes: &[usize], results: &mut Results) -> Result<String, BoxError> {
    let mut table = Table::new(&[
        "keys",
        "variant",
        "initial list: per item",
        "changes: per item",
        "extra reconciles",
        "initial / kube-runtime",
        "changes / kube-runtime",
    ]);
    for &n in sizes {
        let kr = queue_kube_runtime(n, true).await?;
        let kr_floor = queue_kube_runtime(n, false).await?;
        eprintln!("queue {n}: kube-runtime done");
        // kache's controller subscribes with `Delivery::Resync`: a buffer that holds the whole
        // burst of changes, and the default one, which a burst overflows.
        let buffer = n.max(kache_store::DEFAULT_BUFFER);
        let big = queue_kache(n, buffer, true).await?;
        let big_floor = queue_kache(n, buffer, false).await?;
        let small = queue_kache(n, kache_store::DEFAULT_BUFFER, true).await?;
        eprintln!("queue {n}: kache done");
        let rows = [
            (
                "kube-runtime Controller (shared store, buffer 1024)".to_owned(),
                kr,
            ),
            (
                "kube-runtime: store + subscription only (floor)".to_owned(),
                kr_floor,
            ),
            (
                format!("kache Controller (subscriber buffer {buffer})"),
                big,
            ),
            (
                format!("kache: store + subscription only (floor, buffer {buffer})"),
                big_floor,
            ),
            (
                format!(
                    "kache Controller (default subscriber buffer {})",
                    kache_store::DEFAULT_BUFFER
                ),
                small,
            ),
        ];
        for (label, run) in rows {
            results.data(json!({
                "part": "queue",
                "keys": n,
                "variant": label,
                "initial_secs": secs(run.sync),
                "changes_secs": secs(run.changes),
                "initial_ns_per_item": per_item(run.sync, n).as_secs_f64() * 1e9,
                "changes_ns_per_item": per_item(run.changes, n).as_secs_f64() * 1e9,
                "extra_reconciles": run.extra,
            }));
            table.row(vec![
                n.to_string(),
                label,
                fmt_ns(per_item(run.sync, n)),
                fmt_ns(per_item(run.changes, n)),
                run.extra.to_string(),
                ratio(secs(run.sync), secs(kr.sync)),
                ratio(secs(run.changes), secs(kr.changes)),
            ]);
        }
    }
    let title = format!(
        "Controller queue overhead: no-op reconcile, {CONCURRENCY} at once, stores fed in \
         memory by their reflectors; time until N results over N (one run each, 2 worker \
         threads)"
    );
    results.table("queue", &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

// ---------------------------------------------------------------------------------------------
// 2. Stale reconciles: the one-child operator of tests/tests/controller.rs.

/// The children's cache, whichever library keeps it.
enum Children {
    Kache(kache_store::Store<ConfigMap>),
    KubeRuntime(reflector::Store<ConfigMap>),
}

impl Children {
    fn owned_by(&self, uid: &str) -> Vec<Arc<ConfigMap>> {
        let all = match self {
            Self::Kache(store) => store.state(),
            Self::KubeRuntime(store) => store.state(),
        };
        all.into_iter()
            .filter(|child| owner_uid(child) == Some(uid))
            .collect()
    }

    fn version_of(&self, namespace: Option<&str>, name: &str) -> Option<u64> {
        let child = match self {
            Self::Kache(store) => store.get(namespace, name),
            Self::KubeRuntime(store) => {
                let mut key = ObjectRef::new(name);
                if let Some(namespace) = namespace {
                    key = key.within(namespace);
                }
                store.get(&key)
            }
        };
        child.as_deref().and_then(version)
    }
}

/// kache's watch of `api`, with its default backoff.
fn kache_watch_events(
    api: Api<ConfigMap>,
    config: kache_watch::Config,
) -> impl Stream<Item = kache_watch::Result<kache_watch::Event<ConfigMap>>> + Send {
    kache_watch::WatchStreamExt::default_backoff(kache_watch::watcher(api, config))
}

fn version(cm: &ConfigMap) -> Option<u64> {
    cm.metadata.resource_version.as_deref()?.parse().ok()
}

struct Operator {
    children: Children,
    api: Api<ConfigMap>,
    /// kache's writes go through `Recorded`, so that fences see them.
    recorded: Option<Recorded<ConfigMap>>,
    /// Each parent's last write: the child's name and the resourceVersion the write returned.
    last_write: Mutex<HashMap<String, (String, u64)>>,
    reconciles: AtomicUsize,
    stale: AtomicUsize,
    creates: AtomicUsize,
}

impl Operator {
    async fn create(&self, child: &ConfigMap) -> kube_client::Result<ConfigMap> {
        self.creates.fetch_add(1, Ordering::Relaxed);
        match &self.recorded {
            Some(api) => api.create(&PostParams::default(), child).await,
            None => self.api.create(&PostParams::default(), child).await,
        }
    }

    async fn patch(
        &self,
        name: &str,
        patch: &Patch<serde_json::Value>,
    ) -> kube_client::Result<ConfigMap> {
        match &self.recorded {
            Some(api) => api.patch(name, &PatchParams::default(), patch).await,
            None => self.api.patch(name, &PatchParams::default(), patch).await,
        }
    }
}

/// The test's reconcile: creates the parent's child if the cache shows none; brings its data
/// to the parent's. Before it, the bench's bookkeeping: does the cache show this parent's
/// last write?
async fn one_child(parent: &ConfigMap, op: &Operator) -> kube_client::Result<()> {
    op.reconciles.fetch_add(1, Ordering::Relaxed);
    let parent_name = parent.metadata.name.clone().unwrap_or_default();
    let namespace = parent.metadata.namespace.clone();
    let last = op.last_write.lock().get(&parent_name).cloned();
    if let Some((child, written)) = last {
        let shown = op
            .children
            .version_of(namespace.as_deref(), &child)
            .is_some_and(|cached| cached >= written);
        if !shown {
            op.stale.fetch_add(1, Ordering::Relaxed);
        }
    }
    let uid = parent.metadata.uid.as_deref().unwrap_or_default();
    let children = op.children.owned_by(uid);
    let written = if let Some(child) = children.first() {
        if value_of(child) == value_of(parent) {
            return Ok(());
        }
        let name = child.metadata.name.clone().unwrap_or_default();
        op.patch(&name, &follow(parent)).await?
    } else {
        op.create(&child_of(parent)).await?
    };
    if let (Some(name), Some(rv)) = (written.metadata.name.clone(), version(&written)) {
        op.last_write.lock().insert(parent_name, (name, rv));
    }
    Ok(())
}

async fn one_child_kache(parent: Arc<ConfigMap>, op: Arc<Operator>) -> kube_client::Result<Action> {
    one_child(&parent, &op).await?;
    Ok(Action::await_change())
}

async fn one_child_kr(parent: Arc<ConfigMap>, op: Arc<Operator>) -> kube_client::Result<KrAction> {
    one_child(&parent, &op).await?;
    Ok(KrAction::await_change())
}

fn retry_kr(_: Arc<ConfigMap>, _: &kube_client::Error, _: Arc<Operator>) -> KrAction {
    KrAction::requeue(Duration::from_millis(100))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StaleVariant {
    KacheFenced,
    KacheUnfenced,
    KubeRuntime,
}

impl StaleVariant {
    fn label(self) -> &'static str {
        match self {
            Self::KacheFenced => "kache, fences on",
            Self::KacheUnfenced => "kache, fences off",
            Self::KubeRuntime => "kube-runtime",
        }
    }
}

/// Aborts the operator's tasks when dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn start_operator(variant: StaleVariant, api: &Api<ConfigMap>) -> (Arc<Operator>, Tasks) {
    let concurrency: u16 = 16;
    match variant {
        StaleVariant::KacheFenced | StaleVariant::KacheUnfenced => {
            let (parents, children) = (Writer::<ConfigMap>::new(), Writer::<ConfigMap>::new());
            let (parents_store, children_store) = (parents.as_reader(), children.as_reader());
            let feed = |writer: Writer<ConfigMap>, labels: &str| {
                let events =
                    kache_watch_events(api.clone(), kache_watch::Config::default().labels(labels));
                tokio::spawn(ReflectExt::reflect(events, writer).for_each(|_| ready(())))
            };
            let mut tasks = vec![feed(parents, PARENT), feed(children, CHILD)];
            let op = Arc::new(Operator {
                children: Children::Kache(children_store.clone()),
                api: api.clone(),
                recorded: Some(Recorded::new(api.clone())),
                last_write: Mutex::default(),
                reconciles: AtomicUsize::new(0),
                stale: AtomicUsize::new(0),
                creates: AtomicUsize::new(0),
            });
            let config = KacheConfig::default()
                .concurrency(concurrency.into())
                .fences(
                    variant == StaleVariant::KacheFenced,
                    Duration::from_secs(10),
                )
                .name("one-child");
            let controller = Controller::new(parents_store, config)
                .owns(children_store)
                .run(one_child_kache, kache_controller::backoff, Arc::clone(&op));
            tasks.push(tokio::spawn(controller.for_each(|_| ready(()))));
            (op, Tasks(tasks))
        }
        StaleVariant::KubeRuntime => {
            let (children_store, children) = reflector::store_shared::<ConfigMap>(KR_BUFFER);
            let subscriber = children
                .subscribe()
                .expect("a shared store has subscribers");
            let events = kube_runtime::WatchStreamExt::default_backoff(watcher(
                api.clone(),
                watcher::Config::default().labels(CHILD),
            ));
            let mut tasks = vec![tokio::spawn(
                reflector::reflector(children, events).for_each(|_| ready(())),
            )];
            let op = Arc::new(Operator {
                children: Children::KubeRuntime(children_store),
                api: api.clone(),
                recorded: None,
                last_write: Mutex::default(),
                reconciles: AtomicUsize::new(0),
                stale: AtomicUsize::new(0),
                creates: AtomicUsize::new(0),
            });
            let controller =
                KrController::new(api.clone(), watcher::Config::default().labels(PARENT))
                    .owns_shared_stream(subscriber)
                    .with_config(KrConfig::default().concurrency(concurrency))
                    .run(one_child_kr, retry_kr, Arc::clone(&op));
            tasks.push(tokio::spawn(controller.for_each(|_| ready(()))));
            (op, Tasks(tasks))
        }
    }
}

struct StaleRun {
    settled: Duration,
    reconciles: usize,
    stale: usize,
    creates: usize,
    duplicates: usize,
}

async fn stale_run(
    env: &TestEnv,
    variant: StaleVariant,
    parents: usize,
) -> Result<StaleRun, BoxError> {
    let namespace = env.create_namespace("bench-ctl-stale").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    let (op, tasks) = start_operator(variant, &api);
    let started = Instant::now();
    create_parents(&api, "p", parents).await?;
    // Settled: every parent has a child holding its value (duplicates stay behind: the
    // reconcile keeps the first child it finds).
    loop {
        let state = OnServer::list(&api).await?;
        if state.by_parent.len() == parents && state.each_has_a_current_child() {
            break;
        }
        if started.elapsed() > PHASE_BOUND {
            return Err(format!("{}: not settled within {PHASE_BOUND:?}", variant.label()).into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = started.elapsed();
    // Quiet for a while: late reconciles would show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = OnServer::list(&api).await?;
    drop(tasks);
    Ok(StaleRun {
        settled,
        reconciles: op.reconciles.load(Ordering::Relaxed),
        stale: op.stale.load(Ordering::Relaxed),
        creates: op.creates.load(Ordering::Relaxed),
        duplicates: state.duplicates(),
    })
}

async fn bench_stale(
    env: &TestEnv,
    parents: usize,
    results: &mut Results,
) -> Result<String, BoxError> {
    let mut table = Table::new(&[
        "variant",
        "reconciles",
        "stale reconciles",
        "creates",
        "parents with ≥ 2 children",
        "settled in",
    ]);
    for variant in [
        StaleVariant::KacheFenced,
        StaleVariant::KacheUnfenced,
        StaleVariant::KubeRuntime,
    ] {
        let run = stale_run(env, variant, parents).await?;
        eprintln!("stale: {} done", variant.label());
        results.data(json!({
            "part": "stale",
            "parents": parents,
            "variant": variant.label(),
            "reconciles": run.reconciles,
            "stale_reconciles": run.stale,
            "creates": run.creates,
            "duplicates": run.duplicates,
            "settled_secs": secs(run.settled),
        }));
        table.row(vec![
            variant.label().to_owned(),
            run.reconciles.to_string(),
            run.stale.to_string(),
            run.creates.to_string(),
            run.duplicates.to_string(),
            fmt_ns(run.settled),
        ]);
    }
    let title = format!(
        "Stale reconciles: the one-child operator, {parents} parents each changed 3 times after \
         creation, 16 reconciles at once; a reconcile is stale when the children's cache does \
         not yet show the parent's last write (one run each)"
    );
    results.table("stale", &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

// ---------------------------------------------------------------------------------------------
// 3. Latency from a write to the start of its reconcile.

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What one controller's reconciles saw.
#[derive(Default)]
struct Latencies {
    /// Each object's last timestamp seen.
    seen: Mutex<HashMap<String, u64>>,
    /// Write-to-reconcile latencies, in µs.
    samples: Mutex<Vec<u64>>,
    reconciles: AtomicUsize,
}

impl Latencies {
    fn observe(&self, cm: &ConfigMap) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let now = now_micros();
        let Some(ts) = cm
            .data
            .as_ref()
            .and_then(|d| d.get("ts"))
            .and_then(|ts| ts.parse::<u64>().ok())
        else {
            return;
        };
        let name = cm.metadata.name.clone().unwrap_or_default();
        if self.seen.lock().insert(name, ts) != Some(ts) {
            self.samples.lock().push(now.saturating_sub(ts));
        }
    }
}

async fn observe_kache(cm: Arc<ConfigMap>, seen: Arc<Latencies>) -> Result<Action, Infallible> {
    seen.observe(&cm);
    Ok(Action::await_change())
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "the signature the controller asks for"
)]
fn never_kache_latency(_: Arc<ConfigMap>, err: &Infallible, _: Arc<Latencies>, _: Retry) -> Action {
    match *err {}
}

async fn observe_kr(cm: Arc<ConfigMap>, seen: Arc<Latencies>) -> Result<KrAction, Infallible> {
    seen.observe(&cm);
    Ok(KrAction::await_change())
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "the signature the controller asks for"
)]
fn never_kr_latency(_: Arc<ConfigMap>, err: &Infallible, _: Arc<Latencies>) -> KrAction {
    match *err {}
}

async fn wait_reconciles(seen: &Latencies, n: usize, what: &str) -> Result<(), BoxError> {
    let started = Instant::now();
    while seen.reconciles.load(Ordering::Relaxed) < n {
        if started.elapsed() > PHASE_BOUND {
            return Err(format!("{what}: fewer than {n} reconciles within {PHASE_BOUND:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "one measurement, start to table, reads best in one piece"
)]
async fn bench_latency(
    env: &TestEnv,
    api: &Api<ConfigMap>,
    n: usize,
    rate: usize,
    churn_secs: usize,
    results: &mut Results,
) -> Result<String, BoxError> {
    let namespace = api.namespace().unwrap_or_default().to_owned();
    // Each controller and the writer on a client of its own.
    let kache_api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    let kr_api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    let write_api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);

    let kache_seen = Arc::new(Latencies::default());
    let writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    let mut tasks = vec![tokio::spawn(
        kache_watch_events(kache_api, kache_watch::Config::default())
            .reflect(writer)
            .for_each(|_| ready(())),
    )];
    let controller = Controller::new(store, KacheConfig::default().concurrency(CONCURRENCY)).run(
        observe_kache,
        never_kache_latency,
        Arc::clone(&kache_seen),
    );
    tasks.push(tokio::spawn(controller.for_each(|_| ready(()))));

    let kr_seen = Arc::new(Latencies::default());
    let controller = KrController::new(kr_api, watcher::Config::default())
        .with_config(KrConfig::default().concurrency(u16::try_from(CONCURRENCY)?))
        .run(observe_kr, never_kr_latency, Arc::clone(&kr_seen));
    tasks.push(tokio::spawn(controller.for_each(|_| ready(()))));
    let tasks = Tasks(tasks);

    wait_reconciles(&kache_seen, n, "kache initial sync").await?;
    wait_reconciles(&kr_seen, n, "kube-runtime initial sync").await?;
    eprintln!("latency: both controllers reconciled the initial {n}; churning");

    // Steady churn: one PATCH every 1/rate s, each to another object (a stride coprime with
    // the usual sizes), sent without waiting for the previous one.
    let patches = rate * churn_secs;
    let mut ticks = tokio::time::interval(Duration::from_secs(1).div_f64(as_f64(rate.max(1))));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut sent = Vec::with_capacity(patches);
    for k in 0..patches {
        ticks.tick().await;
        let i = (k * 7_919) % n;
        let name = format!("configmap-{i:06}");
        let api = write_api.clone();
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let failures = Arc::clone(&failures);
        sent.push(tokio::spawn(async move {
            let patch = Patch::Merge(json!({ "data": { "ts": now_micros().to_string() } }));
            if api
                .patch(&name, &PatchParams::default(), &patch)
                .await
                .is_err()
            {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        }));
    }
    for patch in sent {
        patch.await?;
    }
    // Stragglers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(tasks);

    let mut table = Table::new(&[
        "variant",
        "writes seen",
        "p50",
        "p90",
        "p99",
        "max",
        "p50 / kube-runtime",
        "p99 / kube-runtime",
    ]);
    let summary = |seen: &Latencies| {
        let mut samples = seen.samples.lock().clone();
        if samples.is_empty() {
            return None;
        }
        let p = |q: f64, s: &mut Vec<u64>| Duration::from_micros(percentile(s, q));
        Some((
            samples.len(),
            p(50.0, &mut samples),
            p(90.0, &mut samples),
            p(99.0, &mut samples),
            p(100.0, &mut samples),
        ))
    };
    let kr = summary(&kr_seen).ok_or("kube-runtime saw no write")?;
    let kache = summary(&kache_seen).ok_or("kache saw no write")?;
    let sent_ok = patches - failures.load(Ordering::Relaxed);
    for (label, (count, p50, p90, p99, max)) in [("kache", kache), ("kube-runtime", kr)] {
        results.data(json!({
            "part": "latency",
            "objects": n,
            "variant": label,
            "writes": sent_ok,
            "writes_seen": count,
            "p50_secs": secs(p50),
            "p90_secs": secs(p90),
            "p99_secs": secs(p99),
            "max_secs": secs(max),
        }));
        table.row(vec![
            label.to_owned(),
            format!("{count} of {sent_ok}"),
            fmt_ns(p50),
            fmt_ns(p90),
            fmt_ns(p99),
            fmt_ns(max),
            ratio(secs(p50), secs(kr.1)),
            ratio(secs(p99), secs(kr.3)),
        ]);
    }
    let title = format!(
        "Write-to-reconcile latency: {n} ConfigMaps, {rate} PATCHes a second for {churn_secs} s \
         (each to another object); from just before the PATCH is sent to the start of the \
         reconcile that first sees it; both controllers side by side on one namespace \
         (one run)"
    );
    results.table("latency", &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

// ---------------------------------------------------------------------------------------------
// 4. Memory of one controller with its own cache.

/// The hidden first argument that makes this binary a measuring child:
/// `controller-bench --child <kubeconfig> <namespace> <variant> <objects>`.
const CHILD_ARG: &str = "--child";
const CHILD_REPORT: &str = "controller-memory-child:";

async fn memory_child(args: &[String]) -> Result<(), BoxError> {
    let [kubeconfig, namespace, variant, n] = args else {
        return Err(format!("usage: controller-bench {CHILD_ARG} KUBECONFIG NS VARIANT N").into());
    };
    let n: usize = n.parse()?;
    let api = connected_api(Path::new(kubeconfig), namespace).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = proc_status_bytes("VmRSS")?;
    let seen = Arc::new(Latencies::default());
    let mut tasks = Vec::new();
    match variant.as_str() {
        "kache" => {
            let writer = Writer::<ConfigMap>::new();
            let store = writer.as_reader();
            tasks.push(tokio::spawn(
                kache_watch_events(api, kache_watch::Config::default())
                    .reflect(writer)
                    .for_each(|_| ready(())),
            ));
            let controller = Controller::new(
                store,
                KacheConfig::default().concurrency(CONCURRENCY),
            )
            .run(observe_kache, never_kache_latency, Arc::clone(&seen));
            tasks.push(tokio::spawn(controller.for_each(|_| ready(()))));
        }
        "kube-runtime" => {
            let controller = KrController::new(api, watcher::Config::default())
                .with_config(KrConfig::default().concurrency(u16::try_from(CONCURRENCY)?))
                .run(observe_kr, never_kr_latency, Arc::clone(&seen));
            tasks.push(tokio::spawn(controller.for_each(|_| ready(()))));
        }
        other => return Err(format!("unknown variant {other}").into()),
    }
    let tasks = Tasks(tasks);
    wait_reconciles(&seen, n, variant).await?;
    // Lets the runtime settle (the list's buffers are freed as tasks finish).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_status_bytes("VmRSS")?;
    let peak = proc_status_bytes("VmHWM")?;
    drop(tasks);
    println!(
        "{CHILD_REPORT} held={} peak={}",
        after.saturating_sub(before),
        peak.saturating_sub(before)
    );
    Ok(())
}

async fn bench_memory(
    env: &TestEnv,
    namespace: &str,
    n: usize,
    results: &mut Results,
) -> Result<String, BoxError> {
    let mut measured = Vec::new();
    for variant in ["kube-runtime", "kache"] {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg(CHILD_ARG).arg(env.kubeconfig_path()).args([
            namespace,
            variant,
            &n.to_string(),
        ]);
        let output = tokio::task::spawn_blocking(move || command.output()).await??;
        let report = ChildReport::from_output(&output, CHILD_REPORT, variant)?;
        let held: u64 = report.field("held")?;
        let peak: u64 = report.field("peak")?;
        eprintln!("memory: {variant} done");
        measured.push((variant, held, peak));
    }
    let kr_held = measured[0].1;
    let mut table = Table::new(&[
        "variant",
        "RSS added once all reconciled",
        "peak RSS added",
        "held / kube-runtime",
    ]);
    #[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    for (variant, held, peak) in measured {
        results.data(json!({
            "part": "memory",
            "objects": n,
            "variant": variant,
            "rss_added_bytes": held,
            "rss_peak_added_bytes": peak,
        }));
        table.row(vec![
            variant.to_owned(),
            fmt_bytes(held as f64),
            fmt_bytes(peak as f64),
            ratio(held as f64, kr_held as f64),
        ]);
    }
    let title = format!(
        "Controller memory: one controller over {n} ConfigMaps with its own cache, in a fresh \
         process; resident memory added from after the client's first request until every \
         object was reconciled once (one run each)"
    );
    results.table("memory", &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}
