//! Unit tests of the store rules, through the public API and internal state.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_client::api::ObjectMeta;

use super::subscriber::{drain, versions};
use crate::{Error, Event, ObjectKey, ReflectExt, Store, Writer, store};

fn cm(ns: Option<&str>, name: &str, rv: u64) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: ns.map(str::to_owned),
            uid: Some(format!("uid-{}-{name}", ns.unwrap_or("-"))),
            resource_version: Some(rv.to_string()),
            labels: Some(BTreeMap::from([("app".to_owned(), format!("app-{rv}"))])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn app_label(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| *k == "app")
        .map(|(_, v)| v.clone())
        .collect()
}

fn names(mut objs: Vec<Arc<ConfigMap>>) -> Vec<String> {
    objs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    objs.iter()
        .map(|o| o.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn relist(writer: &mut Writer<ConfigMap>, objs: impl IntoIterator<Item = ConfigMap>) {
    writer.apply(Event::Init);
    for obj in objs {
        writer.apply(Event::InitApply(obj));
    }
    writer.apply(Event::InitDone);
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    const fn assert_send<T: Send>() {}
    assert_send_sync::<Store<ConfigMap>>();
    assert_send_sync::<ObjectKey>();
    assert_send_sync::<Error>();
    assert_send::<Writer<ConfigMap>>();
    assert_send_sync::<crate::ResourceVersion>();
    assert_send_sync::<crate::SubscriberHandle<ConfigMap>>();
};

#[test]
fn apply_then_get_shares_the_stored_arc() {
    let (store, mut writer) = store();
    let Event::Apply(returned) = writer.apply(Event::Apply(cm(Some("ns"), "a", 1))) else {
        panic!("apply must return Apply");
    };
    let got = store.get(Some("ns"), "a").expect("object is stored");
    assert!(Arc::ptr_eq(&returned, &got));
    assert_eq!(store.len(), 1);
    assert!(store.get(Some("other"), "a").is_none());
    assert!(
        store.get(None, "a").is_none(),
        "namespaced object needs its namespace"
    );
}

#[test]
fn cluster_scoped_object_is_found_with_any_namespace() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(None, "node", 1)));
    assert!(store.get(None, "node").is_some());
    assert!(store.get(Some("whatever"), "node").is_some());
    assert!(store.get_key(&ObjectKey::new(Some("ns"), "node")).is_some());
}

#[test]
fn delete_removes_object_and_unknown_delete_is_harmless() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(Some("ns"), "a", 1)));
    writer.apply(Event::Delete(cm(Some("ns"), "missing", 2)));
    assert_eq!(store.len(), 1);
    writer.apply(Event::Delete(cm(Some("ns"), "a", 3)));
    assert!(store.is_empty());
    assert!(store.by_namespace("ns").is_empty());
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("3").map(Some)
    );
}

#[test]
fn delete_during_relist_keeps_the_object_out_of_the_new_generation() {
    let (store, mut writer) = store();
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm(Some("ns"), "a", 1)));
    writer.apply(Event::InitApply(cm(Some("ns"), "b", 2)));
    writer.apply(Event::Delete(cm(Some("ns"), "a", 3)));
    writer.apply(Event::InitDone);
    assert!(
        store.get(Some("ns"), "a").is_none(),
        "a deleted object must not come back"
    );
    assert!(store.get(Some("ns"), "b").is_some());
    assert_eq!(store.len(), 1);
}

