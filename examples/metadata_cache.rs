//! A metadata-only cache: names, labels and owners without specs or data, for a fraction of
//! the memory of full objects.
//!
//! `cargo run -p kache-examples --example metadata_cache`

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::{BoxError, start};
use kache_store::{ReflectExt, Writer};
use kache_watch::{Config, PartialObjectMeta, WatchStreamExt, metadata_watcher};
use kube_client::{
    Api,
    api::{ObjectMeta, PostParams},
};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (env, ns) = start("meta").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    for i in 0..50 {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("big-{i}")),
                ..ObjectMeta::default()
            },
            // 64 KiB of data each, which a metadata cache never downloads.
            data: Some([("blob".to_owned(), "x".repeat(64 * 1024))].into()),
            ..ConfigMap::default()
        };
        api.create(&PostParams::default(), &cm).await?;
    }

    let writer: Writer<PartialObjectMeta<ConfigMap>> = Writer::new();
    let store = writer.as_reader();
    let events = metadata_watcher(api, Config::default())
        .default_backoff()
        .reflect(writer);
    let reflector = tokio::spawn(events.for_each(|_| async {}));
    store.wait_synced().await?;

    let meta = store.get(Some(&ns), "big-7").ok_or("big-7 is missing")?;
    println!(
        "{} objects cached as metadata; big-7 has resourceVersion {:?} and no data to hold",
        store.len(),
        meta.metadata.resource_version
    );
    reflector.abort(); // stop watching before the control plane goes away
    Ok(())
}
