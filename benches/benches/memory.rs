//! Heap used by the store, kache side by side with kube-runtime's reflector store, on the same
//! objects in the same run, measured with dhat's heap profiler. Prints Markdown tables.
//!
//! - Store bytes per object: the live heap after building a store from an initial sync, minus
//!   the live heap before its events were made. The events are allocated before and consumed
//!   by the build, so what remains is exactly what the store holds (objects, map, keys,
//!   indexes), whether it kept the event's object (kache) or a deep clone (kube-runtime).
//!   Allocations per object during the build are shown too.
//! - Relist peak: a full store relists the same world from fresh copies made one at a time (as
//!   a watcher decodes them); the live heap is read after every event and its peak is compared
//!   with the heap of the store before the relist. Two worlds: every object unchanged (same uid
//!   and resourceVersion) and every object changed.
//! - A burst with a stalled subscriber: a store of 10,000 objects takes 100,000 `Apply`
//!   events on 100 hot objects (fresh copies made one at a time), with no subscriber and with one subscriber
//!   that stops polling after its initial snapshot. The peak live heap above the store shows what a stalled subscriber
//!   can pin: at most one buffer of changes, whatever the burst's length. (kube-runtime's
//!   subscribers apply backpressure, so with a stalled one its writer never gets through the
//!   burst: there is nothing to compare.)
//!
//! Run: `cargo bench -p kache-benches --bench memory`.

use std::hint::black_box;

use futures::{FutureExt, StreamExt};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kache_benches::{
    Kind, Results, Table, config_map, config_map_managed, fmt_bytes, kache_events,
    kube_runtime_events, pod, ratio, world,
};
use kube_client::Resource;
use kube_runtime::{reflector, watcher};
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn live() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

struct Measured {
    /// Live heap held by the store, bytes.
    store: u64,
    /// Allocations made while building it.
    allocations: u64,
    /// Highest live heap above the pre-relist baseline, during the relist.
    relist_extra: u64,
}

/// One library under test.
trait Side<K> {
    type Writer;
    type Event;
    fn writer() -> (Box<dyn Fn() -> usize>, Self::Writer);
    fn events(objects: Vec<K>) -> Vec<Self::Event>;
    fn init() -> Self::Event;
    fn init_apply(obj: K) -> Self::Event;
    fn init_done() -> Self::Event;
    fn apply(writer: &mut Self::Writer, event: Self::Event);
}

struct Kache;

impl<K: Resource + Send + Sync + 'static> Side<K> for Kache {
    type Writer = kache_store::Writer<K>;
    type Event = kache_watch::Event<K>;
    fn writer() -> (Box<dyn Fn() -> usize>, Self::Writer) {
        let (store, writer) = kache_store::store::<K>();
        (Box::new(move || store.len()), writer)
    }
    fn events(objects: Vec<K>) -> Vec<Self::Event> {
        kache_events(objects)
    }
    fn init() -> Self::Event {
        kache_watch::Event::Init
    }
    fn init_apply(obj: K) -> Self::Event {
        kache_watch::Event::InitApply(obj)
    }
    fn init_done() -> Self::Event {
        kache_watch::Event::InitDone
    }
    fn apply(writer: &mut Self::Writer, event: Self::Event) {
        // The shared event flows on downstream; here it ends.
        drop(black_box(writer.apply(event)));
    }
}

struct KubeRuntime;

impl<K: Resource<DynamicType = ()> + Clone + 'static> Side<K> for KubeRuntime {
    type Writer = reflector::store::Writer<K>;
    type Event = watcher::Event<K>;
    fn writer() -> (Box<dyn Fn() -> usize>, Self::Writer) {
        let (store, writer) = reflector::store::<K>();
        (Box::new(move || store.len()), writer)
    }
    fn events(objects: Vec<K>) -> Vec<Self::Event> {
        kube_runtime_events(objects)
    }
    fn init() -> Self::Event {
        watcher::Event::Init
    }
    fn init_apply(obj: K) -> Self::Event {
        watcher::Event::InitApply(obj)
    }
    fn init_done() -> Self::Event {
        watcher::Event::InitDone
    }
    fn apply(writer: &mut Self::Writer, event: Self::Event) {
        // What its reflector does: apply by reference, pass the event on, drop it downstream.
        writer.apply_watcher_event(&event);
        drop(black_box(event));
    }
}

