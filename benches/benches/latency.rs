//! Read latency and reader stalls, kache side by side with kube-runtime's reflector store, on
//! the same `ConfigMap`s in the same run. Prints Markdown tables.
//!
//! - `get` latency: the median and p99 of single lookups (keys in random order) on a full
//!   store, alone and while another thread applies `Apply` events as fast as it can. Each call
//!   is timed on its own; the cost of reading the clock (measured, shown) is subtracted.
//! - Relist: the wall time of `Init`, N `InitApply`, `InitDone` into a full store, and the
//!   longest gap a reader thread (looping `get` + `len`) sees between two completed reads while
//!   the relist runs. Two worlds: every object unchanged (same uid and resourceVersion) and
//!   every object changed. As a control, the same relist into a second store that the reader
//!   does not read runs first, with the reader timed the same way: its longest gap is the noise
//!   floor (scheduler, allocator, other processes) when the writer is this busy.
//!
//! Run: `cargo bench -p kache-benches --bench latency`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Results, Rng, Table, clock_overhead, config_map, config_map_key, fmt_ns, median, percentile,
    ratio, world,
};
use kube_runtime::reflector::{self, ObjectRef};
use kube_runtime::watcher;
use serde_json::json;

/// One library under test, reduced to what these measurements need.
trait Side {
    const NAME: &'static str;
    type Reader: Clone + Send + 'static;
    type Writer: Send + 'static;
    type Event: Send + 'static;
    fn store(n: usize) -> (Self::Reader, Self::Writer);
    fn apply(writer: &mut Self::Writer, event: Self::Event);
    fn init(objects: Vec<ConfigMap>) -> Vec<Self::Event>;
    fn update(obj: ConfigMap) -> Self::Event;
    fn get(reader: &Self::Reader, i: usize) -> bool;
    fn len(reader: &Self::Reader) -> usize;
}

fn names(n: usize) -> Vec<(String, String)> {
    (0..n).map(config_map_key).collect()
}

struct Kache;

impl Side for Kache {
    const NAME: &'static str = "kache";
    type Reader = (kache_store::Store<ConfigMap>, Arc<Vec<(String, String)>>);
    type Writer = kache_store::Writer<ConfigMap>;
    type Event = kache_watch::Event<ConfigMap>;

    fn store(n: usize) -> (Self::Reader, Self::Writer) {
        let (store, writer) = kache_store::store();
        ((store, Arc::new(names(n))), writer)
    }
    fn apply(writer: &mut Self::Writer, event: Self::Event) {
        drop(writer.apply(event));
    }
    fn init(objects: Vec<ConfigMap>) -> Vec<Self::Event> {
        kache_benches::kache_events(objects)
    }
    fn update(obj: ConfigMap) -> Self::Event {
        kache_watch::Event::Apply(obj)
    }
    fn get((store, keys): &Self::Reader, i: usize) -> bool {
        let (ns, name) = &keys[i];
        store.get(Some(ns), name).is_some()
    }
    fn len((store, _): &Self::Reader) -> usize {
        store.len()
    }
}

struct KubeRuntime;

impl Side for KubeRuntime {
    const NAME: &'static str = "kube-runtime";
    type Reader = (reflector::Store<ConfigMap>, Arc<Vec<ObjectRef<ConfigMap>>>);
    type Writer = reflector::store::Writer<ConfigMap>;
    type Event = watcher::Event<ConfigMap>;

    fn store(n: usize) -> (Self::Reader, Self::Writer) {
        let (store, writer) = reflector::store();
        let keys = names(n)
            .iter()
            .map(|(ns, name)| ObjectRef::new(name).within(ns))
            .collect();
        ((store, Arc::new(keys)), writer)
    }
    fn apply(writer: &mut Self::Writer, event: Self::Event) {
        // What its reflector does: apply by reference, then the event flows on and is dropped.
        writer.apply_watcher_event(&event);
        drop(event);
    }
    fn init(objects: Vec<ConfigMap>) -> Vec<Self::Event> {
        kache_benches::kube_runtime_events(objects)
    }
    fn update(obj: ConfigMap) -> Self::Event {
        watcher::Event::Apply(obj)
    }
    fn get((store, keys): &Self::Reader, i: usize) -> bool {
        store.get(&keys[i]).is_some()
    }
    fn len((store, _): &Self::Reader) -> usize {
        store.len()
    }
}

fn filled<S: Side>(objects: &[ConfigMap]) -> (S::Reader, S::Writer) {
    let (reader, mut writer) = S::store(objects.len());
    for event in S::init(objects.to_vec()) {
        S::apply(&mut writer, event);
    }
    assert_eq!(S::len(&reader), objects.len());
    (reader, writer)
}

