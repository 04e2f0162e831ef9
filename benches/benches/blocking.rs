//! Blocking waits of a reader during a relist, kache side by side with kube-runtime's reflector
//! store, on the same 100,000 `ConfigMap`s in the same run. Prints a Markdown table.
//!
//! A reader thread calls `get` in a loop over precomputed keys (so it allocates nothing and
//! makes no system call) while the bench's thread applies a relist (`Init`, 100,000
//! `InitApply`, `InitDone`) to the same store. Counted: the reader thread's voluntary context
//! switches (`voluntary_ctxt_switches` in `/proc/thread-self/status`, read before and after the
//! relist) — each one is a time the reader went to sleep because it could not go on, here a
//! wait for the store's lock. Involuntary switches (the scheduler preempting a thread that could
//! run) are shown too: they are this machine's load, not the library. Unlike a stall measured in
//! wall time, the voluntary count does not move with the machine's load.
//!
//! As a control, the same reader reads a second store that nobody writes while the same relist
//! goes to the first: what the machine alone costs the reader.
//!
//! Run: `cargo bench -p kache-benches --bench blocking`. `KACHE_BENCH_OBJECTS` sets the size
//! (default 100000), `KACHE_BENCH_RUNS` the relists per library and world (default 3).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    BoxError, Results, Table, config_map, config_map_key, env_usize, kache_events,
    kube_runtime_events, world,
};
use kube_runtime::reflector::{self, ObjectRef};

/// The reader thread's context switches so far: (voluntary, involuntary).
fn thread_switches() -> Result<(u64, u64), BoxError> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let field = |name: &str| -> Result<u64, BoxError> {
        let value = status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| format!("no {name} in /proc/thread-self/status"))?;
        Ok(value.trim().parse()?)
    };
    Ok((
        field("voluntary_ctxt_switches")?,
        field("nonvoluntary_ctxt_switches")?,
    ))
}

/// What the reader saw while the relist ran.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    voluntary: u64,
    involuntary: u64,
    reads: u64,
}

/// Runs `read(i)` for every key in turn, on its own thread, while `relist` runs on this one, and
/// returns the reader's context switches during the relist.
fn while_relisting(
    keys: usize,
    read: impl Fn(usize) -> bool + Send + 'static,
    relist: impl FnOnce(),
) -> Result<Seen, BoxError> {
    let ready = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (ready, done) = (Arc::clone(&ready), Arc::clone(&done));
        thread::spawn(move || -> Result<Seen, BoxError> {
            // One pass first, so that nothing the loop touches faults in during the relist.
            for i in 0..keys {
                assert!(read(i), "key {i} missing before the relist");
            }
            let (voluntary, involuntary) = thread_switches()?;
            ready.store(true, Ordering::Release);
            let mut gets = 0_u64;
            let mut i = 0;
            while !done.load(Ordering::Acquire) {
                black_box(read(i));
                i = if i + 1 == keys { 0 } else { i + 1 };
                gets += 1;
            }
            let (v, inv) = thread_switches()?;
            Ok(Seen {
                voluntary: v - voluntary,
                involuntary: inv - involuntary,
                reads: gets,
            })
        })
    };
    // Spinning, not blocking: this thread's own switches do not matter, but a wait here would
    // let the reader run its window alone.
    while !ready.load(Ordering::Acquire) {
        if reader.is_finished() {
            break;
        }
        thread::yield_now();
    }
    relist();
    done.store(true, Ordering::Release);
    reader.join().map_err(|_| "the reader thread panicked")?
}

fn keys(n: usize) -> Vec<(String, String)> {
    (0..n).map(config_map_key).collect()
}

/// One relist of `fresh` into a kache store holding `objects`; `control` reads another store.
fn kache(objects: &[ConfigMap], fresh: &[ConfigMap], control: bool) -> Result<Seen, BoxError> {
    let filled = || {
        let (store, mut writer) = kache_store::store::<ConfigMap>();
        for event in kache_events(objects.iter().cloned()) {
            drop(writer.apply(event));
        }
        (store, writer)
    };
    let (store, mut writer) = filled();
    let (idle, _idle_writer) = filled();
    let read_store = if control { idle } else { store.clone() };
    let keys = Arc::new(keys(objects.len()));
    let events = kache_events(fresh.iter().cloned());
    let seen = while_relisting(
        keys.len(),
        move |i| {
            let (ns, name) = &keys[i];
            read_store.get(Some(ns), name).is_some()
        },
        || {
            for event in events {
                drop(writer.apply(event));
            }
        },
    )?;
    assert_eq!(store.len(), objects.len());
    Ok(seen)
}

