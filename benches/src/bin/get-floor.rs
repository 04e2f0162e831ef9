//! What a `get` at 100,000 objects cannot go below on this machine, beside what kache and
//! kube-runtime take, in one process:
//!
//! - memory latency: a dependent walk over a random cycle of cache lines, for working sets
//!   from 1 MiB to 256 MiB (each step's address comes from the previous load, as a lookup's
//!   does), showing where the caches this VM really gives end and what a miss to memory costs;
//! - the count: a dependent chain of `Arc::clone`s over the stored objects themselves, in the
//!   benchmark's random order, each clone chosen by the previous one's count. Any `get` that
//!   returns an `Arc` makes this one read-modify-write on the object's first line; here it is
//!   alone, with no table and no hashing;
//! - single calls, timed one by one as `--bench latency` times them: the caller's key alone
//!   (read from the benchmark's key list and hashed), the count alone (`Arc::clone` of the object
//!   that key names, from a list of the stored `Arc`s), and a whole `get`;
//! - `get` in a loop, both libraries, the keys and order of `--bench store`;
//! - the least a `get` can do, in the same loop: the count alone (independent `Arc::clone`s of
//!   the stored objects, in key order), then a skeleton that does less than any correct
//!   lookup: the read lock both stores take, the caller's key read and hashed (every byte, one
//!   multiply a word), one `Arc` taken from a table at the hash's slot, with no probing and no
//!   key comparison. Its table holds pointers alone (1 MiB, in L2), or 48-byte entries, the
//!   size of kache's (a short key inline and the `Arc`: 6 MiB at 100,000 objects);
//! - where the caller's keys lie: the benchmark's key list is built after both stores are
//!   filled, so its strings take memory the sync's events freed, scattered over the heap (the
//!   mean distance between consecutive names is printed). The skeleton and both libraries' `get`
//!   are timed again with a copy of the list, whose strings lie one after the other.
//!
//! Run: `cargo run --release -p kache-benches --bin get-floor [objects]` (default 100000).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Results, Rng, Table, clock_overhead, config_map, fmt_ns, kache_events, kube_runtime_events,
    median, shuffled_config_map_keys, world,
};
use kube_runtime::reflector::{self, ObjectRef};

/// Steps of each timed walk or loop.
const STEPS: usize = 2_000_000;
/// Single calls timed, per measurement.
const SINGLE_CALLS: usize = 300_000;

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let mut results = Results::new(
        "get-floor",
        "cargo run --release -p kache-benches --bin get-floor",
    );
    results.setting("objects", n);

    let mut table = Table::new(&["working set", "dependent load, per step"]);
    for mib in [1, 4, 8, 16, 32, 64, 256] {
        table.row(vec![format!("{mib} MiB"), fmt_ns(chase(mib))]);
    }
    let title = "memory latency (a dependent walk over one cache line in each step)";
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("memory-latency", title, &table);

    let objects = world(n, 1, config_map);
    let (kache, mut writer) = kache_store::store::<ConfigMap>();
    for event in kache_events(objects.iter().cloned()) {
        writer.apply(event);
    }
    let (kube, mut kube_writer) = reflector::store::<ConfigMap>();
    for event in kube_runtime_events(objects) {
        kube_writer.apply_watcher_event(&event);
    }
    let names = shuffled_config_map_keys(n);
    let refs: Vec<ObjectRef<ConfigMap>> = names
        .iter()
        .map(|(ns, name)| ObjectRef::new(name).within(ns))
        .collect();
    let kache_get = |i: usize| {
        let (ns, name) = &names[i];
        kache.get(Some(ns), name)
    };
    let kube_get = |i: usize| kube.get(&refs[i]);
    let found = |arc: Option<Arc<ConfigMap>>| arc.expect("every key is in the store");
    let kache_arcs: Vec<_> = (0..n).map(|i| found(kache_get(i))).collect();
    let kube_arcs: Vec<_> = (0..n).map(|i| found(kube_get(i))).collect();
    let hasher = ahash::RandomState::new();

    // The same keys, copied now into fresh memory: each string follows the previous one.
    let packed: Vec<(String, String)> = names.clone();
    let packed_refs: Vec<ObjectRef<ConfigMap>> = packed
        .iter()
        .map(|(ns, name)| ObjectRef::new(name).within(ns))
        .collect();
    print_least(&kache_arcs, &names, &packed, &mut results);

    let mut table = Table::new(&["what is timed", "kache", "kube-runtime"]);
    for round in 1..=3 {
        table.row(vec![
            format!("round {round}: dependent `Arc::clone`s of stored objects, per clone"),
            fmt_ns(clone_chain(&kache_arcs)),
            fmt_ns(clone_chain(&kube_arcs)),
        ]);
        table.row(vec![
            format!("round {round}: `get` in a loop, per call"),
            fmt_ns(per_call(n, kache_get)),
            fmt_ns(per_call(n, kube_get)),
        ]);
        table.row(vec![
            format!("round {round}: `get` in a loop, keys copied, per call"),
            fmt_ns(per_call(n, |i| {
                let (ns, name) = &packed[i];
                kache.get(Some(ns), name)
            })),
            fmt_ns(per_call(n, |i| kube.get(&packed_refs[i]))),
        ]);
        table.row(vec![
            format!("round {round}: single calls, p50: the caller's key alone (read and hashed)"),
            fmt_ns(single_p50(n, |i| {
                let (ns, name) = &names[i];
                hasher.hash_one((ns, name))
            })),
            fmt_ns(single_p50(n, |i| hasher.hash_one(&refs[i]))),
        ]);
        table.row(vec![
            format!(
                "round {round}: single calls, p50: the count alone (`Arc::clone` of the object)"
            ),
            fmt_ns(single_p50(n, |i| Arc::clone(&kache_arcs[i]))),
            fmt_ns(single_p50(n, |i| Arc::clone(&kube_arcs[i]))),
        ]);
        table.row(vec![
            format!("round {round}: single calls, p50: `get`"),
            fmt_ns(single_p50(n, kache_get)),
            fmt_ns(single_p50(n, kube_get)),
        ]);
    }
    let title = format!(
        "{n} ConfigMaps, keys in random order (those of `--bench store` and `--bench latency`)"
    );
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("get", &title, &table);
    results.write();
}

