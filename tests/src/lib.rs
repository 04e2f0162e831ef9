//! Support for kache's end-to-end and fault tests: bounded waits, watchers in both wire
//! encodings, subscribers' views and convergence checks, on top of kache-testenv's seeding,
//! request recording and partition proxy (re-exported here).
//!
//! The tests themselves live in `tests/`; each runs against a real control plane from
//! `kache-testenv`, once per API server (see [`on_each_server!`]).
//!
//! `KACHE_TEST_SERVERS` picks the servers: a comma-separated list of `legacy` (kube-apiserver
//! v1.20.2) and `modern` (the Kubernetes 1.36 apiserver library); both when unset.
//!
//! Tests of `ConfigMap` watchers also run once per [`Wire`] encoding on the modern server
//! (see [`on_each_server_and_wire!`] and [`configmap_watcher`]): the same body, whether the
//! watcher reads JSON or protobuf.

/// The scripted wire-format responder, for what a real server cannot be made to send.
pub use kache_testenv::scripted;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{ByteString, api::core::v1::ConfigMap};
use k8s_pb::api::core::v1::ConfigMap as PbConfigMap;
use kache_store::testing::Replay;
use kache_store::{ReflectExt, Store, Subscriber, Writer};
pub use kache_testenv::{Server, TestEnv};
use kache_watch::{Backoff, Config, Event, Proto, WatchStreamExt, protobuf_watcher, watcher};
use kube_client::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use tokio::task::JoinHandle;

/// How long any single condition in a test may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(60);

/// Counts the warnings kache-store logs on this thread while the guard lives (a test on one
/// thread: every task it spawns logs here).
#[must_use]
pub fn count_store_warnings() -> (Arc<AtomicUsize>, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Arc::new(AtomicUsize::new(0));
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(CountWarnings(Arc::clone(&warnings))),
    );
    (warnings, guard)
}

struct CountWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("kache_store") {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends test logs to the test harness's captured output; `RUST_LOG` sets the filter.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits for `future` for at most [`BOUND`], failing the test with `what` if it takes longer.
///
/// # Panics
/// When the bound passes.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {BOUND:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it returns `true`, for at most [`BOUND`].
///
/// # Panics
/// When the bound passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Defines one test per API server around one body: `async fn name(server: Server) { ... }`
/// becomes the module `name` with the tests `name::legacy` and `name::modern`, each running
/// the body against its server when `KACHE_TEST_SERVERS` selects it (see [`run_on`]).
///
/// ```ignore
/// kache_tests::on_each_server! {
///     /// What the test shows.
///     async fn lists_everything(server: Server) {
///         let (_, _, api) = shared_env(server, "list").await;
///         // ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! on_each_server {
    ($(#[$meta:meta])* async fn $name:ident($server:ident: Server) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($server: $crate::Server) $body

            #[tokio::test]
            async fn legacy() {
                $crate::run_on($crate::Server::Legacy, body).await;
            }

            #[tokio::test]
            async fn modern() {
                $crate::run_on($crate::Server::Modern, body).await;
            }
        }
        $crate::on_each_server! { $($rest)* }
    };
    () => {};
}

/// Defines one test per API server and wire encoding around one body:
/// `async fn name(server: Server, wire: Wire) { ... }` becomes the module `name` with the tests
/// `name::legacy` and `name::modern` (JSON) and `name::modern_protobuf`, each running the body
/// when `KACHE_TEST_SERVERS` selects its server (see [`run_on`]). The body starts its watchers
/// with [`configmap_watcher`] (or [`Reflector::start_in`]) in `wire`, so that both encodings
/// run the same code. Protobuf runs on the modern server only: the wire mode is the same
/// code whatever the server, and the legacy server's answers are covered by `protobuf.rs`.
///
/// ```ignore
/// kache_tests::on_each_server_and_wire! {
///     /// What the test shows.
///     async fn lists_everything(server: Server, wire: Wire) {
///         let (_, _, api) = shared_env(server, "list").await;
///         let events = configmap_watcher(api, Config::default(), wire);
///         // ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! on_each_server_and_wire {
    (
        $(#[$meta:meta])*
        async fn $name:ident($server:ident: Server, $wire:ident: Wire) $body:block
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($server: $crate::Server, $wire: $crate::Wire) $body

            #[tokio::test]
            async fn legacy() {
                $crate::run_on($crate::Server::Legacy, |server| body(server, $crate::Wire::Json))
                    .await;
            }

            #[tokio::test]
            async fn modern() {
                $crate::run_on($crate::Server::Modern, |server| body(server, $crate::Wire::Json))
                    .await;
            }

            #[tokio::test]
            async fn modern_protobuf() {
                $crate::run_on($crate::Server::Modern, |server| {
                    body(server, $crate::Wire::Protobuf)
                })
                .await;
            }
        }
        $crate::on_each_server_and_wire! { $($rest)* }
    };
    () => {};
}

