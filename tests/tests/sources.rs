//! One store over several real watches (`kache_store::Sources`): one per namespace, and two
//! overlapping label selectors, against both servers.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{ReflectExt, Sources, Store, Writer};
use kache_tests::{
    create_configmaps, cut_off, eventually, follow, listed_versions, on_each_server, quick_backoff,
    shared_env, stored_versions, within,
};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

on_each_server! {
    /// Two namespaces, one store: it holds both, a subscriber follows it, the namespace index
    /// answers per namespace, and removing one namespace's source deletes exactly its objects.
    async fn one_store_over_two_namespaces(server: Server) {
        let (env, ns_a, api_a) = shared_env(server, "sources-a").await;
        let ns_b = env.create_namespace("sources-b").await.unwrap();
        let api_b: Api<ConfigMap> = Api::namespaced(env.client(), &ns_b);
        create_configmaps(&api_a, "a", 20, &[]).await;
        create_configmaps(&api_b, "b", 30, &[]).await;

        let sources = Sources::new(Writer::<ConfigMap>::new());
        let store = sources.store();
        let view = follow(store.subscribe(), Duration::ZERO);
        let (set, reflector) = sources.into_reflector();
        let _driver = tokio::spawn(reflector.for_each(|_| async {}));
        for (name, api) in [(&ns_a, &api_a), (&ns_b, &api_b)] {
            let events = watcher(api.clone(), Config::default()).backoff(quick_backoff());
            set.add(name, events);
        }
        within("the store to be ready", store.wait_synced()).await.unwrap();
        let both = || async {
            let mut all = listed_versions(&api_a).await;
            all.extend(listed_versions(&api_b).await);
            all
        };
        eventually("the store and its subscriber to hold both namespaces", || async {
            let all = both().await;
            stored_versions(&store) == all && view.versions() == all
        })
        .await;
        assert_eq!(store.by_namespace(&ns_a).len(), 20);
        assert_eq!(store.by_namespace(&ns_b).len(), 30);

        // A live change in one namespace, then that namespace's source goes.
        let patch = Patch::Merge(json!({"data": {"changed": "yes"}}));
        let changed = api_b.patch("b-0", &PatchParams::default(), &patch).await.unwrap();
        // Not `wait_for`: the store's version is the lowest the two sources have reached,
        // and the quiet namespace passes it only with a bookmark (docs/sharding.md).
        eventually("the store to reflect the change", || async {
            store
                .get(Some(&ns_b), "b-0")
                .is_some_and(|cm| cm.metadata.resource_version == changed.metadata.resource_version)
        })
        .await;
        set.remove(&ns_b);
        eventually("only namespace a to remain", || async {
            stored_versions(&store) == listed_versions(&api_a).await
                && view.versions() == listed_versions(&api_a).await
        })
        .await;
        assert_eq!(view.deletes(), 30, "the subscriber heard each of b's objects go");
        assert!(store.by_namespace(&ns_b).is_empty());
    }

    /// Two overlapping label selectors: an object both select is stored once, and it stays
    /// while it moves from one selector to the other; deleted, it goes.
    async fn overlapping_selectors_store_each_object_once(server: Server) {
        let (_, _, api) = shared_env(server, "sources-overlap").await;
        create_configmaps(&api, "x", 5, &[("tier", "x")]).await;
        create_configmaps(&api, "y", 5, &[("tier", "y")]).await;
        let sources = Sources::new(Writer::<ConfigMap>::new());
        let store = sources.store();
        let view = follow(store.subscribe(), Duration::ZERO);
        let (set, reflector) = sources.into_reflector();
        let _driver = tokio::spawn(reflector.for_each(|_| async {}));
        for (name, selector) in [("x-or-y", "tier in (x,y)"), ("y", "tier=y")] {
            let config = Config::default().labels(selector);
            set.add(name, watcher(api.clone(), config).backoff(quick_backoff()));
        }
        within("the store to be ready", store.wait_synced()).await.unwrap();
        eventually("ten objects, each once", || async {
            stored_versions(&store) == listed_versions(&api).await
        })
        .await;

        // `x-0` moves to `y`, then leaves both selectors: one `Delete` at the end only.
        let relabel = |tier: &str| Patch::Merge(json!({"metadata": {"labels": {"tier": tier}}}));
        let moved = api.patch("x-0", &PatchParams::default(), &relabel("y")).await.unwrap();
        within("the move", store.wait_for(&moved)).await.unwrap();
        assert!(view.deleted().is_empty(), "no delete while a source still selects it");
        let gone = api.patch("x-0", &PatchParams::default(), &relabel("z")).await.unwrap();
        eventually("x-0 to leave the store", || async {
            store.get(gone.metadata.namespace.as_deref(), "x-0").is_none()
        })
        .await;
        api.delete("y-0", &DeleteParams::default()).await.unwrap();
        let expected: BTreeMap<String, String> = listed_versions(&api)
            .await
            .into_iter()
            .filter(|(key, _)| !key.ends_with("/x-0"))
            .collect();
        eventually("the store and the subscriber to match", || async {
            stored_versions(&store) == expected && view.versions() == expected
        })
        .await;
        assert_eq!(view.deletes(), 2, "x-0 once, y-0 once");
    }
}

