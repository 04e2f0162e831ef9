//! kache's live demo: one watch, one store, three subscribers, real changes and a forced relist
//! against a local control plane, with a compact live view. It ends by itself with a summary.
//!
//! `just demo`, or `cargo run --release -p kache-examples --example demo`. With
//! `KACHE_USE_EXISTING_CLUSTER=1` it uses the cluster in `KUBECONFIG` (in a namespace of its own,
//! deleted at the end) and skips the forced relist, which needs the local control plane.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kache_examples::{BoxError, exposition::Exposition, init_tracing, wait_for};
use kache_store::{Metrics, ReflectExt, Store, Subscriber, Writer};
use kache_testenv::{Proxy, TestEnv, configmap, create_all, delete_all, run_all};
use kache_watch::{Backoff, Config, Event, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use prometheus_client::registry::Registry;
use serde_json::json;

const TEAMS: [&str; 3] = ["red", "green", "blue"];

/// Counters a subscriber's task keeps for the live view.
#[derive(Default)]
struct Stats {
    events: AtomicU64,
    lag: AtomicU64,
    resyncs: AtomicU64,
    /// What the subscriber has reconstructed: `name` → resourceVersion.
    view: Mutex<BTreeMap<String, String>>,
}

/// Consumes a subscriber, rebuilding the state it describes; `work` runs per event, and `pace`
/// (if any) is how long each event takes to handle.
fn follow(
    mut sub: Subscriber<ConfigMap>,
    stats: Arc<Stats>,
    pace: Option<Duration>,
    mut work: impl FnMut(&Event<Arc<ConfigMap>>) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut building = BTreeMap::new();
        while let Some(event) = sub.next().await {
            if let Some(pace) = pace {
                tokio::time::sleep(pace).await;
            }
            work(&event);
            let mut view = stats.view.lock().unwrap();
            match &event {
                Event::Init => building.clear(),
                Event::InitApply(cm) => {
                    building.insert(cm.name_any(), cm.resource_version().unwrap_or_default());
                }
                Event::InitDone => *view = std::mem::take(&mut building),
                Event::Apply(cm) => {
                    view.insert(cm.name_any(), cm.resource_version().unwrap_or_default());
                }
                Event::Delete(cm) => {
                    view.remove(&cm.name_any());
                }
            }
            drop(view);
            stats.events.fetch_add(1, Relaxed);
            stats.lag.store(sub.lag(), Relaxed);
            stats.resyncs.store(sub.resyncs(), Relaxed);
        }
    });
}

fn team_of(cm: &ConfigMap) -> Vec<String> {
    cm.labels().get("team").cloned().into_iter().collect()
}

/// `ConfigMap`s named `names`, each in a team (in turn) and with 256 bytes of data.
fn configmaps(names: impl Iterator<Item = String>) -> impl Iterator<Item = ConfigMap> {
    names
        .enumerate()
        .map(|(i, name)| configmap(&name, &[("team", TEAMS[i % 3])], 256))
}

fn named(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(move |i| format!("{prefix}-{i}"))
}

/// Patches the named objects, 32 at a time ([`run_all`]).
async fn update(api: &Api<ConfigMap>, names: impl Iterator<Item = String>) -> Result<(), BoxError> {
    let (params, patch) = (
        PatchParams::default(),
        Patch::Merge(json!({"data": {"round": "2"}})),
    );
    run_all(names.map(|name| {
        let (params, patch) = (&params, &patch);
        async move { api.patch(&name, params, patch).await }
    }))
    .await?;
    Ok(())
}

