//! End-to-end initial sync against real API servers (kache-testenv: etcd and either
//! kube-apiserver v1.20.2, which refuses streaming lists, or the modern server on the
//! Kubernetes 1.36 apiserver library, which serves them): kache (`watcher` + `reflect`) with
//! each initial list strategy, in JSON and in protobuf (`protobuf_watcher`), kube-runtime 5.x (`watcher` + `reflector`), client-go 0.36's
//! shared informer asking for protobuf (its default) and for JSON (the Go program in
//! `benches/clientgo/`), one raw unpaginated `Api::list` of the same objects, and the bytes of
//! one unpaginated LIST in JSON and in protobuf read to the end and counted, not decoded. For
//! `ConfigMap`s (which carry the `managedFields` the server writes on create) and for `Pod`s.
//!
//! Per server and kind: seeds the objects once (32 creates in flight), runs one untimed round,
//! then `RUNS` rounds in which every variant runs once, the order rotating each round; time is
//! from creating the watcher to `wait_synced` (or to the end of the list). client-go runs in
//! its own process each time and times itself, from starting the informer to `HasSynced`. Then,
//! for memory, each variant syncs once in a fresh child process (this binary re-executed with a
//! hidden argument, or the client-go runner), which reports its peak RSS during the sync and its
//! RSS once synced, both above its RSS just before. Prints one Markdown table per server and
//! kind.
//!
//! Run: `just bench-e2e` or `cargo run --release -p kache-benches --bin e2e-sync`.
//! Environment: `KACHE_BENCH_SERVERS` (`legacy,modern` by default), `KACHE_BENCH_KINDS`
//! (`configmaps,pods` by default), `KACHE_BENCH_OBJECTS` (default 10000; a comma-separated
//! list such as `1000,10000` benches each size in turn, each in a namespace of its own),
//! `KACHE_BENCH_RUNS`
//! (timed rounds, default 7), `KACHE_BENCH_VARIANTS` (variant ids, comma-separated, such as
//! `kache-auto,kache-protobuf-auto`: only those, beside the raw list and client-go; all when
//! unset), `KACHE_BENCH_NAME` (the name the results are written under, `e2e-sync` by
//! default), `KACHE_BENCH_MEMORY_RUNS` (child processes per variant, default
//! 3), `KACHE_CLIENTGO` (the client-go runner; built with `benches/clientgo/build.sh` when
//! unset).

use std::fmt::Debug;
use std::future::{poll_fn, ready};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body::Body as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kache_benches::{
    BoxError, ChildReport, Encoding, Results, Table, bench_servers, config_map, env_sizes,
    env_usize, fmt_bytes, fmt_ns, median, percentile, pod, proc_status_bytes, ratio,
};
use kache_store::ReflectExt;
use kache_testenv::{Server, TestEnv};
use kache_watch::{InitialListStrategy, Proto};
use kube_client::api::{ListParams, ObjectList, ObjectMeta};
use kube_client::config::{KubeConfigOptions, Kubeconfig};
use kube_client::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// The hidden first argument that makes this binary a memory-measuring child:
/// `e2e-sync --sync-child <kubeconfig> <namespace> <kind> <variant id> <objects>`.
const CHILD_ARG: &str = "--sync-child";

/// The line prefix a child prints its measurement after.
const CHILD_REPORT: &str = "e2e-sync-child:";

/// The line prefix of the client-go runner's report (`benches/clientgo/main.go`).
const CLIENTGO_REPORT: &str = "clientgo-sync:";

/// The kinds of objects the bench syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ConfigMaps,
    Pods,
}

