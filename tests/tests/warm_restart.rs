//! Warm restart against both real API servers: a store saved to a snapshot, a process gone,
//! changes made meanwhile, and a new store restored from the snapshot whose watch resumes
//! from its version. Each ends equal to a fresh LIST (subscribers too), and the requests the
//! new watcher made are counted: no LIST where the server still has the history.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    sync::atomic::{AtomicU64, Ordering},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Event, ReflectExt, Rejected, SnapshotFile, WatchIdentity, Writer};
use kache_tests::{
    Reflector, RequestKind, TestEnv, converges, create_configmaps, cut_off_recorded, delete_all,
    follow, key_of, listed_versions, on_each_server, own_env, private_env, shared_env, within,
};
use kache_watch::{Config, watcher};
use kube_client::{
    Api,
    api::{ListParams, Patch, PatchParams},
    core::{ApiResource, DynamicObject},
};
use serde_json::json;

/// A fresh folder for one test's snapshots, removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kache-warm-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, ns: &str) -> SnapshotFile {
        SnapshotFile::new(
            self.0.join("configmaps.snapshot"),
            WatchIdentity::of::<ConfigMap>(Some(ns), &Config::default()),
        )
        .schema("test-v1")
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The first process: finds no snapshot (which records the cluster), syncs a store from
/// `api`, waits until it equals a fresh LIST, saves it to `file`, and stops (the watch task
/// is aborted).
async fn first_run(api: &Api<ConfigMap>, file: &SnapshotFile) -> usize {
    let mut writer = Writer::<ConfigMap>::new();
    let first_start = writer.restore(file, api).await;
    assert_eq!(first_start, Ok(None), "no snapshot yet");
    let store = writer.as_reader();
    let reflector = Reflector::start(api.clone(), Config::default(), writer);
    within("the first sync", store.wait_synced()).await.unwrap();
    converges(api, &store, &[]).await;
    let saved = file.save(&store).expect("save");
    drop(reflector);
    saved.objects
}

/// Seeds `cm-0..cm-30` in `ns` and runs the first process: a folder holding its snapshot.
async fn seeded_and_saved(api: &Api<ConfigMap>, ns: &str, name: &str) -> (Folder, SnapshotFile) {
    create_configmaps(api, "cm", 30, &[]).await;
    let folder = Folder::new(name);
    let file = folder.file(ns);
    assert_eq!(first_run(api, &file).await, 30);
    (folder, file)
}

/// Creates 5, updates 5 and deletes 5 of `cm-0..cm-30`: the changes of a downtime.
async fn change_while_down(api: &Api<ConfigMap>) {
    create_configmaps(api, "new", 5, &[]).await;
    let patch = Patch::Merge(json!({"data": {"changed": "while down"}}));
    for i in 10..15 {
        api.patch(&format!("cm-{i}"), &PatchParams::default(), &patch)
            .await
            .unwrap();
    }
    delete_all(api, (20..25).map(|i| format!("cm-{i}")))
        .await
        .unwrap();
}

on_each_server! {
    /// The watcher alone: started from a version, it opens with the changes made since, as
    /// `Apply` and `Delete`, with no initial list.
    async fn a_watch_from_a_version_opens_with_the_changes_since(server: Server) {
        let (_, _, api) = shared_env(server, "warm-watch").await;
        create_configmaps(&api, "cm", 3, &[]).await;
        let version = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
        create_configmaps(&api, "new", 1, &[]).await;
        let patch = Patch::Merge(json!({"data": {"v": "2"}}));
        api.patch("cm-1", &PatchParams::default(), &patch).await.unwrap();
        delete_all(&api, ["cm-2"]).await.unwrap();

        let mut events = Box::pin(watcher(api, Config::default().resume_from(&version)));
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let event = within("a replayed change", events.try_next()).await.unwrap().unwrap();
            seen.push(match event {
                Event::Apply(cm) => format!("Apply {}", key_of(&cm).rsplit('/').next().unwrap()),
                Event::Delete(cm) => format!("Delete {}", key_of(&cm).rsplit('/').next().unwrap()),
                other => panic!("no initial list after a start from a version, got {other:?}"),
            });
        }
        assert_eq!(seen, ["Apply new-0", "Apply cm-1", "Delete cm-2"]);
    }
}

