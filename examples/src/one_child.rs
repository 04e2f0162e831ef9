//! The one-child operator's objects, shared by its example (`create_child_once`), its
//! end-to-end test and its benchmark: parents and children are `ConfigMap`s labelled
//! [`PARENT`] and [`CHILD`]; each parent should have exactly one child, made with
//! `generateName` (so the server accepts a second one: a reconcile that acts on a cache without
//! its own last create makes a duplicate), whose `value` follows the parent's.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube_client::Api;
use kube_client::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

/// The label selector of parents.
pub const PARENT: &str = "role=parent";
/// The label selector of children.
pub const CHILD: &str = "role=child";

/// The `value` a parent asks its child to hold, or a child holds.
#[must_use]
pub fn value_of(cm: &ConfigMap) -> Option<&String> {
    cm.data.as_ref().and_then(|data| data.get("value"))
}

/// The uid of the object's controller, from its `ownerReferences`.
#[must_use]
pub fn owner_uid(cm: &ConfigMap) -> Option<&str> {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.as_str())
}

/// A new child for `parent`: named by the server, labelled, owned by the parent, with its data.
#[must_use]
pub fn child_of(parent: &ConfigMap) -> ConfigMap {
    let name = parent.metadata.name.clone().unwrap_or_default();
    ConfigMap {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: parent.metadata.namespace.clone(),
            labels: Some([("role".to_owned(), "child".to_owned())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name,
                uid: parent.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        data: parent.data.clone(),
        ..ConfigMap::default()
    }
}

/// The patch that brings a child's `value` to `parent`'s.
#[must_use]
pub fn follow(parent: &ConfigMap) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "data": { "value": value_of(parent) } }))
}

/// Creates `count` parents named `{prefix}-{i}`, 16 at a time, each changed three times right
/// after its creation (`value` 0, then 1, 2, 3).
///
/// # Errors
/// The first request that fails.
pub async fn create_parents(
    api: &Api<ConfigMap>,
    prefix: &str,
    count: usize,
) -> kube_client::Result<()> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let mut parent = ConfigMap::default();
            parent.metadata.name = Some(format!("{prefix}-{i}"));
            parent.metadata.labels = Some([("role".to_owned(), "parent".to_owned())].into());
            parent.data = Some([("value".to_owned(), "0".to_owned())].into());
            let name = parent.metadata.name.clone().unwrap_or_default();
            api.create(&PostParams::default(), &parent).await?;
            for value in 1..=3 {
                let patch = Patch::Merge(json!({ "data": { "value": value.to_string() } }));
                api.patch(&name, &PatchParams::default(), &patch).await?;
            }
            Ok::<_, kube_client::Error>(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The server's word, not a cache's: each parent's value and its children's values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OnServer {
    /// By parent uid: the parent's `value` and each of its children's.
    pub by_parent: BTreeMap<String, (String, Vec<String>)>,
    /// Children whose owner is not among the parents.
    pub orphans: usize,
}

impl OnServer {
    /// Lists the parents and children of `api`'s namespace.
    ///
    /// # Errors
    /// A failed LIST.
    pub async fn list(api: &Api<ConfigMap>) -> kube_client::Result<Self> {
        let parents = api.list(&ListParams::default().labels(PARENT)).await?;
        let children = api.list(&ListParams::default().labels(CHILD)).await?;
        let mut state = Self::default();
        for parent in &parents.items {
            let uid = parent.metadata.uid.clone().unwrap_or_default();
            let value = value_of(parent).cloned().unwrap_or_default();
            state.by_parent.insert(uid, (value, Vec::new()));
        }
        for child in &children.items {
            match owner_uid(child).and_then(|uid| state.by_parent.get_mut(uid)) {
                Some((_, values)) => values.push(value_of(child).cloned().unwrap_or_default()),
                None => state.orphans += 1,
            }
        }
        Ok(state)
    }

    /// Every parent has at least one child, and all its children hold its value.
    #[must_use]
    pub fn converged(&self) -> bool {
        self.by_parent
            .values()
            .all(|(value, children)| !children.is_empty() && children.iter().all(|c| c == value))
    }

    /// Every parent has a child that holds its value (duplicates may hold older ones).
    #[must_use]
    pub fn each_has_a_current_child(&self) -> bool {
        self.by_parent
            .values()
            .all(|(value, children)| children.contains(value))
    }

    /// Parents with more than one child.
    #[must_use]
    pub fn duplicates(&self) -> usize {
        self.by_parent
            .values()
            .filter(|(_, children)| children.len() > 1)
            .count()
    }
}
