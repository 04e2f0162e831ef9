//! Reading your own writes against a real API server: once a wait resolves, the next read
//! of the store sees the write; without it, a read right after a write is often stale.
//! A wait resolves after a partition heals, ends cleanly at the caller's timeout while it
//! lasts, and a write outside the watch's selector is passed by a bookmark.
//!
//! The figures (stale reads without the wait, percentiles of the wait) are printed, not
//! asserted: run with `-- --nocapture --test-threads=1` to read them undisturbed.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Event, ResourceVersion, Store, Writer};
use kache_testenv::TestEnv;
use kache_tests::{Reflector, Server, configmap, cut_off, on_each_server, shared_env, within};
use kache_watch::Config;
use kube_client::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Patch-then-read cycles per run.
const CYCLES: usize = 1000;

/// A namespace on the shared control plane with one `ConfigMap` named `target`, and a store
/// fed by a watcher of that namespace (`api` for the watcher; the returned `Api` reaches the
/// server directly).
struct Watched {
    ns: String,
    api: Api<ConfigMap>,
    store: Store<ConfigMap>,
    _reflector: Reflector,
}

impl Watched {
    async fn start(server: Server, prefix: &str, config: Config) -> Self {
        let (_, ns, api) = shared_env(server, prefix).await;
        Self::with_watch_api(ns, api.clone(), api, config, Writer::new()).await
    }

    async fn with_watch_api(
        ns: String,
        api: Api<ConfigMap>,
        watch_api: Api<ConfigMap>,
        config: Config,
        writer: Writer<ConfigMap>,
    ) -> Self {
        api.create(
            &PostParams::default(),
            &configmap("target", &[("ryw", "yes")], 512),
        )
        .await
        .expect("create target");
        let store = writer.as_reader();
        let reflector = Reflector::start(watch_api, config, writer);
        within("the store to be ready", store.wait_synced())
            .await
            .unwrap();
        Self {
            ns,
            api,
            store,
            _reflector: reflector,
        }
    }

    /// Patches `target` with `cycle` in its data; returns what the server answered.
    async fn patch(&self, cycle: usize) -> ConfigMap {
        let patch = Patch::Merge(json!({"data": {"cycle": cycle.to_string()}}));
        self.api
            .patch("target", &PatchParams::default(), &patch)
            .await
            .expect("patch target")
    }

    /// Creates a `ConfigMap` named `name`, outside the `ryw=yes` selector; returns what the
    /// server answered.
    async fn create(&self, name: &str) -> ConfigMap {
        self.api
            .create(&PostParams::default(), &configmap(name, &[], 512))
            .await
            .expect("create")
    }

    /// Waits, for at most the tests' bound, until the store reflects `written`.
    async fn wait_for(&self, what: &str, written: &ConfigMap) {
        within(what, self.store.wait_for(written))
            .await
            .expect("the store reflects the write");
    }

    /// Whether the store's `target` is at `written`'s version or newer.
    fn reads_fresh(&self, written: &ConfigMap) -> bool {
        let cached = self.store.get(Some(&self.ns), "target").expect("target");
        version(&cached) >= version(written)
    }
}

fn version(obj: &ConfigMap) -> ResourceVersion {
    ResourceVersion::of(obj).expect("a comparable resourceVersion")
}

/// The `p`-th percentile of `samples` (sorted in place).
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

on_each_server! {
    async fn after_the_wait_every_read_sees_its_patch_1000_of_1000(server: Server) {
        let watched = Watched::start(server, "ryw-wait", Config::default()).await;
        let mut waits = Vec::with_capacity(CYCLES);
        let mut fresh = 0;
        for cycle in 0..CYCLES {
            let patched = watched.patch(cycle).await;
            let started = Instant::now();
            watched
                .wait_for("the store to reflect the patch", &patched)
                .await;
            waits.push(started.elapsed());
            fresh += usize::from(watched.reads_fresh(&patched));
        }
        println!(
            "with the wait: {fresh}/{CYCLES} reads fresh; wait p50 {:?}, p99 {:?}, max {:?}",
            percentile(&mut waits, 50),
            percentile(&mut waits, 99),
            percentile(&mut waits, 100),
        );
        assert_eq!(fresh, CYCLES, "a read after the wait missed its write");
    }
}

on_each_server! {
    async fn without_the_wait_a_read_right_after_a_patch_can_be_stale(server: Server) {
        let watched = Watched::start(server, "ryw-nowait", Config::default()).await;
        let mut stale = 0;
        let mut last = None;
        for cycle in 0..CYCLES {
            let patched = watched.patch(cycle).await;
            stale += usize::from(!watched.reads_fresh(&patched));
            last = Some(patched);
        }
        println!("without the wait: {stale}/{CYCLES} reads right after a patch were stale");
        // The store does catch up: the last patch arrives.
        let last = last.expect("at least one cycle");
        watched.wait_for("the store to catch up", &last).await;
        assert!(watched.reads_fresh(&last));
    }
}