/// The encoding a watcher reads: what [`configmap_watcher`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// `watcher`: JSON on the wire.
    Json,
    /// `protobuf_watcher`: protobuf on the wire, each object converted to k8s-openapi's
    /// `ConfigMap` as it arrives.
    Protobuf,
}

/// The items of a [`configmap_watcher`].
pub type ConfigMapEvents = BoxStream<'static, kache_watch::Result<Event<ConfigMap>>>;

/// A watcher of `api`'s `ConfigMap`s reading `wire`, without backoff: `watcher(api, config)`
/// for JSON; for protobuf, `protobuf_watcher` on the same client and namespace, each
/// `Proto<ConfigMap>` converted to k8s-openapi's `ConfigMap` ([`openapi_configmap`]), each
/// event kept as the same variant and each error as the same error. The conversion maps one
/// item to one item, so the watcher's progress reports still reach a store (see
/// `kache_watch::plumbing::Progress`).
#[must_use]
pub fn configmap_watcher(api: Api<ConfigMap>, config: Config, wire: Wire) -> ConfigMapEvents {
    match wire {
        Wire::Json => watcher(api, config).boxed(),
        Wire::Protobuf => protobuf_watcher(proto_api(&api), config)
            .map(|item| item.map(|event| event.map(openapi_configmap)))
            .boxed(),
    }
}

/// An `Api` of protobuf-decoded `ConfigMap`s on `api`'s client and namespace.
///
/// # Panics
/// If `api` is not namespaced.
#[must_use]
pub fn proto_api(api: &Api<ConfigMap>) -> Api<Proto<PbConfigMap>> {
    Api::namespaced(
        api.clone().into_client(),
        api.namespace().expect("a namespaced Api"),
    )
}

/// `cm` as k8s-openapi's `ConfigMap`, as a JSON answer gives it: its metadata, data, binary
/// data and immutability. Empty maps become `None`, since JSON omits them.
#[must_use]
pub fn openapi_configmap(cm: Proto<PbConfigMap>) -> ConfigMap {
    let (metadata, cm) = cm.into_parts();
    ConfigMap {
        metadata,
        data: (!cm.data.is_empty()).then_some(cm.data),
        binary_data: (!cm.binary_data.is_empty()).then(|| {
            cm.binary_data
                .into_iter()
                .map(|(key, bytes)| (key, ByteString(bytes)))
                .collect()
        }),
        immutable: cm.immutable,
    }
}

/// The servers `KACHE_TEST_SERVERS` names (comma-separated), or both when it is unset.
///
/// # Panics
/// When the variable names an unknown server: a typo must not silently skip a suite.
#[must_use]
pub fn selected_servers() -> Vec<Server> {
    match std::env::var("KACHE_TEST_SERVERS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| {
                name.parse()
                    .unwrap_or_else(|e| panic!("KACHE_TEST_SERVERS: {e}"))
            })
            .collect(),
        _ => Server::ALL.to_vec(),
    }
}

/// Runs `body` against `server` if [`selected_servers`] has it; otherwise says so and returns.
pub async fn run_on<F, Fut>(server: Server, body: F)
where
    F: FnOnce(Server) -> Fut,
    Fut: Future<Output = ()>,
{
    if selected_servers().contains(&server) {
        init_tracing();
        body(server).await;
    } else {
        eprintln!("not run on the {server} server: KACHE_TEST_SERVERS leaves it out");
    }
}

