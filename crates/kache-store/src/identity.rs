//! The watch a snapshot belongs to.

use std::fmt;

use kache_watch::Config;
use kube_client::Resource;
use serde::{Deserialize, Serialize};

/// The watch a snapshot belongs to: the objects it selects. A snapshot is restored only into
/// a store fed by the same watch.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_store::WatchIdentity;
/// use kache_watch::Config;
///
/// let config = Config::default().labels("app=web");
/// let identity = WatchIdentity::of::<ConfigMap>(Some("default"), &config);
/// assert_eq!((identity.version.as_str(), identity.kind.as_str()), ("v1", "ConfigMap"));
/// assert_eq!(identity.label_selector.as_deref(), Some("app=web"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WatchIdentity {
    /// The API group (empty for the core group).
    pub group: String,
    /// The API version, such as `v1`.
    pub version: String,
    /// The kind, such as `ConfigMap`.
    pub kind: String,
    /// The namespace watched; `None` for all namespaces or a cluster-scoped kind.
    pub namespace: Option<String>,
    /// The label selector of the watch.
    pub label_selector: Option<String>,
    /// The field selector of the watch.
    pub field_selector: Option<String>,
    /// The shard of the watch, as its `shardSelector` ([`Config::shard`]).
    pub shard: Option<String>,
    /// The Rust type the objects are stored as (`std::any::type_name`): full objects and a
    /// metadata-only cache of the same kind are different stores.
    pub rust_type: String,
}

impl WatchIdentity {
    /// The identity of a watch of `K` (whose dynamic type is `dyntype`, as for a
    /// `DynamicObject`) in `namespace` with the selectors of `config`.
    #[must_use]
    pub fn new<K: Resource>(
        dyntype: &K::DynamicType,
        namespace: Option<&str>,
        config: &Config,
    ) -> Self {
        Self {
            group: K::group(dyntype).into_owned(),
            version: K::version(dyntype).into_owned(),
            kind: K::kind(dyntype).into_owned(),
            namespace: namespace.map(str::to_owned),
            label_selector: config.label_selector.clone(),
            field_selector: config.field_selector.clone(),
            shard: config.shard.as_ref().map(kache_watch::Shard::selector),
            rust_type: std::any::type_name::<K>().to_owned(),
        }
    }

    /// [`WatchIdentity::new`] for a kind known at compile time, such as a k8s-openapi type.
    #[must_use]
    pub fn of<K>(namespace: Option<&str>, config: &Config) -> Self
    where
        K: Resource,
        K::DynamicType: Default,
    {
        Self::new::<K>(&K::DynamicType::default(), namespace, config)
    }
}

impl fmt::Display for WatchIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!("{}/", self.group)
        };
        write!(f, "{group}{} {}", self.version, self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        if let Some(labels) = &self.label_selector {
            write!(f, ", labels {labels}")?;
        }
        if let Some(fields) = &self.field_selector {
            write!(f, ", fields {fields}")?;
        }
        if let Some(shard) = &self.shard {
            write!(f, ", shard {shard}")?;
        }
        write!(f, " as {}", self.rust_type)
    }
}