#[test]
fn apply_during_relist_is_kept_at_init_done_as_a_delete_stays_out() {
    let (store, mut writer) = store();
    relist(
        &mut writer,
        [cm(Some("ns"), "a", 1), cm(Some("ns"), "b", 2)],
    );
    let mut changes = store.subscribe();
    assert_eq!(drain(&mut changes).0.len(), 4, "the snapshot");
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm(Some("ns"), "a", 1)));
    writer.apply(Event::InitApply(cm(Some("ns"), "b", 2)));
    // Changes that arrive while the relist is being built are visible at once...
    writer.apply(Event::Apply(cm(Some("ns"), "a", 3)));
    writer.apply(Event::Apply(cm(Some("ns"), "c", 4)));
    writer.apply(Event::Delete(cm(Some("ns"), "b", 5)));
    assert_eq!(versions(&store), ["a@3", "c@4"]);
    // ...and `InitDone` neither undoes nor resurrects them.
    writer.apply(Event::InitDone);
    assert_eq!(versions(&store), ["a@3", "c@4"]);
    assert_eq!(
        drain(&mut changes).0,
        ["Apply(a)@3", "Apply(c)@4", "Delete(b)@5"],
        "each change once, and nothing at InitDone"
    );
}

#[test]
fn relist_drops_objects_missing_from_new_list() {
    let (store, mut writer) = store();
    relist(
        &mut writer,
        [cm(Some("ns"), "a", 1), cm(Some("ns"), "b", 2)],
    );
    relist(
        &mut writer,
        [cm(Some("ns"), "b", 2), cm(Some("ns"), "c", 3)],
    );
    assert_eq!(names(store.state()), ["b", "c"]);
    assert_eq!(names(store.by_namespace("ns")), ["b", "c"]);
}

#[test]
fn relist_is_invisible_until_init_done() {
    let (store, mut writer) = store();
    relist(&mut writer, [cm(Some("ns"), "a", 1)]);
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm(Some("ns"), "b", 2)));
    assert_eq!(names(store.state()), ["a"]);
    writer.apply(Event::InitDone);
    assert_eq!(names(store.state()), ["b"]);
}

#[test]
fn second_init_discards_unfinished_relist() {
    let (store, mut writer) = store();
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm(Some("ns"), "stale", 1)));
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm(Some("ns"), "fresh", 2)));
    writer.apply(Event::InitDone);
    assert_eq!(names(store.state()), ["fresh"]);
}

#[test]
fn init_apply_without_init_starts_a_relist() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(Some("ns"), "old", 1)));
    writer.apply(Event::InitApply(cm(Some("ns"), "new", 2)));
    assert_eq!(names(store.state()), ["old"]);
    writer.apply(Event::InitDone);
    assert_eq!(names(store.state()), ["new"]);
}

#[test]
fn init_done_without_relist_keeps_objects_and_marks_ready() {
    let (store, mut writer) = store();
    relist(&mut writer, [cm(Some("ns"), "a", 1)]);
    writer.apply(Event::InitDone);
    assert_eq!(names(store.state()), ["a"]);
    let (store, mut writer) = crate::store::<ConfigMap>();
    writer.apply(Event::InitDone);
    assert!(store.is_synced());
}

#[test]
fn unchanged_objects_keep_their_arc_across_relist() {
    let (store, mut writer) = store();
    relist(
        &mut writer,
        [cm(Some("ns"), "same", 1), cm(Some("ns"), "changed", 1)],
    );
    let same = store.get(Some("ns"), "same").unwrap();
    let changed = store.get(Some("ns"), "changed").unwrap();
    writer.apply(Event::Init);
    let Event::InitApply(buffered) = writer.apply(Event::InitApply(cm(Some("ns"), "same", 1)))
    else {
        panic!("InitApply must return InitApply");
    };
    assert!(
        Arc::ptr_eq(&buffered, &same),
        "InitApply returns the reused Arc"
    );
    writer.apply(Event::InitApply(cm(Some("ns"), "changed", 2)));
    writer.apply(Event::InitDone);
    assert!(Arc::ptr_eq(&store.get(Some("ns"), "same").unwrap(), &same));
    assert!(!Arc::ptr_eq(
        &store.get(Some("ns"), "changed").unwrap(),
        &changed
    ));
}

#[test]
fn readiness_flips_once_at_first_init_done() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(Some("ns"), "a", 1)));
    writer.apply(Event::Init);
    assert!(!store.is_synced());
    writer.apply(Event::InitDone);
    assert!(store.is_synced());
    writer.apply(Event::Init);
    assert!(
        store.is_synced(),
        "an unfinished relist does not make the store unready"
    );
}