on_each_server! {
    async fn a_create_is_found_once_the_wait_resolves(server: Server) {
        let watched = Watched::start(server, "ryw-create", Config::default()).await;
        for i in 0..50 {
            let name = format!("created-{i}");
            let created = watched.create(&name).await;
            watched
                .wait_for("the store to reflect the create", &created)
                .await;
            let cached = watched.store.get(Some(&watched.ns), &name);
            assert_eq!(
                cached.map(|cm| version(&cm)),
                Some(version(&created)),
                "{name}"
            );
        }
    }
}

on_each_server! {
    async fn a_delete_is_gone_once_the_wait_resolves(server: Server) {
        let watched = Watched::start(server, "ryw-delete", Config::default()).await;
        for i in 0..50 {
            let name = format!("deleted-{i}");
            let created = watched.create(&name).await;
            // Right after the create, with no wait: the deletion wait must still see the object
            // come and go, not resolve because the store has not seen it yet.
            watched
                .api
                .delete(&name, &DeleteParams::default())
                .await
                .unwrap();
            within(
                "the store to reflect the delete",
                watched.store.wait_for_deletion(&created),
            )
            .await
            .unwrap();
            assert!(
                watched.store.get(Some(&watched.ns), &name).is_none(),
                "{name}"
            );
        }
    }
}

on_each_server! {
    async fn a_write_during_a_partition_is_reflected_after_it_heals_and_a_timeout_ends_the_wait(server: Server) {
        let (env, ns, api) = shared_env(server, "ryw-cut").await;
        let env: &TestEnv = env;
        let (proxy, cut_off_api) = cut_off(env, &ns).await;
        let watched =
            Watched::with_watch_api(ns, api, cut_off_api, Config::default(), Writer::new()).await;

        proxy.cut();
        let patched = watched.patch(1).await;
        // The watcher cannot see the write while the partition lasts, so the caller's bound ends
        // the wait; the store is left as it was and later waits work.
        let cut_short =
            tokio::time::timeout(Duration::from_secs(2), watched.store.wait_for(&patched)).await;
        assert!(cut_short.is_err(), "resolved while cut off");
        assert!(!watched.reads_fresh(&patched));

        proxy.restore();
        let started = Instant::now();
        watched
            .wait_for("the wait to resolve once the partition heals", &patched)
            .await;
        assert!(watched.reads_fresh(&patched));
        println!(
            "after the partition healed, the wait resolved in {:?}",
            started.elapsed()
        );
    }
}

on_each_server! {
    async fn a_subscriber_wait_resolves_once_its_consumer_is_handed_the_write(server: Server) {
        let (_, ns, api) = shared_env(server, "ryw-sub").await;
        let writer = Writer::new();
        let mut subscriber = writer.subscribe();
        let handle = subscriber.handle();
        let watched = Watched::with_watch_api(ns, api.clone(), api, Config::default(), writer).await;
        within("the subscriber's first snapshot", async {
            while subscriber.next().await != Some(Event::InitDone) {}
        })
        .await;

        let patched = watched.patch(1).await;
        watched
            .wait_for("the store to reflect the patch", &patched)
            .await;
        // Nothing polls the subscriber, so its consumer cannot have been handed the write.
        let unconsumed = tokio::time::timeout(Duration::from_millis(200), handle.wait_for(&patched));
        assert!(
            unconsumed.await.is_err(),
            "resolved before the consumer got it"
        );

        let wait = tokio::spawn({
            let (handle, patched) = (handle.clone(), patched.clone());
            async move { handle.wait_for(&patched).await }
        });
        within("the consumer to be handed the patch", async {
            loop {
                match subscriber.next().await {
                    Some(Event::Apply(cm)) if version(&cm) >= version(&patched) => break,
                    Some(_) => {}
                    None => panic!("the subscriber ended"),
                }
            }
        })
        .await;
        within("the subscriber wait", wait).await.unwrap().unwrap();
    }
}

on_each_server! {
    async fn a_write_outside_the_selector_is_passed_by_a_bookmark(server: Server) {
        // Servers send a bookmark shortly before a watch times out (and newer ones about once a
        // minute): a short timeout brings one within the test's bound.
        let config = Config::default().labels("ryw=yes").timeout(5);
        let watched = Watched::start(server, "ryw-bookmark", config).await;
        let outside = watched.create("unwatched").await;
        let started = Instant::now();
        watched
            .wait_for("a bookmark to pass the write", &outside)
            .await;
        println!(
            "a write outside the selector was passed by a bookmark after {:?}",
            started.elapsed()
        );
        assert!(
            watched.store.get(Some(&watched.ns), "unwatched").is_none(),
            "outside the selector, never in the store"
        );
        assert_eq!(watched.store.len(), 1);
    }
}