/// The same with kube-runtime's reflector store.
fn kube_runtime(
    objects: &[ConfigMap],
    fresh: &[ConfigMap],
    control: bool,
) -> Result<Seen, BoxError> {
    let filled = || {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        for event in kube_runtime_events(objects.iter().cloned()) {
            writer.apply_watcher_event(&event);
        }
        (store, writer)
    };
    let (store, mut writer) = filled();
    let (idle, _idle_writer) = filled();
    let read_store = if control { idle } else { store.clone() };
    let keys: Arc<Vec<ObjectRef<ConfigMap>>> = Arc::new(
        keys(objects.len())
            .iter()
            .map(|(ns, name)| ObjectRef::new(name).within(ns))
            .collect(),
    );
    let events = kube_runtime_events(fresh.iter().cloned());
    let seen = while_relisting(
        keys.len(),
        move |i| read_store.get(&keys[i]).is_some(),
        || {
            // What its reflector does: apply by reference, then the event is dropped.
            for event in events {
                writer.apply_watcher_event(&event);
            }
        },
    )?;
    assert_eq!(store.len(), objects.len());
    Ok(seen)
}

fn cell(runs: &[Seen], what: impl Fn(&Seen) -> u64) -> String {
    runs.iter()
        .map(|seen| what(seen).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; no other argument is supported.
    let n = env_usize("KACHE_BENCH_OBJECTS", 100_000);
    let runs = env_usize("KACHE_BENCH_RUNS", 3).max(1);
    let objects = world(n, 1, config_map);
    let mut results = Results::new("blocking", "cargo bench -p kache-benches --bench blocking");
    results.setting("objects", n);
    results.setting("runs", runs);
    let mut table = Table::new(&[
        "relisted objects",
        "store read",
        "kache: voluntary switches per run",
        "kube-runtime: voluntary switches per run",
        "involuntary (kache; kube-runtime)",
        "reads during the relist, millions (kache; kube-runtime)",
    ]);
    for changed in [false, true] {
        // Unchanged: the same uids and resourceVersions (the usual relist); changed: new ones.
        let fresh = if changed {
            world(n, 10_000_000, config_map)
        } else {
            objects.clone()
        };
        for control in [false, true] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            // Alternating, so that both libraries see the same drift of the machine.
            for _ in 0..runs {
                ours.push(kache(&objects, &fresh, control)?);
                theirs.push(kube_runtime(&objects, &fresh, control)?);
            }
            let total =
                |runs: &[Seen], what: fn(&Seen) -> u64| -> u64 { runs.iter().map(what).sum() };
            results.data(serde_json::json!({
                "changed": changed,
                "control": control,
                "runs": runs,
                "kache_voluntary": total(&ours, |s| s.voluntary),
                "kube_runtime_voluntary": total(&theirs, |s| s.voluntary),
                "kache_reads": total(&ours, |s| s.reads),
                "kube_runtime_reads": total(&theirs, |s| s.reads),
            }));
            #[expect(
                clippy::cast_precision_loss,
                reason = "a count of reads shown in millions to one decimal"
            )]
            let millions = |runs: &[Seen]| {
                runs.iter()
                    .map(|s| format!("{:.1}", s.reads as f64 / 1e6))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            table.row(vec![
                if changed {
                    "all changed"
                } else {
                    "all unchanged"
                }
                .to_owned(),
                if control {
                    "control: another store, not relisted"
                } else {
                    "the store being relisted"
                }
                .to_owned(),
                cell(&ours, |s| s.voluntary),
                cell(&theirs, |s| s.voluntary),
                format!(
                    "{}; {}",
                    cell(&ours, |s| s.involuntary),
                    cell(&theirs, |s| s.involuntary)
                ),
                format!("{}; {}", millions(&ours), millions(&theirs)),
            ]);
        }
    }
    let title = format!(
        "blocking waits of a reader thread (get in a loop, precomputed keys) during a relist \
         of {n} ConfigMaps into a full store; {runs} runs per library, alternating"
    );
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("waits", &title, &table);
    results.write();
    Ok(())
}