impl Kind {
    /// The resource's plural, as in URLs and on the command lines of children.
    fn plural(self) -> &'static str {
        match self {
            Self::ConfigMaps => "configmaps",
            Self::Pods => "pods",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::ConfigMaps => "ConfigMaps",
            Self::Pods => "Pods",
        }
    }

    fn from_plural(plural: &str) -> Result<Self, BoxError> {
        [Self::ConfigMaps, Self::Pods]
            .into_iter()
            .find(|k| k.plural() == plural)
            .ok_or_else(|| format!("unknown kind {plural} (configmaps or pods)").into())
    }

    /// The kinds of `KACHE_BENCH_KINDS` (comma-separated), both when unset.
    fn from_env() -> Result<Vec<Self>, BoxError> {
        match std::env::var("KACHE_BENCH_KINDS") {
            Ok(list) if !list.trim().is_empty() => list.split(',').map(Self::from_plural).collect(),
            _ => Ok(vec![Self::ConfigMaps, Self::Pods]),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    RawList,
    /// One unpaginated LIST in an encoding, its bytes read to the end and counted.
    RawBytes(Encoding),
    /// kache's default configuration: `Auto`, pages from 500 (growing) when it lists.
    KacheAuto,
    KacheStreamingList,
    KacheListWatch(Option<u32>),
    KubeRuntimeListWatch(Option<u32>),
    KubeRuntimeStreamingList,
    /// kache in protobuf (`protobuf_watcher`), `Auto`: a streaming list where served.
    KacheProtobufAuto,
    /// kache in protobuf, `ListWatch` with pages.
    KacheProtobufListWatch(Option<u32>),
    /// kache's default, or in protobuf (`true`), with the decoded objects kept as they are
    /// (`Config::keep_decoded_capacity`): what the watcher's exact copy of each costs.
    KacheDecodedCapacity(bool),
    /// kache `ListWatch` in an encoding, every page of 500 (`Config::fixed_pages`): what the
    /// pages' growth saves.
    KacheFixedPages(Encoding),
    /// client-go's shared informer, in its own process.
    ClientGo(Encoding),
}

impl Variant {
    /// Every variant, in table order.
    const ALL: [Self; 18] = [
        Self::RawList,
        Self::RawBytes(Encoding::Json),
        Self::RawBytes(Encoding::Protobuf),
        Self::KacheAuto,
        Self::KacheStreamingList,
        Self::KubeRuntimeStreamingList,
        Self::KacheListWatch(Some(500)),
        Self::KubeRuntimeListWatch(Some(500)),
        Self::KacheListWatch(None),
        Self::KubeRuntimeListWatch(None),
        Self::KacheProtobufAuto,
        Self::KacheProtobufListWatch(Some(500)),
        Self::KacheDecodedCapacity(false),
        Self::KacheDecodedCapacity(true),
        Self::KacheFixedPages(Encoding::Json),
        Self::KacheFixedPages(Encoding::Protobuf),
        Self::ClientGo(Encoding::Protobuf),
        Self::ClientGo(Encoding::Json),
    ];

    /// Whether the variant can sync from `server` (streaming lists need a server that serves
    /// them; `Auto` and client-go fall back by themselves).
    fn applies_to(self, server: Server) -> bool {
        match self {
            Self::KacheStreamingList | Self::KubeRuntimeStreamingList => {
                server.serves_streaming_lists()
            }
            _ => true,
        }
    }

    fn label(self) -> String {
        let pages =
            |page: Option<u32>| page.map_or_else(|| "unlimited".to_owned(), |p| p.to_string());
        match self {
            Self::RawList => "raw Api::list, unpaginated".to_owned(),
            Self::RawBytes(encoding) => {
                format!(
                    "raw bytes of one LIST, {} (read, not decoded)",
                    encoding.name()
                )
            }
            Self::KacheAuto => "kache Auto (default; pages from 500 if it lists)".to_owned(),
            Self::KacheStreamingList => "kache StreamingList".to_owned(),
            Self::KacheListWatch(None) => "kache ListWatch, page unlimited".to_owned(),
            Self::KacheListWatch(Some(page)) => format!("kache ListWatch, pages from {page}"),
            Self::KubeRuntimeListWatch(page) => {
                format!("kube-runtime ListWatch, page {}", pages(page))
            }
            Self::KubeRuntimeStreamingList => "kube-runtime StreamingList".to_owned(),
            Self::KacheProtobufAuto => "kache protobuf, Auto (default)".to_owned(),
            Self::KacheProtobufListWatch(None) => {
                "kache protobuf, ListWatch, page unlimited".to_owned()
            }
            Self::KacheProtobufListWatch(Some(page)) => {
                format!("kache protobuf, ListWatch pages from {page}")
            }
            Self::KacheDecodedCapacity(false) => "kache Auto, decoded capacity kept".to_owned(),
            Self::KacheDecodedCapacity(true) => {
                "kache protobuf, Auto, decoded capacity kept".to_owned()
            }
            Self::KacheFixedPages(Encoding::Json) => {
                "kache ListWatch, fixed pages of 500".to_owned()
            }
            Self::KacheFixedPages(Encoding::Protobuf) => {
                "kache protobuf, ListWatch, fixed pages of 500".to_owned()
            }
            Self::ClientGo(Encoding::Protobuf) => {
                "client-go informer, protobuf (its default)".to_owned()
            }
            Self::ClientGo(Encoding::Json) => "client-go informer, JSON".to_owned(),
        }
    }

    /// The name a child process is given on its command line.
    fn id(self) -> String {
        let pages = |page: Option<u32>| page.map_or_else(|| "all".to_owned(), |p| p.to_string());
        match self {
            Self::RawList => "raw-list".to_owned(),
            Self::RawBytes(encoding) => format!("raw-bytes-{}", encoding.name()),
            Self::KacheAuto => "kache-auto".to_owned(),
            Self::KacheStreamingList => "kache-streaming".to_owned(),
            Self::KacheListWatch(page) => format!("kache-listwatch-{}", pages(page)),
            Self::KubeRuntimeListWatch(page) => format!("kube-runtime-listwatch-{}", pages(page)),
            Self::KubeRuntimeStreamingList => "kube-runtime-streaming".to_owned(),
            Self::KacheProtobufAuto => "kache-protobuf-auto".to_owned(),
            Self::KacheProtobufListWatch(page) => {
                format!("kache-protobuf-listwatch-{}", pages(page))
            }
            Self::KacheDecodedCapacity(false) => "kache-auto-decoded-capacity".to_owned(),
            Self::KacheDecodedCapacity(true) => "kache-protobuf-auto-decoded-capacity".to_owned(),
            Self::KacheFixedPages(Encoding::Json) => "kache-fixed-pages-500".to_owned(),
            Self::KacheFixedPages(Encoding::Protobuf) => {
                "kache-protobuf-fixed-pages-500".to_owned()
            }
            Self::ClientGo(encoding) => format!("client-go-{}", encoding.name()),
        }
    }

    fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.id() == id)
    }

    /// The variants `KACHE_BENCH_VARIANTS` names (ids, comma-separated), with the raw list and
    /// client-go in protobuf that every table is held against; `None` (all) when unset.
    fn chosen() -> Result<Option<Vec<Self>>, BoxError> {
        let Ok(list) = std::env::var("KACHE_BENCH_VARIANTS") else {
            return Ok(None);
        };
        let mut chosen = vec![Self::RawList, Self::ClientGo(Encoding::Protobuf)];
        for id in list.split(',').map(str::trim).filter(|id| !id.is_empty()) {
            chosen.push(Self::from_id(id).ok_or_else(|| {
                let ids: Vec<String> = Self::ALL.iter().map(|v| v.id()).collect();
                format!("unknown variant {id} (one of {})", ids.join(", "))
            })?);
        }
        Ok(Some(chosen))
    }

    /// The encoding of a kache variant's sync, whose raw bytes it is compared with.
    fn kache_encoding(self) -> Option<Encoding> {
        match self {
            Self::KacheAuto
            | Self::KacheStreamingList
            | Self::KacheListWatch(_)
            | Self::KacheDecodedCapacity(false)
            | Self::KacheFixedPages(Encoding::Json) => Some(Encoding::Json),
            Self::KacheProtobufAuto
            | Self::KacheProtobufListWatch(_)
            | Self::KacheDecodedCapacity(true)
            | Self::KacheFixedPages(Encoding::Protobuf) => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// The kube-runtime variant that gets the initial list the same way on `server`.
    fn kube_runtime_counterpart(self, server: Server) -> Option<Self> {
        match self {
            Self::KacheAuto if server.serves_streaming_lists() => {
                Some(Self::KubeRuntimeStreamingList)
            }
            Self::KacheAuto => Some(Self::KubeRuntimeListWatch(Some(500))),
            Self::KacheStreamingList => Some(Self::KubeRuntimeStreamingList),
            Self::KacheListWatch(page) => Some(Self::KubeRuntimeListWatch(page)),
            _ => None,
        }
    }
}

/// What the objects of a kind need to be synced by every library here.
trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The same type as k8s-pb has it, for protobuf on the wire.
    type Pb: kache_watch::ProtoObject<Scope = k8s_pb::NamespaceResourceScope> + Debug + Sync;

    /// Object `i` of the seeded set.
    fn fixture(i: usize) -> Self;
}

