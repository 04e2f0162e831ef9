//! Fault scenarios against a real control plane: kube-apiserver and etcd restarts, real
//! `410 Gone` on a watch and in the middle of a paged list, churn through a restart, and
//! missing permissions. Each scenario that breaks something has its own control plane, and
//! each ends with the same check: the store and every subscriber's rebuilt view equal a fresh
//! LIST exactly ([`converges`]). Every scenario runs in both wire encodings (JSON and
//! protobuf) on the modern server.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Delivery, ReflectExt, Store, Writer};
use kache_testenv::TestEnv;
use kache_tests::{
    Counters, Proxy, Reflector, View, Wire, churn, configmap_watcher, converges, create_configmaps,
    cut_off, delete_all, eventually, follow, key_of, listed_versions, on_each_server_and_wire,
    own_env, private_env, within,
};
use kache_watch::{Backoff, Config, Error, Event, InitialListStrategy, WatchStreamExt};
use kube_client::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

/// A store fed through a proxy, with three subscribers: fast, backpressure, and slow (a small
/// buffer and a pause per event, so that it falls behind and is resynced).
struct Watched {
    proxy: Proxy,
    store: Store<ConfigMap>,
    /// Fast, backpressure, slow.
    views: Vec<View>,
    reflector: Reflector,
}

impl Watched {
    async fn start(env: &TestEnv, ns: &str, config: Config, wire: Wire) -> Self {
        let (proxy, api) = cut_off(env, ns).await;
        let writer = Writer::new().with_buffer(64);
        let store = writer.as_reader();
        let views = vec![
            follow(writer.subscribe(), Duration::ZERO),
            follow(
                writer.subscribe_with(Delivery::Backpressure),
                Duration::ZERO,
            ),
            follow(writer.subscribe(), Duration::from_millis(1)),
        ];
        let reflector = Reflector::start_in(wire, api, config, writer);
        within("the store to be ready", store.wait_synced())
            .await
            .unwrap();
        Self {
            proxy,
            store,
            views,
            reflector,
        }
    }

    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        Counters::get(counter(&self.reflector.counters))
    }

    /// Waits until the watcher has reported at least one more error than `before`.
    async fn errors_after(&self, before: u64) {
        eventually("the watcher to report the fault", || async {
            self.count(|c| &c.errors) > before
        })
        .await;
    }
}

fn keys(ns: &str, prefix: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{ns}/{prefix}-{i}")).collect()
}

fn names(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(|i| format!("cm-{i}"))
}

/// Deletes `cm-0..10`, creates `late-0..10`, and changes `cm-50..55`: done while the watcher
/// cannot see it.
async fn change_while_away(api: &Api<ConfigMap>) {
    delete_all(api, names(0..10)).await.unwrap();
    create_configmaps(api, "late", 10, &[]).await;
    let patch = Patch::Merge(json!({"data": {"changed": "yes"}}));
    for name in names(50..55) {
        api.patch(&name, &PatchParams::default(), &patch)
            .await
            .unwrap();
    }
}

/// The fast and backpressure subscribers were told about exactly the deleted objects (the
/// slow one may have been resynced past them, which its convergence covers).
fn assert_deletes(views: &[View], expected: &BTreeSet<String>) {
    for view in &views[..2] {
        let mut deleted = view.deleted();
        deleted.sort();
        let expected: Vec<String> = expected.iter().cloned().collect();
        assert_eq!(deleted, expected, "one Delete per deleted object, no other");
    }
}

on_each_server_and_wire! {
    async fn apiserver_restart_mid_watch_converges_with_changes_made_while_it_was_away(server: Server, wire: Wire) {
        let env = own_env(server).await;
        let ns = env.create_namespace("fault-apiserver").await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        create_configmaps(&api, "cm", 100, &[]).await;
        let watched = Watched::start(&env, &ns, Config::default(), wire).await;
        converges(&api, &watched.store, &watched.views).await;

        // The server dies under the watch; the watcher must notice and keep retrying.
        let errors = watched.count(|c| &c.errors);
        env.stop_apiserver().await.unwrap();
        watched.errors_after(errors).await;
        // Keep the watcher away while the server comes back and objects change.
        watched.proxy.cut();
        env.start_apiserver().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        change_while_away(&api).await;
        watched.proxy.restore();

        let converged = converges(&api, &watched.store, &watched.views).await;
        assert_eq!(converged.objects, 100);
        assert!(watched.store.get(Some(&ns), "cm-3").is_none());
        assert!(watched.store.get(Some(&ns), "late-9").is_some());
        assert_deletes(&watched.views, &keys(&ns, "cm", 0..10));
    }
}