/// Prints the time per call of the least a `get` can do (see [`Skeleton`]), in a loop over
/// `keys` and over `packed`, the same keys copied into fresh memory.
fn print_least(
    arcs: &[Arc<ConfigMap>],
    keys: &[(String, String)],
    packed: &[(String, String)],
    results: &mut Results,
) {
    let n = keys.len();
    let skeleton = Skeleton::new(arcs);
    println!(
        "\nmean distance between consecutive names in the key list: {} bytes; in its copy: {} bytes",
        mean_gap(keys),
        mean_gap(packed)
    );
    let mut floor = Table::new(&[
        "round",
        "the count alone",
        "skeleton, 8-byte slots",
        "skeleton, 48-byte slots",
        "skeleton, 8-byte slots, no lock",
        "skeleton, 8-byte slots, keys copied",
    ]);
    for round in 1..=3 {
        floor.row(vec![
            round.to_string(),
            fmt_ns(per_call(n, |i| Arc::clone(&arcs[i]))),
            fmt_ns(per_call(n, |i| skeleton.get(&keys[i]))),
            fmt_ns(per_call(n, |i| skeleton.get_wide(&keys[i]))),
            fmt_ns(per_call(n, |i| skeleton.get_unlocked(&keys[i]))),
            fmt_ns(per_call(n, |i| skeleton.get(&packed[i]))),
        ]);
    }
    let title = format!(
        "the least a `get` can do, in a loop over {n} objects (keys of `--bench store`), per call"
    );
    println!("\n{title}\n");
    println!("{}", floor.render());
    results.table("floor", &title, &floor);
}

/// Less than any correct lookup: a read lock, the caller's key hashed, one slot read at the
/// hash, no probing and no comparison. Slots hold the stored objects in a shuffled order, so a
/// slot names a random object, as a lookup's hit does.
struct Skeleton {
    lock: parking_lot::RwLock<()>,
    /// Pointers alone: 8 bytes a slot.
    slots: Vec<Arc<ConfigMap>>,
    /// 40 bytes standing for a short inline key, then the pointer: 48 bytes a slot, as kache's.
    wide: Vec<([u64; 5], Arc<ConfigMap>)>,
    seed: u64,
}

impl Skeleton {
    fn new(objects: &[Arc<ConfigMap>]) -> Self {
        // hashbrown's size for this many objects: a power of two at most 7/8 full.
        let len = (objects.len() * 8 / 7 + 1).next_power_of_two();
        let mut slots: Vec<_> = objects.iter().cycle().take(len).cloned().collect();
        Rng::new(21).shuffle(&mut slots);
        let wide = slots.iter().map(|arc| ([0; 5], Arc::clone(arc))).collect();
        Self {
            lock: parking_lot::RwLock::new(()),
            slots,
            wide,
            seed: ahash::RandomState::new().hash_one(0_u8),
        }
    }

