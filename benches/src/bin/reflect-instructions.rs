//! Instruction counts of the store's hot paths, kache beside kube-runtime 5.x, under valgrind's
//! cachegrind: a count does not depend on the load of a shared machine, where timings here vary
//! by 2x. Run with `just bench-instructions`, or:
//!
//! ```text
//! cargo build --profile bench -p kache-benches --bin reflect-instructions
//! target/release/reflect-instructions [objects]      # default 10000; runs valgrind itself
//! ```
//!
//! For each path and library it runs itself twice under cachegrind, once building only the
//! fixtures and once also running the path, and prints the difference per operation, so the
//! fixtures cancel out. What either run leaves behind (the store, unused events) is leaked
//! rather than dropped, so neither run counts its teardown.
//!
//! - `sync`: `Init`, N `InitApply`, `InitDone` into an empty store through each library's
//!   reflector stream (per event, N + 2 events).
//! - `apply`: N `Apply` events, every object changed, through the reflector stream into a
//!   store holding the N objects; freeing the replaced objects is part of the count.
//! - `get`: N lookups by namespace and name, keys in a shuffled order, on a full store.
//! - `deliver`: as `apply`, with one subscriber (kache: `Store::subscribe`; kube-runtime:
//!   `store_shared` and `subscribe`) drained after each event; the table shows what that adds
//!   per event over `apply`.
//!
//! `reflect-instructions run <kache|kube-runtime> <path> <objects> <0|1>` is one such run.

use std::convert::Infallible;
use std::hint::black_box;
use std::process::Command;

use futures::{FutureExt, Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{
    Results, Table, config_map, kache_events, kache_reflect, kube_runtime_events,
    kube_runtime_reflect, shuffled_config_map_keys, world,
};
use kache_store::ReflectExt;
use kube_runtime::reflector::{self, ObjectRef};
use kube_runtime::watcher;

const PATHS: [&str; 4] = ["sync", "apply", "get", "deliver"];
const LIBRARIES: [&str; 2] = ["kache", "kube-runtime"];
/// Subscriber buffer of both libraries in `deliver`: the subscriber is drained after every
/// event, so one change never waits.
const BUFFER: usize = 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("run") {
        let (Some(library), Some(path), Some(objects), Some(run)) = (
            args.get(1),
            args.get(2),
            args.get(3).and_then(|n| n.parse().ok()),
            args.get(4).map(|r| r == "1"),
        ) else {
            usage();
        };
        match (library.as_str(), path.as_str()) {
            ("kache", "sync") => kache_sync(objects, run),
            ("kache", "apply") => kache_apply(objects, run, false),
            ("kache", "deliver") => kache_apply(objects, run, true),
            ("kache", "get") => kache_get(objects, run),
            ("kube-runtime", "sync") => kube_sync(objects, run),
            ("kube-runtime", "apply") => kube_apply(objects, run, false),
            ("kube-runtime", "deliver") => kube_apply(objects, run, true),
            ("kube-runtime", "get") => kube_get(objects, run),
            _ => usage(),
        }
        return;
    }
    let objects = match args.first().map(|n| n.parse::<usize>()) {
        None => 10_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => usage(),
    };
    drive(objects);
}

fn usage() -> ! {
    eprintln!(
        "usage: reflect-instructions [objects]\n       \
         reflect-instructions run <kache|kube-runtime> <sync|apply|get|deliver> <objects> <0|1>"
    );
    std::process::exit(2);
}

/// Runs every path of both libraries under cachegrind and prints the table.
fn drive(objects: usize) {
    // The recipe builds the binary and runs it with its argument, which the command repeats.
    let mut results = Results::new("reflect-instructions", "just bench-instructions");
    results.setting("objects", objects);
    let exe = std::env::current_exe().expect("the path of this binary");
    let count = |library: &str, path: &str, run: bool| -> u64 {
        let output = Command::new("valgrind")
            .args([
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
            ])
            .arg(&exe)
            .args(["run", library, path, &objects.to_string()])
            .arg(if run { "1" } else { "0" })
            .output()
            .expect("valgrind on PATH");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{library} {path}: {stderr}");
        instructions(&stderr).unwrap_or_else(|| panic!("no `I refs` in: {stderr}"))
    };
    // Instructions per operation of each (library, path).
    let mut per_op = std::collections::HashMap::new();
    for path in PATHS {
        for library in LIBRARIES {
            let total = count(library, path, true).saturating_sub(count(library, path, false));
            let ops = if path == "sync" { objects + 2 } else { objects };
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let per = total as f64 / ops as f64;
            eprintln!("{library} {path}: {total} instructions, {per:.0} per operation");
            per_op.insert((library, path), per);
        }
    }
    let mut table = Table::new(&[
        "path",
        "kache instructions",
        "kube-runtime instructions",
        "kache / kube-runtime",
    ]);
    for path in PATHS {
        let (kache, kube) = (per_op[&("kache", path)], per_op[&("kube-runtime", path)]);
        let (label, kache, kube) = match path {
            "sync" => ("initial sync, per event", kache, kube),
            "apply" => ("`Apply` into a full store, per event", kache, kube),
            "get" => ("`get`, per call", kache, kube),
            _ => (
                "one subscriber's delivery, per event (over `apply`)",
                kache - per_op[&("kache", "apply")],
                kube - per_op[&("kube-runtime", "apply")],
            ),
        };
        table.row(vec![
            label.to_owned(),
            format!("{kache:.0}"),
            format!("{kube:.0}"),
            format!("{:.2}x", kache / kube),
        ]);
        results.data(serde_json::json!({
            "path": path,
            "objects": objects,
            "kache_instructions": kache,
            "kube_runtime_instructions": kube,
        }));
    }
    let title = format!(
        "instructions (cachegrind), {objects} ConfigMaps, kache vs kube-runtime 5.x: one run of \
         each path minus its fixtures"
    );
    println!("\n{title}\n");
    println!("{}", table.render());
    results.table("instructions", &title, &table);
    results.write();
}

