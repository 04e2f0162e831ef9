//! Fan-out: the writer's cost per event with 1, 10 and 100 subscribers, each drained by its own
//! task, kache side by side with kube-runtime's shared store (`store_shared` + `subscribe()`,
//! behind `unstable-runtime-subscribe`).
//!
//! Each iteration: a store already synced with `OBJECTS` `ConfigMap`s, `S` subscribers spawned
//! on a two-worker tokio runtime, then `OBJECTS` `Apply` events (owned, made beforehand) fed
//! through each library's reflector stream on the same runtime. Timed: from the first event to
//! the end of the writer's stream. Both libraries get the same buffer of 1024 changes.
//!
//! - `kache`: default subscribers (`Delivery::Resync`): the writer never waits; a subscriber
//!   that falls a buffer behind is resynced from the store.
//! - `kache-backpressure`: `Delivery::Backpressure`: the writer waits for the slowest
//!   subscriber, as kube-runtime's does.
//! - `kube-runtime`: its writer waits for the slowest subscriber; subscribers receive an
//!   `ObjectRef` and look the object up in the store.
//!
//! Two figures per run: the writer's wall time (criterion's, from the first event to the end
//! of the writer's stream, which for backpressure includes waiting for the slowest of the
//! subscribers to make room) and its busy time (the time spent inside the writer stream's
//! polls, i.e. applying and publishing, without the waits; a mean over the iterations).
//!
//! After the runs, tables of medians, means and ratios are printed.

use std::convert::Infallible;
use std::future::{poll_fn, ready};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Results, Table, config_map, criterion_dir, criterion_median, fmt_ns, kache_events,
    kube_runtime_events, ratio, world,
};
use kache_store::{Delivery, ReflectExt};
use kube_runtime::{reflector, watcher};
use serde_json::json;
use tokio::runtime::Runtime;

const OBJECTS: usize = 5_000;
const SUBSCRIBERS: [usize; 3] = [1, 10, 100];
const BUFFER: usize = 1024;
/// Resyncs of kache subscribers, summed over the iterations of the current benchmark.
static RESYNCS: AtomicU64 = AtomicU64::new(0);
/// Iterations of the current benchmark.
static ITERATIONS: AtomicU64 = AtomicU64::new(0);
/// The writer's busy time (nanoseconds inside its stream's polls), summed over the iterations
/// of the current benchmark.
static BUSY: AtomicU64 = AtomicU64::new(0);

