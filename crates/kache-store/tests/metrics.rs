//! What the watcher reports beside its items, fed by a real watcher over the wire format (the
//! scripted responder of kache-testenv): watch starts and resumes and bookmarks in the
//! metrics, and an accepted watch ending an error streak in the health.
#![cfg(feature = "metrics")]

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Metrics, ReflectExt, Store, Writer};
use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list, status};
use kache_watch::{Config, InitialListStrategy, watcher};
use kube_client::Api;
use prometheus_client::{encoding::text::encode, registry::Registry};

/// A store fed by a paged-list watcher of `server`, reporting to a new registry.
fn watched(server: &Scripted) -> (Registry, Store<ConfigMap>, tokio::task::JoinHandle<()>) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let writer = Writer::new().with_metrics(&metrics, "cm");
    let store = writer.as_reader();
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    let config = Config::default().initial_list_strategy(InitialListStrategy::ListWatch);
    let task = tokio::spawn(watcher(api, config).reflect(writer).for_each(|_| async {}));
    (registry, store, task)
}

/// The value of `series` (name and labels, as written) in a scrape of `registry`.
fn sample(registry: &Registry, series: &str) -> Option<f64> {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn watch_starts_resumes_and_bookmarks_are_counted() {
    let server = Scripted::start([
        list(vec![cm("a", "1")], Some("10"), None),
        // The watch from the list: a bookmark, a change, then the connection closes.
        Reply::Stream(
            vec![bookmark("20", false), event("ADDED", cm("b", "21"))],
            End::Close,
        ),
        // The resumed watch: one more bookmark.
        Reply::Stream(vec![bookmark("30", false)], End::Hang),
    ])
    .await;
    let (registry, _store, task) = watched(&server);
    let c = r#"{cache="cm"}"#;
    until("two bookmarks", || {
        sample(&registry, &format!("kache_bookmarks_total{c}")) == Some(2.0)
    })
    .await;
    assert_eq!(
        sample(&registry, &format!("kache_watch_starts_total{c}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&registry, &format!("kache_watch_resumes_total{c}")),
        Some(1.0)
    );
    let apply = r#"kache_events_total{cache="cm",type="apply"}"#;
    assert_eq!(sample(&registry, apply), Some(1.0));
    let age = sample(&registry, &format!("kache_last_bookmark_age_seconds{c}"));
    assert!(age.is_some_and(|age| (0.0..10.0).contains(&age)), "{age:?}");
    task.abort();
}

#[tokio::test]
async fn an_accepted_watch_ends_an_error_streak_with_no_event() {
    let server = Scripted::start([
        list(vec![cm("a", "1")], Some("10"), None),
        // The watch from the list fails to start twice, then starts and stays quiet.
        Reply::Json(500, status(500, "InternalError", "etcd is sulking")),
        Reply::Json(500, status(500, "InternalError", "etcd is sulking")),
        Reply::Stream(vec![], End::Hang),
    ])
    .await;
    let (registry, store, task) = watched(&server);
    until("the watch", || {
        sample(&registry, r#"kache_watch_starts_total{cache="cm"}"#) == Some(1.0)
    })
    .await;
    let health = store.health();
    assert!(health.failing.is_none(), "{health}");
    let server_errors = r#"kache_errors_total{cache="cm",class="server_error"}"#;
    assert_eq!(sample(&registry, server_errors), Some(2.0));
    assert_eq!(
        sample(&registry, r#"kache_consecutive_errors{cache="cm"}"#),
        Some(0.0)
    );
    task.abort();
}