fn measure<K: Clone, S: Side<K>>(n: usize, make: fn(usize, u64) -> K, changed: bool) -> Measured {
    let objects = world(n, 1, make);

    // The store alone: events are allocated first and consumed by the build.
    let before = live();
    let events = S::events(objects.clone());
    let (len, mut writer) = S::writer();
    let blocks_before = blocks();
    for event in events {
        S::apply(&mut writer, event);
    }
    let allocations = blocks() - blocks_before;
    let store = live().saturating_sub(before);
    assert_eq!(len(), n);

    // A relist of the same world from fresh copies, made one at a time.
    let baseline = live();
    let mut peak = baseline;
    let rv = if changed { 10_000_000 } else { 1 };
    S::apply(&mut writer, S::init());
    for i in 0..n {
        S::apply(&mut writer, S::init_apply(make(i, rv + i as u64)));
        peak = peak.max(live());
    }
    S::apply(&mut writer, S::init_done());
    peak = peak.max(live());
    assert_eq!(len(), n);
    drop((writer, len, objects));
    Measured {
        store,
        allocations,
        relist_extra: peak - baseline,
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "byte counts shown to one decimal"
)]
fn per(bytes: u64, n: usize) -> f64 {
    bytes as f64 / n as f64
}

fn compare<K>(
    sizes: &[usize],
    kind: Kind,
    make: fn(usize, u64) -> K,
    store: &mut Table,
    relist: &mut Table,
    results: &mut Results,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    for &n in sizes {
        for changed in [false, true] {
            let kache = measure::<K, Kache>(n, make, changed);
            let kube = measure::<K, KubeRuntime>(n, make, changed);
            results.data(json!({
                "kind": kind.label(),
                "objects": n,
                "changed": changed,
                "kache_store_bytes": kache.store,
                "kube_runtime_store_bytes": kube.store,
                "kache_allocations": kache.allocations,
                "kube_runtime_allocations": kube.allocations,
                "kache_relist_extra_bytes": kache.relist_extra,
                "kube_runtime_relist_extra_bytes": kube.relist_extra,
            }));
            if !changed {
                store.row(vec![
                    kind.label().to_owned(),
                    n.to_string(),
                    fmt_bytes(per(kache.store, n)),
                    fmt_bytes(per(kube.store, n)),
                    ratio(per(kache.store, n), per(kube.store, n)),
                    format!(
                        "{:.1} / {:.1}",
                        per(kache.allocations, n),
                        per(kube.allocations, n)
                    ),
                ]);
            }
            #[allow(
                clippy::cast_precision_loss,
                reason = "byte counts shown to two decimals"
            )]
            let peak = |m: &Measured| (m.store + m.relist_extra) as f64 / m.store as f64;
            relist.row(vec![
                kind.label().to_owned(),
                n.to_string(),
                if changed {
                    "all changed"
                } else {
                    "all unchanged"
                }
                .to_owned(),
                format!(
                    "{} (+{})",
                    fmt_bytes(per(kache.store, 1) + per(kache.relist_extra, 1)),
                    fmt_bytes(per(kache.relist_extra, 1))
                ),
                format!(
                    "{} (+{})",
                    fmt_bytes(per(kube.store, 1) + per(kube.relist_extra, 1)),
                    fmt_bytes(per(kube.relist_extra, 1))
                ),
                format!("{:.2}x / {:.2}x", peak(&kache), peak(&kube)),
                ratio(per(kache.relist_extra, 1), per(kube.relist_extra, 1)),
            ]);
        }
    }
}