on_each_server! {
    /// The waits on a busy namespace of a store with a quiet one: the store-wide version is
    /// the lowest the sources have reached, which the quiet namespace moves only with a
    /// bookmark (about a minute on current servers, minutes on 1.20). A wait on the patched
    /// object resolves once the store holds it, for each of five writes, well inside the
    /// bound; the store then shows each write.
    async fn a_wait_on_a_busy_namespace_does_not_wait_for_the_quiet_one(server: Server) {
        let (env, busy_ns, busy) = shared_env(server, "sources-busy").await;
        let quiet_ns = env.create_namespace("sources-quiet").await.unwrap();
        let quiet: Api<ConfigMap> = Api::namespaced(env.client(), &quiet_ns);
        create_configmaps(&busy, "b", 5, &[]).await;
        create_configmaps(&quiet, "q", 5, &[]).await;

        let sources = Sources::new(Writer::<ConfigMap>::new());
        let store = sources.store();
        let (set, reflector) = sources.into_reflector();
        let _driver = tokio::spawn(reflector.for_each(|_| async {}));
        for (name, api) in [(&busy_ns, &busy), (&quiet_ns, &quiet)] {
            set.add(name, watcher(api.clone(), Config::default()).backoff(quick_backoff()));
        }
        within("the store to be ready", store.wait_synced()).await.unwrap();
        for i in 0..5 {
            let patch = Patch::Merge(json!({"data": {"write": i.to_string()}}));
            let patched = busy.patch(&format!("b-{i}"), &PatchParams::default(), &patch).await.unwrap();
            within("the wait on the patched object", store.wait_for(&patched)).await.unwrap();
            let stored = store.get(Some(&busy_ns), &format!("b-{i}")).unwrap();
            assert_eq!(stored.metadata.resource_version, patched.metadata.resource_version);
        }
    }
}

/// Drives `events` into a new writer as a kube-runtime user merging two watchers would, and
/// returns the store and the task, which ends once the reflector stops.
fn reflect_merged<St>(events: St) -> (Store<ConfigMap>, tokio::task::JoinHandle<usize>)
where
    St: futures::Stream<Item = kache_watch::Result<kache_watch::Event<ConfigMap>>> + Send + 'static,
{
    let writer = Writer::<ConfigMap>::new().with_name("merged");
    let store = writer.as_reader();
    let task = tokio::spawn(events.reflect(writer).count());
    (store, task)
}

/// What a store fed by two merged watchers must show: stopped before it applied anything,
/// not ready, and saying why and what to use instead.
async fn stopped_loudly(store: &Store<ConfigMap>, task: tokio::task::JoinHandle<usize>) {
    let items = within("the merged reflector to stop", task).await.unwrap();
    assert_eq!(items, 0, "nothing applied: stopped at its first poll");
    assert!(store.is_empty() && !store.is_synced());
    let health = store.health();
    let stopped = health.stopped.clone().expect("the health says it stopped");
    assert!(
        stopped.contains("two watch streams") && stopped.contains("Sources"),
        "{stopped}"
    );
    assert!(!health.is_ready());
    assert!(health.to_string().contains("stopped: "), "{health}");
    let failed = within("the fail-fast wait", store.wait_synced_or_fail()).await;
    assert!(
        matches!(failed, Err(kache_store::Error::Stopped { .. })),
        "{failed:?}"
    );
}

on_each_server! {
    /// The multi-namespace pattern of kube-runtime users, two watchers merged with `select`
    /// and reflected into one writer, whose lists would replace each other's objects: the
    /// reflector stops at its first poll, loudly, instead of holding half the objects. The
    /// same with one of the watches cut off by a proxy (its first request never answered),
    /// and with both merged into one source of a `Sources` store, whose other source goes on.
    async fn merged_watchers_stop_loudly_and_point_to_sources(server: Server) {
        let (env, _, api_a) = shared_env(server, "merged-a").await;
        let ns_b = env.create_namespace("merged-b").await.unwrap();
        let api_b: Api<ConfigMap> = Api::namespaced(env.client(), &ns_b);
        create_configmaps(&api_a, "a", 50, &[]).await;
        create_configmaps(&api_b, "b", 50, &[]).await;

        let (store, task) = reflect_merged(futures::stream::select(
            watcher(api_a.clone(), Config::default()),
            watcher(api_b.clone(), Config::default()),
        ));
        stopped_loudly(&store, task).await;

        let (proxy, delayed_b) = cut_off(env, &ns_b).await;
        proxy.cut();
        let (store, task) = reflect_merged(futures::stream::select(
            watcher(api_a.clone(), Config::default()),
            watcher(delayed_b, Config::default()),
        ));
        stopped_loudly(&store, task).await;

        let sources = Sources::new(Writer::<ConfigMap>::new());
        let store = sources.store();
        let (set, reflector) = sources.into_reflector();
        let _driver = tokio::spawn(reflector.for_each(|_| async {}));
        set.add("a", watcher(api_a.clone(), Config::default()));
        let merged = futures::stream::select(
            watcher(api_a.clone(), Config::default()),
            watcher(api_b.clone(), Config::default()),
        );
        set.add("both", merged);
        eventually("the store to say that source both stopped", || async {
            store.health().stopped.is_some_and(|s| s.contains("source both"))
        })
        .await;
        set.wait_synced("a").await.unwrap();
        assert!(!store.health().is_ready());
        assert!(store.by_namespace(&ns_b).is_empty(), "nothing of the merged source applied");
    }
}
