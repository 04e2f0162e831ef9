//! Realistic objects: `ConfigMap`s and `Pod`s with labels, annotations and a few hundred bytes
//! of data, and a `ConfigMap` variant carrying `managedFields` as an API server writes them.

use std::collections::BTreeMap;

use futures::StreamExt;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, ContainerStatus, EnvVar, Pod, PodCondition, PodSpec,
    PodStatus, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;

/// How many namespaces the objects are spread over (object `i` is in `namespace_of(i)`).
pub const NAMESPACES: usize = 100;
/// How many distinct `app` label values there are (object `i` has `app_of(i)`).
pub const APPS: usize = 500;

/// The namespace of object `i`.
#[must_use]
pub fn namespace_of(i: usize) -> String {
    format!("team-{:03}", i % NAMESPACES)
}

/// The namespace and name of `ConfigMap` `i` (see [`config_map`]).
#[must_use]
pub fn config_map_key(i: usize) -> (String, String) {
    (namespace_of(i), format!("configmap-{i:06}"))
}

/// The keys of `n` `ConfigMap`s in the one shuffled order every lookup benchmark uses, so that
/// both libraries meet the same keys in the same order, in every benchmark.
#[must_use]
pub fn shuffled_config_map_keys(n: usize) -> Vec<(String, String)> {
    let mut order: Vec<usize> = (0..n).collect();
    crate::Rng::new(7).shuffle(&mut order);
    order.into_iter().map(config_map_key).collect()
}

/// The `app` label of object `i`.
#[must_use]
pub fn app_of(i: usize) -> String {
    format!("app-{:03}", i % APPS)
}

/// The kinds of fixture objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// [`config_map`]: about 1 KiB as JSON.
    ConfigMap,
    /// [`config_map_managed`]: the same with three `managedFields` entries.
    ConfigMapManaged,
    /// [`pod`]: two containers, volumes, status; about 3 KiB as JSON.
    Pod,
}

impl Kind {
    /// A short label for tables and benchmark ids.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::ConfigMapManaged => "configmap+managedFields",
            Self::Pod => "pod",
        }
    }
}

fn meta(i: usize, resource_version: u64, kind: &str) -> ObjectMeta {
    let name = format!("{kind}-{i:06}");
    let app = app_of(i);
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), app.clone()),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "storefront".to_owned(),
        ),
        ("tier".to_owned(), ["web", "api", "db"][i % 3].to_owned()),
        ("app".to_owned(), app),
    ]);
    let annotations = BTreeMap::from([
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
            format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"{kind}\",\"metadata\":{{\"labels\":\
                 {{\"app\":\"{}\",\"tier\":\"web\"}},\"name\":\"{name}\",\"namespace\":\"{}\"}}}}",
                app_of(i),
                namespace_of(i)
            ),
        ),
        ("example.com/owner".to_owned(), format!("team-{}", i % 37)),
    ]);
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace_of(i)),
        uid: Some(format!("8b2c1e4a-{:04x}-4c1d-9f3e-{i:012x}", i % 0xffff)),
        resource_version: Some(resource_version.to_string()),
        creation_timestamp: Some(Time(
            Timestamp::from_second(1_700_000_000).unwrap_or_default(),
        )),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// A `ConfigMap` named `configmap-{i}` with four labels, two annotations and about 400 bytes of