    /// A slot's index for a key: every byte of both strings, one multiply a word.
    fn slot(&self, (namespace, name): &(String, String), len: usize) -> usize {
        let hash = fold(fold(self.seed, namespace.as_bytes()), name.as_bytes());
        usize::try_from(hash).unwrap_or_default() & (len - 1)
    }

    fn get(&self, key: &(String, String)) -> Arc<ConfigMap> {
        let _read = self.lock.read();
        Arc::clone(&self.slots[self.slot(key, self.slots.len())])
    }

    fn get_wide(&self, key: &(String, String)) -> Arc<ConfigMap> {
        let _read = self.lock.read();
        Arc::clone(&self.wide[self.slot(key, self.wide.len())].1)
    }

    fn get_unlocked(&self, key: &(String, String)) -> Arc<ConfigMap> {
        Arc::clone(&self.slots[self.slot(key, self.slots.len())])
    }
}

/// The mean distance in memory between the names of consecutive keys, each distance counted
/// up to 1 MiB.
fn mean_gap(keys: &[(String, String)]) -> usize {
    let total: usize = keys
        .windows(2)
        .map(|pair| {
            let (a, b) = (pair[0].1.as_ptr() as usize, pair[1].1.as_ptr() as usize);
            a.abs_diff(b).min(1 << 20)
        })
        .sum();
    total / keys.len().max(1)
}

/// `hash` with `bytes` folded in: whole words, the last one overlapping, one 64-by-64-bit
/// multiply (folded to 64 bits) a word, as ahash's fallback hashes.
fn fold(mut hash: u64, bytes: &[u8]) -> u64 {
    const MULTIPLE: u128 = 0x5851_f42d_4c95_7f2d;
    let mut mix = |word: u64| {
        let product = u128::from(hash ^ word) * MULTIPLE;
        #[expect(clippy::cast_possible_truncation, reason = "the halves of the product")]
        let folded = (product as u64) ^ ((product >> 64) as u64);
        hash = folded;
    };
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        mix(u64::from_le_bytes(*word));
    }
    if !rest.is_empty() {
        let mut last = [0; 8];
        let start = bytes.len().saturating_sub(8);
        let tail = &bytes[start..];
        last[..tail.len()].copy_from_slice(tail);
        mix(u64::from_le_bytes(last) ^ (bytes.len() as u64) << 56);
    }
    hash
}

/// Time per step of a dependent walk over a random cycle through `mib` MiB, one 64-byte line
/// per step.
fn chase(mib: usize) -> Duration {
    let lines = mib * 1024 * 1024 / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    Rng::new(3).shuffle(&mut order);
    // Each line holds the index of the next line of the cycle in its first word.
    let mut next = vec![[0usize; 8]; lines];
    for pair in order.windows(2) {
        next[pair[0]][0] = pair[1];
    }
    next[order[lines - 1]][0] = order[0];
    let mut at = order[0];
    let start = Instant::now();
    for _ in 0..STEPS {
        at = next[at][0];
    }
    black_box(at);
    per_step(start)
}

/// Time per `Arc::clone` when each clone's index depends on the previous clone's
/// count: the clones cannot overlap, as the misses of one lookup cannot.
fn clone_chain(arcs: &[Arc<ConfigMap>]) -> Duration {
    let mut i = 0;
    let start = Instant::now();
    for _ in 0..STEPS {
        let clone = Arc::clone(&arcs[i]);
        // The count is small, so the shift adds 0, but only once the count is read.
        i = (i + 1 + (Arc::strong_count(&clone) >> 40)) % arcs.len();
    }
    per_step(start)
}

/// Time per call of `f` over indexes `0..n` in order, in a loop.
fn per_call<R>(n: usize, f: impl Fn(usize) -> R) -> Duration {
    let mut i = 0;
    let start = Instant::now();
    for _ in 0..STEPS {
        black_box(f(i));
        i = (i + 1) % n;
    }
    per_step(start)
}

/// The median of single calls of `f` at random indexes, each timed on its own, as `--bench
/// latency` times them, less the median cost of reading the clock.
fn single_p50<R>(n: usize, f: impl Fn(usize) -> R) -> Duration {
    let mut rng = Rng::new(11);
    let mut times: Vec<Duration> = (0..SINGLE_CALLS)
        .map(|_| {
            let i = rng.below(n);
            let start = Instant::now();
            black_box(f(i));
            start.elapsed()
        })
        .collect();
    median(&mut times).saturating_sub(clock_overhead())
}

/// The time since `start`, per step of a run of [`STEPS`].
fn per_step(start: Instant) -> Duration {
    start.elapsed() / u32::try_from(STEPS).unwrap_or(u32::MAX)
}
