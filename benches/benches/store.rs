//! Criterion benchmarks of the store, kache side by side with kube-runtime's reflector store,
//! on the same objects in the same run:
//!
//! - `sync-*`: an initial sync (`Init`, N `InitApply`, `InitDone`) fed through each library's
//!   reflector stream, events moved in from a pre-built `Vec` (cloned outside the timed region);
//! - `apply-configmap`: N `Apply` events (every object changed) into a store already holding the
//!   N objects: the steady state of a watch;
//! - `get`: one lookup by namespace and name, keys in random order;
//! - `state`: a snapshot of every object;
//! - `find-*`: `find` with a predicate that matches nothing (a full scan) and one that matches
//!   one object in 500 (an early exit); kache runs it on a snapshot, after the lock is
//!   released, kube-runtime under its lock;
//! - `filter-*`: the objects with one label value (kache: an index; kube-runtime: a scan) and
//!   the objects of one namespace (kache: the built-in namespace index; kube-runtime: a scan),
//!   and (`filter-namespace-first`) the first such call on a freshly synced store, which
//!   builds kache's namespace index.
//!
//! After the runs, a table of medians and `kache / kube-runtime` ratios is printed.

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Kind, Results, Table, app_of, config_map, config_map_managed, criterion_dir, criterion_median,
    fmt_ns, kache_events, kache_reflect, kube_runtime_events, kube_runtime_reflect, namespace_of,
    pod, ratio, shuffled_config_map_keys, world,
};
use kube_client::{Resource, ResourceExt as _};
use kube_runtime::reflector::{self, ObjectRef};
use kube_runtime::watcher;
use serde_json::json;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// One comparison to report: a criterion group, its parameter, and how many events or
/// operations one iteration holds.
struct Row {
    group: String,
    param: usize,
    per_iter: usize,
    unit: &'static str,
}

impl Row {
    /// A row of one lookup per iteration.
    fn lookup(group: &str, param: usize) -> Self {
        Self {
            group: group.to_owned(),
            param,
            per_iter: 1,
            unit: "lookup",
        }
    }
}

fn main() {
    let mut results = Results::new("store", "cargo bench -p kache-benches --bench store");
    results.setting("objects", json!(SIZES));
    let out = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .configure_from_args();
    let mut rows = Vec::new();

    sync(&mut c, &mut rows, Kind::ConfigMap, config_map);
    sync(
        &mut c,
        &mut rows,
        Kind::ConfigMapManaged,
        config_map_managed,
    );
    sync(&mut c, &mut rows, Kind::Pod, pod);
    apply(&mut c, &mut rows);
    reads(&mut c, &mut rows);

    c.final_summary();
    summarize(&out, &rows, &mut results);
    results.write();
}

fn group_id(kind: Kind) -> &'static str {
    match kind {
        Kind::ConfigMap => "configmap",
        Kind::ConfigMapManaged => "configmap-managed",
        Kind::Pod => "pod",
    }
}

