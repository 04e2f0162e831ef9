//! End-to-end initial sync against real API servers (kache-testenv: etcd and either
//! kube-apiserver v1.20.2, which refuses streaming lists, or the modern server on the
//! Kubernetes 1.36 apiserver library, which serves them): kache (`watcher` + `reflect`) with
//! each initial list strategy, kube-runtime 5.x (`watcher` + `reflector`), and one raw
//! unpaginated `Api::list` of the same objects.
//!
//! Per server: seeds the objects once (32 creates in flight), runs one untimed round, then
//! `RUNS` rounds in which every variant runs once, the order rotating each round; time is from
//! creating the watcher to `wait_until_ready` (or to the returned list). Then, for memory, each
//! variant syncs once in a fresh child process (this binary re-executed with a hidden
//! argument), which reports its peak RSS during the sync and its RSS once synced, both above
//! its RSS just before. Prints one Markdown table per server.
//!
//! Run: `just bench-e2e` or `cargo run --release -p kache-benches --bin e2e-sync`.
//! Environment: `KACHE_BENCH_SERVERS` (`legacy,modern` by default), `KACHE_BENCH_OBJECTS`
//! (default 10000), `KACHE_BENCH_RUNS` (timed rounds, default 7), `KACHE_BENCH_MEMORY_RUNS`
//! (child processes per variant, default 3).

use std::future::ready;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    BoxError, ChildReport, Table, bench_servers, config_map, env_usize, fmt_bytes, fmt_ns,
    percentile, proc_status_bytes, ratio,
};
use kache_store::ReflectExt;
use kache_testenv::{Server, TestEnv};
use kache_watch::InitialListStrategy;
use kube_client::api::{ListParams, ObjectList, PostParams};
use kube_client::config::{KubeConfigOptions, Kubeconfig};
use kube_client::{Api, Client};
use tokio::task::JoinHandle;

/// The hidden first argument that makes this binary a memory-measuring child:
/// `e2e-sync --sync-child <kubeconfig> <namespace> <variant id> <objects>`.
const CHILD_ARG: &str = "--sync-child";

/// The line prefix a child prints its measurement after.
const CHILD_REPORT: &str = "e2e-sync-child:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    RawList,
    /// kache's default configuration: `Auto`, pages of 500 when it lists.
    KacheAuto,
    KacheStreamingList,
    KacheListWatch(Option<u32>),
    KubeRuntimeListWatch(Option<u32>),
    KubeRuntimeStreamingList,
}

impl Variant {
    /// Every variant, in table order.
    const ALL: [Self; 8] = [
        Self::RawList,
        Self::KacheAuto,
        Self::KacheStreamingList,
        Self::KubeRuntimeStreamingList,
        Self::KacheListWatch(Some(500)),
        Self::KubeRuntimeListWatch(Some(500)),
        Self::KacheListWatch(None),
        Self::KubeRuntimeListWatch(None),
    ];

    /// Whether the variant can sync from `server` (streaming lists need a server that serves
    /// them; `Auto` falls back by itself).
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
            Self::KacheAuto => "kache Auto (default; page 500 if it lists)".to_owned(),
            Self::KacheStreamingList => "kache StreamingList".to_owned(),
            Self::KacheListWatch(page) => format!("kache ListWatch, page {}", pages(page)),
            Self::KubeRuntimeListWatch(page) => {
                format!("kube-runtime ListWatch, page {}", pages(page))
            }
            Self::KubeRuntimeStreamingList => "kube-runtime StreamingList".to_owned(),
        }
    }

    /// The name a child process is given on its command line.
    fn id(self) -> String {
        let pages = |page: Option<u32>| page.map_or_else(|| "all".to_owned(), |p| p.to_string());
        match self {
            Self::RawList => "raw-list".to_owned(),
            Self::KacheAuto => "kache-auto".to_owned(),
            Self::KacheStreamingList => "kache-streaming".to_owned(),
            Self::KacheListWatch(page) => format!("kache-listwatch-{}", pages(page)),
            Self::KubeRuntimeListWatch(page) => format!("kube-runtime-listwatch-{}", pages(page)),
            Self::KubeRuntimeStreamingList => "kube-runtime-streaming".to_owned(),
        }
    }

    fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.id() == id)
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

/// What a variant has once synced: the store (with its watch still running) or the list.
enum Synced {
    List(ObjectList<ConfigMap>),
    Kache(kache_store::Store<ConfigMap>, JoinHandle<()>),
    KubeRuntime(kube_runtime::reflector::Store<ConfigMap>, JoinHandle<()>),
}

impl Synced {
    fn len(&self) -> usize {
        match self {
            Self::List(list) => list.items.len(),
            Self::Kache(store, _) => store.len(),
            Self::KubeRuntime(store, _) => store.len(),
        }
    }

