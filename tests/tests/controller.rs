//! A real operator on kache-controller, against both servers: each parent `ConfigMap` gets
//! exactly one owned child `ConfigMap`, whose data follows the parent's. Children are created
//! with `generateName`, as many operators do, so a reconcile that acts on a cache without its
//! own last create makes a second child: read-your-writes fences are what prevent it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_controller::{Action, Config as ControllerConfig, Controller, Metrics, Recorded};
use kache_examples::exposition::Exposition;
use kache_examples::one_child::{
    CHILD, OnServer, PARENT, child_of, create_parents, follow, owner_uid, value_of,
};
use kache_examples::probes::{self, ProbeServer, Probes};
use kache_store::{ReflectExt, Store, Writer};
use kache_tests::{cut_off, eventually, on_each_server, private_env, quick_backoff, shared_env};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::Api;
use kube_client::api::{DeleteParams, Patch, PatchParams, PostParams};
use prometheus_client::registry::Registry;
use serde_json::json;

struct Operator {
    children: Store<ConfigMap>,
    api: Recorded<ConfigMap>,
}

/// Creates the parent's child if the cache shows none; brings its data to the parent's.
async fn reconcile(parent: Arc<ConfigMap>, op: Arc<Operator>) -> kube_client::Result<Action> {
    let uid = parent.metadata.uid.as_deref().unwrap_or_default();
    let Some(child) = op.children.find(|child| owner_uid(child) == Some(uid)) else {
        op.api
            .create(&PostParams::default(), &child_of(&parent))
            .await?;
        return Ok(Action::await_change());
    };
    if value_of(&child) != value_of(&parent) {
        let name = child.metadata.name.clone().unwrap_or_default();
        op.api
            .patch(&name, &PatchParams::default(), &follow(&parent))
            .await?;
    }
    Ok(Action::await_change())
}