on_each_server! {
    /// The main case: the history is still on the server, so the restored store resumes with
    /// one WATCH and never lists; store and subscriber end equal to a fresh LIST.
    async fn a_restart_replays_the_changes_made_while_down_without_a_list(server: Server) {
        let (env, ns, api) = shared_env(server, "warm-replay").await;
        let (_folder, file) = seeded_and_saved(&api, &ns, "replay").await;
        change_while_down(&api).await;

        let mut writer = Writer::<ConfigMap>::new();
        let restored = writer.restore(&file, &api).await.expect("restore").expect("a snapshot");
        assert_eq!(restored.objects, 30);
        let store = writer.as_reader();
        assert!(store.is_synced(), "ready at once: a real past state");
        assert!(store.health().replaying);
        let view = follow(store.subscribe(), std::time::Duration::ZERO);

        let (_proxy, log, watched) = cut_off_recorded(env, &ns).await;
        let _reflector = Reflector::start(watched, restored.resume(Config::default()), writer);
        let converged = converges(&api, &store, std::slice::from_ref(&view)).await;
        assert_eq!(converged.objects, 30);
        let kinds = log.kinds();
        assert!(!kinds.is_empty() && kinds.iter().all(|k| *k == RequestKind::Watch), "{kinds:?}");
        let first = &log.requests()[0];
        assert_eq!(first.param("resourceVersion"), Some(restored.resource_version.clone()), "{first}");
        assert!(view.deleted().iter().filter(|k| k.contains("/cm-2")).count() == 5, "{:?}", view.deleted());
    }
}

on_each_server! {
    /// The history is gone (etcd compacted, no watch cache): a 410, then the ordinary relist,
    /// in which unchanged objects keep their restored copies.
    async fn a_restart_after_compaction_relists_and_keeps_unchanged_copies(server: Server) {
        let (env, ns, api) = private_env(server, "warm-gone").await;
        let (_folder, file) = seeded_and_saved(&api, &ns, "gone").await;
        change_while_down(&api).await;
        env.compact_etcd().await.unwrap();

        let mut writer = Writer::<ConfigMap>::new();
        let restored = writer.restore(&file, &api).await.expect("restore").expect("a snapshot");
        let store = writer.as_reader();
        let unchanged = store.get(Some(&ns), "cm-0").unwrap();
        let view = follow(store.subscribe(), std::time::Duration::ZERO);
        let (_proxy, log, watched) = cut_off_recorded(&env, &ns).await;
        let reflector = Reflector::start(watched, restored.resume(Config::default()), writer);
        converges(&api, &store, std::slice::from_ref(&view)).await;
        assert!(reflector.counters.gone.load(Ordering::Relaxed) >= 1);
        let kinds = log.kinds();
        assert_eq!(kinds[0], RequestKind::Watch, "{kinds:?}");
        assert!(kinds.iter().any(|k| k.is_list()), "{kinds:?}");
        assert!(
            Arc::ptr_eq(&unchanged, &store.get(Some(&ns), "cm-0").unwrap()),
            "an unchanged object keeps its restored copy through the relist"
        );
        assert!(!store.health().replaying, "the relist ends the replay");
    }
}

on_each_server! {
    /// The API server restarted while the process was down: the resumed watch replays or,
    /// where the restarted server's cache lacks the history, relists; either way the store
    /// ends equal to a fresh LIST.
    async fn a_restart_against_a_restarted_server_converges(server: Server) {
        let env = own_env(server).await;
        let ns = env.create_namespace("warm-restarted").await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        let (_folder, file) = seeded_and_saved(&api, &ns, "restarted").await;
        env.restart_apiserver().await.unwrap();
        change_while_down(&api).await;

        let mut writer = Writer::<ConfigMap>::new();
        let restored = writer.restore(&file, &api).await.expect("restore").expect("a snapshot");
        let store = writer.as_reader();
        let view = follow(store.subscribe(), std::time::Duration::ZERO);
        let _reflector = Reflector::start(api.clone(), restored.resume(Config::default()), writer);
        converges(&api, &store, std::slice::from_ref(&view)).await;
    }
}

