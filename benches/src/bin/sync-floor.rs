//! What an initial sync cannot go below on this machine, beside what kache and kube-runtime
//! take, in one process, their rounds interleaved so that the machine's drift touches all three:
//!
//! - a skeleton doing only what every store that shares its objects must: each event moved out
//!   of the list through the stream and consumer that `--bench store`'s `sync-*` groups use,
//!   its object moved into an `Arc`, keyed (kache's inline key), and inserted into a growing
//!   hash table (the hasher both stores use), the `Arc` passed on and dropped. No version, no
//!   generation kept apart from readers, no lock, no subscribers;
//! - kache's `reflect` and kube-runtime's `reflector` on the same events, as `sync-configmap`
//!   times them.
//!
//! Each round clones fresh events (not timed), times one sync, and drops the store (not timed).
//! The table gives the median per event and kache's speed over kube-runtime's and over the
//! skeleton's.
//!
//! Run: `cargo run --release -p kache-benches --bin sync-floor [rounds]` (default 15).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Table, config_map, fmt_ns, kache_events, kache_reflect, kube_runtime_events,
    kube_runtime_reflect, median, world,
};
use kache_store::{Event, ObjectKey};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(15);
    let mut table = Table::new(&[
        "objects",
        "skeleton, per event",
        "kache",
        "kube-runtime",
        "kache's speed over kube-runtime's",
        "the skeleton's over kube-runtime's",
        "kache's time over the skeleton's",
    ]);
    for n in SIZES {
        let objects = world(n, 1, config_map);
        let (mut skeleton, mut kache, mut kube) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            skeleton.push(per_event(
                n,
                skeleton_sync(kache_events(objects.iter().cloned())),
            ));
            let events = kache_events(objects.iter().cloned());
            let start = Instant::now();
            let (store, writer) = kache_store::store::<ConfigMap>();
            kache_reflect(writer, events);
            kache.push(per_event(n, start.elapsed()));
            drop(store);
            let events = kube_runtime_events(objects.iter().cloned());
            let start = Instant::now();
            let (store, writer) = kube_runtime::reflector::store::<ConfigMap>();
            kube_runtime_reflect(writer, events);
            kube.push(per_event(n, start.elapsed()));
            drop(store);
        }
        let (skeleton, kache, kube) =
            (median(&mut skeleton), median(&mut kache), median(&mut kube));
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
    println!("\ninitial sync of ConfigMaps, median of {rounds} rounds, per event\n");
    println!("{}", table.render());
}

/// The skeleton: times one sync of `events` and drops its table after the clock stops.
fn skeleton_sync(events: Vec<Event<ConfigMap>>) -> Duration {
    let start = Instant::now();
    let mut objects: HashMap<ObjectKey, Arc<ConfigMap>, ahash::RandomState> = HashMap::default();
    let synced = futures::stream::iter(events).for_each(|event| {
        if let Event::InitApply(obj) = event {
            let obj = Arc::new(obj);
            objects.insert(ObjectKey::from_object(obj.as_ref()), Arc::clone(&obj));
            drop(black_box(obj));
        }
        futures::future::ready(())
    });
    futures::executor::block_on(synced);
    let elapsed = start.elapsed();
    drop(black_box(objects));
    elapsed
}

fn per_event(n: usize, elapsed: Duration) -> Duration {
    elapsed / u32::try_from(n + 2).unwrap_or(u32::MAX)
}