fn sync<K>(c: &mut Criterion, rows: &mut Vec<Row>, kind: Kind, make: fn(usize, u64) -> K)
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let name = format!("sync-{}", group_id(kind));
    let mut group = c.benchmark_group(&name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let objects = world(n, 1, make);
        group.throughput(Throughput::Elements(n as u64 + 2));
        group.bench_with_input(BenchmarkId::new("kache", n), &n, |b, _| {
            b.iter_batched(
                || kache_events(objects.iter().cloned()),
                |events| {
                    let (store, writer) = kache_store::store::<K>();
                    kache_reflect(writer, events);
                    store
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_with_input(BenchmarkId::new("kube-runtime", n), &n, |b, _| {
            b.iter_batched(
                || kube_runtime_events(objects.iter().cloned()),
                |events| {
                    let (store, writer) = reflector::store::<K>();
                    kube_runtime_reflect(writer, events);
                    store
                },
                BatchSize::PerIteration,
            );
        });
        rows.push(Row {
            group: name.clone(),
            param: n,
            per_iter: n + 2,
            unit: "event",
        });
    }
    group.finish();
}

/// Steady-state watch: every object of a full store changes once.
fn apply(c: &mut Criterion, rows: &mut Vec<Row>) {
    let name = "apply-configmap";
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in SIZES {
        let before = world(n, 1, config_map);
        let after = world(n, 1_000_000, config_map);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("kache", n), &n, |b, _| {
            b.iter_batched(
                || {
                    let (store, mut writer) = kache_store::store::<ConfigMap>();
                    for event in kache_events(before.iter().cloned()) {
                        writer.apply(event);
                    }
                    let events: Vec<_> = after
                        .iter()
                        .cloned()
                        .map(kache_watch::Event::Apply)
                        .collect();
                    (store, writer, events)
                },
                |(store, writer, events)| {
                    kache_reflect(writer, events);
                    store
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_with_input(BenchmarkId::new("kube-runtime", n), &n, |b, _| {
            b.iter_batched(
                || {
                    let (store, mut writer) = reflector::store::<ConfigMap>();
                    for event in kube_runtime_events(before.iter().cloned()) {
                        writer.apply_watcher_event(&event);
                    }
                    let events: Vec<_> = after.iter().cloned().map(watcher::Event::Apply).collect();
                    (store, writer, events)
                },
                |(store, writer, events)| {
                    kube_runtime_reflect(writer, events);
                    store
                },
                BatchSize::PerIteration,
            );
        });
        rows.push(Row {
            group: name.to_owned(),
            param: n,
            per_iter: n,
            unit: "event",
        });
    }
    group.finish();
}

/// A kache store and a kube-runtime store holding the same objects.
type Stores = (
    kache_store::Store<ConfigMap>,
    kube_runtime::reflector::Store<ConfigMap>,
);

/// Both stores filled with the same `n` `ConfigMap`s; kache's has an `app` label index.
fn filled(n: usize) -> Stores {
    let objects = world(n, 1, config_map);
    let (kache, writer) = kache_store::store::<ConfigMap>();
    let mut writer = writer.with_index("app", |cm: &ConfigMap| {
        cm.labels().get("app").cloned().into_iter().collect()
    });
    for event in kache_events(objects.iter().cloned()) {
        writer.apply(event);
    }
    let (kube, mut writer) = reflector::store::<ConfigMap>();
    for event in kube_runtime_events(objects) {
        writer.apply_watcher_event(&event);
    }
    (kache, kube)
}

fn reads(c: &mut Criterion, rows: &mut Vec<Row>) {
    let stores: Vec<_> = SIZES.iter().map(|&n| (n, filled(n))).collect();

    let mut group = c.benchmark_group("get");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (n, (kache, kube)) in &stores {
        let names = shuffled_config_map_keys(*n);
        let refs: Vec<ObjectRef<ConfigMap>> = names
            .iter()
            .map(|(ns, name)| ObjectRef::new(name).within(ns))
            .collect();
        group.bench_with_input(BenchmarkId::new("kache", n), n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let (ns, name) = &names[i];
                i = (i + 1) % names.len();
                kache.get(Some(ns), name)
            });
        });
        group.bench_with_input(BenchmarkId::new("kube-runtime", n), n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let key = &refs[i];
                i = (i + 1) % refs.len();
                kube.get(key)
            });
        });
        rows.push(Row {
            group: "get".to_owned(),
            param: *n,
            per_iter: 1,
            unit: "get",
        });
    }
    group.finish();

    let mut group = c.benchmark_group("state");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (n, (kache, kube)) in &stores {
        group.bench_with_input(BenchmarkId::new("kache", n), n, |b, _| {
            b.iter(|| kache.state());
        });
        group.bench_with_input(BenchmarkId::new("kube-runtime", n), n, |b, _| {
            b.iter(|| kube.state());
        });
        rows.push(Row {
            group: "state".to_owned(),
            param: *n,
            per_iter: 1,
            unit: "snapshot",
        });
    }
    group.finish();

    finds(c, rows, &stores);

    for (name, what) in [("filter-label", "label"), ("filter-namespace", "namespace")] {
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (n, (kache, kube)) in &stores {
            let app = app_of(17);
            let ns = namespace_of(17);
            group.bench_with_input(BenchmarkId::new("kache", n), n, |b, _| {
                if what == "label" {
                    b.iter(|| kache.by_index("app", &app));
                } else {
                    b.iter(|| kache.by_namespace(&ns));
                }
            });
            group.bench_with_input(BenchmarkId::new("kube-runtime", n), n, |b, _| {
                if what == "label" {
                    b.iter(|| kube.state_filter(|cm| cm.labels().get("app") == Some(&app)));
                } else {
                    b.iter(|| kube_namespace_scan(kube, &ns));
                }
            });
            rows.push(Row::lookup(name, *n));
        }
        group.finish();
    }
    first_by_namespace(c, rows, &stores);
}