/// data.
#[must_use]
pub fn config_map(i: usize, resource_version: u64) -> ConfigMap {
    let data = BTreeMap::from([
        (
            "application.yaml".to_owned(),
            format!(
                "server:\n  port: 8080\n  replica: {i}\nlogging:\n  level: info\n  format: json\n\
                 features:\n  checkout: true\n  search: {}\n  recommendations: false\n\
                 upstream: http://{}.{}.svc.cluster.local:9000\ntimeouts:\n  read: 30s\n  write: 30s\n",
                i.is_multiple_of(2),
                app_of(i),
                namespace_of(i)
            ),
        ),
        ("LOG_LEVEL".to_owned(), "info".to_owned()),
        (
            "allowed-origins".to_owned(),
            "https://shop.example.com,https://admin.example.com,https://api.example.com".to_owned(),
        ),
    ]);
    ConfigMap {
        metadata: meta(i, resource_version, "configmap"),
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn managed(manager: &str, operation: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: Some(manager.to_owned()),
        operation: Some(operation.to_owned()),
        api_version: Some("v1".to_owned()),
        fields_type: Some("FieldsV1".to_owned()),
        fields_v1: Some(FieldsV1(fields)),
        time: Some(Time(
            Timestamp::from_second(1_700_000_000).unwrap_or_default(),
        )),
        ..ManagedFieldsEntry::default()
    }
}

/// [`config_map`] with the three `managedFields` entries an API server keeps for an object
/// applied with kubectl and touched by two controllers.
#[must_use]
pub fn config_map_managed(i: usize, resource_version: u64) -> ConfigMap {
    let mut cm = config_map(i, resource_version);
    cm.metadata.managed_fields = Some(vec![
        managed(
            "kubectl-client-side-apply",
            "Update",
            serde_json::json!({
                "f:data": {".": {}, "f:application.yaml": {}, "f:LOG_LEVEL": {}, "f:allowed-origins": {}},
                "f:metadata": {
                    "f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                    "f:labels": {".": {}, "f:app": {}, "f:app.kubernetes.io/name": {},
                                 "f:app.kubernetes.io/part-of": {}, "f:tier": {}}
                }
            }),
        ),
        managed(
            "storefront-operator",
            "Update",
            serde_json::json!({"f:metadata": {"f:annotations": {"f:example.com/owner": {}}}}),
        ),
        managed(
            "config-reloader",
            "Apply",
            serde_json::json!({"f:data": {"f:LOG_LEVEL": {}}}),
        ),
    ]);
    cm
}

fn container(i: usize, name: &str, image: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(format!(
            "registry.example.com/storefront/{image}:1.{}.{}",
            i % 7,
            i % 13
        )),
        args: Some(vec![
            "--config=/etc/app/application.yaml".to_owned(),
            "--port=8080".to_owned(),
        ]),
        env: Some(vec![
            EnvVar {
                name: "APP_NAME".to_owned(),
                value: Some(app_of(i)),
                ..EnvVar::default()
            },
            EnvVar {
                name: "RUST_LOG".to_owned(),
                value: Some("info".to_owned()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: 8080,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("500m".to_owned())),
                ("memory".to_owned(), Quantity("256Mi".to_owned())),
            ])),
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("100m".to_owned())),
                ("memory".to_owned(), Quantity("128Mi".to_owned())),
            ])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".to_owned(),
            mount_path: "/etc/app".to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        termination_message_path: Some("/dev/termination-log".to_owned()),
        termination_message_policy: Some("File".to_owned()),
        ..Container::default()
    }
}