impl Object for ConfigMap {
    type Pb = k8s_pb::api::core::v1::ConfigMap;

    fn fixture(i: usize) -> Self {
        config_map(i, 0)
    }
}

impl Object for Pod {
    type Pb = k8s_pb::api::core::v1::Pod;

    fn fixture(i: usize) -> Self {
        let mut pod = pod(i, 0);
        // The server sets a new pod's status itself.
        pod.status = None;
        pod
    }
}

/// What a variant has once synced: the store (with its watch still running), the list, or
/// what a process that synced by itself reported.
enum Synced<K: Object> {
    List(ObjectList<K>),
    Bytes(u64),
    Kache(kache_store::Store<K>, JoinHandle<()>),
    KacheProtobuf(kache_store::Store<Proto<K::Pb>>, JoinHandle<()>),
    KubeRuntime(kube_runtime::reflector::Store<K>, JoinHandle<()>),
    Process { objects: usize, report: Report },
}

impl<K: Object> Synced<K> {
    /// How many objects it holds; `None` for bytes that were not decoded.
    fn len(&self) -> Option<usize> {
        match self {
            Self::List(list) => Some(list.items.len()),
            Self::Bytes(_) => None,
            Self::Kache(store, _) => Some(store.len()),
            Self::KacheProtobuf(store, _) => Some(store.len()),
            Self::KubeRuntime(store, _) => Some(store.len()),
            Self::Process { objects, .. } => Some(*objects),
        }
    }

