//! A warm restart: a cache saves a snapshot, its process goes away, objects change meanwhile,
//! and the next process restores the snapshot and resumes its watch from the snapshot's
//! version. It prints what each start cost: time, bytes from the API server, requests.
//!
//! `cargo run -p kache-examples --example warm_restart`

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::{BoxError, start};
use kache_store::{ReflectExt, SnapshotFile, Store, WatchIdentity, Writer};
use kache_testenv::{Proxy, RequestKind, RequestLog, TestEnv, configmap, create_all};
use kache_watch::{Config, WatchStreamExt, watcher};
use kube_client::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};

const OBJECTS: usize = 3_000;

/// A `ConfigMap` with five labels and 512 bytes of data.
fn config_map(name: &str) -> ConfigMap {
    let labels = [
        ("l0", "v0"),
        ("l1", "v1"),
        ("l2", "v2"),
        ("l3", "v3"),
        ("l4", "v4"),
    ];
    configmap(name, &labels, 512)
}

/// One process's cache: an `Api` through a byte-counting proxy whose requests are recorded.
struct Process {
    proxy: Proxy,
    requests: RequestLog,
    api: Api<ConfigMap>,
}

impl Process {
    async fn start(env: &TestEnv, ns: &str) -> Result<Self, BoxError> {
        let proxy = Proxy::start(env.server_url()).await?;
        let requests = RequestLog::new();
        let client = requests.client(&proxy.config(env.config()))?;
        Ok(Self {
            proxy,
            requests,
            api: Api::namespaced(client, ns),
        })
    }

    /// Runs the cache until its store equals a fresh LIST; returns the store and the task.
    async fn sync(
        &self,
        writer: Writer<ConfigMap>,
        config: Config,
        truth: &Api<ConfigMap>,
    ) -> Result<(Store<ConfigMap>, tokio::task::JoinHandle<()>), BoxError> {
        let store = writer.as_reader();
        let events = watcher(self.api.clone(), config)
            .default_backoff()
            .reflect(writer);
        let task = tokio::spawn(events.for_each(|_| async {}));
        let expected = versions(truth.list(&ListParams::default()).await?.items.iter());
        while !(store.is_synced() && versions(store.state().iter().map(AsRef::as_ref)) == expected)
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok((store, task))
    }

    fn report(&self, label: &str, started: Instant) {
        let count = |kind| self.requests.count(kind);
        println!(
            "{label}: equal to a fresh LIST after {:.0} ms, {} KiB from the API server, \
             requests: {} LIST, {} streaming list, {} WATCH",
            started.elapsed().as_secs_f64() * 1000.0,
            self.proxy.bytes_from_server() / 1024,
            count(RequestKind::List),
            count(RequestKind::StreamingList),
            count(RequestKind::Watch),
        );
    }
}

fn versions<'a>(objects: impl Iterator<Item = &'a ConfigMap>) -> Vec<(String, String)> {
    let mut versions: Vec<_> = objects
        .map(|cm| {
            (
                cm.metadata.name.clone().unwrap_or_default(),
                cm.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    versions.sort();
    versions
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (env, ns) = start("warm").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    create_all(&api, (0..OBJECTS).map(|i| config_map(&format!("cm-{i}")))).await?;
    let folder = std::env::temp_dir().join(format!("kache-warm-example-{}", std::process::id()));
    std::fs::create_dir_all(&folder)?;
    // The identity ties the snapshot to this watch; the schema tag to what the store keeps.
    let file = SnapshotFile::new(
        folder.join("configmaps.snapshot"),
        WatchIdentity::of::<ConfigMap>(Some(&ns), &Config::default()),
    )
    .schema("example-v1");

    // The first process: a cold start, then a snapshot when it stops.
    let first = Process::start(&env, &ns).await?;
    let started = Instant::now();
    let mut writer = Writer::<ConfigMap>::new().with_name("configmaps");
    // No snapshot yet (logged at `info`); the store learns which cluster it serves, and its
    // snapshots record it.
    let _ = writer.restore(&file, &api).await;
    let writer = writer.save_on_drop(file.clone());
    let (store, task) = first.sync(writer, Config::default(), &api).await?;
    first.report(&format!("cold start, {OBJECTS} ConfigMaps"), started);
    drop(store);
    task.abort();
    // The aborted task drops its writer, which saves the snapshot.
    let _ = task.await;
    let size = std::fs::metadata(file.path())?.len();
    println!("snapshot saved on shutdown: {} KiB", size / 1024);

    // While it is down: 10 creates, 10 updates, 10 deletes.
    for i in 0..10 {
        api.create(&PostParams::default(), &config_map(&format!("new-{i}")))
            .await?;
        let patch = Patch::Merge(serde_json::json!({"data": {"changed": "yes"}}));
        api.patch(&format!("cm-{}", 100 + i), &PatchParams::default(), &patch)
            .await?;
        api.delete(&format!("cm-{i}"), &DeleteParams::default())
            .await?;
    }

    // The next process: restore, then resume the watch from the snapshot's version.
    let second = Process::start(&env, &ns).await?;
    let started = Instant::now();
    let mut writer = Writer::<ConfigMap>::new().with_name("configmaps");
    let config = match writer.restore(&file, &api).await {
        Ok(Some(restored)) => restored.resume(Config::default()),
        Ok(None) | Err(_) => Config::default(), // logged: a cold start
    };
    let (store, task) = second.sync(writer, config, &api).await?;
    second.report("warm restart, 30 changes while down", started);
    println!(
        "health: {} (ready at once; replaying until the server confirms a point: a bookmark)",
        store.health()
    );
    task.abort();
    let _ = std::fs::remove_dir_all(&folder);
    Ok(())
}
