//! A Pod cache with an index by owner: find a workload's pods without scanning the store.
//!
//! `cargo run -p kache-examples --example pod_owner_index`

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kache_examples::{BoxError, start, wait_for};
use kache_store::{ReflectExt, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
};

fn pod(name: &str, owner: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: owner.into(),
                uid: format!("uid-{owner}"),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/app:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (env, ns) = start("pods").await?;
    let pods: Api<Pod> = Api::namespaced(env.client(), &ns);
    for owner in ["web", "api", "worker"] {
        for i in 0..4 {
            pods.create(&PostParams::default(), &pod(&format!("{owner}-{i}"), owner))
                .await?;
        }
    }

    // The index maps each pod to the names of its owners; lookups by owner need no scan.
    let writer = Writer::new().with_index("owner", |pod: &Pod| {
        pod.owner_references()
            .iter()
            .map(|o| o.name.clone())
            .collect()
    });
    let store = writer.as_reader();
    let events = watcher(pods.clone(), Config::default())
        .default_backoff()
        .reflect(writer);
    let reflector = tokio::spawn(events.for_each(|_| async {}));
    store.wait_synced().await?;

    for owner in ["web", "api", "worker"] {
        let mut names: Vec<String> = store
            .by_index("owner", owner)?
            .iter()
            .map(|p| p.name_any())
            .collect();
        names.sort();
        println!("pods owned by {owner}: {names:?}");
    }

    // The index follows changes: delete one of web's pods and look again.
    pods.delete("web-0", &DeleteParams::default()).await?;
    wait_for("the index to drop web-0", || async {
        store.by_index("owner", "web").is_ok_and(|p| p.len() == 3)
    })
    .await?;
    println!(
        "after deleting web-0, web owns {} pods",
        store.by_index("owner", "web")?.len()
    );
    reflector.abort(); // stop watching before the control plane goes away
    Ok(())
}
