//! Snapshots: save and restore, every kind of bad file, failed saves, and exact round-trips
//! of k8s-openapi types, `DynamicObject` and `PartialObjectMeta` through the format.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodCondition,
    PodSpec, PodStatus, Probe, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{ByteString, jiff};
use kache_watch::Config;
use kube_client::Resource;
use kube_client::api::{ObjectMeta, TypeMeta};
use kube_client::core::{DynamicObject, PartialObjectMeta};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::{Error, Event, Rejected, SnapshotFile, WatchIdentity, Writer};

/// A fresh folder under the system temp folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("kache-snapshot-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cm(name: &str, rv: u64) -> ConfigMap {
    let mut cm = super::subscriber::cm(name, rv);
    cm.metadata.labels = Some(BTreeMap::from([("app".to_owned(), format!("app-{rv}"))]));
    cm.data = Some(BTreeMap::from([("k".to_owned(), "v".repeat(40))]));
    cm
}

fn identity() -> WatchIdentity {
    WatchIdentity::of::<ConfigMap>(Some("ns"), &Config::default())
}

fn file_at(path: &Path) -> SnapshotFile {
    SnapshotFile::new(path, identity()).schema("v1")
}

/// A synced writer holding `cm-0` .. `cm-{n-1}` at versions 1..=n, listed at version `n + 5`.
fn synced(n: u64) -> Writer<ConfigMap> {
    let mut writer = Writer::new().with_index("app", app);
    writer.apply(Event::Init);
    for i in 0..n {
        writer.apply(Event::InitApply(cm(&format!("cm-{i}"), i + 1)));
    }
    writer.apply(Event::InitDone);
    writer.apply_progress(&(n + 5).to_string());
    writer
}

fn app(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .labels
        .iter()
        .flatten()
        .map(|(_, v)| v.clone())
        .collect()
}

fn rejection(err: &Error) -> &Rejected {
    match err {
        Error::SnapshotRejected { reason, .. } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Restores `file` into a new writer; the rejection if any, with the store checked empty.
fn restore_refused(file: &SnapshotFile) -> Rejected {
    let mut writer = Writer::<ConfigMap>::new();
    let err = writer
        .restore_unverified(file)
        .expect_err("the snapshot must be refused");
    let store = writer.as_reader();
    assert!(store.is_empty() && !store.is_synced() && !store.health().replaying);
    assert_eq!(store.resource_version(), Ok(None));
    rejection(&err).clone()
}

#[test]
fn a_restored_snapshot_is_the_first_generation_with_its_version_and_indexes() {
    let dir = TempDir::new("restore");
    let file = file_at(&dir.path("cm.snapshot"));
    let old = synced(50);
    let saved = file.save(&old.as_reader()).unwrap();
    assert_eq!((saved.objects, saved.resource_version.as_str()), (50, "55"));
    assert_eq!(saved.bytes, std::fs::metadata(file.path()).unwrap().len());

    let mut writer = Writer::<ConfigMap>::new().with_index("app", app);
    let store = writer.as_reader();
    let mut subscriber = store.subscribe();
    let restored = writer
        .restore_unverified(&file)
        .unwrap()
        .expect("a snapshot");
    assert_eq!(
        (restored.objects, restored.resource_version.as_str()),
        (50, "55")
    );
    assert_eq!(
        restored.resume(Config::default()).resume_from.as_deref(),
        Some("55")
    );
    assert!(store.is_synced());
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("55").map(Some)
    );
    assert_eq!(store.len(), 50);
    assert_eq!(
        store.get(Some("ns"), "cm-7").as_deref(),
        old.as_reader().get(Some("ns"), "cm-7").as_deref()
    );
    assert_eq!(store.by_index("app", "app-8").unwrap().len(), 1);
    writer.assert_indexes_exact();

    // Subscribers see the restored state as their snapshot.
    let mut seen = Vec::new();
    while let Some(Some(event)) = subscriber.next().now_or_never() {
        seen.push(event);
    }
    assert!(matches!(seen.first(), Some(Event::Init)));
    assert_eq!(seen.len(), 52, "Init, 50 InitApply, InitDone");

    // Replaying until the server confirms a point.
    let health = store.health();
    assert!(health.is_ready() && health.replaying, "{health}");
    assert!(health.to_string().contains("replaying"), "{health}");
    writer.apply(Event::Apply(cm("cm-new", 60)));
    assert!(
        store.health().replaying,
        "an event does not say the replay is over"
    );
    writer.apply_progress("70");
    assert!(!store.health().replaying);
}

#[test]
fn a_relist_after_a_restore_keeps_the_restored_copy_of_each_unchanged_object() {
    let dir = TempDir::new("relist");
    let file = file_at(&dir.path("cm.snapshot"));
    file.save(&synced(3).as_reader()).unwrap();
    let mut writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    writer
        .restore_unverified(&file)
        .unwrap()
        .expect("a snapshot");
    let before = store.get(Some("ns"), "cm-0").unwrap();
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("cm-0", 1)));
    writer.apply(Event::InitApply(cm("cm-1", 9)));
    writer.apply(Event::InitDone);
    assert!(Arc::ptr_eq(
        &before,
        &store.get(Some("ns"), "cm-0").unwrap()
    ));
    assert_eq!(store.len(), 2);
    assert!(!store.health().replaying, "a list ends the replay");
}