    /// Checks that it holds the `n` objects of the namespace.
    fn check(&self, variant: Variant, n: usize) -> Result<(), BoxError> {
        match self.len() {
            Some(len) if len != n => {
                Err(format!("{} synced {len} objects, not {n}", variant.label()).into())
            }
            _ => Ok(()),
        }
    }

    /// Stops the watch and waits until its task is gone. A child must not return from `main`
    /// with the task alive: the runtime's shutdown may drop the client's connection tasks
    /// first, and a watcher without backoff then retries its failing request in a loop that
    /// never yields, so the shutdown never ends.
    async fn close(mut self) {
        if let Self::Kache(_, driver)
        | Self::KacheProtobuf(_, driver)
        | Self::KubeRuntime(_, driver) = &mut self
        {
            driver.abort();
            // `Err(cancelled)` is the expected outcome.
            let _ = driver.await;
        }
    }
}

impl<K: Object> Drop for Synced<K> {
    fn drop(&mut self) {
        if let Self::Kache(_, driver)
        | Self::KacheProtobuf(_, driver)
        | Self::KubeRuntime(_, driver) = self
        {
            driver.abort();
        }
    }
}

/// Reads one unpaginated LIST of `api`'s objects in `encoding` to its end, keeping none of it:
/// what any client must at least do. Returns the bytes read.
async fn raw_bytes<K: Object>(api: &Api<K>, encoding: Encoding) -> Result<u64, BoxError> {
    let request = http::Request::get(api.resource_url())
        .header(http::header::ACCEPT, encoding.media_type())
        .body(kube_client::client::Body::empty())?;
    let response = api.clone().into_client().send(request).await?;
    if !response.status().is_success() {
        return Err(format!("raw LIST answered {}", response.status()).into());
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with(encoding.media_type()) {
        return Err(format!("asked for {}, got {content_type:?}", encoding.media_type()).into());
    }
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Some(data) = frame?.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

/// Where to reach the objects: the client's API, plus what a separate process needs.
struct Target<'a, K: Object> {
    api: Api<K>,
    kind: Kind,
    kubeconfig: &'a Path,
    namespace: &'a str,
    n: usize,
    /// The client-go runner; a child process has none.
    runner: Option<&'a Path>,
}

/// A kache store fed by `events` in a task of its own, and that task.
fn reflect_in_task<V>(
    events: impl futures::Stream<Item = kache_watch::Result<kache_watch::Event<V>>> + Send + 'static,
) -> (kache_store::Store<V>, JoinHandle<()>)
where
    V: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    let (store, writer) = kache_store::store::<V>();
    let driver = tokio::spawn(events.reflect(writer).for_each(|_| ready(())));
    (store, driver)
}