on_each_server_and_wire! {
    async fn etcd_restart_mid_watch_converges_with_changes_made_while_it_was_away(server: Server, wire: Wire) {
        let env = own_env(server).await;
        let ns = env.create_namespace("fault-etcd").await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        create_configmaps(&api, "cm", 100, &[]).await;
        let watched = Watched::start(&env, &ns, Config::default(), wire).await;
        converges(&api, &watched.store, &watched.views).await;

        // etcd dies and comes back under a connected watcher; changes right after must arrive.
        env.restart_etcd().await.unwrap();
        create_configmaps(&api, "after", 5, &[]).await;
        converges(&api, &watched.store, &watched.views).await;
        // Then changes made while the watcher is away.
        watched.proxy.cut();
        change_while_away(&api).await;
        watched.proxy.restore();

        let converged = converges(&api, &watched.store, &watched.views).await;
        assert_eq!(converged.objects, 105);
        assert_deletes(&watched.views, &keys(&ns, "cm", 0..10));
    }
}

on_each_server_and_wire! {
    async fn gone_on_watch_relists_and_subscribers_get_a_delete_for_exactly_the_deleted_objects(server: Server, wire: Wire) {
        let (env, ns, api) = private_env(server, "fault-gone").await;
        create_configmaps(&api, "cm", 100, &[]).await;
        let watched = Watched::start(&env, &ns, Config::default(), wire).await;
        converges(&api, &watched.store, &watched.views).await;

        watched.proxy.cut();
        change_while_away(&api).await;
        env.compact_etcd().await.unwrap();
        watched.proxy.restore();

        converges(&api, &watched.store, &watched.views).await;
        assert!(watched.count(|c| &c.gone) >= 1, "the watch got a real 410");
        assert_eq!(watched.count(|c| &c.inits), 2, "one relist after the 410");
        assert_deletes(&watched.views, &keys(&ns, "cm", 0..10));
        // A relist reaches subscribers as a difference, never as a second snapshot.
        assert_eq!(watched.views[0].inits(), 1);
        assert_eq!(watched.views[1].inits(), 1);
    }
}

on_each_server_and_wire! {
    async fn gone_between_list_pages_restarts_the_list_with_init_and_leaves_nothing_stale(server: Server, wire: Wire) {
        let (env, ns, api) = private_env(server, "fault-pages").await;
        create_configmaps(&api, "cm", 50, &[]).await;

        let writer = Writer::new();
        let store = writer.as_reader();
        let view = follow(writer.subscribe(), Duration::ZERO);
        let config = Config::default()
            .page_size(5)
            .initial_list_strategy(InitialListStrategy::ListWatch);
        // Unbacked and reflected: reading it item by item decides when each page is fetched.
        let mut events = Box::pin(configmap_watcher(api.clone(), config, wire).reflect(writer));
        let mut next = async || {
            within("the next watcher item", events.next())
                .await
                .expect("the watcher never ends")
        };

        assert!(matches!(next().await, Ok(Event::Init)));
        let mut first_attempt = BTreeSet::new();
        for _ in 0..3 {
            match next().await {
                Ok(Event::InitApply(cm)) => assert!(first_attempt.insert(key_of(cm.as_ref()))),
                other => panic!("expected InitApply, got {other:?}"),
            }
        }
        // Between pages: change the world and compact the list's version away.
        assert!(first_attempt.contains(&format!("{ns}/cm-0")));
        delete_all(&api, names(0..1).chain(names(40..45))).await.unwrap();
        create_configmaps(&api, "late", 3, &[]).await;
        env.compact_etcd().await.unwrap();

        // The rest of the first page, then the next page's 410, then a clean restart.
        loop {
            match next().await {
                Ok(Event::InitApply(cm)) => {
                    assert!(first_attempt.insert(key_of(cm.as_ref())), "no duplicate in a list");
                }
                Err(Error::InitialListFailed(e)) => {
                    assert!(
                        matches!(&e, kube_client::Error::Api(s) if s.code == 410),
                        "expected 410, got {e}"
                    );
                    break;
                }
                other => panic!("expected InitApply or a 410, got {other:?}"),
            }
        }
        assert_eq!(first_attempt.len(), 5, "exactly one page before the 410");
        assert!(matches!(next().await, Ok(Event::Init)));
        let mut relisted = BTreeSet::new();
        loop {
            match next().await {
                Ok(Event::InitApply(cm)) => {
                    assert!(relisted.insert(key_of(cm.as_ref())), "listed {} twice", key_of(cm.as_ref()));
                }
                Ok(Event::InitDone) => break,
                other => panic!("expected InitApply or InitDone, got {other:?}"),
            }
        }
        let listed: BTreeSet<String> = listed_versions(&api).await.into_keys().collect();
        assert_eq!(relisted, listed);
        assert!(!relisted.contains(&format!("{ns}/cm-0")));

        tokio::spawn(async move { while events.next().await.is_some() {} });
        converges(&api, &store, std::slice::from_ref(&view)).await;
        assert!(
            store.get(Some(&ns), "cm-0").is_none(),
            "an object from the broken list is not in the store"
        );
        assert!(
            view.deleted().is_empty() && view.inits() == 1,
            "the subscriber saw only the complete list"
        );
    }
}