#[test]
fn the_first_list_after_a_restore_replaces_the_snapshots_version() {
    let dir = TempDir::new("ahead");
    let file = file_at(&dir.path("cm.snapshot"));
    // A snapshot claiming a version this server never reached.
    let mut ahead = synced(2);
    ahead.apply_progress("1000000");
    file.save(&ahead.as_reader()).unwrap();
    let mut writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    writer
        .restore_unverified(&file)
        .unwrap()
        .expect("a snapshot");
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("1000000").map(Some)
    );
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("cm-0", 1)));
    writer.apply(Event::InitDone);
    writer.apply_progress("9");
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("9").map(Some)
    );
    // Later lists merge as always: the version never goes back.
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("cm-0", 1)));
    writer.apply(Event::InitDone);
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("9").map(Some)
    );
}

#[test]
fn a_snapshot_taken_during_a_relist_is_the_generation_readers_see() {
    let dir = TempDir::new("during-relist");
    let file = file_at(&dir.path("cm.snapshot"));
    let mut writer = synced(3);
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("cm-9", 99)));
    let saved = file.save(&writer.as_reader()).unwrap();
    assert_eq!((saved.objects, saved.resource_version.as_str()), (3, "8"));
    let mut restored = Writer::<ConfigMap>::new();
    restored
        .restore_unverified(&file)
        .unwrap()
        .expect("a snapshot");
    assert!(restored.as_reader().get(Some("ns"), "cm-9").is_none());
}

#[test]
fn a_store_that_never_synced_has_nothing_to_save() {
    let dir = TempDir::new("unsynced");
    let file = file_at(&dir.path("cm.snapshot"));
    let writer = Writer::<ConfigMap>::new();
    assert_eq!(file.save(&writer.as_reader()), Err(Error::NothingToSave));
    assert!(!file.path().exists());
}

