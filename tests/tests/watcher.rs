//! The watcher against a real API server (kache-testenv): initial sync, live changes,
//! selectors, paging, the streaming-list fallback, relist after a real `410 Gone`, and
//! `watch_object`.

use std::{collections::BTreeSet, pin::Pin};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_tests::{
    create_configmaps, cut_off, delete_configmaps, init_tracing, listed_versions, private_env,
    quick_backoff, shared_env, within,
};
use kache_watch::{
    Config, Error, Event, InitialListStrategy, WatchStreamExt, watch_object, watcher,
};
use kube_client::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

type Events = Pin<Box<dyn Stream<Item = Result<Event<ConfigMap>, Error>> + Send>>;

fn name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

/// A watcher that retries quickly: faults in these tests are short.
fn watch(api: Api<ConfigMap>, config: Config) -> Events {
    Box::pin(watcher(api, config).backoff(quick_backoff()))
}

async fn next(events: &mut Events) -> Result<Event<ConfigMap>, Error> {
    within("the next watcher item", events.next())
        .await
        .expect("the watcher never ends")
}

/// Reads one whole initial sync, skipping errors before it, and returns the listed names.
async fn initial_sync(events: &mut Events) -> BTreeSet<String> {
    loop {
        match next(events).await {
            Ok(Event::Init) => break,
            Ok(other) => panic!("expected Init, got {other:?}"),
            Err(_) => {}
        }
    }
    let mut names = BTreeSet::new();
    loop {
        match next(events).await.expect("no error during a healthy list") {
            Event::InitApply(cm) => assert!(names.insert(name(&cm)), "listed {} twice", name(&cm)),
            Event::InitDone => return names,
            other => panic!("unexpected {other:?} during the initial sync"),
        }
    }
}