const FUNCTIONS: [&str; 3] = ["kache", "kache-backpressure", "kube-runtime"];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Drives the writer's stream to its end, as `for_each` would (one poll runs until the stream
/// is pending), adding the time spent inside its polls to `BUSY`.
async fn drive<S: Stream>(writer: S) {
    let mut writer = pin!(writer);
    let mut busy = Duration::ZERO;
    poll_fn(|cx| {
        loop {
            let start = Instant::now();
            let polled = writer.as_mut().poll_next(cx);
            busy += start.elapsed();
            match polled {
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "nanoseconds of one run fit in u64"
    )]
    BUSY.fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
}

/// One iteration for kache: returns the writer's time.
fn kache_once(
    rt: &Runtime,
    before: &[ConfigMap],
    after: &[ConfigMap],
    subscribers: usize,
    delivery: Delivery,
) -> Duration {
    let (store, mut writer) = kache_store::store::<ConfigMap>();
    writer = writer.with_buffer(BUFFER);
    for event in kache_events(before.iter().cloned()) {
        drop(writer.apply(event));
    }
    let events: Vec<_> = after
        .iter()
        .cloned()
        .map(|cm| Ok::<_, Infallible>(kache_watch::Event::Apply(cm)))
        .collect();
    rt.block_on(async move {
        let subscribers: Vec<_> = (0..subscribers)
            .map(|_| store.subscribe_with(delivery))
            .collect();
        let handles: Vec<_> = subscribers
            .iter()
            .map(kache_store::Subscriber::handle)
            .collect();
        let drains: Vec<_> = subscribers
            .into_iter()
            .map(|subscriber| tokio::spawn(subscriber.for_each(|_| ready(()))))
            .collect();
        let timed = tokio::spawn(async move {
            let start = Instant::now();
            drive(stream::iter(events).reflect(writer)).await;
            start.elapsed()
        });
        let elapsed = timed.await.expect("writer task");
        // The writer is gone: every subscriber stream ends.
        for drain in drains {
            drain.await.expect("subscriber task");
        }
        let resyncs: u64 = handles
            .iter()
            .map(kache_store::SubscriberHandle::resyncs)
            .sum();
        RESYNCS.fetch_add(resyncs, Ordering::Relaxed);
        elapsed
    })
}

/// One iteration for kube-runtime: returns the writer's time.
fn kube_once(
    rt: &Runtime,
    before: &[ConfigMap],
    after: &[ConfigMap],
    subscribers: usize,
) -> Duration {
    let (_store, mut writer) = reflector::store_shared::<ConfigMap>(BUFFER);
    for event in kube_runtime_events(before.iter().cloned()) {
        writer.apply_watcher_event(&event);
    }
    let events: Vec<_> = after
        .iter()
        .cloned()
        .map(|cm| Ok::<_, watcher::Error>(watcher::Event::Apply(cm)))
        .collect();
    rt.block_on(async move {
        let drains: Vec<_> = (0..subscribers)
            .map(|_| {
                let handle = writer.subscribe().expect("a shared store");
                tokio::spawn(handle.for_each(|_| ready(())))
            })
            .collect();
        let timed = tokio::spawn(async move {
            let start = Instant::now();
            drive(reflector::reflector(writer, stream::iter(events))).await;
            start.elapsed()
        });
        let elapsed = timed.await.expect("writer task");
        for drain in drains {
            drain.await.expect("subscriber task");
        }
        elapsed
    })
}

fn main() {
    let mut results = Results::new("fanout", "cargo bench -p kache-benches --bench fanout");
    results.setting("objects", OBJECTS);
    results.setting("subscribers", json!(SUBSCRIBERS));
    results.setting("buffer", BUFFER);
    let out = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .configure_from_args();
    let rt = runtime();
    let before = world(OBJECTS, 1, config_map);
    let after = world(OBJECTS, 1_000_000, config_map);

    let mut resyncs = Vec::new();
    // Busy time per event, by (function, subscribers).
    let mut busy = Vec::new();
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(OBJECTS as u64));
    for s in SUBSCRIBERS {
        for function in FUNCTIONS {
            RESYNCS.store(0, Ordering::Relaxed);
            ITERATIONS.store(0, Ordering::Relaxed);
            BUSY.store(0, Ordering::Relaxed);
            group.bench_with_input(BenchmarkId::new(function, s), &s, |b, &s| {
                b.iter_custom(|iters| {
                    ITERATIONS.fetch_add(iters, Ordering::Relaxed);
                    (0..iters)
                        .map(|_| match function {
                            "kache" => kache_once(&rt, &before, &after, s, Delivery::Resync),
                            "kache-backpressure" => {
                                kache_once(&rt, &before, &after, s, Delivery::Backpressure)
                            }
                            _ => kube_once(&rt, &before, &after, s),
                        })
                        .sum()
                });
            });
            busy.push((function, s, busy_per_event()));
            if function.starts_with("kache") {
                #[allow(clippy::cast_precision_loss, reason = "small counts")]
                let per_run = RESYNCS.load(Ordering::Relaxed) as f64
                    / ITERATIONS.load(Ordering::Relaxed).max(1) as f64;
                resyncs.push(format!(
                    "{function}, {s} subscribers: {per_run:.1} subscriber resyncs per run"
                ));
            }
        }
    }
    group.finish();
    c.final_summary();

    let per_event = |function: &str, s: usize| {
        #[allow(clippy::cast_precision_loss, reason = "a small event count")]
        criterion_median(&out, "fanout", function, s).map(|secs| secs / OBJECTS as f64)
    };
    let mut table = Table::new(&[
        "subscribers",
        "kache (resync)",
        "kache (backpressure)",
        "kube-runtime",
        "kache / kube-runtime",
        "kache backpressure / kube-runtime",
    ]);
    for s in SUBSCRIBERS {
        let (Some(k), Some(kb), Some(kr)) = (
            per_event("kache", s),
            per_event("kache-backpressure", s),
            per_event("kube-runtime", s),
        ) else {
            continue;
        };
        let cell = |secs: f64| format!("{} per event", fmt_ns(Duration::from_secs_f64(secs)));
        table.row(vec![
            s.to_string(),
            cell(k),
            cell(kb),
            cell(kr),
            ratio(k, kr),
            ratio(kb, kr),
        ]);
    }
    let title = format!(
        "fan-out: writer time per Apply event ({OBJECTS} events into a {OBJECTS}-object store, \
         subscribers drained by tasks on 2 tokio workers, buffer {BUFFER}); criterion medians"
    );
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("wall", &title, &table);
    record(&mut results, &busy, per_event);
    print_scaling("", per_event);
    print_busy(&busy, &mut results);
    for line in &resyncs {
        println!("{line}");
    }
    results.setting("resyncs", json!(resyncs));
    results.write();
}

/// Records each function's wall and busy time per event, by subscribers, in `results`.
fn record(
    results: &mut Results,
    busy: &[(&str, usize, f64)],
    per_event: impl Fn(&str, usize) -> Option<f64>,
) {
    for s in SUBSCRIBERS {
        for function in FUNCTIONS {
            let busy = busy
                .iter()
                .find(|(f, n, _)| *f == function && *n == s)
                .map(|(_, _, secs)| *secs);
            results.data(json!({
                "function": function,
                "subscribers": s,
                "wall_secs_per_event": per_event(function, s),
                "busy_secs_per_event": busy,
            }));
        }
    }
}

/// The writer's mean busy time per event over the iterations of the current benchmark.
fn busy_per_event() -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "nanosecond sums fit in f64")]
    let busy = BUSY.load(Ordering::Relaxed) as f64
        / 1e9
        / ITERATIONS.load(Ordering::Relaxed).max(1) as f64
        / OBJECTS as f64;
    busy
}