/// Syncs `variant` from nothing: returns once the store is ready (or the list has arrived).
async fn sync<K: Object>(variant: Variant, target: &Target<'_, K>) -> Result<Synced<K>, BoxError> {
    let api = &target.api;
    let kache =
        |config: kache_watch::Config| reflect_in_task(kache_watch::watcher(api.clone(), config));
    let kube_runtime = |config: kube_runtime::watcher::Config| {
        let (store, writer) = kube_runtime::reflector::store::<K>();
        let driver = tokio::spawn(
            kube_runtime::reflector(writer, kube_runtime::watcher(api.clone(), config))
                .for_each(|_| ready(())),
        );
        (store, driver)
    };
    let kache_list_watch = |page: Option<u32>| {
        let mut config =
            kache_watch::Config::default().initial_list_strategy(InitialListStrategy::ListWatch);
        config.page_size = page;
        config
    };
    let synced = match variant {
        Variant::RawList => Synced::List(api.list(&ListParams::default()).await?),
        Variant::RawBytes(encoding) => Synced::Bytes(raw_bytes(api, encoding).await?),
        Variant::KacheAuto
        | Variant::KacheStreamingList
        | Variant::KacheListWatch(_)
        | Variant::KacheDecodedCapacity(false)
        | Variant::KacheFixedPages(Encoding::Json) => {
            let config = match variant {
                Variant::KacheStreamingList => kache_watch::Config::default().streaming_lists(),
                Variant::KacheListWatch(page) => kache_list_watch(page),
                Variant::KacheFixedPages(_) => kache_list_watch(Some(500)).fixed_pages(),
                Variant::KacheDecodedCapacity(_) => {
                    kache_watch::Config::default().keep_decoded_capacity()
                }
                _ => kache_watch::Config::default(),
            };
            let (store, driver) = kache(config);
            let synced = Synced::Kache(store.clone(), driver);
            store.wait_synced().await?;
            synced
        }
        Variant::KacheProtobufAuto
        | Variant::KacheProtobufListWatch(_)
        | Variant::KacheDecodedCapacity(true)
        | Variant::KacheFixedPages(Encoding::Protobuf) => {
            let config = match variant {
                Variant::KacheProtobufListWatch(page) => kache_list_watch(page),
                Variant::KacheFixedPages(_) => kache_list_watch(Some(500)).fixed_pages(),
                Variant::KacheDecodedCapacity(_) => {
                    kache_watch::Config::default().keep_decoded_capacity()
                }
                _ => kache_watch::Config::default(),
            };
            let api: Api<Proto<K::Pb>> =
                Api::namespaced(api.clone().into_client(), target.namespace);
            let (store, driver) = reflect_in_task(kache_watch::protobuf_watcher(api, config));
            let synced = Synced::KacheProtobuf(store.clone(), driver);
            store.wait_synced().await?;
            synced
        }
        Variant::KubeRuntimeListWatch(_) | Variant::KubeRuntimeStreamingList => {
            let config = match variant {
                Variant::KubeRuntimeListWatch(page) => kube_runtime::watcher::Config {
                    page_size: page,
                    ..Default::default()
                },
                _ => kube_runtime::watcher::Config::default().streaming_lists(),
            };
            let (store, driver) = kube_runtime(config);
            let synced = Synced::KubeRuntime(store.clone(), driver);
            // kube-runtime's own name for the wait.
            store.wait_until_ready().await?;
            synced
        }
        Variant::ClientGo(encoding) => {
            let report = client_go(encoding, target).await?;
            Synced::Process {
                objects: report.field("objects")?,
                report,
            }
        }
    };
    Ok(synced)
}

/// How long one sync may take before the bench fails naming it, rather than hang.
const SYNC_BOUND: Duration = Duration::from_secs(120);

async fn sync_within_bound<K: Object>(
    variant: Variant,
    target: &Target<'_, K>,
) -> Result<Synced<K>, BoxError> {
    tokio::time::timeout(SYNC_BOUND, sync(variant, target))
        .await
        .map_err(|_| format!("{} did not sync within {SYNC_BOUND:?}", variant.label()))?
}

