//! `metadata.managedFields` (often the largest part of an object) is left out by the watcher
//! by default, skipped while decoding; `Config::keep_managed_fields()` keeps it for a
//! controller that reads it. A writer's transform can drop other fields the same way, after
//! decoding.
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

    for config in [Config::default(), Config::default().keep_managed_fields()] {
        // The transform runs on every object before it is stored and passed downstream.
        let writer = Writer::new().with_transform(|cm: &mut ConfigMap| {
            cm.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        });
        let store = writer.as_reader();
        let kept = config.keep_managed_fields;
        let events = watcher(api.clone(), config)
            .default_backoff()
            .reflect(writer);
        let reflector = tokio::spawn(events.for_each(|_| async {}));
        store.wait_synced().await?;

        let cached = store
            .get(Some(&ns), "settings")
            .ok_or("settings is missing")?;
        println!(
            "keep_managed_fields {kept}: the cached copy has {} managedFields entries",
            cached.managed_fields().len()
        );
        assert_eq!(cached.managed_fields().is_empty(), !kept);
        reflector.abort(); // stop watching before the control plane goes away
    }
    assert!(!created.managed_fields().is_empty());
    Ok(())
}
