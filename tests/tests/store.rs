//! The store fed by a real watcher (kache-testenv): readiness, live changes, indexes, and an
//! exact match with the server after a forced `410 Gone` relist; in both wire encodings
//! (JSON and protobuf) on the modern server.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::Writer;
use kache_tests::{
    Reflector, create_configmaps, cut_off_recorded, delete_all, eventually, listed_versions,
    on_each_server_and_wire, private_env, shared_env, stored_versions, within,
};
use kache_watch::Config;
use kube_client::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

on_each_server_and_wire! {
    async fn reflected_store_becomes_ready_and_follows_creates_updates_and_deletes(server: Server, wire: Wire) {
        let (_, ns, api) = shared_env(server, "store-live").await;
        create_configmaps(&api, "cm", 50, &[("tier", "a")]).await;

        let writer = Writer::new().with_index("tier", |cm: &ConfigMap| {
            cm.metadata
                .labels
                .iter()
                .flatten()
                .filter(|(k, _)| *k == "tier")
                .map(|(_, v)| v.clone())
                .collect()
        });
        let store = writer.as_reader();
        assert!(!store.is_synced());
        let reflector = Reflector::start_in(wire, api.clone(), Config::default(), writer);
        within("the store to be ready", store.wait_synced())
            .await
            .unwrap();
        assert_eq!(stored_versions(&store), listed_versions(&api).await);
        assert_eq!(store.by_index("tier", "a").unwrap().len(), 50);

        create_configmaps(&api, "new", 1, &[("tier", "b")]).await;
        let patch = Patch::Merge(json!({"metadata": {"labels": {"tier": "b"}}}));
        api.patch("cm-3", &PatchParams::default(), &patch)
            .await
            .unwrap();
        api.delete("cm-4", &DeleteParams::default()).await.unwrap();

        eventually("the store to match the server", || async {
            stored_versions(&store) == listed_versions(&api).await
        })
        .await;
        assert!(store.get(Some(&ns), "cm-4").is_none());
        let mut tier_b: Vec<String> = store
            .by_index("tier", "b")
            .unwrap()
            .iter()
            .map(|cm| cm.metadata.name.clone().unwrap())
            .collect();
        tier_b.sort();
        assert_eq!(
            tier_b,
            ["cm-3", "new-0"],
            "the index follows a label change"
        );
        assert_eq!(store.by_index("tier", "a").unwrap().len(), 48);
        assert!(matches!(store.resource_version(), Ok(Some(_))));
        drop(reflector);
    }
}

on_each_server_and_wire! {
    async fn store_equals_a_fresh_list_after_a_forced_410_relist(server: Server, wire: Wire) {
        let (env, ns, api) = private_env(server, "store-gone").await;
        create_configmaps(&api, "cm", 200, &[]).await;

        let (proxy, log, cut_off_api) = cut_off_recorded(&env, &ns).await;
        let writer = Writer::new();
        let store = writer.as_reader();
        let reflector = Reflector::start_in(wire, cut_off_api, Config::default(), writer);
        within("the store to be ready", store.wait_synced())
            .await
            .unwrap();
        let before: Vec<Arc<ConfigMap>> = store.state();
        let lists = || log.kinds().into_iter().filter(|k| k.is_list()).count();
        let lists_before = lists();

        proxy.cut();
        delete_all(&api, (0..40).map(|i| format!("cm-{i}"))).await.unwrap();
        create_configmaps(&api, "late", 10, &[]).await;
        let patch = Patch::Merge(json!({"data": {"changed": "yes"}}));
        api.patch("cm-100", &PatchParams::default(), &patch)
            .await
            .unwrap();
        env.compact_etcd().await.unwrap();
        proxy.restore();

        eventually("the store to match the server", || async {
            stored_versions(&store) == listed_versions(&api).await
        })
        .await;
        assert_eq!(store.len(), 170);
        assert!(
            lists() > lists_before,
            "the watcher relisted after the 410: {:?}",
            log.requests()
        );
        // Objects the relist showed unchanged kept their Arc: no second copy was made of them.
        let unchanged = store.get(Some(&ns), "cm-150").unwrap();
        let original = before
            .iter()
            .find(|cm| cm.metadata.name.as_deref() == Some("cm-150"))
            .unwrap();
        assert!(
            Arc::ptr_eq(&unchanged, original),
            "an unchanged object keeps its Arc across a relist"
        );
        let changed = store.get(Some(&ns), "cm-100").unwrap();
        assert_eq!(
            changed
                .data
                .as_ref()
                .unwrap()
                .get("changed")
                .map(String::as_str),
            Some("yes")
        );
        drop(reflector);
    }
}