/// Latencies of `samples` single gets in random order.
fn time_gets<S: Side>(reader: &S::Reader, n: usize, samples: usize) -> Vec<Duration> {
    let mut rng = Rng::new(11);
    let mut hits = 0usize;
    let times = (0..samples)
        .map(|_| {
            let i = rng.below(n);
            let start = Instant::now();
            let hit = black_box(S::get(reader, i));
            let elapsed = start.elapsed();
            hits += usize::from(hit);
            elapsed
        })
        .collect();
    assert_eq!(hits, samples, "every key is in the store");
    times
}

struct GetResult {
    median: Duration,
    p99: Duration,
    writes_per_sec: f64,
}

fn get_latency<S: Side>(objects: &[ConfigMap], with_writer: bool, overhead: Duration) -> GetResult {
    let n = objects.len();
    let (reader, mut writer) = filled::<S>(objects);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let updates: Vec<ConfigMap> = world(n.min(10_000), 2_000_000, config_map);
    let background = with_writer.then(|| {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        thread::spawn(move || {
            let mut count = 0u64;
            let start = Instant::now();
            'outer: loop {
                for obj in &updates {
                    // Both sides pay one deep clone per event: kache here, kube-runtime inside
                    // `apply_watcher_event`.
                    S::apply(&mut writer, S::update(obj.clone()));
                    count += 1;
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                }
            }
            #[allow(clippy::cast_possible_truncation, reason = "rate fits in u64")]
            #[allow(clippy::cast_sign_loss, reason = "rate is positive")]
            #[allow(clippy::cast_precision_loss, reason = "a rate")]
            written.store(
                (count as f64 / start.elapsed().as_secs_f64()) as u64,
                Ordering::Relaxed,
            );
            writer
        })
    });
    if background.is_some() {
        // Let the writer get going.
        thread::sleep(Duration::from_millis(20));
    }
    let mut times = time_gets::<S>(&reader, n, 300_000);
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = background {
        drop(handle.join().expect("writer thread"));
    }
    let median = percentile(&mut times, 50.0).saturating_sub(overhead);
    let p99 = percentile(&mut times, 99.0).saturating_sub(overhead);
    #[allow(clippy::cast_precision_loss, reason = "a rate")]
    let writes_per_sec = written.load(Ordering::Relaxed) as f64;
    GetResult {
        median,
        p99,
        writes_per_sec,
    }
}

struct RelistResult {
    wall: Duration,
    stall: Duration,
    floor: Duration,
}

/// Relists per side and row; the median is reported.
const RUNS: usize = 3;

const IDLE: u8 = 0;
const RELISTING: u8 = 1;
const DONE: u8 = 2;

fn relist<S: Side>(objects: &[ConfigMap], changed: bool) -> RelistResult {
    let n = objects.len();
    let (reader, mut writer) = filled::<S>(objects);
    let fresh: Vec<ConfigMap> = if changed {
        world(n, 10_000_000, config_map)
    } else {
        objects.to_vec()
    };
    let events = S::init(fresh.clone());
    // The control: the same relist into another store, which the reader never reads, run while
    // the reader is timed too. Its longest gap is what the machine (scheduler, allocator,
    // other processes) costs the reader when the writer is this busy, with no lock shared.
    let (_decoy_reader, mut decoy) = filled::<S>(objects);
    let decoy_events = S::init(fresh);
    let phase = Arc::new(AtomicU8::new(IDLE));
    let reading = {
        let phase = Arc::clone(&phase);
        let reader = reader.clone();
        thread::spawn(move || {
            let mut rng = Rng::new(3);
            let (mut floor, mut stall) = (Duration::ZERO, Duration::ZERO);
            let mut last = Instant::now();
            loop {
                black_box(S::get(&reader, rng.below(n)));
                black_box(S::len(&reader));
                let now = Instant::now();
                let gap = now - last;
                last = now;
                match phase.load(Ordering::Acquire) {
                    IDLE => floor = floor.max(gap),
                    RELISTING => stall = stall.max(gap),
                    _ => break (floor, stall.max(gap)),
                }
            }
        })
    };
    thread::sleep(Duration::from_millis(10));
    for event in decoy_events {
        S::apply(&mut decoy, event);
    }
    phase.store(RELISTING, Ordering::Release);
    let start = Instant::now();
    for event in events {
        S::apply(&mut writer, event);
    }
    let wall = start.elapsed();
    phase.store(DONE, Ordering::Release);
    let (floor, stall) = reading.join().expect("reader thread");
    assert_eq!(S::len(&reader), n);
    drop((reader, writer));
    RelistResult { wall, stall, floor }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let overhead = clock_overhead();
    let mut results = Results::new("latency", "cargo bench -p kache-benches --bench latency");
    results.setting("objects", json!([10_000, 100_000]));
    results.setting("relist_runs", RUNS);
    results.setting("clock_overhead_secs", overhead.as_secs_f64());
    println!("\nlatency: kache vs kube-runtime 5.x, ConfigMaps, same run");
    println!(
        "clock overhead subtracted from each timed get: {}",
        fmt_ns(overhead)
    );

    gets(&mut results, overhead);
    relists(&mut results);
    println!(
        "{} and {} were measured in this order, one after the other, for every row.",
        Kache::NAME,
        KubeRuntime::NAME
    );
    results.write();
}