/// Peak and final live heap above the pre-burst store while `events` `Apply`s hit a store of
/// `objects` objects, with `stalled` subscribers that stop polling after their snapshot.
fn burst(objects: usize, events: usize, stalled: usize) -> (u64, u64) {
    let mut writer = kache_store::Writer::<ConfigMap>::new();
    for event in kache_events(world(objects, 1, config_map)) {
        writer.apply(event);
    }
    // Each subscriber consumes its initial snapshot, then stalls: never polled again.
    let subscribers: Vec<_> = (0..stalled)
        .map(|_| {
            let mut subscriber = writer.subscribe();
            while let Some(Some(event)) = subscriber.next().now_or_never() {
                if matches!(event, kache_watch::Event::InitDone) {
                    break;
                }
            }
            subscriber
        })
        .collect();
    let base = live();
    let mut peak = base;
    for i in 0..events {
        // 100 hot objects: each buffered change then pins a version the store has replaced.
        let event = kache_watch::Event::Apply(config_map(i % 100, (objects + i) as u64));
        drop(black_box(writer.apply(event)));
        peak = peak.max(live());
    }
    let end = live();
    drop(subscribers);
    (peak - base, end.saturating_sub(base))
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let sizes: Vec<usize> = std::env::var("KACHE_BENCH_MEMORY_SIZES").ok().map_or_else(
        || vec![10_000],
        |s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
    );

    let mut store = Table::new(&[
        "objects",
        "count",
        "kache bytes/object",
        "kube-runtime bytes/object",
        "ratio",
        "allocations/object during build (kache / kube-runtime)",
    ]);
    let mut relist = Table::new(&[
        "objects",
        "count",
        "relisted objects",
        "kache peak (+ above store)",
        "kube-runtime peak (+ above store)",
        "peak / store (kache / kube-runtime)",
        "extra ratio",
    ]);
    let mut results = Results::new("memory", "cargo bench -p kache-benches --bench memory");
    results.setting("objects", json!(sizes));
    compare::<ConfigMap>(
        &sizes,
        Kind::ConfigMap,
        config_map,
        &mut store,
        &mut relist,
        &mut results,
    );
    compare::<ConfigMap>(
        &sizes,
        Kind::ConfigMapManaged,
        config_map_managed,
        &mut store,
        &mut relist,
        &mut results,
    );
    compare::<Pod>(
        &sizes,
        Kind::Pod,
        pod,
        &mut store,
        &mut relist,
        &mut results,
    );
    results.table(
        "store",
        "store heap per object (objects, map, keys, indexes; fixtures excluded)",
        &store,
    );
    results.table(
        "relist",
        "peak live heap during a relist of a full store (fresh copies made one at a time)",
        &relist,
    );

    println!("\nmemory: kache vs kube-runtime 5.x, dhat heap profiler, same objects, same run\n");
    println!("store heap per object (objects, map, keys, indexes; fixtures excluded)\n");
    println!("{}", store.render());
    println!("peak live heap during a relist of a full store (fresh copies made one at a time)\n");
    println!("{}", relist.render());

    stalled(&mut results);
    results.write();
}

/// Measures what a stalled subscriber pins during a burst, and prints and records the table.
fn stalled(results: &mut Results) {
    let (objects, events) = (10_000, 100_000);
    let mut stalled = Table::new(&[
        "store objects",
        "burst events",
        "subscribers",
        "peak heap above the store",
        "heap above the store after the burst",
    ]);
    for (label, count) in [
        ("none", 0),
        ("1 stalled after its snapshot (buffer 1024)", 1),
    ] {
        let (peak, end) = burst(objects, events, count);
        results.data(json!({
            "what": "burst",
            "objects": objects,
            "events": events,
            "stalled_subscribers": count,
            "peak_above_store_bytes": peak,
            "end_above_store_bytes": end,
        }));
        stalled.row(vec![
            objects.to_string(),
            events.to_string(),
            label.to_owned(),
            fmt_bytes(per(peak, 1)),
            fmt_bytes(per(end, 1)),
        ]);
    }
    println!(
        "kache: a {events}-event burst on 100 hot objects with a stalled subscriber (ConfigMap)\n"
    );
    println!("{}", stalled.render());
    results.table(
        "stalled",
        &format!("kache: a {events}-event burst on 100 hot objects with a stalled subscriber"),
        &stalled,
    );
}
