//! The protobuf wire mode (`protobuf_watcher`, `Proto<T>`) against both real API servers:
//! every initial-list strategy syncs and follows the same objects a JSON LIST shows, into an
//! unchanged kache-store; error answers become the JSON path's errors; a real `410 Gone`
//! relists; bookmarks advance the store's version; managedFields are dropped unless kept.

use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_pb::api::core::v1::ConfigMap as PbConfigMap;
use kache_store::{ReflectExt, Store, Writer};
use kache_tests::{
    create_configmaps, cut_off, delete_all, eventually, on_each_server, private_env, proto_api,
    quick_backoff, shared_env, within,
};
use kache_watch::{
    Config, Error, Event, InitialListStrategy, Proto, WatchStreamExt, protobuf_watcher, watcher,
};
use kube_client::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

type Cm = Proto<PbConfigMap>;
type Events = Pin<Box<dyn Stream<Item = Result<Event<Arc<Cm>>, Error>> + Send>>;

/// What a test compares of each object: resourceVersion, labels and data.
type Seen = BTreeMap<String, (String, BTreeMap<String, String>, BTreeMap<String, String>)>;

/// A protobuf watcher that retries quickly, applied to `writer`.
fn watch_into(api: &Api<ConfigMap>, config: Config, writer: Writer<Cm>) -> Events {
    Box::pin(
        protobuf_watcher(proto_api(api), config)
            .backoff(quick_backoff())
            .reflect(writer),
    )
}

async fn next(events: &mut Events) -> Result<Event<Arc<Cm>>, Error> {
    within("the next watcher item", events.next())
        .await
        .expect("the watcher never ends")
}

/// Reads items until `InitDone`, failing on any error.
async fn until_synced(events: &mut Events) {
    loop {
        if let Event::InitDone = next(events).await.expect("no error during a healthy sync") {
            return;
        }
    }
}

