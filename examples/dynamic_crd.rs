//! Cache objects of a custom resource known only at run time, as `DynamicObject`s: the example
//! registers a CRD, waits for it to be served, creates objects, and caches them.
//!
//! `cargo run -p kache-examples --example dynamic_crd`

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kache_examples::{BoxError, start, wait_for};
use kache_store::{ReflectExt, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (env, ns) = start("dynamic").await?;
    let client = env.client();

    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.kache.dev"},
        "spec": {
            "group": "example.kache.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                }}}
            }]
        }
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    wait_for("the CRD to be established", || async {
        crds.get("widgets.example.kache.dev")
            .await
            .is_ok_and(|crd| {
                crd.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await?;

    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("example.kache.dev", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    for (name, size) in [("small", 1), ("medium", 5), ("large", 9)] {
        let mut widget = DynamicObject::new(name, &resource);
        widget.data = json!({"spec": {"size": size}});
        // A just-established CRD can take a moment to be served for writes.
        wait_for("the widget to be created", || async {
            widgets
                .create(&PostParams::default(), &widget)
                .await
                .is_ok()
        })
        .await?;
    }

    let writer = Writer::new();
    let store = writer.as_reader();
    let events = watcher(widgets, Config::default())
        .default_backoff()
        .reflect(writer);
    let reflector = tokio::spawn(events.for_each(|_| async {}));
    store.wait_synced().await?;

    let mut sizes: Vec<(String, i64)> = store
        .state()
        .iter()
        .map(|w| {
            (
                w.metadata.name.clone().unwrap_or_default(),
                w.data["spec"]["size"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    sizes.sort();
    println!("cached widgets: {sizes:?}");
    assert_eq!(sizes.len(), 3);
    reflector.abort(); // stop watching before the control plane goes away
    Ok(())
}
