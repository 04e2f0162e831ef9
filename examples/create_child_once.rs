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

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_controller::{Action, Config as ControllerConfig, Controller, Recorded};
use kache_examples::one_child::{
    CHILD, OnServer, PARENT, child_of, create_parents, follow, owner_uid, value_of,
};
use kache_examples::{BoxError, start};
use kache_store::{ReflectExt, Store, Writer};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api, ResourceExt,
    api::{PatchParams, PostParams},
};

const PARENTS: usize = 20;

/// What every reconcile shares: the children's cache, and an `Api` whose writes are recorded
/// for the fences.
struct Context {
    children: Store<ConfigMap>,
    api: Recorded<ConfigMap>,
}

/// Gives `parent` a child if the cache shows none; brings its child's value to the parent's.
async fn reconcile(parent: Arc<ConfigMap>, ctx: Arc<Context>) -> kube_client::Result<Action> {
    let uid = parent.uid();
    let mine = |child: &ConfigMap| owner_uid(child) == uid.as_deref();
    match ctx.children.find(mine) {
        None => {
            ctx.api
                .create(&PostParams::default(), &child_of(&parent))
                .await?;
        }
        Some(child) if value_of(&child) != value_of(&parent) => {
            let name = child.name_any();
            ctx.api
                .patch(&name, &PatchParams::default(), &follow(&parent))
                .await?;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
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
        reflect(&api, PARENT, parents),
        reflect(&api, CHILD, children),
    ];
    let ctx = Arc::new(Context {
        children: child_store.clone(),
        api: Recorded::new(api.clone()),
    });
    let config = ControllerConfig::default()
        .fences(fences, Duration::from_secs(10))
        .name("children");
    let controller = Controller::new(parent_store, config).owns(child_store).run(
        reconcile,
        kache_controller::backoff,
        ctx,
    );
    let operator = tokio::spawn(controller.for_each(|_| async {}));

    // Parents appear and change in quick succession.
    create_parents(&api, "parent", PARENTS).await?;

    // The server's word, not the cache's: each parent's children, once each has one and nothing
    // has changed for a second.
    let mut last = OnServer::list(&api).await?;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = OnServer::list(&api).await?;
        if now.each_has_a_current_child() && now == last {
            break;
        }
        last = now;
    }
    operator.abort();
    for watch in watches {
        watch.abort(); // stop watching before the control plane goes away
    }
    let (parents, twice) = (last.by_parent.len(), last.duplicates());
    println!(
        "{} fences: {parents} parents, {twice} with more than one child",
        if fences { "with" } else { "without" },
    );
    if fences && (parents != PARENTS || twice > 0 || !last.converged()) {
        return Err(format!("expected one child per parent, got {last:?}").into());
    }
    Ok(())
}