    /// Stops the watch and waits until its task is gone. A child must not return from `main`
    /// with the task alive: the runtime's shutdown may drop the client's connection tasks
    /// first, and a watcher without backoff then retries its failing request in a loop that
    /// never yields, so the shutdown never ends.
    async fn close(mut self) {
        if let Self::Kache(_, driver) | Self::KubeRuntime(_, driver) = &mut self {
            driver.abort();
            // `Err(cancelled)` is the expected outcome.
            let _ = driver.await;
        }
    }
}

impl Drop for Synced {
    fn drop(&mut self) {
        if let Self::Kache(_, driver) | Self::KubeRuntime(_, driver) = self {
            driver.abort();
        }
    }
}

/// Syncs `variant` from nothing: returns once the store is ready (or the list has arrived).
async fn sync(variant: Variant, api: &Api<ConfigMap>) -> Result<Synced, BoxError> {
    let kache = |config: kache_watch::Config| {
        let (store, writer) = kache_store::store::<ConfigMap>();
        let driver = tokio::spawn(
            kache_watch::watcher(api.clone(), config)
                .reflect(writer)
                .for_each(|_| ready(())),
        );
        (store, driver)
    };
    let kube_runtime = |config: kube_runtime::watcher::Config| {
        let (store, writer) = kube_runtime::reflector::store::<ConfigMap>();
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
        Variant::KacheAuto | Variant::KacheStreamingList | Variant::KacheListWatch(_) => {
            let config = match variant {
                Variant::KacheStreamingList => kache_watch::Config::default().streaming_lists(),
                Variant::KacheListWatch(page) => kache_list_watch(page),
                _ => kache_watch::Config::default(),
            };
            let (store, driver) = kache(config);
            let synced = Synced::Kache(store.clone(), driver);
            store.wait_until_ready().await?;
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
            store.wait_until_ready().await?;
            synced
        }
    };
    Ok(synced)
}

/// How long one sync may take before the bench fails naming it, rather than hang.
const SYNC_BOUND: Duration = Duration::from_secs(120);