/// kube-runtime's way to the objects of one namespace: a scan of its store.
fn kube_namespace_scan(
    kube: &reflector::Store<ConfigMap>,
    ns: &str,
) -> Vec<std::sync::Arc<ConfigMap>> {
    kube.state_filter(|cm| cm.namespace().as_deref() == Some(ns))
}

/// The first `by_namespace` of a freshly synced store, which builds kache's namespace index;
/// kube-runtime's scan costs the same every time.
fn first_by_namespace(c: &mut Criterion, rows: &mut Vec<Row>, stores: &[(usize, Stores)]) {
    let name = "filter-namespace-first";
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (n, (_, kube)) in stores {
        let objects = world(*n, 1, config_map);
        let ns = namespace_of(17);
        group.bench_with_input(BenchmarkId::new("kache", n), n, |b, _| {
            b.iter_batched(
                || {
                    let (store, mut writer) = kache_store::store::<ConfigMap>();
                    for event in kache_events(objects.iter().cloned()) {
                        writer.apply(event);
                    }
                    (store, writer)
                },
                // The store and writer are returned, so they are dropped outside the timing.
                |(store, writer)| {
                    let found = store.by_namespace(&ns);
                    (store, writer, found)
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_with_input(BenchmarkId::new("kube-runtime", n), n, |b, _| {
            b.iter(|| kube_namespace_scan(kube, &ns));
        });
        rows.push(Row::lookup(name, *n));
    }
    group.finish();
}

/// `find` with a predicate that matches nothing, and one that matches one object in 500.
fn finds(c: &mut Criterion, rows: &mut Vec<Row>, stores: &[(usize, Stores)]) {
    for (name, matches) in [("find-none", false), ("find-label", true)] {
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (n, (kache, kube)) in stores {
            // One object in 500 carries this label value; no object carries the other.
            let app = if matches {
                app_of(17)
            } else {
                "none".to_owned()
            };
            group.bench_with_input(BenchmarkId::new("kache", n), n, |b, _| {
                b.iter(|| kache.find(|cm| cm.labels().get("app") == Some(&app)));
            });
            group.bench_with_input(BenchmarkId::new("kube-runtime", n), n, |b, _| {
                b.iter(|| kube.find(|cm| cm.labels().get("app") == Some(&app)));
            });
            rows.push(Row {
                group: name.to_owned(),
                param: *n,
                per_iter: 1,
                unit: "find",
            });
        }
        group.finish();
    }
}

fn summarize(out: &Path, rows: &[Row], results: &mut Results) {
    let mut table = Table::new(&[
        "benchmark",
        "objects",
        "kache",
        "kube-runtime",
        "kache / kube-runtime (time)",
    ]);
    for row in rows {
        let (Some(kache), Some(kube)) = (
            criterion_median(out, &row.group, "kache", row.param),
            criterion_median(out, &row.group, "kube-runtime", row.param),
        ) else {
            continue;
        };
        #[allow(clippy::cast_precision_loss, reason = "event counts far below 2^52")]
        let per = row.per_iter as f64;
        let cell = |secs: f64| {
            if row.per_iter > 1 {
                format!(
                    "{} per {} ({:.2} M/s)",
                    fmt_ns(Duration::from_secs_f64(secs / per)),
                    row.unit,
                    per / secs / 1e6
                )
            } else {
                format!("{} per {}", fmt_ns(Duration::from_secs_f64(secs)), row.unit)
            }
        };
        table.row(vec![
            row.group.clone(),
            row.param.to_string(),
            cell(kache),
            cell(kube),
            ratio(kache, kube),
        ]);
        results.data(json!({
            "group": row.group,
            "objects": row.param,
            "per_iter": row.per_iter,
            "unit": row.unit,
            "kache_secs": kache,
            "kube_runtime_secs": kube,
        }));
    }
    let title = "store: criterion medians, kache vs kube-runtime 5.x, same objects, same run";
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("medians", title, &table);
}