/// The objects of a JSON LIST.
async fn json_list(api: &Api<ConfigMap>) -> Seen {
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items
        .into_iter()
        .map(|cm| {
            (
                cm.name_any(),
                (
                    cm.resource_version().unwrap_or_default(),
                    cm.metadata.labels.clone().unwrap_or_default(),
                    cm.data.clone().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// The objects in a store of protobuf-decoded objects.
fn stored(store: &Store<Cm>) -> Seen {
    store
        .state()
        .iter()
        .map(|cm| {
            (
                cm.name_any(),
                (
                    cm.resource_version().unwrap_or_default(),
                    cm.labels().clone(),
                    cm.data.clone(),
                ),
            )
        })
        .collect()
}

fn strategies(server: kache_tests::Server) -> Vec<Config> {
    let mut configs = vec![
        Config::default()
            .initial_list_strategy(InitialListStrategy::ListWatch)
            .page_size(7),
        // managedFields are dropped by default, as in JSON; one strategy keeps them.
        Config::default()
            .initial_list_strategy(InitialListStrategy::Auto)
            .keep_managed_fields(),
    ];
    if server.serves_streaming_lists() {
        configs.push(Config::default().streaming_lists());
    }
    configs
}

on_each_server! {
    async fn every_strategy_syncs_and_follows_what_a_json_list_shows(server: Server) {
        let (_, _, api) = shared_env(server, "proto-sync").await;
        create_configmaps(&api, "cm", 60, &[("app", "web"), ("tier", "front")]).await;

        for (round, config) in strategies(server).into_iter().enumerate() {
            let strategy = config.initial_list_strategy;
            let keep_managed_fields = config.keep_managed_fields;
            let writer = Writer::<Cm>::new();
            let store = writer.as_reader();
            let mut events = watch_into(&api, config, writer);
            until_synced(&mut events).await;
            assert_eq!(stored(&store), json_list(&api).await, "{strategy:?} initial sync");
            // The metadata converted from protobuf is what JSON gives, field for field.
            for mut cm in api.list(&ListParams::default()).await.unwrap() {
                let proto = store.get(api.namespace(), &cm.name_any()).unwrap();
                if keep_managed_fields {
                    assert!(cm.metadata.managed_fields.is_some(), "the server records them");
                } else {
                    cm.metadata.managed_fields = None;
                }
                assert_eq!(proto.meta(), &cm.metadata, "{strategy:?}");
            }

            // Live changes in protobuf: a create, an update, a delete.
            create_configmaps(&api, &format!("new{round}"), 1, &[("app", "web")]).await;
            let patch = Patch::Merge(json!({"data": {"changed": format!("round {round}")}}));
            api.patch("cm-7", &PatchParams::default(), &patch).await.unwrap();
            delete_all(&api, [format!("cm-{}", 10 + round)]).await.unwrap();
            let mut live = Vec::new();
            while live.len() < 3 {
                match next(&mut events).await.expect("live event") {
                    Event::Apply(cm) => live.push(format!("Apply {}", cm.name_any())),
                    Event::Delete(cm) => live.push(format!("Delete {}", cm.name_any())),
                    other => panic!("{strategy:?}: unexpected {other:?}"),
                }
            }
            assert_eq!(
                live,
                [
                    format!("Apply new{round}-0"),
                    "Apply cm-7".to_owned(),
                    format!("Delete cm-{}", 10 + round)
                ],
                "{strategy:?}"
            );
            assert_eq!(stored(&store), json_list(&api).await, "{strategy:?} after live changes");
            let cm7 = store.get(api.namespace(), "cm-7").expect("cm-7 stored");
            assert_eq!(cm7.data["changed"], format!("round {round}"));
            assert_eq!(cm7.data["payload"].len(), 512);
        }
    }
}

on_each_server! {
    /// An error answer comes back in protobuf; it must read as the same `Status` the JSON
    /// path reads, so that codes, classes and the watcher's reactions agree.
    async fn error_answers_are_the_same_errors_as_in_json(server: Server) {
        let (_, _, api) = shared_env(server, "proto-errors").await;
        for config in strategies(server) {
            let config = config.labels("app in (");
            let strategy = config.initial_list_strategy;
            let mut json = Box::pin(watcher(api.clone(), config.clone()));
            let mut proto = Box::pin(protobuf_watcher(proto_api(&api), config));
            let json_err = within("json", json.next()).await.unwrap().unwrap_err();
            let proto_err = within("protobuf", proto.next()).await.unwrap().unwrap_err();
            assert_eq!(proto_err.kind(), json_err.kind(), "{strategy:?}: {proto_err}");
            assert_eq!(proto_err.status_code(), Some(400), "{strategy:?}: {proto_err}");
            assert_eq!(proto_err.status_code(), json_err.status_code(), "{strategy:?}");
            assert_eq!(proto_err.class(), json_err.class(), "{strategy:?}");
            assert_eq!(proto_err.to_string(), json_err.to_string(), "{strategy:?}");
        }
    }
}

on_each_server! {
    async fn watch_from_a_compacted_version_relists_in_protobuf(server: Server) {
        let (env, ns, api) = private_env(server, "proto-gone").await;
        create_configmaps(&api, "cm", 20, &[]).await;

        let (proxy, cut_off_api) = cut_off(&env, &ns).await;
        let writer = Writer::<Cm>::new();
        let store = writer.as_reader();
        let mut events = watch_into(&cut_off_api, Config::default(), writer);
        until_synced(&mut events).await;
        assert_eq!(stored(&store), json_list(&api).await);

        proxy.cut();
        delete_all(&api, (0..5).map(|i| format!("cm-{i}"))).await.unwrap();
        create_configmaps(&api, "late", 3, &[]).await;
        env.compact_etcd().await.unwrap();
        proxy.restore();

        let mut saw_gone = false;
        loop {
            match next(&mut events).await {
                Err(err) if err.status_code() == Some(410) => saw_gone = true,
                Err(err) => assert!(err.protobuf().is_none(), "decoding failed: {err}"),
                Ok(Event::Init) => break,
                Ok(other) => panic!("expected a relist, got {other:?}"),
            }
        }
        assert!(saw_gone, "the relist followed a 410 Gone");
        until_synced(&mut events).await;
        let relisted = stored(&store);
        assert_eq!(relisted, json_list(&api).await);
        assert!(!relisted.contains_key("cm-0") && relisted.contains_key("late-2"));
    }
}

on_each_server! {
    async fn bookmarks_advance_the_store_version_in_protobuf(server: Server) {
        let (_, _, api) = shared_env(server, "proto-bookmark").await;
        create_configmaps(&api, "watched", 1, &[("pb", "yes")]).await;
        // Servers send a bookmark shortly before a watch times out: a short timeout brings
        // one within the test's bound.
        let config = Config::default().labels("pb=yes").timeout(5);
        let writer = Writer::<Cm>::new();
        let store = writer.as_reader();
        let mut events = watch_into(&api, config, writer);
        until_synced(&mut events).await;
        let driver = tokio::spawn(async move {
            while let Some(item) = events.next().await {
                if let Err(err) = item {
                    assert!(err.protobuf().is_none(), "decoding failed: {err}");
                }
            }
        });

        create_configmaps(&api, "outside", 1, &[]).await;
        let outside: u64 = json_list(&api).await["outside-0"].0.parse().unwrap();
        eventually("a bookmark to pass the write outside the selector", || async {
            store
                .resource_version()
                .ok()
                .flatten()
                .and_then(|rv| rv.as_u64())
                .is_some_and(|rv| rv >= outside)
        })
        .await;
        assert_eq!(store.len(), 1, "outside the selector, never in the store");
        driver.abort();
    }
}