#[test]
fn the_file_is_readable_by_its_owner_only_and_leaves_no_temporary_file() {
    let dir = TempDir::new("mode");
    let file = file_at(&dir.path("cm.snapshot"));
    file.save(&synced(2).as_reader()).unwrap();
    file.save(&synced(3).as_reader()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cm.snapshot"]);
}

#[test]
fn a_missing_snapshot_is_a_cold_start_without_an_error() {
    let dir = TempDir::new("missing");
    let mut writer = Writer::<ConfigMap>::new();
    assert_eq!(
        writer.restore_unverified(&file_at(&dir.path("none"))),
        Ok(None)
    );
    let store = writer.as_reader();
    assert!(store.is_empty() && !store.is_synced() && !store.health().replaying);
}

#[test]
fn a_truncated_snapshot_is_a_cold_start() {
    let dir = TempDir::new("truncated");
    let file = file_at(&dir.path("cm.snapshot"));
    file.save(&synced(20).as_reader()).unwrap();
    let bytes = std::fs::read(file.path()).unwrap();
    for cut in [0, 5, 23, 24, 100, bytes.len() - 1] {
        std::fs::write(file.path(), &bytes[..cut]).unwrap();
        assert_eq!(restore_refused(&file), Rejected::Truncated, "cut at {cut}");
    }
}

#[test]
fn a_corrupt_snapshot_is_a_cold_start() {
    let dir = TempDir::new("corrupt");
    let file = file_at(&dir.path("cm.snapshot"));
    file.save(&synced(20).as_reader()).unwrap();
    let bytes = std::fs::read(file.path()).unwrap();
    // A flipped bit anywhere in the objects, and a byte too many.
    for at in [bytes.len() / 2, bytes.len() - 1] {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x10;
        std::fs::write(file.path(), &corrupt).unwrap();
        assert_eq!(
            restore_refused(&file),
            Rejected::Corrupt,
            "bit flipped at {at}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(file.path(), &longer).unwrap();
    assert_eq!(restore_refused(&file), Rejected::Corrupt);
}

#[test]
fn a_foreign_file_or_format_version_is_a_cold_start() {
    let dir = TempDir::new("foreign");
    let file = file_at(&dir.path("cm.snapshot"));
    std::fs::write(file.path(), br#"{"items": []}"#).unwrap();
    assert_eq!(restore_refused(&file), Rejected::ForeignFormat);
    file.save(&synced(2).as_reader()).unwrap();
    let mut bytes = std::fs::read(file.path()).unwrap();
    bytes[8..12].copy_from_slice(&1_u32.to_le_bytes());
    std::fs::write(file.path(), &bytes).unwrap();
    assert_eq!(
        restore_refused(&file),
        Rejected::FormatVersion {
            found: 1,
            supported: crate::SNAPSHOT_FORMAT_VERSION,
        }
    );
}

#[test]
fn a_snapshot_of_another_watch_or_schema_is_a_cold_start() {
    let dir = TempDir::new("identity");
    let path = dir.path("cm.snapshot");
    file_at(&path).save(&synced(2).as_reader()).unwrap();
    let others = [
        WatchIdentity::of::<ConfigMap>(Some("other"), &Config::default()),
        WatchIdentity::of::<ConfigMap>(Some("ns"), &Config::default().labels("app=web")),
        WatchIdentity::of::<ConfigMap>(Some("ns"), &Config::default().fields("a=b")),
        WatchIdentity::of::<PartialObjectMeta<ConfigMap>>(Some("ns"), &Config::default()),
    ];
    for other in others {
        let file = SnapshotFile::new(&path, other.clone()).schema("v1");
        assert!(
            matches!(restore_refused(&file), Rejected::Identity { expected, .. } if *expected == other)
        );
    }
    let file = SnapshotFile::new(&path, identity()).schema("v2");
    assert_eq!(
        restore_refused(&file),
        Rejected::Schema {
            expected: "v2".to_owned(),
            found: "v1".to_owned()
        }
    );
}

#[test]
fn sound_bytes_of_another_type_are_a_cold_start() {
    let dir = TempDir::new("undecodable");
    let file = file_at(&dir.path("cm.snapshot"));
    file.save(&synced(2).as_reader()).unwrap();
    // The same identity, claimed by a store of another type (a `Binding` needs a target).
    let mut writer = Writer::<Binding>::new();
    let err = writer.restore_unverified(&file).unwrap_err();
    assert!(matches!(rejection(&err), Rejected::Undecodable(_)), "{err}");
    assert!(writer.as_reader().is_empty());
}

#[test]
fn a_store_that_is_not_new_is_never_restored_into() {
    let dir = TempDir::new("not-new");
    let file = file_at(&dir.path("cm.snapshot"));
    file.save(&synced(2).as_reader()).unwrap();
    let mut writer = synced(1);
    let err = writer.restore_unverified(&file).unwrap_err();
    assert_eq!(rejection(&err), &Rejected::StoreNotNew);
    assert_eq!(writer.as_reader().len(), 1);
}

#[test]
fn a_crash_between_the_write_and_the_rename_leaves_the_old_snapshot_in_use() {
    let dir = TempDir::new("crash");
    let path = dir.path("cm.snapshot");
    file_at(&path).save(&synced(2).as_reader()).unwrap();
    // What a save killed before its rename leaves: a complete new file under a temporary name.
    let newer = dir.path("newer");
    file_at(&newer).save(&synced(5).as_reader()).unwrap();
    std::fs::rename(
        &newer,
        dir.path(&format!(".cm.snapshot.tmp-{}-999", std::process::id())),
    )
    .unwrap();
    let mut writer = Writer::<ConfigMap>::new();
    assert_eq!(
        writer
            .restore_unverified(&file_at(&path))
            .unwrap()
            .expect("a snapshot")
            .objects,
        2
    );
}

/// A resource whose serialization fails on demand: a save that fails half-way.
#[derive(Clone, Debug, Deserialize)]
struct Flaky {
    metadata: ObjectMeta,
    fail: bool,
}

impl Serialize for Flaky {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            return Err(serde::ser::Error::custom("refused to serialize"));
        }
        (&self.metadata, self.fail).serialize(serializer)
    }
}

impl Resource for Flaky {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        "Flaky".into()
    }
    fn group((): &()) -> Cow<'_, str> {
        "".into()
    }
    fn version((): &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural((): &()) -> Cow<'_, str> {
        "flakies".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[test]
fn a_failed_save_is_an_error_and_leaves_the_previous_snapshot_intact() {
    let dir = TempDir::new("failed-save");
    let path = dir.path("flaky.snapshot");
    let file = SnapshotFile::new(&path, WatchIdentity::of::<Flaky>(None, &Config::default()));
    let flaky = |name: &str, fail: bool| Flaky {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version: Some("3".to_owned()),
            ..ObjectMeta::default()
        },
        fail,
    };
    let mut writer = Writer::<Flaky>::new();
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(flaky("a", false)));
    writer.apply(Event::InitDone);
    file.save(&writer.as_reader()).unwrap();
    let before = std::fs::read(&path).unwrap();

    writer.apply(Event::Apply(flaky("b", true)));
    let err = file.save(&writer.as_reader()).unwrap_err();
    assert!(matches!(err, Error::SnapshotSave { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        1,
        "no temporary file left"
    );

    // A folder that does not exist: the same typed error.
    let nowhere = SnapshotFile::new(dir.path("no/such/dir/x"), file.identity().clone());
    let err = nowhere.save(&writer.as_reader()).unwrap_err();
    assert!(
        matches!(&err, Error::SnapshotSave { source, .. } if source.kind == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

#[test]
fn a_writer_dropped_cleanly_saves_its_store() {
    let dir = TempDir::new("on-drop");
    let file = file_at(&dir.path("cm.snapshot"));
    let writer = synced(4).save_on_drop(file.clone());
    drop(writer);
    let mut restored = Writer::<ConfigMap>::new();
    assert_eq!(
        restored
            .restore_unverified(&file)
            .unwrap()
            .expect("a snapshot")
            .objects,
        4
    );
}

#[tokio::test]
async fn periodic_saves_follow_changes_and_end_with_the_writer() {
    let dir = TempDir::new("periodic");
    let file = file_at(&dir.path("cm.snapshot"));
    let mut writer = synced(2);
    let task = tokio::spawn(
        file.clone()
            .save_every(writer.as_reader(), std::time::Duration::from_millis(50)),
    );
    let saved_objects = || {
        let mut w = Writer::<ConfigMap>::new();
        w.restore_unverified(&file)
            .ok()
            .flatten()
            .map(|r| r.objects)
    };
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if saved_objects() == Some(2) {
            break;
        }
    }
    assert_eq!(saved_objects(), Some(2));
    writer.apply(Event::Apply(cm("cm-late", 30)));
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if saved_objects() == Some(3) {
            break;
        }
    }
    assert_eq!(saved_objects(), Some(3));
    // A bookmark alone moves the saved version.
    writer.apply_progress("99");
    let saved_version = || {
        let mut w = Writer::<ConfigMap>::new();
        w.restore_unverified(&file)
            .ok()
            .flatten()
            .map(|r| r.resource_version)
    };
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if saved_version().as_deref() == Some("99") {
            break;
        }
    }
    assert_eq!(saved_version().as_deref(), Some("99"));
    drop(writer);
    tokio::time::timeout(std::time::Duration::from_secs(60), task)
        .await
        .expect("the task ends with the writer")
        .unwrap();
}

// Exact round-trips through the snapshot format, for the types a store holds.

fn roundtrip<K: Serialize + DeserializeOwned>(value: &K) -> K {
    let bytes = rmp_serde::to_vec_named(value).expect("encode");
    rmp_serde::from_slice(&bytes).expect("decode")
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9.-]{0,12}"
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-z][a-z0-9./-]{0,10}", ".{0,20}", 0..4)
}

