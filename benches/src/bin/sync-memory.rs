//! Client memory of an initial sync from real API servers (kache-testenv): the live heap a
//! synced store holds, the live heap's peak during the sync, and the process's resident
//! memory; kache (with its default of dropping `managedFields`, and keeping them) beside
//! kube-runtime 5.x (as is, and with `managedFields` stripped by `.modify`).
//!
//! Per server: seeds the objects once (32 creates in flight; the server records a
//! `managedFields` entry for each create), then runs each variant in a fresh child process
//! (this binary re-executed with a hidden argument), so that no variant inherits another's
//! heap or peak. Two kinds of child:
//! - `heap`: dhat's heap profiler (in testing mode: counts only, no file) starts just before
//!   the sync, after the client's connection is open; the child reports the live heap once
//!   synced (store held, watch running) and the largest live heap during the sync, both
//!   counting only what was allocated since the start. Exact, whatever the allocator keeps.
//! - `rss`: no profiler; the child reports its whole resident memory once synced (`VmRSS`),
//!   the figure a user sees in `top`, and its peak (`VmHWM`).
//!
//! Prints one Markdown table per server. Run:
//! `cargo run --release -p kache-benches --bin sync-memory`. Environment:
//! `KACHE_BENCH_SERVERS` (`legacy,modern` by default), `KACHE_BENCH_OBJECTS` (default 10000),
//! `KACHE_BENCH_MEMORY_RUNS` (child processes per variant and kind, default 3; the median is
//! shown).

use std::future::ready;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    BoxError, ChildReport, Results, Table, bench_servers, connected_api, env_usize, fmt_bytes,
    median, proc_status_bytes, ratio, seeded_server,
};
use kache_store::ReflectExt;
use kache_testenv::{Server, TestEnv};
use kache_watch::InitialListStrategy;
use kube_client::Api;
use tokio::task::JoinHandle;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The hidden first argument that makes this binary a measuring child:
/// `sync-memory --child <kubeconfig> <namespace> <variant id> <kind> <objects>`.
const CHILD_ARG: &str = "--child";

/// The line prefix a child prints its measurement after.
const CHILD_REPORT: &str = "sync-memory-child:";

/// How long one sync may take (dhat slows every allocation) before the child fails.
const SYNC_BOUND: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// kache's defaults: `Auto` (a streaming list where served, else pages of 500), managed
    /// fields dropped.
    KacheDefault,
    /// The same, keeping managed fields (`Config::keep_managed_fields`).
    KacheKeepManaged,
    /// Keeping them in the watcher, stripped by the writer's transform after decoding: what
    /// a default transform would cost.
    KacheTransform,
    /// kache, pages of 500 (`ListWatch`), managed fields dropped.
    KachePaged,
    /// kube-runtime's defaults (pages of 500), objects as the server sends them.
    KubeRuntime,
    /// kube-runtime, pages of 500, `managedFields` stripped by `.modify` before the store.
    KubeRuntimeStripped,
    /// kube-runtime with streaming lists, objects as sent.
    KubeRuntimeStreaming,
}

impl Variant {
    const ALL: [Self; 7] = [
        Self::KacheDefault,
        Self::KacheKeepManaged,
        Self::KacheTransform,
        Self::KachePaged,
        Self::KubeRuntime,
        Self::KubeRuntimeStripped,
        Self::KubeRuntimeStreaming,
    ];

    fn applies_to(self, server: Server) -> bool {
        match self {
            // On a server without streaming lists the default already pages.
            Self::KachePaged | Self::KubeRuntimeStreaming => server.serves_streaming_lists(),
            _ => true,
        }
    }

    fn label(self, server: Server) -> &'static str {
        let streams = server.serves_streaming_lists();
        match self {
            Self::KacheDefault if streams => {
                "kache default (streaming list, managedFields dropped)"
            }
            Self::KacheDefault => "kache default (pages of 500, managedFields dropped)",
            Self::KacheKeepManaged if streams => "kache keep_managed_fields (streaming list)",
            Self::KacheKeepManaged => "kache keep_managed_fields (pages of 500)",
            Self::KacheTransform if streams => {
                "kache keep_managed_fields, stripped by a transform (streaming list)"
            }
            Self::KacheTransform => {
                "kache keep_managed_fields, stripped by a transform (pages of 500)"
            }
            Self::KachePaged => "kache ListWatch (pages of 500, managedFields dropped)",
            Self::KubeRuntime => "kube-runtime default (pages of 500, managedFields kept)",
            Self::KubeRuntimeStripped => "kube-runtime pages of 500, .modify strips managedFields",
            Self::KubeRuntimeStreaming => "kube-runtime streaming list, managedFields kept",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::KacheDefault => "kache-default",
            Self::KacheKeepManaged => "kache-keep",
            Self::KacheTransform => "kache-transform",
            Self::KachePaged => "kache-paged",
            Self::KubeRuntime => "kube-runtime",
            Self::KubeRuntimeStripped => "kube-runtime-stripped",
            Self::KubeRuntimeStreaming => "kube-runtime-streaming",
        }
    }

    fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.id() == id)
    }
}