/// A few of the cache's metrics, from a scrape (the text of `registry`).
fn print_metrics(text: &str) -> Result<(), BoxError> {
    let scrape = Exposition::parse(text)?;
    let nonzero = |name: &str, label: &str| {
        let parts: Vec<String> = scrape
            .matching(name, &[])
            .filter(|s| s.value > 0.0)
            .map(|s| format!("{} {}", s.labels[label], s.value))
            .collect();
        parts.join(", ")
    };
    println!(
        "  metrics (a scrape of the registry, {} samples):",
        scrape.samples.len()
    );
    println!(
        "    kache_events_total         {}",
        nonzero("kache_events_total", "type")
    );
    println!(
        "    kache_relists_total        {}",
        nonzero("kache_relists_total", "cause")
    );
    println!(
        "    kache_errors_total         {}",
        nonzero("kache_errors_total", "class")
    );
    println!(
        "    kache_watch_starts_total   {}",
        nonzero("kache_watch_starts_total", "cache")
    );
    println!(
        "    kache_watch_resumes_total  {}",
        nonzero("kache_watch_resumes_total", "cache")
    );
    println!(
        "    kache_subscriber_resyncs_total {}",
        nonzero("kache_subscriber_resyncs_total", "subscriber")
    );
    let c = [("cache", "configmaps")];
    let seconds = |name| scrape.value(name, &c).unwrap_or(f64::NAN);
    println!(
        "    first sync {:.3} s, writer waited {:.3} s on backpressure",
        seconds("kache_initial_sync_duration_seconds"),
        seconds("kache_backpressure_wait_seconds_total"),
    );
    Ok(())
}