/// A running operator in `api`'s namespace: two stores (parents, children), one controller.
struct Running {
    parents: Store<ConfigMap>,
    children: Store<ConfigMap>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn start(watch: &Api<ConfigMap>, write: &Api<ConfigMap>, fences: bool) -> Running {
    start_reporting(watch, write, fences, None)
}

fn start_reporting(
    watch: &Api<ConfigMap>,
    write: &Api<ConfigMap>,
    fences: bool,
    metrics: Option<&Metrics>,
) -> Running {
    let (parents, children) = (Writer::<ConfigMap>::new(), Writer::<ConfigMap>::new());
    let (parents_store, children_store) = (parents.as_reader(), children.as_reader());
    let feed = |writer: Writer<ConfigMap>, labels: &str| {
        let events =
            watcher(watch.clone(), Config::default().labels(labels)).backoff(quick_backoff());
        tokio::spawn(events.reflect(writer).for_each(|_| async {}))
    };
    let mut tasks = vec![feed(parents, PARENT), feed(children, CHILD)];
    let operator = Arc::new(Operator {
        children: children_store.clone(),
        api: Recorded::new(write.clone()),
    });
    let mut config = ControllerConfig::default()
        .concurrency(16)
        .fences(fences, Duration::from_secs(10))
        .name("one-child");
    if let Some(metrics) = metrics {
        config = config.metrics(metrics);
    }
    let controller = Controller::new(parents_store.clone(), config)
        .owns(children_store.clone())
        .run(reconcile, kache_controller::backoff, operator);
    tasks.push(tokio::spawn(controller.for_each(|_| async {})));
    Running {
        parents: parents_store,
        children: children_store,
        tasks,
    }
}

on_each_server! {
    /// Fences on, 1,000 parents, each changed three times right after its creation: exactly
    /// one child each. The same run with fences off makes duplicates (within three tries): the
    /// control that shows this test can fail.
    async fn with_fences_every_parent_gets_exactly_one_child(server: Server) {
        let (_, _, api) = shared_env(server, "ctl-fenced").await;
        let operator = start(&api, &api, true);
        let started = std::time::Instant::now();
        create_parents(&api, "p", 1_000).await.unwrap();
        eventually("every parent to have its child, with its value", || async {
            OnServer::list(&api).await.unwrap().converged()
        })
        .await;
        // Quiet for a while: nothing more is created.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = OnServer::list(&api).await.unwrap();
        assert_eq!(state.by_parent.len(), 1_000);
        assert_eq!((state.duplicates(), state.orphans), (0, 0), "one child per parent");
        assert_eq!(operator.children.len(), 1_000);
        drop(operator);
        eprintln!("{server:?}: 1,000 parents settled with fences in {:?}", started.elapsed());

        let mut seen = Vec::new();
        for attempt in 0..3 {
            let (_, _, api) = shared_env(server, &format!("ctl-unfenced-{attempt}")).await;
            let operator = start(&api, &api, false);
            create_parents(&api, "p", 1_000).await.unwrap();
            // Duplicates stay behind (the reconcile keeps the first child): wait until every
            // parent has a child with its value.
            eventually("every parent to have a child with its value", || async {
                OnServer::list(&api).await.unwrap().each_has_a_current_child()
            })
            .await;
            let dups = OnServer::list(&api).await.unwrap().duplicates();
            drop(operator);
            seen.push(dups);
            if dups > 0 {
                break;
            }
        }
        assert!(seen.iter().any(|dups| *dups > 0), "without fences, no duplicate in three runs: {seen:?}");
        eprintln!("{server:?}: parents with two children or more without fences, by run: {seen:?} of 1,000");
    }

    /// The operator keeps its promise through a deleted child, a changed parent, an API server
    /// restart and a `410 Gone` relist of its watches.
    async fn an_operator_converges_through_deletes_restarts_and_relists(server: Server) {
        let (env, ns, admin) = private_env(server, "ctl-faults").await;
        let (proxy, watched) = cut_off(&env, &ns).await;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let operator = start_reporting(&watched, &admin, true, Some(&metrics));
        create_parents(&admin, "p", 50).await.unwrap();
        let settled = || async {
            let state = OnServer::list(&admin).await.unwrap();
            state.converged()
                && state.duplicates() == 0
                && state.orphans == 0
                && state.by_parent.len() == 50
        };
        eventually("50 parents with one child each", settled).await;

        // A deleted child is recreated; a changed parent changes its child.
        let child = operator.children.state()[0].metadata.name.clone().unwrap();
        admin.delete(&child, &DeleteParams::default()).await.unwrap();
        let patch = Patch::Merge(json!({ "data": { "value": "changed" } }));
        admin.patch("p-7", &PatchParams::default(), &patch).await.unwrap();
        eventually("the child recreated and p-7's child changed", settled).await;

        // The API server restarts while parents change.
        env.restart_apiserver().await.unwrap();
        let patch = Patch::Merge(json!({ "data": { "value": "after-restart" } }));
        admin.patch("p-8", &PatchParams::default(), &patch).await.unwrap();
        eventually("converged after the restart", settled).await;

        // Cut off, changes, history compacted: the watches relist on `410 Gone`.
        proxy.cut();
        let patch = Patch::Merge(json!({ "data": { "value": "while-away" } }));
        admin.patch("p-9", &PatchParams::default(), &patch).await.unwrap();
        let child = operator.children.state()[1].metadata.name.clone().unwrap();
        admin.delete(&child, &DeleteParams::default()).await.unwrap();
        env.compact_etcd().await.unwrap();
        proxy.restore();
        eventually("converged after the relist", settled).await;
        assert_eq!(operator.parents.len(), 50);

        // Its metrics, scraped over HTTP as Prometheus would.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ProbeServer::start(listener, Probes { registry, health: Vec::new() }).unwrap();
        let answer = probes::get(server.addr(), "/metrics").await.unwrap();
        assert_eq!(answer.status, 200);
        let scrape = Exposition::parse(&answer.body).unwrap();
        let of = |name: &str, extra: &[(&str, &str)]| {
            let mut labels = vec![("controller", "one-child")];
            labels.extend_from_slice(extra);
            scrape.value(name, &labels).unwrap_or_else(|| panic!("{name} {extra:?}:\n{}", answer.body))
        };
        let successes = of("kache_controller_reconciles_total", &[("result", "success")]);
        assert!(successes >= 50.0, "every parent reconciled: {successes}");
        assert!(of("workqueue_adds_total", &[]) >= successes);
        assert!(of("kache_controller_fence_waits_total", &[]) >= 50.0, "each create fenced");
        assert!(of("kache_controller_stale_reconciles_total", &[]) < 0.5, "no stale reconcile");
        assert!(of("workqueue_depth", &[]) < 0.5, "an empty queue");
        assert!(of("workqueue_work_duration_seconds_count", &[]) >= successes);
    }
}