/// A synced store with its watch still running.
enum Synced {
    Kache(kache_store::Store<ConfigMap>, JoinHandle<()>),
    KubeRuntime(kube_runtime::reflector::Store<ConfigMap>, JoinHandle<()>),
}

impl Synced {
    fn len(&self) -> usize {
        match self {
            Self::Kache(store, _) => store.len(),
            Self::KubeRuntime(store, _) => store.len(),
        }
    }

    /// Stops the watch and waits until its task is gone (see e2e-sync: a child must not
    /// return from `main` with the task alive).
    async fn close(self) {
        let (Self::Kache(_, driver) | Self::KubeRuntime(_, driver)) = self;
        driver.abort();
        // `Err(cancelled)` is the expected outcome.
        let _ = driver.await;
    }
}

async fn sync(variant: Variant, api: &Api<ConfigMap>) -> Result<Synced, BoxError> {
    let synced = match variant {
        Variant::KacheDefault
        | Variant::KacheKeepManaged
        | Variant::KacheTransform
        | Variant::KachePaged => {
            let config = match variant {
                Variant::KacheKeepManaged | Variant::KacheTransform => {
                    kache_watch::Config::default().keep_managed_fields()
                }
                Variant::KachePaged => kache_watch::Config::default()
                    .initial_list_strategy(InitialListStrategy::ListWatch),
                _ => kache_watch::Config::default(),
            };
            let mut writer = kache_store::Writer::<ConfigMap>::new();
            if variant == Variant::KacheTransform {
                writer = writer.with_transform(|cm| cm.metadata.managed_fields = None);
            }
            let store = writer.as_reader();
            let driver = tokio::spawn(
                kache_watch::watcher(api.clone(), config)
                    .reflect(writer)
                    .for_each(|_| ready(())),
            );
            store.wait_synced().await?;
            Synced::Kache(store, driver)
        }
        Variant::KubeRuntime | Variant::KubeRuntimeStripped | Variant::KubeRuntimeStreaming => {
            let config = if variant == Variant::KubeRuntimeStreaming {
                kube_runtime::watcher::Config::default().streaming_lists()
            } else {
                kube_runtime::watcher::Config::default()
            };
            let strip = variant == Variant::KubeRuntimeStripped;
            let (store, writer) = kube_runtime::reflector::store::<ConfigMap>();
            let events = kube_runtime::WatchStreamExt::modify(
                kube_runtime::watcher(api.clone(), config),
                move |cm| {
                    if strip {
                        cm.metadata.managed_fields = None;
                    }
                },
            );
            let driver =
                tokio::spawn(kube_runtime::reflector(writer, events).for_each(|_| ready(())));
            // kube-runtime's own name for the wait.
            store.wait_until_ready().await?;
            Synced::KubeRuntime(store, driver)
        }
    };
    Ok(synced)
}

/// What a child measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Heap,
    Rss,
}

impl Kind {
    fn id(self) -> &'static str {
        match self {
            Self::Heap => "heap",
            Self::Rss => "rss",
        }
    }
}

fn heap_now() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

/// The child: syncs `variant` once and prints what `kind` measures, in bytes.
async fn child(args: &[String]) -> Result<(), BoxError> {
    let [kubeconfig, namespace, variant, kind, n] = args else {
        return Err(format!("usage: sync-memory {CHILD_ARG} KUBECONFIG NS VARIANT KIND N").into());
    };
    let variant = Variant::from_id(variant).ok_or_else(|| format!("unknown variant {variant}"))?;
    let n: usize = n.parse()?;
    let api = connected_api(Path::new(kubeconfig), namespace).await?;
    // Counts only what is allocated from here on: the sync's own heap.
    let profiler = (kind == Kind::Heap.id()).then(|| dhat::Profiler::builder().testing().build());
    let before = profiler.as_ref().map(|_| heap_now());
    let synced = tokio::time::timeout(SYNC_BOUND, sync(variant, &api)).await??;
    let report = if let Some(before) = before {
        let stats = dhat::HeapStats::get();
        let held = stats.curr_bytes as u64 - before;
        let peak = stats.max_bytes as u64 - before;
        format!("held={held} peak={peak}")
    } else {
        // Lets the runtime settle (the last page's buffers are freed as tasks finish).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = proc_status_bytes("VmRSS")?;
        let hwm = proc_status_bytes("VmHWM")?;
        format!("held={rss} peak={hwm}")
    };
    if synced.len() != n {
        return Err(format!("{} synced {} objects, not {n}", variant.id(), synced.len()).into());
    }
    synced.close().await;
    drop(profiler);
    println!("{CHILD_REPORT} {report}");
    Ok(())
}

