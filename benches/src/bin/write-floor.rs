//! What an initial sync and a steady-state `Apply` cannot go below on this machine, beside what
//! kache and kube-runtime take, in one process, their rounds interleaved so that the machine's
//! drift touches all three:
//!
//! - a skeleton doing only what every store that shares its objects must: each event moved out
//!   of the list through the stream and consumer that `--bench store` uses, its object moved
//!   into an `Arc`, keyed (kache's inline key), and inserted into a hash table (the hasher both
//!   stores use), the `Arc` passed on and dropped. In a sync the table grows from empty; in an
//!   `Apply` it holds the objects already, and the replaced one is freed, as in both stores.
//!   No version, no generation kept apart from readers, no lock, no subscribers;
//! - kache's `reflect` and kube-runtime's `reflector` on the same events, as the
//!   `sync-configmap` and `apply-configmap` groups time them.
//!
//! Each round builds fresh events and stores (not timed), times one sync or one `Apply` of every
//! object, and drops the store (not timed). The tables give the median per event, kache's
//! speed over kube-runtime's, and the most any store could reach: the skeleton's.
//!
//! Run: `cargo run --release -p kache-benches --bin write-floor [rounds]` (default 15).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Results, Table, config_map, fmt_ns, kache_events, kache_reflect, kube_runtime_events,
    kube_runtime_reflect, median, world,
};
use kache_store::{Event, ObjectKey};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// The skeleton's table.
type Objects = HashMap<ObjectKey, Arc<ConfigMap>, ahash::RandomState>;

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(15);
    let mut results = Results::new(
        "write-floor",
        "cargo run --release -p kache-benches --bin write-floor",
    );
    results.setting("objects", serde_json::json!(SIZES));
    results.setting("rounds", rounds);
    let mut sync = table();
    let mut apply = table();
    for n in SIZES {
        let before = world(n, 1, config_map);
        let after = world(n, 1_000_000, config_map);
        let (mut times, mut apply_times) = (Times::default(), Times::default());
        for _ in 0..rounds {
            times.skeleton.push(skeleton(
                Objects::default(),
                kache_events(before.iter().cloned()),
            ));
            times
                .kache
                .push(kache(&[], kache_events(before.iter().cloned())));
            times
                .kube
                .push(kube(&[], kube_runtime_events(before.iter().cloned())));

            let filled = before.iter().cloned().map(Arc::new);
            let filled = filled.map(|obj| (ObjectKey::from_object(obj.as_ref()), obj));
            apply_times.skeleton.push(skeleton(
                filled.collect(),
                after.iter().cloned().map(Event::Apply).collect(),
            ));
            let events = after.iter().cloned().map(Event::Apply).collect();
            apply_times.kache.push(kache(&before, events));
            let events = after
                .iter()
                .cloned()
                .map(kube_runtime::watcher::Event::Apply);
            apply_times.kube.push(kube(&before, events.collect()));
        }
        times.row(&mut sync, n, n + 2, ("sync", &mut results));
        apply_times.row(&mut apply, n, n, ("apply", &mut results));
    }
    let title = format!("initial sync of ConfigMaps, median of {rounds} rounds, per event");
    println!("\n{title}\n");
    println!("{}", sync.render());
    results.table("sync", &title, &sync);
    let title =
        format!("`Apply` of every ConfigMap of a full store, median of {rounds} rounds, per event");
    println!("\n{title}\n");
    println!("{}", apply.render());
    results.table("apply", &title, &apply);
    results.write();
}

fn table() -> Table {
    Table::new(&[
        "objects",
        "skeleton",
        "kache",
        "kube-runtime",
        "kache's speed over kube-runtime's",
        "the skeleton's over kube-runtime's",
        "kache's time over the skeleton's",
    ])
}

/// One run's times, per round.
#[derive(Default)]
struct Times {
    skeleton: Vec<Duration>,
    kache: Vec<Duration>,
    kube: Vec<Duration>,
}

impl Times {
    fn row(
        mut self,
        table: &mut Table,
        n: usize,
        events: usize,
        (path, results): (&str, &mut Results),
    ) {
        let per_event =
            |all: &mut Vec<Duration>| median(all) / u32::try_from(events).unwrap_or(u32::MAX);
        let skeleton = per_event(&mut self.skeleton);
        let kache = per_event(&mut self.kache);
        let kube = per_event(&mut self.kube);
        results.data(serde_json::json!({
            "path": path,
            "objects": n,
            "skeleton_secs_per_event": skeleton.as_secs_f64(),
            "kache_secs_per_event": kache.as_secs_f64(),
            "kube_runtime_secs_per_event": kube.as_secs_f64(),
        }));
        let over = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
        table.row(vec![
            n.to_string(),
            fmt_ns(skeleton),
            fmt_ns(kache),
            fmt_ns(kube),
            over(kube, kache),
            over(kube, skeleton),
            over(kache, skeleton),
        ]);
    }
}

/// The skeleton: times `events` into `objects` and drops the table after the clock stops.
fn skeleton(mut objects: Objects, events: Vec<Event<ConfigMap>>) -> Duration {
    let start = Instant::now();
    let written = futures::stream::iter(events).for_each(|event| {
        if let Event::InitApply(obj) | Event::Apply(obj) = event {
            let obj = Arc::new(obj);
            // The replaced object, if any, is freed here, as both stores free theirs.
            drop(objects.insert(ObjectKey::from_object(obj.as_ref()), Arc::clone(&obj)));
            drop(black_box(obj));
        }
        futures::future::ready(())
    });
    futures::executor::block_on(written);
    let elapsed = start.elapsed();
    drop(black_box(objects));
    elapsed
}

/// Times `events` through kache's `reflect` into a store first synced with `before`.
fn kache(before: &[ConfigMap], events: Vec<Event<ConfigMap>>) -> Duration {
    let (store, mut writer) = kache_store::store::<ConfigMap>();
    if !before.is_empty() {
        for event in kache_events(before.iter().cloned()) {
            writer.apply(event);
        }
    }
    let start = Instant::now();
    kache_reflect(writer, events);
    let elapsed = start.elapsed();
    drop(store);
    elapsed
}

/// Times `events` through kube-runtime's `reflector` into a store first synced with `before`.
fn kube(before: &[ConfigMap], events: Vec<kube_runtime::watcher::Event<ConfigMap>>) -> Duration {
    let (store, mut writer) = kube_runtime::reflector::store::<ConfigMap>();
    if !before.is_empty() {
        for event in kube_runtime_events(before.iter().cloned()) {
            writer.apply_watcher_event(&event);
        }
    }
    let start = Instant::now();
    kube_runtime_reflect(writer, events);
    let elapsed = start.elapsed();
    drop(store);
    elapsed
}
