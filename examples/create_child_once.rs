//! An operator on kache-controller that gives each parent exactly one child, however often the
//! parent changes.
//!
//! Parents and children are `ConfigMap`s (`role=parent`, `role=child`); a child is created
//! with `generateName`, so the API server accepts a second one for the same parent: a reconcile
//! that acted on a cache that had not yet seen its own create would make a duplicate. The
//! controller's read-your-writes fences hold a parent's next reconcile until the children's
//! cache shows what the last one wrote. Pass `--without-fences` to see duplicates (a race: it
//! often gives some parents two).
//!
//! `cargo run -p kache-examples --example create_child_once [-- --without-fences]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kache_controller::{Action, Config as ControllerConfig, Controller, Recorded, Retry};
use kache_examples::{BoxError, start};
use kache_store::{ReflectExt, Store, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

const PARENTS: usize = 20;
/// Changes to each parent right after its creation: each one reconciles it again.
const CHANGES: usize = 3;

/// What every reconcile shares: the children's cache, and an `Api` whose writes are recorded
/// for the fences.
struct Context {
    children: Store<ConfigMap>,
    api: Recorded<ConfigMap>,
}

fn child_of(parent: &ConfigMap) -> ConfigMap {
    let name = parent.name_any();
    ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-child-")),
            labels: Some([("role".to_owned(), "child".to_owned())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name,
                uid: parent.uid().unwrap_or_default(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Gives `parent` a child if the cache shows none.
async fn reconcile(parent: Arc<ConfigMap>, ctx: Arc<Context>) -> kube_client::Result<Action> {
    let mine = |child: &ConfigMap| {
        child
            .owner_references()
            .iter()
            .any(|o| o.uid == parent.uid().unwrap_or_default())
    };
    if ctx.children.find(mine).is_none() {
        ctx.api
            .create(&PostParams::default(), &child_of(&parent))
            .await?;
    }
    Ok(Action::await_change())
}

fn error_policy(
    _: Arc<ConfigMap>,
    _: &kube_client::Error,
    _: Arc<Context>,
    retry: Retry,
) -> Action {
    Action::requeue(retry.backoff)
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
    let fences = !std::env::args().any(|arg| arg == "--without-fences");
    let (env, ns) = start("children").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);

    // Two caches, one watch each: parents, which the controller reconciles, and children.
    let (parents, children) = (Writer::new(), Writer::new());
    let (parent_store, child_store) = (parents.as_reader(), children.as_reader());
    let watches = [
        reflect(&api, "role=parent", parents),
        reflect(&api, "role=child", children),
    ];
    let ctx = Arc::new(Context {
        children: child_store.clone(),
        api: Recorded::new(api.clone()),
    });
    let config = ControllerConfig::default()
        .fences(fences, Duration::from_secs(10))
        .name("children");
    let controller =
        Controller::new(parent_store, config)
            .owns(child_store)
            .run(reconcile, error_policy, ctx);
    let operator = tokio::spawn(controller.for_each(|_| async {}));

    // Parents appear and change in quick succession.
    let names: Vec<String> = (0..PARENTS).map(|i| format!("parent-{i}")).collect();
    for name in &names {
        let mut parent = ConfigMap::default();
        parent.metadata.name = Some(name.clone());
        parent.metadata.labels = Some([("role".to_owned(), "parent".to_owned())].into());
        api.create(&PostParams::default(), &parent).await?;
        for change in 0..CHANGES {
            let patch = Patch::Merge(json!({"data": {"change": change.to_string()}}));
            api.patch(name, &PatchParams::default(), &patch).await?;
        }
    }

    // The server's word, not the cache's: how many children each parent got, once each has one
    // and nothing has changed for a second.
    let count = || async {
        let listed = api
            .list(&ListParams::default().labels("role=child"))
            .await?;
        let mut per_parent: BTreeMap<String, usize> = BTreeMap::new();
        for child in &listed.items {
            for owner in child.owner_references() {
                *per_parent.entry(owner.name.clone()).or_default() += 1;
            }
        }
        Ok::<_, kube_client::Error>(per_parent)
    };
    let mut last = count().await?;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = count().await?;
        if now.len() == PARENTS && now == last {
            break;
        }
        last = now;
    }
    operator.abort();
    for watch in watches {
        watch.abort(); // stop watching before the control plane goes away
    }
    let twice = last.values().filter(|children| **children > 1).count();
    println!(
        "{} fences: {} parents with a child, {twice} with more than one",
        if fences { "with" } else { "without" },
        last.len()
    );
    if fences && (last.len() != PARENTS || twice > 0) {
        return Err(format!("expected one child per parent, got {last:?}").into());
    }
    Ok(())
}
