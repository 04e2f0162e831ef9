//! An operator-style loop that gives each parent exactly one child, however often the parent
//! changes: after creating a child, it waits until its cache of children shows it.
//!
//! Parents and children are `ConfigMap`s (`role=parent`, `role=child`); a child is created
//! with `generateName`, so the API server accepts a second one for the same parent: if the
//! loop acted on a cache that had not yet seen its own create, it would make a duplicate.
//! Pass `--without-wait` to see that happen (a race: it often gives some parents two).
//!
//! `cargo run -p kache-examples --example create_child_once [-- --without-wait]`

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kache_examples::{BoxError, start};
use kache_store::{Event, ReflectExt, ResourceVersion, Store, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

const PARENTS: usize = 8;
/// Changes to each parent after its creation: each one reconciles it again.
const CHANGES: usize = 3;

fn parent(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("role".to_owned(), "parent".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn child_of(parent: &ConfigMap) -> ConfigMap {
    let name = parent.name_any();
    ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-child-")),
            labels: Some(
                [
                    ("role".to_owned(), "child".to_owned()),
                    ("parent".to_owned(), name.clone()),
                ]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name,
                uid: parent.uid().unwrap_or_default(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Gives `parent` a child if the cache shows none. With `wait`, returns only once the cache
/// shows the new child, so that the next reconcile of `parent` (maybe a moment later) finds
/// it. Returns whether it created one.
async fn reconcile(
    parent: &ConfigMap,
    children: &Store<ConfigMap>,
    api: &Api<ConfigMap>,
    wait: bool,
) -> Result<bool, BoxError> {
    if !children.by_index("parent", &parent.name_any())?.is_empty() {
        return Ok(false);
    }
    let child = api
        .create(&PostParams::default(), &child_of(parent))
        .await?;
    if wait {
        // Bounded: if the watch is down, give up on this reconcile rather than hang.
        tokio::time::timeout(Duration::from_secs(10), children.wait_for(&child)).await??;
    }
    Ok(true)
}

/// Starts a watch of the `ConfigMap`s labelled `selector` into `writer`; returns the task.
fn reflect(
    api: &Api<ConfigMap>,
    selector: &str,
    writer: Writer<ConfigMap>,
) -> tokio::task::JoinHandle<()> {
    let events = watcher(api.clone(), Config::default().labels(selector))
        .default_backoff()
        .reflect(writer);
    tokio::spawn(events.for_each(|_| async {}))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let wait = !std::env::args().any(|arg| arg == "--without-wait");
    let (env, ns) = start("children").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);

    // Two caches: parents, which trigger the loop, and children, indexed by parent.
    let parents = Writer::new();
    let mut parent_changes = parents.subscribe();
    let children = Writer::new().with_index("parent", |cm: &ConfigMap| {
        cm.labels().get("parent").cloned().into_iter().collect()
    });
    let child_store = children.as_reader();
    let watches = [
        reflect(&api, "role=parent", parents),
        reflect(&api, "role=child", children),
    ];
    child_store.wait_synced().await?;
    while parent_changes.next().await != Some(Event::InitDone) {}

    // Parents appear and change in quick succession; the loop sees every change.
    let mut latest = BTreeMap::new();
    let names: Vec<String> = (0..PARENTS).map(|i| format!("parent-{i}")).collect();
    for name in &names {
        api.create(&PostParams::default(), &parent(name)).await?;
        for change in 0..CHANGES {
            let patch = Patch::Merge(json!({"data": {"change": change.to_string()}}));
            let changed = api.patch(name, &PatchParams::default(), &patch).await?;
            latest.insert(name.clone(), ResourceVersion::of(&changed)?);
        }
    }

    // The loop: reconcile each changed parent, until each one's last change is reconciled.
    let (mut reconciles, mut created) = (0, 0);
    while !latest.is_empty() {
        let Some(Event::Apply(parent)) = parent_changes.next().await else {
            continue;
        };
        reconciles += 1;
        created += usize::from(reconcile(&parent, &child_store, &api, wait).await?);
        let name = parent.name_any();
        if latest
            .get(&name)
            .is_some_and(|last| ResourceVersion::of(parent.as_ref()).is_ok_and(|v| v >= *last))
        {
            latest.remove(&name);
        }
    }

    // The server's word, not the cache's: how many children each parent got.
    let listed = api
        .list(&ListParams::default().labels("role=child"))
        .await?;
    let mut per_parent: BTreeMap<String, usize> = BTreeMap::new();
    for child in &listed.items {
        *per_parent
            .entry(child.labels()["parent"].clone())
            .or_default() += 1;
    }
    println!(
        "{reconciles} reconciles {} the wait created {created} children: {per_parent:?}",
        if wait { "with" } else { "without" }
    );
    for watch in watches {
        watch.abort(); // stop watching before the control plane goes away
    }
    if wait {
        let once = names.iter().all(|name| per_parent.get(name) == Some(&1));
        if !once {
            return Err(format!("expected one child per parent, got {per_parent:?}").into());
        }
        println!("each parent has exactly one child");
    }
    Ok(())
}