/// A control plane of its own running `server` with default options, for tests that restart
/// or break it.
///
/// # Panics
/// When the control plane cannot start.
pub async fn own_env(server: Server) -> TestEnv {
    TestEnv::builder()
        .server(server)
        .start()
        .await
        .expect("control plane")
}

/// A namespace named after `prefix` on the control plane running `server` that the whole
/// test binary shares, and an admin `Api` for it.
///
/// # Panics
/// When the control plane cannot start or the namespace cannot be created.
pub async fn shared_env(
    server: Server,
    prefix: &str,
) -> (&'static TestEnv, String, Api<ConfigMap>) {
    let env = TestEnv::shared_on(server).await.expect("control plane");
    let ns = env.create_namespace(prefix).await.expect("namespace");
    let api = Api::namespaced(env.client(), &ns);
    (env, ns, api)
}

/// A private control plane running `server` whose requests reach etcd (watch cache off), so
/// that compacting etcd gives real `410 Gone` answers, with a fresh namespace named after
/// `prefix` and an admin `Api` for it.
///
/// # Panics
/// When the control plane cannot start or the namespace cannot be created.
pub async fn private_env(server: Server, prefix: &str) -> (TestEnv, String, Api<ConfigMap>) {
    let env = TestEnv::builder()
        .server(server)
        .watch_cache(false)
        .start()
        .await
        .expect("control plane");
    let ns = env.create_namespace(prefix).await.expect("namespace");
    let api = Api::namespaced(env.client(), &ns);
    (env, ns, api)
}

/// A [`Proxy`] in front of `env`'s API server and an `Api` for namespace `ns` that reaches
/// the server only through it: give the `Api` to the watcher, then `cut()` and `restore()`.
///
/// # Panics
/// When the proxy or its client cannot be built.
pub async fn cut_off(env: &TestEnv, ns: &str) -> (Proxy, Api<ConfigMap>) {
    let (proxy, _, api) = cut_off_recorded(env, ns).await;
    (proxy, api)
}

/// Like [`cut_off`], and the `Api`'s client records its requests in the returned log.
///
/// # Panics
/// When the proxy or its client cannot be built.
pub async fn cut_off_recorded(env: &TestEnv, ns: &str) -> (Proxy, RequestLog, Api<ConfigMap>) {
    let proxy = Proxy::start(env.server_url()).await.expect("proxy");
    let log = RequestLog::new();
    let client = log.client(&proxy.config(env.config())).expect("client");
    (proxy, log, Api::namespaced(client, ns))
}

/// The backoff of test watchers: 100 ms to 1 s, since faults in tests are short.
#[must_use]
pub fn quick_backoff() -> Backoff {
    Backoff::default()
        .initial(Duration::from_millis(100))
        .max(Duration::from_secs(1))
}

/// Creates `count` `ConfigMap`s named `<prefix>-<i>` with `labels` and a 512-byte payload
/// ([`configmap`]), [`IN_FLIGHT`](kache_testenv::IN_FLIGHT) requests at a time.
///
/// # Panics
/// When the server refuses a create.
pub async fn create_configmaps(
    api: &Api<ConfigMap>,
    prefix: &str,
    count: usize,
    labels: &[(&str, &str)],
) {
    let objects = (0..count).map(|i| configmap(&format!("{prefix}-{i}"), labels, 512));
    create_all(api, objects).await.expect("create configmaps");
}

/// `(namespace/name, resourceVersion)` of every object a fresh, unpaginated LIST returns.
///
/// # Panics
/// When the LIST fails.
pub async fn listed_versions(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items
        .iter()
        .map(|cm| (key_of(cm), version_of(cm)))
        .collect()
}

/// `namespace/name` of an object, its resourceVersion, and those of every object in a store:
/// the same as the replay of subscriber events uses.
pub use kache_store::testing::{key_of, stored_versions, version_of};

/// The partition tool: cuts a client off from the API server while the server keeps running.
pub use kache_testenv::Proxy;

/// Seeding and request recording, as any user of kache-testenv has them.
pub use kache_testenv::{
    RecordedRequest, RequestKind, RequestLog, configmap, create_all, delete_all,
};