/// A running Pod named `pod-{i}`: an app container and a sidecar, a volume, an owner, and a
/// status with conditions and container statuses.
#[must_use]
pub fn pod(i: usize, resource_version: u64) -> Pod {
    let mut metadata = meta(i, resource_version, "pod");
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "ReplicaSet".to_owned(),
        name: format!("{}-7d9f8c6b5", app_of(i)),
        uid: format!("c0ffee00-0000-4000-8000-{:012x}", i % APPS),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let started = Time(Timestamp::from_second(1_700_000_100).unwrap_or_default());
    let condition = |type_: &str| PodCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        last_transition_time: Some(started.clone()),
        ..PodCondition::default()
    };
    let status = |name: &str, image: &str| ContainerStatus {
        name: name.to_owned(),
        image: format!(
            "registry.example.com/storefront/{image}:1.{}.{}",
            i % 7,
            i % 13
        ),
        image_id: format!("registry.example.com/storefront/{image}@sha256:{i:064x}"),
        container_id: Some(format!("containerd://{:064x}", i * 31 + 7)),
        ready: true,
        started: Some(true),
        restart_count: 0,
        ..ContainerStatus::default()
    };
    Pod {
        metadata,
        spec: Some(PodSpec {
            containers: vec![container(i, "app", "web"), container(i, "proxy", "envoy")],
            volumes: Some(vec![Volume {
                name: "config".to_owned(),
                config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                    name: format!("configmap-{i:06}"),
                    ..Default::default()
                }),
                ..Volume::default()
            }]),
            node_name: Some(format!("node-{:03}", i % 200)),
            service_account_name: Some("storefront".to_owned()),
            restart_policy: Some("Always".to_owned()),
            dns_policy: Some("ClusterFirst".to_owned()),
            scheduler_name: Some("default-scheduler".to_owned()),
            termination_grace_period_seconds: Some(30),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            host_ip: Some(format!("10.0.{}.{}", (i / 250) % 250, i % 250)),
            pod_ip: Some(format!("10.244.{}.{}", (i / 250) % 250, i % 250)),
            start_time: Some(started.clone()),
            qos_class: Some("Burstable".to_owned()),
            conditions: Some(vec![
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ]),
            container_statuses: Some(vec![status("app", "web"), status("proxy", "envoy")]),
            ..PodStatus::default()
        }),
    }
}

/// `n` objects made by `make(i, resource_version)`, with resourceVersions from `first_rv` on.
pub fn world<K>(n: usize, first_rv: u64, make: impl Fn(usize, u64) -> K) -> Vec<K> {
    (0..n).map(|i| make(i, first_rv + i as u64)).collect()
}

/// An initial sync of `objects` for kache: `Init`, an `InitApply` per object, `InitDone`.
pub fn kache_events<K>(objects: impl IntoIterator<Item = K>) -> Vec<kache_watch::Event<K>> {
    let mut events = vec![kache_watch::Event::Init];
    events.extend(objects.into_iter().map(kache_watch::Event::InitApply));
    events.push(kache_watch::Event::InitDone);
    events
}

/// The same initial sync for kube-runtime's `watcher::Event`.
pub fn kube_runtime_events<K>(
    objects: impl IntoIterator<Item = K>,
) -> Vec<kube_runtime::watcher::Event<K>> {
    use kube_runtime::watcher::Event;
    let mut events = vec![Event::Init];
    events.extend(objects.into_iter().map(Event::InitApply));
    events.push(Event::InitDone);
    events
}

/// Feeds `events` through kache's `reflect` stream into `writer` and drops each event it
/// yields, as a consumer of the stream would.
pub fn kache_reflect<K>(writer: kache_store::Writer<K>, events: Vec<kache_watch::Event<K>>)
where
    K: kube_client::Resource + Send + Sync + 'static,
{
    use kache_store::ReflectExt;
    let events = events.into_iter().map(Ok::<_, std::convert::Infallible>);
    let reflected = futures::stream::iter(events)
        .reflect(writer)
        .for_each(|event| {
            drop(std::hint::black_box(event));
            futures::future::ready(())
        });
    futures::executor::block_on(reflected);
}

/// The same through kube-runtime's `reflector` stream.
pub fn kube_runtime_reflect<K>(
    writer: kube_runtime::reflector::store::Writer<K>,
    events: Vec<kube_runtime::watcher::Event<K>>,
) where
    K: kube_runtime::reflector::Lookup + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let events = events
        .into_iter()
        .map(Ok::<_, kube_runtime::watcher::Error>);
    let reflected = kube_runtime::reflector::reflector(writer, futures::stream::iter(events))
        .for_each(|event| {
            drop(std::hint::black_box(event));
            futures::future::ready(())
        });
    futures::executor::block_on(reflected);
}
