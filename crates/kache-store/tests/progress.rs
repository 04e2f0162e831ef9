//! How far the store has reached, fed by a real watcher over the wire format (the scripted
//! responder of kache-testenv): bookmarks move it with no object change, and a point the
//! watcher reports never runs ahead of events an adapter still holds back.

use std::time::Duration;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{ReflectExt, ResourceVersion, Store, Writer};
use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list};
use kache_watch::{Config, Event, InitialListStrategy, watcher};
use kube_client::Api;

fn rv(version: &str) -> ResourceVersion {
    ResourceVersion::parse(version).unwrap()
}

fn events(
    server: &Scripted,
) -> impl Stream<Item = kache_watch::Result<Event<ConfigMap>>> + Send + use<> {
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    watcher(
        api,
        Config::default().initial_list_strategy(InitialListStrategy::ListWatch),
    )
}

/// Drives `events` into a new store on a background task.
fn reflect_into_store(
    events: impl Stream<Item = kache_watch::Result<Event<ConfigMap>>> + Send + 'static,
) -> (Store<ConfigMap>, tokio::task::JoinHandle<()>) {
    let writer = Writer::new();
    let store = writer.as_reader();
    let task = tokio::spawn(events.reflect(writer).for_each(|_| async {}));
    (store, task)
}

#[tokio::test]
async fn a_bookmark_advances_the_store_with_no_object_change() {
    let server = Scripted::start([
        list(vec![cm("a", "1")], Some("10"), None),
        Reply::Stream(vec![bookmark("20", false)], End::Hang),
    ])
    .await;
    let (store, task) = reflect_into_store(events(&server));

    let bound = Duration::from_secs(10);
    tokio::time::timeout(bound, store.wait_for_version(&rv("10")))
        .await
        .expect("the list's version is reached")
        .unwrap();
    // A write the watch never shows (outside its selector) at 15: only the bookmark passes it.
    tokio::time::timeout(bound, store.wait_for_version(&rv("15")))
        .await
        .expect("the bookmark passes it")
        .unwrap();
    assert_eq!(store.resource_version(), Ok(Some(rv("20"))));
    assert_eq!(store.len(), 1);
    let a = store.get(Some("ns"), "a").unwrap();
    assert_eq!(a.metadata.resource_version.as_deref(), Some("1"));
    task.abort();
}

#[tokio::test]
async fn a_point_waits_for_the_events_an_adapter_holds_back() {
    let server = Scripted::start([
        list(vec![cm("a", "1")], Some("10"), None),
        Reply::Stream(
            vec![
                event("ADDED", cm("b", "15")),
                event("ADDED", cm("c", "16")),
                bookmark("20", false),
            ],
            End::Hang,
        ),
    ])
    .await;
    // Pairs of items: `Init, InitApply a`, `InitDone, Apply b`, then `Apply c` waits for a
    // partner that never comes, while the watcher reports the bookmark at 20 behind it.
    let held_back = events(&server).chunks(2).flat_map(stream::iter);
    let (store, task) = reflect_into_store(held_back);

    let bound = Duration::from_secs(10);
    tokio::time::timeout(bound, store.wait_for_version(&rv("15")))
        .await
        .expect("b is applied")
        .unwrap();
    // Bounded on purpose: `c` never reaches the store, so neither may the bookmark after it.
    let c = tokio::time::timeout(
        Duration::from_millis(500),
        store.wait_for_version(&rv("16")),
    );
    assert!(
        c.await.is_err(),
        "the store claimed a version it does not show"
    );
    assert_eq!(store.resource_version(), Ok(Some(rv("15"))));
    assert!(store.get(Some("ns"), "c").is_none());
    task.abort();
}