/// A subscriber's view of the store: kache-store's one replay of subscriber events
/// ([`Replay`]), the keys of the deletes it heard, and whether its stream ended. Cheap to
/// clone; clones share the view.
#[derive(Clone, Debug)]
pub struct View {
    // `Arc<Mutex>`: the following task writes, the test reads.
    inner: Arc<Mutex<ViewState>>,
}

impl Default for View {
    fn default() -> Self {
        let state = ViewState {
            replay: Replay::default(),
            deleted: Vec::new(),
            keep_deleted: true,
            ended: false,
        };
        Self {
            inner: Arc::new(Mutex::new(state)),
        }
    }
}

#[derive(Debug)]
struct ViewState {
    replay: Replay<ConfigMap>,
    deleted: Vec<String>,
    /// Whether to keep the keys of `Delete` events (not in soak runs: they would grow).
    keep_deleted: bool,
    ended: bool,
}

impl View {
    /// Applies one received event to the view.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked, or if the event breaks the subscriber's
    /// protocol (see [`Replay`]).
    pub fn apply(&self, event: &Event<Arc<ConfigMap>>) {
        let mut view = self.inner.lock().unwrap();
        view.replay.apply(event);
        if let Event::Delete(cm) = event
            && view.keep_deleted
        {
            view.deleted.push(key_of(cm.as_ref()));
        }
    }

    /// `namespace/name` → resourceVersion, as the subscriber has been told.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    #[must_use]
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.inner.lock().unwrap().replay.versions()
    }

    /// Events received so far.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.inner.lock().unwrap().replay.events()
    }

    /// `Init`s received so far: the first snapshot plus one per resync.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    #[must_use]
    pub fn inits(&self) -> u64 {
        self.inner.lock().unwrap().replay.inits()
    }

    /// Keys of the `Delete` events received so far, in order (empty for a view from
    /// [`follow_without_history`]).
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    #[must_use]
    pub fn deleted(&self) -> Vec<String> {
        self.inner.lock().unwrap().deleted.clone()
    }

    /// How many `Delete` events were received.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    #[must_use]
    pub fn deletes(&self) -> u64 {
        self.inner.lock().unwrap().replay.deletes()
    }

    /// Whether the subscriber's stream has ended.
    ///
    /// # Panics
    /// If a previous holder of the lock panicked.
    #[must_use]
    pub fn ended(&self) -> bool {
        self.inner.lock().unwrap().ended
    }
}

/// Follows `subscriber` on a background task, waiting `delay` after each event (zero for a
/// fast subscriber), and returns its view.
///
/// # Panics
/// On the task, if a reader of the view panicked while holding its lock.
#[must_use]
pub fn follow(subscriber: Subscriber<ConfigMap>, delay: Duration) -> View {
    spawn_follower(subscriber, delay, true)
}

fn spawn_follower(
    mut subscriber: Subscriber<ConfigMap>,
    delay: Duration,
    keep_deleted: bool,
) -> View {
    let view = View::default();
    view.inner.lock().unwrap().keep_deleted = keep_deleted;
    tokio::spawn({
        let view = view.clone();
        async move {
            while let Some(event) = subscriber.next().await {
                view.apply(&event);
                if !delay.is_zero() {
                    // A slow consumer, on purpose.
                    tokio::time::sleep(delay).await;
                }
            }
            view.inner.lock().unwrap().ended = true;
        }
    });
    view
}

/// Like [`follow`], but the view keeps no list of deleted keys, so that its memory stays
/// flat over a long run.
#[must_use]
pub fn follow_without_history(subscriber: Subscriber<ConfigMap>, delay: Duration) -> View {
    spawn_follower(subscriber, delay, false)
}

/// What a watcher fed into a store did, counted by [`Reflector`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Events applied to the store.
    pub events: AtomicU64,
    /// `Init` events: the first list plus one per relist.
    pub inits: AtomicU64,
    /// Error items.
    pub errors: AtomicU64,
    /// Error items that were `403 Forbidden`.
    pub forbidden: AtomicU64,
    /// Error items that were `410 Gone`.
    pub gone: AtomicU64,
}

