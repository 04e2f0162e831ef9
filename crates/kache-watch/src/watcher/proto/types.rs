//! The public types of protobuf on the wire: [`Proto`], a k8s-pb message with its metadata as
//! k8s-openapi's, and the traits that say which k8s-pb types it holds ([`ProtoObject`],
//! [`ProtoScope`]).

use std::{fmt, ops::Deref};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as openapi;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb;
use prost::Message;

use super::meta::object_meta;
use crate::{ProtoError, Result};

/// Maps a k8s-pb scope to k8s-openapi's, so that a [`Proto`] has the scope `Api` expects.
pub trait ProtoScope {
    /// k8s-openapi's scope type of the same name.
    type OpenApi: k8s_openapi::ResourceScope;
}

impl ProtoScope for k8s_pb::NamespaceResourceScope {
    type OpenApi = k8s_openapi::NamespaceResourceScope;
}

impl ProtoScope for k8s_pb::ClusterResourceScope {
    type OpenApi = k8s_openapi::ClusterResourceScope;
}

impl ProtoScope for k8s_pb::SubResourceScope {
    type OpenApi = k8s_openapi::SubResourceScope;
}

/// A k8s-pb message that [`Proto`] can hold: any built-in top-level type of k8s-pb, such as
/// `k8s_pb::api::core::v1::ConfigMap`. Implemented for every type that qualifies.
pub trait ProtoObject:
    Message
    + Default
    + Clone
    + k8s_pb::Resource<Scope: ProtoScope>
    + k8s_pb::Metadata<Ty = pb::ObjectMeta>
    + 'static
{
}

impl<T> ProtoObject for T where
    T: Message
        + Default
        + Clone
        + k8s_pb::Resource<Scope: ProtoScope>
        + k8s_pb::Metadata<Ty = pb::ObjectMeta>
        + 'static
{
}

/// A built-in object decoded from protobuf: the k8s-pb message, with its metadata converted
/// once to k8s-openapi's `ObjectMeta` so that it is a `kube_client::Resource` like any other
/// (and works in kache-store's `Store`, indexes and subscribers unchanged).
///
/// The metadata lives in one place: [`meta`](kube_client::Resource::meta) (through
/// `ResourceExt`: `name_any()`, `labels()`, `resource_version()` ...). The inner message, which
/// `Proto` derefs to for its other fields (`data`, `spec`, `status` ...), keeps none (its
/// `metadata` is `None` as decoded, empty after [`Proto::new`]), so no object holds two copies.
///
/// ```
/// use k8s_pb::api::core::v1::ConfigMap;
/// use kache_watch::Proto;
/// use kube_client::ResourceExt;
///
/// let mut cm = ConfigMap::default();
/// cm.metadata = Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
///     name: Some("settings".into()),
///     ..Default::default()
/// });
/// cm.data.insert("mode".into(), "fast".into());
/// let cm = Proto::new(cm)?;
/// assert_eq!(cm.name_any(), "settings");
/// assert_eq!(cm.data["mode"], "fast");
/// # Ok::<(), kache_watch::ProtoError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Proto<T> {
    pub(super) meta: openapi::ObjectMeta,
    pub(super) object: T,
}

impl<T: ProtoObject> Proto<T> {
    /// Takes `object`'s metadata out into k8s-openapi's form.
    ///
    /// # Errors
    /// [`ProtoError::Time`] if a timestamp is out of range.
    pub fn new(mut object: T) -> Result<Self, ProtoError> {
        let meta = object
            .metadata_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        Ok(Self {
            meta: object_meta(meta)?,
            object,
        })
    }
}

impl<T> Proto<T> {
    /// The k8s-pb message, whose `metadata` is `None` or empty (see [`Proto`]).
    pub fn get(&self) -> &T {
        &self.object
    }

    /// The metadata and the k8s-pb message, whose `metadata` is `None` or empty.
    pub fn into_parts(self) -> (openapi::ObjectMeta, T) {
        (self.meta, self.object)
    }
}

impl<T> Deref for Proto<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.object
    }
}

impl<T: fmt::Debug> fmt::Debug for Proto<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proto")
            .field("metadata", &self.meta)
            .field("object", &self.object)
            .finish()
    }
}

impl<T: ProtoObject> k8s_openapi::Resource for Proto<T> {
    const API_VERSION: &'static str = T::API_VERSION;
    const GROUP: &'static str = T::GROUP;
    const KIND: &'static str = T::KIND;
    const VERSION: &'static str = T::VERSION;
    const URL_PATH_SEGMENT: &'static str = T::URL_PATH_SEGMENT;
    type Scope = <T::Scope as ProtoScope>::OpenApi;
}

impl<T: ProtoObject> k8s_openapi::Metadata for Proto<T> {
    type Ty = openapi::ObjectMeta;

    fn metadata(&self) -> &openapi::ObjectMeta {
        &self.meta
    }

    fn metadata_mut(&mut self) -> &mut openapi::ObjectMeta {
        &mut self.meta
    }
}