fn names(prefix: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn initial_sync_lists_every_object_then_streams_live_changes() {
    init_tracing();
    let (_, _, api) = shared_env("watch-sync").await;
    create_configmaps(&api, "cm", 300, &[]).await;

    let mut events = watch(api.clone(), Config::default());
    assert_eq!(initial_sync(&mut events).await, names("cm", 300));

    create_configmaps(&api, "new", 1, &[]).await;
    let patch = Patch::Merge(json!({"data": {"changed": "yes"}}));
    api.patch("cm-7", &PatchParams::default(), &patch)
        .await
        .unwrap();
    api.delete("cm-8", &DeleteParams::default()).await.unwrap();

    let live: Vec<String> = [
        next(&mut events).await,
        next(&mut events).await,
        next(&mut events).await,
    ]
    .into_iter()
    .map(|item| match item.expect("live event") {
        Event::Apply(cm) => format!("Apply {}", name(&cm)),
        Event::Delete(cm) => format!("Delete {}", name(&cm)),
        other => panic!("unexpected {other:?}"),
    })
    .collect();
    assert_eq!(live, ["Apply new-0", "Apply cm-7", "Delete cm-8"]);
}

#[tokio::test]
async fn label_and_field_selectors_filter_on_the_server() {
    init_tracing();
    let (_, _, api) = shared_env("watch-select").await;
    create_configmaps(&api, "web", 5, &[("app", "web")]).await;
    create_configmaps(&api, "db", 4, &[("app", "db")]).await;

    let mut by_label = watch(api.clone(), Config::default().labels("app=db"));
    assert_eq!(initial_sync(&mut by_label).await, names("db", 4));

    let mut by_field = watch(api.clone(), Config::default().fields("metadata.name=web-3"));
    assert_eq!(
        initial_sync(&mut by_field).await,
        names("web", 5)
            .into_iter()
            .filter(|n| n == "web-3")
            .collect()
    );

    // A live change outside the selector never reaches the watcher; one inside does.
    create_configmaps(&api, "web-late", 1, &[("app", "web")]).await;
    create_configmaps(&api, "db-late", 1, &[("app", "db")]).await;
    match next(&mut by_label).await.unwrap() {
        Event::Apply(cm) => assert_eq!(name(&cm), "db-late-0"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn auto_strategy_falls_back_to_list_watch_on_a_server_without_streaming_lists() {
    init_tracing();
    let (_, _, api) = shared_env("watch-auto").await;
    create_configmaps(&api, "cm", 10, &[]).await;

    // Forcing streaming lists shows what this server says to them...
    let mut streaming = watch(api.clone(), Config::default().streaming_lists());
    let refused = next(&mut streaming)
        .await
        .expect_err("a v1.20 server refuses streaming lists");
    assert_eq!(refused.status_code(), Some(422), "{refused}");

    // ...and the automatic strategy (the default) takes that answer and lists instead.
    assert_eq!(
        Config::default().initial_list_strategy,
        InitialListStrategy::Auto
    );
    let mut auto = watch(api.clone(), Config::default());
    assert_eq!(initial_sync(&mut auto).await, names("cm", 10));
}

#[tokio::test]
async fn small_pages_list_every_object_exactly_once() {
    init_tracing();
    let (_, _, api) = shared_env("watch-pages").await;
    create_configmaps(&api, "cm", 100, &[]).await;

    let config = Config::default()
        .page_size(7)
        .initial_list_strategy(InitialListStrategy::ListWatch);
    let mut events = watch(api, config);
    assert_eq!(initial_sync(&mut events).await, names("cm", 100));
}

#[tokio::test]
async fn watch_from_a_compacted_version_relists_without_objects_deleted_meanwhile() {
    init_tracing();
    // Its own control plane: the watch cache off (so requests reach etcd) and a compaction
    // that must not disturb other tests.
    let (env, ns, api) = private_env("watch-gone").await;
    create_configmaps(&api, "cm", 20, &[]).await;

    let (proxy, cut_off_api) = cut_off(&env, &ns).await;
    let mut events = watch(cut_off_api, Config::default());
    assert_eq!(initial_sync(&mut events).await, names("cm", 20));

    // While the watcher is cut off: delete some, add some, and compact away the history.
    proxy.cut();
    delete_configmaps(&api, (0..5).map(|i| format!("cm-{i}"))).await;
    create_configmaps(&api, "late", 3, &[]).await;
    env.compact_etcd().await.unwrap();
    proxy.restore();

    // The watcher's resume point is gone: it must see a 410, then relist.
    let mut saw_gone = false;
    loop {
        match next(&mut events).await {
            Err(err) if err.status_code() == Some(410) => saw_gone = true,
            Err(_) => {} // connection errors while cut off
            Ok(Event::Init) => break,
            Ok(other) => panic!("expected a relist, got {other:?}"),
        }
    }
    assert!(saw_gone, "the relist followed a 410 Gone");
    let mut relisted = BTreeSet::new();
    loop {
        match next(&mut events).await.unwrap() {
            Event::InitApply(cm) => assert!(relisted.insert(name(&cm))),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: BTreeSet<String> = listed_versions(&api)
        .await
        .keys()
        .map(|k| k.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(relisted, expected);
    assert!(!relisted.contains("cm-0") && relisted.contains("late-2"));
}

#[tokio::test]
async fn watch_object_sees_create_update_and_delete() {
    init_tracing();
    let (_, _, api) = shared_env("watch-one").await;
    create_configmaps(&api, "other", 3, &[]).await;

    let mut stream = Box::pin(watch_object(api.clone(), "target-0"));
    let mut next_state = async || {
        within("watch_object item", stream.next())
            .await
            .unwrap()
            .unwrap()
    };
    assert!(next_state().await.is_none(), "absent at first");

    create_configmaps(&api, "target", 1, &[]).await;
    assert_eq!(
        next_state().await.map(|cm| name(&cm)).as_deref(),
        Some("target-0")
    );

    let patch = Patch::Merge(json!({"data": {"v": "2"}}));
    api.patch("target-0", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let updated = next_state().await.expect("still exists");
    assert_eq!(
        updated.data.unwrap().get("v").map(String::as_str),
        Some("2")
    );

    api.delete("target-0", &DeleteParams::default())
        .await
        .unwrap();
    assert!(next_state().await.is_none(), "deleted");
}

#[tokio::test]
async fn dropped_connection_resumes_without_relist_and_delivers_changes_made_meanwhile() {
    init_tracing();
    let (env, ns, api) = shared_env("watch-resume").await;
    create_configmaps(&api, "cm", 5, &[]).await;

    let (proxy, cut_off_api) = cut_off(env, &ns).await;
    let mut events = watch(cut_off_api, Config::default());
    assert_eq!(initial_sync(&mut events).await, names("cm", 5));

    proxy.cut();
    api.delete("cm-1", &DeleteParams::default()).await.unwrap();
    create_configmaps(&api, "late", 1, &[]).await;
    proxy.restore();

    // The history is still there, so the watcher resumes: no Init, just the two changes.
    let mut changes = Vec::new();
    while changes.len() < 2 {
        match next(&mut events).await {
            Ok(Event::Delete(cm)) => changes.push(format!("Delete {}", name(&cm))),
            Ok(Event::Apply(cm)) => changes.push(format!("Apply {}", name(&cm))),
            Ok(other) => panic!("a resumed watch must not relist, got {other:?}"),
            Err(_) => {} // connection errors while cut off
        }
    }
    assert_eq!(changes, ["Delete cm-1", "Apply late-0"]);
}

#[tokio::test]
async fn metadata_watcher_lists_and_watches_metadata_only() {
    init_tracing();
    let (_, _, api) = shared_env("watch-meta").await;
    create_configmaps(&api, "cm", 3, &[("tier", "meta")]).await;

    let mut events = Box::pin(kache_watch::metadata_watcher(
        api.clone(),
        Config::default(),
    ));
    let mut listed = BTreeSet::new();
    loop {
        match within("metadata event", events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Init => {}
            Event::InitApply(meta) => {
                assert_eq!(
                    meta.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("tier"))
                        .map(String::as_str),
                    Some("meta")
                );
                listed.insert(meta.metadata.name.unwrap());
            }
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(listed, names("cm", 3));
    api.delete("cm-0", &DeleteParams::default()).await.unwrap();
    match within("metadata delete", events.next())
        .await
        .unwrap()
        .unwrap()
    {
        Event::Delete(meta) => assert_eq!(meta.metadata.name.as_deref(), Some("cm-0")),
        other => panic!("unexpected {other:?}"),
    }
}
