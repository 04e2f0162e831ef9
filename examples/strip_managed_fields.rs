//! Drop `metadata.managedFields` (often the largest part of an object) before objects are
//! stored, with the writer's transform.
//!
//! `cargo run -p kache-examples --example strip_managed_fields`

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::{BoxError, start};
use kache_store::{ReflectExt, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (env, ns) = start("strip").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        data: Some([("mode".to_owned(), "fast".to_owned())].into()),
        ..ConfigMap::default()
    };
    // Server-side apply records who owns which field in managedFields.
    let created = api
        .patch(
            "settings",
            &PatchParams::apply("kache-example"),
            &Patch::Apply(&cm),
        )
        .await?;
    println!(
        "the server's copy has {} managedFields entries",
        created.managed_fields().len()
    );

    // The transform runs on every object before it is stored and passed downstream.
    let writer = Writer::new().with_transform(|cm: &mut ConfigMap| cm.managed_fields_mut().clear());
    let store = writer.as_reader();
    let events = watcher(api, Config::default())
        .default_backoff()
        .reflect(writer);
    let reflector = tokio::spawn(events.for_each(|_| async {}));
    store.wait_until_ready().await?;

    let cached = store
        .get(Some(&ns), "settings")
        .ok_or("settings is missing")?;
    println!(
        "the cached copy has {} managedFields entries",
        cached.managed_fields().len()
    );
    assert!(!created.managed_fields().is_empty() && cached.managed_fields().is_empty());
    reflector.abort(); // stop watching before the control plane goes away
    Ok(())
}
