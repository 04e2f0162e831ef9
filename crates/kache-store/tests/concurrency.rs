//! Readers racing a writer that relists over and over must always see one whole generation.
//! (How long readers wait during a relist is measured by the benchmarks, not here.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Event, Store, Writer};
use kube_client::api::ObjectMeta;

fn cm(i: usize, generation: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some(format!("ns-{}", i % 10)),
            name: Some(format!("cm-{i}")),
            uid: Some(format!("uid-{i}")),
            resource_version: Some(generation.to_string()),
            labels: Some(BTreeMap::from([("gen".to_owned(), generation.to_string())])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn generation_of(cm: &ConfigMap) -> &str {
    &cm.metadata.labels.as_ref().expect("labels")["gen"]
}

/// Checks one snapshot; returns a description of what is wrong, if anything.
fn inconsistency(store: &Store<ConfigMap>, objects: usize) -> Option<String> {
    let state = store.state();
    if state.len() != objects {
        return Some(format!("saw {} objects, expected {objects}", state.len()));
    }
    let first = generation_of(&state[0]);
    if let Some(other) = state.iter().find(|o| generation_of(o) != first) {
        return Some(format!(
            "mixed generations {first} and {}",
            generation_of(other)
        ));
    }
    let indexed = store
        .by_index("gen", first)
        .expect("index registered")
        .len();
    // The index lookup is a separate read: a relist may land in between, so only a full
    // count for the new generation or zero for the old one is consistent.
    if indexed != objects && indexed != 0 {
        return Some(format!(
            "index for generation {first} holds {indexed} objects"
        ));
    }
    None
}

fn run(objects: usize, relists: usize) {
    let mut writer =
        Writer::new().with_index("gen", |cm: &ConfigMap| vec![generation_of(cm).to_owned()]);
    let store = writer.as_reader();
    writer.apply(Event::Init);
    for i in 0..objects {
        writer.apply(Event::InitApply(cm(i, 0)));
    }
    writer.apply(Event::InitDone);

    let done = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    // One thread takes whole snapshots and checks them; another only does point lookups, as
    // a reconciler would.
    let checker = thread::spawn({
        let (store, done, checks) = (store.clone(), done.clone(), checks.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(problem) = inconsistency(&store, objects) {
                    return Err(problem);
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    });
    let getter = thread::spawn({
        let (store, done) = (store.clone(), done.clone());
        move || {
            let keys: Vec<_> = (0..objects)
                .step_by(objects / 64 + 1)
                .map(|i| (format!("ns-{}", i % 10), format!("cm-{i}")))
                .collect();
            while !done.load(Ordering::Relaxed) {
                for (ns, name) in &keys {
                    if store.get(Some(ns), name).is_none() {
                        return Err(format!("{ns}/{name} missing"));
                    }
                }
            }
            Ok(())
        }
    });

    for generation in 1..=relists {
        writer.apply(Event::Init);
        for i in 0..objects {
            writer.apply(Event::InitApply(cm(i, generation)));
        }
        writer.apply(Event::InitDone);
    }
    // Give the checker a bounded chance to check the last generation too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = checks.load(Ordering::Relaxed);
    while checks.load(Ordering::Relaxed) < before + 2 && Instant::now() < deadline {
        thread::yield_now();
    }
    done.store(true, Ordering::Relaxed);

    checker
        .join()
        .expect("checker panicked")
        .expect("every snapshot is one generation");
    getter
        .join()
        .expect("getter panicked")
        .expect("every object is found");
    assert_eq!(
        generation_of(&store.state()[0]),
        relists.to_string(),
        "the last generation is visible"
    );
}

#[test]
fn readers_see_whole_generations_during_relists() {
    run(2_000, 30);
}