fn time() -> impl Strategy<Value = Time> {
    // Whole seconds: the API's `Time` has no finer precision on the wire.
    (0_i64..4_000_000_000).prop_map(|s| Time(jiff::Timestamp::from_second(s).unwrap()))
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e12_f64..1e12).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn meta()(
        name in "[a-z][a-z0-9-]{0,15}",
        namespace in proptest::option::of(text()),
        labels in proptest::option::of(map()),
        annotations in proptest::option::of(map()),
        uid in proptest::option::of(text()),
        resource_version in proptest::option::of("[1-9][0-9]{0,8}"),
        generation in proptest::option::of(any::<i64>()),
        created in proptest::option::of(time()),
        finalizers in proptest::option::of(proptest::collection::vec(text(), 0..3)),
        // An object, as the API always sends: `FieldsV1(Null)` would come back as `None`,
        // in JSON as in any format (`"fieldsV1": null` is an absent field).
        fields in proptest::option::of(proptest::collection::btree_map("[a-z:.]{1,8}", json(), 0..3)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))),
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace,
            labels,
            annotations,
            uid,
            resource_version,
            generation,
            creation_timestamp: created,
            finalizers,
            managed_fields: fields.map(|fields| vec![ManagedFieldsEntry {
                manager: Some("kache".to_owned()),
                operation: Some("Apply".to_owned()),
                fields_type: Some("FieldsV1".to_owned()),
                fields_v1: Some(FieldsV1(fields)),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        }
    }
}