on_each_server! {
    /// Every kind of bad snapshot: the store stays empty, and a cold start syncs it.
    async fn a_bad_snapshot_is_a_cold_start(server: Server) {
        let (env, ns, api) = shared_env(server, "warm-bad").await;
        create_configmaps(&api, "cm", 10, &[]).await;
        let folder = Folder::new("bad");
        let file = folder.file(&ns);
        first_run(&api, &file).await;
        let good = std::fs::read(file.path()).unwrap();
        let mut corrupt = good.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0x01;
        let mut format = good.clone();
        format[8] = 99;
        let other_watch = SnapshotFile::new(
            file.path(),
            WatchIdentity::of::<ConfigMap>(Some(&ns), &Config::default().labels("app=x")),
        )
        .schema("test-v1");
        let cases: Vec<(&str, Vec<u8>, SnapshotFile)> = vec![
            ("truncated", good[..good.len() - 10].to_vec(), file.clone()),
            ("corrupt", corrupt, file.clone()),
            ("foreign", b"apiVersion: v1\nkind: List\n".to_vec(), file.clone()),
            ("format version", format, file.clone()),
            ("another watch", good.clone(), other_watch),
            ("another schema", good.clone(), file.clone().schema("test-v2")),
        ];
        for (case, bytes, file) in cases {
            std::fs::write(file.path(), bytes).unwrap();
            let mut writer = Writer::<ConfigMap>::new();
            let err = writer.restore(&file, &api).await.expect_err(case);
            let kache_store::Error::SnapshotRejected { reason, .. } = &err else {
                panic!("{case}: {err}");
            };
            let expected_kind = match case {
                "truncated" => matches!(reason, Rejected::Truncated),
                "corrupt" => matches!(reason, Rejected::Corrupt),
                "foreign" => matches!(reason, Rejected::ForeignFormat),
                "format version" => matches!(reason, Rejected::FormatVersion { found: 99, .. }),
                "another watch" => matches!(reason, Rejected::Identity { .. }),
                _ => matches!(reason, Rejected::Schema { .. }),
            };
            assert!(expected_kind, "{case}: {err}");
            let store = writer.as_reader();
            assert!(store.is_empty() && !store.is_synced(), "{case}");

            let (_proxy, log, watched) = cut_off_recorded(env, &ns).await;
            let _reflector = Reflector::start(watched, Config::default(), writer);
            converges(&api, &store, &[]).await;
            assert!(log.kinds().iter().any(|k| k.is_list()), "{case}: a cold start lists");
        }
    }
}

on_each_server! {
    /// A snapshot saved while a relist was being built holds the generation readers saw, at
    /// its version: resuming from it converges.
    async fn a_snapshot_taken_during_a_relist_resumes_correctly(server: Server) {
        let (_, ns, api) = shared_env(server, "warm-relist").await;
        create_configmaps(&api, "cm", 30, &[]).await;
        let folder = Folder::new("relist");
        let file = folder.file(&ns);
        // Events by hand from real LISTs, as a watcher would send them.
        let mut writer = Writer::<ConfigMap>::new();
        let first = api.list(&ListParams::default()).await.unwrap();
        writer.apply(Event::Init);
        for cm in first.items {
            writer.apply(Event::InitApply(cm));
        }
        writer.apply(Event::InitDone);
        writer.apply_progress(first.metadata.resource_version.as_deref().unwrap());
        change_while_down(&api).await;
        let second = api.list(&ListParams::default()).await.unwrap();
        writer.apply(Event::Init);
        for cm in second.items.into_iter().take(10) {
            writer.apply(Event::InitApply(cm));
        }
        let saved = file.save(&writer.as_reader()).unwrap();
        assert_eq!((saved.objects, saved.resource_version), (30, first.metadata.resource_version.unwrap()));
        drop(writer);

        let mut writer = Writer::<ConfigMap>::new();
        let restored = writer.restore(&file, &api).await.unwrap().expect("a snapshot");
        let store = writer.as_reader();
        let _reflector = Reflector::start(api.clone(), restored.resume(Config::default()), writer);
        converges(&api, &store, &[]).await;
    }
}