/// The total from cachegrind's summary line `==pid== I   refs:      1,234,567`.
fn instructions(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|line| {
        let text = line.rsplit("==").next().unwrap_or_default().trim_start();
        text.starts_with("I ") && text.contains("refs:")
    })?;
    let digits: String = line
        .rsplit(':')
        .next()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn kache_sync(objects: usize, run: bool) {
    let events = kache_events(world(objects, 1, config_map));
    if !run {
        std::mem::forget(events);
        return;
    }
    let (store, writer) = kache_store::store::<ConfigMap>();
    kache_reflect(writer, events);
    std::mem::forget(store);
}

fn kube_sync(objects: usize, run: bool) {
    let events = kube_runtime_events(world(objects, 1, config_map));
    if !run {
        std::mem::forget(events);
        return;
    }
    let (store, writer) = reflector::store::<ConfigMap>();
    kube_runtime_reflect(writer, events);
    std::mem::forget(store);
}

fn kache_filled(
    objects: usize,
) -> (
    kache_store::Store<ConfigMap>,
    kache_store::Writer<ConfigMap>,
) {
    let (store, mut writer) = kache_store::store::<ConfigMap>();
    for event in kache_events(world(objects, 1, config_map)) {
        drop(writer.apply(event));
    }
    (store, writer)
}

fn kache_apply(objects: usize, run: bool, with_subscriber: bool) {
    let (store, writer) = kache_filled(objects);
    let events: Vec<_> = world(objects, 1_000_000, config_map)
        .into_iter()
        .map(|cm| Ok::<_, Infallible>(kache_watch::Event::Apply(cm)))
        .collect();
    let mut subscriber = with_subscriber.then(|| {
        let mut subscriber = store.subscribe();
        // Its first snapshot of the store, before the counted part.
        drain(&mut subscriber);
        subscriber
    });
    if !run {
        std::mem::forget((store, writer, events, subscriber));
        return;
    }
    let mut reflected = stream::iter(events).reflect(writer);
    reflect_and_deliver(&mut reflected, subscriber.as_mut());
    std::mem::forget((store, reflected, subscriber));
}

fn kube_apply(objects: usize, run: bool, with_subscriber: bool) {
    let (store, mut writer) = if with_subscriber {
        reflector::store_shared::<ConfigMap>(BUFFER)
    } else {
        reflector::store::<ConfigMap>()
    };
    for event in kube_runtime_events(world(objects, 1, config_map)) {
        writer.apply_watcher_event(&event);
    }
    let events: Vec<_> = world(objects, 1_000_000, config_map)
        .into_iter()
        .map(|cm| Ok::<_, watcher::Error>(watcher::Event::Apply(cm)))
        .collect();
    let mut subscriber = writer.subscribe().map(Box::pin);
    if !run {
        std::mem::forget((store, writer, events, subscriber));
        return;
    }
    let mut reflected = Box::pin(reflector::reflector(writer, stream::iter(events)));
    reflect_and_deliver(&mut reflected, subscriber.as_mut());
    std::mem::forget((store, reflected, subscriber));
}

/// Polls `reflected` one event at a time, draining `subscriber` (if any) after each.
fn reflect_and_deliver<R, S>(reflected: &mut R, mut subscriber: Option<&mut S>)
where
    R: Stream + Unpin,
    S: Stream + Unpin,
{
    while let Some(Some(event)) = reflected.next().now_or_never() {
        drop(black_box(event));
        if let Some(subscriber) = subscriber.as_deref_mut() {
            drain(subscriber);
        }
    }
}

/// Takes every event `stream` has ready.
fn drain<S: Stream + Unpin>(stream: &mut S) {
    while let Some(Some(event)) = stream.next().now_or_never() {
        drop(black_box(event));
    }
}

fn kache_get(objects: usize, run: bool) {
    let (store, writer) = kache_filled(objects);
    let keys = shuffled_config_map_keys(objects);
    if run {
        for (namespace, name) in &keys {
            black_box(store.get(Some(namespace), name));
        }
    }
    std::mem::forget((store, writer, keys));
}

fn kube_get(objects: usize, run: bool) {
    let (store, mut writer) = reflector::store::<ConfigMap>();
    for event in kube_runtime_events(world(objects, 1, config_map)) {
        writer.apply_watcher_event(&event);
    }
    let keys: Vec<ObjectRef<ConfigMap>> = shuffled_config_map_keys(objects)
        .iter()
        .map(|(namespace, name)| ObjectRef::new(name).within(namespace))
        .collect();
    if run {
        for key in &keys {
            black_box(store.get(key));
        }
    }
    std::mem::forget((store, writer, keys));
}
