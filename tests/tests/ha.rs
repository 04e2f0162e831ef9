//! A highly available control plane: two API servers of one version over one etcd, behind a
//! load balancer (kache-testenv's proxy). A store watches through the balancer while writes
//! go on through the first server; each round, the second server's watch cache is made to
//! fall behind (its link to etcd held back) and the store's connection is moved to it, so its
//! watch resumes from a version that server has not reached; then the second server catches
//! up. The store must neither relist nor go back in time, and ends equal to etcd's truth.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Event, ReflectExt, Writer};
use kache_testenv::RequestLog;
use kache_tests::{Proxy, Rng, TestEnv, converges, on_each_server};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::Api;
use kube_client::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use parking_lot::Mutex;
use serde_json::json;

const OBJECTS: usize = 200;
const ROUNDS: usize = 3;

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// Creates, updates and deletes until stopped, through `api` (the first server).
fn churn(api: Api<ConfigMap>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rng = Rng::new(28);
        let mut names: Vec<String> = (0..OBJECTS).map(|i| format!("cm-{i}")).collect();
        let (mut next, mut changes) = (OBJECTS, 0);
        while !stop.load(Ordering::Relaxed) {
            let roll = rng.below(10);
            let done = if roll < 6 && !names.is_empty() {
                let name = &names[rng.below(names.len())];
                let patch = json!({ "data": { "n": changes.to_string() } });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
            } else if roll < 8 || names.is_empty() {
                let name = format!("cm-{next}");
                next += 1;
                names.push(name.clone());
                api.create(&PostParams::default(), &configmap(&name))
                    .await
                    .is_ok()
            } else {
                let name = names.swap_remove(rng.below(names.len()));
                api.delete(&name, &DeleteParams::default()).await.is_ok()
            };
            changes += usize::from(done);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        changes
    })
}

on_each_server! {
    /// The scenario of the module's docs, on one server version.
    async fn a_store_follows_its_watch_across_a_lagging_api_server(server: Server) {
        let env = TestEnv::builder()
            .server(server)
            .second_apiserver()
            .start()
            .await
            .expect("two API servers over one etcd");
        let ns = env.create_namespace("ha").await.expect("namespace");
        let admin: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        kache_testenv::run_all((0..OBJECTS).map(|i| {
            let admin = admin.clone();
            async move {
                admin
                    .create(&PostParams::default(), &configmap(&format!("cm-{i}")))
                    .await
            }
        }))
        .await
        .expect("objects");

        let balancer = Proxy::balance(&env.server_urls()).await.expect("load balancer");
        let log = RequestLog::new();
        let client = log.client(&balancer.config(env.config())).expect("client");
        let writer = Writer::<ConfigMap>::new();
        let store = writer.as_reader();
        let inits = Arc::new(AtomicU64::new(0));
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let reflector = {
            let (inits, errors) = (Arc::clone(&inits), Arc::clone(&errors));
            watcher(Api::<ConfigMap>::namespaced(client, &ns), Config::default())
                .default_backoff()
                .reflect(writer)
                .for_each(move |item| {
                    match item {
                        Ok(Event::Init) => {
                            inits.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(err) => errors.lock().push(format!(
                            "{} {}",
                            err.status_code().unwrap_or_default(),
                            err
                        )),
                    }
                    futures::future::ready(())
                })
        };
        let reflector = tokio::spawn(reflector);
        tokio::time::timeout(Duration::from_secs(60), store.wait_synced())
            .await
            .expect("synced within 60 s")
            .expect("synced");

        // The store's version, sampled: it must never go back.
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (store, sampling) = (store.clone(), Arc::clone(&sampling));
            tokio::spawn(async move {
                let (mut last, mut backwards, mut samples) = (None, Vec::new(), 0_u64);
                while sampling.load(Ordering::Relaxed) {
                    if let Ok(Some(version)) = store.resource_version() {
                        if last.as_ref().is_some_and(|last| version < *last) {
                            backwards.push(format!("{last:?} then {version:?}"));
                        }
                        last = Some(version);
                        samples += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (samples, backwards)
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let churning = churn(admin.clone(), Arc::clone(&stop));

        for round in 0..ROUNDS {
            // The second server falls behind while writes go on through the first.
            env.lag_second_apiserver().expect("lag");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let watches_before = log.count(kache_testenv::RequestKind::Watch);
            // The balancer moves the store's connection to the lagging server, which is asked
            // to watch from a version it has not reached; it stays behind for 4 s (a recent
            // server answers "Too large resource version" after 3 s).
            balancer.route_to(1);
            balancer.reset();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let during = store.resource_version().expect("version");
            tokio::time::sleep(Duration::from_millis(3500)).await;
            // The scenario holds: writes went on, yet the store heard nothing from the
            // lagging server.
            assert_eq!(
                store.resource_version().expect("version"),
                during,
                "the second server did not lag"
            );
            env.catch_up_second_apiserver().expect("catch up");
            let converged = converges(&admin, &store, &[]).await;
            eprintln!(
                "{server} round {round}: {} WATCH requests to the lagging server; converged with {} objects",
                log.count(kache_testenv::RequestKind::Watch) - watches_before,
                converged.objects
            );
            balancer.route_to(0);
            balancer.reset();
        }
        stop.store(true, Ordering::Relaxed);
        let changes = churning.await.expect("churn");
        let converged = converges(&admin, &store, &[]).await;
        sampling.store(false, Ordering::Relaxed);
        let (samples, backwards) = sampler.await.expect("sampler");
        reflector.abort();
        let errors = errors.lock().clone();
        let lists = log.count(kache_testenv::RequestKind::List);
        eprintln!(
            "{server}: {changes} changes, {} objects at the end, {} relists after the first sync, {lists} LIST requests, {samples} version samples, {} errors: {errors:?}",
            converged.objects,
            inits.load(Ordering::Relaxed) - 1,
            errors.len()
        );
        assert_eq!(inits.load(Ordering::Relaxed), 1, "a lagging API server must not cause a relist: {errors:?}");
        assert!(backwards.is_empty(), "the store's version went back: {backwards:?}");
        assert!(
            errors.iter().all(|e| e.contains("Too large resource version") || e.starts_with("0 ")),
            "only a lagging server's answers and dropped connections are expected: {errors:?}"
        );
    }
}