/// The client-go runner: `KACHE_CLIENTGO`, or built (once, then cached) by its script.
fn client_go_binary() -> Result<PathBuf, BoxError> {
    if let Some(path) = std::env::var_os("KACHE_CLIENTGO") {
        return Ok(path.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clientgo/build.sh");
    eprintln!("building the client-go runner ({})...", script.display());
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last() {
        Some(path) if output.status.success() => Ok(path.into()),
        _ => Err(format!("{} failed ({})", script.display(), output.status).into()),
    }
}

/// Runs client-go's informer once in its own process and reads its report.
async fn client_go<K: Object>(
    encoding: Encoding,
    target: &Target<'_, K>,
) -> Result<Report, BoxError> {
    let runner = target.runner.ok_or("no client-go runner")?;
    let mut command = Command::new(runner);
    command
        .arg("-kubeconfig")
        .arg(target.kubeconfig)
        .args(["-namespace", target.namespace])
        .args(["-resource", target.kind.plural()])
        .args(["-encoding", encoding.name()])
        .args(["-objects", &target.n.to_string()])
        .args(["-timeout", &format!("{}s", SYNC_BOUND.as_secs())]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    ChildReport::from_output(&output, CLIENTGO_REPORT, "the client-go runner").map(Report)
}

/// A child's report, with the fields every child prints.
#[derive(Debug)]
struct Report(ChildReport);

impl Report {
    fn field<T>(&self, name: &str) -> Result<T, BoxError>
    where
        T: std::str::FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.0.field(name)
    }

    fn memory(&self) -> Result<Memory, BoxError> {
        Ok(Memory {
            peak: self.field("peak")?,
            synced: self.field("synced")?,
            // Only the Go runner knows its heap.
            heap: self.field("heap").ok(),
        })
    }
}

fn describe(server: Server, env: &TestEnv) -> &'static str {
    if env.is_existing_cluster() {
        return "the existing cluster of KUBECONFIG";
    }
    match server {
        Server::Legacy => "kube-apiserver v1.20.2 (etcd 3.4; no streaming lists)",
        Server::Modern => "the Kubernetes 1.36 apiserver library (etcd 3.5; streaming lists)",
        _ => "an API server",
    }
}

/// Creates `n` objects in `namespace` (the server adds their `managedFields`).
async fn seed<K: Object>(api: &Api<K>, namespace: &str, n: usize) -> Result<(), BoxError> {
    let objects = (0..n).map(|i| {
        let mut object = K::fixture(i);
        let meta: &mut ObjectMeta = object.meta_mut();
        meta.namespace = Some(namespace.to_owned());
        meta.resource_version = None;
        meta.uid = None;
        meta.creation_timestamp = None;
        meta.managed_fields = None;
        object
    });
    kache_testenv::create_all(api, objects).await?;
    Ok(())
}

/// Memory of one sync, in bytes above the process's RSS just before it.
#[derive(Clone, Copy, Debug)]
struct Memory {
    /// `VmHWM` after the sync minus `VmHWM` before.
    peak: i64,
    /// `VmRSS` once synced (store held, watch running) minus `VmRSS` before.
    synced: i64,
    /// The client-go runner only: Go's heap in use once synced, after a GC, minus before.
    heap: Option<i64>,
}

fn signed(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The child: syncs `variant` once from the control plane of `kubeconfig` and prints its
/// [`Memory`] on stdout.
async fn child(args: &[String]) -> Result<(), BoxError> {
    let Ok(args) = <&[String; 5]>::try_from(args) else {
        return Err(
            format!("usage: e2e-sync {CHILD_ARG} KUBECONFIG NAMESPACE KIND VARIANT N").into(),
        );
    };
    let [kubeconfig, _, kind, variant, _] = args;
    let variant = Variant::from_id(variant).ok_or_else(|| format!("unknown variant {variant}"))?;
    let config = kube_client::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(Path::new(kubeconfig))?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(config)?;
    let kind = Kind::from_plural(kind)?;
    match kind {
        Kind::ConfigMaps => child_sync::<ConfigMap>(variant, client, args).await,
        Kind::Pods => child_sync::<Pod>(variant, client, args).await,
    }
}

async fn child_sync<K: Object>(
    variant: Variant,
    client: Client,
    [kubeconfig, namespace, kind, _, n]: &[String; 5],
) -> Result<(), BoxError> {
    let n: usize = n.parse()?;
    let target = Target::<K> {
        api: Api::namespaced(client, namespace),
        kind: Kind::from_plural(kind)?,
        kubeconfig: Path::new(kubeconfig),
        namespace,
        n,
        runner: None,
    };
    let api = &target.api;
    // One small request first, so the connection (TLS session, buffers, resolver threads) is
    // open before the measurement: every variant would pay it alike.
    api.list(&ListParams::default().limit(1)).await?;
    // Resets VmHWM to the current RSS (Linux 4.0+), so that an earlier transient peak above
    // today's RSS cannot hide part of the sync's; where refused, the difference below still
    // holds but may understate.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let hwm_before = proc_status_bytes("VmHWM")?;
    let rss_before = proc_status_bytes("VmRSS")?;
    let synced = sync_within_bound(variant, &target).await?;
    let peak = signed(proc_status_bytes("VmHWM")?) - signed(hwm_before);
    let held = signed(proc_status_bytes("VmRSS")?) - signed(rss_before);
    synced.check(variant, n)?;
    println!("{CHILD_REPORT} peak={peak} synced={held}");
    synced.close().await;
    Ok(())
}

/// Runs a child process for `variant` (this binary, or the client-go runner) and reads its
/// [`Memory`].
async fn measure_memory<K: Object>(
    variant: Variant,
    env: &TestEnv,
    target: &Target<'_, K>,
) -> Result<Memory, BoxError> {
    if let Variant::ClientGo(encoding) = variant {
        return client_go(encoding, target).await?.memory();
    }
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(CHILD_ARG).arg(env.kubeconfig_path()).args([
        target.namespace,
        target.kind.plural(),
        &variant.id(),
        &target.n.to_string(),
    ]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    Report(ChildReport::from_output(
        &output,
        CHILD_REPORT,
        &format!("child for {}", variant.id()),
    )?)
    .memory()
}

#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts far below 2^52, shown to one decimal or as a ratio"
)]
fn as_f64(bytes: i64) -> f64 {
    bytes as f64
}

/// One variant's results on one server.
struct Row {
    variant: Variant,
    times: Vec<Duration>,
    median: Duration,
    memory: Memory,
    /// Bytes read, for the raw byte variants.
    bytes: Option<u64>,
}

/// Seeds `kind` into a namespace of `env`, times every variant that applies and measures its
/// memory.
async fn bench_kind<K: Object>(
    server: Server,
    env: &TestEnv,
    kind: Kind,
    n: usize,
    (runs, memory_runs): (usize, usize),
    runner: &Path,
    results: &mut Results,
) -> Result<String, BoxError> {
    let namespace = env
        .create_namespace(&format!("bench-{}-{n}", kind.plural()))
        .await?;
    let api: Api<K> = Api::namespaced(env.client(), &namespace);
    let seeding = Instant::now();
    seed(&api, &namespace, n).await?;
    eprintln!(
        "[{server}] seeded {n} {} in {}",
        kind.label(),
        fmt_ns(seeding.elapsed())
    );
    let target = Target {
        api,
        kind,
        kubeconfig: env.kubeconfig_path(),
        namespace: &namespace,
        n,
        runner: Some(runner),
    };

    let chosen = Variant::chosen()?;
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| v.applies_to(server) && chosen.as_ref().is_none_or(|c| c.contains(v)))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    let mut bytes: Vec<Option<u64>> = vec![None; variants.len()];
    for round in 0..=runs {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let start = Instant::now();
            let synced = sync_within_bound(variants[v], &target).await?;
            let mut elapsed = start.elapsed();
            synced.check(variants[v], n)?;
            match &synced {
                // The runner's own time: from its informer's start, without the process's.
                Synced::Process { report, .. } => {
                    elapsed = Duration::from_nanos(report.field("time_ns")?);
                }
                Synced::Bytes(read) => bytes[v] = Some(*read),
                _ => {}
            }
            synced.close().await;
            // Round 0 warms the server's caches and the client's connections.
            if round > 0 {
                times[v].push(elapsed);
            }
        }
        eprintln!(
            "[{server}] {} timing round {round}/{runs} done",
            kind.label()
        );
    }

    let mut memories: Vec<Vec<Memory>> = vec![Vec::new(); variants.len()];
    for round in 0..memory_runs {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            memories[v].push(measure_memory(variants[v], env, &target).await?);
        }
        eprintln!(
            "[{server}] {} memory round {}/{memory_runs} done",
            kind.label(),
            round + 1
        );
    }

    let rows: Vec<Row> = variants
        .iter()
        .zip(times)
        .zip(memories)
        .zip(bytes)
        .map(|(((&variant, mut times), memories), bytes)| {
            let field =
                |f: fn(&Memory) -> i64| median(&mut memories.iter().map(f).collect::<Vec<_>>());
            let memory = Memory {
                peak: field(|m| m.peak),
                synced: field(|m| m.synced),
                heap: memories[0]
                    .heap
                    .map(|_| field(|m| m.heap.unwrap_or_default())),
            };
            Row {
                variant,
                median: percentile(&mut times, 50.0),
                times,
                memory,
                bytes,
            }
        })
        .collect();
    record(results, server, kind, n, &rows);
    let table = table(server, &rows)?;
    let title = format!(
        "e2e-sync, {server}, {}: start to ready for {n} {} from {} on loopback; time: median \
         of {runs} runs per variant, order rotating; memory: median of {memory_runs} fresh \
         processes per variant, RSS above the process's RSS just before the sync",
        kind.label(),
        kind.label(),
        describe(server, env),
    );
    results.table(&format!("{server}-{}-{n}", kind.plural()), &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

/// Records each row's figures in `results`.
fn record(results: &mut Results, server: Server, kind: Kind, n: usize, rows: &[Row]) {
    for row in rows {
        results.data(serde_json::json!({
            "server": server.to_string(),
            "kind": kind.plural(),
            "objects": n,
            "variant": row.variant.id(),
            "label": row.variant.label(),
            "median_secs": row.median.as_secs_f64(),
            "min_secs": row.times[0].as_secs_f64(),
            "max_secs": row.times[row.times.len() - 1].as_secs_f64(),
            "peak_rss_bytes": row.memory.peak,
            "synced_rss_bytes": row.memory.synced,
            "go_heap_bytes": row.memory.heap,
            "bytes_read": row.bytes,
        }));
    }
}

/// Starts `server` and benches each kind on it.
async fn bench_server(
    server: Server,
    kinds: &[Kind],
    sizes: &[usize],
    rounds: (usize, usize),
    runner: &Path,
    results: &mut Results,
) -> Result<(), BoxError> {
    eprintln!("[{server}] starting a local control plane...");
    let env = TestEnv::builder().server(server).start().await?;
    for &kind in kinds {
        for &n in sizes {
            let report = match kind {
                Kind::ConfigMaps => {
                    bench_kind::<ConfigMap>(server, &env, kind, n, rounds, runner, results).await?
                }
                Kind::Pods => {
                    bench_kind::<Pod>(server, &env, kind, n, rounds, runner, results).await?
                }
            };
            // Printed at once, so a failure later keeps this table.
            println!("\n{report}");
        }
    }
    Ok(())
}

/// The Markdown table of one server's rows, with ratios against the raw LIST, kube-runtime and
/// client-go.
fn table(server: Server, rows: &[Row]) -> Result<Table, BoxError> {
    let find = |variant: Variant| rows.iter().find(|r| r.variant == variant);
    let list = find(Variant::RawList).ok_or("no raw list row")?;
    let client_go = find(Variant::ClientGo(Encoding::Protobuf)).ok_or("no client-go row")?;
    let mut table = Table::new(&[
        "variant",
        "median time",
        "min .. max",
        "time / raw list",
        "time / raw bytes, same encoding",
        "time / client-go protobuf",
        "peak RSS during sync",
        "RSS once synced",
        "RSS once synced / client-go protobuf",
        "kache / kube-runtime, same strategy (time; peak)",
    ]);
    for row in rows {
        let versus = row
            .variant
            .kube_runtime_counterpart(server)
            .and_then(find)
            .map_or_else(
                || "-".to_owned(),
                |other| {
                    format!(
                        "{}; {}",
                        ratio(row.median.as_secs_f64(), other.median.as_secs_f64()),
                        ratio(as_f64(row.memory.peak), as_f64(other.memory.peak)),
                    )
                },
            );
        let mut label = row.variant.label();
        if let Some(bytes) = row.bytes {
            label = format!("{label}: {}", fmt_bytes(as_f64(signed(bytes))));
        }
        let mut synced = fmt_bytes(as_f64(row.memory.synced));
        if let Some(heap) = row.memory.heap {
            synced = format!("{synced} (Go heap {})", fmt_bytes(as_f64(heap)));
        }
        table.row(vec![
            label,
            fmt_ns(row.median),
            format!(
                "{} .. {}",
                fmt_ns(row.times[0]),
                fmt_ns(row.times[row.times.len() - 1])
            ),
            ratio(row.median.as_secs_f64(), list.median.as_secs_f64()),
            row.variant
                .kache_encoding()
                .and_then(|encoding| find(Variant::RawBytes(encoding)))
                .map_or_else(
                    || "-".to_owned(),
                    |raw| ratio(row.median.as_secs_f64(), raw.median.as_secs_f64()),
                ),
            ratio(row.median.as_secs_f64(), client_go.median.as_secs_f64()),
            fmt_bytes(as_f64(row.memory.peak)),
            synced,
            ratio(as_f64(row.memory.synced), as_f64(client_go.memory.synced)),
            versus,
        ]);
    }
    Ok(table)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        return child(&args[2..]).await;
    }
    let sizes = env_sizes("KACHE_BENCH_OBJECTS", &[10_000]);
    let runs = env_usize("KACHE_BENCH_RUNS", 7).max(1);
    let memory_runs = env_usize("KACHE_BENCH_MEMORY_RUNS", 3).max(1);
    let kinds = Kind::from_env()?;
    // Built (or found) once, before any server starts; the runs read it from the environment.
    let runner = client_go_binary()?;
    // A run of large sizes keeps its results apart from the usual run's.
    let name = std::env::var("KACHE_BENCH_NAME").unwrap_or_else(|_| "e2e-sync".to_owned());
    let mut results = Results::new(&name, "just bench-e2e");
    results.setting("objects", serde_json::json!(sizes));
    results.setting("runs", runs);
    results.setting("memory_runs", memory_runs);
    results.setting(
        "kinds",
        kinds.iter().map(|k| k.plural()).collect::<Vec<_>>(),
    );
    for server in bench_servers()? {
        bench_server(
            server,
            &kinds,
            &sizes,
            (runs, memory_runs),
            &runner,
            &mut results,
        )
        .await?;
        // Written after each server, so a failure on the next keeps these figures.
        results.write();
    }
    Ok(())
}
