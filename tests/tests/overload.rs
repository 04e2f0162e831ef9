//! An overloaded API server: one that answers `429 Too Many Requests` with a `Retry-After`.
//!
//! Each server runs with one seat for reads (`--max-requests-inflight=1`; kube-apiserver with
//! API Priority and Fairness off, so that this limit is the one that answers), and the store
//! reads as `kache-operator`, a user with every right who, unlike the admin
//! (`system:masters`), is held to that limit. A list of 24 MB that its client never reads
//! keeps the seat taken: the server's write blocks, so its handler never returns. Every LIST
//! of the store is then answered 429 with `Retry-After: 1` (watches are long-running and
//! exempt, so the store lists with a paged LIST). The store, on a backoff that would retry
//! after 50 ms, must space its requests at least as far apart as the server asked, report the
//! wait in its health, and converge to the server's objects once the seat is free again. Its
//! client has kube-client's own retries off (`Config::default_retry`), which would otherwise
//! retry each 429 up to 15 times before the store heard of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{ReflectExt, Writer};
use kache_testenv::{RequestKind, RequestLog, Server, configmap, create_all};
use kache_tests::{configmap_watcher, converges, eventually, on_each_server_and_wire};
use kache_watch::{Backoff, Config, InitialListStrategy, WatchStreamExt};
use kube_client::api::{ListParams, PostParams};
use kube_client::{Api, Client};
use parking_lot::Mutex;

/// What the overloaded servers ask for (both answer `Retry-After: 1`).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Objects the store lists.
const OBJECTS: usize = 100;
/// Objects of the list that holds the server's seat: 24 of 1 MB, more than the socket
/// buffers of both ends together, so that the server's write blocks.
const BALLAST: usize = 24;
const BALLAST_BYTES: usize = 1_000_000;
/// 429s the store must meet before the overload ends: more than the backoff's first waits
/// (50, 100, 200, 400, 800 ms) that are shorter than `Retry-After`.
const REFUSALS: usize = 5;

/// A store's error: its HTTP status, and how it displays.
type Seen = (u16, String);

on_each_server_and_wire! {
    /// The scenario of the module's docs.
    async fn an_overloaded_server_is_asked_again_only_when_it_said(server: Server, wire: Wire) {
        let mut builder = kache_testenv::TestEnv::builder()
            .server(server)
            .apiserver_arg("--max-requests-inflight=1");
        if server == Server::Legacy {
            // Its API Priority and Fairness would queue the store's LISTs rather than refuse them.
            builder = builder.apiserver_arg("--enable-priority-and-fairness=false");
        }
        let env = builder.start().await.expect("a control plane");
        let ns = env.create_namespace("overload").await.expect("namespace");
        let ballast_ns = env.create_namespace("ballast").await.expect("namespace");
        let admin: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        create_all(&admin, (0..OBJECTS).map(|i| configmap(&format!("cm-{i}"), &[], 64)))
            .await
            .expect("objects");
        create_all(
            &Api::namespaced(env.client(), &ballast_ns),
            (0..BALLAST).map(|i| configmap(&format!("ballast-{i}"), &[], BALLAST_BYTES)),
        )
        .await
        .expect("ballast");

        // kube-client retries a 429 itself by default (up to 15 times, waiting what the server
        // asks); without that, the store's own handling meets every answer.
        let mut operator_config = env.operator_config().clone();
        operator_config.default_retry = false;
        // The seat taken: a LIST whose answer is never read.
        let hog = Client::try_from(operator_config.clone()).expect("client");
        let request = http::Request::get(format!("/api/v1/namespaces/{ballast_ns}/configmaps"))
            .body(kube_client::client::Body::empty())
            .expect("request");
        let held = hog.send(request).await.expect("the ballast's list starts");
        assert_eq!(held.status(), http::StatusCode::OK);
        let operator: Api<ConfigMap> =
            Api::namespaced(Client::try_from(operator_config.clone()).expect("client"), &ns);
        eventually("the server answers 429 while its only read seat is taken", || async {
            matches!(
                operator.list(&ListParams::default().limit(1)).await,
                Err(kube_client::Error::Api(status)) if status.code == 429
            )
        })
        .await;

        let log = RequestLog::new();
        let api = Api::namespaced(log.client(&operator_config).expect("client"), &ns);
        let writer = Writer::<ConfigMap>::new();
        let store = writer.as_reader();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let config = Config::default().initial_list_strategy(InitialListStrategy::ListWatch);
        let reflector = {
            let seen = Arc::clone(&seen);
            configmap_watcher(api, config, wire)
                .backoff(Backoff::default().initial(Duration::from_millis(50)))
                .reflect(writer)
                .for_each(move |item| {
                    if let Err(err) = item {
                        let code = err.status_code().unwrap_or_default();
                        seen.lock().push((code, err.to_string()));
                    }
                    futures::future::ready(())
                })
        };
        let reflector = tokio::spawn(reflector);

        eventually("the store meets the overload", || async { seen.lock().len() >= REFUSALS })
            .await;
        let health = store.health();
        let waited = health.failing.as_ref().and_then(|failing| failing.retry_after);
        assert_eq!(waited, Some(RETRY_AFTER), "health shows the server's wait: {health}");
        assert!(!store.is_synced(), "synced through an overloaded server");
        // Changes made meanwhile (by the admin, whom the limit spares) must reach the store.
        for i in OBJECTS..OBJECTS + 10 {
            admin
                .create(&PostParams::default(), &configmap(&format!("cm-{i}"), &[], 64))
                .await
                .expect("create");
        }

        // The overload ends: the unread answer is dropped, its connection closes, the seat is free.
        let ended = Instant::now();
        drop(held);
        tokio::time::timeout(Duration::from_secs(60), store.wait_synced())
            .await
            .expect("synced within 60 s of the overload's end")
            .expect("synced");
        let synced_after = ended.elapsed();
        let converged = converges(&admin, &store, &[]).await;
        reflector.abort();

        let seen = seen.lock().clone();
        let lists: Vec<Instant> = log
            .requests()
            .iter()
            .filter(|request| request.kind() == RequestKind::List)
            .map(kache_testenv::RecordedRequest::sent)
            .collect();
        let gaps: Vec<Duration> = lists.windows(2).map(|w| w[1] - w[0]).collect();
        let shortest = gaps.iter().min().copied().unwrap_or_default();
        eprintln!(
            "{server} {wire:?}: {} errors ({} of them 429), {} LIST requests, gaps between them {:?} to {:?}; synced {synced_after:?} after the overload ended, {} objects",
            seen.len(),
            seen.iter().filter(|(code, _)| *code == 429).count(),
            lists.len(),
            shortest,
            gaps.iter().max().copied().unwrap_or_default(),
            converged.objects
        );
        assert!(
            seen.iter().all(|(code, _)| *code == 429),
            "only 429s are expected: {seen:?}"
        );
        // Every LIST but the last was answered 429: each next one waited for Retry-After.
        assert_eq!(lists.len(), seen.len() + 1, "one LIST per 429, then the one that succeeded");
        assert!(
            shortest >= RETRY_AFTER,
            "a LIST came {shortest:?} after a 429 that said to wait {RETRY_AFTER:?}: {gaps:?}"
        );
        assert_eq!(converged.objects, OBJECTS + 10);
    }
}