#[tokio::main]
#[allow(clippy::too_many_lines)] // a demo reads best as one story, top to bottom
async fn main() -> Result<(), BoxError> {
    init_tracing();
    let started = Instant::now();
    eprintln!(
        "starting a local control plane (the first run builds kube-apiserver: a few minutes)..."
    );
    // The watch cache off, so that compacting etcd makes old resourceVersions expire (410).
    let env = TestEnv::builder().watch_cache(false).start().await?;
    let existing = env.is_existing_cluster();
    let ns = env.create_namespace("kache-demo").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    println!(
        "control plane ready at {} in {:.1}s; namespace {ns}",
        env.server_url(),
        started.elapsed().as_secs_f64()
    );

    // 1. A few hundred objects, before anything watches.
    create_all(&api, configmaps(named("cm", 0..300))).await?;
    println!("created 300 ConfigMaps");

    // 2. One watcher, through a proxy that can cut it off, feeding one store with an index.
    let proxy = Proxy::start(env.server_url()).await?;
    let watched: Api<ConfigMap> = Api::namespaced(
        if existing {
            env.client()
        } else {
            proxy.client(env.config())?
        },
        &ns,
    );
    // Its metrics go to a Prometheus registry (an operator serves it on /metrics: see the
    // operator_metrics example), under the name "configmaps".
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let writer = Writer::new()
        .with_index("team", team_of)
        .with_buffer(64)
        .with_metrics(&metrics, "configmaps");
    let store: Store<ConfigMap> = writer.as_reader();

    // 3. Three subscribers: one audits every change, one answers "how big is this object's
    //    team?" from the index on each change, and one is slow (10 ms per event).
    let names = ["audit", "team-lookup", "slow"];
    let stats: Vec<Arc<Stats>> = names.iter().map(|_| Arc::default()).collect();
    follow(
        writer.subscribe().with_name(names[0]),
        stats[0].clone(),
        None,
        |_| {},
    );
    let lookup_store = store.clone();
    let team_lookup = writer.subscribe().with_name(names[1]);
    follow(team_lookup, stats[1].clone(), None, move |event| {
        if let Event::Apply(cm) = event {
            let team = team_of(cm).pop().unwrap_or_default();
            let _size = lookup_store
                .by_index("team", &team)
                .map(|objects| objects.len());
        }
    });
    follow(
        writer.subscribe().with_name(names[2]),
        stats[2].clone(),
        Some(Duration::from_millis(10)),
        |_| {},
    );

    let (events, relists) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let backoff = Backoff::default()
        .initial(Duration::from_millis(200))
        .max(Duration::from_secs(2));
    let reflector = tokio::spawn({
        let (events, relists) = (events.clone(), relists.clone());
        watcher(watched, Config::default())
            .backoff(backoff)
            .reflect(writer)
            .for_each(move |item| {
                match item {
                    Ok(Event::Init) => drop(relists.fetch_add(1, Relaxed)),
                    Ok(_) => drop(events.fetch_add(1, Relaxed)),
                    Err(err) => eprintln!("  watcher: {err}"),
                }
                async {}
            })
    });

    // The live view: one line every half second.
    let view = tokio::spawn({
        let (store, stats, events, relists) = (
            store.clone(),
            stats.clone(),
            events.clone(),
            relists.clone(),
        );
        async move {
            let (mut last, mut tick) = (0, tokio::time::interval(Duration::from_millis(500)));
            println!(
                "{:>6} {:>6} {:>6} {:>7} | {}",
                "time",
                "store",
                "ev/s",
                "relists",
                names.map(|n| format!("{n:>11} lag/resyncs")).join(" ")
            );
            loop {
                tick.tick().await;
                let now = events.load(Relaxed);
                let subs: Vec<String> = stats
                    .iter()
                    .map(|s| {
                        format!(
                            "{:>23}",
                            format!("{}/{}", s.lag.load(Relaxed), s.resyncs.load(Relaxed))
                        )
                    })
                    .collect();
                println!(
                    "{:>5.1}s {:>6} {:>6} {:>7} | {}",
                    started.elapsed().as_secs_f64(),
                    store.len(),
                    (now - last) * 2,
                    relists.load(Relaxed),
                    subs.join(" ")
                );
                last = now;
            }
        }
    });

    println!("health before the first sync: {}", store.health());
    // Fails fast if the server refuses the watch (RBAC, a missing resource).
    store.wait_synced_or_fail().await?;
    println!(
        "store ready: {} objects; health: {}",
        store.len(),
        store.health()
    );

    // 4. Changes: update 200, add 100, delete 100.
    update(&api, named("cm", 0..200)).await?;
    create_all(&api, configmaps(named("new", 0..100))).await?;
    delete_all(&api, named("cm", 200..300)).await?;
    println!("changed 200, created 100, deleted 100");

    // 5. A forced relist: cut the watcher off, change things, compact etcd's history away.
    if existing {
        println!(
            "(existing cluster: skipping the forced relist, which needs the local control plane)"
        );
    } else {
        proxy.cut();
        delete_all(&api, named("cm", 0..50)).await?;
        let revision = env.compact_etcd().await?;
        println!("cut the watcher off, deleted 50 objects, compacted etcd at revision {revision}");
        proxy.restore();
        wait_for("the relist", || async { relists.load(Relaxed) >= 2 }).await?;
        println!("health after the relist: {}", store.health());
    }

    // 6. Everyone converges on the server's state.
    let server: BTreeMap<String, String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|cm| (cm.name_any(), cm.resource_version().unwrap_or_default()))
        .collect();
    let store_view = || {
        store
            .state()
            .iter()
            .map(|cm| (cm.name_any(), cm.resource_version().unwrap_or_default()))
            .collect::<BTreeMap<_, _>>()
    };
    wait_for("the store and every subscriber to converge", || async {
        store_view() == server && stats.iter().all(|s| *s.view.lock().unwrap() == server)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(600)).await; // one more line of the live view
    // Scraped while the subscribers still run: a dropped one leaves the metrics.
    let mut scraped = String::new();
    prometheus_client::encoding::text::encode(&mut scraped, &registry)?;
    view.abort();
    reflector.abort();

    println!("\nsummary after {:.1}s", started.elapsed().as_secs_f64());
    println!("  server objects     {}", server.len());
    println!(
        "  store objects      {} (equal to the server: yes)",
        store.len()
    );
    println!(
        "  watcher events     {} in {} initial syncs",
        events.load(Relaxed),
        relists.load(Relaxed)
    );
    for (name, s) in names.iter().zip(&stats) {
        println!(
            "  {name:<12} {:>6} events, {} resyncs, view equal to the server: yes",
            s.events.load(Relaxed),
            s.resyncs.load(Relaxed)
        );
    }
    for team in TEAMS {
        println!(
            "  team {team:<6} {} objects (index lookup)",
            store.by_index("team", team)?.len()
        );
    }
    println!("  health             {}", store.health());
    print_metrics(&scraped)?;
    if existing {
        Api::<Namespace>::all(env.client())
            .delete(&ns, &DeleteParams::default())
            .await?;
    }
    println!("cleaning up");
    Ok(())
}