on_each_server! {
    /// A save killed between its write and its rename leaves its temporary file beside the
    /// old snapshot: the old one is restored, and resuming from it converges.
    async fn a_crash_between_write_and_rename_restores_the_old_snapshot(server: Server) {
        let (_, ns, api) = shared_env(server, "warm-crash").await;
        let (folder, file) = seeded_and_saved(&api, &ns, "crash").await;
        let old = std::fs::read(file.path()).unwrap();
        change_while_down(&api).await;
        // The newer save, as far as it got: complete, under its temporary name.
        let newer = folder.0.join("newer");
        first_run(&api, &SnapshotFile::new(&newer, file.identity().clone()).schema("test-v1")).await;
        std::fs::rename(&newer, folder.0.join(".configmaps.snapshot.tmp-1-0")).unwrap();
        assert_eq!(std::fs::read(file.path()).unwrap(), old);

        let mut writer = Writer::<ConfigMap>::new();
        let restored = writer.restore(&file, &api).await.unwrap().expect("a snapshot");
        assert_eq!(restored.objects, 30, "the old snapshot");
        let store = writer.as_reader();
        let _reflector = Reflector::start(api.clone(), restored.resume(Config::default()), writer);
        converges(&api, &store, &[]).await;
    }
}

/// `namespace/name` → resourceVersion of dynamic objects.
fn dynamic_versions<'a>(
    objects: impl IntoIterator<Item = &'a DynamicObject>,
) -> BTreeMap<String, String> {
    objects
        .into_iter()
        .map(|obj| {
            let meta = &obj.metadata;
            (
                format!(
                    "{}/{}",
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default()
                ),
                meta.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

on_each_server! {
    /// Dynamic objects (`DynamicObject`, the type of CRDs known at run time) restart warm too.
    async fn dynamic_objects_restart_warm(server: Server) {
        let (env, ns, api) = shared_env(server, "warm-dynamic").await;
        create_configmaps(&api, "cm", 30, &[]).await;
        let resource = ApiResource::erase::<ConfigMap>(&());
        let dynamic: Api<DynamicObject> = Api::namespaced_with(env.client(), &ns, &resource);
        let folder = Folder::new("dynamic");
        let file = SnapshotFile::new(
            folder.0.join("widgets.snapshot"),
            WatchIdentity::new::<DynamicObject>(&resource, Some(&ns), &Config::default()),
        );

        let writer = Writer::<DynamicObject>::new();
        let store = writer.as_reader();
        let first = AbortOnDrop(tokio::spawn(drive(watcher(dynamic.clone(), Config::default()), writer)));
        within("the first sync", store.wait_synced()).await.unwrap();
        kache_tests::eventually("the first store equals a LIST", || async {
            dynamic_versions(store.state().iter().map(AsRef::as_ref)) == listed_versions(&api).await
        })
        .await;
        file.save(&store).unwrap();
        drop(first);
        change_while_down(&api).await;

        let mut writer = Writer::<DynamicObject>::new();
        let restored = writer.restore(&file, &dynamic).await.unwrap().expect("a snapshot");
        let store = writer.as_reader();
        let (proxy, log, _) = cut_off_recorded(env, &ns).await;
        let client = log.client(&proxy.config(env.config())).unwrap();
        let watched: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
        let _second = AbortOnDrop(tokio::spawn(
            drive(watcher(watched, restored.resume(Config::default())), writer),
        ));
        kache_tests::eventually("the restored store equals a LIST", || async {
            dynamic_versions(store.state().iter().map(AsRef::as_ref)) == listed_versions(&api).await
        })
        .await;
        let kinds = log.kinds();
        assert!(kinds.iter().all(|k| *k == RequestKind::Watch), "{kinds:?}");
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies a watch stream to a writer until the task running it is aborted.
async fn drive<K, St>(events: St, writer: Writer<K>)
where
    St: futures::Stream<Item = Result<Event<K>, kache_watch::Error>> + Send,
    K: kube_client::Resource + Send + Sync + 'static,
{
    events.reflect(writer).for_each(|_| async {}).await;
}

/// The reason `restore` gave for refusing a snapshot.
fn refusal(err: &kache_store::Error) -> &Rejected {
    match err {
        kache_store::Error::SnapshotRejected { reason, .. } => reason,
        other => panic!("not a refused snapshot: {other}"),
    }
}

/// Writes to a `ConfigMap` `tick-0` through `api` until `env`'s etcd revision is past `version`:
/// the cluster's history then holds that version.
async fn advance_past(env: &TestEnv, api: &Api<ConfigMap>, version: u64) {
    create_configmaps(api, "tick", 1, &[]).await;
    for i in 0..20_000 {
        if u64::try_from(env.etcd_revision().await.unwrap()).unwrap() > version {
            return;
        }
        let patch = Patch::Merge(json!({"data": {"tick": i.to_string()}}));
        api.patch("tick-0", &PatchParams::default(), &patch)
            .await
            .unwrap();
    }
    panic!("etcd did not pass revision {version}");
}

/// The newest resourceVersion among `api`'s objects.
async fn newest_version(api: &Api<ConfigMap>) -> u64 {
    listed_versions(api)
        .await
        .values()
        .map(|rv| rv.parse::<u64>().unwrap())
        .max()
        .unwrap()
}

/// Syncs a store from `api` without restoring first (so the store never learns the cluster's
/// uid) and saves it to `file`: a snapshot as a caller that may not read `kube-system`
/// saves one. Returns its version.
async fn saved_without_cluster(api: &Api<ConfigMap>, file: &SnapshotFile) -> u64 {
    let writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    let reflector = Reflector::start(api.clone(), Config::default(), writer);
    converges(api, &store, &[]).await;
    let saved = file.save(&store).expect("save");
    drop(reflector);
    saved.resource_version.parse().unwrap()
}

on_each_server! {
    /// Two clusters, as a laptop's `kind` cluster deleted and created again, or a kubeconfig
    /// switched, would give: a snapshot of 30 ConfigMaps taken on A, restored with the
    /// process pointed at B (same kind, namespace and selectors; B further along, so the
    /// snapshot's version lies inside B's history, and B's objects older than it). `restore`
    /// refuses it before the store serves anything, by the cluster's uid, with one warning;
    /// a snapshot that records no uid (its writer could not read `kube-system`) is refused by
    /// B's first object, which the snapshot should hold and does not. Each cold start that
    /// follows ends equal to B.
    async fn a_snapshot_of_another_cluster_is_refused_before_the_store_serves_it(server: Server) {
        let (a_env, b_env) = tokio::join!(own_env(server), own_env(server));
        let ns = a_env.create_namespace("warm-clusters").await.unwrap();
        let namespace: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::all(b_env.client()).create(&kube_client::api::PostParams::default(), &namespace).await.unwrap();
        let a: Api<ConfigMap> = Api::namespaced(a_env.client(), &ns);
        let b: Api<ConfigMap> = Api::namespaced(b_env.client(), &ns);
        // B's objects first, then A's history past them, then B's past A's snapshot.
        create_configmaps(&b, "b", 30, &[]).await;
        let b_objects = newest_version(&b).await;
        advance_past(&a_env, &a, b_objects).await;
        let folder = Folder::new("clusters");
        let (file, unknown) = (folder.file(&ns), SnapshotFile::new(
            folder.0.join("no-uid.snapshot"),
            WatchIdentity::of::<ConfigMap>(Some(&ns), &Config::default()),
        ));
        delete_all(&a, ["tick-0"]).await.unwrap();
        create_configmaps(&a, "a", 30, &[]).await;
        assert_eq!(first_run(&a, &file).await, 30);
        let snapshot_version = saved_without_cluster(&a, &unknown).await;
        advance_past(&b_env, &b, snapshot_version).await;

        let (warnings, _log) = kache_tests::count_store_warnings();
        for (case, file) in [("the cluster's uid", &file), ("B's first object", &unknown)] {
            let mut writer = Writer::<ConfigMap>::new();
            let before = warnings.load(Ordering::Relaxed);
            let err = writer.restore(file, &b).await.expect_err(case);
            match (case, refusal(&err)) {
                ("the cluster's uid", Rejected::OtherCluster { expected, found }) => {
                    assert_ne!(expected, found);
                }
                ("B's first object", Rejected::Diverged { object }) => {
                    assert_eq!(*object, format!("{ns}/b-0"));
                }
                (_, other) => panic!("{case}: refused for another reason: {other}"),
            }
            assert_eq!(warnings.load(Ordering::Relaxed) - before, 1, "{case}: one warning");
            let store = writer.as_reader();
            assert!(store.is_empty() && !store.is_synced(), "{case}: nothing served");
            let _reflector = Reflector::start(b.clone(), Config::default(), writer);
            converges(&b, &store, &[]).await;
        }
    }
}

on_each_server! {
    /// A snapshot from the future of its own cluster, as etcd restored from a backup leaves
    /// one (the same `kube-system` uid, a version the server has not reached): `restore`
    /// refuses it with two requests, the namespace's GET and a LIST of one object's metadata,
    /// before any WATCH; a cold start follows.
    async fn a_snapshot_ahead_of_its_server_is_refused_in_one_round_trip(server: Server) {
        let (env, ns, api) = shared_env(server, "warm-ahead").await;
        create_configmaps(&api, "cm", 10, &[]).await;
        let folder = Folder::new("ahead");
        let file = folder.file(&ns);
        // A store that knows the cluster (its restore found no file), synced and saved at a
        // version this server has not reached.
        let mut writer = Writer::<ConfigMap>::new();
        let (warnings, _log) = kache_tests::count_store_warnings();
        assert_eq!(writer.restore(&file, &api).await, Ok(None), "no file yet");
        assert_eq!(warnings.load(Ordering::Relaxed), 0, "a first start is no warning");
        let list = api.list(&ListParams::default()).await.unwrap();
        let listed: u64 = list.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        writer.apply(Event::Init);
        for cm in list.items {
            writer.apply(Event::InitApply(cm));
        }
        writer.apply(Event::InitDone);
        writer.apply_progress(&(listed + 1_000_000).to_string());
        file.save(&writer.as_reader()).unwrap();
        create_configmaps(&api, "new", 2, &[]).await;

        let (_proxy, log, watched) = cut_off_recorded(env, &ns).await;
        let mut writer = Writer::<ConfigMap>::new();
        let err = writer.restore(&file, &watched).await.unwrap_err();
        let Rejected::AheadOfServer { expected, found } = refusal(&err) else {
            panic!("refused for another reason: {err}");
        };
        assert_eq!(*found, (listed + 1_000_000).to_string());
        assert!(expected.parse::<u64>().unwrap() < listed + 1_000_000);
        let requests = log.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests.iter().any(|r| r.method() == "GET" && r.path() == "/api/v1/namespaces/kube-system"), "{requests:?}");
        assert!(requests.iter().any(|r| r.path().ends_with("/configmaps") && r.param("limit").as_deref() == Some("1")), "{requests:?}");
        let store = writer.as_reader();
        assert!(store.is_empty() && !store.is_synced());
        let _reflector = Reflector::start(watched, Config::default(), writer);
        converges(&api, &store, &[]).await;
    }
}

on_each_server! {
    /// The watcher on its own, resumed by hand from a version the server has not reached:
    /// the server answers the WATCH with silence, and once that watch ends (a short
    /// server-side timeout here) with no event and no bookmark, the watcher lists instead of
    /// waiting forever; the list's version replaces the one it was given.
    async fn a_watch_from_a_version_the_server_has_not_reached_falls_back_to_a_list(server: Server) {
        let (env, ns, api) = shared_env(server, "warm-unreached").await;
        create_configmaps(&api, "cm", 10, &[]).await;
        let list = api.list(&ListParams::default()).await.unwrap();
        let listed: u64 = list.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        let mut writer = Writer::<ConfigMap>::new();
        writer.apply(Event::Init);
        for cm in list.items {
            writer.apply(Event::InitApply(cm));
        }
        writer.apply(Event::InitDone);
        let unreached = (listed + 1_000_000).to_string();
        create_configmaps(&api, "new", 2, &[]).await;

        let store = writer.as_reader();
        let (_proxy, log, watched) = cut_off_recorded(env, &ns).await;
        let config = Config::default().timeout(3).resume_from(&unreached);
        let _reflector = Reflector::start(watched, config, writer);
        converges(&api, &store, &[]).await;
        let kinds = log.kinds();
        assert_eq!(kinds[0], RequestKind::Watch, "{kinds:?}");
        assert!(kinds.iter().any(|k| k.is_list()), "{kinds:?}");
        let version = store.resource_version().unwrap().unwrap().as_u64().unwrap();
        assert!(version < listed + 1_000_000, "the list's version is the store's");
    }
}