on_each_server_and_wire! {
    async fn churn_from_concurrent_writers_through_a_server_restart_converges(server: Server, wire: Wire) {
        const WORKERS: usize = 4;
        const OPS_PER_WORKER: u64 = 600;
        const TOTAL: u64 = OPS_PER_WORKER * WORKERS as u64;
        let env = own_env(server).await;
        let ns = env.create_namespace("fault-churn").await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        let watched = Watched::start(&env, &ns, Config::default(), wire).await;

        let done = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (api, done) = (api.clone(), done.clone());
                tokio::spawn(async move {
                    churn(&api, worker, 150, |ops| {
                        if ops > 0 {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        ops < OPS_PER_WORKER
                    })
                    .await
                })
            })
            .collect();
        // One restart, a third of the way through.
        eventually("a third of the churn", || async {
            done.load(Ordering::Relaxed) >= TOTAL / 3
        })
        .await;
        let errors = watched.count(|c| &c.errors);
        env.restart_apiserver().await.unwrap();
        let mut writes = 0;
        for worker in workers {
            writes += within("a churning writer to finish", worker).await.unwrap();
        }
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        let converged = converges(&api, &watched.store, &watched.views).await;

        assert_eq!(writes, TOTAL);
        assert!(
            watched.count(|c| &c.errors) > errors,
            "the restart reached the watcher"
        );
        println!(
            "churn: {writes} writes, {} objects at the end, {} events applied, {} lists, {} watcher errors, slow subscriber: {} events, {} snapshots",
            converged.objects,
            watched.count(|c| &c.events),
            watched.count(|c| &c.inits),
            watched.count(|c| &c.errors),
            watched.views[2].events(),
            watched.views[2].inits(),
        );
    }
}

on_each_server_and_wire! {
    async fn missing_list_permission_is_a_forbidden_error_on_every_retry_and_never_ready(server: Server, wire: Wire) {
        let env = TestEnv::shared_on(server).await.expect("control plane");
        let ns = env.create_namespace("fault-forbidden").await.unwrap();
        for strategy in [InitialListStrategy::Auto, InitialListStrategy::ListWatch] {
            let api: Api<ConfigMap> = Api::namespaced(env.client_unprivileged(), &ns);
            let writer = Writer::new();
            let store = writer.as_reader();
            let view = follow(writer.subscribe(), Duration::ZERO);
            let backoff = Backoff::default()
                .initial(Duration::from_millis(50))
                .max(Duration::from_millis(200));
            let config = Config::default().initial_list_strategy(strategy);
            let mut events = Box::pin(configmap_watcher(api, config, wire).backoff(backoff).reflect(writer));
            for attempt in 0..4 {
                let item = within("the next watcher item", events.next())
                    .await
                    .expect("the watcher never ends");
                match item {
                    Err(err @ (Error::InitialListFailed(_) | Error::WatchStartFailed(_))) => {
                        assert!(err.is_forbidden(), "attempt {attempt}: {err}");
                        assert!(err.to_string().contains("forbidden"), "{err}");
                    }
                    other => panic!("{strategy:?} attempt {attempt}: expected 403, got {other:?}"),
                }
                assert!(!store.is_synced());
            }
            // The caller bounds the wait; it never completes.
            let wait = tokio::time::timeout(Duration::from_millis(300), store.wait_synced());
            assert!(wait.await.is_err(), "never ready without list rights");
            assert!(store.is_empty());
            assert_eq!(view.events(), 0, "subscribers hear nothing");
        }
    }
}
