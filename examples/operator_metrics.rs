//! An operator's observability: caches of `Pod`s and `ConfigMap`s with Prometheus metrics on
//! `/metrics` and their health on `/readyz`, over HTTP, while a reconciler follows the
//! `ConfigMap`s.
//!
//! `cargo run -p kache-examples --example operator_metrics [-- --serve] [--listen ADDR]
//! [--scrapes N]`. By default it makes a few changes, scrapes itself `N` times (3) a second
//! apart, prints `/readyz` and a summary of each scrape, then the last scrape in full, and
//! exits. With `--serve` it keeps serving until Ctrl-C: point Prometheus (or `curl`) at it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};
use kache_examples::{
    BoxError,
    exposition::Exposition,
    probes::{self, HealthCheck, ProbeServer, Probes},
    start,
};
use kache_store::{Metrics, ReflectExt, Store, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use prometheus_client::registry::Registry;

/// The command line.
struct Args {
    serve: bool,
    listen: SocketAddr,
    scrapes: u32,
}

impl Args {
    fn parse() -> Result<Self, BoxError> {
        let mut args = Self {
            serve: false,
            listen: "127.0.0.1:0".parse()?,
            scrapes: 3,
        };
        let mut words = std::env::args().skip(1);
        while let Some(word) = words.next() {
            match word.as_str() {
                "--serve" => args.serve = true,
                "--listen" => args.listen = words.next().ok_or("--listen ADDR")?.parse()?,
                "--scrapes" => args.scrapes = words.next().ok_or("--scrapes N")?.parse()?,
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        Ok(args)
    }
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: named(name),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("registry.example/app:1".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// A cache's health, for `/readyz`.
fn health_of<K: 'static + Send + Sync>(store: &Store<K>) -> HealthCheck {
    let store = store.clone();
    Box::new(move || store.health())
}

/// One line per cache from a scrape: a few of the metrics it exports.
fn summary(scrape: &Exposition) -> Vec<String> {
    ["pods", "configmaps"]
        .iter()
        .map(|cache| {
            let c = [("cache", *cache)];
            let get = |name| scrape.value(name, &c).unwrap_or(f64::NAN);
            let events: f64 = scrape
                .matching("kache_events_total", &c)
                .map(|s| s.value)
                .sum();
            let errors: f64 = scrape
                .matching("kache_errors_total", &c)
                .map(|s| s.value)
                .sum();
            format!(
                "  {cache:<10} objects {:>3}  events {events:>3}  watch starts {} resumes {}  errors {errors}  last event {:.2} s ago  synced in {:.3} s",
                get("kache_objects"),
                get("kache_watch_starts_total"),
                get("kache_watch_resumes_total"),
                get("kache_last_event_age_seconds"),
                get("kache_initial_sync_duration_seconds"),
            )
        })
        .collect()
}

/// Some work for the caches: 2 `Pod`s, 5 `ConfigMap`s, 2 of them deleted again.
async fn make_changes(
    pods_api: &Api<Pod>,
    configmaps_api: &Api<ConfigMap>,
    configmaps: &Store<ConfigMap>,
) -> Result<(), BoxError> {
    let post = PostParams::default();
    let mut written = Vec::new();
    for name in ["web-0", "web-1"] {
        pods_api.create(&post, &pod(name)).await?;
    }
    for i in 0..5 {
        let cm = ConfigMap {
            metadata: named(&format!("settings-{i}")),
            ..ConfigMap::default()
        };
        written.push(configmaps_api.create(&post, &cm).await?);
    }
    configmaps.wait_for_all(&written).await?;
    for i in 3..5 {
        configmaps_api
            .delete(&format!("settings-{i}"), &DeleteParams::default())
            .await?;
    }
    println!("created 2 Pods and 5 ConfigMaps, deleted 2 of them");

    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse()?;
    let (env, ns) = start("operator").await?;
    let pods_api: Api<Pod> = Api::namespaced(env.client(), &ns);
    let configmaps_api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);

    // One registry for the whole operator; each cache reports under its own name.
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let pods_writer = Writer::<Pod>::new().with_metrics(&metrics, "pods");
    let configmaps_writer = Writer::<ConfigMap>::new().with_metrics(&metrics, "configmaps");
    let (pods, configmaps) = (pods_writer.as_reader(), configmaps_writer.as_reader());

    // A reconciler follows the ConfigMaps; its lag and resyncs are reported by name.
    let handled = Arc::new(AtomicU64::new(0));
    let mut changes = configmaps_writer.subscribe().with_name("reconciler");
    let reconciler = tokio::spawn({
        let handled = handled.clone();
        async move {
            while changes.next().await.is_some() {
                handled.fetch_add(1, Relaxed);
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let server = ProbeServer::start(
        listener,
        Probes {
            registry,
            health: vec![health_of(&pods), health_of(&configmaps)],
        },
    )?;
    let addr = server.addr();
    println!("serving http://{addr}/metrics and http://{addr}/readyz");

    let watches = [
        tokio::spawn(
            watcher(pods_api.clone(), Config::default())
                .default_backoff()
                .reflect(pods_writer)
                .for_each(|_| async {}),
        ),
        tokio::spawn(
            watcher(configmaps_api.clone(), Config::default())
                .default_backoff()
                .reflect(configmaps_writer)
                .for_each(|_| async {}),
        ),
    ];
    // Fail fast: a watch the server refuses (RBAC, a missing CRD) is an error at start-up,
    // not a silent wait.
    let ready = async {
        pods.wait_synced_or_fail().await?;
        configmaps.wait_synced_or_fail().await
    };
    tokio::time::timeout(Duration::from_secs(60), ready).await??;
    println!(
        "caches ready: {}",
        probes::get(addr, "/readyz")
            .await?
            .body
            .trim_end()
            .replace('\n', "; ")
    );

    make_changes(&pods_api, &configmaps_api, &configmaps).await?;

    let mut last = String::new();
    for n in 1..=args.scrapes {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let readyz = probes::get(addr, "/readyz").await?;
        let scraped = probes::get(addr, "/metrics").await?;
        let scrape = Exposition::parse(&scraped.body)?;
        println!(
            "scrape {n}: /readyz {} ({}), /metrics {} samples, reconciler handled {} changes",
            readyz.status,
            readyz.body.lines().next().unwrap_or_default(),
            scrape.samples.len(),
            handled.load(Relaxed),
        );
        for line in summary(&scrape) {
            println!("{line}");
        }
        last = scraped.body;
    }
    if args.scrapes > 0 {
        println!("\nthe last scrape of /metrics:\n{last}");
    }

    if args.serve {
        println!("serving on http://{addr} until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    // Stop watching before the control plane goes away.
    for watch in watches {
        watch.abort();
    }
    reconciler.abort();
    drop(server);
    Ok(())
}