async fn sync_within_bound(variant: Variant, api: &Api<ConfigMap>) -> Result<Synced, BoxError> {
    tokio::time::timeout(SYNC_BOUND, sync(variant, api))
        .await
        .map_err(|_| format!("{} did not sync within {SYNC_BOUND:?}", variant.label()))?
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

async fn seed(api: &Api<ConfigMap>, namespace: &str, n: usize) -> Result<(), BoxError> {
    stream::iter(0..n)
        .map(|i| {
            let mut cm = config_map(i, 0);
            cm.metadata.namespace = Some(namespace.to_owned());
            cm.metadata.resource_version = None;
            cm.metadata.uid = None;
            cm.metadata.creation_timestamp = None;
            async move { api.create(&PostParams::default(), &cm).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Memory of one sync, in bytes above the process's RSS just before it.
#[derive(Clone, Copy, Debug)]
struct Memory {
    /// `VmHWM` after the sync minus `VmHWM` before.
    peak: i64,
    /// `VmRSS` once synced (store held, watch running) minus `VmRSS` before.
    synced: i64,
}

fn signed(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The child: syncs `variant` once from the control plane of `kubeconfig` and prints its
/// [`Memory`] on stdout.
async fn child(args: &[String]) -> Result<(), BoxError> {
    let [kubeconfig, namespace, variant, n] = args else {
        return Err(format!("usage: e2e-sync {CHILD_ARG} KUBECONFIG NAMESPACE VARIANT N").into());
    };
    let variant = Variant::from_id(variant).ok_or_else(|| format!("unknown variant {variant}"))?;
    let n: usize = n.parse()?;
    let config = kube_client::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(Path::new(kubeconfig))?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let api: Api<ConfigMap> = Api::namespaced(Client::try_from(config)?, namespace);
    // One small request first, so the connection (TLS session, buffers, resolver threads) is
    // open before the measurement: every variant would pay it alike.
    api.list(&ListParams::default().limit(1)).await?;
    // Resets VmHWM to the current RSS (Linux 4.0+), so that an earlier transient peak above
    // today's RSS cannot hide part of the sync's; where refused, the difference below still
    // holds but may understate.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let hwm_before = proc_status_bytes("VmHWM")?;
    let rss_before = proc_status_bytes("VmRSS")?;
    let synced = sync_within_bound(variant, &api).await?;
    let memory = Memory {
        peak: signed(proc_status_bytes("VmHWM")?) - signed(hwm_before),
        synced: signed(proc_status_bytes("VmRSS")?) - signed(rss_before),
    };
    if synced.len() != n {
        return Err(format!("{} synced {} objects, not {n}", variant.id(), synced.len()).into());
    }
    println!(
        "{CHILD_REPORT} peak={} synced={}",
        memory.peak, memory.synced
    );
    synced.close().await;
    Ok(())
}

/// Runs a child process for `variant` and reads its [`Memory`].
async fn measure_memory(
    variant: Variant,
    env: &TestEnv,
    namespace: &str,
    n: usize,
) -> Result<Memory, BoxError> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(CHILD_ARG).arg(env.kubeconfig_path()).args([
        namespace,
        &variant.id(),
        &n.to_string(),
    ]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let report = ChildReport::from_output(
        &output,
        CHILD_REPORT,
        &format!("child for {}", variant.id()),
    )?;
    Ok(Memory {
        peak: report.field("peak")?,
        synced: report.field("synced")?,
    })
}

/// The median of `values`, sorted in place.
fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    values[values.len() / 2]
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
}

/// Starts `server`, seeds it, times every variant that applies and measures its memory.
async fn bench_server(
    server: Server,
    n: usize,
    runs: usize,
    memory_runs: usize,
) -> Result<String, BoxError> {
    eprintln!("[{server}] starting a local control plane...");
    let env = TestEnv::builder().server(server).start().await?;
    let namespace = env.create_namespace("bench-sync").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    let seeding = Instant::now();
    seed(&api, &namespace, n).await?;
    eprintln!(
        "[{server}] seeded {n} ConfigMaps in {}",
        fmt_ns(seeding.elapsed())
    );

    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| v.applies_to(server))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..=runs {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let start = Instant::now();
            let synced = sync_within_bound(variants[v], &api).await?;
            let elapsed = start.elapsed();
            assert_eq!(synced.len(), n, "{}", variants[v].label());
            synced.close().await;
            // Round 0 warms the server's caches and the client's connections.
            if round > 0 {
                times[v].push(elapsed);
            }
        }
        eprintln!("[{server}] timing round {round}/{runs} done");
    }

    let mut memories: Vec<(Vec<i64>, Vec<i64>)> = vec![(Vec::new(), Vec::new()); variants.len()];
    for round in 0..memory_runs {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let memory = measure_memory(variants[v], &env, &namespace, n).await?;
            memories[v].0.push(memory.peak);
            memories[v].1.push(memory.synced);
        }
        eprintln!("[{server}] memory round {}/{memory_runs} done", round + 1);
    }

    let rows: Vec<Row> = variants
        .iter()
        .zip(times)
        .zip(memories)
        .map(|((&variant, mut times), (mut peaks, mut synced))| Row {
            variant,
            median: percentile(&mut times, 50.0),
            times,
            memory: Memory {
                peak: median(&mut peaks),
                synced: median(&mut synced),
            },
        })
        .collect();
    let table = table(server, &rows)?;
    let report = format!(
        "e2e-sync, {server}: start to ready for {n} ConfigMaps from {} on loopback; time: \
         median of {runs} runs per variant, order rotating; memory: median of {memory_runs} \
         fresh processes per variant, RSS above the process's RSS just before the sync\n\n{}",
        describe(server, &env),
        table.render()
    );
    drop(env);
    Ok(report)
}

/// The Markdown table of one server's rows, with ratios against the raw LIST and kube-runtime.
fn table(server: Server, rows: &[Row]) -> Result<Table, BoxError> {
    let find = |variant: Variant| rows.iter().find(|r| r.variant == variant);
    let list = find(Variant::RawList).ok_or("no raw list row")?;
    let mut table = Table::new(&[
        "variant",
        "median time",
        "min .. max",
        "time / raw list",
        "peak RSS during sync",
        "peak / raw list",
        "RSS once synced",
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
        table.row(vec![
            row.variant.label(),
            fmt_ns(row.median),
            format!(
                "{} .. {}",
                fmt_ns(row.times[0]),
                fmt_ns(row.times[row.times.len() - 1])
            ),
            ratio(row.median.as_secs_f64(), list.median.as_secs_f64()),
            fmt_bytes(as_f64(row.memory.peak)),
            ratio(as_f64(row.memory.peak), as_f64(list.memory.peak)),
            fmt_bytes(as_f64(row.memory.synced)),
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
    let n = env_usize("KACHE_BENCH_OBJECTS", 10_000);
    let runs = env_usize("KACHE_BENCH_RUNS", 7).max(1);
    let memory_runs = env_usize("KACHE_BENCH_MEMORY_RUNS", 3).max(1);
    for server in bench_servers()? {
        let report = bench_server(server, n, runs, memory_runs).await?;
        // Printed at once, so a failure on a later server keeps this one's table.
        println!("\n{report}");
    }
    Ok(())
}