#[tokio::test]
async fn wait_synced_resolves_at_first_init_done() {
    let (store, mut writer) = store::<ConfigMap>();
    let mut wait = Box::pin(store.wait_synced());
    assert!((&mut wait).now_or_never().is_none());
    writer.apply(Event::Init);
    assert!((&mut wait).now_or_never().is_none());
    writer.apply(Event::InitDone);
    assert_eq!(wait.now_or_never(), Some(Ok(())));
    drop(writer);
    assert_eq!(store.wait_synced().now_or_never(), Some(Ok(())));
}

#[tokio::test]
async fn wait_synced_fails_when_writer_dropped_first() {
    let (store, writer) = store::<ConfigMap>();
    let wait = tokio::spawn({
        let store = store.clone();
        async move { store.wait_synced().await }
    });
    drop(writer);
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("wait_synced must not hang")
        .expect("task must not panic");
    assert_eq!(result, Err(Error::WriterDropped));
}

#[test]
fn custom_index_follows_applies_that_change_values() {
    let (store, mut writer) = store();
    writer.add_index("app", app_label);
    writer.apply(Event::Apply(cm(Some("ns"), "a", 1)));
    assert_eq!(names(store.by_index("app", "app-1").unwrap()), ["a"]);
    writer.apply(Event::Apply(cm(Some("ns"), "a", 2)));
    assert!(store.by_index("app", "app-1").unwrap().is_empty());
    assert_eq!(names(store.by_index("app", "app-2").unwrap()), ["a"]);
    writer.apply(Event::Delete(cm(Some("ns"), "a", 3)));
    assert!(store.by_index("app", "app-2").unwrap().is_empty());
}

#[test]
fn custom_index_is_rebuilt_by_relist() {
    let (store, mut writer) = store();
    writer.add_index("app", app_label);
    relist(
        &mut writer,
        [cm(Some("ns"), "a", 1), cm(Some("ns"), "b", 1)],
    );
    assert_eq!(names(store.by_index("app", "app-1").unwrap()), ["a", "b"]);
    relist(&mut writer, [cm(Some("ns"), "b", 5)]);
    assert!(store.by_index("app", "app-1").unwrap().is_empty());
    assert_eq!(names(store.by_index("app", "app-5").unwrap()), ["b"]);
}

#[test]
fn index_added_late_covers_existing_objects() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(Some("ns"), "a", 1)));
    writer.add_index("app", app_label);
    assert_eq!(names(store.by_index("app", "app-1").unwrap()), ["a"]);
    assert_eq!(store.index_names(), ["app"]);
}

#[test]
fn unknown_index_is_an_error() {
    let (store, _writer) = store::<ConfigMap>();
    assert_eq!(
        store.by_index("nope", "x"),
        Err(Error::UnknownIndex {
            name: "nope".to_owned()
        })
    );
}

#[test]
fn by_namespace_excludes_cluster_scoped_and_other_namespaces() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(Some("a"), "x", 1)));
    writer.apply(Event::Apply(cm(Some("b"), "y", 1)));
    writer.apply(Event::Apply(cm(None, "z", 1)));
    assert_eq!(names(store.by_namespace("a")), ["x"]);
    assert_eq!(names(store.by_namespace("b")), ["y"]);
}

#[test]
fn a_store_never_asked_by_namespace_builds_no_namespace_index() {
    let (store, mut writer) = store();
    relist(&mut writer, [cm(Some("a"), "x", 1), cm(Some("b"), "y", 2)]);
    writer.apply(Event::Apply(cm(Some("a"), "w", 3)));
    writer.apply(Event::Delete(cm(Some("b"), "y", 4)));
    relist(&mut writer, [cm(Some("a"), "x", 5)]);
    assert!(!store.has_namespace_index());
    assert_eq!(store.len(), 1);
    writer.assert_indexes_exact();
}