prop_compose! {
    fn config_map()(
        metadata in meta(),
        data in proptest::option::of(map()),
        binary in proptest::option::of(proptest::collection::btree_map(
            "[a-z]{1,8}",
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(ByteString),
            0..3,
        )),
        immutable in proptest::option::of(any::<bool>()),
    ) -> ConfigMap {
        ConfigMap { metadata, data, binary_data: binary, immutable }
    }
}

fn int_or_string() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        any::<i32>().prop_map(IntOrString::Int),
        "[a-z]{1,8}".prop_map(IntOrString::String),
    ]
}

prop_compose! {
    fn container()(
        name in "[a-z]{1,8}",
        image in proptest::option::of(text()),
        args in proptest::option::of(proptest::collection::vec(".{0,10}", 0..3)),
        env in proptest::collection::vec(("[A-Z]{1,6}", proptest::option::of(".{0,8}")), 0..3),
        port in proptest::option::of(1_i32..65536),
        probe in proptest::option::of(int_or_string()),
        limits in proptest::option::of(proptest::collection::btree_map(
            prop_oneof![Just("cpu".to_owned()), Just("memory".to_owned())],
            "[1-9][0-9]{0,3}(m|Mi|Gi)?".prop_map(Quantity),
            0..2,
        )),
    ) -> Container {
        Container {
            name,
            image,
            args,
            env: (!env.is_empty()).then(|| env.into_iter().map(|(name, value)| EnvVar { name, value, value_from: None }).collect()),
            ports: port.map(|p| vec![ContainerPort { container_port: p, protocol: Some("TCP".to_owned()), ..ContainerPort::default() }]),
            liveness_probe: probe.map(|port| Probe {
                http_get: Some(HTTPGetAction { path: Some("/healthz".to_owned()), port, ..HTTPGetAction::default() }),
                period_seconds: Some(10),
                ..Probe::default()
            }),
            resources: limits.map(|limits| ResourceRequirements { limits: Some(limits), ..ResourceRequirements::default() }),
            ..Container::default()
        }
    }
}

prop_compose! {
    fn pod()(
        metadata in meta(),
        containers in proptest::collection::vec(container(), 1..3),
        node_selector in proptest::option::of(map()),
        phase in proptest::option::of(prop_oneof![Just("Pending".to_owned()), Just("Running".to_owned())]),
        conditions in proptest::collection::vec(("[A-Z][a-z]{1,8}", time()), 0..3),
        started in proptest::option::of(time()),
        with_status in any::<bool>(),
    ) -> Pod {
        Pod {
            metadata,
            spec: Some(PodSpec { containers, node_selector, ..PodSpec::default() }),
            status: with_status.then(|| PodStatus {
                phase,
                conditions: Some(conditions.into_iter().map(|(type_, at)| PodCondition {
                    type_,
                    status: "True".to_owned(),
                    last_transition_time: Some(at),
                    ..PodCondition::default()
                }).collect()),
                start_time: started,
                ..PodStatus::default()
            }),
        }
    }
}

