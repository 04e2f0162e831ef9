//! Subscribers fed by one real watcher (kache-testenv): three of them, one held back so that it
//! falls behind and is resynced, all converge to the server's state after a burst of 2,000
//! creates, updates and deletes and a forced `410 Gone` relist.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::ReflectExt;
use kache_store::{Delivery, Subscriber, SubscriberHandle, Writer};
use kache_testenv::TestEnv;
use kache_tests::{
    Proxy, create_configmaps, delete_configmaps, eventually, init_tracing, key_of, listed_versions,
    version_of, within,
};
use kache_watch::{Backoff, Config, Event, WatchStreamExt, watcher};
use kube_client::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::Semaphore;

/// What one subscriber has reconstructed from its stream: `namespace/name` → resourceVersion.
#[derive(Clone, Default)]
struct View {
    visible: Arc<Mutex<BTreeMap<String, String>>>,
    deletes: Arc<Mutex<Vec<String>>>,
}

impl View {
    /// Consumes `subscriber`, applying each event the way a consumer keeping state would.
    /// `gate`, when given, lets an event through only when a permit is available.
    fn follow(&self, mut subscriber: Subscriber<ConfigMap>, gate: Option<Arc<Semaphore>>) {
        let view = self.clone();
        tokio::spawn(async move {
            let mut building: Option<BTreeMap<String, String>> = None;
            while let Some(event) = subscriber.next().await {
                if let Some(gate) = &gate {
                    gate.acquire().await.expect("gate open").forget();
                }
                match event {
                    Event::Init => building = Some(BTreeMap::new()),
                    Event::InitApply(cm) => {
                        building
                            .get_or_insert_default()
                            .insert(key_of(&cm), version_of(&cm));
                    }
                    Event::InitDone => {
                        *view.visible.lock().unwrap() = building.take().unwrap_or_default();
                    }
                    Event::Apply(cm) => {
                        view.visible
                            .lock()
                            .unwrap()
                            .insert(key_of(&cm), version_of(&cm));
                    }
                    Event::Delete(cm) => {
                        view.visible.lock().unwrap().remove(&key_of(&cm));
                        view.deletes.lock().unwrap().push(key_of(&cm));
                    }
                }
            }
        });
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        self.visible.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn three_subscribers_one_slow_converge_after_a_burst_and_a_forced_relist() {
    init_tracing();
    let env = TestEnv::builder()
        .watch_cache(false)
        .start()
        .await
        .expect("control plane");
    let ns = env.create_namespace("subs").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    create_configmaps(&api, "seed", 100, &[]).await;

    // A small buffer, so that the held-back subscriber must overflow during the burst.
    let writer: Writer<ConfigMap> = Writer::new().with_buffer(32);
    let store = writer.as_reader();
    let (fast, ordered, slow) = (View::default(), View::default(), View::default());
    let slow_gate = Arc::new(Semaphore::new(0));
    let subscribers = [
        writer.subscribe(),
        writer.subscribe_with(Delivery::Backpressure),
        store.subscribe(),
    ];
    let handles: Vec<SubscriberHandle> = subscribers.iter().map(Subscriber::handle).collect();
    let [fast_sub, ordered_sub, slow_sub] = subscribers;
    fast.follow(fast_sub, None);
    ordered.follow(ordered_sub, None);
    slow.follow(slow_sub, Some(slow_gate.clone()));

    let proxy = Proxy::start(env.server_url()).await.expect("proxy");
    let backoff = Backoff::default()
        .initial(Duration::from_millis(100))
        .max(Duration::from_secs(1));
    let events = watcher(
        Api::namespaced(
            proxy
                .client(env.config())
                .expect("client through the proxy"),
            &ns,
        ),
        Config::default(),
    )
    .backoff(backoff)
    .reflect(writer);
    let reflector = tokio::spawn(events.for_each(|_| async {}));
    within("the store to be ready", store.wait_until_ready())
        .await
        .unwrap();
    within("the fast subscribers' initial sync", async {
        handles[0].synced().await.unwrap();
        handles[1].synced().await.unwrap();
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
    delete_configmaps(&api, (0..50).map(|i| format!("seed-{i}"))).await;
    create_configmaps(&api, "late", 20, &[]).await;
    env.compact_etcd().await.unwrap();
    proxy.restore();

    // Now let the slow subscriber go, one event at a time, and check everyone converges.
    slow_gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let server = listed_versions(&api).await;
    assert_eq!(server.len(), 100 - 50 + 500 + 20);
    let store_view = || {
        store
            .state()
            .iter()
            .map(|cm| (key_of(cm), version_of(cm)))
            .collect::<BTreeMap<_, _>>()
    };
    eventually("the store to equal the server", || async {
        store_view() == server
    })
    .await;
    for (name, view) in [("fast", &fast), ("backpressure", &ordered), ("slow", &slow)] {
        eventually(
            &format!("the {name} subscriber to equal the server"),
            || async { view.snapshot() == server },
        )
        .await;
    }
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
        let deletes = view.deletes.lock().unwrap();
        for i in 0..50 {
            let key = format!("{ns}/seed-{i}");
            assert!(
                deletes.contains(&key),
                "{key} was deleted during the relist"
            );
        }
    }
    reflector.abort();
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
    delete_configmaps(api, (500..1000).map(|i| format!("burst-{i}"))).await;
}