#[test]
fn the_namespace_index_is_built_on_first_use_then_kept_and_rebuilt_with_each_relist() {
    let (store, mut writer) = store();
    relist(
        &mut writer,
        [
            cm(Some("a"), "x", 1),
            cm(Some("b"), "y", 2),
            cm(None, "z", 3),
        ],
    );
    assert!(!store.has_namespace_index());
    // The first call builds it from the visible generation.
    assert_eq!(names(store.by_namespace("a")), ["x"]);
    assert!(store.has_namespace_index());
    writer.assert_indexes_exact();
    // The writer keeps it from then on: new keys, deletes, a namespace emptied.
    writer.apply(Event::Apply(cm(Some("a"), "w", 4)));
    writer.apply(Event::Delete(cm(Some("b"), "y", 5)));
    writer.assert_indexes_exact();
    assert_eq!(names(store.by_namespace("a")), ["w", "x"]);
    assert!(store.by_namespace("b").is_empty());
    // A relist builds it for the new generation before the generation is visible.
    relist(&mut writer, [cm(Some("b"), "v", 6), cm(Some("c"), "u", 7)]);
    assert!(store.has_namespace_index());
    writer.assert_indexes_exact();
    assert_eq!(store.stale_index_entries(), 0);
    assert!(store.by_namespace("a").is_empty());
    assert_eq!(names(store.by_namespace("b")), ["v"]);
    assert_eq!(names(store.by_namespace("c")), ["u"]);
}

#[test]
fn readers_building_the_namespace_index_during_relists_see_whole_generations() {
    // Each generation holds the same names in one namespace, with the generation's number in
    // every object: a reader must see one number, and every name, whichever call built the
    // index (a first call, or the writer for the next relist).
    const NAMES: usize = 200;
    const GENERATIONS: u64 = 30;
    let (store, mut writer) = store();
    let generation = |g: u64| (0..NAMES).map(move |i| cm(Some("ns"), &format!("o{i}"), g));
    relist(&mut writer, generation(1));
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                scope.spawn(move || {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    let mut seen = 0;
                    while seen < GENERATIONS {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the last generation never became visible (saw {seen})"
                        );
                        let objs = store.by_namespace("ns");
                        assert_eq!(objs.len(), NAMES, "a whole generation");
                        let versions: std::collections::BTreeSet<_> = objs
                            .iter()
                            .map(|o| o.metadata.resource_version.clone())
                            .collect();
                        assert_eq!(versions.len(), 1, "one generation: {versions:?}");
                        seen = versions
                            .first()
                            .cloned()
                            .flatten()
                            .and_then(|rv| rv.parse().ok())
                            .unwrap_or(0);
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        for g in 2..=GENERATIONS {
            relist(&mut writer, generation(g));
        }
        for reader in readers {
            reader
                .join()
                .expect("a reader saw a torn or partial generation");
        }
    });
    writer.assert_indexes_exact();
    assert_eq!(store.stale_index_entries(), 0);
}

#[test]
fn transform_runs_before_storing() {
    let (mut writer, store) = {
        let w = Writer::<ConfigMap>::new().with_transform(|cm| cm.metadata.labels = None);
        let s = w.as_reader();
        (w, s)
    };
    writer.apply(Event::Apply(cm(Some("ns"), "a", 1)));
    assert!(
        store
            .get(Some("ns"), "a")
            .unwrap()
            .metadata
            .labels
            .is_none()
    );
}

#[test]
fn resource_version_after_relist_is_highest_listed() {
    let (store, mut writer) = store();
    relist(
        &mut writer,
        [cm(Some("ns"), "a", 9), cm(Some("ns"), "b", 10)],
    );
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("10").map(Some)
    );
    writer.apply(Event::Apply(cm(Some("ns"), "a", 11)));
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("11").map(Some)
    );
}

