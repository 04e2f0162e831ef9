//! End-to-end initial sync against a real API server (kache-testenv: etcd and an API server on
//! loopback, `KACHE_TEST_SERVER` choosing which): the time from creating the watcher to
//! `wait_until_ready`, kache (`watcher` + `reflect`) vs kube-runtime 5.x (`watcher` +
//! `reflector`) vs one raw unpaginated `Api::list` of the same objects, with page sizes 500 and
//! unlimited.
//!
//! Seeds the objects once (32 creates in flight), runs one untimed round, then `RUNS` rounds in
//! which every variant runs once, the order rotating each round. Prints a Markdown table.
//!
//! Run: `just bench-e2e` or `cargo run --release -p kache-benches --bin e2e-sync`.
//! Environment: `KACHE_BENCH_OBJECTS` (default 10000), `KACHE_BENCH_RUNS` (default 7).

use std::error::Error;
use std::future::ready;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{Table, config_map, fmt_ns, percentile, ratio};
use kache_store::ReflectExt;
use kache_testenv::TestEnv;
use kube_client::Api;
use kube_client::api::{ListParams, PostParams};

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    List,
    Kache(Option<u32>),
    KacheListWatch(Option<u32>),
    KubeRuntime(Option<u32>),
}

impl Variant {
    fn label(self) -> String {
        let pages =
            |page: Option<u32>| page.map_or_else(|| "unlimited".to_owned(), |p| p.to_string());
        match self {
            Self::List => "raw Api::list, unpaginated".to_owned(),
            Self::Kache(page) => format!("kache, page {} (default strategy: Auto)", pages(page)),
            Self::KacheListWatch(page) => format!("kache, page {} (ListWatch)", pages(page)),
            Self::KubeRuntime(page) => format!("kube-runtime, page {}", pages(page)),
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// The time from nothing to a ready store holding `n` objects (or a returned list).
async fn run(variant: Variant, api: &Api<ConfigMap>, n: usize) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let len = match variant {
        Variant::List => api.list(&ListParams::default()).await?.items.len(),
        Variant::Kache(page) | Variant::KacheListWatch(page) => {
            let mut config = kache_watch::Config::default();
            config.page_size = page;
            if matches!(variant, Variant::KacheListWatch(_)) {
                config = config.initial_list_strategy(kache_watch::InitialListStrategy::ListWatch);
            }
            let (store, writer) = kache_store::store::<ConfigMap>();
            let driver = tokio::spawn(
                kache_watch::watcher(api.clone(), config)
                    .reflect(writer)
                    .for_each(|_| ready(())),
            );
            store.wait_until_ready().await?;
            let elapsed = start.elapsed();
            driver.abort();
            assert_eq!(store.len(), n);
            return Ok(elapsed);
        }
        Variant::KubeRuntime(page) => {
            let config = kube_runtime::watcher::Config {
                page_size: page,
                ..Default::default()
            };
            let (store, writer) = kube_runtime::reflector::store::<ConfigMap>();
            let driver = tokio::spawn(
                kube_runtime::reflector(writer, kube_runtime::watcher(api.clone(), config))
                    .for_each(|_| ready(())),
            );
            store.wait_until_ready().await?;
            let elapsed = start.elapsed();
            driver.abort();
            assert_eq!(store.len(), n);
            return Ok(elapsed);
        }
    };
    let elapsed = start.elapsed();
    assert_eq!(len, n);
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let n = env_usize("KACHE_BENCH_OBJECTS", 10_000);
    let runs = env_usize("KACHE_BENCH_RUNS", 7);

    eprintln!("starting a local control plane...");
    let env = TestEnv::start().await?;
    // The server says which version it is, so no figure here can go stale.
    let server = env.client().apiserver_version().await?.git_version;
    let namespace = env.create_namespace("bench-sync").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    let seeding = Instant::now();
    seed(&api, &namespace, n).await?;
    eprintln!("seeded {n} ConfigMaps in {}", fmt_ns(seeding.elapsed()));

    let variants = [
        Variant::List,
        Variant::Kache(Some(500)),
        Variant::KubeRuntime(Some(500)),
        Variant::Kache(None),
        Variant::KubeRuntime(None),
        Variant::KacheListWatch(Some(500)),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..=runs {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let elapsed = run(variants[v], &api, n).await?;
            // Round 0 warms the server's caches and the client's connections.
            if round > 0 {
                times[v].push(elapsed);
            }
        }
        eprintln!("round {round}/{runs} done");
    }

    let medians: Vec<Duration> = times.iter_mut().map(|t| percentile(t, 50.0)).collect();
    let median_of = |variant: Variant| {
        variants
            .iter()
            .position(|v| *v == variant)
            .map(|i| medians[i].as_secs_f64())
            .unwrap_or_default()
    };
    let list = median_of(Variant::List);
    let mut table = Table::new(&[
        "variant",
        "median",
        "min .. max",
        "/ raw list",
        "kache / kube-runtime (same page size)",
    ]);
    for (i, variant) in variants.iter().enumerate() {
        let (min, max) = (times[i][0], times[i][times[i].len() - 1]);
        let versus = match variant {
            Variant::Kache(page) | Variant::KacheListWatch(page) => ratio(
                medians[i].as_secs_f64(),
                median_of(Variant::KubeRuntime(*page)),
            ),
            _ => "-".to_owned(),
        };
        table.row(vec![
            variant.label(),
            fmt_ns(medians[i]),
            format!("{} .. {}", fmt_ns(min), fmt_ns(max)),
            ratio(medians[i].as_secs_f64(), list),
            versus,
        ]);
    }
    println!(
        "\ne2e-sync: start to ready for {n} ConfigMaps from an API server {server} on loopback; \
         median of {runs} runs per variant, order rotating\n"
    );
    println!("{}", table.render());
    drop(env);
    Ok(())
}