/// One measurement: held once synced and peak, in bytes.
#[derive(Clone, Copy, Debug)]
struct Memory {
    held: u64,
    peak: u64,
}

async fn measure(
    variant: Variant,
    kind: Kind,
    env: &TestEnv,
    namespace: &str,
    n: usize,
) -> Result<Memory, BoxError> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(CHILD_ARG).arg(env.kubeconfig_path()).args([
        namespace,
        variant.id(),
        kind.id(),
        &n.to_string(),
    ]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let report = ChildReport::from_output(
        &output,
        CHILD_REPORT,
        &format!("{} child for {}", kind.id(), variant.id()),
    )?;
    Ok(Memory {
        held: report.field("held")?,
        peak: report.field("peak")?,
    })
}

#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts far below 2^52, shown to one decimal or as a ratio"
)]
fn as_f64(bytes: u64) -> f64 {
    bytes as f64
}

async fn bench_server(
    server: Server,
    n: usize,
    runs: usize,
    results: &mut Results,
) -> Result<String, BoxError> {
    let (env, namespace, _) = seeded_server(server, "bench-memory", n).await?;
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| v.applies_to(server))
        .collect();
    let mut rows = Vec::new();
    for &variant in &variants {
        let mut heap = (Vec::new(), Vec::new());
        let mut rss = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let m = measure(variant, Kind::Heap, &env, &namespace, n).await?;
            heap.0.push(m.held);
            heap.1.push(m.peak);
            let m = measure(variant, Kind::Rss, &env, &namespace, n).await?;
            rss.0.push(m.held);
            rss.1.push(m.peak);
        }
        eprintln!("[{server}] {} done", variant.id());
        rows.push((
            variant,
            Memory {
                held: median(&mut heap.0),
                peak: median(&mut heap.1),
            },
            Memory {
                held: median(&mut rss.0),
                peak: median(&mut rss.1),
            },
        ));
    }
    let kube_runtime = rows
        .iter()
        .find(|(v, ..)| *v == Variant::KubeRuntime)
        .map(|(_, heap, _)| *heap)
        .ok_or("no kube-runtime row")?;
    let mut table = Table::new(&[
        "variant",
        "live heap once synced",
        "per object",
        "peak live heap during sync",
        "peak / held",
        "held / kube-runtime default",
        "process RSS once synced",
        "process peak RSS",
    ]);
    for (variant, heap, rss) in &rows {
        results.data(serde_json::json!({
            "server": server.to_string(),
            "objects": n,
            "variant": variant.id(),
            "heap_held_bytes": heap.held,
            "heap_peak_bytes": heap.peak,
            "rss_held_bytes": rss.held,
            "rss_peak_bytes": rss.peak,
        }));
        table.row(vec![
            variant.label(server).to_owned(),
            fmt_bytes(as_f64(heap.held)),
            format!("{:.0} B", as_f64(heap.held) / as_f64(n as u64)),
            fmt_bytes(as_f64(heap.peak)),
            format!("{:.2}x", as_f64(heap.peak) / as_f64(heap.held)),
            ratio(as_f64(heap.held), as_f64(kube_runtime.held)),
            fmt_bytes(as_f64(rss.held)),
            fmt_bytes(as_f64(rss.peak)),
        ]);
    }
    let name = match server {
        Server::Legacy => "kube-apiserver v1.20.2 (paged lists)",
        Server::Modern => "the Kubernetes 1.36 apiserver library (streaming lists)",
        _ => "an API server",
    };
    drop(env);
    let title = format!(
        "sync-memory, {server}: {n} ConfigMaps from {name}; median of {runs} fresh processes \
         per cell; heap: dhat, bytes allocated since just before the sync and still live \
         (held) or at most live at once (peak)"
    );
    results.table(&server.to_string(), &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        return child(&args[2..]).await;
    }
    let n = env_usize("KACHE_BENCH_OBJECTS", 10_000);
    let runs = env_usize("KACHE_BENCH_MEMORY_RUNS", 3).max(1);
    let mut results = Results::new(
        "sync-memory",
        "cargo run --release -p kache-benches --bin sync-memory",
    );
    results.setting("objects", n);
    results.setting("processes_per_cell", runs);
    for server in bench_servers()? {
        let report = bench_server(server, n, runs, &mut results).await?;
        println!("\n{report}");
    }
    results.write();
    Ok(())
}