/// An initial sync without a transform takes a path of its own (writer.rs, `buffer_object`):
/// it must store, share and version exactly what the other paths do.
#[test]
fn an_initial_sync_stores_the_same_with_or_without_a_transform() {
    let listed = || {
        [
            cm(Some("ns"), "a", 7),
            cm(None, "b", 12),
            // Listed twice: the later copy wins, and its version counts.
            cm(Some("ns"), "a", 9),
            cm(Some("other"), "c", 3),
        ]
    };
    let plain = Writer::<ConfigMap>::new();
    let transformed = Writer::<ConfigMap>::new().with_transform(|cm| cm.data = None);
    for mut writer in [plain, transformed] {
        let store = writer.as_reader();
        writer.apply(Event::Init);
        for obj in listed() {
            let Event::InitApply(applied) = writer.apply(Event::InitApply(obj)) else {
                panic!("an InitApply yields an InitApply");
            };
            let key = ObjectKey::from_object(applied.as_ref());
            assert!(
                store.get(key.namespace(), key.name()).is_none(),
                "not visible before InitDone"
            );
            assert_eq!(
                writer
                    .relist_object(&key)
                    .map(|stored| Arc::ptr_eq(&stored, &applied)),
                Some(true)
            );
        }
        assert!(store.is_empty());
        writer.apply(Event::InitDone);
        let expected = [("/b", "12"), ("ns/a", "9"), ("other/c", "3")];
        let expected: BTreeMap<String, String> =
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).into();
        assert_eq!(crate::testing::stored_versions(&store), expected);
        assert_eq!(
            store.resource_version(),
            crate::ResourceVersion::parse("12").map(Some)
        );
        // A relist over the stored objects takes the other path, and reuses unchanged ones.
        let before = store.get(Some("ns"), "a").unwrap();
        relist(&mut writer, [cm(Some("ns"), "a", 9), cm(None, "b", 13)]);
        assert!(Arc::ptr_eq(&before, &store.get(Some("ns"), "a").unwrap()));
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.resource_version(),
            crate::ResourceVersion::parse("13").map(Some)
        );
    }
}

/// A version that is not comparable, listed in an initial sync, makes the store's version an
/// error, as it does when applied.
#[test]
fn an_initial_sync_with_a_version_not_comparable_is_opaque() {
    let (store, mut writer) = store();
    let mut odd = cm(Some("ns"), "b", 1);
    odd.metadata.resource_version = Some("b7".to_owned());
    relist(
        &mut writer,
        [cm(Some("ns"), "a", 5), odd, cm(Some("ns"), "c", 6)],
    );
    assert_eq!(store.len(), 3);
    assert!(matches!(
        store.resource_version(),
        Err(Error::NotComparable { .. })
    ));
}

#[test]
fn find_returns_matching_object() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm(Some("ns"), "a", 1)));
    writer.apply(Event::Apply(cm(Some("ns"), "b", 2)));
    let found = store.find(|cm| cm.metadata.resource_version.as_deref() == Some("2"));
    assert_eq!(found.unwrap().metadata.name.as_deref(), Some("b"));
    assert!(store.find(|_| false).is_none());
}

#[test]
fn object_without_name_does_not_panic() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(ConfigMap::default()));
    writer.apply(Event::InitApply(ConfigMap::default()));
    writer.apply(Event::Delete(ConfigMap::default()));
    writer.apply(Event::InitDone);
    // The nameless object is keyed by the empty name; the delete removed it from the live map
    // and from the relist, so the new generation is empty.
    assert_eq!(store.len(), 0);
}

#[tokio::test]
async fn reflect_applies_events_and_passes_errors_through() {
    let (store, writer) = store();
    let events: Vec<Result<Event<ConfigMap>, &str>> = vec![
        Ok(Event::Init),
        Ok(Event::InitApply(cm(Some("ns"), "a", 1))),
        Err("boom"),
        Ok(Event::InitDone),
    ];
    let out: Vec<_> = stream::iter(events).reflect(writer).collect().await;
    assert_eq!(out.len(), 4);
    assert_eq!(out[2], Err("boom"));
    let Ok(Event::InitApply(obj)) = &out[1] else {
        panic!("second item must be InitApply");
    };
    assert!(Arc::ptr_eq(obj, &store.get(Some("ns"), "a").unwrap()));
    assert!(store.is_synced());
}