impl Counters {
    /// Reads one counter.
    #[must_use]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// `watcher(api, config).backoff(..).reflect(writer)` (or its protobuf twin, see
/// [`Reflector::start_in`]) running on a background task, with counters; the task stops when
/// this is dropped.
#[derive(Debug)]
pub struct Reflector {
    /// What the watcher has done so far.
    pub counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reflector {
    /// Starts the JSON watcher with [`quick_backoff`].
    #[must_use]
    pub fn start(api: Api<ConfigMap>, config: Config, writer: Writer<ConfigMap>) -> Self {
        Self::start_in(Wire::Json, api, config, writer)
    }

    /// Starts a [`configmap_watcher`] reading `wire`, with [`quick_backoff`].
    #[must_use]
    pub fn start_in(
        wire: Wire,
        api: Api<ConfigMap>,
        config: Config,
        writer: Writer<ConfigMap>,
    ) -> Self {
        let backoff = quick_backoff();
        let counters = Arc::new(Counters::default());
        let mut events = Box::pin(
            configmap_watcher(api, config, wire)
                .backoff(backoff)
                .reflect(writer),
        );
        let task = tokio::spawn({
            let counters = counters.clone();
            async move {
                while let Some(item) = events.next().await {
                    match item {
                        Ok(event) => {
                            counters.events.fetch_add(1, Ordering::Relaxed);
                            if matches!(event, Event::Init) {
                                counters.inits.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(err) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            if err.is_forbidden() {
                                counters.forbidden.fetch_add(1, Ordering::Relaxed);
                            }
                            if err.status_code() == Some(410) {
                                counters.gone.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        });
        Self { counters, task }
    }
}

/// How far one map of `namespace/name` → resourceVersion is from the expected one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Expected keys that are absent.
    pub missing: Vec<String>,
    /// Keys present that should not be.
    pub extra: Vec<String>,
    /// Keys present with another resourceVersion.
    pub stale: Vec<String>,
}

impl Mismatch {
    /// Compares `actual` with `expected`.
    #[must_use]
    pub fn between(expected: &BTreeMap<String, String>, actual: &BTreeMap<String, String>) -> Self {
        let mut mismatch = Self::default();
        for (key, version) in expected {
            match actual.get(key) {
                None => mismatch.missing.push(key.clone()),
                Some(v) if v != version => mismatch.stale.push(key.clone()),
                Some(_) => {}
            }
        }
        mismatch.extra = actual
            .keys()
            .filter(|key| !expected.contains_key(*key))
            .cloned()
            .collect();
        mismatch
    }

    /// How many keys are wrong.
    #[must_use]
    pub fn count(&self) -> usize {
        self.missing.len() + self.extra.len() + self.stale.len()
    }
}

/// The result of [`converges`]: the store and every view equal a fresh LIST.
#[derive(Clone, Copy, Debug)]
pub struct Converged {
    /// Objects in the LIST (and so in the store and every view).
    pub objects: usize,
    /// Keys that differed in the last comparison before convergence (summed over the store
    /// and the views); diagnostic only.
    pub last_mismatches: usize,
}

/// Waits, for at most [`BOUND`], until `store` and every view in `views` equal a fresh LIST
/// from the server exactly (namespace/name → resourceVersion). LISTs that fail (a server
/// still restarting) are retried.
///
/// # Panics
/// When the bound passes; the message says what differed in the last comparison.
pub async fn converges(
    api: &Api<ConfigMap>,
    store: &Store<ConfigMap>,
    views: &[View],
) -> Converged {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut last = String::from("no successful LIST");
    let mut last_mismatches = 0;
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            let expected: BTreeMap<String, String> = list
                .items
                .iter()
                .map(|cm| (key_of(cm), version_of(cm)))
                .collect();
            let mut wrong = vec![(
                "store".to_owned(),
                Mismatch::between(&expected, &stored_versions(store)),
            )];
            for (i, view) in views.iter().enumerate() {
                wrong.push((
                    format!("subscriber {i}"),
                    Mismatch::between(&expected, &view.versions()),
                ));
            }
            wrong.retain(|(_, mismatch)| mismatch.count() > 0);
            if wrong.is_empty() {
                return Converged {
                    objects: expected.len(),
                    last_mismatches,
                };
            }
            last_mismatches = wrong.iter().map(|(_, m)| m.count()).sum();
            last = format!("{} objects listed; {wrong:?}", expected.len());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence within {BOUND:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A small, seeded pseudo-random generator (xorshift64*), so churn is reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    ///
    /// # Panics
    /// If `n` is zero.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        usize::try_from(x % u64::try_from(n).expect("usize fits u64")).expect("below n")
    }
}

/// Retries `op` until it succeeds or fails with an API error (the server answered), with a
/// short pause between attempts, for at most [`BOUND`]: transport errors are expected while a
/// server restarts.
async fn retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, kube_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube_client::Error>>,
{
    within(what, async {
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(kube_client::Error::Api(status)) if status.code != 429 && status.code < 500 => {
                    return Err(kube_client::Error::Api(status));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
}

/// One churning writer: creates, updates (data changes) and deletes `ConfigMap`s named
/// `w<worker>-<j>` for `j` in `0..names`, chosen at random, until `keep_going(ops done)` is
/// false. Survives a server restart by retrying. Returns the number of writes made.
///
/// # Panics
/// When the server refuses a write for another reason than a retry of a write that succeeded.
pub async fn churn(
    api: &Api<ConfigMap>,
    worker: usize,
    names: usize,
    mut keep_going: impl FnMut(u64) -> bool,
) -> u64 {
    let mut rng = Rng::new(u64::try_from(worker).unwrap_or_default() + 1);
    let mut exists = vec![false; names];
    let mut ops = 0;
    while keep_going(ops) {
        let j = rng.below(names);
        let name = format!("w{worker}-{j}");
        let (dp, pp, post) = (
            DeleteParams::default(),
            PatchParams::default(),
            PostParams::default(),
        );
        if exists[j] {
            if rng.below(3) == 0 {
                match retry("a delete", || api.delete(&name, &dp)).await {
                    // 404: an earlier attempt went through before its answer was lost.
                    Ok(_) => {}
                    Err(kube_client::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => panic!("delete {name}: {e}"),
                }
                exists[j] = false;
            } else {
                let patch = Patch::Merge(serde_json::json!({"data": {"op": ops.to_string()}}));
                retry("an update", || api.patch(&name, &pp, &patch))
                    .await
                    .unwrap_or_else(|e| panic!("update {name}: {e}"));
            }
        } else {
            let cm = configmap(&name, &[("worker", &worker.to_string())], 512);
            match retry("a create", || api.create(&post, &cm)).await {
                Ok(_) => {}
                Err(kube_client::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("create {name}: {e}"),
            }
            exists[j] = true;
        }
        ops += 1;
    }
    ops
}

// The code of the README and of the docs below, compiled and checked as doctests here, in a
// crate that is never published (a library's package holds only its own folder). The design
// notes that were in docs/ (consistency, architecture) are kache-store's rustdoc now.

/// The README's code.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The code of docs/observability.md (kache-store's `metrics` feature is on in this crate).
#[cfg(doctest)]
#[doc = include_str!("../../docs/observability.md")]
pub struct ObservabilityDoctests;

/// The code of docs/sharding.md.
#[cfg(doctest)]
#[doc = include_str!("../../docs/sharding.md")]
pub struct ShardingDoctests;

/// The code of docs/warm-restart.md.
#[cfg(doctest)]
#[doc = include_str!("../../docs/warm-restart.md")]
pub struct WarmRestartDoctests;

/// The code of docs/testing.md: kache-testenv in a user's own tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/testing.md")]
pub struct TestingDoctests;

/// The code of docs/protobuf.md (kache-watch's `protobuf` feature is on in this crate).
#[cfg(doctest)]
#[doc = include_str!("../../docs/protobuf.md")]
pub struct ProtobufDoctests;

/// The code of docs/controller.md.
#[cfg(doctest)]
#[doc = include_str!("../../docs/controller.md")]
pub struct ControllerDoctests;