prop_compose! {
    fn dynamic()(
        metadata in meta(),
        typed in any::<bool>(),
        data in proptest::collection::btree_map("[a-z]{1,6}", json(), 0..4),
    ) -> DynamicObject {
        DynamicObject {
            types: typed.then(|| TypeMeta { api_version: "example.com/v1".to_owned(), kind: "Widget".to_owned() }),
            metadata,
            data: serde_json::Value::Object(data.into_iter().collect()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn config_maps_round_trip_exactly(cm in config_map()) {
        prop_assert_eq!(roundtrip(&cm), cm);
    }

    #[test]
    fn pods_round_trip_exactly(pod in pod()) {
        prop_assert_eq!(roundtrip(&pod), pod);
    }

    #[test]
    fn dynamic_objects_round_trip_exactly(obj in dynamic()) {
        let back = roundtrip(&obj);
        prop_assert_eq!(&back.types, &obj.types);
        prop_assert_eq!(&back.metadata, &obj.metadata);
        prop_assert_eq!(back.data, obj.data);
    }

    #[test]
    fn partial_object_meta_round_trips_exactly(metadata in meta(), typed in any::<bool>()) {
        let obj = PartialObjectMeta::<Pod> {
            types: typed.then(|| TypeMeta { api_version: "v1".to_owned(), kind: "PartialObjectMetadata".to_owned() }),
            metadata,
            _phantom: std::marker::PhantomData,
        };
        let back = roundtrip(&obj);
        prop_assert_eq!(back.types, obj.types);
        prop_assert_eq!(back.metadata, obj.metadata);
    }
}

/// A store listing `objects`, saved to `file`, and a new store restored from it.
fn saved_and_restored<K>(file: &SnapshotFile, objects: &[K]) -> crate::Store<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let mut writer = Writer::<K>::new();
    writer.apply(Event::Init);
    for obj in objects {
        writer.apply(Event::InitApply(obj.clone()));
    }
    writer.apply(Event::InitDone);
    file.save(&writer.as_reader()).unwrap();
    let mut restored = Writer::<K>::new();
    restored
        .restore_unverified(file)
        .unwrap()
        .expect("a snapshot");
    restored.as_reader()
}

#[test]
fn pods_and_dynamic_objects_survive_a_whole_save_and_restore() {
    let dir = TempDir::new("types");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let pods: Vec<Pod> = (0..20)
        .map(|i| {
            let mut pod = pod().new_tree(&mut runner).unwrap().current();
            pod.metadata.name = Some(format!("pod-{i}"));
            pod.metadata.resource_version = Some((i + 1).to_string());
            pod
        })
        .collect();
    let file = SnapshotFile::new(
        dir.path("pods"),
        WatchIdentity::of::<Pod>(None, &Config::default()),
    );
    let store = saved_and_restored(&file, &pods);
    for pod in &pods {
        let ns = pod.metadata.namespace.as_deref();
        let name = pod.metadata.name.as_deref().unwrap();
        assert_eq!(store.get(ns, name).as_deref(), Some(pod));
    }

    let resource = kube_client::api::ApiResource::from_gvk(
        &kube_client::api::GroupVersionKind::gvk("example.com", "v1", "Widget"),
    );
    let objects: Vec<DynamicObject> = (0..20)
        .map(|i| {
            let mut obj = dynamic().new_tree(&mut runner).unwrap().current();
            obj.metadata.name = Some(format!("w-{i}"));
            obj.metadata.namespace = None;
            obj.metadata.resource_version = Some((i + 1).to_string());
            obj
        })
        .collect();
    let file = SnapshotFile::new(
        dir.path("widgets"),
        WatchIdentity::new::<DynamicObject>(&resource, None, &Config::default()),
    );
    let store = saved_and_restored(&file, &objects);
    for obj in &objects {
        let got = store
            .get(None, obj.metadata.name.as_deref().unwrap())
            .unwrap();
        assert_eq!(
            (&got.types, &got.metadata, &got.data),
            (&obj.types, &obj.metadata, &obj.data)
        );
    }
}