/// Times single `get`s, alone and beside a writer, and prints and records the table.
fn gets(results: &mut Results, overhead: Duration) {
    let mut table = Table::new(&[
        "objects",
        "concurrent writer",
        "kache get p50 / p99",
        "kube-runtime get p50 / p99",
        "p50 ratio",
        "p99 ratio",
        "writer events/s (kache / kube-runtime)",
    ]);
    for n in [10_000, 100_000] {
        let objects = world(n, 1, config_map);
        for with_writer in [false, true] {
            let kache = get_latency::<Kache>(&objects, with_writer, overhead);
            let kube = get_latency::<KubeRuntime>(&objects, with_writer, overhead);
            results.data(json!({
                "what": "get",
                "objects": n,
                "writer": with_writer,
                "kache_p50_secs": kache.median.as_secs_f64(),
                "kache_p99_secs": kache.p99.as_secs_f64(),
                "kube_runtime_p50_secs": kube.median.as_secs_f64(),
                "kube_runtime_p99_secs": kube.p99.as_secs_f64(),
            }));
            table.row(vec![
                n.to_string(),
                if with_writer { "yes" } else { "no" }.to_owned(),
                format!("{} / {}", fmt_ns(kache.median), fmt_ns(kache.p99)),
                format!("{} / {}", fmt_ns(kube.median), fmt_ns(kube.p99)),
                ratio(kache.median.as_secs_f64(), kube.median.as_secs_f64()),
                ratio(kache.p99.as_secs_f64(), kube.p99.as_secs_f64()),
                if with_writer {
                    format!(
                        "{:.0}k / {:.0}k",
                        kache.writes_per_sec / 1e3,
                        kube.writes_per_sec / 1e3
                    )
                } else {
                    "-".to_owned()
                },
            ]);
        }
    }
    let title = "`get` latency (single thread, 300,000 timed calls each)";
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("get", title, &table);
}

/// Times relists and the reader's longest stall, and prints and records the table.
fn relists(results: &mut Results) {
    let mut table = Table::new(&[
        "objects",
        "relisted objects",
        "kache wall",
        "kube-runtime wall",
        "wall ratio",
        "kache max reader stall",
        "kube-runtime max reader stall",
        "stall ratio",
        "control: same relist into another store (kache / kube-runtime)",
    ]);
    for n in [10_000, 100_000] {
        let objects = world(n, 1, config_map);
        for changed in [false, true] {
            let (mut kache, mut kube) = (Vec::new(), Vec::new());
            for _ in 0..RUNS {
                kache.push(relist::<Kache>(&objects, changed));
                kube.push(relist::<KubeRuntime>(&objects, changed));
            }
            let med = |results: &[RelistResult], f: fn(&RelistResult) -> Duration| {
                median(&mut results.iter().map(f).collect::<Vec<_>>())
            };
            let (kw, kuw) = (med(&kache, |r| r.wall), med(&kube, |r| r.wall));
            let (ks, kus) = (med(&kache, |r| r.stall), med(&kube, |r| r.stall));
            let (kf, kuf) = (med(&kache, |r| r.floor), med(&kube, |r| r.floor));
            results.data(json!({
                "what": "relist",
                "objects": n,
                "changed": changed,
                "kache_wall_secs": kw.as_secs_f64(),
                "kube_runtime_wall_secs": kuw.as_secs_f64(),
                "kache_stall_secs": ks.as_secs_f64(),
                "kube_runtime_stall_secs": kus.as_secs_f64(),
                "kache_control_secs": kf.as_secs_f64(),
                "kube_runtime_control_secs": kuf.as_secs_f64(),
            }));
            table.row(vec![
                n.to_string(),
                if changed {
                    "all changed"
                } else {
                    "all unchanged"
                }
                .to_owned(),
                fmt_ns(kw),
                fmt_ns(kuw),
                ratio(kw.as_secs_f64(), kuw.as_secs_f64()),
                fmt_ns(ks),
                fmt_ns(kus),
                ratio(ks.as_secs_f64(), kus.as_secs_f64()),
                format!("{} / {}", fmt_ns(kf), fmt_ns(kuf)),
            ]);
        }
    }
    let title = format!(
        "relist (Init + N InitApply + InitDone into a full store; median of {RUNS} runs, \
         alternating)"
    );
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("relist", &title, &table);
}
