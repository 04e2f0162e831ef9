//! Subscribers fed by one real watcher (kache-testenv): three of them, one held back so that it
//! falls behind and is resynced, all converge to the server's state after a burst of 2,000
//! creates, updates and deletes and a forced `410 Gone` relist.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Delivery, SubscriberHandle, Writer};
use kache_tests::{
    Reflector, converges, create_configmaps, cut_off, delete_all, follow, on_each_server,
    private_env, within,
};
use kache_watch::Config;
use kube_client::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

on_each_server! {
    async fn three_subscribers_one_slow_converge_after_a_burst_and_a_forced_relist(server: Server) {
        let (env, ns, api) = private_env(server, "subs").await;
        create_configmaps(&api, "seed", 100, &[]).await;

        // A small buffer, so that the held-back subscriber must overflow during the burst.
        let writer: Writer<ConfigMap> = Writer::new().with_buffer(32);
        let store = writer.as_reader();
        let fast_sub = writer.subscribe();
        let ordered_sub = writer.subscribe_with(Delivery::Backpressure);
        // Held back: nothing polls it until after the burst.
        let slow_sub = store.subscribe();
        let handles: Vec<SubscriberHandle<ConfigMap>> = [&fast_sub, &ordered_sub, &slow_sub]
            .map(kache_store::Subscriber::handle)
            .into();
        let fast = follow(fast_sub, Duration::ZERO);
        let ordered = follow(ordered_sub, Duration::ZERO);

        let (proxy, cut_off_api) = cut_off(&env, &ns).await;
        let reflector = Reflector::start(cut_off_api, Config::default(), writer);
        within("the store to be ready", store.wait_synced())
            .await
            .unwrap();
        within("the fast subscribers' initial sync", async {
            handles[0].wait_synced().await.unwrap();
            handles[1].wait_synced().await.unwrap();
        })
        .await;
        assert!(
            !handles[2].is_synced(),
            "the held-back subscriber has consumed nothing yet"
        );

        // The burst, while the slow subscriber consumes nothing.
        burst(&api).await;

        // A forced relist: while the watcher is cut off, delete and add objects and compact the
        // history away, so that it must relist and find out what was deleted.
        proxy.cut();
        delete_all(&api, (0..50).map(|i| format!("seed-{i}"))).await.unwrap();
        create_configmaps(&api, "late", 20, &[]).await;
        env.compact_etcd().await.unwrap();
        proxy.restore();

        // Now let the held-back subscriber go, and check everyone converges.
        let slow = follow(slow_sub, Duration::ZERO);
        let converged = converges(&api, &store, &[fast.clone(), ordered.clone(), slow]).await;
        assert_eq!(converged.objects, 100 - 50 + 500 + 20);
        assert!(handles.iter().all(SubscriberHandle::is_synced));
        assert!(
            handles[2].resyncs() >= 1,
            "the slow subscriber fell a full buffer behind and was resynced"
        );
        assert_eq!(
            handles[1].resyncs(),
            0,
            "a backpressure subscriber is never resynced"
        );

        // The relist's deletions reached the subscribers that saw live events as Delete events.
        for view in [&fast, &ordered] {
            let deleted = view.deleted();
            for i in 0..50 {
                let key = format!("{ns}/seed-{i}");
                assert!(
                    deleted.contains(&key),
                    "{key} was deleted during the relist"
                );
            }
        }
        drop(reflector);
    }
}

/// 1,000 creates, 500 updates and 500 deletes: 2,000 changes.
async fn burst(api: &Api<ConfigMap>) {
    create_configmaps(api, "burst", 1000, &[]).await;
    futures::stream::iter(0..500)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                let patch = Patch::Merge(json!({"data": {"round": "2"}}));
                api.patch(&format!("burst-{i}"), &PatchParams::default(), &patch)
                    .await
                    .expect("update");
            }
        })
        .await;
    delete_all(api, (500..1000).map(|i| format!("burst-{i}")))
        .await
        .unwrap();
}
