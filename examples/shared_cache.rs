//! One watch and one store shared by two consumers: a task that reacts to every change, and a
//! task started later that subscribes from a store handle and first receives the current state.
//!
//! `cargo run -p kache-examples --example shared_cache`

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::{BoxError, start};
use kache_store::{ReflectExt, Writer};
use kache_watch::{Config, Event, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
};

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (env, ns) = start("shared").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    for name in ["alpha", "beta"] {
        api.create(&PostParams::default(), &configmap(name)).await?;
    }

    let writer = Writer::new();
    let store = writer.as_reader();
    // Consumer 1 subscribes before the watch starts: it receives the first sync, then changes.
    let mut early = writer.subscribe();
    let reflector = tokio::spawn(
        watcher(api.clone(), Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {}),
    );

    let first = early.next().await;
    assert_eq!(first, Some(Event::Init));
    let mut listed = Vec::new();
    while let Some(Event::InitApply(cm)) = early.next().await {
        listed.push(cm.name_any());
    }
    println!("consumer 1 got the first sync: {listed:?}");

    // Consumer 2 starts later, from a store handle (as a task spawned anywhere could): it first
    // receives the store's current state, and shares the same Arc'd objects as consumer 1.
    let mut late = store.subscribe();
    let handle = late.handle();
    let mut replayed = Vec::new();
    while let Some(event) = late.next().await {
        match event {
            Event::InitApply(cm) => replayed.push(cm.name_any()),
            Event::InitDone => break,
            _ => {}
        }
    }
    println!(
        "consumer 2 joined late and replayed the current state: {replayed:?} (synced: {})",
        handle.is_synced()
    );

    // A change reaches both.
    api.delete("alpha", &DeleteParams::default()).await?;
    for (name, sub) in [("consumer 1", &mut early), ("consumer 2", &mut late)] {
        match sub.next().await {
            Some(Event::Delete(cm)) => println!("{name} saw the delete of {}", cm.name_any()),
            other => return Err(format!("{name} expected a delete, got {other:?}").into()),
        }
    }
    reflector.abort(); // stop watching before the control plane goes away
    Ok(())
}