/// Prints the writer's busy time per event: `busy` holds (function, subscribers, seconds).
fn print_busy(busy: &[(&str, usize, f64)], results: &mut Results) {
    let busy_of = |function: &str, s: usize| {
        busy.iter()
            .find(|(f, n, _)| *f == function && *n == s)
            .map(|(_, _, secs)| *secs)
    };
    let mut table = Table::new(&[
        "subscribers",
        "kache (resync)",
        "kache (backpressure)",
        "kube-runtime",
    ]);
    for s in SUBSCRIBERS {
        let cell = |function: &str| {
            busy_of(function, s).map_or_else(String::new, |secs| {
                format!("{} per event", fmt_ns(Duration::from_secs_f64(secs)))
            })
        };
        table.row(vec![
            s.to_string(),
            cell("kache"),
            cell("kache-backpressure"),
            cell("kube-runtime"),
        ]);
    }
    let title = "fan-out: writer busy time per Apply event (inside the writer stream's polls, \
                 waits excluded); means over the iterations";
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("busy", title, &table);
    print_scaling(" in busy time", busy_of);
}

/// Prints, for each function, what 100 subscribers cost the writer against one, by `of`.
fn print_scaling(what: &str, of: impl Fn(&str, usize) -> Option<f64>) {
    for function in FUNCTIONS {
        if let (Some(one), Some(hundred)) = (of(function, 1), of(function, 100)) {
            println!(
                "{function}: 100 subscribers cost the writer {:.2}x one subscriber{what}",
                hundred / one
            );
        }
    }
}
